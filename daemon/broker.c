/* The broker: hands open thin device fds to the tenants' nbdkits over a private
 * SOCK_SEQPACKET socket (wire format: include/tp-broker.h).
 *
 * It is the one door from an nbdkit (which a tenant may have compromised) into the
 * daemon, so it stays narrow: the peer is identified by SO_PEERCRED and nothing it says,
 * each connection carries one request of a closed set (OPEN, LIST, MAP) checked to the byte
 * before anything else happens, each request is one ops_* call, and any malformed
 * packet ends the connection.
 *
 * It runs in the daemon's single-threaded main loop, which also restarts dead nbdkits and
 * runs the pool monitor, so it never waits for a peer: every socket is non-blocking,
 * each connection is a state machine in the broker's epoll set (request awaited, then
 * answer being sent, as far as the peer's socket takes it), and a timerfd in the same
 * set closes whatever passes its deadline. One uid's connections are capped, so that a
 * compromised nbdkit cannot take the broker's capacity from the other tenants. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "log.h"
#include "ops.h"
#include "tp-broker.h"
#include "tp-cleanup.h"
#include "tp-clock.h"

_Static_assert(TP_BROKER_REF_SIZE == TP_REF_MAX + 1, "a wire reference holds any TP_REF_MAX");

/* The plugin sends its request right after connecting: a peer that has not within this
 * time is broken or hostile. */
#define REQUEST_TIMEOUT_MS 500
/* All of one answer (a LIST may be a few thousand packets, a MAP a few hundred of 4 KiB,
 * that the plugin reads as they come) must be sent within this time. */
#define REPLY_TIMEOUT_MS 1000

#define LISTEN_BACKLOG 64
/* Events handled per broker_run, connections accepted per wakeup of the listening
 * socket: the main loop gets its turn in between. */
#define BATCH 16

/* One connection, from accept to close. */
struct conn {
	struct conn *next;
	int fd;
	struct ucred peer;
	struct principal p;
	int64_t deadline; /* tp_now_ms() clock */
	bool answering;   /* the request is in, the answer on its way */
	struct tp_broker_request req;
	/* The answer: rep (with dev, for an OPEN that succeeded), then count packets of
	 * packet_size bytes each: a LIST's entries, a MAP's ranges. */
	struct tp_broker_reply rep;
	int dev;
	void *packets;
	size_t packet_size;
	uint32_t count;
	uint32_t sent; /* packets sent so far, rep first */
};

struct broker {
	int ep;        /* epoll: the listening socket, the timer, each connection */
	int listen_fd; /* its epoll data is &listen_fd */
	int timer_fd;  /* fires at the earliest deadline; its epoll data is &timer_fd */
	struct conn *conns;
	unsigned n_conns;
};

/* The pool's data block size in bytes, read once: it never changes. 0 = unknown. */
static uint32_t pool_block_bytes;
static bool pool_block_known;

/* The last uid refused as nobody's nbdkit: logged once, not on every retry. */
static uid_t last_unknown_uid = (uid_t)-1;
/* The last uid refused for holding BROKER_MAX_PER_UID connections, until it holds none:
 * a flood is logged once, not per connection. */
static uid_t last_capped_uid = (uid_t)-1;
/* Whether a connection was refused for BROKER_MAX since the count last fell below. */
static bool at_capacity;

/* Make DIR, the broker's private directory: root's, mode 0711, so that an nbdkit may
 * reach the socket by its name but nobody may list or change the directory. */
static int make_private_dir(const char *dir)
{
	struct stat st;

	if (mkdir(dir, 0711) < 0 && errno != EEXIST)
		return -errno;
	if (lstat(dir, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	if (st.st_uid != geteuid())
		return -EPERM;
	if (chmod(dir, 0711) < 0)
		return -errno;
	return 0;
}

/* Remove a socket at PATH that nobody listens on any more; -EADDRINUSE if a broker (a
 * second daemon) still answers there, -EEXIST if PATH is something else. */
static int remove_stale_socket(const struct sockaddr_un *sa)
{
	CLEANUP_CLOSE int fd = -1;
	struct stat st;

	if (lstat(sa->sun_path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) == 0 || errno == EAGAIN)
		return -EADDRINUSE;
	if (unlink(sa->sun_path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

/* Listen on PATH: the socket broker_start describes. Returns the fd or -errno. */
static int listen_at(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	CLEANUP_FREE char *dir = NULL;
	CLEANUP_CLOSE int fd = -1;
	int r;

	if (path == NULL || path[0] != '/')
		return -EINVAL;
	if (strlen(path) >= sizeof sa.sun_path)
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	dir = strdup(path);
	if (dir == NULL)
		return -ENOMEM;
	r = make_private_dir(dirname(dir));
	if (r < 0)
		return r;
	r = remove_stale_socket(&sa);
	if (r < 0)
		return r;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		return -errno;
	/* Anyone who can reach the socket may connect: only nbdkits can reach it (the
	 * directory lives where no container looks), and every connection is then judged
	 * by its peer uid alone. Set explicitly: bind() follows the umask. */
	if (chmod(path, 0666) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
		r = -errno;
		unlink(path);
		return r;
	}
	return TAKE_FD(fd);
}

int broker_start(const char *path, struct broker **ret_broker)
{
	struct epoll_event ev = {.events = EPOLLIN};
	struct broker *b;
	int r;

	b = calloc(1, sizeof *b);
	if (b == NULL)
		return -ENOMEM;
	b->listen_fd = b->timer_fd = -1;
	b->ep = epoll_create1(EPOLL_CLOEXEC);
	if (b->ep < 0) {
		r = -errno;
		goto fail;
	}
	b->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (b->timer_fd < 0) {
		r = -errno;
		goto fail;
	}
	ev.data.ptr = &b->timer_fd;
	if (epoll_ctl(b->ep, EPOLL_CTL_ADD, b->timer_fd, &ev) < 0) {
		r = -errno;
		goto fail;
	}
	r = listen_at(path);
	if (r < 0)
		goto fail;
	b->listen_fd = r;
	ev.data.ptr = &b->listen_fd;
	if (epoll_ctl(b->ep, EPOLL_CTL_ADD, b->listen_fd, &ev) < 0) {
		r = -errno;
		unlink(path);
		goto fail;
	}
	*ret_broker = b;
	return 0;

fail:
	broker_stop(b);
	return r;
}

int broker_fd(const struct broker *b)
{
	return b->ep;
}

/* How many connections UID holds. */
static unsigned conns_of(const struct broker *b, uid_t uid)
{
	unsigned n = 0;

	for (const struct conn *c = b->conns; c; c = c->next)
		n += c->peer.uid == uid;
	return n;
}

/* Close C and forget it; closing its fd takes it out of the epoll set. */
static void conn_close(struct broker *b, struct conn *c)
{
	struct conn **pc;

	for (pc = &b->conns; *pc != c; pc = &(*pc)->next)
		;
	*pc = c->next;
	b->n_conns--;
	if (c->peer.uid == last_capped_uid && conns_of(b, c->peer.uid) == 0)
		last_capped_uid = (uid_t)-1;
	close(c->fd);
	if (c->dev >= 0)
		close(c->dev);
	free(c->packets);
	free(c);
}

void broker_stop(struct broker *b)
{
	if (b == NULL)
		return;
	while (b->conns)
		conn_close(b, b->conns);
	if (b->listen_fd >= 0)
		close(b->listen_fd);
	if (b->timer_fd >= 0)
		close(b->timer_fd);
	if (b->ep >= 0)
		close(b->ep);
	free(b);
}

/* Send the packet BUF of LEN bytes on FD, with PASS_FD by SCM_RIGHTS unless it is -1.
 * -EAGAIN if the peer's socket has no room for it yet. */
static int send_packet(int fd, const void *buf, size_t len, int pass_fd)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} control;
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t n;

	if (pass_fd >= 0) {
		struct cmsghdr *c;

		memset(&control, 0, sizeof control);
		msg.msg_control = control.buf;
		msg.msg_controllen = sizeof control.buf;
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
	}
	/* A SOCK_SEQPACKET send is all or nothing: EAGAIN until the peer's queue has room
	 * for the whole packet. */
	do
		n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	return (size_t)n == len ? 0 : -EIO;
}

/* Receive and check the one request on FD. -EAGAIN if it has not arrived yet,
 * -ECONNRESET if the peer closed without sending one, the decoder's -errno for anything
 * malformed. */
static int receive_request(int fd, struct tp_broker_request *ret_req)
{
	/* One byte more than a request, so that a longer packet shows as too long. */
	char buf[sizeof(struct tp_broker_request) + 1];
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t n;

	/* No control buffer: fds a peer tries to pass us are closed by the kernel and show
	 * as MSG_CTRUNC. */
	do
		n = recvmsg(fd, &msg, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	if (n == 0)
		return -ECONNRESET;
	if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
		return -EBADMSG;
	return tp_broker_decode_request(buf, (size_t)n, ret_req);
}

/* The pool's block size for OPENED and MAPPED replies; 0 (the plugin then assumes nothing) if the
 * pool cannot say. */
static uint32_t block_size(void)
{
	struct pool_view view;

	if (!pool_block_known && ops_pool_status(&view) == 0) {
		pool_block_known = true;
		pool_block_bytes = view.block_size <= UINT32_MAX ? (uint32_t)view.block_size : 0;
	}
	return pool_block_bytes;
}

static const char *open_mode(const struct conn *c)
{
	if (c->req.flags & TP_BROKER_WANT_DIRECT)
		return c->req.flags & TP_BROKER_WANT_WRITE ? "read-write direct"
		                                           : "read-only direct";
	return c->req.flags & TP_BROKER_WANT_WRITE ? "read-write" : "read-only";
}

/* The answer to C's OPEN: the device, or a refusal. */
static void prepare_open(struct conn *c)
{
	bool want_write = c->req.flags & TP_BROKER_WANT_WRITE;
	bool direct = c->req.flags & TP_BROKER_WANT_DIRECT;
	struct export_info info;
	int dev;

	dev = ops_open_export(&c->p, c->req.ref, want_write, direct, &info);
	if (dev < 0) {
		/* ENOENT (missing or not the tenant's) and EROFS are answers, not faults;
		 * ops has logged its own failures. */
		log_errno(LOG_DEBUG, dev, "broker: tenant %s: open %s %s refused: %m", c->p.tenant,
		          c->req.ref, open_mode(c));
		tp_broker_encode_error(TP_BROKER_OPENED, -dev, &c->rep);
		return;
	}
	if (tp_broker_encode_opened(info.size, !want_write, block_size(), info.state, &c->rep) <
	    0) {
		log_error("broker: tenant %s: export %s has an unusable state \"%s\", refusing",
		          c->p.tenant, c->req.ref, info.state);
		tp_broker_encode_error(TP_BROKER_OPENED, EIO, &c->rep);
		close(dev);
		return;
	}
	/* Sent with the reply; our copy is closed with the connection. */
	c->dev = dev;
}

/* The answer to C's LIST: the reply and the entries that follow it. */
static void prepare_list(struct conn *c)
{
	CLEANUP_FREE struct export_info *ex = NULL;
	struct tp_broker_entry *entries;
	size_t n = 0, i;
	int r;

	r = ops_list_exports(&c->p, &ex, &n);
	if (r < 0) {
		log_errno(LOG_DEBUG, r, "broker: tenant %s: list refused: %m", c->p.tenant);
		tp_broker_encode_error(TP_BROKER_LISTED, -r, &c->rep);
		return;
	}
	if (n > TP_BROKER_LIST_MAX)
		log_warning("broker: tenant %s has %zu exports, listing the first %d", c->p.tenant,
		            n, TP_BROKER_LIST_MAX);
	entries =
	    calloc(n < TP_BROKER_LIST_MAX ? (n ? n : 1) : TP_BROKER_LIST_MAX, sizeof *entries);
	if (entries == NULL) {
		tp_broker_encode_error(TP_BROKER_LISTED, ENOMEM, &c->rep);
		return;
	}
	/* Sent after the reply; freed with the connection. */
	c->packets = entries;
	c->packet_size = sizeof *entries;
	for (i = 0; i < n && c->count < TP_BROKER_LIST_MAX; i++) {
		if (tp_broker_encode_entry(ex[i].name, ex[i].size, !ex[i].writable, ex[i].state,
		                           &entries[c->count]) < 0) {
			log_error("broker: tenant %s: export \"%s\" (state \"%s\") cannot be "
			          "listed, ignoring",
			          c->p.tenant, ex[i].name, ex[i].state);
			continue;
		}
		c->count++;
	}
	tp_broker_encode_listed(c->count, &c->rep);
}

/* The map of C's export as the wire carries it: ops' ranges, the closest joined if there
 * are more than TP_BROKER_MAP_MAX. *RET_MAP is malloc'ed. Returns 0 or -errno. */
static int map_export(const struct conn *c, struct tp_broker_range **ret_map, size_t *ret_n,
                      uint64_t *ret_size)
{
	CLEANUP_FREE struct export_range *ranges = NULL;
	struct tp_broker_range *map;
	size_t n = 0, i;
	uint64_t size;
	int r;

	r = ops_map_export(&c->p, c->req.ref, &ranges, &n, &size);
	if (r < 0)
		return r;
	map = calloc(n ? n : 1, sizeof *map);
	if (map == NULL)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		map[i].offset = ranges[i].offset;
		map[i].length = ranges[i].length;
	}
	if (n > TP_BROKER_MAP_MAX) {
		log_debug("broker: tenant %s: map of %s has %zu ranges, joining the closest",
		          c->p.tenant, c->req.ref, n);
		n = tp_broker_coalesce(map, n, TP_BROKER_MAP_MAX);
	}
	*ret_map = map;
	*ret_n = n;
	*ret_size = size;
	return 0;
}

/* Encode the MAPPED reply and the RANGES packets of the N ranges MAP (at most
 * TP_BROKER_MAP_MAX) of an export of SIZE bytes as C's answer. Returns 0, -EIO for a map
 * the wire's rules refuse, or -ENOMEM. */
static int encode_map(struct conn *c, const struct tp_broker_range *map, size_t n, uint64_t size)
{
	struct tp_broker_map_cursor cursor;
	struct tp_broker_ranges *packets;
	uint32_t total, k;

	if (tp_broker_encode_mapped(size, block_size(), (uint32_t)n, &c->rep) < 0)
		return -EIO;
	total = tp_broker_ranges_packets((uint32_t)n);
	packets = calloc(total ? total : 1, sizeof *packets);
	if (packets == NULL)
		return -ENOMEM;
	tp_broker_map_start(&c->rep, &cursor);
	for (k = 0; k < total; k++)
		if (tp_broker_encode_ranges(map + cursor.done, tp_broker_ranges_due(&cursor),
		                            &cursor, &packets[k]) < 0) {
			log_error("broker: tenant %s: the map of %s is out of order or past its "
			          "size at range %" PRIu32 ", refusing",
			          c->p.tenant, c->req.ref, cursor.done);
			free(packets);
			return -EIO;
		}
	/* Sent after the reply; freed with the connection. */
	c->packets = packets;
	c->packet_size = sizeof *packets;
	c->count = total;
	return 0;
}

/* The answer to C's MAP: the reply and the ranges that follow it, or a refusal. */
static void prepare_map(struct conn *c)
{
	CLEANUP_FREE struct tp_broker_range *map = NULL;
	uint64_t size;
	size_t n;
	int r;

	r = map_export(c, &map, &n, &size);
	if (r == 0)
		r = encode_map(c, map, n, size);
	if (r < 0) {
		/* ops has logged its own failures, encode_map a wrong map. */
		log_errno(LOG_DEBUG, r, "broker: tenant %s: map %s refused: %m", c->p.tenant,
		          c->req.ref);
		tp_broker_encode_error(TP_BROKER_MAPPED, -r, &c->rep);
	}
}

/* Log that C's answer could not be sent: R. */
static void log_unsent(const struct conn *c, int r)
{
	if (c->req.h.type == TP_BROKER_LIST)
		log_errno(LOG_WARNING, r, "broker: tenant %s: answer to list (nbdkit pid %d): %m",
		          c->p.tenant, (int)c->peer.pid);
	else
		log_errno(LOG_WARNING, r, "broker: tenant %s: answer to %s %s (nbdkit pid %d): %m",
		          c->p.tenant, c->req.h.type == TP_BROKER_OPEN ? "open" : "map", c->req.ref,
		          (int)c->peer.pid);
}

/* Send as much of C's answer as its socket takes; close C once all is sent or the
 * sending failed, else wait until the socket has room again. Returns -EAGAIN in that
 * case, else 0 (C is gone). */
static int conn_send(struct broker *b, struct conn *c)
{
	uint32_t total = 1 + (c->rep.error == 0 ? c->count : 0);
	struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
	int r = 0;

	while (c->sent < total) {
		if (c->sent == 0)
			r = send_packet(c->fd, &c->rep, sizeof c->rep, c->dev);
		else
			r = send_packet(c->fd, (char *)c->packets + (c->sent - 1) * c->packet_size,
			                c->packet_size, -1);
		if (r < 0)
			break;
		c->sent++;
	}
	if (r == -EAGAIN) {
		if (epoll_ctl(b->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
			return -EAGAIN;
		r = -errno;
	}
	if (r < 0)
		log_unsent(c, r);
	else if (c->req.h.type == TP_BROKER_OPEN && c->dev >= 0)
		log_debug("broker: tenant %s: opened %s %s for nbdkit pid %d", c->p.tenant,
		          c->req.ref, open_mode(c), (int)c->peer.pid);
	conn_close(b, c);
	return 0;
}

/* C's request may have arrived: answer it, or close C if it is malformed. Returns
 * -EAGAIN if it has not arrived, else 0 (C is gone or answering). */
static int conn_receive(struct broker *b, struct conn *c)
{
	int r;

	r = receive_request(c->fd, &c->req);
	if (r == -EAGAIN)
		return -EAGAIN;
	if (r < 0) {
		log_errno(LOG_WARNING, r,
		          "broker: tenant %s: bad request from nbdkit pid %d: %m, closing",
		          c->p.tenant, (int)c->peer.pid);
		conn_close(b, c);
		return 0;
	}
	if (c->req.h.type == TP_BROKER_OPEN)
		prepare_open(c);
	else if (c->req.h.type == TP_BROKER_LIST)
		prepare_list(c);
	else
		prepare_map(c);
	c->answering = true;
	c->deadline = tp_now_ms() + REPLY_TIMEOUT_MS;
	conn_send(b, c);
	return 0;
}

/* Accept one pending connection and keep it, or close it at once: a peer beyond the
 * caps or one that runs no tenant's nbdkit. Returns false when none was pending. */
static bool accept_one(struct broker *b)
{
	CLEANUP_CLOSE int fd = -1;
	struct epoll_event ev = {.events = EPOLLIN};
	struct principal p;
	struct ucred cred;
	socklen_t len = sizeof cred;
	struct conn *c;
	int r;

	fd = accept4(b->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
		    errno != ECONNABORTED)
			log_warning("broker: accept: %m");
		/* Past an interrupted or aborted connection, go on; anything else ends
		 * this batch. */
		return errno == EINTR || errno == ECONNABORTED;
	}
	/* Who is asking: the kernel's word (credentials at connect time), nothing else. */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		log_warning("broker: SO_PEERCRED: %m, closing");
		return true;
	}
	if (conns_of(b, cred.uid) >= BROKER_MAX_PER_UID) {
		if (cred.uid != last_capped_uid)
			log_warning("broker: uid %u (pid %d) holds %d connections already, "
			            "refusing more",
			            (unsigned)cred.uid, (int)cred.pid, BROKER_MAX_PER_UID);
		last_capped_uid = cred.uid;
		return true;
	}
	if (b->n_conns >= BROKER_MAX) {
		if (!at_capacity)
			log_warning("broker: %d connections open, refusing more (uid %u, pid %d)",
			            BROKER_MAX, (unsigned)cred.uid, (int)cred.pid);
		at_capacity = true;
		return true;
	}
	r = ops_principal_for_nbd_uid(cred.uid, &p);
	if (r < 0) {
		if (r != -ENOENT)
			log_errno(LOG_WARNING, r, "broker: tenant for uid %u: %m, closing",
			          (unsigned)cred.uid);
		else if (cred.uid != last_unknown_uid)
			log_warning("broker: connection from uid %u (pid %d), which runs no "
			            "tenant's nbdkit, closing",
			            (unsigned)cred.uid, (int)cred.pid);
		else
			log_debug("broker: connection from uid %u (pid %d) again, closing",
			          (unsigned)cred.uid, (int)cred.pid);
		if (r == -ENOENT)
			last_unknown_uid = cred.uid;
		return true;
	}
	c = calloc(1, sizeof *c);
	if (c == NULL) {
		log_warning("broker: tenant %s: no memory for a connection, closing", p.tenant);
		return true;
	}
	c->fd = fd;
	c->peer = cred;
	c->p = p;
	c->dev = -1;
	c->deadline = tp_now_ms() + REQUEST_TIMEOUT_MS;
	ev.data.ptr = c;
	if (epoll_ctl(b->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		log_warning("broker: tenant %s: watch a connection: %m, closing", p.tenant);
		free(c);
		return true;
	}
	TAKE_FD(fd);
	c->next = b->conns;
	b->conns = c;
	b->n_conns++;
	return true;
}

/* Close every connection whose peer is past its deadline, and set the timer for the
 * next one. */
static void expire(struct broker *b)
{
	struct itimerspec its = {{0, 0}, {0, 0}};
	int64_t now = tp_now_ms(), next = INT64_MAX;
	struct conn *c, *next_c;

	for (c = b->conns; c; c = next_c) {
		next_c = c->next;
		if (c->deadline > now)
			continue;
		/* A request that came in time, or room the peer made, may not have had its
		 * turn yet when the broker itself is slow: that is not the peer's fault. */
		if ((c->answering ? conn_send(b, c) : conn_receive(b, c)) == 0)
			continue;
		if (c->answering)
			log_unsent(c, -ETIMEDOUT);
		else
			/* A uid being refused has been logged as flooding already. */
			log_errno(c->peer.uid == last_capped_uid ? LOG_DEBUG : LOG_WARNING,
			          -ETIMEDOUT,
			          "broker: tenant %s: bad request from nbdkit pid %d: %m, closing",
			          c->p.tenant, (int)c->peer.pid);
		conn_close(b, c);
	}
	for (c = b->conns; c; c = c->next)
		if (c->deadline < next)
			next = c->deadline;
	if (b->n_conns < BROKER_MAX)
		at_capacity = false;
	/* Absolute, on the clock of tp_now_ms(); all zero disarms. */
	if (next != INT64_MAX) {
		its.it_value.tv_sec = next / 1000;
		its.it_value.tv_nsec = next % 1000 * 1000000;
	}
	if (timerfd_settime(b->timer_fd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
		log_warning("broker: set the deadline timer: %m, ignoring");
}

void broker_run(struct broker *b)
{
	struct epoll_event evs[BATCH];
	int n;

	n = epoll_wait(b->ep, evs, BATCH, 0);
	for (int i = 0; i < n; i++) {
		void *ptr = evs[i].data.ptr;

		if (ptr == &b->listen_fd) {
			for (int k = 0; k < BATCH && accept_one(b); k++)
				;
		} else if (ptr == &b->timer_fd) {
			uint64_t ticks;

			if (read(b->timer_fd, &ticks, sizeof ticks) < 0 && errno != EAGAIN)
				log_warning("broker: read the deadline timer: %m, ignoring");
		} else {
			struct conn *c = ptr;

			if (c->answering)
				conn_send(b, c);
			else
				conn_receive(b, c);
		}
	}
	expire(b);
}
