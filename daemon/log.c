/* Logging for thinproxyd. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"

static int log_max = LOG_INFO;
static bool log_syslog;
static const char *log_ident = "thinproxyd";

void log_init(const char *ident, bool use_syslog, int max_level)
{
	log_ident = ident;
	log_syslog = use_syslog;
	log_max = max_level;
	if (use_syslog)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void log_set_level(int max_level)
{
	log_max = max_level;
}

int log_level_from_string(const char *s)
{
	static const struct {
		const char *name;
		int level;
	} levels[] = {
	    {"error", LOG_ERR}, {"warning", LOG_WARNING}, {"notice", LOG_NOTICE},
	    {"info", LOG_INFO}, {"debug", LOG_DEBUG},
	};
	for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++)
		if (strcmp(s, levels[i].name) == 0)
			return levels[i].level;
	return -EINVAL;
}

static void log_vmsg(int level, const char *fmt, va_list ap)
{
	static const char *const names[] = {"emerg",   "alert",  "crit", "error",
	                                    "warning", "notice", "info", "debug"};
	int saved = errno;

	if (level > log_max)
		return;
	if (log_syslog) {
		vsyslog(level, fmt, ap);
	} else {
		char msg[2048];

		vsnprintf(msg, sizeof msg, fmt, ap);
		fprintf(stderr, "%s: %s: %s\n", log_ident, names[level & 7], msg);
	}
	errno = saved;
}

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}

int log_errno(int level, int r, const char *fmt, ...)
{
	va_list ap;

	errno = r < 0 ? -r : r;
	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
	return r;
}
