/* Unit tests for daemon/api.c's request handling (api_answer), over the fake operations of
 * fuzz/fake-ops.c: the bugs fuzz/fuzz-api-request found, one test each. */
#include <check.h>
#include <json.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/api.h"
#include "../../fuzz/fake-ops.h"

/* Answer METHOD URL with BODY (LEN bytes) of type application/json on socket P; return the
 * status and, in RET_CODE (if not NULL), the error code. */
static unsigned answer(const struct principal *p, const char *method, const char *url,
                       const char *body, size_t len, char *ret_code, size_t code_len)
{
	struct api_request req = {
	    .method = method,
	    .url = url,
	    .content_type = len ? "application/json" : NULL,
	    .body = len ? body : NULL,
	    .len = len,
	};
	struct api_answer ans;
	json_object *top, *err, *code;
	unsigned status;

	fake_ops_socket = *p;
	ck_assert_int_eq(api_answer(p, &req, &ans), 0);
	status = ans.status;
	if (ret_code) {
		ret_code[0] = '\0';
		top = ans.body ? json_tokener_parse(ans.body) : NULL;
		if (top && json_object_object_get_ex(top, "error", &err) &&
		    json_object_object_get_ex(err, "code", &code))
			snprintf(ret_code, code_len, "%s", json_object_get_string(code));
		json_object_put(top);
	}
	free(ans.body);
	return status;
}

START_TEST(accepts_json_body_followed_by_whitespace)
{
	static const char body[] = "{\"name\":\"layer2\",\"size\":65536} \r\n\t";

	ck_assert_uint_eq(
	    answer(&fake_ops_alice, "POST", "/v1/volumes", body, sizeof body - 1, NULL, 0), 201);
}
END_TEST

/* Found by fuzz-api-request: trailing NUL bytes passed for whitespace. */
START_TEST(rejects_json_body_followed_by_nul_bytes)
{
	static const char body[] = "{\"name\":\"layer2\",\"size\":65536}\0\0";
	char code[64];

	ck_assert_uint_eq(answer(&fake_ops_alice, "POST", "/v1/volumes", body, sizeof body - 1,
	                         code, sizeof code),
	                  400);
	ck_assert_str_eq(code, "invalid_request");
}
END_TEST

/* Found by fuzz-api-request: json-c clamps integers beyond 2^63 - 1 to INT64_MAX without
 * ERANGE, so a quota of 10^23 bytes was taken as 2^63 - 1. */
START_TEST(rejects_integers_beyond_int64)
{
	static const struct {
		const char *body, *code;
	} cases[] = {
	    {"{\"max_size\":99999999999999999999999}", "invalid_size"},
	    {"{\"max_size\":18446744073709551615}", "invalid_size"},
	    {"{\"max_size\":18446744073709551616}", "invalid_size"},
	    {"{\"max_used\":9223372036854775808}", "invalid_size"},
	};
	char code[64];

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		ck_assert_uint_eq(answer(&fake_ops_admin, "PATCH", "/v1/tenants/alice",
		                         cases[i].body, strlen(cases[i].body), code, sizeof code),
		                  400);
		ck_assert_str_eq(code, cases[i].code);
	}
	ck_assert_uint_eq(answer(&fake_ops_admin, "PATCH", "/v1/tenants/alice",
	                         "{\"max_size\":9223372036854775807}", 32, NULL, 0),
	                  200);
}
END_TEST

/* json-c took single-quoted strings, trailing commas and leading zeros, which JSON is not. */
START_TEST(rejects_what_json_is_not)
{
	static const char *bodies[] = {
	    "{'name':'layer2','size':65536}",        "{\"name\":'layer2',\"size\":65536}",
	    "{\"name\":\"layer2\",\"size\":65536,}", "{\"name\":\"layer2\",\"size\":065536}",
	    "{\"name\":\"layer2\",\"size\":65536}x",
	};
	static const char quoted[] = "{\"name\":\"it's\",\"size\":65536}";
	char code[64];

	for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
		ck_assert_msg(answer(&fake_ops_alice, "POST", "/v1/volumes", bodies[i],
		                     strlen(bodies[i]), code, sizeof code) == 400,
		              "%s", bodies[i]);
		ck_assert_str_eq(code, "invalid_request");
	}
	/* A quote inside a string is just a character (and here not a valid name). */
	ck_assert_uint_eq(answer(&fake_ops_alice, "POST", "/v1/volumes", quoted, sizeof quoted - 1,
	                         code, sizeof code),
	                  400);
	ck_assert_str_eq(code, "invalid_name");
}
END_TEST

/* Every quota in bytes that is out of range is an invalid size, max_used included. */
START_TEST(answers_invalid_size_for_every_byte_quota)
{
	static const char *bodies[] = {"{\"max_used\":-1}", "{\"max_used\":\"1G\"}",
	                               "{\"max_size\":-1}", "{\"max_size\":1.5}"};
	char code[64];

	for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
		ck_assert_uint_eq(answer(&fake_ops_admin, "PATCH", "/v1/tenants/alice", bodies[i],
		                         strlen(bodies[i]), code, sizeof code),
		                  400);
		ck_assert_msg(strcmp(code, "invalid_size") == 0, "%s: %s", bodies[i], code);
	}
}
END_TEST

/* An encoded slash or NUL stays encoded: "bob%2Fsecret" is one (invalid) segment and
 * "secret%00/commit" does not end at "secret". Everything else decodes. */
START_TEST(keeps_encoded_slashes_and_nuls_encoded)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
	    {"/v1/volumes/bob%2Fsecret", "/v1/volumes/bob%2Fsecret"},
	    {"/v1/volumes/bob%2fsecret", "/v1/volumes/bob%2fsecret"},
	    {"/v1/volumes/secret%00/commit", "/v1/volumes/secret%00/commit"},
	    {"/v1/volumes/%6c%61yer1", "/v1/volumes/layer1"},
	    {"/v1/volumes/%2e%2e", "/v1/volumes/.."},
	    {"/v1/volumes/%d1%95ecret", "/v1/volumes/\xd1\x95"
	                                "ecret"},
	    {"%", "%"},
	    {"%4", "%4"},
	    {"%zz%41", "%zzA"},
	    {"", ""},
	};
	char buf[64];

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		snprintf(buf, sizeof buf, "%s", cases[i].in);
		ck_assert_uint_eq(api_unescape(buf), strlen(cases[i].out));
		ck_assert_str_eq(buf, cases[i].out);
	}
}
END_TEST

/* GET URL on socket P; returns the body (malloc'ed), asserting status 200. */
static char *get(const struct principal *p, const char *url)
{
	struct api_request req = {.method = "GET", .url = url};
	struct api_answer ans;

	fake_ops_socket = *p;
	ck_assert_int_eq(api_answer(p, &req, &ans), 0);
	ck_assert_msg(ans.status == 200, "GET %s: %u", url, ans.status);
	ck_assert_ptr_nonnull(ans.body);
	ck_assert_str_eq(ans.content_type, "application/json");
	ck_assert_uint_eq(ans.len, strlen(ans.body));
	return ans.body;
}

/* Volumes and images are written as text, not by json-c: every member as documented,
 * null where empty, and a listing's elements the same as the single answers, which add
 * the snapshots by tenant. */
START_TEST(writes_a_volume_alike_alone_and_in_a_listing)
{
	char *one = get(&fake_ops_alice, "/v1/volumes/work");
	char *admin = get(&fake_ops_admin, "/v1/tenants/alice/volumes/work");
	char *list = get(&fake_ops_alice, "/v1/volumes");
	char *images = get(&fake_ops_admin, "/v1/images");
	json_object *top = json_tokener_parse(list), *arr, *el, *single;
	size_t names = 0;

	ck_assert_str_eq(one, "{\"name\":\"work\",\"owner\":\"alice\",\"size\":2147483648,"
	                      "\"used\":715827882,\"state\":\"ready\",\"parent\":\"base\","
	                      "\"created\":\"2023-11-14T22:13:20Z\","
	                      "\"updated\":\"2023-11-14T22:18:20Z\",\"writable\":true,"
	                      "\"labels\":{\"containerd.io/gc.root\":\"2023-11-14\","
	                      "\"tier\":\"\\\"gold\\\"\\u000a\"},"
	                      "\"snapshots\":{\"bob\":1}}\n");
	ck_assert_str_eq(admin, "{\"name\":\"work\",\"owner\":\"alice\",\"size\":2147483648,"
	                        "\"used\":715827882,\"state\":\"ready\",\"parent\":\"base\","
	                        "\"created\":\"2023-11-14T22:13:20Z\","
	                        "\"updated\":\"2023-11-14T22:18:20Z\",\"writable\":true,"
	                        "\"labels\":{\"containerd.io/gc.root\":\"2023-11-14\","
	                        "\"tier\":\"\\\"gold\\\"\\u000a\"},"
	                        "\"thin_id\":2,\"snapshots\":{\"bob\":1}}\n");
	ck_assert_str_eq(images, "{\"images\":[{\"name\":\"images/debian\",\"owner\":null,"
	                         "\"size\":4294967296,\"used\":1431655765,\"state\":\"image\","
	                         "\"parent\":null,\"created\":\"2023-11-14T22:13:20Z\","
	                         "\"updated\":\"2023-11-14T22:18:20Z\",\"writable\":false,"
	                         "\"labels\":{},\"thin_id\":4,\"published\":[\"alice\"]}]}\n");
	ck_assert_ptr_nonnull(top);
	ck_assert(json_object_object_get_ex(top, "volumes", &arr));
	ck_assert_uint_eq(json_object_array_length(arr), 3);
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		const char *name;
		char url[128];

		el = json_object_array_get_idx(arr, i);
		name = json_object_get_string(json_object_object_get(el, "name"));
		if (strchr(name, '/') != NULL) {
			ck_assert_str_eq(name, "images/debian");
			ck_assert(json_object_object_get(el, "owner") == NULL);
			continue;
		}
		snprintf(url, sizeof url, "/v1/volumes/%s", name);
		free(one);
		one = get(&fake_ops_alice, url);
		single = json_tokener_parse(one);
		ck_assert(json_object_object_get_ex(single, "snapshots", NULL));
		json_object_object_del(single, "snapshots");
		ck_assert_msg(json_object_equal(el, single), "%s: %s", name, one);
		json_object_put(single);
		names++;
	}
	ck_assert_uint_eq(names, 2);
	json_object_put(top);
	free(one);
	free(admin);
	free(list);
	free(images);
}
END_TEST

/* Answer a request of P with BODY (a string; NULL for none) and query LABELS (N); the
 * status, and the answer in *RET_BODY (malloc'ed, NULL if none) if RET_BODY is not NULL. */
static unsigned request(const struct principal *p, const char *method, const char *url,
                        const char *body, const char *const *labels, size_t n, char **ret_body)
{
	struct api_request req = {
	    .method = method,
	    .url = url,
	    .content_type = body ? "application/json" : NULL,
	    .body = body,
	    .len = body ? strlen(body) : 0,
	    .labels = labels,
	    .n_labels = n,
	};
	struct api_answer ans;

	fake_ops_socket = *p;
	ck_assert_int_eq(api_answer(p, &req, &ans), 0);
	if (ret_body)
		*ret_body = ans.body;
	else
		free(ans.body);
	return ans.status;
}

/* Member PATH ("a.b") of the JSON text TEXT as a string; "" if there is none. */
static const char *member(const char *text, const char *path)
{
	static char buf[512];
	json_object *top = json_tokener_parse(text), *o = top;
	char copy[128], *save = NULL;

	buf[0] = '\0';
	snprintf(copy, sizeof copy, "%s", path);
	for (char *k = strtok_r(copy, ".", &save); k && o; k = strtok_r(NULL, ".", &save))
		if (!json_object_object_get_ex(o, k, &o))
			o = NULL;
	if (o != NULL)
		snprintf(buf, sizeof buf, "%s",
		         json_object_is_type(o, json_type_string)
		             ? json_object_get_string(o)
		             : json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(top);
	return buf;
}

/* BODY to METHOD URL on alice's socket answers 400 invalid_request with a message that
 * contains NEEDLE. */
static void assert_refused(const char *method, const char *url, const char *body,
                           const char *needle)
{
	char *answer = NULL;
	unsigned status = request(&fake_ops_alice, method, url, body, NULL, 0, &answer);

	ck_assert_msg(status == 400, "%s: %u %s", body, status, answer);
	ck_assert_msg(strcmp(member(answer, "error.code"), "invalid_request") == 0, "%s: %s", body,
	              answer);
	ck_assert_msg(strstr(member(answer, "error.message"), needle) != NULL, "%s: %s lacks %s",
	              body, answer, needle);
	free(answer);
}

START_TEST(creates_and_snapshots_with_labels)
{
	char *answer = NULL;

	ck_assert_uint_eq(
	    request(&fake_ops_alice, "POST", "/v1/volumes",
	            "{\"name\":\"l2\",\"size\":65536,\"labels\":{\"a/b\":\"1\",\"\xc3\xa9\":\"\"}}",
	            NULL, 0, &answer),
	    201);
	ck_assert_str_eq(member(answer, "labels"), "{\"a\\/b\":\"1\",\"\xc3\xa9\":\"\"}");
	ck_assert_str_eq(member(answer, "updated"), member(answer, "created"));
	free(answer);
	ck_assert_uint_eq(request(&fake_ops_alice, "POST", "/v1/volumes",
	                          "{\"name\":\"l3\",\"parent\":\"base\",\"labels\":{}}", NULL, 0,
	                          &answer),
	                  201);
	ck_assert_str_eq(member(answer, "labels"), "{}");
	free(answer);
	/* Without labels, a volume still shows them: none. */
	ck_assert_uint_eq(request(&fake_ops_alice, "POST", "/v1/volumes",
	                          "{\"name\":\"l4\",\"size\":65536}", NULL, 0, &answer),
	                  201);
	ck_assert_str_eq(member(answer, "labels"), "{}");
	free(answer);
}
END_TEST

/* A NUL byte is refused in a key (json-c would cut the key short there, so the raw text is
 * looked at) and in a value, naming the label. */
START_TEST(rejects_label_with_nul)
{
	assert_refused("POST", "/v1/volumes",
	               "{\"name\":\"x\",\"size\":65536,\"labels\":{\"a\\u0000b\":\"v\"}}",
	               "key \"a\\u0000b\" contains a NUL byte");
	assert_refused("POST", "/v1/volumes",
	               "{\"name\":\"x\",\"size\":65536,\"labels\":{\"k\":\"v\\u0000\"}}",
	               "label \"k\": the value contains a NUL byte");
	assert_refused("PATCH", "/v1/volumes/work", "{\"labels\":{\"\\u0000\":null}}",
	               "contains a NUL byte");
	/* Not only in labels: a field name cut short would pass for another. */
	assert_refused("POST", "/v1/volumes", "{\"name\":\"x\",\"size\\u0000junk\":65536}",
	               "contains a NUL byte");
	/* An escaped backslash before "u0000" is no NUL. */
	ck_assert_uint_eq(
	    request(&fake_ops_alice, "POST", "/v1/volumes",
	            "{\"name\":\"x\",\"size\":65536,\"labels\":{\"a\\\\u0000\":\"v\"}}", NULL, 0,
	            NULL),
	    201);
}
END_TEST

/* Every limit of the design, each answered 400 invalid_request naming the label. */
START_TEST(rejects_labels_past_the_limits_naming_them)
{
	char body[80 * 1024];
	size_t len;

	len = (size_t)snprintf(body, sizeof body, "{\"labels\":{");
	for (int i = 0; i < 65; i++)
		len += (size_t)snprintf(body + len, sizeof body - len, "%s\"k%d\":\"v\"",
		                        i ? "," : "", i);
	snprintf(body + len, sizeof body - len, "}}");
	assert_refused("PATCH", "/v1/volumes/work", body, "too many labels: 65, at most 64");

	len = (size_t)snprintf(body, sizeof body, "{\"labels\":{\"");
	memset(body + len, 'k', 4096);
	snprintf(body + len + 4096, sizeof body - len - 4096, "\":\"v\"}}");
	assert_refused("PATCH", "/v1/volumes/work", body,
	               "label \"kkkkkkkkkkkkkkkk"); /* the key, cut short */
	assert_refused("PATCH", "/v1/volumes/work", body, "...\": the key is over 4095 bytes");

	len = (size_t)snprintf(body, sizeof body, "{\"labels\":{\"key\":\"");
	memset(body + len, 'v', 4094);
	snprintf(body + len + 4094, sizeof body - len - 4094, "\"}}");
	assert_refused("PATCH", "/v1/volumes/work", body,
	               "label \"key\": key and value are over 4096 bytes together");
	body[len + 4093] = '"';
	body[len + 4094] = '}';
	body[len + 4095] = '}';
	body[len + 4096] = '\0';
	ck_assert_uint_eq(
	    request(&fake_ops_alice, "PATCH", "/v1/volumes/work", body, NULL, 0, NULL), 200);

	assert_refused("PATCH", "/v1/volumes/work", "{\"labels\":{\"\xff\":\"v\"}}",
	               "label \"\\xff\": the key is not valid UTF-8");
	assert_refused("PATCH", "/v1/volumes/work", "{\"labels\":{\"k\":\"\xc0\xaf\"}}",
	               "label \"k\": the value is not valid UTF-8");
	/* A lone surrogate escaped in JSON is no invalid UTF-8 here: json-c reads it as
	 * U+FFFD, and that is what is kept. */
	{
		char *answer = NULL;

		ck_assert_uint_eq(request(&fake_ops_alice, "PATCH", "/v1/volumes/work",
		                          "{\"labels\":{\"k\":\"\\ud800\"}}", NULL, 0, &answer),
		                  200);
		ck_assert_str_eq(member(answer, "labels.k"), "\xef\xbf\xbd");
		free(answer);
	}
	assert_refused("PATCH", "/v1/volumes/work", "{\"labels\":{\"a\\u001b[2J\":\"v\"}}",
	               "label \"a\\x1b[2J\": the key contains a control character");
	assert_refused("PATCH", "/v1/volumes/work", "{\"labels\":{\"\":\"v\"}}",
	               "label \"\": the key is empty");
	assert_refused("POST", "/v1/volumes",
	               "{\"name\":\"x\",\"size\":65536,\"labels\":{\"k\":null}}",
	               "label \"k\": the value must be a string");
	assert_refused("PATCH", "/v1/volumes/work", "{\"labels\":{\"k\":1}}",
	               "label \"k\": the value must be a string, or null to remove it");
	assert_refused("PATCH", "/v1/volumes/work", "{\"labels\":[\"k\"]}",
	               "field \"labels\" must be an object of labels");
	assert_refused("PATCH", "/v1/volumes/work", "{\"labels\":null}",
	               "field \"labels\" must be an object of labels");
	assert_refused("PATCH", "/v1/volumes/work", "{}", "missing field \"labels\"");
	assert_refused("PATCH", "/v1/volumes/work", "{\"labels\":{},\"name\":\"x\"}",
	               "unknown field \"name\"");
}
END_TEST

/* PATCH merges: a value sets, null removes, the rest stays; committed volumes too; the
 * merged set is bounded as a new one is. */
START_TEST(patches_labels_as_a_merge_patch)
{
	char *answer = NULL;
	char body[8192];
	size_t len;

	ck_assert_uint_eq(request(&fake_ops_alice, "PATCH", "/v1/volumes/work",
	                          "{\"labels\":{\"tier\":null,\"new\":\"x\"}}", NULL, 0, &answer),
	                  200);
	ck_assert_str_eq(member(answer, "labels"),
	                 "{\"containerd.io\\/gc.root\":\"2023-11-14\",\"new\":\"x\"}");
	free(answer);
	ck_assert_uint_eq(request(&fake_ops_alice, "PATCH", "/v1/volumes/base",
	                          "{\"labels\":{\"frozen\":\"yes\"}}", NULL, 0, &answer),
	                  200);
	ck_assert_str_eq(member(answer, "state"), "committed");
	free(answer);
	len = (size_t)snprintf(body, sizeof body, "{\"labels\":{");
	for (int i = 0; i < 63; i++)
		len += (size_t)snprintf(body + len, sizeof body - len, "%s\"k%d\":\"v\"",
		                        i ? "," : "", i);
	snprintf(body + len, sizeof body - len, "}}");
	assert_refused("PATCH", "/v1/volumes/work", body,
	               "too many labels: volume work would have 65");
	ck_assert_uint_eq(request(&fake_ops_alice, "PATCH", "/v1/volumes/nosuch", "{\"labels\":{}}",
	                          NULL, 0, NULL),
	                  404);
	ck_assert_uint_eq(
	    request(&fake_ops_alice, "PUT", "/v1/volumes/work", NULL, NULL, 0, &answer), 405);
	ck_assert_str_eq(member(answer, "error.message"),
	                 "method not allowed here; use GET, PATCH or DELETE");
	free(answer);
}
END_TEST

/* A commit with a body renames and relabels with the commit, or answers the way the
 * operation refused, naming the reason; without a body (or an empty object) it is the
 * commit it always was. */
START_TEST(commit_renames_atomically)
{
	static const struct {
		const char *volume, *body;
		unsigned status;
		const char *what; /* the new name, or the error code */
	} cases[] = {
	    {"work", NULL, 200, "work"},
	    {"work", "{}", 200, "work"},
	    {"work", "{\"name\":\"done\"}", 200, "done"},
	    {"work", "{\"name\":\"work\"}", 200, "work"},
	    {"work", "{\"name\":null}", 200, "work"},
	    {"work", "{\"name\":\"base\"}", 409, "exists"},
	    {"work", "{\"name\":\"Done\"}", 400, "invalid_name"},
	    {"work", "{\"name\":\"done\",\"size\":1}", 400, "invalid_request"},
	    {"work", "{\"name\":7}", 400, "invalid_request"},
	    {"work", "{\"labels\":{\"k\":null}}", 400, "invalid_request"},
	    {"base", NULL, 200, "base"},
	    {"base", "{\"name\":\"base\"}", 200, "base"},
	    {"base", "{\"name\":\"again\"}", 409, "read_only"},
	    {"base", "{\"labels\":{}}", 409, "read_only"},
	    {"nosuch", "{\"name\":\"x\"}", 404, "not_found"},
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char url[64], *answer = NULL;
		unsigned status;

		snprintf(url, sizeof url, "/v1/volumes/%s/commit", cases[i].volume);
		status = request(&fake_ops_alice, "POST", url, cases[i].body, NULL, 0, &answer);
		ck_assert_msg(status == cases[i].status, "%s %s: %u %s", cases[i].volume,
		              cases[i].body, status, answer);
		ck_assert_str_eq(member(answer, status == 200 ? "name" : "error.code"),
		                 cases[i].what);
		if (status == 200)
			ck_assert_str_eq(member(answer, "state"), "committed");
		free(answer);
	}
	{
		char *answer = NULL;

		ck_assert_uint_eq(request(&fake_ops_alice, "POST", "/v1/volumes/work/commit",
		                          "{\"name\":\"done\",\"labels\":{\"kind\":\"committed\"}}",
		                          NULL, 0, &answer),
		                  200);
		ck_assert_str_eq(member(answer, "labels"), "{\"kind\":\"committed\"}");
		free(answer);
	}
}
END_TEST

/* The names of the volumes a filtered listing of P answers, space-separated. */
static const char *filtered(const struct principal *p, const char *url, unsigned want,
                            const char *const *labels, size_t n)
{
	static char names[256];
	char *answer = NULL;
	unsigned status = request(p, "GET", url, NULL, labels, n, &answer);
	json_object *top, *arr;
	size_t len = 0;

	ck_assert_msg(status == want, "%s: %u %s", labels[0], status, answer);
	names[0] = '\0';
	top = json_tokener_parse(answer);
	if (status == 200 && json_object_object_get_ex(top, "volumes", &arr))
		for (size_t i = 0; i < json_object_array_length(arr); i++)
			len +=
			    (size_t)snprintf(names + len, sizeof names - len, "%s%s", i ? " " : "",
			                     json_object_get_string(json_object_object_get(
			                         json_object_array_get_idx(arr, i), "name")));
	else if (status != 200)
		snprintf(names, sizeof names, "%s", member(answer, "error.message"));
	json_object_put(top);
	free(answer);
	return names;
}
#define FILTERED(p, url, want, ...)                                \
	filtered(p, url, want, (const char *const[]){__VA_ARGS__}, \
	         sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

/* ?label=KEY=VALUE matches that value exactly, ?label=KEY the key; every one must hold;
 * each is percent-decoded ('+' is a space already); only own volumes are filtered. */
START_TEST(label_filter_matches_exact_value)
{
	const struct principal *a = &fake_ops_alice;

	ck_assert_str_eq(FILTERED(a, "/v1/volumes", 200, "tier"), "work");
	ck_assert_str_eq(FILTERED(a, "/v1/volumes", 200, "containerd.io%2Fgc.root%3D2023-11-14"),
	                 "work");
	ck_assert_str_eq(FILTERED(a, "/v1/volumes", 200, "containerd.io/gc.root=2023-11-14"),
	                 "work");
	ck_assert_str_eq(FILTERED(a, "/v1/volumes", 200, "containerd.io/gc.root=2023-11"), "");
	ck_assert_str_eq(FILTERED(a, "/v1/volumes", 200, "tier=gold"), "");
	ck_assert_str_eq(FILTERED(a, "/v1/volumes", 200, "tier=%22gold%22%0a"), "work");
	ck_assert_str_eq(FILTERED(a, "/v1/volumes", 200, "tier", "containerd.io/gc.root"), "work");
	ck_assert_str_eq(FILTERED(a, "/v1/volumes", 200, "tier", "nothing"), "");
	/* Not an image's, nor a volume granted by another tenant, whatever their labels. */
	ck_assert_str_eq(FILTERED(a, "/v1/volumes", 200, "bobs.secret"), "");
	ck_assert_str_eq(FILTERED(&fake_ops_admin, "/v1/tenants/alice/volumes", 200, "tier"),
	                 "work");
	ck_assert_str_eq(FILTERED(&fake_ops_admin, "/v1/tenants/bob/volumes", 200, "bobs.secret"),
	                 "layer1");
	ck_assert_str_eq(FILTERED(a, "/v1/volumes", 400, "tier%00"),
	                 "label filter \"tier\\x00\": the key contains a NUL byte");
	ck_assert_str_eq(FILTERED(a, "/v1/volumes", 400, "tier=a%00b"),
	                 "label filter \"tier=a\\x00b\": the value contains a NUL byte");
	ck_assert_str_eq(FILTERED(a, "/v1/volumes", 400, ""),
	                 "label filter \"\": the key is empty");
	ck_assert_str_eq(FILTERED(a, "/v1/volumes", 400, "=v"),
	                 "label filter \"=v\": the key is empty");
	ck_assert_str_eq(FILTERED(a, "/v1/volumes", 400, "%ff"),
	                 "label filter \"\\xff\": the key is not valid UTF-8");
	{
		const char *many[TP_LABELS_MAX + 1];

		for (size_t i = 0; i < TP_LABELS_MAX + 1; i++)
			many[i] = "tier";
		ck_assert_str_eq(filtered(a, "/v1/volumes", 400, many, TP_LABELS_MAX + 1),
		                 "too many label filters: at most 64");
		ck_assert_str_eq(filtered(a, "/v1/volumes", 200, many, TP_LABELS_MAX), "work");
	}
}
END_TEST

/* A tenant sees its own volumes' labels and no others': not an image's, not those of a
 * volume granted to it (the admin, acting for the owner, does). */
START_TEST(shows_labels_to_their_owner_only)
{
	char *list = get(&fake_ops_alice, "/v1/volumes");
	char *bobs = get(&fake_ops_admin, "/v1/tenants/bob/volumes/layer1");

	ck_assert_ptr_nonnull(strstr(list, "\"name\":\"images/debian\""));
	ck_assert_ptr_null(strstr(list, "bobs.secret"));
	ck_assert_str_eq(member(bobs, "labels"), "{\"bobs.secret\":\"bob only\"}");
	free(list);
	free(bobs);
}
END_TEST

/* GET URL?from=FROM (FROM as sent; NULL: none) on socket P: the status, the body (malloc'ed)
 * in *RET_BODY and, for an error, its code in CODE (64 bytes). */
static unsigned get_from(const struct principal *p, const char *url, const char *from,
                         char **ret_body, char *code)
{
	struct api_request req = {.method = "GET", .url = url, .from = from};
	json_object *top, *err, *c;
	struct api_answer ans;

	fake_ops_socket = *p;
	ck_assert_int_eq(api_answer(p, &req, &ans), 0);
	code[0] = '\0';
	top = ans.body ? json_tokener_parse(ans.body) : NULL;
	if (top && json_object_object_get_ex(top, "error", &err) &&
	    json_object_object_get_ex(err, "code", &c))
		snprintf(code, 64, "%s", json_object_get_string(c));
	json_object_put(top);
	*ret_body = ans.body;
	return ans.status;
}

/* A diff names the reference as it was given and each range with its kind; the admin acting
 * for a tenant gets the same. */
START_TEST(diffs_a_volume_as_ranges_of_data_and_zeroes)
{
	static const char expected[] =
	    "{\"size\":2147483648,\"from\":\"%s\",\"changes\":["
	    "{\"offset\":0,\"length\":65536,\"kind\":\"data\"},"
	    "{\"offset\":1073741824,\"length\":131072,\"kind\":\"zero\"}]}\n";
	static const struct {
		const char *sent, *from;
	} refs[] = {
	    {"base", "base"},
	    {"images/debian", "images/debian"},
	    {"images%2Fdebian", "images/debian"},
	    {"bob%2flayer1", "bob/layer1"},
	};
	char want[512], code[64], *body;

	for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
		ck_assert_uint_eq(
		    get_from(&fake_ops_alice, "/v1/volumes/work/diff", refs[i].sent, &body, code),
		    200);
		snprintf(want, sizeof want, expected, refs[i].from);
		ck_assert_str_eq(body, want);
		free(body);
	}
	ck_assert_uint_eq(
	    get_from(&fake_ops_admin, "/v1/tenants/alice/volumes/work/diff", "base", &body, code),
	    200);
	snprintf(want, sizeof want, expected, "base");
	ck_assert_str_eq(body, want);
	free(body);
}
END_TEST

/* No reference, or one that is none, is refused before anything is looked up; an unknown
 * volume or reference is not found, a method other than GET not allowed. */
START_TEST(refuses_a_diff_without_a_valid_reference)
{
	static const struct {
		const char *url, *from;
		unsigned status;
		const char *code;
	} cases[] = {
	    {"/v1/volumes/work/diff", NULL, 400, "invalid_request"},
	    {"/v1/volumes/work/diff", "", 400, "invalid_name"},
	    {"/v1/volumes/work/diff", "Base", 400, "invalid_name"},
	    {"/v1/volumes/work/diff", "a/b/c", 400, "invalid_name"},
	    {"/v1/volumes/work/diff", "images/", 400, "invalid_name"},
	    {"/v1/volumes/work/diff", "base%00x", 400, "invalid_name"},
	    {"/v1/volumes/work/diff", "%2e%2e", 400, "invalid_name"},
	    {"/v1/volumes/Work/diff", "base", 400, "invalid_name"},
	    {"/v1/volumes/nothere/diff", "base", 404, "not_found"},
	    {"/v1/volumes/work/diff", "nothere", 404, "not_found"},
	    {"/v1/volumes/work/diff", "carol/base", 404, "not_found"},
	    {"/v1/volumes/work/diff", "images/nothere", 404, "not_found"},
	    {"/v1/tenants/carol/volumes/work/diff", "base", 404, "not_found"},
	};
	char code[64], *body;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const struct principal *p = strncmp(cases[i].url, "/v1/tenants/", 12) == 0
		                                ? &fake_ops_admin
		                                : &fake_ops_alice;

		ck_assert_msg(get_from(p, cases[i].url, cases[i].from, &body, code) ==
		                  cases[i].status,
		              "%s?from=%s: %s", cases[i].url, cases[i].from, body);
		ck_assert_str_eq(code, cases[i].code);
		free(body);
	}
	ck_assert_uint_eq(
	    answer(&fake_ops_alice, "POST", "/v1/volumes/work/diff", NULL, 0, code, sizeof code),
	    405);
	ck_assert_str_eq(code, "method_not_allowed");
}
END_TEST

/* A volume's usage in bytes: a snapshot shares some with its parent, a volume without one
 * holds all it maps alone. */
START_TEST(shows_a_volumes_exact_usage)
{
	char code[64], *body;

	ck_assert_uint_eq(get_from(&fake_ops_alice, "/v1/volumes/work/usage", NULL, &body, code),
	                  200);
	ck_assert_str_eq(body, "{\"mapped\":196608,\"exclusive\":65536,\"shared\":131072}\n");
	free(body);
	ck_assert_uint_eq(
	    get_from(&fake_ops_admin, "/v1/tenants/alice/volumes/base/usage", NULL, &body, code),
	    200);
	ck_assert_str_eq(body, "{\"mapped\":196608,\"exclusive\":196608,\"shared\":0}\n");
	free(body);
	ck_assert_uint_eq(get_from(&fake_ops_alice, "/v1/volumes/layer1/usage", NULL, &body, code),
	                  404);
	ck_assert_str_eq(code, "not_found");
	free(body);
	ck_assert_uint_eq(get_from(&fake_ops_alice, "/v1/volumes/-x/usage", NULL, &body, code),
	                  400);
	ck_assert_str_eq(code, "invalid_name");
	free(body);
	ck_assert_uint_eq(
	    answer(&fake_ops_alice, "DELETE", "/v1/volumes/work/usage", NULL, 0, code, sizeof code),
	    405);
	ck_assert_uint_eq(
	    answer(&fake_ops_alice, "GET", "/v1/volumes/work/other", NULL, 0, code, sizeof code),
	    404);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("api");
	TCase *tc = tcase_create("api");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, accepts_json_body_followed_by_whitespace);
	tcase_add_test(tc, rejects_json_body_followed_by_nul_bytes);
	tcase_add_test(tc, rejects_integers_beyond_int64);
	tcase_add_test(tc, rejects_what_json_is_not);
	tcase_add_test(tc, answers_invalid_size_for_every_byte_quota);
	tcase_add_test(tc, keeps_encoded_slashes_and_nuls_encoded);
	tcase_add_test(tc, writes_a_volume_alike_alone_and_in_a_listing);
	tcase_add_test(tc, creates_and_snapshots_with_labels);
	tcase_add_test(tc, rejects_label_with_nul);
	tcase_add_test(tc, rejects_labels_past_the_limits_naming_them);
	tcase_add_test(tc, patches_labels_as_a_merge_patch);
	tcase_add_test(tc, commit_renames_atomically);
	tcase_add_test(tc, label_filter_matches_exact_value);
	tcase_add_test(tc, shows_labels_to_their_owner_only);
	tcase_add_test(tc, diffs_a_volume_as_ranges_of_data_and_zeroes);
	tcase_add_test(tc, refuses_a_diff_without_a_valid_reference);
	tcase_add_test(tc, shows_a_volumes_exact_usage);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
