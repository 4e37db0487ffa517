#!/usr/bin/env bash
# docs/guide-vm.md works as written: its sh blocks run in order (tests/vm/guide.sh),
# the two marked as needing docker or a VM boot are skipped; then the refused write to
# an image that the guide shows as sample output is what qemu-io really prints, and the
# guide left no volume, image or tenant behind.
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io nbdcopy jq
guide=$TP_SRC/docs/guide-vm.md

step "the guide's blocks"
run_guide "$guide" 10 12
out=$guide_out

step "its sample output is real"
[ -z "$(thinproxy --admin tenant ls --quiet)" ] || fail "tenants left: $(thinproxy --admin tenant ls)"
[ -z "$(thinproxy --admin image ls --quiet)" ] || fail "images left: $(thinproxy --admin image ls)"
want=$(grep -A1 "^# qemu-io -f raw -c 'write 0 64k'" "$guide" | tail -n 1)
[ -n "$want" ] || fail "the guide lost its sample of a refused write"
thinproxy --admin tenant add vm1 >/dev/null
thinproxy --admin image import base --from /srv/images/base.raw >/dev/null
thinproxy --admin image publish base --all >/dev/null
rc=0
qemu-io -f raw -c 'write 0 64k' 'nbd+unix:///images/base?socket=/run/thinproxy/tenants/vm1/nbd.sock' \
	>"$scratch/got" 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "a write to the image succeeded"
[ "$(cat "$scratch/got")" = "$want" ] || fail "qemu-io printed '$(cat "$scratch/got")', the guide shows '$want'"
qemu-io -r -f raw -c 'read -P 0x5a 0 4M' 'nbd+unix:///images/base?socket=/run/thinproxy/tenants/vm1/nbd.sock' \
	>/dev/null || fail "the image lost its data"
echo "$test_name: PASS"
