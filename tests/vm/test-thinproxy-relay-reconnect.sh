#!/usr/bin/env bash
# The keeper's relay (ioctl interface: a container with a network namespace of its own)
# carries a mixed load across restarts of the tenant's nbdkit: fio reads and writes blocks
# of 64 KiB to 1 MiB on the device with direct I/O, 32 and then 64 deep, while nbdkit is
# killed twice per run; every I/O completes and every block verifies (crc32c). The first
# run lets the kernel send requests of up to 1 MiB, so that the relay holds 32 requests
# of 64 KiB-1 MiB; the second keeps nbd's default of 128 KiB, so that it holds up to the
# device's 128 requests. A relay that stops reading replies while it resends hangs the
# device for good (its kernel timeout is 0): that fails here once no I/O completes for
# HANG_S with I/O in flight. Prints how long each restart took to recover and how many
# requests the relay resent.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/container.sh"
requires unshare nsenter fio

export THINPROXY_KEEPER_LOG=$TP_RESULTS/keeper.log
HANG_S=180
KILLS=2

start_daemon
tp --admin tenant add alice >/dev/null
container_start alice
alice=$container_pid
in_container "$alice" "$TP_BUILD/thinproxy" create v --size 32M >/dev/null
dev=$(in_container "$alice" "$TP_BUILD/thinproxy" attach v)
nbd=${dev#/dev/}
grep -q "$nbd: v attached through the ioctl interface" "$THINPROXY_KEEPER_LOG" ||
	fail "$dev is not attached through the ioctl interface"
cleanup "in_container $alice $TP_BUILD/thinproxy detach $dev"

# The reads go to the first half, which a first run writes with the reads job's seed;
# the writes to the second half, with a seed of each run's own.
fio_args=(--filename="$dev" --direct=1 --ioengine=libaio --bsrange=64k-1m --rw=randwrite
	--verify=crc32c --verify_fatal=1)
reads_job=(--name=reads --offset=0 --size=16M --randseed=19)

# The loop below watches without forking, which takes a while under emulation: counters
# are read with read, the keeper's log through a descriptor that keeps its place, and
# pauses are reads that time out on a fifo nobody writes.
mkfifo "$scratch/never"
exec {never}<>"$scratch/never" {log}<"$THINPROXY_KEEPER_LOG"
pause() { read -rt 0.05 -u "$never" _ || true; }
now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }
# clock: the time of day to the millisecond, as the keeper logs it.
clock() { printf '%(%T)T.%03d' "${EPOCHREALTIME%.*}" $((10#${EPOCHREALTIME#*.} / 1000)); }
# sample: the device's requests in flight ($reads, $writes) and completed ($completed).
sample() {
	local s
	read -r reads writes <"/sys/block/$nbd/inflight"
	read -ra s <"/sys/block/$nbd/stat"
	completed=$((s[0] + s[4]))
}
# waits: where fio's and the keeper's threads wait in the kernel, for a hang's report.
waits() {
	local t c w out=
	for t in /proc/[0-9]*/task/[0-9]*; do
		read -r c <"$t/comm" 2>/dev/null || continue
		[[ $c == fio || $c == tpkeep-* ]] || continue
		read -r w <"$t/wchan" 2>/dev/null || w=?
		out+="$c/${t##*/}:${w:-running} "
	done
	echo "threads waiting: ${out:-none}"
}
# reconnected: true if the relay logged a reconnect since last asked; $reconnect is its
# line from "reconnected" on.
partial=
reconnected() {
	local line
	while IFS= read -r -u "$log" line || { partial+=$line && false; }; do
		line=$partial$line
		partial=
		if [[ $line == *"$nbd: reconnected after"* ]]; then
			reconnect=reconnected${line#*: reconnected}
			return 0
		fi
	done
	return 1
}

# mixed_run DEPTH SEED: fio at DEPTH (half reads, half writes); kill nbdkit KILLS times
# while reads and writes are both in flight, each once the relay has resent what the
# previous kill left outstanding. fio runs again (at most 10 times) until it has seen
# KILLS kills: a fast machine may finish one run before them.
mixed_run() {
	local depth=$1 seed=$2 fio_pid killed=0 pid=0 last quiet t0 at rc runs=0
	while ((killed < KILLS)); do
		((runs++ < 10)) || fail "depth $depth: 10 runs of fio saw $killed of $KILLS kills"
		rc=0
		in_container "$alice" fio "${fio_args[@]}" "${reads_job[@]}" --iodepth=$((depth / 2)) \
			--verify_only=1 --loops=2 --name=writes --offset=16M --size=16M \
			--randseed="$seed" --iodepth=$((depth / 2)) >"$scratch/fio-$depth.out" 2>&1 &
		fio_pid=$!
		sample
		last=$completed
		quiet=$SECONDS
		while kill -0 "$fio_pid" 2>/dev/null; do
			sample
			if [ "$completed" != "$last" ]; then
				last=$completed
				quiet=$SECONDS
			elif ((SECONDS - quiet > HANG_S)); then
				fail "depth $depth: no I/O completed for ${HANG_S}s with $reads reads and $writes writes in flight, after $killed kills of nbdkit: the device hangs; $(waits)"
			fi
			if ((pid != 0)) && reconnected; then
				echo "depth $depth, restart $killed: nbdkit killed at $at, all resent $(($(now_ms) - t0)) ms later; relay: $reconnect"
				pid=0
			fi
			if ((pid == 0 && killed < KILLS && reads > 0 && writes > 0)); then
				read -r pid <"$run_dir/tenants/alice/nbdkit.pid"
				t0=$(now_ms)
				at=$(clock)
				kill -KILL "$pid"
				killed=$((killed + 1))
			fi
			pause
		done
		wait "$fio_pid" || rc=$?
		[ "$rc" = 0 ] || { cat "$scratch/fio-$depth.out"; fail "depth $depth: fio failed ($rc)"; }
		grep -E "^ *(reads|writes): .*err= *0" "$scratch/fio-$depth.out" | sed 's/^/  /'
	done
	((pid == 0)) || reconnected || fail "depth $depth: the relay logged no reconnect"
}

step "write the half that is read"
in_container "$alice" fio "${fio_args[@]}" "${reads_job[@]}" --iodepth=16 --do_verify=0 \
	>"$scratch/fio-fill.out" 2>&1 || { cat "$scratch/fio-fill.out"; fail "fio could not fill $dev"; }

max_sectors=/sys/block/$nbd/queue/max_sectors_kb
default_max=$(cat "$max_sectors")
echo 1024 >"$max_sectors"
step "32 deep: 16 reads and 16 writes of 64 KiB-1 MiB, requests up to 1 MiB, nbdkit killed $KILLS times"
mixed_run 32 3201
echo "$default_max" >"$max_sectors"
step "64 deep: 32 reads and 32 writes of 64 KiB-1 MiB, requests up to $default_max KiB, nbdkit killed $KILLS times"
mixed_run 64 6401

step "detach"
if dmesg | grep -E 'I/O error|Buffer I/O'; then
	fail "the kernel saw I/O errors"
fi
in_container "$alice" "$TP_BUILD/thinproxy" detach "$dev"
stop_daemon
echo "$test_name: PASS"
