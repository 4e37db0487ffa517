#!/usr/bin/env bash
# nbdkit on demand, at 200 tenants (what the guest holds; bench/host-tenants.sh goes to
# 1000): with no client no tenant's nbdkit runs; the first connection to every tenant
# starts its nbdkit and is served, the second one is served by the same process; idle,
# they all exit, and their tenants say so; an attached device's nbdkit stays through
# its idle time, the exits of all the others and a restart of the daemon (which adopts
# it), and the data written through the device reads back after all that.
. "$(dirname "$0")/functions.sh"
requires md5sum

n=${TP_ON_DEMAND_TENANTS:-200}
nbdkit_idle=5
knock=$TP_BUILD/tests/vm/nbd-knock
[ -x "$knock" ] || fail "$knock is missing (make all)"

tenant() { printf 't%03d' "$1"; }
sock() { echo "$run_dir/tenants/$1/nbd.sock"; }
# nbdkits: how many tenants' nbdkits run.
nbdkits() { pgrep -c -f "^[^ ]*nbdkit .*tenant=" || true; }
# wait_nbdkits N: until N run (at most 180 s: idle exits that never come).
nbdkits_are() { [ "$(nbdkits)" = "$1" ]; }
wait_nbdkits() {
	wait_until 180 nbdkits_are "$1" ||
		fail "$(nbdkits) tenants' nbdkits run, not $1: $(pgrep -af nbdkit | head -5)"
}
# states STATE: how many tenants tenant ls shows in nbd state STATE.
states() { tp --admin tenant ls | awk -v s="$1" 'NR > 1 && $NF == s' | wc -l; }
# running_metric VALUE: how many tenants /metrics says have thinproxy_tenant_nbdkit_running VALUE.
running_metric() { tp --admin metrics | grep -c "^thinproxy_tenant_nbdkit_running{.*} $1\$" || true; }
logged() { grep -c "$1" "$daemon_log" || true; }

start_daemon
step "add $n tenants"
# One curl for all: a process per tenant would take minutes under TCG.
args=()
for ((i = 0; i < n; i++)); do
	((i == 0)) || args+=(--next)
	args+=(-sS -o /dev/null -w '%{http_code}\n' -X POST -H 'Content-Type: application/json'
		--data-binary "{\"name\":\"$(tenant $i)\"}" --unix-socket "$run_dir/admin.sock"
		http://localhost/v1/tenants)
done
curl "${args[@]}" >"$scratch/added"
[ "$(grep -c '^201$' "$scratch/added")" = "$n" ] || fail "tenant adds: $(sort "$scratch/added" | uniq -c)"
[ "$(nbdkits)" = 0 ] || fail "nbdkits run with no client: $(pgrep -af nbdkit | head -5)"
[ "$(states idle)" = "$n" ] || fail "not all idle: $(tp --admin tenant ls | head -5)"
[ "$(running_metric 0)" = "$n" ] || fail "metrics: $(tp --admin metrics | grep nbdkit_running | head -3)"

step "two connections to each tenant, one after the other: each one's nbdkit starts once"
socks=()
for ((i = 0; i < n; i++)); do socks+=("$(sock "$(tenant $i)")" "$(sock "$(tenant $i)")"); done
"$knock" "${socks[@]}" >"$scratch/knocks" || fail "not every connection was served: $(grep fail "$scratch/knocks" | head -5)"
[ "$(grep -c ' ok ' "$scratch/knocks")" = $((2 * n)) ] || fail "knocks: $(head -5 "$scratch/knocks")"
for ((i = 0; i < n; i++)); do
	t=$(tenant $i)
	[ "$(logged "tenant $t: started nbdkit")" = 1 ] ||
		fail "$t: $(logged "tenant $t: started nbdkit") nbdkits started for two connections"
done

step "idle, they all exit"
wait_nbdkits 0
[ "$(logged ' exited, idle; ')" = "$n" ] || fail "$(logged ' exited, idle; ') idle exits logged, not $n"
[ "$(logged 'restarting it in')" = 0 ] || fail "an idle exit was taken for a death: $(grep 'restarting it in' "$daemon_log" | head -3)"
[ "$(states idle)" = "$n" ] || fail "not all idle again: $(tp --admin tenant ls | head -5)"

step "an attached device keeps its tenant's nbdkit through its idle time and a daemon restart"
t0=$(tenant 0)
tp --admin --tenant "$t0" create v1 --size 64M >/dev/null
dev=$(tp --admin --tenant "$t0" attach v1)
[ -b "$dev" ] || fail "attach: $dev"
dd if=/dev/urandom of="$scratch/data" bs=1M count=8 status=none
dd if="$scratch/data" of="$dev" bs=1M oflag=direct status=none
want=$(md5sum <"$scratch/data")
read -r pid <"$run_dir/tenants/$t0/nbdkit.pid"
[ "$(states running)" = 1 ] || fail "tenant ls: $(tp --admin tenant ls | grep -v idle)"
# grep -c reads all: grep -q would leave, and under pipefail the SIGPIPE of a long
# /metrics would read as a failure.
[ "$(tp --admin metrics | grep -c "^thinproxy_tenant_nbdkit_running{tenant=\"$t0\"} 1\$")" = 1 ] ||
	fail "metrics: $t0 not running"
# Everybody else comes and goes meanwhile.
others=()
for ((i = 1; i < n; i += 10)); do others+=("$(sock "$(tenant $i)")"); done
"$knock" "${others[@]}" >/dev/null || fail "others not served"
sleep $((nbdkit_idle + 2))
wait_nbdkits 1
kill -0 "$pid" || fail "$t0's nbdkit $pid exited with a device attached"
stop_daemon
start_daemon
grep -q "tenant $t0: adopted running nbdkit $pid" "$daemon_log" || fail "nbdkit $pid not adopted"
[ "$(states idle)" = $((n - 1)) ] || fail "after the restart: $(tp --admin tenant ls | grep -v idle | head)"
"$knock" "$(sock "$(tenant 7)")" >/dev/null || fail "$(tenant 7) not served after the restart"
got=$(dd if="$dev" bs=1M count=8 iflag=direct status=none | md5sum)
[ "$got" = "$want" ] || fail "data read back through $dev differs"
[ "$(cat "$run_dir/tenants/$t0/nbdkit.pid")" = "$pid" ] || fail "$t0's nbdkit was replaced"

step "detached, it exits idle too"
tp detach "$dev"
wait_nbdkits 0
[ "$(states idle)" = "$n" ] || fail "not all idle at the end: $(tp --admin tenant ls | grep -v idle | head)"
stop_daemon
step "done"
