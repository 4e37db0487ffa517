/* daemon/rbd-volumes.c against a real one-node cluster (tests/ceph/cluster.sh), which
 * tests/ceph/test-rbd-volumes.sh starts and names in the environment: CEPH_CONF,
 * CEPH_TEST_DIR (holds admin.keyring) and CEPH_TEST_POOL. Each test works as client.admin
 * in a RADOS namespace of its own, so the order does not matter. A crash is simulated by
 * doing a prefix of an operation's librbd steps by hand, then the whole operation. */
#include <check.h>
#include <errno.h>
#include <rados/librados.h>
#include <rbd/features.h>
#include <rbd/librbd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../daemon/log.h"
#include "../../daemon/rbd-volumes.h"
#include "ceph-harness.h"
#include "tp-cleanup.h"

#define MIB  (UINT64_C(1) << 20)
#define SIZE (64 * MIB)
#define FEATURES_ALL                                                                  \
	(RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK | RBD_FEATURE_OBJECT_MAP | \
	 RBD_FEATURE_FAST_DIFF | RBD_FEATURE_DEEP_FLATTEN)

static rados_t cluster;

/* Connect as client.admin and make namespace NS; an I/O context in it. */
static rados_ioctx_t tenant_io(const char *ns)
{
	rados_ioctx_t io;
	int r;

	cluster = ceph_harness_admin();
	io = ceph_harness_ioctx(cluster, "");
	r = rbd_namespace_create(io, ns);
	ck_assert_msg(r == 0, "namespace %s: %s", ns, strerror(-r));
	rados_ioctx_set_namespace(io, ns);
	return io;
}

static void done(rados_ioctx_t io)
{
	rados_ioctx_destroy(io);
	rados_shutdown(cluster);
}

static rbd_image_t open_image(rados_ioctx_t io, const char *name)
{
	rbd_image_t image;
	int r = rbd_open(io, name, &image, NULL);

	ck_assert_msg(r == 0, "open %s: %s", name, strerror(-r));
	return image;
}

/* The snapshots of image NAME, as "a,b," (sorted as librbd lists them). */
static void snaps_of(rados_ioctx_t io, const char *name, char *buf, size_t size)
{
	rbd_image_t image = open_image(io, name);
	rbd_snap_info_t snaps[16];
	int max = 16, n;

	n = rbd_snap_list(image, snaps, &max);
	ck_assert_int_ge(n, 0);
	buf[0] = '\0';
	for (int i = 0; i < n; i++) {
		strncat(buf, snaps[i].name, size - strlen(buf) - 1);
		strncat(buf, ",", size - strlen(buf) - 1);
	}
	rbd_snap_list_end(snaps);
	ck_assert_int_eq(rbd_close(image), 0);
}

static int is_protected(rados_ioctx_t io, const char *name, const char *snap)
{
	rbd_image_t image = open_image(io, name);
	int protected = -1;

	ck_assert_int_eq(rbd_snap_is_protected(image, snap, &protected), 0);
	ck_assert_int_eq(rbd_close(image), 0);
	return protected;
}

static bool exists(rados_ioctx_t io, const char *name)
{
	rbd_image_t image;
	int r = rbd_open_read_only(io, name, &image, NULL);

	ck_assert(r == 0 || r == -ENOENT);
	if (r == 0)
		rbd_close(image);
	return r == 0;
}

/* Check that CHILD is the finished snapshot of ORIGIN: a protected "tp.CHILD", CHILD a
 * clone of it, not committed, holding 'a' (ORIGIN's data before the snapshot). */
static void check_snapshot(rados_ioctx_t io, const char *origin, const char *child)
{
	struct rbd_volume v;
	char snap[80];

	snprintf(snap, sizeof snap, "tp.%s", child);
	ck_assert_int_eq(is_protected(io, origin, snap), 1);
	ck_assert_int_eq(rbd_volume_info(io, child, &v), 0);
	ck_assert_str_eq(v.parent, origin);
	ck_assert(!v.committed);
	ck_assert_uint_eq(v.size, SIZE);
	ck_assert_int_eq(ceph_harness_holds(io, child, 0, 'a'), 1);
}

START_TEST(create_makes_image_of_size_with_all_features)
{
	rados_ioctx_t io = tenant_io("create");
	struct rbd_volume v;
	rbd_image_t image;
	uint64_t features = 0;
	uint8_t old = 1;
	int64_t before = time(NULL);

	ck_assert_int_eq(rbd_volume_create(io, "vol", SIZE), 0);
	ck_assert_int_eq(rbd_volume_info(io, "vol", &v), 0);
	ck_assert_str_eq(v.name, "vol");
	ck_assert_int_ge(v.created, before - 1);
	ck_assert_int_le(v.created, time(NULL) + 1);
	ck_assert_uint_eq(v.size, SIZE);
	ck_assert_str_eq(v.parent, "");
	ck_assert(!v.committed);
	image = open_image(io, "vol");
	ck_assert_int_eq(rbd_get_features(image, &features), 0);
	ck_assert_uint_eq(features, FEATURES_ALL);
	ck_assert_int_eq(rbd_get_old_format(image, &old), 0);
	ck_assert_uint_eq(old, 0);
	rbd_close(image);
	done(io);
}
END_TEST

START_TEST(create_again_same_size_is_success_other_size_eexist)
{
	rados_ioctx_t io = tenant_io("create-again");
	struct rbd_volume v;

	ck_assert_int_eq(rbd_volume_create(io, "vol", SIZE), 0);
	ceph_harness_fill(io, "vol", 0, 4096, 'a');
	ck_assert_int_eq(rbd_volume_create(io, "vol", SIZE), 0);
	ck_assert_int_eq(rbd_volume_create(io, "vol", 2 * SIZE), -EEXIST);
	ck_assert_int_eq(rbd_volume_info(io, "vol", &v), 0);
	ck_assert_uint_eq(v.size, SIZE);
	ck_assert_int_eq(ceph_harness_holds(io, "vol", 0, 'a'), 1);
	done(io);
}
END_TEST

START_TEST(snapshot_child_reads_origin_as_of_snapshot)
{
	rados_ioctx_t io = tenant_io("snapshot");

	ck_assert_int_eq(rbd_volume_create(io, "base", SIZE), 0);
	ceph_harness_fill(io, "base", 0, 4096, 'a');
	ck_assert_int_eq(rbd_volume_snapshot(io, "base", "child"), 0);
	ceph_harness_fill(io, "base", 0, 4096, 'b');
	check_snapshot(io, "base", "child");
	/* and the child's writes are its own */
	ceph_harness_fill(io, "child", 0, 4096, 'c');
	ck_assert_int_eq(ceph_harness_holds(io, "child", 0, 'c'), 1);
	ck_assert_int_eq(ceph_harness_holds(io, "base", 0, 'b'), 1);
	/* a grandchild of the child */
	ck_assert_int_eq(rbd_volume_snapshot(io, "child", "grand"), 0);
	ck_assert_int_eq(ceph_harness_holds(io, "grand", 0, 'c'), 1);
	/* a second run is a no-op; a name taken by an unrelated image is -EEXIST */
	ck_assert_int_eq(rbd_volume_snapshot(io, "base", "child"), 0);
	ck_assert_int_eq(rbd_volume_create(io, "other", SIZE), 0);
	ck_assert_int_eq(rbd_volume_snapshot(io, "base", "other"), -EEXIST);
	ck_assert_int_eq(rbd_volume_snapshot(io, "missing", "new"), -ENOENT);
	ck_assert(!exists(io, "new"));
	done(io);
}
END_TEST

START_TEST(snapshot_is_protected_and_child_a_format_2_clone)
{
	rados_ioctx_t io = tenant_io("protected");
	rbd_image_t image;
	rbd_linked_image_spec_t parent;
	rbd_snap_spec_t snap;
	uint64_t features = 0, op_features = 0;

	ck_assert_int_eq(rbd_volume_create(io, "base", SIZE), 0);
	ck_assert_int_eq(rbd_volume_snapshot(io, "base", "child"), 0);
	ck_assert_int_eq(is_protected(io, "base", "tp.child"), 1);
	image = open_image(io, "child");
	ck_assert_int_eq(rbd_get_parent(image, &parent, &snap), 0);
	ck_assert_str_eq(parent.image_name, "base");
	ck_assert_str_eq(parent.pool_namespace, "protected");
	ck_assert_str_eq(snap.name, "tp.child");
	ck_assert_int_eq(rbd_get_features(image, &features), 0);
	ck_assert_uint_eq(features & FEATURES_ALL, FEATURES_ALL);
	/* clone format 2: the child says so in its operation features */
	ck_assert_int_eq(rbd_get_op_features(image, &op_features), 0);
	ck_assert(op_features & RBD_OPERATION_FEATURE_CLONE_CHILD);
	rbd_linked_image_spec_cleanup(&parent);
	rbd_snap_spec_cleanup(&snap);
	rbd_close(image);
	done(io);
}
END_TEST

/* The librbd steps of rbd_volume_snapshot(ORIGIN, CHILD), the first STEPS of them. */
static void snapshot_steps(rados_ioctx_t io, const char *origin, const char *child, int steps)
{
	rbd_image_options_t opts;
	rbd_image_t image = open_image(io, origin);
	char snap[80];

	snprintf(snap, sizeof snap, "tp.%s", child);
	if (steps >= 1)
		ck_assert_int_eq(rbd_snap_create(image, snap), 0);
	if (steps >= 2)
		ck_assert_int_eq(rbd_snap_protect(image, snap), 0);
	rbd_close(image);
	if (steps >= 3) {
		rbd_image_options_create(&opts);
		ck_assert_int_eq(rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_FORMAT, 2), 0);
		ck_assert_int_eq(
		    rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_FEATURES, FEATURES_ALL), 0);
		ck_assert_int_eq(
		    rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_CLONE_FORMAT, 2), 0);
		ck_assert_int_eq(rbd_clone3(io, origin, snap, io, child, opts), 0);
		rbd_image_options_destroy(opts);
	}
}

START_TEST(snapshot_after_crash_at_each_step_ends_the_same)
{
	rados_ioctx_t io = tenant_io("snapshot-crash");
	char child[16];
	struct rbd_volume v;

	/* A committed origin: a clone copies its metadata, which snapshot() must clear even
	 * when the crash came after the clone. */
	ck_assert_int_eq(rbd_volume_create(io, "base", SIZE), 0);
	ceph_harness_fill(io, "base", 0, 4096, 'a');
	ck_assert_int_eq(rbd_volume_commit(io, "base"), 0);
	for (int steps = 0; steps <= 3; steps++) {
		snprintf(child, sizeof child, "child%d", steps);
		snapshot_steps(io, "base", child, steps);
		if (steps == 3) {
			/* librbd copies the parent's metadata into a clone */
			ck_assert_int_eq(rbd_volume_info(io, child, &v), 0);
			ck_assert(v.committed);
		}
		ck_assert_int_eq(rbd_volume_snapshot(io, "base", child), 0);
		check_snapshot(io, "base", child);
		ck_assert_int_eq(rbd_volume_snapshot(io, "base", child), 0);
		check_snapshot(io, "base", child);
	}
	ck_assert_int_eq(rbd_volume_info(io, "base", &v), 0);
	ck_assert(v.committed);
	done(io);
}
END_TEST

START_TEST(remove_refuses_ebusy_with_children_and_loses_nothing)
{
	rados_ioctx_t io = tenant_io("remove-busy");
	char snaps[256];

	ck_assert_int_eq(rbd_volume_create(io, "base", SIZE), 0);
	ceph_harness_fill(io, "base", 0, 4096, 'a');
	ck_assert_int_eq(rbd_volume_snapshot(io, "base", "child"), 0);
	ck_assert_int_eq(rbd_volume_snapshot(io, "child", "grand"), 0);
	ck_assert_int_eq(rbd_volume_remove(io, "base"), -EBUSY);
	ck_assert_int_eq(rbd_volume_remove(io, "child"), -EBUSY);
	ck_assert_int_eq(ceph_harness_holds(io, "base", 0, 'a'), 1);
	ck_assert_int_eq(ceph_harness_holds(io, "grand", 0, 'a'), 1);
	check_snapshot(io, "base", "child");
	snaps_of(io, "child", snaps, sizeof snaps);
	ck_assert_str_eq(snaps, "tp.grand,");
	ck_assert_int_eq(is_protected(io, "child", "tp.grand"), 1);
	done(io);
}
END_TEST

START_TEST(remove_child_then_parent_leaves_no_snapshots)
{
	rados_ioctx_t io = tenant_io("remove");
	struct rbd_volume *list = NULL;
	char snaps[256];
	size_t n = 1;

	ck_assert_int_eq(rbd_volume_create(io, "base", SIZE), 0);
	ck_assert_int_eq(rbd_volume_snapshot(io, "base", "one"), 0);
	ck_assert_int_eq(rbd_volume_snapshot(io, "base", "two"), 0);
	ck_assert_int_eq(rbd_volume_remove(io, "one"), 0);
	ck_assert(!exists(io, "one"));
	/* only the removed child's snapshot went */
	snaps_of(io, "base", snaps, sizeof snaps);
	ck_assert_str_eq(snaps, "tp.two,");
	ck_assert_int_eq(rbd_volume_remove(io, "base"), -EBUSY);
	ck_assert_int_eq(rbd_volume_remove(io, "two"), 0);
	snaps_of(io, "base", snaps, sizeof snaps);
	ck_assert_str_eq(snaps, "");
	ck_assert_int_eq(rbd_volume_remove(io, "base"), 0);
	ck_assert_int_eq(rbd_volume_remove(io, "base"), 0);
	ck_assert_int_eq(rbd_volume_remove(io, "two"), 0);
	ck_assert_int_eq(rbd_volume_list(io, &list, &n), 0);
	ck_assert_uint_eq(n, 0);
	free(list);
	done(io);
}
END_TEST

/* The librbd steps of rbd_volume_remove(CHILD), a clone of ORIGIN that has a childless
 * protected snapshot "tp.gone" of its own, the first STEPS of them. */
static void remove_steps(rados_ioctx_t io, const char *origin, const char *child, int steps)
{
	rbd_image_t image = open_image(io, child);
	char snap[80];

	if (steps >= 1)
		ck_assert_int_eq(rbd_snap_unprotect(image, "tp.gone"), 0);
	if (steps >= 2)
		ck_assert_int_eq(rbd_snap_remove(image, "tp.gone"), 0);
	rbd_close(image);
	if (steps >= 3)
		ck_assert_int_eq(rbd_remove(io, child), 0);
	snprintf(snap, sizeof snap, "tp.%s", child);
	image = open_image(io, origin);
	if (steps >= 4)
		ck_assert_int_eq(rbd_snap_unprotect(image, snap), 0);
	rbd_close(image);
}

START_TEST(remove_after_crash_at_each_step_finishes)
{
	rados_ioctx_t io = tenant_io("remove-crash");
	char child[16], snaps[256];
	rbd_image_t image;

	ck_assert_int_eq(rbd_volume_create(io, "base", SIZE), 0);
	ceph_harness_fill(io, "base", 0, 4096, 'a');
	ck_assert_int_eq(rbd_volume_create(io, "bystander", SIZE), 0);
	for (int steps = 0; steps <= 4; steps++) {
		snprintf(child, sizeof child, "child%d", steps);
		ck_assert_int_eq(rbd_volume_snapshot(io, "base", child), 0);
		image = open_image(io, child);
		ck_assert_int_eq(rbd_snap_create(image, "tp.gone"), 0);
		ck_assert_int_eq(rbd_snap_protect(image, "tp.gone"), 0);
		rbd_close(image);
		remove_steps(io, "base", child, steps);
		ck_assert_int_eq(rbd_volume_remove(io, child), 0);
		ck_assert(!exists(io, child));
		snaps_of(io, "base", snaps, sizeof snaps);
		ck_assert_str_eq(snaps, "");
		ck_assert_int_eq(ceph_harness_holds(io, "base", 0, 'a'), 1);
		ck_assert_int_eq(rbd_volume_remove(io, child), 0);
	}
	/* a snapshot() cut short before its clone, undone by remove() */
	snapshot_steps(io, "base", "never", 2);
	ck_assert_int_eq(rbd_volume_remove(io, "never"), 0);
	snaps_of(io, "base", snaps, sizeof snaps);
	ck_assert_str_eq(snaps, "");
	ck_assert(exists(io, "bystander"));
	done(io);
}
END_TEST

START_TEST(remove_refuses_a_snapshot_not_ours)
{
	rados_ioctx_t io = tenant_io("remove-foreign");
	rbd_image_t image;

	ck_assert_int_eq(rbd_volume_create(io, "vol", SIZE), 0);
	image = open_image(io, "vol");
	ck_assert_int_eq(rbd_snap_create(image, "backup"), 0);
	rbd_close(image);
	ck_assert_int_eq(rbd_volume_remove(io, "vol"), -ENOTEMPTY);
	ck_assert(exists(io, "vol"));
	done(io);
}
END_TEST

START_TEST(commit_sets_flag_twice_fine_and_refuses_resize)
{
	rados_ioctx_t io = tenant_io("commit");
	struct rbd_volume v;
	rbd_image_t image;
	char value[8];
	size_t len = sizeof value;

	ck_assert_int_eq(rbd_volume_create(io, "vol", SIZE), 0);
	ck_assert_int_eq(rbd_volume_commit(io, "vol"), 0);
	ck_assert_int_eq(rbd_volume_commit(io, "vol"), 0);
	image = open_image(io, "vol");
	ck_assert_int_eq(rbd_metadata_get(image, "thinproxy.committed", value, &len), 0);
	ck_assert_str_eq(value, "1");
	rbd_close(image);
	ck_assert_int_eq(rbd_volume_info(io, "vol", &v), 0);
	ck_assert(v.committed);
	ck_assert_int_eq(rbd_volume_resize(io, "vol", 2 * SIZE), -EROFS);
	ck_assert_int_eq(rbd_volume_commit(io, "missing"), -ENOENT);
	done(io);
}
END_TEST

START_TEST(resize_grows_only)
{
	rados_ioctx_t io = tenant_io("resize");
	struct rbd_volume v;

	ck_assert_int_eq(rbd_volume_create(io, "vol", SIZE), 0);
	ceph_harness_fill(io, "vol", SIZE - 4096, 4096, 'z');
	ck_assert_int_eq(rbd_volume_resize(io, "vol", 2 * SIZE), 0);
	ck_assert_int_eq(rbd_volume_info(io, "vol", &v), 0);
	ck_assert_uint_eq(v.size, 2 * SIZE);
	ck_assert_int_eq(rbd_volume_resize(io, "vol", 2 * SIZE), 0);
	ck_assert_int_eq(rbd_volume_resize(io, "vol", SIZE), -EINVAL);
	ck_assert_int_eq(rbd_volume_info(io, "vol", &v), 0);
	ck_assert_uint_eq(v.size, 2 * SIZE);
	ck_assert_int_eq(ceph_harness_holds(io, "vol", SIZE - 4096, 'z'), 1);
	ceph_harness_fill(io, "vol", 2 * SIZE - 4096, 4096, 'y');
	ck_assert_int_eq(ceph_harness_holds(io, "vol", 2 * SIZE - 4096, 'y'), 1);
	ck_assert_int_eq(rbd_volume_resize(io, "missing", SIZE), -ENOENT);
	done(io);
}
END_TEST

START_TEST(usage_grows_with_data_and_counts_a_clones_own_only)
{
	rados_ioctx_t io = tenant_io("usage");
	uint64_t base = 1, child = 1, plain = 0;
	int order = 0;

	ck_assert_int_eq(rbd_volume_create(io, "base", SIZE), 0);
	ck_assert_int_eq(rbd_volume_usage(io, "base", &base), 0);
	ck_assert_uint_eq(base, 0);
	/* three 4 MiB objects touched: with fast-diff, whole objects are counted */
	ceph_harness_fill(io, "base", 0, MIB, 'a');
	ceph_harness_fill(io, "base", 16 * MIB, 4096, 'a');
	ceph_harness_fill(io, "base", 32 * MIB + 4096, 4096, 'a');
	ck_assert_int_eq(rbd_volume_usage(io, "base", &base), 0);
	ck_assert_uint_eq(base, 12 * MIB);

	ck_assert_int_eq(rbd_volume_snapshot(io, "base", "child"), 0);
	ck_assert_int_eq(rbd_volume_usage(io, "child", &child), 0);
	ck_assert_uint_eq(child, 0);
	/* one write into an object of the parent copies that object up, and only it */
	ceph_harness_fill(io, "child", 16 * MIB, 4096, 'c');
	ck_assert_int_eq(rbd_volume_usage(io, "child", &child), 0);
	ck_assert_uint_eq(child, 4 * MIB);
	ck_assert_int_eq(rbd_volume_usage(io, "base", &base), 0);
	ck_assert_uint_eq(base, 12 * MIB);

	/* without fast-diff (an image made by hand, layering only): the OSDs' extents */
	ck_assert_int_eq(rbd_create2(io, "plain", SIZE, RBD_FEATURE_LAYERING, &order), 0);
	ceph_harness_fill(io, "plain", 0, 8192, 'p');
	ck_assert_int_eq(rbd_volume_usage(io, "plain", &plain), 0);
	ck_assert_uint_ge(plain, 8192);
	ck_assert_uint_lt(plain, 4 * MIB);
	ck_assert_int_eq(rbd_volume_usage(io, "missing", &plain), -ENOENT);
	done(io);
}
END_TEST

START_TEST(list_shows_sizes_parents_and_committed)
{
	rados_ioctx_t io = tenant_io("list");
	struct rbd_volume *list = NULL;
	size_t n = 0;
	int order = 0, seen = 0;

	ck_assert_int_eq(rbd_volume_create(io, "base", SIZE), 0);
	ck_assert_int_eq(rbd_volume_commit(io, "base"), 0);
	ck_assert_int_eq(rbd_volume_snapshot(io, "base", "child"), 0);
	ck_assert_int_eq(rbd_volume_create(io, "big", 2 * SIZE), 0);
	/* not a volume name: not ours, left out */
	ck_assert_int_eq(rbd_create(io, "Foreign", SIZE, &order), 0);
	ck_assert_int_eq(rbd_volume_list(io, &list, &n), 0);
	ck_assert_uint_eq(n, 3);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(list[i].name, "base") == 0) {
			ck_assert_str_eq(list[i].parent, "");
			ck_assert(list[i].committed);
			ck_assert_uint_eq(list[i].size, SIZE);
			seen |= 1;
		} else if (strcmp(list[i].name, "child") == 0) {
			ck_assert_str_eq(list[i].parent, "base");
			ck_assert(!list[i].committed);
			ck_assert_uint_eq(list[i].size, SIZE);
			seen |= 2;
		} else {
			ck_assert_str_eq(list[i].name, "big");
			ck_assert_str_eq(list[i].parent, "");
			ck_assert(!list[i].committed);
			ck_assert_uint_eq(list[i].size, 2 * SIZE);
			seen |= 4;
		}
	}
	ck_assert_int_eq(seen, 7);
	free(list);
	done(io);
}
END_TEST

START_TEST(changes_while_another_client_holds_the_lock)
{
	rados_ioctx_t io = tenant_io("locked");
	rbd_image_t writer;
	struct rbd_volume v;
	char buf[4096], snaps[256];

	/* An nbdkit elsewhere writing: its handle holds the image's exclusive lock, taken by
	 * hand as the plugin does (nbdkit-plugin/rbd-io.c), so that librbd never hands it
	 * over; librbd sends snapshot, metadata and resize requests to it instead. */
	ck_assert_int_eq(rbd_volume_create(io, "vol", SIZE), 0);
	writer = open_image(io, "vol");
	ck_assert_int_eq(rbd_lock_acquire(writer, RBD_LOCK_MODE_EXCLUSIVE), 0);
	memset(buf, 'a', sizeof buf);
	ck_assert_int_eq(rbd_write(writer, 0, sizeof buf, buf), (ssize_t)sizeof buf);
	ck_assert_int_eq(rbd_flush(writer), 0);
	ck_assert_int_eq(rbd_volume_snapshot(io, "vol", "child"), 0);
	check_snapshot(io, "vol", "child");
	ck_assert_int_eq(rbd_volume_resize(io, "vol", 2 * SIZE), 0);
	ck_assert_int_eq(rbd_volume_info(io, "vol", &v), 0);
	ck_assert_uint_eq(v.size, 2 * SIZE);
	ck_assert_int_eq(rbd_volume_commit(io, "vol"), 0);
	/* open elsewhere: remove refuses before anything goes, even a snapshot of its own */
	ck_assert_int_eq(rbd_volume_remove(io, "child"), 0);
	ck_assert_int_eq(rbd_snap_create(writer, "tp.left"), 0);
	ck_assert_int_eq(rbd_volume_remove(io, "vol"), -EBUSY);
	snaps_of(io, "vol", snaps, sizeof snaps);
	ck_assert_str_eq(snaps, "tp.left,");
	ck_assert_int_eq(rbd_close(writer), 0);
	ck_assert_int_eq(ceph_harness_holds(io, "vol", 0, 'a'), 1);
	ck_assert_int_eq(rbd_volume_remove(io, "vol"), 0);
	ck_assert(!exists(io, "vol"));
	done(io);
}
END_TEST

START_TEST(bad_names_einval_before_ceph)
{
	static const char *const bad[] = {
	    "",     "Upper", "-dash",
	    ".dot", "a/b",   "a b",
	    "a@b",  "a\nb",  "0123456789012345678901234567890123456789012345678901234567890123",
	};
	/* No I/O context at all: a name that reached librbd would crash the test. */
	rados_ioctx_t none = NULL;
	struct rbd_volume v;
	uint64_t bytes = 7;

	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		ck_assert_int_eq(rbd_volume_create(none, bad[i], SIZE), -EINVAL);
		ck_assert_int_eq(rbd_volume_snapshot(none, bad[i], "fine"), -EINVAL);
		ck_assert_int_eq(rbd_volume_snapshot(none, "fine", bad[i]), -EINVAL);
		ck_assert_int_eq(rbd_volume_commit(none, bad[i]), -EINVAL);
		ck_assert_int_eq(rbd_volume_remove(none, bad[i]), -EINVAL);
		ck_assert_int_eq(rbd_volume_resize(none, bad[i], SIZE), -EINVAL);
		ck_assert_int_eq(rbd_volume_usage(none, bad[i], &bytes), -EINVAL);
		ck_assert_int_eq(rbd_volume_info(none, bad[i], &v), -EINVAL);
	}
	ck_assert_int_eq(rbd_volume_create(none, NULL, SIZE), -EINVAL);
	ck_assert_int_eq(rbd_volume_snapshot(none, "same", "same"), -EINVAL);
	ck_assert_uint_eq(bytes, 7);
}
END_TEST

int main(void)
{
	const TTest *tests[] = {
	    create_makes_image_of_size_with_all_features,
	    create_again_same_size_is_success_other_size_eexist,
	    snapshot_child_reads_origin_as_of_snapshot,
	    snapshot_is_protected_and_child_a_format_2_clone,
	    snapshot_after_crash_at_each_step_ends_the_same,
	    remove_refuses_ebusy_with_children_and_loses_nothing,
	    remove_child_then_parent_leaves_no_snapshots,
	    remove_after_crash_at_each_step_finishes,
	    remove_refuses_a_snapshot_not_ours,
	    commit_sets_flag_twice_fine_and_refuses_resize,
	    resize_grows_only,
	    usage_grows_with_data_and_counts_a_clones_own_only,
	    list_shows_sizes_parents_and_committed,
	    changes_while_another_client_holds_the_lock,
	    bad_names_einval_before_ceph,
	};

	log_init("test-rbd-volumes", false, LOG_DEBUG);
	return ceph_harness_run("rbd-volumes", tests, ARRAY_SIZE(tests));
}
