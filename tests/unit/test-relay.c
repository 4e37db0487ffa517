/* client/relay.c on the host. The test stands in for the kernel's NBD client on one end of
 * a socketpair; the relay carries its requests to a real nbdkit serving a file, started
 * with socket activation on a listening socket the test holds across restarts, as
 * thinproxyd's supervisor holds nbd.sock. nbdkit is killed with a mixed load of reads and
 * writes of 64 KiB to 1 MiB outstanding, 32 or 64 deep, and every request must be answered
 * once, reads with the data the file holds, writes with their data in the file. A relay
 * that stops reading replies while it resends (nbdkit stops reading requests while its
 * replies cannot be written) answers nothing again: the tests fail after HANG_MS. */
#include <check.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/nbd.h>
#include <linux/sockios.h>

#include "tp-cleanup.h"
#include "../../client/handshake.h"
#include "../../client/keeper.h"
#include "../../client/relay.h"

/* Reads go to the first half of the image, which holds version 0 of the pattern below;
 * writes to the second half, each round with a version of its own. */
#define IMAGE_SIZE (64u << 20)
#define WRITE_BASE (IMAGE_SIZE / 2)
/* The hang these tests catch: nothing answered for this long. */
#define HANG_MS 60000

static char dir[32];
static char image[PATH_MAX];
static struct sockaddr_un sock = {.sun_family = AF_UNIX}; /* nbdkit's */
static int listen_fd = -1, kernel_fd = -1;
static pid_t nbdkit_pid;
static struct relay *relay;

/* What the relay logged about its reconnects, through keeper_log below: how many, and how
 * many requests they resent in all. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t log_cond = PTHREAD_COND_INITIALIZER;
static unsigned reconnects;
static size_t resent;

/* The keeper's log, which relay.c writes to: printed, and its reconnects counted. */
void keeper_log(int priority, const char *fmt, ...)
{
	char line[512];
	const char *s;
	long long ms;
	int attempts;
	size_t n;
	va_list ap;

	(void)priority;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	fprintf(stderr, "relay: %s\n", line);
	s = strstr(line, "reconnected after ");
	if (s != NULL && sscanf(s, "reconnected after %lld ms (%d attempts), %zu requests resent",
	                        &ms, &attempts, &n) == 3) {
		pthread_mutex_lock(&log_lock);
		reconnects++;
		resent += n;
		pthread_cond_broadcast(&log_cond);
		pthread_mutex_unlock(&log_lock);
	}
}

/* Wait until the relay has logged reconnect number N. */
static void wait_reconnects(unsigned n)
{
	struct timespec until;
	unsigned got;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += HANG_MS / 1000;
	pthread_mutex_lock(&log_lock);
	while (reconnects < n)
		if (pthread_cond_timedwait(&log_cond, &log_lock, &until) == ETIMEDOUT)
			break;
	got = reconnects;
	pthread_mutex_unlock(&log_lock);
	ck_assert_msg(got >= n, "the relay logged %u reconnects, not %u", got, n);
}

/* LEN bytes of version VERSION of the image at OFFSET: 8-byte words naming both, so that
 * data from the wrong place or of the wrong round never matches. */
static void fill(unsigned char *buf, uint64_t offset, uint32_t len, uint64_t version)
{
	for (uint32_t i = 0; i < len; i += 8) {
		uint64_t w = ((offset + i) * 0x9e3779b97f4a7c15ull) ^ (version << 48);

		memcpy(buf + i, &w, sizeof w);
	}
}

/* Start nbdkit on the listening socket, as thinproxyd's supervisor does. */
static void start_nbdkit(void)
{
	char *argv[] = {"nbdkit", "-f", "--exit-with-parent", "file", image, NULL};
	char listen_pid[32], *envp[] = {"LISTEN_FDS=1", listen_pid, NULL, NULL};
	static char path[PATH_MAX + 8];

	snprintf(path, sizeof path, "PATH=%s", getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
	envp[2] = path;
	nbdkit_pid = fork();
	ck_assert_int_ge(nbdkit_pid, 0);
	if (nbdkit_pid == 0) {
		/* Socket activation: the listening socket as fd 3, and our own pid. */
		if (listen_fd == 3 ? fcntl(3, F_SETFD, 0) < 0 : dup2(listen_fd, 3) < 0)
			_exit(127);
		snprintf(listen_pid, sizeof listen_pid, "LISTEN_PID=%d", (int)getpid());
		execvpe(argv[0], argv, envp);
		_exit(127);
	}
}

static void kill_nbdkit(void)
{
	ck_assert_int_eq(kill(nbdkit_pid, SIGKILL), 0);
	ck_assert_int_eq(waitpid(nbdkit_pid, NULL, 0), nbdkit_pid);
	nbdkit_pid = 0;
}

/* Connect to nbdkit and negotiate: the relay's reconnect, and its first connection. */
static int connect_server(void *opaque, int *ret_fd)
{
	char reason[HANDSHAKE_REASON_MAX];
	struct nbd_export e;
	int fd, r;

	(void)opaque;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sock, sizeof sock) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	r = nbd_handshake(fd, "vol", HANG_MS, &e, reason, sizeof reason);
	if (r < 0) {
		close(fd);
		return r;
	}
	*ret_fd = fd;
	return 0;
}

static void setup(void)
{
	struct relay_config cfg = {
	    .dead_timeout = 600, .reconnect = connect_server, .name = "nbd0"};
	CLEANUP_FREE unsigned char *buf = malloc(1u << 20);
	int pair[2], fd;

	ck_assert_ptr_nonnull(buf);
	snprintf(dir, sizeof dir, "/tmp/tp-relay.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(image, sizeof image, "%s/image", dir);
	snprintf(sock.sun_path, sizeof sock.sun_path, "%s/nbd.sock", dir);
	fd = open(image, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	for (uint64_t off = 0; off < WRITE_BASE; off += 1u << 20) {
		fill(buf, off, 1u << 20, 0);
		ck_assert_int_eq(pwrite(fd, buf, 1u << 20, (off_t)off), 1 << 20);
	}
	ck_assert_int_eq(ftruncate(fd, IMAGE_SIZE), 0);
	close(fd);

	listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(listen_fd, 0);
	ck_assert_int_eq(bind(listen_fd, (struct sockaddr *)&sock, sizeof sock), 0);
	ck_assert_int_eq(listen(listen_fd, 16), 0);
	start_nbdkit();

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
	kernel_fd = pair[0];
	cfg.kernel_fd = pair[1];
	ck_assert_int_eq(connect_server(NULL, &cfg.server_fd), 0);
	ck_assert_int_eq(relay_start(&cfg, &relay), 0);
}

static void teardown(void)
{
	relay_stop(relay);
	close(kernel_fd);
	if (nbdkit_pid > 0)
		kill_nbdkit();
	close(listen_fd);
	unlink(sock.sun_path);
	unlink(image);
	rmdir(dir);
}

/* One request of the kernel's, and what it must come back with. */
struct request {
	uint16_t cmd;
	uint64_t offset;
	uint32_t len;
	unsigned char *data; /* a write's data, or what a read must return */
	bool answered;
};

struct load {
	struct request *reqs;
	size_t n, answered;
	int send_error; /* the sender's -errno */
	pthread_t sender;
};

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* N requests, reads and writes in turn, of 64 KiB to 1 MiB, none overlapping a write;
 * the writes' data is version VERSION of the image. */
static void make_load(struct load *l, size_t n, uint64_t version)
{
	uint64_t read_at = 0, write_at = WRITE_BASE;

	memset(l, 0, sizeof *l);
	l->reqs = calloc(n, sizeof *l->reqs);
	ck_assert_ptr_nonnull(l->reqs);
	l->n = n;
	for (size_t i = 0; i < n; i++) {
		struct request *q = &l->reqs[i];

		q->cmd = i % 2 == 0 ? NBD_CMD_READ : NBD_CMD_WRITE;
		q->len = (64u << 10) << (i / 2 % 5);
		q->offset = q->cmd == NBD_CMD_READ ? read_at : write_at;
		*(q->cmd == NBD_CMD_READ ? &read_at : &write_at) += q->len;
		q->data = malloc(q->len);
		ck_assert_ptr_nonnull(q->data);
		fill(q->data, q->offset, q->len, q->cmd == NBD_CMD_READ ? 0 : version);
	}
	ck_assert_uint_le(read_at, WRITE_BASE);
	ck_assert_uint_le(write_at, IMAGE_SIZE);
}

static void free_load(struct load *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->reqs[i].data);
	free(l->reqs);
}

/* The sender: every request of the load, as the kernel sends them, handle = index. */
static void *send_load(void *arg)
{
	struct load *l = arg;

	for (size_t i = 0; i < l->n && l->send_error == 0; i++) {
		const struct request *q = &l->reqs[i];
		unsigned char h[28];
		uint32_t v32;
		uint64_t v64;

		v32 = htobe32(NBD_REQUEST_MAGIC);
		memcpy(h, &v32, 4);
		v32 = htobe32(q->cmd);
		memcpy(h + 4, &v32, 4);
		v64 = htobe64(i);
		memcpy(h + 8, &v64, 8);
		v64 = htobe64(q->offset);
		memcpy(h + 16, &v64, 8);
		v32 = htobe32(q->len);
		memcpy(h + 24, &v32, 4);
		l->send_error = write_all(kernel_fd, h, sizeof h);
		if (l->send_error == 0 && q->cmd == NBD_CMD_WRITE)
			l->send_error = write_all(kernel_fd, q->data, q->len);
	}
	return NULL;
}

static void start_sending(struct load *l)
{
	ck_assert_int_eq(pthread_create(&l->sender, NULL, send_load, l), 0);
}

/* Read LEN bytes from the relay, failing if nothing comes for HANG_MS. */
static void read_relay(struct load *l, void *buf, size_t len)
{
	char *p = buf;

	while (len > 0) {
		struct pollfd pfd = {.fd = kernel_fd, .events = POLLIN};
		ssize_t n;

		ck_assert_msg(poll(&pfd, 1, HANG_MS) == 1,
		              "the relay answered nothing for %d s with %zu of %zu requests "
		              "outstanding",
		              HANG_MS / 1000, l->n - l->answered, l->n);
		n = read(kernel_fd, p, len);
		ck_assert_msg(n > 0, "the relay closed the kernel's socket: %s",
		              n < 0 ? strerror(errno) : "end of file");
		p += n;
		len -= (size_t)n;
	}
}

/* Read replies until COUNT requests of L are answered; each must be a success, for a
 * request of L not answered before, and a read's data must be right. */
static void read_replies(struct load *l, size_t count)
{
	CLEANUP_FREE unsigned char *buf = malloc(1u << 20);

	ck_assert_ptr_nonnull(buf);
	while (l->answered < count) {
		unsigned char reply[16];
		uint32_t magic, error;
		uint64_t handle;
		struct request *q;

		read_relay(l, reply, sizeof reply);
		memcpy(&magic, reply, 4);
		memcpy(&error, reply + 4, 4);
		memcpy(&handle, reply + 8, 8);
		ck_assert_uint_eq(be32toh(magic), NBD_REPLY_MAGIC);
		handle = be64toh(handle);
		ck_assert_uint_lt(handle, l->n);
		q = &l->reqs[handle];
		ck_assert_msg(!q->answered, "request %llu answered twice",
		              (unsigned long long)handle);
		ck_assert_msg(be32toh(error) == 0, "request %llu failed: error %u",
		              (unsigned long long)handle, be32toh(error));
		if (q->cmd == NBD_CMD_READ) {
			read_relay(l, buf, q->len);
			ck_assert_msg(memcmp(buf, q->data, q->len) == 0,
			              "read of %u bytes at %llu returned the wrong data", q->len,
			              (unsigned long long)q->offset);
		}
		q->answered = true;
		l->answered++;
	}
}

/* The sender has sent every request of L. */
static void join_sender(struct load *l)
{
	ck_assert_int_eq(pthread_join(l->sender, NULL), 0);
	ck_assert_int_eq(l->send_error, 0);
}

/* The file holds what every write of L wrote. */
static void check_writes(const struct load *l)
{
	CLEANUP_FREE unsigned char *buf = malloc(1u << 20);
	CLEANUP_CLOSE int fd = open(image, O_RDONLY | O_CLOEXEC);

	ck_assert_ptr_nonnull(buf);
	ck_assert_int_ge(fd, 0);
	for (size_t i = 0; i < l->n; i++) {
		const struct request *q = &l->reqs[i];

		if (q->cmd != NBD_CMD_WRITE)
			continue;
		ck_assert_int_eq(pread(fd, buf, q->len, (off_t)q->offset), (ssize_t)q->len);
		ck_assert_msg(memcmp(buf, q->data, q->len) == 0,
		              "write of %u bytes at %llu is not in the file", q->len,
		              (unsigned long long)q->offset);
	}
}

static unsigned reconnects_so_far(size_t *ret_resent)
{
	unsigned n;

	pthread_mutex_lock(&log_lock);
	n = reconnects;
	*ret_resent = resent;
	pthread_mutex_unlock(&log_lock);
	return n;
}

/* Kill nbdkit, let the relay take DEPTH requests while it is away, and start it again:
 * the relay sends all of them on the new connection, once each, and every one is
 * answered. */
static void restart_with_requests_queued(size_t depth, uint64_t version)
{
	size_t resent_before, resent_after;
	unsigned before = reconnects_so_far(&resent_before);
	struct load l;
	int queued = -1;

	kill_nbdkit();
	make_load(&l, depth, version);
	start_sending(&l);
	join_sender(&l);
	/* Wait until the relay has read everything the sender wrote. */
	for (int i = 0; i < HANG_MS / 10; i++) {
		ck_assert_int_eq(ioctl(kernel_fd, SIOCOUTQ, &queued), 0);
		if (queued == 0)
			break;
		usleep(10000);
	}
	ck_assert_int_eq(queued, 0);
	start_nbdkit();
	read_replies(&l, l.n);
	check_writes(&l);
	wait_reconnects(before + 1);
	ck_assert_uint_eq(reconnects_so_far(&resent_after), before + 1);
	ck_assert_uint_eq(resent_after - resent_before, depth);
	free_load(&l);
}

/* Send DEPTH requests, kill nbdkit as soon as the first is answered, and start it again:
 * whatever was outstanding is sent again, and every request is answered. */
static void kill_with_requests_in_flight(size_t depth, uint64_t version)
{
	size_t resent_before;
	unsigned before = reconnects_so_far(&resent_before);
	struct load l;

	make_load(&l, depth, version);
	start_sending(&l);
	read_replies(&l, 1);
	kill_nbdkit();
	start_nbdkit();
	read_replies(&l, l.n);
	join_sender(&l);
	check_writes(&l);
	wait_reconnects(before + 1);
	free_load(&l);
}

START_TEST(resends_32_mixed_requests_queued_across_a_restart)
{
	restart_with_requests_queued(32, 1);
	restart_with_requests_queued(32, 2);
}
END_TEST

START_TEST(resends_64_mixed_requests_queued_across_a_restart)
{
	restart_with_requests_queued(64, 1);
	restart_with_requests_queued(64, 2);
}
END_TEST

START_TEST(answers_mixed_requests_in_flight_when_nbdkit_is_killed)
{
	for (uint64_t round = 1; round <= 4; round++)
		kill_with_requests_in_flight(round % 2 ? 32 : 64, round);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("relay");
	TCase *tc = tcase_create("relay");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	/* Each test waits HANG_MS at most for each reply, and fails then. */
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, resends_32_mixed_requests_queued_across_a_restart);
	tcase_add_test(tc, resends_64_mixed_requests_queued_across_a_restart);
	tcase_add_test(tc, answers_mixed_requests_in_flight_when_nbdkit_is_killed);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
