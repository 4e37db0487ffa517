/* Unit tests for include/tp-rules.h: the name and size rules every program shares; and
 * include/tp-error.h's names of the error codes, which the daemon sends and the client
 * reads. */
#include <check.h>
#include <stdlib.h>

#include "tp-error.h"
#include "tp-rules.h"

START_TEST(accepts_plain_names)
{
	ck_assert(tp_name_valid("layer1"));
	ck_assert(tp_name_valid("a"));
	ck_assert(tp_name_valid("0"));
	ck_assert(tp_name_valid("base.v2_rc-1"));
	ck_assert(tp_name_valid("abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0"));
}
END_TEST

START_TEST(rejects_names_that_could_escape_or_deceive)
{
	static const char *bad[] = {
	    "",
	    ".",
	    "..",
	    "../etc",
	    "a/b",
	    "-rf",
	    "_x",
	    ".hidden",
	    "Layer",
	    "LAYER",
	    "la yer",
	    "a\tb",
	    "a\n",
	    "l\xc3\xa4yer",
	    "\xd0\xb0",
	    "a%2f",
	    "a:b",
	    "a\\b",
	    "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		ck_assert_msg(!tp_name_valid(bad[i]), "accepted \"%s\"", bad[i]);
	ck_assert(!tp_name_valid(NULL));
}
END_TEST

START_TEST(parses_sizes_with_binary_suffixes)
{
	uint64_t v;

	ck_assert_int_eq(tp_parse_size("4096", &v), 0);
	ck_assert_uint_eq(v, 4096);
	ck_assert_int_eq(tp_parse_size("10G", &v), 0);
	ck_assert_uint_eq(v, UINT64_C(10) << 30);
	ck_assert_int_eq(tp_parse_size("512MiB", &v), 0);
	ck_assert_uint_eq(v, UINT64_C(512) << 20);
	ck_assert_int_eq(tp_parse_size("1kb", &v), 0);
	ck_assert_uint_eq(v, 1024);
	ck_assert_int_eq(tp_parse_size("3T", &v), 0);
	ck_assert_uint_eq(v, UINT64_C(3) << 40);
	ck_assert_int_eq(tp_parse_size("7B", &v), 0);
	ck_assert_uint_eq(v, 7);
}
END_TEST

START_TEST(rejects_malformed_and_overflowing_sizes)
{
	uint64_t v = 42;
	static const char *bad[] = {"",   "G",     "-1",  "+1",   " 1",  "1 ", "1.5G",
	                            "1X", "1GiBx", "1iB", "0x10", "1e9", "1Bb"};

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		ck_assert_msg(tp_parse_size(bad[i], &v) == -EINVAL, "accepted \"%s\"", bad[i]);
	ck_assert_int_eq(tp_parse_size("18446744073709551616", &v), -ERANGE);
	ck_assert_int_eq(tp_parse_size("16777216T", &v), -ERANGE);
	ck_assert_int_eq(tp_parse_size(NULL, &v), -EINVAL);
	ck_assert_uint_eq(v, 42); /* untouched on failure */
	ck_assert_int_eq(tp_parse_size("18446744073709551615", &v), 0);
	ck_assert_uint_eq(v, UINT64_MAX);
}
END_TEST

START_TEST(formats_sizes_in_human_units)
{
	char buf[32];

	ck_assert_str_eq(tp_format_size(100, buf, sizeof buf), "100");
	ck_assert_str_eq(tp_format_size(1024, buf, sizeof buf), "1K");
	ck_assert_str_eq(tp_format_size(UINT64_C(1) << 30, buf, sizeof buf), "1G");
	ck_assert_str_eq(tp_format_size(UINT64_C(3) << 29, buf, sizeof buf), "1.5G");
	ck_assert_str_eq(tp_format_size(UINT64_C(5) << 50, buf, sizeof buf), "5P");
}
END_TEST

/* Found by fuzz/fuzz-rules: one decimal rounded sizes just below a unit up to "1024.0" of
 * the unit below it. */
START_TEST(formats_size_just_below_a_unit_in_that_unit)
{
	char buf[32];

	ck_assert_str_eq(tp_format_size((UINT64_C(1) << 20) - 1, buf, sizeof buf), "1.0M");
	ck_assert_str_eq(tp_format_size(UINT64_C(0xfffd00e262), buf, sizeof buf), "1.0T");
	ck_assert_str_eq(tp_format_size((UINT64_C(1) << 50) - 1, buf, sizeof buf), "1.0P");
	ck_assert_str_eq(tp_format_size((UINT64_C(1023) << 10) + 1, buf, sizeof buf), "1023.0K");
	ck_assert_str_eq(tp_format_size(UINT64_MAX, buf, sizeof buf), "16384.0P");
}
END_TEST

/* The label with KEY and VALUE given as string literals (NUL bytes included). */
#define LABEL_INVALID(key, value) tp_label_invalid(key, sizeof key - 1, value, sizeof value - 1)

START_TEST(accepts_labels_up_to_containerds_limits)
{
	char key[TP_LABEL_BYTES_MAX], value[TP_LABEL_BYTES_MAX];

	ck_assert_ptr_null(LABEL_INVALID("containerd.io/gc.ref.snapshot.overlayfs", "sha256:0a"));
	ck_assert_ptr_null(LABEL_INVALID("k", ""));
	ck_assert_ptr_null(
	    LABEL_INVALID("\xc3\xa9t\xc3\xa9 \xf0\x9f\x90\xb3", "multi\nline\ttext"));
	ck_assert_ptr_null(tp_label_invalid("has-key", 7, NULL, 0));
	memset(key, 'k', sizeof key);
	memset(value, 'v', sizeof value);
	ck_assert_ptr_null(tp_label_invalid(key, 4095, value, 0));
	ck_assert_ptr_null(tp_label_invalid(key, 1, value, 4095));
	ck_assert_ptr_null(tp_label_invalid(key, 2048, value, 2048));
	ck_assert_str_eq(tp_label_invalid(key, 4096, value, 0), "the key is over 4095 bytes");
	ck_assert_str_eq(tp_label_invalid(key, 4096, NULL, 0), "the key is over 4095 bytes");
	ck_assert_str_eq(tp_label_invalid(key, 2048, value, 2049),
	                 "key and value are over 4096 bytes together");
	ck_assert_str_eq(tp_label_invalid(key, 0, value, 1), "the key is empty");
}
END_TEST

START_TEST(rejects_label_with_nul)
{
	ck_assert_str_eq(LABEL_INVALID("a\0b", "v"), "the key contains a NUL byte");
	ck_assert_str_eq(LABEL_INVALID("k", "v\0"), "the value contains a NUL byte");
	ck_assert_str_eq(LABEL_INVALID("\0", ""), "the key contains a NUL byte");
}
END_TEST

/* Invalid UTF-8 anywhere (stray continuation bytes, overlong forms, surrogates, past
 * U+10FFFF, cut short), and control characters (C0, DEL, C1) in keys. */
START_TEST(rejects_labels_that_are_not_utf8_or_have_controls_in_the_key)
{
	static const char *const not_utf8[] = {
	    "\xff",         "\x80",         "\xc0\xaf",         "\xc1\xbf",         "\xe0\x80\xaf",
	    "\xed\xa0\x80", "\xed\xbf\xbf", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xc3",
	    "a\xe2\x82",    "\xf0\x9f\x90",
	};
	static const char *const controls[] = {"a\nb",    "\t",       "\x1b[2J",
	                                       "del\x7f", "\xc2\x85", "\xc2\x9f"};

	for (size_t i = 0; i < sizeof not_utf8 / sizeof not_utf8[0]; i++) {
		ck_assert_str_eq(tp_label_invalid(not_utf8[i], strlen(not_utf8[i]), "v", 1),
		                 "the key is not valid UTF-8");
		ck_assert_str_eq(tp_label_invalid("k", 1, not_utf8[i], strlen(not_utf8[i])),
		                 "the value is not valid UTF-8");
	}
	for (size_t i = 0; i < sizeof controls / sizeof controls[0]; i++) {
		ck_assert_str_eq(tp_label_invalid(controls[i], strlen(controls[i]), "v", 1),
		                 "the key contains a control character");
		ck_assert_ptr_null(tp_label_invalid("k", 1, controls[i], strlen(controls[i])));
	}
	/* The neighbours of what is refused are fine. */
	ck_assert_ptr_null(
	    LABEL_INVALID("\xc2\xa0\xed\x9f\xbf\xee\x80\x80\xf4\x8f\xbf\xbf ~", "v"));
}
END_TEST

/* Every code has a name of its own, read back as that code; any other word is no code. */
START_TEST(names_every_error_code_once)
{
	unsigned n = 0;

	ck_assert_ptr_null(tp_error_name(TP_ERROR_NONE));
	for (unsigned c = TP_ERROR_NONE + 1; c <= TP_ERROR_INTERNAL; c++, n++) {
		const char *name = tp_error_name((enum tp_error)c);

		ck_assert_ptr_nonnull(name);
		ck_assert_int_eq(tp_error_parse(name), (int)c);
	}
	ck_assert_uint_eq(n, 14);
	ck_assert_int_eq(tp_error_of_errno(-EOPNOTSUPP), TP_ERROR_NOT_SUPPORTED);
	ck_assert_str_eq(tp_error_name(TP_ERROR_NOT_SUPPORTED), "not_supported");
	ck_assert_ptr_null(tp_error_name((enum tp_error)(TP_ERROR_INTERNAL + 1)));
	ck_assert_int_eq(tp_error_parse("busy"), TP_ERROR_BUSY);
	ck_assert_int_eq(tp_error_parse("Busy"), TP_ERROR_NONE);
	ck_assert_int_eq(tp_error_parse(""), TP_ERROR_NONE);
	ck_assert_int_eq(tp_error_parse("internal "), TP_ERROR_NONE);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("rules");
	TCase *tc = tcase_create("rules");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, accepts_plain_names);
	tcase_add_test(tc, rejects_names_that_could_escape_or_deceive);
	tcase_add_test(tc, parses_sizes_with_binary_suffixes);
	tcase_add_test(tc, rejects_malformed_and_overflowing_sizes);
	tcase_add_test(tc, formats_sizes_in_human_units);
	tcase_add_test(tc, formats_size_just_below_a_unit_in_that_unit);
	tcase_add_test(tc, accepts_labels_up_to_containerds_limits);
	tcase_add_test(tc, rejects_label_with_nul);
	tcase_add_test(tc, rejects_labels_that_are_not_utf8_or_have_controls_in_the_key);
	tcase_add_test(tc, names_every_error_code_once);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
