/* What the Ceph tests (tests/ceph/test-*.c) share: the cluster their script started and
 * named in the environment, connections to it, the reading back of an image, and the run
 * of the program's tests. */
#ifndef TP_CEPH_HARNESS_H
#define TP_CEPH_HARNESS_H

#include <check.h>
#include <rados/librados.h>
#include <stddef.h>
#include <stdint.h>

/* The cluster of start_cluster (tests/ceph/functions.sh), which every test's script
 * calls; ceph_harness_run reads it before the first test. */
struct ceph_cluster {
	const char *conf;         /* CEPH_CONF */
	const char *dir;          /* CEPH_TEST_DIR, the cluster's directory */
	const char *pool;         /* CEPH_TEST_POOL, an RBD pool */
	char admin_keyring[4096]; /* client.admin's, in dir */
};
extern struct ceph_cluster ceph_cluster;

/* Environment variable NAME, which the test's script sets; unset or empty, the program
 * exits 2 and says which and what to run instead. */
const char *ceph_harness_env(const char *name);

/* Run TESTS, N of them, as one test case of suite NAME with room for the cluster's pace
 * (120 s each), once the cluster is read from the environment; the exit code. */
int ceph_harness_run(const char *name, const TTest *const *tests, size_t n);

/* Connect to the cluster as NAME (client.ID) with KEYRING; librados' return. */
int ceph_harness_connect(const char *name, const char *keyring, rados_t *ret_cluster);

/* Connect as client.admin, or fail the test. */
rados_t ceph_harness_admin(void);

/* An I/O context on the pool in namespace NS ("" is the default one), or fail the test. */
rados_ioctx_t ceph_harness_ioctx(rados_t cluster, const char *ns);

/* Write LEN bytes of C at OFFSET of image NAME of IO, flushed, or fail the test. */
void ceph_harness_fill(rados_ioctx_t io, const char *name, uint64_t offset, size_t len, char c);

/* Open image NAME of IO read-only: librbd's error if it does not open, else 1 if the
 * 4 KiB at OFFSET are all C and 0 if not. */
int ceph_harness_holds(rados_ioctx_t io, const char *name, uint64_t offset, char c);

#endif
