/* The admin's images: import from a file or block device of the host (the copy runs
 * outside the lock), publish, list and remove. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "change.h"
#include "log.h"
#include "ops-internal.h"
#include "pool.h"
#include "store.h"
#include "tp-cleanup.h"

/* An image import in progress: its copy runs without the lock and counts what it did. */
struct import {
	struct import *next;
	int64_t volume_id;
	_Atomic uint64_t copied;
};

static const struct principal host = {.admin = true};

static int image_view(const struct volume *v, struct image_view *view)
{
	memset(view, 0, sizeof *view);
	make_view(&host, v, false, &view->volume); /* without labels: it cannot fail */
	for (struct import *imp = ops.imports; imp != NULL; imp = imp->next)
		if (imp->volume_id == v->id)
			view->imported = atomic_load(&imp->copied);
	return store_publications(ops.store, v->id, &view->published_all, &view->published,
	                          &view->n_published);
}

static bool all_zero(const char *buf, size_t len)
{
	return len == 0 || (buf[0] == 0 && memcmp(buf, buf + 1, len - 1) == 0);
}

/* Copy SIZE bytes of SRC into the thin device behind DST, leaving all-zero blocks
 * unmapped, counting the bytes done in *COPIED. -ECANCELED if the daemon stops. */
static int copy_image(int src, int dst, uint64_t size, uint64_t block, _Atomic uint64_t *copied)
{
	CLEANUP_FREE char *buf = NULL;
	size_t chunk = 1 << 20;
	uint64_t off;

	if (block > chunk || chunk % block)
		block = 4096;
	buf = malloc(chunk);
	if (buf == NULL)
		return -ENOMEM;
	for (off = 0; off < size;) {
		size_t want = size - off < chunk ? (size_t)(size - off) : chunk, got = 0, b;

		if (atomic_load(&ops_interrupted))
			return -ECANCELED;
		while (got < want) {
			ssize_t n = pread(src, buf + got, want - got, (off_t)(off + got));
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return -errno;
			if (n == 0) { /* the source shrank: the rest reads as zeros */
				memset(buf + got, 0, want - got);
				break;
			}
			got += (size_t)n;
		}
		for (b = 0; b < want; b += block) {
			size_t len = want - b < block ? want - b : block;

			if (all_zero(buf + b, len))
				continue;
			for (size_t done = 0; done < len;) {
				ssize_t n = pwrite(dst, buf + b + done, len - done,
				                   (off_t)(off + b + done));
				if (n < 0 && errno == EINTR)
					continue;
				if (n < 0)
					return -errno;
				done += (size_t)n;
			}
		}
		off += want;
		atomic_store(copied, off);
	}
	return fsync(dst) < 0 ? -errno : 0;
}

/* Under the lock: the import of V is over (IMP unlisted). If it failed with ERR, the half
 * imported image goes again. */
static int end_import(struct import *imp, struct volume *v, const char *path, int err)
{
	struct change_clock clk;
	struct import **i;
	int r;

	for (i = &ops.imports; *i != NULL; i = &(*i)->next)
		if (*i == imp) {
			*i = imp->next;
			break;
		}
	if (ops.store == NULL)
		return fail(-ECANCELED,
		            "import of image %s interrupted: the daemon is stopping; "
		            "its next start removes what was copied",
		            v->name);
	if (err < 0) {
		log_errno(LOG_ERR, err, "import of image %s from %s: %m", v->name, path);
		fail(err, "import of image %s from %s failed: %s", v->name, path, strerror(-err));
		change_clock_start(&clk);
		if (remove_volume(v, &clk) < 0)
			log_error(
			    "removing the half-imported image %s failed; the next start tries "
			    "again, ignoring",
			    v->name);
		return err;
	}
	refresh_used(v, false);
	r = pool_deactivate_thin(ops.pool, v->thin_id);
	if (r < 0)
		log_errno(LOG_WARNING, r, "deactivate imported image %s: %m, ignoring", v->name);
	v->state = VOLUME_COMMITTED;
	r = store_volume_update(ops.store, v);
	if (r < 0)
		return internal(r, "commit image");
	log_info("imported image %s from %s (%" PRIu64 " bytes, %" PRIu64 " mapped)", v->name, path,
	         v->size, v->used);
	return 0;
}

int ops_image_import(const char *name, const char *path, struct image_view *ret_view)
{
	CLEANUP_CLOSE int src = -1;
	CLEANUP_CLOSE int dst = -1;
	struct import imp = {0};
	struct change_clock clk;
	struct volume v;
	struct stat st;
	uint64_t size, len, block;
	int r;

	if (path == NULL || path[0] != '/')
		return fail(-EINVAL, "invalid image source: an absolute path on the host");
	src = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (src < 0 || fstat(src, &st) < 0)
		return fail(errno == ENOENT ? -ENOENT : -EINVAL, "cannot read %s: %m", path);
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(src, BLKGETSIZE64, &size) < 0)
			return fail(-EINVAL, "cannot size %s: %m", path);
	} else if (S_ISREG(st.st_mode)) {
		size = (uint64_t)st.st_size;
	} else {
		return fail(-EINVAL, "invalid image source %s: not a file or block device", path);
	}
	len = size;
	size = (size + 511) & ~UINT64_C(511);
	if (size < TP_SIZE_MIN)
		size = TP_SIZE_MIN;

	{
		LOCKED;
		change_clock_start(&clk);
		r = create_volume(&host, CHANGE_IMPORT, name, size, NULL, NULL, &clk, &v);
		if (r < 0)
			return r;
		block = pool_block_size(ops.pool);
		r = pool_activate_thin(ops.pool, v.thin_id, v.size, false);
		if (r == 0)
			r = dst = pool_open_thin(ops.pool, v.thin_id, O_RDWR);
		if (r < 0)
			return end_import(&imp, &v, path, r);
		imp.volume_id = v.id;
		imp.next = ops.imports;
		ops.imports = &imp;
	}
	/* The copy runs without the lock, so that the broker and every other request go on
	 * during a long import. Nothing else touches the image meanwhile: it is not
	 * committed, so it can be neither published, opened nor removed. */
	r = copy_image(src, dst, len, block, &imp.copied);
	close(TAKE_FD(dst));

	LOCKED;
	r = end_import(&imp, &v, path, r);
	if (r < 0)
		return r;
	r = image_view(&v, ret_view);
	return r < 0 ? internal(r, "read image") : 0;
}

static int image_by_name(const char *name, struct volume *ret)
{
	int r;

	if (!tp_name_valid(name))
		return fail_code(TP_ERROR_INVALID_NAME, -EINVAL, "invalid image name \"%.80s\"",
		                 name);
	r = store_volume_get(ops.store, 0, name, ret);
	if (r == 0 && ret->state == VOLUME_IMPORTING)
		return fail(-EBUSY, "image %s is busy: it is being imported", name);
	if (r == -ENOENT || (r == 0 && ret->state != VOLUME_COMMITTED))
		return fail(-ENOENT, "no such image: %s", name);
	return r < 0 ? internal(r, "read image") : 0;
}

int ops_image_publish(const char *name, const char *tenant, struct image_view *ret_view)
{
	struct volume v;
	struct tenant t = {0};
	int r;

	LOCKED;
	r = image_by_name(name, &v);
	if (r < 0)
		return r;
	if (tenant && (r = tenant_by_name(tenant, &t)) < 0)
		return r;
	r = store_publish(ops.store, v.id, t.id);
	if (r < 0)
		return internal(r, "publish image");
	log_info("published image %s to %s", name, tenant ? tenant : "all tenants");
	r = image_view(&v, ret_view);
	return r < 0 ? internal(r, "read image") : 0;
}

int ops_image_list(struct image_view **ret_views, size_t *ret_n)
{
	CLEANUP_FREE struct volume *vols = NULL;
	struct image_view *views;
	size_t n, i, k = 0;
	int r;

	LOCKED;
	r = store_volume_list(ops.store, 0, &vols, &n);
	if (r < 0)
		return internal(r, "list images");
	views = calloc(n ? n : 1, sizeof *views);
	if (views == NULL)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		if (vols[i].state != VOLUME_COMMITTED && vols[i].state != VOLUME_IMPORTING)
			continue;
		if ((r = image_view(&vols[i], &views[k++])) < 0) {
			ops_image_views_free(views, k);
			return internal(r, "read image");
		}
	}
	*ret_views = views;
	*ret_n = k;
	return 0;
}

int ops_image_remove(const char *name)
{
	struct change_clock clk;
	struct volume v;
	int r;

	LOCKED;
	change_clock_start(&clk);
	r = image_by_name(name, &v);
	return r < 0 ? r : remove_volume(&v, &clk);
}
