/* b1_floor: the B1 baseline (docs/BENCHMARKS.md): two processes ping-ponging
 * 32 bytes over a Unix socketpair, one round trip at a time, each timed.
 *
 *   b1_floor [N]      N timed round trips (default 50000), after max(100, N/10)
 *                   warm-up ones
 *
 * Prints key=value lines: n, rtt_p50_us, rtt_p99_us, rate (round trips/s over
 * the whole run). Built by scripts/bench with cc -O2; no runtime involved. */
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

#define MSG 32

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 50000;
    if (n < 1) n = 1;
    long warm = n / 10 < 100 ? 100 : n / 10;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) { perror("socketpair"); return 1; }
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 1; }
    char buf[MSG];
    if (pid == 0) { /* the echoer */
        close(sv[0]);
        while (read_full(sv[1], buf, MSG) == 1)
            if (write_full(sv[1], buf, MSG) != 0) break;
        _exit(0);
    }
    close(sv[1]);
    memset(buf, 'x', MSG);
    double *samples = malloc((size_t)n * sizeof *samples);
    if (!samples) return 1;
    for (long i = 0; i < warm; i++)
        if (write_full(sv[0], buf, MSG) != 0 || read_full(sv[0], buf, MSG) != 1) return 1;
    double start = now();
    for (long i = 0; i < n; i++) {
        double t0 = now();
        if (write_full(sv[0], buf, MSG) != 0 || read_full(sv[0], buf, MSG) != 1) {
            fprintf(stderr, "b1_floor: echoer went away\n");
            return 1;
        }
        samples[i] = now() - t0;
    }
    double total = now() - start;
    close(sv[0]);
    waitpid(pid, NULL, 0);
    printf("n=%ld\n", n);
    printf("rtt_p50_us=%.3f\n", quantile(samples, (size_t)n, 0.50) * 1e6);
    printf("rtt_p99_us=%.3f\n", quantile(samples, (size_t)n, 0.99) * 1e6);
    printf("rate=%.0f\n", (double)n / total);
    free(samples);
    return 0;
}
