/* b1_thread_floor: the thread floor of B1 (docs/BENCHMARKS.md): two threads of
 * one process ping-ponging 32 bytes, one round trip at a time, each timed.
 * Each side copies the 32 bytes into a shared slot and wakes the other with a
 * write(2) to its eventfd; the other blocks in read(2) on that eventfd. This
 * is the cheapest cross-thread wake-up a loop-per-thread runtime can have.
 *
 *   b1_thread_floor [N]   N timed round trips (default 50000), after
 *                         max(100, N/10) warm-up ones
 *
 * Prints key=value lines: n, rtt_p50_us, rtt_p99_us, rate (round trips/s over
 * the whole run), the keys of b1_floor. Built by scripts/bench with cc -O2. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "floor.h"

#define MSG 32

static int to_echo, to_main;         /* eventfds: main -> echoer, echoer -> main */
static char slot_in[MSG], slot_out[MSG];

/* The echoer: copies what arrived back out; a first byte of 0 ends it (read
 * before the wake: after it, the main thread may be filling slot_in again). */
static void *echoer(void *arg) {
    (void)arg;
    for (;;) {
        if (wait_fd(to_echo) != 0) break;
        memcpy(slot_out, slot_in, MSG);
        int last = slot_out[0] == 0;
        if (wake_fd(to_main) != 0 || last) break;
    }
    return NULL;
}

static int round_trip(char *buf) {
    memcpy(slot_in, buf, MSG);
    if (wake_fd(to_echo) != 0 || wait_fd(to_main) != 0) return -1;
    memcpy(buf, slot_out, MSG);
    return 0;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 50000;
    if (n < 1) n = 1;
    long warm = n / 10 < 100 ? 100 : n / 10;
    to_echo = eventfd(0, EFD_CLOEXEC);
    to_main = eventfd(0, EFD_CLOEXEC);
    if (to_echo < 0 || to_main < 0) { perror("eventfd"); return 1; }
    pthread_t th;
    if (pthread_create(&th, NULL, echoer, NULL) != 0) { fprintf(stderr, "pthread_create failed\n"); return 1; }
    char buf[MSG];
    memset(buf, 'x', MSG);
    double *samples = malloc((size_t)n * sizeof *samples);
    if (!samples) return 1;
    for (long i = 0; i < warm; i++)
        if (round_trip(buf) != 0) return 1;
    double start = now();
    for (long i = 0; i < n; i++) {
        double t0 = now();
        if (round_trip(buf) != 0 || buf[0] != 'x') {
            fprintf(stderr, "b1_thread_floor: the echoer failed\n");
            return 1;
        }
        samples[i] = now() - t0;
    }
    double total = now() - start;
    buf[0] = 0;
    round_trip(buf);
    pthread_join(th, NULL);
    printf("n=%ld\n", n);
    printf("rtt_p50_us=%.3f\n", quantile(samples, (size_t)n, 0.50) * 1e6);
    printf("rtt_p99_us=%.3f\n", quantile(samples, (size_t)n, 0.99) * 1e6);
    printf("rate=%.0f\n", (double)n / total);
    free(samples);
    return 0;
}
