/* Cgroups for the tenants' nbdkits (see cgroup.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "cgroup.h"
#include "log.h"
#include "tp-cleanup.h"
#include "tp-rules.h"

/* BASE of a daemon that systemd did not delegate a cgroup to, below the cgroup2 mount. */
#define DEFAULT_BASE "/thinproxyd"
/* Where the daemon goes when it runs in BASE itself. */
#define DAEMON_LEAF "daemon"
/* A tenant's cgroup is this and its name: no file of the cgroup interface starts so. */
#define TENANT_PREFIX "tenant-"
/* How long cgroups_tenant_kill waits for a killed cgroup to empty, and how often it
 * looks. */
#define KILL_WAIT_MS 5000
#define KILL_POLL_MS 10

/* The controllers each tenant's cgroup needs, as cgroup.subtree_control enables them. */
static const char *const controllers[] = {"memory", "pids"};

struct cgroups {
	char *path; /* BASE below the mount, e.g. "/thinproxyd" */
	char *base; /* BASE as an absolute path */
	int base_fd;
	struct cgroup_limits limits;
};

/* Read the small file NAME (relative to DIRFD) into BUF, NUL-terminated. */
static int read_at(int dirfd, const char *name, char *buf, size_t size)
{
	CLEANUP_CLOSE int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	size_t len = 0;
	ssize_t n = 0;

	if (fd < 0)
		return -errno;
	while (len < size - 1 && (n = read(fd, buf + len, size - 1 - len)) > 0)
		len += (size_t)n;
	if (n < 0)
		return -errno;
	buf[len] = '\0';
	return 0;
}

/* Write TEXT to the cgroup file NAME (relative to DIRFD): one write, as the kernel takes
 * it whole or not at all. */
static int write_at(int dirfd, const char *name, const char *text)
{
	CLEANUP_CLOSE int fd = openat(dirfd, name, O_WRONLY | O_CLOEXEC);
	size_t len = strlen(text);

	if (fd < 0)
		return -errno;
	if (write(fd, text, len) != (ssize_t)len)
		return errno != 0 ? -errno : -EIO;
	return 0;
}

/* Is WORD one of the blank-separated words of LIST? */
static bool has_word(const char *list, const char *word)
{
	size_t len = strlen(word);

	for (const char *p = list; (p = strstr(p, word)) != NULL; p += len)
		if ((p == list || strchr(" \n", p[-1])) && strchr(" \n", p[len]))
			return true;
	return false;
}

/* Undo the octal escapes of /proc/self/mountinfo (\040 for a blank) in S. */
static void unescape(char *s)
{
	char *out = s;

	for (; *s != '\0'; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*out++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 3;
		} else {
			*out++ = *s;
		}
	}
	*out = '\0';
}

/* Where cgroup v2 is mounted (whole, not a part of it): /sys/fs/cgroup if there. */
static int find_mount(char **ret_mount)
{
	CLEANUP_FCLOSE FILE *f = fopen("/proc/self/mountinfo", "re");
	CLEANUP_FREE char *line = NULL, *found = NULL;
	size_t cap = 0;

	if (f == NULL)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		char root[PATH_MAX], point[PATH_MAX];
		const char *sep = strstr(line, " - ");

		if (sep == NULL || strncmp(sep + 3, "cgroup2 ", 8) != 0 ||
		    sscanf(line, "%*s %*s %*s %4095s %4095s", root, point) != 2 ||
		    strcmp(root, "/") != 0)
			continue;
		unescape(point);
		if (found == NULL || strcmp(point, "/sys/fs/cgroup") == 0) {
			free(found);
			found = strdup(point);
			if (found == NULL)
				return -ENOMEM;
		}
	}
	if (found == NULL)
		return -ENOENT;
	*ret_mount = TAKE_PTR(found);
	return 0;
}

/* The cgroup (v2) process PID is in, e.g. "/system.slice/thinproxyd.service"; 0 for
 * ourselves. */
static int cgroup_of(pid_t pid, char **ret_path)
{
	char path[64];
	CLEANUP_FCLOSE FILE *f = NULL;
	CLEANUP_FREE char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	if (pid == 0)
		snprintf(path, sizeof path, "/proc/self/cgroup");
	else
		snprintf(path, sizeof path, "/proc/%d/cgroup", (int)pid);
	f = fopen(path, "re");
	if (f == NULL)
		return -errno;
	while ((n = getline(&line, &cap, f)) > 0) {
		if (strncmp(line, "0::/", 4) != 0)
			continue;
		if (line[n - 1] == '\n')
			line[n - 1] = '\0';
		*ret_path = strdup(line + 3);
		return *ret_path ? 0 : -ENOMEM;
	}
	return -ENOENT;
}

/* Did systemd delegate the cgroup at DIR (Delegate=yes)? It says so in an xattr. */
static bool delegated(const char *dir)
{
	char v[8];
	ssize_t n = getxattr(dir, "trusted.delegate", v, sizeof v);

	if (n < 0)
		n = getxattr(dir, "user.delegate", v, sizeof v);
	return n == 1 && v[0] == '1';
}

bool cgroups_path_valid(const char *path)
{
	const char *p = path;

	if (path[0] != '/' || path[1] == '\0' || strlen(path) > PATH_MAX / 2)
		return false;
	while (*p == '/') {
		size_t len = strcspn(p + 1, "/");

		if (len == 0 || (len == 1 && p[1] == '.') ||
		    (len == 2 && p[1] == '.' && p[2] == '.'))
			return false;
		p += 1 + len;
	}
	return *p == '\0';
}

/* BASE below MOUNT for WHERE (see cgroup.h); *RET_OWN is the daemon's own cgroup. */
static int choose_path(const char *where, const char *mount, char **ret_path, char **ret_own)
{
	CLEANUP_FREE char *own = NULL, *dir = NULL, *parent = NULL;
	char *slash;
	int r;

	r = cgroup_of(0, &own);
	if (r < 0)
		return r;
	if (strcmp(where, "auto") != 0) {
		if (!cgroups_path_valid(where))
			return -EINVAL;
		*ret_path = strdup(where);
	} else {
		if (asprintf(&dir, "%s%s", mount, own) < 0)
			return -ENOMEM;
		parent = strdup(own);
		if (parent == NULL)
			return -ENOMEM;
		slash = strrchr(parent, '/');
		/* A delegated cgroup, or the leaf a daemon before us moved into. */
		if (strcmp(own, "/") != 0 && delegated(dir)) {
			*ret_path = strdup(own);
		} else if (slash != parent && strcmp(slash + 1, DAEMON_LEAF) == 0) {
			*slash = '\0';
			free(dir);
			if (asprintf(&dir, "%s%s", mount, parent) < 0)
				return -ENOMEM;
			*ret_path = strdup(delegated(dir) ? parent : DEFAULT_BASE);
		} else {
			*ret_path = strdup(DEFAULT_BASE);
		}
	}
	if (*ret_path == NULL)
		return -ENOMEM;
	*ret_own = TAKE_PTR(own);
	return 0;
}

/* mkdir -p MOUNT/PATH. */
static int make_path(const char *mount, const char *path)
{
	char dir[PATH_MAX];
	int n = snprintf(dir, sizeof dir, "%s%s", mount, path);

	if (n < 0 || (size_t)n >= sizeof dir)
		return -ENAMETOOLONG;
	for (char *p = dir + strlen(mount) + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;

		*p = '\0';
		if (mkdir(dir, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = c;
		if (c == '\0')
			return 0;
	}
}

/* Move every process of BASE into BASE/daemon: the daemon, and anything a daemon before
 * it left there (its nbdkits from before cgroups, which adoption moves on). */
static int move_into_leaf(int base_fd)
{
	char procs[4096];
	int r;

	if (mkdirat(base_fd, DAEMON_LEAF, 0755) < 0 && errno != EEXIST)
		return -errno;
	/* Processes may start while we move them: look again until none is left. */
	for (int round = 0; round < 10; round++) {
		char *line, *save = NULL;

		r = read_at(base_fd, "cgroup.procs", procs, sizeof procs);
		if (r < 0)
			return r;
		if (procs[0] == '\0')
			return 0;
		for (line = strtok_r(procs, "\n", &save); line;
		     line = strtok_r(NULL, "\n", &save)) {
			r = write_at(base_fd, DAEMON_LEAF "/cgroup.procs", line);
			if (r < 0 && r != -ESRCH)
				return r;
		}
	}
	return -EBUSY;
}

/* Make memory and pids available to BASE's children: enabled in the subtree_control of
 * every cgroup from the root down to BASE. */
static int enable_controllers(const char *mount, const char *path)
{
	char dir[PATH_MAX], file[PATH_MAX + 32], have[512], want[64];
	int r;

	snprintf(file, sizeof file, "%s/cgroup.controllers", mount);
	r = read_at(AT_FDCWD, file, have, sizeof have);
	if (r < 0)
		return log_errno(LOG_ERR, r, "read %s: %m", file);
	for (size_t i = 0; i < ARRAY_SIZE(controllers); i++)
		if (!has_word(have, controllers[i]))
			return log_errno(LOG_ERR, -EOPNOTSUPP,
			                 "cgroup v2 at %s has no %s controller (is it bound to a "
			                 "cgroup v1 hierarchy?)",
			                 mount, controllers[i]);
	/* From the root down: DIR is MOUNT and the first components of PATH. */
	for (const char *p = path;; p += 1 + strcspn(p + 1, "/")) {
		snprintf(dir, sizeof dir, "%s%.*s", mount, (int)(p - path), path);
		snprintf(file, sizeof file, "%s/cgroup.subtree_control", dir);
		r = read_at(AT_FDCWD, file, have, sizeof have);
		want[0] = '\0';
		for (size_t i = 0; r == 0 && i < ARRAY_SIZE(controllers); i++)
			if (!has_word(have, controllers[i]))
				snprintf(want + strlen(want), sizeof want - strlen(want), "%s+%s",
				         want[0] ? " " : "", controllers[i]);
		if (r == 0 && want[0] != '\0')
			r = write_at(AT_FDCWD, file, want);
		if (r < 0)
			return log_errno(LOG_ERR, r,
			                 "enable the memory and pids controllers in %s: %m", dir);
		if (*p == '\0')
			return 0;
	}
}

void cgroups_close(struct cgroups *cg)
{
	if (cg == NULL)
		return;
	if (cg->base_fd >= 0)
		close(cg->base_fd);
	free(cg->path);
	free(cg->base);
	free(cg);
}

int cgroups_open(const char *where, const struct cgroup_limits *limits,
                 struct cgroups **ret_cgroups)
{
	CLEANUP_FREE char *mount = NULL, *own = NULL;
	struct cgroups *cg;
	int r;

	r = find_mount(&mount);
	if (r == -ENOENT)
		return log_errno(
		    LOG_ERR, r,
		    "cgroup v2 is not mounted: thinproxyd runs each tenant's nbdkit in "
		    "a cgroup of its own (see cgroup in thinproxyd.conf(5))");
	if (r < 0)
		return log_errno(LOG_ERR, r, "find the cgroup v2 mount: %m");
	cg = calloc(1, sizeof *cg);
	if (cg == NULL)
		return -ENOMEM;
	cg->base_fd = -1;
	cg->limits = *limits;
	r = choose_path(where, mount, &cg->path, &own);
	if (r == -EINVAL)
		log_error("invalid cgroup \"%s\": give auto, none or an absolute path below %s",
		          where, mount);
	else if (r < 0)
		log_errno(LOG_ERR, r, "find the daemon's own cgroup: %m");
	if (r == 0 && asprintf(&cg->base, "%s%s", mount, cg->path) < 0) {
		cg->base = NULL;
		r = -ENOMEM;
	}
	if (r == 0 && (r = make_path(mount, cg->path)) < 0)
		log_errno(LOG_ERR, r, "create cgroup %s: %m", cg->base);
	if (r == 0) {
		cg->base_fd = open(cg->base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (cg->base_fd < 0)
			r = log_errno(LOG_ERR, -errno, "open cgroup %s: %m", cg->base);
	}
	/* One daemon per BASE: another one's tenants would be ours to kill. */
	if (r == 0 && flock(cg->base_fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		if (r == -EBUSY)
			log_error(
			    "cgroup %s is another thinproxyd's: give this one a cgroup of its "
			    "own (see cgroup in thinproxyd.conf(5))",
			    cg->base);
		else
			log_errno(LOG_ERR, r, "lock cgroup %s: %m", cg->base);
	}
	/* No processes in a cgroup that hands controllers to its children. */
	if (r == 0 && strcmp(own, cg->path) == 0 && (r = move_into_leaf(cg->base_fd)) < 0)
		log_errno(LOG_ERR, r, "move the daemon into %s/" DAEMON_LEAF ": %m", cg->base);
	if (r == 0)
		r = enable_controllers(mount, cg->path);
	if (r == 0 && faccessat(cg->base_fd, "cgroup.kill", F_OK, 0) < 0)
		r = log_errno(LOG_ERR, -EOPNOTSUPP,
		              "%s has no cgroup.kill: Linux 5.14 or later is needed to end a "
		              "tenant's nbdkit with everything it started",
		              cg->base);
	if (r < 0) {
		cgroups_close(cg);
		return r;
	}
	*ret_cgroups = cg;
	return 0;
}

const char *cgroups_base(const struct cgroups *cg)
{
	return cg->base;
}

/* "tenant-TENANT[/FILE]" into BUF. */
static int tenant_file(const char *tenant, const char *file, char *buf, size_t size)
{
	int n;

	if (!tp_name_valid(tenant))
		return -EINVAL;
	n = snprintf(buf, size, TENANT_PREFIX "%s%s%s", tenant, file ? "/" : "", file ? file : "");
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* Write limit V (0: none) into TENANT's cgroup file FILE. */
static int set_limit(const struct cgroups *cg, const char *tenant, const char *file, uint64_t v)
{
	char name[128], text[32] = "max";
	int r = tenant_file(tenant, file, name, sizeof name);

	if (v != 0)
		snprintf(text, sizeof text, "%" PRIu64, v);
	return r < 0 ? r : write_at(cg->base_fd, name, text);
}

int cgroups_tenant_prepare(struct cgroups *cg, const char *tenant, int *ret_fd)
{
	char dir[128], procs[128];
	int r, fd;

	r = tenant_file(tenant, NULL, dir, sizeof dir);
	if (r == 0)
		r = tenant_file(tenant, "cgroup.procs", procs, sizeof procs);
	if (r < 0)
		return r;
	if (mkdirat(cg->base_fd, dir, 0755) < 0 && errno != EEXIST)
		return -errno;
	r = set_limit(cg, tenant, "memory.max", cg->limits.memory_max);
	if (r == 0)
		r = set_limit(cg, tenant, "pids.max", cg->limits.pids_max);
	if (r < 0)
		return r;
	fd = openat(cg->base_fd, procs, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	*ret_fd = fd;
	return 0;
}

int cgroups_tenant_adopt(struct cgroups *cg, const char *tenant, pid_t pid)
{
	CLEANUP_FREE char *now = NULL, *want = NULL;
	CLEANUP_CLOSE int fd = -1;
	char text[16];
	int r;

	r = cgroups_tenant_prepare(cg, tenant, &fd);
	if (r == 0)
		r = cgroup_of(pid, &now);
	if (r < 0)
		return r;
	if (asprintf(&want, "%s/" TENANT_PREFIX "%s", cg->path, tenant) < 0) {
		want = NULL;
		return -ENOMEM;
	}
	if (strcmp(now, want) == 0)
		return 0;
	snprintf(text, sizeof text, "%d", (int)pid);
	if (write(fd, text, strlen(text)) < 0)
		return -errno;
	return 1;
}

/* Whether the cgroup at DIRFD has a process in it or below: 1, 0 or -errno. */
static int populated(int dirfd)
{
	char events[256], *p;
	int r = read_at(dirfd, "cgroup.events", events, sizeof events);

	if (r < 0)
		return r;
	p = strstr(events, "populated ");
	if (p == NULL || (p != events && p[-1] != '\n'))
		return -EIO;
	return p[strlen("populated ")] == '1';
}

int cgroups_tenant_for_each_pid(struct cgroups *cg, const char *tenant,
                                int (*fn)(pid_t pid, void *opaque), void *opaque)
{
	CLEANUP_FREE char *procs = NULL;
	size_t size = 64 * 1024;
	char name[128], *line, *save = NULL;
	int r;

	r = tenant_file(tenant, "cgroup.procs", name, sizeof name);
	if (r < 0)
		return r;
	procs = malloc(size);
	if (procs == NULL)
		return -ENOMEM;
	/* pids.max bounds the list: a few thousand pids fit. */
	r = read_at(cg->base_fd, name, procs, size);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	for (line = strtok_r(procs, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		char *end;
		long pid;

		errno = 0;
		pid = strtol(line, &end, 10);
		if (errno != 0 || *end != '\0' || pid <= 0 || pid > INT_MAX)
			continue;
		r = fn((pid_t)pid, opaque);
		if (r != 0)
			return r;
	}
	return 0;
}

int cgroups_tenant_kill(struct cgroups *cg, const char *tenant)
{
	char dir[128];
	CLEANUP_CLOSE int fd = -1;
	struct timespec start, now;
	int r;

	r = tenant_file(tenant, NULL, dir, sizeof dir);
	if (r < 0)
		return r;
	fd = openat(cg->base_fd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	r = populated(fd);
	if (r <= 0)
		return r;
	/* SIGKILL to every process in it, and to any it forks meanwhile. */
	r = write_at(fd, "cgroup.kill", "1");
	if (r < 0)
		return r;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		r = populated(fd);
		if (r <= 0)
			return r;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 >=
		    KILL_WAIT_MS)
			return -ETIMEDOUT;
		poll(NULL, 0, KILL_POLL_MS);
	}
}

int cgroups_tenant_remove(struct cgroups *cg, const char *tenant)
{
	char dir[128];
	int r;

	r = tenant_file(tenant, NULL, dir, sizeof dir);
	if (r == 0)
		r = cgroups_tenant_kill(cg, tenant);
	if (r < 0)
		return r;
	if (unlinkat(cg->base_fd, dir, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}
