/* lnet.c: net.c seen from Lua, as part of pulsar.core.
 *
 *   core.net_bind{ip=, port= | path=, backlog=} -> Socket | nil, err
 *       sock.fd, sock.address ("127.0.0.1:41234", "unix:PATH"),
 *       sock:close() (a Unix socket's file is removed), sock:closed()
 *   core.net_listen_fd(fd, on_accept(transport), opts) -> Server | nil, err
 *       opts: own (fd is taken over), backlog, keep_alive (idle seconds),
 *             on_lost(transport) (after each accepted connection's
 *             connection_lost)
 *       server.address, server:close() (stops accepting), server:closed()
 *   core.net_connect({ip=, port=} | {path=}, fn(transport | nil, err))
 *   core.net_getaddrinfo(host, fn({ip, ...} | nil, err))
 *   core.net_ip_family(text) -> "inet" | "inet6" | nil
 *   core.parse_address(text) -> {path=} | {host=, port=} | nil, err
 *       sockaddr.h's parser, the one the mailbox and the command line use
 *       (host is nil for every interface)
 *
 * A Transport (asyncio's names) carries one connection:
 *   t:set_protocol(p)   reading starts; p's methods are called from now on
 *   t:get_protocol()    t:write(data, ...) -> true | nil, err
 *   t:sendfile(path | fd, [offset [, length]]) -> true | nil, err: a file
 *       range (default: all of it) queued behind what was written, sent
 *       with sendfile(2); its bytes count in the write buffer until sent
 *   t:write_eof()       t:close()   t:abort()   t:is_closing()
 *   t:pause_reading()   t:resume_reading()
 *   t:get_extra_info("peername" | "sockname") -> "HOST:PORT" | "unix:PATH"
 *   t:get_write_buffer_size()   t:set_write_buffer_limits(high [, low])
 *   t:get_write_buffer_limits() -> high, low   t:set_idle_timeout(seconds)
 * and calls its protocol's data_received(p, data), eof_received(p) (a true
 * result keeps the connection half-open; else it closes), pause_writing(p),
 * resume_writing(p) and connection_lost(p, err | nil), each only if the
 * protocol has it. connection_made is the Lua side's (net.lua) to call.
 *
 * Flow control: when a write takes the queue above the high-water mark,
 * the protocol's pause_writing is called at once, inside that write (as
 * asyncio does); a protocol without one has its reading paused instead,
 * until the queue drains below the low-water mark, so that a protocol that
 * only answers what it reads cannot buffer without bound for a peer that
 * does not read. resume_writing follows the drain.
 *
 * connection_lost keeps net.h's close rule, as a mailbox conn's on_close
 * does: it runs once, inside t:abort() (before it returns) and the host's
 * shutdown, and from the loop for every other end, t:close() included
 * (once what was written has gone out).
 *
 * Lifetime: a transport is anchored in the registry from its creation to
 * its connection_lost, so dropping every Lua reference never closes it; a
 * server while it accepts; a socket is closed when collected. Callbacks
 * from libuv run through pl_host_pcall: an error is logged with its
 * traceback and never unwinds through libuv, and a protocol method that
 * raises (data_received, eof_received, resume_writing) closes its
 * connection, flushing what was written first; pause_writing runs inside
 * the write that caused it, so its error is that write's. sock.address,
 * server.address and the connect callback work as lconn.c's do, through
 * lsock.c. */
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "host.h"
#include "log.h"
#include "lrequest.h"
#include "lsock.h"
#include "net.h"

#define SOCKET_METATABLE "pulsar.core.Socket"
#define SERVER_METATABLE "pulsar.core.Server"
#define TRANSPORT_METATABLE "pulsar.core.Transport"
#define MAX_WRITE_PIECES 64

/* "connection refused (ECONNREFUSED)" */
static const char *uv_reason(int rc, char *buf, size_t len) {
    snprintf(buf, len, "%s (%s)", uv_strerror(rc), uv_err_name(rc));
    return buf;
}

/* ---- transports -------------------------------------------------------- */

typedef struct ltransport {
    pl_stream *stream; /* NULL once connection_lost has run */
    pl_host *host;
    int protocol_ref;  /* LUA_NOREF until set_protocol */
    int self_ref;      /* anchors this userdata while the stream lives */
    int lost_ref;      /* the server's on_lost, for accepted ones */
} ltransport;

static ltransport *check_transport(lua_State *L, int arg) {
    return luaL_checkudata(L, arg, TRANSPORT_METATABLE);
}

/* What protocol_call does, handed over as a light userdata so that
 * nothing which can fail (a string of megabytes) is made outside the
 * protected call. */
typedef struct protocol_event {
    ltransport *t;
    const char *method;
    const char *data; /* data_received */
    size_t len;
    const char *err;  /* connection_lost; NULL when clean */
    int with_err;
} protocol_event;

/* Protected: calls protocol[method](protocol, args) if the method exists.
 * Returns whether it did, and its first result. */
static int protocol_call(lua_State *L) {
    protocol_event *ev = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ev->t->protocol_ref);
    if (lua_isnil(L, -1)) return 0;
    lua_getfield(L, -1, ev->method);
    if (lua_isnil(L, -1)) return 0;
    lua_insert(L, -2); /* method, protocol */
    int nargs = 1;
    if (ev->data) {
        lua_pushlstring(L, ev->data, ev->len);
        nargs++;
    } else if (ev->with_err) {
        if (ev->err) lua_pushstring(L, ev->err);
        else lua_pushnil(L);
        nargs++;
    }
    lua_call(L, nargs, 1);
    lua_pushboolean(L, 1);
    lua_insert(L, -2);
    return 2;
}

/* Runs an event through protocol_call; the method's result as a boolean.
 * A method that raises leaves its protocol in a state nobody knows: the
 * error is logged with its traceback and the connection closed (what was
 * already written is flushed first), so that it is neither left open and
 * silent nor fed more data; the other connections go on. connection_lost
 * is the end anyway. */
static int deliver(protocol_event *ev) {
    pl_host *h = ev->t->host;
    lua_State *L = h->L;
    char where[80];
    snprintf(where, sizeof where, "%s%s", ev->method,
             ev->t->stream ? " (the connection is closed)" : "");
    lua_pushcfunction(L, protocol_call);
    lua_pushlightuserdata(L, ev);
    if (pl_host_pcall(h, 1, 2, where) != LUA_OK) {
        if (ev->t->stream) pl_stream_close(ev->t->stream);
        return 0;
    }
    int result = lua_toboolean(L, -1);
    lua_pop(L, 2);
    return result;
}

static void on_data(pl_stream *s, const char *data, size_t len, void *ud) {
    (void)s;
    protocol_event ev = {ud, "data_received", data, len, NULL, 0};
    deliver(&ev);
}

static int on_eof(pl_stream *s, void *ud) {
    (void)s;
    protocol_event ev = {ud, "eof_received", NULL, 0, NULL, 0};
    return deliver(&ev);
}

static void on_drain(pl_stream *s, void *ud) {
    (void)s;
    protocol_event ev = {ud, "resume_writing", NULL, 0, NULL, 0};
    deliver(&ev);
}

/* The end: connection_lost, then the server's on_lost(transport); every
 * reference is dropped and the userdata forgets the stream. */
static void on_lost(pl_stream *s, const char *err, void *ud) {
    (void)s;
    ltransport *t = ud;
    lua_State *L = t->host->L;
    t->stream = NULL;
    protocol_event ev = {t, "connection_lost", NULL, 0, err, 1};
    deliver(&ev);
    if (t->lost_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, t->lost_ref);
        lua_rawgeti(L, LUA_REGISTRYINDEX, t->self_ref);
        pl_host_pcall(t->host, 1, 0, "server connection end");
    }
    luaL_unref(L, LUA_REGISTRYINDEX, t->protocol_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, t->lost_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, t->self_ref);
    t->protocol_ref = t->lost_ref = t->self_ref = LUA_NOREF;
}

static void push_transport_metatable(lua_State *L);

/* Wraps a new stream; until set_protocol it only hears of its end. */
static ltransport *push_transport(lua_State *L, pl_stream *s) {
    ltransport *t = lua_newuserdatauv(L, sizeof *t, 0);
    t->stream = s;
    t->host = pl_host_of(L);
    t->protocol_ref = t->lost_ref = LUA_NOREF;
    push_transport_metatable(L);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    t->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    pl_stream_handler h = {NULL, NULL, NULL, on_lost, t};
    pl_stream_set_handler(s, &h);
    return t;
}

static int transport_set_protocol(lua_State *L) {
    ltransport *t = check_transport(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (!t->stream) return luaL_error(L, "set_protocol: the transport is closed");
    luaL_unref(L, LUA_REGISTRYINDEX, t->protocol_ref);
    lua_pushvalue(L, 2);
    t->protocol_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    pl_stream_handler h = {on_data, on_eof, on_drain, on_lost, t};
    pl_stream_set_handler(t->stream, &h);
    return 0;
}

static int transport_get_protocol(lua_State *L) {
    ltransport *t = check_transport(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->protocol_ref);
    return 1;
}

static int closed_result(lua_State *L) {
    lua_pushnil(L);
    lua_pushliteral(L, "the transport is closed");
    return 2;
}

/* Above the high-water mark: the protocol's pause_writing, called here
 * unprotected (its error is the write's), or else paused reading. */
static void pause_producer(lua_State *L, ltransport *t) {
    if (lua_rawgeti(L, LUA_REGISTRYINDEX, t->protocol_ref) == LUA_TTABLE) {
        if (lua_getfield(L, -1, "pause_writing") != LUA_TNIL) {
            lua_insert(L, -2); /* method, protocol */
            lua_call(L, 1, 0);
            return;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (t->stream) pl_stream_pause_for_flow(t->stream);
}

/* The answer of t:write and t:sendfile to net.h's rc: nil, err when the
 * bytes were refused; else true, once the producer is paused if they
 * took the queue above its high-water mark (rc 1). */
static int queued_result(lua_State *L, ltransport *t, int rc, const char *err) {
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    if (rc == 1) pause_producer(L, t);
    lua_pushboolean(L, 1);
    return 1;
}

/* t:write(data, ...) -> true | nil, err: the pieces go out in order, in
 * one system call when the socket takes them. */
static int transport_write(lua_State *L) {
    ltransport *t = check_transport(L, 1);
    int n = lua_gettop(L) - 1;
    luaL_argcheck(L, n <= MAX_WRITE_PIECES, MAX_WRITE_PIECES + 2,
                  "too many pieces in one write");
    uv_buf_t bufs[MAX_WRITE_PIECES];
    for (int i = 0; i < n; i++) {
        size_t len;
        if (lua_type(L, i + 2) != LUA_TSTRING)
            return luaL_typeerror(L, i + 2, "string");
        const char *p = lua_tolstring(L, i + 2, &len);
        bufs[i] = uv_buf_init((char *)p, (unsigned)(len > UINT32_MAX ? UINT32_MAX : len));
        if (len > UINT32_MAX) return luaL_error(L, "write: a piece of %zu bytes is too large", len);
    }
    if (!t->stream) return closed_result(L);
    char err[300];
    int rc = pl_stream_write(t->stream, bufs, (unsigned)n, err, sizeof err);
    return queued_result(L, t, rc, err);
}

/* t:sendfile(path | fd [, offset [, length]]) -> true | nil, err (net.h's
 * pl_stream_sendfile); flow control as t:write's. */
static int transport_sendfile(lua_State *L) {
    ltransport *t = check_transport(L, 1);
    const char *path = NULL;
    int fd = -1;
    if (lua_type(L, 2) == LUA_TSTRING) path = lua_tostring(L, 2);
    else if (lua_isinteger(L, 2)) fd = (int)lua_tointeger(L, 2);
    else return luaL_typeerror(L, 2, "path or file descriptor");
    if (!path && fd < 0) return luaL_argerror(L, 2, "not a file descriptor");
    lua_Integer offset = luaL_optinteger(L, 3, 0);
    lua_Integer length = luaL_opt(L, luaL_checkinteger, 4, -1);
    luaL_argcheck(L, offset >= 0, 3, "offset must be 0 or more");
    luaL_argcheck(L, length >= -1, 4, "length must be 0 or more");
    if (!t->stream) return closed_result(L);
    char err[PATH_MAX + 200];
    int rc = pl_stream_sendfile(t->stream, path, fd, (uint64_t)offset, (int64_t)length,
                                err, sizeof err);
    return queued_result(L, t, rc, err);
}

static int transport_write_eof(lua_State *L) {
    ltransport *t = check_transport(L, 1);
    if (!t->stream) return closed_result(L);
    char err[200];
    if (pl_stream_write_eof(t->stream, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int transport_close(lua_State *L) {
    ltransport *t = check_transport(L, 1);
    if (t->stream) pl_stream_close(t->stream);
    return 0;
}

/* t:abort([err]): closes now, dropping what is queued; connection_lost
 * gets err (nil by default), before abort returns. */
static int transport_abort(lua_State *L) {
    ltransport *t = check_transport(L, 1);
    const char *err = luaL_optstring(L, 2, NULL);
    if (t->stream) pl_stream_abort(t->stream, err);
    return 0;
}

static int transport_is_closing(lua_State *L) {
    ltransport *t = check_transport(L, 1);
    lua_pushboolean(L, !t->stream || pl_stream_is_closing(t->stream));
    return 1;
}

static int transport_pause_reading(lua_State *L) {
    ltransport *t = check_transport(L, 1);
    if (t->stream) pl_stream_pause_reading(t->stream);
    return 0;
}

static int transport_resume_reading(lua_State *L) {
    ltransport *t = check_transport(L, 1);
    if (t->stream) pl_stream_resume_reading(t->stream);
    return 0;
}

static int transport_get_extra_info(lua_State *L) {
    ltransport *t = check_transport(L, 1);
    const char *name = luaL_checkstring(L, 2);
    char out[PL_SOCKADDR_NAME_MAX];
    int peer = strcmp(name, "peername") == 0;
    if ((peer || strcmp(name, "sockname") == 0) && t->stream &&
        pl_stream_name(t->stream, peer, out, sizeof out) == 0)
        lua_pushstring(L, out);
    else
        lua_pushnil(L);
    return 1;
}

static int transport_get_write_buffer_size(lua_State *L) {
    ltransport *t = check_transport(L, 1);
    lua_pushinteger(L, t->stream ? (lua_Integer)pl_stream_write_queue(t->stream) : 0);
    return 1;
}

static size_t check_size(lua_State *L, int arg, lua_Integer dflt) {
    lua_Integer v = luaL_optinteger(L, arg, dflt);
    luaL_argcheck(L, v >= 0, arg, "must be a number of bytes from 0");
    return (size_t)v;
}

/* t:set_write_buffer_limits([high [, low]]): high defaults to 64 KiB, low
 * to high / 4. */
static int transport_set_write_buffer_limits(lua_State *L) {
    ltransport *t = check_transport(L, 1);
    size_t high = check_size(L, 2, 0), low = check_size(L, 3, 0);
    luaL_argcheck(L, low <= high || high == 0, 3, "low must not exceed high");
    if (t->stream) pl_stream_set_write_limits(t->stream, high, low);
    return 0;
}

static int transport_get_write_buffer_limits(lua_State *L) {
    ltransport *t = check_transport(L, 1);
    size_t high = 0, low = 0;
    if (t->stream) pl_stream_get_write_limits(t->stream, &high, &low);
    lua_pushinteger(L, (lua_Integer)high);
    lua_pushinteger(L, (lua_Integer)low);
    return 2;
}

static double check_seconds(lua_State *L, int arg) {
    double v = luaL_optnumber(L, arg, 0);
    luaL_argcheck(L, v >= 0 && v < 1e9, arg, "must be a number of seconds from 0");
    return v;
}

static int transport_set_idle_timeout(lua_State *L) {
    ltransport *t = check_transport(L, 1);
    double seconds = check_seconds(L, 2);
    if (t->stream) pl_stream_set_idle_timeout(t->stream, seconds);
    return 0;
}

static int transport_unref(lua_State *L) {
    ltransport *t = check_transport(L, 1);
    if (t->stream) pl_stream_unref(t->stream);
    return 0;
}

static int transport_tostring(lua_State *L) {
    ltransport *t = check_transport(L, 1);
    char peer[PL_SOCKADDR_NAME_MAX] = "closed";
    if (t->stream && pl_stream_name(t->stream, 1, peer, sizeof peer) != 0)
        snprintf(peer, sizeof peer, "open");
    lua_pushfstring(L, "Transport (%s): %p", peer, (void *)t);
    return 1;
}

static const luaL_Reg transport_methods[] = {
    {"set_protocol", transport_set_protocol},
    {"get_protocol", transport_get_protocol},
    {"write", transport_write},
    {"sendfile", transport_sendfile},
    {"write_eof", transport_write_eof},
    {"close", transport_close},
    {"abort", transport_abort},
    {"is_closing", transport_is_closing},
    {"pause_reading", transport_pause_reading},
    {"resume_reading", transport_resume_reading},
    {"get_extra_info", transport_get_extra_info},
    {"get_write_buffer_size", transport_get_write_buffer_size},
    {"set_write_buffer_limits", transport_set_write_buffer_limits},
    {"get_write_buffer_limits", transport_get_write_buffer_limits},
    {"set_idle_timeout", transport_set_idle_timeout},
    {"unref", transport_unref},
    {NULL, NULL},
};

/* No __gc: a transport is anchored until its stream is gone, so one that
 * is collected has nothing left to close. */
static void push_transport_metatable(lua_State *L) {
    if (luaL_newmetatable(L, TRANSPORT_METATABLE)) {
        luaL_newlib(L, transport_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, transport_tostring);
        lua_setfield(L, -2, "__tostring");
    }
}

/* ---- endpoints ------------------------------------------------------------ */

/* {ip=, port=} or {path=} at arg -> ep; raises with a clear message. */
static void check_endpoint(lua_State *L, int arg, pl_endpoint *ep) {
    luaL_checktype(L, arg, LUA_TTABLE);
    char err[200];
    int rc;
    if (lua_getfield(L, arg, "path") != LUA_TNIL) {
        rc = pl_endpoint_unix(ep, luaL_checkstring(L, -1), err, sizeof err);
    } else {
        lua_getfield(L, arg, "ip");
        lua_getfield(L, arg, "port");
        const char *ip = lua_tostring(L, -2);
        if (!ip) luaL_error(L, "an endpoint needs ip and port, or path");
        if (!lua_isinteger(L, -1)) luaL_error(L, "port must be a whole number");
        lua_Integer port = lua_tointeger(L, -1);
        if (port < 0 || port > 65535)
            luaL_error(L, "port %I is out of range (0 to 65535)", port);
        rc = pl_endpoint_ip(ep, ip, (int)port, err, sizeof err);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    if (rc != 0) luaL_error(L, "%s", err);
}

/* ---- bound sockets -------------------------------------------------------- */

typedef struct lsocket {
    int fd; /* -1 once closed */
    int is_unix;
    pl_resource res; /* closed at host shutdown */
    char path[PL_SOCKADDR_PATH_MAX];
} lsocket;

static void lsocket_close(lsocket *u) {
    if (u->fd < 0) return;
    pl_host_untrack(&u->res);
    pl_net_unbind(u->fd, u->is_unix ? u->path : NULL);
    u->fd = -1;
}

static void lsocket_shutdown(pl_resource *res) {
    lsocket_close((lsocket *)((char *)res - offsetof(lsocket, res)));
}

static lsocket *check_socket(lua_State *L, int arg) {
    return luaL_checkudata(L, arg, SOCKET_METATABLE);
}

static int socket_close(lua_State *L) {
    lsocket_close(check_socket(L, 1));
    return 0;
}

static int socket_closed(lua_State *L) {
    lua_pushboolean(L, check_socket(L, 1)->fd < 0);
    return 1;
}

/* __index: fd, then what pl_lsock_index answers (address, methods). */
static int socket_index(lua_State *L) {
    lsocket *u = check_socket(L, 1);
    if (lua_type(L, 2) == LUA_TSTRING &&
        strcmp(lua_tostring(L, 2), "fd") == 0) {
        if (u->fd >= 0) lua_pushinteger(L, u->fd);
        else lua_pushnil(L);
        return 1;
    }
    return pl_lsock_index(L);
}

static int socket_tostring(lua_State *L) {
    lsocket *u = check_socket(L, 1);
    lua_getiuservalue(L, 1, 1);
    lua_pushfstring(L, "Socket (%s%s)", lua_tostring(L, -1), u->fd < 0 ? ", closed" : "");
    return 1;
}

static const luaL_Reg socket_methods[] = {
    {"close", socket_close},
    {"closed", socket_closed},
    {NULL, NULL},
};

static void push_socket_metatable(lua_State *L) {
    if (luaL_newmetatable(L, SOCKET_METATABLE)) {
        luaL_newlib(L, socket_methods);
        lua_pushcclosure(L, socket_index, 1);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, socket_close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, socket_tostring);
        lua_setfield(L, -2, "__tostring");
    }
}

static int opt_backlog(lua_State *L, int arg, const char *field) {
    lua_getfield(L, arg, field);
    lua_Integer backlog = luaL_optinteger(L, -1, 2048);
    lua_pop(L, 1);
    if (backlog < 1 || backlog > 1 << 20)
        luaL_error(L, "backlog must be a whole number from 1 to %d", 1 << 20);
    return (int)backlog;
}

/* core.net_bind{ip=, port= | path=, backlog=} -> Socket | nil, err */
static int core_net_bind(lua_State *L) {
    pl_endpoint ep;
    check_endpoint(L, 1, &ep);
    int backlog = opt_backlog(L, 1, "backlog");
    lsocket *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->fd = -1;
    u->is_unix = ep.is_unix;
    memcpy(u->path, ep.path, sizeof u->path);
    push_socket_metatable(L);
    lua_setmetatable(L, -2);
    char name[PL_SOCKADDR_NAME_MAX], err[400];
    int fd = pl_net_bind(&ep, backlog, name, sizeof name, err, sizeof err);
    if (fd < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    u->fd = fd;
    pl_host_track(pl_host_of(L), &u->res, lsocket_shutdown);
    lua_pushstring(L, name);
    lua_setiuservalue(L, -2, 1);
    return 1;
}

/* ---- servers ----------------------------------------------------------------- */

typedef struct lserver {
    pl_server *server; /* NULL once closed */
    pl_host *host;
    int accept_ref, lost_ref, self_ref;
} lserver;

static lserver *check_server(lua_State *L, int arg) {
    return luaL_checkudata(L, arg, SERVER_METATABLE);
}

/* From pl_server_close, whoever called it (Lua, or the host's shutdown). */
static void server_closed(pl_server *srv, void *ud) {
    (void)srv;
    lserver *u = ud;
    lua_State *L = u->host->L;
    u->server = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, u->accept_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, u->lost_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, u->self_ref);
    u->accept_ref = u->lost_ref = u->self_ref = LUA_NOREF;
}

/* Copies the transport on top (the callback's argument) below the callback,
 * so that it outlives the call: an abort inside it runs connection_lost,
 * which drops the transport's own anchor (net.h's close rule). */
static void keep_below_call(lua_State *L) {
    lua_pushvalue(L, -1);
    lua_insert(L, -3);
}

/* After the callback: a transport it left without a protocol is closed
 * (nobody would ever read it); then the copy kept below goes. */
static void abort_unprotocolled(lua_State *L, ltransport *t) {
    if (t->stream && t->protocol_ref == LUA_NOREF)
        pl_stream_abort(t->stream, "no protocol for the connection");
    lua_pop(L, 1);
}

/* A connection: on_accept(transport). A transport left without a protocol
 * (on_accept failed, or forgot) is closed: nobody would ever read it. */
static void server_accepted(pl_server *srv, pl_stream *s, void *ud) {
    (void)srv;
    lserver *u = ud;
    lua_State *L = u->host->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, u->accept_ref);
    ltransport *t = push_transport(L, s);
    if (u->lost_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, u->lost_ref);
        t->lost_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    keep_below_call(L);
    pl_host_pcall(u->host, 1, 0, "server accept handler");
    abort_unprotocolled(L, t);
}

static int server_close(lua_State *L) {
    lserver *u = check_server(L, 1);
    if (u->server) pl_server_close(u->server);
    return 0;
}

static int server_closed_method(lua_State *L) {
    lua_pushboolean(L, check_server(L, 1)->server == NULL);
    return 1;
}

static int server_set_idle_timeout(lua_State *L) {
    lserver *u = check_server(L, 1);
    double seconds = check_seconds(L, 2);
    if (u->server) pl_server_set_idle_timeout(u->server, seconds);
    return 0;
}

static int server_unref(lua_State *L) {
    lserver *u = check_server(L, 1);
    if (u->server) pl_server_unref(u->server);
    return 0;
}

static const luaL_Reg server_methods[] = {
    {"close", server_close},
    {"unref", server_unref},
    {"closed", server_closed_method},
    {"set_idle_timeout", server_set_idle_timeout},
    {NULL, NULL},
};

/* No __gc: an open server is anchored; a closed one holds nothing. */
static void push_server_metatable(lua_State *L) {
    if (luaL_newmetatable(L, SERVER_METATABLE))
        pl_lsock_set_index(L, server_methods); /* and .address */
}

static int optional_function_field(lua_State *L, int arg, const char *field) {
    int ref = LUA_NOREF;
    if (lua_getfield(L, arg, field) != LUA_TNIL) {
        if (!lua_isfunction(L, -1)) luaL_error(L, "%s must be a function", field);
        ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
        lua_pop(L, 1);
    }
    return ref;
}

/* core.net_listen_fd(fd, on_accept, opts) -> Server | nil, err */
static int core_net_listen_fd(lua_State *L) {
    lua_Integer fd = luaL_checkinteger(L, 1);
    luaL_argcheck(L, fd >= 0 && fd < 1 << 30, 1, "not a descriptor");
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (lua_isnoneornil(L, 3)) {
        lua_settop(L, 2);
        lua_newtable(L);
    }
    luaL_checktype(L, 3, LUA_TTABLE);
    int backlog = opt_backlog(L, 3, "backlog");
    lua_getfield(L, 3, "own");
    int own = lua_toboolean(L, -1);
    lua_getfield(L, 3, "keep_alive");
    double keep_alive = lua_isnil(L, -1) ? 0 : lua_tonumber(L, -1);
    if (!lua_isnil(L, -1) && (!lua_isnumber(L, -1) || keep_alive < 0 || keep_alive >= 1e9))
        return luaL_error(L, "keep_alive must be a number of seconds from 0");
    lua_pop(L, 2);
    pl_host *h = pl_host_of(L);
    lserver *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->server = NULL;
    u->host = h;
    u->accept_ref = u->lost_ref = u->self_ref = LUA_NOREF;
    push_server_metatable(L);
    lua_setmetatable(L, -2);
    char err[400];
    pl_server_handler handler = {server_accepted, server_closed, u};
    pl_server *srv = pl_server_open(h, (int)fd, own, backlog, &handler, err, sizeof err);
    if (!srv) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    u->server = srv;
    pl_server_set_idle_timeout(srv, keep_alive);
    lua_pushstring(L, pl_server_address(srv));
    lua_setiuservalue(L, -2, 1);
    lua_pushvalue(L, 2);
    u->accept_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    u->lost_ref = optional_function_field(L, 3, "on_lost");
    lua_pushvalue(L, -1);
    u->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

/* ---- connecting ----------------------------------------------------------------- */

static void lua_connected(pl_stream *s, const char *err, void *ud) {
    pl_host *h = pl_lsock_callback_take(ud);
    lua_State *L = h->L;
    if (s) {
        ltransport *t = push_transport(L, s);
        keep_below_call(L);
        pl_host_pcall(h, 1, 0, "connect callback");
        abort_unprotocolled(L, t);
        return;
    }
    lua_pushnil(L);
    lua_pushstring(L, err);
    pl_host_pcall(h, 2, 0, "connect callback");
}

/* core.net_connect(endpoint, fn [, timeout]): fn(transport) or fn(nil,
 * err), from the loop. fn must set the transport's protocol, or it is
 * closed. A timeout (seconds) gives up a connection not made by then. */
static int core_net_connect(lua_State *L) {
    pl_endpoint ep;
    check_endpoint(L, 1, &ep);
    double timeout = luaL_optnumber(L, 3, 0);
    lua_settop(L, 2);
    pl_lsock_callback *cb = pl_lsock_callback_new(L, 2);
    pl_stream_connect(pl_host_of(L), &ep, timeout, lua_connected, cb);
    return 0;
}

/* ---- names ------------------------------------------------------------------ */

/* A lookup's lifetime, at the host's shutdown too, is lrequest.h's. */
typedef struct lresolve {
    uv_getaddrinfo_t req;
    pl_lrequest lr; /* its host and function */
    char name[256];
} lresolve;

/* Pushes the distinct addresses of a getaddrinfo answer, in its order. */
static void push_addresses(lua_State *L, const struct addrinfo *ai) {
    lua_newtable(L);
    int n = 0;
    for (; ai; ai = ai->ai_next) {
        char ip[64];
        if (ai->ai_family == AF_INET)
            uv_ip4_name((const struct sockaddr_in *)ai->ai_addr, ip, sizeof ip);
        else if (ai->ai_family == AF_INET6)
            uv_ip6_name((const struct sockaddr_in6 *)ai->ai_addr, ip, sizeof ip);
        else
            continue;
        int seen = 0;
        for (int i = 1; i <= n && !seen; i++) {
            lua_rawgeti(L, -1, i);
            seen = strcmp(lua_tostring(L, -1), ip) == 0;
            lua_pop(L, 1);
        }
        if (seen) continue;
        lua_pushstring(L, ip);
        lua_rawseti(L, -2, ++n);
    }
}

static void resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *ai) {
    lresolve *r = req->data;
    pl_host *h = pl_lrequest_answer(&r->lr);
    if (!h) {
        uv_freeaddrinfo(ai);
        free(r);
        return;
    }
    lua_State *L = h->L;
    if (status == 0) {
        push_addresses(L, ai);
        lua_pushnil(L);
    } else {
        char why[120];
        lua_pushnil(L);
        lua_pushfstring(L, "cannot resolve '%s': %s", r->name,
                        uv_reason(status, why, sizeof why));
    }
    uv_freeaddrinfo(ai);
    free(r);
    pl_host_pcall(h, 2, 0, "getaddrinfo callback");
}

/* core.net_getaddrinfo(host, fn): fn({ip, ...}) or fn(nil, err). */
static int core_net_getaddrinfo(lua_State *L) {
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    luaL_argcheck(L, len > 0 && len < sizeof ((lresolve *)0)->name, 1,
                  "host name must have 1 to 255 bytes");
    lresolve *r = calloc(1, sizeof *r);
    if (!r) return luaL_error(L, "out of memory");
    memcpy(r->name, name, len + 1);
    pl_lrequest_init(&r->lr, L, (uv_req_t *)&r->req);
    r->req.data = r;
    int rc = uv_getaddrinfo(r->lr.host->loop, &r->req, resolved, r->name, NULL,
                            &pl_sockaddr_stream_hints);
    if (rc != 0) {
        free(r);
        return luaL_error(L, "cannot resolve '%s': %s", name, uv_strerror(rc));
    }
    pl_lrequest_started(&r->lr, L, 2);
    return 0;
}

/* core.net_ip_family(text) -> "inet" | "inet6" | nil */
static int core_net_ip_family(lua_State *L) {
    const char *text = luaL_checkstring(L, 1);
    unsigned char addr[16];
    if (uv_inet_pton(AF_INET, text, addr) == 0) lua_pushliteral(L, "inet");
    else if (uv_inet_pton(AF_INET6, text, addr) == 0) lua_pushliteral(L, "inet6");
    else lua_pushnil(L);
    return 1;
}

/* core.parse_address(text) -> {path=} | {host=, port=} | nil, err */
static int core_parse_address(lua_State *L) {
    pl_address a;
    char err[400];
    if (pl_address_parse(luaL_checkstring(L, 1), &a, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_createtable(L, 0, 2);
    if (a.is_unix) {
        lua_pushstring(L, a.path);
        lua_setfield(L, -2, "path");
        return 1;
    }
    if (a.host[0]) {
        lua_pushstring(L, a.host);
        lua_setfield(L, -2, "host");
    }
    lua_pushinteger(L, a.port);
    lua_setfield(L, -2, "port");
    return 1;
}

static const luaL_Reg net_functions[] = {
    {"parse_address", core_parse_address},
    {"net_bind", core_net_bind},
    {"net_listen_fd", core_net_listen_fd},
    {"net_connect", core_net_connect},
    {"net_getaddrinfo", core_net_getaddrinfo},
    {"net_ip_family", core_net_ip_family},
    {NULL, NULL},
};

/* Adds the functions above to the table on top of the stack (pulsar.core). */
void pl_lnet_register(lua_State *L) {
    push_transport_metatable(L);
    push_socket_metatable(L);
    push_server_metatable(L);
    lua_pop(L, 3);
    luaL_setfuncs(L, net_functions, 0);
}
