# Shared by the guest tests (tests/vm/test-*.sh); sourced, never run.
# Each test runs as root in a fresh guest booted by tests/vm/run: /run is an empty
# tmpfs, everything else writes into a throwaway overlay.

set -euo pipefail

: "${TP_SRC:?run guest tests through tests/vm/run}"
: "${TP_BUILD:?run guest tests through tests/vm/run}"
: "${TP_RESULTS:?run guest tests through tests/vm/run}"

# No udev in the guest: libdevmapper makes its own /dev/mapper nodes.
export DM_DISABLE_UDEV=1

test_name=$(basename "$0" .sh)
scratch=/run/$test_name
mkdir -p "$scratch"

_cleanups=()
# cleanup CMD...: run CMD when the test exits, in reverse order of registration.
cleanup() { _cleanups+=("$*"); }
_run_cleanups() {
	local rc=$? i
	set +e
	for ((i = ${#_cleanups[@]} - 1; i >= 0; i--)); do eval "${_cleanups[i]}" >/dev/null 2>&1; done
	exit $rc
}
trap _run_cleanups EXIT

# requires CMD...: skip-free check that the programs a test uses exist in the guest.
requires() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null || { echo "$test_name: FAIL: $c is missing in the guest"; exit 1; }
	done
}

# fail MESSAGE: end the test with a failure that names what was expected.
fail() {
	echo "$test_name: FAIL: $*" >&2
	exit 1
}

# step MESSAGE: narrate; keeps the guest log readable.
step() { echo "== $*"; }

# loopdev SIZE NAME: a sparse file in /run backed by a loop device; prints the device.
loopdev() {
	truncate -s "$1" "$scratch/$2.img"
	local dev
	dev=$(losetup --find --show "$scratch/$2.img")
	cleanup "losetup -d $dev"
	echo "$dev"
}

# wait_for_socket PATH: until PATH is a socket, at most 10 s.
wait_for_socket() {
	local i
	for ((i = 0; i < 200; i++)); do
		[ -S "$1" ] && return 0
		sleep 0.05
	done
	fail "socket $1 never appeared"
}
