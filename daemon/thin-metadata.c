/* dm-thin's on-disk metadata, read-only (docs/dm-thin-metadata.md). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "thin-metadata.h"

#define SUPERBLOCK_MAGIC UINT64_C(27022010)
/* Metadata versions 1 and 2 share the layout we read; 2 adds only compat bits. */
#define VERSION_MIN 1
#define VERSION_MAX 2
/* Incompatible features: none are defined yet, so any bit is one we cannot read. */
#define INCOMPAT_SUPPORTED 0

#define NODE_INTERNAL 1
#define NODE_LEAF     2
#define NODE_HEADER   32
/* Deeper than any btree of 2^64 keys with the smallest fan-out dm writes. */
#define DEPTH_MAX 64

/* Offsets in the superblock. */
enum {
	SB_CSUM = 0,
	SB_BLOCKNR = 8,
	SB_MAGIC = 32,
	SB_VERSION = 40,
	SB_TIME = 44,
	SB_TRANS_ID = 48,
	SB_HELD_ROOT = 56,
	SB_DATA_SM_ROOT = 64, /* struct disk_sm_root: le64 nr_blocks, nr_allocated, ... */
	SB_DATA_MAPPING_ROOT = 320,
	SB_DEVICE_DETAILS_ROOT = 328,
	SB_DATA_BLOCK_SIZE = 336,
	SB_METADATA_BLOCK_SIZE = 340,
	SB_METADATA_NR_BLOCKS = 344,
	SB_INCOMPAT_FLAGS = 360,
};

/* Offsets in a btree node's header. */
enum {
	NODE_CSUM = 0,
	NODE_FLAGS = 4,
	NODE_BLOCKNR = 8,
	NODE_NR_ENTRIES = 16,
	NODE_MAX_ENTRIES = 20,
	NODE_VALUE_SIZE = 24,
};

#define DEVICE_DETAILS_SIZE 24
#define MAPPING_TIME_BITS   24

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const unsigned char *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* CRC32C, reflected polynomial 0x82f63b78, a table built once. */
static uint32_t crc_table[256];

static void crc_table_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ UINT32_C(0x82f63b78) : c >> 1;
		crc_table[i] = c;
	}
}

uint32_t thin_meta_checksum(const void *data, uint64_t len, uint32_t xor_value)
{
	const unsigned char *p = data;
	uint32_t crc = ~UINT32_C(0);

	if (crc_table[1] == 0)
		crc_table_init();
	for (uint64_t i = 0; i < len; i++)
		crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
	return crc ^ xor_value;
}

static int read_fd(void *opaque, uint64_t blocknr, void *buf)
{
	const struct thin_meta *m = opaque;
	size_t done = 0;

	/* Through the aligned buffer, which O_DIRECT needs and the walk's stack is not. */
	while (done < THIN_META_BLOCK_SIZE) {
		ssize_t n = pread(m->fd, (char *)m->buf + done, THIN_META_BLOCK_SIZE - done,
		                  (off_t)(blocknr * THIN_META_BLOCK_SIZE + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO; /* the device ended before the size it gave */
		done += (size_t)n;
	}
	memcpy(buf, m->buf, THIN_META_BLOCK_SIZE);
	return 0;
}

int thin_meta_init_fd(struct thin_meta *m, int fd, uint64_t nr_blocks)
{
	void *buf;

	if (posix_memalign(&buf, THIN_META_BLOCK_SIZE, THIN_META_BLOCK_SIZE) != 0)
		return -ENOMEM;
	memset(m, 0, sizeof *m);
	m->read = read_fd;
	m->opaque = m;
	m->nr_blocks = nr_blocks;
	m->budget = 0; /* the default */
	m->buf = buf;
	m->fd = fd;
	return 0;
}

void thin_meta_done(struct thin_meta *m)
{
	free(m->buf);
	m->buf = NULL;
}

/* Give the call starting on M its budget of reads. */
static void budget_start(struct thin_meta *m)
{
	if (m->budget != 0)
		m->left = m->budget;
	else
		m->left = m->nr_blocks <= UINT64_MAX / 4 ? 4 * m->nr_blocks : UINT64_MAX;
}

/* Read block BLOCKNR into BUF, from the call's budget. */
static int read_block(struct thin_meta *m, uint64_t blocknr, unsigned char *buf)
{
	if (blocknr >= m->nr_blocks)
		return -EBADMSG;
	if (m->left == 0)
		return -EBADMSG; /* more reads than a sound tree needs: a loop or a forest */
	m->left--;
	return m->read(m->opaque, blocknr, buf);
}

/* Is BUF, read from BLOCKNR, a block that says so and carries its checksum? */
static bool block_sound(const unsigned char *buf, uint64_t blocknr, size_t blocknr_at,
                        uint32_t xor_value)
{
	return le64(buf + blocknr_at) == blocknr &&
	       le32(buf) == thin_meta_checksum(buf + 4, THIN_META_BLOCK_SIZE - 4, xor_value);
}

int thin_meta_superblock(struct thin_meta *m, uint64_t blocknr, struct thin_meta_superblock *ret_sb)
{
	unsigned char buf[THIN_META_BLOCK_SIZE];
	struct thin_meta_superblock sb;
	uint32_t version;
	int r;

	budget_start(m);
	r = read_block(m, blocknr, buf);
	if (r < 0)
		return r;
	if (le64(buf + SB_MAGIC) != SUPERBLOCK_MAGIC ||
	    !block_sound(buf, blocknr, SB_BLOCKNR, THIN_META_SUPERBLOCK_CSUM_XOR))
		return -EBADMSG;
	version = le32(buf + SB_VERSION);
	if (version < VERSION_MIN || version > VERSION_MAX ||
	    (le32(buf + SB_INCOMPAT_FLAGS) & ~(uint32_t)INCOMPAT_SUPPORTED) != 0)
		return -EOPNOTSUPP;
	if (le32(buf + SB_METADATA_BLOCK_SIZE) != THIN_META_BLOCK_SIZE / 512)
		return -EBADMSG;
	sb = (struct thin_meta_superblock){
	    .blocknr = blocknr,
	    .version = version,
	    .time = le32(buf + SB_TIME),
	    .transaction_id = le64(buf + SB_TRANS_ID),
	    .held_root = le64(buf + SB_HELD_ROOT),
	    .data_mapping_root = le64(buf + SB_DATA_MAPPING_ROOT),
	    .device_details_root = le64(buf + SB_DEVICE_DETAILS_ROOT),
	    .data_block_sectors = le32(buf + SB_DATA_BLOCK_SIZE),
	    .metadata_nr_blocks = le64(buf + SB_METADATA_NR_BLOCKS),
	    .data_nr_blocks = le64(buf + SB_DATA_SM_ROOT),
	    .data_nr_allocated = le64(buf + SB_DATA_SM_ROOT + 8),
	};
	/* The roots must be blocks of the device; the superblock is none of them. A held copy
	 * has its space map roots wiped (so data_nr_blocks is 0 there). */
	if (sb.data_mapping_root == 0 || sb.data_mapping_root >= m->nr_blocks ||
	    sb.device_details_root == 0 || sb.device_details_root >= m->nr_blocks ||
	    sb.held_root >= m->nr_blocks || sb.data_block_sectors == 0 ||
	    sb.data_nr_allocated > sb.data_nr_blocks ||
	    sb.data_nr_blocks > THIN_META_DATA_BLOCK_MAX + 1)
		return -EBADMSG;
	*ret_sb = sb;
	return 0;
}

/* A btree walk: one tree of fixed-size values, visited in key order. */
struct walk {
	struct thin_meta *m;
	uint32_t value_size;
	/* Called for each leaf entry; a non-zero return stops the walk. */
	int (*leaf)(struct walk *w, uint64_t key, const unsigned char *value);
	void *opaque;
	uint64_t from; /* leaves with lower keys are skipped, and subtrees that hold only those */
};

/* Visit the node at BLOCKNR, whose keys must lie in [LO, HI] (HI inclusive, so that
 * UINT64_MAX is a key), DEPTH levels below the root. */
static int walk_node(struct walk *w, uint64_t blocknr, uint64_t lo, uint64_t hi, unsigned depth)
{
	unsigned char buf[THIN_META_BLOCK_SIZE];
	uint32_t flags, nr, max, value_size;
	const unsigned char *keys, *values;
	int r;

	if (depth > DEPTH_MAX)
		return -EBADMSG;
	r = read_block(w->m, blocknr, buf);
	if (r < 0)
		return r;
	if (!block_sound(buf, blocknr, NODE_BLOCKNR, THIN_META_BTREE_CSUM_XOR))
		return -EBADMSG;
	flags = le32(buf + NODE_FLAGS);
	nr = le32(buf + NODE_NR_ENTRIES);
	max = le32(buf + NODE_MAX_ENTRIES);
	value_size = le32(buf + NODE_VALUE_SIZE);
	if (flags != NODE_INTERNAL && flags != NODE_LEAF)
		return -EBADMSG;
	if (value_size != (flags == NODE_INTERNAL ? 8 : w->value_size))
		return -EBADMSG;
	/* Bounded before multiplying: max * (8 + value_size) cannot overflow past these. */
	if (max > THIN_META_BLOCK_SIZE || nr > max ||
	    NODE_HEADER + (uint64_t)max * (8 + value_size) > THIN_META_BLOCK_SIZE)
		return -EBADMSG;
	/* Only the root may be empty, and only a leaf. */
	if (nr == 0 && (depth > 0 || flags == NODE_INTERNAL))
		return -EBADMSG;
	keys = buf + NODE_HEADER;
	values = keys + (size_t)max * 8;
	for (uint32_t i = 0; i < nr; i++) {
		uint64_t key = le64(keys + 8 * i);

		/* An internal key is at most its subtree's lowest (a delete does not raise it),
		 * so the parent's key bounds the child's from below, the next one from above. */
		if (key < lo || key > hi || (i > 0 && key <= le64(keys + 8 * (i - 1))))
			return -EBADMSG;
	}
	for (uint32_t i = 0; i < nr; i++) {
		uint64_t key = le64(keys + 8 * i);
		uint64_t last = i + 1 < nr ? le64(keys + 8 * (i + 1)) - 1 : hi;
		const unsigned char *value = values + (size_t)i * value_size;

		if (flags == NODE_LEAF)
			r = key < w->from ? 0 : w->leaf(w, key, value);
		else
			r = last < w->from ? 0 : walk_node(w, le64(value), key, last, depth + 1);
		if (r != 0)
			return r;
	}
	return 0;
}

static int walk_tree(struct walk *w, uint64_t root)
{
	return walk_node(w, root, 0, UINT64_MAX, 0);
}

struct devices_walk {
	int (*fn)(const struct thin_meta_device *dev, void *opaque);
	void *opaque;
};

static int device_leaf(struct walk *w, uint64_t key, const unsigned char *value)
{
	const struct devices_walk *d = w->opaque;
	struct thin_meta_device dev = {
	    .id = (uint32_t)key,
	    .mapped_blocks = le64(value),
	    .transaction_id = le64(value + 8),
	    .creation_time = le32(value + 16),
	    .snapshotted_time = le32(value + 20),
	};

	if (key > UINT32_MAX)
		return -EBADMSG;
	return d->fn(&dev, d->opaque);
}

int thin_meta_devices(struct thin_meta *m, const struct thin_meta_superblock *sb,
                      int (*fn)(const struct thin_meta_device *dev, void *opaque), void *opaque)
{
	struct devices_walk d = {.fn = fn, .opaque = opaque};
	struct walk w = {
	    .m = m, .value_size = DEVICE_DETAILS_SIZE, .leaf = device_leaf, .opaque = &d};

	budget_start(m);
	return walk_tree(&w, sb->device_details_root);
}

/* Finding one device's root in the top level of the mapping tree. */
struct root_find {
	uint64_t id;
	uint64_t root; /* 0 until found: block 0 is the superblock, never a root */
};

/* Called from the device's key on (the walk skips lower ones). */
static int root_leaf(struct walk *w, uint64_t key, const unsigned char *value)
{
	struct root_find *f = w->opaque;

	if (key == f->id) {
		f->root = le64(value);
		if (f->root == 0)
			return -EBADMSG;
	}
	return 1; /* found, or past it: stop */
}

/* The mapping walk: runs built from a device's leaves. */
struct mappings_walk {
	const struct thin_meta_superblock *sb;
	int (*fn)(const struct thin_meta_run *run, void *opaque);
	void *opaque;
	struct thin_meta_run run; /* len 0: none yet */
};

static int mapping_leaf(struct walk *w, uint64_t key, const unsigned char *value)
{
	struct mappings_walk *mw = w->opaque;
	uint64_t v = le64(value);
	uint64_t data = v >> MAPPING_TIME_BITS;
	uint32_t time = (uint32_t)(v & ((UINT64_C(1) << MAPPING_TIME_BITS) - 1));
	struct thin_meta_run *run = &mw->run;
	int r;

	if (data > THIN_META_DATA_BLOCK_MAX ||
	    (mw->sb->data_nr_blocks != 0 && data >= mw->sb->data_nr_blocks))
		return -EBADMSG;
	if (run->len > 0 && key == run->virt + run->len && data == run->data + run->len &&
	    time == run->time) {
		run->len++;
		return 0;
	}
	if (run->len > 0) {
		r = mw->fn(run, mw->opaque);
		if (r != 0)
			return r;
	}
	*run = (struct thin_meta_run){.virt = key, .data = data, .len = 1, .time = time};
	return 0;
}

int thin_meta_mappings(struct thin_meta *m, const struct thin_meta_superblock *sb, uint32_t id,
                       int (*fn)(const struct thin_meta_run *run, void *opaque), void *opaque)
{
	struct root_find f = {.id = id};
	struct walk w = {.m = m, .value_size = 8, .leaf = root_leaf, .opaque = &f, .from = id};
	struct mappings_walk mw = {.sb = sb, .fn = fn, .opaque = opaque};
	int r;

	budget_start(m);
	r = walk_tree(&w, sb->data_mapping_root);
	if (r < 0)
		return r;
	if (f.root == 0)
		return -ENOENT;
	w = (struct walk){.m = m, .value_size = 8, .leaf = mapping_leaf, .opaque = &mw};
	r = walk_tree(&w, f.root);
	if (r != 0)
		return r;
	return mw.run.len > 0 ? fn(&mw.run, opaque) : 0;
}
