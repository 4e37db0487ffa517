#!/usr/bin/env bash
# Image import: the copy runs without the daemon's lock, so a long import (its source a
# dm-delay device that makes it last longer than an nbdkit waits for the broker) holds up
# no tenant: bob opens, lists and copies his export meanwhile; the admin socket answers
# and shows the copy's progress, which `thinproxy image import` prints on a terminal.
# thinproxyd killed in the middle of an import leaks nothing: the next start removes the
# half-copied image (thin_dump agrees with the store), and the same import then succeeds.
. "$(dirname "$0")/functions.sh"
requires curl jq nbdinfo nbdcopy dmsetup losetup thin_dump sqlite3 script modprobe cmp
cleanup "cp $daemon_log $TP_RESULTS/"
M=$((1 << 20))
modprobe dm-delay

# A 64 MiB source that delays every read by 1.5 s: the copy takes a minute or more, longer
# than the plugin's 30 s wait for the broker.
head -c $((64 * M)) /dev/urandom >"$scratch/src"
src_loop=$(losetup --find --show --read-only "$scratch/src")
cleanup "losetup -d $src_loop"
dmsetup create tp-slow --readonly --table "0 $((64 * M / 512)) delay $src_loop 0 1500"
cleanup "dmsetup remove tp-slow"

start_daemon
admin_api POST /v1/tenants '{"name":"bob"}'
expect 201
bsock=$run_dir/tenants/bob/nbd.sock
tenant_api bob POST /v1/volumes "{\"name\":\"b\",\"size\":$((8 * M))}"
expect 201
head -c $((8 * M)) /dev/urandom >"$scratch/b.in"
nbdcopy "$scratch/b.in" "nbd+unix:///b?socket=$bsock"

step "a long import, from a terminal"
script -qefc "$TP_BUILD/thinproxy --dir $run_dir --admin image import slow --from /dev/mapper/tp-slow" \
	"$scratch/import.tty" >/dev/null 2>&1 &
import_pid=$!
# importing: the admin socket says the image is being imported (and how far).
importing() {
	admin_api GET /v1/images
	[ "$(field '.images[] | select(.name == "images/slow") | .state')" = importing ]
}
for ((i = 0; i < 600; i++)); do
	importing && break
	kill -0 "$import_pid" 2>/dev/null || break
	sleep 0.1
done
importing || fail "the import never showed as importing: $body"
echo "while importing: $(field '.images[] | select(.name == "images/slow") | "\(.imported) of \(.size)"')"

step "bob opens, lists and copies his export during the import"
start=$SECONDS
nbdinfo --size "nbd+unix:///b?socket=$bsock" >/dev/null || fail "bob cannot open b during the import"
nbdinfo --list "nbd+unix:///?socket=$bsock" | grep -q 'export="b"' || fail "bob cannot list during the import"
nbdcopy "nbd+unix:///b?socket=$bsock" "$scratch/b.out" || fail "bob cannot copy b during the import"
cmp "$scratch/b.in" "$scratch/b.out" || fail "bob's data differs"
echo "bob was served in $((SECONDS - start)) s"
importing || fail "the import ended before bob was served: the test proves nothing"
tenant_api bob POST /v1/volumes "{\"name\":\"during\",\"size\":$((8 * M))}"
expect 201
admin_api POST /v1/images "{\"name\":\"slow\",\"from\":\"$scratch/src\"}"
expect 409 exists
admin_api DELETE /v1/images/slow
expect 409 busy

wait "$import_pid" || fail "the import failed: $(cat "$scratch/import.tty")"
grep -q "image import slow: .* of 64M" "$scratch/import.tty" ||
	fail "no progress shown: $(tr '\r' '\n' <"$scratch/import.tty")"
admin_api GET /v1/images
[ "$(field '.images[] | select(.name == "images/slow") | .state')" = image ] || fail "not imported: $body"
admin_api POST /v1/images/slow/publish '{"all":true}'
expect 200
nbdcopy "nbd+unix:///images/slow?socket=$bsock" "$scratch/slow.out"
cmp "$scratch/src" "$scratch/slow.out" || fail "the image differs from its source"

step "kill -9 during an import: the next start removes it, nothing leaks"
"$TP_BUILD/thinproxy" --dir "$run_dir" --admin image import again --from /dev/mapper/tp-slow \
	>"$scratch/again.out" 2>&1 &
again_pid=$!
for ((i = 0; i < 300; i++)); do
	admin_api GET /v1/images
	imported=$(field '.images[] | select(.name == "images/again") | .imported' 2>/dev/null) || true
	[ "${imported:-0}" -gt 0 ] && break
	kill -0 "$again_pid" 2>/dev/null || fail "the import ended before it was killed: $(cat "$scratch/again.out")"
	sleep 0.1
done
[ "${imported:-0}" -gt 0 ] || fail "the import made no progress: $body"
kill -9 "$daemon_pid"
wait_daemon_dead
start_daemon
grep -q "removed image again, whose import was interrupted" "$daemon_log" ||
	fail "the interrupted import was not removed"
admin_api GET /v1/images
[ -z "$(field '.images[] | select(.name == "images/again") | .name')" ] || fail "the half import is listed: $body"

stop_daemon
sqlite3 "$state_dir/thinproxy.db" "SELECT thin_id FROM volumes UNION SELECT thin_id FROM foreign_thin_ids ORDER BY 1" >"$scratch/store-ids"
for d in $(dmsetup ls | awk '/^thinproxy-pool-/ {print $1}'); do dmsetup remove "$d"; done
dmsetup remove thinproxy-pool
meta_loop=$(losetup --find --show --read-only "$state_dir/pool/metadata.img")
thin_dump "$meta_loop" | sed -n 's/.*<device dev_id="\([0-9]*\)".*/\1/p' | sort -n >"$scratch/pool-ids"
losetup -d "$meta_loop"
diff "$scratch/store-ids" "$scratch/pool-ids" || fail "thin ids differ (store < > pool): a leak"

step "the same import again succeeds"
start_daemon
admin_api POST /v1/images "{\"name\":\"again\",\"from\":\"$scratch/src\"}"
expect 201
stop_daemon
echo "$test_name: PASS"
