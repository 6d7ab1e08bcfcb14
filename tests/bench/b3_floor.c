/* b3_floor: the B3 baseline (docs/BENCHMARKS.md): a ring of K threads passing
 * a token, each blocked in read(2) on its own eventfd and handing the token
 * on with a write(2) to the next one's. The main thread is member 0: it
 * starts the token, times each lap and stops the ring after L laps.
 *
 *   b3_floor [K] [L]    K threads (default 100), L timed laps (default 1000),
 *                       after one warm-up lap
 *
 * Prints key=value lines: size, laps, hop_us (the whole run's time per hop),
 * hop_p50_us and hop_p99_us (the median and 99th percentile lap, divided by
 * K), rate (hops/s). Built by scripts/bench with cc -O2 -pthread. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "floor.h"

static int *efd;
static long size;
static atomic_int done;

/* Member i (1..K-1): wait for the token, pass it on; once the ring is done,
 * pass the stop on (not back to member 0) and end. */
static void *member(void *arg) {
    long i = (long)(intptr_t)arg, next = (i + 1) % size;
    for (;;) {
        if (wait_fd(efd[i]) != 0) return NULL;
        int stop = atomic_load(&done);
        if (next != 0 || !stop) wake_fd(efd[next]);
        if (stop) return NULL;
    }
}

int main(int argc, char **argv) {
    size = argc > 1 ? atol(argv[1]) : 100;
    long laps = argc > 2 ? atol(argv[2]) : 1000;
    if (size < 2) size = 2;
    if (laps < 1) laps = 1;
    efd = malloc((size_t)size * sizeof *efd);
    pthread_t *th = malloc((size_t)size * sizeof *th);
    double *lap = malloc((size_t)laps * sizeof *lap);
    if (!efd || !th || !lap) return 1;
    for (long i = 0; i < size; i++)
        if ((efd[i] = eventfd(0, EFD_CLOEXEC)) < 0) { perror("eventfd"); return 1; }
    for (long i = 1; i < size; i++)
        if (pthread_create(&th[i], NULL, member, (void *)(intptr_t)i) != 0) {
            fprintf(stderr, "b3_floor: pthread_create failed\n");
            return 1;
        }
    /* the warm-up lap */
    if (wake_fd(efd[1]) != 0 || wait_fd(efd[0]) != 0) return 1;
    double start = now(), prev = start;
    for (long l = 0; l < laps; l++) {
        if (wake_fd(efd[1]) != 0 || wait_fd(efd[0]) != 0) return 1;
        double t = now();
        lap[l] = t - prev;
        prev = t;
    }
    double total = prev - start;
    atomic_store(&done, 1);
    wake_fd(efd[1]);
    for (long i = 1; i < size; i++) pthread_join(th[i], NULL);
    double hops = (double)laps * (double)size;
    printf("size=%ld\nlaps=%ld\n", size, laps);
    printf("hop_us=%.3f\n", total / hops * 1e6);
    printf("hop_p50_us=%.3f\n", quantile(lap, (size_t)laps, 0.50) / (double)size * 1e6);
    printf("hop_p99_us=%.3f\n", quantile(lap, (size_t)laps, 0.99) / (double)size * 1e6);
    printf("rate=%.0f\n", hops / total);
    return 0;
}
