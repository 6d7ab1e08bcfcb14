/* wsdeflate.c: see wsdeflate.h.
 *
 * Window sizes. Our deflater uses the bits agreed for our side; zlib refuses
 * 8 for raw deflate (since 1.2.9 it quietly means 9 for a zlib stream, and
 * deflateInit2 fails for a raw one), so 8 becomes 9 here. A peer's zlib has
 * the same quirk, so data compressed "with 8" may reach back 512 bytes. Our
 * inflater always uses the largest window, 15 bits, whatever the peer
 * agreed: a larger window inflates anything a smaller one made, and zlib
 * judges a distance beyond the window ("too far back") from the window
 * plus what the current call has written, so with a small window one bad
 * message was refused or not depending on how its bytes arrived (fuzz_ws
 * found it). With 15 bits every distance deflate can express is checked
 * against the whole history, the same way however the bytes are cut. The
 * cost: a 32 KiB window for a connection that receives compressed
 * messages, made on its first one.
 *
 * Both streams are made on the first message that needs them: a connection
 * that never sends a compressed message never pays deflate's 256 KiB. */
#include "wsdeflate.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

struct pl_wsd {
    z_stream out, in;
    int out_ready, in_ready;
    int out_bits, in_bits;
    int out_reset, in_reset; /* no context takeover: reset after each message */
    int in_ended; /* the message's deflate stream ended (a BFINAL block) */
};

static const unsigned char tail[4] = {0x00, 0x00, 0xff, 0xff};

/* A raw window size zlib accepts for the agreed bits (see the head). */
static int zlib_bits(int agreed) { return agreed < 9 ? 9 : agreed; }

static int bits_valid(int bits) { return bits >= 8 && bits <= 15; }

pl_wsd *pl_wsd_new(const pl_ws_deflate_params *p, int client) {
    if (!bits_valid(p->server_max_window_bits) ||
        !bits_valid(p->client_max_window_bits))
        return NULL;
    pl_wsd *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    int ours = client ? p->client_max_window_bits : p->server_max_window_bits;
    d->out_bits = zlib_bits(ours);
    d->in_bits = 15; /* whatever the peer's bits (see the head) */
    d->out_reset = client ? p->client_no_context_takeover : p->server_no_context_takeover;
    d->in_reset = client ? p->server_no_context_takeover : p->client_no_context_takeover;
    return d;
}

void pl_wsd_free(pl_wsd *d) {
    if (!d) return;
    if (d->out_ready) deflateEnd(&d->out);
    if (d->in_ready) inflateEnd(&d->in);
    free(d);
}

static enum pl_wsd_result start_deflate(pl_wsd *d) {
    if (d->out_ready) return PL_WSD_OK;
    memset(&d->out, 0, sizeof d->out);
    if (deflateInit2(&d->out, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -d->out_bits, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK)
        return PL_WSD_NO_MEMORY;
    d->out_ready = 1;
    return PL_WSD_OK;
}

static enum pl_wsd_result start_inflate(pl_wsd *d) {
    if (d->in_ready) return PL_WSD_OK;
    memset(&d->in, 0, sizeof d->in);
    if (inflateInit2(&d->in, -d->in_bits) != Z_OK) return PL_WSD_NO_MEMORY;
    d->in_ready = 1;
    return PL_WSD_OK;
}

enum pl_wsd_result pl_wsd_compress(pl_wsd *d, const char *in, size_t len,
                                   pl_buf *out) {
    enum pl_wsd_result r = start_deflate(d);
    if (r != PL_WSD_OK) return r;
    z_stream *z = &d->out;
    z->next_in = (Bytef *)in;
    size_t left = len;
    int flushed = 0;
    /* zlib counts in uInt: a message over 4 GiB goes in pieces. */
    while (!flushed) {
        uInt piece = left > UINT_MAX ? UINT_MAX : (uInt)left;
        z->avail_in = piece;
        int flush = piece == left ? Z_SYNC_FLUSH : Z_NO_FLUSH;
        do {
            size_t room = deflateBound(z, z->avail_in) + 16;
            if (room > UINT_MAX) room = UINT_MAX;
            if (pl_buf_reserve(out, room) != 0) return PL_WSD_NO_MEMORY;
            z->next_out = (Bytef *)out->data + out->len;
            z->avail_out = (uInt)room;
            int rc = deflate(z, flush);
            out->len += room - z->avail_out;
            if (rc != Z_OK && rc != Z_BUF_ERROR) return PL_WSD_NO_MEMORY;
        } while (z->avail_out == 0);
        left -= piece - z->avail_in;
        flushed = flush == Z_SYNC_FLUSH;
    }
    /* A sync flush ends with an empty stored block: 00 00 ff ff. */
    if (out->len >= 4 && memcmp(out->data + out->len - 4, tail, 4) == 0) out->len -= 4;
    if (d->out_reset) deflateReset(z);
    return PL_WSD_OK;
}

/* One inflate call into the room left below limit. At the limit the room is
 * a one-byte probe: a byte there means the message would pass the limit.
 * *full says the call used all the room it had (more output may wait). */
static enum pl_wsd_result inflate_step(z_stream *z, pl_buf *out, size_t limit,
                                       int *full, int *rc) {
    if (out->len >= limit) {
        unsigned char probe;
        z->next_out = &probe;
        z->avail_out = 1;
        *rc = inflate(z, Z_SYNC_FLUSH);
        *full = 0;
        return z->avail_out == 0 ? PL_WSD_TOO_BIG : PL_WSD_OK;
    }
    if (out->len == out->cap) {
        size_t want = (size_t)z->avail_in * 4;
        if (want < 4096) want = 4096;
        if (want > limit - out->len) want = limit - out->len;
        if (pl_buf_reserve(out, want) != 0) return PL_WSD_NO_MEMORY;
    }
    size_t room = out->cap - out->len;
    if (room > limit - out->len) room = limit - out->len;
    if (room > UINT_MAX) room = UINT_MAX;
    z->next_out = (Bytef *)out->data + out->len;
    z->avail_out = (uInt)room;
    *rc = inflate(z, Z_SYNC_FLUSH);
    out->len += room - z->avail_out;
    *full = z->avail_out == 0;
    return PL_WSD_OK;
}

enum pl_wsd_result pl_wsd_inflate(pl_wsd *d, const char *in, size_t len,
                                  pl_buf *out, size_t limit) {
    enum pl_wsd_result r = start_inflate(d);
    if (r != PL_WSD_OK) return r;
    z_stream *z = &d->in;
    if (d->in_ended) return PL_WSD_OK;
    while (len > 0) {
        uInt piece = len > UINT_MAX ? UINT_MAX : (uInt)len;
        z->next_in = (Bytef *)in;
        z->avail_in = piece;
        for (;;) {
            int full, rc;
            r = inflate_step(z, out, limit, &full, &rc);
            if (r != PL_WSD_OK) return r;
            if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT) return PL_WSD_CORRUPT;
            if (rc == Z_MEM_ERROR) return PL_WSD_NO_MEMORY;
            /* A final block (BFINAL) may end a message's stream (RFC 7692
             * §7.2.3.4): what follows in the message is padding. */
            if (rc == Z_STREAM_END) {
                d->in_ended = 1;
                return PL_WSD_OK;
            }
            /* Done once the input is used and the output did not fill the
             * room (then nothing waits inside zlib). No progress with input
             * and room left would be zlib stuck: never seen, refused. */
            if (!full && z->avail_in == 0) break;
            if (!full && rc == Z_BUF_ERROR) return PL_WSD_CORRUPT;
        }
        in += piece;
        len -= piece;
    }
    return PL_WSD_OK;
}

enum pl_wsd_result pl_wsd_inflate_end(pl_wsd *d, pl_buf *out, size_t limit) {
    enum pl_wsd_result r = pl_wsd_inflate(d, (const char *)tail, sizeof tail, out, limit);
    if (r != PL_WSD_OK) return r;
    /* A stream that ended starts afresh, whatever was agreed. */
    if (d->in_reset || d->in_ended) inflateReset(&d->in);
    d->in_ended = 0;
    return PL_WSD_OK;
}
