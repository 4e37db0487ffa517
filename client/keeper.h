/* The keeper: a small resident process per attached device, started by attach and ended
 * by detach, that keeps the device connected while the tenant's nbdkit restarts.
 *
 * Over netlink the kernel owns the sockets. The keeper listens for the nbd family's
 * NBD_CMD_LINK_DEAD notification for its device, then opens fresh connections, does the
 * handshake on each and hands them over with NBD_CMD_RECONFIGURE, retrying with growing
 * pauses; the kernel holds new I/O back for the dead-connection timeout meanwhile and
 * sends I/O that was in flight again after the I/O timeout.
 *
 * Through the ioctl interface the keeper is the device's resident process: it sits in
 * NBD_DO_IT and relays every request (relay.h), so a restart costs a slow request, not
 * an error.
 *
 * A keeper is forked as a grandchild of its starter (init, or the subreaper, reaps it),
 * keeps none of its starter's file descriptors but its connections, runs in its own
 * session with /dev/null for standard input and output, is named KEEPER_COMM_PREFIX
 * "nbdN", logs to syslog (and, if $THINPROXY_KEEPER_LOG names a file, appends there
 * too), records itself in the registry (registry.h), and ends on
 * SIGTERM, or when its device is disconnected by anybody else. On SIGTERM an ioctl
 * keeper disconnects its device, which cannot outlive it; a netlink keeper leaves the
 * device to detach. */
#ifndef TP_CLIENT_KEEPER_H
#define TP_CLIENT_KEEPER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "handshake.h"
#include "nbd-netlink.h"

#define KEEPER_COMM_PREFIX "tpkeep-"
/* How long one connection may take to connect and finish its handshake. */
#define KEEPER_HANDSHAKE_MS 30000

struct keeper_config {
	const char *socket_path;  /* the tenant's nbd.sock */
	const char *volume;       /* the export */
	const char *tenant;       /* the tenant of a host-side attach, else NULL */
	struct nbd_export export; /* what the first handshake said */
	uint32_t block_size;      /* for the kernel */
	uint16_t flags;           /* transmission flags for the kernel */
	bool read_only;
	bool direct; /* cache mode none: export name direct:..., on every reconnect too */
	unsigned connections;
	unsigned timeout;    /* dead-connection timeout, seconds */
	unsigned io_timeout; /* I/O timeout, seconds (netlink only) */
	int index;           /* /dev/nbdINDEX, or -1 for any free device */
};

/* Connect to SOCKET_PATH and negotiate VOLUME (read-only if READ_ONLY: the server then
 * holds the volume open read-only too; with direct I/O if DIRECT) within TIMEOUT_MS: the
 * connected socket in *RET_FD, what the server said in *RET_EXPORT. On failure REASON
 * (REASON_LEN bytes) says why, e.g. "no such volume: VOLUME" or "cannot reach
 * SOCKET_PATH: ...". */
int keeper_connect(const char *socket_path, const char *volume, bool read_only, bool direct,
                   int timeout_ms, int *ret_fd, struct nbd_export *ret_export, char *reason,
                   size_t reason_len);

/* Configure a device with the CFG->connections negotiated sockets FDS (closed here, in
 * any case) over NL, or through the ioctl interface if NL is NULL, and start its keeper.
 * Returns 0 with the device's number in *RET_INDEX once the device is ready, or -errno
 * with REASON saying why not. */
int keeper_attach(const struct keeper_config *cfg, struct nbd_nl *nl, int *fds, int *ret_index,
                  char *reason, size_t reason_len);

/* Log a line from a keeper. */
void keeper_log(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
