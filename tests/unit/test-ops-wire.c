/* Unit tests for the wire between the API process and the root parent, end to end on the
 * host: api.c answers requests over daemon/ops-client.c, whose requests
 * tests/unit/ops-server-harness (daemon/ops-server.c and the real operations, on a store
 * and the fake pool) serves in a process of its own. Socket 0 is the admin's, socket 1
 * alice's; tenant carol is added through the API and acted for by the admin. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../daemon/api-wire-io.h"
#include "../../daemon/api-wire.h"
#include "../../daemon/api.h"
#include "../../daemon/log.h"
#include "../../daemon/ops-client.h"

static const struct principal admin = {.admin = true};
static struct principal alice;
static pid_t harness;
static int fd = -1;

static void setup(void)
{
	const char *build = getenv("TP_BUILD") ? getenv("TP_BUILD") : "build";
	struct principal sockets[2] = {admin};
	char path[4096], arg[16];
	int sv[2];

	log_init("test-ops-wire", false, LOG_CRIT);
	snprintf(path, sizeof path, "%s/tests/ops-server-harness", build);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	harness = fork();
	ck_assert_int_ge(harness, 0);
	if (harness == 0) {
		fcntl(sv[1], F_SETFD, 0);
		snprintf(arg, sizeof arg, "%d", sv[1]);
		execl(path, path, arg, "alice", (char *)NULL);
		_exit(127);
	}
	close(sv[1]);
	fd = sv[0];
	/* Alice's principal as the parent has it, asked of the parent over the admin socket. */
	ck_assert_int_eq(ops_client_init(&fd, 1, sockets, 1), 0);
	ck_assert_int_eq(ops_principal_for_tenant("alice", &alice), 0);
	alice.admin = false;
	sockets[1] = alice;
	ck_assert_int_eq(ops_client_init(&fd, 1, sockets, 2), 0);
}

static void teardown(void)
{
	int status;

	ops_client_shutdown();
	close(fd);
	ck_assert_int_eq(waitpid(harness, &status, 0), harness);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
}

/* METHOD URL with BODY as P: the status; the body parsed into *RET_JSON if asked for. */
static unsigned ask(const struct principal *p, const char *method, const char *url,
                    const char *body, json_object **ret_json)
{
	struct api_request req = {
	    .method = method,
	    .url = url,
	    .content_type = body ? "application/json" : NULL,
	    .body = body,
	    .len = body ? strlen(body) : 0,
	};
	struct api_answer ans;
	unsigned status;

	ck_assert_int_eq(api_answer(p, &req, &ans), 0);
	status = ans.status;
	if (ret_json)
		*ret_json = ans.body ? json_tokener_parse(ans.body) : NULL;
	free(ans.body);
	return status;
}

/* GET URL?from=FROM (NULL: none) as P: the status, the body parsed into *RET_JSON. */
static unsigned ask_from(const struct principal *p, const char *url, const char *from,
                         json_object **ret_json)
{
	struct api_request req = {.method = "GET", .url = url, .from = from};
	struct api_answer ans;

	ck_assert_int_eq(api_answer(p, &req, &ans), 0);
	*ret_json = ans.body ? json_tokener_parse(ans.body) : NULL;
	free(ans.body);
	return ans.status;
}

/* The error message of an answer's JSON (not freed), or "". */
static const char *message_of(json_object *top)
{
	json_object *err, *m;

	if (top && json_object_object_get_ex(top, "error", &err) &&
	    json_object_object_get_ex(err, "message", &m))
		return json_object_get_string(m);
	return "";
}

/* The error code of an answer's JSON (freed). */
static const char *code_of(json_object *top)
{
	static char code[64];
	json_object *err, *c;

	code[0] = '\0';
	if (top && json_object_object_get_ex(top, "error", &err) &&
	    json_object_object_get_ex(err, "code", &c))
		snprintf(code, sizeof code, "%s", json_object_get_string(c));
	json_object_put(top);
	return code;
}

static size_t array_len(json_object *top, const char *key)
{
	json_object *a;
	size_t n = 0;

	if (top && json_object_object_get_ex(top, key, &a))
		n = json_object_array_length(a);
	json_object_put(top);
	return n;
}

START_TEST(serves_volumes_of_a_tenant)
{
	json_object *j;

	ck_assert_uint_eq(ask(&alice, "POST", "/v1/volumes",
	                      "{\"name\":\"base\",\"size\":1048576,\"labels\":{\"os\":\"debian\"}}",
	                      NULL),
	                  201);
	ck_assert_uint_eq(
	    ask(&alice, "POST", "/v1/volumes", "{\"name\":\"other\",\"size\":1048576}", NULL), 201);
	ck_assert_uint_eq(ask(&alice, "GET", "/v1/volumes", NULL, &j), 200);
	ck_assert_uint_eq(array_len(j, "volumes"), 2);
	ck_assert_uint_eq(ask(&alice, "POST", "/v1/volumes/base/commit", NULL, NULL), 200);
	ck_assert_uint_eq(
	    ask(&alice, "POST", "/v1/volumes", "{\"name\":\"snap\",\"parent\":\"base\"}", NULL),
	    201);
	ck_assert_uint_eq(
	    ask(&alice, "PATCH", "/v1/volumes/snap", "{\"labels\":{\"k\":\"v\"}}", &j), 200);
	json_object_put(j);
	ck_assert_uint_eq(ask(&alice, "GET", "/v1/volumes/base", NULL, &j), 200);
	json_object_put(j);
	ck_assert_uint_eq(ask(&alice, "GET", "/v1/usage", NULL, NULL), 200);
	/* Base has a snapshot: busy. */
	ck_assert_str_eq(code_of((ask(&alice, "DELETE", "/v1/volumes/base", NULL, &j), j)), "busy");
	ck_assert_uint_eq(ask(&alice, "DELETE", "/v1/volumes/snap", NULL, NULL), 204);
	ck_assert_uint_eq(ask(&alice, "DELETE", "/v1/volumes/base", NULL, NULL), 204);
	ck_assert_uint_eq(ask(&alice, "GET", "/v1/volumes", NULL, &j), 200);
	ck_assert_uint_eq(array_len(j, "volumes"), 1);
}
END_TEST

START_TEST(filters_by_label)
{
	struct api_request req = {.method = "GET", .url = "/v1/volumes"};
	const char *labels[] = {"os=debian"};
	struct api_answer ans;
	json_object *j;

	ck_assert_uint_eq(ask(&alice, "POST", "/v1/volumes",
	                      "{\"name\":\"a\",\"size\":1048576,\"labels\":{\"os\":\"debian\"}}",
	                      NULL),
	                  201);
	ck_assert_uint_eq(
	    ask(&alice, "POST", "/v1/volumes", "{\"name\":\"b\",\"size\":1048576}", NULL), 201);
	req.labels = labels;
	req.n_labels = 1;
	ck_assert_int_eq(api_answer(&alice, &req, &ans), 0);
	ck_assert_uint_eq(ans.status, 200);
	j = json_tokener_parse(ans.body);
	free(ans.body);
	ck_assert_uint_eq(array_len(j, "volumes"), 1);
}
END_TEST

START_TEST(pages_a_long_listing)
{
	char body[128];
	json_object *j;

	for (int i = 0; i < TP_API_PAGE_MAX + 10; i++) {
		snprintf(body, sizeof body, "{\"name\":\"v%d\",\"size\":65536}", i);
		ck_assert_uint_eq(ask(&alice, "POST", "/v1/volumes", body, NULL), 201);
	}
	ck_assert_uint_eq(ask(&alice, "GET", "/v1/volumes", NULL, &j), 200);
	ck_assert_uint_eq(array_len(j, "volumes"), TP_API_PAGE_MAX + 10);
}
END_TEST

START_TEST(answers_errors_as_ops_does)
{
	json_object *j;

	ask(&alice, "POST", "/v1/volumes", "{\"name\":\"Bad\",\"size\":1048576}", &j);
	ck_assert_str_eq(code_of(j), "invalid_name");
	ck_assert_uint_eq(ask(&alice, "GET", "/v1/volumes/Bad!", NULL, &j), 400);
	ck_assert_str_eq(code_of(j), "invalid_name");
	ck_assert_uint_eq(ask(&alice, "GET", "/v1/volumes/missing", NULL, &j), 404);
	ck_assert_str_eq(code_of(j), "not_found");
	ck_assert_uint_eq(ask(&alice, "POST", "/v1/volumes", "{\"name\":\"x\",\"size\":1000}", &j),
	                  400);
	ck_assert_str_eq(code_of(j), "invalid_size");
	ck_assert_uint_eq(ask(&admin, "GET", "/v1/tenants/nobody/volumes", NULL, &j), 404);
	ck_assert_str_eq(code_of(j), "not_found");
}
END_TEST

START_TEST(serves_the_admin_acting_for_a_tenant)
{
	json_object *j;

	ck_assert_uint_eq(
	    ask(&admin, "POST", "/v1/tenants", "{\"name\":\"carol\",\"uid\":1234}", NULL), 201);
	ck_assert_uint_eq(ask(&admin, "GET", "/v1/tenants", NULL, &j), 200);
	ck_assert_uint_eq(array_len(j, "tenants"), 2);
	ck_assert_uint_eq(ask(&admin, "POST", "/v1/tenants/carol/volumes",
	                      "{\"name\":\"c1\",\"size\":1048576}", NULL),
	                  201);
	ck_assert_uint_eq(ask(&admin, "GET", "/v1/tenants/carol/volumes", NULL, &j), 200);
	ck_assert_uint_eq(array_len(j, "volumes"), 1);
	/* Alice does not see carol's volume. */
	ck_assert_uint_eq(ask(&alice, "GET", "/v1/volumes/c1", NULL, NULL), 404);
	ck_assert_uint_eq(ask(&admin, "GET", "/v1/pool", NULL, NULL), 200);
	ck_assert_uint_eq(ask(&admin, "GET", "/metrics", NULL, NULL), 200);
	ck_assert_uint_eq(ask(&admin, "GET", "/v1/grants", NULL, NULL), 200);
	ck_assert_uint_eq(ask(&admin, "GET", "/v1/images", NULL, NULL), 200);
	ck_assert_uint_eq(ask(&admin, "DELETE", "/v1/tenants/carol", NULL, NULL), 409);
}
END_TEST

/* A diff and a volume's usage cross the wire to the real operations, whose fake pool keeps
 * no metadata to tell them from: not supported, in ops' own words; and what is missing or
 * invalid is answered as ops answers it, for the tenant and the admin acting for it. */
START_TEST(passes_diff_and_usage_answers_through)
{
	static const struct {
		const struct principal *p;
		const char *url, *from;
		unsigned status;
		const char *code;
	} cases[] = {
	    {&alice, "/v1/volumes/a/usage", NULL, 501, "not_supported"},
	    {&admin, "/v1/tenants/alice/volumes/a/usage", NULL, 501, "not_supported"},
	    {&alice, "/v1/volumes/missing/usage", NULL, 404, "not_found"},
	    {&alice, "/v1/volumes/Bad!/usage", NULL, 400, "invalid_name"},
	    {&alice, "/v1/volumes/a/diff", "b", 501, "not_supported"},
	    {&admin, "/v1/tenants/alice/volumes/a/diff", "alice/b", 501, "not_supported"},
	    {&alice, "/v1/volumes/missing/diff", "b", 404, "not_found"},
	    {&alice, "/v1/volumes/a/diff", "missing", 404, "not_found"},
	    {&alice, "/v1/volumes/a/diff", "images/missing", 404, "not_found"},
	    {&alice, "/v1/volumes/a/diff", "nobody/b", 404, "not_found"},
	    {&alice, "/v1/volumes/missing/diff", "Bad", 400, "invalid_name"},
	    {&admin, "/v1/tenants/nobody/volumes/a/diff", "b", 404, "not_found"},
	};
	json_object *j;

	ck_assert_uint_eq(
	    ask(&alice, "POST", "/v1/volumes", "{\"name\":\"a\",\"size\":1048576}", NULL), 201);
	ck_assert_uint_eq(
	    ask(&alice, "POST", "/v1/volumes", "{\"name\":\"b\",\"size\":1048576}", NULL), 201);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		ck_assert_msg(ask_from(cases[i].p, cases[i].url, cases[i].from, &j) ==
		                  cases[i].status,
		              "%s?from=%s: %s", cases[i].url, cases[i].from, message_of(j));
		if (cases[i].status == 501)
			ck_assert_str_eq(message_of(j), strstr(cases[i].url, "diff")
			                                    ? "diff volumes: this pool cannot tell "
			                                      "what its volumes hold"
			                                    : "volume usage: this pool cannot tell "
			                                      "what its volumes hold");
		ck_assert_str_eq(code_of(j), cases[i].code);
	}
}
END_TEST

/* REQ sent as it is, bypassing the client: the error the parent answers with. */
static int raw(struct api_wire_request *req)
{
	struct api_wire_reply rep;
	void *buf;
	size_t len;
	int r;

	req->w.h.id = 0x7fffffff;
	ck_assert_int_eq(api_wire_encode_request(req, &buf, &len), 0);
	ck_assert_int_eq(api_wire_send(fd, buf, len), 0);
	free(buf);
	ck_assert_int_eq(api_wire_recv(fd, TP_API_MESSAGE_MAX, &buf, &len), 0);
	ck_assert_int_eq(api_wire_decode_reply(buf, len, req->w.h.op, req->w.h.id, 0, &rep), 0);
	r = -(int)rep.w.error;
	free(buf);
	return r;
}

START_TEST(refuses_what_a_socket_may_not_ask)
{
	struct api_wire_request req;

	/* An index past the sockets. */
	api_wire_request_init(&req, TP_API_USAGE, 0, 5);
	ck_assert_int_eq(raw(&req), -EPERM);
	/* An admin operation from alice's socket. */
	api_wire_request_init(&req, TP_API_TENANT_LIST, 0, 1);
	ck_assert_int_eq(raw(&req), -EPERM);
	api_wire_request_init(&req, TP_API_PRINCIPAL_FOR_TENANT, 0, 1);
	API_WIRE_SET(req.w.name, "alice");
	ck_assert_int_eq(raw(&req), -EPERM);
	/* Acting for a tenant from alice's socket. */
	api_wire_request_init(&req, TP_API_USAGE, 0, 1);
	API_WIRE_SET(req.w.acting_for, "alice");
	ck_assert_int_eq(raw(&req), -EPERM);
	/* The same from the admin's socket is served; and the parent still serves alice. */
	req.w.socket = 0;
	ck_assert_int_eq(raw(&req), 0);
	api_wire_request_init(&req, TP_API_USAGE, 0, 1);
	ck_assert_int_eq(raw(&req), 0);
	/* A diff and usage as any volume operation: alice's own, or the admin's for her. */
	api_wire_request_init(&req, TP_API_VOLUME_DIFF, 0, 1);
	API_WIRE_SET(req.w.name, "a");
	API_WIRE_SET(req.w.target, "b");
	API_WIRE_SET(req.w.acting_for, "alice");
	ck_assert_int_eq(raw(&req), -EPERM);
	req.w.socket = 0;
	ck_assert_int_eq(raw(&req), -ENOENT);
	api_wire_request_init(&req, TP_API_VOLUME_USAGE, 0, 1);
	API_WIRE_SET(req.w.name, "a");
	ck_assert_int_eq(raw(&req), -ENOENT);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("ops-wire");
	TCase *tc = tcase_create("ops-wire");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, serves_volumes_of_a_tenant);
	tcase_add_test(tc, filters_by_label);
	tcase_add_test(tc, pages_a_long_listing);
	tcase_add_test(tc, answers_errors_as_ops_does);
	tcase_add_test(tc, serves_the_admin_acting_for_a_tenant);
	tcase_add_test(tc, passes_diff_and_usage_answers_through);
	tcase_add_test(tc, refuses_what_a_socket_may_not_ask);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
