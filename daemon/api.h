/* The REST API: one HTTP server (libmicrohttpd) per unix socket, each bound to the
 * principal the socket belongs to. See docs/api.md. */
#ifndef TP_API_H
#define TP_API_H

#include <sys/types.h>

#include "ops.h"

struct api_server;

/* Listen on PATH (replacing a stale socket there), owned by UID:GID with MODE, and serve
 * requests as principal P (copied). */
int api_listen(const char *path, uid_t uid, gid_t gid, mode_t mode, const struct principal *p,
               struct api_server **ret_server);
/* Stop serving and unlink the socket; NULL is fine. */
void api_stop(struct api_server *server);

#endif
