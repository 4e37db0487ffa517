/* thinproxyd-api: thinproxyd's API process (issue 21), the unprivileged half of the REST
 * front. It parses tenants' HTTP and JSON with daemon/api.c, as the root daemon does
 * today, but has none of the operations: daemon/ops-client.c asks the root parent to run
 * each one over the wire of include/tp-api-wire.h.
 *
 *   thinproxyd-api [--control FD] OPS_FD[,OPS_FD]... [SOCKET]...
 *
 * Each OPS_FD is this process's end of a SOCK_SEQPACKET socketpair to the parent, a
 * channel for one request at a time. Each SOCKET is FD:admin, the admin socket, or
 * FD:TENANT_ID:TENANT, tenant TENANT's control.sock: a unix stream socket the parent has
 * bound and made listen, inherited across exec. The sockets are numbered from 0 in the
 * order given, the indexes requests name. With --control, FD is the socketpair on which
 * the parent gives further sockets and takes them back (TP_API_LISTEN, TP_API_UNLISTEN),
 * numbered as it says. What this process is told of the principals only picks the index a
 * request goes out with: the parent trusts its own list, never this one.
 *
 * The parent starts it as a uid of its own, without capabilities, and keeps no other fd
 * open in it; this program binds nothing, opens nothing and needs no privilege. It serves
 * until SIGTERM or SIGINT, or until the parent closes a channel or the control socketpair,
 * and exits 0 then; 1 if it cannot start, if a channel fails or goes out of step, or if
 * the parent's word on the control socketpair is malformed; 2 on a bad command line. */
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

#include "../daemon/api-wire-io.h"
#include "../daemon/api-wire.h"
#include "../daemon/api.h"
#include "../daemon/log.h"
#include "../daemon/ops-client.h"
#include "tp-rules.h"

#define SOCKETS_MAX  64
#define CHANNELS_MAX 16

static void usage(void)
{
	fprintf(stderr, "usage: thinproxyd-api [--control FD] OPS_FD[,OPS_FD]... [SOCKET]...\n"
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

/* Parse OPS_FD[,OPS_FD]... into FDS; the count, or 0 if malformed. */
static size_t parse_channels(const char *s, int *fds)
{
	size_t n = 0;
	char *end;

	for (;;) {
		if (n == CHANNELS_MAX || (fds[n++] = parse_fd(s, &end)) < 0)
			return 0;
		if (*end == '\0')
			return n;
		if (*end != ',')
			return 0;
		s = end + 1;
	}
}

/* The API servers, by socket index. */
static struct api_server **servers;
static size_t n_servers;

static int serve(uint32_t index, int fd, const struct principal *p)
{
	int r;

	if (index >= n_servers) {
		size_t n = n_servers ? n_servers : 16;
		struct api_server **grown;

		while (n <= index)
			n *= 2;
		grown = realloc(servers, n * sizeof *grown);
		if (grown == NULL) {
			close(fd);
			return -ENOMEM;
		}
		memset(grown + n_servers, 0, (n - n_servers) * sizeof *grown);
		servers = grown;
		n_servers = n;
	}
	if (servers[index] != NULL) {
		close(fd);
		return -EEXIST;
	}
	r = ops_client_listen(index, p);
	if (r == 0)
		r = api_serve_fd(fd, p, &servers[index]);
	else
		close(fd);
	if (r < 0)
		ops_client_unlisten(index);
	return r;
}

static void unserve(uint32_t index)
{
	if (index >= n_servers || servers[index] == NULL)
		return;
	api_stop(servers[index]);
	servers[index] = NULL;
	ops_client_unlisten(index);
}

/* The parent's word on the control socketpair: 0 once done, -EPIPE at its end, -EBADMSG
 * for a malformed one, or the -errno of serving a socket. */
static int control(int fd)
{
	struct tp_api_listen m;
	struct principal p;
	uint32_t index;
	uint16_t op;
	int passed, r;

	r = api_wire_recv_listen(fd, &m, &passed);
	if (r == 0)
		r = api_wire_decode_listen(&m, sizeof m, &op, &index, &p);
	if (r == 0 && (op == TP_API_LISTEN) != (passed >= 0))
		r = -EBADMSG;
	if (r < 0) {
		if (passed >= 0)
			close(passed);
		return r;
	}
	if (op == TP_API_UNLISTEN) {
		unserve(index);
		return 0;
	}
	r = serve(index, passed, &p);
	if (r < 0)
		return log_errno(LOG_ERR, r, "serve socket %" PRIu32 ": %m", index);
	log_debug("serving socket %" PRIu32 " for %s", index, p.admin ? "the admin" : p.tenant);
	return 0;
}

int main(int argc, char **argv)
{
	static struct principal principals[SOCKETS_MAX];
	static int fds[SOCKETS_MAX];
	int channels[CHANNELS_MAX];
	struct pollfd pfd[3 + CHANNELS_MAX];
	size_t n, n_channels, admins = 0, started = 0;
	int control_fd = -1, r = 0, status = 1, first = 1;
	sigset_t stop;
	char *end;

	if (argc > 2 && strcmp(argv[1], "--control") == 0) {
		control_fd = parse_fd(argv[2], &end);
		if (control_fd < 0 || *end != '\0') {
			usage();
			return 2;
		}
		first = 3;
	}
	if (argc <= first || (n_channels = parse_channels(argv[first], channels)) == 0 ||
	    (n = (size_t)(argc - first - 1)) > SOCKETS_MAX || (n == 0 && control_fd < 0)) {
		usage();
		return 2;
	}
	for (size_t i = 0; i < n; i++) {
		if (!parse_socket(argv[first + 1 + i], &fds[i], &principals[i])) {
			fprintf(stderr, "thinproxyd-api: bad socket \"%s\"\n", argv[first + 1 + i]);
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
	for (size_t i = 0; i < n_channels; i++)
		if (fcntl(channels[i], F_SETFD, FD_CLOEXEC) < 0)
			r = -errno;
	if (control_fd >= 0 && fcntl(control_fd, F_SETFD, FD_CLOEXEC) < 0)
		r = -errno;
	if (r < 0 || (r = ops_client_init(channels, n_channels, NULL, 0)) < 0) {
		log_errno(LOG_ERR, r, "the wire to the parent: %m");
		return 1;
	}
	for (; started < n; started++) {
		r = serve((uint32_t)started, fds[started], &principals[started]);
		if (r < 0) {
			log_errno(LOG_ERR, r, "serve socket %zu (%s): %m", started,
			          argv[first + 1 + started]);
			break;
		}
	}

	/* Serve until told to stop, the parent goes or the client breaks: a closed peer of a
	 * SOCK_SEQPACKET socket is POLLHUP, which poll reports without asking for it, so the
	 * threads that read replies from the channels keep them to themselves. */
	pfd[0].events = POLLIN;
	pfd[1] = (struct pollfd){.fd = ops_client_broken_fd(), .events = POLLIN};
	pfd[2] = (struct pollfd){.fd = control_fd, .events = POLLIN};
	for (size_t i = 0; i < n_channels; i++)
		pfd[3 + i] = (struct pollfd){.fd = channels[i], .events = 0};
	for (bool running = started == n; running;) {
		if (poll(pfd, 3 + n_channels, -1) < 0) {
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
		if (pfd[1].revents) {
			log_error("a channel to the parent failed; stopping");
			break;
		}
		for (size_t i = 0; i < n_channels; i++)
			if (pfd[3 + i].revents & (POLLHUP | POLLERR | POLLNVAL))
				running = false;
		if (!running) {
			log_info("the parent's end of the wire is closed; stopping");
			status = 0;
			break;
		}
		if (pfd[2].revents) {
			/* A socket that cannot be served stops this process too: the parent
			 * starts a fresh one and gives it every socket again. */
			r = control(control_fd);
			if (r == -EPIPE) {
				log_info("the parent closed the control socketpair; stopping");
				status = 0;
				break;
			}
			if (r == -EBADMSG)
				log_error(
				    "a malformed message on the control socketpair; stopping");
			if (r < 0)
				break;
		}
	}
	for (size_t i = 0; i < n_servers; i++)
		unserve((uint32_t)i);
	free(servers);
	ops_client_shutdown();
	for (size_t i = 0; i < n_channels; i++)
		close(channels[i]);
	if (control_fd >= 0)
		close(control_fd);
	close(pfd[0].fd);
	return status;
}
