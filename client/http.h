/* The daemon's REST API over its unix socket, with libcurl: one request at a time, JSON in
 * and out. A failed request prints one line on stderr, naming what was being done and the
 * daemon's reason, and returns -errno. */
#ifndef TP_CLIENT_HTTP_H
#define TP_CLIENT_HTTP_H

#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>

struct http;

static inline void cleanup_json(struct json_object **o)
{
	json_object_put(*o);
}
#define CLEANUP_JSON __attribute__((cleanup(cleanup_json)))

/* A handle for requests to the daemon on SOCKET_PATH (copied). Nothing connects yet. */
int http_open(const char *socket_path, struct http **ret_http);
/* Free H; NULL is fine. */
void http_close(struct http *h);

/* Send METHOD PATH (e.g. "/v1/volumes") with BODY as JSON, or no body if BODY is NULL.
 * On a 2xx answer, hand its parsed JSON to the caller in *RET_ANSWER (NULL when the
 * answer has no body, as for 204); RET_ANSWER may be NULL to ignore it. Otherwise print
 * "thinproxy: WHAT: reason" and return -errno. */
int http_json(struct http *h, const char *what, const char *method, const char *path,
              struct json_object *body, struct json_object **ret_answer);

/* GET PATH, whose answer is a list {"KEY": [...]}, and hand its elements to FN one at a
 * time as they are parsed, each dropped once FN returns: a listing of 10000 volumes is
 * never held as 10000 objects at once. A negative return from FN stops and is returned
 * (with a line on stderr); an answer of any other shape prints "WHAT: ..." and returns
 * -EBADMSG. */
typedef int (*http_each_fn)(struct json_object *element, void *opaque);
int http_json_each(struct http *h, const char *what, const char *path, const char *key,
                   http_each_fn fn, void *opaque);

/* GET PATH and hand the answer's body, NUL-terminated, to the caller in *RET_TEXT. */
int http_text(struct http *h, const char *what, const char *path, char **ret_text);

/* The HTTP status of the last request's answer, or 0 if it got none (the daemon could
 * not be reached, or the answer was cut off): what tells "no such volume" (404) from
 * "no daemon at this path" (connect: ENOENT). */
long http_last_status(const struct http *h);

/* Add KEY to the JSON object O; 0 or -ENOMEM. VALUE NULL adds null (json_add_value). */
int json_add_string(struct json_object *o, const char *key, const char *value);
int json_add_int(struct json_object *o, const char *key, int64_t value);
int json_add_bool(struct json_object *o, const char *key, bool value);
/* Hands VALUE (which may be NULL, for null) over to O, also on failure. */
int json_add_value(struct json_object *o, const char *key, struct json_object *value);

#endif
