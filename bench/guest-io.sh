#!/usr/bin/env bash
# bench/guest-io.sh RUNS SECONDS FIO_MIB COPY_MIB [CONFIGS]: the data path in the test guest, on two
# thin volumes of one pool. The same fio jobs against thinproxy's plugin (through the
# broker, the tenant's nbd.sock), nbdkit's file plugin, qemu-nbd and nbd-server on the
# same thin device, the device attached as /dev/nbdN by `thinproxy attach`, and the raw
# thin device itself (libaio, direct=1: the limit); nbdcopy of the copy volume to null
# through each. RUNS rounds, configurations interleaved, the order rotated each round.
# CONFIGS (BENCH_CONFIGS), a space-separated subset, runs just those.
# Writes io.tsv (config, job, run, value, unit) and env.txt to $TP_RESULTS.
# Run through bench/run (tests/vm/run); a benchmark, not a test.
. "$TP_SRC/tests/vm/functions.sh"
requires fio nbdkit qemu-nbd nbd-server nbdcopy nbdinfo jq curl dd

runs=${1:-3} secs=${2:-10} fio_mib=${3:-256} copy_mib=${4:-1024} only=${5:-}
M=$((1 << 20))
out=$TP_RESULTS/io.tsv
: >"$out"
cleanup "cp $daemon_log $TP_RESULTS/daemon-io.log"

. "$TP_SRC/bench/servers.sh"
# The pool holds both volumes twice over.
start_alice $(((fio_mib + copy_mib) * 2))
fio_dev=$(thin_volume fio "$fio_mib")
copy_dev=$(thin_volume copy "$copy_mib")
[ -b "$fio_dev" ] && [ -b "$copy_dev" ] || fail "no thin devices: $fio_dev $copy_dev"

step "filling both volumes, so that every write later is an overwrite of a mapped block"
dd if=/dev/zero of="$fio_dev" bs=1M count="$fio_mib" oflag=direct status=none
dd if=/dev/urandom of="$copy_dev" bs=1M count=64 oflag=direct status=none
for ((i = 64; i < copy_mib; i += 64)); do
	dd if="$copy_dev" of="$copy_dev" bs=1M count=64 seek=$i iflag=direct oflag=direct status=none
done

step "starting the other servers on the same thin devices"
b=$scratch/servers
mkdir -p "$b"
start_servers "$b"

step "attaching both volumes as kernel NBD devices"
nbd_fio=$(tp --admin --tenant alice attach fio)
cleanup "$TP_BUILD/thinproxy --dir $run_dir detach $nbd_fio"
nbd_copy=$(tp --admin --tenant alice attach copy)
cleanup "$TP_BUILD/thinproxy --dir $run_dir detach $nbd_copy"

# uri CONFIG VOLUME: where CONFIG serves VOLUME (an NBD URI or a block device).
uri() {
	case $1 in
	plugin) echo "nbd+unix:///$2?socket=$sock" ;;
	file) echo "nbd+unix:///?socket=$b/file-$2.sock" ;;
	qemu-nbd) echo "nbd+unix:///$2?socket=$b/qemu-$2.sock" ;;
	nbd-server) echo "nbd+unix:///$2?socket=$b/nbd-server.sock" ;;
	kernel-nbd) local d=nbd_$2 && echo "${!d}" ;;
	raw) local d=${2}_dev && echo "${!d}" ;;
	esac
}
for c in plugin file qemu-nbd nbd-server kernel-nbd raw; do
	for v in fio copy; do
		size=$(nbdinfo --size "$(uri $c $v)" 2>/dev/null || blockdev --getsize64 "$(uri $c $v)")
		[ "$size" -ge $((fio_mib * M)) ] || fail "$c does not serve $v: size $size"
	done
done

configs=(plugin file qemu-nbd nbd-server kernel-nbd raw)
machine="qemu TCG guest, $(nproc) vCPUs, $(awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo) MiB, kernel $(uname -r)"
env_file=$TP_RESULTS/env-io.txt
. "$TP_SRC/bench/io-rounds.sh"
