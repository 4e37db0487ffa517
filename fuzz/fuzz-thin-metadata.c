/* Fuzz target: daemon/thin-metadata.c, the walker of dm-thin's on-disk metadata. The
 * input is a metadata device's image, padded with zeros to whole 4 KiB blocks (at most
 * BLOCKS_MAX), read through a read function on memory. The walk is what a reader of a
 * pool does: the superblock at block 0, its devices, the mappings of the first few of them
 * and of ids no device has; then the same again from the metadata snapshot its held_root
 * names, if any.
 *
 * Before the walk, every block's checksum is computed and written in, as a superblock's
 * where the block has the superblock's magic and as a btree node's elsewhere: a random
 * mutation almost never carries a right CRC32C, so without this the fuzzer would see
 * nothing past the checksum test. The checksum test itself is the unit tests' part
 * (tests/unit/test-thin-metadata.c); everything behind it is the fuzzer's.
 *
 * What must hold whatever the bytes: no crash, hang or read past the image; only the
 * errors the header names; devices in order of id; runs in order, none empty, none that
 * could join the one before, each within 40 bits of data block and 24 of time and within
 * the data device the superblock gives; no call reads more than its budget. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../daemon/thin-metadata.h"

#define CHECK(cond)                       \
	do {                              \
		if (!(cond))              \
			__builtin_trap(); \
	} while (0)

#define BS         THIN_META_BLOCK_SIZE
#define BLOCKS_MAX 64
/* The devices whose mappings are walked, of those the details tree lists. */
#define DEVICES_WALKED 4
#define MAGIC          UINT64_C(27022010)
#define MAGIC_AT       32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct image {
	unsigned char blocks[BLOCKS_MAX][BS];
	uint64_t nr_blocks;
	uint64_t reads;
};

static uint64_t le64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void put_le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> 8 * i);
}

/* The walker's read function: a copy of the block, never one past the image. */
static int read_image(void *opaque, uint64_t blocknr, void *buf)
{
	struct image *img = opaque;

	CHECK(blocknr < img->nr_blocks);
	img->reads++;
	memcpy(buf, img->blocks[blocknr], BS);
	return 0;
}

struct devices {
	uint32_t ids[DEVICES_WALKED];
	size_t n;
	uint64_t seen;
	uint32_t last;
};

/* Check the order of ids, and keep the first DEVICES_WALKED. */
static int collect_device(const struct thin_meta_device *dev, void *opaque)
{
	struct devices *ds = opaque;

	CHECK(ds->seen == 0 || dev->id > ds->last);
	ds->last = dev->id;
	ds->seen++;
	if (ds->n < DEVICES_WALKED)
		ds->ids[ds->n++] = dev->id;
	return 0;
}

struct runs {
	const struct thin_meta_superblock *sb;
	struct thin_meta_run prev;
	uint64_t n;
};

/* Check a run on its own and against the one before. */
static int check_run(const struct thin_meta_run *r, void *opaque)
{
	struct runs *rs = opaque;
	const struct thin_meta_run *p = &rs->prev;

	CHECK(r->len > 0 && r->virt + (r->len - 1) >= r->virt);
	CHECK(r->time < UINT32_C(1) << 24);
	CHECK(r->data <= THIN_META_DATA_BLOCK_MAX &&
	      r->len - 1 <= THIN_META_DATA_BLOCK_MAX - r->data);
	if (rs->sb->data_nr_blocks != 0)
		CHECK(r->data + r->len <= rs->sb->data_nr_blocks);
	if (rs->n > 0) {
		CHECK(r->virt >= p->virt + p->len && p->virt + p->len > p->virt);
		CHECK(r->virt != p->virt + p->len || r->data != p->data + p->len ||
		      r->time != p->time);
	}
	rs->prev = *r;
	rs->n++;
	return 0;
}

/* Walk device ID's mappings, checking every run. */
static void walk_mappings(struct thin_meta *m, const struct thin_meta_superblock *sb, uint32_t id)
{
	struct runs rs = {.sb = sb};
	int r = thin_meta_mappings(m, sb, id, check_run, &rs);

	CHECK(r == 0 || r == -EBADMSG || r == -ENOENT);
}

/* Walk the superblock at BLOCKNR and what it holds; its held root's, once, too. */
static void walk(struct thin_meta *m, uint64_t blocknr, bool follow_held)
{
	struct thin_meta_superblock sb;
	struct devices ds = {0};
	int r = thin_meta_superblock(m, blocknr, &sb);

	CHECK(r == 0 || r == -EBADMSG || r == -EOPNOTSUPP);
	if (r != 0)
		return;
	CHECK(sb.blocknr == blocknr && sb.data_mapping_root < m->nr_blocks &&
	      sb.device_details_root < m->nr_blocks && sb.held_root < m->nr_blocks);
	CHECK(sb.data_nr_allocated <= sb.data_nr_blocks);
	r = thin_meta_devices(m, &sb, collect_device, &ds);
	CHECK(r == 0 || r == -EBADMSG);
	for (size_t i = 0; i < ds.n; i++)
		walk_mappings(m, &sb, ds.ids[i]);
	walk_mappings(m, &sb, 0);
	walk_mappings(m, &sb, UINT32_MAX);
	if (follow_held && sb.held_root != 0)
		walk(m, sb.held_root, false);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct image img;
	struct thin_meta m;
	uint64_t budget;

	if (size == 0 || size > sizeof img.blocks)
		return 0;
	memset(img.blocks, 0, sizeof img.blocks);
	memcpy(img.blocks, data, size);
	img.nr_blocks = (size + BS - 1) / BS;
	img.reads = 0;
	/* The checksums, as the comment at the top says. */
	for (uint64_t b = 0; b < img.nr_blocks; b++) {
		unsigned char *p = img.blocks[b];
		uint32_t xor_value = le64(p + MAGIC_AT) == MAGIC ? THIN_META_SUPERBLOCK_CSUM_XOR
		                                                 : THIN_META_BTREE_CSUM_XOR;

		put_le32(p, thin_meta_checksum(p + 4, BS - 4, xor_value));
	}
	budget = 4 * img.nr_blocks;
	m = (struct thin_meta){.read = read_image,
	                       .opaque = &img,
	                       .nr_blocks = img.nr_blocks,
	                       .budget = budget,
	                       .fd = -1};
	walk(&m, THIN_META_SUPERBLOCK, true);
	CHECK(m.left <= budget);
	return 0;
}
