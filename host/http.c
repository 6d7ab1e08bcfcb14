/* http.c: HTTP/1.1 requests on Debian's http-parser (issue 6). Placeholder. */
#include "http.h"
