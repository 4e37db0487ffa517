/* Packet I/O of the wire to the API process: see daemon/api-wire-io.h. The message's
 * length comes from its first packet, which is checked before anything is allocated for
 * it, so a peer cannot make the receiver allocate more than MAX bytes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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

int api_wire_send_listen(int fd, const struct tp_api_listen *m, int pass_fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control = {0};
	struct iovec iov = {.iov_base = (void *)m, .iov_len = sizeof *m};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t sent;

	if (pass_fd >= 0) {
		struct cmsghdr *c;

		msg.msg_control = control.buf;
		msg.msg_controllen = sizeof control.buf;
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
	}
	do
		sent = sendmsg(fd, &msg, MSG_NOSIGNAL);
	while (sent < 0 && errno == EINTR);
	if (sent < 0)
		return -errno;
	return (size_t)sent == sizeof *m ? 0 : -EIO;
}

/* Close every fd that the control messages of MSG carry. */
static void close_passed(struct msghdr *msg)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int passed;

			memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			close(passed);
		}
	}
}

int api_wire_recv_listen(int fd, struct tp_api_listen *ret, int *ret_fd)
{
	union {
		char buf[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} control;
	struct iovec iov = {.iov_base = ret, .iov_len = sizeof *ret};
	struct msghdr msg = {.msg_iov = &iov,
	                     .msg_iovlen = 1,
	                     .msg_control = control.buf,
	                     .msg_controllen = sizeof control.buf};
	struct cmsghdr *c;
	ssize_t n;

	*ret_fd = -1;
	do
		n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_TRUNC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0 && msg.msg_controllen == 0)
		return -EPIPE;
	c = CMSG_FIRSTHDR(&msg);
	if ((size_t)n != sizeof *ret || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) ||
	    (c != NULL && (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
	                   c->cmsg_len != CMSG_LEN(sizeof(int)) || CMSG_NXTHDR(&msg, c) != NULL))) {
		close_passed(&msg);
		return -EBADMSG;
	}
	if (c != NULL)
		memcpy(ret_fd, CMSG_DATA(c), sizeof(int));
	return 0;
}
