#!/usr/bin/env bash
# A tenant reaches nothing of another tenant's by naming it: alice, over her own control
# socket and her own nbd.sock, tries to get, snapshot, remove, commit, resize, grant and
# attach bob's volumes and an image published only to bob, with every naming trick
# (path traversal, encoded slashes, NUL bytes, overlong names, Unicode look-alikes, case
# variants, spaces, thin ids and device-mapper names, other tenants' names, API paths of
# the admin socket). Every attempt is refused (400, 404 or 405, never 5xx; 2xx only for
# what is alice's own); an open over NBD or an attach fails exactly as a missing name
# does; afterwards bob's volumes, their data and the pool are exactly as before, and
# alice still lists only her own.
# (The NBD name battery over every reference form is in tests/vm/test-nbdkit-exports.sh.)
. "$(dirname "$0")/../vm/functions.sh"
requires curl jq nbdinfo nbdcopy python3
cleanup "cp $daemon_log $TP_RESULTS/"

M=$((1 << 20))
raw=$TP_BUILD/tests/vm/nbd-raw
asock=$run_dir/tenants/alice/control.sock
anbd=$run_dir/tenants/alice/nbd.sock
bnbd=$run_dir/tenants/bob/nbd.sock

start_daemon
step "alice with layer1; bob with secret (data), layer1 and a committed base; an image for bob"
admin_api POST /v1/tenants '{"name":"alice","uid":1000,"gid":1000}'
expect 201
admin_api POST /v1/tenants '{"name":"bob","uid":1001,"gid":1001}'
expect 201
tenant_api alice POST /v1/volumes "{\"name\":\"layer1\",\"size\":$((4 * M))}"
expect 201
for v in secret layer1 base; do
	tenant_api bob POST /v1/volumes "{\"name\":\"$v\",\"size\":$((4 * M))}"
	expect 201
done
tenant_api bob POST /v1/volumes/base/commit
expect 200
head -c $((4 * M)) /dev/urandom >"$scratch/secret"
nbdcopy --flush "$scratch/secret" "nbd+unix:///secret?socket=$bnbd"
head -c $M /dev/urandom >"$scratch/img"
admin_api POST /v1/images "{\"name\":\"bimg\",\"from\":\"$scratch/img\"}"
expect 201
admin_api POST /v1/images/bimg/publish '{"tenant":"bob"}'
expect 200
admin_api GET /v1/tenants/bob/volumes
expect 200
thin_ids=$(field '.volumes[] | select(.thin_id != null) | .thin_id' | tr '\n' ' ')
[ -n "$thin_ids" ] || fail "no thin ids for bob's volumes: $body"
admin_api GET /v1/pool
expect 200
pool_before=$(field .volumes)
bob_before=$(tenant_api bob GET /v1/volumes && field '[.volumes[] | [.name, .state, .size]] | tostring')
dm_names=$(ls /dev/mapper | grep -v control | tr '\n' ' ')
echo "bob's thin ids: $thin_ids; dm devices: $dm_names"

# The names alice tries. Each is sent as the volume in a URL (percent-encoded, and raw
# where curl can send it), as a parent or grantee in JSON, over NBD and to attach.
long=$(printf 'x%.0s' {1..300})
names=(
	secret bob/secret bob/layer1 bob/base images/bimg ../bob/secret ../../bob/secret
	bob/../bob/secret ./secret .. . / //secret /secret secret/ bob//secret bob/./secret
	images/../bob/secret tenants/bob/volumes/secret Secret SECRET BOB/secret Bob/Secret
	"secret " " secret" "bob /secret" "secret%00" "secret\\" "bob\\secret"
	$'\xd1\x95ecret' $'bob/\xd1\x95ecret' $'\xd0\xactt' $'layer\xef\xbc\x91'
	$'b\xd0\xbeb/secret' $'secret\xe2\x80\x8b' $'\xef\xbd\x93ecret'
	"secret$long" "bob/secret$long" "$long" '*' '%' 'bob/*' 'secret;' 'secret?x=1' '#'
	$'secret\n' $'secret\t' 0 1 2 3 4 $thin_ids $dm_names thin1 thin-1
)

# refused WHAT: the last call answered 400 or 404 with an error body.
refused() {
	case $status in
	400 | 404) jq -e '.error.code' <<<"$body" >/dev/null || fail "$1: $status without an error: $body" ;;
	*) fail "$1: answered $status: $body" ;;
	esac
}

step "REST: ${#names[@]} names x get, remove, commit, resize (encoded and raw), snapshot-from, create"
printf '%s\0' "${names[@]}" >"$scratch/names"
python3 "$(dirname "$0")/name-battery.py" "$asock" "$scratch/names" bob || fail "the name battery"
# JSON's own escapes: a NUL and look-alikes spelled as \u escapes.
for j in '"secret\u0000"' '"bob/secret\u0000x"' '"\u0073ecret"' '"bob\u002fsecret"' \
	'"\u0455ecret"' '"..\u002fbob\u002fsecret"'; do
	api "$asock" POST /v1/volumes "{\"name\":\"stolen\",\"parent\":$j}"
	refused "snapshot from $j"
done
# Routes of the admin socket, and other tenants' paths, on a tenant socket.
for p in /v1/tenants /v1/tenants/bob /v1/tenants/bob/volumes /v1/tenants/bob/volumes/secret \
	/v1/grants /v1/images /v1/pool /metrics /v1/volumes/..%2F..%2Fv1%2Ftenants%2Fbob; do
	api "$asock" GET "$p"
	refused "GET $p"
	api "$asock" DELETE "$p"
	refused "DELETE $p"
done
api "$asock" POST /v1/grants '{"owner":"bob","volume":"secret","to":"alice","write":true}'
refused "a grant"
api "$asock" POST /v1/images/bimg/publish '{"tenant":"alice"}'
refused "a publication"
api "$asock" PATCH /v1/tenants/alice '{"max_volumes":null}'
refused "a quota change"

step "NBD: every name opens exactly as a missing one on alice's nbd.sock"
missing=$("$raw" "$anbd" nosuch)
case $missing in "go: error 0x"*) ;; *) fail "a missing name: $missing" ;; esac
for n in "${names[@]}" "ro:secret" "ro:bob/secret" "ro:images/bimg" "ro:../bob/secret"; do
	got=$("$raw" "$anbd" "$n")
	[ "$got" = "$missing" ] || fail "alice opening \"$n\": $got (a missing name: $missing)"
done
nbdinfo --list --json "nbd+unix:///?socket=$anbd" >"$scratch/list.json"
[ "$(jq -r '[.exports[]."export-name"] | join(" ")' "$scratch/list.json")" = layer1 ] ||
	fail "alice lists over NBD: $(cat "$scratch/list.json")"

step "attach: bob's names fail as a missing one does"
for n in secret bob/secret images/bimg ../bob/secret $'\xd1\x95ecret'; do
	rc=0
	tp --admin --tenant alice attach "$n" 2>"$scratch/err" >/dev/null || rc=$?
	[ $rc = 1 ] || fail "attach \"$n\" exited $rc: $(cat "$scratch/err")"
	grep -q "no such volume\|invalid" "$scratch/err" || fail "attach \"$n\": $(cat "$scratch/err")"
done

step "afterwards: bob's volumes, their data and the pool are unchanged"
tenant_api bob GET /v1/volumes
[ "$(field '[.volumes[] | [.name, .state, .size]] | tostring')" = "$bob_before" ] ||
	fail "bob's volumes changed: $body (before: $bob_before)"
nbdcopy "nbd+unix:///secret?socket=$bnbd" "$scratch/secret.out"
cmp "$scratch/secret" "$scratch/secret.out" || fail "bob's data changed"
admin_api GET /v1/pool
# (Its transaction id moves: alice created and removed volumes of her own.)
[ "$(field .volumes)" = "$pool_before" ] || fail "the pool's volumes: $body (before: $pool_before)"
tenant_api alice GET /v1/volumes
[ "$(field '[.volumes[].name] | join(" ")')" = layer1 ] || fail "alice lists: $body"
! grep -E 'Sanitizer|runtime error' "$daemon_log" || fail "sanitizer reports in the daemon's log"
stop_daemon
echo "$test_name: PASS"
