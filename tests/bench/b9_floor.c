/* b9_floor: the floor of B9 (docs/BENCHMARKS.md): two processes (fork)
 * ping-ponging 40 bytes, about one envelope between nodes, over a TCP
 * connection on 127.0.0.1 with TCP_NODELAY, one round trip at a time, each
 * timed. This is what a node<->node round trip costs on this machine with no
 * runtime at all: two syscalls and a loopback hop each way.
 *
 *   b9_floor [N]      N timed round trips (default 50000), after
 *                     max(100, N/10) warm-up ones
 *
 * Prints key=value lines: n, rtt_p50_us, rtt_p99_us, rate (round trips/s over
 * the whole run), the keys of b1_floor. Built by scripts/bench with cc -O2. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "floor.h"

#define MSG 40

/* A socket listening on 127.0.0.1 at a port the kernel picks; its address
 * goes to *addr. -1 on error. */
static int listen_loopback(struct sockaddr_in *addr) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof *addr;
    if (bind(fd, (struct sockaddr *)addr, len) != 0 || listen(fd, 1) != 0 ||
        getsockname(fd, (struct sockaddr *)addr, &len) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int nodelay(int fd) {
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* The echoer (the child): connects and sends back every message it reads
 * until the other side closes. */
static int echo(const struct sockaddr_in *addr) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (const struct sockaddr *)addr, sizeof *addr) != 0 ||
        nodelay(fd) != 0) {
        perror("b9_floor: echoer");
        return 1;
    }
    char buf[MSG];
    while (read_full(fd, buf, MSG) == 1)
        if (write_full(fd, buf, MSG) != 0) break;
    close(fd);
    return 0;
}

/* One round trip on fd: 0, or -1 when the echoer went away. */
static int round_trip(int fd, char *buf) {
    return write_full(fd, buf, MSG) == 0 && read_full(fd, buf, MSG) == 1 ? 0 : -1;
}

/* The timed loop: n round trips after warm ones; samples[i] in seconds. */
static int ping(int fd, long warm, long n, double *samples, double *total) {
    char buf[MSG];
    memset(buf, 'x', MSG);
    for (long i = 0; i < warm; i++)
        if (round_trip(fd, buf) != 0) return -1;
    double start = now();
    for (long i = 0; i < n; i++) {
        double t0 = now();
        if (round_trip(fd, buf) != 0) return -1;
        samples[i] = now() - t0;
    }
    *total = now() - start;
    return 0;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 50000;
    if (n < 1) n = 1;
    long warm = n / 10 < 100 ? 100 : n / 10;
    struct sockaddr_in addr;
    int lfd = listen_loopback(&addr);
    if (lfd < 0) { perror("b9_floor: listen"); return 1; }
    pid_t pid = fork();
    if (pid < 0) { perror("b9_floor: fork"); return 1; }
    if (pid == 0) {
        close(lfd);
        _exit(echo(&addr));
    }
    int fd = accept(lfd, NULL, NULL);
    close(lfd);
    if (fd < 0 || nodelay(fd) != 0) { perror("b9_floor: accept"); return 1; }
    double *samples = malloc((size_t)n * sizeof *samples);
    if (!samples) { fprintf(stderr, "b9_floor: out of memory\n"); return 1; }
    double total = 0;
    int rc = ping(fd, warm, n, samples, &total);
    close(fd);
    waitpid(pid, NULL, 0);
    if (rc != 0) {
        fprintf(stderr, "b9_floor: echoer went away\n");
        free(samples);
        return 1;
    }
    printf("n=%ld\n", n);
    printf("rtt_p50_us=%.3f\n", quantile(samples, (size_t)n, 0.50) * 1e6);
    printf("rtt_p99_us=%.3f\n", quantile(samples, (size_t)n, 0.99) * 1e6);
    printf("rate=%.0f\n", (double)n / total);
    free(samples);
    return 0;
}
