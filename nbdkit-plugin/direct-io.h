/* Direct I/O for the plugin (cache mode none): reads and writes of any byte range, from
 * and to buffers at any address, on a device opened O_DIRECT, which itself takes only
 * whole logical blocks at block-aligned offsets from block-aligned memory.
 *
 * Whatever is not aligned goes through an aligned bounce buffer of the calling thread. A
 * write that covers part of a block reads the block, changes it and writes it back
 * (read-modify-write); that excludes every other write to the same device for its
 * duration, while aligned writes share, so that neither undoes the other. Each function
 * returns 0, or -1 with errno set, and logs nothing: the caller says what failed. */
#ifndef THINPROXY_PLUGIN_DIRECT_IO_H
#define THINPROXY_PLUGIN_DIRECT_IO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* Internal to the plugin: the .so exports only what nbdkit looks up in it (plugin_init,
 * the debug flags). */
#pragma GCC visibility push(hidden)

/* One open device. */
struct direct_io {
	int fd;                 /* the caller's */
	uint32_t align;         /* offsets, lengths and buffer addresses: the logical block */
	pthread_rwlock_t *lock; /* the device's: aligned writes share it, RMW excludes */
};

/* Set up *RET_D for FD, open O_DIRECT on the device KEY (any number that names the
 * device: writes to one device must use one key). The block is the device's logical
 * block size (BLKSSZGET), 512 for a regular file or if the device does not say. */
int direct_io_init(int fd, uint64_t key, struct direct_io *ret_d);

/* Read COUNT bytes at OFFSET into BUF. Short of COUNT at the end of the device: EIO. */
int direct_io_pread(const struct direct_io *d, void *buf, uint32_t count, uint64_t offset);

/* Write COUNT bytes of BUF at OFFSET. */
int direct_io_pwrite(const struct direct_io *d, const void *buf, uint32_t count, uint64_t offset);

/* Hold D's device against read-modify-writes while the caller changes whole blocks by
 * other means (BLKZEROOUT, BLKDISCARD), which a read-modify-write of one of them would
 * otherwise undo; direct_io_release ends it. Keeps errno. */
void direct_io_hold(const struct direct_io *d);
void direct_io_release(const struct direct_io *d);

/* Counters for tests and -D thinproxy.direct=1: requests served in place, through a bounce
 * buffer, and by read-modify-write, since the process started. */
struct direct_io_stats {
	uint64_t in_place, bounced, rmw;
};
void direct_io_get_stats(struct direct_io_stats *ret_stats);

#pragma GCC visibility pop

#endif
