/* auth.c: the secrets behind the TCP mailbox (auth.h): libsodium's
 * primitives, and reading the cookie file with the care ssh and Erlang take
 * with theirs.
 *
 * How it fits: a TCP peer of the arbiter's mailbox is admitted only after a
 * challenge-response proving it knows the cookie. The handshake is in Lua
 * (lua/pulsar/auth.lua), as every other protocol is; it reaches this file
 * through lauth.c's bindings, which the arbiter (`--mailbox HOST:PORT`) and
 * a console (`--attach HOST:PORT`) both use to load the cookie. Only what
 * must be C is here.
 *
 * The cookie: by default $HOME/.pulsar-lua/cookie. A missing one is created
 * (unless create is false, as for a console: a new random cookie could only
 * be wrong) with 32 random bytes, mode 0600, in a 0700 directory. Two
 * arbiters may start at once: each writes a complete file under a private
 * temporary name (O_CREAT|O_EXCL, by mkstemp) and link()s it into place,
 * which only one can do; the other reads the winner's. A cookie is refused,
 * with a message saying what to fix, when it is not a regular file, belongs
 * to another user, can be read or written by group or others, is shorter
 * than PL_COOKIE_MIN bytes (a short secret is guessed in seconds, and
 * whoever guesses it runs code in the arbiter), or is larger than
 * PL_COOKIE_MAX (it is read whole, and no more). Every byte counts, a
 * trailing newline too: the file is the secret as it is. The checks run on
 * the opened file (fstat), so what is checked is what is read. */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>
#include <uv.h>

#include "log.h"

#define COOKIE_BYTES 32 /* what a new cookie holds */
#define COOKIE_DIR ".pulsar-lua"
#define COOKIE_NAME "cookie"

typedef char path_buf[PATH_MAX];

/* ---- primitives ------------------------------------------------------------ */

static uv_once_t sodium_once = UV_ONCE_INIT;
static int sodium_ready; /* sodium_init succeeded */

static void start_sodium(void) { sodium_ready = sodium_init() >= 0; }

int pl_auth_start(void) {
    uv_once(&sodium_once, start_sodium);
    return sodium_ready ? 0 : -1;
}

void pl_random_bytes(void *out, size_t n) { randombytes_buf(out, n); }

void pl_hmac_sha256(const void *key, size_t keylen, const void *msg,
                    size_t msglen, unsigned char out[PL_HMAC_BYTES]) {
    crypto_auth_hmacsha256_state state;
    crypto_auth_hmacsha256_init(&state, key, keylen);
    crypto_auth_hmacsha256_update(&state, msg, msglen);
    crypto_auth_hmacsha256_final(&state, out);
    sodium_memzero(&state, sizeof state);
}

int pl_equal_secrets(const void *a, size_t alen, const void *b, size_t blen) {
    return alen == blen && sodium_memcmp(a, b, alen) == 0;
}

void pl_cookie_wipe(pl_cookie *c) { sodium_memzero(c, sizeof *c); }

/* ---- the cookie file ------------------------------------------------------- */

/* "what path: the system's reason", and -1. */
static int refuse_errno(char *err, size_t errlen, const char *what,
                        const char *path) {
    return pl_set_err(err, errlen, "%s %s: %s", what, path, strerror(errno));
}

/* $HOME/.pulsar-lua and $HOME/.pulsar-lua/cookie; the password database
 * answers when HOME is not set. */
static int default_paths(path_buf dir, path_buf file, char *err,
                         size_t errlen) {
    const char *home = getenv("HOME");
    if (!home || !*home) {
        struct passwd *pw = getpwuid(geteuid());
        home = pw ? pw->pw_dir : NULL;
    }
    if (!home || !*home)
        return pl_set_err(err, errlen, "cannot find the home directory for "
                          "the cookie (HOME is not set)");
    int n = snprintf(dir, PATH_MAX, "%s/" COOKIE_DIR, home);
    int m = snprintf(file, PATH_MAX, "%s/" COOKIE_DIR "/" COOKIE_NAME, home);
    if (n < 0 || m < 0 || n >= PATH_MAX || m >= PATH_MAX)
        return pl_set_err(err, errlen, "the home directory's path is too "
                          "long: %s", home);
    return 0;
}

/* A cookie too short to be a secret: the message says how to make one. */
static int refuse_short(char *err, size_t errlen, const char *path,
                        size_t len) {
    return pl_set_err(err, errlen, "cookie file %s is %zu bytes: at least %d "
                      "are needed; remove it to have one made, or write 32 "
                      "random bytes: head -c 32 /dev/urandom > %s; chmod 600 "
                      "%s", path, len, PL_COOKIE_MIN, path, path);
}

static int refuse_large(char *err, size_t errlen, const char *path) {
    return pl_set_err(err, errlen, "cookie file %s is too large (at most %d "
                      "bytes)", path, PL_COOKIE_MAX);
}

/* What makes a cookie file unfit to trust, checked on the open file. */
static int check_cookie_file(const struct stat *st, const char *path,
                             char *err, size_t errlen) {
    if (!S_ISREG(st->st_mode))
        return pl_set_err(err, errlen, "cookie file %s is not a regular file",
                          path);
    if (st->st_uid != geteuid())
        return pl_set_err(err, errlen, "cookie file %s belongs to another "
                          "user", path);
    if (st->st_mode & (S_IRWXG | S_IRWXO))
        return pl_set_err(err, errlen, "cookie file %s can be read or "
                          "written by group or others: run chmod 600 %s",
                          path, path);
    if (st->st_size > PL_COOKIE_MAX) return refuse_large(err, errlen, path);
    return 0;
}

/* Reads the cookie at path: 0; 1 when there is no such file; -1 with a
 * message in err. The length is checked on what was read, not on the
 * size fstat saw, in case the file changed in between. */
static int read_cookie(const char *path, pl_cookie *out, char *err,
                       size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT) return 1;
        return refuse_errno(err, errlen, "cannot open cookie file", path);
    }
    struct stat st;
    int rc = fstat(fd, &st) == 0
                 ? check_cookie_file(&st, path, err, errlen)
                 : refuse_errno(err, errlen, "cannot inspect cookie file", path);
    out->len = 0;
    while (rc == 0 && out->len < sizeof out->data) {
        ssize_t n = read(fd, out->data + out->len, sizeof out->data - out->len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) rc = refuse_errno(err, errlen, "cannot read cookie file", path);
        if (n <= 0) break;
        out->len += (size_t)n;
    }
    close(fd);
    if (rc == 0 && out->len < PL_COOKIE_MIN)
        rc = refuse_short(err, errlen, path, out->len);
    if (rc == 0 && out->len > PL_COOKIE_MAX) rc = refuse_large(err, errlen, path);
    return rc;
}

/* The default directory: made 0700 if missing; refused if others could
 * put a cookie of their choosing in it. */
static int prepare_dir(const char *dir, char *err, size_t errlen) {
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return refuse_errno(err, errlen, "cannot create the cookie's directory",
                            dir);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return pl_set_err(err, errlen, "%s is not a directory", dir);
    if (st.st_uid != geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH)))
        return pl_set_err(err, errlen, "directory %s belongs to another user "
                          "or can be written by group or others: run chmod "
                          "700 %s", dir, dir);
    return 0;
}

/* Writes a fresh cookie under a temporary name and links it into place;
 * losing that race to another process is as good as winning it. */
static int create_cookie(const char *path, char *err, size_t errlen) {
    path_buf tmp;
    int n = snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
    if (n < 0 || n >= (int)sizeof tmp)
        return pl_set_err(err, errlen, "cookie path %s is too long", path);
    int fd = mkstemp(tmp); /* O_CREAT|O_EXCL, mode 0600 */
    if (fd < 0) return refuse_errno(err, errlen, "cannot create cookie file", path);
    unsigned char fresh[COOKIE_BYTES];
    randombytes_buf(fresh, sizeof fresh);
    ssize_t written;
    do written = write(fd, fresh, sizeof fresh);
    while (written < 0 && errno == EINTR);
    sodium_memzero(fresh, sizeof fresh);
    int ok = written == (ssize_t)sizeof fresh;
    if (!ok && written >= 0) errno = EIO; /* a short write */
    if (!ok || fsync(fd) != 0) {
        refuse_errno(err, errlen, "cannot write cookie file", path);
        close(fd);
        unlink(tmp);
        return -1;
    }
    close(fd);
    int rc = 0;
    if (link(tmp, path) != 0 && errno != EEXIST)
        rc = refuse_errno(err, errlen, "cannot create cookie file", path);
    unlink(tmp);
    return rc;
}

int pl_load_cookie(const char *path, int create, const char *who,
                   pl_cookie *out, char *err, size_t errlen) {
    path_buf dir, file;
    if (path && strlen(path) >= sizeof file)
        return pl_set_err(err, errlen, "cookie path %.60s... is too long", path);
    if (path) snprintf(file, sizeof file, "%s", path);
    else if (default_paths(dir, file, err, errlen) != 0) return -1;
    int rc = read_cookie(file, out, err, errlen);
    if (rc != 1) return rc;
    if (!create) return pl_set_err(err, errlen, "no cookie file at %s", file);
    if (!path && prepare_dir(dir, err, errlen) != 0) return -1;
    if (create_cookie(file, err, errlen) != 0) return -1;
    pl_log(PL_LOG_INFO, who, "created the cookie file %s", file);
    rc = read_cookie(file, out, err, errlen);
    if (rc == 1) return pl_set_err(err, errlen, "cookie file %s vanished", file);
    return rc;
}
