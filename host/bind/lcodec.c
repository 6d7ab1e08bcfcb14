/* lcodec.c: the codecs seen from Lua, as part of pulsar.core.
 *
 *   core.encode(v)                  -> MessagePack string (docs/API.md §3)
 *   core.decode(s [, functions])    -> v; functions=false refuses bytecode
 *   core.encode_frame(payload [, opcode])  -> one unmasked FIN frame
 *   core.peek_envelope(s)           -> command, target, sender, id, ack
 *   core.decode_frame(s [, limit])  -> opcode, payload, size
 *                                    | nil, "incomplete", size-if-known
 *                                    | raises on an invalid frame
 *
 * Who calls them: the mailbox (lua/pulsar/mailbox.lua) encodes and decodes
 * every envelope with core.encode and core.decode, and the arbiter reads a
 * relayed envelope's head with core.peek_envelope without decoding the
 * rest. Frames are made and parsed in C by the links (conn.c on frame.c),
 * so encode_frame and decode_frame are for tests and tools that want to
 * see exactly what goes on the wire. */
#include <string.h>

#include <lauxlib.h>

#include "frame.h"
#include "host.h"
#include "value.h"

static int core_encode(lua_State *L) {
    char err[512];
    pl_buf out;
    luaL_checkany(L, 1);
    pl_buf_init(&out, pl_value_default_limits.max_size);
    int rc = pl_value_encode(L, 1, &out, &pl_value_default_limits, "value",
                             err, sizeof err);
    if (rc == 0) lua_pushlstring(L, out.data ? out.data : "", out.len);
    pl_buf_free(&out);
    if (rc != 0) return luaL_error(L, "%s", err);
    return 1;
}

static int core_decode(lua_State *L) {
    char err[512];
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    pl_value_limits lim = pl_value_default_limits;
    if (!lua_isnoneornil(L, 2)) lim.allow_functions = lua_toboolean(L, 2);
    ptrdiff_t used = pl_value_decode(L, data, len, &lim, err, sizeof err);
    if (used < 0) return luaL_error(L, "cannot decode: %s", err);
    if ((size_t)used != len)
        return luaL_error(L, "cannot decode: %d bytes left after the value",
                          (int)(len - (size_t)used));
    return 1;
}

static int core_encode_frame(lua_State *L) {
    size_t len;
    const char *payload = luaL_checklstring(L, 1, &len);
    int opcode = (int)luaL_optinteger(L, 2, PL_OP_BINARY);
    luaL_argcheck(L, opcode >= 0 && opcode <= 15, 2, "opcode out of range");
    pl_buf out;
    pl_buf_init(&out, 0);
    if (pl_frame_append(&out, opcode, payload, len) != 0) {
        pl_buf_free(&out);
        return luaL_error(L, "out of memory encoding a frame");
    }
    lua_pushlstring(L, out.data, out.len);
    pl_buf_free(&out);
    return 1;
}

static int core_decode_frame(lua_State *L) {
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    lua_Integer limit = luaL_optinteger(L, 2, (lua_Integer)PL_FRAME_MAX_DEFAULT);
    luaL_argcheck(L, limit >= 0, 2, "limit must not be negative");
    /* The parser unmasks in place; Lua strings are immutable, so copy. */
    uint8_t *copy = lua_newuserdatauv(L, len ? len : 1, 0);
    memcpy(copy, data, len);
    pl_frame f;
    size_t used = 0;
    char err[256];
    switch (pl_frame_parse(copy, len, (size_t)limit, &f, &used, err, sizeof err)) {
    case PL_FRAME_COMPLETE:
        lua_pushinteger(L, f.opcode);
        lua_pushlstring(L, (const char *)f.payload, f.len);
        lua_pushinteger(L, (lua_Integer)used);
        return 3;
    case PL_FRAME_INCOMPLETE:
        lua_pushnil(L);
        lua_pushliteral(L, "incomplete");
        if (used) lua_pushinteger(L, (lua_Integer)used);
        else lua_pushnil(L);
        return 3;
    default:
        return luaL_error(L, "invalid frame: %s", err);
    }
}

static void push_string_or_nil(lua_State *L, const char *s, size_t len) {
    if (s) lua_pushlstring(L, s, len);
    else lua_pushnil(L);
}

/* core.peek_envelope(payload) -> command, target, sender, id, ack | nil:
 * an envelope's routing fields without decoding the rest (value.h). */
static int core_peek_envelope(lua_State *L) {
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    pl_envelope_head head;
    if (pl_value_peek_envelope(data, len, pl_value_default_limits.max_depth, &head) != 0) {
        lua_pushnil(L);
        return 1;
    }
    push_string_or_nil(L, head.command, head.command_len);
    push_string_or_nil(L, head.target, head.target_len);
    push_string_or_nil(L, head.sender, head.sender_len);
    if (head.has_id) lua_pushinteger(L, (lua_Integer)head.id);
    else lua_pushnil(L);
    if (head.ack_kind == 1) lua_pushboolean(L, head.ack_bool);
    else if (head.ack_kind == 2) lua_pushinteger(L, (lua_Integer)head.ack_int);
    else lua_pushnil(L);
    return 5;
}

static const luaL_Reg codec_functions[] = {
    {"peek_envelope", core_peek_envelope},
    {"encode", core_encode},
    {"decode", core_decode},
    {"encode_frame", core_encode_frame},
    {"decode_frame", core_decode_frame},
    {NULL, NULL},
};

void pl_lcodec_register(lua_State *L) { luaL_setfuncs(L, codec_functions, 0); }
