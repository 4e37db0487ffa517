/* Starting a program unprivileged (see spawn.h). */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "spawn.h"
#include "tp-cleanup.h"

/* MFD_EXEC (Linux 6.3): a sealed copy may be mapped executable or run. */
#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif

enum spawn_step {
	STEP_CGROUP,
	STEP_FDS,
	STEP_SIGNALS,
	STEP_SETSID,
	STEP_DEVNULL,
	STEP_CHDIR,
	STEP_RLIMITS,
	STEP_IO_FLUSHER,
	STEP_BOUNDING_SET,
	STEP_SETGROUPS,
	STEP_SETRESGID,
	STEP_SETRESUID,
	STEP_CAPSET,
	STEP_NO_NEW_PRIVS,
	STEP_EXEC,
};

static const char *const spawn_step_names[] = {
    [STEP_CGROUP] = "join its cgroup",
    [STEP_FDS] = "set up fds",
    [STEP_SIGNALS] = "reset signals",
    [STEP_SETSID] = "setsid",
    [STEP_DEVNULL] = "open /dev/null",
    [STEP_CHDIR] = "chdir /",
    [STEP_RLIMITS] = "set resource limits",
    [STEP_IO_FLUSHER] = "set IO_FLUSHER",
    [STEP_BOUNDING_SET] = "drop the capability bounding set",
    [STEP_SETGROUPS] = "setgroups",
    [STEP_SETRESGID] = "setresgid",
    [STEP_SETRESUID] = "setresuid",
    [STEP_CAPSET] = "clear capabilities",
    [STEP_NO_NEW_PRIVS] = "set no_new_privs",
    [STEP_EXEC] = "exec",
};

struct spawn_error {
	int step;
	int err;
};

/* Report STEP's failure (errno) to the parent and die. */
static _Noreturn void child_fail(int err_fd, enum spawn_step step)
{
	struct spawn_error e = {.step = step, .err = errno};

	(void)!write(err_fd, &e, sizeof e);
	_exit(127);
}

/* Async-signal-safe decimal formatting of V (a pid or an fd) into BUF (room for 11
 * bytes). */
static void format_pid(char *buf, pid_t v)
{
	char tmp[12];
	int n = 0;

	do
		tmp[n++] = (char)('0' + v % 10);
	while ((v /= 10) > 0);
	while (n > 0)
		*buf++ = tmp[--n];
	*buf = '\0';
}

/* In the child: become the unprivileged program. Only async-signal-safe calls: the
 * daemon has other threads. Never returns. */
static _Noreturn void child_exec(const struct spawn_args *a, int err_fd)
{
	struct __user_cap_header_struct cap_header = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct cap_data[_LINUX_CAPABILITY_U32S_3] = {{0}};
	struct sigaction dfl = {.sa_handler = SIG_DFL};
	struct rlimit no_core = {0, 0};
	int copies[SPAWN_FDS_MAX], fd, first = SPAWN_FIRST_FD + (int)a->n_fds, sig, cap, exec_fd;
	sigset_t mask;
	size_t i;

	/* Into its cgroup before anything else, so that all it starts is in there. */
	if (a->cgroup_fd >= 0 && write(a->cgroup_fd, "0", 1) != 1)
		child_fail(err_fd, STEP_CGROUP);

	/* fds: the error pipe and the fds given above the ones they go onto first, so that
	 * none is overwritten, then each onto its place without close-on-exec, stdin and
	 * stdout on /dev/null, stderr kept if asked, nothing else. */
	err_fd = fcntl(err_fd, F_DUPFD_CLOEXEC, first);
	if (err_fd < 0)
		_exit(127);
	exec_fd = a->exec_fd >= 0 ? fcntl(a->exec_fd, F_DUPFD_CLOEXEC, err_fd + 1) : -1;
	if (a->exec_fd >= 0 && exec_fd < 0)
		child_fail(err_fd, STEP_FDS);
	for (i = 0; i < a->n_fds; i++) {
		copies[i] = fcntl(a->fds[i], F_DUPFD_CLOEXEC, first);
		if (copies[i] < 0)
			child_fail(err_fd, STEP_FDS);
	}
	for (i = 0; i < a->n_fds; i++)
		if (dup2(copies[i], SPAWN_FIRST_FD + (int)i) < 0)
			child_fail(err_fd, STEP_FDS);
	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		child_fail(err_fd, STEP_DEVNULL);
	if (dup2(fd, STDIN_FILENO) < 0 || dup2(fd, STDOUT_FILENO) < 0 ||
	    (!a->keep_stderr && dup2(fd, STDERR_FILENO) < 0))
		child_fail(err_fd, STEP_FDS);
	if ((err_fd > first && close_range((unsigned)first, (unsigned)err_fd - 1, 0) < 0) ||
	    (exec_fd > err_fd + 1 &&
	     close_range((unsigned)err_fd + 1, (unsigned)exec_fd - 1, 0) < 0) ||
	    close_range((unsigned)(exec_fd > err_fd ? exec_fd : err_fd) + 1, ~0U, 0) < 0)
		child_fail(err_fd, STEP_FDS);

	/* The daemon blocks and ignores signals of its own; the program starts clean, but
	 * for what it asked to find blocked. */
	if (a->blocked != NULL)
		mask = *a->blocked;
	else
		sigemptyset(&mask);
	if (sigprocmask(SIG_SETMASK, &mask, NULL) < 0)
		child_fail(err_fd, STEP_SIGNALS);
	for (sig = 1; sig < NSIG; sig++)
		sigaction(sig, &dfl, NULL);
	/* Its own session: no terminal's signals, and it may outlive the daemon. */
	if (setsid() < 0)
		child_fail(err_fd, STEP_SETSID);
	if (chdir("/") < 0)
		child_fail(err_fd, STEP_CHDIR);
	umask(077);
	/* Limits of its own on top of its cgroup's: no core dump of a tenant's data, fds
	 * and processes bounded even without cgroups (its uid is its alone). */
	if (setrlimit(RLIMIT_CORE, &no_core) < 0 || setrlimit(RLIMIT_NOFILE, &a->nofile) < 0 ||
	    (a->nproc.rlim_max != RLIM_INFINITY && setrlimit(RLIMIT_NPROC, &a->nproc) < 0))
		child_fail(err_fd, STEP_RLIMITS);
	/* While it still has CAP_SYS_RESOURCE: the state outlives the exec. */
	if (a->io_flusher && prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) < 0)
		child_fail(err_fd, STEP_IO_FLUSHER);

	/* No capabilities, ever: the program only reads and writes the fds it is handed.
	 * The bounding set and ambient set go while we still may (CAP_SETPCAP); setresuid
	 * away from root clears the permitted and effective sets; capset clears the
	 * inheritable one; no_new_privs stops setuid binaries giving any back. */
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		child_fail(err_fd, STEP_BOUNDING_SET);
	for (cap = 0; prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0; cap++)
		;
	if (errno != EINVAL || cap == 0)
		child_fail(err_fd, STEP_BOUNDING_SET);
	/* No supplementary groups: the daemon's (root's) would otherwise stay. */
	if (setgroups(0, NULL) < 0)
		child_fail(err_fd, STEP_SETGROUPS);
	if (setresgid(a->gid, a->gid, a->gid) < 0)
		child_fail(err_fd, STEP_SETRESGID);
	if (setresuid(a->uid, a->uid, a->uid) < 0)
		child_fail(err_fd, STEP_SETRESUID);
	if (syscall(SYS_capset, &cap_header, cap_data) < 0)
		child_fail(err_fd, STEP_CAPSET);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		child_fail(err_fd, STEP_NO_NEW_PRIVS);

	if (a->listen_pid)
		format_pid(a->listen_pid, getpid());
	if (exec_fd >= 0) {
		/* execveat, or where that is missing or refused (valgrind's), the fd's path. */
		char path[32] = "/proc/self/fd/";

		fexecve(exec_fd, a->argv, a->envp);
		format_pid(path + strlen(path), (pid_t)exec_fd);
		execve(path, a->argv, a->envp);
	} else {
		execve(a->argv[0], a->argv, a->envp);
	}
	child_fail(err_fd, STEP_EXEC);
}

int spawn_unprivileged(const struct spawn_args *a, pid_t *ret_pid, const char **ret_step)
{
	struct spawn_error e;
	int pipe_fds[2], r;
	ssize_t got;
	pid_t pid;

	*ret_step = NULL;
	if (a->n_fds > SPAWN_FDS_MAX || a->uid == 0)
		return -EINVAL;
	if (pipe2(pipe_fds, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		r = -errno;
		close(pipe_fds[0]);
		close(pipe_fds[1]);
		return r;
	}
	if (pid == 0)
		child_exec(a, pipe_fds[1]);
	close(pipe_fds[1]);
	/* The pipe closes on exec, or carries the step that failed. */
	do
		got = read(pipe_fds[0], &e, sizeof e);
	while (got < 0 && errno == EINTR);
	close(pipe_fds[0]);
	if (got != 0) {
		waitpid(pid, NULL, 0);
		*ret_step = "";
		if (got == sizeof e && e.step >= 0 && e.step <= STEP_EXEC)
			*ret_step = spawn_step_names[e.step];
		return got == sizeof e ? -e.err : -EIO;
	}
	*ret_pid = pid;
	return 0;
}

int spawn_sealed_copy(const char *path, const char *name, mode_t mode)
{
	CLEANUP_CLOSE int in = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	CLEANUP_CLOSE int fd = -1;
	char buf[65536];
	struct stat st;
	ssize_t n;

	if (in < 0)
		return -errno;
	if (fstat(in, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
	if (fd < 0 && errno == EINVAL) /* before Linux 6.3: executable anyway */
		fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	while ((n = read(in, buf, sizeof buf)) > 0)
		if (write(fd, buf, (size_t)n) != n)
			return errno != 0 ? -errno : -EIO;
	if (n < 0)
		return -errno;
	if (fchmod(fd, mode) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
		return -errno;
	return TAKE_FD(fd);
}
