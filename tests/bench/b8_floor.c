/* b8_floor: the B8 baseline (docs/BENCHMARKS.md): N threads, each making M
 * calls to a random other one and waiting for each reply before the next,
 * all at once, while answering the calls made to it. Each thread has a
 * mailbox: a list under a mutex and an eventfd that a sender writes when it
 * finds the list empty (as a loop-per-thread runtime wakes a loop); the
 * thread blocks in read(2) on its eventfd, then takes the whole list.
 *
 *   b8_floor [N] [M]    N threads (default 1000), M calls each (default 100)
 *
 * Prints key=value lines, the keys of b8_many.lua: actors, calls, rate
 * (calls/s, each a request and its reply, from the start barrier to the last
 * thread's end), call_p50_us, call_p99_us. Built by scripts/bench with cc
 * -O2 -pthread. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "floor.h"

struct msg {
    struct msg *next;
    int reply;          /* 0: a call, 1: its reply */
    long from, seq;
    char payload[32];
};

struct box {
    pthread_t th;
    pthread_mutex_t lock;
    struct msg *head, *tail;
    int efd;
    unsigned seed;
};

static struct box *boxes;
static long n_threads, m_calls;
static double *samples;
static atomic_long finished;
static atomic_int stop;
static pthread_barrier_t start_line;

static void wake(long to) {
    uint64_t v = 1;
    write_full(boxes[to].efd, &v, sizeof v);
}

static void post(long to, struct msg *m) {
    struct box *b = &boxes[to];
    m->next = NULL;
    pthread_mutex_lock(&b->lock);
    int was_empty = b->head == NULL;
    if (b->tail) b->tail->next = m; else b->head = m;
    b->tail = m;
    pthread_mutex_unlock(&b->lock);
    if (was_empty) wake(to);
}

static void call(long me, long seq) {
    long other = (long)(rand_r(&boxes[me].seed) % (unsigned)(n_threads - 1));
    if (other >= me) other++;
    struct msg *m = malloc(sizeof *m);
    if (!m) abort();
    m->reply = 0, m->from = me, m->seq = seq;
    post(other, m);
}

static void *run(void *arg) {
    long me = (long)(intptr_t)arg, done = 0;
    struct box *b = &boxes[me];
    double *mine = samples + me * m_calls, t0;
    pthread_barrier_wait(&start_line);
    t0 = now();
    call(me, 0);
    while (!atomic_load(&stop)) {
        uint64_t v;
        if (read_full(b->efd, &v, sizeof v) != 1) break;
        pthread_mutex_lock(&b->lock);
        struct msg *m = b->head;
        b->head = b->tail = NULL;
        pthread_mutex_unlock(&b->lock);
        while (m) {
            struct msg *next = m->next;
            if (!m->reply) { /* answer: the same message goes back */
                long to = m->from;
                m->reply = 1, m->from = me;
                post(to, m);
            } else {
                double t = now();
                mine[done++] = t - t0;
                free(m);
                if (done < m_calls) {
                    t0 = now();
                    call(me, done);
                } else if (atomic_fetch_add(&finished, 1) + 1 == n_threads) {
                    atomic_store(&stop, 1);
                    for (long i = 0; i < n_threads; i++) wake(i);
                }
            }
            m = next;
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    n_threads = argc > 1 ? atol(argv[1]) : 1000;
    m_calls = argc > 2 ? atol(argv[2]) : 100;
    if (n_threads < 2) n_threads = 2;
    if (m_calls < 1) m_calls = 1;
    boxes = calloc((size_t)n_threads, sizeof *boxes);
    samples = malloc((size_t)(n_threads * m_calls) * sizeof *samples);
    if (!boxes || !samples) return 1;
    pthread_barrier_init(&start_line, NULL, (unsigned)n_threads + 1);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (long i = 0; i < n_threads; i++) {
        pthread_mutex_init(&boxes[i].lock, NULL);
        boxes[i].seed = (unsigned)(i * 2654435761u + 1);
        if ((boxes[i].efd = eventfd(0, EFD_CLOEXEC)) < 0) { perror("eventfd"); return 1; }
    }
    for (long i = 0; i < n_threads; i++)
        if (pthread_create(&boxes[i].th, &attr, run, (void *)(intptr_t)i) != 0) {
            fprintf(stderr, "b8_floor: pthread_create failed at %ld\n", i);
            return 1;
        }
    pthread_barrier_wait(&start_line);
    double start = now();
    for (long i = 0; i < n_threads; i++) pthread_join(boxes[i].th, NULL);
    double total = now() - start;
    size_t calls = (size_t)(n_threads * m_calls);
    printf("actors=%ld\ncalls=%zu\n", n_threads, calls);
    printf("rate=%.0f\n", (double)calls / total);
    printf("call_p50_us=%.3f\n", quantile(samples, calls, 0.50) * 1e6);
    printf("call_p99_us=%.3f\n", quantile(samples, calls, 0.99) * 1e6);
    return 0;
}
