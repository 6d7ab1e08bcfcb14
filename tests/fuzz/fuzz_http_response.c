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
 * __builtin_trap().
 *
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -Ihost/codec \
 *       $(pkg-config --cflags lua5.4) host/codec/buf.c host/codec/http.c \
 *       host/codec/http_response.c tests/fuzz/fuzz_http_response.c \
 *       -lhttp_parser -o /tmp/fuzz_http_response
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_response.h"

#define REQUIRE(cond)                                                      \
    do {                                                                   \
        if (!(cond)) __builtin_trap();                                     \
    } while (0)

#define BYTE_BY_BYTE_MAX 2048

static const pl_http_limits small = {
    .max_header = 256, .max_headers = 8, .max_body = 1024};

typedef struct record {
    char *data;
    size_t len, cap;
} record;

static void put(record *r, const void *p, size_t n) {
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

static void put_field(record *r, const char *p, size_t n) {
    put(r, &n, sizeof n);
    put(r, p, n);
}

static void put_int(record *r, long v) { put(r, &v, sizeof v); }

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

static void feed(pl_http_response_parser *p, const pl_http_limits *lim,
                 const uint8_t *bytes, size_t n, record *r) {
    char *copy = malloc(n ? n : 1);
    REQUIRE(copy != NULL);
    if (n) memcpy(copy, bytes, n);
    int failed_before = pl_http_response_error(p) != NULL;
    int rc = pl_http_response_feed(p, copy, n);
    free(copy);
    check_rc(p, rc, failed_before);
    drain(p, lim, r);
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

static pl_http_response_parser *start(const pl_http_limits *lim, int head) {
    pl_http_response_parser *p = pl_http_response_parser_new(lim);
    REQUIRE(p != NULL);
    pl_http_response_expect_head(p, head);
    return p;
}

static void run(const uint8_t *stream, size_t len, const size_t *cuts,
                size_t ncuts, const pl_http_limits *lim, int head, record *r) {
    pl_http_response_parser *p = start(lim, head);
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        feed(p, lim, stream + at, end - at, r);
        at = end;
    }
    finish(p, lim, r);
}

static void run_byte_by_byte(const uint8_t *stream, size_t len, int head, record *r) {
    pl_http_response_parser *p = start(&small, head);
    for (size_t i = 0; i < len; i++) feed(p, &small, stream + i, 1, r);
    finish(p, &small, r);
}

static void require_same(const record *a, const record *b) {
    REQUIRE(a->len == b->len);
    REQUIRE(a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    int head = data[0] & 1;
    const uint8_t *stream = data + 3;
    size_t len = size - 3;
    size_t cuts[2] = {data[1] % (len + 1), data[2] % (len + 1)};
    if (cuts[0] > cuts[1]) {
        size_t t = cuts[0];
        cuts[0] = cuts[1];
        cuts[1] = t;
    }

    record once = {0}, split = {0}, bytes = {0};
    run(stream, len, NULL, 0, &small, head, &once);
    run(stream, len, cuts, 2, &small, head, &split);
    require_same(&once, &split);
    if (len <= BYTE_BY_BYTE_MAX) {
        run_byte_by_byte(stream, len, head, &bytes);
        require_same(&once, &bytes);
    }
    free(once.data);
    free(split.data);
    free(bytes.data);

    record dflt = {0};
    run(stream, len, NULL, 0, &pl_http_default_limits, head, &dflt);
    free(dflt.data);
    return 0;
}
