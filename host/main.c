/* main.c: the pulsar-lua executable's entry point.
 *
 * Parses the command line (cli.c), answers -h and -v, refuses what cannot be
 * done yet, and hands everything else to the arbiter's host (host.c). */
#include <stdio.h>
#include <string.h>

#include <lua.h>
#include <uv.h>

#include "cli.h"
#include "host.h"
#include "spawn.h"

static void print_version(void) {
    printf("pulsar-lua %s (%s, libuv %s)\n", PULSAR_VERSION, LUA_RELEASE,
           uv_version_string());
    fflush(stdout);
}

/* Options whose machinery belongs to later parts of the runtime: refused
 * with a clear message rather than silently ignored. */
static int refuse_unavailable(const pl_cli *cli) {
    if (cli->cfg.attach) {
        fprintf(stderr, "pulsar-lua: --attach is not available yet\n");
        return 1;
    }
    if (cli->cfg.mailbox && strncmp(cli->cfg.mailbox, "unix:", 5) != 0) {
        fprintf(stderr, "pulsar-lua: --mailbox %s: a TCP mailbox is not "
                        "available yet (use unix:PATH)\n", cli->cfg.mailbox);
        return 1;
    }
    return 0;
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
    } else if ((code = refuse_unavailable(&cli)) == 0) {
        if (cli.show_version) print_version();
        int only_version = cli.show_version && !cli.script && !cli.nactions &&
                           !cli.interactive;
        if (!only_version) code = pl_host_main(&cli, argc, argv);
    }
    pl_cli_free(&cli);
    return code;
}
