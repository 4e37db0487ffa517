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
#     fence and ops (full features, for the one-writer tests); wide (1 GiB, layering only)
#     and widefd (1 GiB, full features), for the extents' bound; cached (full features,
#     its own setting rbd_cache true), which must be refused; "img" in other
. "$(dirname "$0")/functions.sh"
bin=$(test_program "${1-}")
ns=tenant
client=client.thinproxy-tenant

start_cluster
adm() { timeout 60 rbd "$@"; }
adm namespace create "$pool/$ns"
adm namespace create "$pool/other"
tenant_key "$client" "profile rbd pool=$pool namespace=$ns"

full=layering,exclusive-lock,object-map,fast-diff,deep-flatten
for img in rw zero trim fd parent lock dead fence ops; do
	adm create --size 64M --image-feature "$full" "$pool/$ns/$img"
done
adm create --size 64M --image-feature layering "$pool/$ns/plain"
adm create --size 1G --image-feature layering "$pool/$ns/wide"
adm create --size 1G --image-feature "$full" "$pool/$ns/widefd"
adm create --size 64M "$pool/other/img"
adm create --size 64M --image-feature "$full" "$pool/$ns/cached"
adm config image set "$pool/$ns/cached" rbd_cache true

run_program RBD_IO_CLIENT=$client RBD_IO_KEYRING=$dir/$client.keyring RBD_IO_NAMESPACE=$ns \
	RBD_IO_OTHER_NAMESPACE=other
