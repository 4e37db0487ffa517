/* The REST API: one HTTP server (libmicrohttpd) per unix socket, each bound to the
 * principal the socket belongs to. See docs/api.md. */
#ifndef TP_API_H
#define TP_API_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "ops.h"

struct api_server;

/* Bind PATH (replacing a stale socket there), owned by UID:GID with MODE, and listen on
 * it without serving: returns the socket's fd (close-on-exec, non-blocking) or -errno.
 * How the root parent makes the sockets an API process serves (issue 21). */
int api_bind(const char *path, uid_t uid, gid_t gid, mode_t mode);
/* Listen on PATH as api_bind does, and serve requests as principal P (copied). */
int api_listen(const char *path, uid_t uid, gid_t gid, mode_t mode, const struct principal *p,
               struct api_server **ret_server);
/* Serve the socket FD, already bound and listening (SOCK_STREAM), as principal P (copied):
 * the API process's way, whose sockets the root parent binds (issue 21). FD is taken
 * over, closed on failure; -ENOTSOCK if it is not a listening stream socket. */
int api_serve_fd(int fd, const struct principal *p, struct api_server **ret_server);
/* Stop serving and unlink the socket api_listen made; NULL is fine. */
void api_stop(struct api_server *server);

/* One request as the HTTP server received it. */
struct api_request {
	const char *method;
	const char *url;          /* the path as sent (percent-encoded), without the query */
	const char *content_type; /* the Content-Type header, NULL if none */
	const char *force;        /* the query argument "force", NULL if none */
	const char *from;         /* the query argument "from" as sent, NULL if none */
	/* The query arguments "label" as sent (percent-encoded; a '+' already a space, as
	 * libmicrohttpd has it), "" for one without '='. N_LABELS counts no further than
	 * TP_LABELS_MAX + 1, which is refused. */
	const char *const *labels;
	size_t n_labels;
	const char *body; /* LEN bytes and a NUL, or NULL if none arrived */
	size_t len;
	bool too_large; /* the body went past the bound and was dropped */
};

/* What to send back: STATUS and BODY (malloc'ed, LEN bytes and a NUL; NULL if none) of
 * CONTENT_TYPE. */
struct api_answer {
	unsigned status;
	char *body;
	size_t len;
	const char *content_type;
};

/* Answer REQ as principal P: validation, routing, the ops call and the reply, everything
 * but HTTP itself (the fuzz target fuzz-api-request drives this). Returns 0, or -ENOMEM
 * with nothing in *RET_ANSWER. */
int api_answer(const struct principal *p, const struct api_request *req,
               struct api_answer *ret_answer);

/* Decode the %XX escapes of the URL path S in place, except those of '/' and NUL, which
 * stay as they are: an encoded slash never becomes a separator of the path, nor does an
 * encoded NUL end it. Returns the new length. api_answer decodes every path with it;
 * libmicrohttpd decodes nothing (the query's arguments are decoded where they are read). */
size_t api_unescape(char *s);

#endif
