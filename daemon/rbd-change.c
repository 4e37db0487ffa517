/* The RBD pool's change protocol (see rbd-change.h): an intent record in the shared
 * metadata, the idempotent librbd steps, the record removed; and the settling of records
 * a crash left. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "fault.h"
#include "log.h"
#include "rbd-change.h"
#include "rbd-volumes.h"
#include "tp-cleanup.h"
#include "tp-rules.h"

/* "intent/" TENANT "/" VOLUME, NUL included. */
#define KEY_MAX (sizeof "intent/" + 2 * TP_NAME_MAX + 1)
/* The longest record: the operation, the host and an origin, or a size. */
#define VALUE_MAX (128 + 2 * TP_NAME_MAX)

enum op { OP_CREATE, OP_SNAPSHOT, OP_REMOVE };
static const char *const op_names[] = {"create", "snapshot", "remove"};

/* One intent record, as written and as read back. */
struct intent {
	enum op op;
	char tenant[TP_NAME_MAX + 1], volume[TP_NAME_MAX + 1];
	char host[TP_NAME_MAX + 1];
	char origin[TP_NAME_MAX + 1]; /* snapshot */
	uint64_t size;                /* create */
	/* Set once the change found the name free and began to make the volume: before,
	 * an image of that name is someone else's. */
	bool making;
	char key[KEY_MAX], value[VALUE_MAX];
};

/* Fill in I's key and value from its fields. Names are checked by the caller. */
static void intent_format(struct intent *i)
{
	const char *making = i->making ? ",\"making\":true" : "";

	snprintf(i->key, sizeof i->key, "intent/%s/%s", i->tenant, i->volume);
	switch (i->op) {
	case OP_CREATE:
		snprintf(i->value, sizeof i->value,
		         "{\"op\":\"create\",\"host\":\"%s\",\"size\":%" PRIu64 "%s}", i->host,
		         i->size, making);
		break;
	case OP_SNAPSHOT:
		snprintf(i->value, sizeof i->value,
		         "{\"op\":\"snapshot\",\"host\":\"%s\",\"origin\":\"%s\"%s}", i->host,
		         i->origin, making);
		break;
	case OP_REMOVE:
		snprintf(i->value, sizeof i->value, "{\"op\":\"remove\",\"host\":\"%s\"}", i->host);
		break;
	}
}

/* Copy the string member NAME of J, a valid name, into BUF. */
static bool name_member(json_object *j, const char *name, char *buf)
{
	json_object *m;
	const char *s;

	if (!json_object_object_get_ex(j, name, &m) || !json_object_is_type(m, json_type_string))
		return false;
	s = json_object_get_string(m);
	if (!tp_name_valid(s))
		return false;
	strcpy(buf, s);
	return true;
}

/* Read the fields of record J into *I: -EINVAL if it is not one this file writes. */
static int parse_fields(json_object *j, struct intent *i)
{
	json_object *m;
	const char *op;

	if (j == NULL || !json_object_object_get_ex(j, "op", &m) ||
	    !json_object_is_type(m, json_type_string) || !name_member(j, "host", i->host))
		return -EINVAL;
	op = json_object_get_string(m);
	if (strcmp(op, "create") == 0) {
		i->op = OP_CREATE;
		if (!json_object_object_get_ex(j, "size", &m) ||
		    !json_object_is_type(m, json_type_int) || json_object_get_int64(m) < 0)
			return -EINVAL;
		i->size = (uint64_t)json_object_get_int64(m);
	} else if (strcmp(op, "snapshot") == 0) {
		i->op = OP_SNAPSHOT;
		if (!name_member(j, "origin", i->origin))
			return -EINVAL;
	} else if (strcmp(op, "remove") == 0) {
		i->op = OP_REMOVE;
	} else {
		return -EINVAL;
	}
	if (json_object_object_get_ex(j, "making", &m)) {
		if (!json_object_is_type(m, json_type_boolean))
			return -EINVAL;
		i->making = json_object_get_boolean(m);
	}
	return 0;
}

/* Copy the name of LEN bytes at S into BUF if it is a valid one. */
static bool key_name(const char *s, size_t len, char *buf)
{
	if (len > TP_NAME_MAX)
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return tp_name_valid(buf);
}

/* Read the record KEY = VALUE into *I: -EINVAL if it is not one this file writes. */
static int intent_parse(const char *key, const char *value, struct intent *i)
{
	const char *tenant = key + strlen("intent/"), *slash;
	json_object *j;
	int r;

	*i = (struct intent){0};
	if (strncmp(key, "intent/", strlen("intent/")) != 0 ||
	    (slash = strchr(tenant, '/')) == NULL ||
	    !key_name(tenant, (size_t)(slash - tenant), i->tenant) ||
	    !key_name(slash + 1, strlen(slash + 1), i->volume) || strlen(key) >= sizeof i->key ||
	    strlen(value) >= sizeof i->value)
		return -EINVAL;
	j = json_tokener_parse(value);
	r = parse_fields(j, i);
	json_object_put(j);
	if (r < 0)
		return r;
	/* Compare-and-remove needs the value as stored, byte for byte. */
	strcpy(i->key, key);
	strcpy(i->value, value);
	return 0;
}

/* Take I's record for this change: -EBUSY if another change of the volume holds it. */
static int intent_take(const struct rbd_change_ctx *c, struct intent *i)
{
	int r;

	intent_format(i);
	r = rbd_meta_put_new(c->meta, i->key, i->value);
	if (r == -EEXIST)
		return -EBUSY;
	if (r < 0)
		return log_errno(LOG_ERR, r, "record the %s of volume %s/%s: %m", op_names[i->op],
		                 i->tenant, i->volume);
	return 0;
}

/* Remove I's record, the change done. One that is no longer as written was settled by an
 * operator meanwhile: the change is done all the same. */
static int intent_drop(const struct rbd_change_ctx *c, const struct intent *i)
{
	int r = rbd_meta_remove(c->meta, i->key, i->value);

	if (r == -ESTALE) {
		log_warning("the record of the %s of volume %s/%s was settled by someone else",
		            op_names[i->op], i->tenant, i->volume);
		return 0;
	}
	if (r < 0)
		return log_errno(LOG_ERR, r,
		                 "remove the record of the %s of volume %s/%s: %m; it is settled "
		                 "at the next start",
		                 op_names[i->op], i->tenant, i->volume);
	return 0;
}

/* Mark I's record: the name was free, and the volume is being made. */
static int intent_making(const struct rbd_change_ctx *c, struct intent *i)
{
	char old[VALUE_MAX];
	int r;

	strcpy(old, i->value);
	i->making = true;
	intent_format(i);
	r = rbd_meta_replace(c->meta, i->key, old, i->value);
	if (r < 0) {
		strcpy(i->value, old);
		i->making = false;
		return log_errno(LOG_ERR, r, "record the %s of volume %s/%s as under way: %m",
		                 op_names[i->op], i->tenant, i->volume);
	}
	return 0;
}

/* Begin change I of volume NAME of TENANT: check the names, point C's I/O context at the
 * tenant's namespace, and take the record. */
static int begin(const struct rbd_change_ctx *c, struct intent *i, const char *tenant,
                 const char *name)
{
	if (!tp_name_valid(tenant) || !tp_name_valid(name) || !tp_name_valid(c->host))
		return -EINVAL;
	strcpy(i->tenant, tenant);
	strcpy(i->volume, name);
	strcpy(i->host, c->host);
	rados_ioctx_set_namespace(c->io, tenant);
	return intent_take(c, i);
}

/* For a create or snapshot I that holds its record: the name must be free, and then the
 * record says so. Only now does "not there" mean "no one makes it meanwhile". On failure
 * the record goes: nothing was made. */
static int claim_name(const struct rbd_change_ctx *c, struct intent *i)
{
	struct rbd_volume v;
	int r = rbd_volume_info(c->io, i->volume, &v);

	if (r == -ENOENT)
		r = intent_making(c, i);
	else if (r == 0)
		r = -EEXIST;
	if (r < 0)
		intent_drop(c, i);
	return r;
}

/* After a failed create or snapshot: take away what part of I's volume was made, which
 * only this change can have made, since it holds the record; then the record. If that
 * fails, the record stays for the next start. */
static int undo(const struct rbd_change_ctx *c, const struct intent *i, int error)
{
	int r = rbd_volume_remove(c->io, i->volume);

	if (r < 0) {
		log_errno(LOG_ERR, r,
		          "take away what the failed %s of volume %s/%s made: %m; the next start "
		          "does",
		          op_names[i->op], i->tenant, i->volume);
		return error;
	}
	intent_drop(c, i);
	return error;
}

int rbd_change_create(const struct rbd_change_ctx *c, const char *tenant, const char *name,
                      uint64_t size)
{
	struct intent i = {.op = OP_CREATE, .size = size};
	int r;

	r = begin(c, &i, tenant, name);
	if (r < 0)
		return r;
	fault_point("rbd-after-create-intent");
	r = claim_name(c, &i);
	if (r < 0)
		return r;
	fault_point("rbd-after-create-making");
	r = rbd_volume_create(c->io, name, size);
	if (r < 0) {
		log_errno(LOG_ERR, r, "create volume %s/%s: %m", tenant, name);
		return undo(c, &i, r);
	}
	fault_point("rbd-after-create-image");
	r = intent_drop(c, &i);
	fault_point("rbd-after-create-done");
	return r;
}

int rbd_change_snapshot(const struct rbd_change_ctx *c, const char *tenant, const char *origin,
                        const char *name)
{
	struct intent i = {.op = OP_SNAPSHOT};
	int r;

	if (!tp_name_valid(origin))
		return -EINVAL;
	strcpy(i.origin, origin);
	r = begin(c, &i, tenant, name);
	if (r < 0)
		return r;
	fault_point("rbd-after-snapshot-intent");
	r = claim_name(c, &i);
	if (r < 0)
		return r;
	fault_point("rbd-after-snapshot-making");
	r = rbd_volume_snapshot(c->io, origin, name);
	if (r < 0) {
		if (r != -ENOENT)
			log_errno(LOG_ERR, r, "snapshot volume %s/%s as %s: %m", tenant, origin,
			          name);
		return undo(c, &i, r);
	}
	fault_point("rbd-after-snapshot-child");
	r = intent_drop(c, &i);
	fault_point("rbd-after-snapshot-done");
	return r;
}

int rbd_change_remove(const struct rbd_change_ctx *c, const char *tenant, const char *name)
{
	struct intent i = {.op = OP_REMOVE};
	struct rbd_volume v;
	int r;

	r = begin(c, &i, tenant, name);
	if (r < 0)
		return r;
	fault_point("rbd-after-remove-intent");
	r = rbd_volume_info(c->io, name, &v);
	if (r == 0)
		r = rbd_volume_remove(c->io, name);
	if (r < 0) {
		/* A refused remove (-EBUSY: children or clients) changed nothing. */
		if (r != -ENOENT && r != -EBUSY)
			log_errno(LOG_ERR, r, "remove volume %s/%s: %m", tenant, name);
		intent_drop(c, &i);
		return r;
	}
	fault_point("rbd-after-remove-image");
	r = intent_drop(c, &i);
	fault_point("rbd-after-remove-done");
	return r;
}

/* Settling */

/* Settle record I by what the pool holds (rbd-change.h). */
static int settle(const struct rbd_change_ctx *c, const struct intent *i)
{
	struct rbd_volume v;
	bool stays;
	int r;

	rados_ioctx_set_namespace(c->io, i->tenant);
	r = rbd_volume_info(c->io, i->volume, &v);
	if (r < 0 && r != -ENOENT)
		return r;
	stays = r == 0;
	r = 0;
	switch (i->op) {
	case OP_CREATE:
		/* Not making: nothing was made; an image there is someone else's. */
		if (i->making && !stays)
			r = rbd_volume_remove(c->io, i->volume);
		break;
	case OP_SNAPSHOT:
		if (i->making && stays)
			r = rbd_volume_snapshot(c->io, i->origin, i->volume);
		else if (i->making)
			r = rbd_volume_remove(c->io, i->volume);
		break;
	case OP_REMOVE:
		/* Refused before any change (children, clients, a snapshot not ours): the
		 * volume stays, as a remove that was refused at once would leave it. */
		r = rbd_volume_remove(c->io, i->volume);
		stays = r == -EBUSY || r == -ENOTEMPTY;
		if (stays || r == -ENOENT)
			r = 0;
		break;
	}
	if (r < 0)
		return r;
	log_notice("settled the %s of volume %s/%s left by a crash: the volume %s", op_names[i->op],
	           i->tenant, i->volume, stays ? "stays" : "is gone");
	return intent_drop(c, i);
}

/* The records of one host, gathered before any is settled, so that the walk does not
 * run over keys it removes. */
struct gathered {
	const char *host;
	struct intent *v;
	size_t n, cap;
	unsigned foreign; /* records this file cannot read: left alone */
};

static int gather(void *arg, const char *key, const char *value)
{
	struct gathered *g = arg;
	struct intent i;

	if (intent_parse(key, value, &i) < 0) {
		log_warning("a record %s = %s this thinproxyd cannot read: left alone", key, value);
		g->foreign++;
		return 0;
	}
	if (strcmp(i.host, g->host) != 0)
		return 0;
	if (g->n == g->cap) {
		size_t cap = g->cap != 0 ? 2 * g->cap : 16;
		struct intent *v = realloc(g->v, cap * sizeof *v);

		if (v == NULL)
			return -ENOMEM;
		g->v = v;
		g->cap = cap;
	}
	g->v[g->n++] = i;
	return 0;
}

int rbd_change_recover(const struct rbd_change_ctx *c, unsigned *ret_settled)
{
	struct gathered g = {.host = c->host};
	unsigned settled = 0;
	int r, first = 0;

	if (!tp_name_valid(c->host))
		return -EINVAL;
	r = rbd_meta_list(c->meta, "intent/", RBD_META_PAGE, gather, &g);
	if (r < 0) {
		free(g.v);
		return log_errno(LOG_ERR, r, "read the change records: %m");
	}
	for (size_t k = 0; k < g.n; k++) {
		r = settle(c, &g.v[k]);
		if (r < 0) {
			log_errno(LOG_ERR, r,
			          "settle the %s of volume %s/%s: %m; it stays recorded",
			          op_names[g.v[k].op], g.v[k].tenant, g.v[k].volume);
			if (first == 0)
				first = r;
		} else {
			settled++;
		}
	}
	free(g.v);
	if (ret_settled != NULL)
		*ret_settled = settled;
	return first;
}
