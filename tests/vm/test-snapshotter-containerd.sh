#!/usr/bin/env bash
# An unmodified containerd in a tenant's container keeps its image layers as thin
# volumes: Debian's containerd, in alice's container (tests/vm/containerd.sh: its own
# mount, pid and network namespaces; alice's directory at /run/thinproxy, no
# device-mapper), with `thinproxy snapshotter` beside it as the proxy plugin "thinproxy",
# imports and runs the test's two-layer image (layer 2 over layer 1, a whiteout, root
# writes that stay the container's own). The image's layers are alice's committed
# volumes and nothing else is left; two containers of the image share its blocks (the
# pool grows by what they write, not by a copy of the image each); ctr snapshots ls,
# info, usage and rm; containerd and the agent restarted, the image runs again; `ctr
# image rm --sync` (containerd's garbage collection) leaves alice no volume; the agent
# killed (-9) during an import, restarted, the import done again: nothing leaked, no
# volume or device left after its removal; bob sees none of it.
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

image=thinproxy.test/layers:1
snaps() { ctrd snapshots --snapshotter thinproxy "$@"; }
pool_used() { tp --admin --json pool | jq '.data.used'; }

step "two containers of the image share its blocks: the pool grows by what they write"
# Each writes 1 MiB and stays (no --rm) with its snapshot. Beyond what they write, the
# pool grows by the file system metadata that starting and writing touch (runc's mount
# points, the journal), less than one copy of the image's top layer (its mapped bytes),
# which a root that is not a snapshot of the layer would hold twice over.
before=$(pool_used)
for c in tp-a tp-b; do
	ctrd run --snapshotter thinproxy "$image" "$c" \
		sh -c 'dd if=/dev/urandom of=/written bs=64k count=16 2>/dev/null && sync /written'
done
after=$(pool_used)
written=$((2 << 20))
layer=$(tp --admin --tenant alice --json ls | jq '[.volumes[] | select(.state == "committed") | .used] | max')
echo "the pool grew by $((after - before)) bytes for $written written; a layer maps $layer"
((after - before >= written && after - before - written < layer)) ||
	fail "the pool grew by $((after - before)) bytes for $written bytes written (the top layer maps $layer)"

step "ctr snapshots: ls, info, usage and rm of a snapshot of the image's top layer"
top=$(snaps ls | awk 'NF == 3 && $3 == "Committed" { print $1 }')
[ -n "$top" ] || fail "no committed layer with a parent: $(snaps ls)"
[ "$(snaps ls | awk '$NF == "Active" { print $1 }' | sort | tr '\n' ' ')" = "tp-a tp-b " ] ||
	fail "the containers' snapshots: $(snaps ls)"
snaps prepare tp-extra "$top" >/dev/null
info=$(snaps info tp-extra)
[ "$(jq -r '[.Kind, .Parent] | join(" ")' <<<"$info")" = "Active $top" ] || fail "info: $info"
usage=$(snaps usage tp-extra)
grep -Eq '^tp-extra +[0-9.]+ [KMG]?i?B +[0-9]+ *$' <<<"$usage" || fail "usage: $usage"
volumes=$(tp --admin --tenant alice ls --quiet | wc -l)
[ "$volumes" = 5 ] || fail "alice has $volumes volumes for 2 layers and 3 snapshots"
rm_out=$(snaps rm "$top" 2>&1) && fail "a layer with children was removed"
grep -q 'failed precondition' <<<"$rm_out" || fail "rm of a layer with children: $rm_out"
snaps rm tp-extra
ctrd containers rm tp-a tp-b
# containerd drops a removed container's snapshot from its own records at once and has
# the snapshotter remove it in a later garbage collection, which its scheduler may put
# off for a minute or more after the last one; a lease deleted with --sync runs one
# now and waits for it, as ctr image rm --sync does below.
lease=$(ctrd leases create)
ctrd leases delete --sync "$lease" >/dev/null
[ "$(tp --admin --tenant alice ls --quiet | wc -l)" = 2 ] ||
	fail "after rm of the snapshots alice has: $(tp --admin --tenant alice ls)"

step "containerd and the agent restarted: the image runs again"
containerd_stop
kill "$proxy_pid"
while kill -0 "$proxy_pid" 2>/dev/null; do sleep 0.05; done
proxy_agent_start thinproxy "$TP_BUILD/thinproxy snapshotter --socket {socket}"
cleanup "kill $proxy_pid"
containerd_start "$(proxy_plugin_config thinproxy)"
out=$(ctrd run --rm --snapshotter thinproxy "$image" tp-again cat /changed /added)
[ "$out" = "$(printf 'changed\nadded')" ] || fail "after the restart the container printed: $out"

# no_leftovers: alice has no volume and no NBD device is connected.
no_leftovers() {
	[ -z "$(snaps ls | tail -n +2)" ] || fail "snapshots left: $(snaps ls)"
	[ -z "$(tp --admin --tenant alice ls --quiet)" ] || fail "volumes left: $(tp --admin --tenant alice ls)"
	connected=$(ls -d /sys/block/nbd*/pid 2>/dev/null || true)
	[ -z "$connected" ] || fail "NBD devices left connected: $connected"
}

step "ctr image rm --sync: containerd's garbage collection leaves alice no volume"
ctrd image rm --sync "$image" >/dev/null
no_leftovers

step "kill -9 of the agent during an import; restarted, the import done again; nothing leaked"
ctrd image import --snapshotter thinproxy "$ctrd_dir/image.tar" >"$scratch/import.out" 2>&1 &
import_pid=$!
# The first layer's device is attached before its file system is made, which takes a
# while: the kill lands inside that Prepare (no device is connected before it).
wait_until 60 compgen -G '/sys/block/nbd*/pid' >/dev/null || fail "the import attached no device"
kill -KILL "$proxy_pid"
wait "$import_pid" && fail "the import succeeded without its snapshotter: $(cat "$scratch/import.out")"
proxy_agent_start thinproxy "$TP_BUILD/thinproxy snapshotter --socket {socket}"
cleanup "kill $proxy_pid"
ctrd image import --snapshotter thinproxy "$ctrd_dir/image.tar" >/dev/null
out=$(ctrd run --rm --snapshotter thinproxy "$image" tp-after cat /changed)
[ "$out" = changed ] || fail "after the interrupted import the container printed: $out"
# A Prepare the kill came after is containerd's (its extraction snapshot), which its
# garbage collection removes in its own time; after the image's removal with --sync,
# nothing of either import is left.
ctrd image rm --sync "$image" >/dev/null
no_leftovers
[ -z "$(tp --admin --tenant bob ls --quiet)" ] || fail "bob has volumes: $(tp --admin --tenant bob ls)"

containerd_stop
kill "$proxy_pid"
while kill -0 "$proxy_pid" 2>/dev/null; do sleep 0.05; done
stop_daemon
echo "$test_name: PASS"
