/* log.h: the host's log lines, one per event, on stderr.
 *
 * Each line names the time, the level and the actor:
 *   2026-11-25 20:51:03.120 WARNING arbiter: message
 * Lua code logs through the same function (pulsar.log.*), so C and Lua lines
 * interleave in one format. */
#ifndef PULSAR_LOG_H
#define PULSAR_LOG_H

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

/* Writes a one-line error message for a caller's (err, errlen) buffer, the
 * way the host's C functions report failures; a NULL or empty buffer is
 * left alone. */
void pl_set_err(char *err, size_t errlen, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif
