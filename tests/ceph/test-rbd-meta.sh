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
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cluster=$here/cluster.sh
bin=$(realpath -e "${1:-${TP_BUILD:-build}/tests/ceph/test-rbd-meta}")
pool=thinproxy
ns=alice
client=client.thinproxy-$ns

fail() {
	echo "test-rbd-meta: $*" >&2
	exit 1
}
[ "$(id -u)" = 0 ] || fail "must run as root"

dir=$(mktemp -d /tmp/thinproxy-rbd-meta.XXXXXX)
cleanup() {
	if "$cluster" stop "$dir"; then
		rm -rf "$dir"
	else
		echo "test-rbd-meta: could not stop the cluster in $dir; left it there" >&2
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$cluster" start "$dir" "$pool" || fail "cluster.sh start"
eval "$("$cluster" env "$dir")"

timeout 60 rbd namespace create "$pool/$ns"
(umask 077 && timeout 60 ceph auth get-or-create "$client" mon 'profile rbd' \
	osd "profile rbd pool=$pool namespace=$ns" -o "$dir/$client.keyring")
[ "$(stat -c %a "$dir/$client.keyring")" = 600 ] || fail "$client.keyring not 0600"

t0=$SECONDS
RBD_META_TENANT_CLIENT=$client RBD_META_TENANT_KEYRING=$dir/$client.keyring \
	RBD_META_TENANT_NAMESPACE=$ns "$bin" || fail "$(basename "$bin") failed"
echo "PASS test-rbd-meta (tests $((SECONDS - t0)) s, total $SECONDS s)"
