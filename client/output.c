/* Tables, details, JSON and error lines: everything thinproxy prints. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "tp-cleanup.h"
#include "tp-rules.h"
#include "output.h"

#define CELL_MAX    256
#define COLUMNS_MAX 16 /* of the object tables below */

struct table {
	const struct column *columns;
	size_t n_columns;
	bool show_header;
	char **cells; /* n_rows rows of n_columns cells */
	size_t n_rows;
	size_t cap_rows; /* rows CELLS has room for */
};

/* Replace S's control characters with '?' in place, so that nothing the daemon sends
 * can move the cursor or rewrite the terminal's title. */
static char *sanitize(char *s)
{
	for (char *p = s; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	return s;
}

/* Per thread: the thread that follows an import mutes itself for good. */
static __thread bool error_lines_muted;
/* Per thread: where error_line writes instead of stderr, for the snapshotter. */
static __thread char *error_lines_buf;
static __thread size_t error_lines_len;

void error_lines_mute(bool muted)
{
	error_lines_muted = muted;
}

void error_lines_capture(char *buf, size_t len)
{
	error_lines_buf = len > 0 ? buf : NULL;
	error_lines_len = len;
	if (error_lines_buf != NULL)
		buf[0] = '\0';
}

int error_line(int r, const char *what, const char *fmt, ...)
{
	CLEANUP_FREE char *message = NULL;
	CLEANUP_FREE char *subject = NULL;
	va_list ap;
	int n;

	if (error_lines_muted)
		return r;
	va_start(ap, fmt);
	n = vasprintf(&message, fmt, ap);
	va_end(ap);
	if (n < 0) {
		message = NULL;
		fprintf(stderr, "thinproxy: %s\n", strerror(ENOMEM));
		return r;
	}
	if (error_lines_buf != NULL) {
		if (what != NULL)
			snprintf(error_lines_buf, error_lines_len, "%s: %s", what, message);
		else
			snprintf(error_lines_buf, error_lines_len, "%s", message);
		return r;
	}
	if (what != NULL)
		subject = strdup(what);
	if (subject != NULL)
		fprintf(stderr, "thinproxy: %s: %s\n", sanitize(subject), sanitize(message));
	else
		fprintf(stderr, "thinproxy: %s\n", sanitize(message));
	return r;
}

struct table *table_new(const struct column *columns, size_t n_columns, bool show_header)
{
	struct table *t = calloc(1, sizeof *t);

	if (t == NULL)
		return NULL;
	t->columns = columns;
	t->n_columns = n_columns;
	t->show_header = show_header;
	return t;
}

void table_free(struct table *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->n_rows * t->n_columns; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t);
}

int table_add_row(struct table *t, const char *const *cells)
{
	size_t n = t->n_columns;
	char **grown;

	/* Doubling: growing by one row each time made `ls` of 10000 volumes spend a third of
	 * its time in malloc. */
	if (t->n_rows == t->cap_rows) {
		size_t cap = t->cap_rows ? 2 * t->cap_rows : 16;

		grown = reallocarray(t->cells, cap * n, sizeof *grown);
		if (grown == NULL)
			return -ENOMEM;
		t->cells = grown;
		t->cap_rows = cap;
	}
	grown = t->cells;
	for (size_t i = 0; i < n; i++) {
		char *copy = strdup(cells[i] != NULL ? cells[i] : "-");

		if (copy == NULL) {
			while (i-- > 0)
				free(grown[t->n_rows * n + i]);
			return -ENOMEM;
		}
		grown[t->n_rows * n + i] = sanitize(copy);
	}
	t->n_rows++;
	return 0;
}

/* How many columns S takes on a terminal: its UTF-8 characters, not its bytes. */
static size_t text_width(const char *s)
{
	size_t w = 0;

	for (; *s != '\0'; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

static void pad(FILE *f, size_t n)
{
	while (n-- > 0)
		fputc(' ', f);
}

int table_print(const struct table *t, FILE *f)
{
	CLEANUP_FREE size_t *widths = calloc(t->n_columns, sizeof *widths);
	size_t c, r;

	if (widths == NULL)
		return -ENOMEM;
	for (c = 0; c < t->n_columns; c++) {
		if (t->show_header)
			widths[c] = text_width(t->columns[c].header);
		for (r = 0; r < t->n_rows; r++) {
			size_t w = text_width(t->cells[r * t->n_columns + c]);

			if (w > widths[c])
				widths[c] = w;
		}
	}

	/* Row "-1" is the header. */
	for (r = t->show_header ? 0 : 1; r < t->n_rows + 1; r++) {
		for (c = 0; c < t->n_columns; c++) {
			const char *text =
			    r == 0 ? t->columns[c].header : t->cells[(r - 1) * t->n_columns + c];
			size_t room = widths[c] - text_width(text);
			bool last = c + 1 == t->n_columns;

			if (c > 0)
				fputs("  ", f);
			if (t->columns[c].align == ALIGN_RIGHT)
				pad(f, room);
			fputs(text, f);
			if (t->columns[c].align == ALIGN_LEFT && !last)
				pad(f, room);
		}
		fputc('\n', f);
	}
	return ferror(f) ? -EIO : 0;
}

int print_json(FILE *f, struct json_object *value)
{
	const char *text;

	if (value == NULL)
		return 0;
	text = json_object_to_json_string_ext(value, JSON_C_TO_STRING_PRETTY |
	                                                 JSON_C_TO_STRING_SPACED |
	                                                 JSON_C_TO_STRING_NOSLASHESCAPE);
	if (text == NULL)
		return -ENOMEM;
	fprintf(f, "%s\n", text);
	return ferror(f) ? -EIO : 0;
}

int answer_list(const char *what, struct json_object *answer, const char *key,
                struct json_object **ret_list)
{
	struct json_object *list;

	if (!json_object_object_get_ex(answer, key, &list) ||
	    !json_object_is_type(list, json_type_array))
		return error_line(-EBADMSG, what, "the daemon's answer has no \"%s\" list", key);
	*ret_list = list;
	return 0;
}

/* Member KEY of O; NULL when O is no object, lacks KEY, or KEY is null. */
static struct json_object *member(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
		return NULL;
	return v;
}

/* Whether O has KEY at all, null included. */
static bool has_member(struct json_object *o, const char *key)
{
	return json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, key, NULL);
}

/* Member KEY of O as an unsigned integer: true if it is one. */
static bool member_u64(struct json_object *o, const char *key, uint64_t *ret_value)
{
	struct json_object *v = member(o, key);

	if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
		return false;
	*ret_value = json_object_get_uint64(v);
	return true;
}

static bool is_size_key(const char *key)
{
	static const char *const keys[] = {"size",     "used",       "max_size",
	                                   "max_used", "block_size", "min_free"};

	for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
		if (strcmp(key, keys[i]) == 0)
			return true;
	return false;
}

/* Member KEY of O as a person reads it, in BUF if it needs room: sizes in human units,
 * booleans as yes/no ("rw"/"ro" for a grant's "write"), an image's "published" list
 * joined with commas, null or missing as "-". */
static const char *field(struct json_object *o, const char *key, char *buf, size_t len)
{
	struct json_object *v = member(o, key);
	uint64_t n;

	if (v == NULL)
		return "-";
	if (is_size_key(key) && member_u64(o, key, &n))
		return tp_format_size(n, buf, len);
	switch (json_object_get_type(v)) {
	case json_type_string:
		return json_object_get_string(v);
	case json_type_boolean:
		if (strcmp(key, "write") == 0)
			return json_object_get_boolean(v) ? "rw" : "ro";
		return json_object_get_boolean(v) ? "yes" : "no";
	case json_type_array:
		if (strcmp(key, "published") == 0) {
			size_t used = 0, n_items = json_object_array_length(v);

			buf[0] = '\0';
			for (size_t i = 0; i < n_items && used < len; i++) {
				struct json_object *item = json_object_array_get_idx(v, i);
				const char *s = json_object_get_string(item);
				int w = snprintf(buf + used, len - used, "%s%s", i > 0 ? "," : "",
				                 s != NULL ? s : "?");

				if (w < 0)
					break;
				used += (size_t)w;
			}
			return n_items > 0 ? buf : "-";
		}
		break;
	default:
		break;
	}
	snprintf(buf, len, "%s",
	         json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN |
	                                               JSON_C_TO_STRING_NOSLASHESCAPE));
	return buf;
}

/* Rows of COLUMNS showing KEYS; if QUIET, a table of the names alone, without a header,
 * which prints one name a line. */
static int rows_begin(struct rows *rows, FILE *f, const struct column *columns,
                      const char *const *keys, size_t n, bool quiet)
{
	static const struct column name_column[] = {{"NAME", ALIGN_LEFT}};
	static const char *const name_key[] = {"name"};

	memset(rows, 0, sizeof *rows);
	if (n > COLUMNS_MAX)
		return -E2BIG; /* more columns than a row has room for in rows_add */
	rows->f = f;
	rows->keys = quiet ? name_key : keys;
	rows->n = quiet ? 1 : n;
	rows->t = table_new(quiet ? name_column : columns, rows->n, !quiet);
	return rows->t ? 0 : -ENOMEM;
}

int rows_add(struct json_object *o, void *opaque)
{
	struct rows *rows = opaque;
	char bufs[COLUMNS_MAX][CELL_MAX];
	const char *cells[COLUMNS_MAX];

	for (size_t c = 0; c < rows->n; c++)
		cells[c] = field(o, rows->keys[c], bufs[c], sizeof bufs[c]);
	return table_add_row(rows->t, cells);
}

int rows_print(struct rows *rows)
{
	return table_print(rows->t, rows->f);
}

void rows_free(struct rows *rows)
{
	table_free(rows->t);
	rows->t = NULL;
}

/* Print LIST (an array, or one object) as a table of COLUMNS showing KEYS, or only the
 * "name" of each object if QUIET. */
static int print_objects(FILE *f, struct json_object *list, const struct column *columns,
                         const char *const *keys, size_t n, bool quiet)
{
	CLEANUP_ROWS struct rows rows = {0};
	bool one = !json_object_is_type(list, json_type_array);
	size_t n_rows = one ? 1 : json_object_array_length(list);
	int r;

	if (list == NULL)
		return 0;
	r = rows_begin(&rows, f, columns, keys, n, quiet);
	for (size_t i = 0; r == 0 && i < n_rows; i++)
		r = rows_add(one ? list : json_object_array_get_idx(list, i), &rows);
	return r < 0 ? r : rows_print(&rows);
}

static const struct column volume_columns[] = {
    {"NAME", ALIGN_LEFT},  {"SIZE", ALIGN_RIGHT},  {"USED", ALIGN_RIGHT},
    {"STATE", ALIGN_LEFT}, {"PARENT", ALIGN_LEFT},
};
static const char *const volume_keys[] = {"name", "size", "used", "state", "parent"};

int volume_rows_begin(struct rows *rows, FILE *f, bool quiet)
{
	return rows_begin(rows, f, volume_columns, volume_keys, ARRAY_SIZE(volume_keys), quiet);
}

int print_volumes(FILE *f, struct json_object *list, bool quiet)
{
	return print_objects(f, list, volume_columns, volume_keys, ARRAY_SIZE(volume_keys), quiet);
}

int print_tenants(FILE *f, struct json_object *list, bool quiet)
{
	static const struct column columns[] = {
	    {"NAME", ALIGN_LEFT},      {"UID", ALIGN_RIGHT},         {"GID", ALIGN_RIGHT},
	    {"VOLUMES", ALIGN_RIGHT},  {"MAX_VOLUMES", ALIGN_RIGHT}, {"SIZE", ALIGN_RIGHT},
	    {"MAX_SIZE", ALIGN_RIGHT}, {"USED", ALIGN_RIGHT},        {"MAX_USED", ALIGN_RIGHT},
	    {"NBD", ALIGN_LEFT},
	};
	static const char *const keys[] = {"name", "uid",      "gid",  "volumes",  "max_volumes",
	                                   "size", "max_size", "used", "max_used", "nbd"};

	return print_objects(f, list, columns, keys, ARRAY_SIZE(keys), quiet);
}

int print_images(FILE *f, struct json_object *list, bool quiet)
{
	static const struct column columns[] = {
	    {"NAME", ALIGN_LEFT},
	    {"SIZE", ALIGN_RIGHT},
	    {"USED", ALIGN_RIGHT},
	    {"PUBLISHED", ALIGN_LEFT},
	};
	static const char *const keys[] = {"name", "size", "used", "published"};

	return print_objects(f, list, columns, keys, ARRAY_SIZE(keys), quiet);
}

int print_grants(FILE *f, struct json_object *list)
{
	static const struct column columns[] = {
	    {"OWNER", ALIGN_LEFT},
	    {"VOLUME", ALIGN_LEFT},
	    {"TO", ALIGN_LEFT},
	    {"ACCESS", ALIGN_LEFT},
	};
	static const char *const keys[] = {"owner", "volume", "to", "write"};

	return print_objects(f, list, columns, keys, ARRAY_SIZE(keys), false);
}

/* LINES as aligned "label: value" lines; lines without a label are left out. Then, if
 * LABELS (an object of a volume's labels) is not NULL, one "key=value" line each, the
 * first one headed "labels:", or "labels: none". */
static int print_details_labels(FILE *f, const char *const (*lines)[2], size_t n,
                                struct json_object *labels)
{
	static const struct column columns[] = {{"", ALIGN_LEFT}, {"", ALIGN_LEFT}};
	CLEANUP_TABLE struct table *t = table_new(columns, 2, false);
	const char *row[2] = {"labels:", "none"};
	char buf[CELL_MAX];
	int r;

	if (t == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (lines[i][0] == NULL)
			continue;
		r = table_add_row(t, lines[i]);
		if (r < 0)
			return r;
	}
	if (labels != NULL && json_object_is_type(labels, json_type_object)) {
		json_object_object_foreach (labels, key, value) {
			snprintf(buf, sizeof buf, "%s=%s", key,
			         json_object_is_type(value, json_type_string)
			             ? json_object_get_string(value)
			             : "?");
			row[1] = buf;
			if ((r = table_add_row(t, row)) < 0)
				return r;
			row[0] = "";
		}
		if (row[0][0] != '\0' && (r = table_add_row(t, row)) < 0)
			return r;
	}
	return table_print(t, f);
}

static int print_details(FILE *f, const char *const (*lines)[2], size_t n)
{
	return print_details_labels(f, lines, n, NULL);
}

/* A size member as "1G (1073741824 bytes)"; small and non-numeric ones as field() has them. */
static const char *exact_size(struct json_object *o, const char *key, char *buf, size_t len)
{
	char human[32];
	uint64_t n;

	if (!member_u64(o, key, &n))
		return field(o, key, buf, len);
	snprintf(buf, len, "%s (%" PRIu64 " bytes)", tp_format_size(n, human, sizeof human), n);
	return buf;
}

/* Consumption KEY against its quota MAX_KEY: "3G (limit 1T)", "3G (no limit)" for a null
 * quota, or just "3G" if the answer has no such quota at all. */
static const char *quota(struct json_object *o, const char *key, const char *max_key, char *buf,
                         size_t len)
{
	char value_buf[CELL_MAX], limit_buf[CELL_MAX];
	const char *value = field(o, key, value_buf, sizeof value_buf);

	if (!has_member(o, max_key))
		snprintf(buf, len, "%s", value);
	else if (member(o, max_key) == NULL)
		snprintf(buf, len, "%s (no limit)", value);
	else
		snprintf(buf, len, "%s (limit %s)", value,
		         field(o, max_key, limit_buf, sizeof limit_buf));
	return buf;
}

/* The pool's "data" or "metadata" space: "1.5G of 100G used (1.5%)". */
static const char *space(struct json_object *pool, const char *key, char *buf, size_t len)
{
	struct json_object *o = member(pool, key);
	char used_text[32], total_text[32];
	uint64_t used, total;

	if (!member_u64(o, "used", &used) || !member_u64(o, "total", &total))
		return field(pool, key, buf, len);
	tp_format_size(used, used_text, sizeof used_text);
	tp_format_size(total, total_text, sizeof total_text);
	if (total > 0)
		snprintf(buf, len, "%s of %s used (%.1f%%)", used_text, total_text,
		         (double)used * 100.0 / (double)total);
	else
		snprintf(buf, len, "%s of %s used", used_text, total_text);
	/* The metadata's: its state, and what it may grow to. */
	struct json_object *state = member(o, "state");
	uint64_t limit;
	size_t n = strlen(buf);

	if (state != NULL && json_object_is_type(state, json_type_string))
		snprintf(buf + n, len - n, ", %s%s", json_object_get_string(state),
		         strcmp(json_object_get_string(state), "full") == 0
		             ? ": new volumes refused"
		             : "");
	n = strlen(buf);
	if (member_u64(o, "limit", &limit) && limit > total) {
		tp_format_size(limit, total_text, sizeof total_text);
		snprintf(buf + n, len - n, ", grows to %s", total_text);
	}
	return buf;
}

/* The snapshots of a volume by tenant, from an info answer: "alice 2, bob 1", "none". */
static const char *snapshots(struct json_object *v, char *buf, size_t len)
{
	struct json_object *o = member(v, "snapshots");
	size_t n = 0;

	buf[0] = '\0';
	if (o == NULL || !json_object_is_type(o, json_type_object))
		return buf;
	json_object_object_foreach (o, tenant, count) {
		int w = snprintf(buf + n, len - n, "%s%s %" PRId64, n ? ", " : "", tenant,
		                 json_object_get_int64(count));

		if (w < 0 || (size_t)w >= len - n)
			break;
		n += (size_t)w;
	}
	return n ? buf : "none";
}

int print_volume_details(FILE *f, struct json_object *v)
{
	char b[15][CELL_MAX];

	if (v == NULL)
		return 0;
	struct json_object *usage = member(v, "usage");
	const char *const lines[][2] = {
	    {"name:", field(v, "name", b[0], CELL_MAX)},
	    {"owner:", field(v, "owner", b[1], CELL_MAX)},
	    {"size:", exact_size(v, "size", b[2], CELL_MAX)},
	    {"used:", exact_size(v, "used", b[3], CELL_MAX)},
	    /* Only info tells the exact usage, and only from a daemon that can. */
	    {usage ? "mapped:" : NULL, exact_size(usage, "mapped", b[12], CELL_MAX)},
	    {usage ? "exclusive:" : NULL, exact_size(usage, "exclusive", b[13], CELL_MAX)},
	    {usage ? "shared:" : NULL, exact_size(usage, "shared", b[14], CELL_MAX)},
	    {"state:", field(v, "state", b[4], CELL_MAX)},
	    {"parent:", field(v, "parent", b[5], CELL_MAX)},
	    {"created:", field(v, "created", b[6], CELL_MAX)},
	    /* What a daemon from before labels does not tell is left out. */
	    {has_member(v, "updated") ? "updated:" : NULL, field(v, "updated", b[11], CELL_MAX)},
	    {"writable:", field(v, "writable", b[7], CELL_MAX)},
	    /* Only the admin socket tells the thin id. */
	    {has_member(v, "thin_id") ? "thin id:" : NULL, field(v, "thin_id", b[8], CELL_MAX)},
	    {has_member(v, "published") ? "published:" : NULL,
	     field(v, "published", b[9], CELL_MAX)},
	    /* Only info tells the snapshots, by the tenant owning them. */
	    {has_member(v, "snapshots") ? "snapshots:" : NULL, snapshots(v, b[10], CELL_MAX)},
	};

	return print_details_labels(f, lines, ARRAY_SIZE(lines), member(v, "labels"));
}

/* The line under a diff: "total: 2 ranges, 192K (196608 bytes): 64K data, 128K zeroes",
 * or that there is no difference. */
static int print_diff_total(FILE *f, size_t n, uint64_t data, uint64_t zero)
{
	char all[32], data_text[32], zero_text[32];

	if (n == 0) {
		fputs("total: 0 ranges: no difference\n", f);
		return ferror(f) ? -EIO : 0;
	}
	fprintf(f, "total: %zu range%s, %s (%" PRIu64 " bytes): %s data, %s zeroes\n", n,
	        n == 1 ? "" : "s", tp_format_size(data + zero, all, sizeof all), data + zero,
	        tp_format_size(data, data_text, sizeof data_text),
	        tp_format_size(zero, zero_text, sizeof zero_text));
	return ferror(f) ? -EIO : 0;
}

int print_diff(FILE *f, struct json_object *changes)
{
	static const struct column columns[] = {
	    {"OFFSET", ALIGN_RIGHT}, {"LENGTH", ALIGN_RIGHT}, {"KIND", ALIGN_LEFT}};
	CLEANUP_TABLE struct table *t = table_new(columns, 3, true);
	size_t n = json_object_array_length(changes);
	uint64_t data = 0, zero = 0;
	int r;

	if (t == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct json_object *c = json_object_array_get_idx(changes, i);
		char offset[24] = "-", length[24] = "-", kind[CELL_MAX];
		const char *row[3] = {offset, length, field(c, "kind", kind, sizeof kind)};
		uint64_t v;

		if (member_u64(c, "offset", &v))
			snprintf(offset, sizeof offset, "%" PRIu64, v);
		if (member_u64(c, "length", &v)) {
			snprintf(length, sizeof length, "%" PRIu64, v);
			*(strcmp(row[2], "data") == 0 ? &data : &zero) += v;
		}
		if ((r = table_add_row(t, row)) < 0)
			return r;
	}
	if (n > 0 && (r = table_print(t, f)) < 0)
		return r;
	return print_diff_total(f, n, data, zero);
}

int print_tenant_details(FILE *f, struct json_object *tenant)
{
	char b[9][CELL_MAX];

	if (tenant == NULL)
		return 0;
	const char *const lines[][2] = {
	    {"name:", field(tenant, "name", b[0], CELL_MAX)},
	    {"uid:", field(tenant, "uid", b[1], CELL_MAX)},
	    {"gid:", field(tenant, "gid", b[2], CELL_MAX)},
	    {"nbd uid:", field(tenant, "nbd_uid", b[3], CELL_MAX)},
	    {"nbd:", field(tenant, "nbd", b[4], CELL_MAX)},
	    {"volumes:", quota(tenant, "volumes", "max_volumes", b[5], CELL_MAX)},
	    {"size:", quota(tenant, "size", "max_size", b[6], CELL_MAX)},
	    {"used:", quota(tenant, "used", "max_used", b[7], CELL_MAX)},
	    /* Exact, from the pool's metadata, where the daemon can tell it. */
	    {has_member(tenant, "allocated") ? "allocated:" : NULL,
	     exact_size(tenant, "allocated", b[8], CELL_MAX)},
	};

	return print_details(f, lines, ARRAY_SIZE(lines));
}

int print_usage(FILE *f, struct json_object *usage)
{
	char b[5][CELL_MAX];

	if (usage == NULL)
		return 0;
	const char *const lines[][2] = {
	    {"tenant:", field(usage, "tenant", b[0], CELL_MAX)},
	    {"volumes:", quota(usage, "volumes", "max_volumes", b[1], CELL_MAX)},
	    {"size:", quota(usage, "size", "max_size", b[2], CELL_MAX)},
	    {"used:", quota(usage, "used", "max_used", b[3], CELL_MAX)},
	    {has_member(usage, "allocated") ? "allocated:" : NULL,
	     exact_size(usage, "allocated", b[4], CELL_MAX)},
	};

	return print_details(f, lines, ARRAY_SIZE(lines));
}

int print_pool(FILE *f, struct json_object *pool)
{
	char b[9][CELL_MAX];

	if (pool == NULL)
		return 0;
	const char *const lines[][2] = {
	    {"name:", field(pool, "name", b[0], CELL_MAX)},
	    {"mode:", field(pool, "mode", b[1], CELL_MAX)},
	    {"data:", space(pool, "data", b[2], CELL_MAX)},
	    {"metadata:", space(pool, "metadata", b[3], CELL_MAX)},
	    {"volumes:", field(pool, "volumes", b[4], CELL_MAX)},
	    {"block size:", field(pool, "block_size", b[5], CELL_MAX)},
	    {"min free:", field(pool, "min_free", b[6], CELL_MAX)},
	    {"needs check:", field(pool, "needs_check", b[7], CELL_MAX)},
	    {"transaction id:", field(pool, "transaction_id", b[8], CELL_MAX)},
	};

	return print_details(f, lines, ARRAY_SIZE(lines));
}
