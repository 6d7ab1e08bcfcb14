/* buf.h: a growable byte buffer with a hard size cap.
 *
 * Used by the codecs (encoded MessagePack, outgoing frames) and by the
 * transports (read and write buffers). Every growth is checked: a failed
 * allocation or a request past `limit` returns -1 and leaves the buffer as
 * it was, so a caller can report the error and carry on. */
#ifndef PULSAR_BUF_H
#define PULSAR_BUF_H

#include <stddef.h>

typedef struct pl_buf {
    char *data;
    size_t len;    /* bytes in use */
    size_t cap;    /* bytes allocated */
    size_t limit;  /* the most `len` may ever be; 0 means SIZE_MAX */
} pl_buf;

void pl_buf_init(pl_buf *b, size_t limit);
void pl_buf_free(pl_buf *b);

/* Makes room for `extra` more bytes past `len`. 0, or -1 (no memory, or the
 * limit would be passed). */
int pl_buf_reserve(pl_buf *b, size_t extra);

/* Appends `n` bytes. 0, or -1 as pl_buf_reserve. */
int pl_buf_append(pl_buf *b, const void *p, size_t n);

/* Drops the first `n` bytes (n <= len), keeping the rest at the front. */
void pl_buf_consume(pl_buf *b, size_t n);

#endif
