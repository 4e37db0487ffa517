#!/usr/bin/env bash
# A throwaway one-node Ceph cluster for tests (issue 24): one mon, one mgr, one OSD on
# BlueStore in a sparse file, cephx on, from Debian 12's ceph 16.2 packages. No device-
# mapper, no systemd, nothing under /etc/ceph or /var/lib/ceph: every file it makes
# (config, keyrings, mon store, OSD data, sockets, logs, pid files) is under DIR.
#
#   cluster.sh start DIR [POOL]  create and start it; POOL (default thinproxy) is an RBD
#                                pool, initialised, with clone format 2 allowed
#   cluster.sh stop DIR          stop its daemons (by their pid files) and wait for them
#   cluster.sh env DIR           print shell lines: eval "$(cluster.sh env DIR)"
#
# Clients: CEPH_CONF=DIR/ceph.conf ceph -s, rbd -c DIR/ceph.conf ls POOL; the admin key
# is DIR/admin.keyring (0600), the [client] default.
#
# Addresses: the mon listens on a loopback address of its own, 127.X.Y.Z picked at random
# (Linux routes all of 127/8 to lo), on a port that no socket listens on, so that clusters
# started at the same time in other DIRs do not meet; the mgr and the OSD bind on the
# same address. CEPH_TEST_IP and CEPH_TEST_PORT (msgr2; msgr1 is the next port) choose
# them instead. CEPH_TEST_TIMEOUT (seconds, default 120) bounds the wait for
# active+clean.
#
# The mgr is there because the mon alone never learns PG states (the mgr reports them:
# without it `ceph -s` says "unknown" forever and "active+clean" cannot be waited for),
# and librbd's background tasks (rbd_support: trash purge, task add) live in it. Plain
# rbd create/clone/import/export and namespaces would work without it.
#
# The OSD's keyring is DIR/osd/data/keyring, its BlueStore a 10 GiB sparse file
# DIR/osd/block (about 30 MiB allocated once up).
#
# Must run as root (the daemons run as root here, with no --setuser).
set -euo pipefail

prog=${0##*/}
starting= # set while `start` runs: a failure stops what it started
die() {
	echo "$prog: $*" >&2
	if [ -n "$starting" ]; then
		local d=$starting
		starting=
		cmd_stop "$d" || true
	fi
	exit 1
}

need_bins() {
	local b missing=()
	for b in ceph ceph-mon ceph-mgr ceph-osd ceph-authtool monmaptool rbd; do
		command -v "$b" >/dev/null || missing+=("$b")
	done
	((${#missing[@]} == 0)) ||
		die "missing ${missing[*]}: install Debian's ceph-mon ceph-mgr ceph-osd ceph-common (.ci/deps)"
}

# The pid files the daemons write (pid_file in ceph.conf).
daemons=(mon.a mgr.x osd.0)

# A daemon's pid if it is alive and is one of this DIR's (its command line names our
# ceph.conf: a stale pid file whose pid was reused by someone else is not ours).
daemon_pid() {
	local dir=$1 name=$2 pid
	[ -s "$dir/run/$name.pid" ] || return 1
	pid=$(<"$dir/run/$name.pid")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$dir/ceph.conf" || return 1
	echo "$pid"
}

# SIGTERM, wait (SIGKILL after 15 s): the OSD and mgr first, then the mon, since an OSD
# stopping tells the mon and waits up to 5 s for an answer that a dead mon never sends.
stop_daemons() {
	local dir=$1 name pid pids=() i
	shift
	for name; do
		pid=$(daemon_pid "$dir" "$name") || continue
		kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
	done
	((${#pids[@]})) || return 0
	for ((i = 0; i < 200; i++)); do
		((i != 150)) || {
			echo "$prog: still alive after 15 s, killing: ${pids[*]}" >&2
			kill -KILL "${pids[@]}" 2>/dev/null || true
		}
		for pid in "${pids[@]}"; do [ -d "/proc/$pid" ] && break; done
		[ -d "/proc/$pid" ] || return 0
		sleep 0.1
	done
	die "could not stop ${pids[*]}"
}

cmd_stop() {
	stop_daemons "$1" osd.0 mgr.x
	stop_daemons "$1" mon.a
}

cmd_env() {
	local dir=$1
	[ -f "$dir/ceph.conf" ] || die "$dir/ceph.conf: no cluster there"
	printf 'export CEPH_CONF=%q\n' "$dir/ceph.conf"
	printf 'export CEPH_TEST_DIR=%q\n' "$dir"
	printf 'export CEPH_TEST_POOL=%q\n' "$(<"$dir/pool")"
}

port_free() { [ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

write_conf() {
	local d=$1 fsid=$2 ip=$3 port=$4
	# Daemon-only paths go in the daemon sections: clients (later: an unprivileged
	# nbdkit) read the same file and must not try to open root's log or sockets.
	daemon_paths() {
		echo "admin_socket = $d/run/\$cluster-\$name.asok"
		echo "log_file = $d/log/\$cluster-\$name.log"
		echo "pid_file = $d/run/\$name.pid"
	}
	{
		cat <<-EOF
			# made by tests/ceph/cluster.sh
			[global]
			fsid = $fsid
			mon_host = [v2:$ip:$port,v1:$ip:$((port + 1))]
			public_addr = $ip
			cluster_addr = $ip
			auth_cluster_required = cephx
			auth_service_required = cephx
			auth_client_required = cephx
			auth_allow_insecure_global_id_reclaim = false
			run_dir = $d/run
			crash_dir = $d/crash
			# one OSD: pools of size 1, no warnings about it, no autoscaler resizing PGs
			osd_pool_default_size = 1
			osd_pool_default_min_size = 1
			osd_pool_default_pg_num = 8
			osd_pool_default_pgp_num = 8
			osd_pool_default_pg_autoscale_mode = off
			mon_allow_pool_size_one = true
			mon_warn_on_pool_no_redundancy = false
			osd_crush_chooseleaf_type = 0
			mon_max_pg_per_osd = 1000
			# PG states reach ceph -s within a second, not five: waits end sooner
			mgr_stats_period = 1
			mon_mgr_digest_period = 1

			[mon]
			mon_data = $d/mon
			mon_initial_members = a
			mon_cluster_log_file = $d/log/ceph.log
			mon_data_avail_warn = 2
			mon_data_avail_crit = 1
			# no restful, iostat, nfs: fewer mgr modules, less memory, faster start
			mgr_initial_modules =
			$(daemon_paths)

			[mgr]
			mgr_data = $d/mgr
			keyring = $d/mgr/keyring
			# The always-on modules stay: disabling them (mgr_disabled_modules) turns health
			# to HEALTH_ERR "module has failed" and saves only 60 MiB of the mgr's ~280.
			$(daemon_paths)

			[osd]
			osd_data = $d/osd/data
			keyring = $d/osd/data/keyring
			osd_objectstore = bluestore
			bluestore_block_path = $d/osd/block
			bluestore_block_size = $((10 << 30))
			bluestore_block_create = true
			bluestore_fsck_on_mkfs = false
			# small memory: fixed caches instead of autotuning towards osd_memory_target
			osd_memory_target = $((896 << 20))
			bluestore_cache_autotune = false
			bluestore_cache_size = $((64 << 20))
			bluestore_rocksdb_options = compression=kNoCompression,max_write_buffer_number=2,min_write_buffer_number_to_merge=1,recycle_log_file_num=2,write_buffer_size=16777216,writable_file_max_buffer_size=0,compaction_readahead_size=2097152,max_background_compactions=1,max_total_wal_size=67108864
			osd_op_num_shards = 1
			osd_op_num_threads_per_shard = 2
			$(daemon_paths)

			[client]
			keyring = $d/admin.keyring
		EOF
	} >"$d/ceph.conf"
}

# ceph with this cluster's config and admin key, a bounded time
cephc() { timeout 60 ceph -c "$dir/ceph.conf" --connect-timeout 30 "$@"; }

cmd_start() {
	dir=$1
	local pool=${2:-thinproxy} ip port fsid uuid key id i t0 pgs last=
	[ "$(id -u)" = 0 ] || die "must run as root"
	need_bins
	command -v ss >/dev/null || die "missing ss: install iproute2"
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd -P)
	for i in "${daemons[@]}"; do
		daemon_pid "$dir" "$i" >/dev/null && die "$dir: $i is running; stop it first"
	done
	[ -e "$dir/ceph.conf" ] && die "$dir already holds a cluster (ceph.conf); use an empty directory"
	t0=$SECONDS
	starting=$dir
	mkdir -p "$dir"/{mon,mgr,osd/data,run,log,crash}
	# the mon store holds every key, the sockets control the daemons; ceph.conf and the
	# directory itself stay as readable as the caller made them (for unprivileged clients)
	chmod 0700 "$dir"/{mon,mgr,osd,run,log,crash}
	echo "$pool" >"$dir/pool"

	ip=${CEPH_TEST_IP:-}
	port=${CEPH_TEST_PORT:-}
	if [ -z "$port" ]; then
		for ((i = 0; i < 100; i++)); do
			port=$((20000 + RANDOM % 20000))
			port_free "$port" && port_free $((port + 1)) && break
		done
		port_free "$port" || die "no free port found"
	fi
	[ -n "$ip" ] || ip=127.$((1 + RANDOM % 254)).$((RANDOM % 256)).$((1 + RANDOM % 254))
	fsid=$(cat /proc/sys/kernel/random/uuid)
	write_conf "$dir" "$fsid" "$ip" "$port"

	# keys: mon., client.admin (full), mgr.x; the mon's initial keyring holds all three
	{
		ceph-authtool "$dir/admin.keyring" --create-keyring --gen-key -n client.admin \
			--cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' &&
			ceph-authtool "$dir/mgr/keyring" --create-keyring --gen-key -n mgr.x \
				--cap mon 'allow profile mgr' --cap osd 'allow *' --cap mds 'allow *' &&
			ceph-authtool "$dir/mon.keyring" --create-keyring --gen-key -n mon. --cap mon 'allow *' &&
			ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/admin.keyring" &&
			ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/mgr/keyring"
	} >/dev/null || die "ceph-authtool failed"

	monmaptool --create --fsid "$fsid" --addv a "[v2:$ip:$port,v1:$ip:$((port + 1))]" \
		--enable-all-features --set-min-mon-release pacific "$dir/monmap" >/dev/null
	ceph-mon -c "$dir/ceph.conf" -i a --mkfs --monmap "$dir/monmap" \
		--keyring "$dir/mon.keyring" >/dev/null 2>"$dir/log/mkfs-mon.err" ||
		die "ceph-mon --mkfs failed: $(cat "$dir/log/mkfs-mon.err")"
	ceph-mon -c "$dir/ceph.conf" -i a 2>"$dir/log/start-mon.err" ||
		die "ceph-mon did not start: $(cat "$dir/log/start-mon.err"; tail -5 "$dir/log/ceph-mon.a.log" 2>/dev/null)"
	ceph-mgr -c "$dir/ceph.conf" -i x 2>"$dir/log/start-mgr.err" ||
		die "ceph-mgr did not start: $(cat "$dir/log/start-mgr.err")"

	# the OSD: `ceph osd new` registers it with its key, ceph-osd --mkfs makes BlueStore
	uuid=$(cat /proc/sys/kernel/random/uuid)
	key=$(ceph-authtool --gen-print-key)
	id=$(printf '{"cephx_secret": "%s"}' "$key" | cephc osd new "$uuid" -i -) ||
		die "ceph osd new failed"
	[ "$id" = 0 ] || die "ceph osd new gave id '$id', expected 0"
	ceph-authtool "$dir/osd/data/keyring" --create-keyring -n "osd.$id" --add-key "$key" >/dev/null ||
		die "ceph-authtool failed"
	ceph-osd -c "$dir/ceph.conf" -i "$id" --mkfs --osd-uuid "$uuid" \
		>"$dir/log/mkfs-osd.err" 2>&1 ||
		die "ceph-osd --mkfs failed: $(tail -20 "$dir/log/mkfs-osd.err")"
	ceph-osd -c "$dir/ceph.conf" -i "$id" 2>"$dir/log/start-osd.err" ||
		die "ceph-osd did not start: $(cat "$dir/log/start-osd.err")"

	# the RBD pool; clone format 2 (clones of unprotected snapshots, in namespaces)
	# needs every client to be mimic or newer
	cephc osd pool create "$pool" 8 8 replicated >/dev/null 2>&1 || die "ceph osd pool create $pool failed"
	cephc osd set-require-min-compat-client mimic >/dev/null 2>&1 ||
		die "ceph osd set-require-min-compat-client mimic failed"
	timeout 120 rbd -c "$dir/ceph.conf" pool init "$pool" || die "rbd pool init $pool failed"

	# wait for the OSD up and every PG active+clean (the mgr reports PG states)
	for ((i = 0; ; i++)); do
		pgs=$(cephc pg stat 2>/dev/null) || pgs=
		# "8 pgs: 8 active+clean; 19 B data, ..."
		if [[ $pgs =~ ^([0-9]+)\ pgs:\ ([0-9]+)\ active\+clean\; ]] &&
			[ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ] &&
			[ "$(cephc osd stat -f json 2>/dev/null | grep -o '"num_up_osds":[0-9]*')" = '"num_up_osds":1' ]; then
			break
		fi
		if ((SECONDS - t0 > ${CEPH_TEST_TIMEOUT:-120})); then
			last=$(cephc -s 2>&1) || true
			die "not up and active+clean within ${CEPH_TEST_TIMEOUT:-120} s; ceph -s:"$'\n'"$last"
		fi
		sleep 0.5
	done
	starting=
	echo "$prog: cluster up in $dir in $((SECONDS - t0)) s (mon $ip:$port, pool $pool)"
}

(($# >= 2)) || die "usage: $prog start DIR [POOL] | stop DIR | env DIR"
case $1 in
start) cmd_start "$2" "${3:-thinproxy}" ;;
stop) [ -d "$2" ] || die "$2: no such directory"; cmd_stop "$(cd "$2" && pwd -P)" ;;
env) [ -d "$2" ] || die "$2: no such directory"; cmd_env "$(cd "$2" && pwd -P)" ;;
*) die "usage: $prog start DIR [POOL] | stop DIR | env DIR" ;;
esac
