/* bench_bus.c - change propagation latency of syncd against bare Redis
 * pub/sub, and the size of a change event against the whole document.
 *
 * One run starts its own redis-server and FerretDB (tests/support; an
 * outside FerretDB with SYNCD_TEST_MONGO_URI) and measures three paths on
 * one libuv loop:
 *   floor - hiredis PUBLISH on one connection to a SUBSCRIBEd hiredis
 *           connection, with payloads as large as a bench event;
 *   bus   - syncd_bus_publish() on one Redis bus to the subscription
 *           callback of another Redis bus (signing, the Lua INCR + XADD +
 *           PUBLISH script, decode, signature check, seq order check);
 *   node  - two syncd nodes, each with its own store (MongoDB mode on the
 *           shared FerretDB, its own cache dir) and its own Redis bus. The
 *           writer node's changes are committed by syncd_store_edit() on
 *           writer threads, which also build and sign each change's event
 *           (syncd_node_prepare(), as the daemon's workers do) and free
 *           the change; the loop
 *           calls syncd_node_publish_prepared(); the clock stops in the
 *           reader node's watcher callback, after the reader applied the
 *           patch to its cache and checked the hash.
 * FerretDB commits about 45 edits/s here, far below the rates measured, so
 * the node path runs on changes committed beforehand: the clock starts
 * right before syncd_node_publish_prepared() (the commit and the event's
 * preparation are excluded, as is the writer-thread-to-loop hand-off). A
 * separate row runs the live pipeline at the store's own speed, the clock
 * starting right after the commit.
 *
 * The recorded node rows have no other subscriber on their channel than
 * the two nodes, as the floor and the bus rows have one each. After them
 * an observed chunk runs the node path once more at the steady rate with
 * two observers subscribed: a thread of its own (blocking hiredis) notes
 * when each event is on the wire, which splits the path into publish to
 * wire (the writer node, its bus, Redis's script) and wire to watcher (the
 * reader node), and a raw subscriber on the loop reads each event's size
 * (the node rows' bytes/msg). Redis then writes each event to two more
 * connections and the clock thread takes a core, so that chunk is
 * reported as a row of its own. The observers stay on for the live rows.
 *
 * Every path runs at a steady rate (paced by a 1 ms timer) and at full
 * speed (a window of messages in flight), in chunks taken in turn (floor,
 * bus, node, floor, ...) so that the other work on the machine hits every
 * path alike. Each row also gives the CPU its chunks took, per message:
 * the loop thread's, this process's (the loop, the nodes' pools, and the
 * clock thread where it runs) and Redis's (INFO cpu), and the loop
 * thread's CPU as a share of the chunks' time, which tells whether one
 * thread bounds it.
 * Then the 10k-entry volume collection document (DESIGN.md section 9)
 * with one entry changed: the event built from syncd_patch_diff() and
 * syncd_merge_diff() and encoded by syncd_event_encode() against the
 * whole document, the same change sent for real between the nodes (size
 * read off the Redis channel, latency at the watcher), and what applying it
 * costs the reader. Last, without servers, the CPU one thread spends to
 * encode and sign the small event and to decode and verify it.
 *
 * With --split 1 the reader node runs on a loop and thread of its own, as
 * it would in a process of its own; the watcher's clock is read on that
 * loop, and "loop" CPU is then the writer node's loop thread alone.
 *
 * Usage: bench_bus [--count N] [--chunk C] [--rate R] [--window W]
 *                  [--docs D] [--entries E] [--writers K] [--live N]
 *                  [--big-edits B] [--paths 0|1] [--split 0|1]
 * (bench/bus/run.sh builds and runs it).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "servers.h"
#include "storage/internal.h"
#include "syncd/node.h"

#include "../common/volumes.h"

#define BUS_DB "bench"
#define SMALL_COLL "vols"
#define BIG_COLL "volumes"
#define BUS_COLL "busbench"
#define FLOOR_CHANNEL "bench-floor"
#define BIG_ENTRIES 10000
#define WARMUP 500
#define SECRET "bench-cluster-secret"
/* A chunk that receives nothing for this long has failed. */
#define STALL_NS (60 * 1000000000LL)
#define SETTLE_MS 300

/* ---- Time and statistics ------------------------------------------------- */

/* Returns the nearest-rank percentile p (0..1) of n sorted values in ms. */
static double pct_ms(const int64_t *sorted, size_t n, double p)
{
    size_t rank = (size_t)(p * (double)n + 0.999999);

    if (n == 0)
        return 0;
    if (rank < 1)
        rank = 1;
    return (double)sorted[rank - 1] / 1e6;
}

/* The CPU time of clock (a thread's or the process's) in ns. */
static int64_t cpu_ns(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t thread_cpu_ns(void)
{
    return cpu_ns(CLOCK_THREAD_CPUTIME_ID);
}

/* Redis's CPU time (user + system, all its threads) in ns from INFO cpu
 * on the blocking connection c, or -1. */
static int64_t redis_cpu_ns(redisContext *c)
{
    redisReply *r = c != NULL ? redisCommand(c, "INFO cpu") : NULL;
    const char *user, *sys;
    int64_t ns = -1;

    if (r != NULL && r->type == REDIS_REPLY_STRING &&
        (user = strstr(r->str, "used_cpu_user:")) != NULL &&
        (sys = strstr(r->str, "used_cpu_sys:")) != NULL)
        ns = (int64_t)((atof(user + 14) + atof(sys + 13)) * 1e9);
    freeReplyObject(r);
    return ns;
}

/* A growable list of int64 samples. */
typedef struct samples {
    int64_t *v;
    size_t n, cap;
} samples_t;

static void samples_add(samples_t *s, int64_t x)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 1024;
        int64_t *v = realloc(s->v, cap * sizeof(*v));
        if (v == NULL)
            return;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
}

/* Sorts s from index from on and returns its median (0 if empty). */
static int64_t samples_median(samples_t *s, size_t from)
{
    size_t n = s->n - from;

    if (n == 0)
        return 0;
    qsort(s->v + from, n, sizeof(*s->v), bench_cmp_i64);
    return s->v[from + (n - 1) / 2];
}

/* ---- Runs: chunks of paced or windowed messages ------------------------- */

typedef struct run run_t;

/* Starts message i of the current chunk of r; returns 0 or -1. */
typedef int (*send_fn)(run_t *r, int i);

struct run {
    uv_loop_t *loop;
    uv_timer_t tick;
    char what[128];
    double rate; /* per second; 0: full speed */
    int window;  /* full speed: most messages sent and not yet received */
    int count;   /* messages of the current chunk */
    int sent, received, failed, record;
    int64_t start_ns, last_ns;
    int64_t busy_ns; /* recorded chunks' duration */
    int settle_ms;   /* after each chunk, for the work that trails it */
    /* CPU over the recorded chunks and their settling (wall_ns): the loop
     * thread, this process (both nodes and buses, their pools) and Redis
     * (-1: unknown) */
    int64_t wall_ns, cpu_loop_ns, cpu_proc_ns, cpu_redis_ns;
    redisContext *info; /* Redis, for its CPU time, or NULL */
    samples_t lat;      /* ns, one per recorded message */
    samples_t *bytes;   /* message sizes seen on the wire, or NULL */
    size_t bytes_from;
    int64_t fixed_bytes; /* message size when bytes is NULL */
    send_fn send;
    void *ctx;
};

/* Sends what the schedule owes: at a rate, every message whose time has
 * come; at full speed, up to the window. */
static void run_pump(run_t *r)
{
    int64_t due;

    if (r->rate > 0)
        due =
            (int64_t)((double)(bench_mono_ns() - r->start_ns) * r->rate / 1e9) +
            1;
    else
        due = (int64_t)r->received + r->window;
    if (due > r->count)
        due = r->count;
    while (r->sent < due && !r->failed) {
        if (r->send(r, r->sent) != 0)
            r->failed = 1;
        r->sent++;
    }
}

static void on_tick(uv_timer_t *t)
{
    run_t *r = t->data;

    run_pump(r);
    if (bench_mono_ns() - r->last_ns > STALL_NS)
        r->failed = 1;
}

/* Records one received message of the current chunk with latency ns. */
static void run_got(run_t *r, int64_t ns)
{
    if (r->received >= r->count)
        return;
    r->received++;
    r->last_ns = bench_mono_ns();
    if (r->record)
        samples_add(&r->lat, ns);
    if (r->received == r->count) {
        if (r->record)
            r->busy_ns += r->last_ns - r->start_ns;
    } else if (r->rate <= 0) {
        run_pump(r);
    }
}

static void on_wake(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop for ms milliseconds. */
static void settle(uv_loop_t *loop, int64_t ms)
{
    int64_t end = bench_mono_ns() + ms * 1000000;
    uv_timer_t t;

    uv_timer_init(loop, &t);
    while (bench_mono_ns() < end) {
        uv_timer_start(&t, on_wake, 5, 0);
        uv_run(loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

/* Runs a chunk of count messages (recorded or a warm-up) until all were
 * received; returns 0, or -1 when it stalled. */
static int run_chunk(run_t *r, int count, int record)
{
    int64_t loop0 = thread_cpu_ns(), proc0 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID),
            redis0 = record ? redis_cpu_ns(r->info) : -1, redis1,
            wall0 = bench_mono_ns();

    r->count = count;
    r->record = record;
    r->sent = r->received = r->failed = 0;
    r->start_ns = r->last_ns = bench_mono_ns();
    uv_timer_init(r->loop, &r->tick);
    r->tick.data = r;
    uv_timer_start(&r->tick, on_tick, 1, 1);
    run_pump(r);
    while (r->received < r->count && !r->failed)
        uv_run(r->loop, UV_RUN_ONCE);
    uv_timer_stop(&r->tick);
    uv_close((uv_handle_t *)&r->tick, NULL);
    uv_run(r->loop, UV_RUN_NOWAIT);
    if (r->settle_ms > 0)
        settle(r->loop, r->settle_ms);
    if (record) {
        r->wall_ns += bench_mono_ns() - wall0;
        r->cpu_loop_ns += thread_cpu_ns() - loop0;
        r->cpu_proc_ns += cpu_ns(CLOCK_PROCESS_CPUTIME_ID) - proc0;
        redis1 = redis_cpu_ns(r->info);
        if (redis0 < 0 || redis1 < 0 || r->cpu_redis_ns < 0)
            r->cpu_redis_ns = -1;
        else
            r->cpu_redis_ns += redis1 - redis0;
    }
    if (r->failed)
        fprintf(stderr, "%s: stalled at %d of %d\n", r->what, r->received,
                r->count);
    return r->failed ? -1 : 0;
}

/* Prints r's recorded messages as a table row. */
static void run_report(run_t *r)
{
    double secs = (double)r->busy_ns / 1e9;
    int64_t bytes = r->fixed_bytes;
    size_t n = r->lat.n;
    char mode[32];

    if (r->bytes != NULL)
        bytes = samples_median(r->bytes, r->bytes_from);
    qsort(r->lat.v, n, sizeof(*r->lat.v), bench_cmp_i64);
    if (r->rate > 0)
        snprintf(mode, sizeof(mode), "steady %.0f/s", r->rate);
    else
        snprintf(mode, sizeof(mode), "full speed, window %d", r->window);
    printf("| %s | %s | %zu | %" PRId64
           " | %.0f | %.3f | %.3f | %.3f | %.3f | %.0f%% | %.1f / %.1f / ",
           r->what, mode, n, bytes, secs > 0 ? (double)n / secs : 0,
           pct_ms(r->lat.v, n, 0.5), pct_ms(r->lat.v, n, 0.99),
           pct_ms(r->lat.v, n, 0.999), pct_ms(r->lat.v, n, 1.0),
           r->wall_ns > 0 ? 100.0 * (double)r->cpu_loop_ns / (double)r->wall_ns
                          : 0,
           n > 0 ? (double)r->cpu_loop_ns / 1e3 / (double)n : 0,
           n > 0 ? (double)r->cpu_proc_ns / 1e3 / (double)n : 0);
    if (r->cpu_redis_ns < 0 || n == 0)
        printf("? |\n");
    else
        printf("%.1f |\n", (double)r->cpu_redis_ns / 1e3 / (double)n);
    fflush(stdout);
}

/* ---- Raw hiredis connections --------------------------------------------- */

/* A hiredis subscriber: on_message gets each message on its channels. */
typedef struct rsub {
    redisAsyncContext *ac;
    int subscribed;
    void (*on_message)(struct rsub *s, const char *channel, const char *data,
                       size_t len);
    void *ctx;
} rsub_t;

static redisAsyncContext *redis_connect(uv_loop_t *loop, int port)
{
    redisAsyncContext *ac = redisAsyncConnect("127.0.0.1", port);

    if (ac == NULL || ac->err != 0 || redisLibuvAttach(ac, loop) != REDIS_OK) {
        fprintf(stderr, "hiredis: cannot connect to port %d\n", port);
        if (ac != NULL)
            redisAsyncFree(ac);
        return NULL;
    }
    return ac;
}

static void on_rsub_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    redisReply *reply = reply_;
    rsub_t *s = privdata;

    (void)ac;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY ||
        reply->elements != 3 || reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(reply->element[0]->str, "subscribe") == 0)
        s->subscribed++;
    else if (strcmp(reply->element[0]->str, "message") == 0)
        s->on_message(s, reply->element[1]->str, reply->element[2]->str,
                      reply->element[2]->len);
}

/* Connects s and subscribes it to the n channels; runs the loop until
 * Redis confirmed them. Returns 0 or -1. */
static int rsub_open(rsub_t *s, uv_loop_t *loop, int port,
                     const char *const *channels, int n)
{
    int64_t deadline = bench_mono_ns() + 5000000000LL;

    s->ac = redis_connect(loop, port);
    if (s->ac == NULL)
        return -1;
    for (int i = 0; i < n; i++)
        redisAsyncCommand(s->ac, on_rsub_reply, s, "SUBSCRIBE %s", channels[i]);
    while (s->subscribed < n && bench_mono_ns() < deadline)
        settle(loop, 10);
    return s->subscribed == n ? 0 : -1;
}

static void rsub_close(rsub_t *s)
{
    if (s->ac != NULL)
        redisAsyncDisconnect(s->ac);
    s->ac = NULL;
}

/* ---- Floor: bare hiredis PUBLISH to a subscriber ------------------------- */

typedef struct floor_ctx {
    redisAsyncContext *pub;
    rsub_t sub;
    char *payload;
    size_t len;
    int64_t *t0; /* per message index of the chunk */
    run_t *run;  /* the run in progress, or NULL */
} floor_ctx_t;

static int floor_send(run_t *r, int i)
{
    floor_ctx_t *f = r->ctx;
    char head[16];

    /* The index leads the payload: "%010d:" then filler. */
    snprintf(head, sizeof(head), "%010d:", i);
    memcpy(f->payload, head, 11);
    f->t0[i] = bench_mono_ns();
    return redisAsyncCommand(f->pub, NULL, NULL, "PUBLISH %s %b", FLOOR_CHANNEL,
                             f->payload, f->len) == REDIS_OK
               ? 0
               : -1;
}

static void floor_message(rsub_t *s, const char *channel, const char *data,
                          size_t len)
{
    floor_ctx_t *f = s->ctx;
    int64_t now = bench_mono_ns();
    long i = strtol(data, NULL, 10);

    (void)channel;
    if (f->run != NULL && len == f->len && i >= 0 && i < f->run->count)
        run_got(f->run, now - f->t0[i]);
}

/* Connects the floor's publisher and subscriber; payloads of len bytes,
 * chunks of at most max messages. Returns 0 or -1. */
static int floor_open(floor_ctx_t *f, uv_loop_t *loop, int port, size_t len,
                      int max)
{
    const char *ch = FLOOR_CHANNEL;

    memset(f, 0, sizeof(*f));
    f->len = len;
    f->payload = malloc(len);
    f->t0 = calloc((size_t)max, sizeof(*f->t0));
    f->sub.on_message = floor_message;
    f->sub.ctx = f;
    if (f->payload == NULL || f->t0 == NULL)
        return -1;
    memset(f->payload, 'x', len);
    f->pub = redis_connect(loop, port);
    if (f->pub == NULL)
        return -1;
    return rsub_open(&f->sub, loop, port, &ch, 1);
}

static void floor_close(floor_ctx_t *f)
{
    if (f->pub != NULL)
        redisAsyncDisconnect(f->pub);
    rsub_close(&f->sub);
    free(f->payload);
    free(f->t0);
}

/* ---- Volume collection documents and events ----------------------------- */

/* Rescans volume j of doc in place: new digest and size. */
static int change_volume(json_t *doc, int j, int64_t stamp)
{
    char name[32];

    bench_volume_name(name, j);
    return json_object_set_new(json_object_get(doc, "volumes"), name,
                               bench_volume_entry(j, stamp));
}

/* Builds the update event of DESIGN.md section 4 from a to b into *out, as
 * a node builds it, with the seq the bus would add. */
static int make_event(json_t **out, const char *coll, const char *id, int64_t v,
                      const json_t *a, const json_t *b)
{
    json_t *patch = NULL, *merge = NULL;
    char hash[SYNCD_HASH_HEX_LEN + 1];
    syncd_error_t err;

    syncd_error_clear(&err);
    *out = NULL;
    if (syncd_patch_diff(&patch, a, b, &err) != 0 ||
        syncd_merge_diff(&merge, a, b, &err) != 0 ||
        syncd_json_hash(hash, b, &err) != 0) {
        fprintf(stderr, "diff: %s\n", err.message);
        json_decref(patch);
        json_decref(merge);
        return -1;
    }
    *out = json_pack("{s:I,s:s,s:s,s:s,s:I,s:I,s:o,s:o,s:s,s:s,s:s}", "seq",
                     (json_int_t)1042, "op", "update", "coll", coll, "id", id,
                     "v", (json_int_t)v, "base", (json_int_t)(v - 1), "patch",
                     patch, "merge", merge, "h", hash, "origin", "writer", "ts",
                     "2026-11-24T10:00:00.123456Z");
    return *out != NULL ? 0 : -1;
}

/* Returns the encoded size of event (signed with secret when not NULL). */
static size_t encoded_size(json_t *event, const char *secret)
{
    size_t len = 0;
    char *s = syncd_event_encode(event, secret, &len);

    free(s);
    return s != NULL ? len : 0;
}

/* ---- Bus only: syncd_bus_publish to another bus's subscriber ------------ */

typedef struct bus_ctx {
    syncd_bus_t *pub, *sub;
    syncd_bus_sub_t *subscription;
    json_t *event;
    int64_t *t0;  /* per message index of the chunk */
    int64_t base; /* seq before the chunk's first message (-1: unknown
                     until the first message arrives) */
    run_t *run;   /* the run in progress, or NULL */
    int64_t v;    /* the version the last message carried */
} bus_ctx_t;

/* Publishes the event as the next version of its document: the bus drops
 * a version it has published already. */
static int bus_send(run_t *r, int i)
{
    bus_ctx_t *b = r->ctx;
    json_t *ev;
    int rc;

    b->t0[i] = bench_mono_ns();
    b->v++;
    ev = json_copy(b->event);
    if (ev == NULL ||
        json_object_set_new(ev, "v", json_integer((json_int_t)b->v)) != 0 ||
        json_object_set_new(ev, "base", json_integer((json_int_t)b->v - 1)))
        rc = SYNCD_ENOMEM;
    else
        rc = syncd_bus_publish(b->pub, ev, NULL, NULL);
    json_decref(ev);
    return rc;
}

static void bus_event(syncd_bus_signal_t signal, int64_t seq,
                      const json_t *event, void *payload)
{
    bus_ctx_t *b = payload;
    int64_t now = bench_mono_ns(), i;

    /* The bus numbers a new collection from where it likes (a new epoch
     * starts above a floor): the first message sets the origin. */
    if (b->base < 0)
        b->base = seq - 1;
    i = seq - b->base - 1;

    (void)event;
    if (signal == SYNCD_BUS_EVENT && b->run != NULL && i >= 0 &&
        i < b->run->count)
        run_got(b->run, now - b->t0[i]);
}

static void on_closed(void *payload)
{
    (*(int *)payload)--;
}

/* Opens a Redis bus on loop; returns it or NULL. */
static syncd_bus_t *open_bus(uv_loop_t *loop, const char *url,
                             const char *node_id)
{
    syncd_bus_options_t bo;
    syncd_bus_t *bus = NULL;
    syncd_error_t err;

    syncd_error_clear(&err);
    syncd_bus_options_init(&bo);
    bo.redis_url = url;
    bo.database = BUS_DB;
    bo.node_id = node_id;
    bo.secret = SECRET;
    if (syncd_bus_open(&bus, loop, &bo, &err) != 0) {
        fprintf(stderr, "bus: %s\n", err.message);
        return NULL;
    }
    return bus;
}

/* Runs the loop until every bus in buses is connected (5 s at most). */
static int wait_connected(uv_loop_t *loop, syncd_bus_t *const *buses, int n)
{
    int64_t deadline = bench_mono_ns() + 5000000000LL;

    for (;;) {
        int up = 0;
        for (int i = 0; i < n; i++)
            up += syncd_bus_connected(buses[i]);
        if (up == n)
            return 0;
        if (bench_mono_ns() > deadline) {
            fprintf(stderr, "bus: Redis not connected after 5 s\n");
            return -1;
        }
        settle(loop, 10);
    }
}

/* Opens the two buses and subscribes the second; returns 0 or -1. */
static int bus_open(bus_ctx_t *b, uv_loop_t *loop, const char *url,
                    json_t *event, int max)
{
    memset(b, 0, sizeof(*b));
    b->base = -1;
    b->v = 1; /* an update's version is at least 2 */
    b->event = event;
    b->t0 = calloc((size_t)max, sizeof(*b->t0));
    b->pub = open_bus(loop, url, "writer");
    b->sub = open_bus(loop, url, "reader");
    if (b->t0 == NULL || b->pub == NULL || b->sub == NULL)
        return -1;
    if (wait_connected(loop, (syncd_bus_t *[]){b->pub, b->sub}, 2) != 0 ||
        syncd_bus_subscribe(b->sub, &b->subscription, BUS_COLL, 0, bus_event, b,
                            NULL) != 0)
        return -1;
    return 0;
}

static void bus_close(bus_ctx_t *b, uv_loop_t *loop)
{
    int open = 0;

    syncd_bus_unsubscribe(b->subscription);
    if (b->pub != NULL) {
        open++;
        syncd_bus_close(b->pub, on_closed, &open);
    }
    if (b->sub != NULL) {
        open++;
        syncd_bus_close(b->sub, on_closed, &open);
    }
    while (open > 0)
        uv_run(loop, UV_RUN_ONCE);
    free(b->t0);
}

/* ---- Nodes --------------------------------------------------------------- */

/* A document the writers edit: docs 0..D-1 are small, doc D is the big
 * one. t0 holds the start time of each version's propagation. */
typedef struct bdoc {
    const char *coll;
    char id[32];
    int index;
    int entries;
    int64_t *t0; /* indexed by version */
    int64_t *tw; /* indexed by version: when the clock thread read the
                    event off the channel (atomic) */
    int64_t vmax;
} bdoc_t;

/* A job for the writer threads, then its committed change. */
typedef struct job {
    struct job *next;
    bdoc_t *doc;
    int64_t stamp;
    syncd_node_pub_t *pub; /* its publish, prepared by the writer thread */
    int64_t version;       /* the version it committed */
    int status;
    int64_t edit_ns; /* time syncd_store_edit() took */
} job_t;

/* What the reader's watcher saw, noted on the reader's loop. */
typedef struct seen {
    enum { SEEN_UPDATE, SEEN_CREATE, SEEN_SIGNAL } kind;
    int d; /* the document's index (-1: not one of them) */
    int64_t v, now;
} seen_t;

typedef struct cluster {
    uv_loop_t *loop; /* the writer node's, and the reader's unless split */
    /* split: the reader node on a loop and thread of its own (as in a
     * process of its own); what its watcher sees reaches the writer's loop
     * through seen, under seen_mu, and seen_async. */
    int split, reader_on;
    uv_loop_t rloop;
    uv_async_t rstop, seen_async;
    pthread_t reader;
    pthread_mutex_t seen_mu;
    seen_t *seen;
    size_t seen_n, seen_cap;
    syncd_store_t *store[2];
    syncd_bus_t *bus[2];
    syncd_node_t *node[2];
    char dir[2][256];
    syncd_node_watch_t *watch[2]; /* the reader's: small and big coll */
    bdoc_t *docs;
    int ndocs;
    int first, span; /* jobs edit docs first .. first + span - 1 */
    run_t *run;      /* the run in progress, or NULL */
    int64_t stamp;
    int creates; /* creates the reader's watchers saw */
    int publish_errors, edit_errors, signals;
    /* Writer threads and their queues. */
    pthread_t *threads;
    int nthreads, stopping;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job_t *todo, *todo_tail, *done;
    uv_async_t async;
    /* hold: committed jobs are kept in held (not published) */
    int hold;
    job_t **held;
    size_t held_n, held_cap, cursor;
    samples_t edit_ns; /* writers' edit times */
    /* The observers, started by observers_start() for the observed chunk
     * and the live rows (so that the recorded node rows have none, as the
     * floor has none): the nodes' channels read raw, bytes of each event
     * on the wire; and the clock thread (its own blocking connection,
     * subscribed to the small collection's channel), with per observed
     * event the time from publish to the wire and to the watcher (ns, same
     * index). */
    int redis_port;
    char channels[2][64];
    rsub_t wire;
    samples_t wire_small, wire_big;
    redisContext *clock;
    pthread_t clock_thread;
    int clock_on;
    samples_t to_wire, to_watch;
} cluster_t;

static int edit_volume(json_t *body, void *arg, syncd_error_t *err)
{
    job_t *job = arg;

    (void)err;
    if (!json_is_object(json_object_get(body, "volumes")))
        return SYNCD_EINVAL;
    return change_volume(body, (int)(job->stamp % job->doc->entries),
                         job->stamp) == 0
               ? 0
               : SYNCD_ENOMEM;
}

static void *writer_main(void *arg)
{
    cluster_t *cl = arg;
    int64_t now;

    pthread_mutex_lock(&cl->mu);
    for (;;) {
        syncd_change_t *change = NULL;
        job_t *job;
        while (cl->todo == NULL && !cl->stopping)
            pthread_cond_wait(&cl->cv, &cl->mu);
        if (cl->todo == NULL)
            break;
        job = cl->todo;
        cl->todo = job->next;
        if (cl->todo == NULL)
            cl->todo_tail = NULL;
        pthread_mutex_unlock(&cl->mu);
        job->edit_ns = bench_mono_ns();
        job->status =
            syncd_store_edit(cl->store[0], &change, job->doc->coll,
                             job->doc->id, edit_volume, job, -1, NULL);
        now = bench_mono_ns();
        job->edit_ns = now - job->edit_ns;
        if (job->status == 0) {
            job->version = change->doc->version;
            if (!cl->hold && job->version < job->doc->vmax)
                job->doc->t0[job->version] = now;
            /* As the daemon's workers do: the loop only hands it over
             * (a failed prepare leaves no pub, and its publish fails). */
            syncd_node_prepare(cl->node[0], change, &job->pub);
        }
        syncd_change_free(change);
        pthread_mutex_lock(&cl->mu);
        job->next = cl->done;
        cl->done = job;
        uv_async_send(&cl->async);
    }
    pthread_mutex_unlock(&cl->mu);
    return NULL;
}

static void on_published(int status, int64_t seq, void *payload)
{
    cluster_t *cl = payload;

    (void)seq;
    if (status != 0)
        cl->publish_errors++;
}

static void job_free(job_t *job)
{
    syncd_node_pub_free(job->pub);
    free(job);
}

/* Publishes job's change as its writer prepared it. */
static int publish_job(cluster_t *cl, job_t *job)
{
    syncd_node_pub_t *pub = job->pub;

    job->pub = NULL;
    return syncd_node_publish_prepared(cl->node[0], pub, on_published, cl);
}

/* Takes the jobs the writers finished, oldest first: publishes their
 * changes, or keeps them in held. */
static void on_async(uv_async_t *a)
{
    cluster_t *cl = a->data;
    job_t *done, *rev = NULL;

    pthread_mutex_lock(&cl->mu);
    done = cl->done;
    cl->done = NULL;
    pthread_mutex_unlock(&cl->mu);
    while (done != NULL) {
        job_t *next = done->next;
        done->next = rev;
        rev = done;
        done = next;
    }
    while (rev != NULL) {
        job_t *job = rev;
        rev = job->next;
        samples_add(&cl->edit_ns, job->edit_ns);
        if (job->status != 0) {
            cl->edit_errors++;
        } else if (cl->hold && cl->held_n < cl->held_cap) {
            cl->held[cl->held_n++] = job;
            continue;
        } else if (publish_job(cl, job) != 0) {
            cl->publish_errors++;
        }
        job_free(job);
    }
}

/* Hands an edit of the next document to the writer threads. */
static int queue_edit(cluster_t *cl, int i)
{
    job_t *job = calloc(1, sizeof(*job));

    if (job == NULL)
        return -1;
    job->doc = &cl->docs[cl->first + i % cl->span];
    job->stamp = ++cl->stamp;
    pthread_mutex_lock(&cl->mu);
    if (cl->todo_tail != NULL)
        cl->todo_tail->next = job;
    else
        cl->todo = job;
    cl->todo_tail = job;
    pthread_cond_signal(&cl->cv);
    pthread_mutex_unlock(&cl->mu);
    return 0;
}

/* Live path: message i is an edit; the writer starts the clock. */
static int live_send(run_t *r, int i)
{
    return queue_edit(r->ctx, i);
}

/* Committed path: message i publishes the next held change. */
static int held_send(run_t *r, int i)
{
    cluster_t *cl = r->ctx;
    job_t *job;
    int rc;

    (void)i;
    if (cl->cursor >= cl->held_n)
        return -1;
    job = cl->held[cl->cursor++];
    if (job->version < job->doc->vmax)
        job->doc->t0[job->version] = bench_mono_ns();
    rc = publish_job(cl, job);
    job_free(job);
    return rc;
}

/* Takes what the reader's watcher saw, on the writer's loop: an update
 * of a document of the run in progress ends its message. */
static void seen_one(cluster_t *cl, const seen_t *s)
{
    bdoc_t *doc;
    int64_t tw;

    if (s->kind == SEEN_SIGNAL) {
        cl->signals++;
        return;
    }
    if (s->kind == SEEN_CREATE) {
        cl->creates++;
        return;
    }
    if (s->d < cl->first || s->d >= cl->first + cl->span || cl->run == NULL)
        return;
    doc = &cl->docs[s->d];
    if (s->v <= 0 || s->v >= doc->vmax || doc->t0[s->v] == 0)
        return;
    tw = __atomic_load_n(&doc->tw[s->v], __ATOMIC_ACQUIRE);
    if (cl->run->record && tw > 0) {
        samples_add(&cl->to_wire, tw - doc->t0[s->v]);
        samples_add(&cl->to_watch, s->now - doc->t0[s->v]);
    }
    run_got(cl->run, s->now - doc->t0[s->v]);
}

/* Takes what a split reader's watcher saw since the last call. */
static void on_seen_async(uv_async_t *a)
{
    cluster_t *cl = a->data;
    seen_t *list;
    size_t n;

    pthread_mutex_lock(&cl->seen_mu);
    list = cl->seen;
    n = cl->seen_n;
    cl->seen = NULL;
    cl->seen_n = cl->seen_cap = 0;
    pthread_mutex_unlock(&cl->seen_mu);
    for (size_t i = 0; i < n; i++)
        seen_one(cl, &list[i]);
    free(list);
}

/* The reader's watcher: the end of the measured node path (the clock is
 * read here, on the reader's loop). */
static void on_watch(syncd_node_signal_t signal, int64_t seq,
                     const json_t *event, void *payload)
{
    cluster_t *cl = payload;
    seen_t s = {.kind = SEEN_UPDATE, .d = -1, .now = bench_mono_ns()};
    const char *id;

    (void)seq;
    if (signal != SYNCD_NODE_EVENT) {
        s.kind = SEEN_SIGNAL;
    } else if (strcmp(json_string_value(json_object_get(event, "op")),
                      "create") == 0) {
        s.kind = SEEN_CREATE;
    } else {
        id = json_string_value(json_object_get(event, "id"));
        s.v = json_integer_value(json_object_get(event, "v"));
        for (int d = 0; d < cl->ndocs && s.d < 0; d++) {
            if (strcmp(cl->docs[d].id, id) == 0)
                s.d = d;
        }
    }
    if (!cl->split) {
        seen_one(cl, &s);
        return;
    }
    pthread_mutex_lock(&cl->seen_mu);
    if (cl->seen_n == cl->seen_cap) {
        size_t cap = cl->seen_cap > 0 ? 2 * cl->seen_cap : 64;
        seen_t *grown = realloc(cl->seen, cap * sizeof(*grown));
        if (grown == NULL)
            abort();
        cl->seen = grown;
        cl->seen_cap = cap;
    }
    cl->seen[cl->seen_n++] = s;
    pthread_mutex_unlock(&cl->seen_mu);
    uv_async_send(&cl->seen_async);
}

static void on_rstop(uv_async_t *a)
{
    uv_stop(a->loop);
}

/* A split reader's thread: runs its loop until reader_stop(). */
static void *reader_main(void *arg)
{
    cluster_t *cl = arg;

    uv_run(&cl->rloop, UV_RUN_DEFAULT);
    return NULL;
}

/* Stops a split reader's thread, so that its node may be read or closed
 * from the writer's; a no-op when it is not running. */
static void reader_stop(cluster_t *cl)
{
    if (!cl->reader_on)
        return;
    uv_async_send(&cl->rstop);
    pthread_join(cl->reader, NULL);
    cl->reader_on = 0;
}

/* Runs the nodes' loops once (without waiting when there are two). */
static void run_loops(cluster_t *cl)
{
    if (!cl->split) {
        uv_run(cl->loop, UV_RUN_ONCE);
        return;
    }
    uv_run(cl->loop, UV_RUN_NOWAIT);
    uv_run(&cl->rloop, UV_RUN_NOWAIT);
}

/* The clock thread: reads the small collection's channel with blocking
 * hiredis and notes when each event arrives, whatever the loop is doing,
 * until its connection is shut down. */
static void *clock_main(void *arg)
{
    cluster_t *cl = arg;
    void *r;

    while (redisGetReply(cl->clock, &r) == REDIS_OK) {
        redisReply *reply = r;
        int64_t now = bench_mono_ns(), v;
        json_t *event = NULL;
        const char *id = NULL;

        if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
            reply->element[0]->type == REDIS_REPLY_STRING &&
            strcmp(reply->element[0]->str, "message") == 0)
            event = json_loadb(reply->element[2]->str, reply->element[2]->len,
                               0, NULL);
        id = json_string_value(json_object_get(event, "id"));
        v = json_integer_value(json_object_get(event, "v"));
        for (int d = 0; id != NULL && d < cl->ndocs; d++) {
            if (strcmp(cl->docs[d].id, id) == 0 && v > 0 &&
                v < cl->docs[d].vmax)
                __atomic_store_n(&cl->docs[d].tw[v], now, __ATOMIC_RELEASE);
        }
        json_decref(event);
        freeReplyObject(reply);
    }
    return NULL;
}

/* Starts the clock thread on channel; 0 or -1. */
static int clock_start(cluster_t *cl, int port, const char *channel)
{
    redisReply *reply;

    cl->clock = redisConnect("127.0.0.1", port);
    if (cl->clock == NULL || cl->clock->err != 0)
        return -1;
    reply = redisCommand(cl->clock, "SUBSCRIBE %s", channel);
    if (reply == NULL)
        return -1;
    freeReplyObject(reply);
    if (pthread_create(&cl->clock_thread, NULL, clock_main, cl) != 0)
        return -1;
    cl->clock_on = 1;
    return 0;
}

/* Stops the clock thread: its connection is shut down under it. */
static void clock_stop(cluster_t *cl)
{
    if (cl->clock_on) {
        shutdown(cl->clock->fd, SHUT_RDWR);
        pthread_join(cl->clock_thread, NULL);
    }
    if (cl->clock != NULL)
        redisFree(cl->clock);
    cl->clock = NULL;
    cl->clock_on = 0;
}

/* Prints where the observed node chunk's time went: publish to the wire
 * (the writer node, its bus, Redis's script) and wire to watcher (the
 * reader node), at p50 and p99, and over the slowest 1% of events; and
 * how much of the writer's outbox its republisher sent again. */
static void print_split(cluster_t *cl)
{
    size_t n = cl->to_watch.n, slow = n / 100;
    samples_t wire = {0}, reader = {0}, total = {0};
    double slow_wire = 0, slow_reader = 0;
    syncd_bus_stats_t bs;
    int64_t cut;

    if (n == 0)
        return;
    for (size_t i = 0; i < n; i++) {
        samples_add(&wire, cl->to_wire.v[i]);
        samples_add(&reader, cl->to_watch.v[i] - cl->to_wire.v[i]);
        samples_add(&total, cl->to_watch.v[i]);
    }
    qsort(total.v, n, sizeof(*total.v), bench_cmp_i64);
    cut = total.v[n - (slow > 0 ? slow : 1)];
    slow = 0;
    for (size_t i = 0; i < n; i++) {
        if (cl->to_watch.v[i] < cut)
            continue;
        slow++;
        slow_wire += (double)cl->to_wire.v[i];
        slow_reader += (double)(cl->to_watch.v[i] - cl->to_wire.v[i]);
    }
    qsort(wire.v, n, sizeof(*wire.v), bench_cmp_i64);
    qsort(reader.v, n, sizeof(*reader.v), bench_cmp_i64);
    printf("\n| node to node, steady (%zu events; the slowest: %zu) | p50 ms "
           "| p99 ms | mean of the slowest, ms |\n|---|---|---|---|\n",
           n, slow);
    printf("| publish to wire (writer node, its bus, Redis's script) | %.3f "
           "| %.3f | %.3f |\n",
           pct_ms(wire.v, n, 0.5), pct_ms(wire.v, n, 0.99),
           slow_wire / (double)slow / 1e6);
    printf("| wire to watcher (reader node) | %.3f | %.3f | %.3f |\n",
           pct_ms(reader.v, n, 0.5), pct_ms(reader.v, n, 0.99),
           slow_reader / (double)slow / 1e6);
    syncd_bus_stats(cl->bus[0], &bs);
    printf("\nThe writer's bus so far: %llu events published, %llu republished "
           "by its outbox and dropped as published already.\n",
           (unsigned long long)bs.published,
           (unsigned long long)bs.dropped_republished);
    free(wire.v);
    free(reader.v);
    free(total.v);
}

static void wire_message(rsub_t *s, const char *channel, const char *data,
                         size_t len)
{
    cluster_t *cl = s->ctx;
    size_t n = strlen(channel), k = strlen(BIG_COLL);

    (void)data;
    if (n >= k && strcmp(channel + n - k, BIG_COLL) == 0)
        samples_add(&cl->wire_big, (int64_t)len);
    else
        samples_add(&cl->wire_small, (int64_t)len);
}

/* Starts the observers of the nodes' channels (cluster_t); 0 or -1. */
static int observers_start(cluster_t *cl)
{
    const char *chans[2] = {cl->channels[0], cl->channels[1]};

    cl->wire.on_message = wire_message;
    cl->wire.ctx = cl;
    return clock_start(cl, cl->redis_port, cl->channels[0]) != 0 ||
                   rsub_open(&cl->wire, cl->loop, cl->redis_port, chans, 2) != 0
               ? -1
               : 0;
}

/* The loop of node k. */
static uv_loop_t *node_loop(cluster_t *cl, int k)
{
    return k == 1 && cl->split ? &cl->rloop : cl->loop;
}

static int open_node(cluster_t *cl, int k, const char *mongo_uri,
                     const char *redis_url)
{
    const char *id = k == 0 ? "writer" : "reader";
    syncd_store_options_t so;
    syncd_node_options_t no;
    syncd_error_t err;
    char store_db[64];

    /* A database of its own, in case the FerretDB is an outside one. */
    snprintf(store_db, sizeof(store_db), "syncd_bench_bus_%d", (int)getpid());
    syncd_error_clear(&err);
    if (syncd_test_tmpdir(cl->dir[k], sizeof(cl->dir[k]), "bench-bus") != 0)
        return -1;
    syncd_store_options_init(&so);
    so.mongo_uri = mongo_uri;
    so.database = store_db;
    so.data_dir = cl->dir[k];
    so.node_id = id;
    if (syncd_store_open(&cl->store[k], &so, &err) != 0) {
        fprintf(stderr, "store: %s\n", err.message);
        return -1;
    }
    cl->bus[k] = open_bus(node_loop(cl, k), redis_url, id);
    if (cl->bus[k] == NULL)
        return -1;
    syncd_node_options_init(&no);
    no.node_id = id;
    no.anti_entropy_interval_ms = 0; /* no background repairs in the runs */
    if (syncd_node_open(&cl->node[k], node_loop(cl, k), cl->store[k],
                        cl->bus[k], &no, &err) != 0) {
        fprintf(stderr, "node: %s\n", err.message);
        return -1;
    }
    return 0;
}

static void cluster_close(cluster_t *cl)
{
    int open = 0;

    if (cl->loop == NULL)
        return;
    pthread_mutex_lock(&cl->mu);
    cl->stopping = 1;
    pthread_cond_broadcast(&cl->cv);
    pthread_mutex_unlock(&cl->mu);
    for (int t = 0; t < cl->nthreads; t++)
        pthread_join(cl->threads[t], NULL);
    cl->hold = 0;
    on_async(&cl->async);
    while (cl->cursor < cl->held_n)
        job_free(cl->held[cl->cursor++]);
    rsub_close(&cl->wire);
    clock_stop(cl);
    reader_stop(cl);
    for (int k = 0; k < 2; k++) {
        syncd_node_unwatch(cl->watch[k]);
        if (cl->node[k] != NULL) {
            open++;
            syncd_node_close(cl->node[k], on_closed, &open);
        }
    }
    while (open > 0)
        run_loops(cl);
    for (int k = 0; k < 2; k++) {
        if (cl->bus[k] != NULL) {
            open++;
            syncd_bus_close(cl->bus[k], on_closed, &open);
        }
    }
    while (open > 0)
        run_loops(cl);
    uv_close((uv_handle_t *)&cl->async, NULL);
    uv_run(cl->loop, UV_RUN_NOWAIT);
    if (cl->split) {
        uv_close((uv_handle_t *)&cl->seen_async, NULL);
        uv_close((uv_handle_t *)&cl->rstop, NULL);
        uv_run(cl->loop, UV_RUN_NOWAIT);
        uv_run(&cl->rloop, UV_RUN_NOWAIT);
        if (uv_loop_close(&cl->rloop) != 0)
            fprintf(stderr, "reader loop: handles left open\n");
        free(cl->seen);
        pthread_mutex_destroy(&cl->seen_mu);
    }
    for (int k = 0; k < 2; k++) {
        syncd_store_close(cl->store[k]);
        if (cl->dir[k][0] != '\0')
            syncd_test_rmtree(cl->dir[k]);
    }
    for (int d = 0; d < cl->ndocs; d++) {
        free(cl->docs[d].t0);
        free(cl->docs[d].tw);
    }
    free(cl->docs);
    free(cl->threads);
    free(cl->held);
    free(cl->edit_ns.v);
    free(cl->wire_small.v);
    free(cl->wire_big.v);
    free(cl->to_wire.v);
    free(cl->to_watch.v);
    pthread_mutex_destroy(&cl->mu);
    pthread_cond_destroy(&cl->cv);
}

/* Runs the loop until cond(cl) holds; -1 after timeout_s seconds. */
static int wait_for(cluster_t *cl, int (*cond)(const cluster_t *cl),
                    int64_t timeout_s, const char *what)
{
    int64_t deadline = bench_mono_ns() + timeout_s * 1000000000;

    while (!cond(cl)) {
        if (bench_mono_ns() > deadline) {
            fprintf(stderr, "timed out waiting for %s\n", what);
            return -1;
        }
        settle(cl->loop, 10);
    }
    return 0;
}

static int creates_seen(const cluster_t *cl)
{
    return cl->creates >= cl->first + cl->span;
}

/* Creates docs first..first+n-1 on the writer and publishes the creates;
 * runs the loop until the reader's watcher saw them (so the reader caches
 * every document before its updates). */
static int create_docs(cluster_t *cl, int first, int n)
{
    syncd_error_t err;

    cl->first = first;
    cl->span = n;
    for (int d = first; d < first + n; d++) {
        bdoc_t *doc = &cl->docs[d];
        json_t *body = bench_volume_doc(doc->id, doc->entries);
        syncd_change_t *ch = NULL;
        int rc;

        syncd_error_clear(&err);
        rc = body != NULL ? syncd_store_create(cl->store[0], &ch, doc->coll,
                                               doc->id, body, &err)
                          : SYNCD_ENOMEM;
        json_decref(body);
        if (rc == 0)
            rc = syncd_node_publish(cl->node[0], ch, on_published, cl);
        syncd_change_free(ch);
        if (rc != 0) {
            fprintf(stderr, "create %s: %s (%d)\n", doc->id, err.message, rc);
            return -1;
        }
    }
    return wait_for(cl, creates_seen, 300, "the reader to see the creates");
}

static int cluster_open(cluster_t *cl, uv_loop_t *loop, int split,
                        const char *mongo_uri, const char *redis_url,
                        int redis_port, int ndocs, int entries,
                        int64_t versions, int nthreads)
{
    syncd_error_t err;

    memset(cl, 0, sizeof(*cl));
    cl->loop = loop;
    cl->redis_port = redis_port;
    pthread_mutex_init(&cl->mu, NULL);
    pthread_cond_init(&cl->cv, NULL);
    uv_async_init(loop, &cl->async, on_async);
    cl->async.data = cl;
    cl->split = split;
    if (split) {
        pthread_mutex_init(&cl->seen_mu, NULL);
        uv_loop_init(&cl->rloop);
        uv_async_init(&cl->rloop, &cl->rstop, on_rstop);
        uv_async_init(loop, &cl->seen_async, on_seen_async);
        cl->seen_async.data = cl;
    }
    cl->docs = calloc((size_t)ndocs + 1, sizeof(*cl->docs));
    cl->threads = calloc((size_t)nthreads, sizeof(*cl->threads));
    if (cl->docs == NULL || cl->threads == NULL)
        return -1;
    cl->ndocs = ndocs + 1;
    for (int d = 0; d < cl->ndocs; d++) {
        bdoc_t *doc = &cl->docs[d];
        int big = d == ndocs;
        doc->coll = big ? BIG_COLL : SMALL_COLL;
        doc->index = d;
        doc->entries = big ? BIG_ENTRIES : entries;
        snprintf(doc->id, sizeof(doc->id), big ? "refs" : "doc-%04d", d);
        doc->vmax = versions + 2;
        doc->t0 = calloc((size_t)doc->vmax, sizeof(*doc->t0));
        doc->tw = calloc((size_t)doc->vmax, sizeof(*doc->tw));
        if (doc->t0 == NULL || doc->tw == NULL)
            return -1;
    }
    for (int k = 0; k < 2; k++) {
        if (open_node(cl, k, mongo_uri, redis_url) != 0)
            return -1;
    }
    if (wait_connected(loop, cl->bus, split ? 1 : 2) != 0 ||
        (split && wait_connected(&cl->rloop, &cl->bus[1], 1) != 0))
        return -1;
    syncd_error_clear(&err);
    if (syncd_node_watch(cl->node[1], &cl->watch[0], SMALL_COLL, NULL, -1,
                         on_watch, cl, &err) != 0 ||
        syncd_node_watch(cl->node[1], &cl->watch[1], BIG_COLL, NULL, -1,
                         on_watch, cl, &err) != 0) {
        fprintf(stderr, "watch: %s\n", err.message);
        return -1;
    }
    snprintf(cl->channels[0], sizeof(cl->channels[0]), "syncd:%s:%s", BUS_DB,
             SMALL_COLL);
    snprintf(cl->channels[1], sizeof(cl->channels[1]), "syncd:%s:%s", BUS_DB,
             BIG_COLL);
    if (split) {
        if (pthread_create(&cl->reader, NULL, reader_main, cl) != 0)
            return -1;
        cl->reader_on = 1;
    }
    /* Let the reader subscribe its watched collections. */
    settle(loop, SETTLE_MS);
    for (int t = 0; t < nthreads; t++) {
        if (pthread_create(&cl->threads[t], NULL, writer_main, cl) != 0)
            return -1;
        cl->nthreads++;
    }
    return 0;
}

static int all_held(const cluster_t *cl)
{
    return cl->held_n + (size_t)cl->edit_errors >= cl->held_cap;
}

static int cmp_held(const void *a, const void *b)
{
    const job_t *x = *(job_t *const *)a, *y = *(job_t *const *)b;
    int64_t vx = x->version, vy = y->version;

    if (vx != vy)
        return (vx > vy) - (vx < vy);
    return (x->doc->index > y->doc->index) - (x->doc->index < y->doc->index);
}

/* Commits n edits over docs first..first+span-1 and keeps the changes,
 * sorted so that each document's versions come in order. */
static int commit_ahead(cluster_t *cl, int n)
{
    int64_t start = bench_mono_ns();
    size_t from = cl->edit_ns.n;
    double secs;

    cl->held = calloc((size_t)n, sizeof(*cl->held));
    if (cl->held == NULL)
        return -1;
    cl->held_cap = (size_t)n;
    cl->hold = 1;
    for (int i = 0; i < n; i++) {
        if (queue_edit(cl, i) != 0)
            return -1;
    }
    if (wait_for(cl, all_held, 3600, "the commits") != 0 ||
        cl->edit_errors > 0) {
        fprintf(stderr, "commits: %d edits failed\n", cl->edit_errors);
        return -1;
    }
    cl->hold = 0;
    secs = (double)(bench_mono_ns() - start) / 1e9;
    qsort(cl->held, cl->held_n, sizeof(*cl->held), cmp_held);
    qsort(cl->edit_ns.v + from, cl->edit_ns.n - from, sizeof(int64_t),
          bench_cmp_i64);
    fprintf(stderr,
            "committed %zu edits ahead in %.0f s (%.0f/s, %d writer "
            "threads; syncd_store_edit p50 %.1f ms, p99 %.1f ms)\n",
            cl->held_n, secs, (double)cl->held_n / secs, cl->nthreads,
            pct_ms(cl->edit_ns.v + from, cl->edit_ns.n - from, 0.5),
            pct_ms(cl->edit_ns.v + from, cl->edit_ns.n - from, 0.99));
    return 0;
}

static void print_node_stats(cluster_t *cl)
{
    reader_stop(cl);
    for (int k = 0; k < 2; k++) {
        syncd_node_stats_t ns;
        syncd_bus_stats_t bs;

        syncd_node_stats(cl->node[k], &ns);
        syncd_bus_stats(cl->bus[k], &bs);
        printf("- %s node: applied %" PRIu64 ", dropped duplicate %" PRIu64
               ", dropped old %" PRIu64 ", ignored uncached %" PRIu64
               ", refetches %" PRIu64 ", hash mismatches %" PRIu64
               ", resyncs %" PRIu64 "; its bus: published %" PRIu64
               ", received %" PRIu64 " (its own, known by their bytes: %" PRIu64
               "), replayed %" PRIu64 ", gaps %" PRIu64 "\n",
               k == 0 ? "writer" : "reader", ns.events_applied,
               ns.events_dropped_duplicate, ns.events_dropped_old,
               ns.events_ignored_uncached, ns.refetches, ns.hash_mismatches,
               ns.resyncs, bs.published, bs.received, bs.received_own,
               bs.replayed, bs.gaps);
    }
    printf("- edit errors %d, publish errors %d, watcher resync/close "
           "signals %d\n",
           cl->edit_errors, cl->publish_errors, cl->signals);
}

/* ---- Event size of a one-entry change to the 10k-entry document --------- */

/* Returns the median time in ns of 5 calls of what(a, b). */
static int64_t time_median(int (*what)(const json_t *a, const json_t *b),
                           const json_t *a, const json_t *b)
{
    samples_t s = {0};
    int64_t med;

    for (int i = 0; i < 5; i++) {
        int64_t t = bench_mono_ns();
        what(a, b);
        samples_add(&s, bench_mono_ns() - t);
    }
    med = samples_median(&s, 0);
    free(s.v);
    return med;
}

static int do_patch(const json_t *doc, const json_t *patch)
{
    json_t *out = NULL;
    int rc = syncd_patch_apply(&out, doc, patch, NULL);

    json_decref(out);
    return rc;
}

/* Applies patch to doc in place: the event's replaces put the same values
 * each time, so every call does the same work. */
static int do_patch_in_place(const json_t *doc, const json_t *patch)
{
    json_t *mine = (json_t *)doc;

    return syncd_patch_apply_in_place(&mine, patch, NULL, NULL);
}

static int do_hash(const json_t *doc, const json_t *unused)
{
    char hash[SYNCD_HASH_HEX_LEN + 1];

    (void)unused;
    return syncd_json_hash(hash, doc, NULL);
}

static int do_dump(const json_t *doc, const json_t *unused)
{
    char *s = json_dumps(doc, JSON_COMPACT);

    (void)unused;
    free(s);
    return s != NULL ? 0 : -1;
}

static int do_size(const json_t *doc, const json_t *unused)
{
    (void)unused;
    return syncd_json_compact_size(doc, 0) > 0 ? 0 : -1;
}

/* What building the event measures of the body: only up to the diff's
 * size (syncd/node.c build_event()). */
static int do_size_capped(const json_t *doc, const json_t *patch)
{
    size_t diff = syncd_json_compact_size(patch, 0);

    return syncd_json_compact_size(doc, diff) > 0 ? 0 : -1;
}

/* Prints the times of the reader's steps for a one-volume event on a
 * document of entries volumes and on the big one (a, b, ev). */
static int apply_costs(int entries, const json_t *a, const json_t *b,
                       const json_t *ev)
{
    static const char *const steps[] = {
        "syncd_patch_apply (on a copy)",
        "syncd_patch_apply_in_place (undo log)",
        "syncd_json_hash of the result",
        "json_dumps of the result (size of a serialization)",
        "syncd_json_compact_size of the result (whole walk)",
        "syncd_json_compact_size of the body up to the diff's size"};
#define NSTEPS (sizeof(steps) / sizeof(steps[0]))
    json_t *sa = bench_volume_doc("small", entries), *sb = NULL, *sev = NULL;
    json_t *own = NULL;
    double ms[2][NSTEPS];
    int rc = -1;

    sb = sa != NULL ? json_deep_copy(sa) : NULL;
    if (sb == NULL || change_volume(sb, 1, 1) != 0 ||
        make_event(&sev, SMALL_COLL, "small", 2, sa, sb) != 0)
        goto cleanup;
    for (int k = 0; k < 2; k++) {
        const json_t *x = k == 0 ? sa : a, *y = k == 0 ? sb : b;
        const json_t *e = k == 0 ? sev : ev;
        const json_t *p = json_object_get(e, "patch");

        own = json_deep_copy(x);
        if (own == NULL)
            goto cleanup;
        ms[k][0] = (double)time_median(do_patch, x, p) / 1e6;
        ms[k][1] = (double)time_median(do_patch_in_place, own, p) / 1e6;
        ms[k][2] = (double)time_median(do_hash, y, NULL) / 1e6;
        ms[k][3] = (double)time_median(do_dump, y, NULL) / 1e6;
        ms[k][4] = (double)time_median(do_size, y, NULL) / 1e6;
        ms[k][5] = (double)time_median(do_size_capped, y, p) / 1e6;
        json_decref(own);
        own = NULL;
    }
    for (size_t i = 0; i < NSTEPS; i++)
        printf("| %s | %.3f | %.3f |\n", steps[i], ms[0][i], ms[1][i]);
    rc = 0;

cleanup:
    json_decref(own);
    json_decref(sa);
    json_decref(sb);
    json_decref(sev);
    return rc;
}

/* ---- The receiver's apply, on the node cache itself ---------------------- */

/* Applies RECV_EVENTS one-volume events (two replaces, as the bus's) to a
 * cached document of entries volumes through syncd_cache_patch(), as the
 * receiving node does on its loop (nonblocking; a call that finds the
 * write-behind due goes blocking, as the node then sends the event to the
 * pool), after one event that builds the hash tree. Sets *cpu_med and
 * *cpu_mean to the thread CPU ms per event (the mean includes the records
 * written behind) and *tree_ms to the CPU ms of the first, tree-building
 * event. The expected hash is computed outside the clock. */
#define RECV_EVENTS 40
static int receiver_cpu(int entries, double *cpu_med, double *cpu_mean,
                        double *tree_ms)
{
    json_t *model = bench_volume_doc("recv", entries);
    syncd_doc_t doc = {BIG_COLL, "recv", 1, model, "", 0, "bench", 0};
    samples_t s = {0};
    syncd_cache_t *cache = NULL;
    int64_t total = 0;
    char dir[256];
    int rc = -1, r;

    if (model == NULL || syncd_test_tmpdir(dir, sizeof(dir), "bench-recv") ||
        syncd_cache_open(&cache, dir, 3600 * 1000, (uint64_t)1 << 30,
                         SYNCD_BLOCK_CACHE_BYTES, 0, NULL, NULL) != 0 ||
        syncd_json_hash(doc.hash, model, NULL) != 0)
        goto cleanup;
    /* The cache's body is its own, as the node's is once its event is
     * applied. */
    doc.body = json_deep_copy(model);
    r = doc.body != NULL ? syncd_cache_put(cache, &doc, NULL, 0, NULL) : -1;
    json_decref(doc.body);
    if (r != 1)
        goto cleanup;
    for (int i = 0; i <= RECV_EVENTS; i++) {
        int j = (i * 4099 + 4321) % entries;
        json_t *vol = bench_volume_entry(j, i + 1), *patch;
        syncd_doc_t meta = doc;
        char name[32], path[64];
        int64_t cached, t;

        bench_volume_name(name, j);
        snprintf(path, sizeof(path), "/volumes/%s", name);
        patch = json_pack(
            "[{s:s,s:s+,s:O},{s:s,s:s+,s:O}]", "op", "replace", "path", path,
            "/digest", "value", json_object_get(vol, "digest"), "op", "replace",
            "path", path, "/size", "value", json_object_get(vol, "size"));
        json_decref(vol);
        if (patch == NULL ||
            syncd_patch_apply_in_place(&model, patch, NULL, NULL) != 0 ||
            syncd_json_hash(meta.hash, model, NULL) != 0) {
            json_decref(patch);
            goto cleanup;
        }
        meta.version = i + 2;
        meta.body = NULL;
        t = thread_cpu_ns();
        r = syncd_cache_patch(cache, &meta, i + 1, patch, (size_t)8 << 20,
                              i > 0, &cached, NULL);
        if (r == 0 || r == 2)
            r = syncd_cache_patch(cache, &meta, i + 1, patch, (size_t)8 << 20,
                                  0, &cached, NULL);
        /* The node's pool writes the records behind: its CPU too. */
        syncd_cache_flush_due(cache);
        t = thread_cpu_ns() - t;
        json_decref(patch);
        if (r != 1) {
            fprintf(stderr, "receiver: event %d not applied in place (%d)\n", i,
                    r);
            goto cleanup;
        }
        if (i == 0) {
            *tree_ms = (double)t / 1e6;
        } else {
            samples_add(&s, t);
            total += t;
        }
    }
    *cpu_med = (double)samples_median(&s, 0) / 1e6;
    *cpu_mean = (double)total / RECV_EVENTS / 1e6;
    rc = 0;

cleanup:
    free(s.v);
    syncd_cache_close(cache);
    syncd_test_rmtree(dir);
    json_decref(model);
    return rc;
}

static int bench_bytes(int entries)
{
    json_t *a = bench_volume_doc("refs", BIG_ENTRIES), *b = NULL, *ev = NULL;
    json_t *whole = NULL;
    size_t doc_bytes, ev_bytes, ev_signed, whole_bytes;
    char *patch = NULL;
    int rc = -1;

    b = a != NULL ? json_deep_copy(a) : NULL;
    if (b == NULL || change_volume(b, 4321, 1) != 0 ||
        make_event(&ev, BIG_COLL, "refs", 8, a, b) != 0)
        goto cleanup;
    doc_bytes = json_dumpb(b, NULL, 0, JSON_COMPACT);
    ev_bytes = encoded_size(ev, NULL);
    ev_signed = encoded_size(ev, SECRET);
    /* The same event carrying the whole document instead of a diff. */
    whole = json_deep_copy(ev);
    if (whole == NULL)
        goto cleanup;
    json_object_set_new(
        whole, "patch",
        json_pack("[{s:s,s:s,s:O}]", "op", "replace", "path", "", "value", b));
    json_object_set(whole, "merge", b);
    whole_bytes = encoded_size(whole, SECRET);
    printf("\n| one volume changed in the %d-volume document | bytes |\n"
           "|---|---|\n",
           BIG_ENTRIES);
    printf("| whole document, compact JSON | %zu |\n", doc_bytes);
    printf("| RFC 6902 patch (syncd_patch_diff) | %zu |\n",
           json_dumpb(json_object_get(ev, "patch"), NULL, 0, JSON_COMPACT));
    printf("| RFC 7396 merge patch (syncd_merge_diff) | %zu |\n",
           json_dumpb(json_object_get(ev, "merge"), NULL, 0, JSON_COMPACT));
    printf("| event, unsigned (syncd_event_encode) | %zu |\n", ev_bytes);
    printf("| event, signed (HMAC-SHA256) | %zu |\n", ev_signed);
    printf("| the same event carrying the whole document, signed | %zu |\n",
           whole_bytes);
    printf("| document / signed event | %.0fx |\n",
           (double)doc_bytes / (double)ev_signed);
    printf("\n| reader's work per one-volume event (median of 5) | "
           "%d volumes, ms | %d volumes, ms |\n|---|---|---|\n",
           entries, BIG_ENTRIES);
    if (apply_costs(entries, a, b, ev) != 0)
        goto cleanup;
    {
        double med[2], mean[2], tree[2];

        if (receiver_cpu(entries, &med[0], &mean[0], &tree[0]) != 0 ||
            receiver_cpu(BIG_ENTRIES, &med[1], &mean[1], &tree[1]) != 0)
            goto cleanup;
        printf("\n| the receiver's apply in the node cache, thread CPU ms per "
               "one-volume event (%d events) | %d volumes | %d volumes |\n"
               "|---|---|---|\n",
               RECV_EVENTS, entries, BIG_ENTRIES);
        printf("| syncd_cache_patch: take-out, in-place patch, hash tree "
               "check (median) | %.3f | %.3f |\n",
               med[0], med[1]);
        printf("| the same, mean (with the records written behind) | %.3f | "
               "%.3f |\n",
               mean[0], mean[1]);
        printf("| the first event of a document (builds its hash tree) | "
               "%.3f | %.3f |\n",
               tree[0], tree[1]);
    }
    patch = json_dumps(json_object_get(ev, "patch"), JSON_COMPACT);
    printf("\nThe patch: `%s`\n", patch != NULL ? patch : "?");
    fflush(stdout);
    rc = 0;

cleanup:
    free(patch);
    json_decref(a);
    json_decref(b);
    json_decref(ev);
    json_decref(whole);
    return rc;
}

/* ---- Main ---------------------------------------------------------------- */

typedef struct args {
    int count, chunk, window, docs, entries, writers, live, big_edits;
    int paths; /* 0: only the bytes and the reader's work, no servers */
    int split; /* 1: the reader node on a loop and thread of its own */
    double rate;
} args_t;

static int parse_args(args_t *a, int argc, char **argv)
{
    static const char *const names[] = {"--count",     "--chunk",   "--window",
                                        "--docs",      "--entries", "--live",
                                        "--big-edits", "--writers"};
    int *fields[] = {&a->count,   &a->chunk, &a->window,    &a->docs,
                     &a->entries, &a->live,  &a->big_edits, &a->writers};

    *a = (args_t){.count = 10000,
                  .chunk = 1000,
                  .window = 16,
                  .docs = 10,
                  .entries = 50,
                  .writers = 4,
                  .live = 2000,
                  .big_edits = 10,
                  .paths = 1,
                  .rate = 1000};
    for (int i = 1; i + 1 < argc; i += 2) {
        size_t k = 0;
        if (strcmp(argv[i], "--rate") == 0) {
            a->rate = atof(argv[i + 1]);
            continue;
        }
        if (strcmp(argv[i], "--paths") == 0) {
            a->paths = atoi(argv[i + 1]);
            continue;
        }
        if (strcmp(argv[i], "--split") == 0) {
            a->split = atoi(argv[i + 1]);
            continue;
        }
        while (k < sizeof(names) / sizeof(names[0]) &&
               strcmp(argv[i], names[k]) != 0)
            k++;
        if (k == sizeof(names) / sizeof(names[0]))
            return -1;
        *fields[k] = atoi(argv[i + 1]);
    }
    if (argc % 2 == 0 || a->rate <= 0 || a->count <= 0 || a->chunk <= 0 ||
        a->chunk > a->count || a->count % a->chunk != 0)
        return -1;
    for (size_t k = 0; k < sizeof(fields) / sizeof(fields[0]); k++) {
        if (*fields[k] <= 0)
            return -1;
    }
    return 0;
}

/* Builds the bus-only event: one volume of a small document changed. */
static json_t *small_event(int entries)
{
    json_t *a = bench_volume_doc("doc-0000", entries), *b, *ev = NULL;

    b = a != NULL ? json_deep_copy(a) : NULL;
    if (b != NULL && change_volume(b, 1, 1) == 0)
        make_event(&ev, BUS_COLL, "doc-0000", 2, a, b);
    json_decref(a);
    json_decref(b);
    if (ev != NULL)
        json_object_del(ev, "seq");
    return ev;
}

/* The three paths, each with a steady and a full-speed run. */
typedef struct paths {
    floor_ctx_t floor;
    bus_ctx_t bus;
    cluster_t cl;
    redisContext *info; /* Redis, for its CPU time */
    run_t runs[3][2];   /* [floor, bus, node][steady, full] */
    run_t observed;     /* the node path, steady, with the observers */
} paths_t;

/* What the node rows' names say of a split reader. */
static const char *split_tag(const args_t *a)
{
    return a->split ? ", reader on its own loop" : "";
}

/* Points run r of path p at the path's state before a chunk. */
static void bind_run(paths_t *ps, int p, run_t *r)
{
    ps->floor.run = p == 0 ? r : NULL;
    ps->bus.run = p == 1 ? r : NULL;
    ps->cl.run = p == 2 ? r : NULL;
}

/* Runs one chunk of path p on its run r (recorded or a warm-up). */
static int path_chunk(paths_t *ps, int p, run_t *r, int count, int record)
{
    int rc;

    bind_run(ps, p, r);
    rc = run_chunk(r, count, record);
    if (p == 1)
        ps->bus.base += count;
    bind_run(ps, -1, NULL);
    return rc;
}

static void runs_init(paths_t *ps, uv_loop_t *loop, const args_t *a,
                      size_t ev_len)
{
    static const char *const names[] = {
        "bare Redis PUBLISH, hiredis to hiredis", "syncd bus to bus",
        "syncd node to node (committed ahead)"};
    static const send_fn sends[] = {floor_send, bus_send, held_send};
    void *ctxs[] = {&ps->floor, &ps->bus, &ps->cl};

    for (int p = 0; p < 3; p++) {
        for (int m = 0; m < 2; m++) {
            run_t *r = &ps->runs[p][m];
            snprintf(r->what, sizeof(r->what), "%s%s", names[p],
                     p == 2 ? split_tag(a) : "");
            r->loop = loop;
            r->rate = m == 0 ? a->rate : 0;
            r->window = a->window;
            r->send = sends[p];
            r->ctx = ctxs[p];
            r->fixed_bytes = (int64_t)ev_len;
            r->info = ps->info;
            /* The node's late work (the writer's own events, its acks)
             * finishes within its chunk's clocks. Its events' sizes are
             * those the observed chunk reads off the wire. */
            if (p == 2) {
                r->bytes = &ps->cl.wire_small;
                r->settle_ms = 20;
            }
        }
    }
    ps->observed = ps->runs[2][0];
    snprintf(ps->observed.what, sizeof(ps->observed.what),
             "%s%s, observed (the split's clock thread, a byte counter)",
             names[2], split_tag(a));
}

/* The live pipeline at the store's speed, then the 10k-entry document. */
static int node_live_runs(paths_t *ps, const args_t *a)
{
    cluster_t *cl = &ps->cl;
    run_t live;
    int rc = -1;

    memset(&live, 0, sizeof(live));
    live.loop = cl->loop;
    live.window = a->window;
    live.send = live_send;
    live.ctx = cl;
    live.bytes = &cl->wire_small;
    live.bytes_from = cl->wire_small.n;
    live.info = ps->info;
    live.settle_ms = SETTLE_MS;
    snprintf(live.what, sizeof(live.what),
             "syncd node to node (live writers, %d threads)%s", a->writers,
             split_tag(a));
    cl->first = 0;
    cl->span = a->docs;
    cl->run = &live;
    if (run_chunk(&live, a->live, 1) != 0)
        goto cleanup;
    run_report(&live);
    free(live.lat.v);
    memset(&live.lat, 0, sizeof(live.lat));
    live.busy_ns = live.wall_ns = 0;
    live.cpu_loop_ns = live.cpu_proc_ns = live.cpu_redis_ns = 0;
    /* The 10k-entry document, one edit at a time. */
    cl->run = NULL;
    if (create_docs(cl, a->docs, 1) != 0)
        goto cleanup;
    snprintf(live.what, sizeof(live.what),
             "syncd node to node, the %d-volume document (live)%s", BIG_ENTRIES,
             split_tag(a));
    live.window = 1;
    live.bytes = &cl->wire_big;
    live.bytes_from = cl->wire_big.n;
    cl->run = &live;
    if (run_chunk(&live, a->big_edits, 1) != 0)
        goto cleanup;
    run_report(&live);
    rc = 0;

cleanup:
    cl->run = NULL;
    free(live.lat.v);
    return rc;
}

static int bench_paths(uv_loop_t *loop, const args_t *a, json_t *ev,
                       size_t ev_len, syncd_test_server_t *mongo,
                       syncd_test_server_t *redis)
{
    paths_t *ps = calloc(1, sizeof(*ps));
    int64_t versions =
        (2 * (int64_t)a->count + a->chunk + WARMUP + a->live) / a->docs +
        a->big_edits + 4;
    int chunks = a->count / a->chunk,
        max = a->chunk > WARMUP ? a->chunk : WARMUP;
    int rc = -1;

    if (ps == NULL)
        return -1;
    ps->info = redisConnect("127.0.0.1", redis->port);
    if (ps->info == NULL || ps->info->err)
        goto cleanup;
    if (floor_open(&ps->floor, loop, redis->port, ev_len, max) != 0 ||
        bus_open(&ps->bus, loop, redis->uri, ev, max) != 0 ||
        cluster_open(&ps->cl, loop, a->split, mongo->uri, redis->uri,
                     redis->port, a->docs, a->entries, versions,
                     a->writers) != 0 ||
        create_docs(&ps->cl, 0, a->docs) != 0 ||
        commit_ahead(&ps->cl, 2 * a->count + a->chunk + WARMUP) != 0)
        goto cleanup;
    runs_init(ps, loop, a, ev_len);
    ps->runs[2][0].bytes_from = ps->runs[2][1].bytes_from = ps->cl.wire_small.n;
    for (int p = 0; p < 3; p++) {
        if (path_chunk(ps, p, &ps->runs[p][0], WARMUP, 0) != 0)
            goto cleanup;
    }
    for (int m = 0; m < 2; m++) {
        for (int c = 0; c < chunks; c++) {
            for (int p = 0; p < 3; p++) {
                if (path_chunk(ps, p, &ps->runs[p][m], a->chunk, 1) != 0)
                    goto cleanup;
            }
        }
    }
    /* The observed chunk: the node path once more at the steady rate, now
     * with two more subscribers of its channel (Redis writes each event to
     * them too, and the clock thread takes a core when it reads one). */
    if (observers_start(&ps->cl) != 0 ||
        path_chunk(ps, 2, &ps->observed, a->chunk, 1) != 0)
        goto cleanup;
    printf("| path | load | messages | bytes/msg | msg/s | p50 ms | p99 ms | "
           "p999 ms | max ms | loop CPU | CPU µs/msg: loop / process / Redis "
           "|\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int m = 0; m < 2; m++) {
        for (int p = 0; p < 3; p++)
            run_report(&ps->runs[p][m]);
    }
    run_report(&ps->observed);
    if (node_live_runs(ps, a) != 0)
        goto cleanup;
    printf("\n");
    print_node_stats(&ps->cl);
    print_split(&ps->cl);
    rc = ps->cl.publish_errors == 0 && ps->cl.edit_errors == 0 ? 0 : -1;

cleanup:
    for (int p = 0; p < 3; p++) {
        for (int m = 0; m < 2; m++)
            free(ps->runs[p][m].lat.v);
    }
    free(ps->observed.lat.v);
    cluster_close(&ps->cl);
    bus_close(&ps->bus, loop);
    floor_close(&ps->floor);
    settle(loop, 20);
    if (ps->info != NULL)
        redisFree(ps->info);
    free(ps);
    return rc;
}

/* Rounds of EVENT_CPU_N events each that bench_event_cpu() times; the
 * fastest round is reported. */
#define EVENT_CPU_ROUNDS 5
#define EVENT_CPU_N 20000

/* Prints the CPU one thread spends per event, without servers: encoding
 * and signing event as a publisher does (syncd_event_encode, the event
 * without seq), and decoding and verifying the bytes a bus delivers
 * ("seq" spliced in first, as the publish script does). */
static int bench_event_cpu(const json_t *event)
{
    json_t *ev = json_copy((json_t *)event), *out;
    int64_t best_enc = INT64_MAX, best_dec = INT64_MAX, t;
    char *enc = NULL, *wire = NULL;
    size_t len = 0, wire_len;
    int rc = -1;

    if (ev == NULL)
        goto cleanup;
    json_object_del(ev, "seq");
    json_object_del(ev, "sig");
    enc = syncd_event_encode(ev, SECRET, &len);
    if (enc == NULL)
        goto cleanup;
    wire = malloc(len + 32);
    if (wire == NULL)
        goto cleanup;
    wire_len = (size_t)snprintf(wire, 32, "{\"seq\":1042,");
    memcpy(wire + wire_len, enc + 1, len - 1);
    wire_len += len - 1;
    for (int r = 0; r < EVENT_CPU_ROUNDS; r++) {
        t = thread_cpu_ns();
        for (int i = 0; i < EVENT_CPU_N; i++) {
            char *s;

            json_object_del(ev, "sig");
            s = syncd_event_encode(ev, SECRET, &len);
            if (s == NULL)
                goto cleanup;
            free(s);
        }
        t = thread_cpu_ns() - t;
        best_enc = t < best_enc ? t : best_enc;
        t = thread_cpu_ns();
        for (int i = 0; i < EVENT_CPU_N; i++) {
            if (syncd_event_decode(&out, wire, wire_len, 0, SECRET, NULL) != 0)
                goto cleanup;
            json_decref(out);
        }
        t = thread_cpu_ns() - t;
        best_dec = t < best_dec ? t : best_dec;
    }
    printf("\n| one event, %zu bytes on the wire, one thread | CPU µs per "
           "event (fastest of %d rounds of %d) |\n|---|---|\n",
           wire_len, EVENT_CPU_ROUNDS, EVENT_CPU_N);
    printf("| encode and sign (syncd_event_encode) | %.2f |\n",
           (double)best_enc / EVENT_CPU_N / 1000.0);
    printf(
        "| decode and verify the bus's bytes (syncd_event_decode) | %.2f |\n",
        (double)best_dec / EVENT_CPU_N / 1000.0);
    rc = 0;

cleanup:
    free(wire);
    free(enc);
    json_decref(ev);
    return rc;
}

int main(int argc, char **argv)
{
    syncd_test_server_t redis, mongo;
    uv_loop_t loop;
    args_t a;
    json_t *ev = NULL;
    size_t ev_len = 0;
    char *enc;
    int rc = 1;

    memset(&redis, 0, sizeof(redis));
    memset(&mongo, 0, sizeof(mongo));
    if (parse_args(&a, argc, argv) != 0) {
        fprintf(stderr, "usage: bench_bus [--count N] [--chunk C] [--rate R] "
                        "[--window W] [--docs D] [--entries E] "
                        "[--writers K] [--live N] [--big-edits B] "
                        "[--paths 0|1] [--split 0|1]\n"
                        "(N a multiple of C)\n");
        return 2;
    }
    uv_loop_init(&loop);
    ev = small_event(a.entries);
    enc = ev != NULL ? syncd_event_encode(ev, SECRET, &ev_len) : NULL;
    free(enc);
    if (enc == NULL)
        goto cleanup;
    if (a.paths && (syncd_test_redis_start(&redis) != 0 ||
                    syncd_test_mongo_start(&mongo) != 0 ||
                    bench_paths(&loop, &a, ev, ev_len, &mongo, &redis) != 0))
        goto cleanup;
    if (bench_bytes(a.entries) != 0 || bench_event_cpu(ev) != 0)
        goto cleanup;
    rc = 0;

cleanup:
    json_decref(ev);
    uv_run(&loop, UV_RUN_NOWAIT);
    if (uv_loop_close(&loop) != 0)
        fprintf(stderr, "loop: handles left open\n");
    syncd_test_server_destroy(&redis);
    syncd_test_server_destroy(&mongo);
    return rc;
}
