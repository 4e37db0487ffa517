/* bench-tenants: the control plane's cost per tenant (bench/host-tenants.sh). One process
 * per step, each speaking to thinproxyd's admin socket on one kept-alive connection (a
 * curl or a thinproxy per call would time process starts, not the daemon), or to the
 * tenants' NBD sockets. Tenants are named t00000, t00001, ...; volumes v0, v1, ... Prints
 * one line per sample, OP and MICROSECONDS (tab-separated), and for "first" a third
 * column: 1 if the tenant's nbdkit ran before the connection, 0 if not.
 *
 *   bench-tenants ADMIN_SOCK RUN_DIR add FIRST COUNT      add tenants FIRST..FIRST+COUNT-1
 *   bench-tenants ADMIN_SOCK RUN_DIR remove FIRST COUNT   remove them (they own nothing)
 *   bench-tenants ADMIN_SOCK RUN_DIR create FIRST COUNT VOLS   VOLS volumes in each
 *   bench-tenants ADMIN_SOCK RUN_DIR delete FIRST COUNT VOLS   and remove them again
 *   bench-tenants ADMIN_SOCK RUN_DIR get PATH SAMPLES     GET PATH (e.g. /metrics)
 *   bench-tenants ADMIN_SOCK RUN_DIR greet FIRST COUNT    an NBD greeting from each
 *   bench-tenants ADMIN_SOCK RUN_DIR first FIRST COUNT SAMPLES
 *       SAMPLES rounds, interleaved: a greeting from a tenant not spoken to before (FIRST+1,
 *       FIRST+2, ...: with nbdkit on demand, none running) and one from tenant FIRST
 *       (spoken to just before: running)
 *   bench-tenants ADMIN_SOCK RUN_DIR running FIRST COUNT  how many of them have an nbdkit
 *
 * A greeting is the 18 bytes an NBD newstyle server sends first ("NBDMAGIC", "IHAVEOPT",
 * its flags), timed from connect(): what makes an nbdkit started on demand start and
 * answer. A benchmark, not a test: it asserts nothing about times. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "tp-clock.h"

static const char *admin_sock, *run_dir;
static int api_fd = -1;        /* the kept-alive connection to ADMIN_SOCK */
static uint64_t api_last_used; /* when it last answered, in microseconds */

static _Noreturn void die(const char *what, int r)
{
	fprintf(stderr, "bench-tenants: %s: %s\n", what, strerror(r < 0 ? -r : r));
	exit(1);
}

static int unix_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	if (snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path) >= (int)sizeof sa.sun_path)
		return -ENAMETOOLONG;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		int r = -errno;

		close(fd);
		return r;
	}
	return fd;
}

static void api_connect(void)
{
	if (api_fd >= 0)
		close(api_fd);
	api_fd = unix_connect(admin_sock);
	if (api_fd < 0)
		die(admin_sock, api_fd);
}

/* Send REQ and read one answer: its status, or 0 if the connection ended first. The
 * body is read (by its Content-Length) and dropped. */
static long exchange(const char *req, size_t len)
{
	char buf[65536], *end, *cl;
	size_t have = 0, want;
	long status;
	ssize_t n;

	for (size_t off = 0; off < len; off += (size_t)n)
		if ((n = send(api_fd, req + off, len - off, MSG_NOSIGNAL)) <= 0)
			return 0;
	while ((end = memmem(buf, have, "\r\n\r\n", 4)) == NULL) {
		if (have == sizeof buf - 1 ||
		    (n = read(api_fd, buf + have, sizeof buf - 1 - have)) <= 0)
			return 0;
		have += (size_t)n;
	}
	buf[have] = '\0';
	*end = '\0';
	if (sscanf(buf, "HTTP/1.%*d %ld", &status) != 1)
		return 0;
	cl = strcasestr(buf, "\r\nContent-Length:");
	want = (size_t)(end + 4 - buf) + (cl ? strtoul(cl + 17, NULL, 10) : 0);
	while (have < want) {
		if ((n = read(api_fd, buf, sizeof buf < want - have ? sizeof buf : want - have)) <=
		    0)
			return 0;
		have += (size_t)n;
	}
	return status;
}

/* One REST call on the admin socket; returns the HTTP status (0 if it never answered).
 * The daemon closes a connection idle for 10 s: one idle for 5 s is made anew, and one
 * found closed before any answer is made anew and the request sent again. */
static long api(const char *method, const char *path, const char *json)
{
	char req[1024];
	int len;
	long status;

	if (json)
		len = snprintf(req, sizeof req,
		               "%s %s HTTP/1.1\r\nHost: localhost\r\n"
		               "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
		               method, path, strlen(json), json);
	else
		len = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: localhost\r\n\r\n", method,
		               path);
	if (len < 0 || (size_t)len >= sizeof req)
		die("request", E2BIG);
	if (api_fd < 0 || tp_now_us() - api_last_used > 5000000)
		api_connect();
	status = exchange(req, (size_t)len);
	if (status == 0) {
		api_connect();
		status = exchange(req, (size_t)len);
	}
	api_last_used = tp_now_us();
	return status;
}

/* Time one call that must answer WANT (or WANT2); prints OP and the microseconds. */
static void timed(const char *op, const char *method, const char *path, const char *json, long want,
                  long want2)
{
	uint64_t t0 = tp_now_us();
	long got = api(method, path, json);
	uint64_t t1 = tp_now_us();

	if (got != want && got != want2) {
		fprintf(stderr, "bench-tenants: %s %s: HTTP %ld, expected %ld\n", method, path, got,
		        want);
		exit(1);
	}
	printf("%s\t%llu\n", op, (unsigned long long)(t1 - t0));
}

static void tenant_name(char *buf, size_t size, long i)
{
	snprintf(buf, size, "t%05ld", i);
}

/* Whether tenant NAME's nbdkit runs, as its pidfile says. */
static int running(const char *name)
{
	char path[4096], buf[32];
	ssize_t n;
	long pid;
	int fd;

	snprintf(path, sizeof path, "%s/tenants/%s/nbdkit.pid", run_dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	pid = strtol(buf, NULL, 10);
	return pid > 0 && kill((pid_t)pid, 0) == 0;
}

/* Microseconds from connect() to tenant NAME's full NBD greeting. */
static uint64_t greet(const char *name)
{
	char path[4096], buf[18];
	size_t have = 0;
	uint64_t t0, t1;
	ssize_t n;
	int fd;

	snprintf(path, sizeof path, "%s/tenants/%s/nbd.sock", run_dir, name);
	t0 = tp_now_us();
	fd = unix_connect(path);
	if (fd < 0)
		die(path, fd);
	while (have < sizeof buf) {
		n = read(fd, buf + have, sizeof buf - have);
		if (n <= 0)
			die("NBD greeting", n < 0 ? errno : EPROTO);
		have += (size_t)n;
	}
	t1 = tp_now_us();
	close(fd);
	if (memcmp(buf, "NBDMAGICIHAVEOPT", 16) != 0)
		die("NBD greeting", EPROTO);
	return t1 - t0;
}

static long number(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < 0)
		die(s, EINVAL);
	return v;
}

int main(int argc, char **argv)
{
	char name[32], path[256], json[256];
	const char *cmd;
	long first, count, vols;

	if (argc < 5) {
		fprintf(stderr, "usage: bench-tenants ADMIN_SOCK RUN_DIR CMD ARGS...\n");
		return 2;
	}
	admin_sock = argv[1];
	run_dir = argv[2];
	cmd = argv[3];
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (strcmp(cmd, "get") == 0) {
		long samples = number(argv[5]);

		for (long s = 0; s < samples; s++)
			timed(argv[4], "GET", argv[4], NULL, 200, 200);
		return 0;
	}
	if (argc < 6)
		die(cmd, EINVAL);
	first = number(argv[4]);
	count = number(argv[5]);
	vols = argc > 6 ? number(argv[6]) : 0;
	if (strcmp(cmd, "add") == 0) {
		for (long i = first; i < first + count; i++) {
			tenant_name(name, sizeof name, i);
			snprintf(json, sizeof json, "{\"name\":\"%s\"}", name);
			timed("add", "POST", "/v1/tenants", json, 201, 201);
		}
	} else if (strcmp(cmd, "remove") == 0) {
		for (long i = first; i < first + count; i++) {
			tenant_name(name, sizeof name, i);
			snprintf(path, sizeof path, "/v1/tenants/%s", name);
			timed("remove", "DELETE", path, NULL, 204, 200);
		}
	} else if (strcmp(cmd, "create") == 0 || strcmp(cmd, "delete") == 0) {
		bool create = strcmp(cmd, "create") == 0;

		for (long v = 0; v < vols; v++)
			for (long i = first; i < first + count; i++) {
				tenant_name(name, sizeof name, i);
				if (create) {
					snprintf(path, sizeof path, "/v1/tenants/%s/volumes", name);
					snprintf(json, sizeof json,
					         "{\"name\":\"v%ld\",\"size\":1073741824}", v);
					timed("create", "POST", path, json, 201, 201);
				} else {
					snprintf(path, sizeof path, "/v1/tenants/%s/volumes/v%ld",
					         name, v);
					timed("delete", "DELETE", path, NULL, 204, 200);
				}
			}
	} else if (strcmp(cmd, "greet") == 0) {
		for (long i = first; i < first + count; i++) {
			tenant_name(name, sizeof name, i);
			printf("greet\t%llu\n", (unsigned long long)greet(name));
		}
	} else if (strcmp(cmd, "first") == 0) {
		char hot[32];

		tenant_name(hot, sizeof hot, first);
		greet(hot);
		for (long s = 1; s <= vols && s < count; s++) {
			int was;

			tenant_name(name, sizeof name, first + s);
			was = running(name);
			printf("first-idle\t%llu\t%d\n", (unsigned long long)greet(name), was);
			was = running(hot);
			printf("first-running\t%llu\t%d\n", (unsigned long long)greet(hot), was);
		}
	} else if (strcmp(cmd, "running") == 0) {
		long n = 0;

		for (long i = first; i < first + count; i++) {
			tenant_name(name, sizeof name, i);
			n += running(name);
		}
		printf("running\t%ld\n", n);
	} else {
		die(cmd, EINVAL);
	}
	return 0;
}
