/* Block status for the plugin (.extents), from the pool's map.
 *
 * On a connection's first .extents the plugin flushes the device, then asks the broker
 * for the ranges the pool has mapped (MAP) and keeps that map; the rest are holes that
 * read as zeroes. The map is taken from the pool's metadata, which knows nothing of what
 * this nbdkit writes later, so every write, trim and zero of this process, on any
 * connection, is added as data to every map of the same device that it may already have
 * missed (a process-wide list of live maps, under one lock, looked at only while there is
 * one). Committed volumes and images never change and their maps follow nothing. When
 * there is no map to be had, everything is data, which is never wrong. */
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker.h"
#include "extents.h"
#include "tp-broker.h"
#include "tp-cleanup.h"

/* Most ranges a map holds (4 MiB) before the closest are joined down to what the wire
 * carries: what a client's scattered writes can make the plugin allocate. */
#define MAP_RANGES_MAX (4 * TP_BROKER_MAP_MAX)

/* Which ranges of one device hold data: the pool's mapped blocks as the broker said,
 * and whatever this process wrote since it asked. In order, neither overlapping nor
 * touching; the rest reads as zeroes. */
struct map {
	struct map *next; /* in live_maps, while it follows writes */
	struct dev_key key;
	uint64_t size;
	uint32_t granule; /* writes are rounded out to it (the pool's block); 0: unknown */
	struct tp_broker_range *r;
	size_t n, cap; /* cap >= 1 */
};

/* One connection's block status. */
struct extents {
	int fd;                       /* the handle's, flushed before the map is asked for */
	char ref[TP_BROKER_REF_SIZE]; /* what the broker opened, asked again for the map */
	struct dev_key key;
	uint64_t size;
	uint32_t granule;         /* the pool's block size; 0 if the broker did not say */
	bool tracked;             /* may change, so that its map follows this process's writes */
	pthread_mutex_t map_lock; /* one fetch of the map at a time */
	struct map *map;          /* NULL until the first .extents */
	bool no_map;              /* the broker cannot map it: everything is data */
};

/* The maps that this process's writes must reach, under maps_lock, and how many there are:
 * a write reads the count first, without the lock, and is done if it is 0. */
static pthread_mutex_t maps_lock = PTHREAD_MUTEX_INITIALIZER;
static struct map *live_maps;
static atomic_uint n_live_maps;

/* Maps: what the pool holds, and what this process wrote since. */

/* An empty map of E's device. NULL with errno set if there is no memory. */
static struct map *map_new(const struct extents *e)
{
	struct map *m = calloc(1, sizeof *m);

	if (m == NULL)
		return NULL;
	m->r = calloc(1, sizeof *m->r);
	if (m->r == NULL) {
		free(m);
		return NULL;
	}
	m->cap = 1;
	m->key = e->key;
	m->size = e->size;
	m->granule = e->granule;
	return m;
}

/* Let M follow this process's writes from now on. */
static void maps_register(struct map *m)
{
	LOCK_SCOPE(&maps_lock);
	m->next = live_maps;
	live_maps = m;
	/* A sequentially consistent increment, the other half of the fence in
	 * extents_note_written. */
	atomic_fetch_add(&n_live_maps, 1);
}

/* Forget M, registered or not. Keeps errno. */
static void map_free(struct map *m, bool registered)
{
	struct map **pm;

	if (m == NULL)
		return;
	if (registered) {
		LOCK_SCOPE(&maps_lock);

		for (pm = &live_maps; *pm != m; pm = &(*pm)->next)
			;
		*pm = m->next;
		atomic_fetch_sub(&n_live_maps, 1);
	}
	free(m->r);
	free(m);
}

/* Call all of M data: what a map that cannot grow any more says. */
static void map_fill(struct map *m)
{
	m->r[0] = (struct tp_broker_range){0, m->size};
	m->n = m->size > 0;
}

/* The first of M's ranges that ends at or after OFFSET (M->n if none). */
static size_t map_find(const struct map *m, uint64_t offset)
{
	size_t lo = 0, hi = m->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (m->r[mid].offset + m->r[mid].length < offset)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Make [OFFSET, END) data in M, joined with the ranges it overlaps or touches. Returns 0,
 * or -1 with errno set if there is no memory for another range. */
static int map_add(struct map *m, uint64_t offset, uint64_t end)
{
	size_t lo = map_find(m, offset), hi = lo;

	while (hi < m->n && m->r[hi].offset <= end)
		hi++;
	if (lo == hi) {
		if (m->n == m->cap) {
			struct tp_broker_range *r = reallocarray(m->r, 2 * m->cap, sizeof *r);

			if (r == NULL)
				return -1;
			m->r = r;
			m->cap *= 2;
		}
		memmove(&m->r[lo + 1], &m->r[lo], (m->n - lo) * sizeof *m->r);
		m->r[lo] = (struct tp_broker_range){offset, end - offset};
		m->n++;
	} else {
		uint64_t start = offset < m->r[lo].offset ? offset : m->r[lo].offset;
		uint64_t last = m->r[hi - 1].offset + m->r[hi - 1].length;

		m->r[lo] = (struct tp_broker_range){start, (end > last ? end : last) - start};
		memmove(&m->r[lo + 1], &m->r[hi], (m->n - hi) * sizeof *m->r);
		m->n -= hi - lo - 1;
	}
	if (m->n > MAP_RANGES_MAX)
		m->n = tp_broker_coalesce(m->r, m->n, TP_BROKER_MAP_MAX);
	return 0;
}

/* Make the bytes [OFFSET, OFFSET+LEN) that this process wrote data in M, rounded out to
 * whole pool blocks: a write provisions the whole block, whose rest need not read as
 * zeroes (a pool may skip zeroing new blocks). Without the block size, all of M. */
static void map_note(struct map *m, uint64_t offset, uint64_t len)
{
	uint64_t g = m->granule, start = 0, end = m->size;

	if (g != 0) {
		start = offset / g * g;
		end = (offset + len + g - 1) / g * g;
		if (end > m->size)
			end = m->size;
	}
	if (len > 0 && start < end && map_add(m, start, end) < 0)
		map_fill(m);
}

/* Make the N ranges R (in the wire's order, room for at least one) the broker answered
 * the base of M, with what M noted while the answer was on its way. M takes R. */
static void map_take(struct map *m, struct tp_broker_range *r, size_t n)
{
	struct tp_broker_range *noted = m->r;
	size_t n_noted = m->n;

	m->r = r;
	m->n = n;
	m->cap = n ? n : 1;
	for (size_t i = 0; i < n_noted; i++)
		if (map_add(m, noted[i].offset, noted[i].offset + noted[i].length) < 0) {
			map_fill(m);
			break;
		}
	free(noted);
}

/* Merge a write of this process into the maps of its device (extents.h). */
void extents_note_written(const struct extents *e, uint64_t offset, uint64_t len)
{
	int saved = errno;

	/* The other half is maps_register's increment, before fetch_map's flush: either
	 * this sees the map there, or the write was done before the map was registered
	 * and the flush takes it to the device before the daemon looks. */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&n_live_maps, memory_order_relaxed) > 0) {
		LOCK_SCOPE(&maps_lock);

		for (struct map *m = live_maps; m != NULL; m = m->next)
			if (m->key.dev == e->key.dev && m->key.ino == e->key.ino)
				map_note(m, offset, len);
	}
	errno = saved;
}

/* Did a MAP that got no well-formed answer meet a daemon that predates MAP: one that
 * read the request and hung up, or answered what no MAP is answered with? */
static bool map_unknown(int err)
{
	return err == ECONNRESET || err == EBADMSG || err == EPROTO || err == EOPNOTSUPP;
}

/* What REP, the broker's well-formed answer to MAP, means for E: 0, a map to keep; 1,
 * none to be had now, so that everything is reported as data; -1, an error, logged. */
static int map_reply_usable(struct extents *e, const struct tp_broker_reply *rep)
{
	if (rep->error == EOPNOTSUPP || (rep->error == 0 && rep->size != e->size)) {
		/* The pool cannot tell, or the volume changed size under us. */
		e->no_map = true;
		nbdkit_debug("extents: thinproxyd cannot map %s (error %" PRIu32 ", size %" PRIu64
		             "), reporting everything as data",
		             e->ref, rep->error, rep->size);
		return 1;
	}
	if (rep->error == EBUSY) {
		/* Another tool holds the pool's metadata snapshot: everything is data this
		 * time (never wrong), and the next request asks again. A copier would stop
		 * at a failed block status. */
		nbdkit_debug("extents: the pool's metadata is busy, reporting %s as data this time",
		             e->ref);
		return 1;
	}
	if (rep->error != 0) {
		errno = (int)rep->error;
		nbdkit_error("extents: thinproxyd's broker cannot map %s: %m", e->ref);
		return -1;
	}
	return 0;
}

/* Fetch E's map from the broker. Returns 0 (e->map set), 1 if there is none to be had
 * now, so that everything is reported as data, or -1 with the error logged. Called with
 * e->map_lock held. */
static int fetch_map(struct extents *e)
{
	CLEANUP_FREE struct tp_broker_range *ranges = NULL;
	struct tp_broker_reply rep;
	struct map *m = map_new(e);
	int r;

	if (m == NULL) {
		nbdkit_error("extents: calloc: %m");
		return -1;
	}
	/* Registered before the flush and the request, so that no write of this process
	 * escapes both: one that does not find the map (extents_note_written) was done
	 * before, and the flush takes it to the thin device before the daemon reads the
	 * pool's metadata. */
	if (e->tracked)
		maps_register(m);
	if (fdatasync(e->fd) < 0) {
		nbdkit_error("extents: fdatasync: %m");
		r = -1;
	} else if (broker_map(e->ref, &rep, &ranges) < 0) {
		/* An old daemon stays old; one that is down may be back next time. */
		e->no_map = map_unknown(errno);
		nbdkit_debug("extents: no map of %s from thinproxyd's broker (%m), "
		             "reporting everything as data",
		             e->ref);
		r = 1;
	} else {
		r = map_reply_usable(e, &rep);
	}
	if (r != 0) {
		map_free(m, e->tracked);
		return r;
	}
	pthread_mutex_lock(&maps_lock);
	map_take(m, TAKE_PTR(ranges), rep.count);
	pthread_mutex_unlock(&maps_lock);
	e->map = m;
	return 0;
}

/* E's map, fetched on first use: 0, 1 if there is none (everything is data), or -1. */
static int get_map(struct extents *e)
{
	LOCK_SCOPE(&e->map_lock);

	if (e->map != NULL)
		return 0;
	if (e->no_map)
		return 1;
	return fetch_map(e);
}

/* Tell nbdkit what M says of [OFFSET, OFFSET+COUNT): its ranges data, the rest holes that
 * read as zeroes; only the first extent for NBDKIT_FLAG_REQ_ONE. */
static int add_extents(const struct map *m, uint32_t count, uint64_t offset, uint32_t flags,
                       struct nbdkit_extents *extents)
{
	uint64_t pos = offset, end = offset + count;
	size_t i = map_find(m, offset + 1);

	while (pos < end) {
		uint64_t next = i < m->n ? m->r[i].offset : m->size;
		uint32_t type = NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO;

		if (next <= pos) {
			next = m->r[i].offset + m->r[i].length;
			type = 0;
			i++;
		}
		if (nbdkit_add_extent(extents, pos, next - pos, type) < 0)
			return -1;
		if (flags & NBDKIT_FLAG_REQ_ONE)
			break;
		pos = next;
	}
	return 0;
}

/* The block status of one connection's device (extents.h). */
struct extents *extents_open(int fd, const char *ref, struct dev_key key, uint64_t size,
                             uint32_t granule, bool follow_writes)
{
	struct extents *e = calloc(1, sizeof *e);

	if (e == NULL)
		return NULL;
	e->fd = fd;
	memcpy(e->ref, ref, strlen(ref) + 1);
	e->key = key;
	e->size = size;
	e->granule = granule;
	e->tracked = follow_writes;
	pthread_mutex_init(&e->map_lock, NULL);
	return e;
}

/* Forget E and its map (extents.h). */
void extents_close(struct extents *e)
{
	if (e == NULL)
		return;
	map_free(e->map, e->tracked);
	pthread_mutex_destroy(&e->map_lock);
	free(e);
}

/* Answer .extents from E's map (extents.h). */
int extents_answer(struct extents *e, uint32_t count, uint64_t offset, uint32_t flags,
                   struct nbdkit_extents *out)
{
	int r = get_map(e);

	if (r < 0)
		return -1;
	if (r > 0)
		return nbdkit_add_extent(out, offset, count, 0);
	LOCK_SCOPE(&maps_lock);
	return add_extents(e->map, count, offset, flags, out);
}
