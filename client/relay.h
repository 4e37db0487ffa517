/* A userspace relay between the kernel's NBD client and the server, for devices attached
 * through the ioctl interface, which cannot swap a dead connection for a fresh one: the
 * kernel gets one end of a socketpair that never breaks, and the relay carries its
 * requests to the server and the replies back. When the server's connection breaks (its
 * nbdkit restarted), the relay connects again and sends every request that had no reply
 * yet once more, so the kernel sees a slow request, not an error. A request the server
 * has seen twice is harmless: NBD requests are idempotent.
 *
 * If the server stays away longer than the dead-connection timeout, the outstanding
 * requests and every new one fail with EIO until it is back. The server is not trusted:
 * a reply it was not asked for, or one with a bad magic, counts as a broken connection.
 *
 * Three threads per relay: one reads the kernel's requests, one the server's replies and
 * does the reconnecting, and one sends the outstanding requests again on a fresh
 * connection, so that replies are read while it does. */
#ifndef TP_CLIENT_RELAY_H
#define TP_CLIENT_RELAY_H

/* Open a fresh connection to the server and negotiate the export again, into *RET_FD;
 * 0 or -errno. Called by the relay's thread, which it may block for a while. */
typedef int relay_connect_fn(void *opaque, int *ret_fd);

struct relay_config {
	int kernel_fd;         /* our end of the socketpair the kernel has; taken over */
	int server_fd;         /* a negotiated connection to the server; taken over */
	unsigned dead_timeout; /* seconds the server may be away before I/O fails */
	relay_connect_fn *reconnect;
	void *opaque;
	const char *name; /* for the log, e.g. "nbd3" */
};

struct relay;

/* Start relaying. */
int relay_start(const struct relay_config *cfg, struct relay **ret_relay);
/* Wait until the relay has ended (the kernel closed its end, or the server closed the
 * connection after NBD_CMD_DISC), ending it first if it has not; then free it. Requests
 * still outstanding fail. NULL is fine. */
void relay_stop(struct relay *r);

#endif
