#!/usr/bin/env bash
# Revoking a grant takes it away: the grantee's open connections to the volume end (its
# nbdkit, the only holder of the fd the broker handed over, is restarted), new opens are
# refused, and its other volumes go on serving (an attached device reconnects). A write
# grant turned into a read grant takes the write fd away the same way; a revoke of a
# grant not in use disturbs nothing. Snapshots the grantee made of the volume are its
# own: the owner sees them by tenant in `info`, and they do not keep the owner from
# removing its volume.
. "$(dirname "$0")/../vm/functions.sh"
requires jq nbdinfo nbdcopy cmp
M=$((1 << 20))
export THINPROXY_KEEPER_LOG=$TP_RESULTS/keeper.log
cleanup "cp $daemon_log $TP_RESULTS/"

start_daemon
tp --admin tenant add alice >/dev/null
tp --admin tenant add bob >/dev/null
ta() { tp --admin --tenant alice "$@"; }
tb() { tp --admin --tenant bob "$@"; }
bsock=$run_dir/tenants/bob/nbd.sock
bob_nbdkit() { cat "$run_dir/tenants/bob/nbdkit.pid"; }
# bob_holds THIN_ID: whether a process of bob's nbdkit has thin device THIN_ID open.
bob_holds() {
	local devnum p f
	devnum=$(stat -Lc '%t:%T' "/dev/mapper/thinproxy-pool-$1" 2>/dev/null) || return 1
	for p in $(cat /sys/fs/cgroup/thinproxyd/tenant-bob/cgroup.procs); do
		for f in /proc/"$p"/fd/*; do
			[ -b "$f" ] && [ "$(stat -Lc '%t:%T' "$f")" = "$devnum" ] && return 0
		done
	done
	return 1
}

ta create base --size 16M >/dev/null
head -c $((16 * M)) /dev/urandom >"$scratch/base"
nbdcopy "$scratch/base" "nbd+unix:///base?socket=$run_dir/tenants/alice/nbd.sock"
base_id=$(ta --json info base | jq -r .thin_id)
tb create own --size 16M >/dev/null
head -c $((16 * M)) /dev/urandom >"$scratch/own"
nbdcopy "$scratch/own" "nbd+unix:///own?socket=$bsock"

step "a revoke of a grant bob does not use restarts nothing"
tp --admin grant base --owner alice --to bob >/dev/null
pid=$(bob_nbdkit)
tp --admin revoke base --owner alice --to bob >/dev/null
[ "$(bob_nbdkit)" = "$pid" ] || fail "bob's nbdkit restarted for a grant it did not use"

step "bob attaches alice/base (granted) and his own volume"
tp --admin grant base --owner alice --to bob >/dev/null
gdev=$(tb attach alice/base --readonly)
odev=$(tb attach own)
cmp -n $((16 * M)) "$scratch/base" "$gdev" || fail "alice/base reads wrong through bob"
bob_holds "$base_id" || fail "bob's nbdkit does not hold alice/base"
pid=$(bob_nbdkit)

step "revoke: bob's connections to alice/base end, new ones are refused"
tp --admin revoke base --owner alice --to bob >/dev/null
grep -q "tenant bob: connections to revoked volume base ended" "$daemon_log" ||
	fail "the revoke ended nothing"
[ "$(bob_nbdkit)" != "$pid" ] || fail "bob's nbdkit was not restarted"
bob_holds "$base_id" && fail "a process of bob's nbdkit still holds alice/base"
nbdinfo --size "nbd+unix:///alice/base?socket=$bsock" >/dev/null 2>&1 &&
	fail "bob opened alice/base after the revoke"
fails 1 'no such volume' tb snapshot again --from alice/base

step "bob's own volume goes on serving (its device reconnected)"
cmp -n $((16 * M)) "$scratch/own" "$odev" || fail "bob's own device lost its data"
head -c $M /dev/urandom >"$scratch/new"
dd if="$scratch/new" of="$odev" bs=1M oflag=direct status=none || fail "bob cannot write his own device"
tb detach "$odev"
tb detach "$gdev" || true
bob_holds "$base_id" && fail "bob still holds alice/base after the detach"

step "a write grant turned read-only takes the write fd away"
tp --admin grant base --owner alice --to bob --write >/dev/null
wdev=$(tb attach alice/base)
bob_holds "$base_id" || fail "bob's nbdkit does not hold alice/base read-write"
tp --admin grant base --owner alice --to bob >/dev/null
bob_holds "$base_id" && fail "bob's nbdkit kept its fd after the grant became read-only"
tb detach "$wdev" || true
tp --admin revoke base --owner alice --to bob >/dev/null

step "bob's snapshot of alice/base: shown to alice by tenant, and it does not pin base"
tp --admin grant base --owner alice --to bob >/dev/null
tb snapshot mine --from alice/base >/dev/null
ta snapshot hers --from base >/dev/null
ta --json info base | jq -ce .snapshots >"$scratch/snaps"
[ "$(cat "$scratch/snaps")" = '{"alice":1,"bob":1}' ] || fail "snapshots of base: $(cat "$scratch/snaps")"
ta info base | grep -Eq '^snapshots: +alice 1, bob 1$' || fail "info: $(ta info base)"
fails 1 'parent of 1 snapshot' ta rm base
ta rm hers
ta rm base
[ "$(tb --json info mine | jq -r .parent)" = null ] || fail "mine still names a parent"
nbdcopy "nbd+unix:///mine?socket=$bsock" "$scratch/mine"
cmp "$scratch/base" "$scratch/mine" || fail "bob's snapshot lost its data with alice's base"
stop_daemon
echo "$test_name: PASS"
