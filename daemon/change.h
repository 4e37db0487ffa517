/* The pool change protocol: how a volume is created, snapshotted or removed in the store
 * and the pool together, so that the daemon killed at any instant, or a failing pool,
 * leaves nothing lost, leaked or half-done (docs/architecture.md, "The pool change
 * protocol"). The callers (daemon/ops.c, volumes.c) hold the daemon lock around every call.
 *
 * All functions return 0 or -errno; internal failures are logged here, once. The errors a
 * caller turns into an answer: -EEXIST a volume of that name exists, -ENOSPC the pool is
 * full (data, metadata or thin ids), -EBUSY the pool refused to delete a thin device that
 * is in use, -EROFS the pool cannot take changes (read-only, or a change it could not
 * settle waits for it). */
#ifndef TP_DAEMON_CHANGE_H
#define TP_DAEMON_CHANGE_H

#include <stdint.h>

#include "store.h"

struct pool;

/* Where the time of one change goes, for its log line: the checks before the intent
 * (store reads and pool status), then each step. */
enum change_phase { PHASE_CHECKS, PHASE_INTENT, PHASE_MESSAGE, PHASE_COMMIT, PHASES };

struct change_clock {
	uint64_t start, last; /* microseconds */
	uint64_t us[PHASES];
};

void change_clock_start(struct change_clock *c);
/* The time since the last lap (or the start) belongs to PHASE. */
void change_clock_lap(struct change_clock *c, enum change_phase phase);
/* "in 11.23 ms (checks 4.01, intent 0.92, ...)" in BUF. */
const char *change_clock_text(const struct change_clock *c, char *buf, size_t len);

/* Take over STORE and POOL and reconcile them: the pool's transaction id must be the one
 * the store is paired with (a first start pairs them), the change a crash interrupted is
 * settled, and so are rows left by an older thinproxy. -ESTALE (logged) if the store and
 * the pool do not belong together. A change that cannot be settled now (the pool is
 * read-only) stays recorded, and no other change is made until it is. */
int change_init(struct store *store, struct pool *pool);
void change_shutdown(void);

/* Create V (tenant_id, name, size, parent_id and used filled in by the caller) as a new
 * thin device (OP CHANGE_CREATE), a snapshot of ORIGIN_THIN_ID (CHANGE_SNAPSHOT) or an
 * image to import (CHANGE_IMPORT: its row ends in state importing), with LABELS (N of
 * them, in the transaction that adds the row; a create rolled back takes them along).
 * Fills in V's id, thin id and state. */
int change_create(enum change_op op, struct volume *v, uint32_t origin_thin_id,
                  const struct tp_label *labels, size_t n, struct change_clock *clk);

/* Remove V, whose thin device the caller has deactivated. */
int change_remove(struct volume *v, struct change_clock *clk);

/* Settle a change that a failure left recorded, before anything else changes the pool.
 * 0 if none is left; -EROFS if it still cannot be settled. */
int change_settle(void);

#endif
