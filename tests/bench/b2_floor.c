/* b2_floor: the B2 baseline (docs/BENCHMARKS.md): a C writer process streams N
 * frames (a 2-byte websocket-like header, FIN+binary and a 7-bit length,
 * then a payload the size of a small encoded pulsar message) over a Unix
 * socketpair to a reader process that parses them.
 *
 *   b2_floor [N] [PAYLOAD] [MODE]
 *     N        frames (default 1000000)
 *     PAYLOAD  payload bytes, 1..125 (default 72: a cast of one small
 *              argument, {command=,id=,sender=,target=,args=,ack=false})
 *     MODE     batched: the writer packs frames into 64 KiB writes (the
 *                       floor; what a buffered, coalescing writer costs)
 *              each:    one write(2) per frame
 *              both:    batched, then each (default)
 *
 * The reader times every batch of 10000 frames (CLOCK_MONOTONIC) and prints
 * key=value lines: for batched, rate_p50 (the median batch rate, frames/s),
 * rate_p01 (the slowest 1% batch rate), rate_total (N over the whole
 * stream); for each, the same keys prefixed with each_. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "floor.h"

#define BATCH 10000
#define WBUF (64 * 1024)
#define RBUF (256 * 1024)

static void writer(int fd, long n, int payload, int batched) {
    unsigned char frame[2 + 125];
    frame[0] = 0x82; /* FIN, binary */
    frame[1] = (unsigned char)payload;
    for (int i = 0; i < payload; i++) frame[2 + i] = (unsigned char)('a' + i % 26);
    frame[2] = 0x86; /* a msgpack map of 6, for looks */
    size_t flen = 2 + (size_t)payload;
    if (!batched) {
        for (long i = 0; i < n; i++) {
            frame[3] = (unsigned char)i;
            if (write_full(fd, frame, flen) != 0) _exit(1);
        }
        return;
    }
    static unsigned char buf[WBUF];
    size_t used = 0;
    for (long i = 0; i < n; i++) {
        if (used + flen > sizeof buf) {
            if (write_full(fd, buf, used) != 0) _exit(1);
            used = 0;
        }
        frame[3] = (unsigned char)i;
        memcpy(buf + used, frame, flen);
        used += flen;
    }
    if (used && write_full(fd, buf, used) != 0) _exit(1);
}

/* Runs one stream; fills rates[] with per-batch rates; returns the batch
 * count, or -1 on error. *total gets N / whole time. */
static long run(long n, int payload, int batched, double *rates, double *total) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) { perror("socketpair"); return -1; }
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return -1; }
    if (pid == 0) {
        close(sv[0]);
        writer(sv[1], n, payload, batched);
        close(sv[1]);
        _exit(0);
    }
    close(sv[1]);
    static unsigned char buf[RBUF];
    size_t have = 0;
    long count = 0, nb = 0;
    unsigned sum = 0;
    double start = 0, mark = 0;
    for (;;) {
        ssize_t r = read(sv[0], buf + have, sizeof buf - have);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { perror("read"); return -1; }
        if (r == 0) break;
        if (start == 0) start = mark = now();
        have += (size_t)r;
        size_t off = 0;
        while (have - off >= 2) {
            unsigned char *f = buf + off;
            size_t len = f[1] & 0x7f;
            if (f[0] != 0x82 || len >= 126) {
                fprintf(stderr, "b2_floor: bad frame at %ld\n", count);
                return -1;
            }
            if (have - off < 2 + len) break;
            sum += f[2 + len - 1] + f[3];
            off += 2 + len;
            if (++count % BATCH == 0) {
                double t = now();
                rates[nb++] = BATCH / (t - mark);
                mark = t;
            }
        }
        memmove(buf, buf + off, have - off);
        have -= off;
    }
    double end = now();
    close(sv[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (count != n || have != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "b2_floor: got %ld of %ld frames (%u)\n", count, n, sum);
        return -1;
    }
    *total = (double)n / (end - start);
    return nb;
}

static int report(const char *prefix, long n, int payload, int batched) {
    double *rates = malloc(((size_t)n / BATCH + 1) * sizeof *rates);
    double total = 0;
    long nb = run(n, payload, batched, rates, &total);
    if (nb < 0) return 1;
    if (nb == 0) rates[nb++] = total;
    printf("%srate_p50=%.0f\n", prefix, quantile(rates, (size_t)nb, 0.50));
    printf("%srate_p01=%.0f\n", prefix, quantile(rates, (size_t)nb, 0.01));
    printf("%srate_total=%.0f\n", prefix, total);
    free(rates);
    return 0;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    int payload = argc > 2 ? atoi(argv[2]) : 72;
    const char *mode = argc > 3 ? argv[3] : "both";
    if (n < 1) n = 1;
    if (payload < 2) payload = 2;
    if (payload > 125) payload = 125;
    printf("n=%ld\npayload=%d\n", n, payload);
    int rc = 0;
    if (strcmp(mode, "each") != 0) rc |= report("", n, payload, 1);
    if (strcmp(mode, "batched") != 0) rc |= report("each_", n, payload, 0);
    return rc;
}
