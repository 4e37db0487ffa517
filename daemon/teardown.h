/* thinproxyd --teardown: take down what a stopped daemon leaves up, on purpose, for the
 * tenants' attached devices: their nbdkits, the thin devices, our pool and the embedded
 * pool's loop devices. See docs/architecture.md for why it is a separate command. */
#ifndef TP_DAEMON_TEARDOWN_H
#define TP_DAEMON_TEARDOWN_H

#include "pool.h"
#include "supervise.h"

/* With no daemon running (the caller holds the pid file's lock): if any thin device of
 * the pool is open, log which and return -EBUSY having changed nothing. Else stop the
 * nbdkit of every tenant in the store at DB_PATH (none if it does not exist), deactivate
 * every thin device and remove the pool if it is ours (an existing pool stays active).
 * Logs what it did and why it failed. */
int teardown(const char *db_path, const struct pool_config *pc, const struct supervise_config *sc);

#endif
