/* What went wrong in a request to thinproxyd, as a code a program can act on. The REST API
 * sends it as {"error": {"code": NAME, "message": ...}} (docs/api.md), with the HTTP
 * status of daemon/api.c's table; the message beside it is for people, and nothing
 * reads a code out of it. */
#ifndef TP_ERROR_H
#define TP_ERROR_H

#include <errno.h>
#include <string.h>

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
	TP_ERROR_NOT_SUPPORTED, /* what this pool cannot tell (a diff, exact usage) */
	TP_ERROR_INTERNAL,      /* the last: tp_error_name knows every code up to it */
};

/* CODE's name in the API ("invalid_name", ...); NULL for TP_ERROR_NONE or a number that is
 * no code. */
static inline const char *tp_error_name(enum tp_error code)
{
	static const char *const names[] = {
	    [TP_ERROR_INVALID_REQUEST] = "invalid_request",
	    [TP_ERROR_INVALID_NAME] = "invalid_name",
	    [TP_ERROR_INVALID_SIZE] = "invalid_size",
	    [TP_ERROR_NOT_FOUND] = "not_found",
	    [TP_ERROR_METHOD_NOT_ALLOWED] = "method_not_allowed",
	    [TP_ERROR_EXISTS] = "exists",
	    [TP_ERROR_BUSY] = "busy",
	    [TP_ERROR_READ_ONLY] = "read_only",
	    [TP_ERROR_TOO_LARGE] = "too_large",
	    [TP_ERROR_UNSUPPORTED_MEDIA_TYPE] = "unsupported_media_type",
	    [TP_ERROR_QUOTA_EXCEEDED] = "quota_exceeded",
	    [TP_ERROR_POOL_FULL] = "pool_full",
	    [TP_ERROR_NOT_SUPPORTED] = "not_supported",
	    [TP_ERROR_INTERNAL] = "internal",
	};

	if ((unsigned)code >= sizeof names / sizeof names[0])
		return NULL;
	return names[code];
}

/* The code named NAME in the API; TP_ERROR_NONE if none is. */
static inline enum tp_error tp_error_parse(const char *name)
{
	for (unsigned c = TP_ERROR_NONE + 1; tp_error_name((enum tp_error)c) != NULL; c++)
		if (strcmp(name, tp_error_name((enum tp_error)c)) == 0)
			return (enum tp_error)c;
	return TP_ERROR_NONE;
}

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
	case -EOPNOTSUPP:
		return TP_ERROR_NOT_SUPPORTED;
	default:
		return TP_ERROR_INTERNAL;
	}
}

#endif
