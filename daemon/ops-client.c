/* The API process's side of the wire to the root parent (issue 21): the functions of
 * daemon/ops.h that api.c calls, each one a request to the parent and its reply. The
 * parent runs the real operation as the principal of the socket the request names and
 * answers with its result, its error code and its message, which this file keeps, so
 * that ops_error_code and ops_error_message answer as the real ones do.
 *
 * api.c passes raw URL segments and JSON strings, and the wire carries only what is
 * valid by include/tp-rules.h (a request the parent cannot decode ends the API process),
 * so each function refuses here, with ops' own error and words, what the wire cannot
 * carry. Where ops looks a volume up before it checks the other inputs (a commit's new
 * name and labels, a patch), the client asks for the volume first, so that a missing one
 * is still "no such volume". Where it looks up what the wire cannot ask for alone, a
 * request with two faults answers with the invalid name where ops names the missing
 * object: an invalid snapshot name under a missing parent, an invalid tenant name for a
 * missing image's publication, an invalid tenant or volume name in a grant of a missing
 * tenant, an invalid image name from a source that cannot be read.
 *
 * api.c serves requests in several threads. The parent serves each of the socketpairs
 * it gave this process in a thread of its own, so each is a channel that one request and
 * its reply hold at a time: a call takes a free one, or waits for one, and a long
 * operation (an image import) leaves the others answering. A listing is asked for page by
 * page, its callback run between pages without a channel held. A reply that does not
 * decode, or a failing socketpair, leaves the client broken: every call after it fails
 * with -EIO, as the parent's end can no longer be trusted to be in step, and
 * ops_client_broken_fd becomes readable so that the process stops and the parent starts
 * a fresh one. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "api-wire-io.h"
#include "api-wire.h"
#include "log.h"
#include "ops-client.h"
#include "tp-broker.h"

/* CHANNELS_MAX socketpairs at most, each carrying one request and its reply at a time. */
#define CHANNELS_MAX 16

static struct {
	pthread_mutex_t lock; /* the sockets, the channels' use and the ids */
	pthread_cond_t idle;  /* a channel became free */
	bool up;              /* initialised, not shut down, not broken */
	int broken_fd;        /* eventfd: written when the client breaks */
	struct client_socket {
		struct principal p;
		bool live;
	} * sockets;
	size_t n, cap;
	int fds[CHANNELS_MAX];
	bool busy[CHANNELS_MAX];
	size_t n_fds;
	uint32_t next_id;
} cl = {.lock = PTHREAD_MUTEX_INITIALIZER, .idle = PTHREAD_COND_INITIALIZER, .broken_fd = -1};

/* The error of this thread's last call, as ops.c keeps it. */
static __thread struct {
	enum tp_error code;
	char message[TP_API_MESSAGE_SIZE];
} err;

const char *ops_error_message(void)
{
	return err.message;
}

enum tp_error ops_error_code(int r)
{
	return err.code != TP_ERROR_NONE ? err.code : tp_error_of_errno(r);
}

static void error_clear(void)
{
	err.code = TP_ERROR_NONE;
	err.message[0] = '\0';
}

__attribute__((format(printf, 3, 4))) static int fail_code(enum tp_error code, int r,
                                                           const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err.message, sizeof err.message, fmt, ap);
	va_end(ap);
	err.code = code;
	return r;
}

#define fail(r, ...) fail_code(TP_ERROR_NONE, (r), __VA_ARGS__)

/* As daemon/ops.c words them. */
static int fail_name(const char *kind, const char *name)
{
	return fail_code(TP_ERROR_INVALID_NAME, -EINVAL,
	                 "invalid %s name \"%.80s\": use 1-63 of a-z 0-9 . _ -, starting with a "
	                 "letter or digit",
	                 kind, name);
}

/* ops_labels_check as an ops error, worded as daemon/volumes.c words it. */
static int check_labels(const struct label_list *l, bool patch)
{
	char why[128];

	return ops_labels_check(l, patch, why, sizeof why) < 0 ? fail(-EINVAL, "%s", why) : 0;
}

/* Give socket INDEX the principal P; the lock held. */
static int socket_set(uint32_t index, const struct principal *p)
{
	if (index >= cl.cap) {
		size_t cap = cl.cap ? cl.cap : 16;
		struct client_socket *grown;

		while (cap <= index)
			cap *= 2;
		grown = realloc(cl.sockets, cap * sizeof *grown);
		if (grown == NULL)
			return -ENOMEM;
		memset(grown + cl.cap, 0, (cap - cl.cap) * sizeof *grown);
		cl.sockets = grown;
		cl.cap = cap;
	}
	for (size_t i = 0; i < cl.n && p->admin; i++)
		if (cl.sockets[i].live && cl.sockets[i].p.admin && i != index)
			return -EINVAL;
	if (p->admin && p->tenant_id != 0)
		return -EINVAL;
	cl.sockets[index] = (struct client_socket){.p = *p, .live = true};
	if (index >= cl.n)
		cl.n = (size_t)index + 1;
	return 0;
}

int ops_client_init(const int *fds, size_t n_fds, const struct principal *sockets, size_t n)
{
	int r = 0;

	if (n_fds == 0 || n_fds > CHANNELS_MAX || n > UINT32_MAX - 1)
		return -EINVAL;
	for (size_t i = 0; i < n_fds; i++)
		if (fds[i] < 0)
			return -EINVAL;
	ops_client_shutdown();
	pthread_mutex_lock(&cl.lock);
	for (size_t i = 0; i < n && r == 0; i++)
		r = socket_set((uint32_t)i, &sockets[i]);
	if (r == 0)
		cl.broken_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r == 0 && cl.broken_fd < 0)
		r = -errno;
	if (r == 0) {
		memcpy(cl.fds, fds, n_fds * sizeof *fds);
		memset(cl.busy, 0, sizeof cl.busy);
		cl.n_fds = n_fds;
		cl.up = true;
	}
	pthread_mutex_unlock(&cl.lock);
	if (r < 0)
		ops_client_shutdown();
	return r;
}

int ops_client_listen(uint32_t index, const struct principal *p)
{
	int r;

	pthread_mutex_lock(&cl.lock);
	r = socket_set(index, p);
	pthread_mutex_unlock(&cl.lock);
	return r;
}

void ops_client_unlisten(uint32_t index)
{
	pthread_mutex_lock(&cl.lock);
	if (index < cl.n)
		cl.sockets[index] = (struct client_socket){0};
	pthread_mutex_unlock(&cl.lock);
}

int ops_client_broken_fd(void)
{
	return cl.broken_fd;
}

void ops_client_shutdown(void)
{
	pthread_mutex_lock(&cl.lock);
	free(cl.sockets);
	cl.sockets = NULL;
	cl.n = cl.cap = 0;
	cl.n_fds = 0;
	cl.up = false;
	if (cl.broken_fd >= 0)
		close(cl.broken_fd);
	cl.broken_fd = -1;
	pthread_cond_broadcast(&cl.idle);
	pthread_mutex_unlock(&cl.lock);
}

/* Start REQ for OP from the socket of principal P (NULL: the admin's, for the operations
 * without a principal). */
static int request_init(struct api_wire_request *req, enum tp_api_op op, const struct principal *p)
{
	size_t i;
	int r = 0;

	api_wire_request_init(req, op, 0, 0);
	pthread_mutex_lock(&cl.lock);
	if (!cl.up) {
		r = fail(-EIO, "the daemon's operations are not reachable");
	} else if (p == NULL || p->admin) {
		for (i = 0; i < cl.n; i++)
			if (cl.sockets[i].live && cl.sockets[i].p.admin)
				break;
		if (i == cl.n)
			r = fail(-EPERM, "this process serves no admin socket");
		req->w.socket = (uint32_t)i;
		if (r == 0 && p != NULL && p->tenant_id != 0 &&
		    (!tp_name_valid(p->tenant) || API_WIRE_SET(req->w.acting_for, p->tenant) < 0))
			r = fail(-EPERM, "the admin cannot act for tenant \"%.80s\"", p->tenant);
	} else {
		for (i = 0; i < cl.n; i++)
			if (cl.sockets[i].live && !cl.sockets[i].p.admin &&
			    cl.sockets[i].p.tenant_id == p->tenant_id &&
			    strcmp(cl.sockets[i].p.tenant, p->tenant) == 0)
				break;
		if (i == cl.n)
			r = fail(-EPERM, "this process serves no socket of tenant \"%.80s\"",
			         p->tenant);
		req->w.socket = (uint32_t)i;
	}
	pthread_mutex_unlock(&cl.lock);
	return r;
}

/* A decoded reply and the buffer it lives in. */
struct answer {
	void *buf;
	struct api_wire_reply rep;
};

static void answer_free(struct answer *a)
{
	free(a->buf);
	a->buf = NULL;
}

/* Break the client: a channel's other end is out of step or gone. The lock held. Every
 * call from now on fails, and the process's main loop, told by the eventfd, stops it. */
static int broken(int r, const char *what)
{
	log_errno(LOG_ERR, r, "%s the root parent: %m; no further operations", what);
	if (cl.up && cl.broken_fd >= 0)
		(void)!write(cl.broken_fd, &(uint64_t){1}, sizeof(uint64_t));
	cl.up = false;
	pthread_cond_broadcast(&cl.idle);
	return fail_code(TP_ERROR_INTERNAL, -EIO, "the daemon's operations are not reachable");
}

/* A free channel, marked busy, or -1 if the client is down. Waits for one. The lock held. */
static int channel_take(void)
{
	for (;;) {
		if (!cl.up)
			return -1;
		for (size_t i = 0; i < cl.n_fds; i++)
			if (!cl.busy[i]) {
				cl.busy[i] = true;
				return (int)i;
			}
		pthread_cond_wait(&cl.idle, &cl.lock);
	}
}

static void channel_give_back(int c)
{
	cl.busy[c] = false;
	pthread_cond_signal(&cl.idle);
}

/* Send REQ (asked at CURSOR, for a listing) and receive its reply into A, on a channel of
 * its own. Returns 0 and the reply, or the operation's error (its code and message kept)
 * with A freed. */
static int call(struct api_wire_request *req, uint64_t cursor, struct answer *a)
{
	void *out = NULL;
	size_t out_len, in_len;
	int c, fd, r;

	a->buf = NULL;
	pthread_mutex_lock(&cl.lock);
	c = channel_take();
	if (c < 0) {
		pthread_mutex_unlock(&cl.lock);
		return fail(-EIO, "the daemon's operations are not reachable");
	}
	fd = cl.fds[c];
	req->w.h.id = ++cl.next_id;
	pthread_mutex_unlock(&cl.lock);

	req->w.cursor = cursor;
	r = api_wire_encode_request(req, &out, &out_len);
	if (r < 0) {
		pthread_mutex_lock(&cl.lock);
		channel_give_back(c);
		pthread_mutex_unlock(&cl.lock);
		/* The checks before each call keep this from happening but for a bug. */
		return fail_code(TP_ERROR_INTERNAL, r, "request not encodable: %s", strerror(-r));
	}
	r = api_wire_send(fd, out, out_len);
	free(out);
	if (r == 0)
		r = api_wire_recv(fd, TP_API_MESSAGE_MAX, &a->buf, &in_len);
	if (r == 0)
		r = api_wire_decode_reply(a->buf, in_len, req->w.h.op, req->w.h.id, cursor,
		                          &a->rep);
	pthread_mutex_lock(&cl.lock);
	if (r < 0) {
		answer_free(a);
		r = broken(r, "ask");
	} else {
		channel_give_back(c);
	}
	pthread_mutex_unlock(&cl.lock);
	if (r < 0)
		return r;
	if (a->rep.w.error != 0) {
		r = -(int)a->rep.w.error;
		snprintf(err.message, sizeof err.message, "%s", a->rep.w.message);
		err.code = (enum tp_error)a->rep.w.code;
		answer_free(a);
		return r;
	}
	return 0;
}

/* Ask REQ, which answers with no record or with one volume into RET_VIEW. */
static int call_volume(struct api_wire_request *req, struct volume_view *ret_view)
{
	struct answer a;
	int r = call(req, 0, &a);

	if (r < 0)
		return r;
	if (ret_view != NULL)
		r = api_wire_get_volume(&a.rep, ret_view);
	answer_free(&a);
	return r;
}

static int call_none(struct api_wire_request *req)
{
	return call_volume(req, NULL);
}

int ops_principal_for_tenant(const char *name, struct principal *ret_principal)
{
	struct api_wire_request req;
	struct answer a;
	int r;

	error_clear();
	if (!tp_name_valid(name))
		return fail(-ENOENT, "no such tenant: %.80s", name);
	if ((r = request_init(&req, TP_API_PRINCIPAL_FOR_TENANT, NULL)) < 0)
		return r;
	API_WIRE_SET(req.w.name, name);
	if ((r = call(&req, 0, &a)) < 0)
		return r;
	api_wire_get_principal(&a.rep, ret_principal);
	/* The admin acting for the tenant, as ops.c has it: request_init maps it back. */
	ret_principal->admin = true;
	answer_free(&a);
	return 0;
}

/* A request of OP for P's volume NAME. */
static int volume_request(struct api_wire_request *req, enum tp_api_op op,
                          const struct principal *p, const char *name)
{
	int r;

	error_clear();
	if (!tp_name_valid(name))
		return fail_name("volume", name);
	if ((r = request_init(req, op, p)) < 0)
		return r;
	API_WIRE_SET(req->w.name, name);
	return 0;
}

/* A listing, page by page, each page's records handed to EACH. */
static int call_pages(struct api_wire_request *req,
                      int (*each)(const struct api_wire_reply *rep, void *opaque), void *opaque)
{
	uint64_t cursor = 0;
	struct answer a;
	bool more;
	int r;

	do {
		if ((r = call(req, cursor, &a)) < 0)
			return r;
		cursor = a.rep.w.cursor;
		more = a.rep.w.flags & TP_API_MORE;
		r = each(&a.rep, opaque);
		answer_free(&a);
		if (r < 0)
			return r;
	} while (more);
	return 0;
}

struct volume_fn {
	ops_volume_fn fn;
	void *opaque;
};

static int each_volume(const struct api_wire_reply *rep, void *opaque)
{
	struct volume_fn *f = opaque;

	return api_wire_get_volumes(rep, f->fn, f->opaque);
}

int ops_volume_list(const struct principal *p, const struct label_list *filter, ops_volume_fn fn,
                    void *opaque)
{
	struct api_wire_request req;
	struct volume_fn f = {fn, opaque};
	int r;

	error_clear();
	if ((r = request_init(&req, TP_API_VOLUME_LIST, p)) < 0)
		return r;
	if (api_wire_request_labels(&req, filter) < 0)
		return fail(-EINVAL, "too many labels: %zu, at most %d", filter->n, TP_LABELS_MAX);
	return call_pages(&req, each_volume, &f);
}

int ops_volume_info(const struct principal *p, const char *name, struct volume_view *ret_view)
{
	struct api_wire_request req;
	int r = volume_request(&req, TP_API_VOLUME_INFO, p, name);

	return r < 0 ? r : call_volume(&req, ret_view);
}

struct children_fn {
	ops_children_fn fn;
	void *opaque;
};

static int each_child(const struct api_wire_reply *rep, void *opaque)
{
	struct children_fn *f = opaque;

	return api_wire_get_children(rep, f->fn, f->opaque);
}

int ops_volume_children(const struct principal *p, const char *name, ops_children_fn fn,
                        void *opaque)
{
	struct api_wire_request req;
	struct children_fn f = {fn, opaque};
	int r = volume_request(&req, TP_API_VOLUME_CHILDREN, p, name);

	return r < 0 ? r : call_pages(&req, each_child, &f);
}

int ops_volume_create(const struct principal *p, const char *name, uint64_t size,
                      const struct label_list *labels, struct volume_view *ret_view)
{
	struct api_wire_request req;
	int r = volume_request(&req, TP_API_VOLUME_CREATE, p, name);

	if (r < 0 || (r = check_labels(labels, false)) < 0)
		return r;
	req.w.size = size;
	api_wire_request_labels(&req, labels);
	return call_volume(&req, ret_view);
}

/* REF, which is no reference, refused as daemon/access.c's resolve_ref refuses it. */
static int fail_ref(const char *ref)
{
	const char *slash = strchr(ref, '/');

	if (slash == NULL)
		return fail_name("volume", ref);
	if ((size_t)(slash - ref) > TP_NAME_MAX || !tp_name_valid(slash + 1))
		return fail(-ENOENT, "no such volume: %.130s", ref);
	return fail(-ENOENT, "no such volume: %s", ref);
}

int ops_volume_snapshot(const struct principal *p, const char *name, const char *parent,
                        uint64_t size, const struct label_list *labels,
                        struct volume_view *ret_view)
{
	struct api_wire_request req;
	int r;

	error_clear();
	/* The parent first, as resolve_ref refuses it. */
	if (!tp_broker_ref_valid(parent))
		return fail_ref(parent);
	if ((r = volume_request(&req, TP_API_VOLUME_SNAPSHOT, p, name)) < 0 ||
	    (r = check_labels(labels, false)) < 0)
		return r;
	API_WIRE_SET(req.w.target, parent);
	req.w.size = size;
	api_wire_request_labels(&req, labels);
	return call_volume(&req, ret_view);
}

/* NAME's error if P has no such volume, else R (the error of an input ops checks after
 * it looked NAME up), its code and message kept. */
static int after_lookup(const struct principal *p, const char *name, int r)
{
	char message[sizeof err.message];
	enum tp_error code = err.code;
	struct volume_view v;
	int found;

	memcpy(message, err.message, sizeof message);
	found = ops_volume_info(p, name, &v);
	if (found < 0)
		return found;
	ops_volume_view_clear(&v);
	memcpy(err.message, message, sizeof message);
	err.code = code;
	return r;
}

int ops_volume_commit(const struct principal *p, const char *name, const char *new_name,
                      const struct label_list *labels, struct volume_view *ret_view)
{
	struct api_wire_request req;
	int r = volume_request(&req, TP_API_VOLUME_COMMIT, p, name);

	if (r < 0)
		return r;
	if ((r = check_labels(labels, false)) < 0 ||
	    (new_name != NULL && !tp_name_valid(new_name) && (r = fail_name("volume", new_name))))
		return after_lookup(p, name, r);
	if (new_name != NULL) {
		req.w.flags |= TP_API_TARGET;
		API_WIRE_SET(req.w.target, new_name);
	}
	api_wire_request_labels(&req, labels);
	return call_volume(&req, ret_view);
}

int ops_volume_set_labels(const struct principal *p, const char *name,
                          const struct label_list *patch, struct volume_view *ret_view)
{
	struct api_wire_request req;
	int r = volume_request(&req, TP_API_VOLUME_SET_LABELS, p, name);

	if (r < 0)
		return r;
	if ((r = check_labels(patch, true)) < 0)
		return after_lookup(p, name, r);
	api_wire_request_labels(&req, patch);
	return call_volume(&req, ret_view);
}

int ops_volume_resize(const struct principal *p, const char *name, uint64_t size,
                      struct volume_view *ret_view)
{
	struct api_wire_request req;
	int r = volume_request(&req, TP_API_VOLUME_RESIZE, p, name);

	if (r < 0)
		return r;
	req.w.size = size;
	return call_volume(&req, ret_view);
}

int ops_volume_remove(const struct principal *p, const char *name)
{
	struct api_wire_request req;
	int r = volume_request(&req, TP_API_VOLUME_REMOVE, p, name);

	return r < 0 ? r : call_none(&req);
}

/* A diff gathered page by page: the changes of every page appended, and the volume's size
 * as the last page has it. */
struct diff_gather {
	const char *name;
	struct volume_change *changes;
	size_t n;
	uint64_t size;
	bool any;
};

static int each_change_page(const struct api_wire_reply *rep, void *opaque)
{
	struct diff_gather *g = opaque;
	struct volume_change *grown;
	uint64_t size;

	grown = reallocarray(g->changes, g->n + rep->w.count + 1, sizeof *grown);
	if (grown == NULL)
		return fail(-ENOMEM, "diff volumes: %s", strerror(ENOMEM));
	g->changes = grown;
	api_wire_get_changes(rep, &size, g->changes + g->n);
	/* Volumes only grow: a smaller one is another volume of that name. */
	if (g->any && size < g->size)
		return fail(-EBUSY, "volume %s changed while its diff was read; try again",
		            g->name);
	g->n += rep->w.count;
	g->size = size;
	g->any = true;
	return 0;
}

int ops_volume_diff(const struct principal *p, const char *name, const char *from,
                    struct volume_change **ret_changes, size_t *ret_n, uint64_t *ret_size)
{
	struct api_wire_request req;
	struct diff_gather g = {.name = name};
	int r = volume_request(&req, TP_API_VOLUME_DIFF, p, name);

	if (r < 0)
		return r;
	if (!tp_broker_ref_valid(from))
		return after_lookup(p, name, fail_ref(from));
	API_WIRE_SET(req.w.target, from);
	r = call_pages(&req, each_change_page, &g);
	if (r < 0) {
		free(g.changes);
		return r;
	}
	*ret_changes = g.changes;
	*ret_n = g.n;
	*ret_size = g.size;
	return 0;
}

int ops_volume_usage(const struct principal *p, const char *name, struct volume_usage *ret_usage)
{
	struct api_wire_request req;
	struct answer a;
	int r = volume_request(&req, TP_API_VOLUME_USAGE, p, name);

	if (r < 0 || (r = call(&req, 0, &a)) < 0)
		return r;
	api_wire_get_volume_usage(&a.rep, ret_usage);
	answer_free(&a);
	return 0;
}

/* Ask REQ, which answers with one tenant into RET_VIEW. */
static int call_tenant(struct api_wire_request *req, struct tenant_view *ret_view)
{
	struct answer a;
	int r = call(req, 0, &a);

	if (r < 0)
		return r;
	api_wire_get_tenants(&a.rep, ret_view);
	answer_free(&a);
	return 0;
}

int ops_usage(const struct principal *p, struct tenant_view *ret_view)
{
	struct api_wire_request req;
	int r;

	error_clear();
	if ((r = request_init(&req, TP_API_USAGE, p)) < 0)
		return r;
	return call_tenant(&req, ret_view);
}

/* A request of OP for tenant NAME. */
static int tenant_request(struct api_wire_request *req, enum tp_api_op op, const char *name)
{
	int r;

	error_clear();
	if (!tp_name_valid(name))
		return fail_name("tenant", name);
	if ((r = request_init(req, op, NULL)) < 0)
		return r;
	API_WIRE_SET(req->w.name, name);
	return 0;
}

static int tenant_spec_call(enum tp_api_op op, const struct tenant_spec *spec,
                            struct tenant_view *ret_view)
{
	struct api_wire_request req;
	int r = tenant_request(&req, op, spec->name);

	if (r < 0)
		return r;
	if (spec->has_uid) {
		req.w.flags |= TP_API_HAS_UID;
		req.w.uid = spec->uid;
	}
	if (spec->has_gid) {
		req.w.flags |= TP_API_HAS_GID;
		req.w.gid = spec->gid;
	}
	if (spec->has_max_volumes) {
		req.w.flags |= TP_API_HAS_MAX_VOLUMES;
		req.w.max_volumes = spec->max_volumes;
	}
	if (spec->has_max_size) {
		req.w.flags |= TP_API_HAS_MAX_SIZE;
		req.w.max_size = spec->max_size;
	}
	if (spec->has_max_used) {
		req.w.flags |= TP_API_HAS_MAX_USED;
		req.w.max_used = spec->max_used;
	}
	return call_tenant(&req, ret_view);
}

int ops_tenant_add(const struct tenant_spec *spec, struct tenant_view *ret_view)
{
	return tenant_spec_call(TP_API_TENANT_ADD, spec, ret_view);
}

int ops_tenant_update(const struct tenant_spec *spec, struct tenant_view *ret_view)
{
	return tenant_spec_call(TP_API_TENANT_UPDATE, spec, ret_view);
}

int ops_tenant_get(const char *name, struct tenant_view *ret_view)
{
	struct api_wire_request req;
	int r = tenant_request(&req, TP_API_TENANT_GET, name);

	return r < 0 ? r : call_tenant(&req, ret_view);
}

int ops_tenant_remove(const char *name, bool force)
{
	struct api_wire_request req;
	int r = tenant_request(&req, TP_API_TENANT_REMOVE, name);

	if (r < 0)
		return r;
	if (force)
		req.w.flags |= TP_API_FORCE;
	return call_none(&req);
}

/* A listing gathered into one array: every page appended to *VIEWS (of *N), grown as it
 * comes. */
struct gather {
	void *views;
	size_t n, size;
	int (*get)(const struct api_wire_reply *rep, void *at);
};

static int each_gathered(const struct api_wire_reply *rep, void *opaque)
{
	struct gather *g = opaque;
	unsigned char *grown;
	size_t count = rep->w.count;
	int r;

	if (count == 0)
		return 0;
	grown = realloc(g->views, (g->n + count) * g->size);
	if (grown == NULL)
		return -ENOMEM;
	g->views = grown;
	memset(grown + g->n * g->size, 0, count * g->size);
	if ((r = g->get(rep, grown + g->n * g->size)) < 0)
		return r;
	g->n += count;
	return 0;
}

static int gather(enum tp_api_op op, size_t size, int (*get)(const struct api_wire_reply *, void *),
                  void **ret_views, size_t *ret_n)
{
	struct api_wire_request req;
	struct gather g = {.size = size, .get = get};
	int r;

	error_clear();
	if ((r = request_init(&req, op, NULL)) < 0)
		return r;
	r = call_pages(&req, each_gathered, &g);
	if (r == 0 && g.views == NULL && (g.views = calloc(1, size)) == NULL)
		r = -ENOMEM;
	if (r < 0) {
		if (op == TP_API_IMAGE_LIST)
			ops_image_views_free(g.views, g.n);
		else
			free(g.views);
		return r;
	}
	*ret_views = g.views;
	*ret_n = g.n;
	return 0;
}

static int get_tenants(const struct api_wire_reply *rep, void *at)
{
	api_wire_get_tenants(rep, at);
	return 0;
}

static int get_images(const struct api_wire_reply *rep, void *at)
{
	return api_wire_get_images(rep, at);
}

static int get_grants(const struct api_wire_reply *rep, void *at)
{
	api_wire_get_grants(rep, at);
	return 0;
}

int ops_tenant_list(struct tenant_view **ret_views, size_t *ret_n)
{
	return gather(TP_API_TENANT_LIST, sizeof **ret_views, get_tenants, (void **)ret_views,
	              ret_n);
}

int ops_image_list(struct image_view **ret_views, size_t *ret_n)
{
	return gather(TP_API_IMAGE_LIST, sizeof **ret_views, get_images, (void **)ret_views, ret_n);
}

int ops_grant_list(struct grant_view **ret_views, size_t *ret_n)
{
	return gather(TP_API_GRANT_LIST, sizeof **ret_views, get_grants, (void **)ret_views, ret_n);
}

int ops_pool_status(struct pool_view *ret_view)
{
	struct api_wire_request req;
	struct answer a;
	int r;

	error_clear();
	if ((r = request_init(&req, TP_API_POOL_STATUS, NULL)) < 0 || (r = call(&req, 0, &a)) < 0)
		return r;
	api_wire_get_pool(&a.rep, ret_view);
	answer_free(&a);
	return 0;
}

/* Ask REQ, which answers with one image into RET_VIEW. */
static int call_image(struct api_wire_request *req, struct image_view *ret_view)
{
	struct answer a;
	int r = call(req, 0, &a);

	if (r < 0)
		return r;
	memset(ret_view, 0, sizeof *ret_view);
	r = api_wire_get_images(&a.rep, ret_view);
	answer_free(&a);
	return r;
}

/* A request of OP for image NAME, refused as daemon/images.c's image_by_name does. */
static int image_request(struct api_wire_request *req, enum tp_api_op op, const char *name)
{
	int r;

	error_clear();
	if (!tp_name_valid(name))
		return fail_code(TP_ERROR_INVALID_NAME, -EINVAL, "invalid image name \"%.80s\"",
		                 name);
	if ((r = request_init(req, op, NULL)) < 0)
		return r;
	API_WIRE_SET(req->w.name, name);
	return 0;
}

int ops_image_import(const char *name, const char *path, struct image_view *ret_view)
{
	struct api_wire_request req;
	int r;

	error_clear();
	/* The source first, as daemon/images.c checks it; the name only after. */
	if (path == NULL || path[0] != '/')
		return fail(-EINVAL, "invalid image source: an absolute path on the host");
	if (strlen(path) >= TP_API_PATH_SIZE)
		return fail(-EINVAL, "cannot read %s: %s", path, strerror(ENAMETOOLONG));
	if (!tp_name_valid(name))
		return fail_name("volume", name);
	if ((r = request_init(&req, TP_API_IMAGE_IMPORT, NULL)) < 0)
		return r;
	API_WIRE_SET(req.w.name, name);
	API_WIRE_SET(req.w.path, path);
	return call_image(&req, ret_view);
}

int ops_image_publish(const char *name, const char *tenant, struct image_view *ret_view)
{
	struct api_wire_request req;
	int r = image_request(&req, TP_API_IMAGE_PUBLISH, name);

	if (r < 0)
		return r;
	if (tenant != NULL) {
		if (!tp_name_valid(tenant))
			return fail_name("tenant", tenant);
		req.w.flags |= TP_API_TARGET;
		API_WIRE_SET(req.w.target, tenant);
	}
	return call_image(&req, ret_view);
}

int ops_image_remove(const char *name)
{
	struct api_wire_request req;
	int r = image_request(&req, TP_API_IMAGE_REMOVE, name);

	return r < 0 ? r : call_none(&req);
}

/* A grant or revoke of G, its names refused as daemon/grants.c's grant_target does. */
static int grant_call(enum tp_api_op op, const struct grant_view *g)
{
	struct api_wire_request req;
	int r;

	error_clear();
	if (!tp_name_valid(g->owner))
		return fail_name("tenant", g->owner);
	if (!tp_name_valid(g->to))
		return fail_name("tenant", g->to);
	if (!tp_name_valid(g->volume))
		return fail_code(TP_ERROR_INVALID_NAME, -EINVAL, "invalid volume name \"%.80s\"",
		                 g->volume);
	if ((r = request_init(&req, op, NULL)) < 0)
		return r;
	API_WIRE_SET(req.w.owner, g->owner);
	API_WIRE_SET(req.w.name, g->volume);
	API_WIRE_SET(req.w.target, g->to);
	if (g->write)
		req.w.flags |= TP_API_WRITE;
	return call_none(&req);
}

int ops_grant(const struct grant_view *g)
{
	return grant_call(TP_API_GRANT, g);
}

int ops_revoke(const struct grant_view *g)
{
	return grant_call(TP_API_REVOKE, g);
}

int ops_metrics(char **ret_text)
{
	struct api_wire_request req;
	struct answer a;
	int r;

	error_clear();
	if ((r = request_init(&req, TP_API_METRICS, NULL)) < 0 || (r = call(&req, 0, &a)) < 0)
		return r;
	*ret_text = strdup(api_wire_get_text(&a.rep));
	answer_free(&a);
	return *ret_text == NULL ? -ENOMEM : 0;
}
