/* embed_lua.c: a build-time tool that compiles the pulsar Lua library to
 * bytecode and writes it out as C arrays, so that the executable carries
 * its library in .rodata and a new VM loads modules without reading or
 * parsing a file (host/core/modules.c installs them).
 *
 *   embed_lua OUT.c STRIP LUADIR pulsar/a.lua pulsar/b/init.lua ...
 *
 * Each FILE is relative to LUADIR; its module name is its path with '/' as
 * '.', without ".lua" and without a trailing ".init" (pulsar/init.lua is
 * "pulsar"). Its chunk name is "@lua/FILE", the file's place in the source
 * tree, so that tracebacks point at it. STRIP 1 drops debug information
 * (line numbers, local and upvalue names, the chunk name); the build uses
 * 0 unless PULSAR_STRIP_LUA (docs/DESIGN.md, "Loading modules", says why). The tool is linked with
 * the same liblua as the executable, so the bytecode always matches it.
 * The modules are written sorted by name: modules.c looks them up by
 * binary search.
 *
 * A FILE ending in .html, .css or .js is an asset (the observer's page):
 * it becomes a module of its path without the extension
 * (pulsar/observer/page.html is "pulsar.observer.page") whose chunk returns
 * the file's text, so that what the executable serves is inside it, never
 * read from disk at run time. The text is wrapped in a long bracket of a
 * level it does not contain; Lua reads its line ends as "\n". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

typedef struct module {
    char *name;
    char *chunkname;
    unsigned char *code;
    size_t size;
} module;

/* lua_dump's writer: appends to the module's code. */
static int append_code(lua_State *L, const void *p, size_t n, void *ud) {
    (void)L;
    module *m = ud;
    unsigned char *grown = realloc(m->code, m->size + n);
    if (!grown) return 1;
    memcpy(grown + m->size, p, n);
    m->code = grown;
    m->size += n;
    return 0;
}

static const char *const asset_extensions[] = {".html", ".css", ".js"};

static int ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), t = strlen(tail);
    return n > t && strcmp(s + n - t, tail) == 0;
}

/* The length of the extension that makes FILE embeddable, else 0. */
static size_t extension_length(const char *file) {
    if (ends_with(file, ".lua")) return 4;
    for (size_t i = 0; i < sizeof asset_extensions / sizeof *asset_extensions; i++)
        if (ends_with(file, asset_extensions[i])) return strlen(asset_extensions[i]);
    return 0;
}

/* "pulsar/apps/init.lua" -> "pulsar.apps"; NULL if not embeddable. */
static char *module_name(const char *file) {
    size_t n = strlen(file), ext = extension_length(file);
    if (ext == 0) return NULL;
    char *name = malloc(n - ext + 1);
    if (!name) return NULL;
    memcpy(name, file, n - ext);
    name[n - ext] = 0;
    for (char *c = name; *c; c++)
        if (*c == '/') *c = '.';
    size_t len = strlen(name);
    if (len > 5 && strcmp(name + len - 5, ".init") == 0) name[len - 5] = 0;
    return name;
}

static char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *text = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0)
        text = malloc((size_t)n + 1);
    if (text && fread(text, 1, (size_t)n, f) != (size_t)n) {
        free(text);
        text = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return text;
}

static int contains(const char *text, size_t size, const char *needle, size_t n) {
    for (size_t i = 0; i + n <= size; i++)
        if (memcmp(text + i, needle, n) == 0) return 1;
    return 0;
}

/* An asset's text as the source of a chunk that returns it:
 * "return [==[\n" TEXT "]==]", with as many '=' as TEXT needs. */
static char *asset_chunk(const char *text, size_t size, size_t *out_size) {
    size_t level = 0;
    char close[64];
    for (;; level++) {
        if (level + 2 >= sizeof close) return NULL;
        close[0] = ']';
        memset(close + 1, '=', level);
        close[level + 1] = ']';
        close[level + 2] = 0;
        if (!contains(text, size, close, level + 2)) break;
    }
    size_t head = 8 + level + 2, total = head + size + level + 2;
    char *chunk = malloc(total);
    if (!chunk) return NULL;
    memcpy(chunk, "return [", 8);
    memset(chunk + 8, '=', level);
    memcpy(chunk + 8 + level, "[\n", 2);
    memcpy(chunk + head, text, size);
    memcpy(chunk + head + size, close, level + 2);
    *out_size = total;
    return chunk;
}

/* Compiles LUADIR/FILE into m; 0, or -1 with the reason on stderr. */
static int compile_module(lua_State *L, const char *dir, const char *file, int strip,
                          module *m) {
    memset(m, 0, sizeof *m);
    m->name = module_name(file);
    size_t plen = strlen(dir) + strlen(file) + 2;
    char *path = malloc(plen);
    m->chunkname = malloc(strlen(file) + 6);
    if (!m->name || !path || !m->chunkname) {
        fprintf(stderr, "embed_lua: %s: out of memory or not a .lua file\n", file);
        free(path);
        return -1;
    }
    snprintf(path, plen, "%s/%s", dir, file);
    snprintf(m->chunkname, strlen(file) + 6, "@lua/%s", file);
    size_t size = 0;
    char *text = read_file(path, &size);
    if (!text) {
        fprintf(stderr, "embed_lua: cannot read %s\n", path);
        free(path);
        return -1;
    }
    free(path);
    if (!ends_with(file, ".lua")) {
        char *chunk = asset_chunk(text, size, &size);
        free(text);
        if (!chunk) {
            fprintf(stderr, "embed_lua: %s: out of memory\n", file);
            return -1;
        }
        text = chunk;
    }
    int rc = luaL_loadbufferx(L, text, size, m->chunkname, "t");
    free(text);
    if (rc != LUA_OK) {
        fprintf(stderr, "embed_lua: %s\n", lua_tostring(L, -1));
        return -1;
    }
    rc = lua_dump(L, append_code, m, strip);
    lua_pop(L, 1);
    if (rc != 0) fprintf(stderr, "embed_lua: %s: out of memory\n", file);
    return rc == 0 ? 0 : -1;
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const module *)a)->name, ((const module *)b)->name);
}

static void write_bytes(FILE *out, const module *m, size_t index) {
    fprintf(out, "static const unsigned char code_%zu[%zu] = {", index, m->size);
    for (size_t i = 0; i < m->size; i++)
        fprintf(out, "%s%u,", i % 20 == 0 ? "\n    " : "", m->code[i]);
    fprintf(out, "\n};\n\n");
}

static int write_modules(const char *path, module *mods, size_t n, int strip) {
    FILE *out = fopen(path, "w");
    if (!out) {
        fprintf(stderr, "embed_lua: cannot write %s\n", path);
        return -1;
    }
    fprintf(out, "/* The pulsar Lua library as %s bytecode, sorted by module name:\n"
                 " * generated at build time by host/tools/embed_lua.c from lua/pulsar/;\n"
                 " * do not edit. */\n#include \"modules.h\"\n\n",
            strip ? "stripped" : "unstripped");
    for (size_t i = 0; i < n; i++) write_bytes(out, &mods[i], i);
    fprintf(out, "const pl_embedded_module pl_embedded_modules[] = {\n");
    for (size_t i = 0; i < n; i++)
        fprintf(out, "    {\"%s\", \"%s\", code_%zu, sizeof code_%zu},\n", mods[i].name,
                mods[i].chunkname, i, i);
    fprintf(out, "};\n\nconst size_t pl_embedded_count = %zu;\n", n);
    int failed = ferror(out);
    if (fclose(out) != 0 || failed) {
        fprintf(stderr, "embed_lua: cannot write %s\n", path);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: embed_lua OUT.c STRIP(0|1) LUADIR FILE.lua|FILE.html...\n");
        return 2;
    }
    int strip = strcmp(argv[2], "1") == 0;
    size_t n = (size_t)argc - 4;
    module *mods = calloc(n, sizeof *mods);
    lua_State *L = luaL_newstate();
    if (!mods || !L) {
        fprintf(stderr, "embed_lua: out of memory\n");
        return 1;
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = compile_module(L, argv[3], argv[4 + i], strip, &mods[i]);
    lua_close(L);
    if (rc == 0) {
        qsort(mods, n, sizeof *mods, by_name);
        for (size_t i = 1; i < n && rc == 0; i++)
            if (strcmp(mods[i - 1].name, mods[i].name) == 0) {
                fprintf(stderr, "embed_lua: two files make module %s\n", mods[i].name);
                rc = -1;
            }
        if (rc == 0) rc = write_modules(argv[1], mods, n, strip);
    }
    for (size_t i = 0; i < n; i++) {
        free(mods[i].name);
        free(mods[i].chunkname);
        free(mods[i].code);
    }
    free(mods);
    return rc == 0 ? 0 : 1;
}
