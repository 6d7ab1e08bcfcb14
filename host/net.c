/* net.c: stream servers and connections for Lua (issue 6). Placeholder. */
#include "net.h"
