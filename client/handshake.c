/* The NBD fixed-newstyle handshake, client side (see handshake.h). */
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <linux/nbd.h>

#include "handshake.h"

/* One handshake: the socket, its deadline, and where the reason of a failure goes. */
struct hs {
	int fd;
	struct timespec deadline;
	char *reason;
	size_t reason_len;
};

/* Write the reason for a failure and return R. */
static int fail(struct hs *h, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(struct hs *h, int r, const char *fmt, ...)
{
	va_list ap;

	if (h->reason_len > 0) {
		va_start(ap, fmt);
		vsnprintf(h->reason, h->reason_len, fmt, ap);
		va_end(ap);
	}
	return r;
}

/* Milliseconds left until the deadline, at least 0. */
static int remaining_ms(const struct hs *h)
{
	struct timespec now;
	int64_t ms;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (int64_t)(h->deadline.tv_sec - now.tv_sec) * 1000 +
	     (h->deadline.tv_nsec - now.tv_nsec) / 1000000;
	return ms < 0 ? 0 : ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* Wait until FD is ready for EVENTS; 0, -ETIMEDOUT or -errno. */
static int wait_fd(struct hs *h, short events)
{
	struct pollfd p = {.fd = h->fd, .events = events};
	int n;

	do
		n = poll(&p, 1, remaining_ms(h));
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -ETIMEDOUT;
	return 0;
}

/* Send all LEN bytes of BUF before the deadline. */
static int send_all(struct hs *h, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = send(h->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int r = wait_fd(h, POLLOUT);

			if (r < 0)
				return fail(h, r, "sending to the server: %s", strerror(-r));
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int r = errno == EPIPE ? -ECONNRESET : -errno;

			return fail(h, r, "sending to the server: %s", strerror(-r));
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Receive exactly LEN bytes into BUF before the deadline. WHAT names them for errors. */
static int recv_exact(struct hs *h, void *buf, size_t len, const char *what)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = recv(h->fd, p, len, MSG_DONTWAIT);

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int r = wait_fd(h, POLLIN);

			if (r == -ETIMEDOUT)
				return fail(h, r, "timed out waiting for %s from the server", what);
			if (r < 0)
				return fail(h, r, "reading %s: %s", what, strerror(-r));
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return fail(h, -errno, "reading %s: %s", what, strerror(errno));
		if (n == 0)
			return fail(h, -ECONNRESET, "the server closed the connection before %s",
			            what);
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static uint16_t get16(const unsigned char *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof v);
	return be16toh(v);
}

static uint32_t get32(const unsigned char *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof v);
	return be32toh(v);
}

static uint64_t get64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof v);
	return be64toh(v);
}

static unsigned char *put16(unsigned char *p, uint16_t v)
{
	v = htobe16(v);
	memcpy(p, &v, sizeof v);
	return p + sizeof v;
}

static unsigned char *put32(unsigned char *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, sizeof v);
	return p + sizeof v;
}

static unsigned char *put64(unsigned char *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, sizeof v);
	return p + sizeof v;
}

/* Send option OPTION with DATA (LEN bytes): the option header and the data. */
static int send_option(struct hs *h, uint32_t option, const void *data, uint32_t len)
{
	unsigned char head[16], *p = head;
	int r;

	p = put64(p, NBD_MAGIC_OPTS);
	p = put32(p, option);
	put32(p, len);
	r = send_all(h, head, sizeof head);
	if (r == 0 && len > 0)
		r = send_all(h, data, len);
	return r;
}

/* Say goodbye after a refusal, as the protocol asks; a server that is gone already does
 * not matter, so nothing here can fail the handshake's result. */
static void send_abort(struct hs *h)
{
	char *reason = h->reason;
	size_t reason_len = h->reason_len;

	h->reason_len = 0;
	send_option(h, NBD_OPT_ABORT, NULL, 0);
	h->reason = reason;
	h->reason_len = reason_len;
}

static bool is_pow2(uint32_t v)
{
	return v != 0 && (v & (v - 1)) == 0;
}

/* Copy the server's message of an error reply (TEXT, LEN bytes) into BUF as printable
 * ASCII, at most 80 characters of it. */
static const char *printable(const unsigned char *text, size_t len, char *buf, size_t size)
{
	size_t i;

	for (i = 0; i < len && i < 80 && i + 1 < size; i++)
		buf[i] = text[i] >= ' ' && text[i] <= '~' ? (char)text[i] : '?';
	buf[i] = '\0';
	return buf;
}

/* The refusal TYPE to NBD_OPT_GO, with the server's message TEXT (LEN bytes), as -errno
 * and a reason. */
static int refusal(struct hs *h, uint32_t type, const unsigned char *text, uint32_t len)
{
	char message[96];
	const char *why;
	int r;

	switch (type) {
	case NBD_REP_ERR_UNKNOWN:
		r = -ENOENT;
		why = "no such volume";
		break;
	case NBD_REP_ERR_POLICY:
		r = -EACCES;
		why = "refused by the server";
		break;
	case NBD_REP_ERR_INVALID:
		r = -EINVAL;
		why = "the server calls the request invalid";
		break;
	case NBD_REP_ERR_PLATFORM:
		r = -EOPNOTSUPP;
		why = "not supported on the server's platform";
		break;
	case NBD_REP_ERR_TLS_REQD:
		r = -EPROTONOSUPPORT;
		why = "the server requires TLS, which the kernel's NBD client cannot do";
		break;
	case NBD_REP_ERR_SHUTDOWN:
		r = -ESHUTDOWN;
		why = "the server is shutting down";
		break;
	case NBD_REP_ERR_TOO_BIG:
		r = -E2BIG;
		why = "the server calls the request too big";
		break;
	default:
		r = -EPROTO;
		why = "the server refused";
		break;
	}
	printable(text, len, message, sizeof message);
	if (r == -EPROTO)
		fail(h, r, "%s (error %#x)%s%s", why, type, message[0] ? ": " : "", message);
	else
		fail(h, r, "%s%s%s", why, message[0] ? ": " : "", message);
	send_abort(h);
	return r;
}

/* One NBD_REP_INFO reply (DATA, LEN >= 2 bytes) into *EXPORT. */
static int parse_info(struct hs *h, const unsigned char *data, uint32_t len,
                      struct nbd_export *export, bool *have_export)
{
	switch (get16(data)) {
	case NBD_INFO_EXPORT:
		if (len != 12)
			return fail(h, -EPROTO, "NBD_INFO_EXPORT of %u bytes, not 12", len);
		export->size = get64(data + 2);
		export->flags = get16(data + 10);
		*have_export = true;
		return 0;
	case NBD_INFO_BLOCK_SIZE:
		if (len != 14)
			return fail(h, -EPROTO, "NBD_INFO_BLOCK_SIZE of %u bytes, not 14", len);
		export->min_block = get32(data + 2);
		export->preferred_block = get32(data + 6);
		export->max_block = get32(data + 10);
		if (!is_pow2(export->min_block) || export->min_block > 65536 ||
		    !is_pow2(export->preferred_block) ||
		    export->preferred_block < export->min_block ||
		    export->max_block < export->min_block)
			return fail(h, -EPROTO,
			            "invalid block sizes: minimum %u, preferred %u, maximum %u",
			            export->min_block, export->preferred_block, export->max_block);
		return 0;
	default:
		/* NBD_INFO_NAME, NBD_INFO_DESCRIPTION and whatever comes later: not needed. */
		return 0;
	}
}

/* NBD_OPT_EXPORT_NAME, for a server without NBD_OPT_GO: its only answer to an unknown
 * name is to hang up. */
static int export_name(struct hs *h, const char *name, bool no_zeroes, struct nbd_export *export)
{
	unsigned char answer[8 + 2 + 124];
	size_t len = no_zeroes ? 10 : sizeof answer;
	int r;

	r = send_option(h, NBD_OPT_EXPORT_NAME, name, (uint32_t)strlen(name));
	if (r < 0)
		return r;
	r = recv_exact(h, answer, len, "the export's size and flags");
	if (r == -ECONNRESET)
		return fail(h, -ENOENT, "no such volume");
	if (r < 0)
		return r;
	export->size = get64(answer);
	export->flags = get16(answer + 8);
	return 0;
}

int nbd_handshake(int fd, const char *name, int timeout_ms, struct nbd_export *ret_export,
                  char *reason, size_t reason_len)
{
	struct hs h = {.fd = fd, .reason = reason, .reason_len = reason_len};
	unsigned char greeting[18], flags[4], option[4 + HANDSHAKE_NAME_MAX + 2 + 2], *p;
	unsigned char head[20], data[HANDSHAKE_REPLY_MAX];
	struct nbd_export export = {0};
	bool have_export = false, no_zeroes;
	size_t name_len = strlen(name);
	uint16_t server_flags;
	uint64_t magic;
	uint32_t i;
	int r;

	if (reason_len > 0)
		reason[0] = '\0';
	clock_gettime(CLOCK_MONOTONIC, &h.deadline);
	h.deadline.tv_sec += timeout_ms / 1000;
	h.deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (h.deadline.tv_nsec >= 1000000000) {
		h.deadline.tv_sec++;
		h.deadline.tv_nsec -= 1000000000;
	}
	if (name_len > HANDSHAKE_NAME_MAX)
		return fail(&h, -ENAMETOOLONG, "export name longer than %u bytes",
		            HANDSHAKE_NAME_MAX);

	/* The greeting: "NBDMAGIC", then "IHAVEOPT" and the handshake flags. An oldstyle
	 * server sends its export's size at once instead, and cannot name exports. */
	r = recv_exact(&h, greeting, 16, "the greeting");
	if (r < 0)
		return r;
	if (get64(greeting) != NBD_MAGIC_INIT)
		return fail(&h, -EPROTO, "not an NBD server (magic %#018llx)",
		            (unsigned long long)get64(greeting));
	magic = get64(greeting + 8);
	if (magic == NBD_MAGIC_OLDSTYLE)
		return fail(&h, -EPROTO, "an oldstyle NBD server, which cannot name exports");
	if (magic != NBD_MAGIC_OPTS)
		return fail(&h, -EPROTO, "not a newstyle NBD server (magic %#018llx)",
		            (unsigned long long)magic);
	r = recv_exact(&h, greeting + 16, 2, "the handshake flags");
	if (r < 0)
		return r;
	server_flags = get16(greeting + 16);
	if (!(server_flags & NBD_FLAG_FIXED_NEWSTYLE))
		return fail(&h, -EPROTO, "not a fixed-newstyle NBD server");
	no_zeroes = server_flags & NBD_FLAG_NO_ZEROES;
	put32(flags, NBD_FLAG_C_FIXED_NEWSTYLE | (no_zeroes ? NBD_FLAG_C_NO_ZEROES : 0));
	r = send_all(&h, flags, sizeof flags);
	if (r < 0)
		return r;

	/* NBD_OPT_GO: the name, and one information request, the block size. */
	p = put32(option, (uint32_t)name_len);
	memcpy(p, name, name_len);
	p = put16(p + name_len, 1);
	p = put16(p, NBD_INFO_BLOCK_SIZE);
	r = send_option(&h, NBD_OPT_GO, option, (uint32_t)(p - option));
	if (r < 0)
		return r;

	for (i = 0; i < HANDSHAKE_REPLIES_MAX; i++) {
		uint32_t opt, type, len;

		r = recv_exact(&h, head, sizeof head, "an option reply");
		if (r < 0)
			return r;
		magic = get64(head);
		opt = get32(head + 8);
		type = get32(head + 12);
		len = get32(head + 16);
		if (magic != NBD_MAGIC_REP)
			return fail(&h, -EPROTO, "option reply with bad magic %#018llx",
			            (unsigned long long)magic);
		if (opt != NBD_OPT_GO)
			return fail(&h, -EPROTO, "reply to option %u, not to NBD_OPT_GO", opt);
		if (len > HANDSHAKE_REPLY_MAX)
			return fail(&h, -EPROTO, "option reply of %u bytes, more than %u", len,
			            HANDSHAKE_REPLY_MAX);
		r = recv_exact(&h, data, len, "an option reply's data");
		if (r < 0)
			return r;

		if (type == NBD_REP_ACK) {
			if (len != 0)
				return fail(&h, -EPROTO, "NBD_REP_ACK with %u bytes of data", len);
			if (!have_export)
				return fail(&h, -EPROTO, "NBD_REP_ACK without NBD_INFO_EXPORT");
			break;
		}
		if (type == NBD_REP_INFO) {
			if (len < 2)
				return fail(&h, -EPROTO, "NBD_REP_INFO of %u bytes", len);
			r = parse_info(&h, data, len, &export, &have_export);
			if (r < 0)
				return r;
			continue;
		}
		if (type == NBD_REP_ERR_UNSUP) {
			r = export_name(&h, name, no_zeroes, &export);
			if (r < 0)
				return r;
			break;
		}
		if (type & NBD_REP_FLAG_ERROR)
			return refusal(&h, type, data, len);
		return fail(&h, -EPROTO, "unexpected reply %u to NBD_OPT_GO", type);
	}
	if (i == HANDSHAKE_REPLIES_MAX)
		return fail(&h, -EPROTO, "more than %u replies to NBD_OPT_GO",
		            HANDSHAKE_REPLIES_MAX);
	if (!(export.flags & NBD_FLAG_HAS_FLAGS))
		return fail(&h, -EPROTO, "transmission flags %#x lack NBD_FLAG_HAS_FLAGS",
		            export.flags);
	if (export.size > INT64_MAX)
		return fail(&h, -EPROTO, "export size %llu out of range",
		            (unsigned long long)export.size);
	*ret_export = export;
	return 0;
}

uint32_t nbd_kernel_block_size(const struct nbd_export *export)
{
	uint32_t size = export->preferred_block;

	if (size == 0 || !is_pow2(size) || size < 512)
		size = 512;
	else if (size > 4096)
		size = 4096;
	while (size < export->min_block && size < 4096)
		size <<= 1;
	return size >= export->min_block ? size : 0;
}
