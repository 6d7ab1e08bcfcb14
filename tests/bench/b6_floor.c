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

#include "prefork.h"

#define BUF_SIZE 65536

typedef struct conn {
    int fd;
    size_t pending, off; /* bytes read and not yet written back */
    char buf[BUF_SIZE];
} conn;

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

static void *accepted(int ep, int fd) {
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return NULL;
    }
    c->fd = fd;
    watch(ep, c, EPOLLIN, EPOLL_CTL_ADD);
    return c;
}

static void on_event(int ep, void *c, unsigned events) { serve(ep, c, events); }

int main(int argc, char **argv) {
    prefork_main(argc, argv, "b6_floor", accepted, on_event);
}
