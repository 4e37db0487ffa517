/* The root parent's side of the wire to the API process (issue 21): requests read from
 * the socketpair, checked against the principals of the API sockets, run by the real
 * operations of daemon/ops.h, and answered. */
#ifndef TP_OPS_SERVER_H
#define TP_OPS_SERVER_H

#include <stddef.h>

#include "ops.h"

struct ops_server {
	int fd;                    /* the parent's end of the socketpair (not owned) */
	struct principal *sockets; /* socket i's principal, as the parent passed them */
	size_t n;
};

/* Serve on FD for the API sockets whose principals are SOCKETS (N, copied; at most one
 * admin). -EINVAL, -ENOMEM. */
int ops_server_init(struct ops_server *s, int fd, const struct principal *sockets, size_t n);
void ops_server_free(struct ops_server *s);

/* Read one request and answer it. A request the socket it names may not make (an index
 * past the sockets; an operation without a principal, or acting for a tenant, from a
 * socket not the admin's) is answered with -EPERM and logged. Returns 0 once answered;
 * -EPIPE when the API process closed its end (a clean end); -EBADMSG for a malformed
 * message (the API process is no longer to be trusted: stop it); another -errno. */
int ops_server_serve_one(struct ops_server *s);

/* Serve until the API process closes its end (0) or anything else stops it (-errno). */
int ops_server_run(struct ops_server *s);

#endif
