/* lenvelope.h: mailbox envelopes seen from Lua (lenvelope.c), shared by the
 * links' and the inboxes' bindings. */
#ifndef PULSAR_LENVELOPE_H
#define PULSAR_LENVELOPE_H

#include <stddef.h>

#include <lua.h>

#include "buf.h"

/* Encodes, from the Lua arguments at `arg` on, a request
 *   command, id, sender, target | nil, ack, arg1, ..., argN
 * or a reply
 *   ack, target | nil, sender | nil, is_error, value
 * appending it to out. Bad types raise (luaL_check*); a value that cannot
 * be encoded gives -1 with err naming it. */
int pl_lenvelope_request(lua_State *L, int arg, pl_buf *out, char *err, size_t errlen);
int pl_lenvelope_reply(lua_State *L, int arg, pl_buf *out, char *err, size_t errlen);

/* Adds to the table on top of L's stack:
 *   core.encode_request(command, id, sender, target, ack, ...) -> payload
 *   core.encode_reply(ack, target, sender, is_error, value) -> payload
 *       (both raise with the path of a value that cannot be encoded)
 *   core.decode_envelope(payload) -> the values of envelope.h's
 *       pl_envelope_push (functions allowed: mailbox peers are trusted) */
void pl_lenvelope_register(lua_State *L);

#endif
