/* config.h - the daemon's configuration: flags and environment variables
 * of DESIGN.md section 7.
 *
 * Every setting has a flag (--cache-ttl) and an environment variable of
 * the same meaning (SYNCD_CACHE_TTL); flags win over the environment, the
 * environment over the defaults. Durations take a unit (250ms, 2s, 5m,
 * 24h), sizes too (512KiB, 64MiB, 1GiB); a bad value is an error naming
 * the flag.
 */
#ifndef SYNCD_CONFIG_H
#define SYNCD_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "syncd/error.h"
#include "syncd/store.h"

#include "log.h"

/* Most threads libuv's pool takes (its own bound). */
#define SYNCD_MAX_THREADS 1024

typedef struct syncd_config {
    char *mongo_uri; /* NULL: embedded RocksDB store of record */
    char *redis_url; /* NULL: in-process bus */
    char *database;  /* MongoDB database and bus namespace */
    char *data_dir;  /* RocksDB store or cache, replay log */
    char *listen;    /* host:port */
    char *node_id;   /* NULL: "local" embedded, host-port in a cluster */
    char *secret;    /* event HMAC keys, comma-separated; NULL: unsigned */
    char *token;     /* API bearer tokens, comma-separated; NULL: open */
    char *secret_file, *token_file; /* where secret and token were read */
    syncd_log_level_t log_level;
    char *advertise_url; /* NULL: http://<listen address> */
    int sync_writes;
    int keep_cache;
    syncd_start_check_t verify_at_start; /* what the start check does */
    int repair; /* embedded: quarantine corrupt documents at start */
    int64_t max_retries, max_connections, event_log_len, watch_buffer_events,
        max_collections;
    int64_t max_connections_per_client, max_patch_ops, body_timeout_ms;
    int64_t max_watchers, max_watchers_per_collection, max_apply_queue;
    int64_t threads; /* libuv's thread pool: store and bus calls at once */
    int64_t cache_ttl_ms, retry_delay_ms, max_retry_delay_ms, edit_timeout_ms,
        anti_entropy_interval_ms, tombstone_ttl_ms, idle_timeout_ms,
        header_timeout_ms, bookmark_interval_ms, bus_timeout_ms,
        store_timeout_ms, request_timeout_ms, slow_request_ms,
        idempotency_ttl_ms, heartbeat_interval_ms;
    uint64_t cache_max_bytes, block_cache_bytes, max_doc_bytes, max_event_bytes,
        max_header_bytes, watch_buffer_bytes;
    int64_t history_len;        /* earlier versions a document keeps */
    uint64_t history_max_bytes; /* bound of one document's history */
    char host[256];             /* parsed from listen */
    int port;
    int help, version; /* --help, --version was given */
} syncd_config_t;

/* Fills cfg from the defaults, then the SYNCD_* environment, then argv
 * (argv[0] is skipped). SYNCD_EINVAL names the flag (or variable) and the
 * bad value. cfg is released with syncd_config_free() either way. */
int syncd_config_parse(syncd_config_t *cfg, int argc, char **argv,
                       syncd_error_t *err);

/* Reads the secret or token held in the file at path into *out (malloc'd,
 * the caller frees it), trailing newlines removed. SYNCD_EINVAL, naming
 * flag and path but never the content, when the file cannot be read, is
 * empty, longer than 64 KiB or holds a NUL byte. */
int syncd_config_read_secret(char **out, const char *path, const char *flag,
                             syncd_error_t *err);

/* Frees the strings cfg holds. */
void syncd_config_free(syncd_config_t *cfg);

/* Writes the usage text: every flag, its variable and its default. */
void syncd_config_usage(FILE *out);

/* Parses a --verify-at-start value (off, digests, full, auto) into *out;
 * returns 0, or -1 when text is none of them. */
int syncd_config_parse_check(syncd_start_check_t *out, const char *text);

/* Parses a size with a unit (B, KiB, MiB, GiB, TiB: "512KiB") into *bytes;
 * returns 0, or -1 when text is not one. syncctl parses its sizes so. */
int syncd_config_parse_size(uint64_t *bytes, const char *text);

#endif
