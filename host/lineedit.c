/* lineedit.c: readline's callback interface on the loop (issue 5). Placeholder. */
#include "lineedit.h"

void pl_llineedit_register(lua_State *L) { (void)L; }
