#!/usr/bin/env bash
# bench/guest-meta.sh VOLUMES SAMPLES: metadata in the test guest. bench-meta times
# create, snapshot and remove through the API beside the bare libdevmapper calls and
# dmsetup, and opening an export, at 10, 1000 and VOLUMES existing volumes (a daemon
# pool and a pool of its own, both 64 GiB sparse, in one run); then `thinproxy ls` at
# VOLUMES volumes, and the memory of thinproxyd and of one idle tenant nbdkit; then
# create, snapshot and remove through the API alone with the HTTP parsed in the daemon
# (--no-api-process) and in the API processes (the default), daemons taking turns.
# Writes meta.tsv (LEVEL KIND OP MICROSECONDS), api-split.tsv (MODE, then meta.tsv's
# columns), mem.tsv and env-meta.txt to $TP_RESULTS.
# Run through bench/run (tests/vm/run); a benchmark, not a test.
. "$TP_SRC/tests/vm/functions.sh"
requires nbdkit nbdinfo dmsetup jq curl

volumes=${1:-10000} samples=${2:-50}
prog=$TP_BUILD/bench/bench-meta
[ -x "$prog" ] || fail "$prog is missing (make bench)"
cleanup "cp $daemon_log $TP_RESULTS/daemon-meta.log"

levels=
for l in 10 1000 "$volumes"; do
	((l <= volumes)) && [[ ,$levels, != *,$l,* ]] && levels+=${levels:+,}$l
done

# The same size as bench-meta's own pool, so that both have the same metadata device.
export TP_TEST_LOOP_SIZE=64G
start_daemon --log-level info
tp --admin tenant add alice >/dev/null
wait_for_socket "$run_dir/tenants/alice/nbd.sock"

{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "machine: qemu TCG guest, $(nproc) vCPUs, $(awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo) MiB, kernel $(uname -r)"
	echo "levels: $levels; samples per level: $samples"
} >"$TP_RESULTS/env-meta.txt"

rss() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
nbdkit_pid=$(cat "$run_dir/tenants/alice/nbdkit.pid")
printf 'nbdkit (idle tenant)\tfresh, before any connection\t%s\n' "$(rss "$nbdkit_pid")" \
	>"$TP_RESULTS/mem.tsv"

# The NBD handshake alone, for the open measurement: the same nbdkit, the null plugin.
nbdkit -f --unix "$scratch/handshake.sock" null size=1G &
cleanup "kill $!"
wait_for_socket "$scratch/handshake.sock"

step "bench-meta at $levels volumes, $samples samples each"
start=$SECONDS
BENCH_HANDSHAKE_SOCK=$scratch/handshake.sock "$prog" "$run_dir/admin.sock" alice "$run_dir/tenants/alice/nbd.sock" "$scratch/pool" \
	"$levels" "$samples" >"$TP_RESULTS/meta.tsv" 2>"$TP_RESULTS/bench-meta.log" ||
	{ cat "$TP_RESULTS/bench-meta.log"; fail "bench-meta failed"; }
cat "$TP_RESULTS/bench-meta.log"
echo "bench-meta took $((SECONDS - start)) s" >>"$TP_RESULTS/env-meta.txt"

step "thinproxy ls at $(tp --admin --tenant alice ls --quiet | wc -l) volumes"
for ((i = 0; i < 5; i++)); do
	t0=$EPOCHREALTIME
	tp --admin --tenant alice ls >/dev/null
	t1=$EPOCHREALTIME
	printf '%s\tcli\tls\t%s\n' "$volumes" $(((${t1/./} - ${t0/./}))) >>"$TP_RESULTS/meta.tsv"
	t0=$EPOCHREALTIME
	curl -sS --unix-socket "$run_dir/admin.sock" -o /dev/null \
		http://localhost/v1/tenants/alice/volumes
	t1=$EPOCHREALTIME
	printf '%s\tcurl\tls\t%s\n' "$volumes" $(((${t1/./} - ${t0/./}))) >>"$TP_RESULTS/meta.tsv"
done

step "memory"
{
	printf 'thinproxyd\t%s volumes\t%s\n' "$(tp --admin --tenant alice ls --quiet | wc -l)" "$(rss "$daemon_pid")"
	printf 'nbdkit (idle tenant)\tidle, after the connections of bench-meta\t%s\n' "$(rss "$nbdkit_pid")"
	tp --admin --tenant alice create idle --size 1G >/dev/null
	nbdinfo --size "nbd+unix:///idle?socket=$run_dir/tenants/alice/nbd.sock" >/dev/null
	printf 'nbdkit (idle tenant)\tafter one connection\t%s\n' "$(rss "$nbdkit_pid")"
} >>"$TP_RESULTS/mem.tsv"
cat "$TP_RESULTS/mem.tsv"

step "the API processes' cost: --no-api-process and the default taking turns, 2 each"
# On the pool as bench-meta left it: create, snapshot and remove only, through daemons
# restarted on the same state, for a new tenant each time.
: >"$TP_RESULTS/api-split.tsv"
for turn in 1 2; do
	for mode in in-daemon api-process; do
		flag=
		[ $mode = in-daemon ] && flag=--no-api-process
		stop_daemon
		start_daemon --log-level info $flag
		# A tenant of its own each time: bench-meta names its volumes alike in every run.
		t=split-$turn-$mode
		tp --admin tenant add "$t" >/dev/null
		wait_for_socket "$run_dir/tenants/$t/nbd.sock"
		"$prog" "$run_dir/admin.sock" "$t" "$run_dir/tenants/$t/nbd.sock" - 10 "$samples" \
			2>>"$TP_RESULTS/bench-meta.log" | sed "s/^/$mode\t/" >>"$TP_RESULTS/api-split.tsv"
	done
done
step "done"
