#!/usr/bin/env bash
# tests/ceph/test-rbd-volumes.sh [TEST-BINARY]: the daemon's volumes as RBD images
# (daemon/rbd-volumes.c, issue 24) against a real one-node cluster (tests/ceph/cluster.sh):
# this script starts it, runs test-rbd-volumes with it (CEPH_CONF, CEPH_TEST_DIR,
# CEPH_TEST_POOL), and stops the cluster and removes its directory at the end, also on
# failure. The program makes every namespace and image it needs itself.
#
# Run as root: make check-ceph, or tests/ceph/test-rbd-volumes.sh build/tests/ceph/test-rbd-volumes
. "$(dirname "$0")/functions.sh"
bin=$(test_program "${1-}")

start_cluster
run_program
