/* Starting a program unprivileged: what the daemon's children run as (tenants' nbdkits,
 * the API process), everything between fork and exec. The child joins a cgroup if
 * given, keeps only the fds it is given (onto 3, 4, ...), stdin and stdout on /dev/null
 * and stderr if asked, starts with default signals in a session of its own in /, with
 * umask 077, no core dumps and the given limits, in the IO_FLUSHER state if asked,
 * then drops to UID:GID with no supplementary groups, no capabilities (bounding,
 * ambient, permitted, effective and inheritable sets) and no_new_privs, and execs.
 * Safe in a threaded daemon: the child makes only async-signal-safe calls. */
#ifndef TP_DAEMON_SPAWN_H
#define TP_DAEMON_SPAWN_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/types.h>

/* The first fd given, in the child: sd_listen_fds(3)'s first. */
#define SPAWN_FIRST_FD 3
#define SPAWN_FDS_MAX  8
/* The PATH a child starts with: nothing of the caller's environment is passed on. */
#define SPAWN_SAFE_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct spawn_args {
	const int *fds;              /* onto SPAWN_FIRST_FD, SPAWN_FIRST_FD + 1, ... in the child */
	size_t n_fds;                /* at most SPAWN_FDS_MAX */
	int cgroup_fd;               /* a cgroup.procs to join first; -1: none */
	struct rlimit nofile, nproc; /* nproc.rlim_max RLIM_INFINITY: left as it is */
	uid_t uid;                   /* never 0 */
	gid_t gid;
	bool keep_stderr;
	/* Start it in the IO_FLUSHER state (PR_SET_IO_FLUSHER, Linux 5.6), which needs
	 * CAP_SYS_RESOURCE and so is set before the capabilities go; it survives exec and
	 * passes on to its threads and children. For a server behind a block device of
	 * this kernel (a tenant's nbdkit behind /dev/nbdN): its allocations reclaim memory
	 * without waiting on I/O, which may be the I/O it is to serve, and it is throttled
	 * only on its own dirty pages. */
	bool io_flusher;
	/* Signals it starts with blocked, for a program that reads them from a signalfd: one
	 * sent while it is still starting waits for it instead of killing it. NULL: none. */
	const sigset_t *blocked;
	int exec_fd;       /* the program to run, open (spawn_sealed_copy); -1: argv[0] */
	char *const *argv; /* argv[0] is the path run, or its name if EXEC_FD is given */
	char *const *envp;
	/* The digits of "LISTEN_PID=..." in ENVP, filled in the child with its pid, which
	 * only it knows (socket activation); NULL: none. */
	char *listen_pid;
};

/* Start A->argv[0] as above. Returns once it has exec'ed (0, with its pid in *RET_PID) or
 * failed (-errno, and *RET_STEP: NULL if it failed before there was a child; else the
 * child, reaped, failed at the step it names, "" if it could not tell). */
int spawn_unprivileged(const struct spawn_args *a, pid_t *ret_pid, const char **ret_step);

/* A sealed copy in memory of the file at PATH, named NAME, with MODE (0444 for a library,
 * 0555 for a program): an fd nobody can change, which a child of another uid can load or
 * run whatever the modes of PATH and of the directories above it (a clone in a private
 * home). -EINVAL if PATH is not a regular file; another -errno. */
int spawn_sealed_copy(const char *path, const char *name, mode_t mode);

#endif
