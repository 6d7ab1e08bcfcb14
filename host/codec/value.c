/* value.c: the value codec, Lua values to MessagePack and back (see value.h).
 *
 * Every message between actors crosses here: the sender's VM encodes its
 * arguments into a pl_buf, the transport carries the bytes, the receiver's VM
 * decodes them onto its stack. So this file is on the hot path, and it faces
 * bytes from other processes.
 *
 * Encoding uses msgpack-c's packer, writing through a callback that appends
 * to the pl_buf and fails when the buffer cannot grow or the size limit would
 * be passed. Decoding is hand-written, straight onto the Lua stack: msgpack-c's
 * unpacker allocates from header counts before seeing the bytes (the 5 bytes
 * dd 0f ff ff ff make it ask malloc for 8 GiB) and builds an object tree we
 * would walk again. Our decoder checks every count and length against the
 * bytes that remain before allocating (n array items need at least n bytes, a
 * map 2n), limits depth, and never reads past len.
 *
 * Mapping: nil, booleans, integers (smallest encoding), floats (always
 * float64, so 1.0 stays a float), strings (str; str and bin decode as
 * strings), tables that are sequences 1..n (arrays; {} is an empty array),
 * other tables (maps, raw access, metatables ignored). A uint64 above
 * INT64_MAX and a float32 decode as floats.
 *
 * Extensions:
 *   1 function: data is MessagePack [bin bytecode, [upvalue 1..n]] for a Lua
 *     function, or [str module, str field] for a C function found in
 *     package.loaded[module][field]. Inside an upvalue array only:
 *       3 (empty): the upvalue is _ENV; it becomes the receiver's globals.
 *       4 (name): the upvalue is package.loaded[name]; the receiver requires it.
 *       6 (byte k): the function k function-levels up (0 = the upvalue's
 *         owner), for recursive and mutually nested functions.
 *     Loading bytecode runs the sender's code, so decoding ext 1 needs
 *     lim->allow_functions.
 *   2 ActorProxy: a table whose metatable is registry[PL_PROXY_METATABLE];
 *     data is a map of its raw fields; decoding restores the metatable.
 *
 * Limits: depth counts tables, functions and proxies (root = 1; capped at
 * PL_VALUE_DEPTH_CAP whatever the caller asks, to bound the C recursion);
 * size bounds the bytes appended by one call; a table reached again through
 * its own ancestors is a cycle error (a repeated acyclic reference is simply
 * encoded twice).
 *
 * Paths in error messages: each level of the encoder's recursion keeps a small
 * frame on the C stack saying how its value was reached (a key's stack slot,
 * an index, an upvalue name) and which table or function it is. Frames link to
 * their parents, so the chain is bounded by the depth limit, costs a few
 * stores per value, and is turned into text only when an error occurs. The
 * same chain gives the ancestors for cycle detection and the enclosing
 * functions for ext 6.
 *
 * Resource safety: a function or proxy is encoded into a scratch pl_buf first
 * (the ext header needs the payload length). After the registry look-ups at
 * the start, the encoder only calls Lua API functions that do not allocate
 * (no lua_tolstring on numbers, no string pushes), so no Lua error can unwind
 * past a scratch buffer and leak it. The decoder holds no memory of its own;
 * Lua owns everything it builds. */
#include "value.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <msgpack/pack.h>

#define EXT_FUNCTION 1
#define EXT_PROXY 2
#define EXT_ENV 3
#define EXT_MODULE 4
#define EXT_SELF 6

/* However deep a caller allows, the C recursion stops here. */
#define PL_VALUE_DEPTH_CAP 1000

/* MessagePack lengths and counts are 32-bit. */
#define MP_MAX_LEN 0xffffffffu

const pl_value_limits pl_value_default_limits = {100, (size_t)64 << 20, 1};

static int effective_depth(const pl_value_limits *lim) {
    return lim->max_depth < PL_VALUE_DEPTH_CAP ? lim->max_depth
                                               : PL_VALUE_DEPTH_CAP;
}

/* ---- Error text: a bounded appender over the caller's err buffer ---- */

typedef struct msgbuf {
    char *p;
    size_t cap; /* bytes at p, including the NUL */
    size_t len;
} msgbuf;

static void mb_init(msgbuf *m, char *p, size_t cap) {
    m->p = cap ? p : NULL;
    m->cap = cap;
    m->len = 0;
    if (m->p) m->p[0] = '\0';
}

static void mb_write(msgbuf *m, const char *s, size_t n) {
    if (!m->p || m->len + 1 >= m->cap) return;
    size_t room = m->cap - 1 - m->len;
    if (n > room) n = room;
    memcpy(m->p + m->len, s, n);
    m->len += n;
    m->p[m->len] = '\0';
}

static void mb_puts(msgbuf *m, const char *s) { mb_write(m, s, strlen(s)); }

static void mb_vprintf(msgbuf *m, const char *fmt, va_list ap) {
    if (!m->p || m->len + 1 >= m->cap) return;
    /* vsnprintf truncates on its own and always terminates. */
    int n = vsnprintf(m->p + m->len, m->cap - m->len, fmt, ap);
    if (n < 0) return;
    m->len += (size_t)n < m->cap - m->len ? (size_t)n : m->cap - m->len - 1;
}

static void mb_printf(msgbuf *m, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    mb_vprintf(m, fmt, ap);
    va_end(ap);
}

/* Writes s as the inside of a Lua "..." literal, at most `max` source bytes,
 * so that keys and module names with odd bytes stay readable and short. */
static void mb_escaped(msgbuf *m, const char *s, size_t n, size_t max) {
    size_t shown = n > max ? max : n;
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': mb_puts(m, "\\\""); break;
        case '\\': mb_puts(m, "\\\\"); break;
        case '\n': mb_puts(m, "\\n"); break;
        case '\r': mb_puts(m, "\\r"); break;
        case '\t': mb_puts(m, "\\t"); break;
        default:
            if (c < 0x20 || c >= 0x7f) mb_printf(m, "\\%u", (unsigned)c);
            else mb_write(m, (const char *)&c, 1);
        }
    }
    if (shown < n) mb_puts(m, "...");
}

static int is_reserved_word(const char *s, size_t n) {
    static const char *const words[] = {
        "and",  "break", "do",     "else", "elseif", "end",   "false",
        "for",  "function", "goto", "if",  "in",     "local", "nil",
        "not",  "or",    "repeat", "return", "then", "true",  "until",
        "while"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strlen(words[i]) == n && memcmp(words[i], s, n) == 0) return 1;
    return 0;
}

static int is_identifier(const char *s, size_t n) {
    if (n == 0 || n > 32) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return 0;
    }
    return !is_reserved_word(s, n);
}

/* ".name", ["odd key"], [3], [1.5], [true], [table]: how a key reads in a
 * path. Reads the key without converting it (no allocation). */
static void mb_key(msgbuf *m, lua_State *L, int idx) {
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        if (is_identifier(s, n)) {
            mb_puts(m, ".");
            mb_write(m, s, n);
        } else {
            mb_puts(m, "[\"");
            mb_escaped(m, s, n, 32);
            mb_puts(m, "\"]");
        }
        break;
    }
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            mb_printf(m, "[" LUA_INTEGER_FMT "]", (LUAI_UACINT)lua_tointeger(L, idx));
        else
            mb_printf(m, "[%.14g]", (double)lua_tonumber(L, idx));
        break;
    case LUA_TBOOLEAN:
        mb_puts(m, lua_toboolean(L, idx) ? "[true]" : "[false]");
        break;
    default:
        mb_printf(m, "[%s]", luaL_typename(L, idx));
    }
}

/* ---- Encoder ---- */

/* How the value at one level of the recursion was reached. */
enum step_kind {
    STEP_ROOT,    /* the value passed in */
    STEP_INDEX,   /* array item: index */
    STEP_FIELD,   /* map value: key at stack slot `key` */
    STEP_KEY,     /* map key itself: at stack slot `key` */
    STEP_UPVALUE, /* upvalue of the parent function: name */
};

typedef struct enc_frame {
    const struct enc_frame *parent;
    int kind;
    int depth;         /* root = 1 */
    int key;           /* STEP_FIELD, STEP_KEY */
    lua_Integer index; /* STEP_INDEX */
    const char *name;  /* STEP_UPVALUE */
    const void *ptr;   /* the table or function encoded here, else NULL */
    int is_function;
} enc_frame;

typedef struct enc {
    lua_State *L;
    msgpack_packer pk;
    pl_buf *sink;    /* where bytes go now: out, or a scratch buffer */
    size_t sink_end; /* sink->len may not pass this (the size limit) */
    const pl_value_limits *lim;
    int max_depth;
    int proxy_mt; /* stack slot of the proxy metatable, 0 if none */
    int loaded;   /* stack slot of package.loaded, 0 if none */
    const char *root;
    msgbuf err;
    int failed;
} enc;

static void child_frame(enc_frame *c, const enc_frame *parent, int kind) {
    c->parent = parent;
    c->kind = kind;
    c->depth = parent->depth + 1;
    c->key = 0;
    c->index = 0;
    c->name = NULL;
    c->ptr = NULL;
    c->is_function = 0;
}

/* One step of a path: how f's value is reached from its parent's. */
static void mb_step(msgbuf *m, const enc *e, const enc_frame *f) {
    switch (f->kind) {
    case STEP_ROOT: mb_puts(m, e->root); break;
    case STEP_INDEX:
        mb_printf(m, "[" LUA_INTEGER_FMT "]", (LUAI_UACINT)f->index);
        break;
    case STEP_FIELD: mb_key(m, e->L, f->key); break;
    case STEP_KEY:
        mb_puts(m, " key ");
        mb_key(m, e->L, f->key);
        break;
    case STEP_UPVALUE:
        mb_puts(m, " upvalue '");
        mb_puts(m, f->name);
        mb_puts(m, "'");
        break;
    }
}

/* A deep path keeps its first PATH_HEAD and last PATH_TAIL steps, so the
 * message stays short and still ends at the offending value. */
#define PATH_HEAD 4
#define PATH_TAIL 8

static void mb_path_steps(msgbuf *m, const enc *e, const enc_frame *f,
                          int below, int total) {
    if (f->parent) mb_path_steps(m, e, f->parent, below + 1, total);
    int pos = total - 1 - below;
    if (pos < PATH_HEAD || below < PATH_TAIL) mb_step(m, e, f);
    else if (pos == PATH_HEAD) mb_puts(m, "...");
}

static void mb_path(msgbuf *m, const enc *e, const enc_frame *f) {
    int total = 0;
    for (const enc_frame *g = f; g; g = g->parent) total++;
    mb_path_steps(m, e, f, 0, total);
}

/* Records "<path>: <what>" (the first error wins) and returns -1. */
static int fail_at(enc *e, const enc_frame *f, const char *fmt, ...) {
    if (e->failed) return -1;
    e->failed = 1;
    mb_path(&e->err, e, f);
    mb_puts(&e->err, ": ");
    va_list ap;
    va_start(ap, fmt);
    mb_vprintf(&e->err, fmt, ap);
    va_end(ap);
    return -1;
}

static int fail_root(enc *e, const char *fmt, ...) {
    if (e->failed) return -1;
    e->failed = 1;
    mb_puts(&e->err, e->root);
    mb_puts(&e->err, ": ");
    va_list ap;
    va_start(ap, fmt);
    mb_vprintf(&e->err, fmt, ap);
    va_end(ap);
    return -1;
}

/* The packer's write callback: every byte of output passes here, so this is
 * where the size limit is enforced. */
static int enc_write(void *data, const char *p, size_t n) {
    enc *e = data;
    if (n > e->sink_end - e->sink->len) {
        fail_root(e, "encoded value exceeds the limit of %zu bytes",
                  e->lim->max_size);
        return -1;
    }
    if (pl_buf_append(e->sink, p, n) != 0) {
        fail_root(e, "out of memory: the output buffer cannot grow");
        return -1;
    }
    return 0;
}

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
    (void)L;
    return enc_write(ud, p, n) == 0 ? 0 : 1;
}

/* A scratch buffer for a payload whose length must precede it. It inherits
 * what remains of the size budget, so runaway payloads stop early. */
typedef struct scratch {
    pl_buf buf;
    pl_buf *parent;
    size_t parent_end;
} scratch;

static void scratch_begin(enc *e, scratch *s) {
    pl_buf_init(&s->buf, 0);
    s->parent = e->sink;
    s->parent_end = e->sink_end;
    e->sink = &s->buf;
    e->sink_end = s->parent_end - s->parent->len;
}

static void scratch_end(enc *e, scratch *s) {
    e->sink = s->parent;
    e->sink_end = s->parent_end;
}

/* Writes ext `type` holding the scratch bytes after `prefix` (bytes that go
 * before the scratch contents inside the payload). */
static int write_ext(enc *e, const enc_frame *f, int8_t type,
                     const unsigned char *prefix, size_t prefix_len,
                     const pl_buf *body) {
    size_t total = prefix_len + body->len;
    if (total > MP_MAX_LEN)
        return fail_at(e, f, "payload of %zu bytes is too long for MessagePack",
                       total);
    if (msgpack_pack_ext(&e->pk, total, type) != 0) return -1;
    if (prefix_len && enc_write(e, (const char *)prefix, prefix_len) != 0)
        return -1;
    if (body->len && enc_write(e, body->data, body->len) != 0) return -1;
    return 0;
}

static int encode_value(enc *e, enc_frame *f, int idx);

static const enc_frame *find_ancestor(const enc_frame *f, const void *ptr) {
    for (; f; f = f->parent)
        if (f->ptr == ptr && !f->is_function) return f;
    return NULL;
}

/* Checks shared by every container: depth, cycles, Lua stack room. */
static int enter_container(enc *e, enc_frame *f, int idx, int is_function) {
    if (f->depth > e->max_depth)
        return fail_at(e, f, "nested deeper than %d levels", e->max_depth);
    const void *ptr = lua_topointer(e->L, idx);
    if (!is_function) {
        const enc_frame *anc = find_ancestor(f->parent, ptr);
        if (anc) {
            if (e->failed) return -1;
            fail_at(e, f, "cycle: this table is already being encoded at ");
            mb_path(&e->err, e, anc);
            return -1;
        }
    }
    if (!lua_checkstack(e->L, 8))
        return fail_at(e, f, "not enough Lua stack");
    f->ptr = ptr;
    f->is_function = is_function;
    return 0;
}

/* Counts the pairs of the table at idx and tells whether its keys are
 * exactly 1..n with n = rawlen (then it is an array). */
static size_t count_pairs(lua_State *L, int idx, int *is_sequence) {
    lua_Unsigned n = lua_rawlen(L, idx);
    size_t count = 0;
    int seq = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        count++;
        if (seq) {
            lua_Integer k;
            int isint = lua_isinteger(L, -2);
            k = isint ? lua_tointeger(L, -2) : 0;
            if (!isint || (lua_Unsigned)k - 1 >= n) seq = 0;
        }
        lua_pop(L, 1);
    }
    *is_sequence = seq && count == n;
    return count;
}

static int encode_array_items(enc *e, enc_frame *f, int idx, size_t n) {
    lua_State *L = e->L;
    if (msgpack_pack_array(&e->pk, n) != 0) return -1;
    for (size_t i = 1; i <= n; i++) {
        enc_frame c;
        child_frame(&c, f, STEP_INDEX);
        c.index = (lua_Integer)i;
        lua_rawgeti(L, idx, (lua_Integer)i);
        if (encode_value(e, &c, lua_gettop(L)) != 0) return -1;
        lua_pop(L, 1);
    }
    return 0;
}

static int encode_map_pairs(enc *e, enc_frame *f, int idx, size_t count) {
    lua_State *L = e->L;
    if (msgpack_pack_map(&e->pk, count) != 0) return -1;
    size_t written = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int v = lua_gettop(L), k = v - 1;
        /* No Lua code runs between counting and writing, but a header that
         * disagrees with its body would corrupt the whole message: check. */
        if (++written > count) break;
        enc_frame c;
        child_frame(&c, f, STEP_KEY);
        c.key = k;
        if (encode_value(e, &c, k) != 0) return -1;
        child_frame(&c, f, STEP_FIELD);
        c.key = k;
        if (encode_value(e, &c, v) != 0) return -1;
        lua_pop(L, 1);
    }
    if (written != count)
        return fail_at(e, f, "table changed while being encoded");
    return 0;
}

static int is_proxy(enc *e, int idx) {
    if (!e->proxy_mt || !lua_getmetatable(e->L, idx)) return 0;
    int yes = lua_rawequal(e->L, -1, e->proxy_mt);
    lua_pop(e->L, 1);
    return yes;
}

static int encode_proxy(enc *e, enc_frame *f, int idx) {
    int seq;
    size_t count = count_pairs(e->L, idx, &seq);
    scratch s;
    scratch_begin(e, &s);
    int rc = encode_map_pairs(e, f, idx, count);
    scratch_end(e, &s);
    if (rc == 0) rc = write_ext(e, f, EXT_PROXY, NULL, 0, &s.buf);
    pl_buf_free(&s.buf);
    return rc;
}

static int encode_table(enc *e, enc_frame *f, int idx) {
    if (enter_container(e, f, idx, 0) != 0) return -1;
    if (is_proxy(e, idx)) return encode_proxy(e, f, idx);
    int seq;
    size_t count = count_pairs(e->L, idx, &seq);
    if (count > MP_MAX_LEN)
        return fail_at(e, f, "table of %zu entries is too big for MessagePack",
                       count);
    return seq ? encode_array_items(e, f, idx, count)
               : encode_map_pairs(e, f, idx, count);
}

/* Lexical order of byte strings, as memcmp then length. */
static int name_before(const char *a, size_t an, const char *b, size_t bn) {
    int c = memcmp(a, b, an < bn ? an : bn);
    return c < 0 || (c == 0 && an < bn);
}

/* Is candidate name a better pick than the current best? Any name beats
 * "_G"; otherwise the lexically smaller one wins, so the choice does not
 * depend on table iteration order. */
static int better_module(const char *a, size_t an, const char *best,
                         size_t bestn) {
    if (!best) return 1;
    int a_g = an == 2 && memcmp(a, "_G", 2) == 0;
    int b_g = bestn == 2 && memcmp(best, "_G", 2) == 0;
    if (a_g != b_g) return b_g;
    return name_before(a, an, best, bestn);
}

/* Finds name with package.loaded[name] rawequal to the value at idx. The
 * returned string belongs to package.loaded's key, alive while we run. */
static const char *find_module(enc *e, int idx, size_t *len) {
    lua_State *L = e->L;
    const char *best = NULL;
    size_t bestn = 0;
    if (!e->loaded) return NULL;
    lua_pushnil(L);
    while (lua_next(L, e->loaded)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_rawequal(L, -1, idx)) {
            size_t n;
            const char *s = lua_tolstring(L, -2, &n);
            if (better_module(s, n, best, bestn)) best = s, bestn = n;
        }
        lua_pop(L, 1);
    }
    *len = bestn;
    return best;
}

typedef struct cfunc_name {
    const char *mod, *field;
    size_t modn, fieldn;
} cfunc_name;

/* Looks through the module table at the top of the stack for the function at
 * idx, keeping the best (module, field) found so far in *best. */
static void find_in_module(lua_State *L, int idx, const char *mod, size_t modn,
                           cfunc_name *best) {
    int t = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_rawequal(L, -1, idx)) {
            size_t n;
            const char *field = lua_tolstring(L, -2, &n);
            int same_mod = best->mod && best->modn == modn &&
                           memcmp(best->mod, mod, modn) == 0;
            if (same_mod ? name_before(field, n, best->field, best->fieldn)
                         : better_module(mod, modn, best->mod, best->modn)) {
                best->mod = mod, best->modn = modn;
                best->field = field, best->fieldn = n;
            }
        }
        lua_pop(L, 1);
    }
}

static int find_cfunction(enc *e, int idx, cfunc_name *best) {
    lua_State *L = e->L;
    memset(best, 0, sizeof *best);
    if (!e->loaded) return -1;
    lua_pushnil(L);
    while (lua_next(L, e->loaded)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TTABLE) {
            size_t modn;
            const char *mod = lua_tolstring(L, -2, &modn);
            find_in_module(L, idx, mod, modn, best);
        }
        lua_pop(L, 1);
    }
    return best->mod ? 0 : -1;
}

static size_t str_header_size(size_t n) {
    return n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5;
}

static size_t bin_header_size(size_t n) {
    return n < 256 ? 2 : n < 65536 ? 3 : 5;
}

/* A C function crosses by name: [module, field]. */
static int encode_c_function(enc *e, enc_frame *f, int idx) {
    cfunc_name nm;
    if (find_cfunction(e, idx, &nm) != 0)
        return fail_at(e, f,
                       "cannot encode a C function that is not a field of a "
                       "loaded module");
    size_t total = 1 + str_header_size(nm.modn) + nm.modn +
                   str_header_size(nm.fieldn) + nm.fieldn;
    msgpack_packer *pk = &e->pk;
    if (msgpack_pack_ext(pk, total, EXT_FUNCTION) != 0 ||
        msgpack_pack_array(pk, 2) != 0 ||
        msgpack_pack_str_with_body(pk, nm.mod, nm.modn) != 0 ||
        msgpack_pack_str_with_body(pk, nm.field, nm.fieldn) != 0)
        return -1;
    return 0;
}

/* If the function at idx is being encoded at or above `owner`, returns how
 * many function levels up it is (0 = owner), else -1. */
static int function_level(const enc_frame *owner, const void *ptr) {
    int k = 0;
    for (const enc_frame *f = owner; f; f = f->parent) {
        if (!f->is_function) continue;
        if (f->ptr == ptr) return k;
        k++;
    }
    return -1;
}

static int is_reference(int type) {
    return type == LUA_TTABLE || type == LUA_TFUNCTION ||
           type == LUA_TUSERDATA;
}

/* One upvalue, value at stack slot v: the special cases first (_ENV, the
 * function itself or an enclosing one, a loaded module), then as a value. */
static int encode_upvalue(enc *e, enc_frame *c, int v) {
    lua_State *L = e->L;
    int type = lua_type(L, v);
    if (strcmp(c->name, "_ENV") == 0)
        return msgpack_pack_ext(&e->pk, 0, EXT_ENV) == 0 ? 0 : -1;
    if (type == LUA_TFUNCTION && !lua_iscfunction(L, v)) {
        int k = function_level(c->parent, lua_topointer(L, v));
        if (k > 255)
            return fail_at(e, c, "refers to a function %d levels up; the "
                                 "limit is 255", k);
        if (k >= 0) {
            unsigned char b = (unsigned char)k;
            if (msgpack_pack_ext(&e->pk, 1, EXT_SELF) != 0 ||
                msgpack_pack_ext_body(&e->pk, &b, 1) != 0)
                return -1;
            return 0;
        }
    }
    if (is_reference(type)) {
        size_t n;
        const char *name = find_module(e, v, &n);
        if (name) {
            if (msgpack_pack_ext(&e->pk, n, EXT_MODULE) != 0 ||
                msgpack_pack_ext_body(&e->pk, name, n) != 0)
                return -1;
            return 0;
        }
    }
    return encode_value(e, c, v);
}

static int encode_upvalues(enc *e, enc_frame *f, int idx) {
    lua_State *L = e->L;
    int n = 0;
    while (lua_getupvalue(L, idx, n + 1)) {
        lua_pop(L, 1);
        n++;
    }
    if (msgpack_pack_array(&e->pk, (size_t)n) != 0) return -1;
    for (int i = 1; i <= n; i++) {
        enc_frame c;
        child_frame(&c, f, STEP_UPVALUE);
        c.name = lua_getupvalue(L, idx, i);
        if (encode_upvalue(e, &c, lua_gettop(L)) != 0) return -1;
        lua_pop(L, 1);
    }
    return 0;
}

/* A Lua function crosses as [bin bytecode, [upvalues]]. The bytecode and the
 * upvalue array go to a scratch buffer; the ext header, the array-of-2 header
 * and the bin header are written once their lengths are known. */
static int encode_lua_function(enc *e, enc_frame *f, int idx) {
    lua_State *L = e->L;
    scratch s;
    scratch_begin(e, &s);
    lua_pushvalue(L, idx);
    int rc = lua_dump(L, dump_writer, e, 0);
    lua_pop(L, 1);
    if (rc != 0) rc = fail_at(e, f, "cannot dump this function");
    size_t code_len = s.buf.len;
    if (rc == 0 && code_len > MP_MAX_LEN)
        rc = fail_at(e, f, "bytecode of %zu bytes is too long", code_len);
    if (rc == 0) rc = encode_upvalues(e, f, idx);
    scratch_end(e, &s);
    if (rc == 0) {
        unsigned char prefix[6];
        size_t hn = bin_header_size(code_len);
        prefix[0] = 0x92; /* array of 2 */
        if (hn == 2) {
            prefix[1] = 0xc4;
            prefix[2] = (unsigned char)code_len;
        } else if (hn == 3) {
            prefix[1] = 0xc5;
            prefix[2] = (unsigned char)(code_len >> 8);
            prefix[3] = (unsigned char)code_len;
        } else {
            prefix[1] = 0xc6;
            for (int i = 0; i < 4; i++)
                prefix[2 + i] = (unsigned char)(code_len >> (24 - 8 * i));
        }
        rc = write_ext(e, f, EXT_FUNCTION, prefix, 1 + hn, &s.buf);
    }
    pl_buf_free(&s.buf);
    return rc;
}

static int encode_function(enc *e, enc_frame *f, int idx) {
    if (enter_container(e, f, idx, 1) != 0) return -1;
    if (lua_iscfunction(e->L, idx)) return encode_c_function(e, f, idx);
    return encode_lua_function(e, f, idx);
}

static int encode_value(enc *e, enc_frame *f, int idx) {
    lua_State *L = e->L;
    msgpack_packer *pk = &e->pk;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: return msgpack_pack_nil(pk) == 0 ? 0 : -1;
    case LUA_TBOOLEAN:
        return (lua_toboolean(L, idx) ? msgpack_pack_true(pk)
                                      : msgpack_pack_false(pk)) == 0 ? 0 : -1;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            return msgpack_pack_int64(pk, (int64_t)lua_tointeger(L, idx)) == 0
                       ? 0 : -1;
        return msgpack_pack_double(pk, (double)lua_tonumber(L, idx)) == 0 ? 0
                                                                         : -1;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        if (n > MP_MAX_LEN)
            return fail_at(e, f, "string of %zu bytes is too long", n);
        return msgpack_pack_str_with_body(pk, s, n) == 0 ? 0 : -1;
    }
    case LUA_TTABLE: return encode_table(e, f, idx);
    case LUA_TFUNCTION: return encode_function(e, f, idx);
    default: return fail_at(e, f, "cannot encode a %s", luaL_typename(L, idx));
    }
}

/* Sets up an encoder on out; pushes the registry entries it needs (the only
 * Lua calls here that may allocate, made before any scratch buffer exists). */
static void enc_begin(enc *e, lua_State *L, pl_buf *out,
                      const pl_value_limits *lim, const char *root, char *err,
                      size_t errlen) {
    e->L = L;
    e->lim = lim ? lim : &pl_value_default_limits;
    e->max_depth = effective_depth(e->lim);
    e->sink = out;
    e->sink_end = e->lim->max_size > SIZE_MAX - out->len
                      ? SIZE_MAX
                      : out->len + e->lim->max_size;
    e->root = root ? root : "value";
    e->failed = 0;
    mb_init(&e->err, err, errlen);
    msgpack_packer_init(&e->pk, e, enc_write);
    luaL_checkstack(L, 4, "pl_value_encode");
    lua_getfield(L, LUA_REGISTRYINDEX, PL_PROXY_METATABLE);
    e->proxy_mt = lua_istable(L, -1) ? lua_gettop(L) : 0;
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    e->loaded = lua_istable(L, -1) ? lua_gettop(L) : 0;
}

static void root_frame(enc_frame *f) {
    f->parent = NULL;
    f->kind = STEP_ROOT;
    f->depth = 1;
    f->key = 0;
    f->index = 0;
    f->name = NULL;
    f->ptr = NULL;
    f->is_function = 0;
}

int pl_value_encode(lua_State *L, int idx, pl_buf *out,
                    const pl_value_limits *lim, const char *root, char *err,
                    size_t errlen) {
    int top = lua_gettop(L);
    size_t start = out->len;
    idx = lua_absindex(L, idx);
    enc e;
    enc_begin(&e, L, out, lim, root, err, errlen);
    enc_frame f;
    root_frame(&f);
    int rc = encode_value(&e, &f, idx);
    lua_settop(L, top);
    if (rc != 0) out->len = start;
    return rc;
}

int pl_value_encode_list(lua_State *L, int first, int n, pl_buf *out,
                         const pl_value_limits *lim, const char *root,
                         char *err, size_t errlen) {
    int top = lua_gettop(L);
    size_t start = out->len;
    first = lua_absindex(L, first);
    enc e;
    enc_begin(&e, L, out, lim, root, err, errlen);
    enc_frame f;
    root_frame(&f);
    int rc = 0;
    if (f.depth > e.max_depth)
        rc = fail_at(&e, &f, "nested deeper than %d levels", e.max_depth);
    else if (n < 0)
        rc = fail_at(&e, &f, "negative argument count %d", n);
    else
        rc = msgpack_pack_array(&e.pk, (size_t)n) == 0 ? 0 : -1;
    for (int i = 0; rc == 0 && i < n; i++) {
        enc_frame c;
        child_frame(&c, &f, STEP_INDEX);
        c.index = i + 1;
        rc = encode_value(&e, &c, first + i);
    }
    lua_settop(L, top);
    if (rc != 0) out->len = start;
    return rc;
}

/* ---- Decoder ---- */

typedef struct cursor {
    const unsigned char *p, *end;
} cursor;

/* A function whose upvalues are being decoded, for ext 6 references. */
typedef struct dec_fn {
    const struct dec_fn *parent;
    int idx; /* its stack slot */
} dec_fn;

typedef struct dec {
    lua_State *L;
    const unsigned char *start; /* offsets in messages count from here */
    int max_depth;
    int allow_functions;
    const dec_fn *fn; /* innermost function being decoded, or NULL */
    msgbuf err;
} dec;

static int dec_fail(dec *d, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    mb_vprintf(&d->err, fmt, ap);
    va_end(ap);
    return -1;
}

static size_t offset_of(const dec *d, const unsigned char *p) {
    return (size_t)(p - d->start);
}

static size_t remaining(const cursor *c) { return (size_t)(c->end - c->p); }

static uint64_t read_be(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

/* Takes an n-byte big-endian number after the header byte at `at`. */
static int take_be(dec *d, cursor *c, int n, const unsigned char *at,
                   uint64_t *v) {
    if (remaining(c) < (size_t)n)
        return dec_fail(d, "truncated input at byte %zu", offset_of(d, at));
    *v = read_be(c->p, n);
    c->p += n;
    return 0;
}

static int64_t sign_extend(uint64_t v, int bits) {
    if (bits == 64)
        return (v >> 63) ? -(int64_t)(~v) - 1 : (int64_t)v;
    uint64_t m = (uint64_t)1 << (bits - 1);
    return (int64_t)(v ^ m) - (int64_t)m;
}

static double float_from_bits(uint64_t bits, int size) {
    if (size == 4) {
        uint32_t b = (uint32_t)bits;
        float f;
        memcpy(&f, &b, sizeof f);
        return f;
    }
    double x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

static int decode_value(dec *d, cursor *c, int depth, int in_upvalues);

static int enter_level(dec *d, int depth, const unsigned char *at) {
    if (depth > d->max_depth)
        return dec_fail(d, "nested deeper than %d levels at byte %zu",
                        d->max_depth, offset_of(d, at));
    if (!lua_checkstack(d->L, 4))
        return dec_fail(d, "not enough Lua stack at byte %zu",
                        offset_of(d, at));
    return 0;
}

static int decode_string(dec *d, cursor *c, size_t n, const unsigned char *at,
                         const char *what) {
    if (n > remaining(c))
        return dec_fail(d, "%s of %zu bytes at byte %zu exceeds the input",
                        what, n, offset_of(d, at));
    lua_pushlstring(d->L, (const char *)c->p, n);
    c->p += n;
    return 0;
}

static int decode_array(dec *d, cursor *c, uint64_t n, int depth,
                        const unsigned char *at) {
    lua_State *L = d->L;
    if (enter_level(d, depth, at) != 0) return -1;
    if (n > remaining(c)) /* every item takes at least one byte */
        return dec_fail(d, "array of %llu items at byte %zu exceeds the input",
                        (unsigned long long)n, offset_of(d, at));
    lua_createtable(L, n <= INT_MAX ? (int)n : 0, 0);
    for (uint64_t i = 1; i <= n; i++) {
        if (decode_value(d, c, depth + 1, 0) != 0) return -1;
        lua_rawseti(L, -2, (lua_Integer)i);
    }
    return 0;
}

/* Decodes n key/value pairs into the table at the top of the stack. */
static int decode_pairs(dec *d, cursor *c, uint64_t n, int depth) {
    lua_State *L = d->L;
    for (uint64_t i = 0; i < n; i++) {
        const unsigned char *at = c->p;
        if (decode_value(d, c, depth + 1, 0) != 0) return -1;
        if (lua_isnil(L, -1))
            return dec_fail(d, "nil map key at byte %zu", offset_of(d, at));
        if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1) &&
            isnan((double)lua_tonumber(L, -1)))
            return dec_fail(d, "NaN map key at byte %zu", offset_of(d, at));
        if (decode_value(d, c, depth + 1, 0) != 0) return -1;
        lua_rawset(L, -3);
    }
    return 0;
}

static int check_map_count(dec *d, const cursor *c, uint64_t n,
                           const unsigned char *at) {
    if (n > remaining(c) / 2) /* every pair takes at least two bytes */
        return dec_fail(d, "map of %llu pairs at byte %zu exceeds the input",
                        (unsigned long long)n, offset_of(d, at));
    return 0;
}

static int decode_map(dec *d, cursor *c, uint64_t n, int depth,
                      const unsigned char *at) {
    if (enter_level(d, depth, at) != 0) return -1;
    if (check_map_count(d, c, n, at) != 0) return -1;
    lua_createtable(d->L, 0, n <= INT_MAX ? (int)n : 0);
    return decode_pairs(d, c, n, depth);
}

/* Reads an array or map header (whichever `map` says); -1 if the next item
 * is something else. */
static int read_container_header(dec *d, cursor *c, int map, uint64_t *n,
                                 const char *context,
                                 const unsigned char *ctx_at) {
    const unsigned char *at = c->p;
    if (remaining(c) < 1)
        return dec_fail(d, "truncated input at byte %zu", offset_of(d, at));
    unsigned b = *c->p++;
    unsigned fix = map ? 0x80 : 0x90, b16 = map ? 0xde : 0xdc;
    if ((b & 0xf0) == fix) {
        *n = b & 0x0f;
        return 0;
    }
    if (b == b16) return take_be(d, c, 2, at, n);
    if (b == b16 + 1) return take_be(d, c, 4, at, n);
    return dec_fail(d, "%s at byte %zu: expected %s at byte %zu", context,
                    offset_of(d, ctx_at), map ? "a map" : "an array",
                    offset_of(d, at));
}

/* Reads a str or bin header: kind 's' or 'b', 0 if neither. */
static int read_bytes_header(dec *d, cursor *c, int *kind, uint64_t *n) {
    const unsigned char *at = c->p;
    if (remaining(c) < 1)
        return dec_fail(d, "truncated input at byte %zu", offset_of(d, at));
    unsigned b = *c->p++;
    *kind = 0;
    if ((b & 0xe0) == 0xa0) {
        *kind = 's';
        *n = b & 0x1f;
        return 0;
    }
    switch (b) {
    case 0xd9: *kind = 's'; return take_be(d, c, 1, at, n);
    case 0xda: *kind = 's'; return take_be(d, c, 2, at, n);
    case 0xdb: *kind = 's'; return take_be(d, c, 4, at, n);
    case 0xc4: *kind = 'b'; return take_be(d, c, 1, at, n);
    case 0xc5: *kind = 'b'; return take_be(d, c, 2, at, n);
    case 0xc6: *kind = 'b'; return take_be(d, c, 4, at, n);
    }
    return 0;
}

typedef struct chunk {
    const char *p;
    size_t n;
} chunk;

static const char *chunk_reader(lua_State *L, void *ud, size_t *size) {
    chunk *ch = ud;
    (void)L;
    if (ch->n == 0) return NULL;
    *size = ch->n;
    ch->n = 0;
    return ch->p;
}

/* Pushes require(name), run in protected mode. */
static int require_module(dec *d, const char *name, size_t n,
                          const unsigned char *at) {
    lua_State *L = d->L;
    if (lua_getglobal(L, "require") != LUA_TFUNCTION) {
        dec_fail(d, "module \"");
        mb_escaped(&d->err, name, n, 64);
        return dec_fail(d, "\" at byte %zu: require is not available",
                        offset_of(d, at));
    }
    lua_pushlstring(L, name, n);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        dec_fail(d, "cannot require module \"");
        mb_escaped(&d->err, name, n, 64);
        return dec_fail(d, "\" at byte %zu: %s", offset_of(d, at),
                        msg ? msg : "(error object is not a string)");
    }
    return 0;
}

/* Takes a str item's bytes (for the C function names). */
static int take_str(dec *d, cursor *c, const char **s, size_t *n,
                    const unsigned char *fn_at) {
    const unsigned char *at = c->p;
    int kind = 0;
    uint64_t len = 0;
    if (read_bytes_header(d, c, &kind, &len) != 0) return -1;
    if (kind != 's')
        return dec_fail(d, "function at byte %zu: expected a string at byte %zu",
                        offset_of(d, fn_at), offset_of(d, at));
    if (len > remaining(c))
        return dec_fail(d, "str of %llu bytes at byte %zu exceeds the input",
                        (unsigned long long)len, offset_of(d, at));
    *s = (const char *)c->p;
    *n = (size_t)len;
    c->p += len;
    return 0;
}

/* [module, field]: the receiver's own package.loaded[module][field]. */
static int decode_c_function(dec *d, cursor *c, const unsigned char *at) {
    lua_State *L = d->L;
    const char *mod = NULL, *field = NULL;
    size_t modn = 0, fieldn = 0;
    if (take_str(d, c, &mod, &modn, at) != 0 ||
        take_str(d, c, &field, &fieldn, at) != 0)
        return -1;
    int base = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_istable(L, -1)) {
        lua_pushlstring(L, mod, modn);
        lua_rawget(L, -2);
    } else {
        lua_pushnil(L);
    }
    if (!lua_istable(L, -1)) {
        lua_settop(L, base);
        if (require_module(d, mod, modn, at) != 0) return -1;
    }
    if (lua_istable(L, -1)) {
        lua_pushlstring(L, field, fieldn);
        lua_rawget(L, -2);
    } else {
        lua_pushnil(L);
    }
    if (!lua_isfunction(L, -1)) {
        dec_fail(d, "function at byte %zu: \"", offset_of(d, at));
        mb_escaped(&d->err, mod, modn, 64);
        mb_puts(&d->err, "\".\"");
        mb_escaped(&d->err, field, fieldn, 64);
        return dec_fail(d, "\" is not a function here");
    }
    lua_replace(L, base + 1);
    lua_settop(L, base + 1);
    return 0;
}

static int decode_upvalues(dec *d, cursor *c, int depth,
                           const unsigned char *at) {
    lua_State *L = d->L;
    int fidx = lua_gettop(L);
    uint64_t n = 0;
    const unsigned char *arr_at = c->p;
    if (read_container_header(d, c, 0, &n, "function", at) != 0) return -1;
    if (n > remaining(c))
        return dec_fail(d, "array of %llu items at byte %zu exceeds the input",
                        (unsigned long long)n, offset_of(d, arr_at));
    dec_fn self = {d->fn, fidx};
    d->fn = &self;
    int rc = 0;
    for (uint64_t i = 1; rc == 0 && i <= n; i++) {
        rc = decode_value(d, c, depth + 1, 1);
        if (rc == 0 && (i > INT_MAX || !lua_setupvalue(L, fidx, (int)i)))
            rc = dec_fail(d, "function at byte %zu has fewer upvalues than "
                             "the %llu sent", offset_of(d, at),
                          (unsigned long long)n);
    }
    d->fn = self.parent;
    return rc;
}

/* Ext 1: [bin bytecode, [upvalues]] or [str module, str field]. */
static int decode_function(dec *d, cursor *c, int depth,
                           const unsigned char *at) {
    if (!d->allow_functions)
        return dec_fail(d, "functions are not accepted here (function at "
                           "byte %zu)", offset_of(d, at));
    if (enter_level(d, depth, at) != 0) return -1;
    uint64_t n = 0;
    if (read_container_header(d, c, 0, &n, "function", at) != 0) return -1;
    if (n != 2)
        return dec_fail(d, "function at byte %zu: expected an array of 2, "
                           "not %llu", offset_of(d, at), (unsigned long long)n);
    const unsigned char *code_at = c->p;
    int kind = 0;
    uint64_t len = 0;
    if (read_bytes_header(d, c, &kind, &len) != 0) return -1;
    if (kind == 's') {
        c->p = code_at;
        return decode_c_function(d, c, at);
    }
    if (kind != 'b')
        return dec_fail(d, "function at byte %zu: expected bytecode or a "
                           "name at byte %zu", offset_of(d, at),
                        offset_of(d, code_at));
    if (len > remaining(c))
        return dec_fail(d, "bin of %llu bytes at byte %zu exceeds the input",
                        (unsigned long long)len, offset_of(d, code_at));
    chunk ch = {(const char *)c->p, (size_t)len};
    c->p += len;
    if (lua_load(d->L, chunk_reader, &ch, "=(function)", "b") != LUA_OK) {
        const char *msg = lua_tostring(d->L, -1);
        return dec_fail(d, "invalid function bytecode at byte %zu: %s",
                        offset_of(d, code_at), msg ? msg : "?");
    }
    return decode_upvalues(d, c, depth, at);
}

/* Ext 2: a map of the proxy's fields, made into a table with the proxy
 * metatable when this VM has one. */
static int decode_proxy(dec *d, cursor *c, int depth, const unsigned char *at) {
    lua_State *L = d->L;
    if (enter_level(d, depth, at) != 0) return -1;
    uint64_t n = 0;
    const unsigned char *map_at = c->p;
    if (read_container_header(d, c, 1, &n, "proxy", at) != 0) return -1;
    if (check_map_count(d, c, n, map_at) != 0) return -1;
    lua_createtable(L, 0, n <= INT_MAX ? (int)n : 0);
    if (decode_pairs(d, c, n, depth) != 0) return -1;
    lua_getfield(L, LUA_REGISTRYINDEX, PL_PROXY_METATABLE);
    if (lua_istable(L, -1)) lua_setmetatable(L, -2);
    else lua_pop(L, 1);
    return 0;
}

/* Ext 3, 4, 6: only as items of a function's upvalue array. */
static int decode_upvalue_ext(dec *d, int type, const unsigned char *data,
                              size_t n, const unsigned char *at) {
    lua_State *L = d->L;
    if (type == EXT_ENV) {
        if (n != 0)
            return dec_fail(d, "extension type 3 at byte %zu is not empty",
                            offset_of(d, at));
        lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
        return 0;
    }
    if (type == EXT_MODULE)
        return require_module(d, (const char *)data, n, at);
    if (n != 1)
        return dec_fail(d, "extension type 6 at byte %zu must hold one byte",
                        offset_of(d, at));
    const dec_fn *f = d->fn;
    for (unsigned k = data[0]; f && k > 0; k--) f = f->parent;
    if (!f)
        return dec_fail(d, "extension type 6 at byte %zu refers to a function "
                           "%u levels up, which is not being decoded",
                        offset_of(d, at), (unsigned)data[0]);
    lua_pushvalue(L, f->idx);
    return 0;
}

/* Decodes the extension whose header byte is at `at`: its length is in the
 * next len_bytes bytes, or is `fixed` for the fixext forms (len_bytes 0). */
static int decode_ext(dec *d, cursor *c, int depth, int in_upvalues,
                      const unsigned char *at, int len_bytes, size_t fixed) {
    uint64_t n = fixed;
    if (len_bytes && take_be(d, c, len_bytes, at, &n) != 0) return -1;
    if (remaining(c) < 1)
        return dec_fail(d, "truncated input at byte %zu", offset_of(d, at));
    int type = (int)sign_extend(*c->p++, 8);
    if (n > remaining(c))
        return dec_fail(d, "extension of %llu bytes at byte %zu exceeds the "
                           "input", (unsigned long long)n, offset_of(d, at));
    cursor sub = {c->p, c->p + n};
    c->p += n;
    int rc;
    switch (type) {
    case EXT_FUNCTION: rc = decode_function(d, &sub, depth, at); break;
    case EXT_PROXY: rc = decode_proxy(d, &sub, depth, at); break;
    case EXT_ENV:
    case EXT_MODULE:
    case EXT_SELF:
        if (!in_upvalues)
            return dec_fail(d, "extension type %d at byte %zu outside a "
                               "function's upvalues", type, offset_of(d, at));
        return decode_upvalue_ext(d, type, sub.p, (size_t)n, at);
    default:
        return dec_fail(d, "unknown extension type %d at byte %zu", type,
                        offset_of(d, at));
    }
    if (rc == 0 && sub.p != sub.end)
        return dec_fail(d, "extension type %d at byte %zu has %zu trailing "
                           "bytes", type, offset_of(d, at), remaining(&sub));
    return rc;
}

static int decode_int(dec *d, cursor *c, const unsigned char *at, int size,
                      int is_signed) {
    uint64_t v = 0;
    if (take_be(d, c, size, at, &v) != 0) return -1;
    if (is_signed) lua_pushinteger(d->L, (lua_Integer)sign_extend(v, size * 8));
    else if (v > (uint64_t)INT64_MAX) lua_pushnumber(d->L, (lua_Number)v);
    else lua_pushinteger(d->L, (lua_Integer)v);
    return 0;
}

static int decode_float(dec *d, cursor *c, const unsigned char *at, int size) {
    uint64_t v = 0;
    if (take_be(d, c, size, at, &v) != 0) return -1;
    lua_pushnumber(d->L, (lua_Number)float_from_bits(v, size));
    return 0;
}

static int decode_value(dec *d, cursor *c, int depth, int in_upvalues) {
    lua_State *L = d->L;
    const unsigned char *at = c->p;
    uint64_t n = 0;
    if (remaining(c) < 1)
        return dec_fail(d, "truncated input at byte %zu", offset_of(d, at));
    unsigned b = *c->p++;
    if (b <= 0x7f) {
        lua_pushinteger(L, (lua_Integer)b);
        return 0;
    }
    if (b >= 0xe0) {
        lua_pushinteger(L, (lua_Integer)b - 256);
        return 0;
    }
    if (b <= 0x8f) return decode_map(d, c, b & 0x0f, depth, at);
    if (b <= 0x9f) return decode_array(d, c, b & 0x0f, depth, at);
    if (b <= 0xbf) return decode_string(d, c, b & 0x1f, at, "str");
    switch (b) {
    case 0xc0: lua_pushnil(L); return 0;
    case 0xc2: lua_pushboolean(L, 0); return 0;
    case 0xc3: lua_pushboolean(L, 1); return 0;
    case 0xc4: case 0xc5: case 0xc6: {
        int size = 1 << (b - 0xc4);
        if (take_be(d, c, size, at, &n) != 0) return -1;
        return decode_string(d, c, (size_t)n, at, "bin");
    }
    case 0xc7: case 0xc8: case 0xc9:
        return decode_ext(d, c, depth, in_upvalues, at, 1 << (b - 0xc7), 0);
    case 0xca: return decode_float(d, c, at, 4);
    case 0xcb: return decode_float(d, c, at, 8);
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
        return decode_int(d, c, at, 1 << (b - 0xcc), 0);
    case 0xd0: case 0xd1: case 0xd2: case 0xd3:
        return decode_int(d, c, at, 1 << (b - 0xd0), 1);
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        return decode_ext(d, c, depth, in_upvalues, at, 0,
                          (size_t)1 << (b - 0xd4));
    case 0xd9: case 0xda: case 0xdb: {
        int size = 1 << (b - 0xd9);
        if (take_be(d, c, size, at, &n) != 0) return -1;
        return decode_string(d, c, (size_t)n, at, "str");
    }
    case 0xdc: case 0xdd:
        if (take_be(d, c, b == 0xdc ? 2 : 4, at, &n) != 0) return -1;
        return decode_array(d, c, n, depth, at);
    case 0xde: case 0xdf:
        if (take_be(d, c, b == 0xde ? 2 : 4, at, &n) != 0) return -1;
        return decode_map(d, c, n, depth, at);
    }
    /* Only 0xc1 is left: MessagePack never uses it. */
    return dec_fail(d, "invalid byte 0x%02x at byte %zu", b, offset_of(d, at));
}

ptrdiff_t pl_value_decode(lua_State *L, const char *data, size_t len,
                          const pl_value_limits *lim, char *err,
                          size_t errlen) {
    if (!lim) lim = &pl_value_default_limits;
    dec d;
    d.L = L;
    d.start = (const unsigned char *)data;
    d.max_depth = effective_depth(lim);
    d.allow_functions = lim->allow_functions;
    d.fn = NULL;
    mb_init(&d.err, err, errlen);
    if (len > lim->max_size || len > PTRDIFF_MAX) {
        dec_fail(&d, "input of %zu bytes exceeds the limit of %zu bytes", len,
                 lim->max_size);
        return -1;
    }
    int top = lua_gettop(L);
    if (!lua_checkstack(L, 4)) {
        dec_fail(&d, "not enough Lua stack");
        return -1;
    }
    cursor c = {d.start, d.start + len};
    if (decode_value(&d, &c, 1, 0) != 0) {
        lua_settop(L, top);
        return -1;
    }
    return (ptrdiff_t)(c.p - d.start);
}

/* ---- peeking at an envelope's head ---------------------------------------
 *
 * The arbiter relays most messages without looking inside them; decoding a
 * whole envelope (arguments and all) into Lua just to read its target cost a
 * fifth of the relay's time. This reads the top-level map's scalar fields
 * and skips every other value, bounded by the input and by max_depth. */

typedef struct peek_reader {
    const unsigned char *p, *end;
} peek_reader;

static int peek_need(peek_reader *r, size_t n) { return (size_t)(r->end - r->p) >= n; }

static uint64_t peek_be(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

/* Reads a header of `width` bytes after the type byte as a count/length. */
static int peek_count(peek_reader *r, int width, uint64_t *count) {
    if (!peek_need(r, 1 + (size_t)width)) return -1;
    *count = peek_be(r->p + 1, width);
    r->p += 1 + width;
    return 0;
}

static int peek_skip(peek_reader *r, int depth);

static int peek_skip_items(peek_reader *r, uint64_t items, int depth) {
    if (items > (uint64_t)(r->end - r->p)) return -1; /* each takes a byte */
    for (uint64_t i = 0; i < items; i++)
        if (peek_skip(r, depth) != 0) return -1;
    return 0;
}

static int peek_skip_bytes(peek_reader *r, uint64_t n) {
    if (n > (uint64_t)(r->end - r->p)) return -1;
    r->p += n;
    return 0;
}

/* Skips one value. */
static int peek_skip(peek_reader *r, int depth) {
    if (depth <= 0 || !peek_need(r, 1)) return -1;
    unsigned char t = *r->p;
    uint64_t n;
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) return peek_skip_bytes(r, 1);
    if ((t & 0xf0) == 0x80) { r->p++; return peek_skip_items(r, 2 * (uint64_t)(t & 0x0f), depth - 1); }
    if ((t & 0xf0) == 0x90) { r->p++; return peek_skip_items(r, t & 0x0f, depth - 1); }
    if ((t & 0xe0) == 0xa0) return peek_skip_bytes(r, 1 + (uint64_t)(t & 0x1f));
    switch (t) {
    case 0xc4: case 0xd9: return peek_count(r, 1, &n) ? -1 : peek_skip_bytes(r, n);
    case 0xc5: case 0xda: return peek_count(r, 2, &n) ? -1 : peek_skip_bytes(r, n);
    case 0xc6: case 0xdb: return peek_count(r, 4, &n) ? -1 : peek_skip_bytes(r, n);
    case 0xc7: return peek_count(r, 1, &n) ? -1 : peek_skip_bytes(r, n + 1);
    case 0xc8: return peek_count(r, 2, &n) ? -1 : peek_skip_bytes(r, n + 1);
    case 0xc9: return peek_count(r, 4, &n) ? -1 : peek_skip_bytes(r, n + 1);
    case 0xca: case 0xce: case 0xd2: return peek_skip_bytes(r, 5);
    case 0xcb: case 0xcf: case 0xd3: return peek_skip_bytes(r, 9);
    case 0xcc: case 0xd0: return peek_skip_bytes(r, 2);
    case 0xcd: case 0xd1: return peek_skip_bytes(r, 3);
    case 0xd4: return peek_skip_bytes(r, 3);
    case 0xd5: return peek_skip_bytes(r, 4);
    case 0xd6: return peek_skip_bytes(r, 6);
    case 0xd7: return peek_skip_bytes(r, 10);
    case 0xd8: return peek_skip_bytes(r, 18);
    case 0xdc: return peek_count(r, 2, &n) ? -1 : peek_skip_items(r, n, depth - 1);
    case 0xdd: return peek_count(r, 4, &n) ? -1 : peek_skip_items(r, n, depth - 1);
    case 0xde: return peek_count(r, 2, &n) ? -1 : peek_skip_items(r, 2 * n, depth - 1);
    case 0xdf: return peek_count(r, 4, &n) ? -1 : peek_skip_items(r, 2 * n, depth - 1);
    default: return -1; /* 0xc1 */
    }
}

/* Reads a string at r->p (any str width); 0, or -1 if it is not one. */
static int peek_string(peek_reader *r, const char **s, size_t *len) {
    if (!peek_need(r, 1)) return -1;
    unsigned char t = *r->p;
    uint64_t n;
    if ((t & 0xe0) == 0xa0) { n = t & 0x1f; r->p++; }
    else if (t == 0xd9) { if (peek_count(r, 1, &n)) return -1; }
    else if (t == 0xda) { if (peek_count(r, 2, &n)) return -1; }
    else if (t == 0xdb) { if (peek_count(r, 4, &n)) return -1; }
    else return -1;
    if (n > (uint64_t)(r->end - r->p)) return -1;
    *s = (const char *)r->p;
    *len = (size_t)n;
    r->p += n;
    return 0;
}

/* Reads an integer or a boolean; kind 1 boolean, 2 integer, 0 neither
 * (then skips the value). */
static int peek_scalar(peek_reader *r, int depth, int *kind, long long *v) {
    if (!peek_need(r, 1)) return -1;
    unsigned char t = *r->p;
    *kind = 0;
    if (t == 0xc2 || t == 0xc3) { *kind = 1; *v = t == 0xc3; r->p++; return 0; }
    if (t <= 0x7f) { *kind = 2; *v = t; r->p++; return 0; }
    if (t >= 0xe0) { *kind = 2; *v = (signed char)t; r->p++; return 0; }
    int width = t == 0xcc || t == 0xd0 ? 1 : t == 0xcd || t == 0xd1 ? 2
              : t == 0xce || t == 0xd2 ? 4 : t == 0xcf || t == 0xd3 ? 8 : 0;
    if (!width) return peek_skip(r, depth);
    if (!peek_need(r, 1 + (size_t)width)) return -1;
    uint64_t u = peek_be(r->p + 1, width);
    int is_signed = t >= 0xd0;
    if (is_signed && width < 8 && (u >> (8 * width - 1)))
        u |= ~(uint64_t)0 << (8 * width); /* sign-extend */
    *kind = 2;
    *v = (long long)u;
    r->p += 1 + width;
    return 0;
}

static int peek_key_is(const char *k, size_t klen, const char *name) {
    return strlen(name) == klen && memcmp(k, name, klen) == 0;
}

static int peek_field(peek_reader *r, const char *k, size_t klen, int depth,
                      pl_envelope_head *out) {
    const char **s = NULL;
    size_t *slen = NULL;
    if (peek_key_is(k, klen, "command")) s = &out->command, slen = &out->command_len;
    else if (peek_key_is(k, klen, "target")) s = &out->target, slen = &out->target_len;
    else if (peek_key_is(k, klen, "sender")) s = &out->sender, slen = &out->sender_len;
    if (s) {
        const unsigned char *at = r->p;
        if (peek_string(r, s, slen) == 0) return 0;
        r->p = at;
        *s = NULL;
        return peek_skip(r, depth);
    }
    const char **body = NULL;
    size_t *body_len = NULL;
    if (peek_key_is(k, klen, "args")) body = &out->args, body_len = &out->args_len;
    else if (peek_key_is(k, klen, "result")) body = &out->result, body_len = &out->result_len;
    else if (peek_key_is(k, klen, "error")) body = &out->error, body_len = &out->error_len;
    if (body) {
        const unsigned char *at = r->p;
        if (peek_skip(r, depth) != 0) return -1;
        *body = (const char *)at;
        *body_len = (size_t)(r->p - at);
        return 0;
    }
    int kind;
    long long v;
    if (peek_key_is(k, klen, "id")) {
        if (peek_scalar(r, depth, &kind, &v) != 0) return -1;
        out->has_id = kind == 2;
        out->id = v;
        return 0;
    }
    if (peek_key_is(k, klen, "ack")) {
        if (peek_scalar(r, depth, &kind, &v) != 0) return -1;
        out->ack_kind = kind;
        if (kind == 1) out->ack_bool = (int)v;
        if (kind == 2) out->ack_int = v;
        return 0;
    }
    return peek_skip(r, depth);
}

int pl_value_peek_envelope(const char *data, size_t len, int max_depth,
                           pl_envelope_head *out) {
    memset(out, 0, sizeof *out);
    peek_reader r = {(const unsigned char *)data, (const unsigned char *)data + len};
    uint64_t pairs;
    if (!peek_need(&r, 1)) return -1;
    unsigned char t = *r.p;
    if ((t & 0xf0) == 0x80) { pairs = t & 0x0f; r.p++; }
    else if (t == 0xde) { if (peek_count(&r, 2, &pairs)) return -1; }
    else if (t == 0xdf) { if (peek_count(&r, 4, &pairs)) return -1; }
    else return -1;
    if (pairs > len) return -1;
    for (uint64_t i = 0; i < pairs; i++) {
        const char *k;
        size_t klen;
        const unsigned char *at = r.p;
        if (peek_string(&r, &k, &klen) != 0) {
            r.p = at;
            if (peek_skip(&r, max_depth - 1) != 0 || peek_skip(&r, max_depth - 1) != 0) return -1;
            continue;
        }
        if (peek_field(&r, k, klen, max_depth - 1, out) != 0) return -1;
    }
    return r.p == r.end ? 0 : -1;
}
