/* text.h: a growing string that a C test prints an outcome into, so that
 * "the same outcome however the input was split" is one strcmp, and the
 * malloc'd copy each feed gets (exactly its length, so ASan catches a read
 * past it). Shared by the HTTP parsers' tests; static inline, so a test that
 * uses only part of it compiles without warnings. */
#ifndef PULSAR_TEST_TEXT_H
#define PULSAR_TEST_TEXT_H

#include <stdlib.h>
#include <string.h>

typedef struct text {
    char *s; /* NUL-terminated once anything was put; the test frees it */
    size_t len, cap;
} text;

static inline void put(text *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->s = realloc(t->s, t->cap);
        if (!t->s) abort();
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

static inline void puts_(text *t, const char *s) { put(t, s, strlen(s)); }

/* A malloc'd copy of s[0..n) (of one byte when n is 0); the caller frees it. */
static inline char *exact_copy(const char *s, size_t n) {
    char *c = malloc(n ? n : 1);
    if (!c) abort();
    memcpy(c, s, n);
    return c;
}

#endif
