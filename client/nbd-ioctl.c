/* The kernel's NBD device through its ioctl interface (see nbd-ioctl.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/nbd.h>

#include "nbd-ioctl.h"

int nbd_ioctl_open(int index, int *ret_fd)
{
	char path[32];
	int fd;

	snprintf(path, sizeof path, "/dev/nbd%d", index);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	*ret_fd = fd;
	return 0;
}

int nbd_ioctl_configure(int fd, const struct nbd_ioctl_device *dev)
{
	/* NBD_SET_SOCK comes first: it makes this task the one setting the device up, and
	 * fails for a device that another task set up, so that nothing below can change
	 * the size of somebody else's device. */
	for (size_t i = 0; i < dev->n_fds; i++)
		if (ioctl(fd, NBD_SET_SOCK, (unsigned long)dev->fds[i]) < 0) {
			int r = -errno;

			if (i > 0)
				ioctl(fd, NBD_CLEAR_SOCK);
			return r;
		}
	if (ioctl(fd, NBD_SET_BLKSIZE, (unsigned long)dev->block_size) < 0 ||
	    ioctl(fd, NBD_SET_SIZE, (unsigned long)dev->size) < 0 ||
	    ioctl(fd, NBD_SET_FLAGS, (unsigned long)dev->flags) < 0 ||
	    ioctl(fd, NBD_SET_TIMEOUT, (unsigned long)dev->timeout) < 0) {
		int r = -errno;

		ioctl(fd, NBD_CLEAR_SOCK);
		return r;
	}
	return 0;
}

int nbd_ioctl_run(int fd)
{
	int r = 0;

	if (ioctl(fd, NBD_DO_IT) < 0)
		r = -errno;
	/* The sockets stay attached to the device until they are cleared. */
	ioctl(fd, NBD_CLEAR_SOCK);
	return r;
}

int nbd_ioctl_disconnect(int fd)
{
	return ioctl(fd, NBD_DISCONNECT) < 0 ? -errno : 0;
}

int nbd_ioctl_clear(int fd)
{
	return ioctl(fd, NBD_CLEAR_SOCK) < 0 ? -errno : 0;
}
