#!/usr/bin/env bash
# The conformance harness (tests/snapshotter) is sound in the guest: containerd's
# snapshotter suite, through containerd's proxy client and one agent process per subtest,
# passes containerd's own overlayfs snapshotter served over gRPC (reference-snapshotter).
# A failure of test-snapshotter-conformance is then thinproxy's, not the harness's.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/snapshotter.sh"

step "the suite against containerd's overlayfs snapshotter, an agent per subtest"
ref=$TP_BUILD/tests/snapshotter/reference-snapshotter
[ -x "$ref" ] || fail "$ref is not built (make builds it with golang-go)"
run_suite "$ref --type overlayfs --root {root} --socket {socket}"
echo "$test_name: PASS"
