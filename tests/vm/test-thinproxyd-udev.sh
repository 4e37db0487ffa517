#!/usr/bin/env bash
# The host's udev and LVM never read what a tenant wrote. alice writes, through NBD, an
# LVM physical volume with a volume group and an ext4 file system labelled "root". With
# systemd-udevd running (and libdevmapper syncing with it), activating her thin devices
# makes their /dev/mapper nodes and nothing else: no blkid, no /dev/disk/by-label/root,
# no volume group activated, and rm works. Then with 12-thinproxy.rules and the LVM filter
# installed as `make install` and thinproxyd(8) say, a coldplug (`udevadm trigger`, as at
# boot) and LVM's own scan find nothing either, on the thin devices, the pool or the
# embedded pool's loop devices (whose first block is alice's PV label).
. "$(dirname "$0")/functions.sh"
requires udevadm lvm mkfs.ext4 nbdcopy nbdinfo losetup dmsetup
udevd=/lib/systemd/systemd-udevd
[ -x $udevd ] || fail "$udevd is missing in the guest (package udev)"

step "alice's images, made without udev: an LVM PV with VG tenantvg, an ext4 labelled root"
truncate -s 64M "$scratch/pv.img" "$scratch/fs.img"
loop=$(losetup --find --show "$scratch/pv.img")
pvcreate -q "$loop" && vgcreate -q tenantvg "$loop" && lvcreate -q -an -Zn -L 8M -n lv tenantvg ||
	fail "cannot make the tenant's volume group"
losetup -d "$loop"
mkfs.ext4 -q -F -L root "$scratch/fs.img"

step "systemd-udevd runs, with the host's rules; libdevmapper syncs with it"
unset DM_DISABLE_UDEV
# The guest runs tests in a chroot, where udevadm would ignore trigger and settle.
export SYSTEMD_IGNORE_CHROOT=1
$udevd --daemon
cleanup "udevadm control --exit"
udevadm trigger --action=add
udevadm settle
[ -e /run/udev/control ] || fail "udevd is not running"

step "alice writes both images through NBD"
start_daemon
admin_api POST /v1/tenants '{"name":"alice"}'
expect 201
uri() { echo "nbd+unix:///$1?socket=$run_dir/tenants/alice/nbd.sock"; }
for v in pv fs; do
	tenant_api alice POST /v1/volumes "{\"name\":\"$v\",\"size\":$((64 << 20))}"
	expect 201
	nbdcopy "$scratch/$v.img" "$(uri $v)"
done

step "her thin devices activated with the data on them: /dev/mapper nodes and nothing else"
# Committing closes the writable table; the next open activates the volume again, now
# with alice's bytes on it, which is when udev would look.
for v in pv fs; do
	tenant_api alice POST /v1/volumes/$v/commit
	expect 200
	nbdinfo --size "$(uri $v)" >/dev/null
done
udevadm settle
# check_host WHEN: nothing on the host read alice's bytes.
check_host() {
	local v id dev
	for v in pv fs; do
		admin_api GET /v1/tenants/alice/volumes/$v
		id=$(field .thin_id)
		dev=/dev/mapper/thinproxy-pool-$id
		[ -b "$dev" ] || fail "$1: no $dev"
		udevadm info --query=property "$dev" >"$scratch/props"
		grep -q '^DM_UDEV_DISABLE_DISK_RULES_FLAG=1$' "$scratch/props" ||
			fail "$1: udev ran the disk rules on $dev: $(cat "$scratch/props")"
		! grep -q '^ID_FS_' "$scratch/props" || fail "$1: udev probed $dev: $(cat "$scratch/props")"
	done
	[ ! -e /dev/disk/by-label/root ] || fail "$1: /dev/disk/by-label/root -> $(readlink /dev/disk/by-label/root)"
	! dmsetup info -c --noheadings -o uuid | grep -q '^LVM-' ||
		fail "$1: a volume group was activated: $(dmsetup info -c -o name,uuid)"
}
check_host "after activation"

step "with 12-thinproxy.rules and the LVM filter, as installed: a coldplug finds nothing"
install -D -m 0644 "$TP_SRC/daemon/12-thinproxy.rules" /etc/udev/rules.d/12-thinproxy.rules
sed -i "/^devices {/r $TP_SRC/daemon/thinproxy-lvm.conf" /etc/lvm/lvm.conf
lvmconfig devices/global_filter | grep -q '/dev/thinproxy/' || fail "the LVM filter is not in effect"
udevadm control --reload
udevadm trigger --action=add
udevadm trigger --action=change
udevadm settle
check_host "after a coldplug"
data_loop=$(losetup -j "$state_dir/pool/data.img" | cut -d: -f1)
[ -n "$data_loop" ] || fail "no loop device for the pool's data"
[ -L /dev/thinproxy/${data_loop#/dev/} ] || fail "12-thinproxy.rules did not mark $data_loop"
! udevadm info --query=property "$data_loop" | grep -q '^ID_FS_' || fail "udev probed $data_loop"
# What a boot or an admin's LVM command runs: no PV of alice's is seen, no VG activated.
vgchange -aay >/dev/null 2>&1 || true
pvs --noheadings -o pv_name >"$scratch/pvs" 2>&1 || true
! grep -Eq 'thinproxy|loop|dm-' "$scratch/pvs" || fail "LVM sees: $(cat "$scratch/pvs")"
check_host "after vgchange -aay"

step "rm of both volumes works"
for v in pv fs; do
	tenant_api alice DELETE /v1/volumes/$v
	expect 204
done
stop_daemon
echo "$test_name: PASS"
