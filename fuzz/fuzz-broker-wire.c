/* Fuzz target: include/tp-broker.h, the broker's wire format, from both ends. The input is
 * one packet as received; every decoder reads it:
 *   - tp_broker_decode_request (what thinproxyd reads from a tenant's nbdkit),
 *   - tp_broker_decode_reply for OPENED, LISTED and MAPPED, tp_broker_decode_entry, and
 *     tp_broker_decode_ranges as the first and as a later packet of a MAP answer (what the
 *     plugin reads from the daemon).
 * Whatever decodes must be canonical: encoding the decoded fields gives back exactly the
 * packet's bytes, the strings in it are valid references and states that fit their
 * fields, and its ranges follow the map's rules, written out again here. Then the input
 * is read as NUL-separated strings for the encoders: whatever they accept decodes back to
 * the same fields. Last, it is read as a map for tp_broker_coalesce: what that leaves is
 * a map the wire carries, within its limit, covering every range it was given. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tp-broker.h"
#include "tp-cleanup.h"

#define CHECK(cond)                       \
	do {                              \
		if (!(cond))              \
			__builtin_trap(); \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The reference rule, written out again: NAME, or OWNER/NAME with both valid names. */
static bool ref_ok(const char *ref)
{
	const char *slash = strchr(ref, '/');
	char owner[TP_BROKER_REF_SIZE];
	size_t n;

	if (slash == NULL)
		return tp_name_valid(ref);
	n = (size_t)(slash - ref);
	if (n >= sizeof owner)
		return false;
	memcpy(owner, ref, n);
	owner[n] = '\0';
	return tp_name_valid(owner) && tp_name_valid(slash + 1);
}

static void check_request(const void *buf, size_t len)
{
	struct tp_broker_request req, again;
	int r = tp_broker_decode_request(buf, len, &req);

	CHECK(r == 0 || r == -EBADMSG || r == -EPROTO || r == -EOPNOTSUPP || r == -EINVAL);
	if (r < 0)
		return;
	CHECK(len == sizeof req);
	if (req.h.type == TP_BROKER_OPEN) {
		CHECK(memchr(req.ref, '\0', sizeof req.ref) != NULL);
		CHECK(ref_ok(req.ref));
		CHECK(tp_broker_encode_open(req.ref, req.flags, &again) == 0);
	} else if (req.h.type == TP_BROKER_MAP) {
		CHECK(memchr(req.ref, '\0', sizeof req.ref) != NULL);
		CHECK(ref_ok(req.ref) && req.flags == 0);
		CHECK(tp_broker_encode_map(req.ref, &again) == 0);
	} else {
		CHECK(req.h.type == TP_BROKER_LIST);
		tp_broker_encode_list(&again);
	}
	CHECK(memcmp(&again, buf, sizeof again) == 0);
}

static void check_reply(const void *buf, size_t len, enum tp_broker_type type)
{
	struct tp_broker_reply rep, again;
	int r = tp_broker_decode_reply(buf, len, type, &rep);

	CHECK(r == 0 || r == -EBADMSG || r == -EPROTO || r == -EOPNOTSUPP);
	if (r < 0)
		return;
	CHECK(len == sizeof rep && rep.h.type == type);
	if (rep.error != 0) {
		CHECK(rep.error <= TP_BROKER_ERRNO_MAX);
		tp_broker_encode_error(type, (int)rep.error, &again);
	} else if (type == TP_BROKER_OPENED) {
		CHECK(memchr(rep.state, '\0', sizeof rep.state) != NULL);
		CHECK(tp_broker_state_ok(rep.state));
		CHECK(tp_broker_encode_opened(rep.size, rep.flags & TP_BROKER_READ_ONLY,
		                              rep.block_size, rep.state, &again) == 0);
	} else if (type == TP_BROKER_LISTED) {
		CHECK(rep.count <= TP_BROKER_LIST_MAX);
		CHECK(tp_broker_encode_listed(rep.count, &again) == 0);
	} else {
		CHECK(rep.count <= TP_BROKER_MAP_MAX);
		CHECK(tp_broker_encode_mapped(rep.size, rep.block_size, rep.count, &again) == 0);
	}
	CHECK(memcmp(&again, buf, sizeof again) == 0);
}

/* The map rule, written out again: the N ranges R, after a range ending at END (none if
 * FIRST), are each non-empty, in order, apart and within SIZE. */
static bool ranges_ok(const struct tp_broker_range *r, size_t n, bool first, uint64_t end,
                      uint64_t size)
{
	for (size_t i = 0; i < n; i++) {
		if (r[i].length == 0 || r[i].offset >= size || size - r[i].offset < r[i].length)
			return false;
		if (!(first && i == 0) && r[i].offset <= end)
			return false;
		end = r[i].offset + r[i].length;
	}
	return true;
}

/* Decode BUF as the next RANGES packet of an answer at CURSOR. */
static void check_ranges_at(const void *buf, size_t len, struct tp_broker_map_cursor cursor)
{
	struct tp_broker_map_cursor before = cursor, enc = cursor;
	struct tp_broker_ranges p, again;
	int r = tp_broker_decode_ranges(buf, len, &cursor, &p);

	CHECK(r == 0 || r == -EBADMSG || r == -EPROTO || r == -EOPNOTSUPP);
	if (r < 0) {
		CHECK(memcmp(&cursor, &before, sizeof cursor) == 0);
		return;
	}
	CHECK(len == sizeof p && p.count == tp_broker_ranges_due(&before) && p.count > 0);
	CHECK(ranges_ok(p.range, p.count, before.done == 0, before.end, before.size));
	CHECK(cursor.done == before.done + p.count);
	CHECK(cursor.end == p.range[p.count - 1].offset + p.range[p.count - 1].length);
	CHECK(tp_broker_encode_ranges(p.range, p.count, &enc, &again) == 0);
	CHECK(memcmp(&enc, &cursor, sizeof enc) == 0);
	CHECK(memcmp(&again, buf, sizeof again) == 0);
}

/* Decode BUF as a RANGES packet: the first of an answer of as many ranges as it says it
 * holds, and one after a full packet whose last range ended at the size it states for its
 * first range's offset, of an export as large as can be. */
static void check_ranges(const void *buf, size_t len)
{
	struct tp_broker_map_cursor c = {.size = UINT64_MAX};
	struct tp_broker_ranges p;

	if (len != sizeof p)
		return check_ranges_at(buf, len, c);
	memcpy(&p, buf, sizeof p);
	c.count = p.count <= TP_BROKER_RANGES_MAX ? p.count : TP_BROKER_RANGES_MAX;
	check_ranges_at(buf, len, c);
	c.count += TP_BROKER_RANGES_MAX;
	c.done = TP_BROKER_RANGES_MAX;
	c.end = p.range[0].offset / 2;
	check_ranges_at(buf, len, c);
}

static void check_entry(const void *buf, size_t len)
{
	struct tp_broker_entry e, again;
	int r = tp_broker_decode_entry(buf, len, &e);

	CHECK(r == 0 || r == -EBADMSG || r == -EPROTO || r == -EOPNOTSUPP || r == -EINVAL);
	if (r < 0)
		return;
	CHECK(len == sizeof e);
	CHECK(memchr(e.state, '\0', sizeof e.state) != NULL && tp_broker_state_ok(e.state));
	CHECK(memchr(e.ref, '\0', sizeof e.ref) != NULL && ref_ok(e.ref));
	CHECK(tp_broker_encode_entry(e.ref, e.size, e.flags & TP_BROKER_READ_ONLY, e.state,
	                             &again) == 0);
	CHECK(memcmp(&again, buf, sizeof again) == 0);
}

/* The encoders on REF and STATE, arbitrary strings. */
static void check_encoders(const char *ref, const char *state, uint64_t number)
{
	struct tp_broker_request req, req2;
	struct tp_broker_reply rep, rep2;
	struct tp_broker_entry e, e2;
	bool flag = number & 1;

	CHECK(tp_broker_ref_valid(ref) == ref_ok(ref));
	if (tp_broker_encode_map(ref, &req) == 0) {
		CHECK(tp_broker_decode_request(&req, sizeof req, &req2) == 0);
		CHECK(strcmp(req2.ref, ref) == 0 && req2.flags == 0 &&
		      req2.h.type == TP_BROKER_MAP);
	} else {
		CHECK(!tp_broker_ref_valid(ref));
	}
	if (tp_broker_encode_open(ref, flag ? TP_BROKER_WANT_WRITE : 0, &req) == 0) {
		CHECK(tp_broker_ref_valid(ref) && strlen(ref) < sizeof req.ref);
		CHECK(tp_broker_decode_request(&req, sizeof req, &req2) == 0);
		CHECK(strcmp(req2.ref, ref) == 0 &&
		      req2.flags == (flag ? TP_BROKER_WANT_WRITE : 0));
	} else {
		CHECK(!tp_broker_ref_valid(ref));
	}
	if (tp_broker_encode_opened(number, flag, (uint32_t)number, state, &rep) == 0) {
		CHECK(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_OPENED, &rep2) == 0);
		CHECK(rep2.error == 0 && rep2.size == number && strcmp(rep2.state, state) == 0);
	}
	if (tp_broker_encode_entry(ref, number, flag, state, &e) == 0) {
		CHECK(tp_broker_decode_entry(&e, sizeof e, &e2) == 0);
		CHECK(strcmp(e2.ref, ref) == 0 && strcmp(e2.state, state) == 0 &&
		      e2.size == number);
	}
	tp_broker_encode_error(TP_BROKER_LISTED, (int)number, &rep);
	CHECK(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_LISTED, &rep2) == 0);
	CHECK(rep2.error > 0 && rep2.error <= TP_BROKER_ERRNO_MAX);
	if (tp_broker_encode_listed((uint32_t)number, &rep) == 0)
		CHECK(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_LISTED, &rep2) == 0 &&
		      rep2.count == (uint32_t)number);
	else
		CHECK((uint32_t)number > TP_BROKER_LIST_MAX);
	if (tp_broker_encode_mapped(number, (uint32_t)number, (uint32_t)(number >> 32), &rep) == 0)
		CHECK(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_MAPPED, &rep2) == 0 &&
		      rep2.size == number && rep2.count == (uint32_t)(number >> 32));
	else
		CHECK((uint32_t)(number >> 32) > TP_BROKER_MAP_MAX);
}

/* The input as a map: byte pairs, each a gap (after the range before, at least 1) and a
 * length (at least 1) in 4 KiB units; the first byte is the limit to coalesce to. */
static void check_coalesce(const uint8_t *data, size_t size)
{
	struct tp_broker_range r[512], orig[512];
	struct tp_broker_map_cursor c = {.size = UINT64_MAX};
	struct tp_broker_ranges p;
	size_t n = 0, m, max, k = 0;
	uint64_t at = 0;

	if (size < 1)
		return;
	max = data[0];
	for (size_t i = 1; i + 1 < size && n < ARRAY_SIZE(r); i += 2) {
		at += (uint64_t)(data[i] + 1) << 12;
		r[n].offset = at;
		r[n].length = (uint64_t)(data[i + 1] + 1) << 12;
		at += r[n++].length;
	}
	memcpy(orig, r, n * sizeof *r);
	m = tp_broker_coalesce(r, n, max);
	CHECK(m <= n && m <= (max ? max : 1) && (n == 0) == (m == 0));
	CHECK(ranges_ok(r, m, true, 0, UINT64_MAX));
	c.count = (uint32_t)m;
	while (tp_broker_ranges_due(&c) > 0)
		CHECK(tp_broker_encode_ranges(r + c.done, tp_broker_ranges_due(&c), &c, &p) == 0);
	for (size_t i = 0; i < n; i++) {
		while (k < m && r[k].offset + r[k].length < orig[i].offset + orig[i].length)
			k++;
		CHECK(k < m && r[k].offset <= orig[i].offset);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size heap copy, so that any read past the packet is caught. */
	uint8_t *buf = malloc(size ? size : 1);
	char *strings;
	const char *ref, *state;
	uint64_t number = 0;
	size_t n;

	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	check_request(buf, size);
	check_reply(buf, size, TP_BROKER_OPENED);
	check_reply(buf, size, TP_BROKER_LISTED);
	check_entry(buf, size);
	check_reply(buf, size, TP_BROKER_MAPPED);
	check_ranges(buf, size);
	free(buf);
	check_coalesce(data, size);

	/* REF NUL STATE NUL NUMBER(8 bytes): missing parts are empty or zero. */
	strings = malloc(size + 2);
	if (strings == NULL)
		return 0;
	memcpy(strings, data, size);
	strings[size] = strings[size + 1] = '\0';
	ref = strings;
	n = strlen(ref);
	state = n < size ? strings + n + 1 : strings + size + 1;
	if (state < strings + size) {
		size_t off = (size_t)(state - strings) + strlen(state) + 1;

		if (off + sizeof number <= size)
			memcpy(&number, data + off, sizeof number);
	}
	check_encoders(ref, state, number);
	free(strings);
	return 0;
}
