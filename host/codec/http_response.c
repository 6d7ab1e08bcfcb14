/* http_response.c: HTTP/1.1 responses on Debian's libhttp-parser (see
 * http_response.h), the client's twin of http.c.
 *
 * http_parser (HTTP_RESPONSE mode) knows the grammar: the status line,
 * header fields, Content-Length, chunked coding, the bodies that end with
 * the connection and those that never come (1xx, 204, 304, and a HEAD's
 * answer when on_headers_complete says so), keep-alive rules. It stores
 * nothing: this file keeps the pieces in one response object at a time and
 * queues the complete ones.
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
#include <string.h>
#include <strings.h>

#include <http_parser.h>

enum field_state { IN_NOTHING, IN_NAME, IN_VALUE };

struct pl_http_response_parser {
    http_parser hp;
    pl_http_limits lim;
    pl_http_response *cur;          /* being parsed; NULL between responses */
    pl_http_response *first, *last; /* complete, oldest first */
    size_t head_seen;   /* bytes of the current head given to http_parser */
    int headers_done;   /* cur's head is complete: its body is coming */
    enum field_state field;
    int in_trailers;    /* after the last chunk: trailer fields */
    int skipping;       /* the current field is past max_headers */
    size_t extra_fields;
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
    pl_buf_init(&r->head, lim->max_header ? lim->max_header : 1);
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

static pl_http_header *last_header(pl_http_response *r) {
    return &r->headers[r->nheaders - 1];
}

/* Adds an empty header entry, its name starting at the end of the head; a
 * field past max_headers is only counted. */
static int add_header(pl_http_response_parser *p, pl_http_response *r) {
    p->skipping = r->nheaders == p->lim.max_headers;
    if (p->skipping) {
        p->extra_fields++;
        return 0;
    }
    if (r->nheaders == r->headers_cap) {
        size_t cap = r->headers_cap ? r->headers_cap * 2 : 16;
        if (cap > p->lim.max_headers) cap = p->lim.max_headers;
        pl_http_header *h = realloc(r->headers, cap * sizeof *h);
        if (!h) return out_of_memory(p);
        r->headers = h;
        r->headers_cap = cap;
    }
    pl_http_header *h = &r->headers[r->nheaders++];
    h->name = r->head.len;
    h->name_len = h->value = h->value_len = 0;
    return 0;
}

static int append_head(pl_http_response_parser *p, pl_http_response *r,
                       const char *at, size_t len) {
    /* cannot pass the limit: the head budget is the same size */
    if (pl_buf_append(&r->head, at, len) != 0) return out_of_memory(p);
    return 0;
}

static int is_blank(char c) { return c == ' ' || c == '\t'; }

static void trim_values(pl_http_response *r) {
    for (size_t i = 0; i < r->nheaders; i++) {
        pl_http_header *h = &r->headers[i];
        while (h->value_len && is_blank(r->head.data[h->value + h->value_len - 1]))
            h->value_len--;
    }
}

static int name_is(const pl_http_response *r, const pl_http_header *h,
                   const char *name) {
    size_t n = strlen(name);
    return h->name_len == n &&
           memcmp(pl_http_response_text(r, h->name), name, n) == 0;
}

static size_t count_headers(const pl_http_response *r, const char *name) {
    size_t count = 0;
    for (size_t i = 0; i < r->nheaders; i++) count += name_is(r, &r->headers[i], name);
    return count;
}

/* ---- http_parser's callbacks ------------------------------------------ */

static int on_message_begin(http_parser *hp) {
    pl_http_response_parser *p = parser_of(hp);
    pl_http_response_free(p->cur);
    p->cur = response_new(&p->lim);
    if (!p->cur) return out_of_memory(p);
    p->field = IN_NOTHING;
    p->in_trailers = p->skipping = 0;
    p->extra_fields = 0;
    return 0;
}

static int on_status(http_parser *hp, const char *at, size_t len) {
    pl_http_response_parser *p = parser_of(hp);
    if (append_head(p, p->cur, at, len) != 0) return -1;
    p->cur->reason_len += len;
    return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t len) {
    pl_http_response_parser *p = parser_of(hp);
    int new_field = p->field != IN_NAME;
    p->field = IN_NAME;
    if (p->in_trailers) return 0;
    if (new_field && add_header(p, p->cur) != 0) return -1;
    if (p->skipping) return 0;
    pl_http_response *r = p->cur;
    size_t start = r->head.len;
    if (append_head(p, r, at, len) != 0) return -1;
    for (char *c = r->head.data + start; c < r->head.data + r->head.len; c++)
        if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
    last_header(r)->name_len += len;
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len) {
    pl_http_response_parser *p = parser_of(hp);
    int new_value = p->field != IN_VALUE;
    p->field = IN_VALUE;
    if (p->in_trailers || p->skipping) return 0;
    pl_http_header *h = last_header(p->cur);
    if (new_value) h->value = p->cur->head.len;
    if (append_head(p, p->cur, at, len) != 0) return -1;
    h->value_len += len;
    return 0;
}

/* Every Transfer-Encoding coding, in order: exactly one, chunked. */
static int check_codings(pl_http_response_parser *p, const pl_http_response *r) {
    size_t chunked = 0, others = 0;
    const char *other = NULL;
    int other_len = 0;
    for (size_t i = 0; i < r->nheaders; i++) {
        const pl_http_header *h = &r->headers[i];
        if (!name_is(r, h, "transfer-encoding")) continue;
        const char *v = pl_http_response_text(r, h->value), *end = v + h->value_len;
        while (v < end) {
            const char *comma = memchr(v, ',', (size_t)(end - v));
            const char *a = v, *b = comma ? comma : end;
            v = comma ? comma + 1 : end;
            while (a < b && is_blank(*a)) a++;
            while (b > a && is_blank(b[-1])) b--;
            if (a == b) continue; /* an empty list element */
            if (b - a == 7 && strncasecmp(a, "chunked", 7) == 0) {
                chunked++;
            } else if (others++ == 0) {
                other = a;
                other_len = (int)(b - a > 40 ? 40 : b - a);
            }
        }
    }
    if (other)
        return fail(p, "Transfer-Encoding '%.*s' is not supported", other_len, other);
    if (chunked != 1) return fail(p, "Transfer-Encoding must be chunked, once");
    return 0;
}

static int check_strict(pl_http_response_parser *p, const pl_http_response *r) {
    for (size_t i = 0; i < r->nheaders; i++) {
        const pl_http_header *h = &r->headers[i];
        const char *name = pl_http_response_text(r, h->name);
        for (size_t k = 0; k < h->name_len; k++)
            if (is_blank(name[k]))
                return fail(p, "blank in the header name '%.*s'",
                            (int)(h->name_len > 60 ? 60 : h->name_len), name);
    }
    size_t lengths = count_headers(r, "content-length");
    size_t encodings = count_headers(r, "transfer-encoding");
    if (lengths > 1) return fail(p, "more than one Content-Length header");
    if (encodings == 0) return 0;
    if (lengths) return fail(p, "both Content-Length and Transfer-Encoding");
    return check_codings(p, r);
}

/* Whether http_parser framed the body as the fields we kept say: a head
 * it read otherwise (a lenient line end in the wrong place) would have
 * two framings, its and ours. */
static int check_agreement(pl_http_response_parser *p, const http_parser *hp,
                           const pl_http_response *r) {
    int chunked = (hp->flags & F_CHUNKED) != 0;
    if (chunked != (count_headers(r, "transfer-encoding") > 0))
        return fail(p, "Transfer-Encoding could not be read unambiguously");
    if (!chunked && count_headers(r, "content-length") &&
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
    if (p->extra_fields)
        return fail(p, "more than %zu header fields", p->lim.max_headers);
    trim_values(r);
    if (check_strict(p, r) != 0 || check_agreement(p, hp, r) != 0) return -1;
    r->chunked = (hp->flags & F_CHUNKED) != 0;
    p->headers_done = 1;
    p->field = IN_NOTHING;
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
    if (size == 0) p->in_trailers = 1;
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
    p->headers_done = 0;
    p->head_seen = 0;
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
    http_parser_init(&p->hp, HTTP_RESPONSE);
    p->hp.data = p;
    return p;
}

void pl_http_response_parser_free(pl_http_response_parser *p) {
    if (!p) return;
    pl_http_response_free(p->cur);
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
    if (p->failed) return -1;
    if (e == HPE_HEADER_OVERFLOW) return fail(p, "response head too large");
    return fail(p, "malformed response: %s", http_errno_description(e));
}

int pl_http_response_feed(pl_http_response_parser *p, const char *data,
                          size_t len) {
    if (p->failed) return -1;
    while (len > 0 && !p->closed) {
        size_t n = len;
        int in_head = !p->headers_done;
        if (in_head) {
            size_t budget = p->lim.max_header - p->head_seen;
            if (budget == 0) {
                fail(p, "status line and headers larger than %zu bytes",
                     p->lim.max_header);
                return parse_failed(p, HPE_OK);
            }
            if (n > budget) n = budget;
        }
        size_t used = http_parser_execute(&p->hp, &settings, data, n);
        enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
        if (e == HPE_PAUSED) {
            http_parser_pause(&p->hp, 0); /* a response ended at data[used] */
        } else if (e != HPE_OK) {
            return parse_failed(p, e);
        } else if (in_head && !p->headers_done) {
            p->head_seen += used;
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
    int in_body = p->headers_done;
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
