#!/usr/bin/env bash
# bench/guest-extents.sh RUNS VOLUMES: block status (issue 22) in the test guest. A 4 GiB
# volume with 64 MiB written (64 scattered MiB) is copied by nbdcopy and qemu-img convert
# through thinproxy's plugin with its extents, through the plugin with the copier told to
# ignore them (nbdcopy --no-extents; qemu-img has no such switch), and through nbdkit's
# file plugin on the same thin device (which cannot see holes in a block device). RUNS
# rounds, interleaved. Then the time a connection's first block status takes (the plugin
# fetching a map: its flush, the broker's MAP, the daemon's metadata snapshot and walk)
# with 10 volumes in the pool and with VOLUMES.
# Writes extents.tsv (config, job, run, value, unit) and env-extents.txt to $TP_RESULTS.
# Run through bench/run (tests/vm/run); a benchmark, not a test.
. "$TP_SRC/tests/vm/functions.sh"
requires nbdkit nbdcopy nbdinfo qemu-img jq curl dd
map=$TP_BUILD/tests/vm/nbd-map
[ -x "$map" ] || fail "$map is missing (make all)"

runs=${1:-3} volumes=${2:-10000}
M=$((1 << 20))
G=$((1 << 30))
out=$TP_RESULTS/extents.tsv
: >"$out"
cleanup "cp $daemon_log $TP_RESULTS/daemon-extents.log"

export TP_TEST_LOOP_SIZE=8G
start_daemon --log-level info
cleanup "kill $daemon_pid"
tp --admin tenant add alice >/dev/null
sock=$run_dir/tenants/alice/nbd.sock
wait_for_socket "$sock"
admin_api POST /v1/tenants/alice/volumes "{\"name\":\"big\",\"size\":$((4 * G))}"
expect 201
id=$(field .thin_id)
nbdinfo --size "nbd+unix:///big?socket=$sock" >/dev/null
admin_api GET /v1/pool
dev=/dev/mapper/$(field .name)-$id
[ -b "$dev" ] || fail "no thin device $dev"

step "writing 64 MiB to the 4 GiB volume: 1 MiB every 64 MiB"
for ((i = 0; i < 64; i++)); do
	dd if=/dev/urandom of="$dev" bs=1M count=1 seek=$((i * 64)) oflag=direct status=none
done
b=$scratch/servers
mkdir -p "$b"
nbdkit -U "$b/file.sock" -P "$b/file.pid" file "$dev"
cleanup "kill \$(cat $b/file.pid)"
wait_for_socket "$b/file.sock"
plugin="nbd+unix:///big?socket=$sock"
file="nbd+unix:///?socket=$b/file.sock"
[ "$(nbdinfo --map "$plugin" | awk '$3 == 0 { n += $2 } END { print n }')" = $((64 * M)) ] ||
	fail "the plugin's map is not the 64 MiB written: $(nbdinfo --map "$plugin" | head)"

# timed CONFIG JOB RUN CMD...: run CMD, record its wall time in seconds.
timed() {
	local config=$1 job=$2 run=$3 t0 t1
	shift 3
	t0=$(date +%s.%N)
	"$@" || fail "$config $job: $* failed"
	t1=$(date +%s.%N)
	printf '%s\t%s\t%s\t%s\ts\n' "$config" "$job" "$run" "$(echo "$t1 - $t0" | bc)" >>"$out"
}
target=$scratch/copy.img
copy_jobs() {
	local r=$1
	timed plugin nbdcopy "$r" nbdcopy "$plugin" null:
	timed plugin-no-extents nbdcopy "$r" nbdcopy --no-extents "$plugin" null:
	timed file nbdcopy "$r" nbdcopy "$file" null:
	timed plugin qemu-img "$r" qemu-img convert -f raw -O raw "$plugin" "$target"
	rm -f "$target"
	timed file qemu-img "$r" qemu-img convert -f raw -O raw "$file" "$target"
	rm -f "$target"
}
for ((r = 1; r <= runs; r++)); do
	step "copies, round $r of $runs"
	copy_jobs "$r"
done

# map_times N: RUNS first block statuses of "big" on new connections, at N volumes.
map_times() {
	local n=$1 r ms
	for ((r = 1; r <= runs * 3; r++)); do
		ms=$("$map" "$plugin" c1 timemap 0 $((4 * G)) | awk '{ print $3 }')
		printf 'plugin\tmap-%s\t%s\t%s\tms\n' "$n" "$r" "$ms" >>"$out"
	done
}
step "first block status at 10 volumes"
for ((i = 2; i <= 10; i++)); do
	admin_api POST /v1/tenants/alice/volumes "{\"name\":\"v$i\",\"size\":$M}"
	expect 201
done
map_times 10
step "first block status at $volumes volumes"
# bench-meta fills the pool through the API in-process (a curl per volume would take
# most of an hour under TCG), and times one sample of its own at that level.
"$TP_BUILD/bench/bench-meta" "$run_dir/admin.sock" alice "$sock" - "$((volumes - 10))" 1 \
	>/dev/null 2>"$TP_RESULTS/bench-meta-fill.log" || fail "bench-meta could not fill the pool"
map_times "$volumes"

{
	echo "machine: qemu TCG guest, $(nproc) vCPUs, $(awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo) MiB, kernel $(uname -r)"
	echo "volume: 4 GiB, 64 MiB written in 64 scattered MiB; pool blocks of 64 KiB"
	echo "versions: $(nbdkit --version), $(nbdcopy --version | head -1), $(qemu-img --version | head -1)"
} >"$TP_RESULTS/env-extents.txt"
echo "$test_name: done"
