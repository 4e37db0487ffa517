/* The codec of the parent's wire to the API process (include/tp-api-wire.h): requests and
 * replies, to the byte. The API process may be a tenant's by then, so the parent's
 * decoder reads nothing it has not bounded first and accepts exactly one encoding of
 * each request; the API process checks the parent's replies as closely, so that a bug on
 * either side shows as a refused message rather than as a wrong answer. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api-wire.h"
#include "tp-broker.h"

/* The strings of ops.h's views that travel as indexes: every value ops gives them. */
static const char *const volume_states[] = {"creating",  "ready", "committed", "deleting",
                                            "importing", "image", "unknown"};
static const char *const nbd_states[] = {"stopped",    "running", "failed",
                                         "restarting", "unknown", "idle"};
static const char *const meta_states[] = {"ok", "warning", "full"};
static const char *const pool_modes[] = {"rw", "ro", "out_of_data_space"};
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* The index of S in LIST of N, or -1. */
static int index_of(const char *const *list, size_t n, const char *s)
{
	for (size_t i = 0; s != NULL && i < n; i++)
		if (strcmp(list[i], s) == 0)
			return (int)i;
	return -1;
}

/* What each operation's request may carry and its reply holds. */
enum record {
	R_NONE,
	R_VOLUME,
	R_CHILD,
	R_TENANT,
	R_POOL,
	R_IMAGE,
	R_GRANT,
	R_PRINCIPAL,
	R_TEXT,
	R_CHANGE, /* after the diff's size */
	R_VOLUME_USAGE,
};
enum target { T_NONE, T_NAME, T_NAME_OPTIONAL, T_REF };
enum labels { L_NONE, L_SET, L_PATCH, L_FILTER };
#define F_SIZE   0x1u
#define F_CURSOR 0x2u
#define F_QUOTA  0x4u /* uid, gid, max_* */
#define F_OWNER  0x8u
#define F_NAME   0x10u
#define F_PATH   0x20u
#define HAS_ALL                                                                           \
	(TP_API_HAS_UID | TP_API_HAS_GID | TP_API_HAS_MAX_VOLUMES | TP_API_HAS_MAX_SIZE | \
	 TP_API_HAS_MAX_USED)

struct op_spec {
	bool principal, listing;
	unsigned fields;
	uint32_t flags;
	enum target target;
	enum labels labels;
	enum record reply;
};

static const struct op_spec specs[TP_API_OP_MAX + 1] = {
    [TP_API_VOLUME_LIST] = {true, true, F_CURSOR, TP_API_LABELS, T_NONE, L_FILTER, R_VOLUME},
    [TP_API_VOLUME_INFO] = {true, false, F_NAME, 0, T_NONE, L_NONE, R_VOLUME},
    [TP_API_VOLUME_CHILDREN] = {true, true, F_NAME | F_CURSOR, 0, T_NONE, L_NONE, R_CHILD},
    [TP_API_VOLUME_CREATE] = {true, false, F_NAME | F_SIZE, TP_API_LABELS, T_NONE, L_SET, R_VOLUME},
    [TP_API_VOLUME_SNAPSHOT] = {true, false, F_NAME | F_SIZE, TP_API_LABELS, T_REF, L_SET,
                                R_VOLUME},
    [TP_API_VOLUME_COMMIT] = {true, false, F_NAME, TP_API_LABELS | TP_API_TARGET, T_NAME_OPTIONAL,
                              L_SET, R_VOLUME},
    [TP_API_VOLUME_SET_LABELS] = {true, false, F_NAME, TP_API_LABELS, T_NONE, L_PATCH, R_VOLUME},
    [TP_API_VOLUME_RESIZE] = {true, false, F_NAME | F_SIZE, 0, T_NONE, L_NONE, R_VOLUME},
    [TP_API_VOLUME_REMOVE] = {true, false, F_NAME, 0, T_NONE, L_NONE, R_NONE},
    [TP_API_USAGE] = {true, false, 0, 0, T_NONE, L_NONE, R_TENANT},
    [TP_API_TENANT_ADD] = {false, false, F_NAME | F_QUOTA, HAS_ALL, T_NONE, L_NONE, R_TENANT},
    [TP_API_TENANT_GET] = {false, false, F_NAME, 0, T_NONE, L_NONE, R_TENANT},
    [TP_API_TENANT_LIST] = {false, true, F_CURSOR, 0, T_NONE, L_NONE, R_TENANT},
    [TP_API_TENANT_UPDATE] = {false, false, F_NAME | F_QUOTA, HAS_ALL, T_NONE, L_NONE, R_TENANT},
    [TP_API_TENANT_REMOVE] = {false, false, F_NAME, TP_API_FORCE, T_NONE, L_NONE, R_NONE},
    [TP_API_POOL_STATUS] = {false, false, 0, 0, T_NONE, L_NONE, R_POOL},
    [TP_API_IMAGE_IMPORT] = {false, false, F_NAME | F_PATH, 0, T_NONE, L_NONE, R_IMAGE},
    [TP_API_IMAGE_PUBLISH] = {false, false, F_NAME, TP_API_TARGET, T_NAME_OPTIONAL, L_NONE,
                              R_IMAGE},
    [TP_API_IMAGE_LIST] = {false, true, F_CURSOR, 0, T_NONE, L_NONE, R_IMAGE},
    [TP_API_IMAGE_REMOVE] = {false, false, F_NAME, 0, T_NONE, L_NONE, R_NONE},
    [TP_API_GRANT] = {false, false, F_OWNER | F_NAME, TP_API_WRITE, T_NAME, L_NONE, R_NONE},
    [TP_API_REVOKE] = {false, false, F_OWNER | F_NAME, TP_API_WRITE, T_NAME, L_NONE, R_NONE},
    [TP_API_GRANT_LIST] = {false, true, F_CURSOR, 0, T_NONE, L_NONE, R_GRANT},
    [TP_API_METRICS] = {false, false, 0, 0, T_NONE, L_NONE, R_TEXT},
    [TP_API_PRINCIPAL_FOR_TENANT] = {false, false, F_NAME, 0, T_NONE, L_NONE, R_PRINCIPAL},
    [TP_API_VOLUME_DIFF] = {true, true, F_NAME | F_CURSOR, 0, T_REF, L_NONE, R_CHANGE},
    [TP_API_VOLUME_USAGE] = {true, false, F_NAME, 0, T_NONE, L_NONE, R_VOLUME_USAGE},
};

static const struct op_spec *spec_of(unsigned op)
{
	return op >= 1 && op <= TP_API_OP_MAX ? &specs[op] : NULL;
}

bool api_wire_op_has_principal(enum tp_api_op op)
{
	const struct op_spec *s = spec_of(op);

	return s != NULL && s->principal;
}

bool api_wire_op_is_listing(enum tp_api_op op)
{
	const struct op_spec *s = spec_of(op);

	return s != NULL && s->listing;
}

/* The most records of KIND a page holds. */
static uint32_t page_max(enum record kind)
{
	return kind == R_CHANGE ? TP_API_CHANGES_MAX : TP_API_PAGE_MAX;
}

/* Reading: a cursor over the received bytes that never moves past their end. */
struct rd {
	const unsigned char *p;
	size_t left;
};

/* The next N bytes, or NULL if fewer are left. */
static const void *take(struct rd *r, size_t n)
{
	const void *p = r->p;

	if (n > r->left)
		return NULL;
	r->p += n;
	r->left -= n;
	return p;
}

static bool take_copy(struct rd *r, void *dst, size_t n)
{
	const void *p = take(r, n);

	if (p == NULL)
		return false;
	memcpy(dst, p, n);
	return true;
}

/* A fixed field holding a valid name; "" too if EMPTY_OK. */
static bool name_field_ok(const char *s, size_t size, bool empty_ok)
{
	return tp_broker_field_ok(s, size) && ((empty_ok && s[0] == '\0') || tp_name_valid(s));
}

static bool ref_field_ok(const char *s, size_t size, bool empty_ok)
{
	return tp_broker_field_ok(s, size) &&
	       ((empty_ok && s[0] == '\0') || tp_broker_ref_valid(s));
}

/* N labels of KIND into OUT (strings pointing into the buffer). */
static int read_labels(struct rd *r, uint32_t n, enum labels kind, struct tp_label *out)
{
	if (n > TP_LABELS_MAX)
		return -EBADMSG;
	for (uint32_t i = 0; i < n; i++) {
		struct tp_api_label l;
		const char *key, *value = NULL;

		if (!take_copy(r, &l, sizeof l) || l.reserved != 0 ||
		    (l.flags & ~TP_API_HAS_VALUE) != 0)
			return -EBADMSG;
		if (!(l.flags & TP_API_HAS_VALUE) && (l.value_len != 0 || kind == L_SET))
			return -EBADMSG;
		key = take(r, (size_t)l.key_len + 1);
		if (key == NULL || key[l.key_len] != '\0')
			return -EBADMSG;
		if (l.flags & TP_API_HAS_VALUE) {
			value = take(r, (size_t)l.value_len + 1);
			if (value == NULL || value[l.value_len] != '\0')
				return -EBADMSG;
		}
		/* A NUL inside either is no valid UTF-8 of a label: refused here. */
		if (tp_label_invalid(key, l.key_len, value, l.value_len) != NULL)
			return -EBADMSG;
		for (uint32_t j = 0; kind != L_FILTER && j < i; j++)
			if (strcmp(out[j].key, key) == 0)
				return -EBADMSG;
		out[i].key = key;
		out[i].value = value;
	}
	return 0;
}

/* Writing: a growing buffer that never grows past TP_API_MESSAGE_MAX. */
static int append(struct api_wire_writer *w, const void *p, size_t n)
{
	if (n > TP_API_MESSAGE_MAX - w->len)
		return -E2BIG;
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap : 4096;
		unsigned char *b;

		while (cap < w->len + n)
			cap *= 2;
		b = realloc(w->buf, cap);
		if (b == NULL)
			return -ENOMEM;
		w->buf = b;
		w->cap = cap;
	}
	memcpy(w->buf + w->len, p, n);
	w->len += n;
	return 0;
}

/* LABELS (N) as KIND would decode them; -EINVAL for one the decoder would refuse. */
static int put_labels(struct api_wire_writer *w, const struct tp_label *labels, size_t n,
                      enum labels kind)
{
	if (n > TP_LABELS_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		size_t kn = strlen(labels[i].key),
		       vn = labels[i].value ? strlen(labels[i].value) : 0;
		struct tp_api_label l = {0};
		int r;

		if (tp_label_invalid(labels[i].key, kn, labels[i].value, vn) != NULL ||
		    (labels[i].value == NULL && kind == L_SET))
			return -EINVAL;
		for (size_t j = 0; kind != L_FILTER && j < i; j++)
			if (strcmp(labels[j].key, labels[i].key) == 0)
				return -EINVAL;
		l.key_len = (uint16_t)kn;
		l.value_len = (uint16_t)vn;
		l.flags = labels[i].value ? TP_API_HAS_VALUE : 0;
		if ((r = append(w, &l, sizeof l)) < 0 || (r = append(w, labels[i].key, kn + 1)) < 0)
			return r;
		if (labels[i].value && (r = append(w, labels[i].value, vn + 1)) < 0)
			return r;
	}
	return 0;
}

static int check_header(const void *buf, size_t len, size_t min, size_t max,
                        struct tp_api_header *ret_h)
{
	struct tp_api_header h;

	if (len < min || len > max)
		return -EBADMSG;
	memcpy(&h, buf, sizeof h);
	if (h.magic != TP_API_MAGIC || h.version != TP_API_VERSION || h.length != len)
		return -EBADMSG;
	*ret_h = h;
	return 0;
}

int api_wire_message_length(const void *buf, size_t len, size_t max, uint32_t *ret_length)
{
	struct tp_api_header h;

	if (len < sizeof h)
		return -EBADMSG;
	memcpy(&h, buf, sizeof h);
	if (h.magic != TP_API_MAGIC || h.version != TP_API_VERSION || h.length < sizeof h ||
	    h.length > max || h.length > TP_API_MESSAGE_MAX)
		return -EBADMSG;
	*ret_length = h.length;
	return 0;
}

/* Requests */

void api_wire_request_init(struct api_wire_request *req, enum tp_api_op op, uint32_t id,
                           uint32_t socket)
{
	memset(req, 0, sizeof *req);
	req->w.h.magic = TP_API_MAGIC;
	req->w.h.version = TP_API_VERSION;
	req->w.h.op = (uint16_t)op;
	req->w.h.id = id;
	req->w.socket = socket;
}

int api_wire_set_string(char *field, size_t size, const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n >= size)
		return -EINVAL;
	memset(field, 0, size);
	memcpy(field, s ? s : "", n);
	return 0;
}

int api_wire_request_labels(struct api_wire_request *req, const struct label_list *labels)
{
	req->w.flags &= ~TP_API_LABELS;
	req->w.n_labels = 0;
	req->labels.l = NULL;
	req->labels.n = 0;
	if (labels == NULL)
		return 0;
	if (labels->n > TP_LABELS_MAX)
		return -EINVAL;
	if (labels->n > 0)
		memcpy(req->label, labels->l, labels->n * sizeof *labels->l);
	req->w.flags |= TP_API_LABELS;
	req->w.n_labels = (uint32_t)labels->n;
	req->labels.l = req->label;
	req->labels.n = labels->n;
	return 0;
}

/* The request's fixed part W, as a decoder sees it. */
static int check_request(const struct tp_api_request *w, const struct op_spec **ret_spec)
{
	const struct op_spec *s = spec_of(w->h.op);
	uint32_t has = w->flags;

	if (s == NULL || (w->flags & ~s->flags) != 0 || w->reserved != 0)
		return -EBADMSG;
	if (!name_field_ok(w->acting_for, sizeof w->acting_for, true) ||
	    (!s->principal && w->acting_for[0] != '\0'))
		return -EBADMSG;
	if ((!(s->fields & F_SIZE) && w->size != 0) || (!(s->fields & F_CURSOR) && w->cursor != 0))
		return -EBADMSG;
	/* Quotas: a field not given is zero (and none is given but in a tenant spec). */
	if ((!(has & TP_API_HAS_UID) && w->uid != 0) || (!(has & TP_API_HAS_GID) && w->gid != 0) ||
	    (!(has & TP_API_HAS_MAX_VOLUMES) && w->max_volumes != 0) ||
	    (!(has & TP_API_HAS_MAX_SIZE) && w->max_size != 0) ||
	    (!(has & TP_API_HAS_MAX_USED) && w->max_used != 0))
		return -EBADMSG;
	if (!(has & TP_API_LABELS) ? w->n_labels != 0 : w->n_labels > TP_LABELS_MAX)
		return -EBADMSG;
	if (s->labels == L_PATCH && !(has & TP_API_LABELS))
		return -EBADMSG;
	if (s->fields & F_OWNER ? !name_field_ok(w->owner, sizeof w->owner, false)
	                        : !tp_broker_field_zero(w->owner, sizeof w->owner))
		return -EBADMSG;
	if (s->fields & F_NAME ? !name_field_ok(w->name, sizeof w->name, false)
	                       : !tp_broker_field_zero(w->name, sizeof w->name))
		return -EBADMSG;
	if (s->fields & F_PATH ? !tp_broker_field_ok(w->path, sizeof w->path) || w->path[0] == '\0'
	                       : !tp_broker_field_zero(w->path, sizeof w->path))
		return -EBADMSG;
	switch (s->target) {
	case T_NONE:
		if (!tp_broker_field_zero(w->target, sizeof w->target))
			return -EBADMSG;
		break;
	case T_NAME_OPTIONAL:
		if (!(has & TP_API_TARGET)) {
			if (!tp_broker_field_zero(w->target, sizeof w->target))
				return -EBADMSG;
			break;
		}
		/* fall through */
	case T_NAME:
		if (!name_field_ok(w->target, sizeof w->target, false))
			return -EBADMSG;
		break;
	case T_REF:
		if (!ref_field_ok(w->target, sizeof w->target, false))
			return -EBADMSG;
		break;
	}
	*ret_spec = s;
	return 0;
}

int api_wire_decode_request(const void *buf, size_t len, struct api_wire_request *ret_req)
{
	const struct op_spec *s;
	struct rd r;
	int e;

	if ((e = check_header(buf, len, sizeof ret_req->w, TP_API_REQUEST_MAX, &ret_req->w.h)) < 0)
		return e;
	memcpy(&ret_req->w, buf, sizeof ret_req->w);
	if (check_request(&ret_req->w, &s) < 0)
		return -EBADMSG;
	r.p = (const unsigned char *)buf + sizeof ret_req->w;
	r.left = len - sizeof ret_req->w;
	if (read_labels(&r, ret_req->w.n_labels, s->labels, ret_req->label) < 0 || r.left != 0)
		return -EBADMSG;
	ret_req->labels.l = ret_req->w.flags & TP_API_LABELS ? ret_req->label : NULL;
	ret_req->labels.n = ret_req->w.n_labels;
	return 0;
}

int api_wire_encode_request(const struct api_wire_request *req, void **ret_buf, size_t *ret_len)
{
	struct api_wire_writer w = {0};
	struct tp_api_request fixed = req->w;
	const struct op_spec *s = spec_of(req->w.h.op);
	struct api_wire_request *check;
	int r;

	if (s == NULL || (req->w.flags & TP_API_LABELS ? req->labels.n : 0) != req->w.n_labels)
		return -EINVAL;
	if ((r = append(&w, &fixed, sizeof fixed)) < 0 ||
	    (r = put_labels(&w, req->labels.l, req->w.n_labels,
	                    s->labels == L_NONE ? L_SET : s->labels)) < 0)
		goto fail;
	fixed.h.length = (uint32_t)w.len;
	memcpy(w.buf, &fixed, sizeof fixed);
	/* What the parent would refuse is refused here, so that the API process learns of
	 * its own bug rather than losing its connection. */
	check = malloc(sizeof *check);
	if (check == NULL) {
		r = -ENOMEM;
		goto fail;
	}
	r = api_wire_decode_request(w.buf, w.len, check);
	free(check);
	if (r < 0) {
		r = -EINVAL;
		goto fail;
	}
	*ret_buf = w.buf;
	*ret_len = w.len;
	return 0;
fail:
	free(w.buf);
	return r == -E2BIG ? -EINVAL : r;
}

/* Replies: the records, read (and checked) into ops.h's views. */

/* A volume record into V, its labels into LABELS (pointing into the buffer); an image's
 * has none. */
static int read_volume(struct rd *r, bool image, struct volume_view *v, struct tp_label *labels)
{
	struct tp_api_volume rec;

	if (!take_copy(r, &rec, sizeof rec) || !ref_field_ok(rec.name, sizeof rec.name, false) ||
	    !name_field_ok(rec.owner, sizeof rec.owner, true) ||
	    !ref_field_ok(rec.parent, sizeof rec.parent, true) ||
	    rec.state >= N_OF(volume_states) || (rec.flags & ~TP_API_WRITABLE) != 0 ||
	    rec.reserved != 0 || (image && rec.n_labels != 0) ||
	    read_labels(r, rec.n_labels, L_SET, labels) < 0)
		return -EBADMSG;
	memset(v, 0, sizeof *v);
	memcpy(v->name, rec.name, sizeof v->name);
	memcpy(v->owner, rec.owner, sizeof v->owner);
	memcpy(v->parent, rec.parent, sizeof v->parent);
	v->size = rec.size;
	v->used = rec.used;
	v->state = volume_states[rec.state];
	v->created = rec.created;
	v->updated = rec.updated;
	v->writable = rec.flags & TP_API_WRITABLE;
	v->thin_id = rec.thin_id;
	v->labels = rec.n_labels ? labels : NULL;
	v->n_labels = rec.n_labels;
	return 0;
}

/* An image record into IM; its publications stay in the buffer, at *RET_PUBLISHED. */
static int read_image(struct rd *r, struct image_view *im, const char **ret_published)
{
	struct tp_api_image rec;
	const char *names;

	if (read_volume(r, true, &im->volume, NULL) < 0 || !take_copy(r, &rec, sizeof rec) ||
	    (rec.flags & ~TP_API_ALL) != 0 || rec.n_published > TP_API_PUBLISHED_MAX)
		return -EBADMSG;
	names = take(r, (size_t)rec.n_published * TP_API_NAME_SIZE);
	if (names == NULL)
		return -EBADMSG;
	for (uint32_t i = 0; i < rec.n_published; i++)
		if (!name_field_ok(names + (size_t)i * TP_API_NAME_SIZE, TP_API_NAME_SIZE, false))
			return -EBADMSG;
	im->imported = rec.imported;
	im->published_all = rec.flags & TP_API_ALL;
	im->n_published = rec.n_published;
	im->published = NULL;
	*ret_published = names;
	return 0;
}

static int read_tenant(struct rd *r, struct tenant_view *t)
{
	struct tp_api_tenant rec;

	if (!take_copy(r, &rec, sizeof rec) || !name_field_ok(rec.name, sizeof rec.name, false) ||
	    rec.nbd >= N_OF(nbd_states) || (rec.flags & ~TP_API_TENANT_ALLOCATED) != 0 ||
	    (!(rec.flags & TP_API_TENANT_ALLOCATED) && rec.allocated != 0))
		return -EBADMSG;
	memcpy(t->name, rec.name, sizeof t->name);
	t->uid = rec.uid;
	t->gid = rec.gid;
	t->nbd_uid = rec.nbd_uid;
	t->max_volumes = rec.max_volumes;
	t->max_size = rec.max_size;
	t->max_used = rec.max_used;
	t->volumes = rec.volumes;
	t->size = rec.size;
	t->used = rec.used;
	t->has_allocated = rec.flags & TP_API_TENANT_ALLOCATED;
	t->allocated = rec.allocated;
	t->nbd = nbd_states[rec.nbd];
	t->created = rec.created;
	return 0;
}

static int read_pool(struct rd *r, struct pool_view *p)
{
	struct tp_api_pool rec;

	if (!take_copy(r, &rec, sizeof rec) || !tp_broker_field_ok(rec.name, sizeof rec.name) ||
	    rec.meta_state >= N_OF(meta_states) || rec.mode >= N_OF(pool_modes) ||
	    (rec.flags & ~TP_API_NEEDS_CHECK) != 0)
		return -EBADMSG;
	memcpy(p->name, rec.name, sizeof p->name);
	p->transaction_id = rec.transaction_id;
	p->block_size = rec.block_size;
	p->data_used = rec.data_used;
	p->data_total = rec.data_total;
	p->meta_used = rec.meta_used;
	p->meta_total = rec.meta_total;
	p->meta_limit = rec.meta_limit;
	p->meta_state = meta_states[rec.meta_state];
	p->mode = pool_modes[rec.mode];
	p->needs_check = rec.flags & TP_API_NEEDS_CHECK;
	p->min_free = rec.min_free;
	p->volumes = rec.volumes;
	return 0;
}

static int read_grant(struct rd *r, struct grant_view *g)
{
	struct tp_api_grant rec;

	if (!take_copy(r, &rec, sizeof rec) || !name_field_ok(rec.owner, sizeof rec.owner, false) ||
	    !name_field_ok(rec.volume, sizeof rec.volume, false) ||
	    !name_field_ok(rec.to, sizeof rec.to, false) ||
	    (rec.flags & ~TP_API_GRANT_WRITE) != 0 || rec.reserved != 0)
		return -EBADMSG;
	memcpy(g->owner, rec.owner, sizeof g->owner);
	memcpy(g->volume, rec.volume, sizeof g->volume);
	memcpy(g->to, rec.to, sizeof g->to);
	g->write = rec.flags & TP_API_GRANT_WRITE;
	return 0;
}

static int read_child(struct rd *r, struct tp_api_child *c)
{
	if (!take_copy(r, c, sizeof *c) || !name_field_ok(c->tenant, sizeof c->tenant, false))
		return -EBADMSG;
	return 0;
}

static int read_principal(struct rd *r, struct principal *p)
{
	struct tp_api_principal rec;

	if (!take_copy(r, &rec, sizeof rec) || rec.tenant_id <= 0 ||
	    !name_field_ok(rec.tenant, sizeof rec.tenant, false))
		return -EBADMSG;
	memset(p, 0, sizeof *p);
	p->tenant_id = rec.tenant_id;
	memcpy(p->tenant, rec.tenant, sizeof p->tenant);
	return 0;
}

static int read_text(struct rd *r, const char **ret_text)
{
	struct tp_api_text rec;
	const char *text;

	if (!take_copy(r, &rec, sizeof rec) || rec.reserved != 0 || rec.text_len > TP_API_TEXT_MAX)
		return -EBADMSG;
	text = take(r, (size_t)rec.text_len + 1);
	if (text == NULL || text[rec.text_len] != '\0' || memchr(text, '\0', rec.text_len) != NULL)
		return -EBADMSG;
	*ret_text = text;
	return 0;
}

static int read_volume_usage(struct rd *r, struct volume_usage *u)
{
	struct tp_api_volume_usage rec;

	if (!take_copy(r, &rec, sizeof rec) || rec.exclusive > rec.mapped ||
	    rec.shared != rec.mapped - rec.exclusive)
		return -EBADMSG;
	*u = (struct volume_usage){
	    .mapped = rec.mapped, .exclusive = rec.exclusive, .shared = rec.shared};
	return 0;
}

/* A diff's size and its COUNT changes from byte FROM on, in order, none overlapping another,
 * within the size; into RET_CHANGES if not NULL. *RET_END: where the last one ends (FROM if
 * there is none). */
static int read_changes(struct rd *r, uint32_t count, uint64_t from, uint64_t *ret_size,
                        struct volume_change *ret_changes, uint64_t *ret_end)
{
	struct tp_api_diff d;
	uint64_t end = from;

	if (!take_copy(r, &d, sizeof d))
		return -EBADMSG;
	for (uint32_t i = 0; i < count; i++) {
		struct tp_api_change c;

		if (!take_copy(r, &c, sizeof c) || (c.flags & ~TP_API_DATA) != 0 ||
		    c.reserved != 0 || c.length == 0 || c.offset < end || c.offset > d.size ||
		    c.length > d.size - c.offset)
			return -EBADMSG;
		end = c.offset + c.length;
		if (ret_changes != NULL)
			ret_changes[i] = (struct volume_change){
			    .offset = c.offset, .length = c.length, .data = c.flags & TP_API_DATA};
	}
	*ret_size = d.size;
	*ret_end = end;
	return 0;
}

/* One record of KIND, checked and dropped. */
static int skip_record(struct rd *r, enum record kind)
{
	struct tp_label labels[TP_LABELS_MAX];
	union {
		struct volume_view v;
		struct image_view im;
		struct tenant_view t;
		struct pool_view p;
		struct grant_view g;
		struct tp_api_child c;
		struct principal pr;
		struct volume_usage vu;
	} u;
	const char *s;

	switch (kind) {
	case R_VOLUME:
		return read_volume(r, false, &u.v, labels);
	case R_CHILD:
		return read_child(r, &u.c);
	case R_TENANT:
		return read_tenant(r, &u.t);
	case R_POOL:
		return read_pool(r, &u.p);
	case R_IMAGE:
		return read_image(r, &u.im, &s);
	case R_GRANT:
		return read_grant(r, &u.g);
	case R_PRINCIPAL:
		return read_principal(r, &u.pr);
	case R_TEXT:
		return read_text(r, &s);
	case R_VOLUME_USAGE:
		return read_volume_usage(r, &u.vu);
	case R_CHANGE: /* read whole, with the diff's size: read_changes */
	case R_NONE:
		break;
	}
	return -EBADMSG;
}

int api_wire_decode_reply(const void *buf, size_t len, enum tp_api_op op, uint32_t id,
                          uint64_t cursor, struct api_wire_reply *ret_rep)
{
	const struct op_spec *s = spec_of(op);
	struct tp_api_reply w;
	struct rd r;

	if (s == NULL)
		return -EINVAL;
	if (check_header(buf, len, sizeof w, TP_API_MESSAGE_MAX, &w.h) < 0)
		return -EBADMSG;
	memcpy(&w, buf, sizeof w);
	if (w.h.op != (op | TP_API_REPLY) || w.h.id != id ||
	    !tp_broker_field_ok(w.message, sizeof w.message))
		return -EBADMSG;
	if (w.error != 0) {
		if (w.error > TP_API_ERRNO_MAX || w.code == TP_ERROR_NONE ||
		    w.code > TP_ERROR_INTERNAL || w.flags != 0 || w.count != 0 || w.cursor != 0 ||
		    len != sizeof w)
			return -EBADMSG;
	} else {
		if (w.code != TP_ERROR_NONE || w.message[0] != '\0')
			return -EBADMSG;
		if (s->listing) {
			if ((w.flags & ~TP_API_MORE) != 0 || w.count > page_max(s->reply) ||
			    ((w.flags & TP_API_MORE) && w.count == 0) ||
			    (s->reply != R_CHANGE &&
			     (cursor > UINT64_MAX - w.count || w.cursor != cursor + w.count)))
				return -EBADMSG;
		} else if (w.flags != 0 || w.cursor != 0 || w.count != (s->reply != R_NONE)) {
			return -EBADMSG;
		}
	}
	r.p = (const unsigned char *)buf + sizeof w;
	r.left = len - sizeof w;
	if (w.error == 0 && s->reply == R_CHANGE) {
		uint64_t size, end;

		/* A diff's page goes on where its last change ends. */
		if (read_changes(&r, w.count, cursor, &size, NULL, &end) < 0 || w.cursor != end)
			return -EBADMSG;
	}
	for (uint32_t i = 0; s->reply != R_CHANGE && i < w.count; i++)
		if (skip_record(&r, s->reply) < 0)
			return -EBADMSG;
	if (r.left != 0)
		return -EBADMSG;
	ret_rep->w = w;
	ret_rep->body = (const unsigned char *)buf + sizeof w;
	ret_rep->body_len = len - sizeof w;
	return 0;
}

static struct rd body_of(const struct api_wire_reply *rep)
{
	return (struct rd){rep->body, rep->body_len};
}

int api_wire_get_volumes(const struct api_wire_reply *rep, ops_volume_fn fn, void *opaque)
{
	struct tp_label labels[TP_LABELS_MAX];
	struct rd r = body_of(rep);
	struct volume_view v;
	int e;

	for (uint32_t i = 0; i < rep->w.count; i++) {
		if ((e = read_volume(&r, false, &v, labels)) < 0 || (e = fn(&v, opaque)) < 0)
			return e;
	}
	return 0;
}

int api_wire_get_volume(const struct api_wire_reply *rep, struct volume_view *ret_view)
{
	struct tp_label labels[TP_LABELS_MAX];
	struct rd r = body_of(rep);
	size_t bytes;
	char *s;
	int e;

	if ((e = read_volume(&r, false, ret_view, labels)) < 0)
		return e;
	if (ret_view->n_labels == 0)
		return 0;
	/* One block, as ops_volume_view_clear frees it: the array, then the strings. */
	bytes = ret_view->n_labels * sizeof *labels;
	for (size_t i = 0; i < ret_view->n_labels; i++)
		bytes += strlen(labels[i].key) + strlen(labels[i].value) + 2;
	ret_view->labels = malloc(bytes);
	if (ret_view->labels == NULL) {
		ret_view->n_labels = 0;
		return -ENOMEM;
	}
	s = (char *)(ret_view->labels + ret_view->n_labels);
	for (size_t i = 0; i < ret_view->n_labels; i++) {
		ret_view->labels[i].key = s;
		s = stpcpy(s, labels[i].key) + 1;
		ret_view->labels[i].value = s;
		s = stpcpy(s, labels[i].value) + 1;
	}
	return 0;
}

int api_wire_get_children(const struct api_wire_reply *rep, ops_children_fn fn, void *opaque)
{
	struct rd r = body_of(rep);
	struct tp_api_child c;
	int e;

	for (uint32_t i = 0; i < rep->w.count; i++) {
		if ((e = read_child(&r, &c)) < 0 || (e = fn(c.tenant, c.n, opaque)) < 0)
			return e;
	}
	return 0;
}

void api_wire_get_tenants(const struct api_wire_reply *rep, struct tenant_view *ret_views)
{
	struct rd r = body_of(rep);

	for (uint32_t i = 0; i < rep->w.count; i++)
		read_tenant(&r, &ret_views[i]);
}

void api_wire_get_pool(const struct api_wire_reply *rep, struct pool_view *ret_view)
{
	struct rd r = body_of(rep);

	read_pool(&r, ret_view);
}

int api_wire_get_images(const struct api_wire_reply *rep, struct image_view *ret_views)
{
	struct rd r = body_of(rep);
	const char *names;

	for (uint32_t i = 0; i < rep->w.count; i++) {
		struct image_view *im = &ret_views[i];
		size_t bytes;

		if (read_image(&r, im, &names) < 0)
			return -EBADMSG;
		bytes = im->n_published * sizeof *im->published;
		if (bytes == 0)
			continue;
		im->published = malloc(bytes);
		if (im->published == NULL) {
			for (uint32_t j = 0; j < i; j++) {
				free(ret_views[j].published);
				ret_views[j].published = NULL;
			}
			return -ENOMEM;
		}
		memcpy(im->published, names, bytes);
	}
	return 0;
}

void api_wire_get_grants(const struct api_wire_reply *rep, struct grant_view *ret_views)
{
	struct rd r = body_of(rep);

	for (uint32_t i = 0; i < rep->w.count; i++)
		read_grant(&r, &ret_views[i]);
}

void api_wire_get_principal(const struct api_wire_reply *rep, struct principal *ret_principal)
{
	struct rd r = body_of(rep);

	read_principal(&r, ret_principal);
}

const char *api_wire_get_text(const struct api_wire_reply *rep)
{
	struct rd r = body_of(rep);
	const char *text = NULL;

	read_text(&r, &text);
	return text;
}

void api_wire_get_volume_usage(const struct api_wire_reply *rep, struct volume_usage *ret_usage)
{
	struct rd r = body_of(rep);

	read_volume_usage(&r, ret_usage);
}

void api_wire_get_changes(const struct api_wire_reply *rep, uint64_t *ret_size,
                          struct volume_change *ret_changes)
{
	struct rd r = body_of(rep);
	uint64_t end;

	/* Decoded already, against the asked cursor; 0 holds as well. */
	read_changes(&r, rep->w.count, 0, ret_size, ret_changes, &end);
}

/* Replies: the parent's side. */

int api_wire_reply_begin(struct api_wire_writer *w, enum tp_api_op op, uint32_t id)
{
	struct tp_api_reply rep = {0};

	memset(w, 0, sizeof *w);
	if (spec_of(op) == NULL)
		return -EINVAL;
	w->op = op;
	rep.h.magic = TP_API_MAGIC;
	rep.h.version = TP_API_VERSION;
	rep.h.op = (uint16_t)(op | TP_API_REPLY);
	rep.h.id = id;
	return append(w, &rep, sizeof rep);
}

/* May W take one more record of KIND? */
static int room_for(const struct api_wire_writer *w, enum record kind)
{
	const struct op_spec *s = spec_of(w->op);

	if (w->buf == NULL || s == NULL || s->reply != kind || (!s->listing && w->count > 0))
		return -EINVAL;
	if (w->count >= page_max(kind))
		return -E2BIG;
	return 0;
}

/* A record that began at START is written (R 0) or not (R < 0): then the reply goes back
 * to what it was before it. */
static int record_done(struct api_wire_writer *w, size_t start, int r)
{
	if (r < 0) {
		w->len = start;
		return r;
	}
	w->count++;
	return 0;
}

static int put_volume_record(struct api_wire_writer *w, const struct volume_view *v, bool image)
{
	struct tp_api_volume rec = {0};
	int state = index_of(volume_states, N_OF(volume_states), v->state), r;

	if (state < 0 || API_WIRE_SET(rec.name, v->name) < 0 ||
	    !ref_field_ok(rec.name, sizeof rec.name, false) ||
	    API_WIRE_SET(rec.owner, v->owner) < 0 ||
	    !name_field_ok(rec.owner, sizeof rec.owner, true) ||
	    API_WIRE_SET(rec.parent, v->parent) < 0 ||
	    !ref_field_ok(rec.parent, sizeof rec.parent, true) ||
	    v->n_labels > (image ? 0 : TP_LABELS_MAX))
		return -EINVAL;
	rec.size = v->size;
	rec.used = v->used;
	rec.created = v->created;
	rec.updated = v->updated;
	rec.thin_id = v->thin_id;
	rec.state = (uint16_t)state;
	rec.flags = v->writable ? TP_API_WRITABLE : 0;
	rec.n_labels = (uint32_t)v->n_labels;
	if ((r = append(w, &rec, sizeof rec)) < 0)
		return r;
	return put_labels(w, v->labels, v->n_labels, L_SET);
}

int api_wire_put_volume(struct api_wire_writer *w, const struct volume_view *v)
{
	size_t start = w->len;
	int r = room_for(w, R_VOLUME);

	if (r < 0)
		return r;
	return record_done(w, start, put_volume_record(w, v, false));
}

int api_wire_put_child(struct api_wire_writer *w, const char *tenant, uint64_t n)
{
	struct tp_api_child rec = {.n = n};
	size_t start = w->len;
	int r = room_for(w, R_CHILD);

	if (r < 0)
		return r;
	if (API_WIRE_SET(rec.tenant, tenant) < 0 || !tp_name_valid(rec.tenant))
		return -EINVAL;
	return record_done(w, start, append(w, &rec, sizeof rec));
}

int api_wire_put_tenant(struct api_wire_writer *w, const struct tenant_view *t)
{
	struct tp_api_tenant rec = {0};
	int nbd = index_of(nbd_states, N_OF(nbd_states), t->nbd);
	size_t start = w->len;
	int r = room_for(w, R_TENANT);

	if (r < 0)
		return r;
	if (nbd < 0 || API_WIRE_SET(rec.name, t->name) < 0 || !tp_name_valid(rec.name))
		return -EINVAL;
	rec.uid = t->uid;
	rec.gid = t->gid;
	rec.nbd_uid = t->nbd_uid;
	rec.nbd = (uint16_t)nbd;
	rec.max_volumes = t->max_volumes;
	rec.max_size = t->max_size;
	rec.max_used = t->max_used;
	rec.volumes = t->volumes;
	rec.size = t->size;
	rec.used = t->used;
	if (t->has_allocated) {
		rec.flags = TP_API_TENANT_ALLOCATED;
		rec.allocated = t->allocated;
	}
	rec.created = t->created;
	return record_done(w, start, append(w, &rec, sizeof rec));
}

int api_wire_put_pool(struct api_wire_writer *w, const struct pool_view *p)
{
	struct tp_api_pool rec = {0};
	int meta = index_of(meta_states, N_OF(meta_states), p->meta_state);
	int mode = index_of(pool_modes, N_OF(pool_modes), p->mode);
	size_t start = w->len;
	int r = room_for(w, R_POOL);

	if (r < 0)
		return r;
	if (meta < 0 || mode < 0 || API_WIRE_SET(rec.name, p->name) < 0)
		return -EINVAL;
	rec.transaction_id = p->transaction_id;
	rec.block_size = p->block_size;
	rec.data_used = p->data_used;
	rec.data_total = p->data_total;
	rec.meta_used = p->meta_used;
	rec.meta_total = p->meta_total;
	rec.meta_limit = p->meta_limit;
	rec.min_free = p->min_free;
	rec.volumes = p->volumes;
	rec.meta_state = (uint16_t)meta;
	rec.mode = (uint16_t)mode;
	rec.flags = p->needs_check ? TP_API_NEEDS_CHECK : 0;
	return record_done(w, start, append(w, &rec, sizeof rec));
}

static int put_image_record(struct api_wire_writer *w, const struct image_view *im)
{
	struct tp_api_image rec = {0};
	char name[TP_API_NAME_SIZE];
	int r;

	if (im->n_published > TP_API_PUBLISHED_MAX)
		return -EINVAL;
	if ((r = put_volume_record(w, &im->volume, true)) < 0)
		return r;
	rec.imported = im->imported;
	rec.flags = im->published_all ? TP_API_ALL : 0;
	rec.n_published = (uint32_t)im->n_published;
	if ((r = append(w, &rec, sizeof rec)) < 0)
		return r;
	for (size_t i = 0; i < im->n_published; i++) {
		if (API_WIRE_SET(name, im->published[i]) < 0 || !tp_name_valid(name))
			return -EINVAL;
		if ((r = append(w, name, sizeof name)) < 0)
			return r;
	}
	return 0;
}

int api_wire_put_image(struct api_wire_writer *w, const struct image_view *im)
{
	size_t start = w->len;
	int r = room_for(w, R_IMAGE);

	if (r < 0)
		return r;
	return record_done(w, start, put_image_record(w, im));
}

int api_wire_put_grant(struct api_wire_writer *w, const struct grant_view *g)
{
	struct tp_api_grant rec = {0};
	size_t start = w->len;
	int r = room_for(w, R_GRANT);

	if (r < 0)
		return r;
	if (API_WIRE_SET(rec.owner, g->owner) < 0 || !tp_name_valid(rec.owner) ||
	    API_WIRE_SET(rec.volume, g->volume) < 0 || !tp_name_valid(rec.volume) ||
	    API_WIRE_SET(rec.to, g->to) < 0 || !tp_name_valid(rec.to))
		return -EINVAL;
	rec.flags = g->write ? TP_API_GRANT_WRITE : 0;
	return record_done(w, start, append(w, &rec, sizeof rec));
}

int api_wire_put_principal(struct api_wire_writer *w, const struct principal *p)
{
	struct tp_api_principal rec = {0};
	size_t start = w->len;
	int r = room_for(w, R_PRINCIPAL);

	if (r < 0)
		return r;
	if (p->admin || p->tenant_id <= 0 || API_WIRE_SET(rec.tenant, p->tenant) < 0 ||
	    !tp_name_valid(rec.tenant))
		return -EINVAL;
	rec.tenant_id = p->tenant_id;
	return record_done(w, start, append(w, &rec, sizeof rec));
}

int api_wire_put_text(struct api_wire_writer *w, const char *text)
{
	struct tp_api_text rec = {0};
	size_t start = w->len, n = strlen(text);
	int r = room_for(w, R_TEXT);

	if (r < 0)
		return r;
	if (n > TP_API_TEXT_MAX)
		return -E2BIG;
	rec.text_len = (uint32_t)n;
	if ((r = append(w, &rec, sizeof rec)) == 0)
		r = append(w, text, n + 1);
	return record_done(w, start, r);
}

int api_wire_put_volume_usage(struct api_wire_writer *w, const struct volume_usage *u)
{
	struct tp_api_volume_usage rec = {
	    .mapped = u->mapped, .exclusive = u->exclusive, .shared = u->shared};
	size_t start = w->len;
	int r = room_for(w, R_VOLUME_USAGE);

	if (r < 0)
		return r;
	if (u->exclusive > u->mapped || u->shared != u->mapped - u->exclusive)
		return -EINVAL;
	return record_done(w, start, append(w, &rec, sizeof rec));
}

int api_wire_put_diff(struct api_wire_writer *w, uint64_t size, uint64_t from)
{
	const struct op_spec *s = spec_of(w->op);
	struct tp_api_diff rec = {.size = size};
	int r;

	if (w->buf == NULL || s == NULL || s->reply != R_CHANGE || w->diff)
		return -EINVAL;
	if ((r = append(w, &rec, sizeof rec)) < 0)
		return r;
	w->diff = true;
	w->size = size;
	w->from = w->end = from;
	return 0;
}

int api_wire_put_change(struct api_wire_writer *w, const struct volume_change *c)
{
	struct tp_api_change rec = {
	    .offset = c->offset, .length = c->length, .flags = c->data ? TP_API_DATA : 0};
	size_t start = w->len;
	int r = room_for(w, R_CHANGE);

	if (r < 0)
		return r;
	if (!w->diff || c->length == 0 || c->offset < w->end || c->offset > w->size ||
	    c->length > w->size - c->offset)
		return -EINVAL;
	if ((r = record_done(w, start, append(w, &rec, sizeof rec))) == 0)
		w->end = c->offset + c->length;
	return r;
}

int api_wire_reply_end(struct api_wire_writer *w, bool more, uint64_t cursor, void **ret_buf,
                       size_t *ret_len)
{
	const struct op_spec *s = spec_of(w->op);
	struct api_wire_reply check;
	struct tp_api_reply rep;
	uint64_t asked = 0;

	if (w->buf == NULL || s == NULL || (!s->listing && (more || cursor != 0)))
		return -EINVAL;
	if (s->reply == R_CHANGE) {
		if (!w->diff || cursor != w->end)
			return -EINVAL;
		asked = w->from;
	} else if (s->listing) {
		if (cursor < w->count)
			return -EINVAL;
		asked = cursor - w->count;
	}
	memcpy(&rep, w->buf, sizeof rep);
	rep.h.length = (uint32_t)w->len;
	rep.flags = more ? TP_API_MORE : 0;
	rep.count = w->count;
	rep.cursor = cursor;
	memcpy(w->buf, &rep, sizeof rep);
	if (api_wire_decode_reply(w->buf, w->len, w->op, rep.h.id, asked, &check) < 0)
		return -EINVAL;
	*ret_buf = w->buf;
	*ret_len = w->len;
	w->buf = NULL;
	w->len = w->cap = 0;
	return 0;
}

void api_wire_writer_free(struct api_wire_writer *w)
{
	free(w->buf);
	w->buf = NULL;
	w->len = w->cap = 0;
}

int api_wire_encode_error(enum tp_api_op op, uint32_t id, int r, enum tp_error code,
                          const char *message, void **ret_buf, size_t *ret_len)
{
	struct tp_api_reply *rep;
	size_t n = message ? strnlen(message, TP_API_MESSAGE_SIZE - 1) : 0;

	if (spec_of(op) == NULL)
		return -EINVAL;
	rep = calloc(1, sizeof *rep);
	if (rep == NULL)
		return -ENOMEM;
	rep->h.magic = TP_API_MAGIC;
	rep->h.version = TP_API_VERSION;
	rep->h.op = (uint16_t)(op | TP_API_REPLY);
	rep->h.id = id;
	rep->h.length = sizeof *rep;
	rep->error = r < 0 && -r <= (int)TP_API_ERRNO_MAX ? (uint32_t)-r : EIO;
	rep->code = code > TP_ERROR_NONE && code <= TP_ERROR_INTERNAL ? code : TP_ERROR_INTERNAL;
	if (n > 0)
		memcpy(rep->message, message, n);
	*ret_buf = rep;
	*ret_len = sizeof *rep;
	return 0;
}

/* The parent's messages about the API process's sockets. */

int api_wire_encode_listen(uint16_t op, uint32_t socket, const struct principal *p,
                           struct tp_api_listen *ret)
{
	memset(ret, 0, sizeof *ret);
	ret->h = (struct tp_api_header){
	    .magic = TP_API_MAGIC, .version = TP_API_VERSION, .op = op, .length = sizeof *ret};
	ret->socket = socket;
	if (op == TP_API_UNLISTEN && p == NULL)
		return 0;
	if (op != TP_API_LISTEN || p == NULL)
		return -EINVAL;
	if (p->admin) {
		if (p->tenant_id != 0)
			return -EINVAL;
		ret->flags = TP_API_ADMIN;
		return 0;
	}
	if (p->tenant_id <= 0 || API_WIRE_SET(ret->tenant, p->tenant) < 0 ||
	    !tp_name_valid(ret->tenant))
		return -EINVAL;
	ret->tenant_id = p->tenant_id;
	return 0;
}

int api_wire_decode_listen(const void *buf, size_t len, uint16_t *ret_op, uint32_t *ret_socket,
                           struct principal *ret_p)
{
	struct tp_api_listen m;

	if (len != sizeof m)
		return -EBADMSG;
	memcpy(&m, buf, sizeof m);
	if (m.h.magic != TP_API_MAGIC || m.h.version != TP_API_VERSION || m.h.id != 0 ||
	    m.h.length != sizeof m)
		return -EBADMSG;
	memset(ret_p, 0, sizeof *ret_p);
	if (m.h.op == TP_API_UNLISTEN) {
		if (m.flags != 0 || m.tenant_id != 0 ||
		    !name_field_ok(m.tenant, sizeof m.tenant, true) || m.tenant[0] != '\0')
			return -EBADMSG;
	} else if (m.h.op != TP_API_LISTEN || (m.flags & ~TP_API_ADMIN) != 0) {
		return -EBADMSG;
	} else if (m.flags & TP_API_ADMIN) {
		if (m.tenant_id != 0 || !name_field_ok(m.tenant, sizeof m.tenant, true) ||
		    m.tenant[0] != '\0')
			return -EBADMSG;
		ret_p->admin = true;
	} else {
		if (m.tenant_id <= 0 || !name_field_ok(m.tenant, sizeof m.tenant, false))
			return -EBADMSG;
		ret_p->tenant_id = m.tenant_id;
		memcpy(ret_p->tenant, m.tenant, sizeof ret_p->tenant);
	}
	*ret_op = m.h.op;
	*ret_socket = m.socket;
	return 0;
}
