/* Packet I/O of the wire between the root parent and the API process
 * (include/tp-api-wire.h): one message sent as its packets, one message received from
 * them. Both ends use it on their end of the SOCK_SEQPACKET socketpair. */
#ifndef TP_API_WIRE_IO_H
#define TP_API_WIRE_IO_H

#include <stddef.h>

/* Send the message BUF of LEN bytes (1 to TP_API_MESSAGE_MAX) on FD as packets of
 * TP_API_PACKET_MAX bytes, the last one shorter. Returns 0, -EINVAL for a length out of
 * bounds, -EPIPE if the peer is gone, or another -errno of send. */
int api_wire_send(int fd, const void *buf, size_t len);

/* Receive one message of at most MAX bytes from FD into *RET_BUF (malloc'ed), *RET_LEN
 * bytes. The first packet's header gives the length; every further packet must be exactly
 * as long as what is left of it, up to TP_API_PACKET_MAX. Returns 0; -EPIPE if the peer
 * closed the socket between two messages (a clean end); -EBADMSG for a first packet
 * without a valid header, a packet of the wrong length or an end in the middle of a
 * message; -ENOMEM; or another -errno of recv. */
int api_wire_recv(int fd, size_t max, void **ret_buf, size_t *ret_len);

#endif
