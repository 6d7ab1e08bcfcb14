/* lsock.c: the pieces lconn.c and lnet.c share in their Lua faces (see
 * lsock.h). Mailbox listeners (lconn.c) and servers and bound sockets
 * (lnet.c) answer `address` the same way, and core.connect and
 * core.net_connect wait for their outcome the same way; the objects
 * themselves stay in their files, since their lifetimes differ. */
#include "lsock.h"

#include <stdlib.h>
#include <string.h>

int pl_lsock_index(lua_State *L) {
    luaL_checktype(L, 1, LUA_TUSERDATA);
    if (lua_type(L, 2) == LUA_TSTRING &&
        strcmp(lua_tostring(L, 2), "address") == 0) {
        lua_getiuservalue(L, 1, 1);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
}

void pl_lsock_set_index(lua_State *L, const luaL_Reg *methods) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_pushcclosure(L, pl_lsock_index, 1);
    lua_setfield(L, -2, "__index");
}

struct pl_lsock_callback {
    pl_host *host;
    int fn_ref;
};

pl_lsock_callback *pl_lsock_callback_new(lua_State *L, int arg) {
    luaL_checktype(L, arg, LUA_TFUNCTION);
    lua_pushvalue(L, arg);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    pl_lsock_callback *cb = malloc(sizeof *cb);
    if (!cb) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        luaL_error(L, "out of memory");
        return NULL;
    }
    cb->host = pl_host_of(L);
    cb->fn_ref = ref;
    return cb;
}

pl_host *pl_lsock_callback_take(pl_lsock_callback *cb) {
    pl_host *h = cb->host;
    lua_rawgeti(h->L, LUA_REGISTRYINDEX, cb->fn_ref);
    luaL_unref(h->L, LUA_REGISTRYINDEX, cb->fn_ref);
    free(cb);
    return h;
}
