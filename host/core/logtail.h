/* logtail.h: the last log lines of this process, kept in memory (logtail.c).
 *
 * The observer shows an actor's recent lines without reading stderr back:
 * every line pl_log prints is also put in a fixed ring of PL_LOGTAIL_LINES
 * entries, the oldest overwritten. Each line gets a sequence number,
 * increasing from 1 and never reused, so that a reader asks for "the lines
 * after the last one I saw" and learns from a gap that it missed some.
 * Thread-safe: the arbiter's thread, thread actors and executors of one
 * process all log into the same ring. */
#ifndef PULSAR_LOGTAIL_H
#define PULSAR_LOGTAIL_H

#include <stddef.h>
#include <stdint.h>

#define PL_LOGTAIL_LINES 256
#define PL_LOGTAIL_ACTOR 64 /* bytes of an actor's name, with its NUL */
#define PL_LOGTAIL_TEXT 480 /* bytes of a line's text, with its NUL */

typedef struct pl_logtail_line {
    uint64_t seq; /* 1, 2, ... */
    double time;  /* unix seconds */
    int level;    /* enum pl_log_level */
    char actor[PL_LOGTAIL_ACTOR];
    char text[PL_LOGTAIL_TEXT]; /* cut at a UTF-8 character's start */
} pl_logtail_line;

/* Puts one line in the ring. actor NULL reads as "pulsar"; actor and text
 * are cut to fit, never inside a UTF-8 character. */
void pl_logtail_add(int level, const char *actor, const char *text, double when);

/* Copies into out[0..max) the lines with seq > since that the ring still
 * holds, oldest first, and returns how many. *last_seq (when not NULL)
 * gets the newest seq in the ring, 0 before the first line: a reader that
 * got max lines and a last_seq beyond them asks again from the last one. */
size_t pl_logtail_copy(uint64_t since, pl_logtail_line *out, size_t max,
                       uint64_t *last_seq);

#endif
