#!/usr/bin/env bash
# docs/guide-benchmark.md works as written: its sh blocks run in order (tests/vm/guide.sh),
# and their output has what the guide says to look at: nbdinfo's view of the export and
# its list, fio's results through the NBD engine and through the kernel device.
. "$(dirname "$0")/functions.sh"
requires nbdinfo nbdcopy fio cmp
guide=$TP_SRC/docs/guide-benchmark.md

step "the guide's blocks"
run_guide "$guide" 6 6
out=$guide_out
grep -Eq '^export="vol":' "$out" || fail "nbdinfo does not show the export vol"
grep -Eq '^\s+can_multi_conn: true' "$out" || fail "nbdinfo: no can_multi_conn"
[ "$(grep -Ec '^randread: .*err= 0' "$out")" = 1 ] || fail "fio's nbd randread did not run cleanly"
[ "$(grep -Ec '^randwrite: .*err= 0' "$out")" = 1 ] || fail "fio's nbd randwrite did not run cleanly"
[ "$(grep -Ec '^dev-randread: .*err= 0' "$out")" = 1 ] || fail "fio on the kernel device did not run cleanly"
grep -Eq '^ +read: IOPS=' "$out" || fail "fio printed no read IOPS"
[ -z "$(thinproxy --admin tenant ls --quiet)" ] || fail "tenants left: $(thinproxy --admin tenant ls)"
echo "$test_name: PASS"
