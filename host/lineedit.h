/* lineedit.h: the terminal line editor driven by the loop (issue 5). */
#ifndef PULSAR_LINEEDIT_H
#define PULSAR_LINEEDIT_H
#include <lua.h>
void pl_llineedit_register(lua_State *L);
#endif
