#!/usr/bin/env bash
# demo/demo.sh: thinproxy's main job, narrated. `make demo` runs it.
#
# On a kernel with dm-thin-pool and nbd it runs right here, as root; on one without
# (many build machines and CI hosts) it says so and runs itself again in the test guest
# (tests/vm/run: qemu with Debian's kernel). Everything it makes lives in a fresh
# directory under /tmp and a pool named thinproxy-demo-PID, and goes away when it ends,
# also on Ctrl-C: it never touches a real installation's /run/thinproxy or pool.
#
# Environment: TP_BUILD, the build directory (default: build/ next to this script's
# directory).
set -euo pipefail

src=$(realpath -e "$(dirname "$0")/..")
build=$(realpath -m "${TP_BUILD:-$src/build}")
export DM_DISABLE_UDEV=1

# Narration: a sentence in plain words, then each command as it is typed and its output.
if [ -t 1 ]; then bold=$'\e[1m' dim=$'\e[2m' off=$'\e[0m'; else bold= dim= off=; fi
say() { printf '\n%s%s%s\n' "$bold" "$*" "$off"; }
show() { printf '%s%s%s\n' "$dim" "$*" "$off"; }

# Does this kernel have what thinproxy needs: dm-thin-pool, nbd and loop, loaded or
# loadable? What it lacks goes into $missing.
kernel_ready() {
	local m
	missing=
	for m in dm_thin_pool nbd loop; do
		[ -d "/sys/module/$m" ] || modprobe -n -q "$m" 2>/dev/null || missing+=${missing:+ and }$m
	done
	[ -z "$missing" ]
}

if ! kernel_ready; then
	if [ -n "${TP_GUEST:-}" ]; then
		echo "demo: the test guest lacks dm-thin-pool or nbd; giving up" >&2
		exit 1
	fi
	say "This kernel lacks $missing, so the demo runs in a qemu guest with Debian's kernel instead (tests/vm/run)."
	results=$(mktemp -d /tmp/thinproxy-demo-guest.XXXXXX)
	trap 'kill $ticker 2>/dev/null || true; rm -rf "$results"' EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	# The guest boots in 20 to 60 seconds under TCG; say so while it does.
	(
		for ((t = 5; ; t += 5)); do
			sleep 5
			[ -e "$results/started" ] && exit 0
			echo "demo: the guest is booting ($t s)" >&2
		done
	) &
	ticker=$!
	rc=0
	TP_BUILD=$build "$src/tests/vm/run" --results "$results" "$0" || rc=$?
	exit $rc
fi

[ "$(id -u)" = 0 ] || { echo "demo: run as root (it makes a thin pool and NBD devices)" >&2; exit 1; }
for p in "$build/thinproxyd" "$build/thinproxyd-api" "$build/thinproxy" "$build/nbdkit-thinproxy-plugin.so"; do
	[ -e "$p" ] || { echo "demo: $p is missing: run make first" >&2; exit 1; }
done
for c in nbdkit nbdinfo jq unshare nsenter mkfs.ext4 dmsetup containerd ctr runc containerd-shim-runc-v2; do
	command -v "$c" >/dev/null || { echo "demo: $c is missing: run make deps" >&2; exit 1; }
done
modprobe dm_thin_pool 2>/dev/null || true
modprobe nbd 2>/dev/null || true
modprobe loop 2>/dev/null || true
# In the guest: tell the runner on the outside that the boot is over.
[ -n "${TP_RESULTS:-}" ] && touch "$TP_RESULTS/started"

work=$(mktemp -d /tmp/thinproxy-demo.XXXXXX)
chmod 0755 "$work"
run_dir=$work/run
pool=thinproxy-demo-$$
daemon_pid=
containers=()
# The programs as the narration shows them: the build directory's, on PATH.
export PATH=$build:$PATH THINPROXY_DIR=$run_dir

# Everything the demo made goes, whatever state it was interrupted in: devices
# unmounted and detached in each container, the containers, the tenants (with their
# volumes and nbdkits), the daemon, then the pool and its thin devices.
finish() {
	local rc=$? pid dev d
	trap - EXIT INT TERM
	set +e
	say "Cleaning up: detach, remove the tenants, stop thinproxyd, remove the pool."
	for pid in "${containers[@]}"; do
		nsenter --target "$pid" --mount --pid --root --wd -- sh -c \
			'umount /mnt 2>/dev/null; umount /mnt 2>/dev/null
			 for d in $(thinproxy ls --attached --quiet 2>/dev/null); do thinproxy detach "$d"; done' \
			>/dev/null 2>&1
		kill -KILL "$pid" 2>/dev/null
	done
	if [ -n "$daemon_pid" ]; then
		# The tenants' nbdkits let go of a volume a moment after its device is detached:
		# until then it is busy.
		for t in $(thinproxy --admin tenant ls --quiet 2>/dev/null); do
			for try in 1 2 3 4 5; do
				thinproxy --admin tenant rm "$t" --force >/dev/null 2>&1 && break
				sleep 1
			done
		done
		kill -TERM "$daemon_pid" 2>/dev/null
		wait "$daemon_pid" 2>/dev/null
	fi
	# What the daemon leaves by design (the pool stays active across its restarts),
	# and anything an interruption left: our devices only, by name.
	for d in $(dmsetup ls 2>/dev/null | awk -v p="$pool-" 'index($1, p) == 1 { print $1 }'); do
		dmsetup remove --retry "$d" >/dev/null 2>&1 || echo "demo: could not remove $d" >&2
	done
	if dmsetup info "$pool" >/dev/null 2>&1; then
		dmsetup remove --retry "$pool" >/dev/null 2>&1 || echo "demo: could not remove $pool" >&2
	fi
	rm -rf "$work"
	if [ "$rc" = 0 ]; then
		say "Done: nothing of the demo is left on this machine."
	else
		echo "demo: stopped (status $rc); cleaned up" >&2
		[ -s "${daemon_log:-}" ] 2>/dev/null && tail -n 5 "$daemon_log" >&2
	fi
	exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# host CMD...: run CMD on the host, as the admin, showing it first.
host() {
	show "# $*"
	"$@"
}

# container_start TENANT: a "container" as a runtime would make one: its own mount, pid,
# uts, ipc and network namespaces, its own /run with only TENANT's directory mounted at
# /run/thinproxy, /dev/mapper hidden, and an empty /var/lib/containerd for a containerd
# of its own. Sets $container.
container_start() {
	local t=$1 ready=$work/$1.ready i pid
	unshare --mount --pid --uts --ipc --net --fork --mount-proc --propagation private \
		sh -c 'mount -t tmpfs -o mode=0755 none /run && mkdir /run/thinproxy &&
			mount --bind "$1" /run/thinproxy && mount -t tmpfs -o mode=0755 none /dev/mapper &&
			mkdir -p /var/lib/containerd && mount -t tmpfs -o mode=0711 none /var/lib/containerd &&
			hostname "$2" && touch "$3" && exec sleep infinity' \
		container "$run_dir/tenants/$t" "$t" "$ready" 2>>"$work/containers.log" &
	pid=$!
	for ((i = 0; i < 200; i++)); do
		[ -e "$ready" ] && break
		sleep 0.05
	done
	container=$(pgrep -P "$pid") || { echo "demo: the container of $t did not start" >&2; exit 1; }
	containers+=("$container")
}

# inside TENANT SHELL-COMMAND: run a command line in TENANT's container, showing it
# first with the container's prompt. The container sees the build directory's programs.
declare -A cpid
inside() {
	local t=$1
	shift
	show "[$t]# $*"
	nsenter --target "${cpid[$t]}" --mount --pid --uts --ipc --net --root --wd -- \
		env PATH="$PATH" THINPROXY_DIR=/run/thinproxy sh -c "$*"
}

# capture VAR TENANT SHELL-COMMAND: inside, and the last line it printed into VAR.
capture() {
	local var=$1
	shift
	inside "$@" >"$work/out"
	cat "$work/out"
	printf -v "$var" '%s' "$(tail -n 1 "$work/out")"
}

say "thinproxy demo: a host daemon lends thin volumes to two tenants, alice and bob."
say "Start thinproxyd on its embedded pool: sparse files on loop devices in $work."
daemon_log=$work/thinproxyd.log
daemon_cmd=(thinproxyd --state-dir "$work/state" --run-dir "$run_dir" --pool-name "$pool"
	--loop-size 2G --plugin "$build/nbdkit-thinproxy-plugin.so")
# A SANITIZE=1 build's plugin needs the sanitizer runtimes loaded before nbdkit starts.
if ldd "$build/nbdkit-thinproxy-plugin.so" | grep -q 'lib[a-z]*san\.so'; then
	libs=$(ldd "$build/nbdkit-thinproxy-plugin.so" | awk '/lib(a|ub)san\.so/ { printf "%s ", $3 }')
	printf '#!/bin/sh\nLD_PRELOAD="%s" ASAN_OPTIONS=detect_leaks=0 exec nbdkit "$@"\n' \
		"${libs% }" >"$work/nbdkit-sanitized"
	chmod 0755 "$work/nbdkit-sanitized"
	daemon_cmd+=(--nbdkit "$work/nbdkit-sanitized")
fi
daemon_cmd+=(--foreground)
show "# ${daemon_cmd[*]} &"
"${daemon_cmd[@]}" >"$daemon_log" 2>&1 &
daemon_pid=$!
for ((i = 0; i < 400; i++)); do
	grep -q ' ready: ' "$daemon_log" && break
	kill -0 "$daemon_pid" 2>/dev/null || { cat "$daemon_log" >&2; exit 1; }
	sleep 0.05
done
grep ' ready: ' "$daemon_log" || { cat "$daemon_log" >&2; exit 1; }

say "Add two tenants. Each gets a directory with its own API socket and its own nbdkit."
host thinproxy --admin tenant add alice
host thinproxy --admin tenant add bob
host ls "$run_dir/tenants/alice"

say "Start a container for each tenant: namespaces of its own, and only its tenant's directory at /run/thinproxy."
container_start alice
cpid[alice]=$container
container_start bob
cpid[bob]=$container
inside alice 'hostname; ls /run/thinproxy; ls /dev/mapper'

say "alice creates a 1 GiB volume. It takes no pool space until written."
inside alice 'thinproxy create base --size 1G'

say "alice attaches it as a kernel NBD device, served by her own nbdkit."
capture dev alice 'thinproxy attach base'
inside alice 'thinproxy ls --attached'

say "alice makes a file system on it (this takes a while in the guest) and mounts it."
inside alice "mkfs.ext4 -L base $dev"
inside alice "mount $dev /mnt && df -h /mnt"

say "alice writes a file, then unmounts and detaches."
inside alice 'echo "hello from alice" >/mnt/hello.txt && ls -l /mnt/hello.txt'
inside alice "umount /mnt && thinproxy detach $dev"

say "alice commits the volume: it is read-only from now on, and a valid parent."
inside alice 'thinproxy commit base'

say "alice snapshots it. The snapshot shares every block with base until written."
inside alice 'thinproxy snapshot work --from base'
capture sdev alice 'thinproxy attach work'

say "The snapshot sees the data, and takes writes of its own."
inside alice "mount $sdev /mnt && cat /mnt/hello.txt"
inside alice 'echo "written in the snapshot" >/mnt/work.txt && ls /mnt && umount /mnt'

say "The origin is read-only: attached, it refuses writes, and it has not changed."
capture odev alice 'thinproxy attach base'
inside alice 'thinproxy ls --attached'
inside alice "dd if=/dev/zero of=$odev bs=4k count=1 oflag=direct 2>&1 | head -n 1 || true"
inside alice "mount -o ro $odev /mnt && ls /mnt && umount /mnt"

say "Each tenant's nbdkit exports that tenant's volumes only. bob, in his own container, sees none of alice's: no volumes, no exports, and her volume fails like a name that does not exist."
inside bob 'ls /run/thinproxy; thinproxy ls'
inside alice "nbdinfo --list --json 'nbd+unix:///?socket=/run/thinproxy/nbd.sock' | jq -c '[.exports[].\"export-name\"]'"
inside bob "nbdinfo --list --json 'nbd+unix:///?socket=/run/thinproxy/nbd.sock' | jq -c '[.exports[].\"export-name\"]'"
inside bob 'thinproxy attach base || true'
inside bob 'thinproxy attach alice/base || true'
inside bob 'thinproxy snapshot mine --from base || true'

say "The admin sees alice's volumes and the pool: only written blocks take space."
inside alice "thinproxy detach $odev && thinproxy detach $sdev"
host thinproxy --admin --tenant alice ls
host thinproxy --admin pool

say "Now what thinproxy is for: alice runs an unmodified containerd in her container. thinproxy snapshotter serves containerd's snapshotter API on a socket, and each image layer and container root becomes one of her thin volumes."
inside alice 'thinproxy snapshotter >/run/snapshotter.log 2>&1 </dev/null &
timeout 60 sh -c "until [ -S /run/thinproxy-snapshotter/snapshotter.sock ]; do sleep 0.1; done"'
inside alice 'mkdir -p /run/containerd && cat >/run/containerd/config.toml <<EOF
version = 2
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[proxy_plugins.thinproxy]
  type = "snapshot"
  address = "/run/thinproxy-snapshotter/snapshotter.sock"
EOF'
inside alice 'containerd --config /run/containerd/config.toml >/run/containerd.log 2>&1 </dev/null &
timeout 120 sh -c "until ctr version >/dev/null 2>&1; do sleep 0.5; done"; ctr plugins ls | grep -w thinproxy'

say "An image of two layers (busybox; then a file added, one changed, one removed), made here without a network. ctr imports it onto thin volumes: a fresh file system for the first layer, a thin snapshot of it for the second."
image=thinproxy.test/demo:1
host "$(dirname "$0")/oci-image" "$work/image.tar" "$image"
inside alice "ctr image import --snapshotter thinproxy $work/image.tar"
inside alice 'ctr snapshots --snapshotter thinproxy ls'
inside alice 'thinproxy ls'

say "ctr run: the container's root is a thin snapshot of the top layer on /dev/nbdN, and what it writes stays its own."
inside alice "ctr run --rm --snapshotter thinproxy $image first sh -c 'df -h / | tail -n 1; cat /changed /added; ls /removed 2>&1; echo scribbled >/changed; cat /changed'"
inside alice "ctr run --rm --snapshotter thinproxy $image second cat /changed"

say "Removing the image lets containerd's garbage collection remove its snapshots, and with them alice's volumes. Then alice stops containerd and the snapshotter."
inside alice "ctr image rm --sync $image && ctr snapshots --snapshotter thinproxy ls && thinproxy ls"
inside alice "pkill -x containerd; pkill -f '^thinproxy snapshotter'"
