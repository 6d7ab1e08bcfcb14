/* linbox.c: direct routes between the VMs of one process, seen from Lua,
 * as part of pulsar.core (inbox.h; docs/DESIGN.md "Direct routes").
 *
 *   core.inbox_open(aid, on_envelope(...), on_down(aid, name)) -> inbox
 *       this VM's inbox (one per VM): each message arrives as the values of
 *       core.decode_envelope (lenvelope.h), read straight from the sender's
 *       block; on_down(aid) when an actor this VM found
 *       a route to has ended. inbox:set_name(name) (for those notices);
 *       inbox:close(); it closes with the VM too.
 *   core.route(target) -> route | nil   the inbox of an actor of this
 *       process, by aid or by a name the arbiter published; nil if none.
 *   route:post_request(command, id, sender, target, ack, ...)
 *   route:post_reply(ack, target, sender, is_error, value)
 *       -> true | nil, err [, true]: encoded (lenvelope.h) into the message
 *       block itself and handed over; a third result true says a value
 *       could not be encoded (err names it)
 *   route:alive() -> boolean;  route.aid
 *   core.publish_name(name, aid | nil)  (the arbiter) which aid a name
 *       reaches now, for every VM of the process
 *   core.inbox_forwarded() -> envelopes forwarded from links into inboxes
 *       in C (conn:forward_local), process-wide
 *
 * Every Lua callback runs through pl_host_pcall. */
#include <stddef.h>
#include <string.h>

#include <lauxlib.h>

#include "host.h"
#include "envelope.h"
#include "inbox.h"
#include "lenvelope.h"
#include "log.h"
#include "value.h"

#define INBOX_METATABLE "pulsar.core.Inbox"
#define ROUTE_METATABLE "pulsar.core.Route"

typedef struct linbox {
    pl_inbox *inbox; /* NULL once closed */
    pl_host *host;
    int envelope_ref, down_ref, self_ref;
    pl_resource res; /* closed with the host */
} linbox;

typedef struct lroute {
    pl_inbox *inbox; /* a reference of ours */
} lroute;

static const char *const OWN_INBOX = "pulsar.core.own_inbox"; /* registry key */

/* ---- receiving ------------------------------------------------------------ */

/* One envelope: read straight from the sender's block into the handler's
 * arguments (envelope.h). Protected; errors are the batch loop's to log. */
static int deliver_one(lua_State *L) {
    linbox *u = lua_touserdata(L, 1);
    const char *payload = lua_touserdata(L, 2);
    size_t len = (size_t)lua_tointeger(L, 3);
    char err[256];
    lua_rawgeti(L, LUA_REGISTRYINDEX, u->envelope_ref);
    int n = pl_envelope_push(L, payload, len, NULL, err, sizeof err);
    if (n < 0) return luaL_error(L, "an undecodable message on a direct route: %s", err);
    lua_call(L, n, 0);
    return 0;
}

static void notice_down(lua_State *L, linbox *u, const char *payload) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, u->down_ref);
    lua_pushstring(L, payload);
    lua_pushstring(L, payload + strlen(payload) + 1);
    lua_call(L, 2, 0);
}

/* The whole batch in one entry into Lua; each message in a protected call
 * of its own, so that one that fails does not take the rest with it.
 * Arguments: the linbox and the batch, as light userdata. */
static int deliver_batch(lua_State *L) {
    linbox *u = lua_touserdata(L, 1);
    pl_inbox_batch *batch = lua_touserdata(L, 2);
    const char *payload;
    size_t len;
    int is_down;
    while (u->inbox && pl_inbox_batch_next(batch, &payload, &len, &is_down)) {
        if (is_down) {
            notice_down(L, u, payload);
            continue;
        }
        lua_pushcfunction(L, deliver_one);
        lua_pushlightuserdata(L, u);
        lua_pushlightuserdata(L, (void *)payload);
        lua_pushinteger(L, (lua_Integer)len);
        if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
            pl_log(PL_LOG_ERROR, u->host->name, "direct route message handler: %s",
                   lua_isstring(L, -1) ? lua_tostring(L, -1) : "(no message)");
            lua_pop(L, 1);
        }
    }
    return 0;
}

static void on_batch(pl_inbox *ib, pl_inbox_batch *batch, void *ud) {
    (void)ib;
    linbox *u = ud;
    lua_State *L = u->host->L;
    lua_pushcfunction(L, deliver_batch);
    lua_pushlightuserdata(L, u);
    lua_pushlightuserdata(L, batch);
    pl_host_pcall(u->host, 2, 0, "direct route delivery");
}

/* ---- the inbox ------------------------------------------------------------------ */

static void linbox_close(linbox *u) {
    if (!u->inbox) return;
    lua_State *L = u->host->L;
    pl_host_untrack(&u->res);
    pl_inbox_close(u->inbox);
    u->inbox = NULL;
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, OWN_INBOX);
    luaL_unref(L, LUA_REGISTRYINDEX, u->envelope_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, u->down_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, u->self_ref);
    u->envelope_ref = u->down_ref = u->self_ref = LUA_NOREF;
}

static void linbox_shutdown(pl_resource *res) {
    linbox_close((linbox *)((char *)res - offsetof(linbox, res)));
}

static int core_inbox_open(lua_State *L) {
    const char *aid = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    lua_getfield(L, LUA_REGISTRYINDEX, OWN_INBOX);
    if (!lua_isnil(L, -1)) return luaL_error(L, "this VM has an inbox already");
    pl_host *h = pl_host_of(L);
    linbox *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    u->host = h;
    u->envelope_ref = u->down_ref = u->self_ref = LUA_NOREF;
    luaL_setmetatable(L, INBOX_METATABLE);
    char err[128];
    pl_inbox_handler handler = {on_batch, u};
    u->inbox = pl_inbox_open(h->loop, aid, &handler, err, sizeof err);
    if (!u->inbox) return luaL_error(L, "cannot open the inbox: %s", err);
    lua_pushvalue(L, 2);
    u->envelope_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 3);
    u->down_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    u->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, u->inbox);
    lua_setfield(L, LUA_REGISTRYINDEX, OWN_INBOX);
    pl_host_track(h, &u->res, linbox_shutdown);
    return 1;
}

static int inbox_close(lua_State *L) {
    linbox_close(luaL_checkudata(L, 1, INBOX_METATABLE));
    return 0;
}

static int inbox_set_name(lua_State *L) {
    linbox *u = luaL_checkudata(L, 1, INBOX_METATABLE);
    const char *name = luaL_checkstring(L, 2);
    if (u->inbox) pl_inbox_set_name(u->inbox, name);
    return 0;
}

/* ---- routes --------------------------------------------------------------------- */

static lroute *check_route(lua_State *L) {
    lroute *r = luaL_checkudata(L, 1, ROUTE_METATABLE);
    luaL_argcheck(L, r->inbox != NULL, 1, "a released route");
    return r;
}

/* This VM's inbox, or NULL. */
static pl_inbox *own_inbox(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, OWN_INBOX);
    pl_inbox *own = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return own;
}

static int core_route(lua_State *L) {
    const char *target = luaL_checkstring(L, 1);
    if (!pl_inbox_known(target)) { /* a miss (a process actor) makes nothing */
        lua_pushnil(L);
        return 1;
    }
    pl_inbox *own = own_inbox(L);
    lroute *r = lua_newuserdatauv(L, sizeof *r, 0);
    r->inbox = NULL;
    luaL_setmetatable(L, ROUTE_METATABLE);
    r->inbox = pl_inbox_find(target, own);
    if (!r->inbox) lua_pushnil(L);
    return 1;
}

static int post_result(lua_State *L, int rc) {
    if (rc == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, "the actor has ended");
    return 2;
}

/* Encodes with `encode` into a message block and hands it over. */
static int post(lua_State *L, int (*encode)(lua_State *, int, pl_buf *, char *, size_t)) {
    lroute *r = check_route(L);
    char err[512];
    pl_buf msg;
    if (pl_inbox_message_start(&msg, pl_value_default_limits.max_size) != 0)
        return luaL_error(L, "not enough memory");
    if (encode(L, 2, &msg, err, sizeof err) != 0) {
        pl_buf_free(&msg);
        lua_pushnil(L);
        lua_pushstring(L, err);
        lua_pushboolean(L, 1);
        return 3;
    }
    return post_result(L, pl_inbox_post_buf(r->inbox, &msg, own_inbox(L)));
}

static int route_post_request(lua_State *L) { return post(L, pl_lenvelope_request); }
static int route_post_reply(lua_State *L) { return post(L, pl_lenvelope_reply); }

static int route_alive(lua_State *L) {
    lua_pushboolean(L, pl_inbox_alive(check_route(L)->inbox));
    return 1;
}

static int route_index(lua_State *L) {
    lroute *r = check_route(L);
    const char *key = luaL_checkstring(L, 2);
    if (strcmp(key, "aid") == 0) {
        lua_pushstring(L, pl_inbox_aid(r->inbox));
        return 1;
    }
    luaL_getmetatable(L, ROUTE_METATABLE);
    lua_getfield(L, -1, key);
    return 1;
}

static int route_gc(lua_State *L) {
    lroute *r = luaL_checkudata(L, 1, ROUTE_METATABLE);
    pl_inbox_release(r->inbox);
    r->inbox = NULL;
    return 0;
}

static int route_tostring(lua_State *L) {
    lua_pushfstring(L, "route to %s", pl_inbox_aid(check_route(L)->inbox));
    return 1;
}

/* ---- the directory of names --------------------------------------------------- */

static int core_publish_name(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    const char *aid = luaL_optstring(L, 2, NULL);
    if (pl_inbox_publish(name, aid) != 0) return luaL_error(L, "cannot publish the name '%s'", name);
    return 0;
}

static int core_inbox_forwarded(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)pl_inbox_forwarded());
    return 1;
}

static const luaL_Reg functions[] = {
    {"inbox_open", core_inbox_open},
    {"route", core_route},
    {"publish_name", core_publish_name},
    {"inbox_forwarded", core_inbox_forwarded},
    {NULL, NULL},
};

static const luaL_Reg route_methods[] = {
    {"post_request", route_post_request},
    {"post_reply", route_post_reply},
    {"alive", route_alive},
    {"__index", route_index},
    {"__gc", route_gc},
    {"__tostring", route_tostring},
    {NULL, NULL},
};

void pl_linbox_register(lua_State *L) {
    luaL_newmetatable(L, INBOX_METATABLE);
    lua_pushcfunction(L, inbox_close);
    lua_setfield(L, -2, "close");
    lua_pushcfunction(L, inbox_set_name);
    lua_setfield(L, -2, "set_name");
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newmetatable(L, ROUTE_METATABLE);
    luaL_setfuncs(L, route_methods, 0);
    lua_pop(L, 1);
    luaL_setfuncs(L, functions, 0);
}
