/* A small gRPC server: unary and server-streaming methods over HTTP/2 without TLS (h2c
 * with prior knowledge, as gRPC clients speak over a unix socket), libnghttp2 for HTTP/2
 * and protobuf-c for the messages. One thread, the one in grpc_server_run, owns the
 * sockets and every connection's nghttp2 session; each call whose request has arrived in
 * full runs its handler on a handler thread, which hands its replies back to that
 * thread. Everything a peer sends is bounded (struct grpc_limits) and checked. */
#ifndef TP_GRPC_H
#define TP_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <protobuf-c/protobuf-c.h>

/* gRPC's status codes, as on the wire (grpc-status). */
enum grpc_status {
	GRPC_OK = 0,
	GRPC_CANCELLED = 1,
	GRPC_UNKNOWN = 2,
	GRPC_INVALID_ARGUMENT = 3,
	GRPC_DEADLINE_EXCEEDED = 4,
	GRPC_NOT_FOUND = 5,
	GRPC_ALREADY_EXISTS = 6,
	GRPC_PERMISSION_DENIED = 7,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_FAILED_PRECONDITION = 9,
	GRPC_ABORTED = 10,
	GRPC_OUT_OF_RANGE = 11,
	GRPC_UNIMPLEMENTED = 12,
	GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14,
	GRPC_DATA_LOSS = 15,
	GRPC_UNAUTHENTICATED = 16,
};

struct grpc_server;
struct grpc_call;

/* A method's handler. It runs on a handler thread, so it may take seconds, and other
 * calls, on the same connection too, go on meanwhile. It replies with grpc_call_send
 * (exactly once for a unary method, any number of times for a streaming one) and returns
 * the call's status; a status other than GRPC_OK carries the message of the last
 * grpc_call_fail, if any. REQUEST, of the method's request type, is the server's and
 * stays valid until the handler returns. */
typedef enum grpc_status grpc_handler(struct grpc_call *call, const ProtobufCMessage *request);

/* One entry of the server's method table. */
struct grpc_method {
	const char *path; /* "/package.Service/Method" */
	const ProtobufCMessageDescriptor *request;
	bool streaming; /* server streaming: any number of replies; else exactly one */
	grpc_handler *handler;
};

/* What peers can make the server hold. A field left 0 takes the default given. */
struct grpc_limits {
	unsigned max_connections; /* 16: connections open at once; more are closed at once */
	unsigned max_streams;     /* 32: calls open per connection (HTTP/2's
	                           * SETTINGS_MAX_CONCURRENT_STREAMS), and calls whose
	                           * handler has not returned, reset ones too; a call beyond
	                           * gets RESOURCE_EXHAUSTED */
	unsigned max_calls;       /* 64: handler threads, all connections; a call beyond
	                           * waits for one to be free */
	size_t max_message;       /* 4 MiB: a request or reply message (what grpc-go
	                           * receives by default) */
};

/* A server answering METHODS (N_METHODS entries; the table is kept, not copied) within
 * LIMITS (NULL: the defaults). USERDATA is what grpc_call_userdata returns. */
int grpc_server_new(const struct grpc_method *methods, size_t n_methods,
                    const struct grpc_limits *limits, void *userdata,
                    struct grpc_server **ret_server);
/* Listen on the unix socket PATH with mode MODE (e.g. 0600), replacing a socket file no
 * one listens on any more; -EADDRINUSE if some process still does, -EEXIST if PATH is
 * not a socket. The file is removed by grpc_server_free. */
int grpc_server_listen(struct grpc_server *server, const char *path, mode_t mode);
/* Serve until grpc_server_stop: accept, read, dispatch, write. Returns 0, or -errno if
 * the loop itself failed. Connections are closed on the way out (handlers still running
 * see their calls cancelled). */
int grpc_server_run(struct grpc_server *server);
/* Make grpc_server_run return. Safe from any thread and from a signal handler. */
void grpc_server_stop(struct grpc_server *server);
/* Once grpc_server_run has returned (or never ran): wait for the handlers still running,
 * then free everything. Accepts NULL. */
void grpc_server_free(struct grpc_server *server);

/* Handlers only, on their call. */

/* Send one reply message. It is encoded at once (REPLY stays the caller's); waits while
 * the peer is more than 1 MiB behind. Returns 0, -ECANCELED once the call is gone (the
 * client reset it, the connection closed, or the peer shut its side while this would
 * wait: stop and return), -EMSGSIZE past the max_message limit, -EINVAL for a second
 * reply of a unary method, -ENOMEM. */
int grpc_call_send(struct grpc_call *call, const ProtobufCMessage *reply);
/* Set the message that goes with a failing status, and return CODE, so that a handler
 * can end with `return grpc_call_fail(call, GRPC_NOT_FOUND, "snapshot %s", key);`. */
enum grpc_status grpc_call_fail(struct grpc_call *call, enum grpc_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The value of the request's metadata NAME (a header, e.g. "containerd-namespace";
 * case-insensitive), the first if it came more than once; NULL if absent. Valid until
 * the handler returns. */
const char *grpc_call_metadata(const struct grpc_call *call, const char *name);
/* Whether the call is gone (the client reset it, the connection closed, the server
 * stops): a long handler may stop early, as nothing it sends arrives. */
bool grpc_call_cancelled(struct grpc_call *call);
/* The USERDATA given to grpc_server_new. */
void *grpc_call_userdata(const struct grpc_call *call);

/* "NOT_FOUND" and so on; "?" for a value outside the enum. */
const char *grpc_status_name(enum grpc_status code);

#endif
