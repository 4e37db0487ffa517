/* The broker: the daemon's end of include/tp-broker.h. It hands open thin device fds
 * (SCM_RIGHTS) to the tenants' nbdkits, each authenticated by its peer uid, and answers
 * nothing but OPEN, LIST and MAP (which ranges of an export the pool has mapped).
 *
 * It never waits for a peer. Each connection is a small state machine (request awaited,
 * then answer being sent) in the broker's own epoll set, with a deadline that a timer in
 * the same set enforces, so an nbdkit that connects and says nothing, or asks and never
 * reads the answer, holds up no one else. Each peer uid may hold BROKER_MAX_PER_UID
 * connections at once and all peers together BROKER_MAX; a connection beyond either is
 * closed unanswered.
 *
 * Main loop use: broker_start(path, &b); add broker_fd(b) to epoll for EPOLLIN; on each
 * event, broker_run(b); broker_stop(b) at the end. */
#ifndef TP_DAEMON_BROKER_H
#define TP_DAEMON_BROKER_H

/* More than an nbdkit has in flight (one per NBD connection being opened, each answered
 * at once), few enough that one compromised nbdkit holds a small share of the broker. */
#define BROKER_MAX_PER_UID 16
/* Bounds the daemon's fds and the answers in flight (a LIST of 4096 entries is 672 KiB, a
 * MAP of 65536 ranges 1 MiB, each held at most until its deadline). */
#define BROKER_MAX 256

struct broker;

/* Listen on PATH (SOCK_SEQPACKET, non-blocking, close-on-exec), after making its
 * directory (mode 0711, root's), and get ready to serve. A stale socket left by a dead
 * daemon is replaced; a live one is -EADDRINUSE. Returns 0 or -errno. */
int broker_start(const char *path, struct broker **ret_broker);

/* The fd to wait on: readable whenever broker_run has something to do. */
int broker_fd(const struct broker *b);

/* Do what is ready: accept connections, read requests, answer each with one ops_* call,
 * send what the peers' sockets take, close what is done or past its deadline. Never
 * waits for a peer, and handles a bounded batch of events per call so that the caller's
 * loop runs in between. Logs what it refuses. */
void broker_run(struct broker *b);

/* Close every connection and the listening socket. The socket's file stays, as a killed
 * daemon's would; the caller unlinks it. NULL is fine. */
void broker_stop(struct broker *b);

#endif
