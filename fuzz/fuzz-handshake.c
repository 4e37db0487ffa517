/* Fuzz target: client/handshake.c, the client's side of the NBD fixed-newstyle handshake,
 * against an untrusted server. The input is everything the server says: it is written into
 * one end of a socketpair, which is then shut for writing, and nbd_handshake runs on the
 * other end (whatever the client sends is left unread). Checked: the handshake ends (a
 * server that stops talking is an EOF here, never a wait), succeeds only with an export
 * the kernel can take, and otherwise gives one NUL-terminated reason within its buffer. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/nbd.h>

#include "../client/handshake.h"

#define CHECK(cond)                       \
	do {                              \
		if (!(cond))              \
			__builtin_trap(); \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nbd_export export;
	size_t off = 0;
	char *reason;
	int sv[2], r;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return 0;
	/* What does not fit the socket's buffer is not part of this input. */
	while (off < size) {
		ssize_t n = send(sv[1], data + off, size - off, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n <= 0)
			break;
		off += (size_t)n;
	}
	shutdown(sv[1], SHUT_WR);
	/* An exact-size heap buffer, so that a reason written past it is caught. */
	reason = malloc(HANDSHAKE_REASON_MAX);
	if (reason == NULL)
		goto out;
	memset(&export, 0xa5, sizeof export);
	r = nbd_handshake(sv[0], "layer1", 5000, &export, reason, HANDSHAKE_REASON_MAX);
	CHECK(r <= 0);
	if (r == 0) {
		uint32_t bs = nbd_kernel_block_size(&export);

		CHECK(export.flags & NBD_FLAG_HAS_FLAGS);
		CHECK(export.size <= INT64_MAX);
		CHECK(bs == 0 ||
		      ((bs & (bs - 1)) == 0 && bs >= 512 && bs <= 4096 && bs >= export.min_block));
	} else {
		CHECK(r != -ETIMEDOUT); /* the input ended: EOF, not silence */
		CHECK(memchr(reason, '\0', HANDSHAKE_REASON_MAX) != NULL);
		CHECK(reason[0] != '\0');
	}
	free(reason);
out:
	close(sv[0]);
	close(sv[1]);
	return 0;
}
