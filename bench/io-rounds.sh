# Sourced by bench/guest-io.sh and bench/host.sh: RUNS rounds of the fio jobs and of
# nbdcopy to null over CONFIGS, interleaved. The caller sets runs, secs, fio_mib,
# copy_mib, configs, fio_dev and copy_dev (the devices under the servers: their page cache
# is dropped before each measurement), out (the TSV to append to), scratch, machine and
# env_file, and defines uri CONFIG VOLUME (an NBD URI or a block device); volumes are "fio" and "copy".
# only, if set, is a space-separated subset of configs (BENCH_CONFIGS): just those run.
# fail and step as in tests/vm/functions.sh.

# The jobs: name, rw, block size, queue depth.
jobs=("randread-4k randread 4k 32" "randwrite-4k randwrite 4k 32"
	"read-1m read 1m 8" "write-1m write 1m 8")

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
	blockdev --flushbufs "$fio_dev"
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
	blockdev --flushbufs "$copy_dev"
	t0=$EPOCHREALTIME
	nbdcopy "$(uri "$c" copy)" null: || fail "nbdcopy from $c failed"
	t1=$EPOCHREALTIME
	printf '%s\tnbdcopy-null\t%s\t%s\tMiB/s\n' "$c" "$2" \
		"$(awk -v m="$copy_mib" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", m / (b - a) }')" >>"$out"
}

if [ -n "${only:-}" ]; then
	for c in $only; do
		[[ " ${configs[*]} " == *" $c "* ]] || fail "unknown configuration $c (known: ${configs[*]})"
	done
	read -r -a configs <<<"$only"
fi

{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "machine: $machine"
	echo "cpu: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
	echo "versions: nbdkit $(nbdkit --version | awk '{ print $2 }'), $(qemu-nbd --version | head -1), nbd-server $(nbd-server -V 2>&1 | awk '/version/ { print $NF; exit }'), $(fio --version), $(nbdcopy --version | head -1)"
	echo "fio: ${secs}s time_based after 1s ramp, ${fio_mib} MiB thin volume; nbdcopy: ${copy_mib} MiB volume; runs: $runs; servers: ${configs[*]}"
} >"$env_file"

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
