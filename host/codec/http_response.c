/* http_response.c: HTTP/1.1 responses on Debian's libhttp-parser (see
 * http_response.h), the client's twin of http.c.
 *
 * http_parser (HTTP_RESPONSE mode) knows the grammar: the status line,
 * header fields, Content-Length, chunked coding, the bodies that end with
 * the connection and those that never come (1xx, 204, 304, and a HEAD's
 * answer when on_headers_complete says so), keep-alive rules. It stores
 * nothing: this file keeps the pieces in one response object at a time and
 * queues the complete ones; the head's text and fields are kept, bounded
 * and checked by http_head.c, as the request parser's are.
 *
 * Bounds, kept as http.c keeps them:
 *   - max_header: while a head is incomplete, http_parser is never given
 *     more bytes than are left of the budget; it pauses at the end of each
 *     response (interim ones too), so each head's budget starts at its own
 *     first byte.
 *   - max_headers: fields past it are counted, not stored, and refused when
 *     the headers end.
 *   - max_body: a Content-Length over it is refused when the headers end;
 *     chunk sizes as each chunk starts; a body delimited by the close as it
 *     grows.
 * Trailer fields are dropped as they are read (http_parser bounds them).
 *
 * Strictness: a client that frames a response differently from the proxy
 * in front of it can be fed a response it did not ask for, so the end of
 * the headers refuses what would be framed two ways: a blank in a field
 * name, Content-Length twice, Content-Length with Transfer-Encoding, a
 * transfer coding other than one final chunked (nothing else is decoded
 * here), and any HTTP version but 1.x. obs-fold is accepted (RFC 9112 §5.2
 * lets a user agent take it as a space, as http_parser does).
 *
 * As in http.c, callbacks only note what is wrong and the answer is given
 * where http_parser calls back at the same byte whatever the split (the end
 * of the headers, a chunk's header), so the reason never depends on how
 * the bytes came. */
#include "http_response.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <http_parser.h>

struct pl_http_response_parser {
    http_parser hp;
    pl_http_limits lim;
    pl_http_response *cur;          /* being parsed; NULL between responses */
    pl_http_response *first, *last; /* complete, oldest first */
    pl_http_head head;  /* cur's head while it is read */
    int expect_head;    /* the next final response answers a HEAD */
    size_t interim;     /* 1xx responses dropped */
    int closed;         /* a response ended the connection, or EOF came */
    int failed;
    char reason[160];
};

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
/* Records why the input is refused; returns -1, which a callback gives back
 * to http_parser to stop it. The first failure is the one kept. */
static int fail(pl_http_response_parser *p, const char *fmt, ...) {
    if (p->failed) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->reason, sizeof p->reason, fmt, ap);
    va_end(ap);
    p->failed = 1;
    return -1;
}

static pl_http_response_parser *parser_of(http_parser *hp) { return hp->data; }

static int out_of_memory(pl_http_response_parser *p) {
    return fail(p, "out of memory reading a response");
}

/* ---- responses ------------------------------------------------------- */

static pl_http_response *response_new(const pl_http_limits *lim) {
    pl_http_response *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    pl_buf_init(&r->body, lim->max_body ? lim->max_body : 1);
    return r;
}

void pl_http_response_free(pl_http_response *r) {
    if (!r) return;
    pl_buf_free(&r->head);
    pl_buf_free(&r->body);
    free(r->headers);
    free(r);
}

/* The head is complete and checked: the response takes its text and fields. */
static void take_head(pl_http_response *r, pl_http_head *h) {
    r->head = h->text;
    r->headers = h->fields;
    r->nheaders = h->nfields;
    r->headers_cap = h->cap;
    pl_http_head_complete(h);
}

/* ---- http_parser's callbacks ------------------------------------------ */

static int on_message_begin(http_parser *hp) {
    pl_http_response_parser *p = parser_of(hp);
    pl_http_response_free(p->cur);
    p->cur = response_new(&p->lim);
    if (!p->cur) return out_of_memory(p);
    pl_http_head_begin(&p->head);
    return 0;
}

static int on_status(http_parser *hp, const char *at, size_t len) {
    pl_http_response_parser *p = parser_of(hp);
    if (pl_http_head_start_line(&p->head, at, len) != 0) return out_of_memory(p);
    p->cur->reason_len += len;
    return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t len) {
    pl_http_response_parser *p = parser_of(hp);
    if (pl_http_head_name(&p->head, at, len) != 0) return out_of_memory(p);
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len) {
    pl_http_response_parser *p = parser_of(hp);
    if (pl_http_head_value(&p->head, at, len) != 0) return out_of_memory(p);
    return 0;
}

/* Every Transfer-Encoding coding, in order: exactly one, chunked. */
static int check_codings(pl_http_response_parser *p) {
    pl_http_codings c = pl_http_head_codings(&p->head);
    if (c.other)
        return fail(p, "Transfer-Encoding '%.*s' is not supported", c.other_len,
                    c.other);
    if (c.chunked != 1) return fail(p, "Transfer-Encoding must be chunked, once");
    return 0;
}

static int check_strict(pl_http_response_parser *p) {
    char why[sizeof p->reason];
    if (pl_http_head_check_names(&p->head, why, sizeof why) != 0 ||
        pl_http_head_check_lengths(&p->head, why, sizeof why) != 0)
        return fail(p, "%s", why);
    if (!pl_http_head_find(&p->head, "transfer-encoding")) return 0;
    return check_codings(p);
}

/* Whether http_parser framed the body as the fields we kept say: a head
 * it read otherwise (a lenient line end in the wrong place) would have
 * two framings, its and ours. */
static int check_agreement(pl_http_response_parser *p, const http_parser *hp) {
    int chunked = (hp->flags & F_CHUNKED) != 0;
    if (chunked != (pl_http_head_find(&p->head, "transfer-encoding") != NULL))
        return fail(p, "Transfer-Encoding could not be read unambiguously");
    if (!chunked && pl_http_head_find(&p->head, "content-length") &&
        hp->content_length == UINT64_MAX)
        return fail(p, "Content-Length could not be read unambiguously");
    return 0;
}

static int is_interim(int status) { return status >= 100 && status < 200 && status != 101; }

/* Returns 1 (no body) for the answer to a HEAD, which http_parser cannot
 * know of, and for the statuses that never have one. */
static int on_headers_complete(http_parser *hp) {
    pl_http_response_parser *p = parser_of(hp);
    pl_http_response *r = p->cur;
    r->status = (int)hp->status_code;
    r->version_major = hp->http_major;
    r->version_minor = hp->http_minor;
    if (hp->http_major != 1)
        return fail(p, "HTTP/%d.%d is not supported", hp->http_major, hp->http_minor);
    if (r->status < 100) return fail(p, "status %d is not a status code", r->status);
    if (p->head.extra)
        return fail(p, "more than %zu header fields", p->lim.max_headers);
    pl_http_head_trim(&p->head);
    if (check_strict(p) != 0 || check_agreement(p, hp) != 0) return -1;
    r->chunked = (hp->flags & F_CHUNKED) != 0;
    take_head(r, &p->head);
    int head = 0;
    if (!is_interim(r->status)) {
        head = p->expect_head;
        p->expect_head = 0;
    }
    /* http_parser reads a Content-Length's body even after a 204 or 304,
     * which RFC 9112 §6.3 says never have one */
    int bodiless = head || r->status < 200 || r->status == 204 || r->status == 304;
    if (!bodiless && !r->chunked && hp->content_length != UINT64_MAX &&
        hp->content_length > p->lim.max_body)
        return fail(p, "Content-Length %llu exceeds the body limit of %zu bytes",
                    (unsigned long long)hp->content_length, p->lim.max_body);
    /* a body without framing, where one may come, ends with the connection */
    r->until_eof = !bodiless && !r->chunked && hp->content_length == UINT64_MAX;
    return bodiless;
}

static int body_too_large(pl_http_response_parser *p) {
    return fail(p, "body larger than %zu bytes", p->lim.max_body);
}

static int on_chunk_header(http_parser *hp) {
    pl_http_response_parser *p = parser_of(hp);
    uint64_t size = hp->content_length; /* this chunk's */
    if (size > p->lim.max_body - p->cur->body.len) return body_too_large(p);
    if (size == 0) pl_http_head_trailers(&p->head);
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len) {
    pl_http_response_parser *p = parser_of(hp);
    pl_buf *body = &p->cur->body;
    if (len > p->lim.max_body - body->len) return body_too_large(p);
    if (pl_buf_append(body, at, len) != 0) return out_of_memory(p);
    return 0;
}

/* Queues a final response (an interim one is dropped) and pauses
 * http_parser, so that pl_http_response_feed learns where the next head
 * starts. */
static int on_message_complete(http_parser *hp) {
    pl_http_response_parser *p = parser_of(hp);
    pl_http_response *r = p->cur;
    p->cur = NULL;
    pl_http_head_next_message(&p->head);
    if (is_interim(r->status)) {
        pl_http_response_free(r);
        p->interim++;
    } else {
        r->upgrade = r->status == 101;
        r->keep_alive = http_should_keep_alive(hp) && !r->upgrade && !r->until_eof;
        if (p->last) p->last->next = r;
        else p->first = r;
        p->last = r;
        p->closed = !r->keep_alive;
    }
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_chunk_header = on_chunk_header,
};

/* ---- the parser -------------------------------------------------------- */

pl_http_response_parser *pl_http_response_parser_new(const pl_http_limits *lim) {
    pl_http_response_parser *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->lim = lim ? *lim : pl_http_default_limits;
    pl_http_head_init(&p->head, p->lim.max_header, p->lim.max_headers);
    http_parser_init(&p->hp, HTTP_RESPONSE);
    p->hp.data = p;
    return p;
}

void pl_http_response_parser_free(pl_http_response_parser *p) {
    if (!p) return;
    pl_http_response_free(p->cur);
    pl_http_head_clear(&p->head);
    while (p->first) pl_http_response_free(pl_http_response_next(p));
    free(p);
}

void pl_http_response_expect_head(pl_http_response_parser *p, int on) {
    p->expect_head = on != 0;
}

/* Turns an error of http_parser into the reason; an error from one of our
 * callbacks has already given its own. */
static int parse_failed(pl_http_response_parser *p, enum http_errno e) {
    pl_http_response_free(p->cur);
    p->cur = NULL;
    pl_http_head_clear(&p->head);
    if (p->failed) return -1;
    if (e == HPE_HEADER_OVERFLOW) return fail(p, "response head too large");
    return fail(p, "malformed response: %s", http_errno_description(e));
}

int pl_http_response_feed(pl_http_response_parser *p, const char *data,
                          size_t len) {
    if (p->failed) return -1;
    while (len > 0 && !p->closed) {
        size_t n = pl_http_head_room(&p->head, len);
        if (n == 0) {
            fail(p, "status line and headers larger than %zu bytes",
                 p->lim.max_header);
            return parse_failed(p, HPE_OK);
        }
        size_t used = http_parser_execute(&p->hp, &settings, data, n);
        enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
        if (e == HPE_PAUSED) {
            http_parser_pause(&p->hp, 0); /* a response ended at data[used] */
        } else if (e != HPE_OK) {
            return parse_failed(p, e);
        } else {
            pl_http_head_count(&p->head, used);
        }
        if (used == 0) break; /* cannot happen; never spin */
        data += used;
        len -= used;
    }
    return 0;
}

int pl_http_response_eof(pl_http_response_parser *p) {
    if (p->failed) return -1;
    if (p->closed) return 0;
    p->closed = 1;
    if (!p->cur) return 0;
    int in_body = p->head.done;
    http_parser_execute(&p->hp, &settings, NULL, 0); /* ends an until-EOF body */
    if (!p->cur && !p->failed) return 0;
    if (!p->failed)
        fail(p, "the connection closed in the middle of the response %s",
             in_body ? "body" : "head");
    return parse_failed(p, HPE_OK);
}

pl_http_response *pl_http_response_next(pl_http_response_parser *p) {
    pl_http_response *r = p->first;
    if (!r) return NULL;
    p->first = r->next;
    if (!p->first) p->last = NULL;
    r->next = NULL;
    return r;
}

const char *pl_http_response_error(const pl_http_response_parser *p) {
    return p->failed ? p->reason : NULL;
}

int pl_http_response_in_response(const pl_http_response_parser *p) {
    return p->cur != NULL && !p->failed;
}

size_t pl_http_response_interim(const pl_http_response_parser *p) {
    return p->interim;
}

int pl_http_response_closed(const pl_http_response_parser *p) { return p->closed; }
