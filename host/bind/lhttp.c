/* lhttp.c: the HTTP request parser (http.c) seen from Lua, in pulsar.core.
 *
 *   core.http_parser{max_header=, max_headers=, max_body=} -> parser
 *       (every limit optional: 64 KiB, 100 fields, 16 MiB)
 *   parser:feed(data [, into]) -> requests, status, reason
 *       requests: the requests data completed, oldest first (maybe none):
 *       a new list, or `into` refilled (a server's own list, reused for
 *       every read; it then also says continue = take_continue() and
 *       partial = in_request(), which saves two calls per read);
 *       status, reason: once the input is bad, the status to answer (400,
 *       413, 414, 431, 505; 500 without memory) and why; every later call
 *       gives them again. Bytes after a request that ends the connection
 *       are ignored.
 *   parser:take_continue() -> true once for each request whose headers
 *       carried Expect: 100-continue and are complete while its body has not
 *       started: time to send "HTTP/1.1 100 Continue"
 *   parser:in_request() -> true while a request has started, unfinished
 *   parser:closed() -> true after a request that ends the connection
 *
 * A request is a table: method, target (as sent), path (the target before
 * '?', not decoded), query_string (after '?', or nil), version
 * ("HTTP/1.1"), headers (lower-case names; a repeated field's values joined
 * with ", ", cookies with "; "), body (a string, "" when none), keep_alive,
 * expect_continue, upgrade (booleans). lua/pulsar/http.lua decodes the path
 * and the query.
 *
 * The response parser (http_response.c), for the client:
 *   core.http_response_parser{max_header=, max_headers=, max_body=} -> rp
 *       (the same limits and defaults)
 *   rp:feed(data) -> response | nil, reason
 *       the oldest response complete so far (taken off the queue; a second
 *       one in the same bytes waits for rp:next()), or nil; reason once the
 *       input is bad (then and ever after; a response completed before the
 *       bad bytes still comes first)
 *   rp:eof() -> response | nil, reason: the server closed: ends a body
 *       delimited by the close; reason if a response was cut short
 *   rp:expect_head(on): the next final response answers a HEAD (no body)
 *   rp:next() -> response | nil   rp:in_response()   rp:closed()
 *   rp:interim() -> the count of 1xx responses read and dropped
 * A response is a table: status, reason, version, headers (lower-case
 * names; a repeated field's values joined with ", " as a request's are,
 * but Set-Cookie, which cannot be joined, as a list of its values when
 * repeated), body ("" when none), keep_alive, chunked, until_eof, upgrade
 * (booleans). */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "http.h"
#include "http_response.h"

#define PARSER_METATABLE "pulsar.core.HttpParser"
#define RESPONSE_PARSER_METATABLE "pulsar.core.HttpResponseParser"

typedef struct lparser {
    pl_http_parser *p;
    pl_http_request *holding; /* taken from the queue, being turned to Lua */
} lparser;

static lparser *check_parser(lua_State *L) {
    lparser *u = luaL_checkudata(L, 1, PARSER_METATABLE);
    if (!u->p) luaL_error(L, "the HTTP parser is closed");
    return u;
}

static void set_lstring(lua_State *L, const char *key, const char *s, size_t n) {
    lua_pushlstring(L, s, n);
    lua_setfield(L, -2, key);
}

static void set_boolean(lua_State *L, const char *key, int b) {
    lua_pushboolean(L, b);
    lua_setfield(L, -2, key);
}

/* headers[name] = value, or joined to the value already there: a list of
 * values is one value with commas (RFC 9110 §5.3), except Cookie, whose
 * pairs are separated by "; " (RFC 6265 §5.4). Leaves the stack as found. */
static void add_header(lua_State *L, const pl_http_request *r,
                       const pl_http_header *h) {
    const char *name = pl_http_text(r, h->name);
    lua_pushlstring(L, name, h->name_len);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushlstring(L, pl_http_text(r, h->value), h->value_len);
    } else {
        int cookie = h->name_len == 6 && memcmp(name, "cookie", 6) == 0;
        lua_pushstring(L, cookie ? "; " : ", ");
        lua_pushlstring(L, pl_http_text(r, h->value), h->value_len);
        lua_concat(L, 3);
    }
    lua_rawset(L, -3);
}

/* "HTTP/1.1" without snprintf for the versions there are (the parser
 * refuses any other major version). */
static void push_version(lua_State *L, const pl_http_request *r) {
    if (r->version_major == 1 && r->version_minor == 1) {
        lua_pushliteral(L, "HTTP/1.1");
    } else if (r->version_major == 1 && r->version_minor == 0) {
        lua_pushliteral(L, "HTTP/1.0");
    } else {
        char version[32];
        snprintf(version, sizeof version, "HTTP/%d.%d", r->version_major,
                 r->version_minor);
        lua_pushstring(L, version);
    }
}

static void push_request(lua_State *L, const pl_http_request *r) {
    lua_createtable(L, 0, 11);
    lua_pushstring(L, r->method);
    lua_setfield(L, -2, "method");
    set_lstring(L, "target", pl_http_text(r, 0), r->target_len);
    set_lstring(L, "path", pl_http_text(r, 0), r->path_len);
    if (r->has_query) set_lstring(L, "query_string", pl_http_text(r, r->query), r->query_len);
    push_version(L, r);
    lua_setfield(L, -2, "version");
    lua_createtable(L, 0, (int)r->nheaders);
    for (size_t i = 0; i < r->nheaders; i++) add_header(L, r, &r->headers[i]);
    lua_setfield(L, -2, "headers");
    set_lstring(L, "body", r->body.len ? r->body.data : "", r->body.len);
    set_boolean(L, "keep_alive", r->keep_alive);
    set_boolean(L, "expect_continue", r->expect_continue);
    set_boolean(L, "upgrade", r->upgrade);
}

/* limits[key], an integer from min, or dflt when absent. */
static lua_Integer opt_limit(lua_State *L, const char *key, size_t dflt,
                             lua_Integer min) {
    lua_Integer v = (lua_Integer)dflt;
    int isnum = 1;
    if (lua_getfield(L, 1, key) != LUA_TNIL) v = lua_tointegerx(L, -1, &isnum);
    lua_pop(L, 1);
    if (!isnum || v < min)
        luaL_error(L, "http_parser: %s must be an integer from %d", key, (int)min);
    return v;
}

/* The limits in the table at index 1 (absent: the defaults). */
static pl_http_limits check_limits(lua_State *L) {
    pl_http_limits lim = pl_http_default_limits;
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        lim.max_header = (size_t)opt_limit(L, "max_header", lim.max_header, 1);
        lim.max_headers = (size_t)opt_limit(L, "max_headers", lim.max_headers, 0);
        lim.max_body = (size_t)opt_limit(L, "max_body", lim.max_body, 0);
    }
    return lim;
}

/* core.http_parser([limits]) */
static int core_http_parser(lua_State *L) {
    pl_http_limits lim = check_limits(L);
    lparser *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->p = NULL;
    u->holding = NULL;
    luaL_setmetatable(L, PARSER_METATABLE);
    u->p = pl_http_parser_new(&lim);
    if (!u->p) return luaL_error(L, "out of memory making an HTTP parser");
    return 1;
}

static int parser_feed(lua_State *L) {
    lparser *u = check_parser(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    int into = !lua_isnoneornil(L, 3);
    if (into) luaL_checktype(L, 3, LUA_TTABLE);
    int rc = pl_http_feed(u->p, data, len);
    if (into) lua_settop(L, 3);
    else lua_createtable(L, 1, 0);
    int n = 1;
    for (; (u->holding = pl_http_next(u->p)) != NULL; n++) {
        /* a memory error here leaves u->holding for __gc to free */
        push_request(L, u->holding);
        lua_rawseti(L, -2, n);
        pl_http_request_free(u->holding);
        u->holding = NULL;
    }
    if (into) {
        for (; lua_rawgeti(L, -1, n) != LUA_TNIL; n++) { /* the last read's */
            lua_pop(L, 1);
            lua_pushnil(L);
            lua_rawseti(L, -2, n);
        }
        lua_pop(L, 1);
        set_boolean(L, "continue", pl_http_take_continue(u->p));
        set_boolean(L, "partial", pl_http_in_request(u->p));
    }
    if (rc == 0) return 1;
    const char *reason;
    lua_pushinteger(L, pl_http_error(u->p, &reason));
    lua_pushstring(L, reason);
    return 3;
}

static int parser_take_continue(lua_State *L) {
    lua_pushboolean(L, pl_http_take_continue(check_parser(L)->p));
    return 1;
}

static int parser_in_request(lua_State *L) {
    lua_pushboolean(L, pl_http_in_request(check_parser(L)->p));
    return 1;
}

static int parser_closed(lua_State *L) {
    lua_pushboolean(L, pl_http_closed(check_parser(L)->p));
    return 1;
}

static int parser_gc(lua_State *L) {
    lparser *u = luaL_checkudata(L, 1, PARSER_METATABLE);
    pl_http_request_free(u->holding);
    pl_http_parser_free(u->p);
    u->holding = NULL;
    u->p = NULL;
    return 0;
}

static const luaL_Reg parser_methods[] = {
    {"feed", parser_feed},
    {"take_continue", parser_take_continue},
    {"in_request", parser_in_request},
    {"closed", parser_closed},
    {NULL, NULL},
};

/* ---- the response parser ------------------------------------------------ */

typedef struct lresponse_parser {
    pl_http_response_parser *p;
    pl_http_response *holding; /* taken from the queue, being turned to Lua */
} lresponse_parser;

static lresponse_parser *check_response_parser(lua_State *L) {
    lresponse_parser *u = luaL_checkudata(L, 1, RESPONSE_PARSER_METATABLE);
    if (!u->p) luaL_error(L, "the HTTP response parser is closed");
    return u;
}

/* headers[name] = value; a repeated field joined with ", ", but Set-Cookie
 * kept as a list (its values hold commas of their own: RFC 9110 §5.3).
 * Leaves the stack as found. */
static void add_response_header(lua_State *L, const pl_http_response *r,
                                const pl_http_header *h) {
    const char *name = pl_http_response_text(r, h->name);
    const char *value = pl_http_response_text(r, h->value);
    int cookie = h->name_len == 10 && memcmp(name, "set-cookie", 10) == 0;
    lua_pushlstring(L, name, h->name_len);
    lua_pushvalue(L, -1);
    int seen = lua_rawget(L, -3);
    if (seen == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushlstring(L, value, h->value_len);
    } else if (cookie && seen == LUA_TTABLE) {
        lua_pushlstring(L, value, h->value_len);
        lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    } else if (cookie) {
        lua_createtable(L, 2, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
        lua_pushlstring(L, value, h->value_len);
        lua_rawseti(L, -2, 2);
    } else {
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, value, h->value_len);
        lua_concat(L, 3);
    }
    lua_rawset(L, -3);
}

static void push_response(lua_State *L, const pl_http_response *r) {
    lua_createtable(L, 0, 10);
    lua_pushinteger(L, r->status);
    lua_setfield(L, -2, "status");
    set_lstring(L, "reason", pl_http_response_text(r, 0), r->reason_len);
    char version[32];
    snprintf(version, sizeof version, "HTTP/%d.%d", r->version_major, r->version_minor);
    lua_pushstring(L, version);
    lua_setfield(L, -2, "version");
    lua_createtable(L, 0, (int)r->nheaders);
    for (size_t i = 0; i < r->nheaders; i++) add_response_header(L, r, &r->headers[i]);
    lua_setfield(L, -2, "headers");
    set_lstring(L, "body", r->body.len ? r->body.data : "", r->body.len);
    set_boolean(L, "keep_alive", r->keep_alive);
    set_boolean(L, "chunked", r->chunked);
    set_boolean(L, "until_eof", r->until_eof);
    set_boolean(L, "upgrade", r->upgrade);
}

/* Pushes the oldest queued response, or nil; 1. */
static int push_next_response(lua_State *L, lresponse_parser *u) {
    u->holding = pl_http_response_next(u->p);
    if (!u->holding) {
        lua_pushnil(L);
        return 1;
    }
    /* a memory error here leaves u->holding for __gc to free */
    push_response(L, u->holding);
    pl_http_response_free(u->holding);
    u->holding = NULL;
    return 1;
}

/* response | nil, then the reason once the input is bad. */
static int response_result(lua_State *L, lresponse_parser *u, int rc) {
    push_next_response(L, u);
    if (rc == 0) return 1;
    lua_pushstring(L, pl_http_response_error(u->p));
    return 2;
}

/* core.http_response_parser([limits]) */
static int core_http_response_parser(lua_State *L) {
    pl_http_limits lim = check_limits(L);
    lresponse_parser *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->p = NULL;
    u->holding = NULL;
    luaL_setmetatable(L, RESPONSE_PARSER_METATABLE);
    u->p = pl_http_response_parser_new(&lim);
    if (!u->p) return luaL_error(L, "out of memory making an HTTP response parser");
    return 1;
}

static int response_parser_feed(lua_State *L) {
    lresponse_parser *u = check_response_parser(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    return response_result(L, u, pl_http_response_feed(u->p, data, len));
}

static int response_parser_eof(lua_State *L) {
    lresponse_parser *u = check_response_parser(L);
    return response_result(L, u, pl_http_response_eof(u->p));
}

static int response_parser_next(lua_State *L) {
    return push_next_response(L, check_response_parser(L));
}

static int response_parser_expect_head(lua_State *L) {
    lresponse_parser *u = check_response_parser(L);
    pl_http_response_expect_head(u->p, lua_toboolean(L, 2));
    return 0;
}

static int response_parser_in_response(lua_State *L) {
    lua_pushboolean(L, pl_http_response_in_response(check_response_parser(L)->p));
    return 1;
}

static int response_parser_closed(lua_State *L) {
    lua_pushboolean(L, pl_http_response_closed(check_response_parser(L)->p));
    return 1;
}

static int response_parser_interim(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)pl_http_response_interim(check_response_parser(L)->p));
    return 1;
}

static int response_parser_gc(lua_State *L) {
    lresponse_parser *u = luaL_checkudata(L, 1, RESPONSE_PARSER_METATABLE);
    pl_http_response_free(u->holding);
    pl_http_response_parser_free(u->p);
    u->holding = NULL;
    u->p = NULL;
    return 0;
}

static const luaL_Reg response_parser_methods[] = {
    {"feed", response_parser_feed},
    {"eof", response_parser_eof},
    {"next", response_parser_next},
    {"expect_head", response_parser_expect_head},
    {"in_response", response_parser_in_response},
    {"closed", response_parser_closed},
    {"interim", response_parser_interim},
    {NULL, NULL},
};

static const luaL_Reg http_functions[] = {
    {"http_parser", core_http_parser},
    {"http_response_parser", core_http_response_parser},
    {NULL, NULL},
};

static void new_metatable(lua_State *L, const char *name, const luaL_Reg *methods,
                          lua_CFunction gc) {
    luaL_newmetatable(L, name);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}

void pl_lhttp_register(lua_State *L) {
    new_metatable(L, PARSER_METATABLE, parser_methods, parser_gc);
    new_metatable(L, RESPONSE_PARSER_METATABLE, response_parser_methods,
                  response_parser_gc);
    luaL_setfuncs(L, http_functions, 0);
}
