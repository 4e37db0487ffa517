/* A stand-in for daemon/pool.c (daemon/pool.h's functions), for what tests the daemon's
 * logic above the pool on a host without dm-thin: the change protocol's unit tests and
 * the host's API benchmark (bench/bench-thinproxyd). It keeps which thin ids exist and the
 * transaction id, nothing else: no thin device is ever active, so nothing can be opened
 * through it. Like a real pool's metadata, its state is on disk (STATE_DIR/fake-pool, from
 * pool_config) and outlives a process killed at any instant; each message either changes
 * it as a whole or not at all.
 *
 * The knobs below make it fail the way dm-thin does, for the next message only. */
#ifndef TP_TESTS_FAKE_POOL_H
#define TP_TESTS_FAKE_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "../../daemon/pool.h"

enum fake_message {
	FAKE_CREATE_THIN,
	FAKE_CREATE_SNAP,
	FAKE_DELETE,
	FAKE_SET_TRANSACTION_ID,
	FAKE_MESSAGES
};

/* The next MESSAGE fails with ERR (a negative errno) and changes nothing. */
void fake_pool_fail_next(enum fake_message message, int err);
/* The next message that would succeed loses its commit, as when the metadata device
 * fails: it answers 0, changes nothing, and the pool turns read-only with needs_check. */
void fake_pool_lose_next_commit(void);
/* Read-only mode: every message fails with -EINVAL, the status says so. */
void fake_pool_set_read_only(struct pool *pool, bool read_only);

bool fake_pool_has(struct pool *pool, uint32_t id);
/* How many times a thin device was asked to be activated (none ever is: see above). */
unsigned fake_pool_activations(void);
/* Messages the pool committed (what a real pool writes and flushes its metadata for). */
uint64_t fake_pool_commits(struct pool *pool);
/* Make thin ID exist behind the daemon's back (a device an older version left). */
void fake_pool_add(struct pool *pool, uint32_t id);
/* Walkable: pool_walk_metadata calls its function on metadata with no devices and 1024
 * data blocks, whose every block read fails with -EIO (so a walk of any thin device
 * fails); not walkable (the default): -EOPNOTSUPP. */
void fake_pool_set_walkable(struct pool *pool, bool walkable);
/* The walks pool_walk_metadata made. */
uint64_t fake_pool_walks(struct pool *pool);
/* The data blocks the status says are used. */
void fake_pool_set_data_used(struct pool *pool, uint64_t blocks);

#endif
