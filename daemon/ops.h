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
	bool writable; /* the caller may open it read-write */
	const char *state; /* "ready", "committed", "image" */
};

/* Broker side (daemon/broker.c). */

/* The tenant whose nbdkit runs as UID; -ENOENT if none. */
int ops_principal_for_nbd_uid(uid_t uid, struct principal *ret_principal);
/* Activate the volume REF refers to for P and open it: O_RDWR only if WANT_WRITE and P
 * may write it, else -EROFS; O_RDONLY otherwise. Returns the fd. */
int ops_open_export(const struct principal *p, const char *ref, bool want_write,
		    struct export_info *ret_info);
/* Everything P may open, own volumes first. *RET_EXPORTS is malloc'ed. */
int ops_list_exports(const struct principal *p, struct export_info **ret_exports, size_t *ret_n);

#endif
