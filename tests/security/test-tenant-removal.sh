#!/usr/bin/env bash
# A removed tenant leaves nothing that speaks for the next one. A compromised nbdkit can
# fork a child in a session of its own; the broker knows a tenant by its nbdkit's uid. So:
# once alice is removed, no process of her nbdkit is left (the child included), and a
# tenant added after her gets a uid of its own: her old uid gets nothing from the broker.
# The compromised nbdkit's child is played by a process with its credentials in its
# cgroup (where a fork of it would be) and a session of its own. Also: each nbdkit's
# cgroup carries the configured memory.max and pids.max, its rlimits hold, a restart of
# an nbdkit ends what it forked too, a restarted daemon keeps the cgroup of the nbdkit
# it adopts (and moves one from before cgroups into it), and without cgroup v2 the daemon
# refuses to start unless told cgroup = none.
. "$(dirname "$0")/../vm/functions.sh"
requires curl jq setpriv setsid ps
broker=$TP_BUILD/tests/vm/broker-raw
[ -x "$broker" ] || fail "broker-raw is missing (make all)"
broker=$(runnable_by_all "$broker")

step "the settings of the cgroups: bad values are refused"
for bad in "cgroup relative" "cgroup /a/../b" "cgroup /" "nbdkit-memory-max 1M" \
	"nbdkit-memory-max lots" "nbdkit-pids-max 8" "nbdkit-pids-max -1"; do
	rc=0
	"$TP_BUILD/thinproxyd" --${bad% *} "${bad#* }" >"$scratch/out" 2>&1 || rc=$?
	[ "$rc" != 0 ] && grep -q "invalid value for ${bad% *}" "$scratch/out" ||
		fail "thinproxyd --$bad exited $rc: $(cat "$scratch/out")"
done

cleanup "cp $daemon_log $TP_RESULTS/"
start_daemon
M=$((1 << 20))
sock=$run_dir/private/broker.sock

# alive PID: PID runs (a zombie has ended).
alive() {
	local state
	state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) && [ -n "$state" ] && [ "$state" != Z ]
}
# uid_of PID: its uid.
uid_of() { awk '$1 == "Uid:" { print $2 }' "/proc/$1/status"; }
# cgroup_of PID: the directory of its cgroup.
cgroup_of() { echo "/sys/fs/cgroup$(sed -n 's/^0:://p' "/proc/$1/cgroup")"; }
# nbdkit_of TENANT: its nbdkit's pid, once it runs nbdkit (not the fork before exec).
nbdkit_of() {
	local i pid
	for ((i = 0; i < 200; i++)); do
		pid=$(cat "$run_dir/tenants/$1/nbdkit.pid" 2>/dev/null) &&
			[ "$(readlink "/proc/$pid/exe")" = "$(command -v nbdkit)" ] && echo "$pid" && return
		sleep 0.05
	done
	fail "$1's nbdkit does not run"
}
# leave_behind PID: what a compromised nbdkit PID leaves when it forks a child that
# calls setsid: a process with its uid, in its cgroup, in a session of its own. Prints
# its pid.
leave_behind() {
	local uid dir
	uid=$(uid_of "$1")
	dir=$(cgroup_of "$1")
	sh -c 'echo $$ >"$1/cgroup.procs" && exec setpriv --reuid="$2" --regid="$2" --clear-groups \
		--inh-caps=-all --bounding-set=-all --no-new-privs setsid sleep 3600' \
		sh "$dir" "$uid" </dev/null >/dev/null 2>&1 &
	local pid=$! i
	for ((i = 0; i < 100; i++)); do
		[ "$(uid_of "$pid")" = "$uid" ] && [ "$(ps -o sid= -p "$pid" | tr -d ' ')" = "$pid" ] &&
			break
		sleep 0.05
	done
	[ "$(cgroup_of "$pid")" = "$dir" ] || fail "process $pid is not in $dir"
	echo "$pid"
}
# as_uid UID CMD...: CMD with UID's credentials and nothing else.
as_uid() {
	local u=$1
	shift
	setpriv --reuid="$u" --regid="$u" --clear-groups --inh-caps=-all --bounding-set=-all \
		--no-new-privs "$@"
}

step "alice, her volume, her nbdkit and what a compromised one would leave behind"
admin_api POST /v1/tenants '{"name":"alice","uid":1000,"gid":1000}'
expect 201
auid=$(field .nbd_uid)
tenant_api alice POST /v1/volumes "{\"name\":\"a1\",\"size\":$((4 * M))}"
expect 201
apid=$(nbdkit_of alice)
[ "$(uid_of "$apid")" = "$auid" ] || fail "alice's nbdkit runs as $(uid_of "$apid"), not $auid"
acg=$(cgroup_of "$apid")
left=$(leave_behind "$apid")
cleanup "kill -9 $left"
alive "$left" || fail "the process left behind did not start"
# What it can do while alice exists: open her volume through the broker.
got=$(as_uid "$auid" "$broker" "$sock" open a1 write)
[ "$got" = "open: ok size=$((4 * M)) read-only=0 state=ready fd=rdwr" ] ||
	fail "alice's nbdkit uid cannot open a1: $got"

step "alice removed, carol added: no process of alice's nbdkit, a new uid, nothing for the old one"
admin_api DELETE '/v1/tenants/alice?force=1'
expect 204
admin_api POST /v1/tenants '{"name":"carol","uid":1002,"gid":1002}'
expect 201
cuid=$(field .nbd_uid)
tenant_api carol POST /v1/volumes "{\"name\":\"a1\",\"size\":$((4 * M))}"
expect 201
errors=()
alive "$apid" && errors+=("alice's nbdkit $apid still runs")
alive "$left" && errors+=("the process alice's nbdkit left behind ($left) still runs")
rest=$( (ps -u "$auid" -o pid=,stat= || true) | awk '$2 !~ /Z/ { print $1 }' | tr '\n' ' ')
[ -z "$rest" ] || errors+=("processes with alice's nbdkit uid $auid: $rest")
[ "$cuid" != "$auid" ] || errors+=("carol got alice's nbdkit uid $auid")
got=$(as_uid "$auid" "$broker" "$sock" open a1 write)
[ "$got" = closed ] || errors+=("alice's old nbdkit uid asked the broker for a1 and got: $got")
got=$(as_uid "$auid" "$broker" "$sock" list)
[ "$got" = closed ] || errors+=("alice's old nbdkit uid asked the broker for a list and got: $got")
[ ! -e "$acg" ] || errors+=("alice's nbdkit's cgroup $acg is still there")
[ ${#errors[@]} = 0 ] || fail "$(printf '%s; ' "${errors[@]}")"

step "carol's nbdkit: a cgroup of its own with the default limits, and its rlimits"
cpid=$(nbdkit_of carol)
ccg=$(cgroup_of "$cpid")
case $ccg in
*/tenant-carol) ;;
*) fail "carol's nbdkit runs in cgroup $ccg" ;;
esac
[ "$(cgroup_of "$daemon_pid")" != "$ccg" ] || fail "the daemon shares carol's nbdkit's cgroup"
[ "$(cat "$ccg/memory.max")" = $((1024 * M)) ] || fail "memory.max: $(cat "$ccg/memory.max")"
[ "$(cat "$ccg/pids.max")" = 1024 ] || fail "pids.max: $(cat "$ccg/pids.max")"
# core file size, processes, open files: /proc lists them in that order.
limits=$(awk '/^Max (core file size|open files|processes) / { print $(NF - 2), $(NF - 1) }' \
	"/proc/$cpid/limits" | tr '\n' ' ')
[ "$limits" = "0 0 1024 1024 4096 4096 " ] ||
	fail "carol's nbdkit's limits (processes, files, core): $(grep Max "/proc/$cpid/limits")"

step "carol's nbdkit dies: what it left behind dies too, the next one starts in the same cgroup"
left=$(leave_behind "$cpid")
cleanup "kill -9 $left"
kill -9 "$cpid"
for ((i = 0; i < 200; i++)); do
	next=$(cat "$run_dir/tenants/carol/nbdkit.pid" 2>/dev/null || true)
	[ -n "$next" ] && [ "$next" != "$cpid" ] && alive "$next" && break
	sleep 0.05
done
[ "$next" != "$cpid" ] || fail "carol's nbdkit was not restarted"
next=$(nbdkit_of carol)
alive "$left" && fail "the process carol's nbdkit left behind ($left) outlived its restart"
[ "$(cgroup_of "$next")" = "$ccg" ] || fail "the restarted nbdkit runs in $(cgroup_of "$next")"
[ "$(cat "$ccg/pids.max")" = 1024 ] || fail "pids.max after the restart: $(cat "$ccg/pids.max")"

step "a restarted daemon adopts carol's nbdkit in its cgroup, with the limits it is given"
stop_daemon
start_daemon --nbdkit-memory-max 256M --nbdkit-pids-max 300
[ "$(cat "$run_dir/tenants/carol/nbdkit.pid")" = "$next" ] || fail "carol's nbdkit was not adopted"
[ "$(cgroup_of "$next")" = "$ccg" ] || fail "the adopted nbdkit runs in $(cgroup_of "$next")"
[ "$(cat "$ccg/memory.max")" = $((256 * M)) ] || fail "memory.max: $(cat "$ccg/memory.max")"
[ "$(cat "$ccg/pids.max")" = 300 ] || fail "pids.max: $(cat "$ccg/pids.max")"
got=$(as_uid "$cuid" "$broker" "$sock" open a1 write)
[ "$got" = "open: ok size=$((4 * M)) read-only=0 state=ready fd=rdwr" ] ||
	fail "carol's nbdkit uid cannot open a1: $got"
stop_daemon

step "without cgroup v2 the daemon refuses to start, unless told cgroup = none"
umount /sys/fs/cgroup
rc=0
"$TP_BUILD/thinproxyd" --foreground --state-dir "$state_dir" --run-dir "$run_dir" \
	--plugin "$TP_BUILD/nbdkit-thinproxy-plugin.so" $(nbdkit_flags) >"$scratch/refused" 2>&1 || rc=$?
cat "$scratch/refused"
[ "$rc" = 1 ] || fail "thinproxyd without cgroup v2 exited $rc"
grep -q 'cgroup v2 is not mounted' "$scratch/refused" || fail "no word of cgroup v2"
start_daemon --cgroup none
grep -q 'cgroup = none: ' "$daemon_log" || fail "no warning about cgroup = none"
admin_api POST /v1/tenants '{"name":"dave","uid":1003,"gid":1003}'
expect 201
dpid=$(nbdkit_of dave)
stop_daemon

step "an nbdkit from a daemon without cgroups moves into its cgroup when adopted"
mount -t cgroup2 cgroup2 /sys/fs/cgroup
start_daemon
[ "$(cat "$run_dir/tenants/dave/nbdkit.pid")" = "$dpid" ] || fail "dave's nbdkit was not adopted"
case $(cgroup_of "$dpid") in
*/tenant-dave) ;;
*) fail "the adopted nbdkit of dave runs in $(cgroup_of "$dpid")" ;;
esac
grep -q "tenant dave: moved nbdkit $dpid into its cgroup" "$daemon_log" || fail "no word of the move"
admin_api DELETE /v1/tenants/dave
expect 204
alive "$dpid" && fail "dave's nbdkit outlived dave"
stop_daemon
! grep -E 'Sanitizer|runtime error' "$daemon_log" || fail "sanitizer reports in the daemon's log"
echo "$test_name: PASS"
