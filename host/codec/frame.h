/* frame.h: RFC 6455 frames, the envelope of every mailbox message (docs/API.md §3).
 *
 * A message is one frame: FIN set, opcode 2 (binary), unmasked between actors.
 * The parser works in place on the caller's read buffer, so bytes may arrive
 * split anywhere: it answers "incomplete" until a whole frame is there, and
 * rejects a frame whose header announces more than the size limit before any
 * of its payload is buffered. */
#ifndef PULSAR_FRAME_H
#define PULSAR_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

enum pl_opcode {
    PL_OP_CONTINUATION = 0x0,
    PL_OP_TEXT = 0x1,
    PL_OP_BINARY = 0x2,
    PL_OP_CLOSE = 0x8,
    PL_OP_PING = 0x9,
    PL_OP_PONG = 0xA,
};

#define PL_FRAME_MAX_DEFAULT ((size_t)64 << 20) /* 64 MiB of payload */
#define PL_FRAME_HEADER_MAX 14

typedef struct pl_frame {
    int opcode;
    uint8_t *payload; /* points into the parsed buffer */
    size_t len;
} pl_frame;

typedef enum pl_frame_status {
    PL_FRAME_COMPLETE,   /* *f holds a frame; *used bytes of buf are its own */
    PL_FRAME_INCOMPLETE, /* read more; *used is the whole frame's size once the
                            header is complete, 0 before */
    PL_FRAME_INVALID,    /* err names the problem; close the connection */
} pl_frame_status;

/* Parses the frame at the start of buf[0..len). A masked frame is accepted
 * and unmasked in place. Fragmented data frames, reserved bits, unknown
 * opcodes, malformed control frames and payloads over max_payload are
 * invalid. */
pl_frame_status pl_frame_parse(uint8_t *buf, size_t len, size_t max_payload,
                               pl_frame *f, size_t *used, char *err,
                               size_t errlen);

/* Writes the header of an unmasked FIN frame carrying len bytes; returns its
 * size (2, 4 or 10). */
size_t pl_frame_header(uint8_t hdr[PL_FRAME_HEADER_MAX], int opcode,
                       size_t len);

/* Appends a whole unmasked FIN frame to out. 0, or -1 when out cannot grow. */
int pl_frame_append(pl_buf *out, int opcode, const void *payload, size_t len);

#endif
