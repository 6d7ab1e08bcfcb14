/* sockaddr.c: socket addresses and listening sockets (see sockaddr.h):
 * the one parser of the addresses users write, for the command line, the
 * mailbox (conn.c) and Lua (lnet.c's core.parse_address), and the
 * listening sockets net.c serves.
 *
 * Listening sockets are made with plain system calls rather than libuv's
 * bind: the result is a descriptor that net.c can share between actors
 * (dup'd for thread workers, inherited by process workers) and then hands
 * to a libuv handle (uv_tcp_open, uv_pipe_open) to accept on, for a Lua
 * server or a mailbox listener alike. Errors come back as libuv error
 * codes, so that net.c words them as it words every other network error.
 *
 * A Unix socket's file outlives a process that dies without unlinking it,
 * and binding the path again then fails with EADDRINUSE although nobody
 * listens. Such a file is recognised by a connect that is refused, and is
 * replaced; a live listener or a file that is not a socket never is. */
#include "sockaddr.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "log.h"

/* ---- endpoints and names -------------------------------------------------- */

/* Messages go to err through pl_set_err, which writes nothing for errlen 0:
 * a caller that only asks whether (pl_address_endpoint) passes NULL, 0. */

int pl_endpoint_ip(pl_endpoint *ep, const char *ip, int port, char *err,
                   size_t errlen) {
    memset(ep, 0, sizeof *ep);
    if (port < 0 || port > 65535) {
        return pl_set_err(err, errlen, "port %d is out of range (0 to 65535)",
                          port);
    }
    if (uv_ip4_addr(ip, port, (struct sockaddr_in *)&ep->sa) == 0) return 0;
    if (uv_ip6_addr(ip, port, (struct sockaddr_in6 *)&ep->sa) == 0) return 0;
    return pl_set_err(err, errlen, "'%s' is not an IP address", ip);
}

int pl_endpoint_unix(pl_endpoint *ep, const char *path, char *err,
                     size_t errlen) {
    memset(ep, 0, sizeof *ep);
    size_t len = strlen(path);
    if (len == 0) return pl_set_err(err, errlen, "empty Unix socket path");
    if (len >= sizeof ep->path)
        return pl_set_err(err, errlen, "Unix socket path is too long (%zu "
                          "bytes, at most %zu): %.60s...", len,
                          sizeof ep->path - 1, path);
    ep->is_unix = 1;
    memcpy(ep->path, path, len + 1);
    return 0;
}

const struct addrinfo pl_sockaddr_stream_hints = {.ai_family = AF_UNSPEC,
                                                  .ai_socktype = SOCK_STREAM};

int pl_endpoint_from_addrinfo(pl_endpoint *ep, const struct addrinfo *ai,
                              int port) {
    for (; ai; ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            ai->ai_addrlen > sizeof ep->sa)
            continue;
        memset(ep, 0, sizeof *ep);
        memcpy(&ep->sa, ai->ai_addr, ai->ai_addrlen);
        uint16_t port_n = htons((uint16_t)port);
        if (ai->ai_family == AF_INET) ((struct sockaddr_in *)&ep->sa)->sin_port = port_n;
        else ((struct sockaddr_in6 *)&ep->sa)->sin6_port = port_n;
        return 0;
    }
    return -1;
}

void pl_sockaddr_name(const struct sockaddr *sa, char *out, size_t outlen) {
    char ip[64] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        uv_ip4_name(in, ip, sizeof ip);
        snprintf(out, outlen, "%s:%d", ip, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        uv_ip6_name(in6, ip, sizeof ip);
        snprintf(out, outlen, "[%s]:%d", ip, ntohs(in6->sin6_port));
    } else if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
        snprintf(out, outlen, "unix:%.*s", (int)sizeof un->sun_path,
                 un->sun_path);
    } else {
        snprintf(out, outlen, "(address family %d)", sa->sa_family);
    }
}

void pl_endpoint_name(const pl_endpoint *ep, char *out, size_t outlen) {
    if (ep->is_unix) snprintf(out, outlen, "unix:%s", ep->path);
    else pl_sockaddr_name((const struct sockaddr *)&ep->sa, out, outlen);
}

int pl_sockaddr_of_fd(int fd, char *out, size_t outlen) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    memset(&ss, 0, sizeof ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return -1;
    pl_sockaddr_name((struct sockaddr *)&ss, out, outlen);
    return 0;
}

/* ---- addresses as written ------------------------------------------------ */

#define ADDRESS_FORMS "HOST:PORT, :PORT or unix:PATH"

static int not_an_address(const char *text, char *err, size_t errlen) {
    /* A path without unix: is the likeliest slip: say how to write it. */
    if (strchr(text, '/'))
        return pl_set_err(err, errlen, "'%s' is not an address (" ADDRESS_FORMS
                          "): write unix:%s for a Unix socket", text, text);
    return pl_set_err(err, errlen, "'%s' is not an address (" ADDRESS_FORMS ")",
                      text);
}

static int parse_port(const char *text, const char *digits, int *port,
                      char *err, size_t errlen) {
    size_t n = strlen(digits);
    if (n == 0 || n > 5 || strspn(digits, "0123456789") != n ||
        (*port = atoi(digits)) > 65535)
        return pl_set_err(err, errlen, "'%s' has no valid port (0 to 65535)",
                          text);
    return 0;
}

/* "HOST:PORT", "[IPv6]:PORT" or ":PORT". A bare IPv6 address would make
 * the port ambiguous: it must come in brackets. */
static int parse_host_port(const char *text, pl_address *a, char *err,
                           size_t errlen) {
    const char *host = text, *host_end, *port;
    if (text[0] == '[') {
        host_end = strchr(text, ']');
        if (!host_end || host_end[1] != ':')
            return pl_set_err(err, errlen, "'%s' lacks ']:PORT' after its IPv6 "
                              "host", text);
        host = text + 1;
        port = host_end + 2;
    } else {
        host_end = strrchr(text, ':');
        port = host_end + 1;
        if (memchr(text, ':', (size_t)(host_end - text)))
            return pl_set_err(err, errlen, "'%s': write an IPv6 host in "
                              "brackets, as [::1]:PORT", text);
    }
    size_t len = (size_t)(host_end - host);
    if (len >= sizeof a->host)
        return pl_set_err(err, errlen, "host name too long in '%.60s...'", text);
    memcpy(a->host, host, len);
    a->host[len] = 0;
    return parse_port(text, port, &a->port, err, errlen);
}

int pl_address_parse(const char *text, pl_address *a, char *err,
                     size_t errlen) {
    memset(a, 0, sizeof *a);
    if (strncmp(text, "unix:", 5) == 0) {
        const char *path = text + 5;
        if (!*path) return pl_set_err(err, errlen, "'%s' names no socket path", text);
        pl_endpoint ep;
        if (pl_endpoint_unix(&ep, path, err, errlen) != 0) return -1;
        a->is_unix = 1;
        memcpy(a->path, ep.path, sizeof a->path);
        return 0;
    }
    if (!strchr(text, ':') || strstr(text, "://"))
        return not_an_address(text, err, errlen);
    return parse_host_port(text, a, err, errlen);
}

int pl_address_endpoint(const pl_address *a, pl_endpoint *ep) {
    if (a->is_unix) return pl_endpoint_unix(ep, a->path, NULL, 0) == 0 ? 0 : 1;
    const char *host = a->host;
    if (host[0] == 0) host = "0.0.0.0";
    else if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
    return pl_endpoint_ip(ep, host, a->port, NULL, 0) == 0 ? 0 : 1;
}

/* ---- listening sockets ------------------------------------------------------ */

/* path is shorter than sun_path: pl_endpoint_unix saw to it. */
static void unix_sockaddr(const char *path, struct sockaddr_un *sa) {
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, path, strlen(path) + 1);
}

/* A socket file nobody listens on, left by a process that died: connecting
 * is refused. A live listener (even with a full backlog: EAGAIN, as the
 * probe does not block) or a file that is not a socket is left alone; the
 * live listener sees the probe as a connection closed at once. */
static int socket_file_is_stale(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode)) return 0;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    struct sockaddr_un sa;
    unix_sockaddr(path, &sa);
    int stale = connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 &&
                errno == ECONNREFUSED;
    close(fd);
    return stale;
}

/* 0, or a libuv error code: the first bind's when the file in the way is
 * not stale (the probe must not change what is reported). */
static int bind_unix(int fd, const char *path) {
    struct sockaddr_un sa;
    unix_sockaddr(path, &sa);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0) return 0;
    int rc = uv_translate_sys_error(errno);
    if (rc != UV_EADDRINUSE || !socket_file_is_stale(path) || unlink(path) != 0)
        return rc;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0) return 0;
    return uv_translate_sys_error(errno);
}

static int bind_ip(int fd, const pl_endpoint *ep) {
    int on = 1, off = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    socklen_t len = sizeof(struct sockaddr_in);
    if (ep->sa.ss_family == AF_INET6) {
        /* "::" takes IPv4 too, whatever the system's default */
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
        len = sizeof(struct sockaddr_in6);
    }
    if (bind(fd, (const struct sockaddr *)&ep->sa, len) == 0) return 0;
    return uv_translate_sys_error(errno);
}

int pl_endpoint_listen(const pl_endpoint *ep, int backlog, const char **step) {
    *step = "bind";
    int family = ep->is_unix ? AF_UNIX : ep->sa.ss_family;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return uv_translate_sys_error(errno);
    int rc = ep->is_unix ? bind_unix(fd, ep->path) : bind_ip(fd, ep);
    if (rc == 0) {
        *step = "listen on";
        if (listen(fd, backlog > 0 ? backlog : SOMAXCONN) == 0) return fd;
        rc = uv_translate_sys_error(errno);
        /* Nobody will listen on the file just made; it goes before the
         * descriptor, so that it is never a newer socket's. */
        if (ep->is_unix) unlink(ep->path);
    }
    close(fd);
    return rc;
}

/* ---- process-wide setup ------------------------------------------------------ */

static uv_once_t sigpipe_once = UV_ONCE_INIT;

static void ignore_sigpipe(void) {
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) != 0 || sa.sa_handler != SIG_DFL) return;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);
}

void pl_sockaddr_ignore_sigpipe(void) { uv_once(&sigpipe_once, ignore_sigpipe); }
