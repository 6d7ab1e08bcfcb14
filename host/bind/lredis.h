/* lredis.h: a Redis client for Lua on hiredis's async API (lredis.c). */
#ifndef PULSAR_LREDIS_H
#define PULSAR_LREDIS_H

#include <lua.h>

/* Adds redis_connect to pulsar.core (the table on top). */
void pl_lredis_register(lua_State *L);

#endif
