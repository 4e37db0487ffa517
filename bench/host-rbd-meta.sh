#!/usr/bin/env bash
# bench/host-rbd-meta.sh DIR ROUNDS: the RBD pool's change protocol (issue 24) on this
# host: a one-node Ceph cluster of its own (tests/ceph/cluster.sh), and on it
# build/bench/bench-rbd-change, ROUNDS rounds of create, snapshot and remove by the bare
# librbd calls, by daemon/rbd-volumes.c and by daemon/rbd-change.c, taking turns. Writes
# rbd-meta.tsv (way, op, round, ms) and env-rbd-meta.txt to DIR; the cluster is stopped
# and removed at the end. Needs root. Not a test.
set -euo pipefail

out_dir=$(realpath -m "$1")
rounds=${2:-20}
src=$(realpath -e "$(dirname "$0")/..")
build=${TP_BUILD:-$src/build}
prog=$build/bench/bench-rbd-change
[ -x "$prog" ] || { echo "host-rbd-meta.sh: $prog is missing (make bench)" >&2; exit 1; }
mkdir -p "$out_dir"
cluster=$src/tests/ceph/cluster.sh
dir=$(mktemp -d /tmp/thinproxy-bench-rbd.XXXXXX)
trap '"$cluster" stop "$dir" && rm -rf "$dir"' EXIT

"$cluster" start "$dir" thinproxy
eval "$("$cluster" env "$dir")"
{
	echo "ceph: $(ceph --version | awk '{ print $3 }'), one mon, one mgr, one OSD (BlueStore on a sparse file in $(df --output=fstype "$dir" | tail -1)), pool size 1"
	echo "rounds: $rounds; 1 GiB images, layering, exclusive-lock, object-map, fast-diff, deep-flatten"
} >"$out_dir/env-rbd-meta.txt"
"$prog" "$rounds" >"$out_dir/rbd-meta.tsv"
echo "host-rbd-meta: $(wc -l <"$out_dir/rbd-meta.tsv") samples in $out_dir/rbd-meta.tsv"
