#!/usr/bin/env bash
# The thinproxy command against the real daemon: admin and tenant commands, tables and
# --json, exit statuses 0/1/2 and one clear error line per failure.
. "$(dirname "$0")/functions.sh"
requires jq

# tpt TENANT ARGS: as the tenant, through its own socket directory.
tpt() { local t=$1; shift; "$TP_BUILD/thinproxy" --dir "$run_dir/tenants/$t" "$@"; }

start_daemon

step "admin: tenants"
tp --admin tenant add alice --uid 0 --gid 0 --max-volumes 3 --max-size 4G >/dev/null
tp --admin tenant add bob >/dev/null
[ "$(tp --admin tenant ls --quiet | tr '\n' ' ')" = "alice bob " ] || fail "tenant ls"
fails 1 'tenant alice exists' tp --admin tenant add alice
fails 1 'invalid' tp --admin tenant add 'Bad/Name'
fails 2 . tp --admin tenant add
fails 2 . tp --admin tenant add x --bogus

step "tenant: create, snapshot, commit, ls, info, usage"
tpt alice create base --size 1G >/dev/null
tpt alice commit base >/dev/null
tpt alice snapshot work --from base >/dev/null
tpt alice ls >"$scratch/ls"
grep -Eq '^work +1G +.* ready +base' "$scratch/ls" || fail "ls table: $(cat "$scratch/ls")"
[ "$(tpt alice --json info base | jq -r .state)" = committed ] || fail "info --json"
tpt alice usage | grep -Eq 'volumes.*2' || fail "usage: $(tpt alice usage)"
fails 1 'volume work exists' tpt alice create work --size 1M
fails 1 'quota exceeded' tpt alice create big --size 8G
fails 1 'no such volume: nope' tpt alice info nope
fails 1 'busy' tpt alice rm base
fails 1 'read-only' tpt alice resize base --size 2G
fails 2 . tpt alice create
fails 2 . tpt alice create x --size
fails 1 'size' tpt alice create x --size 12Q

step "isolation: bob cannot see or touch alice's volumes"
[ -z "$(tpt bob ls --quiet)" ] || fail "bob sees: $(tpt bob ls --quiet)"
fails 1 'no such volume' tpt bob info work
fails 1 'no such volume' tpt bob rm work
fails 1 'no such volume' tpt bob snapshot mine --from alice/work

step "admin: grants, images, pool, metrics, --tenant"
tp --admin grant base --owner alice --to bob >/dev/null
tpt bob snapshot mine --from alice/base >/dev/null
tp --admin grants | grep -q 'alice.*base.*bob' || fail "grants: $(tp --admin grants)"
head -c 1M /dev/urandom >"$scratch/img"
tp --admin image import img1 --from "$scratch/img" >/dev/null
tp --admin image publish img1 --all >/dev/null
tpt bob snapshot fromimg --from images/img1 >/dev/null
[ "$(tp --admin --json pool | jq -r .mode)" = rw ] || fail "pool --json"
tp --admin metrics | grep -q '^thinproxy_pool_data_bytes' || fail "metrics"
tp --admin --tenant bob ls --quiet | grep -qx mine || fail "--admin --tenant ls"
tp --admin --tenant bob rm fromimg
fails 1 'no such tenant' tp --admin --tenant carol ls

step "a tenant's socket directory holds no admin power"
fails 1 'cannot reach' "$TP_BUILD/thinproxy" --dir "$run_dir/tenants/bob" --admin pool

step "cleanup through the CLI"
tp --admin tenant rm bob --force
tp --admin tenant rm alice --force
[ -z "$(tp --admin tenant ls --quiet)" ] || fail "tenants left"
stop_daemon
echo "$test_name: PASS"
