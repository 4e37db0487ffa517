#!/usr/bin/env bash
# A kernel without a module thinproxy needs: thinproxyd names what is missing (dm-mod,
# dm-thin-pool, loop for the embedded pool) instead of a wrong errno, and so does
# `thinproxy attach` without nbd. Each module is unloaded and kept from loading again
# (modprobe.d install /bin/false), so neither libdevmapper's nor the kernel's own
# autoloading brings it back.
. "$(dirname "$0")/functions.sh"
requires modprobe lsmod dmsetup

blocked=/etc/modprobe.d/thinproxy-test-blocked.conf
cleanup "rm -f $blocked"
# block MODULE...: unload the modules, in this order, and keep them out.
block() {
	local m
	for m; do
		echo "install $m /bin/false" >>"$blocked"
	done
	for m; do
		# modprobe -r also unloads what only M used, which may come later in the list.
		if grep -q "^$m " /proc/modules; then
			modprobe -r "$m" || fail "cannot unload $m: $(lsmod)"
		fi
	done
	for m; do
		! grep -q "^$m " /proc/modules || fail "$m is still loaded"
	done
}
# unblock: let every module load again.
unblock() { rm -f "$blocked"; }

step "without device-mapper: thinproxyd names dm-mod"
block dm_thin_pool dm_persistent_data dm_bio_prison dm_bufio dm_mod
[ ! -e /sys/class/misc/device-mapper ] || fail "device-mapper is still there"
refuses_to_start 'the kernel has no device-mapper \(modprobe dm-mod'
! grep -q 'Cannot allocate memory' "$scratch/refused.log" || fail "still blames memory: $(cat "$scratch/refused.log")"

step "without dm-thin-pool: thinproxyd names dm-thin-pool"
unblock
modprobe dm_mod
block dm_thin_pool
refuses_to_start 'the kernel has no dm thin-pool target \(modprobe dm-thin-pool'

step "without loop: the embedded pool names loop"
unblock
modprobe dm_thin_pool
block loop
refuses_to_start 'the kernel has no loop devices for the embedded pool.*modprobe loop'
unblock
modprobe loop

step "without nbd: thinproxy attach names the nbd module, on either interface"
start_daemon
admin_api POST /v1/tenants '{"name":"t"}'
expect 201
tenant_api t POST /v1/volumes '{"name":"v","size":1048576}'
expect 201
block nbd
ls /dev/nbd* >/dev/null 2>&1 && fail "NBD devices left: $(ls /dev/nbd*)"
for interface in "" ioctl netlink; do
	THINPROXY_NBD_INTERFACE=$interface fails 1 \
		"attach v: the kernel's nbd module is not loaded .*modprobe nbd" \
		tp --admin --tenant t attach v
done
stop_daemon
echo "$test_name: PASS"
