/* test_conn.c: the transports (host/transport/conn.c, and the net.c streams
 * under it) on real loops, sockets and threads, without Lua.
 *
 * Each test builds a bare pl_host (a loop, an empty resource list, no VM),
 * which is all conn.c needs, and finishes it as pl_host_main does: close
 * every resource, run the loop until the close callbacks are done, and check
 * that uv_loop_close finds nothing left. CHECK counts passes and failures;
 * it is only used on the main thread (peer threads record, main checks).
 * Waits are bounded (RUN_UNTIL), and a watchdog alarm ends a hung run.
 *
 * Batching is measured, not assumed: /proc/self/io's syscw counts the
 * process's write system calls, so 10k sends in one turn must cost a
 * handful of them (uv_write for a socket, eventfd wake-ups for a channel)
 * rather than one each. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <uv.h>

#include "buf.h"
#include "conn.h"
#include "frame.h"
#include "host.h"
#include "net.h"

#include "check.h"

#define MANY 10000
#define WAIT_NS (60ull * 1000000000ull) /* valgrind is slow; hangs are not */

static char tmpdir[64];

static void path_in_tmp(char *out, size_t outlen, const char *name) {
    snprintf(out, outlen, "%s/%s", tmpdir, name);
}

/* "unix:PATH", in one of two buffers used in turn (a call may take two). */
static const char *unix_addr(const char *path) {
    static char bufs[2][400];
    static int next;
    char *b = bufs[next++ % 2];
    snprintf(b, sizeof bufs[0], "unix:%s", path);
    return b;
}

static int file_exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

/* ---- hosts ------------------------------------------------------------- */

typedef struct test_host {
    pl_host h;
    uv_timer_t tick; /* keeps RUN_UNTIL's iterations short */
} test_host;

static void host_init(test_host *t) {
    memset(t, 0, sizeof *t);
    t->h.loop = &t->h.own_loop;
    if (uv_loop_init(t->h.loop) != 0) abort();
    t->h.resources.next = t->h.resources.prev = &t->h.resources;
    t->h.L = NULL;
    uv_timer_init(t->h.loop, &t->tick);
}

static void noop_tick(uv_timer_t *timer) { (void)timer; }

/* Closes what is open, as pl_host_main does; 0 when nothing was left. */
static int host_finish(test_host *t) {
    while (t->h.resources.next != &t->h.resources)
        t->h.resources.next->close(t->h.resources.next);
    uv_close((uv_handle_t *)&t->tick, NULL);
    while (uv_run(t->h.loop, UV_RUN_DEFAULT) != 0) {
    }
    int rc = uv_loop_close(t->h.loop);
    if (rc != 0) uv_print_all_handles(t->h.loop, stderr);
    return rc;
}

/* Runs t's loop until cond holds or the wait runs out, then checks cond. */
#define RUN_UNTIL(t, cond)                                                 \
    do {                                                                   \
        uint64_t deadline_ = uv_hrtime() + WAIT_NS;                        \
        uv_timer_start(&(t)->tick, noop_tick, 2, 2);                       \
        while (!(cond) && uv_hrtime() < deadline_)                         \
            uv_run((t)->h.loop, UV_RUN_ONCE);                             \
        uv_timer_stop(&(t)->tick);                                         \
        CHECK(cond);                                                       \
    } while (0)

static void run_turns(test_host *t, int n) {
    for (int i = 0; i < n; i++) uv_run(t->h.loop, UV_RUN_NOWAIT);
}

/* Write system calls made by this process so far, or -1. */
static long long write_syscalls(void) {
    FILE *f = fopen("/proc/self/io", "r");
    if (!f) return -1;
    char line[128];
    long long n = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "syscw: %lld", &n) == 1) break;
    fclose(f);
    return n;
}

/* ---- a conn handler that records what happens -------------------------- */

typedef struct recorder {
    pl_conn *conn; /* NULL once closed */
    int messages;
    char last[512];
    size_t last_len;
    int closes;
    char reason[256];
    int send_after_close_rc;
    char send_after_close_err[128];
    /* behaviour */
    int echo;          /* send each message back */
    int close_after;   /* close with "enough" after this many messages */
    int pause_after;   /* clear on_message after this many messages */
    int sequence;      /* messages are "0", "1", ... in order */
    long relay_until;  /* answer message n with n + 1 while n + 1 < this */
    long expect_next;
    int out_of_order;
    const size_t *clock; /* copied into at[] on each message */
    size_t at[8];
    uv_idle_t *idle_to_close; /* closed with the conn */
} recorder;

static void rec_close(pl_conn *c, const char *reason, void *ud);

static void rec_message(pl_conn *c, const char *p, size_t n, void *ud) {
    recorder *r = ud;
    if (r->clock && r->messages < 8) r->at[r->messages] = *r->clock;
    r->messages++;
    r->last_len = n < sizeof r->last ? n : sizeof r->last - 1;
    memcpy(r->last, p, r->last_len);
    r->last[r->last_len] = 0;
    if (r->sequence) {
        if (strtol(r->last, NULL, 10) != r->expect_next) r->out_of_order++;
        r->expect_next++;
    }
    if (r->echo) pl_conn_send(c, p, n, NULL, 0);
    if (r->relay_until) {
        long next = strtol(r->last, NULL, 10) + 1;
        char buf[32];
        int len = snprintf(buf, sizeof buf, "%ld", next);
        if (next < r->relay_until) pl_conn_send(c, buf, (size_t)len, NULL, 0);
    }
    if (r->close_after && r->messages == r->close_after)
        pl_conn_close(c, "enough");
    if (r->pause_after && r->messages == r->pause_after) {
        pl_conn_handler h = {NULL, rec_close, r};
        pl_conn_set_handler(c, &h);
    }
}

static void rec_close(pl_conn *c, const char *reason, void *ud) {
    recorder *r = ud;
    r->closes++;
    snprintf(r->reason, sizeof r->reason, "%s", reason);
    r->send_after_close_rc = pl_conn_send(c, "x", 1, r->send_after_close_err,
                                          sizeof r->send_after_close_err);
    r->conn = NULL;
    if (r->idle_to_close) uv_close((uv_handle_t *)r->idle_to_close, NULL);
}

static void rec_attach(recorder *r, pl_conn *c) {
    r->conn = c;
    pl_conn_handler h = {rec_message, rec_close, r};
    pl_conn_set_handler(c, &h);
}

static int send_str(pl_conn *c, const char *s) {
    return pl_conn_send(c, s, strlen(s), NULL, 0);
}

static void send_sequence(pl_conn *c, long from, long count) {
    for (long i = from; i < from + count; i++) {
        char buf[32];
        int n = snprintf(buf, sizeof buf, "%ld", i);
        pl_conn_send(c, buf, (size_t)n, NULL, 0);
    }
}

/* ---- listeners and clients --------------------------------------------- */

typedef struct server {
    recorder conns[8]; /* configured before they are accepted */
    int accepted;
    size_t max_message;
} server;

static void server_accept(pl_listener *l, pl_conn *c, void *ud) {
    (void)l;
    server *s = ud;
    if (s->accepted >= 8) {
        pl_conn_close(c, "too many");
        return;
    }
    if (s->max_message) pl_conn_set_max_message(c, s->max_message);
    rec_attach(&s->conns[s->accepted++], c);
}

typedef struct client {
    recorder rec;
    int done;
    char err[300];
} client;

static void client_connected(pl_conn *c, const char *err, void *ud) {
    client *cl = ud;
    cl->done++;
    if (c) rec_attach(&cl->rec, c);
    else snprintf(cl->err, sizeof cl->err, "%s", err);
}

static int raw_socket_to(const char *path, int do_listen) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) abort();
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int rc = do_listen ? bind(fd, (struct sockaddr *)&sa, sizeof sa)
                       : connect(fd, (struct sockaddr *)&sa, sizeof sa);
    if (rc == 0 && do_listen) rc = listen(fd, 8);
    if (rc != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int raw_connect(const char *path) { return raw_socket_to(path, 0); }

static int raw_eof(int fd) {
    char b[64];
    return recv(fd, b, sizeof b, MSG_DONTWAIT) == 0;
}

/* Appends a masked frame, as a browser-like client would send. */
static void append_masked(pl_buf *b, int opcode, const void *payload,
                          size_t len) {
    uint8_t hdr[PL_FRAME_HEADER_MAX];
    size_t n = pl_frame_header(hdr, opcode, len);
    hdr[1] |= 0x80;
    const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    pl_buf_append(b, hdr, n);
    pl_buf_append(b, key, 4);
    for (size_t i = 0; i < len; i++) {
        uint8_t x = ((const uint8_t *)payload)[i] ^ key[i % 4];
        pl_buf_append(b, &x, 1);
    }
}

/* ---- streams --------------------------------------------------------------- */

static void test_stream_basics(void) {
    test_host t;
    host_init(&t);
    char path[128], err[256];
    path_in_tmp(path, sizeof path, "basics.sock");
    char address[140];
    snprintf(address, sizeof address, "unix:%s", path);
    server s;
    memset(&s, 0, sizeof s);
    s.conns[0].echo = 1;
    s.conns[0].sequence = 1;
    pl_listener *l = pl_listen(&t.h, address, server_accept, &s, err,
                               sizeof err);
    CHECK(l != NULL);
    CHECK(file_exists(path));

    client c;
    memset(&c, 0, sizeof c);
    pl_connect(&t.h, address, client_connected, &c);
    CHECK(c.done == 0); /* reported from the loop, not from pl_connect */
    RUN_UNTIL(&t, c.done && s.accepted == 1);
    CHECK(c.rec.conn != NULL);

    /* Both ways, in order: the server echoes 10k messages sent at once. */
    c.rec.sequence = 1;
    send_sequence(c.rec.conn, 0, MANY);
    RUN_UNTIL(&t, c.rec.messages == MANY);
    CHECK(s.conns[0].messages == MANY);
    CHECK(s.conns[0].out_of_order == 0);
    CHECK(c.rec.out_of_order == 0);
    pl_conn_stats st;
    pl_conn_stats_get(c.rec.conn, &st);
    CHECK(st.sent == MANY && st.received == MANY && st.queued == 0);
    pl_conn_stats_get(s.conns[0].conn, &st);
    CHECK(st.sent == MANY && st.received == MANY);

    /* An empty message is a message. */
    s.conns[0].sequence = c.rec.sequence = 0;
    CHECK(send_str(c.rec.conn, "") == 0);
    RUN_UNTIL(&t, c.rec.messages == MANY + 1);
    CHECK(c.rec.last_len == 0);

    /* Over the limit: refused, and the conn carries on. */
    pl_conn_set_max_message(c.rec.conn, 16);
    char big[17] = "0123456789abcdef";
    CHECK(pl_conn_send(c.rec.conn, big, 17, err, sizeof err) == -1);
    CHECK(strcmp(err, "message of 17 bytes exceeds the limit of 16 bytes") == 0);
    CHECK(pl_conn_send(c.rec.conn, big, 16, err, sizeof err) == 0);
    RUN_UNTIL(&t, c.rec.messages == MANY + 2);
    CHECK(strcmp(c.rec.last, big) == 0);

    /* Closing: on_close at once, with our reason; the peer hears of it. */
    pl_conn_close(c.rec.conn, "done here");
    CHECK(c.rec.closes == 1);
    CHECK(strcmp(c.rec.reason, "done here") == 0);
    CHECK(c.rec.send_after_close_rc == -1);
    CHECK(strcmp(c.rec.send_after_close_err, "connection closed") == 0);
    RUN_UNTIL(&t, s.conns[0].closes == 1);
    CHECK(strcmp(s.conns[0].reason, "peer closed the connection") == 0);
    run_turns(&t, 3);
    CHECK(c.rec.closes == 1 && s.conns[0].closes == 1);

    pl_listener_close(l);
    CHECK(!file_exists(path)); /* unlinked */
    CHECK(host_finish(&t) == 0);
}

static void test_addresses(void) {
    test_host t;
    host_init(&t);
    char path[128], err[256], address[200];

    CHECK(pl_listen(&t.h, "tcp://127.0.0.1:8000", server_accept, NULL, err,
                    sizeof err) == NULL);
    CHECK(strstr(err, "'tcp://127.0.0.1:8000' is not an address") != NULL);
    CHECK(pl_listen(&t.h, "unix:", server_accept, NULL, err, sizeof err) == NULL);
    CHECK(strstr(err, "'unix:' names no socket path") != NULL);
    /* A bare path is refused, and the message says how to write it. */
    path_in_tmp(path, sizeof path, "bare.sock");
    CHECK(pl_listen(&t.h, path, server_accept, NULL, err, sizeof err) == NULL);
    snprintf(address, sizeof address, "write unix:%s for a Unix socket", path);
    CHECK(strstr(err, address) != NULL && !file_exists(path));
    char long_path[300];
    memset(long_path, 'x', sizeof long_path - 1);
    long_path[0] = '/';
    long_path[sizeof long_path - 1] = 0;
    CHECK(pl_listen(&t.h, unix_addr(long_path), server_accept, NULL, err, sizeof err) == NULL);
    CHECK(strstr(err, "too long") != NULL);

    /* Connecting fails from the loop, naming the address. */
    client bad, bare, missing;
    memset(&bad, 0, sizeof bad);
    memset(&bare, 0, sizeof bare);
    memset(&missing, 0, sizeof missing);
    pl_connect(&t.h, "tcp://example.org:1", client_connected, &bad);
    pl_connect(&t.h, path, client_connected, &bare);
    path_in_tmp(path, sizeof path, "nobody-here.sock");
    snprintf(address, sizeof address, "unix:%s", path);
    pl_connect(&t.h, address, client_connected, &missing);
    CHECK(bad.done == 0 && bare.done == 0 && missing.done == 0);
    RUN_UNTIL(&t, bad.done && bare.done && missing.done);
    CHECK(bad.rec.conn == NULL && strstr(bad.err, "tcp://example.org:1") != NULL);
    CHECK(bare.rec.conn == NULL && strstr(bare.err, "write unix:") != NULL);
    CHECK(missing.rec.conn == NULL && strstr(missing.err, path) != NULL);

    /* A stale socket file (its process died) is replaced. */
    path_in_tmp(path, sizeof path, "stale.sock");
    int fd = raw_socket_to(path, 1);
    CHECK(fd >= 0);
    close(fd); /* the file stays, nobody listens */
    CHECK(file_exists(path));
    client refused;
    memset(&refused, 0, sizeof refused);
    pl_connect(&t.h, unix_addr(path), client_connected, &refused);
    RUN_UNTIL(&t, refused.done);
    CHECK(strstr(refused.err, "refused") != NULL);
    server s;
    memset(&s, 0, sizeof s);
    pl_listener *l = pl_listen(&t.h, unix_addr(path), server_accept, &s, err, sizeof err);
    CHECK(l != NULL);

    /* A live listener is not taken over; it keeps working. (It sees the
     * probe that found it alive as a conn closed at once.) */
    CHECK(pl_listen(&t.h, unix_addr(path), server_accept, &s, err, sizeof err) == NULL);
    CHECK(strstr(err, "address already in use") != NULL);
    client ok;
    memset(&ok, 0, sizeof ok);
    s.conns[1].echo = 1;
    pl_connect(&t.h, unix_addr(path), client_connected, &ok);
    RUN_UNTIL(&t, ok.done && s.accepted == 2);
    CHECK(ok.rec.conn != NULL);
    RUN_UNTIL(&t, s.conns[0].closes == 1);
    CHECK(strcmp(s.conns[0].reason, "peer closed the connection") == 0);
    send_str(ok.rec.conn, "alive");
    RUN_UNTIL(&t, ok.rec.messages == 1);

    /* A file that is not a socket is never removed. */
    path_in_tmp(path, sizeof path, "plain-file");
    FILE *f = fopen(path, "w");
    if (f) fclose(f);
    CHECK(pl_listen(&t.h, unix_addr(path), server_accept, &s, err, sizeof err) == NULL);
    CHECK(file_exists(path));
    unlink(path);

    CHECK(host_finish(&t) == 0);
}

/* A plain libuv reader, to see how the bytes of a pl_conn arrive. */
typedef struct raw_receiver {
    uv_pipe_t server, peer;
    int accepted;
    pl_buf data;
    int reads;
    char chunk[65536];
} raw_receiver;

static void raw_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
    (void)hint;
    raw_receiver *r = h->data;
    *b = uv_buf_init(r->chunk, sizeof r->chunk);
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    raw_receiver *r = s->data;
    if (n > 0) {
        r->reads++;
        pl_buf_append(&r->data, b->base, (size_t)n);
    } else if (n < 0) {
        uv_read_stop(s);
    }
}

static void raw_accept(uv_stream_t *server, int status) {
    raw_receiver *r = server->data;
    if (status < 0 || r->accepted) return;
    uv_pipe_init(server->loop, &r->peer, 0);
    r->peer.data = r;
    if (uv_accept(server, (uv_stream_t *)&r->peer) == 0) {
        uv_read_start((uv_stream_t *)&r->peer, raw_alloc, raw_read);
        r->accepted = 1;
    }
}

static void test_batching(void) {
    test_host t;
    host_init(&t);
    char path[128];
    path_in_tmp(path, sizeof path, "batch.sock");
    raw_receiver *r = calloc(1, sizeof *r);
    pl_buf_init(&r->data, 0);
    uv_pipe_init(t.h.loop, &r->server, 0);
    r->server.data = r;
    CHECK(uv_pipe_bind(&r->server, path) == 0);
    CHECK(uv_listen((uv_stream_t *)&r->server, 8, raw_accept) == 0);
    client c;
    memset(&c, 0, sizeof c);
    pl_connect(&t.h, unix_addr(path), client_connected, &c);
    RUN_UNTIL(&t, c.done && r->accepted);

    size_t total = 0;
    long long writes_before = write_syscalls();
    for (int i = 0; i < MANY; i++) {
        char buf[32];
        int n = snprintf(buf, sizeof buf, "message %05d", i);
        CHECK(pl_conn_send(c.rec.conn, buf, (size_t)n, NULL, 0) == 0);
        total += (size_t)n + 2;
    }
    pl_conn_stats st;
    pl_conn_stats_get(c.rec.conn, &st);
    CHECK(st.queued == total); /* nothing written during the turn */
    RUN_UNTIL(&t, r->data.len >= total);
    long long writes = write_syscalls() - writes_before;
    if (writes_before >= 0) {
        printf("conn: %d messages left in %lld write calls, arrived in %d "
               "reads\n", MANY, writes, r->reads);
        /* A few in fact; the bound leaves room for valgrind, whose thread
         * scheduler writes to a pipe of its own in this process. */
        CHECK(writes >= 1 && writes <= MANY / 100);
    } else {
        printf("conn: /proc/self/io unavailable, write calls not counted\n");
    }
    CHECK(r->reads < 100);
    CHECK(r->data.len == total);

    /* Every frame intact and in order. */
    size_t pos = 0;
    int in_order = 0;
    for (int i = 0; i < MANY; i++) {
        pl_frame f;
        size_t used;
        char want[32];
        int n = snprintf(want, sizeof want, "message %05d", i);
        if (pl_frame_parse((uint8_t *)r->data.data + pos, r->data.len - pos,
                           1024, &f, &used, NULL, 0) != PL_FRAME_COMPLETE)
            break;
        if (f.opcode == PL_OP_BINARY && f.len == (size_t)n &&
            memcmp(f.payload, want, f.len) == 0)
            in_order++;
        pos += used;
    }
    CHECK(in_order == MANY && pos == total);

    uv_close((uv_handle_t *)&r->server, NULL);
    uv_close((uv_handle_t *)&r->peer, NULL);
    CHECK(host_finish(&t) == 0);
    pl_buf_free(&r->data);
    free(r);
}

/* Writes one byte per loop iteration, so the server reads them one by one. */
static struct {
    int fd;
    const char *bytes;
    size_t len, written;
} trickle;

static void trickle_step(uv_idle_t *idle) {
    if (trickle.written < trickle.len &&
        write(trickle.fd, trickle.bytes + trickle.written, 1) == 1)
        trickle.written++;
    if (trickle.written == trickle.len) uv_idle_stop(idle);
}

static void test_split_reads(void) {
    test_host t;
    host_init(&t);
    char path[128], err[256];
    path_in_tmp(path, sizeof path, "split.sock");
    server s;
    memset(&s, 0, sizeof s);
    s.conns[0].clock = &trickle.written;
    pl_listener *l = pl_listen(&t.h, unix_addr(path), server_accept, &s, err, sizeof err);
    CHECK(l != NULL);
    int fd = raw_connect(path);
    CHECK(fd >= 0);
    RUN_UNTIL(&t, s.accepted == 1);

    /* A masked 300-byte message (16-bit length), a ping, a short one. */
    char payload[300];
    for (size_t i = 0; i < sizeof payload; i++) payload[i] = (char)('a' + i % 26);
    pl_buf b;
    pl_buf_init(&b, 0);
    append_masked(&b, PL_OP_BINARY, payload, sizeof payload);
    size_t end1 = b.len;
    append_masked(&b, PL_OP_PING, "abc", 3);
    pl_frame_append(&b, PL_OP_BINARY, "tail", 4);
    size_t end3 = b.len;

    trickle.fd = fd;
    trickle.bytes = b.data;
    trickle.len = b.len;
    trickle.written = 0;
    uv_idle_t idle;
    uv_idle_init(t.h.loop, &idle);
    uv_idle_start(&idle, trickle_step);
    RUN_UNTIL(&t, s.conns[0].messages == 2);
    CHECK(s.conns[0].at[0] >= end1 && s.conns[0].at[0] < end3);
    CHECK(s.conns[0].at[1] >= end3);
    CHECK(strcmp(s.conns[0].last, "tail") == 0);

    /* The ping was answered with a pong carrying its payload. */
    char pong[16];
    size_t got = 0;
    uint64_t deadline = uv_hrtime() + WAIT_NS;
    while (got < 5 && uv_hrtime() < deadline) {
        run_turns(&t, 1);
        ssize_t n = recv(fd, pong + got, sizeof pong - got, MSG_DONTWAIT);
        if (n > 0) got += (size_t)n;
        else usleep(1000);
    }
    CHECK(got == 5 && memcmp(pong, "\x8a\x03" "abc", 5) == 0);
    pl_conn_stats st;
    pl_conn_stats_get(s.conns[0].conn, &st);
    CHECK(st.received == 2 && st.sent == 0); /* pings are not messages */

    uv_close((uv_handle_t *)&idle, NULL);
    close(fd);
    RUN_UNTIL(&t, s.conns[0].closes == 1);
    CHECK(strcmp(s.conns[0].reason, "peer closed the connection") == 0);
    pl_buf_free(&b);
    pl_listener_close(l);
    CHECK(host_finish(&t) == 0);
}

static void test_bad_frames(void) {
    test_host t;
    host_init(&t);
    char path[128], err[256];
    path_in_tmp(path, sizeof path, "bad.sock");
    server s;
    memset(&s, 0, sizeof s);
    s.max_message = 1024;
    s.conns[2].echo = 1;
    pl_listener *l = pl_listen(&t.h, unix_addr(path), server_accept, &s, err, sizeof err);
    CHECK(l != NULL);
    /* One at a time, so s.conns[i] is the i-th client. */
    int garbage = raw_connect(path);
    RUN_UNTIL(&t, s.accepted == 1);
    int oversized = raw_connect(path);
    RUN_UNTIL(&t, s.accepted == 2);
    client good;
    memset(&good, 0, sizeof good);
    pl_connect(&t.h, unix_addr(path), client_connected, &good);
    RUN_UNTIL(&t, s.accepted == 3 && good.done);
    int closer = raw_connect(path);
    RUN_UNTIL(&t, s.accepted == 4);

    CHECK(write(garbage, "\xff\xfe garbage", 10) == 10);
    RUN_UNTIL(&t, s.conns[0].closes == 1);
    CHECK(strncmp(s.conns[0].reason, "bad frame: ", 11) == 0);
    RUN_UNTIL(&t, raw_eof(garbage));

    /* The header alone is enough to refuse: no payload is ever sent. */
    CHECK(write(oversized, "\x82\x7e\x08\x00", 4) == 4);
    RUN_UNTIL(&t, s.conns[1].closes == 1);
    CHECK(strcmp(s.conns[1].reason, "bad frame: frame of 2048 bytes exceeds "
                 "the limit of 1024 bytes") == 0);

    /* A close frame from the peer. */
    CHECK(write(closer, "\x88\x80\x01\x02\x03\x04", 6) == 6);
    RUN_UNTIL(&t, s.conns[3].closes == 1);
    CHECK(strcmp(s.conns[3].reason, "peer closed the connection") == 0);

    /* The well-behaved conn on the same listener was not touched. */
    CHECK(s.conns[2].closes == 0);
    CHECK(send_str(good.rec.conn, "still here") == 0);
    RUN_UNTIL(&t, good.rec.messages == 1);
    CHECK(strcmp(good.rec.last, "still here") == 0);
    char big[2000];
    memset(big, 'z', sizeof big);
    CHECK(pl_conn_send(s.conns[2].conn, big, sizeof big, err, sizeof err) == -1);
    CHECK(strcmp(err, "message of 2000 bytes exceeds the limit of 1024 bytes") == 0);

    close(garbage);
    close(oversized);
    close(closer);
    pl_listener_close(l);
    CHECK(host_finish(&t) == 0);
}

/* An unref'd listener does not keep the loop alive, yet still accepts. */
static void test_listener_unref(void) {
    test_host t;
    host_init(&t);
    char path[128], err[256];
    path_in_tmp(path, sizeof path, "unref.sock");
    server s;
    memset(&s, 0, sizeof s);
    pl_listener *l = pl_listen(&t.h, unix_addr(path), server_accept, &s, err, sizeof err);
    CHECK(l != NULL);
    CHECK(uv_loop_alive(t.h.loop));
    pl_listener_unref(l);
    CHECK(!uv_loop_alive(t.h.loop));
    client c;
    memset(&c, 0, sizeof c);
    pl_connect(&t.h, unix_addr(path), client_connected, &c);
    RUN_UNTIL(&t, c.done && s.accepted == 1);
    CHECK(host_finish(&t) == 0); /* closes the listener at shutdown */
    CHECK(!file_exists(path));
}

/* Closing from inside on_message: no more messages, one on_close. */
static void test_close_in_handler(void) {
    test_host t;
    host_init(&t);
    char path[128], err[256];
    path_in_tmp(path, sizeof path, "inside.sock");
    server s;
    memset(&s, 0, sizeof s);
    s.conns[0].close_after = 1;
    pl_listener *l = pl_listen(&t.h, unix_addr(path), server_accept, &s, err, sizeof err);
    client c;
    memset(&c, 0, sizeof c);
    pl_connect(&t.h, unix_addr(path), client_connected, &c);
    RUN_UNTIL(&t, c.done && s.accepted == 1);
    send_sequence(c.rec.conn, 0, 3); /* one write: all three in one read */
    RUN_UNTIL(&t, c.rec.closes == 1);
    CHECK(s.conns[0].messages == 1 && s.conns[0].closes == 1);
    CHECK(strcmp(s.conns[0].reason, "enough") == 0);
    CHECK(strcmp(c.rec.reason, "peer closed the connection") == 0);
    pl_listener_close(l);
    CHECK(host_finish(&t) == 0);
}

/* Clearing on_message pauses delivery, even in the middle of what one read
 * brought; setting it again delivers the rest, in order. */
static void test_pause_and_resume(void) {
    test_host t;
    host_init(&t);
    char path[128], err[256];
    path_in_tmp(path, sizeof path, "pause.sock");
    server s;
    memset(&s, 0, sizeof s);
    s.conns[0].pause_after = 2;
    s.conns[0].sequence = 1;
    pl_listener *l = pl_listen(&t.h, unix_addr(path), server_accept, &s, err, sizeof err);
    client c;
    memset(&c, 0, sizeof c);
    pl_connect(&t.h, unix_addr(path), client_connected, &c);
    RUN_UNTIL(&t, c.done && s.accepted == 1);
    send_sequence(c.rec.conn, 0, 5); /* one write */
    RUN_UNTIL(&t, s.conns[0].messages == 2);
    run_turns(&t, 5);
    CHECK(s.conns[0].messages == 2);
    s.conns[0].pause_after = 0;
    rec_attach(&s.conns[0], s.conns[0].conn);
    RUN_UNTIL(&t, s.conns[0].messages == 5);
    CHECK(s.conns[0].out_of_order == 0);

    /* The same over a channel. */
    pl_channel *ch = pl_channel_new();
    pl_conn *a = pl_channel_attach(&t.h, ch, 0);
    pl_conn *b = pl_channel_attach(&t.h, ch, 1);
    pl_channel_release(ch);
    recorder rb;
    memset(&rb, 0, sizeof rb);
    rb.pause_after = 2;
    rb.sequence = 1;
    rec_attach(&rb, b);
    send_sequence(a, 0, 5);
    RUN_UNTIL(&t, rb.messages == 2);
    run_turns(&t, 5);
    CHECK(rb.messages == 2);
    rb.pause_after = 0;
    rec_attach(&rb, b);
    RUN_UNTIL(&t, rb.messages == 5);
    CHECK(rb.out_of_order == 0);
    pl_listener_close(l);
    CHECK(host_finish(&t) == 0);
}

/* Data waits in libuv's queue when the peer does not read; stats show it.
 * Closing with a write in flight frees everything once libuv lets go. */
static void test_queued_when_peer_is_slow(void) {
    test_host t;
    host_init(&t);
    char path[128];
    path_in_tmp(path, sizeof path, "slow.sock");
    int lfd = raw_socket_to(path, 1); /* listens, never accepts or reads */
    CHECK(lfd >= 0);
    client c;
    memset(&c, 0, sizeof c);
    pl_connect(&t.h, unix_addr(path), client_connected, &c);
    RUN_UNTIL(&t, c.done);
    CHECK(c.rec.conn != NULL);
    static char chunk[65536];
    memset(chunk, 'q', sizeof chunk);
    for (int i = 0; i < 100; i++)
        CHECK(pl_conn_send(c.rec.conn, chunk, sizeof chunk, NULL, 0) == 0);
    run_turns(&t, 10);
    pl_conn_stats st;
    pl_conn_stats_get(c.rec.conn, &st);
    CHECK(st.sent == 100);
    CHECK(st.queued > 0 && st.queued < 100 * (sizeof chunk + 4));
    CHECK(send_str(c.rec.conn, "more") == 0); /* queued behind the write */
    pl_conn_stats_get(c.rec.conn, &st);
    CHECK(st.sent == 101);
    pl_conn_close(c.rec.conn, "giving up");
    CHECK(c.rec.closes == 1);
    close(lfd);
    unlink(path);
    CHECK(host_finish(&t) == 0);
}

/* At exit, the host closes every conn with "shutting down", and a connect
 * still in progress hears that it failed. */
static void test_shutdown(void) {
    test_host t;
    host_init(&t);
    char path[128], err[256];
    path_in_tmp(path, sizeof path, "shutdown.sock");
    server s;
    memset(&s, 0, sizeof s);
    pl_listener *l = pl_listen(&t.h, unix_addr(path), server_accept, &s, err, sizeof err);
    CHECK(l != NULL);
    client c, pending;
    memset(&c, 0, sizeof c);
    memset(&pending, 0, sizeof pending);
    pl_connect(&t.h, unix_addr(path), client_connected, &c);
    RUN_UNTIL(&t, c.done && s.accepted == 1);
    send_str(c.rec.conn, "unsent at exit");
    pl_connect(&t.h, unix_addr(path), client_connected, &pending);
    CHECK(host_finish(&t) == 0);
    CHECK(c.rec.closes == 1 && strcmp(c.rec.reason, "shutting down") == 0);
    CHECK(s.conns[0].closes == 1 && strcmp(s.conns[0].reason, "shutting down") == 0);
    CHECK(pending.done == 1 && pending.rec.conn == NULL);
    CHECK(strstr(pending.err, "shutting down") != NULL);
    CHECK(strstr(pending.err, path) != NULL);
    CHECK(!file_exists(path));
}

/* ---- the close rule (net.h), for both layers ------------------------------ */

/* A net stream's owner: counts its ends and the bytes it read. */
typedef struct owner {
    pl_stream *s; /* NULL once ended */
    int ends, connects;
    char err[300];
    int clean;    /* the end came with err NULL */
    size_t got;
} owner;

static void owner_data(pl_stream *s, const char *d, size_t n, void *ud) {
    (void)s, (void)d;
    ((owner *)ud)->got += n;
}

static void owner_lost(pl_stream *s, const char *err, void *ud) {
    (void)s;
    owner *o = ud;
    o->ends++;
    o->clean = err == NULL;
    snprintf(o->err, sizeof o->err, "%s", err ? err : "");
    o->s = NULL;
}

static void owner_take(owner *o, pl_stream *s) {
    o->s = s;
    pl_stream_handler h = {owner_data, NULL, NULL, owner_lost, o};
    pl_stream_set_handler(s, &h);
}

static void owner_connected(pl_stream *s, const char *err, void *ud) {
    owner *o = ud;
    o->connects++;
    if (s) owner_take(o, s);
    else snprintf(o->err, sizeof o->err, "%s", err);
}

typedef struct owners {
    owner accepted[8];
    int n;
} owners;

static void owners_accept(pl_server *srv, pl_stream *s, void *ud) {
    (void)srv;
    owners *a = ud;
    owner_take(&a->accepted[a->n++], s);
}

/* A client and its accepted peer, both owned by recorders. */
static void stream_pair(test_host *t, pl_server *srv, owners *a, owner *c) {
    memset(c, 0, sizeof *c);
    int before = a->n;
    pl_stream_connect_to(&t->h, pl_server_address(srv), 0, owner_connected, c);
    CHECK(c->connects == 0); /* from the loop */
    RUN_UNTIL(t, c->s && a->n == before + 1);
}

/* Every way a net stream ends tells its owner once: an end its owner makes
 * before that call returns, any other from the loop. */
static void test_stream_ends_once(void) {
    test_host t;
    host_init(&t);
    char path[128], err[256], name[PL_SOCKADDR_NAME_MAX];
    path_in_tmp(path, sizeof path, "ends.sock");
    pl_endpoint ep;
    CHECK(pl_endpoint_unix(&ep, path, err, sizeof err) == 0);
    int fd = pl_net_bind(&ep, 8, name, sizeof name, err, sizeof err);
    CHECK(fd >= 0);
    owners a;
    memset(&a, 0, sizeof a);
    pl_server_handler sh = {owners_accept, NULL, &a};
    pl_server *srv = pl_server_open(&t.h, fd, 1, 8, &sh, err, sizeof err);
    CHECK(srv != NULL);
    owner c;

    /* abort: at once, with its reason; the peer hears from the loop */
    stream_pair(&t, srv, &a, &c);
    pl_stream_abort(c.s, "enough");
    CHECK(c.ends == 1 && strcmp(c.err, "enough") == 0);
    RUN_UNTIL(&t, a.accepted[0].ends == 1);
    run_turns(&t, 3);
    CHECK(c.ends == 1 && a.accepted[0].ends == 1);

    /* close: a request; the end comes from the loop once written */
    stream_pair(&t, srv, &a, &c);
    uv_buf_t b = uv_buf_init("bye", 3);
    CHECK(pl_stream_write(c.s, &b, 1, err, sizeof err) == 0);
    pl_stream_close(c.s);
    CHECK(c.ends == 0);
    RUN_UNTIL(&t, c.ends == 1 && a.accepted[1].ends == 1);
    CHECK(c.clean && a.accepted[1].got == 3);

    /* close_after: the owner is done at once; the peer still reads what
     * was queued, and sees the end after the delay */
    stream_pair(&t, srv, &a, &c);
    CHECK(pl_stream_write(c.s, &b, 1, err, sizeof err) == 0);
    uint64_t t0 = uv_now(t.h.loop);
    pl_stream_close_after(c.s, 50);
    CHECK(c.ends == 1 && c.clean);
    RUN_UNTIL(&t, a.accepted[2].ends == 1);
    CHECK(a.accepted[2].got == 3 && uv_now(t.h.loop) - t0 >= 50);
    CHECK(c.ends == 1);

    /* shutdown: at once, for a stream and a connect still pending */
    stream_pair(&t, srv, &a, &c);
    owner pending;
    memset(&pending, 0, sizeof pending);
    pl_stream_connect_to(&t.h, pl_server_address(srv), 0, owner_connected, &pending);
    owner *peer = &a.accepted[3];
    CHECK(host_finish(&t) == 0);
    CHECK(c.ends == 1 && strcmp(c.err, "shutting down") == 0);
    CHECK(peer->ends == 1);
    CHECK(pending.connects == 1 && pending.s == NULL && pending.ends == 0);
    CHECK(strstr(pending.err, "shutting down") != NULL);
    unlink(path); /* a pl_server leaves its socket file to whoever bound it */
}

/* The same rule for a mailbox conn: close and close_after are the owner's
 * ends (on_close before they return), the peer's is reported from the loop,
 * and nothing is reported twice, even after the linger. */
static void test_conn_ends_once(void) {
    test_host t;
    host_init(&t);
    char path[128], err[256];
    path_in_tmp(path, sizeof path, "conn-ends.sock");
    server s;
    memset(&s, 0, sizeof s);
    pl_listener *l = pl_listen(&t.h, unix_addr(path), server_accept, &s, err,
                               sizeof err);
    CHECK(l != NULL);
    client c;
    memset(&c, 0, sizeof c);
    pl_connect(&t.h, unix_addr(path), client_connected, &c);
    RUN_UNTIL(&t, c.done && s.accepted == 1);
    CHECK(send_str(c.rec.conn, "refused: busy") == 0);
    uint64_t t0 = uv_now(t.h.loop);
    pl_conn_close_after(c.rec.conn, 50, "turned away");
    CHECK(c.rec.closes == 1 && strcmp(c.rec.reason, "turned away") == 0);
    RUN_UNTIL(&t, s.conns[0].closes == 1);
    CHECK(s.conns[0].messages == 1 && strcmp(s.conns[0].last, "refused: busy") == 0);
    CHECK(uv_now(t.h.loop) - t0 >= 50);
    CHECK(strcmp(s.conns[0].reason, "peer closed the connection") == 0);
    run_turns(&t, 3);
    CHECK(c.rec.closes == 1 && s.conns[0].closes == 1);
    pl_listener_close(l);
    CHECK(host_finish(&t) == 0);
}

/* ---- channels ----------------------------------------------------------------- */

static void test_channel_same_loop(void) {
    test_host t;
    host_init(&t);
    pl_channel *ch = pl_channel_new();
    pl_conn *a = pl_channel_attach(&t.h, ch, 0);
    pl_conn *b = pl_channel_attach(&t.h, ch, 1);
    CHECK(a != NULL && b != NULL);
    CHECK(pl_channel_attach(&t.h, ch, 0) == NULL); /* taken */
    CHECK(pl_channel_attach(&t.h, ch, 2) == NULL);
    pl_channel_release(ch); /* the conns hold it now */

    recorder ra, rb;
    memset(&ra, 0, sizeof ra);
    memset(&rb, 0, sizeof rb);
    /* Sent before the reader has a handler: kept, then delivered. */
    CHECK(send_str(a, "early") == 0);
    run_turns(&t, 5);
    rec_attach(&ra, a);
    rb.sequence = 0;
    rec_attach(&rb, b);
    RUN_UNTIL(&t, rb.messages == 1);
    CHECK(strcmp(rb.last, "early") == 0);

    /* 10k in one turn: one push into the inbox, few wake-ups. */
    rb.messages = 0;
    rb.sequence = 1;
    long long writes_before = write_syscalls();
    send_sequence(a, 0, MANY);
    RUN_UNTIL(&t, rb.messages == MANY);
    CHECK(rb.out_of_order == 0);
    if (writes_before >= 0) {
        long long writes = write_syscalls() - writes_before;
        printf("conn: %d channel messages cost %lld write calls\n", MANY, writes);
        CHECK(writes <= MANY / 100);
    }

    /* The other way, and close: last messages first, then on_close. */
    rb.sequence = 0;
    CHECK(send_str(b, "bye") == 0);
    RUN_UNTIL(&t, ra.messages == 1);
    CHECK(send_str(a, "last words") == 0);
    run_turns(&t, 1); /* flushed: delivered before the close */
    CHECK(send_str(a, "never sent") == 0); /* a close flushes nothing */
    pl_conn_close(a, "leaving");
    CHECK(ra.closes == 1 && strcmp(ra.reason, "leaving") == 0);
    RUN_UNTIL(&t, rb.closes == 1);
    CHECK(strcmp(rb.last, "last words") == 0);
    CHECK(strcmp(rb.reason, "peer closed the connection") == 0);

    /* And from the other side. */
    ch = pl_channel_new();
    a = pl_channel_attach(&t.h, ch, 0);
    b = pl_channel_attach(&t.h, ch, 1);
    pl_channel_release(ch);
    memset(&ra, 0, sizeof ra);
    memset(&rb, 0, sizeof rb);
    rec_attach(&ra, a);
    rec_attach(&rb, b);
    pl_conn_close(b, "side 1 leaves");
    RUN_UNTIL(&t, ra.closes == 1);
    CHECK(strcmp(ra.reason, "peer closed the connection") == 0);
    CHECK(host_finish(&t) == 0);
}

enum peer_mode { PEER_ECHO, PEER_COLLECT, PEER_FLOOD };

/* The other thread: its own host and loop, one channel side. */
typedef struct peer_thread {
    uv_thread_t thread;
    pl_channel *ch;
    int side;
    enum peer_mode mode;
    int release_creator_ref; /* the creator handed its reference along */
    int collect;             /* PEER_COLLECT: close after this many */
    recorder rec;
    uv_idle_t flood;
    long flood_next;
    int attach_failed;
    int finish_rc;
} peer_thread;

static void flood_step(uv_idle_t *idle) {
    peer_thread *p = idle->data;
    if (!p->rec.conn) return;
    send_sequence(p->rec.conn, p->flood_next, 10);
    p->flood_next += 10;
}

static void peer_main(void *arg) {
    peer_thread *p = arg;
    test_host t;
    host_init(&t);
    pl_conn *c = pl_channel_attach(&t.h, p->ch, p->side);
    if (p->release_creator_ref) pl_channel_release(p->ch);
    if (!c) {
        p->attach_failed = 1;
    } else {
        p->rec.echo = p->mode == PEER_ECHO;
        p->rec.sequence = p->mode == PEER_COLLECT;
        p->rec.close_after = p->mode == PEER_COLLECT ? p->collect : 0;
        if (p->mode == PEER_FLOOD) {
            uv_idle_init(t.h.loop, &p->flood);
            p->flood.data = p;
            uv_idle_start(&p->flood, flood_step);
            p->rec.idle_to_close = &p->flood;
        }
        rec_attach(&p->rec, c);
        /* Ends when the conn (and the flood) are closed. */
        uv_run(t.h.loop, UV_RUN_DEFAULT);
    }
    p->finish_rc = host_finish(&t);
}

static void test_channel_threads_ping_pong(void) {
    test_host t;
    host_init(&t);
    pl_channel *ch = pl_channel_new();
    pl_conn *a = pl_channel_attach(&t.h, ch, 0);
    recorder ra;
    memset(&ra, 0, sizeof ra);
    ra.sequence = 1;
    ra.relay_until = MANY;
    rec_attach(&ra, a);
    peer_thread *p = calloc(1, sizeof *p);
    p->ch = ch;
    p->side = 1;
    p->mode = PEER_ECHO;
    CHECK(uv_thread_create(&p->thread, peer_main, p) == 0);
    send_str(a, "0");
    RUN_UNTIL(&t, ra.messages == MANY);
    CHECK(ra.out_of_order == 0);
    pl_conn_close(a, "finished");
    uv_thread_join(&p->thread);
    CHECK(!p->attach_failed && p->finish_rc == 0);
    CHECK(p->rec.messages == MANY);
    CHECK(p->rec.closes == 1);
    CHECK(strcmp(p->rec.reason, "peer closed the connection") == 0);
    pl_channel_release(ch); /* the last reference: frees it */
    CHECK(host_finish(&t) == 0);
    free(p);
}

/* Closing while the other thread keeps sending. */
static void test_channel_close_during_flood(void) {
    test_host t;
    host_init(&t);
    pl_channel *ch = pl_channel_new();
    pl_conn *a = pl_channel_attach(&t.h, ch, 0);
    recorder ra;
    memset(&ra, 0, sizeof ra);
    ra.sequence = 1;
    rec_attach(&ra, a);
    peer_thread *p = calloc(1, sizeof *p);
    p->ch = ch;
    p->side = 1;
    p->mode = PEER_FLOOD;
    CHECK(uv_thread_create(&p->thread, peer_main, p) == 0);
    RUN_UNTIL(&t, ra.messages >= 1000);
    CHECK(ra.out_of_order == 0);
    pl_conn_close(a, "had enough");
    pl_channel_release(ch); /* may not be the last: the peer frees it then */
    uv_thread_join(&p->thread);
    CHECK(!p->attach_failed && p->finish_rc == 0);
    CHECK(p->rec.closes == 1);
    CHECK(strcmp(p->rec.reason, "peer closed the connection") == 0);
    CHECK(host_finish(&t) == 0);
    free(p);
}

/* Messages sent before the peer attaches wait for it; the peer closes. */
static void test_channel_send_before_attach(void) {
    test_host t;
    host_init(&t);
    pl_channel *ch = pl_channel_new();
    pl_conn *a = pl_channel_attach(&t.h, ch, 0);
    recorder ra;
    memset(&ra, 0, sizeof ra);
    rec_attach(&ra, a);
    send_sequence(a, 0, 100);
    run_turns(&t, 3); /* flushed into the inbox, nobody to wake */
    peer_thread *p = calloc(1, sizeof *p);
    p->ch = ch;
    p->side = 1;
    p->mode = PEER_COLLECT;
    p->collect = 100;
    p->release_creator_ref = 1;
    CHECK(uv_thread_create(&p->thread, peer_main, p) == 0);
    RUN_UNTIL(&t, ra.closes == 1);
    CHECK(strcmp(ra.reason, "peer closed the connection") == 0);
    uv_thread_join(&p->thread);
    CHECK(!p->attach_failed && p->finish_rc == 0);
    CHECK(p->rec.messages == 100 && p->rec.out_of_order == 0);
    CHECK(strcmp(p->rec.reason, "enough") == 0);
    CHECK(host_finish(&t) == 0);
    free(p);

    /* Sent, then closed, all before the peer attaches: it still gets the
     * messages, then the close. */
    host_init(&t);
    ch = pl_channel_new();
    a = pl_channel_attach(&t.h, ch, 0);
    send_sequence(a, 0, 5);
    run_turns(&t, 3);
    pl_conn_close(a, "gone early");
    p = calloc(1, sizeof *p);
    p->ch = ch;
    p->side = 1;
    p->mode = PEER_COLLECT;
    p->release_creator_ref = 1;
    CHECK(uv_thread_create(&p->thread, peer_main, p) == 0);
    uv_thread_join(&p->thread);
    CHECK(!p->attach_failed && p->finish_rc == 0);
    CHECK(p->rec.messages == 5 && p->rec.out_of_order == 0);
    CHECK(strcmp(p->rec.reason, "peer closed the connection") == 0);
    CHECK(host_finish(&t) == 0);
    free(p);
}

int main(void) {
    alarm(600); /* a hang fails the run instead of blocking it */
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_conn.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_stream_basics();
    test_addresses();
    test_batching();
    test_split_reads();
    test_bad_frames();
    test_listener_unref();
    test_close_in_handler();
    test_pause_and_resume();
    test_queued_when_peer_is_slow();
    test_shutdown();
    test_stream_ends_once();
    test_conn_ends_once();
    test_channel_same_loop();
    test_channel_threads_ping_pong();
    test_channel_close_during_flood();
    test_channel_send_before_attach();
    rmdir(tmpdir);
    return CHECK_REPORT("conn");
}
