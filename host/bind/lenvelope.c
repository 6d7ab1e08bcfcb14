/* lenvelope.c: mailbox envelopes seen from Lua, as part of pulsar.core
 * (lenvelope.h; the wire form is codec/envelope.h's).
 *
 * The mailbox (lua/pulsar/mailbox.lua) sends every request and reply
 * through these, never through a Lua table of the envelope: on a link as a
 * payload string (encode_request, encode_reply), into an inbox encoded in
 * place (linbox.c), and reads every envelope with decode_envelope, whose
 * results are its handler's arguments. */
#include "lenvelope.h"

#include <lauxlib.h>

#include "envelope.h"
#include "host.h"

int pl_lenvelope_request(lua_State *L, int arg, pl_buf *out, char *err, size_t errlen) {
    pl_request_head head;
    head.command = luaL_checkstring(L, arg);
    head.id = (long long)luaL_checkinteger(L, arg + 1);
    head.sender = luaL_checkstring(L, arg + 2);
    head.target = luaL_optstring(L, arg + 3, NULL);
    head.ack = lua_toboolean(L, arg + 4);
    int first = arg + 5, nargs = lua_gettop(L) - first + 1;
    if (nargs < 0) nargs = 0;
    return pl_envelope_encode_request(L, &head, first, nargs, out, NULL, err, errlen);
}

int pl_lenvelope_reply(lua_State *L, int arg, pl_buf *out, char *err, size_t errlen) {
    pl_reply_head head;
    head.ack = (long long)luaL_checkinteger(L, arg);
    head.target = luaL_optstring(L, arg + 1, NULL);
    head.sender = luaL_optstring(L, arg + 2, NULL);
    int is_error = lua_toboolean(L, arg + 3);
    lua_settop(L, lua_gettop(L) < arg + 4 ? arg + 4 : lua_gettop(L));
    return pl_envelope_encode_reply(L, &head, is_error, arg + 4, out, NULL, err, errlen);
}

static int push_payload(lua_State *L, pl_buf *out, int rc, const char *err) {
    if (rc == 0) lua_pushlstring(L, out->data ? out->data : "", out->len);
    pl_buf_free(out);
    if (rc != 0) return luaL_error(L, "%s", err);
    return 1;
}

static int core_encode_request(lua_State *L) {
    char err[512];
    pl_buf out;
    pl_buf_init(&out, 0);
    int rc = pl_lenvelope_request(L, 1, &out, err, sizeof err);
    return push_payload(L, &out, rc, err);
}

static int core_encode_reply(lua_State *L) {
    char err[512];
    pl_buf out;
    pl_buf_init(&out, 0);
    int rc = pl_lenvelope_reply(L, 1, &out, err, sizeof err);
    return push_payload(L, &out, rc, err);
}

static int core_decode_envelope(lua_State *L) {
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    char err[256];
    int n = pl_envelope_push(L, data, len, NULL, err, sizeof err);
    if (n < 0) return luaL_error(L, "cannot decode: %s", err);
    return n;
}

static const luaL_Reg functions[] = {
    {"encode_request", core_encode_request},
    {"encode_reply", core_encode_reply},
    {"decode_envelope", core_decode_envelope},
    {NULL, NULL},
};

void pl_lenvelope_register(lua_State *L) { luaL_setfuncs(L, functions, 0); }
