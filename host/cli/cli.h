/* cli.h: the command line of pulsar-lua (docs/API.md §1).
 *
 * Parsing is separate from acting: pl_cli_parse checks every option and
 * value and fills a pl_cli; main.c and host.c then act on it. Options a
 * later part of the runtime uses are parsed and checked here already, so a
 * typo is refused on the day it is typed. */
#ifndef PULSAR_CLI_H
#define PULSAR_CLI_H

#include <stddef.h>

/* Settings visible to scripts as pulsar.cfg. */
typedef struct pl_config {
    int workers;
    const char *concurrency; /* "process" or "thread" */
    double timeout;          /* notify timeout, seconds */
    double exit_timeout;     /* graceful stop budget, seconds */
    const char *bind;        /* NULL when not given */
    const char *mailbox;
    const char *log_level;
    const char *pid_file;
    const char *attach;
    const char *cookie_file; /* NULL: ~/.pulsar-lua/cookie */
    const char *observer;    /* HOST:PORT of the web observer; NULL: none */
    const char *node;        /* this arbiter's node name; NULL: not a node */
    const char *join;        /* ADDR[,ADDR...] of nodes to join; NULL: none */
    const char *cluster;     /* redis://HOST:PORT[/PREFIX]; NULL: none */
    double node_timeout;     /* seconds of silence before a node is down */
} pl_config;

/* A -e or -l, run in command-line order before the script. */
typedef struct pl_action {
    char kind; /* 'e' or 'l' */
    const char *text;
} pl_action;

typedef struct pl_cli {
    pl_config cfg;
    pl_action *actions; /* malloc'd; free with pl_cli_free */
    int nactions;
    int interactive;  /* -i */
    int ignore_env;   /* -E: no LUA_INIT, LUA_PATH, LUA_CPATH */
    int warnings;     /* -W: warn() prints from the start */
    int show_version; /* -v */
    int show_help;    /* -h */
    int script;       /* argv index of the script ("-" for stdin), or 0 */
} pl_cli;

/* 0, or -1 with a one-line message in err. */
int pl_cli_parse(int argc, char **argv, pl_cli *cli, char *err, size_t errlen);
void pl_cli_free(pl_cli *cli);

void pl_cli_usage(const char *progname);

#endif
