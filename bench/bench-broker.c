/* bench-broker: the real broker (daemon/broker.c) on a host without dm-thin, for the
 * host half of make bench. It answers the nbdkit plugin as thinproxyd does, from a fixed
 * list of exports that are block devices or files (a loop device in place of a thin
 * device), to one tenant, "bench", whose nbdkit runs as our own uid. Serves from its
 * main loop, as the daemon does, until SIGTERM or SIGINT.
 *
 *   bench-broker BROKER_SOCK NAME=PATH...
 * e.g. bench-broker /tmp/b/private/broker.sock fio=/dev/loop0 copy=/dev/loop1 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../daemon/broker.h"
#include "../daemon/log.h"
#include "../daemon/ops.h"

#define MAX_EXPORTS 16

static struct {
	const char *name, *path;
	uint64_t size;
} exports[MAX_EXPORTS];
static int n_exports;
static volatile sig_atomic_t stop;

static int size_of(int fd, uint64_t *ret_size)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode))
		return ioctl(fd, BLKGETSIZE64, ret_size) < 0 ? -errno : 0;
	*ret_size = (uint64_t)st.st_size;
	return 0;
}

/* What broker.c asks the daemon. */

int ops_principal_for_nbd_uid(uid_t uid, struct principal *ret_principal)
{
	if (uid != geteuid())
		return -ENOENT;
	memset(ret_principal, 0, sizeof *ret_principal);
	ret_principal->tenant_id = 1;
	snprintf(ret_principal->tenant, sizeof ret_principal->tenant, "bench");
	return 0;
}

int ops_open_export(const struct principal *p, const char *ref, bool want_write, bool direct,
                    struct export_info *ret_info)
{
	(void)p;
	(void)direct; /* the bench's files are buffered: it measures the broker, not I/O */
	for (int i = 0; i < n_exports; i++) {
		int fd;

		if (strcmp(ref, exports[i].name) != 0)
			continue;
		fd = open(exports[i].path, (want_write ? O_RDWR : O_RDONLY) | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		memset(ret_info, 0, sizeof *ret_info);
		snprintf(ret_info->name, sizeof ret_info->name, "%s", ref);
		ret_info->size = exports[i].size;
		ret_info->writable = true;
		ret_info->state = "ready";
		return fd;
	}
	return -ENOENT;
}

int ops_list_exports(const struct principal *p, struct export_info **ret_exports, size_t *ret_n)
{
	struct export_info *ex = calloc((size_t)n_exports + 1, sizeof *ex);

	(void)p;
	if (ex == NULL)
		return -ENOMEM;
	for (int i = 0; i < n_exports; i++) {
		snprintf(ex[i].name, sizeof ex[i].name, "%s", exports[i].name);
		ex[i].size = exports[i].size;
		ex[i].writable = true;
		ex[i].state = "ready";
	}
	*ret_exports = ex;
	*ret_n = (size_t)n_exports;
	return 0;
}

/* No map: the broker answers MAP with ENOENT. */
int ops_map_export(const struct principal *p, const char *ref, struct export_range **ret_ranges,
                   size_t *ret_n, uint64_t *ret_size)
{
	(void)p;
	(void)ref;
	(void)ret_ranges;
	(void)ret_n;
	(void)ret_size;
	return -ENOENT;
}

/* A thin pool's default block size, as the daemon reports it. */
int ops_pool_status(struct pool_view *ret_view)
{
	memset(ret_view, 0, sizeof *ret_view);
	ret_view->block_size = 64 * 1024;
	return 0;
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

int main(int argc, char **argv)
{
	struct sigaction sa = {.sa_handler = on_signal};
	struct pollfd pfd = {.events = POLLIN};
	struct broker *b;
	int r;

	if (argc < 3 || argc - 2 > MAX_EXPORTS) {
		fprintf(stderr, "usage: bench-broker BROKER_SOCK NAME=PATH...\n");
		return 2;
	}
	log_init("bench-broker", false, LOG_WARNING);
	for (int i = 2; i < argc; i++) {
		char *eq = strchr(argv[i], '=');
		int fd;

		if (eq == NULL) {
			fprintf(stderr, "bench-broker: %s: not NAME=PATH\n", argv[i]);
			return 2;
		}
		*eq = '\0';
		exports[n_exports].name = argv[i];
		exports[n_exports].path = eq + 1;
		fd = open(eq + 1, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || (r = size_of(fd, &exports[n_exports].size)) < 0) {
			fprintf(stderr, "bench-broker: %s: %s\n", eq + 1, strerror(errno));
			return 1;
		}
		close(fd);
		n_exports++;
	}
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	r = broker_start(argv[1], &b);
	if (r < 0) {
		fprintf(stderr, "bench-broker: listen on %s: %s\n", argv[1], strerror(-r));
		return 1;
	}
	pfd.fd = broker_fd(b);
	while (!stop)
		if (poll(&pfd, 1, -1) > 0)
			broker_run(b);
	broker_stop(b);
	unlink(argv[1]);
	return 0;
}
