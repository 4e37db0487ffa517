/* daemon/ceph-auth.c against a real one-node cluster (tests/ceph/cluster.sh), which
 * tests/ceph/test-ceph-auth.sh starts and names in the environment: CEPH_CONF,
 * CEPH_TEST_DIR (holds admin.keyring) and CEPH_TEST_POOL. Each test uses tenants of its
 * own, so the order does not matter. The tenant's side is plain librados and librbd with
 * the keyring the module wrote: what a tenant's nbdkit would have. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../daemon/ceph-auth.h"
#include "../../daemon/log.h"
#include "ceph-harness.h"
#include "tp-cleanup.h"

#define IMAGE_SIZE (UINT64_C(4) << 20)
/* Owner of the keyrings: no such user on the host, as a tenant's nbdkit uid. */
#define TENANT_UID 2000000000
#define TENANT_GID 2000000001

/* The daemon's side: the module connected as client.admin. */
static struct ceph_auth *admin(void)
{
	struct ceph_auth *auth = NULL;
	int r;

	r = ceph_auth_connect(ceph_cluster.conf, "client.admin", ceph_cluster.admin_keyring,
	                      ceph_cluster.pool, &auth);
	ck_assert_msg(r == 0, "ceph_auth_connect as client.admin: %s", strerror(-r));
	return auth;
}

/* Where TENANT's keyring goes: DIR/keys-TENANT/TENANT.keyring, the directory made. */
static void keyring_path(const char *tenant, char *buf, size_t size)
{
	snprintf(buf, size, "%s/keys-%s", ceph_cluster.dir, tenant);
	ck_assert(mkdir(buf, 0700) == 0 || errno == EEXIST);
	snprintf(buf, size, "%s/keys-%s/%s.keyring", ceph_cluster.dir, tenant, tenant);
}

/* Make TENANT's namespace and key (with READ), write its keyring into PATH; its key. */
static char *make_tenant(struct ceph_auth *auth, const char *tenant, const char *const *read,
                         size_t n, char *path, size_t size)
{
	char *key = NULL;

	ck_assert_int_eq(ceph_auth_namespace_ensure(auth, tenant), 0);
	ck_assert_int_eq(ceph_auth_key_set(auth, tenant, read, n, &key), 0);
	keyring_path(tenant, path, size);
	ck_assert_int_eq(ceph_auth_keyring_write(path, tenant, key, TENANT_UID, TENANT_GID), 0);
	return key;
}

/* Make image NAME in IO (4 MiB, layering only) holding FILL in its first 4 KiB. */
static void make_image(rados_ioctx_t io, const char *name, char fill)
{
	int order = 0;

	ck_assert_int_eq(rbd_create(io, name, IMAGE_SIZE, &order), 0);
	ceph_harness_fill(io, name, 0, 4096, fill);
}

/* The whole of file PATH, NUL-terminated. */
static char *slurp(const char *path)
{
	static char buf[4096];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	ck_assert_msg(fd >= 0, "%s: %m", path);
	n = read(fd, buf, sizeof buf - 1);
	ck_assert_int_ge(n, 0);
	close(fd);
	buf[n] = '\0';
	return buf;
}

START_TEST(tenant_key_opens_own_namespace_only)
{
	struct ceph_auth *auth = admin();
	char path[4096], buf[4096], back[4096];
	rados_t admin_cluster = ceph_harness_admin(), cluster;
	rados_ioctx_t io;
	rbd_image_t image;
	int order = 0;

	free(make_tenant(auth, "alpha", NULL, 0, path, sizeof path));
	ck_assert_int_eq(ceph_auth_namespace_ensure(auth, "beta"), 0);
	io = ceph_harness_ioctx(admin_cluster, "beta");
	make_image(io, "img", 'b');
	rados_ioctx_destroy(io);
	io = ceph_harness_ioctx(admin_cluster, "");
	make_image(io, "default-img", 'd');
	rados_ioctx_destroy(io);

	ck_assert_int_eq(ceph_harness_connect("client.thinproxy.alpha", path, &cluster), 0);
	/* its own namespace: create an image, write, read back */
	io = ceph_harness_ioctx(cluster, "alpha");
	memset(buf, 'a', sizeof buf);
	ck_assert_int_eq(rbd_create(io, "own", IMAGE_SIZE, &order), 0);
	ck_assert_int_eq(rbd_open(io, "own", &image, NULL), 0);
	ck_assert_int_eq(rbd_write(image, 8192, sizeof buf, buf), sizeof buf);
	ck_assert_int_eq(rbd_flush(image), 0);
	ck_assert_int_eq(rbd_read(image, 8192, sizeof back, back), sizeof back);
	ck_assert(memcmp(buf, back, sizeof buf) == 0);
	ck_assert_int_eq(rbd_close(image), 0);
	rados_ioctx_destroy(io);

	/* another tenant's namespace: no open, no create, no raw object */
	io = ceph_harness_ioctx(cluster, "beta");
	ck_assert_int_eq(rbd_open(io, "img", &image, NULL), -EPERM);
	ck_assert_int_eq(rbd_open_read_only(io, "img", &image, NULL), -EPERM);
	ck_assert_int_eq(rbd_create(io, "new", IMAGE_SIZE, &order), -EPERM);
	ck_assert_int_eq(rados_write_full(io, "x", buf, sizeof buf), -EPERM);
	rados_ioctx_destroy(io);
	/* the pool's default namespace: the same */
	io = ceph_harness_ioctx(cluster, "");
	ck_assert_int_eq(rbd_open_read_only(io, "default-img", &image, NULL), -EPERM);
	ck_assert_int_eq(rbd_create(io, "new", IMAGE_SIZE, &order), -EPERM);
	ck_assert_int_eq(rados_write_full(io, "x", buf, sizeof buf), -EPERM);
	rados_ioctx_destroy(io);
	rados_shutdown(cluster);

	/* beta's image is as the admin left it */
	io = ceph_harness_ioctx(admin_cluster, "beta");
	ck_assert_int_eq(ceph_harness_holds(io, "img", 0, 'b'), 1);
	rados_ioctx_destroy(io);
	rados_shutdown(admin_cluster);
	ceph_auth_close(auth);
}
END_TEST

/* ENTITY as `auth get` gives it in JSON: its key and caps. */
static char *auth_get(const char *entity)
{
	static char copy[4096];
	char cmd[256], *out = NULL, *status = NULL;
	const char *cmds[] = {cmd};
	size_t out_len = 0, status_len = 0;
	rados_t cluster = ceph_harness_admin();

	snprintf(cmd, sizeof cmd,
	         "{\"prefix\": \"auth get\", \"entity\": \"%s\", \"format\": \"json\"}", entity);
	ck_assert_int_eq(
	    rados_mon_command(cluster, cmds, 1, NULL, 0, &out, &out_len, &status, &status_len), 0);
	ck_assert_uint_lt(out_len, sizeof copy);
	memcpy(copy, out, out_len);
	copy[out_len] = '\0';
	rados_buffer_free(out);
	rados_buffer_free(status);
	rados_shutdown(cluster);
	return copy;
}

/* client.thinproxy.gamma's caps are exactly mon 'profile rbd' and osd 'profile rbd' on
 * its namespace, then 'profile rbd-read-only' on READ unless it is NULL. */
static void assert_gamma_caps(const char *read)
{
	char more[256] = "", want[1024];

	if (read != NULL)
		snprintf(more, sizeof more, ", profile rbd-read-only pool=%s namespace=%s",
		         ceph_cluster.pool, read);
	snprintf(want, sizeof want,
	         "\"caps\":{\"mon\":\"profile rbd\",\"osd\":\"profile rbd pool=%s "
	         "namespace=gamma%s\"}}]",
	         ceph_cluster.pool, more);
	ck_assert_msg(strstr(auth_get("client.thinproxy.gamma"), want) != NULL, "caps: %s, not %s",
	              auth_get("client.thinproxy.gamma"), want);
}

START_TEST(key_set_again_keeps_key_and_sets_read_namespaces)
{
	struct ceph_auth *auth = admin();
	const char *read[] = {"published"};
	char path[4096], *key1, *key2 = NULL, *key3 = NULL, buf[4096];
	rados_t admin_cluster = ceph_harness_admin(), cluster;
	rados_ioctx_t io;
	rbd_image_t image;

	ck_assert_int_eq(ceph_auth_namespace_ensure(auth, "published"), 0);
	io = ceph_harness_ioctx(admin_cluster, "published");
	make_image(io, "base", 'p');
	rados_ioctx_destroy(io);
	rados_shutdown(admin_cluster);

	key1 = make_tenant(auth, "gamma", NULL, 0, path, sizeof path);
	ck_assert_int_eq(ceph_auth_key_set(auth, "gamma", NULL, 0, &key2), 0);
	ck_assert_str_eq(key1, key2);
	assert_gamma_caps(NULL);
	ck_assert_int_eq(ceph_harness_connect("client.thinproxy.gamma", path, &cluster), 0);
	io = ceph_harness_ioctx(cluster, "published");
	ck_assert_int_eq(ceph_harness_holds(io, "base", 0, 'p'), -EPERM);
	rados_ioctx_destroy(io);
	rados_shutdown(cluster);

	/* with "published" to read: the same key reads it, writes nothing there */
	free(key2);
	key2 = NULL;
	ck_assert_int_eq(ceph_auth_key_set(auth, "gamma", read, 1, &key2), 0);
	ck_assert_str_eq(key1, key2);
	assert_gamma_caps("published");
	ck_assert_int_eq(ceph_harness_connect("client.thinproxy.gamma", path, &cluster), 0);
	io = ceph_harness_ioctx(cluster, "published");
	ck_assert_int_eq(ceph_harness_holds(io, "base", 0, 'p'), 1);
	/* a read-write open fails already (librbd's open needs to write), a raw write too */
	ck_assert_int_eq(rbd_open(io, "base", &image, NULL), -EPERM);
	memset(buf, 'x', sizeof buf);
	ck_assert_int_eq(rados_write_full(io, "x", buf, sizeof buf), -EPERM);
	rados_ioctx_destroy(io);
	/* and its own namespace is still its own */
	io = ceph_harness_ioctx(cluster, "gamma");
	make_image(io, "own", 'g');
	rados_ioctx_destroy(io);
	rados_shutdown(cluster);

	/* "published" taken away again: a new connection cannot read it */
	ck_assert_int_eq(ceph_auth_key_set(auth, "gamma", NULL, 0, &key3), 0);
	ck_assert_str_eq(key1, key3);
	assert_gamma_caps(NULL);
	ck_assert_int_eq(ceph_harness_connect("client.thinproxy.gamma", path, &cluster), 0);
	io = ceph_harness_ioctx(cluster, "published");
	ck_assert_int_eq(ceph_harness_holds(io, "base", 0, 'p'), -EPERM);
	rados_ioctx_destroy(io);
	io = ceph_harness_ioctx(cluster, "gamma");
	ck_assert_int_eq(ceph_harness_holds(io, "own", 0, 'g'), 1);
	rados_ioctx_destroy(io);
	rados_shutdown(cluster);

	free(key1);
	free(key2);
	free(key3);
	ceph_auth_close(auth);
}
END_TEST

START_TEST(keyring_is_0600_owned_by_tenant_and_alone)
{
	struct ceph_auth *auth = admin();
	char path[4096], want[256], *key;
	struct stat st;
	struct dirent *e;
	DIR *d;
	int entries = 0;

	key = make_tenant(auth, "delta", NULL, 0, path, sizeof path);
	/* written twice: the second replaces the first */
	ck_assert_int_eq(ceph_auth_keyring_write(path, "delta", key, TENANT_UID, TENANT_GID), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert(S_ISREG(st.st_mode));
	ck_assert_uint_eq(st.st_mode & 07777, 0600);
	ck_assert_uint_eq(st.st_uid, TENANT_UID);
	ck_assert_uint_eq(st.st_gid, TENANT_GID);
	snprintf(want, sizeof want, "[client.thinproxy.delta]\n\tkey = %s\n", key);
	ck_assert_str_eq(slurp(path), want);

	/* no temporary file left beside it */
	*strrchr(path, '/') = '\0';
	d = opendir(path);
	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
			ck_assert_str_eq(e->d_name, "delta.keyring");
			entries++;
		}
	closedir(d);
	ck_assert_int_eq(entries, 1);

	/* a key that is not base64 is not written */
	strcat(path, "/delta.keyring");
	ck_assert_int_eq(
	    ceph_auth_keyring_write(path, "delta", "AQ==\n[x]", TENANT_UID, TENANT_GID), -EINVAL);
	ck_assert_str_eq(slurp(path), want);
	free(key);
	ceph_auth_close(auth);
}
END_TEST

START_TEST(removed_key_is_refused)
{
	struct ceph_auth *auth = admin();
	char path[4096], copy[4096 + 8], *key;
	rados_t cluster;
	int r;

	key = make_tenant(auth, "epsilon", NULL, 0, path, sizeof path);
	snprintf(copy, sizeof copy, "%s.copy", path);
	ck_assert_int_eq(ceph_auth_keyring_write(copy, "epsilon", key, 0, 0), 0);
	ck_assert_int_eq(ceph_harness_connect("client.thinproxy.epsilon", copy, &cluster), 0);
	rados_shutdown(cluster);

	ck_assert_int_eq(ceph_auth_key_remove(auth, "epsilon", path), 0);
	ck_assert_int_eq(access(path, F_OK), -1);
	ck_assert_int_eq(errno, ENOENT);
	r = ceph_harness_connect("client.thinproxy.epsilon", copy, &cluster);
	ck_assert_int_eq(r, -EACCES);
	/* twice is fine, with or without the file */
	ck_assert_int_eq(ceph_auth_key_remove(auth, "epsilon", path), 0);
	ck_assert_int_eq(ceph_auth_key_remove(auth, "epsilon", NULL), 0);
	/* a new key for the same tenant is a new secret */
	{
		char *again = NULL;

		ck_assert_int_eq(ceph_auth_key_set(auth, "epsilon", NULL, 0, &again), 0);
		ck_assert_str_ne(again, key);
		free(again);
		ck_assert_int_eq(ceph_auth_key_remove(auth, "epsilon", NULL), 0);
	}
	free(key);
	ceph_auth_close(auth);
}
END_TEST

START_TEST(namespace_ensure_twice_remove_only_when_empty)
{
	struct ceph_auth *auth = admin();
	rados_t admin_cluster = ceph_harness_admin();
	rados_ioctx_t io, pool_io;
	bool exists = false;

	ck_assert_int_eq(ceph_auth_namespace_ensure(auth, "zeta"), 0);
	ck_assert_int_eq(ceph_auth_namespace_ensure(auth, "zeta"), 0);
	pool_io = ceph_harness_ioctx(admin_cluster, "");
	ck_assert_int_eq(rbd_namespace_exists(pool_io, "zeta", &exists), 0);
	ck_assert(exists);

	/* not empty: refused, the image still there and whole */
	io = ceph_harness_ioctx(admin_cluster, "zeta");
	make_image(io, "keep", 'z');
	ck_assert_int_eq(ceph_auth_namespace_remove(auth, "zeta"), -EBUSY);
	ck_assert_int_eq(rbd_namespace_exists(pool_io, "zeta", &exists), 0);
	ck_assert(exists);
	ck_assert_int_eq(ceph_harness_holds(io, "keep", 0, 'z'), 1);

	/* empty: removed, and again is fine */
	ck_assert_int_eq(rbd_remove(io, "keep"), 0);
	rados_ioctx_destroy(io);
	ck_assert_int_eq(ceph_auth_namespace_remove(auth, "zeta"), 0);
	ck_assert_int_eq(rbd_namespace_exists(pool_io, "zeta", &exists), 0);
	ck_assert(!exists);
	ck_assert_int_eq(ceph_auth_namespace_remove(auth, "zeta"), 0);

	rados_ioctx_destroy(pool_io);
	rados_shutdown(admin_cluster);
	ceph_auth_close(auth);
}
END_TEST

START_TEST(monitor_refusal_is_returned_as_errno)
{
	struct ceph_auth *auth = admin(), *tenant = NULL;
	char path[4096], *key, *other = NULL;

	/* a tenant's key may not make keys: the monitor's refusal comes back as -EACCES */
	key = make_tenant(auth, "eta", NULL, 0, path, sizeof path);
	ck_assert_int_eq(ceph_auth_connect(ceph_cluster.conf, "client.thinproxy.eta", path,
	                                   ceph_cluster.pool, &tenant),
	                 0);
	ck_assert_int_eq(ceph_auth_key_set(tenant, "theta", NULL, 0, &other), -EACCES);
	ck_assert_int_eq(ceph_auth_key_set(tenant, "eta", NULL, 0, &other), -EACCES);
	ck_assert_int_eq(ceph_auth_key_remove(tenant, "eta", NULL), -EACCES);
	ck_assert_ptr_null(other);
	ceph_auth_close(tenant);
	/* and the key is still there, with its caps */
	ck_assert_int_eq(ceph_auth_key_set(auth, "eta", NULL, 0, &other), 0);
	ck_assert_str_eq(other, key);
	free(other);
	free(key);
	ceph_auth_close(auth);
}
END_TEST

/* `auth ls` as JSON, for a before-and-after comparison. */
static char *auth_ls(rados_t cluster)
{
	const char *cmd = "{\"prefix\": \"auth ls\", \"format\": \"json\"}";
	char *out = NULL, *status = NULL, *copy;
	size_t out_len = 0, status_len = 0;

	ck_assert_int_eq(
	    rados_mon_command(cluster, &cmd, 1, NULL, 0, &out, &out_len, &status, &status_len), 0);
	copy = strndup(out, out_len);
	rados_buffer_free(out);
	rados_buffer_free(status);
	return copy;
}

START_TEST(bad_names_refused_before_the_monitor)
{
	static const char *const bad[] = {
	    "a'b",
	    "a\"b",
	    "a b",
	    "a=b",
	    "a,b",
	    "a;b",
	    "Upper",
	    "",
	    "-dash",
	    "a/b",
	    "a\nb",
	    "x namespace=other",
	    "0123456789012345678901234567890123456789012345678901234567890123",
	};
	struct ceph_auth *auth = admin(), *other = NULL;
	rados_t admin_cluster = ceph_harness_admin();
	char *before = auth_ls(admin_cluster), *after, *key = NULL, path[4096];
	rados_ioctx_t pool_io = ceph_harness_ioctx(admin_cluster, "");
	char ns_before[4096], ns_after[4096];
	size_t len = sizeof ns_before;

	ck_assert_int_eq(rbd_namespace_list(pool_io, ns_before, &len), (int)len);
	snprintf(path, sizeof path, "%s/bad.keyring", ceph_cluster.dir);
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		const char *read[] = {"fine", bad[i]};

		ck_assert_int_eq(ceph_auth_namespace_ensure(auth, bad[i]), -EINVAL);
		ck_assert_int_eq(ceph_auth_namespace_remove(auth, bad[i]), -EINVAL);
		ck_assert_int_eq(ceph_auth_key_set(auth, bad[i], NULL, 0, &key), -EINVAL);
		ck_assert_int_eq(ceph_auth_key_set(auth, "fine", read, 2, &key), -EINVAL);
		ck_assert_int_eq(ceph_auth_key_remove(auth, bad[i], NULL), -EINVAL);
		ck_assert_int_eq(ceph_auth_keyring_write(path, bad[i], "AQ==", 0, 0), -EINVAL);
	}
	ck_assert_ptr_null(key);
	ck_assert_int_eq(access(path, F_OK), -1);
	/* a pool name goes into caps too */
	ck_assert_int_eq(ceph_auth_connect(ceph_cluster.conf, "client.admin",
	                                   ceph_cluster.admin_keyring, "p namespace=x", &other),
	                 -EINVAL);
	ck_assert_ptr_null(other);

	/* nothing changed on the cluster: no key (not even "fine"), no namespace */
	after = auth_ls(admin_cluster);
	ck_assert_str_eq(before, after);
	ck_assert(strstr(after, "client.thinproxy.fine") == NULL);
	len = sizeof ns_after;
	ck_assert_int_eq(rbd_namespace_list(pool_io, ns_after, &len), (int)len);
	ck_assert_int_eq(memcmp(ns_before, ns_after, len), 0);

	free(before);
	free(after);
	rados_ioctx_destroy(pool_io);
	rados_shutdown(admin_cluster);
	ceph_auth_close(auth);
}
END_TEST

int main(void)
{
	const TTest *tests[] = {
	    tenant_key_opens_own_namespace_only,
	    key_set_again_keeps_key_and_sets_read_namespaces,
	    keyring_is_0600_owned_by_tenant_and_alone,
	    removed_key_is_refused,
	    namespace_ensure_twice_remove_only_when_empty,
	    bad_names_refused_before_the_monitor,
	    monitor_refusal_is_returned_as_errno,
	};

	log_init("test-ceph-auth", false, LOG_DEBUG);
	return ceph_harness_run("ceph-auth", tests, ARRAY_SIZE(tests));
}
