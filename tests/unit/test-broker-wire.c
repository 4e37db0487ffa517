/* Unit tests for include/tp-broker.h: the broker's wire format, as both ends decode it. */
#include <check.h>
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
	static const uint16_t bad[] = {
	    0, TP_BROKER_OPENED, TP_BROKER_LISTED, TP_BROKER_ENTRY, 6, 0x7fff, 0xffff};
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

	req.flags |= 0x2;
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

int main(void)
{
	Suite *s = suite_create("broker-wire");
	TCase *tc = tcase_create("broker-wire");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, round_trips_open_request);
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
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
