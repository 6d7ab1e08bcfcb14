/* fuzz_frame.c: libFuzzer target for the frame parser (host/codec/frame.c).
 *
 * The input is a byte stream as a peer might send it; its first byte chooses
 * where the stream is split into two reads. The stream is parsed the way a
 * connection does it (parse, consume *used, repeat until INCOMPLETE or
 * INVALID) three times:
 *   1. all at once with a small limit, recording every frame and the outcome;
 *   2. in two reads with the same limit, which must give the same frames, the
 *      same outcome and the same error message (incremental parsing must not
 *      change any answer);
 *   3. all at once with the default limit and no error buffer.
 * Every buffer is malloc'd at exactly its length, so ASan catches overreads.
 * Each complete frame is re-encoded with pl_frame_append and must parse back
 * to the same frame. Broken invariants stop with __builtin_trap().
 *
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -Ihost/codec \
 *       host/codec/buf.c host/codec/frame.c tests/fuzz/fuzz_frame.c -o /tmp/fuzz_frame
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "frame.h"

#define SMALL_LIMIT 4096

#define REQUIRE(cond)                                                      \
    do {                                                                   \
        if (!(cond)) __builtin_trap();                                     \
    } while (0)

typedef struct seen_frame {
    int opcode;
    size_t offset; /* of the frame in the stream */
    size_t len;
    const uint8_t *payload; /* into the one-shot copy, unmasked */
} seen_frame;

typedef struct outcome {
    seen_frame *frames;
    size_t count;
    pl_frame_status last; /* INCOMPLETE or INVALID */
    size_t stop_offset;   /* where parsing stopped in the stream */
    char err[128];
} outcome;

static uint8_t *exact_copy(const uint8_t *p, size_t n) {
    uint8_t *c = malloc(n ? n : 1);
    REQUIRE(c != NULL);
    if (n) memcpy(c, p, n);
    return c;
}

/* What must hold for any answer of pl_frame_parse on buf[0..len). */
static void check_answer(pl_frame_status st, const uint8_t *buf, size_t len,
                         size_t max, const pl_frame *f, size_t used) {
    switch (st) {
    case PL_FRAME_COMPLETE:
        REQUIRE(used >= 2 && used <= len);
        REQUIRE(f->len <= max && f->len <= used - 2);
        REQUIRE(f->payload >= buf + 2 && f->payload + f->len == buf + used);
        REQUIRE(f->opcode == PL_OP_TEXT || f->opcode == PL_OP_BINARY ||
                f->opcode == PL_OP_CLOSE || f->opcode == PL_OP_PING ||
                f->opcode == PL_OP_PONG);
        if (f->opcode >= PL_OP_CLOSE) REQUIRE(f->len <= 125);
        if (f->opcode == PL_OP_CLOSE) REQUIRE(f->len != 1);
        break;
    case PL_FRAME_INCOMPLETE:
        /* *used is known once the header (at most 14 bytes) is in */
        if (used == 0) REQUIRE(len < PL_FRAME_HEADER_MAX);
        else REQUIRE(used > len && used <= max + PL_FRAME_HEADER_MAX);
        break;
    case PL_FRAME_INVALID:
        REQUIRE(used == 0);
        break;
    default:
        __builtin_trap();
    }
}

/* Re-encodes a parsed frame and parses it back: same opcode and payload. */
static void check_round_trip(const pl_frame *f, size_t max) {
    pl_buf out;
    pl_buf_init(&out, 0);
    REQUIRE(pl_frame_append(&out, f->opcode, f->payload, f->len) == 0);
    uint8_t *copy = exact_copy((const uint8_t *)out.data, out.len);
    pl_frame g;
    size_t used;
    REQUIRE(pl_frame_parse(copy, out.len, max, &g, &used, NULL, 0) ==
            PL_FRAME_COMPLETE);
    REQUIRE(used == out.len && g.opcode == f->opcode && g.len == f->len);
    REQUIRE(f->len == 0 || memcmp(g.payload, f->payload, f->len) == 0);
    /* the minimal header: 2, 4 or 10 bytes */
    size_t hdr = f->len <= 125 ? 2 : f->len <= 0xFFFF ? 4 : 10;
    REQUIRE(used == hdr + f->len);
    free(copy);
    pl_buf_free(&out);
}

/* Pass 1: the whole stream in one buffer, which the caller keeps (masked
 * payloads are unmasked in it) so pass 2 can compare against it. */
static void parse_all(uint8_t *buf, size_t len, size_t max, outcome *o,
                      char *err, size_t errlen) {
    size_t pos = 0;
    for (;;) {
        pl_frame f;
        size_t used = 7;
        pl_frame_status st =
            pl_frame_parse(buf + pos, len - pos, max, &f, &used, err, errlen);
        check_answer(st, buf + pos, len - pos, max, &f, used);
        if (st != PL_FRAME_COMPLETE) {
            if (o) o->last = st, o->stop_offset = pos;
            return;
        }
        check_round_trip(&f, max);
        if (o) {
            seen_frame *s = &o->frames[o->count++];
            s->opcode = f.opcode;
            s->offset = pos;
            s->len = f.len;
            s->payload = f.payload;
        }
        pos += used;
    }
}

/* Pass 2: the stream arrives as stream[0..split) then the rest; like a
 * connection, unparsed bytes move to a new buffer with the second read. */
static void parse_in_two_reads(const uint8_t *stream, size_t len, size_t split,
                               const outcome *want) {
    size_t base = 0; /* stream offset of buf[0] */
    size_t have = split;
    uint8_t *buf = exact_copy(stream, have);
    size_t pos = 0, count = 0;
    int all_read = split == len;
    for (;;) {
        pl_frame f;
        size_t used = 7;
        char err[128];
        pl_frame_status st = pl_frame_parse(buf + pos, have - pos, SMALL_LIMIT,
                                            &f, &used, err, sizeof err);
        check_answer(st, buf + pos, have - pos, SMALL_LIMIT, &f, used);
        if (st == PL_FRAME_COMPLETE) {
            REQUIRE(count < want->count);
            const seen_frame *s = &want->frames[count++];
            REQUIRE(s->offset == base + pos && s->opcode == f.opcode &&
                    s->len == f.len);
            REQUIRE(f.len == 0 || memcmp(s->payload, f.payload, f.len) == 0);
            pos += used;
            continue;
        }
        if (st == PL_FRAME_INCOMPLETE && !all_read) {
            size_t keep = have - pos, rest = len - split;
            uint8_t *next = malloc(keep + rest); /* rest > 0: not all read */
            REQUIRE(next != NULL);
            if (keep) memcpy(next, buf + pos, keep);
            memcpy(next + keep, stream + split, rest);
            free(buf);
            buf = next;
            base += pos;
            have = keep + rest;
            pos = 0;
            all_read = 1;
            continue;
        }
        /* an invalid prefix is invalid for the whole stream, and says why
         * in the same words */
        REQUIRE(count == want->count && st == want->last &&
                base + pos == want->stop_offset);
        if (st == PL_FRAME_INVALID) REQUIRE(strcmp(err, want->err) == 0);
        break;
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const uint8_t *stream = data + 1;
    size_t len = size - 1;
    size_t split = len ? data[0] % (len + 1) : 0;

    outcome o;
    memset(&o, 0, sizeof o);
    o.frames = malloc((len / 2 + 1) * sizeof *o.frames); /* frames >= 2 B */
    REQUIRE(o.frames != NULL);
    uint8_t *once = exact_copy(stream, len);
    parse_all(once, len, SMALL_LIMIT, &o, o.err, sizeof o.err);
    parse_in_two_reads(stream, len, split, &o);
    free(once);
    free(o.frames);

    uint8_t *again = exact_copy(stream, len);
    parse_all(again, len, PL_FRAME_MAX_DEFAULT, NULL, NULL, 0);
    free(again);
    return 0;
}
