#!/usr/bin/env bash
# tests/ceph/test-rbd-volumes.sh [TEST-BINARY]: the daemon's volumes as RBD images
# (daemon/rbd-volumes.c, issue 24) against a real one-node cluster (tests/ceph/cluster.sh):
# this script starts it, runs test-rbd-volumes with it (CEPH_CONF, CEPH_TEST_DIR,
# CEPH_TEST_POOL), and stops the cluster and removes its directory at the end, also on
# failure. The program makes every namespace and image it needs itself.
#
# Run as root: make check-ceph, or tests/ceph/test-rbd-volumes.sh build/tests/ceph/test-rbd-volumes
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cluster=$here/cluster.sh
bin=$(realpath -e "${1:-${TP_BUILD:-build}/tests/ceph/test-rbd-volumes}")

fail() {
	echo "test-rbd-volumes: $*" >&2
	exit 1
}
[ "$(id -u)" = 0 ] || fail "must run as root"

dir=$(mktemp -d /tmp/thinproxy-rbd-volumes.XXXXXX)
cleanup() {
	if "$cluster" stop "$dir"; then
		rm -rf "$dir"
	else
		echo "test-rbd-volumes: could not stop the cluster in $dir; left it there" >&2
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$cluster" start "$dir" thinproxy || fail "cluster.sh start"
eval "$("$cluster" env "$dir")"
t0=$SECONDS
"$bin" || fail "$(basename "$bin") failed"
echo "PASS test-rbd-volumes (tests $((SECONDS - t0)) s, total $SECONDS s)"
