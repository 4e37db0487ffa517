#!/usr/bin/env bash
# Each tenant's nbdkit, started by the real daemon, serves exactly what the tenant may
# see: NBD_OPT_LIST shows its own volumes, the images published to it and the volumes
# granted to it, with state, size and access in each description; there is no default
# export; any other name (another tenant's volume, a guessed thin id, path tricks, an
# empty, NUL-holding or 5000-byte name) fails exactly as a missing name does.
# Read-only exports (committed, image, read grant) refuse writes in the server and get
# O_RDONLY device fds; a write grant is writable. One nbdkit per tenant, as the tenant's
# own uid with no capabilities and no_new_privs, on a 0660 socket the tenant owns.
. "$(dirname "$0")/functions.sh"
requires curl jq nbdinfo nbdcopy qemu-io setpriv cmp
raw=$TP_BUILD/tests/vm/nbd-raw
[ -x "$raw" ] || fail "$raw is missing (make all)"

cleanup "cp $daemon_log $TP_RESULTS/"
start_daemon
M=$((1 << 20))

step "tenants alice and bob, their volumes, an image for alice, grants to bob"
admin_api POST /v1/tenants '{"name":"alice","uid":1000,"gid":1000}'
expect 201
alice_nbd_uid=$(field .nbd_uid)
admin_api POST /v1/tenants '{"name":"bob","uid":1001,"gid":1001}'
expect 201
bob_nbd_uid=$(field .nbd_uid)
asock=$run_dir/tenants/alice/nbd.sock
bsock=$run_dir/tenants/bob/nbd.sock
for v in a1 a2 a3 a4; do
	tenant_api alice POST /v1/volumes "{\"name\":\"$v\",\"size\":$((16 * M))}"
	expect 201
done
tenant_api alice POST /v1/volumes/a2/commit
expect 200
tenant_api bob POST /v1/volumes "{\"name\":\"b1\",\"size\":$((8 * M))}"
expect 201
head -c $((1 * M)) /dev/urandom >"$scratch/base.raw"
truncate -s $((4 * M)) "$scratch/base.raw"
admin_api POST /v1/images "{\"name\":\"base\",\"from\":\"$scratch/base.raw\"}"
expect 201
admin_api POST /v1/images/base/publish '{"tenant":"alice"}'
expect 200
admin_api POST /v1/grants '{"owner":"alice","volume":"a3","to":"bob"}'
expect 201
admin_api POST /v1/grants '{"owner":"alice","volume":"a4","to":"bob","write":true}'
expect 201
admin_api GET /v1/tenants/alice/volumes/a1
a1_thin=$(field .thin_id)

step "nbd.sock: a socket, mode 0660, owned by the tenant's uid and gid"
for t in alice:1000 bob:1001; do
	s=$run_dir/tenants/${t%:*}/nbd.sock
	[ "$(stat -c '%F %a %u %g' "$s")" = "socket 660 ${t#*:} ${t#*:}" ] ||
		fail "$s: $(stat -c '%F %a %u %g' "$s")"
done
setpriv --reuid 1000 --regid 1000 --clear-groups nbdinfo --size "nbd+unix:///a1?socket=$asock" >/dev/null ||
	fail "alice's uid cannot use alice's nbd.sock"
if setpriv --reuid 1001 --regid 1001 --clear-groups nbdinfo --size "nbd+unix:///a1?socket=$asock" \
	>/dev/null 2>"$scratch/err"; then
	fail "bob's uid connected to alice's nbd.sock"
fi
grep -q 'Permission denied' "$scratch/err" || fail "bob on alice's socket: $(cat "$scratch/err")"

step "NBD_OPT_LIST: exactly the tenant's own volumes, its images and its grants"
# list SOCKET: "name|description|read-only" per export, sorted.
list() {
	nbdinfo --json --list "nbd+unix:///?socket=$1" >"$scratch/list.json" ||
		fail "nbdinfo --list on $1 failed"
	jq -r '.exports[] | "\(."export-name")|\(.description)|\(.is_read_only)"' \
		"$scratch/list.json" | sort
}
got=$(list "$asock")
want="a1|ready, 16M (16777216 bytes), read-write|false
a2|committed, 16M (16777216 bytes), read-only|true
a3|ready, 16M (16777216 bytes), read-write|false
a4|ready, 16M (16777216 bytes), read-write|false
images/base|image, 4M (4194304 bytes), read-only|true"
[ "$got" = "$want" ] || fail "alice's exports:
$got
expected:
$want"
got=$(list "$bsock")
want="alice/a3|ready, 16M (16777216 bytes), read-only|true
alice/a4|ready, 16M (16777216 bytes), read-write|false
b1|ready, 8M (8388608 bytes), read-write|false"
[ "$got" = "$want" ] || fail "bob's exports:
$got
expected:
$want"

step "no default export; every name beyond reach fails exactly as a missing one"
# The server's answer to NBD_OPT_GO of a name that does not exist anywhere.
missing=$("$raw" "$bsock" nosuch)
case $missing in "go: error 0x"*) ;; *) fail "a missing name: $missing" ;; esac
long=$(printf 'x%.0s' {1..4998})
for name in "" a1 a2 alice/a1 alice/a2 bob/a1 images/base images/nosuch images/ images \
	"$a1_thin" "thin$a1_thin" 0 1 2 3 ../a1 ../alice/a1 a1/.. alice/../a1 alice/./a3 \
	./b1 /b1 b1/ //b1 alice//a3 alice/a3/ /alice/a3 .. . ALICE/a3 A1 " b1" "b1 " \
	/dev/dm-0 dev/mapper/tpool alice/a3/../a1 "alice/a3${long:0:4000}"; do
	got=$("$raw" "$bsock" "$name")
	[ "$got" = "$missing" ] || fail "bob opening \"$name\": $got (a missing name: $missing)"
done
# nbdkit itself refuses a name holding a NUL or longer than 4096 bytes, before any
# plugin sees it (NBD_REP_ERR_INVALID, not ERR_UNKNOWN): such a name built on a volume
# the tenant may see fails exactly as the same name built on a missing one, so a
# truncating server would show here.
# pair SOCKET NAME MISSING: NAME and MISSING get the same error.
pair() {
	local got want
	got=$("$raw" "$1" "$2")
	want=$("$raw" "$1" "$3")
	case $want in "go: error 0x"*) ;; *) fail "opening ${3:0:40}...: $want" ;; esac
	[ "$got" = "$want" ] || fail "opening ${2:0:40}...: $got (a missing name: $want)"
}
pair "$bsock" hex:6231006a756e6b hex:7a7a006a756e6b # b1\0junk, zz\0junk
pair "$bsock" hex:623100 hex:7a7a00
pair "$bsock" hex:616c6963652f613300 hex:616c6963652f7a7a00 # alice/a3\0
pair "$bsock" "b1$long" "zz$long"
pair "$bsock" "alice/a3$long" "alice/zz$long"
pair "$asock" hex:613100 hex:7a7a00
pair "$asock" "a1$long" "zz$long"
# The same for alice, with her own names.
for name in "" bob/b1 b1 images/nosuch "a1${long:0:4000}"; do
	got=$("$raw" "$asock" "$name")
	[ "$got" = "$missing" ] || fail "alice opening \"$name\": $got (a missing name: $missing)"
done
if nbdinfo "nbd+unix:///?socket=$asock" >/dev/null 2>&1; then
	fail "nbdinfo opened a default export"
fi

step "read-only exports refuse writes in the server; write grants write"
# NBD error 1 = EPERM: nbdkit refuses a write to an export without can_write.
for t in alice:a2 alice:images/base bob:alice/a3; do
	s=$run_dir/tenants/${t%%:*}/nbd.sock
	got=$("$raw" "$s" "${t#*:}" write 0 4096 read 0 4096 trim 0 65536 zero 0 4096)
	want="write: error 1
read: ok
trim: error 1
zero: error 1"
	[ "$(tail -n +2 <<<"$got")" = "$want" ] || fail "${t%%:*} writing ${t#*:}: $got"
	head -n1 <<<"$got" | grep -q 'read-only$' || fail "${t#*:} description: $got"
done
got=$("$raw" "$bsock" alice/a4 write 0 4096 flush)
[ "$(tail -n +2 <<<"$got")" = "write: ok
flush: ok" ] || fail "bob writing alice/a4 (write grant): $got"
# What bob wrote through his grant, alice reads back from her own volume.
qemu-io -f raw -c 'read -P 0xa5 0 4096' -c 'read -P 0 4096 4096' \
	"nbd+unix:///a4?socket=$asock" >"$scratch/qemu-io.out" ||
	fail "alice does not read bob's write to a4: $(cat "$scratch/qemu-io.out")"
# The image's data, read through alice's nbdkit, is the imported file.
nbdcopy "nbd+unix:///images/base?socket=$asock" "$scratch/base.out"
cmp "$scratch/base.raw" "$scratch/base.out" || fail "images/base differs from its source"

step "the broker hands O_RDONLY fds for read-only access, O_RDWR for the owner"
# Hold a connection to each kind of export open, then read the fds' flags.
qemu-io -r -f raw -c 'sleep 600000' "nbd+unix:///alice/a3?socket=$bsock" >"$scratch/hold1" 2>&1 &
hold1=$!
qemu-io -f raw -c 'sleep 600000' "nbd+unix:///a1?socket=$asock" >"$scratch/hold2" 2>&1 &
hold2=$!
cleanup "kill $hold1 $hold2"
# fd_modes PID: the access mode (0 = O_RDONLY, 2 = O_RDWR) of each block device fd PID
# holds (builtins only: this polls).
fd_modes() {
	local f k v modes=
	for f in /proc/"$1"/fd/*; do
		[ -b "$f" ] || continue
		while read -r k v; do
			[ "$k" = flags: ] && modes+=$((8#$v & 3))
		done <"/proc/$1/fdinfo/${f##*/}"
	done
	echo "$modes"
}
apid=$(cat "$run_dir/tenants/alice/nbdkit.pid")
bpid=$(cat "$run_dir/tenants/bob/nbdkit.pid")
both_hold() { [ -n "$(fd_modes "$apid")" ] && [ -n "$(fd_modes "$bpid")" ]; }
wait_until 60 both_hold || fail "the nbdkits never held the volumes: $(cat "$scratch/hold1" "$scratch/hold2")"
cat "$scratch/hold1" "$scratch/hold2"
[ "$(fd_modes "$bpid")" = 0 ] || fail "bob's nbdkit holds alice/a3 with modes '$(fd_modes "$bpid")'"
[ "$(fd_modes "$apid")" = 2 ] || fail "alice's nbdkit holds a1 with modes '$(fd_modes "$apid")'"

step "one nbdkit per tenant, as its own uid, no capabilities, no_new_privs"
# A second and a third connection to alice's nbdkit, while a1 is held open.
qemu-io -r -f raw -c 'sleep 600000' "nbd+unix:///a2?socket=$asock" >/dev/null 2>&1 &
hold3=$!
cleanup "kill $hold3"
nbdinfo --size "nbd+unix:///a3?socket=$asock" >/dev/null
for t in alice:$apid:$alice_nbd_uid bob:$bpid:$bob_nbd_uid; do
	IFS=: read -r name pid uid <<<"$t"
	[ "$(pgrep -c -u "$uid" -x nbdkit)" = 1 ] || fail "$name: $(pgrep -a -u "$uid" -x nbdkit)"
	[ "$(pgrep -u "$uid" -x nbdkit)" = "$pid" ] || fail "$name: nbdkit is not pid $pid"
	st=/proc/$pid/status
	grep -qx "Uid:	$uid	$uid	$uid	$uid" "$st" || fail "$name: $(grep ^Uid: "$st")"
	grep -qx "Gid:	$uid	$uid	$uid	$uid" "$st" || fail "$name: $(grep ^Gid: "$st")"
	grep -qx "Groups:[[:space:]]*" "$st" || fail "$name: $(grep ^Groups: "$st")"
	for c in CapInh CapPrm CapEff CapBnd CapAmb; do
		grep -qx "$c:	0000000000000000" "$st" || fail "$name: $(grep "^$c:" "$st")"
	done
	grep -qx "NoNewPrivs:	1" "$st" || fail "$name: $(grep ^NoNewPrivs: "$st")"
done
[ "$alice_nbd_uid" != "$bob_nbd_uid" ] || fail "alice and bob share nbdkit uid $alice_nbd_uid"
[ "$(pgrep -c -x nbdkit)" = 2 ] || fail "nbdkits: $(pgrep -a -x nbdkit)"
kill $hold1 $hold2 $hold3 2>/dev/null || true
wait $hold1 $hold2 $hold3 2>/dev/null || true

stop_daemon
! grep -E 'Sanitizer|runtime error' "$daemon_log" || fail "sanitizer reports in the daemon's log"
echo "$test_name: PASS"
