/* The admin's grants of one tenant's volume to another: grant, revoke and list. A grant
 * revoked or made read-only ends the grantee's open connections to the volume. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "ops-internal.h"
#include "pool.h"
#include "store.h"
#include "tp-cleanup.h"

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
