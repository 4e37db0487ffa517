/* bench/bench-rbd-change ROUNDS: the cost of the RBD pool's change protocol (issue 24)
 * against what it is made of, on the cluster bench/host-rbd-meta.sh started (CEPH_CONF,
 * CEPH_TEST_POOL, its admin keyring in CEPH_TEST_DIR). Three ways to make a volume, take
 * a snapshot of it (a child) and remove both, taking turns in each round in a rotated
 * order, in namespace "bench":
 *
 *   librbd    the bare calls: rbd_create4; rbd_snap_create, rbd_snap_protect, rbd_clone3;
 *             rbd_remove, rbd_snap_unprotect, rbd_snap_remove
 *   volumes   daemon/rbd-volumes.c (idempotent steps: existence checks, the committed flag)
 *   protocol  daemon/rbd-change.c (volumes, plus the intent record in the shared metadata:
 *             taken, marked, removed)
 *
 * Writes "WAY<TAB>OP<TAB>ROUND<TAB>MS" lines (OP create, snapshot, remove: the child's
 * removal, the origin's snapshot with it) to stdout. Not a test. */
#include <errno.h>
#include <rados/librados.h>
#include <rbd/features.h>
#include <rbd/librbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../daemon/rbd-change.h"
#include "../daemon/rbd-meta.h"
#include "../daemon/rbd-volumes.h"

#define SIZE (UINT64_C(1) << 30)
#define NS   "bench"

enum way { LIBRBD, VOLUMES, PROTOCOL, WAYS };
static const char *const way_names[] = {"librbd", "volumes", "protocol"};

static rados_ioctx_t io;
static struct rbd_change_ctx ctx;

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void check(int r, const char *what)
{
	if (r < 0) {
		fprintf(stderr, "bench-rbd-change: %s: %s\n", what, strerror(-r));
		exit(1);
	}
}

/* The bare calls, with the features thinproxy's volumes have. */
static int bare_create(const char *name)
{
	rbd_image_options_t opts;
	int r;

	rbd_image_options_create(&opts);
	rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_FORMAT, 2);
	rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_FEATURES,
	                             RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK |
	                                 RBD_FEATURE_OBJECT_MAP | RBD_FEATURE_FAST_DIFF |
	                                 RBD_FEATURE_DEEP_FLATTEN);
	r = rbd_create4(io, name, SIZE, opts);
	rbd_image_options_destroy(opts);
	return r;
}

static int bare_snapshot(const char *origin, const char *name)
{
	rbd_image_options_t opts;
	rbd_image_t image;
	char snap[80];
	int r;

	snprintf(snap, sizeof snap, "tp.%s", name);
	r = rbd_open(io, origin, &image, NULL);
	if (r < 0)
		return r;
	r = rbd_snap_create(image, snap);
	if (r == 0)
		r = rbd_snap_protect(image, snap);
	rbd_close(image);
	if (r < 0)
		return r;
	rbd_image_options_create(&opts);
	rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_CLONE_FORMAT, 2);
	r = rbd_clone3(io, origin, snap, io, name, opts);
	rbd_image_options_destroy(opts);
	return r;
}

static int bare_remove(const char *origin, const char *name)
{
	rbd_image_t image;
	char snap[80];
	int r;

	snprintf(snap, sizeof snap, "tp.%s", name);
	r = rbd_remove(io, name);
	if (r < 0)
		return r;
	r = rbd_open(io, origin, &image, NULL);
	if (r < 0)
		return r;
	r = rbd_snap_unprotect(image, snap);
	if (r == 0)
		r = rbd_snap_remove(image, snap);
	rbd_close(image);
	return r;
}

/* One round of WAY on volumes NAME and NAME-c: create, snapshot, remove the child (each
 * timed), then the origin (not timed). */
static void round_of(enum way w, unsigned round)
{
	char origin[32], child[32];
	double t;
	int r;

	snprintf(origin, sizeof origin, "%s-%u", way_names[w], round);
	snprintf(child, sizeof child, "%s-%u-c", way_names[w], round);

	t = now_ms();
	r = w == LIBRBD    ? bare_create(origin)
	    : w == VOLUMES ? rbd_volume_create(io, origin, SIZE)
	                   : rbd_change_create(&ctx, NS, origin, SIZE);
	check(r, "create");
	printf("%s\tcreate\t%u\t%.3f\n", way_names[w], round, now_ms() - t);

	t = now_ms();
	r = w == LIBRBD    ? bare_snapshot(origin, child)
	    : w == VOLUMES ? rbd_volume_snapshot(io, origin, child)
	                   : rbd_change_snapshot(&ctx, NS, origin, child);
	check(r, "snapshot");
	printf("%s\tsnapshot\t%u\t%.3f\n", way_names[w], round, now_ms() - t);

	t = now_ms();
	r = w == LIBRBD    ? bare_remove(origin, child)
	    : w == VOLUMES ? rbd_volume_remove(io, child)
	                   : rbd_change_remove(&ctx, NS, child);
	check(r, "remove");
	printf("%s\tremove\t%u\t%.3f\n", way_names[w], round, now_ms() - t);

	check(rbd_volume_remove(io, origin), "remove the origin");
	/* rbd_change_* point the context at the tenant's namespace; so does every way. */
	rados_ioctx_set_namespace(io, NS);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	const char *conf = getenv("CEPH_CONF"), *pool = getenv("CEPH_TEST_POOL");
	const char *dir = getenv("CEPH_TEST_DIR");
	unsigned rounds = argc > 1 ? (unsigned)atoi(argv[1]) : 20;
	struct rbd_meta *meta;
	char keyring[4096];
	rados_t cluster;

	if (conf == NULL || pool == NULL || dir == NULL) {
		fprintf(stderr, "bench-rbd-change: run by bench/host-rbd-meta.sh\n");
		return 2;
	}
	snprintf(keyring, sizeof keyring, "%s/admin.keyring", dir);
	check(rados_create2(&cluster, "ceph", "client.admin", 0), "rados_create2");
	check(rados_conf_read_file(cluster, conf), "read the conf");
	check(rados_conf_set(cluster, "keyring", keyring), "keyring");
	check(rados_connect(cluster), "connect");
	check(rados_ioctx_create(cluster, pool, &io), "ioctx");
	check(rbd_namespace_create(io, NS), "namespace");
	rados_ioctx_set_namespace(io, NS);
	check(rbd_meta_connect(conf, "client.admin", keyring, pool, &meta), "metadata");
	ctx = (struct rbd_change_ctx){.meta = meta, .io = io, .host = "bench"};

	for (unsigned round = 0; round < rounds; round++)
		for (unsigned k = 0; k < WAYS; k++)
			round_of((enum way)((round + k) % WAYS), round);

	rbd_meta_close(meta);
	rados_ioctx_destroy(io);
	rados_shutdown(cluster);
	return 0;
}
