/* Unit tests for nbdkit-plugin/direct-io.c: byte-granular reads and writes, from buffers at
 * any address, through real O_DIRECT, held against a reference copy in memory.
 *
 * The devices are loop devices over files in /var/tmp, one with 512-byte and one with
 * 4096-byte logical blocks, where this host can make them (root, the loop driver); else
 * a file in /var/tmp opened O_DIRECT, whose filesystem then sets the block. Without any
 * of these (a filesystem that refuses O_DIRECT, as tmpfs does) the test is skipped. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../nbdkit-plugin/direct-io.h"
#include "tp-cleanup.h"

#define DEV_SIZE (UINT64_C(4) << 20)

/* The devices under test: a path, and the block it must report (0: whatever the file's
 * filesystem says). */
static struct {
	char path[64], backing[64];
	uint32_t block;
	bool loop;
} devs[2];
static size_t n_devs;

/* A deterministic pseudo-random stream (xorshift64*), one per test and thread. */
static uint64_t next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * UINT64_C(2685821657736338717);
}

static void fill(uint64_t *s, char *buf, size_t n)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (char)(next(s) >> 56);
}

/* Open device I O_DIRECT, set it up, and fill it and *RET_REF (DEV_SIZE bytes) with the
 * same random bytes. */
static int open_filled(size_t i, struct direct_io *ret_d, char **ret_ref)
{
	uint64_t seed = 0x1234567 + i;
	struct stat st;
	char *ref;
	int fd;

	fd = open(devs[i].path, O_RDWR | O_DIRECT | O_CLOEXEC);
	ck_assert_msg(fd >= 0, "open %s: %s", devs[i].path, strerror(errno));
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_int_eq(direct_io_init(fd, (uint64_t)st.st_rdev ^ st.st_ino, ret_d), 0);
	if (devs[i].block != 0)
		ck_assert_uint_eq(ret_d->align, devs[i].block);
	ck_assert_int_eq(posix_memalign((void **)&ref, 4096, DEV_SIZE), 0);
	fill(&seed, ref, DEV_SIZE);
	ck_assert_int_eq(pwrite(fd, ref, DEV_SIZE, 0), (ssize_t)DEV_SIZE);
	*ret_ref = ref;
	return fd;
}

/* Check that the whole device, read aligned past direct-io.c, equals REF. */
static void check_device(int fd, const char *ref)
{
	CLEANUP_FREE char *buf = NULL;

	ck_assert_int_eq(posix_memalign((void **)&buf, 4096, DEV_SIZE), 0);
	ck_assert_int_eq(pread(fd, buf, DEV_SIZE, 0), (ssize_t)DEV_SIZE);
	for (uint64_t off = 0; off < DEV_SIZE; off++)
		if (buf[off] != ref[off])
			ck_abort_msg("device differs from the reference at byte %" PRIu64, off);
}

/* A request: a length from 1 byte to 3 blocks and a bit, anywhere on the device. */
static void random_request(uint64_t *s, uint32_t block, uint32_t *ret_count, uint64_t *ret_offset)
{
	uint32_t count = 1 + (uint32_t)(next(s) % (3 * block + 100));
	uint64_t offset = next(s) % (DEV_SIZE - count + 1);

	/* Every fourth one starts on a block, every eighth one is whole blocks. */
	if (next(s) % 4 == 0)
		offset &= ~(uint64_t)(block - 1);
	if (next(s) % 8 == 0)
		count = (count + block - 1) & ~(block - 1);
	if (offset + count > DEV_SIZE)
		offset = DEV_SIZE - count;
	*ret_count = count;
	*ret_offset = offset;
}

START_TEST(reads_any_byte_range_into_any_buffer)
{
	for (size_t i = 0; i < n_devs; i++) {
		CLEANUP_FREE char *ref = NULL, *mem = NULL;
		struct direct_io d;
		CLEANUP_CLOSE int fd = open_filled(i, &d, &ref);
		uint64_t s = 42 + i;

		ck_assert_int_eq(posix_memalign((void **)&mem, 4096, 4 * d.align + 8192), 0);
		for (int k = 0; k < 2000; k++) {
			/* The buffer at any address: nbdkit 1.32 promises none. */
			size_t shift = next(&s) % 2 ? 0 : next(&s) % d.align;
			uint32_t count;
			uint64_t offset;

			random_request(&s, d.align, &count, &offset);
			memset(mem, 0xee, 4 * d.align + 8192);
			ck_assert_int_eq(direct_io_pread(&d, mem + shift, count, offset), 0);
			ck_assert_msg(memcmp(mem + shift, ref + offset, count) == 0,
			              "%s: read %" PRIu32 " at %" PRIu64 " into +%zu", devs[i].path,
			              count, offset, shift);
			/* Nothing written around the buffer. */
			ck_assert_int_eq((unsigned char)mem[shift + count], 0xee);
			if (shift > 0)
				ck_assert_int_eq((unsigned char)mem[shift - 1], 0xee);
		}
	}
}
END_TEST

START_TEST(writes_any_byte_range_from_any_buffer)
{
	for (size_t i = 0; i < n_devs; i++) {
		CLEANUP_FREE char *ref = NULL, *mem = NULL;
		struct direct_io d;
		CLEANUP_CLOSE int fd = open_filled(i, &d, &ref);
		uint64_t s = 4242 + i;

		ck_assert_int_eq(posix_memalign((void **)&mem, 4096, 4 * d.align + 8192), 0);
		for (int k = 0; k < 2000; k++) {
			size_t shift = next(&s) % 2 ? 0 : next(&s) % d.align;
			uint32_t count;
			uint64_t offset;

			random_request(&s, d.align, &count, &offset);
			fill(&s, mem + shift, count);
			ck_assert_int_eq(direct_io_pwrite(&d, mem + shift, count, offset), 0);
			memcpy(ref + offset, mem + shift, count);
		}
		check_device(fd, ref);
	}
}
END_TEST

START_TEST(writes_single_bytes_at_both_ends_of_the_device)
{
	for (size_t i = 0; i < n_devs; i++) {
		CLEANUP_FREE char *ref = NULL;
		struct direct_io d;
		CLEANUP_CLOSE int fd = open_filled(i, &d, &ref);
		char c = 'x', got = 0;

		ck_assert_int_eq(direct_io_pwrite(&d, &c, 1, 0), 0);
		ck_assert_int_eq(direct_io_pwrite(&d, &c, 1, DEV_SIZE - 1), 0);
		ref[0] = ref[DEV_SIZE - 1] = c;
		ck_assert_int_eq(direct_io_pread(&d, &got, 1, DEV_SIZE - 1), 0);
		ck_assert_int_eq(got, c);
		check_device(fd, ref);
		/* Past the end: an error, not a short read. */
		ck_assert_int_eq(direct_io_pread(&d, &got, 2, DEV_SIZE - 1), -1);
		ck_assert_int_eq(errno, EIO);
	}
}
END_TEST

START_TEST(serves_aligned_requests_without_copying)
{
	for (size_t i = 0; i < n_devs; i++) {
		CLEANUP_FREE char *ref = NULL, *mem = NULL;
		struct direct_io d;
		CLEANUP_CLOSE int fd = open_filled(i, &d, &ref);
		struct direct_io_stats before, after;

		ck_assert_int_eq(posix_memalign((void **)&mem, 4096, 65536), 0);
		direct_io_get_stats(&before);
		ck_assert_int_eq(direct_io_pread(&d, mem, 65536, 8 * d.align), 0);
		ck_assert_int_eq(direct_io_pwrite(&d, mem, 65536, 16 * d.align), 0);
		direct_io_get_stats(&after);
		ck_assert_uint_eq(after.in_place - before.in_place, 2);
		ck_assert_uint_eq(after.bounced - before.bounced, 0);
		ck_assert_uint_eq(after.rmw - before.rmw, 0);
		memcpy(ref + 16 * d.align, ref + 8 * d.align, 65536);
		check_device(fd, ref);

		/* Aligned range, misaligned buffer: copied, not read-modify-written. */
		ck_assert_int_eq(direct_io_pwrite(&d, mem + 1, d.align, 0), 0);
		direct_io_get_stats(&before);
		ck_assert_uint_eq(before.bounced - after.bounced, 1);
		ck_assert_uint_eq(before.rmw - after.rmw, 0);
	}
}
END_TEST

/* Concurrent writers: each owns bytes no other writes, all of them in blocks that the
 * others' bytes share, none of them whole blocks. */
#define WRITERS 8
#define ROUNDS  300

struct writer {
	const struct direct_io *d;
	uint64_t offset;
	uint32_t count;
	int round; /* what its bytes hold after the last write */
	int error;
};

static void *write_rounds(void *arg)
{
	struct writer *w = arg;
	char buf[4096 + 1];

	for (int r = 0; r < ROUNDS; r++) {
		/* An odd address too: the buffer is never aligned. */
		memset(buf + 1, 'A' + r % 26, w->count);
		if (direct_io_pwrite(w->d, buf + 1, w->count, w->offset) < 0) {
			w->error = errno;
			return NULL;
		}
		w->round = r;
	}
	return NULL;
}

START_TEST(keeps_concurrent_unaligned_writes_to_the_same_block)
{
	for (size_t i = 0; i < n_devs; i++) {
		CLEANUP_FREE char *ref = NULL;
		struct direct_io d;
		CLEANUP_CLOSE int fd = open_filled(i, &d, &ref);
		struct writer w[WRITERS];
		pthread_t t[WRITERS];
		/* 8 writers over 3 blocks, their ranges touching, straddling each boundary. */
		uint32_t span = 3 * d.align / WRITERS;
		uint64_t base = 5 * d.align + 7;

		for (int k = 0; k < WRITERS; k++) {
			w[k] = (struct writer){.d = &d,
			                       .offset = base + (uint64_t)k * span,
			                       .count = span - (k % 2),
			                       .round = -1};
			ck_assert_int_eq(pthread_create(&t[k], NULL, write_rounds, &w[k]), 0);
		}
		for (int k = 0; k < WRITERS; k++) {
			ck_assert_int_eq(pthread_join(t[k], NULL), 0);
			ck_assert_msg(w[k].error == 0, "writer %d: %s", k, strerror(w[k].error));
			ck_assert_int_eq(w[k].round, ROUNDS - 1);
			memset(ref + w[k].offset, 'A' + (ROUNDS - 1) % 26, w[k].count);
		}
		check_device(fd, ref);
	}
}
END_TEST

/* Make a loop device over a new file in /var/tmp with logical blocks of BLOCK bytes into
 * devs[n_devs]; false if this host cannot. */
static bool add_loop(uint32_t block)
{
	char cmd[512];
	FILE *p;
	int fd;

	snprintf(devs[n_devs].backing, sizeof devs[n_devs].backing, "/var/tmp/tp-direct-io.XXXXXX");
	fd = mkstemp(devs[n_devs].backing);
	if (fd < 0)
		return false;
	if (ftruncate(fd, DEV_SIZE) < 0) {
		close(fd);
		unlink(devs[n_devs].backing);
		return false;
	}
	close(fd);
	snprintf(cmd, sizeof cmd, "losetup --find --show --sector-size %" PRIu32 " %s 2>/dev/null",
	         block, devs[n_devs].backing);
	p = popen(cmd, "r");
	if (p == NULL || fgets(devs[n_devs].path, sizeof devs[n_devs].path, p) == NULL ||
	    pclose(p) != 0) {
		unlink(devs[n_devs].backing);
		return false;
	}
	devs[n_devs].path[strcspn(devs[n_devs].path, "\n")] = '\0';
	devs[n_devs].block = block;
	devs[n_devs].loop = true;
	n_devs++;
	return true;
}

/* A plain file in /var/tmp, if its filesystem takes O_DIRECT. */
static bool add_file(void)
{
	char *path = devs[n_devs].path;
	int fd;

	snprintf(path, sizeof devs[n_devs].path, "/var/tmp/tp-direct-io.XXXXXX");
	fd = mkstemp(path);
	if (fd < 0)
		return false;
	close(fd);
	fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (fd < 0 || ftruncate(fd, DEV_SIZE) < 0) {
		if (fd >= 0)
			close(fd);
		unlink(path);
		return false;
	}
	close(fd);
	memcpy(devs[n_devs].backing, path, sizeof devs[n_devs].backing);
	n_devs++;
	return true;
}

int main(void)
{
	Suite *s = suite_create("direct-io");
	TCase *tc = tcase_create("direct-io");
	SRunner *sr;
	int failed;

	if (geteuid() == 0 && add_loop(512))
		add_loop(4096);
	if (n_devs == 0 && !add_file()) {
		fprintf(stderr, "test-direct-io: no loop device and no O_DIRECT in /var/tmp, "
		                "skipped\n");
		return 77;
	}
	for (size_t i = 0; i < n_devs; i++)
		fprintf(stderr, "test-direct-io: %s (%s)\n", devs[i].path,
		        devs[i].loop ? "loop device" : "file");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, reads_any_byte_range_into_any_buffer);
	tcase_add_test(tc, writes_any_byte_range_from_any_buffer);
	tcase_add_test(tc, writes_single_bytes_at_both_ends_of_the_device);
	tcase_add_test(tc, serves_aligned_requests_without_copying);
	tcase_add_test(tc, keeps_concurrent_unaligned_writes_to_the_same_block);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	for (size_t i = 0; i < n_devs; i++) {
		char cmd[512];

		if (devs[i].loop) {
			snprintf(cmd, sizeof cmd, "losetup -d %s", devs[i].path);
			if (system(cmd) != 0)
				fprintf(stderr, "test-direct-io: %s: losetup -d failed\n",
				        devs[i].path);
		}
		unlink(devs[i].backing);
	}
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
