/* How thinproxy shows what the daemon answers: aligned tables with human sizes for people,
 * the daemon's JSON for scripts, and one line on stderr per error. Text from the daemon
 * has its control characters replaced before it reaches a terminal. */
#ifndef TP_CLIENT_OUTPUT_H
#define TP_CLIENT_OUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <json-c/json.h>

/* Print "thinproxy: WHAT: MESSAGE" on stderr ("thinproxy: MESSAGE" if WHAT is NULL) and
 * return R, so that callers can write "return error_line(-EINVAL, ...)". */
int error_line(int r, const char *what, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* While MUTED, this thread's error_line prints nothing (and still returns R): for a question whose
 * failure only means that a message about to be printed is less specific. */
void error_lines_mute(bool muted);
/* While BUF is not NULL, this thread's error_line writes its line ("WHAT: MESSAGE", the
 * last one only) into BUF (LEN bytes, emptied now) instead of printing it: for a caller
 * that passes the reason on itself, as the snapshotter does over gRPC. Muting still
 * wins. NULL prints again. */
void error_lines_capture(char *buf, size_t len);

enum align { ALIGN_LEFT, ALIGN_RIGHT };

struct column {
	const char *header;
	enum align align;
};

struct table;

/* A table with N_COLUMNS COLUMNS (kept by pointer: they must outlive the table), printed
 * with a header line if SHOW_HEADER. NULL if out of memory. */
struct table *table_new(const struct column *columns, size_t n_columns, bool show_header);
/* Free T; NULL is fine. */
void table_free(struct table *t);
/* Append a row of one cell per column, copied; a NULL cell prints as "-". */
int table_add_row(struct table *t, const char *const *cells);
/* Print T with each column as wide as its widest cell, two spaces between columns, and
 * no trailing blanks. Returns 0 or -EIO. */
int table_print(const struct table *t, FILE *f);

static inline void cleanup_table(struct table **t)
{
	table_free(*t);
}
#define CLEANUP_TABLE __attribute__((cleanup(cleanup_table)))

/* VALUE as indented JSON and a newline. */
int print_json(FILE *f, struct json_object *value);

/* The array member KEY of a list answer ({"volumes": [...]}) in *RET_LIST (borrowed from
 * ANSWER), or an error line naming WHAT and -EBADMSG. */
int answer_list(const char *what, struct json_object *answer, const char *key,
                struct json_object **ret_list);

/* Objects as tables: LIST is an array, or one object for a one-row table. QUIET prints
 * only the names, one a line. */
int print_volumes(FILE *f, struct json_object *list, bool quiet);
int print_tenants(FILE *f, struct json_object *list, bool quiet);
int print_images(FILE *f, struct json_object *list, bool quiet);
int print_grants(FILE *f, struct json_object *list);

/* The same, one object at a time, for a listing parsed as it is read (http_json_each):
 * rows_add takes each object (and is that function's callback), rows_print prints them
 * all, rows_free frees what is held. Nothing is printed before rows_print. */
struct rows {
	FILE *f;
	const char *const *keys;
	size_t n;
	struct table *t;
};
int volume_rows_begin(struct rows *rows, FILE *f, bool quiet);
int rows_add(struct json_object *o, void *rows);
int rows_print(struct rows *rows);
void rows_free(struct rows *rows);
#define CLEANUP_ROWS __attribute__((cleanup(rows_free)))

/* One object, every field on its own "key: value" line; a volume's exact usage too when it
 * has the member "usage" (which info adds). */
int print_volume_details(FILE *f, struct json_object *volume);
int print_tenant_details(FILE *f, struct json_object *tenant);
int print_usage(FILE *f, struct json_object *usage);
int print_pool(FILE *f, struct json_object *pool);
/* A diff's CHANGES (its "changes" list) as a table of offsets, lengths and kinds, in bytes,
 * and a line that totals them. */
int print_diff(FILE *f, struct json_object *changes);

#endif
