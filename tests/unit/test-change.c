/* Unit tests for daemon/change.c, the pool change protocol, on a real SQLite store and the
 * fake pool of tests/unit/fake-pool.c, whose state outlives a process killed at any
 * instant just as a pool's metadata does. A crash is a child process killed by the
 * protocol's own fault points (THINPROXY_FAULT); a start is change_init on what it left.
 * The same protocol on a real dm-thin pool: tests/vm/test-thinproxyd-crash.sh. */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../daemon/change.h"
#include "../../daemon/log.h"
#include "../../daemon/store.h"
#include "fake-pool.h"
#include "tp-cleanup.h"

#define MIB (UINT64_C(1) << 20)

static char dir[64];
static struct store *st;
static struct pool *pool;
static int64_t tenant;

/* Open the store and the pool in DIR, as a daemon's start does, and reconcile them. */
static int start(void)
{
	struct pool_config pc = {.state_dir = dir};
	char path[128];

	snprintf(path, sizeof path, "%s/db", dir);
	ck_assert_int_eq(store_open(path, &st), 0);
	ck_assert_int_eq(pool_open(&pc, &pool), 0);
	return change_init(st, pool);
}

static void stop(void)
{
	change_shutdown();
	pool_close(pool);
	store_close(st);
	pool = NULL;
	st = NULL;
}

static void setup(void)
{
	struct tenant t = {.nbd_uid = 2000};

	log_init("test-change", false, LOG_ERR);
	strcpy(dir, "/tmp/test-change.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(start(), 0);
	snprintf(t.name, sizeof t.name, "alice");
	ck_assert_int_eq(store_tenant_add(st, &t), 0);
	tenant = t.id;
}

static void teardown(void)
{
	char cmd[128];

	stop();
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static struct volume new_volume(const char *name)
{
	struct volume v = {.tenant_id = tenant, .size = 8 * MIB};

	snprintf(v.name, sizeof v.name, "%s", name);
	return v;
}

/* Create NAME (a snapshot of ORIGIN if not NULL) through the protocol, with the label
 * "volume" = NAME. */
static int create(const char *name, const struct volume *origin, struct volume *ret)
{
	const struct tp_label labels[] = {{"volume", name}};
	struct change_clock clk;
	struct volume v = new_volume(name);

	change_clock_start(&clk);
	if (origin)
		v.parent_id = origin->id;
	int r = change_create(origin ? CHANGE_SNAPSHOT : CHANGE_CREATE, &v,
	                      origin ? origin->thin_id : 0, labels, 1, &clk);
	if (r == 0 && ret)
		*ret = v;
	return r;
}

static int remove_volume(struct volume *v)
{
	struct change_clock clk;

	change_clock_start(&clk);
	return change_remove(v, &clk);
}

static struct volume get(const char *name)
{
	struct volume v;

	ck_assert_int_eq(store_volume_get(st, tenant, name, &v), 0);
	return v;
}

static bool exists(const char *name)
{
	struct volume v;

	return store_volume_get(st, tenant, name, &v) == 0;
}

/* The store and the pool agree: every row's thin id exists in the pool, and the pool has
 * no id that is neither a row's nor foreign; no change is left recorded; no labels are
 * left of a row that is gone, and a row made by create() has its own. */
static void assert_agree(void)
{
	CLEANUP_FREE struct volume *vols = NULL;
	struct pool_change c;
	struct volume v;
	uint64_t foreign, labels;
	size_t n, i, in_pool = 0;

	for (int64_t id = 1; id < 512; id++) {
		ck_assert_int_eq(store_labels_count(st, id, &labels), 0);
		ck_assert_msg(labels == 0 || store_volume_get_by_id(st, id, &v) == 0,
		              "labels of volume id %" PRId64 ", which is gone", id);
	}

	ck_assert_int_eq(store_change_get(st, &c), -ENOENT);
	ck_assert_int_eq(store_volume_list(st, tenant, &vols, &n), 0);
	for (i = 0; i < n; i++) {
		CLEANUP_FREE struct tp_label *l = NULL;
		size_t n_labels;

		ck_assert_int_eq(store_labels_get(st, vols[i].id, &l, &n_labels), 0);
		ck_assert_msg(n_labels == 0 ||
		                  (n_labels == 1 && strcmp(l[0].value, vols[i].name) == 0),
		              "volume %s: %zu labels", vols[i].name, n_labels);
		ck_assert_msg(fake_pool_has(pool, vols[i].thin_id), "volume %s: thin %u missing",
		              vols[i].name, vols[i].thin_id);
		ck_assert_msg(volume_settled(&vols[i]), "volume %s is not settled", vols[i].name);
	}
	for (uint32_t id = 0; id < 4096; id++)
		in_pool += fake_pool_has(pool, id);
	ck_assert_int_eq(store_thin_id_count_foreign(st, &foreign), 0);
	ck_assert_uint_eq(in_pool, n + foreign);
}

/* Run FN in a child with the daemon set to die at FAULT, and check that it did. The
 * parent then starts again on what the child left. */
static void crash_at(const char *fault, void (*fn)(void))
{
	pid_t pid;
	int status;

	stop();
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		setenv("THINPROXY_FAULT", fault, 1);
		if (start() < 0)
			_exit(2);
		fn();
		_exit(3); /* the fault point was never reached */
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
	              "the child was not killed at %s (status %d)", fault, status);
	ck_assert_int_eq(start(), 0);
}

static void create_c(void)
{
	create("c", NULL, NULL);
}

static void snapshot_s(void)
{
	struct volume base = get("base");

	create("s", &base, NULL);
}

static void remove_r(void)
{
	struct volume r = get("r");

	remove_volume(&r);
}

START_TEST(pairs_a_new_store_with_a_new_pool)
{
	struct pool_status ps;
	uint64_t tid;

	ck_assert_int_eq(pool_get_status(pool, &ps), 0);
	ck_assert_int_eq(store_get_pool_tid(st, &tid), 0);
	ck_assert_uint_ne(tid, 0);
	ck_assert_uint_eq(ps.transaction_id, tid);
	stop();
	ck_assert_int_eq(start(), 0);
	ck_assert_int_eq(store_get_pool_tid(st, &tid), 0);
	ck_assert_uint_eq(ps.transaction_id, tid);
}
END_TEST

START_TEST(refuses_a_pool_paired_with_another_store)
{
	struct pool_status ps;

	ck_assert_int_eq(pool_get_status(pool, &ps), 0);
	ck_assert_int_eq(pool_set_transaction_id(pool, ps.transaction_id, ps.transaction_id + 5),
	                 0);
	stop();
	ck_assert_int_eq(start(), -ESTALE);
}
END_TEST

static void nothing(void)
{
}

START_TEST(finishes_a_pairing_cut_short)
{
	struct pool_status ps;
	uint64_t tid;
	char cmd[256];

	/* Make the store new again, on a pool at transaction id 0. */
	stop();
	snprintf(cmd, sizeof cmd, "rm -f %s/db* %s/fake-pool", dir, dir);
	ck_assert_int_eq(system(cmd), 0);
	crash_at("after-pairing-intent", nothing);
	ck_assert_int_eq(pool_get_status(pool, &ps), 0);
	ck_assert_int_eq(store_get_pool_tid(st, &tid), 0);
	ck_assert_uint_ne(tid, 0);
	ck_assert_uint_eq(ps.transaction_id, tid);
	ck_assert_int_eq(store_get_pairing(st, &tid), -ENOENT);
}
END_TEST

START_TEST(changes_the_pool_with_one_commit_each)
{
	struct volume base, snap;
	uint64_t before = fake_pool_commits(pool);

	ck_assert_int_eq(create("base", NULL, &base), 0);
	ck_assert_uint_eq(fake_pool_commits(pool), before + 1);
	ck_assert_int_eq(create("snap", &base, &snap), 0);
	ck_assert_uint_eq(fake_pool_commits(pool), before + 2);
	ck_assert_int_eq(remove_volume(&snap), 0);
	ck_assert_uint_eq(fake_pool_commits(pool), before + 3);
	ck_assert_int_eq(get("base").state, VOLUME_READY);
	ck_assert(!exists("snap"));
	assert_agree();
}
END_TEST

START_TEST(rolls_back_a_create_the_daemon_died_before_sending)
{
	crash_at("after-create-intent", create_c);
	ck_assert(!exists("c"));
	assert_agree();
	ck_assert_int_eq(create("c", NULL, NULL), 0);
	assert_agree();
}
END_TEST

START_TEST(finishes_a_create_the_daemon_died_after_sending)
{
	crash_at("after-create-thin", create_c);
	ck_assert_int_eq(get("c").state, VOLUME_READY);
	assert_agree();
}
END_TEST

START_TEST(finishes_a_snapshot_the_daemon_died_after_sending)
{
	struct volume base;

	ck_assert_int_eq(create("base", NULL, &base), 0);
	crash_at("after-create-snap", snapshot_s);
	ck_assert_int_eq(get("s").state, VOLUME_READY);
	ck_assert_int_eq(get("s").parent_id, base.id);
	assert_agree();
}
END_TEST

START_TEST(rolls_back_a_snapshot_the_daemon_died_before_sending)
{
	ck_assert_int_eq(create("base", NULL, NULL), 0);
	crash_at("after-snapshot-intent", snapshot_s);
	ck_assert(!exists("s"));
	assert_agree();
}
END_TEST

/* Step 3 is not synced: a machine that crashes after the answer may lose it. The start
 * then finds what step 1 left, and must keep the volume the client was told about. */
START_TEST(keeps_a_create_whose_commit_the_machine_lost)
{
	struct pool_change c = {.op = CHANGE_CREATE};
	struct volume v;

	ck_assert_int_eq(create("c", NULL, &v), 0);
	c.volume_id = v.id;
	c.thin_id = v.thin_id;
	v.state = VOLUME_CREATING;
	ck_assert_int_eq(store_volume_update(st, &v), 0);
	ck_assert_int_eq(store_change_set(st, &c), 0);
	stop();
	ck_assert_int_eq(start(), 0);
	ck_assert_int_eq(get("c").state, VOLUME_READY);
	assert_agree();
}
END_TEST

START_TEST(finishes_a_remove_wherever_the_daemon_died)
{
	static const char *const faults[] = {"after-remove-intent", "after-delete-thin",
	                                     "after-remove-done"};

	for (size_t i = 0; i < sizeof faults / sizeof *faults; i++) {
		ck_assert_int_eq(create("r", NULL, NULL), 0);
		crash_at(faults[i], remove_r);
		ck_assert_msg(!exists("r"), "r left after a crash %s", faults[i]);
		assert_agree();
	}
}
END_TEST

START_TEST(undoes_a_delete_the_pool_refused)
{
	struct volume v;
	struct pool_change c;

	ck_assert_int_eq(create("busy", NULL, &v), 0);
	fake_pool_fail_next(FAKE_DELETE, -EBUSY);
	ck_assert_int_eq(remove_volume(&v), -EBUSY);
	ck_assert_int_eq(get("busy").state, VOLUME_READY);
	ck_assert_int_eq(store_change_get(st, &c), -ENOENT);
	assert_agree();
	ck_assert_int_eq(remove_volume(&v), 0);
	assert_agree();
}
END_TEST

START_TEST(undoes_a_create_the_pool_refused)
{
	fake_pool_fail_next(FAKE_CREATE_THIN, -ENOSPC);
	ck_assert_int_eq(create("c", NULL, NULL), -ENOSPC);
	ck_assert(!exists("c"));
	assert_agree();
	ck_assert_int_eq(create("c", NULL, NULL), 0);
	assert_agree();
}
END_TEST

/* A volume's labels come with the row, in the create's first transaction: a create the
 * daemon dies in is kept with them or rolled back without them. */
START_TEST(creates_with_labels_or_not_at_all)
{
	static const char *const faults[] = {"after-create-intent", "after-create-thin",
	                                     "after-create-done"};
	uint64_t n;

	for (size_t i = 0; i < sizeof faults / sizeof *faults; i++) {
		crash_at(faults[i], create_c);
		assert_agree();
		if (exists("c")) {
			ck_assert_int_eq(store_labels_count(st, get("c").id, &n), 0);
			ck_assert_msg(n == 1, "c kept after a crash %s with %" PRIu64 " labels",
			              faults[i], n);
			struct volume c = get("c");
			ck_assert_int_eq(remove_volume(&c), 0);
		}
	}
	ck_assert_int_eq(create("c", NULL, NULL), 0);
	ck_assert_int_eq(store_labels_count(st, get("c").id, &n), 0);
	ck_assert_uint_eq(n, 1);
	assert_agree();
}
END_TEST

/* The review's case: a delete the pool refuses, then a create the daemon dies in at each
 * of its steps. Nothing is lost, nothing leaks, and creates go on working. */
START_TEST(a_refused_delete_then_a_crashed_create_loses_nothing)
{
	static const char *const faults[] = {"after-create-intent", "after-create-thin",
	                                     "after-create-done"};
	struct volume kept;

	for (size_t i = 0; i < sizeof faults / sizeof *faults; i++) {
		char name[16];

		snprintf(name, sizeof name, "kept%zu", i);
		ck_assert_int_eq(create(name, NULL, &kept), 0);
		fake_pool_fail_next(FAKE_DELETE, -EBUSY);
		ck_assert_int_eq(remove_volume(&kept), -EBUSY);
		crash_at(faults[i], create_c);
		ck_assert_msg(exists(name), "%s lost after a crash %s", name, faults[i]);
		ck_assert_int_eq(get(name).state, VOLUME_READY);
		ck_assert_msg(exists("c") == (i > 0), "c after a crash %s", faults[i]);
		assert_agree();
		if (exists("c")) {
			struct volume c = get("c");

			ck_assert_int_eq(remove_volume(&c), 0);
		}
		ck_assert_int_eq(create("after", NULL, NULL), 0);
		struct volume after = get("after");
		ck_assert_int_eq(remove_volume(&after), 0);
		assert_agree();
	}
}
END_TEST

START_TEST(leaves_a_foreign_thin_id_alone_and_creates_past_it)
{
	struct volume a, b;

	ck_assert_int_eq(create("a", NULL, &a), 0);
	fake_pool_add(pool, a.thin_id + 1);
	fake_pool_add(pool, a.thin_id + 2);
	ck_assert_int_eq(create("b", NULL, &b), 0);
	ck_assert_uint_eq(b.thin_id, a.thin_id + 3);
	ck_assert(fake_pool_has(pool, a.thin_id + 1));
	ck_assert(fake_pool_has(pool, a.thin_id + 2));
	assert_agree();
}
END_TEST

/* A store an older thinproxy used may have a device left in the pool above its highest
 * id: the start finds it before any create could take it for a new volume. */
START_TEST(finds_the_devices_an_older_version_left_above_its_ids)
{
	struct volume a, b;
	char path[128], *err = NULL;
	sqlite3 *db;

	ck_assert_int_eq(create("a", NULL, &a), 0);
	fake_pool_add(pool, a.thin_id + 1);
	stop();
	snprintf(path, sizeof path, "%s/db", dir);
	ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db,
	                              "DELETE FROM meta WHERE key IN ('next_thin_id',"
	                              " 'legacy_thin_ids', 'legacy_checked')",
	                              NULL, NULL, &err),
	                 SQLITE_OK);
	sqlite3_close(db);
	/* Had it not looked, a create killed after its intent would take that device. */
	crash_at("after-create-intent", create_c);
	ck_assert(!exists("c"));
	ck_assert(fake_pool_has(pool, a.thin_id + 1));
	ck_assert_int_eq(create("b", NULL, &b), 0);
	ck_assert_uint_ne(b.thin_id, a.thin_id + 1);
	assert_agree();
}
END_TEST

/* A message whose commit the pool lost (it turned read-only): the change stays recorded,
 * nothing else changes until the pool can say what became of it. */
START_TEST(holds_changes_while_the_pool_cannot_say_what_it_did)
{
	struct volume c;

	fake_pool_lose_next_commit();
	ck_assert_int_eq(create("c", NULL, NULL), -EROFS);
	ck_assert(!volume_settled(&(struct volume){.state = get("c").state}));
	ck_assert_int_eq(create("d", NULL, NULL), -EROFS);
	stop();
	ck_assert_int_eq(start(), 0); /* starts, changes wait */
	ck_assert_int_eq(create("d", NULL, NULL), -EROFS);
	fake_pool_set_read_only(pool, false); /* repaired */
	ck_assert_int_eq(create("d", NULL, NULL), 0);
	ck_assert(!exists("c"));
	ck_assert_int_eq(create("c", NULL, &c), 0);
	assert_agree();
}
END_TEST

/* A remove the pool refused, recorded as failed because the store could not be put back
 * at the time: settled by undoing it, never by deleting the volume. */
START_TEST(undoes_a_recorded_failed_remove)
{
	struct pool_change c = {
	    .op = CHANGE_REMOVE, .prior_state = VOLUME_COMMITTED, .failed = true};
	struct volume v;

	ck_assert_int_eq(create("v", NULL, &v), 0);
	c.volume_id = v.id;
	c.thin_id = v.thin_id;
	v.state = VOLUME_DELETING;
	ck_assert_int_eq(store_volume_update(st, &v), 0);
	ck_assert_int_eq(store_change_set(st, &c), 0);
	ck_assert_int_eq(change_settle(), 0);
	ck_assert_int_eq(get("v").state, VOLUME_COMMITTED);
	assert_agree();
}
END_TEST

/* What thinproxy before the change record left after a crash: pending rows, several of
 * them if a message or set_transaction_id had failed before, and a pool one transaction
 * ahead. Each is settled by what the pool holds. */
START_TEST(settles_the_pending_rows_an_older_version_left)
{
	struct volume done, lost, gone;
	struct pool_status ps;
	uint64_t tid;

	ck_assert_int_eq(create("done", NULL, &done), 0);
	ck_assert_int_eq(create("lost", NULL, &lost), 0);
	ck_assert_int_eq(create("gone", NULL, &gone), 0);
	done.state = lost.state = VOLUME_CREATING;
	gone.state = VOLUME_DELETING;
	ck_assert_int_eq(store_volume_update(st, &done), 0);
	ck_assert_int_eq(store_volume_update(st, &lost), 0);
	ck_assert_int_eq(store_volume_update(st, &gone), 0);
	ck_assert_int_eq(pool_delete_thin(pool, lost.thin_id), 0);
	ck_assert_int_eq(pool_get_status(pool, &ps), 0);
	ck_assert_int_eq(pool_set_transaction_id(pool, ps.transaction_id, ps.transaction_id + 1),
	                 0);
	stop();
	ck_assert_int_eq(start(), 0);
	ck_assert_int_eq(get("done").state, VOLUME_READY);
	ck_assert(!exists("lost"));
	ck_assert(!exists("gone"));
	ck_assert(!fake_pool_has(pool, gone.thin_id));
	ck_assert_int_eq(store_get_pool_tid(st, &tid), 0);
	ck_assert_uint_eq(tid, ps.transaction_id + 1);
	assert_agree();
}
END_TEST

START_TEST(removes_an_image_whose_import_was_interrupted)
{
	struct volume img = {.size = 8 * MIB};
	struct change_clock clk;

	snprintf(img.name, sizeof img.name, "img");
	change_clock_start(&clk);
	ck_assert_int_eq(change_create(CHANGE_IMPORT, &img, 0, NULL, 0, &clk), 0);
	ck_assert_int_eq(img.state, VOLUME_IMPORTING);
	ck_assert(fake_pool_has(pool, img.thin_id));
	stop();
	ck_assert_int_eq(start(), 0);
	ck_assert_int_eq(store_volume_get(st, 0, "img", &img), -ENOENT);
	ck_assert(!fake_pool_has(pool, img.thin_id));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("change");
	TCase *tc = tcase_create("change");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, pairs_a_new_store_with_a_new_pool);
	tcase_add_test(tc, refuses_a_pool_paired_with_another_store);
	tcase_add_test(tc, finishes_a_pairing_cut_short);
	tcase_add_test(tc, changes_the_pool_with_one_commit_each);
	tcase_add_test(tc, rolls_back_a_create_the_daemon_died_before_sending);
	tcase_add_test(tc, finishes_a_create_the_daemon_died_after_sending);
	tcase_add_test(tc, finishes_a_snapshot_the_daemon_died_after_sending);
	tcase_add_test(tc, rolls_back_a_snapshot_the_daemon_died_before_sending);
	tcase_add_test(tc, keeps_a_create_whose_commit_the_machine_lost);
	tcase_add_test(tc, finishes_a_remove_wherever_the_daemon_died);
	tcase_add_test(tc, undoes_a_delete_the_pool_refused);
	tcase_add_test(tc, undoes_a_create_the_pool_refused);
	tcase_add_test(tc, creates_with_labels_or_not_at_all);
	tcase_add_test(tc, a_refused_delete_then_a_crashed_create_loses_nothing);
	tcase_add_test(tc, leaves_a_foreign_thin_id_alone_and_creates_past_it);
	tcase_add_test(tc, finds_the_devices_an_older_version_left_above_its_ids);
	tcase_add_test(tc, holds_changes_while_the_pool_cannot_say_what_it_did);
	tcase_add_test(tc, undoes_a_recorded_failed_remove);
	tcase_add_test(tc, settles_the_pending_rows_an_older_version_left);
	tcase_add_test(tc, removes_an_image_whose_import_was_interrupted);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
