/* The pool's space: its metadata grown while it may, new volumes refused while it is full
 * or below the free-space floor, low-water warnings logged once a crossing, the used bytes
 * of active volumes kept, and the pool's status as the admin sees it. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "ops-internal.h"
#include "pool.h"
#include "store.h"

#define STRINGIFY_(x) #x
#define STRINGIFY(x)  STRINGIFY_(x)

/* Metadata space. Writes to snapshots that unshare their mappings use metadata that no
 * quota counts, and a pool out of it turns read-only for everyone: so the embedded pool's
 * metadata grows from half full, new volumes are refused from META_REFUSE_PERCENT (while
 * it cannot grow), and from META_WARN_PERCENT the daemon warns. */
#define META_GROW_PERCENT   50
#define META_WARN_PERCENT   75
#define META_REFUSE_PERCENT 80

static unsigned meta_percent(const struct pool_status *st)
{
	return st->meta_total ? (unsigned)(st->meta_used * 100 / st->meta_total) : 100;
}

/* Whether new volumes are refused for want of metadata: from META_REFUSE_PERCENT, and
 * again only below META_WARN_PERCENT. A commit frees the blocks it shadowed, so use
 * sways by a percent or two from change to change; without the gap, a pool refused a
 * moment ago could read as not full, and take one more volume, the next. */
static bool meta_full(const struct pool_status *st)
{
	if (meta_percent(st) >= META_REFUSE_PERCENT)
		ops.meta_full = true;
	else if (meta_percent(st) < META_WARN_PERCENT)
		ops.meta_full = false;
	return ops.meta_full;
}

/* Grow the embedded pool's metadata while it is half full or more and may grow; *ST is
 * read again after each growth. */
static void grow_metadata(struct pool_status *st)
{
	uint64_t before, bytes;
	int r;

	while (meta_percent(st) >= META_GROW_PERCENT &&
	       pool_metadata_limit(ops.pool) > st->meta_total * 4096) {
		before = st->meta_total * 4096;
		r = pool_grow_metadata(ops.pool, &bytes);
		if (r < 0) {
			if (!ops.meta_grow_failed)
				log_errno(LOG_ERR, r,
				          "pool %s: metadata %u%% used, cannot grow it: %m",
				          pool_name(ops.pool), meta_percent(st));
			ops.meta_grow_failed = true;
			return;
		}
		ops.meta_grow_failed = false;
		if (pool_get_status(ops.pool, st) < 0)
			return;
		log_notice("pool %s: metadata was %" PRIu64
		           " MiB and half full or more: grown to %" PRIu64 " MiB, %u%% used",
		           pool_name(ops.pool), before >> 20, (st->meta_total * 4096) >> 20,
		           meta_percent(st));
		if (st->meta_total * 4096 <= before)
			return; /* the pool did not take it: do not try again and again */
	}
}

int check_pool_space(void)
{
	struct pool_status st;
	uint64_t bs = pool_block_size(ops.pool), free_bytes, floor;
	int r = pool_get_status(ops.pool, &st);

	if (r < 0)
		return internal(r, "read pool status");
	if (st.read_only || st.needs_check)
		return fail(-ENOSPC, "pool %s is read-only or needs a check", pool_name(ops.pool));
	grow_metadata(&st);
	if (meta_full(&st))
		return fail(-ENOSPC,
		            "pool full: %u%% of its metadata is used, and new volumes are refused "
		            "from %d%% until it is below %d%%",
		            meta_percent(&st), META_REFUSE_PERCENT, META_WARN_PERCENT);
	free_bytes = (st.data_total - st.data_used) * bs;
	floor = ops.cfg.min_free;
	if (st.data_total * bs / 100 * ops.cfg.min_free_percent > floor)
		floor = st.data_total * bs / 100 * ops.cfg.min_free_percent;
	if (free_bytes < floor || st.out_of_data_space)
		return fail(-ENOSPC,
		            "pool full: %" PRIu64 " MiB free, at least %" PRIu64
		            " MiB required to create volumes",
		            free_bytes >> 20, floor >> 20);
	return 0;
}

static int refresh_active(uint32_t thin_id, void *opaque)
{
	struct volume v;

	(void)opaque;
	if (store_volume_get_by_thin_id(ops.store, thin_id, &v) == 0)
		refresh_used(&v, false);
	return 0;
}

void ops_watch(void)
{
	struct pool_status st;
	uint64_t data_free_pct, meta_free_pct;
	bool meta_high;

	LOCKED;
	if (ops.pool == NULL || pool_get_status(ops.pool, &st) < 0)
		return;
	grow_metadata(&st);
	data_free_pct = st.data_total ? (st.data_total - st.data_used) * 100 / st.data_total : 0;
	meta_free_pct = st.meta_total ? (st.meta_total - st.meta_used) * 100 / st.meta_total : 0;
	if ((data_free_pct < ops.cfg.low_water_percent) != ops.low_data) {
		ops.low_data = !ops.low_data;
		log_msg(ops.low_data ? LOG_WARNING : LOG_NOTICE,
		        "pool %s: %" PRIu64 "%% of data space free, %s the low-water mark of %u%%",
		        pool_name(ops.pool), data_free_pct, ops.low_data ? "below" : "back above",
		        ops.cfg.low_water_percent);
	}
	if ((meta_free_pct < ops.cfg.low_water_percent) != ops.low_meta) {
		ops.low_meta = !ops.low_meta;
		log_msg(ops.low_meta ? LOG_WARNING : LOG_NOTICE,
		        "pool %s: %" PRIu64
		        "%% of metadata space free, %s the low-water mark of %u%%",
		        pool_name(ops.pool), meta_free_pct, ops.low_meta ? "below" : "back above",
		        ops.cfg.low_water_percent);
	}
	meta_high = meta_percent(&st) >= META_WARN_PERCENT;
	if (meta_high != ops.meta_warned) {
		ops.meta_warned = meta_high;
		log_msg(meta_high ? LOG_WARNING : LOG_NOTICE,
		        "pool %s: %u%% of its metadata is used%s", pool_name(ops.pool),
		        meta_percent(&st),
		        meta_high ? meta_full(&st) ? ": new volumes are refused"
		                                   : ": new volumes are refused from " STRINGIFY(
		                                         META_REFUSE_PERCENT) "%"
		                  : ", back to normal");
	}
}

void ops_monitor(void)
{
	LOCKED;
	if (ops.pool == NULL)
		return;
	pool_resume_left_suspended(ops.pool);
	/* Only active volumes can change their mapping; inactive ones keep what the store
	 * recorded when they were last active. */
	pool_for_each_active(ops.pool, refresh_active, NULL);
}

int ops_pool_status(struct pool_view *ret_view)
{
	struct pool_status st;
	uint64_t bs, count;
	int r;

	LOCKED;
	r = pool_get_status(ops.pool, &st);
	if (r == 0)
		r = store_volume_count(ops.store, &count);
	if (r < 0)
		return internal(r, "read pool status");
	bs = pool_block_size(ops.pool);
	memset(ret_view, 0, sizeof *ret_view);
	snprintf(ret_view->name, sizeof ret_view->name, "%s", pool_name(ops.pool));
	ret_view->transaction_id = st.transaction_id;
	ret_view->block_size = bs;
	ret_view->data_used = st.data_used * bs;
	ret_view->data_total = st.data_total * bs;
	ret_view->meta_used = st.meta_used * 4096;
	ret_view->meta_total = st.meta_total * 4096;
	ret_view->meta_limit = pool_metadata_limit(ops.pool);
	if (ret_view->meta_limit < ret_view->meta_total)
		ret_view->meta_limit = ret_view->meta_total;
	ret_view->meta_state = meta_full(&st)                           ? "full"
	                       : meta_percent(&st) >= META_WARN_PERCENT ? "warning"
	                                                                : "ok";
	ret_view->mode = st.read_only ? "ro" : st.out_of_data_space ? "out_of_data_space" : "rw";
	ret_view->needs_check = st.needs_check;
	ret_view->min_free = ops.cfg.min_free;
	if (ret_view->data_total / 100 * ops.cfg.min_free_percent > ret_view->min_free)
		ret_view->min_free = ret_view->data_total / 100 * ops.cfg.min_free_percent;
	ret_view->volumes = count;
	return 0;
}
