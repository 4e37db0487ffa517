/* REST over the daemon's unix socket with libcurl; the daemon's error objects turned into
 * one line on stderr. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "tp-cleanup.h"
#include "tp-error.h"
#include "http.h"
#include "output.h"

/* The daemon is trusted, but an answer is still bounded: a listing of every volume of a
 * large pool stays far below this. */
#define ANSWER_MAX (64u << 20)
#define URL_MAX    512

struct http {
	CURL *curl;
	char *socket_path;
	long status; /* of the last answer; 0 if the last request got none */
};

/* An answer's body as it arrives. */
struct buffer {
	char *data;
	size_t len, cap; /* cap: bytes DATA has room for */
	bool too_large;
};

static void cleanup_slist(struct curl_slist **l)
{
	curl_slist_free_all(*l);
}
#define CLEANUP_SLIST __attribute__((cleanup(cleanup_slist)))

/* The daemon's error codes (include/tp-error.h), as errno values for our callers. */
static const int error_errno[] = {
    [TP_ERROR_INVALID_REQUEST] = EINVAL,
    [TP_ERROR_INVALID_NAME] = EINVAL,
    [TP_ERROR_INVALID_SIZE] = EINVAL,
    [TP_ERROR_NOT_FOUND] = ENOENT,
    [TP_ERROR_METHOD_NOT_ALLOWED] = EOPNOTSUPP,
    [TP_ERROR_EXISTS] = EEXIST,
    [TP_ERROR_BUSY] = EBUSY,
    [TP_ERROR_READ_ONLY] = EROFS,
    [TP_ERROR_TOO_LARGE] = E2BIG,
    [TP_ERROR_UNSUPPORTED_MEDIA_TYPE] = EPROTO,
    [TP_ERROR_QUOTA_EXCEEDED] = EDQUOT,
    [TP_ERROR_POOL_FULL] = ENOSPC,
    [TP_ERROR_NOT_SUPPORTED] = EOPNOTSUPP,
    [TP_ERROR_INTERNAL] = EIO,
};

int http_open(const char *socket_path, struct http **ret_http)
{
	struct http *h;
	CURLcode rc;

	rc = curl_global_init(CURL_GLOBAL_DEFAULT);
	if (rc != CURLE_OK)
		return error_line(-EIO, NULL, "cannot initialise libcurl: %s",
		                  curl_easy_strerror(rc));
	h = calloc(1, sizeof *h);
	if (h == NULL)
		return -ENOMEM;
	h->socket_path = strdup(socket_path);
	h->curl = curl_easy_init();
	if (h->socket_path == NULL || h->curl == NULL) {
		http_close(h);
		return -ENOMEM;
	}
	*ret_http = h;
	return 0;
}

void http_close(struct http *h)
{
	if (h == NULL)
		return;
	if (h->curl != NULL)
		curl_easy_cleanup(h->curl);
	free(h->socket_path);
	free(h);
}

/* libcurl's write callback: append to the buffer, refusing more than ANSWER_MAX. */
static size_t collect(char *data, size_t size, size_t nmemb, void *opaque)
{
	struct buffer *b = opaque;
	size_t n = size * nmemb; /* libcurl promises size == 1 */
	char *p;

	if (n > ANSWER_MAX - b->len) {
		b->too_large = true;
		return 0;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? 2 * b->cap : 16384;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->data, cap);
		if (p == NULL)
			return 0;
		b->data = p;
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

/* Why a request never got an answer, as one line; returns -errno. */
static int transport_error(struct http *h, const char *what, CURLcode rc, const struct buffer *b,
                           const char *errbuf)
{
	long os_errno = 0;

	switch (rc) {
	case CURLE_COULDNT_CONNECT:
		/* libcurl keeps connect()'s errno: ENOENT when the daemon is not running (or
		 * the directory is not mounted), EACCES without the socket's permission. */
		curl_easy_getinfo(h->curl, CURLINFO_OS_ERRNO, &os_errno);
		if (os_errno <= 0)
			os_errno = ECONNREFUSED;
		return error_line(-(int)os_errno, NULL, "cannot reach %s: %s", h->socket_path,
		                  strerror((int)os_errno));
	case CURLE_WRITE_ERROR:
		if (b->too_large)
			return error_line(-EFBIG, what, "answer from %s is larger than %u MiB",
			                  h->socket_path, ANSWER_MAX >> 20);
		return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
	case CURLE_OUT_OF_MEMORY:
		return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
	default:
		return error_line(-EIO, what, "%s: %s", h->socket_path,
		                  errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc));
	}
}

/* Send one request; once an answer arrived, whatever its status, hand its status and body
 * to the caller in *RET_STATUS and *RET_BODY and return 0. Otherwise print why not and
 * return -errno. */
static int request(struct http *h, const char *what, const char *method, const char *path,
                   const char *body, long *ret_status, struct buffer *ret_body)
{
	CLEANUP_SLIST struct curl_slist *headers = NULL;
	struct buffer b = {0};
	CLEANUP_FREE char *data = NULL;
	char errbuf[CURL_ERROR_SIZE] = "";
	char url[URL_MAX];
	struct curl_slist *l;
	CURLcode rc;
	int n;

	/* Callers build PATH from checked names only, so it needs no escaping. */
	n = snprintf(url, sizeof url, "http://localhost%s", path);
	if (n < 0 || (size_t)n >= sizeof url)
		return error_line(-ENAMETOOLONG, what, "request path too long");

	/* Bodies are small: never wait for a "100 Continue". Without a body, no content
	 * type either (libcurl would otherwise claim a form for an empty POST). */
	for (size_t i = 0; i < 3; i++) {
		static const char *const lines[] = {"Accept: application/json", "Expect:", NULL};
		const char *line = lines[i];

		if (line == NULL)
			line = body != NULL ? "Content-Type: application/json" : "Content-Type:";
		l = curl_slist_append(headers, line);
		if (l == NULL)
			return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
		headers = l;
	}

	curl_easy_reset(h->curl);
	rc = curl_easy_setopt(h->curl, CURLOPT_UNIX_SOCKET_PATH, h->socket_path);
	if (rc == CURLE_OK)
		rc = curl_easy_setopt(h->curl, CURLOPT_URL, url);
	if (rc == CURLE_OK)
		rc = curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, method);
	if (rc == CURLE_OK && body != NULL)
		rc = curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, body);
	else if (rc == CURLE_OK && strcmp(method, "POST") == 0)
		rc = curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, "");
	if (rc == CURLE_OK)
		rc = curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, headers);
	if (rc == CURLE_OK)
		rc = curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, collect);
	if (rc == CURLE_OK)
		rc = curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, &b);
	if (rc == CURLE_OK)
		rc = curl_easy_setopt(h->curl, CURLOPT_ERRORBUFFER, errbuf);
	/* Signals are ours; libcurl needs none for a unix socket. */
	if (rc == CURLE_OK)
		rc = curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L);
	/* Connecting to a local socket is immediate or never; the request itself may take
	 * long (an image import copies a whole device), so it has no time limit. */
	if (rc == CURLE_OK)
		rc = curl_easy_setopt(h->curl, CURLOPT_CONNECTTIMEOUT, 10L);
	if (rc != CURLE_OK)
		return error_line(-EIO, what, "libcurl: %s", curl_easy_strerror(rc));

	h->status = 0;
	rc = curl_easy_perform(h->curl);
	data = b.data; /* freed on failure, handed on on success */
	if (rc != CURLE_OK)
		return transport_error(h, what, rc, &b, errbuf);
	curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, ret_status);
	h->status = *ret_status;
	b.data = TAKE_PTR(data);
	*ret_body = b;
	return 0;
}

/* Parse all of TEXT (LEN bytes) as one JSON value into *RET_VALUE; -EBADMSG if it is not. */
static int parse_json(const char *text, size_t len, struct json_object **ret_value)
{
	struct json_tokener *tok;
	struct json_object *v;
	size_t end;

	if (len > INT32_MAX)
		return -EBADMSG;
	tok = json_tokener_new();
	if (tok == NULL)
		return -ENOMEM;
	v = json_tokener_parse_ex(tok, text, (int)len);
	end = json_tokener_get_parse_end(tok);
	if (v != NULL && json_tokener_get_error(tok) == json_tokener_success)
		end += strspn(text + end, " \t\r\n");
	json_tokener_free(tok);
	if (v == NULL || end != len) {
		json_object_put(v);
		return -EBADMSG;
	}
	*ret_value = v;
	return 0;
}

/* The string member KEY of O, or NULL. */
static const char *member_string(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* The daemon refused: print its error object as "WHAT: code in words: message" and
 * return the errno for its code (or status, if it sent no error object). */
static int answer_error(const char *what, long status, const struct buffer *b)
{
	CLEANUP_JSON struct json_object *answer = NULL;
	struct json_object *error = NULL;
	const char *code = NULL, *message = NULL;
	char words[64] = "";
	int err;

	if (b->len > 0 && parse_json(b->data, b->len, &answer) == 0 &&
	    json_object_object_get_ex(answer, "error", &error)) {
		code = member_string(error, "code");
		message = member_string(error, "message");
	}

	switch (status) {
	case 400:
		err = EINVAL;
		break;
	case 403:
		err = EACCES;
		break;
	case 404:
		err = ENOENT;
		break;
	case 409:
		err = EBUSY;
		break;
	case 507:
		err = ENOSPC;
		break;
	default:
		err = EIO;
		break;
	}
	if (code != NULL) {
		enum tp_error known = tp_error_parse(code);
		size_t i;

		if (known != TP_ERROR_NONE && (size_t)known < ARRAY_SIZE(error_errno))
			err = error_errno[known];
		/* "quota_exceeded" reads "quota exceeded". */
		snprintf(words, sizeof words, "%s", code);
		for (i = 0; words[i] != '\0'; i++)
			if (words[i] == '_')
				words[i] = ' ';
	}

	if (words[0] != '\0' && message != NULL && message[0] != '\0')
		error_line(-err, what, "%s: %s", words, message);
	else if (words[0] != '\0')
		error_line(-err, what, "%s", words);
	else if (message != NULL && message[0] != '\0')
		error_line(-err, what, "%s", message);
	else
		error_line(-err, what, "the daemon answered HTTP %ld", status);
	return -err;
}

/* request(), and a line on stderr for any answer but a 2xx: -errno then, with nothing
 * left in *B; on success the caller frees B->data. */
static int request_ok(struct http *h, const char *what, const char *method, const char *path,
                      const char *body, struct buffer *b)
{
	long status = 0;
	int r = request(h, what, method, path, body, &status, b);

	if (r == 0 && (status < 200 || status > 299)) {
		r = answer_error(what, status, b);
		free(b->data);
		b->data = NULL;
	}
	return r;
}

int http_json(struct http *h, const char *what, const char *method, const char *path,
              struct json_object *body, struct json_object **ret_answer)
{
	struct buffer b = {0};
	CLEANUP_FREE char *data = NULL;
	const char *text = NULL;
	struct json_object *answer = NULL;
	int r;

	if (body != NULL) {
		text = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN |
		                                                JSON_C_TO_STRING_NOSLASHESCAPE);
		if (text == NULL)
			return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
	}
	r = request_ok(h, what, method, path, text, &b);
	data = b.data; /* freed on every way out */
	if (r < 0)
		return r;
	if (b.len > 0) {
		r = parse_json(b.data, b.len, &answer);
		if (r < 0)
			return error_line(r, what, "malformed JSON in the daemon's answer");
	}
	if (ret_answer != NULL)
		*ret_answer = answer;
	else
		json_object_put(answer);
	return 0;
}

static const char *skip_space(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	return p;
}

/* Whether *P (before END), after any white space, is C; steps past it if so. */
static bool next_is(const char **p, const char *end, char c)
{
	*p = skip_space(*p, end);
	if (*p == end || **p != c)
		return false;
	(*p)++;
	return true;
}

/* Parse TEXT (LEN bytes), which must be the object {"KEY": [V, ...]} with the key
 * written plainly (as the daemon writes its lists), handing each V to FN as soon as it is
 * parsed and dropping it after; *RET_N counts them. -EBADMSG if TEXT is anything else; a
 * negative return from FN stops and is returned. */
static int parse_list(const char *text, size_t len, const char *key, http_each_fn fn, void *opaque,
                      size_t *ret_n)
{
	const char *p = text, *end = text + len;
	size_t key_len = strlen(key);
	struct json_tokener *tok;
	int r = 0;

	if (len > INT32_MAX || !next_is(&p, end, '{') || !next_is(&p, end, '"') ||
	    (size_t)(end - p) < key_len + 1 || memcmp(p, key, key_len) != 0 || p[key_len] != '"')
		return -EBADMSG;
	p += key_len + 1;
	if (!next_is(&p, end, ':') || !next_is(&p, end, '['))
		return -EBADMSG;
	if (next_is(&p, end, ']'))
		return next_is(&p, end, '}') && skip_space(p, end) == end ? 0 : -EBADMSG;
	tok = json_tokener_new();
	if (tok == NULL)
		return -ENOMEM;
	for (;;) {
		struct json_object *v;

		json_tokener_reset(tok);
		v = json_tokener_parse_ex(tok, p, (int)(end - p));
		if (v == NULL || json_tokener_get_error(tok) != json_tokener_success) {
			json_object_put(v);
			r = -EBADMSG;
			break;
		}
		p += json_tokener_get_parse_end(tok);
		r = fn(v, opaque);
		json_object_put(v);
		(*ret_n)++;
		if (r < 0)
			break;
		if (next_is(&p, end, ','))
			continue;
		r = next_is(&p, end, ']') && next_is(&p, end, '}') && skip_space(p, end) == end
		        ? 0
		        : -EBADMSG;
		break;
	}
	json_tokener_free(tok);
	return r;
}

int http_json_each(struct http *h, const char *what, const char *path, const char *key,
                   http_each_fn fn, void *opaque)
{
	struct buffer b = {0};
	CLEANUP_FREE char *data = NULL;
	CLEANUP_JSON struct json_object *answer = NULL;
	struct json_object *list;
	size_t n = 0;
	int r;

	r = request_ok(h, what, "GET", path, NULL, &b);
	data = b.data;
	if (r < 0)
		return r;
	r = parse_list(b.data ? b.data : "", b.len, key, fn, opaque, &n);
	if (r == -EBADMSG) {
		/* Not the daemon's plain shape. Well-formed JSON with the list among other
		 * members is still read, whole, unless elements already went to FN: then the
		 * list was first and something follows it. */
		if (parse_json(b.data ? b.data : "", b.len, &answer) < 0)
			return error_line(r, what, "malformed JSON in the daemon's answer");
		if (!json_object_object_get_ex(answer, key, &list) ||
		    !json_object_is_type(list, json_type_array))
			return error_line(r, what, "the daemon's answer has no \"%s\" list", key);
		if (n > 0)
			return error_line(r, what,
			                  "the daemon's answer has more than its \"%s\" list", key);
		r = 0;
		for (size_t i = 0; r == 0 && i < json_object_array_length(list); i++)
			r = fn(json_object_array_get_idx(list, i), opaque);
	}
	if (r < 0)
		return error_line(r, what, "%s", strerror(-r));
	return 0;
}

int http_text(struct http *h, const char *what, const char *path, char **ret_text)
{
	struct buffer b = {0};
	CLEANUP_FREE char *data = NULL;
	int r;

	r = request_ok(h, what, "GET", path, NULL, &b);
	data = b.data;
	if (r < 0)
		return r;
	if (data == NULL) {
		data = strdup("");
		if (data == NULL)
			return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
	}
	*ret_text = TAKE_PTR(data);
	return 0;
}

long http_last_status(const struct http *h)
{
	return h->status;
}

int json_add_value(struct json_object *o, const char *key, struct json_object *value)
{
	if (json_object_object_add(o, key, value) < 0) {
		json_object_put(value);
		return -ENOMEM;
	}
	return 0;
}

int json_add_string(struct json_object *o, const char *key, const char *value)
{
	struct json_object *v = NULL;

	if (value != NULL) {
		v = json_object_new_string(value);
		if (v == NULL)
			return -ENOMEM;
	}
	return json_add_value(o, key, v);
}

int json_add_int(struct json_object *o, const char *key, int64_t value)
{
	struct json_object *v = json_object_new_int64(value);

	if (v == NULL)
		return -ENOMEM;
	return json_add_value(o, key, v);
}

int json_add_bool(struct json_object *o, const char *key, bool value)
{
	struct json_object *v = json_object_new_boolean(value);

	if (v == NULL)
		return -ENOMEM;
	return json_add_value(o, key, v);
}
