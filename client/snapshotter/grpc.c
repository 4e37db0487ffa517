/* The gRPC server (grpc.h): HTTP/2 from libnghttp2, messages from protobuf-c, the gRPC
 * wire format in between. The thread in grpc_server_run owns the listening socket, the
 * connections and their nghttp2 sessions; nothing else touches a session. A call's
 * request is collected there, decoded, and handed to a thread of its own that runs the
 * handler; the handler's replies and its status go back through the server's ready list
 * and its eventfd, and the I/O thread writes them out. The lock guards what the two
 * sides share: the ready list, each call's queued replies, its state and references. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "tp-cleanup.h"
#include "grpc.h"

#define DEFAULT_MAX_CONNECTIONS 16
#define DEFAULT_MAX_STREAMS     32
#define DEFAULT_MAX_CALLS       64
#define DEFAULT_MAX_MESSAGE     (4u << 20)

/* A message on the wire: a flag byte (1: compressed) and a big-endian length first. */
#define PREFIX 5
/* Request headers kept per call, and their bytes (names, values and 32 per field, as
 * HTTP/2 counts them); also advertised as SETTINGS_MAX_HEADER_LIST_SIZE. */
#define MAX_METADATA     32
#define MAX_HEADER_BYTES 16384
/* A status message is cut to this many bytes before it is percent-encoded. */
#define MAX_STATUS_MESSAGE 1024
/* Reply bytes a handler may have queued before grpc_call_send waits for the peer. */
#define SEND_WINDOW (1u << 20)
/* Request bytes one connection may have buffered, in all its incomplete requests, as a
 * multiple of max_message. */
#define CONN_BUFFERED_MESSAGES 4
/* What decoding one request may allocate: this many times its size, and a little more. */
#define DECODE_FACTOR 16
#define DECODE_SLACK  (64u << 10)
#define READ_CHUNK    16384
/* Reads per connection per wakeup, so that one busy peer does not starve the others. */
#define READS_PER_WAKEUP 4
#define EPOLL_EVENTS     32

/* One reply message, encoded with its prefix, queued for the I/O thread. */
struct outbuf {
	struct outbuf *next;
	size_t len, off;
	uint8_t data[];
};

/* A request header kept for grpc_call_metadata: "name\0value\0" in one allocation. */
struct header {
	char *name, *value;
};

enum call_state {
	CALL_HEADERS,    /* the request's headers are arriving */
	CALL_BODY,       /* headers valid; its message is arriving */
	CALL_ANSWERED,   /* answered by the I/O thread (an error); the rest is ignored */
	CALL_DISPATCHED, /* its handler runs or ran */
};

struct grpc_conn;

struct grpc_call {
	struct grpc_server *server;
	int32_t stream_id;

	/* The I/O thread's, until the call is dispatched; then read-only. */
	enum call_state state;
	const struct grpc_method *method;
	bool post, grpc_content_type, bad_timeout, encoded, remote_closed, headers_sent;
	char *path; /* an unknown method's path, for the status message */
	size_t header_bytes;
	struct header metadata[MAX_METADATA];
	size_t n_metadata;
	uint8_t prefix[PREFIX];
	size_t prefix_have;
	uint8_t *body; /* the message after its prefix */
	size_t body_len, body_have, body_cap;
	ProtobufCMessage *request;

	/* Shared, under server->lock. A call is referenced by its stream while that is
	 * open, by its handler from dispatch until it returns, and by the ready list while
	 * it is on it; it is freed when the last one lets go. */
	unsigned refs;
	struct grpc_conn *conn; /* NULL once the connection is closed */
	struct grpc_call *conn_prev, *conn_next;
	bool stream_open, cancelled, pending, done, queued;
	struct grpc_call *ready_next;
	struct grpc_call *pending_prev, *pending_next;
	struct outbuf *out_head, *out_tail;
	size_t out_bytes;
	enum grpc_status status; /* once done */

	/* The handler's thread's, until done; then read-only. */
	unsigned n_sent;
	char *message;
};

struct grpc_conn {
	struct grpc_server *server;
	int fd;
	nghttp2_session *session;
	uint32_t events;         /* what epoll watches for now */
	bool eof;                /* the peer sent its last byte; written under lock */
	bool closed, dirty;      /* I/O thread */
	size_t buffered;         /* request bytes of incomplete requests; I/O thread */
	unsigned in_flight;      /* calls dispatched, their handler not done; under lock */
	struct grpc_call *calls; /* every call that names it; under lock */
	struct grpc_conn *next;  /* in server->conns or server->dead */
	struct grpc_conn *dirty_next;
};

struct grpc_server {
	const struct grpc_method *methods;
	size_t n_methods;
	struct grpc_limits limits;
	void *userdata;
	int epoll_fd, wake_fd, listen_fd;
	char *path; /* the socket file we made */
	atomic_bool stopping;
	nghttp2_session_callbacks *callbacks;
	struct grpc_conn *conns, *dead; /* I/O thread */
	unsigned n_conns;               /* I/O thread */

	pthread_mutex_t lock;
	pthread_cond_t drained; /* a call's queue shrank, or a call was cancelled */
	pthread_cond_t idle;    /* running reached 0 */
	unsigned running;       /* handler threads, at most max_calls */
	struct grpc_call *ready_head, *ready_tail;
	/* Dispatched calls waiting for a handler thread, oldest first; only calls whose
	 * stream is open, so at most max_connections * max_streams. */
	struct grpc_call *pending_head, *pending_tail;
};

static const char *const status_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *grpc_status_name(enum grpc_status code)
{
	return (unsigned)code < ARRAY_SIZE(status_names) ? status_names[code] : "?";
}

/* gRPC's percent-encoding of grpc-message: bytes outside printable ASCII, and '%',
 * as %XX. OUT holds 3 * MAX_STATUS_MESSAGE + 1 bytes; MESSAGE is cut to fit. */
static void percent_encode(const char *message, char *out)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;

	for (size_t i = 0; message[i] != '\0' && i < MAX_STATUS_MESSAGE; i++) {
		unsigned char c = (unsigned char)message[i];

		if (c >= 0x20 && c <= 0x7e && c != '%') {
			out[n++] = (char)c;
		} else {
			out[n++] = '%';
			out[n++] = hex[c >> 4];
			out[n++] = hex[c & 15];
		}
	}
	out[n] = '\0';
}

#define NV(n, v, vlen)                                                                      \
	{                                                                                   \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vlen), NGHTTP2_NV_FLAG_NONE \
	}

/* Freeing a call: the last reference is gone (lock held, or no other side left). */
static void call_free(struct grpc_call *call)
{
	struct outbuf *b, *next;

	if (call->conn != NULL) {
		if (call->conn_prev != NULL)
			call->conn_prev->conn_next = call->conn_next;
		else
			call->conn->calls = call->conn_next;
		if (call->conn_next != NULL)
			call->conn_next->conn_prev = call->conn_prev;
	}
	for (b = call->out_head; b != NULL; b = next) {
		next = b->next;
		free(b);
	}
	for (size_t i = 0; i < call->n_metadata; i++)
		free(call->metadata[i].name);
	if (call->request != NULL)
		protobuf_c_message_free_unpacked(call->request, NULL);
	free(call->body);
	free(call->path);
	free(call->message);
	free(call);
}

/* Drop one reference (lock held). */
static void call_unref(struct grpc_call *call)
{
	if (--call->refs == 0)
		call_free(call);
}

/* Put CALL on the ready list for the I/O thread, and wake it (lock held). */
static void call_queue(struct grpc_call *call)
{
	struct grpc_server *server = call->server;
	uint64_t one = 1;

	if (call->queued)
		return;
	call->queued = true;
	call->refs++;
	call->ready_next = NULL;
	if (server->ready_tail != NULL) {
		server->ready_tail->ready_next = call;
	} else {
		server->ready_head = call;
		/* An eventfd write fails only when the counter would overflow, which a
		 * reader that keeps draining it never lets happen. */
		(void)!write(server->wake_fd, &one, sizeof one);
	}
	server->ready_tail = call;
}

/* Forget a call's request bytes (I/O thread). */
static void call_drop_body(struct grpc_conn *conn, struct grpc_call *call)
{
	conn->buffered -= call->body_have;
	free(call->body);
	call->body = NULL;
	call->body_have = call->body_cap = 0;
}

/* Answer CALL from the I/O thread with no message: one HEADERS frame holding the HTTP
 * status, and the gRPC status (gRPC's "Trailers-Only" response). */
static void call_answer(struct grpc_conn *conn, struct grpc_call *call, int http_status,
                        enum grpc_status status, const char *message)
{
	char http[8], code[8], encoded[3 * MAX_STATUS_MESSAGE + 1];
	nghttp2_nv nva[] = {
	    NV(":status", http, 0),
	    NV("content-type", "application/grpc", sizeof "application/grpc" - 1),
	    NV("grpc-status", code, 0),
	    NV("grpc-message", encoded, 0),
	};
	size_t n = ARRAY_SIZE(nva);

	nva[0].valuelen = (size_t)snprintf(http, sizeof http, "%d", http_status);
	nva[2].valuelen = (size_t)snprintf(code, sizeof code, "%d", (int)status);
	percent_encode(message != NULL ? message : "", encoded);
	nva[3].valuelen = strlen(encoded);
	if (nva[3].valuelen == 0)
		n--;
	call->state = call->state == CALL_DISPATCHED ? CALL_DISPATCHED : CALL_ANSWERED;
	call->headers_sent = true;
	call_drop_body(conn, call);
	/* Fails only for want of memory or a stream already gone; nghttp2 then resets or
	 * has closed it. The reset of a stream still sending follows in on_frame_send. */
	nghttp2_submit_response(conn->session, call->stream_id, nva, n, NULL);
}

/* Answer CALL with a gRPC status and no message (I/O thread). */
static void call_fail_early(struct grpc_conn *conn, struct grpc_call *call, enum grpc_status status,
                            const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void call_fail_early(struct grpc_conn *conn, struct grpc_call *call, enum grpc_status status,
                            const char *fmt, ...)
{
	char message[MAX_STATUS_MESSAGE];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(message, sizeof message, fmt, ap);
	va_end(ap);
	call_answer(conn, call, 200, status, message);
}

/* Put CALL at the end of the pending list (lock held). */
static void pending_push(struct grpc_server *server, struct grpc_call *call)
{
	call->pending = true;
	call->pending_next = NULL;
	call->pending_prev = server->pending_tail;
	if (server->pending_tail != NULL)
		server->pending_tail->pending_next = call;
	else
		server->pending_head = call;
	server->pending_tail = call;
}

/* Take CALL off the pending list (lock held). */
static void pending_remove(struct grpc_server *server, struct grpc_call *call)
{
	if (call->pending_prev != NULL)
		call->pending_prev->pending_next = call->pending_next;
	else
		server->pending_head = call->pending_next;
	if (call->pending_next != NULL)
		call->pending_next->pending_prev = call->pending_prev;
	else
		server->pending_tail = call->pending_prev;
	call->pending = false;
}

/* A pending call whose stream closes will never run: its handler's reference and its
 * place in its connection's count go (lock held). */
static void pending_drop(struct grpc_server *server, struct grpc_call *call)
{
	pending_remove(server, call);
	if (call->conn != NULL)
		call->conn->in_flight--;
	call->refs--; /* never the last: the caller holds the stream's */
}

/* A handler thread: run CALL's handler, hand its status to the I/O thread, and go on
 * with the oldest pending call while there is one. */
static void *worker_run(void *arg)
{
	struct grpc_call *call = arg;
	struct grpc_server *server = call->server;

	while (call != NULL) {
		enum grpc_status status = call->method->handler(call, call->request);

		if ((unsigned)status > GRPC_UNAUTHENTICATED)
			status = GRPC_UNKNOWN;
		if (status == GRPC_OK && !call->method->streaming && call->n_sent == 0)
			status =
			    grpc_call_fail(call, GRPC_INTERNAL, "%s: the handler sent no reply",
			                   call->method->path);
		pthread_mutex_lock(&server->lock);
		call->status = status;
		call->done = true;
		/* Queued even without its stream, so that a connection waiting for its
		 * handlers (conn_pump) sees this one end. */
		if (call->conn != NULL) {
			call->conn->in_flight--;
			call_queue(call);
		}
		call_unref(call);
		call = server->pending_head;
		if (call != NULL)
			pending_remove(server, call);
		else if (--server->running == 0)
			pthread_cond_broadcast(&server->idle);
		/* With running at 0 the server may be freed as soon as this unlock lets
		 * grpc_server_free see it: nothing of it is touched after. */
		pthread_mutex_unlock(&server->lock);
	}
	return NULL;
}

/* Start a handler thread on CALL. It takes no signal: they are the main thread's. */
static int worker_start(struct grpc_call *call)
{
	sigset_t all, old;
	pthread_attr_t attr;
	pthread_t thread;
	int r;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	r = pthread_create(&thread, &attr, worker_run, call);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return -r;
}

/* An allocator that refuses to go past a budget, so that decoding a request cannot make
 * the server allocate much more than the request's size. */
struct budget {
	ProtobufCAllocator allocator;
	size_t left;
	bool exhausted;
};

static void *budget_alloc(void *data, size_t size)
{
	struct budget *b = data;

	if (size > b->left) {
		b->exhausted = true;
		return NULL;
	}
	b->left -= size;
	return malloc(size);
}

static void budget_free(void *data, void *ptr)
{
	(void)data;
	free(ptr);
}

/* The request is complete: check it, decode it, and start its handler (I/O thread). */
static void call_dispatch(struct grpc_conn *conn, struct grpc_call *call)
{
	struct grpc_server *server = call->server;
	struct budget budget = {
	    .allocator = {.alloc = budget_alloc, .free = budget_free},
	    .left = DECODE_FACTOR * call->body_len + DECODE_SLACK,
	};
	bool busy, start;
	int r;

	if (call->prefix_have < PREFIX) {
		call_fail_early(conn, call, GRPC_INTERNAL,
		                call->prefix_have == 0 ? "no request message"
		                                       : "truncated request message");
		return;
	}
	if (call->body_have < call->body_len) {
		call_fail_early(conn, call, GRPC_INTERNAL,
		                "truncated request message: %zu of %zu bytes", call->body_have,
		                call->body_len);
		return;
	}
	/* Its stream counts against max_streams; after a reset, only its handler does. */
	pthread_mutex_lock(&server->lock);
	busy = conn->in_flight >= server->limits.max_streams;
	pthread_mutex_unlock(&server->lock);
	if (busy) {
		call_fail_early(conn, call, GRPC_RESOURCE_EXHAUSTED,
		                "too many calls in progress on this connection");
		return;
	}
	budget.allocator.allocator_data = &budget;
	call->request = protobuf_c_message_unpack(call->method->request, &budget.allocator,
	                                          call->body_len, call->body);
	if (call->request == NULL) {
		call_fail_early(
		    conn, call, budget.exhausted ? GRPC_RESOURCE_EXHAUSTED : GRPC_INTERNAL,
		    "the request message does not decode as %s%s", call->method->request->name,
		    budget.exhausted ? " within the server's memory limit" : "");
		return;
	}
	call_drop_body(conn, call);

	pthread_mutex_lock(&server->lock);
	call->refs++;
	conn->in_flight++;
	call->state = CALL_DISPATCHED;
	start = server->running < server->limits.max_calls;
	if (start)
		server->running++;
	else
		pending_push(server, call);
	pthread_mutex_unlock(&server->lock);
	if (!start)
		return;
	r = worker_start(call);
	if (r == 0)
		return;
	pthread_mutex_lock(&server->lock);
	if (--server->running > 0) {
		/* A running handler thread takes it when it is done. */
		pending_push(server, call);
		pthread_mutex_unlock(&server->lock);
		return;
	}
	pthread_cond_broadcast(&server->idle);
	call->refs--;
	conn->in_flight--;
	pthread_mutex_unlock(&server->lock);
	call_fail_early(conn, call, GRPC_UNAVAILABLE, "cannot start a thread: %s", strerror(-r));
}

/* A gRPC timeout: 1 to 8 digits and a unit (H, M, S, m, u, n). Only checked. */
static bool timeout_valid(const uint8_t *v, size_t len)
{
	if (len < 2 || len > 9 || strchr("HMSmun", v[len - 1]) == NULL || v[len - 1] == '\0')
		return false;
	for (size_t i = 0; i < len - 1; i++)
		if (v[i] < '0' || v[i] > '9')
			return false;
	return true;
}

/* application/grpc, or application/grpc+proto or ;parameters. */
static bool grpc_content_type(const uint8_t *v, size_t len)
{
	static const char type[] = "application/grpc";
	size_t n = sizeof type - 1;

	return len >= n && strncasecmp((const char *)v, type, n) == 0 &&
	       (len == n || v[n] == '+' || v[n] == ';');
}

#define IS(name, s) (name##len == sizeof(s) - 1 && memcmp(name, s, sizeof(s) - 1) == 0)

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
	struct grpc_conn *conn = user_data;
	struct grpc_call *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	char *kept;

	(void)flags;
	if (call == NULL || frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	call->header_bytes += namelen + valuelen + 32;
	if (call->header_bytes > MAX_HEADER_BYTES)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	/* Trailers a client may send after its message say nothing we need. */
	if (frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	if (IS(name, ":method")) {
		call->post = IS(value, "POST");
	} else if (IS(name, ":path")) {
		for (size_t i = 0; i < conn->server->n_methods; i++) {
			const char *path = conn->server->methods[i].path;

			if (strlen(path) == valuelen && memcmp(path, value, valuelen) == 0)
				call->method = &conn->server->methods[i];
		}
		if (call->method == NULL && call->path == NULL)
			call->path = strndup((const char *)value, valuelen < 256 ? valuelen : 256);
	} else if (IS(name, "content-type")) {
		call->grpc_content_type = grpc_content_type(value, valuelen);
	} else if (IS(name, "grpc-timeout")) {
		/* The deadline is not enforced: handlers end on their own, and a client
		 * that gives up resets the stream, which they see. */
		call->bad_timeout = !timeout_valid(value, valuelen);
	} else if (IS(name, "grpc-encoding")) {
		call->encoded = !IS(value, "identity");
	}
	if (name[0] == ':')
		return 0;
	if (call->n_metadata == MAX_METADATA)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	kept = malloc(namelen + valuelen + 2);
	if (kept == NULL)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	memcpy(kept, name, namelen);
	kept[namelen] = '\0';
	memcpy(kept + namelen + 1, value, valuelen);
	kept[namelen + 1 + valuelen] = '\0';
	call->metadata[call->n_metadata].name = kept;
	call->metadata[call->n_metadata++].value = kept + namelen + 1;
	return 0;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct grpc_conn *conn = user_data;
	struct grpc_server *server = conn->server;
	struct grpc_call *call;

	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	call = calloc(1, sizeof *call);
	if (call == NULL)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	call->server = server;
	call->stream_id = frame->hd.stream_id;
	call->refs = 1;
	call->stream_open = true;
	pthread_mutex_lock(&server->lock);
	call->conn = conn;
	call->conn_next = conn->calls;
	if (conn->calls != NULL)
		conn->calls->conn_prev = call;
	conn->calls = call;
	pthread_mutex_unlock(&server->lock);
	nghttp2_session_set_stream_user_data(session, call->stream_id, call);
	return 0;
}

/* The request's headers are all there: refuse what is no gRPC call of ours. */
static void call_check_headers(struct grpc_conn *conn, struct grpc_call *call)
{
	if (!call->post)
		call_answer(conn, call, 405, GRPC_INTERNAL, "only POST is served");
	else if (!call->grpc_content_type)
		call_answer(conn, call, 415, GRPC_INTERNAL, "content-type is not application/grpc");
	else if (call->method == NULL)
		call_fail_early(conn, call, GRPC_UNIMPLEMENTED, "unknown method %s",
		                call->path != NULL ? call->path : "");
	else if (call->bad_timeout)
		call_fail_early(conn, call, GRPC_INTERNAL, "malformed grpc-timeout");
	else
		call->state = CALL_BODY;
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                              const uint8_t *data, size_t len, void *user_data)
{
	struct grpc_conn *conn = user_data;
	struct grpc_call *call = nghttp2_session_get_stream_user_data(session, stream_id);
	size_t max = conn->server->limits.max_message;

	(void)flags;
	if (call == NULL || call->state != CALL_BODY)
		return 0;
	while (len > 0 && call->prefix_have < PREFIX) {
		call->prefix[call->prefix_have++] = *data++;
		len--;
		if (call->prefix_have < PREFIX)
			continue;
		call->body_len = (size_t)call->prefix[1] << 24 | (size_t)call->prefix[2] << 16 |
		                 (size_t)call->prefix[3] << 8 | call->prefix[4];
		if (call->prefix[0] == 1 && call->encoded) {
			call_fail_early(conn, call, GRPC_UNIMPLEMENTED,
			                "compressed messages are not supported");
			return 0;
		}
		if (call->prefix[0] != 0) {
			call_fail_early(conn, call, GRPC_INTERNAL,
			                "message flag %u without an encoding", call->prefix[0]);
			return 0;
		}
		if (call->body_len > max) {
			call_fail_early(conn, call, GRPC_RESOURCE_EXHAUSTED,
			                "request message of %zu bytes, more than %zu",
			                call->body_len, max);
			return 0;
		}
	}
	if (len == 0)
		return 0;
	if (len > call->body_len - call->body_have) {
		call_fail_early(conn, call, GRPC_INTERNAL, "more than one request message");
		return 0;
	}
	if (conn->buffered + len > CONN_BUFFERED_MESSAGES * max) {
		call_fail_early(conn, call, GRPC_RESOURCE_EXHAUSTED,
		                "too many request bytes in flight on this connection");
		return 0;
	}
	/* The buffer grows with what arrives, so that a length alone reserves nothing. */
	if (call->body_have + len > call->body_cap) {
		size_t cap = call->body_cap ? call->body_cap : 4096;
		uint8_t *body;

		while (cap < call->body_have + len)
			cap *= 2;
		if (cap > call->body_len)
			cap = call->body_len;
		body = realloc(call->body, cap);
		if (body == NULL)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		call->body = body;
		call->body_cap = cap;
	}
	memcpy(call->body + call->body_have, data, len);
	call->body_have += len;
	conn->buffered += len;
	return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct grpc_conn *conn = user_data;
	struct grpc_call *call;

	if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
		return 0;
	call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	if (call == NULL)
		return 0;
	if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST &&
	    call->state == CALL_HEADERS)
		call_check_headers(conn, call);
	if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
		call->remote_closed = true;
		if (call->state == CALL_BODY)
			call_dispatch(conn, call);
	}
	return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
	struct grpc_conn *conn = user_data;
	struct grpc_server *server = conn->server;
	struct grpc_call *call = nghttp2_session_get_stream_user_data(session, stream_id);

	(void)error_code;
	if (call == NULL)
		return 0;
	call_drop_body(conn, call);
	pthread_mutex_lock(&server->lock);
	if (call->pending)
		pending_drop(server, call);
	call->stream_open = false;
	if (!call->done) {
		call->cancelled = true;
		pthread_cond_broadcast(&server->drained);
	}
	call_unref(call);
	pthread_mutex_unlock(&server->lock);
	return 0;
}

/* A stream we ended while the client still sends on it is reset with NO_ERROR, which
 * tells the client to stop (an early answer: an unknown method, an oversized message).
 * Only once the answer is out: nghttp2 sends a reset ahead of queued HEADERS. */
static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct grpc_call *call;

	(void)user_data;
	if (frame->hd.type != NGHTTP2_HEADERS || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	if (call != NULL && !call->remote_closed)
		nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
		                          NGHTTP2_NO_ERROR);
	return 0;
}

/* The data source of a reply: the handler's queued messages, then the trailers. */
static ssize_t read_reply(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                          uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
	struct grpc_call *call = source->ptr;
	struct grpc_server *server = call->server;
	char code[8], encoded[3 * MAX_STATUS_MESSAGE + 1];
	nghttp2_nv trailers[] = {
	    NV("grpc-status", code, 0),
	    NV("grpc-message", encoded, 0),
	};
	size_t n = 0;
	bool done;

	(void)user_data;
	pthread_mutex_lock(&server->lock);
	while (n < length && call->out_head != NULL) {
		struct outbuf *b = call->out_head;
		size_t take = b->len - b->off < length - n ? b->len - b->off : length - n;

		memcpy(buf + n, b->data + b->off, take);
		b->off += take;
		n += take;
		if (b->off == b->len) {
			call->out_head = b->next;
			if (call->out_head == NULL)
				call->out_tail = NULL;
			free(b);
		}
	}
	if (n > 0) {
		call->out_bytes -= n;
		if (call->out_bytes <= SEND_WINDOW)
			pthread_cond_broadcast(&server->drained);
	}
	done = call->done;
	pthread_mutex_unlock(&server->lock);
	if (n > 0)
		return (ssize_t)n;
	if (!done)
		return NGHTTP2_ERR_DEFERRED;
	/* Done and sent: the status goes in trailers, which end the stream. */
	trailers[0].valuelen = (size_t)snprintf(code, sizeof code, "%d", (int)call->status);
	percent_encode(call->status != GRPC_OK && call->message != NULL ? call->message : "",
	               encoded);
	trailers[1].valuelen = strlen(encoded);
	if (nghttp2_submit_trailer(session, stream_id, trailers,
	                           trailers[1].valuelen > 0 ? 2 : 1) != 0)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	*data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
	return 0;
}

/* Send what a handler has queued for CALL, or its status (I/O thread). */
static void call_flush(struct grpc_conn *conn, struct grpc_call *call)
{
	struct grpc_server *server = conn->server;
	bool done, empty;

	pthread_mutex_lock(&server->lock);
	done = call->done;
	empty = call->out_head == NULL;
	pthread_mutex_unlock(&server->lock);
	if (call->headers_sent) {
		/* Fails when the data is not deferred: then nghttp2 reads it anyway. */
		nghttp2_session_resume_data(conn->session, call->stream_id);
	} else if (done && empty) {
		call_answer(conn, call, 200, call->status,
		            call->status != GRPC_OK ? call->message : NULL);
	} else {
		nghttp2_nv nva[] = {
		    NV(":status", "200", 3),
		    NV("content-type", "application/grpc", sizeof "application/grpc" - 1),
		};
		nghttp2_data_provider reply = {.source.ptr = call, .read_callback = read_reply};

		call->headers_sent = true;
		if (nghttp2_submit_response(conn->session, call->stream_id, nva, ARRAY_SIZE(nva),
		                            &reply) != 0)
			nghttp2_submit_rst_stream(conn->session, NGHTTP2_FLAG_NONE, call->stream_id,
			                          NGHTTP2_INTERNAL_ERROR);
	}
}

static ssize_t on_send(nghttp2_session *session, const uint8_t *data, size_t length, int flags,
                       void *user_data)
{
	struct grpc_conn *conn = user_data;
	ssize_t n;

	(void)session;
	(void)flags;
	n = send(conn->fd, data, length, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n >= 0)
		return n;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return NGHTTP2_ERR_WOULDBLOCK;
	return NGHTTP2_ERR_CALLBACK_FAILURE;
}

/* Close a connection: its calls are cancelled, its memory freed at the end of the loop's
 * round, as later events of the round may still name it (I/O thread). */
static void conn_close(struct grpc_conn *conn)
{
	struct grpc_server *server = conn->server;
	struct grpc_call *call, *next;

	if (conn->closed)
		return;
	conn->closed = true;
	epoll_ctl(server->epoll_fd, EPOLL_CTL_DEL, conn->fd, NULL);
	close(conn->fd);
	conn->fd = -1;
	pthread_mutex_lock(&server->lock);
	for (call = conn->calls; call != NULL; call = next) {
		next = call->conn_next;
		if (call->pending)
			pending_drop(server, call);
		call->conn = NULL;
		call->cancelled = true;
		if (call->stream_open) {
			call->stream_open = false;
			call_unref(call);
		}
	}
	conn->calls = NULL;
	pthread_cond_broadcast(&server->drained);
	pthread_mutex_unlock(&server->lock);
	/* nghttp2_session_del calls none of our callbacks. */
	nghttp2_session_del(conn->session);
	conn->session = NULL;
	server->n_conns--;
}

/* Whether a connection's handlers are all done and handed over (I/O thread). */
static bool conn_quiet(struct grpc_conn *conn)
{
	bool quiet;

	pthread_mutex_lock(&conn->server->lock);
	quiet = conn->in_flight == 0;
	for (struct grpc_call *call = conn->calls; quiet && call != NULL; call = call->conn_next)
		quiet = !call->queued;
	pthread_mutex_unlock(&conn->server->lock);
	return quiet;
}

/* Write what the session has to say, close what is finished, and watch for what is
 * next (I/O thread). A connection the peer has shut for writing is finished once its
 * handlers are and what they said is written (or waits for a window that cannot grow
 * any more): a gRPC client never does that, but whatever it sent is answered. */
static void conn_pump(struct grpc_conn *conn)
{
	struct epoll_event ev = {.data.ptr = conn};
	bool want_read, want_write;

	if (conn->closed)
		return;
	if (nghttp2_session_send(conn->session) != 0) {
		conn_close(conn);
		return;
	}
	want_read = nghttp2_session_want_read(conn->session);
	want_write = nghttp2_session_want_write(conn->session);
	if ((!want_read && !want_write) || (conn->eof && !want_write && conn_quiet(conn))) {
		conn_close(conn);
		return;
	}
	ev.events = (conn->eof ? 0 : EPOLLIN) | (want_write ? EPOLLOUT : 0);
	if (ev.events != conn->events) {
		if (epoll_ctl(conn->server->epoll_fd, EPOLL_CTL_MOD, conn->fd, &ev) < 0) {
			conn_close(conn);
			return;
		}
		conn->events = ev.events;
	}
}

/* The peer sent its last byte: handlers waiting for it to read wait no more. */
static void conn_eof(struct grpc_conn *conn)
{
	pthread_mutex_lock(&conn->server->lock);
	conn->eof = true;
	pthread_cond_broadcast(&conn->server->drained);
	pthread_mutex_unlock(&conn->server->lock);
}

static void conn_read(struct grpc_conn *conn)
{
	uint8_t buf[READ_CHUNK];

	for (int i = 0; i < READS_PER_WAKEUP && !conn->eof; i++) {
		ssize_t n = recv(conn->fd, buf, sizeof buf, MSG_DONTWAIT);

		if (n == 0) {
			conn_eof(conn);
		} else if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				conn_close(conn);
			return;
		} else if (nghttp2_session_mem_recv(conn->session, buf, (size_t)n) < 0) {
			/* Fatal for the session (a bad preface, a flood, memory): what
			 * nghttp2 could say about it is queued; try once, then close. */
			nghttp2_session_send(conn->session);
			conn_close(conn);
			return;
		}
	}
}

static void conn_event(struct grpc_conn *conn, uint32_t events)
{
	if (conn->closed)
		return;
	if (events & EPOLLIN)
		conn_read(conn);
	/* Hung up both ways, or broken: nothing we send arrives. */
	if (events & (EPOLLHUP | EPOLLERR))
		conn_close(conn);
	else
		conn_pump(conn);
}

static void conn_accept(struct grpc_server *server)
{
	nghttp2_settings_entry settings[] = {
	    {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, server->limits.max_streams},
	    {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_BYTES},
	};

	for (int i = 0; i < 16; i++) {
		struct epoll_event ev = {.events = EPOLLIN};
		struct grpc_conn *conn;
		int fd = accept4(server->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0)
			return;
		if (server->n_conns >= server->limits.max_connections) {
			close(fd);
			continue;
		}
		conn = calloc(1, sizeof *conn);
		if (conn == NULL) {
			close(fd);
			continue;
		}
		conn->server = server;
		conn->fd = fd;
		conn->events = ev.events;
		ev.data.ptr = conn;
		if (nghttp2_session_server_new(&conn->session, server->callbacks, conn) != 0) {
			close(fd);
			free(conn);
			continue;
		}
		if (epoll_ctl(server->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			nghttp2_session_del(conn->session);
			close(fd);
			free(conn);
			continue;
		}
		conn->next = server->conns;
		server->conns = conn;
		server->n_conns++;
		/* nghttp2 holds new streams to these from here on, before the client
		 * has acknowledged them. */
		if (nghttp2_submit_settings(conn->session, NGHTTP2_FLAG_NONE, settings,
		                            ARRAY_SIZE(settings)) != 0)
			conn_close(conn);
		conn_pump(conn);
	}
}

/* What the handlers' threads queued: replies and statuses (I/O thread). */
static void serve_ready(struct grpc_server *server)
{
	struct grpc_conn *dirty = NULL;
	struct grpc_call *call, *next;
	uint64_t count;

	(void)!read(server->wake_fd, &count, sizeof count);
	pthread_mutex_lock(&server->lock);
	call = server->ready_head;
	server->ready_head = server->ready_tail = NULL;
	pthread_mutex_unlock(&server->lock);
	for (; call != NULL; call = next) {
		struct grpc_conn *conn;
		bool open;

		pthread_mutex_lock(&server->lock);
		next = call->ready_next;
		call->queued = false;
		conn = call->conn;
		open = call->stream_open;
		/* With its stream open, the stream's reference keeps it while the lock is
		 * let go. */
		call_unref(call);
		pthread_mutex_unlock(&server->lock);
		if (conn == NULL)
			continue;
		if (open)
			call_flush(conn, call);
		if (!conn->dirty) {
			conn->dirty = true;
			conn->dirty_next = dirty;
			dirty = conn;
		}
	}
	for (struct grpc_conn *conn = dirty; conn != NULL; conn = conn->dirty_next) {
		conn->dirty = false;
		conn_pump(conn);
	}
}

/* Free the connections closed in this round (I/O thread). */
static void reap(struct grpc_server *server)
{
	struct grpc_conn **p = &server->conns;

	while (*p != NULL) {
		struct grpc_conn *conn = *p;

		if (conn->closed) {
			*p = conn->next;
			free(conn);
		} else {
			p = &conn->next;
		}
	}
}

int grpc_server_new(const struct grpc_method *methods, size_t n_methods,
                    const struct grpc_limits *limits, void *userdata,
                    struct grpc_server **ret_server)
{
	struct grpc_server *server = calloc(1, sizeof *server);
	struct epoll_event ev = {.events = EPOLLIN};
	int r;

	if (server == NULL)
		return -ENOMEM;
	server->methods = methods;
	server->n_methods = n_methods;
	server->userdata = userdata;
	if (limits != NULL)
		server->limits = *limits;
	if (server->limits.max_connections == 0)
		server->limits.max_connections = DEFAULT_MAX_CONNECTIONS;
	if (server->limits.max_streams == 0)
		server->limits.max_streams = DEFAULT_MAX_STREAMS;
	if (server->limits.max_calls == 0)
		server->limits.max_calls = DEFAULT_MAX_CALLS;
	if (server->limits.max_message == 0)
		server->limits.max_message = DEFAULT_MAX_MESSAGE;
	/* The wire's length is 32 bits; a reply must also fit an nghttp2 data source. */
	if (server->limits.max_message > UINT32_MAX - PREFIX)
		server->limits.max_message = UINT32_MAX - PREFIX;
	server->listen_fd = -1;
	server->wake_fd = -1;
	pthread_mutex_init(&server->lock, NULL);
	pthread_cond_init(&server->drained, NULL);
	pthread_cond_init(&server->idle, NULL);
	server->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	server->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (server->epoll_fd < 0 || server->wake_fd < 0) {
		r = -errno;
		goto fail;
	}
	ev.data.ptr = &server->wake_fd;
	if (epoll_ctl(server->epoll_fd, EPOLL_CTL_ADD, server->wake_fd, &ev) < 0) {
		r = -errno;
		goto fail;
	}
	if (nghttp2_session_callbacks_new(&server->callbacks) != 0) {
		r = -ENOMEM;
		goto fail;
	}
	nghttp2_session_callbacks_set_send_callback(server->callbacks, on_send);
	nghttp2_session_callbacks_set_on_begin_headers_callback(server->callbacks,
	                                                        on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(server->callbacks, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(server->callbacks,
	                                                          on_data_chunk_recv);
	nghttp2_session_callbacks_set_on_frame_recv_callback(server->callbacks, on_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(server->callbacks, on_stream_close);
	nghttp2_session_callbacks_set_on_frame_send_callback(server->callbacks, on_frame_send);
	*ret_server = server;
	return 0;
fail:
	grpc_server_free(server);
	return r;
}

/* Remove a socket file no process listens on any more; refuse anything else. */
static int remove_stale_socket(const struct sockaddr_un *addr)
{
	CLEANUP_CLOSE int fd = -1;
	struct stat st;

	if (lstat(addr->sun_path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	/* Non-blocking: a listener whose queue is full says EAGAIN, and is one. */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) == 0 || errno == EAGAIN)
		return -EADDRINUSE;
	if (errno != ECONNREFUSED)
		return -errno;
	if (unlink(addr->sun_path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int grpc_server_listen(struct grpc_server *server, const char *path, mode_t mode)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &server->listen_fd};
	CLEANUP_CLOSE int fd = -1;
	int r;

	if (server->listen_fd >= 0)
		return -EALREADY;
	if (strlen(path) >= sizeof addr.sun_path)
		return -ENAMETOOLONG;
	strcpy(addr.sun_path, path);
	r = remove_stale_socket(&addr);
	if (r < 0)
		return r;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (const struct sockaddr *)&addr, sizeof addr) < 0)
		return -errno;
	/* Until listen, a connect is refused: the mode is right before anyone gets in. */
	if (chmod(path, mode) < 0 || listen(fd, 64) < 0 ||
	    epoll_ctl(server->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		r = -errno;
		unlink(path);
		return r;
	}
	server->path = strdup(path);
	if (server->path == NULL) {
		unlink(path);
		return -ENOMEM;
	}
	server->listen_fd = TAKE_FD(fd);
	return 0;
}

int grpc_server_run(struct grpc_server *server)
{
	struct epoll_event events[EPOLL_EVENTS];
	int r = 0;

	while (!atomic_load(&server->stopping)) {
		int n = epoll_wait(server->epoll_fd, events, EPOLL_EVENTS, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		for (int i = 0; i < n; i++) {
			void *ptr = events[i].data.ptr;

			if (ptr == &server->wake_fd)
				serve_ready(server);
			else if (ptr == &server->listen_fd)
				conn_accept(server);
			else
				conn_event(ptr, events[i].events);
		}
		reap(server);
	}
	for (struct grpc_conn *conn = server->conns; conn != NULL; conn = conn->next) {
		if (conn->closed)
			continue;
		nghttp2_session_terminate_session(conn->session, NGHTTP2_NO_ERROR);
		nghttp2_session_send(conn->session);
		conn_close(conn);
	}
	reap(server);
	return r;
}

void grpc_server_stop(struct grpc_server *server)
{
	uint64_t one = 1;

	atomic_store(&server->stopping, true);
	(void)!write(server->wake_fd, &one, sizeof one);
}

void grpc_server_free(struct grpc_server *server)
{
	if (server == NULL)
		return;
	for (struct grpc_conn *conn = server->conns; conn != NULL; conn = conn->next)
		conn_close(conn);
	reap(server);
	pthread_mutex_lock(&server->lock);
	while (server->running > 0)
		pthread_cond_wait(&server->idle, &server->lock);
	/* What handlers queued last, for connections that are gone. */
	while (server->ready_head != NULL) {
		struct grpc_call *call = server->ready_head;

		server->ready_head = call->ready_next;
		call_unref(call);
	}
	pthread_mutex_unlock(&server->lock);
	if (server->listen_fd >= 0)
		close(server->listen_fd);
	if (server->path != NULL)
		unlink(server->path);
	free(server->path);
	if (server->wake_fd >= 0)
		close(server->wake_fd);
	if (server->epoll_fd >= 0)
		close(server->epoll_fd);
	nghttp2_session_callbacks_del(server->callbacks);
	pthread_cond_destroy(&server->idle);
	pthread_cond_destroy(&server->drained);
	pthread_mutex_destroy(&server->lock);
	free(server);
}

int grpc_call_send(struct grpc_call *call, const ProtobufCMessage *reply)
{
	struct grpc_server *server = call->server;
	size_t len = protobuf_c_message_get_packed_size(reply);
	struct outbuf *b;

	if (len > server->limits.max_message)
		return -EMSGSIZE;
	if (!call->method->streaming && call->n_sent > 0)
		return -EINVAL;
	b = malloc(sizeof *b + PREFIX + len);
	if (b == NULL)
		return -ENOMEM;
	b->next = NULL;
	b->off = 0;
	b->len = PREFIX + len;
	b->data[0] = 0;
	b->data[1] = (uint8_t)(len >> 24);
	b->data[2] = (uint8_t)(len >> 16);
	b->data[3] = (uint8_t)(len >> 8);
	b->data[4] = (uint8_t)len;
	protobuf_c_message_pack(reply, b->data + PREFIX);
	pthread_mutex_lock(&server->lock);
	/* A peer that has shut its side will never open the window again. */
	while (!call->cancelled && call->out_bytes > SEND_WINDOW &&
	       !(call->conn != NULL && call->conn->eof))
		pthread_cond_wait(&server->drained, &server->lock);
	if (call->cancelled || call->out_bytes > SEND_WINDOW) {
		pthread_mutex_unlock(&server->lock);
		free(b);
		return -ECANCELED;
	}
	if (call->out_tail != NULL)
		call->out_tail->next = b;
	else
		call->out_head = b;
	call->out_tail = b;
	call->out_bytes += b->len;
	call->n_sent++;
	call_queue(call);
	pthread_mutex_unlock(&server->lock);
	return 0;
}

enum grpc_status grpc_call_fail(struct grpc_call *call, enum grpc_status code, const char *fmt, ...)
{
	char *message;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&message, fmt, ap) >= 0) {
		free(call->message);
		call->message = message;
	}
	va_end(ap);
	return code;
}

const char *grpc_call_metadata(const struct grpc_call *call, const char *name)
{
	for (size_t i = 0; i < call->n_metadata; i++)
		if (strcasecmp(call->metadata[i].name, name) == 0)
			return call->metadata[i].value;
	return NULL;
}

bool grpc_call_cancelled(struct grpc_call *call)
{
	bool cancelled;

	pthread_mutex_lock(&call->server->lock);
	cancelled = call->cancelled;
	pthread_mutex_unlock(&call->server->lock);
	return cancelled;
}

void *grpc_call_userdata(const struct grpc_call *call)
{
	return call->server->userdata;
}
