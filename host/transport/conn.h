/* conn.h: mailbox connections, each carrying whole messages to one peer.
 *
 * A message is one RFC 6455 frame (frame.h) whose payload is an encoded
 * envelope; a pl_conn moves payloads both ways and never looks inside them.
 * Two transports sit under the same interface, so the code above cannot
 * tell them apart (docs/DESIGN.md):
 *   - a stream socket, between processes: Unix, or TCP for actors and
 *     consoles on other machines (the TCP mailbox, authenticated above
 *     this layer: lua/pulsar/auth.lua). The socket is a net.h stream, and
 *     a conn is framing over it;
 *   - an in-process channel between two loops on two threads: a byte pipe
 *     in memory each way (mutex + pl_buf) whose reader is woken by a
 *     uv_async_t, for thread actors and the arbiter.
 * Writes are batched: pl_conn_send appends a frame to an output buffer and
 * a uv_prepare_t flushes everything queued in one write (or one channel
 * push) just before the loop would block.
 *
 * A frame that does not parse, or is larger than the limit, closes that one
 * connection with a logged reason; nothing else is touched. */
#ifndef PULSAR_CONN_H
#define PULSAR_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>
#include <uv.h>

#include "buf.h"
#include "host.h"

typedef struct pl_conn pl_conn;
typedef struct pl_channel pl_channel;
typedef struct pl_listener pl_listener;

typedef struct pl_conn_handler {
    /* One whole message. The payload is valid only during the call. */
    void (*on_message)(pl_conn *c, const char *payload, size_t len, void *ud);
    /* Once, when the connection ends for any reason (peer gone, bad frame,
     * pl_conn_close, shutdown), by net.h's close rule: before the call
     * when the owner closes it, from the loop otherwise. reason is a short
     * text. After it returns the conn is freed by the transport: do not
     * use it again. */
    void (*on_close)(pl_conn *c, const char *reason, void *ud);
    void *ud;
} pl_conn_handler;

typedef struct pl_conn_stats {
    uint64_t sent, received; /* messages */
    size_t queued;           /* bytes waiting to be written */
} pl_conn_stats;

/* Streams. Addresses are sockaddr.h's: "unix:PATH", or TCP: "HOST:PORT",
 * "[IPv6]:PORT", "localhost:PORT", ":PORT" (every interface); a bare path
 * is refused. A host name other than localhost is looked up (in the thread
 * pool for pl_connect; at once for pl_listen). */
pl_listener *pl_listen(pl_host *h, const char *address,
                       void (*on_accept)(pl_listener *l, pl_conn *c, void *ud),
                       void *ud, char *err, size_t errlen);
/* Closes and frees l, unlinking a Unix socket's file. Once: the host's
 * shutdown closes a listener still open, after which l is gone. */
void pl_listener_close(pl_listener *l);
/* "unix:PATH" or "HOST:PORT" as bound: the port the system chose when 0
 * was asked for ("127.0.0.1:41234", "[::1]:41234", "0.0.0.0:41234"). */
const char *pl_listener_address(const pl_listener *l);
/* The listener stops keeping its loop alive (uv_unref): a mailbox alone
 * does not keep an actor running. Conns it accepts are not affected. */
void pl_listener_unref(pl_listener *l);
/* on_connect runs once, from the loop after pl_connect returns (only
 * running out of memory for the conn itself is reported at once): with the
 * conn, or with NULL and an error naming the address. A connect still
 * pending at shutdown fails with "... shutting down". */
void pl_connect(pl_host *h, const char *address,
                void (*on_connect)(pl_conn *c, const char *err, void *ud),
                void *ud);

/* Channels: made once, then each side attaches on its own loop/thread.
 * These three may be called from any thread; everything else on a conn only
 * from the thread running its host's loop. The channel is freed by whoever
 * drops the last reference (the creator's, or a side's when it closes), so
 * the creator must keep its reference until both sides have attached, or
 * hand it to the side attaching last, which releases it after attaching.
 * Frames written before the peer attaches wait for it; a side attached
 * after the other closed gets the waiting messages, then on_close.
 * pl_channel_attach gives NULL for a side already taken (or no memory). */
pl_channel *pl_channel_new(void);
pl_conn *pl_channel_attach(pl_host *h, pl_channel *ch, int side /* 0 or 1 */);
void pl_channel_release(pl_channel *ch); /* drops the creator's reference */

/* Nothing is read (nor a peer's close noticed) until a handler with
 * on_message is set; until then messages wait. Clearing on_message pauses
 * delivery. May be called again, from inside the handlers too. */
void pl_conn_set_handler(pl_conn *c, const pl_conn_handler *handler);
/* Queues one message. 0, or -1 with err ("connection closed", or "message
 * of N bytes exceeds the limit of M bytes"). */
int pl_conn_send(pl_conn *c, const char *payload, size_t len, char *err,
                 size_t errlen);
/* Drops whatever is still queued, calls on_close(reason) before returning
 * (at once, even from inside on_message), and frees the conn on a later
 * loop turn: until the current callback returns the pointer stays valid
 * for pl_conn_send (which fails), stats, and pl_conn_close (which does
 * nothing more). */
void pl_conn_close(pl_conn *c, const char *reason);
void pl_conn_stats_get(const pl_conn *c, pl_conn_stats *out);
void pl_conn_set_max_message(pl_conn *c, size_t max); /* default 64 MiB */
/* Who is on the other end, for log lines: "127.0.0.1:5555" for TCP, the
 * socket's "unix:PATH" for a Unix conn, "channel side N" for a channel. */
const char *pl_conn_peer(const pl_conn *c);

/* Turning a peer away slowly. pl_conn_close_after is pl_conn_close for the
 * owner (on_close(reason) runs before it returns; do not use the conn
 * after), but the transport keeps the socket open and unread for ms before
 * closing it: the peer waits that long for its answer. Frames queued
 * before the call still leave; nothing can be sent after. With a
 * linger set (0: none, the default), a bad frame from the peer closes the
 * conn that way, with the reason "bad frame: ...", and is left to the owner
 * to log. A channel closes at once (no stranger is turned away there). */
void pl_conn_close_after(pl_conn *c, uint64_t ms, const char *reason);
void pl_conn_set_linger(pl_conn *c, uint64_t ms);

/* Blocks, outside the loop's rhythm: writes what is queued, then waits up
 * to `timeout` seconds for the next message and appends its payload to
 * out. Streams only, and only with no write still in flight. For a console
 * that must answer at once (a completion asked for from inside a line
 * editor's callback); nothing else should block its loop. A timeout leaves
 * the conn open (a late message is delivered to the handler as usual); any
 * other failure closes it. 0, or -1 with err. */
int pl_conn_wait_message(pl_conn *c, double timeout, pl_buf *out, char *err,
                         size_t errlen);

/* Lua face (lconn.c):
 *   core.listen(address, on_accept(conn)) -> listener (:close(), :unref(),
 *                                                       .address)
 *   core.connect(address, on_connect(conn | nil, err))
 *   conn:set_handler(on_message(payload, conn), on_close(reason, conn))
 *   conn:send(payload) -> true | nil, err
 *   conn:close([reason [, delay]]);  conn:stats() -> {sent=, received=, queued=}
 *   conn:closed() -> boolean;  conn:peer() -> string
 *   conn:set_max_message(bytes);  conn:set_linger(seconds)
 *   conn:wait_message(timeout) -> payload | nil, err
 *   core.channel_pair_for_test() -> conn, conn (one channel, both on this loop)
 * A conn with handlers stays open when Lua drops it; one without is closed
 * when collected.
 * pl_lconn_push wraps a C conn (e.g. a channel end) as such a Lua object;
 * the Lua object takes over the conn's handler. Push a conn once. */
void pl_lconn_push(lua_State *L, pl_conn *c);
void pl_lconn_register(lua_State *L);

#endif
