/* broker-raw: a client of thinproxyd's broker for the guest tests. The broker judges a
 * connection by its peer uid alone, so run under setpriv with the credentials of some
 * tenant's nbdkit (or anyone else's) this asks exactly what that process could ask:
 *
 *   broker-raw SOCKET open REF [write]     broker-raw SOCKET list
 *   broker-raw SOCKET flood SILENT LISTS
 *
 * It sends one request, built by include/tp-broker.h's encoders, and prints the answer
 * as one line: "open: ok size=N read-only=B state=S fd=rdonly|rdwr" (the access mode of
 * the fd that came with it) or "open: error N" (a positive errno, e.g. 2 = ENOENT);
 * "list: N" and then "entry REF size=N read-only=B state=S" per export, or
 * "list: error N"; "closed" if the daemon hangs up without answering. Exits 0 when the
 * conversation ran, 2 if it could not connect ("broker-raw: connect: ...") or the
 * answer is malformed.
 *
 * flood keeps SILENT + LISTS connections to the broker open until SIGTERM or SIGINT, as
 * a compromised nbdkit could: SILENT of them send nothing, LISTS send LIST and never
 * read the answer, and each one the daemon closes is opened again within a second. It
 * prints "flood: started" once it has tried each connection (the daemon's accept queue
 * may not have had room for all), and at the end
 * "flood: C connections, A lists answered, R lists refused": a LIST connection counts as
 * answered once the daemon's answer has begun to arrive, and as refused if the daemon
 * closed it with nothing sent. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "tp-broker.h"
#include "tp-cleanup.h"
#include "tp-clock.h"

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

/* Most connections a flood keeps open. */
#define FLOOD_MAX 1024

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* One connection of a flood to SA, its LIST sent if LIST. Returns the socket, -EAGAIN
 * while the daemon's accept queue is full, -ECONNRESET if the daemon closed it before
 * the request went out, or -errno. */
static int flood_connect(const struct sockaddr_un *sa, bool list)
{
	CLEANUP_CLOSE int fd = -1;
	struct tp_broker_request req;

	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) < 0)
		return -errno;
	if (list) {
		tp_broker_encode_list(&req);
		if (send(fd, &req, sizeof req, MSG_NOSIGNAL) != (ssize_t)sizeof req)
			return errno == EPIPE ? -ECONNRESET : -errno;
	}
	return TAKE_FD(fd);
}

/* Count the LIST connection FD as answered if the daemon's answer has begun to arrive,
 * else as refused if the daemon closed it (CLOSED). */
static void count_list(int fd, bool closed, unsigned long *answered, unsigned long *refused)
{
	char c;

	if (recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0)
		(*answered)++;
	else if (closed)
		(*refused)++;
}

/* A count of connections: 0 to FLOOD_MAX. */
static long flood_count(const char *arg)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || n < 0 || n > FLOOD_MAX) {
		fprintf(stderr, "broker-raw: flood: \"%s\" is not a count of 0 to %d\n", arg,
		        FLOOD_MAX);
		exit(2);
	}
	return n;
}

/* The flood: SILENT connections that send nothing, then LISTS that send LIST and never
 * read, in that order (so that the daemon, which accepts in order, meets the silent
 * ones first). */
static int flood(const struct sockaddr_un *sa, long silent, long lists)
{
	struct sigaction act = {.sa_handler = on_signal};
	static struct pollfd pfd[FLOOD_MAX];
	/* When a closed connection may be opened again (tp_now_ms() clock). */
	static int64_t reopen[FLOOD_MAX];
	unsigned long made = 0, answered = 0, refused = 0;
	long n = silent + lists;
	bool started = false;

	if (n < 1 || n > FLOOD_MAX) {
		fprintf(stderr, "broker-raw: flood: 1 to %d connections in all\n", FLOOD_MAX);
		return 2;
	}
	/* No SA_RESTART: a signal ends the wait in poll(). */
	sigaction(SIGTERM, &act, NULL);
	sigaction(SIGINT, &act, NULL);
	for (long i = 0; i < n; i++)
		pfd[i].fd = -1;
	while (!stop) {
		int64_t now = tp_now_ms(), next = INT64_MAX;
		int timeout;

		for (long i = 0; i < n; i++) {
			int r;

			if (pfd[i].fd >= 0)
				continue;
			if (reopen[i] > now) {
				next = reopen[i] < next ? reopen[i] : next;
				continue;
			}
			r = flood_connect(sa, i >= silent);
			if (r >= 0) {
				/* No events asked: poll() reports the daemon's close as POLLHUP,
				 * and an unread answer does not wake us. */
				pfd[i].fd = r;
				pfd[i].events = 0;
				made++;
			} else if (r == -ECONNRESET) {
				refused++;
				reopen[i] = now + 1000;
				next = reopen[i] < next ? reopen[i] : next;
			} else if (r == -EAGAIN) {
				/* The daemon's accept queue is full: try again soon. */
				next = now + 10 < next ? now + 10 : next;
			} else {
				die("connect", -r);
			}
		}
		if (!started) {
			printf("flood: started\n");
			fflush(stdout);
			started = true;
		}
		timeout = next == INT64_MAX ? -1 : next > now ? (int)(next - now) : 0;
		if (poll(pfd, (nfds_t)n, timeout) < 0 && errno != EINTR)
			die("poll", errno);
		/* What the daemon closed is opened again a second later, not at once: enough
		 * to keep this uid's share of the broker full, without a busy loop that would
		 * only measure the CPU. */
		now = tp_now_ms();
		for (long i = 0; i < n; i++) {
			if (pfd[i].fd < 0 || pfd[i].revents == 0)
				continue;
			if (i >= silent)
				count_list(pfd[i].fd, true, &answered, &refused);
			close(pfd[i].fd);
			pfd[i].fd = -1;
			reopen[i] = now + 1000;
		}
	}
	/* The lists still open: answered, refused or still waiting. */
	poll(pfd, (nfds_t)n, 0);
	for (long i = silent; i < n; i++)
		if (pfd[i].fd >= 0)
			count_list(pfd[i].fd, pfd[i].revents != 0, &answered, &refused);
	printf("flood: %lu connections, %lu lists answered, %lu lists refused\n", made, answered,
	       refused);
	return 0;
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

	if (argc == 5 && strcmp(argv[2], "flood") == 0) {
		if (strlen(argv[1]) >= sizeof sa.sun_path)
			die("socket path", ENAMETOOLONG);
		memcpy(sa.sun_path, argv[1], strlen(argv[1]) + 1);
		return flood(&sa, flood_count(argv[3]), flood_count(argv[4]));
	}
	if (open_req ? argc > 5 || (argc == 5 && strcmp(argv[4], "write") != 0)
	             : argc != 3 || strcmp(argv[2], "list") != 0) {
		fprintf(stderr, "usage: broker-raw SOCKET open REF [write] | SOCKET list | SOCKET "
		                "flood SILENT LISTS\n");
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
