# Shared by the Ceph tests (tests/ceph/test-*.sh); sourced, never run. Each test runs as
# root on the host, on a one-node cluster of its own (tests/ceph/cluster.sh).
set -euo pipefail

test_name=$(basename "$0" .sh)
cluster=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/cluster.sh
pool=thinproxy

# fail MESSAGE: end the test with a failure that names what was expected.
fail() {
	echo "$test_name: FAIL: $*" >&2
	exit 1
}
[ "$(id -u)" = 0 ] || fail "must run as root"

# test_program [PATH]: the test's program, PATH if given, else $TP_BUILD/tests/ceph/NAME
# for test NAME.
test_program() { realpath -e "${1:-${TP_BUILD:-build}/tests/ceph/$test_name}"; }

# run_program [NAME=VALUE...]: the test's program, $bin, with NAME=VALUE added to its
# environment; its failure fails the test, else the PASS line says how long it took.
run_program() {
	local t0=$SECONDS
	env "$@" "$bin" || fail "$(basename "$bin") failed"
	echo "PASS $test_name (tests $((SECONDS - t0)) s, total $SECONDS s)"
}

# start_cluster: the test's cluster in a new directory $dir, with the RBD pool $pool;
# CEPH_CONF, CEPH_TEST_DIR and CEPH_TEST_POOL name it. When the test exits, however it
# exits, the cluster is stopped and $dir removed (or kept, and said so, if its daemons
# could not be stopped).
start_cluster() {
	dir=$(mktemp -d "/tmp/thinproxy-$test_name.XXXXXX")
	trap stop_cluster EXIT
	trap 'exit 130' INT TERM
	"$cluster" start "$dir" "$pool" || fail "cluster.sh start"
	eval "$("$cluster" env "$dir")"
}
stop_cluster() {
	if "$cluster" stop "$dir"; then
		rm -rf "$dir"
	else
		echo "$test_name: could not stop the cluster in $dir; left it there" >&2
	fi
}

# tenant_key CLIENT OSDCAP: the key of CLIENT (client.ID) with caps mon 'profile rbd' and
# osd OSDCAP, alone in $dir/CLIENT.keyring, mode 0600 (bounded: a cluster that does not
# answer must not hang the test).
tenant_key() {
	(umask 077 && timeout 60 ceph auth get-or-create "$1" mon 'profile rbd' osd "$2" \
		-o "$dir/$1.keyring")
	[ "$(stat -c %a "$dir/$1.keyring")" = 600 ] || fail "$1.keyring not 0600"
	grep -q "$1" "$dir/$1.keyring" || fail "$1.keyring has no key"
}
