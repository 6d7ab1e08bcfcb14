/* test_logtail.c: unit tests for the ring of recent log lines
 * (host/core/logtail.c): wrap-around, reading after a seq, cutting long
 * actors and texts at a UTF-8 character's start, and four writers with a
 * reader at once (no seq lost or repeated, no entry read half-written).
 * The ring is the process's one static ring, so each test reads from the
 * newest seq the previous one left.
 *
 *   gcc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g -pthread \
 *       -fsanitize=address,undefined -Ihost/core host/core/logtail.c \
 *       tests/c/test_logtail.c -o /tmp/test_logtail
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logtail.h"

#include "check.h"

static pl_logtail_line out[PL_LOGTAIL_LINES + 8];

static uint64_t newest_seq(void) {
    uint64_t last = 0;
    pl_logtail_copy(0, out, 0, &last);
    return last;
}

static void test_empty(void) {
    uint64_t last = 99;
    CHECK(pl_logtail_copy(0, out, PL_LOGTAIL_LINES, &last) == 0);
    CHECK(last == 0);
}

static void test_wrap_and_since(void) {
    char text[32];
    for (int i = 1; i <= 300; i++) {
        snprintf(text, sizeof text, "line %d", i);
        pl_logtail_add(i % 5, "arbiter", text, 1000.0 + i);
    }
    uint64_t last = 0;
    size_t n = pl_logtail_copy(0, out, PL_LOGTAIL_LINES + 8, &last);
    CHECK(n == PL_LOGTAIL_LINES);
    CHECK(last == 300);
    CHECK(out[0].seq == 300 - PL_LOGTAIL_LINES + 1);
    CHECK(out[n - 1].seq == 300);
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        int seq = (int)out[i].seq;
        snprintf(text, sizeof text, "line %d", seq);
        ok = ok && (i == 0 || out[i].seq == out[i - 1].seq + 1) &&
             strcmp(out[i].text, text) == 0 && out[i].level == seq % 5 &&
             out[i].time == 1000.0 + seq && strcmp(out[i].actor, "arbiter") == 0;
    }
    CHECK(ok);

    /* after a seq: only newer lines; one older than the ring: all it has */
    n = pl_logtail_copy(290, out, PL_LOGTAIL_LINES, &last);
    CHECK(n == 10 && out[0].seq == 291 && out[9].seq == 300 && last == 300);
    CHECK(pl_logtail_copy(300, out, PL_LOGTAIL_LINES, &last) == 0 && last == 300);
    CHECK(pl_logtail_copy(UINT64_MAX, out, PL_LOGTAIL_LINES, &last) == 0);
    n = pl_logtail_copy(5, out, PL_LOGTAIL_LINES, &last);
    CHECK(n == PL_LOGTAIL_LINES && out[0].seq == 45);
    /* at most max, the oldest first, so that a reader goes on from there */
    n = pl_logtail_copy(100, out, 3, &last);
    CHECK(n == 3 && out[0].seq == 101 && out[2].seq == 103 && last == 300);
}

/* text: `keep` ASCII bytes then `ch`, which crosses the text's limit. */
static void check_cut(const char *ch, size_t keep, size_t expect_len) {
    char text[PL_LOGTAIL_TEXT + 16];
    memset(text, 'a', keep);
    strcpy(text + keep, ch);
    strcat(text, "tail");
    pl_logtail_add(2, "cutter", text, 1.0);
    uint64_t last = 0;
    CHECK(pl_logtail_copy(newest_seq() - 1, out, 1, &last) == 1);
    CHECK(strlen(out[0].text) == expect_len);
    CHECK(strncmp(out[0].text, text, expect_len) == 0);
}

static void test_cut(void) {
    size_t room = PL_LOGTAIL_TEXT - 1; /* bytes of text kept at most */
    check_cut("\xc3\xa9", room - 1, room - 1);         /* é: 2 bytes */
    check_cut("\xe2\x82\xac", room - 1, room - 1);     /* €: 3 bytes */
    check_cut("\xe2\x82\xac", room - 2, room - 2);
    check_cut("\xf0\x9f\x98\x80", room - 3, room - 3); /* 😀: 4 bytes */
    check_cut("\xf0\x9f\x98\x80", room - 1, room - 1);
    check_cut("\xc3\xa9", room - 2, room);             /* é fits whole */
    check_cut("", room, room);                         /* plain ASCII */

    /* a short line is kept whole; a NULL actor reads as "pulsar" */
    pl_logtail_add(1, NULL, "short \xc3\xa9", 2.0);
    CHECK(pl_logtail_copy(newest_seq() - 1, out, 1, NULL) == 1);
    CHECK(strcmp(out[0].text, "short \xc3\xa9") == 0);
    CHECK(strcmp(out[0].actor, "pulsar") == 0);

    /* an actor's name: 63 bytes at most, cut the same way */
    char actor[100];
    memset(actor, 'n', sizeof actor - 1);
    actor[sizeof actor - 1] = '\0';
    pl_logtail_add(1, actor, "x", 3.0);
    CHECK(pl_logtail_copy(newest_seq() - 1, out, 1, NULL) == 1);
    CHECK(strlen(out[0].actor) == PL_LOGTAIL_ACTOR - 1);
    memcpy(actor + PL_LOGTAIL_ACTOR - 2, "\xc3\xa9", 2); /* é across the cut */
    pl_logtail_add(1, actor, "x", 3.0);
    CHECK(pl_logtail_copy(newest_seq() - 1, out, 1, NULL) == 1);
    CHECK(strlen(out[0].actor) == PL_LOGTAIL_ACTOR - 2);

    /* bad UTF-8 (continuation bytes only) still cuts near the limit */
    char bad[PL_LOGTAIL_TEXT + 8];
    memset(bad, 0x80, sizeof bad - 1);
    bad[sizeof bad - 1] = '\0';
    pl_logtail_add(1, "bad", bad, 4.0);
    CHECK(pl_logtail_copy(newest_seq() - 1, out, 1, NULL) == 1);
    CHECK(strlen(out[0].text) == room - 3);
}

/* ---- four writers and a reader ---- */

enum { WRITERS = 4, PER_WRITER = 20000 };

static atomic_int writers_done;

/* Writer w's line i: actor "writer-W", level W, a text of (i % 300) + 1
 * times the letter 'a' + W, time i: each field says who wrote it, so a
 * torn entry shows as a disagreement. */
static void *writer(void *arg) {
    int w = (int)(intptr_t)arg;
    char actor[16], text[PL_LOGTAIL_TEXT];
    snprintf(actor, sizeof actor, "writer-%d", w);
    for (int i = 0; i < PER_WRITER; i++) {
        size_t len = (size_t)(i % 300) + 1;
        memset(text, 'a' + w, len);
        text[len] = '\0';
        pl_logtail_add(w, actor, text, (double)i);
    }
    return NULL;
}

static int whole(const pl_logtail_line *line) {
    int w = line->level;
    char actor[16];
    snprintf(actor, sizeof actor, "writer-%d", w);
    size_t len = (size_t)((long)line->time % 300) + 1;
    if (w < 0 || w >= WRITERS || strcmp(line->actor, actor) != 0) return 0;
    if (strlen(line->text) != len) return 0;
    for (size_t i = 0; i < len; i++)
        if (line->text[i] != 'a' + w) return 0;
    return 1;
}

static void *reader(void *arg) {
    int *bad = arg;
    static pl_logtail_line seen[PL_LOGTAIL_LINES];
    uint64_t since = newest_seq(), last;
    while (!writers_done) {
        size_t n = pl_logtail_copy(since, seen, PL_LOGTAIL_LINES, &last);
        for (size_t i = 0; i < n; i++) {
            /* in order and without a gap inside one copy */
            if (i > 0 && seen[i].seq != seen[i - 1].seq + 1) (*bad)++;
            if (seen[i].seq <= since || !whole(&seen[i])) (*bad)++;
        }
        if (n > 0 && seen[n - 1].seq != last) (*bad)++;
        if (n > 0) since = seen[n - 1].seq;
    }
    return NULL;
}

static void test_threads(void) {
    uint64_t before = newest_seq();
    pthread_t writers[WRITERS], watcher;
    int bad = 0;
    CHECK(pthread_create(&watcher, NULL, reader, &bad) == 0);
    for (int w = 0; w < WRITERS; w++)
        CHECK(pthread_create(&writers[w], NULL, writer, (void *)(intptr_t)w) == 0);
    for (int w = 0; w < WRITERS; w++) pthread_join(writers[w], NULL);
    writers_done = 1;
    pthread_join(watcher, NULL);
    CHECK(bad == 0);

    /* every line got its own seq: none lost, none given twice */
    uint64_t last = 0;
    size_t n = pl_logtail_copy(before, out, PL_LOGTAIL_LINES, &last);
    CHECK(last == before + WRITERS * PER_WRITER);
    CHECK(n == PL_LOGTAIL_LINES);
    int ok = 1;
    for (size_t i = 0; i < n; i++)
        ok = ok && whole(&out[i]) && out[i].seq == last - PL_LOGTAIL_LINES + 1 + i;
    CHECK(ok);
}

int main(void) {
    test_empty();
    test_wrap_and_since();
    test_cut();
    test_threads();
    return CHECK_REPORT("test_logtail");
}
