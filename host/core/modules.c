/* modules.c: how `require "pulsar.*"` finds the library (see modules.h).
 *
 * A new VM costs what it loads, so the library is not read or compiled per
 * VM: it is bytecode in .rodata, undumped on first require. package.preload
 * gets an __index metamethod instead of one entry per module, so a VM that
 * never requires a module pays nothing for it: looking a name up returns
 * one light C function (no allocation), which require then calls with the
 * name. By default the modules keep their debug information, so that a
 * traceback reads "lua/pulsar/mailbox.lua:120: in function ..." rather than
 * "?: in upvalue '?'" (cmake -DPULSAR_STRIP_LUA=ON strips it). */
#include "modules.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

static int compare_name(const void *key, const void *element) {
    return strcmp(key, ((const pl_embedded_module *)element)->name);
}

const pl_embedded_module *pl_embedded_find(const char *name) {
    return bsearch(name, pl_embedded_modules, pl_embedded_count,
                   sizeof *pl_embedded_modules, compare_name);
}

/* The loader require calls as loader(name, ":preload:"): runs the module's
 * main chunk with the same arguments a file's chunk gets (its name, and
 * where it came from). */
static int load_embedded(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    const pl_embedded_module *m = pl_embedded_find(name);
    if (!m) return luaL_error(L, "module '%s' is not in the executable", name);
    if (luaL_loadbufferx(L, (const char *)m->code, m->size, m->chunkname, "b") != LUA_OK)
        return lua_error(L);
    lua_pushvalue(L, 1);
    lua_pushstring(L, m->chunkname + 1);
    lua_call(L, 2, 1);
    return 1;
}

/* package.preload's __index: the loader for an embedded name, else nil. */
static int preload_index(lua_State *L) {
    const char *name = lua_tostring(L, 2);
    if (name && pl_embedded_find(name)) lua_pushcfunction(L, load_embedded);
    else lua_pushnil(L);
    return 1;
}

static int install_embedded(lua_State *L) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, preload_index);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    return 0;
}

/* The sources in dir (a light userdata: nothing is allocated before the
 * protected call), first on package.path. */
static int install_source_dir(lua_State *L) {
    const char *dir = lua_touserdata(L, 1);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    return 0;
}

int pl_modules_install(lua_State *L) {
    const char *dir = getenv("PULSAR_LUA_DIR");
    if (dir && *dir) {
        lua_pushcfunction(L, install_source_dir);
        lua_pushlightuserdata(L, (void *)dir);
    } else {
        lua_pushcfunction(L, install_embedded);
        lua_pushnil(L);
    }
    if (lua_pcall(L, 1, 0, 0) == LUA_OK) return 0;
    lua_pop(L, 1);
    return -1;
}
