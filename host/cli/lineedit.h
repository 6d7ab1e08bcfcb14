/* lineedit.h: the terminal REPL's line editor and output capture, driven by
 * the arbiter's loop (lineedit.c). llineedit.c gives Lua these calls as
 * core.lineedit_* (its top comment lists them). One editor per process
 * (readline is process-global); every call is on the arbiter's thread. */
#ifndef PULSAR_LINEEDIT_H
#define PULSAR_LINEEDIT_H

#include <stddef.h>

#include <lua.h>

#include "host.h"

/* Where accepted lines and completion requests go. */
typedef struct pl_lineedit_handler {
    /* Each line accepted; NULL at end of input (Ctrl-D). Reading pauses
     * until pl_lineedit_read. */
    void (*on_line)(void *ud, const char *line);
    /* The replacements of the word readline completes, which starts at the
     * 0-based `start` of `line` (len bytes: the line up to the cursor): a
     * NULL-ended malloc'd list of malloc'd strings, or NULL for none. May be
     * NULL: no completion. */
    char **(*complete)(void *ud, const char *line, size_t len, int start);
    /* The editor is closed (pl_lineedit_stop or the host's shutdown). */
    void (*on_close)(void *ud);
    void *ud;
} pl_lineedit_handler;

/* Sends fds 1 and 2 through the pump, so that output shows above the
 * prompt: 1 (now or already), 0 if stdout is no terminal, -1 with err. */
int pl_lineedit_capture(pl_host *h, char *err, size_t errlen);
/* readline on fd 0 with the prompt shown. history, the history file or
 * NULL for none, is malloc'd and taken (also on failure). 0, or -1 with
 * err. */
int pl_lineedit_start(pl_host *h, const char *prompt, char *history,
                      const pl_lineedit_handler *handler, char *err, size_t errlen);
int pl_lineedit_editing(void);
void pl_lineedit_read(const char *prompt);       /* show it, read the next line */
void pl_lineedit_set_prompt(const char *prompt); /* change the prompt shown */
void pl_lineedit_clear_line(const char *prompt); /* drop the typed text (Ctrl-C) */
void pl_lineedit_complete_again(void);           /* redo the completion in progress */
int pl_lineedit_columns(void);                   /* the terminal's width */
void pl_lineedit_stop(void);                     /* all off; the terminal as it was */
/* The arbiter's loop took a SIGINT: ^C on the terminal, unless the pump
 * wrote it already. */
void pl_lineedit_loop_saw_sigint(void);
/* ~/.pulsar-lua/history, its folder made (0700) if missing; NULL without a
 * home or a folder. malloc'd. */
char *pl_lineedit_default_history(void);

/* Puts the terminal modes and fds 1 and 2 back as they were, at once, for a
 * process about to _exit without closing its loop. */
void pl_lineedit_emergency_restore(void);

/* core.lineedit_* (llineedit.c). */
void pl_llineedit_register(lua_State *L);

#endif
