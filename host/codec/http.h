/* http.h: a bounded, incremental, strict HTTP/1.1 request parser.
 *
 * A connection feeds the parser whatever bytes arrive, split anywhere; the
 * parser queues each request once it is whole (method, target, headers with
 * lower-cased names, body), in the order they came, so pipelined requests
 * come out one by one. Everything it holds is bounded: the request line and
 * headers together by max_header bytes, the number of header fields by
 * max_headers, a body by max_body. Bad input stops the parser for good with
 * the status a server should answer (400, 413, 414, 431, 501, 505) and a
 * reason; the answer is the same however the bytes were split. Beside the
 * grammar it keeps RFC 9112's rules against ambiguous framing: no blank in
 * a field name, no obs-fold, Host exactly once in HTTP/1.1 (at most once
 * in 1.0), one Content-Length and never with Transfer-Encoding, chunked as
 * the final (and only) transfer coding.
 *
 * The HTTP grammar is Debian's libhttp-parser (http_parser.h); this layer adds
 * the limits, the strict rules, the buffering and the request objects
 * (host/codec/http.c, on the head storage and checks it shares with the
 * response parser: host/codec/http_head.c). The Lua face is
 * host/bind/lhttp.c (core.http_parser); lua/pulsar/http.lua turns requests
 * into responses. */
#ifndef PULSAR_HTTP_H
#define PULSAR_HTTP_H

#include <stddef.h>

#include <lua.h>

#include "buf.h"
#include "http_head.h" /* pl_http_header */

typedef struct pl_http_limits {
    size_t max_header;  /* request line plus headers, in bytes */
    size_t max_headers; /* header fields in one request */
    size_t max_body;    /* body bytes, after chunked decoding */
} pl_http_limits;

#define PL_HTTP_MAX_HEADER_DEFAULT ((size_t)64 << 10)  /* 64 KiB */
#define PL_HTTP_MAX_HEADERS_DEFAULT 100
#define PL_HTTP_MAX_BODY_DEFAULT ((size_t)16 << 20)    /* 16 MiB */

extern const pl_http_limits pl_http_default_limits;

/* A complete request. `head` holds the target and then every header name and
 * value; read them with pl_http_text. */
typedef struct pl_http_request {
    struct pl_http_request *next; /* the parser's queue */
    const char *method;           /* "GET", "POST", ...: a static string */
    int version_major, version_minor;
    int keep_alive;      /* the connection may carry another request after it */
    int expect_continue; /* it said Expect: 100-continue (HTTP/1.1 only) */
    int upgrade;         /* it asked for another protocol (Upgrade, CONNECT) */
    int chunked;         /* its body came with Transfer-Encoding: chunked */
    pl_buf head;
    size_t target_len;   /* head.data[0..target_len) is the request target */
    size_t path_len;     /* the target before any '?' or '#' */
    size_t query, query_len; /* after the '?', before any '#'; 0, 0 if none */
    int has_query;
    pl_http_header *headers;
    size_t nheaders, headers_cap;
    pl_buf body;
} pl_http_request;

typedef struct pl_http_parser pl_http_parser;

/* A new parser with these limits (NULL: the defaults); NULL without memory. */
pl_http_parser *pl_http_parser_new(const pl_http_limits *lim);
void pl_http_parser_free(pl_http_parser *p);

/* Parses len more bytes. 0, or -1 once the input is bad: pl_http_error then
 * says what to answer, and every later call returns -1 at once. Requests
 * completed before the bad bytes are still queued. After a request that ends
 * the connection (keep_alive 0), later bytes are ignored. */
int pl_http_feed(pl_http_parser *p, const char *data, size_t len);

/* The oldest queued request, taken off the queue (the caller frees it with
 * pl_http_request_free), or NULL. */
pl_http_request *pl_http_next(pl_http_parser *p);
void pl_http_request_free(pl_http_request *r);

/* The status to answer (400, 413, 414, 431, 500, 501, 505) and *reason,
 * or 0. */
int pl_http_error(const pl_http_parser *p, const char **reason);

/* 1 once for each request whose headers, with Expect: 100-continue, are
 * complete while its body has not started: the moment to send
 * "100 Continue". Later calls give 0 until the next such request. */
int pl_http_take_continue(pl_http_parser *p);

/* 1 while a request has started but is not complete (a read timeout runs). */
int pl_http_in_request(const pl_http_parser *p);

/* 1 after a request that ends the connection (no more requests follow). */
int pl_http_closed(const pl_http_parser *p);

/* A pointer to the bytes at offset `at` of r's head buffer. */
static inline const char *pl_http_text(const pl_http_request *r, size_t at) {
    return r->head.data + at;
}

void pl_lhttp_register(lua_State *L);

#endif
