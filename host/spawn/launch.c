/* launch.c: a new process for a process actor, with posix_spawn, and its
 * reaping (see launch.h for why not uv_spawn). */
#include "launch.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

/* fds[i] to 3 + i in the child. Each goes first to a number above every
 * source and target, so that a source already sitting at some 3 + j is not
 * overwritten before it is copied; dup2 also clears close-on-exec, which
 * the arbiter's descriptors all have. */
static int add_inherited(posix_spawn_file_actions_t *fa, const int *fds, int nfds) {
    int high = 3 + nfds;
    for (int i = 0; i < nfds; i++)
        if (fds[i] >= high) high = fds[i] + 1;
    int rc = 0;
    for (int i = 0; i < nfds && rc == 0; i++) rc = posix_spawn_file_actions_adddup2(fa, fds[i], high + i);
    for (int i = 0; i < nfds && rc == 0; i++) {
        rc = posix_spawn_file_actions_adddup2(fa, high + i, 3 + i);
        if (rc == 0) rc = posix_spawn_file_actions_addclose(fa, high + i);
    }
    return rc;
}

/* As uv_spawn left a child: default dispositions (an ignored SIGPIPE would
 * survive exec otherwise), an empty signal mask. */
static int reset_signals(posix_spawnattr_t *attr) {
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    int rc = posix_spawnattr_setsigdefault(attr, &all);
    if (rc == 0) rc = posix_spawnattr_setsigmask(attr, &none);
    if (rc == 0) rc = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    return rc;
}

int pl_launch(const char *exe, char *const args[], const int *fds, int nfds, pid_t *pid) {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc != 0) return -rc;
    rc = posix_spawnattr_init(&attr);
    if (rc != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return -rc;
    }
    rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (rc == 0) rc = add_inherited(&fa, fds, nfds);
    if (rc == 0) rc = reset_signals(&attr);
    if (rc == 0) rc = posix_spawn(pid, exe, &fa, &attr, args, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return -rc;
}

int pl_reap(pid_t pid, int *status, int *signal) {
    int ws;
    pid_t r;
    do r = waitpid(pid, &ws, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r < 0) return -errno;
    if (r == 0) return 0;
    *status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 0;
    *signal = WIFSIGNALED(ws) ? WTERMSIG(ws) : 0;
    return 1;
}
