/* syncctl.c - the syncctl command-line tool: global options, the command
 * table and the offline commands.
 *
 * `syncctl [--server URL] [--token T] COMMAND ...` (DESIGN.md section 10);
 * `--token-file FILE` reads the token from a file instead, so that it stays
 * out of the process listing.
 * The offline commands work on files without a node: `diff A B [--merge]`
 * prints the RFC 6902 (or RFC 7396) patch from A to B, and `apply DOC
 * PATCH [--merge]` prints DOC with PATCH applied, and `hash FILE...`
 * prints each file's content hash (doc/HASH.md), the "h" a node lists
 * for that body. Output is canonical JSON, or one hash a line, on stdout;
 * errors are one line on stderr with exit status 1, usage errors exit 2.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "syncd/patch.h"

#include "config.h"
#include "syncctl.h"

#define DEFAULT_SERVER "http://127.0.0.1:7070"

int syncctl_fail(const char *fmt, ...)
{
    va_list ap;

    fputs("syncctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return SYNCCTL_FAILED;
}

int syncctl_usage(const syncctl_cmd_t *cmd)
{
    fprintf(stderr, "syncctl: usage: syncctl %s %s\n", cmd->name, cmd->usage);
    return SYNCCTL_USAGE;
}

/* Reads all of fd into *buf (malloc'd, owned by the caller) and *len,
 * starting with room for hint bytes (a regular file's size, so that one
 * read() takes it whole); a read error ends the input as jansson's file
 * stream does, so that it reports what it parsed so far. A file that
 * shrinks or grows meanwhile is read as it is then: no mapping, so no
 * SIGBUS. Returns 0, or -1 when out of memory. */
static int read_all(char **buf, size_t *len, int fd, size_t hint)
{
    size_t cap = hint + 1 > 64 * 1024 ? hint + 1 : 64 * 1024, n = 0;
    char *b = malloc(cap), *grown;
    ssize_t got;

    if (b == NULL)
        return -1;
    for (;;) {
        if (n == cap) {
            if ((grown = realloc(b, cap * 2)) == NULL) {
                free(b);
                return -1;
            }
            b = grown;
            cap *= 2;
        }
        got = read(fd, b + n, cap - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        n += (size_t)got;
    }
    *buf = b;
    *len = n;
    return 0;
}

/* Parses the text of fd, read whole from where it stands, into *out as
 * syncd_json_loadb() does. Returns 0 or -1 with jerr set. */
static int parse_fd(json_t **out, int fd, json_error_t *jerr)
{
    struct stat st;
    size_t len, hint = 0;
    char *buf;
    int rc;

    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
        hint = (size_t)st.st_size;
    if (read_all(&buf, &len, fd, hint) < 0) {
        snprintf(jerr->text, sizeof(jerr->text), "out of memory");
        jerr->line = jerr->column = -1;
        return -1;
    }
    rc = syncd_json_loadb(out, buf, len, jerr);
    free(buf);
    return rc < 0 ? -1 : 0;
}

/* Loads the JSON file at path ("-": stdin) into *out (a new reference);
 * on failure *out is NULL and jerr holds what json_load_file() would have
 * said. Returns 0 or -1. */
static int load_json(json_t **out, const char *path, json_error_t *jerr)
{
    int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY);
    int rc;

    *out = NULL;
    if (fd < 0) {
        snprintf(jerr->text, sizeof(jerr->text), "unable to open %s: %s", path,
                 strerror(errno));
        jerr->line = jerr->column = -1;
        return -1;
    }
    rc = parse_fd(out, fd, jerr);
    if (fd != STDIN_FILENO)
        close(fd);
    return rc;
}

/* Reports a failed load_json() of path through syncctl_fail(). */
static int load_failed(const char *path, const json_error_t *jerr)
{
    return syncctl_fail("%s:%d:%d: %s", path, jerr->line, jerr->column,
                        jerr->text);
}

int syncctl_load_json(json_t **out, const char *path)
{
    json_error_t jerr;

    if (load_json(out, path, &jerr) < 0)
        return load_failed(path, &jerr);
    return SYNCCTL_OK;
}

int syncctl_print_json(const json_t *v)
{
    size_t len;
    char *text = syncd_json_canonical(v, &len);
    int failed;

    if (text == NULL)
        return syncctl_fail("cannot serialize the result (out of memory or "
                            "nested deeper than %d)",
                            SYNCD_PATCH_MAX_DEPTH);
    failed = fwrite(text, 1, len, stdout) != len || fputc('\n', stdout) == EOF;
    free(text);
    return failed ? syncctl_fail("cannot write the result: stdout") : 0;
}

typedef int (*patch_fn)(json_t **out, const json_t *first, const json_t *second,
                        syncd_error_t *err);

/* Splits the arguments of diff/apply: two files and an optional --merge. */
static int two_files(const char *files[2], int *merge, int argc, char **argv)
{
    int n = 0;

    *merge = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--merge") == 0)
            *merge = 1;
        else if (argv[i][0] == '-' && argv[i][1] != '\0')
            return -1;
        else if (n < 2)
            files[n++] = argv[i];
        else
            return -1;
    }
    return n == 2 ? 0 : -1;
}

/* One input of diff or apply: its path, and once loaded its document (a
 * new reference, or NULL with the error in err). */
typedef struct {
    const char *path;
    json_t *doc;
    json_error_t err;
} input_t;

/* Thread body of on_both() in load_inputs(): loads one input_t. */
static void *load_input(void *arg)
{
    input_t *in = arg;

    load_json(&in->doc, in->path, &in->err);
    return NULL;
}

/* Runs fn on both inputs: the second in a thread of its own when
 * threaded and a thread can be made, else after the first. */
static void on_both(void *(*fn)(void *), input_t in[2], int threaded)
{
    pthread_t second;

    threaded = threaded && pthread_create(&second, NULL, fn, &in[1]) == 0;
    fn(&in[0]);
    if (threaded)
        pthread_join(second, NULL);
    else
        fn(&in[1]);
}

/* Loads both inputs, in two threads unless both read stdin (then one after
 * the other, as the second gets what the first left). Reports the error of
 * the first input that failed, as loading them in turn would, and returns
 * SYNCCTL_OK or SYNCCTL_FAILED. */
static int load_inputs(input_t in[2])
{
    on_both(load_input, in,
            strcmp(in[0].path, "-") != 0 || strcmp(in[1].path, "-") != 0);
    for (int i = 0; i < 2; i++) {
        if (in[i].doc == NULL)
            return load_failed(in[i].path, &in[i].err);
    }
    return SYNCCTL_OK;
}

/* Thread body of on_both() in run_on_files(): drops one input's document
 * (freeing a large document's values takes about as long as building
 * them, so the two are freed in parallel). */
static void *free_input(void *arg)
{
    input_t *in = arg;

    json_decref(in->doc);
    in->doc = NULL;
    return NULL;
}

/* Runs diff or apply: loads the two files of argv, runs json_fn on them
 * (merge_fn with --merge) and prints the result; errors name the command
 * and the second file. */
static int run_on_files(const syncctl_cmd_t *self, patch_fn json_fn,
                        patch_fn merge_fn, int argc, char **argv)
{
    input_t in[2] = {{0}, {0}};
    const char *files[2];
    json_t *out = NULL;
    syncd_error_t err;
    int merge, rc;

    if (two_files(files, &merge, argc, argv) < 0)
        return syncctl_usage(self);
    in[0].path = files[0];
    in[1].path = files[1];
    rc = load_inputs(in);
    if (rc == SYNCCTL_OK) {
        syncd_error_clear(&err);
        if ((merge ? merge_fn : json_fn)(&out, in[0].doc, in[1].doc, &err) < 0)
            rc = syncctl_fail("%s %s: %s", self->name, files[1], err.message);
        else
            rc = syncctl_print_json(out);
    }
    on_both(free_input, in, 1);
    json_decref(out);
    return rc;
}

static int cmd_diff(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                    int argc, char **argv)
{
    (void)opts;
    return run_on_files(self, syncd_patch_diff, syncd_merge_diff, argc, argv);
}

static int cmd_apply(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                     int argc, char **argv)
{
    (void)opts;
    return run_on_files(self, syncd_patch_apply, syncd_merge_apply, argc, argv);
}

/* Prints the content hash of each file of argv ("-": stdin), one a line. */
static int cmd_hash(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                    int argc, char **argv)
{
    (void)opts;
    if (argc < 1)
        return syncctl_usage(self);
    for (int i = 0; i < argc; i++) {
        char hex[SYNCD_HASH_HEX_LEN + 1];
        json_t *v = NULL;
        syncd_error_t err;
        int rc;

        if (argv[i][0] == '-' && argv[i][1] != '\0')
            return syncctl_usage(self);
        rc = syncctl_load_json(&v, argv[i]);
        if (rc != SYNCCTL_OK)
            return rc;
        syncd_error_clear(&err);
        rc = syncd_json_hash(hex, v, &err);
        json_decref(v);
        if (rc < 0)
            return syncctl_fail("hash %s: %s", argv[i], err.message);
        if (printf("%s\n", hex) < 0)
            return syncctl_fail("cannot write the result: stdout");
    }
    return SYNCCTL_OK;
}

static const syncctl_cmd_t commands[] = {
    {"diff", "A.json B.json [--merge]", cmd_diff},
    {"apply", "DOC.json PATCH.json [--merge]", cmd_apply},
    {"hash", "FILE... ('-': stdin)", cmd_hash},
    {"volume", "init|scan|push|verify ... (syncctl volume --help)",
     syncctl_cmd_volume},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

/* Returns the command called name, from either table, or NULL. */
static const syncctl_cmd_t *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (strcmp(name, commands[i].name) == 0)
            return &commands[i];
    }
    for (size_t i = 0; i < syncctl_http_ncommands; i++) {
        if (strcmp(name, syncctl_http_commands[i].name) == 0)
            return &syncctl_http_commands[i];
    }
    return NULL;
}

static void print_commands(FILE *to, const syncctl_cmd_t *cmds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fprintf(to, "  %s %s\n", cmds[i].name, cmds[i].usage);
}

static void print_usage(FILE *to)
{
    fputs("usage: syncctl [--server URL] [--token T | --token-file FILE] "
          "COMMAND ...\n"
          "commands:\n",
          to);
    print_commands(to, commands, NCOMMANDS);
    print_commands(to, syncctl_http_commands, syncctl_http_ncommands);
}

int main(int argc, char **argv)
{
    syncctl_opts_t opts = {getenv("SYNCD_SERVER"), NULL};
    const syncctl_cmd_t *cmd;
    const char *token_file = NULL;
    char *token = NULL;
    syncd_error_t err;
    int i = 1, rc;

    if (opts.server == NULL || opts.server[0] == '\0')
        opts.server = DEFAULT_SERVER;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_usage(stdout);
            return SYNCCTL_OK;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("syncctl %s\n", SYNCD_VERSION);
            return SYNCCTL_OK;
        }
        if (i + 1 < argc && strcmp(argv[i], "--server") == 0) {
            opts.server = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--token") == 0) {
            opts.token = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--token-file") == 0) {
            token_file = argv[++i];
        } else {
            fprintf(stderr, "syncctl: bad option '%s'\n", argv[i]);
            print_usage(stderr);
            return SYNCCTL_USAGE;
        }
    }
    if (i >= argc) {
        print_usage(stderr);
        return SYNCCTL_USAGE;
    }
    cmd = find_command(argv[i]);
    if (cmd == NULL) {
        fprintf(stderr, "syncctl: unknown command '%s'\n", argv[i]);
        print_usage(stderr);
        return SYNCCTL_USAGE;
    }
    if (token_file != NULL) {
        syncd_error_clear(&err);
        if (opts.token != NULL) {
            fputs("syncctl: --token and --token-file: give one of them\n",
                  stderr);
            return SYNCCTL_USAGE;
        }
        if (syncd_config_read_secret(&token, token_file, "--token-file",
                                     &err) != 0)
            return syncctl_fail("%s", err.message);
        opts.token = token;
    }
    rc = cmd->run(cmd, &opts, argc - i - 1, argv + i + 1);
    free(token);
    return rc;
}
