/* conn.c: the mailbox transports behind pl_conn (see conn.h): Unix stream
 * sockets between processes and in-memory channels between two threads.
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
 * the process; the first stream conn sets SIGPIPE to "ignore" (unless the
 * program installed its own handler) so the write fails with EPIPE instead
 * and only that conn closes. */
#include "conn.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "buf.h"
#include "frame.h"
#include "log.h"

#define READ_CHUNK ((size_t)64 << 10)
/* A buffer left empty but larger than this is given back to the allocator,
 * so one huge message does not pin its memory for the conn's lifetime. */
#define KEEP_BUFFER_MAX ((size_t)1 << 20)
#define CONN_NAME_SIZE 160
#define SOCKET_PATH_SIZE sizeof(((struct sockaddr_un *)0)->sun_path)

#define PEER_CLOSED "peer closed the connection"
#define OUT_OF_MEMORY "out of memory"

typedef enum conn_kind { CONN_STREAM, CONN_CHANNEL } conn_kind;

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
        uv_pipe_t pipe;   /* stream */
        uv_async_t wake;  /* channel: the other side's writes wake us */
    } io;
    uv_write_t write_req;
    uv_connect_t connect_req;

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

    uint64_t sent, received;
};

struct pl_listener {
    pl_resource res;
    pl_host *host;
    uv_pipe_t pipe;
    void (*on_accept)(pl_listener *l, pl_conn *c, void *ud);
    void *ud;
    char address[SOCKET_PATH_SIZE + 5]; /* "unix:PATH" */
    int closed;
};

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

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

/* ---- process-wide setup ------------------------------------------------ */

static uv_once_t sigpipe_once = UV_ONCE_INIT;

static void ignore_sigpipe(void) {
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) != 0 || sa.sa_handler != SIG_DFL) return;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);
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

/* libuv cancels a pending write (calling its callback) before it runs the
 * stream's close callback, but both counts are checked so that the order
 * does not matter. */
static void free_when_unused(pl_conn *c) {
    if (c->open_handles == 0 && !c->write_in_flight) conn_free(c);
}

static void conn_handle_closed(uv_handle_t *handle) {
    pl_conn *c = handle->data;
    if (--c->open_handles > 0) return;
    if (c->on_connect) report_connect_failure(c);
    free_when_unused(c);
}

static void channel_leave(pl_conn *c);

void pl_conn_close(pl_conn *c, const char *reason) {
    if (!c || c->closed) return;
    c->closed = 1;
    pl_host_untrack(&c->res);
    if (c->kind == CONN_CHANNEL) channel_leave(c);
    uv_close((uv_handle_t *)&c->flush, conn_handle_closed);
    uv_close((uv_handle_t *)&c->redeliver, conn_handle_closed);
    if (c->io_ready) uv_close(&c->io.handle, conn_handle_closed);
    if (c->connecting) {
        /* Nobody holds this conn yet: its creator hears through on_connect
         * once the handles are closed (conn_handle_closed). */
        if (!c->connect_error[0] &&
            snprintf(c->connect_error, sizeof c->connect_error,
                     "cannot connect to %s: %s", c->name, reason) < 0)
            c->connect_error[0] = 0; /* a long text is cut, never lost */
        return;
    }
    pl_conn_handler handler = c->handler;
    memset(&c->handler, 0, sizeof c->handler);
    if (handler.on_close) handler.on_close(c, reason, handler.ud);
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void conn_fail(pl_conn *c, const char *fmt, ...) {
    char reason[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
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

static pl_conn *stream_conn_new(pl_host *h, const char *name) {
    uv_once(&sigpipe_once, ignore_sigpipe);
    pl_conn *c = conn_new(h, CONN_STREAM, name);
    if (!c) return NULL;
    if (uv_pipe_init(h->loop, &c->io.pipe, 0) != 0) {
        conn_discard(c);
        return NULL;
    }
    c->io.pipe.data = c;
    c->io_ready = 1;
    c->open_handles++;
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

static void reject_frame(pl_conn *c, const char *why) {
    pl_log(PL_LOG_WARNING, NULL, "%s: bad frame, closing the connection: %s",
           c->name, why);
    conn_fail(c, "bad frame: %s", why);
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
    if (!c || c->closed || c->connecting) {
        set_err(err, errlen, "connection closed");
        return -1;
    }
    if (len > c->max_message) {
        set_err(err, errlen, "message of %zu bytes exceeds the limit of %zu "
                "bytes", len, c->max_message);
        return -1;
    }
    if (queue_frame(c, PL_OP_BINARY, payload, len) != 0) {
        set_err(err, errlen, OUT_OF_MEMORY);
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
    int wants = c->handler.on_message != NULL;
    if (wants && (c->kind == CONN_CHANNEL || c->in.len > 0))
        uv_timer_start(&c->redeliver, deliver_waiting, 0, 0);
    if (c->kind == CONN_CHANNEL || c->connecting || wants == c->reading)
        return;
    if (!wants) {
        uv_read_stop((uv_stream_t *)&c->io.pipe);
        c->reading = 0;
        return;
    }
    int rc = uv_read_start((uv_stream_t *)&c->io.pipe, stream_alloc,
                           stream_read);
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
        out->queued += uv_stream_get_write_queue_size(
            (const uv_stream_t *)&c->io.pipe);
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
        free_when_unused(c);
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
    int rc = uv_write(&c->write_req, (uv_stream_t *)&c->io.pipe, &b, 1,
                      stream_written);
    if (rc != 0) {
        c->writing.len = 0;
        conn_fail(c, "write error: %s (%s)", uv_err_name(rc), uv_strerror(rc));
        return;
    }
    c->write_in_flight = 1;
}

/* ---- streams: addresses, listening, connecting --------------------------- */

/* The socket path of "unix:PATH" or of a bare path. Anything with a colon
 * before its first slash ("tcp://...", "host:port") is another kind of
 * address, refused rather than taken for a file name. */
static int unix_path_of(const char *address, char *path, char *err,
                        size_t errlen) {
    const char *p = address;
    if (strncmp(address, "unix:", 5) == 0) {
        p = address + 5;
    } else {
        const char *colon = strchr(address, ':');
        const char *slash = strchr(address, '/');
        if (colon && (!slash || colon < slash)) {
            set_err(err, errlen, "address '%s' is not a Unix socket address "
                    "(use unix:PATH or a path)", address);
            return -1;
        }
    }
    size_t len = strlen(p);
    if (len == 0) {
        set_err(err, errlen, "address '%s' has an empty socket path", address);
        return -1;
    }
    if (len >= SOCKET_PATH_SIZE) {
        set_err(err, errlen, "socket path is too long (%zu bytes, at most "
                "%zu): %.60s...", len, SOCKET_PATH_SIZE - 1, p);
        return -1;
    }
    memcpy(path, p, len + 1);
    return 0;
}

/* A socket file nobody listens on, left by a process that died: connecting
 * is refused. A live listener (even with a full backlog: EAGAIN, as the
 * probe does not block) or a file that is not a socket is left alone; the
 * live listener sees the probe as a connection closed at once. */
static int socket_file_is_stale(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode)) return 0;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int stale = connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 &&
                errno == ECONNREFUSED;
    close(fd);
    return stale;
}

static int bind_unix(uv_pipe_t *pipe, const char *path) {
    int rc = uv_pipe_bind(pipe, path);
    if (rc == UV_EADDRINUSE && socket_file_is_stale(path) && unlink(path) == 0)
        rc = uv_pipe_bind(pipe, path);
    return rc;
}

static void listener_freed(uv_handle_t *handle) { free(handle->data); }

static void listener_shutdown(pl_resource *res) {
    pl_listener_close((pl_listener *)((char *)res - offsetof(pl_listener, res)));
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
    pl_conn *c = stream_conn_new(l->host, name);
    if (!c) {
        /* Not accepted, libuv stops watching the listener until memory
         * comes back for the next one: nothing better can be done. */
        pl_log(PL_LOG_ERROR, NULL, "%s: out of memory accepting a "
               "connection", l->address);
        return;
    }
    int rc = uv_accept(server, (uv_stream_t *)&c->io.pipe);
    if (rc != 0) {
        pl_log(PL_LOG_WARNING, NULL, "%s: cannot accept a connection: %s",
               l->address, uv_strerror(rc));
        conn_discard(c);
        return;
    }
    l->on_accept(l, c, l->ud);
}

pl_listener *pl_listen(pl_host *h, const char *address,
                       void (*on_accept)(pl_listener *l, pl_conn *c, void *ud),
                       void *ud, char *err, size_t errlen) {
    char path[SOCKET_PATH_SIZE];
    if (unix_path_of(address, path, err, errlen) != 0) return NULL;
    pl_listener *l = calloc(1, sizeof *l);
    if (!l) {
        set_err(err, errlen, "cannot listen on unix:%s: out of memory", path);
        return NULL;
    }
    l->host = h;
    l->on_accept = on_accept;
    l->ud = ud;
    snprintf(l->address, sizeof l->address, "unix:%s", path);
    int rc = uv_pipe_init(h->loop, &l->pipe, 0);
    if (rc != 0) {
        free(l);
        set_err(err, errlen, "cannot listen on unix:%s: %s", path,
                uv_strerror(rc));
        return NULL;
    }
    l->pipe.data = l;
    rc = bind_unix(&l->pipe, path);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&l->pipe, SOMAXCONN, connection_arrived);
    if (rc != 0) {
        set_err(err, errlen, "cannot listen on unix:%s: %s", path,
                uv_strerror(rc));
        /* a path bound here and not listened on is unlinked by the close */
        uv_close((uv_handle_t *)&l->pipe, listener_freed);
        return NULL;
    }
    pl_host_track(h, &l->res, listener_shutdown);
    return l;
}

/* libuv unlinks the socket file it bound when the pipe closes (before
 * closing the descriptor, so a newer socket at that path is never removed). */
void pl_listener_close(pl_listener *l) {
    if (!l || l->closed) return;
    l->closed = 1;
    pl_host_untrack(&l->res);
    uv_close((uv_handle_t *)&l->pipe, listener_freed);
}

void pl_listener_unref(pl_listener *l) {
    if (l && !l->closed) uv_unref((uv_handle_t *)&l->pipe);
}

static void connected(uv_connect_t *req, int status) {
    pl_conn *c = req->data;
    if (c->closed) return; /* reported when the handles are closed */
    if (status < 0) {
        snprintf(c->connect_error, sizeof c->connect_error,
                 "cannot connect to %s: %s", c->name, uv_strerror(status));
        conn_discard(c);
        return;
    }
    c->connecting = 0;
    void (*cb)(pl_conn *, const char *, void *) = c->on_connect;
    c->on_connect = NULL;
    cb(c, NULL, c->connect_ud);
}

/* Every outcome reaches on_connect from the loop, after pl_connect has
 * returned, except running out of memory for the conn itself. */
void pl_connect(pl_host *h, const char *address,
                void (*on_connect)(pl_conn *c, const char *err, void *ud),
                void *ud) {
    pl_conn *c = stream_conn_new(h, address);
    if (!c) {
        char err[300];
        snprintf(err, sizeof err, "cannot connect to %.200s: out of memory",
                 address);
        on_connect(NULL, err, ud);
        return;
    }
    c->connecting = 1;
    c->on_connect = on_connect;
    c->connect_ud = ud;
    char path[SOCKET_PATH_SIZE], why[200];
    if (unix_path_of(address, path, why, sizeof why) != 0) {
        snprintf(c->connect_error, sizeof c->connect_error,
                 "cannot connect: %s", why);
        conn_discard(c);
        return;
    }
    snprintf(c->name, sizeof c->name, "unix:%s", path);
    c->connect_req.data = c;
    uv_pipe_connect(&c->connect_req, &c->io.pipe, path, connected);
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
