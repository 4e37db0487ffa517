/* Ceph ownership for the RBD backend (issue 24): one RADOS namespace per tenant in the
 * daemon's pool P, and one cephx key per tenant, client.thinproxy.TENANT, whose caps
 * reach only that namespace (read-write) and the namespaces it may read. The key goes to
 * the tenant's nbdkit in a keyring file only its uid can read, so that Ceph itself refuses
 * that nbdkit everything else, whatever it does with its own librados.
 *
 * Keys and caps are made through the monitor's command API (JSON commands built with
 * json-c from names checked first); namespaces through librbd. The pool and every tenant
 * and namespace name follow tp_name_valid ([a-z0-9._-], 1 to 63 bytes): nothing else
 * reaches a command or a cap string, so no name can add a grant.
 *
 * Every call blocks on the cluster (bounded by the timeouts set at connect). Not
 * thread-safe: the caller serialises. Every function returns 0 (or what it says) or
 * -errno; a monitor's refusal is logged once, with the command and the monitor's reason. */
#ifndef TP_DAEMON_CEPH_AUTH_H
#define TP_DAEMON_CEPH_AUTH_H

#include <stddef.h>
#include <sys/types.h>

struct ceph_auth;

/* Connect to the cluster of CONF (a ceph.conf) as NAME (e.g. "client.admin") with the key
 * in KEYRING, and open POOL, the RBD pool that holds the tenants' namespaces. */
int ceph_auth_connect(const char *conf, const char *name, const char *keyring, const char *pool,
                      struct ceph_auth **ret_auth);
/* Close the connection; NULL is fine. */
void ceph_auth_close(struct ceph_auth *auth);

/* Make TENANT's namespace in the pool unless it exists. */
int ceph_auth_namespace_ensure(struct ceph_auth *auth, const char *tenant);
/* Remove TENANT's namespace if it is empty: -EBUSY (librbd's answer) while it holds an
 * image, and then nothing is removed. No namespace is fine. */
int ceph_auth_namespace_remove(struct ceph_auth *auth, const char *tenant);

/* Make TENANT's key, or keep it, and set its caps to exactly: mon 'profile rbd', osd
 * 'profile rbd' on TENANT's namespace plus 'profile rbd-read-only' on each of the N
 * namespaces of READ (published images, read grants; N may be 0). A second call keeps
 * the key and replaces the read namespaces. The key, base64, goes into *RET_KEY (the
 * caller frees it). */
int ceph_auth_key_set(struct ceph_auth *auth, const char *tenant, const char *const *read, size_t n,
                      char **ret_key);
/* Remove TENANT's key from the cluster (no key is fine) and then its keyring file PATH
 * (if not NULL; no file is fine). Connections already open keep working until their
 * tickets expire; new ones are refused. */
int ceph_auth_key_remove(struct ceph_auth *auth, const char *tenant, const char *path);

/* Write KEY as TENANT's keyring at PATH, mode 0600, owned by UID:GID, atomically: a
 * temporary file in PATH's directory, synced, renamed over PATH. The directory must be
 * one that only root may write to. */
int ceph_auth_keyring_write(const char *path, const char *tenant, const char *key, uid_t uid,
                            gid_t gid);

#endif
