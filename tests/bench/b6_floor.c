/* b6_floor.c: the baseline of B6 (docs/BENCHMARKS.md), a TCP echo server in C:
 * one listening socket, bound once, and WORKERS (default 2) processes (fork),
 * each running an epoll loop that accepts on it and echoes what it reads.
 * No runtime at all: the floor of this machine for the same job as
 * tests/bench/b6_echo.lua.
 *
 *   b6_floor [WORKERS]     prints "address=127.0.0.1:PORT", serves until
 *                          SIGTERM (which ends the workers too)
 *
 * Echoing writes what it read at once; what the socket does not take waits
 * in a per-connection buffer and reading pauses until it is written, the
 * same flow control pulsar-lua applies (with 64-byte ping-pong messages it
 * never comes into play). */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define BUF_SIZE 65536

typedef struct conn {
    int fd;
    size_t pending, off; /* bytes read and not yet written back */
    char buf[BUF_SIZE];
} conn;

static int listen_any_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(fd, 2048) != 0) {
        perror("b6_floor: listen");
        exit(1);
    }
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    printf("address=127.0.0.1:%d\n", ntohs(sa.sin_port));
    fflush(stdout);
    return fd;
}

static void watch(int ep, conn *c, unsigned events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(ep, op, c->fd, &ev);
}

static void drop(conn *c) {
    close(c->fd);
    free(c);
}

/* Writes what waits; 0 when all of it went, 1 when the socket is full,
 * -1 when the connection is gone. */
static int flush(conn *c) {
    while (c->pending > 0) {
        ssize_t w = write(c->fd, c->buf + c->off, c->pending);
        if (w < 0) return errno == EAGAIN ? 1 : -1;
        c->off += (size_t)w, c->pending -= (size_t)w;
    }
    c->off = 0;
    return 0;
}

static void serve(int ep, conn *c, unsigned events) {
    if (events & EPOLLOUT) {
        int rc = flush(c);
        if (rc < 0) return drop(c);
        if (rc == 0) watch(ep, c, EPOLLIN, EPOLL_CTL_MOD);
        return;
    }
    ssize_t n = read(c->fd, c->buf, sizeof c->buf);
    if (n == 0 || (n < 0 && errno != EAGAIN)) return drop(c);
    if (n < 0) return;
    c->pending = (size_t)n;
    int rc = flush(c);
    if (rc < 0) return drop(c);
    if (rc == 1) watch(ep, c, EPOLLOUT, EPOLL_CTL_MOD);
}

static void accept_all(int ep, int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        int on = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
        conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        watch(ep, c, EPOLLIN, EPOLL_CTL_ADD);
    }
}

static void worker(int lfd) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        for (int i = 0; i < n; i++) {
            if (!events[i].data.ptr) accept_all(ep, lfd);
            else serve(ep, events[i].data.ptr, events[i].events);
        }
    }
}

static pid_t children[64];
static int nchildren;

static void stop(int sig) {
    (void)sig;
    for (int i = 0; i < nchildren; i++) kill(children[i], SIGTERM);
    _exit(0);
}

int main(int argc, char **argv) {
    int workers = argc > 1 ? atoi(argv[1]) : 2;
    if (workers < 1 || workers > 64) workers = 2;
    signal(SIGPIPE, SIG_IGN);
    int lfd = listen_any_port();
    for (int i = 0; i < workers; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            signal(SIGTERM, SIG_DFL);
            worker(lfd);
        }
        children[nchildren++] = pid;
    }
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    for (;;) pause();
}
