/* The plugin's client of thinproxyd's broker (include/tp-broker.h). Each request is one
 * SOCK_SEQPACKET connection to broker_path: OPEN answers with the device's fd by
 * SCM_RIGHTS, LIST with an entry per export, MAP with the pool's mapped ranges in RANGES
 * packets. Every answer is checked to the byte before it is believed; a wait for it ends
 * after BROKER_TIMEOUT_SEC. */
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "broker.h"
#include "tp-broker.h"
#include "tp-cleanup.h"

/* How long to wait for the broker's answer: the daemon answers from a single-threaded
 * loop that may be busy for a while. */
#define BROKER_TIMEOUT_SEC 30

/* -D thinproxy.broker=1: log every broker exchange. */
NBDKIT_DLL_PUBLIC int thinproxy_debug_broker;

/* The broker's socket (broker.h). */
const char *broker_path = TP_BROKER_PATH_DEFAULT;

/* Connect to the broker and send REQ. Returns the socket, or -1 with errno set. */
static int broker_send(const struct tp_broker_request *req)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = BROKER_TIMEOUT_SEC};
	CLEANUP_CLOSE int sock = -1;
	ssize_t n;

	memcpy(sa.sun_path, broker_path, strlen(broker_path) + 1);
	sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return -1;
	if (setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
	    setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0)
		return -1;
	if (connect(sock, (struct sockaddr *)&sa, sizeof sa) < 0)
		return -1;
	n = send(sock, req, sizeof *req, MSG_NOSIGNAL);
	if (n < 0)
		return -1;
	if ((size_t)n != sizeof *req) {
		errno = EIO;
		return -1;
	}
	return TAKE_FD(sock);
}

/* Receive one packet from the broker into BUF, which has room for one byte more than
 * the largest packet expected, and the fd it may carry into *RET_FD (-1 if none; NULL:
 * none allowed). Returns the packet's length, or -1 with errno set. */
static ssize_t broker_receive(int sock, void *buf, size_t size, int *ret_fd)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(4 * sizeof(int))];
	} control;
	struct iovec iov = {.iov_base = buf, .iov_len = size};
	struct msghdr msg = {.msg_iov = &iov,
	                     .msg_iovlen = 1,
	                     .msg_control = control.buf,
	                     .msg_controllen = sizeof control.buf};
	int fds[4], nfds = 0, i;
	struct cmsghdr *c;
	ssize_t n;

	do
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			errno = ETIMEDOUT;
		return -1;
	}
	for (c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
		size_t k;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		for (k = 0; k < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int) && nfds < 4; k++)
			memcpy(&fds[nfds++], CMSG_DATA(c) + k * sizeof(int), sizeof(int));
	}
	if (n == 0 || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || nfds > 1 ||
	    (nfds == 1 && ret_fd == NULL)) {
		for (i = 0; i < nfds; i++)
			close(fds[i]);
		errno = n == 0 ? ECONNRESET : EBADMSG;
		return -1;
	}
	if (ret_fd != NULL)
		*ret_fd = nfds == 1 ? fds[0] : -1;
	return n;
}

/* Ask the broker to open REF (broker.h). */
int broker_open(const char *ref, uint32_t flags, struct tp_broker_reply *ret_reply, int *ret_fd)
{
	char buf[sizeof(struct tp_broker_reply) + 1];
	struct tp_broker_request req;
	CLEANUP_CLOSE int sock = -1;
	CLEANUP_CLOSE int fd = -1;
	ssize_t n;
	int r;

	r = tp_broker_encode_open(ref, flags, &req);
	if (r < 0) {
		errno = -r;
		return -1;
	}
	sock = broker_send(&req);
	if (sock < 0)
		return -1;
	n = broker_receive(sock, buf, sizeof buf, &fd);
	if (n < 0)
		return -1;
	r = tp_broker_decode_reply(buf, (size_t)n, TP_BROKER_OPENED, ret_reply);
	if (r < 0) {
		errno = -r;
		return -1;
	}
	if ((ret_reply->error == 0) != (fd >= 0)) {
		errno = EBADMSG;
		return -1;
	}
	if (thinproxy_debug_broker)
		nbdkit_debug("broker: open %s %s%s: error %" PRIu32 ", fd %d, size %" PRIu64
		             ", block size %" PRIu32 ", flags %#" PRIx32 ", state %s",
		             ref, flags & TP_BROKER_WANT_WRITE ? "rw" : "ro",
		             flags & TP_BROKER_WANT_DIRECT ? " direct" : "", ret_reply->error, fd,
		             ret_reply->size, ret_reply->block_size, ret_reply->flags,
		             ret_reply->state);
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* Ask the broker for the tenant's exports (broker.h). */
int broker_list(void)
{
	struct tp_broker_request req;

	tp_broker_encode_list(&req);
	return broker_send(&req);
}

/* Receive the answer to LIST (broker.h). */
int broker_list_reply(int sock, struct tp_broker_reply *ret_reply)
{
	char buf[sizeof(struct tp_broker_reply) + 1];
	ssize_t n;
	int r;

	n = broker_receive(sock, buf, sizeof buf, NULL);
	if (n < 0)
		return -1;
	r = tp_broker_decode_reply(buf, (size_t)n, TP_BROKER_LISTED, ret_reply);
	if (r < 0)
		*ret_reply = (struct tp_broker_reply){.error = (uint32_t)-r};
	else if (thinproxy_debug_broker && ret_reply->error == 0)
		nbdkit_debug("broker: list: %" PRIu32 " exports", ret_reply->count);
	return 0;
}

/* Receive the next entry of a list (broker.h). */
int broker_list_entry(int sock, struct tp_broker_entry *ret_entry)
{
	char buf[sizeof(struct tp_broker_entry) + 1];
	ssize_t n;
	int r;

	n = broker_receive(sock, buf, sizeof buf, NULL);
	if (n < 0)
		return -1;
	r = tp_broker_decode_entry(buf, (size_t)n, ret_entry);
	if (r < 0) {
		errno = -r;
		return -1;
	}
	return 0;
}

/* Receive the next RANGES packet of CURSOR's answer on SOCK into its place in RANGES.
 * Returns 0, or -1 with errno set. */
static int receive_ranges(int sock, struct tp_broker_map_cursor *cursor,
                          struct tp_broker_range *ranges)
{
	char buf[sizeof(struct tp_broker_ranges) + 1];
	struct tp_broker_ranges p;
	uint32_t done = cursor->done;
	ssize_t n;
	int r;

	n = broker_receive(sock, buf, sizeof buf, NULL);
	if (n < 0)
		return -1;
	r = tp_broker_decode_ranges(buf, (size_t)n, cursor, &p);
	if (r < 0) {
		errno = -r;
		return -1;
	}
	memcpy(ranges + done, p.range, p.count * sizeof *ranges);
	return 0;
}

/* Ask the broker for the map of REF (broker.h). */
int broker_map(const char *ref, struct tp_broker_reply *ret_reply,
               struct tp_broker_range **ret_ranges)
{
	char buf[sizeof(struct tp_broker_reply) + 1];
	CLEANUP_FREE struct tp_broker_range *ranges = NULL;
	struct tp_broker_map_cursor cursor;
	struct tp_broker_request req;
	struct tp_broker_reply rep;
	CLEANUP_CLOSE int sock = -1;
	ssize_t n;
	int r;

	r = tp_broker_encode_map(ref, &req);
	if (r < 0) {
		errno = -r;
		return -1;
	}
	sock = broker_send(&req);
	if (sock < 0)
		return -1;
	n = broker_receive(sock, buf, sizeof buf, NULL);
	if (n < 0)
		return -1;
	r = tp_broker_decode_reply(buf, (size_t)n, TP_BROKER_MAPPED, &rep);
	if (r < 0) {
		errno = -r;
		return -1;
	}
	ranges = calloc(rep.count ? rep.count : 1, sizeof *ranges);
	if (ranges == NULL)
		return -1;
	tp_broker_map_start(&rep, &cursor);
	while (rep.error == 0 && tp_broker_ranges_due(&cursor) > 0)
		if (receive_ranges(sock, &cursor, ranges) < 0)
			return -1;
	if (thinproxy_debug_broker)
		nbdkit_debug("broker: map %s: error %" PRIu32 ", size %" PRIu64
		             ", block size %" PRIu32 ", %" PRIu32 " ranges",
		             ref, rep.error, rep.size, rep.block_size, rep.count);
	*ret_reply = rep;
	*ret_ranges = TAKE_PTR(ranges);
	return 0;
}
