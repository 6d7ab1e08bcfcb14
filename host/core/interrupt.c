/* interrupt.c: stopping Lua code that never returns to its loop.
 *
 * A host's loop cannot run while its Lua code loops (`while true do end`):
 * no callback, no signal handle, no message reaches it. Another thread can
 * still reach the VM, as lua.c's signal handler does: it sets a count hook,
 * and the hook raises an error in the code running then. This file is the
 * one way the runtime does that:
 *   - thread:interrupt (spawn.c), on the arbiter's thread, for a thread
 *     actor that does not stop, and thread:terminate, which makes the
 *     hook raise for good (pl_host_terminate) in one that still does not;
 *   - the signal watch (below), for the arbiter and a console: SIGINT or
 *     SIGTERM while their own Lua code is busy, as lua.c does for Ctrl-C.
 *
 * What counts as "running Lua": every entry into Lua from C goes through
 * pl_host_pcall, which calls pl_host_enter_lua and pl_host_leave_lua; a
 * nested loop run (core.run_once) leaves Lua for its duration. A run is the
 * time from the outermost entry to its return, numbered, so that an
 * interrupter can ask for "the run that was going when I looked, if it
 * still is" (the signal watch gives the loop a moment first).
 *
 * An interrupt is pending from pl_host_interrupt until the hook raises it
 * or the run ends, whichever comes first: one interrupt raises at most one
 * error, and never in a later run. The hook is set on the main state (where
 * callbacks run) and on the coroutine core.resume runs (h->running; a
 * coroutine has hooks of its own), and on any coroutine resumed while the
 * interrupt is pending. Coroutines that inherited the hook meanwhile find
 * nothing pending and only remove it.
 *
 * Thread safety: interrupt_lock guards lua_depth, lua_runs, running and the
 * pending interrupt. lua_sethook is not synchronised with the VM it hooks:
 * Lua documents it as callable asynchronously (from a signal handler, as
 * lua.c does): hook, mask and counts are single words the VM reads as it
 * runs, and a torn read costs at most one misplaced hook call. It also flags
 * the state's Lua call frames (settraps walks L->ci), which a signal handler
 * sees frozen and another thread does not: a frame could be freed during
 * that walk only if, within those few instructions, the code returned from
 * two calls and a collection shrank its frame list. Code stuck in a loop
 * does not; the race is the price of stopping it. */
#include <signal.h>
#include <stdlib.h>

#include <lauxlib.h>

#include "host.h"
#include "log.h"

/* Every INTERRUPT_COUNT instructions a hooked state calls interrupt_hook:
 * soon enough for a person waiting, rare enough to cost nothing. */
#define INTERRUPT_COUNT 1000

/* How long the signal watch lets the loop take a signal itself before it
 * interrupts the Lua code that kept the loop from running. */
#define SIGNAL_GRACE_MS 150

static void interrupt_hook(lua_State *L, lua_Debug *ar);

/* Hooks (or unhooks, hook NULL) the main state and the running coroutine.
 * Called with interrupt_lock held. */
static void set_hooks(pl_host *h, lua_Hook hook) {
    int mask = hook ? LUA_MASKCOUNT : 0;
    if (h->running) lua_sethook(h->running, hook, mask, INTERRUPT_COUNT);
    lua_sethook(h->L, hook, mask, INTERRUPT_COUNT);
}

/* Forgets a pending interrupt. Called with interrupt_lock held, on the
 * host's thread. */
static void call_off(pl_host *h) {
    if (!h->interrupt_message) return;
    h->interrupt_message = NULL;
    h->interrupt_signal = 0;
    if (!h->terminate_message) set_hooks(h, NULL);
}

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    pl_host *h = pl_host_of(L);
    uv_mutex_lock(&h->interrupt_lock);
    const char *terminated = h->terminate_message;
    uv_mutex_unlock(&h->interrupt_lock);
    if (terminated) { /* the hook stays: every pcall unwinds */
        lua_pushstring(L, terminated);
        lua_error(L);
    }
    uv_mutex_lock(&h->interrupt_lock);
    const char *message = h->interrupt_message;
    int signum = h->interrupt_signal;
    call_off(h);
    uv_mutex_unlock(&h->interrupt_lock);
    lua_sethook(L, NULL, 0, 0);
    if (!message) return; /* an inherited hook, or one left from before */
    if (signum) h->interrupted_by = signum;
    /* No position: lua.c says plain "interrupted!". */
    lua_pushstring(L, message);
    lua_error(L);
}

void pl_host_enter_lua(pl_host *h) {
    uv_mutex_lock(&h->interrupt_lock);
    if (h->lua_depth++ == 0 && ++h->lua_runs == 0) h->lua_runs = 1;
    uv_mutex_unlock(&h->interrupt_lock);
}

void pl_host_leave_lua(pl_host *h) {
    uv_mutex_lock(&h->interrupt_lock);
    if (--h->lua_depth == 0) call_off(h);
    uv_mutex_unlock(&h->interrupt_lock);
}

int pl_host_suspend_lua(pl_host *h) {
    uv_mutex_lock(&h->interrupt_lock);
    int depth = h->lua_depth;
    h->lua_depth = 0;
    call_off(h);
    uv_mutex_unlock(&h->interrupt_lock);
    return depth;
}

void pl_host_resume_lua(pl_host *h, int depth) {
    uv_mutex_lock(&h->interrupt_lock);
    h->lua_depth = depth;
    if (depth > 0 && ++h->lua_runs == 0) h->lua_runs = 1;
    uv_mutex_unlock(&h->interrupt_lock);
}

lua_State *pl_host_set_running(pl_host *h, lua_State *co) {
    uv_mutex_lock(&h->interrupt_lock);
    lua_State *previous = h->running;
    h->running = co;
    if (co && (h->interrupt_message || h->terminate_message))
        lua_sethook(co, interrupt_hook, LUA_MASKCOUNT, INTERRUPT_COUNT);
    uv_mutex_unlock(&h->interrupt_lock);
    return previous;
}

unsigned pl_host_lua_run(pl_host *h) {
    uv_mutex_lock(&h->interrupt_lock);
    unsigned run = h->lua_depth > 0 ? h->lua_runs : 0;
    uv_mutex_unlock(&h->interrupt_lock);
    return run;
}

int pl_host_interrupt(pl_host *h, unsigned run, int signum, const char *message) {
    uv_mutex_lock(&h->interrupt_lock);
    int hooked = h->lua_depth > 0 && (run == 0 || run == h->lua_runs);
    if (hooked) {
        h->interrupt_message = message;
        h->interrupt_signal = signum;
        set_hooks(h, interrupt_hook);
    }
    uv_mutex_unlock(&h->interrupt_lock);
    return hooked;
}

void pl_host_terminate(pl_host *h, const char *message) {
    uv_mutex_lock(&h->interrupt_lock);
    h->terminate_message = message;
    set_hooks(h, interrupt_hook);
    uv_mutex_unlock(&h->interrupt_lock);
}

/* ---- the signal watch ---------------------------------------------------
 *
 * A thread with a loop of its own watching SIGINT and SIGTERM (libuv tells
 * every loop that watches a signal). The host's loop still takes each
 * signal itself (lcore.c's core.on_signal: a stop, or the terminal REPL's
 * Ctrl-C); the watch only makes sure that it can: when a signal finds the
 * host running Lua and the same run still going SIGNAL_GRACE_MS later, it
 * interrupts that run with lua.c's "interrupted!", and the host's loop
 * then takes the signal. A second signal during the grace interrupts at
 * once. */

typedef struct pl_signal_watch {
    pl_host *host;
    uv_thread_t thread;
    uv_loop_t loop;
    uv_signal_t sigint, sigterm;
    uv_timer_t grace;
    uv_async_t quit;
    unsigned run;  /* the run a signal found, while the grace runs */
    int signum;
} pl_signal_watch;

static const char interrupted[] = "interrupted!";

static void grace_over(uv_timer_t *timer) {
    pl_signal_watch *w = timer->data;
    pl_host_interrupt(w->host, w->run, w->signum, interrupted);
}

static void watched_signal(uv_signal_t *handle, int signum) {
    pl_signal_watch *w = handle->data;
    unsigned run = pl_host_lua_run(w->host);
    if (!run) return; /* the loop is free to take it */
    if (uv_is_active((uv_handle_t *)&w->grace) && w->run == run) {
        uv_timer_stop(&w->grace);
        pl_host_interrupt(w->host, run, signum, interrupted);
        return;
    }
    w->run = run;
    w->signum = signum;
    uv_timer_start(&w->grace, grace_over, SIGNAL_GRACE_MS, 0);
}

static void watch_quit(uv_async_t *async) {
    pl_signal_watch *w = async->data;
    uv_close((uv_handle_t *)&w->sigint, NULL);
    uv_close((uv_handle_t *)&w->sigterm, NULL);
    uv_close((uv_handle_t *)&w->grace, NULL);
    uv_close((uv_handle_t *)&w->quit, NULL);
}

static void watch_main(void *arg) {
    pl_signal_watch *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

static void close_unstarted(uv_handle_t *handle, void *arg) {
    (void)arg;
    uv_close(handle, NULL);
}

static int watch_handles(pl_signal_watch *w) {
    int rc;
    if ((rc = uv_signal_init(&w->loop, &w->sigint)) != 0) return rc;
    if ((rc = uv_signal_init(&w->loop, &w->sigterm)) != 0) return rc;
    if ((rc = uv_timer_init(&w->loop, &w->grace)) != 0) return rc;
    if ((rc = uv_async_init(&w->loop, &w->quit, watch_quit)) != 0) return rc;
    w->sigint.data = w->sigterm.data = w->grace.data = w->quit.data = w;
    if ((rc = uv_signal_start(&w->sigint, watched_signal, SIGINT)) != 0) return rc;
    return uv_signal_start(&w->sigterm, watched_signal, SIGTERM);
}

int pl_signal_watch_start(pl_host *h, char *err, size_t errlen) {
    pl_signal_watch *w = calloc(1, sizeof *w);
    if (!w) {
        pl_set_err(err, errlen, "out of memory");
        return -1;
    }
    w->host = h;
    int rc = uv_loop_init(&w->loop);
    if (rc == 0 && (rc = watch_handles(w)) == 0)
        rc = uv_thread_create(&w->thread, watch_main, w);
    if (rc != 0) {
        pl_set_err(err, errlen, "cannot watch SIGINT and SIGTERM: %s", uv_strerror(rc));
        /* Handles initialised on a loop that never ran: close them there. */
        uv_walk(&w->loop, close_unstarted, NULL);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        uv_loop_close(&w->loop);
        free(w);
        return -1;
    }
    h->signal_watch = w;
    return 0;
}

void pl_signal_watch_stop(pl_host *h) {
    pl_signal_watch *w = h->signal_watch;
    if (!w) return;
    h->signal_watch = NULL;
    uv_async_send(&w->quit);
    uv_thread_join(&w->thread);
    uv_loop_close(&w->loop);
    free(w);
}
