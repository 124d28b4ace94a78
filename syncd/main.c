/* main.c - the syncd daemon: configuration, wiring, signals, shutdown.
 *
 * Opens the store (the embedded RocksDB store of record, or MongoDB with a
 * RocksDB cache), the bus (in-process, or Redis), the node over both, and
 * the HTTP API on --listen, then runs the loop. SIGTERM or SIGINT starts a
 * graceful shutdown, one step after the other: stop accepting and answer
 * 503 to new requests, wait for in-flight store calls and publishes, close
 * the node (watchers get a final event), the HTTP server, the bus and the
 * store; the loop then runs dry and syncd exits 0. A once-a-second check
 * logs bus connects and disconnects, resyncs and anti-entropy repairs, and
 * once a minute has a pool thread give the heap's free pages back to the
 * kernel (glibc keeps what a pool thread freed in that thread's arena: the
 * node cache's memtable blocks, freed at each flush, otherwise hold RSS
 * that no allocation reuses). The trim walks every arena's free chunks
 * (about 1 ms for a 30 MB heap, 100 ms for a fragmented 800 MB one), so it
 * runs off the loop.
 * Membership (members.c) announces the node on the bus once serving.
 *
 * One instance per data dir: before anything opens RocksDB, syncd takes an
 * exclusive flock() of <data-dir>/syncd.lock and writes its pid there; a
 * second syncd on the same dir exits 1 naming the dir and that pid. The
 * lock goes with the process, however it ends.
 */
#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "syncd/bus.h"
#include "syncd/node.h"
#include "syncd/store.h"

#include "api.h"
#include "atstart.h"
#include "backup.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "members.h"
#include "metrics.h"

typedef struct daemon {
    uv_loop_t loop;
    syncd_config_t cfg;
    char node_id[SYNCD_MAX_NODE_ID + 1];
    syncd_store_t *store;
    json_t *start_check; /* what the check at start found and refuses */
    syncd_bus_t *bus;
    syncd_node_t *node;
    syncd_metrics_t *metrics;
    syncd_members_t *members;
    syncd_api_t *api;
    syncd_http_server_t *http;
    uv_signal_t sigterm, sigint;
    uv_timer_t watch;
    int bus_was_connected;
    uint64_t auth_failures; /* the bus's count at the last check */
    syncd_node_stats_t last;
    unsigned checks; /* health checks run, for the once-a-minute trim */
    uv_work_t trim;  /* the trim, while trimming */
    int trimming;
    int stopping;
} daemon_t;

#define TRIM_EVERY_CHECKS 60

/* Creates dir and its parents (mkdir -p); -1 with errno on failure. */
static int make_dirs(const char *dir)
{
    char path[4096];
    size_t i, n = strlen(dir);

    if (n == 0 || n >= sizeof(path))
        return errno = EINVAL, -1;
    memcpy(path, dir, n + 1);
    for (i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        path[i] = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return -1;
        path[i] = dir[i];
    }
    return 0;
}

static void close_store(void *payload)
{
    daemon_t *d = payload;
    syncd_error_t err;

    syncd_error_clear(&err);
    if (d->store != NULL && syncd_store_save_digests(d->store, &err) != 0)
        syncd_log(SYNCD_LOG_WARN,
                  "syncd: cannot write the digests of this clean shutdown "
                  "(the next start will recompute them): %s",
                  err.message);
    syncd_store_close(d->store);
    d->store = NULL;
    syncd_api_free(d->api);
    d->api = NULL;
    syncd_log(SYNCD_LOG_INFO, "syncd: stopped");
}

static void close_bus(void *payload)
{
    daemon_t *d = payload;

    d->http = NULL;
    if (d->bus != NULL)
        syncd_bus_close(d->bus, close_store, d);
    else
        close_store(d);
}

static void close_http(void *payload)
{
    daemon_t *d = payload;

    d->node = NULL;
    if (d->http != NULL)
        syncd_http_close(d->http, close_bus, d);
    else
        close_bus(d);
}

static void close_node(void *payload)
{
    daemon_t *d = payload;

    if (d->node != NULL)
        syncd_node_close(d->node, close_http, d);
    else
        close_http(d);
}

/* Starts the shutdown chain: node, HTTP server, bus, store. */
static void stop(daemon_t *d)
{
    if (d->stopping)
        return;
    d->stopping = 1;
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->watch, NULL);
    syncd_members_stop(d->members);
    if (d->http != NULL)
        syncd_http_drain(d->http);
    if (d->api != NULL)
        syncd_api_quiesce(d->api, close_node, d);
    else
        close_node(d);
}

static void on_signal(uv_signal_t *s, int signum)
{
    daemon_t *d = s->data;

    syncd_log(SYNCD_LOG_INFO, "syncd: %s: shutting down",
              signum == SIGTERM ? "SIGTERM" : "SIGINT");
    stop(d);
}

/* Gives the heap's free pages back to the kernel (thread pool). */
static void trim_heap(uv_work_t *w)
{
    (void)w;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

/* Back on the loop after a trim: the next may start. */
static void trimmed(uv_work_t *w, int status)
{
    daemon_t *d = w->data;

    (void)status;
    d->trimming = 0;
}

/* Logs what changed since the last check: the bus connection, refused
 * Redis credentials, resyncs and anti-entropy repairs; starts the trim
 * once a minute. */
static void check_health(uv_timer_t *t)
{
    daemon_t *d = t->data;
    syncd_node_stats_t now;
    syncd_bus_stats_t bus;
    int connected = syncd_bus_connected(d->bus);

    if (connected != d->bus_was_connected)
        syncd_log(connected ? SYNCD_LOG_INFO : SYNCD_LOG_WARN,
                  "syncd: bus (%s) %s", syncd_bus_kind(d->bus),
                  connected ? "connected" : "disconnected");
    d->bus_was_connected = connected;
    syncd_bus_stats(d->bus, &bus);
    if (bus.auth_failures > d->auth_failures)
        syncd_log(SYNCD_LOG_ERROR,
                  "syncd: Redis refused the user and password of --redis-url "
                  "(%llu time(s))",
                  (unsigned long long)(bus.auth_failures - d->auth_failures));
    d->auth_failures = bus.auth_failures;
    syncd_node_stats(d->node, &now);
    if (now.resyncs > d->last.resyncs)
        syncd_log(SYNCD_LOG_WARN, "syncd: %llu collection resync(s)",
                  (unsigned long long)(now.resyncs - d->last.resyncs));
    if (now.anti_entropy_repairs > d->last.anti_entropy_repairs)
        syncd_log(SYNCD_LOG_WARN, "syncd: anti-entropy repaired %llu doc(s)",
                  (unsigned long long)(now.anti_entropy_repairs -
                                       d->last.anti_entropy_repairs));
    d->last = now;
    if (++d->checks % TRIM_EVERY_CHECKS == 0 && !d->trimming &&
        uv_queue_work(&d->loop, &d->trim, trim_heap, trimmed) == 0)
        d->trimming = 1;
}

/* Takes the data dir's lock file (kept open, so locked, for the life of
 * the process) and writes this pid into it; SYNCD_EEXISTS naming the dir
 * and the holder's pid when another process holds it. */
static int lock_data_dir(const char *dir, syncd_error_t *err)
{
    char path[4096], text[32] = "";
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "%s/syncd.lock", dir);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return syncd_error_set(err, SYNCD_EBACKEND,
                               "--data-dir: cannot open '%s': %s", path,
                               strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int saved = errno;

        n = pread(fd, text, sizeof(text) - 1, 0);
        text[n > 0 ? n : 0] = '\0';
        text[strcspn(text, "\n")] = '\0';
        close(fd);
        if (saved != EWOULDBLOCK)
            return syncd_error_set(err, SYNCD_EBACKEND,
                                   "--data-dir: cannot lock '%s': %s", path,
                                   strerror(saved));
        return syncd_error_set(err, SYNCD_EEXISTS,
                               "--data-dir '%s' is in use by syncd pid %s "
                               "(lock file %s)",
                               dir, text[0] ? text : "(unknown)", path);
    }
    n = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)n, 0) != n) {
        int saved = errno;

        close(fd);
        return syncd_error_set(err, SYNCD_EBACKEND,
                               "--data-dir: cannot write '%s': %s", path,
                               strerror(saved));
    }
    return 0;
}

/* Opens the store, the bus and the node as configured. */
static int open_node(daemon_t *d, syncd_error_t *err)
{
    const syncd_config_t *c = &d->cfg;
    syncd_store_options_t so;
    syncd_bus_options_t bo;
    syncd_node_options_t no;
    char store_dir[4096], bus_dir[4096];
    int rc;

    snprintf(store_dir, sizeof(store_dir), "%s/store", c->data_dir);
    snprintf(bus_dir, sizeof(bus_dir), "%s/events", c->data_dir);
    if (make_dirs(store_dir) != 0 || make_dirs(bus_dir) != 0)
        return syncd_error_set(err, SYNCD_EBACKEND,
                               "--data-dir: cannot create '%s': %s",
                               c->data_dir, strerror(errno));
    rc = lock_data_dir(c->data_dir, err);
    if (rc != 0)
        return rc;
    syncd_store_options_init(&so);
    so.mongo_uri = c->mongo_uri;
    so.database = c->database;
    so.data_dir = store_dir;
    so.node_id = d->node_id;
    so.sync_writes = c->sync_writes;
    so.cache_ttl_ms = c->cache_ttl_ms;
    so.cache_max_bytes = c->cache_max_bytes;
    so.block_cache_bytes = c->block_cache_bytes;
    so.keep_cache = c->keep_cache;
    so.max_retries = (int)c->max_retries;
    so.retry_delay_ms = c->retry_delay_ms;
    so.max_retry_delay_ms = c->max_retry_delay_ms;
    so.edit_timeout_ms = c->edit_timeout_ms;
    so.max_doc_bytes = c->max_doc_bytes;
    so.tombstone_ttl_ms = c->tombstone_ttl_ms;
    so.idempotency_ttl_ms = c->idempotency_ttl_ms;
    so.history_len = c->history_len > SYNCD_MAX_HISTORY_LEN
                         ? SYNCD_MAX_HISTORY_LEN + 1
                         : (int)c->history_len;
    so.history_max_bytes = c->history_max_bytes;
    so.backend_timeout_ms = c->store_timeout_ms;
    so.outbox = 1;
    rc = syncd_store_open(&d->store, &so, err);
    if (rc == 0)
        rc = syncd_atstart_run(&d->start_check, d->store, c, err);
    if (rc != 0)
        return rc;
    syncd_bus_options_init(&bo);
    bo.redis_url = c->redis_url;
    bo.database = c->database;
    bo.data_dir = bus_dir;
    bo.block_cache_bytes = c->block_cache_bytes;
    bo.node_id = d->node_id;
    bo.secret = c->secret;
    bo.event_log_len = (uint64_t)c->event_log_len;
    bo.max_event_bytes = c->max_event_bytes;
    bo.command_timeout_ms = c->bus_timeout_ms;
    /* A node cut off from Redis notices the bus is back within one
     * anti-entropy interval, so that it converges within one after a
     * partition heals. */
    if (c->anti_entropy_interval_ms > 0 &&
        bo.reconnect_max_ms > c->anti_entropy_interval_ms)
        bo.reconnect_max_ms = c->anti_entropy_interval_ms < bo.reconnect_min_ms
                                  ? bo.reconnect_min_ms
                                  : c->anti_entropy_interval_ms;
    rc = syncd_bus_open(&d->bus, &d->loop, &bo, err);
    if (rc != 0)
        return rc;
    syncd_node_options_init(&no);
    no.node_id = d->node_id;
    no.anti_entropy_interval_ms = c->anti_entropy_interval_ms;
    no.tombstone_ttl_ms = c->tombstone_ttl_ms;
    no.max_event_bytes = c->max_event_bytes;
    no.max_doc_bytes = c->max_doc_bytes;
    no.watch_buffer_events = (size_t)c->watch_buffer_events;
    no.max_collections = (size_t)c->max_collections;
    no.max_apply_queue = (size_t)c->max_apply_queue;
    no.outbox_min_age_ms = c->bus_timeout_ms;
    return syncd_node_open(&d->node, &d->loop, d->store, d->bus, &no, err);
}

/* Starts the API and the HTTP server on --listen. */
static int open_api(daemon_t *d, syncd_error_t *err)
{
    const syncd_config_t *c = &d->cfg;
    syncd_api_options_t ao;
    syncd_http_options_t ho;
    int rc;

    d->metrics = syncd_metrics_new();
    if (d->metrics == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    memset(&ao, 0, sizeof(ao));
    ao.loop = &d->loop;
    ao.cfg = c;
    ao.node_id = d->node_id;
    ao.store = d->store;
    ao.bus = d->bus;
    ao.node = d->node;
    ao.metrics = d->metrics;
    ao.members = d->members;
    ao.start_check = d->start_check;
    rc = syncd_api_new(&d->api, &ao);
    if (rc != 0)
        return syncd_error_set(err, rc, "out of memory");
    syncd_http_options_init(&ho);
    ho.max_header_bytes = c->max_header_bytes;
    ho.max_body_bytes = c->max_doc_bytes + 64 * 1024;
    ho.max_connections = (int)c->max_connections;
    ho.max_connections_per_client = (int)c->max_connections_per_client;
    ho.body_timeout_ms = c->body_timeout_ms;
    ho.idle_timeout_ms = c->idle_timeout_ms;
    ho.header_timeout_ms = c->header_timeout_ms;
    ho.token = c->token;
    ho.open_prefix = "/ui";
    ho.handler = syncd_api_handle;
    ho.observe = syncd_api_observe;
    ho.cors = syncd_api_cors;
    ho.data = d->api;
    rc = syncd_http_listen(&d->http, &d->loop, c->host, c->port, &ho, err);
    if (rc != 0)
        return rc;
    syncd_api_set_server(d->api, d->http);
    return 0;
}

/* Starts membership: heartbeats with the advertised URL (by default
 * http://<listen address>). */
static int open_members(daemon_t *d, syncd_error_t *err)
{
    const syncd_config_t *c = &d->cfg;
    syncd_members_options_t mo;
    char url[512];

    if (c->advertise_url != NULL)
        snprintf(url, sizeof(url), "%s", c->advertise_url);
    else
        snprintf(url, sizeof(url),
                 strchr(c->host, ':') ? "http://[%s]:%d" : "http://%s:%d",
                 c->host, c->port);
    memset(&mo, 0, sizeof(mo));
    mo.loop = &d->loop;
    mo.bus = d->bus;
    mo.node = d->node;
    mo.node_id = d->node_id;
    mo.url = url;
    mo.version = SYNCD_VERSION;
    mo.interval_ms = c->heartbeat_interval_ms;
    return syncd_members_start(&d->members, &mo, err);
}

/* Sizes libuv's thread pool, which it reads from UV_THREADPOOL_SIZE when
 * the first work is queued: store calls block there (a write until its
 * group's sync), so the pool bounds the writes a commit group can take. */
static void set_threads(int64_t threads)
{
    char text[16];

    snprintf(text, sizeof(text), "%lld", (long long)threads);
    setenv("UV_THREADPOOL_SIZE", text, 1);
}

static void set_node_id(daemon_t *d)
{
    char host[64] = "localhost";

    if (d->cfg.node_id != NULL) {
        snprintf(d->node_id, sizeof(d->node_id), "%s", d->cfg.node_id);
    } else if (d->cfg.mongo_uri == NULL && d->cfg.redis_url == NULL) {
        snprintf(d->node_id, sizeof(d->node_id), "local");
    } else {
        gethostname(host, sizeof(host) - 1);
        host[sizeof(host) - 1] = '\0';
        snprintf(d->node_id, sizeof(d->node_id), "%.50s-%d", host, d->cfg.port);
    }
}

int main(int argc, char **argv)
{
    static daemon_t d;
    syncd_error_t err;
    int rc, status = 0;

    if (argc > 1 && strcmp(argv[1], "backup") == 0)
        return syncd_backup_main(argc - 1, argv + 1);
    syncd_error_clear(&err);
    rc = syncd_config_parse(&d.cfg, argc, argv, &err);
    if (rc == 0 && d.cfg.version) {
        printf("syncd %s\n", SYNCD_VERSION);
        syncd_config_free(&d.cfg);
        return 0;
    }
    if (rc != 0 || d.cfg.help) {
        if (rc != 0)
            fprintf(stderr, "syncd: %s\n", err.message);
        else
            syncd_config_usage(stdout);
        syncd_config_free(&d.cfg);
        return rc != 0 ? 2 : 0;
    }
    if (d.cfg.node_id != NULL && strlen(d.cfg.node_id) > SYNCD_MAX_NODE_ID) {
        fprintf(stderr, "syncd: --node-id: longer than %d bytes\n",
                SYNCD_MAX_NODE_ID);
        syncd_config_free(&d.cfg);
        return 2;
    }
    syncd_log_set_level(d.cfg.log_level);
    set_threads(d.cfg.threads);
    signal(SIGPIPE, SIG_IGN);
    set_node_id(&d);
    uv_loop_init(&d.loop);
    uv_signal_init(&d.loop, &d.sigterm);
    uv_signal_init(&d.loop, &d.sigint);
    uv_timer_init(&d.loop, &d.watch);
    d.sigterm.data = d.sigint.data = d.watch.data = d.trim.data = &d;
    rc = open_node(&d, &err);
    if (rc == 0)
        rc = open_members(&d, &err);
    if (rc == 0)
        rc = open_api(&d, &err);
    if (rc != 0) {
        syncd_log(SYNCD_LOG_ERROR, "syncd: cannot start: %s", err.message);
        status = 1;
        stop(&d);
    } else {
        syncd_log(SYNCD_LOG_INFO,
                  "syncd: node %s serving http://%s:%d (store %s, bus %s, "
                  "data %s)",
                  d.node_id, d.cfg.host, syncd_http_port(d.http),
                  syncd_store_kind(d.store), syncd_bus_kind(d.bus),
                  d.cfg.data_dir);
        if (d.cfg.redis_url != NULL && d.cfg.secret == NULL)
            syncd_log(SYNCD_LOG_WARN,
                      "syncd: no --secret: events on the bus are not signed, "
                      "so anyone who can reach Redis can inject changes");
        uv_signal_start(&d.sigterm, on_signal, SIGTERM);
        uv_signal_start(&d.sigint, on_signal, SIGINT);
        d.bus_was_connected = syncd_bus_connected(d.bus);
        uv_timer_start(&d.watch, check_health, 1000, 1000);
    }
    uv_run(&d.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&d.loop) != 0)
        syncd_log(SYNCD_LOG_WARN, "syncd: loop closed with handles open");
    syncd_metrics_free(d.metrics);
    syncd_members_free(d.members);
    json_decref(d.start_check);
    syncd_config_free(&d.cfg);
    return status;
}
