/* The broker: the daemon's end of include/tp-broker.h. It hands open thin device fds
 * (SCM_RIGHTS) to the tenants' nbdkits, each authenticated by its peer uid, and answers
 * nothing but OPEN and LIST.
 *
 * Main loop use: fd = broker_listen(path); add fd to epoll for EPOLLIN; on each event,
 * broker_accept(fd). */
#ifndef TP_DAEMON_BROKER_H
#define TP_DAEMON_BROKER_H

/* Create the broker's listening socket at PATH (SOCK_SEQPACKET, non-blocking,
 * close-on-exec) and its directory (mode 0711, root's). A stale socket left by a dead
 * daemon is replaced; a live one is -EADDRINUSE. Returns the fd or -errno. */
int broker_listen(const char *path);

/* Accept one pending connection on LISTEN_FD, answer its one request and close it.
 * Whatever the peer does, returns within 1.5 s plus the one ops_* call it makes; logs
 * what it refuses. */
void broker_accept(int listen_fd);

#endif
