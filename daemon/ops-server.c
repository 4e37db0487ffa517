/* The root parent's side of the wire to the API process: see daemon/ops-server.h and
 * include/tp-api-wire.h. The API process may have been taken over, so nothing in a
 * request is trusted but what the decoder checked: the principal is the one the parent
 * gave the named socket, never one the request describes, and the admin's tenant to act
 * for is looked up here. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "api-wire-io.h"
#include "api-wire.h"
#include "log.h"
#include "ops-server.h"

int ops_server_init(struct ops_server *s, const struct principal *sockets, size_t n)
{
	int r = 0;

	memset(s, 0, sizeof *s);
	pthread_mutex_init(&s->lock, NULL);
	for (size_t i = 0; i < n && r == 0; i++)
		r = ops_server_add(s, &sockets[i], &(uint32_t){0});
	if (r < 0)
		ops_server_free(s);
	return r;
}

void ops_server_free(struct ops_server *s)
{
	free(s->sockets);
	s->sockets = NULL;
	s->n = s->cap = 0;
	pthread_mutex_destroy(&s->lock);
}

int ops_server_add(struct ops_server *s, const struct principal *p, uint32_t *ret_index)
{
	int r = 0;

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->n && p->admin; i++)
		if (s->sockets[i].live && s->sockets[i].p.admin)
			r = -EINVAL;
	if (r == 0 && s->n >= UINT32_MAX)
		r = -ENOSPC;
	if (r == 0 && s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 16;
		struct ops_socket *grown = realloc(s->sockets, cap * sizeof *grown);

		if (grown == NULL)
			r = -ENOMEM;
		else {
			s->sockets = grown;
			s->cap = cap;
		}
	}
	if (r == 0) {
		s->sockets[s->n] = (struct ops_socket){.p = *p, .live = true};
		*ret_index = (uint32_t)s->n++;
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

void ops_server_drop(struct ops_server *s, uint32_t index)
{
	pthread_mutex_lock(&s->lock);
	if (index < s->n)
		s->sockets[index] = (struct ops_socket){0};
	pthread_mutex_unlock(&s->lock);
}

/* A page of a listing being written: entries before SKIP are passed over, and the first
 * one that no longer fits ends the page (MORE) and the listing. A diff's page skips bytes
 * instead, and ends at NEXT. */
struct page {
	struct api_wire_writer *w;
	uint64_t skip, seen, next;
	bool more;
};

/* What a listing's callback returns to stop it at a full page. */
#define PAGE_FULL (-ECANCELED)

static int page_add(struct page *pg, int r)
{
	if (r == -E2BIG && pg->w->count > 0) {
		pg->more = true;
		return PAGE_FULL;
	}
	return r == -E2BIG ? -EMSGSIZE : r;
}

static int page_volume(const struct volume_view *v, void *opaque)
{
	struct page *pg = opaque;

	if (pg->seen++ < pg->skip)
		return 0;
	return page_add(pg, api_wire_put_volume(pg->w, v));
}

static int page_child(const char *tenant, uint64_t n, void *opaque)
{
	struct page *pg = opaque;

	if (pg->seen++ < pg->skip)
		return 0;
	return page_add(pg, api_wire_put_child(pg->w, tenant, n));
}

/* The views of a gathered listing (N of SIZE bytes at VIEWS) from SKIP on, through PUT. */
static int page_array(struct page *pg, const void *views, size_t n, size_t size,
                      int (*put)(struct api_wire_writer *, const void *))
{
	for (uint64_t i = pg->skip; i < n; i++) {
		int r = page_add(pg, put(pg->w, (const char *)views + i * size));

		if (r < 0)
			return r == PAGE_FULL ? 0 : r;
	}
	return 0;
}

/* A page of the diff Q asks for: its changes from byte PG->skip on, the first one cut
 * there, as many as the page takes. */
static int page_diff(const struct principal *p, const struct tp_api_request *q, struct page *pg)
{
	struct volume_change *changes = NULL;
	uint64_t size;
	size_t n = 0;
	int r = ops_volume_diff(p, q->name, q->target, &changes, &n, &size);

	if (r == 0)
		r = api_wire_put_diff(pg->w, size, pg->skip);
	pg->next = pg->skip;
	for (size_t i = 0; r == 0 && i < n; i++) {
		struct volume_change c = changes[i];

		if (c.offset + c.length <= pg->skip)
			continue;
		if (c.offset < pg->skip) {
			c.length -= pg->skip - c.offset;
			c.offset = pg->skip;
		}
		if ((r = page_add(pg, api_wire_put_change(pg->w, &c))) == 0)
			pg->next = c.offset + c.length;
	}
	free(changes);
	return r == PAGE_FULL ? 0 : r;
}

static int put_tenant(struct api_wire_writer *w, const void *v)
{
	return api_wire_put_tenant(w, v);
}

static int put_image(struct api_wire_writer *w, const void *v)
{
	return api_wire_put_image(w, v);
}

static int put_grant(struct api_wire_writer *w, const void *v)
{
	return api_wire_put_grant(w, v);
}

/* The ops call REQ asks for, as P, its records into W (a listing's page into PG).
 * Returns the call's result. */
static int run(const struct api_wire_request *req, const struct principal *p,
               struct api_wire_writer *w, struct page *pg)
{
	const struct tp_api_request *q = &req->w;
	const struct label_list *labels = q->flags & TP_API_LABELS ? &req->labels : NULL;
	struct tenant_spec spec = {
	    .name = q->name,
	    .has_uid = q->flags & TP_API_HAS_UID,
	    .has_gid = q->flags & TP_API_HAS_GID,
	    .has_max_volumes = q->flags & TP_API_HAS_MAX_VOLUMES,
	    .has_max_size = q->flags & TP_API_HAS_MAX_SIZE,
	    .has_max_used = q->flags & TP_API_HAS_MAX_USED,
	    .uid = q->uid,
	    .gid = q->gid,
	    .max_volumes = q->max_volumes,
	    .max_size = q->max_size,
	    .max_used = q->max_used,
	};
	struct grant_view g = {.write = q->flags & TP_API_WRITE};
	struct volume_usage vu;
	struct volume_view v = {0};
	struct tenant_view t;
	struct pool_view pv;
	struct image_view im = {0}, *images;
	struct tenant_view *tenants;
	struct grant_view *grants;
	struct principal pr;
	char *text;
	size_t n;
	int r;

	switch ((enum tp_api_op)q->h.op) {
	case TP_API_VOLUME_LIST:
		r = ops_volume_list(p, labels, page_volume, pg);
		return r == PAGE_FULL && pg->more ? 0 : r;
	case TP_API_VOLUME_CHILDREN:
		r = ops_volume_children(p, q->name, page_child, pg);
		return r == PAGE_FULL && pg->more ? 0 : r;
	case TP_API_VOLUME_INFO:
		r = ops_volume_info(p, q->name, &v);
		break;
	case TP_API_VOLUME_CREATE:
		r = ops_volume_create(p, q->name, q->size, labels, &v);
		break;
	case TP_API_VOLUME_SNAPSHOT:
		r = ops_volume_snapshot(p, q->name, q->target, q->size, labels, &v);
		break;
	case TP_API_VOLUME_COMMIT:
		r = ops_volume_commit(p, q->name, q->flags & TP_API_TARGET ? q->target : NULL,
		                      labels, &v);
		break;
	case TP_API_VOLUME_SET_LABELS:
		r = ops_volume_set_labels(p, q->name, labels, &v);
		break;
	case TP_API_VOLUME_RESIZE:
		r = ops_volume_resize(p, q->name, q->size, &v);
		break;
	case TP_API_VOLUME_REMOVE:
		return ops_volume_remove(p, q->name);
	case TP_API_VOLUME_DIFF:
		return page_diff(p, q, pg);
	case TP_API_VOLUME_USAGE:
		r = ops_volume_usage(p, q->name, &vu);
		return r < 0 ? r : api_wire_put_volume_usage(w, &vu);
	case TP_API_USAGE:
		r = ops_usage(p, &t);
		return r < 0 ? r : api_wire_put_tenant(w, &t);
	case TP_API_TENANT_ADD:
		r = ops_tenant_add(&spec, &t);
		return r < 0 ? r : api_wire_put_tenant(w, &t);
	case TP_API_TENANT_UPDATE:
		r = ops_tenant_update(&spec, &t);
		return r < 0 ? r : api_wire_put_tenant(w, &t);
	case TP_API_TENANT_GET:
		r = ops_tenant_get(q->name, &t);
		return r < 0 ? r : api_wire_put_tenant(w, &t);
	case TP_API_TENANT_LIST:
		if ((r = ops_tenant_list(&tenants, &n)) < 0)
			return r;
		r = page_array(pg, tenants, n, sizeof *tenants, put_tenant);
		free(tenants);
		return r;
	case TP_API_TENANT_REMOVE:
		return ops_tenant_remove(q->name, q->flags & TP_API_FORCE);
	case TP_API_POOL_STATUS:
		r = ops_pool_status(&pv);
		return r < 0 ? r : api_wire_put_pool(w, &pv);
	case TP_API_IMAGE_IMPORT:
		r = ops_image_import(q->name, q->path, &im);
		goto image;
	case TP_API_IMAGE_PUBLISH:
		r = ops_image_publish(q->name, q->flags & TP_API_TARGET ? q->target : NULL, &im);
	image:
		if (r == 0)
			r = api_wire_put_image(w, &im);
		free(im.published);
		return r;
	case TP_API_IMAGE_LIST:
		if ((r = ops_image_list(&images, &n)) < 0)
			return r;
		r = page_array(pg, images, n, sizeof *images, put_image);
		ops_image_views_free(images, n);
		return r;
	case TP_API_IMAGE_REMOVE:
		return ops_image_remove(q->name);
	case TP_API_GRANT:
	case TP_API_REVOKE:
		memcpy(g.owner, q->owner, sizeof g.owner);
		memcpy(g.volume, q->name, sizeof g.volume);
		memcpy(g.to, q->target, sizeof g.to);
		return q->h.op == TP_API_GRANT ? ops_grant(&g) : ops_revoke(&g);
	case TP_API_GRANT_LIST:
		if ((r = ops_grant_list(&grants, &n)) < 0)
			return r;
		r = page_array(pg, grants, n, sizeof *grants, put_grant);
		free(grants);
		return r;
	case TP_API_METRICS:
		if ((r = ops_metrics(&text)) < 0)
			return r;
		r = api_wire_put_text(w, text);
		free(text);
		return r;
	case TP_API_PRINCIPAL_FOR_TENANT:
		r = ops_principal_for_tenant(q->name, &pr);
		/* The wire carries the tenant; the API process marks it the admin's again. */
		pr.admin = false;
		return r < 0 ? r : api_wire_put_principal(w, &pr);
	default:
		return -EINVAL; /* the decoder lets no other op through */
	}
	/* The operations that answer with one volume. */
	if (r == 0)
		r = api_wire_put_volume(w, &v);
	ops_volume_view_clear(&v);
	return r;
}

/* May socket SOCK ask for REQ? The reason if not; its principal into *RET_P if so. */
static const char *refusal(struct ops_server *s, const struct api_wire_request *req,
                           struct principal *ret_p)
{
	uint32_t sock = req->w.socket;
	const char *why = NULL;

	pthread_mutex_lock(&s->lock);
	if (sock >= s->n || !s->sockets[sock].live)
		why = "no such socket";
	else if (!api_wire_op_has_principal(req->w.h.op) && !s->sockets[sock].p.admin)
		why = "an admin operation from a tenant's socket";
	else if (req->w.acting_for[0] != '\0' && !s->sockets[sock].p.admin)
		why = "acting for a tenant from a tenant's socket";
	else
		*ret_p = s->sockets[sock].p;
	pthread_mutex_unlock(&s->lock);
	return why;
}

/* Encode the answer to REQ into *RET_BUF, *RET_LEN: its records, or its error. */
static int answer(struct ops_server *s, const struct api_wire_request *req, void **ret_buf,
                  size_t *ret_len)
{
	enum tp_api_op op = req->w.h.op;
	struct principal socket_p, acting;
	const char *why = refusal(s, req, &socket_p);
	struct api_wire_writer w;
	struct page pg = {.w = &w, .skip = req->w.cursor};
	const struct principal *p = NULL;
	int r;

	if (why != NULL) {
		log_msg(LOG_WARNING, "API process: request %u refused: %s (socket %" PRIu32 ")",
		        (unsigned)op, why, req->w.socket);
		return api_wire_encode_error(op, req->w.h.id, -EPERM, tp_error_of_errno(-EPERM),
		                             "refused: not this socket's to ask", ret_buf, ret_len);
	}
	if ((r = api_wire_reply_begin(&w, op, req->w.h.id)) < 0)
		return r;
	if (api_wire_op_has_principal(op)) {
		p = &socket_p;
		if (req->w.acting_for[0] != '\0') {
			r = ops_principal_for_tenant(req->w.acting_for, &acting);
			p = &acting;
		}
	}
	if (r == 0)
		r = run(req, p, &w, &pg);
	if (r == 0 && op != TP_API_VOLUME_DIFF)
		pg.next = api_wire_op_is_listing(op) ? pg.skip + w.count : 0;
	if (r == 0)
		r = api_wire_reply_end(&w, pg.more, pg.next, ret_buf, ret_len);
	api_wire_writer_free(&w);
	if (r == 0)
		return 0;
	if (r == -E2BIG || r == -EMSGSIZE || (r == -EINVAL && *ops_error_message() == '\0')) {
		/* A record the wire cannot carry: a bug here or in ops, not the asker's. */
		log_errno(LOG_ERR, r, "API process: answer to request %u not encodable: %m",
		          (unsigned)op);
		return api_wire_encode_error(op, req->w.h.id, -EIO, TP_ERROR_INTERNAL,
		                             "the answer could not be sent", ret_buf, ret_len);
	}
	return api_wire_encode_error(op, req->w.h.id, r, ops_error_code(r), ops_error_message(),
	                             ret_buf, ret_len);
}

int ops_server_serve_one(struct ops_server *s, int fd)
{
	struct api_wire_request *req;
	void *in = NULL, *out = NULL;
	size_t in_len, out_len;
	int r;

	r = api_wire_recv(fd, TP_API_REQUEST_MAX, &in, &in_len);
	if (r < 0)
		return r;
	req = malloc(sizeof *req);
	if (req == NULL) {
		free(in);
		return -ENOMEM;
	}
	r = api_wire_decode_request(in, in_len, req);
	if (r == 0)
		r = answer(s, req, &out, &out_len);
	if (r == 0)
		r = api_wire_send(fd, out, out_len);
	free(out);
	free(req);
	free(in);
	return r;
}

int ops_server_run(struct ops_server *s, int fd)
{
	int r;

	while ((r = ops_server_serve_one(s, fd)) == 0)
		;
	return r == -EPIPE ? 0 : r;
}
