#!/usr/bin/env bash
# bench/guest-io.sh RUNS SECONDS FIO_MIB COPY_MIB: the data path in the test guest, on two
# thin volumes of one pool. The same fio jobs against thinproxy's plugin (through the
# broker, the tenant's nbd.sock), nbdkit's file plugin, qemu-nbd and nbd-server on the
# same thin device, the device attached as /dev/nbdN by `thinproxy attach`, and the raw
# thin device itself (libaio, direct=1: the limit); nbdcopy of the copy volume to null
# through each. RUNS rounds, configurations interleaved, the order rotated each round.
# Writes io.tsv (config, job, run, value, unit) and env.txt to $TP_RESULTS.
# Run through bench/run (tests/vm/run); a benchmark, not a test.
. "$TP_SRC/tests/vm/functions.sh"
requires fio nbdkit qemu-nbd nbd-server nbdcopy nbdinfo jq curl dd

runs=${1:-3} secs=${2:-10} fio_mib=${3:-256} copy_mib=${4:-1024}
M=$((1 << 20))
out=$TP_RESULTS/io.tsv
: >"$out"
cleanup "cp $daemon_log $TP_RESULTS/daemon-io.log"

# The pool holds both volumes, with room to spare above the daemon's free-space floor.
export TP_TEST_LOOP_SIZE=$(((fio_mib + copy_mib) * 2 + 1024))M
start_daemon --log-level info
cleanup "kill $daemon_pid"
tp() { "$TP_BUILD/thinproxy" --dir "$run_dir" "$@"; }
tp --admin tenant add alice >/dev/null
sock=$run_dir/tenants/alice/nbd.sock
wait_for_socket "$sock"

# volume NAME MIB: create it, activate it by opening it through the plugin once, and
# print its dm device.
volume() {
	admin_api POST /v1/tenants/alice/volumes "{\"name\":\"$1\",\"size\":$(($2 * M))}"
	expect 201
	local id
	id=$(field .thin_id)
	nbdinfo --size "nbd+unix:///$1?socket=$sock" >/dev/null
	admin_api GET /v1/pool
	echo "/dev/mapper/$(field .name)-$id"
}
fio_dev=$(volume fio "$fio_mib")
copy_dev=$(volume copy "$copy_mib")
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
for v in fio copy; do
	dev=${v}_dev
	nbdkit -U "$b/file-$v.sock" -P "$b/file-$v.pid" file "${!dev}"
	cleanup "kill \$(cat $b/file-$v.pid)"
	qemu-nbd --fork -f raw -k "$b/qemu-$v.sock" -x "$v" -t -e 8 --pid-file="$b/qemu-$v.pid" "${!dev}"
	cleanup "kill \$(cat $b/qemu-$v.pid)"
done
cat >"$b/nbd-server.conf" <<EOF
[generic]
user = root
group = root
unixsock = $b/nbd-server.sock
[fio]
exportname = $fio_dev
[copy]
exportname = $copy_dev
EOF
nbd-server -C "$b/nbd-server.conf" -p "$b/nbd-server.pid"
cleanup "kill \$(cat $b/nbd-server.pid)"
wait_for_socket "$b/nbd-server.sock"

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

# The jobs: name, rw, block size, queue depth.
jobs=("randread-4k randread 4k 32" "randwrite-4k randwrite 4k 32"
	"read-1m read 1m 8" "write-1m write 1m 8")
configs=(plugin file qemu-nbd nbd-server kernel-nbd raw)

# run_fio CONFIG JOB RUN
run_fio() {
	local c=$1 name rw bs depth target engine json
	read -r name rw bs depth <<<"$2"
	target=$(uri "$c" fio)
	if [[ $target == nbd* ]]; then
		engine=(--ioengine=nbd "--uri=$target")
	else
		engine=(--ioengine=libaio --direct=1 "--filename=$target")
	fi
	json=$scratch/fio-$c-$name-$3.json
	sync
	echo 3 >/proc/sys/vm/drop_caches
	fio --name="$name" "${engine[@]}" --rw="$rw" --bs="$bs" --iodepth="$depth" \
		--size="${fio_mib}M" --time_based --runtime="$secs" --ramp_time=1 --norandommap \
		--randrepeat=0 --eta=never --output-format=json --output="$json" >/dev/null ||
		fail "fio $name on $c failed"
	jq -r --arg c "$c" --arg j "$name" --arg r "$3" '.jobs[0] |
		(if .read.io_bytes > 0 then .read else .write end) as $d |
		if ($j | endswith("4k")) then [$c, $j, $r, ($d.iops | floor), "IOPS"]
		else [$c, $j, $r, ($d.bw_bytes / 1048576 * 10 | round / 10), "MiB/s"] end |
		@tsv' "$json" >>"$out"
	rm -f "$json"
}

# run_copy CONFIG RUN: nbdcopy of the copy volume to null.
run_copy() {
	local c=$1 t0 t1
	sync
	echo 3 >/proc/sys/vm/drop_caches
	t0=$EPOCHREALTIME
	nbdcopy "$(uri "$c" copy)" null: || fail "nbdcopy from $c failed"
	t1=$EPOCHREALTIME
	printf '%s\tnbdcopy-null\t%s\t%s\tMiB/s\n' "$c" "$2" \
		"$(awk -v m="$copy_mib" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", m / (b - a) }')" >>"$out"
}

{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "machine: qemu TCG guest, $(nproc) vCPUs, $(awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo) MiB, kernel $(uname -r)"
	echo "cpu: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
	echo "versions: nbdkit $(nbdkit --version | awk '{ print $2 }'), $(qemu-nbd --version | head -1), nbd-server $(nbd-server -V 2>&1 | awk '/version/ { print $NF; exit }'), $(fio --version), $(nbdcopy --version | head -1)"
	echo "fio: ${secs}s time_based after 1s ramp, ${fio_mib} MiB thin volume; nbdcopy: ${copy_mib} MiB volume; runs: $runs"
} >"$TP_RESULTS/env-io.txt"

for ((run = 1; run <= runs; run++)); do
	# Rotate the order each round, so no configuration always runs first or last.
	order=("${configs[@]:run % ${#configs[@]}}" "${configs[@]:0:run % ${#configs[@]}}")
	for j in "${jobs[@]}"; do
		step "round $run/$runs: ${j%% *}: ${order[*]}"
		for c in "${order[@]}"; do run_fio "$c" "$j" "$run"; done
	done
	step "round $run/$runs: nbdcopy to null"
	for c in "${order[@]}"; do run_copy "$c" "$run"; done
done
step "done: $(wc -l <"$out") measurements in $out"
