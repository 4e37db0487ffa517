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
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api-child.h"
#include "api.h"
#include "broker.h"
#include "caps.h"
#include "config.h"
#include "log.h"
#include "ops.h"
#include "pool.h"
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

static struct config cfg;

/* The tenants' control sockets, by name. */
struct tenant_socket {
	char name[TP_NAME_MAX + 1];
	struct api_server *api;
	struct tenant_socket *next;
};
static struct tenant_socket *tenant_sockets;
/* With api-process = yes, the tenants' API process serves them instead. */
static struct api_child *tenant_api;

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

/* Serve tenant T's control socket SOCK as P: bound here and handed to the tenants' API
 * process, or served here (api-process = no). */
static int tenant_listen(const char *sock, const struct tenant *t, const struct principal *p)
{
	struct tenant_socket **slot, *ts;
	int r;

	if (tenant_api) {
		r = api_bind(sock, t->uid, t->gid, 0660);
		return r < 0 ? r : api_child_listen(tenant_api, r, sock, p);
	}
	slot = find_tenant_socket(t->name);
	ts = *slot;
	if (ts == NULL) {
		ts = calloc(1, sizeof *ts);
		if (ts == NULL)
			return -ENOMEM;
		snprintf(ts->name, sizeof ts->name, "%s", t->name);
		*slot = ts;
	}
	api_stop(ts->api);
	ts->api = NULL;
	return api_listen(sock, t->uid, t->gid, 0660, p, &ts->api);
}

/* ops callback: (re)create run_dir/tenants/NAME/control.sock and start its nbdkit. */
static int tenant_up(const struct tenant *t)
{
	CLEANUP_FREE char *dir = path_join(cfg.run_dir, "tenants", t->name);
	CLEANUP_FREE char *sock = dir ? path_join(dir, "control.sock", NULL) : NULL;
	struct principal p = {.tenant_id = t->id};
	int r;

	if (sock == NULL)
		return -ENOMEM;
	r = ensure_dir(dir, 0755);
	if (r < 0)
		return r;
	snprintf(p.tenant, sizeof p.tenant, "%s", t->name);
	r = tenant_listen(sock, t, &p);
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
	if (tenant_api)
		api_child_unlisten(tenant_api, name);
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
	sc->idle_s = cfg.nbdkit_idle;
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
	bool ops_started;            /* ops_init was called: it may have brought tenants up */
	struct api_server *admin;    /* served in-process (api-process = no) */
	struct api_child *admin_api; /* the admin socket's API process (api-process = yes) */
	int ep, sfd, tfd;            /* the loop's epoll set, its signalfd and its timerfd */
	unsigned monitor_ticks;      /* the timer's ticks, for MONITOR_TICKS */
};

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

/* The API processes (api-process = yes), made before ops brings the tenants up through
 * tenant_up and started once the loop can watch them (setup_api_process). The admin's
 * runs as api-uid minus 1, the tenants' as api-uid: one taken over cannot signal or trace
 * the other. */
static int setup_api_children(struct daemon *d)
{
	CLEANUP_FREE char *program = NULL;
	struct api_child_config ac = {.program = NULL, .keep_stderr = !cfg.syslog};
	int r;

	if (!cfg.api_process)
		return 0;
	program = api_program_path();
	if (program == NULL)
		return log_errno(LOG_ERR, -errno ? -errno : -ENOMEM,
		                 "find thinproxyd-api (set api-program): %m");
	if (cfg.api_uid < 2)
		return log_errno(LOG_ERR, -EINVAL, "api-uid %u: the admin's would be root",
		                 (unsigned)cfg.api_uid);
	ac.program = program;
	ac.name = "admin";
	ac.uid = cfg.api_uid - 1;
	ac.channels = API_CHILD_CHANNELS_MAX;
	r = api_child_new(&ac, &d->admin_api);
	ac.name = "tenants";
	ac.uid = cfg.api_uid;
	if (r == 0)
		r = api_child_new(&ac, &tenant_api);
	if (r < 0)
		return log_errno(LOG_ERR, r, "API processes: %s: %m", program);
	return 0;
}

/* The admin socket: served here, or bound here for its API process. */
static int setup_admin(struct daemon *d)
{
	struct principal admin_principal = {.admin = true};
	int r;

	if (d->admin_api == NULL)
		r = api_listen(d->admin_path, 0, 0, 0600, &admin_principal, &d->admin);
	else if ((r = api_bind(d->admin_path, 0, 0, 0600)) >= 0)
		r = api_child_listen(d->admin_api, r, d->admin_path, &admin_principal);
	if (r < 0)
		return log_errno(LOG_ERR, r, "listen on %s: %m", d->admin_path);
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

/* The API processes, once the loop can watch them. The first start must succeed: a
 * daemon whose sockets nothing would serve is not ready. */
static int setup_api_process(struct daemon *d)
{
	int r = 0;

	if (d->admin_api)
		r = api_child_start(d->admin_api, d->ep);
	if (r == 0 && tenant_api)
		r = api_child_start(tenant_api, d->ep);
	return r;
}

/* Each job of the setup, in order; daemon_teardown undoes them in reverse. */
static int (*const setup_jobs[])(struct daemon *) = {
    setup_paths, setup_detach,    setup_dirs,   setup_pidfile,      setup_store,
    setup_pool,  setup_supervise, setup_broker, setup_api_children, setup_ops,
    setup_admin, setup_caps,      setup_loop,   setup_api_process,
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

/* The earlier of two timeouts in milliseconds, -1 being none. */
static int earliest_ms(int a, int b)
{
	return a < 0 || (b >= 0 && b < a) ? b : a;
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
		int timeout = supervise_next_reap_ms(), n;

		timeout = earliest_ms(timeout, api_child_next_ms(d->admin_api));
		timeout = earliest_ms(timeout, api_child_next_ms(tenant_api));
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
			else if (!api_child_event(d->admin_api, d->ep, fd))
				api_child_event(tenant_api, d->ep, fd);
		}
		if (running && api_child_next_ms(d->admin_api) == 0)
			api_child_start(d->admin_api, d->ep);
		if (running && api_child_next_ms(tenant_api) == 0)
			api_child_start(tenant_api, d->ep);
	}
	return 0;
}

/* Undo what D records, in the reverse order of setup_jobs. R is how the setup or the loop
 * ended: a parent still waiting is told of a failure first, without waiting for the rest. */
static void daemon_teardown(struct daemon *d, int r)
{
	report_ready(&d->ready_fd, r < 0 ? 1 : 0);
	ops_interrupt();
	/* The API processes first: what they are asking for is finished, nothing more is
	 * asked, and their sockets are closed and removed. */
	api_child_free(d->admin_api);
	api_child_free(tenant_api);
	tenant_api = NULL;
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
/* Every tenant holds two of the daemon's files (its nbd.sock and its nbdkit's pidfd), so
 * that the soft limit most daemons start with, 1024, would end the daemon's growth
 * near 500 tenants: take all the hard limit allows. The nbdkits and the API process set
 * their own. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		log_errno(LOG_WARNING, -errno, "raise the limit on open files to %llu: %m",
		          (unsigned long long)rl.rlim_max);
}

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
	raise_nofile();

	r = cfg.teardown ? run_teardown() : run(&mask);
	config_free(&cfg);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
