#!/usr/bin/env bash
# thinproxyd --teardown: refused while the daemon runs, and (changing nothing) while an
# attached device holds a thin device; then it stops every tenant's nbdkit, removes
# every thin device and the embedded pool, whose loop devices go with it. A later start
# brings it all back, serving what was written before.
. "$(dirname "$0")/functions.sh"
requires nbdcopy nbdinfo cmp dmsetup losetup pgrep

teardown() {
	"$TP_BUILD/thinproxyd" --teardown --state-dir "$state_dir" --run-dir "$run_dir" \
		--plugin "$TP_BUILD/nbdkit-thinproxy-plugin.so" $(nbdkit_flags) "$@"
}
uri() { echo "nbd+unix:///$2?socket=$run_dir/tenants/$1/nbd.sock"; }
ours() { dmsetup info -c --noheadings -o uuid | grep '^THINPROXY-' || true; }
nbdkits() { pgrep -f "nbdkit.*tenant=" || true; }

step "alice writes 8 MiB through NBD; bob's volume is active too"
start_daemon
for t in alice bob; do
	admin_api POST /v1/tenants "{\"name\":\"$t\"}"
	expect 201
	tenant_api $t POST /v1/volumes '{"name":"v","size":16777216}'
	expect 201
done
head -c 8M /dev/urandom >"$scratch/data"
nbdcopy "$scratch/data" "$(uri alice v)"
nbdinfo --size "$(uri bob v)" >/dev/null
[ "$(ours | wc -l)" = 3 ] || fail "expected the pool and two thin devices: $(ours)"
data_loop=$(losetup -j "$state_dir/pool/data.img" | cut -d: -f1)
[ -n "$data_loop" ] || fail "no loop device for the pool's data"

step "refused while the daemon runs"
teardown >"$scratch/out" 2>&1 && fail "--teardown ran beside the daemon"
grep -q 'another thinproxyd runs' "$scratch/out" && grep -q 'stop thinproxyd first' "$scratch/out" ||
	fail "no clear refusal: $(cat "$scratch/out")"

step "refused, changing nothing, while an attached device holds alice's volume"
dev=$(tp --admin --tenant alice attach v)
cleanup "$TP_BUILD/thinproxy detach $dev"
stop_daemon
teardown >"$scratch/out" 2>&1 && fail "--teardown went ahead under an attached device"
grep -q 'volume alice/v (thin id [0-9]*) is open' "$scratch/out" &&
	grep -q 'teardown refused, nothing changed: 1 thin device is open' "$scratch/out" ||
	fail "no clear refusal: $(cat "$scratch/out")"
[ "$(ours | wc -l)" = 3 ] || fail "devices changed: $(ours)"
[ "$(nbdkits | wc -l)" = 2 ] || fail "nbdkits changed: $(nbdkits)"
cmp -n 8M "$scratch/data" "$dev" || fail "the attached device no longer reads alice's data"

step "after detach: every nbdkit, thin device and loop device of the pool is gone"
tp detach "$dev"
teardown >"$scratch/out" 2>&1 || fail "--teardown failed: $(cat "$scratch/out")"
cat "$scratch/out"
[ -z "$(ours)" ] || fail "THINPROXY- devices left: $(ours)"
[ -z "$(nbdkits)" ] || fail "nbdkits left: $(nbdkits)"
[ -z "$(losetup -j "$state_dir/pool/data.img")$(losetup -j "$state_dir/pool/metadata.img")" ] ||
	fail "loop devices left: $(losetup -a)"
[ ! -e "$run_dir/tenants/alice/nbd.sock" ] || fail "alice's nbd.sock left"
teardown >"$scratch/out" 2>&1 || fail "a second --teardown failed: $(cat "$scratch/out")"
[ -z "$(ours)" ] || fail "the second --teardown made devices: $(ours)"

step "a later start brings everything back, with alice's data"
start_daemon
nbdcopy "$(uri alice v)" "$scratch/back"
cmp -n 8M "$scratch/data" "$scratch/back" || fail "alice's data did not come back"
nbdinfo --size "$(uri bob v)" >/dev/null || fail "bob's volume is not served"
stop_daemon
teardown >/dev/null 2>&1 || fail "--teardown after the restart failed"
[ -z "$(ours)" ] || fail "THINPROXY- devices left: $(ours)"
echo "$test_name: PASS"
