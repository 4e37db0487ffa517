#!/usr/bin/env bash
# Tenants in containers: each sees only its own directory at /run/thinproxy and no
# device-mapper, and attaches its volumes as kernel NBD devices from inside (through the
# ioctl interface: the nbd netlink family is out of sight in a network namespace of its
# own). Layers: a volume, formatted, filled, committed; a snapshot of it sees the
# parent's files, changes them, and the parent stays as it was. A second tenant cannot
# list, attach or snapshot the first one's volumes: attaching one fails exactly like a
# name that does not exist.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/container.sh"
requires unshare nsenter mkfs.ext4 jq md5sum

# The keepers' log lands with the results, for a look after a failure.
export THINPROXY_KEEPER_LOG=$TP_RESULTS/keeper.log

start_daemon
tp --admin tenant add alice >/dev/null
tp --admin tenant add bob >/dev/null
container_start alice
alice=$container_pid
container_start bob
bob=$container_pid
# As each tenant, inside its container, with the defaults a tenant has.
ta() { in_container "$alice" "$TP_BUILD/thinproxy" "$@"; }
tb() { in_container "$bob" "$TP_BUILD/thinproxy" "$@"; }
ina() { in_container "$alice" sh -ec "$1"; }

step "a container sees its tenant's directory and no device-mapper"
ina '[ -S /run/thinproxy/control.sock ] && [ -S /run/thinproxy/nbd.sock ] &&
	[ ! -e /run/thinproxy/admin.sock ] && [ ! -e /run/thinproxy/tenants ] &&
	[ ! -e /dev/mapper/control ] && [ "$(hostname)" = alice ]' ||
	fail "alice's container sees more than its own: $(in_container "$alice" ls /run/thinproxy /dev/mapper)"

step "alice: a 1 GiB volume, attached, formatted, filled"
ta create base --size 1G >/dev/null
dev=$(ta attach base)
[ -b "$dev" ] || fail "attach printed '$dev'"
[ "$(ta --json ls --attached | jq -r --arg d "$dev" '.[] | select(.device == $d) | .interface')" = ioctl ] ||
	fail "not attached through the ioctl interface: $(ta --json ls --attached)"
ta ls --attached | grep -Eq "^$dev +base +- +1G +rw +[0-9]+$" || fail "ls --attached: $(ta ls --attached)"
ina "mkfs.ext4 -q $dev && mkdir -p /tmp/alice && mount $dev /tmp/alice &&
	echo parent >/tmp/alice/a && mkdir /tmp/alice/d && head -c 4M /dev/urandom >/tmp/alice/d/blob &&
	(cd /tmp/alice/d && md5sum blob >/tmp/alice/sum) && umount /tmp/alice"
fails 1 'rm base: busy' ta rm base

step "alice: commit, a snapshot attached, the parent's files seen and changed"
ta detach "$dev"
ta commit base >/dev/null
ta snapshot child --from base >/dev/null
cdev=$(ta attach child)
ina "mount $cdev /tmp/alice && grep -qx parent /tmp/alice/a && (cd /tmp/alice/d && md5sum -c --quiet ../sum) &&
	echo child >/tmp/alice/a && rm /tmp/alice/d/blob && echo new >/tmp/alice/b && umount /tmp/alice"

step "alice: the parent is unchanged, and read-only"
pdev=$(ta attach base)
[ "$(ta --json ls --attached | jq -r --arg d "$pdev" '.[] | select(.device == $d) | .read_only')" = true ] ||
	fail "the committed parent is not read-only: $(ta --json ls --attached)"
ina "mkdir -p /tmp/parent && mount -o ro $pdev /tmp/parent && grep -qx parent /tmp/parent/a &&
	(cd /tmp/parent/d && md5sum -c --quiet ../sum) && [ ! -e /tmp/parent/b ] && umount /tmp/parent" ||
	fail "the parent changed"
ina "mount $cdev /tmp/alice && grep -qx child /tmp/alice/a && [ ! -e /tmp/alice/d/blob ] && umount /tmp/alice" ||
	fail "the snapshot lost its changes"

step "alice: --readonly refuses writes"
rdev=$(ta attach child --readonly)
if in_container "$alice" dd if=/dev/zero of="$rdev" bs=4k count=1 oflag=direct 2>"$scratch/dd.err"; then
	fail "a write to the read-only $rdev succeeded"
fi
grep -Eq 'Read-only file system|Operation not permitted' "$scratch/dd.err" || fail "dd: $(cat "$scratch/dd.err")"
ta detach "$rdev"

step "bob cannot list, attach or snapshot alice's volumes"
[ -z "$(tb ls --quiet)" ] || fail "bob sees: $(tb ls --quiet)"
tb attach base 2>"$scratch/theirs" >/dev/null && fail "bob attached alice's base"
tb attach nope 2>"$scratch/missing" >/dev/null && fail "bob attached nope"
[ "$(sed 's/base/NAME/g' "$scratch/theirs")" = "$(sed 's/nope/NAME/g' "$scratch/missing")" ] ||
	fail "alice's volume fails unlike a missing one: '$(cat "$scratch/theirs")' vs '$(cat "$scratch/missing")'"
fails 1 'attach alice/base: no such volume: alice/base' tb attach alice/base
fails 1 'no such volume' tb snapshot mine --from alice/base
fails 1 'no such volume' tb snapshot mine --from base
[ -z "$(tb ls --attached --quiet | grep -v -e "$cdev" -e "$pdev")" ] || fail "bob attached something"

step "detach all"
ta detach "$cdev"
ta detach "$pdev"
[ -z "$(ta ls --attached --quiet)" ] || fail "still attached: $(ta ls --attached)"
fails 1 'not attached' ta detach "$cdev"
[ -z "$(ls /run/thinproxy-client)" ] || fail "records left: $(ls /run/thinproxy-client)"
grep -q 'detached' "$THINPROXY_KEEPER_LOG" || fail "keepers logged nothing"
stop_daemon
echo "$test_name: PASS"
