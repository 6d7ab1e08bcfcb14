/* frame.c: the RFC 6455 frame codec (see frame.h).
 *
 * Every message between actors travels as one websocket frame, so this file
 * sits between the transports (which fill a read buffer) and the MessagePack
 * codec (which decodes the payload). The parser looks at the connection's
 * read buffer in place: it never allocates, never copies and never reads past
 * `len`, and it can be called again after each read until the frame is whole.
 *
 * We wrote it instead of using Debian's libwslay because wslay's frame layer
 * pulls bytes through a recv callback into its own fixed 4 KiB buffer, so a
 * frame cannot be parsed in place in the connection's read buffer, and it has
 * no payload size limit. The parser here is ~150 lines and has a fuzz target
 * (tests/fuzz/fuzz_frame.c).
 *
 * Wire format of the header (RFC 6455 §5.2):
 *   byte 0: FIN(0x80) RSV1-3(0x70) opcode(0x0F)
 *   byte 1: MASK(0x80) 7-bit length; 126 = 16-bit length follows,
 *           127 = 64-bit length follows (both big-endian)
 *   then the 4-byte masking key when MASK is set, then the payload. */
#include "frame.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

#define FIN_BIT 0x80
#define RSV_BITS 0x70
#define OPCODE_BITS 0x0F
#define MASK_BIT 0x80
#define LEN7_BITS 0x7F
#define LEN7_MAX 125         /* largest length that fits in byte 1 */
#define LEN7_HAS_16BIT 126
#define LEN7_HAS_64BIT 127
#define MASK_KEY_SIZE 4
#define CONTROL_PAYLOAD_MAX 125 /* RFC 6455 §5.5 */

/* One message is one frame: reassembling pieces would need a second buffer
 * per connection and a second size limit, and no peer of ours fragments. */
#define FRAGMENTED "fragmented messages are not supported"

typedef struct frame_header {
    int opcode;
    int masked;
    uint64_t payload_len; /* as announced; may exceed SIZE_MAX on 32-bit */
    size_t size;          /* bytes before the payload, mask key included */
} frame_header;

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static int reject(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return 0;
}

static const char *control_name(int opcode) {
    switch (opcode) {
    case PL_OP_CLOSE: return "close";
    case PL_OP_PING: return "ping";
    default: return "pong";
    }
}

/* Byte 0 alone decides most rejections, so a bad frame is refused as soon as
 * its first byte arrives. Returns 1 when the byte is acceptable. */
static int first_byte_ok(uint8_t b0, char *err, size_t errlen) {
    int opcode = b0 & OPCODE_BITS;
    int fin = (b0 & FIN_BIT) != 0;
    if (b0 & RSV_BITS)
        /* no extension is ever negotiated, so RSV1-3 have no meaning */
        return reject(err, errlen, "reserved bits set");
    switch (opcode) {
    case PL_OP_TEXT:
    case PL_OP_BINARY:
        /* without FIN it is the first piece of a fragmented message */
        if (fin) return 1;
        return reject(err, errlen, "%s", FRAGMENTED);
    case PL_OP_CONTINUATION:
        return reject(err, errlen, "%s", FRAGMENTED);
    case PL_OP_CLOSE:
    case PL_OP_PING:
    case PL_OP_PONG:
        if (fin) return 1;
        return reject(err, errlen, "%s frame without FIN (control frames "
                      "cannot be fragmented)", control_name(opcode));
    default:
        return reject(err, errlen, "unknown opcode 0x%X", (unsigned)opcode);
    }
}

/* Decodes the header at buf[0..len). Returns 0 while some of it is missing. */
static int read_header(const uint8_t *buf, size_t len, frame_header *h) {
    if (len < 2) return 0;
    unsigned len7 = buf[1] & LEN7_BITS;
    size_t ext = len7 == LEN7_HAS_16BIT ? 2 : len7 == LEN7_HAS_64BIT ? 8 : 0;
    h->opcode = buf[0] & OPCODE_BITS;
    h->masked = (buf[1] & MASK_BIT) != 0;
    h->size = 2 + ext + (h->masked ? MASK_KEY_SIZE : 0);
    if (len < h->size) return 0;
    /* Non-minimal encodings (a 64-bit field holding 5) are accepted: they
     * cost nothing to decode and nothing is gained by refusing them. */
    h->payload_len = ext ? 0 : len7;
    for (size_t i = 0; i < ext; i++)
        h->payload_len = (h->payload_len << 8) | buf[2 + i];
    return 1;
}

/* Checks what the whole header says. Returns 1 when the frame may be read. */
static int header_ok(const frame_header *h, size_t max_payload, char *err,
                     size_t errlen) {
    uint64_t n = h->payload_len;
    if (n >> 63)
        return reject(err, errlen, "64-bit payload length has its top bit set");
    if (h->opcode & 0x8) { /* control frame; unknown ones are already gone */
        if (n > CONTROL_PAYLOAD_MAX)
            return reject(err, errlen, "%s frame of %" PRIu64 " bytes exceeds "
                          "the 125-byte control frame limit",
                          control_name(h->opcode), n);
        if (h->opcode == PL_OP_CLOSE && n == 1)
            /* a close payload is empty or starts with a 2-byte status code */
            return reject(err, errlen, "close frame with a 1-byte payload");
    }
    if (n > max_payload)
        return reject(err, errlen, "frame of %" PRIu64 " bytes exceeds the "
                      "limit of %zu bytes", n, max_payload);
    /* Only reachable with a limit near SIZE_MAX: header + payload must still
     * be a size the caller can hold and add. */
    if (n > SIZE_MAX - h->size)
        return reject(err, errlen, "frame of %" PRIu64 " bytes is too large "
                      "for this machine", n);
    return 1;
}

/* The key repeats every 4 bytes from the first payload byte (RFC 6455 §5.3). */
static void unmask(uint8_t *payload, size_t len, const uint8_t key[4]) {
    for (size_t i = 0; i < len; i++) payload[i] ^= key[i % MASK_KEY_SIZE];
}

/* The buffer is modified only when a masked frame is complete, so calling
 * again on a longer prefix is safe; a complete masked frame must not be
 * parsed twice (the second call would mask it again). *used is 0 unless the
 * header is complete and valid. */
pl_frame_status pl_frame_parse(uint8_t *buf, size_t len, size_t max_payload,
                               pl_frame *f, size_t *used, char *err,
                               size_t errlen) {
    frame_header h;
    *used = 0;
    if (len == 0) return PL_FRAME_INCOMPLETE;
    if (!first_byte_ok(buf[0], err, errlen)) return PL_FRAME_INVALID;
    if (!read_header(buf, len, &h)) return PL_FRAME_INCOMPLETE;
    if (!header_ok(&h, max_payload, err, errlen)) return PL_FRAME_INVALID;

    size_t payload_len = (size_t)h.payload_len; /* fits: header_ok checked */
    *used = h.size + payload_len;
    if (len < *used) return PL_FRAME_INCOMPLETE;

    uint8_t *payload = buf + h.size;
    if (h.masked) unmask(payload, payload_len, payload - MASK_KEY_SIZE);
    f->opcode = h.opcode;
    f->payload = payload;
    f->len = payload_len;
    return PL_FRAME_COMPLETE;
}

size_t pl_frame_header(uint8_t hdr[PL_FRAME_HEADER_MAX], int opcode,
                       size_t len) {
    hdr[0] = (uint8_t)(FIN_BIT | (opcode & OPCODE_BITS));
    if (len <= LEN7_MAX) {
        hdr[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xFFFF) {
        hdr[1] = LEN7_HAS_16BIT;
        hdr[2] = (uint8_t)(len >> 8);
        hdr[3] = (uint8_t)len;
        return 4;
    }
    uint64_t n = len;
    hdr[1] = LEN7_HAS_64BIT;
    for (int i = 0; i < 8; i++) hdr[2 + i] = (uint8_t)(n >> (56 - 8 * i));
    return 10;
}

int pl_frame_append(pl_buf *out, int opcode, const void *payload, size_t len) {
    uint8_t hdr[PL_FRAME_HEADER_MAX];
    size_t hdr_len = pl_frame_header(hdr, opcode, len);
    /* Reserve the whole frame first, so a failure appends nothing. */
    if (len > SIZE_MAX - hdr_len) return -1;
    if (pl_buf_reserve(out, hdr_len + len) != 0) return -1;
    pl_buf_append(out, hdr, hdr_len);    /* cannot fail: room is reserved */
    pl_buf_append(out, payload, len);
    return 0;
}
