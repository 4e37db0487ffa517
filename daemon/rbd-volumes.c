/* A tenant's volumes as RBD images of its RADOS namespace (see rbd-volumes.h). */
#include <errno.h>
#include <rados/librados.h>
#include <rbd/features.h>
#include <rbd/librbd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fault.h"
#include "rbd-volumes.h"
#include "tp-cleanup.h"
#include "tp-rules.h"

/* Every volume's features: layering for clones, exclusive-lock so that one writer at a
 * time holds an image across hosts, object-map and fast-diff for usage and extents
 * without asking every object, deep-flatten so a clone's snapshots never pin its parent. */
#define FEATURES                                                                      \
	(RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK | RBD_FEATURE_OBJECT_MAP | \
	 RBD_FEATURE_FAST_DIFF | RBD_FEATURE_DEEP_FLATTEN)
/* "tp." and a volume name. */
#define SNAP_NAME_MAX (sizeof RBD_VOLUME_SNAP_PREFIX + TP_NAME_MAX)

static void image_close(rbd_image_t *image)
{
	if (*image != NULL)
		rbd_close(*image);
}
#define CLEANUP_IMAGE __attribute__((cleanup(image_close)))

static void options_destroy(rbd_image_options_t *opts)
{
	if (*opts != NULL)
		rbd_image_options_destroy(*opts);
}
#define CLEANUP_OPTIONS __attribute__((cleanup(options_destroy)))

/* The snapshot child NAME is cloned from, into BUF. */
static void snap_name(const char *name, char buf[static SNAP_NAME_MAX])
{
	snprintf(buf, SNAP_NAME_MAX, "%s%s", RBD_VOLUME_SNAP_PREFIX, name);
}

/* One of librbd's listing calls: fill BUF's *MAX entries, or answer -ERANGE with the
 * number it needs in *MAX. FROM is the ioctx or image it lists (both are pointers). */
typedef int list_fn(void *from, void *buf, size_t *max);

/* What LIST of FROM gives, starting with room for MAX entries of SIZE bytes and growing
 * while librbd asks for more (what it lists may grow between two calls): *RET_N entries
 * into *RET_BUF, which the caller frees after librbd's cleanup of the entries. */
static int list_all(list_fn *list, void *from, size_t size, size_t max, void **ret_buf,
                    size_t *ret_n)
{
	CLEANUP_FREE void *buf = NULL;
	int r;

	for (;;) {
		free(buf);
		buf = calloc(max, size);
		if (buf == NULL)
			return -ENOMEM;
		r = list(from, buf, &max);
		if (r != -ERANGE)
			break;
	}
	if (r < 0)
		return r;
	*ret_buf = TAKE_PTR(buf);
	*ret_n = max;
	return 0;
}

/* librbd's listings, typed for list_all: called through a pointer of another type, they
 * would be undefined behaviour. */
static int list_images_of(void *io, void *images, size_t *max)
{
	return rbd_list2(io, images, max);
}

static int list_children_of(void *image, void *specs, size_t *max)
{
	return rbd_list_children3(image, specs, max);
}

static int list_watchers_of(void *image, void *watchers, size_t *max)
{
	return rbd_watchers_list(image, watchers, max);
}

/* Options for a new volume, plain or clone: format 2 (clone format 2), FEATURES. */
static int new_options(bool clone, rbd_image_options_t *ret_opts)
{
	rbd_image_options_t opts;
	int r;

	rbd_image_options_create(&opts);
	if ((r = rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_FORMAT, 2)) < 0 ||
	    (r = rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_FEATURES, FEATURES)) < 0 ||
	    (clone &&
	     (r = rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_CLONE_FORMAT, 2)) < 0)) {
		rbd_image_options_destroy(opts);
		return r;
	}
	*ret_opts = opts;
	return 0;
}

/* Whether IMAGE carries the committed flag. */
static int committed(rbd_image_t image, bool *ret_committed)
{
	char value[8];
	size_t len = sizeof value;
	int r;

	r = rbd_metadata_get(image, RBD_VOLUME_COMMITTED_KEY, value, &len);
	if (r == -ENOENT) {
		*ret_committed = false;
		return 0;
	}
	if (r < 0)
		return r;
	*ret_committed = strcmp(value, "1") == 0;
	return 0;
}

/* The parent of IMAGE when it is an image of IO's pool and namespace: its name into
 * PARENT and the parent snapshot's into SNAP (both "" for none). */
static int parent_of(rados_ioctx_t io, rbd_image_t image, char parent[static TP_NAME_MAX + 1],
                     char snap[static SNAP_NAME_MAX])
{
	rbd_linked_image_spec_t spec;
	rbd_snap_spec_t snap_spec;
	char ns[TP_NAME_MAX + 2];
	int r;

	parent[0] = snap[0] = '\0';
	r = rbd_get_parent(image, &spec, &snap_spec);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	r = rados_ioctx_get_namespace(io, ns, sizeof ns);
	if (r >= 0 && spec.pool_id == rados_ioctx_get_id(io) &&
	    strcmp(spec.pool_namespace, ns) == 0 && strlen(spec.image_name) <= TP_NAME_MAX &&
	    strlen(snap_spec.name) < SNAP_NAME_MAX) {
		strcpy(parent, spec.image_name);
		strcpy(snap, snap_spec.name);
	}
	rbd_linked_image_spec_cleanup(&spec);
	rbd_snap_spec_cleanup(&snap_spec);
	return r < 0 ? r : 0;
}

/* The number of children of IMAGE's snapshot SNAP (trashed ones too: they still hold it). */
static int count_children(rbd_image_t image, const char *snap, size_t *ret_n)
{
	CLEANUP_FREE void *specs = NULL;
	size_t n = 0;
	int r;

	r = rbd_snap_set(image, snap);
	if (r < 0)
		return r;
	r = list_all(list_children_of, image, sizeof(rbd_linked_image_spec_t), 4, &specs, &n);
	if (r < 0)
		return r;
	rbd_linked_image_spec_list_cleanup(specs, n);
	/* Back to the image's head, where changes may be made. */
	r = rbd_snap_set(image, NULL);
	if (r < 0)
		return r;
	*ret_n = n;
	return 0;
}

/* IMAGE's snapshots, in *RET_SNAPS and *RET_N (free with rbd_snap_list_end and free). */
static int snap_list(rbd_image_t image, rbd_snap_info_t **ret_snaps, int *ret_n)
{
	rbd_snap_info_t *snaps = NULL;
	int max = 8, r;

	for (;;) {
		free(snaps);
		/* librbd wants room for the end marker too. */
		snaps = calloc((size_t)max + 1, sizeof *snaps);
		if (snaps == NULL)
			return -ENOMEM;
		r = rbd_snap_list(image, snaps, &max);
		if (r != -ERANGE)
			break;
	}
	if (r < 0) {
		free(snaps);
		return r;
	}
	*ret_snaps = snaps;
	*ret_n = r;
	return 0;
}

/* Unprotect and remove IMAGE's snapshot SNAP, each step only if still to do. */
static int snap_drop(rbd_image_t image, const char *snap)
{
	int protected = 0, r;

	r = rbd_snap_is_protected(image, snap, &protected);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	if (protected) {
		r = rbd_snap_unprotect(image, snap);
		/* -EINVAL: unprotected since */
		if (r < 0 && r != -EINVAL)
			return r;
	}
	r = rbd_snap_remove(image, snap);
	return r == -ENOENT ? 0 : r;
}

/* Remove snapshot SNAP of image NAME unless it has children; no image or snapshot is
 * fine. */
static int snap_drop_unused(rados_ioctx_t io, const char *name, const char *snap)
{
	CLEANUP_IMAGE rbd_image_t image = NULL;
	bool exists = false;
	size_t n = 0;
	int r;

	r = rbd_open(io, name, &image, NULL);
	if (r < 0) {
		image = NULL;
		return r == -ENOENT ? 0 : r;
	}
	r = rbd_snap_exists(image, snap, &exists);
	if (r < 0 || !exists)
		return r;
	r = count_children(image, snap, &n);
	if (r < 0 || n > 0)
		return r;
	return snap_drop(image, snap);
}

int rbd_volume_create(rados_ioctx_t io, const char *name, uint64_t size)
{
	CLEANUP_OPTIONS rbd_image_options_t opts = NULL;
	CLEANUP_IMAGE rbd_image_t image = NULL;
	uint64_t have = 0;
	int r;

	if (!tp_name_valid(name))
		return -EINVAL;
	r = new_options(false, &opts);
	if (r < 0)
		return r;
	r = rbd_create4(io, name, size, opts);
	if (r != -EEXIST)
		return r;
	r = rbd_open_read_only(io, name, &image, NULL);
	if (r == -ENOENT) {
		/* A create cut short: the name is taken but no image opens. Finish it off and
		 * make the image again. */
		image = NULL;
		r = rbd_remove(io, name);
		if (r < 0 && r != -ENOENT)
			return r;
		return rbd_create4(io, name, size, opts);
	}
	if (r < 0) {
		image = NULL;
		return r;
	}
	r = rbd_get_size(image, &have);
	if (r < 0)
		return r;
	return have == size ? 0 : -EEXIST;
}

/* Whether image NAME is a clone of ORIGIN's snapshot SNAP: 0 if so, -EEXIST if not. */
static int check_clone(rados_ioctx_t io, const char *name, const char *origin, const char *snap)
{
	CLEANUP_IMAGE rbd_image_t image = NULL;
	char parent[TP_NAME_MAX + 1], parent_snap[SNAP_NAME_MAX];
	int r;

	r = rbd_open_read_only(io, name, &image, NULL);
	if (r < 0) {
		image = NULL;
		return r;
	}
	r = parent_of(io, image, parent, parent_snap);
	if (r < 0)
		return r;
	return strcmp(parent, origin) == 0 && strcmp(parent_snap, snap) == 0 ? 0 : -EEXIST;
}

int rbd_volume_snapshot(rados_ioctx_t io, const char *origin, const char *name)
{
	CLEANUP_OPTIONS rbd_image_options_t opts = NULL;
	CLEANUP_IMAGE rbd_image_t image = NULL;
	char snap[SNAP_NAME_MAX];
	bool exists = false;
	int protected = 0, r;

	if (!tp_name_valid(origin) || !tp_name_valid(name) || strcmp(origin, name) == 0)
		return -EINVAL;
	snap_name(name, snap);

	/* Each step is skipped when a run cut short did it already. */
	r = rbd_open(io, origin, &image, NULL);
	if (r < 0) {
		image = NULL;
		return r;
	}
	r = rbd_snap_exists(image, snap, &exists);
	if (r < 0)
		return r;
	if (!exists && (r = rbd_snap_create(image, snap)) < 0 && r != -EEXIST)
		return r;
	r = rbd_snap_is_protected(image, snap, &protected);
	if (r < 0)
		return r;
	/* -EBUSY: protected since. */
	if (!protected && (r = rbd_snap_protect(image, snap)) < 0 && r != -EBUSY)
		return r;
	rbd_close(TAKE_PTR(image));
	fault_point("rbd-after-snapshot-protect");

	r = new_options(true, &opts);
	if (r < 0)
		return r;
	r = rbd_clone3(io, origin, snap, io, name, opts);
	if (r == -EEXIST)
		r = check_clone(io, name, origin, snap);
	if (r < 0)
		return r;
	fault_point("rbd-after-snapshot-clone");

	/* A clone starts with its parent's image metadata, and so a committed origin's flag:
	 * the child is a new, writable volume. */
	r = rbd_open(io, name, &image, NULL);
	if (r < 0) {
		image = NULL;
		return r;
	}
	r = rbd_metadata_remove(image, RBD_VOLUME_COMMITTED_KEY);
	return r == -ENOENT ? 0 : r;
}

int rbd_volume_commit(rados_ioctx_t io, const char *name)
{
	CLEANUP_IMAGE rbd_image_t image = NULL;
	int r;

	if (!tp_name_valid(name))
		return -EINVAL;
	r = rbd_open(io, name, &image, NULL);
	if (r < 0) {
		image = NULL;
		return r;
	}
	return rbd_metadata_set(image, RBD_VOLUME_COMMITTED_KEY, "1");
}

/* The images of IO's namespace: *RET_N of them into *RET_IMAGES, which the caller gives
 * back with rbd_image_spec_list_cleanup and free. */
static int list_images(rados_ioctx_t io, rbd_image_spec_t **ret_images, size_t *ret_n)
{
	void *images;
	int r = list_all(list_images_of, io, sizeof **ret_images, 32, &images, ret_n);

	if (r >= 0)
		*ret_images = images;
	return r;
}

/* Remove the snapshot "tp.NAME" that a crash left on any image of IO's namespace (one a
 * remove of NAME cut short after the image went, or a snapshot of NAME before its clone
 * was made). */
static int drop_leftover_snaps(rados_ioctx_t io, const char *name)
{
	CLEANUP_FREE rbd_image_spec_t *images = NULL;
	char snap[SNAP_NAME_MAX];
	size_t n;
	int r;

	snap_name(name, snap);
	r = list_images(io, &images, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n && r >= 0; i++)
		if (tp_name_valid(images[i].name))
			r = snap_drop_unused(io, images[i].name, snap);
	rbd_image_spec_list_cleanup(images, n);
	return r < 0 ? r : 0;
}

/* The number of clients that have IMAGE open, this one included. */
static int count_watchers(rbd_image_t image, size_t *ret_n)
{
	CLEANUP_FREE void *watchers = NULL;
	size_t n = 0;
	int r;

	r = list_all(list_watchers_of, image, sizeof(rbd_image_watcher_t), 4, &watchers, &n);
	if (r < 0)
		return r;
	rbd_watchers_list_cleanup(watchers, n);
	*ret_n = n;
	return 0;
}

int rbd_volume_remove(rados_ioctx_t io, const char *name)
{
	CLEANUP_IMAGE rbd_image_t image = NULL;
	rbd_snap_info_t *snaps = NULL;
	char parent[TP_NAME_MAX + 1], parent_snap[SNAP_NAME_MAX], own[SNAP_NAME_MAX];
	int n = 0, r;

	if (!tp_name_valid(name))
		return -EINVAL;
	r = rbd_open(io, name, &image, NULL);
	if (r < 0)
		image = NULL;
	if (r == -ENOENT) {
		/* Gone, or half gone: rbd_remove finishes a remove cut short, and the
		 * snapshot the image was cloned from may still be on its origin. */
		r = rbd_remove(io, name);
		if (r < 0 && r != -ENOENT)
			return r;
		return drop_leftover_snaps(io, name);
	}
	if (r < 0)
		return r;
	r = snap_list(image, &snaps, &n);
	if (r < 0)
		return r;
	/* Nothing changes before every snapshot is known to be ours and childless. */
	for (int i = 0; i < n && r >= 0; i++) {
		size_t children = 0;

		if (strncmp(snaps[i].name, RBD_VOLUME_SNAP_PREFIX,
		            strlen(RBD_VOLUME_SNAP_PREFIX)) != 0)
			r = -ENOTEMPTY;
		else if ((r = count_children(image, snaps[i].name, &children)) >= 0 && children > 0)
			r = -EBUSY;
	}
	/* rbd_remove refuses an image open elsewhere (by an nbdkit, on any host) after the
	 * snapshots would have gone: ask first. */
	if (r >= 0) {
		size_t watchers = 0;

		if ((r = count_watchers(image, &watchers)) >= 0 && watchers > 1)
			r = -EBUSY;
	}
	if (r >= 0)
		r = parent_of(io, image, parent, parent_snap);
	/* The image's own snapshots first: rbd_remove refuses an image that has any, and a
	 * crash between two leaves the image to remove again. */
	for (int i = 0; i < n && r >= 0; i++)
		r = snap_drop(image, snaps[i].name);
	rbd_snap_list_end(snaps);
	free(snaps);
	if (r < 0)
		return r;
	rbd_close(TAKE_PTR(image));
	r = rbd_remove(io, name);
	if (r < 0 && r != -ENOENT)
		return r;
	/* Last the origin's snapshot it was cloned from: it has a child until the image has
	 * gone. A crash before this leaves it to the leftover search of the next run. */
	snap_name(name, own);
	if (parent[0] != '\0' && strcmp(parent_snap, own) == 0)
		return snap_drop_unused(io, parent, own);
	return 0;
}

int rbd_volume_resize(rados_ioctx_t io, const char *name, uint64_t size)
{
	CLEANUP_IMAGE rbd_image_t image = NULL;
	bool done = false;
	uint64_t have = 0;
	int r;

	if (!tp_name_valid(name))
		return -EINVAL;
	r = rbd_open(io, name, &image, NULL);
	if (r < 0) {
		image = NULL;
		return r;
	}
	if ((r = committed(image, &done)) < 0 || (r = rbd_get_size(image, &have)) < 0)
		return r;
	if (done)
		return -EROFS;
	if (size < have)
		return -EINVAL;
	if (size == have)
		return 0;
	return rbd_resize2(image, size, false, NULL, NULL);
}

/* rbd_diff_iterate2's callback: add the extents that hold data. */
static int add_extent(uint64_t offset, size_t len, int exists, void *arg)
{
	uint64_t *bytes = arg;

	(void)offset;
	if (exists)
		*bytes += len;
	return 0;
}

int rbd_volume_usage(rados_ioctx_t io, const char *name, uint64_t *ret_bytes)
{
	CLEANUP_IMAGE rbd_image_t image = NULL;
	uint64_t features = 0, flags = 0, size = 0, bytes = 0;
	bool fast;
	int r;

	if (!tp_name_valid(name))
		return -EINVAL;
	r = rbd_open_read_only(io, name, &image, NULL);
	if (r < 0) {
		image = NULL;
		return r;
	}
	if ((r = rbd_get_features(image, &features)) < 0 ||
	    (r = rbd_get_flags(image, &flags)) < 0 || (r = rbd_get_size(image, &size)) < 0)
		return r;
	/* Whole objects from the object map when it can be trusted; else librbd would read
	 * the same map and find it invalid, and the OSDs' extents are the only answer. */
	fast = (features & RBD_FEATURE_FAST_DIFF) != 0 &&
	       (flags & (RBD_FLAG_OBJECT_MAP_INVALID | RBD_FLAG_FAST_DIFF_INVALID)) == 0;
	r = rbd_diff_iterate2(image, NULL, 0, size, false, fast, add_extent, &bytes);
	if (r < 0)
		return r;
	*ret_bytes = bytes;
	return 0;
}

int rbd_volume_info(rados_ioctx_t io, const char *name, struct rbd_volume *ret_volume)
{
	CLEANUP_IMAGE rbd_image_t image = NULL;
	struct rbd_volume v = {0};
	struct timespec created;
	char snap[SNAP_NAME_MAX];
	int r;

	if (!tp_name_valid(name))
		return -EINVAL;
	r = rbd_open_read_only(io, name, &image, NULL);
	if (r < 0) {
		image = NULL;
		return r;
	}
	strcpy(v.name, name);
	if ((r = rbd_get_size(image, &v.size)) < 0 ||
	    (r = parent_of(io, image, v.parent, snap)) < 0 ||
	    (r = committed(image, &v.committed)) < 0 ||
	    (r = rbd_get_create_timestamp(image, &created)) < 0)
		return r;
	v.created = created.tv_sec;
	*ret_volume = v;
	return 0;
}

int rbd_volume_list(rados_ioctx_t io, struct rbd_volume **ret_volumes, size_t *ret_n)
{
	CLEANUP_FREE rbd_image_spec_t *images = NULL;
	CLEANUP_FREE struct rbd_volume *volumes = NULL;
	size_t max, n = 0;
	int r;

	r = list_images(io, &images, &max);
	if (r < 0)
		return r;
	volumes = calloc(max > 0 ? max : 1, sizeof *volumes);
	if (volumes == NULL)
		r = -ENOMEM;
	for (size_t i = 0; i < max && r >= 0; i++) {
		if (!tp_name_valid(images[i].name))
			continue;
		r = rbd_volume_info(io, images[i].name, &volumes[n]);
		if (r >= 0)
			n++;
		else if (r == -ENOENT)
			r = 0; /* removed since the listing */
	}
	rbd_image_spec_list_cleanup(images, max);
	if (r < 0)
		return r;
	*ret_volumes = TAKE_PTR(volumes);
	*ret_n = n;
	return 0;
}
