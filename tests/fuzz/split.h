/* split.h: the harness the stream parsers' fuzz targets share (fuzz_http,
 * fuzz_http_response, fuzz_ws): feed one input whole, cut at chosen points
 * and byte by byte, and require the same outcome every way.
 *
 * A parser of bytes from a socket must answer the same however the reads
 * split them, so each target writes what a run gave (messages, the error in
 * its words) into a record, and the records of the three runs must be equal
 * byte for byte. Each piece is handed over as a malloc'd copy of exactly
 * its length, so ASan catches a read past it. Broken invariants stop with
 * __builtin_trap(). Everything is static inline: a target that uses only
 * part of it compiles without warnings. */
#ifndef PULSAR_FUZZ_SPLIT_H
#define PULSAR_FUZZ_SPLIT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define REQUIRE(cond)                                                      \
    do {                                                                   \
        if (!(cond)) __builtin_trap();                                     \
    } while (0)

/* Byte-by-byte runs are quadratic in places: only streams up to this. */
#define BYTE_BY_BYTE_MAX 2048

/* A growable record of a run's outcome, compared with memcmp. */
typedef struct record {
    char *data;
    size_t len, cap;
} record;

static inline void put(record *r, const void *p, size_t n) {
    if (r->len + n > r->cap) {
        size_t cap = (r->len + n) * 2;
        char *d = realloc(r->data, cap);
        REQUIRE(d != NULL);
        r->data = d;
        r->cap = cap;
    }
    if (n) memcpy(r->data + r->len, p, n);
    r->len += n;
}

/* Length-prefixed, so no two different outcomes can record alike. */
static inline void put_field(record *r, const char *p, size_t n) {
    put(r, &n, sizeof n);
    put(r, p, n);
}

static inline void put_int(record *r, long v) { put(r, &v, sizeof v); }

/* How one run cuts the stream: at cuts[0..ncuts) (ascending, within len),
 * or, when bytewise, after every byte. No cuts and not bytewise: whole. */
typedef struct split_plan {
    const uint8_t *stream;
    size_t len;
    const size_t *cuts;
    size_t ncuts;
    int bytewise;
} split_plan;

static inline int split_is_whole(const split_plan *plan) {
    return plan->ncuts == 0 && !plan->bytewise;
}

/* Takes one piece, a malloc'd copy that split_feed frees after the call. */
typedef void split_feed_fn(void *ctx, const char *piece, size_t n);

static inline void split_feed_piece(split_feed_fn *feed, void *ctx,
                                    const uint8_t *p, size_t n) {
    char *copy = malloc(n ? n : 1);
    REQUIRE(copy != NULL);
    if (n) memcpy(copy, p, n);
    feed(ctx, copy, n);
    free(copy);
}

/* Feeds the plan's stream, piece by piece (a whole empty stream is one
 * empty piece). */
static inline void split_feed(const split_plan *plan, split_feed_fn *feed,
                              void *ctx) {
    if (plan->bytewise) {
        for (size_t i = 0; i < plan->len; i++)
            split_feed_piece(feed, ctx, plan->stream + i, 1);
        return;
    }
    size_t at = 0;
    for (size_t i = 0; i <= plan->ncuts; i++) {
        size_t end = i < plan->ncuts ? plan->cuts[i] : plan->len;
        split_feed_piece(feed, ctx, plan->stream + at, end - at);
        at = end;
    }
}

/* Cut points from the input's own bytes, choice[0..n), sorted. */
static inline void split_choose(const uint8_t *choice, size_t n, size_t len,
                                size_t *cuts) {
    for (size_t i = 0; i < n; i++) {
        size_t c = choice[i] % (len + 1), k = i;
        for (; k > 0 && cuts[k - 1] > c; k--) cuts[k] = cuts[k - 1];
        cuts[k] = c;
    }
}

/* One run of a parser over a plan, its outcome written into r. */
typedef void split_run_fn(const void *ctx, const split_plan *plan, record *r);

static inline void require_same(const record *a, const record *b) {
    REQUIRE(a->len == b->len);
    REQUIRE(a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

/* Runs the stream whole, cut at cuts[0..ncuts) and byte by byte (up to
 * BYTE_BY_BYTE_MAX bytes), and requires one outcome. */
static inline void split_require_same(split_run_fn *run, const void *ctx,
                                      const uint8_t *stream, size_t len,
                                      const size_t *cuts, size_t ncuts) {
    split_plan whole = {stream, len, NULL, 0, 0};
    split_plan cut = {stream, len, cuts, ncuts, 0};
    split_plan bytes = {stream, len, NULL, 0, 1};
    record once = {0}, split = {0}, bytewise = {0};
    run(ctx, &whole, &once);
    run(ctx, &cut, &split);
    require_same(&once, &split);
    if (len <= BYTE_BY_BYTE_MAX) {
        run(ctx, &bytes, &bytewise);
        require_same(&once, &bytewise);
    }
    free(once.data);
    free(split.data);
    free(bytewise.data);
}

#endif
