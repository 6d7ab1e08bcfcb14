/* b10_floor.c: the baseline of B10 (docs/BENCHMARKS.md), a WebSocket echo
 * server in C: one listening socket, bound once, and WORKERS (default 2)
 * processes (fork), each running an epoll loop that accepts on it, answers
 * the upgrade (SHA-1 from libcrypto), unmasks each frame and sends it back
 * unmasked. No runtime and only what the benchmark needs (no fragments, no
 * deflate, no UTF-8 check): the floor of this machine for the job of
 * tests/bench/b10_ws.lua, loaded by the same tests/bench/b10_client.c.
 *
 *   b10_floor [WORKERS]    prints "address=127.0.0.1:PORT", serves until
 *                          SIGTERM (which ends the workers too)
 *
 * A connection reads into one buffer, handles every whole frame in it and
 * writes the echoes with one write(2); what the socket does not take waits
 * and reading pauses until it is written (with one small message in flight
 * per connection that never happens). A bad request or frame drops the
 * connection. */
#define _GNU_SOURCE /* accept4, strcasestr */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "prefork.h"

#define BUF_SIZE 65536

static const char GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

typedef struct conn {
    int fd;
    int open;               /* the handshake is done */
    size_t have;            /* bytes read and not handled yet */
    size_t pending, off;    /* bytes to write back */
    unsigned char in[BUF_SIZE + 1], out[BUF_SIZE + 16];
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
        ssize_t w = write(c->fd, c->out + c->off, c->pending);
        if (w < 0) return errno == EAGAIN ? 1 : -1;
        c->off += (size_t)w, c->pending -= (size_t)w;
    }
    c->off = 0;
    return 0;
}

/* Answers the upgrade once its head is all in: 1 done, 0 not all in yet,
 * -1 a request this floor does not take. */
static int handshake(conn *c) {
    c->in[c->have] = 0;
    char *head = (char *)c->in, *end = strstr(head, "\r\n\r\n");
    if (!end) return c->have == BUF_SIZE ? -1 : 0;
    char *key = strcasestr(head, "\r\nSec-WebSocket-Key:");
    if (!key || key > end) return -1;
    key += strlen("\r\nSec-WebSocket-Key:");
    while (*key == ' ') key++;
    size_t klen = strcspn(key, " \r");
    if (klen == 0 || klen > 64) return -1;
    char joined[128], accept[29];
    unsigned char digest[SHA_DIGEST_LENGTH];
    memcpy(joined, key, klen);
    memcpy(joined + klen, GUID, sizeof GUID - 1);
    SHA1((unsigned char *)joined, klen + sizeof GUID - 1, digest);
    EVP_EncodeBlock((unsigned char *)accept, digest, SHA_DIGEST_LENGTH);
    c->pending = (size_t)snprintf((char *)c->out, sizeof c->out,
                                  "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                  "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                                  accept);
    size_t used = (size_t)(end + 4 - head);
    c->have -= used;
    memmove(c->in, c->in + used, c->have);
    c->open = 1;
    return 1;
}

/* Appends the echo of every whole frame in c->in to c->out: 1 go on, 0 the
 * peer closed (its close is echoed), -1 a frame this floor does not take. */
static int echo_frames(conn *c) {
    size_t at = 0;
    int rc = 1;
    while (rc == 1 && c->have - at >= 2) {
        unsigned char *p = c->in + at;
        if (!(p[1] & 0x80)) return -1; /* a client's frames are masked */
        size_t n = p[1] & 0x7f, head = 6;
        if (n == 127) return -1;
        if (n == 126) {
            if (c->have - at < 4) break;
            n = (size_t)p[2] << 8 | p[3], head = 8;
        }
        if (c->have - at < head + n) break;
        if (c->pending + n + 4 > sizeof c->out) break; /* the rest after this write */
        const unsigned char *key = p + head - 4, *payload = p + head;
        int opcode = p[0] & 0x0f;
        unsigned char *o = c->out + c->pending;
        o[0] = (unsigned char)(0x80 | (opcode == 0x9 ? 0xA : opcode)); /* ping: pong */
        size_t oh = 2;
        if (n < 126) {
            o[1] = (unsigned char)n;
        } else {
            o[1] = 126, o[2] = (unsigned char)(n >> 8), o[3] = (unsigned char)n, oh = 4;
        }
        for (size_t i = 0; i < n; i++) o[oh + i] = payload[i] ^ key[i & 3];
        c->pending += oh + n;
        at += head + n;
        if (opcode == 0x8) rc = 0;
    }
    c->have -= at;
    memmove(c->in, c->in + at, c->have);
    return rc;
}

static void serve(int ep, conn *c, unsigned events) {
    if (events & EPOLLOUT) {
        int rc = flush(c);
        if (rc < 0) return drop(c);
        if (rc == 0) watch(ep, c, EPOLLIN, EPOLL_CTL_MOD);
        return;
    }
    ssize_t n = read(c->fd, c->in + c->have, BUF_SIZE - c->have);
    if (n == 0 || (n < 0 && errno != EAGAIN)) return drop(c);
    if (n < 0) return;
    c->have += (size_t)n;
    int rc = c->open ? 1 : handshake(c);
    if (rc < 0) return drop(c);
    if (c->open) rc = echo_frames(c);
    if (rc < 0) return drop(c);
    int w = flush(c);
    if (w < 0 || rc == 0) return drop(c);
    if (w == 1) watch(ep, c, EPOLLOUT, EPOLL_CTL_MOD);
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
    prefork_main(argc, argv, "b10_floor", accepted, on_event);
}
