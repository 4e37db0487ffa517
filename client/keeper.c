/* The keeper of an attached device (see keeper.h): started by keeper_attach(), which
 * returns in the attach command once the keeper reports the device ready. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/time.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <linux/nbd.h>

#include "tp-broker.h"
#include "tp-cleanup.h"
#include "tp-clock.h"
#include "keeper.h"
#include "nbd-device.h"
#include "nbd-ioctl.h"
#include "registry.h"
#include "relay.h"

/* How often a netlink keeper checks that its device is still its own. */
#define CHECK_MS 1000
/* Pauses between reconnect attempts: growing from the first to the second within the
 * dead-connection timeout, the third after it. */
#define RETRY_FIRST_MS   50
#define RETRY_MAX_MS     2000
#define RETRY_EXPIRED_MS 10000
/* How long an ioctl device may take to start, and to disconnect after SIGTERM. */
#define START_MS      10000
#define DISCONNECT_MS 10000
/* The most descriptors a keeper keeps from its starter: its connections and a pipe. */
#define ATTACH_KEEP_MAX 17

/* What a keeper tells attach through a pipe: the device's number once it is ready, or
 * why it is not. */
struct report {
	int32_t err;
	int32_t index;
	char reason[HANDSHAKE_REASON_MAX];
};

static int log_fd = -1;
static bool log_syslog;
/* Why the keeper is not in the IO_FLUSHER state (-errno), 0 if it is. */
static int io_flusher_err;

void keeper_log(int priority, const char *fmt, ...)
{
	char line[512], stamp[32];
	struct timespec now;
	struct tm tm;
	va_list ap;
	int n, m;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (log_syslog)
		syslog(priority, "%s", line);
	if (log_fd < 0)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	localtime_r(&now.tv_sec, &tm);
	strftime(stamp, sizeof stamp, "%F %T", &tm);
	{
		char out[640];

		m = snprintf(out, sizeof out, "%s.%03ld thinproxy[%d]: %s\n", stamp,
		             now.tv_nsec / 1000000, (int)getpid(), line);
		if (m > 0)
			(void)!write(log_fd, out,
			             (size_t)m < sizeof out ? (size_t)m : sizeof out - 1);
	}
}

static int reason_errno(int r, char *reason, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Write the reason for failure R to REASON and return R. */
static int reason_errno(int r, char *reason, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, len, fmt, ap);
	va_end(ap);
	return r;
}

int keeper_connect(const char *socket_path, const char *volume, bool read_only, bool direct,
                   int timeout_ms, int *ret_fd, struct nbd_export *ret_export, char *reason,
                   size_t reason_len)
{
	char export_name[TP_EXPORT_NAME_SIZE];
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
	struct timeval none = {0};
	CLEANUP_CLOSE int fd = -1;
	int r;

	if (strlen(socket_path) >= sizeof sa.sun_path)
		return reason_errno(-ENAMETOOLONG, reason, reason_len, "cannot reach %s: %s",
		                    socket_path, strerror(ENAMETOOLONG));
	memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return reason_errno(-errno, reason, reason_len, "socket: %s", strerror(errno));
	/* A full backlog makes connect() wait, as long as the send timeout allows. The
	 * kernel's NBD client uses the socket's timeouts too: none is left behind. */
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		return reason_errno(-errno, reason, reason_len, "cannot reach %s: %s", socket_path,
		                    strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
	/* Read-only asks the broker for an O_RDONLY fd: the server cannot write for us.
	 * Direct asks for an O_DIRECT one: the host's page cache keeps none of it. */
	snprintf(export_name, sizeof export_name, "%s%s%s", direct ? TP_EXPORT_DIRECT_PREFIX : "",
	         read_only ? TP_EXPORT_READ_ONLY_PREFIX : "", volume);
	r = nbd_handshake(fd, export_name, timeout_ms, ret_export, reason, reason_len);
	if (r == -ENOENT)
		return reason_errno(r, reason, reason_len, "no such volume: %s", volume);
	if (r < 0)
		return r;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* Whether a fresh handshake (E) still describes the export CFG attached. */
static int check_same(const struct keeper_config *cfg, const struct nbd_export *e, char *reason,
                      size_t len)
{
	if (e->size < cfg->export.size)
		return reason_errno(-ESTALE, reason, len,
		                    "the volume changed: %" PRIu64 " bytes, no longer %" PRIu64,
		                    e->size, cfg->export.size);
	if ((e->flags & NBD_FLAG_READ_ONLY) && !(cfg->flags & NBD_FLAG_READ_ONLY))
		return reason_errno(-ESTALE, reason, len, "the volume changed: read-only now");
	if (cfg->connections > 1 && !(e->flags & NBD_FLAG_CAN_MULTI_CONN))
		return reason_errno(-ESTALE, reason, len,
		                    "the server no longer allows several connections");
	return 0;
}

/* Open and negotiate CFG->connections fresh connections into FDS. */
static int open_connections(const struct keeper_config *cfg, int *fds, char *reason, size_t len)
{
	for (unsigned i = 0; i < cfg->connections; i++) {
		struct nbd_export e;
		int r;

		r = keeper_connect(cfg->socket_path, cfg->volume, cfg->read_only, cfg->direct,
		                   KEEPER_HANDSHAKE_MS, &fds[i], &e, reason, len);
		if (r == 0) {
			r = check_same(cfg, &e, reason, len);
			if (r < 0)
				close(fds[i]);
		}
		if (r < 0) {
			while (i-- > 0)
				close(fds[i]);
			return r;
		}
	}
	return 0;
}

static void close_fds(int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (fds[i] >= 0) {
			close(fds[i]);
			fds[i] = -1;
		}
}

/* Tell attach how it went, once. */
static void report(int *ready_fd, int err, int index, const char *reason)
{
	struct report rep = {.err = err, .index = index};

	if (*ready_fd < 0)
		return;
	snprintf(rep.reason, sizeof rep.reason, "%s", reason != NULL ? reason : "");
	(void)!write(*ready_fd, &rep, sizeof rep);
	close(*ready_fd);
	*ready_fd = -1;
}

/* Read the keeper's report from READY_FD. */
static int read_report(int ready_fd, int *ret_index, char *reason, size_t len)
{
	struct report rep;
	ssize_t n;

	do
		n = read(ready_fd, &rep, sizeof rep);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof rep)
		return reason_errno(-EIO, reason, len,
		                    "the keeper ended before the device was ready");
	rep.reason[sizeof rep.reason - 1] = '\0';
	if (rep.err < 0)
		return reason_errno(rep.err, reason, len, "%s", rep.reason);
	*ret_index = rep.index;
	return 0;
}

/* Become a daemon named for device INDEX: own session, /dev/null for the standard
 * streams, syslog, and the log file if $THINPROXY_KEEPER_LOG names one. Returns a
 * signalfd for SIGTERM and SIGINT, which are blocked in every thread from now on. */
static int daemonize(int index)
{
	const char *log_path = getenv("THINPROXY_KEEPER_LOG");
	char name[16];
	sigset_t mask;
	int null_fd, sfd;

	setsid();
	if (chdir("/") < 0)
		return -errno;
	null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null_fd < 0)
		return -errno;
	dup2(null_fd, STDIN_FILENO);
	dup2(null_fd, STDOUT_FILENO);
	dup2(null_fd, STDERR_FILENO);
	if (null_fd > STDERR_FILENO)
		close(null_fd);
	snprintf(name, sizeof name, KEEPER_COMM_PREFIX "nbd%d", index);
	prctl(PR_SET_NAME, name);
	openlog("thinproxy", LOG_PID, LOG_DAEMON);
	log_syslog = true;
	if (log_path != NULL && log_path[0] != '\0')
		log_fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);

	/* Into the IO_FLUSHER state while the keeper is still one thread, so that every
	 * thread it starts (the relay's) inherits it: writeback to the device may be
	 * waiting for the keeper (a relayed request, a reconnect), so its allocations must
	 * not wait on that writeback in turn (docs/architecture.md, "Memory pressure"). */
	if (prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) < 0)
		io_flusher_err = -errno;

	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	/* Exactly these: a starter's thread may have blocked every signal. */
	if (sigprocmask(SIG_SETMASK, &mask, NULL) < 0)
		return -errno;
	sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	return sfd < 0 ? -errno : sfd;
}

/* Say, once the device is named, if the keeper of device INDEX runs without the
 * IO_FLUSHER state, and why; it runs on regardless. */
static void log_io_flusher(int index)
{
	if (io_flusher_err == 0)
		return;
	keeper_log(LOG_WARNING,
	           "nbd%d: cannot enter the IO_FLUSHER state: %s%s: under memory pressure, "
	           "writeback to the device may wait on the keeper; ignoring",
	           index, strerror(-io_flusher_err),
	           io_flusher_err == -EPERM    ? " (needs CAP_SYS_RESOURCE)"
	           : io_flusher_err == -EINVAL ? " (needs Linux 5.6)"
	                                       : "");
}

/* Whether a signal arrived on SFD within MS milliseconds (consuming it). */
static bool signalled(int sfd, int ms)
{
	struct pollfd p = {.fd = sfd, .events = POLLIN};
	struct signalfd_siginfo si;
	int n;

	do
		n = poll(&p, 1, ms);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return false;
	return read(sfd, &si, sizeof si) == (ssize_t)sizeof si;
}

/* The registry's record for this keeper of device INDEX. */
static struct attachment record(const struct keeper_config *cfg, int index, const char *interface)
{
	struct attachment a = {.index = index,
	                       .pid = getpid(),
	                       .connections = cfg->connections,
	                       .read_only = cfg->flags & NBD_FLAG_READ_ONLY};

	snprintf(a.volume, sizeof a.volume, "%s", cfg->volume);
	snprintf(a.tenant, sizeof a.tenant, "%s", cfg->tenant != NULL ? cfg->tenant : "");
	snprintf(a.socket, sizeof a.socket, "%s", cfg->socket_path);
	snprintf(a.interface, sizeof a.interface, "%s", interface);
	return a;
}

/* Whether device INDEX is still connected and this keeper's. */
static bool still_ours(int index)
{
	struct attachment a;

	return nbd_device_connected(index) && registry_read(index, &a) == 0 && a.pid == getpid();
}

/* Replace the dead connections of device INDEX, retrying until it works, the keeper is
 * told to stop (returns -ECANCELED) or the device is gone (-ENODEV). */
static int netlink_reconnect(const struct keeper_config *cfg, int index, struct nbd_nl *nl, int sfd)
{
	char reason[HANDSHAKE_REASON_MAX] = "", last[HANDSHAKE_REASON_MAX] = "";
	int fds[16], delay = RETRY_FIRST_MS, attempts = 0, r;
	bool expired = false;
	struct timespec start;

	clock_gettime(CLOCK_MONOTONIC, &start);
	keeper_log(LOG_WARNING, "nbd%d: a connection to %s died, reconnecting", index, cfg->volume);
	for (;;) {
		attempts++;
		r = open_connections(cfg, fds, reason, sizeof reason);
		if (r == 0) {
			r = nbd_nl_reconfigure(nl, index, cfg->volume, fds, cfg->connections);
			close_fds(fds, cfg->connections);
			if (r == 0) {
				keeper_log(LOG_NOTICE,
				           "nbd%d: reconnected to %s after %" PRId64
				           " ms (%d attempts)",
				           index, cfg->volume, tp_elapsed_ms(&start), attempts);
				return 0;
			}
			snprintf(reason, sizeof reason, "NBD_CMD_RECONFIGURE: %s", strerror(-r));
		}
		if (!still_ours(index)) {
			keeper_log(LOG_NOTICE, "nbd%d: disconnected meanwhile", index);
			return -ENODEV;
		}
		if (strcmp(reason, last) != 0) {
			keeper_log(LOG_WARNING, "nbd%d: reconnect: %s", index, reason);
			memcpy(last, reason, sizeof last);
		}
		if (!expired && tp_elapsed_ms(&start) >= (int64_t)cfg->timeout * 1000) {
			expired = true;
			keeper_log(LOG_ERR,
			           "nbd%d: %s unreachable for %us: I/O fails until it is back, "
			           "still trying",
			           index, cfg->volume, cfg->timeout);
		}
		if (signalled(sfd, delay))
			return -ECANCELED;
		delay = expired                    ? RETRY_EXPIRED_MS
		        : delay * 2 > RETRY_MAX_MS ? RETRY_MAX_MS
		                                   : delay * 2;
	}
}

/* A netlink device's keeper, in the child: listen for dead connections of device INDEX
 * and replace them. Does not return. */
static void netlink_keeper(const struct keeper_config *cfg, int index, struct nbd_nl *nl,
                           struct nbd_nl *mcast, int ready_fd)
{
	struct attachment a;
	int sfd, r;

	sfd = daemonize(index);
	if (sfd < 0) {
		report(&ready_fd, sfd, index, "cannot become a daemon");
		_exit(EXIT_FAILURE);
	}
	a = record(cfg, index, "netlink");
	r = registry_write(&a);
	if (r < 0) {
		char reason[HANDSHAKE_REASON_MAX];

		snprintf(reason, sizeof reason, "cannot record the device in %s: %s", REGISTRY_DIR,
		         strerror(-r));
		report(&ready_fd, r, index, reason);
		_exit(EXIT_FAILURE);
	}
	keeper_log(LOG_INFO,
	           "nbd%d: %s attached over netlink, %u connection%s, timeouts %us (dead "
	           "connection) and %us (I/O)",
	           index, cfg->volume, cfg->connections, cfg->connections > 1 ? "s" : "",
	           cfg->timeout, cfg->io_timeout);
	log_io_flusher(index);
	report(&ready_fd, 0, index, NULL);

	for (;;) {
		struct pollfd p[2] = {{.fd = nbd_nl_fd(mcast), .events = POLLIN},
		                      {.fd = sfd, .events = POLLIN}};
		bool dead = false;
		int n = poll(p, 2, CHECK_MS);

		if (n < 0 && errno != EINTR)
			break;
		if (n > 0 && p[1].revents != 0 && signalled(sfd, 0)) {
			keeper_log(LOG_INFO, "nbd%d: stopping", index);
			break;
		}
		if (n > 0 && p[0].revents != 0) {
			r = nbd_nl_dead_links(mcast, index, &dead);
			if (r < 0)
				keeper_log(LOG_WARNING,
				           "nbd%d: reading notifications: %s, ignoring", index,
				           strerror(-r));
		}
		if (!still_ours(index)) {
			keeper_log(LOG_INFO, "nbd%d: detached", index);
			break;
		}
		if (dead && netlink_reconnect(cfg, index, nl, sfd) < 0)
			break;
	}
	registry_remove(index, getpid());
	_exit(EXIT_SUCCESS);
}

static int compare_fd(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

/* Close every file descriptor above the standard streams but the N KEEP. A keeper runs
 * for as long as its device: it must not hold what its starter had open (the
 * snapshotter's listening socket, a connection to the daemon). */
static void close_other_fds(const int *keep, size_t n)
{
	int sorted[ATTACH_KEEP_MAX];
	unsigned from = STDERR_FILENO + 1;

	memcpy(sorted, keep, n * sizeof *keep);
	qsort(sorted, n, sizeof *sorted, compare_fd);
	for (size_t i = 0; i <= n; i++) {
		unsigned to = i < n ? (unsigned)sorted[i] : ~0u;

		if (i < n && (sorted[i] < 0 || (unsigned)sorted[i] < from))
			continue;
		if (to > from && close_range(from, to - 1, 0) < 0)
			for (unsigned fd = from; fd < to && fd < 65536; fd++)
				close((int)fd);
		if (i < n)
			from = to + 1;
	}
}

/* Fork the keeper as a grandchild, so that it is nobody's child but init's (or the
 * subreaper's): a long-running starter, the snapshotter, would otherwise collect a
 * zombie for every device detached. In the keeper only KEEP (N of them) stay open, and
 * 0 is returned; the caller gets 1 once the intermediate child has ended, or -errno. */
static int fork_keeper(const int *keep, size_t n)
{
	int status;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		pid_t keeper = fork();

		if (keeper != 0)
			_exit(keeper < 0 ? EXIT_FAILURE : EXIT_SUCCESS);
		close_other_fds(keep, n);
		return 0;
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != EXIT_SUCCESS)
		return -EAGAIN;
	return 1;
}

/* Attach over netlink: connect the device here, where errors can be told directly,
 * then leave the keeper. */
static int attach_netlink(const struct keeper_config *cfg, struct nbd_nl *nl, int *fds,
                          int *ret_index, char *reason, size_t len)
{
	struct nbd_nl_device dev = {
	    .index = cfg->index,
	    .size = cfg->export.size,
	    .block_size = cfg->block_size,
	    .server_flags = cfg->flags,
	    .timeout = cfg->io_timeout,
	    .dead_conn_timeout = cfg->timeout,
	    .backend = cfg->volume,
	    .fds = fds,
	    .n_fds = cfg->connections,
	};
	struct nbd_nl *mcast = NULL;
	int ready[2], index, r;

	/* Listen before connecting, so that no death goes unheard. */
	r = nbd_nl_open(&mcast);
	if (r == 0)
		r = nbd_nl_subscribe(mcast);
	if (r < 0) {
		close_fds(fds, cfg->connections);
		nbd_nl_close(mcast);
		return reason_errno(r, reason, len, "cannot listen to the nbd netlink family: %s",
		                    strerror(-r));
	}
	r = nbd_nl_connect(nl, &dev, &index);
	/* The kernel holds its own references to the sockets now. */
	close_fds(fds, cfg->connections);
	if (r == -EBUSY) {
		nbd_nl_close(mcast);
		return reason_errno(r, reason, len, "device /dev/nbd%d is busy", cfg->index);
	}
	if (r < 0) {
		nbd_nl_close(mcast);
		return reason_errno(r, reason, len, "NBD_CMD_CONNECT: %s", strerror(-r));
	}

	if (pipe2(ready, O_CLOEXEC) < 0) {
		r = -errno;
		goto undo;
	}
	{
		int keep[] = {nbd_nl_fd(nl), nbd_nl_fd(mcast), ready[1]};

		r = fork_keeper(keep, ARRAY_SIZE(keep));
	}
	if (r < 0) {
		close(ready[0]);
		close(ready[1]);
		goto undo;
	}
	if (r == 0)
		netlink_keeper(cfg, index, nl, mcast, ready[1]);
	close(ready[1]);
	nbd_nl_close(mcast);
	r = read_report(ready[0], ret_index, reason, len);
	close(ready[0]);
	if (r < 0)
		nbd_nl_disconnect(nl, index);
	return r;

undo:
	nbd_nl_close(mcast);
	nbd_nl_disconnect(nl, index);
	return reason_errno(r, reason, len, "cannot start the keeper: %s", strerror(-r));
}

/* One relay's view of its server: where to reconnect, and what it said last. */
struct relay_ctx {
	const struct keeper_config *cfg;
	char name[32];
	char last[HANDSHAKE_REASON_MAX];
};

static int relay_reconnect(void *opaque, int *ret_fd)
{
	struct relay_ctx *ctx = opaque;
	char reason[HANDSHAKE_REASON_MAX];
	struct nbd_export e;
	int fd, r;

	r = keeper_connect(ctx->cfg->socket_path, ctx->cfg->volume, ctx->cfg->read_only,
	                   ctx->cfg->direct, KEEPER_HANDSHAKE_MS, &fd, &e, reason, sizeof reason);
	if (r == 0) {
		r = check_same(ctx->cfg, &e, reason, sizeof reason);
		if (r < 0)
			close(fd);
	}
	if (r < 0) {
		if (strcmp(reason, ctx->last) != 0)
			keeper_log(LOG_WARNING, "%s: reconnect: %s", ctx->name, reason);
		memcpy(ctx->last, reason, sizeof ctx->last);
		return r;
	}
	ctx->last[0] = '\0';
	*ret_fd = fd;
	return 0;
}

/* An ioctl device: the open device, and the thread that sits in NBD_DO_IT. */
struct ioctl_device {
	int fd, index;
	int done_fd; /* an eventfd, readable once NBD_DO_IT returned */
	int result;
	pthread_t thread;
};

static void *run_device(void *arg)
{
	struct ioctl_device *d = arg;

	d->result = nbd_ioctl_run(d->fd);
	eventfd_write(d->done_fd, 1);
	return NULL;
}

/* Find a device for CFG and configure it with one fresh socketpair per connection; the
 * kernel's ends go to the device, ours to RELAY_FDS. */
static int configure_ioctl(const struct keeper_config *cfg, int *relay_fds, int *ret_fd,
                           int *ret_index, char *reason, size_t len)
{
	CLEANUP_FREE int *indices = NULL;
	size_t n = 0, i;
	int r;

	if (cfg->index >= 0) {
		indices = malloc(sizeof *indices);
		if (indices == NULL)
			return -ENOMEM;
		indices[n++] = cfg->index;
	} else {
		r = nbd_device_list(&indices, &n);
		if (r < 0 || n == 0)
			return reason_errno(r < 0 ? r : -ENODEV, reason, len,
			                    "no NBD devices (is the nbd module loaded?)");
	}
	for (i = 0; i < n; i++) {
		int kernel_fds[16], pair[2], fd;
		struct nbd_ioctl_device dev = {.size = cfg->export.size,
		                               .block_size = cfg->block_size,
		                               .flags = cfg->flags,
		                               /* The relay waits for the server itself: a
		                                * kernel timeout would end the device. */
		                               .timeout = 0,
		                               .fds = kernel_fds,
		                               .n_fds = cfg->connections};
		unsigned c;

		if (cfg->index < 0 &&
		    (nbd_device_connected(indices[i]) || nbd_device_claimed(indices[i])))
			continue;
		r = nbd_ioctl_open(indices[i], &fd);
		if (r < 0 && cfg->index >= 0)
			return reason_errno(r, reason, len, "cannot open /dev/nbd%d: %s",
			                    indices[i], strerror(-r));
		if (r < 0)
			continue;
		for (c = 0; c < cfg->connections; c++) {
			if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0)
				break;
			kernel_fds[c] = pair[0];
			relay_fds[c] = pair[1];
		}
		if (c < cfg->connections) {
			r = -errno;
			close_fds(kernel_fds, c);
			close_fds(relay_fds, c);
			close(fd);
			return reason_errno(r, reason, len, "socketpair: %s", strerror(-r));
		}
		r = nbd_ioctl_configure(fd, &dev);
		/* The device holds its own references to its ends. */
		close_fds(kernel_fds, cfg->connections);
		if (r == 0) {
			*ret_fd = fd;
			*ret_index = indices[i];
			return 0;
		}
		close_fds(relay_fds, cfg->connections);
		close(fd);
		if (cfg->index >= 0 && (r == -EBUSY || r == -EINVAL))
			return reason_errno(-EBUSY, reason, len, "device /dev/nbd%d is busy",
			                    cfg->index);
		if (r != -EBUSY && r != -EINVAL)
			return reason_errno(r, reason, len, "configuring /dev/nbd%d: %s",
			                    indices[i], strerror(-r));
	}
	return reason_errno(-ENOSPC, reason, len, "no free NBD device");
}

/* An ioctl device's keeper, in the child: configure a device with relays to the
 * server's connections FDS, run it, and stop it on SIGTERM. Does not return. */
static void ioctl_keeper(const struct keeper_config *cfg, int *fds, int ready_fd)
{
	char reason[HANDSHAKE_REASON_MAX] = "";
	struct relay *relays[16] = {NULL};
	struct relay_ctx ctx[16];
	struct ioctl_device d = {.fd = -1, .index = -1, .done_fd = -1};
	int relay_fds[16], sfd, r;
	bool running = false, ready = false;
	struct attachment a;
	struct timespec start;
	unsigned c;

	sfd = daemonize(cfg->index >= 0 ? cfg->index : 0);
	if (sfd < 0) {
		report(&ready_fd, sfd, -1, "cannot become a daemon");
		_exit(EXIT_FAILURE);
	}
	r = configure_ioctl(cfg, relay_fds, &d.fd, &d.index, reason, sizeof reason);
	if (r < 0) {
		close_fds(fds, cfg->connections);
		report(&ready_fd, r, -1, reason);
		_exit(EXIT_FAILURE);
	}
	if (cfg->index < 0) {
		char name[16];

		snprintf(name, sizeof name, KEEPER_COMM_PREFIX "nbd%d", d.index);
		prctl(PR_SET_NAME, name);
	}

	for (c = 0; c < cfg->connections; c++) {
		struct relay_config rc = {.kernel_fd = relay_fds[c],
		                          .server_fd = fds[c],
		                          .dead_timeout = cfg->timeout,
		                          .reconnect = relay_reconnect,
		                          .opaque = &ctx[c],
		                          .name = ctx[c].name};

		ctx[c].cfg = cfg;
		ctx[c].last[0] = '\0';
		if (cfg->connections > 1)
			snprintf(ctx[c].name, sizeof ctx[c].name, "nbd%d connection %u", d.index,
			         c);
		else
			snprintf(ctx[c].name, sizeof ctx[c].name, "nbd%d", d.index);
		r = relay_start(&rc, &relays[c]);
		fds[c] = relay_fds[c] = -1;
		if (r < 0) {
			close_fds(fds + c + 1, cfg->connections - c - 1);
			close_fds(relay_fds + c + 1, cfg->connections - c - 1);
			snprintf(reason, sizeof reason, "cannot start a relay: %s", strerror(-r));
			goto fail;
		}
	}

	d.done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (d.done_fd < 0 || pthread_create(&d.thread, NULL, run_device, &d) != 0) {
		r = -errno;
		snprintf(reason, sizeof reason, "cannot start the device: %s", strerror(errno));
		goto fail;
	}
	running = true;
	clock_gettime(CLOCK_MONOTONIC, &start);
	while (!nbd_device_connected(d.index)) {
		struct pollfd p = {.fd = d.done_fd, .events = POLLIN};

		if (poll(&p, 1, 10) > 0) {
			r = d.result < 0 ? d.result : -EIO;
			snprintf(reason, sizeof reason, "NBD_DO_IT on /dev/nbd%d: %s", d.index,
			         strerror(-r));
			goto fail;
		}
		if (tp_elapsed_ms(&start) > START_MS) {
			r = -ETIMEDOUT;
			snprintf(reason, sizeof reason, "/dev/nbd%d did not start", d.index);
			goto fail;
		}
	}
	a = record(cfg, d.index, "ioctl");
	r = registry_write(&a);
	if (r < 0) {
		snprintf(reason, sizeof reason, "cannot record the device in %s: %s", REGISTRY_DIR,
		         strerror(-r));
		goto fail;
	}
	keeper_log(LOG_INFO,
	           "nbd%d: %s attached through the ioctl interface with a relay, %u "
	           "connection%s, dead-connection timeout %us",
	           d.index, cfg->volume, cfg->connections, cfg->connections > 1 ? "s" : "",
	           cfg->timeout);
	log_io_flusher(d.index);
	report(&ready_fd, 0, d.index, NULL);
	ready = true;

	/* Run until NBD_DO_IT returns. SIGTERM disconnects the device the polite way, a
	 * second one (or a server that does not answer) drops its sockets. */
	{
		bool asked = false;

		for (;;) {
			struct pollfd p[2] = {{.fd = d.done_fd, .events = POLLIN},
			                      {.fd = sfd, .events = POLLIN}};
			int n = poll(p, 2, asked ? DISCONNECT_MS : -1);

			if (n < 0 && errno == EINTR)
				continue;
			if (n > 0 && p[0].revents != 0)
				break;
			if (n > 0 && p[1].revents != 0 && signalled(sfd, 0) && !asked) {
				keeper_log(LOG_INFO, "nbd%d: disconnecting", d.index);
				nbd_ioctl_disconnect(d.fd);
				asked = true;
				continue;
			}
			keeper_log(LOG_WARNING, "nbd%d: dropping the connections", d.index);
			nbd_ioctl_clear(d.fd);
		}
	}
	r = 0;

fail:
	if (running && !ready)
		nbd_ioctl_clear(d.fd);
	if (running)
		pthread_join(d.thread, NULL);
	for (c = 0; c < cfg->connections; c++)
		relay_stop(relays[c]);
	if (ready) {
		registry_remove(d.index, getpid());
		keeper_log(LOG_INFO, "nbd%d: detached", d.index);
	} else {
		nbd_ioctl_clear(d.fd);
		report(&ready_fd, r, d.index, reason);
	}
	_exit(r < 0 ? EXIT_FAILURE : EXIT_SUCCESS);
}

/* Attach through the ioctl interface: the keeper finds and configures the device, since
 * the device lives only as long as the task in NBD_DO_IT. */
static int attach_ioctl(const struct keeper_config *cfg, int *fds, int *ret_index, char *reason,
                        size_t len)
{
	int ready[2], r;

	if (pipe2(ready, O_CLOEXEC) < 0) {
		r = -errno;
		close_fds(fds, cfg->connections);
		return reason_errno(r, reason, len, "pipe: %s", strerror(-r));
	}
	{
		int keep[ATTACH_KEEP_MAX];

		memcpy(keep, fds, cfg->connections * sizeof *fds);
		keep[cfg->connections] = ready[1];
		r = fork_keeper(keep, cfg->connections + 1);
	}
	if (r < 0) {
		close(ready[0]);
		close(ready[1]);
		close_fds(fds, cfg->connections);
		return reason_errno(r, reason, len, "cannot start the keeper: %s", strerror(-r));
	}
	if (r == 0)
		ioctl_keeper(cfg, fds, ready[1]);
	close(ready[1]);
	close_fds(fds, cfg->connections);
	r = read_report(ready[0], ret_index, reason, len);
	close(ready[0]);
	return r;
}

int keeper_attach(const struct keeper_config *cfg, struct nbd_nl *nl, int *fds, int *ret_index,
                  char *reason, size_t reason_len)
{
	if (nl != NULL)
		return attach_netlink(cfg, nl, fds, ret_index, reason, reason_len);
	return attach_ioctl(cfg, fds, ret_index, reason, reason_len);
}
