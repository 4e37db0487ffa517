#!/usr/bin/env bash
# Crash consistency on a real dm-thin pool: thinproxyd killed (as by kill -9) at every step
# of create, snapshot and remove, also right after a delete the pool refused, then
# restarted. After each crash the pool's metadata passes thin_check, its device list (from
# thin_dump) is exactly the store's volumes plus the ids it keeps as foreign, no change is
# left recorded, a committed volume's data is intact, and creates go on working. Also: a
# change costs the pool one metadata commit (one flush of its metadata device).
. "$(dirname "$0")/functions.sh"
requires curl jq sqlite3 thin_check thin_dump dmsetup losetup cmp

steps_create="after-create-intent after-create-thin after-create-done"
steps_snapshot="after-snapshot-intent after-create-snap after-snapshot-done"
steps_remove="after-remove-intent after-delete-thin after-remove-done"
db=$state_dir/thinproxy.db
checks=0

start_daemon
admin_api POST /v1/tenants '{"name":"t"}'
expect 201
pool_dev=$(dmsetup info -c --noheadings -o major,minor thinproxy-pool | tr -d ' ')

step "a committed volume with known data"
tenant_api t POST /v1/volumes '{"name":"golden","size":16777216}'
expect 201
admin_api GET /v1/tenants/t/volumes/golden
golden_id=$(field .thin_id)
head -c $((4 << 20)) /dev/urandom >"$scratch/golden"
dmsetup create tp-writer --table "0 32768 thin $pool_dev $golden_id"
dd if="$scratch/golden" of=/dev/mapper/tp-writer bs=1M oflag=direct status=none
dmsetup remove tp-writer
tenant_api t POST /v1/volumes/golden/commit
expect 200

# metadata_flushes: flushes the pool's metadata device has seen (its loop device's stat).
metadata_flushes() {
	local meta
	meta=$(dmsetup table thinproxy-pool | awk '{print $4}')
	awk '{print $16}' "/sys/dev/block/$meta/stat"
}

step "one metadata commit per change"
# What one commit costs: a message sent by hand, to an id no volume will ever have. A
# message first commits what the writes above left dirty, which dm-thin would otherwise
# commit on its own within a second, perhaps while a count below runs.
dmsetup message thinproxy-pool 0 "create_thin 16777000"
dmsetup message thinproxy-pool 0 "delete 16777000"
before=$(metadata_flushes)
dmsetup message thinproxy-pool 0 "create_thin 16777000"
commit=$(($(metadata_flushes) - before))
dmsetup message thinproxy-pool 0 "delete 16777000"
[ "$commit" -gt 0 ] || fail "a pool message flushed nothing: cannot count commits"
before=$(metadata_flushes)
tenant_api t POST /v1/volumes '{"name":"one","size":8388608}'
expect 201
after_create=$(metadata_flushes)
tenant_api t POST /v1/volumes '{"name":"two","parent":"golden"}'
expect 201
after_snapshot=$(metadata_flushes)
tenant_api t DELETE /v1/volumes/one
expect 204
after_remove=$(metadata_flushes)
echo "metadata flushes: one commit $commit; create $((after_create - before)), snapshot $((after_snapshot - after_create)), remove $((after_remove - after_snapshot))"
for n in $((after_create - before)) $((after_snapshot - after_create)) $((after_remove - after_snapshot)); do
	[ "$n" = "$commit" ] || fail "a change flushed the pool's metadata $n times, not $commit (one commit)"
done
tenant_api t DELETE /v1/volumes/two
expect 204

# check_pool: with the daemon stopped and the pool taken down, thin_check passes on its
# metadata and thin_dump lists exactly the store's thin ids and its foreign ones; no change
# is recorded, no row pending; then the daemon starts again (bringing the pool back).
check_pool() {
	local meta_loop d
	stop_daemon
	[ "$(sqlite3 "$db" "SELECT count(*) FROM pool_change")" = 0 ] || fail "a change is left recorded"
	[ "$(sqlite3 "$db" "SELECT count(*) FROM volumes WHERE state NOT IN (1, 2)")" = 0 ] ||
		fail "rows are left pending: $(sqlite3 "$db" "SELECT name, state FROM volumes")"
	sqlite3 "$db" "SELECT thin_id FROM volumes UNION SELECT thin_id FROM foreign_thin_ids ORDER BY 1" >"$scratch/store-ids"
	for d in $(dmsetup ls | awk '/^thinproxy-pool-/ {print $1}'); do dmsetup remove "$d"; done
	dmsetup remove thinproxy-pool
	# thin_check and thin_dump open with O_DIRECT, which tmpfs lacks: a loop device.
	meta_loop=$(losetup --find --show --read-only "$state_dir/pool/metadata.img")
	thin_check "$meta_loop" >"$scratch/thin_check" 2>&1 ||
		{ cat "$scratch/thin_check"; losetup -d "$meta_loop"; fail "thin_check failed"; }
	thin_dump "$meta_loop" | sed -n 's/.*<device dev_id="\([0-9]*\)".*/\1/p' | sort -n >"$scratch/pool-ids"
	losetup -d "$meta_loop"
	diff "$scratch/store-ids" "$scratch/pool-ids" || fail "thin ids differ (store < > pool)"
	checks=$((checks + 1))
	start_daemon
}

# crash STEP METHOD PATH [JSON]: run one call with the daemon set to die at STEP, start
# it again, and check the pool (unless NO_CHECK=1).
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
	[ "${NO_CHECK:-0}" = 1 ] || check_pool
}

for s in $steps_create; do
	step "create, killed $s"
	crash "$s" POST /v1/volumes "{\"name\":\"c-$s\",\"size\":8388608}"
	tenant_api t GET "/v1/volumes/c-$s"
	case $s in
	*-intent) expect 404 ;; # rolled back
	*) expect 200 ;;        # the pool has it: finished
	esac
done

for s in $steps_snapshot; do
	step "snapshot, killed $s"
	crash "$s" POST /v1/volumes "{\"name\":\"s-$s\",\"parent\":\"golden\"}"
	tenant_api t GET "/v1/volumes/s-$s"
	case $s in
	*-intent) expect 404 ;;
	*) expect 200 ;;
	esac
done

for s in $steps_remove; do
	step "remove, killed $s"
	tenant_api t POST /v1/volumes "{\"name\":\"r-$s\",\"size\":8388608}"
	expect 201
	crash "$s" DELETE "/v1/volumes/r-$s"
	tenant_api t GET "/v1/volumes/r-$s"
	expect 404 # removal is always finished
done

# The review's case: a delete the pool refuses (another dm device holds the thin device
# open, so dm-thin answers EBUSY), then a create killed at each of its steps. The volume
# whose delete failed is kept, the create is settled, nothing leaks, creates go on.
for s in $steps_create; do
	step "a refused delete, then a create killed $s"
	tenant_api t POST /v1/volumes "{\"name\":\"k-$s\",\"size\":8388608}"
	expect 201
	admin_api GET "/v1/tenants/t/volumes/k-$s"
	kid=$(field .thin_id)
	dmsetup create tp-holder --readonly --table "0 16384 thin $pool_dev $kid"
	tenant_api t DELETE "/v1/volumes/k-$s"
	expect 409 busy
	NO_CHECK=1 crash "$s" POST /v1/volumes "{\"name\":\"n-$s\",\"size\":8388608}"
	tenant_api t GET "/v1/volumes/n-$s"
	case $s in
	*-intent) expect 404 ;;
	*) expect 200 ;;
	esac
	tenant_api t GET "/v1/volumes/k-$s"
	expect 200
	[ "$(field .state)" = ready ] || fail "k-$s is $(field .state)"
	tenant_api t POST /v1/volumes "{\"name\":\"after-$s\",\"size\":8388608}"
	expect 201
	stop_daemon
	dmsetup remove tp-holder
	start_daemon
	tenant_api t DELETE "/v1/volumes/k-$s"
	expect 204
	check_pool
done

step "the committed volume's data is intact"
dmsetup create tp-reader --readonly --table "0 32768 thin $pool_dev $golden_id"
cmp -n $((4 << 20)) "$scratch/golden" /dev/mapper/tp-reader || fail "golden changed"
dmsetup remove tp-reader
stop_daemon
echo "$test_name: PASS ($checks pool checks, $(wc -l <"$scratch/store-ids") thin devices at the end)"
