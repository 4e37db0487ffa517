#!/usr/bin/env bash
# The data path of a tenant's nbdkit on real thin devices: what is written reads back
# (nbdcopy over several connections, qemu-io, qemu-img convert, fio's NBD engine with
# crc32c verification), flush and FUA succeed, trim and unmapping zero return whole pool
# blocks to the pool, zero reads back as zeroes, fast zero works only on whole pool
# blocks, the block size hints are the pool's, multi-conn is advertised; a volume that
# is open cannot be removed (409 busy), and a snapshot of an origin that is open and
# being written holds what was written before it while the origin keeps serving.
. "$(dirname "$0")/functions.sh"
requires curl jq nbdinfo nbdcopy qemu-io qemu-img fio nbd-client blkdiscard cmp
raw=$TP_BUILD/tests/vm/nbd-raw
[ -x "$raw" ] || fail "$raw is missing (make all)"
cleanup "cp $daemon_log $TP_RESULTS/"

start_daemon
M=$((1 << 20))
K=$((1 << 10))

admin_api POST /v1/tenants '{"name":"alice","uid":1000,"gid":1000}'
expect 201
sock=$run_dir/tenants/alice/nbd.sock
uri() { echo "nbd+unix:///${1-}?socket=$sock"; }
for v in d1:$((16 * M)) t1:$((16 * M)) f1:$((256 * M)); do
	tenant_api alice POST /v1/volumes "{\"name\":\"${v%:*}\",\"size\":${v#*:}}"
	expect 201
done
# used VOLUME: the bytes of pool blocks VOLUME maps, as the daemon reports them.
used() {
	admin_api GET "/v1/tenants/alice/volumes/$1"
	expect 200
	field .used
}
pool_used() {
	admin_api GET /v1/pool
	expect 200
	field .data.used
}

step "capabilities: block size hints from the pool, multi-conn, trim, zero, fast zero"
admin_api GET /v1/pool
chunk=$(field .block_size)
[ "$chunk" = 65536 ] || fail "pool block size: $body"
nbdinfo --json --no-content "$(uri d1)" >"$scratch/info.json"
got=$(jq -r '.exports[0] | [.block_size_minimum, .block_size_preferred, .block_size_maximum,
	.can_multi_conn, .can_flush, .can_fua, .can_trim, .can_zero, .can_fast_zero, .can_cache,
	.is_read_only, ."export-size"] | map(tostring) | join(" ")' "$scratch/info.json")
[ "$got" = "1 $chunk $((32 * M)) true true true true true true true false $((16 * M))" ] ||
	fail "nbdinfo: $got"

step "nbdcopy: 16 MiB of random data in over 4 connections, back out, byte for byte"
head -c $((16 * M)) /dev/urandom >"$scratch/d1.in"
nbdcopy --connections=4 --flush "$scratch/d1.in" "$(uri d1)"
nbdcopy --connections=4 "$(uri d1)" "$scratch/d1.out"
cmp "$scratch/d1.in" "$scratch/d1.out" || fail "d1 read back differs"
rm -f "$scratch/d1.out"

step "qemu-io: write, FUA write, flush, read back; zero reads back zeroes"
qemu-io -f raw -c 'write -P 0x5a 0 1M' -c 'write -f -P 0x6b 1M 64k' -c 'flush' \
	-c 'read -P 0x5a 0 1M' -c 'read -P 0x6b 1M 64k' \
	-c 'write -z 4096 8192' -c 'read -P 0 4096 8192' -c 'read -P 0x5a 0 4096' \
	-c 'read -P 0x5a 12288 4096' "$(uri d1)" >"$scratch/qemu-io.out" ||
	fail "qemu-io: $(cat "$scratch/qemu-io.out")"
grep -qi 'fail\|error\|mismatch' "$scratch/qemu-io.out" && fail "qemu-io: $(cat "$scratch/qemu-io.out")"

step "qemu-img convert of a qcow2 image into a volume"
qemu-img convert -f raw -O qcow2 "$scratch/d1.in" "$scratch/d1.qcow2"
qemu-img convert -n -O raw "$scratch/d1.qcow2" "$(uri t1)"
qemu-img compare -f qcow2 -F raw "$scratch/d1.qcow2" "$(uri t1)" >/dev/null ||
	fail "t1 differs from the qcow2 image converted into it"
rm -f "$scratch/d1.qcow2"

step "trim returns whole pool blocks to the pool; partial blocks keep their data"
u0=$(used t1) p0=$(pool_used)
[ "$u0" = $((16 * M)) ] || fail "t1 maps $u0 bytes after 16 MiB written"
# 4 MiB at 1 MiB through NBD_CMD_TRIM, 2 MiB at 6 MiB through an unmapping zero.
qemu-io -f raw -c 'discard 1M 4M' -c 'write -z -u 6M 2M' -c 'read -P 0 1M 4M' \
	-c 'read -P 0 6M 2M' "$(uri t1)" >"$scratch/qemu-io.out" ||
	fail "qemu-io: $(cat "$scratch/qemu-io.out")"
u1=$(used t1) p1=$(pool_used)
[ "$u1" = $((u0 - 6 * M)) ] || fail "t1 maps $u1 bytes after trimming 6 MiB of $u0"
[ "$p1" = $((p0 - 6 * M)) ] || fail "pool uses $p1 bytes after trimming 6 MiB of $p0"
echo "trim: t1 $u0 -> $u1 bytes mapped, pool $p0 -> $p1 bytes used"
# Less than a pool block: nothing is unmapped and the data stays; a zero inside a block
# writes zeroes; fast zero is refused (NBD error 95, ENOTSUP) unless whole blocks.
"$raw" "$sock" t1 trim $((9 * M + 512)) $((chunk - 1024)) zero $((10 * M)) 4096 \
	fastzero $((11 * M + 4096)) $chunk fastzero $((12 * M)) $((2 * chunk)) >"$scratch/raw.out"
[ "$(tail -n +2 "$scratch/raw.out")" = "trim: ok
zero: ok
fastzero: error 95
fastzero: ok" ] || fail "partial trim, zero, fast zero: $(cat "$scratch/raw.out")"
u2=$(used t1)
[ "$u2" = $((u1 - 2 * chunk)) ] || fail "t1 maps $u2 bytes, expected $((u1 - 2 * chunk))"
nbdcopy "$(uri t1)" "$scratch/t1.out"
# What t1 should hold: d1.in with the trimmed and zeroed ranges (in 4 KiB units) zero.
cp "$scratch/d1.in" "$scratch/t1.want"
for r in 256:1024 1536:512 2560:1 3072:32; do
	dd if=/dev/zero of="$scratch/t1.want" bs=4k seek=${r%:*} count=${r#*:} conv=notrunc status=none
done
cmp "$scratch/t1.out" "$scratch/t1.want" || fail "t1 after trim and zero"
rm -f "$scratch/t1.out" "$scratch/t1.want"

step "kernel NBD client: blkdiscard returns blocks; an open volume cannot be removed"
nbd-client -unix "$sock" -N t1 /dev/nbd0 -b 4096 >/dev/null
cleanup "nbd-client -d /dev/nbd0"
blkdiscard -o $((14 * M)) -l $((2 * M)) /dev/nbd0
u3=$(used t1)
[ "$u3" = $((u2 - 2 * M)) ] || fail "t1 maps $u3 bytes after blkdiscard of 2 MiB, expected $((u2 - 2 * M))"
# Trimming the whole volume gives all of its blocks back.
p3=$(pool_used)
"$raw" "$sock" t1 trim 0 $((16 * M)) >"$scratch/raw.out"
[ "$(tail -n 1 "$scratch/raw.out")" = "trim: ok" ] || fail "trim of t1: $(cat "$scratch/raw.out")"
u4=$(used t1) p4=$(pool_used)
[ "$u4" = 0 ] && [ "$p4" = $((p3 - u3)) ] || fail "after trimming all of t1: t1 maps $u4, pool $p3 -> $p4"
echo "whole-volume trim: t1 $u3 -> $u4 bytes mapped, pool $p3 -> $p4 bytes used"
tenant_api alice DELETE /v1/volumes/t1
expect 409 busy
nbd-client -d /dev/nbd0 >/dev/null
# A volume held by an NBD connection through nbdkit (not the kernel client) is busy too.
# dev_fds: how many block devices alice's nbdkit holds open (builtins only: this polls).
nbdkit_pid=$(cat "$run_dir/tenants/alice/nbdkit.pid")
dev_fds() {
	local f n=0
	for f in /proc/"$nbdkit_pid"/fd/*; do [ -b "$f" ] && n=$((n + 1)); done
	echo $n
}
# wait_dev_fds N: until alice's nbdkit holds N devices, at most 60 s.
dev_fds_are() { [ "$(dev_fds)" = "$1" ]; }
wait_dev_fds() { wait_until 60 dev_fds_are "$1" || fail "alice's nbdkit holds $(dev_fds) devices, expected $1"; }
wait_dev_fds 0
qemu-io -r -f raw -c 'sleep 600000' "$(uri t1)" >/dev/null 2>&1 &
hold=$!
cleanup "kill $hold"
wait_dev_fds 1
tenant_api alice DELETE /v1/volumes/t1
expect 409 busy
kill $hold 2>/dev/null || true
wait $hold 2>/dev/null || true
wait_dev_fds 0
tenant_api alice DELETE /v1/volumes/t1
expect 204

step "fio --ioengine=nbd: verified random writes over a 256 MiB volume"
fio --name=verify --ioengine=nbd --uri="$(uri f1)" --rw=randwrite --bs=64k --size=256M \
	--iodepth=16 --verify=crc32c --eta=never --output="$scratch/fio.out" ||
	fail "fio: $(cat "$scratch/fio.out")"
grep -q 'err= 0' "$scratch/fio.out" || fail "fio: $(cat "$scratch/fio.out")"

step "a snapshot of an open origin being written holds what was written before it"
# Unflushed writes (nbd-raw never flushes), then a second connection writing (fio)
# while the snapshot is taken: dm suspends the origin, which the open fds survive.
"$raw" "$sock" d1 write 0 $((2 * M)) >"$scratch/raw.out"
[ "$(tail -n 1 "$scratch/raw.out")" = "write: ok" ] || fail "nbd-raw: $(cat "$scratch/raw.out")"
fio --name=busy --ioengine=nbd --uri="$(uri d1)" --rw=randwrite --bs=64k --offset=8M \
	--size=8M --loops=8 --iodepth=8 --verify=crc32c --eta=never --output="$scratch/fio2.out" &
fio_pid=$!
sleep 1
tenant_api alice POST /v1/volumes '{"name":"s1","parent":"d1"}'
expect 201
kill -0 $fio_pid 2>/dev/null || fail "fio ended before the snapshot was taken"
wait $fio_pid || fail "fio during the snapshot: $(cat "$scratch/fio2.out")"
qemu-io -f raw -c 'write -P 0x4d 0 1M' -c 'read -P 0x4d 0 1M' -c 'read -P 0xa5 1M 1M' \
	"$(uri d1)" >"$scratch/qemu-io.out" || fail "origin after the snapshot: $(cat "$scratch/qemu-io.out")"
qemu-io -f raw -r -c 'read -P 0xa5 0 2M' "$(uri s1)" >"$scratch/qemu-io.out" ||
	fail "snapshot: $(cat "$scratch/qemu-io.out")"
grep -qi 'fail\|error\|mismatch' "$scratch/qemu-io.out" && fail "snapshot: $(cat "$scratch/qemu-io.out")"
nbdcopy "$(uri s1)" "$scratch/s1.out"
cmp -i $((2 * M)) -n $((4 * M)) "$scratch/s1.out" "$scratch/d1.in" ||
	fail "the snapshot lost the origin's data beyond the rewritten range"

stop_daemon
! grep -E 'Sanitizer|runtime error' "$daemon_log" || fail "sanitizer reports in the daemon's log"
echo "$test_name: PASS"
