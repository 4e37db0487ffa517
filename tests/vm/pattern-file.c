/* pattern-file: write a file of a known pattern as fast as the page cache takes it, and
 * check it later, for the guest tests: one process, however large the file (exec is
 * slow in the guest).
 *
 *   pattern-file write PATH MIB
 *   pattern-file check PATH MIB
 *
 * The pattern: every 4 KiB block starts with its own offset (so a block written to the
 * wrong place, or lost, shows), then bytes of a fixed pseudo-random sequence. "write"
 * creates PATH and writes MIB MiB with plain write(2)s, no fsync until the end, so that
 * dirty pages pile up as fast as memory allows; then fsyncs, and prints how long each
 * part took. "check" reads PATH back and names the first block that differs. Both exit
 * 0 on success, 1 on a mismatch or an error, 2 on bad usage. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1u << 20)
#define BLOCK 4096u

static unsigned char pattern[CHUNK], buf[CHUNK];

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The pattern of the chunk at OFFSET into PATTERN. */
static void stamp(uint64_t offset)
{
	for (uint32_t b = 0; b < CHUNK; b += BLOCK) {
		uint64_t at = offset + b;

		memcpy(pattern + b, &at, sizeof at);
	}
}

static int write_file(const char *path, uint64_t mib)
{
	double start = now(), written;
	int fd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "pattern-file: %s: %m\n", path);
		return 1;
	}
	for (uint64_t i = 0; i < mib; i++) {
		size_t done = 0;

		stamp(i * CHUNK);
		while (done < CHUNK) {
			ssize_t n = write(fd, pattern + done, CHUNK - done);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				fprintf(stderr, "pattern-file: write %s at %" PRIu64 " MiB: %m\n",
				        path, i);
				close(fd);
				return 1;
			}
			done += (size_t)n;
		}
	}
	written = now();
	if (fsync(fd) < 0 || close(fd) < 0) {
		fprintf(stderr, "pattern-file: fsync %s: %m\n", path);
		return 1;
	}
	printf("pattern-file: wrote %" PRIu64 " MiB in %.1f s, fsync took %.1f s\n", mib,
	       written - start, now() - written);
	return 0;
}

static int check_file(const char *path, uint64_t mib)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		fprintf(stderr, "pattern-file: %s: %m\n", path);
		return 1;
	}
	for (uint64_t i = 0; i < mib; i++) {
		size_t done = 0;

		while (done < CHUNK) {
			ssize_t n = read(fd, buf + done, CHUNK - done);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				fprintf(stderr, "pattern-file: %s ends at %" PRIu64 " MiB: %s\n",
				        path, i, n == 0 ? "short" : strerror(errno));
				close(fd);
				return 1;
			}
			done += (size_t)n;
		}
		stamp(i * CHUNK);
		for (uint32_t b = 0; b < CHUNK; b += BLOCK)
			if (memcmp(buf + b, pattern + b, BLOCK) != 0) {
				fprintf(stderr,
				        "pattern-file: %s: the block at %" PRIu64 " differs\n",
				        path, i * CHUNK + b);
				close(fd);
				return 1;
			}
	}
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t seed = 0x9e3779b97f4a7c15u, mib;
	char *end;

	if (argc != 4 || (strcmp(argv[1], "write") != 0 && strcmp(argv[1], "check") != 0)) {
		fprintf(stderr, "usage: pattern-file write|check PATH MIB\n");
		return 2;
	}
	errno = 0;
	mib = strtoull(argv[3], &end, 10);
	if (errno != 0 || end == argv[3] || *end != '\0' || mib == 0) {
		fprintf(stderr, "pattern-file: bad size in MiB: %s\n", argv[3]);
		return 2;
	}
	/* The fixed part: xorshift64, the same every run. */
	for (size_t i = 0; i < CHUNK; i += sizeof seed) {
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		memcpy(pattern + i, &seed, sizeof seed);
	}
	return argv[1][0] == 'w' ? write_file(argv[2], mib) : check_file(argv[2], mib);
}
