#!/usr/bin/env bash
# A tenant fills the pool through its nbdkit: its writes beyond the pool's data space
# fail at once (ENOSPC, or EIO for writes the page cache took), at the latest when it
# flushes, instead of hanging (the pool errors rather than queueing); another tenant
# keeps reading its own volume, byte for byte, while it happens and after; and trimming
# gives the space back so that writes work again.
. "$(dirname "$0")/../vm/functions.sh"
requires curl jq nbdcopy qemu-io cmp timeout
cleanup "cp $daemon_log $TP_RESULTS/"

M=$((1 << 20))
TP_TEST_LOOP_SIZE=64M start_daemon --min-free 0
admin_api POST /v1/tenants '{"name":"alice","uid":1000,"gid":1000}'
expect 201
sock=$run_dir/tenants/alice/nbd.sock
uri() { echo "nbd+unix:///${1-}?socket=$sock"; }
admin_api POST /v1/tenants '{"name":"bob","uid":1001,"gid":1001}'
expect 201
tenant_api bob POST /v1/volumes "{\"name\":\"b\",\"size\":$((8 * M))}"
expect 201
bob_uri="nbd+unix:///b?socket=$run_dir/tenants/bob/nbd.sock"
tenant_api alice POST /v1/volumes "{\"name\":\"keep\",\"size\":$((8 * M))}"
expect 201
tenant_api alice POST /v1/volumes "{\"name\":\"big\",\"size\":$((256 * M))}"
expect 201
pool() {
	admin_api GET /v1/pool
	expect 200
	field "$1"
}
total=$(pool .data.total)
echo "pool: $total bytes of data space"

step "data in a small volume, then a bigger volume overfills the pool"
head -c $((8 * M)) /dev/urandom >"$scratch/keep.in"
nbdcopy --flush "$scratch/keep.in" "$(uri keep)"
head -c $((8 * M)) /dev/urandom >"$scratch/b.in"
nbdcopy --flush "$scratch/b.in" "$bob_uri"
head -c $((96 * M)) /dev/urandom >"$scratch/big.in"
# bob reads his volume over and over while alice overfills the pool.
touch "$scratch/filling"
(
	n=0
	while [ -e "$scratch/filling" ] || ((n == 0)); do
		timeout 60 nbdcopy "$bob_uri" "$scratch/b.out" || exit 1
		cmp -s "$scratch/b.in" "$scratch/b.out" || exit 2
		n=$((n + 1))
	done
	echo $n >"$scratch/bob-reads"
) &
reader=$!
start=$SECONDS
rc=0
timeout 120 nbdcopy --flush "$scratch/big.in" "$(uri big)" 2>"$scratch/err" || rc=$?
rm -f "$scratch/filling"
wait $reader || fail "bob's reads failed or differed ($?) while alice filled the pool"
echo "bob read his volume $(cat "$scratch/bob-reads") times, intact, while the pool filled"
echo "nbdcopy of 96 MiB into the 64 MiB pool: exit $rc after $((SECONDS - start)) s: $(head -c 300 "$scratch/err")"
[ $rc != 124 ] || fail "nbdcopy hung on the full pool"
[ $rc != 0 ] || fail "nbdcopy of 96 MiB into a 64 MiB pool succeeded"
# The pool refuses the write with ENOSPC at once (error_if_no_space); nbdkit writes
# through the page cache, and the kernel records a failed writeback of a block device as
# EIO, so the writer sees ENOSPC or EIO, at the latest on flush.
grep -Eq 'No space left on device|Input/output error' "$scratch/err" ||
	fail "neither ENOSPC nor EIO: $(cat "$scratch/err")"
[ "$(pool .mode)" = out_of_data_space ] || fail "pool mode after overfilling it: $body"
echo "pool mode: $(pool .mode), data used $(pool .data.used)"

step "other volumes, the tenant's and bob's, stay readable; a write to the full pool fails, not hangs"
nbdcopy "$(uri keep)" "$scratch/keep.out"
cmp "$scratch/keep.in" "$scratch/keep.out" || fail "keep changed while the pool was full"
nbdcopy "$bob_uri" "$scratch/b.out"
cmp "$scratch/b.in" "$scratch/b.out" || fail "bob's volume changed while the pool was full"
rc=0
timeout 60 qemu-io -f raw -c 'write -P 0x11 200M 1M' -c flush "$(uri big)" >"$scratch/qemu-io.out" 2>&1 || rc=$?
[ $rc != 124 ] || fail "a write to the full pool hung"
echo "write + flush to the full pool: exit $rc: $(tr '\n' ' ' <"$scratch/qemu-io.out" | head -c 300)"
grep -Eq 'No space left on device|Input/output error' "$scratch/qemu-io.out" ||
	fail "neither ENOSPC nor EIO: $(cat "$scratch/qemu-io.out")"

step "trimming the big volume returns the space; writes work again"
qemu-io -f raw -c 'discard 0 256M' "$(uri big)" >/dev/null
echo "after trim: pool mode $(pool .mode), data used $(pool .data.used)"
qemu-io -f raw -c 'write -P 0x22 0 4M' -c flush -c 'read -P 0x22 0 4M' "$(uri big)" \
	>"$scratch/qemu-io.out" 2>&1 || fail "write after the trim: $(cat "$scratch/qemu-io.out")"
grep -qi 'fail\|error\|mismatch' "$scratch/qemu-io.out" && fail "write after the trim: $(cat "$scratch/qemu-io.out")"
[ "$(pool .mode)" = rw ] || fail "pool mode after the trim: $body"

stop_daemon
! grep -E 'Sanitizer|runtime error' "$daemon_log" || fail "sanitizer reports in the daemon's log"
echo "$test_name: PASS"
