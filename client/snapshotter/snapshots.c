/* The snapshotter's operations (see snapshots.h): requests to the tenant's REST socket,
 * devices attached and detached, in the order that keeps a crash at any point harmless.
 *
 * What a kill of the agent leaves, step by step:
 *   Prepare: create the volume (labels, no ready) -> attach -> mkfs -> label ready.
 *     Before ready the volume is invisible (Stat and List skip it, Prepare of the same
 *     key takes it over) and Cleanup (also run at the agent's start) removes it and
 *     detaches its device. After ready it is whole.
 *   Commit: detach -> commit with the new name and labels, one transaction in the
 *     daemon. In between the snapshot is active and not attached; Mounts attaches it
 *     again, a retried Commit goes on.
 *   Remove: detach -> delete, the same.
 * Devices outlive the agent (their keepers do), and the registry of the client finds
 * them again by volume; a kill of the daemon loses nothing either, since every change
 * there is one transaction. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>

#include "tp-cleanup.h"
#include "device.h"
#include "filter.h"
#include "http.h"
#include "nbd-device.h"
#include "output.h"
#include "registry.h"
#include "snapshots.h"

#define PREFIX_MAX 96
#define PATH_MAX_  256
#define WHAT_MAX   160
#define REASON_MAX 1024
/* How much of a key a message quotes. */
#define KEY_QUOTE 120

struct snapshots {
	struct snap_config cfg;
	char dir[PATH_MAX];
	char tenant[64];
	char prefix[PREFIX_MAX]; /* "/v1" or "/v1/tenants/T" */
	char control_socket[sizeof((struct sockaddr_un *)0)->sun_path];
	struct device_target target;

	pthread_mutex_t lock;
	pthread_cond_t released;
	/* Connections to the daemon nobody uses right now. */
	struct http **idle;
	size_t n_idle, max_idle;
	/* The volumes an operation of this process is working on. */
	char (*busy)[SNAP_VOLUME_SIZE];
	size_t n_busy, max_busy;
};

/* One operation: its connection, its status, and the daemon's last word. */
struct op {
	struct snapshots *s;
	struct http *h;
	struct snap_status *st;
	char what[WHAT_MAX];
	char said[REASON_MAX]; /* error_line's capture */
	char steps[160];       /* how long each step took, for the log */
};

void snap_log(const char *fmt, ...)
{
	char line[1200], stamp[32];
	struct timespec now;
	struct tm tm;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	clock_gettime(CLOCK_REALTIME, &now);
	localtime_r(&now.tv_sec, &tm);
	strftime(stamp, sizeof stamp, "%F %T", &tm);
	fprintf(stderr, "%s.%03ld thinproxy snapshotter: %s\n", stamp, now.tv_nsec / 1000000, line);
}

/* Die here, as a kill -9 would, if $THINPROXY_SNAPSHOTTER_FAULT names STEP: how the
 * tests stop the agent between two steps of an operation. */
static void fault_point(const char *step)
{
	const char *fault = getenv("THINPROXY_SNAPSHOTTER_FAULT");

	if (fault != NULL && strcmp(fault, step) == 0) {
		snap_log("fault point %s: killing myself", step);
		raise(SIGKILL);
	}
}

/* Seconds since START (CLOCK_MONOTONIC). */
static double seconds_since(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - start->tv_sec) + (now.tv_nsec - start->tv_nsec) / 1e9;
}

/* Note in OP's steps that step NAME took since *SINCE, and start the next one. */
static void step_done(struct op *op, const char *name, struct timespec *since)
{
	size_t n = strlen(op->steps);

	snprintf(op->steps + n, sizeof op->steps - n, "%s%s %.3f", n ? ", " : "", name,
	         seconds_since(since));
	clock_gettime(CLOCK_MONOTONIC, since);
}

int snapshots_open(const struct snap_config *cfg, struct snapshots **ret_s)
{
	struct snapshots *s = calloc(1, sizeof *s);
	int n, r;

	if (s == NULL)
		return -ENOMEM;
	s->cfg = *cfg;
	/* The devices' records name the socket they were attached through: one spelling
	 * of it, whatever the command line said, finds them again after a restart. */
	if (realpath(cfg->dir, s->dir) == NULL)
		snprintf(s->dir, sizeof s->dir, "%s", cfg->dir);
	s->cfg.dir = s->dir;
	if (cfg->admin) {
		snprintf(s->tenant, sizeof s->tenant, "%s", cfg->tenant);
		s->cfg.tenant = s->tenant;
		snprintf(s->prefix, sizeof s->prefix, "/v1/tenants/%s", cfg->tenant);
	} else {
		s->cfg.tenant = NULL;
		snprintf(s->prefix, sizeof s->prefix, "/v1");
	}
	n = snprintf(s->control_socket, sizeof s->control_socket, "%s/%s", s->dir,
	             cfg->admin ? "admin.sock" : "control.sock");
	r = device_target_init(&s->target, s->dir, s->cfg.tenant);
	if (n < 0 || (size_t)n >= sizeof s->control_socket || r < 0) {
		free(s);
		return -ENAMETOOLONG;
	}
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->released, NULL);
	*ret_s = s;
	return 0;
}

void snapshots_close(struct snapshots *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; i < s->n_idle; i++)
		http_close(s->idle[i]);
	free(s->idle);
	free(s->busy);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->released);
	free(s);
}

/* The position of VOLUME in the busy set, or -1. Under the lock. */
static ssize_t busy_index(const struct snapshots *s, const char *volume)
{
	for (size_t i = 0; i < s->n_busy; i++)
		if (strcmp(s->busy[i], volume) == 0)
			return (ssize_t)i;
	return -1;
}

/* Take VOLUME for an operation: wait while another has it, unless TRY (then false). */
static bool volume_take(struct snapshots *s, const char *volume, bool try)
{
	bool taken = false;

	pthread_mutex_lock(&s->lock);
	while (busy_index(s, volume) >= 0 && !try)
		pthread_cond_wait(&s->released, &s->lock);
	if (busy_index(s, volume) < 0) {
		if (s->n_busy == s->max_busy) {
			size_t max = s->max_busy ? 2 * s->max_busy : 16;
			void *grown = reallocarray(s->busy, max, sizeof *s->busy);

			if (grown == NULL) {
				pthread_mutex_unlock(&s->lock);
				return false;
			}
			s->busy = grown;
			s->max_busy = max;
		}
		memcpy(s->busy[s->n_busy++], volume, SNAP_VOLUME_SIZE);
		taken = true;
	}
	pthread_mutex_unlock(&s->lock);
	return taken;
}

/* Let VOLUME go, and wake those waiting for it. */
static void volume_release(struct snapshots *s, const char *volume)
{
	ssize_t i;

	pthread_mutex_lock(&s->lock);
	i = busy_index(s, volume);
	if (i >= 0)
		memcpy(s->busy[i], s->busy[--s->n_busy], SNAP_VOLUME_SIZE);
	pthread_cond_broadcast(&s->released);
	pthread_mutex_unlock(&s->lock);
}

/* Begin an operation described by FMT: a connection of its own, and error_line's
 * words captured instead of printed. */
static int op_begin(struct op *op, struct snapshots *s, struct snap_status *st, const char *fmt,
                    ...) __attribute__((format(printf, 4, 5)));

static int op_begin(struct op *op, struct snapshots *s, struct snap_status *st, const char *fmt,
                    ...)
{
	va_list ap;
	int r = 0;

	memset(op, 0, sizeof *op);
	op->s = s;
	op->st = st;
	st->code = SNAP_OK;
	st->message[0] = '\0';
	va_start(ap, fmt);
	vsnprintf(op->what, sizeof op->what, fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&s->lock);
	if (s->n_idle > 0)
		op->h = s->idle[--s->n_idle];
	pthread_mutex_unlock(&s->lock);
	error_lines_capture(op->said, sizeof op->said);
	if (op->h == NULL)
		r = http_open(s->control_socket, &op->h);
	if (r < 0)
		snap_fail(st, SNAP_INTERNAL, "%s: %s", op->what, strerror(-r));
	return r;
}

/* End the operation: its connection back to the idle ones, error lines printed again. */
static void op_end(struct op *op)
{
	struct snapshots *s = op->s;

	error_lines_capture(NULL, 0);
	if (op->h == NULL)
		return;
	pthread_mutex_lock(&s->lock);
	if (s->n_idle == s->max_idle) {
		size_t max = s->max_idle ? 2 * s->max_idle : 4;
		void *grown = reallocarray(s->idle, max, sizeof *s->idle);

		if (grown != NULL) {
			s->idle = grown;
			s->max_idle = max;
		}
	}
	if (s->n_idle < s->max_idle) {
		s->idle[s->n_idle++] = op->h;
		op->h = NULL;
	}
	pthread_mutex_unlock(&s->lock);
	http_close(op->h);
}

/* "what: the daemon's words" as the status, with the code R (from a request) maps to. */
static enum snap_code daemon_fail(struct op *op, int r)
{
	return snap_fail(op->st, snap_code_of(r, http_last_status(op->h)), "%s: %s", op->what,
	                 op->said[0] ? op->said : strerror(-r));
}

/* A request to the tenant's volumes: METHOD volumes[/VOLUME[/ACTION]][QUERY]. */
static int request(struct op *op, const char *method, const char *volume, const char *action,
                   const char *query, struct json_object *body, struct json_object **ret)
{
	char path[PATH_MAX_];

	snprintf(path, sizeof path, "%s/volumes%s%s%s%s%s", op->s->prefix, volume ? "/" : "",
	         volume ? volume : "", action ? "/" : "", action ? action : "", query ? query : "");
	op->said[0] = '\0';
	return http_json(op->h, NULL, method, path, body, ret);
}

/* Snapshot record of VOLUME into *REC: -ENOENT if there is no such volume or it is
 * not a snapshot's; other failures are the daemon's (the status says so). */
static int get_record(struct op *op, const char *volume, struct snap_record *rec)
{
	CLEANUP_JSON struct json_object *answer = NULL;
	int r;

	r = request(op, "GET", volume, NULL, NULL, NULL, &answer);
	if (r == -ENOENT && http_last_status(op->h) == 404)
		return -ENOENT;
	if (r < 0) {
		daemon_fail(op, r);
		return r;
	}
	r = snap_record_from_volume(answer, rec);
	if (r == -EBADMSG)
		snap_fail(op->st, SNAP_INTERNAL, "%s: volume %s has malformed snapshotter labels",
		          op->what, volume);
	else if (r == -ENOMEM)
		snap_fail(op->st, SNAP_INTERNAL, "%s: %s", op->what, strerror(ENOMEM));
	return r;
}

/* The ready snapshot KEY in VOLUME, into *REC; NotFound if there is none. */
static enum snap_code get_snapshot(struct op *op, const char *key, const char *volume,
                                   struct snap_record *rec)
{
	int r = get_record(op, volume, rec);

	if (r == 0 && !rec->ready)
		snap_record_clear(rec);
	if (r == -ENOENT || (r == 0 && !rec->ready))
		return snap_fail(op->st, SNAP_NOT_FOUND, "%s: snapshot %.*s does not exist",
		                 op->what, KEY_QUOTE, key);
	return op->st->code;
}

/* The mount of a snapshot of file system FS on /dev/nbdINDEX. */
static void make_mount(enum snap_fs fs, int index, bool read_only, bool has_parent,
                       struct snap_mount *m)
{
	memset(m, 0, sizeof *m);
	snprintf(m->type, sizeof m->type, "%s", snap_fs_name(fs));
	snprintf(m->source, sizeof m->source, "/dev/nbd%d", index);
	if (read_only)
		m->options[m->n_options++] = "ro";
	/* A snapshot of an xfs file system has its parent's UUID, which xfs refuses to
	 * mount twice. */
	if (fs == SNAP_FS_XFS && has_parent)
		m->options[m->n_options++] = "nouuid";
}

/* Attach VOLUME; a failure fills the status. */
static enum snap_code attach(struct op *op, const char *volume, bool read_only, int *ret_index)
{
	char reason[REASON_MAX];
	int r;

	r = device_attach(&op->s->target, volume, read_only, ret_index, reason, sizeof reason);
	if (r == -ENOSPC)
		return snap_fail(op->st, SNAP_RESOURCE_EXHAUSTED, "%s: no NBD device left: %s",
		                 op->what, reason);
	if (r < 0)
		return snap_fail(op->st, r == -ENOENT ? SNAP_NOT_FOUND : SNAP_UNAVAILABLE,
		                 "%s: attach: %s", op->what, reason);
	return SNAP_OK;
}

/* Detach VOLUME's device if it has one; a mounted one is FailedPrecondition, unless
 * FREEZE (see device_detach). */
static enum snap_code detach_volume(struct op *op, const char *volume, bool freeze)
{
	char reason[REASON_MAX];
	int index, r;

	if (device_find(&op->s->target, volume, &index) < 0)
		return SNAP_OK;
	r = device_detach(index, freeze, reason, sizeof reason);
	if (r == -ENXIO || r == -ENODEV)
		return SNAP_OK;
	if (r == -EBUSY)
		return snap_fail(op->st, SNAP_FAILED_PRECONDITION, "%s: /dev/nbd%d %s", op->what,
		                 index, reason);
	if (r < 0)
		return snap_fail(op->st, SNAP_INTERNAL, "%s: detach /dev/nbd%d: %s", op->what,
		                 index, reason);
	return SNAP_OK;
}

/* Detach VOLUME's device, if any, unless it is mounted. */
static enum snap_code detach(struct op *op, const char *volume)
{
	return detach_volume(op, volume, false);
}

/* Take away what a Prepare made of VOLUME: its device and the volume. Errors are only
 * logged: what is left is not ready, and Cleanup removes it. */
static void discard(struct op *op, const char *volume)
{
	struct snap_status saved = *op->st;
	int r;

	if (detach(op, volume) != SNAP_OK)
		snap_log("%s: %s, left for cleanup", op->what, op->st->message);
	else if ((r = request(op, "DELETE", volume, NULL, NULL, NULL, NULL)) < 0 && r != -ENOENT)
		snap_log("%s: remove volume %s: %s, left for cleanup", op->what, volume, op->said);
	*op->st = saved;
}

/* POST the new volume; on EEXIST, take over an interrupted Prepare's volume of the
 * same key (not ready, and ours to take: this process works on VOLUME now) once. */
static enum snap_code create_volume(struct op *op, const char *key, const char *volume,
                                    struct json_object *body)
{
	for (int attempt = 0;; attempt++) {
		struct snap_record old = {0};
		int r = request(op, "POST", NULL, NULL, NULL, body, NULL);

		if (r == 0)
			return SNAP_OK;
		if (r != -EEXIST || attempt > 0)
			return daemon_fail(op, r);
		r = get_record(op, volume, &old);
		if (r == 0 && old.ready) {
			snap_record_clear(&old);
			return snap_fail(op->st, SNAP_ALREADY_EXISTS,
			                 "%s: snapshot %.*s already exists", op->what, KEY_QUOTE,
			                 key);
		}
		snap_record_clear(&old);
		if (r == -EBADMSG || (r < 0 && r != -ENOENT))
			return op->st->code;
		if (r == -ENOENT && http_last_status(op->h) != 404)
			/* A volume of that name that is no snapshot's: not ours to take. */
			return snap_fail(op->st, SNAP_ALREADY_EXISTS,
			                 "%s: volume %s exists and is not a snapshot's", op->what,
			                 volume);
		if (r == 0) {
			snap_log("%s: taking over the volume an interrupted Prepare left",
			         op->what);
			discard(op, volume);
		}
	}
}

/* Prepare or View, with VOLUME taken. */
static enum snap_code prepare(struct op *op, const char *key, const char *parent,
                              const struct snap_labels *labels, bool view, const char *volume,
                              struct snap_mount *ret_mount)
{
	struct snapshots *s = op->s;
	CLEANUP_JSON struct json_object *body = NULL;
	struct snap_record prec = {0};
	struct json_object *label_obj;
	enum snap_fs fs = s->cfg.fs;
	char parent_volume[SNAP_VOLUME_SIZE];
	bool has_parent = parent[0] != '\0', created = false;
	struct timespec now, step;
	int index = -1, r;
	char reason[REASON_MAX];

	clock_gettime(CLOCK_MONOTONIC, &step);
	if (has_parent) {
		snap_volume_name(parent, parent_volume);
		r = get_record(op, parent_volume, &prec);
		if (r == -ENOENT || (r == 0 && !prec.ready)) {
			snap_record_clear(&prec);
			return snap_fail(op->st, SNAP_NOT_FOUND, "%s: parent %.*s does not exist",
			                 op->what, KEY_QUOTE, parent);
		}
		if (r < 0)
			return op->st->code;
		fs = prec.fs;
		if (prec.info.kind != SNAP_KIND_COMMITTED) {
			enum snap_kind kind = prec.info.kind;

			snap_record_clear(&prec);
			return snap_fail(op->st, SNAP_FAILED_PRECONDITION,
			                 "%s: parent %.*s is %s, not committed", op->what,
			                 KEY_QUOTE, parent, snap_kind_name(kind));
		}
		snap_record_clear(&prec);
	}

	clock_gettime(CLOCK_REALTIME, &now);
	body = json_object_new_object();
	label_obj = snap_volume_labels(labels, key, view ? SNAP_KIND_VIEW : SNAP_KIND_ACTIVE,
	                               parent, fs, &now, false);
	if (body == NULL || json_add_value(body, "labels", label_obj) < 0 ||
	    json_add_string(body, "name", volume) < 0 ||
	    (has_parent ? json_add_string(body, "parent", parent_volume)
	                : json_add_int(body, "size", (int64_t)s->cfg.size)) < 0)
		return snap_fail(op->st, SNAP_INTERNAL, "%s: %s", op->what, strerror(ENOMEM));
	if (create_volume(op, key, volume, body) != SNAP_OK)
		return op->st->code;
	created = true;
	fault_point("prepare-created");
	step_done(op, "create", &step);

	/* A view of a parent is attached read-only; an empty one gets its file system
	 * first. */
	if (attach(op, volume, view && has_parent, &index) != SNAP_OK)
		goto undo;
	fault_point("prepare-attached");
	step_done(op, "attach", &step);
	if (!has_parent) {
		r = device_mkfs(index, fs, reason, sizeof reason);
		if (r < 0) {
			snap_fail(op->st, SNAP_INTERNAL, "%s: %s", op->what, reason);
			goto undo;
		}
		fault_point("prepare-formatted");
		step_done(op, "mkfs", &step);
		if (view) {
			if (detach(op, volume) != SNAP_OK ||
			    attach(op, volume, true, &index) != SNAP_OK)
				goto undo;
		}
	}
	{
		CLEANUP_JSON struct json_object *patch = json_object_new_object();
		struct json_object *ready = json_object_new_object();

		if (patch == NULL || json_add_value(patch, "labels", ready) < 0 ||
		    json_add_string(ready, SNAP_LABEL_READY, "1") < 0) {
			snap_fail(op->st, SNAP_INTERNAL, "%s: %s", op->what, strerror(ENOMEM));
			goto undo;
		}
		r = request(op, "PATCH", volume, NULL, NULL, patch, NULL);
		if (r < 0) {
			daemon_fail(op, r);
			goto undo;
		}
	}
	step_done(op, "ready", &step);
	make_mount(fs, index, view, has_parent, ret_mount);
	return SNAP_OK;

undo:
	if (created)
		discard(op, volume);
	return op->st->code;
}

enum snap_code snap_prepare(struct snapshots *s, const char *key, const char *parent,
                            const struct snap_labels *labels, bool view,
                            struct snap_mount *ret_mount, struct snap_status *st)
{
	char volume[SNAP_VOLUME_SIZE];
	struct timespec start;
	struct op op;

	clock_gettime(CLOCK_MONOTONIC, &start);
	if (snap_check_key(view ? "view" : "prepare", key, st) != SNAP_OK ||
	    (parent[0] != '\0' && snap_check_key(view ? "view" : "prepare", parent, st) != SNAP_OK))
		return st->code;
	if (op_begin(&op, s, st, "%s %.*s", view ? "view" : "prepare", KEY_QUOTE, key) < 0) {
		op_end(&op);
		return st->code;
	}
	if (snap_check_labels(op.what, labels, st) == SNAP_OK) {
		snap_volume_name(key, volume);
		volume_take(s, volume, false);
		prepare(&op, key, parent, labels, view, volume, ret_mount);
		volume_release(s, volume);
	}
	op_end(&op);
	if (st->code == SNAP_OK)
		snap_log("%s%s%.*s: %s (%.3f s: %s)", op.what, parent[0] ? " from " : "",
		         parent[0] ? KEY_QUOTE : 0, parent, ret_mount->source,
		         seconds_since(&start), op.steps);
	else
		snap_log("%s", st->message);
	return st->code;
}

enum snap_code snap_mounts(struct snapshots *s, const char *key, struct snap_mount *ret_mount,
                           struct snap_status *st)
{
	struct snap_record rec = {0};
	char volume[SNAP_VOLUME_SIZE];
	struct op op;
	int index;

	if (snap_check_key("mounts", key, st) != SNAP_OK)
		return st->code;
	if (op_begin(&op, s, st, "mounts %.*s", KEY_QUOTE, key) < 0) {
		op_end(&op);
		return st->code;
	}
	snap_volume_name(key, volume);
	volume_take(s, volume, false);
	if (get_snapshot(&op, key, volume, &rec) != SNAP_OK)
		goto out;
	if (rec.info.kind == SNAP_KIND_COMMITTED) {
		snap_fail(st, SNAP_FAILED_PRECONDITION,
		          "%s: snapshot is committed, and has no mounts: view it", op.what);
		goto out;
	}
	/* Attached since its Prepare, unless a reboot or a detach took the device. */
	if (device_find(&s->target, volume, &index) < 0) {
		if (attach(&op, volume, rec.info.kind == SNAP_KIND_VIEW, &index) != SNAP_OK)
			goto out;
		snap_log("%s: attached again as /dev/nbd%d", op.what, index);
	}
	make_mount(rec.fs, index, rec.info.kind == SNAP_KIND_VIEW, rec.info.parent[0] != '\0',
	           ret_mount);
out:
	volume_release(s, volume);
	snap_record_clear(&rec);
	op_end(&op);
	return st->code;
}

/* Commit, with the key's volume taken. */
static enum snap_code commit(struct op *op, const char *name, const char *key,
                             const struct snap_labels *labels, const char *volume)
{
	CLEANUP_JSON struct json_object *body = NULL;
	struct snap_record rec = {0}, taken = {0};
	char new_volume[SNAP_VOLUME_SIZE];
	struct json_object *label_obj;
	struct timespec now, step;
	int r;

	clock_gettime(CLOCK_MONOTONIC, &step);
	if (get_snapshot(op, key, volume, &rec) != SNAP_OK)
		return op->st->code;
	if (rec.info.kind != SNAP_KIND_ACTIVE) {
		snap_fail(op->st, SNAP_FAILED_PRECONDITION, "%s: snapshot %.*s is a %s, not active",
		          op->what, KEY_QUOTE, key, snap_kind_name(rec.info.kind));
		goto out;
	}
	/* Asked before detaching, so that a taken name leaves the snapshot as it was; the
	 * daemon's commit asks again, in its transaction. */
	snap_volume_name(name, new_volume);
	r = get_record(op, new_volume, &taken);
	if (r == 0 || (r == -ENOENT && http_last_status(op->h) != 404)) {
		snap_fail(op->st, SNAP_ALREADY_EXISTS, "%s: snapshot %.*s already exists", op->what,
		          KEY_QUOTE, name);
		goto out;
	}
	if (r != -ENOENT)
		goto out;
	/* containerd's own tests commit snapshots they still have mounted (and never
	 * write to them again): what has been written is committed, and the mount loses
	 * its device. containerd's unpacker unmounts first. */
	if (detach_volume(op, volume, true) != SNAP_OK)
		goto out;
	fault_point("commit-detached");
	step_done(op, "detach", &step);

	clock_gettime(CLOCK_REALTIME, &now);
	body = json_object_new_object();
	label_obj = snap_volume_labels(labels, name, SNAP_KIND_COMMITTED, rec.info.parent, rec.fs,
	                               &now, true);
	if (body == NULL || json_add_value(body, "labels", label_obj) < 0 ||
	    json_add_string(body, "name", new_volume) < 0) {
		snap_fail(op->st, SNAP_INTERNAL, "%s: %s", op->what, strerror(ENOMEM));
		goto out;
	}
	r = request(op, "POST", volume, "commit", NULL, body, NULL);
	step_done(op, "commit", &step);
	if (r == -EEXIST)
		snap_fail(op->st, SNAP_ALREADY_EXISTS, "%s: snapshot %.*s already exists", op->what,
		          KEY_QUOTE, name);
	else if (r < 0)
		daemon_fail(op, r);
out:
	snap_record_clear(&rec);
	snap_record_clear(&taken);
	return op->st->code;
}

enum snap_code snap_commit(struct snapshots *s, const char *name, const char *key,
                           const struct snap_labels *labels, struct snap_status *st)
{
	char volume[SNAP_VOLUME_SIZE];
	struct timespec start;
	struct op op;

	clock_gettime(CLOCK_MONOTONIC, &start);
	if (snap_check_key("commit", name, st) != SNAP_OK ||
	    snap_check_key("commit", key, st) != SNAP_OK)
		return st->code;
	if (op_begin(&op, s, st, "commit %.*s", KEY_QUOTE, key) < 0) {
		op_end(&op);
		return st->code;
	}
	if (snap_check_labels(op.what, labels, st) == SNAP_OK) {
		snap_volume_name(key, volume);
		volume_take(s, volume, false);
		commit(&op, name, key, labels, volume);
		volume_release(s, volume);
	}
	op_end(&op);
	if (st->code == SNAP_OK)
		snap_log("%s as %.*s (%.3f s: %s)", op.what, KEY_QUOTE, name, seconds_since(&start),
		         op.steps);
	else
		snap_log("%s", st->message);
	return st->code;
}

enum snap_code snap_remove(struct snapshots *s, const char *key, struct snap_status *st)
{
	struct snap_record rec = {0};
	char volume[SNAP_VOLUME_SIZE];
	struct timespec start, step;
	struct op op;
	int r;

	clock_gettime(CLOCK_MONOTONIC, &start);
	if (snap_check_key("remove", key, st) != SNAP_OK)
		return st->code;
	if (op_begin(&op, s, st, "remove %.*s", KEY_QUOTE, key) < 0) {
		op_end(&op);
		return st->code;
	}
	snap_volume_name(key, volume);
	volume_take(s, volume, false);
	if (get_snapshot(&op, key, volume, &rec) != SNAP_OK)
		goto out;
	step = start;
	if (detach(&op, volume) != SNAP_OK)
		goto out;
	fault_point("remove-detached");
	step_done(&op, "detach", &step);
	r = request(&op, "DELETE", volume, NULL, NULL, NULL, NULL);
	step_done(&op, "delete", &step);
	if (r == -EBUSY)
		snap_fail(st, SNAP_FAILED_PRECONDITION, "%s: %s", op.what,
		          op.said[0] ? op.said : "busy: it has children, or is open");
	else if (r < 0)
		daemon_fail(&op, r);
out:
	volume_release(s, volume);
	snap_record_clear(&rec);
	op_end(&op);
	if (st->code == SNAP_OK)
		snap_log("%s (%.3f s: %s)", op.what, seconds_since(&start), op.steps);
	else if (st->code != SNAP_NOT_FOUND)
		snap_log("%s", st->message);
	return st->code;
}

/* Hand the info of REC over to *RET (REC keeps nothing). */
static void take_info(struct snap_record *rec, struct snap_info *ret)
{
	*ret = rec->info;
	memset(&rec->info, 0, sizeof rec->info);
}

enum snap_code snap_stat(struct snapshots *s, const char *key, struct snap_info *ret_info,
                         struct snap_status *st)
{
	struct snap_record rec = {0};
	char volume[SNAP_VOLUME_SIZE];
	struct op op;

	if (snap_check_key("stat", key, st) != SNAP_OK)
		return st->code;
	if (op_begin(&op, s, st, "stat %.*s", KEY_QUOTE, key) == 0) {
		snap_volume_name(key, volume);
		if (get_snapshot(&op, key, volume, &rec) == SNAP_OK)
			take_info(&rec, ret_info);
	}
	snap_record_clear(&rec);
	op_end(&op);
	return st->code;
}

enum snap_code snap_update(struct snapshots *s, const struct snap_info *info,
                           const char *const *paths, size_t n, struct snap_info *ret_info,
                           struct snap_status *st)
{
	CLEANUP_JSON struct json_object *body = NULL, *answer = NULL;
	struct snap_record rec = {0}, after = {0};
	char volume[SNAP_VOLUME_SIZE];
	struct json_object *patch;
	struct timespec now;
	struct op op;
	int r;

	if (snap_check_key("update", info->name, st) != SNAP_OK)
		return st->code;
	if (op_begin(&op, s, st, "update %.*s", KEY_QUOTE, info->name) < 0) {
		op_end(&op);
		return st->code;
	}
	if (snap_check_paths(op.what, paths, n, st) != SNAP_OK ||
	    snap_check_labels(op.what, &info->labels, st) != SNAP_OK) {
		op_end(&op);
		return st->code;
	}
	snap_volume_name(info->name, volume);
	volume_take(s, volume, false);
	if (get_snapshot(&op, info->name, volume, &rec) != SNAP_OK)
		goto out;
	clock_gettime(CLOCK_REALTIME, &now);
	body = json_object_new_object();
	patch = snap_update_patch(&rec.info.labels, &info->labels, paths, n, &now);
	if (body == NULL || json_add_value(body, "labels", patch) < 0) {
		snap_fail(st, SNAP_INTERNAL, "%s: %s", op.what, strerror(ENOMEM));
		goto out;
	}
	r = request(&op, "PATCH", volume, NULL, NULL, body, &answer);
	if (r < 0) {
		daemon_fail(&op, r);
		goto out;
	}
	r = snap_record_from_volume(answer, &after);
	if (r < 0)
		snap_fail(st, SNAP_INTERNAL, "%s: the daemon's answer: %s", op.what, strerror(-r));
	else
		take_info(&after, ret_info);
out:
	volume_release(s, volume);
	snap_record_clear(&rec);
	snap_record_clear(&after);
	op_end(&op);
	return st->code;
}

/* The daemon's exact usage of VOLUME (GET .../usage) into *RET, or NULL where it gives
 * none: a daemon that cannot tell it, or one from before it. Its words go unused. */
static void get_usage(struct op *op, const char *volume, struct json_object **ret)
{
	*ret = NULL;
	(void)request(op, "GET", volume, "usage", NULL, NULL, ret);
	op->said[0] = '\0';
}

enum snap_code snap_usage(struct snapshots *s, const char *key, struct snap_usage *ret_usage,
                          struct snap_status *st)
{
	struct snap_record rec = {0};
	char volume[SNAP_VOLUME_SIZE];
	struct json_object *usage;
	struct op op;
	int index;

	if (snap_check_key("usage", key, st) != SNAP_OK)
		return st->code;
	if (op_begin(&op, s, st, "usage %.*s", KEY_QUOTE, key) == 0) {
		snap_volume_name(key, volume);
		if (get_snapshot(&op, key, volume, &rec) == SNAP_OK) {
			get_usage(&op, volume, &usage);
			ret_usage->size = snap_usage_size(usage, rec.used);
			json_object_put(usage);
			ret_usage->inodes = 0;
			if (device_find(&s->target, volume, &index) == 0)
				device_inodes(index, &ret_usage->inodes);
		}
	}
	snap_record_clear(&rec);
	op_end(&op);
	return st->code;
}

struct walk {
	const struct filter *filter;
	snap_walk_fn *fn;
	void *opaque;
};

/* The snapshot as containerd's filters see it: kind, name, parent, labels.KEY. */
static bool field_of(const char *const *path, size_t n, const char **ret_value, void *opaque)
{
	const struct snap_info *info = opaque;

	if (n == 0)
		return false;
	if (strcmp(path[0], "kind") == 0) {
		*ret_value = snap_kind_name(info->kind);
		return true;
	}
	if (strcmp(path[0], "name") == 0) {
		*ret_value = info->name;
		return true;
	}
	if (strcmp(path[0], "parent") == 0) {
		*ret_value = info->parent;
		return true;
	}
	if (strcmp(path[0], "labels") == 0 && n > 1 && info->labels.n > 0) {
		char key[SNAP_LABEL_MAX + 1];
		size_t len = 0;

		/* labels.a.b is the label "a.b". */
		for (size_t i = 1; i < n; i++) {
			int m = snprintf(key + len, sizeof key - len, "%s%s", i > 1 ? "." : "",
			                 path[i]);

			if (m < 0 || (size_t)m >= sizeof key - len)
				return false;
			len += (size_t)m;
		}
		*ret_value = snap_label_get(&info->labels, key);
		return *ret_value != NULL;
	}
	return false;
}

/* http_json_each's callback for List: a ready snapshot that matches goes to the walk's
 * function; other volumes are skipped. */
static int walk_one(struct json_object *volume, void *opaque)
{
	struct walk *w = opaque;
	struct snap_record rec = {0};
	int r;

	r = snap_record_from_volume(volume, &rec);
	if (r == -ENOENT || r == -EBADMSG)
		return 0;
	if (r < 0)
		return r;
	if (rec.ready && filter_match(w->filter, field_of, &rec.info))
		r = w->fn(&rec.info, w->opaque);
	snap_record_clear(&rec);
	return r;
}

enum snap_code snap_walk(struct snapshots *s, const char *const *filters, size_t n,
                         snap_walk_fn *fn, void *opaque, struct snap_status *st)
{
	struct filter *filter = NULL;
	struct walk w = {.fn = fn, .opaque = opaque};
	char reason[512], path[PATH_MAX_];
	struct op op;
	int r;

	if (op_begin(&op, s, st, "list") < 0) {
		op_end(&op);
		return st->code;
	}
	r = filter_parse(filters, n, &filter, reason, sizeof reason);
	if (r < 0) {
		snap_fail(st, r == -EINVAL ? SNAP_INVALID_ARGUMENT : SNAP_INTERNAL, "list: %s",
		          r == -EINVAL ? reason : strerror(-r));
		op_end(&op);
		return st->code;
	}
	w.filter = filter;
	snprintf(path, sizeof path, "%s/volumes?label=" SNAP_LABEL_READY, s->prefix);
	op.said[0] = '\0';
	r = http_json_each(op.h, "list", path, "volumes", walk_one, &w);
	if (r < 0 && http_last_status(op.h) == 200)
		snap_fail(st, r == -ECANCELED ? SNAP_UNAVAILABLE : SNAP_INTERNAL, "list: %s",
		          op.said[0] ? op.said : strerror(-r));
	else if (r < 0)
		daemon_fail(&op, r);
	filter_free(filter);
	op_end(&op);
	return st->code;
}

/* A snapshot's volume as Cleanup sees it. */
struct seen {
	char volume[SNAP_VOLUME_SIZE];
	bool ready, committed;
};

struct seen_list {
	struct seen *items;
	size_t n, max;
};

/* http_json_each's callback for Cleanup: note each snapshot's volume. */
static int collect(struct json_object *volume, void *opaque)
{
	struct seen_list *l = opaque;
	struct snap_record rec = {0};
	int r;

	r = snap_record_from_volume(volume, &rec);
	if (r == -ENOENT || r == -EBADMSG)
		return 0;
	if (r < 0)
		return r;
	if (l->n == l->max) {
		size_t max = l->max ? 2 * l->max : 64;
		void *grown = reallocarray(l->items, max, sizeof *l->items);

		if (grown == NULL) {
			snap_record_clear(&rec);
			return -ENOMEM;
		}
		l->items = grown;
		l->max = max;
	}
	memcpy(l->items[l->n].volume, rec.volume, SNAP_VOLUME_SIZE);
	l->items[l->n].ready = rec.ready;
	l->items[l->n].committed = rec.info.kind == SNAP_KIND_COMMITTED;
	l->n++;
	snap_record_clear(&rec);
	return 0;
}

/* Whether Cleanup's listing had VOLUME. */
static bool seen_has(const struct seen_list *l, const char *volume)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->items[i].volume, volume) == 0)
			return true;
	return false;
}

/* One volume Cleanup may act on, taken: look again (a Prepare may have finished since
 * the listing), then remove it if it is still not ready, or detach it if it is
 * committed or gone. Returns 1 if it did something. */
static int clean_one(struct op *op, const char *volume)
{
	struct snap_record rec = {0};
	int r, did = 0;

	r = get_record(op, volume, &rec);
	if (r == 0 && !rec.ready) {
		snap_log("cleanup: removing %s, left by an interrupted Prepare of %.*s", volume,
		         KEY_QUOTE, rec.info.name);
		op->st->code = SNAP_OK;
		discard(op, volume);
		did = 1;
	} else if ((r == 0 && rec.info.kind == SNAP_KIND_COMMITTED) ||
	           (r == -ENOENT && http_last_status(op->h) == 404)) {
		int index;

		if (device_find(&op->s->target, volume, &index) == 0) {
			snap_log("cleanup: detaching /dev/nbd%d of %s %s", index,
			         r == 0 ? "committed" : "vanished", volume);
			if (detach(op, volume) != SNAP_OK)
				snap_log("%s, ignoring", op->st->message);
			did = 1;
		}
	}
	op->st->code = SNAP_OK;
	snap_record_clear(&rec);
	return did;
}

enum snap_code snap_cleanup(struct snapshots *s, struct snap_status *st)
{
	struct seen_list list = {0};
	CLEANUP_FREE int *indices = NULL;
	char path[PATH_MAX_];
	size_t n_devices = 0;
	struct op op;
	int r, did = 0;

	if (op_begin(&op, s, st, "cleanup") < 0) {
		op_end(&op);
		return st->code;
	}
	snprintf(path, sizeof path, "%s/volumes?label=" SNAP_LABEL_KIND, s->prefix);
	r = http_json_each(op.h, "cleanup", path, "volumes", collect, &list);
	if (r < 0) {
		daemon_fail(&op, r);
		goto out;
	}
	for (size_t i = 0; i < list.n; i++) {
		const struct seen *v = &list.items[i];
		int index;

		if (v->ready && !(v->committed && device_find(&s->target, v->volume, &index) == 0))
			continue;
		/* Taken by an operation of ours: it is that operation's to finish. */
		if (!volume_take(s, v->volume, true))
			continue;
		did += clean_one(&op, v->volume);
		volume_release(s, v->volume);
	}
	/* Devices of snapshots' volumes that no longer exist. */
	if (nbd_device_list(&indices, &n_devices) == 0)
		for (size_t i = 0; i < n_devices; i++) {
			struct attachment rec;

			if (registry_read(indices[i], &rec) < 0 ||
			    strcmp(rec.socket, s->target.nbd_socket) != 0 ||
			    !snap_is_volume_name(rec.volume) || seen_has(&list, rec.volume) ||
			    !volume_take(s, rec.volume, true))
				continue;
			did += clean_one(&op, rec.volume);
			volume_release(s, rec.volume);
		}
	if (did > 0)
		snap_log("cleanup: %d volume%s or device%s", did, did > 1 ? "s" : "",
		         did > 1 ? "s" : "");
out:
	free(list.items);
	op_end(&op);
	return st->code;
}
