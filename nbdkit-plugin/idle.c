/* Idle exit (see idle.h). */
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "idle.h"

#define IDLE_MAX_S 86400

static struct {
	pthread_mutex_t lock;
	pthread_cond_t wake; /* a change the timer must see: a handle closed, or stop */
	pthread_t thread;
	bool running, stopping;
	unsigned seconds;     /* 0: never exit */
	unsigned open;        /* handles open */
	struct timespec last; /* CLOCK_MONOTONIC of the last connection, open or close */
} idle = {.lock = PTHREAD_MUTEX_INITIALIZER};

int idle_config(const char *value)
{
	char *end;
	unsigned long s;

	errno = 0;
	s = strtoul(value, &end, 10);
	if (errno != 0 || end == value || *end != '\0' || value[0] == '-' || s > IDLE_MAX_S) {
		nbdkit_error("idle=%s: not a number of seconds from 0 (never) to %d", value,
		             IDLE_MAX_S);
		return -1;
	}
	idle.seconds = (unsigned)s;
	return 0;
}

static void touch(void)
{
	clock_gettime(CLOCK_MONOTONIC, &idle.last);
}

/* The timer: sleep until SECONDS after the last activity, and shut nbdkit down if no
 * handle is open then and nothing happened meanwhile. */
static void *timer(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&idle.lock);
	while (!idle.stopping) {
		struct timespec due = idle.last, now;

		if (idle.open > 0) {
			/* Only a close can end this; it signals. */
			pthread_cond_wait(&idle.wake, &idle.lock);
			continue;
		}
		due.tv_sec += idle.seconds;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > due.tv_sec ||
		    (now.tv_sec == due.tv_sec && now.tv_nsec >= due.tv_nsec)) {
			nbdkit_debug("no connection for %u s, exiting", idle.seconds);
			nbdkit_shutdown();
			break;
		}
		/* Woken early or late alike, the loop looks at the last activity again. */
		pthread_cond_timedwait(&idle.wake, &idle.lock, &due);
	}
	pthread_mutex_unlock(&idle.lock);
	return NULL;
}

int idle_start(void)
{
	pthread_condattr_t attr;
	int r;

	if (idle.seconds == 0)
		return 0;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	r = pthread_cond_init(&idle.wake, &attr);
	pthread_condattr_destroy(&attr);
	if (r == 0) {
		touch();
		r = pthread_create(&idle.thread, NULL, timer, NULL);
	}
	if (r != 0) {
		errno = r;
		nbdkit_error("idle=%u: start the timer: %m", idle.seconds);
		return -1;
	}
	idle.running = true;
	return 0;
}

void idle_connection(void)
{
	pthread_mutex_lock(&idle.lock);
	touch();
	pthread_mutex_unlock(&idle.lock);
}

void idle_opened(void)
{
	pthread_mutex_lock(&idle.lock);
	idle.open++;
	touch();
	pthread_mutex_unlock(&idle.lock);
}

void idle_closed(void)
{
	pthread_mutex_lock(&idle.lock);
	if (idle.open > 0)
		idle.open--;
	touch();
	if (idle.running)
		pthread_cond_signal(&idle.wake);
	pthread_mutex_unlock(&idle.lock);
}

void idle_stop(void)
{
	if (!idle.running)
		return;
	pthread_mutex_lock(&idle.lock);
	idle.stopping = true;
	pthread_cond_signal(&idle.wake);
	pthread_mutex_unlock(&idle.lock);
	pthread_join(idle.thread, NULL);
	pthread_cond_destroy(&idle.wake);
	idle.running = false;
}
