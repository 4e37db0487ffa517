#!/usr/bin/env bash
# tests/ceph/test-rbd-meta.sh [TEST-BINARY]: the RBD backend's shared metadata
# (daemon/rbd-meta.c, issue 24) against a real one-node cluster (tests/ceph/cluster.sh):
# this script starts it, makes a tenant's namespace and key, runs test-rbd-meta with them
# (CEPH_CONF, CEPH_TEST_DIR, CEPH_TEST_POOL, RBD_META_TENANT_*), and stops the cluster and
# removes its directory at the end, also on failure.
#
#   - namespace alice in pool thinproxy, and client.thinproxy-alice with caps
#     `profile rbd pool=thinproxy namespace=alice`, its keyring alone in a 0600 file: the
#     key a tenant's nbdkit would have, which must not reach the metadata
#
# Run as root: make check-ceph, or tests/ceph/test-rbd-meta.sh build/tests/ceph/test-rbd-meta
. "$(dirname "$0")/functions.sh"
bin=$(test_program "${1-}")
ns=alice
client=client.thinproxy-$ns

start_cluster
timeout 60 rbd namespace create "$pool/$ns"
tenant_key "$client" "profile rbd pool=$pool namespace=$ns"

run_program RBD_META_TENANT_CLIENT=$client RBD_META_TENANT_KEYRING=$dir/$client.keyring \
	RBD_META_TENANT_NAMESPACE=$ns
