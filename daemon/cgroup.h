/* Cgroups (v2) for the tenants' nbdkits: each runs in a cgroup of its own,
 * BASE/tenant-NAME, which bounds its memory and tasks (memory.max, pids.max) and lets
 * the daemon end every process in it at once (cgroup.kill), whatever it forked and in
 * whichever session.
 *
 * BASE is a cgroup the daemon owns, found by cgroups_open:
 * - "auto": the daemon's own cgroup if systemd delegated it (Delegate=yes in
 *   thinproxyd.service), else /thinproxyd below the cgroup2 mount;
 * - a path below the cgroup2 mount, e.g. /thinproxyd-test.
 * A cgroup that gives memory and pids to its children may hold no process itself, so
 * when the daemon runs in BASE it moves itself, and whatever else is there, into
 * BASE/daemon. BASE is locked while the daemon runs: one daemon per BASE.
 *
 * Not thread-safe: the caller serialises (supervise.c does, under its lock). Every
 * function returns 0 (or what it says) or -errno. */
#ifndef TP_DAEMON_CGROUP_H
#define TP_DAEMON_CGROUP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct cgroups;

/* What each tenant's nbdkit may use; 0 is no limit. */
struct cgroup_limits {
	uint64_t memory_max; /* bytes: memory.max */
	uint64_t pids_max;   /* processes and threads: pids.max */
};

/* Is PATH a cgroup path as WHERE may give one: absolute, not the root, no "." or "..",
 * no empty component. */
bool cgroups_path_valid(const char *path);

/* Take BASE as WHERE says ("auto" or a path), with LIMITS for every tenant's cgroup.
 * Logs what is missing if it cannot: cgroup v2, its memory or pids controller,
 * cgroup.kill (Linux 5.14), or BASE itself (held by another daemon). */
int cgroups_open(const char *where, const struct cgroup_limits *limits,
                 struct cgroups **ret_cgroups);
/* Forget CG and unlock BASE; the cgroups and what runs in them stay. NULL is fine. */
void cgroups_close(struct cgroups *cg);
/* BASE as an absolute path, e.g. /sys/fs/cgroup/thinproxyd. */
const char *cgroups_base(const struct cgroups *cg);

/* Make TENANT's cgroup (or keep it), give it the limits, and open its cgroup.procs for
 * writing into *RET_FD (close-on-exec): a child writes "0" there to move in. */
int cgroups_tenant_prepare(struct cgroups *cg, const char *tenant, int *ret_fd);
/* Move process PID into TENANT's cgroup (prepared as above) unless it is there already.
 * Returns 1 if it moved it, 0 if it was there. */
int cgroups_tenant_adopt(struct cgroups *cg, const char *tenant, pid_t pid);
/* Kill every process in TENANT's cgroup and wait until none is left (-ETIMEDOUT after a
 * few seconds). No cgroup, or an empty one, is fine. */
int cgroups_tenant_kill(struct cgroups *cg, const char *tenant);
/* Call FN with each process in TENANT's cgroup (none if it has no cgroup); a return
 * other than 0 from FN stops the walk and is returned. */
int cgroups_tenant_for_each_pid(struct cgroups *cg, const char *tenant,
                                int (*fn)(pid_t pid, void *opaque), void *opaque);
/* cgroups_tenant_kill, then remove the cgroup. */
int cgroups_tenant_remove(struct cgroups *cg, const char *tenant);

#endif
