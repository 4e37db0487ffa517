#!/usr/bin/env bash
# thinproxyd's command line and config file (help, bad options, bad values, file errors
# with line numbers), its pool modes (own pool on given devices, an existing pool by
# name, refused if it skips block zeroing unless allowed), the free-space floor (507) and
# the low-water log.
. "$(dirname "$0")/functions.sh"
requires dmsetup sqlite3

d=$TP_BUILD/thinproxyd
# rejects PATTERN ARGS...: thinproxyd ARGS exits 2 (usage) or 1 with PATTERN on stderr.
rejects() {
	local pattern=$1 rc=0
	shift
	"$d" "$@" >"$scratch/out" 2>&1 || rc=$?
	[ "$rc" != 0 ] || fail "thinproxyd $* succeeded"
	grep -q -- "$pattern" "$scratch/out" || fail "thinproxyd $*: '$(cat "$scratch/out")' lacks '$pattern'"
}

step "help, version, bad options and values"
"$d" --help | grep -q -- '--loop-size SIZE' || fail "--help"
"$d" --help | grep -q -- '--metadata-max SIZE' || fail "--help lacks --metadata-max"
"$d" --version | grep -q '^thinproxyd ' || fail "--version"
rejects 'unrecognized option' --bogus
rejects "requires an argument" --state-dir
rejects 'invalid value for loop-size' --loop-size 12Q
rejects 'invalid value for block-size' --block-size 100K
rejects 'invalid value for metadata-size' --metadata-size 1M
rejects 'invalid value for metadata-max' --metadata-max 4097K
rejects 'for the embedded pool' --metadata-max 8M --pool foreign
rejects 'below --metadata-size' --metadata-size 8M --metadata-max 4M
rejects 'invalid value for min-free' --min-free 120%
rejects 'exclude each other' --pool x --data /dev/a --metadata /dev/b
rejects 'go together' --data /dev/a
rejects 'absolute' --state-dir relative
rejects 'unexpected argument' extra

step "config file: settings, unknown keys and bad values name the line"
printf 'loop-size = 1G\n# comment\nbogus = 1\n' >"$scratch/bad.conf"
rejects 'bad.conf:3: unknown setting "bogus"' --config "$scratch/bad.conf"
printf 'min-free = lots\n' >"$scratch/bad2.conf"
rejects 'bad2.conf:1' --config "$scratch/bad2.conf"
rejects 'cannot read' --config "$scratch/missing.conf"
cat >"$scratch/good.conf" <<CONF
state-dir = $state_dir
run-dir = $run_dir
loop-size = 1G   # the file says 1G, the flag below says 2G
min-free = 1500M
foreground = true
CONF

step "the config file is read and flags override it; the free-space floor answers 507"
"$d" --config "$scratch/good.conf" --loop-size 2G --plugin "$TP_BUILD/nbdkit-thinproxy-plugin.so" \
	>>"$daemon_log" 2>&1 &
daemon_pid=$!
# Ready when it says so, at most 60 s (its admin socket appears before it listens).
for ((i = 0; i < 1200; i++)); do
	grep -q ' ready: ' "$daemon_log" && break
	kill -0 "$daemon_pid" 2>/dev/null || break
	sleep 0.05
done
grep -q ' ready: ' "$daemon_log" || fail "thinproxyd did not start: $(cat "$daemon_log")"
admin_api GET /v1/pool
[ "$(field .data.total)" = $((2 << 30)) ] || fail "flag did not override the file: $body"
[ "$(field .min_free)" = $((1500 << 20)) ] || fail "min-free from the file: $body"
admin_api POST /v1/tenants '{"name":"t"}'
expect 201
tenant_api t POST /v1/volumes '{"name":"v","size":4294967296}'
expect 201
admin_api GET /v1/tenants/t/volumes/v
id=$(field .thin_id)
pool_dev=$(dmsetup info -c --noheadings -o major,minor thinproxy-pool | tr -d ' ')
dmsetup create filler --table "0 $((4 << 21)) thin $pool_dev $id"
dd if=/dev/zero of=/dev/mapper/filler bs=1M count=600 oflag=direct status=none
dmsetup remove filler
tenant_api t POST /v1/volumes '{"name":"w","size":1048576}'
expect 507 pool_full
stop_daemon

step "the low-water mark is logged when crossed"
: >"$daemon_log"
start_daemon --low-water 80%
wait_until 60 grep -q 'below the low-water mark of 80%' "$daemon_log" ||
	fail "no low-water warning: $(cat "$daemon_log")"
stop_daemon
dmsetup remove thinproxy-pool-$id 2>/dev/null || true
dmsetup remove thinproxy-pool

step "our own pool on given data and metadata devices, reattached on restart"
data=$(loopdev 1G data)
meta=$(loopdev 64M meta)
rm -rf "$state_dir"
start_daemon --data "$data" --metadata "$meta" --pool-name tp-own
admin_api GET /v1/pool
[ "$(field .name)" = tp-own ] && [ "$(field .data.total)" = $((1 << 30)) ] || fail "own pool: $body"
dmsetup table tp-own | grep -q error_if_no_space || fail "own pool lacks error_if_no_space"
dmsetup info -c --noheadings -o uuid tp-own | grep -q '^THINPROXY-' || fail "own pool lacks our uuid"
admin_api POST /v1/tenants '{"name":"t"}'
tenant_api t POST /v1/volumes '{"name":"v","size":1048576}'
expect 201
stop_daemon
start_daemon --data "$data" --metadata "$meta" --pool-name tp-own
tenant_api t GET /v1/volumes/v
expect 200
stop_daemon
dmsetup remove tp-own

step "an existing pool by name, left alone on exit"
dd if=/dev/zero of="$meta" bs=1M count=1 status=none
dmsetup create foreign --table "0 $((1 << 21)) thin-pool $meta $data 128 0 1 error_if_no_space"
cleanup "dmsetup remove foreign"
rm -rf "$state_dir"
start_daemon --pool foreign
admin_api POST /v1/tenants '{"name":"t"}'
tenant_api t POST /v1/volumes '{"name":"v","size":1048576}'
expect 201
admin_api GET /v1/pool
# A new store pairs with the pool: both get the same new transaction id.
tid=$(field .transaction_id)
[ "$(field .name)" = foreign ] && [ "$tid" != 0 ] || fail "existing pool: $body"
stop_daemon
dmsetup status foreign | grep -q " thin-pool $tid " || fail "the existing pool went away or changed"
[ "$(sqlite3 "$state_dir/thinproxy.db" "SELECT value FROM meta WHERE key = 'pool_tid'")" = "$tid" ] ||
	fail "the store is not paired with the pool"

step "a store that does not belong to the pool: refused, with the reason"
mv "$state_dir" "$scratch/kept-state"
rejects 'they do not belong together' --foreground --state-dir "$state_dir" \
	--run-dir "$run_dir" --pool foreign
rm -rf "$state_dir"
mv "$scratch/kept-state" "$state_dir"

step "two daemons on one run directory: the second refuses"
start_daemon --pool foreign
rejects 'another thinproxyd' --foreground --state-dir "$state_dir" --run-dir "$run_dir" --pool foreign
stop_daemon

step "an existing pool that does not zero new blocks: refused, unless allowed"
dmsetup remove foreign
dd if=/dev/zero of="$meta" bs=1M count=1 status=none
dmsetup create nozero --table "0 $((1 << 21)) thin-pool $meta $data 128 0 2 skip_block_zeroing error_if_no_space"
cleanup "dmsetup remove nozero"
rm -rf "$state_dir"
refuses_to_start 'pool nozero does not zero new blocks \(skip_block_zeroing\).*--allow-skip-block-zeroing' \
	--pool nozero
start_daemon --pool nozero --allow-skip-block-zeroing
grep -q 'pool nozero does not zero new blocks (skip_block_zeroing, allowed)' "$daemon_log" ||
	fail "no warning about the allowed pool"
admin_api GET /v1/pool
expect 200
stop_daemon
printf 'allow-skip-block-zeroing = maybe\n' >"$scratch/zero.conf"
rejects 'allow-skip-block-zeroing takes true or false' --config "$scratch/zero.conf"
printf 'allow-skip-block-zeroing = true\n' >"$scratch/zero.conf"
start_daemon --config "$scratch/zero.conf" --pool nozero
stop_daemon
echo "$test_name: PASS"
