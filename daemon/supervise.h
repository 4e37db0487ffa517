/* Supervision of the tenants' nbdkits: one nbdkit per tenant, running the thinproxy
 * plugin as that tenant's own unprivileged uid, socket-activated on
 * RUN_DIR/tenants/TENANT/nbd.sock, which the daemon creates and keeps open so that a
 * restarted nbdkit serves the very same socket (and every bind mount of it).
 *
 * With an idle time (supervise_config.idle_s), nbdkits run on demand: a tenant's nbdkit
 * starts when a client connects to its nbd.sock (the daemon watches the socket while no
 * nbdkit runs), and exits when it has served no connection for that long (the plugin's
 * idle=), after which the daemon watches the socket again. An idle tenant costs no
 * process. Without one, each tenant's nbdkit runs from supervise_start_tenant on.
 *
 * The nbdkits outlive the daemon: each one's pid is kept in
 * RUN_DIR/tenants/TENANT/nbdkit.pid, and a restarted daemon adopts the nbdkit it finds
 * there (after checking that it is ours, for this tenant, with this uid) instead of
 * starting a second one.
 *
 * Thread-safe. Every function returns 0 or -errno. supervise_reap() waits only for its
 * own children (by pidfd): nothing else in the daemon may wait for any child (-1). */
#ifndef TP_DAEMON_SUPERVISE_H
#define TP_DAEMON_SUPERVISE_H

#include <stdbool.h>
#include <sys/types.h>

#include "cgroup.h"

/* nbdkit finds a plugin given by short name in its own plugin directory. */
#define SUPERVISE_PLUGIN_DEFAULT "thinproxy"

struct supervise_config {
	const char *run_dir; /* e.g. /run/thinproxy */
	const char *nbdkit;  /* a path, or a name looked up in PATH; NULL: "nbdkit" */
	/* NULL: SUPERVISE_PLUGIN_DEFAULT, which nbdkit finds itself. A path is read once,
	 * here, into a sealed copy in memory that every nbdkit loads from its fd 4, so that
	 * the file may be where the tenants' uids could not read it. */
	const char *plugin;
	const char *broker; /* the broker's socket, for the plugin's broker= */
	bool syslog;        /* nbdkit --log=syslog; else it inherits the daemon's stderr */
	/* Each nbdkit in a cgroup of its own below this (see cgroup.h: "auto" or a path);
	 * NULL: no cgroups, and what an nbdkit forks may outlive it. */
	const char *cgroup;
	/* Per nbdkit, in its cgroup and as rlimits: pids_max is also its RLIMIT_NPROC. */
	struct cgroup_limits limits;
	/* Seconds without a connection after which a tenant's nbdkit exits, to be started
	 * again by its next client (1 to SUPERVISE_IDLE_MAX_S); 0: every tenant's nbdkit
	 * runs all the time. */
	unsigned idle_s;
};

#define SUPERVISE_IDLE_MAX_S 86400

/* Check and copy CFG (strings included), find nbdkit, read the plugin, take the cgroup,
 * make RUN_DIR/tenants. */
int supervise_init(const struct supervise_config *cfg);

/* An fd for the daemon's loop: when it is readable, call supervise_reap() (an nbdkit
 * exited, or a tenant's socket has a client for an nbdkit to start or to turn away). */
int supervise_event_fd(void);

/* Make TENANT's nbdkit run, or with an idle time be ready to run: adopt a verified one
 * left by an earlier daemon, or create nbd.sock (mode 0660, owned by SOCK_UID:SOCK_GID)
 * and start nbdkit (on demand: when a client connects) as NBD_UID:NBD_GID (never 0).
 * Already running with the same uid and gid: only the socket's owner is updated. With
 * another uid or gid: restarted on the same socket. */
int supervise_start_tenant(const char *tenant, uid_t nbd_uid, gid_t nbd_gid, uid_t sock_uid,
                           gid_t sock_gid);

/* Stop TENANT's nbdkit (SIGTERM, then SIGKILL after a few seconds, with cgroups to every
 * process in its cgroup), remove its cgroup, nbd.sock and the pidfile. A tenant that is
 * not running is fine. */
int supervise_stop_tenant(const char *tenant);

/* If a process of TENANT's nbdkit holds the block device DEVNUM open, end them all (its
 * cgroup) and start a new nbdkit on the same socket at once: every connection it served
 * ends, and clients reconnect to what they may still open. Returns 1 if it did, 0 if none
 * held the device. For revoking a grant: an fd handed over cannot be taken back. */
int supervise_release_device(const char *tenant, dev_t devnum);

/* On SIGCHLD, periodically, and when supervise_event_fd() is readable: notice nbdkits
 * that died (ours and adopted ones), end whatever they left in their cgroups, and
 * restart them, at once the first time, then with a growing delay while they keep
 * dying; start the nbdkits of idle tenants whose clients knock. An nbdkit on demand that
 * exits cleanly after its idle time is no death: its tenant is idle again. */
void supervise_reap(void);

/* How long the daemon's loop may sleep before it must call supervise_reap(): the
 * milliseconds until a pending restart is due (0: now), -1 for no limit (the deaths of
 * nbdkits, adopted ones too, make supervise_event_fd() readable). */
int supervise_next_reap_ms(void);

/* "running", "idle" (on demand: none runs, the next client starts one), "restarting"
 * (died, restart pending), "failed" (the last ones could not
 * start: they exited with an error status, twice or more in a row; until the next one
 * runs, every client that connects to the tenant's socket is closed at once instead of
 * waiting for a server that is not coming) or "stopped" (also: not supervised). */
const char *supervise_status(const char *tenant);

/* At daemon exit: forget everything, leave every nbdkit running (attached devices
 * outlive the daemon) with its socket and pidfile. */
void supervise_shutdown(void);

#endif
