# Sourced by guest tests after functions.sh, never run: "containers" for tenants, made
# with unshare as a container runtime would make them, for tests of what a tenant sees.

# container_start TENANT: start a container for TENANT, with its own mount, pid, uts, ipc
# and network namespaces, its own /proc, TENANT's directory bind-mounted at
# /run/thinproxy (and nothing else of the daemon's), and an empty tmpfs over /dev/mapper.
# Sets $container_pid to the pid of its init as the guest sees it. Ends with the test:
# killing its init kills everything in it.
container_start() {
	local t=$1 ready=$scratch/container-$1.ready i unshare_pid
	rm -f "$ready"
	unshare --mount --pid --uts --ipc --net --fork --mount-proc --propagation private \
		sh -c 'mount --bind "$1" /run/thinproxy && mount -t tmpfs -o mode=0755 none /dev/mapper &&
			hostname "$2" && touch "$3" && exec sleep infinity' \
		container "$run_dir/tenants/$t" "$t" "$ready" &
	unshare_pid=$!
	for ((i = 0; i < 1200; i++)); do
		[ -e "$ready" ] && break
		sleep 0.05
	done
	[ -e "$ready" ] || fail "the container of $t did not start"
	container_pid=$(pgrep -P "$unshare_pid")
	[ -n "$container_pid" ] || fail "the container of $t has no init"
	cleanup "kill -KILL $container_pid $unshare_pid"
}

# in_container PID CMD...: run CMD in the container whose init is PID. Its root too: the
# guest runs chrooted, and entering a mount namespace starts at the namespace's root.
in_container() {
	local pid=$1
	shift
	nsenter --target "$pid" --mount --pid --uts --ipc --net --root --wd -- "$@"
}
