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

step "a dm-thin pool for devmapper: 1 GiB of data, 64 MiB of metadata, 64 KiB blocks"
data=$(loopdev 1G ctrd-data)
meta=$(loopdev 64M ctrd-meta)
dmsetup create tp-ctrd-pool --table "0 $(blockdev --getsz "$data") thin-pool $meta $data 128 32768 1 skip_block_zeroing"
# The pool goes last; before it, any thin device devmapper left behind (tp-ctrd-pool-snap-N).
cleanup "dmsetup remove tp-ctrd-pool"
cleanup 'for d in $(dmsetup ls | awk "/^tp-ctrd-pool-/ { print \$1 }"); do dmsetup remove --force $d; done'

step "containerd in a container, devmapper configured"
containerd_container
containerd_start '[plugins."io.containerd.snapshotter.v1.devmapper"]
  pool_name = "tp-ctrd-pool"
  base_image_size = "64MB"
  discard_blocks = true'
cleanup containerd_stop
plugins=$(ctrd plugins ls)
for sn in overlayfs devmapper; do
	grep -Eq "^io\.containerd\.snapshotter\.v1 +$sn +[^ ]+ +ok" <<<"$plugins" ||
		fail "snapshotter $sn is not ok: $plugins"
done

containerd_runs_image overlayfs
containerd_runs_image devmapper
echo "$test_name: PASS"
