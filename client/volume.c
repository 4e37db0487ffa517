/* The volume commands: create, snapshot, commit, label, rm, ls, info, diff, resize, usage. On a
 * tenant's socket they act on that tenant's volumes; on the admin socket, with --tenant T,
 * on T's, through /v1/tenants/T/.... */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tp-cleanup.h"
#include "client.h"
#include "output.h"

#define WHAT_MAX 160
#define PATH_LEN 256

/* The API path "PREFIX/COLLECTION[/NAME[/ACTION]]" into BUF: PREFIX is "/v1" on a tenant's
 * socket and "/v1/tenants/T" on the admin socket. NAME has been checked, so nothing needs
 * escaping. */
static int api_path(const struct ctx *c, const char *collection, const char *name,
                    const char *action, char *buf, size_t len)
{
	int n;

	n = snprintf(buf, len, "%s%s/%s%s%s%s%s", c->admin ? "/v1/tenants/" : "/v1",
	             c->admin ? c->tenant : "", collection, name ? "/" : "", name ? name : "",
	             action ? "/" : "", action ? action : "");
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return 0;
}

/* Print the volume the daemon answered with, as a table row or as JSON. */
static int show_volume(const struct ctx *c, struct json_object *answer)
{
	return c->json ? print_json(stdout, answer) : print_volumes(stdout, answer, false);
}

/* Send METHOD with BODY to volumes[/NAME[/ACTION]], and show the volume in the answer. */
static int volume_request(struct ctx *c, const char *what, const char *method,
                          struct json_object *body, const char *name, const char *action)
{
	CLEANUP_JSON struct json_object *answer = NULL;
	char path[PATH_LEN];
	int r;

	r = api_path(c, "volumes", name, action, path, sizeof path);
	if (r < 0)
		return error_line(r, what, "request path too long");
	r = http_json(c->http, what, method, path, body, &answer);
	if (r < 0)
		return r;
	return show_volume(c, answer);
}

/* KEY (KEY_LEN bytes) = VALUE (NULL: null) into the JSON object O. */
static int add_label(struct json_object *o, const char *key, size_t key_len, const char *value)
{
	CLEANUP_FREE char *k = strndup(key, key_len);

	if (k == NULL)
		return -ENOMEM;
	return json_add_string(o, k, value);
}

/* The --label options of A ("KEY=VALUE", each checked) as the member "labels" of BODY;
 * nothing if there are none. */
static int add_labels(const char *what, const struct args *a, struct json_object *body)
{
	struct json_object *labels;
	size_t key_len;
	int r;

	if (a->n_labels == 0)
		return 0;
	labels = json_object_new_object();
	if (labels == NULL || json_add_value(body, "labels", labels) < 0)
		return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
	for (size_t i = 0; i < a->n_labels; i++) {
		if ((r = check_label(what, a->label[i], true, &key_len)) < 0)
			return r;
		if (add_label(labels, a->label[i], key_len, a->label[i] + key_len + 1) < 0)
			return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
	}
	return 0;
}

int cmd_create(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *body = NULL;
	const char *name = a->operand[0];
	char what[WHAT_MAX];
	uint64_t size;
	int r;

	snprintf(what, sizeof what, "create %s", name);
	r = check_name(what, "volume", name);
	if (r < 0)
		return r;
	r = parse_volume_size(what, a->size, &size);
	if (r < 0)
		return r;
	body = json_object_new_object();
	if (body == NULL || json_add_string(body, "name", name) < 0 ||
	    json_add_int(body, "size", (int64_t)size) < 0)
		return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
	r = add_labels(what, a, body);
	if (r < 0)
		return r;
	return volume_request(c, what, "POST", body, NULL, NULL);
}

int cmd_snapshot(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *body = NULL;
	const char *name = a->operand[0];
	char what[WHAT_MAX];
	uint64_t size = 0;
	int r;

	snprintf(what, sizeof what, "snapshot %s", name);
	r = check_name(what, "volume", name);
	if (r < 0)
		return r;
	r = check_ref(what, a->from);
	if (r < 0)
		return r;
	if (a->size != NULL) {
		r = parse_volume_size(what, a->size, &size);
		if (r < 0)
			return r;
	}
	body = json_object_new_object();
	if (body == NULL || json_add_string(body, "name", name) < 0 ||
	    json_add_string(body, "parent", a->from) < 0 ||
	    (a->size != NULL && json_add_int(body, "size", (int64_t)size) < 0))
		return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
	r = add_labels(what, a, body);
	if (r < 0)
		return r;
	return volume_request(c, what, "POST", body, NULL, NULL);
}

int cmd_commit(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *body = NULL;
	const char *name = a->operand[0];
	char what[WHAT_MAX];
	int r;

	snprintf(what, sizeof what, "commit %s", name);
	r = check_name(what, "volume", name);
	if (r == 0 && a->as != NULL)
		r = check_name(what, "volume", a->as);
	if (r < 0)
		return r;
	/* Without --as, no body: the commit as it always was. */
	if (a->as != NULL &&
	    ((body = json_object_new_object()) == NULL || json_add_string(body, "name", a->as) < 0))
		return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
	return volume_request(c, what, "POST", body, name, "commit");
}

int cmd_label(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *answer = NULL;
	CLEANUP_JSON struct json_object *body = NULL;
	struct json_object *labels;
	const char *name = a->operand[0];
	char what[WHAT_MAX], path[PATH_LEN];
	size_t key_len;
	int r;

	snprintf(what, sizeof what, "label %s", name);
	r = check_name(what, "volume", name);
	if (r < 0)
		return r;
	body = json_object_new_object();
	labels = json_object_new_object();
	if (body == NULL || labels == NULL || json_add_value(body, "labels", labels) < 0)
		return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
	/* KEY=VALUE sets, KEY- removes (a JSON merge patch: null). */
	for (size_t i = 1; i < a->n_operands; i++) {
		const char *op = a->operand[i];
		size_t len = strlen(op);
		const char *why;

		if (strchr(op, '=') != NULL) {
			r = check_label(what, op, true, &key_len);
			if (r == 0)
				r = add_label(labels, op, key_len, op + key_len + 1);
		} else if (len > 0 && op[len - 1] == '-') {
			why = tp_label_invalid(op, len - 1, NULL, 0);
			if (why != NULL)
				return error_line(-EINVAL, what, "invalid label '%.*s': %s",
				                  (int)(len - 1), op, why);
			r = add_label(labels, op, len - 1, NULL);
		} else {
			return error_line(-EINVAL, what,
			                  "invalid label change '%s': expected KEY=VALUE to set "
			                  "or KEY- to remove",
			                  op);
		}
		if (r == -ENOMEM)
			return error_line(r, what, "%s", strerror(ENOMEM));
		if (r < 0)
			return r;
	}
	r = api_path(c, "volumes", name, NULL, path, sizeof path);
	if (r < 0)
		return error_line(r, what, "request path too long");
	r = http_json(c->http, what, "PATCH", path, body, &answer);
	if (r < 0)
		return r;
	return c->json ? print_json(stdout, answer) : print_volume_details(stdout, answer);
}

int cmd_resize(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *body = NULL;
	const char *name = a->operand[0];
	char what[WHAT_MAX];
	uint64_t size;
	int r;

	snprintf(what, sizeof what, "resize %s", name);
	r = check_name(what, "volume", name);
	if (r < 0)
		return r;
	r = parse_volume_size(what, a->size, &size);
	if (r < 0)
		return r;
	body = json_object_new_object();
	if (body == NULL || json_add_int(body, "size", (int64_t)size) < 0)
		return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
	return volume_request(c, what, "POST", body, name, "resize");
}

int cmd_rm(struct ctx *c, const struct args *a)
{
	const char *name = a->operand[0];
	char what[WHAT_MAX];
	int r;

	snprintf(what, sizeof what, "rm %s", name);
	r = check_name(what, "volume", name);
	if (r < 0)
		return r;
	/* 204: nothing to show. */
	return volume_request(c, what, "DELETE", NULL, name, NULL);
}

/* The entry named REF in the tenant's volume list, for references (images/NAME,
 * OWNER/NAME), which have no path of their own in the API. Answers "not found" like the
 * daemon when the list lacks it. */
static int find_listed(struct ctx *c, const char *what, const char *ref,
                       struct json_object **ret_volume)
{
	CLEANUP_JSON struct json_object *answer = NULL;
	struct json_object *list;
	char path[PATH_LEN];
	int r;

	r = api_path(c, "volumes", NULL, NULL, path, sizeof path);
	if (r < 0)
		return error_line(r, what, "request path too long");
	r = http_json(c->http, what, "GET", path, NULL, &answer);
	if (r < 0)
		return r;
	r = answer_list(what, answer, "volumes", &list);
	if (r < 0)
		return r;
	for (size_t i = 0; i < json_object_array_length(list); i++) {
		struct json_object *v = json_object_array_get_idx(list, i), *name;

		if (json_object_object_get_ex(v, "name", &name) &&
		    json_object_is_type(name, json_type_string) &&
		    strcmp(json_object_get_string(name), ref) == 0) {
			*ret_volume = json_object_get(v);
			return 0;
		}
	}
	return error_line(-ENOENT, what, "not found: no volume %s visible to this tenant", ref);
}

/* The exact usage of P's own volume NAME (GET .../usage) into ANSWER, as its member
 * "usage", when the daemon tells it. A daemon that cannot (not_supported) or that knows no
 * such path (one from before it: not found) leaves ANSWER as it was, silently; any other
 * failure says why on stderr and leaves it as well: info shows the volume all the same. */
static void add_usage(struct ctx *c, const char *what, const char *name, struct json_object *answer)
{
	struct json_object *usage = NULL;
	char path[PATH_LEN], why[512];
	int r;

	if (api_path(c, "volumes", name, "usage", path, sizeof path) < 0)
		return;
	error_lines_capture(why, sizeof why);
	r = http_json(c->http, what, "GET", path, NULL, &usage);
	error_lines_capture(NULL, 0);
	if (r == -EOPNOTSUPP || (r == -ENOENT && http_last_status(c->http) == 404))
		return;
	if (r < 0) {
		error_line(r, NULL, "%s; shown without its exact usage", why);
		return;
	}
	if (json_add_value(answer, "usage", usage) < 0)
		error_line(-ENOMEM, what, "%s; shown without its exact usage", strerror(ENOMEM));
}

int cmd_info(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *answer = NULL;
	const char *name = a->operand[0];
	char what[WHAT_MAX], path[PATH_LEN];
	int r;

	snprintf(what, sizeof what, "info %s", name);
	if (strchr(name, '/') != NULL) {
		r = check_ref(what, name);
		if (r == 0)
			r = find_listed(c, what, name, &answer);
	} else {
		r = check_name(what, "volume", name);
		if (r == 0)
			r = api_path(c, "volumes", name, NULL, path, sizeof path);
		if (r == -ENAMETOOLONG)
			return error_line(r, what, "request path too long");
		if (r == 0)
			r = http_json(c->http, what, "GET", path, NULL, &answer);
		if (r == 0)
			add_usage(c, what, name, answer);
	}
	if (r < 0)
		return r;
	return c->json ? print_json(stdout, answer) : print_volume_details(stdout, answer);
}

/* The diff's path, "PREFIX/volumes/NAME/diff?from=REF", into BUF of LEN bytes. REF has
 * been checked: its one slash, if any, is all that needs escaping. */
static int diff_path(const struct ctx *c, const char *name, const char *ref, char *buf, size_t len)
{
	const char *slash = strchr(ref, '/');
	size_t n;
	int r = api_path(c, "volumes", name, "diff", buf, len);

	if (r < 0)
		return r;
	n = strlen(buf);
	r = snprintf(buf + n, len - n, "?from=%.*s%s%s",
	             (int)(slash ? (size_t)(slash - ref) : strlen(ref)), ref, slash ? "%2F" : "",
	             slash ? slash + 1 : "");
	return r < 0 || (size_t)r >= len - n ? -ENAMETOOLONG : 0;
}

int cmd_diff(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *answer = NULL;
	const char *name = a->operand[0];
	char what[WHAT_MAX], path[2 * PATH_LEN];
	struct json_object *changes;
	int r;

	snprintf(what, sizeof what, "diff %s", name);
	r = check_name(what, "volume", name);
	if (r == 0)
		r = check_ref(what, a->from);
	if (r < 0)
		return r;
	if (diff_path(c, name, a->from, path, sizeof path) < 0)
		return error_line(-ENAMETOOLONG, what, "request path too long");
	r = http_json(c->http, what, "GET", path, NULL, &answer);
	if (r < 0)
		return r;
	if (c->json)
		return print_json(stdout, answer);
	r = answer_list(what, answer, "changes", &changes);
	return r < 0 ? r : print_diff(stdout, changes);
}

/* S percent-encoded into F: every byte but the unreserved ones of RFC 3986. */
static void put_escaped(FILE *f, const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || strchr("-._~", ch) != NULL)
			fputc(ch, f);
		else
			fprintf(f, "%%%02X", ch);
	}
}

/* The listing's path, with "?label=..." for each --label of A (checked), into *RET_PATH
 * (malloc'ed): the filters run to kilobytes. */
static int list_path(const struct ctx *c, const struct args *a, char **ret_path)
{
	CLEANUP_FREE char *text = NULL;
	char path[PATH_LEN];
	size_t len = 0, key_len;
	FILE *f;
	int r;

	for (size_t i = 0; i < a->n_labels; i++)
		if ((r = check_label("ls", a->label[i], false, &key_len)) < 0)
			return r;
	r = api_path(c, "volumes", NULL, NULL, path, sizeof path);
	if (r < 0)
		return error_line(r, "ls", "request path too long");
	f = open_memstream(&text, &len);
	if (f == NULL)
		return error_line(-ENOMEM, "ls", "%s", strerror(ENOMEM));
	fputs(path, f);
	for (size_t i = 0; i < a->n_labels; i++) {
		fputs(i ? "&label=" : "?label=", f);
		put_escaped(f, a->label[i]);
	}
	if (fclose(f) != 0)
		return error_line(-ENOMEM, "ls", "%s", strerror(ENOMEM));
	*ret_path = TAKE_PTR(text);
	return 0;
}

int cmd_ls(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *answer = NULL;
	CLEANUP_ROWS struct rows rows = {0};
	CLEANUP_FREE char *path = NULL;
	int r;

	if (a->attached)
		return attach_list(c, a->quiet);
	r = list_path(c, a, &path);
	if (r < 0)
		return r;
	if (c->json) {
		r = http_json(c->http, "ls", "GET", path, NULL, &answer);
		return r < 0 ? r : print_json(stdout, answer);
	}
	/* Row by row as the answer is parsed: at 10000 volumes, parsing the whole answer
	 * into objects first was most of the client's time. */
	r = volume_rows_begin(&rows, stdout, a->quiet);
	if (r < 0)
		return error_line(r, "ls", "%s", strerror(-r));
	r = http_json_each(c->http, "ls", path, "volumes", rows_add, &rows);
	return r < 0 ? r : rows_print(&rows);
}

int cmd_usage(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *answer = NULL;
	char path[PATH_LEN];
	int r;

	(void)a;
	r = api_path(c, "usage", NULL, NULL, path, sizeof path);
	if (r < 0)
		return error_line(r, "usage", "request path too long");
	r = http_json(c->http, "usage", "GET", path, NULL, &answer);
	if (r < 0)
		return r;
	return c->json ? print_json(stdout, answer) : print_usage(stdout, answer);
}
