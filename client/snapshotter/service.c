/* `thinproxy snapshotter`: containerd's Snapshots service (containerd.services.snapshots.v1)
 * on the gRPC server of grpc.h, for containerd's proxy plugins. Each handler turns the
 * request's protobuf message into the plain structs of snapshots.h, calls the operation
 * and turns its answer back; the operations hold everything else. The agent runs in the
 * foreground, logs to stderr, and ends on SIGTERM or SIGINT, leaving attached devices
 * attached: they belong to snapshots that still exist. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <containerd/services/snapshots/v1/snapshots.pb-c.h>
#include <google/protobuf/empty.pb-c.h>

#include "tp-cleanup.h"
#include "client.h"
#include "grpc.h"
#include "output.h"
#include "snapshots.h"

/* List sends its infos in pages of this many, as containerd's own service does. */
#define LIST_PAGE 100

typedef Containerd__Services__Snapshots__V1__Info Info;
typedef Containerd__Services__Snapshots__V1__Info__LabelsEntry LabelsEntry;
typedef Containerd__Types__Mount Mount;

static struct grpc_server *running;

/* SIGTERM, SIGINT: stop serving; grpc_server_stop is safe in a signal handler. */
static void on_signal(int sig)
{
	(void)sig;
	if (running != NULL)
		grpc_server_stop(running);
}

/* The labels of a request (protobuf-c's map entries: N pointers to {key, value}) as
 * snapshots.h takes them, in *RET (the strings stay the request's). */
#define LABELS_OF(req, ret) labels_of((void *const *)(req)->labels, (req)->n_labels, (ret))

/* Any of protobuf-c's map entry structs: the message header, then key and value. */
struct entry {
	ProtobufCMessage base;
	char *key, *value;
};

static int labels_of(void *const *entries, size_t n, struct snap_labels *ret)
{
	ret->n = 0;
	ret->items = calloc(n ? n : 1, sizeof *ret->items);
	if (ret->items == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const struct entry *e = entries[i];

		ret->items[i].key = e->key;
		ret->items[i].value = e->value;
	}
	ret->n = n;
	return 0;
}

/* Set the call's failure from ST, and return its code. */
static enum grpc_status failed(struct grpc_call *call, const struct snap_status *st)
{
	return grpc_call_fail(call, (enum grpc_status)st->code, "%s", st->message);
}

/* Fail the call with INTERNAL: out of memory. */
static enum grpc_status out_of_memory(struct grpc_call *call)
{
	return grpc_call_fail(call, GRPC_INTERNAL, "%s", strerror(ENOMEM));
}

/* A reply of the N mounts M (here: one). */
static enum grpc_status send_mounts(struct grpc_call *call, ProtobufCMessage *reply,
                                    size_t *n_mounts, Mount ***mounts, const struct snap_mount *m)
{
	Mount mount = CONTAINERD__TYPES__MOUNT__INIT, *list[1] = {&mount};
	int r;

	mount.type = (char *)m->type;
	mount.source = (char *)m->source;
	mount.n_options = m->n_options;
	mount.options = (char **)m->options;
	*n_mounts = 1;
	*mounts = list;
	r = grpc_call_send(call, reply);
	*n_mounts = 0;
	*mounts = NULL;
	return r < 0 && r != -ECANCELED ? grpc_call_fail(call, GRPC_INTERNAL, "%s", strerror(-r))
	                                : GRPC_OK;
}

/* Prepare or View KEY of PARENT and reply with its mount. */
static enum grpc_status prepare_or_view(struct grpc_call *call, const char *key, const char *parent,
                                        const struct snap_labels *labels, bool view)
{
	struct snapshots *s = grpc_call_userdata(call);
	struct snap_mount m;
	struct snap_status st;

	if (snap_prepare(s, key, parent, labels, view, &m, &st) != SNAP_OK)
		return failed(call, &st);
	if (view) {
		Containerd__Services__Snapshots__V1__ViewSnapshotResponse reply =
		    CONTAINERD__SERVICES__SNAPSHOTS__V1__VIEW_SNAPSHOT_RESPONSE__INIT;

		return send_mounts(call, &reply.base, &reply.n_mounts, &reply.mounts, &m);
	} else {
		Containerd__Services__Snapshots__V1__PrepareSnapshotResponse reply =
		    CONTAINERD__SERVICES__SNAPSHOTS__V1__PREPARE_SNAPSHOT_RESPONSE__INIT;

		return send_mounts(call, &reply.base, &reply.n_mounts, &reply.mounts, &m);
	}
}

/* The handlers, one per method: the request's fields to snapshots.h and back. */
static enum grpc_status prepare(struct grpc_call *call, const ProtobufCMessage *request)
{
	const Containerd__Services__Snapshots__V1__PrepareSnapshotRequest *req =
	    (const void *)request;
	CLEANUP_FREE struct snap_label *items = NULL;
	struct snap_labels labels;

	if (LABELS_OF(req, &labels) < 0)
		return out_of_memory(call);
	items = labels.items;
	return prepare_or_view(call, req->key, req->parent, &labels, false);
}

static enum grpc_status view(struct grpc_call *call, const ProtobufCMessage *request)
{
	const Containerd__Services__Snapshots__V1__ViewSnapshotRequest *req = (const void *)request;
	CLEANUP_FREE struct snap_label *items = NULL;
	struct snap_labels labels;

	if (LABELS_OF(req, &labels) < 0)
		return out_of_memory(call);
	items = labels.items;
	return prepare_or_view(call, req->key, req->parent, &labels, true);
}

static enum grpc_status mounts(struct grpc_call *call, const ProtobufCMessage *request)
{
	const Containerd__Services__Snapshots__V1__MountsRequest *req = (const void *)request;
	Containerd__Services__Snapshots__V1__MountsResponse reply =
	    CONTAINERD__SERVICES__SNAPSHOTS__V1__MOUNTS_RESPONSE__INIT;
	struct snapshots *s = grpc_call_userdata(call);
	struct snap_mount m;
	struct snap_status st;

	if (snap_mounts(s, req->key, &m, &st) != SNAP_OK)
		return failed(call, &st);
	return send_mounts(call, &reply.base, &reply.n_mounts, &reply.mounts, &m);
}

/* Send the empty reply of Commit, Remove and Cleanup. */
static enum grpc_status send_empty(struct grpc_call *call)
{
	Google__Protobuf__Empty reply = GOOGLE__PROTOBUF__EMPTY__INIT;
	int r = grpc_call_send(call, &reply.base);

	return r < 0 && r != -ECANCELED ? grpc_call_fail(call, GRPC_INTERNAL, "%s", strerror(-r))
	                                : GRPC_OK;
}

static enum grpc_status commit(struct grpc_call *call, const ProtobufCMessage *request)
{
	const Containerd__Services__Snapshots__V1__CommitSnapshotRequest *req =
	    (const void *)request;
	struct snapshots *s = grpc_call_userdata(call);
	CLEANUP_FREE struct snap_label *items = NULL;
	struct snap_labels labels;
	struct snap_status st;

	if (LABELS_OF(req, &labels) < 0)
		return out_of_memory(call);
	items = labels.items;
	if (snap_commit(s, req->name, req->key, &labels, &st) != SNAP_OK)
		return failed(call, &st);
	return send_empty(call);
}

static enum grpc_status remove_(struct grpc_call *call, const ProtobufCMessage *request)
{
	const Containerd__Services__Snapshots__V1__RemoveSnapshotRequest *req =
	    (const void *)request;
	struct snapshots *s = grpc_call_userdata(call);
	struct snap_status st;

	if (snap_remove(s, req->key, &st) != SNAP_OK)
		return failed(call, &st);
	return send_empty(call);
}

static enum grpc_status cleanup(struct grpc_call *call, const ProtobufCMessage *request)
{
	struct snapshots *s = grpc_call_userdata(call);
	struct snap_status st;

	(void)request;
	if (snap_cleanup(s, &st) != SNAP_OK)
		return failed(call, &st);
	return send_empty(call);
}

/* An Info message for INFO, whose strings it borrows, built in BUF: the message, its
 * two timestamps, and its label entries (pointers in ENTRIES, N_LABELS of them). */
struct info_buf {
	Info info;
	Google__Protobuf__Timestamp created, updated;
	LabelsEntry *entries;
	LabelsEntry **pointers;
};

static int info_build(const struct snap_info *in, struct info_buf *b)
{
	Info info = CONTAINERD__SERVICES__SNAPSHOTS__V1__INFO__INIT;
	Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	LabelsEntry entry = CONTAINERD__SERVICES__SNAPSHOTS__V1__INFO__LABELS_ENTRY__INIT;
	size_t n = in->labels.n;

	b->info = info;
	b->created = b->updated = ts;
	b->entries = calloc(n ? n : 1, sizeof *b->entries);
	b->pointers = calloc(n ? n : 1, sizeof *b->pointers);
	if (b->entries == NULL || b->pointers == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		b->entries[i] = entry;
		b->entries[i].key = in->labels.items[i].key;
		b->entries[i].value = in->labels.items[i].value;
		b->pointers[i] = &b->entries[i];
	}
	b->created.seconds = in->created.tv_sec;
	b->created.nanos = (int32_t)in->created.tv_nsec;
	b->updated.seconds = in->updated.tv_sec;
	b->updated.nanos = (int32_t)in->updated.tv_nsec;
	b->info.name = in->name;
	b->info.parent = in->parent;
	b->info.kind = (Containerd__Services__Snapshots__V1__Kind)in->kind;
	b->info.created_at = &b->created;
	b->info.updated_at = &b->updated;
	b->info.n_labels = n;
	b->info.labels = b->pointers;
	return 0;
}

/* Free what info_build allocated (not the strings: they are borrowed). */
static void info_buf_free(struct info_buf *b)
{
	free(b->entries);
	free(b->pointers);
	b->entries = NULL;
	b->pointers = NULL;
}

/* Send the one info of Stat or Update. */
static enum grpc_status send_info(struct grpc_call *call, const struct snap_info *in, bool update)
{
	Containerd__Services__Snapshots__V1__StatSnapshotResponse stat =
	    CONTAINERD__SERVICES__SNAPSHOTS__V1__STAT_SNAPSHOT_RESPONSE__INIT;
	Containerd__Services__Snapshots__V1__UpdateSnapshotResponse upd =
	    CONTAINERD__SERVICES__SNAPSHOTS__V1__UPDATE_SNAPSHOT_RESPONSE__INIT;
	struct info_buf b = {0};
	int r;

	r = info_build(in, &b);
	if (r == 0) {
		stat.info = upd.info = &b.info;
		r = grpc_call_send(call, update ? &upd.base : &stat.base);
	}
	info_buf_free(&b);
	return r < 0 && r != -ECANCELED ? grpc_call_fail(call, GRPC_INTERNAL, "%s", strerror(-r))
	                                : GRPC_OK;
}

static enum grpc_status stat_(struct grpc_call *call, const ProtobufCMessage *request)
{
	const Containerd__Services__Snapshots__V1__StatSnapshotRequest *req = (const void *)request;
	struct snapshots *s = grpc_call_userdata(call);
	struct snap_info info = {0};
	struct snap_status st;
	enum grpc_status status;

	if (snap_stat(s, req->key, &info, &st) != SNAP_OK)
		return failed(call, &st);
	status = send_info(call, &info, false);
	snap_info_clear(&info);
	return status;
}

static enum grpc_status update(struct grpc_call *call, const ProtobufCMessage *request)
{
	const Containerd__Services__Snapshots__V1__UpdateSnapshotRequest *req =
	    (const void *)request;
	struct snapshots *s = grpc_call_userdata(call);
	CLEANUP_FREE struct snap_label *items = NULL;
	struct snap_info in = {0}, out = {0};
	struct snap_status st;
	enum grpc_status status;

	if (req->info == NULL)
		return grpc_call_fail(call, GRPC_INVALID_ARGUMENT, "update: no info");
	if (LABELS_OF(req->info, &in.labels) < 0)
		return out_of_memory(call);
	items = in.labels.items;
	in.name = req->info->name;
	if (snap_update(s, &in,
	                req->update_mask ? (const char *const *)req->update_mask->paths : NULL,
	                req->update_mask ? req->update_mask->n_paths : 0, &out, &st) != SNAP_OK)
		return failed(call, &st);
	status = send_info(call, &out, true);
	snap_info_clear(&out);
	return status;
}

static enum grpc_status usage(struct grpc_call *call, const ProtobufCMessage *request)
{
	const Containerd__Services__Snapshots__V1__UsageRequest *req = (const void *)request;
	Containerd__Services__Snapshots__V1__UsageResponse reply =
	    CONTAINERD__SERVICES__SNAPSHOTS__V1__USAGE_RESPONSE__INIT;
	struct snapshots *s = grpc_call_userdata(call);
	struct snap_usage u;
	struct snap_status st;
	int r;

	if (snap_usage(s, req->key, &u, &st) != SNAP_OK)
		return failed(call, &st);
	reply.size = u.size;
	reply.inodes = u.inodes;
	r = grpc_call_send(call, &reply.base);
	return r < 0 && r != -ECANCELED ? grpc_call_fail(call, GRPC_INTERNAL, "%s", strerror(-r))
	                                : GRPC_OK;
}

/* List's page: infos collected until there are LIST_PAGE, then sent. */
struct page {
	struct grpc_call *call;
	struct info_buf bufs[LIST_PAGE];
	Info *infos[LIST_PAGE];
	struct snap_info held[LIST_PAGE]; /* copies: the walk's infos go after the call */
	size_t n;
};

/* Free the page's infos and empty it. */
static void page_clear(struct page *p)
{
	for (size_t i = 0; i < p->n; i++) {
		info_buf_free(&p->bufs[i]);
		snap_info_clear(&p->held[i]);
	}
	p->n = 0;
}

/* Send the page's infos as one ListSnapshotsResponse, and empty it. */
static int page_send(struct page *p)
{
	Containerd__Services__Snapshots__V1__ListSnapshotsResponse reply =
	    CONTAINERD__SERVICES__SNAPSHOTS__V1__LIST_SNAPSHOTS_RESPONSE__INIT;
	int r;

	if (p->n == 0)
		return 0;
	reply.n_info = p->n;
	reply.info = p->infos;
	r = grpc_call_send(p->call, &reply.base);
	page_clear(p);
	return r;
}

/* A deep copy of IN into *OUT. */
static int info_copy(const struct snap_info *in, struct snap_info *out)
{
	memset(out, 0, sizeof *out);
	out->name = strdup(in->name);
	out->parent = strdup(in->parent);
	out->kind = in->kind;
	out->created = in->created;
	out->updated = in->updated;
	out->labels.items = calloc(in->labels.n ? in->labels.n : 1, sizeof *out->labels.items);
	if (out->name == NULL || out->parent == NULL || out->labels.items == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < in->labels.n; i++) {
		out->labels.items[i].key = strdup(in->labels.items[i].key);
		out->labels.items[i].value = strdup(in->labels.items[i].value);
		out->labels.n = i + 1;
		if (out->labels.items[i].key == NULL || out->labels.items[i].value == NULL)
			return -ENOMEM;
	}
	return 0;
}

/* snap_walk's callback: add INFO to the page, sending it once full. */
static int list_one(const struct snap_info *info, void *opaque)
{
	struct page *p = opaque;
	size_t i = p->n;
	int r;

	if (grpc_call_cancelled(p->call))
		return -ECANCELED;
	p->n++;
	r = info_copy(info, &p->held[i]);
	if (r == 0)
		r = info_build(&p->held[i], &p->bufs[i]);
	if (r < 0)
		return r;
	p->infos[i] = &p->bufs[i].info;
	return p->n == LIST_PAGE ? page_send(p) : 0;
}

/* List: the walk's infos in pages of LIST_PAGE. */
static enum grpc_status list(struct grpc_call *call, const ProtobufCMessage *request)
{
	const Containerd__Services__Snapshots__V1__ListSnapshotsRequest *req =
	    (const void *)request;
	struct snapshots *s = grpc_call_userdata(call);
	struct page *p = calloc(1, sizeof *p);
	struct snap_status st;
	int r;

	if (p == NULL)
		return out_of_memory(call);
	p->call = call;
	if (snap_walk(s, (const char *const *)req->filters, req->n_filters, list_one, p, &st) !=
	    SNAP_OK) {
		page_clear(p);
		free(p);
		return failed(call, &st);
	}
	r = page_send(p);
	free(p);
	return r < 0 && r != -ECANCELED ? grpc_call_fail(call, GRPC_INTERNAL, "%s", strerror(-r))
	                                : GRPC_OK;
}

#define METHOD(name, type, is_streaming, fn)                                           \
	{                                                                              \
		.path = "/containerd.services.snapshots.v1.Snapshots/" name,           \
		.request = &containerd__services__snapshots__v1__##type##__descriptor, \
		.streaming = is_streaming, .handler = fn,                              \
	}

static const struct grpc_method methods[] = {
    METHOD("Prepare", prepare_snapshot_request, false, prepare),
    METHOD("View", view_snapshot_request, false, view),
    METHOD("Mounts", mounts_request, false, mounts),
    METHOD("Commit", commit_snapshot_request, false, commit),
    METHOD("Remove", remove_snapshot_request, false, remove_),
    METHOD("Stat", stat_snapshot_request, false, stat_),
    METHOD("Update", update_snapshot_request, false, update),
    METHOD("List", list_snapshots_request, true, list),
    METHOD("Usage", usage_request, false, usage),
    METHOD("Cleanup", cleanup_request, false, cleanup),
};

/* Make the directory that holds PATH, if it is missing: only root goes in. */
static int make_socket_dir(const char *path)
{
	CLEANUP_FREE char *dir = strdup(path);
	char *slash;

	if (dir == NULL)
		return -ENOMEM;
	slash = strrchr(dir, '/');
	if (slash == NULL || slash == dir)
		return 0;
	*slash = '\0';
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int cmd_snapshotter(struct ctx *c, const struct args *a)
{
	struct snap_config cfg = {.dir = c->dir,
	                          .admin = c->admin,
	                          .tenant = c->tenant,
	                          .fs = SNAP_FS_EXT4,
	                          .size = SNAP_DEFAULT_SIZE};
	const char *socket_path = a->socket != NULL ? a->socket : SNAPSHOTTER_SOCKET;
	struct grpc_server *server = NULL;
	struct snapshots *s = NULL;
	struct sigaction sa = {.sa_handler = on_signal};
	struct snap_status st;
	int r;

	if (a->fs != NULL && strcmp(a->fs, "xfs") == 0)
		cfg.fs = SNAP_FS_XFS;
	else if (a->fs != NULL && strcmp(a->fs, "ext4") != 0)
		return error_line(-EINVAL, "snapshotter", "invalid --fs '%s': expected ext4 or xfs",
		                  a->fs);
	if (a->size != NULL) {
		r = parse_volume_size("snapshotter", a->size, &cfg.size);
		if (r < 0)
			return r;
	}
	if (socket_path[0] != '/')
		return error_line(-EINVAL, "snapshotter",
		                  "invalid --socket '%s': expected an absolute path", socket_path);

	r = snapshots_open(&cfg, &s);
	if (r < 0)
		return error_line(r, "snapshotter", "%s", strerror(-r));
	r = grpc_server_new(methods, ARRAY_SIZE(methods), NULL, s, &server);
	if (r == 0)
		r = make_socket_dir(socket_path);
	if (r == 0)
		r = grpc_server_listen(server, socket_path, 0600);
	if (r < 0) {
		error_line(r, "snapshotter", "cannot listen on %s: %s", socket_path,
		           r == -EADDRINUSE ? "another snapshotter listens there" : strerror(-r));
		goto out;
	}

	signal(SIGPIPE, SIG_IGN);
	running = server;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	snap_log("serving containerd's snapshots on %s: volumes of %s%s, %s, %s each, %s",
	         socket_path, c->admin ? "tenant " : "", c->admin ? c->tenant : "this tenant",
	         snap_fs_name(cfg.fs), a->size != NULL ? a->size : "10G", c->socket_path);
	/* What a killed predecessor left: no Prepare of this process runs yet. */
	if (snap_cleanup(s, &st) != SNAP_OK)
		snap_log("%s, ignoring", st.message);
	r = grpc_server_run(server);
	running = NULL;
	if (r < 0)
		error_line(r, "snapshotter", "%s", strerror(-r));
	else
		snap_log("stopped; attached devices stay attached");
out:
	grpc_server_free(server);
	snapshots_close(s);
	return r;
}
