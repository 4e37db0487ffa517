#!/usr/bin/env bash
# A tenant's nbdkit is confined: even fully compromised, it can reach only its own
# tenant's volumes. tests/vm/test-thinproxyd-privileges.sh checks one nbdkit's uid,
# capability sets and no_new_privs; this extends it to two tenants' nbdkits (their
# uids and gids distinct from each other, from root and from the tenants' socket
# owners; no supplementary groups; not a member of the disk group) and then runs code
# with exactly an nbdkit's credentials (setpriv: its uid, gid, no groups, no
# capabilities in any set, no_new_privs; it has no namespaces of its own to enter).
# That code cannot connect to the admin socket or to any tenant's control or NBD socket
# (its own tenant's included: the daemon hands nbdkit its listening socket); cannot
# open the dm devices, the loop devices, the pool's files or the store, nor signal the
# daemon or the other nbdkit; and the broker, asked by bob's nbdkit uid, hands over bob's
# volumes and what alice granted bob (read-only as granted), never alice's own, and
# answers nobody who runs no nbdkit. Last, what an nbdkit holds while a client uses a
# volume: that volume's device and sockets, the plugin's sealed copy, nothing else.
. "$(dirname "$0")/../vm/functions.sh"
requires curl jq setpriv qemu-io stat readlink losetup getent pgrep
raw=$TP_BUILD/tests/vm/nbd-raw
broker=$TP_BUILD/tests/vm/broker-raw
[ -x "$raw" ] && [ -x "$broker" ] || fail "nbd-raw or broker-raw is missing (make all)"
raw=$(runnable_by_all "$raw") broker=$(runnable_by_all "$broker")

cleanup "cp $daemon_log $TP_RESULTS/"
start_daemon
M=$((1 << 20))

step "tenants alice (sockets 1000:1000) and bob (1001:1001), volumes, a read grant to bob"
admin_api POST /v1/tenants '{"name":"alice","uid":1000,"gid":1000}'
expect 201
admin_api POST /v1/tenants '{"name":"bob","uid":1001,"gid":1001}'
expect 201
for t in alice:a1 alice:a2 bob:b1; do
	tenant_api "${t%:*}" POST /v1/volumes "{\"name\":\"${t#*:}\",\"size\":$((4 * M))}"
	expect 201
done
admin_api POST /v1/grants '{"owner":"alice","volume":"a2","to":"bob"}'
expect 201
apid=$(cat "$run_dir/tenants/alice/nbdkit.pid")
bpid=$(cat "$run_dir/tenants/bob/nbdkit.pid")
# A client holds a1 open through alice's nbdkit and b1 through bob's (for an hour:
# qemu-io sleeps in milliseconds), so that both volumes' devices are active and each
# nbdkit holds what it holds while serving.
qemu-io -f raw -c 'sleep 3600000' "nbd+unix:///a1?socket=$run_dir/tenants/alice/nbd.sock" \
	>"$scratch/hold-a1" 2>&1 &
hold_a=$!
qemu-io -f raw -c 'sleep 3600000' "nbd+unix:///b1?socket=$run_dir/tenants/bob/nbd.sock" \
	>"$scratch/hold-b1" 2>&1 &
hold_b=$!
cleanup "kill $hold_a $hold_b"

admin_api GET /v1/tenants/alice/volumes/a1
a1_id=$(field .thin_id)
admin_api GET /v1/tenants/bob/volumes/b1
b1_id=$(field .thin_id)

# ids PID: "UID GID" of PID, after checking that its real, effective, saved and
# filesystem ids are each one value.
ids() {
	local u g
	u=$(awk '$1 == "Uid:" && $2 == $3 && $3 == $4 && $4 == $5 {print $2}' "/proc/$1/status")
	g=$(awk '$1 == "Gid:" && $2 == $3 && $3 == $4 && $4 == $5 {print $2}' "/proc/$1/status")
	[ -n "$u" ] && [ -n "$g" ] || fail "pid $1: $(grep -E '^(Uid|Gid):' "/proc/$1/status")"
	echo "$u $g"
}
# creds PID: the lines of PID's status that make up its credentials.
creds() { grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' "/proc/$1/status"; }

step "each nbdkit: its own uid and gid, no groups, no capabilities, no_new_privs, no namespaces"
# test-thinproxyd-privileges.sh checks alice's uid, capability sets and no_new_privs
# alone; here both tenants, and what the two must not share.
read -r auid agid <<<"$(ids "$apid")"
read -r buid bgid <<<"$(ids "$bpid")"
admin_api GET /v1/tenants/alice
[ "$(field .nbd_uid)" = "$auid" ] || fail "alice's nbdkit runs as $auid, not $(field .nbd_uid)"
admin_api GET /v1/tenants/bob
[ "$(field .nbd_uid)" = "$buid" ] || fail "bob's nbdkit runs as $buid, not $(field .nbd_uid)"
disk=$(getent group disk | cut -d: -f3)
for id in "$auid" "$agid" "$buid" "$bgid"; do
	case " 0 1000 1001 $disk " in
	*" $id "*) fail "an nbdkit runs with id $id (root's, a socket owner's or disk's)" ;;
	esac
done
[ "$auid" != "$buid" ] && [ "$agid" != "$bgid" ] ||
	fail "alice's and bob's nbdkits share ids: $auid:$agid $buid:$bgid"
for pid in "$apid" "$bpid"; do
	want="Groups:
CapInh:	0000000000000000
CapPrm:	0000000000000000
CapEff:	0000000000000000
CapBnd:	0000000000000000
CapAmb:	0000000000000000
NoNewPrivs:	1"
	got=$(creds "$pid" | grep -v -E '^(Uid|Gid):' | sed 's/[[:space:]]*$//')
	[ "$got" = "$want" ] || fail "nbdkit $pid:
$got"
	for ns in /proc/"$pid"/ns/*; do
		[ "$(readlink "$ns")" = "$(readlink "/proc/1/ns/${ns##*/}")" ] ||
			fail "nbdkit $pid has its own ${ns##*/} namespace: enter it below (nsenter)"
	done
	[ "$(pgrep -u "$(ids "$pid" | cut -d' ' -f1)" | tr '\n' ' ')" = "$pid " ] ||
		fail "other processes share nbdkit $pid's uid: $(pgrep -a -u "$(ids "$pid" | cut -d' ' -f1)")"
done

# as_nbdkit PID CMD...: run CMD with exactly PID's credentials (same uid and gid, no
# groups, no capabilities in any set, no_new_privs); its namespaces are ours (above).
as_nbdkit() {
	local u g
	read -r u g <<<"$(ids "$1")"
	shift
	setpriv --reuid="$u" --regid="$g" --clear-groups --inh-caps=-all --bounding-set=-all \
		--no-new-privs "$@"
}
creds "$apid" >"$scratch/want"
as_nbdkit "$apid" grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' \
	/proc/self/status >"$scratch/got"
diff "$scratch/want" "$scratch/got" || fail "as $apid does not run with nbdkit $apid's credentials"

step "with an nbdkit's credentials: no connection to the admin socket or any tenant's socket"
# The same connections work for their owners, so that a refusal below is the kernel's
# answer to these credentials, not a dead socket.
admin_api GET /v1/pool
expect 200
for t in alice:1000:a1 bob:1001:b1; do
	IFS=: read -r name uid vol <<<"$t"
	sock=$run_dir/tenants/$name
	setpriv --reuid="$uid" --regid="$uid" --clear-groups curl -sS -o /dev/null \
		-w '%{http_code}' --unix-socket "$sock/control.sock" http://localhost/v1/volumes \
		>"$scratch/out" ||
		fail "$name's uid cannot use its control.sock"
	[ "$(cat "$scratch/out")" = 200 ] || fail "$name's control.sock answered $(cat "$scratch/out")"
	setpriv --reuid="$uid" --regid="$uid" --clear-groups "$raw" "$sock/nbd.sock" "$vol" \
		>"$scratch/out"
	grep -q '^go: ack' "$scratch/out" || fail "$name's uid on its nbd.sock: $(cat "$scratch/out")"
done
# nbd-raw connects to any stream socket and names the error: "SOCKET: nbd-raw: connect:
# ..." per socket.
socks=("$run_dir/admin.sock" "$run_dir"/tenants/{alice,bob}/{control,nbd}.sock)
for sock in "${socks[@]}"; do
	echo "$sock: nbd-raw: connect: Permission denied"
done >"$scratch/want"
for pid in "$apid" "$bpid"; do
	as_nbdkit "$pid" sh -c 'raw=$1; shift; for s; do
		echo "$s: $("$raw" "$s" x 2>&1 >/dev/null </dev/null)"
	done' sh "$raw" "${socks[@]}" >"$scratch/got"
	diff "$scratch/want" "$scratch/got" || fail "nbdkit $pid's credentials connected to a socket above"
done

step "with an nbdkit's credentials: no dm device, loop device, pool file or store opens"
pool_files=("$state_dir"/pool/*)
[ ${#pool_files[@]} = 2 ] || fail "pool files: ${pool_files[*]}"
loops=$(losetup -n -O NAME -j "${pool_files[0]}")" "$(losetup -n -O NAME -j "${pool_files[1]}")
[ -n "${loops// /}" ] || fail "no loop devices back the pool"
files=(/dev/mapper/* $loops "${pool_files[@]}" "$state_dir/thinproxy.db")
# For each file, dd opens it for reading, then for writing without truncating, and
# copies nothing: "FILE if|of: opened" or the error.
as_nbdkit "$apid" sh -c 'for f; do for how in if of; do
	if err=$(dd "$how=$f" count=0 conv=notrunc status=none 2>&1 </dev/null >/dev/null); then
		echo "$f $how: opened"
	else
		echo "$f $how: ${err##*: }"
	fi
done; done' sh "${files[@]}" >"$scratch/got"
for f in "${files[@]}"; do
	printf '%s if: Permission denied\n%s of: Permission denied\n' "$f" "$f"
done >"$scratch/want"
diff "$scratch/want" "$scratch/got" || fail "nbdkit $apid's credentials opened the files above"
for d in "$run_dir/private" "$state_dir"; do
	! as_nbdkit "$apid" ls "$d" >/dev/null 2>&1 || fail "nbdkit $apid's credentials list $d"
done
# Nor may it signal the daemon or the other tenant's nbdkit.
for pid in "$daemon_pid" "$bpid"; do
	! as_nbdkit "$apid" kill -0 "$pid" 2>/dev/null || fail "nbdkit $apid's credentials may signal $pid"
done
as_nbdkit "$apid" kill -0 "$apid" || fail "nbdkit $apid's credentials may not signal itself"

step "the broker, as bob's nbdkit: bob's volumes and alice's grant (read-only), nothing else"
sock=$run_dir/private/broker.sock
# ask PID WANT ARG...: broker-raw ARG... with PID's credentials answers WANT.
ask() {
	local pid=$1 want=$2 got
	shift 2
	got=$(as_nbdkit "$pid" "$broker" "$sock" "$@") || fail "broker-raw $* as $pid: $got"
	[ "$got" = "$want" ] || fail "broker-raw $* as nbdkit $pid:
$got
expected:
$want"
}
ask "$bpid" "open: ok size=$((4 * M)) read-only=0 state=ready fd=rdwr" open b1 write
ask "$bpid" "open: ok size=$((4 * M)) read-only=1 state=ready fd=rdonly" open alice/a2
# 2 = ENOENT: the same for alice's own volumes as for what does not exist; 30 = EROFS
# for writing what bob may only read.
for ref in alice/a1 a1 a2 alice/nosuch nosuch images/a1 images/a2; do
	ask "$bpid" "open: error 2" open "$ref"
	ask "$bpid" "open: error 2" open "$ref" write
done
ask "$bpid" "open: error 30" open alice/a2 write
ask "$bpid" "list: 2
entry b1 size=$((4 * M)) read-only=0 state=ready
entry alice/a2 size=$((4 * M)) read-only=1 state=ready" list
ask "$apid" "open: error 2" open bob/b1
ask "$apid" "open: error 2" open b1
ask "$apid" "open: ok size=$((4 * M)) read-only=0 state=ready fd=rdwr" open a1 write
# Anybody else (a tenant's socket owner, a stranger, root) runs no nbdkit: the broker
# closes the connection without answering.
for uid in 1000 1001 4242 0; do
	got=$(setpriv --reuid=$uid --regid=$uid --clear-groups "$broker" "$sock" open a1)
	[ "$got" = closed ] || fail "the broker answered uid $uid: $got"
done

step "what an nbdkit holds while serving: its volume's device, its sockets, its own pipes"
# fds PID VOLUME_ID TENANT: one word per fd of PID, sorted: null, stderr (the daemon's,
# inherited), listen and conn (stream sockets bound to or accepted on TENANT's
# nbd.sock), pipe (both ends held by PID), device (the dm device of thin id VOLUME_ID),
# plugin (fd 4: the daemon's sealed copy of the plugin, which nbdkit loaded); anything
# else is printed as it is and fails the comparison.
fds() {
	local f t ino dev words=()
	dev=$(stat -L -c '%t:%T' /dev/mapper/*-"$2")
	for f in /proc/"$1"/fd/*; do
		t=$(readlink "$f") || continue
		case $t in
		/dev/null) words+=(null) ;;
		"$daemon_log") [ "${f##*/}" = 2 ] && words+=(stderr) || words+=("$t") ;;
		socket:*)
			ino=${t//[^0-9]/}
			case $(awk -v i="$ino" '$7 == i {print $5, $6, $8}' /proc/net/unix) in
			"0001 01 $run_dir/tenants/$3/nbd.sock") words+=(listen) ;;
			"0001 03 $run_dir/tenants/$3/nbd.sock") words+=(conn) ;;
			*) words+=("$t:$(awk -v i="$ino" '$7 == i' /proc/net/unix)") ;;
			esac
			;;
		pipe:*) [ "$(ls -l /proc/"$1"/fd | grep -cF "$t")" = 2 ] && words+=(pipe) || words+=("$t") ;;
		"/memfd:nbdkit-thinproxy-plugin.so (deleted)") [ "${f##*/}" = 4 ] && words+=(plugin) || words+=("$t") ;;
		*) [ -b "$t" ] && [ "$(stat -L -c '%t:%T' "$t")" = "$dev" ] && words+=(device) || words+=("$t") ;;
		esac
	done
	printf '%s\n' "${words[@]}" | sort | tr '\n' ' '
}
# has_device PID: PID holds a block device (builtins only: this polls).
has_device() {
	local f
	for f in /proc/"$1"/fd/*; do
		[ -b "$f" ] && return 0
	done
	return 1
}
for ((i = 0; i < 600; i++)); do
	has_device "$apid" && has_device "$bpid" && break
	sleep 0.1
done
want="conn device listen null null pipe pipe pipe pipe plugin stderr "
[ "$(fds "$apid" "$a1_id" alice)" = "$want" ] || fail "alice's nbdkit holds: $(fds "$apid" "$a1_id" alice)"
[ "$(fds "$bpid" "$b1_id" bob)" = "$want" ] || fail "bob's nbdkit holds: $(fds "$bpid" "$b1_id" bob)"
kill $hold_a $hold_b 2>/dev/null
wait $hold_a $hold_b 2>/dev/null || true

stop_daemon
! grep -E 'Sanitizer|runtime error' "$daemon_log" || fail "sanitizer reports in the daemon's log"
echo "$test_name: PASS"
