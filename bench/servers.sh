# Sourced by bench/guest-io.sh and bench/host.sh: the servers thinproxy's plugin is
# compared with. The caller sets fio_dev and copy_dev and defines cleanup and fail as in
# tests/vm/functions.sh.

# start_servers DIR: nbdkit's file plugin, qemu-nbd and nbd-server on fio_dev and
# copy_dev (exports "fio" and "copy"), with their sockets in DIR: file-VOLUME.sock,
# qemu-VOLUME.sock, nbd-server.sock. Each is stopped by cleanup.
start_servers() {
	local b=$1 v dev i
	for v in fio copy; do
		dev=${v}_dev
		nbdkit -U "$b/file-$v.sock" -P "$b/file-$v.pid" file "${!dev}"
		cleanup "kill \$(cat $b/file-$v.pid)"
		qemu-nbd --fork -f raw -k "$b/qemu-$v.sock" -x "$v" -t -e 8 --pid-file="$b/qemu-$v.pid" "${!dev}"
		cleanup "kill \$(cat $b/qemu-$v.pid)"
	done
	cat >"$b/nbd-server.conf" <<EOF
[generic]
user = root
group = root
unixsock = $b/nbd-server.sock
[fio]
exportname = $fio_dev
[copy]
exportname = $copy_dev
EOF
	nbd-server -C "$b/nbd-server.conf" -p "$b/nbd-server.pid"
	cleanup "kill \$(cat $b/nbd-server.pid)"
	for ((i = 0; i < 100; i++)); do
		[ -S "$b/nbd-server.sock" ] && return 0
		sleep 0.05
	done
	fail "nbd-server did not start"
}
