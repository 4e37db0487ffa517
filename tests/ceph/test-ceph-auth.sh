#!/usr/bin/env bash
# tests/ceph/test-ceph-auth.sh [TEST-BINARY]: the daemon's cephx keys and RADOS
# namespaces (daemon/ceph-auth.c, issue 24) against a real one-node cluster
# (tests/ceph/cluster.sh): this script starts it, runs test-ceph-auth with it (CEPH_CONF,
# CEPH_TEST_DIR, CEPH_TEST_POOL), and stops the cluster and removes its directory at the
# end, also on failure. The program makes every namespace, key and image it needs itself.
#
# Run as root: make check-ceph, or tests/ceph/test-ceph-auth.sh build/tests/ceph/test-ceph-auth
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cluster=$here/cluster.sh
bin=$(realpath -e "${1:-${TP_BUILD:-build}/tests/ceph/test-ceph-auth}")

fail() {
	echo "test-ceph-auth: $*" >&2
	exit 1
}
[ "$(id -u)" = 0 ] || fail "must run as root"

dir=$(mktemp -d /tmp/thinproxy-ceph-auth.XXXXXX)
cleanup() {
	if "$cluster" stop "$dir"; then
		rm -rf "$dir"
	else
		echo "test-ceph-auth: could not stop the cluster in $dir; left it there" >&2
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$cluster" start "$dir" thinproxy || fail "cluster.sh start"
eval "$("$cluster" env "$dir")"
t0=$SECONDS
"$bin" || fail "$(basename "$bin") failed"
echo "PASS test-ceph-auth (tests $((SECONDS - t0)) s, total $SECONDS s)"
