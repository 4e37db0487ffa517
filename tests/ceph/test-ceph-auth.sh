#!/usr/bin/env bash
# tests/ceph/test-ceph-auth.sh [TEST-BINARY]: the daemon's cephx keys and RADOS
# namespaces (daemon/ceph-auth.c, issue 24) against a real one-node cluster
# (tests/ceph/cluster.sh): this script starts it, runs test-ceph-auth with it (CEPH_CONF,
# CEPH_TEST_DIR, CEPH_TEST_POOL), and stops the cluster and removes its directory at the
# end, also on failure. The program makes every namespace, key and image it needs itself.
#
# Run as root: make check-ceph, or tests/ceph/test-ceph-auth.sh build/tests/ceph/test-ceph-auth
. "$(dirname "$0")/functions.sh"
bin=$(test_program "${1-}")

start_cluster
run_program
