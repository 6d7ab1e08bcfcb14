/* fuzz_http.c: libFuzzer target for the HTTP request parser (host/codec/http.c).
 *
 * The input is a byte stream as a client might send it; its first two bytes
 * choose two split points. The stream is fed:
 *   1. all at once, with small limits (256-byte heads, 8 fields, 1 KiB
 *      bodies) so that every limit is reached often;
 *   2. in three reads at the chosen points, with the same limits;
 *   3. byte by byte (streams up to 2 KiB), with the same limits;
 *   4. all at once with the default limits.
 * Runs 1 to 3 must give the same requests and the same error in the same
 * words: how the bytes are split must not change any answer. Every request
 * is checked against the limits (what the parser holds, not only what it
 * reports), and every feed is a malloc'd copy of exactly its length, so ASan
 * catches a read past it. After an error every feed must fail at once and
 * deliver nothing. A request delivered also keeps RFC 9112's rules that
 * http.c adds to http_parser's: no blank in a field name, Host once (and
 * required in 1.1), never two framings, chunked last when
 * Transfer-Encoding is there. Broken invariants stop with __builtin_trap().
 * The feeding and comparing are tests/fuzz/split.h's.
 *
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -Ihost/codec \
 *       $(pkg-config --cflags lua5.4) host/codec/buf.c host/codec/http_head.c \
 *       host/codec/http.c \
 *       tests/fuzz/fuzz_http.c -lhttp_parser -o /tmp/fuzz_http
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

#include "split.h"

static const pl_http_limits small = {
    .max_header = 256, .max_headers = 8, .max_body = 1024};

static int name_is(const pl_http_request *q, const pl_http_header *h,
                   const char *name) {
    size_t n = strlen(name);
    return h->name_len == n && memcmp(pl_http_text(q, h->name), name, n) == 0;
}

/* The strict rules (see the head comment) on a request delivered. */
static void check_strict(const pl_http_request *q) {
    size_t hosts = 0, lengths = 0, encodings = 0;
    for (size_t i = 0; i < q->nheaders; i++) {
        const pl_http_header *h = &q->headers[i];
        for (size_t k = 0; k < h->name_len; k++) {
            char c = pl_http_text(q, h->name)[k];
            REQUIRE(c != ' ' && c != '\t');
        }
        hosts += name_is(q, h, "host");
        lengths += name_is(q, h, "content-length");
        encodings += name_is(q, h, "transfer-encoding");
    }
    REQUIRE(hosts <= 1);
    if (q->version_minor >= 1) REQUIRE(hosts == 1);
    REQUIRE(lengths <= 1 && !(lengths && encodings));
    REQUIRE(q->chunked == (encodings > 0));
}

/* What must hold for every request the parser gives. */
static void check_request(const pl_http_request *q, const pl_http_limits *lim) {
    REQUIRE(q->method != NULL);
    REQUIRE(q->head.len <= lim->max_header && q->head.cap <= lim->max_header);
    REQUIRE(q->body.len <= lim->max_body && q->body.cap <= lim->max_body);
    REQUIRE(q->nheaders <= lim->max_headers && q->headers_cap <= lim->max_headers);
    REQUIRE(q->target_len <= q->head.len && q->path_len <= q->target_len);
    if (q->has_query) REQUIRE(q->query + q->query_len <= q->target_len);
    else REQUIRE(q->query == 0 && q->query_len == 0);
    for (size_t i = 0; i < q->nheaders; i++) {
        const pl_http_header *h = &q->headers[i];
        REQUIRE(h->name_len > 0 && h->name + h->name_len <= q->head.len);
        REQUIRE(h->value + h->value_len <= q->head.len);
        for (size_t k = 0; k < h->name_len; k++) {
            char c = pl_http_text(q, h->name)[k];
            REQUIRE(!(c >= 'A' && c <= 'Z'));
        }
    }
    REQUIRE(q->version_major == 1);
    REQUIRE(!(q->keep_alive && q->upgrade));
    if (q->expect_continue) REQUIRE(q->version_minor >= 1);
    check_strict(q);
}

static void record_request(record *r, const pl_http_request *q) {
    put_field(r, q->method, strlen(q->method));
    put_field(r, pl_http_text(q, 0), q->target_len);
    put_int(r, q->version_minor);
    put_int(r, q->keep_alive);
    put_int(r, q->expect_continue);
    put_int(r, q->upgrade);
    put_int(r, q->chunked);
    put_int(r, (long)q->nheaders);
    for (size_t i = 0; i < q->nheaders; i++) {
        const pl_http_header *h = &q->headers[i];
        put_field(r, pl_http_text(q, h->name), h->name_len);
        put_field(r, pl_http_text(q, h->value), h->value_len);
    }
    put_field(r, q->body.data, q->body.len);
}

/* Takes every complete request off the queue, checking and recording it. */
static void drain(pl_http_parser *p, const pl_http_limits *lim, record *r) {
    pl_http_request *q;
    while ((q = pl_http_next(p)) != NULL) {
        check_request(q, lim);
        if (r) record_request(r, q);
        pl_http_request_free(q);
    }
}

typedef struct run_state {
    pl_http_parser *p;
    const pl_http_limits *lim;
    record *r;
} run_state;

static void feed(void *ctx, const char *piece, size_t n) {
    run_state *st = ctx;
    pl_http_parser *p = st->p;
    int failed_before = pl_http_error(p, NULL) != 0;
    int rc = pl_http_feed(p, piece, n);
    const char *reason;
    int status = pl_http_error(p, &reason);
    REQUIRE((rc == -1) == (status != 0));
    if (failed_before) REQUIRE(rc == -1 && pl_http_next(p) == NULL);
    if (status) {
        REQUIRE(status == 400 || status == 413 || status == 414 ||
                status == 431 || status == 500 || status == 501 ||
                status == 505);
        REQUIRE(reason && reason[0]);
        REQUIRE(!pl_http_in_request(p));
    }
    if (pl_http_take_continue(p)) REQUIRE(pl_http_in_request(p));
    drain(p, st->lim, st->r);
}

/* Feeds the plan's stream to a parser with the limits ctx points to. */
static void run(const void *ctx, const split_plan *plan, record *r) {
    run_state st = {pl_http_parser_new(ctx), ctx, r};
    REQUIRE(st.p != NULL);
    split_feed(plan, feed, &st);
    /* after an error, more input changes nothing */
    static const uint8_t more[] = "GET / HTTP/1.1\r\n\r\n";
    split_plan again = {more, sizeof more - 1, NULL, 0, 0};
    if (pl_http_error(st.p, NULL)) split_feed(&again, feed, &st);
    const char *reason;
    int status = pl_http_error(st.p, &reason);
    put_int(r, status);
    if (status) put_field(r, reason, strlen(reason));
    pl_http_parser_free(st.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    const uint8_t *stream = data + 2;
    size_t len = size - 2;
    size_t cuts[2];
    split_choose(data, 2, len, cuts);
    split_require_same(run, &small, stream, len, cuts, 2);

    record dflt = {0};
    split_plan whole = {stream, len, NULL, 0, 0};
    run(&pl_http_default_limits, &whole, &dflt);
    free(dflt.data);
    return 0;
}
