#!/usr/bin/env bash
# tests/ceph/test-rbd-io.sh [TEST-BINARY]: the plugin's RBD I/O (nbdkit-plugin/rbd-io.c,
# issue 24) against a real one-node cluster (tests/ceph/cluster.sh): this script starts
# it, makes the tenant's namespace and key and the images, runs test-rbd-io with them, and
# stops the cluster and removes its directory at the end, also on failure.
#
# Run as root: make check-ceph, or tests/ceph/test-rbd-io.sh build/tests/ceph/test-rbd-io
#
#   - namespaces "tenant" and "other" in pool thinproxy
#   - client.thinproxy-tenant, caps `profile rbd pool=thinproxy namespace=tenant`, its
#     keyring alone in a 0600 file: the key the plugin is given
#   - images in tenant, made by the admin: rw, zero, trim (default features: layering,
#     exclusive-lock, object-map, fast-diff, deep-flatten), fd (the same, named for its
#     fast-diff), plain (layering only: no object map, no fast-diff), parent (for the
#     clone test, which snapshots and clones it itself with the tenant's key), lock, dead,
#     fence and ops (full features, for the one-writer tests); "img" in other
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cluster=$here/cluster.sh
bin=$(realpath -e "${1:-${TP_BUILD:-build}/tests/ceph/test-rbd-io}")
pool=thinproxy
ns=tenant
client=client.thinproxy-tenant

fail() {
	echo "test-rbd-io: $*" >&2
	exit 1
}
[ "$(id -u)" = 0 ] || fail "must run as root"

dir=$(mktemp -d /tmp/thinproxy-rbd-io.XXXXXX)
cleanup() {
	if "$cluster" stop "$dir"; then
		rm -rf "$dir"
	else
		echo "test-rbd-io: could not stop the cluster in $dir; left it there" >&2
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$cluster" start "$dir" "$pool" || fail "cluster.sh start"
eval "$("$cluster" env "$dir")"

adm() { timeout 60 rbd "$@"; }
adm namespace create "$pool/$ns"
adm namespace create "$pool/other"
(umask 077 && timeout 60 ceph auth get-or-create "$client" mon 'profile rbd' \
	osd "profile rbd pool=$pool namespace=$ns" -o "$dir/$client.keyring")
[ "$(stat -c %a "$dir/$client.keyring")" = 600 ] || fail "$client.keyring not 0600"

full=layering,exclusive-lock,object-map,fast-diff,deep-flatten
for img in rw zero trim fd parent lock dead fence ops; do
	adm create --size 64M --image-feature "$full" "$pool/$ns/$img"
done
adm create --size 64M --image-feature layering "$pool/$ns/plain"
adm create --size 64M "$pool/other/img"

RBD_IO_CONF=$CEPH_CONF RBD_IO_CLIENT=$client RBD_IO_KEYRING=$dir/$client.keyring \
	RBD_IO_POOL=$pool RBD_IO_NAMESPACE=$ns RBD_IO_OTHER_NAMESPACE=other "$bin"
