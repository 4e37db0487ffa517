/* The snapshotter's side of the kernel: a snapshot's volume attached as /dev/nbdN
 * in-process (attach.h: the keeper stays behind, as after `thinproxy attach`), found
 * again after a restart through the client's registry, detached, given a file system,
 * and its inodes counted where it is mounted. Each returns 0 or -errno, with REASON
 * saying why not. */
#ifndef TP_SNAPSHOTTER_DEVICE_H
#define TP_SNAPSHOTTER_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mapping.h"

/* Where the tenant's NBD server is. */
struct device_target {
	const char *dir;    /* the socket directory */
	const char *tenant; /* NULL, or T for DIR/tenants/T/nbd.sock (host side) */
	char nbd_socket[108];
};

int device_target_init(struct device_target *t, const char *dir, const char *tenant);

/* The device attached to VOLUME through T's socket, in *RET_INDEX; -ENOENT if none. */
int device_find(const struct device_target *t, const char *volume, int *ret_index);
/* Attach VOLUME (read-only if READ_ONLY); the device in *RET_INDEX. A kernel or
 * container out of NBD devices is -ENOSPC. */
int device_attach(const struct device_target *t, const char *volume, bool read_only, int *ret_index,
                  char *reason, size_t len);
/* Detach device INDEX; -EBUSY (mounted, held) with REASON saying by what. With FREEZE, a
 * file system mounted on it in this mount namespace is frozen first (everything it holds
 * written, its journal clean) and thawed after: the device goes, with what was written
 * so far, and the mount is left without its device. */
int device_detach(int index, bool freeze, char *reason, size_t len);

/* Make file system FS on the empty device INDEX: fast on a thin device (nothing
 * discarded or zeroed: a new volume reads as zeroes), and without ext4's lost+found, so
 * that an empty snapshot is an empty directory. */
int device_mkfs(int index, enum snap_fs fs, char *reason, size_t len);

/* The inodes in use on device INDEX where it is mounted in this mount namespace;
 * -ENOENT if it is not mounted here. */
int device_inodes(int index, int64_t *ret_inodes);

#endif
