/* The REST API: HTTP and JSON, request validation, and the mapping of ops' -errno to
 * statuses. Nothing here touches the store or the pool except through daemon/ops.h. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json.h>
#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "log.h"
#include "tp-broker.h"
#include "tp-cleanup.h"

#define BODY_MAX     (64 * 1024)
#define SEGMENTS_MAX 8

struct api_server {
	struct MHD_Daemon *mhd;
	struct principal principal;
	char *path;
	int fd;
};

/* One request's body as it arrives, across the handler's calls. */
struct upload {
	char *body;
	size_t len;
	bool too_large;
};

struct reply {
	unsigned status;
	json_object *json; /* owned */
	char *json_text;   /* or JSON already written out, owned */
	size_t json_len;
	char *text; /* or plain text, owned */
};

static void cleanup_json(json_object **j)
{
	json_object_put(*j);
}
#define CLEANUP_JSON __attribute__((cleanup(cleanup_json)))

/* Replies */

/* Each error code's HTTP status (docs/api.md). */
static const unsigned error_status[] = {
    [TP_ERROR_INVALID_REQUEST] = 400,
    [TP_ERROR_INVALID_NAME] = 400,
    [TP_ERROR_INVALID_SIZE] = 400,
    [TP_ERROR_NOT_FOUND] = 404,
    [TP_ERROR_METHOD_NOT_ALLOWED] = 405,
    [TP_ERROR_EXISTS] = 409,
    [TP_ERROR_BUSY] = 409,
    [TP_ERROR_READ_ONLY] = 409,
    [TP_ERROR_TOO_LARGE] = 413,
    [TP_ERROR_UNSUPPORTED_MEDIA_TYPE] = 415,
    [TP_ERROR_QUOTA_EXCEEDED] = 507,
    [TP_ERROR_POOL_FULL] = 507,
    [TP_ERROR_NOT_SUPPORTED] = 501,
    [TP_ERROR_INTERNAL] = 500,
};

static void reply_error(struct reply *rep, enum tp_error code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reply_error(struct reply *rep, enum tp_error code, const char *fmt, ...)
{
	char msg[512];
	json_object *err = json_object_new_object(), *top = json_object_new_object();
	va_list ap;

	if ((size_t)code >= sizeof error_status / sizeof error_status[0] || error_status[code] == 0)
		code = TP_ERROR_INTERNAL;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	json_object_object_add(err, "code", json_object_new_string(tp_error_name(code)));
	json_object_object_add(err, "message", json_object_new_string(msg));
	json_object_object_add(top, "error", err);
	json_object_put(rep->json);
	rep->json = top;
	rep->status = error_status[code];
}

/* Turn an ops result R into an error reply. */
static void reply_ops_error(struct reply *rep, int r)
{
	const char *msg = ops_error_message();

	reply_error(rep, ops_error_code(r), "%s", *msg ? msg : strerror(-r));
}

/* A byte count as the API shows it: JSON integers stop at 2^63 - 1. */
static int64_t api_size(uint64_t v)
{
	return v > INT64_MAX ? INT64_MAX : (int64_t)v;
}

static json_object *json_size(uint64_t v)
{
	return json_object_new_int64(api_size(v));
}

static json_object *json_quota(uint64_t v)
{
	return v ? json_size(v) : NULL;
}

/* T as the API writes times: "2026-11-23T17:02:00Z". */
static const char *format_time(int64_t t, char buf[static 32])
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return buf;
}

static json_object *json_time(int64_t t)
{
	char buf[32];

	return json_object_new_string(format_time(t, buf));
}

/* Volumes and images are written as text, not built as json-c objects: a listing of
 * 10000 volumes is written as it streams from the store, at a third of the cost. */

/* S as a JSON string; "" writes null when EMPTY_IS_NULL. */
static void put_string(FILE *f, const char *s, bool empty_is_null)
{
	static const char escaped[] = "\"\\\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d"
	                              "\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a"
	                              "\x1b\x1c\x1d\x1e\x1f\x7f";

	if (empty_is_null && *s == '\0') {
		fputs("null", f);
		return;
	}
	fputc('"', f);
	for (;;) {
		size_t plain = strcspn(s, escaped);

		fwrite(s, 1, plain, f);
		s += plain;
		if (*s == '\0')
			break;
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else
			fprintf(f, "\\u%04x", (unsigned char)*s);
		s++;
	}
	fputc('"', f);
}

/* V's members, without the braces around them. */
static void put_volume_members(FILE *f, const struct principal *p, const struct volume_view *v)
{
	char created[32], updated[32];

	fputs("\"name\":", f);
	put_string(f, v->name, false);
	fputs(",\"owner\":", f);
	put_string(f, v->owner, true);
	fprintf(f, ",\"size\":%" PRId64 ",\"used\":%" PRId64 ",\"state\":", api_size(v->size),
	        api_size(v->used));
	put_string(f, v->state, false);
	fputs(",\"parent\":", f);
	put_string(f, v->parent, true);
	fprintf(f, ",\"created\":\"%s\",\"updated\":\"%s\",\"writable\":%s",
	        format_time(v->created, created), format_time(v->updated, updated),
	        v->writable ? "true" : "false");
	fputs(",\"labels\":{", f);
	for (size_t i = 0; i < v->n_labels; i++) {
		fputs(i ? "," : "", f);
		put_string(f, v->labels[i].key, false);
		fputc(':', f);
		put_string(f, v->labels[i].value, false);
	}
	fputc('}', f);
	if (p->admin)
		fprintf(f, ",\"thin_id\":%" PRIu32, v->thin_id);
}

static void put_image(FILE *f, const struct image_view *im)
{
	static const struct principal host = {.admin = true};

	fputc('{', f);
	put_volume_members(f, &host, &im->volume);
	if (strcmp(im->volume.state, "importing") == 0)
		fprintf(f, ",\"imported\":%" PRId64, api_size(im->imported));
	fputs(",\"published\":", f);
	if (im->published_all) {
		fputs("\"all\"", f);
	} else {
		fputc('[', f);
		for (size_t i = 0; i < im->n_published; i++) {
			fputs(i ? "," : "", f);
			put_string(f, im->published[i], false);
		}
		fputc(']', f);
	}
	fputc('}', f);
}

/* A reply written as text: open with json_text_begin, write to the stream it returns,
 * end with json_text_end (a newline, and the reply is STATUS with that body), or drop
 * it with json_text_drop for an error reply instead. Running out of memory while
 * writing answers 500 by itself. */
static void reply_no_memory(struct reply *rep)
{
	reply_error(rep, TP_ERROR_INTERNAL, "cannot write the answer: %s", strerror(ENOMEM));
}

static FILE *json_text_begin(struct reply *rep)
{
	FILE *f = open_memstream(&rep->json_text, &rep->json_len);

	if (f == NULL)
		reply_no_memory(rep);
	return f;
}

static void json_text_drop(struct reply *rep, FILE *f)
{
	fclose(f);
	free(rep->json_text);
	rep->json_text = NULL;
}

static void json_text_end(struct reply *rep, FILE *f, unsigned status)
{
	bool failed;

	fputc('\n', f);
	failed = ferror(f) != 0;
	if (fclose(f) != 0 || failed) {
		free(rep->json_text);
		rep->json_text = NULL;
		return reply_no_memory(rep);
	}
	rep->status = status;
}

static json_object *tenant_json(const struct tenant_view *t)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "name", json_object_new_string(t->name));
	json_object_object_add(o, "uid", json_object_new_int64(t->uid));
	json_object_object_add(o, "gid", json_object_new_int64(t->gid));
	json_object_object_add(o, "nbd_uid", json_object_new_int64(t->nbd_uid));
	json_object_object_add(o, "max_volumes", json_quota(t->max_volumes));
	json_object_object_add(o, "max_size", json_quota(t->max_size));
	json_object_object_add(o, "max_used", json_quota(t->max_used));
	json_object_object_add(o, "volumes", json_size(t->volumes));
	json_object_object_add(o, "size", json_size(t->size));
	json_object_object_add(o, "used", json_size(t->used));
	if (t->has_allocated)
		json_object_object_add(o, "allocated", json_size(t->allocated));
	json_object_object_add(o, "nbd", json_object_new_string(t->nbd));
	json_object_object_add(o, "created", json_time(t->created));
	return o;
}

static json_object *usage_json(const struct tenant_view *t)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "tenant", json_object_new_string(t->name));
	json_object_object_add(o, "volumes", json_size(t->volumes));
	json_object_object_add(o, "max_volumes", json_quota(t->max_volumes));
	json_object_object_add(o, "size", json_size(t->size));
	json_object_object_add(o, "max_size", json_quota(t->max_size));
	json_object_object_add(o, "used", json_size(t->used));
	json_object_object_add(o, "max_used", json_quota(t->max_used));
	if (t->has_allocated)
		json_object_object_add(o, "allocated", json_size(t->allocated));
	json_object_object_add(o, "nbd", json_object_new_string(t->nbd));
	return o;
}

/* Request bodies */

/* Does the JSON text BODY (LEN bytes) use a single quote outside a string? json-c takes
 * 'text' for a string even in strict mode; JSON does not. */
static bool json_single_quoted(const char *body, size_t len)
{
	bool in_string = false;

	for (size_t i = 0; i < len; i++) {
		if (in_string && body[i] == '\\')
			i++;
		else if (body[i] == '"')
			in_string = !in_string;
		else if (!in_string && body[i] == '\'')
			return true;
	}
	return false;
}

/* S (LEN bytes: a label's key or value, or a piece of JSON text) as a message may quote it,
 * into BUF: at most 64 bytes of it, cut at a character, then "...". A byte that is not
 * valid UTF-8 or is a control character is written as \xNN, so that the message is
 * valid UTF-8, prints safely and shows what was sent. */
static const char *quoted(const char *s, size_t len, char *buf, size_t size)
{
	size_t in = 0, out = 0, n;
	uint32_t cp;

	while (in < len && out + 8 < size && in < 64) {
		n = tp_utf8_next(s + in, len - in, &cp);
		if (n == 0 || cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) {
			out += (size_t)snprintf(buf + out, size - out, "\\x%02x",
			                        (unsigned char)s[in]);
			in++;
			continue;
		}
		memcpy(buf + out, s + in, n);
		out += n;
		in += n;
	}
	snprintf(buf + out, size - out, "%s", in < len ? "..." : "");
	return buf;
}

/* The first object key in the JSON text BODY (LEN bytes, valid JSON) that holds an
 * escaped NUL byte (\u0000): json-c keeps keys as C strings, so it cuts such a key short
 * there, and {"size\u0000x": 1} would read as {"size": 1}. Its text as sent (between the
 * quotes) in *RET_KEY and *RET_LEN; false if there is none. */
static bool json_key_with_nul(const char *body, size_t len, const char **ret_key, size_t *ret_len)
{
	for (size_t i = 0; i < len; i++) {
		size_t start = i + 1, j;
		bool nul = false;

		if (body[i] != '"')
			continue;
		for (j = start; j < len && body[j] != '"'; j++) {
			if (body[j] != '\\')
				continue;
			if (j + 5 < len && strncmp(body + j + 1, "u0000", 5) == 0)
				nul = true;
			j++; /* an escaped quote or backslash ends nothing */
		}
		for (i = j + 1; i < len && body[i] != '\0' && strchr(" \t\r\n", body[i]); i++)
			;
		if (nul && i < len && body[i] == ':') {
			*ret_key = body + start;
			*ret_len = j - start;
			return true;
		}
		i--; /* look at what follows the string again */
	}
	return false;
}

/* Does KEY hold a size in bytes (answered with invalid_size when it is not one)? */
static bool size_field(const char *key)
{
	return strstr(key, "size") != NULL || strcmp(key, "max_used") == 0;
}

/* Parse the body as a JSON object whose keys are all in ALLOWED (NULL-terminated). */
static int parse_body(const struct api_request *req, struct reply *rep, const char *const *allowed,
                      json_object **ret_obj)
{
	CLEANUP_JSON json_object *obj = NULL;
	json_tokener *tok;
	enum json_tokener_error jerr;

	if (req->len == 0) {
		reply_error(rep, TP_ERROR_INVALID_REQUEST, "a JSON object body is required");
		return -EINVAL;
	}
	tok = json_tokener_new_ex(8);
	if (tok == NULL)
		return -ENOMEM;
	/* Strict: no trailing commas, no leading zeros, no bare words. */
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	obj = json_tokener_parse_ex(tok, req->body, (int)req->len);
	jerr = json_tokener_get_error(tok);
	if (jerr == json_tokener_success && json_single_quoted(req->body, req->len))
		jerr = json_tokener_error_parse_string;
	if (jerr == json_tokener_success && json_tokener_get_parse_end(tok) < req->len) {
		size_t end = json_tokener_get_parse_end(tok);

		/* Only JSON's whitespace may follow; strchr() would also match the NUL. */
		while (end < req->len && req->body[end] != '\0' &&
		       strchr(" \t\r\n", req->body[end]))
			end++;
		if (end < req->len)
			jerr = json_tokener_error_parse_unexpected;
	}
	json_tokener_free(tok);
	if (jerr != json_tokener_success || obj == NULL) {
		reply_error(rep, TP_ERROR_INVALID_REQUEST, "malformed JSON body: %s",
		            jerr != json_tokener_success ? json_tokener_error_desc(jerr)
		                                         : "null is not an object");
		return -EINVAL;
	}
	if (!json_object_is_type(obj, json_type_object)) {
		reply_error(rep, TP_ERROR_INVALID_REQUEST, "the body must be a JSON object");
		return -EINVAL;
	}
	{
		const char *key;
		char buf[160];
		size_t len;

		if (json_key_with_nul(req->body, req->len, &key, &len)) {
			reply_error(
			    rep, TP_ERROR_INVALID_REQUEST,
			    "key \"%s\" contains a NUL byte: no field name or label key may",
			    quoted(key, len, buf, sizeof buf));
			return -EINVAL;
		}
	}
	json_object_object_foreach (obj, key, val) {
		size_t i;

		(void)val;
		for (i = 0; allowed[i] && strcmp(allowed[i], key) != 0; i++)
			;
		if (allowed[i] == NULL) {
			reply_error(rep, TP_ERROR_INVALID_REQUEST, "unknown field \"%.64s\"", key);
			return -EINVAL;
		}
	}
	*ret_obj = TAKE_PTR(obj);
	return 0;
}

/* Field KEY of O as a string; *RET NULL if absent. */
static int get_string(json_object *o, const char *key, bool required, struct reply *rep,
                      const char **ret)
{
	json_object *v;

	*ret = NULL;
	if (!json_object_object_get_ex(o, key, &v) || v == NULL) {
		if (!required)
			return 0;
		reply_error(rep, TP_ERROR_INVALID_REQUEST, "missing field \"%s\"", key);
		return -EINVAL;
	}
	if (!json_object_is_type(v, json_type_string)) {
		reply_error(rep, TP_ERROR_INVALID_REQUEST, "field \"%s\" must be a string", key);
		return -EINVAL;
	}
	*ret = json_object_get_string(v);
	if (strlen(*ret) != (size_t)json_object_get_string_len(v)) {
		reply_error(rep, TP_ERROR_INVALID_REQUEST, "field \"%s\" contains a NUL byte", key);
		return -EINVAL;
	}
	return 0;
}

/* Field KEY of O as a non-negative integer; null means 0 (unlimited) where NULLABLE. */
static int get_uint(json_object *o, const char *key, uint64_t max, bool nullable, bool *ret_has,
                    uint64_t *ret, struct reply *rep)
{
	json_object *v;
	int64_t i;

	*ret_has = false;
	if (!json_object_object_get_ex(o, key, &v))
		return 0;
	if (v == NULL && nullable) {
		*ret_has = true;
		*ret = 0;
		return 0;
	}
	if (v == NULL || !json_object_is_type(v, json_type_int)) {
		reply_error(rep, size_field(key) ? TP_ERROR_INVALID_SIZE : TP_ERROR_INVALID_REQUEST,
		            "field \"%s\" must be a non-negative integer", key);
		return -EINVAL;
	}
	/* json-c clamps integers beyond INT64_MAX to it without ERANGE; the unsigned reading
	 * keeps them (up to UINT64_MAX), and every bound here is below that. */
	errno = 0;
	i = json_object_get_int64(v);
	if (i < 0 || errno == ERANGE || (uint64_t)i > max || json_object_get_uint64(v) > max) {
		reply_error(rep, size_field(key) ? TP_ERROR_INVALID_SIZE : TP_ERROR_INVALID_REQUEST,
		            "field \"%s\" is out of range (0 to %" PRIu64 ")", key, max);
		return -EINVAL;
	}
	*ret_has = true;
	*ret = (uint64_t)i;
	return 0;
}

/* What a set of labels in a request is for: a volume's whole set (every value a string),
 * or a merge patch of it (a value null removes its key). */
enum label_use { LABELS_SET, LABELS_PATCH };

/* Field KEY of O, an object of labels, into *RET (its array malloc'ed, the strings
 * borrowed from O); RET->l NULL if absent. Every label is checked by the rules of
 * include/tp-rules.h, and a bad one answered 400 naming it. */
static int get_labels(json_object *o, const char *key, enum label_use use, struct reply *rep,
                      struct label_list *ret)
{
	struct tp_label *labels;
	json_object *v;
	size_t n = 0, i = 0;
	char buf[160];

	ret->l = NULL;
	ret->n = 0;
	if (!json_object_object_get_ex(o, key, &v))
		return 0;
	if (!json_object_is_type(v, json_type_object)) {
		reply_error(rep, TP_ERROR_INVALID_REQUEST,
		            "field \"%s\" must be an object of labels: {\"key\": \"value\"%s}", key,
		            use == LABELS_PATCH ? ", \"removed\": null" : "");
		return -EINVAL;
	}
	n = (size_t)json_object_object_length(v);
	if (n > TP_LABELS_MAX) {
		reply_error(rep, TP_ERROR_INVALID_REQUEST, "too many labels: %zu, at most %d", n,
		            TP_LABELS_MAX);
		return -EINVAL;
	}
	labels = calloc(n ? n : 1, sizeof *labels);
	if (labels == NULL) {
		reply_error(rep, TP_ERROR_INTERNAL, "%s", strerror(ENOMEM));
		return -ENOMEM;
	}
	json_object_object_foreach (v, k, val) {
		const char *value = NULL, *why;
		size_t value_len = 0;

		if (val == NULL && use == LABELS_PATCH) {
			/* null: remove it */
		} else if (json_object_is_type(val, json_type_string)) {
			value = json_object_get_string(val);
			value_len = (size_t)json_object_get_string_len(val);
		} else {
			reply_error(
			    rep, TP_ERROR_INVALID_REQUEST, "label \"%s\": the value must be %s",
			    quoted(k, strlen(k), buf, sizeof buf),
			    use == LABELS_PATCH ? "a string, or null to remove it" : "a string");
			free(labels);
			return -EINVAL;
		}
		why = tp_label_invalid(k, strlen(k), value, value_len);
		if (why != NULL) {
			reply_error(rep, TP_ERROR_INVALID_REQUEST, "label \"%s\": %s",
			            quoted(k, strlen(k), buf, sizeof buf), why);
			free(labels);
			return -EINVAL;
		}
		labels[i].key = k;
		labels[i++].value = value;
	}
	ret->l = labels;
	ret->n = i;
	return 0;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode the %XX escapes of the query value S in place, all of them (an escaped NUL
 * included: the length tells); a '%' that starts none stays. Returns the new length. */
static size_t query_unescape(char *s)
{
	size_t out = 0, len = strlen(s);
	int hi, lo;

	for (size_t in = 0; in < len; in++) {
		if (s[in] == '%' && in + 2 < len && (hi = hex_value(s[in + 1])) >= 0 &&
		    (lo = hex_value(s[in + 2])) >= 0) {
			s[out++] = (char)(hi << 4 | lo);
			in += 2;
		} else {
			s[out++] = s[in];
		}
	}
	s[out] = '\0';
	return out;
}

/* The filter of the query's "label" arguments, KEY=VALUE (that value) or KEY (any value):
 * *RET's array and *RET_TEXT (the decoded strings) malloc'ed. Each is split at its first
 * '=' after decoding, and checked as a label is. */
static int get_label_filter(const struct api_request *req, struct reply *rep,
                            struct label_list *ret, char **ret_text)
{
	CLEANUP_FREE struct tp_label *filter = NULL;
	CLEANUP_FREE char *text = NULL;
	size_t total = 0, i, at = 0;
	char buf[160];

	if (req->n_labels > TP_LABELS_MAX) {
		reply_error(rep, TP_ERROR_INVALID_REQUEST, "too many label filters: at most %d",
		            TP_LABELS_MAX);
		return -EINVAL;
	}
	for (i = 0; i < req->n_labels; i++)
		total += strlen(req->labels[i]) + 1;
	filter = calloc(req->n_labels ? req->n_labels : 1, sizeof *filter);
	text = malloc(total + 1);
	if (filter == NULL || text == NULL) {
		reply_error(rep, TP_ERROR_INTERNAL, "%s", strerror(ENOMEM));
		return -ENOMEM;
	}
	for (i = 0; i < req->n_labels; i++) {
		char *s = text + at, *eq;
		size_t len, key_len;
		const char *why;

		strcpy(s, req->labels[i]);
		at += strlen(s) + 1;
		len = query_unescape(s);
		eq = memchr(s, '=', len);
		key_len = eq ? (size_t)(eq - s) : len;
		why = tp_label_invalid(s, key_len, eq ? eq + 1 : NULL, eq ? len - key_len - 1 : 0);
		if (why != NULL) {
			reply_error(rep, TP_ERROR_INVALID_REQUEST, "label filter \"%s\": %s",
			            quoted(s, len, buf, sizeof buf), why);
			return -EINVAL;
		}
		if (eq != NULL)
			*eq = '\0';
		filter[i].key = s;
		filter[i].value = eq ? eq + 1 : NULL;
	}
	ret->l = TAKE_PTR(filter);
	ret->n = req->n_labels;
	*ret_text = TAKE_PTR(text);
	return 0;
}

/* Routes */

struct route {
	const char *method;
	const char *seg[SEGMENTS_MAX];
	size_t n;
	const struct api_request *req;
	struct reply *rep;
};

static bool is(const struct route *rt, const char *method)
{
	return strcmp(rt->method, method) == 0;
}

static void method_not_allowed(struct reply *rep, const char *allowed)
{
	reply_error(rep, TP_ERROR_METHOD_NOT_ALLOWED, "method not allowed here; use %s", allowed);
}

/* The volume V an ops call answered with (R), or its error; V's labels go. */
static void volume_reply(struct reply *rep, const struct principal *p, unsigned status, int r,
                         struct volume_view *v)
{
	FILE *f;

	if (r < 0)
		return reply_ops_error(rep, r);
	if ((f = json_text_begin(rep)) != NULL) {
		fputc('{', f);
		put_volume_members(f, p, v);
		fputc('}', f);
		json_text_end(rep, f, status);
	}
	ops_volume_view_clear(v);
}

/* ops_children_fn: "TENANT":N, into the stream of the struct children_writer OPAQUE. */
struct children_writer {
	FILE *f;
	bool any;
};

static int put_child(const char *tenant, uint64_t n, void *opaque)
{
	struct children_writer *w = opaque;

	if (w->any)
		fputc(',', w->f);
	w->any = true;
	put_string(w->f, tenant, false);
	fprintf(w->f, ":%" PRId64, api_size(n));
	return ferror(w->f) ? -ENOMEM : 0;
}

/* One volume, as a listing shows it, and the snapshots of it by tenant:
 * "snapshots": {"alice": 2, "bob": 1}. */
static void volume_info_reply(struct reply *rep, const struct principal *p, const char *name)
{
	struct children_writer w = {0};
	struct volume_view v;
	FILE *f;
	int r = ops_volume_info(p, name, &v);

	if (r < 0)
		return reply_ops_error(rep, r);
	if ((f = w.f = json_text_begin(rep)) == NULL)
		return ops_volume_view_clear(&v);
	fputc('{', f);
	put_volume_members(f, p, &v);
	ops_volume_view_clear(&v);
	fputs(",\"snapshots\":{", f);
	r = ops_volume_children(p, name, put_child, &w);
	if (r < 0 && !ferror(f)) {
		json_text_drop(rep, f);
		return reply_ops_error(rep, r);
	}
	fputs("}}", f);
	json_text_end(rep, f, 200);
}

/* A listing written out as it streams from the store, one volume at a time: never the
 * whole list in memory but as the text of the answer. */
struct list_writer {
	const struct principal *p;
	FILE *f;
	size_t n;
};

static int write_volume(const struct volume_view *v, void *opaque)
{
	struct list_writer *w = opaque;

	fputs(w->n++ ? ",{" : "{", w->f);
	put_volume_members(w->f, w->p, v);
	fputc('}', w->f);
	return ferror(w->f) ? -ENOMEM : 0;
}

/* GET /v1/volumes[?label=...] */
static void list_volumes(const struct principal *p, const struct api_request *req,
                         struct reply *rep)
{
	CLEANUP_FREE struct tp_label *filter_labels = NULL;
	CLEANUP_FREE char *filter_text = NULL;
	struct label_list filter = {0};
	struct list_writer w = {.p = p};
	int r;

	if (req->n_labels > 0) {
		if (get_label_filter(req, rep, &filter, &filter_text) < 0)
			return;
		filter_labels = filter.l;
	}
	if ((w.f = json_text_begin(rep)) == NULL)
		return;
	fputs("{\"volumes\":[", w.f);
	r = ops_volume_list(p, req->n_labels > 0 ? &filter : NULL, write_volume, &w);
	if (r < 0 && !ferror(w.f)) {
		json_text_drop(rep, w.f);
		return reply_ops_error(rep, r);
	}
	fputs("]}", w.f);
	json_text_end(rep, w.f, 200);
}

/* POST /v1/volumes/NAME/commit */
static void commit_volume(const struct principal *p, struct route *rt, const char *name)
{
	static const char *const keys[] = {"name", "labels", NULL};
	CLEANUP_JSON json_object *body = NULL;
	CLEANUP_FREE struct tp_label *labels_array = NULL;
	struct label_list labels = {0};
	const char *new_name = NULL;
	struct volume_view v;
	int r;

	/* The body is optional: without one, a commit as it always was. */
	if (rt->req->len > 0 && (parse_body(rt->req, rt->rep, keys, &body) < 0 ||
	                         get_string(body, "name", false, rt->rep, &new_name) < 0 ||
	                         get_labels(body, "labels", LABELS_SET, rt->rep, &labels) < 0))
		return;
	labels_array = labels.l;
	r = ops_volume_commit(p, name, new_name, labels.l ? &labels : NULL, &v);
	volume_reply(rt->rep, p, 200, r, &v);
}

/* POST /v1/volumes/NAME/resize */
static void resize_volume(const struct principal *p, struct route *rt, const char *name)
{
	static const char *const keys[] = {"size", NULL};
	CLEANUP_JSON json_object *body = NULL;
	struct volume_view v;
	uint64_t size;
	bool has_size;

	if (parse_body(rt->req, rt->rep, keys, &body) < 0 ||
	    get_uint(body, "size", UINT64_MAX >> 1, false, &has_size, &size, rt->rep) < 0)
		return;
	if (!has_size)
		return reply_error(rt->rep, TP_ERROR_INVALID_REQUEST, "missing field \"size\"");
	volume_reply(rt->rep, p, 200, ops_volume_resize(p, name, size, &v), &v);
}

/* The query argument "from" of REQ, decoded into BUF (TP_REF_MAX + 1 bytes): a reference,
 * NAME, images/NAME or OWNER/NAME, or an error reply. */
static int get_from(const struct api_request *req, struct reply *rep, char *buf)
{
	CLEANUP_FREE char *s = NULL;
	char why[160];
	size_t len;

	if (req->from == NULL) {
		reply_error(rep, TP_ERROR_INVALID_REQUEST,
		            "missing query argument \"from\": the reference to compare with");
		return -EINVAL;
	}
	if ((s = strdup(req->from)) == NULL) {
		reply_error(rep, TP_ERROR_INTERNAL, "%s", strerror(ENOMEM));
		return -ENOMEM;
	}
	len = query_unescape(s);
	/* An escaped NUL would cut it short: the length tells. */
	if (len != strlen(s) || !tp_broker_ref_valid(s)) {
		reply_error(rep, TP_ERROR_INVALID_NAME,
		            "invalid reference \"%s\" in \"from\": NAME, images/NAME or OWNER/NAME",
		            quoted(s, len, why, sizeof why));
		return -EINVAL;
	}
	memcpy(buf, s, len + 1);
	return 0;
}

/* GET /v1/volumes/NAME/diff?from=REF: {"size", "from", "changes": [{"offset", "length",
 * "kind": "data" or "zero"}]}, written as text (a diff can run to many ranges). */
static void diff_volume(const struct principal *p, struct route *rt, const char *name)
{
	CLEANUP_FREE struct volume_change *changes = NULL;
	char from[TP_REF_MAX + 1];
	uint64_t size;
	size_t n;
	FILE *f;
	int r;

	if (get_from(rt->req, rt->rep, from) < 0)
		return;
	r = ops_volume_diff(p, name, from, &changes, &n, &size);
	if (r < 0)
		return reply_ops_error(rt->rep, r);
	if ((f = json_text_begin(rt->rep)) == NULL)
		return;
	fprintf(f, "{\"size\":%" PRId64 ",\"from\":", api_size(size));
	put_string(f, from, false);
	fputs(",\"changes\":[", f);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s{\"offset\":%" PRId64 ",\"length\":%" PRId64 ",\"kind\":\"%s\"}",
		        i ? "," : "", api_size(changes[i].offset), api_size(changes[i].length),
		        changes[i].data ? "data" : "zero");
	fputs("]}", f);
	json_text_end(rt->rep, f, 200);
}

/* GET /v1/volumes/NAME/usage: {"mapped", "exclusive", "shared"}, in bytes. */
static void volume_usage(const struct principal *p, struct route *rt, const char *name)
{
	struct volume_usage u;
	int r = ops_volume_usage(p, name, &u);

	if (r < 0)
		return reply_ops_error(rt->rep, r);
	rt->rep->status = 200;
	rt->rep->json = json_object_new_object();
	json_object_object_add(rt->rep->json, "mapped", json_size(u.mapped));
	json_object_object_add(rt->rep->json, "exclusive", json_size(u.exclusive));
	json_object_object_add(rt->rep->json, "shared", json_size(u.shared));
}

/* /v1/volumes/NAME/ACTION, each action with its one method. */
static void route_volume_action(const struct principal *p, struct route *rt, const char *name,
                                const char *action)
{
	static const struct {
		const char *action, *method;
		void (*fn)(const struct principal *p, struct route *rt, const char *name);
	} actions[] = {
	    {"commit", "POST", commit_volume},
	    {"resize", "POST", resize_volume},
	    {"diff", "GET", diff_volume},
	    {"usage", "GET", volume_usage},
	};

	for (size_t i = 0; i < ARRAY_SIZE(actions); i++) {
		if (strcmp(action, actions[i].action) != 0)
			continue;
		if (!is(rt, actions[i].method))
			return method_not_allowed(rt->rep, actions[i].method);
		return actions[i].fn(p, rt, name);
	}
	reply_error(rt->rep, TP_ERROR_NOT_FOUND, "no such resource");
}

/* /v1/volumes... and /v1/usage for principal P; SEG starts after the tenant prefix. */
static void route_tenant(const struct principal *p, struct route *rt, const char **seg, size_t n)
{
	struct reply *rep = rt->rep;
	struct volume_view v;
	int r;

	if (n == 1 && strcmp(seg[0], "usage") == 0) {
		struct tenant_view t;

		if (!is(rt, "GET"))
			return method_not_allowed(rep, "GET");
		r = ops_usage(p, &t);
		if (r < 0)
			return reply_ops_error(rep, r);
		rep->status = 200;
		rep->json = usage_json(&t);
		return;
	}
	if (n == 0 || strcmp(seg[0], "volumes") != 0)
		return reply_error(rep, TP_ERROR_NOT_FOUND, "no such resource");
	if (n == 1 && is(rt, "GET"))
		return list_volumes(p, rt->req, rep);
	if (n == 1 && is(rt, "POST")) {
		static const char *const keys[] = {"name", "size", "parent", "labels", NULL};
		CLEANUP_JSON json_object *body = NULL;
		CLEANUP_FREE struct tp_label *labels_array = NULL;
		struct label_list labels;
		const char *name, *parent;
		uint64_t size = 0;
		bool has_size;

		if (parse_body(rt->req, rep, keys, &body) < 0 ||
		    get_string(body, "name", true, rep, &name) < 0 ||
		    get_string(body, "parent", false, rep, &parent) < 0 ||
		    get_uint(body, "size", UINT64_MAX >> 1, false, &has_size, &size, rep) < 0 ||
		    get_labels(body, "labels", LABELS_SET, rep, &labels) < 0)
			return;
		labels_array = labels.l;
		if (parent == NULL && !has_size)
			return reply_error(rep, TP_ERROR_INVALID_REQUEST,
			                   "give \"size\" for a new volume or \"parent\" for a "
			                   "snapshot");
		if (parent)
			r = ops_volume_snapshot(p, name, parent, size, labels.l ? &labels : NULL,
			                        &v);
		else
			r = ops_volume_create(p, name, size, labels.l ? &labels : NULL, &v);
		return volume_reply(rep, p, 201, r, &v);
	}
	if (n == 1)
		return method_not_allowed(rep, "GET or POST");
	if (n == 2) {
		if (is(rt, "GET"))
			return volume_info_reply(rep, p, seg[1]);
		if (is(rt, "PATCH")) {
			static const char *const keys[] = {"labels", NULL};
			CLEANUP_JSON json_object *body = NULL;
			CLEANUP_FREE struct tp_label *patch_array = NULL;
			struct label_list patch;

			if (parse_body(rt->req, rep, keys, &body) < 0 ||
			    get_labels(body, "labels", LABELS_PATCH, rep, &patch) < 0)
				return;
			patch_array = patch.l;
			if (patch.l == NULL)
				return reply_error(rep, TP_ERROR_INVALID_REQUEST,
				                   "missing field \"labels\"");
			return volume_reply(rep, p, 200,
			                    ops_volume_set_labels(p, seg[1], &patch, &v), &v);
		}
		if (is(rt, "DELETE")) {
			r = ops_volume_remove(p, seg[1]);
			if (r < 0)
				return reply_ops_error(rep, r);
			rep->status = 204;
			return;
		}
		return method_not_allowed(rep, "GET, PATCH or DELETE");
	}
	if (n == 3)
		return route_volume_action(p, rt, seg[1], seg[2]);
	reply_error(rep, TP_ERROR_NOT_FOUND, "no such resource");
}

static int tenant_spec_from(struct route *rt, struct tenant_spec *spec, bool need_name,
                            json_object **ret_body)
{
	static const char *const keys[] = {"name",     "uid",      "gid", "max_volumes",
	                                   "max_size", "max_used", NULL};
	struct reply *rep = rt->rep;
	json_object *body;
	uint64_t v;
	bool has;

	if (parse_body(rt->req, rep, need_name ? keys : keys + 1, &body) < 0)
		return -EINVAL;
	*ret_body = body;
	if (need_name && get_string(body, "name", true, rep, &spec->name) < 0)
		return -EINVAL;
	if (get_uint(body, "uid", UINT32_MAX - 1, false, &spec->has_uid, &v, rep) < 0)
		return -EINVAL;
	spec->uid = (uint32_t)v;
	if (get_uint(body, "gid", UINT32_MAX - 1, false, &spec->has_gid, &v, rep) < 0)
		return -EINVAL;
	spec->gid = (uint32_t)v;
	if (get_uint(body, "max_volumes", UINT32_MAX, true, &has, &spec->max_volumes, rep) < 0)
		return -EINVAL;
	spec->has_max_volumes = has;
	if (get_uint(body, "max_size", UINT64_MAX >> 1, true, &has, &spec->max_size, rep) < 0)
		return -EINVAL;
	spec->has_max_size = has;
	if (get_uint(body, "max_used", UINT64_MAX >> 1, true, &has, &spec->max_used, rep) < 0)
		return -EINVAL;
	spec->has_max_used = has;
	return 0;
}

static void tenant_reply(struct reply *rep, unsigned status, int r, const struct tenant_view *t)
{
	if (r < 0)
		return reply_ops_error(rep, r);
	rep->status = status;
	rep->json = tenant_json(t);
}

static void image_reply(struct reply *rep, unsigned status, int r, struct image_view *im)
{
	FILE *f;

	if (r < 0)
		return reply_ops_error(rep, r);
	f = json_text_begin(rep);
	if (f != NULL) {
		put_image(f, im);
		json_text_end(rep, f, status);
	}
	free(im->published);
}

static void route_tenants(struct route *rt)
{
	struct reply *rep = rt->rep;
	struct tenant_view t;
	int r;

	if (rt->n == 2) {
		if (is(rt, "GET")) {
			CLEANUP_FREE struct tenant_view *views = NULL;
			size_t n, i;
			json_object *arr;

			r = ops_tenant_list(&views, &n);
			if (r < 0)
				return reply_ops_error(rep, r);
			arr = json_object_new_array();
			for (i = 0; i < n; i++)
				json_object_array_add(arr, tenant_json(&views[i]));
			rep->status = 200;
			rep->json = json_object_new_object();
			json_object_object_add(rep->json, "tenants", arr);
			return;
		}
		if (is(rt, "POST")) {
			CLEANUP_JSON json_object *body = NULL;
			struct tenant_spec spec = {0};

			if (tenant_spec_from(rt, &spec, true, &body) < 0)
				return;
			return tenant_reply(rep, 201, ops_tenant_add(&spec, &t), &t);
		}
		return method_not_allowed(rep, "GET or POST");
	}
	if (rt->n == 3) {
		if (is(rt, "GET"))
			return tenant_reply(rep, 200, ops_tenant_get(rt->seg[2], &t), &t);
		if (is(rt, "PATCH")) {
			CLEANUP_JSON json_object *body = NULL;
			struct tenant_spec spec = {.name = rt->seg[2]};

			if (tenant_spec_from(rt, &spec, false, &body) < 0)
				return;
			return tenant_reply(rep, 200, ops_tenant_update(&spec, &t), &t);
		}
		if (is(rt, "DELETE")) {
			const char *force = rt->req->force;
			bool f = force && (strcmp(force, "1") == 0 || strcmp(force, "true") == 0);

			r = ops_tenant_remove(rt->seg[2], f);
			if (r < 0)
				return reply_ops_error(rep, r);
			rep->status = 204;
			return;
		}
		return method_not_allowed(rep, "GET, PATCH or DELETE");
	}
	/* /v1/tenants/T/volumes... as the admin acting for T */
	{
		struct principal p;

		r = ops_principal_for_tenant(rt->seg[2], &p);
		if (r < 0)
			return reply_ops_error(rep, r);
		route_tenant(&p, rt, rt->seg + 3, rt->n - 3);
	}
}

static void route_images(struct route *rt)
{
	struct reply *rep = rt->rep;
	struct image_view im;
	int r;

	if (rt->n == 2 && is(rt, "GET")) {
		struct image_view *views = NULL;
		size_t n;
		FILE *f;

		r = ops_image_list(&views, &n);
		if (r < 0)
			return reply_ops_error(rep, r);
		f = json_text_begin(rep);
		if (f != NULL) {
			fputs("{\"images\":[", f);
			for (size_t i = 0; i < n; i++) {
				fputs(i ? "," : "", f);
				put_image(f, &views[i]);
			}
			fputs("]}", f);
			json_text_end(rep, f, 200);
		}
		ops_image_views_free(views, n);
		return;
	}
	if (rt->n == 2 && is(rt, "POST")) {
		static const char *const keys[] = {"name", "from", NULL};
		CLEANUP_JSON json_object *body = NULL;
		const char *name, *from;

		if (parse_body(rt->req, rep, keys, &body) < 0 ||
		    get_string(body, "name", true, rep, &name) < 0 ||
		    get_string(body, "from", true, rep, &from) < 0)
			return;
		return image_reply(rep, 201, ops_image_import(name, from, &im), &im);
	}
	if (rt->n == 2)
		return method_not_allowed(rep, "GET or POST");
	if (rt->n == 3) {
		if (!is(rt, "DELETE"))
			return method_not_allowed(rep, "DELETE");
		r = ops_image_remove(rt->seg[2]);
		if (r < 0)
			return reply_ops_error(rep, r);
		rep->status = 204;
		return;
	}
	if (rt->n == 4 && strcmp(rt->seg[3], "publish") == 0) {
		static const char *const keys[] = {"tenant", "all", NULL};
		CLEANUP_JSON json_object *body = NULL;
		const char *tenant;
		json_object *all;
		bool to_all;

		if (!is(rt, "POST"))
			return method_not_allowed(rep, "POST");
		if (parse_body(rt->req, rep, keys, &body) < 0 ||
		    get_string(body, "tenant", false, rep, &tenant) < 0)
			return;
		to_all = json_object_object_get_ex(body, "all", &all) &&
		         json_object_is_type(all, json_type_boolean) &&
		         json_object_get_boolean(all);
		if ((tenant == NULL) == !to_all)
			return reply_error(rep, TP_ERROR_INVALID_REQUEST,
			                   "give either \"tenant\" or \"all\": true");
		return image_reply(rep, 200, ops_image_publish(rt->seg[2], tenant, &im), &im);
	}
	reply_error(rep, TP_ERROR_NOT_FOUND, "no such resource");
}

static void route_grants(struct route *rt)
{
	struct reply *rep = rt->rep;
	int r;

	if (rt->n != 2)
		return reply_error(rep, TP_ERROR_NOT_FOUND, "no such resource");
	if (is(rt, "GET")) {
		CLEANUP_FREE struct grant_view *views = NULL;
		size_t n, i;
		json_object *arr;

		r = ops_grant_list(&views, &n);
		if (r < 0)
			return reply_ops_error(rep, r);
		arr = json_object_new_array();
		for (i = 0; i < n; i++) {
			json_object *o = json_object_new_object();

			json_object_object_add(o, "owner", json_object_new_string(views[i].owner));
			json_object_object_add(o, "volume",
			                       json_object_new_string(views[i].volume));
			json_object_object_add(o, "to", json_object_new_string(views[i].to));
			json_object_object_add(o, "write", json_object_new_boolean(views[i].write));
			json_object_array_add(arr, o);
		}
		rep->status = 200;
		rep->json = json_object_new_object();
		json_object_object_add(rep->json, "grants", arr);
		return;
	}
	if (is(rt, "POST") || is(rt, "DELETE")) {
		static const char *const keys[] = {"owner", "volume", "to", "write", NULL};
		CLEANUP_JSON json_object *body = NULL;
		const char *owner, *volume, *to;
		struct grant_view g = {0};
		json_object *w;

		if (parse_body(rt->req, rep, keys, &body) < 0 ||
		    get_string(body, "owner", true, rep, &owner) < 0 ||
		    get_string(body, "volume", true, rep, &volume) < 0 ||
		    get_string(body, "to", true, rep, &to) < 0)
			return;
		if (json_object_object_get_ex(body, "write", &w)) {
			if (!json_object_is_type(w, json_type_boolean))
				return reply_error(rep, TP_ERROR_INVALID_REQUEST,
				                   "field \"write\" must be true or false");
			g.write = json_object_get_boolean(w);
		}
		if (strlen(owner) > TP_NAME_MAX || strlen(volume) > TP_NAME_MAX ||
		    strlen(to) > TP_NAME_MAX)
			return reply_error(rep, TP_ERROR_INVALID_NAME, "names are at most %d bytes",
			                   TP_NAME_MAX);
		snprintf(g.owner, sizeof g.owner, "%s", owner);
		snprintf(g.volume, sizeof g.volume, "%s", volume);
		snprintf(g.to, sizeof g.to, "%s", to);
		r = is(rt, "POST") ? ops_grant(&g) : ops_revoke(&g);
		if (r < 0)
			return reply_ops_error(rep, r);
		if (is(rt, "DELETE")) {
			rep->status = 204;
			return;
		}
		rep->status = 201;
		rep->json = json_object_new_object();
		json_object_object_add(rep->json, "owner", json_object_new_string(g.owner));
		json_object_object_add(rep->json, "volume", json_object_new_string(g.volume));
		json_object_object_add(rep->json, "to", json_object_new_string(g.to));
		json_object_object_add(rep->json, "write", json_object_new_boolean(g.write));
		return;
	}
	method_not_allowed(rep, "GET, POST or DELETE");
}

static void route_admin(struct route *rt)
{
	struct reply *rep = rt->rep;

	if (rt->n == 1 && strcmp(rt->seg[0], "metrics") == 0) {
		if (!is(rt, "GET"))
			return method_not_allowed(rep, "GET");
		int r = ops_metrics(&rep->text);
		if (r < 0)
			return reply_ops_error(rep, r);
		rep->status = 200;
		return;
	}
	if (rt->n < 2 || strcmp(rt->seg[0], "v1") != 0)
		return reply_error(rep, TP_ERROR_NOT_FOUND, "no such resource");
	if (strcmp(rt->seg[1], "pool") == 0 && rt->n == 2) {
		struct pool_view pv;
		json_object *o, *d, *m;
		int r;

		if (!is(rt, "GET"))
			return method_not_allowed(rep, "GET");
		r = ops_pool_status(&pv);
		if (r < 0)
			return reply_ops_error(rep, r);
		o = json_object_new_object();
		d = json_object_new_object();
		m = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(pv.name));
		json_object_object_add(o, "transaction_id", json_size(pv.transaction_id));
		json_object_object_add(o, "block_size", json_size(pv.block_size));
		json_object_object_add(d, "used", json_size(pv.data_used));
		json_object_object_add(d, "total", json_size(pv.data_total));
		json_object_object_add(o, "data", d);
		json_object_object_add(m, "used", json_size(pv.meta_used));
		json_object_object_add(m, "total", json_size(pv.meta_total));
		json_object_object_add(m, "limit", json_size(pv.meta_limit));
		json_object_object_add(m, "state", json_object_new_string(pv.meta_state));
		json_object_object_add(o, "metadata", m);
		json_object_object_add(o, "mode", json_object_new_string(pv.mode));
		json_object_object_add(o, "needs_check", json_object_new_boolean(pv.needs_check));
		json_object_object_add(o, "min_free", json_size(pv.min_free));
		json_object_object_add(o, "volumes", json_size(pv.volumes));
		rep->status = 200;
		rep->json = o;
		return;
	}
	if (strcmp(rt->seg[1], "tenants") == 0)
		return route_tenants(rt);
	if (strcmp(rt->seg[1], "images") == 0)
		return route_images(rt);
	if (strcmp(rt->seg[1], "grants") == 0)
		return route_grants(rt);
	reply_error(rep, TP_ERROR_NOT_FOUND, "no such resource");
}

/* Split URL into at most SEGMENTS_MAX non-empty segments, in place. */
static int split_url(char *url, const char **seg, size_t *ret_n)
{
	size_t n = 0;
	char *save = NULL, *s;

	if (url[0] != '/')
		return -EINVAL;
	for (s = strtok_r(url, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
		if (n == SEGMENTS_MAX)
			return -EINVAL;
		seg[n++] = s;
	}
	*ret_n = n;
	return 0;
}

static void dispatch(const struct principal *p, struct route *rt, const char *url)
{
	CLEANUP_FREE char *copy = NULL;
	const char *ctype = rt->req->content_type;

	if (strlen(url) > 1024 || (copy = strdup(url)) == NULL)
		return reply_error(rt->rep, TP_ERROR_NOT_FOUND, "no such resource");
	api_unescape(copy);
	if (split_url(copy, rt->seg, &rt->n) < 0)
		return reply_error(rt->rep, TP_ERROR_NOT_FOUND, "no such resource");
	if (rt->req->too_large)
		return reply_error(rt->rep, TP_ERROR_TOO_LARGE, "request body over %d bytes",
		                   BODY_MAX);
	if (rt->req->len > 0 &&
	    (ctype == NULL || (strncasecmp(ctype, "application/json", 16) != 0 ||
	                       (ctype[16] != '\0' && ctype[16] != ';'))))
		return reply_error(rt->rep, TP_ERROR_UNSUPPORTED_MEDIA_TYPE,
		                   "request bodies must be application/json");
	if (p->admin)
		return route_admin(rt);
	if (rt->n >= 1 && strcmp(rt->seg[0], "v1") == 0)
		return route_tenant(p, rt, rt->seg + 1, rt->n - 1);
	reply_error(rt->rep, TP_ERROR_NOT_FOUND, "no such resource");
}

/* REP as the bytes to send. */
static int reply_answer(struct reply *rep, struct api_answer *ret_answer)
{
	const char *ctype = "application/json";
	char *buf;
	size_t len;

	if (rep->text) {
		buf = TAKE_PTR(rep->text);
		len = strlen(buf);
		ctype = "text/plain; version=0.0.4";
	} else if (rep->json_text) {
		buf = TAKE_PTR(rep->json_text);
		len = rep->json_len;
	} else if (rep->json) {
		const char *s = json_object_to_json_string_ext(rep->json, JSON_C_TO_STRING_PLAIN);

		len = strlen(s);
		buf = malloc(len + 2);
		if (buf == NULL)
			return -ENOMEM;
		memcpy(buf, s, len);
		buf[len++] = '\n';
		buf[len] = '\0';
	} else {
		buf = NULL;
		len = 0;
	}
	ret_answer->status = rep->status;
	ret_answer->body = buf;
	ret_answer->len = len;
	ret_answer->content_type = ctype;
	return 0;
}

int api_answer(const struct principal *p, const struct api_request *req,
               struct api_answer *ret_answer)
{
	struct reply rep = {.status = 500};
	struct route rt = {.method = req->method, .req = req, .rep = &rep};
	int r;

	dispatch(p, &rt, req->url);
	r = reply_answer(&rep, ret_answer);
	json_object_put(rep.json);
	free(rep.json_text);
	free(rep.text);
	return r;
}

/* Send ANS on CONN; MHD takes its body. */
static enum MHD_Result send_reply(struct MHD_Connection *conn, struct api_answer *ans)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(
	    ans->len, ans->body, ans->body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (resp == NULL) {
		free(ans->body);
		return MHD_NO;
	}
	if (ans->len)
		MHD_add_response_header(resp, "Content-Type", ans->content_type);
	ret = MHD_queue_response(conn, ans->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* The query's "label" arguments, as many as api_request takes. */
struct query_labels {
	const char *value[TP_LABELS_MAX + 1];
	size_t n;
};

static enum MHD_Result add_label_argument(void *cls, enum MHD_ValueKind kind, const char *key,
                                          const char *value)
{
	struct query_labels *q = cls;

	(void)kind;
	if (strcmp(key, "label") == 0 && q->n < ARRAY_SIZE(q->value))
		q->value[q->n++] = value ? value : "";
	return MHD_YES;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
	struct api_server *srv = cls;
	struct upload *req = *con_cls;
	struct query_labels labels = {.n = 0};
	struct api_request areq;
	struct api_answer ans;

	(void)version;
	if (req == NULL) {
		req = calloc(1, sizeof *req);
		if (req == NULL)
			return MHD_NO;
		*con_cls = req;
		return MHD_YES;
	}
	if (*upload_data_size) {
		/* Bodies are bounded; past the bound, drain and answer 413 at the end. */
		if (!req->too_large && req->len + *upload_data_size <= BODY_MAX) {
			char *nb = realloc(req->body, req->len + *upload_data_size + 1);

			if (nb == NULL)
				return MHD_NO;
			req->body = nb;
			memcpy(req->body + req->len, upload_data, *upload_data_size);
			req->len += *upload_data_size;
			req->body[req->len] = '\0';
		} else {
			req->too_large = true;
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, add_label_argument, &labels);
	areq = (struct api_request){
	    .method = method,
	    .url = url,
	    .content_type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type"),
	    .force = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "force"),
	    .from = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "from"),
	    .labels = labels.value,
	    .n_labels = labels.n,
	    .body = req->body,
	    .len = req->len,
	    .too_large = req->too_large,
	};
	if (api_answer(&srv->principal, &areq, &ans) < 0)
		return MHD_NO;
	return send_reply(conn, &ans);
}

size_t api_unescape(char *s)
{
	char *out = s;
	int hi, lo;

	for (const char *in = s; *in != '\0'; in++) {
		if (in[0] == '%' && (hi = hex_value(in[1])) >= 0 && (lo = hex_value(in[2])) >= 0 &&
		    (hi << 4 | lo) != '\0' && (hi << 4 | lo) != '/') {
			*out++ = (char)(hi << 4 | lo);
			in += 2;
		} else {
			*out++ = *in;
		}
	}
	*out = '\0';
	return (size_t)(out - s);
}

/* libmicrohttpd's decoding of the path and the query's arguments: none. It cannot tell
 * the path from an argument, and they are decoded differently (api_unescape keeps %2F
 * and %00 of a path encoded; a label filter decodes every escape), where each is read. */
static size_t keep_escaped(void *cls, struct MHD_Connection *conn, char *s)
{
	(void)cls;
	(void)conn;
	return strlen(s);
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
	struct upload *req = *con_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	if (req) {
		free(req->body);
		free(req);
		*con_cls = NULL;
	}
}

/* Serve the listening socket FD (taken over: libmicrohttpd closes it on stop) as principal
 * P, with PATH (owned) to unlink on stop, or NULL. */
static int serve(int fd, char *path, const struct principal *p, struct api_server **ret_server)
{
	struct api_server *srv = calloc(1, sizeof *srv);

	if (srv == NULL) {
		close(fd);
		return -ENOMEM;
	}
	srv->principal = *p;
	srv->path = path;
	srv->fd = fd;
	/* One polling thread per tenant socket: its requests are handled one at a time, and
	 * ops serialise across sockets. The admin socket has a few, so that a long image
	 * import leaves it answering (its progress, for one). Connection count, memory and
	 * idle time are bounded so that a tenant flooding its own socket cannot exhaust the
	 * daemon. */
	srv->mhd = MHD_start_daemon(
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC, 0, NULL, NULL, handle,
	    srv, MHD_OPTION_THREAD_POOL_SIZE, p->admin ? 4u : 1u, MHD_OPTION_LISTEN_SOCKET, fd,
	    MHD_OPTION_CONNECTION_LIMIT, p->admin ? 256u : 64u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
	    /* Room for any request line and headers of ours; libmicrohttpd clears it for every
	     * request, so no more (32 KiB cost the daemon 10% more instructions per change). */
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(16 * 1024), MHD_OPTION_NOTIFY_COMPLETED,
	    completed, NULL, MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, NULL,
	    MHD_OPTION_THREAD_STACK_SIZE, (size_t)(256 * 1024), MHD_OPTION_END);
	if (srv->mhd == NULL) {
		close(fd);
		free(srv);
		return -EIO;
	}
	*ret_server = srv;
	return 0;
}

int api_bind(const char *path, uid_t uid, gid_t gid, mode_t mode)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	CLEANUP_CLOSE int fd = -1;
	mode_t old;
	int r;

	if (strlen(path) >= sizeof sa.sun_path)
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	/* Bind with nothing allowed, then widen to exactly MODE for UID:GID: no window in
	 * which the socket is reachable by anyone else. */
	old = umask(0777);
	r = bind(fd, (struct sockaddr *)&sa, sizeof sa);
	umask(old);
	if (r < 0)
		return -errno;
	if (chown(path, uid, gid) < 0 || chmod(path, mode) < 0 || listen(fd, 128) < 0) {
		r = -errno;
		unlink(path);
		return r;
	}
	return TAKE_FD(fd);
}

int api_listen(const char *path, uid_t uid, gid_t gid, mode_t mode, const struct principal *p,
               struct api_server **ret_server)
{
	char *path_copy;
	int fd, r;

	fd = api_bind(path, uid, gid, mode);
	if (fd < 0)
		return fd;
	path_copy = strdup(path);
	if (path_copy == NULL) {
		close(fd);
		unlink(path);
		return -ENOMEM;
	}
	r = serve(fd, path_copy, p, ret_server);
	if (r < 0) {
		unlink(path);
		free(path_copy);
	}
	return r;
}

int api_serve_fd(int fd, const struct principal *p, struct api_server **ret_server)
{
	int type, listening, flags, r = 0;
	socklen_t type_len = sizeof type, listening_len = sizeof listening;

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) < 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &listening_len) < 0)
		r = -errno;
	else if (type != SOCK_STREAM || !listening)
		r = -ENOTSOCK;
	/* As api_listen makes its own: closed on exec, and accept never blocks a polling
	 * thread that another one beat to a connection. */
	else if ((flags = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
	         fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		r = -errno;
	if (r < 0) {
		close(fd);
		return r;
	}
	return serve(fd, NULL, p, ret_server);
}

void api_stop(struct api_server *srv)
{
	if (srv == NULL)
		return;
	if (srv->mhd)
		MHD_stop_daemon(srv->mhd);
	if (srv->path)
		unlink(srv->path);
	free(srv->path);
	free(srv);
}
