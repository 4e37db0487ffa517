/* Direct I/O at any offset, length and buffer address (direct-io.h). */
#include <errno.h>
#include <linux/fs.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "direct-io.h"

/* Locks, one per stripe of device keys: two devices may share one, which costs only
 * waiting, never correctness. */
#define LOCK_STRIPES 64
/* A thread keeps its bounce buffer up to this size between requests; a larger request
 * gets one of its own. nbdkit runs up to 16 threads per connection. */
#define BOUNCE_KEEP (1024 * 1024 + 2 * 4096)
/* Bounce buffers are page-aligned, or block-aligned where the block is larger. */
#define PAGE_ALIGN 4096
/* The largest block we accept from a device or file. */
#define ALIGN_MAX 65536

static pthread_rwlock_t locks[LOCK_STRIPES];
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_key_t bounce_key;
static int once_error;
static atomic_uint_fast64_t n_in_place, n_bounced, n_rmw;

/* A thread's kept bounce buffer. */
struct bounce {
	void *p;
	size_t size, align;
};

static void bounce_free(void *ptr)
{
	struct bounce *b = ptr;

	free(b->p);
	free(b);
}

static void init_once(void)
{
	pthread_rwlockattr_t attr;

	/* A read-modify-write must not wait behind a stream of aligned writes. */
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	for (size_t i = 0; i < LOCK_STRIPES; i++)
		pthread_rwlock_init(&locks[i], &attr);
	pthread_rwlockattr_destroy(&attr);
	once_error = pthread_key_create(&bounce_key, bounce_free);
}

/* A power of two in [512, ALIGN_MAX], or 0. */
static uint32_t block_or_zero(uint64_t n)
{
	return n >= 512 && n <= ALIGN_MAX && (n & (n - 1)) == 0 ? (uint32_t)n : 0;
}

int direct_io_init(int fd, uint64_t key, struct direct_io *ret_d)
{
	struct stat st;
	uint32_t align = 512;
	int lbs;

	pthread_once(&once, init_once);
	if (once_error != 0) {
		errno = once_error;
		return -1;
	}
	if (fstat(fd, &st) < 0)
		return -1;
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKSSZGET, &lbs) == 0 && block_or_zero((uint64_t)lbs) != 0)
			align = (uint32_t)lbs;
	} else if (block_or_zero((uint64_t)st.st_blksize) != 0) {
		/* A regular file (the unit tests' stand-in) has no logical block to ask for;
		 * its filesystem's block is never smaller than the device's sector. */
		align = (uint32_t)st.st_blksize;
	}
	ret_d->fd = fd;
	ret_d->align = align;
	ret_d->lock = &locks[(key * UINT64_C(0x9e3779b97f4a7c15)) >> 58];
	return 0;
}

void direct_io_hold(const struct direct_io *d)
{
	pthread_rwlock_rdlock(d->lock);
}

void direct_io_release(const struct direct_io *d)
{
	int saved = errno;

	pthread_rwlock_unlock(d->lock);
	errno = saved;
}

void direct_io_get_stats(struct direct_io_stats *ret_stats)
{
	ret_stats->in_place = atomic_load(&n_in_place);
	ret_stats->bounced = atomic_load(&n_bounced);
	ret_stats->rmw = atomic_load(&n_rmw);
}

/* An aligned buffer of SIZE bytes: the thread's kept one, or one of its own for a large
 * request (bounce_put frees it). NULL with errno set. */
static void *bounce_get(size_t size, size_t align)
{
	struct bounce *b;
	void *p;
	int r;

	if (align < PAGE_ALIGN)
		align = PAGE_ALIGN;
	b = pthread_getspecific(bounce_key);
	if (size > BOUNCE_KEEP) {
		r = posix_memalign(&p, align, size);
		errno = r;
		return r == 0 ? p : NULL;
	}
	if (b == NULL) {
		b = calloc(1, sizeof *b);
		if (b == NULL)
			return NULL;
		r = pthread_setspecific(bounce_key, b);
		if (r != 0) {
			free(b);
			errno = r;
			return NULL;
		}
	}
	if (b->size < size || b->align < align) {
		/* Grow in steps of 64 KiB, so that a thread does not reallocate for every
		 * request a little larger than the last. */
		size_t want = (size + 65535) & ~(size_t)65535;

		free(b->p);
		b->p = NULL;
		b->size = 0;
		r = posix_memalign(&p, align, want > BOUNCE_KEEP ? BOUNCE_KEEP : want);
		if (r != 0) {
			errno = r;
			return NULL;
		}
		b->p = p;
		b->size = want > BOUNCE_KEEP ? BOUNCE_KEEP : want;
		b->align = align;
	}
	return b->p;
}

/* Give back P, which bounce_get returned. */
static void bounce_put(void *p)
{
	struct bounce *b = pthread_getspecific(bounce_key);

	if (b == NULL || p != b->p)
		free(p);
}

/* Read up to COUNT bytes at OFFSET into BUF, all of them unless the end of the device
 * comes first; the number read in *RET_DONE. */
static int read_upto(int fd, char *buf, size_t count, uint64_t offset, size_t *ret_done)
{
	size_t done = 0;

	while (done < count) {
		ssize_t n = pread(fd, buf + done, count - done, (off_t)(offset + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	*ret_done = done;
	return 0;
}

/* Write COUNT bytes of BUF at OFFSET, all of them. */
static int write_all(int fd, const char *buf, size_t count, uint64_t offset)
{
	while (count > 0) {
		ssize_t n = pwrite(fd, buf, count, (off_t)offset);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0) {
			errno = ENOSPC;
			return -1;
		}
		buf += n;
		count -= (size_t)n;
		offset += (uint64_t)n;
	}
	return 0;
}

static bool aligned(const struct direct_io *d, uint64_t n)
{
	return (n & (d->align - 1)) == 0;
}

int direct_io_pread(const struct direct_io *d, void *buf, uint32_t count, uint64_t offset)
{
	uint64_t start = offset & ~(uint64_t)(d->align - 1);
	uint64_t end = (offset + count + d->align - 1) & ~(uint64_t)(d->align - 1);
	size_t done;
	char *b;

	if (count == 0)
		return 0;
	if (aligned(d, offset | count | (uintptr_t)buf)) {
		atomic_fetch_add(&n_in_place, 1);
		if (read_upto(d->fd, buf, count, offset, &done) < 0)
			return -1;
		if (done < count) {
			errno = EIO;
			return -1;
		}
		return 0;
	}
	/* Read the whole blocks around the range and copy out the part asked for. No lock:
	 * a read during a read-modify-write sees the block before or after it, as it would
	 * any other write. */
	atomic_fetch_add(&n_bounced, 1);
	b = bounce_get(end - start, d->align);
	if (b == NULL)
		return -1;
	if (read_upto(d->fd, b, end - start, start, &done) < 0) {
		bounce_put(b);
		return -1;
	}
	if (done < offset + count - start) {
		bounce_put(b);
		errno = EIO;
		return -1;
	}
	memcpy(buf, b + (offset - start), count);
	bounce_put(b);
	return 0;
}

/* Read the block at OFFSET into BUF for a read-modify-write; past the end of a regular
 * file it reads as zeroes. */
static int read_block(const struct direct_io *d, char *buf, uint64_t offset)
{
	size_t done;

	if (read_upto(d->fd, buf, d->align, offset, &done) < 0)
		return -1;
	memset(buf + done, 0, d->align - done);
	return 0;
}

/* Write the range [OFFSET, OFFSET+COUNT) that is not whole blocks: read the first and last
 * block where the range covers only part of them, copy BUF over, write the blocks back.
 * The caller holds the device's lock exclusively. */
static int write_rmw(const struct direct_io *d, const void *buf, uint32_t count, uint64_t offset)
{
	uint64_t start = offset & ~(uint64_t)(d->align - 1);
	uint64_t end = (offset + count + d->align - 1) & ~(uint64_t)(d->align - 1);
	size_t len = end - start;
	char *b = bounce_get(len, d->align);
	int r = -1;

	if (b == NULL)
		return -1;
	if (offset != start && read_block(d, b, start) < 0)
		goto out;
	if (offset + count != end && (end - d->align != start || offset == start) &&
	    read_block(d, b + len - d->align, end - d->align) < 0)
		goto out;
	memcpy(b + (offset - start), buf, count);
	r = write_all(d->fd, b, len, start);
out:
	bounce_put(b);
	return r;
}

int direct_io_pwrite(const struct direct_io *d, const void *buf, uint32_t count, uint64_t offset)
{
	int r, saved;
	char *b;

	if (count == 0)
		return 0;
	if (!aligned(d, offset | count)) {
		atomic_fetch_add(&n_rmw, 1);
		pthread_rwlock_wrlock(d->lock);
		r = write_rmw(d, buf, count, offset);
		saved = errno;
		pthread_rwlock_unlock(d->lock);
		errno = saved;
		return r;
	}
	/* Whole blocks: these share the lock, so that they wait only for a read-modify-write
	 * of the same device, which would otherwise write back what it read before them. */
	pthread_rwlock_rdlock(d->lock);
	if (aligned(d, (uintptr_t)buf)) {
		atomic_fetch_add(&n_in_place, 1);
		r = write_all(d->fd, buf, count, offset);
	} else {
		atomic_fetch_add(&n_bounced, 1);
		b = bounce_get(count, d->align);
		r = -1;
		if (b != NULL) {
			memcpy(b, buf, count);
			r = write_all(d->fd, b, count, offset);
			bounce_put(b);
		}
	}
	saved = errno;
	pthread_rwlock_unlock(d->lock);
	errno = saved;
	return r;
}
