/* The broker (daemon/broker.c) and the nbdkit plugin together, on any host: a real nbdkit
 * loads $TP_BUILD/nbdkit-thinproxy-plugin.so, which asks the real broker, which answers
 * from the stand-in ops_* below and hands over regular files instead of thin devices.
 * Clients are libnbd, as nbdinfo, nbdcopy and qemu are. */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <libnbd.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
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
#include "tp-broker.h"
#include "tp-cleanup.h"
#include "nbdkit-harness.h"

#define KiB        (UINT64_C(1) << 10)
#define MiB        (UINT64_C(1) << 20)
#define BLOCK_SIZE (64 * KiB)

/* The exports of tenant "alice", the only tenant: its nbdkit runs as our uid. */
static const struct {
	const char *ref, *file, *state;
	uint64_t size;
	bool writable;
} exports[] = {
    {"vol1", "vol1.img", "ready", 4 * MiB, true},
    {"committed", "committed.img", "committed", 1 * MiB, false},
    {"images/base", "base.img", "image", 2 * MiB, false},
};

static char dir[] = "/tmp/tp-plugin-broker.XXXXXX";
static char broker_sock[128], nbd_sock[128];
static int extra_exports; /* LIST answers this many more, "extra-N", unopenable */
static pid_t nbdkit_pid = -1;
/* A second tenant, "mallory", whose nbdkit runs as this uid ((uid_t)-1: none). Its
 * listing is the longest the broker sends, more than a socket buffer holds. */
static uid_t mallory_uid = (uid_t)-1;

/* The stand-in ops: what broker.c asks the daemon. */

int ops_principal_for_nbd_uid(uid_t uid, struct principal *ret_principal)
{
	if (uid == mallory_uid) {
		memset(ret_principal, 0, sizeof *ret_principal);
		ret_principal->tenant_id = 2;
		strcpy(ret_principal->tenant, "mallory");
		return 0;
	}
	if (uid != getuid())
		return -ENOENT;
	memset(ret_principal, 0, sizeof *ret_principal);
	ret_principal->tenant_id = 1;
	strcpy(ret_principal->tenant, "alice");
	return 0;
}

/* What the last open asked the broker for: 1 write, 0 read, -1 nothing yet; 1 direct
 * I/O, 0 buffered, -1 nothing yet. */
static atomic_int last_want_write = -1;
static atomic_int last_direct = -1;
/* Did the last direct open get an O_DIRECT fd? Not where the test's directory refuses
 * O_DIRECT (tmpfs: EINVAL); the file is then served buffered, as the plugin may. */
static atomic_bool last_direct_took;

int ops_open_export(const struct principal *p, const char *ref, bool want_write, bool direct,
                    struct export_info *ret_info)
{
	char path[256];
	int fd;

	ck_assert_str_eq(p->tenant, "alice");
	last_want_write = want_write;
	last_direct = direct;
	for (size_t i = 0; i < ARRAY_SIZE(exports); i++) {
		if (strcmp(ref, exports[i].ref) != 0)
			continue;
		if (want_write && !exports[i].writable)
			return -EROFS;
		snprintf(path, sizeof path, "%s/%s", dir, exports[i].file);
		fd = open(path,
		          (want_write ? O_RDWR : O_RDONLY) | (direct ? O_DIRECT : 0) | O_CLOEXEC);
		last_direct_took = fd >= 0 && direct;
		if (fd < 0 && direct && errno == EINVAL)
			fd = open(path, (want_write ? O_RDWR : O_RDONLY) | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		memset(ret_info, 0, sizeof *ret_info);
		strcpy(ret_info->name, ref);
		ret_info->size = exports[i].size;
		ret_info->writable = exports[i].writable;
		ret_info->state = exports[i].state;
		return fd;
	}
	return -ENOENT;
}

int ops_list_exports(const struct principal *p, struct export_info **ret_exports, size_t *ret_n)
{
	size_t n = ARRAY_SIZE(exports) + (size_t)extra_exports, i;
	struct export_info *ex;

	if (strcmp(p->tenant, "mallory") == 0)
		n = TP_BROKER_LIST_MAX;
	ex = calloc(n, sizeof *ex);
	ck_assert_ptr_nonnull(ex);
	for (i = 0; i < n; i++) {
		if (i < ARRAY_SIZE(exports)) {
			strcpy(ex[i].name, exports[i].ref);
			ex[i].size = exports[i].size;
			ex[i].writable = exports[i].writable;
			ex[i].state = exports[i].state;
		} else {
			snprintf(ex[i].name, sizeof ex[i].name, "extra-%zu", i);
			ex[i].size = MiB;
			ex[i].state = "ready";
		}
	}
	*ret_exports = ex;
	*ret_n = n;
	return 0;
}

/* What the stand-in pool has mapped of vol1 (of the other exports: all), or the error a
 * MAP is answered with (0: none). */
static struct export_range *vol1_map;
static size_t vol1_map_n;
static int map_error;
/* While map_hold is set, a MAP waits, after posting map_entered, for map_release. */
static bool map_hold;
static sem_t map_entered, map_release;

int ops_map_export(const struct principal *p, const char *ref, struct export_range **ret_ranges,
                   size_t *ret_n, uint64_t *ret_size)
{
	struct export_range *r;
	size_t i, n;

	ck_assert_str_eq(p->tenant, "alice");
	for (i = 0; i < ARRAY_SIZE(exports) && strcmp(ref, exports[i].ref) != 0; i++)
		;
	if (i == ARRAY_SIZE(exports))
		return -ENOENT;
	if (map_error)
		return -map_error;
	if (map_hold) {
		sem_post(&map_entered);
		sem_wait(&map_release);
	}
	n = i == 0 ? vol1_map_n : 1;
	r = calloc(n ? n : 1, sizeof *r);
	ck_assert_ptr_nonnull(r);
	if (i == 0)
		memcpy(r, vol1_map, n * sizeof *r);
	else
		r[0] = (struct export_range){0, exports[i].size};
	*ret_ranges = r;
	*ret_n = n;
	*ret_size = exports[i].size;
	return 0;
}

int ops_pool_status(struct pool_view *ret_view)
{
	memset(ret_view, 0, sizeof *ret_view);
	ret_view->block_size = BLOCK_SIZE;
	return 0;
}

static void write_file(const char *name, uint64_t size, int fill)
{
	char path[256], *buf = malloc(size);
	int fd;

	ck_assert_ptr_nonnull(buf);
	memset(buf, fill, size);
	snprintf(path, sizeof path, "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, buf, size), (ssize_t)size);
	close(fd);
	free(buf);
}

/* Is a socket listening on PATH? Its file appears at bind(), before listen(), so the
 * file alone does not say that a connect would succeed. */
static bool listening(const char *path)
{
	FILE *f = fopen("/proc/net/unix", "re");
	char line[512], name[256];
	unsigned flags;
	bool found = false;

	ck_assert_ptr_nonnull(f);
	while (!found && fgets(line, sizeof line, f))
		/* Num RefCount Protocol Flags Type St Inode Path; __SO_ACCEPTCON is 1 << 16. */
		found = sscanf(line, "%*s %*s %*s %x %*s %*s %*s %255s", &flags, name) == 2 &&
		        (flags & (1u << 16)) && strcmp(name, path) == 0;
	fclose(f);
	return found;
}

/* vol1's map as the stand-in pool has it: data at [0, 64K), [256K, 512K), [1M, 1M+64K)
 * and the last 64K, holes elsewhere. Only a description: the file behind it stays all
 * data, which the tests of zero and trim need, and nothing reads those holes. */
static const struct export_range vol1_blocks[] = {
    {0, 64 * KiB}, {256 * KiB, 256 * KiB}, {1 * MiB, 64 * KiB}, {4 * MiB - 64 * KiB, 64 * KiB}};

static void map_vol1(void)
{
	vol1_map_n = ARRAY_SIZE(vol1_blocks);
	vol1_map = malloc(sizeof vol1_blocks);
	ck_assert_ptr_nonnull(vol1_map);
	memcpy(vol1_map, vol1_blocks, sizeof vol1_blocks);
}

static void setup(void)
{
	const char *build = getenv("TP_BUILD") ? getenv("TP_BUILD") : "build";
	char plugin[512], broker_arg[160];
	const char *nbdkit;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(chmod(dir, 0711), 0); /* reachable by a second uid */
	snprintf(broker_sock, sizeof broker_sock, "%s/private/broker.sock", dir);
	snprintf(nbd_sock, sizeof nbd_sock, "%s/nbd.sock", dir);
	write_file("vol1.img", 4 * MiB, 0xa1);
	write_file("committed.img", 1 * MiB, 0xc0);
	write_file("base.img", 2 * MiB, 0xba);
	map_vol1();
	ck_assert_int_eq(sem_init(&map_entered, 0, 0), 0);
	ck_assert_int_eq(sem_init(&map_release, 0, 0), 0);
	harness_broker_start(broker_sock);

	snprintf(plugin, sizeof plugin, "%s/nbdkit-thinproxy-plugin.so", build);
	snprintf(broker_arg, sizeof broker_arg, "broker=%s", broker_sock);
	ck_assert_msg(access(plugin, R_OK) == 0, "%s is missing (make it first)", plugin);
	nbdkit = harness_nbdkit_program(dir);
	nbdkit_pid = fork();
	ck_assert_int_ge(nbdkit_pid, 0);
	if (nbdkit_pid == 0) {
		execlp(nbdkit, nbdkit, "-f", "--exit-with-parent", "-U", nbd_sock, plugin,
		       "tenant=alice", broker_arg, (char *)NULL);
		_exit(127);
	}
	/* Bounded by a hang, not by how fast a loaded machine starts nbdkit. */
	for (int i = 0; i < 3000 && !listening(nbd_sock); i++)
		usleep(10000);
	ck_assert_msg(listening(nbd_sock), "nbdkit never listened on %s", nbd_sock);
}

static void teardown(void)
{
	char cmd[256];

	if (nbdkit_pid > 0) {
		/* A sanitized nbdkit can hang in its exit handlers (libp11-kit's, with the
		 * preloaded runtime): SIGTERM, then SIGKILL after a while. */
		kill(nbdkit_pid, SIGTERM);
		for (int i = 0; i < 500 && waitpid(nbdkit_pid, NULL, WNOHANG) == 0; i++)
			usleep(10000);
		if (kill(nbdkit_pid, SIGKILL) == 0)
			waitpid(nbdkit_pid, NULL, 0);
	}
	if (harness_broker_running())
		harness_broker_stop();
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
	free(vol1_map);
}

/* Clients. */

static struct nbd_handle *connect_export(const char *name)
{
	struct nbd_handle *h = nbd_create();

	ck_assert_ptr_nonnull(h);
	ck_assert_int_eq(nbd_set_export_name(h, name), 0);
	ck_assert_int_eq(nbd_set_full_info(h, true), 0);
	ck_assert_int_eq(nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION), 0);
	ck_assert_msg(nbd_connect_unix(h, nbd_sock) == 0, "connect %s: %s", name, nbd_get_error());
	return h;
}

/* Connecting to NAME must fail; returns the errno libnbd reports. */
static int connect_fails(const char *name)
{
	struct nbd_handle *h = nbd_create();
	int err;

	ck_assert_ptr_nonnull(h);
	ck_assert_int_eq(nbd_set_export_name(h, name), 0);
	ck_assert_msg(nbd_connect_unix(h, nbd_sock) < 0, "connected to \"%s\"", name);
	err = nbd_get_errno();
	nbd_close(h);
	return err;
}

struct listing {
	int n;
	char names[8][TP_BROKER_REF_SIZE];
	char descriptions[8][128];
};

static int collect(void *opaque, const char *name, const char *description)
{
	struct listing *l = opaque;

	if (l->n < 8) {
		snprintf(l->names[l->n], sizeof l->names[0], "%s", name);
		snprintf(l->descriptions[l->n], sizeof l->descriptions[0], "%s", description);
	}
	l->n++;
	return 0;
}

/* The file behind export I, read directly. */
static void read_backing(size_t i, void *buf, size_t count, uint64_t offset)
{
	char path[256];
	int fd;

	snprintf(path, sizeof path, "%s/%s", dir, exports[i].file);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, buf, count, (off_t)offset), (ssize_t)count);
	close(fd);
}

/* Is [OFFSET, OFFSET+LEN) of vol1's file a hole (unmapped, as a discarded thin block)? */
static bool is_hole(uint64_t offset, uint64_t len)
{
	char path[256];
	off_t data;
	int fd;

	snprintf(path, sizeof path, "%s/vol1.img", dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	data = lseek(fd, (off_t)offset, SEEK_DATA);
	close(fd);
	return data < 0 || (uint64_t)data >= offset + len;
}

static bool all_bytes(const char *buf, size_t n, int c)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)buf[i] != (unsigned char)c)
			return false;
	return true;
}

START_TEST(lists_exactly_what_the_broker_answers)
{
	struct nbd_handle *h = nbd_create();
	struct listing l = {0};

	ck_assert_int_eq(nbd_set_opt_mode(h, true), 0);
	ck_assert_int_eq(nbd_connect_unix(h, nbd_sock), 0);
	ck_assert_int_eq(nbd_opt_list(h, (nbd_list_callback){.callback = collect, .user_data = &l}),
	                 3);
	ck_assert_int_eq(l.n, 3);
	ck_assert_str_eq(l.names[0], "vol1");
	ck_assert_str_eq(l.names[1], "committed");
	ck_assert_str_eq(l.names[2], "images/base");
	ck_assert_str_eq(l.descriptions[0], "ready, 4M (4194304 bytes), read-write");
	ck_assert_str_eq(l.descriptions[1], "committed, 1M (1048576 bytes), read-only");
	ck_assert_str_eq(l.descriptions[2], "image, 2M (2097152 bytes), read-only");
	nbd_opt_abort(h);
	nbd_close(h);
}
END_TEST

START_TEST(bounds_a_long_listing)
{
	struct nbd_handle *h = nbd_create();
	struct listing l = {0};

	/* More packets than a socket buffer holds: the broker waits for the plugin to read,
	 * and stops at TP_BROKER_LIST_MAX. */
	extra_exports = TP_BROKER_LIST_MAX + 100;
	ck_assert_int_eq(nbd_set_opt_mode(h, true), 0);
	ck_assert_int_eq(nbd_connect_unix(h, nbd_sock), 0);
	ck_assert_int_eq(nbd_opt_list(h, (nbd_list_callback){.callback = collect, .user_data = &l}),
	                 TP_BROKER_LIST_MAX);
	ck_assert_int_eq(l.n, TP_BROKER_LIST_MAX);
	nbd_opt_abort(h);
	nbd_close(h);
}
END_TEST

START_TEST(has_no_default_export)
{
	ck_assert_int_eq(connect_fails(""), ENOENT);
}
END_TEST

START_TEST(refuses_everything_else_like_a_missing_name)
{
	static const char *names[] = {"nope",  "bob/vol1", "../x", "a/b/c",  "VOL1",   "vol1/",
	                              "/vol1", "images/",  "7",    "vol1\n", "extra-4"};
	char *long_name = malloc(4097);

	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		ck_assert_msg(connect_fails(names[i]) == ENOENT, "%s", names[i]);
	memset(long_name, 'a', 4096);
	long_name[4096] = '\0';
	ck_assert_int_eq(connect_fails(long_name), ENOENT);
	free(long_name);
}
END_TEST

START_TEST(reads_and_writes_through_the_brokered_fd)
{
	struct nbd_handle *h = connect_export("vol1");
	char buf[8192], back[8192];
	char *desc;

	ck_assert_int_eq(nbd_get_size(h), 4 * MiB);
	ck_assert_int_eq(nbd_is_read_only(h), 0);
	ck_assert_int_eq(nbd_can_multi_conn(h), 1);
	ck_assert_int_eq(nbd_can_fua(h), 1);
	ck_assert_int_eq(nbd_can_flush(h), 1);
	ck_assert_int_eq(nbd_can_trim(h), 1);
	ck_assert_int_eq(nbd_can_zero(h), 1);
	ck_assert_int_eq(nbd_can_fast_zero(h), 1);
	ck_assert_int_eq(nbd_can_cache(h), 1);
	ck_assert_int_eq(nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION), 1);
	ck_assert_int_eq(nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM), 1);
	ck_assert_int_eq(nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED), BLOCK_SIZE);
	ck_assert_int_eq(nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM), 32 * MiB);
	desc = nbd_get_export_description(h);
	ck_assert_str_eq(desc, "ready, 4M (4194304 bytes), read-write");
	free(desc);

	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (char)(i * 7 + 3);
	ck_assert_int_eq(nbd_pwrite(h, buf, sizeof buf, 100000, 0), 0);
	ck_assert_int_eq(nbd_pwrite(h, buf, 4096, 4 * MiB - 4096, LIBNBD_CMD_FLAG_FUA), 0);
	ck_assert_int_eq(nbd_flush(h, 0), 0);
	ck_assert_int_eq(nbd_pread(h, back, sizeof back, 100000, 0), 0);
	ck_assert_mem_eq(back, buf, sizeof buf);
	read_backing(0, back, sizeof back, 100000);
	ck_assert_mem_eq(back, buf, sizeof buf);
	read_backing(0, back, 4096, 4 * MiB - 4096);
	ck_assert_mem_eq(back, buf, 4096);
	ck_assert_int_eq(nbd_cache(h, MiB, 0, 0), 0);
	ck_assert_int_eq(nbd_shutdown(h, 0), 0);
	nbd_close(h);
}
END_TEST

START_TEST(serves_read_only_volumes_read_only)
{
	struct nbd_handle *h = connect_export("committed");
	char buf[4096];
	char *desc;

	/* The broker refuses a read-write open (EROFS); the plugin then opens read-only. */
	ck_assert_int_eq(nbd_is_read_only(h), 1);
	ck_assert_int_eq(nbd_pread(h, buf, sizeof buf, 0, 0), 0);
	ck_assert(all_bytes(buf, sizeof buf, 0xc0));
	ck_assert_int_eq(nbd_pwrite(h, buf, sizeof buf, 0, 0), -1);
	ck_assert_int_eq(nbd_get_errno(), EPERM);
	desc = nbd_get_export_description(h);
	ck_assert_str_eq(desc, "committed, 1M (1048576 bytes), read-only");
	free(desc);
	nbd_close(h);

	h = connect_export("images/base");
	ck_assert_int_eq(nbd_is_read_only(h), 1);
	ck_assert_int_eq(nbd_pread(h, buf, sizeof buf, MiB, 0), 0);
	ck_assert(all_bytes(buf, sizeof buf, 0xba));
	nbd_close(h);
}
END_TEST

START_TEST(opens_a_writable_volume_read_only_when_asked)
{
	static const char *names[] = {"ro:",      "ro:nope",  "ro:ro:vol1", "RO:vol1",
	                              "ro:/vol1", "ro:vol1/", "rw:vol1"};
	struct nbd_handle *h;
	char buf[4096];

	/* "ro:" asks the broker for a read-only fd of a volume the tenant could write. */
	last_want_write = -1;
	h = connect_export("ro:vol1");
	ck_assert_int_eq(last_want_write, 0);
	ck_assert_int_eq(nbd_is_read_only(h), 1);
	ck_assert_int_eq(nbd_can_trim(h), 0);
	ck_assert_int_eq(nbd_pread(h, buf, sizeof buf, 0, 0), 0);
	ck_assert_int_eq(nbd_pwrite(h, buf, sizeof buf, 0, 0), -1);
	ck_assert_int_eq(nbd_get_errno(), EPERM);
	nbd_close(h);

	/* The plain name still opens read-write. */
	h = connect_export("vol1");
	ck_assert_int_eq(last_want_write, 1);
	ck_assert_int_eq(nbd_is_read_only(h), 0);
	nbd_close(h);

	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		ck_assert_msg(connect_fails(names[i]) == ENOENT, "%s", names[i]);
}
END_TEST

START_TEST(serves_a_direct_export_at_any_byte_offset)
{
	struct nbd_handle *h, *buffered;
	char buf[9000], back[9000], zeroes[700] = {0};
	int64_t min;

	last_direct = -1;
	h = connect_export("direct:vol1");
	ck_assert_int_eq(last_direct, 1);
	ck_assert_int_eq(last_want_write, 1);
	ck_assert_int_eq(nbd_is_read_only(h), 0);
	min = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
	if (last_direct_took) {
		/* The file's block (st_blksize) stands in for the device's logical block. */
		ck_assert_int_ge(min, 512);
		ck_assert_int_eq(min & (min - 1), 0);
		ck_assert_int_eq(nbd_can_cache(h), 0);
	} else {
		ck_assert_int_eq(min, 1);
	}
	ck_assert_int_ge(nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED), min);
	/* A client that does not keep to the minimum still gets every byte right. */
	ck_assert_int_eq(nbd_set_strict_mode(h, nbd_get_strict_mode(h) & ~LIBNBD_STRICT_ALIGN), 0);
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (char)(i * 13 + 5);
	ck_assert_int_eq(nbd_pwrite(h, buf, sizeof buf, 100001, 0), 0);
	ck_assert_int_eq(nbd_pwrite(h, buf, 1, 4 * MiB - 1, LIBNBD_CMD_FLAG_FUA), 0);
	ck_assert_int_eq(nbd_zero(h, sizeof zeroes, 100001 + 1000, 0), 0);
	memset(buf + 1000, 0, sizeof zeroes);
	ck_assert_int_eq(nbd_flush(h, 0), 0);
	ck_assert_int_eq(nbd_pread(h, back, sizeof back, 100001, 0), 0);
	ck_assert_mem_eq(back, buf, sizeof buf);
	ck_assert_int_eq(nbd_pread(h, back, 1, 4 * MiB - 1, 0), 0);
	ck_assert_int_eq(back[0], buf[0]);
	read_backing(0, back, sizeof back, 100001);
	ck_assert_mem_eq(back, buf, sizeof buf);

	/* A buffered connection to the same volume sees the same bytes. */
	buffered = connect_export("vol1");
	ck_assert_int_eq(last_direct, 0);
	ck_assert_int_eq(nbd_pread(buffered, back, sizeof back, 100001, 0), 0);
	ck_assert_mem_eq(back, buf, sizeof buf);
	nbd_close(buffered);
	nbd_close(h);

	/* Both prefixes, in their one order. */
	h = connect_export("direct:ro:vol1");
	ck_assert_int_eq(last_direct, 1);
	ck_assert_int_eq(last_want_write, 0);
	ck_assert_int_eq(nbd_is_read_only(h), 1);
	nbd_close(h);
	ck_assert_int_eq(connect_fails("ro:direct:vol1"), ENOENT);
	ck_assert_int_eq(connect_fails("direct:direct:vol1"), ENOENT);
	ck_assert_int_eq(connect_fails("direct:"), ENOENT);
}
END_TEST

START_TEST(zeroes_whole_blocks_by_unmapping_them)
{
	struct nbd_handle *h = connect_export("vol1");
	char buf[512 * 1024];

	/* [60K, 200K) may be trimmed: the blocks [64K, 192K) are unmapped, the edges
	 * written. */
	ck_assert_int_eq(nbd_zero(h, 140 * KiB, 60 * KiB, 0), 0);
	ck_assert_int_eq(nbd_flush(h, 0), 0);
	read_backing(0, buf, 256 * KiB, 0);
	ck_assert(all_bytes(buf, 60 * KiB, 0xa1));
	ck_assert(all_bytes(buf + 60 * KiB, 140 * KiB, 0));
	ck_assert(all_bytes(buf + 200 * KiB, 56 * KiB, 0xa1));
	ck_assert(is_hole(64 * KiB, 128 * KiB));

	/* Without may-trim (NO_HOLE) the zeroes are written, never a hole. */
	ck_assert_int_eq(nbd_zero(h, 64 * KiB, 256 * KiB, LIBNBD_CMD_FLAG_NO_HOLE), 0);
	read_backing(0, buf, 64 * KiB, 256 * KiB);
	ck_assert(all_bytes(buf, 64 * KiB, 0));

	/* Unaligned to the sector: nbdkit falls back to writing zeroes. */
	ck_assert_int_eq(nbd_zero(h, 1000, 1 * MiB + 100, 0), 0);
	read_backing(0, buf, 2000, 1 * MiB);
	ck_assert(all_bytes(buf, 100, 0xa1));
	ck_assert(all_bytes(buf + 100, 1000, 0));
	ck_assert(all_bytes(buf + 1100, 900, 0xa1));
	nbd_close(h);
}
END_TEST

START_TEST(fast_zero_only_for_whole_blocks)
{
	struct nbd_handle *h = connect_export("vol1");
	char buf[128 * 1024];

	/* Not whole blocks, or not allowed to trim: refused at once, nothing changed. */
	ck_assert_int_eq(nbd_zero(h, 64 * KiB, 2 * MiB + 512, LIBNBD_CMD_FLAG_FAST_ZERO), -1);
	ck_assert_int_eq(nbd_get_errno(), ENOTSUP);
	ck_assert_int_eq(
	    nbd_zero(h, 64 * KiB, 2 * MiB, LIBNBD_CMD_FLAG_FAST_ZERO | LIBNBD_CMD_FLAG_NO_HOLE),
	    -1);
	ck_assert_int_eq(nbd_get_errno(), ENOTSUP);
	read_backing(0, buf, sizeof buf, 2 * MiB);
	ck_assert(all_bytes(buf, sizeof buf, 0xa1));

	ck_assert_int_eq(nbd_zero(h, 128 * KiB, 2 * MiB, LIBNBD_CMD_FLAG_FAST_ZERO), 0);
	read_backing(0, buf, sizeof buf, 2 * MiB);
	ck_assert(all_bytes(buf, sizeof buf, 0));
	ck_assert(is_hole(2 * MiB, 128 * KiB));
	nbd_close(h);
}
END_TEST

START_TEST(trims_by_unmapping)
{
	struct nbd_handle *h = connect_export("vol1");

	ck_assert(!is_hole(3 * MiB, 256 * KiB));
	ck_assert_int_eq(nbd_trim(h, 256 * KiB, 3 * MiB, LIBNBD_CMD_FLAG_FUA), 0);
	ck_assert(is_hole(3 * MiB, 256 * KiB));
	/* Sub-sector edges are left alone, not refused. */
	ck_assert_int_eq(nbd_trim(h, 1000, 100, 0), 0);
	nbd_close(h);
}
END_TEST

/* Block status. */

/* What block status says, as "d0+64 h64+192 ...": data or a hole that reads as zeroes
 * ('?' for anything else), then offset and length in KiB. The last extent may reach past
 * the range asked for, as nbdkit passes on what the plugin says. */
struct status {
	char text[512];
	size_t len;
};

static int collect_status(void *opaque, const char *metacontext, uint64_t offset, uint32_t *entries,
                          size_t nr_entries, int *error)
{
	struct status *st = opaque;

	(void)error;
	if (strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
		return 0;
	for (size_t i = 0; i + 1 < nr_entries; i += 2) {
		char kind = entries[i + 1] == 0                                         ? 'd'
		            : entries[i + 1] == (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO) ? 'h'
		                                                                        : '?';

		ck_assert_uint_eq(offset % KiB, 0);
		ck_assert_uint_eq(entries[i] % KiB, 0);
		st->len += (size_t)snprintf(st->text + st->len, sizeof st->text - st->len,
		                            "%s%c%" PRIu64 "+%" PRIu32, st->len ? " " : "", kind,
		                            offset / KiB, entries[i] / (uint32_t)KiB);
		ck_assert_uint_lt(st->len, sizeof st->text);
		offset += entries[i];
	}
	return 0;
}

/* Block status of COUNT bytes at OFFSET on H with FLAGS, as collect_status writes it. */
static struct status status_of(struct nbd_handle *h, uint64_t count, uint64_t offset,
                               uint32_t flags)
{
	struct status st = {.len = 0};

	ck_assert_msg(
	    nbd_block_status(h, count, offset,
	                     (nbd_extent_callback){.callback = collect_status, .user_data = &st},
	                     flags) == 0,
	    "block status %" PRIu64 "+%" PRIu64 ": %s", offset, count, nbd_get_error());
	return st;
}

#define ck_assert_status(h, count, offset, flags, want) \
	ck_assert_str_eq(status_of(h, count, offset, flags).text, want)

/* vol1's whole map as the stand-in pool has it. */
#define VOL1_MAP "d0+64 h64+192 d256+256 h512+512 d1024+64 h1088+2944 d4032+64"

START_TEST(reports_the_pools_map_as_data_and_holes)
{
	struct nbd_handle *h = connect_export("vol1");

	ck_assert_status(h, 4 * MiB, 0, 0, VOL1_MAP);
	/* Within a range, and only the first extent when the client asks for one. */
	ck_assert_status(h, 64 * KiB, 300 * KiB, 0, "d300+212");
	ck_assert_status(h, 2 * MiB, 100 * KiB, LIBNBD_CMD_FLAG_REQ_ONE, "h100+156");
	ck_assert_status(h, 4 * KiB, 4 * MiB - 4 * KiB, LIBNBD_CMD_FLAG_REQ_ONE, "d4092+4");
	nbd_close(h);

	/* A read-only name of the same volume gets the same map; a committed volume (all
	 * of it mapped, as the stand-in has it) is data throughout. */
	h = connect_export("ro:vol1");
	ck_assert_status(h, 4 * MiB, 0, 0, VOL1_MAP);
	nbd_close(h);
	h = connect_export("committed");
	ck_assert_status(h, 1 * MiB, 0, 0, "d0+1024");
	nbd_close(h);
}
END_TEST

START_TEST(reports_its_own_writes_as_data_in_a_map_taken_before)
{
	struct nbd_handle *h = connect_export("vol1");
	char buf[4096] = {1};

	ck_assert_status(h, 4 * MiB, 0, 0, VOL1_MAP);
	/* The pool maps whole blocks: a write of 4K makes its 64K block data. */
	ck_assert_int_eq(nbd_pwrite(h, buf, sizeof buf, 2 * MiB + 100, 0), 0);
	ck_assert_status(h, 1 * MiB, 1 * MiB + 512 * KiB, 0, "h1536+512 d2048+64 h2112+1920");
	/* A write reaching into the next block makes both data, touching ranges joined. */
	ck_assert_int_eq(nbd_pwrite(h, buf, sizeof buf, 64 * KiB - 10, 0), 0);
	ck_assert_status(h, 256 * KiB, 0, 0, "d0+128 h128+128");
	/* Trim and zero are counted as writes: calling a block data is never wrong. */
	ck_assert_int_eq(nbd_trim(h, 64 * KiB, 3 * MiB, 0), 0);
	ck_assert_int_eq(nbd_zero(h, 4 * KiB, 3 * MiB + 256 * KiB, 0), 0);
	ck_assert_status(h, 512 * KiB, 3 * MiB, 0, "d3072+64 h3136+192 d3328+64 h3392+640");
	nbd_close(h);
}
END_TEST

START_TEST(reports_another_connections_writes_to_the_same_device)
{
	struct nbd_handle *h1 = connect_export("vol1"), *ro = connect_export("ro:vol1");
	struct nbd_handle *h2 = connect_export("vol1");
	char buf[4096] = {1};

	ck_assert_status(h1, 4 * MiB, 0, 0, VOL1_MAP);
	ck_assert_status(ro, 4 * MiB, 0, 0, VOL1_MAP);
	ck_assert_int_eq(nbd_pwrite(h2, buf, sizeof buf, 1536 * KiB, 0), 0);
	ck_assert_status(h1, 512 * KiB, 1 * MiB + 128 * KiB, 0, "h1152+384 d1536+64 h1600+2432");
	ck_assert_status(ro, 512 * KiB, 1 * MiB + 128 * KiB, 0, "h1152+384 d1536+64 h1600+2432");
	/* A later connection asks again: the stand-in pool, unlike a real one, still does
	 * not have the write, so that only its own writes show. */
	nbd_close(h2);
	h2 = connect_export("vol1");
	ck_assert_status(h2, 4 * MiB, 0, 0, VOL1_MAP);
	nbd_close(h2);
	nbd_close(ro);
	nbd_close(h1);
}
END_TEST

struct completion {
	bool done;
	int error;
};

static int status_completed(void *opaque, int *error)
{
	struct completion *c = opaque;

	c->done = true;
	c->error = *error;
	return 1;
}

START_TEST(counts_writes_made_while_the_map_is_on_its_way)
{
	struct nbd_handle *h1 = connect_export("vol1"), *h2 = connect_export("vol1");
	struct completion done = {false, 0};
	struct status st = {.len = 0};
	char buf[4096] = {1};

	/* h1's map is asked for, h2 writes into a hole, then the pool answers from before
	 * the write: h1 must still see the write. */
	map_hold = true;
	ck_assert_int_ge(
	    nbd_aio_block_status(
	        h1, 4 * MiB, 0, (nbd_extent_callback){.callback = collect_status, .user_data = &st},
	        (nbd_completion_callback){.callback = status_completed, .user_data = &done}, 0),
	    0);
	for (int i = 0; sem_trywait(&map_entered) < 0; i++) {
		ck_assert_msg(i < 3000, "the plugin never asked for the map");
		ck_assert_int_ge(nbd_poll(h1, 10), 0);
	}
	ck_assert_int_eq(nbd_pwrite(h2, buf, sizeof buf, 2 * MiB, 0), 0);
	map_hold = false;
	sem_post(&map_release);
	while (!done.done)
		ck_assert_int_ge(nbd_poll(h1, -1), 0);
	ck_assert_int_eq(done.error, 0);
	ck_assert_str_eq(st.text, "d0+64 h64+192 d256+256 h512+512 d1024+64 h1088+960 d2048+64 "
	                          "h2112+1920 d4032+64");
	nbd_close(h2);
	nbd_close(h1);
}
END_TEST

START_TEST(fails_block_status_when_the_broker_refuses_the_map)
{
	struct nbd_handle *h = connect_export("vol1");

	map_error = EIO;
	ck_assert_int_eq(
	    nbd_block_status(h, 4 * MiB, 0,
	                     (nbd_extent_callback){.callback = collect_status,
	                                           .user_data = &(struct status){.len = 0}},
	                     0),
	    -1);
	ck_assert_int_eq(nbd_get_errno(), EIO);
	/* Nothing is kept of a refusal: the next call asks again. */
	map_error = 0;
	ck_assert_status(h, 4 * MiB, 0, 0, VOL1_MAP);
	nbd_close(h);
}
END_TEST

START_TEST(reports_everything_as_data_while_the_pools_metadata_is_busy)
{
	struct nbd_handle *h = connect_export("vol1");

	/* Another tool holds the pool's metadata snapshot: all data (a copier would stop at
	 * a failed block status), and the next call asks again. */
	map_error = EBUSY;
	ck_assert_status(h, 4 * MiB, 0, 0, "d0+4096");
	map_error = 0;
	ck_assert_status(h, 4 * MiB, 0, 0, VOL1_MAP);
	nbd_close(h);
}
END_TEST

START_TEST(reports_everything_as_data_while_the_daemon_is_down)
{
	struct nbd_handle *h = connect_export("vol1");

	harness_broker_stop();
	ck_assert_status(h, 4 * MiB, 0, 0, "d0+4096");
	/* Nothing is kept either: once the daemon is back, its map is asked for. */
	harness_broker_start(broker_sock);
	ck_assert_status(h, 4 * MiB, 0, 0, VOL1_MAP);
	nbd_close(h);
}
END_TEST

/* A daemon from before MAP, on the broker's socket: it reads each request and hangs up,
 * as the old one does on a type it does not know. */
struct old_daemon {
	pthread_t thread;
	int fd;
	atomic_bool stop;
};

static void *serve_old_daemon(void *opaque)
{
	struct old_daemon *od = opaque;
	struct pollfd pfd = {.fd = od->fd, .events = POLLIN};

	while (!od->stop)
		if (poll(&pfd, 1, 50) > 0) {
			char buf[512];
			int c = accept4(od->fd, NULL, NULL, SOCK_CLOEXEC);

			if (c >= 0) {
				recv(c, buf, sizeof buf, 0);
				close(c);
			}
		}
	return NULL;
}

static void old_daemon_start(struct old_daemon *od)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	strcpy(sa.sun_path, broker_sock);
	unlink(broker_sock);
	od->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(od->fd, 0);
	ck_assert_int_eq(bind(od->fd, (struct sockaddr *)&sa, sizeof sa), 0);
	ck_assert_int_eq(listen(od->fd, 8), 0);
	od->stop = false;
	ck_assert_int_eq(pthread_create(&od->thread, NULL, serve_old_daemon, od), 0);
}

static void old_daemon_stop(struct old_daemon *od)
{
	od->stop = true;
	pthread_join(od->thread, NULL);
	close(od->fd);
}

START_TEST(reports_everything_as_data_to_a_daemon_without_map)
{
	struct nbd_handle *h = connect_export("vol1");
	struct old_daemon od;

	harness_broker_stop();
	old_daemon_start(&od);
	ck_assert_status(h, 4 * MiB, 0, 0, "d0+4096");
	old_daemon_stop(&od);
	/* The connection keeps the answer; a new one asks the new daemon. */
	harness_broker_start(broker_sock);
	ck_assert_status(h, 4 * MiB, 0, 0, "d0+4096");
	nbd_close(h);
	h = connect_export("vol1");
	ck_assert_status(h, 4 * MiB, 0, 0, VOL1_MAP);
	nbd_close(h);
}
END_TEST

START_TEST(keeps_serving_open_connections_while_the_daemon_is_down)
{
	struct nbd_handle *h = connect_export("vol1");
	char buf[4096] = {1, 2, 3}, back[4096];

	harness_broker_stop();
	/* Open connections go on; new ones fail (like a missing name, to the client). */
	ck_assert_int_eq(nbd_pwrite(h, buf, sizeof buf, 0, LIBNBD_CMD_FLAG_FUA), 0);
	ck_assert_int_eq(nbd_pread(h, back, sizeof back, 0, 0), 0);
	ck_assert_mem_eq(back, buf, sizeof buf);
	ck_assert_int_eq(connect_fails("vol1"), ENOENT);

	/* A restarted daemon replaces its stale socket; nbdkit needs no restart. */
	harness_broker_start(broker_sock);
	nbd_close(h);
	h = connect_export("vol1");
	ck_assert_int_eq(nbd_pread(h, back, sizeof back, 0, 0), 0);
	ck_assert_mem_eq(back, buf, sizeof buf);
	nbd_close(h);
}
END_TEST

/* Raw broker clients, as a compromised nbdkit could be. */

static int broker_connect(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	/* A broker that never answers nor closes is the hang these clients catch. */
	struct timeval tv = {.tv_sec = 30};
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	strcpy(sa.sun_path, broker_sock);
	ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	return fd;
}

/* Send LEN bytes of BUF (with our stdin's fd attached if PASS_FD) and return what the
 * broker answers: the first packet's length, 0 if it just closed. */
static ssize_t ask_raw(const void *buf, size_t len, bool pass_fd)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} control = {0};
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	char reply[512];
	int fd = broker_connect(), zero = 0;
	ssize_t n;

	if (pass_fd) {
		struct cmsghdr *c;

		msg.msg_control = control.buf;
		msg.msg_controllen = sizeof control.buf;
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &zero, sizeof zero);
	}
	ck_assert_int_eq(sendmsg(fd, &msg, MSG_NOSIGNAL), (ssize_t)len);
	n = recv(fd, reply, sizeof reply, 0);
	close(fd);
	return n;
}

START_TEST(asks_the_operations_for_direct_io_only_when_the_request_does)
{
	struct tp_broker_request req;

	last_direct = -1;
	tp_broker_encode_open("vol1", TP_BROKER_WANT_WRITE | TP_BROKER_WANT_DIRECT, &req);
	ck_assert_int_eq(ask_raw(&req, sizeof req, false), sizeof(struct tp_broker_reply));
	ck_assert_int_eq(last_direct, 1);
	ck_assert_int_eq(last_want_write, 1);
	tp_broker_encode_open("committed", TP_BROKER_WANT_DIRECT, &req);
	ck_assert_int_eq(ask_raw(&req, sizeof req, false), sizeof(struct tp_broker_reply));
	ck_assert_int_eq(last_direct, 1);
	ck_assert_int_eq(last_want_write, 0);
	tp_broker_encode_open("vol1", TP_BROKER_WANT_WRITE, &req);
	ck_assert_int_eq(ask_raw(&req, sizeof req, false), sizeof(struct tp_broker_reply));
	ck_assert_int_eq(last_direct, 0);
}
END_TEST

START_TEST(closes_the_connection_on_a_malformed_request)
{
	struct tp_broker_request req;
	char big[sizeof req + 1] = {0};

	tp_broker_encode_open("vol1", true, &req);
	ck_assert_int_eq(ask_raw(&req, sizeof req, false), sizeof(struct tp_broker_reply));

	ck_assert_int_eq(ask_raw(&req, 3, false), 0);
	ck_assert_int_eq(ask_raw(&req, sizeof req - 1, false), 0);
	memcpy(big, &req, sizeof req);
	ck_assert_int_eq(ask_raw(big, sizeof big, false), 0);
	ck_assert_int_eq(ask_raw(&req, sizeof req, true), 0);
	req.h.type = TP_BROKER_OPENED;
	ck_assert_int_eq(ask_raw(&req, sizeof req, false), 0);
	tp_broker_encode_open("vol1", true, &req);
	memcpy(req.ref, "../x", 5);
	ck_assert_int_eq(ask_raw(&req, sizeof req, false), 0);
	tp_broker_encode_open("vol1", true, &req);
	req.flags = 0x80;
	ck_assert_int_eq(ask_raw(&req, sizeof req, false), 0);
	tp_broker_encode_map("vol1", &req);
	ck_assert_int_eq(ask_raw(&req, sizeof req, false), sizeof(struct tp_broker_reply));
	req.flags = TP_BROKER_WANT_WRITE;
	ck_assert_int_eq(ask_raw(&req, sizeof req, false), 0);
}
END_TEST

START_TEST(joins_the_closest_ranges_of_a_map_too_long_for_the_wire)
{
	const size_t n = TP_BROKER_MAP_MAX + 4000;
	char buf[sizeof(struct tp_broker_ranges) + 1];
	struct tp_broker_map_cursor cursor;
	struct tp_broker_request req;
	struct tp_broker_reply rep;
	struct tp_broker_ranges p;
	size_t k = 0;
	int fd;

	/* 16-byte ranges 32 bytes apart, every tenth 8 bytes longer: the gaps after those,
	 * the narrowest, go. */
	free(vol1_map);
	vol1_map = calloc(n, sizeof *vol1_map);
	ck_assert_ptr_nonnull(vol1_map);
	for (size_t i = 0; i < n; i++)
		vol1_map[i] = (struct export_range){i * 32, i % 10 ? 16 : 24};
	vol1_map_n = n;
	tp_broker_encode_map("vol1", &req);
	fd = broker_connect();
	ck_assert_int_eq(send(fd, &req, sizeof req, MSG_NOSIGNAL), sizeof req);
	ck_assert_int_eq(recv(fd, buf, sizeof buf, 0), sizeof rep);
	ck_assert_int_eq(tp_broker_decode_reply(buf, sizeof rep, TP_BROKER_MAPPED, &rep), 0);
	ck_assert_uint_eq(rep.error, 0);
	ck_assert_uint_eq(rep.size, 4 * MiB);
	ck_assert_uint_eq(rep.block_size, BLOCK_SIZE);
	ck_assert_uint_eq(rep.count, n - (n + 9) / 10);
	tp_broker_map_start(&rep, &cursor);
	while (tp_broker_ranges_due(&cursor) > 0) {
		ssize_t len = recv(fd, buf, sizeof buf, 0);

		ck_assert_int_eq(tp_broker_decode_ranges(buf, (size_t)len, &cursor, &p), 0);
		for (uint32_t i = 0; i < p.count; i++)
			/* Each holds the original ranges from the next on, up to its end. */
			for (; k < n && vol1_map[k].offset < p.range[i].offset + p.range[i].length;
			     k++) {
				ck_assert_uint_ge(vol1_map[k].offset, p.range[i].offset);
				ck_assert_uint_le(vol1_map[k].offset + vol1_map[k].length,
				                  p.range[i].offset + p.range[i].length);
			}
	}
	ck_assert_uint_eq(k, n);
	ck_assert_int_eq(recv(fd, buf, sizeof buf, 0), 0);
	close(fd);
}
END_TEST

START_TEST(closes_a_connection_that_sends_nothing)
{
	int fd = broker_connect();
	char c;

	/* Within the request timeout, without an answer. */
	ck_assert_int_eq(recv(fd, &c, 1, 0), 0);
	close(fd);
}
END_TEST

START_TEST(refuses_a_peer_that_runs_no_tenants_nbdkit)
{
	struct tp_broker_request req;
	pid_t pid;
	int status;

	if (getuid() != 0)
		return; /* needs another uid to ask from */
	tp_broker_encode_list(&req);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char reply[512];
		int fd;

		/* The private directory lets any uid reach the socket by its name; the
		 * broker then hangs up on a uid that is nobody's nbdkit, unanswered. */
		if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
			_exit(2);
		fd = broker_connect();
		send(fd, &req, sizeof req, MSG_NOSIGNAL);
		_exit(recv(fd, reply, sizeof reply, 0) <= 0 ? 0 : 1);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
}
END_TEST

/* How many connections the broker, in this process, holds from UID: the sockets whose
 * peer runs as UID. */
static int broker_connections_of(uid_t uid)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)) != NULL) {
		struct ucred cred;
		socklen_t len = sizeof cred;
		char *end;
		long fd = strtol(e->d_name, &end, 10);

		if (*end == '\0' && end != e->d_name &&
		    getsockopt((int)fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
		    cred.uid == uid)
			n++;
	}
	closedir(d);
	return n;
}

/* A flood of mallory's compromised nbdkit (tests/vm/broker-raw flood): the process and
 * its stdout. */
struct flood {
	pid_t pid;
	FILE *out;
};

/* Start a flood of SILENT connections that send nothing and LISTS that ask for
 * mallory's long listing and never read it, all as mallory's nbdkit uid, and wait until
 * each has been tried. */
static struct flood flood_start(int silent, int lists)
{
	const char *build = getenv("TP_BUILD") ? getenv("TP_BUILD") : "build";
	char raw[512], a[16], b[16], line[128];
	struct flood fl;
	int out[2];

	snprintf(raw, sizeof raw, "%s/tests/vm/broker-raw", build);
	ck_assert_msg(access(raw, X_OK) == 0, "%s is missing (make it first)", raw);
	snprintf(a, sizeof a, "%d", silent);
	snprintf(b, sizeof b, "%d", lists);
	mallory_uid = 65533;
	ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
	fl.pid = fork();
	ck_assert_int_ge(fl.pid, 0);
	if (fl.pid == 0) {
		/* Opened as root: a build directory mallory cannot search (a clone under a
		 * directory of mode 0700) still lets her run the program by its descriptor. */
		char *argv[] = {raw, broker_sock, "flood", a, b, NULL};
		int prog = open(raw, O_RDONLY | O_CLOEXEC);

		if (prog < 0 || dup2(out[1], STDOUT_FILENO) < 0 || setgroups(0, NULL) < 0 ||
		    setgid(mallory_uid) < 0 || setuid(mallory_uid) < 0)
			_exit(2);
		fexecve(prog, argv, environ);
		_exit(127);
	}
	close(out[1]);
	fl.out = fdopen(out[0], "r");
	ck_assert_ptr_nonnull(fl.out);
	ck_assert_ptr_nonnull(fgets(line, sizeof line, fl.out));
	ck_assert_str_eq(line, "flood: started\n");
	return fl;
}

/* Stop FL; return how many of its lists the broker answered and refused. */
static void flood_stop(struct flood *fl, unsigned long *ret_answered, unsigned long *ret_refused)
{
	unsigned long made;
	char line[128];
	int status;

	ck_assert_int_eq(kill(fl->pid, SIGTERM), 0);
	ck_assert_ptr_nonnull(fgets(line, sizeof line, fl->out));
	ck_assert_int_eq(waitpid(fl->pid, &status, 0), fl->pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	fclose(fl->out);
	ck_assert_msg(sscanf(line, "flood: %lu connections, %lu lists answered, %lu lists refused",
	                     &made, ret_answered, ret_refused) == 3,
	              "%s", line);
}

/* alice opens, lists and opens again through her nbdkit, each within the plugin's own
 * wait for the broker (30 s); and the broker holds no more of mallory's connections
 * than its cap. */
static void alice_is_served(void)
{
	struct listing l = {0};
	struct nbd_handle *h;
	char buf[4096];
	int held;

	h = connect_export("vol1");
	ck_assert_int_eq(nbd_pread(h, buf, sizeof buf, 0, 0), 0);
	nbd_close(h);
	h = nbd_create();
	ck_assert_int_eq(nbd_set_opt_mode(h, true), 0);
	ck_assert_int_eq(nbd_connect_unix(h, nbd_sock), 0);
	ck_assert_int_eq(nbd_opt_list(h, (nbd_list_callback){.callback = collect, .user_data = &l}),
	                 3);
	nbd_opt_abort(h);
	nbd_close(h);
	h = connect_export("committed");
	ck_assert_int_eq(nbd_pread(h, buf, sizeof buf, 0, 0), 0);
	ck_assert(all_bytes(buf, sizeof buf, 0xc0));
	nbd_close(h);
	held = broker_connections_of(mallory_uid);
	ck_assert_msg(held <= BROKER_MAX_PER_UID, "the broker holds %d of mallory's connections",
	              held);
}

START_TEST(serves_a_tenant_while_another_floods_the_broker)
{
	unsigned long answered, refused;
	struct flood fl;

	if (getuid() != 0)
		return; /* needs a second uid to flood from */
	/* More silent connections than the broker's accept queue holds (65): a broker that
	 * waits for each in turn keeps alice's open 32 s behind them. The lists come after
	 * them, and find mallory's share of the broker full. */
	fl = flood_start(65, 16);
	alice_is_served();
	flood_stop(&fl, &answered, &refused);
	ck_assert_msg(refused > 0, "%lu of mallory's lists answered, none refused", answered);
}
END_TEST

START_TEST(serves_a_tenant_while_another_never_reads_its_listings)
{
	unsigned long answered, refused;
	struct flood fl;

	if (getuid() != 0)
		return; /* needs a second uid to flood from */
	/* Each of mallory's listings is longer than a socket buffer: a broker that waits to
	 * send it all holds alice's open 1 s behind each of them. */
	fl = flood_start(0, 40);
	alice_is_served();
	flood_stop(&fl, &answered, &refused);
	ck_assert_msg(answered > 0 && refused > 0,
	              "%lu of mallory's lists answered, %lu refused (cap: %d at a time)", answered,
	              refused, BROKER_MAX_PER_UID);
}
END_TEST

START_TEST(makes_a_private_socket)
{
	struct broker *second = NULL;
	struct stat st;
	char path[160];

	snprintf(path, sizeof path, "%s/private", dir);
	ck_assert_int_eq(lstat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0711);
	ck_assert_int_eq(lstat(broker_sock, &st), 0);
	ck_assert(S_ISSOCK(st.st_mode));
	ck_assert_uint_eq(st.st_mode & 07777, 0666);
	/* A second daemon must not steal a live broker's socket. */
	ck_assert_int_eq(broker_start(broker_sock, &second), -EADDRINUSE);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("plugin-broker");
	TCase *tc = tcase_create("plugin-broker");
	TCase *flood = tcase_create("flood");
	SRunner *sr;
	int failed;

	/* Past the hangs these tests catch (the plugin's 30 s wait for the broker, nbdkit
	 * never listening), so that each fails with its own message. */
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, lists_exactly_what_the_broker_answers);
	tcase_add_test(tc, bounds_a_long_listing);
	tcase_add_test(tc, has_no_default_export);
	tcase_add_test(tc, refuses_everything_else_like_a_missing_name);
	tcase_add_test(tc, reads_and_writes_through_the_brokered_fd);
	tcase_add_test(tc, serves_read_only_volumes_read_only);
	tcase_add_test(tc, opens_a_writable_volume_read_only_when_asked);
	tcase_add_test(tc, serves_a_direct_export_at_any_byte_offset);
	tcase_add_test(tc, zeroes_whole_blocks_by_unmapping_them);
	tcase_add_test(tc, fast_zero_only_for_whole_blocks);
	tcase_add_test(tc, trims_by_unmapping);
	tcase_add_test(tc, reports_the_pools_map_as_data_and_holes);
	tcase_add_test(tc, reports_its_own_writes_as_data_in_a_map_taken_before);
	tcase_add_test(tc, reports_another_connections_writes_to_the_same_device);
	tcase_add_test(tc, counts_writes_made_while_the_map_is_on_its_way);
	tcase_add_test(tc, fails_block_status_when_the_broker_refuses_the_map);
	tcase_add_test(tc, reports_everything_as_data_while_the_pools_metadata_is_busy);
	tcase_add_test(tc, reports_everything_as_data_while_the_daemon_is_down);
	tcase_add_test(tc, reports_everything_as_data_to_a_daemon_without_map);
	tcase_add_test(tc, keeps_serving_open_connections_while_the_daemon_is_down);
	tcase_add_test(tc, asks_the_operations_for_direct_io_only_when_the_request_does);
	tcase_add_test(tc, closes_the_connection_on_a_malformed_request);
	tcase_add_test(tc, joins_the_closest_ranges_of_a_map_too_long_for_the_wire);
	tcase_add_test(tc, closes_a_connection_that_sends_nothing);
	tcase_add_test(tc, refuses_a_peer_that_runs_no_tenants_nbdkit);
	tcase_add_test(tc, makes_a_private_socket);
	suite_add_tcase(s, tc);
	/* Past the plugin's waits for the broker, the hang these catch (30 s for room in
	 * its accept queue, 30 s for the answer), and nbdkit's start. */
	tcase_add_checked_fixture(flood, setup, teardown);
	tcase_set_timeout(flood, 120);
	tcase_add_test(flood, serves_a_tenant_while_another_floods_the_broker);
	tcase_add_test(flood, serves_a_tenant_while_another_never_reads_its_listings);
	suite_add_tcase(s, flood);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
