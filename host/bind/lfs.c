/* lfs.c: the file lookups a server makes before it sends a file, as part
 * of pulsar.core, run on libuv's thread pool (uv_fs_*) so that a slow
 * disk or a network file system stalls a worker thread, never the loop
 * that serves every other connection of the process:
 *
 *   core.fs_stat(path, fn(st | nil, err, code))
 *       st = {type = "file" | "directory" | "other", size = bytes,
 *             mtime = seconds (integer), mtime_ns = nanoseconds within it,
 *             ino = inode, dev = device}; stat(2), so a symlink is followed
 *   core.fs_realpath(path, fn(resolved | nil, err, code))
 *       the absolute path with every symlink, "." and ".." resolved
 *
 * code is libuv's name of the error ("ENOENT", "EACCES", ...), err says it
 * in words with the path. fn runs from the loop, through pl_host_pcall
 * (an error in it is logged). Lifetime as lnet.c's host name lookups: a
 * request is a resource of its host until its answer; at the host's
 * shutdown its function is forgotten and the request cancelled, and its
 * callback, which libuv still makes, only frees. */
#include "lfs.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <uv.h>

#include "host.h"

typedef struct lfs_req {
    uv_fs_t req;
    pl_host *host;
    pl_resource res;
    int fn_ref; /* LUA_NOREF once forgotten (host shutdown) */
    char path[];
} lfs_req;

static void fs_forget(pl_resource *res) {
    lfs_req *r = (lfs_req *)((char *)res - offsetof(lfs_req, res));
    pl_host_untrack(res);
    luaL_unref(r->host->L, LUA_REGISTRYINDEX, r->fn_ref);
    r->fn_ref = LUA_NOREF;
    uv_cancel((uv_req_t *)&r->req);
}

static void push_stat(lua_State *L, const uv_stat_t *st) {
    lua_createtable(L, 0, 6);
    const char *type = (st->st_mode & S_IFMT) == S_IFREG   ? "file"
                       : (st->st_mode & S_IFMT) == S_IFDIR ? "directory"
                                                           : "other";
    lua_pushstring(L, type);
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, (lua_Integer)st->st_size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)st->st_mtim.tv_sec);
    lua_setfield(L, -2, "mtime");
    lua_pushinteger(L, (lua_Integer)st->st_mtim.tv_nsec);
    lua_setfield(L, -2, "mtime_ns");
    lua_pushinteger(L, (lua_Integer)st->st_ino);
    lua_setfield(L, -2, "ino");
    lua_pushinteger(L, (lua_Integer)st->st_dev);
    lua_setfield(L, -2, "dev");
}

/* Calls the request's function with its answer, then frees it. */
static void fs_done(uv_fs_t *req) {
    lfs_req *r = req->data;
    if (r->fn_ref == LUA_NOREF) {
        uv_fs_req_cleanup(req);
        free(r);
        return;
    }
    pl_host_untrack(&r->res);
    lua_State *L = r->host->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->fn_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, r->fn_ref);
    int nargs = 1;
    if (req->result < 0) {
        int rc = (int)req->result;
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", r->path, uv_strerror(rc));
        lua_pushstring(L, uv_err_name(rc));
        nargs = 3;
    } else if (req->fs_type == UV_FS_REALPATH) {
        lua_pushstring(L, req->ptr);
    } else {
        push_stat(L, &req->statbuf);
    }
    uv_fs_req_cleanup(req);
    pl_host *h = r->host;
    free(r);
    pl_host_pcall(h, nargs, 0, "file lookup callback");
}

/* A request for the path at 1 and the function at 2, tracked by its
 * host; raises on bad arguments. */
static lfs_req *fs_request(lua_State *L) {
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    luaL_argcheck(L, len > 0 && strlen(path) == len, 1, "a path without NUL bytes");
    lfs_req *r = calloc(1, sizeof *r + len + 1);
    if (!r) luaL_error(L, "out of memory");
    memcpy(r->path, path, len + 1);
    r->host = pl_host_of(L);
    r->req.data = r;
    r->fn_ref = LUA_NOREF;
    return r;
}

/* After uv_fs_*: rc 0 keeps the function and tracks the request. */
static int fs_started(lua_State *L, lfs_req *r, int rc, const char *what) {
    if (rc != 0) {
        uv_fs_req_cleanup(&r->req);
        free(r);
        return luaL_error(L, "%s: %s", what, uv_strerror(rc));
    }
    lua_pushvalue(L, 2);
    r->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    pl_host_track(r->host, &r->res, fs_forget);
    return 0;
}

static int core_fs_stat(lua_State *L) {
    lfs_req *r = fs_request(L);
    return fs_started(L, r, uv_fs_stat(r->host->loop, &r->req, r->path, fs_done), "fs_stat");
}

static int core_fs_realpath(lua_State *L) {
    lfs_req *r = fs_request(L);
    return fs_started(L, r, uv_fs_realpath(r->host->loop, &r->req, r->path, fs_done),
                      "fs_realpath");
}

static const luaL_Reg fs_functions[] = {
    {"fs_stat", core_fs_stat},
    {"fs_realpath", core_fs_realpath},
    {NULL, NULL},
};

void pl_lfs_register(lua_State *L) { luaL_setfuncs(L, fs_functions, 0); }
