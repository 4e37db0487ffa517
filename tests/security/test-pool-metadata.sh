#!/usr/bin/env bash
# One tenant cannot fill the pool's metadata. mallory snapshots a densely written volume
# again and again and writes a little into each snapshot: every such write unshares a
# mapping leaf, metadata that no quota counts. Meanwhile bob keeps writing. The embedded
# pool's metadata grows when half full, up to its maximum; then new volumes are refused
# (507 pool_full, naming the metadata) for everyone, the pool stays read-write, bob's
# writes all succeed, and once mallory's snapshots go, volumes can be made again.
. "$(dirname "$0")/../vm/functions.sh"
requires curl jq nbdcopy dmsetup
raw=$TP_BUILD/tests/vm/nbd-raw
[ -x "$raw" ] || fail "$raw is missing"
M=$((1 << 20))
cleanup "cp $daemon_log $TP_RESULTS/"

start_daemon --metadata-size 2M --metadata-max 4M
admin_api GET /v1/pool
[ "$(field .metadata.total)" = $((2 * M)) ] && [ "$(field .metadata.limit)" = $((4 * M)) ] ||
	fail "metadata not as configured: $body"
admin_api POST /v1/tenants '{"name":"mallory"}'
expect 201
admin_api POST /v1/tenants '{"name":"bob"}'
expect 201
msock=$run_dir/tenants/mallory/nbd.sock
bsock=$run_dir/tenants/bob/nbd.sock

# meta: the pool's metadata as "used/total state".
meta() {
	admin_api GET /v1/pool
	field '"\(.metadata.used)/\(.metadata.total) \(.metadata.state) \(.mode)"'
}

step "bob writes all along: 1 MiB at a time, new blocks first, then over them"
tenant_api bob POST /v1/volumes "{\"name\":\"data\",\"size\":$((256 * M))}"
expect 201
(
	set +e
	round=0
	while [ ! -e "$scratch/stop" ]; do
		args=()
		for i in 0 1 2 3 4 5 6 7; do args+=(write $((((round * 8 + i) % 256) * M)) $M); done
		"$raw" "$bsock" data "${args[@]}" >>"$scratch/bob.out" 2>&1 || echo "nbd-raw failed" >>"$scratch/bob.out"
		round=$((round + 1))
	done
	echo "rounds $round" >>"$scratch/bob.out"
) &
bob_pid=$!
cleanup "touch $scratch/stop; wait $bob_pid"

step "mallory: a densely mapped base"
tenant_api mallory POST /v1/volumes "{\"name\":\"base\",\"size\":$((128 * M))}"
expect 201
head -c $((128 * M)) /dev/zero | tr '\0' '\377' >"$scratch/ff"
# Flushed: the last close of a block device writes back what its page cache holds, and
# 128 MiB of that (with bob writing alongside) outlasts the commit's wait for a client
# that has just let go.
nbdcopy --flush "$scratch/ff" "nbd+unix:///base?socket=$msock"
tenant_api mallory POST /v1/volumes/base/commit
expect 200
echo "metadata after the base: $(meta)"

step "mallory snapshots and rewrites until new volumes are refused"
refused=
for ((i = 1; i <= 200; i++)); do
	tenant_api mallory POST /v1/volumes "{\"name\":\"s$i\",\"parent\":\"base\"}"
	if [ "$status" = 507 ]; then
		refused=$i
		echo "snapshot $i refused: $(field .error.message)"
		break
	fi
	expect 201
	# One write in every 4 MiB: into every mapping leaf the snapshot shares with base.
	args=()
	for ((k = 0; k < 32; k++)); do args+=(write $((k * 4 * M)) 4096); done
	"$raw" "$msock" "s$i" "${args[@]}" >"$scratch/mallory.out" || fail "mallory's writes to s$i: $(tail -3 "$scratch/mallory.out")"
	[ "$(grep -c '^write: ok$' "$scratch/mallory.out")" = 32 ] ||
		fail "mallory's writes to s$i failed: $(grep -v ': ok$' "$scratch/mallory.out" | head -3)"
	((i % 10)) || echo "after $i snapshots: $(meta)"
done
[ -n "$refused" ] || fail "200 snapshots and never refused: $(meta)"
[ "$(jq -r .error.code <<<"$body")" = pool_full ] && grep -q metadata <<<"$body" ||
	fail "refused, but not for the metadata: $body"
grep -q "metadata was 2 MiB and half full or more: grown to 4 MiB" "$daemon_log" ||
	fail "the metadata was never grown"
read -r _ state mode <<<"$(meta)"
echo "pool now: $(meta)"
[ "$mode" = rw ] || fail "the pool left read-write mode: $mode"
[ "$state" = full ] || fail "metadata state $state, not full"
admin_api GET /v1/pool
[ "$(field .needs_check)" = false ] || fail "the pool needs a check: $body"

step "bob's writes all succeeded; his volume and mallory's snapshots still take writes"
touch "$scratch/stop"
wait "$bob_pid"
grep -q "rounds" "$scratch/bob.out" || fail "bob's writer did not finish"
grep -E "error|failed|closed" "$scratch/bob.out" && fail "bob's writes failed"
echo "bob: $(grep -c ': ok$' "$scratch/bob.out") writes of 1 MiB, $(grep rounds "$scratch/bob.out")"
"$raw" "$bsock" data write 0 $M | grep -qx 'write: ok' || fail "bob cannot write"
"$raw" "$msock" s1 write $((64 * M)) 4096 | grep -qx 'write: ok' || fail "mallory cannot write"
tenant_api bob POST /v1/volumes '{"name":"more","size":8388608}'
expect 507 pool_full

step "mallory's snapshots go: volumes can be made again"
for ((i = 1; i < refused; i++)); do
	tenant_api mallory DELETE "/v1/volumes/s$i"
	expect 204
done
echo "pool after: $(meta)"
tenant_api bob POST /v1/volumes '{"name":"more","size":8388608}'
expect 201
read -r _ _ mode <<<"$(meta)"
[ "$mode" = rw ] || fail "the pool left read-write mode: $mode"
stop_daemon
echo "$test_name: PASS (refused at snapshot $refused)"
