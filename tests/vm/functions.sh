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

# runnable_by_all PROGRAM: print the path of a copy of PROGRAM that any uid may run, in
# $scratch: a build under a directory of mode 0700 (a clone in root's home, or under
# mktemp -d) is out of reach of the unprivileged uids tests run programs as.
runnable_by_all() {
	install -m 0755 "$1" "$scratch/${1##*/}"
	echo "$scratch/${1##*/}"
}

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

# fd_flags FD: the open flags of the file FD (/proc/PID/fd/N), as its fdinfo says them,
# in octal with a leading 0 (so that $((...)) reads them right): & 3 is the access mode,
# >> 14 & 1 is O_DIRECT.
fd_flags() { echo "0$(sed -n 's/^flags:[[:space:]]*//p' "${1/\/fd\//\/fdinfo\/}")"; }

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
	# What the daemon said last, for a failure seen only in CI's output.
	if [ -s "${daemon_log-}" ]; then
		echo "--- the last lines of $daemon_log:" >&2
		tail -n 40 "$daemon_log" >&2
	fi
	exit 1
}

# step MESSAGE: narrate, with the seconds since the test began; keeps the guest log
# readable.
step() { echo "== [${SECONDS}s] $*"; }

# loopdev SIZE NAME: a sparse file in /run backed by a loop device; prints the device.
loopdev() {
	truncate -s "$1" "$scratch/$2.img"
	local dev
	dev=$(losetup --find --show "$scratch/$2.img")
	cleanup "losetup -d $dev"
	echo "$dev"
}

# wait_until SECONDS CMD...: run CMD every 50 ms until it succeeds (0), or until SECONDS
# have passed (1). SECONDS bounds a wait for a condition that never comes (the hang the
# test would otherwise be), never a timing; the caller says what it waited for.
wait_until() {
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS < end)) || return 1
		sleep 0.05
	done
}

# wait_for_socket PATH: until PATH is a socket, at most 60 s (for one that never comes).
wait_for_socket() { wait_until 60 test -S "$1" || fail "socket $1 never appeared"; }

# The daemon under test, with its state in /run (a tmpfs in the guest).
run_dir=/run/thinproxy
state_dir=$scratch/state
daemon_log=$scratch/daemon.log
daemon_pid=
: >"$daemon_log"

# nbdkit_flags: for a plugin built with SANITIZE=1, --nbdkit with a wrapper that loads
# the sanitizer runtimes before nbdkit (not sanitized itself) dlopens the plugin; its
# reports go to nbdkit's stderr, the daemon's log.
nbdkit_flags() {
	local plugin=$TP_BUILD/nbdkit-thinproxy-plugin.so wrapper=$scratch/nbdkit-sanitized libs
	[[ $TP_BUILD == */san ]] || return 0
	if [ ! -x "$wrapper" ]; then
		libs=$(ldd "$plugin" | awk '/lib(a|ub)san\.so/ { printf "%s ", $3 }')
		printf '#!/bin/sh\nLD_PRELOAD="%s" ASAN_OPTIONS=detect_leaks=0 exec nbdkit "$@"\n' \
			"${libs% }" >"$wrapper"
		chmod 0755 "$wrapper"
	fi
	echo "--nbdkit=$wrapper"
}

# start_daemon [FLAG...]: start thinproxyd in the foreground (in the background of the
# test) on the embedded loop pool, and wait until it is ready (at most 60 s, or
# daemon_start_polls times 50 ms: a daemon that never gets there). Every tenant's nbdkit
# runs all the time (--nbdkit-idle 0), as the tests that look at it expect, unless
# nbdkit_idle says otherwise (test-nbdkit-on-demand.sh).
start_daemon() {
	local i from
	from=$(($(wc -l <"$daemon_log" 2>/dev/null || echo 0) + 1))
	${daemon_wrapper-} "$TP_BUILD/thinproxyd" --foreground --state-dir "$state_dir" --run-dir "$run_dir" \
		--loop-size "${TP_TEST_LOOP_SIZE:-2G}" --plugin "$TP_BUILD/nbdkit-thinproxy-plugin.so" \
		$(nbdkit_flags) --nbdkit-idle "${nbdkit_idle:-0}" --log-level debug "$@" >>"$daemon_log" 2>&1 &
	daemon_pid=$!
	for ((i = 0; i < ${daemon_start_polls:-1200}; i++)); do
		tail -n "+$from" "$daemon_log" | grep -q ' ready: ' && return 0
		kill -0 "$daemon_pid" 2>/dev/null || break
		sleep 0.05
	done
	cat "$daemon_log" >&2
	fail "thinproxyd did not start"
}

# refuses_to_start PATTERN [FLAG...]: thinproxyd, started as start_daemon starts it, exits
# non-zero without becoming ready, with PATTERN (grep -E) in what it printed. A daemon
# that starts after all is stopped and fails the test, so nothing waits for it.
refuses_to_start() {
	local pattern=$1 pid out=$scratch/refused.log rc=0
	shift
	"$TP_BUILD/thinproxyd" --foreground --state-dir "$state_dir" --run-dir "$run_dir" \
		--loop-size "${TP_TEST_LOOP_SIZE:-2G}" --plugin "$TP_BUILD/nbdkit-thinproxy-plugin.so" \
		"$@" >"$out" 2>&1 &
	pid=$!
	while kill -0 $pid 2>/dev/null && ! grep -q ' ready: ' "$out"; do sleep 0.1; done
	if grep -q ' ready: ' "$out"; then
		kill $pid
		wait $pid || true
		fail "thinproxyd $* started: $(cat "$out")"
	fi
	wait $pid || rc=$?
	[ $rc != 0 ] || fail "thinproxyd $* exited 0: $(cat "$out")"
	grep -Eq -- "$pattern" "$out" || fail "thinproxyd $*: '$(cat "$out")' lacks '$pattern'"
}

# stop_daemon: SIGTERM and wait; fails the test if the daemon exits non-zero.
stop_daemon() {
	[ -n "$daemon_pid" ] || return 0
	kill -TERM "$daemon_pid" 2>/dev/null
	local rc=0
	wait "$daemon_pid" || rc=$?
	daemon_pid=
	[ $rc = 0 ] || { tail -20 "$daemon_log" >&2; fail "thinproxyd exited $rc"; }
}

# wait_daemon_dead: the daemon killed itself (fault injection); reap it.
wait_daemon_dead() {
	wait "$daemon_pid" 2>/dev/null || true
	daemon_pid=
}

# api SOCKET METHOD PATH [JSON]: one REST call. Sets $status and $body.
api() {
	local sock=$1 method=$2 path=$3 data=${4-} out
	local args=(-sS --max-time 60 --unix-socket "$sock" -X "$method" -o "$scratch/body" -w '%{http_code}')
	[ -n "$data" ] && args+=(-H 'Content-Type: application/json' --data-binary "$data")
	status=$(curl "${args[@]}" "http://localhost$path") || status=000
	body=$(cat "$scratch/body" 2>/dev/null || true)
}
admin_api() { api "$run_dir/admin.sock" "$@"; }
tenant_api() { local t=$1; shift; api "$run_dir/tenants/$t/control.sock" "$@"; }

# expect STATUS [CODE]: the last call answered STATUS (and error code CODE).
expect() {
	[ "$status" = "$1" ] || fail "expected HTTP $1${2:+ ($2)}, got $status: $body"
	if [ -n "${2-}" ]; then
		[ "$(jq -r .error.code <<<"$body")" = "$2" ] || fail "expected error $2, got: $body"
	fi
}

# tp ARG...: the client against the daemon under test.
tp() { "$TP_BUILD/thinproxy" --dir "$run_dir" "$@"; }

# fails STATUS PATTERN CMD...: CMD exits STATUS, with one stderr line matching PATTERN.
fails() {
	local want=$1 pattern=$2 rc=0
	shift 2
	"$@" 2>"$scratch/err" >/dev/null || rc=$?
	[ "$rc" = "$want" ] || fail "$* exited $rc, expected $want: $(cat "$scratch/err")"
	grep -Eq "$pattern" "$scratch/err" || fail "$*: stderr '$(cat "$scratch/err")' lacks '$pattern'"
	[ "$(wc -l <"$scratch/err")" = 1 ] || fail "$*: more than one error line"
}

# field EXPR: jq EXPR applied to the last body.
field() { jq -r "$1" <<<"$body"; }

# run_guide FILE RUN TOTAL: run the sh blocks of the guide FILE in order
# (tests/vm/guide.sh), print what they printed, and fail unless they all succeeded with
# RUN of its TOTAL blocks run (the others marked as skipped). Their output is left in
# $guide_out.
run_guide() {
	local rc=0
	guide_out=$TP_RESULTS/guide.out
	# Into a file, not a pipe: the daemon the guide starts keeps its stderr.
	"$TP_SRC/tests/vm/guide.sh" "$1" >"$guide_out" 2>&1 || rc=$?
	cat "$guide_out"
	[ "$rc" = 0 ] || fail "the guide failed (exit $rc)"
	grep -q "^== ${1##*/}: $2 of $3 blocks run" "$guide_out" || fail "not every block ran"
}
