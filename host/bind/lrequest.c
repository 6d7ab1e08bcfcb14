/* lrequest.c: the lifetime of a libuv request started from Lua with a
 * function to call with its answer (see lrequest.h), shared by lfs.c and
 * lnet.c so that the shutdown case, which tests reach rarely, is written
 * and checked once. */
#include "lrequest.h"

#include <stddef.h>

#include <lauxlib.h>

/* At the host's shutdown: forget the function, cancel the request (its
 * callback still comes, and frees). */
static void lrequest_forget(pl_resource *res) {
    pl_lrequest *r = (pl_lrequest *)((char *)res - offsetof(pl_lrequest, res));
    pl_host_untrack(res);
    luaL_unref(r->host->L, LUA_REGISTRYINDEX, r->fn_ref);
    r->fn_ref = LUA_NOREF;
    uv_cancel(r->req);
}

void pl_lrequest_init(pl_lrequest *r, lua_State *L, uv_req_t *req) {
    r->host = pl_host_of(L);
    r->req = req;
    r->fn_ref = LUA_NOREF;
}

void pl_lrequest_started(pl_lrequest *r, lua_State *L, int fn_arg) {
    lua_pushvalue(L, fn_arg);
    r->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    pl_host_track(r->host, &r->res, lrequest_forget);
}

pl_host *pl_lrequest_answer(pl_lrequest *r) {
    if (r->fn_ref == LUA_NOREF) return NULL;
    pl_host_untrack(&r->res);
    lua_State *L = r->host->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->fn_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, r->fn_ref);
    r->fn_ref = LUA_NOREF;
    return r->host;
}
