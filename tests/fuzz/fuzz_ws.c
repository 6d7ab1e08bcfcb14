/* fuzz_ws.c: libFuzzer target for the WebSocket decoder (host/codec/ws.c,
 * wsdeflate.c), in the server's role: the bytes are what a client sends.
 *
 * The input's first byte chooses the codec: bit 0 permessage-deflate, bits
 * 1 and 2 no context takeover (server, client), bits 3 to 5 the client's
 * window bits (8 + n), bit 6 a small max_message (1000 bytes, else 1 MiB).
 * Its second byte chooses a split point. The rest is fed:
 *   1. all at once;
 *   2. in two reads at the chosen point;
 *   3. byte by byte (streams up to 2 KiB).
 * All must give the same messages and the same error in the same words.
 * Every feed is a malloc'd copy of exactly its length, so ASan catches a
 * read past it. What must hold: a message is within max_message, a text
 * message and a close reason are UTF-8, a close code is one that may be
 * sent, the codec never holds more than max_message plus a header and a
 * control payload, after an error every call fails at once, and each data
 * message, encoded again by a client codec with the same parameters and
 * decoded by a fresh server, comes back the same. Broken invariants stop
 * with __builtin_trap(). The feeding and comparing are tests/fuzz/split.h's.
 *
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -Ihost/codec \
 *       host/codec/buf.c host/codec/ws.c host/codec/wsdeflate.c \
 *       tests/fuzz/fuzz_ws.c -lz -o /tmp/fuzz_ws
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

#include "split.h"

typedef struct setup {
    pl_ws_config cfg;
    pl_ws_deflate_params deflate;
} setup;

static pl_ws *make(const setup *s, int client) {
    pl_ws_config cfg = s->cfg;
    cfg.client = client;
    pl_ws *w = pl_ws_new(&cfg);
    REQUIRE(w != NULL);
    return w;
}

/* A data message sent again, by a client with the same agreement, must
 * reach a fresh server unchanged. */
static void check_reencode(const setup *s, const pl_ws_message *m) {
    static const unsigned char key[4] = {1, 2, 3, 4};
    pl_ws *c = make(s, 1), *sv = make(s, 0);
    pl_buf out;
    pl_buf_init(&out, 0);
    REQUIRE(pl_ws_encode(c, m->opcode, m->data, m->len, key, &out) == 0);
    size_t used;
    pl_ws_message back;
    REQUIRE(pl_ws_decode(sv, out.data, out.len, &used, &back) == 1);
    REQUIRE(used == out.len && back.opcode == m->opcode && back.len == m->len);
    REQUIRE(m->len == 0 || memcmp(back.data, m->data, m->len) == 0);
    pl_buf_free(&out);
    pl_ws_free(c);
    pl_ws_free(sv);
}

static void check_message(const setup *s, const pl_ws_message *m, int reencode) {
    REQUIRE(m->len <= s->cfg.max_message);
    switch (m->opcode) {
    case PL_WS_TEXT:
        REQUIRE(pl_ws_utf8_valid(m->data, m->len));
        /* fall through */
    case PL_WS_BINARY:
        if (reencode) check_reencode(s, m);
        break;
    case PL_WS_CLOSE:
        REQUIRE(m->close_code == -1 || pl_ws_close_code_valid(m->close_code));
        REQUIRE(m->len <= PL_WS_MAX_CONTROL - 2);
        REQUIRE(pl_ws_utf8_valid(m->data, m->len));
        break;
    case PL_WS_PING:
    case PL_WS_PONG:
        REQUIRE(m->len <= PL_WS_MAX_CONTROL);
        break;
    default:
        REQUIRE(0);
    }
}

typedef struct run_state {
    pl_ws *w;
    const setup *s;
    record *r;
    int reencode; /* check each data message by encoding it again */
} run_state;

static void feed(void *ctx, const char *copy, size_t n) {
    run_state *st = ctx;
    pl_ws *w = st->w;
    const setup *s = st->s;
    record *r = st->r;
    int failed_before = pl_ws_error(w, NULL) != 0;
    size_t at = 0;
    for (;;) {
        size_t used;
        pl_ws_message m;
        int rc = pl_ws_decode(w, copy + at, n - at, &used, &m);
        REQUIRE(used <= n - at);
        at += used;
        REQUIRE(pl_ws_buffered(w) <= s->cfg.max_message + PL_WS_MAX_HEADER + PL_WS_MAX_CONTROL);
        if (failed_before) REQUIRE(rc == -1);
        if (rc < 0) {
            const char *reason;
            int code = pl_ws_error(w, &reason);
            REQUIRE(code == 1002 || code == 1007 || code == 1009);
            REQUIRE(reason && reason[0]);
            break;
        }
        if (rc == 0) {
            REQUIRE(at == n);
            break;
        }
        check_message(s, &m, st->reencode);
        put_int(r, m.opcode);
        put_int(r, m.close_code);
        put_field(r, m.data, m.len);
    }
}

static void finish(pl_ws *w, record *r) {
    const char *reason;
    int code = pl_ws_error(w, &reason);
    put_int(r, code);
    if (code) put_field(r, reason, strlen(reason));
    put_int(r, pl_ws_close_code(w));
    pl_ws_free(w);
}

/* Feeds the plan's stream to a server, then one more frame: after an error
 * or a close it must change nothing. Only the whole run re-encodes. */
static void run(const void *ctx, const split_plan *plan, record *r) {
    run_state st = {make(ctx, 0), ctx, r, split_is_whole(plan)};
    split_feed(plan, feed, &st);
    static const uint8_t more[] = "\x81\x80\0\0\0\0";
    split_plan again = {more, sizeof more - 1, NULL, 0, 0};
    st.reencode = 0;
    split_feed(&again, feed, &st);
    finish(st.w, r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    setup s;
    memset(&s, 0, sizeof s);
    s.cfg.max_message = data[0] & 0x40 ? 1000 : (size_t)1 << 20;
    if (data[0] & 1) {
        s.deflate.server_no_context_takeover = (data[0] >> 1) & 1;
        s.deflate.client_no_context_takeover = (data[0] >> 2) & 1;
        s.deflate.client_max_window_bits = 8 + ((data[0] >> 3) & 7);
        s.deflate.server_max_window_bits = 15;
        s.cfg.deflate = &s.deflate;
    }
    const uint8_t *stream = data + 2;
    size_t len = size - 2;
    size_t cut;
    split_choose(data + 1, 1, len, &cut);
    split_require_same(run, &s, stream, len, &cut, 1);
    return 0;
}
