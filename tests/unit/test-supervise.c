/* daemon/supervise.c on the host, as root: real nbdkits running the real plugin as
 * unprivileged uids, socket-activated on the sockets supervise makes, served by the real
 * broker (daemon/broker.c) from the stand-in ops_* below. Skipped (passes) unless root. */
#include <check.h>
#include <fcntl.h>
#include <libnbd.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../daemon/broker.h"
#include "../../daemon/ops.h"
#include "../../daemon/supervise.h"
#include "tp-cleanup.h"
#include "nbdkit-harness.h"

#define ALICE_UID 65534 /* nobody */
#define BOB_UID   65533
#define SOCK_UID  1000
#define SOCK_GID  1001
#define VOL_SIZE  (1024 * 1024)

static char dir[] = "/tmp/tp-supervise.XXXXXX";
static char run_dir[256], broker_sock[256], plugin[PATH_MAX];
static const char *nbdkit; /* the program supervise runs */

/* The stand-in ops: ALICE_UID and BOB_UID are alice's and bob's nbdkits; each sees one
 * export, "vol", a file of its own byte. */

int ops_principal_for_nbd_uid(uid_t uid, struct principal *ret_principal)
{
	if (uid != ALICE_UID && uid != BOB_UID)
		return -ENOENT;
	memset(ret_principal, 0, sizeof *ret_principal);
	strcpy(ret_principal->tenant, uid == ALICE_UID ? "alice" : "bob");
	return 0;
}

int ops_open_export(const struct principal *p, const char *ref, bool want_write, bool direct,
                    struct export_info *ret_info)
{
	char path[PATH_MAX];
	int fd;

	(void)direct; /* a file in the test's directory, which may not take O_DIRECT */
	if (strcmp(ref, "vol") != 0)
		return -ENOENT;
	snprintf(path, sizeof path, "%s/%s.img", dir, p->tenant);
	/* Root opens it; the nbdkit, which could not, gets the fd. */
	fd = open(path, (want_write ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	memset(ret_info, 0, sizeof *ret_info);
	strcpy(ret_info->name, ref);
	ret_info->size = VOL_SIZE;
	ret_info->writable = true;
	ret_info->state = "ready";
	return fd;
}

int ops_list_exports(const struct principal *p, struct export_info **ret_exports, size_t *ret_n)
{
	(void)p;
	*ret_exports = NULL;
	*ret_n = 0;
	return 0;
}

/* No map: the broker answers MAP with ENOENT. */
int ops_map_export(const struct principal *p, const char *ref, struct export_range **ret_ranges,
                   size_t *ret_n, uint64_t *ret_size)
{
	(void)p;
	(void)ref;
	(void)ret_ranges;
	(void)ret_n;
	(void)ret_size;
	return -ENOENT;
}

int ops_pool_status(struct pool_view *ret_view)
{
	memset(ret_view, 0, sizeof *ret_view);
	ret_view->block_size = 65536;
	return 0;
}

static void init_supervise_with(const char *program, const char *plugin_path)
{
	struct supervise_config cfg = {.run_dir = run_dir,
	                               .nbdkit = program,
	                               .plugin = plugin_path,
	                               .broker = broker_sock,
	                               .limits = {.pids_max = 512}};

	ck_assert_int_eq(supervise_init(&cfg), 0);
}

static void init_supervise(const char *program)
{
	init_supervise_with(program, plugin);
}

static void write_volume(const char *tenant, int fill)
{
	char path[PATH_MAX], buf[4096];
	int fd;

	memset(buf, fill, sizeof buf);
	snprintf(path, sizeof path, "%s/%s.img", dir, tenant);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	for (int i = 0; i < VOL_SIZE / 4096; i++)
		ck_assert_int_eq(write(fd, buf, sizeof buf), sizeof buf);
	close(fd);
}

static bool skip;

static void setup(void)
{
	const char *build = getenv("TP_BUILD") ? getenv("TP_BUILD") : "build";
	char rel[PATH_MAX];

	skip = getuid() != 0;
	if (skip)
		return;
	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(chmod(dir, 0711), 0);
	snprintf(run_dir, sizeof run_dir, "%s/run", dir);
	snprintf(broker_sock, sizeof broker_sock, "%s/run/private/broker.sock", dir);
	snprintf(rel, sizeof rel, "%s/nbdkit-thinproxy-plugin.so", build);
	ck_assert_msg(realpath(rel, plugin) != NULL, "%s is missing (make it first)", rel);
	ck_assert_int_eq(mkdir(run_dir, 0755), 0);
	write_volume("alice", 0xa1);
	write_volume("bob", 0xb0);
	harness_broker_start(broker_sock);
	nbdkit = harness_nbdkit_program(dir);
	init_supervise(nbdkit);
}

/* The pid in TENANT's pidfile, 0 if none. */
static pid_t pidfile(const char *tenant)
{
	char path[PATH_MAX];
	FILE *f;
	int pid = 0;

	snprintf(path, sizeof path, "%s/tenants/%s/nbdkit.pid", run_dir, tenant);
	f = fopen(path, "re");
	if (f == NULL)
		return 0;
	if (fscanf(f, "%d", &pid) != 1)
		pid = 0;
	fclose(f);
	return pid;
}

static void teardown(void)
{
	static const char *tenants[] = {"alice", "bob"};
	char cmd[PATH_MAX];

	if (skip)
		return;
	/* nbdkits outlive their daemon by design: end them here. */
	for (size_t i = 0; i < ARRAY_SIZE(tenants); i++) {
		pid_t pid = pidfile(tenants[i]);

		if (pid > 0)
			kill(pid, SIGKILL);
	}
	supervise_shutdown();
	harness_broker_stop();
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static void socket_path(const char *tenant, char *buf, size_t size)
{
	snprintf(buf, size, "%s/tenants/%s/nbd.sock", run_dir, tenant);
}

/* Read the first byte of TENANT's "vol" through its supervised nbdkit. */
static int read_through(const char *tenant)
{
	struct nbd_handle *h = nbd_create();
	char path[PATH_MAX], c = 0;

	socket_path(tenant, path, sizeof path);
	ck_assert_ptr_nonnull(h);
	ck_assert_int_eq(nbd_set_export_name(h, "vol"), 0);
	ck_assert_msg(nbd_connect_unix(h, path) == 0, "%s: %s", tenant, nbd_get_error());
	ck_assert_int_eq(nbd_get_size(h), VOL_SIZE);
	ck_assert_int_eq(nbd_pread(h, &c, 1, 0, 0), 0);
	nbd_close(h);
	return (unsigned char)c;
}

static bool alive(pid_t pid)
{
	char path[64], state = 0;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (f == NULL)
		return false;
	if (fscanf(f, "%*d %*s %c", &state) != 1)
		state = 0;
	fclose(f);
	return state != 0 && state != 'Z';
}

/* The "Key:" line of /proc/PID/status, after the colon and blanks. */
static const char *status_field(pid_t pid, const char *key, char *buf, size_t size)
{
	char path[64], line[512];
	size_t n = strlen(key);
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	ck_assert_ptr_nonnull(f);
	buf[0] = '\0';
	while (fgets(line, sizeof line, f))
		if (strncmp(line, key, n) == 0 && line[n] == ':') {
			snprintf(buf, size, "%s", line + n + 1 + strspn(line + n + 1, " \t"));
			buf[strcspn(buf, "\n")] = '\0';
		}
	fclose(f);
	return buf;
}

/* Wait until TENANT's process is nbdkit itself (the sanitizer wrapper execs it), at
 * most 30 s. */
static pid_t started(const char *tenant)
{
	pid_t pid = pidfile(tenant);
	char path[64], exe[PATH_MAX];

	snprintf(path, sizeof path, "/proc/%d/exe", (int)pid);
	for (int i = 0; i < 3000; i++) {
		ssize_t n = readlink(path, exe, sizeof exe - 1);

		if (n > 7 && memcmp(exe + n - 7, "/nbdkit", 7) == 0)
			return pid;
		usleep(10000);
	}
	ck_abort_msg("%s's nbdkit %d never started", tenant, (int)pid);
	return 0;
}

/* Call supervise_reap() until TENANT runs another nbdkit than OLD (at most 30 s, for a
 * supervisor that never restarts it); returns it. */
static pid_t wait_restart(const char *tenant, pid_t old)
{
	for (int i = 0; i < 1200; i++) {
		pid_t pid;

		supervise_reap();
		pid = pidfile(tenant);
		if (pid != old && pid > 0 && strcmp(supervise_status(tenant), "running") == 0)
			return pid;
		usleep(25000);
	}
	ck_abort_msg("%s's nbdkit was not restarted", tenant);
	return 0;
}

/* Call supervise_reap() until TENANT's nbdkit is STATUS (at most 30 s). */
static void wait_status(const char *tenant, const char *status)
{
	for (int i = 0; i < 1200; i++) {
		supervise_reap();
		if (strcmp(supervise_status(tenant), status) == 0)
			return;
		usleep(25000);
	}
	ck_abort_msg("%s's nbdkit never became %s", tenant, status);
}

START_TEST(starts_one_unprivileged_nbdkit_per_tenant)
{
	char path[PATH_MAX], buf[128];
	struct stat st;
	pid_t alice, bob;

	if (skip)
		return;
	ck_assert_str_eq(supervise_status("alice"), "stopped");
	ck_assert_int_eq(supervise_start_tenant("alice", ALICE_UID, ALICE_UID, SOCK_UID, SOCK_GID),
	                 0);
	ck_assert_int_eq(supervise_start_tenant("bob", BOB_UID, BOB_UID, SOCK_UID, SOCK_GID), 0);
	ck_assert_str_eq(supervise_status("alice"), "running");
	alice = pidfile("alice");
	bob = pidfile("bob");
	ck_assert(alice > 0 && bob > 0 && alice != bob);

	socket_path("alice", path, sizeof path);
	ck_assert_int_eq(lstat(path, &st), 0);
	ck_assert(S_ISSOCK(st.st_mode));
	ck_assert_uint_eq(st.st_mode & 07777, 0660);
	ck_assert_uint_eq(st.st_uid, SOCK_UID);
	ck_assert_uint_eq(st.st_gid, SOCK_GID);

	/* Each tenant's nbdkit serves its own volume, by the fd the broker handed it. */
	ck_assert_int_eq(read_through("alice"), 0xa1);
	ck_assert_int_eq(read_through("bob"), 0xb0);

	/* No authority: its own uid and gid only, no capabilities at all. */
	ck_assert_str_eq(status_field(alice, "Uid", buf, sizeof buf), "65534\t65534\t65534\t65534");
	ck_assert_str_eq(status_field(alice, "Gid", buf, sizeof buf), "65534\t65534\t65534\t65534");
	ck_assert_str_eq(status_field(alice, "Groups", buf, sizeof buf), "");
	ck_assert_str_eq(status_field(alice, "CapInh", buf, sizeof buf), "0000000000000000");
	ck_assert_str_eq(status_field(alice, "CapPrm", buf, sizeof buf), "0000000000000000");
	ck_assert_str_eq(status_field(alice, "CapEff", buf, sizeof buf), "0000000000000000");
	ck_assert_str_eq(status_field(alice, "CapBnd", buf, sizeof buf), "0000000000000000");
	ck_assert_str_eq(status_field(alice, "CapAmb", buf, sizeof buf), "0000000000000000");
	ck_assert_str_eq(status_field(alice, "NoNewPrivs", buf, sizeof buf), "1");
	/* Its own session: the daemon's terminal and process group are not its. */
	ck_assert_int_eq(getsid(alice), alice);

	/* Starting it again is a no-op. */
	ck_assert_int_eq(supervise_start_tenant("alice", ALICE_UID, ALICE_UID, SOCK_UID, SOCK_GID),
	                 0);
	ck_assert_int_eq(pidfile("alice"), alice);
}
END_TEST

START_TEST(never_runs_nbdkit_as_root)
{
	if (skip)
		return;
	ck_assert_int_eq(supervise_start_tenant("alice", 0, ALICE_UID, SOCK_UID, SOCK_GID), -EPERM);
	ck_assert_int_eq(supervise_start_tenant("alice", ALICE_UID, 0, SOCK_UID, SOCK_GID), -EPERM);
	ck_assert_int_eq(supervise_start_tenant("../x", ALICE_UID, ALICE_UID, 0, 0), -EINVAL);
	ck_assert_int_eq(supervise_start_tenant("", ALICE_UID, ALICE_UID, 0, 0), -EINVAL);
	ck_assert_str_eq(supervise_status("alice"), "stopped");
}
END_TEST

START_TEST(restarts_a_killed_nbdkit_on_the_same_socket)
{
	char path[PATH_MAX];
	struct stat before, after;
	pid_t old, pid, client;
	int status;

	if (skip)
		return;
	ck_assert_int_eq(supervise_start_tenant("alice", ALICE_UID, ALICE_UID, SOCK_UID, SOCK_GID),
	                 0);
	old = pidfile("alice");
	socket_path("alice", path, sizeof path);
	ck_assert_int_eq(stat(path, &before), 0);
	kill(old, SIGKILL);
	while (alive(old))
		usleep(10000);

	/* A client that connects while nbdkit is dead waits in the socket's backlog: the
	 * daemon holds the socket, and the next nbdkit serves it. */
	client = fork();
	ck_assert_int_ge(client, 0);
	if (client == 0)
		_exit(read_through("alice") == 0xa1 ? 0 : 1);
	usleep(100000);
	pid = wait_restart("alice", old);
	ck_assert_int_ne(pid, old);
	ck_assert_int_eq(waitpid(client, &status, 0), client);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_int_eq(stat(path, &after), 0);
	ck_assert_uint_eq(before.st_ino, after.st_ino);
	ck_assert_int_eq(read_through("alice"), 0xa1);
}
END_TEST

START_TEST(backs_off_while_nbdkit_keeps_dying)
{
	int ms;

	if (skip)
		return;
	supervise_shutdown();
	init_supervise("/bin/false");
	ck_assert_int_eq(supervise_start_tenant("alice", ALICE_UID, ALICE_UID, SOCK_UID, SOCK_GID),
	                 0);
	/* Each death is waited for, however long a loaded machine takes to run /bin/false;
	 * only the delays the supervisor sets are looked at. The first death: restarted
	 * at once, in the reap that sees it. */
	wait_restart("alice", pidfile("alice"));
	/* The second: put off by 250 ms. It exits 1, as nbdkit does when it cannot start:
	 * failed, not restarting. */
	wait_status("alice", "failed");
	ms = supervise_next_reap_ms();
	ck_assert_msg(ms <= 250, "next restart in %d ms", ms);
	supervise_reap();
	ck_assert_str_eq(supervise_status("alice"), "failed");
	usleep((useconds_t)ms * 1000 + 1000);
	supervise_reap();
	ck_assert_str_eq(supervise_status("alice"), "running");
	/* The third: put off by 500 ms. */
	wait_status("alice", "failed");
	ms = supervise_next_reap_ms();
	ck_assert_msg(ms > 250 && ms <= 500, "next restart in %d ms", ms);
}
END_TEST

/* Whether the fd FD is readable within MS milliseconds. */
static bool readable(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	return poll(&p, 1, ms) == 1;
}

/* An nbdkit that cannot start: a client of its socket is closed at once, not left to
 * wait for a server that does not come; once one runs, clients wait for it again. */
START_TEST(turns_clients_away_while_nbdkit_cannot_start)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char path[PATH_MAX], c;
	int fd, queued;

	if (skip)
		return;
	supervise_shutdown();
	init_supervise("/bin/false");
	ck_assert_int_eq(supervise_start_tenant("alice", ALICE_UID, ALICE_UID, SOCK_UID, SOCK_GID),
	                 0);
	socket_path("alice", path, sizeof path);
	ck_assert_uint_lt(strlen(path), sizeof sa.sun_path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	/* A client queued before the failures are known is turned away with the rest. */
	queued = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_eq(connect(queued, (struct sockaddr *)&sa, sizeof sa), 0);
	wait_restart("alice", pidfile("alice")); /* first death: restarted at once */
	wait_status("alice", "failed");          /* second: failed */
	ck_assert(readable(queued, 5000));
	ck_assert_int_eq(read(queued, &c, 1), 0);
	close(queued);

	/* One that connects now wakes the daemon's loop, which closes it. */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	ck_assert(readable(supervise_event_fd(), 5000));
	supervise_reap();
	ck_assert(readable(fd, 5000));
	ck_assert_int_eq(read(fd, &c, 1), 0);
	close(fd);

	/* A restart that works (here: nbdkit is back) serves clients again. */
	supervise_shutdown();
	init_supervise(nbdkit);
	ck_assert_int_eq(supervise_start_tenant("alice", ALICE_UID, ALICE_UID, SOCK_UID, SOCK_GID),
	                 0);
	ck_assert_str_eq(supervise_status("alice"), "running");
	ck_assert_int_eq(read_through("alice"), 0xa1);
}
END_TEST

/* The plugin where no tenant's uid may read it: a clone in a private home directory. */
START_TEST(loads_a_plugin_no_tenant_uid_could_read)
{
	char private_dir[PATH_MAX], copy[PATH_MAX + 32], cmd[4 * PATH_MAX];

	if (skip)
		return;
	snprintf(private_dir, sizeof private_dir, "%s/private", dir);
	ck_assert_int_eq(mkdir(private_dir, 0700), 0);
	snprintf(copy, sizeof copy, "%s/nbdkit-thinproxy-plugin.so", private_dir);
	snprintf(cmd, sizeof cmd, "cp %s %s && chmod 0600 %s", plugin, copy, copy);
	ck_assert_int_eq(system(cmd), 0);
	supervise_shutdown();
	init_supervise_with(nbdkit, copy);
	ck_assert_int_eq(supervise_start_tenant("alice", ALICE_UID, ALICE_UID, SOCK_UID, SOCK_GID),
	                 0);
	started("alice");
	ck_assert_int_eq(read_through("alice"), 0xa1);
	/* A daemon after this one adopts it, with a copy of its own of the same plugin. */
	supervise_shutdown();
	init_supervise_with(nbdkit, copy);
	ck_assert_int_eq(supervise_start_tenant("alice", ALICE_UID, ALICE_UID, SOCK_UID, SOCK_GID),
	                 0);
	ck_assert_str_eq(supervise_status("alice"), "running");
	ck_assert_int_eq(read_through("alice"), 0xa1);
}
END_TEST

/* The "Max ..." line of /proc/PID/limits, its soft and hard limits as "SOFT HARD". */
static const char *limit(pid_t pid, const char *name, char *buf, size_t size)
{
	char path[64], line[256], soft[32], hard[32];
	size_t n = strlen(name);
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/limits", (int)pid);
	f = fopen(path, "re");
	ck_assert_ptr_nonnull(f);
	buf[0] = '\0';
	while (fgets(line, sizeof line, f))
		if (strncmp(line, name, n) == 0 && sscanf(line + n, "%31s %31s", soft, hard) == 2)
			snprintf(buf, size, "%s %s", soft, hard);
	fclose(f);
	return buf;
}

START_TEST(runs_nbdkit_with_its_resource_limits)
{
	char buf[64];
	pid_t pid;

	if (skip)
		return;
	ck_assert_int_eq(supervise_start_tenant("alice", ALICE_UID, ALICE_UID, SOCK_UID, SOCK_GID),
	                 0);
	pid = started("alice");
	ck_assert_str_eq(limit(pid, "Max core file size", buf, sizeof buf), "0 0");
	ck_assert_str_eq(limit(pid, "Max open files", buf, sizeof buf), "4096 4096");
	ck_assert_str_eq(limit(pid, "Max processes", buf, sizeof buf), "512 512");
}
END_TEST

/* The daemon's loop sleeps until supervise_next_reap_ms(): a restart put off by the
 * backoff, or the death of an adopted nbdkit (no SIGCHLD), must not wait for anything
 * else to wake it. */
START_TEST(says_when_the_next_restart_is_due)
{
	pid_t pid;
	int ms;

	if (skip)
		return;
	ck_assert_int_eq(supervise_start_tenant("alice", ALICE_UID, ALICE_UID, SOCK_UID, SOCK_GID),
	                 0);
	pid = started("alice");
	ck_assert_int_eq(supervise_next_reap_ms(), -1);
	/* A first death is restarted at once, a second one after the backoff. */
	kill(pid, SIGKILL);
	while (alive(pid))
		usleep(10000);
	pid = wait_restart("alice", pid);
	ck_assert_int_eq(supervise_next_reap_ms(), -1);
	kill(started("alice"), SIGKILL);
	while (alive(pid))
		usleep(10000);
	supervise_reap();
	ck_assert_str_eq(supervise_status("alice"), "restarting");
	ms = supervise_next_reap_ms();
	ck_assert_msg(ms > 0 && ms <= 250, "next reap in %d ms", ms);
	usleep((useconds_t)ms * 1000 + 1000);
	ck_assert_int_eq(supervise_next_reap_ms(), 0);
	supervise_reap();
	ck_assert_str_eq(supervise_status("alice"), "running");
	pid = started("alice");

	/* Adopted by the next daemon: not its child, but its pidfd tells of its death as a
	 * child's does, so there is nothing to look at meanwhile. */
	supervise_shutdown();
	init_supervise(nbdkit);
	ck_assert_int_eq(supervise_start_tenant("alice", ALICE_UID, ALICE_UID, SOCK_UID, SOCK_GID),
	                 0);
	ck_assert_int_eq(pidfile("alice"), pid);
	ck_assert_int_eq(supervise_next_reap_ms(), -1);
	kill(pid, SIGKILL);
	pid = wait_restart("alice", pid);
}
END_TEST

START_TEST(leaves_nbdkit_running_and_adopts_it_after_a_restart)
{
	char path[PATH_MAX];
	struct stat before, after;
	pid_t pid, next;

	if (skip)
		return;
	ck_assert_int_eq(supervise_start_tenant("alice", ALICE_UID, ALICE_UID, SOCK_UID, SOCK_GID),
	                 0);
	pid = started("alice");
	socket_path("alice", path, sizeof path);
	ck_assert_int_eq(stat(path, &before), 0);

	supervise_shutdown(); /* the daemon exits */
	ck_assert(alive(pid));
	ck_assert_int_eq(read_through("alice"), 0xa1);

	init_supervise(nbdkit); /* and comes back */
	ck_assert_str_eq(supervise_status("alice"), "stopped");
	ck_assert_int_eq(supervise_start_tenant("alice", ALICE_UID, ALICE_UID, SOCK_UID, SOCK_GID),
	                 0);
	ck_assert_int_eq(pidfile("alice"), pid);
	ck_assert_str_eq(supervise_status("alice"), "running");

	/* Adopted with its socket: a restart after its death keeps the socket. */
	kill(pid, SIGKILL);
	next = wait_restart("alice", pid);
	ck_assert_int_ne(next, pid);
	ck_assert_int_eq(stat(path, &after), 0);
	ck_assert_uint_eq(before.st_ino, after.st_ino);
	ck_assert_int_eq(read_through("alice"), 0xa1);
}
END_TEST

/* The daemon killed outright, not exiting: nbdkit is its child, and nbdkit 1.32 asks for
 * SIGTERM at its parent's death by itself (the plugin clears that). */
START_TEST(nbdkit_outlives_a_killed_supervisor)
{
	int ready[2];
	pid_t daemon, pid;
	char c;

	if (skip)
		return;
	ck_assert_int_eq(pipe2(ready, O_CLOEXEC), 0);
	daemon = fork();
	ck_assert_int_ge(daemon, 0);
	if (daemon == 0) {
		int r = supervise_start_tenant("alice", ALICE_UID, ALICE_UID, SOCK_UID, SOCK_GID);

		(void)!write(ready[1], r == 0 ? "y" : "n", 1);
		for (;;)
			pause();
	}
	close(ready[1]);
	ck_assert_int_eq(read(ready[0], &c, 1), 1);
	close(ready[0]);
	ck_assert_int_eq(c, 'y');
	pid = started("alice");
	/* The plugin is loaded (and the signal cleared) once nbdkit serves. */
	ck_assert_int_eq(read_through("alice"), 0xa1);

	kill(daemon, SIGKILL);
	ck_assert_int_eq(waitpid(daemon, NULL, 0), daemon);
	usleep(300000);
	ck_assert_msg(alive(pid), "nbdkit %d died with its supervisor", (int)pid);
	ck_assert_int_eq(read_through("alice"), 0xa1);
}
END_TEST

START_TEST(replaces_an_nbdkit_left_with_another_uid)
{
	char path[PATH_MAX], buf[128];
	struct stat before, after;
	pid_t pid, next;

	if (skip)
		return;
	ck_assert_int_eq(supervise_start_tenant("alice", BOB_UID, BOB_UID, SOCK_UID, SOCK_GID), 0);
	pid = started("alice");
	socket_path("alice", path, sizeof path);
	ck_assert_int_eq(stat(path, &before), 0);
	supervise_shutdown();
	init_supervise(nbdkit);
	ck_assert_int_eq(supervise_start_tenant("alice", ALICE_UID, ALICE_UID, SOCK_UID, SOCK_GID),
	                 0);
	next = pidfile("alice");
	ck_assert_int_ne(next, pid);
	ck_assert(!alive(pid));
	ck_assert_str_eq(status_field(next, "Uid", buf, sizeof buf), "65534\t65534\t65534\t65534");
	ck_assert_int_eq(stat(path, &after), 0);
	ck_assert_uint_eq(before.st_ino, after.st_ino);

	/* And a uid change while running: the same, without a daemon restart. */
	ck_assert_int_eq(supervise_start_tenant("alice", BOB_UID, BOB_UID, SOCK_UID, SOCK_GID), 0);
	ck_assert(!alive(next));
	ck_assert_str_eq(status_field(pidfile("alice"), "Uid", buf, sizeof buf),
	                 "65533\t65533\t65533\t65533");
}
END_TEST

START_TEST(stops_nbdkit_and_removes_its_socket)
{
	char path[PATH_MAX];
	pid_t pid;

	if (skip)
		return;
	ck_assert_int_eq(supervise_start_tenant("alice", ALICE_UID, ALICE_UID, SOCK_UID, SOCK_GID),
	                 0);
	pid = pidfile("alice");
	ck_assert_int_eq(supervise_stop_tenant("alice"), 0);
	ck_assert(!alive(pid));
	socket_path("alice", path, sizeof path);
	ck_assert_int_eq(access(path, F_OK), -1);
	ck_assert_int_eq(pidfile("alice"), 0);
	ck_assert_str_eq(supervise_status("alice"), "stopped");
	ck_assert_int_eq(supervise_stop_tenant("alice"), 0);

	/* One left by an earlier daemon and not started by this one is stopped too. */
	ck_assert_int_eq(supervise_start_tenant("bob", BOB_UID, BOB_UID, SOCK_UID, SOCK_GID), 0);
	pid = started("bob");
	supervise_shutdown();
	init_supervise(nbdkit);
	ck_assert_int_eq(supervise_stop_tenant("bob"), 0);
	ck_assert(!alive(pid));
}
END_TEST

START_TEST(refuses_a_missing_nbdkit)
{
	struct supervise_config cfg = {
	    .run_dir = run_dir, .nbdkit = "/nonexistent/nbdkit", .broker = broker_sock};

	if (skip)
		return;
	supervise_shutdown();
	ck_assert_int_eq(supervise_init(&cfg), -ENOENT);
	cfg.nbdkit = "no-such-nbdkit-anywhere";
	ck_assert_int_eq(supervise_init(&cfg), -ENOENT);
	cfg.nbdkit = NULL;
	cfg.plugin = "/nonexistent/plugin.so";
	ck_assert_int_eq(supervise_init(&cfg), -ENOENT);
}
END_TEST

/* A client of TENANT's socket, connected (to the backlog, if no nbdkit runs). */
static int knock(const char *tenant)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	char path[PATH_MAX];

	ck_assert_int_ge(fd, 0);
	socket_path(tenant, path, sizeof path);
	ck_assert_uint_lt(strlen(path), sizeof sa.sun_path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	return fd;
}

/* With an idle time, no nbdkit runs until a client comes; the one that starts serves
 * that client and the next, and exits once idle; the next client starts another, on
 * the same socket. */
START_TEST(starts_nbdkit_for_the_first_client_and_again_after_it_exits_idle)
{
	struct supervise_config cfg = {.run_dir = run_dir,
	                               .nbdkit = nbdkit,
	                               .plugin = plugin,
	                               .broker = broker_sock,
	                               .idle_s = 1};
	char path[PATH_MAX], greeting[8];
	struct stat before, after;
	pid_t first, second;
	int fd;

	if (skip)
		return;
	supervise_shutdown();
	ck_assert_int_eq(supervise_init(&cfg), 0);
	ck_assert_int_eq(supervise_start_tenant("alice", ALICE_UID, ALICE_UID, SOCK_UID, SOCK_GID),
	                 0);
	ck_assert_str_eq(supervise_status("alice"), "idle");
	ck_assert_int_eq(pidfile("alice"), 0);
	supervise_reap();
	ck_assert_str_eq(supervise_status("alice"), "idle");
	socket_path("alice", path, sizeof path);
	ck_assert_int_eq(stat(path, &before), 0);

	/* The first client waits in the backlog for the nbdkit it starts. */
	fd = knock("alice");
	ck_assert(readable(supervise_event_fd(), 5000));
	wait_status("alice", "running");
	first = started("alice");
	ck_assert_msg(readable(fd, 30000), "no greeting");
	ck_assert_int_eq(read(fd, greeting, sizeof greeting), sizeof greeting);
	ck_assert_int_eq(memcmp(greeting, "NBDMAGIC", 8), 0);
	close(fd);
	/* The second one is served by the same process. */
	ck_assert_int_eq(read_through("alice"), 0xa1);
	ck_assert_int_eq(pidfile("alice"), first);

	/* Idle, it exits cleanly: no restart, no process, no pidfile. */
	wait_status("alice", "idle");
	ck_assert(!alive(first));
	ck_assert_int_eq(pidfile("alice"), 0);
	ck_assert_int_eq(supervise_next_reap_ms(), -1);

	/* The next client starts another on the same socket. */
	fd = knock("alice");
	wait_status("alice", "running");
	second = started("alice");
	ck_assert_int_ne(second, first);
	ck_assert_msg(readable(fd, 30000), "no greeting");
	close(fd);
	ck_assert_int_eq(stat(path, &after), 0);
	ck_assert_uint_eq(before.st_ino, after.st_ino);
	ck_assert_int_eq(read_through("alice"), 0xa1);

	/* Adopted by the next daemon, with an idle time of its own, it exits once idle
	 * by its own, begun under the daemon before: an idle exit too, not a death to
	 * restart from. */
	supervise_shutdown();
	cfg.idle_s = 60;
	ck_assert_int_eq(supervise_init(&cfg), 0);
	ck_assert_int_eq(supervise_start_tenant("alice", ALICE_UID, ALICE_UID, SOCK_UID, SOCK_GID),
	                 0);
	ck_assert_int_eq(pidfile("alice"), second);
	while (alive(second))
		usleep(10000);
	supervise_reap();
	ck_assert_str_eq(supervise_status("alice"), "idle");
	ck_assert_int_eq(supervise_next_reap_ms(), -1);
	ck_assert_int_eq(pidfile("alice"), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("supervise");
	TCase *tc = tcase_create("supervise");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, starts_one_unprivileged_nbdkit_per_tenant);
	tcase_add_test(tc, never_runs_nbdkit_as_root);
	tcase_add_test(tc, restarts_a_killed_nbdkit_on_the_same_socket);
	tcase_add_test(tc, backs_off_while_nbdkit_keeps_dying);
	tcase_add_test(tc, turns_clients_away_while_nbdkit_cannot_start);
	tcase_add_test(tc, loads_a_plugin_no_tenant_uid_could_read);
	tcase_add_test(tc, runs_nbdkit_with_its_resource_limits);
	tcase_add_test(tc, says_when_the_next_restart_is_due);
	tcase_add_test(tc, leaves_nbdkit_running_and_adopts_it_after_a_restart);
	tcase_add_test(tc, nbdkit_outlives_a_killed_supervisor);
	tcase_add_test(tc, replaces_an_nbdkit_left_with_another_uid);
	tcase_add_test(tc, stops_nbdkit_and_removes_its_socket);
	tcase_add_test(tc, refuses_a_missing_nbdkit);
	tcase_add_test(tc, starts_nbdkit_for_the_first_client_and_again_after_it_exits_idle);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
