/* http_head.h: the head of an HTTP message while it is read, shared by
 * the request parser (http.c) and the response parser (http_response.c).
 *
 * Both parsers are handed a head by http_parser in pieces (the start
 * line's text, then each field's name and value, any of them cut where a
 * read ended) and keep the same things of it: one text buffer with that
 * piece of the start line and then every name (lower-cased) and value, and
 * the fields as offsets into it. This is that storage with its bounds, and
 * the checks both parsers make of a complete head; each parser keeps its own
 * rules (what the start line says, which codings it takes, in which words
 * and with which status it refuses) in its own file.
 *
 * Bounds: the text never outgrows max_header (the parser never gives
 * http_parser more head bytes than that: pl_http_head_room); fields past
 * max_headers are counted (`extra`), not stored, for the parser to refuse
 * when the head ends. Nothing here fails because of what the bytes say,
 * only for want of memory: the checks run once the head is complete, where
 * the answer cannot depend on how the bytes were split (see http.c). When
 * the head is complete its text and fields go to the message
 * (pl_http_head_complete), so a parser holds one head at a time. */
#ifndef PULSAR_HTTP_HEAD_H
#define PULSAR_HTTP_HEAD_H

#include <stddef.h>

#include "buf.h"

/* One header field; the offsets point into the message's head text. */
typedef struct pl_http_header {
    size_t name, name_len;   /* the name, lower-cased */
    size_t value, value_len; /* the value as sent, without surrounding blanks */
} pl_http_header;

/* Where the last field callback left off: a field's name can arrive in
 * several pieces, so a new field begins only after a value (or first). */
enum pl_http_field_state { PL_HTTP_IN_NOTHING, PL_HTTP_IN_NAME, PL_HTTP_IN_VALUE };

typedef struct pl_http_head {
    pl_buf text;              /* the start line's piece, then names and values */
    pl_http_header *fields;
    size_t nfields, cap;
    size_t max_header, max_fields;
    size_t seen;              /* bytes of this head given to http_parser */
    int done;                 /* the head is complete: a body follows */
    enum pl_http_field_state field;
    int skipping;             /* the current field is past max_fields */
    size_t extra;             /* fields past max_fields */
    int in_trailers;          /* after the last chunk: fields are dropped */
} pl_http_head;

/* What the Transfer-Encoding fields list, in order (pl_http_head_codings). */
typedef struct pl_http_codings {
    size_t chunked;     /* how many codings are chunked */
    int last_chunked;   /* the final coding is chunked */
    const char *other;  /* the first coding that is not chunked, or NULL */
    int other_len;      /* its length, at most 40 (enough to name it) */
} pl_http_codings;

/* An empty head bounded by max_header bytes and max_fields fields. */
void pl_http_head_init(pl_http_head *h, size_t max_header, size_t max_fields);

/* Frees what the head holds; it stays usable, empty. */
void pl_http_head_clear(pl_http_head *h);

/* How many of len bytes http_parser may be given now: all of them once the
 * head is complete, else no more than is left of max_header (0: none left,
 * the head is too large). pl_http_head_count adds the bytes it used. */
size_t pl_http_head_room(const pl_http_head *h, size_t len);
void pl_http_head_count(pl_http_head *h, size_t used);

/* A message begins: no field yet, none skipped, trailers not yet. */
void pl_http_head_begin(pl_http_head *h);

/* http_parser's pieces: of the start line (the target, the reason), of a
 * field's name, of its value. 0, or -1 without memory. Fields are dropped
 * in trailers and past max_fields. */
int pl_http_head_start_line(pl_http_head *h, const char *at, size_t len);
int pl_http_head_name(pl_http_head *h, const char *at, size_t len);
int pl_http_head_value(pl_http_head *h, const char *at, size_t len);

/* 1 once a field has begun (a head cut short in its start line or not). */
int pl_http_head_in_fields(const pl_http_head *h);

/* The last chunk came: the fields that follow are trailers, dropped. */
void pl_http_head_trailers(pl_http_head *h);

/* The head is complete: the caller has taken text, fields, nfields and cap
 * (the message frees them), the head forgets them; a body follows. */
void pl_http_head_complete(pl_http_head *h);

/* The message is complete: the next head's budget starts here. */
void pl_http_head_next_message(pl_http_head *h);

/* ---- reading a complete head ----------------------------------------- */

static inline const char *pl_http_head_at(const pl_http_head *h, size_t at) {
    return h->text.data ? h->text.data + at : "";
}

/* Drops the blanks after each value (http_parser drops those before). */
void pl_http_head_trim(pl_http_head *h);

/* The first field with this (lower-case) name, or NULL; how many there are. */
const pl_http_header *pl_http_head_find(const pl_http_head *h, const char *name);
size_t pl_http_head_count_named(const pl_http_head *h, const char *name);

/* Whether the field's value is `want`, ignoring case. */
int pl_http_head_value_is(const pl_http_head *h, const pl_http_header *f,
                          const char *want);

/* The checks against two framings of one message that both parsers make
 * (RFC 9112 §5.1, §6.3): 0, or -1 with why in why[0..size):
 *   names:   a blank in a field name ("Transfer-Encoding : chunked", which
 *            http_parser takes for framing all the same);
 *   lengths: Content-Length twice, or with Transfer-Encoding. */
int pl_http_head_check_names(const pl_http_head *h, char *why, size_t size);
int pl_http_head_check_lengths(const pl_http_head *h, char *why, size_t size);

/* Reads every Transfer-Encoding field's list of codings, in order; empty
 * list elements are skipped (RFC 9110 §5.6.1). */
pl_http_codings pl_http_head_codings(const pl_http_head *h);

#endif
