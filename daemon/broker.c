/* The broker: hands open thin device fds to the tenants' nbdkits over a private
 * SOCK_SEQPACKET socket (wire format: include/tp-broker.h).
 *
 * It is the one door from an nbdkit (which a tenant may have compromised) into the
 * daemon, so it stays narrow: the peer is identified by SO_PEERCRED and nothing it says,
 * each connection carries one request of a closed set (OPEN, LIST) checked to the byte
 * before anything else happens, each request is one ops_* call, and any malformed
 * packet ends the connection. It runs in the daemon's single-threaded main loop, so
 * every wait is bounded. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "log.h"
#include "ops.h"
#include "tp-broker.h"
#include "tp-cleanup.h"

_Static_assert(TP_BROKER_REF_SIZE == TP_REF_MAX + 1, "a wire reference holds any TP_REF_MAX");

/* The plugin sends its request right after connecting: a peer that has not within this
 * time is broken or hostile. */
#define REQUEST_TIMEOUT_MS 500
/* All of one answer (a LIST may be a few thousand packets the plugin reads as they
 * come) must be sent within this time. */
#define REPLY_TIMEOUT_MS 1000

#define LISTEN_BACKLOG 64

/* The pool's data block size in bytes, read once: it never changes. 0 = unknown. */
static uint32_t pool_block_bytes;
static bool pool_block_known;

/* The last uid refused as nobody's nbdkit: logged once, not on every retry. */
static uid_t last_unknown_uid = (uid_t)-1;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until FD is ready for EVENTS or the DEADLINE (now_ms() clock) passes. */
static int wait_until(int fd, short events, int64_t deadline)
{
	struct pollfd pfd = {.fd = fd, .events = events};

	for (;;) {
		int64_t left = deadline - now_ms();
		int r;

		if (left <= 0)
			return -ETIMEDOUT;
		r = poll(&pfd, 1, (int)left);
		if (r > 0)
			return 0;
		if (r == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

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

int broker_listen(const char *path)
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

/* Send the packet BUF of LEN bytes on FD, with PASS_FD by SCM_RIGHTS unless it is -1,
 * before DEADLINE. */
static int send_packet(int fd, const void *buf, size_t len, int pass_fd, int64_t deadline)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} control;
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t n;
	int r;

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
	for (;;) {
		/* A SOCK_SEQPACKET send is all or nothing: EAGAIN until the peer's queue has
		 * room for the whole packet. */
		n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n >= 0)
			return (size_t)n == len ? 0 : -EIO;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		r = wait_until(fd, POLLOUT, deadline);
		if (r < 0)
			return r;
	}
}

/* Receive and check the one request on FD before DEADLINE. -ECONNRESET if the peer
 * closed without sending one; the decoder's -errno for anything malformed. */
static int receive_request(int fd, int64_t deadline, struct tp_broker_request *ret_req)
{
	/* One byte more than a request, so that a longer packet shows as too long. */
	char buf[sizeof(struct tp_broker_request) + 1];
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t n;
	int r;

	r = wait_until(fd, POLLIN, deadline);
	if (r < 0)
		return r;
	/* No control buffer: fds a peer tries to pass us are closed by the kernel and show
	 * as MSG_CTRUNC. */
	do
		n = recvmsg(fd, &msg, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -ECONNRESET;
	if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
		return -EBADMSG;
	return tp_broker_decode_request(buf, (size_t)n, ret_req);
}

/* The pool's block size for OPENED replies; 0 (the plugin then assumes nothing) if the
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

static void answer_open(int fd, const struct principal *p, const struct tp_broker_request *req,
                        pid_t peer_pid, int64_t deadline)
{
	bool want_write = req->flags & TP_BROKER_WANT_WRITE;
	const char *mode = want_write ? "read-write" : "read-only";
	struct tp_broker_reply rep;
	struct export_info info;
	CLEANUP_CLOSE int dev = -1;
	int r;

	dev = ops_open_export(p, req->ref, want_write, &info);
	if (dev < 0) {
		/* ENOENT (missing or not the tenant's) and EROFS are answers, not faults;
		 * ops has logged its own failures. */
		log_errno(LOG_DEBUG, dev, "broker: tenant %s: open %s %s refused: %m", p->tenant,
		          req->ref, mode);
		tp_broker_encode_error(TP_BROKER_OPENED, -dev, &rep);
		dev = -1;
	} else if (tp_broker_encode_opened(info.size, !want_write, block_size(), info.state, &rep) <
	           0) {
		log_error("broker: tenant %s: export %s has an unusable state \"%s\", refusing",
		          p->tenant, req->ref, info.state);
		tp_broker_encode_error(TP_BROKER_OPENED, EIO, &rep);
		close(TAKE_FD(dev));
	}
	r = send_packet(fd, &rep, sizeof rep, dev, deadline);
	if (r < 0) {
		log_errno(LOG_WARNING, r,
		          "broker: tenant %s: answer to open %s (nbdkit pid %d): %m", p->tenant,
		          req->ref, (int)peer_pid);
		return;
	}
	if (dev >= 0)
		log_debug("broker: tenant %s: opened %s %s for nbdkit pid %d", p->tenant, req->ref,
		          mode, (int)peer_pid);
	/* Our copy of the device fd closes here; the plugin holds its own. */
}

static void answer_list(int fd, const struct principal *p, pid_t peer_pid, int64_t deadline)
{
	CLEANUP_FREE struct export_info *ex = NULL;
	CLEANUP_FREE struct tp_broker_entry *entries = NULL;
	struct tp_broker_reply rep;
	uint32_t count = 0;
	size_t n = 0, i;
	int r;

	r = ops_list_exports(p, &ex, &n);
	if (r < 0) {
		log_errno(LOG_DEBUG, r, "broker: tenant %s: list refused: %m", p->tenant);
		tp_broker_encode_error(TP_BROKER_LISTED, -r, &rep);
		goto send_header;
	}
	if (n > TP_BROKER_LIST_MAX)
		log_warning("broker: tenant %s has %zu exports, listing the first %d", p->tenant, n,
		            TP_BROKER_LIST_MAX);
	entries =
	    calloc(n < TP_BROKER_LIST_MAX ? (n ? n : 1) : TP_BROKER_LIST_MAX, sizeof *entries);
	if (entries == NULL) {
		tp_broker_encode_error(TP_BROKER_LISTED, ENOMEM, &rep);
		goto send_header;
	}
	for (i = 0; i < n && count < TP_BROKER_LIST_MAX; i++) {
		if (tp_broker_encode_entry(ex[i].name, ex[i].size, !ex[i].writable, ex[i].state,
		                           &entries[count]) < 0) {
			log_error("broker: tenant %s: export \"%s\" (state \"%s\") cannot be "
			          "listed, ignoring",
			          p->tenant, ex[i].name, ex[i].state);
			continue;
		}
		count++;
	}
	tp_broker_encode_listed(count, &rep);

send_header:
	r = send_packet(fd, &rep, sizeof rep, -1, deadline);
	for (i = 0; r == 0 && rep.error == 0 && i < count; i++)
		r = send_packet(fd, &entries[i], sizeof entries[i], -1, deadline);
	if (r < 0)
		log_errno(LOG_WARNING, r, "broker: tenant %s: answer to list (nbdkit pid %d): %m",
		          p->tenant, (int)peer_pid);
}

void broker_accept(int listen_fd)
{
	CLEANUP_CLOSE int fd = -1;
	struct tp_broker_request req;
	struct principal p;
	struct ucred cred;
	socklen_t len = sizeof cred;
	int64_t start;
	int r;

	fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
		    errno != ECONNABORTED)
			log_warning("broker: accept: %m");
		return;
	}
	start = now_ms();
	/* Who is asking: the kernel's word (credentials at connect time), nothing else. */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		log_warning("broker: SO_PEERCRED: %m, closing");
		return;
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
		return;
	}
	r = receive_request(fd, start + REQUEST_TIMEOUT_MS, &req);
	if (r < 0) {
		log_errno(LOG_WARNING, r,
		          "broker: tenant %s: bad request from nbdkit pid %d: %m, closing",
		          p.tenant, (int)cred.pid);
		return;
	}
	switch (req.h.type) {
	case TP_BROKER_OPEN:
		answer_open(fd, &p, &req, cred.pid, now_ms() + REPLY_TIMEOUT_MS);
		break;
	case TP_BROKER_LIST:
		answer_list(fd, &p, cred.pid, now_ms() + REPLY_TIMEOUT_MS);
		break;
	}
}
