/* main.c: the pulsar-lua executable's entry point.
 *
 * Parses the command line (cli.c), answers -h and -v, refuses options that
 * contradict each other, takes the --pid-file (pidfile.c) and hands
 * everything else to the host (host.c): an arbiter's, or with --attach a
 * console's (lua/pulsar/attach.lua). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <uv.h>

#include "cli.h"
#include "host.h"
#include "pidfile.h"
#include "spawn.h"

static void print_version(void) {
    printf("pulsar-lua %s (%s, libuv %s)\n", PULSAR_VERSION, LUA_RELEASE,
           uv_version_string());
    fflush(stdout);
}

/* With --attach this process is a console of another arbiter, not an
 * arbiter: what only an arbiter would do is refused, not silently ignored. */
static int refuse_conflicts(const pl_cli *cli) {
    if (!cli->cfg.attach) return 0;
    const char *other = cli->script      ? "script"
                        : cli->nactions  ? "-e or -l"
                        : cli->cfg.mailbox  ? "--mailbox"
                        : cli->cfg.pid_file ? "--pid-file"
                        : cli->cfg.observer ? "--observer"
                                            : NULL;
    if (!other) return 0;
    fprintf(stderr, "pulsar-lua: --attach runs lines in the arbiter at %s: "
                    "it takes no %s\n", cli->cfg.attach, other);
    return 1;
}

/* A node is reached on its TCP mailbox, and --join and --cluster are for
 * nodes: a node option without what it needs is refused before anything
 * starts. */
static int refuse_node_misuse(const pl_cli *cli) {
    const pl_config *c = &cli->cfg;
    const char *why = NULL;
    if (c->node && c->attach)
        why = "--node makes an arbiter, and --attach a console: not both";
    else if (c->node && (!c->mailbox || strncmp(c->mailbox, "unix:", 5) == 0))
        why = "--node needs a TCP --mailbox HOST:PORT, where the other nodes reach it";
    else if (!c->node && (c->join || c->cluster))
        why = c->join ? "--join needs --node NAME" : "--cluster needs --node NAME";
    if (!why) return 0;
    fprintf(stderr, "pulsar-lua: %s\n", why);
    return 1;
}

/* The pid file this arbiter holds, if any. It is released on every way out
 * that runs exit handlers: returning from main, and Lua's os.exit called
 * outside a task (which calls exit() at once). */
static const char *held_pid_file;

static void release_held_pid_file(void) {
    if (held_pid_file) pl_pidfile_release(held_pid_file);
    held_pid_file = NULL;
}

static int take_pid_file(const char *path) {
    char err[PATH_MAX + 128];
    if (pl_pidfile_acquire(path, err, sizeof err) != 0) {
        fprintf(stderr, "pulsar-lua: %s\n", err);
        return 1;
    }
    held_pid_file = path;
    /* Should registering fail, only an os.exit outside a task would leave
     * the file behind, and the next start replaces a stale file. */
    (void)atexit(release_held_pid_file);
    return 0;
}

/* The arbiter's life, inside its pid file when one was asked for. */
static int run_arbiter(const pl_cli *cli, int argc, char **argv) {
    if (cli->cfg.pid_file && take_pid_file(cli->cfg.pid_file) != 0) return 1;
    int code = pl_host_main(cli, argc, argv);
    release_held_pid_file();
    return code;
}

int main(int argc, char **argv) {
    /* A process actor started by an arbiter (spawn.c), not a user. */
    if (argc == 4 && strcmp(argv[1], "--pulsar-actor") == 0)
        return pl_process_actor_main(argv[2], argv[3]);
    pl_cli cli;
    char err[512];
    if (pl_cli_parse(argc, argv, &cli, err, sizeof err) != 0) {
        fprintf(stderr, "pulsar-lua: %s\n", err);
        pl_cli_free(&cli);
        return 1;
    }
    int code = 0;
    if (cli.show_help) {
        pl_cli_usage(argv[0]);
    } else if ((code = refuse_conflicts(&cli)) == 0 && (code = refuse_node_misuse(&cli)) == 0) {
        if (cli.show_version) print_version();
        int only_version = cli.show_version && !cli.script && !cli.nactions &&
                           !cli.interactive;
        if (!only_version) code = run_arbiter(&cli, argc, argv);
    }
    pl_cli_free(&cli);
    return code;
}
