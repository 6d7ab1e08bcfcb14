/* modules.h: where a VM finds the pulsar Lua library (modules.c).
 *
 * By default the library is bytecode compiled at build time
 * (host/tools/embed_lua.c) and linked into the executable; every VM loads
 * `pulsar.*` from there through package.preload, without touching the
 * file system. PULSAR_LUA_DIR names a folder of sources to load instead
 * (for working on the library without rebuilding). */
#ifndef PULSAR_MODULES_H
#define PULSAR_MODULES_H

#include <stddef.h>

#include <lua.h>

typedef struct pl_embedded_module {
    const char *name;      /* "pulsar", "pulsar.mailbox", ... */
    const char *chunkname; /* "@lua/pulsar/mailbox.lua" */
    const unsigned char *code;
    size_t size;
} pl_embedded_module;

/* The generated table (build/pulsar_lua_modules.c), sorted by name. */
extern const pl_embedded_module pl_embedded_modules[];
extern const size_t pl_embedded_count;

/* The embedded module called name, or NULL. */
const pl_embedded_module *pl_embedded_find(const char *name);

/* Makes L's `require` find the pulsar library: the embedded modules, or
 * with $PULSAR_LUA_DIR set, the sources in that folder (put first on
 * package.path). Needs the package library open. 0, or -1 on a memory
 * error. */
int pl_modules_install(lua_State *L);

#endif
