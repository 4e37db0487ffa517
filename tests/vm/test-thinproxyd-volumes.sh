#!/usr/bin/env bash
# thinproxyd on the real dm-thin target: tenants, volumes, snapshots, commit, resize,
# quotas, images, grants and pool status through the REST API, and state that survives
# a restart of the daemon (the embedded loop pool is reattached).
. "$(dirname "$0")/functions.sh"
requires curl jq

start_daemon

step "tenants: add, list, duplicate, bad names"
admin_api POST /v1/tenants '{"name":"alice","uid":1000,"gid":1000,"max_volumes":4}'
expect 201
[ "$(field .nbd_uid)" -ge 2000000000 ] || fail "nbd uid not allocated from the base"
admin_api POST /v1/tenants '{"name":"bob","uid":1001,"gid":1001}'
expect 201
admin_api POST /v1/tenants '{"name":"alice"}'
expect 409 exists
admin_api POST /v1/tenants '{"name":"../etc"}'
expect 400 invalid_name
admin_api POST /v1/tenants '{"name":"images"}'
expect 400 invalid_name
admin_api GET /v1/tenants
expect 200
[ "$(field '.tenants | map(.name) | join(",")')" = alice,bob ] || fail "tenant list: $body"
sock=$run_dir/tenants/alice/control.sock
[ "$(stat -c '%a %u %g' "$sock")" = "660 1000 1000" ] || fail "control.sock mode/owner: $(stat -c '%a %u %g' "$sock")"

step "volumes: create, duplicate, invalid, two tenants with the same name"
tenant_api alice POST /v1/volumes '{"name":"layer1","size":1073741824}'
expect 201
[ "$(field .state)" = ready ] && [ "$(field .size)" = 1073741824 ] || fail "create: $body"
tenant_api alice POST /v1/volumes '{"name":"layer1","size":1048576}'
expect 409 exists
tenant_api alice POST /v1/volumes '{"name":"Layer1","size":1048576}'
expect 400 invalid_name
tenant_api alice POST /v1/volumes '{"name":"x","size":100}'
expect 400 invalid_size
tenant_api alice POST /v1/volumes '{"name":"x","size":-1}'
expect 400 invalid_size
tenant_api alice POST /v1/volumes '{"name":"x"}'
expect 400 invalid_request
tenant_api bob POST /v1/volumes '{"name":"layer1","size":2097152}'
expect 201
tenant_api bob GET /v1/volumes/layer1
expect 200
[ "$(field .size)" = 2097152 ] || fail "bob sees alice's layer1: $body"

step "snapshot, commit, resize, info"
tenant_api alice POST /v1/volumes '{"name":"child","parent":"layer1"}'
expect 201
[ "$(field .parent)" = layer1 ] || fail "snapshot parent: $body"
tenant_api alice POST /v1/volumes/layer1/commit
expect 200
[ "$(field .state)" = committed ] && [ "$(field .writable)" = false ] || fail "commit: $body"
tenant_api alice POST /v1/volumes/layer1/resize '{"size":2147483648}'
expect 409 read_only
tenant_api alice POST /v1/volumes/child/resize '{"size":2147483648}'
expect 200
[ "$(field .size)" = 2147483648 ] || fail "resize: $body"
tenant_api alice POST /v1/volumes/child/resize '{"size":1073741824}'
expect 400 invalid_size
tenant_api alice GET /v1/volumes/child
expect 200

step "remove: busy parent, then child and parent"
tenant_api alice DELETE /v1/volumes/layer1
expect 409 busy
tenant_api alice DELETE /v1/volumes/child
expect 204
tenant_api alice DELETE /v1/volumes/child
expect 404 not_found

step "quotas: volume count answers 507"
for i in 1 2 3; do
	tenant_api alice POST /v1/volumes "{\"name\":\"q$i\",\"size\":1048576}"
	expect 201
done
tenant_api alice POST /v1/volumes '{"name":"q4","size":1048576}'
expect 507 quota_exceeded
admin_api PATCH /v1/tenants/alice '{"max_volumes":null,"max_size":4194304}'
expect 200
tenant_api alice POST /v1/volumes '{"name":"q4","size":2097152}'
expect 507 quota_exceeded
tenant_api alice GET /v1/usage
expect 200
[ "$(field .volumes)" = 4 ] && [ "$(field .max_size)" = 4194304 ] || fail "usage: $body"
admin_api PATCH /v1/tenants/alice '{"max_size":null}'
expect 200

step "a tenant socket acts on its own tenant only"
tenant_api bob GET /v1/volumes/q1
expect 404 not_found
tenant_api bob DELETE /v1/volumes/q1
expect 404 not_found
tenant_api bob POST /v1/volumes '{"name":"steal","parent":"alice/layer1"}'
expect 404 not_found
tenant_api bob GET /v1/tenants
expect 404 not_found
tenant_api bob GET /v1/pool
expect 404 not_found

step "images: import, publish, snapshot from an image"
head -c $((3 << 20)) /dev/urandom >"$scratch/image.raw"
truncate -s 8M "$scratch/image.raw"
admin_api POST /v1/images "{\"name\":\"base\",\"from\":\"$scratch/image.raw\"}"
expect 201
[ "$(field .state)" = image ] && [ "$(field .size)" = 8388608 ] || fail "import: $body"
tenant_api bob POST /v1/volumes '{"name":"fromimg","parent":"images/base"}'
expect 404 not_found
admin_api POST /v1/images/base/publish '{"tenant":"bob"}'
expect 200
tenant_api bob POST /v1/volumes '{"name":"fromimg","parent":"images/base"}'
expect 201
[ "$(field .parent)" = images/base ] || fail "image snapshot parent: $body"
tenant_api bob GET /v1/volumes
[ "$(field '.volumes | map(.name) | join(",")')" = fromimg,layer1,images/base ] || fail "bob's list: $body"
admin_api DELETE /v1/images/base
expect 409 busy

step "grants: alice's layer1 visible to bob, read-only"
admin_api POST /v1/grants '{"owner":"alice","volume":"layer1","to":"bob"}'
expect 201
tenant_api bob POST /v1/volumes '{"name":"fromalice","parent":"alice/layer1"}'
expect 201
admin_api DELETE /v1/grants '{"owner":"alice","volume":"layer1","to":"bob"}'
expect 204
tenant_api bob POST /v1/volumes '{"name":"again","parent":"alice/layer1"}'
expect 404 not_found

step "pool status and metrics"
admin_api GET /v1/pool
expect 200
[ "$(field .mode)" = rw ] && [ "$(field .block_size)" = 65536 ] || fail "pool: $body"
tid=$(field .transaction_id)
[ "$tid" -gt 0 ] || fail "transaction id did not move: $body"
admin_api GET /metrics
expect 200
grep -q 'thinproxy_tenant_volumes{tenant="alice"} 4' <<<"$body" || fail "metrics: $body"

step "tenant removal refused while it owns volumes"
admin_api DELETE /v1/tenants/alice
expect 409 busy

step "restart: the pool is reattached and the state is intact"
stop_daemon
start_daemon
admin_api GET /v1/pool
[ "$(field .transaction_id)" = "$tid" ] || fail "transaction id after restart: $body"
tenant_api alice GET /v1/volumes/layer1
expect 200
[ "$(field .state)" = committed ] || fail "state after restart: $body"

step "forced tenant removal removes its volumes"
admin_api DELETE '/v1/tenants/bob?force=1'
expect 204
admin_api DELETE '/v1/tenants/alice?force=1'
expect 204
[ ! -e "$run_dir/tenants/alice" ] || fail "alice's socket directory is still there"
admin_api GET /v1/pool
[ "$(field .volumes)" = 1 ] || fail "only the image should remain: $body"
stop_daemon
echo "$test_name: PASS"
