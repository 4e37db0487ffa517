/* Tests for daemon/rbd-meta.c against a real one-node Ceph cluster, which
 * tests/ceph/test-rbd-meta.sh starts and describes in the environment: CEPH_CONF,
 * CEPH_TEST_DIR (with admin.keyring), CEPH_TEST_POOL, and RBD_META_TENANT_CLIENT and
 * RBD_META_TENANT_KEYRING (a tenant's key, caps `profile rbd` on its namespace
 * RBD_META_TENANT_NAMESPACE only).
 *
 * Two "hosts" are two connections of their own to the cluster, as two thinproxyd would
 * have. Each test uses keys of its own. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <rados/librados.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/rbd-meta.h"
#include "ceph-harness.h"
#include "tp-cleanup.h"

#define RACE_ROUNDS 200
#define LIST_KEYS   1500

static const char *tenant_client, *tenant_keyring, *tenant_ns;

/* A daemon's connection, as client.admin, or fail the test. */
static struct rbd_meta *host(void)
{
	struct rbd_meta *meta = NULL;
	int r;

	r = rbd_meta_connect(ceph_cluster.conf, "client.admin", ceph_cluster.admin_keyring,
	                     ceph_cluster.pool, &meta);
	ck_assert_msg(r == 0, "rbd_meta_connect: %s", strerror(-r));
	return meta;
}

/* Check that KEY's value is WANT, or that it has none if WANT is NULL. */
static void check_value(struct rbd_meta *meta, const char *key, const char *want)
{
	CLEANUP_FREE char *got = NULL;
	int r = rbd_meta_get(meta, key, &got);

	if (want == NULL) {
		ck_assert_int_eq(r, -ENOENT);
		return;
	}
	ck_assert_msg(r == 0, "get %s: %s", key, strerror(-r));
	ck_assert_str_eq(got, want);
}

static int count_any(void *arg, const char *key, const char *value)
{
	(void)key;
	(void)value;
	(*(int *)arg)++;
	return 0;
}

/* First: the pool's object does not exist yet. */
START_TEST(before_any_change_get_list_replace_and_remove_find_nothing)
{
	struct rbd_meta *a = host();
	CLEANUP_FREE char *v = NULL;
	int n = 0;

	ck_assert_int_eq(rbd_meta_get(a, "tenant/alice", &v), -ENOENT);
	ck_assert_int_eq(rbd_meta_list(a, "tenant/", RBD_META_PAGE, count_any, &n), 0);
	ck_assert_int_eq(n, 0);
	ck_assert_int_eq(rbd_meta_replace(a, "tenant/alice", "{}", "{\"uid\":1}"), -ESTALE);
	ck_assert_int_eq(rbd_meta_remove(a, "tenant/alice", "{}"), -ESTALE);
	ck_assert_int_eq(rbd_meta_get(a, "tenant/alice", &v), -ENOENT);
	rbd_meta_close(a);
}
END_TEST

START_TEST(put_new_then_get_returns_the_value_and_a_second_put_is_eexist)
{
	struct rbd_meta *a = host(), *b = host();

	check_value(a, "tenant/alice", NULL);
	ck_assert_int_eq(rbd_meta_put_new(a, "tenant/alice", "{\"uid\":1000}"), 0);
	/* The other host sees it at once. */
	check_value(b, "tenant/alice", "{\"uid\":1000}");
	ck_assert_int_eq(rbd_meta_put_new(b, "tenant/alice", "{\"uid\":2000}"), -EEXIST);
	check_value(a, "tenant/alice", "{\"uid\":1000}");
	rbd_meta_close(b);
	rbd_meta_close(a);
}
END_TEST

/* One racer: its host, its id, and where it says how each round went. */
struct racer {
	struct rbd_meta *meta;
	pthread_barrier_t *start;
	char id;
	int result[RACE_ROUNDS];
};

static void *race(void *arg)
{
	struct racer *p = arg;

	for (int i = 0; i < RACE_ROUNDS; i++) {
		char key[64], value[64];

		snprintf(key, sizeof key, "tenant/race-%d", i);
		snprintf(value, sizeof value, "{\"host\":\"%c\"}", p->id);
		/* Both threads send their put of the round at once. */
		pthread_barrier_wait(p->start);
		p->result[i] = rbd_meta_put_new(p->meta, key, value);
	}
	return NULL;
}

START_TEST(racing_put_new_from_two_hosts_has_exactly_one_winner_each_time)
{
	pthread_barrier_t start;
	struct racer r[2] = {{.meta = host(), .start = &start, .id = 'a'},
	                     {.meta = host(), .start = &start, .id = 'b'}};
	pthread_t t[2];
	int wins[2] = {0, 0};

	ck_assert_int_eq(pthread_barrier_init(&start, NULL, 2), 0);
	for (int k = 0; k < 2; k++)
		ck_assert_int_eq(pthread_create(&t[k], NULL, race, &r[k]), 0);
	for (int k = 0; k < 2; k++)
		ck_assert_int_eq(pthread_join(t[k], NULL), 0);
	for (int i = 0; i < RACE_ROUNDS; i++) {
		char key[64], value[64];
		int w = r[0].result[i] == 0 ? 0 : 1;

		ck_assert_msg((r[0].result[i] == 0 && r[1].result[i] == -EEXIST) ||
		                  (r[0].result[i] == -EEXIST && r[1].result[i] == 0),
		              "round %d: a %d, b %d", i, r[0].result[i], r[1].result[i]);
		/* What is stored is the winner's. */
		snprintf(key, sizeof key, "tenant/race-%d", i);
		snprintf(value, sizeof value, "{\"host\":\"%c\"}", r[w].id);
		check_value(r[1 - w].meta, key, value);
		wins[w]++;
	}
	fprintf(stderr, "test-rbd-meta: %d rounds, a won %d, b won %d\n", RACE_ROUNDS, wins[0],
	        wins[1]);
	pthread_barrier_destroy(&start);
	rbd_meta_close(r[1].meta);
	rbd_meta_close(r[0].meta);
}
END_TEST

START_TEST(replace_with_a_stale_value_fails_and_changes_nothing)
{
	struct rbd_meta *a = host(), *b = host();
	const char *key = "volume/alice/vol1";

	ck_assert_int_eq(rbd_meta_put_new(a, key, "{\"v\":1}"), 0);
	/* Both read version 1; b changes it first. */
	ck_assert_int_eq(rbd_meta_replace(b, key, "{\"v\":1}", "{\"v\":2,\"by\":\"b\"}"), 0);
	ck_assert_int_eq(rbd_meta_replace(a, key, "{\"v\":1}", "{\"v\":2,\"by\":\"a\"}"), -ESTALE);
	check_value(a, key, "{\"v\":2,\"by\":\"b\"}");
	/* With the value it now has, a succeeds. */
	ck_assert_int_eq(rbd_meta_replace(a, key, "{\"v\":2,\"by\":\"b\"}", "{\"v\":3}"), 0);
	check_value(b, key, "{\"v\":3}");
	/* A key nobody made is stale too, and is not made. */
	ck_assert_int_eq(rbd_meta_replace(a, "volume/alice/none", "{\"v\":1}", "{\"v\":2}"),
	                 -ESTALE);
	check_value(a, "volume/alice/none", NULL);
	rbd_meta_close(b);
	rbd_meta_close(a);
}
END_TEST

START_TEST(remove_takes_the_key_only_if_its_value_is_the_expected_one)
{
	struct rbd_meta *a = host(), *b = host();
	const char *key = "intent/alice/vol1";

	ck_assert_int_eq(rbd_meta_put_new(a, key, "{\"op\":\"create\"}"), 0);
	ck_assert_int_eq(rbd_meta_replace(b, key, "{\"op\":\"create\"}", "{\"op\":\"remove\"}"), 0);
	ck_assert_int_eq(rbd_meta_remove(a, key, "{\"op\":\"create\"}"), -ESTALE);
	check_value(b, key, "{\"op\":\"remove\"}");
	ck_assert_int_eq(rbd_meta_remove(a, key, "{\"op\":\"remove\"}"), 0);
	check_value(b, key, NULL);
	ck_assert_int_eq(rbd_meta_remove(b, key, "{\"op\":\"remove\"}"), -ESTALE);
	/* And the key can be made again. */
	ck_assert_int_eq(rbd_meta_put_new(b, key, "{\"op\":\"snapshot\"}"), 0);
	check_value(a, key, "{\"op\":\"snapshot\"}");
	rbd_meta_close(b);
	rbd_meta_close(a);
}
END_TEST

struct seen {
	int n;
	int stop_at; /* -1: never */
	char last[128];
};

static int count_key(void *arg, const char *key, const char *value)
{
	struct seen *s = arg;
	char want[128];

	/* In order, each once, with its own value. */
	ck_assert_msg(strcmp(s->last, key) < 0, "%s after %s", key, s->last);
	snprintf(want, sizeof want, "{\"n\":%d}", (int)strtol(strrchr(key, 'v') + 1, NULL, 10));
	ck_assert_str_eq(value, want);
	snprintf(s->last, sizeof s->last, "%s", key);
	if (s->n++ == s->stop_at)
		return -EINTR;
	return 0;
}

START_TEST(list_with_prefix_pages_over_more_than_one_page)
{
	struct rbd_meta *a = host(), *b = host();
	struct seen s = {.stop_at = -1};

	for (int i = 0; i < LIST_KEYS; i++) {
		char key[64], value[64];

		snprintf(key, sizeof key, "volume/pager/v%04d", i);
		snprintf(value, sizeof value, "{\"n\":%d}", i);
		ck_assert_int_eq(rbd_meta_put_new(a, key, value), 0);
	}
	/* Neighbours that must not be listed: a longer tenant name, another kind. */
	ck_assert_int_eq(rbd_meta_put_new(a, "volume/pagerx/v0001", "{\"n\":1}"), 0);
	ck_assert_int_eq(rbd_meta_put_new(a, "tenant/pager", "{}"), 0);
	ck_assert_int_eq(rbd_meta_list(b, "volume/pager/", RBD_META_PAGE, count_key, &s), 0);
	ck_assert_int_eq(s.n, LIST_KEYS);
	ck_assert_str_eq(s.last, "volume/pager/v1499");
	/* Small pages give the same. */
	s = (struct seen){.stop_at = -1};
	ck_assert_int_eq(rbd_meta_list(b, "volume/pager/", 7, count_key, &s), 0);
	ck_assert_int_eq(s.n, LIST_KEYS);
	/* The callback stops it, in the second page, with its error. */
	s = (struct seen){.stop_at = 600};
	ck_assert_int_eq(rbd_meta_list(b, "volume/pager/", RBD_META_PAGE, count_key, &s), -EINTR);
	ck_assert_int_eq(s.n, 601);
	/* Nothing under a prefix is nothing. */
	s = (struct seen){.stop_at = -1};
	ck_assert_int_eq(rbd_meta_list(b, "grant/nobody/", RBD_META_PAGE, count_key, &s), 0);
	ck_assert_int_eq(s.n, 0);
	rbd_meta_close(b);
	rbd_meta_close(a);
}
END_TEST

START_TEST(rejects_invalid_keys_values_and_prefixes)
{
	struct rbd_meta *a = host();
	static const char *const bad_keys[] = {
	    "",          "tenant",    "tenant/", "/tenant/a",      "tenant//a", "tenant/Alice",
	    "tenant/_a", "tenants/a", "meta/a",  "tenant/a/b/c/d", "tenant/a/", "tenant/a b"};
	char big[RBD_META_VALUE_MAX + 2];
	CLEANUP_FREE char *v = NULL;
	struct seen s = {.stop_at = -1};

	for (size_t i = 0; i < sizeof bad_keys / sizeof *bad_keys; i++) {
		ck_assert_msg(!rbd_meta_key_valid(bad_keys[i]), "%s valid", bad_keys[i]);
		ck_assert_int_eq(rbd_meta_put_new(a, bad_keys[i], "{}"), -EINVAL);
		ck_assert_int_eq(rbd_meta_get(a, bad_keys[i], &v), -EINVAL);
	}
	ck_assert(rbd_meta_key_valid("grant/alice/img/bob"));
	/* Values: not empty (an absent key compares as empty), bounded. */
	ck_assert_int_eq(rbd_meta_put_new(a, "tenant/bad", ""), -EINVAL);
	memset(big, '1', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	ck_assert_int_eq(rbd_meta_put_new(a, "tenant/bad", big), -EINVAL);
	big[RBD_META_VALUE_MAX] = '\0';
	ck_assert_int_eq(rbd_meta_put_new(a, "tenant/big", big), 0);
	ck_assert_int_eq(rbd_meta_get(a, "tenant/big", &v), 0);
	ck_assert_uint_eq(strlen(v), RBD_META_VALUE_MAX);
	ck_assert_int_eq(rbd_meta_replace(a, "tenant/big", "", "{}"), -EINVAL);
	ck_assert_int_eq(rbd_meta_remove(a, "tenant/big", ""), -EINVAL);
	check_value(a, "tenant/bad", NULL);
	/* Prefixes end in '/' and hold at most two names. */
	ck_assert_int_eq(rbd_meta_list(a, "tenant", 10, count_key, &s), -EINVAL);
	ck_assert_int_eq(rbd_meta_list(a, "", 10, count_key, &s), -EINVAL);
	ck_assert_int_eq(rbd_meta_list(a, "grant/a/b/c/", 10, count_key, &s), -EINVAL);
	ck_assert_int_eq(rbd_meta_list(a, "tenant/", 0, count_key, &s), -EINVAL);
	ck_assert_int_eq(rbd_meta_list(a, "tenant/", RBD_META_PAGE + 1, count_key, &s), -EINVAL);
	rbd_meta_close(a);
}
END_TEST

START_TEST(tenant_key_cannot_read_or_write_the_meta_object)
{
	struct rbd_meta *a = host(), *t = NULL;
	CLEANUP_FREE char *v = NULL;
	struct seen s = {.stop_at = -1};
	rados_t cluster;
	rados_ioctx_t io;
	char buf[16];

	ck_assert_int_eq(rbd_meta_put_new(a, "tenant/victim", "{\"uid\":1}"), 0);
	ck_assert_int_eq(rbd_meta_connect(ceph_cluster.conf, tenant_client, tenant_keyring,
	                                  ceph_cluster.pool, &t),
	                 0);
	ck_assert_int_eq(rbd_meta_get(t, "tenant/victim", &v), -EPERM);
	ck_assert_int_eq(rbd_meta_list(t, "tenant/", RBD_META_PAGE, count_key, &s), -EPERM);
	ck_assert_int_eq(rbd_meta_put_new(t, "tenant/mallory", "{\"uid\":0}"), -EPERM);
	ck_assert_int_eq(rbd_meta_replace(t, "tenant/victim", "{\"uid\":1}", "{\"uid\":0}"),
	                 -EPERM);
	ck_assert_int_eq(rbd_meta_remove(t, "tenant/victim", "{\"uid\":1}"), -EPERM);
	rbd_meta_close(t);
	check_value(a, "tenant/victim", "{\"uid\":1}");
	check_value(a, "tenant/mallory", NULL);
	/* With its own librados too: the whole object, while its own namespace works. */
	ck_assert_int_eq(ceph_harness_connect(tenant_client, tenant_keyring, &cluster), 0);
	io = ceph_harness_ioctx(cluster, tenant_ns);
	ck_assert_int_eq(rados_write_full(io, "mine", "x", 1), 0);
	rados_ioctx_set_namespace(io, RBD_META_NAMESPACE);
	ck_assert_int_eq(rados_read(io, RBD_META_OBJECT, buf, sizeof buf, 0), -EPERM);
	ck_assert_int_eq(rados_remove(io, RBD_META_OBJECT), -EPERM);
	ck_assert_int_eq(rados_write_full(io, RBD_META_OBJECT, "x", 1), -EPERM);
	rados_ioctx_destroy(io);
	rados_shutdown(cluster);
	check_value(a, "tenant/victim", "{\"uid\":1}");
	rbd_meta_close(a);
}
END_TEST

int main(void)
{
	const TTest *tests[] = {
	    before_any_change_get_list_replace_and_remove_find_nothing,
	    put_new_then_get_returns_the_value_and_a_second_put_is_eexist,
	    racing_put_new_from_two_hosts_has_exactly_one_winner_each_time,
	    replace_with_a_stale_value_fails_and_changes_nothing,
	    remove_takes_the_key_only_if_its_value_is_the_expected_one,
	    list_with_prefix_pages_over_more_than_one_page,
	    rejects_invalid_keys_values_and_prefixes,
	    tenant_key_cannot_read_or_write_the_meta_object,
	};

	tenant_client = ceph_harness_env("RBD_META_TENANT_CLIENT");
	tenant_keyring = ceph_harness_env("RBD_META_TENANT_KEYRING");
	tenant_ns = ceph_harness_env("RBD_META_TENANT_NAMESPACE");
	return ceph_harness_run("rbd-meta", tests, ARRAY_SIZE(tests));
}
