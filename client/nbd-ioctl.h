/* The kernel's NBD device through its ioctl interface (<linux/nbd.h>): the way in where
 * the netlink family is out of reach, as in a container with its own network namespace.
 * A device configured this way lives exactly as long as one task sits in NBD_DO_IT on
 * it, so whoever calls nbd_ioctl_run() is the device's resident process. Every function
 * returns 0 or -errno. */
#ifndef TP_CLIENT_NBD_IOCTL_H
#define TP_CLIENT_NBD_IOCTL_H

#include <stddef.h>
#include <stdint.h>

struct nbd_ioctl_device {
	uint64_t size;       /* bytes */
	uint32_t block_size; /* a power of two, 512..4096 */
	uint16_t flags;      /* transmission flags */
	unsigned timeout;    /* I/O timeout in seconds, 0: none */
	const int *fds;      /* the sockets, one per connection */
	size_t n_fds;
};

/* Open /dev/nbdINDEX for configuring it, into *RET_FD. */
int nbd_ioctl_open(int index, int *ret_fd);
/* Configure the device open on FD as DEV says. The first socket claims the device for
 * this task: -EBUSY if another task is setting it up or runs it already, -EINVAL if it
 * was connected over netlink. */
int nbd_ioctl_configure(int fd, const struct nbd_ioctl_device *dev);
/* Run the configured device until it is disconnected (NBD_DO_IT), then release its
 * sockets. Returns 0 after a requested disconnect, else the kernel's error. Signals
 * interrupt it and fail outstanding I/O: block them in the calling thread. */
int nbd_ioctl_run(int fd);
/* Ask the device open on FD to disconnect: the kernel sends NBD_CMD_DISC, and
 * nbd_ioctl_run() returns once the server has closed the connections. */
int nbd_ioctl_disconnect(int fd);
/* Drop the device's sockets at once, whoever runs it: outstanding I/O fails. */
int nbd_ioctl_clear(int fd);

#endif
