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

# oci_blob DIR FILE: move FILE into the layout DIR's blobs; sets $digest (sha256:HEX)
# and $size.
oci_blob() {
	local hex
	hex=$(sha256sum "$2" | cut -d' ' -f1)
	size=$(stat -c %s "$2")
	mv "$2" "$1/blobs/sha256/$hex"
	digest=sha256:$hex
}

# oci_image ARCHIVE NAME: write a two-layer OCI image archive (an image layout in a tar,
# what `ctr image import` takes) named NAME (annotation io.containerd.image.name, which
# ctr uses as given). Layer 1: busybox-static's /bin/busybox with its applets as links,
# and the files /changed ("original"), /removed and /kept. Layer 2: /added ("added"),
# /changed replaced ("changed"), /removed deleted by a whiteout (.wh.removed). Layers are
# plain tars, so each one's digest is its diff_id.
oci_image() {
	local archive=$1 name=$2 dir=$ctrd_dir/oci arch d digest size l1 l1size l2 l2size cfg cfgsize mf mfsize
	rm -rf "$dir"
	mkdir -p "$dir/l1/bin" "$dir/l2" "$dir/layout/blobs/sha256"
	cp /bin/busybox "$dir/l1/bin/busybox"
	# Its applets as symbolic links to the guest's busybox (/usr/bin/busybox where /bin
	# is a link), made relative (to bin/busybox) by tar's --transform below: one exec
	# instead of one ln per applet.
	/bin/busybox --install -s "$dir/l1/bin"
	echo original >"$dir/l1/changed"
	echo removed >"$dir/l1/removed"
	echo kept >"$dir/l1/kept"
	echo added >"$dir/l2/added"
	echo changed >"$dir/l2/changed"
	: >"$dir/l2/.wh.removed"
	for d in l1 l2; do
		# Entries named as image builders name them (bin/busybox, .wh.removed), no "./".
		tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=gnu \
			--transform 's,^/.*/busybox$,busybox,' -C "$dir/$d" -cf "$dir/$d.tar" $(ls -A "$dir/$d")
	done
	oci_blob "$dir/layout" "$dir/l1.tar"
	l1=$digest l1size=$size
	oci_blob "$dir/layout" "$dir/l2.tar"
	l2=$digest l2size=$size
	arch=$(dpkg --print-architecture)
	printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["%s","%s"]}}' \
		"$arch" "$l1" "$l2" >"$dir/config.json"
	oci_blob "$dir/layout" "$dir/config.json"
	cfg=$digest cfgsize=$size
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s},{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
		"$cfg" "$cfgsize" "$l1" "$l1size" "$l2" "$l2size" >"$dir/manifest.json"
	oci_blob "$dir/layout" "$dir/manifest.json"
	mf=$digest mfsize=$size
	printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
		"$mf" "$mfsize" "$arch" "$name" "${name##*:}" >"$dir/layout/index.json"
	echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/layout/oci-layout"
	tar -C "$dir/layout" -cf "$archive" oci-layout index.json blobs
	rm -rf "$dir"
}

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
