/* The record of attached devices under REGISTRY_DIR (see registry.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tp-cleanup.h"
#include "keeper.h"
#include "registry.h"

static void record_path(int index, char *buf, size_t len)
{
	snprintf(buf, len, "%s/nbd%d", REGISTRY_DIR, index);
}

int registry_write(const struct attachment *a)
{
	CLEANUP_FCLOSE FILE *f = NULL;
	char path[128], tmp[160];
	int fd;

	/* Only root attaches devices; what is recorded is nobody else's business. */
	if (mkdir(REGISTRY_DIR, 0700) < 0 && errno != EEXIST)
		return -errno;
	record_path(a->index, path, sizeof path);
	snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	f = fdopen(fd, "w");
	if (f == NULL) {
		int r = -errno;

		close(fd);
		unlink(tmp);
		return r;
	}
	fprintf(f,
	        "pid=%d\nvolume=%s\ntenant=%s\nsocket=%s\ninterface=%s\nconnections=%u\n"
	        "read_only=%d\n",
	        (int)a->pid, a->volume, a->tenant, a->socket, a->interface, a->connections,
	        a->read_only);
	if (fflush(f) != 0 || ferror(f) || fsync(fileno(f)) < 0) {
		int r = -errno;

		unlink(tmp);
		return r < 0 ? r : -EIO;
	}
	if (rename(tmp, path) < 0) {
		int r = -errno;

		unlink(tmp);
		return r;
	}
	return 0;
}

/* Copy VALUE into the field BUF of LEN bytes; -EBADMSG if it does not fit. */
static int copy_field(char *buf, size_t len, const char *value)
{
	size_t n = strlen(value);

	if (n >= len)
		return -EBADMSG;
	memcpy(buf, value, n + 1);
	return 0;
}

/* A decimal number within 0..MAX. */
static int parse_uint(const char *s, unsigned long max, unsigned long *ret_value)
{
	unsigned long v;
	char *end;

	if (s[0] < '0' || s[0] > '9')
		return -EBADMSG;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || v > max)
		return -EBADMSG;
	*ret_value = v;
	return 0;
}

int registry_read(int index, struct attachment *ret_a)
{
	CLEANUP_FCLOSE FILE *f = NULL;
	CLEANUP_FREE char *line = NULL;
	struct attachment a = {.index = index};
	unsigned long v;
	size_t size = 0;
	char path[128];
	ssize_t n;
	int r = 0;

	record_path(index, path, sizeof path);
	f = fopen(path, "re");
	if (f == NULL)
		return -errno;
	while (r == 0 && (n = getline(&line, &size, f)) > 0) {
		char *eq = strchr(line, '='), *value;

		if (line[n - 1] == '\n')
			line[n - 1] = '\0';
		if (eq == NULL)
			return -EBADMSG;
		*eq = '\0';
		value = eq + 1;
		if (strcmp(line, "pid") == 0) {
			r = parse_uint(value, INT_MAX, &v);
			a.pid = (pid_t)v;
		} else if (strcmp(line, "volume") == 0) {
			r = copy_field(a.volume, sizeof a.volume, value);
		} else if (strcmp(line, "tenant") == 0) {
			r = copy_field(a.tenant, sizeof a.tenant, value);
		} else if (strcmp(line, "socket") == 0) {
			r = copy_field(a.socket, sizeof a.socket, value);
		} else if (strcmp(line, "interface") == 0) {
			r = copy_field(a.interface, sizeof a.interface, value);
		} else if (strcmp(line, "connections") == 0) {
			r = parse_uint(value, 1024, &v);
			a.connections = (unsigned)v;
		} else if (strcmp(line, "read_only") == 0) {
			r = parse_uint(value, 1, &v);
			a.read_only = v != 0;
		}
		/* Unknown keys: written by a later version, ignored. */
	}
	if (r < 0)
		return r;
	if (a.pid <= 0 || a.volume[0] == '\0')
		return -EBADMSG;
	*ret_a = a;
	return 0;
}

int registry_remove(int index, pid_t pid)
{
	struct attachment a;
	char path[128];
	int r;

	if (pid != 0) {
		r = registry_read(index, &a);
		if (r == -ENOENT)
			return 0;
		if (r == 0 && a.pid != pid)
			return 0;
	}
	record_path(index, path, sizeof path);
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

bool registry_keeper_alive(const struct attachment *a)
{
	CLEANUP_FCLOSE FILE *f = NULL;
	char path[64], stat[256], *paren;

	if (a->pid <= 0 || (kill(a->pid, 0) < 0 && errno == ESRCH))
		return false;
	/* "PID (COMM) STATE ...": a keeper by its name, and not a zombie that a container's
	 * init has not reaped. */
	snprintf(path, sizeof path, "/proc/%d/stat", (int)a->pid);
	f = fopen(path, "re");
	if (f == NULL || fgets(stat, sizeof stat, f) == NULL)
		return false;
	paren = strrchr(stat, ')');
	if (paren == NULL || paren[1] != ' ' || paren[2] == 'Z' || paren[2] == 'X')
		return false;
	*paren = '\0';
	paren = strchr(stat, '(');
	return paren != NULL &&
	       strncmp(paren + 1, KEEPER_COMM_PREFIX, strlen(KEEPER_COMM_PREFIX)) == 0;
}
