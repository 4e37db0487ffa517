/* The operations of thinproxyd: what the REST API and the broker may ask for, each one
 * checked and carried out under the daemon lock. Changes to the pool go through the change
 * protocol of daemon/change.c. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "change.h"
#include "log.h"
#include "ops.h"
#include "pool.h"
#include "store.h"
#include "tp-backoff.h"
#include "tp-cleanup.h"

static struct {
	pthread_mutex_t lock;
	struct store *store;
	struct pool *pool;
	struct ops_config cfg;
	bool low_data, low_meta; /* below the low-water mark, already logged */
	bool meta_warned;        /* above META_WARN_PERCENT, already logged */
	bool meta_grow_failed;   /* growing the metadata failed, already logged */
	bool meta_full;          /* new volumes refused until below META_WARN_PERCENT */
	struct import *imports;  /* in progress */
} ops = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* An image import in progress: its copy runs without the lock and counts what it did. */
struct import {
	struct import *next;
	int64_t volume_id;
	_Atomic uint64_t copied;
};

/* Set when the daemon stops: a copy in progress gives up. */
static atomic_bool interrupted;

#define STRINGIFY_(x) #x
#define STRINGIFY(x)  STRINGIFY_(x)

/* The error of this thread's last ops call: a code for the API and a message. */
static __thread struct {
	enum tp_error code;
	char message[512];
} ops_err;

const char *ops_error_message(void)
{
	return ops_err.message;
}

static void ops_error_clear(void)
{
	ops_err.code = TP_ERROR_NONE;
	ops_err.message[0] = '\0';
}

enum tp_error ops_error_code(int r)
{
	return ops_err.code != TP_ERROR_NONE ? ops_err.code : tp_error_of_errno(r);
}

/* Set this thread's error (CODE, and the message) and return R. */
static int __attribute__((format(printf, 3, 4)))
fail_code(enum tp_error code, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ops_err.message, sizeof ops_err.message, fmt, ap);
	va_end(ap);
	ops_err.code = code;
	return r;
}

/* fail_code with the code of R's errno. */
#define fail(r, ...) fail_code(tp_error_of_errno(r), (r), __VA_ARGS__)

/* NAME of a KIND ("volume", "tenant") is not a name by include/tp-rules.h. */
static int fail_name(const char *kind, const char *name)
{
	return fail_code(TP_ERROR_INVALID_NAME, -EINVAL,
	                 "invalid %s name \"%.80s\": use 1-63 of a-z 0-9 . _ -, starting with a "
	                 "letter or digit",
	                 kind, name);
}

/* An internal failure: logged here, once, and reported to the caller as such. */
static int internal(int r, const char *what)
{
	log_errno(LOG_ERR, r, "%s: %m", what);
	return fail(r, "%s failed: %s", what, strerror(-r));
}

static void unlock(pthread_mutex_t **m)
{
	if (*m)
		pthread_mutex_unlock(*m);
}
/* Every ops call starts with it: the lock, held to the end of the scope, and no error
 * of an earlier call left to be mistaken for this one's. */
#define LOCKED                                                                 \
	__attribute__((cleanup(unlock))) pthread_mutex_t *_locked = &ops.lock; \
	pthread_mutex_lock(_locked);                                           \
	ops_error_clear()

/* References and views */

static int tenant_name(int64_t id, char *buf, size_t len)
{
	struct tenant t;
	int r = store_tenant_get_by_id(ops.store, id, &t);

	if (r < 0)
		return r;
	snprintf(buf, len, "%s", t.name);
	return 0;
}

/* How principal P writes a reference to V. */
static void volume_ref(const struct principal *p, const struct volume *v, char *buf, size_t len)
{
	char owner[TP_NAME_MAX + 1] = "";

	if (v->tenant_id == 0)
		snprintf(buf, len, "images/%s", v->name);
	else if (v->tenant_id == p->tenant_id)
		snprintf(buf, len, "%s", v->name);
	else if (tenant_name(v->tenant_id, owner, sizeof owner) == 0)
		snprintf(buf, len, "%s/%s", owner, v->name);
	else
		snprintf(buf, len, "%s", v->name);
}

static bool volume_writable(const struct principal *p, const struct volume *v)
{
	struct grant g;

	if (v->state != VOLUME_READY || v->tenant_id == 0)
		return false;
	if (v->tenant_id == p->tenant_id)
		return true;
	return store_grant_get(ops.store, v->id, p->tenant_id, &g) == 0 && g.write;
}

void ops_volume_view_clear(struct volume_view *view)
{
	if (view == NULL)
		return;
	free(view->labels);
	view->labels = NULL;
	view->n_labels = 0;
}

/* V as P sees it, with its labels if WITH_LABELS and V is P's own: a tenant sees no other
 * tenant's labels, not even through a grant. */
static int make_view(const struct principal *p, const struct volume *v, bool with_labels,
                     struct volume_view *view)
{
	struct volume parent;
	int r;

	memset(view, 0, sizeof *view);
	volume_ref(p, v, view->name, sizeof view->name);
	/* The caller's own volumes (all of a listing, usually) need no query for the owner:
	 * one per volume made `ls` at 10000 volumes spend half its time here. */
	if (v->tenant_id && v->tenant_id == p->tenant_id && *p->tenant)
		snprintf(view->owner, sizeof view->owner, "%s", p->tenant);
	else if (v->tenant_id)
		tenant_name(v->tenant_id, view->owner, sizeof view->owner);
	if (v->parent_id && store_volume_get_by_id(ops.store, v->parent_id, &parent) == 0)
		volume_ref(p, &parent, view->parent, sizeof view->parent);
	view->size = v->size;
	view->used = v->used;
	view->state = v->tenant_id == 0 && v->state == VOLUME_COMMITTED
	                  ? "image"
	                  : volume_state_name(v->state);
	view->created = v->created;
	view->updated = v->updated;
	view->writable = volume_writable(p, v);
	view->thin_id = v->thin_id;
	if (with_labels && v->tenant_id != 0 && v->tenant_id == p->tenant_id) {
		r = store_labels_get(ops.store, v->id, &view->labels, &view->n_labels);
		if (r < 0)
			return internal(r, "read labels");
	}
	return 0;
}

/* Why the labels of L cannot be a volume's (or, if PATCH, a change to them: NULL values
 * remove), as -EINVAL with a message; 0 if they can. The API checks them first and names
 * the label; this keeps any other caller to the same rules. */
static int check_labels(const struct label_list *l, bool patch)
{
	const char *why;

	if (l == NULL)
		return 0;
	if (l->n > TP_LABELS_MAX)
		return fail(-EINVAL, "too many labels: %zu, at most %d", l->n, TP_LABELS_MAX);
	for (size_t i = 0; i < l->n; i++) {
		const char *value = l->l[i].value;

		if (value == NULL && !patch)
			return fail(-EINVAL, "label %zu has no value", i + 1);
		why = tp_label_invalid(l->l[i].key, strlen(l->l[i].key), value,
		                       value ? strlen(value) : 0);
		if (why != NULL)
			return fail(-EINVAL, "label %zu: %s", i + 1, why);
	}
	return 0;
}

/* P's own volume NAME, settled (not creating or deleting). */
static int own_volume(const struct principal *p, const char *name, struct volume *ret)
{
	int r;

	if (!tp_name_valid(name))
		return fail_name("volume", name);
	r = store_volume_get(ops.store, p->tenant_id, name, ret);
	if (r == -ENOENT || (r == 0 && !volume_settled(ret)))
		return fail(-ENOENT, "no such volume: %s", name);
	if (r < 0)
		return internal(r, "read volume");
	return 0;
}

/* Resolve a reference REF for P: its own volume, a published image or a granted volume.
 * Anything else, existing or not, is -ENOENT with the same message. */
static int resolve_ref(const struct principal *p, const char *ref, struct volume *ret)
{
	char owner[TP_NAME_MAX + 1];
	const char *slash = strchr(ref, '/');
	struct tenant t;
	struct grant g;
	bool published;
	int r;

	if (slash == NULL)
		return own_volume(p, ref, ret);
	if ((size_t)(slash - ref) >= sizeof owner || !tp_name_valid(slash + 1))
		return fail(-ENOENT, "no such volume: %.130s", ref);
	memcpy(owner, ref, (size_t)(slash - ref));
	owner[slash - ref] = '\0';
	if (strcmp(owner, "images") == 0) {
		r = store_volume_get(ops.store, 0, slash + 1, ret);
		if (r == 0 && ret->state == VOLUME_COMMITTED) {
			if (p->admin && p->tenant_id == 0)
				return 0;
			r = store_is_published(ops.store, ret->id, p->tenant_id, &published);
			if (r == 0 && published)
				return 0;
		}
	} else if (tp_name_valid(owner) && store_tenant_get(ops.store, owner, &t) == 0) {
		r = store_volume_get(ops.store, t.id, slash + 1, ret);
		if (r == 0 && volume_settled(ret) &&
		    (t.id == p->tenant_id ||
		     store_grant_get(ops.store, ret->id, p->tenant_id, &g) == 0))
			return 0;
	}
	return fail(-ENOENT, "no such volume: %s", ref);
}

/* Quotas and pool space */

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

static int check_pool_space(void)
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

static int check_quota(const struct principal *p, uint64_t add_size)
{
	struct tenant t;
	struct usage u;
	int r;

	if (p->tenant_id == 0)
		return 0;
	r = store_tenant_get_by_id(ops.store, p->tenant_id, &t);
	if (r == 0)
		r = store_tenant_usage(ops.store, p->tenant_id, &u);
	if (r < 0)
		return internal(r, "read tenant usage");
	if (t.max_volumes && u.volumes + 1 > t.max_volumes)
		return fail(-EDQUOT,
		            "quota exceeded: tenant %s may own at most %" PRIu64 " volumes", t.name,
		            t.max_volumes);
	if (t.max_size && (add_size > t.max_size || u.size > t.max_size - add_size))
		return fail(-EDQUOT,
		            "quota exceeded: tenant %s may own at most %" PRIu64
		            " bytes of volumes (%" PRIu64 " in use, %" PRIu64 " asked)",
		            t.name, t.max_size, u.size, add_size);
	if (t.max_used && u.used >= t.max_used)
		return fail(-EDQUOT,
		            "quota exceeded: tenant %s's volumes map %" PRIu64
		            " bytes, its limit is %" PRIu64,
		            t.name, u.used, t.max_used);
	return 0;
}

static int check_size(uint64_t size)
{
	if (size < TP_SIZE_MIN || size > TP_SIZE_MAX || size % 512)
		return fail_code(TP_ERROR_INVALID_SIZE, -EINVAL,
		                 "invalid size %" PRIu64
		                 ": a multiple of 512 bytes from 64 KiB to 16 PiB",
		                 size);
	return 0;
}

/* Create NAME for P with change OP: a new thin device, a snapshot of ORIGIN or an image
 * to import. */
static int create_volume(const struct principal *p, enum change_op op, const char *name,
                         uint64_t size, const struct volume *origin,
                         const struct label_list *labels, struct change_clock *clk,
                         struct volume *ret_volume)
{
	const char *what = op == CHANGE_SNAPSHOT ? "snapshot" : "create";
	struct volume v = {0}, existing;
	char times[160];
	int r;

	if (!tp_name_valid(name))
		return fail_name("volume", name);
	r = store_volume_get(ops.store, p->tenant_id, name, &existing);
	if (r == 0)
		return fail(-EEXIST, "%s %s exists%s", op == CHANGE_IMPORT ? "image" : "volume",
		            name, existing.state == VOLUME_IMPORTING ? " (being imported)" : "");
	if (r != -ENOENT)
		return internal(r, "read volume");
	if ((r = check_size(size)) < 0 || (r = check_labels(labels, false)) < 0 ||
	    (r = check_quota(p, size)) < 0 || (r = check_pool_space()) < 0)
		return r;

	snprintf(v.name, sizeof v.name, "%s", name);
	v.tenant_id = p->tenant_id;
	v.size = size;
	if (origin) {
		v.parent_id = origin->id;
		v.used = origin->used;
	}
	change_clock_lap(clk, PHASE_CHECKS);
	r = change_create(op, &v, origin ? origin->thin_id : 0, labels ? labels->l : NULL,
	                  labels ? labels->n : 0, clk);
	if (r == -EEXIST)
		return fail(r, "volume %s exists", name);
	if (r == -ENOSPC)
		return fail(r, "pool full: cannot %s %s", what, name);
	if (r == -EROFS)
		return fail(-ENOSPC,
		            "pool %s cannot take changes now: it is read-only or a change "
		            "waits to be settled",
		            pool_name(ops.pool));
	if (r < 0)
		return fail(r, "%s of %s failed: %s", what, name, strerror(-r));
	log_info("%s %s%s%s: thin %" PRIu32 ", %" PRIu64 " bytes %s",
	         op == CHANGE_IMPORT ? "import" : what, p->tenant, *p->tenant ? "/" : "", name,
	         v.thin_id, size, change_clock_text(clk, times, sizeof times));
	*ret_volume = v;
	return 0;
}

/* Whether V's thin device is open, allowing a client that has just let go a moment to
 * close: a kernel device detached or an NBD client gone leaves the tenant's nbdkit
 * closing its fd a little later, and a remove right after a detach should not race it.
 * Waits at most CLOSE_GRACE_MS, and only while the device is open, with the daemon lock
 * let go between looks so that the broker and other requests go on meanwhile. On return
 * *V is what the store holds now (-ENOENT: it went while the lock was let go). */
#define CLOSE_GRACE_MS 5000
static int still_open(struct volume *v, bool *ret_open)
{
	struct thin_status ts;
	int r;

	/* An nbdkit closes the device a moment after its client disconnects, and a Remove
	 * waits on that: looked at again and again, soon at first (tp_backoff). */
	for (long waited = 0, step = 1;;) {
		if (pool_thin_status(ops.pool, v->thin_id, &ts) < 0 || !ts.active ||
		    !ts.open_count) {
			*ret_open = false;
			return 0;
		}
		if (waited >= CLOSE_GRACE_MS) {
			*ret_open = true;
			return 0;
		}
		if (waited == 0)
			log_debug("volume %s is open: waiting up to %d ms for it to close", v->name,
			          CLOSE_GRACE_MS);
		pthread_mutex_unlock(&ops.lock);
		waited += tp_backoff(&step);
		pthread_mutex_lock(&ops.lock);
		if (ops.store == NULL)
			return -ESHUTDOWN;
		r = store_volume_get_by_id(ops.store, v->id, v);
		if (r < 0)
			return r;
		if (!volume_settled(v))
			return -ENOENT;
	}
}

/* store_children_fn: "alice 2, bob 1" into the buffer OPAQUE (256 bytes). */
static int list_children(const char *tenant, uint64_t n, void *opaque)
{
	char *buf = opaque;
	size_t len = strlen(buf);

	snprintf(buf + len, 256 - len, "%s%s %" PRIu64, len ? ", " : "", tenant, n);
	return 0;
}

/* Remove V through the protocol. The caller checked it may. */
static int remove_volume(struct volume *v, struct change_clock *clk)
{
	uint64_t children;
	char times[160];
	bool open;
	int r;

	r = still_open(v, &open);
	if (r == -ENOENT)
		return fail(r, "no such volume: %s", v->name);
	if (r < 0)
		return internal(r, "read volume");
	if (open)
		return fail(-EBUSY, "volume %s is busy: it is open (attached or being served)",
		            v->name);
	/* A volume's own owner's snapshots keep it (layers); other tenants' snapshots (made
	 * through a grant) do not: they are let go of it below. An image keeps all. */
	r = store_volume_count_children_of(ops.store, v->id, v->tenant_id, &children);
	if (r < 0)
		return internal(r, "count snapshots");
	if (children) {
		char by_tenant[256] = "";

		if (v->tenant_id == 0)
			store_volume_children_by_tenant(ops.store, v->id, list_children, by_tenant);
		return fail(
		    -EBUSY, "%s %s is busy: it is the parent of %" PRIu64 " snapshot%s%s%s%s",
		    v->tenant_id ? "volume" : "image", v->name, children, children == 1 ? "" : "s",
		    *by_tenant ? " (" : "", by_tenant, *by_tenant ? ")" : "");
	}
	r = pool_deactivate_thin(ops.pool, v->thin_id);
	if (r == -EBUSY)
		return fail(-EBUSY, "volume %s is busy: it is open (attached or being served)",
		            v->name);
	if (r < 0)
		return internal(r, "deactivate thin device");

	r = store_volume_detach_children(ops.store, v->id, v->tenant_id);
	if (r < 0)
		return internal(r, "detach other tenants' snapshots");
	change_clock_lap(clk, PHASE_CHECKS);
	r = change_remove(v, clk);
	if (r == -EBUSY)
		return fail(r, "volume %s is busy: the pool says its thin device is in use",
		            v->name);
	if (r == -EROFS)
		return fail(-ENOSPC,
		            "pool %s cannot take changes now: it is read-only or a change "
		            "waits to be settled",
		            pool_name(ops.pool));
	if (r < 0)
		return fail(r, "removal of %s failed: %s", v->name, strerror(-r));
	log_info("removed volume %s (thin %" PRIu32 ") %s", v->name, v->thin_id,
	         change_clock_text(clk, times, sizeof times));
	return 0;
}

int ops_init(struct store *store, struct pool *pool, const struct ops_config *cfg)
{
	CLEANUP_FREE struct tenant *tenants = NULL;
	size_t n, i;
	int r;

	ops.store = store;
	ops.pool = pool;
	ops.cfg = *cfg;
	LOCKED;
	/* pool_open already resumed thin devices a crash left suspended. */
	r = change_init(store, pool);
	if (r < 0)
		return r;
	r = store_tenant_list(store, &tenants, &n);
	if (r < 0)
		return r;
	for (i = 0; i < n; i++) {
		if (ops.cfg.tenant_up && (r = ops.cfg.tenant_up(&tenants[i])) < 0)
			log_errno(LOG_ERR, r, "bring up tenant %s: %m, ignoring", tenants[i].name);
	}
	return 0;
}

void ops_interrupt(void)
{
	atomic_store(&interrupted, true);
}

void ops_shutdown(void)
{
	LOCKED;
	change_shutdown();
	ops.store = NULL;
	ops.pool = NULL;
}

/* Read V's mapped bytes from the thin target and keep them in the store. With
 * ACTIVATE, an inactive volume is activated for the reading and deactivated after. */
static void refresh_used(struct volume *v, bool activate)
{
	struct thin_status ts;
	bool activated = false;

	if (pool_thin_status(ops.pool, v->thin_id, &ts) < 0)
		return;
	if (!ts.active && activate && volume_settled(v)) {
		if (pool_activate_thin(ops.pool, v->thin_id, v->size, v->state != VOLUME_READY) <
		        0 ||
		    pool_thin_status(ops.pool, v->thin_id, &ts) < 0)
			return;
		activated = true;
	}
	if (ts.active && ts.mapped_bytes != v->used) {
		v->used = ts.mapped_bytes;
		if (store_volume_update(ops.store, v) < 0)
			log_warning("cannot record the used bytes of volume %s, ignoring", v->name);
	}
	if (activated)
		pool_deactivate_thin(ops.pool, v->thin_id);
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

/* Tenant-side operations */

int ops_principal_for_tenant(const char *name, struct principal *ret_principal)
{
	struct tenant t;
	int r;

	if (!tp_name_valid(name))
		return fail(-ENOENT, "no such tenant: %.80s", name);
	LOCKED;
	r = store_tenant_get(ops.store, name, &t);
	if (r == -ENOENT)
		return fail(r, "no such tenant: %s", name);
	if (r < 0)
		return internal(r, "read tenant");
	memset(ret_principal, 0, sizeof *ret_principal);
	ret_principal->admin = true;
	ret_principal->tenant_id = t.id;
	snprintf(ret_principal->tenant, sizeof ret_principal->tenant, "%s", t.name);
	return 0;
}

int ops_principal_for_nbd_uid(uid_t uid, struct principal *ret_principal)
{
	struct tenant t;
	int r;

	LOCKED;
	r = store_tenant_get_by_nbd_uid(ops.store, (uint32_t)uid, &t);
	if (r < 0)
		return r;
	memset(ret_principal, 0, sizeof *ret_principal);
	ret_principal->tenant_id = t.id;
	snprintf(ret_principal->tenant, sizeof ret_principal->tenant, "%s", t.name);
	return 0;
}

/* A listing in progress: each settled volume becomes a view and goes to FN. */
struct listing {
	const struct principal *p;
	bool labels; /* the views carry them */
	ops_volume_fn fn;
	void *opaque;
	int fn_error; /* FN's own error, not the store's */
};

static int list_one(const struct volume *v, void *opaque)
{
	struct listing *l = opaque;
	struct volume_view view;
	int r;

	if (!volume_settled(v))
		return 0;
	r = make_view(l->p, v, l->labels, &view);
	if (r < 0)
		return l->fn_error = r; /* already logged: not the store's to report again */
	r = l->fn_error = l->fn(&view, l->opaque);
	ops_volume_view_clear(&view);
	return r;
}

/* ops_volume_list, with the views' labels if LABELS. */
static int list_volumes(const struct principal *p, const struct label_list *filter, bool labels,
                        ops_volume_fn fn, void *opaque)
{
	CLEANUP_FREE struct volume *images = NULL, *granted = NULL;
	CLEANUP_FREE struct grant *grants = NULL;
	struct listing l = {.p = p, .labels = labels, .fn = fn, .opaque = opaque};
	size_t n_images = 0, n_granted = 0, i;
	int r;

	if (filter != NULL && (r = check_labels(filter, true)) < 0)
		return r;
	LOCKED;
	/* Own volumes, the many, stream from the store; the images and grants a tenant sees
	 * are few and are read whole. A filter by labels is of own volumes only: the labels
	 * of others' are not the tenant's to see. */
	if (filter != NULL) {
		r = store_volume_each_labelled(ops.store, p->tenant_id, filter->l, filter->n,
		                               list_one, &l);
		if (r < 0 && r == l.fn_error)
			return r;
		return r < 0 ? internal(r, "list volumes by labels") : 0;
	}
	r = store_volume_each(ops.store, p->tenant_id, list_one, &l);
	if (r == 0 && p->tenant_id)
		r = store_images_visible(ops.store, p->tenant_id, &images, &n_images);
	if (r == 0 && p->tenant_id)
		r = store_granted_to(ops.store, p->tenant_id, &granted, &grants, &n_granted);
	for (i = 0; r == 0 && i < n_images; i++)
		r = list_one(&images[i], &l);
	for (i = 0; r == 0 && i < n_granted; i++)
		r = list_one(&granted[i], &l);
	if (r < 0 && r == l.fn_error)
		return r;
	if (r < 0)
		return internal(r, "list volumes");
	return 0;
}

int ops_volume_list(const struct principal *p, const struct label_list *filter, ops_volume_fn fn,
                    void *opaque)
{
	return list_volumes(p, filter, true, fn, opaque);
}

int ops_volume_info(const struct principal *p, const char *name, struct volume_view *ret_view)
{
	struct volume v;
	int r;

	LOCKED;
	r = own_volume(p, name, &v);
	if (r < 0)
		return r;
	/* A committed volume or an image never changes: its used bytes are the ones recorded
	 * when it was committed, and reading them again would activate it for nothing (a
	 * snapshotter asks after every layer it removes). */
	refresh_used(&v, v.state == VOLUME_READY);
	return make_view(p, &v, true, ret_view);
}

int ops_volume_children(const struct principal *p, const char *name, ops_children_fn fn,
                        void *opaque)
{
	struct volume v;
	int r;

	LOCKED;
	r = own_volume(p, name, &v);
	if (r < 0)
		return r;
	r = store_volume_children_by_tenant(ops.store, v.id, fn, opaque);
	return r < 0 ? internal(r, "count snapshots") : 0;
}

int ops_volume_create(const struct principal *p, const char *name, uint64_t size,
                      const struct label_list *labels, struct volume_view *ret_view)
{
	struct change_clock clk;
	struct volume v;
	int r;

	LOCKED;
	change_clock_start(&clk);
	r = create_volume(p, CHANGE_CREATE, name, size, NULL, labels, &clk, &v);
	return r < 0 ? r : make_view(p, &v, true, ret_view);
}

int ops_volume_snapshot(const struct principal *p, const char *name, const char *parent,
                        uint64_t size, const struct label_list *labels,
                        struct volume_view *ret_view)
{
	struct change_clock clk;
	struct volume origin, v;
	int r;

	LOCKED;
	change_clock_start(&clk);
	r = resolve_ref(p, parent, &origin);
	if (r < 0)
		return r;
	refresh_used(&origin, false);
	if (size == 0)
		size = origin.size;
	if (size < origin.size)
		return fail_code(TP_ERROR_INVALID_SIZE, -EINVAL,
		                 "invalid size %" PRIu64
		                 ": a snapshot of %s needs at least %" PRIu64 " bytes",
		                 size, parent, origin.size);
	r = create_volume(p, CHANGE_SNAPSHOT, name, size, &origin, labels, &clk, &v);
	return r < 0 ? r : make_view(p, &v, true, ret_view);
}

/* A commit of V, committed already: it answers as it is when it asks for nothing more
 * (no other name, no labels), and is refused otherwise: a committed volume's name is
 * what its snapshots' owners and grantees know it by. */
static int commit_again(const struct principal *p, const struct volume *v, bool rename,
                        const struct label_list *labels, struct volume_view *ret_view)
{
	if (rename || labels != NULL)
		return fail(-EROFS,
		            "volume %s is read-only (committed): it cannot be committed again "
		            "under another name or with labels (change labels with PATCH)",
		            v->name);
	return make_view(p, v, true, ret_view);
}

int ops_volume_commit(const struct principal *p, const char *name, const char *new_name,
                      const struct label_list *labels, struct volume_view *ret_view)
{
	struct volume v, taken;
	bool open, rename;
	int r;

	LOCKED;
	r = own_volume(p, name, &v);
	if (r < 0 || (r = check_labels(labels, false)) < 0)
		return r;
	if (new_name != NULL && !tp_name_valid(new_name))
		return fail_name("volume", new_name);
	rename = new_name != NULL && strcmp(new_name, name) != 0;
	if (v.state == VOLUME_COMMITTED)
		return commit_again(p, &v, rename, labels, ret_view);
	/* Committed volumes are activated read-only: close the read-write table first, so
	 * nothing can write to a volume that others may now snapshot. A client that has just
	 * disconnected may still hold it for a moment: wait for that, as remove does. */
	r = still_open(&v, &open);
	if (r == -ENOENT)
		return fail(r, "no such volume: %s", name);
	if (r < 0)
		return internal(r, "read volume");
	if (v.state == VOLUME_COMMITTED)
		return commit_again(p, &v, rename, labels, ret_view);
	if (open)
		return fail(-EBUSY, "volume %s is busy: detach it before committing", name);
	/* Whether the new name is free, before anything changes: a taken one changes
	 * nothing. (The lock is held from here on, and the transaction below would refuse it
	 * anyway.) */
	if (rename) {
		r = store_volume_get(ops.store, p->tenant_id, new_name, &taken);
		if (r == 0)
			return fail(-EEXIST, "volume %s exists", new_name);
		if (r != -ENOENT)
			return internal(r, "read volume");
	}
	/* Its used bytes are read here for good (a committed volume never changes), even if
	 * it is not active, as it may have been written before the daemon last stopped. */
	refresh_used(&v, true);
	r = pool_deactivate_thin(ops.pool, v.thin_id);
	if (r == -EBUSY)
		return fail(r, "volume %s is busy: detach it before committing", name);
	if (r < 0)
		return internal(r, "deactivate thin device");
	/* State, name and labels in one transaction: all of them or none. Grants, snapshots
	 * and the thin device know the volume by its id and thin id, never by its name; an
	 * open NBD connection keeps its fd (none can be open here), a new one names it anew. */
	v.state = VOLUME_COMMITTED;
	v.updated = time(NULL);
	if (rename)
		snprintf(v.name, sizeof v.name, "%s", new_name);
	r = store_begin(ops.store);
	if (r == 0)
		r = store_volume_update(ops.store, &v);
	if (r == 0 && labels != NULL)
		r = store_labels_set(ops.store, v.id, labels->l, labels->n);
	if (r == 0)
		r = store_commit(ops.store);
	if (r < 0) {
		store_rollback(ops.store);
		if (r == -EEXIST)
			return fail(r, "volume %s exists", new_name);
		return internal(r, "commit volume");
	}
	if (rename)
		log_info("committed volume %s/%s as %s", p->tenant, name, new_name);
	else
		log_info("committed volume %s/%s", p->tenant, name);
	return make_view(p, &v, true, ret_view);
}

int ops_volume_set_labels(const struct principal *p, const char *name,
                          const struct label_list *patch, struct volume_view *ret_view)
{
	struct volume v;
	uint64_t n = 0;
	bool changed = false;
	int r;

	LOCKED;
	r = own_volume(p, name, &v);
	if (r < 0 || (r = check_labels(patch, true)) < 0)
		return r;
	r = store_begin(ops.store);
	if (r == 0)
		r = store_labels_patch(ops.store, v.id, patch->l, patch->n, &changed);
	if (r == 0)
		r = store_labels_count(ops.store, v.id, &n);
	if (r == 0 && n > TP_LABELS_MAX) {
		store_rollback(ops.store);
		return fail(-EINVAL,
		            "too many labels: volume %s would have %" PRIu64 ", at most %d; "
		            "nothing changed",
		            name, n, TP_LABELS_MAX);
	}
	if (r == 0 && !changed) {
		store_rollback(ops.store); /* nothing to keep, nor to wait for the disk for */
		return make_view(p, &v, true, ret_view);
	}
	if (r == 0) {
		v.updated = time(NULL);
		r = store_volume_update(ops.store, &v);
	}
	if (r == 0)
		r = store_commit(ops.store);
	if (r < 0) {
		store_rollback(ops.store);
		return internal(r, "change labels");
	}
	log_debug("labels of volume %s/%s changed: %" PRIu64 " now", p->tenant, name, n);
	return make_view(p, &v, true, ret_view);
}

int ops_volume_resize(const struct principal *p, const char *name, uint64_t size,
                      struct volume_view *ret_view)
{
	struct volume v;
	int r;

	LOCKED;
	r = own_volume(p, name, &v);
	if (r < 0 || (r = check_size(size)) < 0)
		return r;
	if (v.state != VOLUME_READY)
		return fail(-EROFS, "volume %s is read-only (committed)", name);
	if (size < v.size)
		return fail_code(TP_ERROR_INVALID_SIZE, -EINVAL,
		                 "invalid size %" PRIu64 ": volumes only grow (%s is %" PRIu64
		                 " bytes)",
		                 size, name, v.size);
	if (size == v.size)
		return make_view(p, &v, true, ret_view);
	r = check_quota(p, size - v.size);
	if (r < 0)
		return r;
	/* The store first: if reloading the table fails, the next activation uses the new
	 * size anyway, and a larger thin table over the same id loses nothing. */
	v.size = size;
	r = store_volume_update(ops.store, &v);
	if (r < 0)
		return internal(r, "resize volume");
	r = pool_resize_thin(ops.pool, v.thin_id, size);
	if (r < 0)
		log_errno(LOG_WARNING, r,
		          "reload of thin %" PRIu32
		          " at its new size: %m, ignoring until reactivation",
		          v.thin_id);
	return make_view(p, &v, true, ret_view);
}

int ops_volume_remove(const struct principal *p, const char *name)
{
	struct change_clock clk;
	struct volume v;
	int r;

	LOCKED;
	change_clock_start(&clk);
	r = own_volume(p, name, &v);
	if (r < 0)
		return r;
	return remove_volume(&v, &clk);
}

static int tenant_view(const struct tenant *t, struct tenant_view *view)
{
	struct usage u;
	int r = store_tenant_usage(ops.store, t->id, &u);

	if (r < 0)
		return r;
	memset(view, 0, sizeof *view);
	snprintf(view->name, sizeof view->name, "%s", t->name);
	view->uid = t->uid;
	view->gid = t->gid;
	view->nbd_uid = t->nbd_uid;
	view->max_volumes = t->max_volumes;
	view->max_size = t->max_size;
	view->max_used = t->max_used;
	view->volumes = u.volumes;
	view->size = u.size;
	view->used = u.used;
	view->created = t->created;
	view->nbd = ops.cfg.tenant_nbd_state ? ops.cfg.tenant_nbd_state(t->name) : "unknown";
	return 0;
}

int ops_usage(const struct principal *p, struct tenant_view *ret_view)
{
	struct tenant t;
	int r;

	LOCKED;
	r = store_tenant_get_by_id(ops.store, p->tenant_id, &t);
	if (r == 0)
		r = tenant_view(&t, ret_view);
	return r < 0 ? internal(r, "read usage") : 0;
}

/* Broker */

int ops_open_export(const struct principal *p, const char *ref, bool want_write,
                    struct export_info *ret_info)
{
	struct volume v;
	bool writable;
	int r, fd;

	LOCKED;
	r = resolve_ref(p, ref, &v);
	if (r < 0)
		return -ENOENT;
	writable = volume_writable(p, &v);
	if (want_write && !writable)
		return fail(-EROFS, "volume %s is read-only", ref);
	r = pool_activate_thin(ops.pool, v.thin_id, v.size, v.state != VOLUME_READY);
	if (r < 0)
		return internal(r, "activate thin device");
	fd = pool_open_thin(ops.pool, v.thin_id, want_write ? O_RDWR : O_RDONLY);
	if (fd < 0)
		return internal(fd, "open thin device");
	memset(ret_info, 0, sizeof *ret_info);
	volume_ref(p, &v, ret_info->name, sizeof ret_info->name);
	ret_info->size = v.size;
	ret_info->writable = writable;
	ret_info->state = v.tenant_id == 0 ? "image" : volume_state_name(v.state);
	return fd;
}

struct export_list {
	struct export_info *ex;
	size_t n, cap;
};

static int add_export(const struct volume_view *v, void *opaque)
{
	struct export_list *l = opaque;
	struct export_info *e;

	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;

		e = reallocarray(l->ex, cap, sizeof *e);
		if (e == NULL)
			return -ENOMEM;
		l->ex = e;
		l->cap = cap;
	}
	e = &l->ex[l->n++];
	memset(e, 0, sizeof *e);
	snprintf(e->name, sizeof e->name, "%s", v->name);
	e->size = v->size;
	e->writable = v->writable;
	e->state = v->state;
	return 0;
}

int ops_list_exports(const struct principal *p, struct export_info **ret_exports, size_t *ret_n)
{
	struct export_list l = {0};
	/* Without labels: the broker runs in the daemon's loop, and a tenant's labels (up to
	 * 256 KiB a volume) are nothing its nbdkit needs. */
	int r = list_volumes(p, NULL, false, add_export, &l);

	if (r < 0) {
		free(l.ex);
		return r;
	}
	*ret_exports = l.ex ? l.ex : calloc(1, sizeof *l.ex);
	*ret_n = l.n;
	return *ret_exports ? 0 : -ENOMEM;
}

/* Admin: tenants */

static int tenant_by_name(const char *name, struct tenant *ret)
{
	int r;

	if (!tp_name_valid(name))
		return fail_name("tenant", name);
	r = store_tenant_get(ops.store, name, ret);
	if (r == -ENOENT)
		return fail(r, "no such tenant: %s", name);
	if (r < 0)
		return internal(r, "read tenant");
	return 0;
}

static void apply_spec(const struct tenant_spec *s, struct tenant *t)
{
	if (s->has_uid)
		t->uid = s->uid;
	if (s->has_gid)
		t->gid = s->gid;
	if (s->has_max_volumes)
		t->max_volumes = s->max_volumes;
	if (s->has_max_size)
		t->max_size = s->max_size;
	if (s->has_max_used)
		t->max_used = s->max_used;
}

int ops_tenant_add(const struct tenant_spec *spec, struct tenant_view *ret_view)
{
	struct tenant t = {0};
	int r;

	if (!tp_name_valid(spec->name))
		return fail_name("tenant", spec->name);
	if (strcmp(spec->name, "images") == 0)
		return fail_code(TP_ERROR_INVALID_NAME, -EINVAL,
		                 "invalid tenant name \"images\": reserved for images");
	LOCKED;
	snprintf(t.name, sizeof t.name, "%s", spec->name);
	apply_spec(spec, &t);
	/* A uid no tenant ever had: a process a removed tenant's nbdkit left behind must not
	 * speak to the broker for this one. Taken for good, even if the add fails. */
	r = store_tenant_next_nbd_uid(ops.store, ops.cfg.nbd_uid_base, &t.nbd_uid);
	if (r == 0)
		r = store_begin(ops.store);
	if (r == 0)
		r = store_tenant_add(ops.store, &t);
	if (r == 0 && ops.cfg.tenant_up)
		r = ops.cfg.tenant_up(&t);
	if (r == 0)
		r = store_commit(ops.store);
	if (r < 0) {
		store_rollback(ops.store);
		if (r == -EEXIST)
			return fail(r, "tenant %s exists", spec->name);
		return internal(r, "add tenant");
	}
	log_info("added tenant %s (uid %" PRIu32 ", gid %" PRIu32 ", nbdkit uid %" PRIu32 ")",
	         t.name, t.uid, t.gid, t.nbd_uid);
	r = tenant_view(&t, ret_view);
	return r < 0 ? internal(r, "read tenant") : 0;
}

int ops_tenant_get(const char *name, struct tenant_view *ret_view)
{
	struct tenant t;
	int r;

	LOCKED;
	r = tenant_by_name(name, &t);
	if (r < 0)
		return r;
	r = tenant_view(&t, ret_view);
	return r < 0 ? internal(r, "read tenant") : 0;
}

int ops_tenant_list(struct tenant_view **ret_views, size_t *ret_n)
{
	CLEANUP_FREE struct tenant *tenants = NULL;
	CLEANUP_FREE struct tenant_view *views = NULL;
	size_t n, i;
	int r;

	LOCKED;
	r = store_tenant_list(ops.store, &tenants, &n);
	if (r < 0)
		return internal(r, "list tenants");
	views = calloc(n ? n : 1, sizeof *views);
	if (views == NULL)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		if ((r = tenant_view(&tenants[i], &views[i])) < 0)
			return internal(r, "read tenant");
	*ret_views = TAKE_PTR(views);
	*ret_n = n;
	return 0;
}

int ops_tenant_update(const struct tenant_spec *spec, struct tenant_view *ret_view)
{
	struct tenant t;
	bool owner_changed;
	int r;

	LOCKED;
	r = tenant_by_name(spec->name, &t);
	if (r < 0)
		return r;
	owner_changed =
	    (spec->has_uid && spec->uid != t.uid) || (spec->has_gid && spec->gid != t.gid);
	apply_spec(spec, &t);
	r = store_tenant_update(ops.store, &t);
	if (r < 0)
		return internal(r, "update tenant");
	/* New owners for the sockets: bring the tenant's sockets up again. */
	if (owner_changed && ops.cfg.tenant_up && (r = ops.cfg.tenant_up(&t)) < 0)
		log_errno(LOG_ERR, r, "re-own sockets of tenant %s: %m, ignoring", t.name);
	r = tenant_view(&t, ret_view);
	return r < 0 ? internal(r, "read tenant") : 0;
}

int ops_tenant_remove(const char *name, bool force)
{
	CLEANUP_FREE struct volume *vols = NULL;
	struct change_clock clk;
	struct tenant t;
	size_t n, i, left;
	int r;

	LOCKED;
	r = tenant_by_name(name, &t);
	if (r < 0)
		return r;
	r = store_volume_list(ops.store, t.id, &vols, &n);
	if (r < 0)
		return internal(r, "list volumes");
	if (n && !force)
		return fail(-EBUSY,
		            "tenant %s is busy: it owns %zu volume%s (use force to remove them)",
		            name, n, n == 1 ? "" : "s");
	/* Children before parents: repeat passes until nothing more can go. */
	for (left = n; left;) {
		size_t before = left;

		for (i = 0; i < n; i++) {
			if (vols[i].id == 0)
				continue;
			change_clock_start(&clk);
			r = remove_volume(&vols[i], &clk);
			if (r == 0) {
				vols[i].id = 0;
				left--;
			} else if (r != -EBUSY) {
				return r;
			}
		}
		if (left == before)
			return fail(-EBUSY, "tenant %s is busy: %zu of its volumes are open", name,
			            left);
	}
	if (ops.cfg.tenant_down)
		ops.cfg.tenant_down(t.name);
	r = store_tenant_remove(ops.store, t.id);
	if (r < 0)
		return internal(r, "remove tenant");
	log_info("removed tenant %s", name);
	return 0;
}

/* Admin: pool */

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

/* Admin: images */

static const struct principal host = {.admin = true};

static int image_view(const struct volume *v, struct image_view *view)
{
	memset(view, 0, sizeof *view);
	make_view(&host, v, false, &view->volume); /* without labels: it cannot fail */
	for (struct import *imp = ops.imports; imp != NULL; imp = imp->next)
		if (imp->volume_id == v->id)
			view->imported = atomic_load(&imp->copied);
	return store_publications(ops.store, v->id, &view->published_all, &view->published,
	                          &view->n_published);
}

void ops_image_views_free(struct image_view *views, size_t n)
{
	for (size_t i = 0; views && i < n; i++)
		free(views[i].published);
	free(views);
}

static bool all_zero(const char *buf, size_t len)
{
	return len == 0 || (buf[0] == 0 && memcmp(buf, buf + 1, len - 1) == 0);
}

/* Copy SIZE bytes of SRC into the thin device behind DST, leaving all-zero blocks
 * unmapped, counting the bytes done in *COPIED. -ECANCELED if the daemon stops. */
static int copy_image(int src, int dst, uint64_t size, uint64_t block, _Atomic uint64_t *copied)
{
	CLEANUP_FREE char *buf = NULL;
	size_t chunk = 1 << 20;
	uint64_t off;

	if (block > chunk || chunk % block)
		block = 4096;
	buf = malloc(chunk);
	if (buf == NULL)
		return -ENOMEM;
	for (off = 0; off < size;) {
		size_t want = size - off < chunk ? (size_t)(size - off) : chunk, got = 0, b;

		if (atomic_load(&interrupted))
			return -ECANCELED;
		while (got < want) {
			ssize_t n = pread(src, buf + got, want - got, (off_t)(off + got));
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return -errno;
			if (n == 0) { /* the source shrank: the rest reads as zeros */
				memset(buf + got, 0, want - got);
				break;
			}
			got += (size_t)n;
		}
		for (b = 0; b < want; b += block) {
			size_t len = want - b < block ? want - b : block;

			if (all_zero(buf + b, len))
				continue;
			for (size_t done = 0; done < len;) {
				ssize_t n = pwrite(dst, buf + b + done, len - done,
				                   (off_t)(off + b + done));
				if (n < 0 && errno == EINTR)
					continue;
				if (n < 0)
					return -errno;
				done += (size_t)n;
			}
		}
		off += want;
		atomic_store(copied, off);
	}
	return fsync(dst) < 0 ? -errno : 0;
}

/* Under the lock: the import of V is over (IMP unlisted). If it failed with ERR, the half
 * imported image goes again. */
static int end_import(struct import *imp, struct volume *v, const char *path, int err)
{
	struct change_clock clk;
	struct import **i;
	int r;

	for (i = &ops.imports; *i != NULL; i = &(*i)->next)
		if (*i == imp) {
			*i = imp->next;
			break;
		}
	if (ops.store == NULL)
		return fail(-ECANCELED,
		            "import of image %s interrupted: the daemon is stopping; "
		            "its next start removes what was copied",
		            v->name);
	if (err < 0) {
		log_errno(LOG_ERR, err, "import of image %s from %s: %m", v->name, path);
		fail(err, "import of image %s from %s failed: %s", v->name, path, strerror(-err));
		change_clock_start(&clk);
		if (remove_volume(v, &clk) < 0)
			log_error(
			    "removing the half-imported image %s failed; the next start tries "
			    "again, ignoring",
			    v->name);
		return err;
	}
	refresh_used(v, false);
	r = pool_deactivate_thin(ops.pool, v->thin_id);
	if (r < 0)
		log_errno(LOG_WARNING, r, "deactivate imported image %s: %m, ignoring", v->name);
	v->state = VOLUME_COMMITTED;
	r = store_volume_update(ops.store, v);
	if (r < 0)
		return internal(r, "commit image");
	log_info("imported image %s from %s (%" PRIu64 " bytes, %" PRIu64 " mapped)", v->name, path,
	         v->size, v->used);
	return 0;
}

int ops_image_import(const char *name, const char *path, struct image_view *ret_view)
{
	CLEANUP_CLOSE int src = -1;
	CLEANUP_CLOSE int dst = -1;
	struct import imp = {0};
	struct change_clock clk;
	struct volume v;
	struct stat st;
	uint64_t size, len, block;
	int r;

	if (path == NULL || path[0] != '/')
		return fail(-EINVAL, "invalid image source: an absolute path on the host");
	src = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (src < 0 || fstat(src, &st) < 0)
		return fail(errno == ENOENT ? -ENOENT : -EINVAL, "cannot read %s: %m", path);
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(src, BLKGETSIZE64, &size) < 0)
			return fail(-EINVAL, "cannot size %s: %m", path);
	} else if (S_ISREG(st.st_mode)) {
		size = (uint64_t)st.st_size;
	} else {
		return fail(-EINVAL, "invalid image source %s: not a file or block device", path);
	}
	len = size;
	size = (size + 511) & ~UINT64_C(511);
	if (size < TP_SIZE_MIN)
		size = TP_SIZE_MIN;

	{
		LOCKED;
		change_clock_start(&clk);
		r = create_volume(&host, CHANGE_IMPORT, name, size, NULL, NULL, &clk, &v);
		if (r < 0)
			return r;
		block = pool_block_size(ops.pool);
		r = pool_activate_thin(ops.pool, v.thin_id, v.size, false);
		if (r == 0)
			r = dst = pool_open_thin(ops.pool, v.thin_id, O_RDWR);
		if (r < 0)
			return end_import(&imp, &v, path, r);
		imp.volume_id = v.id;
		imp.next = ops.imports;
		ops.imports = &imp;
	}
	/* The copy runs without the lock, so that the broker and every other request go on
	 * during a long import. Nothing else touches the image meanwhile: it is not
	 * committed, so it can be neither published, opened nor removed. */
	r = copy_image(src, dst, len, block, &imp.copied);
	close(TAKE_FD(dst));

	LOCKED;
	r = end_import(&imp, &v, path, r);
	if (r < 0)
		return r;
	r = image_view(&v, ret_view);
	return r < 0 ? internal(r, "read image") : 0;
}

static int image_by_name(const char *name, struct volume *ret)
{
	int r;

	if (!tp_name_valid(name))
		return fail_code(TP_ERROR_INVALID_NAME, -EINVAL, "invalid image name \"%.80s\"",
		                 name);
	r = store_volume_get(ops.store, 0, name, ret);
	if (r == 0 && ret->state == VOLUME_IMPORTING)
		return fail(-EBUSY, "image %s is busy: it is being imported", name);
	if (r == -ENOENT || (r == 0 && ret->state != VOLUME_COMMITTED))
		return fail(-ENOENT, "no such image: %s", name);
	return r < 0 ? internal(r, "read image") : 0;
}

int ops_image_publish(const char *name, const char *tenant, struct image_view *ret_view)
{
	struct volume v;
	struct tenant t = {0};
	int r;

	LOCKED;
	r = image_by_name(name, &v);
	if (r < 0)
		return r;
	if (tenant && (r = tenant_by_name(tenant, &t)) < 0)
		return r;
	r = store_publish(ops.store, v.id, t.id);
	if (r < 0)
		return internal(r, "publish image");
	log_info("published image %s to %s", name, tenant ? tenant : "all tenants");
	r = image_view(&v, ret_view);
	return r < 0 ? internal(r, "read image") : 0;
}

int ops_image_list(struct image_view **ret_views, size_t *ret_n)
{
	CLEANUP_FREE struct volume *vols = NULL;
	struct image_view *views;
	size_t n, i, k = 0;
	int r;

	LOCKED;
	r = store_volume_list(ops.store, 0, &vols, &n);
	if (r < 0)
		return internal(r, "list images");
	views = calloc(n ? n : 1, sizeof *views);
	if (views == NULL)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		if (vols[i].state != VOLUME_COMMITTED && vols[i].state != VOLUME_IMPORTING)
			continue;
		if ((r = image_view(&vols[i], &views[k++])) < 0) {
			ops_image_views_free(views, k);
			return internal(r, "read image");
		}
	}
	*ret_views = views;
	*ret_n = k;
	return 0;
}

int ops_image_remove(const char *name)
{
	struct change_clock clk;
	struct volume v;
	int r;

	LOCKED;
	change_clock_start(&clk);
	r = image_by_name(name, &v);
	return r < 0 ? r : remove_volume(&v, &clk);
}

/* Admin: grants */

static int grant_target(const struct grant_view *g, struct volume *ret_volume,
                        struct tenant *ret_to)
{
	struct tenant owner;
	int r;

	if ((r = tenant_by_name(g->owner, &owner)) < 0 || (r = tenant_by_name(g->to, ret_to)) < 0)
		return r;
	if (owner.id == ret_to->id)
		return fail(-EINVAL, "invalid grant: %s already owns %s", g->to, g->volume);
	if (!tp_name_valid(g->volume))
		return fail_code(TP_ERROR_INVALID_NAME, -EINVAL, "invalid volume name \"%.80s\"",
		                 g->volume);
	r = store_volume_get(ops.store, owner.id, g->volume, ret_volume);
	if (r == -ENOENT || (r == 0 && !volume_settled(ret_volume)))
		return fail(-ENOENT, "no such volume: %s/%s", g->owner, g->volume);
	return r < 0 ? internal(r, "read volume") : 0;
}

/* After a grant of V to tenant TO is revoked or made read-only: whatever TO's nbdkit has
 * open of V is closed. An fd handed over cannot be taken back, so the nbdkit goes (and
 * comes back at once for the tenant's other volumes). */
static void release_grant(const struct volume *v, const struct tenant *to)
{
	struct thin_status ts;
	int r;

	if (pool_thin_status(ops.pool, v->thin_id, &ts) < 0 || !ts.active || !ts.open_count ||
	    ops.cfg.tenant_release == NULL)
		return;
	r = ops.cfg.tenant_release(to->name, ts.devnum);
	if (r < 0)
		log_errno(
		    LOG_ERR, r,
		    "tenant %s: end its connections to %s (revoked): %m; they stay open until "
		    "its nbdkit restarts",
		    to->name, v->name);
	else if (r > 0)
		log_info("tenant %s: connections to revoked volume %s ended", to->name, v->name);
}

int ops_grant(const struct grant_view *g)
{
	struct volume v;
	struct tenant to;
	struct grant gr, old;
	bool downgrade;
	int r;

	LOCKED;
	r = grant_target(g, &v, &to);
	if (r < 0)
		return r;
	downgrade = store_grant_get(ops.store, v.id, to.id, &old) == 0 && old.write && !g->write;
	gr.volume_id = v.id;
	gr.tenant_id = to.id;
	gr.write = g->write;
	r = store_grant_set(ops.store, &gr);
	if (r < 0)
		return internal(r, "grant");
	log_info("granted %s/%s to %s (%s)", g->owner, g->volume, g->to,
	         g->write ? "read-write" : "read-only");
	if (downgrade)
		release_grant(&v, &to);
	return 0;
}

int ops_revoke(const struct grant_view *g)
{
	struct volume v;
	struct tenant to;
	int r;

	LOCKED;
	r = grant_target(g, &v, &to);
	if (r < 0)
		return r;
	r = store_grant_remove(ops.store, v.id, to.id);
	if (r == -ENOENT)
		return fail(r, "no such grant: %s/%s to %s", g->owner, g->volume, g->to);
	if (r < 0)
		return internal(r, "revoke");
	log_info("revoked %s/%s from %s", g->owner, g->volume, g->to);
	release_grant(&v, &to);
	return 0;
}

int ops_grant_list(struct grant_view **ret_views, size_t *ret_n)
{
	CLEANUP_FREE struct grant *grants = NULL;
	CLEANUP_FREE struct grant_view *views = NULL;
	struct volume v;
	size_t n, i;
	int r;

	LOCKED;
	r = store_grant_list(ops.store, &grants, &n);
	if (r < 0)
		return internal(r, "list grants");
	views = calloc(n ? n : 1, sizeof *views);
	if (views == NULL)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		if ((r = store_volume_get_by_id(ops.store, grants[i].volume_id, &v)) < 0 ||
		    (r = tenant_name(v.tenant_id, views[i].owner, sizeof views[i].owner)) < 0 ||
		    (r = tenant_name(grants[i].tenant_id, views[i].to, sizeof views[i].to)) < 0)
			return internal(r, "read grant");
		snprintf(views[i].volume, sizeof views[i].volume, "%s", v.name);
		views[i].write = grants[i].write;
	}
	*ret_views = TAKE_PTR(views);
	*ret_n = n;
	return 0;
}

/* Metrics */

int ops_metrics(char **ret_text)
{
	CLEANUP_FREE struct tenant *tenants = NULL;
	struct pool_status st;
	uint64_t bs;
	size_t n = 0, i, len = 0;
	char *text = NULL;
	FILE *f;
	int r;

	LOCKED;
	r = pool_get_status(ops.pool, &st);
	if (r == 0)
		r = store_tenant_list(ops.store, &tenants, &n);
	if (r < 0)
		return internal(r, "read metrics");
	bs = pool_block_size(ops.pool);
	f = open_memstream(&text, &len);
	if (f == NULL)
		return -ENOMEM;
	fprintf(f,
	        "# HELP thinproxy_pool_data_bytes Data space of the thin pool.\n"
	        "# TYPE thinproxy_pool_data_bytes gauge\n"
	        "thinproxy_pool_data_bytes{state=\"used\"} %" PRIu64 "\n"
	        "thinproxy_pool_data_bytes{state=\"total\"} %" PRIu64 "\n"
	        "# HELP thinproxy_pool_metadata_bytes Metadata space of the thin pool (limit: what "
	        "it may grow to).\n"
	        "# TYPE thinproxy_pool_metadata_bytes gauge\n"
	        "thinproxy_pool_metadata_bytes{state=\"used\"} %" PRIu64 "\n"
	        "thinproxy_pool_metadata_bytes{state=\"total\"} %" PRIu64 "\n"
	        "thinproxy_pool_metadata_bytes{state=\"limit\"} %" PRIu64 "\n"
	        "# HELP thinproxy_pool_transaction_id The pool's transaction id.\n"
	        "# TYPE thinproxy_pool_transaction_id counter\n"
	        "thinproxy_pool_transaction_id %" PRIu64 "\n"
	        "# HELP thinproxy_pool_out_of_space 1 when writers get ENOSPC.\n"
	        "# TYPE thinproxy_pool_out_of_space gauge\n"
	        "thinproxy_pool_out_of_space %d\n",
	        st.data_used * bs, st.data_total * bs, st.meta_used * 4096, st.meta_total * 4096,
	        pool_metadata_limit(ops.pool) > st.meta_total * 4096 ? pool_metadata_limit(ops.pool)
	                                                             : st.meta_total * 4096,
	        st.transaction_id, st.out_of_data_space ? 1 : 0);
	fprintf(f, "# HELP thinproxy_tenant_volumes Volumes a tenant owns.\n"
	           "# TYPE thinproxy_tenant_volumes gauge\n"
	           "# HELP thinproxy_tenant_size_bytes Virtual size of a tenant's volumes.\n"
	           "# TYPE thinproxy_tenant_size_bytes gauge\n"
	           "# HELP thinproxy_tenant_used_bytes Mapped bytes of a tenant's volumes.\n"
	           "# TYPE thinproxy_tenant_used_bytes gauge\n");
	for (i = 0; i < n; i++) {
		struct usage u;

		if (store_tenant_usage(ops.store, tenants[i].id, &u) < 0)
			continue;
		fprintf(f,
		        "thinproxy_tenant_volumes{tenant=\"%s\"} %" PRIu64 "\n"
		        "thinproxy_tenant_size_bytes{tenant=\"%s\"} %" PRIu64 "\n"
		        "thinproxy_tenant_used_bytes{tenant=\"%s\"} %" PRIu64 "\n",
		        tenants[i].name, u.volumes, tenants[i].name, u.size, tenants[i].name,
		        u.used);
	}
	if (fclose(f) != 0) {
		free(text);
		return -ENOMEM;
	}
	*ret_text = text;
	return 0;
}
