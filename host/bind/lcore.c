/* lcore.c: pulsar.core, the Lua face of the host's loop.
 *
 * Only what needs C lives here: the clock, timers, the wake-up of the Lua
 * ready queue, signals, stdin, process facts and logging. Futures, tasks and
 * everything users see are written in Lua on top (lua/pulsar/).
 *
 * Ownership: a libuv handle is malloc'd, never embedded in a Lua userdata,
 * because Lua may collect the userdata while the handle is still alive. The
 * handle's close callback frees it and clears the userdata's pointer. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "host.h"
#include "inbox.h"
#include "lenvelope.h"
#include "lfs.h"
#include "log.h"
#include "logtail.h"
#include "conn.h"
#include "executor.h"
#include "spawn.h"
#include "auth.h"
#include "http.h"
#include "ws.h"
#include "lineedit.h"
#include "net.h"

#define TIMER_METATABLE "pulsar.core.Timer"

/* ---- timers --------------------------------------------------------- */

typedef struct pl_timer {
    uv_timer_t handle;
    pl_resource res;
    pl_host *host;
    int fn_ref;              /* the Lua function to call */
    struct pl_timer **owner; /* the userdata's slot, cleared when freed */
} pl_timer;

static void timer_closed(uv_handle_t *handle) { free(handle->data); }

/* Forgets Lua at once (the VM may be closed before the close callback, as a
 * monitor's is), and frees the timer once libuv is done with it. */
static void timer_close(pl_timer *t) {
    pl_host_untrack(&t->res);
    if (t->owner) *t->owner = NULL;
    t->owner = NULL;
    luaL_unref(t->host->L, LUA_REGISTRYINDEX, t->fn_ref);
    t->fn_ref = LUA_NOREF;
    uv_close((uv_handle_t *)&t->handle, timer_closed);
}

static void timer_shutdown(pl_resource *res) {
    pl_timer *t = (pl_timer *)((char *)res - offsetof(pl_timer, res));
    uv_timer_stop(&t->handle);
    timer_close(t);
}

static void timer_fired(uv_timer_t *handle) {
    pl_timer *t = handle->data;
    pl_host *h = t->host;
    lua_rawgeti(h->L, LUA_REGISTRYINDEX, t->fn_ref);
    if (uv_timer_get_repeat(handle) == 0) timer_close(t);
    pl_host_pcall(h, 0, 0, "timer callback");
}

/* core.timer(seconds, fn [, repeat_seconds]) -> Timer */
static int core_timer(lua_State *L) {
    double after = luaL_checknumber(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    double repeat = luaL_optnumber(L, 3, 0);
    luaL_argcheck(L, after >= 0 && after < 1e9, 1, "delay out of range");
    luaL_argcheck(L, repeat >= 0 && repeat < 1e9, 3, "repeat out of range");
    pl_timer **slot = lua_newuserdatauv(L, sizeof *slot, 0);
    *slot = NULL;
    luaL_setmetatable(L, TIMER_METATABLE);
    pl_timer *t = malloc(sizeof *t);
    if (!t) return luaL_error(L, "out of memory creating a timer");
    pl_host *h = pl_host_of(L);
    uv_timer_init(h->loop, &t->handle);
    t->handle.data = t;
    t->host = h;
    lua_pushvalue(L, 2);
    t->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    t->owner = slot;
    *slot = t;
    pl_host_track(h, &t->res, timer_shutdown);
    /* The loop clock is stale after long Lua work; a delay counts from now. */
    uv_update_time(h->loop);
    uint64_t ms = (uint64_t)(after * 1000.0 + 0.5);
    uint64_t repeat_ms = (uint64_t)(repeat * 1000.0 + 0.5);
    if (repeat > 0 && repeat_ms == 0) repeat_ms = 1;
    uv_timer_start(&t->handle, timer_fired, ms, repeat_ms);
    return 1;
}

static int timer_cancel(lua_State *L) {
    pl_timer **slot = luaL_checkudata(L, 1, TIMER_METATABLE);
    pl_timer *t = *slot;
    if (t && !uv_is_closing((uv_handle_t *)&t->handle)) {
        uv_timer_stop(&t->handle);
        timer_close(t);
    }
    return 0;
}

/* A timer that should not keep the arbiter alive on its own (a tick). */
static int timer_unref(lua_State *L) {
    pl_timer **slot = luaL_checkudata(L, 1, TIMER_METATABLE);
    if (*slot) uv_unref((uv_handle_t *)&(*slot)->handle);
    return 0;
}

static int timer_active(lua_State *L) {
    pl_timer **slot = luaL_checkudata(L, 1, TIMER_METATABLE);
    lua_pushboolean(L, *slot && !uv_is_closing((uv_handle_t *)&(*slot)->handle));
    return 1;
}

/* Collected while still armed: the timer goes on (call_later handles may be
 * dropped), it only forgets this userdata. */
static int timer_gc(lua_State *L) {
    pl_timer **slot = luaL_checkudata(L, 1, TIMER_METATABLE);
    if (*slot) (*slot)->owner = NULL;
    return 0;
}

/* ---- the ready queue's wake-up ------------------------------------- */

/* While the idle handle is active the loop polls without blocking and calls
 * the Lua drain function once per iteration; drain returns true while more
 * callbacks are queued. */
static void soon_idle(uv_idle_t *idle) {
    pl_host *h = idle->data;
    lua_rawgeti(h->L, LUA_REGISTRYINDEX, h->soon_ref);
    if (pl_host_pcall(h, 0, 1, "ready queue") != LUA_OK) return;
    int more = lua_toboolean(h->L, -1);
    lua_pop(h->L, 1);
    if (!more) uv_idle_stop(idle);
}

static int core_set_ready_handler(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    pl_host *h = pl_host_of(L);
    if (h->soon_ref == LUA_NOREF) {
        uv_idle_init(h->loop, &h->soon);
        h->soon.data = h;
    } else {
        luaL_unref(L, LUA_REGISTRYINDEX, h->soon_ref);
    }
    lua_pushvalue(L, 1);
    h->soon_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static int core_wake(lua_State *L) {
    pl_host *h = pl_host_of(L);
    if (h->soon_ref == LUA_NOREF) return luaL_error(L, "no ready handler set");
    uv_idle_start(&h->soon, soon_idle);
    return 0;
}

/* ---- running the loop ---------------------------------------------- */

/* core.run_once() -> alive: one loop iteration, for a wait outside any
 * coroutine. Refused inside a callback: uv_run is not reentrant. */
static int core_run_once(lua_State *L) {
    pl_host *h = pl_host_of(L);
    if (h->loop_depth > 0)
        return luaL_error(L, "the event loop is already running");
    lua_pushboolean(L, pl_host_run_once(h));
    return 1;
}

static int core_loop_running(lua_State *L) {
    lua_pushboolean(L, pl_host_of(L)->loop_depth > 0);
    return 1;
}

/* core.interrupted_by() -> signum | nil: the signal (SIGINT, SIGTERM)
 * whose interrupt the running code raised ("interrupted!"), until the loop
 * takes that signal: so that the main chunk it ended exits with the
 * signal's status, and the terminal REPL knows that Ctrl-C was spent. */
static int core_interrupted_by(lua_State *L) {
    int signum = pl_host_of(L)->interrupted_by;
    if (signum) lua_pushinteger(L, signum);
    else lua_pushnil(L);
    return 1;
}

static int core_exit_loop(lua_State *L) {
    pl_host_request_exit(pl_host_of(L), (int)luaL_optinteger(L, 1, 0));
    return 0;
}

static int core_exit_requested(lua_State *L) {
    lua_pushboolean(L, pl_host_of(L)->exit_requested);
    return 1;
}

/* ---- resuming coroutines ------------------------------------------- */

/* Moves nargs values from L to co, resumes co and moves what it yields or
 * returns back to L. The number of values moved, or -1 with the error
 * message on L's stack (as lcorolib.c's auxresume). */
static int resume_recorded(lua_State *L, lua_State *co, int nargs) {
    if (!lua_checkstack(co, nargs)) {
        lua_pushliteral(L, "too many arguments to resume");
        return -1;
    }
    lua_xmove(L, co, nargs);
    pl_host *h = pl_host_of(L);
    /* Recorded so that an interrupt reaches co (interrupt.c). */
    lua_State *previous = pl_host_set_running(h, co);
    int nres;
    int status = lua_resume(co, L, nargs, &nres);
    pl_host_set_running(h, previous); /* a nested resume gives its caller back */
    if (status != LUA_OK && status != LUA_YIELD) {
        lua_xmove(co, L, 1);
        return -1;
    }
    if (!lua_checkstack(L, nres + 1)) {
        lua_pop(co, nres);
        lua_pushliteral(L, "too many results to resume");
        return -1;
    }
    lua_xmove(co, L, nres);
    return nres;
}

/* core.resume(co, ...) -> true, values... | false, err: coroutine.resume,
 * but the host knows which coroutine runs (future.lua's step uses it). */
static int core_resume(lua_State *L) {
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co != NULL, 1, "coroutine");
    int n = resume_recorded(L, co, lua_gettop(L) - 1);
    lua_pushboolean(L, n >= 0);
    if (n < 0) n = 1; /* false, err */
    lua_insert(L, -(n + 1));
    return n + 1;
}

/* ---- signals --------------------------------------------------------- */

static const int stop_signals[] = {SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGABRT};
_Static_assert(sizeof stop_signals / sizeof *stop_signals ==
                   sizeof ((pl_host *)0)->signals / sizeof(uv_signal_t),
               "pl_host.signals holds one handle per stop signal");

/* While a terminal REPL runs, SIGINT is its own (core.on_interrupt): Ctrl-C
 * clears the typed line or cancels the line being evaluated, and neither
 * stops the arbiter nor counts as a stop signal. */
#define INTERRUPT_HANDLER "pulsar.core.on_interrupt"

/* Pushes the REPL's SIGINT handler and returns 1, or pushes nothing. */
static int push_interrupt_handler(lua_State *L) {
    if (lua_getfield(L, LUA_REGISTRYINDEX, INTERRUPT_HANDLER) == LUA_TFUNCTION) return 1;
    lua_pop(L, 1);
    return 0;
}

/* The first stop signal asks Lua for a graceful stop; a second one while
 * that stop runs ends the process at once, as a user pressing Ctrl-C twice
 * expects (with the terminal given back as it was). */
static void signal_received(uv_signal_t *handle, int signum) {
    pl_host *h = handle->data;
    if (signum == SIGINT && push_interrupt_handler(h->L)) {
        pl_host_pcall(h, 0, 0, "interrupt handler");
        h->interrupted_by = 0; /* taken, if it was this signal's */
        return;
    }
    if (h->stop_signals_seen++) {
        pl_lineedit_emergency_restore();
        fflush(stdout);
        _exit(signum);
    }
    lua_rawgeti(h->L, LUA_REGISTRYINDEX, h->signal_ref);
    lua_pushinteger(h->L, signum);
    pl_host_pcall(h, 1, 0, "signal handler");
    h->interrupted_by = 0; /* taken, if it was this signal's */
}

/* core.on_interrupt(fn | nil): fn() on SIGINT instead of a stop, while set
 * (the terminal REPL's); core.on_signal must have been called. */
static int core_on_interrupt(lua_State *L) {
    if (!lua_isnil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, INTERRUPT_HANDLER);
    return 0;
}

/* core.on_signal(fn): fn(signum) on SIGINT, SIGTERM, SIGQUIT, SIGHUP or
 * SIGABRT. The handles do not keep the loop alive. */
static int core_on_signal(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    pl_host *h = pl_host_of(L);
    if (h->signal_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, h->signal_ref);
    lua_pushvalue(L, 1);
    h->signal_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    for (; h->nsignals < (int)(sizeof stop_signals / sizeof *stop_signals);
         h->nsignals++) {
        uv_signal_t *s = &h->signals[h->nsignals];
        uv_signal_init(h->loop, s);
        s->data = h;
        uv_signal_start(s, signal_received, stop_signals[h->nsignals]);
        uv_unref((uv_handle_t *)s);
    }
    return 0;
}

/* ---- stdin ------------------------------------------------------------- */

/* Reads fd 0 on the loop, whatever it is: a terminal, a pipe or a file
 * (files through the thread pool, as libuv cannot poll them). */
typedef struct pl_stdin_reader {
    pl_host *host;
    pl_resource res;
    int fn_ref;
    uv_handle_type type;
    union {
        uv_tty_t tty;
        uv_pipe_t pipe;
        uv_handle_t handle;
    } stream;
    uv_fs_t req;
    int reading_file; /* a uv_fs_read is in flight */
    int closed;
    char buf[65536];
} pl_stdin_reader;

static void stdin_deliver(pl_stdin_reader *r, const char *data, size_t n) {
    lua_State *L = r->host->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->fn_ref);
    if (data) lua_pushlstring(L, data, n);
    else lua_pushnil(L);
    pl_host_pcall(r->host, 1, 0, "stdin reader");
}

static void stdin_freed(uv_handle_t *handle) { free(handle->data); }

/* Stops reading and frees the reader once libuv is done with it. */
static void stdin_close(pl_stdin_reader *r) {
    r->closed = 1;
    r->host->stdin_reader = NULL;
    pl_host_untrack(&r->res);
    luaL_unref(r->host->L, LUA_REGISTRYINDEX, r->fn_ref);
    if (r->type != UV_FILE) uv_close(&r->stream.handle, stdin_freed);
    else if (!r->reading_file) free(r);
    else uv_cancel((uv_req_t *)&r->req); /* its callback frees r */
}

static void stdin_shutdown(pl_resource *res) {
    stdin_close((pl_stdin_reader *)((char *)res - offsetof(pl_stdin_reader, res)));
}

static void stdin_end(pl_stdin_reader *r) {
    stdin_deliver(r, NULL, 0);
    if (!r->closed) stdin_close(r);
}

static void stdin_alloc(uv_handle_t *handle, size_t hint, uv_buf_t *buf) {
    (void)hint;
    pl_stdin_reader *r = handle->data;
    *buf = uv_buf_init(r->buf, sizeof r->buf);
}

static void stdin_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf) {
    pl_stdin_reader *r = stream->data;
    if (n > 0) stdin_deliver(r, buf->base, (size_t)n);
    else if (n < 0 && !r->closed) stdin_end(r);
}

static int stdin_file_next(pl_stdin_reader *r);

static void stdin_file_read(uv_fs_t *req) {
    pl_stdin_reader *r = req->data;
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    r->reading_file = 0;
    if (r->closed) {
        free(r);
        return;
    }
    if (n <= 0) {
        stdin_end(r);
        return;
    }
    stdin_deliver(r, r->buf, (size_t)n);
    if (!r->closed && stdin_file_next(r) != 0) stdin_end(r);
}

static int stdin_file_next(pl_stdin_reader *r) {
    uv_buf_t b = uv_buf_init(r->buf, sizeof r->buf);
    r->req.data = r;
    int rc = uv_fs_read(r->host->loop, &r->req, 0, &b, 1, -1, stdin_file_read);
    r->reading_file = rc == 0;
    return rc;
}

static int start_stdin_stream(pl_host *h, pl_stdin_reader *r) {
    int rc;
    if (r->type == UV_TTY) {
        rc = uv_tty_init(h->loop, &r->stream.tty, 0, 1);
    } else {
        rc = uv_pipe_init(h->loop, &r->stream.pipe, 0);
    }
    if (rc != 0) return rc;
    r->stream.handle.data = r; /* from here on, failure closes the handle */
    if (r->type == UV_NAMED_PIPE && (rc = uv_pipe_open(&r->stream.pipe, 0)) != 0)
        return rc;
    return uv_read_start((uv_stream_t *)&r->stream.handle, stdin_alloc, stdin_read);
}

/* core.read_stdin(fn): fn(chunk) for each chunk read, fn(nil) at the end. */
static int core_read_stdin(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    pl_host *h = pl_host_of(L);
    if (h->stdin_reader) return luaL_error(L, "stdin is already being read");
    pl_stdin_reader *r = calloc(1, sizeof *r);
    if (!r) return luaL_error(L, "out of memory");
    r->host = h;
    r->type = uv_guess_handle(0);
    int rc = UV_EINVAL;
    if (r->type == UV_FILE) rc = stdin_file_next(r);
    else if (r->type == UV_TTY || r->type == UV_NAMED_PIPE) rc = start_stdin_stream(h, r);
    if (rc != 0) {
        if (r->stream.handle.data) uv_close(&r->stream.handle, stdin_freed);
        else free(r);
        return luaL_error(L, "cannot read stdin: %s", uv_strerror(rc));
    }
    lua_pushvalue(L, 1);
    r->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    pl_host_track(h, &r->res, stdin_shutdown);
    h->stdin_reader = r;
    return 0;
}

/* ---- facts and logging ------------------------------------------------ */

static int core_now(lua_State *L) {
    lua_pushnumber(L, (lua_Number)uv_now(pl_host_of(L)->loop) / 1000.0);
    return 1;
}

static int core_hrtime(lua_State *L) {
    lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
    return 1;
}

static int core_isatty(lua_State *L) {
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

static int core_pid(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)uv_os_getpid());
    return 1;
}

static int core_thread_id(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)(uintptr_t)uv_thread_self());
    return 1;
}

static int core_random_id(lua_State *L) {
    unsigned char bytes[6];
    char hex[sizeof bytes * 2 + 1];
    int rc = uv_random(NULL, NULL, bytes, sizeof bytes, 0, NULL);
    if (rc != 0) return luaL_error(L, "no random bytes: %s", uv_strerror(rc));
    for (size_t i = 0; i < sizeof bytes; i++)
        snprintf(hex + 2 * i, 3, "%02x", bytes[i]);
    lua_pushstring(L, hex);
    return 1;
}

/* core.system() -> { rss = bytes, cpu = seconds of user + system time } */
static int core_system(lua_State *L) {
    size_t rss = 0;
    uv_rusage_t ru;
    uv_resident_set_memory(&rss);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)rss);
    lua_setfield(L, -2, "rss");
    if (uv_getrusage(&ru) == 0) {
        double cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                     (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
        lua_pushnumber(L, cpu);
        lua_setfield(L, -2, "cpu");
    }
    return 1;
}

static int core_versions(lua_State *L) {
    lua_createtable(L, 0, 3);
    lua_pushstring(L, PULSAR_VERSION);
    lua_setfield(L, -2, "pulsar");
    lua_pushstring(L, LUA_RELEASE);
    lua_setfield(L, -2, "lua");
    lua_pushstring(L, uv_version_string());
    lua_setfield(L, -2, "libuv");
    return 1;
}

static void set_string_field(lua_State *L, const char *key, const char *value) {
    if (!value) return;
    lua_pushstring(L, value);
    lua_setfield(L, -2, key);
}

/* core.config() -> a fresh table of the command line's settings */
static int core_config(lua_State *L) {
    const pl_config *c = &pl_host_of(L)->cli->cfg;
    lua_createtable(L, 0, 15);
    lua_pushinteger(L, c->workers);
    lua_setfield(L, -2, "workers");
    lua_pushnumber(L, c->timeout);
    lua_setfield(L, -2, "timeout");
    lua_pushnumber(L, c->exit_timeout);
    lua_setfield(L, -2, "exit_timeout");
    set_string_field(L, "concurrency", c->concurrency);
    set_string_field(L, "bind", c->bind);
    set_string_field(L, "mailbox", c->mailbox);
    set_string_field(L, "log_level", c->log_level);
    set_string_field(L, "pid_file", c->pid_file);
    set_string_field(L, "attach", c->attach);
    set_string_field(L, "cookie_file", c->cookie_file);
    set_string_field(L, "observer", c->observer);
    set_string_field(L, "node", c->node);
    set_string_field(L, "join", c->join);
    set_string_field(L, "cluster", c->cluster);
    lua_pushnumber(L, c->node_timeout);
    lua_setfield(L, -2, "node_timeout");
    return 1;
}

static int check_level(lua_State *L, int arg) {
    int level = pl_log_level_from_name(luaL_checkstring(L, arg));
    luaL_argcheck(L, level >= 0, arg, "unknown log level");
    return level;
}

/* core.log(level, actor, message) */
static int core_log(lua_State *L) {
    int level = check_level(L, 1);
    pl_log(level, luaL_optstring(L, 2, NULL), "%s", luaL_checkstring(L, 3));
    return 0;
}

static int core_log_enabled(lua_State *L) {
    lua_pushboolean(L, pl_log_enabled(check_level(L, 1)));
    return 1;
}

static void push_tail_line(lua_State *L, const pl_logtail_line *line) {
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, (lua_Integer)line->seq);
    lua_setfield(L, -2, "seq");
    lua_pushnumber(L, line->time);
    lua_setfield(L, -2, "time");
    lua_pushstring(L, pl_log_level_name(line->level));
    lua_setfield(L, -2, "level");
    lua_pushstring(L, line->actor);
    lua_setfield(L, -2, "actor");
    lua_pushstring(L, line->text);
    lua_setfield(L, -2, "text");
}

/* core.log_tail([since [, max]]) -> lines, last_seq: this process's kept
 * lines with seq > since (default 0), oldest first, at most max (default
 * all the ring holds), and the newest seq kept (0 before any line). The
 * lines come out a chunk at a time, so that no Lua allocation (which may
 * raise an error) happens while the ring's lock is held. */
static int core_log_tail(lua_State *L) {
    lua_Integer since = luaL_optinteger(L, 1, 0);
    luaL_argcheck(L, since >= 0, 1, "since must be a seq >= 0");
    lua_Integer max = luaL_optinteger(L, 2, PL_LOGTAIL_LINES);
    luaL_argcheck(L, max >= 0, 2, "max must be a count >= 0");
    pl_logtail_line chunk[16];
    uint64_t after = (uint64_t)since, last = 0;
    lua_Integer count = 0;
    size_t want, n;
    lua_createtable(L, max < PL_LOGTAIL_LINES ? (int)max : PL_LOGTAIL_LINES, 0);
    do {
        want = max - count < 16 ? (size_t)(max - count) : 16;
        n = pl_logtail_copy(after, chunk, want, &last);
        for (size_t i = 0; i < n; i++) {
            push_tail_line(L, &chunk[i]);
            lua_rawseti(L, -2, ++count);
        }
        if (n > 0) after = chunk[n - 1].seq;
    } while (n > 0 && n == want);
    lua_pushinteger(L, (lua_Integer)last);
    return 2;
}

static int core_set_name(lua_State *L) {
    pl_host *h = pl_host_of(L);
    snprintf(h->name, sizeof h->name, "%s", luaL_checkstring(L, 1));
    return 0;
}

/* ---- the private mailbox directory -----------------------------------
 *
 * The arbiter's Unix mailbox lives in a directory of its own under $TMPDIR.
 * Lua removes it when the mailbox closes, but not every way out passes
 * there (os.exit outside a task, an error before the loop, a listener whose
 * socket file is still open at that moment), so each directory made here is
 * also remembered and removed, with what is in it, by an exit handler. Only
 * the process that made a directory removes it. */

typedef struct private_dir {
    struct private_dir *next;
    pid_t owner;
    char path[]; /* NUL-terminated */
} private_dir;

static private_dir *private_dirs;
static pthread_mutex_t private_dirs_lock = PTHREAD_MUTEX_INITIALIZER;

/* Removes the files in dir (the mailbox socket), then dir itself. */
static void remove_private_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        size_t dlen = strlen(dir);
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char *file = malloc(dlen + strlen(e->d_name) + 2);
            if (!file) continue;
            sprintf(file, "%s/%s", dir, e->d_name);
            unlink(file);
            free(file);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void remove_private_dirs_at_exit(void) {
    pthread_mutex_lock(&private_dirs_lock);
    private_dir *list = private_dirs;
    private_dirs = NULL;
    pthread_mutex_unlock(&private_dirs_lock);
    while (list) {
        private_dir *next = list->next;
        if (list->owner == getpid()) remove_private_dir(list->path);
        free(list);
        list = next;
    }
}

/* Remembers dir for the exit handler; 0 or -1 (out of memory). */
static int remember_private_dir(const char *dir) {
    static int handler_set;
    size_t len = strlen(dir) + 1;
    private_dir *pd = malloc(sizeof *pd + len);
    if (!pd) return -1;
    memcpy(pd->path, dir, len);
    pd->owner = getpid();
    pthread_mutex_lock(&private_dirs_lock);
    int ok = handler_set || atexit(remove_private_dirs_at_exit) == 0;
    if (ok) {
        handler_set = 1;
        pd->next = private_dirs;
        private_dirs = pd;
    }
    pthread_mutex_unlock(&private_dirs_lock);
    if (!ok) free(pd);
    return ok ? 0 : -1;
}

/* Forgets dir; whether core.private_dir had made it (in this process). */
static int forget_private_dir(const char *dir) {
    int found = 0;
    pthread_mutex_lock(&private_dirs_lock);
    for (private_dir **p = &private_dirs; *p; p = &(*p)->next) {
        if (strcmp((*p)->path, dir) == 0) {
            private_dir *gone = *p;
            *p = gone->next;
            found = gone->owner == getpid();
            free(gone);
            break;
        }
    }
    pthread_mutex_unlock(&private_dirs_lock);
    return found;
}

/* core.private_dir() -> a new directory only this user can open (0700),
 * under $TMPDIR or /tmp, for the mailbox's Unix socket; it is removed at
 * exit if core.remove_dir has not removed it before. */
static int core_private_dir(lua_State *L) {
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) tmp = "/tmp";
    static const char pattern[] = "/pulsar-lua-XXXXXX";
    char *path = malloc(strlen(tmp) + sizeof pattern);
    if (!path) return luaL_error(L, "out of memory making a private directory");
    sprintf(path, "%s%s", tmp, pattern);
    int made = mkdtemp(path) != NULL, err = errno;
    if (made && remember_private_dir(path) != 0) {
        rmdir(path);
        made = 0, err = ENOMEM;
    }
    if (made) lua_pushstring(L, path);
    free(path);
    if (!made)
        return luaL_error(L, "cannot make a private directory in %s: %s", tmp, strerror(err));
    return 1;
}

/* core.remove_dir(path) -> true if it is gone. A directory that
 * core.private_dir made loses its files first (the mailbox socket). */
static int core_remove_dir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    if (forget_private_dir(path)) remove_private_dir(path);
    else rmdir(path);
    lua_pushboolean(L, access(path, F_OK) != 0);
    return 1;
}

/* core.memory() -> bytes the VM holds, its limit or nil */
static int core_memory(lua_State *L) {
    pl_host *h = pl_host_of(L);
    lua_pushinteger(L, (lua_Integer)h->memory_used);
    if (h->memory_limit) lua_pushinteger(L, (lua_Integer)h->memory_limit);
    else lua_pushnil(L);
    return 2;
}

/* core.set_memory_limit(bytes | nil): nil or false lifts the limit */
static int core_set_memory_limit(lua_State *L) {
    size_t limit = 0;
    if (lua_toboolean(L, 1)) {
        lua_Integer n = luaL_checkinteger(L, 1);
        luaL_argcheck(L, n > 0, 1, "max_memory must be a number of bytes above 0");
        limit = (size_t)n;
    }
    pl_host_set_memory_limit(pl_host_of(L), limit);
    return 0;
}

static int core_set_log_level(lua_State *L) {
    pl_log_set_level(check_level(L, 1));
    return 0;
}

static const luaL_Reg core_functions[] = {
    {"timer", core_timer},
    {"set_ready_handler", core_set_ready_handler},
    {"wake", core_wake},
    {"run_once", core_run_once},
    {"loop_running", core_loop_running},
    {"exit_loop", core_exit_loop},
    {"exit_requested", core_exit_requested},
    {"interrupted_by", core_interrupted_by},
    {"resume", core_resume},
    {"on_signal", core_on_signal},
    {"on_interrupt", core_on_interrupt},
    {"read_stdin", core_read_stdin},
    {"now", core_now},
    {"hrtime", core_hrtime},
    {"isatty", core_isatty},
    {"pid", core_pid},
    {"thread_id", core_thread_id},
    {"random_id", core_random_id},
    {"system", core_system},
    {"versions", core_versions},
    {"config", core_config},
    {"log", core_log},
    {"log_enabled", core_log_enabled},
    {"log_tail", core_log_tail},
    {"set_log_level", core_set_log_level},
    {"set_name", core_set_name},
    {"private_dir", core_private_dir},
    {"remove_dir", core_remove_dir},
    {"memory", core_memory},
    {"set_memory_limit", core_set_memory_limit},
    {NULL, NULL},
};

static const luaL_Reg timer_methods[] = {
    {"cancel", timer_cancel},
    {"active", timer_active},
    {"unref", timer_unref},
    {NULL, NULL},
};

int luaopen_pulsar_core(lua_State *L) {
    luaL_newmetatable(L, TIMER_METATABLE);
    luaL_newlib(L, timer_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, timer_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newlib(L, core_functions);
    pl_lcodec_register(L);
    pl_lspawn_register(L);
    pl_lconn_register(L);
    pl_lexecutor_register(L);
    pl_lauth_register(L);
    pl_lnet_register(L);
    pl_lhttp_register(L);
    pl_lws_register(L);
    pl_lfs_register(L);
    pl_llineedit_register(L);
    pl_linbox_register(L);
    pl_lenvelope_register(L);
    return 1;
}
