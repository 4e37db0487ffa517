/* A tenant's volumes: create, snapshot, commit, labels, resize, remove, info, listing and
 * children; and what images, tenants and the monitor borrow from them: creating and
 * removing a volume through the change protocol, and refreshing its used bytes. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "change.h"
#include "log.h"
#include "ops-internal.h"
#include "pool.h"
#include "store.h"
#include "tp-backoff.h"
#include "tp-cleanup.h"

/* ops_labels_check as an ops error. The API checks labels first and names the label;
 * this keeps any other caller to the same rules. */
static int check_labels(const struct label_list *l, bool patch)
{
	char why[128];

	return ops_labels_check(l, patch, why, sizeof why) < 0 ? fail(-EINVAL, "%s", why) : 0;
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
int create_volume(const struct principal *p, enum change_op op, const char *name, uint64_t size,
                  const struct volume *origin, const struct label_list *labels,
                  struct change_clock *clk, struct volume *ret_volume)
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
int remove_volume(struct volume *v, struct change_clock *clk)
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

/* Read V's mapped bytes from the thin target and keep them in the store. With
 * ACTIVATE, an inactive volume is activated for the reading and deactivated after. */
void refresh_used(struct volume *v, bool activate)
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
int list_volumes(const struct principal *p, const struct label_list *filter, bool labels,
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
