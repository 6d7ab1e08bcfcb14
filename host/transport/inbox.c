/* inbox.c: one VM's queue of messages and the process's directory of them
 * (inbox.h).
 *
 * Locks: `directory_lock` guards the two hash tables (aids, names), every
 * inbox's reference count and watcher list; each inbox's own `lock` guards
 * its queue and `closed`. An inbox is in the directory exactly while it is
 * open, so finding one and taking a reference is one step under the
 * directory lock. A poster writes the owner's eventfd while holding the
 * inbox's lock, and close sets `closed` under that lock before closing the
 * handles and the eventfd: no wake-up can reach a closed one.
 *
 * A sender does not wake a receiver per message: it notes the inbox and
 * writes its eventfd once when its own loop turns (a uv_prepare_t, as
 * conn.c batches writes), and not at all while an earlier wake-up is
 * still unread (`signalled`). So a burst of casts costs the receiver one
 * wake-up, and it drains the whole burst at once.
 *
 * The wake-up is an eventfd watched by a uv_poll_t rather than a
 * uv_async_t: libuv's async handle makes the woken loop spin, then
 * sched_yield, until the sender has finished its uv_async_send, which on
 * two busy cores cost more than the rest of a round trip (strace showed a
 * sched_yield per message). With the eventfd a hop is one write, one
 * epoll_wait and one read, as in the C floor (B1).
 *
 * References: the owner holds one until the handle's close callback; each
 * pl_inbox_find holder one; each entry in another inbox's watcher list one.
 * The last release frees the memory. The count is atomic (see `refs`), so
 * neither a post nor a release takes the directory lock. */
#include "inbox.h"

#include "value.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define AID_MAX 64
#define AID_BUCKETS 1024
#define NAME_BUCKETS 256

typedef struct inbox_msg {
    struct inbox_msg *next;
    size_t len;
    int down;   /* a down notice: data is the aid of the inbox that closed */
    char data[];
} inbox_msg;

#define MSG_HEAD offsetof(inbox_msg, data)

struct pl_inbox {
    char aid[AID_MAX];
    char name[AID_MAX];       /* for the down notices; under lock */
    uv_loop_t *loop;
    int wake_fd;              /* an eventfd, written when the queue fills */
    uv_poll_t wake;
    /* As a sender (owner's thread only): the inboxes posted to since this
     * loop last turned, each held, woken once by `flush` before the loop
     * blocks: one wake-up per batch, not per message. */
    uv_prepare_t flush;
    pl_inbox **to_wake;
    size_t nto_wake, capto_wake;
    int open_handles;
    pl_inbox_handler handler;
    uv_mutex_t lock;          /* head, tail, closed */
    inbox_msg *head, *tail;
    int closed;
    int signalled;            /* wake_fd written and not yet read */
    /* Taken under directory_lock when found there, else only by one who
     * holds a reference already; so an inbox in the directory never has
     * none, and the count need not be locked (an atomic). */
    atomic_int refs;
    /* under directory_lock */
    pl_inbox *next_in_bucket;
    pl_inbox **watchers;
    size_t nwatchers, capwatchers;
};

typedef struct name_entry {
    struct name_entry *next;
    char *name;
    char aid[AID_MAX];
} name_entry;

static uv_once_t directory_once = UV_ONCE_INIT;
static uv_mutex_t directory_lock;
static pl_inbox *aids[AID_BUCKETS];
static name_entry *names[NAME_BUCKETS];
static atomic_ullong forwarded;

static void directory_init(void) {
    if (uv_mutex_init(&directory_lock) != 0) abort(); /* no way to go on */
}

static void lock_directory(void) {
    uv_once(&directory_once, directory_init);
    uv_mutex_lock(&directory_lock);
}

static uint32_t hash(const char *s) { /* FNV-1a */
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* ---- the directory (callers hold directory_lock) ------------------------ */

static pl_inbox **aid_slot(const char *aid) {
    pl_inbox **p = &aids[hash(aid) % AID_BUCKETS];
    while (*p && strcmp((*p)->aid, aid) != 0) p = &(*p)->next_in_bucket;
    return p;
}

static name_entry **name_slot(const char *name) {
    name_entry **p = &names[hash(name) % NAME_BUCKETS];
    while (*p && strcmp((*p)->name, name) != 0) p = &(*p)->next;
    return p;
}

static pl_inbox *lookup(const char *key) {
    pl_inbox *ib = *aid_slot(key);
    if (ib) return ib;
    name_entry *e = *name_slot(key);
    return e ? *aid_slot(e->aid) : NULL;
}

/* Appends ib to a growable list of inboxes; 0 or -1 (no memory). The
 * caller takes the reference the entry holds. */
static int list_append(pl_inbox ***list, size_t *n, size_t *cap, pl_inbox *ib) {
    if (*n == *cap) {
        size_t grown = *cap ? 2 * *cap : 8;
        pl_inbox **w = realloc(*list, grown * sizeof *w);
        if (!w) return -1;
        *list = w;
        *cap = grown;
    }
    (*list)[(*n)++] = ib;
    return 0;
}

static int add_watcher(pl_inbox *ib, pl_inbox *watcher) {
    if (list_append(&ib->watchers, &ib->nwatchers, &ib->capwatchers, watcher) != 0) return -1;
    atomic_fetch_add(&watcher->refs, 1);
    return 0;
}

static void free_inbox(pl_inbox *ib) {
    uv_mutex_destroy(&ib->lock);
    free(ib->watchers);
    free(ib);
}

void pl_inbox_release(pl_inbox *ib) {
    if (ib && atomic_fetch_sub(&ib->refs, 1) == 1) free_inbox(ib);
}

/* ---- queueing ------------------------------------------------------------ */

static void free_queue(inbox_msg *m) {
    while (m) {
        inbox_msg *next = m->next;
        free(m);
        m = next;
    }
}

/* Writes the owner's eventfd unless it is written already; under to->lock. */
static void signal_locked(pl_inbox *to) {
    if (to->signalled || to->closed || !to->head) return;
    uint64_t one = 1;
    ssize_t rc;
    do rc = write(to->wake_fd, &one, sizeof one); while (rc < 0 && errno == EINTR);
    to->signalled = 1;
}

static void on_flush(uv_prepare_t *handle);

/* Remembers to wake `to` when from's loop turns; 0, or -1 (no memory:
 * the caller wakes it at once). */
static int defer_wake(pl_inbox *from, pl_inbox *to) {
    for (size_t i = 0; i < from->nto_wake; i++)
        if (from->to_wake[i] == to) return 0;
    if (list_append(&from->to_wake, &from->nto_wake, &from->capto_wake, to) != 0) return -1;
    atomic_fetch_add(&to->refs, 1); /* the poster holds one: no lock needed */
    if (from->nto_wake == 1) uv_prepare_start(&from->flush, on_flush);
    return 0;
}

/* Appends m; wakes the owner now, or (from not NULL) when from's loop
 * turns. Takes m over. */
static int enqueue(pl_inbox *to, inbox_msg *m, pl_inbox *from) {
    m->next = NULL;
    uv_mutex_lock(&to->lock);
    if (to->closed) {
        uv_mutex_unlock(&to->lock);
        free(m);
        return -1;
    }
    if (to->tail) to->tail->next = m; else to->head = m;
    to->tail = m;
    int now = from == NULL || from->closed || to->signalled;
    if (from == NULL || from->closed) signal_locked(to);
    uv_mutex_unlock(&to->lock);
    if (!now && defer_wake(from, to) != 0) {
        uv_mutex_lock(&to->lock);
        signal_locked(to);
        uv_mutex_unlock(&to->lock);
    }
    return 0;
}

static void wake_all(pl_inbox *from) {
    size_t n = from->nto_wake;
    from->nto_wake = 0;
    for (size_t i = 0; i < n; i++) {
        pl_inbox *to = from->to_wake[i];
        uv_mutex_lock(&to->lock);
        signal_locked(to);
        uv_mutex_unlock(&to->lock);
        pl_inbox_release(to);
    }
}

static void on_flush(uv_prepare_t *handle) {
    pl_inbox *from = handle->data;
    uv_prepare_stop(handle);
    wake_all(from);
}

int pl_inbox_post(pl_inbox *to, const char *payload, size_t len, pl_inbox *from) {
    inbox_msg *m = malloc(MSG_HEAD + len);
    if (!m) return -1;
    m->len = len;
    m->down = 0;
    memcpy(m->data, payload, len);
    return enqueue(to, m, from);
}

int pl_inbox_message_start(pl_buf *msg, size_t limit) {
    static const char zero[MSG_HEAD];
    pl_buf_init(msg, limit ? limit + MSG_HEAD : 0);
    return pl_buf_append(msg, zero, MSG_HEAD);
}

int pl_inbox_post_buf(pl_inbox *to, pl_buf *msg, pl_inbox *from) {
    inbox_msg *m = (inbox_msg *)(void *)msg->data; /* realloc'd: max-aligned */
    m->len = msg->len - MSG_HEAD;
    m->down = 0;
    pl_buf_init(msg, 0); /* the block is the inbox's now */
    return enqueue(to, m, from);
}

/* The notice is "AID\0NAME\0". */
static void post_down(pl_inbox *to, const char *aid, const char *name) {
    size_t alen = strlen(aid) + 1, nlen = strlen(name) + 1;
    inbox_msg *m = malloc(MSG_HEAD + alen + nlen);
    if (!m) return; /* the watcher's calls then wait for the arbiter's notice */
    m->len = alen + nlen;
    m->down = 1;
    memcpy(m->data, aid, alen);
    memcpy(m->data + alen, name, nlen);
    enqueue(to, m, NULL);
}

struct pl_inbox_batch {
    pl_inbox *inbox;
    inbox_msg *next;
};

int pl_inbox_batch_next(pl_inbox_batch *batch, const char **payload,
                        size_t *len, int *is_down) {
    inbox_msg *m = batch->next;
    if (!m || batch->inbox->closed) return 0;
    batch->next = m->next;
    *payload = m->data;
    *len = m->len;
    *is_down = m->down;
    return 1;
}

/* The owner's loop: everything queued, as one batch. A handler that
 * closes the inbox ends the batch; the rest is dropped. */
static void on_wake(uv_poll_t *handle, int status, int events) {
    (void)status;
    (void)events;
    pl_inbox *ib = handle->data;
    uint64_t count;
    ssize_t rc;
    do rc = read(ib->wake_fd, &count, sizeof count); while (rc < 0 && errno == EINTR);
    uv_mutex_lock(&ib->lock);
    inbox_msg *taken = ib->head;
    ib->head = ib->tail = NULL;
    ib->signalled = 0;
    uv_mutex_unlock(&ib->lock);
    pl_inbox_batch batch = {ib, taken};
    if (taken && ib->handler.on_batch) ib->handler.on_batch(ib, &batch, ib->handler.ud);
    free_queue(taken);
}

/* ---- opening and closing --------------------------------------------------- */

static void on_handle_closed(uv_handle_t *handle);
static void close_handles(pl_inbox *ib);

/* The eventfd and its watcher; 0 or -1 with err. */
static int open_wake(pl_inbox *ib, uv_loop_t *loop, char *err, size_t errlen) {
    ib->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ib->wake_fd < 0) {
        snprintf(err, errlen, "cannot make an inbox's wake-up: %s", strerror(errno));
        return -1;
    }
    int rc = uv_poll_init(loop, &ib->wake, ib->wake_fd);
    if (rc != 0) {
        snprintf(err, errlen, "cannot watch an inbox's wake-up: %s", uv_strerror(rc));
        close(ib->wake_fd);
        return -1;
    }
    ib->wake.data = ib;
    uv_poll_start(&ib->wake, UV_READABLE, on_wake);
    uv_unref((uv_handle_t *)&ib->wake);
    uv_prepare_init(loop, &ib->flush);
    ib->flush.data = ib;
    uv_unref((uv_handle_t *)&ib->flush);
    ib->open_handles = 2;
    return 0;
}

pl_inbox *pl_inbox_open(uv_loop_t *loop, const char *aid,
                        const pl_inbox_handler *handler, char *err,
                        size_t errlen) {
    if (strlen(aid) >= AID_MAX) {
        snprintf(err, errlen, "aid '%.20s...' is too long", aid);
        return NULL;
    }
    pl_inbox *ib = calloc(1, sizeof *ib);
    if (!ib || uv_mutex_init(&ib->lock) != 0) {
        free(ib);
        snprintf(err, errlen, "no memory for an inbox");
        return NULL;
    }
    if (open_wake(ib, loop, err, errlen) != 0) {
        free_inbox(ib);
        return NULL;
    }
    strcpy(ib->aid, aid);
    ib->loop = loop;
    ib->handler = *handler;
    atomic_init(&ib->refs, 1);
    lock_directory();
    pl_inbox **slot = aid_slot(aid);
    int taken = *slot != NULL;
    if (!taken) *slot = ib;
    uv_mutex_unlock(&directory_lock);
    if (taken) {
        snprintf(err, errlen, "aid '%s' already has an inbox in this process", aid);
        ib->closed = 1;
        close_handles(ib);
        return NULL;
    }
    return ib;
}

static void on_handle_closed(uv_handle_t *handle) {
    pl_inbox *ib = handle->data;
    if (--ib->open_handles > 0) return;
    close(ib->wake_fd);
    pl_inbox_release(ib);
}

static void close_handles(pl_inbox *ib) {
    uv_close((uv_handle_t *)&ib->wake, on_handle_closed);
    uv_close((uv_handle_t *)&ib->flush, on_handle_closed);
}

void pl_inbox_close(pl_inbox *ib) {
    lock_directory();
    pl_inbox **slot = aid_slot(ib->aid);
    if (*slot == ib) *slot = ib->next_in_bucket;
    pl_inbox **watchers = ib->watchers;
    size_t n = ib->nwatchers;
    ib->watchers = NULL;
    ib->nwatchers = ib->capwatchers = 0;
    uv_mutex_unlock(&directory_lock);
    uv_mutex_lock(&ib->lock);
    ib->closed = 1;
    inbox_msg *queued = ib->head;
    ib->head = ib->tail = NULL;
    uv_mutex_unlock(&ib->lock);
    free_queue(queued);
    for (size_t i = 0; i < n; i++) {
        post_down(watchers[i], ib->aid, ib->name);
        pl_inbox_release(watchers[i]);
    }
    free(watchers);
    wake_all(ib); /* what this inbox's actor posted last still goes */
    free(ib->to_wake);
    ib->to_wake = NULL;
    ib->capto_wake = 0;
    close_handles(ib);
}

/* ---- finding ---------------------------------------------------------------- */

pl_inbox *pl_inbox_find(const char *key, pl_inbox *watcher) {
    lock_directory();
    pl_inbox *ib = lookup(key);
    if (ib) {
        atomic_fetch_add(&ib->refs, 1);
        /* without memory for the entry the caller still gets the inbox;
         * the arbiter's notice of the end then fails its calls */
        if (watcher && watcher != ib) (void)add_watcher(ib, watcher);
    }
    uv_mutex_unlock(&directory_lock);
    return ib;
}

int pl_inbox_known(const char *key) {
    lock_directory();
    int known = lookup(key) != NULL;
    uv_mutex_unlock(&directory_lock);
    return known;
}

const char *pl_inbox_aid(const pl_inbox *ib) { return ib->aid; }

void pl_inbox_set_name(pl_inbox *ib, const char *name) {
    snprintf(ib->name, sizeof ib->name, "%s", name); /* the owner's thread only */
}

int pl_inbox_alive(pl_inbox *ib) {
    uv_mutex_lock(&ib->lock);
    int alive = !ib->closed;
    uv_mutex_unlock(&ib->lock);
    return alive;
}

int pl_inbox_publish(const char *name, const char *aid) {
    if (aid && strlen(aid) >= AID_MAX) return -1;
    lock_directory();
    name_entry **slot = name_slot(name), *e = *slot;
    int rc = 0;
    if (!aid) {
        if (e) {
            *slot = e->next;
            free(e->name);
            free(e);
        }
    } else if (e) {
        strcpy(e->aid, aid);
    } else if ((e = calloc(1, sizeof *e)) && (e->name = strdup(name))) {
        strcpy(e->aid, aid);
        *slot = e;
    } else {
        free(e);
        rc = -1;
    }
    uv_mutex_unlock(&directory_lock);
    return rc;
}


/* ---- forwarding ------------------------------------------------------------ */

int pl_inbox_forward(const char *payload, size_t len) {
    pl_envelope_head head;
    if (pl_value_peek_envelope(payload, len, pl_value_default_limits.max_depth, &head) != 0 ||
        !head.target || head.target_len >= AID_MAX)
        return 0;
    char target[AID_MAX];
    memcpy(target, head.target, head.target_len);
    target[head.target_len] = '\0';
    pl_inbox *to = pl_inbox_find(target, NULL);
    if (!to) return 0;
    int posted = pl_inbox_post(to, payload, len, NULL) == 0;
    pl_inbox_release(to);
    if (posted) atomic_fetch_add_explicit(&forwarded, 1, memory_order_relaxed);
    return posted;
}

unsigned long long pl_inbox_forwarded(void) {
    return atomic_load_explicit(&forwarded, memory_order_relaxed);
}
