/* Who may reach what, for the operations: principals, references resolved to volumes (own,
 * published image or granted, with one answer for anything not visible), a volume as a
 * principal sees it, ownership and writability, lookups by name and tenants' quotas. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops-internal.h"
#include "store.h"

int tenant_name(int64_t id, char *buf, size_t len)
{
	struct tenant t;
	int r = store_tenant_get_by_id(ops.store, id, &t);

	if (r < 0)
		return r;
	snprintf(buf, len, "%s", t.name);
	return 0;
}

/* How principal P writes a reference to V. */
void volume_ref(const struct principal *p, const struct volume *v, char *buf, size_t len)
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

bool volume_writable(const struct principal *p, const struct volume *v)
{
	struct grant g;

	if (v->state != VOLUME_READY || v->tenant_id == 0)
		return false;
	if (v->tenant_id == p->tenant_id)
		return true;
	return store_grant_get(ops.store, v->id, p->tenant_id, &g) == 0 && g.write;
}

/* V as P sees it, with its labels if WITH_LABELS and V is P's own: a tenant sees no other
 * tenant's labels, not even through a grant. */
int make_view(const struct principal *p, const struct volume *v, bool with_labels,
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

/* P's own volume NAME, settled (not creating or deleting). */
int own_volume(const struct principal *p, const char *name, struct volume *ret)
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
int resolve_ref(const struct principal *p, const char *ref, struct volume *ret)
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

int check_quota(const struct principal *p, uint64_t add_size)
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

int tenant_by_name(const char *name, struct tenant *ret)
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
