/* Guest tests for daemon/pool.c on the real kernel: every pool_* call against dm-thin,
 * each test forked with its own pool (dm name "tpt<pid>", files under /run/test-pool).
 * Run through tests/vm/test-pool.sh: it creates dm and loop devices. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <linux/fs.h>

#include "../../daemon/log.h"
#include "../../daemon/pool.h"
#include "../../daemon/thin-metadata.h"
#include "tp-cleanup.h"

#define KiB     (UINT64_C(1) << 10)
#define MiB     (UINT64_C(1) << 20)
#define RUN_DIR "/run/test-pool"
/* The embedded pool's metadata for DATA bytes in 64 KiB blocks. */
#define META_EXPECTED(data) \
	((((((data) / (64 * KiB) + 125) / 126 + 10000) * 4096 * 2) + MiB - 1) / MiB * MiB)

static char dm_name[32], state_dir[64];

/* Names for this test's pool; each test runs in its own process. */
static void name_this_test(void)
{
	snprintf(dm_name, sizeof dm_name, "tpt%d", (int)getpid());
	snprintf(state_dir, sizeof state_dir, RUN_DIR "/%d", (int)getpid());
}

static struct pool *open_embedded(uint64_t loop_size)
{
	struct pool_config cfg = {
	    .state_dir = state_dir, .loop_size = loop_size, .dm_name = dm_name};
	struct pool *pool = NULL;

	name_this_test();
	ck_assert_int_eq(pool_open(&cfg, &pool), 0);
	ck_assert_ptr_nonnull(pool);
	return pool;
}

/* Run a shell command (dmsetup, losetup: only to build what pool.c must refuse or
 * attach to); its exit status. */
__attribute__((format(printf, 1, 2))) static int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;
	int status;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	status = system(cmd);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Read FILE's first line into BUF; false if it cannot be read. */
static bool read_line(const char *file, char *buf, size_t size)
{
	CLEANUP_FCLOSE FILE *f = fopen(file, "re");

	if (f == NULL || fgets(buf, (int)size, f) == NULL)
		return false;
	buf[strcspn(buf, "\n")] = '\0';
	return true;
}

/* The sysfs attribute ATTR of the block device whose name starts with PREFIX and whose
 * attribute KEY reads VALUE, into BUF; false if there is no such device. */
static bool block_attr(const char *prefix, const char *key, const char *value, const char *attr,
                       char *buf, size_t size)
{
	DIR *d = opendir("/sys/block");
	struct dirent *e;
	char path[PATH_MAX + 64], found[PATH_MAX];
	bool ok = false;

	ck_assert_ptr_nonnull(d);
	while (!ok && (e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, prefix, strlen(prefix)) != 0)
			continue;
		snprintf(path, sizeof path, "/sys/block/%s/%s", e->d_name, key);
		if (!read_line(path, found, sizeof found) || strcmp(found, value) != 0)
			continue;
		snprintf(path, sizeof path, "/sys/block/%s/%s", e->d_name, attr);
		ok = read_line(path, buf, size);
	}
	closedir(d);
	return ok;
}

/* The sysfs attribute dm/ATTR ("uuid", "suspended") of the dm device NAME; false if no
 * dm device has that name. */
static bool dm_attr(const char *name, const char *attr, char *buf, size_t size)
{
	char path[64];

	snprintf(path, sizeof path, "dm/%s", attr);
	return block_attr("dm-", "dm/name", name, path, buf, size);
}

static bool dm_exists(const char *name)
{
	char buf[16];

	return dm_attr(name, "suspended", buf, sizeof buf);
}

static bool dm_suspended(const char *name)
{
	char buf[16];

	ck_assert(dm_attr(name, "suspended", buf, sizeof buf));
	return strcmp(buf, "1") == 0;
}

static const char *thin_dm_name(uint32_t id)
{
	static char name[64];

	snprintf(name, sizeof name, "%s-%u", dm_name, id);
	return name;
}

static void fill(unsigned char *buf, size_t len, unsigned seed)
{
	uint32_t x = seed * 2654435761u + 1;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		buf[i] = (unsigned char)x;
	}
}

/* Write LEN bytes of pattern SEED at OFFSET and make them stable. */
static void write_pattern(int fd, unsigned seed, size_t len, off_t offset)
{
	unsigned char *buf = malloc(len);

	ck_assert_ptr_nonnull(buf);
	fill(buf, len, seed);
	ck_assert_int_eq(pwrite(fd, buf, len, offset), (ssize_t)len);
	ck_assert_int_eq(fdatasync(fd), 0);
	free(buf);
}

static void expect_pattern(int fd, unsigned seed, size_t len, off_t offset)
{
	unsigned char *want = malloc(len), *got = malloc(len);

	ck_assert_ptr_nonnull(want);
	ck_assert_ptr_nonnull(got);
	fill(want, len, seed);
	ck_assert_int_eq(pread(fd, got, len, offset), (ssize_t)len);
	ck_assert_msg(memcmp(want, got, len) == 0, "data at %lld differs from pattern %u",
	              (long long)offset, seed);
	free(want);
	free(got);
}

static uint64_t blockdev_size(int fd)
{
	uint64_t bytes = 0;

	ck_assert_int_eq(ioctl(fd, BLKGETSIZE64, &bytes), 0);
	return bytes;
}

/* A sparse file of SIZE bytes on a loop device; the device's path in RET_DEV. */
static void make_loop(const char *tag, const char *size, char *ret_dev, size_t dev_size)
{
	char file[128], cmd[256];
	FILE *p;

	snprintf(file, sizeof file, RUN_DIR "/%d-%s.img", (int)getpid(), tag);
	ck_assert_int_eq(sh("truncate -s %s %s", size, file), 0);
	snprintf(cmd, sizeof cmd, "losetup --find --show %s", file);
	p = popen(cmd, "re");
	ck_assert_ptr_nonnull(p);
	ck_assert_ptr_nonnull(fgets(ret_dev, (int)dev_size, p));
	ck_assert_int_eq(pclose(p), 0);
	ret_dev[strcspn(ret_dev, "\n")] = '\0';
}

START_TEST(opens_embedded_pool_with_error_if_no_space_on_sparse_files)
{
	struct pool *pool = open_embedded(64 * MiB);
	struct pool_status st;
	struct stat data, meta;
	char path[128], uuid[160], want[160];

	ck_assert_str_eq(pool_name(pool), dm_name);
	ck_assert_uint_eq(pool_block_size(pool), 64 * KiB);
	ck_assert_int_eq(pool_get_status(pool, &st), 0);
	ck_assert_uint_eq(st.transaction_id, 0);
	ck_assert_uint_eq(st.data_total, 64 * MiB / (64 * KiB));
	ck_assert_uint_eq(st.data_used, 0);
	/* thin_metadata_size's rule: a 4 KiB leaf per 126 blocks and a 4 KiB root for each
	 * of 10000 thin devices, twice over, in whole MiB. */
	ck_assert_uint_eq(st.meta_total, META_EXPECTED(64 * MiB) / (4 * KiB));
	ck_assert_uint_eq(st.block_sectors, 128);
	ck_assert(st.error_if_no_space);
	ck_assert(!st.read_only && !st.out_of_data_space && !st.needs_check);

	snprintf(path, sizeof path, "%s/pool/data.img", state_dir);
	ck_assert_int_eq(stat(path, &data), 0);
	ck_assert_uint_eq(data.st_size, 64 * MiB);
	ck_assert_uint_lt((uint64_t)data.st_blocks * 512, 64 * MiB);
	snprintf(path, sizeof path, "%s/pool/metadata.img", state_dir);
	ck_assert_int_eq(stat(path, &meta), 0);
	ck_assert_uint_eq(meta.st_size, META_EXPECTED(64 * MiB));

	ck_assert(dm_attr(dm_name, "uuid", uuid, sizeof uuid));
	snprintf(want, sizeof want, "THINPROXY-POOL-%s", dm_name);
	ck_assert_str_eq(uuid, want);
	pool_close(pool);
}
END_TEST

START_TEST(creates_thin_and_reports_mapped_bytes)
{
	struct pool *pool = open_embedded(64 * MiB);
	struct thin_status ts;
	struct pool_status ps;
	int fd;

	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	ck_assert_int_eq(pool_thin_status(pool, 1, &ts), 0);
	ck_assert(ts.active && !ts.read_only);
	ck_assert_uint_eq(ts.size, 16 * MiB);
	ck_assert_uint_eq(ts.mapped_bytes, 0);
	ck_assert_uint_eq(ts.open_count, 0);
	ck_assert_uint_ne(ts.devnum, 0);

	fd = pool_open_thin(pool, 1, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_ne(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
	ck_assert_uint_eq(blockdev_size(fd), 16 * MiB);
	write_pattern(fd, 1, MiB, 0);
	write_pattern(fd, 2, 64 * KiB, 8 * MiB);
	ck_assert_int_eq(pool_thin_status(pool, 1, &ts), 0);
	ck_assert_uint_eq(ts.mapped_bytes, MiB + 64 * KiB);
	ck_assert_uint_eq(ts.open_count, 1);
	ck_assert_int_eq(pool_get_status(pool, &ps), 0);
	ck_assert_uint_eq(ps.data_used, 17);
	close(fd);
	pool_close(pool);
}
END_TEST

/* Write requests the loop device over FILE has completed (/sys/block/loopN/stat). */
static uint64_t loop_writes(const char *file)
{
	unsigned long long writes = 0;
	char line[256];

	ck_assert_msg(block_attr("loop", "loop/backing_file", file, "stat", line, sizeof line),
	              "no loop device over %s", file);
	ck_assert_int_eq(sscanf(line, "%*u %*u %*u %*u %llu", &writes), 1);
	return writes;
}

/* The pool's counts come from its space maps in memory: a status shows blocks mapped by
 * a write not yet committed, and reading one commits nothing (a thin-pool asked for its
 * status with a flush writes its superblock and flushes its metadata device first). */
START_TEST(status_counts_uncommitted_blocks_and_writes_no_metadata)
{
	struct pool *pool = open_embedded(64 * MiB);
	struct pool_status ps;
	char meta[160];
	uint64_t writes;
	void *buf;
	int fd;

	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	fd = pool_open_thin(pool, 1, O_RDWR | O_DIRECT);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(posix_memalign(&buf, 4096, MiB), 0);
	memset(buf, 0xa5, MiB);
	ck_assert_int_eq(pwrite(fd, buf, MiB, 0), (ssize_t)MiB);
	ck_assert_int_eq(pool_get_status(pool, &ps), 0);
	ck_assert_uint_eq(ps.data_used, 16);

	/* Commit (a flush does), then read the status a few times: the metadata device
	 * sees no write. Nothing else writes it while nothing changes. */
	ck_assert_int_eq(fdatasync(fd), 0);
	snprintf(meta, sizeof meta, "%s/pool/metadata.img", state_dir);
	writes = loop_writes(meta);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(pool_get_status(pool, &ps), 0);
	ck_assert_uint_eq(ps.data_used, 16);
	ck_assert_uint_eq(loop_writes(meta), writes);
	free(buf);
	close(fd);
	pool_close(pool);
}
END_TEST

/* pool_thin_exists answers from the pool's metadata and changes nothing: no metadata
 * write, and the ids it was asked about are as they were. */
START_TEST(thin_exists_answers_and_writes_no_metadata)
{
	struct pool *pool = open_embedded(64 * MiB);
	char meta[160];
	uint64_t writes;

	ck_assert_int_eq(pool_create_thin(pool, 3), 0);
	snprintf(meta, sizeof meta, "%s/pool/metadata.img", state_dir);
	writes = loop_writes(meta);
	ck_assert_int_eq(pool_thin_exists(pool, 3), 1);
	ck_assert_int_eq(pool_thin_exists(pool, 4), 0);
	ck_assert_int_eq(pool_thin_exists(pool, POOL_THIN_ID_MAX), 0);
	ck_assert_uint_eq(loop_writes(meta), writes);
	ck_assert_int_eq(pool_thin_exists(pool, POOL_THIN_ID_MAX + 1), -EINVAL);
	ck_assert_int_eq(pool_create_thin(pool, 4), 0);
	ck_assert_int_eq(pool_create_thin(pool, 3), -EEXIST);
	pool_close(pool);
}
END_TEST

/* The embedded pool's metadata doubles up to its maximum, and dm-thin takes the space
 * while a thin device is open and written. */
START_TEST(grows_embedded_metadata_up_to_its_maximum)
{
	struct pool_config cfg = {
	    .loop_size = 64 * MiB, .metadata_size = 2 * MiB, .metadata_max = 4 * MiB};
	struct pool *pool = NULL;
	struct pool_status st;
	char path[160];
	struct stat sb;
	uint64_t bytes = 0;
	int fd;

	name_this_test();
	cfg.state_dir = state_dir;
	cfg.dm_name = dm_name;
	ck_assert_int_eq(pool_open(&cfg, &pool), 0);
	ck_assert_uint_eq(pool_metadata_limit(pool), 4 * MiB);
	ck_assert_int_eq(pool_get_status(pool, &st), 0);
	ck_assert_uint_eq(st.meta_total, 2 * MiB / (4 * KiB));
	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	fd = pool_open_thin(pool, 1, O_RDWR);
	ck_assert_int_ge(fd, 0);
	write_pattern(fd, 7, MiB, 0);

	ck_assert_int_eq(pool_grow_metadata(pool, &bytes), 0);
	ck_assert_uint_eq(bytes, 4 * MiB);
	ck_assert_int_eq(pool_get_status(pool, &st), 0);
	ck_assert_uint_eq(st.meta_total, 4 * MiB / (4 * KiB));
	ck_assert(!st.read_only && !st.needs_check);
	snprintf(path, sizeof path, "%s/pool/metadata.img", state_dir);
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_uint_eq(sb.st_size, 4 * MiB);
	ck_assert(!dm_suspended(dm_name));
	write_pattern(fd, 8, MiB, 4 * MiB);
	expect_pattern(fd, 7, MiB, 0);
	expect_pattern(fd, 8, MiB, 4 * MiB);
	ck_assert_int_eq(pool_grow_metadata(pool, &bytes), -ENOSPC);
	close(fd);
	pool_close(pool);
}
END_TEST

START_TEST(create_thin_of_taken_id_is_eexist)
{
	struct pool *pool = open_embedded(64 * MiB);

	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	ck_assert_int_eq(pool_create_thin(pool, 1), -EEXIST);
	ck_assert_int_eq(pool_create_thin(pool, POOL_THIN_ID_MAX), 0);
	pool_close(pool);
}
END_TEST

START_TEST(activation_of_missing_id_is_enoent_and_leaves_no_device)
{
	struct pool *pool = open_embedded(64 * MiB);
	struct thin_status ts;

	ck_assert_int_eq(pool_activate_thin(pool, 5, 16 * MiB, false), -ENOENT);
	ck_assert(!dm_exists(thin_dm_name(5)));
	ck_assert_int_eq(pool_thin_status(pool, 5, &ts), 0);
	ck_assert(!ts.active);
	ck_assert_uint_eq(ts.size, 0);
	ck_assert_uint_eq(ts.devnum, 0);
	ck_assert_int_eq(pool_open_thin(pool, 5, O_RDONLY), -ENXIO);
	pool_close(pool);
}
END_TEST

START_TEST(activation_replaces_empty_map_left_by_a_crash)
{
	struct pool *pool = open_embedded(64 * MiB);
	struct thin_status ts;

	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	/* What a crash between the create and the load of an activation leaves. */
	ck_assert_int_eq(
	    sh("dmsetup create %s --notable --uuid THINPROXY-%s", thin_dm_name(1), thin_dm_name(1)),
	    0);
	ck_assert_int_eq(pool_thin_status(pool, 1, &ts), 0);
	ck_assert(!ts.active);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	ck_assert_int_eq(pool_thin_status(pool, 1, &ts), 0);
	ck_assert(ts.active);
	ck_assert_uint_eq(ts.size, 16 * MiB);
	pool_close(pool);
}
END_TEST

START_TEST(activation_is_idempotent_and_rejects_another_table)
{
	struct pool *pool = open_embedded(64 * MiB);

	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 32 * MiB, false), -EEXIST);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, true), -EEXIST);
	pool_close(pool);
}
END_TEST

START_TEST(read_only_activation_refuses_writes)
{
	struct pool *pool = open_embedded(64 * MiB);
	struct thin_status ts;
	char buf[512] = {0};
	int fd, ro = 0;

	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, true), 0);
	ck_assert_int_eq(pool_thin_status(pool, 1, &ts), 0);
	ck_assert(ts.read_only);
	fd = pool_open_thin(pool, 1, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ioctl(fd, BLKROGET, &ro), 0);
	ck_assert_int_eq(ro, 1);
	close(fd);
	/* The kernel refuses either the read-write open or the write itself. */
	fd = pool_open_thin(pool, 1, O_RDWR);
	if (fd >= 0) {
		ck_assert_int_eq(pwrite(fd, buf, sizeof buf, 0), -1);
		close(fd);
	}
	pool_close(pool);
}
END_TEST

START_TEST(snapshot_of_active_origin_keeps_origin_data_and_resumes_it)
{
	struct pool *pool = open_embedded(64 * MiB);
	int origin, snap;

	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	origin = pool_open_thin(pool, 1, O_RDWR);
	ck_assert_int_ge(origin, 0);
	write_pattern(origin, 1, MiB, 0);

	ck_assert_int_eq(pool_create_snap(pool, 2, 1), 0);
	ck_assert(!dm_suspended(thin_dm_name(1)));
	/* The origin's open fd works on: a suspended origin would block this write. */
	write_pattern(origin, 2, MiB, 0);
	expect_pattern(origin, 2, MiB, 0);

	ck_assert_int_eq(pool_activate_thin(pool, 2, 16 * MiB, true), 0);
	snap = pool_open_thin(pool, 2, O_RDONLY);
	ck_assert_int_ge(snap, 0);
	expect_pattern(snap, 1, MiB, 0);
	close(snap);
	close(origin);
	pool_close(pool);
}
END_TEST

START_TEST(snapshot_into_taken_id_is_eexist_and_resumes_origin)
{
	struct pool *pool = open_embedded(64 * MiB);

	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	ck_assert_int_eq(pool_create_thin(pool, 2), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	ck_assert_int_eq(pool_create_snap(pool, 2, 1), -EEXIST);
	ck_assert(!dm_suspended(thin_dm_name(1)));
	pool_close(pool);
}
END_TEST

START_TEST(snapshot_of_missing_origin_is_enoent)
{
	struct pool *pool = open_embedded(64 * MiB);

	ck_assert_int_eq(pool_create_snap(pool, 2, 9), -ENOENT);
	ck_assert_int_eq(pool_create_thin(pool, 2), 0);
	pool_close(pool);
}
END_TEST

START_TEST(snapshot_of_inactive_origin_shares_its_data)
{
	struct pool *pool = open_embedded(64 * MiB);
	int fd;

	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	fd = pool_open_thin(pool, 1, O_RDWR);
	ck_assert_int_ge(fd, 0);
	write_pattern(fd, 7, MiB, 4 * MiB);
	close(fd);
	ck_assert_int_eq(pool_deactivate_thin(pool, 1), 0);

	ck_assert_int_eq(pool_create_snap(pool, 2, 1), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 2, 16 * MiB, false), 0);
	fd = pool_open_thin(pool, 2, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	expect_pattern(fd, 7, MiB, 4 * MiB);
	close(fd);
	pool_close(pool);
}
END_TEST

START_TEST(delete_of_missing_id_is_enoent)
{
	struct pool *pool = open_embedded(64 * MiB);

	ck_assert_int_eq(pool_delete_thin(pool, 3), -ENOENT);
	pool_close(pool);
}
END_TEST

START_TEST(delete_of_active_id_is_ebusy_and_frees_the_id_once_inactive)
{
	struct pool *pool = open_embedded(64 * MiB);

	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	ck_assert_int_eq(pool_delete_thin(pool, 1), -EBUSY);
	ck_assert_int_eq(pool_deactivate_thin(pool, 1), 0);
	ck_assert_int_eq(pool_delete_thin(pool, 1), 0);
	ck_assert_int_eq(pool_delete_thin(pool, 1), -ENOENT);
	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	pool_close(pool);
}
END_TEST

START_TEST(set_transaction_id_rejects_wrong_old_id)
{
	struct pool *pool = open_embedded(64 * MiB);
	struct pool_status st;

	ck_assert_int_eq(pool_set_transaction_id(pool, 0, 1), 0);
	ck_assert_int_eq(pool_get_status(pool, &st), 0);
	ck_assert_uint_eq(st.transaction_id, 1);
	ck_assert_int_eq(pool_set_transaction_id(pool, 0, 2), -ESTALE);
	ck_assert_int_eq(pool_get_status(pool, &st), 0);
	ck_assert_uint_eq(st.transaction_id, 1);
	ck_assert_int_eq(pool_set_transaction_id(pool, 1, 2), 0);
	ck_assert_int_eq(pool_get_status(pool, &st), 0);
	ck_assert_uint_eq(st.transaction_id, 2);
	pool_close(pool);
}
END_TEST

START_TEST(deactivate_refuses_open_device)
{
	struct pool *pool = open_embedded(64 * MiB);
	struct thin_status ts;
	int fd;

	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	fd = pool_open_thin(pool, 1, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pool_deactivate_thin(pool, 1), -EBUSY);
	ck_assert(dm_exists(thin_dm_name(1)));
	close(fd);
	ck_assert_int_eq(pool_deactivate_thin(pool, 1), 0);
	ck_assert(!dm_exists(thin_dm_name(1)));
	ck_assert_int_eq(pool_thin_status(pool, 1, &ts), 0);
	ck_assert(!ts.active);
	ck_assert_int_eq(pool_deactivate_thin(pool, 1), 0);
	ck_assert_int_eq(pool_open_thin(pool, 1, O_RDONLY), -ENXIO);
	pool_close(pool);
}
END_TEST

START_TEST(resize_grows_active_thin)
{
	struct pool *pool = open_embedded(64 * MiB);
	struct thin_status ts;
	int fd;

	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	ck_assert_int_eq(pool_create_thin(pool, 2), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	fd = pool_open_thin(pool, 1, O_RDWR);
	ck_assert_int_ge(fd, 0);
	write_pattern(fd, 3, MiB, 15 * MiB);

	/* With the device open: the resize suspends and resumes under it. */
	ck_assert_int_eq(pool_resize_thin(pool, 1, 32 * MiB), 0);
	ck_assert_int_eq(pool_thin_status(pool, 1, &ts), 0);
	ck_assert(ts.active);
	ck_assert_uint_eq(ts.size, 32 * MiB);
	ck_assert(!dm_suspended(thin_dm_name(1)));
	write_pattern(fd, 4, MiB, 0);
	close(fd);

	fd = pool_open_thin(pool, 1, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_uint_eq(blockdev_size(fd), 32 * MiB);
	expect_pattern(fd, 3, MiB, 15 * MiB);
	expect_pattern(fd, 4, MiB, 0);
	close(fd);

	ck_assert_int_eq(pool_resize_thin(pool, 1, 32 * MiB), 0);
	ck_assert_int_eq(pool_resize_thin(pool, 2, 32 * MiB), 0);
	ck_assert_int_eq(pool_thin_status(pool, 2, &ts), 0);
	ck_assert(!ts.active);
	pool_close(pool);
}
END_TEST

struct seen {
	uint32_t ids[8];
	int n;
};

static int collect(uint32_t id, void *opaque)
{
	struct seen *seen = opaque;

	if (seen->n < 8)
		seen->ids[seen->n] = id;
	seen->n++;
	return 0;
}

static int stop(uint32_t id, void *opaque)
{
	(void)id;
	(void)opaque;
	return -ECANCELED;
}

START_TEST(refuses_to_touch_device_without_our_uuid)
{
	struct pool *pool = open_embedded(64 * MiB);
	struct thin_status ts;
	struct seen seen = {0};

	ck_assert_int_eq(pool_create_thin(pool, 7), 0);
	/* Someone else's device in thin 7's name. */
	ck_assert_int_eq(sh("dmsetup create %s --table '0 8 error'", thin_dm_name(7)), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 7, 16 * MiB, false), -EEXIST);
	ck_assert_int_eq(pool_deactivate_thin(pool, 7), -EPERM);
	ck_assert_int_eq(pool_resize_thin(pool, 7, 32 * MiB), -EPERM);
	ck_assert_int_eq(pool_thin_status(pool, 7, &ts), -EPERM);
	ck_assert_int_eq(pool_open_thin(pool, 7, O_RDONLY), -EPERM);
	ck_assert_int_eq(pool_create_snap(pool, 8, 7), -EPERM);
	ck_assert_int_eq(pool_for_each_active(pool, collect, &seen), 0);
	ck_assert_int_eq(seen.n, 0);
	ck_assert(dm_exists(thin_dm_name(7)));
	ck_assert(!dm_suspended(thin_dm_name(7)));
	pool_close(pool);
}
END_TEST

START_TEST(refuses_pool_name_taken_by_another_device)
{
	struct pool_config cfg = {0};
	struct pool *pool = NULL;
	char path[128];

	name_this_test();
	cfg.state_dir = state_dir;
	cfg.dm_name = dm_name;
	ck_assert_int_eq(sh("dmsetup create %s --table '0 8 error'", dm_name), 0);
	ck_assert_int_eq(pool_open(&cfg, &pool), -EEXIST);
	ck_assert_ptr_null(pool);
	/* Refused before anything was made. */
	snprintf(path, sizeof path, "%s/pool", state_dir);
	ck_assert_int_eq(access(path, F_OK), -1);
	ck_assert(dm_exists(dm_name));
}
END_TEST

START_TEST(embedded_pool_reattaches_after_close)
{
	struct pool *pool = open_embedded(64 * MiB);
	struct pool_config cfg = {
	    .state_dir = state_dir, .loop_size = 64 * MiB, .dm_name = dm_name};
	struct pool_status st;
	struct thin_status ts;
	int fd;

	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	ck_assert_int_eq(pool_set_transaction_id(pool, 0, 1), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	fd = pool_open_thin(pool, 1, O_RDWR);
	ck_assert_int_ge(fd, 0);
	write_pattern(fd, 5, MiB, 0);
	pool_close(pool);

	/* The fd outlives the handle, as NBD connections outlive a daemon restart. */
	pool = NULL;
	ck_assert_int_eq(pool_open(&cfg, &pool), 0);
	ck_assert_int_eq(pool_get_status(pool, &st), 0);
	ck_assert_uint_eq(st.transaction_id, 1);
	ck_assert_int_eq(pool_thin_status(pool, 1, &ts), 0);
	ck_assert(ts.active);
	ck_assert_uint_eq(ts.open_count, 1);
	expect_pattern(fd, 5, MiB, 0);
	close(fd);
	ck_assert_int_eq(pool_create_thin(pool, 1), -EEXIST);
	pool_close(pool);
}
END_TEST

/* Loop devices whose backing file lies in DIR. */
static int loops_backed_by(const char *dir)
{
	DIR *d = opendir("/sys/block");
	struct dirent *e;
	char path[300], file[300];
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, "loop", 4) != 0)
			continue;
		snprintf(path, sizeof path, "/sys/block/%s/loop/backing_file", e->d_name);
		if (read_line(path, file, sizeof file) && strncmp(file, dir, strlen(dir)) == 0)
			n++;
	}
	closedir(d);
	return n;
}

START_TEST(embedded_pool_comes_back_over_its_files_after_removal)
{
	struct pool *pool = open_embedded(64 * MiB);
	struct pool_config cfg = {
	    .state_dir = state_dir, .loop_size = 64 * MiB, .dm_name = dm_name};
	struct pool_status st;
	int fd, i;

	ck_assert_int_eq(loops_backed_by(state_dir), 2);
	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	ck_assert_int_eq(pool_set_transaction_id(pool, 0, 3), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	fd = pool_open_thin(pool, 1, O_RDWR);
	ck_assert_int_ge(fd, 0);
	write_pattern(fd, 6, MiB, 0);
	close(fd);
	ck_assert_int_eq(pool_deactivate_thin(pool, 1), 0);
	pool_close(pool);

	/* As after a reboot: the pool is gone, and its loop devices with it. */
	ck_assert_int_eq(sh("dmsetup remove %s", dm_name), 0);
	for (i = 0; i < 1500 && loops_backed_by(state_dir) > 0; i++)
		usleep(20000);
	ck_assert_int_eq(loops_backed_by(state_dir), 0);

	pool = NULL;
	ck_assert_int_eq(pool_open(&cfg, &pool), 0);
	ck_assert_int_eq(loops_backed_by(state_dir), 2);
	ck_assert_int_eq(pool_get_status(pool, &st), 0);
	ck_assert_uint_eq(st.transaction_id, 3);
	ck_assert_int_eq(pool_create_thin(pool, 1), -EEXIST);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	fd = pool_open_thin(pool, 1, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	expect_pattern(fd, 6, MiB, 0);
	close(fd);
	pool_close(pool);
}
END_TEST

START_TEST(open_resumes_thin_left_suspended_by_a_crash)
{
	struct pool *pool = open_embedded(64 * MiB);
	struct pool_config cfg = {
	    .state_dir = state_dir, .loop_size = 64 * MiB, .dm_name = dm_name};

	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	pool_close(pool);
	ck_assert_int_eq(sh("dmsetup suspend %s", thin_dm_name(1)), 0);
	ck_assert(dm_suspended(thin_dm_name(1)));

	pool = NULL;
	ck_assert_int_eq(pool_open(&cfg, &pool), 0);
	ck_assert(!dm_suspended(thin_dm_name(1)));
	pool_close(pool);
}
END_TEST

START_TEST(open_thin_remakes_missing_or_stale_device_node)
{
	struct pool *pool = open_embedded(64 * MiB);
	struct thin_status ts;
	struct stat st;
	char node[128];
	int fd;

	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	ck_assert_int_eq(pool_thin_status(pool, 1, &ts), 0);
	snprintf(node, sizeof node, "/dev/mapper/%s", thin_dm_name(1));
	ck_assert_int_eq(stat(node, &st), 0);
	ck_assert_uint_eq(st.st_rdev, ts.devnum);

	ck_assert_int_eq(unlink(node), 0);
	fd = pool_open_thin(pool, 1, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_uint_eq(st.st_rdev, ts.devnum);
	close(fd);
	ck_assert_int_eq(stat(node, &st), 0);

	/* A node that leads elsewhere is never opened as the thin device. */
	ck_assert_int_eq(unlink(node), 0);
	ck_assert_int_eq(mknod(node, S_IFBLK | 0600, makedev(7, 250)), 0);
	fd = pool_open_thin(pool, 1, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_uint_eq(st.st_rdev, ts.devnum);
	close(fd);

	ck_assert_int_eq(pool_open_thin(pool, 1, O_WRONLY), -EINVAL);
	ck_assert_int_eq(pool_open_thin(pool, 1, O_RDWR | O_CREAT), -EINVAL);
	pool_close(pool);
}
END_TEST

START_TEST(for_each_active_lists_only_this_pools_devices)
{
	struct pool *pool = open_embedded(64 * MiB);
	struct seen seen = {0};

	for (uint32_t id = 1; id <= 3; id++)
		ck_assert_int_eq(pool_create_thin(pool, id), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 3, 16 * MiB, true), 0);
	ck_assert_int_eq(sh("dmsetup create %s --table '0 8 error'", thin_dm_name(9)), 0);
	ck_assert_int_eq(
	    sh("dmsetup create %s-03 --table '0 8 error' --uuid THINPROXY-%s-03", dm_name, dm_name),
	    0);

	ck_assert_int_eq(pool_for_each_active(pool, collect, &seen), 2);
	ck_assert_int_eq(seen.n, 2);
	ck_assert_uint_eq(seen.ids[0] + seen.ids[1], 4);
	ck_assert_uint_ne(seen.ids[0], seen.ids[1]);
	ck_assert_int_eq(pool_for_each_active(pool, stop, NULL), -ECANCELED);
	pool_close(pool);
}
END_TEST

START_TEST(existing_pool_is_attached_by_name_and_left_alone)
{
	struct pool_config cfg = {0};
	struct pool *pool = NULL;
	struct pool_status st;
	char data[64], meta[64], existing[64], thin[96], other[64];

	name_this_test();
	make_loop("data", "64M", data, sizeof data);
	make_loop("meta", "16M", meta, sizeof meta);
	snprintf(existing, sizeof existing, "%s-ext", dm_name);
	ck_assert_int_eq(
	    sh("dmsetup create %s --table '0 131072 thin-pool %s %s 128 0'", existing, meta, data),
	    0);

	cfg.existing = existing;
	ck_assert_int_eq(pool_open(&cfg, &pool), 0);
	ck_assert_str_eq(pool_name(pool), existing);
	ck_assert_int_eq(pool_get_status(pool, &st), 0);
	ck_assert(!st.error_if_no_space);
	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	snprintf(thin, sizeof thin, "%s-1", existing);
	ck_assert(dm_exists(thin));
	ck_assert_int_eq(pool_deactivate_thin(pool, 1), 0);
	pool_close(pool);
	ck_assert(dm_exists(existing));
	ck_assert(!dm_suspended(existing));

	/* Thin names may follow dm_name instead. */
	cfg.dm_name = dm_name;
	pool = NULL;
	ck_assert_int_eq(pool_open(&cfg, &pool), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	ck_assert(dm_exists(thin_dm_name(1)));
	pool_close(pool);

	cfg.dm_name = NULL;
	snprintf(other, sizeof other, "%s-missing", dm_name);
	cfg.existing = other;
	pool = NULL;
	ck_assert_int_eq(pool_open(&cfg, &pool), -ENOENT);
	ck_assert_ptr_null(pool);
	snprintf(other, sizeof other, "%s-err", dm_name);
	ck_assert_int_eq(sh("dmsetup create %s --table '0 8 error'", other), 0);
	ck_assert_int_eq(pool_open(&cfg, &pool), -EINVAL);
	ck_assert_ptr_null(pool);
}
END_TEST

START_TEST(own_pool_on_devices_carries_our_uuid_and_reattaches)
{
	struct pool_config cfg = {0};
	struct pool *pool = NULL;
	struct pool_status st;
	char data[64], meta[64], uuid[160], want[160];

	name_this_test();
	make_loop("data", "32M", data, sizeof data);
	make_loop("meta", "16M", meta, sizeof meta);
	cfg.data_dev = data;
	cfg.metadata_dev = meta;
	cfg.dm_name = dm_name;
	cfg.block_sectors = 256;
	ck_assert_int_eq(pool_open(&cfg, &pool), 0);
	ck_assert_uint_eq(pool_block_size(pool), 128 * KiB);
	ck_assert(dm_attr(dm_name, "uuid", uuid, sizeof uuid));
	snprintf(want, sizeof want, "THINPROXY-POOL-%s", dm_name);
	ck_assert_str_eq(uuid, want);
	ck_assert_int_eq(pool_get_status(pool, &st), 0);
	ck_assert_uint_eq(st.data_total, 32 * MiB / (128 * KiB));
	ck_assert(st.error_if_no_space);
	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	/* Its metadata device is the admin's to grow. */
	ck_assert_uint_eq(pool_metadata_limit(pool), 0);
	ck_assert_int_eq(pool_grow_metadata(pool, &(uint64_t){0}), -EOPNOTSUPP);
	pool_close(pool);

	pool = NULL;
	ck_assert_int_eq(pool_open(&cfg, &pool), 0);
	ck_assert_int_eq(pool_create_thin(pool, 1), -EEXIST);
	pool_close(pool);
}
END_TEST

/* A full pool fails writes at once; a trim frees blocks, and the next status read lets
 * the pool see them (dm-thin leaves out_of_data_space only when it commits, and does not
 * commit by itself in that mode), so writes work again. */
START_TEST(full_pool_fails_writes_with_enospc_until_trimmed)
{
	struct pool *pool = open_embedded(4 * MiB);
	struct pool_status st;
	unsigned char *buf;
	ssize_t n = 0;
	off_t off;
	int fd;

	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	fd = pool_open_thin(pool, 1, O_RDWR | O_DIRECT);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(posix_memalign((void **)&buf, 4096, MiB), 0);
	memset(buf, 0xa5, MiB);
	for (off = 0; off < (off_t)(16 * MiB); off += MiB) {
		n = pwrite(fd, buf, MiB, off);
		if (n < 0)
			break;
	}
	ck_assert_int_eq(n, -1);
	ck_assert_int_eq(errno, ENOSPC);
	ck_assert_int_le(off, 4 * MiB);
	ck_assert_int_eq(pool_get_status(pool, &st), 0);
	ck_assert(st.out_of_data_space);
	ck_assert_uint_eq(st.data_used, st.data_total);

	ck_assert_int_eq(ioctl(fd, BLKDISCARD, (uint64_t[]){0, 2 * MiB}), 0);
	ck_assert_int_eq(pool_get_status(pool, &st), 0);
	ck_assert(!st.out_of_data_space);
	ck_assert_uint_eq(st.data_used, st.data_total - 2 * MiB / (64 * KiB));
	ck_assert_int_eq(pwrite(fd, buf, MiB, 0), (ssize_t)MiB);
	free(buf);
	close(fd);
	pool_close(pool);
}
END_TEST

START_TEST(rejects_bad_arguments)
{
	struct pool *pool = open_embedded(64 * MiB);
	struct pool_config cfg = {0};
	struct pool *other = NULL;
	struct thin_status ts;
	const uint32_t big = POOL_THIN_ID_MAX + 1;

	ck_assert_int_eq(pool_create_thin(pool, big), -EINVAL);
	ck_assert_int_eq(pool_create_snap(pool, big, 1), -EINVAL);
	ck_assert_int_eq(pool_create_snap(pool, 1, big), -EINVAL);
	ck_assert_int_eq(pool_delete_thin(pool, big), -EINVAL);
	ck_assert_int_eq(pool_activate_thin(pool, big, MiB, false), -EINVAL);
	ck_assert_int_eq(pool_deactivate_thin(pool, big), -EINVAL);
	ck_assert_int_eq(pool_resize_thin(pool, big, MiB), -EINVAL);
	ck_assert_int_eq(pool_thin_status(pool, big, &ts), -EINVAL);
	ck_assert_int_eq(pool_open_thin(pool, big, O_RDONLY), -EINVAL);
	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 0, false), -EINVAL);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 1000, false), -EINVAL);
	ck_assert_int_eq(pool_resize_thin(pool, 1, 1000), -EINVAL);
	pool_close(pool);

	cfg.state_dir = state_dir;
	cfg.dm_name = "a/b";
	ck_assert_int_eq(pool_open(&cfg, &other), -EINVAL);
	cfg.dm_name = "..";
	ck_assert_int_eq(pool_open(&cfg, &other), -EINVAL);
	cfg.dm_name = dm_name;
	cfg.block_sectors = 100;
	ck_assert_int_eq(pool_open(&cfg, &other), -EINVAL);
	cfg.block_sectors = 0;
	cfg.data_dev = "/dev/null";
	ck_assert_int_eq(pool_open(&cfg, &other), -EINVAL);
	cfg.metadata_dev = "/dev/null";
	cfg.existing = dm_name;
	ck_assert_int_eq(pool_open(&cfg, &other), -EINVAL);
	ck_assert_ptr_null(other);
}
END_TEST

/* Text both sides of a comparison print: "dev ID" lines, each followed by its runs as
 * "VIRT DATA LEN TIME" lines. */
struct text {
	char *buf;
	size_t size;
	FILE *f;
};

static void text_open(struct text *t)
{
	t->f = open_memstream(&t->buf, &t->size);
	ck_assert_ptr_nonnull(t->f);
}

static void text_close(struct text *t)
{
	ck_assert_int_eq(fclose(t->f), 0);
	t->f = NULL;
}

static int print_run(const struct thin_meta_run *run, void *opaque)
{
	fprintf(opaque, "%llu %llu %llu %u\n", (unsigned long long)run->virt,
	        (unsigned long long)run->data, (unsigned long long)run->len, run->time);
	return 0;
}

/* Our walk of device ID into T. */
static void walk_device(struct thin_meta *m, const struct thin_meta_superblock *sb, uint32_t id,
                        struct text *t)
{
	fprintf(t->f, "dev %u\n", id);
	ck_assert_int_eq(thin_meta_mappings(m, sb, id, print_run, t->f), 0);
}

/* thin_dump --metadata-snap of the held snapshot at HELD of M's device, into T. */
static void thin_dump_held(const struct thin_meta *m, uint64_t held, struct text *t)
{
	char cmd[256], line[512], devname[64] = "";
	unsigned long long a, b, c, d;
	struct stat st;
	FILE *p;

	ck_assert_int_eq(fstat(m->fd, &st), 0);
	snprintf(cmd, sizeof cmd, "/sys/dev/block/%u:%u/uevent", major(st.st_rdev),
	         minor(st.st_rdev));
	p = fopen(cmd, "re");
	ck_assert_ptr_nonnull(p);
	while (fgets(line, sizeof line, p) != NULL)
		if (sscanf(line, "DEVNAME=%63s", devname) == 1)
			break;
	fclose(p);
	snprintf(cmd, sizeof cmd, "thin_dump --metadata-snap=%llu /dev/%s 2>&1",
	         (unsigned long long)held, devname);
	p = popen(cmd, "re");
	ck_assert_ptr_nonnull(p);
	while (fgets(line, sizeof line, p) != NULL) {
		if (sscanf(line, " <device dev_id=\"%llu\"", &a) == 1)
			fprintf(t->f, "dev %llu\n", a);
		else if (sscanf(line,
		                " <range_mapping origin_begin=\"%llu\" data_begin=\"%llu\" "
		                "length=\"%llu\" time=\"%llu\"",
		                &a, &b, &c, &d) == 4)
			fprintf(t->f, "%llu %llu %llu %llu\n", a, b, c, d);
		else if (sscanf(line,
		                " <single_mapping origin_block=\"%llu\" data_block=\"%llu\" "
		                "time=\"%llu\"",
		                &a, &b, &d) == 3)
			fprintf(t->f, "%llu %llu 1 %llu\n", a, b, d);
		else if (strstr(line, "<") == NULL)
			fprintf(t->f, "thin_dump: %s", line);
	}
	ck_assert_int_eq(fflush(t->f), 0);
	ck_assert_msg(pclose(p) == 0, "%s failed: %s", cmd, t->buf);
}

/* What a walk of the held metadata snapshot saw, and what thin_dump did. */
struct walked {
	uint32_t ids[2];
	struct text ours, theirs;
};

static int walk_both(struct thin_meta *m, const struct thin_meta_superblock *sb, void *opaque)
{
	struct walked *w = opaque;

	text_open(&w->ours);
	text_open(&w->theirs);
	for (int i = 0; i < 2; i++)
		walk_device(m, sb, w->ids[i], &w->ours);
	ck_assert_int_eq(thin_meta_mappings(m, sb, 99, print_run, w->ours.f), -ENOENT);
	/* While it is held, thin_dump reads the same snapshot. */
	thin_dump_held(m, sb->blocknr, &w->theirs);
	text_close(&w->ours);
	text_close(&w->theirs);
	return 7;
}

START_TEST(walks_a_thin_devices_mappings_as_thin_dump_reads_them)
{
	struct pool *pool = open_embedded(64 * MiB);
	static const unsigned blocks[] = {0, 3, 4, 5, 17, 63};
	struct walked w = {.ids = {1, 2}};
	struct pool_status st;
	int fd;

	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	ck_assert_int_eq(pool_activate_thin(pool, 1, 16 * MiB, false), 0);
	fd = pool_open_thin(pool, 1, O_RDWR);
	ck_assert_int_ge(fd, 0);
	for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++)
		write_pattern(fd, blocks[i], 4 * KiB, (off_t)(blocks[i] * 64 * KiB + 8 * KiB));
	close(fd);
	ck_assert_int_eq(pool_create_snap(pool, 2, 1), 0);
	fd = pool_open_thin(pool, 1, O_RDWR);
	ck_assert_int_ge(fd, 0);
	write_pattern(fd, 99, 64 * KiB, 7 * 64 * KiB);
	write_pattern(fd, 98, 64 * KiB, 4 * 64 * KiB); /* breaks sharing: a new block */
	close(fd);

	/* The writes were made stable, not committed: the snapshot commits them. */
	ck_assert_int_eq(pool_walk_metadata(pool, walk_both, &w), 7);
	ck_assert_str_eq(w.ours.buf, w.theirs.buf);
	/* Device 2 has what 1 had when it was taken; 1 has block 7 and its own block 4. */
	ck_assert_msg(strstr(w.ours.buf, "dev 1\n0 0 1 0\n3 1 1 0\n4 ") != NULL, "%s", w.ours.buf);
	ck_assert_msg(strstr(w.ours.buf, "\n7 ") != NULL, "%s", w.ours.buf);
	ck_assert_msg(strstr(w.ours.buf, "dev 2\n0 0 1 0\n3 1 3 0\n17 4 1 0\n63 5 1 0\n") != NULL,
	              "%s", w.ours.buf);
	free(w.ours.buf);
	free(w.theirs.buf);
	/* Released afterwards, so the next walk can take one again. */
	ck_assert_int_eq(pool_get_status(pool, &st), 0);
	ck_assert_uint_eq(st.held_root, 0);
	pool_close(pool);
}
END_TEST

static int count_walk(struct thin_meta *m, const struct thin_meta_superblock *sb, void *opaque)
{
	(void)m;
	(void)sb;
	++*(int *)opaque;
	return 0;
}

START_TEST(releases_a_metadata_snapshot_left_held)
{
	struct pool *pool = open_embedded(64 * MiB);
	struct pool_status st;
	int walks = 0;

	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	/* As a daemon that died in mid-walk leaves it. */
	ck_assert_int_eq(sh("dmsetup message %s 0 reserve_metadata_snap", dm_name), 0);
	ck_assert_int_eq(pool_walk_metadata(pool, count_walk, &walks), -EBUSY);
	ck_assert_int_eq(walks, 0);
	pool_close(pool);
	pool = open_embedded(64 * MiB);
	ck_assert_int_eq(pool_get_status(pool, &st), 0);
	ck_assert_uint_eq(st.held_root, 0);
	ck_assert_int_eq(pool_walk_metadata(pool, count_walk, &walks), 0);
	ck_assert_int_eq(walks, 1);
	pool_close(pool);
}
END_TEST

/* Every device of the pool, ours against thin_dump's, under one held snapshot. */
struct whole {
	struct text ours, theirs;
	struct thin_meta *m;
	const struct thin_meta_superblock *sb;
	size_t devices;
};

static int walk_listed(const struct thin_meta_device *dev, void *opaque)
{
	struct whole *w = opaque;

	walk_device(w->m, w->sb, dev->id, &w->ours);
	w->devices++;
	return 0;
}

static int walk_whole(struct thin_meta *m, const struct thin_meta_superblock *sb, void *opaque)
{
	struct whole *w = opaque;

	w->m = m;
	w->sb = sb;
	text_open(&w->ours);
	text_open(&w->theirs);
	ck_assert_int_eq(thin_meta_devices(m, sb, walk_listed, w), 0);
	thin_dump_held(m, sb->blocknr, &w->theirs);
	text_close(&w->ours);
	text_close(&w->theirs);
	return 0;
}

static void expect_whole_pool_as_thin_dump(struct pool *pool, size_t devices)
{
	struct whole w = {0};

	ck_assert_int_eq(pool_walk_metadata(pool, walk_whole, &w), 0);
	ck_assert_uint_eq(w.devices, devices);
	ck_assert_msg(w.ours.size == w.theirs.size &&
	                  memcmp(w.ours.buf, w.theirs.buf, w.ours.size) == 0,
	              "%zu devices: our walk (%zu bytes) differs from thin_dump's (%zu bytes)",
	              devices, w.ours.size, w.theirs.size);
	free(w.ours.buf);
	free(w.theirs.buf);
}

/* Deep chains and wide pools: a chain of CHAIN snapshots, each written between two
 * snapshots, then more snapshots of its links until the pool holds 1000 and 10000
 * devices (TP_TEST_POOL_DEVICES changes the last figure). The whole pool's walk must
 * equal thin_dump's at 1, 1000 and 10000 devices. */
#define CHAIN 64
START_TEST(walks_every_device_as_thin_dump_does_at_1_1000_and_10000)
{
	const char *env = getenv("TP_TEST_POOL_DEVICES");
	uint32_t most = env != NULL ? (uint32_t)strtoul(env, NULL, 10) : 10000;
	struct pool *pool = open_embedded(256 * MiB);
	uint32_t id;
	int fd;

	ck_assert_int_eq(pool_create_thin(pool, 1), 0);
	for (id = 1; id <= CHAIN; id++) {
		ck_assert_int_eq(pool_activate_thin(pool, id, 64 * MiB, false), 0);
		fd = pool_open_thin(pool, id, O_RDWR);
		ck_assert_int_ge(fd, 0);
		/* Overwrite one block the chain shares, map one new one. */
		write_pattern(fd, id, 4 * KiB, (off_t)((id * 7 % 1024) * 64 * KiB));
		write_pattern(fd, id + 1000, 4 * KiB, (off_t)(((id * 13 + 5) % 1024) * 64 * KiB));
		close(fd);
		ck_assert_int_eq(pool_deactivate_thin(pool, id), 0);
		if (id == 1)
			expect_whole_pool_as_thin_dump(pool, 1);
		ck_assert_int_eq(pool_create_snap(pool, id + 1, id), 0);
	}
	for (id = CHAIN + 2; id <= most; id++) {
		ck_assert_int_eq(pool_create_snap(pool, id, 1 + id % (CHAIN + 1)), 0);
		if (id == 1000 || id == most)
			expect_whole_pool_as_thin_dump(pool, id);
	}
	pool_close(pool);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pool");
	TCase *thin = tcase_create("thin");
	TCase *pool = tcase_create("pool");
	TCase *walk = tcase_create("walk");
	const char *debug = getenv("TP_TEST_DEBUG");
	SRunner *sr;
	int failed;

	if (getenv("TP_GUEST") == NULL) {
		fprintf(stderr, "test-pool: makes dm and loop devices; run it through "
		                "tests/vm/run tests/vm/test-pool.sh\n");
		return 77;
	}
	log_init("test-pool", false, debug != NULL && *debug != '\0' ? LOG_DEBUG : LOG_WARNING);
	if (mkdir(RUN_DIR, 0700) < 0 && errno != EEXIST) {
		perror(RUN_DIR);
		return EXIT_FAILURE;
	}
	/* "thin": what activates, opens and removes thin devices (and so makes and removes
	 * their nodes); "pool": pools, messages and refusals. */
	tcase_set_timeout(thin, 60);
	tcase_add_test(thin, creates_thin_and_reports_mapped_bytes);
	tcase_add_test(thin, status_counts_uncommitted_blocks_and_writes_no_metadata);
	tcase_add_test(thin, activation_of_missing_id_is_enoent_and_leaves_no_device);
	tcase_add_test(thin, activation_replaces_empty_map_left_by_a_crash);
	tcase_add_test(thin, activation_is_idempotent_and_rejects_another_table);
	tcase_add_test(thin, read_only_activation_refuses_writes);
	tcase_add_test(thin, snapshot_of_active_origin_keeps_origin_data_and_resumes_it);
	tcase_add_test(thin, snapshot_into_taken_id_is_eexist_and_resumes_origin);
	tcase_add_test(thin, snapshot_of_inactive_origin_shares_its_data);
	tcase_add_test(thin, deactivate_refuses_open_device);
	tcase_add_test(thin, resize_grows_active_thin);
	tcase_add_test(thin, open_thin_remakes_missing_or_stale_device_node);
	tcase_add_test(thin, for_each_active_lists_only_this_pools_devices);
	tcase_add_test(thin, grows_embedded_metadata_up_to_its_maximum);
	tcase_add_test(thin, walks_a_thin_devices_mappings_as_thin_dump_reads_them);
	suite_add_tcase(s, thin);
	tcase_set_timeout(pool, 60);
	/* "walk": a pool of 10000 thin devices, made one message at a time. */
	tcase_set_timeout(walk, 900);
	tcase_add_test(walk, walks_every_device_as_thin_dump_does_at_1_1000_and_10000);
	tcase_add_test(pool, opens_embedded_pool_with_error_if_no_space_on_sparse_files);
	tcase_add_test(pool, create_thin_of_taken_id_is_eexist);
	tcase_add_test(pool, thin_exists_answers_and_writes_no_metadata);
	tcase_add_test(pool, snapshot_of_missing_origin_is_enoent);
	tcase_add_test(pool, delete_of_missing_id_is_enoent);
	tcase_add_test(pool, delete_of_active_id_is_ebusy_and_frees_the_id_once_inactive);
	tcase_add_test(pool, set_transaction_id_rejects_wrong_old_id);
	tcase_add_test(pool, refuses_to_touch_device_without_our_uuid);
	tcase_add_test(pool, refuses_pool_name_taken_by_another_device);
	tcase_add_test(pool, embedded_pool_reattaches_after_close);
	tcase_add_test(pool, embedded_pool_comes_back_over_its_files_after_removal);
	tcase_add_test(pool, open_resumes_thin_left_suspended_by_a_crash);
	tcase_add_test(pool, existing_pool_is_attached_by_name_and_left_alone);
	tcase_add_test(pool, own_pool_on_devices_carries_our_uuid_and_reattaches);
	tcase_add_test(pool, full_pool_fails_writes_with_enospc_until_trimmed);
	tcase_add_test(pool, rejects_bad_arguments);
	tcase_add_test(pool, releases_a_metadata_snapshot_left_held);
	suite_add_tcase(s, pool);
	suite_add_tcase(s, walk);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_VERBOSE);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
