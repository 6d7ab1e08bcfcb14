/* spawn.c: process and thread actors (see spawn.h).
 *
 * Ownership: a Process or Thread record is malloc'd, owned by the arbiter's
 * loop (a tracked pl_resource), and freed once its exit has been reported to
 * Lua; the Lua userdata only points at it and is cleared at that moment.
 *
 * A thread actor cannot be killed as a process can; thread:interrupt stops
 * the Lua code it is stuck in instead (DESIGN.md: "A thread actor stuck in a
 * Lua loop is interrupted through a count hook on its VM"). */
#include "spawn.h"

#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include <lauxlib.h>

#include "conn.h"
#include "host.h"
#include "log.h"

#define PROCESS_METATABLE "pulsar.core.Process"
#define THREAD_METATABLE "pulsar.core.Thread"

/* ---- the actor side ---------------------------------------------------- */

typedef struct actor_request {
    const char *kind;
    const char *aid;
    const char *address; /* process actors connect here */
    pl_conn *conn;       /* thread actors are handed their channel end */
} actor_request;

static void push_actor_request(lua_State *L, void *ud) {
    actor_request *r = ud;
    lua_createtable(L, 0, 4);
    lua_pushstring(L, r->kind);
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, r->aid);
    lua_setfield(L, -2, "aid");
    if (r->address) {
        lua_pushstring(L, r->address);
        lua_setfield(L, -2, "address");
    }
    if (r->conn) {
        pl_lconn_push(L, r->conn);
        lua_setfield(L, -2, "conn");
    }
}

int pl_process_actor_main(const char *address, const char *aid) {
    /* No orphans: if the arbiter dies outright, so do we. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    pl_host host;
    if (pl_host_init(&host, NULL, aid, NULL) != 0) return 1;
    actor_request req = {"process", aid, address, NULL};
    int code = pl_host_run(&host, "actor_main", push_actor_request, &req);
    pl_host_close(&host);
    fflush(stdout);
    return code;
}

/* ---- exit reporting, shared by processes and threads ------------------- */

/* What the arbiter keeps of a child: where to report its exit. */
typedef struct child {
    pl_host *host;
    pl_resource res;
    int on_exit_ref;
    struct child **owner; /* the Lua userdata's slot */
} child;

static void child_forget_lua(child *c) {
    if (c->owner) *c->owner = NULL;
    c->owner = NULL;
    if (c->on_exit_ref != LUA_NOREF)
        luaL_unref(c->host->L, LUA_REGISTRYINDEX, c->on_exit_ref);
    c->on_exit_ref = LUA_NOREF;
}

/* Calls on_exit(a, b) once; the child is no longer reachable from Lua. */
static void child_report_exit(child *c, lua_Integer a, lua_Integer b, int nargs) {
    int ref = c->on_exit_ref;
    c->on_exit_ref = LUA_NOREF;
    if (c->owner) *c->owner = NULL;
    c->owner = NULL;
    if (ref == LUA_NOREF) return;
    lua_State *L = c->host->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    lua_pushinteger(L, a);
    if (nargs > 1) lua_pushinteger(L, b);
    pl_host_pcall(c->host, nargs, 0, "actor exit callback");
}

static child **new_child_userdata(lua_State *L, const char *metatable) {
    child **slot = lua_newuserdatauv(L, sizeof *slot, 0);
    *slot = NULL;
    luaL_setmetatable(L, metatable);
    return slot;
}

static void child_init(child *c, lua_State *L, int on_exit_idx, child **slot) {
    c->host = pl_host_of(L);
    lua_pushvalue(L, on_exit_idx);
    c->on_exit_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    c->owner = slot;
    *slot = c;
}

static int child_gc(lua_State *L) {
    child **slot = lua_touserdata(L, 1);
    if (*slot) (*slot)->owner = NULL;
    return 0;
}

/* ---- process actors ----------------------------------------------------- */

typedef struct process {
    child base;
    uv_process_t handle;
} process;

static void process_closed(uv_handle_t *handle) { free(handle->data); }

static void process_exited(uv_process_t *handle, int64_t status, int signal) {
    process *p = handle->data;
    pl_host_untrack(&p->base.res);
    child_report_exit(&p->base, (lua_Integer)status, signal, 2);
    uv_close((uv_handle_t *)handle, process_closed);
}

/* At the arbiter's exit a child still running is told to stop; its exit is
 * no longer waited for (it stops itself when the mailbox closes). */
static void process_shutdown(pl_resource *res) {
    process *p = (process *)((char *)res - offsetof(process, base.res));
    pl_host_untrack(res);
    uv_process_kill(&p->handle, SIGTERM);
    child_forget_lua(&p->base);
    uv_close((uv_handle_t *)&p->handle, process_closed);
}

/* Descriptors a process actor inherits beyond stdio (listening sockets of a
 * SocketServer): the child finds them at 3, 4, ... in the order given. */
#define MAX_INHERITED_FDS 16

/* Reads the optional list of descriptors at arg into stdio[3...]; returns
 * how many stdio entries there are in all. */
static int inherited_fds(lua_State *L, int arg, uv_stdio_container_t *stdio) {
    if (lua_isnoneornil(L, arg)) return 3;
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_Integer n = luaL_len(L, arg);
    luaL_argcheck(L, n <= MAX_INHERITED_FDS, arg, "too many descriptors to inherit");
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, arg, i);
        lua_Integer fd = lua_tointeger(L, -1);
        luaL_argcheck(L, lua_isinteger(L, -1) && fd >= 0 && fd < 1 << 30, arg,
                      "descriptors must be whole numbers from 0");
        lua_pop(L, 1);
        stdio[2 + i].flags = UV_INHERIT_FD;
        stdio[2 + i].data.fd = (int)fd;
    }
    return 3 + (int)n;
}

/* core.spawn_process(aid, address, on_exit [, fds]) -> Process */
static int core_spawn_process(lua_State *L) {
    const char *aid = luaL_checkstring(L, 1);
    const char *address = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    uv_stdio_container_t stdio[3 + MAX_INHERITED_FDS] = {
        {.flags = UV_IGNORE},
        {.flags = UV_INHERIT_FD, .data.fd = 1},
        {.flags = UV_INHERIT_FD, .data.fd = 2},
    };
    int nstdio = inherited_fds(L, 4, stdio);
    char exe[4096];
    size_t n = sizeof exe;
    if (uv_exepath(exe, &n) != 0) return luaL_error(L, "cannot find this executable");
    child **slot = new_child_userdata(L, PROCESS_METATABLE);
    process *p = calloc(1, sizeof *p);
    if (!p) return luaL_error(L, "out of memory spawning a process");
    char *args[] = {exe, "--pulsar-actor", (char *)address, (char *)aid, NULL};
    uv_process_options_t opts = {
        .exit_cb = process_exited, .file = exe, .args = args,
        .stdio_count = nstdio, .stdio = stdio,
    };
    p->handle.data = p;
    int rc = uv_spawn(pl_host_of(L)->loop, &p->handle, &opts);
    if (rc != 0) {
        uv_close((uv_handle_t *)&p->handle, process_closed);
        return luaL_error(L, "cannot start a process: %s", uv_strerror(rc));
    }
    child_init(&p->base, L, 3, slot);
    pl_host_track(p->base.host, &p->base.res, process_shutdown);
    return 1;
}

static int process_index(lua_State *L) {
    child **slot = luaL_checkudata(L, 1, PROCESS_METATABLE);
    const char *key = luaL_checkstring(L, 2);
    process *p = (process *)*slot;
    if (strcmp(key, "pid") == 0) {
        if (p) lua_pushinteger(L, p->handle.pid);
        else lua_pushnil(L);
        return 1;
    }
    luaL_getmetatable(L, PROCESS_METATABLE);
    lua_getfield(L, -1, key);
    return 1;
}

/* process:kill([signal]) -> true | nil, err (signal defaults to SIGTERM) */
static int process_kill(lua_State *L) {
    child **slot = luaL_checkudata(L, 1, PROCESS_METATABLE);
    int sig = (int)luaL_optinteger(L, 2, SIGTERM);
    if (!*slot) {
        lua_pushnil(L);
        lua_pushliteral(L, "the process has exited");
        return 2;
    }
    int rc = uv_process_kill(&((process *)*slot)->handle, sig);
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushstring(L, uv_strerror(rc));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- thread actors ------------------------------------------------------ */

typedef struct thread_actor {
    child base;
    uv_thread_t thread;
    uv_async_t ended; /* the thread's last act: wakes the arbiter to join */
    pl_channel *channel;
    char aid[64];
    int status; /* the actor's exit status, written by the thread */
    /* The actor's host while its VM is open, under vm_lock (below). */
    uv_mutex_t vm_lock;
    pl_host *vm;
} thread_actor;

/* ---- interrupting a thread actor --------------------------------------
 *
 * thread:interrupt (arbiter's thread) interrupts the Lua code the actor runs
 * now, through the host's one mechanism (interrupt.c): it raises
 * "interrupted: ..." there unless that code returns to the actor's loop
 * first. t->vm_lock guards t->vm: the actor's thread sets it once its VM
 * exists and clears it before closing it; the arbiter's thread holds the
 * lock for a whole interrupt, so the VM cannot be closed under it. */

/* Makes the actor's VM reachable to thread:interrupt (vm != NULL) or no
 * longer (NULL, before it is closed: an interrupt is moot by then). */
static void publish_vm(thread_actor *t, pl_host *vm) {
    uv_mutex_lock(&t->vm_lock);
    t->vm = vm;
    uv_mutex_unlock(&t->vm_lock);
}

/* thread:interrupt() -> true if the actor's Lua code will be interrupted
 * unless it returns to its loop first (nothing happens to an actor idle in
 * its loop), false if it has no VM (not yet, or no longer). Called on the
 * arbiter's thread. */
static int thread_interrupt(lua_State *L) {
    child **slot = luaL_checkudata(L, 1, THREAD_METATABLE);
    thread_actor *t = (thread_actor *)*slot;
    int reachable = 0;
    if (t) {
        uv_mutex_lock(&t->vm_lock);
        if (t->vm) {
            pl_host_interrupt(t->vm, 0, 0, "interrupted: the actor is being stopped");
            reachable = 1;
        }
        uv_mutex_unlock(&t->vm_lock);
    }
    lua_pushboolean(L, reachable);
    return 1;
}

/* ---- the thread's life -------------------------------------------------- */

static void thread_body(void *arg) {
    thread_actor *t = arg;
    pl_host host;
    int code = 1;
    if (pl_host_init(&host, NULL, t->aid, NULL) == 0) {
        publish_vm(t, &host);
        pl_conn *conn = pl_channel_attach(&host, t->channel, 1);
        /* The creator's reference was handed to us: both ends hold their
         * own now. */
        pl_channel_release(t->channel);
        if (conn) {
            actor_request req = {"thread", t->aid, NULL, conn};
            code = pl_host_run(&host, "actor_main", push_actor_request, &req);
        }
        publish_vm(t, NULL);
        pl_host_close(&host);
    }
    t->status = code;
    uv_async_send(&t->ended);
}

static void thread_freed(uv_handle_t *handle) {
    thread_actor *t = handle->data;
    uv_mutex_destroy(&t->vm_lock);
    free(t);
}

static void thread_ended(uv_async_t *async) {
    thread_actor *t = async->data;
    uv_thread_join(&t->thread);
    pl_host_untrack(&t->base.res);
    child_report_exit(&t->base, t->status, 0, 1);
    uv_close((uv_handle_t *)async, thread_freed);
}

/* At the arbiter's exit: the channel is closed by then (its conn is a
 * resource too), so the thread's actor stops; wait for it. */
static void thread_shutdown(pl_resource *res) {
    thread_actor *t = (thread_actor *)((char *)res - offsetof(thread_actor, base.res));
    pl_host_untrack(res);
    child_forget_lua(&t->base);
    uv_thread_join(&t->thread);
    uv_close((uv_handle_t *)&t->ended, thread_freed);
}

/* core.spawn_thread(aid, on_exit) -> conn, Thread */
static int core_spawn_thread(lua_State *L) {
    const char *aid = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    pl_host *h = pl_host_of(L);
    child **slot = new_child_userdata(L, THREAD_METATABLE);
    thread_actor *t = calloc(1, sizeof *t);
    pl_channel *ch = t ? pl_channel_new() : NULL;
    if (!ch) {
        free(t);
        return luaL_error(L, "out of memory spawning a thread");
    }
    if (uv_mutex_init(&t->vm_lock) != 0) {
        pl_channel_release(ch);
        free(t);
        return luaL_error(L, "cannot create a mutex for a thread");
    }
    snprintf(t->aid, sizeof t->aid, "%s", aid);
    t->channel = ch;
    uv_async_init(h->loop, &t->ended, thread_ended);
    t->ended.data = t;
    /* Tracked before its channel end: at shutdown, resources close newest
     * first, so the channel closes (and the actor stops) before the join. */
    child_init(&t->base, L, 2, slot);
    pl_host_track(h, &t->base.res, thread_shutdown);
    pl_conn *conn = pl_channel_attach(h, ch, 0);
    int rc = conn ? uv_thread_create(&t->thread, thread_body, t) : UV_ENOMEM;
    if (rc != 0) {
        if (conn) pl_conn_close(conn, "thread not started");
        pl_channel_release(ch);
        pl_host_untrack(&t->base.res);
        child_forget_lua(&t->base);
        uv_close((uv_handle_t *)&t->ended, thread_freed);
        return luaL_error(L, "cannot start a thread: %s", uv_strerror(rc));
    }
    /* The thread releases the creator's reference once it has attached. */
    pl_lconn_push(L, conn);
    lua_insert(L, -2);
    return 2;
}

/* ---- monitors ------------------------------------------------------------ */

/* A monitor is an actor with a VM of its own on the arbiter's loop and
 * thread (DESIGN.md): no thread, no process. It talks to the arbiter through
 * a channel whose two ends are on the same loop, so the code above cannot
 * tell it from a thread actor. Its exit cannot stop the shared loop; it
 * schedules its own teardown instead, outside its VM's calls. */
#define MONITOR_METATABLE "pulsar.core.Monitor"

typedef struct monitor_actor {
    child base;
    pl_host vm;          /* the monitor's VM, on the arbiter's loop */
    uv_timer_t teardown; /* closes the VM from the loop, not from inside it */
    int vm_open;
    int pending_frees;   /* the timer's close and the VM's handles */
} monitor_actor;

static monitor_actor *monitor_of_vm(pl_host *vm) {
    return (monitor_actor *)((char *)vm - offsetof(monitor_actor, vm));
}

static void monitor_release(monitor_actor *m) {
    if (--m->pending_frees == 0) free(m);
}

static void monitor_vm_freed(pl_host *vm) { monitor_release(monitor_of_vm(vm)); }

static void monitor_timer_closed(uv_handle_t *handle) { monitor_release(handle->data); }

/* Closes the VM and the timer; `report` says whether Lua hears of it. */
static void monitor_close(monitor_actor *m, int report) {
    if (!m->vm_open) return;
    m->vm_open = 0;
    int status = m->vm.exit_requested ? m->vm.exit_code : 1;
    pl_host_untrack(&m->base.res);
    m->pending_frees = 2;
    pl_host_close_shared(&m->vm, monitor_vm_freed);
    uv_close((uv_handle_t *)&m->teardown, monitor_timer_closed);
    if (report) child_report_exit(&m->base, status, 0, 1);
    else child_forget_lua(&m->base);
}

static void monitor_teardown(uv_timer_t *timer) { monitor_close(timer->data, 1); }

static void monitor_exit_requested(pl_host *vm) {
    monitor_actor *m = monitor_of_vm(vm);
    if (m->vm_open) uv_timer_start(&m->teardown, monitor_teardown, 0, 0);
}

static void monitor_shutdown(pl_resource *res) {
    monitor_close((monitor_actor *)((char *)res - offsetof(monitor_actor, base.res)), 0);
}

/* core.spawn_monitor(aid, on_exit) -> conn, Monitor */
static int core_spawn_monitor(lua_State *L) {
    const char *aid = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    pl_host *h = pl_host_of(L);
    child **slot = new_child_userdata(L, MONITOR_METATABLE);
    monitor_actor *m = calloc(1, sizeof *m);
    pl_channel *ch = m ? pl_channel_new() : NULL;
    if (!ch) {
        free(m);
        return luaL_error(L, "out of memory spawning a monitor");
    }
    if (pl_host_init(&m->vm, NULL, aid, h->loop) != 0) {
        pl_channel_release(ch);
        free(m);
        return luaL_error(L, "cannot make the monitor's VM");
    }
    m->vm_open = 1;
    m->vm.on_exit_request = monitor_exit_requested;
    uv_timer_init(h->loop, &m->teardown);
    m->teardown.data = m;
    child_init(&m->base, L, 2, slot);
    pl_host_track(h, &m->base.res, monitor_shutdown);
    pl_conn *mine = pl_channel_attach(h, ch, 0);
    pl_conn *theirs = pl_channel_attach(&m->vm, ch, 1);
    pl_channel_release(ch);
    if (!mine || !theirs) {
        if (mine) pl_conn_close(mine, "monitor not started");
        monitor_close(m, 0);
        return luaL_error(L, "out of memory spawning a monitor");
    }
    actor_request req = {"monitor", aid, NULL, theirs};
    if (pl_host_start(&m->vm, "actor_main", push_actor_request, &req) != 0)
        pl_host_request_exit(&m->vm, 1);
    pl_lconn_push(L, mine);
    lua_insert(L, -2);
    return 2;
}

static const luaL_Reg thread_methods[] = {
    {"interrupt", thread_interrupt},
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
