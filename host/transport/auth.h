/* auth.h: the secrets behind the TCP mailbox: libsodium's HMAC-SHA256,
 * random bytes and constant-time comparison, and the cookie file (auth.c).
 * Their Lua bindings, pulsar.core's random_bytes, hmac_sha256,
 * equal_secrets and load_cookie, are lauth.c's. */
#ifndef PULSAR_AUTH_H
#define PULSAR_AUTH_H

#include <stddef.h>

#include <lua.h>

#define PL_COOKIE_MAX 4096 /* the largest cookie file read */
#define PL_COOKIE_MIN 16   /* the shortest cookie trusted: 128 bits */
#define PL_HMAC_BYTES 32

typedef struct pl_cookie {
    char data[PL_COOKIE_MAX + 1]; /* one more, to notice a file that grew */
    size_t len;
} pl_cookie;

/* Starts libsodium once per process: 0, or -1 when it cannot start. */
int pl_auth_start(void);

void pl_random_bytes(void *out, size_t n);
void pl_hmac_sha256(const void *key, size_t keylen, const void *msg,
                    size_t msglen, unsigned char out[PL_HMAC_BYTES]);
/* Whether a and b are equal, in a time that depends on their lengths only. */
int pl_equal_secrets(const void *a, size_t alen, const void *b, size_t blen);

/* Reads the cookie at `path` (NULL: $HOME/.pulsar-lua/cookie), creating a
 * missing one if `create`; `who` names the actor in the log line that says
 * so. 0, or -1 with a message for the user in err. The caller wipes `out`
 * (pl_cookie_wipe) once done with it. */
int pl_load_cookie(const char *path, int create, const char *who,
                   pl_cookie *out, char *err, size_t errlen);
void pl_cookie_wipe(pl_cookie *c);

void pl_lauth_register(lua_State *L);

#endif
