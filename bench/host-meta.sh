#!/usr/bin/env bash
# bench/host-meta.sh DIR VOLUMES SAMPLES: the metadata path on this host, where there is
# no dm-thin: bench-thinproxyd (thinproxyd with an in-memory stand-in for daemon/pool.c)
# with a real tenant and nbdkit. Times create, snapshot and remove through the API at 10,
# 1000 and VOLUMES volumes (the daemon's own cost: no device-mapper), `thinproxy ls` at
# VOLUMES volumes, and the memory of the daemon and of the idle tenant nbdkit. Then the
# cost of the API processes: create, snapshot and remove at 10 volumes with the HTTP
# parsed in the daemon (--no-api-process) and in the API processes (the default), fresh
# daemons of each kind taking turns, and the memory of each kind. Writes meta.tsv (as
# bench-meta's), api-split.tsv (MODE, then bench-meta's columns) and mem.tsv to DIR.
# Needs root. Not a test.
set -euo pipefail

out_dir=$(realpath -m "$1")
volumes=${2:-10000} samples=${3:-60}
src=$(realpath -e "$(dirname "$0")/..")
build=${TP_BUILD:-$src/build}
daemon=$build/bench/bench-thinproxyd
for p in "$daemon" "$build/bench/bench-meta" "$build/thinproxy" "$build/thinproxyd-api"; do
	[ -x "$p" ] || { echo "host-meta.sh: $p is missing (make bench)" >&2; exit 1; }
done
mkdir -p "$out_dir"
scratch=$(mktemp -d /tmp/thinproxy-bench-meta.XXXXXX)
run_dir=$scratch/run
pid=
# start_daemon FLAG...: a daemon on a fresh state with tenant alice, ready.
start_daemon() {
	rm -rf "$scratch/state" "$run_dir"
	# No cgroup for the nbdkit: what is measured does not need one, and a host without
	# cgroup v2 (or with a thinproxyd of its own in /thinproxyd) runs this all the same.
	"$daemon" --foreground --state-dir "$scratch/state" --run-dir "$run_dir" --cgroup none \
		--plugin "$build/nbdkit-thinproxy-plugin.so" --api-program "$build/thinproxyd-api" \
		--log-level info "$@" >"$scratch/daemon.log" 2>&1 &
	pid=$!
	for ((i = 0; i < 200; i++)); do grep -q ' ready: ' "$scratch/daemon.log" && break; sleep 0.05; done
	grep -q ' ready: ' "$scratch/daemon.log" || { cat "$scratch/daemon.log" >&2; exit 1; }
	tp --admin tenant add alice >/dev/null
}
# The tenant's nbdkit outlives the daemon by design: stop it too.
stop_daemon() {
	local nbdkit
	nbdkit=$(cat "$run_dir/tenants/alice/nbdkit.pid" 2>/dev/null) || true
	[ -n "$pid" ] && kill "$pid" && wait "$pid"
	pid=
	[ -n "$nbdkit" ] && kill "$nbdkit"
	return 0
}
trap 'stop_daemon >/dev/null 2>&1 || true; rm -rf "$scratch"' EXIT
tp() { "$build/thinproxy" --dir "$run_dir" "$@"; }
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

levels=
for l in 10 1000 "$volumes"; do
	((l <= volumes)) && [[ ,$levels, != *,$l,* ]] && levels+=${levels:+,}$l
done

start_daemon
echo "== bench-meta (API only) at $levels volumes, $samples samples each"
"$build/bench/bench-meta" "$run_dir/admin.sock" alice "$run_dir/tenants/alice/nbd.sock" - \
	"$levels" "$samples" >"$out_dir/meta.tsv"

echo "== thinproxy ls at $(tp --admin --tenant alice ls --quiet | wc -l) volumes"
for ((i = 0; i < 10; i++)); do
	t0=$EPOCHREALTIME
	tp --admin --tenant alice ls >/dev/null
	t1=$EPOCHREALTIME
	printf '%s\tcli\tls\t%s\n' "$volumes" $(((${t1/./} - ${t0/./}))) >>"$out_dir/meta.tsv"
	t0=$EPOCHREALTIME
	curl -sS --unix-socket "$run_dir/admin.sock" -o /dev/null http://localhost/v1/tenants/alice/volumes
	t1=$EPOCHREALTIME
	printf '%s\tcurl\tls\t%s\n' "$volumes" $(((${t1/./} - ${t0/./}))) >>"$out_dir/meta.tsv"
done

cp "$scratch/daemon.log" "$out_dir/daemon-meta.log"

{
	printf 'thinproxyd (in-memory pool)\t%s volumes\t%s\n' "$volumes" "$(rss "$pid")"
	printf 'nbdkit (idle tenant)\tno connection\t%s\n' "$(rss "$(cat "$run_dir/tenants/alice/nbdkit.pid")")"
} >"$out_dir/mem.tsv"
stop_daemon

echo "== the API processes' cost: --no-api-process and the default taking turns, 4 each"
: >"$out_dir/api-split.tsv"
for turn in 1 2 3 4; do
	for mode in in-daemon api-process; do
		flag=
		[ $mode = in-daemon ] && flag=--no-api-process
		start_daemon $flag
		"$build/bench/bench-meta" "$run_dir/admin.sock" alice "$run_dir/tenants/alice/nbd.sock" - \
			10 "$samples" | sed "s/^/$mode\t/" >>"$out_dir/api-split.tsv"
		if [ $turn = 1 ]; then
			apis=$(pgrep -f 'thinproxyd-api --control' | tr '\n' ' ') || true
			total=$(rss "$pid")
			for a in $apis; do total=$((total + $(rss "$a"))); done
			printf 'thinproxyd %s\t10 volumes, %s API processes\t%s\n' "$mode" "$(wc -w <<<"$apis")" "$total" >>"$out_dir/mem.tsv"
		fi
		stop_daemon
	done
done
cat "$out_dir/mem.tsv"
