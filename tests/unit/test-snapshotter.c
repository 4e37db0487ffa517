/* Unit tests for the snapshotter's pure parts: how a snapshot maps onto a volume and its
 * labels (client/snapshotter/mapping.c), containerd's filter language (filter.c) and the
 * hash that names volumes (sha256.c). No daemon, no kernel. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "../../client/snapshotter/filter.h"
#include "../../client/snapshotter/mapping.h"
#include "../../client/snapshotter/sha256.h"

static struct snap_labels labels_of(struct snap_label *items, size_t n)
{
	return (struct snap_labels){.items = items, .n = n};
}

START_TEST(hashes_as_sha256_does)
{
	static const struct {
		const char *in, *hex;
	} cases[] = {
	    {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	    {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	    {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
	     "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		uint8_t d[SHA256_DIGEST_SIZE];
		char hex[65];

		sha256(cases[i].in, strlen(cases[i].in), d);
		for (int j = 0; j < 32; j++)
			snprintf(hex + 2 * j, 3, "%02x", d[j]);
		ck_assert_str_eq(hex, cases[i].hex);
	}
}
END_TEST

START_TEST(names_a_snapshots_volume_c_and_62_hex_digits_of_its_sha256)
{
	char volume[SNAP_VOLUME_SIZE];

	snap_volume_name("abc", volume);
	ck_assert_str_eq(volume, "cba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015");
	ck_assert_uint_eq(strlen(volume), 63);
	ck_assert(snap_is_volume_name(volume));
	ck_assert(!snap_is_volume_name("cba78"));
	ck_assert(!snap_is_volume_name(
	    "dba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015"));
	ck_assert(!snap_is_volume_name(
	    "cBA7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015"));
}
END_TEST

START_TEST(gives_a_key_and_the_same_name_one_volume)
{
	char a[SNAP_VOLUME_SIZE], b[SNAP_VOLUME_SIZE], c[SNAP_VOLUME_SIZE];

	/* containerd's keys carry the namespace ("ns/id/key"): stored as given. */
	snap_volume_name("default/12/extract-1 sha256:aa", a);
	snap_volume_name("default/12/extract-1 sha256:aa", b);
	snap_volume_name("other/12/extract-1 sha256:aa", c);
	ck_assert_str_eq(a, b);
	ck_assert_str_ne(a, c);
}
END_TEST

START_TEST(formats_and_parses_times_to_the_nanosecond)
{
	struct timespec t = {.tv_sec = 1796280960, .tv_nsec = 123456789}, back;
	char buf[48];

	snap_format_time(&t, buf, sizeof buf);
	ck_assert_str_eq(buf, "2026-12-03T06:56:00.123456789Z");
	ck_assert_int_eq(snap_parse_time(buf, &back), 0);
	ck_assert_int_eq(back.tv_sec, t.tv_sec);
	ck_assert_int_eq(back.tv_nsec, t.tv_nsec);
	ck_assert_int_eq(snap_parse_time("2026-12-03T06:56:00Z", &back), 0);
	ck_assert_int_eq(back.tv_nsec, 0);
	ck_assert_int_eq(snap_parse_time("2026-12-03T06:56:00.5Z", &back), 0);
	ck_assert_int_eq(back.tv_nsec, 500000000);
	ck_assert_int_eq(snap_parse_time("2026-12-03T06:56:00", &back), -EINVAL);
	ck_assert_int_eq(snap_parse_time("2026-12-03T06:56:00.Z", &back), -EINVAL);
	ck_assert_int_eq(snap_parse_time("yesterday", &back), -EINVAL);
}
END_TEST

START_TEST(refuses_labels_with_its_own_prefix)
{
	struct snap_label l[] = {{"thinproxy.snapshotter/ready", "1"}};
	struct snap_labels labels = labels_of(l, 1);
	struct snap_status st;

	ck_assert_int_eq(snap_check_labels("prepare k", &labels, &st), SNAP_INVALID_ARGUMENT);
	ck_assert_str_eq(st.message, "prepare k: label thinproxy.snapshotter/ready: the prefix "
	                             "thinproxy.snapshotter/ is the snapshotter's own");
}
END_TEST

START_TEST(refuses_a_label_whose_key_and_value_pass_4096_bytes)
{
	char *value = malloc(4096);
	struct snap_label l[] = {{"containerd.io/x", value}};
	struct snap_labels labels = labels_of(l, 1);
	struct snap_status st;

	memset(value, 'v', 4095 - strlen("containerd.io/x"));
	value[4095 - strlen("containerd.io/x")] = '\0';
	ck_assert_int_eq(snap_check_labels("prepare k", &labels, &st), SNAP_OK);
	strcat(value, "vv");
	ck_assert_int_eq(snap_check_labels("prepare k", &labels, &st), SNAP_INVALID_ARGUMENT);
	ck_assert(strstr(st.message, "greater than maximum size (4096 bytes)") != NULL);
	free(value);
}
END_TEST

START_TEST(leaves_room_among_a_volumes_64_labels_for_its_own)
{
	struct snap_label l[58];
	char keys[58][8];
	struct snap_labels labels = labels_of(l, 57);
	struct snap_status st;

	for (int i = 0; i < 58; i++) {
		snprintf(keys[i], sizeof keys[i], "l%d", i);
		l[i] = (struct snap_label){keys[i], "v"};
	}
	ck_assert_int_eq(snap_check_labels("prepare k", &labels, &st), SNAP_OK);
	labels.n = 58;
	ck_assert_int_eq(snap_check_labels("prepare k", &labels, &st), SNAP_INVALID_ARGUMENT);
}
END_TEST

START_TEST(refuses_empty_keys_and_labels_it_could_not_store)
{
	struct snap_label empty_key[] = {{"", "v"}}, control[] = {{"a\tb", "v"}},
	                  bad_utf8[] = {{"a", "\xff"}};
	struct snap_labels l1 = labels_of(empty_key, 1), l2 = labels_of(control, 1),
	                   l3 = labels_of(bad_utf8, 1);
	char *long_key = malloc(5000);
	struct snap_status st;

	ck_assert_int_eq(snap_check_key("prepare", "", &st), SNAP_INVALID_ARGUMENT);
	ck_assert_str_eq(st.message, "prepare: empty key");
	ck_assert_int_eq(snap_check_key("prepare", "\xc3\x28", &st), SNAP_INVALID_ARGUMENT);
	memset(long_key, 'k', 4999);
	long_key[4999] = '\0';
	ck_assert_int_eq(snap_check_key("prepare", long_key, &st), SNAP_INVALID_ARGUMENT);
	long_key[4096 - strlen(SNAP_LABEL_PARENT)] = '\0';
	ck_assert_int_eq(snap_check_key("prepare", long_key, &st), SNAP_OK);
	ck_assert_int_eq(snap_check_labels("p", &l1, &st), SNAP_INVALID_ARGUMENT);
	ck_assert_int_eq(snap_check_labels("p", &l2, &st), SNAP_INVALID_ARGUMENT);
	ck_assert_int_eq(snap_check_labels("p", &l3, &st), SNAP_INVALID_ARGUMENT);
	free(long_key);
}
END_TEST

START_TEST(updates_labels_only)
{
	const char *ok[] = {"labels", "labels.l1", "labels.containerd.io/gc.root"};
	const char *parent[] = {"labels.l1", "parent"};
	const char *own[] = {"labels.thinproxy.snapshotter/kind"};
	const char *dot[] = {"labels."};
	struct snap_status st;

	ck_assert_int_eq(snap_check_paths("update k", ok, 3, &st), SNAP_OK);
	ck_assert_int_eq(snap_check_paths("update k", parent, 2, &st), SNAP_INVALID_ARGUMENT);
	ck_assert_str_eq(st.message,
	                 "update k: cannot update the field \"parent\": only labels change");
	ck_assert_int_eq(snap_check_paths("update k", own, 1, &st), SNAP_INVALID_ARGUMENT);
	ck_assert_int_eq(snap_check_paths("update k", dot, 1, &st), SNAP_INVALID_ARGUMENT);
}
END_TEST

/* The daemon's volume object for a snapshot made with these labels. */
static struct json_object *volume_with(struct json_object *labels, const char *name)
{
	struct json_object *v = json_object_new_object();

	json_object_object_add(v, "name", json_object_new_string(name));
	json_object_object_add(v, "state", json_object_new_string("ready"));
	json_object_object_add(v, "used", json_object_new_int64(65536));
	json_object_object_add(v, "labels", labels);
	return v;
}

START_TEST(reads_back_the_snapshot_it_stored_without_its_own_labels)
{
	struct snap_label l[] = {{"containerd.io/gc.root", "x"}, {"l", "1"}, {"empty", ""}};
	struct snap_labels labels = labels_of(l, 3);
	struct timespec now = {.tv_sec = 1796280960, .tv_nsec = 42};
	struct snap_record rec = {0};
	char volume[SNAP_VOLUME_SIZE];
	struct json_object *v;

	snap_volume_name("ns/1/child", volume);
	v = volume_with(snap_volume_labels(&labels, "ns/1/child", SNAP_KIND_ACTIVE, "ns/1/base",
	                                   SNAP_FS_XFS, &now, true),
	                volume);
	ck_assert_int_eq(snap_record_from_volume(v, &rec), 0);
	ck_assert_str_eq(rec.info.name, "ns/1/child");
	ck_assert_str_eq(rec.info.parent, "ns/1/base");
	ck_assert_int_eq(rec.info.kind, SNAP_KIND_ACTIVE);
	ck_assert_int_eq(rec.fs, SNAP_FS_XFS);
	ck_assert(rec.ready);
	ck_assert_uint_eq(rec.used, 65536);
	ck_assert_int_eq(rec.info.created.tv_sec, now.tv_sec);
	ck_assert_int_eq(rec.info.created.tv_nsec, 42);
	ck_assert_int_eq(rec.info.updated.tv_nsec, 42);
	/* Its own labels hidden; an empty label is no label. */
	ck_assert_uint_eq(rec.info.labels.n, 2);
	ck_assert_str_eq(snap_label_get(&rec.info.labels, "containerd.io/gc.root"), "x");
	ck_assert_str_eq(snap_label_get(&rec.info.labels, "l"), "1");
	ck_assert_ptr_null(snap_label_get(&rec.info.labels, SNAP_LABEL_KEY));
	snap_record_clear(&rec);
	json_object_put(v);
}
END_TEST

START_TEST(tells_an_interrupted_prepare_by_its_missing_ready_label)
{
	struct snap_labels none = {0};
	struct timespec now = {0};
	struct snap_record rec = {0};
	char volume[SNAP_VOLUME_SIZE];
	struct json_object *v;

	snap_volume_name("k", volume);
	v = volume_with(
	    snap_volume_labels(&none, "k", SNAP_KIND_VIEW, "", SNAP_FS_EXT4, &now, false), volume);
	ck_assert_int_eq(snap_record_from_volume(v, &rec), 0);
	ck_assert(!rec.ready);
	ck_assert_str_eq(rec.info.parent, "");
	ck_assert_int_eq(rec.info.kind, SNAP_KIND_VIEW);
	snap_record_clear(&rec);
	json_object_put(v);
}
END_TEST

START_TEST(ignores_volumes_that_are_no_snapshots)
{
	struct snap_labels none = {0};
	struct timespec now = {0};
	struct snap_record rec = {0};
	struct json_object *plain = volume_with(json_object_new_object(), "base");
	/* The key label of another name: not this volume's snapshot. */
	struct json_object *moved = volume_with(
	    snap_volume_labels(&none, "k", SNAP_KIND_ACTIVE, "", SNAP_FS_EXT4, &now, true), "c00");
	struct json_object *bad_kind = volume_with(json_object_new_object(), "x");
	char volume[SNAP_VOLUME_SIZE];

	ck_assert_int_eq(snap_record_from_volume(plain, &rec), -ENOENT);
	ck_assert_int_eq(snap_record_from_volume(moved, &rec), -ENOENT);
	snap_volume_name("k", volume);
	json_object_object_add(bad_kind, "name", json_object_new_string(volume));
	{
		struct json_object *labels;

		json_object_object_get_ex(bad_kind, "labels", &labels);
		json_object_object_add(labels, SNAP_LABEL_KEY, json_object_new_string("k"));
		json_object_object_add(labels, SNAP_LABEL_KIND, json_object_new_string("weird"));
	}
	ck_assert_int_eq(snap_record_from_volume(bad_kind, &rec), -EBADMSG);
	json_object_put(plain);
	json_object_put(moved);
	json_object_put(bad_kind);
}
END_TEST

/* The patch as a compact JSON string. */
static const char *patch_text(struct json_object *patch)
{
	json_object_object_del(patch, SNAP_LABEL_UPDATED);
	return json_object_to_json_string_ext(patch, JSON_C_TO_STRING_PLAIN |
	                                                 JSON_C_TO_STRING_NOSLASHESCAPE);
}

START_TEST(replaces_every_label_without_field_paths)
{
	struct snap_label cur[] = {{"l1", "v1"}, {"l2", "v2"}, {"gc", "t"}};
	struct snap_label want[] = {{"l1", "new"}, {"l3", "v3"}, {"gc", "t"}};
	struct snap_labels current = labels_of(cur, 3), labels = labels_of(want, 3);
	struct timespec now = {.tv_sec = 1, .tv_nsec = 2};
	struct json_object *patch = snap_update_patch(&current, &labels, NULL, 0, &now);
	struct json_object *updated;

	ck_assert(json_object_object_get_ex(patch, SNAP_LABEL_UPDATED, &updated));
	ck_assert_str_eq(json_object_get_string(updated), "1970-01-01T00:00:01.000000002Z");
	ck_assert_str_eq(patch_text(patch),
	                 "{\"l2\":null,\"l1\":\"new\",\"l3\":\"v3\",\"gc\":\"t\"}");
	json_object_put(patch);
}
END_TEST

START_TEST(changes_only_the_labels_its_field_paths_name)
{
	/* checkUpdate of containerd's suite: l1 updated, l2 gone (not in the info), l4
	 * not named and so not added. */
	struct snap_label cur[] = {{"l1", "v1"}, {"l2", "v2"}, {"l3", "v3"}};
	struct snap_label want[] = {{"l1", "updated"}, {"l4", "v4"}};
	struct snap_labels current = labels_of(cur, 3), labels = labels_of(want, 2);
	const char *paths[] = {"labels.l1", "labels.l2"};
	struct timespec now = {0};
	struct json_object *patch = snap_update_patch(&current, &labels, paths, 2, &now);

	ck_assert_str_eq(patch_text(patch), "{\"l1\":\"updated\",\"l2\":null}");
	json_object_put(patch);
}
END_TEST

START_TEST(takes_the_labels_field_path_as_all_labels)
{
	struct snap_label cur[] = {{"l1", "v1"}};
	struct snap_label want[] = {{"l4", "v4"}, {"e", ""}};
	struct snap_labels current = labels_of(cur, 1), labels = labels_of(want, 2);
	const char *paths[] = {"labels"};
	struct timespec now = {0};
	struct json_object *patch = snap_update_patch(&current, &labels, paths, 1, &now);

	ck_assert_str_eq(patch_text(patch), "{\"l1\":null,\"l4\":\"v4\"}");
	json_object_put(patch);
}
END_TEST

/* containerd's Usage excludes what the parent holds: the daemon's "exclusive" where it tells
 * it; all the volume's bytes in the pool where it does not (no /usage answer, or one
 * without it). */
START_TEST(counts_the_bytes_a_snapshot_holds_alone_where_the_daemon_tells_them)
{
	json_object *usage =
	    json_tokener_parse("{\"mapped\": 196608, \"exclusive\": 65536, \"shared\": 131072}");
	json_object *other = json_tokener_parse("{\"mapped\": 196608}");
	json_object *odd = json_tokener_parse("{\"exclusive\": \"64K\"}");

	ck_assert_int_eq(snap_usage_size(usage, 196608), 65536);
	ck_assert_int_eq(snap_usage_size(NULL, 196608), 196608);
	ck_assert_int_eq(snap_usage_size(other, 196608), 196608);
	ck_assert_int_eq(snap_usage_size(odd, 4096), 4096);
	ck_assert_int_eq(snap_usage_size(NULL, UINT64_MAX), INT64_MAX);
	json_object_put(usage);
	json_object_put(other);
	json_object_put(odd);
}
END_TEST

START_TEST(maps_the_daemons_answers_to_grpc_codes)
{
	ck_assert_int_eq(snap_code_of(-ENOENT, 404), SNAP_NOT_FOUND);
	ck_assert_int_eq(snap_code_of(-EEXIST, 409), SNAP_ALREADY_EXISTS);
	ck_assert_int_eq(snap_code_of(-EBUSY, 409), SNAP_FAILED_PRECONDITION);
	ck_assert_int_eq(snap_code_of(-EROFS, 409), SNAP_FAILED_PRECONDITION);
	ck_assert_int_eq(snap_code_of(-EINVAL, 400), SNAP_INVALID_ARGUMENT);
	ck_assert_int_eq(snap_code_of(-EDQUOT, 507), SNAP_RESOURCE_EXHAUSTED);
	ck_assert_int_eq(snap_code_of(-ENOSPC, 507), SNAP_RESOURCE_EXHAUSTED);
	ck_assert_int_eq(snap_code_of(-EIO, 500), SNAP_INTERNAL);
	/* No answer at all: a missing socket is not a missing snapshot. */
	ck_assert_int_eq(snap_code_of(-ENOENT, 0), SNAP_UNAVAILABLE);
	ck_assert_int_eq(snap_code_of(-ECONNREFUSED, 0), SNAP_UNAVAILABLE);
}
END_TEST

/* A snapshot for the filter tests. */
struct fake {
	const char *name, *parent, *kind;
	const char *labels[4][2];
};

static bool fake_field(const char *const *path, size_t n, const char **ret_value, void *opaque)
{
	const struct fake *f = opaque;
	char key[256] = "";

	if (n == 1 && strcmp(path[0], "name") == 0)
		return *ret_value = f->name, true;
	if (n == 1 && strcmp(path[0], "parent") == 0)
		return *ret_value = f->parent, true;
	if (n == 1 && strcmp(path[0], "kind") == 0)
		return *ret_value = f->kind, true;
	if (n < 2 || strcmp(path[0], "labels") != 0)
		return false;
	for (size_t i = 1; i < n; i++) {
		if (i > 1)
			strcat(key, ".");
		strcat(key, path[i]);
	}
	for (int i = 0; i < 4 && f->labels[i][0] != NULL; i++)
		if (strcmp(f->labels[i][0], key) == 0)
			return *ret_value = f->labels[i][1], true;
	return false;
}

/* checkWalk's snapshots in containerd's suite. */
static const struct fake walk_set[] = {
    {"a-np", "", "active", {{"containerd.io/gc.root", "check-walk"}}},
    {"p", "", "committed", {{"containerd.io/gc.root", "check-walk"}}},
    {"a", "p", "active", {{"containerd.io/gc.root", "check-walk"}}},
    {"v", "p", "view", {{"containerd.io/gc.root", "check-walk"}}},
    {"p-wl", "", "committed", {{"l", "1"}, {"containerd.io/gc.root", "check-walk"}}},
    {"a-wl", "p-wl", "active", {{"l", "2"}, {"containerd.io/gc.root", "check-walk"}}},
    {"v-wl", "p-wl", "view", {{"l", "3"}, {"containerd.io/gc.root", "check-walk"}}},
    {"a-np-wl", "", "active", {{"l", "2"}, {"containerd.io/gc.root", "check-walk"}}},
};

/* The names in walk_set that FILTERS (N) match, space-separated. */
static const char *matches(const char *const *filters, size_t n)
{
	static char out[256];
	struct filter *f = NULL;
	char reason[256];

	ck_assert_msg(filter_parse(filters, n, &f, reason, sizeof reason) == 0, "%s", reason);
	out[0] = '\0';
	for (size_t i = 0; i < sizeof walk_set / sizeof walk_set[0]; i++)
		if (filter_match(f, fake_field, (void *)&walk_set[i])) {
			if (out[0] != '\0')
				strcat(out, " ");
			strcat(out, walk_set[i].name);
		}
	filter_free(f);
	return out;
}

#define MATCHES(...)                                   \
	({                                             \
		const char *_f[] = {__VA_ARGS__};      \
		matches(_f, sizeof _f / sizeof _f[0]); \
	})

START_TEST(filters_as_containerds_walk_test_expects)
{
	ck_assert_str_eq(MATCHES("labels.\"containerd.io/gc.root\"==check-walk"),
	                 "a-np p a v p-wl a-wl v-wl a-np-wl");
	ck_assert_str_eq(MATCHES("kind==active,labels.\"containerd.io/gc.root\"==check-walk"),
	                 "a-np a a-wl a-np-wl");
	ck_assert_str_eq(MATCHES("kind==view,labels.\"containerd.io/gc.root\"==check-walk"),
	                 "v v-wl");
	ck_assert_str_eq(MATCHES("kind==committed,labels.\"containerd.io/gc.root\"==check-walk"),
	                 "p p-wl");
	ck_assert_str_eq(MATCHES("name==p", "name==a-np-wl"), "p a-np-wl");
	ck_assert_str_eq(MATCHES("name==a-wl,labels.l"), "a-wl");
	ck_assert_str_eq(MATCHES("parent==p"), "a v");
	ck_assert_str_eq(MATCHES("parent!=\"\",labels.\"containerd.io/gc.root\"==check-walk"),
	                 "a v a-wl v-wl");
	ck_assert_str_eq(MATCHES("labels.l"), "p-wl a-wl v-wl a-np-wl");
	ck_assert_str_eq(MATCHES("labels.l==2"), "a-wl a-np-wl");
}
END_TEST

START_TEST(filters_with_regular_expressions_and_dotted_label_keys)
{
	ck_assert_str_eq(MATCHES("name~=^a-"), "a-np a-wl a-np-wl");
	ck_assert_str_eq(MATCHES("name~=/^(p|v)$/"), "p v");
	ck_assert_str_eq(MATCHES("name~=|wl$|"), "p-wl a-wl v-wl a-np-wl");
	/* labels.containerd.io/gc.root is not a field path: "/" is no field character. */
	ck_assert_str_eq(MATCHES("labels.\"containerd.io/gc.root\"!=check-walk"), "");
	ck_assert_str_eq(MATCHES("labels.l!=2"), "a-np p a v p-wl v-wl");
	/* A regular expression that does not compile matches nothing. */
	ck_assert_str_eq(MATCHES("name~=(("), "");
	ck_assert_str_eq(MATCHES("name~=^(a-)+(np|wl)+(-wl)?$"), "a-np a-wl a-np-wl");
	ck_assert_str_eq(MATCHES("name~=/^[a-z]{1,2}$/"), "p a v");
}
END_TEST

START_TEST(matches_everything_without_a_filter_or_with_an_empty_one)
{
	struct filter *f = NULL;
	char reason[64];

	ck_assert_int_eq(filter_parse(NULL, 0, &f, reason, sizeof reason), 0);
	ck_assert(filter_match(f, fake_field, (void *)&walk_set[0]));
	filter_free(f);
	ck_assert_str_eq(MATCHES(""), "a-np p a v p-wl a-wl v-wl a-np-wl");
	ck_assert_str_eq(MATCHES("name==nothing", ""), "a-np p a v p-wl a-wl v-wl a-np-wl");
	ck_assert_str_eq(MATCHES("name == p"), "p");
}
END_TEST

START_TEST(refuses_malformed_filters_saying_where)
{
	static const char *bad[] = {
	    "name==",
	    "name=p",
	    "==p",
	    "name==p,",
	    "labels.",
	    "name>=p",
	    "name==\"open",
	    "labels./x/",
	    "name==p kind",
	    "name==\"\\q\"",
	    "kind==a,,",
	    "(",
	    "name==/p/",
	    "na\xffme",
	    /* What glibc's regcomp would take gigabytes for. */
	    "name~=a++++++++++++++++++++++++++++++++++++++++",
	    "name~=(a{1000}){1000}",
	    "name~=((((((((((((((((((((((((((((((((((x))))))))))))))))))))))))))))))))))",
	};
	char reason[256];

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct filter *f = NULL;

		ck_assert_msg(filter_parse(&bad[i], 1, &f, reason, sizeof reason) == -EINVAL,
		              "accepted '%s'", bad[i]);
		ck_assert_msg(strncmp(reason, "invalid filter \"", 16) == 0, "%s", reason);
	}
}
END_TEST

START_TEST(unquotes_go_escapes_in_fields_and_values)
{
	static const struct fake quoted = {"a b\"c", "", "active", {{"k\x01", "\xc3\xa4"}}};
	const char *f1[] = {"name==\"a b\\\"c\""}, *f2[] = {"labels.\"k\\x01\"==\"\\u00e4\""},
	           *f3[] = {"labels.\"k\\001\"==\"\\303\\244\""};
	struct filter *f = NULL;
	char reason[128];

	ck_assert_int_eq(filter_parse(f1, 1, &f, reason, sizeof reason), 0);
	ck_assert(filter_match(f, fake_field, (void *)&quoted));
	filter_free(f);
	ck_assert_int_eq(filter_parse(f2, 1, &f, reason, sizeof reason), 0);
	ck_assert(filter_match(f, fake_field, (void *)&quoted));
	filter_free(f);
	ck_assert_int_eq(filter_parse(f3, 1, &f, reason, sizeof reason), 0);
	ck_assert(filter_match(f, fake_field, (void *)&quoted));
	filter_free(f);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("snapshotter");
	TCase *mapping = tcase_create("mapping"), *filters = tcase_create("filter");
	SRunner *sr;
	int failed;

	tcase_add_test(mapping, hashes_as_sha256_does);
	tcase_add_test(mapping, names_a_snapshots_volume_c_and_62_hex_digits_of_its_sha256);
	tcase_add_test(mapping, gives_a_key_and_the_same_name_one_volume);
	tcase_add_test(mapping, formats_and_parses_times_to_the_nanosecond);
	tcase_add_test(mapping, refuses_labels_with_its_own_prefix);
	tcase_add_test(mapping, refuses_a_label_whose_key_and_value_pass_4096_bytes);
	tcase_add_test(mapping, leaves_room_among_a_volumes_64_labels_for_its_own);
	tcase_add_test(mapping, refuses_empty_keys_and_labels_it_could_not_store);
	tcase_add_test(mapping, updates_labels_only);
	tcase_add_test(mapping, reads_back_the_snapshot_it_stored_without_its_own_labels);
	tcase_add_test(mapping, tells_an_interrupted_prepare_by_its_missing_ready_label);
	tcase_add_test(mapping, ignores_volumes_that_are_no_snapshots);
	tcase_add_test(mapping, replaces_every_label_without_field_paths);
	tcase_add_test(mapping, changes_only_the_labels_its_field_paths_name);
	tcase_add_test(mapping, takes_the_labels_field_path_as_all_labels);
	tcase_add_test(mapping,
	               counts_the_bytes_a_snapshot_holds_alone_where_the_daemon_tells_them);
	tcase_add_test(mapping, maps_the_daemons_answers_to_grpc_codes);
	suite_add_tcase(s, mapping);
	tcase_add_test(filters, filters_as_containerds_walk_test_expects);
	tcase_add_test(filters, filters_with_regular_expressions_and_dotted_label_keys);
	tcase_add_test(filters, matches_everything_without_a_filter_or_with_an_empty_one);
	tcase_add_test(filters, refuses_malformed_filters_saying_where);
	tcase_add_test(filters, unquotes_go_escapes_in_fields_and_values);
	suite_add_tcase(s, filters);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
