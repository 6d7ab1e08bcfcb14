/* ws.c: WebSocket frames and messages (see ws.h).
 *
 * Why by hand. Debian's one C WebSocket library, libwebsockets
 * (libwebsockets-dev, with the libwebsockets-evlib-uv plugin), is a whole
 * server and client stack: it owns the sockets, the handshake and the event
 * loop's callbacks, and offers no frame parser to call over bytes someone
 * else read. Ours arrive from pulsar's own HTTP connections, in libuv's read
 * buffers, after pulsar's own handshake. The other packages `apt-cache
 * search websocket` lists are for Python, Perl, Go, Haskell, Emacs, node and
 * Qt. RFC 6455's framing is small, so it is written here, bounded and fuzzed
 * (tests/fuzz/fuzz_ws.c); what is hard comes from Debian: zlib for deflate
 * (wsdeflate.c), OpenSSL and libsodium for the handshake (host/bind/lws.c).
 * host/codec/frame.c reads the same frame format for the mailbox, but only
 * whole unmasked binary frames from a trusted peer, in place in a read
 * buffer; a browser's frames are masked, fragmented, interleaved with
 * control frames and compressed, and their text must be UTF-8, checked as
 * it arrives: another parser.
 *
 * Bounds, and how each is kept:
 *   - a frame header is read into a 14-byte array, whatever the split;
 *   - a control payload into a 125-byte array (longer is refused from the
 *     header: §5.5);
 *   - a data message into one buffer that never grows past max_message: an
 *     uncompressed frame whose length would pass it is refused from its
 *     header, before any of it is read (a 64-bit length too), and the buffer
 *     grows with the bytes that arrive, not with what a header claims; a
 *     compressed message is inflated as its bytes arrive, into the same
 *     buffer, and zlib is stopped the moment its output would pass the
 *     limit (wsdeflate.c). Its compressed bytes are bounded too, a little
 *     above max_message (deflate never grows data by more), so a stream of
 *     empty blocks cannot go on for ever.
 * So a codec never holds more than max_message plus one header and one
 * control payload, and the buffer is let go after a message over 64 KiB.
 *
 * Speed. Unmasking XORs eight bytes at a time; a whole unfragmented,
 * unmasked, uncompressed frame already in the input (what a client reads) is
 * handed out where it lies, without a copy; a masked one is unmasked in the
 * one copy into the message buffer, which is reused from message to message.
 * Text is checked for UTF-8 as it is copied, ASCII eight bytes at a time. */
#include "ws.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wsdeflate.h"

#define KEEP_BUFFER ((size_t)64 << 10) /* larger message buffers are let go */

enum state { READ_HEADER, READ_PAYLOAD, AFTER_CLOSE, FAILED };

/* Where a UTF-8 check stands between two pieces of a text message: how many
 * continuation bytes are still due, and the range the next one must be in
 * (narrower than 80..BF after some lead bytes: that is what refuses
 * overlongs, surrogates and code points past U+10FFFF). */
typedef struct utf8_state {
    unsigned need;
    unsigned char lo, hi;
} utf8_state;

struct pl_ws {
    int client;
    size_t max_message;
    pl_wsd *deflate; /* NULL when permessage-deflate was not agreed */
    enum state state;

    unsigned char header[PL_WS_MAX_HEADER];
    size_t header_have, header_need;

    /* the frame being read */
    int fin, rsv1, opcode, masked;
    unsigned char key[4];
    size_t phase;  /* payload bytes unmasked so far, mod 4 is what counts */
    uint64_t left; /* payload bytes still to come */

    /* the data message being put together */
    int msg_opcode;     /* PL_WS_TEXT or PL_WS_BINARY while one is open, else 0 */
    int msg_compressed; /* its first frame had RSV1 */
    uint64_t msg_wire;  /* its compressed bytes so far */
    pl_buf msg;
    utf8_state utf8;
    int delivered;      /* msg was handed out: empty it on the next call */

    unsigned char control[PL_WS_MAX_CONTROL];
    size_t control_len;

    int close_code; /* 0: no close yet; -1: a close without a code */
    int error;
    const char *reason;

    pl_buf packed; /* the encoder's compressed payload, reused */
};

/* ---- UTF-8 (RFC 3629) ---- */

static const utf8_state utf8_start = {0, 0x80, 0xBF};

/* Sets the continuation bytes a lead byte calls for; 0 for a byte that can
 * never lead (a continuation byte, C0, C1, F5..FF). */
static int utf8_lead(utf8_state *u, unsigned char c) {
    u->lo = 0x80;
    u->hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        u->need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        u->need = 2;
        if (c == 0xE0) u->lo = 0xA0; /* overlong below U+0800 */
        if (c == 0xED) u->hi = 0x9F; /* U+D800..DFFF, the surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        u->need = 3;
        if (c == 0xF0) u->lo = 0x90; /* overlong below U+10000 */
        if (c == 0xF4) u->hi = 0x8F; /* past U+10FFFF */
    } else {
        return 0;
    }
    return 1;
}

/* Checks s[0..n), carrying on from *u: 0, or -1 at the first byte that
 * cannot be UTF-8 whatever follows. */
static int utf8_feed(utf8_state *u, const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (u->need == 0) {
            while (i + 8 <= n) { /* runs of ASCII, eight bytes at a time */
                uint64_t v;
                memcpy(&v, s + i, 8);
                if (v & 0x8080808080808080ull) break;
                i += 8;
            }
            if (i == n) break;
            unsigned char c = s[i++];
            if (c >= 0x80 && !utf8_lead(u, c)) return -1;
        } else {
            unsigned char c = s[i++];
            if (c < u->lo || c > u->hi) return -1;
            u->need--;
            u->lo = 0x80;
            u->hi = 0xBF;
        }
    }
    return 0;
}

int pl_ws_utf8_valid(const char *s, size_t len) {
    utf8_state u = utf8_start;
    return utf8_feed(&u, (const unsigned char *)s, len) == 0 && u.need == 0;
}

/* ---- masking ---- */

/* dst[i] = src[i] ^ key[(phase + i) % 4], eight bytes at a time (eight is a
 * multiple of four, so one rotated 64-bit key serves every step). */
static void unmask(unsigned char *dst, const unsigned char *src, size_t n,
                   const unsigned char key[4], size_t phase) {
    unsigned char k8[8];
    for (int i = 0; i < 8; i++) k8[i] = key[(phase + (size_t)i) & 3];
    uint64_t k;
    memcpy(&k, k8, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= k;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++) dst[i] = src[i] ^ k8[i & 7];
}

/* ---- the codec ---- */

pl_ws *pl_ws_new(const pl_ws_config *cfg) {
    pl_ws *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->client = cfg->client;
    w->max_message = cfg->max_message;
    w->state = READ_HEADER;
    w->header_need = 2;
    w->utf8 = utf8_start;
    pl_buf_init(&w->msg, cfg->max_message ? cfg->max_message : 1);
    pl_buf_init(&w->packed, 0);
    if (cfg->deflate) {
        w->deflate = pl_wsd_new(cfg->deflate, cfg->client);
        if (!w->deflate) {
            free(w);
            return NULL;
        }
    }
    return w;
}

void pl_ws_free(pl_ws *w) {
    if (!w) return;
    pl_wsd_free(w->deflate);
    pl_buf_free(&w->msg);
    pl_buf_free(&w->packed);
    free(w);
}

int pl_ws_error(const pl_ws *w, const char **reason) {
    if (reason) *reason = w->error ? w->reason : NULL;
    return w->error;
}

int pl_ws_close_code(const pl_ws *w) { return w->close_code; }

size_t pl_ws_buffered(const pl_ws *w) {
    size_t n = w->header_have;
    if (!w->delivered) n += w->msg.len;
    if (w->state == READ_PAYLOAD && w->opcode >= 8) n += w->control_len;
    return n;
}

int pl_ws_close_code_valid(int code) {
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
           (code >= 3000 && code <= 4999);
}

static int fail(pl_ws *w, int code, const char *reason) {
    w->error = code;
    w->reason = reason;
    w->state = FAILED;
    return -1;
}

/* The compressed bytes a message may take: deflate adds at most 5 bytes
 * per 16 KiB stored block and a few more, so an eighth over is plenty. */
static uint64_t compressed_limit(size_t max_message) {
    return (uint64_t)max_message + max_message / 8 + 1024;
}

/* The header's size, from its first two bytes. */
static size_t header_size(const unsigned char *h) {
    size_t n = 2;
    unsigned len7 = h[1] & 0x7F;
    if (len7 == 126) n += 2;
    else if (len7 == 127) n += 8;
    if (h[1] & 0x80) n += 4;
    return n;
}

/* Copies header bytes from p[*at..len); 1 once the header is whole. */
static int take_header(pl_ws *w, const unsigned char *p, size_t len, size_t *at) {
    for (;;) {
        size_t n = w->header_need - w->header_have;
        if (n > len - *at) n = len - *at;
        memcpy(w->header + w->header_have, p + *at, n);
        w->header_have += n;
        *at += n;
        if (w->header_have < w->header_need) return 0;
        if (w->header_need == 2) {
            size_t full = header_size(w->header);
            if (full > 2) {
                w->header_need = full;
                continue;
            }
        }
        w->header_have = 0;
        w->header_need = 2;
        return 1;
    }
}

static uint64_t header_length(pl_ws *w, size_t *at) {
    const unsigned char *h = w->header;
    uint64_t len = h[1] & 0x7F;
    *at = 2;
    if (len == 126) {
        len = (uint64_t)h[2] << 8 | h[3];
        *at = 4;
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++) len = len << 8 | h[2 + i];
        *at = 10;
    }
    return len;
}

static int check_control(pl_ws *w, uint64_t len) {
    if (w->opcode > PL_WS_PONG) return fail(w, 1002, "reserved control opcode");
    if (!w->fin) return fail(w, 1002, "fragmented control frame");
    if (len > PL_WS_MAX_CONTROL) return fail(w, 1002, "control frame over 125 bytes");
    if (w->rsv1) return fail(w, 1002, "RSV1 set on a control frame");
    w->control_len = 0;
    return 0;
}

/* A data frame: continues the open message or starts one; its length must
 * keep the message within max_message. */
static int check_data(pl_ws *w, uint64_t len) {
    if (w->opcode == PL_WS_CONTINUATION) {
        if (!w->msg_opcode) return fail(w, 1002, "continuation frame without a message to continue");
        if (w->rsv1) return fail(w, 1002, "RSV1 set on a continuation frame");
    } else if (w->opcode == PL_WS_TEXT || w->opcode == PL_WS_BINARY) {
        if (w->msg_opcode) return fail(w, 1002, "new message inside a fragmented one");
        if (w->rsv1 && !w->deflate) return fail(w, 1002, "RSV1 set without permessage-deflate");
        w->msg_opcode = w->opcode;
        w->msg_compressed = w->rsv1;
        w->msg_wire = 0;
        w->utf8 = utf8_start;
    } else {
        return fail(w, 1002, "reserved data opcode");
    }
    if (w->msg_compressed) {
        if (len > compressed_limit(w->max_message) - w->msg_wire)
            return fail(w, 1009, "message over max_message");
        w->msg_wire += len;
    } else if (len > w->max_message - w->msg.len) {
        return fail(w, 1009, "message over max_message");
    }
    return 0;
}

/* The header is whole: its rules, then the frame's reading state. */
static int start_frame(pl_ws *w) {
    const unsigned char *h = w->header;
    w->fin = h[0] >> 7;
    w->rsv1 = (h[0] >> 6) & 1;
    w->opcode = h[0] & 0x0F;
    w->masked = h[1] >> 7;
    size_t at;
    uint64_t len = header_length(w, &at);
    if (w->masked) memcpy(w->key, h + at, 4);
    w->phase = 0;
    w->left = len;
    if (h[0] & 0x30) return fail(w, 1002, "reserved bit RSV2 or RSV3 set");
    if (len >> 63) return fail(w, 1002, "frame length with its top bit set");
    if (w->masked == w->client)
        return fail(w, 1002, w->client ? "masked frame from the server"
                                       : "unmasked frame from the client");
    w->state = READ_PAYLOAD;
    return w->opcode >= 8 ? check_control(w, len) : check_data(w, len);
}

/* Inflates in[0..n) into the message, checking the new text. */
static int inflate_into(pl_ws *w, const unsigned char *in, size_t n, int end) {
    size_t before = w->msg.len;
    enum pl_wsd_result r =
        end ? pl_wsd_inflate_end(w->deflate, &w->msg, w->max_message)
            : pl_wsd_inflate(w->deflate, (const char *)in, n, &w->msg, w->max_message);
    if (w->msg_opcode == PL_WS_TEXT &&
        utf8_feed(&w->utf8, (unsigned char *)w->msg.data + before, w->msg.len - before) != 0)
        return fail(w, 1007, "invalid UTF-8 in a text message");
    switch (r) {
    case PL_WSD_OK: return 0;
    case PL_WSD_CORRUPT: return fail(w, 1007, "invalid compressed data");
    case PL_WSD_TOO_BIG: return fail(w, 1009, "message over max_message once inflated");
    default: return fail(w, 1011, "out of memory inflating a message");
    }
}

static int take_compressed(pl_ws *w, const unsigned char *p, size_t n) {
    if (!w->masked) return inflate_into(w, p, n, 0);
    unsigned char chunk[4096];
    while (n > 0) {
        size_t k = n < sizeof chunk ? n : sizeof chunk;
        unmask(chunk, p, k, w->key, w->phase);
        w->phase += k;
        if (inflate_into(w, chunk, k, 0) != 0) return -1;
        p += k;
        n -= k;
    }
    return 0;
}

/* n more payload bytes of the current frame. */
static int take_payload(pl_ws *w, const unsigned char *p, size_t n) {
    if (w->opcode >= 8) {
        unsigned char *dst = w->control + w->control_len;
        if (w->masked) unmask(dst, p, n, w->key, w->phase);
        else memcpy(dst, p, n);
        w->control_len += n;
        w->phase += n;
        return 0;
    }
    if (w->msg_compressed) return take_compressed(w, p, n);
    if (pl_buf_reserve(&w->msg, n) != 0) return fail(w, 1011, "out of memory reading a message");
    unsigned char *dst = (unsigned char *)w->msg.data + w->msg.len;
    if (w->masked) unmask(dst, p, n, w->key, w->phase);
    else memcpy(dst, p, n);
    w->phase += n;
    w->msg.len += n;
    if (w->msg_opcode == PL_WS_TEXT && utf8_feed(&w->utf8, dst, n) != 0)
        return fail(w, 1007, "invalid UTF-8 in a text message");
    return 0;
}

/* A whole control frame: ping and pong as they are, a close checked. */
static int end_control(pl_ws *w, pl_ws_message *m) {
    m->opcode = w->opcode;
    m->data = (const char *)w->control;
    m->len = w->control_len;
    m->close_code = 0;
    if (w->opcode != PL_WS_CLOSE) return 1;
    if (w->control_len == 1) return fail(w, 1002, "close payload of one byte");
    if (w->control_len == 0) {
        w->close_code = -1;
    } else {
        int code = w->control[0] << 8 | w->control[1];
        if (!pl_ws_close_code_valid(code)) return fail(w, 1002, "close code not allowed");
        if (!pl_ws_utf8_valid((const char *)w->control + 2, w->control_len - 2))
            return fail(w, 1007, "close reason is not UTF-8");
        m->data += 2;
        m->len -= 2;
        w->close_code = code;
    }
    m->close_code = w->close_code;
    w->state = AFTER_CLOSE;
    return 1;
}

/* The current frame's payload is all read: 1 when it completes a message
 * (in *m), 0 when not, -1 on an error. */
static int end_frame(pl_ws *w, pl_ws_message *m) {
    w->state = READ_HEADER;
    if (w->opcode >= 8) return end_control(w, m);
    if (!w->fin) return 0;
    if (w->msg_compressed && inflate_into(w, NULL, 0, 1) != 0) return -1;
    if (w->msg_opcode == PL_WS_TEXT && w->utf8.need)
        return fail(w, 1007, "text message ends inside a UTF-8 sequence");
    m->opcode = w->msg_opcode;
    m->data = w->msg.data ? w->msg.data : "";
    m->len = w->msg.len;
    m->close_code = 0;
    w->msg_opcode = 0;
    w->delivered = 1;
    return 1;
}

/* A message whole in the input, unmasked and uncompressed (what a client
 * reads): handed out where it lies. 1, 0 when this frame is not one, -1. */
static int take_in_place(pl_ws *w, const unsigned char *p, size_t avail,
                         pl_ws_message *m) {
    if (w->masked || w->msg_compressed || !w->fin || w->opcode >= 8 ||
        w->opcode == PL_WS_CONTINUATION || w->left > avail)
        return 0;
    size_t n = (size_t)w->left;
    if (w->opcode == PL_WS_TEXT && !pl_ws_utf8_valid((const char *)p, n))
        return fail(w, 1007, "invalid UTF-8 in a text message");
    m->opcode = w->opcode;
    m->data = (const char *)p;
    m->len = n;
    m->close_code = 0;
    w->msg_opcode = 0;
    w->left = 0;
    w->state = READ_HEADER;
    return 1;
}

/* Empties the buffer of the message handed out last time. */
static void release_message(pl_ws *w) {
    w->delivered = 0;
    if (w->msg.cap > KEEP_BUFFER) pl_buf_free(&w->msg);
    w->msg.len = 0;
}

int pl_ws_decode(pl_ws *w, const char *data, size_t len, size_t *used,
                 pl_ws_message *m) {
    const unsigned char *p = (const unsigned char *)data;
    size_t at = 0;
    int r = 0;
    *used = 0;
    if (w->state == FAILED) return -1;
    if (w->delivered) release_message(w);
    if (w->state == AFTER_CLOSE) {
        *used = len;
        return 0;
    }
    for (;;) {
        if (w->state == READ_HEADER) {
            if (at == len || !take_header(w, p, len, &at)) break;
            if (start_frame(w) != 0) return -1;
            r = take_in_place(w, p + at, len - at, m);
            if (r != 0) {
                if (r > 0) at += m->len;
                break;
            }
        }
        size_t n = w->left < len - at ? (size_t)w->left : len - at;
        if (n > 0 && take_payload(w, p + at, n) != 0) return -1;
        at += n;
        w->left -= n;
        if (w->left > 0) break;
        r = end_frame(w, m);
        if (r != 0) break;
    }
    if (r < 0) return -1;
    *used = w->state == AFTER_CLOSE ? len : at;
    return r;
}

/* ---- the encoder ---- */

/* Appends one frame: first is FIN, RSV1 and the opcode. */
static int put_frame(pl_buf *out, unsigned char first, const char *payload,
                     size_t len, const unsigned char *mask) {
    if (pl_buf_reserve(out, PL_WS_MAX_HEADER + len) != 0) return -2;
    unsigned char *h = (unsigned char *)out->data + out->len;
    size_t n = 0;
    unsigned char masked = mask ? 0x80 : 0;
    h[n++] = first;
    if (len < 126) {
        h[n++] = masked | (unsigned char)len;
    } else if (len <= 0xFFFF) {
        h[n++] = masked | 126;
        h[n++] = (unsigned char)(len >> 8);
        h[n++] = (unsigned char)len;
    } else {
        h[n++] = masked | 127;
        for (int i = 7; i >= 0; i--) h[n++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    if (mask) {
        memcpy(h + n, mask, 4);
        n += 4;
    }
    if (len > 0) {
        if (mask) unmask(h + n, (const unsigned char *)payload, len, mask, 0);
        else memcpy(h + n, payload, len);
    }
    out->len += n + len;
    return 0;
}

int pl_ws_encode(pl_ws *w, int opcode, const char *payload, size_t len,
                 const unsigned char *mask, pl_buf *out) {
    if (opcode == PL_WS_PING || opcode == PL_WS_PONG) {
        if (len > PL_WS_MAX_CONTROL) return -1;
        return put_frame(out, 0x80 | (unsigned char)opcode, payload, len, mask);
    }
    if (opcode != PL_WS_TEXT && opcode != PL_WS_BINARY) return -1;
    if (!w->deflate) return put_frame(out, 0x80 | (unsigned char)opcode, payload, len, mask);
    w->packed.len = 0;
    if (pl_wsd_compress(w->deflate, payload, len, &w->packed) != PL_WSD_OK) return -2;
    int rc = put_frame(out, 0xC0 | (unsigned char)opcode, w->packed.data, w->packed.len, mask);
    if (w->packed.cap > KEEP_BUFFER) pl_buf_free(&w->packed);
    return rc;
}

int pl_ws_encode_close(pl_ws *w, int code, const char *reason, size_t len,
                       const unsigned char *mask, pl_buf *out) {
    (void)w;
    unsigned char payload[PL_WS_MAX_CONTROL];
    size_t n = 0;
    if (code >= 0) {
        if (len > PL_WS_MAX_CONTROL - 2) return -1;
        payload[0] = (unsigned char)(code >> 8);
        payload[1] = (unsigned char)code;
        if (len > 0) memcpy(payload + 2, reason, len);
        n = 2 + len;
    }
    return put_frame(out, 0x80 | PL_WS_CLOSE, (const char *)payload, n, mask);
}
