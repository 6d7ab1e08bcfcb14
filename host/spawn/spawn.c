/* spawn.c: starting and ending process, thread and monitor actors (see
 * spawn.h); their Lua binding is lspawn.c.
 *
 * The arbiter's side: a child record (process, thread or monitor) is
 * malloc'd, owned by the arbiter's loop (a tracked pl_resource), and freed
 * once its exit has been reported to Lua through its exit callback; the Lua
 * userdata only points at it and is cleared at that moment. At the
 * arbiter's exit a process is sent SIGTERM and left to end; a thread is
 * waited for, ended hard, then abandoned if it is blocked in a C call; a
 * monitor's VM is closed.
 *
 * The actor's side: the body of a process actor, with its watchdog that
 * ends it soon after its arbiter dies (no orphans), and the body of a
 * thread actor, which can be interrupted (a count hook on its VM, for Lua
 * code stuck in a loop) and terminated (its loop stopped from its own
 * thread, for an actor that is parked in its loop and will not stop). */
#include "spawn.h"

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <lauxlib.h>

#include "conn.h"
#include "host.h"
#include "launch.h"
#include "log.h"

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

/* ---- no orphans ----------------------------------------------------------
 *
 * A process actor must not outlive its arbiter, whatever it is doing. The
 * kernel sends it SIGTERM when the arbiter dies (PR_SET_PDEATHSIG); its loop
 * takes that as a graceful stop. A loop that never runs (Lua code in an
 * endless loop, a C call that blocks: os.execute) never hears it, so a
 * watchdog thread looks at the parent's pid every WATCH_PERIOD: once the
 * arbiter is gone, the actor has ORPHAN_GRACE seconds to stop, then the
 * process ends with _exit(1), wherever its main thread is. Its own children
 * (the shell and command of an os.execute) are not ended: they are the
 * user's processes, and are re-parented as any orphan is. */
#define WATCH_PERIOD_NS 250000000ull
#define ORPHAN_GRACE 3.0 /* the default exit_timeout */

typedef struct orphan_watch {
    uv_thread_t thread;
    uv_mutex_t lock;
    uv_cond_t wake;
    int done; /* under lock: the actor ended on its own */
    pid_t arbiter;
    const char *aid;
} orphan_watch;

/* Waits up to ns, or until done; whether done. Called with the lock held. */
static int watch_sleep(orphan_watch *w, uint64_t ns) {
    uint64_t deadline = uv_hrtime() + ns;
    while (!w->done) {
        uint64_t now = uv_hrtime();
        if (now >= deadline) break;
        uv_cond_timedwait(&w->wake, &w->lock, deadline - now);
    }
    return w->done;
}

static void watch_arbiter(void *arg) {
    orphan_watch *w = arg;
    uv_mutex_lock(&w->lock);
    while (!watch_sleep(w, WATCH_PERIOD_NS)) {
        if (getppid() == w->arbiter) continue;
        pl_log(PL_LOG_WARNING, w->aid, "the arbiter (pid %ld) is gone: stopping",
               (long)w->arbiter);
        if (watch_sleep(w, (uint64_t)(ORPHAN_GRACE * 1e9))) break;
        pl_log(PL_LOG_ERROR, w->aid, "still running %g s after the arbiter died: exiting",
               ORPHAN_GRACE);
        _exit(1);
    }
    uv_mutex_unlock(&w->lock);
}

/* 0, or -1 if the watchdog could not start (the actor runs without). */
static int start_orphan_watch(orphan_watch *w, pid_t arbiter, const char *aid) {
    w->done = 0;
    w->arbiter = arbiter;
    w->aid = aid;
    if (uv_mutex_init(&w->lock) != 0) return -1;
    if (uv_cond_init(&w->wake) != 0) {
        uv_mutex_destroy(&w->lock);
        return -1;
    }
    if (uv_thread_create(&w->thread, watch_arbiter, w) != 0) {
        uv_cond_destroy(&w->wake);
        uv_mutex_destroy(&w->lock);
        return -1;
    }
    return 0;
}

static void stop_orphan_watch(orphan_watch *w) {
    uv_mutex_lock(&w->lock);
    w->done = 1;
    uv_cond_signal(&w->wake);
    uv_mutex_unlock(&w->lock);
    uv_thread_join(&w->thread);
    uv_cond_destroy(&w->wake);
    uv_mutex_destroy(&w->lock);
}

int pl_process_actor_main(const char *address, const char *aid) {
    /* The arbiter started us: it is our parent until it dies. */
    pid_t arbiter = getppid();
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    orphan_watch watch;
    int watching = start_orphan_watch(&watch, arbiter, aid) == 0;
    if (!watching)
        pl_log(PL_LOG_WARNING, aid, "cannot watch the arbiter: this actor may outlive it");
    int code = 1;
    pl_host host;
    if (pl_host_init(&host, NULL, aid, NULL) == 0) {
        actor_request req = {"process", aid, address, NULL};
        code = pl_host_run(&host, "actor_main", push_actor_request, &req);
        pl_host_close(&host);
    }
    fflush(stdout);
    if (watching) stop_orphan_watch(&watch);
    return code;
}

/* ---- exit reporting, shared by processes and threads ------------------- */

/* What the arbiter keeps of a child: where to report its exit. */
struct pl_child {
    pl_host *host;
    pl_resource res;
    int on_exit_ref;
    struct pl_child **owner; /* the Lua userdata's slot */
};
typedef pl_child child;

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

static void child_init(child *c, pl_host *h, int on_exit_ref, child **slot) {
    c->host = h;
    c->on_exit_ref = on_exit_ref;
    c->owner = slot;
    *slot = c;
}

/* A spawn that failed: the exit callback's ref was handed over all the
 * same, and is released here. Returns NULL for the caller to return. */
static pl_child *spawn_failed(pl_host *h, int on_exit_ref, char *err, size_t errlen,
                              const char *fmt, const char *detail) {
    if (on_exit_ref != LUA_NOREF) luaL_unref(h->L, LUA_REGISTRYINDEX, on_exit_ref);
    snprintf(err, errlen, fmt, detail);
    return NULL;
}

void pl_child_disown(pl_child *c) { c->owner = NULL; }

/* ---- process actors ----------------------------------------------------- */

/* The child is started with posix_spawn (launch.h): a fork would copy the
 * arbiter's page tables, thread actors and all. Its end is learnt as
 * uv_spawn learnt it: a SIGCHLD watch per child, started before the child
 * so that no end is missed, reaping only its own pid. (A pidfd would spare
 * the other children's checks, but valgrind and older kernels lack it.) */
typedef struct process {
    child base;
    uv_signal_t exit_watch;
    pid_t pid;
} process;

static void process_closed(uv_handle_t *handle) { free(handle->data); }

static void process_exited(uv_signal_t *watch, int signum) {
    (void)signum;
    process *p = watch->data;
    int code = 0, signal = 0;
    int reaped = pl_reap(p->pid, &code, &signal);
    if (reaped == 0) return; /* another child ended */
    /* Reaped by someone else (a C module's waitpid(-1)): the status is lost. */
    if (reaped < 0) code = 1;
    uv_signal_stop(watch);
    pl_host_untrack(&p->base.res);
    child_report_exit(&p->base, code, signal, 2);
    uv_close((uv_handle_t *)watch, process_closed);
}

/* At the arbiter's exit a child still running is told to stop; its exit is
 * no longer waited for (it stops itself when the mailbox closes). */
static void process_shutdown(pl_resource *res) {
    process *p = (process *)((char *)res - offsetof(process, base.res));
    pl_host_untrack(res);
    kill(p->pid, SIGTERM);
    child_forget_lua(&p->base);
    uv_close((uv_handle_t *)&p->exit_watch, process_closed);
}

pl_child *pl_spawn_process(pl_host *h, const char *aid, const char *address,
                           const int *fds, int nfds, int on_exit_ref,
                           pl_child **owner, char *err, size_t errlen) {
    if (nfds < 0 || nfds > PL_MAX_INHERITED_FDS)
        return spawn_failed(h, on_exit_ref, err, errlen, "%s", "too many descriptors to inherit");
    char exe[4096];
    size_t n = sizeof exe;
    if (uv_exepath(exe, &n) != 0)
        return spawn_failed(h, on_exit_ref, err, errlen, "%s", "cannot find this executable");
    process *p = calloc(1, sizeof *p);
    if (!p) return spawn_failed(h, on_exit_ref, err, errlen, "%s", "out of memory spawning a process");
    char *args[] = {exe, "--pulsar-actor", (char *)address, (char *)aid, NULL};
    int rc = uv_signal_init(h->loop, &p->exit_watch);
    p->exit_watch.data = p;
    if (rc != 0) {
        free(p);
        return spawn_failed(h, on_exit_ref, err, errlen, "cannot watch a new process: %s",
                            uv_strerror(rc));
    }
    rc = uv_signal_start(&p->exit_watch, process_exited, SIGCHLD);
    if (rc == 0) rc = pl_launch(exe, args, fds, nfds, &p->pid);
    if (rc != 0) {
        uv_close((uv_handle_t *)&p->exit_watch, process_closed);
        return spawn_failed(h, on_exit_ref, err, errlen, "cannot start a process: %s",
                            uv_strerror(rc));
    }
    child_init(&p->base, h, on_exit_ref, owner);
    pl_host_track(h, &p->base.res, process_shutdown);
    return &p->base;
}

int pl_process_pid(const pl_child *c) { return ((const process *)c)->pid; }

int pl_process_kill(pl_child *c, int sig) {
    return kill(((process *)c)->pid, sig) == 0 ? 0 : -errno;
}

/* ---- thread actors ------------------------------------------------------ */

typedef struct thread_actor {
    child base;
    uv_thread_t thread;
    uv_async_t ended; /* the thread's last act: wakes the arbiter to join */
    pl_channel *channel;
    char aid[64];
    int status; /* the actor's exit status, written by the thread */
    /* Interrupts and hard ends (below); the fields from vm to abandoned
     * are under vm_lock. */
    uv_mutex_t vm_lock;
    pl_host *vm;     /* the actor's host while its VM is open */
    int terminating; /* thread:terminate was called: end, whatever */
    int finished;    /* the thread is past its VM's close */
    int abandoned;   /* the arbiter exits without joining it */
    uv_cond_t finished_cond;
    uv_async_t end_now; /* in the actor's loop: stops it (terminate) */
} thread_actor;

/* ---- interrupting and terminating a thread actor ------------------------
 *
 * Both go through the host's one mechanism (interrupt.c), on the arbiter's
 * thread:
 *   - thread:interrupt raises "interrupted: ..." once in the Lua code the
 *     actor runs now, unless that code returns to the actor's loop first
 *     (an actor idle in its loop is not touched);
 *   - thread:terminate makes every Lua state of the VM raise "terminated:
 *     ..." from then on, whatever pcall it is under, and wakes the actor's
 *     loop (end_now) to stop it: that ends an actor busy in Lua and one
 *     parked in its loop alike. Only a thread blocked in a C call is out of
 *     reach (thread_shutdown abandons it).
 * t->vm_lock guards t->vm: the actor's thread sets it once its VM and
 * end_now exist and clears it before closing them; the arbiter's thread
 * holds the lock for a whole interrupt or terminate, so neither can be
 * closed under it. */

/* thread:terminate reached the actor's loop: it ends now, with status 1.
 * The loop stops, so no Lua callback runs any more; the thread then closes
 * its VM as after any exit (the hooks stay set, so Lua code run by that
 * close, finalizers, is cut short too). */
static void end_now(uv_async_t *async) {
    thread_actor *t = async->data;
    pl_log(PL_LOG_WARNING, t->aid, "terminated: it did not stop within exit_timeout");
    pl_host_request_exit(t->vm, 1);
}

/* Makes the actor's VM reachable to thread:interrupt (vm != NULL) or no
 * longer (NULL, before it is closed: an interrupt is moot by then). */
static void publish_vm(thread_actor *t, pl_host *vm) {
    uv_mutex_lock(&t->vm_lock);
    t->vm = vm;
    uv_mutex_unlock(&t->vm_lock);
}

/* On the actor's thread, once its host is up. Without end_now the actor
 * cannot be reached (thread:interrupt and :terminate say false); it runs
 * all the same. The handle does not keep the loop alive; pl_host_close
 * closes it. */
static void open_to_interrupts(thread_actor *t, pl_host *vm) {
    int rc = uv_async_init(vm->loop, &t->end_now, end_now);
    if (rc != 0) {
        pl_log(PL_LOG_WARNING, t->aid, "cannot be interrupted: %s", uv_strerror(rc));
        return;
    }
    t->end_now.data = t;
    uv_unref((uv_handle_t *)&t->end_now);
    publish_vm(t, vm);
}

/* Called on the arbiter's thread. */
int pl_thread_interrupt(pl_child *c) {
    thread_actor *t = (thread_actor *)c;
    uv_mutex_lock(&t->vm_lock);
    int reachable = t->vm != NULL;
    if (reachable) pl_host_interrupt(t->vm, 0, 0, "interrupted: the actor is being stopped");
    uv_mutex_unlock(&t->vm_lock);
    return reachable;
}

/* Ends the actor hard (arbiter's thread). Whether it had a VM to end. */
static int terminate_thread(thread_actor *t) {
    uv_mutex_lock(&t->vm_lock);
    int had_vm = t->vm != NULL;
    if (had_vm && !t->terminating) {
        t->terminating = 1;
        pl_host_terminate(t->vm, "terminated: the actor did not stop within exit_timeout");
        uv_async_send(&t->end_now);
    }
    uv_mutex_unlock(&t->vm_lock);
    return had_vm;
}

int pl_thread_terminate(pl_child *c) { return terminate_thread((thread_actor *)c); }

/* ---- the thread's life -------------------------------------------------- */

static void thread_body(void *arg) {
    thread_actor *t = arg;
    pl_host host;
    int code = 1;
    if (pl_host_init(&host, NULL, t->aid, NULL) == 0) {
        pl_host_set_memory_limit(&host, PL_THREAD_MEMORY_LIMIT);
        open_to_interrupts(t, &host);
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
    /* Under the lock: an arbiter that abandoned us has closed `ended`. */
    uv_mutex_lock(&t->vm_lock);
    t->status = code;
    t->finished = 1;
    uv_cond_signal(&t->finished_cond);
    if (!t->abandoned) uv_async_send(&t->ended);
    uv_mutex_unlock(&t->vm_lock);
}

static void thread_freed(uv_handle_t *handle) {
    thread_actor *t = handle->data;
    uv_cond_destroy(&t->finished_cond);
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

/* While the arbiter's exit waits for a thread its loop does not run, so a
 * stop signal would go unheard: the default action ends the process. */
static void stop_signals_end_process(void) {
    static const int stop_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
    for (size_t i = 0; i < sizeof stop_signals / sizeof *stop_signals; i++)
        signal(stop_signals[i], SIG_DFL);
}

/* Waits up to `seconds` for the thread to be past its VM's close; whether
 * it is. Called with t->vm_lock held. */
static int wait_finished(thread_actor *t, double seconds) {
    uint64_t deadline = uv_hrtime() + (uint64_t)(seconds * 1e9);
    while (!t->finished) {
        uint64_t now = uv_hrtime();
        if (now >= deadline) break;
        uv_cond_timedwait(&t->finished_cond, &t->vm_lock, deadline - now);
    }
    return t->finished;
}

/* How long the arbiter's exit waits for a thread ended hard. */
static double join_bound(const thread_actor *t) {
    double bound = t->base.host->cli->cfg.exit_timeout;
    return bound >= 1 ? bound : 1;
}

/* At the arbiter's exit: the channel is closed by then (its conn is a
 * resource too), so the thread's actor stops. One that does not within
 * exit_timeout is ended hard; one that is still there after another
 * exit_timeout is blocked in a C call and is abandoned: the process exits
 * without it (its record is left to it: the thread may still read it). */
static void thread_shutdown(pl_resource *res) {
    thread_actor *t = (thread_actor *)((char *)res - offsetof(thread_actor, base.res));
    pl_host_untrack(res);
    child_forget_lua(&t->base);
    double bound = join_bound(t);
    stop_signals_end_process();
    uv_mutex_lock(&t->vm_lock);
    int finished = t->terminating ? t->finished : wait_finished(t, bound);
    uv_mutex_unlock(&t->vm_lock);
    if (!finished) {
        if (!t->terminating)
            pl_log(PL_LOG_WARNING, t->aid, "did not stop within %g s: terminating it", bound);
        terminate_thread(t);
        uv_mutex_lock(&t->vm_lock);
        finished = wait_finished(t, bound);
        t->abandoned = !finished;
        uv_mutex_unlock(&t->vm_lock);
    }
    if (!finished) {
        pl_log(PL_LOG_ERROR, t->aid, "thread actor still running %g s after it was "
               "terminated (blocked in a C call?): exiting without it", bound);
        uv_close((uv_handle_t *)&t->ended, NULL);
        return;
    }
    uv_thread_join(&t->thread);
    uv_close((uv_handle_t *)&t->ended, thread_freed);
}

pl_child *pl_spawn_thread(pl_host *h, const char *aid, int on_exit_ref,
                          pl_child **owner, pl_conn **conn, char *err, size_t errlen) {
    thread_actor *t = calloc(1, sizeof *t);
    pl_channel *ch = t ? pl_channel_new() : NULL;
    if (!ch) {
        free(t);
        return spawn_failed(h, on_exit_ref, err, errlen, "%s", "out of memory spawning a thread");
    }
    if (uv_mutex_init(&t->vm_lock) != 0) {
        pl_channel_release(ch);
        free(t);
        return spawn_failed(h, on_exit_ref, err, errlen, "%s", "cannot create a mutex for a thread");
    }
    if (uv_cond_init(&t->finished_cond) != 0) {
        uv_mutex_destroy(&t->vm_lock);
        pl_channel_release(ch);
        free(t);
        return spawn_failed(h, on_exit_ref, err, errlen, "%s",
                            "cannot create a condition variable for a thread");
    }
    snprintf(t->aid, sizeof t->aid, "%s", aid);
    t->channel = ch;
    uv_async_init(h->loop, &t->ended, thread_ended);
    t->ended.data = t;
    /* Tracked before its channel end: at shutdown, resources close newest
     * first, so the channel closes (and the actor stops) before the join. */
    child_init(&t->base, h, on_exit_ref, owner);
    pl_host_track(h, &t->base.res, thread_shutdown);
    *conn = pl_channel_attach(h, ch, 0);
    int rc = *conn ? uv_thread_create(&t->thread, thread_body, t) : UV_ENOMEM;
    if (rc != 0) {
        if (*conn) pl_conn_close(*conn, "thread not started");
        pl_channel_release(ch);
        pl_host_untrack(&t->base.res);
        child_forget_lua(&t->base);
        uv_close((uv_handle_t *)&t->ended, thread_freed);
        snprintf(err, errlen, "cannot start a thread: %s", uv_strerror(rc));
        return NULL;
    }
    /* The thread releases the creator's reference once it has attached. */
    return &t->base;
}

/* ---- monitors ------------------------------------------------------------ */

/* A monitor is an actor with a VM of its own on the arbiter's loop and
 * thread (docs/DESIGN.md): no thread, no process. It talks to the arbiter through
 * a channel whose two ends are on the same loop, so the code above cannot
 * tell it from a thread actor. Its exit cannot stop the shared loop; it
 * schedules its own teardown instead, outside its VM's calls. */
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

pl_child *pl_spawn_monitor(pl_host *h, const char *aid, int on_exit_ref,
                           pl_child **owner, pl_conn **conn, char *err, size_t errlen) {
    monitor_actor *m = calloc(1, sizeof *m);
    pl_channel *ch = m ? pl_channel_new() : NULL;
    if (!ch) {
        free(m);
        return spawn_failed(h, on_exit_ref, err, errlen, "%s", "out of memory spawning a monitor");
    }
    if (pl_host_init(&m->vm, NULL, aid, h->loop) != 0) {
        pl_channel_release(ch);
        free(m);
        return spawn_failed(h, on_exit_ref, err, errlen, "%s", "cannot make the monitor's VM");
    }
    m->vm_open = 1;
    m->vm.on_exit_request = monitor_exit_requested;
    uv_timer_init(h->loop, &m->teardown);
    m->teardown.data = m;
    child_init(&m->base, h, on_exit_ref, owner);
    pl_host_track(h, &m->base.res, monitor_shutdown);
    pl_conn *mine = pl_channel_attach(h, ch, 0);
    pl_conn *theirs = pl_channel_attach(&m->vm, ch, 1);
    pl_channel_release(ch);
    if (!mine || !theirs) {
        if (mine) pl_conn_close(mine, "monitor not started");
        monitor_close(m, 0);
        snprintf(err, errlen, "out of memory spawning a monitor");
        return NULL;
    }
    actor_request req = {"monitor", aid, NULL, theirs};
    if (pl_host_start(&m->vm, "actor_main", push_actor_request, &req) != 0)
        pl_host_request_exit(&m->vm, 1);
    *conn = mine;
    return &m->base;
}
