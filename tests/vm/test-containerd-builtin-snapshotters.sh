#!/usr/bin/env bash
# Debian's containerd in a container of its own (mount, pid and network namespaces, its
# own /proc, the guest's cgroup2) runs a two-layer OCI image the test builds itself on
# two of its built-in snapshotters: overlayfs, and devmapper on a dm-thin pool made with
# dmsetup (the host-privileged path thinproxy's snapshotter is measured against). This
# proves the setup tests/vm/containerd.sh gives the tests of thinproxy's snapshotter:
# the image, the import, whiteouts, and a container's root writes that stay its own.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/container.sh"
. "$(dirname "$0")/containerd.sh"
requires containerd ctr runc containerd-shim-runc-v2 dmsetup mkfs.ext4 blockdev

step "a dm-thin pool for devmapper, and containerd in a container"
devmapper_pool tp-ctrd-pool
containerd_container
containerd_start "$(devmapper_config tp-ctrd-pool)"
cleanup containerd_stop
plugins=$(ctrd plugins ls)
for sn in overlayfs devmapper; do
	grep -Eq "^io\.containerd\.snapshotter\.v1 +$sn +[^ ]+ +ok" <<<"$plugins" ||
		fail "snapshotter $sn is not ok: $plugins"
done

containerd_runs_image overlayfs
containerd_runs_image devmapper
echo "$test_name: PASS"
