/* executor.h: a pool of worker threads, each with a Lua VM of its own, that
 * runs functions off an actor's loop (docs/API.md: `actor:executor():submit`).
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

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "host.h"
#include "value.h"

typedef struct pl_executor pl_executor;

/* The codec's limits for jobs and results: functions allowed, since they
 * only ever come from this process's own VMs. */
pl_value_limits pl_executor_job_limits(void);

/* A pool of nthreads for host h (a pl_resource of it); worker VMs get these
 * module search paths (NULL: Lua's default). *owner points at the pool
 * until it ends, then is set to NULL. NULL if out of memory. */
pl_executor *pl_executor_new(pl_host *h, int nthreads, const char *path,
                             const char *cpath, pl_executor **owner);
/* Whether it still takes jobs. */
int pl_executor_is_open(const pl_executor *ex);
/* Queues the job `payload` (copied); callback_ref, a registry ref in h's
 * VM, is the executor's from now on (unref'd once called or dropped). Sets
 * *id; 0, or a libuv error code (threads not started, out of memory), and
 * then the ref is still the caller's. */
int pl_executor_submit(pl_executor *ex, const char *payload, size_t len,
                       int callback_ref, uint64_t *id);
/* Refuses further jobs; queued ones fail, running ones finish and report. */
void pl_executor_close(pl_executor *ex);
/* The owner lets go (its userdata is collected): queued and running jobs
 * finish and report, then the threads end; *owner is not touched again. */
void pl_executor_release(pl_executor *ex);

/* Adds to the table on top of L's stack (the pulsar.core module; lexecutor.c):
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
