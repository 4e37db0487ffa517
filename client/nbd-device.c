/* NBD devices as sysfs shows them (see nbd-device.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tp-backoff.h"
#include "tp-cleanup.h"
#include "nbd-device.h"

static void cleanup_dir(DIR **d)
{
	if (*d != NULL)
		closedir(*d);
}
#define CLEANUP_DIR __attribute__((cleanup(cleanup_dir)))

/* A decimal number without sign or leading zeros (but "0"), at most MAX. */
static int parse_index(const char *s, int max, int *ret_index)
{
	long v = 0;

	if (s[0] < '0' || s[0] > '9' || (s[0] == '0' && s[1] != '\0'))
		return -EINVAL;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (*s - '0');
		if (v > max)
			return -EINVAL;
	}
	*ret_index = (int)v;
	return 0;
}

int nbd_device_parse(const char *s, int *ret_index)
{
	if (strncmp(s, "/dev/", 5) == 0)
		s += 5;
	if (strncmp(s, "nbd", 3) != 0)
		return -EINVAL;
	return parse_index(s + 3, NBD_DEVICE_INDEX_MAX, ret_index);
}

/* Read the first line of sysfs file /sys/block/nbdINDEX/NAME into BUF, without its
 * newline. */
static int read_attr(int index, const char *name, char *buf, size_t len)
{
	CLEANUP_FCLOSE FILE *f = NULL;
	char path[320];
	size_t n;

	snprintf(path, sizeof path, "/sys/block/nbd%d/%s", index, name);
	f = fopen(path, "re");
	if (f == NULL)
		return -errno;
	if (fgets(buf, (int)len, f) == NULL)
		return ferror(f) ? -EIO : -ENODATA;
	n = strlen(buf);
	if (n > 0 && buf[n - 1] == '\n')
		buf[n - 1] = '\0';
	return 0;
}

static bool has_attr(int index, const char *name)
{
	char path[96];

	snprintf(path, sizeof path, "/sys/block/nbd%d/%s", index, name);
	return access(path, F_OK) == 0;
}

bool nbd_device_exists(int index)
{
	return has_attr(index, "dev");
}

/* The kernel creates "pid" when it starts a device and removes it when the device's
 * configuration goes, for netlink and ioctl devices alike. */
bool nbd_device_connected(int index)
{
	return has_attr(index, "pid");
}

int nbd_device_backend(int index, char *buf, size_t len)
{
	int r = read_attr(index, "backend", buf, len);

	if (r == 0 && buf[0] == '\0')
		return -ENOENT;
	return r == -ENODATA ? -ENOENT : r;
}

int nbd_device_size(int index, uint64_t *ret_size)
{
	char buf[32], *end;
	unsigned long long sectors;
	int r;

	r = read_attr(index, "size", buf, sizeof buf);
	if (r < 0)
		return r;
	errno = 0;
	sectors = strtoull(buf, &end, 10);
	if (errno != 0 || *end != '\0' || end == buf || sectors > UINT64_MAX / 512)
		return -EBADMSG;
	*ret_size = (uint64_t)sectors * 512;
	return 0;
}

int nbd_device_read_only(int index, bool *ret_read_only)
{
	char buf[8];
	int r;

	r = read_attr(index, "ro", buf, sizeof buf);
	if (r < 0)
		return r;
	*ret_read_only = strcmp(buf, "0") != 0;
	return 0;
}

static int compare_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

int nbd_device_list(int **ret_indices, size_t *ret_n)
{
	CLEANUP_DIR DIR *d = opendir("/sys/block");
	CLEANUP_FREE int *indices = NULL;
	size_t n = 0, size = 0;
	struct dirent *e;

	if (d == NULL)
		return -errno;
	while ((e = readdir(d)) != NULL) {
		int index;

		if (nbd_device_parse(e->d_name, &index) < 0)
			continue;
		if (n == size) {
			int *grown = reallocarray(indices, size ? 2 * size : 16, sizeof *grown);

			if (grown == NULL)
				return -ENOMEM;
			indices = grown;
			size = size ? 2 * size : 16;
		}
		indices[n++] = index;
	}
	if (n > 0)
		qsort(indices, n, sizeof *indices, compare_int);
	*ret_indices = TAKE_PTR(indices);
	*ret_n = n;
	return 0;
}

bool nbd_device_claimed(int index)
{
	char path[32];
	int fd;

	/* O_EXCL on a block device is an exclusive claim, which fails while another holds
	 * one (a mount, an md array, a dm map). */
	snprintf(path, sizeof path, "/dev/nbd%d", index);
	fd = open(path, O_RDONLY | O_EXCL | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return errno == EBUSY;
	close(fd);
	return false;
}

bool nbd_device_wait_unclaimed(int index, long ms)
{
	for (long waited = 0, step = 1; waited < ms; waited += tp_backoff(&step))
		if (!nbd_device_claimed(index))
			return true;
	return !nbd_device_claimed(index);
}

bool nbd_driver_present(void)
{
	CLEANUP_DIR DIR *d = NULL;
	struct dirent *e;
	int index;

	if (access("/sys/module/nbd", F_OK) == 0)
		return true;
	d = opendir("/dev");
	while (d != NULL && (e = readdir(d)) != NULL)
		if (e->d_type == DT_BLK && nbd_device_parse(e->d_name, &index) == 0)
			return true;
	return false;
}

/* Undo mountinfo's octal escapes (\040 for a space) in S, in place. */
static void unescape(char *s)
{
	char *out = s;

	for (; *s != '\0'; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*out++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*out++ = *s;
		}
	}
	*out = '\0';
}

/* Whether "MAJOR:MINOR" DEV is the device INDEX or one of its partitions. */
static bool is_ours(int index, const char *dev)
{
	CLEANUP_DIR DIR *d = NULL;
	char mine[32], path[96], prefix[32];
	struct dirent *e;

	if (read_attr(index, "dev", mine, sizeof mine) == 0 && strcmp(mine, dev) == 0)
		return true;
	snprintf(path, sizeof path, "/sys/block/nbd%d", index);
	snprintf(prefix, sizeof prefix, "nbd%dp", index);
	d = opendir(path);
	if (d == NULL)
		return false;
	while ((e = readdir(d)) != NULL) {
		char attr[sizeof e->d_name + 8];

		if (strncmp(e->d_name, prefix, strlen(prefix)) != 0)
			continue;
		snprintf(attr, sizeof attr, "%s/dev", e->d_name);
		if (read_attr(index, attr, mine, sizeof mine) == 0 && strcmp(mine, dev) == 0)
			return true;
	}
	return false;
}

int nbd_device_user(int index, char *buf, size_t len)
{
	CLEANUP_FCLOSE FILE *f = fopen("/proc/self/mountinfo", "re");
	CLEANUP_DIR DIR *holders = NULL;
	CLEANUP_FREE char *line = NULL;
	size_t size = 0;
	struct dirent *e;
	char path[96];

	while (f != NULL && getline(&line, &size, f) > 0) {
		char dev[32], mount_point[4096];

		/* "ID PARENT MAJOR:MINOR ROOT MOUNT-POINT ..." */
		if (sscanf(line, "%*s %*s %31s %*s %4095s", dev, mount_point) != 2)
			continue;
		if (is_ours(index, dev)) {
			unescape(mount_point);
			snprintf(buf, len, "mounted on %s", mount_point);
			return 0;
		}
	}
	snprintf(path, sizeof path, "/sys/block/nbd%d/holders", index);
	holders = opendir(path);
	while (holders != NULL && (e = readdir(holders)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(buf, len, "held by %s", e->d_name);
		return 0;
	}
	return -ENOENT;
}
