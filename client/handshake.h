/* The client side of the NBD fixed-newstyle handshake, as much of it as the kernel's NBD
 * client can use: NBD_OPT_GO for one export (NBD_OPT_EXPORT_NAME with a server that lacks
 * it), asking for the block size; no structured replies, no TLS, no meta contexts, since
 * the kernel speaks none of them once it owns the socket.
 *
 * The server is not trusted: every length it announces is checked against a fixed limit
 * before anything is read, what is announced is read exactly, into fixed buffers, and a
 * reply longer than the limit is an error, never an allocation. The whole handshake has
 * one deadline. */
#ifndef TP_CLIENT_HANDSHAKE_H
#define TP_CLIENT_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>

/* Magic numbers and option-phase constants of the NBD protocol (doc/proto.md). The
 * transmission flags (NBD_FLAG_READ_ONLY ...) are <linux/nbd.h>'s. */
#define NBD_MAGIC_INIT     UINT64_C(0x4e42444d41474943) /* "NBDMAGIC" */
#define NBD_MAGIC_OPTS     UINT64_C(0x49484156454f5054) /* "IHAVEOPT" */
#define NBD_MAGIC_OLDSTYLE UINT64_C(0x0000420281861253)
#define NBD_MAGIC_REP      UINT64_C(0x0003e889045565a9)

#define NBD_FLAG_FIXED_NEWSTYLE   (1u << 0) /* handshake flags, server */
#define NBD_FLAG_NO_ZEROES        (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0) /* client flags */
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)

#define NBD_OPT_EXPORT_NAME 1u
#define NBD_OPT_ABORT       2u
#define NBD_OPT_GO          7u

#define NBD_REP_ACK                 1u
#define NBD_REP_INFO                3u
#define NBD_REP_FLAG_ERROR          (1u << 31)
#define NBD_REP_ERR_UNSUP           (NBD_REP_FLAG_ERROR | 1u)
#define NBD_REP_ERR_POLICY          (NBD_REP_FLAG_ERROR | 2u)
#define NBD_REP_ERR_INVALID         (NBD_REP_FLAG_ERROR | 3u)
#define NBD_REP_ERR_PLATFORM        (NBD_REP_FLAG_ERROR | 4u)
#define NBD_REP_ERR_TLS_REQD        (NBD_REP_FLAG_ERROR | 5u)
#define NBD_REP_ERR_UNKNOWN         (NBD_REP_FLAG_ERROR | 6u)
#define NBD_REP_ERR_SHUTDOWN        (NBD_REP_FLAG_ERROR | 7u)
#define NBD_REP_ERR_BLOCK_SIZE_REQD (NBD_REP_FLAG_ERROR | 8u)
#define NBD_REP_ERR_TOO_BIG         (NBD_REP_FLAG_ERROR | 9u)

#define NBD_INFO_EXPORT     0u
#define NBD_INFO_BLOCK_SIZE 3u

/* The longest option reply read: an NBD string (4096 bytes) and its info type. */
#define HANDSHAKE_REPLY_MAX (4096u + 2u)
/* At most this many option replies to one NBD_OPT_GO. */
#define HANDSHAKE_REPLIES_MAX 32u
/* The longest export name sent: an NBD string. */
#define HANDSHAKE_NAME_MAX 4096u
/* Room for the reason of a failure. */
#define HANDSHAKE_REASON_MAX 160u

/* What the server said about the export. */
struct nbd_export {
	uint64_t size;
	uint16_t flags; /* transmission flags: NBD_FLAG_HAS_FLAGS, NBD_FLAG_READ_ONLY, ... */
	/* NBD_INFO_BLOCK_SIZE, or all 0 if the server did not send it. */
	uint32_t min_block, preferred_block, max_block;
};

/* Negotiate export NAME on FD, a connected stream socket in blocking or non-blocking mode,
 * within TIMEOUT_MS; afterwards FD is in the transmission phase, ready for the kernel. On
 * success write the export's description to *RET_EXPORT and return 0. On failure write
 * one short reason to REASON (REASON_LEN bytes, e.g. HANDSHAKE_REASON_MAX) and return:
 *   -ENOENT      the server does not know NAME (NBD_REP_ERR_UNKNOWN): "no such volume"
 *   -EACCES      refused by the server's policy
 *   -EPROTO      not a fixed-newstyle NBD server, or a malformed or overlong reply
 *   -EPROTONOSUPPORT  the server insists on TLS
 *   -ETIMEDOUT   no complete answer within TIMEOUT_MS
 *   -ECONNRESET  the server closed the connection
 *   another -errno for the other refusals and for socket errors. */
int nbd_handshake(int fd, const char *name, int timeout_ms, struct nbd_export *ret_export,
                  char *reason, size_t reason_len);

/* The block size for the kernel's device: the export's preferred block size when it is
 * a power of two within 512..4096, else the nearest of 512 and 4096, and never below the
 * export's minimum. Returns 0 if no size within 512..4096 satisfies the export. */
uint32_t nbd_kernel_block_size(const struct nbd_export *export);

#endif
