/* thinproxyd keeps a short, fixed list of capabilities once it has started, each for a
 * reason written beside it; everything else leaves the bounding set too, so no child
 * and no exec can regain it. No libcap: the two system calls are all it takes. */
#include <errno.h>
#include <linux/capability.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "caps.h"
#include "log.h"

static const struct {
	int cap;
	const char *why;
	bool optional; /* kept if the daemon has it; done without if not */
} keep[] = {
    /* device-mapper ioctls, loop device set-up, BLKDISCARD on the pool's devices */
    {CAP_SYS_ADMIN, "device-mapper and loop ioctls"},
    /* /dev/mapper nodes for thin devices when no udev makes them */
    {CAP_MKNOD, "device nodes for thin devices"},
    /* tenants' sockets belong to the tenant's uid/gid */
    {CAP_CHOWN, "chown of tenant sockets"},
    /* ... and get their mode after that chown */
    {CAP_FOWNER, "chmod of tenant sockets after chown"},
    /* the supervisor's child becomes the tenant's nbdkit uid/gid ... */
    {CAP_SETUID, "nbdkit runs as the tenant's uid"},
    {CAP_SETGID, "nbdkit runs as the tenant's gid, no groups"},
    /* ... and drops its bounding set before exec */
    {CAP_SETPCAP, "nbdkit starts with an empty bounding set"},
    /* stopping a tenant's nbdkit, which runs as another uid */
    {CAP_KILL, "signals to tenants' nbdkit processes"},
    /* adopting an nbdkit after a restart: /proc/PID/exe and pidfd_getfd of its socket */
    {CAP_SYS_PTRACE, "adopting a running nbdkit (pidfd_getfd, /proc/PID/exe)"},
    /* image import reads the host file or device the admin names, whoever owns it */
    {CAP_DAC_READ_SEARCH, "image import from any host path"},
    /* tenants' nbdkits start in the IO_FLUSHER state, which only a holder of it may
     * set (spawn.h); a daemon without it (a container's) runs them without */
    {CAP_SYS_RESOURCE, "nbdkit runs in the IO_FLUSHER state", true},
};

/* Whether CAP is in the set SET. */
static bool has(const struct __user_cap_data_struct *set, int cap)
{
	return cap / 32 < _LINUX_CAPABILITY_U32S_3 &&
	       (set[cap / 32].permitted & (UINT32_C(1) << (cap % 32)));
}

/* Whether the daemon keeps CAP, given that it had HAD permitted. */
static bool kept(int cap, const struct __user_cap_data_struct *had)
{
	for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
		if (keep[i].cap == cap)
			return !keep[i].optional || has(had, cap);
	return false;
}

int caps_drop_unneeded(void)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {{0}};
	struct __user_cap_data_struct had[_LINUX_CAPABILITY_U32S_3] = {{0}};
	int last = CAP_LAST_CAP, cap;

	if (syscall(SYS_capget, &hdr, had) < 0)
		return log_errno(LOG_ERR, -errno, "capget: %m");
	/* The kernel may know more capabilities than our headers; it says how many. */
	while (prctl(PR_CAPBSET_READ, last + 1, 0, 0, 0) >= 0)
		last++;
	for (cap = 0; cap <= last; cap++) {
		if (kept(cap, had))
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			return log_errno(LOG_ERR, -errno,
			                 "drop capability %d from the bounding set: %m", cap);
	}
	for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
		int c = keep[i].cap;

		if (!kept(c, had)) {
			log_debug("without capability %d: %s", c, keep[i].why);
			continue;
		}
		data[c / 32].permitted |= UINT32_C(1) << (c % 32);
		data[c / 32].effective |= UINT32_C(1) << (c % 32);
	}
	if (syscall(SYS_capset, &hdr, data) < 0)
		return log_errno(LOG_ERR, -errno, "capset: %m");
	/* Ambient capabilities would survive an exec; there must be none. */
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
		if (has(data, keep[i].cap))
			log_debug("keeping capability %d: %s", keep[i].cap, keep[i].why);
	return 0;
}
