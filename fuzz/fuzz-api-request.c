/* Fuzz target: the REST layer of thinproxyd (daemon/api.c's api_answer: URL splitting,
 * content type, body size, JSON parsing, field extraction, routing, replies), linked with
 * fake-ops.c instead of the real operations. An input is one request, as text:
 *
 *   P METHOD URL[?QUERY][ CONTENT-TYPE]\n
 *   BODY
 *
 * P is 'A' for the admin socket or 'T' for tenant alice's socket (lower case: the body went
 * over the server's bound); URL is passed as sent, as the daemon has libmicrohttpd do
 * (api_answer decodes it); QUERY may carry force=..., from=... and label=... (each '+' a
 * space, as libmicrohttpd has them, up to TP_LABELS_MAX + 1); everything after the first
 * newline is the body.
 * Checked on every answer:
 *   - a known status, never 500 (the fake operations do not fail internally, so a 500 is a
 *     route that answered nothing);
 *   - 204 without a body; everything else a JSON object ending in a newline (the metrics
 *     text aside), with {"error": {"code", "message"}} exactly when the status is >= 400;
 *   - a tenant's socket never reaches an admin-only operation, never acts for another
 *     principal (fake-ops.c traps), and never sees thin ids, nor labels of a volume that is
 *     not its own;
 *   - no operation gets a label that breaks the rules of tp-rules.h (fake-ops.c traps);
 *   - nothing taken from a body (an operation that gets parsed fields, then 2xx) unless it
 *     is strictly one JSON object: none with a NUL byte (no JSON text holds one), none with
 *     an integer that json-c had to clamp (every numeric field's bound is below 2^63);
 *   - nothing leaks (LeakSanitizer). */
#include <json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../daemon/api.h"
#include "fake-ops.h"

#define CHECK(cond)                       \
	do {                              \
		if (!(cond))              \
			__builtin_trap(); \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The arguments of QUERY (a&b=c form), in place, as libmicrohttpd hands them over: the
 * values of "force" and "from" into REQ, and the values of "label" into LABELS (room for
 * TP_LABELS_MAX + 1). */
static void query_arguments(char *query, struct api_request *req, const char **labels)
{
	char *save = NULL, *arg;

	for (arg = strtok_r(query, "&", &save); arg; arg = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(arg, '=');

		if (eq)
			*eq++ = '\0';
		for (char *p = eq; p && *p; p++)
			if (*p == '+')
				*p = ' ';
		if (strcmp(arg, "force") == 0 && req->force == NULL)
			req->force = eq ? eq : "";
		if (strcmp(arg, "from") == 0 && req->from == NULL)
			req->from = eq ? eq : "";
		if (strcmp(arg, "label") == 0 && req->n_labels < TP_LABELS_MAX + 1)
			labels[req->n_labels++] = eq ? eq : "";
	}
	req->labels = labels;
}

/* Does the body hold an integer beyond 2^63 - 1, which json-c clamps to INT64_MAX? */
static bool has_huge_integer(const struct api_request *req)
{
	json_object *top = json_tokener_parse(req->body);
	bool huge = false;

	if (top == NULL)
		return false;
	if (json_object_is_type(top, json_type_object)) {
		json_object_object_foreach (top, key, val) {
			(void)key;
			if (json_object_is_type(val, json_type_int) &&
			    json_object_get_uint64(val) > INT64_MAX)
				huge = true;
		}
	}
	json_object_put(top);
	return huge;
}

/* Could this request's body be taken at all? */
static bool body_acceptable(const struct api_request *req)
{
	if (req->len == 0)
		return true;
	return memchr(req->body, '\0', req->len) == NULL && !has_huge_integer(req);
}

/* A volume V as answered: its labels an object, and on a tenant's socket empty unless the
 * tenant owns it. */
static void check_volume_labels(json_object *v)
{
	json_object *labels, *owner;

	if (!json_object_object_get_ex(v, "labels", &labels))
		return;
	CHECK(json_object_is_type(labels, json_type_object));
	if (fake_ops_socket.admin)
		return;
	if (!json_object_object_get_ex(v, "owner", &owner) || owner == NULL ||
	    strcmp(json_object_get_string(owner), fake_ops_socket.tenant) != 0)
		CHECK(json_object_object_length(labels) == 0);
}

static void check_answer(const struct api_request *req, const struct api_answer *ans)
{
	static const unsigned statuses[] = {200, 201, 204, 400, 404, 405, 409, 413, 415, 507};
	json_object *top, *err, *code, *msg, *list;
	bool known = false;

	for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
		known |= ans->status == statuses[i];
	CHECK(known);
	if (ans->status < 300 && fake_ops_body_used)
		CHECK(body_acceptable(req));
	if (ans->status == 204) {
		CHECK(ans->body == NULL && ans->len == 0);
		return;
	}
	CHECK(ans->body != NULL && ans->len > 0 && strlen(ans->body) == ans->len);
	CHECK(ans->body[ans->len - 1] == '\n');
	if (strncmp(ans->content_type, "text/plain", 10) == 0) {
		CHECK(fake_ops_socket.admin && ans->status == 200);
		return;
	}
	CHECK(strcmp(ans->content_type, "application/json") == 0);
	top = json_tokener_parse(ans->body);
	CHECK(top != NULL && json_object_is_type(top, json_type_object));
	if (ans->status >= 400) {
		CHECK(json_object_object_length(top) == 1);
		CHECK(json_object_object_get_ex(top, "error", &err));
		CHECK(json_object_is_type(err, json_type_object));
		CHECK(json_object_object_get_ex(err, "code", &code) &&
		      json_object_is_type(code, json_type_string));
		CHECK(json_object_object_get_ex(err, "message", &msg) &&
		      json_object_is_type(msg, json_type_string));
		CHECK(json_object_get_string_len(msg) > 0);
	} else {
		CHECK(!json_object_object_get_ex(top, "error", NULL));
		if (!fake_ops_socket.admin)
			CHECK(strstr(ans->body, "\"thin_id\":") == NULL);
		check_volume_labels(top);
		if ((json_object_object_get_ex(top, "volumes", &list) ||
		     json_object_object_get_ex(top, "images", &list)) &&
		    json_object_is_type(list, json_type_array))
			for (size_t i = 0; i < json_object_array_length(list); i++)
				check_volume_labels(json_object_array_get_idx(list, i));
	}
	json_object_put(top);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t head_len = nl ? (size_t)(nl - data) : size;
	char *head, *method, *url, *query, *ctype, *sp, *body = NULL;
	const char *labels[TP_LABELS_MAX + 1];
	struct api_request req = {0};
	struct api_answer ans;

	if (size < 1 || ((data[0] | 0x20) != 'a' && (data[0] | 0x20) != 't'))
		return 0;
	head = malloc(head_len + 1);
	if (head == NULL)
		return 0;
	memcpy(head, data, head_len);
	head[head_len] = '\0';

	/* "P METHOD URL[ CONTENT-TYPE]"; a missing part is empty. */
	fake_ops_socket = (data[0] | 0x20) == 'a' ? fake_ops_admin : fake_ops_alice;
	req.too_large = data[0] >= 'a';
	method = head[0] ? head + 1 + (head[1] == ' ') : head;
	sp = strchr(method, ' ');
	url = sp ? sp + 1 : method + strlen(method);
	if (sp)
		*sp = '\0';
	ctype = strchr(url, ' ');
	if (ctype)
		*ctype++ = '\0';
	query = strchr(url, '?');
	if (query) {
		*query++ = '\0';
		query_arguments(query, &req, labels);
	}
	req.method = method;
	req.url = url;
	req.content_type = ctype;

	/* The body as the server holds it: LEN bytes and a NUL, NULL if none arrived. */
	if (nl && (size_t)(data + size - nl) > 1) {
		req.len = size - head_len - 1;
		body = malloc(req.len + 1);
		if (body == NULL)
			goto out;
		memcpy(body, nl + 1, req.len);
		body[req.len] = '\0';
		req.body = body;
	}

	fake_ops_body_used = false;
	if (api_answer(&fake_ops_socket, &req, &ans) == 0) {
		check_answer(&req, &ans);
		free(ans.body);
	}
out:
	free(body);
	free(head);
	return 0;
}
