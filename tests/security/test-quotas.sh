#!/usr/bin/env bash
# A tenant that exhausts its quotas gets 507 quota_exceeded and changes nothing: the
# volume count (create and snapshot), the total virtual size (create, snapshot with a
# larger size, resize) and the bytes its volumes map in the pool (once its writes have
# mapped max_used, it may create nothing more). Each refusal leaves the pool's
# transaction id and volume count as they were, and bob, next to it, still creates,
# writes and reads as before.
. "$(dirname "$0")/../vm/functions.sh"
requires curl jq nbdcopy cmp
cleanup "cp $daemon_log $TP_RESULTS/"

M=$((1 << 20))
start_daemon
admin_api POST /v1/tenants "{\"name\":\"alice\",\"uid\":1000,\"gid\":1000,\"max_volumes\":3,\"max_size\":$((64 * M)),\"max_used\":$((8 * M))}"
expect 201
admin_api POST /v1/tenants '{"name":"bob","uid":1001,"gid":1001}'
expect 201
alice_uri() { echo "nbd+unix:///$1?socket=$run_dir/tenants/alice/nbd.sock"; }
bob_uri="nbd+unix:///b?socket=$run_dir/tenants/bob/nbd.sock"
tenant_api bob POST /v1/volumes "{\"name\":\"b\",\"size\":$((8 * M))}"
expect 201
head -c $((8 * M)) /dev/urandom >"$scratch/b.in"
nbdcopy --flush "$scratch/b.in" "$bob_uri"

pool_now() {
	admin_api GET /v1/pool
	expect 200
	field '[.transaction_id, .volumes] | @tsv'
}
# refused_507 METHOD PATH [JSON]: alice's request answers 507 quota_exceeded and leaves
# the pool as it was.
refused_507() {
	local before
	before=$(pool_now)
	tenant_api alice "$@"
	expect 507 quota_exceeded
	echo "  $1 $2: 507: $(field .error.message)"
	[ "$(pool_now)" = "$before" ] || fail "$1 $2 changed the pool: $(pool_now) (before: $before)"
}
# bob_unaffected I: bob creates and removes a volume and reads his data.
bob_unaffected() {
	tenant_api bob POST /v1/volumes "{\"name\":\"t$1\",\"size\":$((4 * M))}"
	expect 201
	tenant_api bob DELETE "/v1/volumes/t$1"
	expect 204
	nbdcopy "$bob_uri" "$scratch/b.out"
	cmp "$scratch/b.in" "$scratch/b.out" || fail "bob's data changed"
}

step "virtual size: 64 MiB in all"
tenant_api alice POST /v1/volumes "{\"name\":\"v1\",\"size\":$((48 * M))}"
expect 201
refused_507 POST /v1/volumes "{\"name\":\"v2\",\"size\":$((32 * M))}"
refused_507 POST /v1/volumes/v1/resize "{\"size\":$((80 * M))}"
refused_507 POST /v1/volumes "{\"name\":\"s1\",\"parent\":\"v1\"}"
tenant_api alice POST /v1/volumes "{\"name\":\"v2\",\"size\":$((8 * M))}"
expect 201
bob_unaffected 1

step "volume count: 3 volumes"
tenant_api alice POST /v1/volumes/v2/commit
expect 200
tenant_api alice POST /v1/volumes '{"name":"v3","size":65536}'
expect 201
refused_507 POST /v1/volumes '{"name":"v4","size":65536}'
refused_507 POST /v1/volumes '{"name":"s2","parent":"v2"}'
tenant_api alice DELETE /v1/volumes/v3
expect 204
bob_unaffected 2

step "used bytes: once alice's volumes map 8 MiB, she may create nothing more"
head -c $((12 * M)) /dev/urandom >"$scratch/a.in"
nbdcopy --flush "$scratch/a.in" "$(alice_uri v1)"
for ((i = 0; i < 600; i++)); do
	tenant_api alice GET /v1/usage
	(($(field .used) >= 8 * M)) && break
	sleep 0.1
done
echo "  alice's usage: $body"
(($(field .used) >= 8 * M)) || fail "alice's used bytes never reached 8 MiB: $body"
refused_507 POST /v1/volumes '{"name":"v3","size":65536}'
refused_507 POST /v1/volumes '{"name":"s3","parent":"v2"}'
bob_unaffected 3

step "raising the quota lets her create again; the pool is consistent"
admin_api PATCH /v1/tenants/alice "{\"max_used\":null,\"max_volumes\":null}"
expect 200
tenant_api alice POST /v1/volumes '{"name":"v3","size":65536}'
expect 201
nbdcopy "$(alice_uri v1)" "$scratch/a.out"
cmp -n $((12 * M)) "$scratch/a.in" "$scratch/a.out" || fail "alice's data changed"
! grep -E 'Sanitizer|runtime error' "$daemon_log" || fail "sanitizer reports in the daemon's log"
stop_daemon
echo "$test_name: PASS"
