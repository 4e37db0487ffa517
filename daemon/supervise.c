/* Supervision of the tenants' nbdkits (see supervise.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "spawn.h"
#include "supervise.h"
#include "tp-cleanup.h"
#include "tp-clock.h"
#include "tp-rules.h"

/* The socket-activation fd: sd_listen_fds(3)'s first. */
#define LISTEN_FD 3
/* The plugin's sealed copy, which nbdkit loads as PLUGIN_ARG. spawn_unprivileged puts
 * the fds it is given from SPAWN_FIRST_FD on: the socket, then the plugin. */
#define PLUGIN_FD  4
#define PLUGIN_ARG "/proc/self/fd/4"
_Static_assert(LISTEN_FD == SPAWN_FIRST_FD && PLUGIN_FD == SPAWN_FIRST_FD + 1,
               "the fds nbdkit is given");
/* nbdkit holds a socket and a device per connection, and a few of its own. */
#define NBDKIT_NOFILE 4096
/* A first death is restarted at once, the next ones after 250 ms, 500 ms, ... 30 s; an
 * nbdkit that ran for a minute counts as healthy again. */
#define RESTART_DELAY_MIN_MS 250
#define RESTART_DELAY_MAX_MS 30000
#define HEALTHY_MS           60000
/* supervise_stop_tenant: SIGTERM, this long to finish, then SIGKILL. */
#define STOP_TIMEOUT_MS 3000
struct tenant_proc;

/* What an event on supervise_event_fd() is about: its epoll data points at one of these
 * in the tenant's struct. */
struct watch {
	struct tenant_proc *t;
	enum { WATCH_EXIT, WATCH_SOCKET } what; /* the nbdkit's pidfd, or listen_fd */
};

/* One tenant's nbdkit. */
struct tenant_proc {
	struct tenant_proc *next;
	char name[TP_NAME_MAX + 1];
	uid_t nbd_uid, sock_uid;
	gid_t nbd_gid, sock_gid;
	/* nbd.sock, bound and listening, held here across nbdkit restarts; -1 if we have
	 * none (an adopted nbdkit whose socket we could not take over). */
	int listen_fd;
	pid_t pid; /* 0: not running */
	int pidfd; /* -1: not running */
	int64_t started_ms;
	bool adopted;       /* pid was started by a daemon before this one */
	unsigned failures;  /* deaths in a row without a healthy run */
	int64_t restart_ms; /* when to restart; 0: no restart pending */
	bool start_failed;  /* the last one exited with an error status, or did not start */
	/* listen_fd is in the epoll: with no nbdkit running, its first client starts one (on
	 * demand), or, turning_away as well, is closed at once (see supervise_status). */
	bool watched;
	bool turning_away;
	bool exit_watched;    /* pidfd is in the epoll */
	bool exited, knocked; /* what the epoll said, for supervise_reap */
	struct watch exit_watch, socket_watch;
};

static struct {
	bool initialized;
	char *run_dir, *nbdkit, *plugin, *broker;
	int plugin_fd; /* the plugin's sealed copy; -1: nbdkit finds it by name */
	int epoll_fd;  /* supervise_event_fd(): the nbdkits' pidfds, the sockets watched */
	bool syslog;
	unsigned idle_s; /* nbdkit on demand, exiting after this long idle; 0: always runs */
	bool io_flusher; /* nbdkits start in the IO_FLUSHER state: we may set it */
	struct cgroups *cgroups; /* NULL: none */
	struct cgroup_limits limits;
	struct tenant_proc *procs;
} sv = {.plugin_fd = -1, .epoll_fd = -1};

static pthread_mutex_t sv_lock = PTHREAD_MUTEX_INITIALIZER;

/* RUN_DIR/tenants/TENANT[/LEAF] into BUF. */
static int tenant_path(const char *tenant, const char *leaf, char *buf, size_t size)
{
	int n = snprintf(buf, size, "%s/tenants/%s%s%s", sv.run_dir, tenant, leaf ? "/" : "",
	                 leaf ? leaf : "");

	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* mkdir PATH with MODE, or take an existing directory (not a symlink). Its owner and mode
 * are left as they are: the daemon (daemon/main.c) makes RUN_DIR/tenants and each
 * tenant's directory root's, with their modes, before the supervisor gets to them. */
static int make_dir(const char *path, mode_t mode)
{
	struct stat st;

	if (mkdir(path, mode) < 0 && errno != EEXIST)
		return -errno;
	if (lstat(path, &st) < 0)
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* The absolute, resolved path of the program NAME (a path, or looked up in PATH). */
static int find_program(const char *name, char **ret_path)
{
	const char *path = getenv("PATH");
	char buf[PATH_MAX];

	if (strchr(name, '/') != NULL) {
		if (realpath(name, buf) == NULL)
			return -errno;
		if (access(buf, X_OK) < 0)
			return -errno;
	} else {
		const char *p = path && *path ? path : SPAWN_SAFE_PATH, *end;
		bool found = false;

		for (; !found && *p != '\0'; p = *end ? end + 1 : end) {
			char cand[PATH_MAX];
			int n;

			end = strchrnul(p, ':');
			n = snprintf(cand, sizeof cand, "%.*s/%s", (int)(end - p), p, name);
			if (end == p || n < 0 || (size_t)n >= sizeof cand)
				continue;
			found = access(cand, X_OK) == 0 && realpath(cand, buf) != NULL;
		}
		if (!found)
			return -ENOENT;
	}
	*ret_path = strdup(buf);
	return *ret_path ? 0 : -ENOMEM;
}

/* Whether the daemon has CAP in its effective set. */
static bool have_capability(int cap)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = {0};

	return syscall(SYS_capget, &h, d) == 0 && cap / 32 < _LINUX_CAPABILITY_U32S_3 &&
	       (d[cap / 32].effective & (UINT32_C(1) << (cap % 32))) != 0;
}

static void free_config(void)
{
	free(sv.run_dir);
	free(sv.nbdkit);
	free(sv.plugin);
	free(sv.broker);
	sv.run_dir = sv.nbdkit = sv.plugin = sv.broker = NULL;
	if (sv.plugin_fd >= 0)
		close(sv.plugin_fd);
	if (sv.epoll_fd >= 0)
		close(sv.epoll_fd);
	sv.plugin_fd = sv.epoll_fd = -1;
	cgroups_close(sv.cgroups);
	sv.cgroups = NULL;
}

int supervise_init(const struct supervise_config *cfg)
{
	const char *nbdkit = cfg->nbdkit ? cfg->nbdkit : "nbdkit";
	char tenants[PATH_MAX];
	int r;

	LOCK_SCOPE(&sv_lock);
	if (sv.initialized)
		return -EALREADY;
	if (cfg->run_dir == NULL || cfg->run_dir[0] != '/' || cfg->broker == NULL ||
	    cfg->broker[0] != '/')
		return -EINVAL;
	if (snprintf(tenants, sizeof tenants, "%s/tenants", cfg->run_dir) >= (int)sizeof tenants)
		return -ENAMETOOLONG;
	r = find_program(nbdkit, &sv.nbdkit);
	if (r < 0)
		return log_errno(LOG_ERR, r, "cannot find %s: %m", nbdkit);
	/* A plugin path is read into a copy nbdkit loads from its fd (its path, made
	 * absolute, names it in the log and in nbdkits started before copies); a plain name
	 * is nbdkit's to look up in its plugin directory. */
	if (cfg->plugin != NULL && strchr(cfg->plugin, '/') != NULL) {
		sv.plugin = realpath(cfg->plugin, NULL);
		r = sv.plugin ? spawn_sealed_copy(sv.plugin, "nbdkit-thinproxy-plugin.so", 0444)
		              : -errno;
		if (r < 0) {
			if (r == -EINVAL)
				log_error("nbdkit plugin %s: not a regular file", cfg->plugin);
			else
				log_errno(LOG_ERR, r, "nbdkit plugin %s: %m", cfg->plugin);
			free_config();
			return r;
		}
		sv.plugin_fd = r;
	} else {
		sv.plugin = strdup(cfg->plugin ? cfg->plugin : SUPERVISE_PLUGIN_DEFAULT);
	}
	sv.run_dir = strdup(cfg->run_dir);
	sv.broker = strdup(cfg->broker);
	if (!sv.run_dir || !sv.plugin || !sv.broker) {
		free_config();
		return -ENOMEM;
	}
	if (cfg->idle_s > SUPERVISE_IDLE_MAX_S) {
		free_config();
		return -EINVAL;
	}
	sv.syslog = cfg->syslog;
	sv.limits = cfg->limits;
	sv.idle_s = cfg->idle_s;
	/* Setting IO_FLUSHER takes CAP_SYS_RESOURCE, which a daemon in a container may lack:
	 * then the nbdkits run without, and this says so once. */
	sv.io_flusher = have_capability(CAP_SYS_RESOURCE);
	if (!sv.io_flusher)
		log_warning("no CAP_SYS_RESOURCE: tenants' nbdkits run without IO_FLUSHER, and "
		            "writeback to a /dev/nbdN of this kernel may wait on the nbdkit it "
		            "feeds under memory pressure");
	sv.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	r = sv.epoll_fd < 0 ? -errno : make_dir(tenants, 0755);
	if (r == 0 && cfg->cgroup != NULL)
		r = cgroups_open(cfg->cgroup, &cfg->limits, &sv.cgroups);
	if (r < 0) {
		free_config();
		return r;
	}
	if (sv.plugin_fd >= 0)
		log_info("nbdkit loads the plugin %s from a sealed copy in memory, " PLUGIN_ARG
		         " in its messages",
		         sv.plugin);
	if (sv.cgroups != NULL)
		log_info("each tenant's nbdkit runs in a cgroup of its own below %s (memory.max "
		         "%" PRIu64 ", pids.max %" PRIu64 "; 0 is none)",
		         cgroups_base(sv.cgroups), sv.limits.memory_max, sv.limits.pids_max);
	sv.initialized = true;
	return 0;
}

int supervise_event_fd(void)
{
	return sv.epoll_fd;
}

static struct tenant_proc *find(const char *tenant)
{
	struct tenant_proc *t;

	for (t = sv.procs; t != NULL; t = t->next)
		if (strcmp(t->name, tenant) == 0)
			return t;
	return NULL;
}

/* Give the socket at PATH its owner and mode: explicitly, as bind() follows the umask. */
static int set_socket_owner(const char *path, uid_t uid, gid_t gid)
{
	if (fchmodat(AT_FDCWD, path, 0660, 0) < 0 ||
	    fchownat(AT_FDCWD, path, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}

/* Create T's nbd.sock, bound and listening, into T->listen_fd. A socket file left at
 * its path (by a dead nbdkit) is replaced. */
static int make_socket(struct tenant_proc *t)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char dir[PATH_MAX];
	CLEANUP_CLOSE int fd = -1;
	struct stat st;
	int r;

	r = tenant_path(t->name, NULL, dir, sizeof dir);
	if (r == 0)
		r = tenant_path(t->name, "nbd.sock", sa.sun_path, sizeof sa.sun_path);
	if (r == 0)
		r = make_dir(dir, 0755);
	if (r < 0)
		return r;
	if (lstat(sa.sun_path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return -EEXIST;
		if (unlink(sa.sun_path) < 0)
			return -errno;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		return -errno;
	r = set_socket_owner(sa.sun_path, t->sock_uid, t->sock_gid);
	if (r == 0 && listen(fd, SOMAXCONN) < 0)
		r = -errno;
	if (r < 0) {
		unlink(sa.sun_path);
		return r;
	}
	t->listen_fd = TAKE_FD(fd);
	return 0;
}

/* Write PID into T's pidfile, atomically. */
static int write_pidfile(const struct tenant_proc *t, pid_t pid)
{
	char path[PATH_MAX], tmp[PATH_MAX], buf[32];
	CLEANUP_CLOSE int fd = -1;
	int n, r;

	r = tenant_path(t->name, "nbdkit.pid", path, sizeof path);
	if (r == 0)
		r = tenant_path(t->name, "nbdkit.pid.tmp", tmp, sizeof tmp);
	if (r < 0)
		return r;
	n = snprintf(buf, sizeof buf, "%d\n", (int)pid);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return -errno;
	if (write(fd, buf, (size_t)n) != n || rename(tmp, path) < 0) {
		r = -errno;
		unlink(tmp);
		return r;
	}
	return 0;
}

/* The pid in TENANT's pidfile; 0 if there is none or it is unreadable. */
static pid_t read_pidfile(const char *tenant)
{
	char path[PATH_MAX], buf[32], *end;
	CLEANUP_CLOSE int fd = -1;
	ssize_t n;
	long pid;

	if (tenant_path(tenant, "nbdkit.pid", path, sizeof path) < 0)
		return 0;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof buf - 1);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	errno = 0;
	pid = strtol(buf, &end, 10);
	if (errno != 0 || end == buf || (*end != '\n' && *end != '\0') || pid <= 1 || pid > INT_MAX)
		return 0;
	return (pid_t)pid;
}

static void remove_tenant_file(const char *tenant, const char *leaf)
{
	char path[PATH_MAX];

	if (tenant_path(tenant, leaf, path, sizeof path) == 0 && unlink(path) < 0 &&
	    errno != ENOENT)
		log_warning("remove %s: %m, ignoring", path);
}

/* Kill whatever runs in TENANT's cgroup, if there are cgroups: whatever its nbdkit forked,
 * in a session of its own or not, ends with it. */
static void end_cgroup(const char *tenant)
{
	int r;

	if (sv.cgroups == NULL)
		return;
	r = cgroups_tenant_kill(sv.cgroups, tenant);
	if (r < 0)
		log_errno(LOG_WARNING, r,
		          "tenant %s: end the processes in its cgroup: %m, ignoring", tenant);
}

/* Watch T's socket (ON): with no nbdkit running, supervise_reap() learns of each client
 * that connects. Or stop, before an nbdkit takes the socket. */
static int watch_socket(struct tenant_proc *t, bool on)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &t->socket_watch};

	if (on == t->watched || t->listen_fd < 0)
		return 0;
	/* Removed explicitly, always: the registration belongs to the socket's file
	 * description, which lives on in nbdkit after our fd is closed. */
	if (epoll_ctl(sv.epoll_fd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, t->listen_fd, &ev) < 0 && on)
		return log_errno(LOG_WARNING, -errno, "tenant %s: watch its nbd.sock: %m", t->name);
	t->watched = on;
	return 0;
}

/* Turn T's clients away (ON) while its nbdkit cannot start: supervise_reap closes each
 * connection queued on its socket at once, instead of leaving it to wait for a server
 * that keeps failing. Or stop, before an nbdkit takes the socket: it shares the
 * socket's file description, so the socket is non-blocking only meanwhile. */
static void turn_away(struct tenant_proc *t, bool on)
{
	int flags;

	if (on == t->turning_away || t->listen_fd < 0)
		return;
	flags = fcntl(t->listen_fd, F_GETFL);
	if (!on) {
		if (flags >= 0)
			fcntl(t->listen_fd, F_SETFL, flags & ~O_NONBLOCK);
		t->turning_away = false;
		return;
	}
	/* Never accepted from while blocking: an accept would stop the daemon's loop. */
	if (flags < 0 || fcntl(t->listen_fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
	    watch_socket(t, true) < 0) {
		log_errno(LOG_WARNING, -errno, "tenant %s: turn its NBD clients away: %m, ignoring",
		          t->name);
		if (flags >= 0)
			fcntl(t->listen_fd, F_SETFL, flags);
		return;
	}
	t->turning_away = true;
}

/* Neither watch nor turn away T's clients: an nbdkit takes them, or none comes. */
static void unwatch_socket(struct tenant_proc *t)
{
	turn_away(t, false);
	watch_socket(t, false);
}

/* Forget T's nbdkit, which has exited and been reaped. */
static void forget_process(struct tenant_proc *t)
{
	if (t->pidfd >= 0) {
		if (t->exit_watched)
			epoll_ctl(sv.epoll_fd, EPOLL_CTL_DEL, t->pidfd, NULL);
		close(t->pidfd);
	}
	t->pidfd = -1;
	t->pid = 0;
	t->adopted = false;
	t->exit_watched = false;
}

/* Learn of the exit of T's nbdkit from the epoll: pidfds, adopted nbdkits' too, become
 * readable when the process exits. */
static void watch_exit(struct tenant_proc *t)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &t->exit_watch};

	t->exit_watched = epoll_ctl(sv.epoll_fd, EPOLL_CTL_ADD, t->pidfd, &ev) == 0;
	if (!t->exit_watched)
		log_errno(LOG_WARNING, -errno,
		          "tenant %s: watch nbdkit %d: %m; its death is noticed late", t->name,
		          (int)t->pid);
}

/* Start T's nbdkit on T->listen_fd. Logs why it could not. */
static int spawn(struct tenant_proc *t)
{
	char tenant_arg[sizeof "tenant=" + TP_NAME_MAX], broker_arg[PATH_MAX + 8];
	char idle_arg[sizeof "idle=" + 12];
	char listen_pid[sizeof "LISTEN_PID=" + 12] = "LISTEN_PID=";
	char *argv[10], *envp[] = {"PATH=" SPAWN_SAFE_PATH, "LISTEN_FDS=1", listen_pid, NULL};
	/* The socket onto LISTEN_FD, the plugin onto PLUGIN_FD. */
	int fds[] = {t->listen_fd, sv.plugin_fd};
	struct spawn_args a = {.fds = fds,
	                       .exec_fd = -1,
	                       .n_fds = sv.plugin_fd >= 0 ? 2 : 1,
	                       .cgroup_fd = -1,
	                       .nofile = {NBDKIT_NOFILE, NBDKIT_NOFILE},
	                       .nproc = {RLIM_INFINITY, RLIM_INFINITY},
	                       .uid = t->nbd_uid,
	                       .gid = t->nbd_gid,
	                       .keep_stderr = !sv.syslog,
	                       /* It serves /dev/nbdN's writeback: see spawn.h. */
	                       .io_flusher = sv.io_flusher,
	                       .argv = argv,
	                       .envp = envp,
	                       .listen_pid = listen_pid + strlen("LISTEN_PID=")};
	CLEANUP_CLOSE int cgroup_fd = -1;
	const char *step;
	struct rlimit cur;
	int n = 0, r;
	pid_t pid;

	/* Whatever an nbdkit before it left goes first; this one starts in the cgroup. */
	if (sv.cgroups != NULL) {
		end_cgroup(t->name);
		r = cgroups_tenant_prepare(sv.cgroups, t->name, &cgroup_fd);
		if (r < 0)
			return log_errno(LOG_ERR, r, "tenant %s: prepare its cgroup in %s: %m",
			                 t->name, cgroups_base(sv.cgroups));
		a.cgroup_fd = cgroup_fd;
	}
	/* Only lowered: raising a hard limit takes a capability the daemon dropped. */
	if (getrlimit(RLIMIT_NOFILE, &cur) == 0 && cur.rlim_max < NBDKIT_NOFILE)
		a.nofile.rlim_cur = a.nofile.rlim_max = cur.rlim_max;
	if (sv.limits.pids_max != 0 && getrlimit(RLIMIT_NPROC, &cur) == 0)
		a.nproc.rlim_cur = a.nproc.rlim_max =
		    sv.limits.pids_max < cur.rlim_max ? sv.limits.pids_max : cur.rlim_max;

	snprintf(tenant_arg, sizeof tenant_arg, "tenant=%s", t->name);
	if (snprintf(broker_arg, sizeof broker_arg, "broker=%s", sv.broker) >=
	    (int)sizeof broker_arg)
		return -ENAMETOOLONG;
	/* Foreground, and no --exit-with-parent: it must survive the daemon. */
	argv[n++] = sv.nbdkit;
	argv[n++] = "-f";
	if (sv.syslog)
		argv[n++] = "--log=syslog";
	argv[n++] = sv.plugin_fd >= 0 ? PLUGIN_ARG : sv.plugin;
	argv[n++] = tenant_arg;
	argv[n++] = broker_arg;
	if (sv.idle_s != 0) {
		snprintf(idle_arg, sizeof idle_arg, "idle=%u", sv.idle_s);
		argv[n++] = idle_arg;
	}
	argv[n] = NULL;

	unwatch_socket(t);
	r = spawn_unprivileged(&a, &pid, &step);
	if (r < 0 && step && *step)
		return log_errno(LOG_ERR, r, "tenant %s: start %s: %s: %m", t->name, sv.nbdkit,
		                 step);
	if (r < 0 && step)
		return log_errno(LOG_ERR, r, "tenant %s: start %s: %m", t->name, sv.nbdkit);
	if (r < 0)
		return r;
	/* Our own child cannot be reaped behind our back (nobody else waits), so its pid
	 * still names it here. */
	t->pidfd = pidfd_open(pid, 0);
	if (t->pidfd < 0) {
		r = -errno;
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return log_errno(LOG_ERR, r, "tenant %s: pidfd_open %d: %m", t->name, (int)pid);
	}
	t->pid = pid;
	t->started_ms = tp_now_ms();
	t->restart_ms = 0;
	watch_exit(t);
	r = write_pidfile(t, pid);
	if (r < 0)
		log_errno(LOG_WARNING, r,
		          "tenant %s: write nbdkit's pidfile: %m; a restarted daemon will not "
		          "find nbdkit %d, ignoring",
		          t->name, (int)pid);
	log_info("tenant %s: started nbdkit %d as %u:%u", t->name, (int)pid, (unsigned)t->nbd_uid,
	         (unsigned)t->nbd_gid);
	return 0;
}

/* Adopting an nbdkit left by an earlier daemon. */

enum inspection {
	FOREIGN,      /* not our nbdkit for this tenant (or gone) */
	OURS,         /* ours, for this tenant, with the expected uid, gid and plugin */
	OURS_CHANGED, /* ours for this tenant, but with another uid, gid or plugin */
};

/* Read the small /proc file PATH into BUF (NUL-terminated); returns its length. */
static ssize_t read_proc(const char *path, char *buf, size_t size)
{
	CLEANUP_CLOSE int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t len = 0;
	ssize_t n;

	if (fd < 0)
		return -errno;
	while (len < size - 1 && (n = read(fd, buf + len, size - 1 - len)) > 0)
		len += (size_t)n;
	buf[len] = '\0';
	return (ssize_t)len;
}

/* Do the four ids of the /proc status line "KEY:\t..." all equal ID? */
static bool ids_are(const char *status, const char *key, unsigned id)
{
	const char *p = strstr(status, key);
	unsigned v[4];

	return p != NULL &&
	       sscanf(p + strlen(key), "%u %u %u %u", &v[0], &v[1], &v[2], &v[3]) == 4 &&
	       v[0] == id && v[1] == id && v[2] == id && v[3] == id;
}

/* Does process PID hold our plugin's copy at PLUGIN_FD, the same bytes (a daemon before
 * this one made its own copy)? */
static bool same_plugin(pid_t pid)
{
	char path[64], ours[16384], theirs[sizeof ours];
	CLEANUP_CLOSE int fd = -1;
	struct stat a, b;
	off_t off = 0;
	ssize_t n;

	if (sv.plugin_fd < 0)
		return false;
	snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, PLUGIN_FD);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &a) < 0 || fstat(sv.plugin_fd, &b) < 0 || a.st_size != b.st_size)
		return false;
	if (a.st_dev == b.st_dev && a.st_ino == b.st_ino)
		return true;
	while ((n = pread(sv.plugin_fd, ours, sizeof ours, off)) > 0) {
		if (pread(fd, theirs, (size_t)n, off) != n || memcmp(ours, theirs, (size_t)n) != 0)
			return false;
		off += n;
	}
	return n == 0;
}

/* What is process PID (which the caller holds a pidfd on) to tenant T? */
static enum inspection inspect(pid_t pid, const struct tenant_proc *t)
{
	char path[64], exe[PATH_MAX], cmdline[8192], status[4096], want[PATH_MAX + 8];
	bool tenant_ok = false, broker_ok = false, plugin_ok = false;
	const char *base, *p;
	ssize_t n, len;

	/* nbdkit, even if it was upgraded (" (deleted)") since. */
	snprintf(path, sizeof path, "/proc/%d/exe", (int)pid);
	n = readlink(path, exe, sizeof exe - 1);
	if (n <= 0)
		return FOREIGN;
	exe[n] = '\0';
	if (n > 10 && strcmp(exe + n - 10, " (deleted)") == 0)
		exe[n - 10] = '\0';
	base = strrchr(exe, '/');
	if (strcmp(exe, sv.nbdkit) != 0 && strcmp(base ? base + 1 : exe, "nbdkit") != 0)
		return FOREIGN;

	/* Started by us for this tenant: "tenant=T" and "broker=B" among its arguments. */
	snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
	len = read_proc(path, cmdline, sizeof cmdline);
	if (len <= 0)
		return FOREIGN;
	for (p = cmdline; p < cmdline + len; p += strlen(p) + 1) {
		snprintf(want, sizeof want, "tenant=%s", t->name);
		tenant_ok |= strcmp(p, want) == 0;
		snprintf(want, sizeof want, "broker=%s", sv.broker);
		broker_ok |= strcmp(p, want) == 0;
		plugin_ok |=
		    strcmp(p, sv.plugin) == 0 || (strcmp(p, PLUGIN_ARG) == 0 && same_plugin(pid));
	}
	if (!tenant_ok || !broker_ok)
		return FOREIGN;

	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	if (read_proc(path, status, sizeof status) <= 0)
		return FOREIGN;
	if (plugin_ok && ids_are(status, "\nUid:", (unsigned)t->nbd_uid) &&
	    ids_are(status, "\nGid:", (unsigned)t->nbd_gid))
		return OURS;
	return OURS_CHANGED;
}

/* Take a duplicate of the listening socket at fd LISTEN_FD of the process PIDFD, if it
 * is T's nbd.sock. Returns the fd. */
static int take_socket(int pidfd, const struct tenant_proc *t)
{
	struct sockaddr_un sa = {0};
	char path[sizeof sa.sun_path];
	socklen_t len = sizeof sa;
	int domain = 0, type = 0, listening = 0, r;
	socklen_t ilen = sizeof(int);
	CLEANUP_CLOSE int fd = -1;

	r = tenant_path(t->name, "nbd.sock", path, sizeof path);
	if (r < 0)
		return r;
	fd = pidfd_getfd(pidfd, LISTEN_FD, 0);
	if (fd < 0)
		return -errno;
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &ilen) < 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &ilen) < 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ilen) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		return -errno;
	if (domain != AF_UNIX || type != SOCK_STREAM || !listening ||
	    len <= offsetof(struct sockaddr_un, sun_path) ||
	    strncmp(sa.sun_path, path, sizeof sa.sun_path) != 0)
		return -ENOTSOCK;
	return TAKE_FD(fd);
}

/* Wait up to TIMEOUT_MS for the process PIDFD to exit. */
static bool wait_exit(int pidfd, int timeout_ms)
{
	struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
	int64_t deadline = tp_now_ms() + timeout_ms;
	int r;

	do {
		int64_t left = deadline - tp_now_ms();

		r = poll(&pfd, 1, left > 0 ? (int)left : 0);
	} while (r < 0 && errno == EINTR);
	return r > 0;
}

/* Reap the process PIDFD if it is our child (an adopted one is reaped by init). */
static void reap(int pidfd, siginfo_t *ret_info)
{
	siginfo_t si;

	memset(&si, 0, sizeof si);
	if (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG) < 0)
		memset(&si, 0, sizeof si);
	if (ret_info)
		*ret_info = si;
}

/* Stop TENANT's nbdkit PIDFD: SIGTERM, then SIGKILL, to it and to every process in its
 * cgroup. */
static void terminate(const char *tenant, int pidfd)
{
	bool gone =
	    pidfd_send_signal(pidfd, SIGTERM, NULL, 0) < 0 || wait_exit(pidfd, STOP_TIMEOUT_MS);

	end_cgroup(tenant);
	/* Also an nbdkit from before cgroups, which is not in its tenant's. */
	if (!gone && pidfd_send_signal(pidfd, SIGKILL, NULL, 0) == 0)
		wait_exit(pidfd, 1000);
	reap(pidfd, NULL);
}

static void stop_process(struct tenant_proc *t)
{
	if (t->pid == 0)
		return;
	terminate(t->name, t->pidfd);
	forget_process(t);
}

/* T's nbdkit from an earlier daemon, as its pidfile names it: a pidfd on it and what it
 * is to T, or -1 if there is none (or the pidfile names something else). */
static int find_leftover(const struct tenant_proc *t, pid_t *ret_pid, enum inspection *ret_what)
{
	pid_t pid = read_pidfile(t->name);
	CLEANUP_CLOSE int pidfd = -1;
	enum inspection what;

	if (pid == 0)
		return -1;
	pidfd = pidfd_open(pid, 0);
	if (pidfd < 0)
		return -1;
	what = inspect(pid, t);
	/* The pidfd names one process for good; if that one is still alive now, what
	 * /proc said was about it and not about a successor with a recycled pid. */
	if (what == FOREIGN || pidfd_send_signal(pidfd, 0, NULL, 0) < 0)
		return -1;
	*ret_pid = pid;
	*ret_what = what;
	return TAKE_FD(pidfd);
}

/* Adopt T's nbdkit from an earlier daemon if it runs as configured now, taking over its
 * socket; if it runs with another uid, gid or plugin, take its socket and stop it. */
static void adopt(struct tenant_proc *t)
{
	enum inspection what;
	CLEANUP_CLOSE int pidfd = -1;
	pid_t pid;
	int fd;

	pidfd = find_leftover(t, &pid, &what);
	if (pidfd < 0)
		return;
	fd = take_socket(pidfd, t);
	if (fd < 0)
		log_errno(LOG_WARNING, fd,
		          "tenant %s: cannot take over the socket of nbdkit %d: %m; if it dies, "
		          "a new nbd.sock replaces the one containers have mounted",
		          t->name, (int)pid);
	else
		t->listen_fd = fd;
	if (what == OURS) {
		t->pid = pid;
		t->pidfd = TAKE_FD(pidfd);
		t->started_ms = tp_now_ms();
		t->adopted = true;
		watch_exit(t);
		log_info("tenant %s: adopted running nbdkit %d", t->name, (int)pid);
		/* It keeps its cgroup, with today's limits; one from before cgroups moves in
		 * (what it forked before stays where it is). */
		if (sv.cgroups != NULL) {
			int r = cgroups_tenant_adopt(sv.cgroups, t->name, pid);

			if (r < 0)
				log_errno(LOG_WARNING, r,
				          "tenant %s: move nbdkit %d into its cgroup: %m, ignoring",
				          t->name, (int)pid);
			else if (r > 0)
				log_notice("tenant %s: moved nbdkit %d into its cgroup", t->name,
				           (int)pid);
		}
		return;
	}
	log_notice("tenant %s: nbdkit %d runs with another uid, gid or plugin, replacing it",
	           t->name, (int)pid);
	terminate(t->name, pidfd);
}

int supervise_start_tenant(const char *tenant, uid_t nbd_uid, gid_t nbd_gid, uid_t sock_uid,
                           gid_t sock_gid)
{
	struct tenant_proc *t;
	char path[PATH_MAX];
	bool created = false;
	int r;

	LOCK_SCOPE(&sv_lock);
	if (!sv.initialized)
		return -EINVAL;
	if (!tp_name_valid(tenant))
		return -EINVAL;
	/* Never root: the whole point is an nbdkit without authority. */
	if (nbd_uid == 0 || nbd_gid == 0 || nbd_uid == (uid_t)-1 || nbd_gid == (gid_t)-1)
		return -EPERM;
	r = tenant_path(tenant, "nbd.sock", path, sizeof path);
	if (r < 0)
		return r;
	if (strlen(path) >= sizeof((struct sockaddr_un *)0)->sun_path)
		return -ENAMETOOLONG;

	t = find(tenant);
	if (t == NULL) {
		t = calloc(1, sizeof *t);
		if (t == NULL)
			return -ENOMEM;
		snprintf(t->name, sizeof t->name, "%s", tenant);
		t->listen_fd = t->pidfd = -1;
		t->exit_watch = (struct watch){t, WATCH_EXIT};
		t->socket_watch = (struct watch){t, WATCH_SOCKET};
		t->nbd_uid = nbd_uid;
		t->nbd_gid = nbd_gid;
		t->sock_uid = sock_uid;
		t->sock_gid = sock_gid;
		t->next = sv.procs;
		sv.procs = t;
		created = true;
		adopt(t);
	} else if (t->pid != 0 && (t->nbd_uid != nbd_uid || t->nbd_gid != nbd_gid)) {
		log_notice("tenant %s: nbdkit uid changes, restarting it", tenant);
		stop_process(t);
	}
	t->nbd_uid = nbd_uid;
	t->nbd_gid = nbd_gid;
	t->sock_uid = sock_uid;
	t->sock_gid = sock_gid;

	/* A socket we hold, or one an adopted nbdkit still serves, stays; only without
	 * either is there a new one. */
	if (t->listen_fd >= 0 || t->pid != 0)
		r = set_socket_owner(path, sock_uid, sock_gid);
	else
		r = make_socket(t);
	if (r == 0 && t->pid == 0) {
		t->failures = 0;
		/* On demand, the first client starts it. */
		r = sv.idle_s != 0 ? watch_socket(t, true) : spawn(t);
	}
	if (r < 0 && created) {
		/* Forget T; an adopted nbdkit goes on, a socket nobody serves goes. */
		sv.procs = t->next;
		unwatch_socket(t);
		if (t->pidfd >= 0) {
			epoll_ctl(sv.epoll_fd, EPOLL_CTL_DEL, t->pidfd, NULL);
			close(t->pidfd);
		}
		if (t->listen_fd >= 0)
			close(t->listen_fd);
		if (t->pid == 0)
			unlink(path);
		free(t);
	}
	return r;
}

/* Whether process PID has the block device *(dev_t *)OPAQUE open: 1 if so (which stops
 * the walk), 0 if not or it is gone. */
static int holds_device(pid_t pid, void *opaque)
{
	dev_t devnum = *(dev_t *)opaque;
	char path[64];
	struct dirent *e;
	struct stat st;
	DIR *d;
	int found = 0;

	snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (d == NULL)
		return 0;
	while (!found && (e = readdir(d)) != NULL)
		found = fstatat(dirfd(d), e->d_name, &st, 0) == 0 && S_ISBLK(st.st_mode) &&
		        st.st_rdev == devnum;
	closedir(d);
	return found;
}

int supervise_release_device(const char *tenant, dev_t devnum)
{
	struct tenant_proc *t;
	int held, r;

	LOCK_SCOPE(&sv_lock);
	t = find(tenant);
	if (t == NULL || t->pid == 0)
		return 0;
	if (sv.cgroups != NULL)
		held = cgroups_tenant_for_each_pid(sv.cgroups, t->name, holds_device, &devnum);
	else
		held = holds_device(t->pid, &devnum);
	if (held <= 0)
		return held;
	/* A process cannot be made to give an fd back: all of it goes, now, and a new
	 * nbdkit serves the tenant's other volumes on the same socket. */
	log_notice("tenant %s: its nbdkit holds a device it may no longer open: restarting it, "
	           "which ends its connections",
	           t->name);
	if (sv.cgroups != NULL)
		end_cgroup(t->name);
	else
		pidfd_send_signal(t->pidfd, SIGKILL, NULL, 0);
	wait_exit(t->pidfd, STOP_TIMEOUT_MS);
	reap(t->pidfd, NULL);
	forget_process(t);
	r = spawn(t);
	if (r < 0) {
		t->restart_ms = tp_now_ms() + RESTART_DELAY_MIN_MS;
		return r;
	}
	return 1;
}

int supervise_stop_tenant(const char *tenant)
{
	struct tenant_proc **slot, *t;
	bool stopped = false;
	int r;

	LOCK_SCOPE(&sv_lock);
	if (!sv.initialized || !tp_name_valid(tenant))
		return -EINVAL;
	for (slot = &sv.procs; *slot != NULL && strcmp((*slot)->name, tenant) != 0;
	     slot = &(*slot)->next)
		;
	t = *slot;
	if (t != NULL) {
		stopped = t->pid != 0;
		stop_process(t);
		unwatch_socket(t);
		if (t->listen_fd >= 0)
			close(t->listen_fd);
		*slot = t->next;
		free(t);
	} else {
		/* Not supervised (this daemon has not started it): stop the nbdkit of this
		 * tenant that the pidfile names all the same. */
		struct tenant_proc tmp = {.nbd_uid = (uid_t)-1, .nbd_gid = (gid_t)-1};
		enum inspection what;
		CLEANUP_CLOSE int pidfd = -1;
		pid_t pid;

		snprintf(tmp.name, sizeof tmp.name, "%s", tenant);
		pidfd = find_leftover(&tmp, &pid, &what);
		if (pidfd >= 0) {
			terminate(tenant, pidfd);
			stopped = true;
		}
	}
	/* Whatever is left in its cgroup goes with it, in either case. */
	if (sv.cgroups != NULL && (r = cgroups_tenant_remove(sv.cgroups, tenant)) < 0)
		log_errno(LOG_WARNING, r, "tenant %s: remove its cgroup: %m, ignoring", tenant);
	remove_tenant_file(tenant, "nbd.sock");
	remove_tenant_file(tenant, "nbdkit.pid");
	if (stopped)
		log_info("tenant %s: nbdkit stopped", tenant);
	return 0;
}

/* Describe how the process in SI ended (empty SI: an adopted one, not ours to reap). */
static const char *how_it_ended(const siginfo_t *si, char *buf, size_t size)
{
	if (si->si_pid == 0)
		snprintf(buf, size, "exited");
	else if (si->si_code == CLD_EXITED)
		snprintf(buf, size, "exited with status %d", si->si_status);
	else
		snprintf(buf, size, "was killed by SIG%s",
		         sigabbrev_np(si->si_status) ? sigabbrev_np(si->si_status) : "?");
	return buf;
}

/* T's nbdkit has exited: reap it, and wait for T's next client (on demand, after an idle
 * exit) or restart it, at once the first time, then with a growing delay. */
static void ended(struct tenant_proc *t, int64_t now)
{
	pid_t pid = t->pid;
	char how[128];
	siginfo_t si;
	int64_t delay;
	bool adopted = t->adopted, idle_exit;

	reap(t->pidfd, &si);
	forget_process(t);
	/* What it forked dies with it, before a restart or a wait. */
	end_cgroup(t->name);
	/* A clean exit after the idle time at least is the plugin's idle exit; an adopted
	 * nbdkit's idle time began under the daemon before (with that daemon's setting), so
	 * that for it any clean exit is one. An adopted nbdkit that is not our child is
	 * not ours to reap: how it ended is unknown, and counts as clean. */
	idle_exit = sv.idle_s != 0 &&
	            (adopted || now - t->started_ms >= (int64_t)sv.idle_s * 1000) &&
	            (si.si_pid == 0 || (si.si_code == CLD_EXITED && si.si_status == 0));
	if (idle_exit) {
		log_info("tenant %s: nbdkit %d exited, idle; its next client starts another",
		         t->name, (int)pid);
		t->failures = 0;
		t->start_failed = false;
		t->restart_ms = 0;
		remove_tenant_file(t->name, "nbdkit.pid");
		watch_socket(t, true);
		return;
	}
	if (now - t->started_ms >= HEALTHY_MS)
		t->failures = 0;
	delay = t->failures == 0 ? 0 : (int64_t)RESTART_DELAY_MIN_MS << (t->failures - 1);
	if (delay > RESTART_DELAY_MAX_MS)
		delay = RESTART_DELAY_MAX_MS;
	if (t->failures < 16)
		t->failures++;
	/* An error status is nbdkit failing to start (a plugin it cannot load, a bad
	 * setting): nbdkit has said why, on the same log. */
	t->start_failed = si.si_pid != 0 && si.si_code == CLD_EXITED && si.si_status != 0;
	log_warning("tenant %s: nbdkit %d %s%s, restarting it in %" PRId64 " ms", t->name, (int)pid,
	            how_it_ended(&si, how, sizeof how),
	            t->start_failed ? " (nbdkit's own message before this says why)" : "", delay);
	t->restart_ms = now + delay;
	if (t->start_failed && delay > 0) {
		if (t->failures == 2)
			log_error(
			    "tenant %s: nbdkit does not start (plugin %s); its NBD clients are "
			    "turned away until it does",
			    t->name, sv.plugin);
		turn_away(t, true);
	}
}

/* T's nbdkit could not be started now: try again later, turning its clients away. */
static void start_failed(struct tenant_proc *t, int64_t now)
{
	if (t->failures < 16)
		t->failures++;
	t->restart_ms = now + RESTART_DELAY_MAX_MS;
	t->start_failed = true;
	turn_away(t, true);
}

void supervise_reap(void)
{
	struct epoll_event ev[64];
	struct tenant_proc *t;
	int64_t now = tp_now_ms();
	int n, i;

	LOCK_SCOPE(&sv_lock);
	if (!sv.initialized)
		return;
	/* What the epoll says happened; the rest of a longer list stays readable for the
	 * next call. */
	n = epoll_wait(sv.epoll_fd, ev, (int)(sizeof ev / sizeof ev[0]), 0);
	for (i = 0; i < n; i++) {
		struct watch *w = ev[i].data.ptr;

		if (w->what == WATCH_EXIT)
			w->t->exited = true;
		else
			w->t->knocked = true;
	}
	for (t = sv.procs; t != NULL; t = t->next) {
		bool exited = t->exited, knocked = t->knocked;

		t->exited = t->knocked = false;
		if (t->pid != 0 && (exited || !t->exit_watched) && wait_exit(t->pidfd, 0))
			ended(t, now);
		if (t->pid == 0 && t->restart_ms != 0 && now >= t->restart_ms) {
			int r = t->listen_fd >= 0 ? 0 : make_socket(t);

			/* On demand, the restart waits for a client like any start. */
			if (r == 0 && sv.idle_s != 0) {
				t->restart_ms = 0;
				turn_away(t, false);
				r = watch_socket(t, true);
			} else if (r == 0) {
				r = spawn(t);
			}
			if (r < 0)
				start_failed(t, now);
		}
		if (t->turning_away) {
			int fd;

			while ((fd = accept4(t->listen_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
				close(fd);
		} else if (knocked && t->watched && t->pid == 0 && spawn(t) < 0) {
			start_failed(t, now);
		}
	}
}

int supervise_next_reap_ms(void)
{
	struct tenant_proc *t;
	int64_t now = tp_now_ms(), wait = -1;

	LOCK_SCOPE(&sv_lock);
	for (t = sv.procs; t != NULL; t = t->next) {
		int64_t w = -1;

		if (t->pid == 0 && t->restart_ms != 0)
			w = t->restart_ms > now ? t->restart_ms - now : 0;
		else if (t->pid != 0 && !t->exit_watched)
			w = 1000;
		if (w >= 0 && (wait < 0 || w < wait))
			wait = w;
	}
	/* Restarts are at most RESTART_DELAY_MAX_MS away: this fits an int. */
	return (int)wait;
}

const char *supervise_status(const char *tenant)
{
	struct tenant_proc *t;

	LOCK_SCOPE(&sv_lock);
	t = find(tenant);
	if (t == NULL)
		return "stopped";
	if (t->pid != 0)
		return "running";
	if (t->turning_away)
		return "failed";
	if (t->restart_ms != 0)
		return "restarting";
	return t->watched ? "idle" : "stopped";
}

void supervise_shutdown(void)
{
	LOCK_SCOPE(&sv_lock);
	while (sv.procs != NULL) {
		struct tenant_proc *t = sv.procs;

		sv.procs = t->next;
		/* Our copies only: nbdkit keeps its socket, pidfile and connections. */
		unwatch_socket(t);
		if (t->listen_fd >= 0)
			close(t->listen_fd);
		if (t->pidfd >= 0)
			close(t->pidfd);
		free(t);
	}
	free_config();
	sv.initialized = false;
}
