/* envelope.h: the envelopes of the mailbox protocol (docs/API.md §3), made
 * from values on a Lua stack and read back into values, without a Lua table
 * for the envelope itself.
 *
 * The wire form is the one value.c would give the tables
 *   request: {command=, id=, sender=, target=, args=, ack=}
 *   reply:   {command="callback", ack=, target=, sender=, result= | error=}
 * (args absent without arguments, an array without nils, else a map of the
 * non-nil arguments by position with `n`; result absent when nil), so peers
 * that build envelopes as tables (consoles, tools) read and write the same
 * bytes. Reading uses pl_value_peek_envelope for the head and
 * pl_value_decode for the body only.
 *
 * Like value.h, these may raise Lua errors on memory exhaustion: call them
 * in protected mode. */
#ifndef PULSAR_ENVELOPE_H
#define PULSAR_ENVELOPE_H

#include <stddef.h>

#include <lua.h>

#include "buf.h"
#include "value.h"

typedef struct pl_request_head {
    const char *command;
    long long id;
    const char *sender, *target; /* target NULL: none */
    int ack;
} pl_request_head;

typedef struct pl_reply_head {
    long long ack; /* the id of the request */
    const char *target, *sender; /* NULL: none */
} pl_reply_head;

/* Appends a request whose arguments are the nargs values at first,
 * first+1, ... 0, or -1 with err naming the argument ("args[2].co: cannot
 * encode a thread"); out keeps its length then. */
int pl_envelope_encode_request(lua_State *L, const pl_request_head *head,
                               int first, int nargs, pl_buf *out,
                               const pl_value_limits *lim, char *err,
                               size_t errlen);

/* Appends a reply carrying the value at idx as its result, or (is_error)
 * as its error. 0, or -1 with err naming the value ("result.f: ..."). */
int pl_envelope_encode_reply(lua_State *L, const pl_reply_head *head,
                             int is_error, int idx, pl_buf *out,
                             const pl_value_limits *lim, char *err,
                             size_t errlen);

/* Reads the envelope in data[0..len) and pushes, for a request:
 *   command, id, sender, target, ack, arg1, ..., argN
 * and for a reply (command "callback"):
 *   "callback", ack, sender, target, is_error, value
 * (absent fields as nil). Returns how many values it pushed, or -1 with
 * err and nothing pushed. */
int pl_envelope_push(lua_State *L, const char *data, size_t len,
                     const pl_value_limits *lim, char *err, size_t errlen);

#endif
