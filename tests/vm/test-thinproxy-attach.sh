#!/usr/bin/env bash
# thinproxy attach, detach and ls --attached on the host: a host-side attach for a tenant
# over netlink, an explicit device and a busy one, two connections, cache mode none
# (nbdkit holds the volume O_DIRECT, the thin device's page cache stays empty, byte
# ranges inside a block are written whole), read-only devices (asked for: nbdkit then
# holds the volume O_RDONLY; and a published image), the ioctl interface forced, a
# keeper that dies or whose device is disconnected behind its back, rm of a volume whose
# client is just letting go (waited for, not busy), and the errors, each with exit
# status 1 and one line naming the volume or device and the reason. (The usage battery
# of both commands is in tests/unit/test-client-cli.c.)
. "$(dirname "$0")/functions.sh"
requires jq md5sum mkfs.ext4 nbd-client qemu-io

export THINPROXY_KEEPER_LOG=$TP_RESULTS/keeper.log
# As root on the host, for tenant alice.
ta() { tp --admin --tenant alice "$@"; }
# attached DEVICE JQ: jq JQ on DEVICE's entry in ls --attached --json.
attached() { tp --json ls --attached | jq -r --arg d "$1" ".[] | select(.device == \$d) | $2"; }
# nbdkit_device_modes: the access mode (0 read-only, 2 read-write) of every block device
# alice's nbdkit holds open, one per line.
nbdkit_device_modes() {
	local pid f
	pid=$(cat "$run_dir/tenants/alice/nbdkit.pid")
	for f in /proc/"$pid"/fd/*; do
		[ -b "$f" ] || continue
		echo $(($(fd_flags "$f") & 3))
	done
}
# keeper_gone PID: wait until PID has ended (at most 30 s).
keeper_gone() {
	local i
	for ((i = 0; i < 600; i++)); do
		kill -0 "$1" 2>/dev/null || return 0
		[ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" = Z ] && return 0
		sleep 0.05
	done
	return 1
}

start_daemon
tp --admin tenant add alice >/dev/null
tp --admin tenant add bob >/dev/null
ta create v1 --size 256M >/dev/null
ta create v2 --size 64M >/dev/null
tp --admin --tenant bob create secret --size 64M >/dev/null

step "host-side attach for a tenant, over netlink"
tp --admin --tenant alice --json attach v1 >"$scratch/attach.json"
dev=$(jq -r .device "$scratch/attach.json")
[ -b "$dev" ] || fail "attach --json: $(cat "$scratch/attach.json")"
[ "$(jq -r '[.volume, .tenant, .size, .read_only, .interface] | join(" ")' "$scratch/attach.json")" = \
	"v1 alice 268435456 false netlink" ] || fail "attach --json: $(cat "$scratch/attach.json")"
n=${dev#/dev/nbd}
[ "$(cat "/sys/block/nbd$n/backend")" = v1 ] || fail "backend: $(cat "/sys/block/nbd$n/backend")"
tp ls --attached | grep -Eq "^$dev +v1 +alice +256M +rw +[0-9]+$" || fail "ls --attached: $(tp ls --attached)"
[ "$(tp ls --attached --quiet)" = "$dev" ] || fail "ls --attached --quiet: $(tp ls --attached --quiet)"
keeper=$(attached "$dev" .keeper)
[ "$(cat "/proc/$keeper/comm")" = "tpkeep-nbd$n" ] || fail "keeper $keeper: $(cat "/proc/$keeper/comm")"

step "a mounted device is busy, and so is its volume"
mkfs.ext4 -q -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 "$dev"
mkdir -p /tmp/v1
mount "$dev" /tmp/v1
head -c 2M /dev/urandom >/tmp/v1/blob
md5sum </tmp/v1/blob >"$scratch/blob.sum"
fails 1 "detach $dev: busy: mounted on /tmp/v1" tp detach "$dev"
umount /tmp/v1
fails 1 'rm v1: busy' ta rm v1

step "the ioctl interface, forced, does the same I/O"
tp detach "$dev"
[ -z "$(tp ls --attached --quiet)" ] || fail "still attached: $(tp ls --attached)"
keeper_gone "$keeper" || fail "keeper $keeper still runs after detach"
dev=$(THINPROXY_NBD_INTERFACE=ioctl ta attach v1)
[ "$(attached "$dev" .interface)" = ioctl ] || fail "not through ioctl: $(tp --json ls --attached)"
[ ! -e "/sys/block/${dev#/dev/}/backend" ] || fail "an ioctl device with a backend"
tp ls --attached | grep -Eq "^$dev +v1 +alice " || fail "ls --attached: $(tp ls --attached)"
mount "$dev" /tmp/v1
[ "$(md5sum </tmp/v1/blob)" = "$(cat "$scratch/blob.sum")" ] || fail "the file differs through ioctl"
echo more >/tmp/v1/more
umount /tmp/v1
tp detach "$dev"

step "an explicit device, and a busy one"
dev=$(ta attach v1 /dev/nbd5)
[ "$dev" = /dev/nbd5 ] || fail "attach v1 /dev/nbd5 printed $dev"
fails 1 'attach v2: device /dev/nbd5 is busy' ta attach v2 /dev/nbd5
fails 1 'attach v2: device /dev/nbd5 is busy' env THINPROXY_NBD_INTERFACE=ioctl \
	"$TP_BUILD/thinproxy" --dir "$run_dir" --admin --tenant alice attach v2 nbd5
mount -o ro "$dev" /tmp/v1
grep -qx more /tmp/v1/more || fail "the write through ioctl is lost"
umount /tmp/v1
tp detach nbd5

step "two connections"
dev=$(ta attach v2 --connections 2)
head -c 8M /dev/urandom >"$scratch/data"
dd if="$scratch/data" of="$dev" bs=1M oflag=direct status=none
[ "$(head -c 8M "$dev" | md5sum)" = "$(md5sum <"$scratch/data")" ] || fail "two connections lost data"
tp detach "$dev"

step "cache none: nbdkit holds the volume O_DIRECT, and the host caches its data once"
# nbdkit_block_fds: the fds of block devices alice's nbdkit holds open, one path per line.
nbdkit_block_fds() {
	local pid f
	pid=$(cat "$run_dir/tenants/alice/nbdkit.pid")
	for f in /proc/"$pid"/fd/*; do [ -b "$f" ] && echo "$f"; done
}
# o_direct FD_PATH: 1 if the open file FD_PATH (/proc/PID/fd/N) has O_DIRECT, else 0.
o_direct() { echo $((($(fd_flags "$1") >> 14) & 1)); }
# thin_cached: the pages of the thin device behind alice's only open volume that the
# host's page cache holds.
thin_cached() { "$TP_BUILD/tests/vm/page-cache" "$(nbdkit_block_fds)"; }
sync
echo 3 >/proc/sys/vm/drop_caches
dev=$(ta --json attach v2 --cache none | jq -r 'select(.cache == "none") | .device')
[ -b "$dev" ] || fail "attach --cache none --json: no device with cache none"
[ "$(nbdkit_block_fds | wc -l)" = 1 ] || fail "nbdkit holds $(nbdkit_block_fds | wc -l) devices, not v2's alone"
[ "$(o_direct "$(nbdkit_block_fds)")" = 1 ] || fail "nbdkit holds v2 without O_DIRECT"
[ "$(head -c 8M "$dev" | md5sum)" = "$(md5sum <"$scratch/data")" ] || fail "cache none reads differ"
head -c 8M /dev/urandom >"$scratch/data"
dd if="$scratch/data" of="$dev" bs=1M oflag=direct status=none
[ "$(dd if="$dev" bs=1M count=8 iflag=direct status=none | md5sum)" = "$(md5sum <"$scratch/data")" ] ||
	fail "cache none lost a write"
cached=$(thin_cached)
[ "$cached" = 0 ] || fail "the thin device under cache none holds $cached pages of page cache"
# Byte ranges that no block holds whole, through the socket: read, modify, write.
qemu-io -f raw "nbd+unix:///direct:v2?socket=$run_dir/tenants/alice/nbd.sock" \
	-c "write -P 0x5a 4097 5000" -c "read -P 0x5a 4097 5000" >"$scratch/qemu-io.out" ||
	fail "unaligned I/O under cache none: $(cat "$scratch/qemu-io.out")"
head -c 5000 /dev/zero | tr '\0' Z | dd of="$scratch/data" bs=5000 seek=4097 oflag=seek_bytes conv=notrunc status=none
[ "$(dd if="$dev" bs=1M count=8 iflag=direct status=none | md5sum)" = "$(md5sum <"$scratch/data")" ] ||
	fail "an unaligned write under cache none changed more (or less) than its bytes"
tp detach "$dev"
# The same reads buffered fill the thin device's cache: what cache none saves.
dev=$(ta attach v2 --cache writeback)
[ "$(o_direct "$(nbdkit_block_fds)")" = 0 ] || fail "nbdkit holds v2 O_DIRECT under writeback"
[ "$(head -c 8M "$dev" | md5sum)" = "$(md5sum <"$scratch/data")" ] || fail "writeback reads differ"
cached=$(thin_cached)
((cached >= 1024)) || fail "the thin device under writeback holds only $cached pages after 8 MiB read"
tp detach "$dev"

step "read-only: asked for, and a published image"
dev=$(ta attach v2 --readonly)
[ "$(attached "$dev" .read_only)" = true ] || fail "not read-only: $(tp --json ls --attached)"
modes=$(nbdkit_device_modes)
[ -n "$modes" ] && [ -z "$(echo "$modes" | grep -v '^0$')" ] ||
	fail "nbdkit holds v2 open with access modes '$modes', not read-only (0)"
if dd if=/dev/zero of="$dev" bs=4k count=1 oflag=direct 2>"$scratch/dd.err"; then
	fail "a write to the read-only $dev succeeded"
fi
grep -Eq 'Read-only file system|Operation not permitted' "$scratch/dd.err" || fail "dd: $(cat "$scratch/dd.err")"
[ "$(head -c 8M "$dev" | md5sum)" = "$(md5sum <"$scratch/data")" ] || fail "read-only reads differ"
tp detach "$dev"
head -c 1M /dev/urandom >"$scratch/img"
tp --admin image import img --from "$scratch/img" >/dev/null
tp --admin image publish img --tenant alice >/dev/null
dev=$(ta attach images/img)
[ "$(attached "$dev" '.volume + " " + (.read_only | tostring)')" = "images/img true" ] ||
	fail "image: $(tp --json ls --attached)"
[ "$(head -c 1M "$dev" | md5sum)" = "$(md5sum <"$scratch/img")" ] || fail "the image reads differ"
tp detach "$dev"

step "a keeper that dies leaves its device; detach still works"
dev=$(ta attach v2)
keeper=$(attached "$dev" .keeper)
kill -KILL "$keeper"
keeper_gone "$keeper" || fail "keeper $keeper survived SIGKILL"
[ "$(attached "$dev" '(.keeper | tostring) + " " + .volume')" = "null v2" ] ||
	fail "after the keeper died: $(tp --json ls --attached)"
tp detach "$dev"
[ -z "$(tp ls --attached --quiet)" ] || fail "still attached: $(tp ls --attached)"

step "a device disconnected behind its keeper's back ends the keeper"
dev=$(ta attach v2)
keeper=$(attached "$dev" .keeper)
nbd-client -d "$dev" >/dev/null 2>&1
keeper_gone "$keeper" || fail "keeper $keeper outlived its device"
[ ! -e "/run/thinproxy-client/${dev#/dev/}" ] || fail "the keeper left its record"

step "rm as a client lets go waits for it (up to 5 s), and is not busy"
ta create v3 --size 16M >/dev/null
mkfifo "$scratch/hold"
qemu-io -f raw "nbd+unix:///v3?socket=$run_dir/tenants/alice/nbd.sock" <"$scratch/hold" \
	>/dev/null 2>&1 &
exec 3>"$scratch/hold" # qemu-io holds v3 open until this closes
nbdkit_pid=$(cat "$run_dir/tenants/alice/nbdkit.pid")
for ((i = 0; i < 1200; i++)); do
	for f in /proc/"$nbdkit_pid"/fd/*; do [ -b "$f" ] && break 2; done
	sleep 0.05
done
fails 1 'rm v3: busy: .* open' ta rm v3
# Let go once the daemon is waiting for the volume to close (its debug log says so).
from=$(($(wc -l <"$daemon_log") + 1))
ta rm v3 >/dev/null 2>"$scratch/err" 3>&- &
rm_pid=$!
for ((i = 0; i < 1500; i++)); do
	tail -n "+$from" "$daemon_log" | grep -q 'volume v3 is open: waiting' && break
	sleep 0.02
done
exec 3>&-
wait $rm_pid || fail "rm v3 as its client let go: $(cat "$scratch/err")"
((i < 1500)) || fail "the daemon did not wait for v3 to close"

step "errors: one line, the volume or device, the reason"
fails 1 'attach secret: no such volume: secret' ta attach secret
fails 1 'attach bob/secret: no such volume: bob/secret' ta attach bob/secret
fails 1 'attach nope: no such volume: nope' ta attach nope
fails 1 "attach v2: cannot reach $run_dir/tenants/carol/nbd.sock" tp --admin --tenant carol attach v2
fails 1 "attach v2: cannot reach /nonexistent/nbd.sock" "$TP_BUILD/thinproxy" --dir /nonexistent attach v2
fails 1 'detach /dev/nbd3: not attached' tp detach /dev/nbd3
fails 1 'detach /dev/nbd999: no such device' tp detach /dev/nbd999
fails 2 'with --admin, needs --tenant T' tp --admin attach v2
[ -z "$(tp ls --attached --quiet)" ] || fail "left attached: $(tp ls --attached)"
[ -z "$(ls /run/thinproxy-client)" ] || fail "records left: $(ls /run/thinproxy-client)"
stop_daemon
echo "$test_name: PASS"
