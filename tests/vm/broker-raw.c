/* broker-raw: a client of thinproxyd's broker for the guest tests. The broker judges a
 * connection by its peer uid alone, so run under setpriv with the credentials of some
 * tenant's nbdkit (or anyone else's) this asks exactly what that process could ask:
 *
 *   broker-raw SOCKET open REF [write]     broker-raw SOCKET list
 *
 * It sends one request, built by include/tp-broker.h's encoders, and prints the answer
 * as one line: "open: ok size=N read-only=B state=S fd=rdonly|rdwr" (the access mode of
 * the fd that came with it) or "open: error N" (a positive errno, e.g. 2 = ENOENT);
 * "list: N" and then "entry REF size=N read-only=B state=S" per export, or
 * "list: error N"; "closed" if the daemon hangs up without answering. Exits 0 when the
 * conversation ran, 2 if it could not connect ("broker-raw: connect: ...") or the
 * answer is malformed. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tp-broker.h"
#include "tp-cleanup.h"

static _Noreturn void die(const char *what, int err)
{
	fprintf(stderr, "broker-raw: %s: %s\n", what, err ? strerror(err) : "malformed answer");
	exit(2);
}

/* Receive one packet into BUF (one byte more than any answer, so that a longer one
 * shows), and the fd it carries, if any, into *RET_FD. Returns its length; 0 if the
 * daemon hung up. */
static size_t receive(int fd, void *buf, size_t size, int *ret_fd)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} control;
	struct iovec iov = {.iov_base = buf, .iov_len = size};
	struct msghdr msg = {.msg_iov = &iov,
	                     .msg_iovlen = 1,
	                     .msg_control = control.buf,
	                     .msg_controllen = sizeof control.buf};
	struct cmsghdr *c;
	ssize_t n;

	do
		n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == ECONNRESET)
		n = 0;
	if (n < 0)
		die("recvmsg", errno);
	if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
		die("recvmsg", 0);
	c = CMSG_FIRSTHDR(&msg);
	if (c != NULL && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
	    c->cmsg_len == CMSG_LEN(sizeof(int)))
		memcpy(ret_fd, CMSG_DATA(c), sizeof(int));
	return (size_t)n;
}

int main(int argc, char **argv)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct tp_broker_request req;
	struct tp_broker_reply rep;
	char buf[sizeof(struct tp_broker_entry) + 1];
	CLEANUP_CLOSE int fd = -1;
	CLEANUP_CLOSE int dev = -1;
	bool open_req = argc >= 4 && strcmp(argv[2], "open") == 0;
	enum tp_broker_type answer = open_req ? TP_BROKER_OPENED : TP_BROKER_LISTED;
	size_t n;

	if (open_req ? argc > 5 || (argc == 5 && strcmp(argv[4], "write") != 0)
	             : argc != 3 || strcmp(argv[2], "list") != 0) {
		fprintf(stderr, "usage: broker-raw SOCKET open REF [write] | SOCKET list\n");
		return 2;
	}
	if (!open_req)
		tp_broker_encode_list(&req);
	else if (tp_broker_encode_open(argv[3], argc == 5, &req) < 0)
		die("not a valid reference", EINVAL);
	if (strlen(argv[1]) >= sizeof sa.sun_path)
		die("socket path", ENAMETOOLONG);
	memcpy(sa.sun_path, argv[1], strlen(argv[1]) + 1);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		die("connect", errno);
	if (send(fd, &req, sizeof req, MSG_NOSIGNAL) != (ssize_t)sizeof req) {
		/* The daemon may close before even reading a request it will not answer. */
		if (errno == EPIPE || errno == ECONNRESET) {
			printf("closed\n");
			return 0;
		}
		die("send", errno);
	}

	n = receive(fd, buf, sizeof buf, &dev);
	if (n == 0) {
		printf("closed\n");
		return 0;
	}
	if (tp_broker_decode_reply(buf, n, answer, &rep) < 0)
		die("reply", 0);
	if (rep.error != 0) {
		printf("%s: error %" PRIu32 "\n", argv[2], rep.error);
		return 0;
	}
	if (open_req) {
		int mode = dev >= 0 ? fcntl(dev, F_GETFL) & O_ACCMODE : -1;

		if (mode != O_RDONLY && mode != O_RDWR)
			die("the fd of the answer", dev >= 0 ? 0 : EBADF);
		printf("open: ok size=%" PRIu64 " read-only=%d state=%s fd=%s\n", rep.size,
		       !!(rep.flags & TP_BROKER_READ_ONLY), rep.state,
		       mode == O_RDONLY ? "rdonly" : "rdwr");
		return 0;
	}
	printf("list: %" PRIu32 "\n", rep.count);
	for (uint32_t i = 0; i < rep.count; i++) {
		struct tp_broker_entry e;

		n = receive(fd, buf, sizeof buf, &dev);
		if (n == 0 || tp_broker_decode_entry(buf, n, &e) < 0)
			die("entry", 0);
		printf("entry %s size=%" PRIu64 " read-only=%d state=%s\n", e.ref, e.size,
		       !!(e.flags & TP_BROKER_READ_ONLY), e.state);
	}
	return 0;
}
