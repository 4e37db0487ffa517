/* The RBD backend's shared metadata (issue 24): what several thinproxyd, one per host, on
 * one RBD pool must agree on (tenants, volumes' thinproxy attributes, grants, pending
 * intents) kept in the cluster itself, in the omap of one RADOS object per pool, instead
 * of a SQLite file per host that would drift.
 *
 * The object is META_OBJECT in the RADOS namespace META_NAMESPACE, "_thinproxy": a name
 * tp_name_valid refuses (it starts with '_'), so no tenant's namespace, and no tenant's
 * key, whose caps reach its own namespace only, can ever be it.
 *
 * Keys are KIND/NAME[/NAME...]: KIND one of tenant, volume, grant, intent, then one to
 * three names that each pass tp_name_valid, e.g. "tenant/alice", "intent/alice/vol1".
 * Values are JSON texts, 1 to RBD_META_VALUE_MAX bytes, stored and returned as given
 * (not parsed here). Anything else is -EINVAL before the cluster is asked.
 *
 * Every change is one RADOS write operation, applied whole or not at all: a comparison
 * of the key's current value (or its absence) and the change, so that of two daemons
 * changing the same key at once exactly one succeeds and the other is told. An absent
 * key compares as an empty value, which no key can hold.
 *
 * Every call blocks on the cluster (bounded by the timeouts set at connect). One
 * struct rbd_meta may be used by several threads at once (librados' calls are
 * thread-safe and nothing else in it changes). Every function returns 0 or -errno and
 * logs nothing: the caller says what failed. */
#ifndef TP_DAEMON_RBD_META_H
#define TP_DAEMON_RBD_META_H

#include <stdbool.h>
#include <stddef.h>

#define RBD_META_NAMESPACE "_thinproxy"
#define RBD_META_OBJECT    "meta"
/* Bound on a value: a tenant's or volume's attributes, a grant, an intent. */
#define RBD_META_VALUE_MAX 65536
/* Keys a list asks the OSD for at once. */
#define RBD_META_PAGE 512

struct rbd_meta;

/* Connect to the cluster of CONF (a ceph.conf) as NAME (e.g. "client.admin") with the key
 * in KEYRING, to POOL's metadata object. The object is made at its first change. */
int rbd_meta_connect(const char *conf, const char *name, const char *keyring, const char *pool,
                     struct rbd_meta **ret_meta);
/* Close the connection; NULL is fine. */
void rbd_meta_close(struct rbd_meta *meta);

/* Is KEY a valid key (see above)? */
bool rbd_meta_key_valid(const char *key);

/* Set KEY to VALUE if KEY has no value: -EEXIST if it has one (then nothing changes). */
int rbd_meta_put_new(struct rbd_meta *meta, const char *key, const char *value);
/* Set KEY to VALUE if its value is OLD (compare-and-swap): -ESTALE if it is not, because
 * someone changed or removed it meanwhile (then nothing changes). */
int rbd_meta_replace(struct rbd_meta *meta, const char *key, const char *old, const char *value);
/* Remove KEY if its value is OLD: -ESTALE if it is not (then nothing changes). */
int rbd_meta_remove(struct rbd_meta *meta, const char *key, const char *old);

/* KEY's value into *RET_VALUE, NUL-terminated (the caller frees it): -ENOENT if none. */
int rbd_meta_get(struct rbd_meta *meta, const char *key, char **ret_value);

/* Call FN(ARG, key, value) for each key that starts with PREFIX, in the keys' byte order,
 * asking the OSD for PAGE (1 to RBD_META_PAGE) of them at a time. PREFIX is a KIND and
 * zero to two names, each followed by '/' ("tenant/", "intent/alice/"). FN returns 0 to
 * go on or -errno to stop, and then this returns that. Pages are read one after the
 * other, not at one instant: a key changed during the walk may be seen old or new. */
typedef int (*rbd_meta_list_fn)(void *arg, const char *key, const char *value);
int rbd_meta_list(struct rbd_meta *meta, const char *prefix, unsigned page, rbd_meta_list_fn fn,
                  void *arg);

#endif
