/* net.c: TCP and Unix stream sockets on a host's loop (see net.h): the one
 * code that reads, writes, connects, accepts and closes them.
 *
 * How it fits: lnet.c turns these objects into Lua transports and servers;
 * lua/pulsar/net.lua turns those into pulsar.create_server, protocols and
 * streams. The mailbox's stream conns (conn.c) are frames over these
 * streams, its listeners these servers. Addresses, their parsing and the
 * making of listening sockets are sockaddr.c's; here they are only put
 * into words.
 *
 * Writing. pl_stream_write first tries the socket directly (uv_try_write):
 * a small answer on a healthy connection costs one system call and no copy.
 * What the socket does not take is copied into a write request queued with
 * uv_write, so the caller's bytes may go away at once; later writes queue
 * behind it, keeping order. The queue is counted in bytes not yet handed to
 * the kernel (uv_stream_get_write_queue_size); crossing the high-water mark
 * is reported to the caller of the write that crossed it, and going back
 * under the low-water mark to the handler's on_drain, from the write
 * callback. Nothing is ever dropped but by abort or an error.
 *
 * Files (pl_stream_sendfile). A file range is sent by sendfile(2), the
 * kernel copying from the page cache to the socket, with no pass through
 * our memory. libuv offers no "tell me when this uv_tcp_t is writable"
 * that a raw sendfile could wait on (a uv_poll_t on a descriptor libuv
 * already watches is not allowed), so writability is waited for the one
 * way libuv has, a uv_write:
 *   - a file range, and every write behind it, waits in the stream's own
 *     list of parts (out_part), in order, until uv's queue is empty;
 *   - then sendfile(2) runs on the non-blocking socket, as often as the
 *     socket takes bytes;
 *   - when it says EAGAIN (the socket is full), the next chunk of the file
 *     (64 KiB at most) is read into a write request and given to uv_write,
 *     which waits for writability; its callback goes back to sendfile.
 * So at most one chunk per stream is in memory, and bytes never overtake
 * one another. The file's bytes not yet sent count in the write queue
 * (pl_stream_write_queue) from the moment they are queued, so the high
 * and low water marks and pause_writing work for files as for bytes, and
 * the idle timeout sees sendfile's progress as the kernel taking bytes.
 * sendfile(2) and the chunk's pread(2) read the file on the loop's thread:
 * quick for files in the page cache (what a static server mostly sends),
 * a disk's latency otherwise, as nginx without thread pools. A file that
 * turns out shorter than the range asked ends the stream with an error:
 * its length was promised to the peer already.
 *
 * Reading. A stream reads while it has a handler and nobody paused it: the
 * owner (pl_stream_pause_reading), flow control (pl_stream_pause_for_flow,
 * until the queue drains) or its end. Bytes land in a read buffer shared
 * by every stream of the thread: libuv calls the allocation and the read
 * callbacks back to back, and the handler copies what it keeps (Lua
 * strings do), so one 64 KiB buffer serves them all.
 *
 * Idle timeout. A stream remembers when it last read or wrote something; a
 * timer, armed only while a timeout is set, fires once per timeout and
 * closes the stream if nothing moved since, rather than being restarted at
 * every read. Bytes going out count as moving: one large write drains in
 * a single uv_write, whose callback may come long after the timeout, so
 * each check also asks how much of the queue the kernel took since the
 * last one (the bytes ever queued minus those still queued), and any
 * progress is activity. A queue the peer takes nothing of for a whole
 * timeout (between one and two timeouts, checks being one timeout apart)
 * is dropped, with a warning: that peer does not read. Before dropping it
 * the stream looks once more, IDLE_GRACE_MS later: timers run before I/O
 * in a loop turn, so after the whole machine stood still (a frozen VM, the
 * peer with it) the first check would find no progress only because the
 * loop has not yet written what the peer read meanwhile.
 *
 * Ownership and lifetime:
 *   - a stream or server is malloc'd with its libuv handles inside and is a
 *     pl_resource of its host until its owner has heard of its end;
 *   - closing starts with uv_close; the owner hears of it (on_lost) by
 *     net.h's close rule: inside the owner's abort or close_after, else
 *     from the last close callback; the memory is freed when the handles,
 *     the queued write requests and a host name lookup are all done;
 *   - a stream stays a resource until its owner has heard of its end and
 *     its handles are closing (a lingering socket still needs closing);
 *     at host shutdown the resource's close reports the end at once,
 *     before the VM goes (a monitor's VM is closed before its loop turns
 *     again), and later callbacks only free memory.
 *
 * Lingering (pl_stream_close_after): the owner is done at once; the socket
 * stays open, unread, writing what was queued, and the idle timer (which
 * has nothing else to measure) closes it after the delay.
 *
 * Writing to a socket whose peer has gone raises SIGPIPE; the first stream
 * sets it to "ignore" (pl_sockaddr_ignore_sigpipe), so that the write fails
 * with EPIPE and only that stream ends. */
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/* How long a stream with writes pending gets for one more look before it
 * is dropped as idle (see the head). */
#define IDLE_GRACE_MS 200

#define READ_BUFFER_SIZE ((size_t)64 << 10)

/* The most of a file read into memory at once, when the socket is full. */
#define FILE_CHUNK_SIZE ((size_t)64 << 10)
/* The most one sendfile(2) call is asked for (Linux takes 2 GiB at most). */
#define SENDFILE_MAX ((uint64_t)1 << 30)

typedef struct write_req write_req;

/* A part of the output waiting behind a file (see the head): a file range
 * (fd >= 0), or bytes written after one, already copied in their request. */
typedef struct out_part {
    struct out_part *next;
    int fd;
    uint64_t offset, left; /* a file: the next byte, the bytes still to send */
    write_req *bytes;      /* bytes: the request, not yet given to uv_write */
} out_part;

typedef union stream_io {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
} stream_io;

struct pl_stream {
    pl_resource res;
    pl_host *host;
    stream_io io;
    uv_timer_t idle;
    uv_connect_t connect_req;
    uv_getaddrinfo_t resolve_req; /* connecting to a host name */
    uv_shutdown_t shutdown_req;
    pl_stream_handler handler;
    pl_connect_cb on_connect; /* while connecting */
    void *connect_ud;
    char name[PL_SOCKADDR_NAME_MAX + PL_ADDRESS_HOST_MAX]; /* the peer, as
                                            asked for, for connect errors */
    char error[512];            /* why it ended; empty when clean */
    size_t high_water, low_water;
    uint64_t idle_ms, last_active;
    uint64_t queued_bytes; /* ever queued, to uv or as parts (see idle_check) */
    out_part *parts, *parts_tail; /* output waiting behind a file */
    uint64_t parts_bytes;  /* bytes in parts, not yet given to uv or sent */
    uint64_t sent_seen;    /* of those, taken by the kernel at the last check */
    int idle_grace;        /* the last check found no progress: one more look */
    uint64_t connect_ms;          /* the connect timeout, for its message */
    int connect_port;             /* while a host name is looked up */
    int open_handles;   /* initialised handles whose close has not run */
    int pending_writes; /* uv_write requests whose callback has not run */
    unsigned is_unix : 1;
    unsigned connecting : 1;
    unsigned resolving : 1;   /* resolve_req is in flight */
    unsigned lingering : 1;   /* pl_stream_close_after: unread, then closed */
    unsigned reading : 1;     /* uv_read_start is in effect */
    unsigned user_paused : 1; /* pl_stream_pause_reading */
    unsigned flow_paused : 1; /* pl_stream_pause_for_flow */
    unsigned above_high : 1;  /* reported above high water, not drained */
    unsigned eof_seen : 1;
    unsigned eof_sent : 1;    /* write_eof asked */
    unsigned closing : 1;     /* close asked: flushing, then closed */
    unsigned closed : 1;      /* handles closing */
    unsigned reported : 1;    /* the owner has heard of the end */
    unsigned tracked : 1;     /* a resource of its host */
    unsigned has_buffer : 1;  /* holds a reference to the read buffer */
    unsigned pumping : 1;     /* send_parts is running */
    unsigned eof_waiting : 1; /* write_eof asked while parts were waiting */
};

struct pl_server {
    pl_resource res;
    pl_host *host;
    stream_io io;
    pl_server_handler handler;
    char address[PL_SOCKADDR_NAME_MAX];
    uint64_t idle_ms;
    int is_unix;
    int closed;
};

struct write_req {
    uv_write_t req;
    pl_stream *stream;
    size_t len;
    char data[];
};


/* "connection refused (ECONNREFUSED)" */
static const char *uv_reason(int rc, char *buf, size_t len) {
    snprintf(buf, len, "%s (%s)", uv_strerror(rc), uv_err_name(rc));
    return buf;
}

/* One read buffer per thread, shared by its streams (see the head
 * comment): allocated with the first stream, freed with the last. */
static _Thread_local struct {
    char *data;
    int users;
} read_buffer;

static int read_buffer_take(void) {
    if (!read_buffer.data && !(read_buffer.data = malloc(READ_BUFFER_SIZE)))
        return -1;
    read_buffer.users++;
    return 0;
}

static void read_buffer_release(void) {
    if (--read_buffer.users > 0) return;
    free(read_buffer.data);
    read_buffer.data = NULL;
}

/* ---- bound sockets ------------------------------------------------------------ */

int pl_net_bind(const pl_endpoint *ep, int backlog, char *name,
                size_t namelen, char *err, size_t errlen) {
    char wanted[PL_SOCKADDR_NAME_MAX], why[120];
    const char *step;
    pl_endpoint_name(ep, wanted, sizeof wanted);
    int fd = pl_endpoint_listen(ep, backlog, &step);
    if (fd < 0) {
        pl_set_err(err, errlen, "cannot %s %s: %s", step, wanted,
                uv_reason(fd, why, sizeof why));
        return -1;
    }
    if (ep->is_unix || pl_sockaddr_of_fd(fd, name, namelen) != 0)
        snprintf(name, namelen, "%s", wanted);
    return fd;
}

void pl_net_unbind(int fd, const char *path) {
    /* Unlinked first, so that a newer socket at that path is never the
     * one removed once our descriptor is gone. */
    if (path) unlink(path);
    if (fd >= 0) close(fd);
}

/* ---- streams: lifetime ------------------------------------------------------ */

static void stream_shutdown(pl_resource *res);
static void update_reading(pl_stream *s);
static void stream_alloc(uv_handle_t *handle, size_t hint, uv_buf_t *buf);
static void stream_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf);

static pl_stream *stream_of_res(pl_resource *res) {
    return (pl_stream *)((char *)res - offsetof(pl_stream, res));
}

/* A stream with its handles initialised, tracked by h. */
static pl_stream *stream_new(pl_host *h, int is_unix) {
    pl_sockaddr_ignore_sigpipe();
    pl_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    if (read_buffer_take() != 0) {
        free(s);
        return NULL;
    }
    s->has_buffer = 1;
    s->host = h;
    s->is_unix = is_unix;
    s->high_water = PL_NET_HIGH_WATER;
    s->low_water = PL_NET_HIGH_WATER / 4;
    int rc = is_unix ? uv_pipe_init(h->loop, &s->io.pipe, 0)
                     : uv_tcp_init(h->loop, &s->io.tcp);
    if (rc != 0) {
        read_buffer_release();
        free(s);
        return NULL;
    }
    uv_timer_init(h->loop, &s->idle);
    s->io.handle.data = s->idle.data = s;
    s->open_handles = 2;
    pl_host_track(h, &s->res, stream_shutdown);
    s->tracked = 1;
    return s;
}

/* Drops the output still waiting behind a file (the stream is ending). */
static void drop_parts(pl_stream *s) {
    while (s->parts) {
        out_part *p = s->parts;
        s->parts = p->next;
        if (p->fd >= 0) close(p->fd);
        free(p->bytes);
        free(p);
    }
    s->parts_tail = NULL;
    s->parts_bytes = 0;
}

static void stream_free(pl_stream *s) {
    drop_parts(s);
    if (s->has_buffer) read_buffer_release();
    free(s);
}

static void free_when_unused(pl_stream *s) {
    if (s->open_handles == 0 && s->pending_writes == 0 && !s->resolving)
        stream_free(s);
}

/* A stream stays its host's resource until both its owner has heard of
 * its end and its handles are closing: the host's shutdown must still
 * report an end not yet reported, and close a lingering socket. */
static void untrack_when_done(pl_stream *s) {
    if (s->tracked && s->reported && s->closed) {
        s->tracked = 0;
        pl_host_untrack(&s->res);
    }
}

/* Tells the owner, once: a connect that failed, or the end of a stream. */
static void report_end(pl_stream *s) {
    if (s->reported) return;
    s->reported = 1;
    untrack_when_done(s);
    const char *err = s->error[0] ? s->error : NULL;
    if (s->on_connect) {
        pl_connect_cb cb = s->on_connect;
        s->on_connect = NULL;
        cb(NULL, err ? err : "cannot connect: closed", s->connect_ud);
        return;
    }
    pl_stream_handler h = s->handler;
    memset(&s->handler, 0, sizeof s->handler);
    if (h.on_lost) h.on_lost(s, err, h.ud);
}

static void handle_closed(uv_handle_t *handle) {
    pl_stream *s = handle->data;
    if (--s->open_handles > 0) return;
    report_end(s);
    free_when_unused(s);
}

/* Starts closing the handles; `err` (or NULL) is what the owner will hear. */
static void stream_finish(pl_stream *s, const char *err) {
    if (s->closed) return;
    s->closed = 1;
    if (err && !s->error[0]) snprintf(s->error, sizeof s->error, "%s", err);
    drop_parts(s);
    if (s->resolving) uv_cancel((uv_req_t *)&s->resolve_req);
    uv_close(&s->io.handle, handle_closed);
    uv_close((uv_handle_t *)&s->idle, handle_closed);
    untrack_when_done(s);
}

static void stream_shutdown(pl_resource *res) {
    pl_stream *s = stream_of_res(res);
    s->tracked = 0;
    pl_host_untrack(res);
    if (s->on_connect && !s->error[0])
        pl_set_err(s->error, sizeof s->error, "cannot connect to %s: shutting "
                   "down", s->name);
    stream_finish(s, "shutting down");
    report_end(s);
}

/* The owner's own end: reported before returning (see net.h). */
void pl_stream_abort(pl_stream *s, const char *err) {
    if (!s) return;
    stream_finish(s, err);
    report_end(s);
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void stream_fail(pl_stream *s, const char *fmt, ...) {
    /* Only formats the reason (as every C error is, through pl_vset_err)
     * and finishes the stream with it. */
    char reason[300];
    va_list ap;
    va_start(ap, fmt);
    pl_vset_err(reason, sizeof reason, fmt, ap);
    va_end(ap);
    stream_finish(s, reason);
}

void pl_stream_close(pl_stream *s) {
    if (!s || s->closed || s->closing || s->lingering) return;
    s->closing = 1;
    if (s->reading) {
        uv_read_stop(&s->io.stream);
        s->reading = 0;
    }
    if (s->pending_writes == 0 && !s->parts) stream_finish(s, NULL);
    /* else the last write callback finishes it */
}

int pl_stream_is_closing(const pl_stream *s) {
    return s->closing || s->closed || s->lingering;
}

static void linger_over(uv_timer_t *timer) {
    stream_finish(timer->data, NULL); /* nobody to tell any more */
}

void pl_stream_close_after(pl_stream *s, uint64_t ms) {
    if (!s || s->closed) return;
    if (ms == 0) {
        pl_stream_abort(s, NULL);
        return;
    }
    s->lingering = 1;
    s->idle_ms = 0; /* the idle timer measures the delay now */
    uv_timer_start(&s->idle, linger_over, ms, 0);
    update_reading(s);
    report_end(s);
}

/* ---- streams: reading --------------------------------------------------------- */

static void touch(pl_stream *s) {
    if (s->idle_ms) s->last_active = uv_now(s->host->loop);
}

/* Starts or stops reading to match the stream's state. */
static void update_reading(pl_stream *s) {
    int want = s->handler.on_data && !s->user_paused && !s->flow_paused &&
               !s->eof_seen && !s->closing && !s->closed && !s->connecting &&
               !s->lingering;
    if (want == (int)s->reading) return;
    if (!want) {
        uv_read_stop(&s->io.stream);
        s->reading = 0;
        return;
    }
    char why[120];
    int rc = uv_read_start(&s->io.stream, stream_alloc, stream_read);
    if (rc != 0) {
        stream_fail(s, "cannot read: %s", uv_reason(rc, why, sizeof why));
        return;
    }
    s->reading = 1;
}

static void stream_alloc(uv_handle_t *handle, size_t hint, uv_buf_t *buf) {
    (void)handle, (void)hint;
    buf->base = read_buffer.data;
    buf->len = READ_BUFFER_SIZE;
}

static void eof_arrived(pl_stream *s) {
    s->eof_seen = 1;
    update_reading(s);
    int stay = s->handler.on_eof ? s->handler.on_eof(s, s->handler.ud) : 0;
    if (!stay) pl_stream_close(s);
}

static void stream_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf) {
    pl_stream *s = stream->data;
    if (s->closed || n == 0) return;
    if (n > 0) {
        touch(s);
        if (s->handler.on_data)
            s->handler.on_data(s, buf->base, (size_t)n, s->handler.ud);
        return;
    }
    char why[120];
    if (n == UV_EOF) eof_arrived(s);
    else stream_fail(s, "read error: %s", uv_reason((int)n, why, sizeof why));
}

void pl_stream_set_handler(pl_stream *s, const pl_stream_handler *handler) {
    if (!s || s->closed) return;
    if (handler) s->handler = *handler;
    else memset(&s->handler, 0, sizeof s->handler);
    update_reading(s);
}

void pl_stream_pause_reading(pl_stream *s) {
    s->user_paused = 1;
    update_reading(s);
}

void pl_stream_resume_reading(pl_stream *s) {
    s->user_paused = 0;
    update_reading(s);
}

void pl_stream_pause_for_flow(pl_stream *s) {
    if (!s->above_high) return; /* nothing to wait for */
    s->flow_paused = 1;
    update_reading(s);
}

/* ---- streams: writing ------------------------------------------------------------ */

size_t pl_stream_write_queue(const pl_stream *s) {
    if (s->closed) return 0;
    return uv_stream_get_write_queue_size(&s->io.stream) + (size_t)s->parts_bytes;
}

void pl_stream_set_write_limits(pl_stream *s, size_t high, size_t low) {
    if (high == 0) high = PL_NET_HIGH_WATER;
    if (low == 0 || low > high) low = high / 4;
    s->high_water = high;
    s->low_water = low;
}

void pl_stream_get_write_limits(const pl_stream *s, size_t *high, size_t *low) {
    *high = s->high_water;
    *low = s->low_water;
}

static void send_parts(pl_stream *s);

static void drained(pl_stream *s) {
    s->above_high = 0;
    if (s->flow_paused) {
        s->flow_paused = 0;
        update_reading(s);
    }
    if (s->handler.on_drain) s->handler.on_drain(s, s->handler.ud);
}

static void written(uv_write_t *req, int status) {
    write_req *w = (write_req *)req;
    pl_stream *s = w->stream;
    free(w);
    s->pending_writes--;
    if (s->closed) {
        free_when_unused(s);
        return;
    }
    char why[120];
    if (status < 0) {
        stream_fail(s, "write error: %s", uv_reason(status, why, sizeof why));
        return;
    }
    touch(s);
    if (s->parts) send_parts(s);
    if (s->closed) return;
    if (s->above_high && pl_stream_write_queue(s) <= s->low_water) drained(s);
    if (s->closing && s->pending_writes == 0 && !s->parts && !s->closed)
        stream_finish(s, NULL);
}

/* A write request holding bufs past their first `done` bytes, or NULL
 * (out of memory: the stream is finished with that error). */
static write_req *copy_rest(pl_stream *s, const uv_buf_t *bufs, unsigned nbufs,
                            size_t done, size_t total, char *err, size_t errlen) {
    size_t len = total - done;
    write_req *w = malloc(sizeof *w + len);
    if (!w) {
        pl_set_err(err, errlen, "out of memory queueing %zu bytes", len);
        stream_finish(s, err);
        return NULL;
    }
    w->stream = s;
    w->len = len;
    size_t at = 0;
    for (unsigned i = 0; i < nbufs; i++) {
        size_t skip = done < bufs[i].len ? done : bufs[i].len;
        done -= skip;
        memcpy(w->data + at, bufs[i].base + skip, bufs[i].len - skip);
        at += bufs[i].len - skip;
    }
    return w;
}

/* Hands a request to uv_write (which takes it over). 0, or -1 with err
 * and the stream finished. */
static int give_to_uv(pl_stream *s, write_req *w, char *err, size_t errlen) {
    uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
    int rc = uv_write(&w->req, &s->io.stream, &b, 1, written);
    if (rc != 0) {
        char why[120];
        free(w);
        pl_set_err(err, errlen, "write error: %s", uv_reason(rc, why, sizeof why));
        stream_finish(s, err);
        return -1;
    }
    s->pending_writes++;
    return 0;
}

/* Appends a part behind those waiting (see the head). */
static void append_part(pl_stream *s, out_part *p, uint64_t len) {
    p->next = NULL;
    if (s->parts_tail) s->parts_tail->next = p;
    else s->parts = p;
    s->parts_tail = p;
    s->parts_bytes += len;
    s->queued_bytes += len;
}

/* Queues what the socket did not take (bufs past `done` bytes): to uv, or
 * behind the parts waiting. 0 or -1 (out of memory, or libuv refused). */
static int queue_rest(pl_stream *s, const uv_buf_t *bufs, unsigned nbufs,
                      size_t done, size_t total, char *err, size_t errlen) {
    write_req *w = copy_rest(s, bufs, nbufs, done, total, err, errlen);
    if (!w) return -1;
    if (!s->parts) {
        if (give_to_uv(s, w, err, errlen) != 0) return -1;
        s->queued_bytes += w->len;
        return 0;
    }
    out_part *p = calloc(1, sizeof *p);
    if (!p) {
        free(w);
        pl_set_err(err, errlen, "out of memory queueing %zu bytes", total - done);
        stream_finish(s, err);
        return -1;
    }
    p->fd = -1;
    p->bytes = w;
    append_part(s, p, w->len);
    return 0;
}

/* Reports crossing the high-water mark to the writer: 1, else 0. */
static int crossed_high(pl_stream *s) {
    if (!s->above_high && pl_stream_write_queue(s) > s->high_water) {
        s->above_high = 1;
        return 1;
    }
    return 0;
}

int pl_stream_write(pl_stream *s, const uv_buf_t *bufs, unsigned nbufs,
                    char *err, size_t errlen) {
    if (s->closed || s->closing || s->eof_sent || s->lingering) {
        pl_set_err(err, errlen, "the transport is closed");
        return -1;
    }
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++) total += bufs[i].len;
    if (total == 0) return 0;
    if (total > UINT32_MAX) {
        pl_set_err(err, errlen, "a write of %zu bytes is too large", total);
        return -1;
    }
    size_t done = 0;
    if (s->pending_writes == 0 && !s->parts) {
        int n = uv_try_write(&s->io.stream, bufs, nbufs);
        if (n < 0 && n != UV_EAGAIN) {
            char why[120];
            pl_set_err(err, errlen, "write error: %s", uv_reason(n, why, sizeof why));
            stream_finish(s, err);
            return -1;
        }
        if (n > 0) done = (size_t)n;
    }
    touch(s);
    if (done < total && queue_rest(s, bufs, nbufs, done, total, err, errlen) != 0)
        return -1;
    return crossed_high(s);
}

/* ---- streams: files ----------------------------------------------------------- */

static void start_shutdown(pl_stream *s);

/* The part at the head is done with: unlinked and freed. */
static void pop_part(pl_stream *s) {
    out_part *p = s->parts;
    s->parts = p->next;
    if (!s->parts) s->parts_tail = NULL;
    if (p->fd >= 0) close(p->fd);
    free(p->bytes);
    free(p);
}

/* The file at the head is full: its next chunk goes through uv_write,
 * which waits for the socket (see the head). 0, or -1 (stream finished). */
static int send_chunk(pl_stream *s, out_part *p) {
    char err[300];
    size_t want = p->left < FILE_CHUNK_SIZE ? (size_t)p->left : FILE_CHUNK_SIZE;
    write_req *w = malloc(sizeof *w + want);
    if (!w) {
        stream_fail(s, "out of memory reading a file to send");
        return -1;
    }
    w->stream = s;
    size_t got = 0;
    while (got < want) {
        ssize_t n = pread(p->fd, w->data + got, want - got, (off_t)(p->offset + got));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            free(w);
            if (n == 0) stream_fail(s, "the file to send ended %llu bytes early",
                                    (unsigned long long)(p->left - got));
            else stream_fail(s, "cannot read the file to send: %s", strerror(errno));
            return -1;
        }
        got += (size_t)n;
    }
    w->len = got;
    p->offset += got;
    p->left -= got;
    s->parts_bytes -= got; /* now in uv's queue, counted there */
    if (give_to_uv(s, w, err, sizeof err) != 0) return -1;
    if (p->left == 0) pop_part(s);
    return 0;
}

/* Sends the file at the head with sendfile(2) while the socket takes it.
 * 1 when it is all sent, 0 when the rest waits for a chunk's write, -1
 * when the stream failed. */
static int send_file(pl_stream *s, out_part *p) {
    uv_os_fd_t sock;
    if (uv_fileno(&s->io.handle, &sock) != 0) {
        stream_fail(s, "cannot send a file: the transport has no socket");
        return -1;
    }
    while (p->left > 0) {
        off_t off = (off_t)p->offset;
        size_t ask = (size_t)(p->left < SENDFILE_MAX ? p->left : SENDFILE_MAX);
        ssize_t n = sendfile(sock, p->fd, &off, ask);
        if (n > 0) {
            p->offset += (uint64_t)n;
            p->left -= (uint64_t)n;
            s->parts_bytes -= (uint64_t)n;
            touch(s);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return send_chunk(s, p) == 0 ? 0 : -1;
        if (n == 0) stream_fail(s, "the file to send ended %llu bytes early",
                                (unsigned long long)p->left);
        else stream_fail(s, "write error: %s", strerror(errno));
        return -1;
    }
    return 1;
}

/* Moves the parts on, in order: bytes to uv_write at once, a file only
 * once uv's queue is empty. Not re-entered (a drain callback may write). */
static void send_parts(pl_stream *s) {
    if (s->pumping) return;
    s->pumping = 1;
    while (s->parts && !s->closed) {
        out_part *p = s->parts;
        if (p->fd < 0) {
            char err[300];
            write_req *w = p->bytes;
            p->bytes = NULL;
            s->parts_bytes -= w->len;
            pop_part(s);
            if (give_to_uv(s, w, err, sizeof err) != 0) break;
            continue;
        }
        if (s->pending_writes > 0) break; /* written() comes back here */
        int rc = send_file(s, p);
        if (rc <= 0) break;
        pop_part(s);
    }
    s->pumping = 0;
    if (s->closed) return;
    if (!s->parts && s->eof_waiting) start_shutdown(s);
    if (s->closed) return;
    if (s->above_high && pl_stream_write_queue(s) <= s->low_water) drained(s);
    if (s->closing && s->pending_writes == 0 && !s->parts && !s->closed)
        stream_finish(s, NULL);
}

/* The descriptor to send from: `path` opened, or a duplicate of fd (the
 * caller keeps its own); its size in *size. -1 with err. */
static int open_file(const char *path, int fd, uint64_t *size, char *err,
                     size_t errlen) {
    int own = path ? open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)
                   : fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0)
        return pl_set_err(err, errlen, "cannot open %s: %s",
                          path ? path : "the file", strerror(errno));
    struct stat st;
    const char *why = NULL;
    if (fstat(own, &st) != 0) why = strerror(errno);
    else if (!S_ISREG(st.st_mode)) why = "not a regular file";
    if (why) {
        close(own);
        return pl_set_err(err, errlen, "cannot send %s: %s", path ? path : "the file", why);
    }
    *size = (uint64_t)st.st_size;
    return own;
}

int pl_stream_sendfile(pl_stream *s, const char *path, int fd, uint64_t offset,
                       int64_t length, char *err, size_t errlen) {
    if (s->closed || s->closing || s->eof_sent || s->lingering)
        return pl_set_err(err, errlen, "the transport is closed");
    uint64_t size = 0;
    int own = open_file(path, fd, &size, err, errlen);
    if (own < 0) return -1;
    if (offset > size || (length >= 0 && (uint64_t)length > size - offset)) {
        close(own);
        return pl_set_err(err, errlen, "sendfile: the range %llu+%lld is past the "
                          "end of the file (%llu bytes)", (unsigned long long)offset,
                          (long long)length, (unsigned long long)size);
    }
    uint64_t len = length >= 0 ? (uint64_t)length : size - offset;
    if (len == 0) {
        close(own);
        return 0;
    }
    out_part *p = calloc(1, sizeof *p);
    if (!p) {
        close(own);
        return pl_set_err(err, errlen, "out of memory queueing a file");
    }
    p->fd = own;
    p->offset = offset;
    p->left = len;
    append_part(s, p, len);
    touch(s);
    send_parts(s);
    if (s->closed) return pl_set_err(err, errlen, "%s", s->error[0] ? s->error
                                     : "the transport is closed");
    return crossed_high(s);
}

static void shut_down(uv_shutdown_t *req, int status) {
    pl_stream *s = req->data;
    s->pending_writes--;
    if (s->closed) {
        free_when_unused(s);
        return;
    }
    char why[120];
    if (status < 0 && status != UV_ENOTCONN)
        stream_fail(s, "cannot shut the write side: %s",
                    uv_reason(status, why, sizeof why));
    else if (s->closing && s->pending_writes == 0)
        stream_finish(s, NULL);
}

/* The shutdown asked while parts waited, once they are sent. */
static void start_shutdown(pl_stream *s) {
    s->eof_waiting = 0;
    s->shutdown_req.data = s;
    int rc = uv_shutdown(&s->shutdown_req, &s->io.stream, shut_down);
    if (rc != 0) {
        char why[120];
        stream_fail(s, "cannot shut the write side: %s", uv_reason(rc, why, sizeof why));
        return;
    }
    s->pending_writes++;
}

int pl_stream_write_eof(pl_stream *s, char *err, size_t errlen) {
    if (s->closed || s->closing || s->lingering) {
        pl_set_err(err, errlen, "the transport is closed");
        return -1;
    }
    if (s->eof_sent) return 0;
    if (s->parts) { /* after the file, by send_parts */
        s->eof_sent = 1;
        s->eof_waiting = 1;
        return 0;
    }
    s->shutdown_req.data = s;
    int rc = uv_shutdown(&s->shutdown_req, &s->io.stream, shut_down);
    if (rc != 0) {
        char why[120];
        pl_set_err(err, errlen, "cannot shut the write side: %s",
                uv_reason(rc, why, sizeof why));
        return -1;
    }
    s->eof_sent = 1;
    s->pending_writes++; /* the shutdown request counts as a write */
    return 0;
}

/* ---- streams: idle timeout ----------------------------------------------------- */

/* Bytes of the write queue the kernel has taken so far: the progress of a
 * write in flight, which no callback reports until the write is whole. */
static uint64_t queue_sent(const pl_stream *s) {
    return s->queued_bytes - pl_stream_write_queue(s);
}

static void idle_check(uv_timer_t *timer) {
    pl_stream *s = timer->data;
    if (s->closed || !s->idle_ms) return;
    uint64_t now = uv_now(s->host->loop), sent = queue_sent(s);
    if (sent != s->sent_seen) { /* the peer is reading what we write */
        s->sent_seen = sent;
        s->last_active = now;
    }
    uint64_t quiet = now - s->last_active;
    if (quiet < s->idle_ms) {
        s->idle_grace = 0;
        uv_timer_start(timer, idle_check, s->idle_ms - quiet, 0);
        return;
    }
    if (s->pending_writes > 0 && !s->idle_grace) {
        s->idle_grace = 1; /* let the loop's I/O run first (see the head) */
        uv_timer_start(timer, idle_check, IDLE_GRACE_MS, 0);
        return;
    }
    /* Nothing moved for the whole timeout: a queue still waiting is one
     * the peer does not read, and is dropped. */
    if (s->pending_writes > 0) {
        char peer[PL_SOCKADDR_NAME_MAX] = "a peer";
        size_t unsent = pl_stream_write_queue(s);
        pl_stream_name(s, 1, peer, sizeof peer);
        if (unsent > 0)
            pl_log(PL_LOG_WARNING, s->host->name, "%s: closed after %.3g s "
                   "in which it read nothing; %zu bytes unsent", peer,
                   s->idle_ms / 1000.0, unsent);
        stream_fail(s, "idle for %.3g s with %zu bytes unsent",
                    s->idle_ms / 1000.0, unsent);
        return;
    }
    pl_stream_close(s);
}

void pl_stream_unref(pl_stream *s) {
    if (s->closed) return;
    uv_unref(&s->io.handle);
    uv_unref((uv_handle_t *)&s->idle);
}

void pl_stream_set_idle_timeout(pl_stream *s, double seconds) {
    if (s->closed) return;
    s->idle_ms = seconds > 0 ? (uint64_t)(seconds * 1000.0 + 0.5) : 0;
    if (seconds > 0 && s->idle_ms == 0) s->idle_ms = 1;
    if (!s->idle_ms) {
        uv_timer_stop(&s->idle);
        return;
    }
    s->last_active = uv_now(s->host->loop);
    s->sent_seen = queue_sent(s);
    uv_timer_start(&s->idle, idle_check, s->idle_ms, 0);
}

/* ---- streams: names ---------------------------------------------------------- */

int pl_stream_name(const pl_stream *s, int peer, char *out, size_t outlen) {
    if (s->closed) return -1;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (s->is_unix) {
        char path[PL_SOCKADDR_PATH_MAX + 1];
        size_t len = sizeof path;
        int rc = peer ? uv_pipe_getpeername(&s->io.pipe, path, &len)
                      : uv_pipe_getsockname(&s->io.pipe, path, &len);
        if (rc != 0 && rc != UV_ENOBUFS) return -1;
        if (rc != 0) len = 0;
        snprintf(out, outlen, "unix:%.*s", (int)len, path);
        return 0;
    }
    int len = sizeof ss;
    int rc = peer ? uv_tcp_getpeername(&s->io.tcp, (struct sockaddr *)&ss, &len)
                  : uv_tcp_getsockname(&s->io.tcp, (struct sockaddr *)&ss, &len);
    if (rc != 0) return -1;
    pl_sockaddr_name((struct sockaddr *)&ss, out, outlen);
    return 0;
}

/* ---- streams: blocking, outside the loop ------------------------------------- */

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

/* The socket, for the two calls below: only while nothing is queued, as
 * bytes written here would overtake the queue. */
static int blocking_fd(const pl_stream *s, char *err, size_t errlen) {
    uv_os_fd_t fd;
    if (s->closed || s->closing || s->lingering || s->connecting)
        return pl_set_err(err, errlen, "the transport is closed");
    if (uv_fileno(&s->io.handle, &fd) != 0)
        return pl_set_err(err, errlen, "the transport has no socket");
    if (pl_stream_write_queue(s) > 0)
        return pl_set_err(err, errlen, "a write is still in progress");
    return fd;
}

int pl_stream_write_now(pl_stream *s, const char *data, size_t len,
                        uint64_t deadline, char *err, size_t errlen) {
    int fd = blocking_fd(s, err, errlen);
    if (fd < 0) return -1;
    for (size_t done = 0; done < len;) {
        ssize_t n = send(fd, data + done, len - done, MSG_NOSIGNAL);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        int ready = -1;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            ready = wait_fd(fd, POLLOUT, deadline);
        if (ready > 0) continue;
        return pl_set_err(err, errlen, "write %s",
                          ready == 0 ? "timed out" : strerror(errno));
    }
    touch(s);
    return 0;
}

long pl_stream_read_now(pl_stream *s, char *buf, size_t len, uint64_t deadline,
                        char *err, size_t errlen) {
    int fd = blocking_fd(s, err, errlen);
    if (fd < 0) return -1;
    for (;;) {
        ssize_t n = recv(fd, buf, len, 0);
        if (n >= 0) {
            if (n > 0) touch(s);
            return (long)n;
        }
        if (errno == EINTR) continue;
        int ready = -1;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            ready = wait_fd(fd, POLLIN, deadline);
        if (ready > 0) continue;
        if (ready == 0) return PL_STREAM_TIMED_OUT;
        pl_set_err(err, errlen, "read error: %s", strerror(errno));
        return -1;
    }
}

/* ---- connecting ------------------------------------------------------------------ */

/* Connect errors say what the system says, without its code: they reach
 * users as they are ("cannot attach to ADDR: connection refused"). */
static void connect_failed(pl_stream *s, const char *why) {
    pl_set_err(s->error, sizeof s->error, "cannot connect to %s: %s", s->name, why);
    stream_finish(s, NULL);
}

/* The connect timeout runs on the stream's idle timer, which has nothing
 * else to do until the connection is made. */
static void connect_timed_out(uv_timer_t *timer) {
    pl_stream *s = timer->data;
    if (s->closed || !s->connecting) return;
    char why[60];
    snprintf(why, sizeof why, "no answer within %.3g s", (double)s->connect_ms / 1000.0);
    connect_failed(s, why);
}

static void connected(uv_connect_t *req, int status) {
    pl_stream *s = req->data;
    if (s->closed) return; /* reported when the handles are closed */
    uv_timer_stop(&s->idle);
    if (status < 0) {
        connect_failed(s, uv_strerror(status));
        return;
    }
    s->connecting = 0;
    if (!s->is_unix) uv_tcp_nodelay(&s->io.tcp, 1);
    pl_connect_cb cb = s->on_connect;
    s->on_connect = NULL;
    cb(s, NULL, s->connect_ud);
}

/* Every outcome but a connect refused at once is reported from the loop;
 * that one too, through the handles' close. */
static void start_connect(pl_stream *s, const pl_endpoint *ep) {
    if (ep->is_unix) {
        uv_pipe_connect(&s->connect_req, &s->io.pipe, ep->path, connected);
        return;
    }
    int rc = uv_tcp_connect(&s->connect_req, &s->io.tcp,
                            (const struct sockaddr *)&ep->sa, connected);
    if (rc != 0) connect_failed(s, uv_strerror(rc));
}

/* A new stream, connecting on behalf of cb; NULL once cb has been told
 * there is no memory for it. */
static pl_stream *connecting_stream(pl_host *h, int is_unix, const char *name,
                                    double timeout, pl_connect_cb cb, void *ud) {
    pl_stream *s = stream_new(h, is_unix);
    if (!s) {
        char err[sizeof s->name + 40];
        snprintf(err, sizeof err, "cannot connect to %.*s: out of memory",
                 (int)sizeof s->name, name);
        cb(NULL, err, ud);
        return NULL;
    }
    snprintf(s->name, sizeof s->name, "%s", name);
    s->connecting = 1;
    s->on_connect = cb;
    s->connect_ud = ud;
    s->connect_req.data = s;
    if (timeout > 0) {
        s->connect_ms = timeout * 1000.0 < 1.0 ? 1 : (uint64_t)(timeout * 1000.0 + 0.5);
        uv_timer_start(&s->idle, connect_timed_out, s->connect_ms, 0);
    }
    return s;
}

void pl_stream_connect(pl_host *h, const pl_endpoint *ep, double timeout,
                       pl_connect_cb cb, void *ud) {
    char name[PL_SOCKADDR_NAME_MAX];
    pl_endpoint_name(ep, name, sizeof name);
    pl_stream *s = connecting_stream(h, ep->is_unix, name, timeout, cb, ud);
    if (s) start_connect(s, ep);
}

static void host_resolved(uv_getaddrinfo_t *req, int status,
                          struct addrinfo *ai) {
    pl_stream *s = req->data;
    pl_endpoint ep;
    s->resolving = 0;
    int found = status == 0 &&
                pl_endpoint_from_addrinfo(&ep, ai, s->connect_port) == 0;
    if (ai) uv_freeaddrinfo(ai);
    if (s->closed) free_when_unused(s);
    else if (!found) connect_failed(s, status ? uv_strerror(status) : "no IPv4 or IPv6 address");
    else start_connect(s, &ep);
}

/* A host name is looked up in the thread pool, so the loop never waits. */
static void resolve_then_connect(pl_stream *s, const pl_address *a) {
    char port[8];
    snprintf(port, sizeof port, "%d", a->port);
    s->connect_port = a->port;
    s->resolve_req.data = s;
    int rc = uv_getaddrinfo(s->host->loop, &s->resolve_req, host_resolved,
                            a->host, port, &pl_sockaddr_stream_hints);
    if (rc != 0) connect_failed(s, uv_strerror(rc));
    else s->resolving = 1;
}

void pl_stream_connect_to(pl_host *h, const char *address, double timeout,
                          pl_connect_cb cb, void *ud) {
    pl_address a;
    pl_endpoint ep;
    char why[400];
    int parsed = pl_address_parse(address, &a, why, sizeof why);
    pl_stream *s = connecting_stream(h, parsed == 0 && a.is_unix, address,
                                     timeout, cb, ud);
    if (!s) return;
    if (parsed != 0) {
        pl_set_err(s->error, sizeof s->error, "cannot connect: %s", why);
        stream_finish(s, NULL);
    } else if (!a.is_unix && a.port == 0) {
        connect_failed(s, "port 0 names no listener");
    } else if (pl_address_endpoint(&a, &ep) == 0) {
        start_connect(s, &ep);
    } else {
        resolve_then_connect(s, &a);
    }
}

/* ---- servers ---------------------------------------------------------------------- */

static void server_freed(uv_handle_t *handle) { free(handle->data); }

static void server_shutdown(pl_resource *res) {
    pl_server_close((pl_server *)((char *)res - offsetof(pl_server, res)));
}

void pl_server_close(pl_server *srv) {
    if (!srv || srv->closed) return;
    srv->closed = 1;
    pl_host_untrack(&srv->res);
    uv_close(&srv->io.handle, server_freed);
    pl_server_handler h = srv->handler;
    memset(&srv->handler, 0, sizeof srv->handler);
    if (h.on_close) h.on_close(srv, h.ud);
}

const char *pl_server_address(const pl_server *srv) { return srv->address; }

pl_host *pl_server_host(const pl_server *srv) { return srv->host; }

void pl_server_unref(pl_server *srv) {
    if (srv && !srv->closed) uv_unref(&srv->io.handle);
}

void pl_server_set_idle_timeout(pl_server *srv, double seconds) {
    srv->idle_ms = seconds > 0 ? (uint64_t)(seconds * 1000.0 + 0.5) : 0;
}

static void connection_arrived(uv_stream_t *server, int status) {
    pl_server *srv = server->data;
    char why[120];
    if (srv->closed) return;
    if (status < 0) {
        pl_log(PL_LOG_WARNING, srv->host->name, "%s: cannot accept: %s",
               srv->address, uv_reason(status, why, sizeof why));
        return;
    }
    pl_stream *s = stream_new(srv->host, srv->is_unix);
    if (!s) {
        /* Not accepted, libuv stops watching the socket until memory comes
         * back for the next one: nothing better can be done. */
        pl_log(PL_LOG_ERROR, srv->host->name, "%s: out of memory accepting a "
               "connection", srv->address);
        return;
    }
    int rc = uv_accept(server, &s->io.stream);
    if (rc != 0) {
        pl_log(PL_LOG_WARNING, srv->host->name, "%s: cannot accept: %s",
               srv->address, uv_reason(rc, why, sizeof why));
        stream_finish(s, NULL);
        report_end(s);
        return;
    }
    if (!srv->is_unix) uv_tcp_nodelay(&s->io.tcp, 1);
    if (srv->idle_ms) pl_stream_set_idle_timeout(s, srv->idle_ms / 1000.0);
    srv->handler.on_accept(srv, s, srv->handler.ud);
}

/* Whether fd is a listening stream socket, and of which family. */
static int check_listening(int fd, int *family, char *err, size_t errlen) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int type = 0, listening = 0;
    socklen_t optlen = sizeof type;
    memset(&ss, 0, sizeof ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &optlen) != 0) {
        pl_set_err(err, errlen, "descriptor %d is not a socket", fd);
        return -1;
    }
    optlen = sizeof listening;
    if (type != SOCK_STREAM ||
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen) != 0 ||
        !listening) {
        pl_set_err(err, errlen, "descriptor %d is not a listening stream socket", fd);
        return -1;
    }
    *family = ss.ss_family;
    return 0;
}

pl_server *pl_server_open(pl_host *h, int fd, int own, int backlog,
                          const pl_server_handler *handler, char *err,
                          size_t errlen) {
    int family;
    if (check_listening(fd, &family, err, errlen) != 0) return NULL;
    if (family != AF_UNIX && family != AF_INET && family != AF_INET6) {
        pl_set_err(err, errlen, "descriptor %d: unknown address family %d", fd, family);
        return NULL;
    }
    pl_server *srv = calloc(1, sizeof *srv);
    int mine = srv ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
    if (mine < 0) {
        pl_set_err(err, errlen, "cannot serve descriptor %d: %s", fd,
                srv ? strerror(errno) : "out of memory");
        free(srv);
        return NULL;
    }
    srv->host = h;
    srv->handler = *handler;
    srv->is_unix = family == AF_UNIX;
    if (pl_sockaddr_of_fd(mine, srv->address, sizeof srv->address) != 0)
        snprintf(srv->address, sizeof srv->address, "descriptor %d", fd);
    int rc = srv->is_unix ? uv_pipe_init(h->loop, &srv->io.pipe, 0)
                          : uv_tcp_init(h->loop, &srv->io.tcp);
    if (rc != 0) {
        pl_set_err(err, errlen, "cannot serve %s: %s", srv->address, uv_strerror(rc));
        close(mine);
        free(srv);
        return NULL;
    }
    srv->io.handle.data = srv;
    rc = srv->is_unix ? uv_pipe_open(&srv->io.pipe, mine)
                      : uv_tcp_open(&srv->io.tcp, mine);
    int taken = rc == 0; /* from here the handle closes `mine` */
    if (rc == 0)
        rc = uv_listen(&srv->io.stream, backlog > 0 ? backlog : SOMAXCONN,
                       connection_arrived);
    if (rc != 0) {
        char why[120];
        pl_set_err(err, errlen, "cannot serve %s: %s", srv->address,
                uv_reason(rc, why, sizeof why));
        if (!taken) close(mine);
        uv_close(&srv->io.handle, server_freed);
        return NULL;
    }
    if (own) close(fd); /* taken over: the server has its own copy */
    pl_host_track(h, &srv->res, server_shutdown);
    return srv;
}
