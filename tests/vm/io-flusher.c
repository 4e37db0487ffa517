/* io-flusher: whether processes run in the IO_FLUSHER state (PR_SET_IO_FLUSHER), for the
 * guest tests. A process may ask only about itself, and only with CAP_SYS_RESOURCE
 * (PR_GET_IO_FLUSHER), which the programs under test drop or may lack; so this reads
 * the kernel's flags of every thread of each PID (field 9 of /proc/PID/task/TID/stat),
 * having learnt which flags the state sets by entering it itself (it runs as root).
 *
 *   io-flusher PID...
 *
 * Prints "PID: io_flusher" or "PID: TID not io_flusher" for each, and exits 0 if every
 * thread of every PID is in the state, 1 if one is not, 2 if it cannot tell. */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

/* The kernel's flags of the task whose stat is PATH into *RET_FLAGS; 0 or -errno. */
static int task_flags(const char *path, unsigned long *ret_flags)
{
	char buf[1024], *p;
	size_t n;
	FILE *f;

	f = fopen(path, "re");
	if (f == NULL)
		return -errno;
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* After the name, which may hold anything, in parentheses: state, ppid, pgrp,
	 * session, tty_nr, tpgid, flags. */
	p = strrchr(buf, ')');
	if (p == NULL || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %lu", ret_flags) != 1)
		return -EINVAL;
	return 0;
}

/* The flags the IO_FLUSHER state sets (PF_MEMALLOC_NOIO and PF_LOCAL_THROTTLE, whose
 * values are the kernel's to change), learnt by entering the state; 0 if it cannot. */
static unsigned long io_flusher_flags(void)
{
	unsigned long before, after;

	if (task_flags("/proc/thread-self/stat", &before) < 0 ||
	    prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) < 0 ||
	    task_flags("/proc/thread-self/stat", &after) < 0)
		return 0;
	return after & ~before;
}

int main(int argc, char **argv)
{
	unsigned long mask = io_flusher_flags();
	int rc = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: io-flusher PID...\n");
		return 2;
	}
	if (mask == 0) {
		fprintf(stderr, "io-flusher: cannot enter the IO_FLUSHER state myself: %m\n");
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		char dir[64], path[sizeof dir + 256 + 8];
		struct dirent *e;
		unsigned long flags;
		bool all = true;
		DIR *d;

		snprintf(dir, sizeof dir, "/proc/%s/task", argv[i]);
		d = opendir(dir);
		if (d == NULL) {
			fprintf(stderr, "io-flusher: %s: %m\n", dir);
			return 2;
		}
		while ((e = readdir(d)) != NULL) {
			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof path, "%s/%s/stat", dir, e->d_name);
			if (task_flags(path, &flags) < 0)
				continue; /* a thread that has just ended */
			if ((flags & mask) != mask) {
				printf("%s: %s not io_flusher\n", argv[i], e->d_name);
				all = false;
			}
		}
		closedir(d);
		if (all)
			printf("%s: io_flusher\n", argv[i]);
		else
			rc = 1;
	}
	return rc;
}
