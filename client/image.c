/* The image and grant commands of the admin socket: image import, publish, ls and rm;
 * grant, revoke and grants. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tp-cleanup.h"
#include "tp-rules.h"
#include "client.h"
#include "output.h"

#define WHAT_MAX 160
#define PATH_LEN 128

/* Show the image the daemon answered with, as a table row or as JSON. */
static int show_image(const struct ctx *c, struct json_object *answer)
{
	return c->json ? print_json(stdout, answer) : print_images(stdout, answer, false);
}

/* An import's progress on a terminal: while the import's request runs, another thread
 * asks the daemon every second how far the copy is (GET /v1/images, state importing) on a
 * connection of its own, and rewrites one line on stderr. */
struct progress {
	const char *socket_path, *name;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done, shown;
};

static int show_progress(struct json_object *image, void *opaque)
{
	struct progress *p = opaque;
	struct json_object *o;
	char done_text[32], size_text[32];
	uint64_t done, size;

	/* The admin socket names images by reference: images/NAME. */
	if (!json_object_object_get_ex(image, "name", &o) ||
	    strncmp(json_object_get_string(o), "images/", 7) != 0 ||
	    strcmp(json_object_get_string(o) + 7, p->name) != 0 ||
	    !json_object_object_get_ex(image, "imported", &o))
		return 0;
	done = (uint64_t)json_object_get_int64(o);
	if (!json_object_object_get_ex(image, "size", &o))
		return 0;
	size = (uint64_t)json_object_get_int64(o);
	tp_format_size(done, done_text, sizeof done_text);
	tp_format_size(size, size_text, sizeof size_text);
	fprintf(stderr, "\rimage import %s: %s of %s (%u%%)\033[K", p->name, done_text, size_text,
	        size ? (unsigned)(done * 100 / size) : 0);
	p->shown = true;
	return 0;
}

static void *follow_import(void *opaque)
{
	struct progress *p = opaque;
	struct http *h = NULL;
	struct timespec until;

	error_lines_mute(true);
	if (http_open(p->socket_path, &h) < 0)
		return NULL;
	pthread_mutex_lock(&p->lock);
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += 1;
		while (!p->done && pthread_cond_timedwait(&p->cond, &p->lock, &until) == 0)
			;
		if (p->done)
			break;
		pthread_mutex_unlock(&p->lock);
		http_json_each(h, NULL, "/v1/images", "images", show_progress, p);
		pthread_mutex_lock(&p->lock);
	}
	if (p->shown)
		fputs("\r\033[K", stderr);
	pthread_mutex_unlock(&p->lock);
	http_close(h);
	return NULL;
}

int cmd_image_import(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *body = NULL;
	CLEANUP_JSON struct json_object *answer = NULL;
	CLEANUP_FREE char *from = NULL;
	const char *name = a->operand[0];
	char what[WHAT_MAX];
	int r;

	snprintf(what, sizeof what, "image import %s", name);
	r = check_name(what, "image", name);
	if (r < 0)
		return r;
	/* The daemon opens the path from its own working directory: send it absolute, and
	 * say here, not there, when it does not exist. */
	from = realpath(a->from, NULL);
	if (from == NULL)
		return error_line(-errno, what, "%s: %s", a->from, strerror(errno));
	body = json_object_new_object();
	if (body == NULL || json_add_string(body, "name", name) < 0 ||
	    json_add_string(body, "from", from) < 0)
		return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
	if (isatty(STDERR_FILENO) && c->socket_path != NULL) {
		struct progress p = {.socket_path = c->socket_path, .name = name};
		pthread_condattr_t ca;
		pthread_t thread;
		bool following;

		pthread_mutex_init(&p.lock, NULL);
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&p.cond, &ca);
		pthread_condattr_destroy(&ca);
		following = pthread_create(&thread, NULL, follow_import, &p) == 0;
		r = http_json(c->http, what, "POST", "/v1/images", body, &answer);
		if (following) {
			pthread_mutex_lock(&p.lock);
			p.done = true;
			pthread_cond_signal(&p.cond);
			pthread_mutex_unlock(&p.lock);
			pthread_join(thread, NULL);
		}
		pthread_cond_destroy(&p.cond);
		pthread_mutex_destroy(&p.lock);
	} else {
		r = http_json(c->http, what, "POST", "/v1/images", body, &answer);
	}
	if (r < 0)
		return r;
	return show_image(c, answer);
}

int cmd_image_publish(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *body = NULL;
	CLEANUP_JSON struct json_object *answer = NULL;
	const char *name = a->operand[0];
	char what[WHAT_MAX], path[PATH_LEN];
	int r;

	snprintf(what, sizeof what, "image publish %s", name);
	r = check_name(what, "image", name);
	if (r < 0)
		return r;
	if (a->tenant != NULL) {
		r = check_name(what, "tenant", a->tenant);
		if (r < 0)
			return r;
	}
	body = json_object_new_object();
	if (body == NULL || (a->tenant != NULL && json_add_string(body, "tenant", a->tenant) < 0) ||
	    (a->all && json_add_bool(body, "all", true) < 0))
		return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
	snprintf(path, sizeof path, "/v1/images/%s/publish", name);
	r = http_json(c->http, what, "POST", path, body, &answer);
	if (r < 0)
		return r;
	return show_image(c, answer);
}

int cmd_image_ls(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *answer = NULL;
	struct json_object *list;
	int r;

	r = http_json(c->http, "image ls", "GET", "/v1/images", NULL, &answer);
	if (r < 0)
		return r;
	if (c->json)
		return print_json(stdout, answer);
	r = answer_list("image ls", answer, "images", &list);
	if (r < 0)
		return r;
	return print_images(stdout, list, a->quiet);
}

int cmd_image_rm(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *answer = NULL;
	const char *name = a->operand[0];
	char what[WHAT_MAX], path[PATH_LEN];
	int r;

	snprintf(what, sizeof what, "image rm %s", name);
	r = check_name(what, "image", name);
	if (r < 0)
		return r;
	snprintf(path, sizeof path, "/v1/images/%s", name);
	r = http_json(c->http, what, "DELETE", path, NULL, &answer);
	if (r < 0)
		return r;
	return c->json ? print_json(stdout, answer) : 0;
}

/* The grant body {"owner", "volume", "to"} for VOLUME of A's --owner to A's --to. */
static int grant_body(const char *what, const struct args *a, struct json_object **ret_body)
{
	CLEANUP_JSON struct json_object *body = NULL;
	int r;

	r = check_name(what, "volume", a->operand[0]);
	if (r == 0)
		r = check_name(what, "tenant", a->owner);
	if (r == 0)
		r = check_name(what, "tenant", a->to);
	if (r < 0)
		return r;
	body = json_object_new_object();
	if (body == NULL || json_add_string(body, "owner", a->owner) < 0 ||
	    json_add_string(body, "volume", a->operand[0]) < 0 ||
	    json_add_string(body, "to", a->to) < 0)
		return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
	*ret_body = TAKE_PTR(body);
	return 0;
}

int cmd_grant(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *body = NULL;
	CLEANUP_JSON struct json_object *answer = NULL;
	char what[WHAT_MAX];
	int r;

	snprintf(what, sizeof what, "grant %s", a->operand[0]);
	r = grant_body(what, a, &body);
	if (r < 0)
		return r;
	if (json_add_bool(body, "write", a->write) < 0)
		return error_line(-ENOMEM, what, "%s", strerror(ENOMEM));
	r = http_json(c->http, what, "POST", "/v1/grants", body, &answer);
	if (r < 0)
		return r;
	return c->json ? print_json(stdout, answer) : print_grants(stdout, answer);
}

int cmd_revoke(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *body = NULL;
	CLEANUP_JSON struct json_object *answer = NULL;
	char what[WHAT_MAX];
	int r;

	snprintf(what, sizeof what, "revoke %s", a->operand[0]);
	r = grant_body(what, a, &body);
	if (r < 0)
		return r;
	r = http_json(c->http, what, "DELETE", "/v1/grants", body, &answer);
	if (r < 0)
		return r;
	return c->json ? print_json(stdout, answer) : 0;
}

int cmd_grants(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *answer = NULL;
	struct json_object *list;
	int r;

	(void)a;
	r = http_json(c->http, "grants", "GET", "/v1/grants", NULL, &answer);
	if (r < 0)
		return r;
	if (c->json)
		return print_json(stdout, answer);
	r = answer_list("grants", answer, "grants", &list);
	if (r < 0)
		return r;
	return print_grants(stdout, list);
}
