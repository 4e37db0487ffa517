#!/usr/bin/env bash
# Proves the test bed: the guest's kernel has a working dm thin-pool (thin device and a
# snapshot that keeps its data while the origin changes) and a working kernel NBD client
# (nbdkit's file plugin serving a thin device that carries an ext4 file system).
. "$(dirname "$0")/functions.sh"
requires dmsetup losetup nbdkit nbd-client mkfs.ext4 cmp

step "thin-pool on loop devices"
data=$(loopdev 512M data)
meta=$(loopdev 16M meta)
sectors=$(($(blockdev --getsize64 "$data") / 512))
dmsetup create tp-bed-pool --table "0 $sectors thin-pool $meta $data 128 0 1 error_if_no_space"
cleanup "dmsetup remove tp-bed-pool"
dmsetup status tp-bed-pool | grep -q ' thin-pool ' || fail "pool status is not thin-pool"

step "thin device 0 and a pattern written to it"
dmsetup message tp-bed-pool 0 "create_thin 0"
dmsetup create tp-bed-thin0 --table "0 $((256 * 2048)) thin /dev/mapper/tp-bed-pool 0"
cleanup "dmsetup remove tp-bed-thin0"
head -c $((8 << 20)) /dev/urandom >"$scratch/a"
dd if="$scratch/a" of=/dev/mapper/tp-bed-thin0 bs=1M oflag=direct status=none

step "snapshot 1 of the active origin (suspended around create_snap)"
dmsetup suspend tp-bed-thin0
dmsetup message tp-bed-pool 0 "create_snap 1 0"
dmsetup resume tp-bed-thin0
dmsetup create tp-bed-snap1 --table "0 $((256 * 2048)) thin /dev/mapper/tp-bed-pool 1"
cleanup "dmsetup remove tp-bed-snap1"

step "writes through the origin leave the snapshot unchanged"
head -c $((8 << 20)) /dev/urandom >"$scratch/b"
dd if="$scratch/b" of=/dev/mapper/tp-bed-thin0 bs=1M oflag=direct status=none
cmp -n $((8 << 20)) "$scratch/b" /dev/mapper/tp-bed-thin0 || fail "origin lost its new data"
cmp -n $((8 << 20)) "$scratch/a" /dev/mapper/tp-bed-snap1 || fail "snapshot changed with its origin"

step "nbdkit's file plugin serves the thin device; nbd-client attaches /dev/nbd0"
sock=$scratch/nbd.sock
nbdkit --exit-with-parent -U "$sock" -P "$scratch/nbdkit.pid" file /dev/mapper/tp-bed-thin0 &
cleanup "kill \$(cat $scratch/nbdkit.pid)"
wait_for_socket "$sock"
nbd-client -unix "$sock" /dev/nbd0 -b 4096 >/dev/null
cleanup "nbd-client -d /dev/nbd0"
[ "$(blockdev --getsize64 /dev/nbd0)" = $((256 << 20)) ] || fail "nbd0 has the wrong size"

step "mkfs.ext4, mount, write, unmount, remount, read back"
mkfs.ext4 -q -F /dev/nbd0
mkdir -p "$scratch/mnt"
mount /dev/nbd0 "$scratch/mnt"
cleanup "umount $scratch/mnt"
cp "$scratch/a" "$scratch/mnt/file"
umount "$scratch/mnt"
echo 3 >/proc/sys/vm/drop_caches
mount /dev/nbd0 "$scratch/mnt"
cmp "$scratch/a" "$scratch/mnt/file" || fail "file read back differs after remount"
umount "$scratch/mnt"

step "the thin device maps only what was written"
used=$(dmsetup status tp-bed-thin0 | awk '{print $4}')
[ "$used" -gt 0 ] && [ "$used" -lt $((256 * 2048)) ] || fail "thin mapped $used sectors"
echo "$test_name: PASS"
