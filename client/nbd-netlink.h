/* The kernel's NBD device over generic netlink (family "nbd", <linux/nbd-netlink.h>), with
 * libnl-genl-3: connect a device to sockets that finished their handshake, reconnect it
 * to fresh ones, disconnect it, ask whether it is connected, and hear when one of its
 * connections dies.
 *
 * The family is registered in the initial network namespace only: from a container with
 * its own network namespace it is invisible, and nbd_nl_open() answers -ENOENT (also when
 * the nbd module is not loaded). Every function returns 0 or -errno; the kernel's errno
 * comes through unchanged. */
#ifndef TP_CLIENT_NBD_NETLINK_H
#define TP_CLIENT_NBD_NETLINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct nbd_nl;

/* What NBD_CMD_CONNECT configures. */
struct nbd_nl_device {
	int index;                  /* /dev/nbdINDEX, or -1 for any free device */
	uint64_t size;              /* bytes */
	uint64_t block_size;        /* bytes: a power of two, 512..4096 */
	uint64_t server_flags;      /* the handshake's transmission flags */
	uint64_t timeout;           /* I/O timeout in seconds, 0: none */
	uint64_t dead_conn_timeout; /* seconds to wait for a reconnect, 0: none */
	const char *backend;        /* identifies the export: /sys/block/nbdN/backend */
	const int *fds;             /* the sockets, one per connection */
	size_t n_fds;
};

/* A netlink socket for the nbd family. -ENOENT if the family is not there. */
int nbd_nl_open(struct nbd_nl **ret_nl);
/* Close NL; NULL is fine. */
void nbd_nl_close(struct nbd_nl *nl);

/* Connect a device as DEV says and hand its number to *RET_INDEX. The kernel keeps its
 * own references to the sockets: the caller may close its fds afterwards. -EBUSY if the
 * device asked for is in use. */
int nbd_nl_connect(struct nbd_nl *nl, const struct nbd_nl_device *dev, int *ret_index);
/* Hand the connected device INDEX the N_FDS fresh sockets FDS: each replaces one dead
 * connection; the kernel drops what is left over once none is dead. BACKEND must be the
 * one the device was connected with. */
int nbd_nl_reconfigure(struct nbd_nl *nl, int index, const char *backend, const int *fds,
                       size_t n_fds);
/* Disconnect device INDEX: outstanding I/O fails. */
int nbd_nl_disconnect(struct nbd_nl *nl, int index);
/* Whether device INDEX is connected (configured), into *RET_CONNECTED. -ENODEV if there is
 * no such device. */
int nbd_nl_status(struct nbd_nl *nl, int index, bool *ret_connected);

/* Make NL a listener for the family's notifications (NBD_CMD_LINK_DEAD), non-blocking;
 * poll nbd_nl_fd() for input, then call nbd_nl_dead_links(). Use a socket of its own for
 * this. */
int nbd_nl_subscribe(struct nbd_nl *nl);
int nbd_nl_fd(const struct nbd_nl *nl);
/* Read every notification queued on the subscribed NL; set *RET_DEAD if one said that a
 * connection of device INDEX died, or if notifications may have been lost (the socket's
 * buffer overflowed, or reading failed), since one of them might have said so. */
int nbd_nl_dead_links(struct nbd_nl *nl, int index, bool *ret_dead);

#endif
