/* prefork.h: the skeleton the benchmarks' C server floors share (b6_floor,
 * b10_floor): one listening socket on 127.0.0.1 (its address printed as
 * "address=127.0.0.1:PORT"), WORKERS forked processes each running an
 * epoll loop that accepts on it, and SIGTERM ending them all. A floor gives
 * only what is its own: what a new connection is, and what an event on one
 * does. */
#ifndef PULSAR_BENCH_PREFORK_H
#define PULSAR_BENCH_PREFORK_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define PREFORK_MAX_EVENTS 256
#define PREFORK_MAX_WORKERS 64

/* A new connection on fd (non-blocking, TCP_NODELAY): the floor's state
 * for it, already watched in ep, or NULL after closing fd. */
typedef void *prefork_accept_fn(int ep, int fd);
/* Events on a connection the floor made. */
typedef void prefork_serve_fn(int ep, void *conn, unsigned events);

static int prefork_listen(const char *who) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(fd, 2048) != 0) {
        fprintf(stderr, "%s: ", who);
        perror("listen");
        exit(1);
    }
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    printf("address=127.0.0.1:%d\n", ntohs(sa.sin_port));
    fflush(stdout);
    return fd;
}

static void prefork_accept_all(int ep, int lfd, prefork_accept_fn *accepted) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        int on = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
        accepted(ep, fd);
    }
}

static void prefork_worker(int lfd, prefork_accept_fn *accepted, prefork_serve_fn *serve) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event events[PREFORK_MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, events, PREFORK_MAX_EVENTS, -1);
        for (int i = 0; i < n; i++) {
            if (!events[i].data.ptr) prefork_accept_all(ep, lfd, accepted);
            else serve(ep, events[i].data.ptr, events[i].events);
        }
    }
}

static pid_t prefork_children[PREFORK_MAX_WORKERS];
static int prefork_nchildren;

static void prefork_stop(int sig) {
    (void)sig;
    for (int i = 0; i < prefork_nchildren; i++) kill(prefork_children[i], SIGTERM);
    _exit(0);
}

/* The whole main of a floor: argv[1] workers (default 2), serving until
 * SIGTERM or SIGINT. */
_Noreturn static void prefork_main(int argc, char **argv, const char *who,
                        prefork_accept_fn *accepted, prefork_serve_fn *serve) {
    int workers = argc > 1 ? atoi(argv[1]) : 2;
    if (workers < 1 || workers > PREFORK_MAX_WORKERS) workers = 2;
    signal(SIGPIPE, SIG_IGN);
    int lfd = prefork_listen(who);
    for (int i = 0; i < workers; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            signal(SIGTERM, SIG_DFL);
            prefork_worker(lfd, accepted, serve);
        }
        prefork_children[prefork_nchildren++] = pid;
    }
    signal(SIGTERM, prefork_stop);
    signal(SIGINT, prefork_stop);
    for (;;) pause();
}

#endif
