/* log.h: the host's log lines, one per event, on stderr.
 *
 * Each line names the time, the level and the actor:
 *   2026-11-25 20:51:03.120 WARNING arbiter: message
 * Lua code logs through the same function (pulsar.log.*), so C and Lua lines
 * interleave in one format. */
#ifndef PULSAR_LOG_H
#define PULSAR_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum pl_log_level {
    PL_LOG_DEBUG,
    PL_LOG_INFO,
    PL_LOG_WARNING,
    PL_LOG_ERROR,
    PL_LOG_CRITICAL,
    PL_LOG_NONE,
};

/* The level named `name` ("debug" ... "none"), or -1. */
int pl_log_level_from_name(const char *name);
const char *pl_log_level_name(int level);

void pl_log_set_level(int level);
int pl_log_enabled(int level);

void pl_log(int level, const char *actor, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* The one way the host's C functions format an error for a caller's (err,
 * errlen) buffer: a one-line message, cut (never overflowing) when longer
 * than the buffer; a NULL or empty buffer is left alone. Returns -1, so
 * that a function reporting failure can `return pl_set_err(...)`. */
int pl_set_err(char *err, size_t errlen, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* pl_set_err for a function that takes its own format and arguments (the
 * "format the reason, then close" helpers of conn.c and net.c). */
int pl_vset_err(char *err, size_t errlen, const char *fmt, va_list ap)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 0)))
#endif
    ;

#endif
