/* The API processes (issue 21), from the root parent's side: thinproxyd-api started
 * unprivileged, given the listening sockets it serves, its requests answered over its
 * channels (socketpairs, each served by a thread of the parent), watched, and started
 * again with a backoff when it dies. The daemon runs two: one for the admin socket and
 * one for the tenants' control sockets, so that a tenant who takes over its API process
 * holds no admin socket. */
#ifndef TP_DAEMON_API_CHILD_H
#define TP_DAEMON_API_CHILD_H

#include <stdbool.h>
#include <sys/types.h>

#include "ops.h"

struct api_child;

struct api_child_config {
	const char *name;    /* for the logs: "admin", "tenants" */
	const char *program; /* thinproxyd-api's path */
	uid_t uid;           /* its uid and gid */
	unsigned channels;   /* socketpairs, 1 to API_CHILD_CHANNELS_MAX */
	bool keep_stderr;
};
#define API_CHILD_CHANNELS_MAX 4

/* Not yet started; the program read now (a sealed copy in memory: see spawn_sealed_copy).
 * -ENOMEM, -EINVAL, or the -errno of reading the program. */
int api_child_new(const struct api_child_config *cfg, struct api_child **ret);

/* Serve the listening socket FD (taken over; bound at PATH, unlinked when it is taken
 * back, NULL: nothing to unlink) for the principal P, now if the process runs and in
 * every process started after: a tenant's socket replaces one it had. A process that
 * cannot be told is killed (and started again, with every socket). -ENOMEM, with FD
 * closed. Any thread. */
int api_child_listen(struct api_child *c, int fd, const char *path, const struct principal *p);
/* Take back the socket of tenant TENANT (NULL: the admin's), close it, unlink it. */
void api_child_unlisten(struct api_child *c, const char *tenant);

/* Start the process, watched from the epoll set EP through its control socketpair. Logs
 * why not, and schedules the next try. The loop's thread only, like the three below. */
int api_child_start(struct api_child *c, int ep);
/* FD has an event in EP: if it is this process's control socketpair, reap it and schedule
 * its restart (true); false if FD is not its. */
bool api_child_event(struct api_child *c, int ep, int fd);
/* Milliseconds until its restart is due (0: now), -1 if none is pending or C is NULL. */
int api_child_next_ms(const struct api_child *c);
/* Stop the process (its channels and control socketpair closed, then SIGKILL if it does
 * not exit within a few seconds), take back its sockets and free C. NULL is a no-op. */
void api_child_free(struct api_child *c);

#endif
