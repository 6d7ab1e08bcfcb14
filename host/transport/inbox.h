/* inbox.h: the queue of messages of one VM, and the process's directory of
 * them: the direct route between actors of one process (docs/DESIGN.md
 * "Direct routes").
 *
 * Every VM of a process that takes part in messaging (the arbiter, its
 * monitors and its thread actors) opens one inbox under its aid. Another VM
 * of the same process finds it by aid, or by a name the arbiter publishes
 * (pl_inbox_publish), and posts encoded envelopes to it: a message is one
 * malloc'd block handed over by pointer, never copied again. The owner's
 * loop is woken once per batch (an eventfd, written when the sender's loop
 * turns) and drains everything waiting at each wake-up, in the order it
 * was posted.
 *
 * Finding an inbox watches it, as an Erlang monitor does: when it closes
 * (its VM ends, however), every inbox that found it is told with a "down"
 * notice carrying its aid, queued behind the messages that inbox already
 * has, so that calls waiting on the gone actor fail at once.
 *
 * Threads: pl_inbox_find, pl_inbox_post*, pl_inbox_release, pl_inbox_aid,
 * pl_inbox_alive and pl_inbox_publish may be called from any thread; open,
 * set_handler and close only from the owner's loop thread. */
#ifndef PULSAR_INBOX_H
#define PULSAR_INBOX_H

#include <stddef.h>

#include <uv.h>

#include "buf.h"

typedef struct pl_inbox pl_inbox;

/* The messages taken at one wake-up, in the order they were posted. */
typedef struct pl_inbox_batch pl_inbox_batch;

typedef struct pl_inbox_handler {
    /* Everything that waited, handed over at once: read it with
     * pl_inbox_batch_next. Payloads stay valid until the call returns. */
    void (*on_batch)(pl_inbox *ib, pl_inbox_batch *batch, void *ud);
    void *ud;
} pl_inbox_handler;

/* The next message of a batch: 1 with its payload, or 0 at the end (or
 * once the inbox has closed). A down notice (*is_down set) says that an
 * inbox this one found has closed: its payload is "AID\0NAME\0", NAME ""
 * if the actor never said. */
int pl_inbox_batch_next(pl_inbox_batch *batch, const char **payload,
                        size_t *len, int *is_down);

/* Opens the inbox of `aid` on `loop` and enters it in the directory; NULL
 * with err when the aid is taken or memory runs out. It does not keep the
 * loop alive. */
pl_inbox *pl_inbox_open(uv_loop_t *loop, const char *aid,
                        const pl_inbox_handler *handler, char *err,
                        size_t errlen);
/* Leaves the directory, drops whatever is queued, tells every watcher,
 * and frees the inbox once its handle is closed and no one holds it. The
 * handler is not called again. */
void pl_inbox_close(pl_inbox *ib);

/* The live inbox of `key` (an aid, else a published name), held for the
 * caller (pl_inbox_release), with `watcher` told when it closes; NULL if
 * there is none in this process. */
pl_inbox *pl_inbox_find(const char *key, pl_inbox *watcher);
void pl_inbox_release(pl_inbox *ib);
/* Whether `key` names a live inbox of this process now (nothing held). */
int pl_inbox_known(const char *key);
const char *pl_inbox_aid(const pl_inbox *ib);
/* The actor's name, for the down notices (truncated to 63 bytes). */
void pl_inbox_set_name(pl_inbox *ib, const char *name);
int pl_inbox_alive(pl_inbox *ib);

/* Queues `len` bytes (copied). 0, or -1 when the inbox has closed or
 * memory runs out. `from` as for pl_inbox_post_buf. */
int pl_inbox_post(pl_inbox *to, const char *payload, size_t len, pl_inbox *from);
/* The same for a message encoded in place: `msg` was made with
 * pl_inbox_message_start, then its payload appended. The inbox takes it
 * over whether or not the post succeeds. With `from` (the sender's own
 * inbox, on the calling thread) the receiver is woken when the sender's
 * loop next turns, once for everything posted to it meanwhile. */
int pl_inbox_post_buf(pl_inbox *to, pl_buf *msg, pl_inbox *from);
/* Starts a buffer that pl_inbox_post_buf can hand over without a copy. 0
 * or -1 (no memory). */
int pl_inbox_message_start(pl_buf *msg, size_t limit);

/* The arbiter publishes which aid a name reaches now (aid NULL: none), so
 * that every VM of its process resolves names without asking it. 0 or -1
 * (no memory). */
int pl_inbox_publish(const char *name, const char *aid);

/* For a link from another process: when the envelope in payload is for
 * an inbox of this process, queues a copy there and returns 1; 0 (nothing
 * done) when it is not, or is not an envelope. The arbiter forwards so,
 * in C, what a process actor sends to a thread actor or a monitor. */
int pl_inbox_forward(const char *payload, size_t len);
/* Envelopes pl_inbox_forward queued since the process started. */
unsigned long long pl_inbox_forwarded(void);

/* The Lua face (linbox.c): core.inbox_open, core.route, ... */
struct lua_State;
void pl_linbox_register(struct lua_State *L);

#endif
