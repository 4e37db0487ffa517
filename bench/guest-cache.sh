#!/usr/bin/env bash
# bench/guest-cache.sh RUNS SECONDS SUSTAIN_S MIB: cache mode none (issue 23) in the test
# guest, on one thin volume of MIB MiB, filled first. Four servers of it side by side:
#   none       thinproxy's plugin, export direct:NAME (the thin device opened O_DIRECT)
#   plugin     thinproxy's plugin, export NAME (buffered: today's default)
#   qemu-none  qemu-nbd --cache=none --aio=native on the thin device
#   file       nbdkit's file plugin on the thin device (buffered)
# each through the NBD socket (fio's nbd engine, one connection) and through a kernel
# /dev/nbdN (thinproxy attach --cache none / writeback, nbd-client for the other two;
# fio's libaio with direct=1, so that what is measured is the server, not /dev/nbdN's
# own page cache). fio 4k random read and write (iodepth 32) and 1 MiB sequential read
# and write (iodepth 8), SECONDS each, RUNS rounds with the order of the servers rotated;
# then once per server and path 4k random writes for SUSTAIN_S seconds, long enough for
# the buffered servers' dirty pages to pile up. Before each job: sync and drop_caches.
# After it: the page cache it left (Buffers + Cached of /proc/meminfo over the level
# after the drop), Dirty, the thin device's own resident pages (tests/vm/page-cache), the server
# process's CPU (utime + stime from /proc/PID/stat) and the whole guest's (/proc/stat,
# to the end of a sync that writes what the job left dirty) per request, and that sync's
# time.
# Writes cache.tsv (config, path, job, run, value, unit, cached MiB, dirty MiB, thin
# device MiB, server CPU µs per request, guest CPU µs per request, sync s, requests),
# sustain.tsv (config, path, second, IOPS of the window ending there) and env-cache.txt
# to $TP_RESULTS. Run through bench/run (tests/vm/run); a benchmark, not a test.
. "$TP_SRC/tests/vm/functions.sh"
requires fio nbdkit qemu-nbd nbd-client nbdinfo jq curl dd
pagecache=$TP_BUILD/tests/vm/page-cache
[ -x "$pagecache" ] || fail "$pagecache is missing (make all)"

runs=${1:-1} secs=${2:-20} sustain=${3:-120} mib=${4:-1024}
out=$TP_RESULTS/cache.tsv sus=$TP_RESULTS/sustain.tsv
: >"$out"
: >"$sus"
cleanup "cp $daemon_log $TP_RESULTS/daemon-cache.log"

. "$TP_SRC/bench/servers.sh"
start_alice $((mib * 2))
dev=$(thin_volume cache "$mib")
[ -b "$dev" ] || fail "no thin device: $dev"

step "filling the volume, so that every write later is an overwrite of a mapped block"
dd if=/dev/zero of="$dev" bs=1M count="$mib" oflag=direct status=none

step "qemu-nbd (cache none, aio native) and nbdkit's file plugin on the same thin device"
b=$scratch/servers
mkdir -p "$b"
start_qemu "$b" cache "$dev" --cache=none --aio=native
start_file "$b" cache "$dev"
wait_for_socket "$b/qemu-cache.sock"
wait_for_socket "$b/file-cache.sock"

step "attaching the volume four times as kernel NBD devices"
# nbd_client SOCKET [NAME]: attach the export on SOCKET to a free /dev/nbdN; print it.
nbd_client() {
	local i
	for ((i = 0; i < 16; i++)); do
		[ -e "/sys/block/nbd$i/pid" ] && continue
		nbd-client -unix "$1" "/dev/nbd$i" -b 4096 ${2:+-N "$2"} >/dev/null || fail "nbd-client $1 failed"
		cleanup "nbd-client -d /dev/nbd$i"
		echo "/dev/nbd$i"
		return
	done
	fail "no free /dev/nbdN"
}
k_none=$(tp --admin --tenant alice attach cache --cache none)
cleanup "$TP_BUILD/thinproxy --dir $run_dir detach $k_none"
k_plugin=$(tp --admin --tenant alice attach cache --cache writeback)
cleanup "$TP_BUILD/thinproxy --dir $run_dir detach $k_plugin"
k_qemu_none=$(nbd_client "$b/qemu-cache.sock" cache)
k_file=$(nbd_client "$b/file-cache.sock")

configs=(none plugin qemu-none file)
plugin_pid=$(<"$run_dir/tenants/alice/nbdkit.pid")
declare -A pid=([none]=$plugin_pid [plugin]=$plugin_pid
	[qemu-none]=$(<"$b/qemu-cache.pid") [file]=$(<"$b/file-cache.pid"))
declare -A target=(
	[none socket]="nbd+unix:///direct:cache?socket=$sock"
	[plugin socket]="nbd+unix:///cache?socket=$sock"
	[qemu-none socket]="nbd+unix:///cache?socket=$b/qemu-cache.sock"
	[file socket]="nbd+unix:///?socket=$b/file-cache.sock"
	[none kernel]=$k_none [plugin kernel]=$k_plugin
	[qemu-none kernel]=$k_qemu_none [file kernel]=$k_file)
for c in "${configs[@]}"; do
	size=$(nbdinfo --size "${target[$c socket]}") && [ "$size" = $((mib << 20)) ] ||
		fail "$c does not serve the volume: size $size"
done
for f in /proc/"$plugin_pid"/fd/*; do
	[ -b "$f" ] && (((0$(sed -n 's/^flags:[[:space:]]*//p' "${f/\/fd\//\/fdinfo\/}") >> 14) & 1)) && break
	f=
done
[ -n "$f" ] || fail "the plugin's nbdkit holds no block device O_DIRECT"

# Read with builtins only: every exec is slow under TCG.
# ticks PID: utime + stime of PID (all its threads), in clock ticks, into $ticks.
ticks() {
	local line f
	read -r line <"/proc/$1/stat"
	read -r -a f <<<"${line##*) }"
	ticks=$((f[11] + f[12]))
}
# busy: the guest's CPU time in anything but idle and iowait, in clock ticks, into $busy.
busy() {
	local cpu u n s i w irq sirq st
	read -r cpu u n s i w irq sirq st _ </proc/stat
	busy=$((u + n + s + irq + sirq + st))
}
# meminfo: Buffers + Cached (a block device's page cache is in Buffers) and Dirty in
# KiB, into $cached and $dirty.
meminfo() {
	local k v
	cached=0
	while read -r k v _; do
		case $k in
		Buffers: | Cached:) cached=$((cached + v)) ;;
		Dirty:) dirty=$v ;;
		esac
	done </proc/meminfo
}
hz=$(getconf CLK_TCK)

# measure CONFIG PATH JOB RUN: one fio job (name rw bs depth seconds) on CONFIG's
# server through PATH (socket or kernel), with its page cache and CPU.
measure() {
	local c=$1 p=$2 name rw bs depth t engine json log=() c0 t0 t1 g0 g1 s0 s1 thin
	read -r name rw bs depth t <<<"$3"
	if [ "$p" = socket ]; then
		engine=(--ioengine=nbd "--uri=${target[$c $p]}")
	else
		engine=(--ioengine=libaio --direct=1 "--filename=${target[$c $p]}")
	fi
	[[ $name == *sustained ]] && log=("--write_iops_log=$scratch/sus" --log_avg_msec=$((t * 1000 / 6)))
	json=$scratch/fio.json
	rm -f "$scratch"/sus_iops*.log
	sync
	echo 3 >/proc/sys/vm/drop_caches
	meminfo
	c0=$cached
	ticks "${pid[$c]}" && t0=$ticks
	busy && g0=$busy
	fio --name="$name" "${engine[@]}" --rw="$rw" --bs="$bs" --iodepth="$depth" \
		--size="${mib}M" --time_based --runtime="$t" --norandommap --randrepeat=0 \
		"${log[@]}" --eta=never --output-format=json --output="$json" >/dev/null ||
		fail "fio $name on $c ($p) failed"
	ticks "${pid[$c]}" && t1=$ticks
	meminfo
	thin=$("$pagecache" "$dev")
	s0=$EPOCHREALTIME
	sync
	s1=$EPOCHREALTIME
	busy && g1=$busy
	jq -r --arg c "$c" --arg p "$p" --arg j "$name" --arg r "$4" \
		--argjson cm $(((cached - c0) / 1024)) --argjson dm $((dirty / 1024)) \
		--argjson tm $((thin * 4096 >> 20)) --argjson st $((t1 - t0)) --argjson gt $((g1 - g0)) \
		--argjson hz "$hz" --arg sy "$(((${s1/./} - ${s0/./}) / 1000))" '.jobs[0] |
		(.read.total_ios + .write.total_ios) as $n |
		(if .read.io_bytes > 0 then .read else .write end) as $d |
		[$c, $p, $j, $r,
		 (if ($j | contains("4k")) then ($d.iops | floor) else ($d.bw_bytes / 1048576 * 10 | round / 10) end),
		 (if ($j | contains("4k")) then "IOPS" else "MiB/s" end),
		 $cm, $dm, $tm,
		 (if $n > 0 then ($st * 1e6 / $hz / $n * 10 | round / 10) else "-" end),
		 (if $n > 0 then ($gt * 1e6 / $hz / $n * 10 | round / 10) else "-" end),
		 (($sy | tonumber) / 1000 | . * 100 | round / 100), $n] | @tsv' "$json" >>"$out" ||
		fail "no result from fio $name on $c ($p)"
	if [ ${#log[@]} -gt 0 ]; then
		awk -F', *' -v c="$c" -v p="$p" '{ printf "%s\t%s\t%d\t%d\n", c, p, $1 / 1000 + 0.5, $2 }' \
			"$scratch"/sus_iops*.log >>"$sus"
	fi
}

{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "machine: qemu TCG guest, $(nproc) vCPUs, $(awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo) MiB, kernel $(uname -r)"
	echo "versions: nbdkit $(nbdkit --version | awk '{ print $2 }'), $(qemu-nbd --version | head -1), $(fio --version)"
	echo "fio: ${secs}s per job (time_based, no ramp), sustained 4k random writes ${sustain}s, ${mib} MiB thin volume; runs: $runs"
	echo "vm: dirty_ratio $(</proc/sys/vm/dirty_ratio), dirty_background_ratio $(</proc/sys/vm/dirty_background_ratio), dirty_expire_centisecs $(</proc/sys/vm/dirty_expire_centisecs)"
} >"$TP_RESULTS/env-cache.txt"

jobs=("randread-4k randread 4k 32 $secs" "randwrite-4k randwrite 4k 32 $secs"
	"read-1m read 1m 8 $secs" "write-1m write 1m 8 $secs")
for ((run = 1; run <= runs; run++)); do
	order=("${configs[@]:run % 4}" "${configs[@]:0:run % 4}")
	for p in socket kernel; do
		for j in "${jobs[@]}"; do
			step "round $run/$runs, $p: ${j%% *}: ${order[*]}"
			for c in "${order[@]}"; do measure "$c" "$p" "$j" "$run"; done
		done
	done
done
for p in socket kernel; do
	for c in "${configs[@]}"; do
		step "$p: 4k random writes for ${sustain}s: $c"
		measure "$c" "$p" "randwrite-4k-sustained randwrite 4k 32 $sustain" 1
	done
done
step "done: $(wc -l <"$out") measurements in $out"
