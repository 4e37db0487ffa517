#!/usr/bin/env bash
# thinproxyd keeps only the capabilities daemon/caps.c lists, and every socket, directory
# and state file it makes has the mode and owner the threat model relies on.
. "$(dirname "$0")/functions.sh"
requires stat

start_daemon
admin_api POST /v1/tenants '{"name":"alice","uid":1234,"gid":5678}'
expect 201
nbd_uid=$(field .nbd_uid)
tenant_api alice POST /v1/volumes '{"name":"v","size":1048576}'
expect 201

step "capabilities: exactly the kept list, in every set but inheritable and ambient"
# CHOWN 0, DAC_READ_SEARCH 2, FOWNER 3, KILL 5, SETGID 6, SETUID 7, SETPCAP 8,
# SYS_PTRACE 19, SYS_ADMIN 21, SYS_RESOURCE 24 (the guest's root has it), MKNOD 27
want=00000000092801ed
for set in CapEff CapPrm CapBnd; do
	got=$(awk -v s="$set:" '$1 == s {print $2}' "/proc/$daemon_pid/status")
	[ "$got" = "$want" ] || fail "$set is $got, expected $want"
done
for set in CapInh CapAmb; do
	got=$(awk -v s="$set:" '$1 == s {print $2}' "/proc/$daemon_pid/status")
	[ "$got" = 0000000000000000 ] || fail "$set is $got"
done

step "modes and owners of sockets, directories and state files"
# mode_is PATH MODE OWNER:GROUP
mode_is() {
	local got
	got=$(stat -c '%a %u:%g' "$1")
	[ "$got" = "$2 $3" ] || fail "$1 is $got, expected $2 $3"
}
mode_is "$state_dir" 700 0:0
mode_is "$state_dir/thinproxy.db" 644 0:0
mode_is "$run_dir" 755 0:0
mode_is "$run_dir/admin.sock" 600 0:0
mode_is "$run_dir/private" 711 0:0
mode_is "$run_dir/tenants" 755 0:0
mode_is "$run_dir/tenants/alice" 755 0:0
mode_is "$run_dir/tenants/alice/control.sock" 660 1234:5678
mode_is "$run_dir/tenants/alice/nbd.sock" 660 1234:5678
for f in "$state_dir"/pool/*; do
	mode_is "$f" 600 0:0
done
broker=$(stat -c '%u:%g' "$run_dir/private/broker.sock")
[ "$broker" = 0:0 ] || fail "broker.sock owned by $broker"

step "the tenant's nbdkit: its own uid, no capabilities, no_new_privs"
pid=$(cat "$run_dir/tenants/alice/nbdkit.pid")
status=/proc/$pid/status
[ "$(awk '$1 == "Uid:" {print $2 $3 $4 $5}' "$status")" = "$nbd_uid$nbd_uid$nbd_uid$nbd_uid" ] ||
	fail "nbdkit uids: $(grep Uid: "$status")"
for set in CapInh CapPrm CapEff CapBnd CapAmb; do
	got=$(awk -v s="$set:" '$1 == s {print $2}' "$status")
	[ "$got" = 0000000000000000 ] || fail "nbdkit $set is $got"
done
[ "$(awk '$1 == "NoNewPrivs:" {print $2}' "$status")" = 1 ] || fail "nbdkit lacks no_new_privs"
stop_daemon
echo "$test_name: PASS"
