/* Byte ranges from a thin device's mappings (thin-map.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "thin-map.h"
#include "thin-metadata.h"

void run_list_free(struct run_list *l)
{
	free(l->runs);
	*l = (struct run_list){0};
}

static int run_list_add(const struct thin_meta_run *run, void *opaque)
{
	struct run_list *l = opaque;

	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 64;
		struct thin_meta_run *runs = reallocarray(l->runs, cap, sizeof *runs);

		if (runs == NULL)
			return -ENOMEM;
		l->runs = runs;
		l->cap = cap;
	}
	l->runs[l->n++] = *run;
	return 0;
}

int run_list_collect(struct thin_meta *m, const struct thin_meta_superblock *sb, uint32_t id,
                     struct run_list *l)
{
	return thin_meta_mappings(m, sb, id, run_list_add, l);
}

/* A growing array of byte ranges, with the kind the diff gives each. */
struct ranges {
	struct volume_change *r;
	size_t n, cap;
	uint64_t block_bytes, size;
};

/* Append blocks [BEGIN, END) of kind DATA, cut at the size, joined to the last range if
 * they touch it and are of its kind. */
static int ranges_add(struct ranges *rs, uint64_t begin, uint64_t end, bool data)
{
	uint64_t offset, limit = rs->size / rs->block_bytes + (rs->size % rs->block_bytes != 0);
	uint64_t length;

	if (begin >= limit)
		return 0;
	if (end > limit)
		end = limit;
	offset = begin * rs->block_bytes;
	length = end * rs->block_bytes - offset;
	if (offset + length > rs->size)
		length = rs->size - offset;
	if (rs->n > 0 && rs->r[rs->n - 1].data == data &&
	    rs->r[rs->n - 1].offset + rs->r[rs->n - 1].length == offset) {
		rs->r[rs->n - 1].length += length;
		return 0;
	}
	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? 2 * rs->cap : 64;
		struct volume_change *r = reallocarray(rs->r, cap, sizeof *r);

		if (r == NULL)
			return -ENOMEM;
		rs->r = r;
		rs->cap = cap;
	}
	rs->r[rs->n++] = (struct volume_change){.offset = offset, .length = length, .data = data};
	return 0;
}

int run_list_ranges(const struct run_list *l, uint64_t block_bytes, uint64_t size,
                    struct export_range **ret_ranges, size_t *ret_n)
{
	struct ranges rs = {.block_bytes = block_bytes, .size = size};
	struct export_range *out = NULL;
	int r;

	for (size_t i = 0; i < l->n; i++) {
		r = ranges_add(&rs, l->runs[i].virt, l->runs[i].virt + l->runs[i].len, true);
		if (r < 0) {
			free(rs.r);
			return r;
		}
	}
	if (rs.n > 0) {
		out = calloc(rs.n, sizeof *out);
		if (out == NULL) {
			free(rs.r);
			return -ENOMEM;
		}
	}
	for (size_t i = 0; i < rs.n; i++)
		out[i] = (struct export_range){.offset = rs.r[i].offset, .length = rs.r[i].length};
	free(rs.r);
	*ret_ranges = out;
	*ret_n = rs.n;
	return 0;
}

/* A cursor over a run list: the run holding or following a virtual block. */
struct cursor {
	const struct run_list *l;
	size_t i;
};

/* Move C past the runs that end at or before V; true if a run is left. */
static bool cursor_seek(struct cursor *c, uint64_t v)
{
	while (c->i < c->l->n && c->l->runs[c->i].virt + c->l->runs[c->i].len <= v)
		c->i++;
	return c->i < c->l->n;
}

/* Call FN for each stretch [V, END) where NEW and OLD map differently: DATA if NEW maps it.
 * Within a stretch both sides are each one run (or nothing), so one block decides it. */
static int diff_walk(const struct run_list *new_runs, const struct run_list *old_runs,
                     int (*fn)(uint64_t v, uint64_t end, bool data, void *opaque), void *opaque)
{
	struct cursor a = {.l = new_runs}, b = {.l = old_runs};
	uint64_t v = 0;

	for (;;) {
		bool more_a = cursor_seek(&a, v), more_b = cursor_seek(&b, v);
		const struct thin_meta_run *ra = more_a ? &new_runs->runs[a.i] : NULL;
		const struct thin_meta_run *rb = more_b ? &old_runs->runs[b.i] : NULL;
		bool in_a = ra != NULL && ra->virt <= v, in_b = rb != NULL && rb->virt <= v;
		uint64_t end = UINT64_MAX;
		int r;

		if (!more_a && !more_b)
			return 0;
		if (ra != NULL)
			end = in_a ? ra->virt + ra->len : ra->virt;
		if (rb != NULL && (in_b ? rb->virt + rb->len : rb->virt) < end)
			end = in_b ? rb->virt + rb->len : rb->virt;
		if (in_a != in_b ||
		    (in_a && ra->data + (v - ra->virt) != rb->data + (v - rb->virt))) {
			r = fn(v, end, in_a, opaque);
			if (r < 0)
				return r;
		}
		v = end;
	}
}

static int diff_add(uint64_t v, uint64_t end, bool data, void *opaque)
{
	return ranges_add(opaque, v, end, data);
}

int run_list_diff(const struct run_list *new_runs, const struct run_list *old_runs,
                  uint64_t block_bytes, uint64_t size, struct volume_change **ret_changes,
                  size_t *ret_n)
{
	struct ranges rs = {.block_bytes = block_bytes, .size = size};
	int r;

	r = diff_walk(new_runs, old_runs, diff_add, &rs);
	if (r < 0) {
		free(rs.r);
		return r;
	}
	*ret_changes = rs.r;
	*ret_n = rs.n;
	return 0;
}

static int count_exclusive(uint64_t v, uint64_t end, bool data, void *opaque)
{
	if (data)
		*(uint64_t *)opaque += end - v;
	return 0;
}

uint64_t run_list_exclusive_blocks(const struct run_list *new_runs, const struct run_list *old_runs)
{
	uint64_t blocks = 0;

	diff_walk(new_runs, old_runs, count_exclusive, &blocks);
	return blocks;
}
