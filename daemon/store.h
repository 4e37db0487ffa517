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

enum volume_state { VOLUME_CREATING, VOLUME_READY, VOLUME_COMMITTED, VOLUME_DELETING };

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
	/* For creating/deleting: the pool transaction id before the pending change. */
	bool pending;
	uint64_t pending_tid;
};

struct usage {
	uint64_t volumes, size, used;
};

int store_open(const char *path, struct store **ret_store);
void store_close(struct store *store);

/* Transactions. store_commit returns once the transaction is on disk (so does every
 * single write outside one); store_commit_unsynced does not wait: a crash of the daemon
 * keeps the transaction, a crash of the machine may lose it until the next synced
 * commit, which covers it too. Only for changes the daemon redoes on start if lost. */
int store_begin(struct store *store);
int store_commit(struct store *store);
int store_commit_unsynced(struct store *store);
void store_rollback(struct store *store);

int store_get_pool_tid(struct store *store, uint64_t *ret_tid);
int store_set_pool_tid(struct store *store, uint64_t tid);

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
int store_volume_update(struct store *store, const struct volume *v);
int store_volume_remove(struct store *store, int64_t id);
/* Volumes of TENANT_ID (0: images), ordered by name. */
int store_volume_list(struct store *store, int64_t tenant_id, struct volume **ret_volumes,
                      size_t *ret_n);
/* The same, one row at a time to FN, with nothing held but the row: a negative return
 * from FN stops the listing and is returned. FN may use the store. */
typedef int (*store_volume_fn)(const struct volume *v, void *opaque);
int store_volume_each(struct store *store, int64_t tenant_id, store_volume_fn fn, void *opaque);
/* Every volume in state creating or deleting. */
int store_volume_list_pending(struct store *store, struct volume **ret_volumes, size_t *ret_n);
int store_volume_count_children(struct store *store, int64_t id, uint64_t *ret_n);
int store_volume_count(struct store *store, uint64_t *ret_n);
/* A thin id no row holds: one above the highest, else the lowest gap from 1. */
int store_free_thin_id(struct store *store, uint32_t max, uint32_t *ret_id);

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
