/* conn.c: the mailbox transports behind pl_conn (see conn.h): framing over
 * net.c's stream sockets (Unix, or TCP for other machines and consoles)
 * between processes, and in-memory channels between two threads.
 *
 * How it fits: every message between actors is one frame (frame.h). A conn
 * only moves frames; the envelope inside is the codec's business (value.h)
 * and what to do with it is Lua's (lconn.c wraps a conn for pulsar.core).
 * A stream conn owns no socket: net.c's pl_stream does (reading, writing,
 * its queue, connecting, accepting, closing, lingering), as it does for
 * Lua's servers and streams, and a listener is a pl_server. What is left
 * here is what makes a byte stream a mailbox link. The two transports
 * differ only at their ends:
 *   - reading: a stream's bytes (on_data) are appended to the conn's read
 *     buffer `in`; a channel swaps its inbox (filled by the other thread)
 *     into `in`. Then both call bytes_arrived(), which parses and delivers
 *     every whole frame and keeps a partial one for later;
 *   - writing: pl_conn_send appends a frame to `out`; flush_queued() hands
 *     `out` to one pl_stream_write (stream) or one locked push into the
 *     peer's inbox plus one uv_async_send (channel).
 *
 * Why batch with a uv_prepare_t: an actor typically answers many messages
 * per loop iteration. Writing each as it is sent would cost one system call
 * (or one mutex + eventfd wake-up) per message; the prepare handle runs
 * just before the loop blocks for I/O, so everything sent during an
 * iteration leaves in one write, whatever callback sent it. The prepare is
 * only active while something is queued, so an idle conn costs nothing.
 *
 * Delivery starts when a handler with on_message is set: until then the
 * stream is paused (bytes stay in the kernel) or the inbox keeps them
 * (channel), so a conn handed around before its owner is ready loses
 * nothing. A peer's close is noticed the same way, through reading.
 *
 * Ownership and lifetime:
 *   - a conn is malloc'd with its libuv handles inside it (never in a Lua
 *     userdata) and is a pl_resource of its host, closed with "shutting
 *     down" at exit; its stream is the conn's alone, and ends with it;
 *   - pl_conn_close marks it closed, untracks it, aborts its stream (whose
 *     queue is dropped), starts closing its handles and calls on_close
 *     synchronously, before returning: the close rule of net.h, which both
 *     layers keep. The memory is freed by the last handle close callback, so
 *     a conn is still safe to look at (send fails, stats work) until the
 *     current callback returns;
 *   - a stream's end from outside (the peer, a read or write error) reaches
 *     the conn as the stream's on_eof or on_lost, and closes it;
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
 * Addresses are sockaddr.h's (pl_address_parse: unix:PATH, HOST:PORT,
 * [IPv6]:PORT, :PORT). pl_listen looks a host name up at once (it runs while
 * an actor starts); pl_connect through net.c, in the thread pool. TCP
 * streams have TCP_NODELAY (net.c): a mailbox sends small messages that are
 * waited for, and the batching above already does what Nagle's would.
 *
 * Lingering (pl_conn_close_after, pl_conn_set_linger): a peer that has to be
 * turned away, such as one failing the TCP mailbox's handshake, is not told
 * at once. For the owner the conn closes then and there (on_close runs);
 * what was queued is handed to the stream, which keeps the socket open,
 * unread, and closes it after the delay (pl_stream_close_after), so that
 * someone guessing learns each answer slowly. Frames sent before the close
 * still leave (the handshake's "busy" refusal tells its reason that way);
 * nothing after. A channel, which no stranger reaches, closes at once. */
#include "conn.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "frame.h"
#include "log.h"
#include "net.h"
#include "sockaddr.h"

#define READ_CHUNK ((size_t)64 << 10)
/* A buffer left empty but larger than this is given back to the allocator,
 * so one huge message does not pin its memory for the conn's lifetime. */
#define KEEP_BUFFER_MAX ((size_t)1 << 20)
#define CONN_NAME_SIZE 320

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
    char name[CONN_NAME_SIZE]; /* for log lines */
    char peer[CONN_NAME_SIZE]; /* who is on the other end (pl_conn_peer) */
    pl_conn_handler handler;
    size_t max_message;

    pl_buf in;  /* bytes received, not yet delivered */
    pl_buf out; /* frames queued since the last flush */

    uv_prepare_t flush;   /* active while `out` waits */
    uv_timer_t redeliver; /* due when a new on_message must catch up */
    pl_stream *stream;    /* stream: NULL once it has ended */
    uv_async_t wake;      /* channel: the other side's writes wake us */
    pl_channel *channel;  /* channel: NULL once this side has left */
    int side;

    int closed;
    int stream_busy;    /* the stream's queue is not written yet: `out`
                           gathers until it is (stream_drained) */
    int open_handles;   /* initialised handles whose close has not run */
    uint64_t linger_ms; /* pl_conn_set_linger: how a bad frame closes */
    uint64_t sent, received;
};

struct pl_listener {
    pl_server *server;
    void (*on_accept)(pl_listener *l, pl_conn *c, void *ud);
    void *ud;
    char path[PL_SOCKADDR_PATH_MAX]; /* Unix: the file to unlink at close */
};

/* Exchanges the storage of two buffers, keeping each one's limit: the way
 * bytes change hands between `out`, inboxes and `in` without a copy, each
 * side recycling the other's emptied allocation. */
static void swap_storage(pl_buf *a, pl_buf *b) {
    pl_buf t = *a;
    a->data = b->data, a->len = b->len, a->cap = b->cap;
    b->data = t.data, b->len = t.len, b->cap = t.cap;
}

static void trim_if_idle(pl_buf *b) {
    if (b->len == 0 && b->cap > KEEP_BUFFER_MAX) pl_buf_free(b);
}

/* ---- lifetime ------------------------------------------------------------ */

static void conn_handle_closed(uv_handle_t *handle) {
    pl_conn *c = handle->data;
    if (--c->open_handles > 0) return;
    pl_buf_free(&c->in);
    pl_buf_free(&c->out);
    free(c);
}

static void channel_leave(pl_conn *c);

/* The stream is the conn's alone: it ends with the conn, telling nobody. */
static void stream_drop(pl_conn *c) {
    pl_stream *s = c->stream;
    if (!s) return;
    c->stream = NULL;
    pl_stream_set_handler(s, NULL);
    pl_stream_abort(s, NULL);
}

void pl_conn_close(pl_conn *c, const char *reason) {
    if (!c || c->closed) return;
    c->closed = 1;
    pl_host_untrack(&c->res);
    if (c->kind == CONN_CHANNEL) channel_leave(c);
    stream_drop(c);
    uv_close((uv_handle_t *)&c->flush, conn_handle_closed);
    uv_close((uv_handle_t *)&c->redeliver, conn_handle_closed);
    if (c->wake.data) uv_close((uv_handle_t *)&c->wake, conn_handle_closed);
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
    char reason[600];
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

/* A conn with its own handles, tracked by h; the transport adds its end.
 * Its read buffer has no cap: the frame parser bounds every frame by
 * max_message, so `in` holds at most one partial frame and one read. */
static pl_conn *conn_new(pl_host *h, conn_kind kind, const char *name) {
    pl_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->host = h;
    c->kind = kind;
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(c->peer, sizeof c->peer, "%s", name);
    c->max_message = PL_FRAME_MAX_DEFAULT;
    pl_buf_init(&c->in, 0);
    pl_buf_init(&c->out, 0);
    uv_prepare_init(h->loop, &c->flush); /* neither can fail */
    uv_timer_init(h->loop, &c->redeliver);
    c->flush.data = c->redeliver.data = c;
    c->open_handles = 2;
    pl_host_track(h, &c->res, conn_shutdown);
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

static void channel_flush(pl_conn *c);
static void channel_woken(uv_async_t *async);

/* Everything queued goes to the stream in one write: it tries the socket
 * at once and copies what the kernel does not take into its queue. While
 * that queue waits for a slow peer, `out` gathers everything sent since,
 * for one write once it is written (the stream's high-water mark is one
 * byte, so pl_stream_write says so, and on_drain when it is empty). */
static void stream_flush(pl_conn *c) {
    char err[300];
    if (c->stream_busy) return;
    uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
    int rc = pl_stream_write(c->stream, &b, 1, err, sizeof err);
    c->out.len = 0;
    trim_if_idle(&c->out);
    if (rc < 0) pl_conn_close(c, err);
    else if (rc == 1) c->stream_busy = 1;
}

/* Runs once per loop iteration, just before the loop blocks, while anything
 * is queued: all the frames sent since the last run leave together. */
static void flush_queued(uv_prepare_t *prepare) {
    pl_conn *c = prepare->data;
    uv_prepare_stop(prepare);
    if (c->out.len == 0) return;
    if (c->kind == CONN_CHANNEL) channel_flush(c);
    else stream_flush(c);
}

static void start_flush(pl_conn *c) {
    if (!c->closed && !uv_is_active((uv_handle_t *)&c->flush))
        uv_prepare_start(&c->flush, flush_queued);
}

int pl_conn_send(pl_conn *c, const char *payload, size_t len, char *err,
                 size_t errlen) {
    if (!c || c->closed) {
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
    if (c->kind == CONN_CHANNEL) channel_woken(&c->wake);
    else if (!c->closed) bytes_arrived(c);
}

void pl_conn_set_handler(pl_conn *c, const pl_conn_handler *handler) {
    if (!c || c->closed) return;
    if (handler) c->handler = *handler;
    else memset(&c->handler, 0, sizeof c->handler);
    int wants = c->handler.on_message != NULL;
    if (wants && (c->kind == CONN_CHANNEL || c->in.len > 0))
        uv_timer_start(&c->redeliver, deliver_waiting, 0, 0);
    if (!c->stream) return;
    if (wants) pl_stream_resume_reading(c->stream);
    else pl_stream_pause_reading(c->stream);
}

void pl_conn_stats_get(const pl_conn *c, pl_conn_stats *out) {
    out->sent = c->sent;
    out->received = c->received;
    out->queued = c->out.len;
    if (c->stream) out->queued += pl_stream_write_queue(c->stream);
}

const char *pl_conn_peer(const pl_conn *c) { return c->peer; }

void pl_conn_set_linger(pl_conn *c, uint64_t ms) {
    if (c) c->linger_ms = ms;
}

/* The owner hears of the close now; what was queued goes to the stream,
 * which lingers (net.h), and the conn closes as pl_conn_close does. */
void pl_conn_close_after(pl_conn *c, uint64_t ms, const char *reason) {
    if (!c || c->closed) return;
    if (ms == 0) {
        pl_conn_close(c, reason);
        return;
    }
    pl_stream *s = c->stream;
    c->stream_busy = 0; /* all that was sent goes, behind the stream's queue */
    if (c->out.len > 0) flush_queued(&c->flush);
    if (s && c->stream == s) { /* the flush did not end it */
        c->stream = NULL;
        pl_stream_set_handler(s, NULL);
        pl_stream_close_after(s, ms);
    }
    pl_conn_close(c, reason);
}

void pl_conn_set_max_message(pl_conn *c, size_t max) {
    if (c) c->max_message = max;
}

/* ---- streams: framing over net.c ----------------------------------------- */

static void stream_data(pl_stream *s, const char *data, size_t len, void *ud) {
    (void)s;
    pl_conn *c = ud;
    if (pl_buf_append(&c->in, data, len) != 0) {
        pl_conn_close(c, OUT_OF_MEMORY);
        return;
    }
    bytes_arrived(c);
}

/* A peer that shuts its side is gone, for a mailbox: nothing more can be
 * asked of it, nor answered. */
static int stream_eof(pl_stream *s, void *ud) {
    (void)s;
    pl_conn_close(ud, PEER_CLOSED);
    return 1; /* closed already */
}

static void stream_drained(pl_stream *s, void *ud) {
    (void)s;
    pl_conn *c = ud;
    c->stream_busy = 0;
    if (c->out.len > 0) start_flush(c);
}

static void stream_lost(pl_stream *s, const char *err, void *ud) {
    (void)s;
    pl_conn *c = ud;
    c->stream = NULL; /* it has ended: nothing to drop */
    pl_conn_close(c, err ? err : PEER_CLOSED);
}

/* A conn over a stream just accepted or connected; paused until its owner
 * sets on_message. NULL (the stream aborted) when out of memory. */
static pl_conn *stream_conn_new(pl_host *h, pl_stream *s, const char *name,
                                const char *peer) {
    pl_conn *c = conn_new(h, CONN_STREAM, name);
    if (!c) {
        pl_stream_abort(s, OUT_OF_MEMORY);
        return NULL;
    }
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    c->stream = s;
    pl_stream_set_write_limits(s, 1, 0); /* see stream_flush */
    pl_stream_pause_reading(s);
    pl_stream_handler sh = {stream_data, stream_eof, stream_drained,
                            stream_lost, c};
    pl_stream_set_handler(s, &sh);
    return c;
}

/* ---- streams: listening -------------------------------------------------- */

/* From pl_server_close, whoever called it (pl_listener_close or the host's
 * shutdown). The socket file goes first, while its descriptor is still
 * open, so that a newer socket at that path is never the one removed. */
static void listener_closed(pl_server *srv, void *ud) {
    (void)srv;
    pl_listener *l = ud;
    if (l->path[0]) unlink(l->path);
    free(l);
}

static void listener_accepted(pl_server *srv, pl_stream *s, void *ud) {
    pl_listener *l = ud;
    const char *address = pl_server_address(srv);
    char name[CONN_NAME_SIZE], peer[PL_SOCKADDR_NAME_MAX];
    /* A Unix peer has no address of its own: it is known by the socket. */
    if (l->path[0] || pl_stream_name(s, 1, peer, sizeof peer) != 0) {
        snprintf(peer, sizeof peer, "%s", address);
        snprintf(name, sizeof name, "connection accepted on %s", address);
    } else {
        snprintf(name, sizeof name, "connection from %s on %s", peer, address);
    }
    pl_conn *c = stream_conn_new(pl_server_host(srv), s, name, peer);
    if (!c) {
        pl_log(PL_LOG_ERROR, NULL, "%s: out of memory accepting a connection",
               address);
        return;
    }
    l->on_accept(l, c, l->ud);
}

/* The endpoint to listen on; a host name is looked up at once (an actor
 * starting may wait for its own mailbox). */
static int listen_endpoint(const char *address, pl_endpoint *ep, char *err,
                           size_t errlen) {
    pl_address a;
    if (pl_address_parse(address, &a, err, errlen) != 0) return -1;
    if (pl_address_endpoint(&a, ep) == 0) return 0;
    char port[8];
    snprintf(port, sizeof port, "%d", a.port);
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(a.host, port, &pl_sockaddr_stream_hints, &ai);
    int found = rc == 0 && pl_endpoint_from_addrinfo(ep, ai, a.port) == 0;
    if (ai) freeaddrinfo(ai);
    if (found) return 0;
    return pl_set_err(err, errlen, "cannot listen on %s: %s", address,
                      rc != 0 ? gai_strerror(rc) : "no IPv4 or IPv6 address");
}

pl_listener *pl_listen(pl_host *h, const char *address,
                       void (*on_accept)(pl_listener *l, pl_conn *c, void *ud),
                       void *ud, char *err, size_t errlen) {
    pl_endpoint ep;
    char name[PL_SOCKADDR_NAME_MAX];
    if (listen_endpoint(address, &ep, err, errlen) != 0) return NULL;
    pl_listener *l = calloc(1, sizeof *l);
    if (!l) {
        pl_set_err(err, errlen, "cannot listen on %s: out of memory", address);
        return NULL;
    }
    int fd = pl_net_bind(&ep, SOMAXCONN, name, sizeof name, err, errlen);
    if (fd < 0) {
        free(l);
        return NULL;
    }
    l->on_accept = on_accept;
    l->ud = ud;
    if (ep.is_unix) snprintf(l->path, sizeof l->path, "%s", ep.path);
    pl_server_handler sh = {listener_accepted, listener_closed, l};
    l->server = pl_server_open(h, fd, 1, SOMAXCONN, &sh, err, errlen);
    if (!l->server) {
        pl_net_unbind(fd, ep.is_unix ? ep.path : NULL);
        free(l);
        return NULL;
    }
    return l;
}

const char *pl_listener_address(const pl_listener *l) {
    return pl_server_address(l->server);
}

/* Frees l, and unlinks its socket file (listener_closed). */
void pl_listener_close(pl_listener *l) {
    if (l) pl_server_close(l->server);
}

void pl_listener_unref(pl_listener *l) {
    if (l) pl_server_unref(l->server);
}

/* ---- streams: connecting -------------------------------------------------- */

typedef struct connect_request {
    pl_host *host;
    void (*on_connect)(pl_conn *c, const char *err, void *ud);
    void *ud;
    char address[CONN_NAME_SIZE];
} connect_request;

static void stream_connected(pl_stream *s, const char *err, void *ud) {
    connect_request r = *(connect_request *)ud;
    free(ud);
    if (!s) {
        r.on_connect(NULL, err, r.ud);
        return;
    }
    pl_conn *c = stream_conn_new(r.host, s, r.address, r.address);
    if (c) {
        r.on_connect(c, NULL, r.ud);
        return;
    }
    char why[CONN_NAME_SIZE + 40];
    pl_set_err(why, sizeof why, "cannot connect to %s: out of memory", r.address);
    r.on_connect(NULL, why, r.ud);
}

void pl_connect(pl_host *h, const char *address,
                void (*on_connect)(pl_conn *c, const char *err, void *ud),
                void *ud) {
    connect_request *r = malloc(sizeof *r);
    if (!r) {
        char err[300];
        pl_set_err(err, sizeof err, "cannot connect to %.200s: out of memory",
                   address);
        on_connect(NULL, err, ud);
        return;
    }
    r->host = h;
    r->on_connect = on_connect;
    r->ud = ud;
    snprintf(r->address, sizeof r->address, "%s", address);
    pl_stream_connect_to(h, address, 0, stream_connected, r);
}

/* ---- streams: one blocking wait -------------------------------------------- */

/* Reads what the socket has into `in`, waiting for it up to the deadline.
 * 0, or -1 with err (the conn closed, unless the time ran out). */
static int read_some_now(pl_conn *c, uint64_t deadline, char *err,
                         size_t errlen) {
    char why[200];
    if (pl_buf_reserve(&c->in, READ_CHUNK) != 0) {
        pl_conn_close(c, OUT_OF_MEMORY);
        return pl_set_err(err, errlen, "connection closed (%s)", OUT_OF_MEMORY);
    }
    long n = pl_stream_read_now(c->stream, c->in.data + c->in.len, READ_CHUNK,
                                deadline, why, sizeof why);
    if (n > 0) {
        c->in.len += (size_t)n;
        return 0;
    }
    if (n == PL_STREAM_TIMED_OUT)
        return pl_set_err(err, errlen, "no message within the time allowed");
    pl_conn_close(c, n == 0 ? PEER_CLOSED : why);
    return pl_set_err(err, errlen, "connection closed (%s)",
                      n == 0 ? PEER_CLOSED : "read error");
}

/* The first whole frame in `in`, read for as long as the deadline allows:
 * 1 with *f and *used, 0 (err set) when it failed. */
static int next_frame_now(pl_conn *c, uint64_t deadline, pl_frame *f,
                          size_t *used, char *err, size_t errlen) {
    for (;;) {
        char why[200];
        pl_frame_status status = PL_FRAME_INCOMPLETE;
        *used = 0;
        if (c->in.len > 0)
            status = pl_frame_parse((uint8_t *)c->in.data, c->in.len,
                                    c->max_message, f, used, why, sizeof why);
        if (status == PL_FRAME_COMPLETE) return 1;
        if (status == PL_FRAME_INVALID) {
            reject_frame(c, why);
            pl_set_err(err, errlen, "bad frame: %s", why);
            return 0;
        }
        if (read_some_now(c, deadline, err, errlen) != 0) return 0;
    }
}

int pl_conn_wait_message(pl_conn *c, double timeout, pl_buf *out, char *err,
                         size_t errlen) {
    char why[200];
    if (!c || c->closed) return pl_set_err(err, errlen, "connection closed");
    if (!c->stream)
        return pl_set_err(err, errlen, "only a stream socket can be waited on");
    /* the stream still holds bytes to write: ours would overtake them */
    if (pl_stream_write_queue(c->stream) > 0)
        return pl_set_err(err, errlen, "a write is still in progress");
    uint64_t deadline = uv_hrtime() + (uint64_t)(timeout * 1e9);
    if (c->out.len > 0 &&
        pl_stream_write_now(c->stream, c->out.data, c->out.len, deadline, why,
                            sizeof why) != 0) {
        /* cut short, the stream may stop in the middle of a frame */
        conn_fail(c, "%s", why);
        return pl_set_err(err, errlen, "connection closed (%s)", why);
    }
    c->out.len = 0;
    for (;;) {
        pl_frame f;
        size_t used;
        if (!next_frame_now(c, deadline, &f, &used, err, errlen)) return -1;
        if (f.opcode != PL_OP_BINARY && f.opcode != PL_OP_TEXT) {
            frame_arrived(c, &f); /* a ping is answered, a close closes */
            if (c->closed)
                return pl_set_err(err, errlen, "connection closed (%s)", PEER_CLOSED);
            pl_buf_consume(&c->in, used);
            continue;
        }
        int rc = pl_buf_append(out, f.payload, f.len);
        pl_buf_consume(&c->in, used);
        if (rc != 0) return pl_set_err(err, errlen, "%s", OUT_OF_MEMORY);
        c->received++;
        /* What came after it goes to the handler, as usual. */
        if (c->in.len > 0 && c->handler.on_message)
            uv_timer_start(&c->redeliver, deliver_waiting, 0, 0);
        return 0;
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
    if (uv_async_init(h->loop, &c->wake, channel_woken) != 0) {
        pl_conn_close(c, "discarded"); /* no handler: nobody is told */
        return NULL;
    }
    c->wake.data = c; /* from here pl_conn_close closes it */
    c->open_handles++;
    uv_mutex_lock(&ch->lock);
    int taken = ch->ends[side].attached;
    if (!taken) {
        ch->ends[side].attached = 1;
        ch->ends[side].reader = &c->wake;
        ch->refs++;
    }
    uv_mutex_unlock(&ch->lock);
    if (taken) {
        pl_conn_close(c, "discarded");
        return NULL;
    }
    c->channel = ch;
    c->side = side;
    /* What was written before now is delivered once on_message is set
     * (pl_conn_set_handler wakes us). */
    return c;
}
