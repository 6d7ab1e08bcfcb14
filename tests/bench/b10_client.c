/* b10_client.c: the load of B10 (docs/BENCHMARKS.md), the same for every
 * server (the C floor, pulsar-lua, node's ws): C WebSocket connections to an
 * echo server, each sending a SIZE-byte text message (masked, as a client
 * must) and waiting for its echo before the next one, one message in flight
 * per connection, from one epoll loop, for SECONDS after a warm-up.
 *
 *   b10_client HOST:PORT [CONNECTIONS [SIZE [SECONDS [PATH]]]]
 *                                             (64, 32, 5, /echo)
 *
 * Prints key=value lines for scripts/bench:
 *   msgs_per_s          echoes received per second over the whole run
 *   p50_us, p99_us      a message's round trip
 *   rate_p50, rate_p01  messages/s over 50 ms windows: the median window
 *                       and the slowest 1% of them
 *
 * One thread, like tests/bench/b6_client.c: on 2 cores a second client
 * thread would take the servers' CPU. The frames are written by hand (this
 * is a benchmark tool; the codec under test is the server's). Every
 * handshake is checked, the Sec-WebSocket-Accept value included (SHA-1 from
 * libcrypto), and every echo is compared with what was sent: a refused
 * upgrade, a closed connection or a wrong echo is an error (exit 1). A ping
 * from the server is answered with a pong; at the end each connection sends
 * a close frame (1000) before it closes. */
#define _GNU_SOURCE /* strcasestr */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "floor.h"

#define WARMUP 0.5
#define WINDOW 0.05
#define MAX_SIZE 125 /* one-byte payload length: the small messages of B10 */
#define IN_SIZE 4096

static const char GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

typedef struct client {
    int fd;
    double sent_at;
    unsigned seq;
    size_t have;              /* bytes in `in` not parsed yet */
    char msg[MAX_SIZE];       /* the payload in flight */
    unsigned char in[IN_SIZE];
} client;

static size_t size = 32;

static void die(const char *what) {
    fprintf(stderr, "b10_client: %s\n", what);
    exit(1);
}

/* A masked client frame of `len` payload bytes (len <= 125) into out;
 * returns its length. The mask key varies per frame, as RFC 6455 asks. */
static size_t frame(unsigned char *out, int opcode, const void *payload, size_t len) {
    static uint32_t state = 2463534242u;
    state ^= state << 13, state ^= state >> 17, state ^= state << 5;
    unsigned char key[4];
    memcpy(key, &state, 4);
    out[0] = (unsigned char)(0x80 | opcode);
    out[1] = (unsigned char)(0x80 | len);
    memcpy(out + 2, key, 4);
    const unsigned char *p = payload;
    for (size_t i = 0; i < len; i++) out[6 + i] = p[i] ^ key[i & 3];
    return 6 + len;
}

static int send_frame(client *c, int opcode, const void *payload, size_t len) {
    unsigned char out[6 + MAX_SIZE];
    return write_full(c->fd, out, frame(out, opcode, payload, len));
}

static int send_one(client *c) {
    c->seq++;
    memset(c->msg, 'a' + (int)(c->seq % 26), size);
    int n = snprintf(c->msg, size, "%u:", c->seq);
    if (n > 0 && (size_t)n < size) c->msg[n] = '.';
    c->sent_at = now();
    return send_frame(c, 0x1, c->msg, size);
}

static int connect_to(const char *host, int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("b10_client: connect");
        exit(1);
    }
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    return fd;
}

/* base64(SHA-1(key + GUID)): the accept value the server must answer. */
static void accept_for(const char *key, char out[29]) {
    char joined[128];
    unsigned char digest[SHA_DIGEST_LENGTH];
    int n = snprintf(joined, sizeof joined, "%s%s", key, GUID);
    SHA1((const unsigned char *)joined, (size_t)n, digest);
    EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
}

/* Sends the upgrade request and reads the answer (blocking: before the
 * clock starts); what follows the answer's head stays in c->in. */
static void handshake(client *c, const char *host, int port, const char *path, int i) {
    unsigned char raw[16];
    for (int k = 0; k < 16; k++) raw[k] = (unsigned char)(i * 31 + k * 7 + 1);
    char key[25], req[512];
    EVP_EncodeBlock((unsigned char *)key, raw, 16);
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     path, host, port, key);
    if (write_full(c->fd, req, (size_t)n) != 0) die("the upgrade request could not be sent");
    char *end = NULL;
    while (!end) {
        if (c->have == IN_SIZE - 1) die("the upgrade answer's head is too long");
        ssize_t r = read(c->fd, c->in + c->have, IN_SIZE - 1 - c->have);
        if (r <= 0) die("the server closed a connection during the handshake");
        c->have += (size_t)r;
        c->in[c->have] = 0;
        end = strstr((char *)c->in, "\r\n\r\n");
    }
    *end = 0;
    char want[29], *line = strcasestr((char *)c->in, "\r\nSec-WebSocket-Accept:");
    accept_for(key, want);
    if (strncmp((char *)c->in, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "b10_client: the upgrade was refused: %.80s\n", (char *)c->in);
        exit(1);
    }
    if (!line) die("the 101 has no Sec-WebSocket-Accept");
    line += strlen("\r\nSec-WebSocket-Accept:");
    while (*line == ' ') line++;
    if (strncmp(line, want, 28) != 0) die("the 101's Sec-WebSocket-Accept is wrong");
    size_t head = (size_t)(end + 4 - (char *)c->in);
    c->have -= head;
    memmove(c->in, c->in + head, c->have);
}

/* One whole server frame at the front of c->in: returns its length and sets
 * *opcode, *payload, *len; 0 when it is not all there yet; exits on a frame
 * the echo of small messages never has (masked, fragmented, too long). */
static size_t next_frame(client *c, int *opcode, unsigned char **payload, size_t *len) {
    if (c->have < 2) return 0;
    unsigned char *p = c->in;
    if ((p[0] & 0x80) == 0 || (p[0] & 0x70) != 0) die("a fragmented or RSV frame came back");
    if (p[1] & 0x80) die("the server sent a masked frame");
    size_t n = p[1] & 0x7f, head = 2;
    if (n == 126) {
        if (c->have < 4) return 0;
        n = (size_t)p[2] << 8 | p[3], head = 4;
    } else if (n == 127) {
        die("a frame over 64 KiB came back");
    }
    if (head + n > IN_SIZE) die("a frame too long for the client came back");
    if (c->have < head + n) return 0;
    *opcode = p[0] & 0x0f, *payload = p + head, *len = n;
    return head + n;
}

typedef struct stats {
    double measure;           /* when the warm-up ends */
    double *rtt, *windows;
    size_t nrtt, cap, nwin, win_used;
    unsigned long total;
} stats;

static void record(stats *s, double sent_at, double done) {
    if (done < s->measure) return;
    if (s->nrtt == s->cap) {
        s->rtt = realloc(s->rtt, (s->cap *= 2) * sizeof *s->rtt);
        if (!s->rtt) die("out of memory");
    }
    s->rtt[s->nrtt++] = done - sent_at;
    size_t w = (size_t)((done - s->measure) / WINDOW);
    if (w < s->nwin) {
        s->windows[w] += 1;
        if (w + 1 > s->win_used) s->win_used = w + 1;
    }
    s->total++;
}

/* Reads what came and handles every whole frame in it. */
static void on_readable(client *c, stats *s) {
    ssize_t r = read(c->fd, c->in + c->have, IN_SIZE - c->have);
    if (r < 0 && errno == EAGAIN) return;
    if (r <= 0) die("the server closed a connection");
    c->have += (size_t)r;
    int opcode;
    unsigned char *payload;
    size_t len, used;
    while ((used = next_frame(c, &opcode, &payload, &len)) > 0) {
        if (opcode == 0x9) {
            if (send_frame(c, 0xA, payload, len) != 0) die("a pong could not be sent");
        } else if (opcode == 0x8) {
            die("the server closed a connection with a close frame");
        } else if (opcode == 0x1) {
            if (len != size || memcmp(payload, c->msg, size) != 0)
                die("an echo differs from what was sent");
            record(s, c->sent_at, now());
            if (send_one(c) != 0) die("a write failed");
        } else if (opcode != 0xA) {
            die("an unexpected frame came back");
        }
        c->have -= used;
        memmove(c->in, c->in + used, c->have);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: b10_client HOST:PORT [CONNECTIONS [SIZE [SECONDS [PATH]]]]\n");
        return 2;
    }
    char host[64];
    int port;
    if (sscanf(argv[1], "%63[^:]:%d", host, &port) != 2) return 2;
    int nconn = argc > 2 ? atoi(argv[2]) : 64;
    size = argc > 3 ? (size_t)atoi(argv[3]) : 32;
    double seconds = argc > 4 ? atof(argv[4]) : 5;
    const char *path = argc > 5 ? argv[5] : "/echo";
    if (nconn < 1 || size < 16 || size > MAX_SIZE || seconds <= 0) return 2;

    client *cs = calloc((size_t)nconn, sizeof *cs);
    stats s = {.cap = 1 << 20, .nwin = (size_t)(seconds / WINDOW) + 2};
    s.rtt = malloc(s.cap * sizeof *s.rtt);
    s.windows = calloc(s.nwin, sizeof *s.windows);
    int ep = epoll_create1(0);
    if (!cs || !s.rtt || !s.windows || ep < 0) die("out of memory");
    for (int i = 0; i < nconn; i++) {
        cs[i].fd = connect_to(host, port);
        handshake(&cs[i], host, port, path, i);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    for (int i = 0; i < nconn; i++)
        if (send_one(&cs[i]) != 0) die("a write failed");
    s.measure = now() + WARMUP;
    double end = s.measure + seconds;
    struct epoll_event events[256];
    for (double t = now(); t < end; t = now()) {
        int n = epoll_wait(ep, events, 256, 100);
        for (int i = 0; i < n; i++) on_readable(events[i].data.ptr, &s);
    }
    double elapsed = now() - s.measure;
    if (s.nrtt == 0) die("no echo came back");
    /* whole windows only: the last one may be cut short */
    size_t nw = s.win_used > 1 ? s.win_used - 1 : s.win_used;
    for (size_t w = 0; w < nw; w++) s.windows[w] /= WINDOW;
    printf("msgs_per_s=%.0f\n", (double)s.total / elapsed);
    printf("p50_us=%.1f\n", quantile(s.rtt, s.nrtt, 0.50) * 1e6);
    printf("p99_us=%.1f\n", quantile(s.rtt, s.nrtt, 0.99) * 1e6);
    printf("rate_p50=%.0f\n", quantile(s.windows, nw, 0.50));
    printf("rate_p01=%.0f\n", quantile(s.windows, nw, 0.01));
    static const unsigned char bye[2] = {0x03, 0xe8}; /* 1000, normal closure */
    for (int i = 0; i < nconn; i++) {
        send_frame(&cs[i], 0x8, bye, sizeof bye);
        close(cs[i].fd);
    }
    free(cs);
    free(s.rtt);
    free(s.windows);
    return 0;
}
