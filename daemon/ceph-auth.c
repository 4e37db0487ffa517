/* Tenants' cephx keys and RADOS namespaces (see ceph-auth.h). */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ceph-auth.h"
#include "log.h"
#include "tp-cleanup.h"
#include "tp-rules.h"

/* A tenant's cephx entity is this and its name. */
#define ENTITY_PREFIX "client.thinproxy."
/* Seconds a connect, or a command to the monitor, may take before it fails with
 * -ETIMEDOUT: librados' defaults wait for ever, and the daemon must answer. */
#define TIMEOUT_S "30"
/* A cephx key in base64: 16 bytes of secret and its header, 40 characters today. */
#define KEY_MAX 128

struct ceph_auth {
	rados_t cluster;
	rados_ioctx_t ioctx; /* the pool, default namespace */
	char *pool;
};

static void json_put(json_object **obj)
{
	json_object_put(*obj);
}
#define CLEANUP_JSON __attribute__((cleanup(json_put)))

int ceph_auth_connect(const char *conf, const char *name, const char *keyring, const char *pool,
                      struct ceph_auth **ret_auth)
{
	struct ceph_auth *auth;
	int r;

	/* The pool's name goes into every tenant's caps. */
	if (!tp_name_valid(pool))
		return -EINVAL;
	auth = calloc(1, sizeof *auth);
	if (auth == NULL)
		return -ENOMEM;
	auth->pool = strdup(pool);
	if (auth->pool == NULL) {
		ceph_auth_close(auth);
		return -ENOMEM;
	}
	r = rados_create2(&auth->cluster, "ceph", name, 0);
	if (r < 0) {
		auth->cluster = NULL;
		ceph_auth_close(auth);
		return r;
	}
	if ((r = rados_conf_read_file(auth->cluster, conf)) < 0 ||
	    (r = rados_conf_set(auth->cluster, "keyring", keyring)) < 0 ||
	    (r = rados_conf_set(auth->cluster, "client_mount_timeout", TIMEOUT_S)) < 0 ||
	    (r = rados_conf_set(auth->cluster, "rados_mon_op_timeout", TIMEOUT_S)) < 0 ||
	    (r = rados_connect(auth->cluster)) < 0 ||
	    (r = rados_ioctx_create(auth->cluster, pool, &auth->ioctx)) < 0) {
		ceph_auth_close(auth);
		return r;
	}
	*ret_auth = auth;
	return 0;
}

void ceph_auth_close(struct ceph_auth *auth)
{
	if (auth == NULL)
		return;
	if (auth->ioctx != NULL)
		rados_ioctx_destroy(auth->ioctx);
	/* rados_shutdown also ends a handle that was created but never connected. */
	if (auth->cluster != NULL)
		rados_shutdown(auth->cluster);
	free(auth->pool);
	free(auth);
}

int ceph_auth_namespace_ensure(struct ceph_auth *auth, const char *tenant)
{
	bool exists = false;
	int r;

	if (!tp_name_valid(tenant))
		return -EINVAL;
	r = rbd_namespace_exists(auth->ioctx, tenant, &exists);
	if (r < 0 || exists)
		return r;
	r = rbd_namespace_create(auth->ioctx, tenant);
	/* Another daemon on the same pool may have made it since. */
	return r == -EEXIST ? 0 : r;
}

int ceph_auth_namespace_remove(struct ceph_auth *auth, const char *tenant)
{
	int r;

	if (!tp_name_valid(tenant))
		return -EINVAL;
	r = rbd_namespace_remove(auth->ioctx, tenant);
	return r == -ENOENT ? 0 : r;
}

/* Send CMD to the monitor. On success the output, if RET_OUT is not NULL, goes into
 * *RET_OUT (a string the caller frees). A refusal is logged with the command's prefix
 * and entity and the monitor's reason, unless it is -QUIET (an answer the caller takes
 * as success). */
static int mon_command(struct ceph_auth *auth, json_object *cmd, int quiet, char **ret_out)
{
	const char *text = json_object_to_json_string_ext(cmd, JSON_C_TO_STRING_PLAIN);
	char *out = NULL, *status = NULL;
	size_t out_len = 0, status_len = 0;
	json_object *prefix = NULL, *entity = NULL;
	int r;

	if (text == NULL)
		return -ENOMEM;
	r = rados_mon_command(auth->cluster, &text, 1, NULL, 0, &out, &out_len, &status,
	                      &status_len);
	if (r < 0 && r != -quiet) {
		json_object_object_get_ex(cmd, "prefix", &prefix);
		json_object_object_get_ex(cmd, "entity", &entity);
		log_errno(LOG_ERR, r, "ceph %s %s: %.*s: %m", json_object_get_string(prefix),
		          entity != NULL ? json_object_get_string(entity) : "",
		          (int)(status_len < INT_MAX ? status_len : INT_MAX),
		          status != NULL ? status : "");
	}
	if (r >= 0 && ret_out != NULL) {
		*ret_out = strndup(out != NULL ? out : "", out_len);
		if (*ret_out == NULL)
			r = -ENOMEM;
	}
	rados_buffer_free(out);
	rados_buffer_free(status);
	return r;
}

/* TENANT's cephx entity, client.thinproxy.TENANT (the caller frees it). */
static char *entity_name(const char *tenant)
{
	char *entity = NULL;

	return asprintf(&entity, ENTITY_PREFIX "%s", tenant) < 0 ? NULL : entity;
}

/* The monitor command PREFIX on ENTITY. */
static json_object *entity_command(const char *prefix, const char *entity)
{
	json_object *cmd = json_object_new_object();

	if (cmd == NULL ||
	    json_object_object_add(cmd, "prefix", json_object_new_string(prefix)) < 0 ||
	    json_object_object_add(cmd, "entity", json_object_new_string(entity)) < 0) {
		json_object_put(cmd);
		return NULL;
	}
	return cmd;
}

/* TENANT's osd caps: its namespace read-write, each of READ read-only. */
static char *osd_caps(const char *pool, const char *tenant, const char *const *read, size_t n)
{
	char *caps = NULL, *more;

	if (asprintf(&caps, "profile rbd pool=%s namespace=%s", pool, tenant) < 0)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (asprintf(&more, "%s, profile rbd-read-only pool=%s namespace=%s", caps, pool,
		             read[i]) < 0) {
			free(caps);
			return NULL;
		}
		free(caps);
		caps = more;
	}
	return caps;
}

/* Is KEY what a keyring line may hold: base64, not empty, not too long? */
static bool key_valid(const char *key)
{
	size_t len = strspn(key, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                         "0123456789+/=");

	return len > 0 && len < KEY_MAX && key[len] == '\0';
}

/* The key of the first entry of `auth get-or-create`'s JSON answer OUT. */
static int parse_key(const char *out, char **ret_key)
{
	CLEANUP_JSON json_object *answer = json_tokener_parse(out);
	json_object *key = NULL;

	if (answer == NULL || !json_object_is_type(answer, json_type_array) ||
	    json_object_array_length(answer) != 1 ||
	    !json_object_object_get_ex(json_object_array_get_idx(answer, 0), "key", &key) ||
	    !json_object_is_type(key, json_type_string) || !key_valid(json_object_get_string(key)))
		return -EBADMSG;
	*ret_key = strdup(json_object_get_string(key));
	return *ret_key != NULL ? 0 : -ENOMEM;
}

int ceph_auth_key_set(struct ceph_auth *auth, const char *tenant, const char *const *read, size_t n,
                      char **ret_key)
{
	CLEANUP_JSON json_object *get = NULL, *set = NULL;
	CLEANUP_FREE char *entity = NULL, *out = NULL, *caps = NULL, *key = NULL;
	json_object *list;
	int r;

	/* Every name is checked before anything is sent. */
	if (!tp_name_valid(tenant))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!tp_name_valid(read[i]))
			return -EINVAL;

	/* get-or-create with no caps: with caps, it refuses a key whose caps differ (a
	 * second call with other read namespaces); `auth caps` then sets exactly ours. A
	 * new key has no caps in between, so it opens nothing. */
	entity = entity_name(tenant);
	if (entity == NULL)
		return -ENOMEM;
	get = entity_command("auth get-or-create", entity);
	if (get == NULL ||
	    json_object_object_add(get, "format", json_object_new_string("json")) < 0)
		return -ENOMEM;
	r = mon_command(auth, get, 0, &out);
	if (r < 0)
		return r;
	r = parse_key(out, &key);
	if (r < 0)
		return log_errno(LOG_ERR, r, "ceph auth get-or-create %s: unexpected answer: %m",
		                 entity);

	caps = osd_caps(auth->pool, tenant, read, n);
	set = entity_command("auth caps", entity);
	list = json_object_new_array();
	if (caps == NULL || set == NULL || list == NULL ||
	    json_object_object_add(set, "caps", list) < 0) {
		json_object_put(list);
		return -ENOMEM;
	}
	if (json_object_array_add(list, json_object_new_string("mon")) < 0 ||
	    json_object_array_add(list, json_object_new_string("profile rbd")) < 0 ||
	    json_object_array_add(list, json_object_new_string("osd")) < 0 ||
	    json_object_array_add(list, json_object_new_string(caps)) < 0)
		return -ENOMEM;
	r = mon_command(auth, set, 0, NULL);
	if (r < 0)
		return r;
	*ret_key = TAKE_PTR(key);
	return 0;
}

int ceph_auth_key_remove(struct ceph_auth *auth, const char *tenant, const char *path)
{
	CLEANUP_JSON json_object *cmd = NULL;
	CLEANUP_FREE char *entity = NULL;
	int r;

	if (!tp_name_valid(tenant))
		return -EINVAL;
	entity = entity_name(tenant);
	if (entity == NULL)
		return -ENOMEM;
	cmd = entity_command("auth rm", entity);
	if (cmd == NULL)
		return -ENOMEM;
	r = mon_command(auth, cmd, ENOENT, NULL);
	if (r < 0 && r != -ENOENT)
		return r;
	if (path != NULL && unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

/* Write all of BUF to FD. */
static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int ceph_auth_keyring_write(const char *path, const char *tenant, const char *key, uid_t uid,
                            gid_t gid)
{
	CLEANUP_FREE char *tmp = NULL, *text = NULL, *dir = NULL;
	CLEANUP_CLOSE int fd = -1, dirfd = -1;
	const char *slash;
	int len, r;

	if (!tp_name_valid(tenant) || !key_valid(key))
		return -EINVAL;
	slash = strrchr(path, '/');
	dir =
	    slash == NULL ? strdup(".") : strndup(path, slash == path ? 1 : (size_t)(slash - path));
	if (dir == NULL || asprintf(&tmp, "%s.XXXXXX", path) < 0)
		return -ENOMEM;
	len = asprintf(&text, "[" ENTITY_PREFIX "%s]\n\tkey = %s\n", tenant, key);
	if (len < 0)
		return -ENOMEM;

	/* mkostemp makes the file 0600 and O_EXCL, so nothing already there (a link planted
	 * under the name) is followed; it is chowned before the key goes in. */
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fchmod(fd, 0600) < 0 || fchown(fd, uid, gid) < 0)
		goto fail;
	r = write_all(fd, text, (size_t)len);
	if (r < 0) {
		errno = -r;
		goto fail;
	}
	if (fsync(fd) < 0 || rename(tmp, path) < 0)
		goto fail;
	/* The rename is durable once the directory is. */
	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0 || fsync(dirfd) < 0)
		return -errno;
	return 0;

fail:
	r = -errno;
	unlink(tmp);
	return r;
}
