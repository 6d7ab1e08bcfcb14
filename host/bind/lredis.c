/* lredis.c: a small Redis client for Lua, as part of pulsar.core, on
 * hiredis's async API and its own libuv adapter, on the VM's loop. It is what
 * pulsar.cluster keeps membership with; nothing else of Redis is wrapped.
 *
 *   core.redis_connect(host, port, on_ready(client | nil, err))
 *   client:command({"SET", "k", "v", ...}, fn(reply, err))
 *       reply: a string, an integer, an array as a table (nested arrays as
 *       tables; a nil inside an array is false), nil for a nil reply, true
 *       for the status "OK" (another status: its text); err: the text of an
 *       error reply, or why the connection is gone
 *   client:close()             fails what is pending ("redis connection closed")
 *   client:on_disconnect(fn(err))  fn is called once if the connection is
 *       lost (not after close())
 *   client:unref()             the connection keeps the loop alive only while
 *       commands are pending (a membership tick must not keep the arbiter up)
 *   client:connected() -> boolean
 *
 * Every callback is called exactly once. on_ready is answered by a PING sent
 * with the connection: hiredis runs a reply's callback where freeing the
 * context is safe, which its connect callback is not, so on_ready may close
 * the client; and a peer that accepts but is not Redis fails on_ready too.
 * A command on a closed client calls its callback at once with the error.
 *
 * Lifetime: the client (a full userdata) is anchored in the registry while
 * hiredis has its context or any reply callback is pending; the host's
 * shutdown frees the context like close() (hiredis fails what is pending,
 * and the adapter's poll handle is closed on the loop's last turns). */
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <lauxlib.h>

#include "host.h"
#include "lredis.h"

#define CLIENT_METATABLE "pulsar.core.RedisClient"
#define MAX_ARGS 4096
#define MAX_DEPTH 32

typedef struct pl_redis {
    redisAsyncContext *ac; /* NULL once detached (closed, lost, failed) */
    pl_host *host;
    pl_resource res;
    int self_ref;  /* anchors the userdata while hiredis may call back */
    int ready_ref; /* on_ready, until answered */
    int lost_ref;  /* on_disconnect */
    int pending;   /* reply callbacks hiredis still owes, the PING included */
    int weak;      /* unref(): the loop is kept alive only while pending */
    int ready;     /* on_ready was given the client */
} pl_redis;

typedef struct pl_redis_cmd {
    pl_redis *r;
    int cb_ref; /* the Lua callback; LUA_NOREF for the PING of on_ready */
} pl_redis_cmd;

static const char *CLOSED = "redis connection closed";

/* ---- keeping the loop alive --------------------------------------- */

static void update_ref(pl_redis *r) {
    if (!r->ac || !r->ac->ev.data) return;
    uv_handle_t *poll = (uv_handle_t *)&((redisLibuvEvents *)r->ac->ev.data)->handle;
    if (r->weak && r->pending == 0) uv_unref(poll);
    else uv_ref(poll);
}

static void maybe_release(pl_redis *r) {
    if (r->ac || r->pending > 0 || r->self_ref == LUA_NOREF) return;
    luaL_unref(r->host->L, LUA_REGISTRYINDEX, r->self_ref);
    r->self_ref = LUA_NOREF;
}

/* ---- replies to Lua ------------------------------------------------ */

static void push_reply(lua_State *L, const redisReply *reply, int depth);

static void push_array(lua_State *L, const redisReply *reply, int depth) {
    if (depth > MAX_DEPTH) luaL_error(L, "redis reply nested too deep");
    luaL_checkstack(L, 4, "redis reply");
    lua_createtable(L, (int)reply->elements, 0);
    for (size_t i = 0; i < reply->elements; i++) {
        push_reply(L, reply->element[i], depth + 1);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushboolean(L, 0);
        }
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

static void push_reply(lua_State *L, const redisReply *reply, int depth) {
    switch (reply->type) {
    case REDIS_REPLY_STRING:
        lua_pushlstring(L, reply->str, reply->len);
        break;
    case REDIS_REPLY_INTEGER:
        lua_pushinteger(L, (lua_Integer)reply->integer);
        break;
    case REDIS_REPLY_ARRAY:
        push_array(L, reply, depth);
        break;
    case REDIS_REPLY_STATUS:
        if (reply->len == 2 && memcmp(reply->str, "OK", 2) == 0) lua_pushboolean(L, 1);
        else lua_pushlstring(L, reply->str, reply->len);
        break;
    default: /* REDIS_REPLY_NIL; an error is the caller's */
        lua_pushnil(L);
        break;
    }
}

/* In protected mode: (callback, reply lightuserdata | nil, err | nil). */
static int deliver(lua_State *L) {
    const redisReply *reply = lua_touserdata(L, 2);
    if (reply && reply->type == REDIS_REPLY_ERROR) {
        lua_pushnil(L);
        lua_pushlstring(L, reply->str, reply->len);
    } else if (reply) {
        push_reply(L, reply, 0);
        lua_pushnil(L);
    } else {
        lua_pushnil(L);
        lua_pushvalue(L, 3);
    }
    lua_pushvalue(L, 1);
    lua_insert(L, -3);
    lua_call(L, 2, 0);
    return 0;
}

/* Calls the function in ref (taken: unref'd) with a reply or an error. */
static void call_back(pl_host *h, int ref, const redisReply *reply, const char *err,
                      const char *where) {
    lua_State *L = h->L;
    lua_pushcfunction(L, deliver);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    if (reply) lua_pushlightuserdata(L, (void *)reply);
    else lua_pushnil(L);
    lua_pushstring(L, err ? err : CLOSED);
    pl_host_pcall(h, 3, 0, where);
}

/* Why hiredis gave no reply: its error, or our close. */
static const char *gone_reason(const redisAsyncContext *ac) {
    if (!ac || !ac->data) return CLOSED;
    if (ac->err && ac->errstr && ac->errstr[0]) return ac->errstr;
    if (ac->c.err && ac->c.errstr[0]) return ac->c.errstr;
    return CLOSED;
}

/* ---- the client's end ---------------------------------------------- */

/* Answers on_ready with the client (ok) or nil and err. */
static void answer_ready(pl_redis *r, int ok, const char *err) {
    if (r->ready_ref == LUA_NOREF) return;
    lua_State *L = r->host->L;
    int ref = r->ready_ref;
    r->ready_ref = LUA_NOREF;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    if (ok) {
        r->ready = 1;
        lua_rawgeti(L, LUA_REGISTRYINDEX, r->self_ref);
        lua_pushnil(L);
    } else {
        lua_pushnil(L);
        lua_pushstring(L, err);
    }
    pl_host_pcall(r->host, 2, 0, "redis on_ready");
}

/* Forgets the context (hiredis frees it) and everything tied to it. */
static void detach(pl_redis *r) {
    if (!r->ac) return;
    r->ac->data = NULL;
    r->ac = NULL;
    pl_host_untrack(&r->res);
}

static void drop_lost_handler(pl_redis *r) {
    if (r->lost_ref == LUA_NOREF) return;
    luaL_unref(r->host->L, LUA_REGISTRYINDEX, r->lost_ref);
    r->lost_ref = LUA_NOREF;
}

/* close() and the host's shutdown: hiredis fails what is pending (at once,
 * or when the callback it is in returns) and frees the context. */
static void close_client(pl_redis *r) {
    redisAsyncContext *ac = r->ac;
    if (!ac) return;
    detach(r);
    drop_lost_handler(r);
    redisAsyncFree(ac);
    answer_ready(r, 0, CLOSED);
    maybe_release(r);
}

static void client_shutdown(pl_resource *res) {
    close_client((pl_redis *)((char *)res - offsetof(pl_redis, res)));
}

/* ---- hiredis's callbacks ------------------------------------------- */

static void on_reply(redisAsyncContext *ac, void *reply_, void *privdata) {
    pl_redis_cmd *cmd = privdata;
    pl_redis *r = cmd->r;
    int ref = cmd->cb_ref;
    const redisReply *reply = reply_;
    free(cmd);
    r->pending--;
    update_ref(r);
    if (ref == LUA_NOREF) { /* the PING that answers on_ready */
        int ok = reply && reply->type != REDIS_REPLY_ERROR && r->ac;
        answer_ready(r, ok, reply && reply->type == REDIS_REPLY_ERROR ? reply->str
                                                                      : gone_reason(ac));
        if (!ok) close_client(r); /* not Redis, or it refused us */
    } else {
        call_back(r->host, ref, reply, gone_reason(ac), "redis command callback");
    }
    maybe_release(r);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
    (void)status;
    pl_redis *r = ac->data;
    if (!r) return; /* closed by us */
    const char *why = gone_reason(ac);
    if (why == CLOSED) why = "connection lost";
    detach(r);
    answer_ready(r, 0, why);
    if (r->ready && r->lost_ref != LUA_NOREF) {
        int ref = r->lost_ref;
        r->lost_ref = LUA_NOREF;
        lua_State *L = r->host->L;
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        lua_pushstring(L, why);
        pl_host_pcall(r->host, 1, 0, "redis on_disconnect");
    }
    drop_lost_handler(r);
    maybe_release(r);
}

/* ---- commands ------------------------------------------------------ */

/* Queues argv with a callback (cb_ref, taken); 0 or -1 (not queued). */
static int queue_command(pl_redis *r, int argc, const char **argv, const size_t *lens,
                         int cb_ref) {
    pl_redis_cmd *cmd = malloc(sizeof *cmd);
    if (!cmd) return -1;
    cmd->r = r;
    cmd->cb_ref = cb_ref;
    if (redisAsyncCommandArgv(r->ac, on_reply, cmd, argc, argv, lens) != REDIS_OK) {
        free(cmd);
        return -1;
    }
    r->pending++;
    update_ref(r);
    return 0;
}

/* client:command(args, fn(reply, err)) */
static int client_command(lua_State *L) {
    pl_redis *r = luaL_checkudata(L, 1, CLIENT_METATABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    lua_Integer argc = luaL_len(L, 2);
    luaL_argcheck(L, argc >= 1 && argc <= MAX_ARGS, 2, "1 to 4096 arguments");
    luaL_checkstack(L, (int)argc + 8, "redis command arguments");
    const char **argv = lua_newuserdatauv(L, (size_t)argc * sizeof *argv, 0);
    size_t *lens = lua_newuserdatauv(L, (size_t)argc * sizeof *lens, 0);
    for (lua_Integer i = 0; i < argc; i++) {
        lua_geti(L, 2, i + 1);
        if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
            return luaL_error(L, "redis command argument %d is not a string", (int)i + 1);
        argv[i] = lua_tolstring(L, -1, &lens[i]); /* kept alive on the stack */
    }
    lua_pushvalue(L, 3);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (!r->ac || queue_command(r, (int)argc, argv, lens, ref) != 0)
        call_back(r->host, ref, NULL, r->ac ? "redis command not queued (out of memory)"
                                            : CLOSED, "redis command callback");
    return 0;
}

static int client_close(lua_State *L) {
    close_client(luaL_checkudata(L, 1, CLIENT_METATABLE));
    return 0;
}

static int client_on_disconnect(lua_State *L) {
    pl_redis *r = luaL_checkudata(L, 1, CLIENT_METATABLE);
    if (!lua_isnil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
    drop_lost_handler(r);
    if (r->ac && !lua_isnil(L, 2)) {
        lua_pushvalue(L, 2);
        r->lost_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    return 0;
}

static int client_unref(lua_State *L) {
    pl_redis *r = luaL_checkudata(L, 1, CLIENT_METATABLE);
    r->weak = 1;
    update_ref(r);
    return 0;
}

static int client_connected(lua_State *L) {
    pl_redis *r = luaL_checkudata(L, 1, CLIENT_METATABLE);
    lua_pushboolean(L, r->ac != NULL && r->ready);
    return 1;
}

/* ---- the poll handle ---------------------------------------------- */

/* The adapter's poll callback drops a poll error (libuv reports POLLERR,
 * a refused connect, as a status and stops the handle), so hiredis would
 * never learn of it and the connect would hang. This one hands an error to
 * hiredis as an event: its connect check or its read sees the socket's
 * error and ends the context. The rest is the adapter's own (its struct, its
 * attach and cleanup). */
static void on_poll(uv_poll_t *handle, int status, int events) {
    redisLibuvEvents *p = handle->data;
    if (status != 0) events = UV_READABLE | UV_WRITABLE;
    if (p->context && (p->context->c.flags & REDIS_CONNECTED) && (events & UV_READABLE))
        redisAsyncHandleRead(p->context);
    if (p->context && (events & UV_WRITABLE)) redisAsyncHandleWrite(p->context);
}

static void set_events(void *privdata, int add, int remove) {
    redisLibuvEvents *p = privdata;
    p->events = (p->events | add) & ~remove;
    if (p->events) uv_poll_start(&p->handle, p->events, on_poll);
    else uv_poll_stop(&p->handle);
}

static void add_read(void *p) { set_events(p, UV_READABLE, 0); }
static void del_read(void *p) { set_events(p, 0, UV_READABLE); }
static void add_write(void *p) { set_events(p, UV_WRITABLE, 0); }
static void del_write(void *p) { set_events(p, 0, UV_WRITABLE); }

static int attach(redisAsyncContext *ac, uv_loop_t *loop) {
    if (redisLibuvAttach(ac, loop) != REDIS_OK) return -1;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    return 0;
}

/* ---- connecting ---------------------------------------------------- */

static pl_redis *new_client(lua_State *L) {
    pl_redis *r = lua_newuserdatauv(L, sizeof *r, 0);
    memset(r, 0, sizeof *r);
    r->host = pl_host_of(L);
    r->self_ref = r->ready_ref = r->lost_ref = LUA_NOREF;
    luaL_setmetatable(L, CLIENT_METATABLE);
    return r;
}

/* Attaches ac to the loop and sends the PING that answers on_ready. */
static const char *start_client(pl_redis *r, redisAsyncContext *ac) {
    if (ac->err) return ac->errstr;
    if (attach(ac, r->host->loop) != 0) return "cannot attach to the loop";
    ac->data = r;
    r->ac = ac;
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    const char *ping = "PING";
    size_t len = 4;
    if (queue_command(r, 1, &ping, &len, LUA_NOREF) != 0) {
        r->ac = NULL;
        ac->data = NULL;
        return "out of memory";
    }
    return NULL;
}

/* core.redis_connect(host, port, on_ready(client | nil, err)) */
static int core_redis_connect(lua_State *L) {
    const char *host = luaL_checkstring(L, 1);
    lua_Integer port = luaL_checkinteger(L, 2);
    luaL_argcheck(L, port > 0 && port < 65536, 2, "port out of range");
    luaL_checktype(L, 3, LUA_TFUNCTION);
    pl_redis *r = new_client(L);
    lua_pushvalue(L, 3);
    r->ready_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    redisAsyncContext *ac = redisAsyncConnect(host, (int)port);
    if (!ac) return luaL_error(L, "out of memory connecting to Redis");
    const char *err = start_client(r, ac);
    if (err) {
        lua_pushstring(L, err); /* ac->errstr dies with ac */
        redisAsyncFree(ac);
        lua_rawgeti(L, LUA_REGISTRYINDEX, r->ready_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, r->ready_ref);
        r->ready_ref = LUA_NOREF;
        lua_pushnil(L);
        lua_rotate(L, -3, -1); /* fn, nil, err */
        lua_call(L, 2, 0);
        return 0;
    }
    lua_pushvalue(L, -1);
    r->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    pl_host_track(r->host, &r->res, client_shutdown);
    return 0;
}

static const luaL_Reg client_methods[] = {
    {"command", client_command},
    {"close", client_close},
    {"on_disconnect", client_on_disconnect},
    {"unref", client_unref},
    {"connected", client_connected},
    {NULL, NULL},
};

static const luaL_Reg redis_functions[] = {
    {"redis_connect", core_redis_connect},
    {NULL, NULL},
};

void pl_lredis_register(lua_State *L) {
    luaL_newmetatable(L, CLIENT_METATABLE);
    luaL_newlib(L, client_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_setfuncs(L, redis_functions, 0);
}
