/* The record of the devices thinproxy attached on this machine (or in this container):
 * one small file per device, REGISTRY_DIR/nbdN, written by the device's keeper when the
 * device is ready and removed when it goes. It names what sysfs cannot for a device
 * attached through the ioctl interface (its volume), and for every device the keeper
 * that keeps it connected, so that detach can stop it.
 *
 * The file is plain text, one "key=value" a line: pid, volume, tenant (host-side
 * attaches only), socket, interface (netlink or ioctl), connections, read_only. Every
 * function returns 0 or -errno. */
#ifndef TP_CLIENT_REGISTRY_H
#define TP_CLIENT_REGISTRY_H

#include <stdbool.h>
#include <sys/types.h>
#include <sys/un.h>

#define REGISTRY_DIR "/run/thinproxy-client"

struct attachment {
	int index;
	pid_t pid; /* the keeper */
	char volume[128];
	char tenant[64]; /* "" unless attached on the host for a tenant */
	char socket[sizeof((struct sockaddr_un *)0)->sun_path];
	char interface[8]; /* "netlink" or "ioctl" */
	unsigned connections;
	bool read_only;
};

/* Record A, replacing any record of its device at once (write, then rename). */
int registry_write(const struct attachment *a);
/* The record of device INDEX into *RET_A; -ENOENT if there is none, -EBADMSG if it is
 * malformed. */
int registry_read(int index, struct attachment *ret_a);
/* Remove the record of device INDEX if it names keeper PID (any keeper if PID is 0). */
int registry_remove(int index, pid_t pid);
/* Whether the record's keeper is alive: its pid runs a thinproxy keeper. */
bool registry_keeper_alive(const struct attachment *a);

#endif
