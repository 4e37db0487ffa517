# Sourced by guest tests after functions.sh and container.sh, never run: Debian's own
# containerd (with ctr and runc) in a container of its own, and a two-layer OCI image
# the test builds itself, with no network, to run in it.

ctrd_dir=$scratch/containerd # its config, and the image archive
ctrd_log=$TP_RESULTS/containerd.log # kept with the results, for a look after a failure
ctrd_container= # the container's init
ctrd_pid=       # containerd itself
mkdir -p "$ctrd_dir"
: >"$ctrd_log"

# containerd_container [TENANT]: a container for containerd (container_new): fresh
# tmpfs at /run/containerd (state, shim sockets, fifos) and /var/lib/containerd (root:
# content, metadata, built-in snapshotters), so that it runs with its defaults and ctr
# with its own; with TENANT, TENANT's directory at /run/thinproxy and no device-mapper,
# as container_start makes it. The guest's cgroup2 at /sys/fs/cgroup is runc's.
containerd_container() {
	local setup='mkdir -p /run/containerd /var/lib/containerd &&
		mount -t tmpfs -o mode=0711 containerd-state /run/containerd &&
		mount -t tmpfs -o mode=0711 containerd-root /var/lib/containerd'
	[ -z "${1-}" ] || setup="$(tenant_mounts "$1") && $setup"
	container_new "${1:-containerd}" "$setup"
	ctrd_container=$container_pid
}

# containerd_start [TOML]: start containerd in the container, configured with the lines
# TOML beyond its defaults (e.g. a [proxy_plugins.NAME] or a snapshotter's [plugins.X]
# section), and wait until it has booted (at most 120 s).
containerd_start() {
	{
		echo 'version = 2'
		# The CRI plugin is Kubernetes' door; ctr needs none of it.
		echo 'disabled_plugins = ["io.containerd.grpc.v1.cri"]'
		printf '%s\n' "${1-}"
	} >"$ctrd_dir/config.toml"
	local from i nsenter_pid
	from=$(($(wc -l <"$ctrd_log") + 1))
	# nsenter itself (not in_container, a function that would run in a subshell), so that
	# containerd is its child: nsenter forks it into the container's pid namespace.
	nsenter --target "$ctrd_container" --mount --pid --uts --ipc --net --root --wd -- \
		containerd --config "$ctrd_dir/config.toml" >>"$ctrd_log" 2>&1 &
	nsenter_pid=$!
	for ((i = 0; i < 2400; i++)); do
		tail -n "+$from" "$ctrd_log" | grep -q 'containerd successfully booted' && break
		kill -0 "$nsenter_pid" 2>/dev/null || { cat "$ctrd_log" >&2; fail "containerd exited"; }
		sleep 0.05
	done
	((i < 2400)) || { cat "$ctrd_log" >&2; fail "containerd did not boot"; }
	ctrd_pid=$(pgrep -P "$nsenter_pid" -x containerd) || fail "containerd has no pid"
}

# containerd_stop [SIGNAL]: stop containerd (SIGTERM, or SIGNAL) and wait until it is
# gone. Its shims and containers live on, as they do when containerd restarts.
containerd_stop() {
	[ -n "$ctrd_pid" ] || return 0
	kill "-${1:-TERM}" "$ctrd_pid"
	while kill -0 "$ctrd_pid" 2>/dev/null; do sleep 0.05; done
	ctrd_pid=
}

# devmapper_pool NAME: a dm-thin pool made with dmsetup, as an admin makes one for
# containerd's devmapper snapshotter: 1 GiB of data, 64 MiB of metadata on sparse loop
# files, 64 KiB blocks, no zeroing. Removed with the test, after any thin device left in
# it (devmapper names them NAME-snap-N).
devmapper_pool() {
	local data meta
	data=$(loopdev 1G "$1-data")
	meta=$(loopdev 64M "$1-meta")
	dmsetup create "$1" --table "0 $(blockdev --getsz "$data") thin-pool $meta $data 128 32768 1 skip_block_zeroing"
	cleanup "dmsetup remove $1"
	cleanup "for d in \$(dmsetup ls | awk '/^$1-/ { print \$1 }'); do dmsetup remove --force \$d; done"
}

# devmapper_config POOL: the configuration that makes containerd's built-in devmapper
# snapshotter use POOL (for containerd_start), with layers of 64 MiB file systems.
devmapper_config() {
	printf '[plugins."io.containerd.snapshotter.v1.devmapper"]\n  pool_name = "%s"\n  base_image_size = "64MB"\n  discard_blocks = true\n' "$1"
}

# proxy_agent_start NAME COMMAND: start the snapshotter agent COMMAND (a shell command,
# {socket} replaced by /run/containerd/NAME.sock) in containerd's container, where a
# proxy plugin's agent runs, and wait until it listens. Its output goes to
# $TP_RESULTS/NAME.log; sets $proxy_pid.
proxy_agent_start() {
	local sock=/run/containerd/$1.sock nsenter_pid
	# A killed agent's socket stays behind; the new agent replaces it, and the wait
	# below is for the new one.
	rm -f "/proc/$ctrd_container/root$sock"
	nsenter --target "$ctrd_container" --mount --pid --uts --ipc --net --root --wd -- \
		sh -c "exec ${2//\{socket\}/$sock}" >>"$TP_RESULTS/$1.log" 2>&1 &
	nsenter_pid=$!
	# The container's view of its files, from the guest.
	wait_for_socket "/proc/$ctrd_container/root$sock"
	proxy_pid=$(pgrep -P "$nsenter_pid") || fail "the agent $1 has no pid"
}

# proxy_plugin_config NAME: the configuration of containerd's proxy snapshotter NAME,
# served by proxy_agent_start's agent NAME (for containerd_start).
proxy_plugin_config() {
	printf '[proxy_plugins.%s]\n  type = "snapshot"\n  address = "/run/containerd/%s.sock"\n' "$1" "$1"
}

# ctrd ARG...: ctr inside containerd's container, on its default socket and namespace.
ctrd() { in_container "$ctrd_container" ctr "$@"; }

# oci_image ARCHIVE NAME: write the two-layer OCI image archive NAME (demo/oci-image:
# busybox in layer 1; in layer 2 a file added, one changed and one removed by a whiteout).
oci_image() { "$TP_SRC/demo/oci-image" "$@"; }

# containerd_runs_image SNAPSHOTTER: import a fresh test image (oci_image) with
# SNAPSHOTTER and run it in two containers: the first sees layer 2 over layer 1 and
# writes in its root, the second sees the image as it was; after both (ctr run --rm),
# SNAPSHOTTER holds the image's two committed layers and nothing else. Narrates with the
# seconds since the test began, so the log shows import and first-output times.
containerd_runs_image() {
	local sn=$1 image=thinproxy.test/layers:1 out
	[ -e "$ctrd_dir/image.tar" ] || oci_image "$ctrd_dir/image.tar" "$image"
	step "$sn: ctr image import"
	ctrd image import --snapshotter "$sn" "$ctrd_dir/image.tar" >/dev/null
	step "$sn: a container sees layer 2 over layer 1, and writes in its root"
	out=$(ctrd run --rm --snapshotter "$sn" "$image" tp-first sh -c \
		'cat /changed /added /kept; [ -e /removed ] || echo "no /removed"
		echo scribbled >/changed && rm /kept && echo new >/new && cat /changed')
	[ "$out" = "$(printf 'changed\nadded\nkept\nno /removed\nscribbled')" ] ||
		fail "$sn: the first container printed: $out"
	step "$sn: the next container sees the image as it was"
	out=$(ctrd run --rm --snapshotter "$sn" "$image" tp-second sh -c \
		'cat /changed /kept; [ -e /new ] || echo "no /new"')
	[ "$out" = "$(printf 'changed\nkept\nno /new')" ] || fail "$sn: the second container printed: $out"
	out=$(ctrd snapshots --snapshotter "$sn" ls)
	[ "$(awk 'NR > 1 { print $NF }' <<<"$out" | sort | uniq -c | tr -s ' ')" = " 2 Committed" ] ||
		fail "$sn: snapshots left: $out"
	step "$sn: done"
}
