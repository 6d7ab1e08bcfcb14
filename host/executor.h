/* executor.h: a pool of worker threads, each with a Lua VM of its own, that
 * runs functions off an actor's loop (API.md: `actor:executor():submit`).
 *
 * The owner (an actor's pl_host) hands a worker a job: the MessagePack
 * encoding of the array {fn, arg1, ..., argn}, made in the owner's VM. A
 * worker decodes it in its own VM (functions allowed: the code is ours),
 * calls fn(args...) and sends back the encoding of fn's first result, or its
 * error message and traceback. Results wake the owner's loop through one
 * uv_async_t, and each job's Lua callback runs there as a protected call.
 *
 * Worker VMs are never reset: their globals (and package.loaded) persist from
 * one job to the next, and which worker runs a job is unspecified, so a job
 * may see what an earlier job on the same worker left behind. A job whose
 * function never returns keeps its worker busy for good, and the host's
 * shutdown, which joins every worker, waits for it (nothing interrupts a
 * running job yet).
 *
 * Threads and VMs are made on the first submit, so an executor that is never
 * used costs one idle async handle and no thread. The pool is a pl_resource
 * of its host: at shutdown, queued jobs are dropped (their callbacks are
 * released without being called), running jobs are waited for, and every
 * worker VM is closed. */
#ifndef PULSAR_EXECUTOR_H
#define PULSAR_EXECUTOR_H

#include <lua.h>

/* Adds to the table on top of L's stack (the pulsar.core module):
 *   core.executor([nthreads=5]) -> Executor
 *   core.executor_job(fn, ...)  -> payload: {fn, ...} encoded, nils kept in
 *                                 place; raises the codec's error, naming
 *                                 the value that cannot cross
 *   Executor:submit(payload, callback)
 *       queues the job; later, on the owner's loop, calls
 *       callback(true, encoded_result) or
 *       callback(false, message, traceback_or_nil)
 *   Executor:close()
 *       refuses further jobs; queued jobs fail with "closed before the job
 *       ran"; running jobs finish and report; then the threads end.
 * A collected Executor that was not closed lets its queued and running jobs
 * finish and report, then ends its threads; it never blocks the loop. */
void pl_lexecutor_register(lua_State *L);

#endif
