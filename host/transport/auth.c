/* auth.c: the secrets behind the TCP mailbox, as part of pulsar.core.
 *
 *   core.random_bytes(n)        -> n bytes from the system's secure source
 *   core.hmac_sha256(key, msg)  -> the 32-byte HMAC-SHA256 (any key length)
 *   core.equal_secrets(a, b)    -> whether two strings are equal, in a time
 *                                  that depends on their length only
 *   core.load_cookie([path [, create]]) -> bytes | nil, err
 *
 * How it fits: a TCP peer of the arbiter's mailbox is admitted only after a
 * challenge-response proving it knows the cookie (lua/pulsar/auth.lua, where
 * the handshake is, as every other protocol is in Lua). Only what must be C
 * is here: libsodium's primitives, and reading the cookie file with the
 * care ssh and Erlang take with theirs.
 *
 * The cookie: by default $HOME/.pulsar-lua/cookie. A missing one is created
 * (unless create is false, as for a console: a new random cookie could only
 * be wrong) with 32 random bytes, mode 0600, in a 0700 directory. Two
 * arbiters may start at once: each writes a complete file under a private
 * temporary name (O_CREAT|O_EXCL, by mkstemp) and link()s it into place,
 * which only one can do; the other reads the winner's. A cookie is refused,
 * with a message saying what to fix, when it is not a regular file, belongs
 * to another user, can be read or written by group or others, is empty, or
 * is larger than COOKIE_MAX (it is read whole, and no more). The checks run
 * on the opened file (fstat), so what is checked is what is read. */
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

#include <lauxlib.h>
#include <sodium.h>
#include <uv.h>

#include "host.h"
#include "log.h"

#define COOKIE_BYTES 32      /* what a new cookie holds */
#define COOKIE_MAX 4096      /* the largest cookie file read */
#define RANDOM_MAX (1 << 16) /* the most random bytes one call gives */
#define COOKIE_DIR ".pulsar-lua"
#define COOKIE_NAME "cookie"

typedef char path_buf[PATH_MAX];

static uv_once_t sodium_once = UV_ONCE_INIT;
static int sodium_ready; /* sodium_init succeeded */

static void start_sodium(void) { sodium_ready = sodium_init() >= 0; }

/* ---- primitives ------------------------------------------------------------ */

static int core_random_bytes(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0 && n <= RANDOM_MAX, 1, "count out of range");
    luaL_Buffer b;
    unsigned char *p = (unsigned char *)luaL_buffinitsize(L, &b, (size_t)n);
    randombytes_buf(p, (size_t)n);
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

static int core_hmac_sha256(lua_State *L) {
    size_t keylen, msglen;
    const char *key = luaL_checklstring(L, 1, &keylen);
    const char *msg = luaL_checklstring(L, 2, &msglen);
    crypto_auth_hmacsha256_state state;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_init(&state, (const unsigned char *)key, keylen);
    crypto_auth_hmacsha256_update(&state, (const unsigned char *)msg, msglen);
    crypto_auth_hmacsha256_final(&state, mac);
    sodium_memzero(&state, sizeof state);
    lua_pushlstring(L, (const char *)mac, sizeof mac);
    return 1;
}

static int core_equal_secrets(lua_State *L) {
    size_t alen, blen;
    const char *a = luaL_checklstring(L, 1, &alen);
    const char *b = luaL_checklstring(L, 2, &blen);
    lua_pushboolean(L, alen == blen && sodium_memcmp(a, b, alen) == 0);
    return 1;
}

/* ---- the cookie file ------------------------------------------------------- */

typedef char message_buf[PATH_MAX * 2 + 200];

typedef struct cookie {
    char data[COOKIE_MAX + 1]; /* one more, to notice a file that grew */
    size_t len;
} cookie;

/* Writes the message (fmt takes the path once or twice) and returns -1. */
static int refuse(message_buf err, const char *fmt, const char *path) {
    snprintf(err, sizeof(message_buf), fmt, path, path);
    return -1;
}

/* "what path: the system's reason", and -1. */
static int refuse_errno(message_buf err, const char *what, const char *path) {
    snprintf(err, sizeof(message_buf), "%s %s: %s", what, path, strerror(errno));
    return -1;
}

/* $HOME/.pulsar-lua and $HOME/.pulsar-lua/cookie; the password database
 * answers when HOME is not set. */
static int default_paths(path_buf dir, path_buf file, message_buf err) {
    const char *home = getenv("HOME");
    if (!home || !*home) {
        struct passwd *pw = getpwuid(geteuid());
        home = pw ? pw->pw_dir : NULL;
    }
    if (!home || !*home) {
        snprintf(err, sizeof(message_buf), "cannot find the home directory "
                 "for the cookie (HOME is not set)");
        return -1;
    }
    int n = snprintf(dir, PATH_MAX, "%s/" COOKIE_DIR, home);
    int m = snprintf(file, PATH_MAX, "%s/" COOKIE_DIR "/" COOKIE_NAME, home);
    if (n < 0 || m < 0 || n >= PATH_MAX || m >= PATH_MAX)
        return refuse(err, "the home directory's path is too long: %s", home);
    return 0;
}

/* What makes a cookie file unfit to trust, checked on the open file. */
static int check_cookie_file(const struct stat *st, const char *path,
                             message_buf err) {
    if (!S_ISREG(st->st_mode))
        return refuse(err, "cookie file %s is not a regular file", path);
    if (st->st_uid != geteuid())
        return refuse(err, "cookie file %s belongs to another user", path);
    if (st->st_mode & (S_IRWXG | S_IRWXO))
        return refuse(err, "cookie file %s can be read or written by group "
                           "or others: run chmod 600 %s", path);
    if (st->st_size == 0)
        return refuse(err, "cookie file %s is empty", path);
    if (st->st_size > COOKIE_MAX)
        return refuse(err, "cookie file %s is too large (at most 4096 "
                           "bytes)", path);
    return 0;
}

/* Reads the cookie at path: 0; 1 when there is no such file; -1 with a
 * message in err. */
static int read_cookie(const char *path, cookie *out, message_buf err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT) return 1;
        return refuse_errno(err, "cannot open cookie file", path);
    }
    struct stat st;
    int rc = fstat(fd, &st) == 0
                 ? check_cookie_file(&st, path, err)
                 : refuse_errno(err, "cannot inspect cookie file", path);
    out->len = 0;
    while (rc == 0 && out->len < sizeof out->data) {
        ssize_t n = read(fd, out->data + out->len, sizeof out->data - out->len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) rc = refuse_errno(err, "cannot read cookie file", path);
        if (n <= 0) break;
        out->len += (size_t)n;
    }
    close(fd);
    if (rc == 0 && out->len == 0)
        rc = refuse(err, "cookie file %s is empty", path);
    if (rc == 0 && out->len > COOKIE_MAX)
        rc = refuse(err, "cookie file %s is too large (at most 4096 bytes)",
                    path);
    return rc;
}

/* The default directory: made 0700 if missing; refused if others could
 * put a cookie of their choosing in it. */
static int prepare_dir(const char *dir, message_buf err) {
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return refuse_errno(err, "cannot create the cookie's directory", dir);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return refuse(err, "%s is not a directory", dir);
    if (st.st_uid != geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH)))
        return refuse(err, "directory %s belongs to another user or can be "
                           "written by group or others: run chmod 700 %s", dir);
    return 0;
}

/* Writes a fresh cookie under a temporary name and links it into place;
 * losing that race to another process is as good as winning it. */
static int create_cookie(const char *path, message_buf err) {
    path_buf tmp;
    int n = snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
    if (n < 0 || n >= (int)sizeof tmp)
        return refuse(err, "cookie path %s is too long", path);
    int fd = mkstemp(tmp); /* O_CREAT|O_EXCL, mode 0600 */
    if (fd < 0) return refuse_errno(err, "cannot create cookie file", path);
    unsigned char fresh[COOKIE_BYTES];
    randombytes_buf(fresh, sizeof fresh);
    ssize_t written;
    do written = write(fd, fresh, sizeof fresh);
    while (written < 0 && errno == EINTR);
    sodium_memzero(fresh, sizeof fresh);
    int ok = written == (ssize_t)sizeof fresh;
    if (!ok && written >= 0) errno = EIO; /* a short write */
    if (!ok || fsync(fd) != 0) {
        refuse_errno(err, "cannot write cookie file", path);
        close(fd);
        unlink(tmp);
        return -1;
    }
    close(fd);
    int rc = 0;
    if (link(tmp, path) != 0 && errno != EEXIST)
        rc = refuse_errno(err, "cannot create cookie file", path);
    unlink(tmp);
    return rc;
}

/* The cookie at `given` (NULL: the default path), created when missing
 * if `create`: 0, or -1 with err. */
static int load_cookie(lua_State *L, const char *given, int create, cookie *out,
                       message_buf err) {
    path_buf dir, file;
    if (given) snprintf(file, sizeof file, "%s", given);
    else if (default_paths(dir, file, err) != 0) return -1;
    int rc = read_cookie(file, out, err);
    if (rc != 1) return rc;
    if (!create) return refuse(err, "no cookie file at %s", file);
    if (!given && prepare_dir(dir, err) != 0) return -1;
    if (create_cookie(file, err) != 0) return -1;
    pl_log(PL_LOG_INFO, pl_host_of(L)->name, "created the cookie file %s", file);
    rc = read_cookie(file, out, err);
    return rc == 1 ? refuse(err, "cookie file %s vanished", file) : rc;
}

/* core.load_cookie([path [, create = true]]) -> bytes | nil, err */
static int core_load_cookie(lua_State *L) {
    const char *given = luaL_optstring(L, 1, NULL);
    int create = lua_isnoneornil(L, 2) || lua_toboolean(L, 2);
    luaL_argcheck(L, !given || (*given && strlen(given) < PATH_MAX), 1,
                  "cookie path empty or too long");
    cookie c;
    message_buf err;
    int rc = load_cookie(L, given, create, &c, err);
    if (rc == 0) lua_pushlstring(L, c.data, c.len);
    sodium_memzero(&c, sizeof c);
    if (rc == 0) return 1;
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

/* ---- registration ------------------------------------------------------------ */

static const luaL_Reg auth_functions[] = {
    {"random_bytes", core_random_bytes},
    {"hmac_sha256", core_hmac_sha256},
    {"equal_secrets", core_equal_secrets},
    {"load_cookie", core_load_cookie},
    {NULL, NULL},
};

void pl_lauth_register(lua_State *L) {
    uv_once(&sodium_once, start_sodium);
    if (!sodium_ready) luaL_error(L, "libsodium could not start");
    luaL_setfuncs(L, auth_functions, 0);
}
