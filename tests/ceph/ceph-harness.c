/* The shared parts of the Ceph tests (ceph-harness.h). */
#include <errno.h>
#include <rbd/librbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ceph-harness.h"
#include "tp-cleanup.h"

struct ceph_cluster ceph_cluster;

const char *ceph_harness_env(const char *name)
{
	const char *value = getenv(name);

	if (value == NULL || value[0] == '\0') {
		/* Run by hand, without the script: no cluster to test against. */
		fprintf(stderr,
		        "%s: %s is not set: run tests/ceph/%s.sh, which starts the cluster\n",
		        program_invocation_short_name, name, program_invocation_short_name);
		exit(2);
	}
	return value;
}

int ceph_harness_run(const char *name, const TTest *const *tests, size_t n)
{
	Suite *s = suite_create(name);
	TCase *tc = tcase_create(name);
	SRunner *sr;
	int failed;

	ceph_cluster.conf = ceph_harness_env("CEPH_CONF");
	ceph_cluster.dir = ceph_harness_env("CEPH_TEST_DIR");
	ceph_cluster.pool = ceph_harness_env("CEPH_TEST_POOL");
	snprintf(ceph_cluster.admin_keyring, sizeof ceph_cluster.admin_keyring, "%s/admin.keyring",
	         ceph_cluster.dir);
	/* A one-node cluster on a busy host: a watch or a lock can take tens of seconds. */
	tcase_set_timeout(tc, 120);
	for (size_t i = 0; i < n; i++)
		tcase_add_test(tc, tests[i]);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_VERBOSE);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

int ceph_harness_connect(const char *name, const char *keyring, rados_t *ret_cluster)
{
	rados_t cluster;
	int r;

	ck_assert_int_eq(rados_create2(&cluster, "ceph", name, 0), 0);
	ck_assert_int_eq(rados_conf_read_file(cluster, ceph_cluster.conf), 0);
	ck_assert_int_eq(rados_conf_set(cluster, "keyring", keyring), 0);
	/* A refused key fails at once; a cluster that does not answer, within the test. */
	ck_assert_int_eq(rados_conf_set(cluster, "client_mount_timeout", "20"), 0);
	r = rados_connect(cluster);
	if (r < 0) {
		rados_shutdown(cluster);
		return r;
	}
	*ret_cluster = cluster;
	return 0;
}

rados_t ceph_harness_admin(void)
{
	rados_t cluster;
	int r = ceph_harness_connect("client.admin", ceph_cluster.admin_keyring, &cluster);

	ck_assert_msg(r == 0, "connect as client.admin: %s", strerror(-r));
	return cluster;
}

rados_ioctx_t ceph_harness_ioctx(rados_t cluster, const char *ns)
{
	rados_ioctx_t io;
	int r = rados_ioctx_create(cluster, ceph_cluster.pool, &io);

	ck_assert_msg(r == 0, "ioctx on %s: %s", ceph_cluster.pool, strerror(-r));
	rados_ioctx_set_namespace(io, ns);
	return io;
}

void ceph_harness_fill(rados_ioctx_t io, const char *name, uint64_t offset, size_t len, char c)
{
	CLEANUP_FREE char *buf = malloc(len);
	rbd_image_t image;
	int r;

	ck_assert_ptr_nonnull(buf);
	memset(buf, c, len);
	r = rbd_open(io, name, &image, NULL);
	ck_assert_msg(r == 0, "open %s: %s", name, strerror(-r));
	ck_assert_int_eq(rbd_write(image, offset, len, buf), (ssize_t)len);
	ck_assert_int_eq(rbd_flush(image), 0);
	ck_assert_int_eq(rbd_close(image), 0);
}

int ceph_harness_holds(rados_ioctx_t io, const char *name, uint64_t offset, char c)
{
	char buf[4096], want[4096];
	rbd_image_t image;
	int r;

	r = rbd_open_read_only(io, name, &image, NULL);
	if (r < 0)
		return r;
	memset(want, c, sizeof want);
	ck_assert_int_eq(rbd_read(image, offset, sizeof buf, buf), (ssize_t)sizeof buf);
	ck_assert_int_eq(rbd_close(image), 0);
	return memcmp(buf, want, sizeof buf) == 0;
}
