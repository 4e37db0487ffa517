/* Packet I/O of the wire between the root parent and the API process
 * (include/tp-api-wire.h): one message sent as its packets, one message received from
 * them. Both ends use it on their end of the SOCK_SEQPACKET socketpair. */
#ifndef TP_API_WIRE_IO_H
#define TP_API_WIRE_IO_H

#include <stddef.h>

#include "tp-api-wire.h"

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

/* The parent's messages about the API process's sockets (struct tp_api_listen): one
 * packet, with PASS_FD (or none if -1) as SCM_RIGHTS. -EPIPE if the API process is gone;
 * -EAGAIN if FD has a send timeout and the process left its buffer full past it. */
int api_wire_send_listen(int fd, const struct tp_api_listen *m, int pass_fd);

/* Receive one into *RET (sizeof *RET bytes exactly, checked by api_wire_decode_listen
 * after) and the fd that came with it into *RET_FD (-1 if none; close-on-exec). A packet
 * of another length, or with more than one fd or anything else attached, is -EBADMSG
 * (whatever fds it carried closed); the end of the stream is -EPIPE. */
int api_wire_recv_listen(int fd, struct tp_api_listen *ret, int *ret_fd);

#endif
