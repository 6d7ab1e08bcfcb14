/* lineedit.c: the terminal REPL's line editor and its output, on the
 * arbiter's loop. pulsar.repl drives it through llineedit.c's Lua calls;
 * lineedit.h is its C face.
 *
 * Reading. GNU readline's callback interface: a uv_poll_t on fd 0 calls
 * rl_callback_read_char whenever the terminal has input, so actors, timers
 * and supervision keep running while the prompt waits. An accepted line
 * hides the prompt (the handler is removed, the terminal back in its own
 * modes, fd 0 no longer polled) and goes to the handler's on_line; reading
 * resumes with pl_lineedit_read and the next prompt. Signals are the loop's
 * (rl_catch_signals = 0): lcore.c hands SIGINT to the REPL, which calls
 * lineedit_clear_line or cancels the line being evaluated.
 *
 * Writing above the prompt. Whatever writes to fds 1 and 2 (the arbiter's
 * prints and log lines, thread actors, monitors, and process actors, which
 * inherit those fds) would garble the line being typed. While the REPL
 * runs, fds 1 and 2 are therefore a pipe, and the terminal is reached
 * through a private dup of fd 1 (tty_fd). A thread, the pump, reads the
 * pipe and
 *   - while no prompt is shown (a line is being evaluated, or the REPL has
 *     not started yet), writes what it reads straight to the terminal;
 *   - while a prompt is shown, queues it and wakes the loop, which clears
 *     the prompt line, writes the queued whole lines and redraws the prompt
 *     with the typed text (a partial line waits a moment for its end).
 * The pump is a thread and not a handle on the arbiter's loop because the
 * arbiter writes to the pipe itself: a long print from a REPL line would
 * fill the pipe and block the very loop that should empty it. Before a
 * prompt is shown, the loop flushes stdio and waits (bounded) until the
 * pump has written out what the pipe holds, so results come before the
 * prompt that follows them.
 *
 * Interrupting Lua that never waits. A REPL line stuck in a Lua loop never
 * lets the arbiter's loop see SIGINT: the host's signal watch interrupts
 * it (interrupt.c), as lua.c does from its signal handler. The pump only
 * writes the ^C meanwhile (write_caret).
 *
 * Ctrl-Z and `fg`. SIGTSTP is caught while the REPL runs, so that the
 * terminal goes back to the shell's modes before the process stops:
 * readline's own modes are undone (rl_cleanup_after_signal), then the
 * process stops for real (SIGTSTP raised with its default action for the
 * moment, so that the kernel still decides: a process group no shell can
 * resume ignores it). On SIGCONT, readline's modes come back and the prompt
 * is redrawn with the typed text. A line being evaluated may never let the
 * arbiter's loop run (a Lua loop), so the pump watches SIGTSTP too and stops
 * the process itself while no prompt is shown; whichever loop sees the n-th
 * SIGTSTP first acts on it (claim_suspend). The rest of the process group
 * (process actors) stops by the kernel's hand, thread actors with this
 * process. A SIGTSTP ignored when the REPL started stays ignored.
 *
 * readline is process-global, so a process has one line editor (`editor`):
 * the arbiter's. lineedit_stop, or the host's shutdown (it is a resource),
 * restores fds 1 and 2, the terminal's modes and fd 0's flags, and trims
 * the history file; the memory goes once libuv has closed the handles.
 *
 * Threads: the pump touches only tty_fd, the pipe, its own loop and what
 * the lock guards (prompt_shown, pending, the sync counters, quit); the
 * arbiter's thread does everything else. */
#include "lineedit.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include "buf.h"
#include "host.h"
#include "log.h"

#define HISTORY_MAX 1000           /* lines kept in the history file */
#define PENDING_MAX (1024 * 1024)  /* queued output before it is forced out */
#define TAIL_WAIT_MS 150           /* how long a partial line waits for its end */
#define SYNC_WAIT_NS 1000000000ull /* the longest a prompt waits for the pump */
#define KEYS_PER_WAKE 256          /* input read per poll callback */

/* What readline treats as the end of a word: everything but names, dots and
 * colons, so `pulsar.sp` and `s:up` complete as one word. */
static const char word_breaks[] = " \t\n\"\\'`@$><=;|&{}()[],+-*/%^~#!?";

typedef struct pl_lineedit {
    pl_host *host;
    pl_resource res;
    int tty_fd;         /* the terminal, dup'd from fd 1 */
    int saved_fd[3];    /* fds 1 and 2 before the capture; -1 if not taken */
    int pipe_r;         /* what fds 1 and 2 write into */

    /* The pump and what it shares with the arbiter's thread. */
    uv_thread_t pump;
    uv_loop_t pump_loop;
    uv_poll_t pump_poll;
    uv_async_t pump_wake;  /* arbiter -> pump: sync or quit */
    uv_signal_t pump_sigint;
    uv_signal_t pump_tstp;
    uv_mutex_t lock;
    uv_cond_t synced;
    int prompt_shown;      /* under lock: queue output instead of writing it */
    pl_buf pending;        /* under lock: output waiting above the prompt */
    unsigned sync_asked, sync_done; /* under lock */
    int quit;              /* under lock */
    int show_carets;       /* under lock: the REPL is on (write_caret) */
    unsigned carets;       /* under lock: SIGINTs shown as ^C, or at a prompt */
    unsigned pump_sigints, loop_sigints; /* under lock: seen by each loop */
    unsigned suspends;     /* under lock: SIGTSTPs acted on (claim_suspend) */
    unsigned pump_tstps, loop_tstps; /* under lock: seen by each loop */
    int watch_tstp;        /* SIGTSTP was not ignored when the capture began */

    /* The arbiter's side. */
    uv_async_t wake;       /* pump -> arbiter: pending has output */
    uv_timer_t tail_timer; /* a partial line waited long enough */
    uv_poll_t input;       /* fd 0 */
    uv_signal_t winch;
    uv_signal_t tstp, cont; /* Ctrl-Z and `fg` */
    int handles_open;      /* freed when the last of these is closed */
    int input_open;        /* `input` was initialised */
    pl_buf tail;           /* output taken from pending, not yet written */
    FILE *out;             /* rl_outstream, on tty_fd */
    int editing;           /* readline started */
    int reading;           /* its handler installed: a prompt is shown */
    int stdin_flags;
    struct termios saved_termios;
    int have_termios;
    pl_lineedit_handler handler; /* what the lines and completions go to */
    char *history;         /* the history file, or NULL */
    int history_added;
} pl_lineedit;

static pl_lineedit *editor;          /* the process's one editor, or NULL */

/* ---- writing to the terminal ----------------------------------------- */

/* Writes all of data to fd, waiting while the terminal is busy; output the
 * terminal refuses (hung up) is dropped. */
static void write_all(int fd, const char *data, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, data, n);
        if (w > 0) {
            data += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            if (poll(&p, 1, 1000) <= 0) return;
        } else {
            return;
        }
    }
}

/* ---- the pump (its own thread) --------------------------------------- */

static void pump_deliver(pl_lineedit *le, const char *data, size_t n) {
    int wake = 0;
    uv_mutex_lock(&le->lock);
    if (!le->prompt_shown) {
        write_all(le->tty_fd, data, n);
    } else if (pl_buf_append(&le->pending, data, n) == 0) {
        wake = 1;
    } else { /* the loop does not keep up: out it goes, across the prompt */
        write_all(le->tty_fd, le->pending.data, le->pending.len);
        le->pending.len = 0;
        write_all(le->tty_fd, data, n);
    }
    uv_mutex_unlock(&le->lock);
    if (wake) uv_async_send(&le->wake);
}

/* Reads the pipe until it is empty (or ends); 0, or -1 once it ended. */
static int pump_drain(pl_lineedit *le) {
    char buf[65536];
    for (;;) {
        ssize_t n = read(le->pipe_r, buf, sizeof buf);
        if (n > 0) pump_deliver(le, buf, (size_t)n);
        else if (n < 0 && errno == EINTR) continue;
        else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        else return -1;
    }
}

static void pump_readable(uv_poll_t *poll_handle, int status, int events) {
    (void)events;
    pl_lineedit *le = poll_handle->data;
    if (status < 0 || pump_drain(le) < 0) uv_poll_stop(poll_handle);
}

/* Ctrl-C while a line is evaluated: ^C on a line of its own, before what
 * the line says next. Both loops see every SIGINT; whichever sees the n-th
 * first writes its ^C: the arbiter's, before it cancels the line, or the
 * pump's, while a line stuck in Lua keeps the arbiter's loop from it. The terminal does
 * not echo it then (set_echoctl): the kernel signals before it echoes,
 * which would race with this. Called with the lock held. */
static void write_caret(pl_lineedit *le, unsigned *seen) {
    ++*seen;
    if (le->show_carets && !le->prompt_shown && (int)(*seen - le->carets) > 0)
        write_all(le->tty_fd, "^C\n", 3);
    if ((int)(*seen - le->carets) > 0) le->carets = *seen;
}

static void pump_interrupted(uv_signal_t *handle, int signum) {
    (void)signum;
    pl_lineedit *le = handle->data;
    uv_mutex_lock(&le->lock);
    write_caret(le, &le->pump_sigints);
    uv_mutex_unlock(&le->lock);
}

/* A sync: write out what the pipe holds, then say so. A quit: the same,
 * then close the pump's handles so that its loop, and the thread, end. */
static void pump_woken(uv_async_t *async) {
    pl_lineedit *le = async->data;
    uv_mutex_lock(&le->lock);
    unsigned asked = le->sync_asked;
    int quit = le->quit;
    uv_mutex_unlock(&le->lock);
    pump_drain(le);
    uv_mutex_lock(&le->lock);
    le->sync_done = asked;
    uv_cond_broadcast(&le->synced);
    uv_mutex_unlock(&le->lock);
    if (quit) {
        uv_close((uv_handle_t *)&le->pump_poll, NULL);
        uv_close((uv_handle_t *)&le->pump_wake, NULL);
        uv_close((uv_handle_t *)&le->pump_sigint, NULL);
        uv_close((uv_handle_t *)&le->pump_tstp, NULL);
    }
}

static void pump_main(void *arg) {
    pl_lineedit *le = arg;
    uv_run(&le->pump_loop, UV_RUN_DEFAULT);
}

/* On the arbiter's thread: waits until the pump has written out what was
 * in the pipe when this was called (bounded: a stuck terminal must not
 * stop the arbiter for good). */
static void pump_sync(pl_lineedit *le) {
    fflush(stdout);
    fflush(stderr);
    uv_mutex_lock(&le->lock);
    unsigned ticket = ++le->sync_asked;
    uv_mutex_unlock(&le->lock);
    uv_async_send(&le->pump_wake);
    uv_mutex_lock(&le->lock);
    while ((int)(le->sync_done - ticket) < 0)
        if (uv_cond_timedwait(&le->synced, &le->lock, SYNC_WAIT_NS) != 0) break;
    uv_mutex_unlock(&le->lock);
}

/* ---- output above the prompt (the arbiter's thread) ------------------- */

/* Writes tail's whole lines above the prompt and redraws the prompt with
 * the typed text below them. A partial line stays in tail. */
static void write_above_prompt(pl_lineedit *le) {
    size_t whole = le->tail.len;
    while (whole > 0 && le->tail.data[whole - 1] != '\n') whole--;
    if (whole == 0) return;
    rl_clear_visible_line();
    fflush(le->out);
    write_all(le->tty_fd, le->tail.data, whole);
    pl_buf_consume(&le->tail, whole);
    rl_on_new_line();
    rl_redisplay();
    fflush(le->out);
}

/* A partial line waited TAIL_WAIT_MS for its end: it goes out with one. */
static void tail_waited(uv_timer_t *timer) {
    pl_lineedit *le = timer->data;
    if (!le->reading || le->tail.len == 0) return;
    if (pl_buf_append(&le->tail, "\n", 1) != 0) { /* no memory: as it is */
        write_all(le->tty_fd, le->tail.data, le->tail.len);
        write_all(le->tty_fd, "\n", 1);
        le->tail.len = 0;
    }
    write_above_prompt(le);
}

/* Moves pending to tail; if tail cannot grow, both go out as they are. */
static void take_pending(pl_lineedit *le) {
    uv_mutex_lock(&le->lock);
    if (le->pending.len > 0 && pl_buf_append(&le->tail, le->pending.data, le->pending.len) != 0) {
        write_all(le->tty_fd, le->tail.data, le->tail.len);
        le->tail.len = 0;
        write_all(le->tty_fd, le->pending.data, le->pending.len);
    }
    le->pending.len = 0;
    uv_mutex_unlock(&le->lock);
}

static void output_waiting(uv_async_t *async) {
    pl_lineedit *le = async->data;
    take_pending(le);
    if (!le->reading) { /* no prompt to keep: straight out */
        write_all(le->tty_fd, le->tail.data, le->tail.len);
        le->tail.len = 0;
        return;
    }
    write_above_prompt(le);
    if (le->tail.len == 0) uv_timer_stop(&le->tail_timer);
    else if (!uv_is_active((uv_handle_t *)&le->tail_timer))
        uv_timer_start(&le->tail_timer, tail_waited, TAIL_WAIT_MS, 0);
}

/* ---- the prompt ------------------------------------------------------- */

static void line_accepted(char *line);
static void input_ready(uv_poll_t *handle, int status, int events);

/* Whether the terminal echoes control keys as ^X, as the user had it (on)
 * or not at all (off: while a line is evaluated, see pump_interrupted). */
static void set_echoctl(pl_lineedit *le, int on) {
    struct termios modes;
    if (!le->have_termios || !(le->saved_termios.c_lflag & ECHOCTL)) return;
    if (tcgetattr(0, &modes) != 0) return;
    if (on) modes.c_lflag |= ECHOCTL;
    else modes.c_lflag &= ~(tcflag_t)ECHOCTL;
    tcsetattr(0, TCSANOW, &modes);
}

/* After a line: no handler, the terminal in its own modes, and the pump
 * writing straight through again (with what it queued meanwhile). */
static void hide_prompt(pl_lineedit *le) {
    if (le->reading) {
        rl_callback_handler_remove();
        le->reading = 0;
    }
    set_echoctl(le, 0);
    uv_poll_stop(&le->input);
    uv_timer_stop(&le->tail_timer);
    if (le->out) fflush(le->out);
    uv_mutex_lock(&le->lock);
    write_all(le->tty_fd, le->tail.data, le->tail.len);
    le->tail.len = 0;
    write_all(le->tty_fd, le->pending.data, le->pending.len);
    le->pending.len = 0;
    le->prompt_shown = 0;
    uv_mutex_unlock(&le->lock);
}

static void show_prompt(pl_lineedit *le, const char *prompt) {
    set_echoctl(le, 1); /* readline takes the modes it finds as the user's */
    pump_sync(le);
    uv_mutex_lock(&le->lock);
    le->prompt_shown = 1;
    uv_mutex_unlock(&le->lock);
    rl_callback_handler_install(prompt, line_accepted);
    le->reading = 1;
    uv_poll_start(&le->input, UV_READABLE | UV_DISCONNECT, input_ready);
}

/* ---- history ---------------------------------------------------------- */

char *pl_lineedit_default_history(void) {
    const char *home = getenv("HOME");
    if (!home || !*home) return NULL;
    size_t n = strlen(home) + sizeof "/.pulsar-lua/history";
    char *path = malloc(n);
    if (!path) return NULL;
    snprintf(path, n, "%s/.pulsar-lua", home);
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        free(path);
        return NULL;
    }
    snprintf(path, n, "%s/.pulsar-lua/history", home);
    return path;
}

/* Reads the history; the file is created (0600) if missing, since readline
 * appends only to a file that exists. Without it, history stays in memory. */
static void history_open(pl_lineedit *le) {
    stifle_history(HISTORY_MAX);
    if (!le->history) return;
    int fd = open(le->history, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        pl_log(PL_LOG_WARNING, le->host->name, "history not kept: %s: %s",
               le->history, strerror(errno));
        free(le->history);
        le->history = NULL;
        return;
    }
    close(fd);
    read_history(le->history);
    history_truncate_file(le->history, HISTORY_MAX);
}

/* Adds a line to the history (unless it repeats the last) and to the file. */
static void remember(pl_lineedit *le, const char *line) {
    HIST_ENTRY *last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
    if (last && strcmp(last->line, line) == 0) return;
    add_history(line);
    if (!le->history) return;
    append_history(1, le->history);
    if (++le->history_added % 100 == 0) history_truncate_file(le->history, HISTORY_MAX);
}

/* ---- readline's callbacks --------------------------------------------- */

static void line_accepted(char *line) {
    pl_lineedit *le = editor;
    if (!le) {
        free(line);
        return;
    }
    hide_prompt(le);
    if (line && *line) remember(le, line);
    le->handler.on_line(le->handler.ud, line);
    free(line);
}

static int input_waiting(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0;
}

static void input_ready(uv_poll_t *handle, int status, int events) {
    (void)events;
    pl_lineedit *le = handle->data;
    if (status < 0) { /* the terminal is gone: as end of input */
        if (le->reading) line_accepted(NULL);
        return;
    }
    int keys = 0;
    do rl_callback_read_char();
    while (le->reading && ++keys < KEYS_PER_WAKE && input_waiting(0));
}

static void window_resized(uv_signal_t *handle, int signum) {
    (void)signum;
    pl_lineedit *le = handle->data;
    if (le->reading) rl_resize_terminal();
}

/* ---- Ctrl-Z and `fg` --------------------------------------------------- */

/* Stops the process as SIGTSTP's default action does, and returns once it
 * is continued (at once if its process group is orphaned: the kernel then
 * discards the signal). The signal goes to this thread (raise), so the
 * stop happens before raise returns and libuv's handler is put back. Both
 * threads call it with the lock held, which keeps them from doing it at
 * the same time. */
static void stop_process(void) {
    struct sigaction dfl, caught;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    if (sigaction(SIGTSTP, &dfl, &caught) != 0) return;
    raise(SIGTSTP);
    sigaction(SIGTSTP, &caught, NULL);
}

/* Whether this loop acts on the SIGTSTP it just saw (counted in *seen):
 * yes if it may (can_act) and no loop acted on it yet. Lock held. */
static int claim_suspend(pl_lineedit *le, unsigned *seen, int can_act) {
    ++*seen;
    if (!can_act || (int)(*seen - le->suspends) <= 0) return 0;
    le->suspends = *seen;
    return 1;
}

/* Stops the process while no prompt is shown: the terminal is in its own
 * modes but for ECHOCTL (set_echoctl), which the shell gets back too. Lock
 * held. */
static void stop_without_prompt(pl_lineedit *le) {
    if (le->have_termios) tcsetattr(0, TCSADRAIN, &le->saved_termios);
    stop_process();
    set_echoctl(le, 0);
}

/* The pump's SIGTSTP: acted on here only while no prompt is shown (the
 * arbiter's loop may be stuck in Lua); readline's modes are the arbiter's
 * to undo. */
static void pump_suspended(uv_signal_t *handle, int signum) {
    (void)signum;
    pl_lineedit *le = handle->data;
    uv_mutex_lock(&le->lock);
    if (claim_suspend(le, &le->pump_tstps, !le->prompt_shown)) stop_without_prompt(le);
    uv_mutex_unlock(&le->lock);
}

/* Ctrl-Z on the arbiter's loop: the typed line stays on screen, the
 * terminal in the modes readline found, and the process stops. Continued,
 * readline's modes come back at once (the process may not have stopped at
 * all); the redraw waits for SIGCONT (continued). */
static void suspended(uv_signal_t *handle, int signum) {
    (void)signum;
    pl_lineedit *le = handle->data;
    uv_mutex_lock(&le->lock);
    int mine = claim_suspend(le, &le->loop_tstps, 1);
    if (mine && !le->reading) stop_without_prompt(le);
    uv_mutex_unlock(&le->lock);
    if (!mine || !le->reading) return;
    rl_cleanup_after_signal();
    fflush(le->out);
    uv_mutex_lock(&le->lock);
    stop_process();
    uv_mutex_unlock(&le->lock);
    rl_reset_after_signal();
}

/* SIGCONT (`fg`, or a continue after any stop): the shell may have set the
 * terminal's modes its way meanwhile, so readline's are set afresh from
 * the user's, and the prompt with the typed text is drawn again on the
 * cursor's line (below what the shell wrote). */
static void continued(uv_signal_t *handle, int signum) {
    (void)signum;
    pl_lineedit *le = handle->data;
    if (!le->reading) {
        set_echoctl(le, 0);
        return;
    }
    if (rl_deprep_term_function) rl_deprep_term_function();
    rl_reset_after_signal();
    fputc('\r', le->out);
    rl_forced_update_display();
    fflush(le->out);
}

static char *longest_common_prefix(char **words, size_t n) {
    size_t len = strlen(words[0]);
    for (size_t i = 1; i < n; i++) {
        size_t j = 0;
        while (j < len && words[i][j] == words[0][j]) j++;
        len = j;
    }
    return strndup(words[0], len);
}

/* Frees the strings of a NULL-ended list, not the list. */
static void free_matches(char **matches) {
    for (size_t i = 0; matches[i]; i++) free(matches[i]);
}

/* The handler's candidates (a NULL-ended list, taken) as readline's match
 * list: [0] the text to put in place of the word (their common prefix),
 * then the candidates, then NULL. NULL when there are none. */
static char **readline_matches(char **candidates) {
    if (!candidates) return NULL;
    size_t count = 0;
    while (candidates[count]) count++;
    char **matches = count ? calloc(count + 2, sizeof *matches) : NULL;
    if (matches) {
        memcpy(matches + 1, candidates, count * sizeof *candidates);
        matches[0] = count == 1 ? NULL : longest_common_prefix(candidates, count);
    }
    if (matches && count == 1) {
        matches[0] = matches[1];
        matches[1] = NULL;
    } else if (matches && !matches[0]) { /* no memory for the prefix */
        free(matches);
        matches = NULL;
    }
    if (!matches) free_matches(candidates);
    free(candidates);
    return matches;
}

/* rl_attempted_completion_function: the handler's complete(text up to the
 * cursor, start of the word) gives the replacements; never filenames. */
static char **complete_word(const char *text, int start, int end) {
    (void)text;
    rl_attempted_completion_over = 1;
    rl_completion_suppress_append = 1;
    pl_lineedit *le = editor;
    if (!le || !le->handler.complete) return NULL;
    return readline_matches(le->handler.complete(le->handler.ud, rl_line_buffer,
                                                 (size_t)end, start));
}

/* ---- starting and stopping -------------------------------------------- */

static void handle_closed(uv_handle_t *handle) {
    pl_lineedit *le = handle->data;
    if (--le->handles_open > 0) return;
    pl_buf_free(&le->pending);
    pl_buf_free(&le->tail);
    free(le->history);
    free(le);
}

/* Puts fds 1 and 2 back and ends the pump, after it wrote out the pipe. */
static void capture_stop(pl_lineedit *le) {
    fflush(stdout);
    fflush(stderr);
    for (int fd = 1; fd <= 2; fd++) {
        if (le->saved_fd[fd] < 0) continue;
        dup2(le->saved_fd[fd], fd);
        close(le->saved_fd[fd]);
        le->saved_fd[fd] = -1;
    }
    uv_mutex_lock(&le->lock);
    le->quit = 1;
    le->prompt_shown = 0;
    uv_mutex_unlock(&le->lock);
    uv_async_send(&le->pump_wake);
    uv_thread_join(&le->pump);
    uv_loop_close(&le->pump_loop);
    write_all(le->tty_fd, le->tail.data, le->tail.len);
    write_all(le->tty_fd, le->pending.data, le->pending.len);
    le->tail.len = le->pending.len = 0;
    close(le->pipe_r);
    uv_mutex_destroy(&le->lock);
    uv_cond_destroy(&le->synced);
}

static void editing_stop(pl_lineedit *le) {
    if (!le->editing) return;
    if (le->reading) { /* stopped from elsewhere: leave the typed line be */
        rl_point = rl_end;
        rl_redisplay();
        fputs("\n", le->out);
        fflush(le->out);
        rl_callback_handler_remove();
    }
    le->reading = le->editing = 0;
    uv_signal_stop(&le->tstp);
    uv_signal_stop(&le->cont);
    uv_mutex_lock(&le->lock);
    le->show_carets = 0;
    uv_mutex_unlock(&le->lock);
    if (le->have_termios) tcsetattr(0, TCSADRAIN, &le->saved_termios);
    if (le->history) history_truncate_file(le->history, HISTORY_MAX);
    clear_history();
    if (le->stdin_flags >= 0) fcntl(0, F_SETFL, le->stdin_flags);
    rl_instream = NULL;
    rl_outstream = NULL;
    rl_attempted_completion_function = NULL;
}

static void lineedit_close(pl_lineedit *le) {
    pl_host_untrack(&le->res);
    editor = NULL;
    editing_stop(le);
    capture_stop(le);
    if (le->out) fclose(le->out); /* and tty_fd with it */
    else close(le->tty_fd);
    le->out = NULL;
    if (le->handler.on_close) le->handler.on_close(le->handler.ud);
    le->handler = (pl_lineedit_handler){0};
    uv_close((uv_handle_t *)&le->wake, handle_closed);
    uv_close((uv_handle_t *)&le->tail_timer, handle_closed);
    if (le->input_open) uv_close((uv_handle_t *)&le->input, handle_closed);
    uv_close((uv_handle_t *)&le->winch, handle_closed);
    uv_close((uv_handle_t *)&le->tstp, handle_closed);
    uv_close((uv_handle_t *)&le->cont, handle_closed);
}

static void lineedit_shutdown(pl_resource *res) {
    lineedit_close((pl_lineedit *)((char *)res - offsetof(pl_lineedit, res)));
}

/* Starts the pump's loop and thread; 0 or a libuv error. */
static int pump_start(pl_lineedit *le) {
    int rc = uv_loop_init(&le->pump_loop);
    if (rc != 0) return rc;
    uv_poll_init(&le->pump_loop, &le->pump_poll, le->pipe_r); /* makes it non-blocking */
    uv_async_init(&le->pump_loop, &le->pump_wake, pump_woken);
    uv_signal_init(&le->pump_loop, &le->pump_sigint);
    uv_signal_init(&le->pump_loop, &le->pump_tstp);
    le->pump_poll.data = le->pump_wake.data = le->pump_sigint.data = le->pump_tstp.data = le;
    uv_poll_start(&le->pump_poll, UV_READABLE, pump_readable);
    uv_signal_start(&le->pump_sigint, pump_interrupted, SIGINT);
    uv_unref((uv_handle_t *)&le->pump_sigint);
    if (le->watch_tstp) uv_signal_start(&le->pump_tstp, pump_suspended, SIGTSTP);
    uv_unref((uv_handle_t *)&le->pump_tstp);
    rc = uv_thread_create(&le->pump, pump_main, le);
    if (rc != 0) {
        uv_close((uv_handle_t *)&le->pump_poll, NULL);
        uv_close((uv_handle_t *)&le->pump_wake, NULL);
        uv_close((uv_handle_t *)&le->pump_sigint, NULL);
        uv_close((uv_handle_t *)&le->pump_tstp, NULL);
        uv_run(&le->pump_loop, UV_RUN_DEFAULT);
        uv_loop_close(&le->pump_loop);
    }
    return rc;
}

/* Swaps fds 1 and 2 (2 only if it is a terminal) for the pipe's write end. */
static int capture_fds(pl_lineedit *le) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return -1;
    le->pipe_r = fds[0];
    fflush(stdout);
    fflush(stderr);
    for (int fd = 1; fd <= 2; fd++) {
        if (fd == 2 && !isatty(2)) continue;
        le->saved_fd[fd] = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (le->saved_fd[fd] < 0 || dup2(fds[1], fd) < 0) break;
    }
    close(fds[1]);
    setvbuf(stdout, NULL, _IOLBF, BUFSIZ);
    return 0;
}

/* Makes the editor and starts the capture; NULL with a message in err. */
static pl_lineedit *capture_start(pl_host *h, char *err, size_t errlen) {
    pl_lineedit *le = calloc(1, sizeof *le);
    if (!le) {
        pl_set_err(err, errlen, "out of memory");
        return NULL;
    }
    le->host = h;
    le->saved_fd[1] = le->saved_fd[2] = -1;
    le->pipe_r = -1;
    pl_buf_init(&le->pending, PENDING_MAX);
    pl_buf_init(&le->tail, 0);
    le->tty_fd = fcntl(1, F_DUPFD_CLOEXEC, 3);
    if (le->tty_fd < 0 || uv_mutex_init(&le->lock) != 0) {
        if (le->tty_fd >= 0) close(le->tty_fd);
        free(le);
        pl_set_err(err, errlen, "cannot capture the output: %s", strerror(errno));
        return NULL;
    }
    if (uv_cond_init(&le->synced) != 0) {
        close(le->tty_fd);
        uv_mutex_destroy(&le->lock);
        free(le);
        pl_set_err(err, errlen, "cannot capture the output: no condition variable");
        return NULL;
    }
    struct sigaction tstp_action;
    le->watch_tstp = sigaction(SIGTSTP, NULL, &tstp_action) == 0 &&
                     !(tstp_action.sa_flags & SA_SIGINFO) && tstp_action.sa_handler != SIG_IGN;
    int rc = capture_fds(le) == 0 ? 0 : uv_translate_sys_error(errno);
    if (rc == 0) rc = pump_start(le);
    if (rc != 0) {
        for (int fd = 1; fd <= 2; fd++)
            if (le->saved_fd[fd] >= 0) dup2(le->saved_fd[fd], fd), close(le->saved_fd[fd]);
        if (le->pipe_r >= 0) close(le->pipe_r);
        close(le->tty_fd);
        uv_cond_destroy(&le->synced);
        uv_mutex_destroy(&le->lock);
        free(le);
        pl_set_err(err, errlen, "cannot capture the output: %s", uv_strerror(rc));
        return NULL;
    }
    uv_async_init(h->loop, &le->wake, output_waiting);
    uv_timer_init(h->loop, &le->tail_timer);
    uv_signal_init(h->loop, &le->winch);
    uv_signal_init(h->loop, &le->tstp);
    uv_signal_init(h->loop, &le->cont);
    le->wake.data = le->tail_timer.data = le->winch.data = le->tstp.data = le->cont.data = le;
    le->handles_open = 5; /* and input, once the editor starts */
    uv_unref((uv_handle_t *)&le->wake);
    uv_unref((uv_handle_t *)&le->winch);
    pl_host_track(h, &le->res, lineedit_shutdown);
    editor = le;
    return le;
}

/* ---- the editor's calls (lineedit.h; llineedit.c binds them to Lua) --- */

int pl_lineedit_capture(pl_host *h, char *err, size_t errlen) {
    if (editor) return 1;
    if (!isatty(1)) return 0;
    return capture_start(h, err, errlen) ? 1 : -1;
}

int pl_lineedit_editing(void) { return editor && editor->editing; }

static void configure_readline(pl_lineedit *le) {
    rl_readline_name = "pulsar-lua";
    rl_catch_signals = 0;      /* the loop owns signals */
    rl_catch_sigwinch = 0;
    rl_change_environment = 0; /* no setenv while thread actors read it */
    rl_instream = stdin;
    rl_outstream = le->out;
    rl_completer_word_break_characters = word_breaks;
    rl_attempted_completion_function = complete_word;
}

/* The terminal's input, polled once the editor starts. */
static int input_open(pl_lineedit *le, char *err, size_t errlen) {
    if (le->input_open) return 0;
    int rc = uv_poll_init(le->host->loop, &le->input, 0);
    if (rc != 0) {
        pl_set_err(err, errlen, "cannot poll the terminal: %s", uv_strerror(rc));
        return -1;
    }
    le->input.data = le;
    le->input_open = 1;
    le->handles_open++;
    /* uv_poll_init made fd 0 non-blocking, and with it the terminal's
     * other fds that share its file description: readline and the
     * pump's writes expect them blocking. */
    if (le->stdin_flags >= 0) fcntl(0, F_SETFL, le->stdin_flags);
    return 0;
}

int pl_lineedit_start(pl_host *h, const char *prompt, char *history,
                      const pl_lineedit_handler *handler, char *err, size_t errlen) {
    if (editor && editor->editing) {
        pl_set_err(err, errlen, "the line editor is already running");
        goto fail;
    }
    if (!isatty(0) || (!editor && !isatty(1))) {
        pl_set_err(err, errlen, "the line editor needs a terminal");
        goto fail;
    }
    pl_lineedit *le = editor ? editor : capture_start(h, err, errlen);
    if (!le) goto fail;
    if (!le->out && !(le->out = fdopen(le->tty_fd, "w"))) {
        pl_set_err(err, errlen, "cannot write to the terminal: %s", strerror(errno));
        goto fail;
    }
    le->have_termios = tcgetattr(0, &le->saved_termios) == 0;
    le->stdin_flags = fcntl(0, F_GETFL);
    if (input_open(le, err, errlen) != 0) goto fail;
    le->handler = *handler;
    free(le->history);
    le->history = history;
    uv_ref((uv_handle_t *)&le->wake); /* the REPL keeps the arbiter alive */
    uv_signal_start(&le->winch, window_resized, SIGWINCH);
    uv_unref((uv_handle_t *)&le->winch);
    if (le->watch_tstp) {
        uv_signal_start(&le->tstp, suspended, SIGTSTP);
        uv_signal_start(&le->cont, continued, SIGCONT);
        uv_unref((uv_handle_t *)&le->tstp);
        uv_unref((uv_handle_t *)&le->cont);
    }
    configure_readline(le);
    history_open(le);
    le->editing = 1;
    uv_mutex_lock(&le->lock);
    le->show_carets = 1;
    uv_mutex_unlock(&le->lock);
    show_prompt(le, prompt);
    return 0;
fail:
    free(history);
    return -1;
}

void pl_lineedit_read(const char *prompt) {
    pl_lineedit *le = editor;
    if (!le || !le->editing) return;
    if (le->reading) rl_set_prompt(prompt), rl_forced_update_display();
    else show_prompt(le, prompt);
}

void pl_lineedit_set_prompt(const char *prompt) {
    pl_lineedit *le = editor;
    if (!le || !le->editing) return;
    rl_set_prompt(prompt);
    if (le->reading) rl_forced_update_display();
}

/* What Ctrl-C does at the prompt: the typed text stays on screen with ^C,
 * and a fresh prompt starts below. */
void pl_lineedit_clear_line(const char *prompt) {
    pl_lineedit *le = editor;
    if (!le || !le->reading) return;
    rl_point = rl_end;
    rl_redisplay();
    fputs("^C\n", le->out);
    rl_callback_sigcleanup();
    rl_free_line_state();
    rl_replace_line("", 1);
    rl_point = rl_mark = 0;
    rl_set_prompt(prompt);
    rl_on_new_line();
    rl_redisplay();
    fflush(le->out);
}

/* The handler's complete answered late (a remote session); running the
 * completion again finds the answer ready. */
void pl_lineedit_complete_again(void) {
    pl_lineedit *le = editor;
    if (!le || !le->reading) return;
    rl_complete(0, '\t');
    rl_redisplay();
    fflush(le->out);
}

int pl_lineedit_columns(void) {
    int rows = 0, cols = 0;
    if (editor && editor->editing) rl_get_screen_size(&rows, &cols);
    return cols > 0 ? cols : 80;
}

void pl_lineedit_stop(void) {
    if (editor) lineedit_close(editor);
}

void pl_lineedit_loop_saw_sigint(void) {
    pl_lineedit *le = editor;
    if (!le) return;
    uv_mutex_lock(&le->lock);
    write_caret(le, &le->loop_sigints);
    uv_mutex_unlock(&le->lock);
}

void pl_lineedit_emergency_restore(void) {
    pl_lineedit *le = editor;
    if (!le) return;
    if (le->have_termios) tcsetattr(0, TCSANOW, &le->saved_termios);
    fflush(stdout);
    for (int fd = 1; fd <= 2; fd++)
        if (le->saved_fd[fd] >= 0) dup2(le->saved_fd[fd], fd);
}
