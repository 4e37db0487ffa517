# Sourced by guest tests after functions.sh, never run: containerd's snapshotter
# conformance suite (tests/snapshotter, built by make) in the guest.

suite=$TP_BUILD/tests/snapshotter/conformance.test

# run_suite COMMAND: run the whole suite against COMMAND (TP_SNAPSHOTTER_CMD: {root},
# {socket} and {id} replaced, one agent per subtest), print its verbose output and a
# count, and fail unless every subtest passed or was skipped by the suite itself. The
# subtests' directories are on /run, a tmpfs (overlayfs cannot stack on the guest's
# overlay root); each agent's output is kept with the results, agents/ID.log. Go's own
# timeout (TP_TEST_SUITE_TIMEOUT, default 780 s) ends a hung suite with a stack dump of
# the subtests that hung, before the guest's.
run_suite() {
	local out=$TP_RESULTS/suite.log rc=0 passed failed skipped
	[ -x "$suite" ] || fail "$suite is not built (make builds it with golang-go)"
	mkdir -p "$scratch/tmp" "$TP_RESULTS/agents"
	TMPDIR=$scratch/tmp TP_SNAPSHOTTER_CMD=$1 TP_SNAPSHOTTER_LOGS=$TP_RESULTS/agents \
		"$suite" -test.v -test.timeout "${TP_TEST_SUITE_TIMEOUT:-780}s" >"$out" 2>&1 || rc=$?
	cat "$out"
	passed=$(grep -c -- '^    --- PASS' "$out") || true
	failed=$(grep -c -- '^    --- FAIL' "$out") || true
	skipped=$(grep -c -- '^    --- SKIP' "$out") || true
	echo "conformance: $passed passed, $failed failed, $skipped skipped (exit $rc)"
	[ "$rc" = 0 ] && [ "$failed" = 0 ] && [ "$passed" -gt 0 ] || fail "the conformance suite failed"
	! grep -q " $scratch/tmp/" /proc/mounts || fail "mounts left: $(grep " $scratch/tmp/" /proc/mounts)"
}
