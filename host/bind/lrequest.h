/* lrequest.h: a libuv request (uv_fs_t, uv_getaddrinfo_t, ...) that Lua
 * started with a function to call, once, with its answer: lfs.c's file
 * lookups and lnet.c's host name lookups. Its lifetime is the same for
 * all, so it is written once: the request is a resource of its host until
 * its answer; at the host's shutdown its function is forgotten and the
 * request cancelled, and its callback, which libuv still makes, only
 * frees (pl_lrequest_answer says so by returning NULL).
 *
 * Embed a pl_lrequest in the request's own struct, beside the uv_*_t. */
#ifndef PULSAR_LREQUEST_H
#define PULSAR_LREQUEST_H

#include <lua.h>
#include <uv.h>

#include "host.h"

typedef struct pl_lrequest {
    pl_host *host;
    uv_req_t *req; /* the uv_*_t it stands beside, cancelled at shutdown */
    pl_resource res;
    int fn_ref; /* LUA_NOREF before the start and once forgotten */
} pl_lrequest;

/* Before uv_*: ties r to L's host and to req; no function kept yet. */
void pl_lrequest_init(pl_lrequest *r, lua_State *L, uv_req_t *req);
/* After uv_* returned 0: keeps the function at fn_arg of L and tracks r. */
void pl_lrequest_started(pl_lrequest *r, lua_State *L, int fn_arg);
/* In libuv's callback: pushes the function on the host's stack (no longer
 * kept nor tracked) and returns that host, for the caller to push the
 * answer and pl_host_pcall it; NULL when it was forgotten (nothing pushed:
 * the caller only frees). */
pl_host *pl_lrequest_answer(pl_lrequest *r);

#endif
