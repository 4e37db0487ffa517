/* Block status for the plugin (.extents): each connection's map of its device, fetched
 * from the broker on first use and kept up to date with this process's writes. */
#ifndef THINPROXY_PLUGIN_EXTENTS_H
#define THINPROXY_PLUGIN_EXTENTS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Internal to the plugin: the .so exports only what nbdkit looks up in it (plugin_init,
 * the debug flags). */
#pragma GCC visibility push(hidden)

struct nbdkit_extents;

/* What names a device across handles: a block device's number, or a regular file's
 * filesystem and inode (the unit tests' stand-in for a device). */
struct dev_key {
	dev_t dev;
	ino_t ino;
};

/* One connection's block status. */
struct extents;

/* The block status of the SIZE bytes of device KEY, open as FD, that the broker opened as
 * REF; GRANULE is the pool's block size (0: unknown). FOLLOW_WRITES: the device may
 * change, so that the map must take in this process's writes. The result uses FD, which
 * stays the caller's, until extents_close. NULL with errno set if there is no memory. */
struct extents *extents_open(int fd, const char *ref, struct dev_key key, uint64_t size,
                             uint32_t granule, bool follow_writes);

/* Forget E (NULL is fine). */
void extents_close(struct extents *e);

/* Make [OFFSET, OFFSET+LEN), which this process just wrote, trimmed or zeroed through E's
 * device, data in every map of that device that follows writes. Keeps errno. */
void extents_note_written(const struct extents *e, uint64_t offset, uint64_t len);

/* Answer nbdkit's .extents for [OFFSET, OFFSET+COUNT) of E into OUT: from the map, or all
 * data if there is none to be had. Returns 0, or -1 with the error logged. */
int extents_answer(struct extents *e, uint32_t count, uint64_t offset, uint32_t flags,
                   struct nbdkit_extents *out);

#pragma GCC visibility pop

#endif
