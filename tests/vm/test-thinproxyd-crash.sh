#!/usr/bin/env bash
# Crash consistency: thinproxyd killed (as by kill -9) at every step of create, snapshot
# and remove, then restarted, leaves no leaked thin device, no row without its device,
# the store and the pool at the same transaction id, and a committed volume's data intact.
. "$(dirname "$0")/functions.sh"
requires curl jq sqlite3 thin_dump dmsetup cmp

steps_create="after-create-intent after-create-thin after-create-tid after-create-done"
steps_snapshot="after-snapshot-intent after-create-snap after-snapshot-tid after-snapshot-done"
steps_remove="after-remove-intent after-delete-thin after-remove-tid after-remove-done"

start_daemon
admin_api POST /v1/tenants '{"name":"t"}'
expect 201

step "a committed volume with known data"
tenant_api t POST /v1/volumes '{"name":"golden","size":16777216}'
expect 201
admin_api GET /v1/tenants/t/volumes/golden
golden_id=$(field .thin_id)
head -c $((4 << 20)) /dev/urandom >"$scratch/golden"
pool_dev=$(dmsetup info -c --noheadings -o major,minor thinproxy-pool | tr -d ' ')
dmsetup create tp-writer --table "0 32768 thin $pool_dev $golden_id"
dd if="$scratch/golden" of=/dev/mapper/tp-writer bs=1M oflag=direct status=none
dmsetup remove tp-writer
tenant_api t POST /v1/volumes/golden/commit
expect 200
tenant_api t GET /v1/volumes/golden
[ "$(field .used)" = $((4 << 20)) ] || fail "info does not read used bytes from the thin target: $body"

# crash STEP METHOD PATH [JSON]: run one call with the daemon set to die at STEP.
crash() {
	local fault=$1
	shift
	stop_daemon
	THINPROXY_FAULT=$fault start_daemon
	tenant_api t "$@"
	wait_daemon_dead
	grep -q "fault injection: killing the daemon at $fault" "$daemon_log" ||
		fail "the daemon did not reach $fault"
	start_daemon
}

for s in $steps_create; do
	step "create, killed $s"
	crash "$s" POST /v1/volumes "{\"name\":\"c-$s\",\"size\":8388608}"
	tenant_api t GET "/v1/volumes/c-$s"
	case $s in
	*-intent | *-thin) expect 404 ;; # rolled back
	*) expect 200 ;;                 # completed
	esac
done

for s in $steps_snapshot; do
	step "snapshot, killed $s"
	crash "$s" POST /v1/volumes "{\"name\":\"s-$s\",\"parent\":\"golden\"}"
	tenant_api t GET "/v1/volumes/s-$s"
	case $s in
	*-intent | *-snap) expect 404 ;;
	*) expect 200 ;;
	esac
done

for s in $steps_remove; do
	step "remove, killed $s"
	tenant_api t POST /v1/volumes "{\"name\":\"r-$s\",\"size\":8388608}"
	expect 201
	crash "$s" DELETE "/v1/volumes/r-$s"
	tenant_api t GET "/v1/volumes/r-$s"
	expect 404 # removal is rolled forward or completed
done

step "the store and the pool agree"
admin_api GET /v1/pool
pool_tid=$(field .transaction_id)
stop_daemon
db=$state_dir/thinproxy.db
store_tid=$(sqlite3 "$db" "SELECT value FROM meta WHERE key = 'pool_tid'")
[ "$pool_tid" = "$store_tid" ] || fail "pool transaction id $pool_tid, store $store_tid"
pending=$(sqlite3 "$db" "SELECT count(*) FROM volumes WHERE pending_tid IS NOT NULL")
[ "$pending" = 0 ] || fail "$pending volumes still pending"
sqlite3 "$db" "SELECT thin_id FROM volumes ORDER BY thin_id" >"$scratch/store-ids"

step "the committed volume's data is intact"
dmsetup create tp-reader --readonly --table "0 32768 thin $pool_dev $golden_id"
cmp -n $((4 << 20)) "$scratch/golden" /dev/mapper/tp-reader || fail "golden changed"
dmsetup remove tp-reader

step "no leaked thin device: the pool's metadata lists exactly the store's ids"
for d in $(dmsetup ls | awk '/^thinproxy-pool-/ {print $1}'); do dmsetup remove "$d"; done
dmsetup remove thinproxy-pool
# thin_dump opens with O_DIRECT, which tmpfs lacks: read the file through a loop device.
meta_loop=$(losetup --find --show --read-only "$state_dir/pool/metadata.img")
cleanup "losetup -d $meta_loop"
thin_dump "$meta_loop" | sed -n 's/.*<device dev_id="\([0-9]*\)".*/\1/p' |
	sort -n >"$scratch/pool-ids"
diff "$scratch/store-ids" "$scratch/pool-ids" || fail "thin ids differ (store < > pool)"
echo "$test_name: PASS ($(wc -l <"$scratch/store-ids") volumes)"
