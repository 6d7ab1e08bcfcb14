/* test_ws.c: unit tests for the WebSocket codec (host/codec/ws.c,
 * wsdeflate.c).
 *
 * Each stream is decoded the way a connection would see it: whole, split at
 * every position, and byte by byte, every feed a malloc'd copy of exactly
 * its length (ASan catches a read past it). A run's outcome, the messages
 * and the error, is printed into a string, so "the same whatever the split"
 * is one comparison. Frames are built by hand here (frame()), so that bad
 * ones can be, with a fixed mask key; the encoder is checked against the
 * decoder and against RFC 6455's and RFC 7692's examples.
 *
 *   gcc -std=c11 -Wall -Wextra -Werror -g -fsanitize=address,undefined \
 *       -Ihost/codec host/codec/buf.c host/codec/ws.c host/codec/wsdeflate.c \
 *       tests/c/test_ws.c -lz -o /tmp/test_ws
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

#include "check.h"

/* ---- helpers ---- */

typedef struct text {
    char *s;
    size_t len, cap;
} text;

static void put(text *t, const void *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->s = realloc(t->s, t->cap);
        if (!t->s) abort();
    }
    if (n) memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

static void puts_(text *t, const char *s) { put(t, s, strlen(s)); }

static void putn(text *t, long n) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%ld", n);
    puts_(t, tmp);
}

static const unsigned char key[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Appends one frame: first byte as given (FIN, RSV, opcode), masked with
 * `key` when masked. */
static void frame(text *t, unsigned first, const void *payload, size_t len,
                  int masked) {
    unsigned char h[14];
    size_t n = 0;
    h[n++] = (unsigned char)first;
    unsigned char m = masked ? 0x80 : 0;
    if (len < 126) {
        h[n++] = m | (unsigned char)len;
    } else if (len <= 0xFFFF) {
        h[n++] = m | 126;
        h[n++] = (unsigned char)(len >> 8);
        h[n++] = (unsigned char)len;
    } else {
        h[n++] = m | 127;
        for (int i = 7; i >= 0; i--) h[n++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    if (masked) {
        memcpy(h + n, key, 4);
        n += 4;
    }
    put(t, h, n);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = ((const unsigned char *)payload)[i];
        if (masked) c ^= key[i % 4];
        put(t, &c, 1);
    }
}

/* A client's frame (masked). */
static void cframe(text *t, unsigned first, const char *payload) {
    frame(t, first, payload, strlen(payload), 1);
}

static const char *kind_name(int opcode) {
    switch (opcode) {
    case PL_WS_TEXT: return "text";
    case PL_WS_BINARY: return "binary";
    case PL_WS_CLOSE: return "close";
    case PL_WS_PING: return "ping";
    case PL_WS_PONG: return "pong";
    default: return "?";
    }
}

/* Feeds a malloc'd copy of s[0..n), recording each message. */
static void feed(pl_ws *w, const char *s, size_t n, text *out) {
    char *c = malloc(n ? n : 1);
    if (!c) abort();
    memcpy(c, s, n);
    size_t at = 0;
    for (;;) {
        size_t used;
        pl_ws_message m;
        int rc = pl_ws_decode(w, c + at, n - at, &used, &m);
        at += used;
        if (rc <= 0) break;
        puts_(out, kind_name(m.opcode));
        if (m.opcode == PL_WS_CLOSE) {
            puts_(out, "#");
            putn(out, m.close_code);
        }
        puts_(out, "[");
        put(out, m.data, m.len);
        puts_(out, "]");
    }
    free(c);
}

static void finish(pl_ws *w, text *out) {
    const char *reason;
    int code = pl_ws_error(w, &reason);
    if (code) {
        puts_(out, "!");
        putn(out, code);
        puts_(out, " ");
        puts_(out, reason);
    }
}

static pl_ws *server(size_t max_message, const pl_ws_deflate_params *d) {
    pl_ws_config cfg = {.client = 0, .max_message = max_message, .deflate = d};
    pl_ws *w = pl_ws_new(&cfg);
    if (!w) abort();
    return w;
}

static pl_ws *client(size_t max_message, const pl_ws_deflate_params *d) {
    pl_ws_config cfg = {.client = 1, .max_message = max_message, .deflate = d};
    pl_ws *w = pl_ws_new(&cfg);
    if (!w) abort();
    return w;
}

typedef pl_ws *(*make_fn)(size_t, const pl_ws_deflate_params *);

/* Decodes s whole, at every split and byte by byte; all must agree. Returns
 * the whole run's outcome (the caller frees it). */
static char *decode_with(make_fn make, const text *s, size_t max,
                         const pl_ws_deflate_params *d) {
    text whole = {0};
    pl_ws *w = make(max, d);
    feed(w, s->s, s->len, &whole);
    finish(w, &whole);
    pl_ws_free(w);
    int same = 1;
    for (size_t cut = 0; cut <= s->len && same; cut++) {
        text split = {0};
        w = make(max, d);
        feed(w, s->s, cut, &split);
        feed(w, s->s + cut, s->len - cut, &split);
        finish(w, &split);
        pl_ws_free(w);
        same = strcmp(whole.s ? whole.s : "", split.s ? split.s : "") == 0;
        if (!same) fprintf(stderr, "split at %zu: %s\n  vs whole: %s\n", cut, split.s, whole.s);
        free(split.s);
    }
    text bytes = {0};
    w = make(max, d);
    for (size_t i = 0; i < s->len; i++) feed(w, s->s + i, 1, &bytes);
    finish(w, &bytes);
    pl_ws_free(w);
    if (same) same = strcmp(whole.s ? whole.s : "", bytes.s ? bytes.s : "") == 0;
    CHECK(same);
    free(bytes.s);
    if (!whole.s) put(&whole, "", 0);
    return whole.s;
}

static char *decode(const text *s) {
    return decode_with(server, s, PL_WS_MAX_MESSAGE_DEFAULT, NULL);
}

/* The server's outcome for s is `want`; frees s. */
static void expect(text *s, const char *want) {
    char *got = decode(s);
    if (strcmp(got, want) != 0) fprintf(stderr, "got  %s\nwant %s\n", got, want);
    CHECK(strcmp(got, want) == 0);
    free(got);
    free(s->s);
    s->s = NULL;
    s->len = s->cap = 0;
}

/* ---- frames and messages ---- */

static void test_rfc_examples(void) {
    /* RFC 6455 §5.7: a masked "Hello", and an unmasked one to a client */
    static const unsigned char masked[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f,
                                           0x9f, 0x4d, 0x51, 0x58};
    text s = {0};
    put(&s, masked, sizeof masked);
    expect(&s, "text[Hello]");

    static const unsigned char plain[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    put(&s, plain, sizeof plain);
    char *got = decode_with(client, &s, PL_WS_MAX_MESSAGE_DEFAULT, NULL);
    CHECK(strcmp(got, "text[Hello]") == 0);
    free(got);
    free(s.s);
}

static void test_fragments_and_controls(void) {
    text s = {0};
    cframe(&s, 0x01, "Hel");
    cframe(&s, 0x89, "are you there");
    cframe(&s, 0x00, "l");
    cframe(&s, 0x8A, "");
    cframe(&s, 0x80, "o");
    cframe(&s, 0x82, "");
    frame(&s, 0x82, "\x00\xff", 2, 1);
    expect(&s, "ping[are you there]pong[]text[Hello]binary[]binary[\x00\xff]");
}

static void test_protocol_errors(void) {
    text s = {0};
    frame(&s, 0x81, "hi", 2, 0);
    expect(&s, "!1002 unmasked frame from the client");
    cframe(&s, 0x80, "x");
    expect(&s, "!1002 continuation frame without a message to continue");
    cframe(&s, 0x01, "a");
    cframe(&s, 0x81, "b");
    expect(&s, "!1002 new message inside a fragmented one");
    cframe(&s, 0xA1, "x");
    expect(&s, "!1002 reserved bit RSV2 or RSV3 set");
    cframe(&s, 0x91, "x");
    expect(&s, "!1002 reserved bit RSV2 or RSV3 set");
    cframe(&s, 0xC1, "x");
    expect(&s, "!1002 RSV1 set without permessage-deflate");
    cframe(&s, 0x83, "x");
    expect(&s, "!1002 reserved data opcode");
    cframe(&s, 0x8B, "x");
    expect(&s, "!1002 reserved control opcode");
    cframe(&s, 0x09, "x");
    expect(&s, "!1002 fragmented control frame");
    char big[126];
    memset(big, 'a', sizeof big);
    frame(&s, 0x89, big, sizeof big, 1);
    expect(&s, "!1002 control frame over 125 bytes");
    frame(&s, 0x89, big, 125, 1);
    text want = {0};
    puts_(&want, "ping[");
    put(&want, big, 125);
    puts_(&want, "]");
    expect(&s, want.s);
    free(want.s);
    cframe(&s, 0xC9, "x");
    expect(&s, "!1002 RSV1 set on a control frame");
    /* messages before the bad frame still come out */
    cframe(&s, 0x81, "ok");
    cframe(&s, 0x8F, "");
    expect(&s, "text[ok]!1002 reserved control opcode");
}

static void test_client_role(void) {
    text s = {0};
    cframe(&s, 0x81, "masked");
    char *got = decode_with(client, &s, 100, NULL);
    CHECK(strcmp(got, "!1002 masked frame from the server") == 0);
    free(got);
    free(s.s);

    /* a whole unmasked frame is handed out where it lies */
    s = (text){0};
    frame(&s, 0x82, "in place", 8, 0);
    pl_ws *w = client(100, NULL);
    size_t used;
    pl_ws_message m;
    CHECK(pl_ws_decode(w, s.s, s.len, &used, &m) == 1);
    CHECK(used == s.len && m.data == s.s + 2 && m.len == 8);
    CHECK(pl_ws_buffered(w) == 0);
    pl_ws_free(w);
    free(s.s);
}

static void close_payload(text *s, int code, const char *reason, size_t rlen) {
    char p[125];
    p[0] = (char)(code >> 8);
    p[1] = (char)code;
    memcpy(p + 2, reason, rlen);
    frame(s, 0x88, p, 2 + rlen, 1);
}

static void test_close(void) {
    text s = {0};
    cframe(&s, 0x88, "");
    cframe(&s, 0x81, "ignored: after the close");
    expect(&s, "close#-1[]");
    close_payload(&s, 1000, "bye", 3);
    expect(&s, "close#1000[bye]");
    frame(&s, 0x88, "\x03", 1, 1);
    expect(&s, "!1002 close payload of one byte");
    static const int good[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999};
    static const int bad[] = {0, 999, 1004, 1005, 1006, 1012, 1015, 1016, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        close_payload(&s, good[i], "", 0);
        char want[32];
        snprintf(want, sizeof want, "close#%d[]", good[i]);
        expect(&s, want);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        close_payload(&s, bad[i], "", 0);
        expect(&s, "!1002 close code not allowed");
    }
    close_payload(&s, 1000, "\xc3\x28", 2);
    expect(&s, "!1007 close reason is not UTF-8");
    close_payload(&s, 1000, "\xe2\x82", 2);
    expect(&s, "!1007 close reason is not UTF-8");
    /* a close between fragments */
    cframe(&s, 0x01, "half");
    close_payload(&s, 1001, "going", 5);
    expect(&s, "close#1001[going]");
}

/* ---- UTF-8 ---- */

static void test_utf8(void) {
    static const char *valid[] = {
        "", "plain ascii, long enough for the eight-byte steps",
        "\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xed\x9f\xbf", "\xee\x80\x80",
        "\xef\xbf\xbf", "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5",
    };
    static const char *invalid[] = {
        "\x80", "\xbf", "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xe0\x9f\xbf",
        "\xed\xa0\x80", "\xed\xbf\xbf", "\xf0\x80\x80\x80", "\xf0\x8f\xbf\xbf",
        "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xff", "\xc2", "\xe1\x80",
        "\xf1\x80\x80", "abc\xc2z", "0123456789\xfe",
    };
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        CHECK(pl_ws_utf8_valid(valid[i], strlen(valid[i])));
        text s = {0};
        cframe(&s, 0x81, valid[i]);
        text want = {0};
        puts_(&want, "text[");
        puts_(&want, valid[i]);
        puts_(&want, "]");
        expect(&s, want.s);
        free(want.s);
    }
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        CHECK(!pl_ws_utf8_valid(invalid[i], strlen(invalid[i])));
        text s = {0};
        cframe(&s, 0x81, invalid[i]);
        char *got = decode(&s);
        CHECK(strncmp(got, "!1007 ", 6) == 0);
        free(got);
        free(s.s);
    }
    /* a character split across fragments, with a ping between */
    text s = {0};
    cframe(&s, 0x01, "\xf0\x9f");
    cframe(&s, 0x89, "");
    cframe(&s, 0x00, "\x98");
    cframe(&s, 0x80, "\x80");
    expect(&s, "ping[]text[\xf0\x9f\x98\x80]");
    /* ending inside a character */
    cframe(&s, 0x01, "ok\xe2\x82");
    cframe(&s, 0x80, "");
    expect(&s, "!1007 text message ends inside a UTF-8 sequence");

    /* fails at the bad byte, before the frame or the message is complete */
    s = (text){0};
    frame(&s, 0x01, "good \xc0 and the rest", 20, 1);
    pl_ws *w = server(1000, NULL);
    size_t used;
    pl_ws_message m;
    CHECK(pl_ws_decode(w, s.s, 2 + 4 + 7, &used, &m) == -1);
    CHECK(pl_ws_error(w, NULL) == 1007);
    /* and every later call fails the same way */
    CHECK(pl_ws_decode(w, s.s + 13, s.len - 13, &used, &m) == -1);
    CHECK(pl_ws_error(w, NULL) == 1007);
    pl_ws_free(w);
    free(s.s);
}

/* ---- max_message ---- */

static void test_limits(void) {
    text s = {0};
    cframe(&s, 0x82, "0123456789");
    char *got = decode_with(server, &s, 10, NULL);
    CHECK(strcmp(got, "binary[0123456789]") == 0);
    free(got);
    free(s.s);

    s = (text){0};
    cframe(&s, 0x82, "0123456789a");
    got = decode_with(server, &s, 10, NULL);
    CHECK(strcmp(got, "!1009 message over max_message") == 0);
    free(got);
    free(s.s);

    s = (text){0};
    cframe(&s, 0x02, "012345");
    cframe(&s, 0x80, "6789a");
    got = decode_with(server, &s, 10, NULL);
    CHECK(strcmp(got, "!1009 message over max_message") == 0);
    free(got);
    free(s.s);

    /* refused from the header alone: 2^40 bytes announced, none sent */
    static const unsigned char huge[] = {0x82, 0xFF, 0, 0, 0x01, 0, 0, 0, 0, 0, 1, 2, 3, 4};
    pl_ws *w = server(PL_WS_MAX_MESSAGE_DEFAULT, NULL);
    size_t used;
    pl_ws_message m;
    CHECK(pl_ws_decode(w, (const char *)huge, sizeof huge, &used, &m) == -1);
    CHECK(pl_ws_error(w, NULL) == 1009);
    pl_ws_free(w);

    static const unsigned char top[] = {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
    w = server(PL_WS_MAX_MESSAGE_DEFAULT, NULL);
    CHECK(pl_ws_decode(w, (const char *)top, sizeof top, &used, &m) == -1);
    CHECK(pl_ws_error(w, NULL) == 1002);
    pl_ws_free(w);

    /* buffered counts what an incomplete frame holds */
    s = (text){0};
    cframe(&s, 0x81, "0123456789");
    w = server(100, NULL);
    CHECK(pl_ws_decode(w, s.s, 3, &used, &m) == 0 && used == 3);
    CHECK(pl_ws_buffered(w) == 3);
    CHECK(pl_ws_decode(w, s.s + 3, 8, &used, &m) == 0 && used == 8);
    CHECK(pl_ws_buffered(w) == 5);
    CHECK(pl_ws_decode(w, s.s + 11, s.len - 11, &used, &m) == 1);
    CHECK(m.len == 10 && memcmp(m.data, "0123456789", 10) == 0);
    CHECK(pl_ws_decode(w, "", 0, &used, &m) == 0);
    CHECK(pl_ws_buffered(w) == 0);
    pl_ws_free(w);
    free(s.s);
}

/* ---- the encoder ---- */

/* Encodes with a client codec (masked) and decodes with a server codec. */
static void roundtrip(int opcode, size_t len) {
    char *payload = malloc(len ? len : 1);
    if (!payload) abort();
    for (size_t i = 0; i < len; i++) payload[i] = (char)('a' + i % 26);
    pl_ws *c = client(PL_WS_MAX_MESSAGE_DEFAULT, NULL);
    pl_ws *sv = server(PL_WS_MAX_MESSAGE_DEFAULT, NULL);
    pl_buf out;
    pl_buf_init(&out, 0);
    CHECK(pl_ws_encode(c, opcode, payload, len, key, &out) == 0);
    size_t header = len < 126 ? 2 : len <= 0xFFFF ? 4 : 10;
    CHECK(out.len == header + 4 + len);
    size_t used;
    pl_ws_message m;
    CHECK(pl_ws_decode(sv, out.data, out.len, &used, &m) == 1);
    CHECK(used == out.len && m.opcode == opcode && m.len == len);
    CHECK(len == 0 || memcmp(m.data, payload, len) == 0);
    /* and unmasked, from the server to a client */
    out.len = 0;
    CHECK(pl_ws_encode(sv, opcode, payload, len, NULL, &out) == 0);
    CHECK(out.len == header + len);
    CHECK(pl_ws_decode(c, out.data, out.len, &used, &m) == 1);
    CHECK(m.opcode == opcode && m.len == len);
    CHECK(len == 0 || memcmp(m.data, payload, len) == 0);
    pl_buf_free(&out);
    pl_ws_free(c);
    pl_ws_free(sv);
    free(payload);
}

static void test_encoder(void) {
    static const size_t lens[] = {0, 1, 7, 8, 9, 125, 126, 127, 65535, 65536, 100000};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        roundtrip(PL_WS_TEXT, lens[i]);
        roundtrip(PL_WS_BINARY, lens[i]);
    }
    roundtrip(PL_WS_PING, 125);
    roundtrip(PL_WS_PONG, 0);

    /* RFC 6455 §5.7's masked "Hello" */
    pl_ws *c = client(100, NULL);
    pl_buf out;
    pl_buf_init(&out, 0);
    CHECK(pl_ws_encode(c, PL_WS_TEXT, "Hello", 5, key, &out) == 0);
    CHECK(out.len == 11 && memcmp(out.data, "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 11) == 0);
    char big[126] = {0};
    out.len = 0;
    CHECK(pl_ws_encode(c, PL_WS_PING, big, 126, key, &out) == -1);
    CHECK(pl_ws_encode(c, PL_WS_CLOSE, big, 0, key, &out) == -1);
    CHECK(pl_ws_encode_close(c, 1000, big, 124, NULL, &out) == -1);
    CHECK(pl_ws_encode_close(c, 1000, big, 123, NULL, &out) == 0 && out.len == 127);
    out.len = 0;
    CHECK(pl_ws_encode_close(c, -1, "dropped", 7, NULL, &out) == 0);
    CHECK(out.len == 2 && memcmp(out.data, "\x88\x00", 2) == 0);
    out.len = 0;
    CHECK(pl_ws_encode_close(c, 1001, "bye", 3, key, &out) == 0);
    pl_ws *sv = server(100, NULL);
    size_t used;
    pl_ws_message m;
    CHECK(pl_ws_decode(sv, out.data, out.len, &used, &m) == 1);
    CHECK(m.opcode == PL_WS_CLOSE && m.close_code == 1001 && m.len == 3);
    CHECK(pl_ws_close_code(sv) == 1001);
    pl_ws_free(sv);
    pl_buf_free(&out);
    pl_ws_free(c);
}

/* ---- permessage-deflate ---- */

static const pl_ws_deflate_params takeover = {0, 0, 15, 15};
static const pl_ws_deflate_params no_takeover = {1, 1, 15, 15};
static const pl_ws_deflate_params small_windows = {0, 0, 8, 8};
static const pl_ws_deflate_params mixed = {1, 0, 9, 12};

/* Three messages a client compresses, then decoded by a server at every
 * split: the window carries over (or not) as agreed. */
static void deflate_roundtrip(const pl_ws_deflate_params *d) {
    pl_ws *c = client(PL_WS_MAX_MESSAGE_DEFAULT, d);
    pl_buf out;
    pl_buf_init(&out, 0);
    const char *msgs[] = {"Hello, hello, hello, hello", "Hello, hello, hello, hello", "\xce\xba\xe1\xbd\xb9"};
    for (int i = 0; i < 3; i++)
        CHECK(pl_ws_encode(c, PL_WS_TEXT, msgs[i], strlen(msgs[i]), key, &out) == 0);
    CHECK(((unsigned char)out.data[0] & 0xC0) == 0xC0); /* FIN and RSV1 */
    CHECK(pl_ws_encode(c, PL_WS_PING, "p", 1, key, &out) == 0);
    CHECK(pl_ws_encode(c, PL_WS_BINARY, "", 0, key, &out) == 0);
    text s = {0};
    put(&s, out.data, out.len);
    char *got = decode_with(server, &s, 1000, d);
    CHECK(strcmp(got, "text[Hello, hello, hello, hello]text[Hello, hello, hello, hello]"
                      "text[\xce\xba\xe1\xbd\xb9]ping[p]binary[]") == 0);
    free(got);
    free(s.s);
    pl_buf_free(&out);
    pl_ws_free(c);
}

static void test_deflate(void) {
    deflate_roundtrip(&takeover);
    deflate_roundtrip(&no_takeover);
    deflate_roundtrip(&small_windows);
    deflate_roundtrip(&mixed);

    /* RFC 7692 §7.2.3.1: "Hello" compressed, unmasked, to a client; and
     * §7.2.3.2: two frames of one compressed message */
    text s = {0};
    frame(&s, 0xC1, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7, 0);
    frame(&s, 0x41, "\xf2\x48\xcd", 3, 0);
    frame(&s, 0x80, "\xc9\xc9\x07\x00", 4, 0);
    /* §7.2.3.3: a stored (uncompressed) block; §7.2.3.4 with BFINAL set */
    frame(&s, 0xC1, "\x00\x05\x00\xfa\xffHello\x00", 11, 0);
    frame(&s, 0xC1, "\xf3\x48\xcd\xc9\xc9\x07\x00\x00", 8, 0);
    frame(&s, 0xC1, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7, 0); /* a fresh stream */
    char *got = decode_with(client, &s, 100, &takeover);
    CHECK(strcmp(got, "text[Hello]text[Hello]text[Hello]text[Hello]text[Hello]") == 0);
    free(got);
    free(s.s);

    /* with context takeover, a second "Hello" refers back to the first */
    s = (text){0};
    frame(&s, 0xC1, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7, 0);
    frame(&s, 0xC1, "\xf2\x00\x11\x00\x00", 5, 0);
    got = decode_with(client, &s, 100, &takeover);
    CHECK(strcmp(got, "text[Hello]text[Hello]") == 0);
    free(got);
    free(s.s);

    /* RSV1 on a continuation; corrupt data; bad UTF-8 after inflating */
    s = (text){0};
    frame(&s, 0x41, "\xf2\x48", 2, 1);
    frame(&s, 0xC0, "\xcd", 1, 1);
    got = decode_with(server, &s, 100, &takeover);
    CHECK(strcmp(got, "!1002 RSV1 set on a continuation frame") == 0);
    free(got);
    free(s.s);
    s = (text){0};
    frame(&s, 0xC2, "\xff\xff\xff\xff", 4, 1);
    got = decode_with(server, &s, 100, &takeover);
    CHECK(strcmp(got, "!1007 invalid compressed data") == 0);
    free(got);
    free(s.s);

    pl_ws *c = client(100, &takeover);
    pl_buf out;
    pl_buf_init(&out, 0);
    CHECK(pl_ws_encode(c, PL_WS_TEXT, "ok \xed\xa0\x80", 6, key, &out) == 0);
    s = (text){0};
    put(&s, out.data, out.len);
    got = decode_with(server, &s, 100, &takeover);
    CHECK(strcmp(got, "!1007 invalid UTF-8 in a text message") == 0);
    free(got);
    free(s.s);
    pl_ws_free(c);

    /* a deflate bomb: 4 MiB of zeros in a few KiB, to a 64 KiB limit; the
     * codec never holds more than the limit */
    size_t n = (size_t)4 << 20;
    char *zeros = calloc(1, n);
    if (!zeros) abort();
    c = client(n, &takeover);
    out.len = 0;
    CHECK(pl_ws_encode(c, PL_WS_BINARY, zeros, n, key, &out) == 0);
    CHECK(out.len < 8192);
    pl_ws *sv = server(65536, &takeover);
    size_t used, at = 0;
    pl_ws_message m;
    int rc = 0;
    while (at < out.len && rc == 0) { /* 100-byte reads */
        size_t k = out.len - at < 100 ? out.len - at : 100;
        rc = pl_ws_decode(sv, out.data + at, k, &used, &m);
        at += used;
        CHECK(pl_ws_buffered(sv) <= 65536);
    }
    CHECK(rc == -1 && pl_ws_error(sv, NULL) == 1009);
    pl_ws_free(sv);
    /* and the same message within the limit comes out whole */
    sv = server(n, &takeover);
    CHECK(pl_ws_decode(sv, out.data, out.len, &used, &m) == 1);
    CHECK(m.len == n && m.data[0] == 0 && m.data[n - 1] == 0);
    pl_ws_free(sv);
    /* exactly at the limit is fine, one over is not */
    pl_ws_free(c);
    c = client(n, &takeover);
    out.len = 0;
    CHECK(pl_ws_encode(c, PL_WS_BINARY, zeros, 1000, key, &out) == 0);
    sv = server(1000, &takeover);
    CHECK(pl_ws_decode(sv, out.data, out.len, &used, &m) == 1 && m.len == 1000);
    pl_ws_free(sv);
    sv = server(999, &takeover);
    CHECK(pl_ws_decode(sv, out.data, out.len, &used, &m) == -1);
    CHECK(pl_ws_error(sv, NULL) == 1009);
    pl_ws_free(sv);
    pl_ws_free(c);
    free(zeros);
    pl_buf_free(&out);

    /* bad window bits make no codec */
    pl_ws_deflate_params bad = {0, 0, 7, 15};
    pl_ws_config cfg = {.client = 0, .max_message = 100, .deflate = &bad};
    CHECK(pl_ws_new(&cfg) == NULL);
}

int main(void) {
    test_rfc_examples();
    test_fragments_and_controls();
    test_protocol_errors();
    test_client_role();
    test_close();
    test_utf8();
    test_limits();
    test_encoder();
    test_deflate();
    return CHECK_REPORT("test_ws");
}
