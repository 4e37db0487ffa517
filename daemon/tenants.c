/* The admin's tenants: add, get, list, update and remove (with their volumes, if forced);
 * and a tenant's view of its own usage. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "change.h"
#include "log.h"
#include "ops-internal.h"
#include "store.h"
#include "tp-cleanup.h"

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

/* VIEW's exact allocation, where the pool's metadata tells it: one walk of T's volumes. */
static void exact_allocation(const struct tenant *t, struct tenant_view *view)
{
	uint64_t bytes;
	int r = tenants_allocated(t, 1, &bytes);

	if (r == 0) {
		view->has_allocated = true;
		view->allocated = bytes;
	} else if (r != -EOPNOTSUPP) {
		log_errno(LOG_DEBUG, r, "tenant %s: exact allocation: %m, leaving it out", t->name);
	}
}

int ops_usage(const struct principal *p, struct tenant_view *ret_view)
{
	struct tenant t;
	int r;

	LOCKED;
	r = store_tenant_get_by_id(ops.store, p->tenant_id, &t);
	if (r == 0)
		r = tenant_view(&t, ret_view);
	if (r < 0)
		return internal(r, "read usage");
	exact_allocation(&t, ret_view);
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
		r = store_tenant_add(ops.store, &t);
	if (r == -EEXIST)
		return fail(r, "tenant %s exists", spec->name);
	if (r < 0)
		return internal(r, "add tenant");
	/* Its sockets and nbdkit once it is in the store (a daemon that dies here brings
	 * it up at its next start, as every tenant); if they cannot be, it goes again. */
	if (ops.cfg.tenant_up && (r = ops.cfg.tenant_up(&t)) < 0) {
		if (ops.cfg.tenant_down)
			ops.cfg.tenant_down(t.name);
		if (store_tenant_remove(ops.store, t.id) < 0)
			log_error("tenant %s: could not be brought up, nor removed again", t.name);
		return internal(r, "bring up tenant");
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
	if (r < 0)
		return internal(r, "read tenant");
	exact_allocation(&t, ret_view);
	return 0;
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
