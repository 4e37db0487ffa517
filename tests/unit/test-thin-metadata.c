/* Unit tests for daemon/thin-metadata.c, the read-only walker of dm-thin's metadata, on
 * metadata that thin_restore (thin-provisioning-tools) writes from XML made here. What the
 * walker reads is held against what thin_dump prints for the same file, block by block;
 * corrupt copies, each changed in one way and sealed again with a good checksum where the
 * checksum is not the point, must give -EBADMSG. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../daemon/thin-metadata.h"
#include "tp-cleanup.h"

#define BS THIN_META_BLOCK_SIZE
/* The data device of the XML's pools, in data blocks; its last is NR_DATA_BLOCKS - 1. */
#define NR_DATA_BLOCKS UINT64_C(2000000)
#define MAX_TIME       UINT32_C(16777215)
#define MAX_ID         UINT32_C(16777215)
/* In the big metadata: so many devices that both top-level trees need internal nodes,
 * and one device with so many scattered mappings that its tree needs them too. */
#define BIG_DEVICES  300
#define BIG_MAPPINGS 20000

/* Offsets dm-thin gives them (docs/dm-thin-metadata.md). */
#define SB_BLOCKNR        8
#define SB_MAGIC          32
#define SB_VERSION        40
#define SB_HELD_ROOT      56
#define SB_DATA_SM_ROOT   64
#define SB_MAPPING_ROOT   320
#define SB_DETAILS_ROOT   328
#define SB_INCOMPAT_FLAGS 360
#define NODE_FLAGS        4
#define NODE_BLOCKNR      8
#define NODE_NR_ENTRIES   16
#define NODE_MAX_ENTRIES  20
#define NODE_VALUE_SIZE   24
#define NODE_HEADER       32
#define NODE_INTERNAL     1
#define NODE_LEAF         2

static char dir[64];
static char small_path[96], big_path[96];

/* ---- Metadata files from XML ---- */

static uint64_t rand_state = 42;

/* A pseudo-random number, the same sequence on every run (PCG's LCG step). */
static uint32_t next_rand(void)
{
	rand_state = rand_state * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
	return (uint32_t)(rand_state >> 33);
}

/* Write metadata of SIZE bytes to PATH with thin_restore from the XML that WRITE_XML
 * writes. */
static void restore(const char *path, const char *size, void (*write_xml)(FILE *f))
{
	char xml[128], cmd[512];
	FILE *f;
	int r;

	snprintf(xml, sizeof xml, "%s.xml", path);
	f = fopen(xml, "we");
	ck_assert_ptr_nonnull(f);
	write_xml(f);
	ck_assert_int_eq(fclose(f), 0);
	snprintf(cmd, sizeof cmd, "truncate -s %s %s && thin_restore -q -i %s -o %s", size, path,
	         xml, path);
	r = system(cmd);
	ck_assert_msg(r == 0, "%s: exit %d (thin_restore is thin-provisioning-tools, .ci/deps)",
	              cmd, r);
}

/* Runs of mappings with various times, a run longer than a leaf, a snapshot sharing its
 * origin's blocks, an empty device, the highest time and thin id dm-thin can store. */
static void small_xml(FILE *f)
{
	fprintf(f,
	        "<superblock uuid=\"\" time=\"3\" transaction=\"9\" flags=\"0\" version=\"2\""
	        " data_block_size=\"128\" nr_data_blocks=\"%" PRIu64 "\">\n",
	        NR_DATA_BLOCKS);
	fprintf(
	    f,
	    "<device dev_id=\"1\" mapped_blocks=\"1061\" transaction=\"0\""
	    " creation_time=\"0\" snap_time=\"1\">\n"
	    "<range_mapping origin_begin=\"0\" data_begin=\"1000\" length=\"1000\" time=\"0\"/>\n"
	    "<range_mapping origin_begin=\"1000\" data_begin=\"2000\" length=\"50\" time=\"1\"/>\n"
	    "<range_mapping origin_begin=\"1050\" data_begin=\"3000\" length=\"10\" time=\"1\"/>\n"
	    "<single_mapping origin_block=\"4000000000\" data_block=\"%" PRIu64 "\" time=\"%" PRIu32
	    "\"/>\n"
	    "</device>\n",
	    NR_DATA_BLOCKS - 1, MAX_TIME);
	fprintf(
	    f,
	    "<device dev_id=\"2\" mapped_blocks=\"1020\" transaction=\"1\""
	    " creation_time=\"1\" snap_time=\"1\">\n"
	    "<range_mapping origin_begin=\"0\" data_begin=\"1000\" length=\"1000\" time=\"0\"/>\n"
	    "<range_mapping origin_begin=\"1000\" data_begin=\"4000\" length=\"20\" time=\"2\"/>\n"
	    "</device>\n");
	fprintf(f, "<device dev_id=\"3\" mapped_blocks=\"0\" transaction=\"2\""
	           " creation_time=\"2\" snap_time=\"2\">\n</device>\n");
	fprintf(f,
	        "<device dev_id=\"%" PRIu32 "\" mapped_blocks=\"1\" transaction=\"3\""
	        " creation_time=\"3\" snap_time=\"3\">\n"
	        "<single_mapping origin_block=\"7\" data_block=\"5000\" time=\"3\"/>\n"
	        "</device>\n",
	        MAX_ID);
	fprintf(f, "</superblock>\n");
}

/* Device 1: BIG_MAPPINGS scattered mappings, now and then the next block with the next
 * data block (a run) and a time that changes every 50; devices 2 to BIG_DEVICES: 0 to 3
 * mappings each. */
static void big_xml(FILE *f)
{
	uint64_t virt = 0;

	fprintf(f,
	        "<superblock uuid=\"\" time=\"4\" transaction=\"77\" flags=\"0\" version=\"2\""
	        " data_block_size=\"256\" nr_data_blocks=\"%" PRIu64 "\">\n",
	        NR_DATA_BLOCKS);
	fprintf(f,
	        "<device dev_id=\"1\" mapped_blocks=\"%d\" transaction=\"0\""
	        " creation_time=\"0\" snap_time=\"3\">\n",
	        BIG_MAPPINGS);
	for (int j = 0; j < BIG_MAPPINGS; j++) {
		virt += next_rand() % 4 == 0 ? 1 : 1 + next_rand() % 100000;
		fprintf(f,
		        "<single_mapping origin_block=\"%" PRIu64 "\" data_block=\"%d\""
		        " time=\"%d\"/>\n",
		        virt, 100 + j, (j / 50) % 4);
	}
	fprintf(f, "</device>\n");
	for (int k = 2; k <= BIG_DEVICES; k++) {
		fprintf(f,
		        "<device dev_id=\"%d\" mapped_blocks=\"%d\" transaction=\"%d\""
		        " creation_time=\"%d\" snap_time=\"%d\">\n",
		        k, k % 4, k, k % 5, k % 7);
		for (int j = 0; j < k % 4; j++)
			fprintf(f,
			        "<single_mapping origin_block=\"%d\" data_block=\"%d\""
			        " time=\"%d\"/>\n",
			        k * 10 + j, 1500000 + k * 4 + j, k % 3);
		fprintf(f, "</device>\n");
	}
	fprintf(f, "</superblock>\n");
}

/* Made once for every test, each of which forks and changes its own copy in memory. */
static void make_metadata(void)
{
	strcpy(dir, "/tmp/test-thin-metadata.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(small_path, sizeof small_path, "%s/small", dir);
	snprintf(big_path, sizeof big_path, "%s/big", dir);
	restore(small_path, "8M", small_xml);
	restore(big_path, "8M", big_xml);
}

/* Remove what make_metadata made. */
static void remove_metadata(void)
{
	char cmd[128];

	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* ---- What thin_dump prints ---- */

struct mapping {
	uint64_t virt, data;
	uint32_t time;
};

struct dump_device {
	struct thin_meta_device dev;
	struct mapping *maps;
	size_t n, cap;
};

struct dump {
	uint32_t time, version, data_block_size;
	uint64_t transaction, nr_data_blocks;
	struct dump_device *devs;
	size_t n;
};

/* The number after NAME=" in LINE, which must have it. */
static uint64_t attr(const char *line, const char *name)
{
	char key[64];
	const char *p;
	char *end;
	uint64_t v;

	snprintf(key, sizeof key, " %s=\"", name);
	p = strstr(line, key);
	ck_assert_msg(p != NULL, "thin_dump line without %s: %s", name, line);
	errno = 0;
	v = strtoull(p + strlen(key), &end, 10);
	ck_assert_msg(errno == 0 && *end == '"', "thin_dump %s: %s", name, line);
	return v;
}

/* Append one mapping to D's. */
static void add_mapping(struct dump_device *d, uint64_t virt, uint64_t data, uint64_t time)
{
	if (d->n == d->cap) {
		d->cap = d->cap ? 2 * d->cap : 64;
		d->maps = realloc(d->maps, d->cap * sizeof *d->maps);
		ck_assert_ptr_nonnull(d->maps);
	}
	d->maps[d->n++] = (struct mapping){.virt = virt, .data = data, .time = (uint32_t)time};
}

/* Run thin_dump on PATH (of the metadata snapshot at HELD if not 0) into D. */
static void dump(const char *path, uint64_t held, struct dump *d)
{
	char cmd[256], line[512];
	struct dump_device *dev = NULL;
	FILE *f;

	memset(d, 0, sizeof *d);
	d->devs = calloc(BIG_DEVICES + 8, sizeof *d->devs);
	ck_assert_ptr_nonnull(d->devs);
	if (held)
		snprintf(cmd, sizeof cmd, "thin_dump --metadata-snap=%" PRIu64 " %s", held, path);
	else
		snprintf(cmd, sizeof cmd, "thin_dump %s", path);
	f = popen(cmd, "re");
	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof line, f) != NULL) {
		if (strstr(line, "<superblock ") != NULL) {
			d->time = (uint32_t)attr(line, "time");
			d->transaction = attr(line, "transaction");
			d->version = (uint32_t)attr(line, "version");
			d->data_block_size = (uint32_t)attr(line, "data_block_size");
			d->nr_data_blocks = attr(line, "nr_data_blocks");
		} else if (strstr(line, "<device ") != NULL) {
			ck_assert_uint_lt(d->n, BIG_DEVICES + 8);
			dev = &d->devs[d->n++];
			dev->dev = (struct thin_meta_device){
			    .id = (uint32_t)attr(line, "dev_id"),
			    .mapped_blocks = attr(line, "mapped_blocks"),
			    .transaction_id = attr(line, "transaction"),
			    .creation_time = (uint32_t)attr(line, "creation_time"),
			    .snapshotted_time = (uint32_t)attr(line, "snap_time"),
			};
		} else if (strstr(line, "<range_mapping ") != NULL) {
			uint64_t virt = attr(line, "origin_begin"), data = attr(line, "data_begin");
			uint64_t len = attr(line, "length"), time = attr(line, "time");

			ck_assert_ptr_nonnull(dev);
			for (uint64_t i = 0; i < len; i++)
				add_mapping(dev, virt + i, data + i, time);
		} else if (strstr(line, "<single_mapping ") != NULL) {
			ck_assert_ptr_nonnull(dev);
			add_mapping(dev, attr(line, "origin_block"), attr(line, "data_block"),
			            attr(line, "time"));
		}
	}
	ck_assert_int_eq(pclose(f), 0);
	ck_assert_uint_gt(d->n, 0);
}

static void dump_free(struct dump *d)
{
	for (size_t i = 0; d->devs != NULL && i < d->n; i++)
		free(d->devs[i].maps);
	free(d->devs);
}
#define CLEANUP_DUMP __attribute__((cleanup(dump_free)))

/* Device ID as thin_dump printed it, which must be there. */
static const struct dump_device *dump_device(const struct dump *d, uint32_t id)
{
	for (size_t i = 0; i < d->n; i++)
		if (d->devs[i].dev.id == id)
			return &d->devs[i];
	ck_abort_msg("thin_dump has no device %" PRIu32, id);
	return NULL;
}

/* ---- Metadata in memory, read through the walker's read function ---- */

struct image {
	unsigned char *data;
	uint64_t nr_blocks;
	uint64_t fail_block; /* a read of it fails with EIO; UINT64_MAX: none */
	uint64_t reads;
	uint64_t highest_read;
};

/* The walker's read function on an image: a copy of the block, counted. */
static int read_image(void *opaque, uint64_t blocknr, void *buf)
{
	struct image *img = opaque;

	ck_assert_uint_lt(blocknr, img->nr_blocks); /* the walker bounds what it asks */
	if (blocknr == img->fail_block)
		return -EIO;
	img->reads++;
	if (blocknr > img->highest_read)
		img->highest_read = blocknr;
	memcpy(buf, img->data + blocknr * BS, BS);
	return 0;
}

/* The metadata file at PATH, whole, in memory. */
static struct image load(const char *path)
{
	struct image img = {.fail_block = UINT64_MAX};
	CLEANUP_CLOSE int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_int_eq(st.st_size % BS, 0);
	img.nr_blocks = (uint64_t)st.st_size / BS;
	img.data = malloc((size_t)st.st_size);
	ck_assert_ptr_nonnull(img.data);
	ck_assert_int_eq(pread(fd, img.data, (size_t)st.st_size, 0), st.st_size);
	return img;
}

static void image_free(struct image *img)
{
	free(img->data);
}
#define CLEANUP_IMAGE __attribute__((cleanup(image_free)))

/* Write IMG back to a file at PATH, for thin_dump to read. */
static void save(const struct image *img, const char *path)
{
	CLEANUP_CLOSE int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ssize_t size = (ssize_t)(img->nr_blocks * BS);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, img->data, (size_t)size, 0), size);
}

/* A walker over IMG with the budget the header's default gives. */
static struct thin_meta meta_of(struct image *img)
{
	return (struct thin_meta){.read = read_image,
	                          .opaque = img,
	                          .nr_blocks = img->nr_blocks,
	                          .budget = 4 * img->nr_blocks,
	                          .fd = -1};
}

/* Block BLOCKNR of IMG, to read or to change. */
static unsigned char *block(struct image *img, uint64_t blocknr)
{
	ck_assert_uint_lt(blocknr, img->nr_blocks);
	return img->data + blocknr * BS;
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> 8 * i);
}

static void put64(unsigned char *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

/* Seal block BLOCKNR of IMG with its checksum, as a superblock or a btree node. */
static void reseal(struct image *img, uint64_t blocknr, uint32_t xor_value)
{
	unsigned char *b = block(img, blocknr);

	put32(b, thin_meta_checksum(b + 4, BS - 4, xor_value));
}

static void reseal_superblock(struct image *img)
{
	reseal(img, THIN_META_SUPERBLOCK, THIN_META_SUPERBLOCK_CSUM_XOR);
}

static void reseal_node(struct image *img, uint64_t blocknr)
{
	reseal(img, blocknr, THIN_META_BTREE_CSUM_XOR);
}

static unsigned char *node_key(unsigned char *node, uint32_t i)
{
	return node + NODE_HEADER + 8 * (size_t)i;
}

/* The I-th value of NODE, whose values are 8 bytes (internal nodes, mapping leaves). */
static unsigned char *node_value(unsigned char *node, uint32_t i)
{
	return node + NODE_HEADER + 8 * (size_t)get32(node + NODE_MAX_ENTRIES) + 8 * (size_t)i;
}

static uint32_t node_flags(struct image *img, uint64_t blocknr)
{
	return get32(block(img, blocknr) + NODE_FLAGS);
}

static uint32_t node_entries(struct image *img, uint64_t blocknr)
{
	return get32(block(img, blocknr) + NODE_NR_ENTRIES);
}

/* The root of device ID's mapping tree, found in the top level of IMG's mapping tree. */
static uint64_t device_root(struct image *img, uint32_t id)
{
	uint64_t b = get64(block(img, 0) + SB_MAPPING_ROOT);

	for (int depth = 0; depth < 8; depth++) {
		unsigned char *n = block(img, b);
		uint32_t nr = get32(n + NODE_NR_ENTRIES), i;

		if (get32(n + NODE_FLAGS) == NODE_LEAF) {
			for (i = 0; i < nr; i++)
				if (get64(node_key(n, i)) == id)
					return get64(node_value(n, i));
			break;
		}
		for (i = 1; i < nr && get64(node_key(n, i)) <= id; i++)
			;
		b = get64(node_value(n, i - 1));
	}
	ck_abort_msg("no device %" PRIu32 " in the mapping tree", id);
	return 0;
}

/* The first leaf under the node at ROOT. */
static uint64_t first_leaf(struct image *img, uint64_t root)
{
	while (node_flags(img, root) == NODE_INTERNAL)
		root = get64(node_value(block(img, root), 0));
	ck_assert_uint_eq(node_flags(img, root), NODE_LEAF);
	return root;
}

/* The last leaf under the node at ROOT. */
static uint64_t last_leaf(struct image *img, uint64_t root)
{
	while (node_flags(img, root) == NODE_INTERNAL)
		root = get64(node_value(block(img, root), node_entries(img, root) - 1));
	ck_assert_uint_eq(node_flags(img, root), NODE_LEAF);
	return root;
}

/* ---- What the walker reads ---- */

struct runs {
	struct thin_meta_run *r;
	size_t n, cap;
	int stop_at; /* the callback returns 7 on this call (1-based); 0: never */
};

/* Keep each run in the struct runs at OPAQUE. */
static int collect_run(const struct thin_meta_run *run, void *opaque)
{
	struct runs *rs = opaque;

	if (rs->n == rs->cap) {
		rs->cap = rs->cap ? 2 * rs->cap : 64;
		rs->r = realloc(rs->r, rs->cap * sizeof *rs->r);
		ck_assert_ptr_nonnull(rs->r);
	}
	rs->r[rs->n++] = *run;
	return rs->stop_at != 0 && rs->n == (size_t)rs->stop_at ? 7 : 0;
}

struct devices {
	struct thin_meta_device d[BIG_DEVICES + 8];
	size_t n;
	int stop_at;
};

/* Keep each device in the struct devices at OPAQUE. */
static int collect_device(const struct thin_meta_device *dev, void *opaque)
{
	struct devices *ds = opaque;

	ck_assert_uint_lt(ds->n, BIG_DEVICES + 8);
	ds->d[ds->n++] = *dev;
	return ds->stop_at != 0 && ds->n == (size_t)ds->stop_at ? 5 : 0;
}

static int ignore_run(const struct thin_meta_run *run, void *opaque)
{
	(void)run;
	(void)opaque;
	return 0;
}

static int ignore_device(const struct thin_meta_device *dev, void *opaque)
{
	(void)dev;
	(void)opaque;
	return 0;
}

/* The walker's runs of device ID are in order, as long as they can be, and say block by
 * block what thin_dump's mappings say. */
static void assert_runs(struct thin_meta *m, const struct thin_meta_superblock *sb, uint32_t id,
                        const struct dump_device *want)
{
	struct runs rs = {0};
	size_t k = 0;

	ck_assert_int_eq(thin_meta_mappings(m, sb, id, collect_run, &rs), 0);
	for (size_t i = 0; i < rs.n; i++) {
		const struct thin_meta_run *r = &rs.r[i], *prev = i > 0 ? &rs.r[i - 1] : NULL;

		ck_assert_uint_gt(r->len, 0);
		if (prev) {
			ck_assert_uint_ge(r->virt, prev->virt + prev->len);
			ck_assert_msg(
			    r->virt != prev->virt + prev->len ||
			        r->data != prev->data + prev->len || r->time != prev->time,
			    "device %" PRIu32 ": runs at %" PRIu64 " and %" PRIu64 " could be one",
			    id, prev->virt, r->virt);
		}
		for (uint64_t j = 0; j < r->len; j++, k++) {
			ck_assert_msg(k < want->n,
			              "device %" PRIu32 ": more mappings than thin_dump's", id);
			ck_assert_uint_eq(r->virt + j, want->maps[k].virt);
			ck_assert_uint_eq(r->data + j, want->maps[k].data);
			ck_assert_uint_eq(r->time, want->maps[k].time);
		}
	}
	ck_assert_uint_eq(k, want->n);
	free(rs.r);
}

/* The walker reads from M what thin_dump printed into D: superblock, devices, every
 * device's mappings. */
static void assert_same_as_dump(struct thin_meta *m, const struct thin_meta_superblock *sb,
                                const struct dump *d)
{
	struct devices ds = {0};

	ck_assert_uint_eq(sb->time, d->time);
	ck_assert_uint_eq(sb->transaction_id, d->transaction);
	ck_assert_uint_eq(sb->version, d->version);
	ck_assert_uint_eq(sb->data_block_sectors, d->data_block_size);
	ck_assert_int_eq(thin_meta_devices(m, sb, collect_device, &ds), 0);
	ck_assert_uint_eq(ds.n, d->n);
	for (size_t i = 0; i < ds.n; i++) {
		const struct thin_meta_device *got = &ds.d[i], *want = &d->devs[i].dev;

		ck_assert_uint_eq(got->id, want->id);
		ck_assert_uint_eq(got->mapped_blocks, want->mapped_blocks);
		ck_assert_uint_eq(got->transaction_id, want->transaction_id);
		ck_assert_uint_eq(got->creation_time, want->creation_time);
		ck_assert_uint_eq(got->snapshotted_time, want->snapshotted_time);
		assert_runs(m, sb, got->id, &d->devs[i]);
	}
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The data blocks D maps, each counted once however many devices share it. */
static uint64_t distinct_data_blocks(const struct dump *d)
{
	CLEANUP_FREE uint64_t *all = NULL;
	size_t n = 0, distinct = 0;

	for (size_t i = 0; i < d->n; i++)
		n += d->devs[i].n;
	all = malloc((n + 1) * sizeof *all);
	ck_assert_ptr_nonnull(all);
	n = 0;
	for (size_t i = 0; i < d->n; i++)
		for (size_t j = 0; j < d->devs[i].n; j++)
			all[n++] = d->devs[i].maps[j].data;
	qsort(all, n, sizeof *all, compare_u64);
	for (size_t i = 0; i < n; i++)
		distinct += i == 0 || all[i] != all[i - 1];
	return distinct;
}

/* Superblock, devices and every device's mappings, as a reader of the whole pool would:
 * the first error. */
static int walk_all(struct thin_meta *m)
{
	struct thin_meta_superblock sb;
	struct devices ds = {0};
	int r;

	r = thin_meta_superblock(m, THIN_META_SUPERBLOCK, &sb);
	if (r == 0)
		r = thin_meta_devices(m, &sb, collect_device, &ds);
	for (size_t i = 0; r == 0 && i < ds.n; i++)
		r = thin_meta_mappings(m, &sb, ds.d[i].id, ignore_run, NULL);
	return r;
}

/* ---- Reading sound metadata ---- */

START_TEST(reads_the_superblock_thin_dump_reads)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	CLEANUP_DUMP struct dump d = {0};

	dump(small_path, 0, &d);
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	ck_assert_uint_eq(sb.blocknr, 0);
	ck_assert_uint_eq(sb.version, 2);
	ck_assert_uint_eq(sb.time, d.time);
	ck_assert_uint_eq(sb.transaction_id, d.transaction);
	ck_assert_uint_eq(sb.held_root, 0);
	ck_assert_uint_eq(sb.data_mapping_root, get64(block(&img, 0) + SB_MAPPING_ROOT));
	ck_assert_uint_eq(sb.device_details_root, get64(block(&img, 0) + SB_DETAILS_ROOT));
	ck_assert_uint_eq(sb.data_block_sectors, d.data_block_size);
	ck_assert_uint_eq(sb.metadata_nr_blocks, img.nr_blocks);
	ck_assert_uint_eq(sb.data_nr_blocks, d.nr_data_blocks);
	ck_assert_uint_eq(sb.data_nr_allocated, distinct_data_blocks(&d));
}
END_TEST

START_TEST(reads_devices_and_mappings_as_thin_dump_prints_them)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	CLEANUP_DUMP struct dump d = {0};

	dump(small_path, 0, &d);
	ck_assert_uint_eq(d.n, 4);
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	assert_same_as_dump(&m, &sb, &d);
}
END_TEST

START_TEST(walks_trees_with_internal_nodes_at_both_levels)
{
	CLEANUP_IMAGE struct image img = load(big_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	CLEANUP_DUMP struct dump d = {0};

	/* The premise: internal nodes in the device details tree, in the top level of the
	 * mapping tree and in device 1's mapping tree. */
	ck_assert_uint_eq(node_flags(&img, get64(block(&img, 0) + SB_DETAILS_ROOT)), NODE_INTERNAL);
	ck_assert_uint_eq(node_flags(&img, get64(block(&img, 0) + SB_MAPPING_ROOT)), NODE_INTERNAL);
	ck_assert_uint_eq(node_flags(&img, device_root(&img, 1)), NODE_INTERNAL);
	dump(big_path, 0, &d);
	ck_assert_uint_eq(d.n, BIG_DEVICES);
	ck_assert_uint_eq(dump_device(&d, 1)->n, BIG_MAPPINGS);
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	assert_same_as_dump(&m, &sb, &d);
	ck_assert_uint_eq(sb.data_nr_allocated, distinct_data_blocks(&d));
}
END_TEST

START_TEST(joins_runs_across_leaves_and_splits_them_where_time_or_data_jumps)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	struct runs rs = {0};
	const struct thin_meta_run want[] = {
	    {.virt = 0, .data = 1000, .len = 1000, .time = 0},
	    {.virt = 1000, .data = 2000, .len = 50, .time = 1},
	    {.virt = 1050, .data = 3000, .len = 10, .time = 1},
	    {.virt = 4000000000, .data = NR_DATA_BLOCKS - 1, .len = 1, .time = MAX_TIME},
	};

	/* The first run is longer than a leaf holds. */
	ck_assert_uint_gt(node_entries(&img, first_leaf(&img, device_root(&img, 1))), 0);
	ck_assert_uint_lt(node_entries(&img, first_leaf(&img, device_root(&img, 1))), 1000);
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, collect_run, &rs), 0);
	ck_assert_uint_eq(rs.n, 4);
	for (size_t i = 0; i < 4; i++) {
		ck_assert_uint_eq(rs.r[i].virt, want[i].virt);
		ck_assert_uint_eq(rs.r[i].data, want[i].data);
		ck_assert_uint_eq(rs.r[i].len, want[i].len);
		ck_assert_uint_eq(rs.r[i].time, want[i].time);
	}
	free(rs.r);
}
END_TEST

START_TEST(walks_a_device_without_mappings_without_calling_back)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	struct runs rs = {0};

	ck_assert_uint_eq(node_entries(&img, device_root(&img, 3)), 0);
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 3, collect_run, &rs), 0);
	ck_assert_uint_eq(rs.n, 0);
}
END_TEST

START_TEST(reads_the_same_through_a_file_descriptor)
{
	CLEANUP_CLOSE int fd = open(small_path, O_RDONLY | O_CLOEXEC);
	struct thin_meta m;
	struct thin_meta_superblock sb;
	CLEANUP_DUMP struct dump d = {0};
	struct stat st;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	dump(small_path, 0, &d);
	ck_assert_int_eq(thin_meta_init_fd(&m, fd, (uint64_t)st.st_size / BS), 0);
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	assert_same_as_dump(&m, &sb, &d);
	thin_meta_done(&m);
}
END_TEST

/* A metadata snapshot made as the kernel's reserve_metadata_snap makes it: the superblock
 * copied to a free block, its space map roots wiped, and its place recorded in the live
 * superblock's held_root. */
START_TEST(reads_a_held_metadata_snapshot_as_thin_dump_does)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock top, held;
	uint64_t h = img.nr_blocks - 1;
	char path[128];
	CLEANUP_DUMP struct dump d = {0};

	for (size_t i = 0; i < BS; i++)
		ck_assert_uint_eq(block(&img, h)[i], 0);
	memcpy(block(&img, h), block(&img, 0), BS);
	put64(block(&img, h) + SB_BLOCKNR, h);
	memset(block(&img, h) + SB_DATA_SM_ROOT, 0, 256);
	reseal(&img, h, THIN_META_SUPERBLOCK_CSUM_XOR);
	put64(block(&img, 0) + SB_HELD_ROOT, h);
	reseal_superblock(&img);
	snprintf(path, sizeof path, "%s/held", dir);
	save(&img, path);
	dump(path, h, &d);

	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &top), 0);
	ck_assert_uint_eq(top.held_root, h);
	ck_assert_int_eq(thin_meta_superblock(&m, top.held_root, &held), 0);
	ck_assert_uint_eq(held.blocknr, h);
	ck_assert_uint_eq(held.held_root, 0);
	ck_assert_uint_eq(held.data_nr_blocks, 0);
	assert_same_as_dump(&m, &held, &d);
}
END_TEST

/* ---- Corrupt metadata ---- */

START_TEST(rejects_a_superblock_with_a_flipped_byte)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;

	block(&img, 0)[100] ^= 0x10;
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), -EBADMSG);
	block(&img, 0)[100] ^= 0x10;
	block(&img, 0)[BS - 1] ^= 0x01; /* past the fields, still under the checksum */
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), -EBADMSG);
}
END_TEST

START_TEST(rejects_a_superblock_with_a_bad_magic)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;

	put64(block(&img, 0) + SB_MAGIC, 27022011);
	reseal_superblock(&img);
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), -EBADMSG);
}
END_TEST

START_TEST(rejects_a_superblock_that_names_another_block)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;

	put64(block(&img, 0) + SB_BLOCKNR, 1);
	reseal_superblock(&img);
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), -EBADMSG);
}
END_TEST

START_TEST(refuses_an_unknown_version_or_incompatible_feature)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;

	put32(block(&img, 0) + SB_VERSION, 3);
	reseal_superblock(&img);
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), -EOPNOTSUPP);
	put32(block(&img, 0) + SB_VERSION, 2);
	put32(block(&img, 0) + SB_INCOMPAT_FLAGS, 1);
	reseal_superblock(&img);
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), -EOPNOTSUPP);
}
END_TEST

START_TEST(rejects_roots_past_the_device)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;

	put64(block(&img, 0) + SB_MAPPING_ROOT, img.nr_blocks);
	reseal_superblock(&img);
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), -EBADMSG);
}
END_TEST

START_TEST(rejects_a_node_that_names_another_block)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	uint64_t details = get64(block(&img, 0) + SB_DETAILS_ROOT);

	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	put64(block(&img, details) + NODE_BLOCKNR, details + 1);
	reseal_node(&img, details);
	ck_assert_int_eq(thin_meta_devices(&m, &sb, ignore_device, NULL), -EBADMSG);
}
END_TEST

START_TEST(rejects_a_node_with_a_bad_checksum)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	uint64_t leaf = first_leaf(&img, device_root(&img, 1));

	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	block(&img, leaf)[BS - 1] ^= 0x80;
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, ignore_run, NULL), -EBADMSG);
}
END_TEST

START_TEST(rejects_a_node_with_more_entries_than_room)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	uint64_t leaf = last_leaf(&img, device_root(&img, 1));
	unsigned char *n = block(&img, leaf);
	uint32_t nr = get32(n + NODE_NR_ENTRIES);

	/* Room for the NR entries it has, and one entry more than that, which would be
	 * sound if the room were there: its key (the first value's slot) above the others,
	 * its value and every other one a block of the data device. */
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	put32(n + NODE_MAX_ENTRIES, nr);
	put32(n + NODE_NR_ENTRIES, nr + 1);
	ck_assert_uint_lt(get64(node_key(n, nr - 1)), UINT64_C(5000) << 24);
	for (uint32_t i = 0; i <= nr; i++)
		put64(node_value(n, i), (UINT64_C(5000) + i) << 24);
	reseal_node(&img, leaf);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, ignore_run, NULL), -EBADMSG);
}
END_TEST

START_TEST(rejects_a_node_whose_entries_overrun_the_block)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	uint64_t leaf = first_leaf(&img, device_root(&img, 1));
	unsigned char *n = block(&img, leaf);

	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	/* 255 keys and values of 8 bytes: 32 + 255 * 16 = 4112 bytes. */
	ck_assert_uint_eq(get32(n + NODE_VALUE_SIZE), 8);
	put32(n + NODE_MAX_ENTRIES, (BS - NODE_HEADER) / 16 + 1);
	reseal_node(&img, leaf);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, ignore_run, NULL), -EBADMSG);
	/* And a value size that puts even one entry past the end. */
	put32(n + NODE_MAX_ENTRIES, 1);
	put32(n + NODE_NR_ENTRIES, 1);
	put32(n + NODE_VALUE_SIZE, BS);
	reseal_node(&img, leaf);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, ignore_run, NULL), -EBADMSG);
}
END_TEST

START_TEST(rejects_a_node_neither_internal_nor_leaf)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	uint64_t root = device_root(&img, 1);

	/* An internal node in all but its flags. */
	ck_assert_uint_eq(node_flags(&img, root), NODE_INTERNAL);
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	put32(block(&img, root) + NODE_FLAGS, 0);
	reseal_node(&img, root);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, ignore_run, NULL), -EBADMSG);
	put32(block(&img, root) + NODE_FLAGS, NODE_INTERNAL | NODE_LEAF);
	reseal_node(&img, root);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, ignore_run, NULL), -EBADMSG);
}
END_TEST

START_TEST(rejects_values_of_another_size_than_the_trees)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	uint64_t details = get64(block(&img, 0) + SB_DETAILS_ROOT);

	/* Device details are 24 bytes; a leaf of 8-byte values is of another tree. */
	ck_assert_uint_eq(node_flags(&img, details), NODE_LEAF);
	ck_assert_uint_eq(get32(block(&img, details) + NODE_VALUE_SIZE), 24);
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	put32(block(&img, details) + NODE_VALUE_SIZE, 8);
	reseal_node(&img, details);
	ck_assert_int_eq(thin_meta_devices(&m, &sb, ignore_device, NULL), -EBADMSG);
}
END_TEST

START_TEST(rejects_an_empty_node_below_the_root)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	uint64_t leaf = last_leaf(&img, device_root(&img, 1));

	/* Only a root may be empty (a device without mappings); dm-thin merges or removes
	 * a node below it before it empties. */
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	put32(block(&img, leaf) + NODE_NR_ENTRIES, 0);
	reseal_node(&img, leaf);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, ignore_run, NULL), -EBADMSG);
}
END_TEST

START_TEST(rejects_a_child_pointer_past_the_device)
{
	CLEANUP_IMAGE struct image img = load(big_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	uint64_t root = device_root(&img, 1);

	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	put64(node_value(block(&img, root), node_entries(&img, root) - 1), img.nr_blocks);
	reseal_node(&img, root);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, ignore_run, NULL), -EBADMSG);
}
END_TEST

START_TEST(rejects_an_internal_node_that_points_to_itself)
{
	CLEANUP_IMAGE struct image img = load(big_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	uint64_t root = device_root(&img, 1);
	unsigned char *n = block(&img, root);

	/* One entry, key 0, so that no key range gives the loop away. */
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	put32(n + NODE_NR_ENTRIES, 1);
	put64(node_key(n, 0), 0);
	put64(node_value(n, 0), root);
	reseal_node(&img, root);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, ignore_run, NULL), -EBADMSG);
}
END_TEST

START_TEST(rejects_an_internal_node_that_points_to_an_ancestor)
{
	CLEANUP_IMAGE struct image img = load(big_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	uint64_t root = device_root(&img, 1);
	uint64_t child = first_leaf(&img, root);
	unsigned char *r = block(&img, root), *c = block(&img, child);

	/* The root's one child made an internal node whose one child is the root. */
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	put32(r + NODE_NR_ENTRIES, 1);
	put64(node_key(r, 0), 0);
	put64(node_value(r, 0), child);
	put32(c + NODE_FLAGS, NODE_INTERNAL);
	put32(c + NODE_NR_ENTRIES, 1);
	put64(node_key(c, 0), 0);
	put64(node_value(c, 0), root);
	reseal_node(&img, root);
	reseal_node(&img, child);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, ignore_run, NULL), -EBADMSG);
}
END_TEST

START_TEST(rejects_keys_out_of_order)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	uint64_t leaf = first_leaf(&img, device_root(&img, 1));
	unsigned char *n = block(&img, leaf);
	uint64_t k0 = get64(node_key(n, 0)), k1 = get64(node_key(n, 1));

	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	put64(node_key(n, 0), k1);
	put64(node_key(n, 1), k0);
	reseal_node(&img, leaf);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, ignore_run, NULL), -EBADMSG);
	/* Equal keys are out of order too. */
	put64(node_key(n, 0), k1);
	put64(node_key(n, 1), k1);
	reseal_node(&img, leaf);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, ignore_run, NULL), -EBADMSG);
}
END_TEST

START_TEST(rejects_a_key_outside_its_parents_range)
{
	CLEANUP_IMAGE struct image img = load(big_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	uint64_t root = device_root(&img, 1);
	uint64_t second = get64(node_value(block(&img, root), 1));
	unsigned char *n = block(&img, second);

	/* The second leaf's first key below the root's key for it: it belongs to the first. */
	ck_assert_uint_eq(node_flags(&img, second), NODE_LEAF);
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	put64(node_key(n, 0), get64(node_key(block(&img, root), 1)) - 1);
	reseal_node(&img, second);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, ignore_run, NULL), -EBADMSG);
}
END_TEST

START_TEST(rejects_a_tree_cut_short_by_the_device)
{
	CLEANUP_IMAGE struct image img = load(big_path);
	struct thin_meta m = meta_of(&img);

	/* A whole walk reads blocks up to HIGHEST; a device that ends there lacks it. */
	ck_assert_int_eq(walk_all(&m), 0);
	ck_assert_uint_gt(img.highest_read, 0);
	m = meta_of(&img);
	m.nr_blocks = img.highest_read;
	ck_assert_int_eq(walk_all(&m), -EBADMSG);
}
END_TEST

START_TEST(rejects_a_data_block_past_the_data_device)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	uint64_t leaf = first_leaf(&img, device_root(&img, 2));

	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	put64(node_value(block(&img, leaf), 0), NR_DATA_BLOCKS << 24);
	reseal_node(&img, leaf);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 2, ignore_run, NULL), -EBADMSG);
	/* The device's last block is still one of it. */
	put64(node_value(block(&img, leaf), 0), (NR_DATA_BLOCKS - 1) << 24);
	reseal_node(&img, leaf);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 2, ignore_run, NULL), 0);
}
END_TEST

START_TEST(answers_enoent_for_a_device_not_in_the_tree)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	const uint32_t missing[] = {0, 4, 1000, MAX_ID - 1, MAX_ID + 1, UINT32_MAX};

	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	for (size_t i = 0; i < sizeof missing / sizeof *missing; i++)
		ck_assert_int_eq(thin_meta_mappings(&m, &sb, missing[i], ignore_run, NULL),
		                 -ENOENT);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, MAX_ID, ignore_run, NULL), 0);
}
END_TEST

START_TEST(answers_enoent_among_many_devices)
{
	CLEANUP_IMAGE struct image img = load(big_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;

	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 0, ignore_run, NULL), -ENOENT);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, BIG_DEVICES + 1, ignore_run, NULL), -ENOENT);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, BIG_DEVICES, ignore_run, NULL), 0);
}
END_TEST

START_TEST(passes_on_a_read_error)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;

	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	img.fail_block = first_leaf(&img, device_root(&img, 1));
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, ignore_run, NULL), -EIO);
	img.fail_block = sb.device_details_root;
	ck_assert_int_eq(thin_meta_devices(&m, &sb, ignore_device, NULL), -EIO);
	img.fail_block = sb.data_mapping_root;
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, ignore_run, NULL), -EIO);
	img.fail_block = THIN_META_SUPERBLOCK;
	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), -EIO);
}
END_TEST

START_TEST(stops_when_the_walk_needs_more_reads_than_its_budget)
{
	CLEANUP_IMAGE struct image img = load(big_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	uint64_t needed;

	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	img.reads = 0;
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, ignore_run, NULL), 0);
	needed = img.reads;
	ck_assert_uint_gt(needed, 50); /* device 1's leaves, and the path to its root */
	m.budget = needed;
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, ignore_run, NULL), 0);
	ck_assert_uint_eq(m.left, 0);
	/* Each call has the whole budget again. */
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, ignore_run, NULL), 0);
	m.budget = needed - 1;
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, ignore_run, NULL), -EBADMSG);
}
END_TEST

START_TEST(stops_at_the_callbacks_first_non_zero_return)
{
	CLEANUP_IMAGE struct image img = load(small_path);
	struct thin_meta m = meta_of(&img);
	struct thin_meta_superblock sb;
	struct runs rs = {.stop_at = 2};
	struct devices ds = {.stop_at = 1};

	ck_assert_int_eq(thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &sb), 0);
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, collect_run, &rs), 7);
	ck_assert_uint_eq(rs.n, 2);
	ck_assert_int_eq(thin_meta_devices(&m, &sb, collect_device, &ds), 5);
	ck_assert_uint_eq(ds.n, 1);
	/* The last run, handed on after the walk, stops it just the same. */
	free(rs.r);
	rs = (struct runs){.stop_at = 4};
	ck_assert_int_eq(thin_meta_mappings(&m, &sb, 1, collect_run, &rs), 7);
	ck_assert_uint_eq(rs.n, 4);
	free(rs.r);
}
END_TEST

START_TEST(checksums_with_crc32c_seeded_and_not_inverted)
{
	/* CRC32C's check value for "123456789" is 0xe3069283 with its final inversion. */
	ck_assert_uint_eq(thin_meta_checksum("123456789", 9, 0), ~UINT32_C(0xe3069283));
	ck_assert_uint_eq(thin_meta_checksum("123456789", 9, THIN_META_BTREE_CSUM_XOR),
	                  ~UINT32_C(0xe3069283) ^ THIN_META_BTREE_CSUM_XOR);
	ck_assert_uint_eq(thin_meta_checksum("", 0, 0), UINT32_MAX);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("thin-metadata");
	TCase *tc = tcase_create("thin-metadata");
	SRunner *sr;
	int failed;

	tcase_add_unchecked_fixture(tc, make_metadata, remove_metadata);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, reads_the_superblock_thin_dump_reads);
	tcase_add_test(tc, reads_devices_and_mappings_as_thin_dump_prints_them);
	tcase_add_test(tc, walks_trees_with_internal_nodes_at_both_levels);
	tcase_add_test(tc, joins_runs_across_leaves_and_splits_them_where_time_or_data_jumps);
	tcase_add_test(tc, walks_a_device_without_mappings_without_calling_back);
	tcase_add_test(tc, reads_the_same_through_a_file_descriptor);
	tcase_add_test(tc, reads_a_held_metadata_snapshot_as_thin_dump_does);
	tcase_add_test(tc, rejects_a_superblock_with_a_flipped_byte);
	tcase_add_test(tc, rejects_a_superblock_with_a_bad_magic);
	tcase_add_test(tc, rejects_a_superblock_that_names_another_block);
	tcase_add_test(tc, refuses_an_unknown_version_or_incompatible_feature);
	tcase_add_test(tc, rejects_roots_past_the_device);
	tcase_add_test(tc, rejects_a_node_that_names_another_block);
	tcase_add_test(tc, rejects_a_node_with_a_bad_checksum);
	tcase_add_test(tc, rejects_a_node_with_more_entries_than_room);
	tcase_add_test(tc, rejects_a_node_whose_entries_overrun_the_block);
	tcase_add_test(tc, rejects_a_node_neither_internal_nor_leaf);
	tcase_add_test(tc, rejects_values_of_another_size_than_the_trees);
	tcase_add_test(tc, rejects_an_empty_node_below_the_root);
	tcase_add_test(tc, rejects_a_child_pointer_past_the_device);
	tcase_add_test(tc, rejects_an_internal_node_that_points_to_itself);
	tcase_add_test(tc, rejects_an_internal_node_that_points_to_an_ancestor);
	tcase_add_test(tc, rejects_keys_out_of_order);
	tcase_add_test(tc, rejects_a_key_outside_its_parents_range);
	tcase_add_test(tc, rejects_a_tree_cut_short_by_the_device);
	tcase_add_test(tc, rejects_a_data_block_past_the_data_device);
	tcase_add_test(tc, answers_enoent_for_a_device_not_in_the_tree);
	tcase_add_test(tc, answers_enoent_among_many_devices);
	tcase_add_test(tc, passes_on_a_read_error);
	tcase_add_test(tc, stops_when_the_walk_needs_more_reads_than_its_budget);
	tcase_add_test(tc, stops_at_the_callbacks_first_non_zero_return);
	tcase_add_test(tc, checksums_with_crc32c_seeded_and_not_inverted);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
