/* What the pool's metadata says of volumes: the map of what a volume holds (the broker's
 * MAP, for NBD block status), where a snapshot differs from another volume, and a
 * volume's exact usage. Each takes one metadata snapshot of the pool (pool_walk_metadata)
 * under the lock, walks the devices it needs, and computes from the runs after
 * (thin-map.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ops-internal.h"
#include "pool.h"
#include "store.h"
#include "thin-map.h"
#include "thin-metadata.h"

/* Up to two devices to collect in one snapshot. */
struct collect {
	uint32_t ids[2];
	size_t n;
	struct run_list lists[2];
};

static void collect_free(struct collect *c)
{
	for (size_t i = 0; i < 2; i++)
		run_list_free(&c->lists[i]);
}

static int collect_runs(struct thin_meta *m, const struct thin_meta_superblock *sb, void *opaque)
{
	struct collect *c = opaque;
	int r;

	for (size_t i = 0; i < c->n; i++) {
		r = run_list_collect(m, sb, c->ids[i], &c->lists[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Walk C's devices; the error, said once, for the caller to return. */
static int walk(struct collect *c, const char *what)
{
	int r = pool_walk_metadata(ops.pool, collect_runs, c);

	switch (r) {
	case 0:
		return 0;
	case -EBUSY:
		return fail(r,
		            "%s: the pool's metadata snapshot is held by another tool; "
		            "try again once it is released",
		            what);
	case -EOPNOTSUPP:
		return fail(r, "%s: this pool cannot tell what its volumes hold", what);
	default:
		/* -ENOENT too: the store names a thin device the pool does not have. */
		return internal(r, what);
	}
}

int ops_map_export(const struct principal *p, const char *ref, struct export_range **ret_ranges,
                   size_t *ret_n, uint64_t *ret_size)
{
	struct collect c = {.n = 1};
	struct volume v;
	int r;

	LOCKED;
	r = resolve_ref(p, ref, &v);
	if (r < 0)
		return -ENOENT;
	c.ids[0] = v.thin_id;
	r = walk(&c, "map volume");
	if (r == 0)
		r = run_list_ranges(&c.lists[0], pool_block_size(ops.pool), v.size, ret_ranges,
		                    ret_n);
	collect_free(&c);
	if (r < 0)
		return r == -ENOMEM ? internal(r, "map volume") : r;
	*ret_size = v.size;
	return 0;
}

int ops_volume_diff(const struct principal *p, const char *name, const char *from,
                    struct volume_change **ret_changes, size_t *ret_n, uint64_t *ret_size)
{
	struct collect c = {.n = 2};
	struct volume v, old;
	int r;

	LOCKED;
	r = own_volume(p, name, &v);
	if (r < 0)
		return r;
	r = resolve_ref(p, from, &old);
	if (r < 0)
		return r;
	c.ids[0] = v.thin_id;
	c.ids[1] = old.thin_id;
	r = walk(&c, "diff volumes");
	if (r == 0)
		r = run_list_diff(&c.lists[0], &c.lists[1], pool_block_size(ops.pool), v.size,
		                  ret_changes, ret_n);
	collect_free(&c);
	if (r < 0)
		return r == -ENOMEM ? internal(r, "diff volumes") : r;
	*ret_size = v.size;
	return 0;
}

/* V's mapped bytes, and those it shares with its parent or holds alone. */
static int exact_usage(const struct volume *v, struct volume_usage *ret_usage)
{
	struct collect c = {.ids = {v->thin_id}, .n = 1};
	uint64_t block = pool_block_size(ops.pool), mapped = 0, exclusive;
	struct volume parent;
	int r;

	if (v->parent_id != 0 && store_volume_get_by_id(ops.store, v->parent_id, &parent) == 0)
		c.ids[c.n++] = parent.thin_id;
	r = walk(&c, "volume usage");
	if (r < 0)
		return r;
	for (size_t i = 0; i < c.lists[0].n; i++)
		mapped += c.lists[0].runs[i].len;
	exclusive = c.n == 2 ? run_list_exclusive_blocks(&c.lists[0], &c.lists[1]) : mapped;
	collect_free(&c);
	*ret_usage = (struct volume_usage){
	    .mapped = mapped * block,
	    .exclusive = exclusive * block,
	    .shared = (mapped - exclusive) * block,
	};
	return 0;
}

int ops_volume_usage(const struct principal *p, const char *name, struct volume_usage *ret_usage)
{
	struct volume v;
	int r;

	LOCKED;
	r = own_volume(p, name, &v);
	if (r < 0)
		return r;
	return exact_usage(&v, ret_usage);
}

/* The tenants' allocations: the pool blocks each tenant's volumes map, each block counted
 * once however many of its volumes share it. */
struct allocation {
	const struct tenant *tenants;
	size_t n;
	uint64_t *counts;      /* blocks, per tenant */
	uint64_t *count;       /* the blocks of the tenant being counted */
	uint64_t *bits, nbits; /* which of them are counted already */
	struct thin_meta *m;
	const struct thin_meta_superblock *sb;
	int error;
};

static int mark_run(const struct thin_meta_run *run, void *opaque)
{
	struct allocation *a = opaque;

	for (uint64_t b = run->data; b < run->data + run->len; b++) {
		if (b >= a->nbits)
			return -EBADMSG; /* the walker bounds data blocks: never */
		if (!(a->bits[b / 64] & (UINT64_C(1) << (b % 64)))) {
			a->bits[b / 64] |= UINT64_C(1) << (b % 64);
			(*a->count)++;
		}
	}
	return 0;
}

static int mark_volume(const struct volume *v, void *opaque)
{
	struct allocation *a = opaque;

	/* Being created or removed, it may not be in the pool: what it holds is not yet, or
	 * no longer, the tenant's. */
	if (!volume_settled(v))
		return 0;
	return thin_meta_mappings(a->m, a->sb, v->thin_id, mark_run, a);
}

static int count_allocations(struct thin_meta *m, const struct thin_meta_superblock *sb,
                             void *opaque)
{
	struct allocation *a = opaque;
	int r;

	a->m = m;
	a->sb = sb;
	a->nbits = sb->data_nr_blocks;
	a->bits = calloc(a->nbits / 64 + 1, sizeof *a->bits);
	if (a->bits == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < a->n; i++) {
		memset(a->bits, 0, (a->nbits / 64 + 1) * sizeof *a->bits);
		a->count = &a->counts[i];
		r = store_volume_each(ops.store, a->tenants[i].id, mark_volume, a);
		if (r < 0)
			return r;
	}
	return 0;
}

int tenants_allocated(const struct tenant *tenants, size_t n, uint64_t *ret_bytes)
{
	struct allocation a = {.tenants = tenants, .n = n, .counts = ret_bytes};
	int r;

	memset(ret_bytes, 0, n * sizeof *ret_bytes);
	r = pool_walk_metadata(ops.pool, count_allocations, &a);
	free(a.bits);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		ret_bytes[i] *= pool_block_size(ops.pool);
	return 0;
}
