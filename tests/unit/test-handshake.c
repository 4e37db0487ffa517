/* Unit tests for client/handshake.c: the NBD fixed-newstyle handshake against byte
 * sequences. Each test writes what a server would say into one end of a socketpair, runs
 * the handshake on the other end, and checks the result and every byte the client sent. */
#include <check.h>
#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/nbd.h>

#include "tp-cleanup.h"
#include "../../client/handshake.h"

/* A byte sequence being built. */
struct bytes {
	unsigned char data[16384];
	size_t len;
};

static void add(struct bytes *b, const void *p, size_t len)
{
	ck_assert_uint_le(b->len + len, sizeof b->data);
	memcpy(b->data + b->len, p, len);
	b->len += len;
}

static void add16(struct bytes *b, uint16_t v)
{
	v = htobe16(v);
	add(b, &v, sizeof v);
}

static void add32(struct bytes *b, uint32_t v)
{
	v = htobe32(v);
	add(b, &v, sizeof v);
}

static void add64(struct bytes *b, uint64_t v)
{
	v = htobe64(v);
	add(b, &v, sizeof v);
}

/* A fixed-newstyle server's greeting with handshake flags FLAGS. */
static void greeting(struct bytes *b, uint16_t flags)
{
	add64(b, NBD_MAGIC_INIT);
	add64(b, NBD_MAGIC_OPTS);
	add16(b, flags);
}

/* An option reply header to NBD_OPT_GO. */
static void reply(struct bytes *b, uint32_t type, uint32_t len)
{
	add64(b, NBD_MAGIC_REP);
	add32(b, NBD_OPT_GO);
	add32(b, type);
	add32(b, len);
}

static void info_export(struct bytes *b, uint64_t size, uint16_t flags)
{
	reply(b, NBD_REP_INFO, 12);
	add16(b, NBD_INFO_EXPORT);
	add64(b, size);
	add16(b, flags);
}

static void info_block_size(struct bytes *b, uint32_t min, uint32_t preferred, uint32_t max)
{
	reply(b, NBD_REP_INFO, 14);
	add16(b, NBD_INFO_BLOCK_SIZE);
	add32(b, min);
	add32(b, preferred);
	add32(b, max);
}

#define FLAGS_RW (NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA)

/* What one handshake did: its result, its reason, the export, and what the client sent. */
struct run {
	int r;
	char reason[HANDSHAKE_REASON_MAX];
	struct nbd_export export;
	struct bytes sent;
};

/* Run the handshake for NAME against a server that says SERVER, then hangs up if
 * HANG_UP, else stays silent. */
static struct run run_ex(const struct bytes *server, const char *name, bool hang_up, int timeout_ms)
{
	struct run run = {0};
	int sv[2];
	ssize_t n;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	ck_assert_int_eq(write(sv[1], server->data, server->len), (ssize_t)server->len);
	if (hang_up)
		ck_assert_int_eq(shutdown(sv[1], SHUT_WR), 0);
	memset(&run.export, 0xa5, sizeof run.export);
	run.r = nbd_handshake(sv[0], name, timeout_ms, &run.export, run.reason, sizeof run.reason);
	close(sv[0]);
	while ((n = recv(sv[1], run.sent.data + run.sent.len, sizeof run.sent.data - run.sent.len,
	                 MSG_DONTWAIT)) > 0)
		run.sent.len += (size_t)n;
	close(sv[1]);
	return run;
}

static struct run run(const struct bytes *server, const char *name)
{
	return run_ex(server, name, true, 2000);
}

/* What a client must send for NBD_OPT_GO of NAME after client flags CFLAGS. */
static struct bytes expected_go(uint32_t cflags, const char *name)
{
	struct bytes b = {0};

	add32(&b, cflags);
	add64(&b, NBD_MAGIC_OPTS);
	add32(&b, NBD_OPT_GO);
	add32(&b, 4 + (uint32_t)strlen(name) + 2 + 2);
	add32(&b, (uint32_t)strlen(name));
	add(&b, name, strlen(name));
	add16(&b, 1);
	add16(&b, NBD_INFO_BLOCK_SIZE);
	return b;
}

static void assert_sent(const struct run *r, const struct bytes *expected)
{
	ck_assert_uint_eq(r->sent.len, expected->len);
	ck_assert_int_eq(memcmp(r->sent.data, expected->data, expected->len), 0);
}

/* Assert that R failed with ERR and a reason containing NEEDLE. */
static void assert_fails(const struct run *r, int err, const char *needle)
{
	ck_assert_msg(r->r == err, "result %d (%s), not %d; reason: %s", r->r, strerror(-r->r), err,
	              r->reason);
	ck_assert_msg(strstr(r->reason, needle) != NULL, "reason lacks \"%s\": %s", needle,
	              r->reason);
}

START_TEST(parses_info_export_and_block_size)
{
	struct bytes s = {0}, expected;
	struct run r;

	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	info_export(&s, UINT64_C(1) << 30, FLAGS_RW | NBD_FLAG_CAN_MULTI_CONN);
	info_block_size(&s, 1, 65536, 32 << 20);
	reply(&s, NBD_REP_ACK, 0);
	r = run(&s, "layer1");
	ck_assert_msg(r.r == 0, "%s", r.reason);
	ck_assert_uint_eq(r.export.size, UINT64_C(1) << 30);
	ck_assert_uint_eq(r.export.flags, FLAGS_RW | NBD_FLAG_CAN_MULTI_CONN);
	ck_assert_uint_eq(r.export.min_block, 1);
	ck_assert_uint_eq(r.export.preferred_block, 65536);
	ck_assert_uint_eq(r.export.max_block, 32 << 20);
	expected = expected_go(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES, "layer1");
	assert_sent(&r, &expected);
}
END_TEST

START_TEST(asks_no_zeroes_only_when_the_server_offers_it)
{
	struct bytes s = {0}, expected;
	struct run r;

	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
	info_export(&s, 4096, NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY);
	reply(&s, NBD_REP_ACK, 0);
	r = run(&s, "images/base");
	ck_assert_msg(r.r == 0, "%s", r.reason);
	ck_assert_uint_eq(r.export.size, 4096);
	ck_assert_uint_eq(r.export.flags, NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY);
	ck_assert_uint_eq(r.export.preferred_block, 0);
	expected = expected_go(NBD_FLAG_C_FIXED_NEWSTYLE, "images/base");
	assert_sent(&r, &expected);
}
END_TEST

START_TEST(skips_info_it_does_not_need)
{
	struct bytes s = {0};
	struct run r;

	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
	reply(&s, NBD_REP_INFO, 2 + 6);
	add16(&s, 2); /* NBD_INFO_DESCRIPTION */
	add(&s, "ready!", 6);
	reply(&s, NBD_REP_INFO, 3);
	add16(&s, 0x4242); /* from a later protocol */
	add(&s, "x", 1);
	info_export(&s, 8192, FLAGS_RW);
	reply(&s, NBD_REP_ACK, 0);
	r = run(&s, "v");
	ck_assert_msg(r.r == 0, "%s", r.reason);
	ck_assert_uint_eq(r.export.size, 8192);
}
END_TEST

START_TEST(maps_err_unknown_to_enoent)
{
	struct bytes s = {0}, expected;
	struct run r;

	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	reply(&s, NBD_REP_ERR_UNKNOWN, 0);
	r = run(&s, "nope");
	assert_fails(&r, -ENOENT, "no such volume");
	/* The refusal is followed by a polite NBD_OPT_ABORT. */
	expected = expected_go(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES, "nope");
	add64(&expected, NBD_MAGIC_OPTS);
	add32(&expected, NBD_OPT_ABORT);
	add32(&expected, 0);
	assert_sent(&r, &expected);
}
END_TEST

START_TEST(maps_the_other_refusals_to_their_errnos)
{
	static const struct {
		uint32_t type;
		int err;
		const char *reason;
	} cases[] = {
	    {NBD_REP_ERR_POLICY, -EACCES, "refused by the server: go away"},
	    {NBD_REP_ERR_TLS_REQD, -EPROTONOSUPPORT, "requires TLS"},
	    {NBD_REP_ERR_SHUTDOWN, -ESHUTDOWN, "shutting down"},
	    {NBD_REP_ERR_INVALID, -EINVAL, "invalid"},
	    {NBD_REP_ERR_BLOCK_SIZE_REQD, -EPROTO, "error 0x80000008"},
	    {NBD_REP_FLAG_ERROR | 0x77, -EPROTO, "the server refused"},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct bytes s = {0};
		struct run r;

		greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
		reply(&s, cases[i].type, 7);
		add(&s, "go away", 7);
		r = run(&s, "v");
		assert_fails(&r, cases[i].err, cases[i].reason);
	}
}
END_TEST

START_TEST(shows_only_printable_characters_of_the_servers_message)
{
	struct bytes s = {0};
	struct run r;

	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
	reply(&s, NBD_REP_ERR_POLICY, 6);
	add(&s, "a\033[2Jb", 6);
	r = run(&s, "v");
	assert_fails(&r, -EACCES, "a?[2Jb");
}
END_TEST

START_TEST(rejects_oldstyle_server)
{
	struct bytes s = {0};
	struct run r;

	add64(&s, NBD_MAGIC_INIT);
	add64(&s, NBD_MAGIC_OLDSTYLE);
	add64(&s, 1 << 20);
	r = run(&s, "v");
	assert_fails(&r, -EPROTO, "oldstyle");
	ck_assert_uint_eq(r.sent.len, 0);
}
END_TEST

START_TEST(rejects_a_server_that_is_not_nbd)
{
	struct bytes s = {0};
	struct run r;

	add(&s, "HTTP/1.1 400 Bad\r\n", 18);
	r = run(&s, "v");
	assert_fails(&r, -EPROTO, "not an NBD server");
	ck_assert_uint_eq(r.sent.len, 0);
}
END_TEST

START_TEST(rejects_newstyle_server_that_is_not_fixed)
{
	struct bytes s = {0};
	struct run r;

	greeting(&s, NBD_FLAG_NO_ZEROES);
	r = run(&s, "v");
	assert_fails(&r, -EPROTO, "not a fixed-newstyle");
	ck_assert_uint_eq(r.sent.len, 0);
}
END_TEST

START_TEST(rejects_option_reply_longer_than_limit)
{
	struct bytes s = {0};
	struct run r;

	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
	reply(&s, NBD_REP_INFO, HANDSHAKE_REPLY_MAX + 1);
	r = run(&s, "v");
	assert_fails(&r, -EPROTO, "option reply of 4099 bytes, more than 4098");

	/* A huge announcement is refused before reading, without waiting for the data. */
	s.len = 0;
	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
	reply(&s, NBD_REP_ERR_POLICY, UINT32_MAX);
	r = run_ex(&s, "v", false, 60000);
	assert_fails(&r, -EPROTO, "more than");
}
END_TEST

START_TEST(reads_a_reply_of_exactly_the_limit)
{
	struct bytes s = {0};
	struct run r;

	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
	reply(&s, NBD_REP_INFO, HANDSHAKE_REPLY_MAX);
	add16(&s, 1); /* NBD_INFO_NAME */
	for (size_t i = 0; i < HANDSHAKE_REPLY_MAX - 2; i++)
		add(&s, "n", 1);
	info_export(&s, 65536, FLAGS_RW);
	reply(&s, NBD_REP_ACK, 0);
	r = run(&s, "v");
	ck_assert_msg(r.r == 0, "%s", r.reason);
	ck_assert_uint_eq(r.export.size, 65536);
}
END_TEST

START_TEST(rejects_info_export_of_the_wrong_length)
{
	struct bytes s = {0};
	struct run r;

	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
	reply(&s, NBD_REP_INFO, 11);
	add16(&s, NBD_INFO_EXPORT);
	add64(&s, 1 << 20);
	add(&s, "\0", 1);
	r = run(&s, "v");
	assert_fails(&r, -EPROTO, "NBD_INFO_EXPORT of 11 bytes");
}
END_TEST

START_TEST(rejects_invalid_block_sizes)
{
	static const uint32_t cases[][3] = {
	    {3, 4096, 65536}, {512, 1000, 65536}, {4096, 512, 65536}, {4096, 4096, 512}};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct bytes s = {0};
		struct run r;

		greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
		info_block_size(&s, cases[i][0], cases[i][1], cases[i][2]);
		r = run(&s, "v");
		assert_fails(&r, -EPROTO, "invalid block sizes");
	}
}
END_TEST

START_TEST(rejects_ack_without_info_export)
{
	struct bytes s = {0};
	struct run r;

	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
	info_block_size(&s, 512, 4096, 65536);
	reply(&s, NBD_REP_ACK, 0);
	r = run(&s, "v");
	assert_fails(&r, -EPROTO, "without NBD_INFO_EXPORT");
}
END_TEST

START_TEST(rejects_transmission_flags_without_has_flags)
{
	struct bytes s = {0};
	struct run r;

	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
	info_export(&s, 1 << 20, NBD_FLAG_SEND_FLUSH);
	reply(&s, NBD_REP_ACK, 0);
	r = run(&s, "v");
	assert_fails(&r, -EPROTO, "lack NBD_FLAG_HAS_FLAGS");
}
END_TEST

START_TEST(rejects_a_reply_to_another_option_or_with_bad_magic)
{
	struct bytes s = {0};
	struct run r;

	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
	add64(&s, NBD_MAGIC_REP);
	add32(&s, NBD_OPT_ABORT);
	add32(&s, NBD_REP_ACK);
	add32(&s, 0);
	r = run(&s, "v");
	assert_fails(&r, -EPROTO, "reply to option 2");

	s.len = 0;
	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
	add64(&s, NBD_MAGIC_OPTS);
	add32(&s, NBD_OPT_GO);
	add32(&s, NBD_REP_ACK);
	add32(&s, 0);
	r = run(&s, "v");
	assert_fails(&r, -EPROTO, "bad magic");
}
END_TEST

START_TEST(rejects_unexpected_reply_types)
{
	struct bytes s = {0};
	struct run r;

	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
	reply(&s, 2 /* NBD_REP_SERVER */, 0);
	r = run(&s, "v");
	assert_fails(&r, -EPROTO, "unexpected reply 2");

	s.len = 0;
	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
	info_export(&s, 1 << 20, FLAGS_RW);
	reply(&s, NBD_REP_ACK, 1);
	add(&s, "x", 1);
	r = run(&s, "v");
	assert_fails(&r, -EPROTO, "NBD_REP_ACK with 1 bytes");
}
END_TEST

START_TEST(rejects_endless_info_replies)
{
	struct bytes s = {0};
	struct run r;

	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
	for (unsigned i = 0; i < HANDSHAKE_REPLIES_MAX + 1; i++)
		info_export(&s, 1 << 20, FLAGS_RW);
	r = run(&s, "v");
	assert_fails(&r, -EPROTO, "more than 32 replies");
}
END_TEST

START_TEST(falls_back_to_export_name_without_go)
{
	struct bytes s = {0}, expected;
	struct run r;

	/* With NBD_FLAG_NO_ZEROES: size and flags only. */
	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	reply(&s, NBD_REP_ERR_UNSUP, 0);
	add64(&s, 3 << 20);
	add16(&s, FLAGS_RW);
	r = run(&s, "old");
	ck_assert_msg(r.r == 0, "%s", r.reason);
	ck_assert_uint_eq(r.export.size, 3 << 20);
	ck_assert_uint_eq(r.export.flags, FLAGS_RW);
	expected = expected_go(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES, "old");
	add64(&expected, NBD_MAGIC_OPTS);
	add32(&expected, NBD_OPT_EXPORT_NAME);
	add32(&expected, 3);
	add(&expected, "old", 3);
	assert_sent(&r, &expected);

	/* Without it: 124 zeroes follow, and are consumed. */
	s.len = 0;
	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
	reply(&s, NBD_REP_ERR_UNSUP, 0);
	add64(&s, 3 << 20);
	add16(&s, FLAGS_RW);
	for (int i = 0; i < 124; i++)
		add(&s, "\0", 1);
	r = run(&s, "old");
	ck_assert_msg(r.r == 0, "%s", r.reason);

	/* A server that hangs up instead does not know the name. */
	s.len = 0;
	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
	reply(&s, NBD_REP_ERR_UNSUP, 0);
	r = run(&s, "old");
	assert_fails(&r, -ENOENT, "no such volume");
}
END_TEST

START_TEST(reports_a_server_that_hangs_up_midway)
{
	struct bytes s = {0};
	struct run r;

	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
	reply(&s, NBD_REP_INFO, 12);
	add16(&s, NBD_INFO_EXPORT);
	r = run(&s, "v");
	assert_fails(&r, -ECONNRESET, "closed the connection");
}
END_TEST

START_TEST(times_out_on_a_silent_server)
{
	struct bytes s = {0};
	struct run r;

	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
	r = run_ex(&s, "v", false, 100);
	assert_fails(&r, -ETIMEDOUT, "timed out waiting for an option reply from the server");
}
END_TEST

/* Where the server never greets: the words of the reason read as English. */
START_TEST(times_out_waiting_for_a_silent_servers_greeting)
{
	struct bytes s = {0};
	struct run r;

	r = run_ex(&s, "v", false, 100);
	ck_assert_int_eq(r.r, -ETIMEDOUT);
	ck_assert_str_eq(r.reason, "timed out waiting for the greeting from the server");
}
END_TEST

START_TEST(refuses_an_export_name_longer_than_an_nbd_string)
{
	static char name[HANDSHAKE_NAME_MAX + 2];
	struct bytes s = {0};
	struct run r;

	memset(name, 'a', HANDSHAKE_NAME_MAX + 1);
	greeting(&s, NBD_FLAG_FIXED_NEWSTYLE);
	r = run(&s, name);
	assert_fails(&r, -ENAMETOOLONG, "longer than 4096");
	ck_assert_uint_eq(r.sent.len, 0);
}
END_TEST

START_TEST(chooses_the_kernel_block_size_from_the_preferred_size)
{
	static const struct {
		uint32_t min, preferred, expected;
	} cases[] = {
	    {0, 0, 512},   {1, 512, 512},   {1, 1024, 1024},    {1, 4096, 4096}, {1, 65536, 4096},
	    {1, 256, 512}, {1024, 0, 1024}, {2048, 2048, 2048}, {8192, 8192, 0},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct nbd_export e = {.min_block = cases[i].min,
		                       .preferred_block = cases[i].preferred};

		ck_assert_msg(nbd_kernel_block_size(&e) == cases[i].expected,
		              "min %u preferred %u: %u, not %u", cases[i].min, cases[i].preferred,
		              nbd_kernel_block_size(&e), cases[i].expected);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("handshake");
	TCase *ok = tcase_create("negotiates");
	TCase *refusals = tcase_create("refusals");
	TCase *untrusted = tcase_create("untrusted-input");
	SRunner *sr;
	int failed;

	tcase_add_test(ok, parses_info_export_and_block_size);
	tcase_add_test(ok, asks_no_zeroes_only_when_the_server_offers_it);
	tcase_add_test(ok, skips_info_it_does_not_need);
	tcase_add_test(ok, falls_back_to_export_name_without_go);
	tcase_add_test(ok, chooses_the_kernel_block_size_from_the_preferred_size);
	tcase_add_test(refusals, maps_err_unknown_to_enoent);
	tcase_add_test(refusals, maps_the_other_refusals_to_their_errnos);
	tcase_add_test(refusals, shows_only_printable_characters_of_the_servers_message);
	tcase_add_test(untrusted, rejects_oldstyle_server);
	tcase_add_test(untrusted, rejects_a_server_that_is_not_nbd);
	tcase_add_test(untrusted, rejects_newstyle_server_that_is_not_fixed);
	tcase_add_test(untrusted, rejects_option_reply_longer_than_limit);
	tcase_add_test(untrusted, reads_a_reply_of_exactly_the_limit);
	tcase_add_test(untrusted, rejects_info_export_of_the_wrong_length);
	tcase_add_test(untrusted, rejects_invalid_block_sizes);
	tcase_add_test(untrusted, rejects_ack_without_info_export);
	tcase_add_test(untrusted, rejects_transmission_flags_without_has_flags);
	tcase_add_test(untrusted, rejects_a_reply_to_another_option_or_with_bad_magic);
	tcase_add_test(untrusted, rejects_unexpected_reply_types);
	tcase_add_test(untrusted, rejects_endless_info_replies);
	tcase_add_test(untrusted, reports_a_server_that_hangs_up_midway);
	tcase_add_test(untrusted, times_out_on_a_silent_server);
	tcase_add_test(untrusted, times_out_waiting_for_a_silent_servers_greeting);
	tcase_add_test(untrusted, refuses_an_export_name_longer_than_an_nbd_string);
	suite_add_tcase(s, ok);
	suite_add_tcase(s, refusals);
	suite_add_tcase(s, untrusted);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
