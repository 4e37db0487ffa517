/* Unit tests for daemon/store.c on a real SQLite database in a temporary directory. */
#include <check.h>
#include <errno.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <sqlite3.h>

#include "../../daemon/store.h"

static char dir[64];
static struct store *st;

static void setup(void)
{
	char path[128];

	strcpy(dir, "/tmp/test-store.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/db", dir);
	ck_assert_int_eq(store_open(path, &st), 0);
}

static void teardown(void)
{
	char cmd[128];

	store_close(st);
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* Close the store and open it again, as a restarted daemon does. */
static void reopen(void)
{
	char path[128];

	store_close(st);
	snprintf(path, sizeof path, "%s/db", dir);
	ck_assert_int_eq(store_open(path, &st), 0);
}

/* Run SQL on the store's file behind its back (the store closed meanwhile). */
static void exec_raw(const char *sql)
{
	char path[128];
	sqlite3 *db;

	store_close(st);
	st = NULL;
	snprintf(path, sizeof path, "%s/db", dir);
	ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
}

static int64_t add_tenant(const char *name, uint32_t nbd_uid)
{
	struct tenant t = {.nbd_uid = nbd_uid};

	snprintf(t.name, sizeof t.name, "%s", name);
	ck_assert_int_eq(store_tenant_add(st, &t), 0);
	return t.id;
}

static struct volume add_volume(int64_t tenant, const char *name, uint32_t thin, int64_t parent)
{
	struct volume v = {.tenant_id = tenant,
	                   .thin_id = thin,
	                   .size = 1 << 20,
	                   .parent_id = parent,
	                   .state = VOLUME_READY};

	snprintf(v.name, sizeof v.name, "%s", name);
	ck_assert_int_eq(store_volume_add(st, &v), 0);
	return v;
}

START_TEST(starts_with_pool_transaction_id_zero_and_keeps_what_is_set)
{
	uint64_t tid = 99;

	ck_assert_int_eq(store_get_pool_tid(st, &tid), 0);
	ck_assert_uint_eq(tid, 0);
	ck_assert_int_eq(store_set_pool_tid(st, 41), 0);
	ck_assert_int_eq(store_get_pool_tid(st, &tid), 0);
	ck_assert_uint_eq(tid, 41);
}
END_TEST

START_TEST(same_volume_name_in_two_tenants_but_not_twice_in_one)
{
	int64_t a = add_tenant("alice", 2000), b = add_tenant("bob", 2001);
	struct volume v = {.tenant_id = a, .thin_id = 3, .size = 1 << 20};
	struct volume got;

	add_volume(a, "layer1", 1, 0);
	add_volume(b, "layer1", 2, 0);
	snprintf(v.name, sizeof v.name, "layer1");
	ck_assert_int_eq(store_volume_add(st, &v), -EEXIST);
	ck_assert_int_eq(store_volume_get(st, b, "layer1", &got), 0);
	ck_assert_uint_eq(got.thin_id, 2);
	ck_assert_int_eq(store_volume_get(st, a, "nope", &got), -ENOENT);
}
END_TEST

START_TEST(refuses_a_thin_id_twice)
{
	int64_t a = add_tenant("alice", 2000);
	struct volume v = {.tenant_id = a, .thin_id = 7, .size = 1 << 20};

	add_volume(a, "one", 7, 0);
	snprintf(v.name, sizeof v.name, "two");
	ck_assert_int_eq(store_volume_add(st, &v), -EEXIST);
}
END_TEST

/* The next thin id for a create, which the test then takes for a volume. */
static uint32_t next_thin_id(uint32_t max, bool *ret_unverified)
{
	bool unverified;
	uint32_t id;

	ck_assert_int_eq(store_thin_id_next(st, max, &id, &unverified), 0);
	if (ret_unverified)
		*ret_unverified = unverified;
	return id;
}

START_TEST(hands_out_a_removed_volumes_thin_id_again_only_after_going_round)
{
	int64_t a = add_tenant("alice", 2000);
	struct volume v1, v2;

	ck_assert_uint_eq(next_thin_id(4, NULL), 1);
	v1 = add_volume(a, "v1", 1, 0);
	ck_assert_uint_eq(next_thin_id(4, NULL), 2);
	v2 = add_volume(a, "v2", 2, 0);
	ck_assert_int_eq(store_volume_remove(st, v2.id), 0);
	/* 2 is free again, but the counter goes on. */
	ck_assert_uint_eq(next_thin_id(4, NULL), 3);
	add_volume(a, "v3", 3, 0);
	ck_assert_uint_eq(next_thin_id(4, NULL), 4);
	add_volume(a, "v4", 4, 0);
	/* Round: the lowest id nothing holds. */
	ck_assert_uint_eq(next_thin_id(4, NULL), 2);
	add_volume(a, "v2again", 2, 0);
	ck_assert_int_eq(store_volume_remove(st, v1.id), 0);
	ck_assert_uint_eq(next_thin_id(4, NULL), 1);
}
END_TEST

START_TEST(never_hands_out_a_foreign_thin_id)
{
	uint64_t n = 9;

	ck_assert_int_eq(store_thin_id_add_foreign(st, 1), 0);
	ck_assert_int_eq(store_thin_id_add_foreign(st, 3), 0);
	ck_assert_int_eq(store_thin_id_add_foreign(st, 3), 0);
	ck_assert_int_eq(store_thin_id_count_foreign(st, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(next_thin_id(4, NULL), 2);
	ck_assert_uint_eq(next_thin_id(4, NULL), 4);
	ck_assert_uint_eq(next_thin_id(4, NULL), 2);
}
END_TEST

START_TEST(reports_no_free_thin_id_when_all_are_taken)
{
	int64_t a = add_tenant("alice", 2000);
	uint32_t id;
	bool unverified;

	add_volume(a, "v1", 1, 0);
	ck_assert_int_eq(store_thin_id_add_foreign(st, 2), 0);
	ck_assert_int_eq(store_thin_id_next(st, 2, &id, &unverified), -ENOSPC);
}
END_TEST

/* A store an older thinproxy used (volumes, a transaction id, no counter): its ids from
 * the highest + 1 up are to be looked at once, and the ones below after going round. */
START_TEST(marks_a_legacy_stores_ids_for_checking)
{
	int64_t a = add_tenant("alice", 2000);
	uint32_t mark = 9;
	bool unverified;
	char path[128], *err = NULL;
	sqlite3 *db;

	add_volume(a, "v1", 1, 0);
	add_volume(a, "v5", 5, 0);
	ck_assert_int_eq(store_thin_id_legacy(st, &mark), 0);
	ck_assert_uint_eq(mark, 0); /* a new store has no legacy */
	store_close(st);
	snprintf(path, sizeof path, "%s/db", dir);
	ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db,
	                              "DELETE FROM meta WHERE key IN ('next_thin_id',"
	                              " 'legacy_thin_ids', 'legacy_checked');"
	                              " UPDATE meta SET value = 7 WHERE key = 'pool_tid'",
	                              NULL, NULL, &err),
	                 SQLITE_OK);
	sqlite3_close(db);
	ck_assert_int_eq(store_open(path, &st), 0);

	ck_assert_int_eq(store_thin_id_legacy(st, &mark), 0);
	ck_assert_uint_eq(mark, 6);
	ck_assert_int_eq(store_thin_id_legacy_done(st, 8), 0);
	ck_assert_int_eq(store_thin_id_legacy(st, &mark), 0);
	ck_assert_uint_eq(mark, 0);
	ck_assert_uint_eq(next_thin_id(9, &unverified), 8);
	ck_assert(!unverified);
	ck_assert_uint_eq(next_thin_id(9, &unverified), 9);
	ck_assert(!unverified);
	ck_assert_uint_eq(next_thin_id(9, &unverified), 2);
	ck_assert(unverified);
}
END_TEST

START_TEST(never_reuses_a_removed_tenants_nbd_uid)
{
	uint32_t a, b, c;
	int64_t id;

	ck_assert_int_eq(store_tenant_next_nbd_uid(st, 5000, &a), 0);
	ck_assert_uint_eq(a, 5000);
	id = add_tenant("alice", a);
	ck_assert_int_eq(store_tenant_next_nbd_uid(st, 5000, &b), 0);
	ck_assert_uint_eq(b, 5001);
	add_tenant("bob", b);
	/* alice goes: her uid stays spent, also across a reopen of the store. */
	ck_assert_int_eq(store_tenant_remove(st, id), 0);
	reopen();
	ck_assert_int_eq(store_tenant_next_nbd_uid(st, 5000, &c), 0);
	ck_assert_uint_eq(c, 5002);
}
END_TEST

START_TEST(spends_an_nbd_uid_even_when_no_tenant_takes_it)
{
	uint32_t a, b;

	/* Asked for and never used (the add failed): never handed out again. */
	ck_assert_int_eq(store_tenant_next_nbd_uid(st, 5000, &a), 0);
	ck_assert_int_eq(store_begin(st), 0);
	add_tenant("alice", a);
	store_rollback(st);
	ck_assert_int_eq(store_tenant_next_nbd_uid(st, 5000, &b), 0);
	ck_assert_uint_eq(b, a + 1);
}
END_TEST

START_TEST(follows_a_raised_nbd_uid_base_and_not_a_lowered_one)
{
	uint32_t uid;

	ck_assert_int_eq(store_tenant_next_nbd_uid(st, 5000, &uid), 0);
	ck_assert_uint_eq(uid, 5000);
	ck_assert_int_eq(store_tenant_next_nbd_uid(st, 9000, &uid), 0);
	ck_assert_uint_eq(uid, 9000);
	ck_assert_int_eq(store_tenant_next_nbd_uid(st, 5000, &uid), 0);
	ck_assert_uint_eq(uid, 9001);
}
END_TEST

/* A store made before the counter: it starts above the highest nbd uid in use. */
START_TEST(counts_on_above_the_highest_nbd_uid_of_an_older_store)
{
	uint32_t uid;

	add_tenant("a", 5000);
	add_tenant("b", 5007);
	add_tenant("c", 5003);
	exec_raw("DELETE FROM meta WHERE key = 'next_nbd_uid'");
	reopen();
	ck_assert_int_eq(store_tenant_next_nbd_uid(st, 5000, &uid), 0);
	ck_assert_uint_eq(uid, 5008);
}
END_TEST

START_TEST(runs_out_of_nbd_uids_below_the_invalid_uid)
{
	uint32_t uid;

	ck_assert_int_eq(store_tenant_next_nbd_uid(st, UINT32_MAX - 1, &uid), 0);
	ck_assert_uint_eq(uid, UINT32_MAX - 1);
	ck_assert_int_eq(store_tenant_next_nbd_uid(st, 5000, &uid), -ENOSPC);
}
END_TEST

START_TEST(lists_volumes_in_a_state)
{
	int64_t a = add_tenant("alice", 2000);
	struct volume v = add_volume(a, "v", 1, 0), *rows = NULL;
	size_t n = 9;

	add_volume(a, "w", 2, 0);
	ck_assert_int_eq(store_volume_list_state(st, VOLUME_DELETING, &rows, &n), 0);
	ck_assert_uint_eq(n, 0);
	free(rows);
	v.state = VOLUME_DELETING;
	ck_assert_int_eq(store_volume_update(st, &v), 0);
	ck_assert_int_eq(store_volume_list_state(st, VOLUME_DELETING, &rows, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(rows[0].name, "v");
	ck_assert(!volume_settled(&rows[0]));
	free(rows);
}
END_TEST

/* At most one change: a second one replaces the first, and clearing leaves none. */
START_TEST(keeps_one_change_record)
{
	struct pool_change c = {.op = CHANGE_SNAPSHOT,
	                        .volume_id = 4,
	                        .thin_id = 17,
	                        .origin_thin_id = 3,
	                        .prior_state = VOLUME_READY},
	                   got;

	ck_assert_int_eq(store_change_get(st, &got), -ENOENT);
	ck_assert_int_eq(store_change_set(st, &c), 0);
	c.op = CHANGE_REMOVE;
	c.failed = true;
	ck_assert_int_eq(store_change_set(st, &c), 0);
	ck_assert_int_eq(store_change_get(st, &got), 0);
	ck_assert_int_eq(got.op, CHANGE_REMOVE);
	ck_assert_int_eq(got.volume_id, 4);
	ck_assert_uint_eq(got.thin_id, 17);
	ck_assert_uint_eq(got.origin_thin_id, 3);
	ck_assert_int_eq(got.prior_state, VOLUME_READY);
	ck_assert(got.failed);
	ck_assert_int_eq(store_change_clear(st), 0);
	ck_assert_int_eq(store_change_get(st, &got), -ENOENT);
}
END_TEST

START_TEST(keeps_a_pairing_until_cleared)
{
	uint64_t tid = 0;

	ck_assert_int_eq(store_get_pairing(st, &tid), -ENOENT);
	ck_assert_int_eq(store_set_pairing(st, 123456789), 0);
	ck_assert_int_eq(store_get_pairing(st, &tid), 0);
	ck_assert_uint_eq(tid, 123456789);
	ck_assert_int_eq(store_set_pairing(st, 0), 0);
	ck_assert_int_eq(store_get_pairing(st, &tid), -ENOENT);
}
END_TEST

START_TEST(rolls_back_an_uncommitted_transaction)
{
	int64_t a = add_tenant("alice", 2000);
	struct volume got;

	ck_assert_int_eq(store_begin(st), 0);
	add_volume(a, "temp", 1, 0);
	store_rollback(st);
	ck_assert_int_eq(store_volume_get(st, a, "temp", &got), -ENOENT);
}
END_TEST

/* Every call SQLite makes to put the store on disk, counted: these definitions stand in
 * for libc's in this program, SQLite's included. */
static unsigned disk_syncs;

int fdatasync(int fd)
{
	disk_syncs++;
	return (int)syscall(SYS_fdatasync, fd);
}

int fsync(int fd)
{
	disk_syncs++;
	return (int)syscall(SYS_fsync, fd);
}

/* store_commit and a write outside a transaction wait for the disk; store_commit_unsynced
 * does not, and neither do the writes inside a transaction before its commit. */
START_TEST(syncs_every_commit_but_the_unsynced_ones)
{
	int64_t a;
	unsigned before = disk_syncs;

	a = add_tenant("alice", 2000);
	ck_assert_uint_gt(disk_syncs, before);

	before = disk_syncs;
	ck_assert_int_eq(store_begin(st), 0);
	add_volume(a, "v1", 1, 0);
	ck_assert_uint_eq(disk_syncs, before);
	ck_assert_int_eq(store_commit(st), 0);
	ck_assert_uint_gt(disk_syncs, before);

	before = disk_syncs;
	ck_assert_int_eq(store_begin(st), 0);
	add_volume(a, "v2", 2, 0);
	ck_assert_int_eq(store_commit_unsynced(st), 0);
	ck_assert_uint_eq(disk_syncs, before);

	before = disk_syncs;
	add_volume(a, "v3", 3, 0);
	ck_assert_uint_gt(disk_syncs, before);
}
END_TEST

/* An unsynced commit is a commit (kept across a reopen), and a rollback or an ordinary
 * transaction after one works as before. */
START_TEST(keeps_an_unsynced_commit_like_any_other)
{
	int64_t a = add_tenant("alice", 2000);
	struct volume got;
	char path[128];

	ck_assert_int_eq(store_begin(st), 0);
	add_volume(a, "lazy", 1, 0);
	ck_assert_int_eq(store_commit_unsynced(st), 0);
	ck_assert_int_eq(store_begin(st), 0);
	add_volume(a, "dropped", 2, 0);
	store_rollback(st);
	ck_assert_int_eq(store_begin(st), 0);
	add_volume(a, "synced", 3, 0);
	ck_assert_int_eq(store_commit(st), 0);

	store_close(st);
	snprintf(path, sizeof path, "%s/db", dir);
	ck_assert_int_eq(store_open(path, &st), 0);
	ck_assert_int_eq(store_volume_get(st, a, "lazy", &got), 0);
	ck_assert_int_eq(store_volume_get(st, a, "dropped", &got), -ENOENT);
	ck_assert_int_eq(store_volume_get(st, a, "synced", &got), 0);
}
END_TEST

/* store_volume_each's callback may use the store, the listing's own query included
 * (kept statements are never handed out while in use). */
struct nested {
	int64_t other;
	size_t rows, inner_rows;
	char names[4][TP_NAME_MAX + 1];
};

static int count_row(const struct volume *v, void *opaque)
{
	struct nested *n = opaque;

	(void)v;
	n->inner_rows++;
	return 0;
}

static int visit_row(const struct volume *v, void *opaque)
{
	struct nested *n = opaque;
	struct volume again;

	ck_assert_uint_lt(n->rows, 4);
	snprintf(n->names[n->rows++], sizeof n->names[0], "%s", v->name);
	ck_assert_int_eq(store_volume_get_by_id(st, v->id, &again), 0);
	ck_assert_str_eq(again.name, v->name);
	return store_volume_each(st, n->other, count_row, n);
}

static int stop_at_second(const struct volume *v, void *opaque)
{
	size_t *seen = opaque;

	(void)v;
	return ++*seen == 2 ? -ECANCELED : 0;
}

START_TEST(lists_row_by_row_while_the_callback_uses_the_store)
{
	int64_t a = add_tenant("alice", 2000), b = add_tenant("bob", 2001);
	struct nested n = {.other = b};
	size_t seen = 0;

	add_volume(a, "c", 1, 0);
	add_volume(a, "a", 2, 0);
	add_volume(a, "b", 3, 0);
	add_volume(b, "x", 4, 0);
	add_volume(b, "y", 5, 0);
	ck_assert_int_eq(store_volume_each(st, a, visit_row, &n), 0);
	ck_assert_uint_eq(n.rows, 3);
	ck_assert_str_eq(n.names[0], "a");
	ck_assert_str_eq(n.names[1], "b");
	ck_assert_str_eq(n.names[2], "c");
	ck_assert_uint_eq(n.inner_rows, 6);
	ck_assert_int_eq(store_volume_each(st, a, stop_at_second, &seen), -ECANCELED);
	ck_assert_uint_eq(seen, 2);
	/* The statement the stopped listing used is free again. */
	n = (struct nested){.other = b};
	ck_assert_int_eq(store_volume_each(st, a, visit_row, &n), 0);
	ck_assert_uint_eq(n.rows, 3);
}
END_TEST

START_TEST(counts_usage_and_children)
{
	int64_t a = add_tenant("alice", 2000);
	struct volume p = add_volume(a, "parent", 1, 0);
	struct usage u;
	uint64_t n;

	add_volume(a, "child", 2, p.id);
	ck_assert_int_eq(store_tenant_usage(st, a, &u), 0);
	ck_assert_uint_eq(u.volumes, 2);
	ck_assert_uint_eq(u.size, 2 << 20);
	ck_assert_int_eq(store_volume_count_children(st, p.id, &n), 0);
	ck_assert_uint_eq(n, 1);
}
END_TEST

/* The totals the quota check reads follow every change, a rolled-back one not at all,
 * and a store opened again (an older store, or one changed behind our back) has them
 * rebuilt from its volumes. */
START_TEST(keeps_usage_totals_through_every_change)
{
	int64_t a = add_tenant("alice", 2000), b = add_tenant("bob", 2001);
	struct volume v1 = add_volume(a, "v1", 1, 0), v2 = add_volume(a, "v2", 2, 0);
	char path[128];
	struct usage u;

	add_volume(b, "b1", 3, 0);
	add_volume(0, "image", 4, 0);
	v1.size = 4 << 20;
	v1.used = 3 << 20;
	ck_assert_int_eq(store_volume_update(st, &v1), 0);
	ck_assert_int_eq(store_volume_remove(st, v2.id), 0);
	ck_assert_int_eq(store_begin(st), 0);
	add_volume(a, "temp", 5, 0);
	store_rollback(st);
	ck_assert_int_eq(store_tenant_usage(st, a, &u), 0);
	ck_assert_uint_eq(u.volumes, 1);
	ck_assert_uint_eq(u.size, 4 << 20);
	ck_assert_uint_eq(u.used, 3 << 20);
	ck_assert_int_eq(store_tenant_usage(st, b, &u), 0);
	ck_assert_uint_eq(u.volumes, 1);
	ck_assert_uint_eq(u.size, 1 << 20);

	/* Reopened: rebuilt, the same. */
	store_close(st);
	snprintf(path, sizeof path, "%s/db", dir);
	ck_assert_int_eq(store_open(path, &st), 0);
	ck_assert_int_eq(store_tenant_usage(st, a, &u), 0);
	ck_assert_uint_eq(u.volumes, 1);
	ck_assert_uint_eq(u.size, 4 << 20);
	ck_assert_uint_eq(u.used, 3 << 20);

	/* A tenant without volumes has none; one whose volumes are gone can be removed. */
	ck_assert_int_eq(store_tenant_usage(st, add_tenant("carol", 2002), &u), 0);
	ck_assert_uint_eq(u.volumes + u.size + u.used, 0);
	ck_assert_int_eq(store_volume_remove(st, v1.id), 0);
	ck_assert_int_eq(store_tenant_usage(st, a, &u), 0);
	ck_assert_uint_eq(u.volumes + u.size + u.used, 0);
	ck_assert_int_eq(store_tenant_remove(st, a), 0);
}
END_TEST

START_TEST(shows_images_only_where_published)
{
	int64_t a = add_tenant("alice", 2000), b = add_tenant("bob", 2001);
	struct volume img = add_volume(0, "base", 1, 0), *vis = NULL;
	size_t n;

	img.state = VOLUME_COMMITTED;
	ck_assert_int_eq(store_volume_update(st, &img), 0);
	ck_assert_int_eq(store_images_visible(st, a, &vis, &n), 0);
	ck_assert_uint_eq(n, 0);
	free(vis);
	ck_assert_int_eq(store_publish(st, img.id, b), 0);
	ck_assert_int_eq(store_images_visible(st, a, &vis, &n), 0);
	ck_assert_uint_eq(n, 0);
	free(vis);
	ck_assert_int_eq(store_images_visible(st, b, &vis, &n), 0);
	ck_assert_uint_eq(n, 1);
	free(vis);
	ck_assert_int_eq(store_publish(st, img.id, 0), 0);
	ck_assert_int_eq(store_images_visible(st, a, &vis, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(vis[0].name, "base");
	free(vis);
}
END_TEST

START_TEST(removing_a_tenant_removes_its_grants)
{
	int64_t a = add_tenant("alice", 2000), b = add_tenant("bob", 2001);
	struct volume v = add_volume(a, "v", 1, 0);
	struct grant g = {.volume_id = v.id, .tenant_id = b, .write = true}, got;

	ck_assert_int_eq(store_grant_set(st, &g), 0);
	ck_assert_int_eq(store_grant_get(st, v.id, b, &got), 0);
	ck_assert(got.write);
	ck_assert_int_eq(store_tenant_remove(st, b), 0);
	ck_assert_int_eq(store_grant_get(st, v.id, b, &got), -ENOENT);
}
END_TEST

/* Labels as an array literal: L("k", "v"), ... */
#define LABELS(...) ((const struct tp_label[]){__VA_ARGS__})

/* Assert that volume ID has exactly the labels "k=v,k2=v2" (by key), or none for "". */
static void assert_labels(int64_t id, const char *want)
{
	struct tp_label *labels = NULL;
	char got[4096] = "";
	size_t n = 99, len = 0;

	ck_assert_int_eq(store_labels_get(st, id, &labels, &n), 0);
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(got + len, sizeof got - len, "%s%s=%s", i ? "," : "",
		                        labels[i].key, labels[i].value);
	free(labels);
	ck_assert_str_eq(got, want);
}

START_TEST(labels_survive_restart)
{
	int64_t a = add_tenant("alice", 2000);
	struct volume v = add_volume(a, "v", 1, 0);

	ck_assert_int_eq(store_begin(st), 0);
	ck_assert_int_eq(store_labels_set(st, v.id,
	                                  LABELS({"containerd.io/gc.root", "2024"},
	                                         {"\xc3\xa9t\xc3\xa9", "line\nbreak"}, {"a", ""}),
	                                  3),
	                 0);
	ck_assert_int_eq(store_commit(st), 0);
	reopen();
	assert_labels(v.id, "a=,containerd.io/gc.root=2024,\xc3\xa9t\xc3\xa9=line\nbreak");
}
END_TEST

/* A volume's labels go with its row, and a rolled-back transaction leaves none of its own. */
START_TEST(labels_go_with_their_volume)
{
	int64_t a = add_tenant("alice", 2000);
	struct volume v = add_volume(a, "v", 1, 0), w;
	uint64_t n = 9;

	ck_assert_int_eq(store_labels_set(st, v.id, LABELS({"k", "v"}), 1), 0);
	ck_assert_int_eq(store_volume_remove(st, v.id), 0);
	ck_assert_int_eq(store_labels_count(st, v.id, &n), 0);
	ck_assert_uint_eq(n, 0);
	/* A new row may get the same id: it starts without labels. */
	w = add_volume(a, "w", 2, 0);
	assert_labels(w.id, "");
	ck_assert_int_eq(store_begin(st), 0);
	ck_assert_int_eq(store_labels_set(st, w.id, LABELS({"k", "v"}), 1), 0);
	store_rollback(st);
	assert_labels(w.id, "");
	/* A tenant's removal takes its volumes' labels (the volumes go first). */
	ck_assert_int_eq(store_labels_set(st, w.id, LABELS({"k", "v"}), 1), 0);
	ck_assert_int_eq(store_volume_remove(st, w.id), 0);
	ck_assert_int_eq(store_tenant_remove(st, a), 0);
	ck_assert_int_eq(store_labels_count(st, w.id, &n), 0);
	ck_assert_uint_eq(n, 0);
}
END_TEST

/* A merge patch: a value sets, NULL removes, and only a real difference counts as a
 * change. A set replaces everything. */
START_TEST(patches_labels_and_says_whether_anything_changed)
{
	int64_t a = add_tenant("alice", 2000);
	struct volume v = add_volume(a, "v", 1, 0);
	bool changed = true;

	ck_assert_int_eq(store_labels_set(st, v.id, LABELS({"a", "1"}, {"b", "2"}), 2), 0);
	ck_assert_int_eq(
	    store_labels_patch(st, v.id, LABELS({"a", "1"}, {"gone", NULL}), 2, &changed), 0);
	ck_assert(!changed);
	ck_assert_int_eq(store_labels_patch(st, v.id, LABELS({"a", "one"}, {"b", NULL}, {"c", "3"}),
	                                    3, &changed),
	                 0);
	ck_assert(changed);
	assert_labels(v.id, "a=one,c=3");
	ck_assert_int_eq(store_labels_set(st, v.id, LABELS({"z", "26"}), 1), 0);
	assert_labels(v.id, "z=26");
	ck_assert_int_eq(store_labels_set(st, v.id, NULL, 0), 0);
	assert_labels(v.id, "");
}
END_TEST

/* Collects the names a listing hands out, comma-separated. */
static int collect_name(const struct volume *v, void *opaque)
{
	char *names = opaque;
	size_t len = strlen(names);

	snprintf(names + len, 256 - len, "%s%s", len ? "," : "", v->name);
	return 0;
}

static const char *listed(int64_t tenant, const struct tp_label *filter, size_t n)
{
	static char names[256];

	names[0] = '\0';
	ck_assert_int_eq(store_volume_each_labelled(st, tenant, filter, n, collect_name, names), 0);
	return names;
}

/* KEY=VALUE matches that exact value (bytes: no prefix, no case folding), KEY alone any
 * value; every label of the filter must hold; only the tenant's own volumes. */
START_TEST(label_filter_matches_exact_value)
{
	int64_t a = add_tenant("alice", 2000), b = add_tenant("bob", 2001);
	struct volume x = add_volume(a, "x", 1, 0), y = add_volume(a, "y", 2, 0);
	struct volume z = add_volume(a, "z", 3, 0), bx = add_volume(b, "x", 4, 0);

	ck_assert_int_eq(store_labels_set(st, x.id, LABELS({"kind", "active"}, {"fs", "ext4"}), 2),
	                 0);
	ck_assert_int_eq(store_labels_set(st, y.id, LABELS({"kind", "activ"}, {"fs", "xfs"}), 2),
	                 0);
	ck_assert_int_eq(store_labels_set(st, z.id, LABELS({"kind", "Active"}), 1), 0);
	ck_assert_int_eq(store_labels_set(st, bx.id, LABELS({"kind", "active"}), 1), 0);
	ck_assert_str_eq(listed(a, LABELS({"kind", "active"}), 1), "x");
	ck_assert_str_eq(listed(a, LABELS({"kind", NULL}), 1), "x,y,z");
	ck_assert_str_eq(listed(a, LABELS({"fs", NULL}, {"kind", "activ"}), 2), "y");
	ck_assert_str_eq(listed(a, LABELS({"fs", "ext4"}, {"kind", "activ"}), 2), "");
	ck_assert_str_eq(listed(a, LABELS({"kind", ""}), 1), "");
	ck_assert_str_eq(listed(a, LABELS({"nothing", NULL}), 1), "");
	ck_assert_str_eq(listed(b, LABELS({"kind", "active"}), 1), "x");
	ck_assert_str_eq(listed(a, NULL, 0), "x,y,z");
}
END_TEST

/* A rename to a name the tenant already has changes nothing, and a transaction that
 * renames, changes the state and replaces the labels is undone whole. */
START_TEST(rename_to_taken_name_changes_nothing)
{
	int64_t a = add_tenant("alice", 2000), b = add_tenant("bob", 2001);
	struct volume v = add_volume(a, "v", 1, 0), got;

	add_volume(a, "taken", 2, 0);
	add_volume(b, "free", 3, 0);
	ck_assert_int_eq(store_labels_set(st, v.id, LABELS({"k", "old"}), 1), 0);

	ck_assert_int_eq(store_begin(st), 0);
	v.state = VOLUME_COMMITTED;
	v.updated = v.created + 60;
	ck_assert_int_eq(store_labels_set(st, v.id, LABELS({"k", "new"}), 1), 0);
	snprintf(v.name, sizeof v.name, "taken");
	ck_assert_int_eq(store_volume_update(st, &v), -EEXIST);
	store_rollback(st);
	ck_assert_int_eq(store_volume_get(st, a, "v", &got), 0);
	ck_assert_int_eq(got.state, VOLUME_READY);
	ck_assert_int_eq(got.updated, got.created);
	assert_labels(v.id, "k=old");

	/* Another tenant's name is no obstacle; the row keeps its id, and so its labels. */
	snprintf(v.name, sizeof v.name, "free");
	ck_assert_int_eq(store_volume_update(st, &v), 0);
	ck_assert_int_eq(store_volume_get(st, a, "v", &got), -ENOENT);
	ck_assert_int_eq(store_volume_get(st, a, "free", &got), 0);
	ck_assert_int_eq(got.id, v.id);
	ck_assert_int_eq(got.state, VOLUME_COMMITTED);
	ck_assert_int_eq(got.updated, v.created + 60);
	assert_labels(got.id, "k=old");
}
END_TEST

/* A store made before labels (its volumes without "updated", no labels table) gains both
 * when opened, and its volumes were last updated when they were created. */
START_TEST(upgrades_a_store_made_before_labels)
{
	int64_t a = add_tenant("alice", 2000);
	struct volume v = add_volume(a, "v", 1, 0), got;

	exec_raw("DROP TABLE labels; ALTER TABLE volumes DROP COLUMN updated;"
	         " UPDATE volumes SET created = 1700000000");
	reopen();
	ck_assert_int_eq(store_volume_get(st, a, "v", &got), 0);
	ck_assert_int_eq(got.created, 1700000000);
	ck_assert_int_eq(got.updated, 1700000000);
	ck_assert_int_eq(store_labels_set(st, v.id, LABELS({"k", "v"}), 1), 0);
	assert_labels(v.id, "k=v");
	/* Opened again, it is left as it is; a volume an older thinproxy added meanwhile
	 * (the column at its default) was last updated when it was created. */
	exec_raw("INSERT INTO volumes (tenant_id, name, thin_id, size, state, created)"
	         " VALUES (1, 'old', 9, 65536, 1, 1700000009)");
	reopen();
	assert_labels(v.id, "k=v");
	ck_assert_int_eq(store_volume_get(st, a, "v", &got), 0);
	ck_assert_int_eq(got.updated, 1700000000);
	ck_assert_int_eq(store_volume_get(st, a, "old", &got), 0);
	ck_assert_int_eq(got.updated, 1700000009);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("store");
	TCase *tc = tcase_create("store");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, starts_with_pool_transaction_id_zero_and_keeps_what_is_set);
	tcase_add_test(tc, same_volume_name_in_two_tenants_but_not_twice_in_one);
	tcase_add_test(tc, refuses_a_thin_id_twice);
	tcase_add_test(tc, hands_out_a_removed_volumes_thin_id_again_only_after_going_round);
	tcase_add_test(tc, never_hands_out_a_foreign_thin_id);
	tcase_add_test(tc, reports_no_free_thin_id_when_all_are_taken);
	tcase_add_test(tc, marks_a_legacy_stores_ids_for_checking);
	tcase_add_test(tc, lists_volumes_in_a_state);
	tcase_add_test(tc, keeps_one_change_record);
	tcase_add_test(tc, keeps_a_pairing_until_cleared);
	tcase_add_test(tc, never_reuses_a_removed_tenants_nbd_uid);
	tcase_add_test(tc, spends_an_nbd_uid_even_when_no_tenant_takes_it);
	tcase_add_test(tc, follows_a_raised_nbd_uid_base_and_not_a_lowered_one);
	tcase_add_test(tc, counts_on_above_the_highest_nbd_uid_of_an_older_store);
	tcase_add_test(tc, runs_out_of_nbd_uids_below_the_invalid_uid);
	tcase_add_test(tc, rolls_back_an_uncommitted_transaction);
	tcase_add_test(tc, keeps_an_unsynced_commit_like_any_other);
	tcase_add_test(tc, syncs_every_commit_but_the_unsynced_ones);
	tcase_add_test(tc, lists_row_by_row_while_the_callback_uses_the_store);
	tcase_add_test(tc, counts_usage_and_children);
	tcase_add_test(tc, keeps_usage_totals_through_every_change);
	tcase_add_test(tc, shows_images_only_where_published);
	tcase_add_test(tc, removing_a_tenant_removes_its_grants);
	tcase_add_test(tc, labels_survive_restart);
	tcase_add_test(tc, labels_go_with_their_volume);
	tcase_add_test(tc, patches_labels_and_says_whether_anything_changed);
	tcase_add_test(tc, label_filter_matches_exact_value);
	tcase_add_test(tc, rename_to_taken_name_changes_nothing);
	tcase_add_test(tc, upgrades_a_store_made_before_labels);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
