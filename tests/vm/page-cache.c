/* page-cache: how much of a block device the host's page cache holds, for the tests of
 * cache mode none (tests/vm/test-thinproxy-attach.sh).
 *
 *   page-cache DEVICE
 *
 * Maps DEVICE (a block device, or a /proc/PID/fd/N link to one) shared and read-only
 * and asks mincore(2) which of its pages are resident: they are the device's page
 * cache, which mapping reads nothing into. Prints the count of resident pages; exits 1
 * with a message if the device cannot be mapped. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long page = sysconf(_SC_PAGESIZE);
	unsigned char *vec;
	uint64_t size, resident = 0;
	size_t pages;
	void *map;
	int fd;

	if (argc != 2) {
		fprintf(stderr, "usage: page-cache DEVICE\n");
		return 2;
	}
	fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, BLKGETSIZE64, &size) < 0) {
		fprintf(stderr, "page-cache: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	pages = (size_t)((size + (uint64_t)page - 1) / (uint64_t)page);
	map = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
	vec = malloc(pages ? pages : 1);
	if (map == MAP_FAILED || vec == NULL || mincore(map, (size_t)size, vec) < 0) {
		fprintf(stderr, "page-cache: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	for (size_t i = 0; i < pages; i++)
		resident += vec[i] & 1;
	printf("%llu\n", (unsigned long long)resident);
	return 0;
}
