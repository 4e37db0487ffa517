/* What the broker (daemon/broker.c) may ask for: whose nbdkit a uid is, the volumes a
 * tenant may open, and opening one. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops-internal.h"
#include "pool.h"
#include "store.h"

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

int ops_open_export(const struct principal *p, const char *ref, bool want_write, bool direct,
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
	fd = pool_open_thin(ops.pool, v.thin_id,
	                    (want_write ? O_RDWR : O_RDONLY) | (direct ? O_DIRECT : 0));
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
