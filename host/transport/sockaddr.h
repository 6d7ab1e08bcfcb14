/* sockaddr.h: socket addresses, and the listening sockets bound to them,
 * for every stream socket: the mailbox's (conn.h) and those of Lua code
 * (net.h), both of which sit on net.c's streams.
 *
 * An address is what a user writes, in one language for the command line
 * (--mailbox, --attach, --bind), the mailbox (core.listen, core.connect)
 * and Lua's servers and streams (pulsar.net): "HOST:PORT", "[IPv6]:PORT",
 * ":PORT" (every interface) or "unix:PATH". A bare path is refused, naming
 * the unix: form: "nowhere" is then a typo, not a socket file created in
 * the current directory. pl_address_parse is the one parser; an endpoint
 * is what it becomes once its host is an IP address (pl_address_endpoint,
 * or a lookup). Every address is shown to users and in log lines in the
 * same words: "127.0.0.1:8060", "[::1]:8060", "unix:PATH". */
#ifndef PULSAR_SOCKADDR_H
#define PULSAR_SOCKADDR_H

#include <stddef.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/un.h>

#define PL_SOCKADDR_PATH_MAX sizeof(((struct sockaddr_un *)0)->sun_path)
/* "[v6 address]:port" or "unix:PATH" */
#define PL_SOCKADDR_NAME_MAX (PL_SOCKADDR_PATH_MAX + 8)

#define PL_ADDRESS_HOST_MAX 256

/* An address as written, taken apart: a Unix socket path, or a host (a
 * name or an IP literal, without brackets; "" for every interface) and a
 * port. */
typedef struct pl_address {
    int is_unix;
    char path[PL_SOCKADDR_PATH_MAX];
    char host[PL_ADDRESS_HOST_MAX];
    int port;
} pl_address;

/* 0, or -1 with a message naming the text ("'nowhere' is not an address
 * (HOST:PORT, :PORT or unix:PATH)", "'h:99999' has no valid port (0 to
 * 65535)", "'unix:' names no socket path", ...). */
int pl_address_parse(const char *text, pl_address *a, char *err,
                     size_t errlen);

/* Where to bind or connect: an IP address and port, or a Unix socket path. */
typedef struct pl_endpoint {
    int is_unix;
    struct sockaddr_storage sa;      /* !is_unix: AF_INET or AF_INET6 */
    char path[PL_SOCKADDR_PATH_MAX]; /* is_unix */
} pl_endpoint;

/* Fills ep from an IP literal ("127.0.0.1", "::1") and a port, or a path.
 * 0, or -1 with a message naming what is wrong (err may be NULL when
 * errlen is 0). */
int pl_endpoint_ip(pl_endpoint *ep, const char *ip, int port, char *err,
                   size_t errlen);
int pl_endpoint_unix(pl_endpoint *ep, const char *path, char *err,
                     size_t errlen);
/* Fills ep for a Unix path, an IP literal, "localhost" (127.0.0.1) or ""
 * (0.0.0.0): 0; 1 when the host is a name to look up. */
int pl_address_endpoint(const pl_address *a, pl_endpoint *ep);
/* Fills ep with the first IPv4 or IPv6 address of a getaddrinfo answer
 * and port. 0, or -1 when the answer has none. */
int pl_endpoint_from_addrinfo(pl_endpoint *ep, const struct addrinfo *ai,
                              int port);
/* What to ask getaddrinfo for: stream sockets, of either family. */
extern const struct addrinfo pl_sockaddr_stream_hints;

/* "127.0.0.1:8060", "[::1]:8060" or "unix:PATH" */
void pl_endpoint_name(const pl_endpoint *ep, char *out, size_t outlen);
void pl_sockaddr_name(const struct sockaddr *sa, char *out, size_t outlen);
/* The address socket fd is bound to, named as above; 0 or -1. */
int pl_sockaddr_of_fd(int fd, char *out, size_t outlen);

/* A new listening socket (non-blocking, close-on-exec) bound to ep:
 * SO_REUSEADDR for TCP, dual stack for "::", and a Unix socket file left
 * by a dead process replaced. backlog <= 0 means SOMAXCONN. The fd, or a
 * negative libuv error code with *step saying what failed ("bind" or
 * "listen on"); a path bound but not listened on is unlinked again. */
int pl_endpoint_listen(const pl_endpoint *ep, int backlog, const char **step);

/* Writing to a socket whose peer is gone raises SIGPIPE, which would kill
 * the process: the first stream (net.c) calls this, which
 * sets SIGPIPE to "ignore" (unless the program installed a handler of its
 * own) so that the write fails with EPIPE and only that connection ends. */
void pl_sockaddr_ignore_sigpipe(void);

#endif
