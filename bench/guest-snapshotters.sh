#!/usr/bin/env bash
# bench/guest-snapshotters.sh [RUNS] [ROUNDS]: containerd's snapshotters in the test
# guest, Debian's containerd in a container of its own (tests/vm/containerd.sh): for
# overlayfs, devmapper (on a dmsetup-made dm-thin pool) and thinproxy (`thinproxy
# snapshotter` as the proxy plugin "thinproxy", in tenant alice's container as
# test-snapshotter-containerd runs it: no device-mapper there, a second containerd after
# the first), the time from `ctr image import` of a two-layer image to a container's
# first output, RUNS times (default 3, `ctr image rm --sync` between), then
# snapshotter-latency's Prepare, Commit and Remove through containerd's snapshots API,
# ROUNDS rounds (default 10); then the same calls made to devmapper and thinproxy
# themselves, with no containerd in between (measures named direct-...): containerd's
# Remove only drops its own record, and the snapshotter's Remove is called later by its
# garbage collection, so a snapshotter's Remove is timed there alone. devmapper runs in
# snapshotter-latency's process on a pool of its own, thinproxy's agents are asked at
# their sockets, in the container. Writes
# snapshotters.tsv (SNAPSHOTTER MEASURE N MEDIAN_MS P90_MS MIN_MS MAX_MS) to
# $TP_RESULTS and prints it. A benchmark, not a test:
#   TP_BUILD=$PWD/build tests/vm/run bench/guest-snapshotters.sh
. "$TP_SRC/tests/vm/functions.sh"
. "$TP_SRC/tests/vm/container.sh"
. "$TP_SRC/tests/vm/containerd.sh"
requires containerd ctr runc containerd-shim-runc-v2 dmsetup mkfs.ext4 blockdev

runs=${1:-3} rounds=${2:-10}
latency=$TP_BUILD/bench/snapshotter-latency
[ -x "$latency" ] || fail "$latency is missing (make builds it with golang-go)"
image=thinproxy.test/layers:1
out=$TP_RESULTS/snapshotters.tsv
: >"$out"

devmapper_pool tp-bench-pool
containerd_container
containerd_start "$(devmapper_config tp-bench-pool)"
cleanup containerd_stop
oci_image "$ctrd_dir/image.tar" "$image"

ms() { echo $((($(date +%s%N) - $1) / 1000000)); }

# summary SNAPSHOTTER MEASURE MS...: one line of the table from RUNS samples.
summary() {
	local sn=$1 what=$2
	shift 2
	printf '%s\n' "$@" | sort -n | awk -v sn="$sn" -v what="$what" '
		{ v[NR] = $1 }
		END { printf "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", sn, what, NR, v[int(NR / 2) + 1],
			v[int(NR * 9 / 10) + (NR * 9 % 10 ? 1 : 0)], v[1], v[NR] }' >>"$out"
}

# measure SNAPSHOTTER: its import-to-first-output runs and its latency rounds, into $out.
measure() {
	local sn=$1 run start first times=()
	for ((run = 1; run <= runs; run++)); do
		step "$sn: import to first output, run $run of $runs"
		start=$(date +%s%N)
		ctrd image import --snapshotter "$sn" "$ctrd_dir/image.tar" >/dev/null
		first=$(ctrd run --rm --snapshotter "$sn" "$image" tp-bench echo first)
		[ "$first" = first ] || fail "$sn: the container printed '$first'"
		times+=("$(ms "$start")")
		ctrd image rm --sync "$image" >/dev/null
		[ -z "$(ctrd snapshots --snapshotter "$sn" ls | tail -n +2)" ] ||
			fail "$sn: snapshots left after ctr image rm --sync"
	done
	summary "$sn" import-to-first-output "${times[@]}"
	step "$sn: Prepare, Commit and Remove through containerd, $rounds rounds"
	in_container "$ctrd_container" "$latency" --snapshotter "$sn" --rounds "$rounds" |
		awk -v sn="$sn" '{ printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", sn, $1, $2, $3, $4, $5, $6 }' >>"$out"
}

# direct SNAPSHOTTER ARG...: snapshotter-latency ARG... (the rest of its command line,
# with no containerd in between), its measures named direct-..., into $out.
direct() {
	local sn=$1
	shift
	step "$sn: Prepare, Commit and Remove at the snapshotter itself, $rounds rounds"
	"$@" --rounds "$rounds" |
		awk -v sn="$sn" '{ printf "%s\tdirect-%s\t%s\t%s\t%s\t%s\t%s\n", sn, $1, $2, $3, $4, $5, $6 }' >>"$out"
}

measure overlayfs
measure devmapper
containerd_stop
# containerd's garbage collection removes whatever a snapshotter has that containerd
# does not know of: the direct rounds run with containerd stopped.
devmapper_pool tp-bench-direct
direct devmapper "$latency" --devmapper-pool tp-bench-direct --devmapper-root "$scratch/devmapper-direct" 2>>"$TP_RESULTS/devmapper-direct.log"

# thinproxy as a tenant runs it: the daemon on the guest, containerd and the agent in
# alice's container, which sees alice's directory and no device-mapper.
start_daemon
tp --admin tenant add alice >/dev/null
wait_for_socket "$run_dir/tenants/alice/nbd.sock"
# Two agents: "thinproxy" with its default layer size (10 GiB) and "thinproxy-64m" with
# devmapper's base_image_size above (64 MiB), the like-for-like of a parentless Prepare,
# whose file system is made at that size.
containerd_container alice
proxy_agent_start thinproxy "$TP_BUILD/thinproxy snapshotter --socket {socket}"
agents=$proxy_pid
cleanup "kill $proxy_pid"
proxy_agent_start thinproxy-64m "$TP_BUILD/thinproxy snapshotter --socket {socket} --size 64M"
agents+=" $proxy_pid"
cleanup "kill $proxy_pid"
containerd_start "$(proxy_plugin_config thinproxy)"$'\n'"$(proxy_plugin_config thinproxy-64m)"
measure thinproxy
measure thinproxy-64m
containerd_stop
for sn in thinproxy thinproxy-64m; do
	direct "$sn" in_container "$ctrd_container" "$latency" --address "/run/containerd/$sn.sock" --snapshotter "$sn"
done
kill $agents
for pid in $agents; do
	while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
done
stop_daemon

printf 'SNAPSHOTTER\tMEASURE\tN\tMEDIAN_MS\tP90_MS\tMIN_MS\tMAX_MS\n'
cat "$out"
