/* test_frame.c: unit tests for the frame codec (host/codec/frame.c).
 *
 * No framework: CHECK counts passes and failures and prints each failure with
 * its file:line. Prefixes are copied into malloc'd buffers of exactly their
 * length, so under ASan or valgrind any read past `len` is caught.
 *
 *   gcc -std=c11 -Wall -Wextra -Werror -g -fsanitize=address,undefined \
 *       -Ihost/codec host/codec/buf.c host/codec/frame.c tests/c/test_frame.c -o /tmp/test_frame
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "frame.h"

#include "check.h"

/* ---- helpers ---- */

static uint8_t *copy_of(const void *p, size_t n) {
    uint8_t *c = malloc(n ? n : 1);
    if (!c) abort();
    if (n) memcpy(c, p, n);
    return c;
}

static void fill_pattern(uint8_t *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 31 + seed);
}

/* Builds a frame by hand, with any length encoding and an optional mask, so
 * tests can produce what pl_frame_append never would. len_bytes is 0 (7-bit),
 * 2 or 8. Returns the frame's size. */
static size_t build_frame(uint8_t *out, uint8_t byte0, int len_bytes,
                          uint64_t len, const uint8_t *mask_key,
                          const uint8_t *payload, size_t payload_len) {
    size_t n = 0;
    out[n++] = byte0;
    uint8_t mask_bit = mask_key ? 0x80 : 0;
    if (len_bytes == 0) {
        out[n++] = (uint8_t)(mask_bit | len);
    } else {
        out[n++] = (uint8_t)(mask_bit | (len_bytes == 2 ? 126 : 127));
        for (int i = len_bytes - 1; i >= 0; i--)
            out[n++] = (uint8_t)(len >> (8 * i));
    }
    if (mask_key) {
        memcpy(out + n, mask_key, 4);
        n += 4;
    }
    for (size_t i = 0; i < payload_len; i++)
        out[n + i] = mask_key ? (uint8_t)(payload[i] ^ mask_key[i % 4])
                              : payload[i];
    return n + payload_len;
}

/* Parses a private copy of bytes[0..n) and reports whether it was invalid
 * with a message containing `want`; *used must be 0 then. */
static int invalid_with(const void *bytes, size_t n, size_t max,
                        const char *want) {
    uint8_t *b = copy_of(bytes, n);
    pl_frame f;
    size_t used = 99;
    char err[128] = "";
    pl_frame_status st = pl_frame_parse(b, n, max, &f, &used, err, sizeof err);
    free(b);
    if (st != PL_FRAME_INVALID || used != 0 || !strstr(err, want)) {
        fprintf(stderr, "  got status %d, used %zu, err \"%s\"; wanted "
                "\"%s\"\n", (int)st, used, err, want);
        return 0;
    }
    return 1;
}

/* Parses a private copy and checks it is one complete frame of opcode/payload
 * taking all n bytes. */
static int complete_with(const void *bytes, size_t n, size_t max, int opcode,
                         const void *payload, size_t len) {
    uint8_t *b = copy_of(bytes, n);
    pl_frame f;
    size_t used = 0;
    char err[128] = "";
    pl_frame_status st = pl_frame_parse(b, n, max, &f, &used, err, sizeof err);
    int ok = st == PL_FRAME_COMPLETE && used == n && f.opcode == opcode &&
             f.len == len && f.payload >= b && f.payload + f.len == b + n &&
             (len == 0 || memcmp(f.payload, payload, len) == 0);
    if (!ok)
        fprintf(stderr, "  got status %d, used %zu/%zu, err \"%s\"\n",
                (int)st, used, n, err);
    free(b);
    return ok;
}

/* Feeds every prefix 0..n of frame[0..n) in its own exact-size buffer:
 * INCOMPLETE (buffer untouched) until all n bytes are there, *used 0 before
 * the header is complete and n after, then COMPLETE with the payload. */
static void check_every_split(const uint8_t *frame, size_t n, size_t hdr_size,
                              int opcode, const uint8_t *payload, size_t len) {
    for (size_t k = 0; k < n; k++) {
        uint8_t *b = copy_of(frame, k);
        pl_frame f;
        size_t used = 99;
        char err[128];
        pl_frame_status st =
            pl_frame_parse(b, k, PL_FRAME_MAX_DEFAULT, &f, &used, err,
                           sizeof err);
        CHECK(st == PL_FRAME_INCOMPLETE);
        CHECK(used == (k >= hdr_size ? n : 0));
        CHECK(k == 0 || memcmp(b, frame, k) == 0);
        free(b);
    }
    CHECK(complete_with(frame, n, PL_FRAME_MAX_DEFAULT, opcode, payload, len));
}

/* ---- tests ---- */

static void test_header_sizes_and_round_trip(void) {
    static const struct {
        size_t len, hdr_size;
    } cases[] = {{0, 2},     {1, 2},      {125, 2},    {126, 4},
                 {65535, 4}, {65536, 10}, {(1u << 20) + 7, 10}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = cases[i].len;
        uint8_t hdr[PL_FRAME_HEADER_MAX];
        CHECK(pl_frame_header(hdr, PL_OP_BINARY, len) == cases[i].hdr_size);
        CHECK(hdr[0] == 0x82);
        CHECK((hdr[1] & 0x80) == 0); /* never masked */

        uint8_t *payload = malloc(len ? len : 1);
        if (!payload) abort();
        fill_pattern(payload, len, (unsigned)i);
        pl_buf out;
        pl_buf_init(&out, 0);
        CHECK(pl_frame_append(&out, PL_OP_BINARY, payload, len) == 0);
        CHECK(out.len == cases[i].hdr_size + len);
        CHECK(memcmp(out.data, hdr, cases[i].hdr_size) == 0);
        CHECK(complete_with(out.data, out.len, PL_FRAME_MAX_DEFAULT,
                            PL_OP_BINARY, payload, len));
        pl_buf_free(&out);
        free(payload);
    }

    /* the exact bytes of each length encoding */
    uint8_t h[PL_FRAME_HEADER_MAX];
    CHECK(pl_frame_header(h, PL_OP_TEXT, 125) == 2 && h[0] == 0x81 &&
          h[1] == 125);
    CHECK(pl_frame_header(h, PL_OP_BINARY, 126) == 4 && h[1] == 126 &&
          h[2] == 0 && h[3] == 126);
    CHECK(pl_frame_header(h, PL_OP_BINARY, 65535) == 4 && h[2] == 0xFF &&
          h[3] == 0xFF);
    static const uint8_t want64[10] = {0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0};
    CHECK(pl_frame_header(h, PL_OP_BINARY, 65536) == 10 &&
          memcmp(h, want64, 10) == 0);
}

static void test_rfc_examples(void) {
    /* RFC 6455 §5.7: "Hello", unmasked and masked */
    static const uint8_t plain[] = {0x81, 0x05, 'H', 'e', 'l', 'l', 'o'};
    static const uint8_t masked[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                     0x7f, 0x9f, 0x4d, 0x51, 0x58};
    CHECK(complete_with(plain, sizeof plain, PL_FRAME_MAX_DEFAULT, PL_OP_TEXT,
                        "Hello", 5));
    CHECK(complete_with(masked, sizeof masked, PL_FRAME_MAX_DEFAULT,
                        PL_OP_TEXT, "Hello", 5));

    /* the payload is unmasked in place, right after the mask key */
    uint8_t b[sizeof masked];
    memcpy(b, masked, sizeof b);
    pl_frame f;
    size_t used;
    CHECK(pl_frame_parse(b, sizeof b, 100, &f, &used, NULL, 0) ==
          PL_FRAME_COMPLETE);
    CHECK(f.payload == b + 6 && memcmp(b + 6, "Hello", 5) == 0);
}

static void test_byte_splits(void) {
    static const uint8_t key[4] = {0xA1, 0x00, 0x5C, 0xFF};
    uint8_t payload[300], frame[400];
    fill_pattern(payload, sizeof payload, 7);
    size_t n;

    n = build_frame(frame, 0x82, 0, 0, NULL, NULL, 0);
    check_every_split(frame, n, 2, PL_OP_BINARY, NULL, 0);
    n = build_frame(frame, 0x82, 0, 5, NULL, payload, 5);
    check_every_split(frame, n, 2, PL_OP_BINARY, payload, 5);
    n = build_frame(frame, 0x81, 0, 5, key, payload, 5);
    check_every_split(frame, n, 6, PL_OP_TEXT, payload, 5);
    n = build_frame(frame, 0x82, 2, 300, NULL, payload, 300);
    check_every_split(frame, n, 4, PL_OP_BINARY, payload, 300);
    n = build_frame(frame, 0x82, 2, 300, key, payload, 300);
    check_every_split(frame, n, 8, PL_OP_BINARY, payload, 300);
    /* non-minimal: a 64-bit length field holding 3, masked */
    n = build_frame(frame, 0x82, 8, 3, key, payload, 3);
    check_every_split(frame, n, 14, PL_OP_BINARY, payload, 3);
    static const uint8_t close_payload[] = {0x03, 0xE8, 'b', 'y', 'e'};
    n = build_frame(frame, 0x88, 0, 5, key, close_payload, 5);
    check_every_split(frame, n, 6, PL_OP_CLOSE, close_payload, 5);
}

static void test_back_to_back(void) {
    pl_buf in;
    pl_buf_init(&in, 0);
    CHECK(pl_frame_append(&in, PL_OP_BINARY, "first", 5) == 0);
    CHECK(pl_frame_append(&in, PL_OP_TEXT, "second", 6) == 0);
    CHECK(pl_frame_append(&in, PL_OP_BINARY, "third", 5) == 0);
    in.len -= 2; /* the third frame has not all arrived */

    pl_frame f;
    size_t used;
    uint8_t *p = (uint8_t *)in.data;
    size_t left = in.len;
    CHECK(pl_frame_parse(p, left, 1000, &f, &used, NULL, 0) ==
          PL_FRAME_COMPLETE);
    CHECK(used == 7 && f.opcode == PL_OP_BINARY && f.len == 5 &&
          memcmp(f.payload, "first", 5) == 0);
    p += used, left -= used;
    CHECK(pl_frame_parse(p, left, 1000, &f, &used, NULL, 0) ==
          PL_FRAME_COMPLETE);
    CHECK(used == 8 && f.opcode == PL_OP_TEXT && f.len == 6 &&
          memcmp(f.payload, "second", 6) == 0);
    p += used, left -= used;
    CHECK(pl_frame_parse(p, left, 1000, &f, &used, NULL, 0) ==
          PL_FRAME_INCOMPLETE);
    CHECK(used == 7 && left == 5);

    /* the same through pl_buf_consume, as a connection would do it */
    in.len += 2;
    pl_buf_consume(&in, 15);
    CHECK(pl_frame_parse((uint8_t *)in.data, in.len, 1000, &f, &used, NULL,
                         0) == PL_FRAME_COMPLETE);
    CHECK(used == in.len && memcmp(f.payload, "third", 5) == 0);
    pl_buf_free(&in);
}

static void test_invalid(void) {
    /* byte 0 problems are caught with byte 0 alone */
    static const uint8_t rsv1[] = {0xC2}, rsv2[] = {0xA2}, rsv3[] = {0x92};
    CHECK(invalid_with(rsv1, 1, 100, "reserved bits set"));
    CHECK(invalid_with(rsv2, 1, 100, "reserved bits set"));
    CHECK(invalid_with(rsv3, 1, 100, "reserved bits set"));
    static const uint8_t rsv_full[] = {0xC2, 0x01, 'x'};
    CHECK(invalid_with(rsv_full, 3, 100, "reserved bits set"));

    static const int unknown[] = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        uint8_t b0 = (uint8_t)(0x80 | unknown[i]);
        char want[32];
        snprintf(want, sizeof want, "unknown opcode 0x%X", unknown[i]);
        CHECK(invalid_with(&b0, 1, 100, want));
    }

    static const uint8_t cont_fin[] = {0x80, 0x00}, cont[] = {0x00, 0x00};
    static const uint8_t bin_nofin[] = {0x02, 0x01, 'x'};
    static const uint8_t text_nofin[] = {0x01, 0x00};
    CHECK(invalid_with(cont_fin, 2, 100, "fragmented messages are not "
                                         "supported"));
    CHECK(invalid_with(cont, 1, 100, "fragmented messages are not supported"));
    CHECK(invalid_with(bin_nofin, 3, 100, "fragmented messages"));
    CHECK(invalid_with(text_nofin, 1, 100, "fragmented messages"));

    static const uint8_t close_nofin[] = {0x08}, ping_nofin[] = {0x09},
                         pong_nofin[] = {0x0A, 0x00};
    CHECK(invalid_with(close_nofin, 1, 100, "close frame without FIN"));
    CHECK(invalid_with(ping_nofin, 1, 100, "ping frame without FIN"));
    CHECK(invalid_with(pong_nofin, 2, 100, "pong frame without FIN"));

    /* control frames: at most 125 bytes, however the length is written */
    uint8_t frame[300], payload[200];
    fill_pattern(payload, sizeof payload, 1);
    size_t n = build_frame(frame, 0x89, 2, 126, NULL, payload, 126);
    CHECK(invalid_with(frame, 4, 1000, "ping frame of 126 bytes exceeds the "
                                       "125-byte control frame limit"));
    CHECK(invalid_with(frame, n, 1000, "ping frame of 126 bytes"));
    n = build_frame(frame, 0x8A, 8, 1u << 20, NULL, NULL, 0);
    CHECK(invalid_with(frame, n, PL_FRAME_MAX_DEFAULT, "pong frame of 1048576"
                                                       " bytes exceeds"));
    n = build_frame(frame, 0x89, 0, 125, NULL, payload, 125);
    CHECK(complete_with(frame, n, 1000, PL_OP_PING, payload, 125));
    n = build_frame(frame, 0x89, 2, 5, NULL, payload, 5); /* non-minimal */
    CHECK(complete_with(frame, n, 1000, PL_OP_PING, payload, 5));

    /* a close payload is empty or starts with a 2-byte code */
    static const uint8_t close1[] = {0x88, 0x01, 0x03};
    static const uint8_t close1_masked[] = {0x88, 0x81, 1, 2, 3, 4, 0x03};
    static const uint8_t close0[] = {0x88, 0x00};
    static const uint8_t close2[] = {0x88, 0x02, 0x03, 0xE8};
    CHECK(invalid_with(close1, 2, 100, "close frame with a 1-byte payload"));
    CHECK(invalid_with(close1, 3, 100, "close frame with a 1-byte payload"));
    CHECK(invalid_with(close1_masked, 7, 100, "1-byte payload"));
    CHECK(complete_with(close0, 2, 100, PL_OP_CLOSE, NULL, 0));
    CHECK(complete_with(close2, 4, 100, PL_OP_CLOSE, "\x03\xE8", 2));

    /* the top bit of a 64-bit length must be clear, whatever the limit */
    n = build_frame(frame, 0x82, 8, UINT64_C(1) << 63, NULL, NULL, 0);
    CHECK(invalid_with(frame, n, SIZE_MAX, "top bit"));
    n = build_frame(frame, 0x82, 8, UINT64_MAX, NULL, NULL, 0);
    CHECK(invalid_with(frame, n, SIZE_MAX, "top bit"));
    n = build_frame(frame, 0x82, 8, UINT64_MAX, (const uint8_t *)"abcd",
                    NULL, 0);
    CHECK(invalid_with(frame, n, SIZE_MAX, "top bit"));
    /* ... and is judged only when the whole header is there */
    uint8_t *b = copy_of(frame, 10);
    pl_frame f;
    size_t used = 99;
    CHECK(pl_frame_parse(b, 10, SIZE_MAX, &f, &used, NULL, 0) ==
          PL_FRAME_INCOMPLETE);
    CHECK(used == 0);
    free(b);
}

static void test_error_buffer(void) {
    static const uint8_t bad[] = {0x83};
    pl_frame f;
    size_t used;
    uint8_t b[1];
    memcpy(b, bad, 1);
    /* no room, or a little room: no write past errlen */
    CHECK(pl_frame_parse(b, 1, 100, &f, &used, NULL, 0) == PL_FRAME_INVALID);
    char small[6];
    memset(small, 'z', sizeof small);
    CHECK(pl_frame_parse(b, 1, 100, &f, &used, small, 5) == PL_FRAME_INVALID);
    CHECK(strcmp(small, "unkn") == 0 && small[5] == 'z');
    char one = 'z';
    CHECK(pl_frame_parse(b, 1, 100, &f, &used, &one, 1) == PL_FRAME_INVALID);
    CHECK(one == '\0');
}

static void test_size_limit(void) {
    uint8_t frame[1100], payload[1001];
    fill_pattern(payload, sizeof payload, 3);

    size_t n = build_frame(frame, 0x82, 2, 1000, NULL, payload, 1000);
    CHECK(complete_with(frame, n, 1000, PL_OP_BINARY, payload, 1000));
    n = build_frame(frame, 0x82, 2, 1001, NULL, payload, 1001);
    CHECK(invalid_with(frame, n, 1000, "frame of 1001 bytes exceeds the limit "
                                       "of 1000 bytes"));
    /* refused before any payload arrives */
    CHECK(invalid_with(frame, 4, 1000, "frame of 1001 bytes exceeds the limit "
                                       "of 1000 bytes"));
    n = build_frame(frame, 0x82, 0, 101, (const uint8_t *)"abcd", payload,
                    101);
    CHECK(invalid_with(frame, 6, 100, "frame of 101 bytes exceeds the limit "
                                      "of 100 bytes"));

    /* a limit of 0 allows empty frames only */
    n = build_frame(frame, 0x82, 0, 0, NULL, NULL, 0);
    CHECK(complete_with(frame, n, 0, PL_OP_BINARY, NULL, 0));
    n = build_frame(frame, 0x82, 0, 1, NULL, payload, 1);
    CHECK(invalid_with(frame, n, 0, "frame of 1 bytes exceeds the limit of "
                                    "0 bytes"));

    /* the default limit, judged from the header alone */
    uint8_t hdr[10];
    pl_frame f;
    size_t used;
    n = build_frame(hdr, 0x82, 8, PL_FRAME_MAX_DEFAULT, NULL, NULL, 0);
    CHECK(pl_frame_parse(hdr, n, PL_FRAME_MAX_DEFAULT, &f, &used, NULL, 0) ==
          PL_FRAME_INCOMPLETE);
    CHECK(used == 10 + PL_FRAME_MAX_DEFAULT);
    n = build_frame(hdr, 0x82, 8, PL_FRAME_MAX_DEFAULT + 1, NULL, NULL, 0);
    CHECK(invalid_with(hdr, n, PL_FRAME_MAX_DEFAULT, "frame of 67108865 bytes "
                       "exceeds the limit of 67108864 bytes"));
    n = build_frame(hdr, 0x82, 8, 70000000, NULL, NULL, 0);
    CHECK(invalid_with(hdr, n, PL_FRAME_MAX_DEFAULT, "frame of 70000000 bytes "
                       "exceeds the limit of 67108864 bytes"));

    /* with no practical limit, a huge announced frame just waits for bytes */
    n = build_frame(hdr, 0x82, 8, INT64_MAX, NULL, NULL, 0);
    if (sizeof(size_t) >= 8) {
        CHECK(pl_frame_parse(hdr, n, SIZE_MAX, &f, &used, NULL, 0) ==
              PL_FRAME_INCOMPLETE);
        CHECK(used == (size_t)INT64_MAX + 10);
    } else { /* more than a 32-bit size_t can hold: over any limit */
        CHECK(invalid_with(hdr, n, SIZE_MAX, "exceeds the limit"));
    }
}

static void test_control_frames(void) {
    static const uint8_t close_payload[] = {0x03, 0xE8, 'b', 'y', 'e'};
    pl_buf out;
    pl_buf_init(&out, 0);
    CHECK(pl_frame_append(&out, PL_OP_CLOSE, close_payload, 5) == 0);
    CHECK(out.len == 7 && (uint8_t)out.data[0] == 0x88);
    CHECK(complete_with(out.data, out.len, 100, PL_OP_CLOSE, close_payload,
                        5));
    out.len = 0;
    CHECK(pl_frame_append(&out, PL_OP_PING, "hi", 2) == 0);
    CHECK((uint8_t)out.data[0] == 0x89);
    CHECK(complete_with(out.data, out.len, 100, PL_OP_PING, "hi", 2));
    out.len = 0;
    CHECK(pl_frame_append(&out, PL_OP_PONG, NULL, 0) == 0);
    CHECK(out.len == 2 && (uint8_t)out.data[0] == 0x8A);
    CHECK(complete_with(out.data, out.len, 100, PL_OP_PONG, NULL, 0));
    pl_buf_free(&out);

    /* masked control frames, as a browser would send them */
    static const uint8_t key[4] = {9, 8, 7, 6};
    uint8_t frame[64];
    size_t n = build_frame(frame, 0x88, 0, 5, key, close_payload, 5);
    CHECK(complete_with(frame, n, 100, PL_OP_CLOSE, close_payload, 5));
    n = build_frame(frame, 0x89, 0, 4, key, (const uint8_t *)"ping", 4);
    CHECK(complete_with(frame, n, 100, PL_OP_PING, "ping", 4));
}

static void test_append_limit(void) {
    uint8_t payload[200];
    fill_pattern(payload, sizeof payload, 5);
    pl_buf out;

    /* exactly fits, then nothing more fits and nothing changes */
    pl_buf_init(&out, 10);
    CHECK(pl_frame_append(&out, PL_OP_BINARY, payload, 8) == 0);
    CHECK(out.len == 10);
    CHECK(pl_frame_append(&out, PL_OP_BINARY, NULL, 0) == -1);
    CHECK(out.len == 10);
    CHECK(complete_with(out.data, out.len, 100, PL_OP_BINARY, payload, 8));
    pl_buf_free(&out);

    /* one byte too many: the header is not appended alone */
    pl_buf_init(&out, 10);
    CHECK(pl_frame_append(&out, PL_OP_BINARY, payload, 9) == -1);
    CHECK(out.len == 0);
    pl_buf_free(&out);

    /* a 16-bit header that would fit while its payload does not */
    pl_buf_init(&out, 129);
    CHECK(pl_frame_append(&out, PL_OP_BINARY, payload, 2) == 0);
    CHECK(pl_frame_append(&out, PL_OP_BINARY, payload, 126) == -1);
    CHECK(out.len == 4);
    CHECK(complete_with(out.data, out.len, 100, PL_OP_BINARY, payload, 2));
    pl_buf_free(&out);

    /* header + length would overflow size_t */
    pl_buf_init(&out, 1000);
    CHECK(pl_frame_append(&out, PL_OP_BINARY, payload, SIZE_MAX) == -1);
    CHECK(pl_frame_append(&out, PL_OP_BINARY, payload, SIZE_MAX - 9) == -1);
    CHECK(pl_frame_append(&out, PL_OP_BINARY, payload, SIZE_MAX - 10) == -1);
    CHECK(out.len == 0);
    pl_buf_free(&out);
}

int main(void) {
    test_header_sizes_and_round_trip();
    test_rfc_examples();
    test_byte_splits();
    test_back_to_back();
    test_invalid();
    test_error_buffer();
    test_size_limit();
    test_control_frames();
    test_append_limit();
    return CHECK_REPORT("frame");
}
