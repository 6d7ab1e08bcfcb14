/* executor.c: worker threads with Lua VMs of their own (see executor.h);
 * its Lua binding is lexecutor.c.
 *
 * Threads: the owner (the actor's loop thread) and N workers share two job
 * queues under one mutex: `pending` (the owner pushes, workers pop, waiting on
 * a condition variable) and `finished` (workers push, the owner takes the
 * whole list when the async handle wakes it; wake-ups coalesce). A job is
 * touched by one thread at a time: the queue hand-offs under the mutex order
 * the owner's writes before the worker's and back. Lua callbacks, registry
 * refs and the userdata live in the owner's VM and are only touched on the
 * owner's thread; a worker VM is made on the owner's thread before its thread
 * starts, then used and closed only by that worker.
 *
 * Ownership, as in lcore.c: the pool is malloc'd and tracked as a pl_resource
 * of its host; the Lua userdata holds a pointer slot that is cleared when the
 * pool ends. The pool ends in one of two ways:
 *   - draining (Executor:close() or __gc): no more jobs are taken; workers
 *     end once the pending queue is empty (close() empties it first, failing
 *     the queued jobs); the last one's wake-up makes the owner join them all
 *     (they have all ended, so the join does not block) and free the pool;
 *   - stopping (host shutdown): workers end after their current job, the
 *     owner joins them at once (waiting for running jobs) and drops every
 *     job left without calling its callback.
 *
 * The async handle is referenced only while jobs are outstanding, so an idle
 * executor does not keep the loop alive but a pending result does. */
#include "executor.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "buf.h"
#include "host.h"
#include "log.h"

/* ---- jobs and queues --------------------------------------------------- */

typedef struct job {
    struct job *next;
    uint64_t id;        /* for log lines */
    int callback_ref;   /* in the owner's registry; owner's thread only */
    char *payload;      /* the encoded {fn, args...}; freed once run */
    size_t payload_len;
    int ok;             /* fn returned and its result was encoded */
    int has_message;    /* on failure, `result` holds the error message */
    pl_buf result;      /* the encoded first result, or the error message */
    char *traceback;    /* on failure, the worker's traceback, if made */
} job;

typedef struct job_queue {
    job *head, *tail;
} job_queue;

static void queue_push(job_queue *q, job *j) {
    j->next = NULL;
    if (q->tail) q->tail->next = j;
    else q->head = j;
    q->tail = j;
}

static job *queue_pop(job_queue *q) {
    job *j = q->head;
    if (j) {
        q->head = j->next;
        if (!q->head) q->tail = NULL;
        j->next = NULL;
    }
    return j;
}

/* Empties the queue and returns its jobs as a list linked by `next`. */
static job *queue_take_all(job_queue *q) {
    job *list = q->head;
    q->head = q->tail = NULL;
    return list;
}

static job *job_new(const char *payload, size_t len) {
    job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->payload = malloc(len ? len : 1);
    if (!j->payload) {
        free(j);
        return NULL;
    }
    memcpy(j->payload, payload, len);
    j->payload_len = len;
    j->callback_ref = LUA_NOREF;
    pl_buf_init(&j->result, pl_value_default_limits.max_size);
    return j;
}

static void job_free(job *j) {
    free(j->payload);
    pl_buf_free(&j->result);
    free(j->traceback);
    free(j);
}

/* Marks the job failed with this message. Out of memory, the message is
 * lost and the owner reports that instead. */
static void job_set_error(job *j, const char *msg, size_t len) {
    j->ok = 0;
    j->result.len = 0;
    j->has_message = pl_buf_append(&j->result, msg, len) == 0;
}

static char *copy_string(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *copy = malloc(n);
    if (copy) memcpy(copy, s, n);
    return copy;
}

/* ---- the pool ---------------------------------------------------------- */

typedef struct worker {
    struct pl_executor *ex;
    uv_thread_t thread;
    lua_State *L;
} worker;

struct pl_executor {
    pl_host *host;
    pl_resource res;
    uv_async_t wake; /* workers -> owner: jobs finished, or a worker ended */
    uv_mutex_t lock;
    uv_cond_t has_work;
    /* Guarded by lock. */
    job_queue pending;
    job_queue finished;
    int draining; /* workers end once `pending` is empty */
    int stopping; /* workers end after their current job */
    int alive;    /* workers whose thread has not ended yet */
    /* The owner's thread only. */
    int nthreads, started;
    worker *workers;
    char *path, *cpath; /* the owner's package.path and cpath */
    uint64_t next_id;
    int outstanding; /* jobs submitted and not yet reported or dropped */
    int finishing;
    pl_executor **owner; /* the Lua userdata's slot, cleared at the end */
};

/* ---- the worker's side ------------------------------------------------- */

/* The codec's default limits, with functions allowed: jobs and results
 * only ever come from this process's own VMs. */
pl_value_limits pl_executor_job_limits(void) {
    pl_value_limits lim = pl_value_default_limits;
    lim.allow_functions = 1;
    return lim;
}

/* The job a worker VM is running, in its extra space (a worker VM has no
 * pl_host there), so that the message handler can record the error. */
static job **current_job(lua_State *L) { return (job **)lua_getextraspace(L); }

/* Records the error message and the traceback in the job; they are copied
 * out of the VM because the owner's thread reads them. */
static int worker_message_handler(lua_State *L) {
    job *j = *current_job(L);
    size_t len;
    const char *msg = lua_tolstring(L, 1, &len);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) {
            msg = lua_tolstring(L, -1, &len);
        } else {
            msg = lua_pushfstring(L, "(error object is a %s value)",
                                  luaL_typename(L, 1));
            len = strlen(msg);
        }
    }
    job_set_error(j, msg, len);
    luaL_traceback(L, L, NULL, 1);
    free(j->traceback);
    j->traceback = copy_string(lua_tostring(L, -1));
    return 1;
}

/* The item count of the MessagePack array at p: the job's arguments may be
 * nil, so the decoded table's length cannot tell. 0 or -1. */
static int array_length(const unsigned char *p, size_t len, size_t *n) {
    if (len >= 1 && (p[0] & 0xf0) == 0x90) {
        *n = p[0] & 0x0f;
    } else if (len >= 3 && p[0] == 0xdc) {
        *n = (size_t)p[1] << 8 | p[2];
    } else if (len >= 5 && p[0] == 0xdd) {
        *n = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
    } else {
        return -1;
    }
    return 0;
}

/* Protected: decodes {fn, args...}, calls fn(args...), encodes its first
 * result into the job. */
static int job_body(lua_State *L) {
    job *j = *current_job(L);
    char err[512];
    pl_value_limits lim = pl_executor_job_limits();
    size_t n;
    if (array_length((const unsigned char *)j->payload, j->payload_len, &n) != 0 ||
        n == 0 || n > INT32_MAX)
        return luaL_error(L, "the job is not an array {fn, args...}");
    if (pl_value_decode(L, j->payload, j->payload_len, &lim, err,
                        sizeof err) < 0)
        return luaL_error(L, "cannot decode the job: %s", err);
    int items = lua_gettop(L);
    if (lua_rawgeti(L, items, 1) != LUA_TFUNCTION)
        return luaL_error(L, "the job's first item is a %s, not a function",
                          luaL_typename(L, -1));
    luaL_checkstack(L, (int)n, "too many arguments for the job");
    for (size_t i = 2; i <= n; i++) lua_rawgeti(L, items, (lua_Integer)i);
    lua_call(L, (int)n - 1, 1);
    if (pl_value_encode(L, -1, &j->result, &lim, "result", err,
                        sizeof err) != 0)
        return luaL_error(L, "cannot send the result back: %s", err);
    return 0;
}

static void run_job(lua_State *L, job *j) {
    *current_job(L) = j;
    lua_settop(L, 0);
    lua_pushcfunction(L, worker_message_handler);
    lua_pushcfunction(L, job_body);
    int status = lua_pcall(L, 0, 0, 1);
    if (status == LUA_OK) {
        j->ok = 1;
    } else if (!j->has_message && lua_type(L, -1) == LUA_TSTRING) {
        /* The handler did not run or failed (out of memory, error in the
         * handler): Lua's own message is a string and copying it is safe. */
        size_t len;
        const char *msg = lua_tolstring(L, -1, &len);
        job_set_error(j, msg, len);
    }
    lua_settop(L, 0);
    *current_job(L) = NULL;
    free(j->payload);
    j->payload = NULL;
}

/* The next job to run, or NULL when this worker should end. */
static job *next_job(pl_executor *ex) {
    uv_mutex_lock(&ex->lock);
    while (!ex->stopping && !ex->draining && !ex->pending.head)
        uv_cond_wait(&ex->has_work, &ex->lock);
    job *j = ex->stopping ? NULL : queue_pop(&ex->pending);
    uv_mutex_unlock(&ex->lock);
    return j;
}

static void report_job(pl_executor *ex, job *j) {
    uv_mutex_lock(&ex->lock);
    queue_push(&ex->finished, j);
    uv_mutex_unlock(&ex->lock);
    uv_async_send(&ex->wake);
}

/* The worker thread. Its last act is a wake-up, so the owner notices that
 * it ended; the owner joins it before closing the async handle. */
static void worker_main(void *arg) {
    worker *w = arg;
    pl_executor *ex = w->ex;
    job *j;
    while ((j = next_job(ex)) != NULL) {
        run_job(w->L, j);
        report_job(ex, j);
    }
    lua_close(w->L);
    w->L = NULL;
    uv_mutex_lock(&ex->lock);
    ex->alive--;
    uv_mutex_unlock(&ex->lock);
    uv_async_send(&ex->wake);
}

/* ---- starting the workers (owner's thread) ----------------------------- */

/* Protected: the standard libraries and the owner's module search paths, so
 * that a module upvalue is `require`d from the same files. */
static int setup_worker_vm(lua_State *L) {
    pl_executor *ex = lua_touserdata(L, 1);
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    if (ex->path) {
        lua_pushstring(L, ex->path);
        lua_setfield(L, -2, "path");
    }
    if (ex->cpath) {
        lua_pushstring(L, ex->cpath);
        lua_setfield(L, -2, "cpath");
    }
    return 0;
}

static lua_State *new_worker_vm(pl_executor *ex) {
    lua_State *L = luaL_newstate();
    if (!L) return NULL;
    *current_job(L) = NULL;
    lua_pushcfunction(L, setup_worker_vm);
    lua_pushlightuserdata(L, ex);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        lua_close(L);
        return NULL;
    }
    return L;
}

static int start_worker(pl_executor *ex, worker *w) {
    w->ex = ex;
    w->L = new_worker_vm(ex);
    if (!w->L) return UV_ENOMEM;
    uv_mutex_lock(&ex->lock);
    ex->alive++; /* before the thread exists: it decrements at its end */
    uv_mutex_unlock(&ex->lock);
    int rc = uv_thread_create(&w->thread, worker_main, w);
    if (rc != 0) {
        uv_mutex_lock(&ex->lock);
        ex->alive--;
        uv_mutex_unlock(&ex->lock);
        lua_close(w->L);
        w->L = NULL;
    }
    return rc;
}

/* Starts the threads on the first submit. Fewer than asked is logged and
 * tolerated; none at all is an error (the next submit tries again). */
static int start_workers(pl_executor *ex) {
    int rc = 0;
    while (ex->started < ex->nthreads &&
           (rc = start_worker(ex, &ex->workers[ex->started])) == 0)
        ex->started++;
    if (ex->started == 0) return rc;
    if (rc != 0)
        pl_log(PL_LOG_WARNING, ex->host->name,
               "executor: started %d of %d threads: %s", ex->started,
               ex->nthreads, uv_strerror(rc));
    return 0;
}

/* ---- results and the end (owner's thread) ------------------------------ */

static void release_job(pl_executor *ex, job *j) {
    luaL_unref(ex->host->L, LUA_REGISTRYINDEX, j->callback_ref);
    job_free(j);
    if (--ex->outstanding == 0) uv_unref((uv_handle_t *)&ex->wake);
}

/* Protected: callback(true, result) or callback(false, message [, tb]). */
static int call_job_callback(lua_State *L) {
    job *j = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, j->callback_ref);
    lua_pushboolean(L, j->ok);
    if (j->ok || j->has_message)
        lua_pushlstring(L, j->result.data ? j->result.data : "", j->result.len);
    else
        lua_pushliteral(L, "the worker ran out of memory reporting the error");
    int nargs = 2;
    if (!j->ok && j->traceback) {
        lua_pushstring(L, j->traceback);
        nargs = 3;
    }
    lua_call(L, nargs, 0);
    return 0;
}

static void deliver_job(pl_executor *ex, job *j) {
    char where[64];
    snprintf(where, sizeof where, "executor job %llu callback",
             (unsigned long long)j->id);
    lua_pushcfunction(ex->host->L, call_job_callback);
    lua_pushlightuserdata(ex->host->L, j);
    pl_host_pcall(ex->host, 1, 0, where); /* logs the callback's error */
    release_job(ex, j);
}

static void drop_jobs(pl_executor *ex, job *list) {
    while (list) {
        job *next = list->next;
        release_job(ex, list);
        list = next;
    }
}

static void executor_freed(uv_handle_t *handle) {
    pl_executor *ex = handle->data;
    uv_cond_destroy(&ex->has_work);
    uv_mutex_destroy(&ex->lock);
    free(ex->workers);
    free(ex->path);
    free(ex->cpath);
    free(ex);
}

/* Joins the workers (which have ended or been told to), drops what is left
 * and frees the pool once libuv is done with its handle. */
static void executor_finish(pl_executor *ex) {
    if (ex->finishing) return;
    ex->finishing = 1;
    for (int i = 0; i < ex->started; i++) uv_thread_join(&ex->workers[i].thread);
    ex->started = 0;
    drop_jobs(ex, queue_take_all(&ex->pending));
    drop_jobs(ex, queue_take_all(&ex->finished));
    pl_host_untrack(&ex->res);
    if (ex->owner) *ex->owner = NULL;
    ex->owner = NULL;
    uv_close((uv_handle_t *)&ex->wake, executor_freed);
}

/* Reports every finished job; ends the pool once a drain is complete. */
static void executor_woken(uv_async_t *async) {
    pl_executor *ex = async->data;
    uv_mutex_lock(&ex->lock);
    job *list = queue_take_all(&ex->finished);
    int all_ended = ex->draining && ex->alive == 0;
    uv_mutex_unlock(&ex->lock);
    while (list) {
        job *next = list->next;
        deliver_job(ex, list);
        list = next;
    }
    if (all_ended) executor_finish(ex);
}

/* Host shutdown: waits for running jobs, drops queued ones uncalled. */
static void executor_shutdown(pl_resource *res) {
    pl_executor *ex = (pl_executor *)((char *)res - offsetof(pl_executor, res));
    uv_mutex_lock(&ex->lock);
    ex->stopping = 1;
    uv_cond_broadcast(&ex->has_work);
    uv_mutex_unlock(&ex->lock);
    executor_finish(ex);
}

/* Takes no more jobs. With cancel_queued, queued jobs fail now (reported on
 * the next wake-up, like any result); without, workers run them first. */
static void executor_drain(pl_executor *ex, int cancel_queued) {
    static const char closed[] = "closed before the job ran";
    uv_mutex_lock(&ex->lock);
    ex->draining = 1;
    job *list = cancel_queued ? queue_take_all(&ex->pending) : NULL;
    while (list) {
        job *next = list->next;
        job_set_error(list, closed, sizeof closed - 1);
        queue_push(&ex->finished, list);
        list = next;
    }
    uv_cond_broadcast(&ex->has_work);
    uv_mutex_unlock(&ex->lock);
    if (ex->started == 0) executor_finish(ex); /* no thread, no job */
    else uv_async_send(&ex->wake);
}

pl_executor *pl_executor_new(pl_host *h, int nthreads, const char *path,
                             const char *cpath, pl_executor **owner) {
    pl_executor *ex = calloc(1, sizeof *ex);
    if (!ex) return NULL;
    ex->workers = calloc((size_t)nthreads, sizeof *ex->workers);
    ex->path = copy_string(path);
    ex->cpath = copy_string(cpath);
    if (!ex->workers || (path && !ex->path) || (cpath && !ex->cpath)) goto fail;
    if (uv_mutex_init(&ex->lock) != 0) goto fail;
    if (uv_cond_init(&ex->has_work) != 0) goto fail_mutex;
    if (uv_async_init(h->loop, &ex->wake, executor_woken) != 0) goto fail_cond;
    ex->wake.data = ex;
    uv_unref((uv_handle_t *)&ex->wake); /* an idle pool keeps nothing alive */
    ex->host = h;
    ex->nthreads = nthreads;
    ex->next_id = 1;
    ex->owner = owner;
    *owner = ex;
    pl_host_track(h, &ex->res, executor_shutdown);
    return ex;
fail_cond:
    uv_cond_destroy(&ex->has_work);
fail_mutex:
    uv_mutex_destroy(&ex->lock);
fail:
    free(ex->workers);
    free(ex->path);
    free(ex->cpath);
    free(ex);
    return NULL;
}

/* ---- what the binding calls (owner's thread) -------------------------- */

int pl_executor_is_open(const pl_executor *ex) { return !ex->draining; }

int pl_executor_submit(pl_executor *ex, const char *payload, size_t len,
                       int callback_ref, uint64_t *id) {
    if (ex->started == 0) {
        int rc = start_workers(ex);
        if (rc != 0) return rc;
    }
    job *j = job_new(payload, len);
    if (!j) return UV_ENOMEM;
    j->id = *id = ex->next_id++;
    j->callback_ref = callback_ref;
    if (ex->outstanding++ == 0) uv_ref((uv_handle_t *)&ex->wake);
    uv_mutex_lock(&ex->lock);
    queue_push(&ex->pending, j);
    uv_cond_signal(&ex->has_work);
    uv_mutex_unlock(&ex->lock);
    return 0;
}

void pl_executor_close(pl_executor *ex) {
    if (!ex->draining) executor_drain(ex, 1);
}

void pl_executor_release(pl_executor *ex) {
    ex->owner = NULL;
    if (!ex->draining) executor_drain(ex, 0);
}
