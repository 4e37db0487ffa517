/* The snapshotter's operations, with the semantics containerd relies on, over plain C
 * structs: what the Snapshots service (service.c) calls for each request. They work on
 * the tenant's volumes through its REST socket (mapping.h says how a snapshot is a
 * volume) and on the kernel's NBD devices (device.h), and keep no state of their own
 * but the set of snapshots an operation of this process is working on.
 *
 * Every operation may run in any thread, at the same time as any other; two on the same
 * snapshot take turns. Each returns SNAP_OK or the gRPC status code of its failure, with
 * ST saying why in a sentence that begins with the operation and the key ("remove KEY:
 * ..."). */
#ifndef TP_SNAPSHOTTER_SNAPSHOTS_H
#define TP_SNAPSHOTTER_SNAPSHOTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mapping.h"

#define SNAP_DEFAULT_SIZE (10ull << 30)

struct snap_config {
	const char *dir;    /* the socket directory */
	bool admin;         /* through DIR/admin.sock, for TENANT */
	const char *tenant; /* with ADMIN: the tenant whose volumes these are */
	enum snap_fs fs;    /* of parentless snapshots */
	uint64_t size;      /* of parentless snapshots' volumes */
};

/* What Mounts answers: one mount of the snapshot's device. */
struct snap_mount {
	char type[8];    /* "ext4" or "xfs" */
	char source[32]; /* "/dev/nbdN" */
	const char *options[2];
	size_t n_options;
};

struct snap_usage {
	int64_t size;   /* the volume's bytes in the pool */
	int64_t inodes; /* in use, where the device is mounted in this mount namespace; else 0 */
};

struct snapshots;

/* The snapshotter for CFG (copied); nothing is asked of the daemon yet. */
int snapshots_open(const struct snap_config *cfg, struct snapshots **ret_s);
/* Free S; NULL is fine. No operation may be running. */
void snapshots_close(struct snapshots *s);

/* Prepare (VIEW false) or View (VIEW true) snapshot KEY of PARENT ("" for none, else a
 * committed snapshot's name) with LABELS, attached; its mount in *RET_MOUNT. */
enum snap_code snap_prepare(struct snapshots *s, const char *key, const char *parent,
                            const struct snap_labels *labels, bool view,
                            struct snap_mount *ret_mount, struct snap_status *st);
/* The mount of active or view snapshot KEY, attaching it again if its device is gone. */
enum snap_code snap_mounts(struct snapshots *s, const char *key, struct snap_mount *ret_mount,
                           struct snap_status *st);
/* Commit active snapshot KEY as NAME with LABELS: KEY is gone, NAME committed. */
enum snap_code snap_commit(struct snapshots *s, const char *name, const char *key,
                           const struct snap_labels *labels, struct snap_status *st);
/* Remove snapshot KEY (detached first); FailedPrecondition while it has children. */
enum snap_code snap_remove(struct snapshots *s, const char *key, struct snap_status *st);
/* Snapshot KEY's info into *RET_INFO (the caller clears it). */
enum snap_code snap_stat(struct snapshots *s, const char *key, struct snap_info *ret_info,
                         struct snap_status *st);
/* Update the labels of snapshot INFO->name from INFO as the N field PATHS say ("labels",
 * "labels.KEY"; none: all of them); the info after it into *RET_INFO. */
enum snap_code snap_update(struct snapshots *s, const struct snap_info *info,
                           const char *const *paths, size_t n, struct snap_info *ret_info,
                           struct snap_status *st);
/* Snapshot KEY's usage. */
enum snap_code snap_usage(struct snapshots *s, const char *key, struct snap_usage *ret_usage,
                          struct snap_status *st);

/* Called by snap_walk for each snapshot that matches; a negative return stops the walk
 * and makes it fail with Internal (or, for -ECANCELED, Cancelled-as-Unavailable). */
typedef int snap_walk_fn(const struct snap_info *info, void *opaque);
/* Every snapshot matching any of the N containerd FILTERS (none: all), in no order. */
enum snap_code snap_walk(struct snapshots *s, const char *const *filters, size_t n,
                         snap_walk_fn *fn, void *opaque, struct snap_status *st);

/* Remove what interrupted Prepares left (volumes without ready that no operation of this
 * process is working on) and detach the devices of committed or vanished snapshots. */
enum snap_code snap_cleanup(struct snapshots *s, struct snap_status *st);

/* Log one line on stderr, with the time: what the agent did, and what went wrong. */
void snap_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
