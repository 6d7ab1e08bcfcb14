/* host.c: an actor's home (see host.h): its Lua VM, its loop, what it
 * must close, and how it ends.
 *
 * pl_host_init makes a VM (through a counting allocator that enforces
 * max_memory) that finds the pulsar library in the executable (modules.c),
 * and a loop of its own, or the arbiter's for a monitor; pl_host_run hands a request to an entry
 * point of lua/pulsar/host.lua and runs the loop until nothing is left to
 * do or an exit is asked for; pl_host_close closes every tracked resource,
 * every handle and the VM, so that nothing leaks. pl_host_main is the
 * arbiter's life: the command line handed to host.lua's main, which runs
 * the -e and -l actions and the script in the main coroutine. The arbiter,
 * each thread actor, each process actor and each monitor is one pl_host. */
#include "host.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "log.h"
#include "modules.h"

/* Message handler for protected calls: adds a traceback to the message. */
static int traceback_handler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)",
                              luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int pl_host_pcall(pl_host *h, int nargs, int nresults, const char *where) {
    lua_State *L = h->L;
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, traceback_handler);
    lua_insert(L, base);
    pl_host_enter_lua(h);
    int status = lua_pcall(L, nargs, nresults, base);
    pl_host_leave_lua(h);
    lua_remove(L, base);
    if (status != LUA_OK) {
        pl_log(PL_LOG_ERROR, h->name, "%s: %s", where,
               lua_isstring(L, -1) ? lua_tostring(L, -1) : "(no message)");
        lua_pop(L, 1);
    }
    return status;
}

/* Lua that waits here is not busy: the loop runs, and an interrupt is for
 * the callbacks it calls. */
int pl_host_run_once(pl_host *h) {
    int depth = pl_host_suspend_lua(h);
    h->loop_depth++;
    int alive = uv_run(h->loop, UV_RUN_ONCE);
    h->loop_depth--;
    pl_host_resume_lua(h, depth);
    return alive;
}

void pl_host_request_exit(pl_host *h, int code) {
    h->exit_code = code;
    h->exit_requested = 1;
    if (h->on_exit_request) h->on_exit_request(h);
    else uv_stop(h->loop);
}

/* arg as lua.c builds it: the script at 0, options below, args above. */
static void create_arg_table(lua_State *L, int argc, char **argv, int script) {
    int first = script ? script : argc;
    lua_createtable(L, argc - first, first + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - (script ? script : 0));
    }
    lua_setglobal(L, "arg");
}

/* The table handed to host.lua's main: what the command line asked for. */
static void push_run_request(lua_State *L, const pl_cli *cli, int argc,
                             char **argv) {
    lua_createtable(L, 0, 6);
    lua_createtable(L, cli->nactions, 0);
    for (int i = 0; i < cli->nactions; i++) {
        lua_createtable(L, 0, 2);
        lua_pushlstring(L, &cli->actions[i].kind, 1);
        lua_setfield(L, -2, "kind");
        lua_pushstring(L, cli->actions[i].text);
        lua_setfield(L, -2, "text");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "actions");
    if (cli->script) {
        lua_pushstring(L, argv[cli->script]);
        lua_setfield(L, -2, "script");
        lua_createtable(L, argc - cli->script - 1, 0);
        for (int i = cli->script + 1; i < argc; i++) {
            lua_pushstring(L, argv[i]);
            lua_rawseti(L, -2, i - cli->script);
        }
        lua_setfield(L, -2, "args");
    }
    lua_pushboolean(L, cli->interactive);
    lua_setfield(L, -2, "interactive");
    lua_pushboolean(L, isatty(STDIN_FILENO));
    lua_setfield(L, -2, "stdin_is_tty");
    lua_pushboolean(L, cli->show_version);
    lua_setfield(L, -2, "show_version");
    lua_pushboolean(L, cli->ignore_env);
    lua_setfield(L, -2, "ignore_env");
}

/* ---- the VM's allocator ------------------------------------------------
 *
 * The VM's own pool (vmalloc.c), counting: memory_used is what the VM's
 * blocks hold, and a block may not grow past memory_limit. Lua answers a
 * refusal with an emergency collection, then raises "not enough memory"
 * (shrinking and freeing never fail). A thread actor thus cannot take the
 * memory of the process it shares with the arbiter. Runs on the VM's own
 * thread only. */
static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    pl_host *h = ud;
    size_t old = ptr ? osize : 0;
    if (h->memory_limit && nsize > old && h->memory_used - old + nsize > h->memory_limit)
        return NULL;
    void *block = pl_vmalloc_realloc(&h->vm_alloc, ptr, osize, nsize);
    if (block || nsize == 0) h->memory_used = h->memory_used - old + nsize;
    return block;
}

void pl_host_set_memory_limit(pl_host *h, size_t limit) { h->memory_limit = limit; }

/* ---- what luaL_newstate would add: a panic and warnings -----------------
 *
 * The state is made with lua_newstate so that every block, the first ones
 * included, comes from the VM's pool; lauxlib's panic and warning
 * functions come only with luaL_newstate, so here are the host's. */
static int vm_panic(lua_State *L) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "pulsar-lua: PANIC: unprotected error in call to Lua API (%s)\n",
            msg ? msg : "error object is not a string");
    fflush(stderr);
    return 0; /* Lua aborts */
}

enum { WARN_OFF, WARN_ON, WARN_CONTINUED };

/* warn() as lua does it: off until "@on" (-W), "@off" again; a message in
 * pieces is one "Lua warning: " line. */
static void vm_warning(void *ud, const char *msg, int tocont) {
    pl_host *h = ud;
    if (h->warn_state != WARN_CONTINUED && !tocont && msg[0] == '@') {
        if (strcmp(msg, "@on") == 0) h->warn_state = WARN_ON;
        else if (strcmp(msg, "@off") == 0) h->warn_state = WARN_OFF;
        return; /* a control message, known or not, is never shown */
    }
    if (h->warn_state == WARN_OFF) return;
    if (h->warn_state == WARN_ON) fputs("Lua warning: ", stderr);
    fputs(msg, stderr);
    if (!tocont) fputs("\n", stderr);
    fflush(stderr);
    h->warn_state = tocont ? WARN_CONTINUED : WARN_ON;
}

static lua_State *new_counted_state(pl_host *h) {
    pl_vmalloc_init(&h->vm_alloc);
    h->memory_used = 0;
    lua_State *L = lua_newstate(counting_alloc, h);
    if (!L) return NULL;
    lua_atpanic(L, vm_panic);
    h->warn_state = WARN_OFF;
    lua_setwarnf(L, vm_warning, h);
    return L;
}

static int setup_vm(pl_host *h) {
    lua_State *L = new_counted_state(h);
    if (!L) {
        fprintf(stderr, "pulsar-lua: cannot create a Lua state: out of memory\n");
        return -1;
    }
    h->L = L;
    *(pl_host **)lua_getextraspace(L) = h;
    /* lua.c's -E: the package library then ignores LUA_PATH and LUA_CPATH. */
    if (h->cli->ignore_env) {
        lua_pushboolean(L, 1);
        lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
    }
    luaL_openlibs(L);
    /* The collector lua.c 5.4 runs: generational. */
    lua_gc(L, LUA_GCGEN, 0, 0);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_pulsar_core);
    lua_setfield(L, -2, "pulsar.core");
    lua_pop(L, 1);
    if (pl_modules_install(L) != 0) {
        fprintf(stderr, "pulsar-lua: cannot set up the pulsar Lua library: out of memory\n");
        return -1;
    }
    return 0;
}

/* Calls host.lua's `fname` with the request that `push` pushes (if any);
 * returns its integer result, or 1 if it failed. */
static int call_host_lua(pl_host *h, const char *fname, pl_push_fn push,
                         void *ud) {
    lua_State *L = h->L;
    lua_getglobal(L, "require");
    lua_pushstring(L, "pulsar.host");
    if (pl_host_pcall(h, 1, 1, "loading pulsar.host") != LUA_OK) return 1;
    lua_getfield(L, -1, fname);
    lua_remove(L, -2);
    int nargs = 0;
    if (push) {
        push(L, ud);
        nargs = 1;
    }
    if (pl_host_pcall(h, nargs, 1, fname) != LUA_OK) return 1;
    int code = (int)luaL_optinteger(L, -1, 0);
    lua_pop(L, 1);
    return code;
}

void pl_host_track(pl_host *h, pl_resource *res, void (*close)(pl_resource *)) {
    res->close = close;
    res->next = h->resources.next;
    res->prev = &h->resources;
    h->resources.next->prev = res;
    h->resources.next = res;
}

void pl_host_untrack(pl_resource *res) {
    if (!res->next) return;
    res->prev->next = res->next;
    res->next->prev = res->prev;
    res->next = res->prev = NULL;
}

static void close_handle(uv_handle_t *handle, void *arg) {
    (void)arg;
    if (!uv_is_closing(handle)) uv_close(handle, NULL);
}

/* Closes every resource and handle still open (close callbacks free what
 * they own), so that the loop and the VM can be closed with nothing leaked. */
static void close_loop(pl_host *h) {
    while (h->resources.next != &h->resources)
        h->resources.next->close(h->resources.next);
    uv_walk(h->loop, close_handle, NULL);
    /* The first run may only clear a pending uv_stop; go on until every
     * close callback has run. */
    while (uv_run(h->loop, UV_RUN_DEFAULT) != 0) {
    }
    if (uv_loop_close(h->loop) != 0)
        pl_log(PL_LOG_WARNING, h->name, "the loop had handles left at exit");
}

static const pl_cli default_cli = {
    .cfg = {.workers = 1, .concurrency = "process", .timeout = 30,
            .exit_timeout = 3, .log_level = "info"},
};

int pl_host_init(pl_host *h, const pl_cli *cli, const char *name,
                 uv_loop_t *shared_loop) {
    memset(h, 0, sizeof *h);
    h->cli = cli ? cli : &default_cli;
    h->soon_ref = h->signal_ref = LUA_NOREF;
    h->resources.next = h->resources.prev = &h->resources;
    snprintf(h->name, sizeof h->name, "%s", name);
    h->loop = shared_loop ? shared_loop : &h->own_loop;
    /* On a shared loop this VM only ever runs inside its callbacks. */
    h->loop_depth = shared_loop ? 1 : 0;
    if (!shared_loop && uv_loop_init(h->loop) != 0) {
        fprintf(stderr, "pulsar-lua: cannot create an event loop\n");
        return -1;
    }
    if (uv_mutex_init(&h->interrupt_lock) != 0) {
        fprintf(stderr, "pulsar-lua: cannot create a mutex\n");
        if (!shared_loop) uv_loop_close(h->loop);
        return -1;
    }
    if (setup_vm(h) != 0) {
        if (shared_loop) pl_host_close_shared(h, NULL);
        else pl_host_close(h);
        return -1;
    }
    return 0;
}

int pl_host_start(pl_host *h, const char *entry, pl_push_fn push, void *ud) {
    return call_host_lua(h, entry, push, ud);
}

static void shared_handle_closed(uv_handle_t *handle) {
    pl_host *h = handle->data;
    if (--h->closing_handles == 0 && h->on_freed) h->on_freed(h);
}

void pl_host_close_shared(pl_host *h, void (*on_freed)(pl_host *h)) {
    while (h->resources.next != &h->resources)
        h->resources.next->close(h->resources.next);
    h->on_freed = on_freed;
    h->closing_handles = 1; /* held until every close below is started */
    if (h->soon_ref != LUA_NOREF) {
        h->closing_handles++;
        uv_close((uv_handle_t *)&h->soon, shared_handle_closed);
    }
    for (int i = 0; i < h->nsignals; i++) {
        h->signals[i].data = h;
        h->closing_handles++;
        uv_close((uv_handle_t *)&h->signals[i], shared_handle_closed);
    }
    if (h->L) lua_close(h->L);
    h->L = NULL;
    pl_vmalloc_destroy(&h->vm_alloc);
    uv_mutex_destroy(&h->interrupt_lock);
    if (--h->closing_handles == 0 && on_freed) on_freed(h);
}

void pl_host_close(pl_host *h) {
    close_loop(h);
    if (h->L) lua_close(h->L);
    h->L = NULL;
    pl_vmalloc_destroy(&h->vm_alloc);
    uv_mutex_destroy(&h->interrupt_lock);
}

int pl_host_run(pl_host *h, const char *entry, pl_push_fn push, void *ud) {
    int code = call_host_lua(h, entry, push, ud);
    if (code != 0 || h->exit_requested) return h->exit_requested ? h->exit_code : code;
    h->loop_depth++;
    uv_run(h->loop, UV_RUN_DEFAULT);
    h->loop_depth--;
    if (h->exit_requested) return h->exit_code;
    return call_host_lua(h, "loop_ended", NULL, NULL);
}

typedef struct arbiter_args {
    const pl_cli *cli;
    int argc;
    char **argv;
} arbiter_args;

static void push_arbiter_request(lua_State *L, void *ud) {
    arbiter_args *a = ud;
    push_run_request(L, a->cli, a->argc, a->argv);
}

int pl_host_main(const pl_cli *cli, int argc, char **argv) {
    pl_host host;
    pl_log_set_level(pl_log_level_from_name(cli->cfg.log_level));
    const char *name = cli->cfg.attach ? "console" : "arbiter";
    if (pl_host_init(&host, cli, name, NULL) != 0) return 1;
    create_arg_table(host.L, argc, argv, cli->script);
    if (cli->warnings) lua_warning(host.L, "@on", 0);
    char err[256];
    if (pl_signal_watch_start(&host, err, sizeof err) != 0)
        pl_log(PL_LOG_WARNING, name, "%s: a busy script cannot be interrupted", err);
    arbiter_args args = {cli, argc, argv};
    int code = pl_host_run(&host, "main", push_arbiter_request, &args);
    pl_signal_watch_stop(&host);
    pl_host_close(&host);
    fflush(stdout);
    return code;
}
