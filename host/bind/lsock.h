/* lsock.h: what the Lua faces of sockets, lconn.c (mailbox listeners and
 * conns) and lnet.c (bound sockets, servers, transports), share.
 *
 *   - an object that listens keeps its address, which never changes, as
 *     its userdata's first user value, and reads it as obj.address beside
 *     its methods: pl_lsock_index is that __index;
 *   - a connect keeps the Lua function to call, once, with its outcome:
 *     pl_lsock_callback. */
#ifndef PULSAR_LSOCK_H
#define PULSAR_LSOCK_H

#include <lauxlib.h>
#include <lua.h>

#include "host.h"

/* __index, as a closure over a method table (upvalue 1): obj.address is
 * the userdata's first user value, any other key a method (or nil). */
int pl_lsock_index(lua_State *L);
/* Sets that __index, over `methods`, in the metatable on top of the stack. */
void pl_lsock_set_index(lua_State *L, const luaL_Reg *methods);

/* A Lua function kept for one later call from C. */
typedef struct pl_lsock_callback pl_lsock_callback;
/* Keeps the function at arg (raises if it is none, or out of memory). */
pl_lsock_callback *pl_lsock_callback_new(lua_State *L, int arg);
/* Pushes the function on its host's stack and frees cb; the caller pushes
 * the arguments and calls it with pl_host_pcall. Returns that host. */
pl_host *pl_lsock_callback_take(pl_lsock_callback *cb);

#endif
