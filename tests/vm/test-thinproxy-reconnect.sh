#!/usr/bin/env bash
# An attached device outlives its tenant's nbdkit: kill nbdkit while a file copy runs on
# the mounted device, and the copy completes, its checksum matches and the kernel logs no
# I/O error. Once in a container (ioctl interface: the keeper's relay reconnects and sends
# the outstanding requests again), once on the host with two connections and cache mode
# none (netlink: the keeper hands the kernel fresh sockets with NBD_CMD_RECONFIGURE, each
# asking for the direct: export again). The daemon runs nbdkit on demand, as by default:
# a killed nbdkit is started again by the keeper's reconnect. Prints how long each
# reconnect took.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/container.sh"
requires unshare nsenter mkfs.ext4 md5sum

export THINPROXY_KEEPER_LOG=$TP_RESULTS/keeper.log
mkfs() { mkfs.ext4 -q -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 "$@"; }

# kill_nbdkit_during_copy DIR [CMD...]: copy $scratch/src into DIR/copy (with CMD before
# dd, e.g. to run it in a container) and kill alice's nbdkit when half of it is written;
# fails unless the copy succeeds. dd reads from a pipe that is fed the second half only
# after the kill, so the copy is running when nbdkit dies however fast the machine is.
kill_nbdkit_during_copy() {
	local dir=$1 pid copy_pid start rc=0 half
	shift
	half=$(($(stat -c %s "$scratch/src") >> 21))
	rm -f "$scratch/pipe"
	mkfifo "$scratch/pipe"
	start=$SECONDS
	"$@" dd if="$scratch/pipe" of="$dir/copy" bs=1M iflag=fullblock oflag=direct conv=fsync \
		status=none &
	copy_pid=$!
	{
		dd if="$scratch/src" bs=1M count=$half status=none
		pid=$(cat "$run_dir/tenants/alice/nbdkit.pid")
		kill -0 "$copy_pid" 2>/dev/null || fail "the copy ended before nbdkit was killed"
		kill -KILL "$pid"
		dd if="$scratch/src" bs=1M skip=$half status=none
	} >"$scratch/pipe"
	wait "$copy_pid" || rc=$?
	[ "$rc" = 0 ] || fail "the copy failed ($rc) after nbdkit was killed"
	echo "copy of $(($(stat -c %s "$scratch/src") >> 20)) MiB with nbdkit killed half-way: $((SECONDS - start))s"
}

# no_io_errors: the kernel saw no failed I/O, and the keeper reconnected.
no_io_errors() {
	if dmesg | grep -E 'I/O error|EXT4-fs error|Buffer I/O'; then
		fail "the kernel saw I/O errors"
	fi
	dmesg -C
}

nbdkit_idle=60
start_daemon
tp --admin tenant add alice >/dev/null
head -c 32M /dev/urandom >"$scratch/src"
sum=$(md5sum <"$scratch/src")
dmesg -C

step "in a container: kill nbdkit during a copy (ioctl interface, relay)"
container_start alice
alice=$container_pid
in_container "$alice" "$TP_BUILD/thinproxy" create c1 --size 128M >/dev/null
dev=$(in_container "$alice" "$TP_BUILD/thinproxy" attach c1 --timeout 30)
in_container "$alice" sh -ec "mkfs.ext4 -q -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 $dev &&
	mkdir -p /tmp/c1 && mount $dev /tmp/c1"
kill_nbdkit_during_copy /tmp/c1 in_container "$alice"
in_container "$alice" sh -ec "umount /tmp/c1 && mount $dev /tmp/c1"
[ "$(in_container "$alice" md5sum </dev/null /tmp/c1/copy | cut -d' ' -f1)  -" = "$sum" ] ||
	fail "the copy's checksum differs"
in_container "$alice" umount /tmp/c1
in_container "$alice" "$TP_BUILD/thinproxy" detach "$dev"
no_io_errors
grep -q "nbd[0-9]*: reconnected after" "$THINPROXY_KEEPER_LOG" || fail "the relay did not reconnect"

step "on the host, two connections, cache none: kill nbdkit during a copy (netlink, NBD_CMD_RECONFIGURE)"
tp --admin --tenant alice create h1 --size 128M >/dev/null
dev=$(tp --admin --tenant alice attach h1 --connections 2 --io-timeout 5 --timeout 30 --cache none)
[ "$(cat "/sys/block/${dev#/dev/}/backend")" = h1 ] || fail "no backend for $dev"
mkfs "$dev"
mkdir -p /tmp/h1
mount "$dev" /tmp/h1
kill_nbdkit_during_copy /tmp/h1
umount /tmp/h1
mount "$dev" /tmp/h1
[ "$(md5sum </tmp/h1/copy)" = "$sum" ] || fail "the copy's checksum differs"
umount /tmp/h1
grep -q "reconnected to h1 after" "$THINPROXY_KEEPER_LOG" || fail "the keeper did not reconnect"

step "the device keeps working after a second restart, with direct I/O still"
kill -KILL "$(cat "$run_dir/tenants/alice/nbdkit.pid")"
mount "$dev" /tmp/h1
[ "$(md5sum </tmp/h1/copy)" = "$sum" ] || fail "the copy's checksum differs after a second restart"
umount /tmp/h1
# Every block device the restarted nbdkit holds for the device is O_DIRECT (fdinfo flags).
pid=$(cat "$run_dir/tenants/alice/nbdkit.pid")
direct=0
for f in /proc/"$pid"/fd/*; do
	[ -b "$f" ] || continue
	((($(fd_flags "$f") >> 14) & 1)) ||
		fail "the restarted nbdkit holds h1 without O_DIRECT"
	direct=$((direct + 1))
done
((direct == 2)) || fail "the restarted nbdkit holds $direct devices, not h1 twice"
tp detach "$dev"
no_io_errors

echo "reconnects (keeper log):"
grep -E "died|lost|reconnected" "$THINPROXY_KEEPER_LOG" | sed 's/^/  /'
stop_daemon
echo "$test_name: PASS"
