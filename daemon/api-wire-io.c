/* Packet I/O of the wire to the API process: see daemon/api-wire-io.h. The message's
 * length comes from its first packet, which is checked before anything is allocated for
 * it, so a peer cannot make the receiver allocate more than MAX bytes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "api-wire-io.h"
#include "api-wire.h"

int api_wire_send(int fd, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	if (len == 0 || len > TP_API_MESSAGE_MAX)
		return -EINVAL;
	while (len > 0) {
		size_t n = len < TP_API_PACKET_MAX ? len : TP_API_PACKET_MAX;
		ssize_t sent = send(fd, p, n, MSG_NOSIGNAL);

		if (sent < 0 && errno == EINTR)
			continue;
		if (sent < 0)
			return -errno;
		/* A packet goes whole or not at all; anything else is no packet of ours. */
		if ((size_t)sent != n)
			return -EIO;
		p += n;
		len -= n;
	}
	return 0;
}

/* One packet into BUF (room for SIZE bytes): its whole length, even past SIZE (then its
 * tail is lost), 0 at the end of the stream, or -errno. */
static ssize_t recv_packet(int fd, void *buf, size_t size)
{
	ssize_t n;

	do
		n = recv(fd, buf, size, MSG_TRUNC);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

int api_wire_recv(int fd, size_t max, void **ret_buf, size_t *ret_len)
{
	unsigned char *buf, *grown;
	uint32_t length;
	size_t have;
	ssize_t n;
	int r;

	buf = malloc(TP_API_PACKET_MAX);
	if (buf == NULL)
		return -ENOMEM;
	n = recv_packet(fd, buf, TP_API_PACKET_MAX);
	if (n <= 0) {
		free(buf);
		return n == 0 ? -EPIPE : (int)n;
	}
	r = api_wire_message_length(buf, (size_t)n, max, &length);
	if (r < 0 || (size_t)n != (length < TP_API_PACKET_MAX ? length : TP_API_PACKET_MAX)) {
		free(buf);
		return -EBADMSG;
	}
	if (length > TP_API_PACKET_MAX) {
		grown = realloc(buf, length);
		if (grown == NULL) {
			free(buf);
			return -ENOMEM;
		}
		buf = grown;
	}
	for (have = (size_t)n; have < length; have += (size_t)n) {
		size_t want = length - have < TP_API_PACKET_MAX ? length - have : TP_API_PACKET_MAX;

		n = recv_packet(fd, buf + have, want);
		if (n < 0) {
			free(buf);
			return (int)n;
		}
		/* The end of the stream or a packet of another length inside a message. */
		if ((size_t)n != want) {
			free(buf);
			return -EBADMSG;
		}
	}
	*ret_buf = buf;
	*ret_len = length;
	return 0;
}
