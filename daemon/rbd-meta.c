/* The RBD backend's shared metadata in one RADOS object's omap (see rbd-meta.h). */
#include <errno.h>
#include <rados/librados.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "rbd-meta.h"
#include "tp-cleanup.h"
#include "tp-rules.h"

/* Seconds a connect, or an operation, may take before it fails with -ETIMEDOUT:
 * librados' defaults wait for ever, and the daemon must answer. */
#define TIMEOUT_S "30"
/* The longest key: the longest kind, then three names with their '/'. */
#define KEY_MAX (6 + 3 * (1 + TP_NAME_MAX))

struct rbd_meta {
	rados_t cluster;
	rados_ioctx_t ioctx; /* the pool, namespace RBD_META_NAMESPACE */
};

static const char *const kinds[] = {"tenant", "volume", "grant", "intent"};

int rbd_meta_connect(const char *conf, const char *name, const char *keyring, const char *pool,
                     struct rbd_meta **ret_meta)
{
	struct rbd_meta *meta;
	int r;

	if (!tp_name_valid(pool))
		return -EINVAL;
	meta = calloc(1, sizeof *meta);
	if (meta == NULL)
		return -ENOMEM;
	r = rados_create2(&meta->cluster, "ceph", name, 0);
	if (r < 0) {
		meta->cluster = NULL;
		rbd_meta_close(meta);
		return r;
	}
	if ((r = rados_conf_read_file(meta->cluster, conf)) < 0 ||
	    (r = rados_conf_set(meta->cluster, "keyring", keyring)) < 0 ||
	    (r = rados_conf_set(meta->cluster, "client_mount_timeout", TIMEOUT_S)) < 0 ||
	    (r = rados_conf_set(meta->cluster, "rados_mon_op_timeout", TIMEOUT_S)) < 0 ||
	    (r = rados_conf_set(meta->cluster, "rados_osd_op_timeout", TIMEOUT_S)) < 0 ||
	    (r = rados_connect(meta->cluster)) < 0 ||
	    (r = rados_ioctx_create(meta->cluster, pool, &meta->ioctx)) < 0) {
		rbd_meta_close(meta);
		return r;
	}
	rados_ioctx_set_namespace(meta->ioctx, RBD_META_NAMESPACE);
	*ret_meta = meta;
	return 0;
}

void rbd_meta_close(struct rbd_meta *meta)
{
	if (meta == NULL)
		return;
	if (meta->ioctx != NULL)
		rados_ioctx_destroy(meta->ioctx);
	/* rados_shutdown also ends a handle that was created but never connected. */
	if (meta->cluster != NULL)
		rados_shutdown(meta->cluster);
	free(meta);
}

/* Whether S is a KIND followed by MIN to MAX names, each part followed by '/' if PREFIX,
 * else separated by '/'. */
static bool path_valid(const char *s, bool prefix, int min, int max)
{
	char buf[KEY_MAX + 2];
	char *part, *save = NULL;
	size_t len;
	int names = -1;

	if (s == NULL)
		return false;
	len = strlen(s);
	if (len == 0 || len > KEY_MAX + 1 || (s[len - 1] == '/') != prefix)
		return false;
	memcpy(buf, s, len + 1);
	/* strtok_r would skip empty parts; a '/' next to another or at the start is one. */
	if (buf[0] == '/' || strstr(buf, "//") != NULL)
		return false;
	for (part = strtok_r(buf, "/", &save); part != NULL; part = strtok_r(NULL, "/", &save)) {
		if (names == -1) {
			bool known = false;

			for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
				known = known || strcmp(part, kinds[i]) == 0;
			if (!known)
				return false;
		} else if (!tp_name_valid(part)) {
			return false;
		}
		names++;
	}
	return names >= min && names <= max;
}

bool rbd_meta_key_valid(const char *key)
{
	return path_valid(key, false, 1, 3);
}

static bool value_valid(const char *value)
{
	return value != NULL && value[0] != '\0' &&
	       strnlen(value, RBD_META_VALUE_MAX + 1) <= RBD_META_VALUE_MAX;
}

/* In one write operation: if KEY's value is EXPECT ("" for none), set it to VALUE, or
 * remove it if VALUE is NULL. -ECANCELED (the OSD's answer) if it was not, and then
 * nothing changed. */
static int change(struct rbd_meta *meta, const char *key, const char *expect, const char *value)
{
	rados_write_op_t op = rados_create_write_op();
	int cmp = 0, r;

	if (op == NULL)
		return -ENOMEM;
	/* The object comes with the first change; the comparison and the change are
	 * applied with it or not at all. The OSD compares an absent key as an empty
	 * value. */
	rados_write_op_create(op, LIBRADOS_CREATE_IDEMPOTENT, NULL);
	rados_write_op_omap_cmp(op, key, LIBRADOS_CMPXATTR_OP_EQ, expect, strlen(expect), &cmp);
	if (value != NULL) {
		size_t len = strlen(value);

		rados_write_op_omap_set(op, &key, &value, &len, 1);
	} else {
		rados_write_op_omap_rm_keys(op, &key, 1);
	}
	r = rados_write_op_operate(op, meta->ioctx, RBD_META_OBJECT, NULL, 0);
	rados_release_write_op(op);
	return r;
}

int rbd_meta_put_new(struct rbd_meta *meta, const char *key, const char *value)
{
	int r;

	if (!rbd_meta_key_valid(key) || !value_valid(value))
		return -EINVAL;
	r = change(meta, key, "", value);
	return r == -ECANCELED ? -EEXIST : r;
}

int rbd_meta_replace(struct rbd_meta *meta, const char *key, const char *old, const char *value)
{
	int r;

	if (!rbd_meta_key_valid(key) || !value_valid(old) || !value_valid(value))
		return -EINVAL;
	r = change(meta, key, old, value);
	/* No object: no key either. */
	return r == -ECANCELED || r == -ENOENT ? -ESTALE : r;
}

int rbd_meta_remove(struct rbd_meta *meta, const char *key, const char *old)
{
	int r;

	if (!rbd_meta_key_valid(key) || !value_valid(old))
		return -EINVAL;
	r = change(meta, key, old, NULL);
	return r == -ECANCELED || r == -ENOENT ? -ESTALE : r;
}

/* A copy of the LEN bytes at P with a NUL after them, or NULL. */
static char *copy(const char *p, size_t len)
{
	char *s = malloc(len + 1);

	if (s != NULL) {
		memcpy(s, p, len);
		s[len] = '\0';
	}
	return s;
}

int rbd_meta_get(struct rbd_meta *meta, const char *key, char **ret_value)
{
	rados_read_op_t op;
	rados_omap_iter_t it;
	char *k = NULL, *v = NULL, *value = NULL;
	size_t klen = 0, vlen = 0;
	int prval = 0, r;

	if (!rbd_meta_key_valid(key))
		return -EINVAL;
	op = rados_create_read_op();
	if (op == NULL)
		return -ENOMEM;
	rados_read_op_omap_get_vals_by_keys(op, &key, 1, &it, &prval);
	r = rados_read_op_operate(op, meta->ioctx, RBD_META_OBJECT, 0);
	if (r == 0)
		r = prval;
	if (r == 0) {
		r = rados_omap_get_next2(it, &k, &v, &klen, &vlen);
		if (r == 0 && k == NULL)
			r = -ENOENT;
		if (r == 0 && (value = copy(v, vlen)) == NULL)
			r = -ENOMEM;
		rados_omap_get_end(it);
	}
	rados_release_read_op(op);
	/* No object is -ENOENT too. */
	if (r < 0)
		return r;
	*ret_value = value;
	return 0;
}

/* One page of the list: up to PAGE keys that start with PREFIX, after *AFTER, each given
 * to FN; *AFTER is then the last of them, and *RET_MORE whether there are more. */
static int list_page(struct rbd_meta *meta, const char *prefix, unsigned page, char **after,
                     bool *ret_more, rbd_meta_list_fn fn, void *arg)
{
	rados_read_op_t op = rados_create_read_op();
	rados_omap_iter_t it;
	unsigned char more = 0;
	int prval = 0, r;

	if (op == NULL)
		return -ENOMEM;
	rados_read_op_omap_get_vals2(op, *after, prefix, page, &it, &more, &prval);
	r = rados_read_op_operate(op, meta->ioctx, RBD_META_OBJECT, 0);
	if (r == 0)
		r = prval;
	/* No object yet: nothing to list. */
	if (r == -ENOENT) {
		rados_release_read_op(op);
		*ret_more = false;
		return 0;
	}
	if (r == 0) {
		for (;;) {
			CLEANUP_FREE char *key = NULL, *value = NULL;
			char *k, *v;
			size_t klen, vlen;

			r = rados_omap_get_next2(it, &k, &v, &klen, &vlen);
			if (r < 0 || k == NULL)
				break;
			key = copy(k, klen);
			value = copy(v, vlen);
			if (key == NULL || value == NULL) {
				r = -ENOMEM;
				break;
			}
			r = fn(arg, key, value);
			if (r < 0)
				break;
			free(*after);
			*after = TAKE_PTR(key);
		}
		rados_omap_get_end(it);
	}
	rados_release_read_op(op);
	if (r < 0)
		return r;
	*ret_more = more != 0;
	return 0;
}

int rbd_meta_list(struct rbd_meta *meta, const char *prefix, unsigned page, rbd_meta_list_fn fn,
                  void *arg)
{
	CLEANUP_FREE char *after = NULL;
	bool more = true;
	int r = 0;

	if (!path_valid(prefix, true, 0, 2) || page == 0 || page > RBD_META_PAGE)
		return -EINVAL;
	after = strdup("");
	if (after == NULL)
		return -ENOMEM;
	while (more && r == 0)
		r = list_page(meta, prefix, page, &after, &more, fn, arg);
	return r;
}
