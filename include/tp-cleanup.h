/* Cleanup by attribute, as in nbdkit's common/utils/cleanup.h and systemd's _cleanup_.
 * A variable marked CLEANUP_* is released when it goes out of scope; hand ownership on
 * with TAKE_PTR / TAKE_FD, which also clear the variable so nothing is released twice. */
#ifndef TP_CLEANUP_H
#define TP_CLEANUP_H

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static inline void tp_cleanup_free(void *ptr)
{
	free(*(void **)ptr);
}

static inline void tp_cleanup_close(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}

static inline void tp_cleanup_fclose(FILE **f)
{
	if (*f != NULL)
		fclose(*f);
}

static inline void tp_cleanup_unlock(pthread_mutex_t **m)
{
	if (*m)
		pthread_mutex_unlock(*m);
}

#define CLEANUP_FREE   __attribute__((cleanup(tp_cleanup_free)))
#define CLEANUP_CLOSE  __attribute__((cleanup(tp_cleanup_close)))
#define CLEANUP_FCLOSE __attribute__((cleanup(tp_cleanup_fclose)))

/* Lock the mutex M and hold it to the end of the scope (one a scope: it declares
 * _locked). */
#define LOCK_SCOPE(m)                                                               \
	__attribute__((cleanup(tp_cleanup_unlock))) pthread_mutex_t *_locked = (m); \
	pthread_mutex_lock(_locked)

#define TAKE_PTR(p)                         \
	({                                  \
		__typeof__(p) _taken = (p); \
		(p) = NULL;                 \
		_taken;                     \
	})
#define TAKE_FD(fd)                \
	({                         \
		int _taken = (fd); \
		(fd) = -1;         \
		_taken;            \
	})

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
