#!/usr/bin/env bash
# Block status from dm-thin's own mappings (issue 22), through a tenant's nbdkit on real
# thin devices: nbdinfo --map of a 1 GiB volume lists exactly the pool blocks that
# scattered writes mapped; a connection's map still shows what it and other connections
# wrote after it was taken (nbd-map interleaves them), trims stay data on that connection
# and are holes on a new one once the pool unmapped them; copies made with extents while
# fio writes, and after, equal copies made without; the diff of a volume against an
# empty one is its map, and a snapshot's diff against its parent is what was written to
# it; exact usage counts the blocks shared with the parent and those held alone, and a
# tenant's allocation (usage, /metrics) each of its pool blocks once.
. "$(dirname "$0")/functions.sh"
requires curl jq nbdinfo nbdcopy qemu-io qemu-img fio cmp
map=$TP_BUILD/tests/vm/nbd-map
[ -x "$map" ] || fail "$map is missing (make all)"
cleanup "cp $daemon_log $TP_RESULTS/"

start_daemon
K=1024
M=$((1 << 20))
G=$((1 << 30))
B=$((64 * K)) # the pool's block

admin_api POST /v1/tenants '{"name":"alice","uid":1000,"gid":1000}'
expect 201
sock=$run_dir/tenants/alice/nbd.sock
uri() { echo "nbd+unix:///$1?socket=$sock"; }
for v in v:$G empty:$G copy:$G; do
	tenant_api alice POST /v1/volumes "{\"name\":\"${v%:*}\",\"size\":${v#*:}}"
	expect 201
done

# data_map URI: the data extents nbdinfo --map prints, touching ones joined, "OFF LEN".
data_map() {
	nbdinfo --map "$1" | awk '
		$3 == 0 { if (n && $1 == s + l) { l += $2 } else { if (n) print s, l; s = $1; l = $2; n = 1 } }
		END { if (n) print s, l }'
}
# blocks N...: the "OFF LEN" lines of pool blocks N..., touching ones joined.
blocks() {
	local n
	for n in "$@"; do echo "$((n * B)) $B"; done |
		awk '{ if (n && $1 == s + l) { l += $2 } else { if (n) print s, l; s = $1; l = $2; n = 1 } }
			END { if (n) print s, l }'
}

step "nbdinfo --map: an unwritten volume is one hole"
[ -z "$(data_map "$(uri v)")" ] || fail "unwritten v has data: $(data_map "$(uri v)")"
nbdinfo --map "$(uri v)" | grep -q "^ *0 *$G *3 *hole,zero$" ||
	fail "unwritten v: $(nbdinfo --map "$(uri v)")"

step "nbdinfo --map: 4 KiB written in 5 scattered blocks maps exactly those 5 pool blocks"
args=()
for n in 0 5 6 1000 16383; do args+=(-c "write -P 0x11 $((n * B + 4 * K)) 4k"); done
qemu-io -f raw "${args[@]}" "$(uri v)" >/dev/null
got=$(data_map "$(uri v)")
[ "$got" = "$(blocks 0 5 6 1000 16383)" ] || fail "map of v: $got"

step "a connection's map holds what it and others write after it was taken"
out=$("$map" "$(uri v)" c1 map 0 $G \
	c2 write $((2000 * B)) 4096 c1 map $((2000 * B)) $B \
	c1 write $((3000 * B + 512)) 512 c1 map $((3000 * B)) $B \
	c1 trim $((1000 * B)) $B c1 map $((1000 * B)) $B \
	c3 map $((1000 * B)) $B c3 map $((2000 * B)) $B c3 map $((3000 * B)) $B)
want="c1 map: 0 $B data $B $((4 * B)) hole $((5 * B)) $((2 * B)) data \
$((7 * B)) $((993 * B)) hole $((1000 * B)) $B data $((1001 * B)) $((15382 * B)) hole \
$((16383 * B)) $B data"
[ "$(sed -n 1p <<<"$out")" = "$want" ] || fail "c1's first map: $out"
grep -qx "c1 map: $((2000 * B)) $B data" <<<"$out" || fail "c2's write is a hole to c1: $out"
grep -qx "c1 map: $((3000 * B)) $B data" <<<"$out" || fail "c1's own write is a hole to it: $out"
# A trim is data to the connection that held the map (never wrong), a hole to a new one:
# the pool unmapped the block.
grep -qx "c1 map: $((1000 * B)) $B data" <<<"$out" || fail "c1's trimmed block: $out"
grep -qx "c3 map: $((1000 * B)) $B hole" <<<"$out" || fail "the trimmed block to c3: $out"
grep -qx "c3 map: $((2000 * B)) $B data" <<<"$out" || fail "c2's write to c3: $out"
grep -qx "c3 map: $((3000 * B)) $B data" <<<"$out" || fail "c1's write to c3: $out"

step "copies with extents while fio writes, and after it, equal copies without"
fio --name=w --ioengine=nbd --uri="$(uri v)" --rw=randwrite --bs=4k --size=$((256 * M)) \
	--offset=$((512 * M)) --time_based --runtime=20 --rate=2m --eta=never --output=/dev/null &
fio_pid=$!
cleanup "kill $fio_pid 2>/dev/null"
nbdcopy --connections=2 "$(uri v)" "$scratch/during" || fail "nbdcopy during fio's writes failed"
wait $fio_pid || fail "fio failed"
nbdcopy "$(uri v)" "$scratch/extents"
nbdcopy --no-extents "$(uri v)" "$scratch/plain"
cmp "$scratch/extents" "$scratch/plain" || fail "nbdcopy with extents differs from without"
# What fio was not writing reads the same in the copy made while it wrote.
cmp -n $((512 * M)) "$scratch/during" "$scratch/plain" ||
	fail "a copy made while fio wrote elsewhere differs"
rm -f "$scratch/during" "$scratch/plain"
qemu-img convert -f raw -O raw "$(uri v)" "$scratch/qemu"
cmp "$scratch/extents" "$scratch/qemu" || fail "qemu-img convert differs from nbdcopy"
rm -f "$scratch/qemu"
# And back into a volume: nbdcopy skips the holes, the volume maps only what v maps.
nbdcopy "$scratch/extents" "$(uri copy)"
rm -f "$scratch/extents"
[ "$(data_map "$(uri copy)")" = "$(data_map "$(uri v)")" ] ||
	fail "the copy maps $(data_map "$(uri copy)"), v $(data_map "$(uri v)")"

step "diff: against an empty volume, a volume's diff is its map"
tenant_api alice GET "/v1/volumes/v/diff?from=empty"
expect 200
[ "$(field '.changes | map(select(.kind == "zero")) | length')" = 0 ] || fail "zero ranges: $body"
[ "$(field '.changes[] | select(.kind == "data") | "\(.offset) \(.length)"')" = \
	"$(data_map "$(uri v)")" ] || fail "diff v from empty: $body; map: $(data_map "$(uri v)")"

step "diff: a snapshot against its parent is what was written to it, and what it trimmed"
tenant_api alice POST /v1/volumes '{"name":"s","parent":"v"}'
expect 201
tenant_api alice GET "/v1/volumes/s/diff?from=v"
expect 200
[ "$(field '.changes | length')" = 0 ] || fail "a new snapshot differs from its parent: $body"
qemu-io -f raw -c "write -P 0x22 $((7 * B)) 4k" -c "write -P 0x23 $((5 * B)) $B" \
	-c "discard $((16383 * B)) $B" "$(uri s)" >/dev/null
tenant_api alice GET "/v1/volumes/s/diff?from=v"
expect 200
[ "$(field '[.changes[] | "\(.offset) \(.length) \(.kind)"] | join(",")')" = \
	"$((5 * B)) $B data,$((7 * B)) $B data,$((16383 * B)) $B zero" ] || fail "diff s from v: $body"
"$TP_BUILD/thinproxy" --dir "$run_dir/tenants/alice" --json diff s --from v >"$scratch/diff.json" ||
	fail "thinproxy diff failed"
[ "$(jq -c .changes "$scratch/diff.json")" = "$(jq -c .changes <<<"$body")" ] ||
	fail "thinproxy diff: $(cat "$scratch/diff.json"), REST: $body"

step "usage: exact, the blocks shared with the parent and those held alone"
tenant_api alice GET /v1/volumes/s/usage
expect 200
mapped=$(data_map "$(uri s)" | awk '{ n += $2 } END { print n + 0 }')
[ "$(field .exclusive)" = $((2 * B)) ] || fail "s holds 2 blocks alone: $body"
[ "$(field .mapped)" = "$(($(field .exclusive) + $(field .shared)))" ] || fail "usage: $body"
[ "$(field .mapped)" = "$mapped" ] || fail "usage $body, nbdinfo --map: $mapped bytes of data"
exclusive=$(field .exclusive)
# The tenant's pool blocks, each once: v's, the copy's (its own blocks), what s holds alone.
tenant_api alice GET /v1/usage
expect 200
sum() { data_map "$1" | awk '{ n += $2 } END { print n + 0 }'; }
[ "$(field .allocated)" = $(($(sum "$(uri v)") + $(sum "$(uri copy)") + exclusive)) ] ||
	fail "alice's allocation: $body"
allocated=$(field .allocated)
admin_api GET /metrics
expect 200
grep -qx "thinproxy_tenant_allocated_bytes{tenant=\"alice\"} $allocated" <<<"$body" ||
	fail "metrics: $(grep allocated <<<"$body")"
"$TP_BUILD/thinproxy" --dir "$run_dir/tenants/alice" usage | grep -q "^allocated: " ||
	fail "thinproxy usage shows no allocation"

stop_daemon
echo "$test_name: PASS"
