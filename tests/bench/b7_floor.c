/* b7_floor: the B7 baseline (docs/BENCHMARKS.md): K idle threads, each
 * blocked in a libuv loop of its own that has one uv_async_t (as a thread
 * actor's loop has its channel's), and the CPU time the whole process uses
 * over a window in which nothing happens.
 *
 *   b7_floor [K] [SECONDS]   K threads (default 100), a SECONDS window
 *                            (default 10), after a 0.5 s settling pause
 *
 * CPU time is the sum over /proc/self/task/<tid>/schedstat (nanoseconds on a
 * CPU, every thread), the same measure as tests/bench/b7_idle.lua; the
 * getrusage(RUSAGE_SELF) figure is printed beside it. Prints key=value lines:
 * size, seconds, cpu_s (over the window), cpu_per_10s, rusage_cpu_s. Built
 * by scripts/bench with cc -O2 -pthread and libuv. */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <uv.h>

#include "floor.h"

struct idler {
    pthread_t th;
    uv_loop_t loop;
    uv_async_t wake;
};

static void on_wake(uv_async_t *a) { uv_close((uv_handle_t *)a, NULL); }

static void *idle(void *arg) {
    struct idler *t = arg;
    uv_run(&t->loop, UV_RUN_DEFAULT);
    uv_loop_close(&t->loop);
    return NULL;
}

/* Seconds on a CPU of every thread of this process, from schedstat. */
static double task_cpu(void) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    double sum = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[300];
        snprintf(path, sizeof path, "/proc/self/task/%s/schedstat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        unsigned long long ns = 0;
        if (fscanf(f, "%llu", &ns) == 1) sum += (double)ns / 1e9;
        fclose(f);
    }
    closedir(d);
    return sum;
}

static double rusage_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void pause_for(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {}
}

int main(int argc, char **argv) {
    long size = argc > 1 ? atol(argv[1]) : 100;
    double seconds = argc > 2 ? atof(argv[2]) : 10;
    if (size < 1) size = 1;
    if (seconds <= 0) seconds = 10;
    struct idler *t = calloc((size_t)size, sizeof *t);
    if (!t) return 1;
    for (long i = 0; i < size; i++) {
        if (uv_loop_init(&t[i].loop) != 0 || uv_async_init(&t[i].loop, &t[i].wake, on_wake) != 0 ||
            pthread_create(&t[i].th, NULL, idle, &t[i]) != 0) {
            fprintf(stderr, "b7_floor: thread %ld failed to start\n", i);
            return 1;
        }
    }
    pause_for(0.5);
    double c0 = task_cpu(), r0 = rusage_cpu(), t0 = now();
    pause_for(seconds);
    double c1 = task_cpu(), r1 = rusage_cpu(), window = now() - t0;
    for (long i = 0; i < size; i++) uv_async_send(&t[i].wake);
    for (long i = 0; i < size; i++) pthread_join(t[i].th, NULL);
    printf("size=%ld\nseconds=%.3f\n", size, window);
    printf("cpu_s=%.6f\n", c1 - c0);
    printf("cpu_per_10s=%.6f\n", (c1 - c0) * 10 / window);
    printf("rusage_cpu_s=%.6f\n", r1 - r0);
    free(t);
    return 0;
}
