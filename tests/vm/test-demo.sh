#!/usr/bin/env bash
# make demo works: demo/demo.sh plays the whole story to the end (the snapshot sees the
# parent's file, the committed origin refuses writes, bob cannot reach alice's volume,
# the pool is shown; containerd in alice's container imports and runs an image on thin
# snapshots through thinproxy snapshotter, the layers are her volumes until the image is
# removed), and leaves nothing behind: no daemon, nbdkit, keeper, containerd or container,
# no connected NBD device, no device-mapper device, no loop device, no work directory.
# It runs from a copy in a directory of mode 0700, as a clone in root's home or under
# mktemp -d is, where no tenant's nbdkit uid may read the plugin. Then the same after an
# interrupt (SIGINT, as Ctrl-C sends it) with a file system mounted in alice's container.
. "$(dirname "$0")/functions.sh"
requires perl nbdinfo jq dmsetup losetup pgrep
demo=$TP_SRC/demo/demo.sh
out=$TP_RESULTS/demo.out

# nothing_left: everything the demo made is gone.
nothing_left() {
	local i f
	for ((i = 0; i < 300; i++)); do
		[ -z "$(losetup -a)" ] && break
		sleep 0.1
	done
	[ -z "$(losetup -a)" ] || fail "loop devices left: $(losetup -a)"
	[ -z "$(dmsetup ls | grep thinproxy-demo)" ] || fail "dm devices left: $(dmsetup ls)"
	for f in /sys/block/nbd*/pid; do
		[ -e "$f" ] && fail "$(dirname "$f") is still connected"
	done
	pgrep -x thinproxyd >/dev/null && fail "thinproxyd still runs"
	pgrep -x nbdkit >/dev/null && fail "an nbdkit still runs"
	pgrep -f '^tpkeep' >/dev/null && fail "a keeper still runs: $(pgrep -af '^tpkeep')"
	pgrep -x containerd >/dev/null && fail "containerd still runs"
	pgrep -f '^thinproxy snapshotter' >/dev/null && fail "a snapshotter still runs"
	pgrep -f '^sleep infinity' >/dev/null && fail "a container still runs"
	compgen -G '/tmp/thinproxy-demo.*' >/dev/null && fail "work directory left: $(ls -d /tmp/thinproxy-demo.*)"
	return 0
}

# has PATTERN: the demo's last output has a line matching PATTERN (extended regex).
has() { grep -Eq "$1" "$out" || fail "the demo's output lacks '$1'"; }

step "the whole demo, from a copy of the demo and the build in a directory of mode 0700"
clone=$(mktemp -d)
cleanup "rm -rf $clone"
mkdir "$clone/demo" "$clone/build"
cp "$demo" "$TP_SRC/demo/oci-image" "$clone/demo/"
cp "$TP_BUILD"/{thinproxyd,thinproxyd-api,thinproxy,nbdkit-thinproxy-plugin.so} "$clone/build/"
rc=0
TP_BUILD=$clone/build "$clone/demo/demo.sh" >"$out" 2>&1 || rc=$?
cat "$out"
[ "$rc" = 0 ] || fail "demo/demo.sh exited $rc"
grep -q '^This kernel' "$out" && fail "the demo thought the guest's kernel lacked dm-thin or nbd"
has '^\[alice\]# thinproxy attach base'
has '^/dev/nbd[0-9]+ +974M'
grep -A1 'cat /mnt/hello.txt' "$out" | grep -qx 'hello from alice' || fail "the snapshot did not show alice's file"
has "^dd: error writing '/dev/nbd[0-9]+': (Operation not permitted|Read-only file system)"
[ "$(grep -c '^\["base","work"\]$' "$out")" = 1 ] || fail "alice's nbdkit does not export base and work"
[ "$(grep -c '^\[\]$' "$out")" = 1 ] || fail "bob's nbdkit exports something"
has '^thinproxy: attach base: no such volume: base$'
has '^thinproxy: attach alice/base: no such volume: alice/base$'
has '^data: +[0-9.]+M of 2G used'
has '^io\.containerd\.snapshotter\.v1 +thinproxy +.* ok *$'
# between: the lines of $out from the first matching ERE $1 to the next matching $2.
between() { sed -En "\%$1%,\%$2%p" "$out"; }
layers=$(between '^\[alice\]# thinproxy ls$' '^\[alice\]# ctr run' | grep -Ec '^c[0-9a-f]{62}\b' || true)
[ "$layers" = 2 ] || fail "after ctr image import alice has $layers layer volumes, expected 2"
first=$(grep -A5 -F "first sh -c" "$out" | tail -n 5)
grep -Eq '^/dev/nbd[0-9]+ ' <<<"$first" || fail "the container's root is not on an NBD device: $first"
[ "$(tail -n 4 <<<"$first")" = "$(printf 'changed\nadded\nls: /removed: No such file or directory\nscribbled')" ] ||
	fail "the first container printed: $first"
[ "$(grep -A1 -F " second cat /changed" "$out" | tail -n 1)" = changed ] ||
	fail "the second container did not see the image as it was"
left=$(between 'ctr image rm --sync' '^Cleaning up' | grep -Ec '^c[0-9a-f]{62}\b' || true)
[ "$left" = 0 ] || fail "$left layer volumes left after ctr image rm --sync"
has 'Done: nothing of the demo is left'
nothing_left

step "an interrupt with alice's file system mounted"
perl -e '$SIG{INT} = "DEFAULT"; exec @ARGV or die "exec: $!"' "$demo" >"$out" 2>&1 &
pid=$!
for ((i = 0; i < 1200; i++)); do
	grep -q '^/dev/nbd[0-9]* .*/mnt$' "$out" && break
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
grep -q '^/dev/nbd[0-9]* .*/mnt$' "$out" || { cat "$out"; fail "the demo never mounted alice's file system"; }
grep -q ' /mnt ' /proc/mounts && fail "alice's mount leaked out of her container"
kill -INT "$pid"
rc=0
wait "$pid" || rc=$?
cat "$out"
[ "$rc" = 130 ] || fail "the interrupted demo exited $rc, expected 130"
has '^demo: stopped \(status 130\); cleaned up$'
nothing_left
echo "$test_name: PASS"
