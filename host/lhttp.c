/* lhttp.c: the Lua face of http.c (issue 6). Placeholder. */
#include "http.h"

void pl_lhttp_register(lua_State *L) { (void)L; }
