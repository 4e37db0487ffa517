/* The RBD backend's volumes (issue 24): a tenant's volumes are the RBD images of its RADOS
 * namespace, each named as the volume, made and changed through librbd on an I/O context
 * the caller has set to that namespace (the caller owns the connection).
 *
 * A snapshot is an RBD snapshot of the origin, protected, and a clone of it (clone format
 * 2) in the same namespace. The snapshot is named "tp.CHILD" for the child it was made
 * for: snapshot names live apart from image names (each image has its own), so no volume
 * name can clash with one, and CHILD, unique among the namespace's images, makes it unique
 * on its origin. Every snapshot of a thinproxy image is thinproxy's, all named so.
 *
 * RBD changes are not transactional across steps, so every function is idempotent: run
 * again after a crash at any point, it finishes the change and ends in the state a run
 * without the crash leaves. The daemon's intent protocol replays them.
 *
 * A committed volume carries the image metadata thinproxy.committed = "1". librbd 16.2 has
 * no per-image flag that refuses writes (only snapshots and read-only opens are
 * read-only), so the flag is the decision: the broker opens committed images read-only,
 * and children are clones of protected snapshots, which nothing writes.
 *
 * Every name is checked with tp_name_valid before it reaches librbd: -EINVAL otherwise.
 * Every call blocks on the cluster. Every function returns 0 or -errno and logs nothing:
 * the caller says what failed. */
#ifndef TP_DAEMON_RBD_VOLUMES_H
#define TP_DAEMON_RBD_VOLUMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <rados/librados.h>

#include "tp-rules.h"

/* The image metadata key, and its value, of a committed volume. */
#define RBD_VOLUME_COMMITTED_KEY "thinproxy.committed"
/* The prefix of the snapshot a child is cloned from: "tp.CHILD" on its origin. */
#define RBD_VOLUME_SNAP_PREFIX "tp."

/* One volume as RBD holds it. */
struct rbd_volume {
	char name[TP_NAME_MAX + 1];
	uint64_t size;
	/* The origin of a clone, in the same namespace (every clone snapshot() makes);
	 * "" for none, and for a parent elsewhere, which is none of ours. */
	char parent[TP_NAME_MAX + 1];
	bool committed;
	int64_t created; /* seconds since the epoch, as RBD recorded the image's creation */
};

/* Make volume NAME of SIZE bytes: a format 2 image with layering, exclusive-lock,
 * object-map, fast-diff and deep-flatten. An image NAME of SIZE already there is success
 * (a replay); one of another size is -EEXIST. */
int rbd_volume_create(rados_ioctx_t io, const char *name, uint64_t size);

/* Make volume NAME a copy-on-write child of ORIGIN as of now: snapshot ORIGIN as
 * "tp.NAME", protect it, clone it as NAME, and clear in NAME the committed flag a clone
 * copies from ORIGIN's metadata. A snapshot already there is kept: a replay's child is
 * ORIGIN as of the first run. So a remove of an earlier NAME cut short must be run again
 * (as the intent protocol does) before NAME is made again: it takes that snapshot away.
 * -ENOENT without ORIGIN; -EEXIST if NAME is there and no clone of that snapshot. */
int rbd_volume_snapshot(rados_ioctx_t io, const char *origin, const char *name);

/* Mark volume NAME committed (see above); again is fine. */
int rbd_volume_commit(rados_ioctx_t io, const char *name);

/* Remove volume NAME: -EBUSY while any of its snapshots has a child or another client has
 * it open, and then nothing changes. Otherwise its snapshots go (unprotected, removed), then the
 * image, then the snapshot of its origin it was cloned from (when no other child hangs from it). No
 * image NAME is success, after the leftover "tp.NAME" snapshot, if a crash left one on any image of
 * the namespace, is removed. -ENOTEMPTY for a snapshot not named as ours. */
int rbd_volume_remove(rados_ioctx_t io, const char *name);

/* Grow volume NAME to SIZE bytes, as dm-thin volumes do: a smaller SIZE is -EINVAL, the
 * same size is success, a committed volume is -EROFS. */
int rbd_volume_resize(rados_ioctx_t io, const char *name, uint64_t size);

/* The bytes allocated in volume NAME itself, a clone's parent not counted, from RBD's own
 * accounting (rbd_diff_iterate2 over the whole image). With fast-diff, and its object map
 * valid, that is whole objects (the image's object size, 4 MiB by default) read from the
 * object map; without, the extents each object holds, asked of the OSDs, much slower. */
int rbd_volume_usage(rados_ioctx_t io, const char *name, uint64_t *ret_bytes);

/* Volume NAME's size, parent, committed flag and creation time. */
int rbd_volume_info(rados_ioctx_t io, const char *name, struct rbd_volume *ret_volume);

/* The volumes of the namespace, in *RET_VOLUMES (the caller frees it) and *RET_N. Images
 * whose names are not volume names are left out; one removed while listing too. */
int rbd_volume_list(rados_ioctx_t io, struct rbd_volume **ret_volumes, size_t *ret_n);

#endif
