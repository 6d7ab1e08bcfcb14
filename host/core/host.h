/* host.h: one actor's home: a Lua VM driven by a libuv loop.
 *
 * The arbiter is a pl_host on the main thread; every thread actor is one on
 * its thread, every process actor one in its process, and every monitor one
 * on the arbiter's loop and thread (a shared loop). The Lua side of pulsar
 * (lua/pulsar/) does the scheduling of coroutines; the host gives it the
 * loop through the pulsar.core module (lcore.c and the l*.c bindings),
 * counts and limits the memory of its VM, tracks what must be closed before
 * its loop can end, and guarantees that no Lua error ever unwinds through a
 * libuv callback: every entry into Lua from C is a protected call. */
#ifndef PULSAR_HOST_H
#define PULSAR_HOST_H

#include <stddef.h>

#include <lua.h>
#include <uv.h>

#include "cli.h"
#include "vmalloc.h"

/* Something the host must close before the loop can end: a malloc'd handle
 * and what it owns. close() must untrack the resource and start closing it;
 * the handle's own close callback frees it. */
typedef struct pl_resource {
    void (*close)(struct pl_resource *res);
    struct pl_resource *prev, *next;
} pl_resource;

typedef struct pl_host {
    uv_loop_t *loop;    /* own_loop, or the arbiter's for a monitor */
    uv_loop_t own_loop;
    lua_State *L;
    const pl_cli *cli;
    char *argv0;
    int loop_depth;     /* > 0 while uv_run is on the C stack */
    int exit_code;      /* the process's status once the loop ends */
    int exit_requested; /* core.exit_loop was called */
    uv_idle_t soon;     /* while active, the loop runs the Lua ready queue */
    int soon_ref;       /* registry ref of the function that drains it */
    int signal_ref;     /* registry ref of the Lua signal handler */
    uv_signal_t signals[5]; /* one per stop signal (lcore.c) */
    int nsignals;
    int stop_signals_seen; /* a second one ends the process at once */
    struct pl_stdin_reader *stdin_reader;
    pl_resource resources; /* list head of what is open; see pl_host_track */
    char name[64];         /* the actor's name, for log lines */
    /* A host on a loop it does not own (a monitor on the arbiter's) cannot
     * stop that loop: an exit request calls this instead. */
    void (*on_exit_request)(struct pl_host *h);
    void (*on_freed)(struct pl_host *h); /* once its handles are closed */
    int closing_handles;
    /* Interrupts (interrupt.c). Under interrupt_lock: the coroutine
     * core.resume is running now (NULL: the main state or none), how deep
     * the C stack is in Lua, which run of Lua this is, and the interrupt
     * asked for and not yet raised (message NULL: none). */
    lua_State *running;
    int lua_depth;
    unsigned lua_runs;
    const char *interrupt_message;
    const char *terminate_message; /* set for good by pl_host_terminate */
    int interrupt_signal;
    uv_mutex_t interrupt_lock;
    int interrupted_by; /* host's thread: the signal of an interrupt raised */
    struct pl_signal_watch *signal_watch;
    /* The VM's allocator counts the bytes its blocks hold and refuses to
     * grow past memory_limit (0: no limit): Lua then raises "not enough
     * memory" in that VM, and the process's other VMs go on. */
    size_t memory_used;
    size_t memory_limit;
    pl_vmalloc vm_alloc; /* where the VM's blocks come from */
    int warn_state;      /* the VM's warnings: off, on, or a message continued */
} pl_host;

/* Pushes the one argument of a host.lua entry point. */
typedef void (*pl_push_fn)(lua_State *L, void *ud);

/* Makes the loop and the VM (pulsar on its path); cli may be NULL for an
 * actor, whose settings come from its spawn parameters. With shared_loop,
 * the VM lives on that loop (a monitor on the arbiter's) instead of a loop
 * of its own. 0 or -1. */
int pl_host_init(pl_host *h, const pl_cli *cli, const char *name,
                 uv_loop_t *shared_loop);
/* Calls host.lua's `entry` with what push pushes and returns its result,
 * without running the loop (for a host on a shared loop). */
int pl_host_start(pl_host *h, const char *entry, pl_push_fn push, void *ud);
/* Closes a host on a shared loop: its resources and its VM now, its own
 * handles on the loop's next turn, then calls on_freed. */
void pl_host_close_shared(pl_host *h, void (*on_freed)(pl_host *h));
/* Calls host.lua's `entry` with what push pushes, then runs the loop until
 * nothing is left or an exit is asked for; returns the exit status. */
int pl_host_run(pl_host *h, const char *entry, pl_push_fn push, void *ud);
/* Closes every resource, the loop and the VM. */
void pl_host_close(pl_host *h);

void pl_host_track(pl_host *h, pl_resource *res, void (*close)(pl_resource *));
void pl_host_untrack(pl_resource *res);

/* The memory limit of a thread actor's VM unless its cfg sets max_memory:
 * its threads share the arbiter's address space. */
#define PL_THREAD_MEMORY_LIMIT ((size_t)1 << 30)

/* Sets h's VM memory limit in bytes (0: none); it applies to what the VM
 * allocates from now on, so a limit below memory_used only stops growth. */
void pl_host_set_memory_limit(pl_host *h, size_t limit);

/* The host that owns L (kept in the Lua state's extra space). */
static inline pl_host *pl_host_of(lua_State *L) {
    return *(pl_host **)lua_getextraspace(L);
}

/* Calls the function below nargs arguments on L's stack in protected mode
 * with a traceback; on error logs it as from `where` and returns non-zero.
 * Leaves nresults values on success, nothing on failure. */
int pl_host_pcall(pl_host *h, int nargs, int nresults, const char *where);

/* Runs the loop once; safe to nest only when no callback is on the stack. */
int pl_host_run_once(pl_host *h);

/* Asks the outermost loop to end; the process exits with code. */
void pl_host_request_exit(pl_host *h, int code);

/* Interrupting Lua code that never returns to its loop (interrupt.c).
 *
 * On the host's thread: pl_host_pcall brackets every entry into Lua with
 * enter/leave; a nested loop run suspends Lua (the depth to resume with);
 * core.resume records the coroutine it runs (gives back the previous). */
void pl_host_enter_lua(pl_host *h);
void pl_host_leave_lua(pl_host *h);
int pl_host_suspend_lua(pl_host *h);
void pl_host_resume_lua(pl_host *h, int depth);
lua_State *pl_host_set_running(pl_host *h, lua_State *co);
/* From any thread: the run of Lua going on now (0: none), and an interrupt
 * of that run (0: whatever runs now). The running code raises `message`
 * (a static string) within a few thousand instructions, unless the run
 * ends first. signum, if not 0, is the signal behind it (interrupted_by).
 * 1 if Lua was running, 0 if there was nothing to interrupt. */
unsigned pl_host_lua_run(pl_host *h);
int pl_host_interrupt(pl_host *h, unsigned run, int signum, const char *message);
/* From any thread, for good: from now on every Lua state of h raises
 * `message` (static) within a few thousand instructions, under whatever
 * pcall, so that code which catches one error cannot go on (thread:terminate,
 * spawn.c). The loop must be stopped too: this only cuts Lua short. */
void pl_host_terminate(pl_host *h, const char *message);
/* A thread that interrupts h's Lua code when SIGINT or SIGTERM finds it
 * busy, so that its loop can take the signal (the arbiter's). */
int pl_signal_watch_start(pl_host *h, char *err, size_t errlen);
void pl_signal_watch_stop(pl_host *h);

/* The pulsar.core module (lcore.c) and its codec half (lcodec.c). */
int luaopen_pulsar_core(lua_State *L);
void pl_lcodec_register(lua_State *L);

/* Runs the whole program for the parsed command line; returns exit status. */
int pl_host_main(const pl_cli *cli, int argc, char **argv);

#endif
