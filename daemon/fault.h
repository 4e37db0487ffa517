/* Fault injection for the crash tests: THINPROXY_FAULT=STEP kills the daemon at STEP the
 * way kill -9 would, with no chance to clean up. The steps are named where they are:
 * daemon/change.c for the dm-thin pool; daemon/rbd-change.c and rbd-volumes.c, all
 * "rbd-after-...", for the RBD pool. */
#ifndef TP_DAEMON_FAULT_H
#define TP_DAEMON_FAULT_H

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static inline void fault_point(const char *step)
{
	const char *want = getenv("THINPROXY_FAULT");

	if (want != NULL && strcmp(want, step) == 0) {
		log_warning("fault injection: killing the daemon at %s", step);
		kill(getpid(), SIGKILL);
	}
}

#endif
