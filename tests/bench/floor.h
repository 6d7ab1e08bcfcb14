/* floor.h: what the C baselines of the benchmarks share: a monotonic clock,
 * quantiles of samples, and whole reads and writes on a socket. */
#ifndef PULSAR_BENCH_FLOOR_H
#define PULSAR_BENCH_FLOOR_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static inline double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile of s[0..n-1] (nearest rank); sorts s in place. */
static inline double quantile(double *s, size_t n, double q) {
    qsort(s, n, sizeof *s, cmp_double);
    size_t i = (size_t)(q * (double)n);
    if (i >= n) i = n - 1;
    return s[i];
}

/* 1 when all n bytes were read, 0 at end of file, -1 on error. */
static inline int read_full(int fd, void *buf, size_t n) {
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r == 0) return 0;
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += r, n -= (size_t)r;
    }
    return 1;
}

/* 0 when all n bytes were written, -1 on error. */
static inline int write_full(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w, n -= (size_t)w;
    }
    return 0;
}

/* An eventfd as a thread's doorbell: wait for a ring (0, -1 on error) and
 * ring it (0 or -1). */
static inline int wait_fd(int fd) {
    uint64_t v;
    return read_full(fd, &v, sizeof v) == 1 ? 0 : -1;
}

static inline int wake_fd(int fd) {
    uint64_t v = 1;
    return write_full(fd, &v, sizeof v);
}

#endif
