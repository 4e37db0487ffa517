/* Tests for daemon/rbd-change.c, the RBD pool's change protocol, against a real one-node
 * Ceph cluster, which tests/ceph/test-rbd-change.sh starts and describes in the
 * environment: CEPH_CONF, CEPH_TEST_DIR (with admin.keyring) and CEPH_TEST_POOL.
 *
 * A "host" is a thinproxyd's view of the pool: a connection of its own, its I/O context
 * and its metadata connection, under a host name. The crash tests kill a forked host at
 * each of the protocol's fault points (THINPROXY_FAULT, as kill -9 would), then let
 * another host and the crashed one's next start look at what it left. Each test works in
 * a tenant namespace of its own. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../daemon/rbd-change.h"
#include "../../daemon/rbd-meta.h"
#include "../../daemon/rbd-volumes.h"
#include "ceph-harness.h"
#include "tp-cleanup.h"

#define MiB  (UINT64_C(1) << 20)
#define SIZE (64 * MiB)

struct host {
	rados_t cluster;
	rados_ioctx_t io;
	struct rbd_meta *meta;
	struct rbd_change_ctx c;
};

/* Connect host NAME as client.admin: 0, or -errno (for a forked host, which must not
 * use the test's assertions). */
static int host_connect(struct host *h, const char *name)
{
	int r;

	*h = (struct host){0};
	r = ceph_harness_connect("client.admin", ceph_cluster.admin_keyring, &h->cluster);
	if (r == 0)
		r = rados_ioctx_create(h->cluster, ceph_cluster.pool, &h->io);
	if (r == 0)
		r = rbd_meta_connect(ceph_cluster.conf, "client.admin", ceph_cluster.admin_keyring,
		                     ceph_cluster.pool, &h->meta);
	h->c = (struct rbd_change_ctx){.meta = h->meta, .io = h->io, .host = name};
	return r;
}

static void host_up(struct host *h, const char *name)
{
	int r = host_connect(h, name);

	ck_assert_msg(r == 0, "connect host %s: %s", name, strerror(-r));
}

/* Disconnect H; after it, no librados thread is left to trouble a fork. */
static void host_down(struct host *h)
{
	rbd_meta_close(h->meta);
	if (h->io != NULL)
		rados_ioctx_destroy(h->io);
	if (h->cluster != NULL)
		rados_shutdown(h->cluster);
	*h = (struct host){0};
}

/* Make namespace NS through H. */
static void make_namespace(struct host *h, const char *ns)
{
	int r;

	rados_ioctx_set_namespace(h->io, "");
	r = rbd_namespace_create(h->io, ns);
	ck_assert_msg(r == 0, "namespace %s: %s", ns, strerror(-r));
}

static int count_any(void *arg, const char *key, const char *value)
{
	(void)key;
	(void)value;
	(*(int *)arg)++;
	return 0;
}

/* The change records in the pool, of every host. */
static int records(struct host *h)
{
	int n = 0;

	ck_assert_int_eq(rbd_meta_list(h->meta, "intent/", RBD_META_PAGE, count_any, &n), 0);
	return n;
}

/* Is there volume NAME in NS? Its info in *RET_V. */
static bool exists(struct host *h, const char *ns, const char *name, struct rbd_volume *ret_v)
{
	int r;

	rados_ioctx_set_namespace(h->io, ns);
	r = rbd_volume_info(h->io, name, ret_v);
	ck_assert_msg(r == 0 || r == -ENOENT, "info %s/%s: %s", ns, name, strerror(-r));
	return r == 0;
}

/* Does image NAME of NS have snapshot SNAP? */
static bool has_snap(struct host *h, const char *ns, const char *name, const char *snap)
{
	rbd_image_t image;
	bool found = false;

	rados_ioctx_set_namespace(h->io, ns);
	ck_assert_int_eq(rbd_open_read_only(h->io, name, &image, NULL), 0);
	ck_assert_int_eq(rbd_snap_exists(image, snap, &found), 0);
	rbd_close(image);
	return found;
}

START_TEST(creates_snapshots_and_removes_leaving_no_records)
{
	struct host h;
	struct rbd_volume v;

	host_up(&h, "a");
	make_namespace(&h, "t1");
	ck_assert_int_eq(rbd_change_create(&h.c, "t1", "base", SIZE), 0);
	ck_assert_int_eq(records(&h), 0);
	ck_assert_int_eq(rbd_change_snapshot(&h.c, "t1", "base", "child"), 0);
	ck_assert_int_eq(records(&h), 0);
	ck_assert(exists(&h, "t1", "child", &v));
	ck_assert_str_eq(v.parent, "base");
	ck_assert_int_eq(rbd_change_remove(&h.c, "t1", "child"), 0);
	ck_assert(!exists(&h, "t1", "child", &v));
	ck_assert(!has_snap(&h, "t1", "base", "tp.child"));
	ck_assert_int_eq(rbd_change_remove(&h.c, "t1", "base"), 0);
	ck_assert(!exists(&h, "t1", "base", &v));
	ck_assert_int_eq(records(&h), 0);
	host_down(&h);
}
END_TEST

START_TEST(an_existing_name_is_eexist_and_left_alone)
{
	struct host h;
	struct rbd_volume v;

	host_up(&h, "a");
	make_namespace(&h, "t2");
	ck_assert_int_eq(rbd_change_create(&h.c, "t2", "v", SIZE), 0);
	rados_ioctx_set_namespace(h.io, "t2");
	ceph_harness_fill(h.io, "v", 0, 4096, 'v');
	ck_assert_int_eq(rbd_change_create(&h.c, "t2", "v", SIZE), -EEXIST);
	ck_assert_int_eq(rbd_change_create(&h.c, "t2", "v", 2 * SIZE), -EEXIST);
	ck_assert_int_eq(rbd_change_create(&h.c, "t2", "o", SIZE), 0);
	ck_assert_int_eq(rbd_change_snapshot(&h.c, "t2", "o", "v"), -EEXIST);
	ck_assert_int_eq(rbd_change_snapshot(&h.c, "t2", "gone", "w"), -ENOENT);
	ck_assert_int_eq(rbd_change_remove(&h.c, "t2", "gone"), -ENOENT);
	ck_assert(exists(&h, "t2", "v", &v));
	ck_assert_uint_eq(v.size, SIZE);
	ck_assert_str_eq(v.parent, "");
	ck_assert_int_eq(ceph_harness_holds(h.io, "v", 0, 'v'), 1);
	ck_assert(!has_snap(&h, "t2", "o", "tp.v"));
	ck_assert(!has_snap(&h, "t2", "o", "tp.w"));
	ck_assert(!exists(&h, "t2", "w", &v));
	ck_assert_int_eq(records(&h), 0);
	host_down(&h);
}
END_TEST

START_TEST(remove_with_children_is_ebusy_and_changes_nothing)
{
	struct host h;
	struct rbd_volume v;

	host_up(&h, "a");
	make_namespace(&h, "t3");
	ck_assert_int_eq(rbd_change_create(&h.c, "t3", "base", SIZE), 0);
	ck_assert_int_eq(rbd_change_snapshot(&h.c, "t3", "base", "child"), 0);
	ck_assert_int_eq(rbd_change_remove(&h.c, "t3", "base"), -EBUSY);
	ck_assert(exists(&h, "t3", "base", &v));
	ck_assert(has_snap(&h, "t3", "base", "tp.child"));
	ck_assert_int_eq(records(&h), 0);
	host_down(&h);
}
END_TEST

START_TEST(another_hosts_change_makes_the_volume_ebusy_until_that_host_settles_it)
{
	struct host a, b;
	struct rbd_volume v;
	unsigned settled = 99;

	host_up(&a, "a");
	host_up(&b, "b");
	make_namespace(&a, "t4");
	/* Host b's create of v, cut short right after its record. */
	ck_assert_int_eq(rbd_meta_put_new(b.meta, "intent/t4/v",
	                                  "{\"op\":\"create\",\"host\":\"b\",\"size\":67108864}"),
	                 0);
	ck_assert_int_eq(rbd_change_create(&a.c, "t4", "v", SIZE), -EBUSY);
	ck_assert_int_eq(rbd_change_snapshot(&a.c, "t4", "x", "v"), -EBUSY);
	ck_assert_int_eq(rbd_change_remove(&a.c, "t4", "v"), -EBUSY);
	/* Host a's start leaves it: b may still be at it. */
	ck_assert_int_eq(rbd_change_recover(&a.c, &settled), 0);
	ck_assert_uint_eq(settled, 0);
	ck_assert_int_eq(records(&a), 1);
	/* b's start settles it: not marked, so nothing was made. */
	ck_assert_int_eq(rbd_change_recover(&b.c, &settled), 0);
	ck_assert_uint_eq(settled, 1);
	ck_assert_int_eq(records(&a), 0);
	ck_assert(!exists(&a, "t4", "v", &v));
	ck_assert_int_eq(rbd_change_create(&a.c, "t4", "v", SIZE), 0);
	host_down(&a);
	host_down(&b);
}
END_TEST

START_TEST(a_record_this_version_cannot_read_is_left_alone)
{
	struct host h;
	unsigned settled = 99;

	host_up(&h, "a");
	ck_assert_int_eq(
	    rbd_meta_put_new(h.meta, "intent/t5/v", "{\"op\":\"grow\",\"host\":\"a\"}"), 0);
	ck_assert_int_eq(rbd_change_recover(&h.c, &settled), 0);
	ck_assert_uint_eq(settled, 0);
	ck_assert_int_eq(records(&h), 1);
	ck_assert_int_eq(rbd_meta_remove(h.meta, "intent/t5/v", "{\"op\":\"grow\",\"host\":\"a\"}"),
	                 0);
	/* Nor does a record of the wrong types bring the start down. */
	ck_assert_int_eq(rbd_meta_put_new(h.meta, "intent/t5/w", "{\"op\":null,\"host\":\"a\"}"),
	                 0);
	ck_assert_int_eq(rbd_meta_put_new(h.meta, "intent/t5/x",
	                                  "{\"op\":\"remove\",\"host\":\"a\",\"making\":\"no\"}"),
	                 0);
	ck_assert_int_eq(rbd_change_recover(&h.c, &settled), 0);
	ck_assert_uint_eq(settled, 0);
	ck_assert_int_eq(records(&h), 2);
	ck_assert_int_eq(rbd_meta_remove(h.meta, "intent/t5/w", "{\"op\":null,\"host\":\"a\"}"), 0);
	ck_assert_int_eq(rbd_meta_remove(h.meta, "intent/t5/x",
	                                 "{\"op\":\"remove\",\"host\":\"a\",\"making\":\"no\"}"),
	                 0);
	host_down(&h);
}
END_TEST

START_TEST(a_crashed_remove_the_pool_now_refuses_settles_to_the_volume_staying)
{
	const char *rec = "{\"op\":\"remove\",\"host\":\"a\"}";
	struct host h;
	struct rbd_volume v;
	rbd_image_t image;
	unsigned settled = 99;

	host_up(&h, "a");
	make_namespace(&h, "t7");
	ck_assert_int_eq(rbd_change_create(&h.c, "t7", "v", SIZE), 0);
	/* A snapshot not named as ours: rbd_volume_remove refuses (ENOTEMPTY) at once. */
	rados_ioctx_set_namespace(h.io, "t7");
	ck_assert_int_eq(rbd_open(h.io, "v", &image, NULL), 0);
	ck_assert_int_eq(rbd_snap_create(image, "x"), 0);
	rbd_close(image);
	/* Host a's remove of v, killed right after its record. */
	ck_assert_int_eq(rbd_meta_put_new(h.meta, "intent/t7/v", rec), 0);
	ck_assert_int_eq(rbd_change_recover(&h.c, &settled), 0);
	ck_assert_uint_eq(settled, 1);
	ck_assert_int_eq(records(&h), 0);
	ck_assert(exists(&h, "t7", "v", &v));
	host_down(&h);
}
END_TEST

/* Two hosts create the same names at once: each time exactly one succeeds, the other is
 * told EEXIST or EBUSY, and no record is left. */
#define RACE_ROUNDS 20

struct racer {
	struct host *h;
	pthread_barrier_t *start;
	int result[RACE_ROUNDS];
};

static void *race(void *arg)
{
	struct racer *r = arg;
	char name[32];

	for (int i = 0; i < RACE_ROUNDS; i++) {
		snprintf(name, sizeof name, "race%d", i);
		pthread_barrier_wait(r->start);
		r->result[i] = rbd_change_create(&r->h->c, "t6", name, SIZE);
	}
	return NULL;
}

START_TEST(two_hosts_creating_one_volume_have_one_winner)
{
	struct host a, b;
	pthread_barrier_t start;
	struct racer ra = {.h = &a, .start = &start}, rb = {.h = &b, .start = &start};
	pthread_t ta, tb;

	host_up(&a, "a");
	host_up(&b, "b");
	make_namespace(&a, "t6");
	/* Each host's I/O context is its own thread's alone. */
	ck_assert_int_eq(pthread_barrier_init(&start, NULL, 2), 0);
	ck_assert_int_eq(pthread_create(&ta, NULL, race, &ra), 0);
	ck_assert_int_eq(pthread_create(&tb, NULL, race, &rb), 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	for (int i = 0; i < RACE_ROUNDS; i++) {
		int x = ra.result[i], y = rb.result[i];

		ck_assert_msg((x == 0) != (y == 0), "round %d: %s and %s", i, strerror(-x),
		              strerror(-y));
		ck_assert(x == 0 || x == -EEXIST || x == -EBUSY);
		ck_assert(y == 0 || y == -EEXIST || y == -EBUSY);
	}
	ck_assert_int_eq(records(&a), 0);
	pthread_barrier_destroy(&start);
	host_down(&a);
	host_down(&b);
}
END_TEST

/* The crash tests. */

enum op { CREATE, SNAPSHOT, REMOVE };

struct crash {
	const char *point;
	enum op op;
	bool stays; /* the volume is there after the crashed host's next start */
};

static const struct crash crashes[] = {
    {"rbd-after-create-intent", CREATE, false},      {"rbd-after-create-making", CREATE, false},
    {"rbd-after-create-image", CREATE, true},        {"rbd-after-create-done", CREATE, true},
    {"rbd-after-snapshot-intent", SNAPSHOT, false},  {"rbd-after-snapshot-making", SNAPSHOT, false},
    {"rbd-after-snapshot-protect", SNAPSHOT, false}, {"rbd-after-snapshot-clone", SNAPSHOT, true},
    {"rbd-after-snapshot-child", SNAPSHOT, true},    {"rbd-after-snapshot-done", SNAPSHOT, true},
    {"rbd-after-remove-intent", REMOVE, false},      {"rbd-after-remove-image", REMOVE, false},
    {"rbd-after-remove-done", REMOVE, false},
};

/* Host "a", forked, runs X's change of volume "v" in NS and must die at X's fault point. */
static void crash_at(const struct crash *x, const char *ns)
{
	int status;
	pid_t pid = fork();

	ck_assert_int_ne(pid, -1);
	if (pid == 0) {
		struct host h;

		if (host_connect(&h, "a") < 0)
			_exit(3);
		setenv("THINPROXY_FAULT", x->point, 1);
		switch (x->op) {
		case CREATE:
			rbd_change_create(&h.c, ns, "v", SIZE);
			break;
		case SNAPSHOT:
			rbd_change_snapshot(&h.c, ns, "origin", "v");
			break;
		case REMOVE:
			rbd_change_remove(&h.c, ns, "v");
			break;
		}
		_exit(4);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
	              "%s: the host was not killed there (status %#x)", x->point, status);
}

/* Kill host "a" at each fault point of OP, in a namespace of its own: an origin,
 * committed, holding 'o', and for the remove a volume v holding 'v'. Host b's start
 * leaves the record alone; a's settles it, and the volume is there as the table says,
 * whole: a snapshot's child a writable clone holding the origin's data, the origin without
 * a leftover snapshot otherwise; a created volume of its size. Nothing is recorded after. */
static void crash_each_step(enum op op)
{
	for (size_t k = 0; k < sizeof crashes / sizeof crashes[0]; k++) {
		const struct crash *x = &crashes[k];
		struct host h;
		struct rbd_volume v;
		unsigned settled = 99;
		char ns[16];
		int n;

		if (x->op != op)
			continue;
		snprintf(ns, sizeof ns, "c%zu", k);
		host_up(&h, "b");
		make_namespace(&h, ns);
		ck_assert_int_eq(rbd_change_create(&h.c, ns, "origin", SIZE), 0);
		rados_ioctx_set_namespace(h.io, ns);
		ceph_harness_fill(h.io, "origin", 0, 4096, 'o');
		ck_assert_int_eq(rbd_volume_commit(h.io, "origin"), 0);
		if (x->op == REMOVE) {
			ck_assert_int_eq(rbd_change_create(&h.c, ns, "v", SIZE), 0);
			rados_ioctx_set_namespace(h.io, ns);
			ceph_harness_fill(h.io, "v", 0, 4096, 'v');
		}
		host_down(&h);

		crash_at(x, ns);

		host_up(&h, "b");
		n = records(&h);
		ck_assert_int_eq(rbd_change_recover(&h.c, &settled), 0);
		ck_assert_uint_eq(settled, 0);
		ck_assert_int_eq(records(&h), n);
		host_down(&h);

		host_up(&h, "a");
		ck_assert_int_eq(rbd_change_recover(&h.c, &settled), 0);
		ck_assert_uint_eq(settled, (unsigned)n);
		ck_assert_int_eq(records(&h), 0);
		fprintf(stderr, "test-rbd-change: killed at %s: %d record(s) settled, v %s\n",
		        x->point, n, exists(&h, ns, "v", &v) ? "stays" : "is gone");
		ck_assert_msg(exists(&h, ns, "v", &v) == x->stays, "%s: v %s", x->point,
		              x->stays ? "is gone" : "stays");
		if (x->stays && x->op == SNAPSHOT) {
			ck_assert_str_eq(v.parent, "origin");
			ck_assert(!v.committed);
			ck_assert_int_eq(ceph_harness_holds(h.io, "v", 0, 'o'), 1);
			ck_assert(has_snap(&h, ns, "origin", "tp.v"));
		} else if (x->stays) {
			ck_assert_uint_eq(v.size, SIZE);
			ck_assert_str_eq(v.parent, "");
		}
		if (!x->stays)
			ck_assert_msg(!has_snap(&h, ns, "origin", "tp.v"),
			              "%s: tp.v left on origin", x->point);
		/* And the name is free again, or taken, for the next change. */
		ck_assert_int_eq(rbd_change_create(&h.c, ns, "v", SIZE), x->stays ? -EEXIST : 0);
		host_down(&h);
	}
}

START_TEST(a_host_killed_at_each_step_of_a_create_loses_and_leaks_nothing)
{
	crash_each_step(CREATE);
}
END_TEST

START_TEST(a_host_killed_at_each_step_of_a_snapshot_loses_and_leaks_nothing)
{
	crash_each_step(SNAPSHOT);
}
END_TEST

START_TEST(a_host_killed_at_each_step_of_a_remove_loses_and_leaks_nothing)
{
	crash_each_step(REMOVE);
}
END_TEST

int main(void)
{
	const TTest *tests[] = {
	    creates_snapshots_and_removes_leaving_no_records,
	    an_existing_name_is_eexist_and_left_alone,
	    remove_with_children_is_ebusy_and_changes_nothing,
	    another_hosts_change_makes_the_volume_ebusy_until_that_host_settles_it,
	    a_record_this_version_cannot_read_is_left_alone,
	    a_crashed_remove_the_pool_now_refuses_settles_to_the_volume_staying,
	    two_hosts_creating_one_volume_have_one_winner,
	    a_host_killed_at_each_step_of_a_create_loses_and_leaks_nothing,
	    a_host_killed_at_each_step_of_a_snapshot_loses_and_leaks_nothing,
	    a_host_killed_at_each_step_of_a_remove_loses_and_leaks_nothing,
	};

	return ceph_harness_run("rbd-change", tests, sizeof tests / sizeof tests[0]);
}
