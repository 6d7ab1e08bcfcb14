/* net.h: TCP and Unix stream sockets: the one layer that owns them, for
 * Lua code (docs/API.md §2 Networking) and for the mailbox, whose conns
 * (conn.h) are framing over these streams.
 *
 * Three pieces, in the order a server meets them:
 *   - a bound socket: pl_net_bind makes a listening descriptor (socket,
 *     bind, listen: sockaddr.h's pl_endpoint_listen, as the mailbox's
 *     listeners do), nothing more. It is a plain fd so that it can be shared:
 *     a SocketServer's monitor binds once, thread workers accept on dup()s of
 *     it, process workers inherit it at spawn (spawn.c);
 *   - a server: pl_server_open watches a listening fd on a host's loop and
 *     hands every accepted connection to its owner as a pl_stream;
 *   - a stream: one connection (accepted, or made by pl_stream_connect),
 *     with the transport rules of asyncio: writes queue and are never
 *     dropped; past a high-water mark the writer is told to pause and, once
 *     the queue drains below a low-water mark, to resume; close() flushes
 *     what is queued first.
 *
 * The close rule, which conn.h keeps too: the owner hears of the end
 * exactly once (a stream's on_lost, a server's on_close, a conn's
 * on_close), for every way it ends: the peer, an error, a timeout, the
 * owner, the host's shutdown. An end the owner makes (pl_stream_abort,
 * pl_stream_close_after, pl_server_close, pl_conn_close,
 * pl_conn_close_after) and the host's shutdown are told before that call
 * returns, so the owner never waits for news of what it did; every other
 * end is told from the loop, never inside a call of the owner's.
 * pl_stream_close asks for an end rather than making one: it is told from
 * the loop once what was queued is written. After the callback the object
 * is the transport's: the owner must not use it again.
 *
 * Nothing here knows Lua: lnet.c gives these objects their Lua faces
 * (pulsar.core.net_*), and lua/pulsar/net.lua builds servers, protocols and
 * streams on top; conn.c gives them frames. Everything runs on the thread
 * of the host's loop. */
#ifndef PULSAR_NET_H
#define PULSAR_NET_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>
#include <uv.h>

#include "host.h"
#include "sockaddr.h"

#define PL_NET_HIGH_WATER ((size_t)64 << 10)

/* Endpoints (pl_endpoint_ip, pl_endpoint_unix, pl_endpoint_name) are
 * sockaddr.h's, shared with the mailbox's transport. */

/* ---- bound sockets ------------------------------------------------------ */

/* A new listening socket bound to ep (pl_endpoint_listen: SO_REUSEADDR
 * for TCP, dual stack for "::", a Unix socket file left by a dead process
 * replaced). The fd, or -1 with err. `name` receives the bound address
 * (with the real port when ep's was 0). */
int pl_net_bind(const pl_endpoint *ep, int backlog, char *name,
                size_t namelen, char *err, size_t errlen);
/* Closes a socket made by pl_net_bind; unlinks `path` when not NULL. */
void pl_net_unbind(int fd, const char *path);

/* ---- servers -------------------------------------------------------------- */

typedef struct pl_server pl_server;
typedef struct pl_stream pl_stream;

typedef struct pl_server_handler {
    /* A new connection: the callee owns the stream from here on (it must
     * set a handler, or close it). */
    void (*on_accept)(pl_server *srv, pl_stream *s, void *ud);
    /* Once, when the server closes (pl_server_close or host shutdown);
     * the server is freed afterwards. */
    void (*on_close)(pl_server *srv, void *ud);
    void *ud;
} pl_server_handler;

/* Accepts on a dup() of the listening socket `fd`; with `own`, fd itself
 * is closed once the server has its copy (an inherited descriptor), else it
 * stays the caller's. Streams it accepts get TCP_NODELAY and the server's
 * idle timeout. NULL with err (fd untouched) if fd is not a listening
 * stream socket or cannot be watched. */
pl_server *pl_server_open(pl_host *h, int fd, int own, int backlog,
                          const pl_server_handler *handler, char *err,
                          size_t errlen);
/* Stops accepting; streams it accepted go on. */
void pl_server_close(pl_server *srv);
const char *pl_server_address(const pl_server *srv);
pl_host *pl_server_host(const pl_server *srv);
/* The server stops keeping its loop alive (uv_unref); it still accepts. */
void pl_server_unref(pl_server *srv);
/* Seconds of silence after which an accepted stream is closed (0: never);
 * see pl_stream_set_idle_timeout. */
void pl_server_set_idle_timeout(pl_server *srv, double seconds);

/* ---- streams ------------------------------------------------------------- */

typedef struct pl_stream_handler {
    /* Bytes read; valid only during the call. */
    void (*on_data)(pl_stream *s, const char *data, size_t len, void *ud);
    /* The peer shut its side: return non-zero to stay half-open (the owner
     * closes later), zero to close the stream (flushing what is queued). */
    int (*on_eof)(pl_stream *s, void *ud);
    /* The write queue went back below the low-water mark after
     * pl_stream_write reported it above the high one. */
    void (*on_drain)(pl_stream *s, void *ud);
    /* Once, when the stream has ended for its owner, by the close rule
     * above: err is NULL after a clean close, else what went wrong. The
     * stream is freed afterwards. */
    void (*on_lost)(pl_stream *s, const char *err, void *ud);
    void *ud;
} pl_stream_handler;

/* on_connect runs once, from the loop: with the stream (owned by the
 * callee, as on_accept's), or with NULL and an error naming the address
 * ("cannot connect to ADDR: connection refused"; only running out of
 * memory for the stream itself is reported at once). A connect pending at
 * the host's shutdown fails with "... shutting down". With timeout > 0
 * (seconds), a connection not made by then is given up: a peer that never
 * answers (a full backlog, a dropped SYN) would otherwise hold the
 * attempt, and the loop, for the kernel's minutes of retries. */
typedef void (*pl_connect_cb)(pl_stream *s, const char *err, void *ud);
void pl_stream_connect(pl_host *h, const pl_endpoint *ep, double timeout,
                       pl_connect_cb cb, void *ud);
/* The same to an address as written (sockaddr.h's pl_address_parse): a
 * host name is looked up in the thread pool first, so the loop never
 * waits; a bad address fails from the loop too. */
void pl_stream_connect_to(pl_host *h, const char *address, double timeout,
                          pl_connect_cb cb, void *ud);

/* Sets the handler; the stream reads (unless paused) while it has on_data. */
void pl_stream_set_handler(pl_stream *s, const pl_stream_handler *handler);

/* Writes the buffers in order: what the socket does not take at once is
 * copied and queued. 0; 1 when this write took the queue above the
 * high-water mark (the caller pauses its producer, or calls
 * pl_stream_pause_for_flow); -1 with err if the stream is closing or the
 * write failed (the stream is then closed with that error). */
int pl_stream_write(pl_stream *s, const uv_buf_t *bufs, unsigned nbufs,
                    char *err, size_t errlen);
/* Queues `length` bytes of a file from `offset` (length < 0: to its end)
 * behind what was written before, sent with sendfile(2) (see net.c's
 * head); writes after it wait for it. The file is `path`, opened here, or
 * when path is NULL a duplicate of `fd` (the caller keeps its own). Its
 * bytes count in the write queue until sent. 0; 1 as pl_stream_write (the
 * queue went above the high-water mark); -1 with err when the file cannot
 * be opened, is not a regular file, is shorter than the range, or the
 * stream is closing. A file that shrinks while it is sent ends the stream
 * with an error. */
int pl_stream_sendfile(pl_stream *s, const char *path, int fd, uint64_t offset,
                       int64_t length, char *err, size_t errlen);
/* Shuts the write side once the queue is written (half-close). 0 or -1. */
int pl_stream_write_eof(pl_stream *s, char *err, size_t errlen);
/* Stops reading, writes what is queued, then closes; on_lost(NULL) from
 * the loop once that is done (a request for the end, not the end). */
void pl_stream_close(pl_stream *s);
/* Closes now, dropping what is queued; on_lost(err) before returning. */
void pl_stream_abort(pl_stream *s, const char *err);
/* Turning a peer away slowly: the stream ends for its owner now
 * (on_lost(NULL) before returning), but the socket stays open and unread
 * for ms, writing what was queued, and is closed then (dropping what is
 * still queued). ms 0 is pl_stream_abort. */
void pl_stream_close_after(pl_stream *s, uint64_t ms);

void pl_stream_pause_reading(pl_stream *s);
void pl_stream_resume_reading(pl_stream *s);
/* Reading stops until the write queue drains below the low-water mark
 * (for producers that only answer what they read). */
void pl_stream_pause_for_flow(pl_stream *s);

size_t pl_stream_write_queue(const pl_stream *s);
/* high 0 means the default (64 KiB); low defaults to high / 4. */
void pl_stream_set_write_limits(pl_stream *s, size_t high, size_t low);
void pl_stream_get_write_limits(const pl_stream *s, size_t *high,
                                size_t *low);
/* Closes the stream once nothing moved for `seconds` (0: never). Moving
 * is a read, a write asked, or the kernel taking queued bytes: an answer
 * draining to a slow reader keeps the stream open. A queue the peer takes
 * nothing of for the whole time (checked once per timeout, so between one
 * and two timeouts) is dropped, with a warning in the log. */
void pl_stream_set_idle_timeout(pl_stream *s, double seconds);
int pl_stream_is_closing(const pl_stream *s);
/* The stream stops keeping its loop alive (its socket and idle timer are
 * uv_unref'd): a connection the program does not wait for, such as a
 * browser's on the observer. */
void pl_stream_unref(pl_stream *s);
/* Blocking I/O, outside the loop's rhythm, for a caller that must answer
 * at once (conn.h's pl_conn_wait_message); only while nothing is queued,
 * so that these bytes cannot overtake queued ones. The deadline is
 * uv_hrtime's (ns). Neither ends the stream: the caller decides.
 * write_now: 0, or -1 with err. read_now: the bytes read, 0 at the end of
 * the stream, PL_STREAM_TIMED_OUT, or -1 with err. */
#define PL_STREAM_TIMED_OUT (-2)
int pl_stream_write_now(pl_stream *s, const char *data, size_t len,
                        uint64_t deadline, char *err, size_t errlen);
long pl_stream_read_now(pl_stream *s, char *buf, size_t len, uint64_t deadline,
                        char *err, size_t errlen);

/* The local (peer = 0) or remote (peer = 1) address; 0 or -1. */
int pl_stream_name(const pl_stream *s, int peer, char *out, size_t outlen);

/* Lua face (lnet.c): adds net_* functions to pulsar.core. */
void pl_lnet_register(lua_State *L);

#endif
