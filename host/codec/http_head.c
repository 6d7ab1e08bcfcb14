/* http_head.c: a message head's text and fields as http_parser hands them
 * over, and the checks both parsers make of it (see http_head.h).
 *
 * The text buffer is bounded by max_header, which the caller's head budget
 * keeps first, so an append fails only for want of memory; the field array
 * grows by doubling up to max_fields and no further. */
#include "http_head.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void pl_http_head_init(pl_http_head *h, size_t max_header, size_t max_fields) {
    memset(h, 0, sizeof *h);
    h->max_header = max_header;
    h->max_fields = max_fields;
    /* the text never holds more than the bytes of the head */
    pl_buf_init(&h->text, max_header ? max_header : 1);
}

void pl_http_head_clear(pl_http_head *h) {
    pl_buf_free(&h->text);
    free(h->fields);
    h->fields = NULL;
    h->nfields = h->cap = 0;
}

size_t pl_http_head_room(const pl_http_head *h, size_t len) {
    if (h->done) return len;
    size_t budget = h->max_header - h->seen;
    return len < budget ? len : budget;
}

void pl_http_head_count(pl_http_head *h, size_t used) {
    if (!h->done) h->seen += used;
}

void pl_http_head_begin(pl_http_head *h) {
    pl_http_head_clear(h);
    h->field = PL_HTTP_IN_NOTHING;
    h->skipping = h->in_trailers = 0;
    h->extra = 0;
}

int pl_http_head_start_line(pl_http_head *h, const char *at, size_t len) {
    return pl_buf_append(&h->text, at, len);
}

/* Adds an empty field, its name starting at the end of the text; a field
 * past max_fields is only counted (h->skipping). */
static int add_field(pl_http_head *h) {
    h->skipping = h->nfields == h->max_fields;
    if (h->skipping) {
        h->extra++;
        return 0;
    }
    if (h->nfields == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        if (cap > h->max_fields) cap = h->max_fields;
        pl_http_header *f = realloc(h->fields, cap * sizeof *f);
        if (!f) return -1;
        h->fields = f;
        h->cap = cap;
    }
    pl_http_header *f = &h->fields[h->nfields++];
    f->name = h->text.len;
    f->name_len = f->value = f->value_len = 0;
    return 0;
}

static pl_http_header *last_field(pl_http_head *h) {
    return &h->fields[h->nfields - 1];
}

int pl_http_head_name(pl_http_head *h, const char *at, size_t len) {
    int new_field = h->field != PL_HTTP_IN_NAME;
    h->field = PL_HTTP_IN_NAME;
    if (h->in_trailers) return 0;
    if (new_field && add_field(h) != 0) return -1;
    if (h->skipping) return 0;
    size_t start = h->text.len;
    if (pl_buf_append(&h->text, at, len) != 0) return -1;
    for (char *c = h->text.data + start; c < h->text.data + h->text.len; c++)
        if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
    last_field(h)->name_len += len;
    return 0;
}

int pl_http_head_value(pl_http_head *h, const char *at, size_t len) {
    int new_value = h->field != PL_HTTP_IN_VALUE;
    h->field = PL_HTTP_IN_VALUE;
    if (h->in_trailers || h->skipping) return 0;
    pl_http_header *f = last_field(h);
    if (new_value) f->value = h->text.len;
    if (pl_buf_append(&h->text, at, len) != 0) return -1;
    f->value_len += len;
    return 0;
}

int pl_http_head_in_fields(const pl_http_head *h) {
    return h->nfields > 0 || h->field != PL_HTTP_IN_NOTHING;
}

void pl_http_head_trailers(pl_http_head *h) { h->in_trailers = 1; }

void pl_http_head_complete(pl_http_head *h) {
    pl_buf_init(&h->text, h->text.limit);
    h->fields = NULL;
    h->nfields = h->cap = 0;
    h->done = 1;
    h->field = PL_HTTP_IN_NOTHING;
}

void pl_http_head_next_message(pl_http_head *h) {
    h->done = 0;
    h->seen = 0;
}

/* ---- reading a complete head ----------------------------------------- */

static int is_blank(char c) { return c == ' ' || c == '\t'; }

void pl_http_head_trim(pl_http_head *h) {
    for (size_t i = 0; i < h->nfields; i++) {
        pl_http_header *f = &h->fields[i];
        while (f->value_len && is_blank(h->text.data[f->value + f->value_len - 1]))
            f->value_len--;
    }
}

static int name_is(const pl_http_head *h, const pl_http_header *f,
                   const char *name) {
    size_t n = strlen(name);
    return f->name_len == n && memcmp(pl_http_head_at(h, f->name), name, n) == 0;
}

const pl_http_header *pl_http_head_find(const pl_http_head *h, const char *name) {
    for (size_t i = 0; i < h->nfields; i++)
        if (name_is(h, &h->fields[i], name)) return &h->fields[i];
    return NULL;
}

size_t pl_http_head_count_named(const pl_http_head *h, const char *name) {
    size_t count = 0;
    for (size_t i = 0; i < h->nfields; i++) count += name_is(h, &h->fields[i], name);
    return count;
}

int pl_http_head_value_is(const pl_http_head *h, const pl_http_header *f,
                          const char *want) {
    size_t n = strlen(want);
    return f->value_len == n &&
           strncasecmp(pl_http_head_at(h, f->value), want, n) == 0;
}

int pl_http_head_check_names(const pl_http_head *h, char *why, size_t size) {
    for (size_t i = 0; i < h->nfields; i++) {
        const pl_http_header *f = &h->fields[i];
        const char *name = pl_http_head_at(h, f->name);
        for (size_t k = 0; k < f->name_len; k++) {
            if (!is_blank(name[k])) continue;
            snprintf(why, size, "blank in the header name '%.*s'",
                     (int)(f->name_len > 60 ? 60 : f->name_len), name);
            return -1;
        }
    }
    return 0;
}

int pl_http_head_check_lengths(const pl_http_head *h, char *why, size_t size) {
    size_t lengths = pl_http_head_count_named(h, "content-length");
    if (lengths > 1) {
        snprintf(why, size, "more than one Content-Length header");
        return -1;
    }
    if (lengths && pl_http_head_find(h, "transfer-encoding")) {
        snprintf(why, size, "both Content-Length and Transfer-Encoding");
        return -1;
    }
    return 0;
}

/* Notes one coding, a[0..len), of a Transfer-Encoding list. */
static void note_coding(pl_http_codings *c, const char *a, size_t len) {
    c->last_chunked = len == 7 && strncasecmp(a, "chunked", 7) == 0;
    if (c->last_chunked) {
        c->chunked++;
    } else if (!c->other) {
        c->other = a;
        c->other_len = (int)(len > 40 ? 40 : len);
    }
}

pl_http_codings pl_http_head_codings(const pl_http_head *h) {
    pl_http_codings c = {0};
    for (size_t i = 0; i < h->nfields; i++) {
        const pl_http_header *f = &h->fields[i];
        if (!name_is(h, f, "transfer-encoding")) continue;
        const char *v = pl_http_head_at(h, f->value), *end = v + f->value_len;
        while (v < end) {
            const char *comma = memchr(v, ',', (size_t)(end - v));
            const char *a = v, *b = comma ? comma : end;
            v = comma ? comma + 1 : end;
            while (a < b && is_blank(*a)) a++;
            while (b > a && is_blank(b[-1])) b--;
            if (a < b) note_coding(&c, a, (size_t)(b - a));
        }
    }
    return c;
}
