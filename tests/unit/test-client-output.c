/* Unit tests for client/output.c: how thinproxy shows the daemon's answers (tables,
 * human sizes, details, JSON) and its error lines. The answers are canned JSON in the
 * shapes docs/api.md gives. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "tp-cleanup.h"
#include "../../client/output.h"

/* Everything PRINT writes to a FILE, as a string the caller frees. */
#define CAPTURE(call)                                    \
	({                                               \
		char *_text = NULL;                      \
		size_t _len = 0;                         \
		FILE *f = open_memstream(&_text, &_len); \
		ck_assert_ptr_nonnull(f);                \
		ck_assert_int_eq((call), 0);             \
		fclose(f);                               \
		_text;                                   \
	})

static struct json_object *parse(const char *text)
{
	struct json_object *o = json_tokener_parse(text);

	ck_assert_msg(o != NULL, "bad test JSON: %s", text);
	return o;
}

static const char volumes_json[] =
    "[{\"name\": \"layer1\", \"owner\": \"alice\", \"size\": 1073741824, \"used\": 65536,"
    "  \"state\": \"ready\", \"parent\": \"images/base\", \"created\": \"2026-11-23T10:00:00Z\","
    "  \"writable\": true},"
    " {\"name\": \"images/base\", \"owner\": null, \"size\": 10737418240, \"used\": 1610612736,"
    "  \"state\": \"image\", \"parent\": null, \"writable\": false},"
    " {\"name\": \"bob/scratch\", \"owner\": \"bob\", \"size\": 100, \"used\": 0,"
    "  \"state\": \"committed\", \"parent\": null, \"writable\": false}]";

START_TEST(aligns_columns_to_the_widest_cell_without_trailing_blanks)
{
	static const struct column columns[] = {{"NAME", ALIGN_LEFT}, {"STATE", ALIGN_LEFT}};
	static const char *const rows[][2] = {{"a", "ready"}, {"a-long-name", "committed"}};
	struct table *t = table_new(columns, 2, true);
	CLEANUP_FREE char *text = NULL;

	ck_assert_ptr_nonnull(t);
	for (size_t i = 0; i < 2; i++)
		ck_assert_int_eq(table_add_row(t, rows[i]), 0);
	text = CAPTURE(table_print(t, f));
	ck_assert_str_eq(text, "NAME         STATE\n"
	                       "a            ready\n"
	                       "a-long-name  committed\n");
	table_free(t);
}
END_TEST

START_TEST(right_aligns_number_columns_header_included)
{
	static const struct column columns[] = {{"N", ALIGN_RIGHT}, {"SIZE", ALIGN_RIGHT}};
	static const char *const rows[][2] = {{"1", "512M"}, {"100", "1.5G"}, {"7", "10T"}};
	struct table *t = table_new(columns, 2, true);
	CLEANUP_FREE char *text = NULL;

	for (size_t i = 0; i < 3; i++)
		ck_assert_int_eq(table_add_row(t, rows[i]), 0);
	text = CAPTURE(table_print(t, f));
	ck_assert_str_eq(text, "  N  SIZE\n"
	                       "  1  512M\n"
	                       "100  1.5G\n"
	                       "  7   10T\n");
	table_free(t);
}
END_TEST

START_TEST(prints_a_missing_cell_as_a_dash_and_an_empty_table_as_its_header)
{
	static const struct column columns[] = {{"NAME", ALIGN_LEFT}, {"PARENT", ALIGN_LEFT}};
	const char *row[] = {"x", NULL};
	struct table *t = table_new(columns, 2, true);
	CLEANUP_FREE char *empty = NULL;
	CLEANUP_FREE char *text = NULL;

	empty = CAPTURE(table_print(t, f));
	ck_assert_str_eq(empty, "NAME  PARENT\n");
	ck_assert_int_eq(table_add_row(t, row), 0);
	text = CAPTURE(table_print(t, f));
	ck_assert_str_eq(text, "NAME  PARENT\n"
	                       "x     -\n");
	table_free(t);
}
END_TEST

START_TEST(counts_utf8_characters_not_bytes_for_width)
{
	static const struct column columns[] = {{"A", ALIGN_LEFT}, {"B", ALIGN_LEFT}};
	static const char *const rows[][2] = {{"\xc3\xa4\xc3\xa4", "x"}, {"abc", "y"}};
	struct table *t = table_new(columns, 2, false);
	CLEANUP_FREE char *text = NULL;

	for (size_t i = 0; i < 2; i++)
		ck_assert_int_eq(table_add_row(t, rows[i]), 0);
	text = CAPTURE(table_print(t, f));
	ck_assert_str_eq(text, "\xc3\xa4\xc3\xa4   x\n"
	                       "abc  y\n");
	table_free(t);
}
END_TEST

START_TEST(replaces_control_characters_the_daemon_sends)
{
	static const struct column columns[] = {{"NAME", ALIGN_LEFT}};
	const char *row[] = {"evil\x1b]0;owned\x07\r\n"};
	struct table *t = table_new(columns, 1, false);
	CLEANUP_FREE char *text = NULL;

	ck_assert_int_eq(table_add_row(t, row), 0);
	text = CAPTURE(table_print(t, f));
	ck_assert_str_eq(text, "evil?]0;owned???\n");
	table_free(t);
}
END_TEST

START_TEST(lists_volumes_with_human_sizes_and_dashes_for_null)
{
	struct json_object *list = parse(volumes_json);
	CLEANUP_FREE char *text = CAPTURE(print_volumes(f, list, false));

	ck_assert_str_eq(text, "NAME         SIZE  USED  STATE      PARENT\n"
	                       "layer1         1G   64K  ready      images/base\n"
	                       "images/base   10G  1.5G  image      -\n"
	                       "bob/scratch   100     0  committed  -\n");
	json_object_put(list);
}
END_TEST

START_TEST(lists_only_names_when_quiet)
{
	struct json_object *list = parse(volumes_json);
	CLEANUP_FREE char *text = CAPTURE(print_volumes(f, list, true));

	ck_assert_str_eq(text, "layer1\nimages/base\nbob/scratch\n");
	json_object_put(list);
}
END_TEST

START_TEST(shows_one_volume_as_a_one_row_table)
{
	struct json_object *v = parse("{\"name\": \"l2\", \"size\": 2147483648, \"used\": 0,"
	                              " \"state\": \"ready\", \"parent\": \"layer1\"}");
	CLEANUP_FREE char *text = CAPTURE(print_volumes(f, v, false));

	ck_assert_str_eq(text, "NAME  SIZE  USED  STATE  PARENT\n"
	                       "l2      2G     0  ready  layer1\n");
	json_object_put(v);
}
END_TEST

START_TEST(prints_nothing_for_an_empty_answer)
{
	CLEANUP_FREE char *a = CAPTURE(print_volumes(f, NULL, false));
	CLEANUP_FREE char *b = CAPTURE(print_json(f, NULL));
	CLEANUP_FREE char *c = CAPTURE(print_volume_details(f, NULL));

	ck_assert_str_eq(a, "");
	ck_assert_str_eq(b, "");
	ck_assert_str_eq(c, "");
}
END_TEST

START_TEST(details_a_volume_with_exact_bytes_and_admin_fields)
{
	struct json_object *v =
	    parse("{\"name\": \"layer1\", \"owner\": \"alice\", \"size\": 1073741824,"
	          " \"used\": 65536, \"state\": \"ready\", \"parent\": \"images/base\","
	          " \"created\": \"2026-11-23T10:00:00Z\", \"writable\": true, \"thin_id\": 17}");
	CLEANUP_FREE char *text = CAPTURE(print_volume_details(f, v));

	ck_assert_str_eq(text, "name:      layer1\n"
	                       "owner:     alice\n"
	                       "size:      1G (1073741824 bytes)\n"
	                       "used:      64K (65536 bytes)\n"
	                       "state:     ready\n"
	                       "parent:    images/base\n"
	                       "created:   2026-11-23T10:00:00Z\n"
	                       "writable:  yes\n"
	                       "thin id:   17\n");
	json_object_put(v);
}
END_TEST

/* Labels one a line under "labels:", their control characters replaced; "none" for none;
 * nothing at all from a daemon that does not send them. */
START_TEST(details_a_volume_with_its_labels_one_a_line)
{
	struct json_object *v =
	    parse("{\"name\": \"work\", \"created\": \"2026-11-23T10:00:00Z\","
	          " \"updated\": \"2026-11-23T10:05:00Z\", \"labels\": {\"containerd.io/gc.root\":"
	          " \"2026\", \"note\": \"two\\nlines\\u001b[2J\", \"empty\": \"\"}}");
	struct json_object *none = parse("{\"name\": \"base\", \"labels\": {}}");
	CLEANUP_FREE char *text = CAPTURE(print_volume_details(f, v));
	CLEANUP_FREE char *text_none = CAPTURE(print_volume_details(f, none));

	ck_assert_str_eq(text, "name:      work\n"
	                       "owner:     -\n"
	                       "size:      -\n"
	                       "used:      -\n"
	                       "state:     -\n"
	                       "parent:    -\n"
	                       "created:   2026-11-23T10:00:00Z\n"
	                       "updated:   2026-11-23T10:05:00Z\n"
	                       "writable:  -\n"
	                       "labels:    containerd.io/gc.root=2026\n"
	                       "           note=two?lines?[2J\n"
	                       "           empty=\n");
	ck_assert_ptr_nonnull(strstr(text_none, "\nlabels:    none\n"));
	json_object_put(v);
	json_object_put(none);
}
END_TEST

START_TEST(shows_usage_against_quotas_and_null_as_no_limit)
{
	struct json_object *u =
	    parse("{\"tenant\": \"alice\", \"volumes\": 3, \"max_volumes\": 100,"
	          " \"size\": 3221225472, \"max_size\": 1099511627776, \"used\": 10485760,"
	          " \"max_used\": null}");
	CLEANUP_FREE char *text = CAPTURE(print_usage(f, u));

	ck_assert_str_eq(text, "tenant:   alice\n"
	                       "volumes:  3 (limit 100)\n"
	                       "size:     3G (limit 1T)\n"
	                       "used:     10M (no limit)\n");
	json_object_put(u);
}
END_TEST

START_TEST(shows_pool_space_with_percentages)
{
	struct json_object *p =
	    parse("{\"name\": \"thinproxy-pool\", \"transaction_id\": 42, \"block_size\": 65536,"
	          " \"data\": {\"used\": 1610612736, \"total\": 107374182400},"
	          " \"metadata\": {\"used\": 1048576, \"total\": 134217728,"
	          " \"limit\": 1073741824, \"state\": \"ok\"},"
	          " \"mode\": \"out_of_data_space\", \"needs_check\": false,"
	          " \"min_free\": 10737418240, \"volumes\": 12}");
	CLEANUP_FREE char *text = CAPTURE(print_pool(f, p));

	ck_assert_str_eq(text, "name:            thinproxy-pool\n"
	                       "mode:            out_of_data_space\n"
	                       "data:            1.5G of 100G used (1.5%)\n"
	                       "metadata:        1M of 128M used (0.8%), ok, grows to 1G\n"
	                       "volumes:         12\n"
	                       "block size:      64K\n"
	                       "min free:        10G\n"
	                       "needs check:     no\n"
	                       "transaction id:  42\n");
	json_object_put(p);
}
END_TEST

START_TEST(says_when_full_metadata_refuses_new_volumes)
{
	struct json_object *p =
	    parse("{\"name\": \"p\", \"metadata\": {\"used\": 3355443, \"total\": 4194304,"
	          " \"limit\": 4194304, \"state\": \"full\"}}");
	CLEANUP_FREE char *text = CAPTURE(print_pool(f, p));

	ck_assert_ptr_nonnull(strstr(text, "metadata:        3.2M of 4M used (80.0%), full: new "
	                                   "volumes refused\n"));
	json_object_put(p);
}
END_TEST

START_TEST(lists_tenants_with_a_dash_for_unlimited_quotas)
{
	struct json_object *list =
	    parse("[{\"name\": \"alice\", \"uid\": 1000, \"gid\": 1000, \"nbd_uid\": 800001,"
	          "  \"max_volumes\": 100, \"max_size\": 1099511627776, \"max_used\": null,"
	          "  \"volumes\": 3, \"size\": 3221225472, \"used\": 10485760, \"nbd\": "
	          "\"running\"}]");
	CLEANUP_FREE char *text = CAPTURE(print_tenants(f, list, false));

	ck_assert_str_eq(
	    text,
	    "NAME    UID   GID  VOLUMES  MAX_VOLUMES  SIZE  MAX_SIZE  USED  MAX_USED  NBD\n"
	    "alice  1000  1000        3          100    3G        1T   10M         -  running\n");
	json_object_put(list);
}
END_TEST

START_TEST(details_a_tenant_with_its_quotas)
{
	struct json_object *t =
	    parse("{\"name\": \"alice\", \"uid\": 1000, \"gid\": 1000, \"nbd_uid\": 800001,"
	          " \"max_volumes\": null, \"max_size\": 1099511627776, \"max_used\": null,"
	          " \"volumes\": 0, \"size\": 0, \"used\": 0, \"nbd\": \"stopped\"}");
	CLEANUP_FREE char *text = CAPTURE(print_tenant_details(f, t));

	ck_assert_str_eq(text, "name:     alice\n"
	                       "uid:      1000\n"
	                       "gid:      1000\n"
	                       "nbd uid:  800001\n"
	                       "nbd:      stopped\n"
	                       "volumes:  0 (no limit)\n"
	                       "size:     0 (limit 1T)\n"
	                       "used:     0 (no limit)\n");
	json_object_put(t);
}
END_TEST

START_TEST(lists_images_with_whom_they_are_published_to)
{
	struct json_object *list =
	    parse("[{\"name\": \"base\", \"size\": 10737418240, \"used\": 1073741824,"
	          "  \"state\": \"image\", \"published\": \"all\"},"
	          " {\"name\": \"debian\", \"size\": 2147483648, \"used\": 0,"
	          "  \"state\": \"image\", \"published\": [\"alice\", \"bob\"]},"
	          " {\"name\": \"new\", \"size\": 65536, \"used\": 0, \"published\": []}]");
	CLEANUP_FREE char *text = CAPTURE(print_images(f, list, false));

	ck_assert_str_eq(text, "NAME    SIZE  USED  PUBLISHED\n"
	                       "base     10G    1G  all\n"
	                       "debian    2G     0  alice,bob\n"
	                       "new      64K     0  -\n");
	json_object_put(list);
}
END_TEST

START_TEST(lists_grants_with_their_access)
{
	struct json_object *list = parse(
	    "[{\"owner\": \"alice\", \"volume\": \"layer1\", \"to\": \"bob\", \"write\": "
	    "false},"
	    " {\"owner\": \"alice\", \"volume\": \"db\", \"to\": \"carol\", \"write\": true}]");
	CLEANUP_FREE char *text = CAPTURE(print_grants(f, list));

	ck_assert_str_eq(text, "OWNER  VOLUME  TO     ACCESS\n"
	                       "alice  layer1  bob    ro\n"
	                       "alice  db      carol  rw\n");
	json_object_put(list);
}
END_TEST

START_TEST(prints_json_indented_without_escaping_slashes)
{
	struct json_object *v =
	    parse("{\"name\": \"l\", \"parent\": \"images/base\", \"n\": null}");
	CLEANUP_FREE char *text = CAPTURE(print_json(f, v));

	ck_assert_str_eq(text, "{\n"
	                       "  \"name\": \"l\",\n"
	                       "  \"parent\": \"images/base\",\n"
	                       "  \"n\": null\n"
	                       "}\n");
	json_object_put(v);
}
END_TEST

/* Run FN with stderr redirected, and hand back what it wrote there. */
static char *capture_stderr(int (*fn)(void), int *ret_r)
{
	char path[] = "/tmp/test-client-output-XXXXXX";
	int fd = mkstemp(path), saved = dup(STDERR_FILENO);
	char *text = NULL;
	size_t len = 0;
	FILE *f;

	ck_assert_int_ge(fd, 0);
	unlink(path);
	fflush(stderr);
	dup2(fd, STDERR_FILENO);
	*ret_r = fn();
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	lseek(fd, 0, SEEK_SET);
	f = fdopen(fd, "r");
	ck_assert_int_ge(getdelim(&text, &len, '\0', f), 0);
	fclose(f);
	return text;
}

static int quota_error(void)
{
	return error_line(-EDQUOT, "create layer1", "quota exceeded: %s",
	                  "tenant alice may own at most 10 volumes");
}

static int socket_error(void)
{
	return error_line(-ENOENT, NULL, "cannot reach %s: %s", "/run/thinproxy/control.sock",
	                  strerror(ENOENT));
}

static int missing_list(void)
{
	struct json_object *answer = parse("{\"volume\": []}"), *list = NULL;
	int r = answer_list("ls", answer, "volumes", &list);

	ck_assert_ptr_null(list);
	json_object_put(answer);
	return r;
}

START_TEST(writes_one_error_line_naming_the_object_and_the_reason)
{
	int r;
	CLEANUP_FREE char *quota = capture_stderr(quota_error, &r);

	ck_assert_int_eq(r, -EDQUOT);
	ck_assert_str_eq(quota, "thinproxy: create layer1: quota exceeded: tenant alice may own "
	                        "at most 10 volumes\n");
}
END_TEST

START_TEST(writes_an_error_line_without_object_when_there_is_none)
{
	int r;
	CLEANUP_FREE char *text = capture_stderr(socket_error, &r);

	ck_assert_int_eq(r, -ENOENT);
	ck_assert_str_eq(text, "thinproxy: cannot reach /run/thinproxy/control.sock: No such file "
	                       "or directory\n");
}
END_TEST

START_TEST(refuses_an_answer_without_the_expected_list)
{
	int r;
	CLEANUP_FREE char *text = capture_stderr(missing_list, &r);

	ck_assert_int_eq(r, -EBADMSG);
	ck_assert_str_eq(text, "thinproxy: ls: the daemon's answer has no \"volumes\" list\n");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("client-output");
	TCase *tc = tcase_create("client-output");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, aligns_columns_to_the_widest_cell_without_trailing_blanks);
	tcase_add_test(tc, right_aligns_number_columns_header_included);
	tcase_add_test(tc, prints_a_missing_cell_as_a_dash_and_an_empty_table_as_its_header);
	tcase_add_test(tc, counts_utf8_characters_not_bytes_for_width);
	tcase_add_test(tc, replaces_control_characters_the_daemon_sends);
	tcase_add_test(tc, lists_volumes_with_human_sizes_and_dashes_for_null);
	tcase_add_test(tc, lists_only_names_when_quiet);
	tcase_add_test(tc, shows_one_volume_as_a_one_row_table);
	tcase_add_test(tc, prints_nothing_for_an_empty_answer);
	tcase_add_test(tc, details_a_volume_with_exact_bytes_and_admin_fields);
	tcase_add_test(tc, details_a_volume_with_its_labels_one_a_line);
	tcase_add_test(tc, shows_usage_against_quotas_and_null_as_no_limit);
	tcase_add_test(tc, shows_pool_space_with_percentages);
	tcase_add_test(tc, says_when_full_metadata_refuses_new_volumes);
	tcase_add_test(tc, lists_tenants_with_a_dash_for_unlimited_quotas);
	tcase_add_test(tc, details_a_tenant_with_its_quotas);
	tcase_add_test(tc, lists_images_with_whom_they_are_published_to);
	tcase_add_test(tc, lists_grants_with_their_access);
	tcase_add_test(tc, prints_json_indented_without_escaping_slashes);
	tcase_add_test(tc, writes_one_error_line_naming_the_object_and_the_reason);
	tcase_add_test(tc, writes_an_error_line_without_object_when_there_is_none);
	tcase_add_test(tc, refuses_an_answer_without_the_expected_list);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
