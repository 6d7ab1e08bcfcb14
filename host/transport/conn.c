/* conn.c: the mailbox transports behind pl_conn (see conn.h): stream
 * sockets (Unix, or TCP for other machines and consoles) between processes
 * and in-memory channels between two threads.
 *
 * How it fits: every message between actors is one frame (frame.h). A conn
 * only moves frames; the envelope inside is the codec's business (value.h)
 * and what to do with it is Lua's (lconn.c wraps a conn for pulsar.core).
 * The two transports differ only at their ends:
 *   - reading: a stream reads socket bytes into the conn's read buffer `in`;
 *     a channel swaps its inbox (filled by the other thread) into `in`. Then
 *     both call bytes_arrived(), which parses and delivers every whole frame
 *     and keeps a partial one for later;
 *   - writing: pl_conn_send appends a frame to `out`; flush_queued() hands
 *     `out` to one uv_write (stream) or one locked push into the peer's
 *     inbox plus one uv_async_send (channel).
 *
 * Why batch with a uv_prepare_t: an actor typically answers many messages
 * per loop iteration. Writing each as it is sent would cost one system call
 * (or one mutex + eventfd wake-up) per message; the prepare handle runs
 * just before the loop blocks for I/O, so everything sent during an
 * iteration leaves in one write, whatever callback sent it. The prepare is
 * only active while something is queued, so an idle conn costs nothing.
 *
 * Delivery starts when a handler with on_message is set: until then bytes
 * stay in the kernel (stream) or in the inbox (channel), so a conn handed
 * around before its owner is ready loses nothing. A peer's close is noticed
 * the same way, through reading.
 *
 * Ownership and lifetime:
 *   - a conn is malloc'd with its libuv handles inside it (never in a Lua
 *     userdata) and is a pl_resource of its host, closed with "shutting
 *     down" at exit;
 *   - pl_conn_close marks it closed, untracks it, starts closing its handles
 *     and calls on_close synchronously, before returning; the memory is
 *     freed later, by the last handle close callback (and never while a
 *     uv_write still points into `writing`), so a conn is still safe to
 *     look at (send fails, stats work) until the current callback returns;
 *   - a channel is shared by its creator and the two conns attached to it,
 *     counted under its mutex; whoever drops the last reference frees it,
 *     from either thread. A conn clears its own async pointer in the channel
 *     under the mutex before closing that handle, so the other thread never
 *     wakes a handle being closed.
 *
 * A conn belongs to the thread running its host's loop; only pl_channel_new,
 * pl_channel_attach (on the attaching thread) and pl_channel_release may be
 * called from other threads.
 *
 * Writing to a socket whose peer is gone raises SIGPIPE, which would kill
 * the process; the first stream conn has it ignored (sockaddr.h) so the
 * write fails with EPIPE instead and only that conn closes.
 *
 * Addresses: "unix:PATH" (or a path) is a Unix socket; "HOST:PORT",
 * "[IPv6]:PORT" and ":PORT" (every interface) are TCP. Literal addresses
 * and "localhost" are taken as they are; another host name is looked up,
 * through the thread pool for pl_connect (which never blocks the loop) and
 * at once for pl_listen (which runs while an actor starts). What an address
 * becomes once parsed (a pl_endpoint), its name in log lines, and the
 * listening socket bound to it (a Unix socket file left by a dead process
 * replaced) are sockaddr.c's, shared with net.c. TCP conns set
 * TCP_NODELAY: a mailbox sends small messages that are waited for, and the
 * write batching above already does what Nagle's algorithm would.
 *
 * Lingering (pl_conn_close_after, pl_conn_set_linger): a peer that has to be
 * turned away, such as one failing the TCP mailbox's handshake, is not told
 * at once. For the owner the conn closes then and there (on_close runs),
 * but the socket stays open, unread, and only closes after a fixed delay,
 * so that someone guessing learns each answer slowly. Frames sent before
 * the close still leave (the handshake's "busy" refusal tells its reason
 * that way); nothing after. */
#include "conn.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "frame.h"
#include "log.h"
#include "sockaddr.h"

#define READ_CHUNK ((size_t)64 << 10)
/* A buffer left empty but larger than this is given back to the allocator,
 * so one huge message does not pin its memory for the conn's lifetime. */
#define KEEP_BUFFER_MAX ((size_t)1 << 20)
#define CONN_NAME_SIZE 160
#define HOST_SIZE 256

#define PEER_CLOSED "peer closed the connection"
#define OUT_OF_MEMORY "out of memory"

typedef enum conn_kind { CONN_STREAM, CONN_CHANNEL } conn_kind;

/* Either kind of stream socket, as the handle that carries it. */
typedef union stream_io {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_pipe_t pipe; /* Unix */
    uv_tcp_t tcp;   /* TCP */
} stream_io;

/* An address taken apart (parse_address). */
typedef struct stream_address {
    pl_address addr;
    pl_endpoint ep;       /* Unix: is_unix and path; TCP: sa, once resolved */
    char host[HOST_SIZE]; /* TCP, without brackets; "" = every interface */
    char port[8];
} stream_address;

/* One direction's state of a channel, seen from the side that reads it. */
typedef struct channel_end {
    pl_buf inbox;       /* frames written by the other side, not yet taken */
    uv_async_t *reader; /* this side's wake-up; NULL unless attached & open */
    int attached;
} channel_end;

struct pl_channel {
    uv_mutex_t lock; /* guards everything below */
    int refs;        /* the creator's + one per attached side */
    int closed;      /* one side has closed; the other will follow */
    channel_end ends[2];
};

struct pl_conn {
    pl_resource res;
    pl_host *host;
    conn_kind kind;
    char name[CONN_NAME_SIZE]; /* for log lines and connect errors */
    pl_conn_handler handler;
    size_t max_message;

    pl_buf in;      /* bytes received, not yet delivered */
    pl_buf out;     /* frames queued since the last flush */
    pl_buf writing; /* stream: the bytes of the uv_write in flight */

    uv_prepare_t flush;    /* active while `out` waits */
    uv_timer_t redeliver;  /* due when a new on_message must catch up */
    union {
        uv_handle_t handle;
        uv_stream_t stream; /* a stream, of either kind: */
        uv_pipe_t pipe;     /*   Unix */
        uv_tcp_t tcp;       /*   TCP */
        uv_async_t wake;    /* channel: the other side's writes wake us */
    } io;
    int is_tcp;
    char peer[CONN_NAME_SIZE]; /* who is on the other end (pl_conn_peer) */
    uv_write_t write_req;
    uv_connect_t connect_req;
    uv_getaddrinfo_t resolve_req; /* connecting to a TCP host name */
    stream_address *resolving;    /* its address while the lookup runs */

    pl_channel *channel; /* channel: NULL once this side has left */
    int side;

    /* pl_connect's callback while connecting; a failure is reported once
     * every handle is closed, whatever caused it. */
    void (*on_connect)(pl_conn *c, const char *err, void *ud);
    void *connect_ud;
    char connect_error[256];

    int closed;
    int connecting;
    int io_ready;        /* io.handle is initialised */
    int open_handles;    /* initialised handles whose close has not run */
    int reading;         /* stream: uv_read_start is in effect */
    int write_in_flight; /* stream: write_req is busy */
    uint64_t linger_ms;  /* pl_conn_set_linger: how a bad frame closes */
    int lingering;       /* closed for its owner; the socket waits */

    uint64_t sent, received;
};

struct pl_listener {
    pl_resource res;
    pl_host *host;
    stream_io io;
    int is_tcp;
    void (*on_accept)(pl_listener *l, pl_conn *c, void *ud);
    void *ud;
    char address[PL_SOCKADDR_NAME_MAX]; /* "unix:PATH" or "HOST:PORT", as bound */
    char path[PL_SOCKADDR_PATH_MAX];    /* Unix: the file to unlink at close */
    int closed;
};


/* Exchanges the storage of two buffers, keeping each one's limit: the way
 * bytes change hands between `out`, `writing`, inboxes and `in` without a
 * copy, each side recycling the other's emptied allocation. */
static void swap_storage(pl_buf *a, pl_buf *b) {
    pl_buf t = *a;
    a->data = b->data, a->len = b->len, a->cap = b->cap;
    b->data = t.data, b->len = t.len, b->cap = t.cap;
}

static void trim_if_idle(pl_buf *b) {
    if (b->len == 0 && b->cap > KEEP_BUFFER_MAX) pl_buf_free(b);
}

/* ---- lifetime ------------------------------------------------------------ */

static void conn_free(pl_conn *c) {
    pl_buf_free(&c->in);
    pl_buf_free(&c->out);
    pl_buf_free(&c->writing);
    free(c);
}

static void report_connect_failure(pl_conn *c) {
    void (*cb)(pl_conn *, const char *, void *) = c->on_connect;
    c->on_connect = NULL;
    cb(NULL, c->connect_error, c->connect_ud);
}

/* Runs as each thing a closed conn waits for ends: its handles' close
 * callbacks, a write in flight, a host name lookup. libuv cancels a pending
 * write (calling its callback) before it runs the stream's close callback,
 * but every count is checked so that the order does not matter. A connect
 * that failed is reported once nothing of the conn is left running. */
static void conn_release(pl_conn *c) {
    if (c->open_handles > 0 || c->resolving) return;
    if (c->on_connect) report_connect_failure(c);
    if (!c->write_in_flight) conn_free(c);
}

static void conn_handle_closed(uv_handle_t *handle) {
    pl_conn *c = handle->data;
    c->open_handles--;
    conn_release(c);
}

static void channel_leave(pl_conn *c);

void pl_conn_close(pl_conn *c, const char *reason) {
    if (!c || c->closed) return;
    c->closed = 1;
    pl_host_untrack(&c->res);
    if (c->kind == CONN_CHANNEL) channel_leave(c);
    if (c->resolving) uv_cancel((uv_req_t *)&c->resolve_req);
    uv_close((uv_handle_t *)&c->flush, conn_handle_closed);
    uv_close((uv_handle_t *)&c->redeliver, conn_handle_closed);
    if (c->io_ready) uv_close(&c->io.handle, conn_handle_closed);
    if (c->connecting) {
        /* Nobody holds this conn yet: its creator hears through on_connect
         * once the handles are closed (conn_handle_closed). */
        if (!c->connect_error[0])
            pl_set_err(c->connect_error, sizeof c->connect_error,
                       "cannot connect to %s: %s", c->name, reason);
        return;
    }
    pl_conn_handler handler = c->handler;
    memset(&c->handler, 0, sizeof c->handler);
    if (handler.on_close) handler.on_close(c, reason, handler.ud);
}

/* Formats the reason (through pl_vset_err, as every error here is
 * formatted) and closes the conn with it: nothing more. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void conn_fail(pl_conn *c, const char *fmt, ...) {
    char reason[300];
    va_list ap;
    va_start(ap, fmt);
    pl_vset_err(reason, sizeof reason, fmt, ap);
    va_end(ap);
    pl_conn_close(c, reason);
}

static void conn_shutdown(pl_resource *res) {
    pl_conn_close((pl_conn *)((char *)res - offsetof(pl_conn, res)),
                  "shutting down");
}

/* A conn with its own handles, tracked by h; the transport adds io. */
static pl_conn *conn_new(pl_host *h, conn_kind kind, const char *name) {
    pl_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->host = h;
    c->kind = kind;
    snprintf(c->name, sizeof c->name, "%s", name);
    c->max_message = PL_FRAME_MAX_DEFAULT;
    /* A stream's read buffer never needs more than one whole frame: a full
     * buffer always starts with a complete frame, which is consumed. A
     * channel's only ever holds whole frames, so it needs no cap. */
    pl_buf_init(&c->in, kind == CONN_STREAM
                            ? PL_FRAME_MAX_DEFAULT + PL_FRAME_HEADER_MAX : 0);
    pl_buf_init(&c->out, 0);
    pl_buf_init(&c->writing, 0);
    uv_prepare_init(h->loop, &c->flush); /* neither can fail */
    uv_timer_init(h->loop, &c->redeliver);
    c->flush.data = c->redeliver.data = c;
    c->open_handles = 2;
    pl_host_track(h, &c->res, conn_shutdown);
    return c;
}

/* Gets rid of a conn nobody was given (no handler, so no on_close). */
static void conn_discard(pl_conn *c) { pl_conn_close(c, "discarded"); }

static pl_conn *stream_conn_new(pl_host *h, const char *name, int is_tcp) {
    pl_sockaddr_ignore_sigpipe();
    pl_conn *c = conn_new(h, CONN_STREAM, name);
    if (!c) return NULL;
    int rc = is_tcp ? uv_tcp_init(h->loop, &c->io.tcp)
                    : uv_pipe_init(h->loop, &c->io.pipe, 0);
    if (rc != 0) {
        conn_discard(c);
        return NULL;
    }
    c->io.handle.data = c;
    c->is_tcp = is_tcp;
    c->io_ready = 1;
    c->open_handles++;
    snprintf(c->peer, sizeof c->peer, "%s", name);
    return c;
}

/* ---- delivering what arrived (both transports) -------------------------- */

static void start_flush(pl_conn *c);

static int queue_frame(pl_conn *c, int opcode, const void *payload,
                       size_t len) {
    if (pl_frame_append(&c->out, opcode, payload, len) != 0) return -1;
    start_flush(c);
    return 0;
}

static void frame_arrived(pl_conn *c, const pl_frame *f) {
    switch (f->opcode) {
    case PL_OP_TEXT: /* our peers send binary; a text frame is no different */
    case PL_OP_BINARY:
        c->received++;
        c->handler.on_message(c, (const char *)f->payload, f->len,
                              c->handler.ud);
        break;
    case PL_OP_PING:
        if (queue_frame(c, PL_OP_PONG, f->payload, f->len) != 0)
            pl_conn_close(c, OUT_OF_MEMORY);
        break;
    case PL_OP_CLOSE:
        pl_conn_close(c, PEER_CLOSED);
        break;
    default: /* a pong answers a ping we never send */
        break;
    }
}

/* A lingering conn's owner asked to hear of bad frames through on_close,
 * after the delay, and logs them itself. */
static void reject_frame(pl_conn *c, const char *why) {
    char reason[300];
    snprintf(reason, sizeof reason, "bad frame: %s", why);
    if (c->linger_ms > 0) {
        pl_conn_close_after(c, c->linger_ms, reason);
        return;
    }
    pl_log(PL_LOG_WARNING, NULL, "%s: bad frame, closing the connection: %s",
           c->name, why);
    pl_conn_close(c, reason);
}

/* The one reader of both transports. `in` holds bytes from the peer; every
 * whole frame at its front is handled (a handler may close the conn or
 * clear on_message, which stops the loop), then the handled bytes are
 * dropped in one move and a partial frame stays for the next arrival.
 * Payloads point into `in`, which nothing else touches meanwhile. */
static void bytes_arrived(pl_conn *c) {
    size_t done = 0;
    while (!c->closed && c->handler.on_message && done < c->in.len) {
        pl_frame f;
        size_t used;
        char why[200];
        pl_frame_status status =
            pl_frame_parse((uint8_t *)c->in.data + done, c->in.len - done,
                           c->max_message, &f, &used, why, sizeof why);
        if (status == PL_FRAME_INCOMPLETE) break;
        if (status == PL_FRAME_INVALID) {
            reject_frame(c, why);
            return;
        }
        done += used;
        frame_arrived(c, &f);
    }
    if (c->closed) return; /* `in` is freed with the conn */
    pl_buf_consume(&c->in, done);
    trim_if_idle(&c->in);
}

/* ---- writing (both transports) ------------------------------------------ */

static void stream_flush(pl_conn *c);
static void channel_flush(pl_conn *c);
static void stream_alloc(uv_handle_t *handle, size_t hint, uv_buf_t *buf);
static void stream_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf);
static void channel_woken(uv_async_t *async);

/* Runs once per loop iteration, just before the loop blocks, while anything
 * is queued: all the frames sent since the last run leave together. */
static void flush_queued(uv_prepare_t *prepare) {
    pl_conn *c = prepare->data;
    uv_prepare_stop(prepare);
    if (c->out.len == 0) return;
    if (c->kind == CONN_CHANNEL) channel_flush(c);
    else if (!c->write_in_flight) stream_flush(c);
    /* else stream_written restarts the flush when the write is done */
}

static void start_flush(pl_conn *c) {
    if (!c->closed && !uv_is_active((uv_handle_t *)&c->flush))
        uv_prepare_start(&c->flush, flush_queued);
}

int pl_conn_send(pl_conn *c, const char *payload, size_t len, char *err,
                 size_t errlen) {
    if (!c || c->closed || c->connecting || c->lingering) {
        pl_set_err(err, errlen, "connection closed");
        return -1;
    }
    if (len > c->max_message) {
        pl_set_err(err, errlen, "message of %zu bytes exceeds the limit of %zu "
                "bytes", len, c->max_message);
        return -1;
    }
    if (queue_frame(c, PL_OP_BINARY, payload, len) != 0) {
        pl_set_err(err, errlen, OUT_OF_MEMORY);
        pl_conn_close(c, OUT_OF_MEMORY);
        return -1;
    }
    c->sent++;
    return 0;
}

/* What arrived while nobody listened is delivered from a zero-delay timer:
 * not inside pl_conn_set_handler (which may run inside on_message, with
 * `in` being parsed), and in the timer phase, before the prepare phase, so
 * what the handlers send leaves in the same loop iteration. */
static void deliver_waiting(uv_timer_t *timer) {
    pl_conn *c = timer->data;
    if (c->kind == CONN_CHANNEL) channel_woken(&c->io.wake);
    else if (!c->closed) bytes_arrived(c);
}

void pl_conn_set_handler(pl_conn *c, const pl_conn_handler *handler) {
    if (!c || c->closed) return;
    if (handler) c->handler = *handler;
    else memset(&c->handler, 0, sizeof c->handler);
    if (c->lingering) return; /* its owner has heard of its close */
    int wants = c->handler.on_message != NULL;
    if (wants && (c->kind == CONN_CHANNEL || c->in.len > 0))
        uv_timer_start(&c->redeliver, deliver_waiting, 0, 0);
    if (c->kind == CONN_CHANNEL || c->connecting || wants == c->reading)
        return;
    if (!wants) {
        uv_read_stop(&c->io.stream);
        c->reading = 0;
        return;
    }
    int rc = uv_read_start(&c->io.stream, stream_alloc, stream_read);
    if (rc != 0) {
        conn_fail(c, "cannot read: %s", uv_strerror(rc));
        return;
    }
    c->reading = 1;
}

void pl_conn_stats_get(const pl_conn *c, pl_conn_stats *out) {
    out->sent = c->sent;
    out->received = c->received;
    out->queued = c->out.len;
    if (c->kind == CONN_STREAM && c->io_ready && !c->closed)
        out->queued += uv_stream_get_write_queue_size(&c->io.stream);
}

const char *pl_conn_peer(const pl_conn *c) {
    return c->kind == CONN_CHANNEL ? c->name : c->peer;
}

void pl_conn_set_linger(pl_conn *c, uint64_t ms) {
    if (c) c->linger_ms = ms;
}

static void linger_over(uv_timer_t *timer) {
    pl_conn_close(timer->data, "refused"); /* nobody is told any more */
}

/* The owner hears of the close now; the socket stays open, unread, and is
 * closed by the redelivery timer, which has nothing left to deliver. */
void pl_conn_close_after(pl_conn *c, uint64_t ms, const char *reason) {
    if (!c || c->closed || c->lingering) return;
    if (ms == 0 || c->connecting) {
        pl_conn_close(c, reason);
        return;
    }
    c->lingering = 1;
    if (c->kind == CONN_STREAM && c->reading) {
        uv_read_stop(&c->io.stream);
        c->reading = 0;
    }
    /* What was sent before (a refusal's reason) still leaves; nothing
     * more can be sent (pl_conn_send refuses a lingering conn). */
    uv_timer_start(&c->redeliver, linger_over, ms, 0);
    pl_conn_handler handler = c->handler;
    memset(&c->handler, 0, sizeof c->handler); /* bytes_arrived stops */
    if (handler.on_close) handler.on_close(c, reason, handler.ud);
}

void pl_conn_set_max_message(pl_conn *c, size_t max) {
    if (!c) return;
    c->max_message = max;
    if (c->kind != CONN_STREAM) return;
    size_t limit = max > SIZE_MAX - PL_FRAME_HEADER_MAX
                       ? SIZE_MAX : max + PL_FRAME_HEADER_MAX;
    /* never below what is buffered: pl_buf assumes len <= limit */
    c->in.limit = limit < c->in.len ? c->in.len : limit;
}

/* ---- streams: reading and writing ---------------------------------------- */

static void stream_alloc(uv_handle_t *handle, size_t hint, uv_buf_t *buf) {
    (void)hint;
    pl_conn *c = handle->data;
    size_t room = c->in.limit - c->in.len;
    size_t want = room < READ_CHUNK ? room : READ_CHUNK;
    if (want == 0 || pl_buf_reserve(&c->in, want) != 0) {
        *buf = uv_buf_init(NULL, 0); /* the read callback gets UV_ENOBUFS */
        return;
    }
    size_t avail = c->in.cap - c->in.len;
    buf->base = c->in.data + c->in.len;
    buf->len = avail < room ? avail : room;
}

static void stream_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf) {
    (void)buf; /* it is the tail of c->in */
    pl_conn *c = stream->data;
    if (c->closed || n == 0) return;
    if (n > 0) {
        c->in.len += (size_t)n;
        bytes_arrived(c);
    } else if (n == UV_EOF) {
        pl_conn_close(c, PEER_CLOSED);
    } else if (n == UV_ENOBUFS) {
        pl_conn_close(c, OUT_OF_MEMORY);
    } else {
        conn_fail(c, "read error: %s (%s)", uv_err_name((int)n),
                  uv_strerror((int)n));
    }
}

static void stream_written(uv_write_t *req, int status) {
    pl_conn *c = req->data;
    c->write_in_flight = 0;
    c->writing.len = 0;
    if (c->closed) {
        conn_release(c);
        return;
    }
    trim_if_idle(&c->writing);
    if (status < 0) {
        conn_fail(c, "write error: %s (%s)", uv_err_name(status),
                  uv_strerror(status));
        return;
    }
    if (c->out.len > 0) start_flush(c);
}

/* Hands everything queued to one uv_write. libuv writes what the socket
 * takes now and the rest when it becomes writable; meanwhile new frames
 * gather in `out` for the next write. */
static void stream_flush(pl_conn *c) {
    swap_storage(&c->writing, &c->out); /* `writing` was empty */
    uv_buf_t b;
    b.base = c->writing.data;
    b.len = c->writing.len;
    c->write_req.data = c;
    int rc = uv_write(&c->write_req, &c->io.stream, &b, 1, stream_written);
    if (rc != 0) {
        c->writing.len = 0;
        conn_fail(c, "write error: %s (%s)", uv_err_name(rc), uv_strerror(rc));
        return;
    }
    c->write_in_flight = 1;
}

/* ---- streams: one blocking wait -------------------------------------------- */

/* Blocks until fd is ready for `events` or the deadline (uv_hrtime, ns)
 * passes: 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, uint64_t deadline) {
    for (;;) {
        uint64_t now = uv_hrtime();
        if (now >= deadline) return 0;
        uint64_t ms = (deadline - now + 999999) / 1000000;
        struct pollfd p = {.fd = fd, .events = events};
        int rc = poll(&p, 1, ms > INT_MAX ? INT_MAX : (int)ms);
        if (rc > 0) return 1;
        if (rc < 0 && errno != EINTR) return -1;
    }
}

/* Writes everything queued, now. A write cut short leaves the stream in the
 * middle of a frame, so every failure closes the conn. */
static int write_queued_now(pl_conn *c, int fd, uint64_t deadline, char *err,
                            size_t errlen) {
    size_t done = 0;
    while (done < c->out.len) {
        ssize_t n = send(fd, c->out.data + done, c->out.len - done,
                         MSG_NOSIGNAL);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        int ready = 0;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            ready = wait_fd(fd, POLLOUT, deadline);
        if (ready > 0) continue;
        conn_fail(c, "write error: %s", ready == 0 ? "timed out" : strerror(errno));
        pl_set_err(err, errlen, "connection closed (%s)",
                ready == 0 ? "write timed out" : "write error");
        return -1;
    }
    c->out.len = 0;
    return 0;
}

/* Reads what the socket has into `in`, waiting for it up to the deadline. */
static int read_some_now(pl_conn *c, int fd, uint64_t deadline, char *err,
                         size_t errlen) {
    size_t room = c->in.limit - c->in.len;
    size_t want = room < READ_CHUNK ? room : READ_CHUNK;
    if (want == 0 || pl_buf_reserve(&c->in, want) != 0) {
        pl_conn_close(c, OUT_OF_MEMORY);
        pl_set_err(err, errlen, "connection closed (%s)", OUT_OF_MEMORY);
        return -1;
    }
    for (;;) {
        ssize_t n = recv(fd, c->in.data + c->in.len, want, 0);
        if (n > 0) {
            c->in.len += (size_t)n;
            return 0;
        }
        if (n == 0) {
            pl_conn_close(c, PEER_CLOSED);
            pl_set_err(err, errlen, "connection closed (%s)", PEER_CLOSED);
            return -1;
        }
        if (errno == EINTR) continue;
        int ready = -1;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            ready = wait_fd(fd, POLLIN, deadline);
        if (ready > 0) continue;
        if (ready == 0) {
            pl_set_err(err, errlen, "no message within the time allowed");
            return -1;
        }
        conn_fail(c, "read error: %s", strerror(errno));
        pl_set_err(err, errlen, "connection closed (read error)");
        return -1;
    }
}

int pl_conn_wait_message(pl_conn *c, double timeout, pl_buf *out, char *err,
                         size_t errlen) {
    uv_os_fd_t fd;
    if (!c || c->closed || c->connecting || c->lingering) {
        pl_set_err(err, errlen, "connection closed");
        return -1;
    }
    if (c->kind != CONN_STREAM || uv_fileno(&c->io.handle, &fd) != 0) {
        pl_set_err(err, errlen, "only a stream socket can be waited on");
        return -1;
    }
    /* libuv still holds bytes to write: ours would overtake them. */
    if (uv_stream_get_write_queue_size(&c->io.stream) > 0) {
        pl_set_err(err, errlen, "a write is still in progress");
        return -1;
    }
    uint64_t deadline = uv_hrtime() + (uint64_t)(timeout * 1e9);
    if (write_queued_now(c, fd, deadline, err, errlen) != 0) return -1;
    for (;;) {
        pl_frame f;
        size_t used = 0;
        char why[200];
        pl_frame_status status = PL_FRAME_INCOMPLETE;
        if (c->in.len > 0)
            status = pl_frame_parse((uint8_t *)c->in.data, c->in.len,
                                    c->max_message, &f, &used, why, sizeof why);
        if (status == PL_FRAME_INVALID) {
            reject_frame(c, why);
            pl_set_err(err, errlen, "bad frame: %s", why);
            return -1;
        }
        if (status == PL_FRAME_INCOMPLETE) {
            if (read_some_now(c, fd, deadline, err, errlen) != 0) return -1;
            continue;
        }
        if (f.opcode != PL_OP_BINARY && f.opcode != PL_OP_TEXT) {
            frame_arrived(c, &f); /* a ping is answered, a close closes */
            if (c->closed) {
                pl_set_err(err, errlen, "connection closed (%s)", PEER_CLOSED);
                return -1;
            }
            pl_buf_consume(&c->in, used);
            continue;
        }
        int rc = pl_buf_append(out, f.payload, f.len);
        pl_buf_consume(&c->in, used);
        if (rc != 0) {
            pl_set_err(err, errlen, "%s", OUT_OF_MEMORY);
            return -1;
        }
        c->received++;
        /* What came after it goes to the handler, as usual. */
        if (c->in.len > 0 && c->handler.on_message)
            uv_timer_start(&c->redeliver, deliver_waiting, 0, 0);
        return 0;
    }
}

/* ---- streams: addresses ------------------------------------------------- */

/* Takes an address apart with the one parser (sockaddr.h). */
static int parse_address(const char *address, stream_address *a, char *err,
                         size_t errlen) {
    memset(a, 0, sizeof *a);
    if (pl_address_parse(address, &a->addr, err, errlen) != 0) return -1;
    if (a->addr.is_unix) return pl_endpoint_unix(&a->ep, a->addr.path, err, errlen);
    snprintf(a->host, sizeof a->host, "%s", a->addr.host);
    snprintf(a->port, sizeof a->port, "%d", a->addr.port);
    return 0;
}

/* Fills a->ep for a literal address, "localhost" or "" (every interface):
 * 0; 1 when the host is a name to look up. */
static int resolve_literal(stream_address *a) {
    return pl_address_endpoint(&a->addr, &a->ep);
}

/* The first address of a looked-up host, with the port put in. */
static int take_first_address(stream_address *a, const struct addrinfo *ai) {
    return pl_endpoint_from_addrinfo(&a->ep, ai, atoi(a->port));
}

/* ---- streams: listening --------------------------------------------------- */

static void listener_freed(uv_handle_t *handle) { free(handle->data); }

/* The socket file is unlinked before the descriptor is closed, so that a
 * newer socket at that path is never the one removed. */
static void listener_close_handle(pl_listener *l) {
    if (l->path[0]) unlink(l->path);
    uv_close(&l->io.handle, listener_freed);
}

static void listener_shutdown(pl_resource *res) {
    pl_listener_close((pl_listener *)((char *)res - offsetof(pl_listener, res)));
}

/* A TCP conn just accepted or connected: no Nagle delay, and a name that
 * says who is on the other end. */
static void tcp_established(pl_conn *c, int accepted) {
    uv_tcp_nodelay(&c->io.tcp, 1);
    if (!accepted) return;
    struct sockaddr_storage sa;
    int len = sizeof sa;
    if (uv_tcp_getpeername(&c->io.tcp, (struct sockaddr *)&sa, &len) == 0)
        pl_sockaddr_name((struct sockaddr *)&sa, c->peer, sizeof c->peer);
}

static void connection_arrived(uv_stream_t *server, int status) {
    pl_listener *l = server->data;
    if (status < 0) {
        pl_log(PL_LOG_WARNING, NULL, "%s: cannot accept a connection: %s",
               l->address, uv_strerror(status));
        return;
    }
    char name[CONN_NAME_SIZE];
    /* A long address only shortens the name used in log lines. */
    if (snprintf(name, sizeof name, "connection accepted on %s", l->address) < 0)
        name[0] = 0;
    pl_conn *c = stream_conn_new(l->host, name, l->is_tcp);
    if (!c) {
        /* Not accepted, libuv stops watching the listener until memory
         * comes back for the next one: nothing better can be done. */
        pl_log(PL_LOG_ERROR, NULL, "%s: out of memory accepting a "
               "connection", l->address);
        return;
    }
    /* A Unix peer has no address of its own: it is known by the socket. */
    snprintf(c->peer, sizeof c->peer, "%s", l->address);
    int rc = uv_accept(server, &c->io.stream);
    if (rc != 0) {
        pl_log(PL_LOG_WARNING, NULL, "%s: cannot accept a connection: %s",
               l->address, uv_strerror(rc));
        conn_discard(c);
        return;
    }
    if (l->is_tcp) {
        tcp_established(c, 1);
        if (snprintf(c->name, sizeof c->name, "connection from %s on %s",
                     c->peer, l->address) < 0)
            c->name[0] = 0;
    }
    l->on_accept(l, c, l->ud);
}

/* Binds a listening socket to a's endpoint (sockaddr.c) and hands it to
 * l's handle, noting the address it got: with port 0 the system picks one,
 * which is what the address says. 0, or a libuv error code. */
static int listener_bind(pl_listener *l, const stream_address *a) {
    const char *step; /* a mailbox's message does not name it */
    int fd = pl_endpoint_listen(&a->ep, SOMAXCONN, &step);
    if (fd < 0) return fd;
    int rc = l->is_tcp ? uv_tcp_open(&l->io.tcp, fd)
                       : uv_pipe_open(&l->io.pipe, fd);
    if (rc != 0) {
        if (!l->is_tcp) unlink(a->ep.path); /* before its descriptor goes */
        close(fd);
        return rc;
    }
    /* From here the handle owns fd, and closing it unlinks the path. */
    if (l->is_tcp)
        return pl_sockaddr_of_fd(fd, l->address, sizeof l->address) == 0
                   ? 0 : uv_translate_sys_error(errno);
    snprintf(l->path, sizeof l->path, "%s", a->ep.path);
    snprintf(l->address, sizeof l->address, "unix:%s", a->ep.path);
    return 0;
}

/* Fills a->ep for a TCP address to listen on, looking a host name up at
 * once (an actor starting may wait for its own mailbox). */
static int resolve_for_listening(stream_address *a, const char *address,
                                 char *err, size_t errlen) {
    if (a->ep.is_unix || resolve_literal(a) == 0) return 0;
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(a->host, a->port, &pl_sockaddr_stream_hints, &ai);
    if (rc != 0 || take_first_address(a, ai) != 0) {
        pl_set_err(err, errlen, "cannot listen on %s: %s", address,
                rc != 0 ? gai_strerror(rc) : "no IPv4 or IPv6 address");
        if (ai) freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    return 0;
}

pl_listener *pl_listen(pl_host *h, const char *address,
                       void (*on_accept)(pl_listener *l, pl_conn *c, void *ud),
                       void *ud, char *err, size_t errlen) {
    stream_address a;
    if (parse_address(address, &a, err, errlen) != 0 ||
        resolve_for_listening(&a, address, err, errlen) != 0)
        return NULL;
    pl_listener *l = calloc(1, sizeof *l);
    if (!l) {
        pl_set_err(err, errlen, "cannot listen on %s: out of memory", address);
        return NULL;
    }
    l->host = h;
    l->on_accept = on_accept;
    l->ud = ud;
    l->is_tcp = !a.ep.is_unix;
    int rc = l->is_tcp ? uv_tcp_init(h->loop, &l->io.tcp)
                       : uv_pipe_init(h->loop, &l->io.pipe, 0);
    if (rc != 0) {
        free(l);
        pl_set_err(err, errlen, "cannot listen on %s: %s", address,
                uv_strerror(rc));
        return NULL;
    }
    l->io.handle.data = l;
    rc = listener_bind(l, &a);
    if (rc == 0) rc = uv_listen(&l->io.stream, SOMAXCONN, connection_arrived);
    if (rc != 0) {
        if (l->is_tcp) pl_set_err(err, errlen, "cannot listen on %s: %s", address,
                               uv_strerror(rc));
        else pl_set_err(err, errlen, "cannot listen on unix:%s: %s", a.ep.path,
                     uv_strerror(rc));
        /* a path bound here and not listened on is unlinked by the close */
        listener_close_handle(l);
        return NULL;
    }
    pl_host_track(h, &l->res, listener_shutdown);
    return l;
}

const char *pl_listener_address(const pl_listener *l) { return l->address; }

/* Unlinks the socket file of a Unix listener (listener_close_handle). */
void pl_listener_close(pl_listener *l) {
    if (!l || l->closed) return;
    l->closed = 1;
    pl_host_untrack(&l->res);
    listener_close_handle(l);
}

void pl_listener_unref(pl_listener *l) {
    if (l && !l->closed) uv_unref(&l->io.handle);
}

/* ---- streams: connecting -------------------------------------------------- */

static void connected(uv_connect_t *req, int status) {
    pl_conn *c = req->data;
    if (c->closed) return; /* reported when the handles are closed */
    if (status < 0) {
        pl_set_err(c->connect_error, sizeof c->connect_error,
                   "cannot connect to %s: %s", c->name, uv_strerror(status));
        conn_discard(c);
        return;
    }
    if (c->is_tcp) tcp_established(c, 0);
    c->connecting = 0;
    void (*cb)(pl_conn *, const char *, void *) = c->on_connect;
    c->on_connect = NULL;
    cb(c, NULL, c->connect_ud);
}

static void connect_tcp(pl_conn *c, const stream_address *a) {
    c->connect_req.data = c;
    int rc = uv_tcp_connect(&c->connect_req, &c->io.tcp,
                            (const struct sockaddr *)&a->ep.sa, connected);
    if (rc != 0) {
        pl_set_err(c->connect_error, sizeof c->connect_error,
                   "cannot connect to %s: %s", c->name, uv_strerror(rc));
        conn_discard(c);
    }
}

static void host_resolved(uv_getaddrinfo_t *req, int status,
                          struct addrinfo *ai) {
    pl_conn *c = req->data;
    stream_address *a = c->resolving;
    c->resolving = NULL;
    int found = status == 0 && take_first_address(a, ai) == 0;
    if (ai) uv_freeaddrinfo(ai);
    if (c->closed) {
        free(a);
        conn_release(c);
        return;
    }
    if (!found) {
        pl_set_err(c->connect_error, sizeof c->connect_error,
                   "cannot connect to %s: %s", c->name,
                   status != 0 ? uv_strerror(status) : "no IPv4 or IPv6 address");
        free(a);
        conn_discard(c);
        return;
    }
    connect_tcp(c, a);
    free(a);
}

/* A host name is looked up in the thread pool, so the loop never waits. */
static void resolve_then_connect(pl_conn *c, const stream_address *a) {
    stream_address *copy = malloc(sizeof *copy);
    if (!copy) {
        pl_set_err(c->connect_error, sizeof c->connect_error,
                   "cannot connect to %s: out of memory", c->name);
        conn_discard(c);
        return;
    }
    *copy = *a;
    c->resolve_req.data = c;
    int rc = uv_getaddrinfo(c->host->loop, &c->resolve_req, host_resolved,
                            copy->host, copy->port,
                            &pl_sockaddr_stream_hints);
    if (rc != 0) {
        free(copy);
        pl_set_err(c->connect_error, sizeof c->connect_error,
                   "cannot connect to %s: %s", c->name, uv_strerror(rc));
        conn_discard(c);
        return;
    }
    c->resolving = copy;
}

/* Every outcome reaches on_connect from the loop, after pl_connect has
 * returned, except running out of memory for the conn itself. */
void pl_connect(pl_host *h, const char *address,
                void (*on_connect)(pl_conn *c, const char *err, void *ud),
                void *ud) {
    stream_address a;
    char why[200];
    int parsed = parse_address(address, &a, why, sizeof why);
    pl_conn *c = stream_conn_new(h, address, parsed == 0 && !a.ep.is_unix);
    if (!c) {
        char err[300];
        pl_set_err(err, sizeof err, "cannot connect to %.200s: out of memory",
                 address);
        on_connect(NULL, err, ud);
        return;
    }
    c->connecting = 1;
    c->on_connect = on_connect;
    c->connect_ud = ud;
    if (parsed != 0) {
        pl_set_err(c->connect_error, sizeof c->connect_error,
                   "cannot connect: %s", why);
        conn_discard(c);
        return;
    }
    if (a.ep.is_unix) {
        snprintf(c->name, sizeof c->name, "unix:%s", a.ep.path);
        snprintf(c->peer, sizeof c->peer, "%s", c->name);
        c->connect_req.data = c;
        uv_pipe_connect(&c->connect_req, &c->io.pipe, a.ep.path, connected);
    } else if (atoi(a.port) == 0) {
        pl_set_err(c->connect_error, sizeof c->connect_error,
                   "cannot connect to %s: port 0 names no listener", c->name);
        conn_discard(c);
    } else if (resolve_literal(&a) == 0) {
        connect_tcp(c, &a);
    } else {
        resolve_then_connect(c, &a);
    }
}

/* ---- channels ------------------------------------------------------------ */

pl_channel *pl_channel_new(void) {
    pl_channel *ch = calloc(1, sizeof *ch);
    if (!ch) return NULL;
    if (uv_mutex_init(&ch->lock) != 0) {
        free(ch);
        return NULL;
    }
    ch->refs = 1;
    for (int side = 0; side < 2; side++) pl_buf_init(&ch->ends[side].inbox, 0);
    return ch;
}

static void channel_unref(pl_channel *ch) {
    uv_mutex_lock(&ch->lock);
    int left = --ch->refs;
    uv_mutex_unlock(&ch->lock);
    if (left > 0) return;
    /* Nobody else can reach ch any more: no lock needed. */
    uv_mutex_destroy(&ch->lock);
    pl_buf_free(&ch->ends[0].inbox);
    pl_buf_free(&ch->ends[1].inbox);
    free(ch);
}

void pl_channel_release(pl_channel *ch) {
    if (ch) channel_unref(ch);
}

/* On close: marks the channel closed, wakes the peer so it notices, and
 * unhooks our async handle under the lock, so the peer's next flush cannot
 * reach it while it is being closed. Our queued output is dropped. */
static void channel_leave(pl_conn *c) {
    pl_channel *ch = c->channel;
    if (!ch) return;
    uv_mutex_lock(&ch->lock);
    ch->closed = 1;
    ch->ends[c->side].reader = NULL;
    uv_async_t *peer = ch->ends[1 - c->side].reader;
    if (peer) uv_async_send(peer);
    uv_mutex_unlock(&ch->lock);
    c->channel = NULL;
    channel_unref(ch);
}

/* Moves what waits in our inbox to `in` (swapping storage when `in` is
 * empty, which is the usual case); tells whether the peer has left. */
static int take_inbox(pl_conn *c, int *peer_left) {
    pl_channel *ch = c->channel;
    channel_end *mine = &ch->ends[c->side];
    int rc = 0;
    uv_mutex_lock(&ch->lock);
    if (c->in.len == 0) {
        swap_storage(&c->in, &mine->inbox);
    } else if (mine->inbox.len > 0) {
        rc = pl_buf_append(&c->in, mine->inbox.data, mine->inbox.len);
        if (rc == 0) mine->inbox.len = 0;
    }
    *peer_left = ch->closed;
    uv_mutex_unlock(&ch->lock);
    return rc;
}

static void channel_woken(uv_async_t *async) {
    pl_conn *c = async->data;
    if (c->closed || !c->handler.on_message) return; /* kept for later */
    int peer_left;
    if (take_inbox(c, &peer_left) != 0) {
        pl_conn_close(c, OUT_OF_MEMORY);
        return;
    }
    bytes_arrived(c);
    /* The peer's last messages are delivered before its close. */
    if (!c->closed && peer_left && c->in.len == 0)
        pl_conn_close(c, PEER_CLOSED);
}

/* One locked push of everything queued into the peer's inbox and one
 * wake-up. Before the peer attaches it simply waits there; once the peer
 * has left it is dropped, as a stream's would be. */
static void channel_flush(pl_conn *c) {
    pl_channel *ch = c->channel;
    channel_end *peer = &ch->ends[1 - c->side];
    int rc = 0;
    uv_mutex_lock(&ch->lock);
    if (!ch->closed) {
        if (peer->inbox.len == 0) swap_storage(&peer->inbox, &c->out);
        else rc = pl_buf_append(&peer->inbox, c->out.data, c->out.len);
        if (rc == 0 && peer->reader) uv_async_send(peer->reader);
    }
    uv_mutex_unlock(&ch->lock);
    c->out.len = 0;
    trim_if_idle(&c->out);
    if (rc != 0) pl_conn_close(c, OUT_OF_MEMORY);
}

pl_conn *pl_channel_attach(pl_host *h, pl_channel *ch, int side) {
    if (!ch || (side != 0 && side != 1)) return NULL;
    char name[CONN_NAME_SIZE];
    snprintf(name, sizeof name, "channel side %d", side);
    pl_conn *c = conn_new(h, CONN_CHANNEL, name);
    if (!c) return NULL;
    if (uv_async_init(h->loop, &c->io.wake, channel_woken) != 0) {
        conn_discard(c);
        return NULL;
    }
    c->io.wake.data = c;
    c->io_ready = 1;
    c->open_handles++;
    uv_mutex_lock(&ch->lock);
    int taken = ch->ends[side].attached;
    if (!taken) {
        ch->ends[side].attached = 1;
        ch->ends[side].reader = &c->io.wake;
        ch->refs++;
    }
    uv_mutex_unlock(&ch->lock);
    if (taken) {
        conn_discard(c);
        return NULL;
    }
    c->channel = ch;
    c->side = side;
    /* What was written before now is delivered once on_message is set
     * (pl_conn_set_handler wakes us). */
    return c;
}
