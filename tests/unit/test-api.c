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
	                      "\"created\":\"2023-11-14T22:13:20Z\",\"writable\":true,"
	                      "\"snapshots\":{\"bob\":1}}\n");
	ck_assert_str_eq(admin, "{\"name\":\"work\",\"owner\":\"alice\",\"size\":2147483648,"
	                        "\"used\":715827882,\"state\":\"ready\",\"parent\":\"base\","
	                        "\"created\":\"2023-11-14T22:13:20Z\",\"writable\":true,"
	                        "\"thin_id\":2,\"snapshots\":{\"bob\":1}}\n");
	ck_assert_str_eq(images, "{\"images\":[{\"name\":\"images/debian\",\"owner\":null,"
	                         "\"size\":4294967296,\"used\":1431655765,\"state\":\"image\","
	                         "\"parent\":null,\"created\":\"2023-11-14T22:13:20Z\","
	                         "\"writable\":false,\"thin_id\":4,\"published\":[\"alice\"]}]}\n");
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
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
