/* Byte ranges from a thin device's mappings (thin-metadata.h): what a volume has written,
 * and how two volumes differ. Pure functions over runs that a walk collected, so that the
 * walk (under a held metadata snapshot) stays short and this is tested without a pool. */
#ifndef TP_DAEMON_THIN_MAP_H
#define TP_DAEMON_THIN_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "ops.h"

struct thin_meta;
struct thin_meta_superblock;
struct thin_meta_run;

/* A device's runs, in order of virtual block. */
struct run_list {
	struct thin_meta_run *runs;
	size_t n, cap;
};

void run_list_free(struct run_list *l);

/* Collect thin device ID's runs from the walker M over SB into L (appended). 0, or the
 * walk's error (-ENOENT: no such device). */
int run_list_collect(struct thin_meta *m, const struct thin_meta_superblock *sb, uint32_t id,
                     struct run_list *l);

/* The byte ranges L maps, for a device of SIZE bytes in blocks of BLOCK_BYTES: whole blocks
 * (the last cut at SIZE), touching ones joined, nothing at or past SIZE. *RET_RANGES is
 * malloc'ed (NULL when there are none). -ENOMEM. */
int run_list_ranges(const struct run_list *l, uint64_t block_bytes, uint64_t size,
                    struct export_range **ret_ranges, size_t *ret_n);

/* Where NEW differs from OLD (as thin_delta tells them apart: a block is the same only
 * if both map it to the same data block), within SIZE bytes: each range says whether NEW
 * maps it (data) or not (it reads as zeroes in NEW, OLD has data there). Touching ranges
 * of the same kind are joined. *RET_CHANGES is malloc'ed. -ENOMEM. */
int run_list_diff(const struct run_list *new_runs, const struct run_list *old_runs,
                  uint64_t block_bytes, uint64_t size, struct volume_change **ret_changes,
                  size_t *ret_n);

/* Blocks NEW maps to a data block OLD does not map at the same place: what NEW holds of its
 * own rather than shares with OLD. */
uint64_t run_list_exclusive_blocks(const struct run_list *new_runs,
                                   const struct run_list *old_runs);

#endif
