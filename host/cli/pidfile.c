/* pidfile.c: the arbiter's --pid-file (see pidfile.h).
 *
 * The file appears with its content already in it: the pid is written to a
 * temporary file of our own (O_CREAT|O_EXCL) that is then hard-linked to the
 * final name. link() fails with EEXIST when the name is taken, so of two
 * arbiters starting together only one wins, and a reader never sees an empty,
 * half-written file that it would take for garbage and replace. */
#include "pidfile.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Room for a pid, its newline and more: anything longer is not a pid file. */
#define PID_TEXT_MAX 32

__attribute__((format(printf, 3, 4)))
static int fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* The pid in text ("1234" or "1234\n"), or 0 when text is anything else. */
static long parse_pid(const char *text) {
    if (!isdigit((unsigned char)text[0])) return 0;
    char *end;
    errno = 0;
    long pid = strtol(text, &end, 10);
    if (errno || pid <= 0 || pid > INT_MAX) return 0;
    if (*end == '\n') end++;
    return *end == 0 ? pid : 0;
}

/* Sets *pid to the pid in path (0 when it holds no pid). 0, or -1 with
 * errno when the file cannot be read (ENOENT: it is gone). */
static int read_holder(const char *path, long *pid) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char text[PID_TEXT_MAX + 1];
    ssize_t n;
    do {
        n = read(fd, text, sizeof text - 1);
    } while (n < 0 && errno == EINTR);
    int read_errno = errno;
    close(fd);
    if (n < 0) {
        errno = read_errno;
        return -1;
    }
    text[n] = 0;
    *pid = parse_pid(text);
    return 0;
}

/* Whether pid names a live process other than this one. Our own pid in the
 * file can only be left from an earlier life (a restarted container reuses
 * low pids), so it does not count. EPERM: alive, owned by someone else. */
static int holder_is_alive(long pid) {
    if (pid == (long)getpid()) return 0;
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

static int write_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* A file named after path and our pid, holding our pid. 0, or -1 with
 * errno. */
static int write_temporary(const char *tmp) {
    /* A leftover of an earlier process with our pid is ours to replace. */
    if (unlink(tmp) != 0 && errno != ENOENT) return -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    char text[PID_TEXT_MAX];
    int len = snprintf(text, sizeof text, "%ld\n", (long)getpid());
    int rc = write_all(fd, text, (size_t)len);
    int write_errno = errno;
    if (close(fd) != 0 && rc == 0) {
        rc = -1;
        write_errno = errno;
    }
    if (rc != 0) {
        unlink(tmp);
        errno = write_errno;
    }
    return rc;
}

/* Puts a file holding our pid at path: 0; 1 when the name is taken; -1 with
 * errno on any other failure. */
static int create_pid_file(const char *path) {
    char tmp[PATH_MAX];
    int len = snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    if (len < 0 || (size_t)len >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (write_temporary(tmp) != 0) return -1;
    int rc = link(tmp, path);
    int link_errno = errno;
    unlink(tmp);
    if (rc == 0) return 0;
    errno = link_errno;
    return errno == EEXIST ? 1 : -1;
}

int pl_pidfile_acquire(const char *path, char *err, size_t errlen) {
    /* A stale file is removed once; should the name be taken again at
     * once, someone else is starting with the same pid file. */
    for (int attempt = 0; attempt < 2; attempt++) {
        int created = create_pid_file(path);
        if (created == 0) return 0;
        if (created < 0)
            return fail(err, errlen, "cannot write pid file %s: %s", path,
                        strerror(errno));
        long holder = 0;
        if (read_holder(path, &holder) != 0) {
            if (errno == ENOENT) continue; /* removed meanwhile: try again */
            return fail(err, errlen, "cannot read pid file %s: %s", path,
                        strerror(errno));
        }
        if (holder > 0 && holder_is_alive(holder))
            return fail(err, errlen,
                        "pid file %s is held by the running process %ld", path,
                        holder);
        /* Left by a process that is gone, or not a pid file at all. */
        if (unlink(path) != 0 && errno != ENOENT)
            return fail(err, errlen, "cannot replace stale pid file %s: %s",
                        path, strerror(errno));
    }
    return fail(err, errlen,
                "pid file %s was taken again while replacing a stale one", path);
}

void pl_pidfile_release(const char *path) {
    long holder = 0;
    if (read_holder(path, &holder) != 0 || holder != (long)getpid()) return;
    /* Nothing more can be done at exit; the next start replaces the file. */
    if (unlink(path) != 0 && errno != ENOENT)
        fprintf(stderr, "pulsar-lua: cannot remove pid file %s: %s\n", path,
                strerror(errno));
}
