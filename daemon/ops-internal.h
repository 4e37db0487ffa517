/* The inside of daemon/ops.h, shared by the files of the operations and included by no
 * other: the state and the lock that guards it, the error of a call, and the helpers one
 * duty lends another. The files, each named for its duty:
 *   ops.c      the state, the lock, the error of a call; start and stop
 *   access.c   principals, references, views, ownership, writability, quotas, names
 *   volumes.c  a tenant's volumes, and creating and removing one through the protocol
 *   tenants.c  the admin's tenants, and a tenant's usage
 *   images.c   the admin's images: import (the copy outside the lock), publish, remove
 *   grants.c   the admin's grants
 *   exports.c  what the broker may open
 *   volume-maps.c  what the pool's metadata says a volume holds: maps, diffs, exact usage
 *   metrics.c  the metrics
 *   monitor.c  the pool's space: metadata growth, low-water warnings, used bytes */
#ifndef TP_OPS_INTERNAL_H
#define TP_OPS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "change.h"
#include "ops.h"
#include "store.h"
#include "tp-cleanup.h"
#include "tp-error.h"

struct import;

/* The daemon's state (daemon/ops.c): every field is read and written under LOCK. */
struct ops_state {
	pthread_mutex_t lock;
	struct store *store;
	struct pool *pool;
	struct ops_config cfg;
	bool low_data, low_meta; /* below the low-water mark, already logged */
	bool meta_warned;        /* above META_WARN_PERCENT, already logged */
	bool meta_grow_failed;   /* growing the metadata failed, already logged */
	bool meta_full;          /* new volumes refused until below META_WARN_PERCENT */
	struct import *imports;  /* in progress */
};
extern struct ops_state ops;
extern atomic_bool ops_interrupted;

/* The error of a call (daemon/ops.c). */

void ops_error_clear(void);
int fail_code(enum tp_error code, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* fail_code with the code of R's errno. */
#define fail(r, ...) fail_code(tp_error_of_errno(r), (r), __VA_ARGS__)
int fail_name(const char *kind, const char *name);
int internal(int r, const char *what);

/* Every ops call starts with it: the lock, held to the end of the scope, and no error
 * of an earlier call left to be mistaken for this one's. */
#define LOCKED                 \
	LOCK_SCOPE(&ops.lock); \
	ops_error_clear()

/* Who may reach what (daemon/access.c). */

int tenant_name(int64_t id, char *buf, size_t len);
void volume_ref(const struct principal *p, const struct volume *v, char *buf, size_t len);
bool volume_writable(const struct principal *p, const struct volume *v);
int make_view(const struct principal *p, const struct volume *v, bool with_labels,
              struct volume_view *view);
int own_volume(const struct principal *p, const char *name, struct volume *ret);
int resolve_ref(const struct principal *p, const char *ref, struct volume *ret);
int check_quota(const struct principal *p, uint64_t add_size);
int tenant_by_name(const char *name, struct tenant *ret);

/* What the pool's metadata says (daemon/volume-maps.c). */

/* The bytes of pool blocks each of the N TENANTS' volumes map, each block once: under one
 * metadata snapshot, into RET_BYTES[N]. -EOPNOTSUPP for a pool without metadata to walk.
 * A count is reused while the store, the pool's used data and metadata blocks are as they
 * were when it was taken, for at most ALLOCATION_MAX_AGE_MS. */
#define ALLOCATION_MAX_AGE_MS 30000
int tenants_allocated(const struct tenant *tenants, size_t n, uint64_t *ret_bytes);
/* Drop the counts tenants_allocated keeps (ops_shutdown). */
void tenants_allocated_forget(void);

/* Volumes (daemon/volumes.c). */

int create_volume(const struct principal *p, enum change_op op, const char *name, uint64_t size,
                  const struct volume *origin, const struct label_list *labels,
                  struct change_clock *clk, struct volume *ret_volume);
int remove_volume(struct volume *v, struct change_clock *clk);
void refresh_used(struct volume *v, bool activate);
int list_volumes(const struct principal *p, const struct label_list *filter, bool labels,
                 ops_volume_fn fn, void *opaque);

/* The pool's space (daemon/monitor.c). */

int check_pool_space(void);

#endif
