/* pidfile.h: the arbiter's --pid-file (docs/API.md §1).
 *
 * The file holds the arbiter's pid and a newline. While a live process holds
 * it, a second arbiter refuses to start; a file left by a dead process (or
 * holding anything but a pid) is replaced without a word. */
#ifndef PULSAR_PIDFILE_H
#define PULSAR_PIDFILE_H

#include <stddef.h>

/* Writes this process's pid to path. 0, or -1 with a one-line message in err
 * (naming the path, and the holder's pid when a live process holds it). */
int pl_pidfile_acquire(const char *path, char *err, size_t errlen);

/* Removes path if it still holds this process's pid; anything else there
 * belongs to someone else and is left alone. */
void pl_pidfile_release(const char *path);

#endif
