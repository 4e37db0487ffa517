/* Unit tests for include/tp-rules.h: the name and size rules every program shares. */
#include <check.h>
#include <stdlib.h>

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
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
