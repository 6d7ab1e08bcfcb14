/* http.c: HTTP/1.1 requests on Debian's libhttp-parser (see http.h).
 *
 * http_parser knows the grammar (request line, header fields, Content-Length,
 * chunked coding, keep-alive rules, request smuggling checks) and calls back
 * with pieces of the bytes it is given; it stores nothing. This file keeps
 * those pieces in one request object at a time and queues the complete ones.
 *
 * Bounds, and how each is kept:
 *   - max_header: while a request's head is incomplete, http_parser is never
 *     given more bytes than are left of the budget, so a request line of a
 *     megabyte or headers without end stop at the budget, whatever the reads.
 *     The parser pauses at the end of each request, so the budget of the next
 *     one starts exactly at its first byte. (http_parser has its own 80 KiB
 *     head limit, answered the same way.)
 *   - max_headers: fields past it are counted, not stored, and refused when
 *     the headers end.
 *   - max_body: a Content-Length over it is refused as soon as the headers
 *     end, before any body arrives; chunk sizes are checked as each chunk
 *     starts. Bodies grow by doubling (buf.c), so appends stay linear.
 * Trailer fields after a chunked body are dropped as they are read: nothing
 * in a request needs them, and http_parser bounds them (80 KiB).
 *
 * Strictness. http_parser is lenient where RFC 9112 is not, and where
 * leniency lets two parsers frame one message differently (request
 * smuggling), so the end of the headers also refuses, 400 unless said:
 *   - a blank in a field name ("Transfer-Encoding : chunked", which
 *     http_parser uses for framing all the same; §5.1);
 *   - obs-fold, a head line that begins with a space or a tab (§5.2);
 *     http_parser hides it, so the head's raw bytes are scanned for it;
 *   - no Host in HTTP/1.1, or more than one Host (§3.2);
 *   - Content-Length twice, or with Transfer-Encoding (§6.3);
 *   - Transfer-Encoding in HTTP/1.0, or whose final coding is not chunked,
 *     or with chunked twice (§6.1, §6.3); with another coding before a
 *     final chunked it is 501, since no other coding is decoded here.
 *
 * Every answer must be the same however the bytes are split, and
 * http_parser calls back with the bytes of a field when it sees its end or
 * when its input runs out, whichever is first: so a check in a callback that
 * fails at once could answer differently from an error http_parser finds a
 * few bytes later. Our callbacks therefore only note what is wrong (too many
 * fields), and the answer is given where http_parser calls back at the same
 * byte whatever the split: the end of the headers, a chunk's header. */
#include "http.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>

const pl_http_limits pl_http_default_limits = {
    .max_header = PL_HTTP_MAX_HEADER_DEFAULT,
    .max_headers = PL_HTTP_MAX_HEADERS_DEFAULT,
    .max_body = PL_HTTP_MAX_BODY_DEFAULT,
};

/* Where the last header callback left off: a field's name can arrive in
 * several pieces, so a new field begins only after a value (or first). */
enum field_state { IN_NOTHING, IN_NAME, IN_VALUE };

/* Where the scan of a head's raw bytes is (see scan_head). */
enum line_state {
    LINE_BEFORE, LINE_IN, LINE_CR, LINE_START, LINE_START_CR, LINE_DONE
};

struct pl_http_parser {
    http_parser hp;
    pl_http_limits lim;
    pl_http_request *cur;               /* being parsed; NULL between requests */
    pl_http_request *first, *last;      /* complete, oldest first */
    size_t head_seen;     /* bytes of the current head given to http_parser */
    int headers_done;     /* cur's head is complete: its body is coming */
    enum field_state field;
    int in_trailers;      /* after the last chunk: trailer fields */
    int skipping;         /* the current field is past max_headers */
    size_t extra_fields;  /* fields past max_headers */
    int continue_pending; /* see pl_http_take_continue */
    enum line_state line; /* scan_head's */
    int folded;           /* a line of the head began with a blank */
    int closed;           /* a request ended the connection */
    int status;           /* the answer to bad input; 0 while all is well */
    char reason[160];
};

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
/* Records the status to answer and why; returns -1, which a callback gives
 * back to http_parser to stop it. The first failure is the one kept. */
static int fail(pl_http_parser *p, int status, const char *fmt, ...) {
    if (p->status) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->reason, sizeof p->reason, fmt, ap);
    va_end(ap);
    p->status = status;
    return -1;
}

static pl_http_parser *parser_of(http_parser *hp) { return hp->data; }

static int out_of_memory(pl_http_parser *p) {
    return fail(p, 500, "out of memory reading a request");
}

/* ---- requests -------------------------------------------------------- */

static pl_http_request *request_new(const pl_http_limits *lim) {
    pl_http_request *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    /* the head never holds more than the bytes of the head */
    pl_buf_init(&r->head, lim->max_header ? lim->max_header : 1);
    pl_buf_init(&r->body, lim->max_body ? lim->max_body : 1);
    return r;
}

void pl_http_request_free(pl_http_request *r) {
    if (!r) return;
    pl_buf_free(&r->head);
    pl_buf_free(&r->body);
    free(r->headers);
    free(r);
}

static pl_http_header *last_header(pl_http_request *r) {
    return &r->headers[r->nheaders - 1];
}

/* Adds an empty header entry, its name starting at the end of the head; a
 * field past max_headers is only counted (p->skipping). */
static int add_header(pl_http_parser *p, pl_http_request *r) {
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

static int append_head(pl_http_parser *p, pl_http_request *r, const char *at,
                       size_t len) {
    /* cannot pass the limit: the head budget is the same size */
    if (pl_buf_append(&r->head, at, len) != 0) return out_of_memory(p);
    return 0;
}

static int append_lowered(pl_http_parser *p, pl_http_request *r,
                          const char *at, size_t len) {
    size_t start = r->head.len;
    if (append_head(p, r, at, len) != 0) return -1;
    for (char *c = r->head.data + start; c < r->head.data + r->head.len; c++)
        if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
    return 0;
}

/* Splits the target into path, query and fragment (which a client should not
 * send, and which is dropped). */
static void split_target(pl_http_request *r) {
    const char *t = r->head.data;
    size_t n = r->target_len, i = 0;
    while (i < n && t[i] != '?' && t[i] != '#') i++;
    r->path_len = i;
    if (i < n && t[i] == '?') {
        size_t q = ++i;
        while (i < n && t[i] != '#') i++;
        r->has_query = 1;
        r->query = q;
        r->query_len = i - q;
    }
}

static int is_blank(char c) { return c == ' ' || c == '\t'; }

/* http_parser drops the blanks before a value, not always those after it. */
static void trim_values(pl_http_request *r) {
    for (size_t i = 0; i < r->nheaders; i++) {
        pl_http_header *h = &r->headers[i];
        while (h->value_len && is_blank(r->head.data[h->value + h->value_len - 1]))
            h->value_len--;
    }
}

static int value_is(const pl_http_request *r, const pl_http_header *h,
                    const char *want) {
    size_t n = strlen(want);
    return h->value_len == n &&
           strncasecmp(pl_http_text(r, h->value), want, n) == 0;
}

static const pl_http_header *find_header(const pl_http_request *r,
                                         const char *name) {
    size_t n = strlen(name);
    for (size_t i = 0; i < r->nheaders; i++) {
        const pl_http_header *h = &r->headers[i];
        if (h->name_len == n && memcmp(pl_http_text(r, h->name), name, n) == 0)
            return h;
    }
    return NULL;
}

/* ---- http_parser's callbacks ------------------------------------------ */

static int on_message_begin(http_parser *hp) {
    pl_http_parser *p = parser_of(hp);
    pl_http_request_free(p->cur);
    p->cur = request_new(&p->lim);
    if (!p->cur) return out_of_memory(p);
    p->field = IN_NOTHING;
    p->in_trailers = p->skipping = 0;
    p->extra_fields = 0;
    return 0;
}

static int on_url(http_parser *hp, const char *at, size_t len) {
    pl_http_parser *p = parser_of(hp);
    if (append_head(p, p->cur, at, len) != 0) return -1;
    p->cur->target_len += len;
    return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t len) {
    pl_http_parser *p = parser_of(hp);
    int new_field = p->field != IN_NAME;
    p->field = IN_NAME;
    if (p->in_trailers) return 0;
    if (new_field && add_header(p, p->cur) != 0) return -1;
    if (p->skipping) return 0;
    if (append_lowered(p, p->cur, at, len) != 0) return -1;
    last_header(p->cur)->name_len += len;
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len) {
    pl_http_parser *p = parser_of(hp);
    int new_value = p->field != IN_VALUE;
    p->field = IN_VALUE;
    if (p->in_trailers || p->skipping) return 0;
    pl_http_header *h = last_header(p->cur);
    if (new_value) h->value = p->cur->head.len;
    if (append_head(p, p->cur, at, len) != 0) return -1;
    h->value_len += len;
    return 0;
}

/* Whether a body follows these headers. */
static int body_expected(const http_parser *hp) {
    return (hp->flags & F_CHUNKED) ||
           (hp->content_length > 0 && hp->content_length != UINT64_MAX);
}

/* Follows the head's lines in the raw bytes about to be parsed, only to
 * see obs-fold (a line after the first that starts with SP or HTAB), which
 * http_parser joins to the line before without a trace. It reads lines as
 * http_parser does, so that it sees the same bytes however they are split
 * and never reads a body: a line ends at LF, or at CR and whatever byte
 * follows (http_parser, lenient, takes that byte for the LF), and the head
 * ends at an empty line. */
static void scan_head(pl_http_parser *p, const char *data, size_t n) {
    for (size_t i = 0; i < n && p->line != LINE_DONE; i++) {
        char c = data[i];
        switch (p->line) {
        case LINE_BEFORE: /* blank lines may come before a request */
            if (c != '\r' && c != '\n') p->line = LINE_IN;
            break;
        case LINE_IN:
            if (c == '\n') p->line = LINE_START;
            else if (c == '\r') p->line = LINE_CR;
            break;
        case LINE_CR:
            p->line = LINE_START;
            break;
        case LINE_START:
            if (c == '\r') p->line = LINE_START_CR;
            else if (c == '\n') p->line = LINE_DONE;
            else {
                if (is_blank(c)) p->folded = 1;
                p->line = LINE_IN;
            }
            break;
        case LINE_START_CR:
            p->line = LINE_DONE;
            break;
        case LINE_DONE:
            break;
        }
    }
}

static size_t count_headers(const pl_http_request *r, const char *name) {
    size_t n = strlen(name), count = 0;
    for (size_t i = 0; i < r->nheaders; i++) {
        const pl_http_header *h = &r->headers[i];
        count += h->name_len == n && memcmp(pl_http_text(r, h->name), name, n) == 0;
    }
    return count;
}

/* The transfer codings of every Transfer-Encoding field, in order (at
 * least one field is there): 0, or -1 once refused. */
static int check_codings(pl_http_parser *p, const pl_http_request *r) {
    size_t chunked = 0;
    int last_chunked = 0;
    const char *other = NULL; /* the first coding that is not chunked */
    int other_len = 0;
    for (size_t i = 0; i < r->nheaders; i++) {
        const pl_http_header *h = &r->headers[i];
        if (h->name_len != 17 ||
            memcmp(pl_http_text(r, h->name), "transfer-encoding", 17) != 0)
            continue;
        const char *v = pl_http_text(r, h->value), *end = v + h->value_len;
        while (v < end) {
            const char *comma = memchr(v, ',', (size_t)(end - v));
            const char *a = v, *b = comma ? comma : end;
            v = comma ? comma + 1 : end;
            while (a < b && is_blank(*a)) a++;
            while (b > a && is_blank(b[-1])) b--;
            if (a == b) continue; /* an empty list element (RFC 9110 §5.6.1) */
            last_chunked = b - a == 7 && strncasecmp(a, "chunked", 7) == 0;
            if (last_chunked) {
                chunked++;
            } else if (!other) {
                other = a;
                other_len = (int)(b - a > 40 ? 40 : b - a);
            }
        }
    }
    if (!last_chunked)
        return fail(p, 400, "Transfer-Encoding must end with chunked");
    if (chunked > 1) return fail(p, 400, "Transfer-Encoding has chunked twice");
    if (other)
        return fail(p, 501, "Transfer-Encoding '%.*s' is not implemented",
                    other_len, other);
    return 0;
}

/* The rules of RFC 9112 http_parser does not keep (see the head comment). */
static int check_strict(pl_http_parser *p, const http_parser *hp,
                        const pl_http_request *r) {
    for (size_t i = 0; i < r->nheaders; i++) {
        const pl_http_header *h = &r->headers[i];
        const char *name = pl_http_text(r, h->name);
        for (size_t k = 0; k < h->name_len; k++)
            if (is_blank(name[k]))
                return fail(p, 400, "blank in the header name '%.*s'",
                            (int)(h->name_len > 60 ? 60 : h->name_len), name);
    }
    if (p->folded)
        return fail(p, 400, "a header line begins with a blank (obs-fold)");
    size_t hosts = count_headers(r, "host");
    if (hosts > 1) return fail(p, 400, "more than one Host header");
    if (hosts == 0 && hp->http_minor >= 1)
        return fail(p, 400, "HTTP/1.1 request without a Host header");
    size_t lengths = count_headers(r, "content-length");
    size_t encodings = count_headers(r, "transfer-encoding");
    if (lengths > 1) return fail(p, 400, "more than one Content-Length header");
    if (encodings == 0) return 0;
    if (lengths)
        return fail(p, 400, "both Content-Length and Transfer-Encoding");
    if (hp->http_minor == 0)
        return fail(p, 400, "Transfer-Encoding in an HTTP/1.0 request");
    return check_codings(p, r);
}

static int on_headers_complete(http_parser *hp) {
    pl_http_parser *p = parser_of(hp);
    pl_http_request *r = p->cur;
    r->method = http_method_str((enum http_method)hp->method);
    r->version_major = hp->http_major;
    r->version_minor = hp->http_minor;
    if (hp->http_major != 1)
        return fail(p, 505, "HTTP/%d.%d is not supported", hp->http_major,
                    hp->http_minor);
    if (p->extra_fields)
        return fail(p, 431, "more than %zu header fields", p->lim.max_headers);
    trim_values(r);
    if (check_strict(p, hp, r) != 0) return -1;
    r->chunked = (hp->flags & F_CHUNKED) != 0;
    if (!r->chunked && hp->content_length != UINT64_MAX &&
        hp->content_length > p->lim.max_body)
        return fail(p, 413, "Content-Length %llu exceeds the body limit of %zu "
                    "bytes", (unsigned long long)hp->content_length,
                    p->lim.max_body);
    split_target(r);
    /* RFC 9110 §10.1.1: a server ignores 100-continue from HTTP/1.0 */
    const pl_http_header *expect = find_header(r, "expect");
    r->expect_continue = hp->http_minor >= 1 && expect &&
                         value_is(r, expect, "100-continue");
    p->continue_pending = r->expect_continue && body_expected(hp);
    p->headers_done = 1;
    p->field = IN_NOTHING;
    return 0;
}

static int body_too_large(pl_http_parser *p) {
    return fail(p, 413, "body larger than %zu bytes", p->lim.max_body);
}

static int on_chunk_header(http_parser *hp) {
    pl_http_parser *p = parser_of(hp);
    uint64_t size = hp->content_length; /* this chunk's */
    if (size > p->lim.max_body - p->cur->body.len) return body_too_large(p);
    if (size == 0) p->in_trailers = 1;
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len) {
    pl_http_parser *p = parser_of(hp);
    pl_buf *body = &p->cur->body;
    p->continue_pending = 0; /* the client did not wait */
    if (len > p->lim.max_body - body->len) return body_too_large(p);
    if (pl_buf_append(body, at, len) != 0) return out_of_memory(p);
    return 0;
}

/* Queues the request and pauses http_parser, so that pl_http_feed learns
 * where the next request starts. */
static int on_message_complete(http_parser *hp) {
    pl_http_parser *p = parser_of(hp);
    pl_http_request *r = p->cur;
    r->upgrade = hp->upgrade;
    r->keep_alive = http_should_keep_alive(hp) && !r->upgrade;
    if (p->last) p->last->next = r;
    else p->first = r;
    p->last = r;
    p->cur = NULL;
    p->headers_done = 0;
    p->head_seen = 0;
    p->continue_pending = 0;
    p->line = LINE_BEFORE;
    p->folded = 0;
    p->closed = !r->keep_alive;
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_chunk_header = on_chunk_header,
};

/* ---- the parser -------------------------------------------------------- */

pl_http_parser *pl_http_parser_new(const pl_http_limits *lim) {
    pl_http_parser *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->lim = lim ? *lim : pl_http_default_limits;
    http_parser_init(&p->hp, HTTP_REQUEST);
    p->hp.data = p;
    return p;
}

void pl_http_parser_free(pl_http_parser *p) {
    if (!p) return;
    pl_http_request_free(p->cur);
    while (p->first) pl_http_request_free(pl_http_next(p));
    free(p);
}

/* The head budget ran out before the head ended. */
static int head_too_large(pl_http_parser *p) {
    if (p->cur && p->cur->nheaders == 0 && p->field == IN_NOTHING)
        return fail(p, 414, "request line longer than %zu bytes", p->lim.max_header);
    return fail(p, 431, "request line and headers larger than %zu bytes",
                p->lim.max_header);
}

/* Turns an error of http_parser into the answer; an error from one of our
 * callbacks has already chosen its own. */
static int parse_failed(pl_http_parser *p, enum http_errno e) {
    pl_http_request_free(p->cur);
    p->cur = NULL;
    p->continue_pending = 0;
    if (p->status) return -1;
    if (e == HPE_HEADER_OVERFLOW)
        return fail(p, 431, "request head too large");
    return fail(p, 400, "malformed request: %s", http_errno_description(e));
}

int pl_http_feed(pl_http_parser *p, const char *data, size_t len) {
    if (p->status) return -1;
    while (len > 0 && !p->closed) {
        size_t n = len;
        int in_head = !p->headers_done;
        if (in_head) {
            size_t budget = p->lim.max_header - p->head_seen;
            if (budget == 0) {
                head_too_large(p);
                return parse_failed(p, HPE_OK);
            }
            if (n > budget) n = budget;
            scan_head(p, data, n);
        }
        size_t used = http_parser_execute(&p->hp, &settings, data, n);
        enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
        if (e == HPE_PAUSED) {
            http_parser_pause(&p->hp, 0); /* a request ended at data[used] */
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

pl_http_request *pl_http_next(pl_http_parser *p) {
    pl_http_request *r = p->first;
    if (!r) return NULL;
    p->first = r->next;
    if (!p->first) p->last = NULL;
    r->next = NULL;
    return r;
}

int pl_http_error(const pl_http_parser *p, const char **reason) {
    if (reason) *reason = p->status ? p->reason : NULL;
    return p->status;
}

int pl_http_take_continue(pl_http_parser *p) {
    int pending = p->continue_pending;
    p->continue_pending = 0;
    return pending;
}

int pl_http_in_request(const pl_http_parser *p) {
    return p->cur != NULL && !p->status;
}

int pl_http_closed(const pl_http_parser *p) { return p->closed; }
