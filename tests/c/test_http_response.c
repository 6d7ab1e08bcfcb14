/* test_http_response.c: unit tests for the HTTP response parser
 * (host/codec/http_response.c).
 *
 * Each input is fed whole, split at every position and byte by byte, each
 * feed a malloc'd copy of exactly its length (so ASan catches a read past
 * it), then the end of the connection; the outcome (the responses and the
 * error) is printed into a string, so "the same responses whatever the
 * split" is one string comparison. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_response.h"

#include "check.h"
#include "text.h"

/* One line per response: status reason version flags, [name=value]...,
 * |body|. */
static void describe(text *t, const pl_http_response *r) {
    char tmp[96];
    snprintf(tmp, sizeof tmp, "%d '", r->status);
    puts_(t, tmp);
    put(t, pl_http_response_text(r, 0), r->reason_len);
    snprintf(tmp, sizeof tmp, "' %d.%d ka=%d ch=%d eof=%d up=%d", r->version_major,
             r->version_minor, r->keep_alive, r->chunked, r->until_eof, r->upgrade);
    puts_(t, tmp);
    for (size_t i = 0; i < r->nheaders; i++) {
        const pl_http_header *h = &r->headers[i];
        puts_(t, " [");
        put(t, pl_http_response_text(r, h->name), h->name_len);
        puts_(t, "=");
        put(t, pl_http_response_text(r, h->value), h->value_len);
        puts_(t, "]");
    }
    puts_(t, " |");
    if (r->body.len) put(t, r->body.data, r->body.len);
    puts_(t, "|\n");
}

static void drain(pl_http_response_parser *p, text *t) {
    pl_http_response *r;
    while ((r = pl_http_response_next(p)) != NULL) {
        describe(t, r);
        pl_http_response_free(r);
    }
}

static void feed_copy(pl_http_response_parser *p, const char *s, size_t n) {
    char *c = exact_copy(s, n);
    pl_http_response_feed(p, c, n);
    free(c);
}

typedef struct options {
    const pl_http_limits *lim;
    int head; /* the first response answers a HEAD */
    int eof;  /* the connection closes after the input */
} options;

/* Feeds input in pieces of `step` bytes (0: whole), or cut once at `cut`. */
static char *run(const options *o, const char *input, size_t n, size_t step,
                 size_t cut) {
    pl_http_response_parser *p = pl_http_response_parser_new(o->lim);
    if (!p) abort();
    pl_http_response_expect_head(p, o->head);
    text t = {0};
    puts_(&t, "");
    if (step) {
        for (size_t at = 0; at < n; at += step)
            feed_copy(p, input + at, n - at < step ? n - at : step), drain(p, &t);
    } else {
        feed_copy(p, input, cut), drain(p, &t);
        feed_copy(p, input + cut, n - cut), drain(p, &t);
    }
    if (o->eof) pl_http_response_eof(p), drain(p, &t);
    const char *why = pl_http_response_error(p);
    if (why) puts_(&t, "error: "), puts_(&t, why), puts_(&t, "\n");
    pl_http_response_parser_free(p);
    return t.s;
}

/* The outcome, after checking it is the same for every split. */
static char *outcome_with(const options *o, const char *input) {
    size_t n = strlen(input);
    char *whole = run(o, input, n, 0, n);
    int same = 1;
    char *bytes = run(o, input, n, 1, 0);
    same &= strcmp(whole, bytes) == 0;
    free(bytes);
    for (size_t cut = 0; cut <= n && same; cut++) {
        char *split = run(o, input, n, 0, cut);
        if (strcmp(whole, split) != 0) {
            fprintf(stderr, "split at %zu gives\n%s\ninstead of\n%s\n", cut, split, whole);
            same = 0;
        }
        free(split);
    }
    CHECK(same);
    return whole;
}

static int gives_with(const options *o, const char *input, const char *want) {
    char *got = outcome_with(o, input);
    int ok = strcmp(got, want) == 0;
    if (!ok) fprintf(stderr, "for\n%s\ngot\n%s\nwanted\n%s\n", input, got, want);
    free(got);
    return ok;
}

static int gives(const char *input, const char *want) {
    options o = {NULL, 0, 1};
    return gives_with(&o, input, want);
}

static int fails_with(const char *input, const char *reason_part) {
    options o = {NULL, 0, 1};
    char *got = outcome_with(&o, input);
    int ok = strstr(got, "error: ") && strcasestr(got, reason_part);
    if (!ok) fprintf(stderr, "for\n%s\ngot\n%s\nwanted an error with '%s'\n", input, got, reason_part);
    free(got);
    return ok;
}

/* ---- the tests ---- */

static void test_content_length(void) {
    CHECK(gives("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A:  b  \r\n\r\nhello",
                "200 'OK' 1.1 ka=1 ch=0 eof=0 up=0 [content-length=5] [x-a=b] |hello|\n"));
    /* two responses in a row on one connection */
    CHECK(gives("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 Not Found\r\n"
                "Content-Length: 0\r\n\r\n",
                "200 'OK' 1.1 ka=1 ch=0 eof=0 up=0 [content-length=1] |a|\n"
                "404 'Not Found' 1.1 ka=1 ch=0 eof=0 up=0 [content-length=0] ||\n"));
}

static void test_chunked(void) {
    CHECK(gives("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
                "200 'OK' 1.1 ka=1 ch=1 eof=0 up=0 [transfer-encoding=chunked] |hello world|\n"));
}

static void test_until_eof(void) {
    CHECK(gives("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of this",
                "200 'OK' 1.1 ka=0 ch=0 eof=1 up=0 [content-type=text/plain] |all of this|\n"));
    /* without the close, no response yet */
    options o = {NULL, 0, 0};
    CHECK(gives_with(&o, "HTTP/1.0 200 OK\r\n\r\nabc", ""));
}

static void test_no_body(void) {
    CHECK(gives("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
                "204 'No Content' 1.1 ka=1 ch=0 eof=0 up=0 [content-length=0] ||\n"));
    CHECK(gives("HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
                "304 'Not Modified' 1.1 ka=1 ch=0 eof=0 up=0 [etag=\"x\"] ||\n"));
    /* the answer to a HEAD: Content-Length is the GET's, no body follows */
    options head = {NULL, 1, 0};
    CHECK(gives_with(&head, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
                     "200 'OK' 1.1 ka=1 ch=0 eof=0 up=0 [content-length=1000] ||\n"));
    /* a HEAD's answer without a length does not wait for the close */
    CHECK(gives_with(&head, "HTTP/1.1 200 OK\r\n\r\n", "200 'OK' 1.1 ka=1 ch=0 eof=0 up=0 ||\n"));
}

static void test_interim(void) {
    pl_http_response_parser *p = pl_http_response_parser_new(NULL);
    const char *in = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n"
                     "Content-Length: 2\r\n\r\nok";
    feed_copy(p, in, strlen(in));
    pl_http_response *r = pl_http_response_next(p);
    CHECK(r && r->status == 201 && r->body.len == 2);
    CHECK(pl_http_response_interim(p) == 1);
    CHECK(pl_http_response_next(p) == NULL);
    pl_http_response_free(r);
    pl_http_response_parser_free(p);
    CHECK(gives("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\n\r\nframes",
                "101 'Switching Protocols' 1.1 ka=0 ch=0 eof=0 up=1 [upgrade=websocket] "
                "[connection=Upgrade] ||\n"));
}

static void test_keep_alive_rules(void) {
    CHECK(gives("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                "200 'OK' 1.1 ka=0 ch=0 eof=0 up=0 [connection=close] [content-length=0] ||\n"));
    CHECK(gives("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
                "200 'OK' 1.0 ka=0 ch=0 eof=0 up=0 [content-length=0] ||\n"));
    CHECK(gives("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
                "200 'OK' 1.0 ka=1 ch=0 eof=0 up=0 [connection=keep-alive] [content-length=0] ||\n"));
    /* bytes after a response that ends the connection are ignored */
    CHECK(gives("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\njunk",
                "200 'OK' 1.1 ka=0 ch=0 eof=0 up=0 [connection=close] [content-length=0] ||\n"));
}

static void test_malformed(void) {
    CHECK(fails_with("HTTP/1.1 2x0 OK\r\n\r\n", "malformed response"));
    CHECK(fails_with("SMTP ready\r\n", "malformed response"));
    CHECK(fails_with("HTTP/2.0 200 OK\r\n\r\n", "HTTP/2.0 is not supported"));
    CHECK(fails_with("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                     "Content-Length"));
    CHECK(fails_with("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                     "Content-Length"));
    CHECK(fails_with("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                     "Transfer-Encoding 'gzip' is not supported"));
    CHECK(fails_with("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                     "malformed response"));
    CHECK(fails_with("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                     "closed in the middle of the response body"));
    CHECK(fails_with("HTTP/1.1 200 OK\r\nContent-", "closed in the middle of the response head"));
}

static void test_limits(void) {
    pl_http_limits lim = {.max_header = 64, .max_headers = 2, .max_body = 8};
    options o = {&lim, 0, 1};
    char *got = outcome_with(&o, "HTTP/1.1 200 OK\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n");
    CHECK(strstr(got, "error: status line and headers larger than 64 bytes") != NULL);
    free(got);
    got = outcome_with(&o, "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
    CHECK(strstr(got, "error: more than 2 header fields") != NULL);
    free(got);
    got = outcome_with(&o, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n");
    CHECK(strstr(got, "error: Content-Length 9 exceeds the body limit of 8 bytes") != NULL);
    free(got);
    got = outcome_with(&o, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n");
    CHECK(strstr(got, "error: body larger than 8 bytes") != NULL);
    free(got);
    got = outcome_with(&o, "HTTP/1.1 200 OK\r\n\r\n123456789");
    CHECK(strstr(got, "error: body larger than 8 bytes") != NULL);
    free(got);
    /* each head has its own budget: two heads of 40 bytes pass */
    got = outcome_with(&o, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                           "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    CHECK(strstr(got, "error") == NULL);
    free(got);
}

static void test_error_sticks(void) {
    pl_http_response_parser *p = pl_http_response_parser_new(NULL);
    CHECK(pl_http_response_feed(p, "bogus\r\n", 7) == -1);
    CHECK(pl_http_response_feed(p, "HTTP/1.1 200 OK\r\n\r\n", 19) == -1);
    CHECK(pl_http_response_eof(p) == -1);
    CHECK(pl_http_response_next(p) == NULL);
    pl_http_response_parser_free(p);
}

int main(void) {
    test_content_length();
    test_chunked();
    test_until_eof();
    test_no_body();
    test_interim();
    test_keep_alive_rules();
    test_malformed();
    test_limits();
    test_error_sticks();
    return CHECK_REPORT("test_http_response");
}
