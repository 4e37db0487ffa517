#!/usr/bin/env bash
# thinproxy's snapshotter passes containerd's snapshotter conformance suite, as root
# with real dm-thin and NBD: through containerd's own proxy client, each subtest against
# an agent of its own (`thinproxy snapshotter`) on a tenant of its own, since the suite
# runs its subtests in parallel with equal keys and a tenant's volume names are its
# keys. The agent uses the tenant's directory, as it does in a container.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/snapshotter.sh"
requires mkfs.ext4

"$TP_BUILD/thinproxy" snapshotter --help >/dev/null 2>&1 ||
	fail "thinproxy has no snapshotter command ('thinproxy snapshotter --help' fails)"
[ -x "$suite" ] || fail "$suite is not built (make builds it with golang-go)"

start_daemon

# agent ID SOCKET: the tenant suiteID, with room for the 128-layer subtest, and its
# agent; volumes of 256 MiB (ext4's journal is what a layer writes most of).
cat >"$scratch/agent" <<END
#!/bin/sh
set -e
"$TP_BUILD/thinproxy" --dir "$run_dir" --admin tenant add "suite\$1" --max-volumes 1000 --max-size 1T >/dev/null
exec "$TP_BUILD/thinproxy" --dir "$run_dir/tenants/suite\$1" snapshotter --socket "\$2" --size 268435456
END
chmod 0755 "$scratch/agent"

step "the suite against thinproxy snapshotter, an agent and a tenant per subtest"
run_suite "$scratch/agent {id} {socket}"

step "every subtest had its own tenant, and the daemon stayed up"
[ "$(tp --admin tenant ls --quiet | grep -c '^suite')" -ge 20 ] || fail "tenants: $(tp --admin tenant ls)"
stop_daemon
echo "$test_name: PASS"
