/* What went wrong in a request to thinproxyd, as a code a program can act on. The REST API
 * sends it as {"error": {"code": NAME, "message": ...}} (docs/api.md), with the HTTP
 * status of daemon/api.c's table; the message beside it is for people, and nothing
 * reads a code out of it. */
#ifndef TP_ERROR_H
#define TP_ERROR_H

#include <errno.h>

enum tp_error {
	TP_ERROR_NONE = 0,
	TP_ERROR_INVALID_REQUEST, /* malformed, or a field past its rules */
	TP_ERROR_INVALID_NAME,    /* a name past include/tp-rules.h's rule */
	TP_ERROR_INVALID_SIZE,    /* a size or byte quota out of range */
	TP_ERROR_NOT_FOUND,       /* also what is not the caller's */
	TP_ERROR_METHOD_NOT_ALLOWED,
	TP_ERROR_EXISTS,
	TP_ERROR_BUSY,                   /* open, or the parent of snapshots */
	TP_ERROR_READ_ONLY,              /* a committed volume or an image */
	TP_ERROR_TOO_LARGE,              /* a request body */
	TP_ERROR_UNSUPPORTED_MEDIA_TYPE, /* a request body not JSON */
	TP_ERROR_QUOTA_EXCEEDED,
	TP_ERROR_POOL_FULL,
	TP_ERROR_INTERNAL,
};

/* The code of an error known only by its errno R (negative), as the daemon's operations
 * return them. */
static inline enum tp_error tp_error_of_errno(int r)
{
	switch (r) {
	case -EINVAL:
		return TP_ERROR_INVALID_REQUEST;
	case -ENOENT:
		return TP_ERROR_NOT_FOUND;
	case -EEXIST:
		return TP_ERROR_EXISTS;
	case -EBUSY:
		return TP_ERROR_BUSY;
	case -EROFS:
		return TP_ERROR_READ_ONLY;
	case -EDQUOT:
		return TP_ERROR_QUOTA_EXCEEDED;
	case -ENOSPC:
		return TP_ERROR_POOL_FULL;
	default:
		return TP_ERROR_INTERNAL;
	}
}

#endif
