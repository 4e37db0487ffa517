#!/usr/bin/env bash
# thinproxy snapshotter, driven over gRPC (containerd's Snapshots service) by a small
# client (tests/snapshotter/client) as root with real dm-thin and NBD: Prepare, mount,
# write, Commit, a child of the committed layer, a read-only View, Remove, Usage, List
# with containerd's filters, Update of labels, Stat, the gRPC status of each refusal;
# the agent killed (kill -9, at each step of Prepare, Commit and Remove) and restarted
# leaks no volume and no device, and SIGTERM leaves devices attached to the snapshots
# they belong to; Cleanup; xfs with nouuid; another tenant sees nothing. Prints the
# agent's Prepare, Commit and Remove times.
. "$(dirname "$0")/functions.sh"
requires jq mkfs.ext4 debugfs mkfs.xfs

client=$TP_BUILD/tests/snapshotter/snapshotter-client
[ -x "$client" ] || fail "$client is not built (make builds it with golang-go)"
sock=$scratch/agent.sock
agent_log=$TP_RESULTS/agent.log
agent_pid=
tenant_dir=$run_dir/tenants/alice

# snap ARG...: one request to the agent.
snap() { "$client" --socket "$sock" --namespace testns "$@"; }
# snap_fails CODE PATTERN ARG...: the request fails with gRPC status CODE and a message
# matching PATTERN.
snap_fails() {
	local code=$1 pattern=$2 rc=0
	shift 2
	snap "$@" >/dev/null 2>"$scratch/err" || rc=$?
	[ $rc = 1 ] || fail "snap $* exited $rc: $(cat "$scratch/err")"
	grep -Eq "^$code: .*$pattern" "$scratch/err" || fail "snap $*: '$(cat "$scratch/err")' is not $code: $pattern"
}
# start_agent [ENV=VALUE...]: the agent on alice's directory, as in her container.
start_agent() {
	rm -f "$sock"
	env "$@" "$TP_BUILD/thinproxy" --dir "$tenant_dir" snapshotter --socket "$sock" >>"$agent_log" 2>&1 &
	agent_pid=$!
	wait_for_socket "$sock"
}
# agent_died: the agent killed itself (a fault point); reap it.
agent_died() {
	local rc=0
	wait "$agent_pid" || rc=$?
	[ $rc = 137 ] || fail "the agent exited $rc, not killed: $(tail -5 "$agent_log")"
	agent_pid=
}
stop_agent() {
	local rc=0
	kill -TERM "$agent_pid"
	wait "$agent_pid" || rc=$?
	agent_pid=
	[ $rc = 0 ] || fail "the agent exited $rc on SIGTERM: $(tail -5 "$agent_log")"
}
cleanup '[ -z "$agent_pid" ] || kill -KILL $agent_pid'
# volumes: alice's volumes, one "NAME STATE ready?" a line.
volumes() {
	api "$tenant_dir/control.sock" GET /v1/volumes
	jq -r '.volumes[] | "\(.name) \(.state) \(.labels["thinproxy.snapshotter/ready"] // "-")"' <<<"$body"
}
# devices: the attached devices, "DEVICE VOLUME" a line.
devices() { tp --json ls --attached | jq -r '.[] | "\(.device) \(.volume)"'; }
volume_of() { printf c; printf %s "$1" | sha256sum | cut -c1-62; }
# mount_snap MOUNTS DIR: mount what Prepare, View or Mounts printed ("TYPE SOURCE OPTS").
mount_snap() {
	local type source opts
	read -r type source opts <<<"$1"
	mkdir -p "$2"
	if [ "$opts" = - ]; then mount -t "$type" "$source" "$2"; else mount -t "$type" -o "$opts" "$source" "$2"; fi
}
cleanup 'for m in $(grep -o " $scratch/mnt/[^ ]*" /proc/mounts); do umount $m; done'

start_daemon
tp --admin tenant add alice >/dev/null
tp --admin tenant add bob >/dev/null
start_agent

step "Prepare without a parent: a new ext4 volume, attached, empty (no lost+found)"
m=$(snap prepare testns/1/base "" l=1 containerd.io/gc.root=x) || fail "prepare: $m"
[[ $m =~ ^ext4\ /dev/nbd[0-9]+\ -$ ]] || fail "prepare's mounts: $m"
base_dev=$(cut -d' ' -f2 <<<"$m")
[ "$(devices)" = "$base_dev $(volume_of testns/1/base)" ] || fail "devices: $(devices)"
[ "$(volumes)" = "$(volume_of testns/1/base) ready 1" ] || fail "volumes: $(volumes)"
mount_snap "$m" "$scratch/mnt/base"
[ -z "$(ls -A "$scratch/mnt/base")" ] || fail "a new snapshot holds $(ls -A "$scratch/mnt/base")"
[ "$(stat -c %a "$scratch/mnt/base")" = 755 ] || fail "root mode $(stat -c %a "$scratch/mnt/base")"
echo one >"$scratch/mnt/base/one"
echo gone >"$scratch/mnt/base/gone"
head -c 8M /dev/urandom >"$scratch/mnt/base/big"
sync
[ "$(snap mounts testns/1/base)" = "$m" ] || fail "mounts: $(snap mounts testns/1/base)"
snap stat testns/1/base >"$scratch/stat.json"
[ "$(jq -r '[.name, .parent, .kind, .labels.l, (.labels | length)] | join(" ")' "$scratch/stat.json")" = \
	"testns/1/base  active 1 2" ] || fail "stat: $(cat "$scratch/stat.json")"
jq -e '.created == .updated' "$scratch/stat.json" >/dev/null || fail "created != updated: $(cat "$scratch/stat.json")"

step "Usage: the pool's bytes of the volume, inodes where it is mounted"
u=$(snap usage testns/1/base)
[ "$(jq '.size >= 8388608' <<<"$u")" = true ] || fail "usage: $u"
[ "$(jq '.inodes >= 3' <<<"$u")" = true ] || fail "usage while mounted: $u"
umount "$scratch/mnt/base"
[ "$(jq .inodes <<<"$(snap usage testns/1/base)")" = 0 ] || fail "usage unmounted: $(snap usage testns/1/base)"

step "refusals carry gRPC codes"
snap_fails AlreadyExists "already exists" prepare testns/1/base
snap_fails FailedPrecondition "parent testns/1/base is active, not committed" prepare testns/1/x testns/1/base
snap_fails NotFound "parent testns/1/nothing does not exist" prepare testns/1/x testns/1/nothing
snap_fails InvalidArgument "thinproxy.snapshotter/ is the snapshotter's own" prepare testns/1/x "" thinproxy.snapshotter/ready=1
snap_fails InvalidArgument "empty key" prepare ""
snap_fails NotFound "does not exist" stat testns/1/nothing
snap_fails NotFound "does not exist" remove testns/1/nothing
snap_fails NotFound "does not exist" commit testns/1/c testns/1/nothing
snap_fails InvalidArgument "only labels change" update testns/1/base --path parent
snap_fails InvalidArgument "invalid filter" list 'name=='
[ -z "$(volumes | grep -v "$(volume_of testns/1/base)")" ] || fail "a refusal left a volume: $(volumes)"

step "Commit: detached, renamed, committed; the key is gone"
snap commit testns/1/layer1 testns/1/base l=committed >/dev/null
[ -z "$(devices)" ] || fail "a committed snapshot is attached: $(devices)"
[ "$(volumes)" = "$(volume_of testns/1/layer1) committed 1" ] || fail "volumes: $(volumes)"
snap_fails NotFound "does not exist" stat testns/1/base
snap stat testns/1/layer1 >"$scratch/stat.json"
[ "$(jq -r '[.name, .kind, .labels.l, (.labels | length)] | join(" ")' "$scratch/stat.json")" = \
	"testns/1/layer1 committed committed 1" ] || fail "stat: $(cat "$scratch/stat.json")"
jq -e '.created == .updated' "$scratch/stat.json" >/dev/null || fail "created != updated after commit"
snap_fails FailedPrecondition "committed" mounts testns/1/layer1
snap_fails AlreadyExists "already exists" prepare testns/1/layer1
snap_fails NotFound "does not exist" commit testns/1/layer1 testns/1/base

step "a child of the committed layer: a thin snapshot, its changes its own"
m=$(snap prepare testns/1/child testns/1/layer1) || fail "prepare child: $m"
mount_snap "$m" "$scratch/mnt/child"
[ "$(cat "$scratch/mnt/child/one")" = one ] || fail "the child lacks its parent's file"
echo two >"$scratch/mnt/child/one"
rm "$scratch/mnt/child/gone"
echo new >"$scratch/mnt/child/new"
umount "$scratch/mnt/child"
[ "$(jq -r .parent <<<"$(snap stat testns/1/child)")" = testns/1/layer1 ] || fail "parent: $(snap stat testns/1/child)"
snap commit testns/1/layer2 testns/1/child >/dev/null
snap_fails FailedPrecondition "remove testns/1/layer1: .*busy" remove testns/1/layer1

step "a View: read-only, the layers' files as they were committed"
m=$(snap view testns/1/view testns/1/layer2) || fail "view: $m"
[[ $m =~ ^ext4\ /dev/nbd[0-9]+\ ro$ ]] || fail "view's mounts: $m"
mount_snap "$m" "$scratch/mnt/view"
[ "$(cat "$scratch/mnt/view/one") $(cat "$scratch/mnt/view/new")" = "two new" ] || fail "the view's files"
[ ! -e "$scratch/mnt/view/gone" ] || fail "the view shows a file its layer removed"
! touch "$scratch/mnt/view/x" 2>/dev/null || fail "a view is writable"
[ "$(cat "/sys/block/$(basename "$(cut -d' ' -f2 <<<"$m")")/ro")" = 1 ] || fail "the view's device is writable"
snap_fails FailedPrecondition "is a view, not active" commit testns/1/c testns/1/view
snap_fails FailedPrecondition "busy: mounted on" remove testns/1/view
umount "$scratch/mnt/view"
m=$(snap view testns/1/empty-view) || fail "an empty view: $m"
[[ $m =~ ^ext4\ /dev/nbd[0-9]+\ ro$ ]] || fail "an empty view's mounts: $m"

step "List with containerd's filters, and Update of labels"
snap list >"$scratch/list"
[ "$(jq -r .name "$scratch/list" | sort | tr '\n' ' ')" = \
	"testns/1/empty-view testns/1/layer1 testns/1/layer2 testns/1/view " ] || fail "list: $(cat "$scratch/list")"
[ "$(snap list 'kind==committed' | jq -r .name | sort | tr '\n' ' ')" = "testns/1/layer1 testns/1/layer2 " ] ||
	fail "list kind==committed: $(snap list 'kind==committed')"
[ "$(snap list 'parent==testns/1/layer2' 'name~=^testns/1/empty' | jq -r .name | sort | tr '\n' ' ')" = \
	"testns/1/empty-view testns/1/view " ] || fail "list with two filters"
[ "$(snap list 'labels.l==committed,kind==committed' | jq -r .name)" = testns/1/layer1 ] || fail "list by label"
u=$(snap update testns/1/layer2 a=1 b=2) || fail "update: $u"
[ "$(jq -c .labels <<<"$u")" = '{"a":"1","b":"2"}' ] || fail "update all: $u"
jq -e '.updated > .created' <<<"$u" >/dev/null || fail "update did not move updated: $u"
u=$(snap update testns/1/layer2 --path labels.a --path labels.c a=9 b=7 c=3) || fail "update paths: $u"
[ "$(jq -c .labels <<<"$u")" = '{"a":"9","b":"2","c":"3"}' ] || fail "update by path: $u"
[ "$(jq -c .labels <<<"$(snap stat testns/1/layer2)")" = '{"a":"9","b":"2","c":"3"}' ] || fail "stat after update"

step "another tenant sees none of it"
[ -z "$(tp --admin --tenant bob ls --quiet)" ] || fail "bob sees $(tp --admin --tenant bob ls --quiet)"

step "SIGTERM: the agent ends, the devices stay with their snapshots; a new agent finds them"
devs_before=$(devices)
mounts_before=$(snap mounts testns/1/view; snap mounts testns/1/empty-view)
stop_agent
[ "$(devices)" = "$devs_before" ] || fail "devices after SIGTERM: $(devices), were $devs_before"
start_agent
[ "$(snap mounts testns/1/view; snap mounts testns/1/empty-view)" = "$mounts_before" ] ||
	fail "mounts after restart: $(snap mounts testns/1/view; snap mounts testns/1/empty-view), not $mounts_before"
[ "$(devices)" = "$devs_before" ] || fail "devices after restart: $(devices)"

step "kill -9 at each step of Prepare, Commit and Remove: nothing leaked, nothing lost"
for fault in prepare-created prepare-attached prepare-formatted; do
	stop_agent
	start_agent THINPROXY_SNAPSHOTTER_FAULT=$fault
	snap prepare "testns/1/k-$fault" >/dev/null 2>&1 && fail "prepare survived $fault"
	agent_died
	volumes | grep -q "^$(volume_of "testns/1/k-$fault") ready -$" || fail "$fault: no unready volume: $(volumes)"
	start_agent
	! volumes | grep -q "$(volume_of "testns/1/k-$fault")" || fail "$fault: the start's cleanup left $(volumes)"
	! devices | grep -q "$(volume_of "testns/1/k-$fault")" || fail "$fault: a device left: $(devices)"
	m=$(snap prepare "testns/1/k-$fault") || fail "prepare again after $fault: $m"
done
stop_agent
start_agent THINPROXY_SNAPSHOTTER_FAULT=commit-detached
snap commit testns/1/k-committed testns/1/k-prepare-created >/dev/null 2>&1 && fail "commit survived its fault"
agent_died
start_agent
[ "$(jq -r .kind <<<"$(snap stat testns/1/k-prepare-created)")" = active ] || fail "interrupted commit lost the key"
m=$(snap mounts testns/1/k-prepare-created) || fail "mounts after an interrupted commit: $m"
snap commit testns/1/k-committed testns/1/k-prepare-created >/dev/null
stop_agent
start_agent THINPROXY_SNAPSHOTTER_FAULT=remove-detached
snap remove testns/1/k-prepare-attached >/dev/null 2>&1 && fail "remove survived its fault"
agent_died
start_agent
snap remove testns/1/k-prepare-attached
snap_fails NotFound "does not exist" stat testns/1/k-prepare-attached

step "a kill -9 from outside while Prepare formats, and a Prepare that takes over what it left"
stop_agent
start_agent
snap prepare testns/1/killed >/dev/null 2>&1 &
client_pid=$!
for ((i = 0; i < 2000; i++)); do
	volumes | grep -q "^$(volume_of testns/1/killed) " && break
	sleep 0.01
done
kill -KILL "$agent_pid"
wait "$agent_pid" || true
agent_pid=
answered=yes
wait "$client_pid" || answered=no
start_agent
! volumes | grep -q "$(volume_of testns/1/killed) ready -" || fail "an unready volume left: $(volumes)"
if volumes | grep -q "$(volume_of testns/1/killed) ready 1"; then
	# The kill came after the Prepare had finished (or just before its answer).
	echo "the kill came after Prepare had labelled the volume ready (answered: $answered)"
	snap stat testns/1/killed >/dev/null
else
	[ $answered = no ] || fail "Prepare answered, yet its volume is gone"
	echo "the kill came during Prepare; its volume is gone"
	snap prepare testns/1/killed >/dev/null
fi

step "Cleanup: an interrupted Prepare's volume goes, a committed snapshot's device is detached"
labels='{"thinproxy.snapshotter/key": "testns/1/left", "thinproxy.snapshotter/kind": "active",
 "thinproxy.snapshotter/fs": "ext4", "thinproxy.snapshotter/created": "2026-01-01T00:00:00Z",
 "thinproxy.snapshotter/updated": "2026-01-01T00:00:00Z"}'
api "$tenant_dir/control.sock" POST /v1/volumes "{\"name\": \"$(volume_of testns/1/left)\", \"size\": 1048576, \"labels\": $labels}"
expect 201
tp --dir "$tenant_dir" attach --readonly "$(volume_of testns/1/layer1)" >/dev/null
devices | grep -q "$(volume_of testns/1/layer1)" || fail "attach for the test: $(devices)"
snap_fails NotFound "does not exist" stat testns/1/left
snap cleanup
! volumes | grep -q "$(volume_of testns/1/left)" || fail "cleanup left the unready volume: $(volumes)"
! devices | grep -q "$(volume_of testns/1/layer1)" || fail "cleanup left the committed device: $(devices)"

step "Commit of a snapshot still mounted: what was written is committed, the mount loses its device"
m=$(snap prepare testns/1/mounted testns/1/layer2) || fail "prepare: $m"
mount_snap "$m" "$scratch/mnt/mounted"
echo written >"$scratch/mnt/mounted/late"
snap commit testns/1/mounted-layer testns/1/mounted
# The device stays configured while the mount holds it, without connection or keeper.
[ "$(tp --json ls --attached | jq -r --arg v "$(volume_of testns/1/mounted)" \
	'.[] | select(.volume == $v) | .keeper')" = null ] || fail "still attached: $(tp ls --attached)"
! echo more 2>/dev/null >"$scratch/mnt/mounted/more" || ! sync -f "$scratch/mnt/mounted" 2>/dev/null ||
	fail "the mount kept writing to a committed snapshot"
umount "$scratch/mnt/mounted"
! devices | grep -q "$(volume_of testns/1/mounted)" || fail "the device outlived its mount: $(devices)"
m=$(snap view testns/1/mounted-view testns/1/mounted-layer) || fail "view: $m"
mount_snap "$m" "$scratch/mnt/mounted-view"
[ "$(cat "$scratch/mnt/mounted-view/late")" = written ] || fail "the committed snapshot lacks what was written"
[ ! -e "$scratch/mnt/mounted-view/more" ] || fail "a write after the commit reached the snapshot"
umount "$scratch/mnt/mounted-view"
snap remove testns/1/mounted-view

step "NBD devices run out (the ioctl interface has only /dev/nbd*): RESOURCE_EXHAUSTED, a freed one is taken again"
stop_agent
start_agent THINPROXY_NBD_INTERFACE=ioctl
for ((i = 0; i < 40; i++)); do
	snap view "testns/1/many-$i" testns/1/layer1 >/dev/null 2>"$scratch/err" || break
done
grep -q "^ResourceExhausted: view testns/1/many-$i: no NBD device left" "$scratch/err" ||
	fail "view $i: $(cat "$scratch/err")"
((i > 0)) || fail "no view was attached at all"
! volumes | grep -q "$(volume_of "testns/1/many-$i")" || fail "the refused view left its volume"
snap remove testns/1/many-0
m=$(snap view "testns/1/many-$i" testns/1/layer1) || fail "view after a remove: $m"
for ((j = 1; j <= i; j++)); do snap remove "testns/1/many-$j"; done
stop_agent
start_agent

step "List sends more than a page (100 infos a message)"
# Made and removed through the REST socket, by one curl each (--next): a process per
# request takes long under TCG.
posts=() deletes=()
for ((i = 0; i < 110; i++)); do
	v=$(volume_of "testns/1/page-$i")
	labels="{\"thinproxy.snapshotter/key\": \"testns/1/page-$i\", \"thinproxy.snapshotter/kind\": \"committed\",
	 \"thinproxy.snapshotter/fs\": \"ext4\", \"thinproxy.snapshotter/created\": \"2026-01-01T00:00:00Z\",
	 \"thinproxy.snapshotter/updated\": \"2026-01-01T00:00:00Z\", \"thinproxy.snapshotter/ready\": \"1\", \"page\": \"yes\"}"
	posts+=(${posts[0]+--next} -sS -o /dev/null -w '%{http_code}\n' --unix-socket "$tenant_dir/control.sock"
		-H 'Content-Type: application/json' --data-binary "{\"name\": \"$v\", \"size\": 1048576, \"labels\": $labels}"
		http://localhost/v1/volumes)
	deletes+=(${deletes[0]+--next} -sS -o /dev/null -w '%{http_code}\n' --unix-socket "$tenant_dir/control.sock"
		-X DELETE "http://localhost/v1/volumes/$v")
done
[ "$(curl "${posts[@]}" | sort | uniq -c | tr -s ' ')" = " 110 201" ] || fail "creating the page's snapshots"
[ "$(snap list 'labels.page==yes' | jq -r .name | sort -u | wc -l)" = 110 ] ||
	fail "list: $(snap list 'labels.page==yes' | wc -l) of 110"
[ "$(curl "${deletes[@]}" | sort | uniq -c | tr -s ' ')" = " 110 204" ] || fail "removing the page's snapshots"

step "xfs: an agent with --fs xfs; a snapshot's mount says nouuid"
modprobe xfs
stop_agent
rm -f "$sock"
"$TP_BUILD/thinproxy" --dir "$tenant_dir" snapshotter --socket "$sock" --fs xfs --size 1G >>"$agent_log" 2>&1 &
agent_pid=$!
wait_for_socket "$sock"
m=$(snap prepare testns/1/x-base) || fail "xfs prepare: $m"
[[ $m =~ ^xfs\ /dev/nbd[0-9]+\ -$ ]] || fail "xfs mounts: $m"
mount_snap "$m" "$scratch/mnt/xbase"
echo x >"$scratch/mnt/xbase/x"
umount "$scratch/mnt/xbase"
snap commit testns/1/x-layer testns/1/x-base
m1=$(snap prepare testns/1/x-child testns/1/x-layer)
m2=$(snap view testns/1/x-view testns/1/x-layer)
[[ $m1 =~ ^xfs\ /dev/nbd[0-9]+\ nouuid$ ]] || fail "xfs child mounts: $m1"
[[ $m2 =~ ^xfs\ /dev/nbd[0-9]+\ ro,nouuid$ ]] || fail "xfs view mounts: $m2"
mount_snap "$m1" "$scratch/mnt/xchild"
mount_snap "$m2" "$scratch/mnt/xview"
[ "$(cat "$scratch/mnt/xchild/x")$(cat "$scratch/mnt/xview/x")" = xx ] || fail "xfs layers' files"
umount "$scratch/mnt/xchild" "$scratch/mnt/xview"
# A child of an ext4 layer stays ext4 under this agent.
[[ $(snap prepare testns/1/e-child testns/1/layer2) =~ ^ext4\  ]] || fail "an ext4 layer's child"

step "Remove everything: no volume, no device left"
for key in $(snap list | jq -r 'select(.kind != "committed") | .name'); do snap remove "$key"; done
for ((i = 0; i < 10; i++)); do
	[ -n "$(snap list)" ] || break
	for key in $(snap list | jq -r .name); do snap remove "$key" 2>/dev/null || true; done
done
[ -z "$(volumes)" ] || fail "volumes left: $(volumes)"
[ -z "$(devices)" ] || fail "devices left: $(devices)"
stop_agent

step "times in the guest (TCG), from the agent's log: median (min-max) in seconds"
# "prepare KEY: /dev/nbdN (1.23 s: create 0.05, attach 0.30, ...)": one "KIND PART SECONDS"
# line per step, KIND being prepare (no parent), child, view, commit or remove.
sed -nE 's/.* snapshotter: (prepare|view|commit|remove) ([^ ]+)( from [^ ]+)?.* \(([0-9.]+) s: ([^)]*)\)$/\1\3|\4|\5/p' "$agent_log" |
	awk -F'|' '{ kind = $1; sub(/ from .*/, "", kind); if ($1 ~ / from / && kind == "prepare") kind = "child"
		print kind, "total", $2; n = split($3, parts, ", ")
		for (i = 1; i <= n; i++) { split(parts[i], kv, " "); print kind, kv[1], kv[2] } }' |
	sort -k1,1 -k2,2 -k3,3n | awk '{ key = $1 " " $2; v[key, ++n[key]] = $3 }
		END { for (k in n) { m = n[k]; printf "%-16s %6.3f (%.3f-%.3f) of %d\n", k, v[k, int((m + 1) / 2)], v[k, 1], v[k, m], m } }' |
	sort
stop_daemon
echo "$test_name: PASS"
