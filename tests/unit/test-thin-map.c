/* Unit tests for daemon/thin-map.c: byte ranges from runs of mappings, and the diff of two
 * devices' runs as thin_delta tells blocks apart (the same pool block, or not). Runs are
 * written out here as a walk of dm-thin's metadata gives them (tests/vm/test-pool.c holds
 * the walk itself against thin_dump). Blocks are 64 KiB unless a test says otherwise. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/thin-map.h"
#include "../../daemon/thin-metadata.h"

#define B (UINT64_C(64) << 10)

/* A run list from "VIRT DATA LEN" triples. */
static struct run_list runs(size_t n, const uint64_t (*t)[3])
{
	struct run_list l = {.runs = calloc(n ? n : 1, sizeof *l.runs), .n = n, .cap = n};

	ck_assert_ptr_nonnull(l.runs);
	for (size_t i = 0; i < n; i++)
		l.runs[i] =
		    (struct thin_meta_run){.virt = t[i][0], .data = t[i][1], .len = t[i][2]};
	return l;
}

/* "OFF LEN" pairs of RANGES, space-separated, in block units where they are whole. */
static const char *ranges_text(const struct export_range *r, size_t n)
{
	static char buf[1024];
	size_t len = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%llu+%llu", i ? " " : "",
		                        (unsigned long long)r[i].offset,
		                        (unsigned long long)r[i].length);
	return buf;
}

static const char *changes_text(const struct volume_change *c, size_t n)
{
	static char buf[1024];
	size_t len = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n; i++)
		len +=
		    (size_t)snprintf(buf + len, sizeof buf - len, "%s%llu+%llu%s", i ? " " : "",
		                     (unsigned long long)(c[i].offset / B),
		                     (unsigned long long)(c[i].length / B), c[i].data ? "d" : "z");
	return buf;
}

START_TEST(joins_touching_runs_into_one_range_and_cuts_the_last_block_at_the_size)
{
	/* Two runs that touch in virtual blocks but not in data blocks, a gap, and a run over
	 * the device's end, whose last block is cut at the size and whose blocks past it go. */
	static const uint64_t t[][3] = {{0, 10, 2}, {2, 50, 1}, {5, 7, 1}, {8, 100, 4}};
	struct run_list l = runs(4, t);
	struct export_range *r = NULL;
	size_t n = 0;
	char want[256];

	ck_assert_int_eq(run_list_ranges(&l, B, 9 * B + 4096, &r, &n), 0);
	snprintf(want, sizeof want, "0+%llu %llu+%llu %llu+%llu", (unsigned long long)(3 * B),
	         (unsigned long long)(5 * B), (unsigned long long)B, (unsigned long long)(8 * B),
	         (unsigned long long)(B + 4096));
	ck_assert_str_eq(ranges_text(r, n), want);
	free(r);
	run_list_free(&l);
}
END_TEST

START_TEST(maps_nothing_for_a_device_without_mappings)
{
	struct run_list l = {0};
	struct export_range *r = (void *)1;
	size_t n = 7;

	ck_assert_int_eq(run_list_ranges(&l, B, 100 * B, &r, &n), 0);
	ck_assert_uint_eq(n, 0);
	ck_assert_ptr_null(r);
}
END_TEST

START_TEST(diffs_a_snapshot_against_its_origin_block_by_block)
{
	/* The origin maps 0-9 to data 100-109. The snapshot shares 0-3, overwrote 4-5 (new
	 * blocks), shares 6-7, unmapped 8-9 (a trim), and wrote 12-13 where the origin has
	 * nothing. */
	static const uint64_t o[][3] = {{0, 100, 10}};
	static const uint64_t s[][3] = {{0, 100, 4}, {4, 200, 2}, {6, 106, 2}, {12, 300, 2}};
	struct run_list old = runs(1, o), snap = runs(4, s);
	struct volume_change *c = NULL;
	size_t n = 0;

	ck_assert_int_eq(run_list_diff(&snap, &old, B, 100 * B, &c, &n), 0);
	ck_assert_str_eq(changes_text(c, n), "4+2d 8+2z 12+2d");
	free(c);
	/* And the other way round: what the origin has that the snapshot does not share. */
	ck_assert_int_eq(run_list_diff(&old, &snap, B, 100 * B, &c, &n), 0);
	ck_assert_str_eq(changes_text(c, n), "4+2d 8+2d 12+2z");
	free(c);
	ck_assert_uint_eq(run_list_exclusive_blocks(&snap, &old), 4);
	ck_assert_uint_eq(run_list_exclusive_blocks(&old, &snap), 4);
	run_list_free(&old);
	run_list_free(&snap);
}
END_TEST

START_TEST(finds_no_difference_between_a_snapshot_and_its_untouched_origin)
{
	static const uint64_t o[][3] = {{0, 100, 3}, {7, 5, 2}};
	struct run_list a = runs(2, o), b = runs(2, o);
	struct volume_change *c = NULL;
	size_t n = 9;

	ck_assert_int_eq(run_list_diff(&a, &b, B, 100 * B, &c, &n), 0);
	ck_assert_uint_eq(n, 0);
	ck_assert_uint_eq(run_list_exclusive_blocks(&a, &b), 0);
	free(c);
	run_list_free(&a);
	run_list_free(&b);
}
END_TEST

START_TEST(diffs_runs_that_are_split_differently_on_each_side)
{
	/* The same mappings, cut into runs at different places: no difference. One block
	 * (5) maps elsewhere: a difference of one block, found inside the runs. */
	static const uint64_t a[][3] = {{0, 100, 4}, {4, 104, 6}};
	static const uint64_t b[][3] = {{0, 100, 2}, {2, 102, 3}, {5, 999, 1}, {6, 106, 4}};
	struct run_list la = runs(2, a), lb = runs(4, b);
	struct volume_change *c = NULL;
	size_t n = 0;

	ck_assert_int_eq(run_list_diff(&la, &lb, B, 100 * B, &c, &n), 0);
	ck_assert_str_eq(changes_text(c, n), "5+1d");
	free(c);
	run_list_free(&la);
	run_list_free(&lb);
}
END_TEST

START_TEST(diffs_only_within_the_size)
{
	static const uint64_t a[][3] = {{0, 1, 1}, {50, 2, 10}};
	struct run_list la = runs(2, a), none = {0};
	struct volume_change *c = NULL;
	size_t n = 0;

	ck_assert_int_eq(run_list_diff(&la, &none, B, 55 * B, &c, &n), 0);
	ck_assert_str_eq(changes_text(c, n), "0+1d 50+5d");
	free(c);
	run_list_free(&la);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("thin-map");
	TCase *tc = tcase_create("thin-map");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, joins_touching_runs_into_one_range_and_cuts_the_last_block_at_the_size);
	tcase_add_test(tc, maps_nothing_for_a_device_without_mappings);
	tcase_add_test(tc, diffs_a_snapshot_against_its_origin_block_by_block);
	tcase_add_test(tc, finds_no_difference_between_a_snapshot_and_its_untouched_origin);
	tcase_add_test(tc, diffs_runs_that_are_split_differently_on_each_side);
	tcase_add_test(tc, diffs_only_within_the_size);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
