/* Unit tests for daemon/ops.h's errors, on a real SQLite store and the fake pool of
 * tests/unit/fake-pool.c: every refusal carries its code (include/tp-error.h), set where
 * the refusal is made, whatever its message says; no error outlives its call; only a
 * volume that may have changed is activated to read its used bytes; a new tenant is
 * brought up once committed; and the tenants' allocations are counted again only once
 * the store or the pool's usage changed. */
#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/log.h"
#include "../../daemon/ops.h"
#include "../../daemon/pool.h"
#include "../../daemon/store.h"
#include "fake-pool.h"

#define MIB (UINT64_C(1) << 20)

static char dir[64];
static struct store *st;
static struct pool *pool;
static struct principal alice;

static void setup(void)
{
	struct pool_config pc = {.state_dir = dir};
	struct ops_config oc = {.nbd_uid_base = 60000};
	struct tenant_spec spec = {.name = "alice"};
	struct tenant_view tv;
	char path[128];

	log_init("test-ops", false, LOG_CRIT);
	strcpy(dir, "/tmp/test-ops.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/db", dir);
	ck_assert_int_eq(store_open(path, &st), 0);
	ck_assert_int_eq(pool_open(&pc, &pool), 0);
	ck_assert_int_eq(ops_init(st, pool, &oc), 0);
	ck_assert_int_eq(ops_tenant_add(&spec, &tv), 0);
	ck_assert_int_eq(ops_principal_for_tenant("alice", &alice), 0);
}

static void teardown(void)
{
	char cmd[128];

	ops_shutdown();
	pool_close(pool);
	store_close(st);
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* R is the error ops gave CODE, with a message. */
#define ck_assert_refused(r, err, code)                       \
	do {                                                  \
		int r_ = (r);                                 \
		ck_assert_int_eq(r_, (err));                  \
		ck_assert_int_eq(ops_error_code(r_), (code)); \
		ck_assert_str_ne(ops_error_message(), "");    \
	} while (0)

START_TEST(gives_each_refusal_its_code)
{
	struct volume_view v;

	ck_assert_refused(ops_volume_create(&alice, "Bad", 8 * MIB, NULL, &v), -EINVAL,
	                  TP_ERROR_INVALID_NAME);
	ck_assert_refused(ops_volume_create(&alice, "v", 8 * MIB + 1, NULL, &v), -EINVAL,
	                  TP_ERROR_INVALID_SIZE);
	ck_assert_int_eq(ops_volume_create(&alice, "v", 8 * MIB, NULL, &v), 0);
	ops_volume_view_clear(&v);
	ck_assert_refused(ops_volume_create(&alice, "v", 8 * MIB, NULL, &v), -EEXIST,
	                  TP_ERROR_EXISTS);
	ck_assert_refused(ops_volume_resize(&alice, "v", 4 * MIB, &v), -EINVAL,
	                  TP_ERROR_INVALID_SIZE);
	ck_assert_refused(ops_volume_snapshot(&alice, "s", "v", 4 * MIB, NULL, &v), -EINVAL,
	                  TP_ERROR_INVALID_SIZE);
	ck_assert_refused(ops_volume_commit(&alice, "v", "Done", NULL, &v), -EINVAL,
	                  TP_ERROR_INVALID_NAME);
	ck_assert_refused(ops_volume_info(&alice, "nosuch", &v), -ENOENT, TP_ERROR_NOT_FOUND);
	ck_assert_int_eq(ops_volume_commit(&alice, "v", NULL, NULL, &v), 0);
	ops_volume_view_clear(&v);
	ck_assert_refused(ops_volume_resize(&alice, "v", 16 * MIB, &v), -EROFS, TP_ERROR_READ_ONLY);
	ck_assert_int_eq(ops_volume_snapshot(&alice, "s", "v", 0, NULL, &v), 0);
	ops_volume_view_clear(&v);
	ck_assert_refused(ops_volume_remove(&alice, "v"), -EBUSY, TP_ERROR_BUSY);
}
END_TEST

/* A message is for people: one that reads like a bad name (a grant to its own owner,
 * of a volume named with spaces) is still the request's error. */
START_TEST(takes_no_code_from_the_words)
{
	struct grant_view g = {.owner = "alice", .to = "alice"};

	snprintf(g.volume, sizeof g.volume, "my name here");
	ck_assert_refused(ops_grant(&g), -EINVAL, TP_ERROR_INVALID_REQUEST);
	ck_assert_ptr_nonnull(strstr(ops_error_message(), " name "));
}
END_TEST

/* The error of a call is gone when the next call succeeds. */
START_TEST(forgets_an_error_with_the_next_call)
{
	struct volume_view v;

	ck_assert_refused(ops_volume_create(&alice, "Bad", 8 * MIB, NULL, &v), -EINVAL,
	                  TP_ERROR_INVALID_NAME);
	ck_assert_int_eq(ops_volume_create(&alice, "good", 8 * MIB, NULL, &v), 0);
	ops_volume_view_clear(&v);
	ck_assert_str_eq(ops_error_message(), "");
	/* An error the call gives no code of its own is known by its errno. */
	ck_assert_int_eq(ops_error_code(-ENOSPC), TP_ERROR_POOL_FULL);
	ck_assert_int_eq(ops_error_code(-EIO), TP_ERROR_INTERNAL);
}
END_TEST

/* The tenant callbacks of the next test: what tenant_up saw, and whether it fails. */
static struct {
	int fail;           /* tenant_up's answer for tenant "bob" */
	bool bob_committed; /* bob was in the store, no transaction open */
	int ups, downs;
} cb;

static int up(const struct tenant *t)
{
	struct tenant seen;
	bool in_transaction;

	if (strcmp(t->name, "bob") != 0)
		return 0;
	cb.ups++;
	/* Committed: in the store, and no transaction open around the call (a BEGIN inside
	 * one fails). */
	in_transaction = store_begin(st) < 0;
	if (!in_transaction)
		store_rollback(st);
	cb.bob_committed =
	    !in_transaction && store_tenant_get(st, "bob", &seen) == 0 && seen.id == t->id;
	return cb.fail;
}

static void down(const char *name)
{
	if (strcmp(name, "bob") == 0)
		cb.downs++;
}

START_TEST(brings_a_tenant_up_after_its_commit_and_undoes_a_failed_one)
{
	struct ops_config oc = {.nbd_uid_base = 60000, .tenant_up = up, .tenant_down = down};
	struct tenant_spec bob = {.name = "bob"};
	struct tenant_view tv;

	ops_shutdown();
	ck_assert_int_eq(ops_init(st, pool, &oc), 0);
	/* Failing: the add fails, bob is taken down and is not in the store. */
	cb.fail = -EIO;
	ck_assert_refused(ops_tenant_add(&bob, &tv), -EIO, TP_ERROR_INTERNAL);
	ck_assert(cb.bob_committed);
	ck_assert_int_eq(cb.ups, 1);
	ck_assert_int_eq(cb.downs, 1);
	ck_assert_int_eq(ops_tenant_get("bob", &tv), -ENOENT);
	/* Then the same add, brought up once committed. */
	cb = (typeof(cb)){0};
	ck_assert_int_eq(ops_tenant_add(&bob, &tv), 0);
	ck_assert(cb.bob_committed);
	ck_assert_int_eq(cb.ups, 1);
	ck_assert_int_eq(cb.downs, 0);
	ck_assert_int_eq(ops_tenant_get("bob", &tv), 0);
}
END_TEST

/* A committed volume never changes: asking for it reads its used bytes from the store,
 * without activating its thin device, while a writable one's are read from the pool; a
 * commit reads them for good, activating the volume if it is not active. */
START_TEST(activates_only_what_may_have_changed)
{
	struct volume_view v;
	unsigned before;

	ck_assert_int_eq(ops_volume_create(&alice, "v", 8 * MIB, NULL, &v), 0);
	ops_volume_view_clear(&v);
	before = fake_pool_activations();
	ck_assert_int_eq(ops_volume_info(&alice, "v", &v), 0);
	ops_volume_view_clear(&v);
	ck_assert_uint_eq(fake_pool_activations(), before + 1);
	ck_assert_int_eq(ops_volume_commit(&alice, "v", NULL, NULL, &v), 0);
	ops_volume_view_clear(&v);
	ck_assert_uint_eq(fake_pool_activations(), before + 2);
	ck_assert_int_eq(ops_volume_info(&alice, "v", &v), 0);
	ck_assert_str_eq(v.state, "committed");
	ops_volume_view_clear(&v);
	ck_assert_uint_eq(fake_pool_activations(), before + 2);
}
END_TEST

/* The walks of the pool's metadata ops made so far, after one more scrape of /metrics;
 * whether that scrape told alice's allocation. */
static uint64_t walks_after_scrape(bool *ret_told)
{
	char *text = NULL;

	ck_assert_int_eq(ops_metrics(&text), 0);
	*ret_told = strstr(text, "thinproxy_tenant_allocated_bytes{tenant=\"alice\"} 0\n") != NULL;
	free(text);
	return fake_pool_walks(pool);
}

START_TEST(walks_the_metadata_again_only_after_a_change)
{
	struct tenant_spec bob = {.name = "bob"};
	struct tenant_view tv;
	struct volume_view v;
	bool told;

	fake_pool_set_walkable(pool, true);
	ck_assert_uint_eq(walks_after_scrape(&told), 1);
	ck_assert(told);
	/* Nothing changed: the same counts, for every tenant or one. */
	ck_assert_uint_eq(walks_after_scrape(&told), 1);
	ck_assert(told);
	ck_assert_int_eq(ops_usage(&alice, &tv), 0);
	ck_assert(tv.has_allocated);
	ck_assert_uint_eq(fake_pool_walks(pool), 1);
	/* Written to: the pool's used data blocks changed. */
	fake_pool_set_data_used(pool, 5);
	ck_assert_uint_eq(walks_after_scrape(&told), 2);
	ck_assert_uint_eq(walks_after_scrape(&told), 2);
	/* A new tenant. */
	ck_assert_int_eq(ops_tenant_add(&bob, &tv), 0);
	ck_assert_uint_eq(walks_after_scrape(&told), 3);
	ck_assert_uint_eq(walks_after_scrape(&told), 3);
	/* A new volume: its walk fails here (the fake metadata has no blocks), and a failed
	 * count is not kept. */
	ck_assert_int_eq(ops_volume_create(&alice, "v", 8 * MIB, NULL, &v), 0);
	ops_volume_view_clear(&v);
	ck_assert_uint_eq(walks_after_scrape(&told), 4);
	ck_assert(!told);
	ck_assert_uint_eq(walks_after_scrape(&told), 5);
	/* Gone again. */
	ck_assert_int_eq(ops_volume_remove(&alice, "v"), 0);
	ck_assert_uint_eq(walks_after_scrape(&told), 6);
	ck_assert(told);
	ck_assert_uint_eq(walks_after_scrape(&told), 6);
	/* A tenant's removal. */
	ck_assert_int_eq(ops_tenant_remove("bob", false), 0);
	ck_assert_uint_eq(walks_after_scrape(&told), 7);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("ops");
	TCase *tc = tcase_create("ops");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, gives_each_refusal_its_code);
	tcase_add_test(tc, takes_no_code_from_the_words);
	tcase_add_test(tc, forgets_an_error_with_the_next_call);
	tcase_add_test(tc, brings_a_tenant_up_after_its_commit_and_undoes_a_failed_one);
	tcase_add_test(tc, activates_only_what_may_have_changed);
	tcase_add_test(tc, walks_the_metadata_again_only_after_a_change);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
