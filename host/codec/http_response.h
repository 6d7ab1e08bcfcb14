/* http_response.h: a bounded, incremental, strict HTTP/1.1 response parser,
 * the client's side of http.h.
 *
 * A client connection feeds the parser whatever bytes arrive, split
 * anywhere; the parser queues each final response once it is whole (status,
 * reason, headers with lower-cased names, body). Interim responses (1xx but
 * 101) are read and dropped: a client that sent Expect: 100-continue learns
 * of them from pl_http_response_interim. A body is framed as RFC 9112 §6.3
 * says: none for a response to HEAD (the caller says which response is
 * one), for 1xx, 204 and 304; else chunked, or Content-Length, or every byte
 * until the server closes (pl_http_response_eof ends such a body).
 *
 * Everything it holds is bounded as the request parser's is: the status
 * line and headers together by max_header bytes, the header fields by
 * max_headers, a body by max_body. Bad input stops the parser for good with
 * a reason; a response that would need more than a limit is refused as soon
 * as that is known (a Content-Length over max_body at the end of the
 * headers), whatever the split.
 *
 * The grammar is Debian's libhttp-parser (HTTP_RESPONSE mode); this layer
 * adds the limits, the framing rules against ambiguous responses (one
 * Content-Length, never with Transfer-Encoding, chunked the only transfer
 * coding), the buffering and the response objects. The Lua face is
 * host/bind/lhttp.c (core.http_response_parser); lua/pulsar/httpclient.lua
 * is the client. */
#ifndef PULSAR_HTTP_RESPONSE_H
#define PULSAR_HTTP_RESPONSE_H

#include <stddef.h>

#include "buf.h"
#include "http.h"

/* The limits are the request parser's (max_header, max_headers, max_body). */

/* A complete response. `head` holds the reason phrase and then every header
 * name and value; read them with pl_http_response_text. */
typedef struct pl_http_response {
    struct pl_http_response *next; /* the parser's queue */
    int status;                    /* 100 to 999 */
    int version_major, version_minor;
    int keep_alive; /* the connection may carry another exchange after it */
    int chunked;    /* its body came with Transfer-Encoding: chunked */
    int until_eof;  /* its body was delimited by the end of the connection */
    int upgrade;    /* a 101: the connection now speaks another protocol */
    pl_buf head;
    size_t reason_len; /* head.data[0..reason_len) is the reason phrase */
    pl_http_header *headers;
    size_t nheaders, headers_cap;
    pl_buf body;
} pl_http_response;

typedef struct pl_http_response_parser pl_http_response_parser;

/* A new parser with these limits (NULL: the defaults); NULL without memory. */
pl_http_response_parser *pl_http_response_parser_new(const pl_http_limits *lim);
void pl_http_response_parser_free(pl_http_response_parser *p);

/* The next final response answers a HEAD (on != 0): it has no body, whatever
 * its Content-Length says. Said before its bytes come; it holds for one
 * final response. */
void pl_http_response_expect_head(pl_http_response_parser *p, int on);

/* Parses len more bytes. 0, or -1 once the input is bad (reason in
 * pl_http_response_error; every later call returns -1 at once). Responses
 * completed before the bad bytes stay queued. After a response that ends
 * the connection (keep_alive 0, or an upgrade), later bytes are ignored. */
int pl_http_response_feed(pl_http_response_parser *p, const char *data,
                          size_t len);

/* The server closed its side. Ends a body delimited by the close (the
 * response is queued); 0, or -1 when a response had begun and is cut short
 * (then pl_http_response_error says so). Between responses it is 0. */
int pl_http_response_eof(pl_http_response_parser *p);

/* The oldest queued response, taken off the queue (the caller frees it with
 * pl_http_response_free), or NULL. */
pl_http_response *pl_http_response_next(pl_http_response_parser *p);
void pl_http_response_free(pl_http_response *r);

/* Why the input was refused, or NULL while all is well. */
const char *pl_http_response_error(const pl_http_response_parser *p);

/* 1 while a response has started (a byte of it came) and is not complete. */
int pl_http_response_in_response(const pl_http_response_parser *p);

/* Interim (1xx) responses read and dropped so far. */
size_t pl_http_response_interim(const pl_http_response_parser *p);

/* 1 after a response that ends the connection. */
int pl_http_response_closed(const pl_http_response_parser *p);

/* A pointer to the bytes at offset `at` of r's head buffer (which may be
 * empty: no reason phrase, no fields). */
static inline const char *pl_http_response_text(const pl_http_response *r,
                                                size_t at) {
    return r->head.data ? r->head.data + at : "";
}

#endif
