/* Attaching a volume as a kernel NBD device, and detaching it, as functions that print
 * nothing: `thinproxy attach` and `detach` (attach.c) are built on them, and so is the
 * snapshotter, which attaches in-process. Each returns 0 or -errno with REASON (REASON_LEN
 * bytes) saying why not, in words that follow "attach VOLUME: " or "detach DEVICE: ". */
#ifndef TP_CLIENT_ATTACH_H
#define TP_CLIENT_ATTACH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"

#define ATTACH_CONNECTIONS_MAX    16
#define ATTACH_DEFAULT_TIMEOUT    60
#define ATTACH_DEFAULT_IO_TIMEOUT 30

struct attach_request {
	const char *volume; /* a reference: NAME, images/NAME or OWNER/NAME */
	const char *dir;    /* the socket directory */
	const char *tenant; /* a host-side attach for tenant T (DIR/tenants/T/nbd.sock), or NULL */
	/* The daemon, to ask why the tenant's nbdkit says nothing; NULL: do not ask. */
	struct http *http;
	int index; /* /dev/nbdINDEX, or -1 for any free device */
	unsigned connections;
	unsigned timeout;    /* dead-connection timeout, seconds */
	unsigned io_timeout; /* I/O timeout, seconds */
	bool read_only;
	bool direct; /* cache mode none: the server opens the volume O_DIRECT */
};

/* What was attached. */
struct attach_result {
	int index; /* /dev/nbdINDEX */
	uint64_t size;
	bool read_only;
	bool netlink; /* attached over netlink, else through the ioctl interface */
};

/* A request with the defaults of `thinproxy attach VOLUME` through DIR (TENANT NULL for a
 * tenant's own socket). */
struct attach_request attach_defaults(const char *volume, const char *dir, const char *tenant);

/* Attach REQ->volume and leave its keeper; the device in *RET. */
int attach_volume(const struct attach_request *req, struct attach_result *ret, char *reason,
                  size_t reason_len);

/* Stop device INDEX's keeper and disconnect it. -ENODEV: no such device; -ENXIO: not
 * attached; -EBUSY: mounted or held (REASON says by what), unless MOUNTED_OK: the caller
 * froze the file system mounted on it, and its mount is to lose the device. */
int detach_device(int index, bool mounted_ok, char *reason, size_t reason_len);

/* The connected device that thinproxy attached to VOLUME through the NBD socket
 * SOCKET_PATH, as the registry (registry.h) says, in *RET_INDEX; -ENOENT if none. */
int attach_find(const char *socket_path, const char *volume, int *ret_index);

/* The NBD socket path of a request: DIR/nbd.sock, or DIR/tenants/T/nbd.sock. */
int attach_socket_path(const char *dir, const char *tenant, char *buf, size_t len);

#endif
