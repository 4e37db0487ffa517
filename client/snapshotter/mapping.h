/* How containerd's snapshots map onto a tenant's thin volumes, with nothing stored
 * anywhere but in thinproxyd: a snapshot (key or name S) is the volume named "c" and the
 * first 62 hex digits of SHA-256(S), and the volume's labels under the reserved prefix
 * "thinproxy.snapshotter/" hold what containerd's snapshot has beyond its own labels:
 *
 *   .../key      S itself
 *   .../kind     active, view or committed
 *   .../parent   the parent's name (absent for none)
 *   .../fs       ext4 or xfs
 *   .../created  when the snapshot was made (for a committed one: committed), RFC 3339
 *   .../updated  when its labels last changed, RFC 3339 (both with nanoseconds)
 *   .../ready    "1" once Prepare made it whole; a volume without it is an interrupted
 *                Prepare's, invisible to containerd, and Cleanup removes it
 *
 * Everything else is containerd's labels, returned as given; labels with the prefix are
 * never shown to containerd and refused from it. This file is the pure part: names,
 * labels, the daemon's JSON, checks; snapshots.c does the requests. */
#ifndef TP_SNAPSHOTTER_MAPPING_H
#define TP_SNAPSHOTTER_MAPPING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <json-c/json.h>

#define SNAP_LABEL_PREFIX  "thinproxy.snapshotter/"
#define SNAP_LABEL_KEY     SNAP_LABEL_PREFIX "key"
#define SNAP_LABEL_KIND    SNAP_LABEL_PREFIX "kind"
#define SNAP_LABEL_PARENT  SNAP_LABEL_PREFIX "parent"
#define SNAP_LABEL_FS      SNAP_LABEL_PREFIX "fs"
#define SNAP_LABEL_CREATED SNAP_LABEL_PREFIX "created"
#define SNAP_LABEL_UPDATED SNAP_LABEL_PREFIX "updated"
#define SNAP_LABEL_READY   SNAP_LABEL_PREFIX "ready"

/* A volume name: "c", 62 hex digits, NUL. */
#define SNAP_VOLUME_SIZE 64
/* containerd's limit on a label's key and value together, which thinproxyd shares. */
#define SNAP_LABEL_MAX 4096
/* thinproxyd's limit on a volume's labels, and how many of them the agent's take. */
#define SNAP_LABELS_MAX         64
#define SNAP_LABELS_RESERVED    7
#define SNAP_STATUS_MESSAGE_MAX 1024

/* gRPC status codes (grpc/doc/statuscodes.md). */
enum snap_code {
	SNAP_OK = 0,
	SNAP_INVALID_ARGUMENT = 3,
	SNAP_NOT_FOUND = 5,
	SNAP_ALREADY_EXISTS = 6,
	SNAP_RESOURCE_EXHAUSTED = 8,
	SNAP_FAILED_PRECONDITION = 9,
	SNAP_UNIMPLEMENTED = 12,
	SNAP_INTERNAL = 13,
	SNAP_UNAVAILABLE = 14,
};

/* The outcome of an operation: a code and, for a failure, one sentence that names the
 * operation and the snapshot ("remove KEY: it has children"). */
struct snap_status {
	enum snap_code code;
	char message[SNAP_STATUS_MESSAGE_MAX];
};

/* Set ST to CODE and the message; returns CODE. */
enum snap_code snap_fail(struct snap_status *st, enum snap_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The numbers are containerd's (snapshots.v1.Kind). */
enum snap_kind {
	SNAP_KIND_UNKNOWN = 0,
	SNAP_KIND_VIEW = 1,
	SNAP_KIND_ACTIVE = 2,
	SNAP_KIND_COMMITTED = 3,
};

enum snap_fs { SNAP_FS_EXT4, SNAP_FS_XFS };

struct snap_label {
	char *key, *value;
};

/* Labels as containerd sends and gets them. In requests they are the caller's; in a
 * snap_info they are the info's own. */
struct snap_labels {
	struct snap_label *items;
	size_t n;
};

/* A snapshot as containerd sees it (snapshots.Info). */
struct snap_info {
	char *name;
	char *parent; /* "" for none */
	enum snap_kind kind;
	struct timespec created, updated;
	struct snap_labels labels;
};

/* A snapshot as the agent reads it from its volume. */
struct snap_record {
	struct snap_info info;
	char volume[SNAP_VOLUME_SIZE];
	bool ready;
	enum snap_fs fs;
	uint64_t used; /* the volume's bytes in the pool */
};

/* Free what INFO (or RECORD) holds, and zero it; a zeroed one is fine. */
void snap_info_clear(struct snap_info *info);
void snap_record_clear(struct snap_record *record);

const char *snap_kind_name(enum snap_kind kind);
const char *snap_fs_name(enum snap_fs fs);

/* The volume that holds snapshot S, into VOLUME. */
void snap_volume_name(const char *s, char volume[SNAP_VOLUME_SIZE]);
/* Whether NAME has the shape of such a volume name. */
bool snap_is_volume_name(const char *name);

/* A time as RFC 3339 with nanoseconds ("2026-12-03T06:56:00.123456789Z") into BUF (at
 * least 40 bytes), and back: -EINVAL for anything else. */
void snap_format_time(const struct timespec *t, char *buf, size_t len);
int snap_parse_time(const char *s, struct timespec *ret_time);

/* Checks of what containerd sends; each fills ST (the message begins with WHAT, e.g.
 * "prepare KEY") and returns its code. A key or name: not empty, and short enough for
 * its label. */
enum snap_code snap_check_key(const char *what, const char *s, struct snap_status *st);
/* Labels: none with the reserved prefix, none empty-keyed, key and value within
 * SNAP_LABEL_MAX, no more than leave room for the agent's own. */
enum snap_code snap_check_labels(const char *what, const struct snap_labels *labels,
                                 struct snap_status *st);
/* Update's field paths: "labels" or "labels.KEY" only. */
enum snap_code snap_check_paths(const char *what, const char *const *paths, size_t n,
                                struct snap_status *st);

/* The labels object for a new volume: containerd's LABELS with the reserved ones for S,
 * KIND, PARENT (NULL or "" for none), FS, the time NOW as created and updated, and ready
 * if READY. NULL if out of memory. */
struct json_object *snap_volume_labels(const struct snap_labels *labels, const char *s,
                                       enum snap_kind kind, const char *parent, enum snap_fs fs,
                                       const struct timespec *now, bool ready);

/* The snapshot a volume object of the daemon's answers (VOLUME) holds, into *RET:
 * -ENOENT if the volume is not a snapshot's (no key label, a name that is not the key's),
 * -EBADMSG if its labels are not the agent's, -ENOMEM. */
int snap_record_from_volume(struct json_object *volume, struct snap_record *ret);

/* The bytes containerd's Usage counts of a snapshot, "excluding the usage of parent
 * snapshots": the "exclusive" of the daemon's USAGE answer (GET .../usage), or, where it
 * gave none (USAGE NULL, or without that member), USED, all the volume's bytes in the
 * pool. */
int64_t snap_usage_size(struct json_object *usage, uint64_t used);

/* The JSON merge patch of labels that Update (INFO's labels, field paths PATHS, N of
 * them: none means all) makes of a snapshot whose containerd labels are CURRENT, with
 * updated set to NOW: {"KEY": "VALUE" or null, ...}. An empty value is no label, as in
 * containerd. NULL if out of memory. */
struct json_object *snap_update_patch(const struct snap_labels *current,
                                      const struct snap_labels *labels, const char *const *paths,
                                      size_t n, const struct timespec *now);

/* The value of label KEY in LABELS, or NULL. */
const char *snap_label_get(const struct snap_labels *labels, const char *key);

/* A daemon error (-errno from http_json, and the HTTP status: 0 when no answer came) as
 * a gRPC code. */
enum snap_code snap_code_of(int r, long http_status);

#endif
