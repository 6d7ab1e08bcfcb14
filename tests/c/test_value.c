/* test_value.c: unit tests for the value codec (host/codec/value.c).
 *
 * Values are encoded in one Lua VM and decoded in a second one, as between
 * two actors, then compared there with a deep-equal written in Lua. Also
 * checks exact bytes for the canonical encodings, every refusal and its error
 * path, the limits, and decode errors on malformed input (each must leave the
 * stack as it was). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "buf.h"
#include "value.h"

#include "check.h"

/* CHECK that also prints a message (an error text) when it fails. */
#define CHECK_MSG(cond, msg)                                                 \
    do {                                                                     \
        if (cond) {                                                          \
            passed++;                                                        \
        } else {                                                             \
            failed++;                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s (%s)\n", __FILE__,      \
                    __LINE__, #cond, (msg));                                 \
        }                                                                    \
    } while (0)

#define CONTAINS(hay, needle) (strstr((hay), (needle)) != NULL)

/* Does data[0..n) contain needle[0..m)? (memmem is not C11.) */
static int has_bytes(const char *data, size_t n, const char *needle,
                     size_t m) {
    for (size_t i = 0; m <= n && i <= n - m; i++)
        if (memcmp(data + i, needle, m) == 0) return 1;
    return 0;
}

static const char *const lua_helpers =
    "function deep_equal(a, b)\n"
    "  if type(a) ~= type(b) then return false end\n"
    "  if type(a) == 'number' then\n"
    "    if math.type(a) ~= math.type(b) then return false end\n"
    "    if a ~= a then return b ~= b end\n"
    "    return a == b\n"
    "  end\n"
    "  if type(a) ~= 'table' then return a == b end\n"
    "  local na, nb = 0, 0\n"
    "  for k, v in next, a do\n"
    "    na = na + 1\n"
    "    if type(k) ~= 'table' and not deep_equal(v, rawget(b, k)) then\n"
    "      return false\n"
    "    end\n"
    "  end\n"
    "  for _ in next, b do nb = nb + 1 end\n"
    "  return na == nb\n"
    "end\n"
    "function nest(n)\n"
    "  local t = {}\n"
    "  for _ = 2, n do t = {t} end\n"
    "  return t\n"
    "end\n";

static lua_State *new_vm(void) {
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "luaL_newstate failed\n");
        exit(2);
    }
    luaL_openlibs(L);
    if (luaL_dostring(L, lua_helpers) != LUA_OK) {
        fprintf(stderr, "helpers: %s\n", lua_tostring(L, -1));
        exit(2);
    }
    return L;
}

/* Runs Lua statements; CHECKs that they succeed. */
#define RUN(L, code) CHECK_MSG(run(L, code) == 0, lua_tostring(L, -1))
static int run(lua_State *L, const char *code) {
    if (luaL_dostring(L, code) != LUA_OK) return -1;
    return 0;
}

/* Pushes the value of a Lua expression (nil, with a CHECK failure, on
 * error). */
static void eval(lua_State *L, const char *expr) {
    char code[4096];
    snprintf(code, sizeof code, "return %s", expr);
    if (luaL_loadstring(L, code) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
        failed++;
        fprintf(stderr, "eval(%s): %s\n", expr, lua_tostring(L, -1));
        lua_pop(L, 1);
        lua_pushnil(L);
    }
}

/* Is the value at the top equal (deep_equal) to the expression's value?
 * Pops the value. */
static int top_equals(lua_State *L, const char *expr) {
    lua_getglobal(L, "deep_equal");
    lua_insert(L, -2);
    eval(L, expr);
    lua_call(L, 2, 1);
    int eq = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return eq;
}

static pl_value_limits limits(int depth, size_t size, int functions) {
    pl_value_limits lim = {depth, size, functions};
    return lim;
}

/* Encodes the expression's value; keeps the stack balanced. */
static int encode_expr(lua_State *L, const char *expr, pl_buf *out,
                       const pl_value_limits *lim, char *err, size_t errlen) {
    int top = lua_gettop(L);
    eval(L, expr);
    int rc = pl_value_encode(L, -1, out, lim, "value", err, errlen);
    CHECK(lua_gettop(L) == top + 1);
    lua_settop(L, top);
    return rc;
}

/* Decodes and checks the stack contract: one value pushed on success,
 * nothing on error. */
static ptrdiff_t decode(lua_State *L, const void *data, size_t len,
                        const pl_value_limits *lim, char *err, size_t errlen) {
    int top = lua_gettop(L);
    ptrdiff_t used = pl_value_decode(L, data, len, lim, err, errlen);
    if (used < 0) CHECK(lua_gettop(L) == top);
    else CHECK(lua_gettop(L) == top + 1);
    return used;
}

/* Encodes expr in A, decodes it in B, and compares it there with expr
 * evaluated in B. */
static int crosses(lua_State *A, lua_State *B, const char *expr) {
    pl_buf b;
    char err[256] = "";
    pl_buf_init(&b, 0);
    int ok = 0;
    if (encode_expr(A, expr, &b, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "encode %s: %s\n", expr, err);
    } else if (decode(B, b.data, b.len, NULL, err, sizeof err) !=
               (ptrdiff_t)b.len) {
        fprintf(stderr, "decode %s: %s\n", expr, err);
    } else {
        ok = top_equals(B, expr);
    }
    pl_buf_free(&b);
    return ok;
}

/* Does expr encode to exactly these bytes? */
static int encodes_as(lua_State *L, const char *expr, const char *bytes,
                      size_t n) {
    pl_buf b;
    char err[256] = "";
    pl_buf_init(&b, 0);
    int ok = encode_expr(L, expr, &b, NULL, err, sizeof err) == 0 &&
             b.len == n && memcmp(b.data, bytes, n) == 0;
    if (!ok) {
        fprintf(stderr, "encodes_as(%s): got %zu bytes:", expr, b.len);
        for (size_t i = 0; i < b.len && i < 32; i++)
            fprintf(stderr, " %02x", (unsigned char)b.data[i]);
        fprintf(stderr, " %s\n", err);
    }
    pl_buf_free(&b);
    return ok;
}
#define ENCODES_AS(L, expr, lit) \
    CHECK_MSG(encodes_as(L, expr, lit, sizeof(lit) - 1), expr)

/* Encoding expr fails, with an error containing `needle`, and leaves the
 * buffer's earlier contents alone. */
static int refuses(lua_State *L, const char *expr, const pl_value_limits *lim,
                   const char *needle) {
    pl_buf b;
    char err[256] = "";
    pl_buf_init(&b, 0);
    pl_buf_append(&b, "prefix", 6);
    int rc = encode_expr(L, expr, &b, lim, err, sizeof err);
    int ok = rc == -1 && b.len == 6 && memcmp(b.data, "prefix", 6) == 0 &&
             CONTAINS(err, needle);
    if (!ok)
        fprintf(stderr, "refuses(%s): rc %d, err \"%s\", want \"%s\"\n", expr,
                rc, err, needle);
    pl_buf_free(&b);
    return ok;
}
#define REFUSES(L, expr, lim, needle) CHECK(refuses(L, expr, lim, needle))

/* Decoding these bytes fails with an error containing needle. */
static int rejects(lua_State *L, const char *bytes, size_t n,
                   const pl_value_limits *lim, const char *needle) {
    char err[256] = "";
    ptrdiff_t used = decode(L, bytes, n, lim, err, sizeof err);
    int ok = used == -1 && CONTAINS(err, needle);
    if (!ok)
        fprintf(stderr, "rejects: used %td, err \"%s\", want \"%s\"\n", used,
                err, needle);
    return ok;
}
#define REJECTS(L, lit, needle) \
    CHECK(rejects(L, lit, sizeof(lit) - 1, NULL, needle))

static void test_scalar_bytes(lua_State *L) {
    ENCODES_AS(L, "nil", "\xc0");
    ENCODES_AS(L, "true", "\xc3");
    ENCODES_AS(L, "false", "\xc2");
    ENCODES_AS(L, "0", "\x00");
    ENCODES_AS(L, "127", "\x7f");
    ENCODES_AS(L, "128", "\xcc\x80");
    ENCODES_AS(L, "-1", "\xff");
    ENCODES_AS(L, "-32", "\xe0");
    ENCODES_AS(L, "-33", "\xd0\xdf");
    ENCODES_AS(L, "65536", "\xce\x00\x01\x00\x00");
    ENCODES_AS(L, "math.maxinteger", "\xcf\x7f\xff\xff\xff\xff\xff\xff\xff");
    ENCODES_AS(L, "math.mininteger", "\xd3\x80\x00\x00\x00\x00\x00\x00\x00");
    ENCODES_AS(L, "1.0", "\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00");
    ENCODES_AS(L, "1", "\x01");
    ENCODES_AS(L, "'abc'", "\xa3" "abc");
    ENCODES_AS(L, "'a\\0b'", "\xa3" "a\x00" "b");
    ENCODES_AS(L, "{}", "\x90");
    ENCODES_AS(L, "{1, 2}", "\x92\x01\x02");
    ENCODES_AS(L, "{a = 1}", "\x81\xa1" "a" "\x01");
    ENCODES_AS(L, "{[2] = 'x'}", "\x81\x02\xa1" "x");
    ENCODES_AS(L, "setmetatable({}, {__index = function() return 1 end})",
               "\x90");
}

static void test_round_trips(lua_State *A, lua_State *B) {
    const char *exprs[] = {
        "nil", "true", "false", "0", "1", "-1", "1.0", "-0.0", "0.5", "1e300",
        "1/0", "-1/0", "math.maxinteger", "math.mininteger",
        "math.maxinteger + 0.0", "255", "256", "65535", "65536", "-129",
        "-32769", "4294967296", "-4294967297", "''", "'hello'",
        "string.rep('x', 31)", "string.rep('x', 32)", "string.rep('y', 255)",
        "string.rep('y', 256)", "string.rep('z', 70000)",
        "'\\0\\1\\2\\255 binary \\0'", "{}", "{1, 2, 3}", "{'a', 'b', {}}",
        "{a = 1, b = 'two', c = {3}}", "{[1] = 'a', [3] = 'c'}",
        "{[0] = 0, 1}", "{[-1] = 1}", "{[1.5] = 'f', [true] = 'b'}",
        "{x = {y = {z = {1, 2, {w = 'deep'}}}}}", "{n = 0/0}",
        "{1.0, 2, 3.5}", "{['a b'] = {[''] = false}}",
        "(function() local t = {} for i = 1, 1000 do t[i] = i * 2 end "
        "return t end)()",
        "(function() local t = {} for i = 1, 100 do t['k' .. i] = {i} end "
        "return t end)()",
    };
    for (size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++)
        CHECK_MSG(crosses(A, B, exprs[i]), exprs[i]);

    /* Subtypes survive: 1.0 stays a float, 1 an integer. */
    char err[256];
    pl_buf b;
    pl_buf_init(&b, 0);
    CHECK(encode_expr(A, "{1.0, 1}", &b, NULL, err, sizeof err) == 0);
    CHECK(decode(B, b.data, b.len, NULL, err, sizeof err) == (ptrdiff_t)b.len);
    lua_setglobal(B, "v");
    RUN(B, "assert(math.type(v[1]) == 'float' and math.type(v[2]) == "
           "'integer')");
    pl_buf_free(&b);

    /* A sparse table is a map; a sequence is an array. */
    pl_buf_init(&b, 0);
    CHECK(encode_expr(A, "{1, nil, 3}", &b, NULL, err, sizeof err) == 0);
    CHECK(b.len > 0 && (unsigned char)b.data[0] == 0x82);
    pl_buf_free(&b);
    pl_buf_init(&b, 0);
    CHECK(encode_expr(A, "{1, 2, 3}", &b, NULL, err, sizeof err) == 0);
    CHECK(b.len > 0 && (unsigned char)b.data[0] == 0x93);
    pl_buf_free(&b);

    /* Repeated, acyclic references are fine (encoded twice). */
    CHECK(crosses(A, B, "(function() local s = {1} return {s, s, {s}} end)()"));
}

static void test_decode_inputs(lua_State *L) {
    char err[256];
    /* uint64 above INT64_MAX becomes a float. */
    CHECK(decode(L, "\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9, NULL, err,
                 sizeof err) == 9);
    CHECK(top_equals(L, "18446744073709551615.0"));
    CHECK(decode(L, "\xcf\x80\x00\x00\x00\x00\x00\x00\x00", 9, NULL, err,
                 sizeof err) == 9);
    CHECK(top_equals(L, "2.0^63"));
    CHECK(decode(L, "\xcf\x7f\xff\xff\xff\xff\xff\xff\xff", 9, NULL, err,
                 sizeof err) == 9);
    CHECK(top_equals(L, "math.maxinteger"));
    /* Wide forms of small numbers. */
    CHECK(decode(L, "\xd3\x00\x00\x00\x00\x00\x00\x00\x05", 9, NULL, err,
                 sizeof err) == 9);
    CHECK(top_equals(L, "5"));
    CHECK(decode(L, "\xd3\xff\xff\xff\xff\xff\xff\xff\xfe", 9, NULL, err,
                 sizeof err) == 9);
    CHECK(top_equals(L, "-2"));
    CHECK(decode(L, "\xd0\x80", 2, NULL, err, sizeof err) == 2);
    CHECK(top_equals(L, "-128"));
    CHECK(decode(L, "\xd1\x80\x00", 3, NULL, err, sizeof err) == 3);
    CHECK(top_equals(L, "-32768"));
    CHECK(decode(L, "\xd2\x80\x00\x00\x00", 5, NULL, err, sizeof err) == 5);
    CHECK(top_equals(L, "-2147483648"));
    CHECK(decode(L, "\xcd\xff\xff", 3, NULL, err, sizeof err) == 3);
    CHECK(top_equals(L, "65535"));
    /* float32 becomes a float. */
    CHECK(decode(L, "\xca\x3f\xc0\x00\x00", 5, NULL, err, sizeof err) == 5);
    CHECK(top_equals(L, "1.5"));
    CHECK(decode(L, "\xca\x3f\x80\x00\x00", 5, NULL, err, sizeof err) == 5);
    CHECK(top_equals(L, "1.0"));
    /* bin and every str form are strings. */
    CHECK(decode(L, "\xc4\x03" "a\x00" "b", 5, NULL, err, sizeof err) == 5);
    CHECK(top_equals(L, "'a\\0b'"));
    CHECK(decode(L, "\xc5\x00\x02hi", 5, NULL, err, sizeof err) == 5);
    CHECK(top_equals(L, "'hi'"));
    CHECK(decode(L, "\xc6\x00\x00\x00\x01!", 6, NULL, err, sizeof err) == 6);
    CHECK(top_equals(L, "'!'"));
    CHECK(decode(L, "\xd9\x02hi", 4, NULL, err, sizeof err) == 4);
    CHECK(top_equals(L, "'hi'"));
    CHECK(decode(L, "\xda\x00\x02hi", 5, NULL, err, sizeof err) == 5);
    CHECK(top_equals(L, "'hi'"));
    CHECK(decode(L, "\xdb\x00\x00\x00\x02hi", 7, NULL, err, sizeof err) == 7);
    CHECK(top_equals(L, "'hi'"));
    /* Arrays with nil items leave holes; wide array and map headers. */
    CHECK(decode(L, "\x93\x01\xc0\x03", 4, NULL, err, sizeof err) == 4);
    CHECK(top_equals(L, "{[1] = 1, [3] = 3}"));
    CHECK(decode(L, "\xdc\x00\x01\x07", 4, NULL, err, sizeof err) == 4);
    CHECK(top_equals(L, "{7}"));
    CHECK(decode(L, "\xdd\x00\x00\x00\x01\x07", 6, NULL, err, sizeof err) ==
          6);
    CHECK(top_equals(L, "{7}"));
    CHECK(decode(L, "\xde\x00\x01\xa1k\x07", 6, NULL, err, sizeof err) == 6);
    CHECK(top_equals(L, "{k = 7}"));
    CHECK(decode(L, "\xdf\x00\x00\x00\x01\xa1k\x07", 8, NULL, err,
                 sizeof err) == 8);
    CHECK(top_equals(L, "{k = 7}"));
    /* A float key with an integral value is the integer key in Lua. */
    CHECK(decode(L, "\x81\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00\xa1x", 12, NULL,
                 err, sizeof err) == 12);
    CHECK(top_equals(L, "{'x'}"));
    /* Trailing bytes are not part of the value. */
    CHECK(decode(L, "\x01\x02", 2, NULL, err, sizeof err) == 1);
    CHECK(top_equals(L, "1"));
}

static void test_functions(lua_State *A, lua_State *B) {
    pl_value_limits lim = pl_value_default_limits;
    char err[256];
    struct {
        const char *make;   /* expression in A giving the function */
        const char *check;  /* Lua in B, with the function as global f */
    } cases[] = {
        {"(function() local x = 41 return function() return x + 1 end end)()",
         "assert(f() == 42)"},
        {"(function() local t = {a = 1, b = {2, 3}} "
         "return function() return t.a + t.b[2] end end)()",
         "assert(f() == 4)"},
        {"function() return greeting end", "assert(f() == 'hello from B')"},
        {"(function() local string = string "
         "return function(s) return string.upper(s) end end)()",
         "assert(f('abc') == 'ABC'); "
         "assert(select(2, debug.getupvalue(f, 1)) == string)"},
        {"(function() local function fib(n) if n < 2 then return n end "
         "return fib(n - 1) + fib(n - 2) end return fib end)()",
         "assert(f(20) == 6765)"},
        {"(function() local function sq(x) return x * x end "
         "return function(y) return sq(y) + 1 end end)()",
         "assert(f(3) == 10)"},
        {"(function() local even, odd "
         "function even(n) if n == 0 then return true end return odd(n - 1) "
         "end "
         "function odd(n) if n == 0 then return false end return even(n - 1) "
         "end return even end)()",
         "assert(f(10) == true and f(7) == false)"},
        {"(function() local function outer() "
         "local function inner(n) if n == 0 then return 'done' end "
         "return outer(n - 1) end return inner end "
         "return outer() end)()",
         "assert(f(0) == 'done' and type(f(1)) == 'function')"},
        {"print", "assert(f == print)"},
        {"(function() local fmt = string.format "
         "return function(n) return fmt('%03d', n) end end)()",
         "assert(f(7) == '007')"},
        {"string.format", "assert(f == string.format)"},
        {"{f = function(a, b) return a .. b end, n = 1}",
         "assert(f.f('x', 'y') == 'xy' and f.n == 1)"},
        {"(function() local _ENV = {greeting = 'sender'} "
         "return function() return greeting end end)()",
         "assert(f() == 'hello from B')"},
    };
    RUN(A, "greeting = 'hello from A'");
    RUN(B, "greeting = 'hello from B'");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pl_buf b;
        pl_buf_init(&b, 0);
        int rc = encode_expr(A, cases[i].make, &b, &lim, err, sizeof err);
        CHECK_MSG(rc == 0, err);
        if (rc == 0) {
            ptrdiff_t used = decode(B, b.data, b.len, &lim, err, sizeof err);
            CHECK_MSG(used == (ptrdiff_t)b.len, err);
            if (used > 0) {
                lua_setglobal(B, "f");
                CHECK_MSG(run(B, cases[i].check) == 0, cases[i].make);
                lua_settop(B, 0);
            }
        }
        pl_buf_free(&b);
    }

    /* print crosses by name, as ("_G", "print"). */
    pl_buf b;
    pl_buf_init(&b, 0);
    CHECK(encode_expr(A, "print", &b, &lim, err, sizeof err) == 0);
    CHECK(b.len == 13 && memcmp(b.data, "\xc7\x0a\x01\x92\xa2_G\xa5print",
                                13) == 0);
    pl_buf_free(&b);

    /* A function's upvalue names its module for the receiver's require. */
    pl_buf_init(&b, 0);
    CHECK(encode_expr(A, "(function() local m = math return function() "
                         "return m.pi end end)()",
                      &b, &lim, err, sizeof err) == 0);
    CHECK(b.len > 0 && has_bytes(b.data, b.len, "\xd6\x04math", 6));

    /* The same bytes are refused where functions are not allowed. */
    pl_value_limits nofn = pl_value_default_limits;
    nofn.allow_functions = 0;
    CHECK(rejects(B, b.data, b.len, &nofn, "functions are not accepted here"));
    /* ...and every strict prefix is an error. */
    for (size_t n = 0; n < b.len; n++)
        CHECK(decode(B, b.data, n, &lim, err, sizeof err) == -1);
    pl_buf_free(&b);

    /* A module the receiver cannot load. */
    RUN(A, "package.loaded.only_in_a = {x = 5}");
    pl_buf_init(&b, 0);
    CHECK(encode_expr(A, "(function() local m = package.loaded.only_in_a "
                         "return function() return m.x end end)()",
                      &b, &lim, err, sizeof err) == 0);
    CHECK(rejects(B, b.data, b.len, &lim, "cannot require module \"only_in_a\""));
    pl_buf_free(&b);

    /* A C function of a module the receiver lacks. */
    RUN(A, "package.loaded.cmod = {fmt = string.format}; "
           "package.loaded.string = nil; package.loaded.xstring = string");
    pl_buf_init(&b, 0);
    CHECK(encode_expr(A, "string.format", &b, &lim, err, sizeof err) == 0);
    CHECK(b.len > 0 && has_bytes(b.data, b.len, "cmod", 4));
    CHECK(rejects(B, b.data, b.len, &lim, "cannot require module \"cmod\""));
    RUN(A, "package.loaded.string = string; package.loaded.xstring = nil; "
           "package.loaded.cmod = nil");
    pl_buf_free(&b);

    /* Upvalue entries beyond the function's own are an error. */
    {
        lua_State *C = new_vm();
        pl_buf code;
        pl_buf_init(&code, 0);
        CHECK(encode_expr(C, "load('return 7')", &code, &lim, err,
                          sizeof err) == 0);
        /* Its last bytes are the upvalue array: 0x91 then ext 3 (c7 00 03). */
        CHECK(code.len > 4 && memcmp(code.data + code.len - 4,
                                     "\x91\xc7\x00\x03", 4) == 0);
        if (code.len > 4 && (unsigned char)code.data[0] == 0xc7 &&
            (unsigned char)code.data[1] < 250) {
            code.data[code.len - 4] = (char)0x93; /* 3 entries, 1 upvalue */
            pl_buf_append(&code, "\x01\x02", 2);
            code.data[1] = (char)(code.data[1] + 2);
            CHECK(rejects(B, code.data, code.len, &lim,
                          "fewer upvalues than the 3 sent"));
        }
        pl_buf_free(&code);
        lua_close(C);
    }
    lua_settop(A, 0);
    lua_settop(B, 0);
}

static int ud_cfunction(lua_State *L) {
    (void)L;
    return 0;
}

static void test_refusals(lua_State *L) {
    pl_value_limits lim = pl_value_default_limits;
    char err[256];
    pl_buf b;

    /* Argument lists: paths read args[i]. */
    lua_settop(L, 0);
    lua_pushinteger(L, 1);
    eval(L, "{co = coroutine.create(print)}");
    pl_buf_init(&b, 0);
    CHECK(pl_value_encode_list(L, 1, 2, &b, &lim, "args", err, sizeof err) ==
          -1);
    CHECK_MSG(strcmp(err, "args[2].co: cannot encode a thread") == 0, err);
    CHECK(b.len == 0);
    CHECK(lua_gettop(L) == 2);
    lua_settop(L, 0);
    lua_pushinteger(L, 1);
    lua_pushnil(L);
    lua_pushstring(L, "x");
    CHECK(pl_value_encode_list(L, 1, 3, &b, &lim, "args", err, sizeof err) ==
          0);
    CHECK(b.len == 5 && memcmp(b.data, "\x93\x01\xc0\xa1x", 5) == 0);
    b.len = 0;
    CHECK(pl_value_encode_list(L, -2, 2, &b, &lim, "args", err, sizeof err) ==
          0);
    CHECK(b.len == 4 && memcmp(b.data, "\x92\xc0\xa1x", 4) == 0);
    b.len = 0;
    CHECK(pl_value_encode_list(L, 1, 0, &b, &lim, "args", err, sizeof err) ==
          0);
    CHECK(b.len == 1 && (unsigned char)b.data[0] == 0x90);
    pl_buf_free(&b);
    lua_settop(L, 0);

    REFUSES(L, "coroutine.create(print)", &lim, "value: cannot encode a thread");
    REFUSES(L, "(function() local co = coroutine.create(print) "
               "return {f = function() return co end} end)()",
            &lim, "value.f upvalue 'co': cannot encode a thread");
    REFUSES(L, "{[coroutine.create(print)] = 1}", &lim,
            "value key [thread]: cannot encode a thread");
    REFUSES(L, "{['a b'] = {[3] = {[true] = {[1.5] = {[{}] = "
               "coroutine.create(print)}}}}}",
            &lim, "value[\"a b\"][3][true][1.5][table]: cannot encode a thread");
    REFUSES(L, "{['end'] = io.stdout}", &lim,
            "value[\"end\"]: cannot encode a userdata");
    REFUSES(L, "{['q\"\\n'] = io.stdout}", &lim,
            "value[\"q\\\"\\n\"]: cannot encode a userdata");
    REFUSES(L, "{[string.rep('k', 100)] = io.stdout}", &lim,
            "value[\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk...\"]: cannot encode");

    /* A full userdata made in C. */
    lua_newtable(L);
    lua_newuserdatauv(L, 16, 0);
    lua_setfield(L, -2, "h");
    lua_setglobal(L, "with_ud");
    REFUSES(L, "with_ud", &lim, "value.h: cannot encode a userdata");

    /* A C function no module holds. */
    lua_pushcfunction(L, ud_cfunction);
    lua_setglobal(L, "stray");
    lua_pushnil(L);
    lua_setglobal(L, "stray"); /* _G no longer holds it either */
    lua_pushcfunction(L, ud_cfunction);
    lua_setglobal(L, "stray");
    RUN(L, "local cf = stray; stray = nil; "
           "g = {fn = function() return cf end}");
    REFUSES(L, "g", &lim,
            "value.fn upvalue 'cf': cannot encode a C function that is not a "
            "field of a loaded module");
    lua_pushcfunction(L, ud_cfunction);
    pl_buf_init(&b, 0);
    CHECK(pl_value_encode(L, -1, &b, &lim, "value", err, sizeof err) == -1);
    CHECK_MSG(strcmp(err, "value: cannot encode a C function that is not a "
                          "field of a loaded module") == 0, err);
    CHECK(b.len == 0);
    pl_buf_free(&b);
    lua_settop(L, 0);

    /* Cycles, found through the ancestors only. */
    REFUSES(L, "(function() local t = {a = {}} t.a.b = t return t end)()",
            &lim, "value.a.b: cycle: this table is already being encoded at "
                  "value");
    REFUSES(L, "(function() local t = {x = {y = {}}} t.x.y.z = t.x "
               "return t end)()",
            &lim, "value.x.y.z: cycle: this table is already being encoded "
                  "at value.x");
    REFUSES(L, "(function() local t = {} t[1] = t return t end)()", &lim,
            "value[1]: cycle");
    REFUSES(L, "(function() local t = {} local function f() return t end "
               "t.f = f return t end)()",
            &lim, "value.f upvalue 't': cycle: this table is already being "
                  "encoded at value");

    /* Depth: exactly at the limit passes, one more fails. */
    pl_value_limits d3 = limits(3, 1 << 20, 1);
    pl_buf_init(&b, 0);
    CHECK(encode_expr(L, "nest(3)", &b, &d3, err, sizeof err) == 0);
    CHECK(decode(L, b.data, b.len, &d3, err, sizeof err) == (ptrdiff_t)b.len);
    lua_settop(L, 0);
    pl_value_limits d2 = limits(2, 1 << 20, 1);
    CHECK(rejects(L, b.data, b.len, &d2, "nested deeper than 2 levels at byte 2"));
    pl_buf_free(&b);
    REFUSES(L, "nest(4)", &d3, "value[1][1][1]: nested deeper than 3 levels");
    pl_buf_init(&b, 0);
    CHECK(encode_expr(L, "{{{1, 'x', 2.5}}}", &b, &d3, err, sizeof err) == 0);
    pl_buf_free(&b);
    pl_buf_init(&b, 0);
    CHECK(encode_expr(L, "nest(100)", &b, &lim, err, sizeof err) == 0);
    CHECK(decode(L, b.data, b.len, &lim, err, sizeof err) == (ptrdiff_t)b.len);
    lua_settop(L, 0);
    pl_buf_free(&b);
    REFUSES(L, "nest(101)", &lim,
            "value[1][1][1]...[1][1][1][1][1][1][1][1]: nested deeper than "
            "100 levels");
    /* Functions count as levels too. */
    REFUSES(L, "{{function() end}}", &d2, "value[1][1]: nested deeper than 2");
    /* The argument list is level 1. */
    eval(L, "nest(2)");
    pl_buf_init(&b, 0);
    CHECK(pl_value_encode_list(L, 1, 1, &b, &d3, "args", err, sizeof err) == 0);
    CHECK(pl_value_encode_list(L, 1, 1, &b, &d2, "args", err, sizeof err) == -1);
    CHECK_MSG(strcmp(err, "args[1][1]: nested deeper than 2 levels") == 0, err);
    pl_buf_free(&b);
    lua_settop(L, 0);
    /* A depth limit beyond any reason is capped, not trusted. */
    pl_value_limits huge = limits(1 << 30, 1 << 20, 0);
    REFUSES(L, "nest(1001)", &huge, "nested deeper than 1000 levels");

    /* Size: exactly at the limit passes, one byte less fails. */
    pl_buf_init(&b, 0);
    pl_buf_append(&b, "xyz", 3); /* the limit counts from here */
    CHECK(encode_expr(L, "{s = string.rep('a', 100)}", &b, &lim, err,
                      sizeof err) == 0);
    size_t size = b.len - 3;
    pl_value_limits exact = limits(100, size, 1);
    b.len = 3;
    CHECK(encode_expr(L, "{s = string.rep('a', 100)}", &b, &exact, err,
                      sizeof err) == 0);
    CHECK(b.len == 3 + size);
    CHECK(decode(L, b.data + 3, size, &exact, err, sizeof err) ==
          (ptrdiff_t)size);
    lua_settop(L, 0);
    pl_value_limits less = limits(100, size - 1, 1);
    CHECK(rejects(L, b.data + 3, size, &less, "exceeds the limit"));
    pl_buf_free(&b);
    char want[80];
    snprintf(want, sizeof want,
             "value: encoded value exceeds the limit of %zu bytes", size - 1);
    REFUSES(L, "{s = string.rep('a', 100)}", &less, want);
    /* The size limit holds inside a function's scratch buffer too. */
    pl_value_limits tiny = limits(100, 64, 1);
    REFUSES(L, "(function() local s = string.rep('b', 200) "
               "return function() return s end end)()",
            &tiny, "value: encoded value exceeds the limit of 64 bytes");
    /* The buffer's own cap. */
    pl_buf_init(&b, 10);
    CHECK(encode_expr(L, "string.rep('c', 20)", &b, &lim, err, sizeof err) ==
          -1);
    CHECK_MSG(CONTAINS(err, "cannot grow"), err);
    CHECK(b.len == 0);
    pl_buf_free(&b);

    /* A tiny err buffer is truncated, not overrun. */
    char small[8];
    pl_buf_init(&b, 0);
    CHECK(encode_expr(L, "coroutine.create(print)", &b, &lim, small,
                      sizeof small) == -1);
    CHECK(strcmp(small, "value: ") == 0);
    CHECK(encode_expr(L, "coroutine.create(print)", &b, &lim, NULL, 0) == -1);
    pl_buf_free(&b);
}

static void test_proxies(lua_State *A, lua_State *B) {
    const char *setup =
        "proxy_mt = {__index = {kind = 'proxy'}}\n"
        "debug.getregistry()['pulsar.ActorProxy'] = proxy_mt\n";
    RUN(A, setup);
    RUN(B, setup);
    const char *make = "{p = setmetatable({aid = 'a1', name = 'worker', "
                       "address = 'tcp://h:1'}, proxy_mt), n = 1}";
    char err[256];
    pl_buf b;
    pl_buf_init(&b, 0);
    CHECK(encode_expr(A, make, &b, NULL, err, sizeof err) == 0);
    CHECK(has_bytes(b.data, b.len, "\xc7", 1));
    CHECK(decode(B, b.data, b.len, NULL, err, sizeof err) == (ptrdiff_t)b.len);
    lua_setglobal(B, "v");
    RUN(B, "assert(getmetatable(v.p) == proxy_mt)");
    RUN(B, "assert(v.p.aid == 'a1' and v.p.name == 'worker' and "
           "v.p.address == 'tcp://h:1' and v.p.kind == 'proxy' and v.n == 1)");
    for (size_t n = 0; n < b.len; n++)
        CHECK(decode(B, b.data, n, NULL, err, sizeof err) == -1);
    /* A VM without the metatable gets a plain table. */
    lua_State *C = new_vm();
    CHECK(decode(C, b.data, b.len, NULL, err, sizeof err) == (ptrdiff_t)b.len);
    lua_setglobal(C, "v");
    RUN(C, "assert(getmetatable(v.p) == nil and v.p.aid == 'a1')");
    lua_close(C);
    pl_buf_free(&b);
    /* Proxy bytes: ext 2 holding a one-field map. */
    ENCODES_AS(A, "setmetatable({aid = 'x'}, proxy_mt)",
               "\xc7\x07\x02\x81\xa3" "aid\xa1x");
    ENCODES_AS(A, "setmetatable({}, proxy_mt)", "\xd4\x02\x80");
    REFUSES(A, "setmetatable({co = coroutine.create(print)}, proxy_mt)", NULL,
            "value.co: cannot encode a thread");
    /* Other metatables are ignored. */
    ENCODES_AS(A, "setmetatable({}, {})", "\x90");
    /* Malformed proxies. */
    REJECTS(B, "\xd4\x02\x01", "proxy at byte 0: expected a map at byte 2");
    REJECTS(B, "\xc7\x03\x02\x80\x01\x02", "has 2 trailing bytes");
    REJECTS(B, "\xd5\x02\x81\xc0", "exceeds the input");
    RUN(A, "debug.getregistry()['pulsar.ActorProxy'] = nil");
    RUN(B, "debug.getregistry()['pulsar.ActorProxy'] = nil");
}

static void test_decode_errors(lua_State *L) {
    char err[256];
    lua_settop(L, 0);
    REJECTS(L, "", "truncated input at byte 0");
    REJECTS(L, "\x92\xcd\x01", "truncated input at byte 1");
    REJECTS(L, "\x93\x01\x02", "array of 3 items at byte 0 exceeds the input");
    REJECTS(L, "\xcd\x01", "truncated input at byte 0");
    REJECTS(L, "\x93\x01\x02\xc1", "invalid byte 0xc1 at byte 3");
    REJECTS(L, "\xc1", "invalid byte 0xc1 at byte 0");
    REJECTS(L, "\xdd\xff\xff\xff\xff",
            "array of 4294967295 items at byte 0 exceeds the input");
    REJECTS(L, "\xdd\x0f\xff\xff\xff", "array of 268435455 items at byte 0");
    REJECTS(L, "\xdc\xff\xff\x01\x02", "array of 65535 items at byte 0");
    REJECTS(L, "\xdf\xff\xff\xff\xff",
            "map of 4294967295 pairs at byte 0 exceeds the input");
    REJECTS(L, "\xde\x00\x02\x01\x02\x03", "map of 2 pairs at byte 0");
    REJECTS(L, "\xdb\xff\xff\xff\xff", "str of 4294967295 bytes at byte 0");
    REJECTS(L, "\xc6\xff\xff\xff\xff", "bin of 4294967295 bytes at byte 0");
    REJECTS(L, "\xc9\xff\xff\xff\xff\x01",
            "extension of 4294967295 bytes at byte 0 exceeds the input");
    REJECTS(L, "\xd8\x01\x00", "extension of 16 bytes at byte 0");
    REJECTS(L, "\xa5" "abc", "str of 5 bytes at byte 0 exceeds the input");
    REJECTS(L, "\x81\xc0\x01", "nil map key at byte 1");
    REJECTS(L, "\x82\x01\x01\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00\x01",
            "NaN map key at byte 3");
    REJECTS(L, "\x81\xca\x7f\xc0\x00\x00\x01", "NaN map key at byte 1");
    REJECTS(L, "\xc7\x00\x03",
            "extension type 3 at byte 0 outside a function's upvalues");
    REJECTS(L, "\x91\xd5\x04_G",
            "extension type 4 at byte 1 outside a function's upvalues");
    REJECTS(L, "\x81\xa1k\xd4\x06\x00",
            "extension type 6 at byte 3 outside a function's upvalues");
    REJECTS(L, "\xd4\x09\x00", "unknown extension type 9 at byte 0");
    REJECTS(L, "\xd4\x05\x00", "unknown extension type 5 at byte 0");
    REJECTS(L, "\xd6\xff\x00\x00\x00\x00", "unknown extension type -1 at byte 0");

    /* Functions: malformed ext 1 bodies. */
    pl_value_limits lim = pl_value_default_limits;
#define REJECTS_FN(L, lit, needle) \
    CHECK(rejects(L, lit, sizeof(lit) - 1, &lim, needle))
    REJECTS_FN(L, "\xd4\x01\x90", "expected an array of 2");
    REJECTS_FN(L, "\xd4\x01\x01", "expected an array at byte 2");
    REJECTS_FN(L, "\xd5\x01\x92\x01", "expected bytecode or a name at byte 3");
    REJECTS_FN(L, "\xc7\x07\x01\x92\xc4\x03" "abc\x90",
               "invalid function bytecode at byte 4");
    REJECTS_FN(L, "\xc7\x09\x01\x92\xa2_G\xa4nope",
               "\"_G\".\"nope\" is not a function here");
    REJECTS_FN(L, "\xc7\x05\x01\x92\xa2_G\x01", "expected a string at byte 7");
    REJECTS_FN(L, "\xc7\x0d\x01\x92\xa6nomod!\xa4nope",
               "cannot require module \"nomod!\"");
    REJECTS_FN(L, "\xc7\x09\x01\x92\xa6string\xa0", "is not a function");
    REJECTS_FN(L, "\xc7\x07\x01\x92\xc4\x09" "abc\x90",
               "bin of 9 bytes at byte 4 exceeds the input");

    /* Upvalue extensions with bad bodies, inside a real function. */
    {
        lua_State *C = new_vm();
        pl_buf b;
        pl_buf_init(&b, 0);
        CHECK(encode_expr(C, "load('return 7')", &b, &lim, err, sizeof err) ==
              0);
        /* Replace the trailing ext 3 (c7 00 03) by ext 6 k=5 (d4 06 05). */
        if (b.len > 4) {
            memcpy(b.data + b.len - 3, "\xd4\x06\x05", 3);
            CHECK(rejects(L, b.data, b.len, &lim,
                          "refers to a function 5 levels up"));
            memcpy(b.data + b.len - 3, "\xd4\x06\x00", 3);
            ptrdiff_t used = decode(L, b.data, b.len, &lim, err, sizeof err);
            CHECK(used == (ptrdiff_t)b.len);
            if (used > 0) {
                /* Its upvalue is now itself, and it still runs. */
                lua_setglobal(L, "g");
                RUN(L, "assert(g() == 7 and select(2, debug.getupvalue(g, 1)) "
                       "== g)");
            }
            memcpy(b.data + b.len - 3, "\xd4\x03\x00", 3);
            CHECK(rejects(L, b.data, b.len, &lim,
                          "extension type 3 at byte"));
        }
        pl_buf_free(&b);
        lua_close(C);
    }

    /* Input longer than max_size is refused up front. */
    pl_value_limits small = limits(10, 4, 0);
    CHECK(rejects(L, "\x01\x02\x03\x04\x05", 5, &small,
                  "input of 5 bytes exceeds the limit of 4 bytes"));
    CHECK(decode(L, "\x01\x02\x03\x04", 4, &small, err, sizeof err) == 1);
    lua_settop(L, 0);

    /* Every strict prefix of valid encodings is an error. */
    const char *exprs[] = {
        "{1, 'two', 3.0, {a = true, b = {false}}, math.mininteger}",
        "{s = string.rep('x', 300), [1.5] = -70000, [-3] = 4294967296}",
        "string.rep('y', 70000)",
        "{{{{{}}}}}",
    };
    for (size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++) {
        pl_buf b;
        pl_buf_init(&b, 0);
        CHECK(encode_expr(L, exprs[i], &b, NULL, err, sizeof err) == 0);
        int all = 1;
        for (size_t n = 0; n < b.len; n++) {
            int top = lua_gettop(L);
            if (pl_value_decode(L, b.data, n, NULL, err, sizeof err) != -1 ||
                lua_gettop(L) != top)
                all = 0;
        }
        CHECK_MSG(all, exprs[i]);
        pl_buf_free(&b);
    }
    CHECK(lua_gettop(L) == 0);
}

int main(void) {
    lua_State *A = new_vm();
    lua_State *B = new_vm();
    test_scalar_bytes(A);
    test_round_trips(A, B);
    test_decode_inputs(B);
    test_functions(A, B);
    test_refusals(A);
    test_proxies(A, B);
    test_decode_errors(B);
    lua_close(A);
    lua_close(B);
    return CHECK_REPORT("value");
}
