/* nbd-raw: a raw NBD client for the guest tests, for what libnbd's tools will not send:
 * export names that are empty, 5000 bytes long or hold a NUL, requests that the server's
 * own flags forbid (a write to a read-only export), and requests that break the protocol
 * (unknown types and flags, any offset and length, a payload cut short). It speaks fixed
 * newstyle with simple replies only, and prints each answer as one line, so that a test
 * can compare the server's answers byte for byte.
 *
 *   nbd-raw SOCKET NAME [REQUEST...]
 *
 * NAME is taken literally, or "hex:HHHH..." for any bytes (NUL included). It is sent in
 * NBD_OPT_GO, asking for block sizes and the description; the line printed is
 * "go: ack size=N flags=0xF min=N preferred=N max=N description=..." or
 * "go: error 0xTYPE length N" (the server's message, if any, is left out: it may name
 * the export). After an ack each REQUEST is sent and answered in turn:
 * "write OFF LEN" (bytes 0xa5), "read OFF LEN", "trim OFF LEN", "zero OFF LEN",
 * "fastzero OFF LEN" (NBD_CMD_FLAG_FAST_ZERO, holes allowed), "flush", printing
 * "write: ok" or "write: error N" (the NBD error number, e.g. 1 = EPERM); "dump OFF LEN"
 * is a read that prints the data in hex after the "ok". Two more send what no client
 * should: "cmd TYPE FLAGS OFF LEN" is a request of any type and flags (LEN bytes 0xa5
 * follow only if TYPE is 1, a write), and "short OFF LEN SENT" is a write whose header
 * announces LEN bytes of which only SENT follow before this client hangs up, printing
 * "short: sent". Lengths are not limited here: payloads and read data are streamed. If
 * the server closes the connection instead of answering a request, "NAME: closed" is
 * printed and no further request is sent.
 * Exits 0 when the conversation ran, 2 on a protocol or I/O failure. */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tp-cleanup.h"

#define NBD_MAGIC        UINT64_C(0x4e42444d41474943) /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC   UINT64_C(0x49484156454f5054) /* "IHAVEOPT" */
#define NBD_REP_MAGIC    UINT64_C(0x3e889045565a9)
#define NBD_REQ_MAGIC    UINT32_C(0x25609513)
#define NBD_SIMPLE_MAGIC UINT32_C(0x67446698)

#define NBD_FLAG_FIXED_NEWSTYLE 1
#define NBD_FLAG_NO_ZEROES      2
#define NBD_OPT_ABORT           2
#define NBD_OPT_GO              7
#define NBD_REP_ACK             1
#define NBD_REP_INFO            3
#define NBD_INFO_EXPORT         0
#define NBD_INFO_DESCRIPTION    2
#define NBD_INFO_BLOCK_SIZE     3

#define NBD_CMD_READ           0
#define NBD_CMD_WRITE          1
#define NBD_CMD_DISC           2
#define NBD_CMD_FLUSH          3
#define NBD_CMD_TRIM           4
#define NBD_CMD_WRITE_ZEROES   6
#define NBD_CMD_FLAG_FAST_ZERO 16

/* Payloads and read data go through a buffer of this size. */
#define CHUNK    (1024 * 1024)
#define MAX_NAME 65536

static _Noreturn void die(const char *what)
{
	fprintf(stderr, "nbd-raw: %s: %s\n", what, errno ? strerror(errno) : "protocol error");
	exit(2);
}

/* Send LEN bytes of BUF. False if the server has closed the connection. */
static bool send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
			return false;
		if (n <= 0)
			die("write");
		p += n;
		len -= (size_t)n;
	}
	return true;
}

static void put(int fd, const void *buf, size_t len)
{
	if (!send_all(fd, buf, len))
		die("write");
}

/* Receive LEN bytes into BUF. False if the connection ends before the first byte. */
static bool recv_all(int fd, void *buf, size_t len)
{
	char *p = buf;
	bool first = true;

	while (len > 0) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (first && (n == 0 || (n < 0 && errno == ECONNRESET)))
			return false;
		if (n == 0)
			errno = 0;
		if (n <= 0)
			die("read");
		first = false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

static void get(int fd, void *buf, size_t len)
{
	if (!recv_all(fd, buf, len)) {
		errno = 0;
		die("read");
	}
}

static uint64_t get64(int fd)
{
	uint64_t v;

	get(fd, &v, sizeof v);
	return be64toh(v);
}

static uint32_t get32(int fd)
{
	uint32_t v;

	get(fd, &v, sizeof v);
	return be32toh(v);
}

static uint16_t get16(int fd)
{
	uint16_t v;

	get(fd, &v, sizeof v);
	return be16toh(v);
}

static void put64(int fd, uint64_t v)
{
	v = htobe64(v);
	put(fd, &v, sizeof v);
}

static void put32(int fd, uint32_t v)
{
	v = htobe32(v);
	put(fd, &v, sizeof v);
}

static void put16(int fd, uint16_t v)
{
	v = htobe16(v);
	put(fd, &v, sizeof v);
}

/* NAME as bytes: literal, or decoded from "hex:...". */
static size_t decode_name(const char *arg, char *buf)
{
	size_t n = 0;

	if (strncmp(arg, "hex:", 4) != 0) {
		n = strlen(arg);
		if (n > MAX_NAME)
			die("name too long");
		memcpy(buf, arg, n);
		return n;
	}
	for (arg += 4; arg[0] && arg[1] && n < MAX_NAME; arg += 2) {
		unsigned v;

		if (sscanf(arg, "%2x", &v) != 1)
			die("bad hex name");
		buf[n++] = (char)v;
	}
	if (*arg != '\0')
		die("bad hex name");
	return n;
}

static int connect_unix(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(path) >= sizeof sa.sun_path)
		die("socket path too long");
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		die("connect");
	return fd;
}

/* Handshake and NBD_OPT_GO NAME. Returns true on an ack. */
static bool go(int fd, const char *name, size_t len)
{
	uint64_t size = 0;
	uint32_t min = 0, pref = 0, max = 0;
	uint16_t flags, tflags = 0;
	char desc[4097] = "";

	if (get64(fd) != NBD_MAGIC || get64(fd) != NBD_OPTS_MAGIC)
		die("not a newstyle server");
	flags = get16(fd);
	if (!(flags & NBD_FLAG_FIXED_NEWSTYLE))
		die("not a fixed newstyle server");
	put32(fd, flags & (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES));

	put64(fd, NBD_OPTS_MAGIC);
	put32(fd, NBD_OPT_GO);
	put32(fd, (uint32_t)(4 + len + 2 + 2 * 2));
	put32(fd, (uint32_t)len);
	put(fd, name, len);
	put16(fd, 2);
	put16(fd, NBD_INFO_BLOCK_SIZE);
	put16(fd, NBD_INFO_DESCRIPTION);

	for (;;) {
		uint32_t type, rlen;

		if (get64(fd) != NBD_REP_MAGIC || get32(fd) != NBD_OPT_GO)
			die("bad option reply");
		type = get32(fd);
		rlen = get32(fd);
		if (type & UINT32_C(0x80000000)) {
			CLEANUP_FREE char *skip = malloc(rlen ? rlen : 1);

			if (skip == NULL)
				die("malloc");
			get(fd, skip, rlen);
			printf("go: error 0x%08" PRIx32 " length %" PRIu32 "\n", type, rlen);
			return false;
		}
		if (type == NBD_REP_ACK) {
			printf("go: ack size=%" PRIu64 " flags=0x%04x min=%" PRIu32
			       " preferred=%" PRIu32 " max=%" PRIu32 " description=%s\n",
			       size, tflags, min, pref, max, desc);
			return true;
		}
		if (type != NBD_REP_INFO || rlen < 2 || rlen > sizeof desc + 1)
			die("unexpected option reply");
		switch (get16(fd)) {
		case NBD_INFO_EXPORT:
			if (rlen != 12)
				die("bad NBD_INFO_EXPORT");
			size = get64(fd);
			tflags = get16(fd);
			break;
		case NBD_INFO_BLOCK_SIZE:
			if (rlen != 14)
				die("bad NBD_INFO_BLOCK_SIZE");
			min = get32(fd);
			pref = get32(fd);
			max = get32(fd);
			break;
		case NBD_INFO_DESCRIPTION:
			get(fd, desc, rlen - 2);
			desc[rlen - 2] = '\0';
			break;
		default: {
			char skip[4096];

			get(fd, skip, rlen - 2);
		}
		}
	}
}

/* Put the request header; then the write payload, LEN (of which SENT) bytes 0xa5 for
 * a write. False if the server closed the connection meanwhile. */
static bool send_request(int fd, uint16_t type, uint16_t flags, uint64_t handle, uint64_t off,
                         uint32_t len, uint64_t sent)
{
	static char buf[CHUNK];
	struct {
		uint32_t magic;
		uint16_t flags, type;
		uint64_t handle, off;
		uint32_t len;
	} __attribute__((packed)) req = {htobe32(NBD_REQ_MAGIC), htobe16(flags), htobe16(type),
	                                 htobe64(handle),        htobe64(off),   htobe32(len)};

	if (!send_all(fd, &req, sizeof req))
		return false;
	if (type != NBD_CMD_WRITE)
		return true;
	memset(buf, 0xa5, sizeof buf);
	while (sent > 0) {
		size_t n = sent < sizeof buf ? (size_t)sent : sizeof buf;

		if (!send_all(fd, buf, n))
			return false;
		sent -= n;
	}
	return true;
}

/* One transmission request and its simple reply; false if the server closed the
 * connection instead of answering. */
static bool request(int fd, const char *what, uint16_t type, uint16_t flags, uint64_t off,
                    uint32_t len, bool dump)
{
	static uint64_t handle;
	static char buf[CHUNK];
	uint32_t magic, err;

	if (!send_request(fd, type, flags, ++handle, off, len, len) ||
	    !recv_all(fd, &magic, sizeof magic)) {
		printf("%s: closed\n", what);
		return false;
	}
	if (be32toh(magic) != NBD_SIMPLE_MAGIC)
		die("bad reply magic");
	err = get32(fd);
	if (get64(fd) != handle)
		die("reply to another request");
	if (err != 0) {
		printf("%s: error %" PRIu32 "\n", what, err);
		return true;
	}
	printf("%s: ok%s", what, dump ? " " : "");
	for (uint32_t left = type == NBD_CMD_READ ? len : 0; left > 0;) {
		uint32_t n = left < sizeof buf ? left : sizeof buf;

		get(fd, buf, n);
		for (uint32_t j = 0; dump && j < n; j++)
			printf("%02x", (unsigned char)buf[j]);
		left -= n;
	}
	printf("\n");
	return true;
}

/* The number at ARGV[I], at most MAX. */
static uint64_t number(char **argv, int i, uint64_t max, const char *what)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(argv[i], &end, 0);
	if (errno || *end || end == argv[i] || v > max)
		die(what);
	return v;
}

int main(int argc, char **argv)
{
	static char name[MAX_NAME];
	CLEANUP_CLOSE int fd = -1;
	size_t len;
	int i;

	if (argc < 3) {
		fprintf(stderr, "usage: nbd-raw SOCKET NAME [REQUEST...]\n");
		return 2;
	}
	len = decode_name(argv[2], name);
	/* A server that hangs up shows as EPIPE, not as a signal. */
	signal(SIGPIPE, SIG_IGN);
	fd = connect_unix(argv[1]);
	if (!go(fd, name, len)) {
		put64(fd, NBD_OPTS_MAGIC);
		put32(fd, NBD_OPT_ABORT);
		put32(fd, 0);
		return 0;
	}
	for (i = 3; i < argc; i++) {
		static const struct {
			const char *name;
			uint16_t type, flags;
			bool ranged;
		} cmds[] = {
		    {"read", NBD_CMD_READ, 0, true},
		    {"dump", NBD_CMD_READ, 0, true},
		    {"write", NBD_CMD_WRITE, 0, true},
		    {"trim", NBD_CMD_TRIM, 0, true},
		    {"zero", NBD_CMD_WRITE_ZEROES, 0, true},
		    {"fastzero", NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_FAST_ZERO, true},
		    {"flush", NBD_CMD_FLUSH, 0, false},
		};
		uint64_t off = 0, n = 0;
		uint16_t type, flags;
		size_t c;

		if (strcmp(argv[i], "cmd") == 0 || strcmp(argv[i], "short") == 0) {
			bool is_cmd = argv[i][0] == 'c';

			if (i + (is_cmd ? 4 : 3) >= argc)
				die("cmd needs TYPE FLAGS OFFSET LENGTH, short OFFSET LENGTH SENT");
			type = is_cmd ? (uint16_t)number(argv, ++i, UINT16_MAX, "bad type")
			              : NBD_CMD_WRITE;
			flags = is_cmd ? (uint16_t)number(argv, ++i, UINT16_MAX, "bad flags") : 0;
			off = number(argv, ++i, UINT64_MAX, "bad offset");
			n = number(argv, ++i, UINT32_MAX, "bad length");
			if (is_cmd) {
				if (!request(fd, "cmd", type, flags, off, (uint32_t)n, false))
					return 0;
				continue;
			}
			/* Hang up half-way through the payload, without NBD_CMD_DISC. */
			send_request(fd, type, flags, 1000000, off, (uint32_t)n,
			             number(argv, ++i, n, "bad SENT"));
			printf("short: sent\n");
			return 0;
		}
		for (c = 0; c < ARRAY_SIZE(cmds) && strcmp(argv[i], cmds[c].name) != 0; c++)
			;
		if (c == ARRAY_SIZE(cmds))
			die("unknown request");
		if (cmds[c].ranged) {
			if (i + 2 >= argc)
				die("request needs OFFSET LENGTH");
			off = number(argv, ++i, UINT64_MAX, "bad offset");
			n = number(argv, ++i, UINT32_MAX, "bad length");
		}
		if (!request(fd, cmds[c].name, cmds[c].type, cmds[c].flags, off, (uint32_t)n,
		             c == 1))
			return 0;
	}
	/* NBD_CMD_DISC has no reply. */
	put32(fd, NBD_REQ_MAGIC);
	put16(fd, 0);
	put16(fd, NBD_CMD_DISC);
	put64(fd, 0);
	put64(fd, 0);
	put32(fd, 0);
	return 0;
}
