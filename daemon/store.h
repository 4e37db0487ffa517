/* The store: thinproxyd's metadata in SQLite (tenants, volumes, images, publications,
 * grants, and the pool transaction id the last committed change left behind). All
 * functions return 0 or -errno: -ENOENT no such row, -EEXIST unique name taken, -EIO
 * anything SQLite reports (logged here once with SQLite's message). */
#ifndef TP_STORE_H
#define TP_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "tp-rules.h"

struct store;

struct tenant {
	int64_t id;
	char name[TP_NAME_MAX + 1];
	uint32_t uid, gid;                        /* may connect to the tenant's sockets */
	uint32_t nbd_uid;                         /* its nbdkit runs as nbd_uid:nbd_uid */
	uint64_t max_volumes, max_size, max_used; /* 0 = unlimited */
	int64_t created;
};

/* The values are stored: never renumber. A volume is settled when ready or committed;
 * creating and deleting belong to the one pool change in flight (struct pool_change), and
 * importing to an image whose contents are being copied in. */
enum volume_state {
	VOLUME_CREATING = 0,
	VOLUME_READY = 1,
	VOLUME_COMMITTED = 2,
	VOLUME_DELETING = 3,
	VOLUME_IMPORTING = 4,
};

struct volume {
	int64_t id;
	int64_t tenant_id; /* 0: an image, owned by the host */
	char name[TP_NAME_MAX + 1];
	uint32_t thin_id;
	uint64_t size;
	int64_t parent_id; /* 0: none */
	enum volume_state state;
	uint64_t used; /* mapped bytes, as last read from the thin target */
	int64_t created;
	int64_t updated; /* the last change of its name, state or labels (0 in an add: created) */
};

static inline bool volume_settled(const struct volume *v)
{
	return v->state == VOLUME_READY || v->state == VOLUME_COMMITTED;
}

/* The one change to the pool in flight (docs/architecture.md, "The pool change protocol"):
 * recorded in the same transaction that marks its volume creating or deleting, cleared in
 * the one that settles it. */
enum change_op { CHANGE_CREATE = 1, CHANGE_SNAPSHOT = 2, CHANGE_REMOVE = 3, CHANGE_IMPORT = 4 };

struct pool_change {
	enum change_op op;
	int64_t volume_id;
	uint32_t thin_id;
	uint32_t origin_thin_id;       /* CHANGE_SNAPSHOT: the origin */
	enum volume_state prior_state; /* CHANGE_REMOVE: the state to return to if undone */
	bool failed;                   /* the pool refused the message: undo, never redo */
};

struct usage {
	uint64_t volumes, size, used;
};

int store_open(const char *path, struct store **ret_store);
void store_close(struct store *store);
/* A count that grows with every row this store inserts, updates or deletes, triggers'
 * rows and rolled-back ones included: while it stays the same, nothing in it changed. */
uint64_t store_changes(struct store *store);

/* Transactions. store_commit returns once the transaction is on disk (so does every
 * single write outside one); store_commit_unsynced does not wait: a crash of the daemon
 * keeps the transaction, a crash of the machine may lose it until the next synced
 * commit, which covers it too. Only for changes the daemon redoes on start if lost. */
int store_begin(struct store *store);
int store_commit(struct store *store);
int store_commit_unsynced(struct store *store);
void store_rollback(struct store *store);

/* The pool's transaction id the store belongs with (see ops.c, pairing). */
int store_get_pool_tid(struct store *store, uint64_t *ret_tid);
int store_set_pool_tid(struct store *store, uint64_t tid);
/* A pairing in progress: the id about to be set on the pool; -ENOENT if none. */
int store_get_pairing(struct store *store, uint64_t *ret_tid);
int store_set_pairing(struct store *store, uint64_t tid); /* 0 clears it */

/* The change in flight: -ENOENT if there is none. Set and clear belong in the transaction
 * that changes the change's volume. */
int store_change_get(struct store *store, struct pool_change *ret_change);
int store_change_set(struct store *store, const struct pool_change *change);
int store_change_clear(struct store *store);

int store_tenant_add(struct store *store, struct tenant *t); /* sets t->id */
int store_tenant_get(struct store *store, const char *name, struct tenant *ret_tenant);
int store_tenant_get_by_id(struct store *store, int64_t id, struct tenant *ret_tenant);
int store_tenant_get_by_nbd_uid(struct store *store, uint32_t nbd_uid, struct tenant *ret_tenant);
int store_tenant_update(struct store *store, const struct tenant *t);
int store_tenant_remove(struct store *store, int64_t id);
int store_tenant_list(struct store *store, struct tenant **ret_tenants, size_t *ret_n);
/* A new nbd uid, never handed out before and at least BASE, in a transaction of its own
 * (outside any other) that is on disk when this returns: a uid is used once, even if
 * the tenant it was for is never added. -ENOSPC past 2^32 - 2. */
int store_tenant_next_nbd_uid(struct store *store, uint32_t base, uint32_t *ret_uid);
int store_tenant_usage(struct store *store, int64_t tenant_id, struct usage *ret_usage);

int store_volume_add(struct store *store, struct volume *v); /* sets v->id */
int store_volume_get(struct store *store, int64_t tenant_id, const char *name,
                     struct volume *ret_volume);
int store_volume_get_by_id(struct store *store, int64_t id, struct volume *ret_volume);
int store_volume_get_by_thin_id(struct store *store, uint32_t thin_id, struct volume *ret_volume);
/* Size, state, used bytes, update time and name: a name another volume of the tenant
 * has is -EEXIST. */
int store_volume_update(struct store *store, const struct volume *v);
int store_volume_remove(struct store *store, int64_t id);
/* Volumes of TENANT_ID (0: images), ordered by name. */
int store_volume_list(struct store *store, int64_t tenant_id, struct volume **ret_volumes,
                      size_t *ret_n);
/* The same, one row at a time to FN, with nothing held but the row: a negative return
 * from FN stops the listing and is returned. FN may use the store. */
typedef int (*store_volume_fn)(const struct volume *v, void *opaque);
int store_volume_each(struct store *store, int64_t tenant_id, store_volume_fn fn, void *opaque);
/* The same, only those that have every label of FILTER (N of them, at most
 * TP_LABELS_MAX): the key with that value, or the key at all where the value is NULL. */
int store_volume_each_labelled(struct store *store, int64_t tenant_id,
                               const struct tp_label *filter, size_t n, store_volume_fn fn,
                               void *opaque);
/* Every volume in state STATE. */
int store_volume_list_state(struct store *store, enum volume_state state,
                            struct volume **ret_volumes, size_t *ret_n);
int store_volume_count_children(struct store *store, int64_t id, uint64_t *ret_n);
/* Snapshots of volume ID that tenant TENANT_ID owns (0: images' children of any tenant,
 * that is, all of them). */
int store_volume_count_children_of(struct store *store, int64_t id, int64_t tenant_id,
                                   uint64_t *ret_n);
/* The snapshots of volume ID counted by the tenant owning them, to FN by tenant name. */
typedef int (*store_children_fn)(const char *tenant, uint64_t n, void *opaque);
int store_volume_children_by_tenant(struct store *store, int64_t id, store_children_fn fn,
                                    void *opaque);
/* Let the snapshots of volume ID that other tenants than TENANT_ID own forget their
 * parent: they keep their data (a thin snapshot shares blocks, not a life), and the owner
 * may remove what it owns. */
int store_volume_detach_children(struct store *store, int64_t id, int64_t tenant_id);
int store_volume_count(struct store *store, uint64_t *ret_n);
/* Thin ids come from a counter that only grows, so an id is not handed out again until
 * the counter has gone round all MAX of them; then the next one after it that no volume
 * and no foreign id holds. *RET_UNVERIFIED says the id is below the store's legacy mark:
 * an older thinproxy may have left a device there, so the pool must be asked first.
 * -ENOSPC if every id is taken. */
int store_thin_id_next(struct store *store, uint32_t max, uint32_t *ret_id, bool *ret_unverified);
/* Ids the pool holds that no volume does (found when a create met one): never handed out. */
int store_thin_id_add_foreign(struct store *store, uint32_t id);
int store_thin_id_count_foreign(struct store *store, uint64_t *ret_n);
/* Stores made by a thinproxy before the counter: ids from the legacy mark up may hold
 * devices that older versions left behind. *RET_MARK is 0 once they have been looked at
 * (store_thin_id_legacy_done) or for a store that never had them. */
int store_thin_id_legacy(struct store *store, uint32_t *ret_mark);
int store_thin_id_legacy_done(struct store *store, uint32_t next);

/* A volume's labels, by key: one malloc'ed block, the strings in it (one free). They go
 * with the volume's row. Changes belong in the transaction of the volume change they go
 * with. */
int store_labels_get(struct store *store, int64_t volume_id, struct tp_label **ret_labels,
                     size_t *ret_n);
/* Replace them all with LABELS (N). */
int store_labels_set(struct store *store, int64_t volume_id, const struct tp_label *labels,
                     size_t n);
/* Apply PATCH (N entries): a value sets the key, NULL removes it. *RET_CHANGED says
 * whether anything changed (setting a label to the value it has is no change). */
int store_labels_patch(struct store *store, int64_t volume_id, const struct tp_label *patch,
                       size_t n, bool *ret_changed);
int store_labels_count(struct store *store, int64_t volume_id, uint64_t *ret_n);

/* Images published to TENANT_ID (or to all). */
int store_publish(struct store *store, int64_t image_id, int64_t tenant_id /* 0 = all */);
int store_is_published(struct store *store, int64_t image_id, int64_t tenant_id, bool *ret);
/* Published-to list of an image: tenant names, or all = true. *RET_NAMES malloc'ed. */
int store_publications(struct store *store, int64_t image_id, bool *ret_all,
                       char (**ret_names)[TP_NAME_MAX + 1], size_t *ret_n);
/* Images visible to TENANT_ID. */
int store_images_visible(struct store *store, int64_t tenant_id, struct volume **ret_volumes,
                         size_t *ret_n);

struct grant {
	int64_t volume_id, tenant_id;
	bool write;
};
int store_grant_set(struct store *store, const struct grant *g);
int store_grant_remove(struct store *store, int64_t volume_id, int64_t tenant_id);
int store_grant_get(struct store *store, int64_t volume_id, int64_t tenant_id,
                    struct grant *ret_grant);
int store_grant_list(struct store *store, struct grant **ret_grants, size_t *ret_n);
/* Volumes granted to TENANT_ID, with the grants. */
int store_granted_to(struct store *store, int64_t tenant_id, struct volume **ret_volumes,
                     struct grant **ret_grants, size_t *ret_n);

const char *volume_state_name(enum volume_state s);

#endif
