/* members.c - node membership: heartbeats, GET /v1/nodes, node metrics.
 *
 * Two timers on the loop: the heartbeat (every interval, the first at
 * start) sends this node's beat through syncd_bus_heartbeat() with a TTL
 * of three intervals, and the poll (every quarter interval) reads the live
 * nodes with syncd_bus_members(). At most one of each is in flight. Every
 * read, the poll's or a /v1/nodes request's, becomes the current view: the
 * set of live nodes (for the join and gone log lines) and their lags (for
 * /metrics). A node is live while its heartbeat key has not expired, so
 * one that stops beating is gone at most three intervals after its last
 * beat, and logged gone by the next poll, a quarter interval later at
 * most.
 *
 * The beat is bounded: it names at most SYNCD_MEMBERS_MAX_COLLECTIONS
 * collections (the most recently active), so a node holding ten thousand
 * collections still sends tens of kilobytes, not megabytes. Lag is the
 * bus's current seq of a collection minus the seq the node last applied.
 */
#include "members.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

/* Heartbeat failures are logged at most once per this many ms. */
#define FAIL_LOG_MS 60000

struct syncd_members {
    syncd_members_options_t opts;
    char *node_id, *url, *version;
    char started[32];     /* RFC 3339 UTC */
    uv_timer_t beat;      /* heartbeats */
    uv_timer_t poll;      /* members reads */
    int beating, polling; /* a heartbeat, a poll read in flight */
    int stopped;
    uint64_t failures;    /* heartbeats failed since the last logged line */
    uint64_t fail_logged; /* loop time of that line */
    int failing;          /* the last heartbeat failed */
    json_t *known;        /* live node id -> last heartbeat (RFC 3339) */
    json_t *view;         /* the last /v1/nodes answer, or NULL */
};

/* A /v1/nodes request waiting for the bus. */
typedef struct nodes_req {
    syncd_members_t *m;
    syncd_http_req_t *req;
} nodes_req_t;

/* Writes ms since the epoch as RFC 3339 UTC with milliseconds into out. */
static void format_ms(char out[32], int64_t ms)
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    size_t n;

    gmtime_r(&sec, &tm);
    n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

static int by_id(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;

    return strcmp(json_string_value(json_object_get(x, "id")),
                  json_string_value(json_object_get(y, "id")));
}

/* Builds one node of the answer from a members entry and the newest seqs;
 * a new object, NULL when the entry is malformed or on ENOMEM. */
static json_t *node_entry(const json_t *e, const json_t *newest, int64_t now)
{
    const json_t *beat = json_object_get(e, "beat");
    int64_t last = json_integer_value(json_object_get(e, "last_ms"));
    json_t *colls = json_object(), *out;
    const char *name;
    json_t *seq;
    char when[32];

    if (colls == NULL || !json_is_string(json_object_get(e, "id")))
        goto bad;
    json_object_foreach (json_object_get(beat, "collections"), name, seq) {
        int64_t s = json_integer_value(seq);
        int64_t n = json_integer_value(json_object_get(newest, name));

        if (n < s)
            n = s;
        if (json_object_set_new(
                colls, name,
                json_pack("{s:I, s:I, s:I}", "seq", (json_int_t)s, "newest",
                          (json_int_t)n, "lag", (json_int_t)(n - s))) != 0)
            goto bad;
    }
    format_ms(when, last);
    out = json_pack(
        "{s:O, s:O, s:O, s:O, s:s, s:I, s:o}", "id", json_object_get(e, "id"),
        "url", json_object_get(beat, "url"), "version",
        json_object_get(beat, "version"), "started",
        json_object_get(beat, "started"), "last_heartbeat", when, "age_ms",
        (json_int_t)(now > last ? now - last : 0), "collections", colls);
    return out;
bad:
    json_decref(colls);
    return NULL;
}

/* Turns a members object of the bus into the /v1/nodes answer (a new
 * object sorted by id), NULL on ENOMEM. */
static json_t *build_view(const syncd_members_t *m, const json_t *members)
{
    const json_t *list = json_object_get(members, "nodes");
    const json_t *newest = json_object_get(members, "newest");
    int64_t now = json_integer_value(json_object_get(members, "now_ms"));
    size_t n = json_array_size(list), k = 0;
    json_t **nodes = calloc(n + 1, sizeof(*nodes));
    json_t *arr = json_array(), *out = NULL;

    if (nodes == NULL || arr == NULL)
        goto cleanup;
    for (size_t i = 0; i < n; i++) {
        json_t *node = node_entry(json_array_get(list, i), newest, now);

        if (node != NULL)
            nodes[k++] = node;
    }
    qsort(nodes, k, sizeof(*nodes), by_id);
    for (size_t i = 0; i < k; i++) {
        json_array_append_new(arr, nodes[i]);
        nodes[i] = NULL;
    }
    out = json_pack("{s:s, s:O}", "self", m->node_id, "nodes", arr);

cleanup:
    for (size_t i = 0; nodes != NULL && i < k; i++)
        json_decref(nodes[i]);
    free(nodes);
    json_decref(arr);
    return out;
}

/* Makes view (stolen) the current view and logs the nodes that joined
 * and those that are gone since the last one. */
static void set_view(syncd_members_t *m, json_t *view)
{
    json_t *now = json_object(), *node;
    const char *id;
    json_t *when;
    size_t i;

    if (view == NULL || now == NULL) {
        json_decref(view);
        json_decref(now);
        return;
    }
    json_array_foreach (json_object_get(view, "nodes"), i, node) {
        const char *nid = json_string_value(json_object_get(node, "id"));

        json_object_set(now, nid, json_object_get(node, "last_heartbeat"));
        if (json_object_get(m->known, nid) == NULL)
            syncd_log(SYNCD_LOG_INFO, "node %s joined", nid);
    }
    json_object_foreach (m->known, id, when) {
        if (json_object_get(now, id) == NULL)
            syncd_log(SYNCD_LOG_WARN, "node %s gone (last heartbeat %s)", id,
                      json_string_value(when));
    }
    json_decref(m->known);
    m->known = now;
    json_decref(m->view);
    m->view = view;
}

static void on_beat_done(int status, void *payload)
{
    syncd_members_t *m = payload;
    uint64_t now = uv_now(m->opts.loop);

    m->beating = 0;
    if (status == SYNCD_ECANCELED)
        return;
    if (status == 0) {
        if (m->failing)
            syncd_log(SYNCD_LOG_INFO, "members: heartbeat sent again");
        m->failing = 0;
        m->failures = 0;
        return;
    }
    m->failures++;
    if (!m->failing || now - m->fail_logged >= FAIL_LOG_MS) {
        syncd_log(SYNCD_LOG_WARN,
                  "members: heartbeat failed: %s (%llu time(s))",
                  syncd_strerror(status), (unsigned long long)m->failures);
        m->fail_logged = now;
        m->failures = 0;
    }
    m->failing = 1;
}

static void on_beat(uv_timer_t *t)
{
    syncd_members_t *m = t->data;
    json_t *colls, *beat;
    int rc;

    if (m->beating || m->stopped)
        return;
    colls = syncd_node_seqs(m->opts.node, SYNCD_MEMBERS_MAX_COLLECTIONS);
    beat = colls == NULL
               ? NULL
               : json_pack("{s:s, s:s, s:s, s:s, s:o}", "id", m->node_id, "url",
                           m->url, "version", m->version, "started", m->started,
                           "collections", colls);
    rc = beat == NULL
             ? SYNCD_ENOMEM
             : syncd_bus_heartbeat(m->opts.bus, beat, 3 * m->opts.interval_ms,
                                   on_beat_done, m);
    json_decref(beat);
    if (rc == 0)
        m->beating = 1;
    else
        on_beat_done(rc, m);
}

static void on_poll_done(int status, json_t *members, void *payload)
{
    syncd_members_t *m = payload;

    m->polling = 0;
    if (status == 0 && !m->stopped)
        set_view(m, build_view(m, members));
    json_decref(members);
}

static void on_poll(uv_timer_t *t)
{
    syncd_members_t *m = t->data;

    if (!m->polling && !m->stopped &&
        syncd_bus_members(m->opts.bus, on_poll_done, m) == 0)
        m->polling = 1;
}

int syncd_members_start(syncd_members_t **out,
                        const syncd_members_options_t *opts, syncd_error_t *err)
{
    syncd_members_t *m;
    struct timespec ts;
    uint64_t poll;

    *out = NULL;
    if (opts->interval_ms < 1 || opts->node_id == NULL || opts->url == NULL ||
        opts->version == NULL)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "members: bad options (interval %lld ms)",
                               (long long)opts->interval_ms);
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    m->opts = *opts;
    m->node_id = strdup(opts->node_id);
    m->url = strdup(opts->url);
    m->version = strdup(opts->version);
    m->known = json_object();
    if (m->node_id == NULL || m->url == NULL || m->version == NULL ||
        m->known == NULL) {
        syncd_members_free(m);
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    format_ms(m->started, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    uv_timer_init(opts->loop, &m->beat);
    uv_timer_init(opts->loop, &m->poll);
    m->beat.data = m->poll.data = m;
    poll = (uint64_t)(opts->interval_ms / 4 > 0 ? opts->interval_ms / 4 : 1);
    uv_timer_start(&m->beat, on_beat, 0, (uint64_t)opts->interval_ms);
    uv_timer_start(&m->poll, on_poll, poll, poll);
    *out = m;
    return 0;
}

void syncd_members_stop(syncd_members_t *m)
{
    if (m == NULL || m->stopped)
        return;
    m->stopped = 1;
    uv_close((uv_handle_t *)&m->beat, NULL);
    uv_close((uv_handle_t *)&m->poll, NULL);
}

void syncd_members_free(syncd_members_t *m)
{
    if (m == NULL)
        return;
    json_decref(m->known);
    json_decref(m->view);
    free(m->node_id);
    free(m->url);
    free(m->version);
    free(m);
}

static void on_nodes_read(int status, json_t *members, void *payload)
{
    nodes_req_t *r = payload;
    json_t *view = status == 0 ? build_view(r->m, members) : NULL;
    char *text = view != NULL ? json_dumps(view, JSON_COMPACT) : NULL;

    if (status != 0)
        syncd_http_respond_error(r->req, 503, "unavailable",
                                 syncd_strerror(status));
    else if (text == NULL)
        syncd_http_respond_error(r->req, 500, "out_of_memory", "out of memory");
    else
        syncd_http_respond(r->req, 200, "application/json", "", text,
                           strlen(text));
    if (view != NULL && !r->m->stopped)
        set_view(r->m, json_incref(view));
    free(text);
    json_decref(view);
    json_decref(members);
    free(r);
}

void syncd_members_serve(syncd_members_t *m, syncd_http_req_t *req)
{
    nodes_req_t *r = calloc(1, sizeof(*r));
    int rc;

    if (r == NULL) {
        syncd_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    r->m = m;
    r->req = req;
    rc = syncd_bus_members(m->opts.bus, on_nodes_read, r);
    if (rc != 0) {
        free(r);
        syncd_http_respond_error(req, 503, "unavailable", syncd_strerror(rc));
    }
}

/* Returns 1 when url, without one trailing slash, equals origin. */
static int same_origin(const char *url, const char *origin)
{
    size_t n = url != NULL ? strlen(url) : 0;

    if (n > 0 && url[n - 1] == '/')
        n--;
    return n > 0 && strlen(origin) == n && strncmp(url, origin, n) == 0;
}

int syncd_members_knows_url(const syncd_members_t *m, const char *origin)
{
    const json_t *node;
    size_t i;

    if (m == NULL)
        return 0;
    if (same_origin(m->url, origin))
        return 1;
    json_array_foreach (json_object_get(m->view, "nodes"), i, node) {
        if (same_origin(json_string_value(json_object_get(node, "url")),
                        origin))
            return 1;
    }
    return 0;
}

/* Appends s as a Prometheus label value (backslash, quote and newline
 * escaped); 0 or SYNCD_ENOMEM. */
static int put_label(syncd_buf_t *out, const char *s)
{
    int rc = 0;

    for (; *s != '\0' && rc == 0; s++) {
        if (*s == '\\' || *s == '"')
            rc = syncd_buf_printf(out, "\\%c", *s);
        else if (*s == '\n')
            rc = syncd_buf_printf(out, "\\n");
        else
            rc = syncd_buf_putc(out, *s);
    }
    return rc;
}

int syncd_members_metrics(const syncd_members_t *m, syncd_buf_t *out)
{
    const json_t *nodes = m->view ? json_object_get(m->view, "nodes") : NULL;
    const json_t *node;
    size_t i;
    int rc;

    rc = syncd_buf_printf(out,
                          "# HELP syncd_nodes_live Live nodes this node sees "
                          "on the bus.\n# TYPE syncd_nodes_live gauge\n"
                          "syncd_nodes_live %zu\n"
                          "# HELP syncd_node_lag Events a live node is behind "
                          "the newest seq of a collection.\n"
                          "# TYPE syncd_node_lag gauge\n",
                          json_array_size(nodes));
    json_array_foreach (nodes, i, node) {
        const char *id = json_string_value(json_object_get(node, "id"));
        const char *coll;
        json_t *c;

        json_object_foreach (json_object_get(node, "collections"), coll, c) {
            if (rc == 0)
                rc = syncd_buf_printf(out, "syncd_node_lag{node=\"");
            if (rc == 0)
                rc = put_label(out, id);
            if (rc == 0)
                rc = syncd_buf_printf(out, "\",collection=\"");
            if (rc == 0)
                rc = put_label(out, coll);
            if (rc == 0)
                rc = syncd_buf_printf(
                    out, "\"} %lld\n",
                    (long long)json_integer_value(json_object_get(c, "lag")));
        }
    }
    return rc;
}
