#!/usr/bin/env bash
# Labels are a tenant's own and hostile ones change nothing: over her control socket alice
# sends labels past every limit (65 of them, a key of 4096 bytes, key and value over 4096,
# bytes that are not UTF-8, NUL bytes raw and escaped, control characters in keys, empty
# keys, a merge patch that would leave 65) and label filters likewise; each is refused
# with 400 invalid_request naming the label, and her volumes and their labels stay as
# they were. Exactly at the limits they are taken. Bob, granted one of her volumes, sees
# none of her labels, finds nothing of hers by label, patches, commits and renames
# nothing of hers (renaming his own volume to her volume's name touches only his). A
# volume being served (attached) is not renamed by a commit: 409 busy, the device goes on
# reading and writing; once detached, the commit renames it with its labels in one go,
# the old name opens nothing over NBD, the new one serves the same data, the grantee sees
# the new name, and labels and names survive a restart of the daemon. thinproxy label
# changes them in one merge patch.
. "$(dirname "$0")/../vm/functions.sh"
requires curl jq nbdinfo nbdcopy cmp python3
cleanup "cp $daemon_log $TP_RESULTS/"

M=$((1 << 20))
asock=$run_dir/tenants/alice/control.sock
bsock=$run_dir/tenants/bob/control.sock
anbd=$run_dir/tenants/alice/nbd.sock
bnbd=$run_dir/tenants/bob/nbd.sock

start_daemon
tp --admin tenant add alice --uid 1000 --gid 1000 >/dev/null
tp --admin tenant add bob --uid 1001 --gid 1001 >/dev/null
ta() { tp --admin --tenant alice "$@"; }
tb() { tp --admin --tenant bob "$@"; }

# send SOCKET METHOD PATH FILE: one request with the bytes of FILE as its JSON body
# (curl's --data-binary, so that bytes that are not UTF-8 and NULs go out as they are).
send() {
	status=$(curl -sS --max-time 60 --unix-socket "$1" -X "$2" -o "$scratch/body" -w '%{http_code}' \
		-H 'Content-Type: application/json' --data-binary @"$4" "http://localhost$3") || status=000
	body=$(cat "$scratch/body" 2>/dev/null || true)
}
# refused NEEDLE: the last call answered 400 invalid_request, its message containing NEEDLE.
refused() {
	expect 400 invalid_request
	grep -qF -- "$1" <<<"$(field .error.message)" || fail "message lacks '$1': $body"
	echo "  refused: $(field .error.message | cut -c1-110)"
}
# labels_of TENANT VOLUME: its labels as compact JSON, sorted.
labels_of() { tp --admin --tenant "$1" --json info "$2" | jq -cS .labels; }
# body_with_labels FILE PREFIX N: {PREFIX"labels":{"k0":"v",...}} with N labels, into FILE.
body_with_labels() {
	python3 - "$1" "$2" "$3" <<'EOF'
import json, sys
path, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
open(path, "w").write("{" + prefix + '"labels":' + json.dumps({"k%d" % i: "v" for i in range(n)}) + "}")
EOF
}

step "alice's volume v, with one label"
ta create v --size 4M --label a=1 >/dev/null
v_before=$(ta --json info v | jq -cS '{name, state, labels, updated}')
long=$(printf 'k%.0s' {1..4096})

step "hostile labels in a create, a patch and a commit: 400 naming the label, nothing changed"
body_with_labels "$scratch/b" '"name":"x","size":65536,' 65
send "$asock" POST /v1/volumes "$scratch/b"
refused "too many labels: 65, at most 64"
printf '{"labels":{"%s":"v"}}' "$long" >"$scratch/b"
send "$asock" PATCH /v1/volumes/v "$scratch/b"
refused "label \"$(printf 'k%.0s' {1..64})...\": the key is over 4095 bytes"
printf '{"labels":{"key":"%s"}}' "${long:0:4094}" >"$scratch/b"
send "$asock" PATCH /v1/volumes/v "$scratch/b"
refused 'label "key": key and value are over 4096 bytes together'
# name KEY-BYTES VALUE-BYTES NEEDLE: printf formats, written raw.
while IFS='|' read -r key value needle; do
	printf "{\"labels\":{\"$key\":\"$value\"}}" >"$scratch/b"
	send "$asock" PATCH /v1/volumes/v "$scratch/b"
	refused "$needle"
done <<'EOF'
\xff|v|label "\xff": the key is not valid UTF-8
k\xc0\xaf|v|label "k\xc0\xaf": the key is not valid UTF-8
k|\xed\xa0\x80|label "k": the value is not valid UTF-8
k|\xf4\x90\x80\x80|label "k": the value is not valid UTF-8
k|x\xe2\x82|label "k": the value is not valid UTF-8
a\\u0000b|v|key "a\u0000b" contains a NUL byte
k|a\\u0000b|label "k": the value contains a NUL byte
a\\u001b[2J|v|label "a\x1b[2J": the key contains a control character
a\\nb|v|label "a\x0ab": the key contains a control character
\xc2\x85|v|label "\xc2\x85": the key contains a control character
|v|label "": the key is empty
EOF
# A raw NUL byte in the body: no JSON text holds one.
printf '{"labels":{"k\0":"v"}}' >"$scratch/b"
send "$asock" PATCH /v1/volumes/v "$scratch/b"
expect 400 invalid_request
printf '{"labels":{"k":1}}' >"$scratch/b"
send "$asock" PATCH /v1/volumes/v "$scratch/b"
refused 'label "k": the value must be a string, or null to remove it'
printf '{"name":"w","labels":{"\xff":"v"}}' >"$scratch/b"
send "$asock" POST /v1/volumes/v/commit "$scratch/b"
refused 'label "\xff": the key is not valid UTF-8'
body_with_labels "$scratch/b" "" 64
send "$asock" PATCH /v1/volumes/v "$scratch/b"
refused "too many labels: volume v would have 65, at most 64; nothing changed"
[ "$(ta --json info v | jq -cS '{name, state, labels, updated}')" = "$v_before" ] ||
	fail "v changed: $(ta --json info v)"
tenant_api alice GET /v1/volumes
[ "$(field '[.volumes[].name] | join(" ")')" = v ] || fail "something was created: $body"

step "hostile label filters: 400 naming them; an overlong query is refused, the daemon lives"
for f in 'k%00' 'k=a%00' '%ff' 'a%1b' '' '=v'; do
	tenant_api alice GET "/v1/volumes?label=$f"
	refused 'label filter "'
done
tenant_api alice GET "/v1/volumes?$(printf 'label=k&%.0s' {1..65})"
refused "too many label filters: at most 64"
api "$asock" GET "/v1/volumes?label=$(printf 'x%.0s' {1..20000})"
case $status in 4??) ;; 000) ;; *) fail "a 20 KB filter answered $status: $body" ;; esac
kill -0 "$daemon_pid" || fail "the daemon died"
tenant_api alice GET '/v1/volumes?label=a=1'
expect 200
[ "$(field '[.volumes[].name] | join(" ")')" = v ] || fail "filter a=1: $body"

step "exactly at the limits: 64 labels, a key of 4095 bytes, key and value of 4096"
python3 - "$scratch/b" <<'EOF'
import json, sys
labels = {"k%d" % i: "v" for i in range(62)}
labels["k" * 4095] = ""
labels["z"] = "\u00e9" * 2047 + "v"
open(sys.argv[1], "w").write(json.dumps({"name": "full", "size": 65536, "labels": labels}))
EOF
send "$asock" POST /v1/volumes "$scratch/b"
expect 201
[ "$(field '.labels | length')" = 64 ] || fail "full has $(field '.labels | length') labels"
[ "$(field '.labels.z | length')" = 2048 ] || fail "z: $(field .labels.z | wc -c) bytes"
printf '{"labels":{"one-more":"x"}}' >"$scratch/b"
send "$asock" PATCH /v1/volumes/full "$scratch/b"
refused "would have 65"
printf '{"labels":{"one-more":"x","k0":null}}' >"$scratch/b"
send "$asock" PATCH /v1/volumes/full "$scratch/b"
expect 200
[ "$(field '.labels | length')" = 64 ] || fail "full: $(field '.labels | keys')"

step "bob, granted alice's base, sees none of her labels and changes nothing of hers"
ta create secret --size 4M --label owner=alice >/dev/null
ta create base --size 4M --label owner=alice --label tier=gold >/dev/null
ta commit base >/dev/null
tp --admin grant base --owner alice --to bob >/dev/null
tenant_api bob GET /v1/volumes
[ "$(field '[.volumes[] | {name, labels}] | tostring')" = '[{"name":"alice/base","labels":{}}]' ] ||
	fail "bob lists: $body"
for f in owner=alice owner tier=gold; do
	tenant_api bob GET "/v1/volumes?label=$f"
	expect 200
	[ "$(field '.volumes | length')" = 0 ] || fail "bob's filter $f found: $body"
done
printf '{"labels":{"owner":"bob"}}' >"$scratch/b"
for p in /v1/volumes/alice%2Fbase /v1/volumes/secret /v1/volumes/base /v1/volumes/..%2Falice%2Fsecret \
	/v1/tenants/alice/volumes/secret; do
	send "$bsock" PATCH "$p" "$scratch/b"
	case $status in 400 | 404) ;; *) fail "bob's PATCH $p answered $status: $body" ;; esac
done
for p in /v1/volumes/alice%2Fbase/commit /v1/volumes/secret/commit; do
	printf '{"name":"mine"}' >"$scratch/b"
	send "$bsock" POST "$p" "$scratch/b"
	case $status in 400 | 404) ;; *) fail "bob's commit $p answered $status: $body" ;; esac
done
tb create mine --size 4M >/dev/null
head -c $((4 * M)) /dev/urandom >"$scratch/mine"
nbdcopy --flush "$scratch/mine" "nbd+unix:///mine?socket=$bnbd"
for n in alice/secret ../alice/secret images/secret Secret; do
	printf '{"name":"%s"}' "$n" >"$scratch/b"
	send "$bsock" POST /v1/volumes/mine/commit "$scratch/b"
	expect 400 invalid_name
done
# Names are per tenant: bob's "secret" is his own, and alice's stays hers.
tb commit mine --as secret >/dev/null
nbdcopy "nbd+unix:///secret?socket=$bnbd" "$scratch/secret.bob"
cmp "$scratch/mine" "$scratch/secret.bob" || fail "bob's secret is not his data"
[ "$(labels_of alice secret)" = '{"owner":"alice"}' ] || fail "alice's secret: $(labels_of alice secret)"
[ "$(labels_of alice base)" = '{"owner":"alice","tier":"gold"}' ] || fail "base: $(labels_of alice base)"
[ "$(ta --json info secret | jq -r .state)" = ready ] || fail "alice's secret was committed"
admin_api GET '/v1/tenants/alice/volumes?label=owner=alice'
[ "$(field '[.volumes[].name] | join(" ")')" = "base secret" ] || fail "the admin's filter: $body"

step "a volume being served is not renamed by a commit: 409 busy, its device works on"
ta create work --size 16M --label kind=active >/dev/null
head -c $((16 * M)) /dev/urandom >"$scratch/work"
nbdcopy --flush "$scratch/work" "nbd+unix:///work?socket=$anbd"
tp --admin grant work --owner alice --to bob >/dev/null
dev=$(ta attach work)
cleanup "tp --admin --tenant alice detach $dev"
fails 1 'busy' ta commit work --as layer
fails 1 'busy' ta commit work
[ "$(ta --json info work | jq -cS '{name, state, labels}')" = \
	'{"labels":{"kind":"active"},"name":"work","state":"ready"}' ] || fail "work changed: $(ta --json info work)"
cmp -n $((16 * M)) "$scratch/work" "$dev" || fail "the device reads wrong after the refused commit"
head -c $M /dev/urandom >"$scratch/patch"
dd if="$scratch/patch" of="$dev" bs=1M seek=3 oflag=direct conv=notrunc status=none ||
	fail "the device cannot write after the refused commit"
dd if="$scratch/patch" of="$scratch/work" bs=1M seek=3 conv=notrunc status=none
cmp -n $((16 * M)) "$scratch/work" "$dev" || fail "the device lost the write"

step "a commit to a name alice has changes nothing, not even the state"
ta detach "$dev"
printf '{"name":"base","labels":{"kind":"committed"}}' >"$scratch/b"
send "$asock" POST /v1/volumes/work/commit "$scratch/b"
expect 409 exists
[ "$(ta --json info work | jq -cS '{name, state, labels}')" = \
	'{"labels":{"kind":"active"},"name":"work","state":"ready"}' ] || fail "work changed: $(ta --json info work)"

step "detached, the commit renames it with its labels; the new name serves the same data"
printf '{"name":"layer","labels":{"kind":"committed","layer":"1"}}' >"$scratch/b"
send "$asock" POST /v1/volumes/work/commit "$scratch/b"
expect 200
[ "$(field '[.name, .state, (.labels | tostring)] | join(" ")')" = \
	'layer committed {"kind":"committed","layer":"1"}' ] || fail "the commit answered: $body"
updated=$(field .updated)
fails 1 'no such volume' ta info work
nbdinfo --size "nbd+unix:///work?socket=$anbd" >/dev/null 2>&1 && fail "the old name still opens"
nbdcopy "nbd+unix:///layer?socket=$anbd" "$scratch/layer"
cmp "$scratch/work" "$scratch/layer" || fail "layer does not hold work's data"
fails 1 'read.only' ta commit layer --as other
tenant_api bob GET /v1/volumes
[ "$(field '[.volumes[].name] | sort | join(" ")')" = "alice/base alice/layer secret" ] ||
	fail "bob lists after the rename: $body"
tb snapshot child --from alice/layer >/dev/null
[ "$(tb --json info child | jq -r .parent)" = alice/layer ] || fail "bob's child: $(tb --json info child)"
ta snapshot top --from layer >/dev/null
[ "$(ta --json info top | jq -r .parent)" = layer ] || fail "alice's top: $(ta --json info top)"

step "labels, names and update times survive a restart of the daemon"
before=$(ta --json ls | jq -cS '[.volumes[] | {name, state, updated, labels}]')
stop_daemon
start_daemon
[ "$(ta --json ls | jq -cS '[.volumes[] | {name, state, updated, labels}]')" = "$before" ] ||
	fail "after the restart: $(ta --json ls)"
[ "$(ta --json info layer | jq -r .updated)" = "$updated" ] || fail "layer's update time changed"
[ "$(ta ls -q --label kind=committed)" = layer ] || fail "ls --label: $(ta ls -q --label kind=committed)"

step "thinproxy label: one merge patch, refused whole past 64"
ta label v b=2 'c=x=y' a- >"$scratch/out"
grep -Eq '^labels: +b=2$' "$scratch/out" || fail "label printed: $(cat "$scratch/out")"
[ "$(labels_of alice v)" = '{"b":"2","c":"x=y"}' ] || fail "v: $(labels_of alice v)"
fails 1 'would have 65' ta label full extra=1 b-
[ "$(labels_of alice full | jq length)" = 64 ] || fail "full changed"
fails 1 'no such volume' tb label base owner=bob
! grep -E 'Sanitizer|runtime error' "$daemon_log" || fail "sanitizer reports in the daemon's log"
stop_daemon
echo "$test_name: PASS"
