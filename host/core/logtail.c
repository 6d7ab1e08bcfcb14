/* logtail.c: the ring of the last log lines (see logtail.h).
 *
 * The ring is static, zeroed storage: the pages of entries no line has
 * reached yet are never touched, so a process that logs little pays for
 * little. Line `seq` lives in slot (seq - 1) % PL_LOGTAIL_LINES, so the
 * ring needs no head or count besides the newest seq. One mutex guards
 * it: a writer holds it for two short copies, a reader for its copy-out,
 * and neither calls anything that could log (which would deadlock). */
#include "logtail.h"

#include <pthread.h>
#include <string.h>

static pl_logtail_line ring[PL_LOGTAIL_LINES];
static uint64_t newest; /* the seq of the newest line, 0 when none */
static pthread_mutex_t ring_lock = PTHREAD_MUTEX_INITIALIZER;

/* Copies src into dst[0..cap), cut so that no UTF-8 character is split:
 * a cut that would land on a continuation byte (10xxxxxx) moves back to
 * the character's first byte, at most 3 bytes (no valid character is
 * longer than 4), so that bad input still cuts near the limit. */
static void copy_cut(char *dst, size_t cap, const char *src) {
    size_t n = strnlen(src, cap);
    if (n == cap) {
        n = cap - 1;
        for (int back = 0; back < 3 && n > 0 &&
                           ((unsigned char)src[n] & 0xC0) == 0x80; back++)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void pl_logtail_add(int level, const char *actor, const char *text, double when) {
    pthread_mutex_lock(&ring_lock);
    pl_logtail_line *line = &ring[newest % PL_LOGTAIL_LINES];
    line->seq = ++newest;
    line->time = when;
    line->level = level;
    copy_cut(line->actor, sizeof line->actor, actor ? actor : "pulsar");
    copy_cut(line->text, sizeof line->text, text ? text : "");
    pthread_mutex_unlock(&ring_lock);
}

size_t pl_logtail_copy(uint64_t since, pl_logtail_line *out, size_t max,
                       uint64_t *last_seq) {
    size_t n = 0;
    pthread_mutex_lock(&ring_lock);
    if (since < newest) { /* else nothing is newer (and since + 1 may wrap) */
        uint64_t oldest = newest > PL_LOGTAIL_LINES ? newest - PL_LOGTAIL_LINES + 1 : 1;
        for (uint64_t seq = since >= oldest ? since + 1 : oldest;
             seq <= newest && n < max; seq++)
            out[n++] = ring[(seq - 1) % PL_LOGTAIL_LINES];
    }
    if (last_seq) *last_seq = newest;
    pthread_mutex_unlock(&ring_lock);
    return n;
}
