/* The root parent's side of the wire to the API process (issue 21): requests read from
 * the socketpairs, checked against the principals of the API sockets, run by the real
 * operations of daemon/ops.h, and answered. */
#ifndef TP_OPS_SERVER_H
#define TP_OPS_SERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ops.h"

/* The API sockets of one API process, by index: what the parent gave each, and whether
 * it still serves it. Shared by the threads that serve the process's socketpairs and the
 * one that adds and drops its sockets. */
struct ops_server {
	pthread_mutex_t lock;
	struct ops_socket {
		struct principal p;
		bool live;
	} * sockets;
	size_t n, cap;
};

/* Start with the API sockets whose principals are SOCKETS (N, copied; none if 0; at most
 * one admin). -EINVAL, -ENOMEM. */
int ops_server_init(struct ops_server *s, const struct principal *sockets, size_t n);
void ops_server_free(struct ops_server *s);

/* A socket given to the API process, as the next index (*RET_INDEX); one no longer served
 * (its index is never given again). Add: -EINVAL for a second admin, -ENOMEM. */
int ops_server_add(struct ops_server *s, const struct principal *p, uint32_t *ret_index);
void ops_server_drop(struct ops_server *s, uint32_t index);

/* Read one request from FD, an end of one of the API process's socketpairs, and answer
 * it. A request the socket it names may not make (an index past the sockets or dropped;
 * an operation without a principal, or acting for a tenant, from a socket not the
 * admin's) is answered with -EPERM and logged. Returns 0 once answered; -EPIPE when the
 * API process closed its end (a clean end); -EBADMSG for a malformed message (the API
 * process is no longer to be trusted: stop it); another -errno. */
int ops_server_serve_one(struct ops_server *s, int fd);

/* Serve FD until the API process closes its end (0) or anything else stops it (-errno). */
int ops_server_run(struct ops_server *s, int fd);

#endif
