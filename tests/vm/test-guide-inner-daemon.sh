#!/usr/bin/env bash
# docs/guide-inner-daemon.md works as written: its sh blocks run in order
# (tests/vm/guide.sh; the container's blocks against the tenant's directory), the two
# marked as needing docker are skipped; the chrooted processes printed what the layers
# hold, one container's write stayed out of the other; the busy answer the guide shows
# for removing a parent is what thinproxy prints; and nothing is left behind.
. "$(dirname "$0")/functions.sh"
requires busybox mkfs.ext4 findmnt unshare chroot tar
guide=$TP_SRC/docs/guide-inner-daemon.md

step "the guide's blocks"
run_guide "$guide" 10 12
out=$guide_out
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
