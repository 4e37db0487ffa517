/* client/snapshotter/grpc.c, the gRPC server, on a real unix socket. The server runs a
 * test method table of containerd's Snapshots service (below: echoes, a stream, errors, a
 * handler that waits to be released, one that waits to be cancelled); the test is the
 * client, an nghttp2 client session of its own, so that it can also send what no gRPC
 * client would (compressed flags, cut messages, wrong types, resets at the wrong time).
 * Last, containerd's own proxy client (grpc-proxy-client.go, grpc-go) talks to it. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "tp-cleanup.h"
#include "../../client/snapshotter/grpc.h"
#include "containerd/services/snapshots/v1/snapshots.pb-c.h"
#include "google/protobuf/empty.pb-c.h"

/* The hang these tests catch: nothing answered for this long. */
#define HANG_MS 60000
#define SERVICE "/containerd.services.snapshots.v1.Snapshots/"
/* The fixture's limits: small, so that they are cheap to reach. */
#define MAX_CONNECTIONS 4
#define MAX_STREAMS     16
#define MAX_CALLS       8
#define MAX_MESSAGE     (1u << 20)

typedef Containerd__Services__Snapshots__V1__StatSnapshotRequest StatRequest;
typedef Containerd__Services__Snapshots__V1__StatSnapshotResponse StatResponse;
typedef Containerd__Services__Snapshots__V1__ListSnapshotsRequest ListRequest;
typedef Containerd__Services__Snapshots__V1__ListSnapshotsResponse ListResponse;
typedef Containerd__Services__Snapshots__V1__PrepareSnapshotRequest PrepareRequest;
typedef Containerd__Services__Snapshots__V1__PrepareSnapshotResponse PrepareResponse;
typedef Containerd__Services__Snapshots__V1__PrepareSnapshotRequest__LabelsEntry PrepareLabel;
typedef Containerd__Services__Snapshots__V1__RemoveSnapshotRequest RemoveRequest;
typedef Containerd__Services__Snapshots__V1__UsageRequest UsageRequest;
typedef Containerd__Services__Snapshots__V1__UsageResponse UsageResponse;
typedef Containerd__Services__Snapshots__V1__MountsRequest MountsRequest;
typedef Containerd__Services__Snapshots__V1__MountsResponse MountsResponse;
typedef Containerd__Services__Snapshots__V1__CommitSnapshotRequest CommitRequest;
typedef Containerd__Services__Snapshots__V1__CleanupRequest CleanupRequest;
typedef Containerd__Services__Snapshots__V1__Info Info;
typedef Containerd__Services__Snapshots__V1__Info__LabelsEntry InfoLabel;
typedef Containerd__Types__Mount Mount;
typedef Google__Protobuf__Empty Empty;
typedef Google__Protobuf__Timestamp Timestamp;

/* What the handlers saw, for the tests to wait on. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static unsigned slow_started, hang_started, cancels_seen, list_cancelled;
static bool released;
static int second_reply = 1; /* what a unary handler's second grpc_call_send returned */
static char userdata[] = "the server's userdata";

/* Wait until *COUNTER reaches N; false after HANG_MS. */
static bool wait_count(unsigned *counter, unsigned n)
{
	struct timespec until;
	bool reached;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += HANG_MS / 1000;
	pthread_mutex_lock(&lock);
	while (*counter < n)
		if (pthread_cond_timedwait(&cond, &lock, &until) == ETIMEDOUT)
			break;
	reached = *counter >= n;
	pthread_mutex_unlock(&lock);
	return reached;
}

static void count(unsigned *counter)
{
	pthread_mutex_lock(&lock);
	(*counter)++;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
}

static void release_slow(void)
{
	pthread_mutex_lock(&lock);
	released = true;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
}

/* Stat: KEY's info, with times and the containerd-namespace metadata as a label;
 * "missing" is NOT_FOUND with a message that needs percent-encoding. */
static enum grpc_status stat_handler(struct grpc_call *call, const ProtobufCMessage *request)
{
	const StatRequest *req = (const StatRequest *)request;
	const char *ns = grpc_call_metadata(call, "containerd-namespace");
	StatResponse resp = CONTAINERD__SERVICES__SNAPSHOTS__V1__STAT_SNAPSHOT_RESPONSE__INIT;
	Info info = CONTAINERD__SERVICES__SNAPSHOTS__V1__INFO__INIT;
	InfoLabel label = CONTAINERD__SERVICES__SNAPSHOTS__V1__INFO__LABELS_ENTRY__INIT;
	InfoLabel *labels[] = {&label};
	Timestamp created = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	Timestamp updated = GOOGLE__PROTOBUF__TIMESTAMP__INIT;

	if (grpc_call_userdata(call) != userdata)
		return grpc_call_fail(call, GRPC_INTERNAL, "wrong userdata");
	if (strcmp(req->key, "missing") == 0)
		return grpc_call_fail(call, GRPC_NOT_FOUND,
		                      "no snapshot \"%s\" (100%% sure, \xc3\xbc)", req->key);
	created.seconds = 1700000000;
	created.nanos = 5;
	updated.seconds = 1700000001;
	label.key = "namespace";
	label.value = (char *)(ns != NULL ? ns : "");
	info.name = req->key;
	info.parent = "base";
	info.kind = CONTAINERD__SERVICES__SNAPSHOTS__V1__KIND__ACTIVE;
	info.created_at = &created;
	info.updated_at = &updated;
	info.n_labels = 1;
	info.labels = labels;
	resp.info = &info;
	return grpc_call_send(call, &resp.base) == 0 ? GRPC_OK : GRPC_INTERNAL;
}

/* List: filters "count=N" and "size=N": N replies of one info each, "snap-00000" on,
 * each with a label of SIZE bytes. */
static enum grpc_status list_handler(struct grpc_call *call, const ProtobufCMessage *request)
{
	const ListRequest *req = (const ListRequest *)request;
	unsigned long n = 0, size = 0;
	CLEANUP_FREE char *value = NULL;
	char name[32];

	for (size_t i = 0; i < req->n_filters; i++) {
		sscanf(req->filters[i], "count=%lu", &n);
		sscanf(req->filters[i], "size=%lu", &size);
	}
	value = calloc(1, size + 1);
	if (value == NULL)
		return GRPC_RESOURCE_EXHAUSTED;
	memset(value, 'x', size);
	for (unsigned long i = 0; i < n; i++) {
		ListResponse resp =
		    CONTAINERD__SERVICES__SNAPSHOTS__V1__LIST_SNAPSHOTS_RESPONSE__INIT;
		Info info = CONTAINERD__SERVICES__SNAPSHOTS__V1__INFO__INIT;
		InfoLabel label = CONTAINERD__SERVICES__SNAPSHOTS__V1__INFO__LABELS_ENTRY__INIT;
		InfoLabel *labels[] = {&label};
		Info *infos[] = {&info};
		int r;

		snprintf(name, sizeof name, "snap-%05lu", i);
		info.name = name;
		info.kind = CONTAINERD__SERVICES__SNAPSHOTS__V1__KIND__COMMITTED;
		if (size > 0) {
			label.key = "pad";
			label.value = value;
			info.n_labels = 1;
			info.labels = labels;
		}
		resp.n_info = 1;
		resp.info = infos;
		r = grpc_call_send(call, &resp.base);
		if (r == -ECANCELED) {
			count(&list_cancelled);
			return GRPC_CANCELLED;
		}
		if (r < 0)
			return grpc_call_fail(call, GRPC_INTERNAL, "send: %s", strerror(-r));
	}
	return GRPC_OK;
}

/* Prepare: one mount naming how many labels came; "slow" waits for release_slow,
 * "sleep" sleeps 2 s. */
static enum grpc_status prepare_handler(struct grpc_call *call, const ProtobufCMessage *request)
{
	const PrepareRequest *req = (const PrepareRequest *)request;
	PrepareResponse resp = CONTAINERD__SERVICES__SNAPSHOTS__V1__PREPARE_SNAPSHOT_RESPONSE__INIT;
	Mount mount = CONTAINERD__TYPES__MOUNT__INIT;
	Mount *mounts[] = {&mount};
	char labels[32], *options[] = {"rw", labels};

	if (strcmp(req->key, "slow") == 0) {
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += HANG_MS / 1000;
		pthread_mutex_lock(&lock);
		slow_started++;
		pthread_cond_broadcast(&cond);
		while (!released)
			if (pthread_cond_timedwait(&cond, &lock, &until) == ETIMEDOUT)
				break;
		pthread_mutex_unlock(&lock);
	} else if (strcmp(req->key, "sleep") == 0) {
		sleep(2);
	}
	snprintf(labels, sizeof labels, "labels=%zu", req->n_labels);
	mount.type = "ext4";
	mount.source = "/dev/nbd7";
	mount.n_options = 2;
	mount.options = options;
	resp.n_mounts = 1;
	resp.mounts = mounts;
	return grpc_call_send(call, &resp.base) == 0 ? GRPC_OK : GRPC_INTERNAL;
}

/* Remove: an Empty reply; "hang" waits until its call is cancelled, then checks that a
 * reply is refused. */
static enum grpc_status remove_handler(struct grpc_call *call, const ProtobufCMessage *request)
{
	const RemoveRequest *req = (const RemoveRequest *)request;
	Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;

	if (strcmp(req->key, "hang") == 0) {
		count(&hang_started);
		for (int i = 0; i < HANG_MS / 10 && !grpc_call_cancelled(call); i++)
			usleep(10000);
		if (grpc_call_cancelled(call) && grpc_call_send(call, &empty.base) == -ECANCELED)
			count(&cancels_seen);
		return GRPC_CANCELLED;
	}
	return grpc_call_send(call, &empty.base) == 0 ? GRPC_OK : GRPC_INTERNAL;
}

/* Usage: sizes that need 64-bit varints; "none" forgets to reply. */
static enum grpc_status usage_handler(struct grpc_call *call, const ProtobufCMessage *request)
{
	const UsageRequest *req = (const UsageRequest *)request;
	UsageResponse resp = CONTAINERD__SERVICES__SNAPSHOTS__V1__USAGE_RESPONSE__INIT;

	if (strcmp(req->key, "none") == 0)
		return GRPC_OK;
	resp.size = INT64_C(1) << 40;
	resp.inodes = 7;
	return grpc_call_send(call, &resp.base) == 0 ? GRPC_OK : GRPC_INTERNAL;
}

/* Mounts: tries to reply twice to a unary call. */
static enum grpc_status mounts_handler(struct grpc_call *call, const ProtobufCMessage *request)
{
	MountsResponse resp = CONTAINERD__SERVICES__SNAPSHOTS__V1__MOUNTS_RESPONSE__INIT;
	int r;

	(void)request;
	if (grpc_call_send(call, &resp.base) != 0)
		return GRPC_INTERNAL;
	r = grpc_call_send(call, &resp.base);
	pthread_mutex_lock(&lock);
	second_reply = r;
	pthread_mutex_unlock(&lock);
	return GRPC_OK;
}

/* Commit: "exists" is ALREADY_EXISTS, as containerd's unpacker expects. */
static enum grpc_status commit_handler(struct grpc_call *call, const ProtobufCMessage *request)
{
	const CommitRequest *req = (const CommitRequest *)request;
	Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;

	if (strcmp(req->name, "exists") == 0)
		return grpc_call_fail(call, GRPC_ALREADY_EXISTS, "snapshot %s: already exists",
		                      req->name);
	return grpc_call_send(call, &empty.base) == 0 ? GRPC_OK : GRPC_INTERNAL;
}

static enum grpc_status cleanup_handler(struct grpc_call *call, const ProtobufCMessage *request)
{
	Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;

	(void)request;
	return grpc_call_send(call, &empty.base) == 0 ? GRPC_OK : GRPC_INTERNAL;
}

/* View and Update are left out: they are unknown methods to this server. */
static const struct grpc_method methods[] = {
    {.path = SERVICE "Stat",
     .request = &containerd__services__snapshots__v1__stat_snapshot_request__descriptor,
     .handler = stat_handler},
    {.path = SERVICE "List",
     .request = &containerd__services__snapshots__v1__list_snapshots_request__descriptor,
     .streaming = true,
     .handler = list_handler},
    {.path = SERVICE "Prepare",
     .request = &containerd__services__snapshots__v1__prepare_snapshot_request__descriptor,
     .handler = prepare_handler},
    {.path = SERVICE "Remove",
     .request = &containerd__services__snapshots__v1__remove_snapshot_request__descriptor,
     .handler = remove_handler},
    {.path = SERVICE "Usage",
     .request = &containerd__services__snapshots__v1__usage_request__descriptor,
     .handler = usage_handler},
    {.path = SERVICE "Mounts",
     .request = &containerd__services__snapshots__v1__mounts_request__descriptor,
     .handler = mounts_handler},
    {.path = SERVICE "Commit",
     .request = &containerd__services__snapshots__v1__commit_snapshot_request__descriptor,
     .handler = commit_handler},
    {.path = SERVICE "Cleanup",
     .request = &containerd__services__snapshots__v1__cleanup_request__descriptor,
     .handler = cleanup_handler},
};

static char dir[64];
static char sock_path[PATH_MAX];
static struct grpc_server *server;
static pthread_t server_thread;
static int server_result = 1;

static void *serve(void *arg)
{
	(void)arg;
	server_result = grpc_server_run(server);
	return NULL;
}

static void setup(void)
{
	struct grpc_limits limits = {
	    .max_connections = MAX_CONNECTIONS,
	    .max_streams = MAX_STREAMS,
	    .max_calls = MAX_CALLS,
	    .max_message = MAX_MESSAGE,
	};

	slow_started = hang_started = cancels_seen = list_cancelled = 0;
	released = false;
	second_reply = 1;
	snprintf(dir, sizeof dir, "/tmp/test-grpc.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(sock_path, sizeof sock_path, "%s/grpc.sock", dir);
	ck_assert_int_eq(grpc_server_new(methods, ARRAY_SIZE(methods), &limits, userdata, &server),
	                 0);
	ck_assert_int_eq(grpc_server_listen(server, sock_path, 0600), 0);
	ck_assert_int_eq(pthread_create(&server_thread, NULL, serve, NULL), 0);
}

static void teardown(void)
{
	release_slow();
	grpc_server_stop(server);
	pthread_join(server_thread, NULL);
	ck_assert_int_eq(server_result, 0);
	grpc_server_free(server);
	ck_assert_int_eq(access(sock_path, F_OK), -1); /* the socket file went with it */
	rmdir(dir);
}

/* The client: one nghttp2 client session on one connection, and what came back on each
 * of its streams. */
#define MAX_REPLIES 64

struct reply {
	int32_t stream_id;
	/* The request's body, as raw bytes; HOLD keeps the stream open after them. */
	uint8_t *body;
	size_t body_len, body_off;
	bool hold;
	/* The answer. */
	int http_status;
	int grpc_status; /* -1 until seen */
	char grpc_message[4096];
	char content_type[64];
	unsigned header_blocks;
	uint8_t *data;
	size_t len;
	bool closed;
	uint32_t error_code; /* of the stream's closing: a reset's code, or 0 */
};

struct client {
	int fd;
	nghttp2_session *session;
	struct reply replies[MAX_REPLIES];
	size_t n_replies;
	bool eof;
};

static struct reply *find_reply(struct client *c, int32_t stream_id)
{
	for (size_t i = 0; i < c->n_replies; i++)
		if (c->replies[i].stream_id == stream_id)
			return &c->replies[i];
	return NULL;
}

static ssize_t client_send(nghttp2_session *session, const uint8_t *data, size_t length, int flags,
                           void *user_data)
{
	struct client *c = user_data;
	ssize_t n;

	(void)session;
	(void)flags;
	n = send(c->fd, data, length, MSG_NOSIGNAL);
	return n < 0 ? NGHTTP2_ERR_CALLBACK_FAILURE : n;
}

static int client_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                         size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                         void *user_data)
{
	struct reply *r = find_reply(user_data, frame->hd.stream_id);

	(void)session;
	(void)flags;
	(void)namelen;
	if (r == NULL)
		return 0;
	if (strcmp((const char *)name, ":status") == 0)
		r->http_status = atoi((const char *)value);
	else if (strcmp((const char *)name, "content-type") == 0)
		snprintf(r->content_type, sizeof r->content_type, "%s", value);
	else if (strcmp((const char *)name, "grpc-status") == 0)
		r->grpc_status = atoi((const char *)value);
	else if (strcmp((const char *)name, "grpc-message") == 0)
		snprintf(r->grpc_message, sizeof r->grpc_message, "%.*s", (int)valuelen, value);
	return 0;
}

static int client_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct reply *r = find_reply(user_data, frame->hd.stream_id);

	(void)session;
	if (r != NULL && frame->hd.type == NGHTTP2_HEADERS)
		r->header_blocks++;
	return 0;
}

static int client_data(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                       const uint8_t *data, size_t len, void *user_data)
{
	struct reply *r = find_reply(user_data, stream_id);

	(void)session;
	(void)flags;
	if (r == NULL)
		return 0;
	r->data = realloc(r->data, r->len + len);
	ck_assert_ptr_nonnull(r->data);
	memcpy(r->data + r->len, data, len);
	r->len += len;
	return 0;
}

static int client_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                               void *user_data)
{
	struct reply *r = find_reply(user_data, stream_id);

	(void)session;
	if (r != NULL) {
		r->closed = true;
		r->error_code = error_code;
	}
	return 0;
}

static ssize_t client_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                           uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
	struct reply *r = source->ptr;
	size_t n = r->body_len - r->body_off < length ? r->body_len - r->body_off : length;

	(void)session;
	(void)stream_id;
	(void)user_data;
	memcpy(buf, r->body + r->body_off, n);
	r->body_off += n;
	if (r->body_off == r->body_len) {
		if (!r->hold)
			*data_flags |= NGHTTP2_DATA_FLAG_EOF;
		else if (n == 0)
			return NGHTTP2_ERR_DEFERRED;
	}
	return (ssize_t)n;
}

static struct sockaddr_un unix_addr(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};

	ck_assert_uint_lt(strlen(path), sizeof addr.sun_path);
	memcpy(addr.sun_path, path, strlen(path) + 1);
	return addr;
}

/* A connection to the server, its preface and SETTINGS sent; NULL if connect fails. */
static struct client *client_new(void)
{
	struct sockaddr_un addr = unix_addr(sock_path);
	nghttp2_session_callbacks *cb;
	struct client *c = calloc(1, sizeof *c);

	ck_assert_ptr_nonnull(c);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(c->fd, 0);
	if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
		close(c->fd);
		free(c);
		return NULL;
	}
	ck_assert_int_eq(nghttp2_session_callbacks_new(&cb), 0);
	nghttp2_session_callbacks_set_send_callback(cb, client_send);
	nghttp2_session_callbacks_set_on_header_callback(cb, client_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, client_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, client_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, client_stream_close);
	ck_assert_int_eq(nghttp2_session_client_new(&c->session, cb, c), 0);
	nghttp2_session_callbacks_del(cb);
	ck_assert_int_eq(nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, NULL, 0), 0);
	/* Sent by the first exchange: a server that closes at once makes that fail. */
	return c;
}

static void client_free(struct client *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->n_replies; i++) {
		free(c->replies[i].body);
		free(c->replies[i].data);
	}
	nghttp2_session_del(c->session);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

/* Exchange frames until DONE(c, arg) or for LIMIT_MS; false on the time limit or the
 * connection's end (then c->eof). */
static bool client_exchange(struct client *c, bool (*done)(struct client *c, void *arg), void *arg,
                            long limit_ms)
{
	struct timespec start, now;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
		uint8_t buf[16384];
		long ms;
		ssize_t n;

		if (nghttp2_session_send(c->session) != 0) {
			c->eof = true;
			return false;
		}
		if (done != NULL && done(c, arg))
			return true;
		clock_gettime(CLOCK_MONOTONIC, &now);
		ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
		if (ms >= limit_ms || poll(&pfd, 1, (int)(limit_ms - ms)) <= 0)
			return false;
		n = recv(c->fd, buf, sizeof buf, 0);
		if (n <= 0) {
			c->eof = true;
			return false;
		}
		ck_assert_int_ge(nghttp2_session_mem_recv(c->session, buf, (size_t)n), 0);
	}
}

/* Exchange frames until DONE(c, arg); false after HANG_MS, or at the connection's end. */
static bool client_run(struct client *c, bool (*done)(struct client *c, void *arg), void *arg)
{
	return client_exchange(c, done, arg, HANG_MS);
}

/* Read until the server closes, sending nothing (the client has shut its side); false
 * after HANG_MS. */
static bool client_drain(struct client *c)
{
	for (;;) {
		struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
		uint8_t buf[16384];
		ssize_t n;

		if (poll(&pfd, 1, HANG_MS) <= 0)
			return false;
		n = recv(c->fd, buf, sizeof buf, 0);
		if (n <= 0)
			return n == 0;
		ck_assert_int_ge(nghttp2_session_mem_recv(c->session, buf, (size_t)n), 0);
	}
}

static bool reply_closed(struct client *c, void *arg)
{
	(void)c;
	return ((struct reply *)arg)->closed;
}

static bool replies_closed(struct client *c, void *arg)
{
	(void)arg;
	for (size_t i = 0; i < c->n_replies; i++)
		if (!c->replies[i].closed)
			return false;
	return true;
}

/* Start a call of PATH with BODY (raw bytes, copied) and the header pairs EXTRA (NULL-
 * terminated: name, value, ...), with content-type CONTENT_TYPE. */
static struct reply *client_call_raw(struct client *c, const char *method, const char *path,
                                     const char *content_type, const void *body, size_t len,
                                     bool hold, const char *const *extra)
{
	nghttp2_nv nva[16];
	size_t n = 0;
	struct reply *r;
	nghttp2_data_provider provider = {.read_callback = client_body};

#define ADD(name, value)                                                             \
	nva[n++] = (nghttp2_nv){(uint8_t *)(name), (uint8_t *)(value), strlen(name), \
	                        strlen(value), NGHTTP2_NV_FLAG_NONE}
	ADD(":method", method);
	ADD(":scheme", "http");
	ADD(":path", path);
	ADD(":authority", "localhost");
	if (content_type != NULL)
		ADD("content-type", content_type);
	ADD("te", "trailers");
	for (size_t i = 0; extra != NULL && extra[i] != NULL; i += 2)
		ADD(extra[i], extra[i + 1]);
#undef ADD
	ck_assert_uint_lt(c->n_replies, MAX_REPLIES);
	r = &c->replies[c->n_replies++];
	memset(r, 0, sizeof *r);
	r->grpc_status = -1;
	r->hold = hold;
	r->body = malloc(len ? len : 1);
	ck_assert_ptr_nonnull(r->body);
	if (len > 0)
		memcpy(r->body, body, len);
	r->body_len = len;
	provider.source.ptr = r;
	r->stream_id = nghttp2_submit_request(c->session, NULL, nva, n,
	                                      strcmp(method, "POST") == 0 ? &provider : NULL, r);
	ck_assert_int_gt(r->stream_id, 0);
	return r;
}

/* MSG with its 5-byte prefix, as a gRPC client sends it. */
static uint8_t *frame_message(const ProtobufCMessage *msg, size_t *ret_len)
{
	size_t len = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = malloc(5 + len);

	ck_assert_ptr_nonnull(buf);
	buf[0] = 0;
	buf[1] = (uint8_t)(len >> 24);
	buf[2] = (uint8_t)(len >> 16);
	buf[3] = (uint8_t)(len >> 8);
	buf[4] = (uint8_t)len;
	protobuf_c_message_pack(msg, buf + 5);
	*ret_len = 5 + len;
	return buf;
}

/* A well-formed call of METHOD (a name in SERVICE) with MSG. */
static struct reply *client_call(struct client *c, const char *method, const ProtobufCMessage *msg,
                                 const char *const *extra)
{
	char path[128];
	size_t len;
	CLEANUP_FREE uint8_t *body = frame_message(msg, &len);

	snprintf(path, sizeof path, SERVICE "%s", method);
	return client_call_raw(c, "POST", path, "application/grpc", body, len, false, extra);
}

static void wait_reply(struct client *c, struct reply *r)
{
	ck_assert_msg(client_run(c, reply_closed, r), "no answer on stream %d within %d ms",
	              r->stream_id, HANG_MS);
}

/* The reply messages in R's data, each checked to be uncompressed and whole: their
 * count, and message I decoded as DESC (freed by the caller), if I < count. */
static size_t reply_messages(const struct reply *r, size_t index,
                             const ProtobufCMessageDescriptor *desc, ProtobufCMessage **ret_msg)
{
	size_t n = 0, off = 0;

	while (off < r->len) {
		size_t len;

		ck_assert_uint_ge(r->len - off, 5);
		ck_assert_uint_eq(r->data[off], 0);
		len = (size_t)r->data[off + 1] << 24 | (size_t)r->data[off + 2] << 16 |
		      (size_t)r->data[off + 3] << 8 | r->data[off + 4];
		ck_assert_uint_le(len, r->len - off - 5);
		if (n == index && ret_msg != NULL) {
			*ret_msg = protobuf_c_message_unpack(desc, NULL, len, r->data + off + 5);
			ck_assert_ptr_nonnull(*ret_msg);
		}
		off += 5 + len;
		n++;
	}
	return n;
}

static void assert_status(const struct reply *r, int status)
{
	ck_assert_msg(r->closed, "stream %d not closed", r->stream_id);
	ck_assert_int_eq(r->http_status, 200);
	ck_assert_str_eq(r->content_type, "application/grpc");
	ck_assert_msg(r->grpc_status == status, "grpc-status %d (%s), expected %d", r->grpc_status,
	              r->grpc_message, status);
}

static struct reply *stat_call(struct client *c, const char *key)
{
	StatRequest req = CONTAINERD__SERVICES__SNAPSHOTS__V1__STAT_SNAPSHOT_REQUEST__INIT;
	static const char *const ns[] = {"containerd-namespace", "ns1", NULL};

	req.snapshotter = "thinproxy";
	req.key = (char *)key;
	return client_call(c, "Stat", &req.base, ns);
}

static void assert_stat_reply(const struct reply *r, const char *key)
{
	StatResponse *resp = NULL;

	assert_status(r, GRPC_OK);
	ck_assert_uint_eq(
	    reply_messages(r, 0,
	                   &containerd__services__snapshots__v1__stat_snapshot_response__descriptor,
	                   (ProtobufCMessage **)&resp),
	    1);
	ck_assert_str_eq(resp->info->name, key);
	ck_assert_str_eq(resp->info->parent, "base");
	ck_assert_int_eq(resp->info->kind, CONTAINERD__SERVICES__SNAPSHOTS__V1__KIND__ACTIVE);
	ck_assert_int_eq(resp->info->created_at->seconds, 1700000000);
	ck_assert_int_eq(resp->info->created_at->nanos, 5);
	ck_assert_uint_eq(resp->info->n_labels, 1);
	ck_assert_str_eq(resp->info->labels[0]->value, "ns1");
	protobuf_c_message_free_unpacked(&resp->base, NULL);
}

/* C answers a Stat on the connection it is. */
static void assert_still_serves(struct client *c)
{
	struct reply *r = stat_call(c, "after");

	wait_reply(c, r);
	assert_stat_reply(r, "after");
}

static struct reply *call_key(struct client *c, const char *method, const char *key)
{
	RemoveRequest req = CONTAINERD__SERVICES__SNAPSHOTS__V1__REMOVE_SNAPSHOT_REQUEST__INIT;
	PrepareRequest prep = CONTAINERD__SERVICES__SNAPSHOTS__V1__PREPARE_SNAPSHOT_REQUEST__INIT;

	/* Remove, Usage, Mounts and Commit's field 2 are all a string: key or name. */
	if (strcmp(method, "Prepare") == 0) {
		prep.key = (char *)key;
		return client_call(c, method, &prep.base, NULL);
	}
	req.key = (char *)key;
	return client_call(c, method, &req.base, NULL);
}

START_TEST(names_the_methods_of_containerds_snapshot_service_by_its_paths)
{
	const ProtobufCServiceDescriptor *service =
	    &containerd__services__snapshots__v1__snapshots__descriptor;

	/* The wire's paths are the service's full name and its methods' names. */
	ck_assert_str_eq(service->name, "containerd.services.snapshots.v1.Snapshots");
	ck_assert_uint_eq(service->n_methods, 10);
	for (size_t i = 0; i < ARRAY_SIZE(methods); i++) {
		const char *name = methods[i].path + strlen(SERVICE);
		const ProtobufCMethodDescriptor *m =
		    protobuf_c_service_descriptor_get_method_by_name(service, name);

		ck_assert_ptr_nonnull(m);
		ck_assert_ptr_eq(m->input, methods[i].request);
	}
}
END_TEST

START_TEST(answers_a_unary_call_with_its_reply_and_status_ok)
{
	struct client *c = client_new();
	struct reply *r = stat_call(c, "alpha");

	wait_reply(c, r);
	assert_stat_reply(r, "alpha");
	ck_assert_uint_eq(r->header_blocks, 2); /* headers, then trailers */
	ck_assert_str_eq(r->grpc_message, "");
	client_free(c);
}
END_TEST

START_TEST(streams_thousands_of_list_replies_in_order)
{
	ListRequest req = CONTAINERD__SERVICES__SNAPSHOTS__V1__LIST_SNAPSHOTS_REQUEST__INIT;
	char *filters[] = {"count=3000"};
	struct client *c = client_new();
	struct reply *r;
	size_t n;

	req.n_filters = 1;
	req.filters = filters;
	r = client_call(c, "List", &req.base, NULL);
	wait_reply(c, r);
	assert_status(r, GRPC_OK);
	n = reply_messages(r, SIZE_MAX, NULL, NULL);
	ck_assert_uint_eq(n, 3000);
	for (size_t i = 0; i < n; i += 499) {
		ListResponse *resp;
		char name[32];

		reply_messages(
		    r, i, &containerd__services__snapshots__v1__list_snapshots_response__descriptor,
		    (ProtobufCMessage **)&resp);
		snprintf(name, sizeof name, "snap-%05zu", i);
		ck_assert_uint_eq(resp->n_info, 1);
		ck_assert_str_eq(resp->info[0]->name, name);
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	}
	client_free(c);
}
END_TEST

START_TEST(streams_more_than_a_slow_reader_takes_in_without_losing_any)
{
	ListRequest req = CONTAINERD__SERVICES__SNAPSHOTS__V1__LIST_SNAPSHOTS_REQUEST__INIT;
	char *filters[] = {"count=96", "size=65536"};
	struct client *c = client_new();
	struct reply *r;

	req.n_filters = 2;
	req.filters = filters;
	r = client_call(c, "List", &req.base, NULL);
	ck_assert_int_eq(nghttp2_session_send(c->session), 0);
	/* 6 MiB of replies: the handler fills its 1 MiB and waits while nothing is read. */
	usleep(300000);
	wait_reply(c, r);
	assert_status(r, GRPC_OK);
	ck_assert_uint_eq(reply_messages(r, SIZE_MAX, NULL, NULL), 96);
	client_free(c);
}
END_TEST

START_TEST(answers_a_failing_handler_with_its_status_and_percent_encoded_message)
{
	struct client *c = client_new();
	struct reply *r = stat_call(c, "missing");
	struct reply *exists;
	CommitRequest commit = CONTAINERD__SERVICES__SNAPSHOTS__V1__COMMIT_SNAPSHOT_REQUEST__INIT;

	wait_reply(c, r);
	assert_status(r, GRPC_NOT_FOUND);
	ck_assert_str_eq(r->grpc_message, "no snapshot \"missing\" (100%25 sure, %C3%BC)");
	/* No message: one HEADERS frame with the status ("Trailers-Only"). */
	ck_assert_uint_eq(r->len, 0);
	ck_assert_uint_eq(r->header_blocks, 1);

	commit.name = "exists";
	commit.key = "k";
	exists = client_call(c, "Commit", &commit.base, NULL);
	wait_reply(c, exists);
	assert_status(exists, GRPC_ALREADY_EXISTS);
	ck_assert_str_eq(exists->grpc_message, "snapshot exists: already exists");
	client_free(c);
}
END_TEST

START_TEST(answers_an_unknown_method_with_unimplemented)
{
	StatRequest req = CONTAINERD__SERVICES__SNAPSHOTS__V1__STAT_SNAPSHOT_REQUEST__INIT;
	struct client *c = client_new();
	struct reply *view = client_call(c, "View", &req.base, NULL);
	struct reply *other =
	    client_call_raw(c, "POST", "/x.Y/Z", "application/grpc", "", 0, false, NULL);

	ck_assert(client_run(c, replies_closed, NULL));
	assert_status(view, GRPC_UNIMPLEMENTED);
	ck_assert_str_eq(view->grpc_message, "unknown method " SERVICE "View");
	assert_status(other, GRPC_UNIMPLEMENTED);
	client_free(c);
}
END_TEST

START_TEST(refuses_compressed_messages)
{
	static const uint8_t compressed[] = {1, 0, 0, 0, 2, 0x12, 0};
	static const char *const gzip[] = {"grpc-encoding", "gzip", NULL};
	struct client *c = client_new();
	struct reply *plain = client_call_raw(c, "POST", SERVICE "Stat", "application/grpc",
	                                      compressed, sizeof compressed, false, NULL);
	struct reply *encoded = client_call_raw(c, "POST", SERVICE "Stat", "application/grpc",
	                                        compressed, sizeof compressed, false, gzip);

	ck_assert(client_run(c, replies_closed, NULL));
	/* A compressed flag without an encoding is a broken client; with one, unsupported. */
	assert_status(plain, GRPC_INTERNAL);
	assert_status(encoded, GRPC_UNIMPLEMENTED);
	client_free(c);
}
END_TEST

START_TEST(refuses_cut_missing_and_trailing_request_bytes)
{
	static const uint8_t cut[] = {0, 0, 0, 0, 10, 0x12, 1, 'k'};
	static const uint8_t short_prefix[] = {0, 0, 0};
	static const uint8_t trailing[] = {0, 0, 0, 0, 3, 0x12, 1, 'k', 0};
	struct client *c = client_new();
	struct reply *r[] = {
	    client_call_raw(c, "POST", SERVICE "Stat", "application/grpc", cut, sizeof cut, false,
	                    NULL),
	    client_call_raw(c, "POST", SERVICE "Stat", "application/grpc", short_prefix,
	                    sizeof short_prefix, false, NULL),
	    client_call_raw(c, "POST", SERVICE "Stat", "application/grpc", "", 0, false, NULL),
	    client_call_raw(c, "POST", SERVICE "Stat", "application/grpc", trailing,
	                    sizeof trailing, false, NULL),
	};

	ck_assert(client_run(c, replies_closed, NULL));
	for (size_t i = 0; i < ARRAY_SIZE(r); i++)
		assert_status(r[i], GRPC_INTERNAL);
	ck_assert_str_eq(r[0]->grpc_message, "truncated request message: 3 of 10 bytes");
	ck_assert_str_eq(r[2]->grpc_message, "no request message");
	ck_assert_str_eq(r[3]->grpc_message, "more than one request message");
	/* The connection serves on. */
	assert_still_serves(c);
	client_free(c);
}
END_TEST

START_TEST(refuses_a_request_that_does_not_decode)
{
	/* Field 2 (key) as a length-delimited string longer than the message. */
	static const uint8_t garbage[] = {0, 0, 0, 0, 4, 0x12, 0x7f, 'a', 'b'};
	static const uint8_t wrong_wire_type[] = {0, 0, 0, 0, 2, 0x10, 0x01};
	struct client *c = client_new();
	struct reply *a = client_call_raw(c, "POST", SERVICE "Stat", "application/grpc", garbage,
	                                  sizeof garbage, false, NULL);
	struct reply *b = client_call_raw(c, "POST", SERVICE "Stat", "application/grpc",
	                                  wrong_wire_type, sizeof wrong_wire_type, false, NULL);

	ck_assert(client_run(c, replies_closed, NULL));
	assert_status(a, GRPC_INTERNAL);
	ck_assert_str_eq(a->grpc_message, "the request message does not decode as "
	                                  "containerd.services.snapshots.v1.StatSnapshotRequest");
	assert_status(b, GRPC_INTERNAL);
	client_free(c);
}
END_TEST

START_TEST(takes_a_request_of_the_largest_size_and_refuses_one_byte_more)
{
	CleanupRequest req = CONTAINERD__SERVICES__SNAPSHOTS__V1__CLEANUP_REQUEST__INIT;
	/* 1 tag byte and 3 length bytes: the message is exactly MAX_MESSAGE bytes. */
	CLEANUP_FREE char *name = malloc(MAX_MESSAGE - 4 + 2);
	struct client *c = client_new();
	struct reply *fits, *over;

	ck_assert_ptr_nonnull(name);
	memset(name, 'n', MAX_MESSAGE - 4 + 1);
	name[MAX_MESSAGE - 4] = '\0';
	req.snapshotter = name;
	ck_assert_uint_eq(protobuf_c_message_get_packed_size(&req.base), MAX_MESSAGE);
	fits = client_call(c, "Cleanup", &req.base, NULL);
	wait_reply(c, fits);
	assert_status(fits, GRPC_OK);

	name[MAX_MESSAGE - 4] = 'n';
	name[MAX_MESSAGE - 3] = '\0';
	over = client_call(c, "Cleanup", &req.base, NULL);
	wait_reply(c, over);
	assert_status(over, GRPC_RESOURCE_EXHAUSTED);
	client_free(c);
}
END_TEST

START_TEST(refuses_an_oversized_request_from_its_prefix_before_it_arrives)
{
	static const uint8_t prefix[] = {0, 0x7f, 0xff, 0xff, 0xff};
	struct client *c = client_new();
	/* Only the prefix is sent, and the stream stays open: the server answers and then
	 * resets it (NO_ERROR), which stops the client from sending the rest. */
	struct reply *r = client_call_raw(c, "POST", SERVICE "Stat", "application/grpc", prefix,
	                                  sizeof prefix, true, NULL);

	wait_reply(c, r);
	assert_status(r, GRPC_RESOURCE_EXHAUSTED);
	ck_assert_str_eq(r->grpc_message, "request message of 2147483647 bytes, more than 1048576");
	ck_assert_uint_eq(r->error_code, NGHTTP2_NO_ERROR);
	assert_still_serves(c);
	client_free(c);
}
END_TEST

START_TEST(bounds_what_decoding_a_request_may_allocate)
{
	/* 400000 empty labels, 2 bytes each on the wire, some 60 bytes each decoded. */
	size_t n = 400000, len = 5 + 2 * n;
	CLEANUP_FREE uint8_t *body = malloc(len);
	struct client *c = client_new();
	struct reply *r;

	ck_assert_ptr_nonnull(body);
	body[0] = 0;
	body[1] = (uint8_t)((len - 5) >> 24);
	body[2] = (uint8_t)((len - 5) >> 16);
	body[3] = (uint8_t)((len - 5) >> 8);
	body[4] = (uint8_t)(len - 5);
	for (size_t i = 0; i < n; i++) {
		body[5 + 2 * i] = 0x22; /* field 4 (labels), length-delimited */
		body[5 + 2 * i + 1] = 0;
	}
	r = client_call_raw(c, "POST", SERVICE "Prepare", "application/grpc", body, len, false,
	                    NULL);
	wait_reply(c, r);
	assert_status(r, GRPC_RESOURCE_EXHAUSTED);
	client_free(c);
}
END_TEST

START_TEST(refuses_what_is_no_grpc_request_with_its_http_status)
{
	StatRequest req = CONTAINERD__SERVICES__SNAPSHOTS__V1__STAT_SNAPSHOT_REQUEST__INIT;
	size_t len;
	CLEANUP_FREE uint8_t *body = frame_message(&req.base, &len);
	struct client *c = client_new();
	struct reply *json =
	    client_call_raw(c, "POST", SERVICE "Stat", "application/json", body, len, false, NULL);
	struct reply *none =
	    client_call_raw(c, "POST", SERVICE "Stat", NULL, body, len, false, NULL);
	struct reply *get =
	    client_call_raw(c, "GET", SERVICE "Stat", "application/grpc", NULL, 0, false, NULL);
	struct reply *plus = client_call_raw(c, "POST", SERVICE "Stat", "application/grpc+proto",
	                                     body, len, false, NULL);

	ck_assert(client_run(c, replies_closed, NULL));
	ck_assert_int_eq(json->http_status, 415);
	ck_assert_int_eq(none->http_status, 415);
	ck_assert_int_eq(get->http_status, 405);
	assert_status(plus, GRPC_OK);
	client_free(c);
}
END_TEST

START_TEST(parses_grpc_timeout_and_refuses_a_malformed_one)
{
	static const char *const bad[] = {"grpc-timeout", "12x", NULL};
	static const char *const huge[] = {"grpc-timeout", "123456789S", NULL};
	static const char *const good[] = {"grpc-timeout", "30S", NULL};
	StatRequest req = CONTAINERD__SERVICES__SNAPSHOTS__V1__STAT_SNAPSHOT_REQUEST__INIT;
	struct client *c = client_new();
	struct reply *r[3];

	req.key = "t";
	r[0] = client_call(c, "Stat", &req.base, bad);
	r[1] = client_call(c, "Stat", &req.base, huge);
	r[2] = client_call(c, "Stat", &req.base, good);
	ck_assert(client_run(c, replies_closed, NULL));
	assert_status(r[0], GRPC_INTERNAL);
	ck_assert_str_eq(r[0]->grpc_message, "malformed grpc-timeout");
	assert_status(r[1], GRPC_INTERNAL);
	assert_status(r[2], GRPC_OK);
	client_free(c);
}
END_TEST

START_TEST(answers_fast_calls_while_a_slow_one_runs_on_the_same_connection)
{
	struct client *c = client_new();
	struct reply *slow = call_key(c, "Prepare", "slow");
	struct reply *fast[MAX_STREAMS - 1]; /* the client has not seen the server's SETTINGS */

	ck_assert_int_eq(nghttp2_session_send(c->session), 0);
	ck_assert(wait_count(&slow_started, 1));
	for (size_t i = 0; i < ARRAY_SIZE(fast); i++)
		fast[i] = stat_call(c, "fast");
	for (size_t i = 0; i < ARRAY_SIZE(fast); i++) {
		wait_reply(c, fast[i]);
		assert_stat_reply(fast[i], "fast");
	}
	ck_assert(!slow->closed);
	release_slow();
	wait_reply(c, slow);
	assert_status(slow, GRPC_OK);
	client_free(c);
}
END_TEST

START_TEST(queues_calls_beyond_the_handler_threads_until_one_is_free)
{
	struct client *c = client_new();
	struct reply *slow[MAX_CALLS], *queued;

	for (size_t i = 0; i < MAX_CALLS; i++)
		slow[i] = call_key(c, "Prepare", "slow");
	ck_assert_int_eq(nghttp2_session_send(c->session), 0);
	ck_assert(wait_count(&slow_started, MAX_CALLS));
	queued = stat_call(c, "queued");
	client_exchange(c, NULL, NULL, 300);
	ck_assert(!queued->closed);
	release_slow();
	ck_assert(client_run(c, replies_closed, NULL));
	for (size_t i = 0; i < MAX_CALLS; i++)
		assert_status(slow[i], GRPC_OK);
	assert_stat_reply(queued, "queued");
	client_free(c);
}
END_TEST

START_TEST(refuses_calls_past_max_streams_whose_reset_handlers_still_run)
{
	struct client *c = client_new();
	struct reply *r[MAX_STREAMS], *over;

	/* MAX_CALLS handlers run, MAX_STREAMS - MAX_CALLS calls wait; all are reset. The
	 * waiting ones are forgotten, the running ones still count. */
	for (size_t i = 0; i < MAX_STREAMS; i++)
		r[i] = call_key(c, "Prepare", "slow");
	ck_assert_int_eq(nghttp2_session_send(c->session), 0);
	ck_assert(wait_count(&slow_started, MAX_CALLS));
	for (size_t i = 0; i < MAX_STREAMS; i++)
		nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, r[i]->stream_id,
		                          NGHTTP2_CANCEL);
	ck_assert_int_eq(nghttp2_session_send(c->session), 0);
	for (size_t i = 0; i < MAX_STREAMS - MAX_CALLS; i++)
		r[i] = call_key(c, "Prepare", "slow");
	over = stat_call(c, "over");
	wait_reply(c, over);
	assert_status(over, GRPC_RESOURCE_EXHAUSTED);
	ck_assert_str_eq(over->grpc_message, "too many calls in progress on this connection");
	release_slow();
	for (size_t i = 0; i < MAX_STREAMS - MAX_CALLS; i++) {
		wait_reply(c, r[i]);
		assert_status(r[i], GRPC_OK);
	}
	ck_assert_uint_eq(slow_started, MAX_STREAMS);
	assert_still_serves(c);
	client_free(c);
}
END_TEST

START_TEST(cancels_the_handler_of_a_call_the_client_resets)
{
	struct client *c = client_new();
	struct reply *hang = call_key(c, "Remove", "hang");

	ck_assert_int_eq(nghttp2_session_send(c->session), 0);
	ck_assert(wait_count(&hang_started, 1));
	ck_assert_int_eq(nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, hang->stream_id,
	                                           NGHTTP2_CANCEL),
	                 0);
	ck_assert_int_eq(nghttp2_session_send(c->session), 0);
	/* The handler sees the call cancelled, and its reply refused. */
	ck_assert(wait_count(&cancels_seen, 1));
	assert_still_serves(c);
	client_free(c);
}
END_TEST

START_TEST(stops_a_stream_the_client_resets)
{
	ListRequest req = CONTAINERD__SERVICES__SNAPSHOTS__V1__LIST_SNAPSHOTS_REQUEST__INIT;
	char *filters[] = {"count=100000000", "size=1024"};
	struct client *c = client_new();
	struct reply *r;

	req.n_filters = 2;
	req.filters = filters;
	r = client_call(c, "List", &req.base, NULL);
	ck_assert_int_eq(nghttp2_session_send(c->session), 0);
	usleep(100000);
	ck_assert_int_eq(
	    nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, r->stream_id, NGHTTP2_CANCEL),
	    0);
	ck_assert_int_eq(nghttp2_session_send(c->session), 0);
	ck_assert(wait_count(&list_cancelled, 1));
	client_free(c);
}
END_TEST

START_TEST(cancels_the_handlers_of_a_connection_that_goes_away)
{
	struct client *c = client_new(), *d;
	struct reply *hang = call_key(c, "Remove", "hang");

	(void)hang;
	ck_assert_int_eq(nghttp2_session_send(c->session), 0);
	ck_assert(wait_count(&hang_started, 1));
	client_free(c);
	ck_assert(wait_count(&cancels_seen, 1));
	d = client_new();
	assert_still_serves(d);
	client_free(d);
}
END_TEST

START_TEST(stops_with_a_handler_still_running)
{
	struct client *c = client_new();

	call_key(c, "Remove", "hang");
	ck_assert_int_eq(nghttp2_session_send(c->session), 0);
	ck_assert(wait_count(&hang_started, 1));
	/* Stop and free, as teardown does: the handler's call is cancelled, and free waits
	 * for it. */
	grpc_server_stop(server);
	pthread_join(server_thread, NULL);
	grpc_server_free(server);
	ck_assert_uint_eq(cancels_seen, 1);
	client_free(c);
	/* For teardown: a fresh server. */
	rmdir(dir);
	setup();
}
END_TEST

START_TEST(turns_a_unary_handler_without_a_reply_into_internal_and_refuses_a_second)
{
	struct client *c = client_new();
	struct reply *none = call_key(c, "Usage", "none");
	struct reply *twice = call_key(c, "Mounts", "m");

	ck_assert(client_run(c, replies_closed, NULL));
	assert_status(none, GRPC_INTERNAL);
	ck_assert_str_eq(none->grpc_message, SERVICE "Usage: the handler sent no reply");
	assert_status(twice, GRPC_OK);
	ck_assert_uint_eq(reply_messages(twice, SIZE_MAX, NULL, NULL), 1);
	ck_assert_int_eq(second_reply, -EINVAL);
	client_free(c);
}
END_TEST

START_TEST(closes_connections_beyond_the_limit)
{
	struct client *c[MAX_CONNECTIONS], *extra, *later = NULL;

	for (size_t i = 0; i < MAX_CONNECTIONS; i++) {
		c[i] = client_new();
		wait_reply(c[i], stat_call(c[i], "held"));
	}
	extra = client_new();
	ck_assert_ptr_nonnull(extra);
	ck_assert(!client_run(extra, reply_closed, stat_call(extra, "extra")));
	ck_assert(extra->eof);
	client_free(extra);
	client_free(c[0]);
	/* Once one is gone, another gets in (the server notices the close first). */
	for (int i = 0; i < HANG_MS / 10; i++) {
		later = client_new();
		if (client_run(later, reply_closed, stat_call(later, "later")))
			break;
		client_free(later);
		later = NULL;
		usleep(10000);
	}
	ck_assert_ptr_nonnull(later);
	client_free(later);
	for (size_t i = 1; i < MAX_CONNECTIONS; i++)
		client_free(c[i]);
}
END_TEST

START_TEST(answers_what_a_client_sent_before_shutting_its_side_then_closes)
{
	ListRequest req = CONTAINERD__SERVICES__SNAPSHOTS__V1__LIST_SNAPSHOTS_REQUEST__INIT;
	char *filters[] = {"count=10"};
	struct client *c = client_new();
	struct reply *stat, *list, *cut;
	static const uint8_t prefix[] = {0, 0, 0, 0, 10};

	req.n_filters = 1;
	req.filters = filters;
	stat = stat_call(c, "half");
	list = client_call(c, "List", &req.base, NULL);
	cut = client_call_raw(c, "POST", SERVICE "Stat", "application/grpc", prefix, sizeof prefix,
	                      true, NULL);
	ck_assert_int_eq(nghttp2_session_send(c->session), 0);
	ck_assert_int_eq(shutdown(c->fd, SHUT_WR), 0);
	/* The complete calls are answered, the cut one is dropped, and the server closes. */
	ck_assert(client_drain(c));
	assert_stat_reply(stat, "half");
	assert_status(list, GRPC_OK);
	ck_assert_uint_eq(reply_messages(list, SIZE_MAX, NULL, NULL), 10);
	ck_assert(!cut->closed);
	client_free(c);
}
END_TEST

START_TEST(closes_a_connection_that_does_not_speak_http2)
{
	static const char http1[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	struct sockaddr_un addr = unix_addr(sock_path);
	struct client *c = client_new();
	char buf[256];

	/* client_new sent a preface already: a fresh socket instead. */
	close(c->fd);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_eq(connect(c->fd, (struct sockaddr *)&addr, sizeof addr), 0);
	ck_assert_int_eq(send(c->fd, http1, sizeof http1 - 1, MSG_NOSIGNAL), sizeof http1 - 1);
	/* Whatever the server says first (its SETTINGS), it then closes. */
	while (recv(c->fd, buf, sizeof buf, 0) > 0)
		;
	client_free(c);
	c = client_new();
	assert_still_serves(c);
	client_free(c);
}
END_TEST

START_TEST(listens_with_its_mode_replacing_a_stale_socket_but_not_a_live_one)
{
	struct grpc_server *other;
	char path[PATH_MAX + 16];
	struct sockaddr_un addr;
	struct stat st;
	int fd;

	ck_assert_int_eq(stat(sock_path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0600);
	ck_assert_int_eq(grpc_server_new(methods, ARRAY_SIZE(methods), NULL, NULL, &other), 0);
	/* The fixture's server listens there. */
	ck_assert_int_eq(grpc_server_listen(other, sock_path, 0600), -EADDRINUSE);
	/* A socket file no one listens on any more is replaced. */
	snprintf(path, sizeof path, "%s/stale.sock", dir);
	addr = unix_addr(path);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
	close(fd);
	ck_assert_int_eq(grpc_server_listen(other, path, 0660), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0660);
	grpc_server_free(other);
	ck_assert_int_eq(access(path, F_OK), -1);
	/* Anything else is left alone. */
	snprintf(path, sizeof path, "%s/file", dir);
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(grpc_server_new(methods, ARRAY_SIZE(methods), NULL, NULL, &other), 0);
	ck_assert_int_eq(grpc_server_listen(other, path, 0600), -EEXIST);
	grpc_server_free(other);
	ck_assert_int_eq(access(path, F_OK), 0);
	unlink(path);
}
END_TEST

START_TEST(serves_containerds_own_proxy_client)
{
	char self[PATH_MAX], client[PATH_MAX + 32], *slash;
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	pid_t pid;
	int status;

	ck_assert_int_gt(n, 0);
	self[n] = '\0';
	slash = strrchr(self, '/');
	ck_assert_ptr_nonnull(slash);
	*slash = '\0';
	snprintf(client, sizeof client, "%s/grpc-proxy-client", self);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		execl(client, client, sock_path, (char *)NULL);
		perror(client);
		_exit(127);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	              "grpc-proxy-client failed (status %#x): see its output above", status);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("grpc");
	TCase *tc = tcase_create("grpc");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	/* Each wait is bounded by HANG_MS; the Go client's by its own 60 s. */
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, names_the_methods_of_containerds_snapshot_service_by_its_paths);
	tcase_add_test(tc, answers_a_unary_call_with_its_reply_and_status_ok);
	tcase_add_test(tc, streams_thousands_of_list_replies_in_order);
	tcase_add_test(tc, streams_more_than_a_slow_reader_takes_in_without_losing_any);
	tcase_add_test(tc, answers_a_failing_handler_with_its_status_and_percent_encoded_message);
	tcase_add_test(tc, answers_an_unknown_method_with_unimplemented);
	tcase_add_test(tc, refuses_compressed_messages);
	tcase_add_test(tc, refuses_cut_missing_and_trailing_request_bytes);
	tcase_add_test(tc, refuses_a_request_that_does_not_decode);
	tcase_add_test(tc, takes_a_request_of_the_largest_size_and_refuses_one_byte_more);
	tcase_add_test(tc, refuses_an_oversized_request_from_its_prefix_before_it_arrives);
	tcase_add_test(tc, bounds_what_decoding_a_request_may_allocate);
	tcase_add_test(tc, refuses_what_is_no_grpc_request_with_its_http_status);
	tcase_add_test(tc, parses_grpc_timeout_and_refuses_a_malformed_one);
	tcase_add_test(tc, answers_fast_calls_while_a_slow_one_runs_on_the_same_connection);
	tcase_add_test(tc, queues_calls_beyond_the_handler_threads_until_one_is_free);
	tcase_add_test(tc, refuses_calls_past_max_streams_whose_reset_handlers_still_run);
	tcase_add_test(tc, cancels_the_handler_of_a_call_the_client_resets);
	tcase_add_test(tc, stops_a_stream_the_client_resets);
	tcase_add_test(tc, cancels_the_handlers_of_a_connection_that_goes_away);
	tcase_add_test(tc, stops_with_a_handler_still_running);
	tcase_add_test(tc,
	               turns_a_unary_handler_without_a_reply_into_internal_and_refuses_a_second);
	tcase_add_test(tc, closes_connections_beyond_the_limit);
	tcase_add_test(tc, answers_what_a_client_sent_before_shutting_its_side_then_closes);
	tcase_add_test(tc, closes_a_connection_that_does_not_speak_http2);
	tcase_add_test(tc, listens_with_its_mode_replacing_a_stale_socket_but_not_a_live_one);
	tcase_add_test(tc, serves_containerds_own_proxy_client);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
