/* llineedit.c: the line editor (lineedit.c) as pulsar.core's lineedit_*
 * calls, for pulsar.repl:
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
 * none, or nil for $PULSAR_HISTORY (empty: none), else
 * ~/.pulsar-lua/history. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "host.h"
#include "lineedit.h"

/* The Lua side of the process's one editor: its functions' registry refs. */
typedef struct lua_editor {
    pl_host *host;
    int on_line_ref, complete_ref;
} lua_editor;

static lua_editor bound = {NULL, LUA_NOREF, LUA_NOREF};

static void lua_line(void *ud, const char *line) {
    lua_editor *b = ud;
    lua_State *L = b->host->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->on_line_ref);
    if (line) lua_pushstring(L, line);
    else lua_pushnil(L);
    pl_host_pcall(b->host, 1, 0, "REPL line");
}

/* Frees the strings of a NULL-ended list, and the list. */
static void free_list(char **list, size_t n) {
    for (size_t i = 0; i < n; i++) free(list[i]);
    free(list);
}

/* The table of strings at the top of L's stack as a NULL-ended list (what
 * is no string is left out); NULL when empty or out of memory. */
static char **string_list(lua_State *L) {
    if (!lua_istable(L, -1)) return NULL;
    size_t n = lua_rawlen(L, -1);
    if (n == 0 || n > 100000) return NULL;
    char **list = calloc(n + 1, sizeof *list);
    if (!list) return NULL;
    size_t count = 0;
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i);
        const char *s = lua_tostring(L, -1);
        if (s && !(list[count++] = strdup(s))) {
            lua_pop(L, 1);
            free_list(list, count);
            return NULL;
        }
        lua_pop(L, 1);
    }
    if (count == 0) {
        free(list);
        return NULL;
    }
    return list;
}

static char **lua_complete(void *ud, const char *line, size_t len, int start) {
    lua_editor *b = ud;
    lua_State *L = b->host->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->complete_ref);
    lua_pushlstring(L, line, len);
    lua_pushinteger(L, start);
    if (pl_host_pcall(b->host, 2, 1, "completion") != LUA_OK) return NULL;
    char **list = string_list(L);
    lua_pop(L, 1);
    return list;
}

static void lua_unbind(void *ud) {
    lua_editor *b = ud;
    if (b->host && b->host->L) {
        luaL_unref(b->host->L, LUA_REGISTRYINDEX, b->on_line_ref);
        luaL_unref(b->host->L, LUA_REGISTRYINDEX, b->complete_ref);
    }
    *b = (lua_editor){NULL, LUA_NOREF, LUA_NOREF};
}

static void check_editing(lua_State *L) {
    if (!pl_lineedit_editing()) luaL_error(L, "the line editor is not running");
}

static int le_capture(lua_State *L) {
    char err[256];
    int rc = pl_lineedit_capture(pl_host_of(L), err, sizeof err);
    if (rc < 0) return luaL_error(L, "%s", err);
    lua_pushboolean(L, rc);
    return 1;
}

/* The history file (malloc'd, or NULL for none) the options at `options`
 * name, as the top comment says. */
static char *history_path(lua_State *L, int options) {
    int kind = lua_getfield(L, options, "history");
    const char *env = getenv("PULSAR_HISTORY");
    char *path = NULL;
    if (kind == LUA_TSTRING) path = strdup(lua_tostring(L, -1));
    else if (kind == LUA_TBOOLEAN && !lua_toboolean(L, -1)) path = NULL;
    else if (env) path = *env ? strdup(env) : NULL;
    else path = pl_lineedit_default_history();
    lua_pop(L, 1);
    return path;
}

static int le_start(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "prompt");
    const char *prompt = luaL_optstring(L, -1, "> ");
    lua_getfield(L, 1, "on_line");
    luaL_argexpected(L, lua_isfunction(L, -1), 1, "on_line function");
    lua_getfield(L, 1, "complete");
    luaL_argexpected(L, lua_isnoneornil(L, -1) || lua_isfunction(L, -1), 1, "complete function");
    if (pl_lineedit_editing()) return luaL_error(L, "the line editor is already running");
    int has_complete = !lua_isnil(L, -1);
    lua_editor b = {pl_host_of(L), LUA_NOREF, LUA_NOREF};
    b.complete_ref = has_complete ? luaL_ref(L, LUA_REGISTRYINDEX) : (lua_pop(L, 1), LUA_NOREF);
    b.on_line_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    bound = b;
    pl_lineedit_handler handler = {lua_line, has_complete ? lua_complete : NULL,
                                   lua_unbind, &bound};
    char err[256];
    if (pl_lineedit_start(bound.host, prompt, history_path(L, 1), &handler, err,
                          sizeof err) != 0) {
        lua_unbind(&bound);
        return luaL_error(L, "%s", err);
    }
    return 0;
}

static int le_read(lua_State *L) {
    check_editing(L);
    pl_lineedit_read(luaL_checkstring(L, 1));
    return 0;
}

static int le_set_prompt(lua_State *L) {
    check_editing(L);
    pl_lineedit_set_prompt(luaL_checkstring(L, 1));
    return 0;
}

static int le_clear_line(lua_State *L) {
    check_editing(L);
    pl_lineedit_clear_line(luaL_checkstring(L, 1));
    return 0;
}

static int le_complete_again(lua_State *L) {
    check_editing(L);
    pl_lineedit_complete_again();
    return 0;
}

static int le_columns(lua_State *L) {
    lua_pushinteger(L, pl_lineedit_columns());
    return 1;
}

static int le_stop(lua_State *L) {
    (void)L;
    pl_lineedit_stop();
    return 0;
}

/* The REPL's SIGINT handler asks: the loop saw one (^C on the terminal);
 * taken is true when that SIGINT already interrupted a line stuck in Lua
 * (interrupt.c): it is done with. */
static int le_interrupted(lua_State *L) {
    check_editing(L);
    pl_lineedit_loop_saw_sigint();
    lua_pushboolean(L, pl_host_of(L)->interrupted_by == SIGINT);
    return 1;
}

static const luaL_Reg lineedit_functions[] = {
    {"lineedit_capture", le_capture},
    {"lineedit_start", le_start},
    {"lineedit_read", le_read},
    {"lineedit_set_prompt", le_set_prompt},
    {"lineedit_clear_line", le_clear_line},
    {"lineedit_complete_again", le_complete_again},
    {"lineedit_columns", le_columns},
    {"lineedit_stop", le_stop},
    {"lineedit_interrupted", le_interrupted},
    {NULL, NULL},
};

void pl_llineedit_register(lua_State *L) { luaL_setfuncs(L, lineedit_functions, 0); }
