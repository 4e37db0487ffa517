/* The fake pool (see fake-pool.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../daemon/thin-metadata.h"
#include "fake-pool.h"

#define BLOCK_SECTORS 128
#define IDS_BYTES     (POOL_THIN_ID_MAX / 8 + 1)

/* What a real pool keeps in its metadata: the file's contents, mapped shared. */
struct fake_state {
	uint64_t tid;
	uint64_t commits;
	bool read_only, needs_check;
	unsigned char ids[IDS_BYTES]; /* one bit per thin id */
	bool walkable;                /* see fake_pool_set_walkable */
	uint64_t walks, data_used;
};

struct pool {
	char name[128];
	struct fake_state *s;
};

/* Knobs for the next message: process memory, so a test sets them before it forks. */
static int fail_next[FAKE_MESSAGES];
static bool lose_next_commit;

void fake_pool_fail_next(enum fake_message message, int err)
{
	fail_next[message] = err;
}

void fake_pool_lose_next_commit(void)
{
	lose_next_commit = true;
}

void fake_pool_set_read_only(struct pool *pool, bool read_only)
{
	pool->s->read_only = read_only;
	if (!read_only)
		pool->s->needs_check = false;
}

bool fake_pool_has(struct pool *pool, uint32_t id)
{
	return id <= POOL_THIN_ID_MAX && (pool->s->ids[id / 8] >> (id % 8) & 1);
}

static void set_id(struct pool *p, uint32_t id, bool on)
{
	if (on)
		p->s->ids[id / 8] |= (unsigned char)(1u << (id % 8));
	else
		p->s->ids[id / 8] &= (unsigned char)~(1u << (id % 8));
}

void fake_pool_add(struct pool *pool, uint32_t id)
{
	set_id(pool, id, true);
}

uint64_t fake_pool_commits(struct pool *pool)
{
	return pool->s->commits;
}

/* The checks every message goes through before it changes anything: 0 to go on. */
static int message_begins(struct pool *pool, enum fake_message m)
{
	int r = fail_next[m];

	if (pool->s->read_only)
		return -EINVAL;
	fail_next[m] = 0;
	return r;
}

/* A message that changed the metadata commits it, or loses it when told to. Returns
 * whether it stands. */
static bool message_commits(struct pool *pool)
{
	if (lose_next_commit) {
		lose_next_commit = false;
		pool->s->read_only = pool->s->needs_check = true;
		return false;
	}
	pool->s->commits++;
	return true;
}

int pool_open(const struct pool_config *cfg, struct pool **ret_pool)
{
	char path[4096];
	struct pool *p;
	int fd;

	if (cfg->state_dir == NULL)
		return -EINVAL;
	snprintf(path, sizeof path, "%s/fake-pool", cfg->state_dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, sizeof(struct fake_state)) < 0) {
		close(fd);
		return -errno;
	}
	p = calloc(1, sizeof *p);
	if (p == NULL) {
		close(fd);
		return -ENOMEM;
	}
	p->s = mmap(NULL, sizeof *p->s, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p->s == MAP_FAILED) {
		free(p);
		return -ENOMEM;
	}
	snprintf(p->name, sizeof p->name, "%s", cfg->dm_name ? cfg->dm_name : "thinproxy-pool");
	*ret_pool = p;
	return 0;
}

void pool_close(struct pool *pool)
{
	if (pool == NULL)
		return;
	munmap(pool->s, sizeof *pool->s);
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

/* A roomy pool: 1 TiB of data, 1 GiB of metadata, nothing used. */
int pool_get_status(struct pool *pool, struct pool_status *ret_status)
{
	memset(ret_status, 0, sizeof *ret_status);
	ret_status->transaction_id = pool->s->tid;
	ret_status->data_used = pool->s->data_used;
	ret_status->data_total = (UINT64_C(1) << 40) / (BLOCK_SECTORS * 512);
	ret_status->meta_total = (UINT64_C(1) << 30) / 4096;
	ret_status->block_sectors = BLOCK_SECTORS;
	ret_status->error_if_no_space = true;
	ret_status->read_only = pool->s->read_only;
	ret_status->needs_check = pool->s->needs_check;
	return 0;
}

int pool_set_transaction_id(struct pool *pool, uint64_t old_id, uint64_t new_id)
{
	int r = message_begins(pool, FAKE_SET_TRANSACTION_ID);

	if (r < 0)
		return r;
	if (pool->s->tid != old_id)
		return -ESTALE;
	if (message_commits(pool))
		pool->s->tid = new_id;
	return 0;
}

int pool_create_thin(struct pool *pool, uint32_t id)
{
	int r = message_begins(pool, FAKE_CREATE_THIN);

	if (r < 0)
		return r;
	if (id > POOL_THIN_ID_MAX)
		return -EINVAL;
	if (fake_pool_has(pool, id))
		return -EEXIST;
	if (message_commits(pool))
		set_id(pool, id, true);
	return 0;
}

int pool_create_snap(struct pool *pool, uint32_t id, uint32_t origin_id)
{
	int r = message_begins(pool, FAKE_CREATE_SNAP);

	if (r < 0)
		return r;
	if (id > POOL_THIN_ID_MAX || origin_id > POOL_THIN_ID_MAX)
		return -EINVAL;
	if (fake_pool_has(pool, id))
		return -EEXIST;
	if (!fake_pool_has(pool, origin_id))
		return -ENOENT;
	if (message_commits(pool))
		set_id(pool, id, true);
	return 0;
}

int pool_delete_thin(struct pool *pool, uint32_t id)
{
	int r = message_begins(pool, FAKE_DELETE);

	if (r < 0)
		return r;
	if (!fake_pool_has(pool, id))
		return -ENOENT;
	if (message_commits(pool))
		set_id(pool, id, false);
	return 0;
}

int pool_thin_exists(struct pool *pool, uint32_t id)
{
	if (pool->s->read_only)
		return -EINVAL;
	return fake_pool_has(pool, id) ? 1 : 0;
}

int pool_resume_left_suspended(struct pool *pool)
{
	(void)pool;
	return 0;
}

static unsigned activations;

unsigned fake_pool_activations(void)
{
	return activations;
}

int pool_activate_thin(struct pool *pool, uint32_t id, uint64_t size, bool read_only)
{
	(void)size;
	(void)read_only;
	activations++;
	return fake_pool_has(pool, id) ? -EOPNOTSUPP : -ENOENT;
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
	if (!fake_pool_has(pool, id))
		return -ENOENT;
	memset(ret_status, 0, sizeof *ret_status);
	return 0;
}

/* The fake pool has no devices to open: it checks FLAGS as the real one does (O_DIRECT
 * is allowed) and then answers as for an inactive thin device. It never stands in with a
 * file, which would change what O_DIRECT means: the unit tests' directory may be on
 * tmpfs, which refuses O_DIRECT with EINVAL, where a block device never does. */
int pool_open_thin(struct pool *pool, uint32_t id, int flags)
{
	const int allowed = O_ACCMODE | O_DIRECT | O_EXCL | O_NONBLOCK | O_CLOEXEC;

	(void)pool;
	if (id > POOL_THIN_ID_MAX || (flags & ~allowed) != 0 ||
	    ((flags & O_ACCMODE) != O_RDONLY && (flags & O_ACCMODE) != O_RDWR))
		return -EINVAL;
	return -ENXIO;
}

int pool_for_each_active(struct pool *pool, int (*fn)(uint32_t id, void *opaque), void *opaque)
{
	(void)pool;
	(void)fn;
	(void)opaque;
	return 0;
}

/* A roomy pool has no need to grow. */
int pool_grow_metadata(struct pool *pool, uint64_t *ret_bytes)
{
	(void)pool;
	(void)ret_bytes;
	return -EOPNOTSUPP;
}

uint64_t pool_metadata_limit(const struct pool *pool)
{
	(void)pool;
	return 0;
}

int pool_remove(struct pool *pool)
{
	(void)pool;
	return 0;
}

/* The fake pool keeps no dm-thin metadata to walk: no map, no diff, no exact usage. */
/* A metadata block the walkable pool cannot read: it has none. */
static int no_block(void *opaque, uint64_t blocknr, void *buf)
{
	(void)opaque;
	(void)blocknr;
	(void)buf;
	return -EIO;
}

int pool_walk_metadata(struct pool *pool,
                       int (*fn)(struct thin_meta *m, const struct thin_meta_superblock *sb,
                                 void *opaque),
                       void *opaque)
{
	struct thin_meta m = {.read = no_block, .nr_blocks = 1};
	struct thin_meta_superblock sb = {.data_nr_blocks = 1024};

	if (!pool->s->walkable)
		return -EOPNOTSUPP;
	pool->s->walks++;
	return fn(&m, &sb, opaque);
}

void fake_pool_set_walkable(struct pool *pool, bool walkable)
{
	pool->s->walkable = walkable;
}

uint64_t fake_pool_walks(struct pool *pool)
{
	return pool->s->walks;
}

void fake_pool_set_data_used(struct pool *pool, uint64_t blocks)
{
	pool->s->data_used = blocks;
}
