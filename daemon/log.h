/* Logging for thinproxyd: levels, to stderr or syslog. Log once, where the decision is
 * made: helpers return -errno, their callers log. */
#ifndef TP_LOG_H
#define TP_LOG_H

#include <stdbool.h>
#include <syslog.h>

/* Start logging as IDENT; to syslog if USE_SYSLOG, else stderr. Messages above
 * MAX_LEVEL (LOG_ERR .. LOG_DEBUG) are dropped. */
void log_init(const char *ident, bool use_syslog, int max_level);
void log_set_level(int max_level);
/* Parse "error", "warning", "notice", "info" or "debug"; -EINVAL otherwise. */
int log_level_from_string(const char *s);

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Log with errno set to -R first, so that FMT may use %m. Returns R. */
int log_errno(int level, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define log_error(...)   log_msg(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...)  log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...)    log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)   log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
