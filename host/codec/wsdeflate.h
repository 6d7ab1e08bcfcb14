/* wsdeflate.h: permessage-deflate's compression (RFC 7692) on zlib.
 *
 * A message is raw deflate (no zlib header) flushed with Z_SYNC_FLUSH, whose
 * closing empty block 00 00 ff ff is left off on the wire and put back by the
 * receiver. Each direction keeps its own window across messages ("context
 * takeover") unless the negotiation said not to, and its window size is the
 * one agreed for its sender. Inflating is bounded: output past the limit
 * stops it at once, so a small message that inflates without end (a deflate
 * bomb) costs no more than the limit. Used by ws.c only. */
#ifndef PULSAR_WSDEFLATE_H
#define PULSAR_WSDEFLATE_H

#include <stddef.h>

#include "buf.h"
#include "ws.h"

typedef struct pl_wsd pl_wsd;

enum pl_wsd_result {
    PL_WSD_OK = 0,
    PL_WSD_CORRUPT = -1,   /* not valid deflate data */
    PL_WSD_TOO_BIG = -2,   /* the output would pass the limit */
    PL_WSD_NO_MEMORY = -3,
};

/* The state for one connection; client says which side we are, so which of
 * the agreed parameters are ours and which the peer's. NULL without memory
 * or with window bits out of 8..15. zlib's streams are made on first use. */
pl_wsd *pl_wsd_new(const pl_ws_deflate_params *params, int client);
void pl_wsd_free(pl_wsd *d);

/* Compresses one whole message, appending it (without the 00 00 ff ff tail)
 * to out. */
enum pl_wsd_result pl_wsd_compress(pl_wsd *d, const char *in, size_t len,
                                   pl_buf *out);

/* Inflates a piece of a message's compressed bytes, appending the output to
 * out, never letting out->len pass limit. */
enum pl_wsd_result pl_wsd_inflate(pl_wsd *d, const char *in, size_t len,
                                  pl_buf *out, size_t limit);

/* Ends a message: inflates the tail the sender left off, then forgets the
 * window when the peer said it keeps no context. */
enum pl_wsd_result pl_wsd_inflate_end(pl_wsd *d, pl_buf *out, size_t limit);

#endif
