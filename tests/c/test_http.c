/* test_http.c: unit tests for the HTTP request parser (host/codec/http.c).
 *
 * Each input is fed the way a connection would: whole, split at every
 * position, and byte by byte; every feed is a malloc'd copy of exactly its
 * length, so ASan or valgrind catch a read past it. A run's outcome (the
 * requests and the error) is printed into a string, so "the same requests
 * whatever the split" is one string comparison.
 *
 *   gcc -std=c11 -Wall -Wextra -Werror -g -fsanitize=address,undefined \
 *       -Ihost/codec host/codec/buf.c host/codec/http_head.c host/codec/http.c \
 *       tests/c/test_http.c -lhttp_parser \
 *       $(pkg-config --cflags lua5.4) -o /tmp/test_http
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

#include "check.h"
#include "text.h"

/* ---- helpers ---- */

static void putf(text *t, const char *fmt, long a, long b) {
    char tmp[64];
    snprintf(tmp, sizeof tmp, fmt, a, b);
    puts_(t, tmp);
}

/* One line per request: method target version keep-alive, then each header
 * as [name=value], then |body|. */
static void describe(text *t, const pl_http_request *r) {
    puts_(t, r->method);
    puts_(t, " ");
    put(t, pl_http_text(r, 0), r->target_len);
    putf(t, " %ld.%ld", r->version_major, r->version_minor);
    putf(t, " ka=%ld ec=%ld", r->keep_alive, r->expect_continue);
    for (size_t i = 0; i < r->nheaders; i++) {
        const pl_http_header *h = &r->headers[i];
        puts_(t, " [");
        put(t, pl_http_text(r, h->name), h->name_len);
        puts_(t, "=");
        put(t, pl_http_text(r, h->value), h->value_len);
        puts_(t, "]");
    }
    puts_(t, " |");
    if (r->body.len) put(t, r->body.data, r->body.len);
    puts_(t, "|\n");
}

static void feed_copy(pl_http_parser *p, const char *s, size_t n) {
    char *c = exact_copy(s, n);
    pl_http_feed(p, c, n);
    free(c);
}

static void drain(pl_http_parser *p, text *t) {
    pl_http_request *r;
    while ((r = pl_http_next(p)) != NULL) {
        describe(t, r);
        pl_http_request_free(r);
    }
}

/* Feeds input[0..n) in pieces of `step` bytes (0: at once) and describes
 * every request and the error, if any. The caller frees the result. */
static char *run_steps(const pl_http_limits *lim, const char *input, size_t n,
                       size_t step) {
    pl_http_parser *p = pl_http_parser_new(lim);
    if (!p) abort();
    text t = {0};
    puts_(&t, "");
    if (step == 0) step = n ? n : 1;
    for (size_t at = 0; at < n; at += step) {
        feed_copy(p, input + at, n - at < step ? n - at : step);
        drain(p, &t);
    }
    const char *reason;
    int status = pl_http_error(p, &reason);
    if (status) {
        putf(&t, "error %ld: ", status, 0);
        puts_(&t, reason);
    }
    pl_http_parser_free(p);
    return t.s;
}

/* Feeds input in two reads split at `split`. */
static char *run_split(const pl_http_limits *lim, const char *input, size_t n,
                       size_t split) {
    pl_http_parser *p = pl_http_parser_new(lim);
    if (!p) abort();
    text t = {0};
    puts_(&t, "");
    feed_copy(p, input, split);
    drain(p, &t);
    feed_copy(p, input + split, n - split);
    drain(p, &t);
    const char *reason;
    int status = pl_http_error(p, &reason);
    if (status) {
        putf(&t, "error %ld: ", status, 0);
        puts_(&t, reason);
    }
    pl_http_parser_free(p);
    return t.s;
}

/* The outcome of input fed at once, checked to be the same split at every
 * position and byte by byte. */
static char *outcome_with(const pl_http_limits *lim, const char *input) {
    size_t n = strlen(input);
    char *whole = run_steps(lim, input, n, 0);
    char *bytes = run_steps(lim, input, n, 1);
    if (strcmp(whole, bytes) != 0)
        fprintf(stderr, "  byte by byte:\n%s\n  at once:\n%s\n", bytes, whole);
    CHECK(strcmp(whole, bytes) == 0);
    free(bytes);
    for (size_t split = 1; split < n; split++) {
        char *two = run_split(lim, input, n, split);
        int same = strcmp(whole, two) == 0;
        if (!same) fprintf(stderr, "  split at %zu differs:\n%s\n", split, two);
        CHECK(same);
        free(two);
        if (!same) break;
    }
    return whole;
}

static char *outcome(const char *input) { return outcome_with(NULL, input); }

/* Checks that input gives exactly `want`. */
static int gives(const char *input, const char *want) {
    char *got = outcome(input);
    int ok = strcmp(got, want) == 0;
    if (!ok) fprintf(stderr, "  input: %s\n  got:  %s\n  want: %s\n", input, got, want);
    free(got);
    return ok;
}

/* Checks that input ends in an error with this status and a reason
 * containing `words`, after `nreq` complete requests. */
static int fails_with(const pl_http_limits *lim, const char *input, int status,
                      const char *words, int nreq) {
    char *got = outcome_with(lim, input);
    char want[32];
    snprintf(want, sizeof want, "error %d: ", status);
    const char *err = strstr(got, "error ");
    int lines = 0;
    for (const char *c = got; c < (err ? err : got + strlen(got)); c++) lines += *c == '\n';
    int ok = err && strncmp(err, want, strlen(want)) == 0 && strstr(err, words) &&
             lines == nreq;
    if (!ok) fprintf(stderr, "  wanted %s...%s after %d requests, got:\n%s\n",
                     want, words, nreq, got);
    free(got);
    return ok;
}

static char *repeat(const char *head, const char *unit, size_t times,
                    const char *tail) {
    text t = {0};
    puts_(&t, head);
    for (size_t i = 0; i < times; i++) puts_(&t, unit);
    puts_(&t, tail);
    return t.s;
}

/* ---- requests ---- */

static void test_simple_get(void) {
    CHECK(gives("GET /index.html HTTP/1.1\r\nHost: example.org\r\n\r\n",
                "GET /index.html 1.1 ka=1 ec=0 [host=example.org] ||\n"));
    /* the fields a server needs, one by one */
    pl_http_parser *p = pl_http_parser_new(NULL);
    const char *req = "GET /a/b?x=1&y=2#top HTTP/1.1\r\nHost: h\r\n\r\n";
    CHECK(pl_http_feed(p, req, strlen(req)) == 0);
    pl_http_request *r = pl_http_next(p);
    CHECK(r && strcmp(r->method, "GET") == 0);
    CHECK(r && r->target_len == strlen("/a/b?x=1&y=2#top"));
    CHECK(r && r->path_len == 4 && memcmp(pl_http_text(r, 0), "/a/b", 4) == 0);
    CHECK(r && r->has_query && r->query_len == 7 &&
          memcmp(pl_http_text(r, r->query), "x=1&y=2", 7) == 0);
    CHECK(r && r->body.len == 0 && !r->chunked && !r->upgrade);
    CHECK(pl_http_next(p) == NULL);
    CHECK(!pl_http_in_request(p) && !pl_http_closed(p));
    pl_http_request_free(r);
    pl_http_parser_free(p);
}

static void test_query(void) {
    pl_http_parser *p = pl_http_parser_new(NULL);
    const char *reqs = "GET /s? HTTP/1.1\r\nHost: h\r\n\r\n"
                       "GET /s HTTP/1.1\r\nHost: h\r\n\r\n"
                       "GET /s?q=a+b&e=%41%42 HTTP/1.1\r\nHost: h\r\n\r\n";
    CHECK(pl_http_feed(p, reqs, strlen(reqs)) == 0);
    pl_http_request *r = pl_http_next(p);
    CHECK(r && r->has_query && r->query_len == 0 && r->path_len == 2);
    pl_http_request_free(r);
    r = pl_http_next(p);
    CHECK(r && !r->has_query && r->path_len == 2);
    pl_http_request_free(r);
    r = pl_http_next(p);
    CHECK(r && r->query_len == 14 &&
          memcmp(pl_http_text(r, r->query), "q=a+b&e=%41%42", 14) == 0);
    pl_http_request_free(r);
    pl_http_parser_free(p);
}

static void test_header_case_and_blanks(void) {
    CHECK(gives("GET / HTTP/1.1\r\nHost: h\r\nContent-TYPE:   Text/Plain  \r\nX-Empty:\r\n"
                "X-Tab:\tv\t\r\n\r\n",
                "GET / 1.1 ka=1 ec=0 [host=h] [content-type=Text/Plain] [x-empty=] "
                "[x-tab=v] ||\n"));
    /* a repeated field stays two fields here (lhttp.c joins them) */
    CHECK(gives("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\na: 2\r\n\r\n",
                "GET / 1.1 ka=1 ec=0 [host=h] [a=1] [a=2] ||\n"));
}

static void test_pipelining(void) {
    CHECK(gives("GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
                "POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
                "GET /3 HTTP/1.1\r\nHost: h\r\nX: y\r\n\r\n",
                "GET /1 1.1 ka=1 ec=0 [host=h] ||\n"
                "POST /2 1.1 ka=1 ec=0 [host=h] [content-length=5] |hello|\n"
                "GET /3 1.1 ka=1 ec=0 [host=h] [x=y] ||\n"));
    /* blank lines between requests are tolerated (RFC 9112 §2.2) */
    CHECK(gives("GET /1 HTTP/1.1\r\nHost: h\r\n\r\n\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n",
                "GET /1 1.1 ka=1 ec=0 [host=h] ||\nGET /2 1.1 ka=1 ec=0 [host=h] ||\n"));
}

static void test_byte_by_byte_in_request(void) {
    const char *req = "PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok";
    pl_http_parser *p = pl_http_parser_new(NULL);
    size_t n = strlen(req);
    for (size_t i = 0; i < n; i++) {
        CHECK(pl_http_next(p) == NULL);
        feed_copy(p, req + i, 1);
        CHECK(pl_http_in_request(p) == (i + 1 < n));
    }
    pl_http_request *r = pl_http_next(p);
    CHECK(r && r->body.len == 2 && memcmp(r->body.data, "ok", 2) == 0);
    pl_http_request_free(r);
    pl_http_parser_free(p);
}

static void test_content_length(void) {
    CHECK(gives("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
                "POST / 1.1 ka=1 ec=0 [host=h] [content-length=0] ||\n"));
    CHECK(gives("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\nhello\r\nworld",
                "POST / 1.1 ka=1 ec=0 [host=h] [content-length=12] |hello\r\nworld|\n"));
    /* a body keeps its bytes, NULs included */
    pl_http_parser *p = pl_http_parser_new(NULL);
    const char req[] = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\na\0b";
    CHECK(pl_http_feed(p, req, sizeof req - 1) == 0);
    pl_http_request *r = pl_http_next(p);
    CHECK(r && r->body.len == 3 && memcmp(r->body.data, "a\0b", 3) == 0);
    pl_http_request_free(r);
    pl_http_parser_free(p);
}

static void test_chunked(void) {
    CHECK(gives("POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                "4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n"
                "0\r\n\r\n"
                "GET /next HTTP/1.1\r\nHost: h\r\n\r\n",
                "POST /c 1.1 ka=1 ec=0 [host=h] [transfer-encoding=chunked] "
                "|Wikipedia in\r\n\r\nchunks.|\n"
                "GET /next 1.1 ka=1 ec=0 [host=h] ||\n"));
    /* trailer fields are read and dropped */
    CHECK(gives("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                "3\r\nabc\r\n0\r\nX-Sum: 12\r\nX-More: 3\r\n\r\n",
                "POST / 1.1 ka=1 ec=0 [host=h] [transfer-encoding=chunked] |abc|\n"));
    pl_http_parser *p = pl_http_parser_new(NULL);
    const char *req = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    CHECK(pl_http_feed(p, req, strlen(req)) == 0);
    pl_http_request *r = pl_http_next(p);
    CHECK(r && r->chunked && r->body.len == 0);
    pl_http_request_free(r);
    pl_http_parser_free(p);
}

/* ---- limits ---- */

static void test_long_request_line(void) {
    char *line = repeat("GET /", "a", 1 << 20, " HTTP/1.1\r\nHost: h\r\n\r\n");
    pl_http_parser *p = pl_http_parser_new(NULL);
    CHECK(pl_http_feed(p, line, strlen(line)) == -1);
    const char *reason;
    CHECK(pl_http_error(p, &reason) == 414);
    CHECK(strstr(reason, "request line longer than 65536 bytes") != NULL);
    CHECK(pl_http_next(p) == NULL);
    /* every later feed gives the same answer at once */
    CHECK(pl_http_feed(p, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", 18) == -1);
    CHECK(pl_http_error(p, NULL) == 414 && pl_http_next(p) == NULL);
    pl_http_parser_free(p);
    free(line);

    /* in 1 KiB reads, as a socket delivers it: refused at the same byte */
    p = pl_http_parser_new(NULL);
    line = repeat("GET /", "a", 1 << 20, "");
    size_t fed = 0;
    while (fed < strlen(line) && pl_http_feed(p, line + fed, 1024) == 0) fed += 1024;
    CHECK(pl_http_error(p, NULL) == 414 && fed == 64 * 1024);
    pl_http_parser_free(p);
    free(line);

    /* the bound is exact: a head of max_header bytes passes, one more fails */
    const char *req = "GET /0123456789 HTTP/1.1\r\nHost: h\r\nAb: c\r\n\r\n";
    pl_http_limits lim = pl_http_default_limits;
    lim.max_header = strlen(req);
    char *got = outcome_with(&lim, req);
    CHECK(strcmp(got, "GET /0123456789 1.1 ka=1 ec=0 [host=h] [ab=c] ||\n") == 0);
    free(got);
    lim.max_header = strlen(req) - 1;
    CHECK(fails_with(&lim, req, 431, "larger than", 0));
    lim.max_header = 10;
    CHECK(fails_with(&lim, req, 414, "request line longer than 10 bytes", 0));
}

static void test_headers_without_end(void) {
    char *flood = repeat("GET / HTTP/1.1\r\nHost: h\r\n", "X-Flood: yes\r\n", 100000, "");
    pl_http_limits lim = pl_http_default_limits;
    lim.max_headers = 1000000; /* the byte limit, not the count, must stop it */
    pl_http_parser *p = pl_http_parser_new(&lim);
    CHECK(pl_http_feed(p, flood, strlen(flood)) == -1);
    const char *reason;
    CHECK(pl_http_error(p, &reason) == 431);
    CHECK(strstr(reason, "larger than 65536 bytes") != NULL);
    pl_http_parser_free(p);
    /* one endless header value */
    free(flood);
    flood = repeat("GET / HTTP/1.1\r\nHost: h\r\nX: ", "v", 200000, "");
    p = pl_http_parser_new(NULL);
    CHECK(pl_http_feed(p, flood, strlen(flood)) == -1);
    CHECK(pl_http_error(p, NULL) == 431);
    pl_http_parser_free(p);
    free(flood);
    lim = pl_http_default_limits;
    lim.max_header = 50;
    CHECK(fails_with(&lim, "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\n\r\n",
                     431, "request line and headers larger than 50 bytes", 0));
    /* the budget is per request: each of these fits alone */
    CHECK(fails_with(&lim, "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n"
                     "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n"
                     "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\n\r\n",
                     431, "larger than 50", 2));
}

static void test_header_count(void) {
    char *ok = repeat("GET / HTTP/1.1\r\nHost: h\r\n", "H: v\r\n", 99, "\r\n");
    pl_http_parser *p = pl_http_parser_new(NULL);
    CHECK(pl_http_feed(p, ok, strlen(ok)) == 0);
    pl_http_request *r = pl_http_next(p);
    CHECK(r && r->nheaders == 100);
    pl_http_request_free(r);
    pl_http_parser_free(p);
    free(ok);

    char *many = repeat("GET / HTTP/1.1\r\nHost: h\r\n", "H: v\r\n", 100, "\r\n");
    p = pl_http_parser_new(NULL);
    CHECK(pl_http_feed(p, many, strlen(many)) == -1);
    const char *reason;
    CHECK(pl_http_error(p, &reason) == 431);
    CHECK(strstr(reason, "more than 100 header fields") != NULL);
    pl_http_parser_free(p);
    free(many);

    pl_http_limits lim = pl_http_default_limits;
    lim.max_headers = 2;
    CHECK(fails_with(&lim, "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 431,
                     "more than 2 header fields", 0));
    /* found too many at the end of the headers, whatever the split, so a
     * malformed field after them answers 400 the same way every time */
    CHECK(fails_with(&lim, "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC\r: 3\r\n\r\n", 400,
                     "malformed", 0));
    /* trailers are dropped, not counted */
    char *got = outcome_with(&lim, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                                   "0\r\nT1: 1\r\nT2: 2\r\nT3: 3\r\n\r\n");
    CHECK(strcmp(got, "POST / 1.1 ka=1 ec=0 [host=h] [transfer-encoding=chunked] ||\n") == 0);
    free(got);
}

static void test_body_limit(void) {
    pl_http_limits lim = pl_http_default_limits;
    lim.max_body = 10;
    char *got = outcome_with(&lim, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789");
    CHECK(strstr(got, "|0123456789|") != NULL && !strstr(got, "error"));
    free(got);
    /* refused from the headers, before any body byte */
    CHECK(fails_with(&lim, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", 413,
                     "Content-Length 11 exceeds the body limit of 10 bytes", 0));
    CHECK(fails_with(&lim, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5\r\n01234\r\n5\r\n56789\r\n1\r\n", 413,
                     "body larger than 10 bytes", 0));
    got = outcome_with(&lim, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n");
    CHECK(strstr(got, "|0123456789|") != NULL && !strstr(got, "error"));
    free(got);

    /* the default: 16 MiB; 17 MiB announced is refused at once */
    pl_http_parser *p = pl_http_parser_new(NULL);
    const char *big = "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 17825792\r\n\r\n";
    CHECK(pl_http_feed(p, big, strlen(big)) == -1);
    CHECK(pl_http_error(p, NULL) == 413);
    pl_http_parser_free(p);
    /* a huge chunk size is refused at its chunk header */
    p = pl_http_parser_new(NULL);
    big = "PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFF\r\n";
    CHECK(pl_http_feed(p, big, strlen(big)) == -1);
    CHECK(pl_http_error(p, NULL) == 413);
    pl_http_parser_free(p);
}

/* ---- bad input ---- */

static void test_malformed(void) {
    CHECK(fails_with(NULL, "GARBAGE\r\n\r\n", 400, "malformed request", 0));
    CHECK(fails_with(NULL, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400,
                     "malformed", 0)); /* a TLS hello */
    CHECK(fails_with(NULL, "GET / HTTP/1.1\r\nHost: h\r\nNo colon here\r\n\r\n", 400, "malformed", 0));
    CHECK(fails_with(NULL, "GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400, "malformed", 0));
    CHECK(fails_with(NULL, "GET / FTP/1.1\r\n\r\n", 400, "malformed", 0));
    CHECK(fails_with(NULL, "GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n", 400, "malformed", 0));
    CHECK(fails_with(NULL, "GET / HTTP/2.0\r\n\r\n", 505, "HTTP/2.0 is not supported", 0));
    CHECK(fails_with(NULL, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: x1\r\n\r\n", 400,
                     "content-length", 0));
    CHECK(fails_with(NULL, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
                     "Content-Length: 2\r\n\r\n", 400, "content-length", 0));
    /* request smuggling: both framings, or a final coding other than chunked */
    CHECK(fails_with(NULL, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "content-length", 0));
    CHECK(fails_with(NULL, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 400,
                     "Transfer-Encoding must end with chunked", 0));
    CHECK(fails_with(NULL, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "zz\r\n", 400, "chunk size", 0));
    /* a good request, then garbage: the good one is still delivered */
    CHECK(fails_with(NULL, "GET /ok HTTP/1.1\r\nHost: h\r\n\r\n\x01\x02\x03", 400, "malformed", 1));
}

/* RFC 9112's rules that http_parser leaves to us: each answered at the end
 * of the headers, whatever the split. */
static void test_strict_rules(void) {
    /* no blank between a field name and its colon (§5.1): http_parser
     * would frame by "Transfer-Encoding : chunked" */
    CHECK(fails_with(NULL, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n"
                     "0\r\n\r\n", 400, "blank in the header name 'transfer-encoding '", 0));
    CHECK(fails_with(NULL, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length : 3\r\n\r\nabc",
                     400, "blank in the header name 'content-length '", 0));
    CHECK(fails_with(NULL, "GET / HTTP/1.1\r\nHost: h\r\nX Y: z\r\n\r\n", 400,
                     "blank in the header name", 0));
    /* Host exactly once in HTTP/1.1, at most once in 1.0 (§3.2) */
    CHECK(fails_with(NULL, "GET / HTTP/1.1\r\n\r\n", 400, "without a Host header", 0));
    CHECK(fails_with(NULL, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400,
                     "more than one Host", 0));
    CHECK(fails_with(NULL, "GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", 400,
                     "more than one Host", 0));
    CHECK(gives("GET / HTTP/1.0\r\n\r\n", "GET / 1.0 ka=0 ec=0 ||\n"));
    /* a good request before the bad one is still delivered */
    CHECK(fails_with(NULL, "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
                     400, "without a Host", 1));
    /* obs-fold, on any field (§5.2), and a blank line start after the
     * request line (§2.2) */
    CHECK(fails_with(NULL, "GET / HTTP/1.1\r\nHost: h\r\nX-Long: a\r\n b\r\n\r\n", 400,
                     "obs-fold", 0));
    CHECK(fails_with(NULL, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip,\r\n\tchunked\r\n"
                     "\r\n0\r\n\r\n", 400, "obs-fold", 0));
    CHECK(fails_with(NULL, "GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400, "", 0));
    /* blanks in a body are no fold */
    CHECK(gives("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n\r\n x",
                "POST / 1.1 ka=1 ec=0 [host=h] [content-length=4] |\r\n x|\n"));
    /* framing: one Content-Length, never with Transfer-Encoding (§6.3) */
    CHECK(fails_with(NULL, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
                     "Content-Length: 1\r\n\r\nx", 400, "ontent-length", 0));
    CHECK(fails_with(NULL, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                     "Content-Length: 1\r\n\r\n0\r\n\r\n", 400, "ontent-", 0));
    /* the final coding must be chunked (400), and no other is decoded
     * here (501) */
    CHECK(fails_with(NULL, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                     400, "must end with chunked", 0));
    CHECK(fails_with(NULL, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                     "0\r\n\r\n", 501, "Transfer-Encoding 'gzip' is not implemented", 0));
    CHECK(fails_with(NULL, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501, "'gzip'", 0));
    CHECK(fails_with(NULL, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n"
                     "\r\n0\r\n\r\n", 400, "chunked twice", 0));
    CHECK(fails_with(NULL, "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                     400, "HTTP/1.0", 0));
    CHECK(gives("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n"
                "1\r\nz\r\n0\r\n\r\n",
                "POST / 1.1 ka=1 ec=0 [host=h] [transfer-encoding=Chunked] |z|\n"));
}

/* ---- connection rules ---- */

static void test_keep_alive_rules(void) {
    CHECK(gives("GET / HTTP/1.0\r\n\r\n", "GET / 1.0 ka=0 ec=0 ||\n"));
    CHECK(gives("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"
                "GET /2 HTTP/1.0\r\n\r\n",
                "GET / 1.0 ka=1 ec=0 [connection=Keep-Alive] ||\n"
                "GET /2 1.0 ka=0 ec=0 ||\n"));
    CHECK(gives("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
                "GET / 1.1 ka=0 ec=0 [host=h] [connection=close] ||\n"));
    /* after a request that ends the connection, later bytes are ignored,
     * garbage included */
    CHECK(gives("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /more HTTP/1.1\r\nHost: h\r\n\r\n",
                "GET / 1.1 ka=0 ec=0 [host=h] [connection=close] ||\n"));
    CHECK(gives("GET / HTTP/1.0\r\n\r\n\x01garbage",
                "GET / 1.0 ka=0 ec=0 ||\n"));
    pl_http_parser *p = pl_http_parser_new(NULL);
    const char *req = "GET / HTTP/1.0\r\n\r\n";
    CHECK(pl_http_feed(p, req, strlen(req)) == 0 && pl_http_closed(p));
    CHECK(pl_http_feed(p, "junk", 4) == 0 && pl_http_error(p, NULL) == 0);
    pl_http_request_free(pl_http_next(p));
    pl_http_parser_free(p);
    /* an upgrade is not followed: the request ends the connection */
    p = pl_http_parser_new(NULL);
    req = "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05";
    CHECK(pl_http_feed(p, req, strlen(req)) == 0 && pl_http_closed(p));
    pl_http_request *r = pl_http_next(p);
    CHECK(r && r->upgrade && !r->keep_alive);
    pl_http_request_free(r);
    pl_http_parser_free(p);
}

static void test_expect_continue(void) {
    pl_http_parser *p = pl_http_parser_new(NULL);
    const char *head = "PUT /up HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 4\r\n\r\n";
    CHECK(pl_http_feed(p, head, strlen(head)) == 0);
    CHECK(pl_http_next(p) == NULL && pl_http_in_request(p));
    CHECK(pl_http_take_continue(p) == 1);
    CHECK(pl_http_take_continue(p) == 0); /* once per request */
    CHECK(pl_http_feed(p, "data", 4) == 0);
    pl_http_request *r = pl_http_next(p);
    CHECK(r && r->expect_continue && r->body.len == 4);
    pl_http_request_free(r);
    CHECK(pl_http_take_continue(p) == 0);

    /* the body came with the headers: nothing to wait for */
    const char *whole = "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx";
    CHECK(pl_http_feed(p, whole, strlen(whole)) == 0);
    CHECK(pl_http_take_continue(p) == 0);
    pl_http_request_free(pl_http_next(p));
    /* no body announced, HTTP/1.0, or another expectation: no continue */
    const char *none = "GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n"
                       "PUT / HTTP/1.1\r\nHost: h\r\nExpect: something\r\nContent-Length: 1\r\n\r\n";
    CHECK(pl_http_feed(p, none, strlen(none)) == 0);
    CHECK(pl_http_take_continue(p) == 0);
    r = pl_http_next(p);
    CHECK(r && r->expect_continue && r->body.len == 0);
    pl_http_request_free(r);
    CHECK(pl_http_feed(p, "x", 1) == 0);
    r = pl_http_next(p);
    CHECK(r && !r->expect_continue);
    pl_http_request_free(r);
    pl_http_parser_free(p);

    p = pl_http_parser_new(NULL);
    const char *old = "PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n";
    CHECK(pl_http_feed(p, old, strlen(old)) == 0 && pl_http_take_continue(p) == 0);
    pl_http_parser_free(p);

    /* a chunk too large in the same read as the headers: no continue */
    pl_http_limits one = pl_http_default_limits;
    one.max_body = 1;
    p = pl_http_parser_new(&one);
    const char *refused = "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                          "Transfer-Encoding: chunked\r\n\r\nFF\r\n";
    CHECK(pl_http_feed(p, refused, strlen(refused)) == -1 && pl_http_take_continue(p) == 0);
    pl_http_parser_free(p);

    /* chunked, and a body too large: refused instead of continued */
    p = pl_http_parser_new(NULL);
    const char *chunked = "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n";
    CHECK(pl_http_feed(p, chunked, strlen(chunked)) == 0 && pl_http_take_continue(p) == 1);
    pl_http_parser_free(p);
    pl_http_limits lim = pl_http_default_limits;
    lim.max_body = 3;
    p = pl_http_parser_new(&lim);
    const char *big = "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
    CHECK(pl_http_feed(p, big, strlen(big)) == -1 && pl_http_take_continue(p) == 0);
    CHECK(pl_http_error(p, NULL) == 413);
    pl_http_parser_free(p);
}

/* What the parser holds stays within its limits. */
static void test_memory_bounds(void) {
    pl_http_limits lim = {.max_header = 100, .max_headers = 4, .max_body = 64};
    pl_http_parser *p = pl_http_parser_new(&lim);
    const char *req = "POST /x HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nContent-Length: 64\r\n\r\n";
    CHECK(pl_http_feed(p, req, strlen(req)) == 0);
    char body[64];
    memset(body, 'b', sizeof body);
    for (int i = 0; i < 64; i++) CHECK(pl_http_feed(p, body, 1) == 0);
    pl_http_request *r = pl_http_next(p);
    CHECK(r && r->head.cap <= 100 && r->body.cap <= 64 && r->headers_cap <= 4);
    pl_http_request_free(r);
    pl_http_parser_free(p);
}

int main(void) {
    test_simple_get();
    test_query();
    test_header_case_and_blanks();
    test_pipelining();
    test_byte_by_byte_in_request();
    test_content_length();
    test_chunked();
    test_long_request_line();
    test_headers_without_end();
    test_header_count();
    test_body_limit();
    test_malformed();
    test_strict_rules();
    test_keep_alive_rules();
    test_expect_continue();
    test_memory_bounds();
    return CHECK_REPORT("test_http");
}
