/* buf.c: see buf.h. Growth doubles, so appends are amortised O(1). */
#include "buf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void pl_buf_init(pl_buf *b, size_t limit) {
    b->data = NULL;
    b->len = b->cap = 0;
    b->limit = limit ? limit : SIZE_MAX;
}

void pl_buf_free(pl_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int pl_buf_reserve(pl_buf *b, size_t extra) {
    if (extra > b->limit - b->len) return -1;
    size_t need = b->len + extra;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > b->limit) cap = b->limit;
    char *p = realloc(b->data, cap);
    if (!p) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int pl_buf_append(pl_buf *b, const void *p, size_t n) {
    if (n == 0) return 0;
    if (pl_buf_reserve(b, n) != 0) return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void pl_buf_consume(pl_buf *b, size_t n) {
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}
