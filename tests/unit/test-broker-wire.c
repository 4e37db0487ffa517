/* Unit tests for include/tp-broker.h: the broker's wire format, as both ends decode it. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>

#include "tp-broker.h"
#include "tp-cleanup.h"

/* A valid OPEN request for REF, as raw bytes the test may then damage. */
static struct tp_broker_request open_request(const char *ref, bool want_write)
{
	struct tp_broker_request req;

	ck_assert_int_eq(tp_broker_encode_open(ref, want_write, &req), 0);
	return req;
}

START_TEST(round_trips_open_request)
{
	struct tp_broker_request req = open_request("layer1", true), out;

	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), 0);
	ck_assert_uint_eq(out.h.type, TP_BROKER_OPEN);
	ck_assert_uint_eq(out.flags, TP_BROKER_WANT_WRITE);
	ck_assert_str_eq(out.ref, "layer1");

	req = open_request("images/base", false);
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), 0);
	ck_assert_uint_eq(out.flags, 0);
	ck_assert_str_eq(out.ref, "images/base");
}
END_TEST

START_TEST(round_trips_direct_open_request)
{
	struct tp_broker_request req, out;

	ck_assert_int_eq(
	    tp_broker_encode_open("layer1", TP_BROKER_WANT_WRITE | TP_BROKER_WANT_DIRECT, &req), 0);
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), 0);
	ck_assert_uint_eq(out.flags, TP_BROKER_WANT_WRITE | TP_BROKER_WANT_DIRECT);

	ck_assert_int_eq(tp_broker_encode_open("layer1", TP_BROKER_WANT_DIRECT, &req), 0);
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), 0);
	ck_assert_uint_eq(out.flags, TP_BROKER_WANT_DIRECT);
}
END_TEST

START_TEST(refuses_to_encode_unknown_open_flags)
{
	struct tp_broker_request req;

	ck_assert_int_eq(tp_broker_encode_open("layer1", 0x4, &req), -EINVAL);
	ck_assert_int_eq(tp_broker_encode_open("layer1", UINT32_MAX, &req), -EINVAL);
}
END_TEST

START_TEST(rejects_direct_flag_on_a_map_request)
{
	struct tp_broker_request req, out;

	ck_assert_int_eq(tp_broker_encode_map("layer1", &req), 0);
	req.flags = TP_BROKER_WANT_DIRECT;
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), -EBADMSG);
	tp_broker_encode_list(&req);
	req.flags = TP_BROKER_WANT_DIRECT;
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), -EBADMSG);
}
END_TEST

START_TEST(parses_export_prefixes_in_their_one_order)
{
	static const struct {
		const char *name, *ref;
		bool direct, read_only, valid;
	} cases[] = {
	    {"vol1", "vol1", false, false, true},
	    {"ro:vol1", "vol1", false, true, true},
	    {"direct:vol1", "vol1", true, false, true},
	    {"direct:ro:alice/vol1", "alice/vol1", true, true, true},
	    /* Out of order or twice: a ':' stays in the reference, which is then invalid. */
	    {"ro:direct:vol1", "direct:vol1", false, true, false},
	    {"direct:direct:vol1", "direct:vol1", true, false, false},
	    {"ro:ro:vol1", "ro:vol1", false, true, false},
	    {"DIRECT:vol1", "DIRECT:vol1", false, false, false},
	    {"direct:", "", true, false, false},
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		bool direct = !cases[i].direct, read_only = !cases[i].read_only;
		const char *ref = tp_export_parse(cases[i].name, &direct, &read_only);

		ck_assert_str_eq(ref, cases[i].ref);
		ck_assert_int_eq(direct, cases[i].direct);
		ck_assert_int_eq(read_only, cases[i].read_only);
		ck_assert_int_eq(tp_broker_ref_valid(ref), cases[i].valid);
	}
}
END_TEST

START_TEST(fits_the_longest_export_name)
{
	char name[TP_EXPORT_NAME_SIZE];
	int n;

	n = snprintf(name, sizeof name, "%s%s%0*d/%0*d", TP_EXPORT_DIRECT_PREFIX,
	             TP_EXPORT_READ_ONLY_PREFIX, TP_NAME_MAX, 0, TP_NAME_MAX, 0);
	ck_assert_int_eq(n, (int)sizeof name - 1);
}
END_TEST

START_TEST(round_trips_longest_reference)
{
	char ref[TP_BROKER_REF_SIZE];
	struct tp_broker_request req, out;

	memset(ref, 'a', TP_NAME_MAX);
	ref[TP_NAME_MAX] = '/';
	memset(ref + TP_NAME_MAX + 1, 'b', TP_NAME_MAX);
	ref[2 * TP_NAME_MAX + 1] = '\0';
	req = open_request(ref, false);
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), 0);
	ck_assert_str_eq(out.ref, ref);
}
END_TEST

START_TEST(round_trips_list_request)
{
	struct tp_broker_request req, out;

	tp_broker_encode_list(&req);
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), 0);
	ck_assert_uint_eq(out.h.type, TP_BROKER_LIST);
}
END_TEST

START_TEST(rejects_short_broker_message)
{
	struct tp_broker_request req = open_request("layer1", true), out;

	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req - 1, &out), -EBADMSG);
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req.h, &out), -EBADMSG);
	ck_assert_int_eq(tp_broker_decode_request(&req, 2, &out), -EBADMSG);
	ck_assert_int_eq(tp_broker_decode_request(&req, 0, &out), -EBADMSG);
}
END_TEST

START_TEST(rejects_long_broker_message)
{
	char buf[sizeof(struct tp_broker_request) + 8] = {0};
	struct tp_broker_request req = open_request("layer1", true), out;

	memcpy(buf, &req, sizeof req);
	ck_assert_int_eq(tp_broker_decode_request(buf, sizeof req + 1, &out), -EBADMSG);
	ck_assert_int_eq(tp_broker_decode_request(buf, sizeof buf, &out), -EBADMSG);
}
END_TEST

START_TEST(rejects_wrong_magic_and_version)
{
	struct tp_broker_request req = open_request("layer1", true), out;

	req.h.magic ^= 1;
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), -EBADMSG);
	req = open_request("layer1", true);
	req.h.version = TP_BROKER_VERSION + 1;
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), -EPROTO);
	req.h.version = 0;
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), -EPROTO);
}
END_TEST

START_TEST(rejects_unknown_request_type)
{
	static const uint16_t bad[] = {0,
	                               TP_BROKER_OPENED,
	                               TP_BROKER_LISTED,
	                               TP_BROKER_ENTRY,
	                               TP_BROKER_MAPPED,
	                               TP_BROKER_RANGES,
	                               9,
	                               0x7fff,
	                               0xffff};
	struct tp_broker_request req, out;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		req = open_request("layer1", false);
		req.h.type = bad[i];
		ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), -EOPNOTSUPP);
	}
}
END_TEST

START_TEST(rejects_unknown_request_flags)
{
	struct tp_broker_request req = open_request("layer1", true), out;

	req.flags |= 0x4;
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), -EBADMSG);
	req.flags = UINT32_MAX;
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), -EBADMSG);
	tp_broker_encode_list(&req);
	req.flags = TP_BROKER_WANT_WRITE;
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), -EBADMSG);
}
END_TEST

START_TEST(rejects_export_name_without_nul)
{
	struct tp_broker_request req = open_request("layer1", true), out;

	memset(req.ref, 'a', sizeof req.ref);
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), -EBADMSG);
}
END_TEST

START_TEST(rejects_bytes_after_export_name)
{
	struct tp_broker_request req = open_request("layer1", true), out;

	/* "layer1\0x": whatever follows the NUL must be zero, so one message has one
	 * meaning on both sides. */
	req.ref[7] = 'x';
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), -EBADMSG);
	req = open_request("layer1", true);
	req.ref[sizeof req.ref - 1] = 1;
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), -EBADMSG);
}
END_TEST

START_TEST(rejects_list_request_with_a_name)
{
	struct tp_broker_request req, out;

	tp_broker_encode_list(&req);
	memcpy(req.ref, "x", 2);
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), -EBADMSG);
}
END_TEST

START_TEST(rejects_invalid_references)
{
	static const char *bad[] = {
	    "",       ".", "..",          "../x", "/x",  "x/",  "a//b", "a/b/c", "A",        "a b",
	    "alice/", "/", "images/../x", "a/.",  "a\n", "a/B", "-a/b", "a/-b",  "\xd0\xb0", "a\\b",
	};
	struct tp_broker_request req, out;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		ck_assert_msg(!tp_broker_ref_valid(bad[i]), "accepted \"%s\"", bad[i]);
		ck_assert_int_eq(tp_broker_encode_open(bad[i], false, &req), -EINVAL);
		/* The same name forced onto the wire is refused by the receiver. */
		req = open_request("x", false);
		memset(req.ref, 0, sizeof req.ref);
		memcpy(req.ref, bad[i], strlen(bad[i]));
		if (bad[i][0] != '\0')
			ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), -EINVAL);
	}
	ck_assert(!tp_broker_ref_valid(NULL));
	ck_assert(tp_broker_ref_valid("alice/layer1"));
	ck_assert(tp_broker_ref_valid("images/base"));
}
END_TEST

START_TEST(refuses_to_encode_overlong_reference)
{
	char *ref = malloc(5001);
	struct tp_broker_request req;

	ck_assert_ptr_nonnull(ref);
	memset(ref, 'a', 5000);
	ref[5000] = '\0';
	ck_assert_int_eq(tp_broker_encode_open(ref, false, &req), -EINVAL);
	/* A name one byte too long. */
	ref[TP_NAME_MAX + 1] = '\0';
	ck_assert_int_eq(tp_broker_encode_open(ref, false, &req), -EINVAL);
	/* An owner one byte too long, then a name one byte too long after a valid owner. */
	memset(ref, 'a', 5000);
	ref[TP_NAME_MAX + 1] = '/';
	ref[TP_NAME_MAX + 2 + TP_NAME_MAX] = '\0';
	ck_assert_int_eq(tp_broker_encode_open(ref, false, &req), -EINVAL);
	memset(ref, 'a', 5000);
	ref[TP_NAME_MAX] = '/';
	ref[TP_NAME_MAX + 1 + TP_NAME_MAX + 1] = '\0';
	ck_assert_int_eq(tp_broker_encode_open(ref, false, &req), -EINVAL);
	free(ref);
}
END_TEST

START_TEST(round_trips_open_reply)
{
	struct tp_broker_reply rep, out;

	ck_assert_int_eq(tp_broker_encode_opened(UINT64_C(1) << 30, true, 65536, "committed", &rep),
	                 0);
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_OPENED, &out), 0);
	ck_assert_uint_eq(out.error, 0);
	ck_assert_uint_eq(out.size, UINT64_C(1) << 30);
	ck_assert_uint_eq(out.flags, TP_BROKER_READ_ONLY);
	ck_assert_uint_eq(out.block_size, 65536);
	ck_assert_str_eq(out.state, "committed");
}
END_TEST

START_TEST(round_trips_error_reply)
{
	struct tp_broker_reply rep, out;

	tp_broker_encode_error(TP_BROKER_OPENED, ENOENT, &rep);
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_OPENED, &out), 0);
	ck_assert_uint_eq(out.error, ENOENT);
	tp_broker_encode_error(TP_BROKER_LISTED, -5, &rep);
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_LISTED, &out), 0);
	ck_assert_uint_eq(out.error, EIO);
}
END_TEST

START_TEST(rejects_error_reply_with_payload)
{
	struct tp_broker_reply rep, out;

	tp_broker_encode_error(TP_BROKER_OPENED, ENOENT, &rep);
	rep.size = 4096;
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_OPENED, &out),
	                 -EBADMSG);
	tp_broker_encode_error(TP_BROKER_OPENED, ENOENT, &rep);
	rep.error = TP_BROKER_ERRNO_MAX + 1;
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_OPENED, &out),
	                 -EBADMSG);
}
END_TEST

START_TEST(rejects_reply_of_another_type)
{
	struct tp_broker_reply rep, out;

	ck_assert_int_eq(tp_broker_encode_listed(3, &rep), 0);
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_OPENED, &out),
	                 -EOPNOTSUPP);
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_OPEN, &out),
	                 -EOPNOTSUPP);
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep - 1, TP_BROKER_LISTED, &out),
	                 -EBADMSG);
}
END_TEST

START_TEST(rejects_open_reply_with_bad_state)
{
	struct tp_broker_reply rep, out;

	ck_assert_int_eq(tp_broker_encode_opened(4096, false, 0, "Ready", &rep), -EINVAL);
	ck_assert_int_eq(tp_broker_encode_opened(4096, false, 0, "", &rep), -EINVAL);
	ck_assert_int_eq(tp_broker_encode_opened(4096, false, 0, "abcdefghijklmnop", &rep),
	                 -EINVAL);
	ck_assert_int_eq(tp_broker_encode_opened(4096, false, 0, "ready", &rep), 0);
	memset(rep.state, 'a', sizeof rep.state);
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_OPENED, &out),
	                 -EBADMSG);
	ck_assert_int_eq(tp_broker_encode_opened(4096, false, 0, "ready", &rep), 0);
	rep.flags = 2;
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_OPENED, &out),
	                 -EBADMSG);
}
END_TEST

START_TEST(bounds_the_list_count)
{
	struct tp_broker_reply rep, out;

	ck_assert_int_eq(tp_broker_encode_listed(TP_BROKER_LIST_MAX + 1, &rep), -E2BIG);
	ck_assert_int_eq(tp_broker_encode_listed(TP_BROKER_LIST_MAX, &rep), 0);
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_LISTED, &out), 0);
	ck_assert_uint_eq(out.count, TP_BROKER_LIST_MAX);
	rep.count = TP_BROKER_LIST_MAX + 1;
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_LISTED, &out),
	                 -EBADMSG);
	rep.count = UINT32_MAX;
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_LISTED, &out),
	                 -EBADMSG);
}
END_TEST

START_TEST(round_trips_list_entry)
{
	struct tp_broker_entry e, out;

	ck_assert_int_eq(tp_broker_encode_entry("alice/layer1", 1 << 20, true, "ready", &e), 0);
	ck_assert_int_eq(tp_broker_decode_entry(&e, sizeof e, &out), 0);
	ck_assert_str_eq(out.ref, "alice/layer1");
	ck_assert_str_eq(out.state, "ready");
	ck_assert_uint_eq(out.size, 1 << 20);
	ck_assert_uint_eq(out.flags, TP_BROKER_READ_ONLY);
}
END_TEST

START_TEST(rejects_malformed_list_entry)
{
	struct tp_broker_entry e, out;

	ck_assert_int_eq(tp_broker_encode_entry("../x", 1, false, "ready", &e), -EINVAL);
	ck_assert_int_eq(tp_broker_encode_entry("x", 1, false, "ready", &e), 0);
	ck_assert_int_eq(tp_broker_decode_entry(&e, sizeof e - 1, &out), -EBADMSG);
	e.reserved = 1;
	ck_assert_int_eq(tp_broker_decode_entry(&e, sizeof e, &out), -EBADMSG);
	ck_assert_int_eq(tp_broker_encode_entry("x", 1, false, "ready", &e), 0);
	memset(e.ref, 'x', sizeof e.ref);
	ck_assert_int_eq(tp_broker_decode_entry(&e, sizeof e, &out), -EBADMSG);
	ck_assert_int_eq(tp_broker_encode_entry("x", 1, false, "ready", &e), 0);
	memcpy(e.ref, "../x", 5);
	ck_assert_int_eq(tp_broker_decode_entry(&e, sizeof e, &out), -EINVAL);
	ck_assert_int_eq(tp_broker_encode_entry("x", 1, false, "ready", &e), 0);
	e.h.type = TP_BROKER_OPENED;
	ck_assert_int_eq(tp_broker_decode_entry(&e, sizeof e, &out), -EOPNOTSUPP);
}
END_TEST

START_TEST(round_trips_map_request)
{
	struct tp_broker_request req, out;

	ck_assert_int_eq(tp_broker_encode_map("alice/layer1", &req), 0);
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), 0);
	ck_assert_uint_eq(out.h.type, TP_BROKER_MAP);
	ck_assert_uint_eq(out.flags, 0);
	ck_assert_str_eq(out.ref, "alice/layer1");
}
END_TEST

START_TEST(rejects_malformed_map_request)
{
	struct tp_broker_request req, out;

	ck_assert_int_eq(tp_broker_encode_map("../x", &req), -EINVAL);
	ck_assert_int_eq(tp_broker_encode_map("", &req), -EINVAL);
	ck_assert_int_eq(tp_broker_encode_map("layer1", &req), 0);
	/* A map is of the export, not of a way of opening it: no flags at all. */
	req.flags = TP_BROKER_WANT_WRITE;
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), -EBADMSG);
	ck_assert_int_eq(tp_broker_encode_map("layer1", &req), 0);
	req.ref[7] = 'x';
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), -EBADMSG);
	memset(req.ref, 'a', sizeof req.ref);
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), -EBADMSG);
	ck_assert_int_eq(tp_broker_encode_map("layer1", &req), 0);
	memset(req.ref, 0, sizeof req.ref);
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), -EINVAL);
	memcpy(req.ref, "a//b", 5);
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req, &out), -EINVAL);
	ck_assert_int_eq(tp_broker_decode_request(&req, sizeof req - 1, &out), -EBADMSG);
}
END_TEST

START_TEST(round_trips_mapped_reply)
{
	struct tp_broker_reply rep, out;

	ck_assert_int_eq(tp_broker_encode_mapped(UINT64_C(1) << 40, 65536, 300, &rep), 0);
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_MAPPED, &out), 0);
	ck_assert_uint_eq(out.error, 0);
	ck_assert_uint_eq(out.size, UINT64_C(1) << 40);
	ck_assert_uint_eq(out.block_size, 65536);
	ck_assert_uint_eq(out.count, 300);
	tp_broker_encode_error(TP_BROKER_MAPPED, ENOENT, &rep);
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_MAPPED, &out), 0);
	ck_assert_uint_eq(out.error, ENOENT);
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_OPENED, &out),
	                 -EOPNOTSUPP);
}
END_TEST

START_TEST(rejects_malformed_mapped_reply)
{
	struct tp_broker_reply rep, out;

	ck_assert_int_eq(tp_broker_encode_mapped(4096, 0, TP_BROKER_MAP_MAX + 1, &rep), -E2BIG);
	ck_assert_int_eq(tp_broker_encode_mapped(UINT64_MAX, 0, TP_BROKER_MAP_MAX, &rep), 0);
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_MAPPED, &out), 0);
	rep.count = TP_BROKER_MAP_MAX + 1;
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_MAPPED, &out),
	                 -EBADMSG);
	ck_assert_int_eq(tp_broker_encode_mapped(4096, 0, 1, &rep), 0);
	rep.flags = TP_BROKER_READ_ONLY;
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_MAPPED, &out),
	                 -EBADMSG);
	ck_assert_int_eq(tp_broker_encode_mapped(4096, 0, 1, &rep), 0);
	memcpy(rep.state, "ready", 6);
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_MAPPED, &out),
	                 -EBADMSG);
	tp_broker_encode_error(TP_BROKER_MAPPED, EIO, &rep);
	rep.count = 1;
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep, TP_BROKER_MAPPED, &out),
	                 -EBADMSG);
	ck_assert_int_eq(tp_broker_encode_mapped(4096, 0, 1, &rep), 0);
	ck_assert_int_eq(tp_broker_decode_reply(&rep, sizeof rep - 1, TP_BROKER_MAPPED, &out),
	                 -EBADMSG);
}
END_TEST

/* A cursor for an answer of COUNT ranges of an export of SIZE bytes. */
static struct tp_broker_map_cursor map_cursor(uint64_t size, uint32_t count)
{
	struct tp_broker_map_cursor cursor;
	struct tp_broker_reply rep;

	ck_assert_int_eq(tp_broker_encode_mapped(size, 65536, count, &rep), 0);
	tp_broker_map_start(&rep, &cursor);
	return cursor;
}

/* N ranges of LEN bytes, GAP bytes apart, from offset START. Malloc'ed. */
static struct tp_broker_range *spaced_ranges(size_t n, uint64_t start, uint64_t len, uint64_t gap)
{
	struct tp_broker_range *r = calloc(n ? n : 1, sizeof *r);

	ck_assert_ptr_nonnull(r);
	for (size_t i = 0; i < n; i++) {
		r[i].offset = start + i * (len + gap);
		r[i].length = len;
	}
	return r;
}

START_TEST(counts_full_range_packets_then_the_rest)
{
	ck_assert_uint_eq(tp_broker_ranges_packets(0), 0);
	ck_assert_uint_eq(tp_broker_ranges_packets(1), 1);
	ck_assert_uint_eq(tp_broker_ranges_packets(TP_BROKER_RANGES_MAX), 1);
	ck_assert_uint_eq(tp_broker_ranges_packets(TP_BROKER_RANGES_MAX + 1), 2);
	ck_assert_uint_eq(tp_broker_ranges_packets(TP_BROKER_MAP_MAX),
	                  TP_BROKER_MAP_MAX / TP_BROKER_RANGES_MAX);
}
END_TEST

START_TEST(round_trips_ranges_across_packets)
{
	const uint32_t n = 2 * TP_BROKER_RANGES_MAX + 88;
	CLEANUP_FREE struct tp_broker_range *r = spaced_ranges(n, 0, 65536, 65536);
	uint64_t size = r[n - 1].offset + r[n - 1].length;
	struct tp_broker_map_cursor enc = map_cursor(size, n), dec = map_cursor(size, n);
	struct tp_broker_ranges p, out;
	uint32_t k, got = 0;

	for (k = 0; k < tp_broker_ranges_packets(n); k++) {
		uint32_t due = tp_broker_ranges_due(&enc);

		ck_assert_uint_eq(due, k < 2 ? TP_BROKER_RANGES_MAX : 88);
		ck_assert_int_eq(tp_broker_encode_ranges(r + enc.done, due, &enc, &p), 0);
		ck_assert_int_eq(tp_broker_decode_ranges(&p, sizeof p, &dec, &out), 0);
		ck_assert_uint_eq(out.count, due);
		ck_assert_mem_eq(out.range, r + got, due * sizeof *r);
		got += due;
	}
	ck_assert_uint_eq(got, n);
	ck_assert_uint_eq(dec.done, n);
	ck_assert_uint_eq(tp_broker_ranges_due(&dec), 0);
	/* Nothing more is due: another packet is malformed, even a valid one. */
	ck_assert_int_eq(tp_broker_decode_ranges(&p, sizeof p, &dec, &out), -EBADMSG);
	ck_assert_int_eq(tp_broker_encode_ranges(r, 1, &enc, &p), -EINVAL);
}
END_TEST

START_TEST(round_trips_ranges_at_both_ends_of_the_export)
{
	struct tp_broker_range r[2] = {{0, 1}, {UINT64_MAX - 2, 2}};
	struct tp_broker_map_cursor enc = map_cursor(UINT64_MAX, 2),
	                            dec = map_cursor(UINT64_MAX, 2);
	struct tp_broker_ranges p, out;

	ck_assert_int_eq(tp_broker_encode_ranges(r, 2, &enc, &p), 0);
	ck_assert_int_eq(tp_broker_decode_ranges(&p, sizeof p, &dec, &out), 0);
	ck_assert_uint_eq(out.range[1].offset + out.range[1].length, UINT64_MAX);
	ck_assert(tp_broker_field_zero(&out.range[2], sizeof out.range - 2 * sizeof out.range[0]));
}
END_TEST

/* Encoding the N ranges R as the single packet of an export of SIZE bytes is refused, and
 * so is decoding them forced onto the wire; the cursors stay where they were. */
static void refuses_single_packet(const struct tp_broker_range *r, uint32_t n, uint64_t size)
{
	struct tp_broker_map_cursor c = map_cursor(size, n), before = c;
	struct tp_broker_ranges p, out;

	ck_assert_int_eq(tp_broker_encode_ranges(r, n, &c, &p), -EINVAL);
	ck_assert_mem_eq(&c, &before, sizeof c);
	memset(&p, 0, sizeof p);
	tp_broker_header_init(&p.h, TP_BROKER_RANGES);
	p.count = n;
	memcpy(p.range, r, n * sizeof *r);
	ck_assert_int_eq(tp_broker_decode_ranges(&p, sizeof p, &c, &out), -EBADMSG);
	ck_assert_mem_eq(&c, &before, sizeof c);
}

START_TEST(rejects_ranges_out_of_order_or_past_the_size)
{
	static const struct {
		struct tp_broker_range r[2];
		uint64_t size;
	} bad[] = {
	    {{{0, 0}, {10, 1}}, 100},                     /* empty */
	    {{{0, 10}, {20, 0}}, 100},                    /* empty, second */
	    {{{0, 10}, {10, 5}}, 100},                    /* touching */
	    {{{0, 10}, {5, 10}}, 100},                    /* overlapping */
	    {{{20, 10}, {0, 10}}, 100},                   /* out of order */
	    {{{20, 10}, {20, 10}}, 100},                  /* the same twice */
	    {{{0, 10}, {90, 11}}, 100},                   /* past the size */
	    {{{0, 10}, {101, 1}}, 100},                   /* starting past the size */
	    {{{0, 10}, {100, 1}}, 100},                   /* starting at the size */
	    {{{0, 10}, {20, UINT64_MAX}}, UINT64_MAX},    /* offset + length wraps */
	    {{{UINT64_MAX, 1}, {0, 1}}, UINT64_MAX},      /* first wraps */
	    {{{10, UINT64_MAX - 9}, {0, 1}}, UINT64_MAX}, /* first wraps to 0 */
	};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		refuses_single_packet(bad[i].r, 2, bad[i].size);
	/* No range fits an empty export. */
	refuses_single_packet(bad[0].r + 1, 1, 0);
}
END_TEST

START_TEST(rejects_ranges_touching_across_packets)
{
	const uint32_t n = TP_BROKER_RANGES_MAX + 1;
	CLEANUP_FREE struct tp_broker_range *r = spaced_ranges(n, 0, 4096, 4096);
	struct tp_broker_map_cursor c = map_cursor(UINT64_C(1) << 40, n), before;
	struct tp_broker_ranges p, out;

	ck_assert_int_eq(tp_broker_encode_ranges(r, TP_BROKER_RANGES_MAX, &c, &p), 0);
	before = c;
	/* The second packet's range starts where the first packet's last one ends. */
	r[n - 1].offset = r[n - 2].offset + r[n - 2].length;
	ck_assert_int_eq(tp_broker_encode_ranges(r + n - 1, 1, &c, &p), -EINVAL);
	memset(&p, 0, sizeof p);
	tp_broker_header_init(&p.h, TP_BROKER_RANGES);
	p.count = 1;
	p.range[0] = r[n - 1];
	ck_assert_int_eq(tp_broker_decode_ranges(&p, sizeof p, &c, &out), -EBADMSG);
	ck_assert_mem_eq(&c, &before, sizeof c);
	p.range[0].offset++;
	ck_assert_int_eq(tp_broker_decode_ranges(&p, sizeof p, &c, &out), 0);
}
END_TEST

START_TEST(rejects_range_packets_of_the_wrong_count)
{
	const uint32_t n = TP_BROKER_RANGES_MAX + 2;
	CLEANUP_FREE struct tp_broker_range *r = spaced_ranges(n, 0, 1, 1);
	struct tp_broker_map_cursor c = map_cursor(UINT64_C(1) << 20, n), before = c;
	struct tp_broker_ranges p, out;

	/* Every packet but the last is full; the last holds exactly the rest. */
	ck_assert_int_eq(tp_broker_encode_ranges(r, TP_BROKER_RANGES_MAX - 1, &c, &p), -EINVAL);
	ck_assert_int_eq(tp_broker_encode_ranges(r, 0, &c, &p), -EINVAL);
	ck_assert_int_eq(tp_broker_encode_ranges(r, TP_BROKER_RANGES_MAX + 1, &c, &p), -EINVAL);
	ck_assert_mem_eq(&c, &before, sizeof c);
	ck_assert_int_eq(tp_broker_encode_ranges(r, TP_BROKER_RANGES_MAX, &c, &p), 0);
	p.count = TP_BROKER_RANGES_MAX - 1;
	p.range[TP_BROKER_RANGES_MAX - 1] = (struct tp_broker_range){0, 0};
	ck_assert_int_eq(tp_broker_decode_ranges(&p, sizeof p, &before, &out), -EBADMSG);
	p.count = TP_BROKER_RANGES_MAX + 1;
	ck_assert_int_eq(tp_broker_decode_ranges(&p, sizeof p, &before, &out), -EBADMSG);
	p.count = UINT32_MAX;
	ck_assert_int_eq(tp_broker_decode_ranges(&p, sizeof p, &before, &out), -EBADMSG);
	p.count = 0;
	memset(p.range, 0, sizeof p.range);
	ck_assert_int_eq(tp_broker_decode_ranges(&p, sizeof p, &before, &out), -EBADMSG);

	ck_assert_int_eq(tp_broker_encode_ranges(r + c.done, 1, &c, &p), -EINVAL);
	ck_assert_int_eq(tp_broker_encode_ranges(r + c.done, 3, &c, &p), -EINVAL);
	ck_assert_int_eq(tp_broker_encode_ranges(r + c.done, 2, &c, &p), 0);
}
END_TEST

START_TEST(rejects_range_packet_with_stray_bytes)
{
	struct tp_broker_range r[1] = {{4096, 4096}};
	struct tp_broker_map_cursor enc = map_cursor(1 << 20, 1), c = enc;
	struct tp_broker_ranges p, good, out;
	char big[sizeof p + 1] = {0};

	ck_assert_int_eq(tp_broker_encode_ranges(r, 1, &enc, &good), 0);
	p = good;
	p.reserved = 1;
	ck_assert_int_eq(tp_broker_decode_ranges(&p, sizeof p, &c, &out), -EBADMSG);
	p = good;
	p.range[1].offset = 1 << 19;
	ck_assert_int_eq(tp_broker_decode_ranges(&p, sizeof p, &c, &out), -EBADMSG);
	p = good;
	p.range[TP_BROKER_RANGES_MAX - 1].length = 1;
	ck_assert_int_eq(tp_broker_decode_ranges(&p, sizeof p, &c, &out), -EBADMSG);
	ck_assert_int_eq(tp_broker_decode_ranges(&good, sizeof good - 1, &c, &out), -EBADMSG);
	memcpy(big, &good, sizeof good);
	ck_assert_int_eq(tp_broker_decode_ranges(big, sizeof big, &c, &out), -EBADMSG);
	p = good;
	p.h.type = TP_BROKER_ENTRY;
	ck_assert_int_eq(tp_broker_decode_ranges(&p, sizeof p, &c, &out), -EOPNOTSUPP);
	p = good;
	p.h.version++;
	ck_assert_int_eq(tp_broker_decode_ranges(&p, sizeof p, &c, &out), -EPROTO);
	p = good;
	p.h.magic ^= 1;
	ck_assert_int_eq(tp_broker_decode_ranges(&p, sizeof p, &c, &out), -EBADMSG);
	ck_assert_uint_eq(c.done, 0);
	ck_assert_int_eq(tp_broker_decode_ranges(&good, sizeof good, &c, &out), 0);
}
END_TEST

START_TEST(coalesces_the_narrowest_gaps_first)
{
	/* Gaps of 10, 1, 5, 1 and 100 bytes between six 10-byte ranges. */
	static const uint64_t gaps[] = {10, 1, 5, 1, 100};
	struct tp_broker_range r[6], two[6];
	uint64_t at = 0;

	for (size_t i = 0; i < 6; i++) {
		r[i] = (struct tp_broker_range){at, 10};
		at += 10 + (i < 5 ? gaps[i] : 0);
	}
	memcpy(two, r, sizeof r);
	/* Within the limit: untouched. */
	ck_assert_uint_eq(tp_broker_coalesce(r, 6, 6), 6);
	ck_assert_uint_eq(r[1].offset, 20);
	/* The two 1-byte gaps go first. */
	ck_assert_uint_eq(tp_broker_coalesce(r, 6, 4), 4);
	ck_assert_uint_eq(r[0].offset, 0);
	ck_assert_uint_eq(r[0].length, 10);
	ck_assert_uint_eq(r[1].offset, 20);
	ck_assert_uint_eq(r[1].length, 21);
	ck_assert_uint_eq(r[2].offset, 46);
	ck_assert_uint_eq(r[2].length, 21);
	ck_assert_uint_eq(r[3].offset, 167);
	/* Then the bridge doubles (2, 4, 8: the 5-byte gap; 16: the 10-byte one). */
	ck_assert_uint_eq(tp_broker_coalesce(two, 6, 2), 2);
	ck_assert_uint_eq(two[0].offset, 0);
	ck_assert_uint_eq(two[0].length, 67);
	ck_assert_uint_eq(two[1].offset, 167);
	ck_assert_uint_eq(two[1].length, 10);
}
END_TEST

START_TEST(coalesces_a_long_map_to_what_the_wire_carries)
{
	const size_t n = TP_BROKER_MAP_MAX + 5000;
	CLEANUP_FREE struct tp_broker_range *r = spaced_ranges(n, 65536, 65536, 65536);
	CLEANUP_FREE struct tp_broker_range *orig = spaced_ranges(n, 65536, 65536, 65536);
	uint64_t size = orig[n - 1].offset + orig[n - 1].length;
	struct tp_broker_map_cursor c;
	struct tp_broker_ranges p;
	size_t m, k = 0;

	/* Some gaps narrower, which go first. */
	for (size_t i = 0; i < n; i += 7) {
		r[i].length += 4096;
		orig[i].length += 4096;
	}
	m = tp_broker_coalesce(r, n, TP_BROKER_MAP_MAX);
	ck_assert_uint_le(m, TP_BROKER_MAP_MAX);
	ck_assert_uint_gt(m, TP_BROKER_MAP_MAX / 2);
	/* Still a well-formed map, covering every original range. */
	c = map_cursor(size, (uint32_t)m);
	while (tp_broker_ranges_due(&c) > 0)
		ck_assert_int_eq(
		    tp_broker_encode_ranges(r + c.done, tp_broker_ranges_due(&c), &c, &p), 0);
	for (size_t i = 0; i < n; i++) {
		while (k < m && r[k].offset + r[k].length < orig[i].offset + orig[i].length)
			k++;
		ck_assert_uint_lt(k, m);
		ck_assert_uint_le(r[k].offset, orig[i].offset);
	}
	/* A limit of one (or none) joins everything, even across the widest gap. */
	r[0] = (struct tp_broker_range){0, 1};
	r[1] = (struct tp_broker_range){UINT64_MAX - 1, 1};
	ck_assert_uint_eq(tp_broker_coalesce(r, 2, 0), 1);
	ck_assert_uint_eq(r[0].length, UINT64_MAX);
	ck_assert_uint_eq(tp_broker_coalesce(r, 0, 1), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("broker-wire");
	TCase *tc = tcase_create("broker-wire");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, round_trips_open_request);
	tcase_add_test(tc, round_trips_direct_open_request);
	tcase_add_test(tc, refuses_to_encode_unknown_open_flags);
	tcase_add_test(tc, rejects_direct_flag_on_a_map_request);
	tcase_add_test(tc, parses_export_prefixes_in_their_one_order);
	tcase_add_test(tc, fits_the_longest_export_name);
	tcase_add_test(tc, round_trips_longest_reference);
	tcase_add_test(tc, round_trips_list_request);
	tcase_add_test(tc, rejects_short_broker_message);
	tcase_add_test(tc, rejects_long_broker_message);
	tcase_add_test(tc, rejects_wrong_magic_and_version);
	tcase_add_test(tc, rejects_unknown_request_type);
	tcase_add_test(tc, rejects_unknown_request_flags);
	tcase_add_test(tc, rejects_export_name_without_nul);
	tcase_add_test(tc, rejects_bytes_after_export_name);
	tcase_add_test(tc, rejects_list_request_with_a_name);
	tcase_add_test(tc, rejects_invalid_references);
	tcase_add_test(tc, refuses_to_encode_overlong_reference);
	tcase_add_test(tc, round_trips_open_reply);
	tcase_add_test(tc, round_trips_error_reply);
	tcase_add_test(tc, rejects_error_reply_with_payload);
	tcase_add_test(tc, rejects_reply_of_another_type);
	tcase_add_test(tc, rejects_open_reply_with_bad_state);
	tcase_add_test(tc, bounds_the_list_count);
	tcase_add_test(tc, round_trips_list_entry);
	tcase_add_test(tc, rejects_malformed_list_entry);
	tcase_add_test(tc, round_trips_map_request);
	tcase_add_test(tc, rejects_malformed_map_request);
	tcase_add_test(tc, round_trips_mapped_reply);
	tcase_add_test(tc, rejects_malformed_mapped_reply);
	tcase_add_test(tc, counts_full_range_packets_then_the_rest);
	tcase_add_test(tc, round_trips_ranges_across_packets);
	tcase_add_test(tc, round_trips_ranges_at_both_ends_of_the_export);
	tcase_add_test(tc, rejects_ranges_out_of_order_or_past_the_size);
	tcase_add_test(tc, rejects_ranges_touching_across_packets);
	tcase_add_test(tc, rejects_range_packets_of_the_wrong_count);
	tcase_add_test(tc, rejects_range_packet_with_stray_bytes);
	tcase_add_test(tc, coalesces_the_narrowest_gaps_first);
	tcase_add_test(tc, coalesces_a_long_map_to_what_the_wire_carries);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
