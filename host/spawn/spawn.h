/* spawn.h: starting actors in new processes, new threads and monitors, and
 * ending them.
 *
 * A process actor is this executable started again (posix_spawn of
 * uv_exepath, launch.h; never a fork) as `pulsar-lua --pulsar-actor ADDR AID`:
 * it connects to the arbiter's mailbox at ADDR and asks for its parameters.
 * A thread actor is a new thread with its own loop and VM, joined to the
 * arbiter by an in-process channel (conn.h). A monitor is a VM of its own
 * on the arbiter's loop and thread, joined the same way. Each runs
 * host.lua's actor_main, so the code above cannot tell them apart; the
 * arbiter learns of the end of any through an exit callback.
 *
 * Every spawn takes on_exit_ref, a registry ref in h's VM to the function
 * called once when the child ends (status, signal) for a process, (status)
 * for a thread or monitor; the ref is the child's from the call on, also
 * when the spawn fails. *owner points at the child until that call (the
 * Lua userdata's slot), then is set to NULL. A failed spawn returns NULL
 * with the reason in err. */
#ifndef PULSAR_SPAWN_H
#define PULSAR_SPAWN_H

#include <stddef.h>

#include <lua.h>

#include "conn.h"
#include "host.h"

typedef struct pl_child pl_child;

/* The most descriptors a process actor inherits beyond stdio. */
#define PL_MAX_INHERITED_FDS 16

/* The body of a process actor (main.c calls it); returns the exit status.
 * It ends, gracefully then with _exit, soon after its arbiter dies,
 * whatever its Lua code is doing. */
int pl_process_actor_main(const char *address, const char *aid);

/* Starts a process actor; it inherits fds[0..nfds) at 3, 4, ... */
pl_child *pl_spawn_process(pl_host *h, const char *aid, const char *address,
                           const int *fds, int nfds, int on_exit_ref,
                           pl_child **owner, char *err, size_t errlen);
int pl_process_pid(const pl_child *c);
/* 0 or a libuv error code. */
int pl_process_kill(pl_child *c, int sig);

/* Starts a thread actor; *conn is the arbiter's end of its channel. */
pl_child *pl_spawn_thread(pl_host *h, const char *aid, int on_exit_ref,
                          pl_child **owner, pl_conn **conn, char *err, size_t errlen);
/* For an actor stuck in Lua code: unless that code returns to the actor's
 * loop first, it raises "interrupted: the actor is being stopped" once,
 * within 1000 instructions. 0 if the thread has no VM, yet or any more. */
int pl_thread_interrupt(pl_child *c);
/* Ends the actor hard: its loop stops, and its Lua code raises
 * "terminated: ..." every 1000 instructions until it is out; then its VM
 * closes. A thread blocked in a C call ends once the call returns; at the
 * arbiter's exit it is waited for exit_timeout, then left behind. 0 if the
 * thread has no VM, yet or any more. */
int pl_thread_terminate(pl_child *c);

/* Starts a monitor; *conn is the arbiter's end of its channel. */
pl_child *pl_spawn_monitor(pl_host *h, const char *aid, int on_exit_ref,
                           pl_child **owner, pl_conn **conn, char *err, size_t errlen);

/* The owner lets go (its userdata is collected): *owner is not touched
 * again and the exit callback is still called. */
void pl_child_disown(pl_child *c);

/* Adds the bindings to the table on top of L's stack (lspawn.c):
 *   core.spawn_process(aid, address, on_exit(status, signal) [, fds])
 *       -> Process (.pid, :kill(signal)); the child inherits the
 *       descriptors listed in fds at 3, 4, ... (listening sockets)
 *   core.spawn_thread(aid, on_exit(status)) -> conn, Thread
 *       (:interrupt() and :terminate() -> true | false, as above)
 *   core.spawn_monitor(aid, on_exit(status)) -> conn, Monitor */
void pl_lspawn_register(lua_State *L);

#endif
