#!/usr/bin/env bash
# Proves daemon/pool.c against the guest kernel's dm-thin: the Check program
# tests/vm/test-pool.c makes its own pools on loop devices under /run, one per test.
# All of it runs with DM_DISABLE_UDEV=1 (as every guest test does); the tests that make
# and remove device nodes run again without it, where libdevmapper has to notice by
# itself that no udev is running.
. "$(dirname "$0")/functions.sh"
requires dmsetup losetup truncate

prog=$TP_BUILD/tests/vm/test-pool
[ -x "$prog" ] || fail "$prog is missing (make $prog)"

step "pool tests, DM_DISABLE_UDEV=1"
"$prog" || fail "pool tests failed"

step "thin device tests, DM_DISABLE_UDEV unset"
(unset DM_DISABLE_UDEV && CK_RUN_CASE=thin exec "$prog") || fail "thin device tests failed without DM_DISABLE_UDEV"
echo "$test_name: PASS"
