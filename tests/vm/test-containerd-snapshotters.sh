#!/usr/bin/env bash
# Debian's containerd in a container of its own (mount, pid and network namespaces, its
# own /proc, the guest's cgroup2) runs a two-layer OCI image the test builds itself on
# three snapshotters: its own overlayfs; its own devmapper on a dm-thin pool made with
# dmsetup (the host-privileged path thinproxy's snapshotter is measured against); and a
# proxy plugin, an agent in the container serving a snapshotter over gRPC on a unix
# socket, as thinproxy's snapshotter does (here containerd's native snapshotter, served
# by tests/snapshotter's reference-snapshotter). This proves the setup
# tests/vm/containerd.sh gives the tests of thinproxy's snapshotter: the image, the
# import, whiteouts, a container's root writes that stay its own, and the proxy wiring.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/container.sh"
. "$(dirname "$0")/containerd.sh"
requires containerd ctr runc containerd-shim-runc-v2 dmsetup mkfs.ext4 blockdev
ref=$TP_BUILD/tests/snapshotter/reference-snapshotter
[ -x "$ref" ] || fail "$ref is not built (make builds it with golang-go)"

step "a dm-thin pool for devmapper, containerd in a container, a proxy snapshotter's agent"
devmapper_pool tp-ctrd-pool
containerd_container
proxy_agent_start reference "$ref --type native --root /var/lib/containerd/reference --socket {socket}"
cleanup "kill $proxy_pid"
containerd_start "$(devmapper_config tp-ctrd-pool)
$(proxy_plugin_config reference)"
cleanup containerd_stop
plugins=$(ctrd plugins ls)
for sn in overlayfs devmapper reference; do
	grep -Eq "^io\.containerd\.snapshotter\.v1 +$sn +[^ ]+ +ok" <<<"$plugins" ||
		fail "snapshotter $sn is not ok: $plugins"
done

containerd_runs_image overlayfs
containerd_runs_image devmapper
containerd_runs_image reference
echo "$test_name: PASS"
