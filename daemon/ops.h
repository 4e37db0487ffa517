/* The operations of thinproxyd: what the REST API and the broker may ask for. Each one
 * checks its inputs, takes the daemon lock, and changes the store and the pool in one
 * transaction under the pool's transaction id. All return 0 or -errno:
 *   -EINVAL bad name or size, -ENOENT no such object (or not visible to the caller: the
 *   same answer, so there is no existence oracle), -EEXIST exists, -EBUSY open or has
 *   children, -EDQUOT tenant quota, -ENOSPC pool below its free-space floor, -EROFS
 *   write to something read-only, -EPERM admin-only. */
#ifndef TP_OPS_H
#define TP_OPS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "tp-rules.h"
#include "tp-error.h"

/* Who is asking: the admin socket, or one tenant's socket / nbdkit. */
struct principal {
	bool admin;
	int64_t tenant_id; /* 0 for the admin */
	char tenant[TP_NAME_MAX + 1];
};

/* Export and parent references: "NAME" is the caller's own volume, "images/NAME" a
 * published image, "OWNER/NAME" a volume of tenant OWNER granted to the caller. */
#define TP_REF_MAX (2 * TP_NAME_MAX + 1)

struct export_info {
	char name[TP_REF_MAX + 1]; /* as the caller addresses it */
	uint64_t size;
	bool writable;     /* the caller may open it read-write */
	const char *state; /* "ready", "committed", "image" */
};

/* Broker side (daemon/broker.c). */

/* The tenant whose nbdkit runs as UID; -ENOENT if none. */
int ops_principal_for_nbd_uid(uid_t uid, struct principal *ret_principal);
/* Activate the volume REF refers to for P and open it: O_RDWR only if WANT_WRITE and P
 * may write it, else -EROFS; O_RDONLY otherwise; O_DIRECT as well if DIRECT. Returns the
 * fd. */
int ops_open_export(const struct principal *p, const char *ref, bool want_write, bool direct,
                    struct export_info *ret_info);
/* Everything P may open, own volumes first. *RET_EXPORTS is malloc'ed. */
int ops_list_exports(const struct principal *p, struct export_info **ret_exports, size_t *ret_n);
/* A byte range of an export. */
struct export_range {
	uint64_t offset, length;
};
/* What the pool has mapped of the volume REF refers to, as P may open it: the byte ranges
 * that hold data, in order, neither overlapping nor touching, within the volume's size
 * (whole pool blocks; the last one cut at the size); the rest reads as zeroes. Taken from
 * a metadata snapshot of the pool, so it includes every write the thin device completed
 * before the call, not those still in a page cache above it. *RET_RANGES is malloc'ed;
 * *RET_SIZE is the volume's size. */
int ops_map_export(const struct principal *p, const char *ref, struct export_range **ret_ranges,
                   size_t *ret_n, uint64_t *ret_size);

/* The rest: the REST API (daemon/api.c) and the daemon's start (daemon/main.c). */

struct store;
struct pool;
struct tenant;

struct ops_config {
	uint64_t min_free;          /* bytes: volume creation refused below this much free data */
	unsigned min_free_percent;  /* or this percentage of the pool, whichever is larger */
	unsigned low_water_percent; /* log once when free data or metadata drops below */
	uint32_t nbd_uid_base;      /* tenants' nbdkit uids are allocated from here up */
	/* Called (under the lock, outside any store transaction: a new tenant is already
	 * committed) when a tenant comes and goes, to start and stop its sockets and its
	 * nbdkit. A failing tenant_up makes the tenant add fail: it is taken down and
	 * removed from the store again. */
	int (*tenant_up)(const struct tenant *t);
	void (*tenant_down)(const char *name);
	/* Revoking: end every connection of tenant NAME's nbdkit if it holds the block
	 * device DEVNUM open (1 if it did). */
	int (*tenant_release)(const char *name, dev_t devnum);
	/* "running"/"stopped" for a tenant's nbdkit. */
	const char *(*tenant_nbd_state)(const char *name);
};

/* What the API shows of a volume, as PRINCIPAL sees it. */
struct volume_view {
	char name[TP_REF_MAX + 1];
	char owner[TP_NAME_MAX + 1]; /* "" for images */
	char parent[TP_REF_MAX + 1]; /* "" for none */
	uint64_t size, used;
	const char *state;
	int64_t created;
	int64_t updated; /* the last change of its name, state or labels */
	bool writable;
	uint32_t thin_id;
	/* Its labels, by key: of the principal's own volumes only (none of images and other
	 * tenants' volumes). One malloc'ed block (or NULL), the view's own: see
	 * ops_volume_view_clear. */
	struct tp_label *labels;
	size_t n_labels;
};

/* Free what VIEW owns (its labels); NULL and a view without labels are fine. */
void ops_volume_view_clear(struct volume_view *view);

/* Labels as a request gives them: a whole set, a merge patch (RFC 7396: a NULL value
 * removes the key) or a filter (a NULL value: the key, whatever its value). At most
 * TP_LABELS_MAX entries, each one valid by tp_label_invalid; no key twice but in a
 * filter (where k=a and k=b is a filter nothing passes). */
struct label_list {
	struct tp_label *l;
	size_t n;
};

/* Do the labels of L (none if NULL) keep those rules as a set (or, if PATCH, as a patch
 * or a filter: NULL values allowed)? 0, or -EINVAL with the reason in WHY (WHY_SIZE
 * bytes), naming the label by its place. daemon/ops-views.c. */
int ops_labels_check(const struct label_list *l, bool patch, char *why, size_t why_size);

struct tenant_view {
	char name[TP_NAME_MAX + 1];
	uint32_t uid, gid, nbd_uid;
	uint64_t max_volumes, max_size, max_used; /* 0 = unlimited */
	uint64_t volumes, size, used;
	const char *nbd;
	int64_t created;
	/* The pool blocks its volumes hold, each counted once, from the pool's metadata:
	 * usage and a tenant's details only, where the pool can tell. */
	bool has_allocated;
	uint64_t allocated;
};

/* A tenant to add or change; has_* say which fields were given. */
struct tenant_spec {
	const char *name;
	bool has_uid, has_gid, has_max_volumes, has_max_size, has_max_used;
	uint32_t uid, gid;
	uint64_t max_volumes, max_size, max_used;
};

struct pool_view {
	char name[128];
	uint64_t transaction_id, block_size;
	uint64_t data_used, data_total, meta_used, meta_total; /* bytes */
	uint64_t meta_limit;    /* bytes the metadata may grow to (meta_total: it cannot) */
	const char *meta_state; /* "ok", "warning", "full" (new volumes refused) */
	const char *mode;
	bool needs_check;
	uint64_t min_free, volumes;
};

struct image_view {
	struct volume_view volume;
	uint64_t imported; /* state "importing": the bytes copied in so far */
	bool published_all;
	size_t n_published;
	char (*published)[TP_NAME_MAX + 1]; /* malloc'ed */
};

struct grant_view {
	char owner[TP_NAME_MAX + 1], volume[TP_NAME_MAX + 1], to[TP_NAME_MAX + 1];
	bool write;
};

/* The code of error R, which this thread's last ops call returned: the one the call gave
 * it, or else the one of its errno. */
enum tp_error ops_error_code(int r);
/* The message that goes with the last error this thread's ops call returned ("" if it
 * gave none). */
const char *ops_error_message(void);

/* Take over STORE and POOL, reconcile them (see docs/architecture.md) and bring every
 * tenant up. Fails if the store and the pool disagree in a way that cannot be repaired. */
int ops_init(struct store *store, struct pool *pool, const struct ops_config *cfg);
/* The daemon is stopping: long operations in other threads (an image import's copy) give
 * up at once. Call before stopping the API, then ops_shutdown. */
void ops_interrupt(void);
void ops_shutdown(void);
/* Every second: grow the embedded pool's metadata when it is half full, log low-water and
 * metadata-threshold crossings. */
void ops_watch(void);
/* Every few seconds: refresh used bytes of active volumes, resume devices left
 * suspended. */
void ops_monitor(void);

/* The principal for tenant NAME as the admin acts on it. */
int ops_principal_for_tenant(const char *name, struct principal *ret_principal);

/* Everything P sees: its own volumes by name, then the images published to it, then the
 * volumes granted to it, one view at a time to FN. With a FILTER (not NULL), only P's own
 * volumes that have every label of it. Nothing is gathered first, so a listing of 10000
 * volumes holds one view (which FN must not keep: its labels go after FN). A negative
 * return from FN stops the listing and is returned. FN runs under the daemon lock and
 * must not call ops_*. */
typedef int (*ops_volume_fn)(const struct volume_view *v, void *opaque);
int ops_volume_list(const struct principal *p, const struct label_list *filter, ops_volume_fn fn,
                    void *opaque);
int ops_volume_info(const struct principal *p, const char *name, struct volume_view *ret_view);
/* One range where a volume differs from another (ops_volume_diff): it holds data there,
 * or reads zeroes where the other has data. */
struct volume_change {
	uint64_t offset, length;
	bool data;
};
/* Where volume NAME of P differs from FROM (any reference P may read: its parent, an
 * older snapshot, an image), as thin_delta compares two thin devices: the ranges of NAME
 * whose blocks are not the very same pool blocks in FROM, each with whether NAME holds
 * data there or reads zeroes. What an incremental backup of NAME after FROM must copy.
 * Within NAME's size; *RET_CHANGES is malloc'ed, *RET_SIZE is NAME's size. */
int ops_volume_diff(const struct principal *p, const char *name, const char *from,
                    struct volume_change **ret_changes, size_t *ret_n, uint64_t *ret_size);

/* A volume's exact usage from the pool's metadata, in bytes: what it maps, and of that what
 * it shares with its parent (the same pool blocks) and what it holds alone. */
struct volume_usage {
	uint64_t mapped, exclusive, shared;
};
int ops_volume_usage(const struct principal *p, const char *name, struct volume_usage *ret_usage);
/* The snapshots of P's volume NAME by the tenant owning them, one tenant at a time to FN
 * (in name order): the owner sees who depends on what it shares through grants. FN runs
 * under the daemon lock and must not call ops_*. */
typedef int (*ops_children_fn)(const char *tenant, uint64_t n, void *opaque);
int ops_volume_children(const struct principal *p, const char *name, ops_children_fn fn,
                        void *opaque);
/* A new volume with LABELS (NULL: none), in the same transaction as its row. */
int ops_volume_create(const struct principal *p, const char *name, uint64_t size,
                      const struct label_list *labels, struct volume_view *ret_view);
/* A snapshot of PARENT (a reference); SIZE 0 = the parent's size, else at least it. The
 * parent's labels are not copied: LABELS (NULL: none) are the snapshot's. */
int ops_volume_snapshot(const struct principal *p, const char *name, const char *parent,
                        uint64_t size, const struct label_list *labels,
                        struct volume_view *ret_view);
/* Make NAME read-only for good and, in the same transaction, rename it to NEW_NAME (NULL:
 * keep its name; -EEXIST if the tenant has a volume of that name, nothing changed) and
 * replace its labels with LABELS (NULL: keep them). A committed volume answers as it is
 * when asked for nothing more, and -EROFS when asked for another name or labels. */
int ops_volume_commit(const struct principal *p, const char *name, const char *new_name,
                      const struct label_list *labels, struct volume_view *ret_view);
/* Merge PATCH into NAME's labels, in one transaction; committed volumes too (labels are
 * not data). -EINVAL if the volume would have more than TP_LABELS_MAX. */
int ops_volume_set_labels(const struct principal *p, const char *name,
                          const struct label_list *patch, struct volume_view *ret_view);
int ops_volume_resize(const struct principal *p, const char *name, uint64_t size,
                      struct volume_view *ret_view);
int ops_volume_remove(const struct principal *p, const char *name);
int ops_usage(const struct principal *p, struct tenant_view *ret_view);

int ops_tenant_add(const struct tenant_spec *spec, struct tenant_view *ret_view);
int ops_tenant_get(const char *name, struct tenant_view *ret_view);
int ops_tenant_list(struct tenant_view **ret_views, size_t *ret_n);
int ops_tenant_update(const struct tenant_spec *spec, struct tenant_view *ret_view);
int ops_tenant_remove(const char *name, bool force);

int ops_pool_status(struct pool_view *ret_view);

/* Import the file or block device PATH as image NAME. The copy runs without the daemon
 * lock; meanwhile the image shows in ops_image_list as "importing", with the bytes copied
 * so far. An import the daemon does not finish is removed at its next start. */
int ops_image_import(const char *name, const char *path, struct image_view *ret_view);
int ops_image_publish(const char *name, const char *tenant /* NULL = all */,
                      struct image_view *ret_view);
int ops_image_list(struct image_view **ret_views, size_t *ret_n);
void ops_image_views_free(struct image_view *views, size_t n);
int ops_image_remove(const char *name);

/* Grant G. Turning a write grant into a read grant takes the write away as a revoke does. */
int ops_grant(const struct grant_view *g);
/* Revoke G: the grantee can no longer open the volume, and whatever it has open of it is
 * closed (its nbdkit restarted if it holds the volume). Snapshots it made stay its own. */
int ops_revoke(const struct grant_view *g);
int ops_grant_list(struct grant_view **ret_views, size_t *ret_n);

/* Prometheus text format; *RET_TEXT malloc'ed. */
int ops_metrics(char **ret_text);

#endif
