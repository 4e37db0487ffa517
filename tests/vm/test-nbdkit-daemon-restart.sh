#!/usr/bin/env bash
# Tenants' nbdkits outlive thinproxyd: after kill -9 of the daemon, an nbdcopy and a
# verifying fio on connections already open run to the end with their data intact;
# while it is down, new opens and listings fail at once, with an error naming the
# daemon in nbdkit's log; once it is started again it adopts the same nbdkit on the
# same socket and new opens work, with nothing restarted on the tenant's side. A killed
# nbdkit (adopted or the daemon's own child) is restarted on the same socket, and a
# copy it broke succeeds when retried.
. "$(dirname "$0")/functions.sh"
requires curl jq nbdinfo nbdcopy fio cmp
cleanup "cp $daemon_log $TP_RESULTS/"

start_daemon
M=$((1 << 20))

admin_api POST /v1/tenants '{"name":"alice","uid":1000,"gid":1000}'
expect 201
sock=$run_dir/tenants/alice/nbd.sock
pidfile=$run_dir/tenants/alice/nbdkit.pid
uri() { echo "nbd+unix:///${1-}?socket=$sock"; }
tenant_api alice POST /v1/volumes "{\"name\":\"c1\",\"size\":$((32 * M))}"
expect 201
tenant_api alice POST /v1/volumes "{\"name\":\"c2\",\"size\":$((16 * M))}"
expect 201
head -c $((32 * M)) /dev/urandom >"$scratch/c1.in"
nbdkit_pid=$(cat "$pidfile")
sock_inode=$(stat -c %i "$sock")

# dev_fds: how many block devices alice's nbdkit holds open (builtins only: this polls).
dev_fds() {
	local f n=0
	for f in /proc/"$nbdkit_pid"/fd/*; do [ -b "$f" ] && n=$((n + 1)); done
	echo $n
}
# wait_for COMMAND...: until COMMAND succeeds, at most 60 s; prints how long it took.
wait_for() {
	local start=$EPOCHREALTIME
	wait_until 60 "$@" || fail "waited 60 s for: $*"
	echo "$(((${EPOCHREALTIME/./} - ${start/./}) / 1000)) ms"
}
# respawned: the daemon started another nbdkit (its pidfile names a new process);
# serving: that nbdkit answers on the socket.
respawned() {
	local pid
	pid=$(cat "$pidfile" 2>/dev/null) && [ -n "$pid" ] && [ "$pid" != "$nbdkit_pid" ] &&
		[ -d "/proc/$pid" ]
}
serving() { nbdinfo --size "$(uri c2)" >/dev/null 2>&1; }

step "kill -9 thinproxyd while an nbdcopy and a verifying fio run on open connections"
# opened REF N: the broker has opened REF N times.
opened() { (($(grep -c "broker: tenant alice: opened $1 " "$daemon_log") >= $2)); }
fio --name=verify --ioengine=nbd --uri="$(uri c2)" --rw=randwrite --bs=64k --size=16M \
	--loops=4 --iodepth=4 --verify=crc32c --eta=never --output="$scratch/fio.out" &
fio_pid=$!
# fio's NBD engine connects once to learn the size, then again for the job.
wait_for opened c2 2 >/dev/null
# Small requests, one at a time: the copy takes long enough to outlive the daemon.
nbdcopy --connections=1 --requests=1 --request-size=65536 --flush "$scratch/c1.in" \
	"$(uri c1)" &
copy_pid=$!
wait_for opened c1 1 >/dev/null
kill -0 $fio_pid 2>/dev/null || fail "fio ended before the daemon was killed"
kill -9 "$daemon_pid"
wait_daemon_dead
kill -0 $copy_pid 2>/dev/null || fail "nbdcopy ended before the daemon was killed"

step "while the daemon is down: new opens and listings fail at once, clearly"
# nbdkit 1.32 answers every failed open with NBD_REP_ERR_UNKNOWN and no message (clients
# print "no export named ..."): the reason is in nbdkit's log, which is the daemon's.
# "At once" is as against the hang this guards against: the plugin waiting out its 30 s
# for a broker that is not there. Each refusal must come before that, however loaded
# the machine.
start=$EPOCHREALTIME
if nbdinfo --size "$(uri c2)" >/dev/null 2>"$scratch/err"; then
	fail "opened c2 while the daemon was down"
fi
open_ms=$(((${EPOCHREALTIME/./} - ${start/./}) / 1000))
start=$EPOCHREALTIME
if nbdinfo --list "$(uri)" >/dev/null 2>>"$scratch/err"; then
	fail "listed exports while the daemon was down"
fi
list_ms=$(((${EPOCHREALTIME/./} - ${start/./}) / 1000))
echo "open refused in $open_ms ms, list in $list_ms ms: $(tr '\n' ' ' <"$scratch/err")"
((open_ms < 30000)) || fail "refusing an open took $open_ms ms: the plugin's 30 s wait"
((list_ms < 30000)) || fail "refusing a listing took $list_ms ms: the plugin's 30 s wait"
grep -q 'thinproxyd.s broker .* did not answer (is thinproxyd running?)' "$daemon_log" ||
	fail "nbdkit's log does not say why the open failed"
grep -q 'list exports: thinproxyd.s broker .* cannot be reached' "$daemon_log" ||
	fail "nbdkit's log does not say why the listing failed"

step "the I/O on open connections completes and verifies with the daemon down"
wait $copy_pid || fail "nbdcopy failed after the daemon was killed"
wait $fio_pid || fail "fio failed after the daemon was killed: $(cat "$scratch/fio.out")"
grep -q 'err= 0' "$scratch/fio.out" || fail "fio: $(cat "$scratch/fio.out")"
[ -z "$(pgrep -x thinproxyd)" ] || fail "a thinproxyd is running"

step "start_daemon: the same nbdkit is adopted on the same socket, new opens work"
start_daemon
[ "$(cat "$pidfile")" = "$nbdkit_pid" ] || fail "nbdkit $nbdkit_pid was replaced by $(cat "$pidfile")"
kill -0 "$nbdkit_pid" || fail "nbdkit $nbdkit_pid is gone"
[ "$(stat -c %i "$sock")" = "$sock_inode" ] || fail "nbd.sock was replaced"
grep -q "tenant alice: adopted running nbdkit $nbdkit_pid" "$daemon_log" || fail "no adoption logged"
admin_api GET /v1/tenants/alice
[ "$(field .nbd)" = running ] || fail "alice's nbdkit: $body"
nbdcopy "$(uri c1)" "$scratch/c1.out"
cmp "$scratch/c1.in" "$scratch/c1.out" || fail "c1 differs from what nbdcopy wrote"

step "a killed nbdkit is restarted on the same socket; a broken copy succeeds on retry"
# The adopted nbdkit is not the daemon's child: its death shows on its pidfd.
nbdcopy --connections=1 --requests=1 --request-size=65536 "$(uri c1)" "$scratch/c1.out" &
copy_pid=$!
one_open() { (($(dev_fds) >= 1)); }
wait_for one_open >/dev/null
kill -9 "$nbdkit_pid"
if wait $copy_pid; then fail "nbdcopy succeeded although its nbdkit was killed"; fi
took=$(wait_for respawned)
took2=$(wait_for serving)
echo "adopted nbdkit: restarted after $took, serving $took2 later"
nbdkit_pid=$(cat "$pidfile")
[ "$(stat -c %i "$sock")" = "$sock_inode" ] || fail "nbd.sock was replaced"
nbdcopy "$(uri c1)" "$scratch/c1.out"
cmp "$scratch/c1.in" "$scratch/c1.out" || fail "c1 read after the restart differs"
# Now the daemon's own child.
kill -9 "$nbdkit_pid"
took=$(wait_for respawned)
took2=$(wait_for serving)
echo "child nbdkit: restarted after $took, serving $took2 later"
nbdkit_pid=$(cat "$pidfile")
[ "$(stat -c %i "$sock")" = "$sock_inode" ] || fail "nbd.sock was replaced"
nbdinfo --size "$(uri c2)" >/dev/null || fail "c2 cannot be opened after the restart"
admin_api GET /v1/tenants/alice
[ "$(field .nbd)" = running ] || fail "alice's nbdkit: $body"

stop_daemon
! grep -E 'Sanitizer|runtime error' "$daemon_log" || fail "sanitizer reports in the daemon's log"
echo "$test_name: PASS"
