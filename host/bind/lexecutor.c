/* lexecutor.c: the Lua binding of executor.c's thread pools (see
 * executor.h): core.executor, core.executor_job and the Executor userdata,
 * which holds a slot that the pool clears when it ends. */
#include "executor.h"

#include <stdint.h>

#include <lauxlib.h>

#include "buf.h"

#define EXECUTOR_METATABLE "pulsar.core.Executor"
#define DEFAULT_THREADS 5 /* docs/API.md: thread_workers */
#define MAX_THREADS 256

static const char *package_string(lua_State *L, const char *field) {
    lua_getglobal(L, "package");
    const char *s = NULL;
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, field);
        s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        lua_remove(L, -2); /* the string stays on the stack, so s stays valid */
    }
    return s;
}

/* core.executor([nthreads]) -> Executor */
static int core_executor(lua_State *L) {
    lua_Integer n = luaL_optinteger(L, 1, DEFAULT_THREADS);
    luaL_argcheck(L, n >= 1 && n <= MAX_THREADS, 1,
                  "the number of threads must be from 1 to 256");
    const char *path = package_string(L, "path");
    const char *cpath = package_string(L, "cpath");
    pl_executor **slot = lua_newuserdatauv(L, sizeof *slot, 0);
    *slot = NULL;
    luaL_setmetatable(L, EXECUTOR_METATABLE);
    if (!pl_executor_new(pl_host_of(L), (int)n, path, cpath, slot))
        return luaL_error(L, "out of memory creating an executor");
    return 1;
}

/* core.executor_job(fn, ...) -> payload */
static int core_executor_job(lua_State *L) {
    char err[512];
    pl_buf out;
    pl_value_limits lim = pl_executor_job_limits();
    luaL_checktype(L, 1, LUA_TFUNCTION);
    pl_buf_init(&out, lim.max_size);
    int rc = pl_value_encode_list(L, 1, lua_gettop(L), &out, &lim,
                                  "job", err, sizeof err);
    if (rc == 0) lua_pushlstring(L, out.data ? out.data : "", out.len);
    pl_buf_free(&out);
    if (rc != 0) return luaL_error(L, "%s", err);
    return 1;
}

static pl_executor *check_open(lua_State *L) {
    pl_executor **slot = luaL_checkudata(L, 1, EXECUTOR_METATABLE);
    if (!*slot || !pl_executor_is_open(*slot)) luaL_error(L, "the executor is closed");
    return *slot;
}

/* Executor:submit(payload, callback) -> job id */
static int executor_submit(lua_State *L) {
    pl_executor *ex = check_open(L);
    size_t len;
    const char *payload = luaL_checklstring(L, 2, &len);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    lua_pushvalue(L, 3);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX); /* may raise: nothing to leak */
    uint64_t id;
    int rc = pl_executor_submit(ex, payload, len, ref, &id);
    if (rc != 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        if (rc == UV_ENOMEM) return luaL_error(L, "out of memory submitting a job");
        return luaL_error(L, "cannot start the executor's threads: %s", uv_strerror(rc));
    }
    lua_pushinteger(L, (lua_Integer)id);
    return 1;
}

static int executor_close(lua_State *L) {
    pl_executor **slot = luaL_checkudata(L, 1, EXECUTOR_METATABLE);
    if (*slot) pl_executor_close(*slot);
    return 0;
}

/* Nobody can submit any more: let the queued jobs run and report, then end
 * the threads. Never blocks. */
static int executor_gc(lua_State *L) {
    pl_executor **slot = luaL_checkudata(L, 1, EXECUTOR_METATABLE);
    pl_executor *ex = *slot;
    if (!ex) return 0;
    *slot = NULL;
    pl_executor_release(ex);
    return 0;
}

static const luaL_Reg executor_methods[] = {
    {"submit", executor_submit},
    {"close", executor_close},
    {NULL, NULL},
};

static const luaL_Reg executor_functions[] = {
    {"executor", core_executor},
    {"executor_job", core_executor_job},
    {NULL, NULL},
};

void pl_lexecutor_register(lua_State *L) {
    if (luaL_newmetatable(L, EXECUTOR_METATABLE)) {
        luaL_newlib(L, executor_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, executor_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, executor_close);
        lua_setfield(L, -2, "__close");
    }
    lua_pop(L, 1);
    luaL_setfuncs(L, executor_functions, 0);
}
