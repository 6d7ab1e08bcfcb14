/* envelope.c: mailbox envelopes straight from and into Lua values (see
 * envelope.h).
 *
 * Why not a Lua table and value.c: a message sent that way is built as a
 * table of six fields (and a table of arguments), walked by lua_next to be
 * encoded, decoded into the same two tables, and unpacked again; that was
 * half of what a message cost in Lua. Here the head is written from C
 * strings and integers, the arguments are encoded from the sender's stack
 * as they are, and on the way in the head is read in place
 * (pl_value_peek_envelope) and only the body is decoded, its items pushed
 * as the handler's arguments. */
#include "envelope.h"

#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <msgpack/pack.h>

/* The most arguments one request may carry onto a stack. */
#define MAX_ARGS 100000

typedef struct head_writer {
    pl_buf *out;
    int failed;
} head_writer;

static int write_head(void *data, const char *p, size_t n) {
    head_writer *w = data;
    if (pl_buf_append(w->out, p, n) != 0) {
        w->failed = 1;
        return -1;
    }
    return 0;
}

static void pack_key(msgpack_packer *pk, const char *key) {
    msgpack_pack_str_with_body(pk, key, strlen(key));
}

static void pack_string_field(msgpack_packer *pk, const char *key, const char *value) {
    pack_key(pk, key);
    msgpack_pack_str_with_body(pk, value, strlen(value));
}

/* Starts a map of `fields` entries in out, through w. */
static void start_map(msgpack_packer *pk, head_writer *w, pl_buf *out, size_t fields) {
    w->out = out;
    w->failed = 0;
    msgpack_packer_init(pk, w, write_head);
    msgpack_pack_map(pk, fields);
}

static int no_memory(char *err, size_t errlen) {
    snprintf(err, errlen, "out of memory: the message cannot grow");
    return -1;
}

/* Arguments with a nil among them: a map of the others by position, and n. */
static int encode_sparse_args(lua_State *L, msgpack_packer *pk, head_writer *w,
                              int first, int nargs, const pl_value_limits *lim,
                              char *err, size_t errlen) {
    int present = 0;
    for (int i = 0; i < nargs; i++) present += !lua_isnil(L, first + i);
    msgpack_pack_map(pk, (size_t)present + 1);
    for (int i = 0; i < nargs; i++) {
        if (lua_isnil(L, first + i)) continue;
        char root[32];
        snprintf(root, sizeof root, "args[%d]", i + 1);
        msgpack_pack_int(pk, i + 1);
        if (w->failed) return no_memory(err, errlen);
        if (pl_value_encode(L, first + i, w->out, lim, root, err, errlen) != 0) return -1;
    }
    pack_key(pk, "n");
    msgpack_pack_int(pk, nargs);
    return w->failed ? no_memory(err, errlen) : 0;
}

int pl_envelope_encode_request(lua_State *L, const pl_request_head *head,
                               int first, int nargs, pl_buf *out,
                               const pl_value_limits *lim, char *err,
                               size_t errlen) {
    size_t start = out->len;
    first = lua_absindex(L, first);
    head_writer w;
    msgpack_packer pk;
    start_map(&pk, &w, out, 4 + (head->target != NULL) + (nargs > 0));
    pack_string_field(&pk, "command", head->command);
    pack_key(&pk, "id");
    msgpack_pack_long_long(&pk, head->id);
    pack_string_field(&pk, "sender", head->sender);
    if (head->target) pack_string_field(&pk, "target", head->target);
    pack_key(&pk, "ack");
    if (head->ack) msgpack_pack_true(&pk); else msgpack_pack_false(&pk);
    int rc = w.failed ? no_memory(err, errlen) : 0;
    if (rc == 0 && nargs > 0) {
        pack_key(&pk, "args");
        int sparse = 0;
        for (int i = 0; i < nargs && !sparse; i++) sparse = lua_isnil(L, first + i);
        rc = sparse ? encode_sparse_args(L, &pk, &w, first, nargs, lim, err, errlen)
                    : pl_value_encode_list(L, first, nargs, out, lim, "args", err, errlen);
    }
    if (rc != 0) out->len = start;
    return rc;
}

int pl_envelope_encode_reply(lua_State *L, const pl_reply_head *head,
                             int is_error, int idx, pl_buf *out,
                             const pl_value_limits *lim, char *err,
                             size_t errlen) {
    size_t start = out->len;
    idx = lua_absindex(L, idx);
    int has_body = is_error || !lua_isnil(L, idx);
    head_writer w;
    msgpack_packer pk;
    start_map(&pk, &w, out, 2 + (head->target != NULL) + (head->sender != NULL) + (size_t)has_body);
    pack_string_field(&pk, "command", "callback");
    pack_key(&pk, "ack");
    msgpack_pack_long_long(&pk, head->ack);
    if (head->target) pack_string_field(&pk, "target", head->target);
    if (head->sender) pack_string_field(&pk, "sender", head->sender);
    int rc = w.failed ? no_memory(err, errlen) : 0;
    if (rc == 0 && has_body) {
        const char *key = is_error ? "error" : "result";
        pack_key(&pk, key);
        rc = w.failed ? no_memory(err, errlen)
                      : pl_value_encode(L, idx, out, lim, key, err, errlen);
    }
    if (rc != 0) out->len = start;
    return rc;
}

/* ---- reading ------------------------------------------------------------- */

static void push_string_or_nil(lua_State *L, const char *s, size_t len) {
    if (s) lua_pushlstring(L, s, len); else lua_pushnil(L);
}

static int decode_body(lua_State *L, const char *body, size_t len,
                       const pl_value_limits *lim, char *err, size_t errlen) {
    if (!body) {
        lua_pushnil(L);
        return 0;
    }
    return pl_value_decode(L, body, len, lim, err, errlen) < 0 ? -1 : 0;
}

/* Replaces the args table on top with its items: 1..n, n = its `n` field
 * when it has one, else its length. Returns n, or -1 with err. */
static int unpack_args(lua_State *L, char *err, size_t errlen) {
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "args is a %s, not a list", luaL_typename(L, -1));
        return -1;
    }
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    if (lua_getfield(L, -1, "n") == LUA_TNUMBER && lua_isinteger(L, -1)) n = lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (n < 0 || n > MAX_ARGS || !lua_checkstack(L, (int)n + 2)) {
        snprintf(err, errlen, "args counts %lld arguments", (long long)n);
        return -1;
    }
    int t = lua_gettop(L);
    for (lua_Integer i = 1; i <= n; i++) lua_rawgeti(L, t, i);
    lua_remove(L, t);
    return (int)n;
}

static int push_reply(lua_State *L, const pl_envelope_head *h,
                      const pl_value_limits *lim, char *err, size_t errlen) {
    if (h->ack_kind == 2) lua_pushinteger(L, (lua_Integer)h->ack_int); else lua_pushnil(L);
    push_string_or_nil(L, h->sender, h->sender_len);
    push_string_or_nil(L, h->target, h->target_len);
    lua_pushboolean(L, h->error != NULL);
    int rc = h->error ? decode_body(L, h->error, h->error_len, lim, err, errlen)
                      : decode_body(L, h->result, h->result_len, lim, err, errlen);
    return rc == 0 ? 5 : -1;
}

static int push_request(lua_State *L, const pl_envelope_head *h,
                        const pl_value_limits *lim, char *err, size_t errlen) {
    if (h->has_id) lua_pushinteger(L, (lua_Integer)h->id); else lua_pushnil(L);
    push_string_or_nil(L, h->sender, h->sender_len);
    push_string_or_nil(L, h->target, h->target_len);
    lua_pushboolean(L, h->ack_kind == 1 ? h->ack_bool : h->ack_kind == 2);
    if (!h->args) return 4;
    if (decode_body(L, h->args, h->args_len, lim, err, errlen) != 0) return -1;
    int n = unpack_args(L, err, errlen);
    return n < 0 ? -1 : 4 + n;
}

int pl_envelope_push(lua_State *L, const char *data, size_t len,
                     const pl_value_limits *lim, char *err, size_t errlen) {
    if (!lim) lim = &pl_value_default_limits;
    if (len > lim->max_size) {
        snprintf(err, errlen, "a message of %zu bytes exceeds the limit of %zu bytes", len, lim->max_size);
        return -1;
    }
    pl_envelope_head h;
    if (pl_value_peek_envelope(data, len, lim->max_depth, &h) != 0 || !h.command) {
        snprintf(err, errlen, "not an envelope (a MessagePack map with a string command)");
        return -1;
    }
    int top = lua_gettop(L);
    luaL_checkstack(L, 8, "pl_envelope_push");
    lua_pushlstring(L, h.command, h.command_len);
    int is_reply = h.command_len == 8 && memcmp(h.command, "callback", 8) == 0;
    int n = is_reply ? push_reply(L, &h, lim, err, errlen) : push_request(L, &h, lim, err, errlen);
    if (n < 0) {
        lua_settop(L, top);
        return -1;
    }
    return n + 1;
}
