/* lnet.c: the Lua face of net.c (issue 6). Placeholder. */
#include "net.h"

void pl_lnet_register(lua_State *L) { (void)L; }
