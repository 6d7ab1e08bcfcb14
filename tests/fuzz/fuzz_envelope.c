/* fuzz_envelope.c: libFuzzer target for reading mailbox envelopes
 * (host/codec/envelope.c, on value.c's peek and decoder).
 *
 * Every message between actors is read by pl_envelope_push, from bytes of
 * other processes. Any input must either be refused with the stack left as
 * it was, or give a request or a reply whose values, written again with
 * pl_envelope_encode_request or _reply, read back to the same number of
 * values and write again to an encoding of the same length (byte-identical
 * when no map with several entries is in the body, whose order is Lua's).
 *
 * Functions are off and limits small, as in fuzz_value. One lua_State
 * serves every input.
 *
 * Run: build-fuzz/fuzz_envelope CORPUS_COPY tests/fuzz/corpus/envelope */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "buf.h"
#include "envelope.h"
#include "value.h"

static const pl_value_limits fuzz_limits = {32, (size_t)1 << 20, 0};
static pl_buf enc1, enc2; /* reused between inputs: a Lua error cannot leak them */

#define VIOLATION(what)                                                    \
    do {                                                                   \
        fprintf(stderr, "fuzz_envelope: %s (line %d)\n", what, __LINE__);  \
        __builtin_trap();                                                  \
    } while (0)

/* Writes the n values at base+1.. (as pl_envelope_push gave them) again. */
static int encode_again(lua_State *L, int base, int n, pl_buf *out) {
    char err[256];
    out->len = 0;
    const char *command = lua_tostring(L, base + 1);
    if (strcmp(command, "callback") == 0) {
        pl_reply_head h = {lua_isinteger(L, base + 2) ? lua_tointeger(L, base + 2) : 0,
                           lua_tostring(L, base + 4), lua_tostring(L, base + 3)};
        return pl_envelope_encode_reply(L, &h, lua_toboolean(L, base + 5), base + 6, out,
                                        &fuzz_limits, err, sizeof err);
    }
    pl_request_head h = {command, lua_isinteger(L, base + 2) ? lua_tointeger(L, base + 2) : 0,
                         lua_isstring(L, base + 3) ? lua_tostring(L, base + 3) : "",
                         lua_tostring(L, base + 4), lua_toboolean(L, base + 5)};
    return pl_envelope_encode_request(L, &h, base + 6, n - 5, out, &fuzz_limits, err, sizeof err);
}

static int unordered_body(lua_State *L, int base, int n) {
    for (int i = base + 1; i <= base + n; i++)
        if (lua_istable(L, i)) return 1; /* conservative: any table may be a map */
    return 0;
}

static int check(lua_State *L) {
    const char *data = lua_touserdata(L, 1);
    size_t len = (size_t)lua_tointeger(L, 2);
    char err[256];
    int base = lua_gettop(L);
    int n = pl_envelope_push(L, data, len, &fuzz_limits, err, sizeof err);
    if (n < 0) {
        if (lua_gettop(L) != base) VIOLATION("a refused input left values on the stack");
        return 0;
    }
    if (lua_gettop(L) != base + n || n < 5) VIOLATION("wrong count of values pushed");
    if (encode_again(L, base, n, &enc1) != 0) return 0; /* e.g. a non-string sender */
    int again = pl_envelope_push(L, enc1.data, enc1.len, &fuzz_limits, err, sizeof err);
    if (again != n) VIOLATION("a written envelope reads back to another count");
    if (encode_again(L, base + n, n, &enc2) != 0) VIOLATION("a read-back envelope cannot be written");
    if (enc1.len != enc2.len) VIOLATION("writing again changes the length");
    if (!unordered_body(L, base, n) && memcmp(enc1.data, enc2.data, enc1.len) != 0)
        VIOLATION("writing again changes the bytes");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static lua_State *L;
    if (!L) {
        L = luaL_newstate();
        luaL_openlibs(L);
        luaL_newmetatable(L, PL_PROXY_METATABLE);
        lua_pop(L, 1);
        pl_buf_init(&enc1, 0);
        pl_buf_init(&enc2, 0);
    }
    lua_settop(L, 0);
    lua_pushcfunction(L, check);
    lua_pushlightuserdata(L, (void *)data);
    lua_pushinteger(L, (lua_Integer)size);
    lua_pcall(L, 2, 0, 0); /* memory errors are not findings */
    lua_settop(L, 0);
    return 0;
}
