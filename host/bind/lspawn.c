/* lspawn.c: the Lua binding of spawn.c (see spawn.h): core.spawn_process,
 * core.spawn_thread, core.spawn_monitor and their userdata.
 *
 * A userdata holds a slot pointing at the child, which spawn.c clears once
 * the child's exit has been reported to Lua; a method on an ended child
 * says so instead of touching it. */
#include "spawn.h"

#include <signal.h>
#include <string.h>

#include <lauxlib.h>

#define PROCESS_METATABLE "pulsar.core.Process"
#define THREAD_METATABLE "pulsar.core.Thread"
#define MONITOR_METATABLE "pulsar.core.Monitor"

static pl_child **new_child_userdata(lua_State *L, const char *metatable) {
    pl_child **slot = lua_newuserdatauv(L, sizeof *slot, 0);
    *slot = NULL;
    luaL_setmetatable(L, metatable);
    return slot;
}

/* A registry ref to the function at idx: the child's exit callback. */
static int exit_callback_ref(lua_State *L, int idx) {
    lua_pushvalue(L, idx);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

static int child_gc(lua_State *L) {
    pl_child **slot = lua_touserdata(L, 1);
    if (*slot) pl_child_disown(*slot);
    return 0;
}

/* Reads the optional list of descriptors at arg into fds; returns how
 * many there are. */
static int inherited_fds(lua_State *L, int arg, int *fds) {
    if (lua_isnoneornil(L, arg)) return 0;
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_Integer n = luaL_len(L, arg);
    luaL_argcheck(L, n <= PL_MAX_INHERITED_FDS, arg, "too many descriptors to inherit");
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, arg, i);
        lua_Integer fd = lua_tointeger(L, -1);
        luaL_argcheck(L, lua_isinteger(L, -1) && fd >= 0 && fd < 1 << 30, arg,
                      "descriptors must be whole numbers from 0");
        lua_pop(L, 1);
        fds[i - 1] = (int)fd;
    }
    return (int)n;
}

/* core.spawn_process(aid, address, on_exit [, fds]) -> Process */
static int core_spawn_process(lua_State *L) {
    const char *aid = luaL_checkstring(L, 1);
    const char *address = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    int fds[PL_MAX_INHERITED_FDS];
    int nfds = inherited_fds(L, 4, fds);
    pl_child **slot = new_child_userdata(L, PROCESS_METATABLE);
    char err[256];
    if (!pl_spawn_process(pl_host_of(L), aid, address, fds, nfds, exit_callback_ref(L, 3),
                          slot, err, sizeof err))
        return luaL_error(L, "%s", err);
    return 1;
}

static int process_index(lua_State *L) {
    pl_child **slot = luaL_checkudata(L, 1, PROCESS_METATABLE);
    const char *key = luaL_checkstring(L, 2);
    if (strcmp(key, "pid") == 0) {
        if (*slot) lua_pushinteger(L, pl_process_pid(*slot));
        else lua_pushnil(L);
        return 1;
    }
    luaL_getmetatable(L, PROCESS_METATABLE);
    lua_getfield(L, -1, key);
    return 1;
}

/* process:kill([signal]) -> true | nil, err (signal defaults to SIGTERM) */
static int process_kill(lua_State *L) {
    pl_child **slot = luaL_checkudata(L, 1, PROCESS_METATABLE);
    int sig = (int)luaL_optinteger(L, 2, SIGTERM);
    if (!*slot) {
        lua_pushnil(L);
        lua_pushliteral(L, "the process has exited");
        return 2;
    }
    int rc = pl_process_kill(*slot, sig);
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushstring(L, uv_strerror(rc));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* Pushes the arbiter's end of the new child's channel below its userdata
 * (at the top), as spawn_thread and spawn_monitor return them. */
static int return_conn_and_child(lua_State *L, pl_conn *conn) {
    pl_lconn_push(L, conn);
    lua_insert(L, -2);
    return 2;
}

/* core.spawn_thread(aid, on_exit) -> conn, Thread */
static int core_spawn_thread(lua_State *L) {
    const char *aid = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    pl_child **slot = new_child_userdata(L, THREAD_METATABLE);
    pl_conn *conn;
    char err[256];
    if (!pl_spawn_thread(pl_host_of(L), aid, exit_callback_ref(L, 2), slot, &conn, err,
                         sizeof err))
        return luaL_error(L, "%s", err);
    return return_conn_and_child(L, conn);
}

/* thread:interrupt() -> whether the actor's Lua code will be interrupted */
static int thread_interrupt(lua_State *L) {
    pl_child **slot = luaL_checkudata(L, 1, THREAD_METATABLE);
    lua_pushboolean(L, *slot && pl_thread_interrupt(*slot));
    return 1;
}

/* thread:terminate() -> whether the actor will end hard */
static int thread_terminate(lua_State *L) {
    pl_child **slot = luaL_checkudata(L, 1, THREAD_METATABLE);
    lua_pushboolean(L, *slot && pl_thread_terminate(*slot));
    return 1;
}

/* core.spawn_monitor(aid, on_exit) -> conn, Monitor */
static int core_spawn_monitor(lua_State *L) {
    const char *aid = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    pl_child **slot = new_child_userdata(L, MONITOR_METATABLE);
    pl_conn *conn;
    char err[256];
    if (!pl_spawn_monitor(pl_host_of(L), aid, exit_callback_ref(L, 2), slot, &conn, err,
                          sizeof err))
        return luaL_error(L, "%s", err);
    return return_conn_and_child(L, conn);
}

static const luaL_Reg thread_methods[] = {
    {"interrupt", thread_interrupt},
    {"terminate", thread_terminate},
    {NULL, NULL},
};

static const luaL_Reg spawn_functions[] = {
    {"spawn_process", core_spawn_process},
    {"spawn_thread", core_spawn_thread},
    {"spawn_monitor", core_spawn_monitor},
    {NULL, NULL},
};

void pl_lspawn_register(lua_State *L) {
    if (luaL_newmetatable(L, MONITOR_METATABLE)) {
        lua_pushcfunction(L, child_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, PROCESS_METATABLE)) {
        lua_pushcfunction(L, process_index);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, process_kill);
        lua_setfield(L, -2, "kill");
        lua_pushcfunction(L, child_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, THREAD_METATABLE)) {
        lua_pushcfunction(L, child_gc);
        lua_setfield(L, -2, "__gc");
        luaL_newlib(L, thread_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    luaL_setfuncs(L, spawn_functions, 0);
}
