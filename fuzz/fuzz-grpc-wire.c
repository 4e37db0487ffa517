/* Fuzz target: client/snapshotter/grpc.c, the gRPC server, against an untrusted client.
 * The input is everything the client says on one connection (the HTTP/2 preface, frames,
 * HPACK, gRPC messages): it is written to the server's unix socket, which is then shut for
 * writing, while whatever the server says is read and dropped. The server runs in a thread
 * of its own for the whole run, with containerd's Snapshots request types and fast
 * handlers (a reply, a short stream, an error, no reply at all). Checked: nothing crashes
 * or leaks, and the server closes the connection once it has answered what the input
 * asked (a connection it keeps is a hang, and trapped here). */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../client/snapshotter/grpc.h"
#include "containerd/services/snapshots/v1/snapshots.pb-c.h"
#include "google/protobuf/empty.pb-c.h"

#define CHECK(cond)                       \
	do {                              \
		if (!(cond))              \
			__builtin_trap(); \
	} while (0)

/* The server answers a finished input well within this; silence this long is a hang. */
#define HANG_MS 10000

#define SERVICE "/containerd.services.snapshots.v1.Snapshots/"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Stat: a reply naming the key. */
static enum grpc_status stat_handler(struct grpc_call *call, const ProtobufCMessage *request)
{
	const Containerd__Services__Snapshots__V1__StatSnapshotRequest *req = (const void *)request;
	Containerd__Services__Snapshots__V1__StatSnapshotResponse resp =
	    CONTAINERD__SERVICES__SNAPSHOTS__V1__STAT_SNAPSHOT_RESPONSE__INIT;
	Containerd__Services__Snapshots__V1__Info info =
	    CONTAINERD__SERVICES__SNAPSHOTS__V1__INFO__INIT;
	const char *ns = grpc_call_metadata(call, "containerd-namespace");

	info.name = req->key;
	info.parent = (char *)(ns != NULL ? ns : "");
	resp.info = &info;
	grpc_call_send(call, &resp.base);
	return GRPC_OK;
}

/* List: one reply per filter, at most 4. */
static enum grpc_status list_handler(struct grpc_call *call, const ProtobufCMessage *request)
{
	const Containerd__Services__Snapshots__V1__ListSnapshotsRequest *req =
	    (const void *)request;

	for (size_t i = 0; i < req->n_filters && i < 4; i++) {
		Containerd__Services__Snapshots__V1__ListSnapshotsResponse resp =
		    CONTAINERD__SERVICES__SNAPSHOTS__V1__LIST_SNAPSHOTS_RESPONSE__INIT;
		Containerd__Services__Snapshots__V1__Info info =
		    CONTAINERD__SERVICES__SNAPSHOTS__V1__INFO__INIT;
		Containerd__Services__Snapshots__V1__Info *infos[] = {&info};

		info.name = req->filters[i];
		resp.n_info = 1;
		resp.info = infos;
		if (grpc_call_send(call, &resp.base) < 0)
			return GRPC_CANCELLED;
	}
	return GRPC_OK;
}

/* Prepare: an error whose message carries the key, to be percent-encoded. */
static enum grpc_status prepare_handler(struct grpc_call *call, const ProtobufCMessage *request)
{
	const Containerd__Services__Snapshots__V1__PrepareSnapshotRequest *req =
	    (const void *)request;

	return grpc_call_fail(call, GRPC_ALREADY_EXISTS, "snapshot %s (%zu labels): 100%% taken",
	                      req->key, req->n_labels);
}

/* Usage: no reply, which the server turns into INTERNAL. */
static enum grpc_status usage_handler(struct grpc_call *call, const ProtobufCMessage *request)
{
	(void)call;
	(void)request;
	return GRPC_OK;
}

/* Remove: an Empty reply. */
static enum grpc_status remove_handler(struct grpc_call *call, const ProtobufCMessage *request)
{
	Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;

	(void)request;
	grpc_call_send(call, &empty.base);
	return GRPC_OK;
}

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
    {.path = SERVICE "Usage",
     .request = &containerd__services__snapshots__v1__usage_request__descriptor,
     .handler = usage_handler},
    {.path = SERVICE "Remove",
     .request = &containerd__services__snapshots__v1__remove_snapshot_request__descriptor,
     .handler = remove_handler},
};

static struct grpc_server *server;
static struct sockaddr_un addr = {.sun_family = AF_UNIX};
static char dir[32] = "/tmp/fuzz-grpc-wire.XXXXXX";

static void *serve(void *arg)
{
	(void)arg;
	grpc_server_run(server);
	return NULL;
}

static void cleanup(void)
{
	unlink(addr.sun_path);
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	pthread_t thread;

	(void)argc;
	(void)argv;
	CHECK(mkdtemp(dir) != NULL);
	snprintf(addr.sun_path, sizeof addr.sun_path, "%s/grpc.sock", dir);
	CHECK(grpc_server_new(methods, sizeof methods / sizeof methods[0], NULL, NULL, &server) ==
	      0);
	CHECK(grpc_server_listen(server, addr.sun_path, 0600) == 0);
	CHECK(pthread_create(&thread, NULL, serve, NULL) == 0);
	atexit(cleanup);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	size_t off = 0;
	bool shut = false;

	CHECK(fd >= 0);
	CHECK(connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0);
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		uint8_t buf[65536];
		ssize_t n;
		int r;

		if (off == size && !shut) {
			shutdown(fd, SHUT_WR);
			shut = true;
		}
		if (!shut)
			pfd.events |= POLLOUT;
		/* libFuzzer's SIGALRM (its -timeout watch) interrupts poll now and then. */
		do
			r = poll(&pfd, 1, HANG_MS);
		while (r < 0 && errno == EINTR);
		if (r != 1) {
			fprintf(stderr,
			        "fuzz-grpc-wire: no answer and no close within %d ms (%zu of %zu "
			        "bytes sent)\n",
			        HANG_MS, off, size);
			__builtin_trap();
		}
		if (pfd.revents & POLLOUT) {
			n = send(fd, data + off, size - off, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n >= 0)
				off += (size_t)n;
			else if (errno != EAGAIN && errno != EWOULDBLOCK)
				off = size; /* the server has closed: nothing more to say */
		}
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
			n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
				break;
		}
	}
	close(fd);
	return 0;
}
