/* bench-thinproxyd: thinproxyd built with this file in place of daemon/pool.c, so that its
 * API runs on a host without dm-thin (bench/host-meta.sh). Everything but device-mapper
 * is the daemon's own: the store, the API, the operations, the supervisor. The "pool"
 * only remembers which thin ids exist and its transaction id; no thin device is ever
 * active, so nothing can be opened through it. What it measures is the daemon's cost
 * around the pool calls, never the pool's. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../daemon/pool.h"

#define BLOCK_SECTORS 128

struct pool {
	char name[128];
	uint64_t tid;
	unsigned char *ids; /* one bit per thin id */
};

static bool has_id(const struct pool *p, uint32_t id)
{
	return id <= POOL_THIN_ID_MAX && (p->ids[id / 8] >> (id % 8) & 1);
}

static void set_id(struct pool *p, uint32_t id, bool on)
{
	if (on)
		p->ids[id / 8] |= (unsigned char)(1u << (id % 8));
	else
		p->ids[id / 8] &= (unsigned char)~(1u << (id % 8));
}

int pool_open(const struct pool_config *cfg, struct pool **ret_pool)
{
	struct pool *p = calloc(1, sizeof *p);

	if (p == NULL || (p->ids = calloc(1, POOL_THIN_ID_MAX / 8 + 1)) == NULL) {
		free(p);
		return -ENOMEM;
	}
	strncpy(p->name, cfg->dm_name ? cfg->dm_name : "thinproxy-pool", sizeof p->name - 1);
	*ret_pool = p;
	return 0;
}

void pool_close(struct pool *pool)
{
	if (pool == NULL)
		return;
	free(pool->ids);
	free(pool);
}

const char *pool_name(const struct pool *pool)
{
	return pool->name;
}

uint64_t pool_block_size(const struct pool *pool)
{
	(void)pool;
	return BLOCK_SECTORS * 512;
}

/* A roomy, healthy pool: 1 TiB of data, 1 GiB of metadata, nothing used. */
int pool_get_status(struct pool *pool, struct pool_status *ret_status)
{
	memset(ret_status, 0, sizeof *ret_status);
	ret_status->transaction_id = pool->tid;
	ret_status->data_total = (UINT64_C(1) << 40) / (BLOCK_SECTORS * 512);
	ret_status->meta_total = (UINT64_C(1) << 30) / 4096;
	ret_status->block_sectors = BLOCK_SECTORS;
	ret_status->error_if_no_space = true;
	return 0;
}

int pool_set_transaction_id(struct pool *pool, uint64_t old_id, uint64_t new_id)
{
	if (pool->tid != old_id)
		return -ESTALE;
	pool->tid = new_id;
	return 0;
}

int pool_create_thin(struct pool *pool, uint32_t id)
{
	if (id > POOL_THIN_ID_MAX)
		return -EINVAL;
	if (has_id(pool, id))
		return -EEXIST;
	set_id(pool, id, true);
	return 0;
}

int pool_create_snap(struct pool *pool, uint32_t id, uint32_t origin_id)
{
	if (!has_id(pool, origin_id))
		return -ENOENT;
	return pool_create_thin(pool, id);
}

int pool_delete_thin(struct pool *pool, uint32_t id)
{
	if (!has_id(pool, id))
		return -ENOENT;
	set_id(pool, id, false);
	return 0;
}

int pool_activate_thin(struct pool *pool, uint32_t id, uint64_t size, bool read_only)
{
	(void)size;
	(void)read_only;
	return has_id(pool, id) ? -EOPNOTSUPP : -ENOENT;
}

int pool_deactivate_thin(struct pool *pool, uint32_t id)
{
	(void)pool;
	(void)id;
	return 0;
}

int pool_resize_thin(struct pool *pool, uint32_t id, uint64_t size)
{
	(void)pool;
	(void)id;
	(void)size;
	return 0;
}

int pool_thin_status(struct pool *pool, uint32_t id, struct thin_status *ret_status)
{
	if (!has_id(pool, id))
		return -ENOENT;
	memset(ret_status, 0, sizeof *ret_status);
	return 0;
}

int pool_open_thin(struct pool *pool, uint32_t id, int flags)
{
	(void)pool;
	(void)id;
	(void)flags;
	return -ENXIO;
}

int pool_for_each_active(struct pool *pool, int (*fn)(uint32_t id, void *opaque), void *opaque)
{
	(void)pool;
	(void)fn;
	(void)opaque;
	return 0;
}
