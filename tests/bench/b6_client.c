/* b6_client.c: the load of B6 (docs/BENCHMARKS.md), the same for both servers:
 * C connections to an echo server, each sending a SIZE-byte message and
 * waiting for its echo before the next one (one message in flight per
 * connection), from one epoll loop, for SECONDS after a warm-up.
 *
 *   b6_client HOST:PORT [CONNECTIONS [SIZE [SECONDS]]]   (64, 64, 5)
 *
 * Prints key=value lines for scripts/bench:
 *   rtt_p50_us, rtt_p99_us   a message's round trip
 *   rate_p50, rate_p01       messages/s over 50 ms windows: the median
 *                            window, and the slowest 1% of them
 *   rate_total               messages/s over the whole run
 * A connection that closes, or an echo that differs from what was sent,
 * is an error (exit 1). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "floor.h"

#define WARMUP 0.5
#define WINDOW 0.05

typedef struct client {
    int fd;
    size_t got;       /* bytes of the echo received so far */
    double sent_at;
    unsigned seq;
    char out[1024], in[1024];
} client;

static size_t size = 64;

static void fill(client *c) {
    memset(c->out, 'a' + (int)(c->seq % 26), size);
    snprintf(c->out, size, "%u:", c->seq);
    c->out[strlen(c->out)] = '.';
}

static int send_one(client *c) {
    c->seq++;
    fill(c);
    c->got = 0;
    c->sent_at = now();
    return write_full(c->fd, c->out, size);
}

static int connect_to(const char *host, int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("b6_client: connect");
        exit(1);
    }
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    return fd;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: b6_client HOST:PORT [CONNECTIONS [SIZE [SECONDS]]]\n");
        return 2;
    }
    char host[64];
    int port;
    if (sscanf(argv[1], "%63[^:]:%d", host, &port) != 2) return 2;
    int nconn = argc > 2 ? atoi(argv[2]) : 64;
    size = argc > 3 ? (size_t)atoi(argv[3]) : 64;
    double seconds = argc > 4 ? atof(argv[4]) : 5;
    if (nconn < 1 || size < 16 || size > 1024 || seconds <= 0) return 2;

    client *cs = calloc((size_t)nconn, sizeof *cs);
    int ep = epoll_create1(0);
    for (int i = 0; i < nconn; i++) {
        cs[i].fd = connect_to(host, port);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    size_t cap = 1 << 20, nrtt = 0;
    double *rtt = malloc(cap * sizeof *rtt);
    size_t nwin = (size_t)(seconds / WINDOW) + 2, win_used = 0;
    double *windows = calloc(nwin, sizeof *windows);
    for (int i = 0; i < nconn; i++) send_one(&cs[i]);
    double start = now(), measure = start + WARMUP, end = measure + seconds;
    unsigned long total = 0;
    struct epoll_event events[256];
    for (double t = now(); t < end; t = now()) {
        int n = epoll_wait(ep, events, 256, 100);
        for (int i = 0; i < n; i++) {
            client *c = events[i].data.ptr;
            ssize_t r = read(c->fd, c->in + c->got, size - c->got);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                fprintf(stderr, "b6_client: the server closed a connection\n");
                return 1;
            }
            c->got += (size_t)r;
            if (c->got < size) continue;
            double done = now();
            if (memcmp(c->in, c->out, size) != 0) {
                fprintf(stderr, "b6_client: an echo differs from what was sent\n");
                return 1;
            }
            if (done >= measure) {
                if (nrtt == cap) rtt = realloc(rtt, (cap *= 2) * sizeof *rtt);
                rtt[nrtt++] = done - c->sent_at;
                size_t w = (size_t)((done - measure) / WINDOW);
                if (w < nwin) windows[w] += 1, win_used = w + 1 > win_used ? w + 1 : win_used;
                total++;
            }
            if (send_one(c) != 0) {
                fprintf(stderr, "b6_client: write failed\n");
                return 1;
            }
        }
    }
    double elapsed = now() - measure;
    if (nrtt == 0) {
        fprintf(stderr, "b6_client: no echo came back\n");
        return 1;
    }
    /* whole windows only: the last one may be cut short */
    size_t nw = win_used > 1 ? win_used - 1 : win_used;
    for (size_t w = 0; w < nw; w++) windows[w] /= WINDOW;
    printf("rtt_p50_us=%.1f\n", quantile(rtt, nrtt, 0.50) * 1e6);
    printf("rtt_p99_us=%.1f\n", quantile(rtt, nrtt, 0.99) * 1e6);
    printf("rate_p50=%.0f\n", quantile(windows, nw, 0.50));
    printf("rate_p01=%.0f\n", quantile(windows, nw, 0.01));
    printf("rate_total=%.0f\n", (double)total / elapsed);
    for (int i = 0; i < nconn; i++) close(cs[i].fd);
    free(cs);
    free(rtt);
    free(windows);
    return 0;
}
