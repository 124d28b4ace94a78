/* config.c - the daemon's flags and SYNCD_* environment variables.
 *
 * One table lists every setting: its flag, kind, where it goes in
 * syncd_config_t, its default (as text, parsed like any other value, so
 * the usage text shows exactly what applies) and its help line. Values
 * are applied in three passes over the table: defaults, environment,
 * flags; each pass reports the first bad value naming its source.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    OPT_STRING,
    OPT_DURATION,
    OPT_SIZE,
    OPT_INT,
    OPT_BOOL,
    OPT_LEVEL,
    OPT_CHECK,
} opt_kind_t;

typedef struct option {
    const char *flag;
    opt_kind_t kind;
    size_t offset;
    const char *def; /* NULL: unset */
    const char *help;
} option_t;

#define AT(field) offsetof(syncd_config_t, field)

static const option_t options[] = {
    {"mongo-uri", OPT_STRING, AT(mongo_uri), NULL,
     "MongoDB URI of the store of record (cluster mode)"},
    {"redis-url", OPT_STRING, AT(redis_url), NULL,
     "Redis URL of the change bus (cluster mode)"},
    {"database", OPT_STRING, AT(database), "syncd",
     "MongoDB database and bus key namespace"},
    {"data-dir", OPT_STRING, AT(data_dir), "data",
     "RocksDB store (embedded) or cache (cluster), and the replay log"},
    {"listen", OPT_STRING, AT(listen), "127.0.0.1:7070",
     "HTTP address, host:port"},
    {"node-id", OPT_STRING, AT(node_id), NULL,
     "this node's id (default: local, or host-port in a cluster)"},
    {"secret", OPT_STRING, AT(secret), NULL,
     "cluster secrets, comma-separated: events are signed (HMAC-SHA256) "
     "with the first, accepted under any"},
    {"secret-file", OPT_STRING, AT(secret_file), NULL,
     "file holding --secret (kept out of the process listing)"},
    {"token", OPT_STRING, AT(token), NULL,
     "API bearer tokens, comma-separated: any one is required on every "
     "route but /v1/health"},
    {"token-file", OPT_STRING, AT(token_file), NULL,
     "file holding --token (kept out of the process listing)"},
    {"log-level", OPT_LEVEL, AT(log_level), "info",
     "debug, info, warn or error"},
    {"sync-writes", OPT_BOOL, AT(sync_writes), "true",
     "embedded store: fsync every commit"},
    {"cache-ttl", OPT_DURATION, AT(cache_ttl_ms), "10m",
     "lifetime of a cache entry (embedded: of the in-memory tier's)"},
    {"cache-max-bytes", OPT_SIZE, AT(cache_max_bytes), "256MiB",
     "size bound of the cache (embedded: of the in-memory tier)"},
    {"rocksdb-block-cache", OPT_SIZE, AT(block_cache_bytes), "8MiB",
     "RocksDB block cache of each database (store or node cache, replay "
     "log); 0: none"},
    {"keep-cache", OPT_BOOL, AT(keep_cache), "false",
     "cluster: keep the cache across a clean restart"},
    {"max-retries", OPT_INT, AT(max_retries), "10",
     "compare-and-swap retries of an edit"},
    {"retry-delay", OPT_DURATION, AT(retry_delay_ms), "5ms",
     "first backoff of an edit retry"},
    {"max-retry-delay", OPT_DURATION, AT(max_retry_delay_ms), "1s",
     "backoff cap of an edit retry"},
    {"edit-timeout", OPT_DURATION, AT(edit_timeout_ms), "10s",
     "deadline of an edit loop"},
    {"anti-entropy-interval", OPT_DURATION, AT(anti_entropy_interval_ms), "30s",
     "period of the digest comparison with the store"},
    {"tombstone-ttl", OPT_DURATION, AT(tombstone_ttl_ms), "24h",
     "lifetime of a delete tombstone"},
    {"idempotency-ttl", OPT_DURATION, AT(idempotency_ttl_ms), "10m",
     "how long a write's Idempotency-Key replays its outcome"},
    {"history-len", OPT_INT, AT(history_len), "20",
     "earlier versions each document keeps as reverse patches, for "
     "?version=N, /history and /rollback (0: none; at most 100000)"},
    {"history-max-bytes", OPT_SIZE, AT(history_max_bytes), "1MiB",
     "bound of one document's history (oldest versions go first)"},
    {"max-doc-bytes", OPT_SIZE, AT(max_doc_bytes), "8MiB",
     "largest document body"},
    {"max-event-bytes", OPT_SIZE, AT(max_event_bytes), "1MiB",
     "larger diffs are published as invalidates"},
    {"event-log-len", OPT_INT, AT(event_log_len), "100000",
     "replay log length per collection"},
    {"bus-timeout", OPT_DURATION, AT(bus_timeout_ms), "2s",
     "deadline of every Redis bus command"},
    {"store-timeout", OPT_DURATION, AT(store_timeout_ms), "5s",
     "MongoDB connect, server selection and socket timeout"},
    {"request-timeout", OPT_DURATION, AT(request_timeout_ms), "30s",
     "deadline of a request's store work; past it the answer is 503 timeout"},
    {"slow-request", OPT_DURATION, AT(slow_request_ms), "500ms",
     "a request whose store work takes the thread pool and takes longer is "
     "logged at warn with where its time went (0: none)"},
    {"max-connections", OPT_INT, AT(max_connections), "1024",
     "open HTTP connections; more are refused with 503"},
    {"max-connections-per-client", OPT_INT, AT(max_connections_per_client),
     "64",
     "open HTTP connections from one client address; more get 503 (0: no "
     "limit)"},
    {"max-patch-ops", OPT_INT, AT(max_patch_ops), "10000",
     "operations in one JSON Patch; more are refused with 413 (0: no limit)"},
    {"max-header-bytes", OPT_SIZE, AT(max_header_bytes), "16KiB",
     "request line and headers; more is refused with 431"},
    {"idle-timeout", OPT_DURATION, AT(idle_timeout_ms), "60s",
     "keep-alive idle time, and the longest stall of a request body"},
    {"header-timeout", OPT_DURATION, AT(header_timeout_ms), "10s",
     "time to receive request headers; slower clients get 408"},
    {"body-timeout", OPT_DURATION, AT(body_timeout_ms), "30s",
     "time to receive a request body; slower clients get 408 (0: no limit)"},
    {"watch-buffer-bytes", OPT_SIZE, AT(watch_buffer_bytes), "4MiB",
     "unsent bytes per watcher before it is told to resync"},
    {"watch-buffer-events", OPT_INT, AT(watch_buffer_events), "10000",
     "queued events per watcher before it is told to resync"},
    {"max-collections", OPT_INT, AT(max_collections), "10000",
     "collections a node works on at once; more are refused with 503"},
    {"max-watchers", OPT_INT, AT(max_watchers), "1000",
     "open watch streams of this node; more are refused with 503 (0: no "
     "limit)"},
    {"max-watchers-per-collection", OPT_INT, AT(max_watchers_per_collection),
     "500",
     "open watch streams of one collection; more are refused with 503 (0: "
     "no limit)"},
    {"max-apply-queue", OPT_INT, AT(max_apply_queue), "10000",
     "received events of one collection waiting to be applied; past it the "
     "node resyncs that collection from the store"},
    {"threads", OPT_INT, AT(threads), "16",
     "threads that run store and bus calls (libuv's thread pool, 1 to "
     "1024): a write holds one until its commit is durable"},
    {"heartbeat-interval", OPT_DURATION, AT(heartbeat_interval_ms), "5s",
     "period of this node's heartbeat on the bus (live for three of them)"},
    {"advertise-url", OPT_STRING, AT(advertise_url), NULL,
     "URL other nodes and syncctl reach this node at (default: "
     "http://<listen address>)"},
    {"bookmark-interval", OPT_DURATION, AT(bookmark_interval_ms), "15s",
     "idle time before a watcher gets a bookmark event"},
    {"verify-at-start", OPT_CHECK, AT(verify_at_start), "auto",
     "off, digests (recompute and compare with the clean shutdown's), full "
     "(and rehash every body), or auto: full under 1GiB, else digests"},
    {"repair", OPT_BOOL, AT(repair), "false",
     "embedded: quarantine and delete the documents the start check finds "
     "corrupt, then serve (a bare --repair means true)"},
};

#define NOPTIONS (sizeof(options) / sizeof(options[0]))

/* A unit suffix and what one of it is worth. */
typedef struct unit {
    const char *name;
    double scale;
} unit_t;

/* Parses a non-negative number followed by one of the n units (a bare 0
 * needs none) into *out, scaled; -1 when text does not parse or the total
 * exceeds max. */
static int parse_scaled(double *out, const char *text, const unit_t *units,
                        size_t n, double max)
{
    char *end;
    double v;
    size_t i;

    errno = 0;
    v = strtod(text, &end);
    if (end == text || errno != 0 || v < 0 || !isdigit((unsigned char)*text))
        return -1;
    if (*end == '\0' && v == 0) {
        *out = 0;
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (strcmp(end, units[i].name) == 0) {
            double total = v * units[i].scale;

            if (total > max)
                return -1;
            *out = total;
            return 0;
        }
    }
    return -1;
}

/* Parses a duration with a unit (ms, s, m, h) into *ms; -1 if bad. */
static int parse_duration(int64_t *ms, const char *text)
{
    static const unit_t units[] = {
        {"ms", 1}, {"s", 1e3}, {"m", 60e3}, {"h", 3600e3}};
    double total;

    if (parse_scaled(&total, text, units, sizeof(units) / sizeof(units[0]),
                     9.2e18) < 0)
        return -1;
    *ms = (int64_t)total;
    return 0;
}

int syncd_config_parse_size(uint64_t *bytes, const char *text)
{
    static const unit_t units[] = {{"B", 1},
                                   {"KiB", 1024.0},
                                   {"MiB", 1024.0 * 1024},
                                   {"GiB", 1024.0 * 1024 * 1024},
                                   {"TiB", 1024.0 * 1024 * 1024 * 1024}};
    double total;

    if (parse_scaled(&total, text, units, sizeof(units) / sizeof(units[0]),
                     1.8e19) < 0)
        return -1;
    *bytes = (uint64_t)total;
    return 0;
}

static int parse_bool(int *out, const char *text)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    size_t i;

    for (i = 0; i < 4; i++) {
        if (strcmp(text, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcmp(text, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

static const char *kind_hint(opt_kind_t kind)
{
    switch (kind) {
    case OPT_DURATION:
        return "a duration with a unit (250ms, 2s, 5m, 24h)";
    case OPT_SIZE:
        return "a size with a unit (512KiB, 64MiB, 1GiB)";
    case OPT_INT:
        return "a non-negative integer";
    case OPT_BOOL:
        return "true or false";
    case OPT_LEVEL:
        return "debug, info, warn or error";
    case OPT_CHECK:
        return "off, digests, full or auto";
    default:
        return "a string";
    }
}

/* Stores text as the value of opt in cfg; -1 when it does not parse. */
static int set_value(syncd_config_t *cfg, const option_t *opt, const char *text)
{
    char *field = (char *)cfg + opt->offset;

    switch (opt->kind) {
    case OPT_STRING: {
        char **slot = (char **)field;
        char *copy = strdup(text);

        if (copy == NULL)
            return -1;
        free(*slot);
        *slot = copy;
        return 0;
    }
    case OPT_DURATION:
        return parse_duration((int64_t *)field, text);
    case OPT_SIZE:
        return syncd_config_parse_size((uint64_t *)field, text);
    case OPT_INT: {
        char *end;
        long long v;

        errno = 0;
        v = strtoll(text, &end, 10);
        if (end == text || *end != '\0' || errno != 0 || v < 0)
            return -1;
        *(int64_t *)field = v;
        return 0;
    }
    case OPT_BOOL:
        return parse_bool((int *)field, text);
    case OPT_LEVEL:
        return syncd_log_parse_level((syncd_log_level_t *)field, text);
    case OPT_CHECK:
        return syncd_config_parse_check((syncd_start_check_t *)field, text);
    }
    return -1;
}

int syncd_config_parse_check(syncd_start_check_t *out, const char *text)
{
    static const struct {
        const char *name;
        syncd_start_check_t mode;
    } modes[] = {{"auto", SYNCD_CHECK_AUTO},
                 {"off", SYNCD_CHECK_OFF},
                 {"digests", SYNCD_CHECK_DIGESTS},
                 {"full", SYNCD_CHECK_FULL}};
    size_t i;

    for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        if (strcmp(text, modes[i].name) == 0) {
            *out = modes[i].mode;
            return 0;
        }
    }
    return -1;
}

static const option_t *find_option(const char *flag, size_t len)
{
    size_t i;

    for (i = 0; i < NOPTIONS; i++)
        if (strlen(options[i].flag) == len &&
            strncmp(options[i].flag, flag, len) == 0)
            return &options[i];
    return NULL;
}

/* Writes the environment variable name of flag into buf (SYNCD_X_Y). */
static void env_name(char *buf, size_t size, const char *flag)
{
    size_t n = (size_t)snprintf(buf, size, "SYNCD_");

    for (; *flag != '\0' && n + 1 < size; flag++)
        buf[n++] = *flag == '-' ? '_' : (char)toupper((unsigned char)*flag);
    buf[n] = '\0';
}

static int bad_value(syncd_error_t *err, const char *source,
                     const option_t *opt, const char *text)
{
    if (opt->kind == OPT_STRING) /* only a copy fails; may be a secret */
        return syncd_error_set(err, SYNCD_ENOMEM, "%s: out of memory", source);
    return syncd_error_set(err, SYNCD_EINVAL, "%s: bad value '%s': want %s",
                           source, text, kind_hint(opt->kind));
}

/* Splits cfg->listen into host and port. */
static int split_listen(syncd_config_t *cfg, syncd_error_t *err)
{
    const char *text = cfg->listen;
    const char *colon = strrchr(text, ':');
    const char *host = text;
    size_t hlen;
    char *end;
    long port;

    if (colon == NULL)
        goto bad;
    hlen = (size_t)(colon - text);
    if (hlen >= 2 && text[0] == '[' && text[hlen - 1] == ']') {
        host++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof(cfg->host))
        goto bad;
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || end == colon + 1 || errno != 0 || port < 0 ||
        port > 65535)
        goto bad;
    memcpy(cfg->host, host, hlen);
    cfg->host[hlen] = '\0';
    cfg->port = (int)port;
    return 0;
bad:
    return syncd_error_set(err, SYNCD_EINVAL,
                           "--listen: bad value '%s': want host:port", text);
}

/* Largest secret or token file read. */
#define SECRET_FILE_MAX 65536

int syncd_config_read_secret(char **out, const char *path, const char *flag,
                             syncd_error_t *err)
{
    char *text = NULL;
    size_t n = 0;
    FILE *f = NULL;
    int rc = 0;

    *out = NULL;
    f = fopen(path, "re");
    if (f == NULL) {
        rc = syncd_error_set(err, SYNCD_EINVAL, "%s: cannot read '%s': %s",
                             flag, path, strerror(errno));
        goto cleanup;
    }
    text = malloc(SECRET_FILE_MAX + 1);
    if (text == NULL) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto cleanup;
    }
    n = fread(text, 1, SECRET_FILE_MAX + 1, f);
    if (ferror(f) || n > SECRET_FILE_MAX) {
        rc = syncd_error_set(err, SYNCD_EINVAL,
                             "%s: '%s' is unreadable or longer than %d bytes",
                             flag, path, SECRET_FILE_MAX);
        goto cleanup;
    }
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r'))
        n--;
    text[n] = '\0';
    if (n == 0 || strlen(text) != n) {
        rc = syncd_error_set(err, SYNCD_EINVAL,
                             "%s: '%s' is empty or holds a NUL byte", flag,
                             path);
        goto cleanup;
    }
    *out = strdup(text);
    if (*out == NULL)
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");

cleanup:
    if (text != NULL) {
        memset(text, 0, SECRET_FILE_MAX + 1);
        free(text);
    }
    if (f != NULL)
        fclose(f);
    return rc;
}

/* Checks a comma-separated list of keys (no empty key, no control
 * character); the message names the flag, never the value. */
static int check_key_list(const char *list, const char *flag,
                          syncd_error_t *err)
{
    const char *p;

    if (list == NULL)
        return 0;
    for (p = list; *p != '\0'; p++)
        if (iscntrl((unsigned char)*p))
            return syncd_error_set(err, SYNCD_EINVAL,
                                   "%s: holds a control character", flag);
    if (list[0] == '\0' || list[0] == ',' || strstr(list, ",,") != NULL ||
        list[strlen(list) - 1] == ',')
        return syncd_error_set(err, SYNCD_EINVAL,
                               "%s: empty key in the comma-separated list",
                               flag);
    return 0;
}

/* Sets *value to the content of file when file is set (SYNCD_EINVAL when
 * a value was given as well), then checks the list. */
static int load_key_list(char **value, const char *file, const char *flag,
                         syncd_error_t *err)
{
    char file_flag[64];
    char *text = NULL;
    int rc;

    snprintf(file_flag, sizeof(file_flag), "%s-file", flag);
    if (file != NULL) {
        if (*value != NULL)
            return syncd_error_set(err, SYNCD_EINVAL,
                                   "%s and %s: give one of them", flag,
                                   file_flag);
        rc = syncd_config_read_secret(&text, file, file_flag, err);
        if (rc != 0)
            return rc;
        *value = text;
    }
    return check_key_list(*value, *value == text ? file_flag : flag, err);
}

int syncd_config_parse(syncd_config_t *cfg, int argc, char **argv,
                       syncd_error_t *err)
{
    int rc;
    size_t i;
    int a;

    memset(cfg, 0, sizeof(*cfg));
    for (i = 0; i < NOPTIONS; i++)
        if (options[i].def != NULL &&
            set_value(cfg, &options[i], options[i].def) < 0)
            return syncd_error_set(err, SYNCD_EINVAL, "bad default of --%s",
                                   options[i].flag);
    for (i = 0; i < NOPTIONS; i++) {
        char name[64];
        const char *v;

        env_name(name, sizeof(name), options[i].flag);
        v = getenv(name);
        if (v != NULL && *v != '\0' && set_value(cfg, &options[i], v) < 0)
            return bad_value(err, name, &options[i], v);
    }
    for (a = 1; a < argc; a++) {
        const char *arg = argv[a];
        const char *eq, *value;
        const option_t *opt;
        char source[80];

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            cfg->help = 1;
            return 0;
        }
        if (strcmp(arg, "--version") == 0) {
            cfg->version = 1;
            return 0;
        }
        if (strncmp(arg, "--", 2) != 0)
            return syncd_error_set(err, SYNCD_EINVAL,
                                   "unexpected argument '%s'", arg);
        arg += 2;
        eq = strchr(arg, '=');
        opt = find_option(arg, eq ? (size_t)(eq - arg) : strlen(arg));
        if (opt == NULL)
            return syncd_error_set(err, SYNCD_EINVAL,
                                   "unknown flag '%s' (see --help)", argv[a]);
        if (eq != NULL)
            value = eq + 1;
        else if (opt->kind == OPT_BOOL &&
                 (a + 1 >= argc || strncmp(argv[a + 1], "--", 2) == 0))
            value = "true";
        else if (a + 1 < argc)
            value = argv[++a];
        else
            return syncd_error_set(err, SYNCD_EINVAL, "--%s needs a value",
                                   opt->flag);
        snprintf(source, sizeof(source), "--%s", opt->flag);
        if (set_value(cfg, opt, value) < 0)
            return bad_value(err, source, opt, value);
    }
    if (cfg->max_doc_bytes == 0)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "--max-doc-bytes: must be more than 0");
    if (cfg->heartbeat_interval_ms < 1)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "--heartbeat-interval: must be at least 1ms");
    if (cfg->max_collections == 0)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "--max-collections: must be more than 0");
    if (cfg->max_apply_queue == 0)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "--max-apply-queue: must be more than 0");
    if (cfg->threads < 1 || cfg->threads > SYNCD_MAX_THREADS)
        return syncd_error_set(err, SYNCD_EINVAL, "--threads: must be 1 to %d",
                               SYNCD_MAX_THREADS);
    if (cfg->store_timeout_ms < 1)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "--store-timeout: must be at least 1ms");
    if (cfg->request_timeout_ms < 1)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "--request-timeout: must be at least 1ms");
    rc = load_key_list(&cfg->secret, cfg->secret_file, "--secret", err);
    if (rc == 0)
        rc = load_key_list(&cfg->token, cfg->token_file, "--token", err);
    if (rc != 0)
        return rc;
    return split_listen(cfg, err);
}

void syncd_config_free(syncd_config_t *cfg)
{
    size_t i;

    for (i = 0; i < NOPTIONS; i++) {
        if (options[i].kind == OPT_STRING) {
            char **slot = (char **)((char *)cfg + options[i].offset);

            free(*slot);
            *slot = NULL;
        }
    }
}

void syncd_config_usage(FILE *out)
{
    size_t i;

    fprintf(out, "usage: syncd [--flag value | --flag=value]...\n\n"
                 "With neither --mongo-uri nor --redis-url, syncd runs the "
                 "embedded default:\n"
                 "one node, RocksDB in --data-dir as the store of record, the "
                 "in-process bus.\n"
                 "Every flag has an environment variable of the same meaning; "
                 "flags win.\n"
                 "--version prints the version, --help this text.\n"
                 "syncd backup --data-dir D --out DIR writes a checkpoint of "
                 "a stopped node's\nembedded store (syncd backup --help).\n\n");
    for (i = 0; i < NOPTIONS; i++) {
        char name[64];

        env_name(name, sizeof(name), options[i].flag);
        fprintf(out, "  --%-24s %s\n  %-26s env %s, default %s\n",
                options[i].flag, options[i].help, "", name,
                options[i].def ? options[i].def : "(none)");
    }
}
