#!/usr/bin/env bash
# bench/host.sh DIR RUNS SECONDS FIO_MIB COPY_MIB [CONFIGS]: the data path on this host, without a
# guest (and without dm-thin): two loop devices on files in /dev/shm (memory, as the
# guest's pool is: the servers' costs, not a disk's, are what is compared) in place of
# thin devices. thinproxy's plugin in a real nbdkit gets its fds from the real broker
# (build/bench/bench-broker, daemon/broker.c with fixed exports), beside nbdkit's file
# plugin, qemu-nbd and nbd-server on the same loop devices and the raw loop device
# (libaio, direct=1). No kernel NBD here: hosts without the nbd module are why the guest
# exists. CONFIGS (BENCH_CONFIGS), a space-separated subset, runs just those. Writes
# io.tsv and env-io.txt to DIR. Needs root (losetup). Not a test.
set -euo pipefail

out_dir=$(realpath -m "$1")
runs=${2:-3} secs=${3:-10} fio_mib=${4:-256} copy_mib=${5:-1024} only=${6:-}
src=$(realpath -e "$(dirname "$0")/..")
build=${TP_BUILD:-$src/build}
broker=$build/bench/bench-broker
plugin=$build/nbdkit-thinproxy-plugin.so
for p in fio nbdkit qemu-nbd nbd-server nbdcopy nbdinfo jq losetup blockdev; do
	command -v "$p" >/dev/null || { echo "host.sh: $p is missing (make deps)" >&2; exit 1; }
done
[ -x "$broker" ] && [ -f "$plugin" ] || { echo "host.sh: make bench first" >&2; exit 1; }

fail() {
	echo "host.sh: FAIL: $*" >&2
	exit 1
}
step() { echo "== $*"; }
_cleanups=()
cleanup() { _cleanups+=("$*"); }
_run_cleanups() {
	local i
	for ((i = ${#_cleanups[@]} - 1; i >= 0; i--)); do eval "${_cleanups[i]}" >/dev/null 2>&1 || true; done
}
trap _run_cleanups EXIT

mkdir -p "$out_dir"
scratch=$(mktemp -d "${BENCH_HOST_DIR:-/dev/shm}/thinproxy-bench.XXXXXX")
cleanup "rm -rf $scratch"
chmod 0711 "$scratch"
out=$out_dir/io.tsv
: >"$out"

step "loop devices on sparse files in $scratch"
# loop NAME MIB: a loop device on a new sparse file; prints it.
loop() {
	truncate -s "$2M" "$scratch/$1.img"
	local dev
	dev=$(losetup --find --show "$scratch/$1.img")
	echo "$dev"
}
# Detached at exit (registered here: loop runs in a subshell).
fio_dev=$(loop fio "$fio_mib")
cleanup "losetup -d $fio_dev"
copy_dev=$(loop copy "$copy_mib")
cleanup "losetup -d $copy_dev"
# Runs after the servers' cleanups: give them a moment to close the loop devices.
cleanup "sleep 1"
dd if=/dev/zero of="$fio_dev" bs=1M count="$fio_mib" oflag=direct status=none
dd if=/dev/urandom of="$copy_dev" bs=1M count="$copy_mib" oflag=direct status=none

step "the broker, the plugin's nbdkit and the other servers"
b=$scratch/servers
mkdir -p "$b"
"$broker" "$b/private/broker.sock" "fio=$fio_dev" "copy=$copy_dev" &
broker_pid=$!
cleanup "kill $broker_pid"
for ((i = 0; i < 100; i++)); do [ -S "$b/private/broker.sock" ] && break; sleep 0.05; done
nbdkit -U "$b/plugin.sock" -P "$b/plugin.pid" "$plugin" tenant=bench "broker=$b/private/broker.sock"
cleanup "kill \$(cat $b/plugin.pid)"
. "$src/bench/servers.sh"
start_servers "$b"

uri() {
	case $1 in
	plugin) echo "nbd+unix:///$2?socket=$b/plugin.sock" ;;
	file) echo "nbd+unix:///?socket=$b/file-$2.sock" ;;
	qemu-nbd) echo "nbd+unix:///$2?socket=$b/qemu-$2.sock" ;;
	nbd-server) echo "nbd+unix:///$2?socket=$b/nbd-server.sock" ;;
	raw) local d=${2}_dev && echo "${!d}" ;;
	esac
}
configs=(plugin file qemu-nbd nbd-server raw)
for c in "${configs[@]}"; do
	for v in fio copy; do
		size=$(nbdinfo --size "$(uri $c $v)" 2>/dev/null || blockdev --getsize64 "$(uri $c $v)")
		[ "$size" -ge $((fio_mib << 20)) ] || fail "$c does not serve $v: size $size"
	done
done

machine="this host, $(nproc) CPUs, loop devices on $(df --output=fstype "$scratch" | tail -1) in $(df --output=target "$scratch" | tail -1)"
env_file=$out_dir/env-io.txt
. "$src/bench/io-rounds.sh"
