#!/usr/bin/env bash
# docs/guide-inner-daemon.md works as written: its sh blocks run in order
# (tests/vm/guide.sh; the container's blocks against the tenant's directory), the two
# marked as needing docker are skipped; containerd with `thinproxy snapshotter` as its
# proxy plugin imported the image (tests/vm/containerd.sh's, as the guide's image.tar)
# as two committed snapshots, and its containers printed what the image's changed file
# says, one container's write staying out of the next; the chrooted processes printed
# what the layers hold, one container's write stayed out of the other; the busy answer
# the guide shows for removing a parent is what thinproxy prints; and nothing is left
# behind, containerd and the agent stopped.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/containerd.sh"
requires busybox mkfs.ext4 findmnt unshare chroot tar containerd ctr runc containerd-shim-runc-v2
guide=$TP_SRC/docs/guide-inner-daemon.md

# block_out N: what the guide's block N printed, without the block's text or the lines
# thinproxyd logs to the same output.
block_out() {
	awk -v n="$1" '/^== / { on = ($0 ~ ("block " n " ")); next } on && !/^(    |thinproxyd: )/ { print }' "$out"
}

step "the guide's blocks"
mkdir -p /root/guide
oci_image /root/guide/image.tar thinproxy.test/app:1
run_guide "$guide" 14 16
out=$guide_out
grep -Eq 'thinproxy +[^ ]+ +ok' <<<"$(block_out 3)" || fail "the proxy plugin was not ok"
[ "$(block_out 4 | grep -Ec ' Committed *$')" = 2 ] || fail "the import did not leave two committed snapshots"
[ "$(block_out 5)" = "$(printf 'changed\nscribbled\nchanged')" ] ||
	fail "the containers printed: $(block_out 5)"
pgrep -x containerd >/dev/null && fail "containerd still runs"
grep -qx 'hello from web, on base layer 1' "$out" || fail "web did not run /app/run"
grep -qx 'hello from worker, on base layer 1' "$out" || fail "worker did not run /app/run"
grep -qx 'written by web' "$out" || fail "web did not read its own write"
# What worker's `ls /tmp` printed: the lines after web's "written by web", up to the
# next block.
seen=$(awk '/^== / { if (on) exit } on { print } $0 == "written by web" { on = 1 }' "$out")
[ -z "$seen" ] || fail "worker sees in /tmp: $seen"
[ -z "$(thinproxy --admin tenant ls --quiet)" ] || fail "tenants left: $(thinproxy --admin tenant ls)"
[ -z "$(thinproxy ls --attached --quiet)" ] || fail "devices left: $(thinproxy ls --attached)"

step "its sample output is real"
want=$(grep -A1 '^\$ thinproxy rm base$' "$guide" | tail -n 1)
[ -n "$want" ] || fail "the guide lost its sample of a busy parent"
thinproxy --admin tenant add builder >/dev/null
export THINPROXY_DIR=/run/thinproxy/tenants/builder
thinproxy create base --size 64M >/dev/null
thinproxy commit base >/dev/null
thinproxy snapshot app --from base >/dev/null
thinproxy rm base >"$scratch/got" 2>&1 && fail "a parent was removed"
[ "$(cat "$scratch/got")" = "$want" ] || fail "thinproxy printed '$(cat "$scratch/got")', the guide shows '$want'"
echo "$test_name: PASS"
