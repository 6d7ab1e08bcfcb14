/* fuzz_http_response.c: libFuzzer target for the HTTP response parser
 * (host/codec/http_response.c).
 *
 * The input is a byte stream as a server might send it; its first byte
 * chooses whether the first response answers a HEAD, its next two bytes two
 * split points. The stream is fed, then the connection's end:
 *   1. all at once, with small limits (256-byte heads, 8 fields, 1 KiB
 *      bodies) so that every limit is reached often;
 *   2. in three reads at the chosen points, with the same limits;
 *   3. byte by byte (streams up to 2 KiB), with the same limits;
 *   4. all at once with the default limits.
 * Runs 1 to 3 must give the same responses and the same error in the same
 * words. Every response is checked against the limits (what the parser
 * holds), every feed is a malloc'd copy of exactly its length, and after an
 * error every feed must fail at once and deliver nothing. A response
 * delivered keeps the framing rules http_response.c adds: no blank in a
 * field name, never two framings, chunked alone when Transfer-Encoding is
 * there; no body where none may come. Broken invariants stop with
 * __builtin_trap(). The feeding and comparing are tests/fuzz/split.h's.
 *
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -Ihost/codec \
 *       $(pkg-config --cflags lua5.4) host/codec/buf.c host/codec/http_head.c \
 *       host/codec/http.c host/codec/http_response.c \
 *       tests/fuzz/fuzz_http_response.c -lhttp_parser -o /tmp/fuzz_http_response
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_response.h"

#include "split.h"

static const pl_http_limits small = {
    .max_header = 256, .max_headers = 8, .max_body = 1024};

static int name_is(const pl_http_response *q, const pl_http_header *h,
                   const char *name) {
    size_t n = strlen(name);
    return h->name_len == n && memcmp(pl_http_response_text(q, h->name), name, n) == 0;
}

static void check_response(const pl_http_response *q, const pl_http_limits *lim) {
    REQUIRE(q->status >= 100 && q->status <= 999);
    REQUIRE(q->status >= 200 || q->status == 101); /* interim ones are dropped */
    REQUIRE(q->version_major == 1);
    REQUIRE(q->head.len <= lim->max_header && q->head.cap <= lim->max_header);
    REQUIRE(q->body.len <= lim->max_body && q->body.cap <= lim->max_body);
    REQUIRE(q->nheaders <= lim->max_headers && q->headers_cap <= lim->max_headers);
    REQUIRE(q->reason_len <= q->head.len);
    size_t lengths = 0, encodings = 0;
    for (size_t i = 0; i < q->nheaders; i++) {
        const pl_http_header *h = &q->headers[i];
        REQUIRE(h->name_len > 0 && h->name + h->name_len <= q->head.len);
        REQUIRE(h->value + h->value_len <= q->head.len);
        for (size_t k = 0; k < h->name_len; k++) {
            char c = pl_http_response_text(q, h->name)[k];
            REQUIRE(!(c >= 'A' && c <= 'Z') && c != ' ' && c != '\t');
        }
        lengths += name_is(q, h, "content-length");
        encodings += name_is(q, h, "transfer-encoding");
    }
    REQUIRE(lengths <= 1 && !(lengths && encodings));
    REQUIRE(q->chunked == (encodings > 0));
    if (q->status == 204 || q->status == 304 || q->status == 101) REQUIRE(q->body.len == 0);
    REQUIRE(!(q->keep_alive && (q->upgrade || q->until_eof)));
}

static void record_response(record *r, const pl_http_response *q) {
    put_int(r, q->status);
    put_field(r, pl_http_response_text(q, 0), q->reason_len);
    put_int(r, q->version_minor);
    put_int(r, q->keep_alive);
    put_int(r, q->chunked);
    put_int(r, q->until_eof);
    put_int(r, q->upgrade);
    put_int(r, (long)q->nheaders);
    for (size_t i = 0; i < q->nheaders; i++) {
        const pl_http_header *h = &q->headers[i];
        put_field(r, pl_http_response_text(q, h->name), h->name_len);
        put_field(r, pl_http_response_text(q, h->value), h->value_len);
    }
    put_field(r, q->body.data, q->body.len);
}

static void drain(pl_http_response_parser *p, const pl_http_limits *lim, record *r) {
    pl_http_response *q;
    while ((q = pl_http_response_next(p)) != NULL) {
        check_response(q, lim);
        if (r) record_response(r, q);
        pl_http_response_free(q);
    }
}

static void check_rc(pl_http_response_parser *p, int rc, int failed_before) {
    const char *why = pl_http_response_error(p);
    REQUIRE((rc == -1) == (why != NULL));
    if (failed_before) REQUIRE(rc == -1 && pl_http_response_next(p) == NULL);
    if (why) {
        REQUIRE(why[0]);
        REQUIRE(!pl_http_response_in_response(p));
    }
}

typedef struct run_state {
    pl_http_response_parser *p;
    const pl_http_limits *lim;
    record *r;
} run_state;

static void feed(void *ctx, const char *piece, size_t n) {
    run_state *st = ctx;
    int failed_before = pl_http_response_error(st->p) != NULL;
    check_rc(st->p, pl_http_response_feed(st->p, piece, n), failed_before);
    drain(st->p, st->lim, st->r);
}

static void finish(pl_http_response_parser *p, const pl_http_limits *lim, record *r) {
    int failed_before = pl_http_response_error(p) != NULL;
    check_rc(p, pl_http_response_eof(p), failed_before);
    drain(p, lim, r);
    REQUIRE(!pl_http_response_in_response(p));
    const char *why = pl_http_response_error(p);
    put_int(r, why != NULL);
    if (why) put_field(r, why, strlen(why));
    pl_http_response_parser_free(p);
}

/* How a run starts: the limits, and whether the first response answers a
 * HEAD. */
typedef struct setup {
    const pl_http_limits *lim;
    int head;
} setup;

/* Feeds the plan's stream, then the connection's end. */
static void run(const void *ctx, const split_plan *plan, record *r) {
    const setup *s = ctx;
    run_state st = {pl_http_response_parser_new(s->lim), s->lim, r};
    REQUIRE(st.p != NULL);
    pl_http_response_expect_head(st.p, s->head);
    split_feed(plan, feed, &st);
    finish(st.p, s->lim, r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    int head = data[0] & 1;
    const uint8_t *stream = data + 3;
    size_t len = size - 3;
    size_t cuts[2];
    split_choose(data + 1, 2, len, cuts);
    setup small_setup = {&small, head};
    split_require_same(run, &small_setup, stream, len, cuts, 2);

    record dflt = {0};
    setup dflt_setup = {&pl_http_default_limits, head};
    split_plan whole = {stream, len, NULL, 0, 0};
    run(&dflt_setup, &whole, &dflt);
    free(dflt.data);
    return 0;
}
