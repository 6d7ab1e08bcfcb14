/* b4_floor: the B4 baselines (docs/BENCHMARKS.md).
 *
 *   b4_floor [THREADS] [PROCS] [LUAS]   (defaults 200 50 5)
 *
 * (a) THREADS times, one at a time: pthread_create of a thread that makes a
 *     fresh lua_State with luaL_openlibs and signals back; each spawn timed
 *     from before pthread_create to the signal. The threads stay alive, idle,
 *     holding their lua_State, so the RSS of this process (from
 *     /proc/self/smaps_rollup) before and after gives the memory per idle
 *     thread with a Lua VM.
 * (b) PROCS times: posix_spawn of /bin/true and waitpid, each timed.
 * (c) LUAS idle stock interpreters (lua5.4 blocked on io.read()), alive at
 *     once: their Pss and Private (Private_Clean + Private_Dirty), the peer
 *     for a process actor's memory.
 *
 * Prints key=value lines: thread_p50_us, thread_p99_us, thread_rss_kb,
 * proc_p50_us, proc_p99_us, lua_pss_kb, lua_private_kb.
 * Built by scripts/bench: cc -O2 b4_floor.c $(pkg-config --cflags --libs lua5.4) -pthread */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "floor.h"

extern char **environ;

/* Sums the named fields (kB) of /proc/<pid>/smaps_rollup. */
static long smaps(const char *pid, const char *f1, const char *f2) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%s/smaps_rollup", pid);
    FILE *fp = fopen(path, "r");
    if (!fp) return -1;
    long total = 0;
    while (fgets(line, sizeof line, fp)) {
        char name[64];
        long kb;
        if (sscanf(line, "%63[^:]: %ld kB", name, &kb) != 2) continue;
        if (strcmp(name, f1) == 0 || (f2 && strcmp(name, f2) == 0)) total += kb;
    }
    fclose(fp);
    return total;
}

/* ---- (a) threads with a lua_State ------------------------------------- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t quit_cv = PTHREAD_COND_INITIALIZER;
static int quit;

typedef struct slot {
    pthread_t tid;
    int ready;
} slot;

static void *thread_main(void *arg) {
    slot *s = arg;
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    pthread_mutex_lock(&mu);
    s->ready = 1;
    pthread_cond_broadcast(&ready_cv);
    while (!quit) pthread_cond_wait(&quit_cv, &mu);
    pthread_mutex_unlock(&mu);
    lua_close(L);
    return NULL;
}

static int spawn_thread(slot *s) {
    s->ready = 0;
    if (pthread_create(&s->tid, NULL, thread_main, s) != 0) return -1;
    pthread_mutex_lock(&mu);
    while (!s->ready) pthread_cond_wait(&ready_cv, &mu);
    pthread_mutex_unlock(&mu);
    return 0;
}

static void stop_threads(slot *slots, int n) {
    pthread_mutex_lock(&mu);
    quit = 1;
    pthread_cond_broadcast(&quit_cv);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < n; i++) pthread_join(slots[i].tid, NULL);
    quit = 0;
}

/* ---- (c) idle stock interpreters ------------------------------------- */

typedef struct idle_lua {
    pid_t pid;
    int in, out; /* its stdin (we write), its stdout (we read) */
} idle_lua;

static int start_lua(idle_lua *l) {
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    char *argv[] = {"lua5.4", "-e", "io.write('r') io.stdout:flush() io.read()", NULL};
    int rc = posix_spawnp(&l->pid, "lua5.4", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    if (rc != 0) return -1;
    l->in = in[1], l->out = out[0];
    char c;
    return read(l->out, &c, 1) == 1 ? 0 : -1;
}

static void stop_lua(idle_lua *l) {
    close(l->in);
    close(l->out);
    waitpid(l->pid, NULL, 0);
}

int main(int argc, char **argv) {
    int nthreads = argc > 1 ? atoi(argv[1]) : 200;
    int nprocs = argc > 2 ? atoi(argv[2]) : 50;
    int nluas = argc > 3 ? atoi(argv[3]) : 5;
    if (nthreads < 1) nthreads = 1;
    if (nprocs < 1) nprocs = 1;
    if (nluas < 1) nluas = 1;

    /* warm up: liblua's pages, the allocator's arenas */
    slot warm;
    if (spawn_thread(&warm) != 0) { perror("pthread_create"); return 1; }
    stop_threads(&warm, 1);

    slot *slots = calloc((size_t)nthreads, sizeof *slots);
    double *t = calloc((size_t)(nthreads > nprocs ? nthreads : nprocs), sizeof *t);
    long rss0 = smaps("self", "Rss", NULL);
    for (int i = 0; i < nthreads; i++) {
        double t0 = now();
        if (spawn_thread(&slots[i]) != 0) { perror("pthread_create"); return 1; }
        t[i] = now() - t0;
    }
    long rss1 = smaps("self", "Rss", NULL);
    stop_threads(slots, nthreads);
    printf("threads=%d\n", nthreads);
    printf("thread_p50_us=%.1f\n", quantile(t, (size_t)nthreads, 0.50) * 1e6);
    printf("thread_p99_us=%.1f\n", quantile(t, (size_t)nthreads, 0.99) * 1e6);
    printf("thread_rss_kb=%.1f\n", (double)(rss1 - rss0) / nthreads);

    char *targv[] = {"true", NULL};
    for (int i = 0; i < nprocs; i++) {
        pid_t pid;
        int status;
        double t0 = now();
        if (posix_spawn(&pid, "/bin/true", NULL, NULL, targv, environ) != 0) {
            perror("posix_spawn");
            return 1;
        }
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        t[i] = now() - t0;
    }
    printf("procs=%d\n", nprocs);
    printf("proc_p50_us=%.1f\n", quantile(t, (size_t)nprocs, 0.50) * 1e6);
    printf("proc_p99_us=%.1f\n", quantile(t, (size_t)nprocs, 0.99) * 1e6);

    idle_lua *luas = calloc((size_t)nluas, sizeof *luas);
    double *pss = calloc((size_t)nluas, sizeof *pss), *priv = calloc((size_t)nluas, sizeof *priv);
    int ok = 1;
    for (int i = 0; i < nluas && ok; i++) ok = start_lua(&luas[i]) == 0;
    if (ok) {
        for (int i = 0; i < nluas; i++) {
            char pid[16];
            snprintf(pid, sizeof pid, "%d", (int)luas[i].pid);
            pss[i] = (double)smaps(pid, "Pss", NULL);
            priv[i] = (double)smaps(pid, "Private_Clean", "Private_Dirty");
        }
        printf("lua_pss_kb=%.0f\n", quantile(pss, (size_t)nluas, 0.5));
        printf("lua_private_kb=%.0f\n", quantile(priv, (size_t)nluas, 0.5));
    } else {
        fprintf(stderr, "b4_floor: could not start lua5.4\n");
    }
    for (int i = 0; i < nluas; i++)
        if (luas[i].pid > 0) stop_lua(&luas[i]);
    free(slots), free(t), free(luas), free(pss), free(priv);
    return 0;
}
