/* syncctl_volume.c - `syncctl volume init|scan|push|verify` (DESIGN.md
 * sections 9 and 10), over the volume library (include/syncd/volume.h).
 *
 * init and scan work offline. push scans DIR and brings the document
 * C/NAME to match with JSON Patches sent with If-Match (re-read and
 * retried on 409/412), so that a change to one volume is a patch of that
 * volume's members only; unchanged volumes keep their entry, "updated"
 * included. verify scans DIR with every file rehashed and compares it with
 * the synced document; each difference is one line on stderr naming the
 * volume (and the file), and the exit status is 0 only when none is found.
 *
 * push keeps a state file so that its next run rehashes only files (and
 * archives) whose size or mtime changed:
 * $XDG_CACHE_HOME/syncd/volumes/<sha256 of DIR's real path>.json
 * ($HOME/.cache when XDG_CACHE_HOME is unset; no state when neither is).
 * It is written only after a successful push; --rehash ignores it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "syncctl.h"
#include "config.h"
#include "syncd/patch.h"
#include "syncd/volume.h"

/* Edits of push re-read and retried after a conflict. */
#define PUSH_ATTEMPTS 10

static const char usage_text[] =
    "usage: syncctl volume init DIR [--name N]\n"
    "       syncctl volume scan DIR [--name N]\n"
    "       syncctl volume push C NAME DIR [--rehash]\n"
    "       syncctl volume verify C NAME DIR\n"
    "limits (every subcommand):\n"
    "  --max-files N    most files read in one scan (default 1000000)\n"
    "  --max-depth N    most path components below a volume (default 32)\n"
    "  --max-bytes SIZE most bytes read in one scan (default 1TiB)\n"
    "  --threads N      hashing threads (default: one per CPU)\n";

/* Parsed arguments of the volume commands. */
typedef struct vargs {
    const char *pos[4];
    int npos;
    const char *name;
    int rehash;
    syncd_volume_options_t opts;
} vargs_t;

static int parse_count(int64_t *out, const char *text, int64_t max)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(text, &end, 10);
    if (errno != 0 || *end != '\0' || end == text || v < 1 || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Splits argv; returns -1 (after naming the bad flag) on a usage error. */
static int parse_vargs(vargs_t *a, int argc, char **argv)
{
    memset(a, 0, sizeof(*a));
    syncd_volume_options_init(&a->opts);
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t n;
        uint64_t bytes;
        int bad = 0;

        if (strcmp(s, "--rehash") == 0) {
            a->rehash = 1;
            continue;
        }
        if (s[0] != '-') {
            if (a->npos == 4)
                return -1;
            a->pos[a->npos++] = s;
            continue;
        }
        if (val == NULL)
            bad = 1;
        else if (strcmp(s, "--name") == 0)
            a->name = val;
        else if (strcmp(s, "--max-files") == 0)
            bad = parse_count(&a->opts.max_files, val, INT64_MAX);
        else if (strcmp(s, "--max-depth") == 0)
            bad = parse_count(&n, val, 4096) || (a->opts.max_depth = (int)n, 0);
        else if (strcmp(s, "--max-bytes") == 0)
            bad = syncd_config_parse_size(&bytes, val) < 0 ||
                  bytes > INT64_MAX || (a->opts.max_bytes = (int64_t)bytes, 0);
        else if (strcmp(s, "--threads") == 0)
            bad = parse_count(&n, val, 64) || (a->opts.threads = (int)n, 0);
        else
            bad = 1;
        if (bad) {
            fprintf(stderr, "syncctl: volume: bad flag or value: %s%s%s\n", s,
                    val ? " " : "", val ? val : "");
            return -1;
        }
        i++;
    }
    return 0;
}

/* Prints each problem's message on stderr; returns how many. */
static size_t print_problems(const json_t *problems)
{
    size_t i;
    json_t *p;

    json_array_foreach (problems, i, p) {
        fprintf(stderr, "syncctl: %s\n",
                json_string_value(json_object_get(p, "message")));
    }
    return json_array_size(problems);
}

/* Returns the malloc'd path of DIR's state file, creating its folder, or
 * NULL when there is no cache folder. */
static char *state_path(const char *dir)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char *real = realpath(dir, NULL), *path = NULL, base[4096];
    char hex[SYNCD_HASH_HEX_LEN + 1];

    if (real == NULL)
        return NULL;
    if (xdg != NULL && xdg[0] != '\0')
        snprintf(base, sizeof(base), "%s", xdg);
    else if (home != NULL && home[0] != '\0')
        snprintf(base, sizeof(base), "%s/.cache", home);
    else
        goto cleanup;
    syncd_sha256_hex(hex, real, strlen(real));
    /* mkdir -p of <base>/syncd/volumes; a failure shows when writing. */
    mkdir(base, 0700);
    strncat(base, "/syncd", sizeof(base) - strlen(base) - 1);
    mkdir(base, 0700);
    strncat(base, "/volumes", sizeof(base) - strlen(base) - 1);
    mkdir(base, 0700);
    path = malloc(strlen(base) + sizeof(hex) + 8);
    if (path != NULL)
        sprintf(path, "%s/%s.json", base, hex);
cleanup:
    free(real);
    return path;
}

/* Writes the state atomically (a temporary file renamed over it). */
static void save_state(const char *path, const json_t *state)
{
    size_t n = strlen(path) + 8;
    char *tmp = malloc(n);

    if (tmp == NULL)
        return;
    snprintf(tmp, n, "%s.tmp", path);
    if (json_dump_file(state, tmp, JSON_COMPACT) == 0 && rename(tmp, path) == 0)
        tmp[0] = '\0';
    else
        fprintf(stderr, "syncctl: cannot write the volume state %s\n", path);
    if (tmp[0] != '\0')
        unlink(tmp);
    free(tmp);
}

/* Scans a->pos[dir_at] into *doc; problems are printed and fail. */
static int scan(json_t **doc, json_t **cache, const vargs_t *a, int dir_at,
                const char *name)
{
    json_t *problems = NULL;
    syncd_error_t err;
    size_t n;

    syncd_error_clear(&err);
    if (syncd_volume_scan(doc, &problems, cache, a->pos[dir_at], name, &a->opts,
                          &err) < 0)
        return syncctl_fail("volume scan %s: %s", a->pos[dir_at], err.message);
    n = print_problems(problems);
    json_decref(problems);
    if (n == 0)
        return SYNCCTL_OK;
    json_decref(*doc);
    *doc = NULL;
    if (cache != NULL) {
        json_decref(*cache);
        *cache = NULL;
    }
    return syncctl_fail("%s: %zu problem%s", a->pos[dir_at], n,
                        n == 1 ? "" : "s");
}

static int cmd_init(const vargs_t *a)
{
    syncd_error_t err;

    syncd_error_clear(&err);
    if (syncd_volume_init(a->pos[0], a->name, &a->opts, &err) < 0)
        return syncctl_fail("volume init %s: %s", a->pos[0], err.message);
    return SYNCCTL_OK;
}

static int cmd_scan(const vargs_t *a)
{
    json_t *doc = NULL;
    int rc = scan(&doc, NULL, a, 0, a->name);

    if (rc == SYNCCTL_OK)
        rc = syncctl_print_json(doc);
    json_decref(doc);
    return rc;
}

/* Returns 1 when two volume entries agree on everything but "updated". */
static int same_volume(const json_t *a, const json_t *b)
{
    static const char *const keys[] = {"path", "digest", "size", "files"};

    if (!json_is_object(a) || !json_is_object(b))
        return 0;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (!json_equal(json_object_get(a, keys[i]),
                        json_object_get(b, keys[i])))
            return 0;
    }
    return 1;
}

/* Builds the document push wants from current (NULL: none) and the scan:
 * current's entry is kept for every volume that did not change. *changed
 * and *removed get the names of the volumes that differ. */
static json_t *wanted(const json_t *current, const json_t *scanned,
                      json_t *changed, json_t *removed)
{
    json_t *want = current != NULL ? json_deep_copy(current) : json_object();
    json_t *have = json_object_get(current, "volumes");
    json_t *vols = json_object_get(scanned, "volumes"), *v, *keep;
    const char *name;
    void *tmp;

    if (want == NULL)
        return NULL;
    json_object_set(want, "kind", json_object_get(scanned, "kind"));
    json_object_set(want, "name", json_object_get(scanned, "name"));
    keep = json_object_get(want, "volumes");
    if (!json_is_object(keep)) {
        json_object_set_new(want, "volumes", json_object());
        keep = json_object_get(want, "volumes");
    }
    json_object_foreach_safe (keep, tmp, name, v) {
        if (json_object_get(vols, name) == NULL) {
            json_array_append_new(removed, json_string(name));
            json_object_del(keep, name);
        }
    }
    json_object_foreach (vols, name, v) {
        if (!same_volume(json_object_get(have, name), v)) {
            json_array_append_new(changed, json_string(name));
            json_object_set(keep, name, v);
        }
    }
    return want;
}

static int cmd_push(const syncctl_opts_t *opts, vargs_t *a)
{
    const char *coll = a->pos[0], *id = a->pos[1];
    json_t *scanned = NULL, *cache = NULL, *state = NULL, *out = NULL;
    char *spath = state_path(a->pos[2]);
    int rc, done = 0;

    if (spath != NULL && !a->rehash)
        state = json_load_file(spath, 0, NULL);
    a->opts.cache = state;
    rc = scan(&scanned, &cache, a, 2, id);
    for (int attempt = 1; rc == SYNCCTL_OK && !done; attempt++) {
        json_t *current = NULL, *want = NULL, *patch = NULL, *answer = NULL;
        json_t *changed = json_array(), *removed = json_array();
        char *body = NULL, ifm[32];
        long status;
        long long version;
        syncd_error_t err;

        syncd_error_clear(&err);
        rc = syncctl_call_doc(opts, "GET", coll, id, NULL, NULL, NULL, &status,
                              &version, &current);
        if (rc == SYNCCTL_OK && status != 200 && status != 404)
            rc = syncctl_fail("volume push: GET %s/%s: %ld", coll, id, status);
        if (rc == SYNCCTL_OK && status == 404) {
            json_decref(current);
            current = NULL;
        }
        if (rc == SYNCCTL_OK) {
            want = wanted(current, scanned, changed, removed);
            if (want == NULL)
                rc = syncctl_fail("out of memory");
        }
        if (rc == SYNCCTL_OK && current == NULL) {
            /* First push: create the document, only if it still does not
             * exist (409 when another push or writer created it since the
             * GET: then read it again and patch it). */
            body = json_dumps(want, JSON_COMPACT);
            rc = syncctl_call_doc(opts, "PUT", coll, id, "application/json",
                                  body, SYNCCTL_CREATE_ONLY, &status, &version,
                                  &answer);
        } else if (rc == SYNCCTL_OK) {
            if (syncd_patch_diff(&patch, current, want, &err) < 0)
                rc = syncctl_fail("volume push: %s", err.message);
            else if (json_array_size(patch) == 0)
                status = 200;
            else {
                body = json_dumps(patch, JSON_COMPACT);
                snprintf(ifm, sizeof(ifm), "%lld", version);
                rc = syncctl_call_doc(opts, "PATCH", coll, id,
                                      "application/json-patch+json", body, ifm,
                                      &status, &version, &answer);
            }
        }
        if (rc == SYNCCTL_OK && status >= 200 && status <= 299) {
            done = 1;
            out = json_pack("{s:s, s:s, s:I, s:O, s:O}", "coll", coll, "id", id,
                            "v", (json_int_t)version, "changed", changed,
                            "removed", removed);
        } else if (rc == SYNCCTL_OK && ((status != 409 && status != 412) ||
                                        attempt >= PUSH_ATTEMPTS)) {
            const char *msg =
                json_string_value(json_object_get(answer, "message"));

            rc = syncctl_fail("volume push %s/%s: %ld %s", coll, id, status,
                              msg ? msg : "");
        }
        json_decref(current);
        json_decref(want);
        json_decref(patch);
        json_decref(answer);
        json_decref(changed);
        json_decref(removed);
        free(body);
    }
    if (rc == SYNCCTL_OK && spath != NULL)
        save_state(spath, cache);
    if (rc == SYNCCTL_OK)
        rc = syncctl_print_json(out);
    json_decref(out);
    json_decref(scanned);
    json_decref(cache);
    json_decref(state);
    free(spath);
    return rc;
}

static int cmd_verify(const syncctl_opts_t *opts, const vargs_t *a)
{
    const char *coll = a->pos[0], *id = a->pos[1], *dir = a->pos[2];
    json_t *synced = NULL, *local = NULL, *problems = NULL, *diffs = NULL;
    json_t *all = NULL, *d, *out;
    syncd_error_t err;
    long status;
    long long version;
    size_t i, j;
    int rc;

    syncd_error_clear(&err);
    rc = syncctl_call_doc(opts, "GET", coll, id, NULL, NULL, NULL, &status,
                          &version, &synced);
    if (rc == SYNCCTL_OK && status != 200)
        rc = syncctl_fail("volume verify: GET %s/%s: %ld", coll, id, status);
    if (rc == SYNCCTL_OK &&
        syncd_volume_scan(&local, &problems, NULL, dir, id, &a->opts, &err) < 0)
        rc = syncctl_fail("volume verify %s: %s", dir, err.message);
    if (rc == SYNCCTL_OK && syncd_volume_compare(&diffs, local, synced) < 0)
        rc = syncctl_fail("out of memory");
    if (rc == SYNCCTL_OK) {
        all = json_copy(problems);
        /* A volume with problems is left out of the scan: its own
         * problems say why, so its "missing" difference would be noise. */
        json_array_foreach (diffs, i, d) {
            const char *name = json_string_value(json_object_get(d, "volume"));
            json_t *p;
            int named = 0;

            json_array_foreach (problems, j, p) {
                named |= strcmp(name, json_string_value(
                                          json_object_get(p, "volume"))) == 0;
            }
            if (!named)
                json_array_append(all, d);
        }
        print_problems(all);
        out = json_pack("{s:s, s:s, s:I, s:b, s:O}", "coll", coll, "id", id,
                        "v", (json_int_t)version, "ok",
                        json_array_size(all) == 0, "differences", all);
        rc = syncctl_print_json(out);
        json_decref(out);
        if (rc == SYNCCTL_OK && json_array_size(all) > 0)
            rc = SYNCCTL_FAILED;
    }
    json_decref(synced);
    json_decref(local);
    json_decref(problems);
    json_decref(diffs);
    json_decref(all);
    return rc;
}

int syncctl_cmd_volume(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                       int argc, char **argv)
{
    const char *sub = argc > 0 ? argv[0] : "";
    vargs_t a;

    (void)self;
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        fputs(usage_text, stdout);
        return SYNCCTL_OK;
    }
    if (argc < 1 || parse_vargs(&a, argc - 1, argv + 1) < 0)
        goto usage;
    if (strcmp(sub, "init") == 0 && a.npos == 1 && !a.rehash)
        return cmd_init(&a);
    if (strcmp(sub, "scan") == 0 && a.npos == 1 && !a.rehash)
        return cmd_scan(&a);
    if (strcmp(sub, "push") == 0 && a.npos == 3 && a.name == NULL)
        return cmd_push(opts, &a);
    if (strcmp(sub, "verify") == 0 && a.npos == 3 && a.name == NULL &&
        !a.rehash)
        return cmd_verify(opts, &a);
usage:
    fputs(usage_text, stderr);
    return SYNCCTL_USAGE;
}
