/* value.h: Lua values to MessagePack and back (docs/API.md §3).
 *
 * nil, booleans, integers, floats, strings (binary-safe), sequences (arrays)
 * and other tables (maps); functions cross by value as extension type 1
 * (bytecode and upvalues, under docs/API.md's crossing rules), actor proxies as
 * extension type 2. Both directions are bounded by depth and size limits, and
 * every error names the offending value by its path from the root.
 *
 * These functions may raise Lua errors on memory exhaustion, so call them in
 * protected mode (from a Lua C function, or under lua_pcall). */
#ifndef PULSAR_VALUE_H
#define PULSAR_VALUE_H

#include <stddef.h>

#include <lua.h>

#include "buf.h"

typedef struct pl_value_limits {
    int max_depth;       /* nesting of tables, functions and proxies; the
                            root is level 1; at most 1000 is honoured */
    size_t max_size;     /* most bytes one encoded value may take */
    int allow_functions; /* decode extension type 1 (bytecode); only for
                            peers trusted to run code in this VM */
} pl_value_limits;

extern const pl_value_limits pl_value_default_limits; /* 100, 64 MiB, yes */

/* Appends the encoding of the value at idx to out. 0, or -1 with a message in
 * err such as "args[2].co: cannot encode a thread"; `root` names the value in
 * such paths. On error out keeps its length from before the call. lim NULL
 * means pl_value_default_limits; the stack is left as it was. */
int pl_value_encode(lua_State *L, int idx, pl_buf *out,
                    const pl_value_limits *lim, const char *root, char *err,
                    size_t errlen);

/* Appends the n values at stack slots first..first+n-1 as one array, nils
 * kept in place (an argument list). Paths read root[1], root[2], ... The list
 * is level 1 of the depth limit, as it is when the array is decoded. */
int pl_value_encode_list(lua_State *L, int first, int n, pl_buf *out,
                         const pl_value_limits *lim, const char *root,
                         char *err, size_t errlen);

/* Decodes one value from data[0..len) and pushes it. Returns the bytes it
 * used (> 0; bytes after the value are left alone), or -1 with a message in
 * err naming the byte offset, and nothing pushed. len over lim->max_size is
 * refused before reading. */
ptrdiff_t pl_value_decode(lua_State *L, const char *data, size_t len,
                          const pl_value_limits *lim, char *err,
                          size_t errlen);

/* The routing fields of an envelope (docs/API.md §3), read without decoding its
 * arguments or result: what the arbiter needs to relay a message. Strings
 * point into the input (len 0 and NULL when absent or not a string). */
typedef struct pl_envelope_head {
    const char *command, *target, *sender;
    size_t command_len, target_len, sender_len;
    int has_id;
    long long id;
    int ack_kind; /* 0 absent, 1 boolean (ack_bool), 2 integer (ack_int) */
    int ack_bool;
    long long ack_int;
    /* The encoded values of `args`, `result` and `error` (NULL: absent). */
    const char *args, *result, *error;
    size_t args_len, result_len, error_len;
} pl_envelope_head;

/* Reads the head of the envelope in data[0..len): 0, or -1 if the input is
 * not one well-formed MessagePack map (nested no deeper than max_depth). */
int pl_value_peek_envelope(const char *data, size_t len, int max_depth,
                           pl_envelope_head *out);

/* The registry key of the metatable that marks an ActorProxy table. */
#define PL_PROXY_METATABLE "pulsar.ActorProxy"

#endif
