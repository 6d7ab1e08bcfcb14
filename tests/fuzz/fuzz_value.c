/* fuzz_value.c: libFuzzer target for the value decoder (host/codec/value.c).
 *
 * The decoder reads bytes from other processes, so any input must either be
 * refused with the stack left as it was, or decode to a value that encodes to
 * a canonical form: decode(input) = v1, encode(v1) = e1, decode(e1) = v2,
 * encode(v2) = e2. Then v1 and v2 must be structurally equal, e1 and e2 the
 * same length, and byte-identical unless a map with several entries is
 * involved (Lua's table order may differ between two equal tables).
 *
 * Functions are off (allow_functions = 0: bytecode is trusted input only),
 * limits are small. One lua_State serves every input; the proxy metatable is
 * registered so that extension 2 round-trips with it.
 *
 * Build (from the repository root):
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -Ihost/codec \
 *     host/codec/buf.c host/codec/value.c tests/fuzz/fuzz_value.c \
 *     $(pkg-config --cflags --libs lua5.4 msgpack) -o /tmp/fuzz_value
 * Run: /tmp/fuzz_value CORPUS_COPY tests/fuzz/corpus/value */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "buf.h"
#include "value.h"

static const pl_value_limits fuzz_limits = {32, (size_t)1 << 20, 0};

/* Reused between inputs, so a Lua error cannot leak them. */
static pl_buf enc1, enc2;

#define VIOLATION(what)                                                  \
    do {                                                                 \
        fprintf(stderr, "fuzz_value: %s (line %d)\n", what, __LINE__);   \
        __builtin_trap();                                                \
    } while (0)

static int same_value(lua_State *L, int a, int b, int *unordered);

/* Counts the pairs of a table; tells whether its keys are exactly 1..n. */
static size_t table_shape(lua_State *L, int t, int *sequence,
                          int *table_keys) {
    lua_Unsigned n = lua_rawlen(L, t);
    size_t count = 0;
    int seq = 1;
    *table_keys = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        count++;
        if (!lua_isinteger(L, -2) ||
            (lua_Unsigned)lua_tointeger(L, -2) - 1 >= n)
            seq = 0;
        if (lua_istable(L, -2)) *table_keys = 1;
        lua_pop(L, 1);
    }
    *sequence = seq && count == n;
    return count;
}

static int same_table(lua_State *L, int a, int b, int *unordered) {
    int has_mt_a = lua_getmetatable(L, a);
    int has_mt_b = lua_getmetatable(L, b);
    lua_pop(L, has_mt_a + has_mt_b);
    if (has_mt_a != has_mt_b) return 0;
    int seq_a, seq_b, tk_a, tk_b;
    size_t na = table_shape(L, a, &seq_a, &tk_a);
    size_t nb = table_shape(L, b, &seq_b, &tk_b);
    if (na != nb || seq_a != seq_b) return 0;
    /* Map order is Lua's; proxies are always maps. Table keys cannot be
     * matched across two tables, so only their count is compared. */
    if (((!seq_a || has_mt_a) && na > 1) || tk_a) *unordered = 1;
    lua_pushnil(L);
    while (lua_next(L, a)) {
        if (!lua_istable(L, -2)) {
            lua_pushvalue(L, -2);
            lua_rawget(L, b);
            int ok = same_value(L, lua_gettop(L) - 1, lua_gettop(L),
                                unordered);
            lua_pop(L, 1);
            if (!ok) return 0;
        }
        lua_pop(L, 1);
    }
    return 1;
}

static int same_value(lua_State *L, int a, int b, int *unordered) {
    if (!lua_checkstack(L, 8)) VIOLATION("Lua stack");
    int t = lua_type(L, a);
    if (t != lua_type(L, b)) return 0;
    switch (t) {
    case LUA_TNIL: return 1;
    case LUA_TBOOLEAN: return lua_toboolean(L, a) == lua_toboolean(L, b);
    case LUA_TNUMBER: {
        if (lua_isinteger(L, a) != lua_isinteger(L, b)) return 0;
        if (lua_isinteger(L, a)) return lua_tointeger(L, a) == lua_tointeger(L, b);
        lua_Number x = lua_tonumber(L, a), y = lua_tonumber(L, b);
        return memcmp(&x, &y, sizeof x) == 0; /* NaN and -0.0 included */
    }
    case LUA_TSTRING: return lua_rawequal(L, a, b);
    case LUA_TTABLE: return same_table(L, a, b, unordered);
    default: return 0; /* the decoder makes nothing else here */
    }
}

/* Encodes the value at idx into out; 0, or -1 if it is only too big. */
static int encode_or_die(lua_State *L, int idx, pl_buf *out) {
    char err[256];
    out->len = 0;
    if (pl_value_encode(L, idx, out, &fuzz_limits, "value", err,
                        sizeof err) == 0)
        return 0;
    if (strstr(err, "exceeds the limit")) return -1;
    fprintf(stderr, "encode: %s\n", err);
    VIOLATION("a decoded value does not encode");
    return -1;
}

/* The work, under lua_pcall: arg 1 the input (light userdata), arg 2 its
 * length. */
static int check_input(lua_State *L) {
    const char *data = lua_touserdata(L, 1);
    size_t len = (size_t)lua_tointeger(L, 2);
    char err[256];
    int top = lua_gettop(L);
    ptrdiff_t used = pl_value_decode(L, data, len, &fuzz_limits, err,
                                     sizeof err);
    if (used < 0) {
        if (lua_gettop(L) != top) VIOLATION("a failed decode left values");
        if (err[0] == '\0') VIOLATION("a failed decode gave no message");
        return 0;
    }
    if (lua_gettop(L) != top + 1) VIOLATION("decode pushed not one value");
    if (used == 0 || (size_t)used > len) VIOLATION("bytes used out of range");
    int v1 = lua_gettop(L);
    if (encode_or_die(L, v1, &enc1) != 0) return 0;
    used = pl_value_decode(L, enc1.data, enc1.len, &fuzz_limits, err,
                           sizeof err);
    if (used != (ptrdiff_t)enc1.len) {
        fprintf(stderr, "re-decode: %s\n", used < 0 ? err : "short");
        VIOLATION("an encoding does not decode whole");
    }
    int v2 = lua_gettop(L);
    if (encode_or_die(L, v2, &enc2) != 0)
        VIOLATION("a re-encoding grew past the limit");
    int unordered = 0;
    if (!same_value(L, v1, v2, &unordered))
        VIOLATION("the value changed across a round trip");
    if (enc1.len != enc2.len) VIOLATION("encodings differ in length");
    if (!unordered && memcmp(enc1.data, enc2.data, enc1.len) != 0)
        VIOLATION("encodings differ");
    return 0;
}

static lua_State *fuzz_state(void) {
    static lua_State *L;
    if (L) return L;
    L = luaL_newstate();
    if (!L) abort();
    luaL_openlibs(L);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, PL_PROXY_METATABLE);
    pl_buf_init(&enc1, 0);
    pl_buf_init(&enc2, 0);
    return L;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static unsigned long runs;
    lua_State *L = fuzz_state();
    /* An exact-size copy, so reading one byte too far is caught. */
    char *copy = malloc(size ? size : 1);
    if (!copy) abort();
    if (size) memcpy(copy, data, size);
    /* The arbiter's relay reads envelope heads from the same bytes. */
    pl_envelope_head head;
    if (pl_value_peek_envelope(copy, size, 32, &head) == 0) {
        if (head.command && (head.command < copy || head.command + head.command_len > copy + size))
            __builtin_trap();
        if (head.target && (head.target < copy || head.target + head.target_len > copy + size))
            __builtin_trap();
    }
    lua_pushcfunction(L, check_input);
    lua_pushlightuserdata(L, copy);
    lua_pushinteger(L, (lua_Integer)size);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        /* Only memory errors may get here; they are not findings. */
        const char *msg = lua_tostring(L, -1);
        if (!msg || !strstr(msg, "memory")) {
            fprintf(stderr, "fuzz_value: Lua error: %s\n", msg ? msg : "?");
            __builtin_trap();
        }
    }
    lua_settop(L, 0);
    free(copy);
    if (++runs % 4096 == 0) lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
