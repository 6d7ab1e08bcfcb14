/* spawn.h: starting actors in new processes and new threads.
 *
 * A process actor is this executable started again (uv_spawn of
 * uv_exepath, never a bare fork) as `pulsar-lua --pulsar-actor ADDR AID`:
 * it connects to the arbiter's mailbox at ADDR and asks for its parameters.
 * A thread actor is a new thread with its own loop and VM, joined to the
 * arbiter by an in-process channel (conn.h). Either way the new actor runs
 * host.lua's actor_main, so the code above cannot tell them apart; the
 * arbiter learns of the end of either through an exit callback. */
#ifndef PULSAR_SPAWN_H
#define PULSAR_SPAWN_H

#include <lua.h>

/* The body of a process actor (main.c calls it); returns the exit status. */
int pl_process_actor_main(const char *address, const char *aid);

/* Adds spawn_process and spawn_thread to the table on top of L's stack:
 *   core.spawn_process(aid, address, on_exit(status, signal) [, fds])
 *       -> Process (.pid, :kill(signal)); the child inherits the
 *       descriptors listed in fds at 3, 4, ... (listening sockets)
 *   core.spawn_thread(aid, on_exit(status)) -> conn, Thread
 *       (:interrupt() -> true | false: for an actor stuck in Lua code that
 *        must stop. Unless that code returns to the actor's loop first, it
 *        raises "interrupted: the actor is being stopped" once, within 1000
 *        instructions. False if the thread has no VM, yet or any more.) */
void pl_lspawn_register(lua_State *L);

#endif
