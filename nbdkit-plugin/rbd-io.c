/* I/O on a Ceph RBD image through librbd's asynchronous API (rbd-io.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rbd-io.h"

/* Set errno from a librados or librbd return (-errno) and return -1. */
static int fail_with(int r)
{
	errno = r < 0 ? -r : EIO;
	return -1;
}

/* Seconds on the monotonic clock. */
static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Take IMAGE's exclusive lock in manual mode, asking again for up to WAIT seconds while
 * another client refuses it; 0 or librbd's -errno.
 *
 * Manual mode is what makes the lock ours until we let go: in librbd's default
 * (cooperative) mode, a client that asks for the lock is handed it and its holder's
 * next write waits to take it back, so two writers would take turns. In manual mode the
 * holder refuses such requests, and librbd 16.2 fails the asker's rbd_lock_acquire with
 * -EROFS at once.
 *
 * A holder that died without letting go still owns the lock in RADOS, and its watch on
 * the image's header lasts until the OSD has heard nothing from it for
 * osd_client_watch_timeout (30 s by default). rbd_lock_acquire's request to it goes
 * unanswered until then (measured: one call returned after 30.6 s); once the watch is
 * gone, librbd blocklists the holder's address (rbd_blocklist_on_break_lock, on by
 * default; the mon's `profile rbd` allows it) and breaks the lock, within that same
 * call. The blocklist keeps a holder that was only cut off, not dead, from writing after
 * all. Breaking the lock ourselves (rbd_lock_break) would not be quicker without
 * knowing the holder dead, and would also break a live holder's. */
static int take_lock(rbd_image_t image, unsigned wait)
{
	double deadline = now() + wait;
	int e;

	for (;;) {
		e = rbd_lock_acquire(image, RBD_LOCK_MODE_EXCLUSIVE);
		if ((e != -EROFS && e != -EBUSY) || now() >= deadline)
			return e;
		nanosleep(&(struct timespec){.tv_nsec = 500000000}, NULL);
	}
}

/* Is option NAME of the list V (N of them) VALUE, or, where PART, does it contain it? */
static bool option_is(const rbd_config_option_t *v, int n, const char *name, const char *value,
                      bool part)
{
	for (int i = 0; i < n; i++)
		if (strcmp(v[i].name, name) == 0)
			return part ? strstr(v[i].value, value) != NULL
			            : strcmp(v[i].value, value) == 0;
	return false;
}

/* Whether IMAGE, as configured in the end, answers writes only when the OSDs have them:
 * 0, -EINVAL if not, or librbd's error. The pool's and the image's own settings (`rbd
 * config pool|image set`, which the tenant's key may write) apply over the client's, and
 * could turn librbd's cache or the persistent write-back cache (pwl_cache) back on. */
static int check_uncached(rbd_image_t image)
{
	rbd_config_option_t *v = NULL;
	int n = 256, e;

	for (;;) {
		rbd_config_option_t *grown = realloc(v, (size_t)n * sizeof *v);

		if (grown == NULL) {
			free(v);
			return -ENOMEM;
		}
		v = grown;
		e = rbd_config_image_list(image, v, &n);
		if (e != -ERANGE)
			break;
	}
	if (e == 0) {
		if (!option_is(v, n, "rbd_cache", "false", false) ||
		    option_is(v, n, "rbd_plugins", "pwl_cache", true))
			e = -EINVAL;
		rbd_config_image_list_cleanup(v, n);
	}
	free(v);
	return e;
}

int rbd_io_open(const struct rbd_io_target *t, bool read_only, struct rbd_io *ret_r)
{
	struct rbd_io r = {.read_only = read_only};
	rbd_image_info_t info;
	uint64_t features, flags;
	int e;

	e = rados_create2(&r.cluster, "ceph", t->client, 0);
	if (e < 0) {
		r.cluster = NULL;
		goto fail;
	}
	/* The keyring after the file: the file's [client] section may name another one
	 * (an admin's), which this client must never read. */
	e = rados_conf_read_file(r.cluster, t->conf);
	if (e == 0)
		e = rados_conf_set(r.cluster, "keyring", t->keyring);
	/* No cache in librbd, whatever the file says: a write is answered when the OSDs
	 * have it, and they refuse a holder that was fenced. librbd 16.2's default cache
	 * (write-around) answers a write before the OSDs have, and a holder that had been
	 * stopped past its watch got writes the OSDs had refused answered as done, in 3 of
	 * 7 runs; without it, in none of 11. No persistent write-back cache either. What
	 * the pool or image may say over this is checked once open (check_uncached). */
	if (e == 0)
		e = rados_conf_set(r.cluster, "rbd_cache", "false");
	if (e == 0)
		e = rados_conf_set(r.cluster, "rbd_plugins", "");
	if (e == 0)
		e = rados_connect(r.cluster);
	if (e < 0)
		goto fail;
	e = rados_ioctx_create(r.cluster, t->pool, &r.ioctx);
	if (e < 0) {
		r.ioctx = NULL;
		goto fail;
	}
	rados_ioctx_set_namespace(r.ioctx, t->namespace != NULL ? t->namespace : "");
	if (read_only)
		e = rbd_open_read_only(r.ioctx, t->image, &r.image, NULL);
	else
		e = rbd_open(r.ioctx, t->image, &r.image, NULL);
	if (e < 0) {
		r.image = NULL;
		goto fail;
	}
	e = check_uncached(r.image);
	if (e == 0)
		e = rbd_stat(r.image, &info, sizeof info);
	if (e == 0)
		e = rbd_get_features(r.image, &features);
	if (e == 0)
		e = rbd_get_flags(r.image, &flags);
	if (e == 0 && !read_only && (features & RBD_FEATURE_EXCLUSIVE_LOCK) != 0) {
		e = take_lock(r.image, t->lock_wait);
		r.locked = e == 0;
	}
	if (e < 0)
		goto fail;
	r.size = info.size;
	r.object_size = info.obj_size;
	r.fast_diff =
	    (features & RBD_FEATURE_FAST_DIFF) != 0 && (flags & RBD_FLAG_FAST_DIFF_INVALID) == 0;
	*ret_r = r;
	return 0;
fail:
	rbd_io_close(&r);
	return fail_with(e);
}

void rbd_io_close(struct rbd_io *r)
{
	int saved = errno;

	/* Image, then pool, then cluster: each holds on to the one after it. The lock
	 * goes first, so that the next writer need not wait for it; rbd_close would let go
	 * of it too, and does so if this fails. */
	if (r->locked)
		rbd_lock_release(r->image);
	if (r->image != NULL)
		rbd_close(r->image);
	if (r->ioctx != NULL)
		rados_ioctx_destroy(r->ioctx);
	if (r->cluster != NULL)
		rados_shutdown(r->cluster);
	memset(r, 0, sizeof *r);
	errno = saved;
}

/* Whether [OFFSET, OFFSET+COUNT) lies inside the image as it is now; if not, errno is
 * ENOSPC for a write (WRITE), else EINVAL. librbd itself would clip such a request to
 * the end of the image and report it done. */
static bool in_image(const struct rbd_io *r, uint64_t count, uint64_t offset, bool write)
{
	uint64_t size;
	int e = rbd_get_size(r->image, &size);

	if (e < 0) {
		errno = -e;
		return false;
	}
	if (offset > size || count > size - offset) {
		errno = write ? ENOSPC : EINVAL;
		return false;
	}
	return true;
}

/* A completion to wait on, in *RET_C. */
static int new_completion(rbd_completion_t *ret_c)
{
	int e = rbd_aio_create_completion(NULL, NULL, ret_c);

	return e < 0 ? fail_with(e) : 0;
}

/* Finish the request that STARTED (the rbd_aio_* call's return) began on C: wait for it,
 * take its result and release C. The result (bytes, for a read), or -1 with errno. A
 * request that could not start never took C, so C is released here either way. */
static ssize_t finish(rbd_completion_t c, int started)
{
	ssize_t n;

	if (started < 0) {
		rbd_aio_release(c);
		return fail_with(started);
	}
	rbd_aio_wait_for_complete(c);
	n = rbd_aio_get_return_value(c);
	rbd_aio_release(c);
	return n < 0 ? fail_with((int)n) : n;
}

int rbd_io_pread(const struct rbd_io *r, void *buf, uint32_t count, uint64_t offset)
{
	rbd_completion_t c;
	ssize_t n;

	if (!in_image(r, count, offset, false) || new_completion(&c) < 0)
		return -1;
	n = finish(c, rbd_aio_read(r->image, offset, count, buf, c));
	if (n < 0)
		return -1;
	/* The image shrank between the check and the read: librbd read only what was
	 * left. */
	if ((uint64_t)n != count) {
		errno = EIO;
		return -1;
	}
	return 0;
}

int rbd_io_flush(const struct rbd_io *r)
{
	rbd_completion_t c;

	if (new_completion(&c) < 0)
		return -1;
	return finish(c, rbd_aio_flush(r->image, c)) < 0 ? -1 : 0;
}

/* The end of a write-like request that returned N: with FUA, flush. */
static int done_write(const struct rbd_io *r, ssize_t n, bool fua)
{
	if (n < 0)
		return -1;
	return fua ? rbd_io_flush(r) : 0;
}

int rbd_io_pwrite(const struct rbd_io *r, const void *buf, uint32_t count, uint64_t offset,
                  bool fua)
{
	rbd_completion_t c;

	if (!in_image(r, count, offset, true) || new_completion(&c) < 0)
		return -1;
	return done_write(r, finish(c, rbd_aio_write(r->image, offset, count, buf, c)), fua);
}

int rbd_io_zero(const struct rbd_io *r, uint32_t count, uint64_t offset, bool allocate, bool fua)
{
	int flags = allocate ? RBD_WRITE_ZEROES_FLAG_THICK_PROVISION : 0;
	rbd_completion_t c;

	if (!in_image(r, count, offset, true) || new_completion(&c) < 0)
		return -1;
	return done_write(r, finish(c, rbd_aio_write_zeroes(r->image, offset, count, c, flags, 0)),
	                  fua);
}

int rbd_io_trim(const struct rbd_io *r, uint32_t count, uint64_t offset, bool fua)
{
	rbd_completion_t c;

	if (!in_image(r, count, offset, false) || new_completion(&c) < 0)
		return -1;
	return done_write(r, finish(c, rbd_aio_discard(r->image, offset, count, c)), fua);
}

/* Byte ranges, as rbd_diff_iterate2 reports them. */
struct ranges {
	struct range {
		uint64_t offset, length;
	} * v;
	size_t n, cap;
};

/* rbd_diff_iterate2's callback: keep the ranges that exist. */
static int add_range(uint64_t offset, size_t length, int exists, void *arg)
{
	struct ranges *rs = arg;

	if (!exists || length == 0)
		return 0;
	if (rs->n == rs->cap) {
		size_t cap = rs->cap != 0 ? 2 * rs->cap : 64;
		struct range *v = realloc(rs->v, cap * sizeof *v);

		if (v == NULL)
			return -ENOMEM;
		rs->v = v;
		rs->cap = cap;
	}
	rs->v[rs->n++] = (struct range){offset, length};
	return 0;
}

static int by_offset(const void *a, const void *b)
{
	const struct range *x = a, *y = b;

	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Sort RS and merge ranges that overlap or touch. librbd asks objects in parallel and
 * reports them in the order they answer. */
static void normalise(struct ranges *rs)
{
	size_t k = 0;

	if (rs->n == 0)
		return;
	qsort(rs->v, rs->n, sizeof *rs->v, by_offset);
	for (size_t i = 1; i < rs->n; i++) {
		struct range *last = &rs->v[k];

		if (rs->v[i].offset <= last->offset + last->length) {
			uint64_t end = rs->v[i].offset + rs->v[i].length;

			if (end > last->offset + last->length)
				last->length = end - last->offset;
		} else {
			rs->v[++k] = rs->v[i];
		}
	}
	rs->n = k + 1;
}

/* Add to RS the written ranges of [OFFSET, OFFSET+COUNT), WHOLE objects or exact. */
static int diff(const struct rbd_io *r, uint64_t count, uint64_t offset, bool whole,
                struct ranges *rs)
{
	int e = rbd_diff_iterate2(r->image, NULL, offset, count, 1, whole, add_range, rs);

	return e < 0 ? fail_with(e) : 0;
}

/* Call FN for [OFFSET, END) as data and holes from the sorted, merged ranges RS. */
static int report(const struct ranges *rs, uint64_t offset, uint64_t end, rbd_io_extent_fn fn,
                  void *arg)
{
	uint64_t at = offset;

	for (size_t i = 0; i < rs->n && at < end; i++) {
		uint64_t start = rs->v[i].offset, stop = rs->v[i].offset + rs->v[i].length;

		if (stop <= at)
			continue;
		if (start < at)
			start = at;
		if (stop > end)
			stop = end;
		if (start >= end)
			break;
		if (start > at && fn(arg, at, start - at, false) != 0)
			return -1;
		if (fn(arg, start, stop - start, true) != 0)
			return -1;
		at = stop;
	}
	if (at < end && fn(arg, at, end - at, false) != 0)
		return -1;
	return 0;
}

int rbd_io_extents(const struct rbd_io *r, uint64_t count, uint64_t offset, rbd_io_extent_fn fn,
                   void *arg)
{
	struct ranges objects = {0}, written = {0};
	int ret = -1, saved;

	if (!in_image(r, count, offset, false))
		return -1;
	if (count == 0)
		return 0;
	/* At most RBD_IO_EXTENTS_OBJECTS objects, the first one counted whole: each is a
	 * request to an OSD, and a client may ask for the map of a whole image. */
	if (count > RBD_IO_EXTENTS_OBJECTS * r->object_size - offset % r->object_size)
		count = RBD_IO_EXTENTS_OBJECTS * r->object_size - offset % r->object_size;
	if (r->fast_diff) {
		/* The object map says which objects exist without asking any OSD; only
		 * those are then asked which of their bytes were written. librbd reads the
		 * map only for whole-object diffs, and falls back to asking every object
		 * itself where the map has become invalid since open. */
		if (diff(r, count, offset, true, &objects) < 0)
			goto out;
		normalise(&objects);
		for (size_t i = 0; i < objects.n; i++)
			if (diff(r, objects.v[i].length, objects.v[i].offset, false, &written) < 0)
				goto out;
	} else if (diff(r, count, offset, false, &written) < 0) {
		goto out;
	}
	normalise(&written);
	ret = report(&written, offset, offset + count, fn, arg);
out:
	saved = errno;
	free(objects.v);
	free(written.v);
	errno = saved;
	return ret;
}
