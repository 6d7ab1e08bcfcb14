/* log.c: the host's log lines (see log.h), and pl_set_err, the one way its
 * C functions format an error message for their caller. Lines are written
 * with one fprintf so that lines from several threads do not interleave
 * inside a line; each printed line is also kept in the process's ring of
 * recent lines (logtail.h), which the observer reads. */
#include "log.h"
#include "logtail.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *const level_names[] = {
    "debug", "info", "warning", "error", "critical", "none",
};
static const char *const level_labels[] = {
    "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "NONE",
};

static int current_level = PL_LOG_INFO;

int pl_log_level_from_name(const char *name) {
    for (int i = 0; i <= PL_LOG_NONE; i++)
        if (strcmp(name, level_names[i]) == 0) return i;
    return -1;
}

const char *pl_log_level_name(int level) {
    if (level < 0 || level > PL_LOG_NONE) return "?";
    return level_names[level];
}

void pl_log_set_level(int level) { current_level = level; }

int pl_log_enabled(int level) {
    return level >= current_level && current_level != PL_LOG_NONE;
}

static void format_time(const struct timespec *ts, char *out, size_t outlen) {
    struct tm tm;
    localtime_r(&ts->tv_sec, &tm);
    size_t n = strftime(out, outlen, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out + n, outlen - n, ".%03ld", ts->tv_nsec / 1000000L);
}

void pl_log(int level, const char *actor, const char *fmt, ...) {
    if (!pl_log_enabled(level)) return;
    char when[40], msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* One reading of the clock, so that stderr and the ring agree. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    format_time(&ts, when, sizeof when);
    if (!actor) actor = "pulsar";
    fprintf(stderr, "%s %s %s: %s\n", when, level_labels[level], actor, msg);
    pl_logtail_add(level, actor, msg, (double)ts.tv_sec + ts.tv_nsec / 1e9);
}

int pl_vset_err(char *err, size_t errlen, const char *fmt, va_list ap) {
    if (err && errlen > 0) vsnprintf(err, errlen, fmt, ap);
    return -1;
}

int pl_set_err(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    pl_vset_err(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}
