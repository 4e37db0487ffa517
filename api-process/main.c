/* thinproxyd-api: thinproxyd's API process (issue 21), the unprivileged half of the REST
 * front. It parses tenants' HTTP and JSON with daemon/api.c, as the root daemon does
 * today, but has none of the operations: daemon/ops-client.c asks the root parent to run
 * each one over the wire of include/tp-api-wire.h.
 *
 *   thinproxyd-api OPS_FD SOCKET...
 *
 * OPS_FD is this process's end of the SOCK_SEQPACKET socketpair to the parent. Each
 * SOCKET is FD:admin, the admin socket, or FD:TENANT_ID:TENANT, tenant TENANT's
 * control.sock: a unix stream socket the parent has bound and made listen, inherited
 * across exec. The sockets are numbered from 0 in the order given, the indexes requests
 * name; the parent must give them in the order it holds their principals. What this
 * process is told of the principals only picks the socket a request goes out on: the
 * parent trusts its own list, never this one.
 *
 * The parent starts it as a uid of its own, without capabilities, and keeps no other fd
 * open in it; this program binds nothing, opens nothing and needs no privilege. It serves
 * until SIGTERM or SIGINT, or until the parent's end of the socketpair closes, and exits 0
 * then; 1 if it cannot start, 2 on a bad command line. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "../daemon/api.h"
#include "../daemon/log.h"
#include "../daemon/ops-client.h"
#include "tp-rules.h"

#define SOCKETS_MAX 64

static void usage(void)
{
	fprintf(stderr, "usage: thinproxyd-api OPS_FD SOCKET...\n"
	                "  SOCKET: FD:admin or FD:TENANT_ID:TENANT\n");
}

/* The fd S names, open in this process, or -1. */
static int parse_fd(const char *s, char **ret_end)
{
	long v;

	errno = 0;
	v = strtol(s, ret_end, 10);
	if (errno != 0 || *ret_end == s || v < 3 || v > INT32_MAX || fcntl((int)v, F_GETFD) < 0)
		return -1;
	return (int)v;
}

/* Parse SOCKET into its fd and principal; false if it is not FD:admin or
 * FD:TENANT_ID:TENANT with an open fd, a positive id and a valid name. */
static bool parse_socket(const char *s, int *ret_fd, struct principal *ret_p)
{
	char *end;
	long long id;

	*ret_fd = parse_fd(s, &end);
	if (*ret_fd < 0 || *end != ':')
		return false;
	s = end + 1;
	if (strcmp(s, "admin") == 0) {
		*ret_p = (struct principal){.admin = true};
		return true;
	}
	errno = 0;
	id = strtoll(s, &end, 10);
	if (errno != 0 || end == s || id <= 0 || *end != ':' || !tp_name_valid(end + 1))
		return false;
	*ret_p = (struct principal){.tenant_id = id};
	snprintf(ret_p->tenant, sizeof ret_p->tenant, "%s", end + 1);
	return true;
}

int main(int argc, char **argv)
{
	static struct principal principals[SOCKETS_MAX];
	static int fds[SOCKETS_MAX];
	static struct api_server *servers[SOCKETS_MAX];
	struct pollfd pfd[2];
	size_t n = (size_t)argc - 2, admins = 0, started = 0;
	int ops_fd, r = 0, status = 1;
	sigset_t stop;
	char *end;

	if (argc < 3 || n > SOCKETS_MAX || (ops_fd = parse_fd(argv[1], &end)) < 0 || *end != '\0') {
		usage();
		return 2;
	}
	for (size_t i = 0; i < n; i++) {
		if (!parse_socket(argv[i + 2], &fds[i], &principals[i])) {
			fprintf(stderr, "thinproxyd-api: bad socket \"%s\"\n", argv[i + 2]);
			usage();
			return 2;
		}
		admins += principals[i].admin;
	}
	if (admins > 1) {
		fprintf(stderr, "thinproxyd-api: more than one admin socket\n");
		return 2;
	}
	log_init("thinproxyd-api", false, LOG_INFO);

	/* SIGTERM and SIGINT are read from a signalfd, blocked before libmicrohttpd starts
	 * its threads so that none of them takes one; a send to a closed connection or a
	 * parent gone fails with EPIPE instead of killing the process. */
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	signal(SIGPIPE, SIG_IGN);
	if (sigprocmask(SIG_BLOCK, &stop, NULL) < 0 ||
	    (pfd[0].fd = signalfd(-1, &stop, SFD_CLOEXEC)) < 0) {
		log_errno(LOG_ERR, -errno, "signals: %m");
		return 1;
	}
	if (fcntl(ops_fd, F_SETFD, FD_CLOEXEC) < 0 ||
	    (r = ops_client_init(ops_fd, principals, n)) < 0) {
		log_errno(LOG_ERR, r < 0 ? r : -errno, "the wire to the parent: %m");
		return 1;
	}
	for (; started < n; started++) {
		r = api_serve_fd(fds[started], &principals[started], &servers[started]);
		if (r < 0) {
			log_errno(LOG_ERR, r, "serve socket %zu (%s): %m", started,
			          argv[started + 2]);
			break;
		}
	}

	/* Serve until told to stop or the parent goes: a closed peer of a SOCK_SEQPACKET
	 * socket is POLLHUP, which poll reports without asking for it, so the threads that
	 * read replies from the socketpair keep it to themselves. */
	pfd[0].events = POLLIN;
	pfd[1] = (struct pollfd){.fd = ops_fd, .events = 0};
	while (started == n) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_errno(LOG_ERR, -errno, "poll: %m");
			break;
		}
		if (pfd[0].revents) {
			log_info("stopping on a signal");
			status = 0;
			break;
		}
		if (pfd[1].revents & (POLLHUP | POLLERR | POLLNVAL)) {
			log_info("the parent's end of the wire is closed; stopping");
			status = 0;
			break;
		}
	}
	while (started > 0)
		api_stop(servers[--started]);
	ops_client_shutdown();
	close(ops_fd);
	close(pfd[0].fd);
	return status;
}
