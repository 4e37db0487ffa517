/* dm-thin's on-disk metadata, read-only: the superblock, the device details tree and the
 * two-level mapping tree (thin id, then virtual block to data block and time), as
 * docs/dm-thin-metadata.md describes them.
 *
 * The walker trusts nothing it reads: a bug or a crash may have left the metadata
 * corrupt, and a pool's metadata device is not ours alone to vouch for. Every block's
 * checksum and own block number are verified, every node's counts bounded by the block,
 * every pointer bounded by the device, every key checked against its parent's range, the
 * depth capped, and the number of blocks one walk may read budgeted, so that a loop or a
 * crafted forest ends in -EBADMSG, never in a hang or a crash.
 *
 * It does no I/O of its own: the caller gives it a function that reads one 4 KiB block
 * (thin_meta_init_fd does that with pread on an fd, which pool.c opens O_DIRECT). It
 * reads a consistent tree only from a copy the kernel does not change under it: the held
 * metadata snapshot (reserve_metadata_snap) of a live pool, or the device of a pool
 * that is not active. */
#ifndef TP_DAEMON_THIN_METADATA_H
#define TP_DAEMON_THIN_METADATA_H

#include <stdbool.h>
#include <stdint.h>

#define THIN_META_BLOCK_SIZE 4096
/* The superblock's place on the metadata device. */
#define THIN_META_SUPERBLOCK 0
/* The most data blocks a mapping can name: dm-thin packs data block and time into 64
 * bits, 40 for the block and 24 for the time. */
#define THIN_META_DATA_BLOCK_MAX ((UINT64_C(1) << 40) - 1)

struct thin_meta {
	/* Read metadata block BLOCKNR (< nr_blocks) into BUF (THIN_META_BLOCK_SIZE bytes,
	 * aligned to 4096 for O_DIRECT): 0 or -errno. */
	int (*read)(void *opaque, uint64_t blocknr, void *buf);
	void *opaque;
	uint64_t nr_blocks; /* the metadata device's size in 4 KiB blocks */
	/* Blocks each call below may read (0: 4 times nr_blocks, what thin_meta_init_fd
	 * sets). A sound tree reads each of its blocks once, so a call that runs out fails
	 * with -EBADMSG: a loop, or a forest crafted to take forever. Each call has the
	 * whole budget, however many came before on the same M: a pool's snapshots share
	 * their origins' trees, and a walk of each reads the shared blocks again. */
	uint64_t budget;
	uint64_t left; /* what the call under way has left of it */
	void *buf;     /* one aligned block, owned by thin_meta_init_fd / thin_meta_done */
	int fd;
};

struct thin_meta_superblock {
	uint64_t blocknr; /* where it was read from: 0, or the held root */
	uint32_t version;
	uint32_t time;
	uint64_t transaction_id;
	uint64_t held_root; /* 0 if no metadata snapshot is held */
	uint64_t data_mapping_root;
	uint64_t device_details_root;
	uint32_t data_block_sectors;
	uint64_t metadata_nr_blocks;
	/* From the data space map's root. 0 in a held copy, whose space map roots the kernel
	 * wipes: copy it from block 0's superblock to bound the held copy's mappings by it. */
	uint64_t data_nr_blocks;
	uint64_t data_nr_allocated;
};

/* One thin device's entry in the device details tree. */
struct thin_meta_device {
	uint32_t id;
	uint64_t mapped_blocks;
	uint64_t transaction_id;
	uint32_t creation_time;
	uint32_t snapshotted_time;
};

/* A run of mappings: LEN virtual blocks from VIRT map to LEN consecutive data blocks from
 * DATA, all with the same TIME. Runs come in order of VIRT and are as long as they can
 * be, as thin_dump prints them. */
struct thin_meta_run {
	uint64_t virt;
	uint64_t data;
	uint64_t len;
	uint32_t time;
};

/* Read blocks through FD (a metadata device or a copy of one, any open mode; O_DIRECT
 * works) of NR_BLOCKS 4 KiB blocks. M is ready for the calls below; thin_meta_done frees
 * it. -ENOMEM. */
int thin_meta_init_fd(struct thin_meta *m, int fd, uint64_t nr_blocks);
void thin_meta_done(struct thin_meta *m);

/* Read and check the superblock at BLOCKNR: THIN_META_SUPERBLOCK, or a superblock's
 * held_root for the metadata snapshot. -EBADMSG if it is not a sound dm-thin superblock
 * (magic, checksum, its own block number, sizes), -EOPNOTSUPP for a version or an
 * incompatible feature we do not read. */
int thin_meta_superblock(struct thin_meta *m, uint64_t blocknr,
                         struct thin_meta_superblock *ret_sb);

/* Call FN for every thin device in SB's device details tree, in order of id. A non-zero
 * return from FN stops the walk and is returned. 0, -EBADMSG for a corrupt tree, -errno
 * from the read function. */
int thin_meta_devices(struct thin_meta *m, const struct thin_meta_superblock *sb,
                      int (*fn)(const struct thin_meta_device *dev, void *opaque), void *opaque);

/* Call FN for every run of thin device ID's mappings in SB's mapping tree. A non-zero
 * return from FN stops the walk and is returned. 0, -ENOENT if the tree has no device
 * ID, -EBADMSG for a corrupt tree (a data block past SB's data_nr_blocks included), -errno
 * from the read function. */
int thin_meta_mappings(struct thin_meta *m, const struct thin_meta_superblock *sb, uint32_t id,
                       int (*fn)(const struct thin_meta_run *run, void *opaque), void *opaque);

/* dm's block checksum: CRC32C (Castagnoli) seeded with ~0 over DATA, no final inversion,
 * XORed with the block kind's constant. */
uint32_t thin_meta_checksum(const void *data, uint64_t len, uint32_t xor_value);
#define THIN_META_SUPERBLOCK_CSUM_XOR UINT32_C(160774)
#define THIN_META_BTREE_CSUM_XOR      UINT32_C(121107)

#endif
