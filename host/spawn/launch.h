/* launch.h: starting a program in a new process without copying the
 * arbiter (launch.c), and reaping it.
 *
 * uv_spawn forks: the kernel copies the page tables of the whole arbiter,
 * every thread actor's memory included, and marks it all copy-on-write,
 * only for the child to throw it away at exec. With 200 thread actors
 * alive that took 7 ms per process actor. posix_spawn (glibc: a vfork-like
 * clone sharing the address space) costs the same whatever the arbiter
 * holds. Its end is learnt as libuv learnt it: the loop watches SIGCHLD
 * and each child is reaped by pid with waitpid. */
#ifndef PULSAR_LAUNCH_H
#define PULSAR_LAUNCH_H

#include <sys/types.h>

/* Starts exe with args (NULL-terminated) and the environment: stdin from
 * /dev/null, stdout and stderr inherited, fds[0..nfds) at 3, 4, ...; every
 * signal at its default action and none blocked. The pid in *pid; 0, or a
 * negative errno. */
int pl_launch(const char *exe, char *const args[], const int *fds, int nfds, pid_t *pid);

/* Reaps pid if it has ended: 1 with the exit status, or the terminating
 * signal, set (the other 0); 0 if it still runs; a negative errno. */
int pl_reap(pid_t pid, int *status, int *signal);

#endif
