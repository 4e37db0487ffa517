#!/usr/bin/env bash
# thinproxyd hands its tenants' nbdkits the plugin wherever the plugin lives: from a
# directory only root may enter (a clone in root's home, or under mktemp -d), and a file
# of mode 0600, a volume attaches and serves data. What each nbdkit loads is a sealed
# copy that nothing can change. And an nbdkit that cannot start (here: a plugin that is
# no plugin) is logged with the reason, its clients are closed at once instead of
# waiting for a greeting that never comes, and attach says the tenant's NBD server is
# not running.
. "$(dirname "$0")/functions.sh"
requires curl jq nbdinfo cmp dd timeout
cleanup "cp $daemon_log $TP_RESULTS/"
M=$((1 << 20))

# A copy of the plugin where no tenant's nbdkit uid could read it, as a clone in a
# private directory (with a umask of 077 for the file too) has it.
priv=$(mktemp -d)
cleanup "rm -rf $priv"
[ "$(stat -c %a "$priv")" = 700 ] || fail "mktemp -d made $priv with mode $(stat -c %a "$priv")"
cp "$TP_BUILD/nbdkit-thinproxy-plugin.so" "$priv/"
chmod 0600 "$priv/nbdkit-thinproxy-plugin.so"

step "the plugin in a directory of mode 0700: attach, write, read back"
start_daemon --plugin "$priv/nbdkit-thinproxy-plugin.so"
admin_api POST /v1/tenants '{"name":"alice"}'
expect 201
tp --admin --tenant alice create v --size 16M >/dev/null
dev=$(tp --admin --tenant alice attach v)
cleanup "tp detach $dev"
head -c $((4 * M)) /dev/urandom >"$scratch/data"
dd if="$scratch/data" of="$dev" bs=1M oflag=direct status=none
cmp -n $((4 * M)) "$scratch/data" "$dev" || fail "$dev does not read back what was written"

step "what alice's nbdkit loaded: a sealed copy of the plugin, which takes no write"
apid=$(cat "$run_dir/tenants/alice/nbdkit.pid")
[ "$(readlink "/proc/$apid/fd/4")" = "/memfd:nbdkit-thinproxy-plugin.so (deleted)" ] ||
	fail "nbdkit's fd 4 is $(readlink "/proc/$apid/fd/4")"
cmp "/proc/$apid/fd/4" "$priv/nbdkit-thinproxy-plugin.so" || fail "the copy differs from the plugin"
# Even root cannot write it; nbdkit's own uid could not even open it for writing.
! (printf x >>"/proc/$apid/fd/4") 2>"$scratch/err" || fail "the plugin's copy took a write"
cat "$scratch/err"
tp detach "$dev"
stop_daemon

step "a plugin that is no plugin: nbdkit cannot start, its clients are told so"
echo "not a plugin" >"$priv/broken.so"
# nbdkit itself, not the sanitizer wrapper of a SANITIZE=1 build: with the sanitizer
# runtime preloaded, nbdkit 1.32 hangs on its way out after a plugin it cannot load.
start_daemon --plugin "$priv/broken.so" --nbdkit nbdkit
admin_api POST /v1/tenants '{"name":"bob"}'
expect 201
tp --admin --tenant bob create v --size 16M >/dev/null
fails 1 "^thinproxy: attach v: the tenant's NBD server is not running: its nbdkit does not start \(the host's thinproxyd log says why\)$" \
	tp --admin --tenant bob attach v
tenant_api bob GET /v1/usage
expect 200
[ "$(field .nbd)" = failed ] || [ "$(field .nbd)" = running ] || fail "usage says nbd $(field .nbd)"
# Any NBD client, not only thinproxy's: closed at once, not left waiting (nbdinfo would
# wait for its greeting for good).
rc=0
timeout 60 nbdinfo --size "nbd+unix:///v?socket=$run_dir/tenants/bob/nbd.sock" \
	>/dev/null 2>"$scratch/nbdinfo" || rc=$?
cat "$scratch/nbdinfo"
[ "$rc" != 0 ] && [ "$rc" != 124 ] || fail "nbdinfo on bob's socket exited $rc"
# The daemon's log: nbdkit's own reason, then the supervisor's word on it.
grep -q "nbdkit: error: .*/proc/self/fd/4" "$daemon_log" || fail "no word from nbdkit itself"
grep -q "tenant bob: nbdkit [0-9]* exited with status 1 (nbdkit's own message before this says why)" \
	"$daemon_log" || fail "the daemon does not say how bob's nbdkit ended"
grep -q "tenant bob: nbdkit does not start (plugin $priv/broken.so); its NBD clients are turned away" \
	"$daemon_log" || fail "the daemon does not say that bob's nbdkit does not start"
stop_daemon
! grep -E 'Sanitizer|runtime error' "$daemon_log" || fail "sanitizer reports in the daemon's log"
echo "$test_name: PASS"
