/* auth.c: the cookie and the challenge-response of the TCP mailbox (issue 5).
 * Placeholder until it lands. */
#include "auth.h"

void pl_lauth_register(lua_State *L) { (void)L; }
