/* thinproxyd --teardown (see teardown.h): the daemon's state taken down in order, the
 * tenants' nbdkits first, so that nothing holds a thin device, then the thin devices,
 * then the pool. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

#include "log.h"
#include "store.h"
#include "teardown.h"
#include "tp-cleanup.h"

struct open_devices {
	struct pool *pool;
	struct store *store; /* NULL: no store to name the volumes */
	unsigned n;
};

/* pool_for_each_active callback: log thin device ID if something holds it open, with
 * the volume it is. */
static int report_open(uint32_t id, void *opaque)
{
	struct open_devices *o = opaque;
	struct thin_status ts;
	struct volume v;
	struct tenant t;
	int r;

	r = pool_thin_status(o->pool, id, &ts);
	if (r < 0)
		return log_errno(LOG_ERR, r, "thin id %" PRIu32 ": reading its status: %m", id);
	if (ts.open_count == 0)
		return 0;
	o->n++;
	if (o->store == NULL || store_volume_get_by_thin_id(o->store, id, &v) < 0)
		log_error("thin id %" PRIu32 " is open", id);
	else if (v.tenant_id == 0)
		log_error("image %s (thin id %" PRIu32 ") is open", v.name, id);
	else if (store_tenant_get_by_id(o->store, v.tenant_id, &t) == 0)
		log_error("volume %s/%s (thin id %" PRIu32 ") is open", t.name, v.name, id);
	else
		log_error("volume %s (thin id %" PRIu32 ") is open", v.name, id);
	return 0;
}

/* pool_for_each_active callback: deactivate thin device ID. */
static int deactivate(uint32_t id, void *opaque)
{
	int r = pool_deactivate_thin(opaque, id);

	if (r < 0)
		return log_errno(LOG_ERR, r, "deactivating thin id %" PRIu32 ": %m", id);
	return 0;
}

/* Stop the nbdkit of every tenant in STORE. */
static int stop_nbdkits(struct store *store, const struct supervise_config *sc)
{
	CLEANUP_FREE struct tenant *tenants = NULL;
	size_t n = 0, i;
	int r;

	r = store_tenant_list(store, &tenants, &n);
	if (r < 0)
		return log_errno(LOG_ERR, r, "listing tenants: %m");
	r = supervise_init(sc);
	if (r < 0)
		return log_errno(LOG_ERR, r, "start the nbdkit supervisor: %m");
	for (i = 0; i < n && r == 0; i++) {
		r = supervise_stop_tenant(tenants[i].name);
		if (r < 0)
			log_errno(LOG_ERR, r, "stopping the nbdkit of tenant %s: %m",
			          tenants[i].name);
	}
	supervise_shutdown();
	return r;
}

int teardown(const char *db_path, const struct pool_config *pc, const struct supervise_config *sc)
{
	struct pool_config attach = *pc;
	struct open_devices open_devices = {0};
	struct store *store = NULL;
	struct pool *pool = NULL;
	int r, n = 0;

	/* A store that does not exist has no tenants; opening it would make one. */
	if (access(db_path, F_OK) == 0) {
		r = store_open(db_path, &store);
		if (r < 0)
			return r;
	}
	/* Attach only: a teardown never creates the pool it is to take down. */
	attach.attach_only = true;
	r = pool_open(&attach, &pool);
	if (r == -ENODEV)
		log_info("the pool is not active: only the nbdkits to stop");
	else if (r < 0)
		goto out;

	/* Nothing changes while anything holds a thin device: stopping its tenant's nbdkit
	 * would turn an attached device's I/O, and a file system mounted on it, into
	 * errors. With the daemon stopped, no nbdkit can open another. */
	if (pool != NULL) {
		open_devices.pool = pool;
		open_devices.store = store;
		r = pool_for_each_active(pool, report_open, &open_devices);
		if (r < 0)
			goto out;
		if (open_devices.n > 0) {
			log_error(
			    "teardown refused, nothing changed: %u thin device%s open; detach "
			    "them (thinproxy detach) or end their NBD clients first",
			    open_devices.n, open_devices.n == 1 ? " is" : "s are");
			r = -EBUSY;
			goto out;
		}
	}

	if (store != NULL) {
		r = stop_nbdkits(store, sc);
		if (r < 0)
			goto out;
	}
	if (pool == NULL) {
		r = 0;
		goto out;
	}
	n = pool_for_each_active(pool, deactivate, pool);
	if (n < 0) {
		r = n;
		goto out;
	}
	log_info("pool %s: %d thin device%s deactivated", pool_name(pool), n, n == 1 ? "" : "s");
	if (pc->existing != NULL) {
		log_notice("pool %s is not ours (--pool): left active", pool_name(pool));
		r = 0;
		goto out;
	}
	r = pool_remove(pool);
	if (r < 0) {
		log_errno(LOG_ERR, r, "removing pool %s: %m", pool_name(pool));
		goto out;
	}
	log_notice("pool %s removed", pool_name(pool));
out:
	pool_close(pool);
	store_close(store);
	return r;
}
