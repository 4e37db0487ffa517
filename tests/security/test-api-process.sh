#!/usr/bin/env bash
# The REST front runs outside the root daemon, in two API processes (thinproxyd-api): the
# admin socket's, as api-uid minus 1, and the tenants' control sockets', as api-uid. Each
# has its own uid and gid, no groups, no capabilities in any set and no_new_privs, holds
# only sockets, and code with exactly its credentials cannot open the store, the pool's
# files, /dev/mapper/control or a thin device, nor signal the daemon or the other API
# process. Killed with SIGKILL while requests are in flight, each is started again: every
# request did all it answered or nothing (no volume or tenant half made; thin_dump lists
# the store's thin ids, thin_check passes), names are free to use again, and a tenant's NBD connection made before
# the kill, and its nbdkit, never notice. With --no-api-process the daemon serves the
# sockets itself, as before.
. "$(dirname "$0")/../vm/functions.sh"
requires curl jq setpriv pgrep qemu-io nbdcopy cmp losetup sqlite3 thin_check thin_dump dmsetup
cleanup "cp $daemon_log $TP_RESULTS/"

M=$((1 << 20))
api_uid=1999999999 # --nbd-uid-base (2000000000) minus 1, the default

# api_pid UID: the pid of the API process running as UID (exactly one).
api_pid() {
	local pids
	pids=$(pgrep -u "$1" -f 'thinproxyd-api --control') || true
	[ "$(wc -w <<<"$pids")" = 1 ] || fail "API processes of uid $1: '$pids'"
	echo "$pids"
}
# new_api_pid UID OLD: wait (at most 60 s) for UID's API process to be one other than OLD.
new_api_pid() {
	local i pid
	for ((i = 0; i < 1200; i++)); do
		pid=$(pgrep -u "$1" -f 'thinproxyd-api --control') || true
		[ -n "$pid" ] && [ "$pid" != "$2" ] && [ "$(wc -w <<<"$pid")" = 1 ] &&
			{ echo "$pid"; return 0; }
		sleep 0.05
	done
	fail "no new API process of uid $1 after $2 was killed"
}
creds() { grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' "/proc/$1/status"; }
# as UID CMD...: CMD with an API process's credentials: UID as uid and gid, no groups, no
# capabilities, no_new_privs.
as() {
	local u=$1
	shift
	setpriv --reuid="$u" --regid="$u" --clear-groups --inh-caps=-all --bounding-set=-all \
		--no-new-privs "$@"
}

# post SOCKET PATH JSON NAME: POST JSON, print "NAME STATUS" (000: no answer); for calls
# made at the same time, each with a body file of its own.
post() {
	local status
	status=$(curl -sS --max-time 60 --unix-socket "$1" -X POST -o "$scratch/post.$4" \
		-w '%{http_code}' -H 'Content-Type: application/json' --data-binary "$3" \
		"http://localhost$2" 2>/dev/null) || status=000
	echo "$4 $status"
}
# answered FILE...: wait (at most 60 s) until one of FILE... holds an answer; with the
# shell's own tests only, so that the wait ends within a few milliseconds of it.
answered() {
	local i f
	for ((i = 0; i < 60000; i++)); do
		for f; do [ -s "$f" ] && return 0; done
		sleep 0.001
	done
	fail "none of $# calls was answered"
}
creates=() adds=()

start_daemon
admin_api POST /v1/tenants '{"name":"alice","uid":1000,"gid":1000}'
expect 201
admin_api POST /v1/tenants '{"name":"bob","uid":1001,"gid":1001}'
expect 201
tenant_api alice POST /v1/volumes "{\"name\":\"v\",\"size\":$((4 * M))}"
expect 201
head -c $((4 * M)) /dev/urandom >"$scratch/v.in"
v_uri="nbd+unix:///v?socket=$run_dir/tenants/alice/nbd.sock"
nbdcopy --flush "$scratch/v.in" "$v_uri"

step "two API processes: their own uids, no groups, no capabilities, no_new_privs, only sockets"
admin_pid=$(api_pid $((api_uid - 1)))
tenants_pid=$(api_pid $api_uid)
for pid_uid in "$admin_pid:$((api_uid - 1))" "$tenants_pid:$api_uid"; do
	pid=${pid_uid%:*} uid=${pid_uid#*:}
	want="Uid:	$uid	$uid	$uid	$uid
Gid:	$uid	$uid	$uid	$uid
Groups:
CapInh:	0000000000000000
CapPrm:	0000000000000000
CapEff:	0000000000000000
CapBnd:	0000000000000000
CapAmb:	0000000000000000
NoNewPrivs:	1"
	got=$(creds "$pid" | sed 's/[[:space:]]*$//')
	[ "$got" = "$want" ] || fail "API process $pid:
$got"
	# stdin and stdout on /dev/null, stderr the daemon's (its log here), and beyond them
	# sockets, their epoll sets and eventfds: no file, no device, no directory.
	for fd in /proc/"$pid"/fd/*; do
		n=${fd##*/} target=$(readlink "$fd")
		case $n:$target in
		[01]:/dev/null | 2:* | *:socket:\[*\] | *:anon_inode:*) ;;
		*) fail "API process $pid holds fd $n: $target" ;;
		esac
	done
	[ "$(readlink "/proc/$pid/cwd")" = / ] || fail "API process $pid works in $(readlink "/proc/$pid/cwd")"
done
# The daemon's sockets answer through them.
admin_api GET /v1/pool
expect 200
tenant_api alice GET /v1/volumes/v
expect 200
[ "$(field .state)" = ready ] || fail "v: $body"

step "with an API process's credentials: no store, pool file, dm or loop device opens"
pool_files=("$state_dir"/pool/*)
[ ${#pool_files[@]} = 2 ] || fail "pool files: ${pool_files[*]}"
loops=$(losetup -n -O NAME -j "${pool_files[0]}")" "$(losetup -n -O NAME -j "${pool_files[1]}")
[ -n "${loops// /}" ] || fail "no loop devices back the pool"
files=(/dev/mapper/* $loops "${pool_files[@]}" "$state_dir/thinproxy.db")
for f in "${files[@]}"; do
	printf '%s if: Permission denied\n%s of: Permission denied\n' "$f" "$f"
done >"$scratch/want"
for uid in $((api_uid - 1)) $api_uid; do
	as "$uid" sh -c 'for f; do for how in if of; do
		if err=$(dd "$how=$f" count=0 conv=notrunc status=none 2>&1 </dev/null >/dev/null); then
			echo "$f $how: opened"
		else
			echo "$f $how: ${err##*: }"
		fi
	done; done' sh "${files[@]}" >"$scratch/got"
	diff "$scratch/want" "$scratch/got" || fail "uid $uid opened the files above"
	for d in "$run_dir/private" "$state_dir"; do
		! as "$uid" ls "$d" >/dev/null 2>&1 || fail "uid $uid lists $d"
	done
	for pid in "$daemon_pid" "$admin_pid" "$tenants_pid" "$(cat "$run_dir/tenants/alice/nbdkit.pid")"; do
		[ "$(stat -c %u "/proc/$pid")" = "$uid" ] && continue
		! as "$uid" kill -0 "$pid" 2>/dev/null || fail "uid $uid may signal $pid"
	done
done

step "kill -9 of the tenants' API process while alice creates volumes: all or nothing"
nbdkit_pid=$(cat "$run_dir/tenants/alice/nbdkit.pid")
# A connection to v made before the kill writes and reads back after it (qemu-io's sleep
# is in milliseconds).
qemu-io -f raw -c 'sleep 8000' -c 'write -P 0x5a 0 64k' -c 'read -P 0x5a 0 64k' "$v_uri" \
	>"$scratch/held" 2>&1 &
held=$!
# 120 at once (forty were all answered before the kill on an idle CI machine): the API
# process has them in hand, some being run by the daemon and the rest waiting, when it
# is killed after the first is answered.
n=120
for i in $(seq 1 $n); do
	post "$run_dir/tenants/alice/control.sock" /v1/volumes \
		"{\"name\":\"k$i\",\"size\":$((4 * M))}" "k$i" >"$scratch/creates.$i" &
	creates+=($!)
done
answered "$scratch"/creates.*
kill -9 "$tenants_pid"
wait "${creates[@]}"
cat "$scratch"/creates.* >"$scratch/creates"
new_tenants=$(new_api_pid $api_uid "$tenants_pid")
wait "$held" || fail "the connection held across the kill failed: $(cat "$scratch/held")"
! grep -qi -e 'fail' -e 'error' "$scratch/held" || fail "held connection: $(cat "$scratch/held")"
[ "$(cat "$run_dir/tenants/alice/nbdkit.pid")" = "$nbdkit_pid" ] && kill -0 "$nbdkit_pid" ||
	fail "alice's nbdkit changed across the kill"
grep -q ' 000$' "$scratch/creates" || fail "no create was cut off by the kill: $(cat "$scratch/creates")"
tenant_api alice GET /v1/volumes
expect 200
while read -r name st; do
	listed=$(jq -r --arg n "$name" '[.volumes[] | select(.name == $n)] | length' <<<"$body")
	case $st in
	201) [ "$listed" = 1 ] || fail "$name was answered 201 and is gone: $body" ;;
	000) ;;
	*) fail "$name: $st, neither created nor cut off" ;;
	esac
done <"$scratch/creates"
[ "$(jq -r '[.volumes[] | select(.state != "ready")] | length' <<<"$body")" = 0 ] ||
	fail "a volume was left half made: $body"
# Each one cut off is there whole or can be made now; then all of them exist.
for i in $(seq 1 $n); do
	tenant_api alice GET "/v1/volumes/k$i"
	[ "$status" = 200 ] && continue
	expect 404
	tenant_api alice POST /v1/volumes "{\"name\":\"k$i\",\"size\":$((4 * M))}"
	expect 201
done
tenant_api alice GET /v1/volumes
[ "$(jq '.volumes | length' <<<"$body")" = $((n + 1)) ] || fail "alice has not v and k1-k$n: $body"
# v is its data with the held connection's 64 KiB of 0x5a at the start.
head -c $((64 * 1024)) /dev/zero | tr '\0' '\132' >"$scratch/v.want"
tail -c +$((64 * 1024 + 1)) "$scratch/v.in" >>"$scratch/v.want"
nbdcopy "$v_uri" "$scratch/v.out"
cmp "$scratch/v.want" "$scratch/v.out" || fail "v lost data or the held connection's write"

step "kill -9 of the admin's API process while tenants are added: all or nothing"
for i in $(seq 1 16); do
	post "$run_dir/admin.sock" /v1/tenants \
		"{\"name\":\"t$i\",\"uid\":$((2000 + i)),\"gid\":$((2000 + i))}" "t$i" >"$scratch/adds.$i" &
	adds+=($!)
done
answered "$scratch"/adds.*
kill -9 "$admin_pid"
wait "${adds[@]}"
cat "$scratch"/adds.* >"$scratch/adds"
grep -q ' 000$' "$scratch/adds" || fail "no tenant add was cut off by the kill: $(cat "$scratch/adds")"
new_api_pid $((api_uid - 1)) "$admin_pid" >/dev/null
# Each tenant added is whole (its control socket answers, through the tenants' API
# process); each cut off is whole or absent, and can be added now.
for i in $(seq 1 16); do
	admin_api GET "/v1/tenants/t$i"
	if [ "$status" = 404 ]; then
		grep -q "^t$i 000$" "$scratch/adds" || fail "t$i was answered $(grep "^t$i " "$scratch/adds") and is gone"
		admin_api POST /v1/tenants "{\"name\":\"t$i\",\"uid\":$((2000 + i)),\"gid\":$((2000 + i))}"
		expect 201
	else
		expect 200
	fi
	wait_for_socket "$run_dir/tenants/t$i/control.sock"
	tenant_api "t$i" GET /v1/volumes
	expect 200
done
# A removed tenant's socket is taken back from the tenants' API process.
admin_api DELETE /v1/tenants/t8
expect 204
[ ! -e "$run_dir/tenants/t8/control.sock" ] || fail "t8's control.sock outlived t8"
tenant_api alice GET /v1/volumes/k1
expect 200

step "the pool holds exactly the store's volumes, and thin_check passes"
stop_daemon
! pgrep -f 'thinproxyd-api --control' >/dev/null || fail "an API process outlived the daemon: $(pgrep -af thinproxyd-api)"
db=$state_dir/thinproxy.db
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

step "--no-api-process: the daemon serves the sockets itself"
start_daemon --no-api-process
! pgrep -f 'thinproxyd-api' >/dev/null || fail "an API process runs with --no-api-process"
tenant_api alice GET /v1/volumes/k$n
expect 200
admin_api GET /v1/tenants/t1
expect 200
stop_daemon
echo "$test_name: PASS"
