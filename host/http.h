/* http.h: a bounded, incremental HTTP/1.1 request parser (issue 6). */
#ifndef PULSAR_HTTP_H
#define PULSAR_HTTP_H
#include <lua.h>
void pl_lhttp_register(lua_State *L);
#endif
