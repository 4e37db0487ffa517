/* The tenant commands of the admin socket: tenant add, rm, ls, info and set. */
#include <errno.h>
#include <string.h>

#include "client.h"
#include "output.h"

#define WHAT_MAX 160
#define PATH_LEN 128

/* Add the socket owner and quotas given in A to BODY; "none" quotas become null. */
static int add_settings(const char *what, const struct args *a, struct json_object *body)
{
	static const struct {
		const char *key, *option;
		bool is_size;
	} quotas[] = {
	    {"max_volumes", "--max-volumes", false},
	    {"max_size", "--max-size", true},
	    {"max_used", "--max-used", true},
	};
	const char *quota_values[] = {a->max_volumes, a->max_size, a->max_used};
	uint32_t id;
	int r;

	if (a->uid != NULL) {
		r = parse_id(what, "--uid", a->uid, &id);
		if (r < 0)
			return r;
		if (json_add_int(body, "uid", id) < 0)
			return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
	}
	if (a->gid != NULL) {
		r = parse_id(what, "--gid", a->gid, &id);
		if (r < 0)
			return r;
		if (json_add_int(body, "gid", id) < 0)
			return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
	}
	for (size_t i = 0; i < 3; i++) {
		struct json_object *value;

		if (quota_values[i] == NULL)
			continue;
		r = parse_quota(what, quotas[i].option, quota_values[i], quotas[i].is_size, &value);
		if (r < 0)
			return r;
		/* json_add_value takes VALUE, null included, whatever happens. */
		if (json_add_value(body, quotas[i].key, value) < 0)
			return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
	}
	return 0;
}

/* Show the tenant the daemon answered with, as a table row or as JSON. */
static int show_tenant(const struct ctx *c, struct json_object *answer)
{
	return c->json ? print_json(stdout, answer) : print_tenants(stdout, answer, false);
}

int cmd_tenant_add(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *body = NULL;
	CLEANUP_JSON struct json_object *answer = NULL;
	const char *name = a->operand[0];
	char what[WHAT_MAX];
	int r;

	snprintf(what, sizeof what, "tenant add %s", name);
	r = check_name(what, "tenant", name);
	if (r < 0)
		return r;
	body = json_object_new_object();
	if (body == NULL || json_add_string(body, "name", name) < 0)
		return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
	r = add_settings(what, a, body);
	if (r < 0)
		return r;
	r = http_json(c->http, what, "POST", "/v1/tenants", body, &answer);
	if (r < 0)
		return r;
	return show_tenant(c, answer);
}

int cmd_tenant_set(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *body = NULL;
	CLEANUP_JSON struct json_object *answer = NULL;
	const char *name = a->operand[0];
	char what[WHAT_MAX], path[PATH_LEN];
	int r;

	snprintf(what, sizeof what, "tenant set %s", name);
	r = check_name(what, "tenant", name);
	if (r < 0)
		return r;
	body = json_object_new_object();
	if (body == NULL)
		return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
	r = add_settings(what, a, body);
	if (r < 0)
		return r;
	snprintf(path, sizeof path, "/v1/tenants/%s", name);
	r = http_json(c->http, what, "PATCH", path, body, &answer);
	if (r < 0)
		return r;
	return show_tenant(c, answer);
}

int cmd_tenant_rm(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *answer = NULL;
	const char *name = a->operand[0];
	char what[WHAT_MAX], path[PATH_LEN];
	int r;

	snprintf(what, sizeof what, "tenant rm %s", name);
	r = check_name(what, "tenant", name);
	if (r < 0)
		return r;
	snprintf(path, sizeof path, "/v1/tenants/%s%s", name, a->force ? "?force=1" : "");
	r = http_json(c->http, what, "DELETE", path, NULL, &answer);
	if (r < 0)
		return r;
	return c->json ? print_json(stdout, answer) : 0;
}

int cmd_tenant_ls(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *answer = NULL;
	struct json_object *list;
	int r;

	r = http_json(c->http, "tenant ls", "GET", "/v1/tenants", NULL, &answer);
	if (r < 0)
		return r;
	if (c->json)
		return print_json(stdout, answer);
	r = answer_list("tenant ls", answer, "tenants", &list);
	if (r < 0)
		return r;
	return print_tenants(stdout, list, a->quiet);
}

int cmd_tenant_info(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *answer = NULL;
	const char *name = a->operand[0];
	char what[WHAT_MAX], path[PATH_LEN];
	int r;

	snprintf(what, sizeof what, "tenant info %s", name);
	r = check_name(what, "tenant", name);
	if (r < 0)
		return r;
	snprintf(path, sizeof path, "/v1/tenants/%s", name);
	r = http_json(c->http, what, "GET", path, NULL, &answer);
	if (r < 0)
		return r;
	return c->json ? print_json(stdout, answer) : print_tenant_details(stdout, answer);
}
