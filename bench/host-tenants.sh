#!/usr/bin/env bash
# bench/host-tenants.sh DIR: the control plane's cost per tenant on this host, with
# bench-thinproxyd (thinproxyd with an in-memory stand-in for daemon/pool.c) and a real
# nbdkit per tenant. At each count of BENCH_TENANTS (default "10 100 1000"), on a fresh
# daemon:
#   add       the tenants, one API call each (bench/bench-tenants.c on one kept-alive
#             connection to the admin socket)
#   first     a first connection to a tenant nobody spoke to (with nbdkit on demand: no
#             nbdkit running) against one to a tenant spoken to just before, interleaved
#   create    BENCH_TENANT_VOLUMES volumes in every tenant (default 10: 10000 volumes at
#             1000 tenants)
#   metrics, tenant-ls  GET /metrics and GET /v1/tenants in-process, then
#             `thinproxy --admin metrics` and `thinproxy --admin tenant ls` (cli-*)
#   start     with every tenant's nbdkit made to run (an NBD greeting from each), the
#             daemon stopped and started again: it adopts them; from exec to ready
#   delete, remove  the volumes, then the tenants
# then nbdkit-start: an nbdkit of the null plugin started, a command run and stopped
# (`--run true`), for scale beside a first connection, which waits for an nbdkit's start;
# and the memory: thinproxyd, its API processes and the tenants' nbdkits, VmRSS summed and
# Pss summed (shared pages split between the processes sharing them), after the adds and
# right after the first restart. Writes tenants.tsv (TENANTS OP MICROSECONDS [RAN]: RAN, for first-*,
# 1 if that tenant's nbdkit ran before the connection), start.tsv (TENANTS MICROSECONDS
# ADOPTED), mem.tsv (TENANTS WHEN PROCESS COUNT RSS_KIB PSS_KIB) and env-tenants.txt to DIR.
# BENCH_TENANTS_FLAGS: more thinproxyd flags (e.g. an idle time for nbdkit on demand).
# Needs root. Not a test.
set -euo pipefail

out_dir=$(realpath -m "$1")
counts=${BENCH_TENANTS:-10 100 1000}
vols=${BENCH_TENANT_VOLUMES:-10}
extra=${BENCH_TENANTS_FLAGS:-}
src=$(realpath -e "$(dirname "$0")/..")
build=${TP_BUILD:-$src/build}
daemon=$build/bench/bench-thinproxyd
drv=$build/bench/bench-tenants
for p in "$daemon" "$drv" "$build/thinproxy" "$build/thinproxyd-api"; do
	[ -x "$p" ] || { echo "host-tenants.sh: $p is missing (make bench)" >&2; exit 1; }
done
mkdir -p "$out_dir"
scratch=$(mktemp -d /tmp/thinproxy-bench-tenants.XXXXXX)
run_dir=$scratch/run
pid=

# start_daemon: thinproxyd on the state in $scratch, detached; its parent exits once it is
# ready (daemon/main.c, daemonize), which is what the start time is taken to: start_us,
# the microseconds from exec to ready.
start_daemon() {
	local t0 t1
	# No cgroup for the nbdkits: what is measured does not need one, and a host without
	# cgroup v2 (or with a thinproxyd of its own in /thinproxyd) runs this all the same.
	t0=$EPOCHREALTIME
	# shellcheck disable=SC2086
	"$daemon" --state-dir "$scratch/state" --run-dir "$run_dir" --cgroup none \
		--plugin "$build/nbdkit-thinproxy-plugin.so" --api-program "$build/thinproxyd-api" \
		--log-level info $extra >>"$scratch/daemon.log" 2>&1 ||
		{ tail -20 "$scratch/daemon.log" >&2; exit 1; }
	t1=$EPOCHREALTIME
	pid=$(cat "$run_dir/thinproxyd.pid")
	start_us=$((${t1/./} - ${t0/./}))
}
# stop_daemon: SIGTERM, and wait for it to be gone (it is not our child: it detached).
stop_daemon() {
	[ -n "$pid" ] || return 0
	kill "$pid" 2>/dev/null || true
	while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
	pid=
}
# nbdkits: the pids of the tenants' running nbdkits, as their pidfiles say.
nbdkits() {
	local f p
	for f in "$run_dir"/tenants/*/nbdkit.pid; do
		[ -e "$f" ] || continue
		p=$(cat "$f" 2>/dev/null) || continue
		[ -n "$p" ] && [ -r "/proc/$p/status" ] && echo "$p"
	done
	return 0
}
# The tenants' nbdkits outlive the daemon by design: stop them too.
stop_all() {
	local n
	n=$(nbdkits)
	stop_daemon
	# shellcheck disable=SC2086
	[ -z "$n" ] || kill $n 2>/dev/null || true
}
trap 'stop_all >/dev/null 2>&1 || true; rm -rf "$scratch"' EXIT
tp() { "$build/thinproxy" --dir "$run_dir" "$@"; }
drv() { "$drv" "$run_dir/admin.sock" "$run_dir" "$@"; }
# mem N WHEN: the memory of the daemon, its API processes and the nbdkits, to mem.tsv; the
# "all" line sums the three as read (nbdkits on demand may exit meanwhile).
mem() {
	local n=$1 when=$2 apis kits line count=0 rss=0 pss=0 c r s
	apis=$(pgrep -P "$pid" -f thinproxyd-api | tr '\n' ' ') || true
	kits=$(nbdkits | tr '\n' ' ')
	for line in "thinproxyd:$pid" "API processes:$apis" "nbdkits:$kits"; do
		read -r c r s <<<"$(sum_mem "${line#*:}")"
		printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$when" "${line%%:*}" "$c" "$r" "$s" >>"$out_dir/mem.tsv"
		count=$((count + c)) rss=$((rss + r)) pss=$((pss + s))
	done
	printf '%s\t%s\tall\t%s\t%s\t%s\n' "$n" "$when" "$count" "$rss" "$pss" >>"$out_dir/mem.tsv"
}
# sum_mem PIDS: "COUNT RSS_KIB PSS_KIB" of those of PIDS still running.
sum_mem() {
	local p rss=0 pss=0 count=0 r s
	for p in $1; do
		r=$(awk '/^VmRSS/ { print $2 }' "/proc/$p/status" 2>/dev/null) || continue
		s=$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null) || continue
		rss=$((rss + ${r:-0})) pss=$((pss + ${s:-0})) count=$((count + 1))
	done
	echo "$count $rss $pss"
}
# tag N: prefix every line of stdin with N (the tenant count).
tag() { sed "s/^/$1\t/"; }

: >"$out_dir/tenants.tsv"
: >"$out_dir/start.tsv"
: >"$out_dir/mem.tsv"
{
	echo "tenants: $counts; volumes per tenant: $vols; daemon flags: ${extra:-none}"
	echo "nbdkit: $(nbdkit --version 2>/dev/null | head -1); RLIMIT_NOFILE $(ulimit -Sn)/$(ulimit -Hn)"
} >"$out_dir/env-tenants.txt"

for n in $counts; do
	rm -rf "$scratch/state" "$run_dir"
	start_daemon
	echo "== $n tenants: add"
	t0=$SECONDS
	drv add 0 "$n" | tag "$n" >>"$out_dir/tenants.tsv"
	echo "   $((SECONDS - t0)) s; nbdkits running: $(drv running 0 "$n" | cut -f2)"
	drv running 0 "$n" | tag "$n" >>"$out_dir/tenants.tsv"
	mem "$n" added
	echo "== $n tenants: first connection to an idle tenant against a running one"
	drv first 0 "$n" 20 | tag "$n" >>"$out_dir/tenants.tsv"
	echo "== $n tenants: $vols volumes each"
	drv create 0 "$n" "$vols" | tag "$n" >>"$out_dir/tenants.tsv"
	echo "== $n tenants: metrics and tenant ls"
	for ((i = 0; i < 5; i++)); do
		drv get /metrics 2 | tag "$n" >>"$out_dir/tenants.tsv"
		drv get /v1/tenants 2 | tag "$n" >>"$out_dir/tenants.tsv"
		for c in metrics "tenant ls"; do
			t0=$EPOCHREALTIME
			# shellcheck disable=SC2086
			tp --admin $c >/dev/null
			t1=$EPOCHREALTIME
			printf '%s\tcli-%s\t%s\n' "$n" "${c/ /-}" $((${t1/./} - ${t0/./})) >>"$out_dir/tenants.tsv"
		done
	done
	echo "== $n tenants: every nbdkit made to run, then a restart that adopts them"
	for ((i = 0; i < 3; i++)); do
		# Again before each restart: with nbdkit on demand, an nbdkit idle for the idle
		# time (since its first greeting, which took a while for 1000) has exited.
		drv greet 0 "$n" >/dev/null
		running=$(drv running 0 "$n" | cut -f2)
		stop_daemon
		before=$(grep -c 'adopted running nbdkit' "$scratch/daemon.log" || true)
		start_daemon
		us=$start_us
		after=$(grep -c 'adopted running nbdkit' "$scratch/daemon.log" || true)
		printf '%s\t%s\t%s\t%s\n' "$n" "$us" $((after - before)) "$running" >>"$out_dir/start.tsv"
		echo "   start: $((us / 1000)) ms, adopted $((after - before)) of $running running"
		((i == 0)) && mem "$n" restarted
	done
	echo "== $n tenants: delete the volumes, remove the tenants"
	drv delete 0 "$n" "$vols" | tag "$n" >>"$out_dir/tenants.tsv"
	drv remove 0 "$n" | tag "$n" >>"$out_dir/tenants.tsv"
	stop_all
done
# For scale beside a first connection: an nbdkit of the null plugin started and stopped,
# nothing of ours in it (nbdkit-start in tenants.tsv, tenant count 0).
echo "== nbdkit alone: null plugin, started and stopped, 20 times"
for ((i = 0; i < 20; i++)); do
	t0=$EPOCHREALTIME
	nbdkit -U - null --run true
	t1=$EPOCHREALTIME
	printf '0\tnbdkit-start\t%s\n' $((${t1/./} - ${t0/./})) >>"$out_dir/tenants.tsv"
done
cp "$scratch/daemon.log" "$out_dir/daemon-tenants.log"
awk -F'\t' '{ n[$1 "\t" $2]++; s[$1 "\t" $2] += $3 }
	END { for (k in n) printf "%s\t%d\t%.0f us\n", k, n[k], s[k] / n[k] }' "$out_dir/tenants.tsv" | sort -n
cat "$out_dir/start.tsv" "$out_dir/mem.tsv"
