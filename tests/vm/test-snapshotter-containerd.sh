#!/usr/bin/env bash
# An unmodified containerd in a tenant's container keeps its image layers as thin
# volumes: Debian's containerd, in alice's container (tests/vm/containerd.sh: its own
# mount, pid and network namespaces; alice's directory at /run/thinproxy, no
# device-mapper), with `thinproxy snapshotter` beside it as the proxy plugin "thinproxy",
# imports and runs the test's two-layer image (layer 2 over layer 1, a whiteout, root
# writes that stay the container's own). The image's layers are alice's committed
# volumes and nothing else is left; `ctr image rm --sync` (containerd's garbage
# collection) leaves alice no volume; bob sees none of it.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/container.sh"
. "$(dirname "$0")/containerd.sh"
requires containerd ctr runc containerd-shim-runc-v2 mkfs.ext4 jq

"$TP_BUILD/thinproxy" snapshotter --help >/dev/null 2>&1 ||
	fail "thinproxy has no snapshotter command ('thinproxy snapshotter --help' fails)"

start_daemon
tp --admin tenant add alice >/dev/null
tp --admin tenant add bob >/dev/null
wait_for_socket "$run_dir/tenants/alice/nbd.sock"

step "containerd in alice's container, thinproxy's snapshotter beside it"
containerd_container alice
proxy_agent_start thinproxy "$TP_BUILD/thinproxy snapshotter --socket {socket}"
cleanup "kill $proxy_pid"
containerd_start "$(proxy_plugin_config thinproxy)"
cleanup containerd_stop
# Read whole, then matched: with pipefail, grep -q leaving early can fail ctr's write.
plugins=$(ctrd plugins ls)
grep -Eq '^io\.containerd\.snapshotter\.v1 +thinproxy +[^ ]+ +ok' <<<"$plugins" ||
	fail "the proxy plugin is not ok: $plugins"

containerd_runs_image thinproxy

step "the image's two layers are alice's only volumes, committed; bob sees none"
alice_volumes=$(tp --admin --tenant alice --json ls)
[ "$(jq -r '[.volumes[].state] | sort | join(" ")' <<<"$alice_volumes")" = "committed committed" ] ||
	fail "alice's volumes: $alice_volumes"
[ -z "$(tp --admin --tenant bob ls --quiet)" ] || fail "bob has volumes: $(tp --admin --tenant bob ls)"

step "ctr image rm --sync: containerd's garbage collection leaves alice no volume"
ctrd image rm --sync thinproxy.test/layers:1 >/dev/null
[ -z "$(ctrd snapshots --snapshotter thinproxy ls | tail -n +2)" ] ||
	fail "snapshots left: $(ctrd snapshots --snapshotter thinproxy ls)"
[ -z "$(tp --admin --tenant alice ls --quiet)" ] || fail "volumes left: $(tp --admin --tenant alice ls)"
connected=$(ls -d /sys/block/nbd*/pid 2>/dev/null || true)
[ -z "$connected" ] || fail "NBD devices left connected: $connected"

containerd_stop
kill "$proxy_pid"
while kill -0 "$proxy_pid" 2>/dev/null; do sleep 0.05; done
stop_daemon
echo "$test_name: PASS"
