/* test_node.c - syncd nodes converging over a real Redis bus and a real
 * MongoDB-wire store (FerretDB).
 *
 * Each test opens a small cluster on one uv loop: three nodes, each with
 * its own store (MongoDB mode, its own cache dir) and its own Redis bus,
 * and a watcher per node. Writes run on the libuv thread pool (the store
 * blocks) and are published by the writing node, as the daemon does. Faults
 * are real: pub/sub clients killed, Redis shut down and restarted, crafted
 * events on the channel, a tampered cache. Afterwards every node's cache
 * must equal the store (ids, versions, hashes and bodies) and every watcher
 * must have seen each seq once, in order, or have been told to resync.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "syncd/node.h"
#include "tests/support/servers.h"

#define NODES 3
#define DOCS 8
#define DB "syncd_node_test"
#define BUS_DB "nt"
/* Polls are 10 ms apart; a stuck cluster fails after 15 s. */
#define MAX_POLLS 1500
/* Threads of the libuv pool: main() sets UV_THREADPOOL_SIZE to it, so that
 * a test can hold them all. */
#define POOL_THREADS 4

static syncd_test_server_t mongo, redis;

typedef struct cluster cluster_t;

typedef struct tnode {
    cluster_t *cl;
    int index;
    char dir[256];
    syncd_store_t *store;
    syncd_bus_t *bus;
    syncd_node_t *node;
    syncd_node_watch_t *watch;
    int64_t last;     /* last seq the watcher saw */
    int events;       /* events the watcher saw */
    int order_errors; /* events not at last + 1 */
    int resyncs;      /* RESYNC signals */
    int64_t resync_seq;
    int closed;       /* CLOSED signals */
    int down;         /* node and bus closed */
    int check_cache;  /* look up each event's document in the cache */
    int cache_behind; /* events heard of before the cache held them */
} tnode_t;

/* A storm of edits: jobs on the thread pool, each published by its
 * writer. */
typedef struct storm {
    int total, started, done, inflight, parallel;
    int publishing; /* publishes not yet completed */
    unsigned seed;
    void (*fault)(cluster_t *cl, int job); /* runs as job k starts */
} storm_t;

struct cluster {
    uv_loop_t loop;
    uv_timer_t poll;
    const char *coll;
    tnode_t n[NODES];
    storm_t storm;
    int (*cond)(cluster_t *cl);
    int met, polls;
    int64_t bus_seq; /* last seq read after the storm ended; -1 unknown */
    int seq_inflight;
    int seq_after_storm; /* the seq read in flight was sent after it ended */
    int ae_pending;
    uint64_t ae_repaired;
};

typedef struct cluster_opts {
    const char *secret;
    uint64_t event_log_len;
    size_t max_event_bytes; /* node 0's; 0 keeps the default */
    int64_t cache_ttl_ms;   /* every node's; 0 keeps the default */
    int64_t ae_interval_ms; /* node 1's anti-entropy timer; 0: none */
    size_t ae_chunk;        /* node 1's; 0 keeps the default */
    void (*ae_chunk_hook)(void *data, const char *coll); /* node 1's */
    void *hook_data;
    size_t max_apply_queue; /* node 1's; 0 keeps the default */
} cluster_opts_t;

/* ---- Watchers ------------------------------------------------------------ */

/* Counts an event of n's watcher whose version n's cache does not hold. */
static void check_cached(tnode_t *n, const json_t *event)
{
    const char *id = json_string_value(json_object_get(event, "id"));
    syncd_doc_t *doc = NULL;

    if (syncd_store_cached(n->store, &doc, n->cl->coll, id, NULL) != 0 ||
        doc->version < json_integer_value(json_object_get(event, "v")))
        n->cache_behind++;
    syncd_doc_free(doc);
}

static void on_watch(syncd_node_signal_t signal, int64_t seq,
                     const json_t *event, void *payload)
{
    tnode_t *n = payload;

    switch (signal) {
    case SYNCD_NODE_EVENT:
        assert_non_null(event);
        assert_int_equal(json_integer_value(json_object_get(event, "seq")),
                         seq);
        if (seq != n->last + 1)
            n->order_errors++;
        if (n->check_cache)
            check_cached(n, event);
        n->last = seq;
        n->events++;
        break;
    case SYNCD_NODE_RESYNC:
        n->resyncs++;
        n->resync_seq = seq;
        n->watch = NULL;
        break;
    case SYNCD_NODE_CLOSED:
        n->closed++;
        n->watch = NULL;
        break;
    }
}

static void watch_from(tnode_t *n, int64_t since)
{
    syncd_error_t err;

    syncd_error_clear(&err);
    n->last = since;
    assert_int_equal(syncd_node_watch(n->node, &n->watch, n->cl->coll, NULL,
                                      since, on_watch, n, &err),
                     0);
}

/* ---- Cluster ------------------------------------------------------------- */

static void warm_up(cluster_t *cl);

/* Opens the nodes on coll with a watcher each, and warms them up. */
static void cluster_open(cluster_t *cl, const char *coll,
                         const cluster_opts_t *co)
{
    syncd_error_t err;

    memset(cl, 0, sizeof(*cl));
    assert_int_equal(uv_loop_init(&cl->loop), 0);
    assert_int_equal(uv_timer_init(&cl->loop, &cl->poll), 0);
    cl->poll.data = cl;
    cl->coll = coll;
    cl->bus_seq = -1;
    for (int i = 0; i < NODES; i++) {
        tnode_t *n = &cl->n[i];
        syncd_store_options_t so;
        syncd_bus_options_t bo;
        syncd_node_options_t no;
        char id[16];

        syncd_error_clear(&err);
        n->cl = cl;
        n->index = i;
        snprintf(id, sizeof(id), "node-%d", i);
        assert_int_equal(syncd_test_tmpdir(n->dir, sizeof(n->dir), "node"), 0);
        syncd_store_options_init(&so);
        so.mongo_uri = mongo.uri;
        so.database = DB;
        so.data_dir = n->dir;
        so.node_id = id;
        if (co != NULL && co->cache_ttl_ms > 0)
            so.cache_ttl_ms = co->cache_ttl_ms;
        assert_int_equal(syncd_store_open(&n->store, &so, &err), 0);
        syncd_bus_options_init(&bo);
        bo.redis_url = redis.uri;
        bo.database = BUS_DB;
        bo.node_id = id;
        bo.secret = co != NULL ? co->secret : NULL;
        if (co != NULL && co->event_log_len > 0)
            bo.event_log_len = co->event_log_len;
        bo.reconnect_min_ms = 20;
        bo.reconnect_max_ms = 200;
        /* No test here waits on a frozen Redis: a loaded machine's slow
         * answer must not fail a publish. */
        bo.command_timeout_ms = 30000;
        assert_int_equal(syncd_bus_open(&n->bus, &cl->loop, &bo, &err), 0);
        syncd_node_options_init(&no);
        no.node_id = id;
        no.anti_entropy_interval_ms = 0; /* runs are explicit in tests */
        if (i == 0 && co != NULL && co->max_event_bytes > 0)
            no.max_event_bytes = co->max_event_bytes;
        if (i == 1 && co != NULL) {
            no.anti_entropy_interval_ms = co->ae_interval_ms;
            if (co->ae_chunk > 0)
                no.anti_entropy_chunk = co->ae_chunk;
            no.ae_chunk_hook = co->ae_chunk_hook;
            no.hook_data = co->hook_data;
            if (co->max_apply_queue > 0)
                no.max_apply_queue = co->max_apply_queue;
        }
        assert_int_equal(
            syncd_node_open(&n->node, &cl->loop, n->store, n->bus, &no, &err),
            0);
        watch_from(n, 0);
    }
    warm_up(cl);
}

static void on_bus_closed(void *payload)
{
    tnode_t *n = payload;

    n->down = 1;
}

static void on_node_closed(void *payload)
{
    tnode_t *n = payload;

    syncd_bus_close(n->bus, on_bus_closed, n);
}

/* Closes nodes, then buses, and checks the loop closes clean. */
static void cluster_close(cluster_t *cl)
{
    for (int i = 0; i < NODES; i++) {
        int had_watch = cl->n[i].watch != NULL;
        int closed = cl->n[i].closed;

        syncd_node_close(cl->n[i].node, on_node_closed, &cl->n[i]);
        assert_int_equal(cl->n[i].closed, closed + had_watch);
    }
    uv_close((uv_handle_t *)&cl->poll, NULL);
    assert_int_equal(uv_run(&cl->loop, UV_RUN_DEFAULT), 0);
    for (int i = 0; i < NODES; i++) {
        assert_true(cl->n[i].down);
        syncd_store_close(cl->n[i].store);
        syncd_test_rmtree(cl->n[i].dir);
    }
    assert_int_equal(uv_loop_close(&cl->loop), 0);
}

/* ---- Running the loop until a condition holds ------------------------------
 */

static void on_bus_seq(int status, int64_t seq, void *payload)
{
    cluster_t *cl = payload;

    cl->seq_inflight = 0;
    /* A read sent while the storm still ran may predate its last
     * publish. */
    if (status == 0 && cl->seq_after_storm)
        cl->bus_seq = seq;
}

static void on_poll(uv_timer_t *timer)
{
    cluster_t *cl = timer->data;

    if (!cl->seq_inflight) {
        cl->seq_after_storm =
            cl->storm.done == cl->storm.total && cl->storm.publishing == 0;
        cl->seq_inflight =
            syncd_bus_seq(cl->n[0].bus, cl->coll, on_bus_seq, cl) == 0;
    }
    if (cl->cond(cl)) {
        cl->met = 1;
        uv_stop(&cl->loop);
    } else if (++cl->polls > MAX_POLLS) {
        uv_stop(&cl->loop);
    }
}

static void run_until(cluster_t *cl, int (*cond)(cluster_t *cl))
{
    cl->cond = cond;
    cl->met = 0;
    cl->polls = 0;
    uv_timer_start(&cl->poll, on_poll, 0, 10);
    uv_run(&cl->loop, UV_RUN_DEFAULT);
    uv_timer_stop(&cl->poll);
    /* Let a pending seq read land before the next phase. */
    while (cl->seq_inflight)
        uv_run(&cl->loop, UV_RUN_ONCE);
    if (!cl->met)
        fail_msg("stuck: storm %d/%d publishing %d, bus seq %lld, nodes at "
                 "%lld %lld %lld, watchers at %lld %lld %lld",
                 cl->storm.done, cl->storm.total, cl->storm.publishing,
                 (long long)cl->bus_seq,
                 (long long)syncd_node_seq(cl->n[0].node, cl->coll),
                 (long long)syncd_node_seq(cl->n[1].node, cl->coll),
                 (long long)syncd_node_seq(cl->n[2].node, cl->coll),
                 (long long)cl->n[0].last, (long long)cl->n[1].last,
                 (long long)cl->n[2].last);
}

/* Every node has applied up to the bus's seq, and every live watcher has
 * seen it. */
static int synced(cluster_t *cl)
{
    if (cl->storm.done < cl->storm.total || cl->storm.publishing > 0 ||
        cl->bus_seq < 0)
        return 0;
    for (int i = 0; i < NODES; i++) {
        if (syncd_node_seq(cl->n[i].node, cl->coll) != cl->bus_seq)
            return 0;
        if (cl->n[i].watch != NULL && cl->n[i].last != cl->bus_seq)
            return 0;
    }
    return 1;
}

static void wait_synced(cluster_t *cl)
{
    cl->bus_seq = -1;
    run_until(cl, synced);
}

static void on_ae(int status, uint64_t repaired, void *payload)
{
    cluster_t *cl = payload;

    assert_int_equal(status, 0);
    cl->ae_repaired += repaired;
    cl->ae_pending--;
}

static int ae_done(cluster_t *cl)
{
    return cl->ae_pending == 0;
}

/* Runs one anti-entropy pass on every node; returns the repairs made. */
static uint64_t anti_entropy(cluster_t *cl)
{
    cl->ae_repaired = 0;
    for (int i = 0; i < NODES; i++) {
        assert_int_equal(syncd_node_anti_entropy(cl->n[i].node, on_ae, cl), 0);
        cl->ae_pending++;
    }
    run_until(cl, ae_done);
    return cl->ae_repaired;
}

/* ---- Writes on the thread pool ------------------------------------------ */

typedef struct job {
    uv_work_t req;
    cluster_t *cl;
    int writer;
    unsigned r;
    char id[32];
    json_t *body; /* for puts */
    syncd_change_t *change;
    int status;
} job_t;

/* Bumps "n", records the writer, and on some edits flips "x" between 1
 * and null (a change no merge patch can express). */
static int edit_bump(json_t *body, void *arg, syncd_error_t *err)
{
    job_t *j = arg;
    json_t *x = json_object_get(body, "x");

    (void)err;
    json_object_set_new(
        body, "n",
        json_integer(json_integer_value(json_object_get(body, "n")) + 1));
    json_object_set_new(body, "by", json_integer(j->writer));
    if (j->r % 10 == 2)
        json_object_set_new(body, "x",
                            json_is_null(x) ? json_integer(1) : json_null());
    return 0;
}

static void job_run(uv_work_t *req)
{
    job_t *j = req->data;
    syncd_store_t *store = j->cl->n[j->writer].store;
    const char *coll = j->cl->coll;

    switch (j->body != NULL ? 1 : j->r % 10) {
    case 0:
        j->status = syncd_store_delete(store, &j->change, coll, j->id,
                                       SYNCD_ANY_VERSION, NULL);
        break;
    case 1:
        j->status = syncd_store_put(store, &j->change, coll, j->id, j->body,
                                    SYNCD_ANY_VERSION, NULL);
        break;
    default:
        j->status = syncd_store_edit(store, &j->change, coll, j->id, edit_bump,
                                     j, SYNCD_ANY_VERSION, NULL);
        if (j->status == SYNCD_ENOTFOUND) {
            json_t *fresh = json_pack("{s:i}", "n", 1);
            j->status =
                syncd_store_create(store, &j->change, coll, j->id, fresh, NULL);
            json_decref(fresh);
        }
        break;
    }
}

static void storm_next(cluster_t *cl);

static void on_job_published(int status, int64_t seq, void *payload)
{
    cluster_t *cl = payload;

    (void)status;
    (void)seq;
    cl->storm.publishing--;
}

static void job_done(uv_work_t *req, int status)
{
    job_t *j = req->data;
    cluster_t *cl = j->cl;

    assert_int_equal(status, 0);
    if (j->status == 0 && j->change != NULL &&
        syncd_node_publish(cl->n[j->writer].node, j->change, on_job_published,
                           cl) == 0)
        cl->storm.publishing++;
    syncd_change_free(j->change);
    json_decref(j->body);
    free(j);
    cl->storm.inflight--;
    cl->storm.done++;
    storm_next(cl);
}

/* Starts write jobs until parallel are in flight or all are started. */
static void storm_next(cluster_t *cl)
{
    storm_t *s = &cl->storm;

    while (s->started < s->total && s->inflight < s->parallel) {
        job_t *j = calloc(1, sizeof(*j));
        assert_non_null(j);
        if (s->fault != NULL)
            s->fault(cl, s->started);
        j->req.data = j;
        j->cl = cl;
        j->r = (unsigned)rand_r(&s->seed);
        j->writer = (int)(j->r / 16 % NODES);
        snprintf(j->id, sizeof(j->id), "doc-%u", j->r / 64 % DOCS);
        if (j->r % 10 == 1)
            j->body = json_pack("{s:i,s:i}", "n", 0, "fresh", (int)j->r);
        s->started++;
        s->inflight++;
        assert_int_equal(uv_queue_work(&cl->loop, &j->req, job_run, job_done),
                         0);
    }
}

static int storm_over(cluster_t *cl)
{
    return cl->storm.done == cl->storm.total && cl->storm.publishing == 0;
}

/* Runs total writes, parallel at a time, with fault() before each job;
 * then waits for every node. */
static void storm(cluster_t *cl, int total, int parallel, unsigned seed,
                  void (*fault)(cluster_t *cl, int job))
{
    memset(&cl->storm, 0, sizeof(cl->storm));
    cl->storm.total = total;
    cl->storm.parallel = parallel;
    cl->storm.seed = seed;
    cl->storm.fault = fault;
    storm_next(cl);
    run_until(cl, storm_over);
    wait_synced(cl);
}

/* One write of body to id by writer, published; waits for every node. */
static void write_one(cluster_t *cl, int writer, const char *id,
                      json_t *body_new)
{
    job_t *j = calloc(1, sizeof(*j));

    assert_non_null(j);
    memset(&cl->storm, 0, sizeof(cl->storm));
    cl->storm.total = 1;
    cl->storm.started = 1;
    cl->storm.inflight = 1;
    j->req.data = j;
    j->cl = cl;
    j->writer = writer;
    j->r = 1; /* a put */
    j->body = body_new;
    snprintf(j->id, sizeof(j->id), "%s", id);
    assert_int_equal(uv_queue_work(&cl->loop, &j->req, job_run, job_done), 0);
    wait_synced(cl);
}

/* Creates a document and waits until every node has applied it, so every
 * node is subscribed; then runs one anti-entropy pass, which finds nothing
 * to repair. */
static void warm_up(cluster_t *cl)
{
    write_one(cl, 0, "warmup", json_pack("{s:i}", "n", 0));
    assert_int_equal(anti_entropy(cl), 0);
}

/* ---- Checks -------------------------------------------------------------- */

/* Every node serves exactly what the store holds: each live entry its
 * cache holds has the store's version and hash, and a read through the
 * node's store of each live document returns the store's version, hash and
 * body. (A cache holds what the node was told of or read, not necessarily
 * every document.) */
static void assert_converged(cluster_t *cl)
{
    json_t *truth = NULL, *by_id = json_object();
    json_t *e;
    size_t k;

    assert_int_equal(
        syncd_store_list(cl->n[0].store, &truth, cl->coll, NULL, NULL, 0, NULL),
        0);
    assert_true(json_array_size(truth) > 0);
    json_array_foreach (truth, k, e) {
        json_object_set(by_id, json_string_value(json_object_get(e, "id")), e);
    }
    for (int i = 0; i < NODES; i++) {
        syncd_store_t *store = cl->n[i].store;
        json_t *cached = NULL;

        assert_int_equal(syncd_store_cache_list(store, &cached, cl->coll, NULL),
                         0);
        json_array_foreach (cached, k, e) {
            json_t *real = json_object_get(
                by_id, json_string_value(json_object_get(e, "id")));

            if (real == NULL || !json_equal(e, real)) {
                char *a = json_dumps(e, JSON_COMPACT);
                char *b = json_dumps(real, JSON_COMPACT);
                fail_msg("node %d caches %s\n  store has %s", i, a,
                         b != NULL ? b : "nothing");
            }
        }
        json_decref(cached);
        json_array_foreach (truth, k, e) {
            const char *id = json_string_value(json_object_get(e, "id"));
            syncd_doc_t *mine = NULL, *real = NULL;

            assert_int_equal(syncd_store_get(store, &mine, cl->coll, id, NULL),
                             0);
            assert_int_equal(
                syncd_store_refetch(store, &real, cl->coll, id, NULL), 0);
            assert_int_equal(mine->version, real->version);
            assert_string_equal(mine->hash, real->hash);
            assert_true(json_equal(mine->body, real->body));
            syncd_doc_free(mine);
            syncd_doc_free(real);
        }
    }
    json_decref(by_id);
    json_decref(truth);
}

/* Each watcher saw every seq once, in order, up to the bus's seq. */
static void assert_watchers_saw_all(cluster_t *cl)
{
    for (int i = 0; i < NODES; i++) {
        assert_int_equal(cl->n[i].order_errors, 0);
        assert_int_equal(cl->n[i].resyncs, 0);
        assert_int_equal(cl->n[i].last, cl->bus_seq);
        assert_int_equal(cl->n[i].events, cl->bus_seq);
    }
}

static void node_stats(cluster_t *cl, int i, syncd_node_stats_t *out)
{
    syncd_node_stats(cl->n[i].node, out);
}

/* ---- Crafted events ------------------------------------------------------ */

/* Commits a put of body_new on writer's store without publishing it;
 * returns the change (caller frees). */
static syncd_change_t *commit_unpublished(cluster_t *cl, int writer,
                                          const char *id, json_t *body_new)
{
    syncd_change_t *change = NULL;

    assert_int_equal(syncd_store_put(cl->n[writer].store, &change, cl->coll, id,
                                     body_new, SYNCD_ANY_VERSION, NULL),
                     0);
    json_decref(body_new);
    return change;
}

static void on_published(int status, int64_t seq, void *payload)
{
    cluster_t *cl = payload;

    assert_int_equal(status, 0);
    assert_true(seq > 0);
    cl->storm.publishing--;
}

/* Publishes change through writer's node and waits for every node. */
static void publish_change(cluster_t *cl, int writer,
                           const syncd_change_t *change)
{
    memset(&cl->storm, 0, sizeof(cl->storm));
    cl->storm.publishing = 1;
    assert_int_equal(
        syncd_node_publish(cl->n[writer].node, change, on_published, cl), 0);
    wait_synced(cl);
}

/* Makes the bus forget which versions it published in cl's collection, so
 * that a publish of an old or repeated version reaches the receivers (the
 * bus drops those at the source otherwise). */
static void forget_published(cluster_t *cl)
{
    char key[128];

    snprintf(key, sizeof(key), "syncd:%s:%s:pubv", BUS_DB, cl->coll);
    assert_int_equal(syncd_test_redis_cli(&redis, "DEL", key, NULL), 0);
}

/* Publishes a hand-made event straight on node 0's bus and waits. */
static void publish_raw(cluster_t *cl, json_t *event_new)
{
    memset(&cl->storm, 0, sizeof(cl->storm));
    cl->storm.publishing = 1;
    assert_int_equal(
        syncd_bus_publish(cl->n[0].bus, event_new, on_published, cl), 0);
    json_decref(event_new);
    wait_synced(cl);
}

/* ---- Tests --------------------------------------------------------------- */

static void
test_node__three_nodes_editing_concurrently_converge_and_watchers_see_every_seq_once(
    void **state)
{
    cluster_t cl;
    syncd_node_stats_t st;

    (void)state;
    cluster_open(&cl, "converge", NULL);
    storm(&cl, 300, 6, 42, NULL);
    assert_converged(&cl);
    assert_watchers_saw_all(&cl);
    /* Events alone converged the caches: nothing left to repair. */
    assert_int_equal(anti_entropy(&cl), 0);
    node_stats(&cl, 1, &st);
    assert_true(st.events_applied > 0);
    cluster_close(&cl);
}

static void
test_node__backlog_published_at_once_is_applied_in_order_before_watchers_hear_of_it(
    void **state)
{
    enum { BACKLOG_DOCS = 4, BACKLOG_EDITS = 300 };
    cluster_t cl;
    syncd_change_t *changes[BACKLOG_EDITS];

    (void)state;
    cluster_open(&cl, "backlog", NULL);
    for (int k = 0; k < BACKLOG_EDITS; k++) {
        char id[16];

        snprintf(id, sizeof(id), "doc-%d", k % BACKLOG_DOCS);
        changes[k] = commit_unpublished(
            &cl, 0, id,
            json_pack("{s:i,s:s}", "n", k, "pad", "some body text"));
    }
    for (int i = 0; i < NODES; i++)
        cl.n[i].check_cache = 1;
    /* Every event is published before the loop runs again, so each
     * reader receives a backlog far longer than one event. */
    memset(&cl.storm, 0, sizeof(cl.storm));
    cl.storm.publishing = BACKLOG_EDITS;
    for (int k = 0; k < BACKLOG_EDITS; k++)
        assert_int_equal(
            syncd_node_publish(cl.n[0].node, changes[k], on_published, &cl), 0);
    wait_synced(&cl);
    for (int i = 0; i < NODES; i++)
        assert_int_equal(cl.n[i].cache_behind, 0);
    assert_converged(&cl);
    assert_watchers_saw_all(&cl);
    for (int k = 0; k < BACKLOG_EDITS; k++)
        syncd_change_free(changes[k]);
    cluster_close(&cl);
}

static void kill_pubsub_clients(cluster_t *cl, int job)
{
    (void)cl;
    if (job == 60 || job == 150 || job == 240)
        assert_int_equal(syncd_test_redis_cli(&redis, "CLIENT", "KILL", "TYPE",
                                              "pubsub", NULL),
                         0);
}

static void
test_node__pubsub_clients_killed_mid_storm_catch_up_from_the_replay_log(
    void **state)
{
    cluster_t cl;
    syncd_bus_stats_t bs;

    (void)state;
    cluster_open(&cl, "killed", NULL);
    storm(&cl, 300, 6, 7, kill_pubsub_clients);
    assert_converged(&cl);
    assert_watchers_saw_all(&cl);
    assert_int_equal(anti_entropy(&cl), 0);
    syncd_bus_stats(cl.n[1].bus, &bs);
    assert_true(bs.reconnects > 0);
    cluster_close(&cl);
}

static void restart_redis(cluster_t *cl, int job)
{
    (void)cl;
    if (job == 100) {
        assert_int_equal(
            syncd_test_redis_cli(&redis, "SHUTDOWN", "NOSAVE", NULL), 0);
        /* Reaps the exited server; reconnects then find the port closed. */
        assert_int_equal(syncd_test_server_stop(&redis), 0);
    }
    if (job == 140)
        assert_int_equal(syncd_test_server_restart(&redis), 0);
}

static void
test_node__redis_restarted_mid_storm_converges_and_watchers_are_told_to_resync(
    void **state)
{
    cluster_t cl;

    (void)state;
    cluster_open(&cl, "restarted", NULL);
    storm(&cl, 250, 4, 99, restart_redis);
    /* Changes committed while Redis was down were never published: the
     * resync after the restart or anti-entropy repairs them. */
    anti_entropy(&cl);
    assert_converged(&cl);
    for (int i = 0; i < NODES; i++) {
        tnode_t *n = &cl.n[i];
        syncd_bus_stats_t bs;

        /* Every bus finds that Redis lost its data, whichever of them
         * sets the epoch again. */
        syncd_bus_stats(n->bus, &bs);
        assert_true(bs.resyncs >= 1);
        assert_int_equal(n->order_errors, 0);
        /* Each node's cache missed what the other nodes committed while
         * Redis was down (never published): the resync repairs it, and
         * each watcher is told, never silently skipped. */
        assert_int_equal(n->resyncs, 1);
        assert_null(n->watch);
    }
    cluster_close(&cl);
}

static void
test_node__duplicate_and_out_of_order_events_are_dropped_and_counted(
    void **state)
{
    cluster_t cl;
    syncd_change_t *v2, *v3;
    syncd_node_stats_t before, after;

    (void)state;
    cluster_open(&cl, "reorder", NULL);
    write_one(&cl, 0, "doc", json_pack("{s:i}", "n", 1));
    node_stats(&cl, 1, &before);

    v2 = commit_unpublished(&cl, 0, "doc", json_pack("{s:i}", "n", 2));
    v3 = commit_unpublished(&cl, 0, "doc", json_pack("{s:i}", "n", 3));
    publish_change(&cl, 0, v3); /* base 2 on caches at 1: a gap */
    forget_published(&cl);
    publish_change(&cl, 0, v2); /* older than the refetched v3 */
    forget_published(&cl);
    publish_change(&cl, 0, v3); /* a duplicate */
    node_stats(&cl, 1, &after);
    assert_int_equal(after.refetches - before.refetches, 1);
    assert_int_equal(after.events_dropped_old - before.events_dropped_old, 1);
    assert_int_equal(
        after.events_dropped_duplicate - before.events_dropped_duplicate, 1);
    assert_converged(&cl);
    assert_watchers_saw_all(&cl);
    syncd_change_free(v2);
    syncd_change_free(v3);
    cluster_close(&cl);
}

/* Returns the event a node would publish for change, from origin. */
static json_t *event_for(const syncd_change_t *change, const char *origin)
{
    return json_pack("{s:s,s:s,s:s,s:I,s:I,s:O,s:O?,s:s,s:s,s:s}", "op",
                     syncd_change_op_name(change->op), "coll",
                     change->doc->coll, "id", change->doc->id, "v",
                     (json_int_t)change->doc->version, "base",
                     (json_int_t)change->base, "patch", change->patch, "merge",
                     change->merge, "h", change->doc->hash, "origin", origin,
                     "ts", "2026-11-24T10:00:00.000000Z");
}

static void
test_node__corrupted_patch_fails_the_hash_check_and_is_refetched(void **state)
{
    cluster_t cl;
    syncd_change_t *change;
    syncd_node_stats_t before, after;
    json_t *ev;

    (void)state;
    cluster_open(&cl, "corrupt", NULL);
    write_one(&cl, 0, "doc", json_pack("{s:i,s:s}", "n", 1, "s", "a"));
    node_stats(&cl, 2, &before);
    change = commit_unpublished(&cl, 0, "doc",
                                json_pack("{s:i,s:s}", "n", 2, "s", "a"));
    ev = event_for(change, "mallory");
    /* The patch now writes 3 where the hash says 2. */
    json_object_set_new(ev, "patch",
                        json_pack("[{s:s,s:s,s:i}]", "op", "replace", "path",
                                  "/n", "value", 3));
    json_object_set_new(ev, "merge", json_pack("{s:i}", "n", 3));
    publish_raw(&cl, ev);
    node_stats(&cl, 2, &after);
    assert_int_equal(after.hash_mismatches - before.hash_mismatches, 1);
    assert_int_equal(after.refetches - before.refetches, 1);
    assert_converged(&cl);
    syncd_change_free(change);
    cluster_close(&cl);
}

/* A body of about 20 KB (large enough for a hash tree in the node cache)
 * with member "m-<changed>" set to n. */
static json_t *large_body(int changed, int n)
{
    json_t *body = json_object();
    char key[16];

    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "m-%03d", i);
        json_object_set_new(
            body, key,
            json_pack("{s:i, s:s}", "n", i == changed ? n : 0, "s",
                      "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));
    }
    return body;
}

/* Checks that node i caches coll/id with the store's version and body. */
static void assert_cached_body(cluster_t *cl, int i, const char *id)
{
    syncd_doc_t *cached = NULL, *real = NULL;

    assert_int_equal(
        syncd_store_cached(cl->n[i].store, &cached, cl->coll, id, NULL), 0);
    assert_int_equal(
        syncd_store_refetch(cl->n[0].store, &real, cl->coll, id, NULL), 0);
    assert_int_equal(cached->version, real->version);
    assert_string_equal(cached->hash, real->hash);
    assert_true(json_equal(cached->body, real->body));
    syncd_doc_free(cached);
    syncd_doc_free(real);
}

static void
test_node__changes_to_a_large_cached_document_apply_in_place_and_a_tampered_one_is_refetched(
    void **state)
{
    cluster_t cl;
    syncd_change_t *change;
    syncd_node_stats_t before, after;
    json_t *ev;

    (void)state;
    cluster_open(&cl, "large", NULL);
    write_one(&cl, 0, "doc", large_body(0, 0));
    node_stats(&cl, 2, &before);
    for (int n = 1; n <= 30; n++)
        write_one(&cl, 0, "doc", large_body(n * 7 % 300, n));
    node_stats(&cl, 2, &after);
    assert_int_equal(after.events_applied - before.events_applied, 30);
    assert_int_equal(after.refetches - before.refetches, 0);
    assert_int_equal(after.hash_mismatches - before.hash_mismatches, 0);
    for (int i = 1; i < NODES; i++)
        assert_cached_body(&cl, i, "doc");

    /* A patch that does not make the event's hash: found on the tree. */
    node_stats(&cl, 2, &before);
    change = commit_unpublished(&cl, 0, "doc", large_body(5, 99));
    ev = event_for(change, "mallory");
    json_object_set_new(ev, "patch",
                        json_pack("[{s:s,s:s,s:i}]", "op", "replace", "path",
                                  "/m-005/n", "value", 98));
    publish_raw(&cl, ev);
    node_stats(&cl, 2, &after);
    assert_int_equal(after.hash_mismatches - before.hash_mismatches, 1);
    assert_int_equal(after.refetches - before.refetches, 1);
    assert_converged(&cl);
    for (int i = 1; i < NODES; i++)
        assert_cached_body(&cl, i, "doc");
    assert_watchers_saw_all(&cl);
    syncd_change_free(change);
    cluster_close(&cl);
}

static void
test_node__amplifying_patch_in_an_event_is_not_applied_and_is_refetched(
    void **state)
{
    cluster_t cl;
    syncd_change_t *change;
    syncd_node_stats_t before, after;
    json_t *ev, *bomb = json_array();

    (void)state;
    cluster_open(&cl, "bomb", NULL);
    write_one(&cl, 0, "doc", json_pack("{s:i,s:s}", "n", 1, "s", "a"));
    node_stats(&cl, 2, &before);
    change = commit_unpublished(&cl, 0, "doc",
                                json_pack("{s:i,s:s}", "n", 2, "s", "a"));
    ev = event_for(change, "mallory");
    /* 60 copies of the whole document, each doubling it: 2^60 times its
     * size if applied without a bound. */
    for (int i = 0; i < 60; i++) {
        char path[16];

        snprintf(path, sizeof(path), "/a%d", i);
        json_array_append_new(bomb, json_pack("{s:s,s:s,s:s}", "op", "copy",
                                              "from", "", "path", path));
    }
    json_object_set_new(ev, "patch", bomb);
    publish_raw(&cl, ev);
    node_stats(&cl, 2, &after);
    assert_int_equal(after.refetches - before.refetches, 1);
    assert_converged(&cl);
    syncd_change_free(change);
    cluster_close(&cl);
}

static void test_node__forged_event_with_a_bad_signature_is_dropped_and_counted(
    void **state)
{
    cluster_t cl;
    cluster_opts_t co = {.secret = "cluster-secret"};
    syncd_bus_stats_t bs;
    char chan[128], msg[1024];

    (void)state;
    cluster_open(&cl, "forged", &co);
    write_one(&cl, 0, "doc", json_pack("{s:i}", "n", 1));
    snprintf(chan, sizeof(chan), "syncd:%s:%s", BUS_DB, cl.coll);
    snprintf(msg, sizeof(msg),
             "{\"seq\":%lld,\"op\":\"update\",\"coll\":\"%s\",\"id\":\"doc\","
             "\"v\":9,\"base\":1,\"patch\":[{\"op\":\"replace\",\"path\":"
             "\"/n\",\"value\":666}],\"merge\":{\"n\":666},\"h\":\"%064d\","
             "\"origin\":\"mallory\",\"ts\":\"2026-11-24T10:00:00.000000Z\","
             "\"sig\":\"%064d\"}",
             (long long)cl.bus_seq + 1, cl.coll, 0, 0);
    assert_int_equal(syncd_test_redis_cli(&redis, "PUBLISH", chan, msg, NULL),
                     0);
    /* A genuine change after the forgery still flows to every node. */
    write_one(&cl, 1, "doc", json_pack("{s:i}", "n", 2));
    for (int i = 0; i < NODES; i++) {
        syncd_bus_stats(cl.n[i].bus, &bs);
        assert_int_equal(bs.dropped_signature, 1);
    }
    assert_converged(&cl);
    assert_watchers_saw_all(&cl);
    cluster_close(&cl);
}

static void test_node__change_without_a_merge_patch_converges(void **state)
{
    cluster_t cl;
    syncd_change_t *change;

    (void)state;
    cluster_open(&cl, "nullmember", NULL);
    write_one(&cl, 0, "doc", json_pack("{s:i,s:i}", "n", 1, "x", 1));
    change =
        commit_unpublished(&cl, 1, "doc", json_pack("{s:i,s:n}", "n", 1, "x"));
    assert_null(change->merge);
    assert_non_null(change->patch);
    publish_change(&cl, 1, change);
    assert_converged(&cl);
    assert_watchers_saw_all(&cl);
    syncd_change_free(change);
    cluster_close(&cl);
}

static void on_invalidate_watch(syncd_node_signal_t signal, int64_t seq,
                                const json_t *event, void *payload)
{
    int *invalidates = payload;

    (void)seq;
    if (signal == SYNCD_NODE_EVENT &&
        json_is_null(json_object_get(event, "patch")) &&
        json_is_null(json_object_get(event, "merge")))
        (*invalidates)++;
}

static void
test_node__change_beyond_max_event_bytes_is_an_invalidate_and_receivers_refetch(
    void **state)
{
    cluster_t cl;
    cluster_opts_t co = {.max_event_bytes = 4096};
    syncd_node_stats_t before, after;
    syncd_node_watch_t *w;
    char *big = malloc(20000);
    int invalidates = 0;

    (void)state;
    assert_non_null(big);
    memset(big, 'x', 19999);
    big[19999] = '\0';
    cluster_open(&cl, "invalidate", &co);
    assert_int_equal(syncd_node_watch(cl.n[1].node, &w, cl.coll, NULL, -1,
                                      on_invalidate_watch, &invalidates, NULL),
                     0);
    write_one(&cl, 0, "doc", json_pack("{s:i}", "n", 1));
    node_stats(&cl, 1, &before);
    write_one(&cl, 0, "doc", json_pack("{s:i,s:s}", "n", 2, "big", big));
    node_stats(&cl, 1, &after);
    assert_int_equal(invalidates, 1);
    assert_int_equal(after.refetches - before.refetches, 1);
    assert_converged(&cl);
    syncd_node_unwatch(w);
    free(big);
    cluster_close(&cl);
}

static void on_keep_last(syncd_node_signal_t signal, int64_t seq,
                         const json_t *event, void *payload)
{
    json_t **last = payload;

    (void)seq;
    if (signal == SYNCD_NODE_EVENT) {
        json_decref(*last);
        *last = json_incref((json_t *)event);
    }
}

/* Writes body over doc and checks the event node 1's watcher gets: the
 * body as a root replace, merge as want_merge (NULL: null), and node 1
 * applied it with no refetch. */
static void check_root_replace(cluster_t *cl, json_t *body, json_t *want_merge)
{
    json_t *last = NULL, *want_patch;
    syncd_node_stats_t before, after;
    syncd_node_watch_t *w;

    assert_int_equal(syncd_node_watch(cl->n[1].node, &w, cl->coll, NULL, -1,
                                      on_keep_last, &last, NULL),
                     0);
    node_stats(cl, 1, &before);
    want_patch = json_pack("[{s:s,s:s,s:O}]", "op", "replace", "path", "",
                           "value", body);
    write_one(cl, 0, "doc", body);
    node_stats(cl, 1, &after);
    assert_non_null(last);
    assert_true(json_equal(json_object_get(last, "patch"), want_patch));
    if (want_merge != NULL)
        assert_true(json_equal(json_object_get(last, "merge"), want_merge));
    else
        assert_true(json_is_null(json_object_get(last, "merge")));
    assert_int_equal(after.refetches - before.refetches, 0);
    assert_int_equal(after.hash_mismatches - before.hash_mismatches, 0);
    assert_int_equal(after.events_applied - before.events_applied, 1);
    assert_converged(cl);
    syncd_node_unwatch(w);
    json_decref(last);
    json_decref(want_patch);
    json_decref(want_merge);
}

static void
test_node__diff_larger_than_the_body_travels_as_the_body_and_applies_without_refetch(
    void **state)
{
    cluster_t cl;

    (void)state;
    cluster_open(&cl, "rootreplace", NULL);
    write_one(&cl, 0, "doc",
              json_pack("{s:[i,i,i,i,i,i],s:{s:s,s:s}}", "list", 1, 2, 3, 4, 5,
                        6, "labels", "owner", "alice", "tier", "gold"));
    /* Every member goes: the diff (two removes and an add) outweighs
     * {"n":1}; the change is a merge patch. */
    check_root_replace(&cl, json_pack("{s:i}", "n", 1),
                       json_pack("{s:n,s:n,s:i}", "list", "labels", "n", 1));
    /* A member set to null cannot be a merge patch: merge is null, the
     * patch still the body. */
    write_one(
        &cl, 0, "doc",
        json_pack("{s:s,s:s,s:s}", "aaaa", "xxxx", "bbbb", "yyyy", "x", "z"));
    check_root_replace(&cl, json_pack("{s:n}", "x"), NULL);
    cluster_close(&cl);
}

/* The version of later/d that later_cached() waits for on node 2. */
static int64_t later_want;

/* Node 2's cache holds later/d at later_want. */
static int later_cached(cluster_t *cl)
{
    syncd_doc_t *d = NULL;
    int ok = syncd_store_cached(cl->n[2].store, &d, "later", "d", NULL) == 0 &&
             d->version == later_want;

    syncd_doc_free(d);
    return ok;
}

static int later_published(cluster_t *cl)
{
    return cl->storm.publishing == 0;
}

/* Commits version v of later/d through node 0 and publishes it, without
 * waiting. */
static void later_write(cluster_t *cl, int v)
{
    syncd_change_t *change = NULL;
    json_t *body = json_pack("{s:i}", "n", v);

    assert_int_equal(syncd_store_put(cl->n[0].store, &change, "later", "d",
                                     body, SYNCD_ANY_VERSION, NULL),
                     0);
    assert_int_equal(change->doc->version, v);
    cl->storm.publishing++;
    assert_int_equal(
        syncd_node_publish(cl->n[0].node, change, on_published, cl), 0);
    syncd_change_free(change);
    json_decref(body);
}

/* A node with a cache subscribes to the collections it knows at start
 * and at anti-entropy runs. A document of a collection created later by
 * another node, cached by a read, is kept current once the node is told
 * of the read (as the API does for every GET): a change committed while
 * the node subscribes is repaired when it is subscribed, and later ones
 * arrive as events, with no anti-entropy run (none runs in these
 * tests). */
static void
test_node__a_document_read_from_a_collection_created_later_is_kept_current(
    void **state)
{
    cluster_t cl;
    syncd_doc_t *d = NULL;

    (void)state;
    cluster_open(&cl, "known", NULL);
    memset(&cl.storm, 0, sizeof(cl.storm));
    later_write(&cl, 1);
    run_until(&cl, later_published);
    assert_int_equal(syncd_store_get(cl.n[2].store, &d, "later", "d", NULL), 0);
    assert_int_equal(d->version, 1);
    syncd_doc_free(d);
    later_want = 1;
    assert_true(later_cached(&cl));

    syncd_node_note_read(cl.n[2].node, "later");
    later_write(&cl, 2);
    later_want = 2;
    run_until(&cl, later_cached);
    run_until(&cl, later_published);
    later_write(&cl, 3);
    later_want = 3;
    run_until(&cl, later_cached);
    run_until(&cl, later_published);
    cluster_close(&cl);
}

static void test_node__anti_entropy_heals_a_tampered_cache(void **state)
{
    cluster_t cl;
    syncd_node_stats_t st;
    syncd_doc_t *doc = NULL;

    (void)state;
    cluster_open(&cl, "tampered", NULL);
    storm(&cl, 40, 3, 5, NULL);
    write_one(&cl, 0, "victim", json_pack("{s:i}", "n", 1));
    /* Node 2 caches a version the store never had, node 0 a document the
     * store does not have: two real differences. */
    assert_int_equal(
        syncd_store_cached(cl.n[2].store, &doc, cl.coll, "victim", NULL), 0);
    doc->version += 5;
    json_decref(doc->body);
    doc->body = json_pack("{s:s}", "evil", "yes");
    assert_int_equal(syncd_store_cache_put(cl.n[2].store, doc, NULL), 1);
    free(doc->id);
    doc->id = strdup("ghost");
    assert_int_equal(syncd_store_cache_put(cl.n[0].store, doc, NULL), 1);
    syncd_doc_free(doc);
    /* Node 1 merely no longer holds one: nothing to repair, it reads the
     * document from the store when asked. */
    assert_int_equal(
        syncd_store_cache_invalidate(cl.n[1].store, cl.coll, "victim", NULL),
        0);
    assert_int_equal(anti_entropy(&cl), 2);
    for (int i = 0; i < NODES; i++) {
        node_stats(&cl, i, &st);
        assert_true(st.anti_entropy_runs >= 2);
        assert_int_equal(st.anti_entropy_repairs, i == 1 ? 0 : 1);
    }
    assert_int_equal(
        syncd_store_cached(cl.n[0].store, &doc, cl.coll, "ghost", NULL),
        SYNCD_ENOTFOUND);
    assert_converged(&cl);
    assert_int_equal(anti_entropy(&cl), 0);
    cluster_close(&cl);
}

/* Node 1's anti-entropy runs to wait for: its timer starts a run only once
 * the last one has finished, so when it has started this many, all runs
 * before the last have finished. */
static uint64_t ae_runs_target;

/* Node 1 has run enough and every entry of its cache has expired. */
static int node1_idled_until_expired(cluster_t *cl)
{
    syncd_node_stats_t st;
    json_t *cached = NULL;
    size_t n;

    syncd_node_stats(cl->n[1].node, &st);
    if (st.anti_entropy_runs < ae_runs_target)
        return 0;
    assert_int_equal(
        syncd_store_cache_list(cl->n[1].store, &cached, cl->coll, NULL), 0);
    n = json_array_size(cached);
    json_decref(cached);
    return n == 0;
}

static void
test_node__idle_node_with_an_expiring_cache_refetches_nothing_but_repairs_a_real_difference_once(
    void **state)
{
    enum { IDLE_DOCS = 300, IDLE_RUNS = 12 };
    cluster_opts_t co = {
        .cache_ttl_ms = 4000, .ae_interval_ms = 250, .ae_chunk = 100};
    syncd_change_t *changes[IDLE_DOCS], *behind;
    syncd_node_stats_t before, after;
    syncd_doc_t *doc = NULL;
    cluster_t cl;

    (void)state;
    /* 300 cached documents: three anti-entropy chunks on node 1. */
    cluster_open(&cl, "idle", &co);
    for (int k = 0; k < IDLE_DOCS; k++) {
        char id[16];

        snprintf(id, sizeof(id), "doc-%03d", k);
        changes[k] = commit_unpublished(&cl, 0, id, json_pack("{s:i}", "n", k));
    }
    memset(&cl.storm, 0, sizeof(cl.storm));
    cl.storm.publishing = IDLE_DOCS;
    for (int k = 0; k < IDLE_DOCS; k++)
        assert_int_equal(
            syncd_node_publish(cl.n[0].node, changes[k], on_published, &cl), 0);
    wait_synced(&cl);
    assert_int_equal(
        syncd_store_cached(cl.n[1].store, &doc, cl.coll, "doc-299", NULL), 0);
    assert_int_equal(doc->version, 1);
    syncd_doc_free(doc);
    node_stats(&cl, 1, &before);

    /* One document changes behind the nodes' backs: straight to the
     * store, never published. */
    behind = commit_unpublished(&cl, 0, "doc-299", json_pack("{s:i}", "n", -1));
    /* Node 1 idles through many anti-entropy runs while every entry of its
     * cache expires (the last to expire is the repaired document). */
    ae_runs_target = before.anti_entropy_runs + IDLE_RUNS;
    run_until(&cl, node1_idled_until_expired);
    node_stats(&cl, 1, &after);
    assert_int_equal(after.anti_entropy_repairs - before.anti_entropy_repairs,
                     1);
    assert_int_equal(after.refetches - before.refetches, 1);
    assert_int_equal(after.events_applied - before.events_applied, 0);
    assert_int_equal(
        syncd_store_get(cl.n[1].store, &doc, cl.coll, "doc-299", NULL), 0);
    assert_int_equal(doc->version, behind->doc->version);
    syncd_doc_free(doc);
    assert_converged(&cl);
    for (int k = 0; k < IDLE_DOCS; k++)
        syncd_change_free(changes[k]);
    syncd_change_free(behind);
    cluster_close(&cl);
}

/* Holds anti-entropy passes over the collection "unblocked" at their first
 * chunk while closed. */
typedef struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int entered, open;
} gate_t;

static gate_t gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0,
                      1};

/* Counts the calling thread in at g and waits there while g is closed. */
static void gate_pass(gate_t *g)
{
    pthread_mutex_lock(&g->lock);
    g->entered++;
    pthread_cond_broadcast(&g->cond);
    while (!g->open)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static void gate_hook(void *data, const char *coll)
{
    if (strcmp(coll, "unblocked") == 0)
        gate_pass(data);
}

static int gate_count(void)
{
    int entered;

    pthread_mutex_lock(&gate.lock);
    entered = gate.entered;
    pthread_mutex_unlock(&gate.lock);
    return entered;
}

static int gate_entered(cluster_t *cl)
{
    (void)cl;
    return gate_count() > 0;
}

/* Closes the gate (entered back to 0). */
static void gate_close(void)
{
    pthread_mutex_lock(&gate.lock);
    gate.entered = gate.open = 0;
    pthread_mutex_unlock(&gate.lock);
}

static void gate_open(void)
{
    pthread_mutex_lock(&gate.lock);
    gate.open = 1;
    pthread_cond_broadcast(&gate.cond);
    pthread_mutex_unlock(&gate.lock);
}

static void
test_node__anti_entropy_in_progress_never_delays_event_delivery(void **state)
{
    cluster_opts_t co = {.ae_chunk_hook = gate_hook, .hook_data = &gate};
    syncd_doc_t *doc = NULL;
    cluster_t cl;

    (void)state;
    cluster_open(&cl, "unblocked", &co);
    write_one(&cl, 0, "doc", json_pack("{s:i}", "n", 1));
    gate_close();
    cl.ae_repaired = 0;
    assert_int_equal(syncd_node_anti_entropy(cl.n[1].node, on_ae, &cl), 0);
    cl.ae_pending = 1;
    run_until(&cl, gate_entered);

    /* Node 1's pass is held mid-run; a change still reaches its cache and
     * its watcher. */
    write_one(&cl, 0, "doc", json_pack("{s:i}", "n", 2));
    assert_int_equal(cl.ae_pending, 1);
    assert_int_equal(cl.n[1].last, cl.bus_seq);
    assert_int_equal(
        syncd_store_cached(cl.n[1].store, &doc, cl.coll, "doc", NULL), 0);
    assert_int_equal(doc->version, 2);
    syncd_doc_free(doc);

    gate_open();
    run_until(&cl, ae_done);
    assert_int_equal(cl.ae_repaired, 0);
    assert_converged(&cl);
    assert_watchers_saw_all(&cl);
    cluster_close(&cl);
}

/* A pool work that waits at the gate. */
static void gate_work(uv_work_t *req)
{
    (void)req;
    gate_pass(&gate);
}

static int pool_held(cluster_t *cl)
{
    (void)cl;
    return gate_count() == POOL_THREADS;
}

static void on_burst_published(int status, int64_t seq, void *payload)
{
    cluster_t *cl = payload;

    (void)seq;
    assert_int_equal(status, 0);
    cl->storm.publishing--;
}

static uint64_t burst_target;

/* Every publish completed and node 1 has received every event. */
static int node1_received_all(cluster_t *cl)
{
    syncd_node_stats_t st;

    syncd_node_stats(cl->n[1].node, &st);
    return cl->storm.publishing == 0 && st.events_received >= burst_target;
}

/* Node 1's cache holds exactly the store's versions of what it caches. */
static int node1_cache_agrees(cluster_t *cl)
{
    json_t *cached = NULL, *e;
    size_t k;
    int agrees = 1;

    assert_int_equal(
        syncd_store_cache_list(cl->n[1].store, &cached, cl->coll, NULL), 0);
    json_array_foreach (cached, k, e) {
        syncd_doc_t *real = NULL;
        const char *id = json_string_value(json_object_get(e, "id"));

        assert_int_equal(
            syncd_store_refetch(cl->n[1].store, &real, cl->coll, id, NULL), 0);
        if (json_integer_value(json_object_get(e, "v")) != real->version)
            agrees = 0;
        syncd_doc_free(real);
    }
    json_decref(cached);
    return agrees;
}

static void
test_node__apply_queue_past_its_bound_resyncs_the_collection_and_serves_the_store(
    void **state)
{
    enum { BOUND = 16, BURST = 100 };
    cluster_opts_t co = {.max_apply_queue = BOUND};
    uv_work_t hold[POOL_THREADS];
    syncd_node_stats_t before, st;
    cluster_t cl;
    char id[16];

    (void)state;
    cluster_open(&cl, "overflow", &co);
    /* Every node caches every document at version 1. */
    for (int d = 0; d < DOCS; d++) {
        snprintf(id, sizeof(id), "doc-%d", d);
        write_one(&cl, 0, id, json_pack("{s:i}", "n", 0));
    }
    node_stats(&cl, 1, &before);

    /* With every pool thread held, no node applies anything: a burst of
     * updates committed and published meanwhile piles up in the apply
     * queues. */
    gate_close();
    for (int i = 0; i < POOL_THREADS; i++)
        assert_int_equal(uv_queue_work(&cl.loop, &hold[i], gate_work, NULL), 0);
    run_until(&cl, pool_held);
    memset(&cl.storm, 0, sizeof(cl.storm));
    for (int k = 0; k < BURST; k++) {
        syncd_change_t *change;

        snprintf(id, sizeof(id), "doc-%d", k % DOCS);
        change = commit_unpublished(&cl, 0, id, json_pack("{s:i}", "n", k + 1));
        assert_int_equal(
            syncd_node_publish(cl.n[0].node, change, on_burst_published, &cl),
            0);
        cl.storm.publishing++;
        syncd_change_free(change);
    }
    burst_target = before.events_received + BURST;
    run_until(&cl, node1_received_all);

    /* Node 1's queue never held more than its bound: it dropped the
     * backlog for a resync instead. */
    node_stats(&cl, 1, &st);
    assert_int_equal(st.apply_queue_peak, BOUND);
    assert_true(st.apply_queued <= BOUND);
    assert_true(st.apply_queue_overflows >= 1);
    assert_int_equal(before.apply_queue_overflows, 0);

    /* Once the pool runs again, node 1 resyncs once: its watcher is told,
     * the others saw every seq, and its cache repairs to the store's
     * versions. */
    gate_open();
    wait_synced(&cl);
    assert_int_equal(cl.n[1].resyncs, 1);
    assert_null(cl.n[1].watch);
    for (int i = 0; i < NODES; i += 2) {
        assert_int_equal(cl.n[i].resyncs, 0);
        assert_int_equal(cl.n[i].order_errors, 0);
        assert_int_equal(cl.n[i].last, cl.bus_seq);
    }
    run_until(&cl, node1_cache_agrees);
    node_stats(&cl, 1, &st);
    assert_int_equal(st.apply_queued, 0);
    assert_int_equal(st.resyncs, before.resyncs + 1);
    assert_converged(&cl);
    cluster_close(&cl);
}

/* Every publish completed and node 0 has received every event. */
static int node0_received_all(cluster_t *cl)
{
    syncd_node_stats_t st;

    syncd_node_stats(cl->n[0].node, &st);
    return cl->storm.publishing == 0 && st.events_received >= burst_target;
}

/* Node 0 has received every publish of the burst and known its own two
 * events by their bytes. */
static uint64_t own_target;

static int node0_took_its_own(cluster_t *cl)
{
    syncd_bus_stats_t st;

    syncd_bus_stats(cl->n[0].bus, &st);
    return cl->storm.publishing == 0 && st.received_own >= own_target;
}

/* Node 0's own events come back from the bus without their bodies while
 * no watcher of node 0 wants them (its cache holds their versions
 * already). A watcher that comes while two of them wait behind other work
 * (a gap's refetch, on the held thread pool) reads those from the replay
 * log: it sees every seq whole, and no resync. */
static void
test_node__a_watcher_behind_its_nodes_own_bodiless_events_reads_them_whole(
    void **state)
{
    uv_work_t hold[POOL_THREADS];
    syncd_bus_stats_t before, after;
    syncd_node_stats_t st;
    syncd_change_t *change;
    syncd_error_t err;
    int64_t start;
    json_t *ev;
    tnode_t *n0;
    cluster_t cl;

    (void)state;
    cluster_open(&cl, "ownlate", NULL);
    n0 = &cl.n[0];
    syncd_node_unwatch(n0->watch);
    n0->watch = NULL;
    write_one(&cl, 1, "a", json_pack("{s:i}", "n", 1));
    write_one(&cl, 0, "b", json_pack("{s:i}", "n", 1));
    syncd_bus_stats(n0->bus, &before);
    assert_true(before.received_own >= 1);

    /* a's version 2 is committed, not published: its version 3, published
     * by node 1's bus alone, is a gap on node 0's cache, refetched on the
     * pool, which is held. */
    syncd_change_free(
        commit_unpublished(&cl, 1, "a", json_pack("{s:i}", "n", 2)));
    gate_close();
    for (int i = 0; i < POOL_THREADS; i++)
        assert_int_equal(uv_queue_work(&cl.loop, &hold[i], gate_work, NULL), 0);
    run_until(&cl, pool_held);
    memset(&cl.storm, 0, sizeof(cl.storm));
    change = commit_unpublished(&cl, 1, "a", json_pack("{s:i}", "n", 3));
    ev = event_for(change, "node-1");
    assert_int_equal(
        syncd_bus_publish(cl.n[1].bus, ev, on_burst_published, &cl), 0);
    cl.storm.publishing++;
    json_decref(ev);
    syncd_change_free(change);
    node_stats(&cl, 0, &st);
    burst_target = st.events_received + 1;
    run_until(&cl, node0_received_all);
    for (int v = 2; v <= 3; v++) {
        change = commit_unpublished(&cl, 0, "b", json_pack("{s:i}", "n", v));
        assert_int_equal(
            syncd_node_publish(n0->node, change, on_burst_published, &cl), 0);
        cl.storm.publishing++;
        syncd_change_free(change);
    }
    own_target = before.received_own + 2;
    run_until(&cl, node0_took_its_own);

    syncd_error_clear(&err);
    start = n0->last = syncd_node_seq(n0->node, cl.coll);
    n0->events = 0;
    assert_int_equal(syncd_node_watch(n0->node, &n0->watch, cl.coll, NULL, -1,
                                      on_watch, n0, &err),
                     0);
    gate_open();
    wait_synced(&cl);
    for (int i = 0; i < NODES; i++) {
        assert_int_equal(cl.n[i].resyncs, 0);
        assert_int_equal(cl.n[i].order_errors, 0);
        assert_int_equal(cl.n[i].last, cl.bus_seq);
    }
    assert_true(cl.bus_seq - start >= 3);
    assert_int_equal(n0->events, cl.bus_seq - start);
    syncd_bus_stats(n0->bus, &after);
    assert_int_equal(after.received_own, before.received_own + 2);
    assert_converged(&cl);
    cluster_close(&cl);
}

static void on_prefix_watch(syncd_node_signal_t signal, int64_t seq,
                            const json_t *event, void *payload)
{
    int64_t *last = payload;

    assert_int_equal(signal, SYNCD_NODE_EVENT);
    assert_true(seq > *last);
    assert_true(strncmp(json_string_value(json_object_get(event, "id")),
                        "doc-1", 5) == 0);
    *last = seq;
}

static void
test_node__watch_from_a_past_seq_replays_then_continues_live_without_gap(
    void **state)
{
    cluster_t cl;
    tnode_t *n;
    int64_t prefix_last = 0, mid;
    syncd_node_watch_t *pw;

    (void)state;
    cluster_open(&cl, "resume", NULL);
    storm(&cl, 40, 3, 11, NULL);
    mid = cl.bus_seq / 2;
    n = &cl.n[2];
    syncd_node_unwatch(n->watch);
    n->events = 0;
    watch_from(n, mid);
    assert_int_equal(syncd_node_watch(n->node, &pw, cl.coll, "doc-1", 0,
                                      on_prefix_watch, &prefix_last, NULL),
                     0);
    /* Live events arrive while the replay is read. */
    storm(&cl, 40, 3, 12, NULL);
    assert_int_equal(n->order_errors, 0);
    assert_int_equal(n->events, cl.bus_seq - mid);
    assert_true(prefix_last > 0);
    syncd_node_unwatch(pw);
    cluster_close(&cl);
}

static void
test_node__watch_from_before_a_trimmed_log_is_told_to_resync(void **state)
{
    cluster_t cl;
    cluster_opts_t co = {.event_log_len = 10};
    tnode_t *n;

    (void)state;
    cluster_open(&cl, "trimmed", &co);
    storm(&cl, 250, 6, 3, NULL);
    n = &cl.n[1];
    syncd_node_unwatch(n->watch);
    n->events = 0;
    watch_from(n, 1);
    write_one(&cl, 0, "doc-0", json_pack("{s:i}", "n", 0));
    assert_int_equal(n->resyncs, 1);
    assert_int_equal(n->resync_seq, 1);
    assert_int_equal(n->events, 0);
    assert_null(n->watch);
    cluster_close(&cl);
}

/* ---- Embedded default ---------------------------------------------------- */

static void on_embedded_watch(syncd_node_signal_t signal, int64_t seq,
                              const json_t *event, void *payload)
{
    int64_t *seen = payload;

    if (signal != SYNCD_NODE_EVENT)
        return;
    assert_int_equal(seq, *seen + 1);
    assert_string_equal(json_string_value(json_object_get(event, "op")),
                        "create");
    *seen = seq;
}

static void on_embedded_published(int status, int64_t seq, void *payload)
{
    int64_t *published = payload;

    assert_int_equal(status, 0);
    *published = seq;
}

static void on_embedded_closed(void *payload)
{
    syncd_bus_close(payload, NULL, NULL);
}

static void
test_node__embedded_node_delivers_published_changes_to_watchers(void **state)
{
    uv_loop_t loop;
    char dir[256];
    syncd_store_options_t so;
    syncd_bus_options_t bo;
    syncd_store_t *store;
    syncd_bus_t *bus;
    syncd_node_t *node;
    syncd_node_watch_t *w;
    syncd_change_t *change = NULL;
    json_t *body = json_pack("{s:i}", "n", 1);
    int64_t seen = 0, published = 0;

    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(syncd_test_tmpdir(dir, sizeof(dir), "embedded"), 0);
    syncd_store_options_init(&so);
    so.data_dir = dir;
    so.sync_writes = 0;
    assert_int_equal(syncd_store_open(&store, &so, NULL), 0);
    syncd_bus_options_init(&bo);
    assert_int_equal(syncd_bus_open(&bus, &loop, &bo, NULL), 0);
    assert_int_equal(syncd_node_open(&node, &loop, store, bus, NULL, NULL), 0);
    assert_int_equal(syncd_node_watch(node, &w, "things", NULL, 0,
                                      on_embedded_watch, &seen, NULL),
                     0);
    assert_int_equal(
        syncd_store_create(store, &change, "things", "a", body, NULL), 0);
    assert_int_equal(
        syncd_node_publish(node, change, on_embedded_published, &published), 0);
    for (int i = 0; i < 10000 && seen < 1; i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(published, 1);
    assert_int_equal(syncd_node_seq(node, "things"), 1);
    syncd_node_unwatch(w);
    syncd_node_close(node, on_embedded_closed, bus);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    syncd_change_free(change);
    json_decref(body);
    syncd_store_close(store);
    syncd_test_rmtree(dir);
}

/* An embedded node for a test: loop (initialized here), a store in a new
 * temp dir named after tag (so, its data_dir set here), an in-memory bus
 * and a node with no. */
typedef struct mem_node {
    uv_loop_t loop;
    char dir[256];
    syncd_store_t *store;
    syncd_bus_t *bus;
    syncd_node_t *node;
} mem_node_t;

static void mem_node_open(mem_node_t *m, const char *tag,
                          syncd_store_options_t *so,
                          const syncd_node_options_t *no)
{
    syncd_bus_options_t bo;

    assert_int_equal(uv_loop_init(&m->loop), 0);
    assert_int_equal(syncd_test_tmpdir(m->dir, sizeof(m->dir), tag), 0);
    so->data_dir = m->dir;
    assert_int_equal(syncd_store_open(&m->store, so, NULL), 0);
    syncd_bus_options_init(&bo);
    assert_int_equal(syncd_bus_open(&m->bus, &m->loop, &bo, NULL), 0);
    assert_int_equal(
        syncd_node_open(&m->node, &m->loop, m->store, m->bus, no, NULL), 0);
}

/* Closes what mem_node_open() opened and removes its dir. */
static void mem_node_close(mem_node_t *m)
{
    syncd_node_close(m->node, on_embedded_closed, m->bus);
    assert_int_equal(uv_run(&m->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&m->loop), 0);
    syncd_store_close(m->store);
    syncd_test_rmtree(m->dir);
}

/* What a watcher saw: each event's seq and a copy of the event. */
typedef struct seen_events {
    int n;
    int64_t seq[4];
    json_t *ev[4];
} seen_events_t;

static void on_seen_event(syncd_node_signal_t signal, int64_t seq,
                          const json_t *event, void *payload)
{
    seen_events_t *seen = payload;

    assert_int_equal(signal, SYNCD_NODE_EVENT);
    assert_true(seen->n < 4);
    seen->seq[seen->n] = seq;
    seen->ev[seen->n++] = json_deep_copy(event);
}

/* A change whose event a writer thread prepares. */
typedef struct prep_job {
    syncd_node_t *node;
    const syncd_change_t *change;
    syncd_node_pub_t *pub;
    int rc;
} prep_job_t;

static void *prepare_main(void *arg)
{
    prep_job_t *job = arg;

    job->rc = syncd_node_prepare(job->node, job->change, &job->pub);
    return NULL;
}

/* What the store committed of a version: its number, hash and body. */
typedef struct committed {
    int64_t version;
    char hash[SYNCD_HASH_HEX_LEN + 1];
    json_t *body;
} committed_t;

/* Commits body as the next version of things/a into *out, prepares its
 * publish on a thread of its own and frees the change, publishes it (with
 * !publish the prepared publish is freed unused and the change published
 * by the loop) and waits for the watcher. */
static void put_prepared(mem_node_t *m, const char *text, int publish,
                         seen_events_t *seen, committed_t *out)
{
    json_t *body = json_loads(text, 0, NULL);
    syncd_change_t *change = NULL;
    prep_job_t job = {m->node, NULL, NULL, -1};
    pthread_t t;
    int64_t published = 0;
    int want = seen->n + 1;

    assert_non_null(body);
    assert_int_equal(syncd_store_put(m->store, &change, "things", "a", body,
                                     SYNCD_ANY_VERSION, NULL),
                     0);
    json_decref(body);
    out->version = change->doc->version;
    memcpy(out->hash, change->doc->hash, sizeof(out->hash));
    out->body = json_incref(change->doc->body);
    job.change = change;
    assert_int_equal(pthread_create(&t, NULL, prepare_main, &job), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(job.rc, 0);
    if (publish) {
        syncd_change_free(change);
        assert_int_equal(syncd_node_publish_prepared(m->node, job.pub,
                                                     on_embedded_published,
                                                     &published),
                         0);
    } else {
        syncd_node_pub_free(job.pub);
        assert_int_equal(syncd_node_publish(m->node, change,
                                            on_embedded_published, &published),
                         0);
        syncd_change_free(change);
    }
    for (int i = 0; i < 10000 && seen->n < want; i++)
        uv_run(&m->loop, UV_RUN_ONCE);
    assert_int_equal(seen->n, want);
    assert_int_equal(published, seen->seq[want - 1]);
}

/* A publish prepared on a writer thread (syncd_node_prepare()), whose
 * change is freed before the publish, is the change's event: a watcher
 * gets every version in seq order, each event's patch and merge patch turn
 * the version before into the version committed (the merge patch null
 * where none can), and its hash is the store's. A prepared publish freed
 * unused leaves the loop to build it. */
static void
test_node__an_event_prepared_on_a_writer_thread_is_the_changes(void **state)
{
    static const char *const bodies[] = {
        "{\"n\":1,\"tags\":[\"a\"]}", "{\"n\":2,\"tags\":[\"a\",\"b\"]}",
        "{\"n\":2,\"tags\":[\"b\"],\"x\":{\"y\":null}}"};
    mem_node_t m;
    syncd_store_options_t so;
    syncd_node_watch_t *w;
    seen_events_t seen = {0};
    committed_t done[3];

    (void)state;
    syncd_store_options_init(&so);
    so.sync_writes = 0;
    mem_node_open(&m, "prepared", &so, NULL);
    assert_int_equal(syncd_node_watch(m.node, &w, "things", NULL, 0,
                                      on_seen_event, &seen, NULL),
                     0);
    for (int i = 0; i < 3; i++)
        put_prepared(&m, bodies[i], i != 2, &seen, &done[i]);
    for (int i = 0; i < 3; i++) {
        json_t *ev = seen.ev[i], *from, *by_patch = NULL, *by_merge = NULL;

        assert_int_equal(seen.seq[i], i + 1);
        assert_int_equal(json_integer_value(json_object_get(ev, "v")),
                         done[i].version);
        assert_int_equal(json_integer_value(json_object_get(ev, "base")), i);
        assert_string_equal(json_string_value(json_object_get(ev, "h")),
                            done[i].hash);
        from = i == 0 ? json_null() : json_loads(bodies[i - 1], 0, NULL);
        assert_int_equal(syncd_patch_apply(&by_patch, from,
                                           json_object_get(ev, "patch"), NULL),
                         0);
        assert_true(json_equal(by_patch, done[i].body));
        /* A null member set is no merge patch: the event says so. */
        if (i == 2) {
            assert_true(json_is_null(json_object_get(ev, "merge")));
        } else {
            assert_int_equal(syncd_merge_apply(&by_merge, from,
                                               json_object_get(ev, "merge"),
                                               NULL),
                             0);
            assert_true(json_equal(by_merge, done[i].body));
        }
        json_decref(from);
        json_decref(by_patch);
        json_decref(by_merge);
        json_decref(ev);
        json_decref(done[i].body);
    }
    syncd_node_unwatch(w);
    mem_node_close(&m);
}

/* Polls a node until it purged want tombstones, noting when it first
 * purged some (first_ms) and when it had purged them all (all_ms). */
typedef struct purge_wait {
    syncd_node_t *node;
    uint64_t want;
    int polls;
    uint64_t first_ms, all_ms;
} purge_wait_t;

static void on_purge_poll(uv_timer_t *timer)
{
    purge_wait_t *pw = timer->data;
    syncd_node_stats_t st;

    syncd_node_stats(pw->node, &st);
    if (st.tombstones_purged > 0 && pw->first_ms == 0)
        pw->first_ms = uv_now(timer->loop);
    if (st.tombstones_purged >= pw->want)
        pw->all_ms = uv_now(timer->loop);
    /* A stuck purge fails after 15 s. */
    if (pw->all_ms > 0 || ++pw->polls > 300)
        uv_timer_stop(timer);
}

/* The node's timer purges tombstones past tombstone_ttl (and nothing
 * else) at most purge_batch per run: 6 tombstones with a batch of 2 take
 * three runs, which follow one another at once rather than a timer period
 * (1 s) apart. */
static void test_node__tombstone_past_tombstone_ttl_is_purged_by_the_node_timer(
    void **state)
{
    mem_node_t m;
    uv_timer_t poll;
    syncd_store_options_t so;
    syncd_node_options_t no;
    syncd_change_t *change = NULL;
    syncd_doc_t *doc = NULL;
    json_t *body = json_pack("{s:i}", "n", 1);
    purge_wait_t pw = {0};
    char id[16];

    (void)state;
    syncd_store_options_init(&so);
    so.sync_writes = 0;
    so.tombstone_ttl_ms = 500;
    syncd_node_options_init(&no);
    no.tombstone_ttl_ms = so.tombstone_ttl_ms;
    no.purge_batch = 2;
    mem_node_open(&m, "purge", &so, &no);
    for (int i = 0; i < 6; i++) {
        snprintf(id, sizeof(id), "gone%d", i);
        assert_int_equal(
            syncd_store_create(m.store, &change, "things", id, body, NULL), 0);
        syncd_change_free(change);
        assert_int_equal(syncd_store_delete(m.store, &change, "things", id,
                                            SYNCD_ANY_VERSION, NULL),
                         0);
        syncd_change_free(change);
    }
    assert_int_equal(
        syncd_store_create(m.store, &change, "things", "keep", body, NULL), 0);
    syncd_change_free(change);
    assert_int_equal(
        syncd_store_refetch(m.store, &doc, "things", "gone0", NULL), 0);
    assert_true(doc->deleted);
    syncd_doc_free(doc);

    /* Nothing but the node's own timer purges them. */
    pw.node = m.node;
    pw.want = 6;
    assert_int_equal(uv_timer_init(&m.loop, &poll), 0);
    poll.data = &pw;
    assert_int_equal(uv_timer_start(&poll, on_purge_poll, 50, 50), 0);
    while (uv_is_active((uv_handle_t *)&poll))
        uv_run(&m.loop, UV_RUN_ONCE);
    assert_true(pw.all_ms > 0);
    assert_true(pw.all_ms - pw.first_ms < 1000);
    for (int i = 0; i < 6; i++) {
        snprintf(id, sizeof(id), "gone%d", i);
        assert_int_equal(syncd_store_refetch(m.store, &doc, "things", id, NULL),
                         SYNCD_ENOTFOUND);
    }
    assert_int_equal(syncd_store_get(m.store, &doc, "things", "keep", NULL), 0);
    syncd_doc_free(doc);

    uv_close((uv_handle_t *)&poll, NULL);
    mem_node_close(&m);
    json_decref(body);
}

/* What a watcher that falls behind saw. */
typedef struct behind {
    int64_t last; /* last event seq */
    int events, order_errors, resyncs, after_resync;
    int64_t resync_seq;
} behind_t;

static void on_behind_watch(syncd_node_signal_t signal, int64_t seq,
                            const json_t *event, void *payload)
{
    behind_t *b = payload;

    (void)event;
    if (b->resyncs > 0) {
        b->after_resync++;
    } else if (signal == SYNCD_NODE_RESYNC) {
        b->resyncs++;
        b->resync_seq = seq;
    } else if (signal == SYNCD_NODE_EVENT) {
        if (seq != b->last + 1)
            b->order_errors++;
        b->last = seq;
        b->events++;
    }
}

static void on_embedded_count(int status, int64_t seq, void *payload)
{
    int *published = payload;

    (void)seq;
    assert_int_equal(status, 0);
    (*published)++;
}

/* A thread of the libuv pool held until released. */
typedef struct blocker {
    uv_work_t req;
    uv_sem_t *started, *release;
} blocker_t;

static void block_work(uv_work_t *req)
{
    blocker_t *b = req->data;

    uv_sem_post(b->started);
    uv_sem_wait(b->release);
}

/* Runs loop without blocking n times, a millisecond apart. */
static void spin(uv_loop_t *loop, int n)
{
    for (int i = 0; i < n; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        uv_sleep(1);
    }
}

/* A version whose publish the bus confirmed while its outbox ack still
 * waits (here: behind a republisher run that listed the record first, on
 * a thread pool held to one thread) is acked, not sent again: the bus
 * sees one publish and no republish. */
static void
test_node__the_republisher_does_not_send_again_what_the_bus_confirmed(
    void **state)
{
    enum { MAX_POOL = 64 };
    const char *env = getenv("UV_THREADPOOL_SIZE");
    int pool = env != NULL ? atoi(env) : 4, published = 0;
    blocker_t blockers[MAX_POOL];
    uv_sem_t started, release;
    mem_node_t m;
    syncd_store_options_t so;
    syncd_node_options_t no;
    syncd_change_t *change = NULL;
    syncd_bus_stats_t bs;
    json_t *body = json_pack("{s:i}", "n", 1), *list = NULL;

    (void)state;
    assert_true(pool >= 1 && pool <= MAX_POOL);
    syncd_store_options_init(&so);
    so.sync_writes = 0;
    so.outbox = 1;
    syncd_node_options_init(&no);
    no.anti_entropy_interval_ms = 0;
    no.outbox_interval_ms = 0;
    mem_node_open(&m, "republish", &so, &no);
    spin(&m.loop, 50);

    assert_int_equal(uv_sem_init(&started, 0), 0);
    assert_int_equal(uv_sem_init(&release, 0), 0);
    for (int k = 0; k < pool; k++) {
        blockers[k] = (blocker_t){.started = &started, .release = &release};
        blockers[k].req.data = &blockers[k];
        assert_int_equal(
            uv_queue_work(&m.loop, &blockers[k].req, block_work, NULL), 0);
    }
    for (int k = 0; k < pool; k++)
        uv_sem_wait(&started);
    assert_int_equal(
        syncd_store_create(m.store, &change, "things", "a", body, NULL), 0);
    /* The run's listing is queued first, the publish's ack after it. */
    syncd_node_republish(m.node, 0);
    assert_int_equal(
        syncd_node_publish(m.node, change, on_embedded_count, &published), 0);
    for (int i = 0; i < 1000 && published == 0; i++)
        spin(&m.loop, 1);
    assert_int_equal(published, 1);
    uv_sem_post(&release);
    for (int i = 0; i < 2000; i++) {
        assert_int_equal(
            syncd_store_outbox_list(m.store, &list, "things", NULL, 10, NULL),
            0);
        if (json_array_size(list) == 0)
            break;
        json_decref(list);
        list = NULL;
        spin(&m.loop, 1);
    }
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);
    for (int k = 1; k < pool; k++)
        uv_sem_post(&release);
    spin(&m.loop, 100);
    syncd_bus_stats(m.bus, &bs);
    assert_int_equal(bs.published, 1);
    assert_int_equal(bs.dropped_republished, 0);

    mem_node_close(&m);
    uv_sem_destroy(&started);
    uv_sem_destroy(&release);
    syncd_change_free(change);
    json_decref(body);
}

/* Runs loop until node has applied seq of "things" and every publish
 * completed. */
static void run_until_applied(uv_loop_t *loop, syncd_node_t *node, int64_t seq,
                              const int *published)
{
    for (int i = 0; i < 10000 &&
                    (syncd_node_seq(node, "things") < seq || *published < seq);
         i++)
        uv_run(loop, UV_RUN_ONCE);
    assert_int_equal(syncd_node_seq(node, "things"), seq);
    assert_int_equal(*published, seq);
}

/* The in-process bus fires completions (such as a replay page) before it
 * feeds subscriptions in the same pass, and the embedded node hands each
 * fed event to its watchers at once. So a watcher replaying more than one
 * page (1000 events) still waits for its second page when the events
 * published meanwhile are applied, and they go to its buffer. */
/* Commits the next version of things/a (body's "n" counts up) and
 * publishes it through node, counting completions in *published. */
static void publish_next_version(syncd_node_t *node, syncd_store_t *store,
                                 json_t *body, int *published)
{
    syncd_change_t *change = NULL;

    json_object_set_new(
        body, "n",
        json_integer(json_integer_value(json_object_get(body, "n")) + 1));
    assert_int_equal(syncd_store_put(store, &change, "things", "a", body,
                                     SYNCD_ANY_VERSION, NULL),
                     0);
    assert_int_equal(
        syncd_node_publish(node, change, on_embedded_count, published), 0);
    syncd_change_free(change);
}

static void
test_node__watcher_whose_buffer_overflows_during_replay_is_told_to_resync(
    void **state)
{
    enum { BEFORE = 1001, MEANWHILE = 3 };
    uv_loop_t loop;
    char dir[256];
    syncd_store_options_t so;
    syncd_bus_options_t bo;
    syncd_node_options_t no;
    syncd_store_t *store;
    syncd_bus_t *bus;
    syncd_node_t *node;
    syncd_node_watch_t *w;
    syncd_node_stats_t st;
    json_t *body = json_pack("{s:i}", "n", 0);
    behind_t b = {0};
    int published = 0;

    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(syncd_test_tmpdir(dir, sizeof(dir), "behind"), 0);
    syncd_store_options_init(&so);
    so.data_dir = dir;
    so.sync_writes = 0;
    assert_int_equal(syncd_store_open(&store, &so, NULL), 0);
    syncd_bus_options_init(&bo);
    assert_int_equal(syncd_bus_open(&bus, &loop, &bo, NULL), 0);
    syncd_node_options_init(&no);
    no.anti_entropy_interval_ms = 0;
    no.watch_buffer_events = MEANWHILE - 1;
    assert_int_equal(syncd_node_open(&node, &loop, store, bus, &no, NULL), 0);
    /* Each publish is a new committed version: the bus drops a version it
     * has published already. */
    for (int i = 0; i < BEFORE; i++)
        publish_next_version(node, store, body, &published);
    run_until_applied(&loop, node, BEFORE, &published);

    assert_int_equal(syncd_node_watch(node, &w, "things", NULL, 0,
                                      on_behind_watch, &b, NULL),
                     0);
    for (int i = 0; i < MEANWHILE; i++)
        publish_next_version(node, store, body, &published);
    run_until_applied(&loop, node, BEFORE + MEANWHILE, &published);

    /* The first page arrived in order; the buffer then overflowed and the
     * watcher was told to resync from where it stood, and ended. */
    assert_int_equal(b.events, 1000);
    assert_int_equal(b.order_errors, 0);
    assert_int_equal(b.resyncs, 1);
    assert_int_equal(b.resync_seq, 1000);
    assert_int_equal(b.after_resync, 0);
    syncd_node_stats(node, &st);
    assert_int_equal(st.watch_resyncs, 1);
    syncd_node_close(node, on_embedded_closed, bus);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(b.after_resync, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    json_decref(body);
    syncd_store_close(store);
    syncd_test_rmtree(dir);
}

/* ---- Collection state ---------------------------------------------------- */

/* An embedded node on its own loop, store and bus. */
typedef struct embedded {
    uv_loop_t loop;
    char dir[256];
    syncd_store_t *store;
    syncd_bus_t *bus;
    syncd_node_t *node;
} embedded_t;

static void embedded_open(embedded_t *e, const syncd_node_options_t *no)
{
    syncd_store_options_t so;
    syncd_bus_options_t bo;
    char events[300];

    assert_int_equal(uv_loop_init(&e->loop), 0);
    assert_int_equal(syncd_test_tmpdir(e->dir, sizeof(e->dir), "colls"), 0);
    syncd_store_options_init(&so);
    so.data_dir = e->dir;
    so.sync_writes = 0;
    assert_int_equal(syncd_store_open(&e->store, &so, NULL), 0);
    snprintf(events, sizeof(events), "%s/events", e->dir);
    assert_int_equal(mkdir(events, 0755), 0);
    syncd_bus_options_init(&bo);
    bo.data_dir = events;
    assert_int_equal(syncd_bus_open(&e->bus, &e->loop, &bo, NULL), 0);
    assert_int_equal(
        syncd_node_open(&e->node, &e->loop, e->store, e->bus, no, NULL), 0);
}

static void embedded_close(embedded_t *e)
{
    syncd_node_close(e->node, on_embedded_closed, e->bus);
    assert_int_equal(uv_run(&e->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    syncd_store_close(e->store);
    syncd_test_rmtree(e->dir);
}

static uint64_t collections_of(embedded_t *e)
{
    syncd_node_stats_t st;

    syncd_node_stats(e->node, &st);
    return st.collections;
}

/* Runs e's loop until the node holds `want` collections (at most 2000
 * passes: a bound for liveness); returns what it holds then. */
static uint64_t run_until_collections(embedded_t *e, uint64_t want)
{
    for (int i = 0; i < 2000 && collections_of(e) != want; i++)
        uv_run(&e->loop, UV_RUN_ONCE);
    return collections_of(e);
}

/* A hold that commits nothing (a request for an unknown collection) leaves
 * no state behind; a watched collection's state is freed once unwatched; a
 * written one's after coll_idle_ms without writes, and it can be watched
 * again from its first seq afterwards. */
static void
test_node__collection_state_lives_only_while_watched_held_or_recently_written(
    void **state)
{
    embedded_t e;
    syncd_node_options_t no;
    syncd_node_watch_t *w = NULL;
    syncd_change_t *change = NULL;
    json_t *body = json_pack("{s:i}", "n", 1);
    int64_t seen = 0, published = 0;
    char name[32];

    (void)state;
    syncd_node_options_init(&no);
    no.anti_entropy_interval_ms = 0;
    no.coll_idle_ms = 50;
    embedded_open(&e, &no);
    assert_int_equal(run_until_collections(&e, 0), 0);

    for (int i = 0; i < 2000; i++) {
        snprintf(name, sizeof(name), "unknown-%d", i);
        assert_int_equal(syncd_node_hold(e.node, name, NULL), 0);
        syncd_node_release(e.node, name, 0);
    }
    assert_int_equal(run_until_collections(&e, 0), 0);

    assert_int_equal(syncd_node_watch(e.node, &w, "watched", NULL, -1,
                                      on_embedded_watch, &seen, NULL),
                     0);
    assert_int_equal(collections_of(&e), 1);
    syncd_node_unwatch(w);
    assert_int_equal(run_until_collections(&e, 0), 0);

    assert_int_equal(
        syncd_store_create(e.store, &change, "written", "a", body, NULL), 0);
    assert_int_equal(
        syncd_node_publish(e.node, change, on_embedded_published, &published),
        0);
    assert_int_equal(collections_of(&e), 1);
    for (int i = 0; i < 2000 && published < 1; i++)
        uv_run(&e.loop, UV_RUN_ONCE);
    assert_int_equal(published, 1);
    assert_int_equal(run_until_collections(&e, 0), 0);

    assert_int_equal(syncd_node_watch(e.node, &w, "written", NULL, 0,
                                      on_embedded_watch, &seen, NULL),
                     0);
    for (int i = 0; i < 2000 && seen < 1; i++)
        uv_run(&e.loop, UV_RUN_ONCE);
    assert_int_equal(seen, 1);
    syncd_node_unwatch(w);
    embedded_close(&e);
    syncd_change_free(change);
    json_decref(body);
}

/* With max_collections 3, a fourth collection is refused (hold and watch)
 * while three are held, the held ones stay usable, and the fourth is
 * taken once the others are released. */
static void
test_node__max_collections_refuses_the_next_one_with_ETOOBIG(void **state)
{
    static const char *names[] = {"c1", "c2", "c3"};
    embedded_t e;
    syncd_node_options_t no;
    syncd_node_watch_t *w = NULL;
    syncd_error_t err;
    int64_t seen = 0;

    (void)state;
    syncd_node_options_init(&no);
    no.anti_entropy_interval_ms = 0;
    no.max_collections = 3;
    embedded_open(&e, &no);
    for (int i = 0; i < 3; i++)
        assert_int_equal(syncd_node_hold(e.node, names[i], NULL), 0);
    syncd_error_clear(&err);
    assert_int_equal(syncd_node_hold(e.node, "c4", &err), SYNCD_ETOOBIG);
    assert_non_null(strstr(err.message, "3 collections"));
    assert_int_equal(syncd_node_watch(e.node, &w, "c4", NULL, -1,
                                      on_embedded_watch, &seen, NULL),
                     SYNCD_ETOOBIG);
    assert_null(w);
    assert_int_equal(syncd_node_hold(e.node, "c1", NULL), 0);
    syncd_node_release(e.node, "c1", 0);
    assert_int_equal(collections_of(&e), 3);
    for (int i = 0; i < 3; i++)
        syncd_node_release(e.node, names[i], 0);
    assert_int_equal(run_until_collections(&e, 0), 0);
    assert_int_equal(syncd_node_hold(e.node, "c4", NULL), 0);
    syncd_node_release(e.node, "c4", 0);
    embedded_close(&e);
}

/* The seqs a heartbeat carries are bounded: syncd_node_seqs() names at
 * most max collections, the most recently written first, each at the
 * last seq the node applied. */
static void
test_node__seqs_names_the_most_recent_collections_up_to_max(void **state)
{
    embedded_t e;
    syncd_node_options_t no;
    json_t *body = json_object(), *seqs;
    char name[16];

    (void)state;
    syncd_node_options_init(&no);
    no.anti_entropy_interval_ms = 0;
    embedded_open(&e, &no);
    for (int i = 0; i < 5; i++) {
        syncd_change_t *change = NULL;
        int64_t published = 0;

        snprintf(name, sizeof(name), "s%d", i);
        for (int k = 0; k <= i; k++) {
            char id[8];

            snprintf(id, sizeof(id), "d%d", k);
            published = 0;
            assert_int_equal(
                syncd_store_create(e.store, &change, name, id, body, NULL), 0);
            assert_int_equal(syncd_node_publish(e.node, change,
                                                on_embedded_published,
                                                &published),
                             0);
            for (int n = 0; n < 2000 && published < 1; n++)
                uv_run(&e.loop, UV_RUN_ONCE);
            syncd_change_free(change);
            change = NULL;
        }
        for (int n = 0; n < 2000 && syncd_node_seq(e.node, name) < i + 1; n++)
            uv_run(&e.loop, UV_RUN_NOWAIT);
        assert_int_equal(syncd_node_seq(e.node, name), i + 1);
        uv_sleep(5);
        uv_update_time(&e.loop);
    }
    seqs = syncd_node_seqs(e.node, 3);
    assert_non_null(seqs);
    assert_int_equal(json_object_size(seqs), 3);
    for (int i = 2; i < 5; i++) {
        snprintf(name, sizeof(name), "s%d", i);
        assert_int_equal(json_integer_value(json_object_get(seqs, name)),
                         i + 1);
    }
    json_decref(seqs);
    seqs = syncd_node_seqs(e.node, 100);
    assert_int_equal(json_object_size(seqs), 5);
    json_decref(seqs);
    embedded_close(&e);
    json_decref(body);
}

/* Versions of one document seen by a watcher, in order of arrival, and
 * whether each event carried its change (a patch) or was an invalidate. */
typedef struct versions {
    int64_t v[64];
    int patched[64];
    size_t n;
} versions_t;

static void on_versions_watch(syncd_node_signal_t signal, int64_t seq,
                              const json_t *event, void *payload)
{
    versions_t *vs = payload;

    (void)seq;
    if (signal == SYNCD_NODE_EVENT && vs->n < 64) {
        vs->patched[vs->n] = json_is_array(json_object_get(event, "patch"));
        vs->v[vs->n++] = json_integer_value(json_object_get(event, "v"));
    }
}

/* Records of "things" with pending-publish markers in e's store. */
static size_t outbox_records(embedded_t *e)
{
    json_t *list = NULL;
    size_t n;

    assert_int_equal(
        syncd_store_outbox_list(e->store, &list, "things", NULL, 10, NULL), 0);
    n = json_array_size(list);
    json_decref(list);
    return n;
}

/* How pending_publish() publishes versions 1..N of one document. */
typedef enum {
    NEWEST_FIRST,          /* N down to 1 */
    FIRST_THEN_NEWEST,     /* 1, then N down to 2 */
    FIRST_THEN_NEWEST_NO2, /* 1, then N down to 3: version 2 never is */
    SECOND_THEN_IN_ORDER   /* 2, then 1 (the create, late), then 3 to N */
} pub_order_t;

/* Commits versions 1..N of one document with the outbox on and publishes
 * them in order; returns how many publishes completed, with what a
 * watcher saw in *seen, once the watcher saw N versions, and the node's
 * publish_waits_expired in *expired; the record's outbox must be acked to
 * empty. */
static int pending_publish(pub_order_t order, versions_t *seen,
                           uint64_t *expired)
{
    enum { N = 40 };
    embedded_t e;
    syncd_store_options_t so;
    syncd_bus_options_t bo;
    syncd_node_options_t no;
    syncd_node_watch_t *w = NULL;
    syncd_change_t *changes[N];
    json_t *body = json_object();
    char events[300];
    int published = 0, expected = order == FIRST_THEN_NEWEST_NO2 ? N - 1 : N;
    int first[] = {[NEWEST_FIRST] = -1,
                   [FIRST_THEN_NEWEST] = 0,
                   [FIRST_THEN_NEWEST_NO2] = 0,
                   [SECOND_THEN_IN_ORDER] = 1};
    syncd_node_stats_t st;

    assert_int_equal(uv_loop_init(&e.loop), 0);
    assert_int_equal(syncd_test_tmpdir(e.dir, sizeof(e.dir), "pending"), 0);
    syncd_store_options_init(&so);
    so.data_dir = e.dir;
    so.sync_writes = 0;
    so.outbox = 1;
    assert_int_equal(syncd_store_open(&e.store, &so, NULL), 0);
    snprintf(events, sizeof(events), "%s/events", e.dir);
    assert_int_equal(mkdir(events, 0755), 0);
    syncd_bus_options_init(&bo);
    bo.data_dir = events;
    assert_int_equal(syncd_bus_open(&e.bus, &e.loop, &bo, NULL), 0);
    syncd_node_options_init(&no);
    no.anti_entropy_interval_ms = 0;
    no.outbox_interval_ms = 0;
    assert_int_equal(
        syncd_node_open(&e.node, &e.loop, e.store, e.bus, &no, NULL), 0);
    assert_int_equal(syncd_node_watch(e.node, &w, "things", NULL, 0,
                                      on_versions_watch, seen, NULL),
                     0);

    for (int i = 0; i < N; i++) {
        json_object_set_new(body, "n", json_integer(i));
        changes[i] = NULL;
        assert_int_equal(syncd_store_put(e.store, &changes[i], "things", "a",
                                         body, SYNCD_ANY_VERSION, NULL),
                         0);
    }
    assert_int_equal(outbox_records(&e), 1);
    if (first[order] >= 0)
        assert_int_equal(syncd_node_publish(e.node, changes[first[order]],
                                            on_embedded_count, &published),
                         0);
    if (order == SECOND_THEN_IN_ORDER) {
        for (int i = 0; i < N; i++)
            if (i != 1)
                assert_int_equal(syncd_node_publish(e.node, changes[i],
                                                    on_embedded_count,
                                                    &published),
                                 0);
    }
    for (int i = N - 1;
         order != SECOND_THEN_IN_ORDER && i >= (order == NEWEST_FIRST ? 0 : 1);
         i--)
        if (order != FIRST_THEN_NEWEST_NO2 || i != 1)
            assert_int_equal(syncd_node_publish(e.node, changes[i],
                                                on_embedded_count, &published),
                             0);
    for (int i = 0; i < 10000 && (published < expected || seen->n < N); i++)
        uv_run(&e.loop, UV_RUN_ONCE);
    for (int i = 0; i < 2000 && outbox_records(&e) > 0; i++) {
        uv_run(&e.loop, UV_RUN_NOWAIT);
        uv_sleep(1);
    }
    assert_int_equal(outbox_records(&e), 0);
    syncd_node_stats(e.node, &st);
    *expired = st.publish_waits_expired;

    syncd_node_unwatch(w);
    embedded_close(&e);
    for (int i = 0; i < N; i++)
        syncd_change_free(changes[i]);
    json_decref(body);
    return published;
}

/* Runs pending_publish(order) and asserts that every publish completed,
 * that a watcher saw each version once, in version order, and with
 * changes that each event carried its change except the one whose own
 * publish came last (version 1 published late, or version 2 whose
 * publish never came, the only one that waited its longest). */
static void assert_pending_publish(pub_order_t order, int changes)
{
    versions_t seen = {0};
    int no2 = order == FIRST_THEN_NEWEST_NO2;
    int late = no2 ? 1 : order == SECOND_THEN_IN_ORDER ? 0 : -1;
    uint64_t expired = 0;

    assert_int_equal(pending_publish(order, &seen, &expired), no2 ? 39 : 40);
    assert_int_equal(expired, no2 ? 1 : 0);
    assert_int_equal(seen.n, 40);
    for (int i = 0; i < 40; i++) {
        assert_int_equal(seen.v[i], i + 1);
        if (changes)
            assert_int_equal(seen.patched[i], i != late);
    }
}

/* Versions committed with the outbox on and published in reverse order
 * (the newest first, carrying every earlier version still pending): a
 * watcher sees each version once, in version order, every publish
 * completes, and the record's outbox is acked to empty. */
static void
test_node__pending_versions_published_newest_first_reach_watchers_once_in_order_and_are_acked(
    void **state)
{
    (void)state;
    assert_pending_publish(NEWEST_FIRST, 0);
}

/* Concurrent writers of one document finish in any order: a publish
 * whose earlier versions this node committed waits for their own
 * publishes, so that every version reaches watchers with its change, not
 * as an invalidate. */
static void
test_node__publishes_finishing_out_of_order_reach_watchers_with_their_changes(
    void **state)
{
    (void)state;
    assert_pending_publish(FIRST_THEN_NEWEST, 1);
}

/* The late publish of a create (its writer finished after the writer of
 * version 2, whose publish carried version 1 as an invalidate) does not
 * make the node forget what it published: the later versions go at once,
 * none waits its longest for publishes that came already. */
static void
test_node__a_late_publish_of_a_create_holds_no_later_version_back(void **state)
{
    (void)state;
    assert_pending_publish(SECOND_THEN_IN_ORDER, 1);
}

/* A version whose own publish never comes (its writer failed between
 * commit and publish) holds the later ones back only for a while: then
 * it goes as an invalidate and the rest with their changes, in order. */
static void
test_node__a_publish_that_never_comes_stops_the_later_ones_only_for_a_while(
    void **state)
{
    (void)state;
    assert_pending_publish(FIRST_THEN_NEWEST_NO2, 1);
}

/* ---- Servers ------------------------------------------------------------- */

static int servers_start(void **state)
{
    (void)state;
    if (syncd_test_mongo_start(&mongo) != 0 ||
        syncd_test_redis_start(&redis) != 0)
        return -1;
    return 0;
}

static int servers_stop(void **state)
{
    (void)state;
    syncd_test_server_destroy(&redis);
    syncd_test_server_destroy(&mongo);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_node__embedded_node_delivers_published_changes_to_watchers),
        cmocka_unit_test(
            test_node__an_event_prepared_on_a_writer_thread_is_the_changes),
        cmocka_unit_test(
            test_node__seqs_names_the_most_recent_collections_up_to_max),
        cmocka_unit_test(
            test_node__pending_versions_published_newest_first_reach_watchers_once_in_order_and_are_acked),
        cmocka_unit_test(
            test_node__publishes_finishing_out_of_order_reach_watchers_with_their_changes),
        cmocka_unit_test(
            test_node__a_publish_that_never_comes_stops_the_later_ones_only_for_a_while),
        cmocka_unit_test(
            test_node__a_late_publish_of_a_create_holds_no_later_version_back),
        cmocka_unit_test(
            test_node__watcher_whose_buffer_overflows_during_replay_is_told_to_resync),
        cmocka_unit_test(
            test_node__tombstone_past_tombstone_ttl_is_purged_by_the_node_timer),
        cmocka_unit_test(
            test_node__the_republisher_does_not_send_again_what_the_bus_confirmed),
        cmocka_unit_test(
            test_node__collection_state_lives_only_while_watched_held_or_recently_written),
        cmocka_unit_test(
            test_node__max_collections_refuses_the_next_one_with_ETOOBIG),
        cmocka_unit_test(
            test_node__three_nodes_editing_concurrently_converge_and_watchers_see_every_seq_once),
        cmocka_unit_test(
            test_node__duplicate_and_out_of_order_events_are_dropped_and_counted),
        cmocka_unit_test(
            test_node__corrupted_patch_fails_the_hash_check_and_is_refetched),
        cmocka_unit_test(
            test_node__changes_to_a_large_cached_document_apply_in_place_and_a_tampered_one_is_refetched),
        cmocka_unit_test(
            test_node__amplifying_patch_in_an_event_is_not_applied_and_is_refetched),
        cmocka_unit_test(
            test_node__forged_event_with_a_bad_signature_is_dropped_and_counted),
        cmocka_unit_test(test_node__change_without_a_merge_patch_converges),
        cmocka_unit_test(
            test_node__change_beyond_max_event_bytes_is_an_invalidate_and_receivers_refetch),
        cmocka_unit_test(
            test_node__diff_larger_than_the_body_travels_as_the_body_and_applies_without_refetch),
        cmocka_unit_test(test_node__anti_entropy_heals_a_tampered_cache),
        cmocka_unit_test(
            test_node__a_document_read_from_a_collection_created_later_is_kept_current),
        cmocka_unit_test(
            test_node__idle_node_with_an_expiring_cache_refetches_nothing_but_repairs_a_real_difference_once),
        cmocka_unit_test(
            test_node__anti_entropy_in_progress_never_delays_event_delivery),
        cmocka_unit_test(
            test_node__apply_queue_past_its_bound_resyncs_the_collection_and_serves_the_store),
        cmocka_unit_test(
            test_node__a_watcher_behind_its_nodes_own_bodiless_events_reads_them_whole),
        cmocka_unit_test(
            test_node__watch_from_a_past_seq_replays_then_continues_live_without_gap),
        cmocka_unit_test(
            test_node__watch_from_before_a_trimmed_log_is_told_to_resync),
        cmocka_unit_test(
            test_node__backlog_published_at_once_is_applied_in_order_before_watchers_hear_of_it),
        cmocka_unit_test(
            test_node__pubsub_clients_killed_mid_storm_catch_up_from_the_replay_log),
        cmocka_unit_test(
            test_node__redis_restarted_mid_storm_converges_and_watchers_are_told_to_resync),
    };

    /* Before the pool starts: a test holds all its threads. */
    setenv("UV_THREADPOOL_SIZE", "4", 1);
    /* SYNCD_TEST_FILTER=<glob> runs only the matching tests. */
    if (getenv("SYNCD_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("SYNCD_TEST_FILTER"));
    /* SYNCD_TEST_SKIP=<glob> skips the matching tests. */
    if (getenv("SYNCD_TEST_SKIP") != NULL)
        cmocka_set_skip_filter(getenv("SYNCD_TEST_SKIP"));
    return cmocka_run_group_tests(tests, servers_start, servers_stop);
}
