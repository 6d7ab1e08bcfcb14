/* http.c: HTTP/1.1 requests on Debian's libhttp-parser (see http.h).
 *
 * http_parser knows the grammar (request line, header fields, Content-Length,
 * chunked coding, keep-alive rules, request smuggling checks) and calls back
 * with pieces of the bytes it is given; it stores nothing. This file keeps
 * those pieces in one request object at a time and queues the complete ones;
 * the head's text and fields are kept, bounded and checked by http_head.c,
 * which the response parser shares.
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

#include <http_parser.h>

const pl_http_limits pl_http_default_limits = {
    .max_header = PL_HTTP_MAX_HEADER_DEFAULT,
    .max_headers = PL_HTTP_MAX_HEADERS_DEFAULT,
    .max_body = PL_HTTP_MAX_BODY_DEFAULT,
};

/* Where the scan of a head's raw bytes is (see scan_head). */
enum line_state {
    LINE_BEFORE, LINE_IN, LINE_CR, LINE_START, LINE_START_CR, LINE_DONE
};

struct pl_http_parser {
    http_parser hp;
    pl_http_limits lim;
    pl_http_request *cur;               /* being parsed; NULL between requests */
    pl_http_request *first, *last;      /* complete, oldest first */
    pl_http_head head;    /* cur's head while it is read */
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

/* The head is complete and checked: the request takes its text and fields. */
static void take_head(pl_http_request *r, pl_http_head *h) {
    r->head = h->text;
    r->headers = h->fields;
    r->nheaders = h->nfields;
    r->headers_cap = h->cap;
    pl_http_head_complete(h);
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

/* ---- http_parser's callbacks ------------------------------------------ */

static int on_message_begin(http_parser *hp) {
    pl_http_parser *p = parser_of(hp);
    pl_http_request_free(p->cur);
    p->cur = request_new(&p->lim);
    if (!p->cur) return out_of_memory(p);
    pl_http_head_begin(&p->head);
    return 0;
}

static int on_url(http_parser *hp, const char *at, size_t len) {
    pl_http_parser *p = parser_of(hp);
    if (pl_http_head_start_line(&p->head, at, len) != 0) return out_of_memory(p);
    p->cur->target_len += len;
    return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t len) {
    pl_http_parser *p = parser_of(hp);
    if (pl_http_head_name(&p->head, at, len) != 0) return out_of_memory(p);
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len) {
    pl_http_parser *p = parser_of(hp);
    if (pl_http_head_value(&p->head, at, len) != 0) return out_of_memory(p);
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

/* The transfer codings of every Transfer-Encoding field (at least one
 * field is there): chunked, once and last; 0, or -1 once refused. */
static int check_codings(pl_http_parser *p) {
    pl_http_codings c = pl_http_head_codings(&p->head);
    if (!c.last_chunked)
        return fail(p, 400, "Transfer-Encoding must end with chunked");
    if (c.chunked > 1) return fail(p, 400, "Transfer-Encoding has chunked twice");
    if (c.other)
        return fail(p, 501, "Transfer-Encoding '%.*s' is not implemented",
                    c.other_len, c.other);
    return 0;
}

/* The rules of RFC 9112 http_parser does not keep (see the head comment). */
static int check_strict(pl_http_parser *p, const http_parser *hp) {
    const pl_http_head *h = &p->head;
    char why[sizeof p->reason];
    if (pl_http_head_check_names(h, why, sizeof why) != 0)
        return fail(p, 400, "%s", why);
    if (p->folded)
        return fail(p, 400, "a header line begins with a blank (obs-fold)");
    size_t hosts = pl_http_head_count_named(h, "host");
    if (hosts > 1) return fail(p, 400, "more than one Host header");
    if (hosts == 0 && hp->http_minor >= 1)
        return fail(p, 400, "HTTP/1.1 request without a Host header");
    if (pl_http_head_check_lengths(h, why, sizeof why) != 0)
        return fail(p, 400, "%s", why);
    if (!pl_http_head_find(h, "transfer-encoding")) return 0;
    if (hp->http_minor == 0)
        return fail(p, 400, "Transfer-Encoding in an HTTP/1.0 request");
    return check_codings(p);
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
    if (p->head.extra)
        return fail(p, 431, "more than %zu header fields", p->lim.max_headers);
    pl_http_head_trim(&p->head);
    if (check_strict(p, hp) != 0) return -1;
    r->chunked = (hp->flags & F_CHUNKED) != 0;
    if (!r->chunked && hp->content_length != UINT64_MAX &&
        hp->content_length > p->lim.max_body)
        return fail(p, 413, "Content-Length %llu exceeds the body limit of %zu "
                    "bytes", (unsigned long long)hp->content_length,
                    p->lim.max_body);
    /* RFC 9110 §10.1.1: a server ignores 100-continue from HTTP/1.0 */
    const pl_http_header *expect = pl_http_head_find(&p->head, "expect");
    r->expect_continue = hp->http_minor >= 1 && expect &&
                         pl_http_head_value_is(&p->head, expect, "100-continue");
    p->continue_pending = r->expect_continue && body_expected(hp);
    take_head(r, &p->head);
    split_target(r);
    return 0;
}

static int body_too_large(pl_http_parser *p) {
    return fail(p, 413, "body larger than %zu bytes", p->lim.max_body);
}

static int on_chunk_header(http_parser *hp) {
    pl_http_parser *p = parser_of(hp);
    uint64_t size = hp->content_length; /* this chunk's */
    if (size > p->lim.max_body - p->cur->body.len) return body_too_large(p);
    if (size == 0) pl_http_head_trailers(&p->head);
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
    pl_http_head_next_message(&p->head);
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
    pl_http_head_init(&p->head, p->lim.max_header, p->lim.max_headers);
    http_parser_init(&p->hp, HTTP_REQUEST);
    p->hp.data = p;
    return p;
}

void pl_http_parser_free(pl_http_parser *p) {
    if (!p) return;
    pl_http_request_free(p->cur);
    pl_http_head_clear(&p->head);
    while (p->first) pl_http_request_free(pl_http_next(p));
    free(p);
}

/* The head budget ran out before the head ended. */
static int head_too_large(pl_http_parser *p) {
    if (p->cur && !pl_http_head_in_fields(&p->head))
        return fail(p, 414, "request line longer than %zu bytes", p->lim.max_header);
    return fail(p, 431, "request line and headers larger than %zu bytes",
                p->lim.max_header);
}

/* Turns an error of http_parser into the answer; an error from one of our
 * callbacks has already chosen its own. */
static int parse_failed(pl_http_parser *p, enum http_errno e) {
    pl_http_request_free(p->cur);
    p->cur = NULL;
    pl_http_head_clear(&p->head);
    p->continue_pending = 0;
    if (p->status) return -1;
    if (e == HPE_HEADER_OVERFLOW)
        return fail(p, 431, "request head too large");
    return fail(p, 400, "malformed request: %s", http_errno_description(e));
}

int pl_http_feed(pl_http_parser *p, const char *data, size_t len) {
    if (p->status) return -1;
    while (len > 0 && !p->closed) {
        size_t n = pl_http_head_room(&p->head, len);
        if (n == 0) {
            head_too_large(p);
            return parse_failed(p, HPE_OK);
        }
        if (!p->head.done) scan_head(p, data, n);
        size_t used = http_parser_execute(&p->hp, &settings, data, n);
        enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
        if (e == HPE_PAUSED) {
            http_parser_pause(&p->hp, 0); /* a request ended at data[used] */
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
