/* auth.h: the cookie and the challenge-response of the TCP mailbox. */
#ifndef PULSAR_AUTH_H
#define PULSAR_AUTH_H
#include <lua.h>
void pl_lauth_register(lua_State *L);
#endif
