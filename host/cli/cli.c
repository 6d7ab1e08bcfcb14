/* cli.c: parses pulsar-lua's command line (see cli.h and docs/API.md §1).
 *
 * It follows lua.c: options come first, the first argument that is not an
 * option is the script and everything after it belongs to the script. Long
 * options take their value as "--name value" or "--name=value"; -e and -l
 * also take it glued on ("-eprint(1)"), as lua does. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sockaddr.h"

typedef struct option_spec {
    const char *short_name; /* NULL when none */
    const char *long_name;  /* NULL when none */
    int takes_value;
    int (*apply)(pl_cli *cli, const char *value, char *err, size_t errlen);
} option_spec;

/* Reports a refused option through the project's one error formatter and
 * gives the parser's failure value. */
#define fail(err, errlen, ...) (pl_set_err((err), (errlen), __VA_ARGS__), -1)

static int parse_number(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static int apply_e(pl_cli *c, const char *v, char *e, size_t n) {
    (void)e, (void)n;
    c->actions[c->nactions++] = (pl_action){'e', v};
    return 0;
}

static int apply_l(pl_cli *c, const char *v, char *e, size_t n) {
    (void)e, (void)n;
    c->actions[c->nactions++] = (pl_action){'l', v};
    return 0;
}

static int apply_i(pl_cli *c, const char *v, char *e, size_t n) {
    (void)v, (void)e, (void)n;
    c->interactive = 1;
    return 0;
}

static int apply_v(pl_cli *c, const char *v, char *e, size_t n) {
    (void)v, (void)e, (void)n;
    c->show_version = 1;
    return 0;
}

static int apply_h(pl_cli *c, const char *v, char *e, size_t n) {
    (void)v, (void)e, (void)n;
    c->show_help = 1;
    return 0;
}

static int apply_E(pl_cli *c, const char *v, char *e, size_t n) {
    (void)v, (void)e, (void)n;
    c->ignore_env = 1;
    return 0;
}

static int apply_W(pl_cli *c, const char *v, char *e, size_t n) {
    (void)v, (void)e, (void)n;
    c->warnings = 1;
    return 0;
}

static int apply_workers(pl_cli *c, const char *v, char *e, size_t n) {
    char *end;
    errno = 0;
    long w = strtol(v, &end, 10);
    if (errno || end == v || *end || w < 0 || w > 100000)
        return fail(e, n, "--workers takes a whole number from 0, not '%s'", v);
    c->cfg.workers = (int)w;
    return 0;
}

static int apply_concurrency(pl_cli *c, const char *v, char *e, size_t n) {
    if (strcmp(v, "process") != 0 && strcmp(v, "thread") != 0)
        return fail(e, n, "--concurrency takes 'process' or 'thread', not '%s'", v);
    c->cfg.concurrency = v;
    return 0;
}

static int apply_timeout(pl_cli *c, const char *v, char *e, size_t n) {
    double t;
    if (parse_number(v, &t) || t <= 0)
        return fail(e, n, "--timeout takes a number of seconds above 0, not '%s'", v);
    c->cfg.timeout = t;
    return 0;
}

static int apply_exit_timeout(pl_cli *c, const char *v, char *e, size_t n) {
    double t;
    if (parse_number(v, &t) || t < 0)
        return fail(e, n, "--exit-timeout takes a number of seconds from 0, not '%s'", v);
    c->cfg.exit_timeout = t;
    return 0;
}

/* Addresses are checked by the parser that will read them (sockaddr.h),
 * so that a bad one is refused here, in one line, before anything starts. */
static int check_address(const char *opt, const char *v, char *e, size_t n) {
    char why[400];
    pl_address a;
    if (pl_address_parse(v, &a, why, sizeof why) != 0)
        return fail(e, n, "%s: %s", opt, why);
    return 0;
}

static int apply_address(const char *opt, const char **slot, const char *v,
                         char *e, size_t n) {
    if (check_address(opt, v, e, n) != 0) return -1;
    *slot = v;
    return 0;
}

/* --bind may list several addresses, as a server's bind does (net.lua). */
static int apply_bind(pl_cli *c, const char *v, char *e, size_t n) {
    char item[PL_SOCKADDR_NAME_MAX + PL_ADDRESS_HOST_MAX];
    for (const char *p = v;; p++) {
        size_t len = strcspn(p, ",");
        while (len > 0 && (*p == ' ' || *p == '\t')) p++, len--;
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t')) len--;
        snprintf(item, sizeof item, "%.*s", (int)len, p);
        if (check_address("--bind", item, e, n) != 0) return -1;
        p += strcspn(p, ",");
        if (!*p) break;
    }
    c->cfg.bind = v;
    return 0;
}

static int apply_mailbox(pl_cli *c, const char *v, char *e, size_t n) {
    return apply_address("--mailbox", &c->cfg.mailbox, v, e, n);
}

static int apply_attach(pl_cli *c, const char *v, char *e, size_t n) {
    return apply_address("--attach", &c->cfg.attach, v, e, n);
}

/* A browser opens the observer: TCP only. */
static int apply_observer(pl_cli *c, const char *v, char *e, size_t n) {
    if (strncmp(v, "unix:", 5) == 0)
        return fail(e, n, "--observer takes HOST:PORT (a browser opens it), not '%s'", v);
    return apply_address("--observer", &c->cfg.observer, v, e, n);
}

/* A node name is part of every aid on it ("aid@name") and of targets
 * ("worker@name"): letters, digits, '-', '_' and '.', no '@'. */
static int apply_node(pl_cli *c, const char *v, char *e, size_t n) {
    size_t len = strlen(v);
    if (len == 0 || len > 64 || strspn(v, "abcdefghijklmnopqrstuvwxyz"
                                          "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                          "0123456789-_.") != len)
        return fail(e, n, "--node takes a name of 1 to 64 letters, digits, "
                          "'-', '_' or '.', not '%s'", v);
    c->cfg.node = v;
    return 0;
}

/* --join lists the TCP mailboxes of running nodes. */
static int apply_join(pl_cli *c, const char *v, char *e, size_t n) {
    char item[PL_SOCKADDR_NAME_MAX + PL_ADDRESS_HOST_MAX];
    for (const char *p = v;; p++) {
        size_t len = strcspn(p, ",");
        snprintf(item, sizeof item, "%.*s", (int)len, p);
        if (strncmp(item, "unix:", 5) == 0)
            return fail(e, n, "--join takes the HOST:PORT of a node's mailbox, not '%s'", item);
        if (check_address("--join", item, e, n) != 0) return -1;
        p += len;
        if (!*p) break;
    }
    c->cfg.join = v;
    return 0;
}

static int apply_cluster(pl_cli *c, const char *v, char *e, size_t n) {
    if (strncmp(v, "redis://", 8) != 0 || !v[8])
        return fail(e, n, "--cluster takes redis://HOST:PORT[/PREFIX], not '%s'", v);
    c->cfg.cluster = v;
    return 0;
}

static int apply_node_timeout(pl_cli *c, const char *v, char *e, size_t n) {
    double t;
    if (parse_number(v, &t) || t <= 0)
        return fail(e, n, "--node-timeout takes a number of seconds above 0, not '%s'", v);
    c->cfg.node_timeout = t;
    return 0;
}

static int apply_log_level(pl_cli *c, const char *v, char *e, size_t n) {
    static const char *const levels[] = {"debug", "info", "warning", "error",
                                         "critical", "none"};
    for (size_t i = 0; i < sizeof levels / sizeof *levels; i++)
        if (strcmp(v, levels[i]) == 0) {
            c->cfg.log_level = levels[i];
            return 0;
        }
    return fail(e, n,
                "--log-level takes debug, info, warning, error, critical or "
                "none, not '%s'", v);
}

static int apply_cookie_file(pl_cli *c, const char *v, char *e, size_t n) {
    if (!*v) return fail(e, n, "--cookie-file needs a path");
    c->cfg.cookie_file = v;
    return 0;
}

static int apply_pid_file(pl_cli *c, const char *v, char *e, size_t n) {
    if (!*v) return fail(e, n, "--pid-file needs a path");
    c->cfg.pid_file = v;
    return 0;
}

static const option_spec options[] = {
    {"-e", NULL, 1, apply_e},
    {"-l", NULL, 1, apply_l},
    {"-i", NULL, 0, apply_i},
    {"-E", NULL, 0, apply_E},
    {"-W", NULL, 0, apply_W},
    {"-v", "--version", 0, apply_v},
    {"-h", "--help", 0, apply_h},
    {"-w", "--workers", 1, apply_workers},
    {NULL, "--concurrency", 1, apply_concurrency},
    {"-t", "--timeout", 1, apply_timeout},
    {NULL, "--exit-timeout", 1, apply_exit_timeout},
    {"-b", "--bind", 1, apply_bind},
    {NULL, "--mailbox", 1, apply_mailbox},
    {NULL, "--log-level", 1, apply_log_level},
    {NULL, "--pid-file", 1, apply_pid_file},
    {NULL, "--attach", 1, apply_attach},
    {NULL, "--cookie-file", 1, apply_cookie_file},
    {NULL, "--observer", 1, apply_observer},
    {NULL, "--node", 1, apply_node},
    {NULL, "--join", 1, apply_join},
    {NULL, "--cluster", 1, apply_cluster},
    {NULL, "--node-timeout", 1, apply_node_timeout},
};

/* Finds the spec for argv[i]; sets *glued to a value glued onto the option
 * ("-eSTAT", "--name=value"), else NULL. */
static const option_spec *find_option(const char *arg, const char **glued) {
    *glued = NULL;
    for (size_t i = 0; i < sizeof options / sizeof *options; i++) {
        const option_spec *o = &options[i];
        if (o->long_name) {
            size_t n = strlen(o->long_name);
            if (strncmp(arg, o->long_name, n) == 0) {
                if (arg[n] == 0) return o;
                if (arg[n] == '=' && o->takes_value) {
                    *glued = arg + n + 1;
                    return o;
                }
            }
        }
        if (o->short_name && strncmp(arg, o->short_name, 2) == 0) {
            if (arg[2] == 0) return o;
            if (o->takes_value && (o->short_name[1] == 'e' || o->short_name[1] == 'l')) {
                *glued = arg + 2;
                return o;
            }
        }
    }
    return NULL;
}

static void set_defaults(pl_cli *cli) {
    memset(cli, 0, sizeof *cli);
    cli->cfg.workers = 1;
    cli->cfg.concurrency = "process";
    cli->cfg.timeout = 30;
    cli->cfg.exit_timeout = 3;
    cli->cfg.node_timeout = 10;
    cli->cfg.log_level = "info";
}

int pl_cli_parse(int argc, char **argv, pl_cli *cli, char *err, size_t errlen) {
    set_defaults(cli);
    cli->actions = calloc((size_t)argc + 1, sizeof *cli->actions);
    if (!cli->actions) return fail(err, errlen, "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--") == 0) {
            if (i + 1 < argc) cli->script = i + 1;
            return 0;
        }
        if (arg[0] != '-' || arg[1] == 0) { /* the script, or "-" for stdin */
            cli->script = i;
            return 0;
        }
        const char *value;
        const option_spec *o = find_option(arg, &value);
        if (!o)
            return fail(err, errlen, "unknown option '%s' (see pulsar-lua -h)", arg);
        if (o->takes_value && !value) {
            if (i + 1 >= argc)
                return fail(err, errlen, "option '%s' needs a value", arg);
            value = argv[++i];
        }
        if (o->apply(cli, value, err, errlen) != 0) return -1;
    }
    return 0;
}

void pl_cli_free(pl_cli *cli) {
    free(cli->actions);
    cli->actions = NULL;
}

void pl_cli_usage(const char *progname) {
    fprintf(stdout,
        "usage: %s [options] [script [args...]]\n"
        "Runs a Lua 5.4 script in the arbiter of an actor system.\n"
        "  -e STAT               run a Lua statement\n"
        "  -l NAME               require module NAME into global NAME\n"
        "  -l G=NAME             require module NAME into global G\n"
        "  -i                    enter the interactive REPL after the script\n"
        "  -E                    ignore LUA_INIT, LUA_PATH and the like\n"
        "  -W                    turn warnings on\n"
        "  -v, --version         print the pulsar-lua, Lua and libuv versions\n"
        "  -h, --help            show this help\n"
        "  -w, --workers N       default workers for applications (1)\n"
        "  --concurrency KIND    default actor kind: process or thread (process)\n"
        "  -t, --timeout S       notify timeout in seconds (30)\n"
        "  --exit-timeout S      graceful stop budget in seconds (3)\n"
        "  -b, --bind ADDR       default bind address: HOST:PORT, :PORT, unix:PATH\n"
        "  --mailbox ADDR        where the arbiter's mailbox listens: unix:PATH, or\n"
        "                        HOST:PORT to listen on TCP too, for consoles and\n"
        "                        actors that know the cookie (default: a Unix\n"
        "                        socket in a private directory)\n"
        "  --log-level LEVEL     debug, info, warning, error, critical, none (info)\n"
        "  --pid-file PATH       write the arbiter's pid\n"
        "  --attach ADDR         open a REPL inside the running arbiter at ADDR\n"
        "                        (unix:PATH, or HOST:PORT with its cookie)\n"
        "  --cookie-file PATH    the TCP mailbox's shared secret\n"
        "                        (default: ~/.pulsar-lua/cookie, made if missing)\n"
        "  --observer ADDR       serve the web observer at HOST:PORT (port 0: any);\n"
        "                        its URL, with the token, is printed at start\n"
        "  --node NAME           run as node NAME of a cluster (needs a TCP --mailbox)\n"
        "  --join ADDR[,ADDR]    link to the nodes at these TCP mailboxes, and to\n"
        "                        every node they know\n"
        "  --cluster URL         keep membership in Redis: redis://HOST:PORT[/PREFIX]\n"
        "  --node-timeout S      silence after which a node is down (10)\n"
        "  --                    stop handling options\n"
        "  -                     run stdin as the script\n"
        "With no script and a terminal on stdin, the REPL opens.\n",
        progname);
}
