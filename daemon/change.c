/* The pool change protocol (see change.h). A change is one pool message that the store
 * must agree with:
 *
 *   1. intent: one synced SQLite transaction writes the volume's row (creating, or deleting
 *      with the state it had) and the change record: the operation and its thin id;
 *   2. message: create_thin, create_snap or delete, after which the pool commits its
 *      metadata (or it changes nothing and fails);
 *   3. commit: one SQLite transaction settles the row (ready, importing or gone) and clears
 *      the record. It is not synced: if the machine loses it, the record is still there and
 *      the next start settles it again; the next change's step 1 syncs it anyway.
 *
 * A change costs the pool one metadata commit, its message's. Whether the message happened
 * is kept nowhere but in the pool, and settling a recorded change asks the pool whether
 * its thin id exists (pool_thin_exists): an existing id means a create happened, so it is
 * finished (the create may have been answered before a lost step 3), a missing one that it
 * did not, so it is dropped; a remove is always finished, since the volume was on its way
 * out. That reading is sound only because a create never names an id the pool already
 * has: ids come from a counter that does not hand one out twice before going round all of
 * them (store_thin_id_next), the ids an older thinproxy may have left devices at are
 * looked at first, and an id a create finds taken is recorded as foreign, left alone and
 * never used again.
 *
 * A message the pool refuses changed nothing: its change is undone in the store at once.
 * A message after which the pool has turned read-only (its commit failed, so dm-thin threw
 * the change away) leaves the change recorded, and no other change is made until the pool
 * can answer for it.
 *
 * The pool's transaction id does not count changes: it pairs the pool with its store. A
 * first start sets a random id on both, and a start that finds them different refuses to
 * run, as they are not each other's. thinproxy before the change record counted changes
 * with it (one set_transaction_id per change); such a pair is taken over as it is. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "change.h"
#include "fault.h"
#include "log.h"
#include "pool.h"
#include "store.h"
#include "tp-cleanup.h"
#include "tp-clock.h"

/* A create that meets thin ids the pool already has tries this many more. */
#define FOREIGN_RETRIES 8
/* The ids from an older thinproxy's legacy mark up that are looked at, at most. */
#define LEGACY_PROBES 1024

static struct {
	struct store *store;
	struct pool *pool;
} chg;

/* Timing */

void change_clock_start(struct change_clock *c)
{
	*c = (struct change_clock){.start = tp_now_us()};
	c->last = c->start;
}

void change_clock_lap(struct change_clock *c, enum change_phase phase)
{
	uint64_t now = tp_now_us();

	c->us[phase] += now - c->last;
	c->last = now;
}

const char *change_clock_text(const struct change_clock *c, char *buf, size_t len)
{
	static const char *const names[PHASES] = {"checks", "intent", "message", "commit"};
	uint64_t total = c->last - c->start;
	int n = snprintf(buf, len, "in %" PRIu64 ".%02" PRIu64 " ms (", total / 1000,
	                 total % 1000 / 10);

	for (int i = 0; i < PHASES && n > 0 && (size_t)n < len; i++)
		n += snprintf(buf + n, len - (size_t)n, "%s%s %" PRIu64 ".%02" PRIu64,
		              i ? ", " : "", names[i], c->us[i] / 1000, c->us[i] % 1000 / 10);
	if (n > 0 && (size_t)n < len)
		snprintf(buf + n, len - (size_t)n, ")");
	return buf;
}

/* Steps */

static const char *op_name(enum change_op op)
{
	switch (op) {
	case CHANGE_CREATE:
		return "create";
	case CHANGE_SNAPSHOT:
		return "snapshot";
	case CHANGE_REMOVE:
		return "remove";
	case CHANGE_IMPORT:
		return "import";
	}
	return "change";
}

/* The state a finished create of OP leaves its volume in. */
static enum volume_state created_state(enum change_op op)
{
	return op == CHANGE_IMPORT ? VOLUME_IMPORTING : VOLUME_READY;
}

/* In one transaction: V's row removed (REMOVE) or put in STATE, and the record cleared.
 * Synced if SYNC. A row that is already gone is fine. */
static int settle_row(struct volume *v, bool remove, enum volume_state state, bool sync)
{
	int r = store_begin(chg.store);

	if (r == 0 && remove) {
		r = store_volume_remove(chg.store, v->id);
	} else if (r == 0) {
		v->state = state;
		r = store_volume_update(chg.store, v);
	}
	if (r == -ENOENT)
		r = 0;
	if (r == 0)
		r = store_change_clear(chg.store);
	if (r == 0)
		r = sync ? store_commit(chg.store) : store_commit_unsynced(chg.store);
	if (r < 0)
		store_rollback(chg.store);
	return r;
}

/* Whether the pool takes changes still: after a message, read-only means its commit
 * failed and dm-thin threw the change away, whatever the message returned. */
static int pool_writable(void)
{
	struct pool_status st;
	int r = pool_get_status(chg.pool, &st);

	if (r < 0)
		return r;
	return st.read_only || st.needs_check ? -EROFS : 0;
}

/* The pool has thin id ID and no volume does: say so once, where it is found. */
static void log_foreign(uint32_t id)
{
	log_warning("thin id %" PRIu32 " exists in pool %s but belongs to no volume: leaving it "
	            "alone, never using it",
	            id, pool_name(chg.pool));
}

/* Whether thin id ID is free in the pool: 0 if so, 1 if the pool has it (then it is
 * recorded as foreign), -errno if the pool cannot say. */
static int probe_id(uint32_t id)
{
	int r = pool_thin_exists(chg.pool, id);

	if (r <= 0)
		return r;
	log_foreign(id);
	r = store_thin_id_add_foreign(chg.store, id);
	return r < 0 ? r : 1;
}

/* A thin id for a create, inside the intent's transaction: the counter's next, unless the
 * pool has it (then it is foreign and the next one is taken). */
static int allocate_thin_id(uint32_t *ret_id)
{
	bool unverified;
	uint32_t id;
	int r;

	for (;;) {
		r = store_thin_id_next(chg.store, POOL_THIN_ID_MAX, &id, &unverified);
		if (r < 0)
			return r;
		if (!unverified)
			break;
		/* Below the legacy mark, after the counter went round: an older thinproxy may
		 * have left a device at this id. */
		r = probe_id(id);
		if (r < 0)
			return log_errno(LOG_ERR, r, "ask pool %s about thin id %" PRIu32 ": %m",
			                 pool_name(chg.pool), id);
		if (r == 0)
			break;
	}
	*ret_id = id;
	return 0;
}

/* Step 1 of a create: V's row (creating) with its LABELS (N) and the record, with a fresh
 * thin id. */
static int record_create(enum change_op op, struct volume *v, uint32_t origin_thin_id,
                         const struct tp_label *labels, size_t n)
{
	struct pool_change c = {.op = op, .origin_thin_id = origin_thin_id};
	int r = store_begin(chg.store);

	if (r == 0)
		r = allocate_thin_id(&v->thin_id);
	if (r == 0) {
		v->state = VOLUME_CREATING;
		r = store_volume_add(chg.store, v);
	}
	if (r == 0 && n > 0)
		r = store_labels_set(chg.store, v->id, labels, n);
	if (r == 0) {
		c.volume_id = v->id;
		c.thin_id = v->thin_id;
		r = store_change_set(chg.store, &c);
	}
	if (r == 0)
		r = store_commit(chg.store);
	if (r < 0) {
		store_rollback(chg.store);
		if (r == -EEXIST || r == -ENOSPC)
			return r;
		return log_errno(LOG_ERR, r, "record the %s of volume %s: %m", op_name(op),
		                 v->name);
	}
	return 0;
}

/* A create met thin id V->thin_id taken in the pool: drop V's row and the record, and
 * keep the id as foreign. Synced: were it lost, settling the record would take the
 * foreign device for V. */
static int drop_foreign(struct volume *v)
{
	int r;

	log_foreign(v->thin_id);
	r = store_begin(chg.store);
	if (r == 0)
		r = store_volume_remove(chg.store, v->id);
	if (r == 0)
		r = store_change_clear(chg.store);
	if (r == 0)
		r = store_thin_id_add_foreign(chg.store, v->thin_id);
	if (r == 0)
		r = store_commit(chg.store);
	if (r < 0) {
		store_rollback(chg.store);
		return log_errno(LOG_ERR, r, "record foreign thin id %" PRIu32 ": %m", v->thin_id);
	}
	return 0;
}

/* The pool refused the message of change C on V with ERR, so nothing changed: put the
 * store back as it was (synced: a remove must not be redone). Returns ERR. If the store
 * cannot, the record stays, marked failed so that it is undone and not redone. */
static int undo_refused(const struct pool_change *c, struct volume *v, int err)
{
	bool remove = c->op != CHANGE_REMOVE;
	int r = settle_row(v, remove, c->prior_state, true);

	if (r < 0) {
		struct pool_change failed = *c;

		failed.failed = true;
		if (store_change_set(chg.store, &failed) < 0)
			log_error("cannot record that the %s of volume %s failed; the next start "
			          "asks the pool what became of it",
			          op_name(c->op), v->name);
		log_errno(LOG_ERR, r,
		          "undo the %s of volume %s in the store: %m; it stays "
		          "recorded and is settled before the next change",
		          op_name(c->op), v->name);
	}
	return err;
}

/* After step 2 of change C on V: the pool must still take changes, or its commit failed. */
static int check_after_message(const struct pool_change *c, const struct volume *v)
{
	int r = pool_writable();

	if (r < 0)
		log_errno(LOG_ERR, r,
		          "pool %s cannot take changes after the %s of volume %s (thin %" PRIu32
		          "): %m; the change stays recorded and is settled once it can",
		          pool_name(chg.pool), op_name(c->op), v->name, c->thin_id);
	return r < 0 ? -EROFS : 0;
}

int change_create(enum change_op op, struct volume *v, uint32_t origin_thin_id,
                  const struct tp_label *labels, size_t n, struct change_clock *clk)
{
	struct pool_change c = {.op = op, .origin_thin_id = origin_thin_id};
	int r, attempt;

	r = change_settle();
	if (r < 0)
		return r;
	for (attempt = 0;; attempt++) {
		r = record_create(op, v, origin_thin_id, labels, n);
		if (r < 0)
			return r;
		change_clock_lap(clk, PHASE_INTENT);
		fault_point(op == CHANGE_SNAPSHOT ? "after-snapshot-intent"
		                                  : "after-create-intent");
		r = op == CHANGE_SNAPSHOT ? pool_create_snap(chg.pool, v->thin_id, origin_thin_id)
		                          : pool_create_thin(chg.pool, v->thin_id);
		if (r != -EEXIST || attempt == FOREIGN_RETRIES)
			break;
		r = drop_foreign(v);
		if (r < 0)
			return r;
	}
	c.volume_id = v->id;
	c.thin_id = v->thin_id;
	if (r < 0) {
		if (r != -ENOSPC)
			log_errno(LOG_ERR, r, "%s of volume %s, thin %" PRIu32 " in pool %s: %m",
			          op_name(op), v->name, v->thin_id, pool_name(chg.pool));
		return undo_refused(&c, v, r == -EINVAL ? -EROFS : r);
	}
	change_clock_lap(clk, PHASE_MESSAGE);
	fault_point(op == CHANGE_SNAPSHOT ? "after-create-snap" : "after-create-thin");
	r = check_after_message(&c, v);
	if (r < 0)
		return r;
	r = settle_row(v, false, created_state(op), false);
	if (r < 0)
		return log_errno(LOG_ERR, r,
		                 "commit the %s of volume %s: %m; it stays recorded and is "
		                 "finished before the next change",
		                 op_name(op), v->name);
	change_clock_lap(clk, PHASE_COMMIT);
	fault_point(op == CHANGE_SNAPSHOT ? "after-snapshot-done" : "after-create-done");
	return 0;
}

int change_remove(struct volume *v, struct change_clock *clk)
{
	struct pool_change c = {.op = CHANGE_REMOVE,
	                        .volume_id = v->id,
	                        .thin_id = v->thin_id,
	                        .prior_state = v->state};
	int r;

	r = change_settle();
	if (r < 0)
		return r;
	r = store_begin(chg.store);
	if (r == 0) {
		v->state = VOLUME_DELETING;
		r = store_volume_update(chg.store, v);
	}
	if (r == 0)
		r = store_change_set(chg.store, &c);
	if (r == 0)
		r = store_commit(chg.store);
	if (r < 0) {
		store_rollback(chg.store);
		v->state = c.prior_state;
		return log_errno(LOG_ERR, r, "record the removal of volume %s: %m", v->name);
	}
	change_clock_lap(clk, PHASE_INTENT);
	fault_point("after-remove-intent");
	r = pool_delete_thin(chg.pool, v->thin_id);
	if (r == -ENOENT) {
		log_warning("thin %" PRIu32 " of volume %s was already missing from pool %s",
		            v->thin_id, v->name, pool_name(chg.pool));
		r = 0;
	}
	if (r < 0) {
		if (r != -EBUSY)
			log_errno(LOG_ERR, r, "delete thin %" PRIu32 " of volume %s in pool %s: %m",
			          v->thin_id, v->name, pool_name(chg.pool));
		return undo_refused(&c, v, r == -EINVAL ? -EROFS : r);
	}
	change_clock_lap(clk, PHASE_MESSAGE);
	fault_point("after-delete-thin");
	r = check_after_message(&c, v);
	if (r < 0)
		return r;
	r = settle_row(v, true, 0, false);
	if (r < 0)
		return log_errno(LOG_ERR, r,
		                 "commit the removal of volume %s: %m; it stays recorded and is "
		                 "finished before the next change",
		                 v->name);
	change_clock_lap(clk, PHASE_COMMIT);
	fault_point("after-remove-done");
	return 0;
}

/* Settling */

/* Settle change C, recorded when the daemon died or a step failed, by what the pool says
 * became of it. -EROFS if the pool cannot say (read-only). */
static int settle_recorded(const struct pool_change *c)
{
	struct volume v;
	const char *done;
	bool remove_row;
	int r, exists = 0;

	r = store_volume_get_by_id(chg.store, c->volume_id, &v);
	if (r == -ENOENT) {
		/* The row went in the same transaction as the record should have: nothing to
		 * settle but the record. */
		memset(&v, 0, sizeof v);
		v.id = c->volume_id;
	} else if (r < 0) {
		return r;
	}
	if (c->op != CHANGE_REMOVE || c->failed) {
		exists = pool_thin_exists(chg.pool, c->thin_id);
		if (exists < 0)
			return exists == -EINVAL ? -EROFS : exists;
	}
	if (c->op != CHANGE_REMOVE && c->failed && exists) {
		/* A create the pool refused, yet the id is there: undo it. */
		r = pool_delete_thin(chg.pool, c->thin_id);
		if (r < 0 && r != -ENOENT)
			return r == -EINVAL ? -EROFS : r;
		exists = 0;
	}
	if (c->op == CHANGE_REMOVE && !c->failed) {
		/* A removal is finished: the volume was on its way out. */
		pool_deactivate_thin(chg.pool, c->thin_id);
		r = pool_delete_thin(chg.pool, c->thin_id);
		if (r < 0 && r != -ENOENT)
			return r == -EINVAL ? -EROFS : r;
	}
	if (c->op == CHANGE_REMOVE) {
		remove_row = !c->failed || !exists;
		done = remove_row ? "finished the removal of" : "undid the failed removal of";
	} else {
		remove_row = !exists;
		done = exists ? "finished the creation of" : "rolled back the creation of";
	}
	r = settle_row(&v, remove_row,
	               c->op == CHANGE_REMOVE ? c->prior_state : created_state(c->op), true);
	if (r < 0)
		return r;
	log_notice("settled an interrupted %s: %s volume %s (thin %" PRIu32 ")", op_name(c->op),
	           done, v.name[0] ? v.name : "(gone)", c->thin_id);
	return 0;
}

int change_settle(void)
{
	struct pool_change c;
	int r = store_change_get(chg.store, &c);

	if (r == -ENOENT)
		return 0;
	if (r == 0)
		r = settle_recorded(&c);
	if (r == -EROFS)
		return r;
	if (r < 0)
		return log_errno(LOG_ERR, r,
		                 "settle the unfinished %s of thin %" PRIu32 " in pool %s: %m",
		                 op_name(c.op), c.thin_id, pool_name(chg.pool));
	return 0;
}

/* Rows in STATE that an older thinproxy left pending (it kept one per change, not one
 * record), settled one by one as recorded changes are. */
static int settle_legacy(enum volume_state state)
{
	CLEANUP_FREE struct volume *rows = NULL;
	size_t n = 0, i;
	int r = store_volume_list_state(chg.store, state, &rows, &n);

	for (i = 0; r == 0 && i < n; i++) {
		struct pool_change c = {
		    .op = state == VOLUME_DELETING ? CHANGE_REMOVE : CHANGE_CREATE,
		    .volume_id = rows[i].id,
		    .thin_id = rows[i].thin_id,
		};

		r = settle_recorded(&c);
	}
	return r;
}

/* Imports the daemon died in the middle of: their images go. */
static int drop_interrupted_imports(void)
{
	CLEANUP_FREE struct volume *rows = NULL;
	size_t n = 0, i;
	int r = store_volume_list_state(chg.store, VOLUME_IMPORTING, &rows, &n);

	for (i = 0; r == 0 && i < n; i++) {
		struct change_clock clk;

		change_clock_start(&clk);
		r = pool_deactivate_thin(chg.pool, rows[i].thin_id);
		if (r == 0)
			r = change_remove(&rows[i], &clk);
		if (r == 0)
			log_notice("removed image %s, whose import was interrupted", rows[i].name);
	}
	return r;
}

/* Ids from an older thinproxy's legacy mark up: it allocated max + 1 and could leave a
 * device behind there. Each one the pool has is foreign; the counter starts past them. */
static int check_legacy_ids(void)
{
	uint32_t mark, id;
	int r = store_thin_id_legacy(chg.store, &mark);

	if (r < 0 || mark == 0)
		return r;
	for (id = mark; id <= POOL_THIN_ID_MAX && id - mark < LEGACY_PROBES; id++) {
		r = probe_id(id);
		if (r < 0)
			return r;
		if (r == 0)
			break;
	}
	return store_thin_id_legacy_done(chg.store, id);
}

/* Pairing */

/* Set TID on the pool (from FROM) and then in the store: the pairing is recorded first,
 * so that a start after a crash in between finishes it. */
static int pair(uint64_t from, uint64_t tid)
{
	int r = store_set_pairing(chg.store, tid);

	fault_point("after-pairing-intent");
	if (r == 0)
		r = pool_set_transaction_id(chg.pool, from, tid);
	if (r == 0)
		r = store_begin(chg.store);
	if (r == 0)
		r = store_set_pool_tid(chg.store, tid);
	if (r == 0)
		r = store_set_pairing(chg.store, 0);
	if (r == 0)
		r = store_commit(chg.store);
	if (r < 0) {
		store_rollback(chg.store);
		return log_errno(LOG_ERR, r,
		                 "pair pool %s with the store (transaction id %" PRIu64 "): %m",
		                 pool_name(chg.pool), tid);
	}
	log_info("pool %s paired with the store: transaction id %" PRIu64, pool_name(chg.pool),
	         tid);
	return 0;
}

/* A new pairing id: random, never 0, and below 2^53, so that every reader of the API's
 * JSON (jq and JavaScript keep numbers as doubles) gets it exact. */
static int new_pairing_id(uint64_t *ret)
{
	uint64_t v = 0;

	while (v == 0) {
		if (getrandom(&v, sizeof v, 0) != sizeof v)
			return -errno;
		v &= (UINT64_C(1) << 53) - 1;
	}
	*ret = v;
	return 0;
}

/* Whether the pool and the store belong together, finishing a pairing a crash cut short.
 * *RET_LEGACY_STEP is set when the pool is one change ahead of a store from an older
 * thinproxy, which counted changes with the transaction id. */
static int check_pairing(bool *ret_legacy_step)
{
	CLEANUP_FREE struct volume *creating = NULL, *deleting = NULL;
	size_t n_creating = 0, n_deleting = 0;
	struct pool_status st;
	uint64_t stid, pairing;
	int r;

	*ret_legacy_step = false;
	r = pool_get_status(chg.pool, &st);
	if (r < 0)
		return log_errno(LOG_ERR, r, "read status of pool %s: %m", pool_name(chg.pool));
	r = store_get_pool_tid(chg.store, &stid);
	if (r < 0)
		return r;
	r = store_get_pairing(chg.store, &pairing);
	if (r == 0 && (st.transaction_id == pairing || st.transaction_id == stid))
		return pair(st.transaction_id, pairing);
	if (r < 0 && r != -ENOENT)
		return r;
	if (st.transaction_id == stid)
		return 0;
	if (st.transaction_id == stid + 1) {
		r = store_volume_list_state(chg.store, VOLUME_CREATING, &creating, &n_creating);
		if (r == 0)
			r = store_volume_list_state(chg.store, VOLUME_DELETING, &deleting,
			                            &n_deleting);
		if (r < 0)
			return r;
		if (n_creating + n_deleting > 0) {
			*ret_legacy_step = true;
			return 0;
		}
	}
	log_error("pool %s has transaction id %" PRIu64 " but the store is paired with %" PRIu64
	          ": they do not belong together (another store, or a pool changed behind "
	          "thinproxyd's back); refusing to start",
	          pool_name(chg.pool), st.transaction_id, stid);
	return -ESTALE;
}

int change_init(struct store *store, struct pool *pool)
{
	struct pool_change c;
	bool legacy_step;
	uint64_t stid, id = 0;
	int r;

	chg.store = store;
	chg.pool = pool;
	r = check_pairing(&legacy_step);
	if (r < 0)
		return r;
	r = change_settle();
	if (r == 0)
		r = settle_legacy(VOLUME_CREATING);
	if (r == 0)
		r = settle_legacy(VOLUME_DELETING);
	if (r == 0 && legacy_step) {
		r = store_get_pool_tid(store, &stid);
		if (r == 0)
			r = store_set_pool_tid(store, stid + 1);
	}
	if (r == 0)
		r = drop_interrupted_imports();
	if (r == 0)
		r = check_legacy_ids();
	if (r == -EROFS) {
		/* Not fatal: the tenants' data stays readable; changes wait. */
		log_error("pool %s cannot take changes: a change waits to be settled, and none "
		          "is made until it is (check the pool: thin_check, thin_repair)",
		          pool_name(pool));
		return 0;
	}
	if (r < 0)
		return log_errno(LOG_ERR, r, "reconcile the store with pool %s: %m",
		                 pool_name(pool));
	/* A store and a pool that never held anything are paired now. */
	r = store_get_pool_tid(store, &stid);
	if (r == 0 && stid == 0 && store_change_get(store, &c) == -ENOENT) {
		r = new_pairing_id(&id);
		if (r == 0)
			r = pair(0, id);
	}
	return r;
}

void change_shutdown(void)
{
	chg.store = NULL;
	chg.pool = NULL;
}
