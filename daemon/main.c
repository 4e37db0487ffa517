/* thinproxyd: flags, setup, and the event loop. The loop owns signals, the periodic
 * pool monitor, nbdkit supervision and the broker; the REST API runs in its own
 * threads (daemon/api.c) and reaches the pool only through daemon/ops.h. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

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

/* The loop's timer: the pool's space is watched every tick (a status read: cheap), the
 * volumes' used bytes refreshed every MONITOR_TICKS. */
#define TICK_SECONDS  1
#define MONITOR_TICKS 5

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

static int run(void)
{
	CLEANUP_FREE char *db = NULL, *tenants_dir = NULL, *private_dir = NULL, *pidfile = NULL,
	                  *admin_path = NULL, *broker_path = NULL;
	CLEANUP_CLOSE int pid_fd = -1;
	CLEANUP_CLOSE int ep = -1;
	CLEANUP_CLOSE int sfd = -1;
	CLEANUP_CLOSE int tfd = -1;
	int ready_fd = -1;
	struct store *store = NULL;
	struct pool *pool = NULL;
	struct broker *broker = NULL;
	struct api_server *admin = NULL;
	struct principal admin_principal = {.admin = true};
	struct pool_config pc = {0};
	struct supervise_config sc = {0};
	struct ops_config oc = {0};
	struct itimerspec its = {.it_interval = {TICK_SECONDS, 0}, .it_value = {TICK_SECONDS, 0}};
	unsigned monitor_ticks = 0;
	struct epoll_event ev;
	sigset_t mask;
	bool running = true;
	int r;

	db = path_join(cfg.state_dir, "thinproxy.db", NULL);
	tenants_dir = path_join(cfg.run_dir, "tenants", NULL);
	private_dir = path_join(cfg.run_dir, "private", NULL);
	pidfile = path_join(cfg.run_dir, "thinproxyd.pid", NULL);
	admin_path = path_join(cfg.run_dir, "admin.sock", NULL);
	broker_path = path_join(cfg.run_dir, "private", "broker.sock");
	if (!db || !tenants_dir || !private_dir || !pidfile || !admin_path || !broker_path)
		return -ENOMEM;

	if (!cfg.foreground && (r = daemonize(&ready_fd)) < 0)
		return log_errno(LOG_ERR, r, "detach: %m");

	/* Directories: state is root's alone; the run directory is traversable so that
	 * each tenant's socket (with its own owner) is reachable; private/ holds the
	 * broker, which authenticates its peers by uid. */
	if ((r = ensure_dir(cfg.state_dir, 0700)) < 0 || (r = ensure_dir(cfg.run_dir, 0755)) < 0 ||
	    (r = ensure_dir(tenants_dir, 0755)) < 0 || (r = ensure_dir(private_dir, 0711)) < 0)
		goto out;
	pid_fd = lock_pidfile(pidfile);
	if (pid_fd < 0) {
		r = pid_fd;
		goto out;
	}

	r = store_open(db, &store);
	if (r < 0)
		goto out;
	pool_config_from(&pc);
	r = pool_open(&pc, &pool);
	if (r < 0) {
		log_errno(LOG_ERR, r, "open the thin pool: %m");
		goto out;
	}

	supervise_config_from(&sc, broker_path);
	if (sc.cgroup == NULL)
		log_warning("cgroup = none: tenants' nbdkits run without memory or task limits, "
		            "and whatever one forks may outlive it when it stops or restarts");
	r = supervise_init(&sc);
	if (r < 0) {
		log_errno(LOG_ERR, r, "start the nbdkit supervisor: %m");
		goto out;
	}
	r = broker_start(broker_path, &broker);
	if (r < 0) {
		log_errno(LOG_ERR, r, "listen on %s: %m", broker_path);
		goto out;
	}

	oc.min_free = cfg.min_free;
	oc.min_free_percent = cfg.min_free_percent;
	oc.low_water_percent = cfg.low_water_percent;
	oc.nbd_uid_base = cfg.nbd_uid_base;
	oc.tenant_up = tenant_up;
	oc.tenant_down = tenant_down;
	oc.tenant_release = tenant_release;
	oc.tenant_nbd_state = tenant_nbd_state;
	r = ops_init(store, pool, &oc);
	if (r < 0)
		goto out;
	r = api_listen(admin_path, 0, 0, 0600, &admin_principal, &admin);
	if (r < 0) {
		log_errno(LOG_ERR, r, "listen on %s: %m", admin_path);
		goto out;
	}

	/* Everything that needed full root is done: from here on, only the capabilities
	 * daemon/caps.c lists, each with its reason. */
	r = caps_drop_unneeded();
	if (r < 0)
		goto out;

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGCHLD);
	ep = epoll_create1(EPOLL_CLOEXEC);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (ep < 0 || sfd < 0 || tfd < 0 || timerfd_settime(tfd, 0, &its, NULL) < 0) {
		r = log_errno(LOG_ERR, -errno, "set up the event loop: %m");
		goto out;
	}
	ev.events = EPOLLIN;
	ev.data.fd = sfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
	ev.data.fd = tfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
	/* The broker never waits for a peer: its connections and deadlines live in its own
	 * epoll set, which wakes this loop only when there is work. */
	ev.data.fd = broker_fd(broker);
	epoll_ctl(ep, EPOLL_CTL_ADD, broker_fd(broker), &ev);
	ev.data.fd = supervise_event_fd();
	epoll_ctl(ep, EPOLL_CTL_ADD, ev.data.fd, &ev);

	log_notice("thinproxyd %s ready: pool %s, store %s, sockets in %s", TP_VERSION,
	           pool_name(pool), db, cfg.run_dir);
	report_ready(&ready_fd, 0);

	while (running) {
		struct epoll_event evs[8];
		/* Wake up for nbdkit restarts that are due (and adopted nbdkits to look at),
		 * not only on SIGCHLD and the monitor's tick. */
		int n = epoll_wait(ep, evs, 8, supervise_next_reap_ms());

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = log_errno(LOG_ERR, -errno, "epoll_wait: %m");
			break;
		}
		if (n == 0)
			supervise_reap();
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;

			if (fd == sfd) {
				struct signalfd_siginfo si;

				while (read(sfd, &si, sizeof si) == sizeof si) {
					if (si.ssi_signo == SIGCHLD)
						supervise_reap();
					else if (si.ssi_signo == SIGHUP)
						log_notice("SIGHUP: nothing to reload, ignoring");
					else {
						log_notice("signal %u: shutting down",
						           si.ssi_signo);
						running = false;
					}
				}
			} else if (fd == tfd) {
				uint64_t ticks;

				if (read(tfd, &ticks, sizeof ticks) < 0 && errno != EAGAIN)
					log_warning("timerfd read failed, ignoring");
				ops_watch();
				if (++monitor_ticks % MONITOR_TICKS == 0)
					ops_monitor();
				supervise_reap();
			} else if (fd == broker_fd(broker)) {
				broker_run(broker);
			} else if (fd == supervise_event_fd()) {
				supervise_reap();
			}
		}
	}
	r = 0;
out:
	report_ready(&ready_fd, r < 0 ? 1 : 0);
	ops_interrupt();
	/* Sockets first, so that no request arrives while the rest goes away; tenants'
	 * nbdkit processes stay up: attached devices outlive the daemon. */
	api_stop(admin);
	while (tenant_sockets) {
		struct tenant_socket *ts = tenant_sockets;

		tenant_sockets = ts->next;
		api_stop(ts->api);
		free(ts);
	}
	if (broker) {
		broker_stop(broker);
		unlink(broker_path);
	}
	supervise_shutdown();
	ops_shutdown();
	pool_close(pool);
	store_close(store);
	if (pid_fd >= 0)
		unlink(pidfile);
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
	/* Signals arrive through the loop's signalfd; block them before any thread starts
	 * so that the API threads inherit the mask. A write to a vanished client must not
	 * kill the daemon. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	umask(022);

	r = cfg.teardown ? run_teardown() : run();
	config_free(&cfg);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
