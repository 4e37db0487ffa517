/* The RBD pool's change protocol (issue 24): how a volume is created, snapshotted or
 * removed in an RBD pool that several thinproxyd, one per host, share, so that a daemon
 * killed at any instant leaves nothing lost, leaked or half-done, and two daemons never
 * change one volume at once.
 *
 * A change takes an intent record first, "intent/TENANT/VOLUME" in the pool's shared
 * metadata (daemon/rbd-meta.c), with put-if-absent: it names the operation and the host
 * that runs it. Whoever holds it is the only one changing that volume, on any host; a
 * change that finds it taken is refused with -EBUSY. A create or snapshot then looks for
 * the name: taken, it is refused with -EEXIST; free, the record is marked "making" (a
 * compare-and-swap), since from then on an image of that name can only be this change's.
 * Then come the librbd steps, each idempotent (daemon/rbd-volumes.c), and last the record
 * is removed. A record left behind is settled by its own host's next start
 * (rbd_change_recover), by what the pool holds:
 *
 *   create    not marked: nothing was made, and an image of that name is someone else's.
 *             Marked: an image that opens means the create happened (it may have been
 *             answered), so it stays; otherwise whatever part of it there is goes.
 *   snapshot  not marked: the same. Marked: a clone there is this change's, and the
 *             snapshot's steps are run again to the end; no clone, and the origin's
 *             snapshot "tp.VOLUME", if made, goes.
 *   remove    run again to the end: the volume was on its way out. If the volume has
 *             become busy meanwhile (a child, a client), it stays, unremoved.
 *
 * A host settles only its own records: another host's may belong to a change still under
 * way there. The records of a host that never comes back keep their volumes busy until
 * an operator settles them as that host (rbd_change_recover with its name).
 *
 * The functions set IO's namespace to the tenant's: one thread at a time per IO. Every
 * name is checked with tp_name_valid (-EINVAL). Every function returns 0 or -errno; the
 * errors a caller answers with: -EEXIST a volume of that name exists, -ENOENT no such
 * volume (or origin), -EBUSY another change of that volume is under way, or the volume
 * has children or clients. Failures inside are logged here, once. */
#ifndef TP_DAEMON_RBD_CHANGE_H
#define TP_DAEMON_RBD_CHANGE_H

#include <stdint.h>

#include <rados/librados.h>

#include "rbd-meta.h"

/* Where changes are made: the pool's shared metadata, an I/O context on the pool, and
 * this daemon's host name (a tp_name_valid name, the same at every start). */
struct rbd_change_ctx {
	struct rbd_meta *meta;
	rados_ioctx_t io;
	const char *host;
};

/* Make volume NAME of SIZE bytes in TENANT's namespace. */
int rbd_change_create(const struct rbd_change_ctx *c, const char *tenant, const char *name,
                      uint64_t size);

/* Make volume NAME in TENANT's namespace a copy-on-write child of its volume ORIGIN. */
int rbd_change_snapshot(const struct rbd_change_ctx *c, const char *tenant, const char *origin,
                        const char *name);

/* Remove volume NAME from TENANT's namespace. */
int rbd_change_remove(const struct rbd_change_ctx *c, const char *tenant, const char *name);

/* Settle every record C->host left, as above; *RET_SETTLED (if not NULL) says how many.
 * A record that cannot be settled now (the cluster failing) stays, and the first error is
 * returned after the others were tried. */
int rbd_change_recover(const struct rbd_change_ctx *c, unsigned *ret_settled);

#endif
