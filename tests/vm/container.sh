# Sourced by guest tests after functions.sh, never run: "containers" for tenants, made
# with unshare as a container runtime would make them, for tests of what a tenant sees.

# container_new NAME SETUP: start a container with its own mount, pid, uts, ipc and
# network namespaces, its own /proc and hostname NAME, after running the shell commands
# SETUP in it (mounts). Sets $container_pid to the pid of its init as the guest sees it.
# Ends with the test: killing its init kills everything in it.
container_new() {
	local name=$1 setup=$2 ready=$scratch/container-$1.ready i unshare_pid
	rm -f "$ready"
	unshare --mount --pid --uts --ipc --net --fork --mount-proc --propagation private \
		sh -c "$setup"' && hostname "$1" && touch "$2" && exec sleep infinity' \
		container "$name" "$ready" &
	unshare_pid=$!
	for ((i = 0; i < 1200; i++)); do
		[ -e "$ready" ] && break
		sleep 0.05
	done
	[ -e "$ready" ] || fail "the container $name did not start"
	container_pid=$(pgrep -P "$unshare_pid")
	[ -n "$container_pid" ] || fail "the container $name has no init"
	cleanup "kill -KILL $container_pid $unshare_pid"
}

# container_start TENANT: a container for TENANT (container_new), with TENANT's directory
# bind-mounted at /run/thinproxy (and nothing else of the daemon's) and an empty tmpfs
# over /dev/mapper.
container_start() {
	container_new "$1" "$(tenant_mounts "$1")"
}

# tenant_mounts TENANT: the SETUP of container_start, for containers that add their own.
tenant_mounts() {
	printf 'mount --bind %q /run/thinproxy && mount -t tmpfs -o mode=0755 none /dev/mapper' \
		"$run_dir/tenants/$1"
}

# in_container PID CMD...: run CMD in the container whose init is PID. Its root too: the
# guest runs chrooted, and entering a mount namespace starts at the namespace's root.
in_container() {
	local pid=$1
	shift
	nsenter --target "$pid" --mount --pid --uts --ipc --net --root --wd -- "$@"
}
