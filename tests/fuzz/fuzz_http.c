/* fuzz_http.c - fuzz target: the HTTP request path.
 *
 * The input is the bytes a client sends on one connection. A node runs in
 * this process as syncd runs it (embedded RocksDB store in a temporary
 * folder, in-process bus, the API as the HTTP server's handler, listening
 * on a free loopback port); each input is written on a new connection,
 * which then half-closes and reads until the server closes it or stays
 * quiet for QUIET_MS (a watch stream). So the bytes go through
 * http-parser, the server's limits, the router and the handlers, and
 * store calls on the thread pool, as they would in syncd. Invariants: the
 * answer starts with an HTTP/1.1 status line, and its status is not 5xx
 * (nothing a client sends may be a server error of a healthy node); the
 * sanitizers do the rest. At exit the node shuts down in main.c's order and the
 * loop must close clean.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "syncd/api.h"
#include "syncd/config.h"
#include "syncd/http.h"
#include "syncd/members.h"
#include "syncd/metrics.h"

#include "fuzz.h"

/* Quiet time after which a connection's answer is taken as complete. */
#define QUIET_MS 150

static struct {
    uv_loop_t loop;
    char dir[64];
    syncd_config_t cfg;
    syncd_store_t *store;
    syncd_bus_t *bus;
    syncd_node_t *node;
    syncd_members_t *members;
    syncd_metrics_t *metrics;
    syncd_api_t *api;
    syncd_http_server_t *http;
    int closed;
} s;

/* One input's client connection. */
typedef struct client {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    uv_shutdown_t shutdown;
    uv_timer_t quiet;
    uv_buf_t data;
    char head[16];
    size_t got;
    int open; /* handles not yet closed */
} client_t;

static void on_closed(uv_handle_t *h)
{
    client_t *c = h->data;

    c->open--;
}

static void client_end(client_t *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) {
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        uv_close((uv_handle_t *)&c->quiet, on_closed);
    }
}

static void on_quiet(uv_timer_t *t)
{
    client_end(t->data);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    static char buf[65536];

    (void)h;
    (void)hint;
    *b = uv_buf_init(buf, sizeof(buf));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    client_t *c = st->data;

    if (n < 0) {
        client_end(c);
        return;
    }
    for (ssize_t i = 0; i < n; i++, c->got++) {
        if (c->got < sizeof(c->head))
            c->head[c->got] = b->base[i];
    }
    uv_timer_start(&c->quiet, on_quiet, QUIET_MS, 0);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
}

static void on_write(uv_write_t *req, int status)
{
    (void)req;
    (void)status;
}

static void on_connect(uv_connect_t *req, int status)
{
    client_t *c = req->data;

    SYNCD_FUZZ_CHECK(status == 0);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (c->data.len > 0)
        uv_write(&c->write, (uv_stream_t *)&c->tcp, &c->data, 1, on_write);
    uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown);
    uv_timer_start(&c->quiet, on_quiet, QUIET_MS, 0);
}

static void open_node(void)
{
    char *argv[] = {"syncd", "--listen", "127.0.0.1:0", NULL};
    char path[128];
    syncd_store_options_t so;
    syncd_bus_options_t bo;
    syncd_node_options_t no;
    syncd_members_options_t mo;
    syncd_api_options_t ao;
    syncd_http_options_t ho;

    SYNCD_FUZZ_CHECK(syncd_config_parse(&s.cfg, 3, argv, NULL) == 0);
    syncd_log_set_level(SYNCD_LOG_ERROR);
    signal(SIGPIPE, SIG_IGN); /* as main.c: a client may go first */
    snprintf(s.dir, sizeof(s.dir), "/tmp/syncd-fuzz-http-XXXXXX");
    SYNCD_FUZZ_CHECK(mkdtemp(s.dir) != NULL);
    SYNCD_FUZZ_CHECK(uv_loop_init(&s.loop) == 0);
    syncd_store_options_init(&so);
    snprintf(path, sizeof(path), "%s/store", s.dir);
    so.data_dir = path;
    so.node_id = "local";
    so.sync_writes = 0;
    so.outbox = 1;
    SYNCD_FUZZ_CHECK(syncd_store_open(&s.store, &so, NULL) == 0);
    syncd_bus_options_init(&bo);
    snprintf(path, sizeof(path), "%s/events", s.dir);
    bo.data_dir = path;
    bo.node_id = "local";
    SYNCD_FUZZ_CHECK(syncd_bus_open(&s.bus, &s.loop, &bo, NULL) == 0);
    syncd_node_options_init(&no);
    no.node_id = "local";
    SYNCD_FUZZ_CHECK(
        syncd_node_open(&s.node, &s.loop, s.store, s.bus, &no, NULL) == 0);
    memset(&mo, 0, sizeof(mo));
    mo.loop = &s.loop;
    mo.bus = s.bus;
    mo.node = s.node;
    mo.node_id = "local";
    mo.url = "http://127.0.0.1:1";
    mo.version = "fuzz";
    mo.interval_ms = s.cfg.heartbeat_interval_ms;
    SYNCD_FUZZ_CHECK(syncd_members_start(&s.members, &mo, NULL) == 0);
    s.metrics = syncd_metrics_new();
    memset(&ao, 0, sizeof(ao));
    ao.loop = &s.loop;
    ao.cfg = &s.cfg;
    ao.node_id = "local";
    ao.store = s.store;
    ao.bus = s.bus;
    ao.node = s.node;
    ao.metrics = s.metrics;
    ao.members = s.members;
    SYNCD_FUZZ_CHECK(s.metrics != NULL && syncd_api_new(&s.api, &ao) == 0);
    syncd_http_options_init(&ho);
    ho.max_connections = 100000;
    ho.max_connections_per_client = 0;
    ho.header_timeout_ms = ho.body_timeout_ms = ho.idle_timeout_ms = 50;
    ho.handler = syncd_api_handle;
    ho.observe = syncd_api_observe;
    ho.data = s.api;
    SYNCD_FUZZ_CHECK(
        syncd_http_listen(&s.http, &s.loop, "127.0.0.1", 0, &ho, NULL) == 0);
    syncd_api_set_server(s.api, s.http);
}

static void closed_store(void *payload)
{
    (void)payload;
    syncd_store_close(s.store);
    syncd_api_free(s.api);
    s.closed = 1;
}

static void closed_http(void *payload)
{
    (void)payload;
    syncd_bus_close(s.bus, closed_store, NULL);
}

static void closed_node(void *payload)
{
    (void)payload;
    syncd_http_close(s.http, closed_http, NULL);
}

static void quiesced(void *payload)
{
    (void)payload;
    syncd_node_close(s.node, closed_node, NULL);
}

/* Shuts the node down as main.c does, checks that the loop closes, and
 * removes the data folder. */
static void close_node(void)
{
    char cmd[128];

    syncd_members_stop(s.members);
    syncd_http_drain(s.http);
    syncd_api_quiesce(s.api, quiesced, NULL);
    uv_run(&s.loop, UV_RUN_DEFAULT);
    SYNCD_FUZZ_CHECK(s.closed);
    SYNCD_FUZZ_CHECK(uv_loop_close(&s.loop) == 0);
    syncd_metrics_free(s.metrics);
    syncd_members_free(s.members);
    syncd_config_free(&s.cfg);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s.dir);
    SYNCD_FUZZ_CHECK(system(cmd) == 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    open_node();
    atexit(close_node);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    client_t c;
    struct sockaddr_in addr;

    memset(&c, 0, sizeof(c));
    c.data = uv_buf_init((char *)data, (unsigned int)size);
    SYNCD_FUZZ_CHECK(uv_tcp_init(&s.loop, &c.tcp) == 0);
    SYNCD_FUZZ_CHECK(uv_timer_init(&s.loop, &c.quiet) == 0);
    c.tcp.data = c.quiet.data = c.connect.data = &c;
    c.open = 2;
    uv_ip4_addr("127.0.0.1", syncd_http_port(s.http), &addr);
    SYNCD_FUZZ_CHECK(uv_tcp_connect(&c.connect, &c.tcp,
                                    (const struct sockaddr *)&addr,
                                    on_connect) == 0);
    while (c.open > 0)
        uv_run(&s.loop, UV_RUN_ONCE);
    if (c.got > 0) {
        SYNCD_FUZZ_CHECK(c.got >= 12 && memcmp(c.head, "HTTP/1.1 ", 9) == 0);
        SYNCD_FUZZ_CHECK(c.head[9] != '5');
    }
    return 0;
}
