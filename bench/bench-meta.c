/* bench-meta: metadata latency of thinproxyd beside what it stands on, in one run (make
 * bench, in the test guest). At each volume count of LEVELS it fills the tenant (through
 * the API) and a pool of our own (through daemon/pool.c) up to that many volumes, then
 * times SAMPLES rounds, interleaved, of:
 *   api      create, snapshot and remove through the admin REST socket: one kept-alive
 *            connection, as a client library would hold, spoken to by the few lines of
 *            HTTP/1.1 below (libcurl, under TCG, spends about 4 ms of CPU on each request
 *            itself, more than the daemon's own work: that is the client's cost, not the
 *            API's)
 *   bare     the pool_* calls (libdevmapper) those operations make, on our own pool;
 *            each also split as the daemon splits a change in its log (bare-checks,
 *            bare-message)
 *   dmsetup  the same sequence as dmsetup commands, one process each (every 4th round)
 *   open     an NBD connection to a new volume through the tenant's nbdkit (broker round
 *            trip plus activation), again once active, and bare pool_activate_thin +
 *            pool_open_thin; with BENCH_HANDSHAKE_SOCK set, also the same connection to
 *            the nbdkit listening there (the null plugin: the NBD handshake alone)
 * Then the same create, snapshot and remove in batches of ten of a kind (api-batch,
 * bare-batch), where each call finds its code warm.
 * Prints one line per sample: LEVEL KIND OP MICROSECONDS (tab-separated); progress and
 * fill rates go to stderr. With STATE_DIR "-", only the API is timed (no pool of its
 * own, no open). A benchmark, not a test: it asserts nothing about times.
 *
 *   bench-meta ADMIN_SOCK TENANT NBD_SOCK STATE_DIR LEVELS SAMPLES
 * e.g. bench-meta /run/thinproxy/admin.sock alice /run/thinproxy/tenants/alice/nbd.sock
 *      /run/bench-pool 10,1000,10000 50 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libnbd.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../daemon/log.h"
#include "../daemon/pool.h"
#include "tp-clock.h"

#define GiB           (UINT64_C(1) << 30)
#define DMSETUP_EVERY 4

extern char **environ;

static const char *admin_sock, *tenant, *nbd_sock, *handshake_sock;
static int api_fd = -1;        /* the kept-alive connection to ADMIN_SOCK */
static uint64_t api_last_used; /* when it last answered, in microseconds */
static struct pool *pool;
static uint32_t next_id = 1; /* our pool's next thin id */

static _Noreturn void die(const char *what, int r)
{
	fprintf(stderr, "bench-meta: %s: %s\n", what, strerror(r < 0 ? -r : r));
	exit(1);
}

static void api_connect(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	if (api_fd >= 0)
		close(api_fd);
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", admin_sock);
	api_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (api_fd < 0 || connect(api_fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		die(admin_sock, errno);
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
		               "%s /v1/tenants/%s%s HTTP/1.1\r\nHost: localhost\r\n"
		               "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
		               method, tenant, path, strlen(json), json);
	else
		len = snprintf(req, sizeof req,
		               "%s /v1/tenants/%s%s HTTP/1.1\r\nHost: localhost\r\n\r\n", method,
		               tenant, path);
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

static void api_expect(const char *method, const char *path, const char *json, long want)
{
	long got = api(method, path, json);

	if (got != want) {
		fprintf(stderr, "bench-meta: %s %s: HTTP %ld, expected %ld\n", method, path, got,
		        want);
		exit(1);
	}
}

static void api_create(const char *name)
{
	char json[160];

	snprintf(json, sizeof json, "{\"name\":\"%s\",\"size\":%" PRIu64 "}", name, GiB);
	api_expect("POST", "/volumes", json, 201);
}

static void api_snapshot(const char *name, const char *parent)
{
	char json[160];

	snprintf(json, sizeof json, "{\"name\":\"%s\",\"parent\":\"%s\"}", name, parent);
	api_expect("POST", "/volumes", json, 201);
}

/* Remove NAME; an nbdkit that has not yet closed its fd answers 409 for a moment. */
static void api_remove(const char *name)
{
	char path[128];

	snprintf(path, sizeof path, "/volumes/%s", name);
	for (int i = 0; i < 200; i++) {
		long got = api("DELETE", path, NULL);

		if (got == 204 || got == 200)
			return;
		if (got != 409)
			break;
		usleep(10000);
	}
	fprintf(stderr, "bench-meta: DELETE %s failed\n", path);
	exit(1);
}

/* The pool calls the daemon's create, snapshot and remove make (daemon/volumes.c,
 * daemon/change.c). With STEPS, each also notes there how long its parts took, split as
 * the daemon's log line splits a change: the checks before the message (status reads; for
 * remove also the deactivation) and the message. */
enum { STEP_CHECKS, STEP_MESSAGE, STEPS };

/* The time since *T belongs to step I (noted in STEPS, if given); *T becomes now. */
static void step(uint64_t *steps, int i, uint64_t *t)
{
	uint64_t now = tp_now_us();

	if (steps)
		steps[i] = now - *t;
	*t = now;
}

/* The rest of every bare change once its checks are done: the message's result R
 * (WHAT names it), timed as its step. */
static void bare_finish(const char *what, int r, uint64_t *steps, uint64_t *t)
{
	if (r < 0)
		die(what, r);
	step(steps, STEP_MESSAGE, t);
}

static void bare_create(uint32_t id, uint64_t *steps)
{
	struct pool_status st;
	uint64_t t = tp_now_us();
	int r;

	if ((r = pool_get_status(pool, &st)) < 0)
		die("bare create: status", r);
	step(steps, STEP_CHECKS, &t);
	bare_finish("bare create_thin", pool_create_thin(pool, id), steps, &t);
}

static void bare_snapshot(uint32_t id, uint32_t origin, uint64_t *steps)
{
	struct pool_status st;
	struct thin_status ts;
	uint64_t t = tp_now_us();
	int r;

	if ((r = pool_thin_status(pool, origin, &ts)) < 0 || (r = pool_get_status(pool, &st)) < 0)
		die("bare snapshot: status", r);
	step(steps, STEP_CHECKS, &t);
	bare_finish("bare create_snap", pool_create_snap(pool, id, origin), steps, &t);
}

static void bare_remove(uint32_t id, uint64_t *steps)
{
	struct thin_status ts;
	uint64_t t = tp_now_us();
	int r;

	if ((r = pool_thin_status(pool, id, &ts)) < 0 || (r = pool_deactivate_thin(pool, id)) < 0)
		die("bare remove: deactivate", r);
	step(steps, STEP_CHECKS, &t);
	bare_finish("bare delete", pool_delete_thin(pool, id), steps, &t);
}

/* Run dmsetup ARGS..., output discarded; dies unless it succeeds. */
static void dmsetup(const char *const *args)
{
	posix_spawn_file_actions_t fa;
	char *argv[8];
	int status, n = 0;
	pid_t pid;

	argv[n++] = "dmsetup";
	while (*args && n < 7)
		argv[n++] = (char *)*args++;
	argv[n] = NULL;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	if (posix_spawnp(&pid, "dmsetup", &fa, NULL, argv, environ) != 0)
		die("spawn dmsetup", errno);
	posix_spawn_file_actions_destroy(&fa);
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "bench-meta: dmsetup %s %s %s failed\n", argv[1], argv[2],
		        argv[n - 1]);
		exit(1);
	}
}

/* dmsetup message POOL 0 "MSG". */
static void dmsetup_message(const char *msg)
{
	dmsetup((const char *[]){"message", pool_name(pool), "0", msg, NULL});
}

static void dmsetup_create(uint32_t id)
{
	char msg[64];

	dmsetup((const char *[]){"status", "--noflush", pool_name(pool), NULL});
	snprintf(msg, sizeof msg, "create_thin %" PRIu32, id);
	dmsetup_message(msg);
}

static void dmsetup_snapshot(uint32_t id, uint32_t origin)
{
	char msg[64];

	dmsetup((const char *[]){"status", "--noflush", pool_name(pool), NULL});
	snprintf(msg, sizeof msg, "create_snap %" PRIu32 " %" PRIu32, id, origin);
	dmsetup_message(msg);
}

static void dmsetup_remove(uint32_t id)
{
	char msg[64];

	dmsetup((const char *[]){"status", "--noflush", pool_name(pool), NULL});
	snprintf(msg, sizeof msg, "delete %" PRIu32, id);
	dmsetup_message(msg);
}

/* Time one NBD connection (handshake up to NBD_OPT_GO, which opens the export) to NAME
 * on SOCK; closes it. */
static uint64_t time_connect(const char *sock, const char *name)
{
	struct nbd_handle *h = nbd_create();
	uint64_t t;

	if (h == NULL || nbd_set_export_name(h, name) < 0)
		die("nbd_create", ENOMEM);
	t = tp_now_us();
	if (nbd_connect_unix(h, sock) < 0) {
		fprintf(stderr, "bench-meta: connect %s on %s: %s\n", name, sock, nbd_get_error());
		exit(1);
	}
	t = tp_now_us() - t;
	nbd_shutdown(h, 0);
	nbd_close(h);
	return t;
}

static void sample(unsigned level, const char *kind, const char *op, uint64_t us)
{
	printf("%u\t%s\t%s\t%" PRIu64 "\n", level, kind, op, us);
}

/* Run CALL and print its time as a sample. */
#define TIMED(level, kind, op, call)                        \
	do {                                                \
		uint64_t t0_ = tp_now_us();                 \
		call;                                       \
		sample(level, kind, op, tp_now_us() - t0_); \
	} while (0)

/* The same calls in batches of BATCH of a kind (api-batch, bare-batch): every call comes
 * right after one like it, so the code it runs is warm, where in measure() each comes
 * after the others' (under TCG, cold code costs about twice as much). The API's and our
 * pool's batches take turns in going first. */
#define BATCH 10

static void api_batch(unsigned level)
{
	char name[32], parent[32];

	for (int i = 0; i < BATCH; i++) {
		snprintf(name, sizeof name, "batch-%d", i);
		TIMED(level, "api-batch", "create", api_create(name));
	}
	for (int i = 0; i < BATCH; i++) {
		snprintf(name, sizeof name, "batch-snap-%d", i);
		snprintf(parent, sizeof parent, "batch-%d", i);
		TIMED(level, "api-batch", "snapshot", api_snapshot(name, parent));
	}
	for (int i = 0; i < 2 * BATCH; i++) {
		snprintf(name, sizeof name, i < BATCH ? "batch-snap-%d" : "batch-%d", i % BATCH);
		TIMED(level, "api-batch", "remove", api_remove(name));
	}
}

static void bare_batch(unsigned level)
{
	for (uint32_t i = 0; i < BATCH; i++)
		TIMED(level, "bare-batch", "create", bare_create(next_id + i, NULL));
	for (uint32_t i = 0; i < BATCH; i++)
		TIMED(level, "bare-batch", "snapshot",
		      bare_snapshot(next_id + BATCH + i, next_id + i, NULL));
	for (uint32_t i = 0; i < 2 * BATCH; i++)
		TIMED(level, "bare-batch", "remove",
		      bare_remove(i < BATCH ? next_id + BATCH + i : next_id + i - BATCH, NULL));
}

static void measure_batches(unsigned level, unsigned samples)
{
	for (unsigned round = 0; round * BATCH < samples; round++) {
		if (round % 2 == 0 || pool == NULL)
			api_batch(level);
		if (pool != NULL)
			bare_batch(level);
		if (round % 2 == 1 && pool != NULL)
			api_batch(level);
	}
	fflush(stdout);
}

/* Fill the tenant and our pool up to LEVEL volumes each. */
static void fill(unsigned level, unsigned *have)
{
	uint64_t t0 = tp_now_us(), t1;
	char name[32];
	unsigned n = level - *have;

	for (; *have < level; (*have)++) {
		snprintf(name, sizeof name, "fill-%05u", *have);
		api_create(name);
		if (*have % 1000 == 999)
			fprintf(stderr, "bench-meta: %u volumes\n", *have + 1);
	}
	t1 = tp_now_us();
	while (pool && next_id <= level)
		bare_create(next_id++, NULL);
	if (n)
		fprintf(stderr,
		        "bench-meta: filled to %u volumes: %u API creates in %.1f s (%.0f/s), "
		        "bare creates in %.1f s\n",
		        level, n, (double)(t1 - t0) / 1e6, n / ((double)(t1 - t0) / 1e6),
		        (double)(tp_now_us() - t1) / 1e6);
	printf("%u\tapi\tfill\t%" PRIu64 "\n", level, n ? (t1 - t0) / n : 0);
}

/* One round through the API: a volume, a snapshot of it, both removed. */
static void api_round(unsigned level)
{
	TIMED(level, "api", "create", api_create("bench-origin"));
	TIMED(level, "api", "snapshot", api_snapshot("bench-snap", "bench-origin"));
	TIMED(level, "api", "remove", api_remove("bench-snap"));
	TIMED(level, "api", "remove", api_remove("bench-origin"));
}

/* The steps of one bare change as samples: bare-checks and bare-message, beside the
 * daemon's account of the same steps. */
static void step_samples(unsigned level, const char *op, const uint64_t *steps)
{
	static const char *const kinds[STEPS] = {"bare-checks", "bare-message"};

	for (int i = 0; i < STEPS; i++)
		sample(level, kinds[i], op, steps[i]);
}

/* The same on our pool, bare: thin ids A and B. */
static void bare_round(unsigned level, uint32_t a, uint32_t b)
{
	uint64_t steps[STEPS];

	TIMED(level, "bare", "create", bare_create(a, steps));
	step_samples(level, "create", steps);
	TIMED(level, "bare", "snapshot", bare_snapshot(b, a, steps));
	step_samples(level, "snapshot", steps);
	TIMED(level, "bare", "remove", bare_remove(b, steps));
	step_samples(level, "remove", steps);
	TIMED(level, "bare", "remove", bare_remove(a, steps));
	step_samples(level, "remove", steps);
}

static void measure(unsigned level, unsigned samples)
{
	for (unsigned i = 0; i < samples; i++) {
		uint32_t a = next_id, b = next_id + 1;
		uint64_t t;
		int fd, r;

		if (pool == NULL) {
			api_round(level);
			continue;
		}
		/* The API and the bare calls take turns in going first: under TCG the first
		 * calls after a switch of process find their code cold (see measure_batches),
		 * and whichever always came first would always pay for it. */
		if (i % 2 == 0) {
			api_round(level);
			bare_round(level, a, b);
		} else {
			bare_round(level, a, b);
			api_round(level);
		}

		/* And with dmsetup, every DMSETUP_EVERY rounds: under TCG each process costs
		 * a large part of a second. */
		if (i % DMSETUP_EVERY != 0)
			goto open;
		TIMED(level, "dmsetup", "create", dmsetup_create(a));
		TIMED(level, "dmsetup", "snapshot", dmsetup_snapshot(b, a));
		TIMED(level, "dmsetup", "remove", dmsetup_remove(b));
		TIMED(level, "dmsetup", "remove", dmsetup_remove(a));

		/* Opening an export: first (activation), again (already active); bare. */
	open:
		api_create("bench-open");
		sample(level, "api", "open", time_connect(nbd_sock, "bench-open"));
		sample(level, "api", "open-active", time_connect(nbd_sock, "bench-open"));
		if (handshake_sock != NULL)
			sample(level, "handshake", "open",
			       time_connect(handshake_sock, "bench-open"));
		api_remove("bench-open");
		bare_create(a, NULL);
		t = tp_now_us();
		if ((r = pool_activate_thin(pool, a, GiB, false)) < 0 ||
		    (fd = r = pool_open_thin(pool, a, O_RDWR)) < 0)
			die("bare activate", r);
		sample(level, "bare", "open", tp_now_us() - t);
		close(fd);
		bare_remove(a, NULL);
	}
	fflush(stdout);
}

int main(int argc, char **argv)
{
	struct pool_config cfg = {.loop_size = 64 * GiB, .dm_name = "tpbench"};
	struct pool_status st;
	unsigned have = 0, samples;
	char *levels, *tok, *save = NULL;
	int r;

	if (argc != 7) {
		fprintf(stderr, "usage: bench-meta ADMIN_SOCK TENANT NBD_SOCK STATE_DIR LEVELS "
		                "SAMPLES\n");
		return 2;
	}
	admin_sock = argv[1];
	tenant = argv[2];
	nbd_sock = argv[3];
	cfg.state_dir = argv[4];
	levels = argv[5];
	samples = (unsigned)strtoul(argv[6], NULL, 10);
	handshake_sock = getenv("BENCH_HANDSHAKE_SOCK");
	log_init("bench-meta", false, LOG_WARNING);

	/* STATE_DIR "-": no pool of our own, the API alone (bench/host-meta.sh). */
	if (strcmp(cfg.state_dir, "-") != 0) {
		if ((r = pool_open(&cfg, &pool)) < 0)
			die("pool_open", r);
		if ((r = pool_get_status(pool, &st)) < 0)
			die("pool status", r);
	}

	for (tok = strtok_r(levels, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		unsigned level = (unsigned)strtoul(tok, NULL, 10);

		fill(level, &have);
		fprintf(stderr, "bench-meta: %u samples at %u volumes\n", samples, level);
		measure(level, samples);
		measure_batches(level, samples);
	}
	if (api_fd >= 0)
		close(api_fd);
	pool_close(pool);
	return 0;
}
