# Sourced by bench/guest-io.sh, bench/guest-cache.sh and bench/host.sh: the servers
# thinproxy's plugin is compared with. The caller defines cleanup and fail as in
# tests/vm/functions.sh (and, for start_servers, sets fio_dev and copy_dev).

# start_file DIR NAME DEVICE: nbdkit's file plugin on DEVICE, at DIR/file-NAME.sock
# (pid in DIR/file-NAME.pid), stopped by cleanup.
start_file() {
	nbdkit -U "$1/file-$2.sock" -P "$1/file-$2.pid" file "$3"
	cleanup "kill \$(cat $1/file-$2.pid)"
}

# start_qemu DIR NAME DEVICE [OPTION...]: qemu-nbd (raw, shared by 8 clients, export
# NAME) on DEVICE with OPTIONs (e.g. --cache=none --aio=native), at DIR/qemu-NAME.sock
# (pid in DIR/qemu-NAME.pid), stopped by cleanup.
start_qemu() {
	local b=$1 v=$2 dev=$3
	shift 3
	qemu-nbd --fork -f raw -k "$b/qemu-$v.sock" -x "$v" -t -e 8 --pid-file="$b/qemu-$v.pid" "$@" "$dev"
	cleanup "kill \$(cat $b/qemu-$v.pid)"
}

# start_servers DIR: nbdkit's file plugin, qemu-nbd and nbd-server on fio_dev and
# copy_dev (exports "fio" and "copy"), with their sockets in DIR: file-VOLUME.sock,
# qemu-VOLUME.sock, nbd-server.sock. Each is stopped by cleanup.
start_servers() {
	local b=$1 v dev i
	for v in fio copy; do
		dev=${v}_dev
		start_file "$b" "$v" "${!dev}"
		start_qemu "$b" "$v" "${!dev}"
	done
	cat >"$b/nbd-server.conf" <<EOC
[generic]
user = root
group = root
unixsock = $b/nbd-server.sock
[fio]
exportname = $fio_dev
[copy]
exportname = $copy_dev
EOC
	nbd-server -C "$b/nbd-server.conf" -p "$b/nbd-server.pid"
	cleanup "kill \$(cat $b/nbd-server.pid)"
	for ((i = 0; i < 100; i++)); do
		[ -S "$b/nbd-server.sock" ] && return 0
		sleep 0.05
	done
	fail "nbd-server did not start"
}

# start_alice MIB: in the guest, thinproxyd (tests/vm/functions.sh) on a loop pool that
# holds MIB MiB of volumes with room to spare above the daemon's free-space floor, and
# its tenant alice; sets sock to her nbd.sock. The daemon is stopped by cleanup.
start_alice() {
	export TP_TEST_LOOP_SIZE=$(($1 + 1024))M
	start_daemon --log-level info
	cleanup "kill $daemon_pid"
	tp --admin tenant add alice >/dev/null
	sock=$run_dir/tenants/alice/nbd.sock
	wait_for_socket "$sock"
}

# thin_volume NAME MIB: in the guest, with thinproxyd started (tests/vm/functions.sh) and
# tenant alice's nbd.sock at $sock: create alice's volume NAME, activate it by opening
# it through the plugin once, and print its dm device.
thin_volume() {
	admin_api POST /v1/tenants/alice/volumes "{\"name\":\"$1\",\"size\":$(($2 << 20))}"
	expect 201
	local id
	id=$(field .thin_id)
	nbdinfo --size "nbd+unix:///$1?socket=$sock" >/dev/null
	admin_api GET /v1/pool
	echo "/dev/mapper/$(field .name)-$id"
}
