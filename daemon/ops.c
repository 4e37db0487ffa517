/* The operations of thinproxyd: what the REST API and the broker may ask for, each one
 * checked and carried out under the daemon lock. Changes to the pool go through the change
 * protocol of daemon/change.c. This file holds what all of them share: the state and the
 * lock that guards it, the error of a call, the start and the stop. The operations
 * themselves live in a file for each duty (daemon/ops-internal.h lists them). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "change.h"
#include "log.h"
#include "ops-internal.h"
#include "store.h"
#include "tp-cleanup.h"

struct ops_state ops = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Set when the daemon stops: a copy in progress gives up. */
atomic_bool ops_interrupted;

/* The error of this thread's last ops call: a code for the API and a message. */
static __thread struct {
	enum tp_error code;
	char message[512];
} ops_err;

const char *ops_error_message(void)
{
	return ops_err.message;
}

void ops_error_clear(void)
{
	ops_err.code = TP_ERROR_NONE;
	ops_err.message[0] = '\0';
}

enum tp_error ops_error_code(int r)
{
	return ops_err.code != TP_ERROR_NONE ? ops_err.code : tp_error_of_errno(r);
}

/* Set this thread's error (CODE, and the message) and return R. */
int fail_code(enum tp_error code, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ops_err.message, sizeof ops_err.message, fmt, ap);
	va_end(ap);
	ops_err.code = code;
	return r;
}

/* NAME of a KIND ("volume", "tenant") is not a name by include/tp-rules.h. */
int fail_name(const char *kind, const char *name)
{
	return fail_code(TP_ERROR_INVALID_NAME, -EINVAL,
	                 "invalid %s name \"%.80s\": use 1-63 of a-z 0-9 . _ -, starting with a "
	                 "letter or digit",
	                 kind, name);
}

/* An internal failure: logged here, once, and reported to the caller as such. */
int internal(int r, const char *what)
{
	log_errno(LOG_ERR, r, "%s: %m", what);
	return fail(r, "%s failed: %s", what, strerror(-r));
}

int ops_init(struct store *store, struct pool *pool, const struct ops_config *cfg)
{
	CLEANUP_FREE struct tenant *tenants = NULL;
	size_t n, i;
	int r;

	ops.store = store;
	ops.pool = pool;
	ops.cfg = *cfg;
	LOCKED;
	/* pool_open already resumed thin devices a crash left suspended. */
	r = change_init(store, pool);
	if (r < 0)
		return r;
	r = store_tenant_list(store, &tenants, &n);
	if (r < 0)
		return r;
	for (i = 0; i < n; i++) {
		if (ops.cfg.tenant_up && (r = ops.cfg.tenant_up(&tenants[i])) < 0)
			log_errno(LOG_ERR, r, "bring up tenant %s: %m, ignoring", tenants[i].name);
	}
	return 0;
}

void ops_interrupt(void)
{
	atomic_store(&ops_interrupted, true);
}

void ops_shutdown(void)
{
	LOCKED;
	change_shutdown();
	tenants_allocated_forget();
	ops.store = NULL;
	ops.pool = NULL;
}
