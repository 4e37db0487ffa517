#!/usr/bin/env bash
# A tenant abusing its control socket hurts no one else: malformed JSON, huge bodies,
# wrong methods and content types, overlong URLs and headers, bytes that are not HTTP
# each get a specific 4xx (505 for an unknown HTTP version) or the connection closed;
# 3000 connections at once and 200 slow requests that never finish are bounded (64 open
# at a time, silent ones closed after the 10 s idle timeout), the open files and memory
# of the process serving the socket (the tenants' API process) and of the daemon stay
# bounded, and throughout, bob's and the admin's requests and bob's NBD
# reads are answered. Once the flood ends, alice's socket answers again.
. "$(dirname "$0")/../vm/functions.sh"
requires curl jq python3 nbdcopy cmp pgrep
cleanup "cp $daemon_log $TP_RESULTS/"

M=$((1 << 20))
flood="python3 $(dirname "$0")/flood.py"
asock=$run_dir/tenants/alice/control.sock
ulimit -n 16384
shopt -s extglob

start_daemon
admin_api POST /v1/tenants '{"name":"alice","uid":1000,"gid":1000}'
expect 201
admin_api POST /v1/tenants '{"name":"bob","uid":1001,"gid":1001}'
expect 201
tenant_api bob POST /v1/volumes "{\"name\":\"b\",\"size\":$((4 * M))}"
expect 201
head -c $((4 * M)) /dev/urandom >"$scratch/b.in"
bob_uri="nbd+unix:///b?socket=$run_dir/tenants/bob/nbd.sock"
nbdcopy --flush "$scratch/b.in" "$bob_uri"

# req METHOD PATH STATUS [CODE] [CURL-ARG...]: alice's request answers STATUS (CODE);
# STATUS may be a pattern, e.g. "413|431".
req() {
	local method=$1 path=$2 want=$3 code=${4-}
	shift 4 || shift $#
	status=$(curl -sS --max-time 30 --unix-socket "$asock" -X "$method" -o "$scratch/body" \
		-w '%{http_code}' "$@" "http://localhost$path" 2>"$scratch/curl.err") || status=000
	body=$(cat "$scratch/body" 2>/dev/null || true)
	[[ $status == @($want) ]] || fail "$method $path: expected $want, got $status: $body $(cat "$scratch/curl.err")"
	if [ -n "$code" ]; then
		[ "$(jq -r .error.code <<<"$body")" = "$code" ] || fail "$method $path: expected $code: $body"
	fi
}
json=(-H 'Content-Type: application/json')

step "malformed bodies, wrong methods and content types: a specific 4xx each"
for b in '' '{' '{"name":' '[]' '"x"' 'null' '{"name":"v","size":65536,}' "{'name':'v'}" \
	'{"name":"v","size":"65536"}' '{"name":"v","size":-1}' '{"name":"v","size":1e30}' \
	'{"name":"v","size":65536,"extra":1}' '{"name":["v"],"size":65536}' \
	'{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":1}}}}}}}}}' \
	'{"name":"v","size":65536}{"name":"w","size":65536}'; do
	status=$(curl -sS --max-time 30 --unix-socket "$asock" -X POST -o "$scratch/body" -w '%{http_code}' \
		"${json[@]}" --data-binary "$b" http://localhost/v1/volumes) || status=000
	body=$(cat "$scratch/body")
	case $status in 400) ;; *) fail "body '$b': answered $status: $body" ;; esac
	jq -e '.error.code | test("^invalid_")' <<<"$body" >/dev/null || fail "body '$b': $body"
done
head -c $((1 * M)) /dev/zero | tr '\0' ' ' >"$scratch/huge"
req POST /v1/volumes 413 too_large "${json[@]}" --data-binary @"$scratch/huge"
req POST /v1/volumes 413 too_large "${json[@]}" -H 'Transfer-Encoding: chunked' --data-binary @"$scratch/huge"
req POST /v1/volumes 415 unsupported_media_type -H 'Content-Type: text/plain' --data-binary '{"name":"v","size":65536}'
req POST /v1/volumes 415 unsupported_media_type -H 'Content-Type: application/x-www-form-urlencoded' --data-binary 'name=v&size=65536'
req POST /v1/volumes 415 unsupported_media_type -H 'Content-Type:' --data-binary '{"name":"v","size":65536}'
for m in PUT PATCH OPTIONS TRACE CONNECT PROPFIND; do
	req "$m" /v1/volumes 405 method_not_allowed
done
req DELETE /v1/volumes 405 method_not_allowed
req POST /v1/usage 405 method_not_allowed
req GET "/v1/volumes/$(printf 'a%.0s' {1..5000})" 404 not_found
req GET /v1/nothing 404 not_found
req GET / 404 not_found
req GET /v1/volumes "413|414|431" "" -H "X-Big: $(printf 'h%.0s' {1..40000})"
tenant_api alice GET /v1/volumes
expect 200
[ "$(field '.volumes | length')" = 0 ] || fail "something was created: $body"

step "bytes that are not HTTP: answered 4xx (505 for an unknown version) or closed, never a crash"
for r in 'GARBAGE\r\n\r\n' 'GET /v1/volumes HTTP/9.9\r\n\r\n' 'GET /v1/volumes\r\n\r\n' \
	'\x00\x01\x02\x03\r\n\r\n' 'GET /v1/volumes HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n' \
	'POST /v1/volumes HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n' \
	'POST /v1/volumes HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nZZZZ\r\n'; do
	line=$(printf "$r" | $flood raw "$asock")
	case $line in "HTTP/1."[01]" 4"* | "HTTP/1."[01]" 505 "*) ;; closed) ;; *) fail "'$r': $line" ;; esac
	echo "  '${r:0:40}...': $line"
done
# A header whose name is not ASCII is no header we read: the request is answered.
line=$(printf 'GET /v1/volumes HTTP/1.1\r\nHost: x\r\n\xff\xfe: y\r\n\r\n' | $flood raw "$asock")
[ "$line" = "HTTP/1.1 200 OK" ] || fail "a request with a non-ASCII header name: $line"
kill -0 "$daemon_pid" || fail "the daemon died"

# others_served: bob's create, list, remove; the admin's pool; bob's data over NBD.
others_served() {
	local i=$1
	tenant_api bob POST /v1/volumes "{\"name\":\"f$i\",\"size\":65536}"
	expect 201
	tenant_api bob GET /v1/volumes
	expect 200
	tenant_api bob DELETE "/v1/volumes/f$i"
	expect 204
	admin_api GET /v1/pool
	expect 200
	nbdcopy "$bob_uri" "$scratch/b.out"
	cmp -s "$scratch/b.in" "$scratch/b.out" || fail "bob's data differs during the flood"
}
# What serves alice's socket and takes the flood: the tenants' API process (as
# api-uid, the default), or the daemon itself with --no-api-process. Its files and memory
# are watched, and the daemon's too.
server_pid=$(pgrep -u 1999999999 -f 'thinproxyd-api --control' || echo "$daemon_pid")
server_fds() { ls "/proc/$server_pid/fd" | wc -l; }
daemon_fds() { ls "/proc/$daemon_pid/fd" | wc -l; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/${1:-$server_pid}/status"; }
fds_before=$(server_fds)
daemon_fds_before=$(daemon_fds)
rss_before=$(rss_kib)
daemon_rss_before=$(rss_kib "$daemon_pid")

# during_flood KIND N SECONDS: run the flood on alice's socket and serve bob meanwhile;
# prints the flood's report.
during_flood() {
	local rounds=0 most_fds=0 n
	$flood "$1" "$asock" "$2" "$3" >"$scratch/flood.json" &
	local flood_pid=$!
	sleep 2
	while kill -0 $flood_pid 2>/dev/null; do
		n=$(server_fds)
		((n > most_fds)) && most_fds=$n
		others_served "$rounds"
		rounds=$((rounds + 1))
	done
	wait $flood_pid || fail "the $1 flood failed"
	echo "  $1 x $2: $(cat "$scratch/flood.json"); bob and the admin served $rounds times;" \
		"fds of the socket's server at most $most_fds (before: $fds_before)"
	((rounds >= 1)) || fail "bob was not served during the flood"
	# 64 connections on alice's socket, a few for bob's and the admin's requests and
	# nbdkit's broker: the server's open files stay bounded whatever alice opens.
	((most_fds <= fds_before + 64 + 16)) || fail "the socket's server held $most_fds files (before $fds_before)"
	(($(daemon_fds) <= daemon_fds_before + 64 + 16)) ||
		fail "the daemon holds $(daemon_fds) files (before $daemon_fds_before)"
}

step "3000 connections at once that send nothing, for 15 s"
during_flood idle 3000 15
[ "$(jq .most_open "$scratch/flood.json")" -ge 64 ] || fail "the flood never held 64 connections"
[ "$(jq .closed_by_server "$scratch/flood.json")" -ge 64 ] ||
	fail "the daemon closed fewer than 64 connections (over the limit, or idle)"

step "200 requests trickling one byte a second, for 20 s"
during_flood slow 200 20

step "after the floods: alice is answered again, the daemon's memory and files are bounded"
for ((i = 0; i < 600; i++)); do
	tenant_api alice GET /v1/volumes
	[ "$status" = 200 ] && break
	sleep 0.1
done
expect 200
echo "  the socket's server: $(server_fds) files (before $fds_before), RSS $(rss_kib) KiB (before $rss_before KiB)"
echo "  the daemon: $(daemon_fds) files (before $daemon_fds_before), RSS $(rss_kib "$daemon_pid") KiB (before $daemon_rss_before KiB)"
(($(rss_kib) < rss_before + 64 * 1024)) || fail "the server's RSS grew from $rss_before to $(rss_kib) KiB"
(($(rss_kib "$daemon_pid") < daemon_rss_before + 64 * 1024)) ||
	fail "the daemon's RSS grew from $daemon_rss_before to $(rss_kib "$daemon_pid") KiB"
! grep -E 'Sanitizer|runtime error' "$daemon_log" || fail "sanitizer reports in the daemon's log"
stop_daemon
echo "$test_name: PASS"
