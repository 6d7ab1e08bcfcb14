/* lauth.c: the TCP mailbox's secrets seen from Lua, as part of pulsar.core.
 *
 *   core.random_bytes(n)        -> n bytes from the system's secure source
 *   core.hmac_sha256(key, msg)  -> the 32-byte HMAC-SHA256 (any key length)
 *   core.equal_secrets(a, b)    -> whether two strings are equal, in a time
 *                                  that depends on their length only
 *   core.load_cookie([path [, create = true]]) -> bytes | nil, err
 *
 * The handshake that uses them is lua/pulsar/auth.lua's; the arbiter
 * (lua/pulsar/arbiter.lua, for `--mailbox HOST:PORT`) and a console
 * (lua/pulsar/attach.lua, for `--attach HOST:PORT`) load the cookie here.
 * What each does, and the cookie file's rules, are auth.c's. */
#include <limits.h>
#include <string.h>

#include <lauxlib.h>

#include "auth.h"
#include "host.h"

#define RANDOM_MAX (1 << 16) /* the most random bytes one call gives */

static int core_random_bytes(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0 && n <= RANDOM_MAX, 1, "count out of range");
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, (size_t)n);
    pl_random_bytes(p, (size_t)n);
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

static int core_hmac_sha256(lua_State *L) {
    size_t keylen, msglen;
    const char *key = luaL_checklstring(L, 1, &keylen);
    const char *msg = luaL_checklstring(L, 2, &msglen);
    unsigned char mac[PL_HMAC_BYTES];
    pl_hmac_sha256(key, keylen, msg, msglen, mac);
    lua_pushlstring(L, (const char *)mac, sizeof mac);
    return 1;
}

static int core_equal_secrets(lua_State *L) {
    size_t alen, blen;
    const char *a = luaL_checklstring(L, 1, &alen);
    const char *b = luaL_checklstring(L, 2, &blen);
    lua_pushboolean(L, pl_equal_secrets(a, alen, b, blen));
    return 1;
}

/* The cookie's C copy, on the stack, is wiped as soon as Lua has its own. */
static int core_load_cookie(lua_State *L) {
    const char *given = luaL_optstring(L, 1, NULL);
    int create = lua_isnoneornil(L, 2) || lua_toboolean(L, 2);
    luaL_argcheck(L, !given || (*given && strlen(given) < PATH_MAX), 1,
                  "cookie path empty or too long");
    pl_cookie c;
    char err[PATH_MAX * 3 + 300]; /* a message names the path thrice */
    int rc = pl_load_cookie(given, create, pl_host_of(L)->name, &c, err,
                            sizeof err);
    if (rc == 0) lua_pushlstring(L, c.data, c.len);
    pl_cookie_wipe(&c);
    if (rc == 0) return 1;
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

static const luaL_Reg auth_functions[] = {
    {"random_bytes", core_random_bytes},
    {"hmac_sha256", core_hmac_sha256},
    {"equal_secrets", core_equal_secrets},
    {"load_cookie", core_load_cookie},
    {NULL, NULL},
};

void pl_lauth_register(lua_State *L) {
    if (pl_auth_start() != 0) luaL_error(L, "libsodium could not start");
    luaL_setfuncs(L, auth_functions, 0);
}
