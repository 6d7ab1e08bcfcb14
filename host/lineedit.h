/* lineedit.h: the terminal REPL's line editor and output capture, driven by
 * the arbiter's loop (lineedit.c). Lua reaches it through pulsar.core:
 *
 *   core.lineedit_capture() -> true | false   fds 1 and 2 through the pump
 *                                             (false: stdout is no terminal)
 *   core.lineedit_start{prompt=, on_line=, complete=, history=}
 *                                             readline on fd 0, prompt shown
 *   core.lineedit_read(prompt)                show the prompt, read the next line
 *   core.lineedit_set_prompt(prompt)          change the prompt shown
 *   core.lineedit_clear_line(prompt)          drop the typed text (Ctrl-C)
 *   core.lineedit_complete_again()            redo the completion in progress
 *   core.lineedit_columns() -> n              the terminal's width
 *   core.lineedit_stop()                      all off; the terminal as it was
 *   core.lineedit_interrupted() -> taken      the loop saw SIGINT; taken: it
 *                                             already interrupted a busy line
 *
 * on_line(line) gets each line accepted (nil at end of input, Ctrl-D);
 * reading pauses until lineedit_read. complete(text, start) gets the line up
 * to the cursor and the 0-based start of the word readline completes, and
 * returns the replacements of that word. history is a file path, false for
 * none, or nil for $PULSAR_HISTORY, else ~/.pulsar-lua/history. */
#ifndef PULSAR_LINEEDIT_H
#define PULSAR_LINEEDIT_H
#include <lua.h>

void pl_llineedit_register(lua_State *L);

/* Puts the terminal modes and fds 1 and 2 back as they were, at once, for a
 * process about to _exit without closing its loop. */
void pl_lineedit_emergency_restore(void);

#endif
