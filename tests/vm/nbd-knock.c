/* nbd-knock: connect to NBD servers' Unix sockets and wait for each one's greeting, for
 * the tests and benches of nbdkit on demand, where exec is too slow to run a client per
 * socket.
 *
 *   nbd-knock [-t TIMEOUT_MS] SOCKET...
 *
 * For each SOCKET in turn: connect, read the fixed newstyle greeting ("NBDMAGIC",
 * "IHAVEOPT" and the server's flags) within TIMEOUT_MS (default 60000), then end the
 * handshake politely (client flags, NBD_OPT_ABORT) and close. Prints one line per
 * socket: "SOCKET ok MICROSECONDS" (from connect to the whole greeting) or
 * "SOCKET fail REASON". Exits 0 if every socket answered, 1 if one did not, 2 on bad
 * usage. */
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define NBD_OPT_ABORT 2

static int64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Read exactly SIZE bytes from FD before DEADLINE_US. */
static const char *read_all(int fd, void *buf, size_t size, int64_t deadline_us)
{
	size_t got = 0;

	while (got < size) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int64_t left = (deadline_us - now_us()) / 1000;
		ssize_t n;

		if (left <= 0 || poll(&p, 1, (int)left) == 0)
			return "timeout";
		n = read(fd, (char *)buf + got, size - got);
		if (n == 0)
			return "closed";
		if (n < 0 && errno != EINTR)
			return strerror(errno);
		if (n > 0)
			got += (size_t)n;
	}
	return NULL;
}

static int knock(const char *path, int timeout_ms)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	unsigned char greeting[18];
	struct {
		uint32_t flags;
		uint64_t magic;
		uint32_t option, length;
	} __attribute__((packed))
	abort_opt = {htobe32(3), htobe64(0x49484156454F5054ULL), htobe32(NBD_OPT_ABORT), 0};
	const char *why = NULL;
	int64_t start;
	ssize_t sent;
	int fd;

	if (strlen(path) >= sizeof sa.sun_path) {
		printf("%s fail path too long\n", path);
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		printf("%s fail socket: %s\n", path, strerror(errno));
		return -1;
	}
	start = now_us();
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		why = strerror(errno);
	if (why == NULL)
		why = read_all(fd, greeting, sizeof greeting, start + (int64_t)timeout_ms * 1000);
	if (why == NULL &&
	    (memcmp(greeting, "NBDMAGIC", 8) != 0 || memcmp(greeting + 8, "IHAVEOPT", 8) != 0))
		why = "not an NBD newstyle greeting";
	if (why != NULL) {
		printf("%s fail %s\n", path, why);
		close(fd);
		return -1;
	}
	printf("%s ok %lld\n", path, (long long)(now_us() - start));
	/* Whether the abort arrives, and the server's answer to it, do not matter. */
	sent = write(fd, &abort_opt, sizeof abort_opt);
	(void)sent;
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	int timeout_ms = 60000, failed = 0, i = 1;

	if (argc > 2 && strcmp(argv[1], "-t") == 0) {
		timeout_ms = atoi(argv[2]);
		i = 3;
	}
	if (i >= argc || timeout_ms <= 0) {
		fprintf(stderr, "usage: nbd-knock [-t TIMEOUT_MS] SOCKET...\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (; i < argc; i++)
		failed |= knock(argv[i], timeout_ms) < 0;
	return failed ? 1 : 0;
}
