#!/usr/bin/env bash
# Memory pressure on an attached device: the tenant's nbdkit and the keeper run in the
# IO_FLUSHER state (so that writeback to /dev/nbdN never waits on the server it feeds),
# and a writer in a cgroup of 64 MiB that fills an ext4 on /dev/nbdN with four times
# that in dirty pages, no fsync until the end, finishes, over netlink and through the
# ioctl interface's relay, with the tenant's nbdkit itself limited to 32 MiB; its data
# reads back after a fresh mount. A writer that hangs fails the test after HANG_S with
# the kernel stacks of the writer, nbdkit and the keeper. A keeper started without
# CAP_SYS_RESOURCE logs that once and serves its device all the same. Also runs
# test-spawn, whose IO_FLUSHER tests need CAP_SYS_RESOURCE, which the host may lack.
. "$(dirname "$0")/functions.sh"
requires jq mkfs.ext4

limit_mib=64
data_mib=$((4 * limit_mib))
hang_s=${TP_TEST_HANG_S:-600}
io_flusher=$TP_BUILD/tests/vm/io-flusher
pattern=$TP_BUILD/tests/vm/pattern-file
cg=/sys/fs/cgroup/tp-writer
export THINPROXY_KEEPER_LOG=$TP_RESULTS/keeper.log

ta() { tp --admin --tenant alice "$@"; }
attached() { tp --json ls --attached | jq -r --arg d "$1" ".[] | select(.device == \$d) | $2"; }

step "spawn: a program started with io_flusher runs in the state, one without does not"
"$TP_BUILD/tests/test-spawn" >"$scratch/spawn.out" 2>&1 || { cat "$scratch/spawn.out"; fail "test-spawn"; }
! grep -q 'not tested' "$scratch/spawn.out" || fail "test-spawn skipped: $(cat "$scratch/spawn.out")"

start_daemon --nbdkit-memory-max 32M
tp --admin tenant add alice >/dev/null
ta create v --size 2G >/dev/null

# The writer's cgroup: memory.max, and no swap to escape to.
grep -qw memory /sys/fs/cgroup/cgroup.subtree_control ||
	echo +memory >/sys/fs/cgroup/cgroup.subtree_control
mkdir -p "$cg"
cleanup "rmdir $cg"
echo $((limit_mib << 20)) >"$cg/memory.max"
[ ! -e "$cg/memory.swap.max" ] || echo 0 >"$cg/memory.swap.max"

# stacks PID...: the kernel stack of every thread of each PID, for a hang.
stacks() {
	local p t
	for p in "$@"; do
		for t in /proc/"$p"/task/*; do
			echo "--- $p/${t##*/} ($(cat "$t/comm" 2>/dev/null)) $(cut -d' ' -f3 "$t/stat" 2>/dev/null)"
			cat "$t/stack" 2>/dev/null
		done
	done
}

# fill INTERFACE MIB: attach v through INTERFACE, check that its nbdkit and keeper are
# IO_FLUSHERs, write MIB MiB from the writer's cgroup onto a fresh ext4 on it, read it
# back after a fresh mount, and detach.
fill() {
	local interface=$1 mib=$2 dev nbdkit keeper writer i events max=0 dirty peak=0
	dev=$(THINPROXY_NBD_INTERFACE=$interface ta attach v)
	nbdkit=$(cat "$run_dir/tenants/alice/nbdkit.pid")
	keeper=$(attached "$dev" .keeper)
	[ "$(attached "$dev" .interface)" = "$interface" ] || fail "not $interface: $(tp --json ls --attached)"
	"$io_flusher" "$nbdkit" "$keeper" || fail "nbdkit $nbdkit or keeper $keeper is no IO_FLUSHER"
	! grep -q 'IO_FLUSHER' "$THINPROXY_KEEPER_LOG" || fail "keeper: $(grep IO_FLUSHER "$THINPROXY_KEEPER_LOG")"

	mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 "$dev" >"$scratch/mkfs.out" 2>&1 ||
		fail "mkfs.ext4 $dev: $(cat "$scratch/mkfs.out")"
	mkdir -p /tmp/v
	mount "$dev" /tmp/v
	sync
	echo 3 >/proc/sys/vm/drop_caches
	events=$(sed -n 's/^max //p' "$cg/memory.events")

	( echo "$BASHPID" >"$cg/cgroup.procs" && exec "$pattern" write /tmp/v/data "$mib" ) \
		>"$scratch/writer.out" 2>&1 &
	writer=$!
	for ((i = 0; i < hang_s * 5; i++)); do
		kill -0 "$writer" 2>/dev/null || break
		dirty=$(sed -n 's/^Dirty: *\([0-9]*\) kB/\1/p' /proc/meminfo)
		((dirty > peak)) && peak=$dirty
		sleep 0.2
	done
	if kill -0 "$writer" 2>/dev/null; then
		echo w >/proc/sysrq-trigger
		stacks "$writer" "$nbdkit" "$keeper" >&2
		fail "$interface: the writer did not finish $mib MiB within ${hang_s}s (stacks above)"
	fi
	wait "$writer" || fail "$interface: the writer failed: $(cat "$scratch/writer.out")"
	cat "$scratch/writer.out"
	max=$(sed -n 's/^max //p' "$cg/memory.events")
	echo "$interface: $mib MiB through a cgroup of $limit_mib MiB, which hit its limit" \
		"$((max - events)) times; the most dirty at once: $((peak / 1024)) MiB"
	((max > events)) || fail "$interface: the writer never reached its memory limit"
	[ "$(sed -n 's/^oom_kill //p' "$cg/memory.events")" = 0 ] || fail "the writer's cgroup OOM-killed"

	umount /tmp/v
	mount "$dev" /tmp/v
	"$pattern" check /tmp/v/data "$mib" || fail "$interface: the data differs after a fresh mount"
	umount /tmp/v
	tp detach "$dev"
}

step "netlink: $data_mib MiB of dirty pages from a writer in $limit_mib MiB"
fill netlink "$data_mib"

step "ioctl, through the relay: $data_mib MiB of dirty pages from a writer in $limit_mib MiB"
fill ioctl "$data_mib"

step "a keeper without CAP_SYS_RESOURCE says so once, and keeps its device"
from=$(wc -l <"$THINPROXY_KEEPER_LOG")
dev=$(setpriv --bounding-set -sys_resource "$TP_BUILD/thinproxy" --dir "$run_dir" --admin --tenant alice attach v)
keeper=$(attached "$dev" .keeper)
rc=0
"$io_flusher" "$keeper" >/dev/null || rc=$?
[ $rc = 1 ] || fail "io-flusher on keeper $keeper without CAP_SYS_RESOURCE exited $rc"
tail -n "+$((from + 1))" "$THINPROXY_KEEPER_LOG" >"$scratch/keeper.new"
[ "$(grep -c IO_FLUSHER "$scratch/keeper.new")" = 1 ] &&
	grep -q "${dev#/dev/}: cannot enter the IO_FLUSHER state: Operation not permitted (needs CAP_SYS_RESOURCE)" \
		"$scratch/keeper.new" || fail "keeper log: $(cat "$scratch/keeper.new")"
mount "$dev" /tmp/v
"$pattern" check /tmp/v/data "$data_mib" || fail "the data differs through a keeper without the state"
umount /tmp/v
tp detach "$dev"

stop_daemon
echo "$test_name: PASS"
