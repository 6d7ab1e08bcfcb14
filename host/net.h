/* net.h: TCP and Unix stream sockets for Lua code (API.md §2 Networking). */
#ifndef PULSAR_NET_H
#define PULSAR_NET_H
#include <lua.h>
void pl_lnet_register(lua_State *L);
#endif
