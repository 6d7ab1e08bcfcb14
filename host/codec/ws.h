/* ws.h: a bounded, incremental WebSocket codec (RFC 6455, with RFC 7692's
 * permessage-deflate through wsdeflate.h).
 *
 * One codec per connection and per role. The decoder takes whatever bytes
 * arrive, split anywhere, and gives back whole messages one at a time:
 * fragments joined, compressed messages inflated, text checked for UTF-8 as
 * its bytes arrive, control frames (ping, pong, close) as they come, also
 * between the fragments of a message. What it holds is bounded: a message by
 * max_message bytes (after inflating), a frame header by its 14 bytes, a
 * control payload by its 125. The first bad byte stops the decoder for good
 * with the close code to send (1002, 1007, 1009) and a reason.
 *
 * The encoder writes one whole frame (FIN set), compressed when deflate was
 * agreed, masked with the key it is given (a client's). The codec draws no
 * random bytes itself: the caller passes the masks, so the codec stays a
 * pure function of its inputs (the unit tests and the fuzz target rely on
 * it). The Lua face is host/bind/lws.c (core.ws_codec). */
#ifndef PULSAR_WS_H
#define PULSAR_WS_H

#include <stddef.h>

#include "buf.h"

enum pl_ws_opcode {
    PL_WS_CONTINUATION = 0x0,
    PL_WS_TEXT = 0x1,
    PL_WS_BINARY = 0x2,
    PL_WS_CLOSE = 0x8,
    PL_WS_PING = 0x9,
    PL_WS_PONG = 0xA,
};

#define PL_WS_MAX_MESSAGE_DEFAULT ((size_t)16 << 20) /* 16 MiB */
#define PL_WS_MAX_CONTROL 125                       /* RFC 6455 §5.5 */
#define PL_WS_MAX_HEADER 14                         /* 2 + 8 length + 4 mask */

/* What permessage-deflate's negotiation agreed (RFC 7692 §7.1). */
typedef struct pl_ws_deflate_params {
    int server_no_context_takeover;
    int client_no_context_takeover;
    int server_max_window_bits; /* 8..15 */
    int client_max_window_bits; /* 8..15 */
} pl_ws_deflate_params;

typedef struct pl_ws_config {
    int client;         /* 1: we are the client (we mask, the peer must not) */
    size_t max_message; /* bytes of one message, after inflating */
    const pl_ws_deflate_params *deflate; /* NULL: no permessage-deflate */
} pl_ws_config;

/* A decoded message. data is valid until the next call on the codec (and,
 * since it may point into the input, while the input is). For a close,
 * data is the reason and close_code the code, or -1 when it had none. */
typedef struct pl_ws_message {
    int opcode; /* PL_WS_TEXT, BINARY, CLOSE, PING or PONG */
    const char *data;
    size_t len;
    int close_code;
} pl_ws_message;

typedef struct pl_ws pl_ws;

/* A new codec (NULL without memory, or with window bits out of 8..15). */
pl_ws *pl_ws_new(const pl_ws_config *cfg);
void pl_ws_free(pl_ws *w);

/* Decodes from data[0..len) until one message is complete or the bytes run
 * out; *used says how many it took. 1: *msg is a message, call again with
 * the rest; 0: every byte was taken and no message is complete yet; -1: the
 * input is bad (pl_ws_error says why), and every later call gives -1 at once.
 * After a close frame every later byte is ignored. */
int pl_ws_decode(pl_ws *w, const char *data, size_t len, size_t *used,
                 pl_ws_message *msg);

/* The close code to send for the error (1002, 1007, 1009; 1011 without
 * memory) and *reason, or 0. */
int pl_ws_error(const pl_ws *w, const char **reason);

/* The code of the close frame received, -1 when it had none, or 0 before
 * any close frame. */
int pl_ws_close_code(const pl_ws *w);

/* Bytes held for an incomplete frame or message. */
size_t pl_ws_buffered(const pl_ws *w);

/* Appends one whole frame to out: a data frame (compressed when deflate was
 * agreed) or a ping or pong; mask is 4 bytes, or NULL to send unmasked.
 * 0; -1 for a control payload over 125 bytes or a bad opcode; -2 without
 * memory. */
int pl_ws_encode(pl_ws *w, int opcode, const char *payload, size_t len,
                 const unsigned char *mask, pl_buf *out);

/* Appends a close frame: code (-1 for none, then the reason is not sent)
 * and reason. -1 when the reason makes the payload over 125 bytes, -2
 * without memory. */
int pl_ws_encode_close(pl_ws *w, int code, const char *reason, size_t len,
                       const unsigned char *mask, pl_buf *out);

/* 1 when a close frame may carry this code (RFC 6455 §7.4: 1000-1003,
 * 1007-1011, 3000-4999). */
int pl_ws_close_code_valid(int code);

/* 1 when s[0..len) is UTF-8 (RFC 3629). */
int pl_ws_utf8_valid(const char *s, size_t len);

struct lua_State;
void pl_lws_register(struct lua_State *L);

#endif
