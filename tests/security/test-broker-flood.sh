#!/usr/bin/env bash
# One tenant's compromised nbdkit cannot stall the broker for the others. With alice's
# nbdkit credentials, 65 connections to the broker that send nothing (more than the
# broker's accept queue holds; each one the daemon closes is opened again) run while bob
# opens, lists and copies his volume, and while his nbdkit is killed and restarted under
# an attached device that reconnects: each of these succeeds within the plugin's own
# wait for the broker (30 s), the hang that a broker waiting for each silent connection
# in turn (0.5 s each, 32 s for a full queue) causes. Meanwhile the daemon holds 16 of
# alice's connections at most and refuses the rest. Prints how long bob's open took
# before and during the flood. (Listings that are never read hold a broker only when
# they are longer than a socket buffer, hundreds of volumes: test-plugin-broker floods
# with those.)
. "$(dirname "$0")/../vm/functions.sh"
requires curl jq setpriv nbdinfo nbdcopy cmp
broker=$TP_BUILD/tests/vm/broker-raw
[ -x "$broker" ] || fail "broker-raw is missing (make all)"
broker=$(runnable_by_all "$broker")

cleanup "cp $daemon_log $TP_RESULTS/"
start_daemon
M=$((1 << 20))
sock=$run_dir/private/broker.sock
bob_sock=$run_dir/tenants/bob/nbd.sock
bob_pidfile=$run_dir/tenants/bob/nbdkit.pid
uri() { echo "nbd+unix:///${1-}?socket=$bob_sock"; }

step "tenants alice and bob, a volume each; bob's holds known data and is attached"
admin_api POST /v1/tenants '{"name":"alice","uid":1000,"gid":1000}'
expect 201
admin_api POST /v1/tenants '{"name":"bob","uid":1001,"gid":1001}'
expect 201
tenant_api alice POST /v1/volumes "{\"name\":\"a1\",\"size\":$((4 * M))}"
expect 201
tenant_api bob POST /v1/volumes "{\"name\":\"b1\",\"size\":$((8 * M))}"
expect 201
head -c $((8 * M)) /dev/urandom >"$scratch/b1.in"
nbdcopy "$scratch/b1.in" "$(uri b1)"
dev=$(tp --admin --tenant bob attach b1 --timeout 30)
cleanup "$TP_BUILD/thinproxy --dir $run_dir --admin --tenant bob detach $dev"

# wait_for WHAT COMMAND...: until COMMAND succeeds, at most 30 s (the plugin's wait for
# the broker, which a stalled daemon would exceed).
wait_for() {
	local what=$1 i
	shift
	for ((i = 0; i < 300; i++)); do
		"$@" && return 0
		sleep 0.1
	done
	fail "waited 30 s for $what"
}
# held: how many connections to the broker the daemon holds (accepted sockets, which
# carry the broker's path in /proc/net/unix).
held() {
	local inodes
	inodes=$(awk -v p="$sock" '$8 == p && $6 == "03" {print $7}' /proc/net/unix)
	{ ls -l "/proc/$daemon_pid/fd" 2>/dev/null || true; } | awk -v list="$inodes" '
		BEGIN { n = split(list, a); for (i = 1; i <= n; i++) want["socket:[" a[i] "]"] }
		$NF in want { c++ }
		END { print c + 0 }'
}
# check_held: the daemon holds no more than the cap of alice's connections (bob has none
# open between the steps below).
max_held=0
check_held() {
	local n
	n=$(held)
	((n <= 16)) || fail "the daemon holds $n broker connections (cap: 16 per uid)"
	((n > max_held)) && max_held=$n
	return 0
}

# open_ms: open b1 as bob, and print how long that took (call it as ms=$(open_ms), so
# that a failure ends the test).
open_ms() {
	local start=$EPOCHREALTIME
	nbdinfo --size "$(uri b1)" >"$scratch/size" 2>"$scratch/err" ||
		fail "bob's open failed: $(cat "$scratch/err")"
	[ "$(cat "$scratch/size")" = $((8 * M)) ] || fail "b1's size: $(cat "$scratch/size")"
	echo "$(((${EPOCHREALTIME/./} - ${start/./}) / 1000)) ms"
}
ms=$(open_ms)
echo "bob's open without a flood: $ms"

step "alice's nbdkit uid floods the broker with 65 silent connections"
apid=$(cat "$run_dir/tenants/alice/nbdkit.pid")
auid=$(awk '$1 == "Uid:" {print $2}' "/proc/$apid/status")
agid=$(awk '$1 == "Gid:" {print $2}' "/proc/$apid/status")
setpriv --reuid="$auid" --regid="$agid" --clear-groups --inh-caps=-all --bounding-set=-all \
	--no-new-privs "$broker" "$sock" flood 65 0 >"$scratch/flood" 2>&1 &
flood_pid=$!
cleanup "kill $flood_pid"
flooding() { grep -q '^flood: started$' "$scratch/flood"; }
wait_for "the flood to start" flooding

step "during the flood: bob opens, lists and copies"
ms=$(open_ms)
echo "bob's open during the flood: $ms"
check_held
nbdinfo --list --json "$(uri)" >"$scratch/list" 2>"$scratch/err" ||
	fail "bob's listing failed during the flood: $(cat "$scratch/err")"
[ "$(jq -r '[.exports[]."export-name"] | join(" ")' "$scratch/list")" = b1 ] ||
	fail "bob's listing: $(cat "$scratch/list")"
check_held
nbdcopy "$(uri b1)" "$scratch/b1.out"
cmp "$scratch/b1.in" "$scratch/b1.out" || fail "b1 read during the flood differs"
check_held

step "during the flood: bob's nbdkit is killed, restarted, and his device reconnects"
bob_pid=$(cat "$bob_pidfile")
kill -9 "$bob_pid"
respawned() {
	local pid
	pid=$(cat "$bob_pidfile" 2>/dev/null) && [ -n "$pid" ] && [ "$pid" != "$bob_pid" ] &&
		[ -d "/proc/$pid" ]
}
wait_for "bob's nbdkit to be restarted" respawned
# The device's keeper reconnects through the new nbdkit, whose open asks the broker.
dd if="$dev" of="$scratch/b1.dev" bs=1M iflag=direct status=none ||
	fail "bob's device cannot be read after the reconnect"
cmp "$scratch/b1.in" "$scratch/b1.dev" || fail "bob's device reads differently after the reconnect"
nbdinfo --size "$(uri b1)" >/dev/null 2>"$scratch/err" ||
	fail "bob's open after the restart failed during the flood: $(cat "$scratch/err")"
check_held

step "the daemon held 16 of alice's connections at most, and refused the rest"
# Sample until the daemon is seen at the cap (the flood's connections are held 0.5 s of
# every second or so), which also shows that check_held counts them.
at_cap() {
	check_held
	((max_held == 16))
}
wait_for "the daemon to hold 16 of alice's connections" at_cap
grep -q "broker: uid $auid (pid [0-9]*) holds 16 connections already, refusing more" "$daemon_log" ||
	fail "the daemon did not log refusing alice's connections"
kill -TERM "$flood_pid"
wait "$flood_pid" || fail "the flood failed: $(cat "$scratch/flood")"
cat "$scratch/flood"
admin_api GET /v1/tenants/bob
[ "$(field .nbd)" = running ] || fail "bob's nbdkit: $body"

tp --admin --tenant bob detach "$dev"
stop_daemon
! grep -E 'Sanitizer|runtime error' "$daemon_log" || fail "sanitizer reports in the daemon's log"
echo "$test_name: PASS"
