/* lws.c: the WebSocket codec (host/codec/ws.c) seen from Lua, in pulsar.core.
 *
 *   core.ws_accept(key) -> the Sec-WebSocket-Accept value for a client's
 *       Sec-WebSocket-Key: base64(SHA-1(key .. RFC 6455's GUID))
 *   core.ws_key() -> a fresh Sec-WebSocket-Key: base64 of 16 random bytes
 *   core.ws_codec{role = "server"|"client", max_message = N,
 *                 deflate = nil | {server_no_context_takeover = bool,
 *                     client_no_context_takeover = bool,
 *                     server_max_window_bits = 8..15,
 *                     client_max_window_bits = 8..15}} -> codec
 *       (max_message defaults to 16 MiB, window bits to 15)
 *   codec:feed(data, out) -> n | nil, close_code, reason
 *       appends each message data completes to out as kind, payload
 *       (kind "text", "binary", "ping", "pong", "close"; a close's payload
 *       is its reason); n is how many. Entries of out past 2n are left as
 *       they were. On an error (close_code 1002, 1007, 1009; 1011 without
 *       memory) out may hold the messages before the bad bytes; every later
 *       call gives the error again. Bytes after a close are ignored.
 *   codec:encode(kind, payload [, code]) -> the bytes of one whole frame
 *   codec:close_code() -> the code of the close received, or nil
 *   codec:buffered() -> bytes held for an incomplete frame or message
 *
 * SHA-1 is OpenSSL's (libcrypto), base64 and randomness libsodium's: no hash
 * or random source written here. A client's masks are fresh random bytes
 * for every frame (RFC 6455 §5.3), drawn from a small pool per codec. The encoder writes into one buffer per
 * codec, reused, and each string is pushed straight from the codec's
 * buffers (or from the input, for what a client reads). */
#include <string.h>

#include <lauxlib.h>
#include <openssl/evp.h>
#include <sodium.h>

#include "auth.h"
#include "ws.h"

#define CODEC_METATABLE "pulsar.core.WsCodec"
#define KEEP_OUT ((size_t)64 << 10) /* a larger encode buffer is let go */

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* A client's masks come from a pool of random bytes refilled 32 masks at a
 * time: one getrandom() per frame would cost more than the frame. */
#define MASK_POOL 128

typedef struct lcodec {
    pl_ws *w;
    int client;
    pl_buf out; /* the last frame encoded */
    size_t pool_used;
    unsigned char pool[MASK_POOL];
} lcodec;

/* ---- the handshake's values ---- */

static void push_base64(lua_State *L, const unsigned char *bin, size_t len) {
    char b64[64];
    sodium_bin2base64(b64, sizeof b64, bin, len, sodium_base64_VARIANT_ORIGINAL);
    lua_pushstring(L, b64);
}

static int core_ws_accept(lua_State *L) {
    size_t len;
    const char *key = luaL_checklstring(L, 1, &len);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) &&
             EVP_DigestUpdate(ctx, key, len) &&
             EVP_DigestUpdate(ctx, ws_guid, sizeof ws_guid - 1) &&
             EVP_DigestFinal_ex(ctx, digest, &dlen);
    EVP_MD_CTX_free(ctx);
    if (!ok) return luaL_error(L, "ws_accept: SHA-1 failed (OpenSSL)");
    push_base64(L, digest, dlen);
    return 1;
}

static int core_ws_key(lua_State *L) {
    unsigned char nonce[16];
    pl_random_bytes(nonce, sizeof nonce);
    push_base64(L, nonce, sizeof nonce);
    return 1;
}

/* ---- making a codec ---- */

static int opt_boolean(lua_State *L, int t, const char *key) {
    lua_getfield(L, t, key);
    int b = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return b;
}

static int opt_bits(lua_State *L, int t, const char *key) {
    lua_Integer v = 15;
    int isnum = 1;
    if (lua_getfield(L, t, key) != LUA_TNIL) v = lua_tointegerx(L, -1, &isnum);
    lua_pop(L, 1);
    if (!isnum || v < 8 || v > 15)
        luaL_error(L, "ws_codec: deflate.%s must be an integer from 8 to 15", key);
    return (int)v;
}

static void read_deflate(lua_State *L, int t, pl_ws_deflate_params *p) {
    p->server_no_context_takeover = opt_boolean(L, t, "server_no_context_takeover");
    p->client_no_context_takeover = opt_boolean(L, t, "client_no_context_takeover");
    p->server_max_window_bits = opt_bits(L, t, "server_max_window_bits");
    p->client_max_window_bits = opt_bits(L, t, "client_max_window_bits");
}

static int read_role(lua_State *L) {
    lua_getfield(L, 1, "role");
    const char *role = lua_tostring(L, -1);
    int client = role && strcmp(role, "client") == 0;
    if (!role || (!client && strcmp(role, "server") != 0))
        luaL_error(L, "ws_codec: role must be \"server\" or \"client\"");
    lua_pop(L, 1);
    return client;
}

static size_t read_max_message(lua_State *L) {
    lua_Integer v = (lua_Integer)PL_WS_MAX_MESSAGE_DEFAULT;
    int isnum = 1;
    if (lua_getfield(L, 1, "max_message") != LUA_TNIL) v = lua_tointegerx(L, -1, &isnum);
    lua_pop(L, 1);
    if (!isnum || v < 1) luaL_error(L, "ws_codec: max_message must be a positive integer");
    return (size_t)v;
}

/* core.ws_codec{role=, max_message=, deflate=} */
static int core_ws_codec(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    pl_ws_config cfg = {.client = read_role(L), .max_message = read_max_message(L)};
    pl_ws_deflate_params params;
    int t = lua_getfield(L, 1, "deflate");
    if (t == LUA_TTABLE) {
        read_deflate(L, lua_gettop(L), &params);
        cfg.deflate = &params;
    } else if (t != LUA_TNIL && !(t == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
        return luaL_error(L, "ws_codec: deflate must be a table of the agreed parameters or nil");
    }
    lua_pop(L, 1);
    lcodec *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->w = NULL;
    u->client = cfg.client;
    u->pool_used = MASK_POOL;
    pl_buf_init(&u->out, 0);
    luaL_setmetatable(L, CODEC_METATABLE);
    u->w = pl_ws_new(&cfg);
    if (!u->w) return luaL_error(L, "out of memory making a WebSocket codec");
    return 1;
}

/* ---- the codec's methods ---- */

static lcodec *check_codec(lua_State *L) {
    lcodec *u = luaL_checkudata(L, 1, CODEC_METATABLE);
    if (!u->w) luaL_error(L, "the WebSocket codec is freed");
    return u;
}

/* The kinds' names are feed's upvalues: pushing one is a copy of a
 * reference, not a string lookup. */
enum { KIND_TEXT = 1, KIND_BINARY, KIND_CLOSE, KIND_PING, KIND_PONG, KINDS = KIND_PONG };

static int kind_upvalue(int opcode) {
    switch (opcode) {
    case PL_WS_TEXT: return KIND_TEXT;
    case PL_WS_BINARY: return KIND_BINARY;
    case PL_WS_CLOSE: return KIND_CLOSE;
    case PL_WS_PING: return KIND_PING;
    default: return KIND_PONG;
    }
}

static int push_error(lua_State *L, const pl_ws *w) {
    const char *reason;
    int code = pl_ws_error(w, &reason);
    lua_pushnil(L);
    lua_pushinteger(L, code);
    lua_pushstring(L, reason);
    return 3;
}

static int codec_feed(lua_State *L) {
    lcodec *u = check_codec(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    luaL_checktype(L, 3, LUA_TTABLE);
    size_t at = 0;
    lua_Integer n = 0;
    for (;;) {
        size_t used;
        pl_ws_message m;
        int rc = pl_ws_decode(u->w, data + at, len - at, &used, &m);
        at += used;
        if (rc < 0) return push_error(L, u->w);
        if (rc == 0) break;
        lua_pushvalue(L, lua_upvalueindex(kind_upvalue(m.opcode)));
        lua_rawseti(L, 3, 2 * n + 1);
        lua_pushlstring(L, m.data, m.len);
        lua_rawseti(L, 3, 2 * n + 2);
        n++;
    }
    lua_pushinteger(L, n);
    return 1;
}

static int opcode_of(lua_State *L, const char *kind) {
    switch (kind[0]) {
    case 't': if (strcmp(kind, "text") == 0) return PL_WS_TEXT; break;
    case 'b': if (strcmp(kind, "binary") == 0) return PL_WS_BINARY; break;
    case 'c': if (strcmp(kind, "close") == 0) return PL_WS_CLOSE; break;
    case 'p':
        if (strcmp(kind, "ping") == 0) return PL_WS_PING;
        if (strcmp(kind, "pong") == 0) return PL_WS_PONG;
        break;
    }
    return luaL_error(L, "ws codec: encode's kind must be \"text\", \"binary\", "
                         "\"ping\", \"pong\" or \"close\", not \"%s\"", kind);
}

/* A close's code from argument 4: -1 for none. */
static int close_code_arg(lua_State *L) {
    if (lua_isnoneornil(L, 4)) return -1;
    lua_Integer code = luaL_checkinteger(L, 4);
    if (code < 0 || code > 0xFFFF || !pl_ws_close_code_valid((int)code))
        return luaL_error(L, "ws codec: close code %I may not be sent "
                             "(1000-1003, 1007-1011, 3000-4999)", code);
    return (int)code;
}

static int codec_encode(lua_State *L) {
    lcodec *u = check_codec(L);
    int opcode = opcode_of(L, luaL_checkstring(L, 2));
    size_t len = 0;
    const char *payload = luaL_optlstring(L, 3, "", &len);
    const unsigned char *mask = NULL;
    if (u->client) {
        if (u->pool_used == MASK_POOL) {
            pl_random_bytes(u->pool, MASK_POOL);
            u->pool_used = 0;
        }
        mask = u->pool + u->pool_used;
        u->pool_used += 4;
    }
    u->out.len = 0;
    int rc = opcode == PL_WS_CLOSE
                 ? pl_ws_encode_close(u->w, close_code_arg(L), payload, len, mask, &u->out)
                 : pl_ws_encode(u->w, opcode, payload, len, mask, &u->out);
    if (rc == -1)
        return luaL_error(L, "ws codec: a %s payload may have at most 125 bytes",
                          lua_tostring(L, 2));
    if (rc != 0) return luaL_error(L, "out of memory encoding a WebSocket frame");
    lua_pushlstring(L, u->out.data, u->out.len);
    if (u->out.cap > KEEP_OUT) pl_buf_free(&u->out);
    return 1;
}

static int codec_close_code(lua_State *L) {
    int code = pl_ws_close_code(check_codec(L)->w);
    if (code > 0) lua_pushinteger(L, code);
    else lua_pushnil(L);
    return 1;
}

static int codec_buffered(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)pl_ws_buffered(check_codec(L)->w));
    return 1;
}

static int codec_gc(lua_State *L) {
    lcodec *u = luaL_checkudata(L, 1, CODEC_METATABLE);
    pl_ws_free(u->w);
    u->w = NULL;
    pl_buf_free(&u->out);
    return 0;
}

static const luaL_Reg codec_methods[] = {
    {"encode", codec_encode},
    {"close_code", codec_close_code},
    {"buffered", codec_buffered},
    {NULL, NULL},
};

static const luaL_Reg ws_functions[] = {
    {"ws_accept", core_ws_accept},
    {"ws_key", core_ws_key},
    {"ws_codec", core_ws_codec},
    {NULL, NULL},
};

void pl_lws_register(lua_State *L) {
    luaL_newmetatable(L, CODEC_METATABLE);
    luaL_newlib(L, codec_methods);
    static const char *const kinds[KINDS] = {"text", "binary", "close", "ping", "pong"};
    for (int i = 0; i < KINDS; i++) lua_pushstring(L, kinds[i]);
    lua_pushcclosure(L, codec_feed, KINDS);
    lua_setfield(L, -2, "feed");
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, codec_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_setfuncs(L, ws_functions, 0);
}
