/* What the pool's metadata says of volumes: the map of what a volume holds (the broker's
 * MAP, for NBD block status), where a snapshot differs from another volume, and a
 * volume's exact usage. Each takes one metadata snapshot of the pool (pool_walk_metadata)
 * under the lock, walks the devices it needs, and computes from the runs after
 * (thin-map.c). */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ops-internal.h"
#include "pool.h"
#include "store.h"
#include "thin-map.h"
#include "thin-metadata.h"
#include "tp-clock.h"

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
 * once however many of its volumes share it. One bitmap of the pool's data blocks serves
 * every tenant: what a tenant set is cleared again run by run, so a tenant costs what its
 * volumes map, not the pool's size. */
struct allocation {
	const struct tenant *tenants;
	size_t n;
	uint64_t *counts;             /* blocks, per tenant */
	uint64_t *count;              /* the blocks of the tenant being counted */
	uint64_t *bits, nbits;        /* which of them are counted already */
	struct thin_meta_run *marked; /* the runs set in bits, to clear them again */
	size_t n_marked, cap_marked;
	struct thin_meta *m;
	const struct thin_meta_superblock *sb;
};

static int mark_run(const struct thin_meta_run *run, void *opaque)
{
	struct allocation *a = opaque;

	if (run->data > a->nbits || run->len > a->nbits - run->data)
		return -EBADMSG; /* the walker bounds data blocks: never */
	if (a->n_marked == a->cap_marked) {
		size_t cap = a->cap_marked ? 2 * a->cap_marked : 256;
		struct thin_meta_run *grown = realloc(a->marked, cap * sizeof *grown);

		if (grown == NULL)
			return -ENOMEM;
		a->marked = grown;
		a->cap_marked = cap;
	}
	a->marked[a->n_marked++] = *run;
	for (uint64_t b = run->data; b < run->data + run->len; b++) {
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
		a->count = &a->counts[i];
		a->n_marked = 0;
		r = store_volume_each(ops.store, a->tenants[i].id, mark_volume, a);
		if (r < 0)
			return r;
		for (size_t j = 0; j < a->n_marked; j++)
			for (uint64_t b = a->marked[j].data;
			     b < a->marked[j].data + a->marked[j].len; b++)
				a->bits[b / 64] &= ~(UINT64_C(1) << (b % 64));
	}
	return 0;
}

/* The counts last taken, by tenant id (sorted), and what they were taken under. A walk of
 * the metadata costs what the pool maps, and /metrics asks for every tenant's at each
 * scrape: between changes, the same answer is given again. What can change a count
 * without changing the key (a trim of a block another tenant's volume still maps, a
 * write and a trim of as many blocks between two looks) is seen within
 * ALLOCATION_MAX_AGE_MS. Under the ops lock, as its callers are. */
struct allocation_key {
	uint64_t store_changes, data_used, meta_used;
};

struct kept_count {
	int64_t id; /* the tenant's */
	uint64_t bytes;
};

static struct {
	struct allocation_key key;
	int64_t taken_ms; /* when the oldest count was taken; 0: none kept */
	struct kept_count *counts;
	size_t n, cap;
} kept;

void tenants_allocated_forget(void)
{
	free(kept.counts);
	memset(&kept, 0, sizeof kept);
}

static int allocation_key(struct allocation_key *ret_key)
{
	struct pool_status st;
	int r = pool_get_status(ops.pool, &st);

	if (r < 0)
		return r;
	*ret_key = (struct allocation_key){
	    .store_changes = store_changes(ops.store),
	    .data_used = st.data_used,
	    .meta_used = st.meta_used,
	};
	return 0;
}

static int cmp_id(const void *a, const void *b)
{
	int64_t x = ((const struct kept_count *)a)->id, y = ((const struct kept_count *)b)->id;

	return (x > y) - (x < y);
}

/* The count of tenant ID among the first N kept (sorted), or NULL. */
static struct kept_count *kept_among(int64_t id, size_t n)
{
	struct kept_count k = {.id = id};

	return n ? bsearch(&k, kept.counts, n, sizeof k, cmp_id) : NULL;
}

static struct kept_count *kept_count(int64_t id)
{
	return kept_among(id, kept.n);
}

/* Whether every one of the N TENANTS has a count taken under KEY, young enough. */
static bool all_kept(const struct allocation_key *key, const struct tenant *tenants, size_t n)
{
	if (kept.taken_ms == 0 || memcmp(key, &kept.key, sizeof *key) != 0 ||
	    tp_now_ms() - kept.taken_ms >= ALLOCATION_MAX_AGE_MS)
		return false;
	for (size_t i = 0; i < n; i++)
		if (kept_count(tenants[i].id) == NULL)
			return false;
	return true;
}

/* Keep the COUNTS of the N TENANTS, taken under KEY; an old key's counts go. Out of
 * memory, nothing is kept, which costs only a walk. */
static void keep(const struct allocation_key *key, const struct tenant *tenants, size_t n,
                 const uint64_t *counts)
{
	size_t sorted;

	if (kept.taken_ms == 0 || memcmp(key, &kept.key, sizeof *key) != 0) {
		kept.n = 0;
		kept.key = *key;
		kept.taken_ms = tp_now_ms();
	}
	if (kept.n + n > kept.cap) {
		struct kept_count *grown = realloc(kept.counts, (kept.n + n) * sizeof *grown);

		if (grown == NULL) {
			kept.n = 0;
			kept.taken_ms = 0;
			return;
		}
		kept.counts = grown;
		kept.cap = kept.n + n;
	}
	sorted = kept.n;
	for (size_t i = 0; i < n; i++) {
		/* Among the sorted ones: the caller names each tenant once. */
		struct kept_count *at = kept_among(tenants[i].id, sorted);

		if (at != NULL)
			at->bytes = counts[i];
		else
			kept.counts[kept.n++] = (struct kept_count){tenants[i].id, counts[i]};
	}
	qsort(kept.counts, kept.n, sizeof *kept.counts, cmp_id);
}

int tenants_allocated(const struct tenant *tenants, size_t n, uint64_t *ret_bytes)
{
	struct allocation a = {.tenants = tenants, .n = n, .counts = ret_bytes};
	struct allocation_key key;
	bool keyed;
	int r;

	/* The key before the walk: a change during it leaves the key older than the count,
	 * and the next call walks again. */
	keyed = allocation_key(&key) == 0;
	if (keyed && all_kept(&key, tenants, n)) {
		for (size_t i = 0; i < n; i++)
			ret_bytes[i] = kept_count(tenants[i].id)->bytes;
		return 0;
	}
	memset(ret_bytes, 0, n * sizeof *ret_bytes);
	r = pool_walk_metadata(ops.pool, count_allocations, &a);
	free(a.bits);
	free(a.marked);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		ret_bytes[i] *= pool_block_size(ops.pool);
	if (keyed)
		keep(&key, tenants, n, ret_bytes);
	return 0;
}
