/* syncctl.h - the command table of the syncctl CLI.
 *
 * syncctl.c owns main(), the global options and the offline commands
 * (diff, apply). A command is one syncctl_cmd_t entry in the table of
 * syncctl.c; commands that talk to a node (get, put, patch, ...) live in
 * their own file and are listed there by name. Every command prints JSON on
 * stdout and reports failure through the helpers below: one line on
 * stderr, exit status 1 (2 for usage errors).
 */
#ifndef SYNCD_SYNCCTL_H
#define SYNCD_SYNCCTL_H

#include <jansson.h>

/* Exit statuses of syncctl (DESIGN.md section 10). */
enum { SYNCCTL_OK = 0, SYNCCTL_FAILED = 1, SYNCCTL_USAGE = 2 };

/* Global options, parsed before the command name. */
typedef struct syncctl_opts {
    const char *server; /* --server, $SYNCD_SERVER, or the default URL */
    const char *token;  /* --token, the content of --token-file, or NULL */
} syncctl_opts_t;

/* One command: `run` gets its own entry, the global options and the
 * arguments after the command name, and returns a SYNCCTL_* exit status. */
typedef struct syncctl_cmd syncctl_cmd_t;
struct syncctl_cmd {
    const char *name;
    const char *usage; /* arguments, for the usage text */
    int (*run)(const syncctl_cmd_t *self, const syncctl_opts_t *opts, int argc,
               char **argv);
};

/* The commands that talk to a node over HTTP (syncctl_http.c). */
extern const syncctl_cmd_t syncctl_http_commands[];
extern const size_t syncctl_http_ncommands;

/* Returns the malloc'd URL of coll's route `what` on opts->server
 * ("<server>/v1/collections/<coll>/<what><query>", coll percent-encoded,
 * query appended as is), or NULL when out of memory. */
char *syncctl_url(const syncctl_opts_t *opts, const char *coll,
                  const char *what, const char *query);

/* Appends "?name=<value>" (or "&...") to q (size bytes), value
 * percent-encoded. */
void syncctl_add_query(char *q, size_t size, const char *name,
                       const char *value);

/* Sends method to url with opts' token and no body; *status gets the HTTP
 * status and *out the answer parsed as JSON (a new reference; NULL when it
 * is none). Returns SYNCCTL_OK when the server answered (any status), else
 * reports the failure naming url and returns SYNCCTL_FAILED. */
int syncctl_call_json(const syncctl_opts_t *opts, const char *method,
                      const char *url, long *status, json_t **out);

/* The if_match of syncctl_call_doc() that sends If-None-Match: * instead
 * (a create that fails with 409 when the document exists). */
#define SYNCCTL_CREATE_ONLY "*"

/* Sends method to the document coll/id with body (NULL: none) of
 * content_type, and If-Match: "<if_match>" unless if_match is NULL
 * (SYNCCTL_CREATE_ONLY: If-None-Match: *); a
 * write goes with an idempotency key and is retried on connection errors.
 * *status gets the HTTP status, *version the ETag's version (0: none) and
 * *out the answer as JSON (a new reference, or NULL). Returns SYNCCTL_OK
 * when the server answered (any status), else reports the failure and
 * returns SYNCCTL_FAILED. */
int syncctl_call_doc(const syncctl_opts_t *opts, const char *method,
                     const char *coll, const char *id, const char *content_type,
                     const char *body, const char *if_match, long *status,
                     long long *version, json_t **out);

/* `syncctl volume init|scan|push|verify ...` (syncctl_volume.c). */
int syncctl_cmd_volume(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                       int argc, char **argv);

/* `syncctl verify C [--nodes URL,...]` (syncctl_verify.c). */
int syncctl_cmd_verify(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                       int argc, char **argv);

/* `syncctl backup [C...] --out FILE [--gzip]`, `syncctl restore FILE
 * [--mode=empty|overwrite]` and `syncctl checkpoint DIR`
 * (syncctl_backup.c). */
int syncctl_cmd_backup(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                       int argc, char **argv);
int syncctl_cmd_restore(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                        int argc, char **argv);
int syncctl_cmd_checkpoint(const syncctl_cmd_t *self,
                           const syncctl_opts_t *opts, int argc, char **argv);

/* Prints "syncctl: <message>" on stderr and returns SYNCCTL_FAILED. */
int syncctl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints "syncctl: usage: syncctl <name> <usage>" on stderr and returns
 * SYNCCTL_USAGE. */
int syncctl_usage(const syncctl_cmd_t *cmd);

/* Loads the JSON file at path ("-" reads stdin) into *out (a new
 * reference); on failure reports the file, line and column through
 * syncctl_fail() and returns SYNCCTL_FAILED. */
int syncctl_load_json(json_t **out, const char *path);

/* Prints v on stdout in canonical form followed by a newline; returns
 * SYNCCTL_OK or SYNCCTL_FAILED. */
int syncctl_print_json(const json_t *v);

#endif
