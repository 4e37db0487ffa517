/* Looking again at something about to change (a device let go, a keeper gone, a file
 * descriptor closed in another process): the looks come 1 ms apart at first, doubling up
 * to TP_BACKOFF_MAX_MS, so that a change a moment away is seen at once and a slow one
 * costs a look every TP_BACKOFF_MAX_MS. For the daemon and the client alike. */
#ifndef TP_BACKOFF_H
#define TP_BACKOFF_H

#include <errno.h>
#include <time.h>

#define TP_BACKOFF_MAX_MS 20

/* Sleep until the next look. *STEP_MS starts at 1 and is the next sleep's length on
 * return; returns the milliseconds slept, to add up against a limit. */
static inline long tp_backoff(long *step_ms)
{
	long ms = *step_ms;
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	*step_ms = ms * 2 > TP_BACKOFF_MAX_MS ? TP_BACKOFF_MAX_MS : ms * 2;
	return ms;
}

#endif
