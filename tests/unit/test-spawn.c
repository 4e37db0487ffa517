/* daemon/spawn.c, as root: the IO_FLUSHER state of a program it starts unprivileged,
 * read by the kernel's flags of the running program (/proc/PID/stat), since the program
 * itself, without CAP_SYS_RESOURCE, may not ask (PR_GET_IO_FLUSHER needs it too). The
 * tests that need CAP_SYS_RESOURCE are skipped (pass) without it, as on a host whose
 * container lacks it; tests/vm/test-memory-pressure.sh runs them in the guest. Skipped
 * (passes) unless root. */
#include <check.h>
#include <errno.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../daemon/spawn.h"

#define NOBODY 65534

/* The kernel's flags of task PID (field 9 of its stat), or of the calling thread if 0. */
static unsigned long task_flags(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long flags = 0;
	size_t n;
	FILE *f;

	if (pid == 0)
		snprintf(path, sizeof path, "/proc/thread-self/stat");
	else
		snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	ck_assert_msg(f != NULL, "%s: %m", path);
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* After the name, which may hold anything, in parentheses: state, ppid, pgrp,
	 * session, tty_nr, tpgid, flags. */
	p = strrchr(buf, ')');
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %lu", &flags), 1);
	return flags;
}

/* The flags the IO_FLUSHER state sets (PF_MEMALLOC_NOIO and PF_LOCAL_THROTTLE, whose
 * values are the kernel's to change), learnt by entering the state and leaving it
 * again; 0 if the caller may not (no CAP_SYS_RESOURCE). */
static unsigned long io_flusher_flags(void)
{
	unsigned long before, after;

	if (prctl(PR_GET_IO_FLUSHER, 0, 0, 0, 0) < 0)
		return 0;
	before = task_flags(0);
	ck_assert_int_eq(prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0), 0);
	after = task_flags(0);
	ck_assert_int_eq(prctl(PR_SET_IO_FLUSHER, 0, 0, 0, 0), 0);
	ck_assert_uint_ne(after & ~before, 0);
	return after & ~before;
}

/* Start sleep(1) as nobody, in the IO_FLUSHER state if IO_FLUSHER; its pid, or -errno
 * with the failed step in *RET_STEP. */
static pid_t spawn_sleep(bool io_flusher, const char **ret_step)
{
	static char *const argv[] = {"/bin/sleep", "30", NULL};
	static char *const envp[] = {NULL};
	struct spawn_args a = {.cgroup_fd = -1,
	                       .nofile = {64, 64},
	                       .nproc = {RLIM_INFINITY, RLIM_INFINITY},
	                       .uid = NOBODY,
	                       .gid = NOBODY,
	                       .io_flusher = io_flusher,
	                       .exec_fd = -1,
	                       .argv = argv,
	                       .envp = envp};
	pid_t pid;
	int r;

	r = spawn_unprivileged(&a, &pid, ret_step);
	return r < 0 ? r : pid;
}

static void end(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* Whether task PID holds no capability at all (CapEff and CapPrm of its status 0). */
static bool without_capabilities(pid_t pid)
{
	char path[64], line[256];
	int zero = 0;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof line, f) != NULL)
		if (strcmp(line, "CapPrm:\t0000000000000000\n") == 0 ||
		    strcmp(line, "CapEff:\t0000000000000000\n") == 0)
			zero++;
	fclose(f);
	return zero == 2;
}

START_TEST(runs_the_program_in_the_io_flusher_state_when_asked)
{
	unsigned long mask;
	const char *step;
	pid_t pid;

	if (getuid() != 0)
		return;
	mask = io_flusher_flags();
	if (mask == 0) {
		fprintf(stderr, "test-spawn: no CAP_SYS_RESOURCE here, IO_FLUSHER not tested\n");
		return;
	}
	pid = spawn_sleep(true, &step);
	ck_assert_msg(pid > 0, "spawn: %s at %s", strerror((int)-pid), step ? step : "fork");
	/* The state outlived the capability that set it, and the exec. */
	ck_assert(without_capabilities(pid));
	ck_assert_uint_eq(task_flags(pid) & mask, mask);
	end(pid);
}
END_TEST

START_TEST(runs_the_program_in_the_ordinary_state_unless_asked)
{
	unsigned long mask;
	const char *step;
	pid_t pid;

	if (getuid() != 0)
		return;
	mask = io_flusher_flags();
	if (mask == 0)
		return;
	pid = spawn_sleep(false, &step);
	ck_assert_msg(pid > 0, "spawn: %s at %s", strerror((int)-pid), step ? step : "fork");
	ck_assert_uint_eq(task_flags(pid) & mask, 0);
	end(pid);
}
END_TEST

START_TEST(fails_at_its_own_step_without_cap_sys_resource)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
	const char *step = NULL;
	pid_t pid;

	if (getuid() != 0)
		return;
	/* This process (check forks one per test) gives up CAP_SYS_RESOURCE, keeping what
	 * else spawning needs (CAP_SETUID, CAP_SETGID, CAP_SETPCAP). */
	ck_assert_int_eq(syscall(SYS_capget, &h, d), 0);
	d[CAP_TO_INDEX(CAP_SYS_RESOURCE)].effective &= ~CAP_TO_MASK(CAP_SYS_RESOURCE);
	d[CAP_TO_INDEX(CAP_SYS_RESOURCE)].permitted &= ~CAP_TO_MASK(CAP_SYS_RESOURCE);
	ck_assert_int_eq(syscall(SYS_capset, &h, d), 0);

	pid = spawn_sleep(true, &step);
	if (pid > 0)
		end(pid);
	ck_assert_int_eq(pid, -EPERM);
	ck_assert_ptr_nonnull(step);
	ck_assert_str_eq(step, "set IO_FLUSHER");
	/* Without asking, the same process starts it. */
	pid = spawn_sleep(false, &step);
	ck_assert_int_gt(pid, 0);
	end(pid);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("spawn");
	TCase *tc = tcase_create("spawn");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, runs_the_program_in_the_io_flusher_state_when_asked);
	tcase_add_test(tc, runs_the_program_in_the_ordinary_state_unless_asked);
	tcase_add_test(tc, fails_at_its_own_step_without_cap_sys_resource);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
