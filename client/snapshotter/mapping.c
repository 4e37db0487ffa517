/* Snapshots as volumes and labels (see mapping.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tp-cleanup.h"
#include "http.h"
#include "mapping.h"
#include "sha256.h"

enum snap_code snap_fail(struct snap_status *st, enum snap_code code, const char *fmt, ...)
{
	va_list ap;

	st->code = code;
	va_start(ap, fmt);
	vsnprintf(st->message, sizeof st->message, fmt, ap);
	va_end(ap);
	return code;
}

/* Free LABELS' strings and array, and empty it. */
static void labels_clear(struct snap_labels *labels)
{
	for (size_t i = 0; i < labels->n; i++) {
		free(labels->items[i].key);
		free(labels->items[i].value);
	}
	free(labels->items);
	labels->items = NULL;
	labels->n = 0;
}

void snap_info_clear(struct snap_info *info)
{
	free(info->name);
	free(info->parent);
	labels_clear(&info->labels);
	memset(info, 0, sizeof *info);
}

void snap_record_clear(struct snap_record *record)
{
	snap_info_clear(&record->info);
	memset(record, 0, sizeof *record);
}

const char *snap_kind_name(enum snap_kind kind)
{
	switch (kind) {
	case SNAP_KIND_VIEW:
		return "view";
	case SNAP_KIND_ACTIVE:
		return "active";
	case SNAP_KIND_COMMITTED:
		return "committed";
	default:
		return "unknown";
	}
}

const char *snap_fs_name(enum snap_fs fs)
{
	return fs == SNAP_FS_XFS ? "xfs" : "ext4";
}

void snap_volume_name(const char *s, char volume[SNAP_VOLUME_SIZE])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t digest[SHA256_DIGEST_SIZE];

	sha256(s, strlen(s), digest);
	volume[0] = 'c';
	for (int i = 0; i < 31; i++) {
		volume[1 + 2 * i] = hex[digest[i] >> 4];
		volume[2 + 2 * i] = hex[digest[i] & 15];
	}
	volume[SNAP_VOLUME_SIZE - 1] = '\0';
}

bool snap_is_volume_name(const char *name)
{
	if (name[0] != 'c' || strlen(name) != SNAP_VOLUME_SIZE - 1)
		return false;
	for (size_t i = 1; i < SNAP_VOLUME_SIZE - 1; i++)
		if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
			return false;
	return true;
}

void snap_format_time(const struct timespec *t, char *buf, size_t len)
{
	struct tm tm;
	char date[32];

	gmtime_r(&t->tv_sec, &tm);
	strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, len, "%s.%09ldZ", date, t->tv_nsec);
}

int snap_parse_time(const char *s, struct timespec *ret_time)
{
	struct tm tm = {0};
	const char *p;
	long ns = 0;
	int digits = 0;
	time_t sec;

	p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (p == NULL)
		return -EINVAL;
	if (*p == '.') {
		for (p++; *p >= '0' && *p <= '9'; p++, digits++)
			if (digits < 9)
				ns = ns * 10 + (*p - '0');
		if (digits == 0)
			return -EINVAL;
		for (; digits < 9; digits++)
			ns *= 10;
	}
	if (strcmp(p, "Z") != 0)
		return -EINVAL;
	sec = timegm(&tm);
	if (sec == (time_t)-1)
		return -EINVAL;
	ret_time->tv_sec = sec;
	ret_time->tv_nsec = ns;
	return 0;
}

/* Whether S is valid UTF-8 (thinproxyd takes nothing else in labels). */
static bool valid_utf8(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p != '\0') {
		unsigned c = *p, n, min;
		uint32_t v;

		if (c < 0x80) {
			p++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			n = 1, v = c & 0x1f, min = 0x80;
		else if (c >= 0xe0 && c <= 0xef)
			n = 2, v = c & 0x0f, min = 0x800;
		else if (c >= 0xf0 && c <= 0xf4)
			n = 3, v = c & 0x07, min = 0x10000;
		else
			return false;
		for (unsigned i = 1; i <= n; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return false;
			v = v << 6 | (p[i] & 0x3f);
		}
		if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
			return false;
		p += n + 1;
	}
	return true;
}

enum snap_code snap_check_key(const char *what, const char *s, struct snap_status *st)
{
	/* It is stored as the key label's value, and as a child's parent label's. */
	size_t max = SNAP_LABEL_MAX - strlen(SNAP_LABEL_PARENT);

	if (s[0] == '\0')
		return snap_fail(st, SNAP_INVALID_ARGUMENT, "%s: empty key", what);
	if (strlen(s) > max)
		return snap_fail(st, SNAP_INVALID_ARGUMENT, "%s: key longer than %zu bytes", what,
		                 max);
	if (!valid_utf8(s))
		return snap_fail(st, SNAP_INVALID_ARGUMENT, "%s: key is not valid UTF-8", what);
	return SNAP_OK;
}

enum snap_code snap_check_labels(const char *what, const struct snap_labels *labels,
                                 struct snap_status *st)
{
	if (labels->n > SNAP_LABELS_MAX - SNAP_LABELS_RESERVED)
		return snap_fail(st, SNAP_INVALID_ARGUMENT, "%s: %zu labels, at most %d", what,
		                 labels->n, SNAP_LABELS_MAX - SNAP_LABELS_RESERVED);
	for (size_t i = 0; i < labels->n; i++) {
		const char *k = labels->items[i].key, *v = labels->items[i].value;

		if (k[0] == '\0')
			return snap_fail(st, SNAP_INVALID_ARGUMENT, "%s: a label with an empty key",
			                 what);
		if (strncmp(k, SNAP_LABEL_PREFIX, strlen(SNAP_LABEL_PREFIX)) == 0)
			return snap_fail(st, SNAP_INVALID_ARGUMENT,
			                 "%s: label %s: the prefix " SNAP_LABEL_PREFIX
			                 " is the snapshotter's own",
			                 what, k);
		if (strlen(k) + strlen(v) > SNAP_LABEL_MAX)
			return snap_fail(st, SNAP_INVALID_ARGUMENT,
			                 "%s: label key and value greater than maximum size (%d "
			                 "bytes), key: %.10s",
			                 what, SNAP_LABEL_MAX, k);
		if (!valid_utf8(k) || !valid_utf8(v))
			return snap_fail(st, SNAP_INVALID_ARGUMENT,
			                 "%s: label %.64s: not valid UTF-8", what, k);
		for (const char *c = k; *c != '\0'; c++)
			if ((unsigned char)*c < 0x20 || *c == 0x7f)
				return snap_fail(st, SNAP_INVALID_ARGUMENT,
				                 "%s: label key with a control character", what);
	}
	return SNAP_OK;
}

enum snap_code snap_check_paths(const char *what, const char *const *paths, size_t n,
                                struct snap_status *st)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(paths[i], "labels") == 0)
			continue;
		if (strncmp(paths[i], "labels." SNAP_LABEL_PREFIX,
		            strlen("labels." SNAP_LABEL_PREFIX)) == 0)
			return snap_fail(st, SNAP_INVALID_ARGUMENT,
			                 "%s: label %s: the prefix " SNAP_LABEL_PREFIX
			                 " is the snapshotter's own",
			                 what, paths[i] + 7);
		if (strncmp(paths[i], "labels.", 7) == 0 && paths[i][7] != '\0')
			continue;
		return snap_fail(st, SNAP_INVALID_ARGUMENT,
		                 "%s: cannot update the field \"%s\": only labels change", what,
		                 paths[i]);
	}
	return SNAP_OK;
}

const char *snap_label_get(const struct snap_labels *labels, const char *key)
{
	for (size_t i = 0; i < labels->n; i++)
		if (strcmp(labels->items[i].key, key) == 0)
			return labels->items[i].value;
	return NULL;
}

/* Add string label KEY=VALUE to O; false if out of memory. */
static bool put(struct json_object *o, const char *key, const char *value)
{
	return json_add_string(o, key, value) == 0;
}

struct json_object *snap_volume_labels(const struct snap_labels *labels, const char *s,
                                       enum snap_kind kind, const char *parent, enum snap_fs fs,
                                       const struct timespec *now, bool ready)
{
	struct json_object *o = json_object_new_object();
	char stamp[48];
	bool ok;

	if (o == NULL)
		return NULL;
	snap_format_time(now, stamp, sizeof stamp);
	ok = put(o, SNAP_LABEL_KEY, s) && put(o, SNAP_LABEL_KIND, snap_kind_name(kind)) &&
	     put(o, SNAP_LABEL_FS, snap_fs_name(fs)) && put(o, SNAP_LABEL_CREATED, stamp) &&
	     put(o, SNAP_LABEL_UPDATED, stamp);
	if (ok && parent != NULL && parent[0] != '\0')
		ok = put(o, SNAP_LABEL_PARENT, parent);
	if (ok && ready)
		ok = put(o, SNAP_LABEL_READY, "1");
	for (size_t i = 0; ok && i < labels->n; i++)
		if (labels->items[i].value[0] != '\0')
			ok = put(o, labels->items[i].key, labels->items[i].value);
	if (!ok) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

/* Member KEY of O as a string, or NULL. */
static const char *get_string(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* The kind a kind label names; SNAP_KIND_UNKNOWN for anything else. */
static enum snap_kind kind_of(const char *s)
{
	if (s == NULL)
		return SNAP_KIND_UNKNOWN;
	if (strcmp(s, "active") == 0)
		return SNAP_KIND_ACTIVE;
	if (strcmp(s, "view") == 0)
		return SNAP_KIND_VIEW;
	if (strcmp(s, "committed") == 0)
		return SNAP_KIND_COMMITTED;
	return SNAP_KIND_UNKNOWN;
}

int64_t snap_usage_size(struct json_object *usage, uint64_t used)
{
	struct json_object *exclusive;

	if (usage != NULL && json_object_object_get_ex(usage, "exclusive", &exclusive) &&
	    json_object_is_type(exclusive, json_type_int) && json_object_get_int64(exclusive) >= 0)
		return json_object_get_int64(exclusive);
	return used > INT64_MAX ? INT64_MAX : (int64_t)used;
}

int snap_record_from_volume(struct json_object *volume, struct snap_record *ret)
{
	struct snap_record rec = {0};
	struct json_object *labels, *used;
	const char *name = get_string(volume, "name"), *key, *fs, *created, *updated, *parent;
	char expected[SNAP_VOLUME_SIZE];
	size_t n = 0;

	if (name == NULL || !json_object_object_get_ex(volume, "labels", &labels) ||
	    !json_object_is_type(labels, json_type_object))
		return -ENOENT;
	key = get_string(labels, SNAP_LABEL_KEY);
	if (key == NULL)
		return -ENOENT;
	snap_volume_name(key, expected);
	if (strcmp(name, expected) != 0)
		return -ENOENT;

	fs = get_string(labels, SNAP_LABEL_FS);
	created = get_string(labels, SNAP_LABEL_CREATED);
	updated = get_string(labels, SNAP_LABEL_UPDATED);
	parent = get_string(labels, SNAP_LABEL_PARENT);
	memcpy(rec.volume, name, SNAP_VOLUME_SIZE);
	rec.info.kind = kind_of(get_string(labels, SNAP_LABEL_KIND));
	rec.ready = get_string(labels, SNAP_LABEL_READY) != NULL;
	if (rec.info.kind == SNAP_KIND_UNKNOWN || fs == NULL ||
	    (strcmp(fs, "ext4") != 0 && strcmp(fs, "xfs") != 0) || created == NULL ||
	    updated == NULL || snap_parse_time(created, &rec.info.created) < 0 ||
	    snap_parse_time(updated, &rec.info.updated) < 0)
		return -EBADMSG;
	rec.fs = strcmp(fs, "xfs") == 0 ? SNAP_FS_XFS : SNAP_FS_EXT4;
	if (json_object_object_get_ex(volume, "used", &used) &&
	    json_object_is_type(used, json_type_int) && json_object_get_int64(used) > 0)
		rec.used = (uint64_t)json_object_get_int64(used);

	rec.info.name = strdup(key);
	rec.info.parent = strdup(parent != NULL ? parent : "");
	rec.info.labels.items =
	    calloc((size_t)json_object_object_length(labels) + 1, sizeof *rec.info.labels.items);
	if (rec.info.name == NULL || rec.info.parent == NULL || rec.info.labels.items == NULL)
		goto oom;
	json_object_object_foreach (labels, k, v) {
		struct snap_label *l = &rec.info.labels.items[n];

		if (strncmp(k, SNAP_LABEL_PREFIX, strlen(SNAP_LABEL_PREFIX)) == 0 ||
		    !json_object_is_type(v, json_type_string))
			continue;
		l->key = strdup(k);
		l->value = strdup(json_object_get_string(v));
		rec.info.labels.n = ++n;
		if (l->key == NULL || l->value == NULL)
			goto oom;
	}
	*ret = rec;
	return 0;
oom:
	snap_record_clear(&rec);
	return -ENOMEM;
}

struct json_object *snap_update_patch(const struct snap_labels *current,
                                      const struct snap_labels *labels, const char *const *paths,
                                      size_t n, const struct timespec *now)
{
	struct json_object *patch = json_object_new_object();
	char stamp[48];
	bool ok = patch != NULL, all = n == 0;

	for (size_t i = 0; i < n; i++)
		if (strcmp(paths[i], "labels") == 0)
			all = true;
	if (all) {
		/* The whole set: what is given, and null for what is gone. */
		for (size_t i = 0; ok && i < current->n; i++) {
			const char *v = snap_label_get(labels, current->items[i].key);

			if (v == NULL || v[0] == '\0')
				ok = json_add_value(patch, current->items[i].key, NULL) == 0;
		}
		for (size_t i = 0; ok && i < labels->n; i++)
			if (labels->items[i].value[0] != '\0')
				ok = put(patch, labels->items[i].key, labels->items[i].value);
	} else {
		for (size_t i = 0; ok && i < n; i++) {
			const char *key = paths[i] + strlen("labels.");
			const char *v = snap_label_get(labels, key);

			if (v != NULL && v[0] != '\0')
				ok = put(patch, key, v);
			else
				ok = json_add_value(patch, key, NULL) == 0;
		}
	}
	snap_format_time(now, stamp, sizeof stamp);
	if (ok)
		ok = put(patch, SNAP_LABEL_UPDATED, stamp);
	if (!ok) {
		json_object_put(patch);
		return NULL;
	}
	return patch;
}

enum snap_code snap_code_of(int r, long http_status)
{
	if (http_status == 0)
		return r == -ENOMEM ? SNAP_INTERNAL : SNAP_UNAVAILABLE;
	switch (r) {
	case -ENOENT:
		return SNAP_NOT_FOUND;
	case -EEXIST:
		return SNAP_ALREADY_EXISTS;
	case -EBUSY:
	case -EROFS:
		return SNAP_FAILED_PRECONDITION;
	case -EINVAL:
		return SNAP_INVALID_ARGUMENT;
	case -EDQUOT:
	case -ENOSPC:
		return SNAP_RESOURCE_EXHAUSTED;
	default:
		return SNAP_INTERNAL;
	}
}
