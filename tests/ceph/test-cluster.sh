#!/usr/bin/env bash
# tests/ceph/cluster.sh brings up a usable one-node cluster, and cephx namespace caps
# isolate tenants: the fact thinproxy's RBD backend (issue 24) builds its ownership on.
#
# Run by `make check` and `make check-ceph`.
# Run as root: tests/ceph/test-cluster.sh
#
#   - bootstrap time (printed) and the daemons' RSS
#   - client.tenant-a, caps `profile rbd pool=P namespace=A`: lists, opens, writes, reads
#     back, snapshots, protects and clones (format 2) in A
#   - the same key on namespace B, or on the pool's default namespace: ls, info, open
#     (export), import, clone into B, and raw librados (rados ls/stat) fail with EPERM
#   - client.ro-a, `profile rbd-read-only pool=P namespace=A`: reads A, cannot write
. "$(dirname "$0")/functions.sh"

ok() { echo "ok - $*"; }

t0=$(date +%s.%N)
start_cluster
t1=$(date +%s.%N)
boot=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
echo "bootstrap: $boot s"
[ "$CEPH_CONF" = "$dir/ceph.conf" ] || fail "cluster.sh env: CEPH_CONF=$CEPH_CONF"

ceph -s >/dev/null || fail "ceph -s as admin"
rss() {
	local pidf pid out=
	for pidf in "$dir"/run/*.pid; do
		pid=$(<"$pidf")
		out+=" $(basename "$pidf" .pid) $(($(awk '/^VmRSS/ {print $2}' "/proc/$pid/status") / 1024)) MiB"
	done
	echo "rss $1:$out"
}
rss "after bootstrap"
[ -z "$(ls /etc/ceph/*.conf /etc/ceph/*.keyring 2>/dev/null)" ] || fail "files under /etc/ceph"

# bounded: a client that cannot reach the cluster must not hang the test
adm() { timeout 60 rbd "$@"; }
as() { # as ID cmd args...: rbd or rados as client.ID with only its own keyring
	local id=$1 cmd=$2
	shift 2
	timeout 60 "$cmd" --id "$id" --keyring "$dir/client.$id.keyring" "$@"
}
expect_eperm() { # expect_eperm WHAT ID cmd args...
	local what=$1 out
	shift
	if out=$(as "$@" 2>&1); then
		fail "$what succeeded: $out"
	fi
	grep -q 'Operation not permitted' <<<"$out" || fail "$what: not EPERM: $out"
	ok "$what: EPERM"
}

# namespaces A and B, one image in each, made by the admin
for ns in A B; do
	adm namespace create "$pool/$ns"
	adm create --size 64M "$pool/$ns/img"
done
[ "$(adm namespace ls --format json "$pool")" = '[{"name":"A"},{"name":"B"}]' ] ||
	fail "namespace ls: $(adm namespace ls --format json "$pool")"

# tenant keys, each in a file of its own, mode 0600
tenant_key client.tenant-a "profile rbd pool=$pool namespace=A"
tenant_key client.tenant-b "profile rbd pool=$pool namespace=B"
tenant_key client.ro-a "profile rbd-read-only pool=$pool namespace=A"
ok "keys: tenant-a, tenant-b, ro-a"

# tenant-a in its own namespace: list, open, write, read back
[ "$(as tenant-a rbd ls "$pool/A")" = img ] || fail "tenant-a ls A"
as tenant-a rbd info "$pool/A/img" >/dev/null || fail "tenant-a info A/img"
as tenant-a rbd bench --io-type write --io-size 64K --io-total 4M "$pool/A/img" >/dev/null ||
	fail "tenant-a bench write A/img"
head -c $((4 << 20)) /dev/urandom >"$dir/data"
as tenant-a rbd import --no-progress "$dir/data" "$pool/A/data" >/dev/null || fail "tenant-a import"
as tenant-a rbd export --no-progress "$pool/A/data" "$dir/data.back" >/dev/null || fail "tenant-a export"
cmp "$dir/data" "$dir/data.back" || fail "tenant-a: exported data differs"
ok "tenant-a: ls, info, write (bench), import and export 4 MiB in A, same bytes"

# clone format 2, within A, by the tenant's own key
as tenant-a rbd snap create --no-progress "$pool/A/data@s1" || fail "snap create"
as tenant-a rbd snap protect "$pool/A/data@s1" || fail "snap protect"
as tenant-a rbd clone "$pool/A/data@s1" "$pool/A/child" || fail "clone"
info=$(as tenant-a rbd info "$pool/A/child") || fail "info A/child"
grep -q "parent: $pool/A/data@s1" <<<"$info" || fail "child's parent: $info"
grep -q 'op_features:.*clone-child' <<<"$info" || fail "not a format 2 clone: $info"
[ "$(as tenant-a rbd children "$pool/A/data@s1")" = "$pool/A/child" ] || fail "rbd children"
as tenant-a rbd export --no-progress "$pool/A/child" "$dir/child" >/dev/null || fail "export child"
cmp "$dir/data" "$dir/child" || fail "clone's data differs from its parent's"
ok "tenant-a: snapshot, protect, clone (format 2, clone-child) in A; the clone reads its parent's bytes"

# tenant-a outside A
expect_eperm "tenant-a ls B" tenant-a rbd ls "$pool/B"
expect_eperm "tenant-a info B/img" tenant-a rbd info "$pool/B/img"
expect_eperm "tenant-a open (export) B/img" tenant-a rbd export --no-progress "$pool/B/img" "$dir/stolen"
expect_eperm "tenant-a import into B" tenant-a rbd import --no-progress "$dir/data" "$pool/B/new"
expect_eperm "tenant-a clone A's snapshot into B" tenant-a rbd clone "$pool/A/data@s1" "$pool/B/c"
expect_eperm "tenant-a ls default namespace" tenant-a rbd ls "$pool"
# below librbd: the tenant's own librados, straight at B's objects
bid=$(adm info "$pool/B/img" | sed -n 's/.*block_name_prefix: rbd_data\.//p')
[ -n "$bid" ] || fail "no id for B/img"
expect_eperm "tenant-a rados ls in B" tenant-a rados -p "$pool" -N B ls
expect_eperm "tenant-a rados stat B's header" tenant-a rados -p "$pool" -N B stat "rbd_header.$bid"
expect_eperm "tenant-a rados put in B" tenant-a rados -p "$pool" -N B put x "$dir/data"
[ "$(as tenant-b rbd ls "$pool/B")" = img ] || fail "tenant-b ls B"
expect_eperm "tenant-b ls A" tenant-b rbd ls "$pool/A"
[ "$(adm ls "$pool/B")" = img ] || fail "B changed: $(adm ls "$pool/B")"

# read-only key on A: reads, cannot write
[ "$(as ro-a rbd ls "$pool/A" | sort | tr '\n' ' ')" = "child data img " ] || fail "ro-a ls A"
as ro-a rbd export --no-progress "$pool/A/data" "$dir/data.ro" >/dev/null || fail "ro-a export"
cmp "$dir/data" "$dir/data.ro" || fail "ro-a: exported data differs"
expect_eperm "ro-a write (bench) A/img" ro-a rbd bench --io-type write --io-size 64K --io-total 1M "$pool/A/img"
expect_eperm "ro-a import into A" ro-a rbd import --no-progress "$dir/data" "$pool/A/new"
expect_eperm "ro-a snap create" ro-a rbd snap create --no-progress "$pool/A/img@s"
expect_eperm "ro-a rados put in A" ro-a rados -p "$pool" -N A put x "$dir/data"
expect_eperm "ro-a ls B" ro-a rbd ls "$pool/B"
ok "ro-a: reads A, writes nothing"

rss "at the end"
echo "PASS test-cluster (bootstrap $boot s, total $SECONDS s)"
