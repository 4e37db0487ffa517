/* The broker's wire format: how a tenant's nbdkit (the thinproxy plugin) asks thinproxyd
 * for an export and receives an open device fd.
 *
 * Transport: AF_UNIX SOCK_SEQPACKET on a socket in a run directory that no container
 * sees (TP_BROKER_PATH_DEFAULT). One connection carries exactly one request and its
 * answer; the daemon closes it afterwards. The daemon knows the asking tenant from the
 * connection's peer credentials (SO_PEERCRED), never from anything in a message.
 *
 * Every message is one packet holding one fixed-size struct below, in host byte order
 * (both ends run on the same host), starting with a struct tp_broker_header. A packet of
 * any other size, with another magic or version, of an unknown type, with unknown flag
 * bits, a string without its NUL, non-zero bytes after that NUL or in a field the type
 * does not use, is malformed: the receiver ends the connection.
 *
 *   plugin -> daemon   TP_BROKER_OPEN   struct tp_broker_request (ref, TP_BROKER_WANT_WRITE,
 *                      TP_BROKER_WANT_DIRECT)
 *   daemon -> plugin   TP_BROKER_OPENED struct tp_broker_reply; on success (error 0) the
 *                      packet carries exactly one fd by SCM_RIGHTS, O_RDWR or, with
 *                      TP_BROKER_READ_ONLY, O_RDONLY; O_DIRECT as well if the request
 *                      had TP_BROKER_WANT_DIRECT (the reply does not repeat it: the fd's
 *                      own flags, fcntl F_GETFL, say it).
 *   plugin -> daemon   TP_BROKER_LIST   struct tp_broker_request (no ref, no flags)
 *   daemon -> plugin   TP_BROKER_LISTED struct tp_broker_reply with count <=
 *                      TP_BROKER_LIST_MAX, then count TP_BROKER_ENTRY packets.
 *   plugin -> daemon   TP_BROKER_MAP    struct tp_broker_request (ref, no flags)
 *   daemon -> plugin   TP_BROKER_MAPPED struct tp_broker_reply: the export's size, the
 *                      pool's block size and count <= TP_BROKER_MAP_MAX, the number of
 *                      ranges that hold data; then ceil(count / TP_BROKER_RANGES_MAX)
 *                      TP_BROKER_RANGES packets, all full but the last.
 *
 * The ranges of a MAP answer come in order, each non-empty, neither overlapping nor
 * touching the one before, none ending past the size; the rest of the export reads as
 * zeroes. The daemon joins the closest ranges of a longer map (tp_broker_coalesce):
 * reporting a hole as data is always safe, the reverse never is. Both ends check the
 * ranges with the same struct tp_broker_map_cursor.
 *
 * error is 0 or a positive errno. The daemon answers ENOENT both for what does not exist
 * and for what the tenant may not see, so that there is no existence oracle.
 */
#ifndef TP_BROKER_H
#define TP_BROKER_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tp-rules.h"

#define TP_BROKER_PATH_DEFAULT "/run/thinproxy/private/broker.sock"

#define TP_BROKER_MAGIC   UINT32_C(0x54504b42) /* "TPKB" */
#define TP_BROKER_VERSION 1

/* A reference ("NAME", "images/NAME" or "OWNER/NAME") and its NUL. */
#define TP_BROKER_REF_SIZE (2 * TP_NAME_MAX + 2)
/* A volume state ("ready", "committed", "image", ...) and its NUL. */
#define TP_BROKER_STATE_SIZE 16
/* Most entries one LIST answer carries (what the plugin may be made to allocate). */
#define TP_BROKER_LIST_MAX 4096
/* Most ranges one MAP answer carries (what the plugin may be made to allocate: 1 MiB). */
#define TP_BROKER_MAP_MAX 65536
/* Ranges per TP_BROKER_RANGES packet. */
#define TP_BROKER_RANGES_MAX 256
/* Largest errno a reply may carry. */
#define TP_BROKER_ERRNO_MAX 4095

enum tp_broker_type {
	TP_BROKER_OPEN = 1,   /* request: open ref */
	TP_BROKER_LIST = 2,   /* request: list what the tenant may open */
	TP_BROKER_OPENED = 3, /* reply to OPEN */
	TP_BROKER_LISTED = 4, /* reply to LIST: the count of entries that follow */
	TP_BROKER_ENTRY = 5,  /* one export of a LIST answer */
	TP_BROKER_MAP = 6,    /* request: the ranges of ref that hold data */
	TP_BROKER_MAPPED = 7, /* reply to MAP: the count of ranges that follow */
	TP_BROKER_RANGES = 8, /* up to TP_BROKER_RANGES_MAX ranges of a MAP answer */
};

/* Request flags. */
#define TP_BROKER_WANT_WRITE UINT32_C(0x1) /* O_RDWR, or EROFS if the tenant may not write */
/* O_DIRECT: the plugin reads and writes the thin device past the host's page cache (the
 * cache mode "none" of an attach), so that data a kernel-attached /dev/nbdN caches is
 * not cached a second time, and the plugin takes on the device's alignment rules. */
#define TP_BROKER_WANT_DIRECT UINT32_C(0x2)
#define TP_BROKER_OPEN_FLAGS  (TP_BROKER_WANT_WRITE | TP_BROKER_WANT_DIRECT)
/* Reply and entry flags. */
#define TP_BROKER_READ_ONLY UINT32_C(0x1) /* the fd is O_RDONLY / the export is read-only */

struct tp_broker_header {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
};

struct tp_broker_request {
	struct tp_broker_header h;
	uint32_t flags;
	char ref[TP_BROKER_REF_SIZE]; /* OPEN, MAP: NUL-terminated, zero-padded; LIST: zero */
};

struct tp_broker_reply {
	struct tp_broker_header h;
	uint32_t error;                   /* 0 or a positive errno; if set, all else is zero */
	uint32_t flags;                   /* OPENED: TP_BROKER_READ_ONLY */
	uint64_t size;                    /* OPENED, MAPPED: export size in bytes */
	uint32_t block_size;              /* OPENED, MAPPED: pool block size, 0 if unknown */
	uint32_t count;                   /* LISTED: entries, MAPPED: ranges that follow */
	char state[TP_BROKER_STATE_SIZE]; /* OPENED: the volume's state */
};

struct tp_broker_entry {
	struct tp_broker_header h;
	uint32_t flags; /* TP_BROKER_READ_ONLY */
	uint32_t reserved;
	uint64_t size;
	char state[TP_BROKER_STATE_SIZE];
	char ref[TP_BROKER_REF_SIZE];
};

/* Bytes [offset, offset + length) of an export, which hold data. */
struct tp_broker_range {
	uint64_t offset;
	uint64_t length;
};

struct tp_broker_ranges {
	struct tp_broker_header h;
	uint32_t count; /* slots used: TP_BROKER_RANGES_MAX in all packets but the last */
	uint32_t reserved;
	struct tp_broker_range range[TP_BROKER_RANGES_MAX]; /* the unused slots all zero */
};

_Static_assert(sizeof(struct tp_broker_request) == 140, "request layout");
_Static_assert(sizeof(struct tp_broker_reply) == 48, "reply layout");
_Static_assert(sizeof(struct tp_broker_entry) == 168, "entry layout");
_Static_assert(sizeof(struct tp_broker_range) == 16, "range layout");
_Static_assert(sizeof(struct tp_broker_ranges) == 16 + 16 * TP_BROKER_RANGES_MAX, "ranges layout");

/* An NBD export name is a reference, or prefixes and a reference: "ro:layer1" asks for
 * layer1 read-only, so the broker hands an O_RDONLY fd even to the owner of a writable
 * volume (NBD itself has no way for a client to say it will only read); "direct:layer1"
 * asks for it served with direct I/O (TP_BROKER_WANT_DIRECT). Both together come in
 * this order only: "direct:ro:layer1". No name contains ':', so a prefix never collides
 * with a name. */
#define TP_EXPORT_DIRECT_PREFIX    "direct:"
#define TP_EXPORT_READ_ONLY_PREFIX "ro:"
/* The longest export name: both prefixes and the longest reference, and its NUL. */
#define TP_EXPORT_NAME_SIZE                                                                        \
	(sizeof TP_EXPORT_DIRECT_PREFIX + sizeof TP_EXPORT_READ_ONLY_PREFIX + TP_BROKER_REF_SIZE - \
	 2)

/* Is REF a syntactically valid reference: NAME or OWNER/NAME, each a valid name? */
static inline bool tp_broker_ref_valid(const char *ref)
{
	char owner[TP_NAME_MAX + 1];
	const char *slash;
	size_t n;

	if (ref == NULL)
		return false;
	slash = strchr(ref, '/');
	if (slash == NULL)
		return tp_name_valid(ref);
	n = (size_t)(slash - ref);
	if (n > TP_NAME_MAX)
		return false;
	memcpy(owner, ref, n);
	owner[n] = '\0';
	return tp_name_valid(owner) && tp_name_valid(slash + 1);
}

/* The reference the export NAME asks for: NAME past its prefixes, with what they ask in
 * *RET_DIRECT and *RET_READ_ONLY. The reference is not checked (tp_broker_ref_valid);
 * prefixes out of order or repeated leave a ':' in it, which no reference has. */
static inline const char *tp_export_parse(const char *name, bool *ret_direct, bool *ret_read_only)
{
	bool direct = false, read_only = false;

	if (strncmp(name, TP_EXPORT_DIRECT_PREFIX, strlen(TP_EXPORT_DIRECT_PREFIX)) == 0) {
		name += strlen(TP_EXPORT_DIRECT_PREFIX);
		direct = true;
	}
	if (strncmp(name, TP_EXPORT_READ_ONLY_PREFIX, strlen(TP_EXPORT_READ_ONLY_PREFIX)) == 0) {
		name += strlen(TP_EXPORT_READ_ONLY_PREFIX);
		read_only = true;
	}
	*ret_direct = direct;
	*ret_read_only = read_only;
	return name;
}

/* Does the fixed-size field S of SIZE bytes hold a NUL-terminated string followed by
 * nothing but zero bytes? */
static inline bool tp_broker_field_ok(const char *s, size_t size)
{
	const char *nul = memchr(s, '\0', size);

	if (nul == NULL)
		return false;
	for (const char *p = nul; p < s + size; p++)
		if (*p != '\0')
			return false;
	return true;
}

/* Is the fixed-size field S of SIZE bytes all zero? */
static inline bool tp_broker_field_zero(const void *s, size_t size)
{
	const unsigned char *p = s;

	for (size_t i = 0; i < size; i++)
		if (p[i] != 0)
			return false;
	return true;
}

/* Is S (a checked field) a plausible state: 1 or more of [a-z]? */
static inline bool tp_broker_state_ok(const char *s)
{
	if (s[0] == '\0')
		return false;
	for (; *s != '\0'; s++)
		if (*s < 'a' || *s > 'z')
			return false;
	return true;
}

static inline void tp_broker_header_init(struct tp_broker_header *h, enum tp_broker_type type)
{
	h->magic = TP_BROKER_MAGIC;
	h->version = TP_BROKER_VERSION;
	h->type = (uint16_t)type;
}

/* Check that the received packet BUF is exactly WANT_LEN bytes and carries our magic and
 * version; copy its header to RET_H. Returns 0, -EBADMSG for a wrong size or magic, or
 * -EPROTO for another version. The caller checks the type. */
static inline int tp_broker_check_header(const void *buf, size_t len, size_t want_len,
                                         struct tp_broker_header *ret_h)
{
	struct tp_broker_header h;

	if (len != want_len || len < sizeof h)
		return -EBADMSG;
	memcpy(&h, buf, sizeof h);
	if (h.magic != TP_BROKER_MAGIC)
		return -EBADMSG;
	if (h.version != TP_BROKER_VERSION)
		return -EPROTO;
	*ret_h = h;
	return 0;
}

/* Requests. */

/* Encode OPEN of REF with the request FLAGS (TP_BROKER_OPEN_FLAGS) into RET_REQ. -EINVAL if
 * REF is not a valid reference or a flag is unknown. */
static inline int tp_broker_encode_open(const char *ref, uint32_t flags,
                                        struct tp_broker_request *ret_req)
{
	if (!tp_broker_ref_valid(ref) || (flags & ~TP_BROKER_OPEN_FLAGS))
		return -EINVAL;
	memset(ret_req, 0, sizeof *ret_req);
	tp_broker_header_init(&ret_req->h, TP_BROKER_OPEN);
	ret_req->flags = flags;
	memcpy(ret_req->ref, ref, strlen(ref) + 1);
	return 0;
}

static inline void tp_broker_encode_list(struct tp_broker_request *ret_req)
{
	memset(ret_req, 0, sizeof *ret_req);
	tp_broker_header_init(&ret_req->h, TP_BROKER_LIST);
}

/* Encode MAP of REF into RET_REQ. -EINVAL if REF is not a valid reference. */
static inline int tp_broker_encode_map(const char *ref, struct tp_broker_request *ret_req)
{
	if (!tp_broker_ref_valid(ref))
		return -EINVAL;
	memset(ret_req, 0, sizeof *ret_req);
	tp_broker_header_init(&ret_req->h, TP_BROKER_MAP);
	memcpy(ret_req->ref, ref, strlen(ref) + 1);
	return 0;
}

/* Decode and check the request packet BUF of LEN bytes. Returns 0, -EBADMSG (size,
 * magic, flags, fields), -EPROTO (version), -EOPNOTSUPP (type), -EINVAL (not a valid
 * reference). */
static inline int tp_broker_decode_request(const void *buf, size_t len,
                                           struct tp_broker_request *ret_req)
{
	struct tp_broker_request req;
	int r;

	r = tp_broker_check_header(buf, len, sizeof req, &req.h);
	if (r < 0)
		return r;
	memcpy(&req, buf, sizeof req);
	switch (req.h.type) {
	case TP_BROKER_OPEN:
	case TP_BROKER_MAP:
		if (req.flags & ~(req.h.type == TP_BROKER_OPEN ? TP_BROKER_OPEN_FLAGS : 0))
			return -EBADMSG;
		if (!tp_broker_field_ok(req.ref, sizeof req.ref))
			return -EBADMSG;
		if (!tp_broker_ref_valid(req.ref))
			return -EINVAL;
		break;
	case TP_BROKER_LIST:
		if (req.flags != 0 || !tp_broker_field_zero(req.ref, sizeof req.ref))
			return -EBADMSG;
		break;
	default:
		return -EOPNOTSUPP;
	}
	*ret_req = req;
	return 0;
}

/* Replies. */

/* Encode a refusal of a request with the positive errno ERR (out-of-range values become
 * EIO): TYPE is the reply, TP_BROKER_OPENED, TP_BROKER_LISTED or TP_BROKER_MAPPED. */
static inline void tp_broker_encode_error(enum tp_broker_type type, int err,
                                          struct tp_broker_reply *ret_reply)
{
	memset(ret_reply, 0, sizeof *ret_reply);
	tp_broker_header_init(&ret_reply->h, type);
	ret_reply->error = err > 0 && err <= TP_BROKER_ERRNO_MAX ? (uint32_t)err : EIO;
}

/* Encode a successful OPENED reply. -EINVAL if STATE does not fit or is not [a-z]+. */
static inline int tp_broker_encode_opened(uint64_t size, bool read_only, uint32_t block_size,
                                          const char *state, struct tp_broker_reply *ret_reply)
{
	size_t n = strlen(state);

	if (n >= TP_BROKER_STATE_SIZE || !tp_broker_state_ok(state))
		return -EINVAL;
	memset(ret_reply, 0, sizeof *ret_reply);
	tp_broker_header_init(&ret_reply->h, TP_BROKER_OPENED);
	ret_reply->flags = read_only ? TP_BROKER_READ_ONLY : 0;
	ret_reply->size = size;
	ret_reply->block_size = block_size;
	memcpy(ret_reply->state, state, n + 1);
	return 0;
}

/* Encode a LISTED reply announcing COUNT entries. -E2BIG above TP_BROKER_LIST_MAX. */
static inline int tp_broker_encode_listed(uint32_t count, struct tp_broker_reply *ret_reply)
{
	if (count > TP_BROKER_LIST_MAX)
		return -E2BIG;
	memset(ret_reply, 0, sizeof *ret_reply);
	tp_broker_header_init(&ret_reply->h, TP_BROKER_LISTED);
	ret_reply->count = count;
	return 0;
}

/* Encode a successful MAPPED reply announcing COUNT ranges of an export of SIZE bytes, in a
 * pool of BLOCK_SIZE (0 if unknown). -E2BIG above TP_BROKER_MAP_MAX. */
static inline int tp_broker_encode_mapped(uint64_t size, uint32_t block_size, uint32_t count,
                                          struct tp_broker_reply *ret_reply)
{
	if (count > TP_BROKER_MAP_MAX)
		return -E2BIG;
	memset(ret_reply, 0, sizeof *ret_reply);
	tp_broker_header_init(&ret_reply->h, TP_BROKER_MAPPED);
	ret_reply->size = size;
	ret_reply->block_size = block_size;
	ret_reply->count = count;
	return 0;
}

/* Decode and check a reply packet of the expected TYPE (TP_BROKER_OPENED,
 * TP_BROKER_LISTED or TP_BROKER_MAPPED). Returns 0 (look at ret_reply->error), -EBADMSG,
 * -EPROTO or -EOPNOTSUPP (another type than expected). */
static inline int tp_broker_decode_reply(const void *buf, size_t len, enum tp_broker_type type,
                                         struct tp_broker_reply *ret_reply)
{
	struct tp_broker_reply rep;
	int r;

	r = tp_broker_check_header(buf, len, sizeof rep, &rep.h);
	if (r < 0)
		return r;
	memcpy(&rep, buf, sizeof rep);
	if (rep.h.type != type ||
	    (type != TP_BROKER_OPENED && type != TP_BROKER_LISTED && type != TP_BROKER_MAPPED))
		return -EOPNOTSUPP;
	if (rep.error != 0) {
		if (rep.error > TP_BROKER_ERRNO_MAX || rep.flags != 0 || rep.size != 0 ||
		    rep.block_size != 0 || rep.count != 0 ||
		    !tp_broker_field_zero(rep.state, sizeof rep.state))
			return -EBADMSG;
	} else if (type == TP_BROKER_OPENED) {
		if ((rep.flags & ~TP_BROKER_READ_ONLY) || rep.count != 0 ||
		    !tp_broker_field_ok(rep.state, sizeof rep.state) ||
		    !tp_broker_state_ok(rep.state))
			return -EBADMSG;
	} else if (type == TP_BROKER_LISTED) {
		if (rep.flags != 0 || rep.size != 0 || rep.block_size != 0 ||
		    rep.count > TP_BROKER_LIST_MAX ||
		    !tp_broker_field_zero(rep.state, sizeof rep.state))
			return -EBADMSG;
	} else {
		if (rep.flags != 0 || rep.count > TP_BROKER_MAP_MAX ||
		    !tp_broker_field_zero(rep.state, sizeof rep.state))
			return -EBADMSG;
	}
	*ret_reply = rep;
	return 0;
}

/* Encode one LIST entry. -EINVAL for an invalid REF or STATE. */
static inline int tp_broker_encode_entry(const char *ref, uint64_t size, bool read_only,
                                         const char *state, struct tp_broker_entry *ret_entry)
{
	size_t n = strlen(state);

	if (!tp_broker_ref_valid(ref) || n >= TP_BROKER_STATE_SIZE || !tp_broker_state_ok(state))
		return -EINVAL;
	memset(ret_entry, 0, sizeof *ret_entry);
	tp_broker_header_init(&ret_entry->h, TP_BROKER_ENTRY);
	ret_entry->flags = read_only ? TP_BROKER_READ_ONLY : 0;
	ret_entry->size = size;
	memcpy(ret_entry->state, state, n + 1);
	memcpy(ret_entry->ref, ref, strlen(ref) + 1);
	return 0;
}

/* Decode and check one LIST entry packet. Returns 0, -EBADMSG, -EPROTO, -EOPNOTSUPP or
 * -EINVAL (not a valid reference). */
static inline int tp_broker_decode_entry(const void *buf, size_t len,
                                         struct tp_broker_entry *ret_entry)
{
	struct tp_broker_entry e;
	int r;

	r = tp_broker_check_header(buf, len, sizeof e, &e.h);
	if (r < 0)
		return r;
	memcpy(&e, buf, sizeof e);
	if (e.h.type != TP_BROKER_ENTRY)
		return -EOPNOTSUPP;
	if ((e.flags & ~TP_BROKER_READ_ONLY) || e.reserved != 0 ||
	    !tp_broker_field_ok(e.state, sizeof e.state) || !tp_broker_state_ok(e.state) ||
	    !tp_broker_field_ok(e.ref, sizeof e.ref))
		return -EBADMSG;
	if (!tp_broker_ref_valid(e.ref))
		return -EINVAL;
	*ret_entry = e;
	return 0;
}

/* The ranges of a MAP answer. */

/* How far the ranges of a MAP answer have come, on either end: what its MAPPED reply
 * announced and what has been encoded or decoded since. */
struct tp_broker_map_cursor {
	uint64_t size;  /* the export's size: no range ends past it */
	uint32_t count; /* ranges announced */
	uint32_t done;  /* ranges encoded or decoded so far */
	uint64_t end;   /* where the last of them ended; the next starts past it */
};

/* Start the cursor of the answer that the successful MAPPED reply MAPPED announces. */
static inline void tp_broker_map_start(const struct tp_broker_reply *mapped,
                                       struct tp_broker_map_cursor *ret_cursor)
{
	ret_cursor->size = mapped->size;
	ret_cursor->count = mapped->count;
	ret_cursor->done = 0;
	ret_cursor->end = 0;
}

/* How many TP_BROKER_RANGES packets follow a MAPPED reply announcing COUNT ranges. */
static inline uint32_t tp_broker_ranges_packets(uint32_t count)
{
	return count / TP_BROKER_RANGES_MAX + (count % TP_BROKER_RANGES_MAX != 0);
}

/* How many ranges the next RANGES packet of CURSOR's answer holds; 0 once all came. */
static inline uint32_t tp_broker_ranges_due(const struct tp_broker_map_cursor *cursor)
{
	uint32_t left = cursor->count - cursor->done;

	return left < TP_BROKER_RANGES_MAX ? left : TP_BROKER_RANGES_MAX;
}

/* Are the N ranges R what comes next in CURSOR's answer: the number due, each non-empty,
 * within the size, starting past the end of the one before (no overlap, no touch)? If
 * so, move *CURSOR past them. */
static inline bool tp_broker_map_advance(struct tp_broker_map_cursor *cursor,
                                         const struct tp_broker_range *r, uint32_t n)
{
	struct tp_broker_map_cursor c = *cursor;

	if (n == 0 || n != tp_broker_ranges_due(&c))
		return false;
	for (uint32_t i = 0; i < n; i++) {
		if (r[i].length == 0 || r[i].offset > c.size || r[i].length > c.size - r[i].offset)
			return false;
		if (c.done > 0 && r[i].offset <= c.end)
			return false;
		c.end = r[i].offset + r[i].length;
		c.done++;
	}
	*cursor = c;
	return true;
}

/* Encode the next RANGES packet of CURSOR's answer, the N ranges R, and move *CURSOR past
 * them. -EINVAL unless they are what comes next (tp_broker_map_advance). */
static inline int tp_broker_encode_ranges(const struct tp_broker_range *r, uint32_t n,
                                          struct tp_broker_map_cursor *cursor,
                                          struct tp_broker_ranges *ret_packet)
{
	if (!tp_broker_map_advance(cursor, r, n))
		return -EINVAL;
	memset(ret_packet, 0, sizeof *ret_packet);
	tp_broker_header_init(&ret_packet->h, TP_BROKER_RANGES);
	ret_packet->count = n;
	memcpy(ret_packet->range, r, n * sizeof *r);
	return 0;
}

/* Decode and check the next RANGES packet of CURSOR's answer, and move *CURSOR past its
 * ranges. Returns 0, -EBADMSG (size, magic, fields, ranges that do not come next, a
 * packet when none is due), -EPROTO or -EOPNOTSUPP (another type). */
static inline int tp_broker_decode_ranges(const void *buf, size_t len,
                                          struct tp_broker_map_cursor *cursor,
                                          struct tp_broker_ranges *ret_packet)
{
	struct tp_broker_ranges p;
	int r;

	r = tp_broker_check_header(buf, len, sizeof p, &p.h);
	if (r < 0)
		return r;
	memcpy(&p, buf, sizeof p);
	if (p.h.type != TP_BROKER_RANGES)
		return -EOPNOTSUPP;
	if (p.reserved != 0 || p.count > TP_BROKER_RANGES_MAX ||
	    !tp_broker_field_zero(&p.range[p.count],
	                          (TP_BROKER_RANGES_MAX - p.count) * sizeof p.range[0]) ||
	    !tp_broker_map_advance(cursor, p.range, p.count))
		return -EBADMSG;
	*ret_packet = p;
	return 0;
}

/* Join each of the N ranges R (in order, not overlapping) to the one before it where the
 * gap between them is at most BRIDGE. Returns the new count. */
static inline size_t tp_broker_join(struct tp_broker_range *r, size_t n, uint64_t bridge)
{
	size_t k = 0;

	if (n == 0)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if (r[i].offset - (r[k].offset + r[k].length) <= bridge)
			r[k].length = r[i].offset + r[i].length - r[k].offset;
		else
			r[++k] = r[i];
	}
	return k + 1;
}

/* Shorten the map of the N ranges R (in order, not overlapping) to at most MAX (at least
 * 1) by joining the closest: across every gap as narrow as the narrowest, then twice as
 * wide, and so on. A joined range calls its gap data, which is always safe. Returns the
 * new count. */
static inline size_t tp_broker_coalesce(struct tp_broker_range *r, size_t n, size_t max)
{
	uint64_t bridge = UINT64_MAX;

	if (max == 0)
		max = 1;
	if (n <= max)
		return n;
	for (size_t i = 1; i < n; i++)
		if (r[i].offset - (r[i - 1].offset + r[i - 1].length) < bridge)
			bridge = r[i].offset - (r[i - 1].offset + r[i - 1].length);
	while (n > max) {
		n = tp_broker_join(r, n, bridge);
		bridge = bridge > UINT64_MAX / 2 ? UINT64_MAX : 2 * bridge;
	}
	return n;
}

#endif
