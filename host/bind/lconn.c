/* lconn.c: connections seen from Lua, as part of pulsar.core.
 *
 *   core.listen(address, on_accept(conn)) -> listener | nil, err
 *       listener:close(), listener:closed(), listener:unref() (it no
 *       longer keeps the loop alive), listener.address ("unix:PATH", or
 *       "HOST:PORT" with the port the system chose when 0 was asked)
 *   core.connect(address, on_connect(conn | nil, err))
 *   conn:set_handler(on_message(payload, conn), on_close(reason, conn))
 *   conn:send(payload) -> true | nil, err
 *   conn:forward_local()  envelopes for an inbox of this process go there
 *                         in C, not to on_message (inbox.h)
 *   conn:close([reason [, delay]])   conn:closed() -> boolean
 *   conn:stats() -> {sent=, received=, queued=}
 *   conn:peer() -> "127.0.0.1:5555", "unix:PATH", ... (for log lines)
 *   conn:set_max_message(bytes)      the largest message either way
 *   conn:set_linger(seconds)         a bad frame closes after that delay
 *   conn:wait_message(timeout) -> payload | nil, err   (blocks; conn.h)
 * Addresses are those of conn.h: unix:PATH, HOST:PORT, [IPv6]:PORT, :PORT.
 *   core.channel_pair_for_test() -> conn, conn   (both ends on this loop)
 *
 * The transport (conn.c) owns the C objects; a Lua object only points at
 * one, through a field the transport's close path clears (on_close here),
 * so a closed conn is never touched again from Lua. listener.address and
 * the connect callback work as lnet.c's do, through lsock.c.
 *
 * Lifetime choices:
 *   - a conn with handlers set is anchored in the registry until it closes:
 *     dropping every Lua reference does not close it, as with a timer, and
 *     its handlers go on receiving. A conn without handlers receives
 *     nothing, so when its Lua object is collected it is closed;
 *   - a listener is anchored while open (it always has on_accept); it ends
 *     with listener:close() or at shutdown;
 *   - on_close keeps net.h's close rule: it runs once, synchronously inside
 *     conn:close() (with or without a delay), so conn:close() in on_message
 *     runs on_close before returning, and from the loop for an end that
 *     comes from the peer; the message handler gets no further messages.
 *
 * Every Lua callback runs through pl_host_pcall: an error is logged with a
 * traceback and never unwinds through libuv. */
#include <stddef.h>

#include <lauxlib.h>

#include "conn.h"
#include "host.h"
#include "inbox.h"
#include "lsock.h"

#define CONN_METATABLE "pulsar.core.Conn"
#define LISTENER_METATABLE "pulsar.core.Listener"

/* ---- conns ---------------------------------------------------------------- */

typedef struct lconn {
    pl_conn *conn; /* NULL once closed: the transport frees it */
    int forward_local; /* envelopes for an inbox of this process go there */
    pl_host *host;
    int message_ref, close_ref; /* the Lua handlers, or LUA_NOREF */
    int self_ref;               /* anchors this userdata while handled */
} lconn;

static lconn *check_conn(lua_State *L, int arg) {
    return luaL_checkudata(L, arg, CONN_METATABLE);
}

/* Called by the transport, once: forgets the C conn and every reference,
 * then runs the Lua on_close if there is one. */
static void lconn_closed(pl_conn *c, const char *reason, void *ud) {
    (void)c;
    lconn *u = ud;
    lua_State *L = u->host->L;
    int fn = u->close_ref, self = u->self_ref;
    u->conn = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, u->message_ref);
    u->message_ref = u->close_ref = u->self_ref = LUA_NOREF;
    if (fn == LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, self);
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn);
    lua_pushstring(L, reason);
    lua_rawgeti(L, LUA_REGISTRYINDEX, self);
    luaL_unref(L, LUA_REGISTRYINDEX, fn);
    luaL_unref(L, LUA_REGISTRYINDEX, self);
    pl_host_pcall(u->host, 2, 0, "connection close handler");
}

/* Protected: a payload of many megabytes may not fit in the VM, and that
 * memory error must be logged like any other, not abort the process.
 * Arguments: the lconn and the payload as light userdata, its length. */
static int call_message_handler(lua_State *L) {
    lconn *u = lua_touserdata(L, 1);
    const char *payload = lua_touserdata(L, 2);
    size_t len = (size_t)lua_tointeger(L, 3);
    lua_rawgeti(L, LUA_REGISTRYINDEX, u->message_ref);
    lua_pushlstring(L, payload, len);
    lua_rawgeti(L, LUA_REGISTRYINDEX, u->self_ref);
    lua_call(L, 2, 0);
    return 0;
}

static void lconn_message(pl_conn *c, const char *payload, size_t len,
                          void *ud) {
    (void)c;
    lconn *u = ud;
    if (u->forward_local && pl_inbox_forward(payload, len)) return;
    lua_State *L = u->host->L;
    lua_pushcfunction(L, call_message_handler);
    lua_pushlightuserdata(L, u);
    lua_pushlightuserdata(L, (void *)payload);
    lua_pushinteger(L, (lua_Integer)len);
    pl_host_pcall(u->host, 3, 0, "connection message handler");
}

static void release_handlers(lua_State *L, lconn *u) {
    luaL_unref(L, LUA_REGISTRYINDEX, u->message_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, u->close_ref);
    u->message_ref = u->close_ref = LUA_NOREF;
}

static int optional_function_ref(lua_State *L, int arg) {
    if (lua_isnoneornil(L, arg)) return LUA_NOREF;
    luaL_checktype(L, arg, LUA_TFUNCTION);
    lua_pushvalue(L, arg);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* conn:set_handler(on_message, on_close): either may be nil. Messages are
 * read only while on_message is set. */
static int conn_set_handler(lua_State *L) {
    lconn *u = check_conn(L, 1);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TFUNCTION);
    if (!u->conn) return luaL_error(L, "connection closed");
    release_handlers(L, u);
    u->message_ref = optional_function_ref(L, 2);
    u->close_ref = optional_function_ref(L, 3);
    int handled = u->message_ref != LUA_NOREF || u->close_ref != LUA_NOREF;
    if (handled && u->self_ref == LUA_NOREF) {
        lua_pushvalue(L, 1);
        u->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else if (!handled) {
        luaL_unref(L, LUA_REGISTRYINDEX, u->self_ref);
        u->self_ref = LUA_NOREF;
    }
    pl_conn_handler h = {
        u->message_ref != LUA_NOREF ? lconn_message : NULL, lconn_closed, u};
    pl_conn_set_handler(u->conn, &h);
    return 0;
}

/* conn:forward_local(): from now on, an envelope for an inbox of this
 * process (a thread actor, a monitor) goes there in C, unseen by the
 * message handler (inbox.h pl_inbox_forward). */
static int conn_forward_local(lua_State *L) {
    check_conn(L, 1)->forward_local = 1;
    return 0;
}

static int conn_send(lua_State *L) {
    lconn *u = check_conn(L, 1);
    size_t len;
    const char *payload = luaL_checklstring(L, 2, &len);
    char err[200];
    if (!u->conn) {
        lua_pushnil(L);
        lua_pushliteral(L, "connection closed");
        return 2;
    }
    if (pl_conn_send(u->conn, payload, len, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static uint64_t check_delay_ms(lua_State *L, int arg) {
    double seconds = luaL_checknumber(L, arg);
    luaL_argcheck(L, seconds >= 0 && seconds < 1e6, arg, "delay out of range");
    return (uint64_t)(seconds * 1000.0 + 0.5);
}

/* conn:close([reason [, delay]]): with a delay, the conn stops reading now
 * and closes (calling on_close) that many seconds later. */
static int conn_close(lua_State *L) {
    lconn *u = check_conn(L, 1);
    const char *reason = luaL_optstring(L, 2, "closed");
    uint64_t ms = lua_isnoneornil(L, 3) ? 0 : check_delay_ms(L, 3);
    if (u->conn) pl_conn_close_after(u->conn, ms, reason);
    return 0;
}

static int conn_peer(lua_State *L) {
    lconn *u = check_conn(L, 1);
    if (!u->conn) return luaL_error(L, "connection closed");
    lua_pushstring(L, pl_conn_peer(u->conn));
    return 1;
}

static int conn_set_max_message(lua_State *L) {
    lconn *u = check_conn(L, 1);
    lua_Integer max = luaL_checkinteger(L, 2);
    luaL_argcheck(L, max > 0, 2, "the limit must be a number of bytes above 0");
    if (u->conn) pl_conn_set_max_message(u->conn, (size_t)max);
    return 0;
}

static int conn_set_linger(lua_State *L) {
    lconn *u = check_conn(L, 1);
    uint64_t ms = check_delay_ms(L, 2);
    if (u->conn) pl_conn_set_linger(u->conn, ms);
    return 0;
}

/* conn:wait_message(timeout) -> payload | nil, err. The handlers may run
 * inside it (a close closes the conn); the conn may be gone after. */
static int conn_wait_message(lua_State *L) {
    lconn *u = check_conn(L, 1);
    double timeout = luaL_checknumber(L, 2);
    luaL_argcheck(L, timeout >= 0 && timeout < 1e6, 2, "timeout out of range");
    if (!u->conn) {
        lua_pushnil(L);
        lua_pushliteral(L, "connection closed");
        return 2;
    }
    pl_buf out;
    char err[200];
    pl_buf_init(&out, 0);
    int rc = pl_conn_wait_message(u->conn, timeout, &out, err, sizeof err);
    if (rc == 0) lua_pushlstring(L, out.data ? out.data : "", out.len);
    pl_buf_free(&out);
    if (rc == 0) return 1;
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

static int conn_is_closed(lua_State *L) {
    lua_pushboolean(L, check_conn(L, 1)->conn == NULL);
    return 1;
}

/* Once closed the counts are gone with the conn: all zero. */
static int conn_stats(lua_State *L) {
    lconn *u = check_conn(L, 1);
    pl_conn_stats s = {0, 0, 0};
    if (u->conn) pl_conn_stats_get(u->conn, &s);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)s.sent);
    lua_setfield(L, -2, "sent");
    lua_pushinteger(L, (lua_Integer)s.received);
    lua_setfield(L, -2, "received");
    lua_pushinteger(L, (lua_Integer)s.queued);
    lua_setfield(L, -2, "queued");
    return 1;
}

static int conn_tostring(lua_State *L) {
    lconn *u = check_conn(L, 1);
    lua_pushfstring(L, "Conn (%s): %p", u->conn ? "open" : "closed",
                    (void *)u);
    return 1;
}

/* Reached only without handlers (a handled conn is anchored), so closing
 * calls nothing in Lua. At lua_close every conn is already closed: the host
 * closes its resources first. */
static int conn_gc(lua_State *L) {
    lconn *u = check_conn(L, 1);
    if (u->conn) pl_conn_close(u->conn, "garbage-collected");
    return 0;
}

static const luaL_Reg conn_methods[] = {
    {"set_handler", conn_set_handler},
    {"send", conn_send},
    {"forward_local", conn_forward_local},
    {"close", conn_close},
    {"closed", conn_is_closed},
    {"stats", conn_stats},
    {"peer", conn_peer},
    {"set_max_message", conn_set_max_message},
    {"set_linger", conn_set_linger},
    {"wait_message", conn_wait_message},
    {NULL, NULL},
};

static void push_conn_metatable(lua_State *L) {
    if (luaL_newmetatable(L, CONN_METATABLE)) {
        luaL_newlib(L, conn_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, conn_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, conn_tostring);
        lua_setfield(L, -2, "__tostring");
    }
}

/* Takes over c's handler: until set_handler, nothing is read and a close
 * only clears the Lua object. Push each conn once. */
void pl_lconn_push(lua_State *L, pl_conn *c) {
    lconn *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->conn = c;
    u->forward_local = 0;
    u->host = pl_host_of(L);
    u->message_ref = u->close_ref = u->self_ref = LUA_NOREF;
    push_conn_metatable(L);
    lua_setmetatable(L, -2);
    pl_conn_handler h = {NULL, lconn_closed, u};
    pl_conn_set_handler(c, &h);
}

/* ---- connecting ------------------------------------------------------------- */

static void lua_connected(pl_conn *c, const char *err, void *ud) {
    pl_host *h = pl_lsock_callback_take(ud);
    lua_State *L = h->L;
    if (c) {
        pl_lconn_push(L, c);
        lua_pushnil(L);
    } else {
        lua_pushnil(L);
        lua_pushstring(L, err);
    }
    pl_host_pcall(h, 2, 0, "connect callback");
}

/* core.connect(address, fn): fn(conn) or fn(nil, err), from the loop. */
static int core_connect(lua_State *L) {
    const char *address = luaL_checkstring(L, 1);
    pl_lsock_callback *cb = pl_lsock_callback_new(L, 2);
    pl_connect(pl_host_of(L), address, lua_connected, cb);
    return 0;
}

/* ---- listeners --------------------------------------------------------------- */

typedef struct llistener {
    pl_listener *listener; /* NULL once closed */
    pl_host *host;
    int accept_ref; /* the Lua on_accept */
    int self_ref;   /* anchors this userdata while open */
    /* Tracked after the listener's own resource, so the host's shutdown
     * (last tracked, first closed) closes it through here and the fields
     * above are cleared; untracked before the anchor is dropped. */
    pl_resource res;
} llistener;

static void llistener_close(llistener *u) {
    if (!u->listener) return;
    lua_State *L = u->host->L;
    pl_host_untrack(&u->res);
    pl_listener_close(u->listener);
    u->listener = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, u->accept_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, u->self_ref);
    u->accept_ref = u->self_ref = LUA_NOREF;
}

static void llistener_shutdown(pl_resource *res) {
    llistener_close((llistener *)((char *)res - offsetof(llistener, res)));
}

static void lua_accepted(pl_listener *l, pl_conn *c, void *ud) {
    (void)l;
    llistener *u = ud;
    lua_State *L = u->host->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, u->accept_ref);
    pl_lconn_push(L, c);
    pl_host_pcall(u->host, 1, 0, "listener accept handler");
}

static llistener *check_listener(lua_State *L, int arg) {
    return luaL_checkudata(L, arg, LISTENER_METATABLE);
}

static int listener_close(lua_State *L) {
    llistener_close(check_listener(L, 1));
    return 0;
}

/* listener:unref(): the listener no longer keeps the loop alive. */
static int listener_unref(lua_State *L) {
    llistener *u = check_listener(L, 1);
    if (u->listener) pl_listener_unref(u->listener);
    return 0;
}

static int listener_is_closed(lua_State *L) {
    lua_pushboolean(L, check_listener(L, 1)->listener == NULL);
    return 1;
}

static const luaL_Reg listener_methods[] = {
    {"close", listener_close},
    {"unref", listener_unref},
    {"closed", listener_is_closed},
    {NULL, NULL},
};

static void push_listener_metatable(lua_State *L) {
    if (luaL_newmetatable(L, LISTENER_METATABLE)) {
        pl_lsock_set_index(L, listener_methods); /* and .address */
        /* No __gc: an open listener is anchored, so it is collected only
         * once closed (or by lua_close, after the host closed it). */
    }
}

/* core.listen(address, on_accept) -> listener | nil, err */
static int core_listen(lua_State *L) {
    const char *address = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    pl_host *h = pl_host_of(L);
    llistener *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->listener = NULL;
    u->host = h;
    u->accept_ref = u->self_ref = LUA_NOREF;
    push_listener_metatable(L);
    lua_setmetatable(L, -2);
    char err[512];
    pl_listener *l = pl_listen(h, address, lua_accepted, u, err, sizeof err);
    if (!l) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushstring(L, pl_listener_address(l));
    lua_setiuservalue(L, -2, 1);
    u->listener = l;
    lua_pushvalue(L, 2);
    u->accept_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    u->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    pl_host_track(h, &u->res, llistener_shutdown);
    return 1;
}

/* ---- channels ------------------------------------------------------------------ */

/* core.channel_pair_for_test() -> conn, conn: the two ends of one channel,
 * both on this loop, to exercise the channel transport from Lua. */
static int core_channel_pair_for_test(lua_State *L) {
    pl_host *h = pl_host_of(L);
    pl_channel *ch = pl_channel_new();
    if (!ch) return luaL_error(L, "out of memory");
    pl_conn *a = pl_channel_attach(h, ch, 0);
    pl_conn *b = pl_channel_attach(h, ch, 1);
    pl_channel_release(ch);
    if (!a || !b) {
        pl_conn_close(a, "discarded");
        pl_conn_close(b, "discarded");
        return luaL_error(L, "cannot attach a channel: out of memory");
    }
    pl_lconn_push(L, a);
    pl_lconn_push(L, b);
    return 2;
}

static const luaL_Reg conn_functions[] = {
    {"listen", core_listen},
    {"connect", core_connect},
    {"channel_pair_for_test", core_channel_pair_for_test},
    {NULL, NULL},
};

/* Adds the functions above to the table on top of the stack (pulsar.core). */
void pl_lconn_register(lua_State *L) {
    push_conn_metatable(L);
    push_listener_metatable(L);
    lua_pop(L, 2);
    luaL_setfuncs(L, conn_functions, 0);
}
