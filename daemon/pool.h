/* The thin pool: the only module that talks to device-mapper (libdevmapper). Every
 * function returns 0 (or a positive count) on success and -errno on failure; output
 * parameters are written only on success. Not thread-safe (libdevmapper keeps global
 * state): callers serialise all pool_* calls.
 *
 * Thin devices are addressed by their 24-bit thin id. When activated, a thin device is
 * a dm device named "<pool>-<id>" (e.g. "thinproxy-pool-17") whose UUID is
 * "THINPROXY-<pool>-<id>"; our own pool's UUID is "THINPROXY-POOL-<pool>". Names never
 * contain tenant input, and no suspend, remove, reload or message touches a device that
 * does not carry the prefix: a device in a thin device's name without our UUID makes
 * every call about that id fail with -EPERM (pool_activate_thin: -EEXIST). */
#ifndef TP_POOL_H
#define TP_POOL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define POOL_UUID_PREFIX "THINPROXY-"
#define POOL_THIN_ID_MAX ((UINT32_C(1) << 24) - 1)

struct pool;

struct pool_config {
	/* Attach to this existing thin-pool dm device (not ours: never suspended or removed).
	 * Its thin devices are named after dm_name if set, else after this name. */
	const char *existing;
	/* Or create our own pool, "thinproxy-pool" unless dm_name says otherwise, from these
	 * two devices (or reattach to it if it is already active). */
	const char *data_dev;
	const char *metadata_dev;
	/* Or, with neither of the above, the embedded default: sparse files
	 * state_dir/pool/data.img (loop_size bytes, default 10 GiB) and metadata.img on loop
	 * devices that go away with the pool. Files only ever grow. */
	const char *state_dir;
	uint64_t loop_size;
	/* The embedded pool's metadata: its size when first made (0: by thin_metadata_size's
	 * rule for loop_size), and the most pool_grow_metadata grows it to (0: dm-thin's
	 * limit, about 15.9 GiB). */
	uint64_t metadata_size, metadata_max;
	/* Our pool's dm name (default "thinproxy-pool"); thin device names derive from it.
	 * At most 96 characters from [A-Za-z0-9#+.:=@_-]. */
	const char *dm_name;
	/* New pools: data block size in 512-byte sectors (default 128 = 64 KiB); a multiple
	 * of 128 up to 2097152. */
	uint32_t block_sectors;
	/* Only attach to the pool if it is active: never create our own (-ENODEV). */
	bool attach_only;
	/* Accept a pool whose table says skip_block_zeroing: a new block then holds whatever
	 * the data device held there, possibly another tenant's freed data. Refused unless
	 * set. */
	bool allow_skip_block_zeroing;
};

struct pool_status {
	uint64_t transaction_id;
	uint64_t data_used, data_total; /* data blocks */
	uint64_t meta_used, meta_total; /* 4 KiB metadata blocks */
	uint32_t block_sectors;
	bool read_only;         /* pool fell back to read-only mode */
	bool out_of_data_space; /* writes fail with ENOSPC */
	bool needs_check;
	bool error_if_no_space;
	uint64_t held_root; /* the metadata snapshot's superblock, 0 if none is held */
};

struct thin_status {
	bool active;
	bool read_only; /* the active table is read-only */
	uint32_t open_count;
	uint64_t size;         /* table length in bytes; 0 if inactive */
	uint64_t mapped_bytes; /* from the thin target's status; 0 if inactive */
	dev_t devnum;          /* 0 if inactive */
};

/* Check libdevmapper and the thin-pool target versions, then attach to, reattach to or
 * create the pool described by CFG. Resumes any of this pool's thin devices that an
 * earlier run left suspended (a crash inside create_snap or resize). Logs why it failed:
 * -EEXIST if CFG's dm name belongs to a device that is not ours, -ENOENT if the existing
 * pool is missing, -EINVAL for a bad config or a device that is not a thin-pool, -EPERM
 * for a pool that skips block zeroing without CFG->allow_skip_block_zeroing,
 * -EOPNOTSUPP if the kernel lacks dm-thin, -EIO if the pool has failed, -ENODEV if
 * CFG->attach_only and our pool is not active (not logged). */
int pool_open(const struct pool_config *cfg, struct pool **ret_pool);
/* Grow the embedded pool's metadata: double its file (at most to the configured maximum),
 * tell its loop device, and have dm-thin take the new space (a suspend and resume of the
 * pool). *RET_BYTES is the new size. -EOPNOTSUPP for a pool that is not the embedded one
 * (its metadata device is the admin's), -ENOSPC at the maximum. */
int pool_grow_metadata(struct pool *pool, uint64_t *ret_bytes);
/* The most the pool's metadata can grow to, in bytes: 0 if it cannot grow. */
uint64_t pool_metadata_limit(const struct pool *pool);
/* Forget POOL (NULL is fine). Leaves the dm pool and thin devices active. */
void pool_close(struct pool *pool);
/* Remove our own pool's dm device; the embedded pool's loop devices clear themselves as
 * it lets go of them (a warning if one stays, held by something else). 0 if it is not
 * active; -EPERM for an existing pool (not ours), -EBUSY while it is open (a thin device
 * of it is active). */
int pool_remove(struct pool *pool);
/* The pool's dm name. */
const char *pool_name(const struct pool *pool);
/* Data block size in bytes. */
uint64_t pool_block_size(const struct pool *pool);

/* Read without a flush, so without making the pool commit its metadata, unless the pool
 * is out of data space: then it commits, so that it sees blocks freed since (by a trim).
 * -EIO if the pool has failed ("Fail" status), -ENODEV if its dm device is gone. */
int pool_get_status(struct pool *pool, struct pool_status *ret_status);
/* set_transaction_id OLD NEW; -EINVAL-free: fails with -ESTALE if the pool's id is not OLD. */
int pool_set_transaction_id(struct pool *pool, uint64_t old_id, uint64_t new_id);

/* Pool messages. Each one either changes the pool's metadata and commits it, or changes
 * nothing and fails. create_thin and create_snap fail with -EEXIST if ID is taken; delete
 * fails with -ENOENT if ID does not exist, -EBUSY if ID is active; create_snap fails with
 * -ENOENT if ORIGIN_ID does not exist. All fail with -EINVAL while the pool is read-only.
 * create_snap suspends an active origin around the message and resumes it on every path;
 * should that resume fail, the snapshot stands (0 when the message succeeded), the error is
 * logged and pool_resume_left_suspended() tries again. */
int pool_create_thin(struct pool *pool, uint32_t id);
int pool_create_snap(struct pool *pool, uint32_t id, uint32_t origin_id);
int pool_delete_thin(struct pool *pool, uint32_t id);
/* Whether thin ID exists in the pool's metadata: 1 or 0, or -errno if the pool cannot say
 * (-EINVAL while it is read-only). A message that the pool refuses without changing
 * anything, so it costs no metadata commit, but the kernel logs the refusal: for recovery,
 * not for every change. */
int pool_thin_exists(struct pool *pool, uint32_t id);
/* Resume the thin devices a failed resume (create_snap, resize) left suspended; 0 if
 * none are. */
int pool_resume_left_suspended(struct pool *pool);

/* Activate thin ID with SIZE bytes (a multiple of 512), read-only if READ_ONLY.
 * Already active with the same table is success; active with another size or mode is
 * -EEXIST; -ENOENT if ID does not exist in the pool. An empty map of ours in its name
 * (a crash between create and load) is replaced. */
int pool_activate_thin(struct pool *pool, uint32_t id, uint64_t size, bool read_only);
/* Remove thin ID's dm device: 0 if it was not active, -EBUSY if it is open. */
int pool_deactivate_thin(struct pool *pool, uint32_t id);
/* Reload an active thin ID with a new SIZE (suspend, load, resume); 0 if inactive. */
int pool_resize_thin(struct pool *pool, uint32_t id, uint64_t size);
int pool_thin_status(struct pool *pool, uint32_t id, struct thin_status *ret_status);
/* Open the active thin device ID with FLAGS (O_RDONLY or O_RDWR, optionally O_DIRECT,
 * O_EXCL, O_NONBLOCK; O_CLOEXEC is added), making its device node if needed, and check
 * that the node is that device. Returns the fd; -ENXIO if ID is not active. */
int pool_open_thin(struct pool *pool, uint32_t id, int flags);
/* Read the pool's metadata as it stands now: take a metadata snapshot
 * (reserve_metadata_snap, which commits first, so it holds every mapping the thin devices
 * have made for completed writes), open the metadata device read-only with O_DIRECT (the
 * kernel writes it behind any page cache), and call FN with a walker over the snapshot:
 * M reads it, SB is its superblock (thin-metadata.h). The snapshot is released on every
 * path. Returns FN's return, -EBUSY if a metadata snapshot is held by someone else (a
 * thin_dump -m, or another walk), -EBADMSG for metadata the walker refuses. */
struct thin_meta;
struct thin_meta_superblock;
int pool_walk_metadata(struct pool *pool,
                       int (*fn)(struct thin_meta *m, const struct thin_meta_superblock *sb,
                                 void *opaque),
                       void *opaque);

/* Call FN for every active thin device of this pool (our UUID prefix only); a negative
 * return from FN stops the walk and is returned. Returns the number of devices. */
int pool_for_each_active(struct pool *pool, int (*fn)(uint32_t id, void *opaque), void *opaque);

#endif
