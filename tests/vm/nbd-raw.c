/* nbd-raw: a raw NBD client for the guest tests, for what libnbd's tools will not send:
 * export names that are empty, 5000 bytes long or hold a NUL, and requests that the
 * server's own flags forbid (a write to a read-only export). It speaks fixed newstyle
 * with simple replies only, and prints each answer as one line, so that a test can
 * compare the server's answers byte for byte.
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
 * "write: ok" or "write: error N" (the NBD error number, e.g. 1 = EPERM).
 * Exits 0 when the conversation ran, 2 on a protocol or I/O failure. */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Largest request and reply this client handles. */
#define MAX_IO   (32 * 1024 * 1024)
#define MAX_NAME 65536

static _Noreturn void die(const char *what)
{
	fprintf(stderr, "nbd-raw: %s: %s\n", what, errno ? strerror(errno) : "protocol error");
	exit(2);
}

static void put(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("write");
		p += n;
		len -= (size_t)n;
	}
}

static void get(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			errno = 0;
		if (n <= 0)
			die("read");
		p += n;
		len -= (size_t)n;
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

/* One transmission request and its simple reply. */
static void request(int fd, const char *what, uint16_t type, uint16_t flags, uint64_t off,
                    uint32_t len)
{
	static uint64_t handle;
	CLEANUP_FREE char *buf = NULL;
	uint32_t err;

	if ((type == NBD_CMD_READ || type == NBD_CMD_WRITE) && len > MAX_IO)
		die("request too large");
	buf = malloc(len ? len : 1);
	if (buf == NULL)
		die("malloc");
	put32(fd, NBD_REQ_MAGIC);
	put16(fd, flags);
	put16(fd, type);
	put64(fd, ++handle);
	put64(fd, off);
	put32(fd, len);
	if (type == NBD_CMD_WRITE) {
		memset(buf, 0xa5, len);
		put(fd, buf, len);
	}
	if (get32(fd) != NBD_SIMPLE_MAGIC)
		die("bad reply magic");
	err = get32(fd);
	if (get64(fd) != handle)
		die("reply to another request");
	if (err == 0 && type == NBD_CMD_READ)
		get(fd, buf, len);
	if (err == 0)
		printf("%s: ok\n", what);
	else
		printf("%s: error %" PRIu32 "\n", what, err);
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
		    {"write", NBD_CMD_WRITE, 0, true},
		    {"trim", NBD_CMD_TRIM, 0, true},
		    {"zero", NBD_CMD_WRITE_ZEROES, 0, true},
		    {"fastzero", NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_FAST_ZERO, true},
		    {"flush", NBD_CMD_FLUSH, 0, false},
		};
		unsigned long long off = 0, n = 0;
		size_t c;

		for (c = 0; c < ARRAY_SIZE(cmds) && strcmp(argv[i], cmds[c].name) != 0; c++)
			;
		if (c == ARRAY_SIZE(cmds))
			die("unknown request");
		if (cmds[c].ranged) {
			char *end;

			if (i + 2 >= argc)
				die("request needs OFFSET LENGTH");
			errno = 0;
			off = strtoull(argv[++i], &end, 0);
			if (errno || *end)
				die("bad offset");
			n = strtoull(argv[++i], &end, 0);
			if (errno || *end || n > UINT32_MAX)
				die("bad length");
		}
		request(fd, cmds[c].name, cmds[c].type, cmds[c].flags, off, (uint32_t)n);
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
