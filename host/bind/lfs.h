/* lfs.h: file lookups on libuv's thread pool, for Lua (lfs.c). */
#ifndef PULSAR_LFS_H
#define PULSAR_LFS_H

#include <lua.h>

/* Adds fs_stat and fs_realpath to pulsar.core (the table on top). */
void pl_lfs_register(lua_State *L);

#endif
