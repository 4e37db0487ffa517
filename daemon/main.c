/* thinproxyd: flags, setup, the event loop and teardown. The loop owns signals, the
 * periodic pool monitor, nbdkit supervision and the broker; the REST API runs in its own
 * threads (daemon/api.c) and reaches the pool only through daemon/ops.h. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/pidfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api.h"
#include "broker.h"
#include "caps.h"
#include "config.h"
#include "log.h"
#include "ops-server.h"
#include "ops.h"
#include "pool.h"
#include "spawn.h"
#include "store.h"
#include "supervise.h"
#include "teardown.h"
#include "tp-cleanup.h"
#include "tp-clock.h"

/* The loop's timer: the pool's space is watched every tick (a status read: cheap), the
 * volumes' used bytes refreshed every MONITOR_TICKS. */
#define TICK_SECONDS  1
#define MONITOR_TICKS 5
/* The API process: restarted at once the first time, then after 250 ms, 500 ms, ... 30 s
 * while it keeps dying; one that ran for a minute counts as healthy again. Stopped with
 * its end of the socketpair closed, then SIGKILL after STOP_MS. A request whose packets
 * stall this long is its fault: the loop does not wait for it. */
#define API_RESTART_MIN_MS 250
#define API_RESTART_MAX_MS 30000
#define API_HEALTHY_MS     60000
#define API_STOP_MS        3000
#define API_STALL_MS       2000
#define API_NOFILE         4096
#define SAFE_PATH          "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static struct config cfg;

/* The tenants' control sockets, by name. */
struct tenant_socket {
	char name[TP_NAME_MAX + 1];
	struct api_server *api;
	struct tenant_socket *next;
};
static struct tenant_socket *tenant_sockets;

static char *path_join(const char *a, const char *b, const char *c)
{
	char *p;

	if (asprintf(&p, "%s/%s%s%s", a, b, c ? "/" : "", c ? c : "") < 0)
		return NULL;
	return p;
}

/* mkdir DIR with MODE, or make an existing one have MODE and be root's. */
static int ensure_dir(const char *dir, mode_t mode)
{
	struct stat st;

	if (mkdir(dir, mode) < 0 && errno != EEXIST)
		return log_errno(LOG_ERR, -errno, "mkdir %s: %m", dir);
	if (lstat(dir, &st) < 0)
		return log_errno(LOG_ERR, -errno, "stat %s: %m", dir);
	if (!S_ISDIR(st.st_mode))
		return log_errno(LOG_ERR, -ENOTDIR, "%s is not a directory", dir);
	if ((st.st_uid != 0 || st.st_gid != 0) && chown(dir, 0, 0) < 0)
		return log_errno(LOG_ERR, -errno, "chown %s: %m", dir);
	if ((st.st_mode & 07777) != mode && chmod(dir, mode) < 0)
		return log_errno(LOG_ERR, -errno, "chmod %s: %m", dir);
	return 0;
}

static struct tenant_socket **find_tenant_socket(const char *name)
{
	struct tenant_socket **ts;

	for (ts = &tenant_sockets; *ts; ts = &(*ts)->next)
		if (strcmp((*ts)->name, name) == 0)
			return ts;
	return ts;
}

/* ops callback: (re)create run_dir/tenants/NAME/control.sock and start its nbdkit. */
static int tenant_up(const struct tenant *t)
{
	CLEANUP_FREE char *dir = path_join(cfg.run_dir, "tenants", t->name);
	CLEANUP_FREE char *sock = path_join(cfg.run_dir, "tenants", t->name);
	struct tenant_socket **slot = find_tenant_socket(t->name), *ts = *slot;
	struct principal p = {.tenant_id = t->id};
	int r;

	free(sock);
	sock = dir ? path_join(dir, "control.sock", NULL) : NULL;
	if (sock == NULL)
		return -ENOMEM;
	r = ensure_dir(dir, 0755);
	if (r < 0)
		return r;
	snprintf(p.tenant, sizeof p.tenant, "%s", t->name);
	if (ts == NULL) {
		ts = calloc(1, sizeof *ts);
		if (ts == NULL)
			return -ENOMEM;
		snprintf(ts->name, sizeof ts->name, "%s", t->name);
		*slot = ts;
	}
	api_stop(ts->api);
	ts->api = NULL;
	r = api_listen(sock, t->uid, t->gid, 0660, &p, &ts->api);
	if (r < 0)
		return log_errno(LOG_ERR, r, "listen on %s: %m", sock);
	r = supervise_start_tenant(t->name, t->nbd_uid, t->nbd_uid, t->uid, t->gid);
	if (r < 0)
		return log_errno(LOG_ERR, r, "start nbdkit for tenant %s: %m", t->name);
	return 0;
}

/* ops callback: stop a removed tenant's nbdkit and sockets, remove its directory. */
static void tenant_down(const char *name)
{
	struct tenant_socket **slot = find_tenant_socket(name), *ts = *slot;
	CLEANUP_FREE char *dir = path_join(cfg.run_dir, "tenants", name);

	supervise_stop_tenant(name);
	if (ts) {
		api_stop(ts->api);
		*slot = ts->next;
		free(ts);
	}
	if (dir && rmdir(dir) < 0 && errno != ENOENT)
		log_errno(LOG_WARNING, -errno, "rmdir %s: %m, ignoring", dir);
}

static int tenant_release(const char *name, dev_t devnum)
{
	return supervise_release_device(name, devnum);
}

static const char *tenant_nbd_state(const char *name)
{
	return supervise_status(name);
}

/* Detach from the terminal; the parent exits once the child reports readiness on the
 * pipe, with the child's status, so that "thinproxyd && thinproxy ..." works. */
static int daemonize(int *ret_ready_fd)
{
	int pfd[2];
	pid_t pid;
	char c = 1;

	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		close(pfd[1]);
		if (read(pfd[0], &c, 1) != 1)
			c = 1;
		_exit(c);
	}
	close(pfd[0]);
	if (setsid() < 0)
		return -errno;
	*ret_ready_fd = pfd[1];
	return 0;
}

static void report_ready(int *ready_fd, char status)
{
	if (*ready_fd >= 0) {
		if (write(*ready_fd, &status, 1) < 0)
			log_warning("cannot report readiness to the parent, ignoring");
		close(*ready_fd);
		*ready_fd = -1;
	}
	if (status == 0 && !cfg.foreground) {
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);

		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			if (cfg.syslog)
				dup2(null, 2);
			close(null);
		}
	}
}

/* Take run_dir/thinproxyd.pid with an exclusive lock: one daemon per run directory. */
static int lock_pidfile(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	char buf[32];
	int len;

	if (fd < 0)
		return log_errno(LOG_ERR, -errno, "open %s: %m", path);
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int r = -errno;

		close(fd);
		if (r == -EWOULDBLOCK)
			return log_errno(LOG_ERR, -EBUSY,
			                 "another thinproxyd runs with %s (locked %s)", cfg.run_dir,
			                 path);
		return log_errno(LOG_ERR, r, "lock %s: %m", path);
	}
	len = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)len, 0) != len)
		log_warning("cannot write %s, ignoring", path);
	return fd;
}

/* The pool and the supervisor as configured. */
static void pool_config_from(struct pool_config *pc)
{
	pc->existing = cfg.pool;
	pc->data_dev = cfg.data;
	pc->metadata_dev = cfg.metadata;
	pc->state_dir = cfg.state_dir;
	pc->loop_size = cfg.loop_size;
	pc->metadata_size = cfg.metadata_size;
	pc->metadata_max = cfg.metadata_max;
	pc->dm_name = cfg.pool_name;
	pc->block_sectors = (uint32_t)(cfg.block_size / 512);
	pc->allow_skip_block_zeroing = cfg.allow_skip_block_zeroing;
}

static void supervise_config_from(struct supervise_config *sc, const char *broker_path)
{
	sc->run_dir = cfg.run_dir;
	sc->nbdkit = cfg.nbdkit;
	sc->plugin = cfg.plugin;
	sc->broker = broker_path;
	sc->syslog = cfg.syslog;
	sc->cgroup = strcmp(cfg.cgroup, "none") == 0 ? NULL : cfg.cgroup;
	sc->limits.memory_max = cfg.nbdkit_memory_max;
	sc->limits.pids_max = cfg.nbdkit_pids_max;
}

/* --teardown: with no daemon on this run directory (its pid file lock says so), take
 * down what one left up (daemon/teardown.c). */
static int run_teardown(void)
{
	CLEANUP_FREE char *db = path_join(cfg.state_dir, "thinproxy.db", NULL);
	CLEANUP_FREE char *pidfile = path_join(cfg.run_dir, "thinproxyd.pid", NULL);
	CLEANUP_FREE char *broker_path = path_join(cfg.run_dir, "private", "broker.sock");
	CLEANUP_CLOSE int pid_fd = -1;
	struct pool_config pc = {0};
	struct supervise_config sc = {0};
	int r;

	if (!db || !pidfile || !broker_path)
		return -ENOMEM;
	r = ensure_dir(cfg.run_dir, 0755);
	if (r < 0)
		return r;
	pid_fd = lock_pidfile(pidfile);
	if (pid_fd == -EBUSY)
		log_error("--teardown: stop thinproxyd first");
	if (pid_fd < 0)
		return pid_fd;
	pool_config_from(&pc);
	supervise_config_from(&sc, broker_path);
	r = teardown(db, &pc, &sc);
	unlink(pidfile);
	return r;
}

/* What run() sets up, for the loop and for daemon_teardown, which undoes what is recorded
 * here and nothing else: a NULL or an fd of -1 was never made, so a setup that failed part
 * of the way is taken down as far as it went. */
struct daemon {
	sigset_t signals; /* the loop's, blocked in every thread since main() */
	char *db, *tenants_dir, *private_dir, *pidfile, *admin_path, *broker_path;
	int ready_fd; /* the parent's pipe, until it has its answer (daemonize) */
	int pid_fd;   /* run_dir/thinproxyd.pid, locked (lock_pidfile) */
	struct store *store;
	struct pool *pool;
	bool supervising; /* supervise_init succeeded */
	struct broker *broker;
	bool ops_started;         /* ops_init was called: it may have brought tenants up */
	struct api_server *admin; /* served in-process (api-process = no) */
	struct api_child *api;    /* the API process (api-process = yes) */
	int ep, sfd, tfd;         /* the loop's epoll set, its signalfd and its timerfd */
	unsigned monitor_ticks;   /* the timer's ticks, for MONITOR_TICKS */
};

/* The API process (api-process = yes, issue 21): thinproxyd-api as cfg.api_uid, without
 * capabilities, serving the admin socket that the daemon binds and keeps across its
 * restarts, and asking for every operation over a socketpair that the loop serves with
 * ops_server_serve_one. The tenants' control sockets are still served in-process. */
struct api_child {
	char *program;
	int listen_fd; /* admin.sock, bound and listening */
	int ops_fd;    /* the daemon's end of the socketpair; -1: none */
	struct ops_server server;
	pid_t pid; /* 0: not running */
	int pidfd; /* -1: not running */
	int64_t started_ms;
	unsigned failures;  /* deaths in a row without a healthy run */
	int64_t restart_ms; /* when to start it again; 0: no start pending */
};

static void api_child_schedule(struct api_child *c)
{
	int64_t delay = 0;

	if (c->failures > 0) {
		delay = API_RESTART_MIN_MS;
		for (unsigned i = 1; i < c->failures && delay < API_RESTART_MAX_MS; i++)
			delay *= 2;
		if (delay > API_RESTART_MAX_MS)
			delay = API_RESTART_MAX_MS;
	}
	c->failures++;
	c->restart_ms = tp_now_ms() + delay;
}

/* Start the API process on a new socketpair and watch it from EP. Logs why it could not,
 * and schedules the next try. */
static int api_child_start(struct api_child *c, int ep)
{
	static const struct principal admin_principal = {.admin = true};
	struct timeval stall = {API_STALL_MS / 1000, API_STALL_MS % 1000 * 1000};
	char *argv[] = {c->program, "3", "4:admin", NULL}, *envp[] = {"PATH=" SAFE_PATH, NULL};
	int pair[2], fds[2];
	struct spawn_args a = {.fds = fds,
	                       .n_fds = 2,
	                       .cgroup_fd = -1,
	                       .nofile = {API_NOFILE, API_NOFILE},
	                       .nproc = {RLIM_INFINITY, RLIM_INFINITY},
	                       .uid = cfg.api_uid,
	                       .gid = cfg.api_uid,
	                       .keep_stderr = !cfg.syslog,
	                       .argv = argv,
	                       .envp = envp};
	struct epoll_event ev = {.events = EPOLLIN};
	const char *step;
	struct rlimit cur;
	pid_t pid;
	int r;

	c->restart_ms = 0;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
		r = log_errno(LOG_ERR, -errno, "API process: socketpair: %m");
		goto fail;
	}
	/* Its end onto fd 3 (OPS_FD), the admin socket onto fd 4. */
	fds[0] = pair[1];
	fds[1] = c->listen_fd;
	if (getrlimit(RLIMIT_NOFILE, &cur) == 0 && cur.rlim_max < API_NOFILE)
		a.nofile.rlim_cur = a.nofile.rlim_max = cur.rlim_max;
	r = spawn_unprivileged(&a, &pid, &step);
	close(pair[1]);
	if (r < 0) {
		close(pair[0]);
		if (step && *step)
			log_errno(LOG_ERR, r, "API process: start %s: %s: %m", c->program, step);
		else
			log_errno(LOG_ERR, r, "API process: start %s: %m", c->program);
		goto fail;
	}
	c->ops_fd = pair[0];
	/* Our own child, which nobody else waits for: its pid still names it. */
	c->pidfd = pidfd_open(pid, 0);
	if (c->pidfd < 0) {
		r = log_errno(LOG_ERR, -errno, "API process: pidfd_open %d: %m", (int)pid);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		close(c->ops_fd);
		c->ops_fd = -1;
		goto fail;
	}
	c->pid = pid;
	c->started_ms = tp_now_ms();
	r = ops_server_init(&c->server, c->ops_fd, &admin_principal, 1);
	if (r == 0 && (setsockopt(c->ops_fd, SOL_SOCKET, SO_RCVTIMEO, &stall, sizeof stall) < 0 ||
	               setsockopt(c->ops_fd, SOL_SOCKET, SO_SNDTIMEO, &stall, sizeof stall) < 0))
		r = -errno;
	ev.data.fd = c->ops_fd;
	if (r == 0 && epoll_ctl(ep, EPOLL_CTL_ADD, c->ops_fd, &ev) < 0)
		r = -errno;
	ev.data.fd = c->pidfd;
	if (r == 0 && epoll_ctl(ep, EPOLL_CTL_ADD, c->pidfd, &ev) < 0)
		r = -errno;
	if (r < 0) {
		/* Dies, and its pidfd, if watched, says so; else the next start is due now. */
		log_errno(LOG_ERR, r, "API process %d: watch it: %m", (int)pid);
		pidfd_send_signal(c->pidfd, SIGKILL, NULL, 0);
		return r;
	}
	log_info("started API process %d (%s) as %u:%u", (int)pid, c->program,
	         (unsigned)cfg.api_uid, (unsigned)cfg.api_uid);
	return 0;
fail:
	api_child_schedule(c);
	return r;
}

/* Reap the API process that ended (or end it and reap it, if KILL), forget its fds and
 * schedule its restart. */
static void api_child_end(struct api_child *c, int ep, bool kill_it)
{
	siginfo_t si = {0};

	if (c->pidfd < 0)
		return;
	if (kill_it)
		pidfd_send_signal(c->pidfd, SIGKILL, NULL, 0);
	if (waitid(P_PIDFD, (id_t)c->pidfd, &si, WEXITED | (kill_it ? 0 : WNOHANG)) < 0)
		memset(&si, 0, sizeof si);
	if (si.si_pid == 0 && !kill_it)
		return; /* not yet */
	if (si.si_code == CLD_EXITED)
		log_warning("API process %d exited with status %d", (int)c->pid, si.si_status);
	else
		log_warning("API process %d killed by signal %d", (int)c->pid, si.si_status);
	epoll_ctl(ep, EPOLL_CTL_DEL, c->pidfd, NULL);
	close(c->pidfd);
	c->pidfd = -1;
	c->pid = 0;
	if (c->ops_fd >= 0) {
		epoll_ctl(ep, EPOLL_CTL_DEL, c->ops_fd, NULL);
		ops_server_free(&c->server);
		close(c->ops_fd);
		c->ops_fd = -1;
	}
	if (tp_now_ms() - c->started_ms >= API_HEALTHY_MS)
		c->failures = 0;
	api_child_schedule(c);
}

/* The API process's end is readable: answer one request. A malformed one (or a stalled
 * one) means it is no longer to be trusted: it is killed, and restarted. */
static void api_child_serve(struct api_child *c, int ep)
{
	int r = ops_server_serve_one(&c->server);

	if (r == 0)
		return;
	if (r == -EPIPE) {
		/* It closed its end: it is exiting, its pidfd will say when. */
		epoll_ctl(ep, EPOLL_CTL_DEL, c->ops_fd, NULL);
		return;
	}
	log_errno(LOG_ERR, r, "API process %d: %m; killing it", (int)c->pid);
	api_child_end(c, ep, true);
}

/* Milliseconds until the API process's restart is due (0: now), -1 if none is pending. */
static int api_child_next_ms(const struct api_child *c)
{
	int64_t left;

	if (c == NULL || c->restart_ms == 0)
		return -1;
	left = c->restart_ms - tp_now_ms();
	return left <= 0 ? 0 : (int)(left < INT32_MAX ? left : INT32_MAX);
}

/* At teardown: close its end (it exits when the daemon's end closes), then SIGKILL if it
 * does not within API_STOP_MS; close the admin socket and remove it. */
static void api_child_stop(struct api_child *c, const char *admin_path)
{
	if (c == NULL)
		return;
	if (c->ops_fd >= 0) {
		ops_server_free(&c->server);
		close(c->ops_fd);
	}
	if (c->pidfd >= 0) {
		struct pollfd pfd = {.fd = c->pidfd, .events = POLLIN};

		if (poll(&pfd, 1, API_STOP_MS) <= 0)
			pidfd_send_signal(c->pidfd, SIGKILL, NULL, 0);
		waitid(P_PIDFD, (id_t)c->pidfd, &(siginfo_t){0}, WEXITED);
		close(c->pidfd);
	}
	if (c->listen_fd >= 0) {
		close(c->listen_fd);
		unlink(admin_path);
	}
	free(c->program);
	free(c);
}

/* thinproxyd-api next to this program, unless api-program says where. */
static char *api_program_path(void)
{
	char self[PATH_MAX], *slash, *p;
	ssize_t n;

	if (cfg.api_program)
		return strdup(cfg.api_program);
	n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n < 0)
		return NULL;
	self[n] = '\0';
	slash = strrchr(self, '/');
	if (slash == NULL)
		return NULL;
	*slash = '\0';
	if (asprintf(&p, "%s/thinproxyd-api", self) < 0)
		return NULL;
	return p;
}

static int setup_paths(struct daemon *d)
{
	d->db = path_join(cfg.state_dir, "thinproxy.db", NULL);
	d->tenants_dir = path_join(cfg.run_dir, "tenants", NULL);
	d->private_dir = path_join(cfg.run_dir, "private", NULL);
	d->pidfile = path_join(cfg.run_dir, "thinproxyd.pid", NULL);
	d->admin_path = path_join(cfg.run_dir, "admin.sock", NULL);
	d->broker_path = path_join(cfg.run_dir, "private", "broker.sock");
	if (!d->db || !d->tenants_dir || !d->private_dir || !d->pidfile || !d->admin_path ||
	    !d->broker_path)
		return -ENOMEM;
	return 0;
}

static int setup_detach(struct daemon *d)
{
	int r;

	if (!cfg.foreground && (r = daemonize(&d->ready_fd)) < 0)
		return log_errno(LOG_ERR, r, "detach: %m");
	return 0;
}

/* Directories: state is root's alone; the run directory is traversable so that each
 * tenant's socket (with its own owner) is reachable; private/ holds the broker, which
 * authenticates its peers by uid. */
static int setup_dirs(struct daemon *d)
{
	int r;

	if ((r = ensure_dir(cfg.state_dir, 0700)) < 0 || (r = ensure_dir(cfg.run_dir, 0755)) < 0 ||
	    (r = ensure_dir(d->tenants_dir, 0755)) < 0 ||
	    (r = ensure_dir(d->private_dir, 0711)) < 0)
		return r;
	return 0;
}

static int setup_pidfile(struct daemon *d)
{
	d->pid_fd = lock_pidfile(d->pidfile);
	return d->pid_fd < 0 ? d->pid_fd : 0;
}

static int setup_store(struct daemon *d)
{
	return store_open(d->db, &d->store);
}

static int setup_pool(struct daemon *d)
{
	struct pool_config pc = {0};
	int r;

	pool_config_from(&pc);
	r = pool_open(&pc, &d->pool);
	if (r < 0)
		return log_errno(LOG_ERR, r, "open the thin pool: %m");
	return 0;
}

static int setup_supervise(struct daemon *d)
{
	struct supervise_config sc = {0};
	int r;

	supervise_config_from(&sc, d->broker_path);
	if (sc.cgroup == NULL)
		log_warning("cgroup = none: tenants' nbdkits run without memory or task limits, "
		            "and whatever one forks may outlive it when it stops or restarts");
	r = supervise_init(&sc);
	if (r < 0)
		return log_errno(LOG_ERR, r, "start the nbdkit supervisor: %m");
	d->supervising = true;
	return 0;
}

static int setup_broker(struct daemon *d)
{
	int r = broker_start(d->broker_path, &d->broker);

	if (r < 0)
		return log_errno(LOG_ERR, r, "listen on %s: %m", d->broker_path);
	return 0;
}

/* The operations, which bring up every tenant in the store through tenant_up. */
static int setup_ops(struct daemon *d)
{
	struct ops_config oc = {0};

	oc.min_free = cfg.min_free;
	oc.min_free_percent = cfg.min_free_percent;
	oc.low_water_percent = cfg.low_water_percent;
	oc.nbd_uid_base = cfg.nbd_uid_base;
	oc.tenant_up = tenant_up;
	oc.tenant_down = tenant_down;
	oc.tenant_release = tenant_release;
	oc.tenant_nbd_state = tenant_nbd_state;
	d->ops_started = true;
	return ops_init(d->store, d->pool, &oc);
}

/* The admin socket: served here, or bound here for the API process (setup_api_process). */
static int setup_admin(struct daemon *d)
{
	struct principal admin_principal = {.admin = true};
	int r;

	if (!cfg.api_process) {
		r = api_listen(d->admin_path, 0, 0, 0600, &admin_principal, &d->admin);
		if (r < 0)
			return log_errno(LOG_ERR, r, "listen on %s: %m", d->admin_path);
		return 0;
	}
	d->api = calloc(1, sizeof *d->api);
	if (d->api == NULL)
		return -ENOMEM;
	d->api->listen_fd = d->api->ops_fd = d->api->pidfd = -1;
	d->api->program = api_program_path();
	if (d->api->program == NULL)
		return log_errno(LOG_ERR, -errno ? -errno : -ENOMEM,
		                 "find thinproxyd-api (set api-program): %m");
	r = api_bind(d->admin_path, 0, 0, 0600);
	if (r < 0)
		return log_errno(LOG_ERR, r, "listen on %s: %m", d->admin_path);
	d->api->listen_fd = r;
	return 0;
}

/* Everything that needed full root is done: from here on, only the capabilities
 * daemon/caps.c lists, each with its reason. */
static int setup_caps(struct daemon *d)
{
	(void)d;
	return caps_drop_unneeded();
}

/* The loop's fds: the signals, the monitor's timer, the broker's and the supervisor's
 * epoll sets. */
static int setup_loop(struct daemon *d)
{
	struct itimerspec its = {.it_interval = {TICK_SECONDS, 0}, .it_value = {TICK_SECONDS, 0}};
	struct epoll_event ev;

	d->ep = epoll_create1(EPOLL_CLOEXEC);
	d->sfd = signalfd(-1, &d->signals, SFD_CLOEXEC | SFD_NONBLOCK);
	d->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (d->ep < 0 || d->sfd < 0 || d->tfd < 0 || timerfd_settime(d->tfd, 0, &its, NULL) < 0)
		return log_errno(LOG_ERR, -errno, "set up the event loop: %m");
	ev.events = EPOLLIN;
	ev.data.fd = d->sfd;
	epoll_ctl(d->ep, EPOLL_CTL_ADD, d->sfd, &ev);
	ev.data.fd = d->tfd;
	epoll_ctl(d->ep, EPOLL_CTL_ADD, d->tfd, &ev);
	/* The broker never waits for a peer: its connections and deadlines live in its own
	 * epoll set, which wakes this loop only when there is work. */
	ev.data.fd = broker_fd(d->broker);
	epoll_ctl(d->ep, EPOLL_CTL_ADD, broker_fd(d->broker), &ev);
	ev.data.fd = supervise_event_fd();
	epoll_ctl(d->ep, EPOLL_CTL_ADD, ev.data.fd, &ev);
	return 0;
}

/* The API process, once the loop can watch it. The first start must succeed: a daemon
 * whose admin socket nothing would serve is not ready. */
static int setup_api_process(struct daemon *d)
{
	if (d->api == NULL)
		return 0;
	return api_child_start(d->api, d->ep);
}

/* Each job of the setup, in order; daemon_teardown undoes them in reverse. */
static int (*const setup_jobs[])(struct daemon *) = {
    setup_paths, setup_detach,    setup_dirs,        setup_pidfile, setup_store,
    setup_pool,  setup_supervise, setup_broker,      setup_ops,     setup_admin,
    setup_caps,  setup_loop,      setup_api_process,
};

/* Set up everything, then tell the parent that waits (if detached) that we are ready.
 * Returns 0 or -errno, with what was done recorded in D for daemon_teardown. */
static int daemon_setup(struct daemon *d)
{
	for (size_t i = 0; i < sizeof setup_jobs / sizeof setup_jobs[0]; i++) {
		int r = setup_jobs[i](d);

		if (r < 0)
			return r;
	}
	log_notice("thinproxyd %s ready: pool %s, store %s, sockets in %s", TP_VERSION,
	           pool_name(d->pool), d->db, cfg.run_dir);
	report_ready(&d->ready_fd, 0);
	return 0;
}

/* The signals that arrived: SIGCHLD reaps, SIGHUP is ignored, the others stop the daemon.
 * Returns whether it keeps running. */
static bool loop_signals(struct daemon *d)
{
	struct signalfd_siginfo si;
	bool running = true;

	while (read(d->sfd, &si, sizeof si) == sizeof si) {
		if (si.ssi_signo == SIGCHLD)
			supervise_reap();
		else if (si.ssi_signo == SIGHUP)
			log_notice("SIGHUP: nothing to reload, ignoring");
		else {
			log_notice("signal %u: shutting down", si.ssi_signo);
			running = false;
		}
	}
	return running;
}

/* The timer's tick: the pool watched, the volumes monitored every MONITOR_TICKS. */
static void loop_tick(struct daemon *d)
{
	uint64_t ticks;

	if (read(d->tfd, &ticks, sizeof ticks) < 0 && errno != EAGAIN)
		log_warning("timerfd read failed, ignoring");
	ops_watch();
	if (++d->monitor_ticks % MONITOR_TICKS == 0)
		ops_monitor();
	supervise_reap();
}

/* Until a signal stops the daemon (0), or epoll_wait fails (logged, -errno: the daemon
 * then stops as on a signal, but exits with failure). */
static int daemon_loop(struct daemon *d)
{
	bool running = true;

	while (running) {
		struct epoll_event evs[8];
		/* Wake up for nbdkit restarts that are due (and adopted nbdkits to look at),
		 * not only on SIGCHLD and the monitor's tick. */
		int timeout = supervise_next_reap_ms(), api_ms = api_child_next_ms(d->api);
		int n;

		if (api_ms >= 0 && (timeout < 0 || api_ms < timeout))
			timeout = api_ms;
		n = epoll_wait(d->ep, evs, 8, timeout);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return log_errno(LOG_ERR, -errno, "epoll_wait: %m");
		if (n == 0)
			supervise_reap();
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;

			if (fd == d->sfd)
				running = loop_signals(d) && running;
			else if (fd == d->tfd)
				loop_tick(d);
			else if (fd == broker_fd(d->broker))
				broker_run(d->broker);
			else if (fd == supervise_event_fd())
				supervise_reap();
			else if (d->api && fd == d->api->ops_fd)
				api_child_serve(d->api, d->ep);
			else if (d->api && fd == d->api->pidfd)
				api_child_end(d->api, d->ep, false);
		}
		if (running && api_child_next_ms(d->api) == 0)
			api_child_start(d->api, d->ep);
	}
	return 0;
}

/* Undo what D records, in the reverse order of setup_jobs. R is how the setup or the loop
 * ended: a parent still waiting is told of a failure first, without waiting for the rest. */
static void daemon_teardown(struct daemon *d, int r)
{
	report_ready(&d->ready_fd, r < 0 ? 1 : 0);
	ops_interrupt();
	/* The API process first: it asks through the loop, which has ended. */
	api_child_stop(d->api, d->admin_path);
	if (d->tfd >= 0)
		close(d->tfd);
	if (d->sfd >= 0)
		close(d->sfd);
	if (d->ep >= 0)
		close(d->ep);
	/* Sockets first, so that no request arrives while the rest goes away (the broker
	 * serves only from the loop, which has ended); tenants' nbdkit processes stay up:
	 * attached devices outlive the daemon. */
	api_stop(d->admin);
	if (d->ops_started) {
		/* The tenants' sockets, which ops brought up through tenant_up. */
		while (tenant_sockets) {
			struct tenant_socket *ts = tenant_sockets;

			tenant_sockets = ts->next;
			api_stop(ts->api);
			free(ts);
		}
		ops_shutdown();
	}
	if (d->broker) {
		broker_stop(d->broker);
		unlink(d->broker_path);
	}
	if (d->supervising)
		supervise_shutdown();
	pool_close(d->pool);
	store_close(d->store);
	if (d->pid_fd >= 0) {
		unlink(d->pidfile);
		close(d->pid_fd);
	}
	free(d->db);
	free(d->tenants_dir);
	free(d->private_dir);
	free(d->pidfile);
	free(d->admin_path);
	free(d->broker_path);
}

/* The daemon: setup, the loop, teardown. SIGNALS are the ones main() blocked. */
static int run(const sigset_t *signals)
{
	struct daemon d = {.ready_fd = -1, .pid_fd = -1, .ep = -1, .sfd = -1, .tfd = -1};
	int r;

	d.signals = *signals;
	r = daemon_setup(&d);
	if (r == 0)
		r = daemon_loop(&d);
	daemon_teardown(&d, r);
	return r;
}

int main(int argc, char **argv)
{
	sigset_t mask;
	int r;

	r = config_parse(&cfg, argc, argv);
	if (r != 0) {
		config_free(&cfg);
		return r > 0 ? EXIT_SUCCESS : 2;
	}
	/* A teardown is a command run by hand: it answers on stderr. */
	log_init("thinproxyd", cfg.syslog && !cfg.teardown, cfg.log_level);
	if (geteuid() != 0) {
		log_error("must run as root: it manages device-mapper devices");
		config_free(&cfg);
		return EXIT_FAILURE;
	}
	/* Signals arrive through the loop's signalfd, which run() makes from this mask;
	 * block them before any thread starts so that the API threads inherit the mask. A
	 * write to a vanished client must not kill the daemon. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	umask(022);

	r = cfg.teardown ? run_teardown() : run(&mask);
	config_free(&cfg);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
