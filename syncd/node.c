/* node.c - a syncd node: applies the change bus to the node cache, runs
 * anti-entropy, and feeds local watchers.
 *
 * Each collection the node touches (listed in the store at open, published
 * to, or watched) gets a subscription on the bus and a queue of work items:
 * received events, bus resyncs and anti-entropy repairs. A collection hands
 * what it has queued (up to BATCH_MAX items) to the libuv thread pool as
 * one work item (store calls block) and runs one such batch at a time, so
 * its events are applied in seq order and a backlog costs one round trip
 * to the pool, not one per event. Back on the loop, each item of the batch
 * in turn has its seq recorded as applied and its event handed to the
 * collection's watchers. Applied events therefore reach watchers after the
 * cache holds their version.
 *
 * In MongoDB mode the cache follows DESIGN.md section 4: patch on the base
 * version with a hash check, drop duplicates and old versions, refetch on
 * gaps, mismatches and invalidates, keep creates of uncached documents.
 * In the embedded default (store kind "rocksdb") the store is the truth and
 * there is no cache, so items only carry events to watchers.
 *
 * A watcher from a past seq first reads (since, applied] from the bus's
 * replay log while newer applied events wait in its bounded queue; seqs are
 * checked to follow one another, so the seam has no gap or duplicate, and
 * any discontinuity ends the watcher with SYNCD_NODE_RESYNC.
 *
 * Publishing is the transactional outbox's other half (storage/store.c):
 * a change goes out after the versions still pending on its record (as
 * invalidate events), one publish after the other in version order, and
 * the record is acked off the loop once all are out. The republisher
 * (on each bus (re)connect, and every outbox_interval) pages through the
 * records with markers left on the thread pool and publishes those older
 * than outbox_min_age the same way. An event's ts is its commit time,
 * whoever publishes it, and the bus drops an (id, v) it has already
 * published, so the two paths never show a version twice.
 *
 * Lifetimes: watchers are freed by the node once ended and out of every
 * callback; bus requests still in flight at close are orphaned (they free
 * themselves when the bus answers); the node itself is freed when its last
 * thread-pool work and its timers are done.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "syncd/node.h"
#include "syncd/patch.h"

#define REPLAY_PAGE 1000
/* Most items one thread-pool work runs, so that a busy collection leaves
 * pool threads to the others and its watchers hear from it regularly. */
#define BATCH_MAX 256
/* Delay before subscribing again when the bus could not be reached. */
#define SUBSCRIBE_RETRY_MS 200
/* How often the outbox timer looks at the bus connection. */
#define OUTBOX_POLL_MS 250
/* Records with pending markers the republisher reads per page. */
#define OUTBOX_PAGE 64

typedef struct coll coll_t;
typedef struct ae_run ae_run_t;
typedef struct ob_run ob_run_t;

/* What a collection's queue holds. */
typedef enum { ITEM_EVENT, ITEM_RESYNC, ITEM_REPAIR } item_kind_t;

typedef struct item {
    struct item *next;
    item_kind_t kind;
    int64_t seq;   /* ITEM_EVENT, ITEM_RESYNC: its seq */
    json_t *event; /* ITEM_EVENT: a reference, read-only from here on */
    ae_run_t *run; /* ITEM_REPAIR: the anti-entropy run it belongs to */
    int status;    /* outcome on the worker */
    uint64_t repaired;
} item_t;

/* One anti-entropy pass over every collection. */
struct ae_run {
    syncd_node_t *node;
    size_t pending; /* collection items left, plus one while listing */
    uint64_t repaired;
    int status;
    void (*cb)(int status, uint64_t repaired, void *payload);
    void *payload;
};

struct syncd_node_watch {
    struct syncd_node_watch *next;
    coll_t *coll;
    char *prefix;
    size_t prefix_len;
    int64_t since;
    int64_t last;     /* last seq delivered or filtered out */
    int64_t until;    /* replay target: the seq applied when the watch began */
    int started;      /* positioned (the collection's seq was known) */
    int live;         /* replay done: events go straight to the callback */
    int dead;         /* ended; freed once no callback or request holds it */
    struct breq *req; /* replay read in flight */
    json_t *queue;    /* applied events held back during the replay */
    syncd_node_watch_cb cb;
    void *payload;
};

typedef struct work work_t;

struct coll {
    coll_t *next;
    syncd_node_t *node;
    char *name;
    syncd_bus_sub_t *sub;
    int ready;       /* subscribed; seq is known */
    int seq_pending; /* a bus seq read is in flight */
    int64_t seq;     /* last seq applied */
    item_t *head, *tail;
    work_t *running; /* the batch on the thread pool */
    syncd_node_watch_t *watchers;
};

/* A bus request of the node; node is NULL once orphaned by close. */
typedef struct breq {
    struct breq *next, *prev;
    syncd_node_t *node;
    coll_t *coll;
    syncd_node_watch_t *watch;
    syncd_node_publish_cb cb;
    void *payload;
} breq_t;

struct syncd_node {
    uv_loop_t *loop;
    syncd_store_t *store;
    syncd_bus_t *bus;
    syncd_node_options_t opts;
    char node_id[SYNCD_MAX_NODE_ID + 1];
    int cached; /* MongoDB mode: there is a cache to keep converged */
    coll_t *colls;
    breq_t *reqs;
    uv_timer_t timer;  /* anti-entropy */
    uv_timer_t retry;  /* subscribing collections the bus refused */
    uv_timer_t outbox; /* bus reconnects and the periodic republisher */
    int timers_open;
    int bus_up;            /* the bus was connected at the last poll */
    int64_t outbox_due_ms; /* next periodic republisher run (loop time) */
    ob_run_t *ob_run;      /* the republisher run under way, or NULL */
    int ob_again;          /* run again when it ends */
    int64_t ob_again_age;  /* with this min age */
    long crash_after;      /* test hook: SIGKILL at this commit (0: off) */
    long commits;
    size_t works; /* thread-pool items in flight */
    int depth;    /* nesting of watcher callbacks */
    int closing;
    atomic_int stop; /* closing, as seen by workers between items */
    syncd_node_close_cb close_cb;
    void *close_payload;
    syncd_node_stats_t stats;
};

/* Thread-pool work: a batch of one collection's items, or a listing of
 * collections. */
struct work {
    uv_work_t req;
    syncd_node_t *node;
    coll_t *coll;      /* NULL for a listing */
    item_t *items;     /* the batch, linked in seq order; NULL for a listing */
    ae_run_t *run;     /* listing for an anti-entropy run, or NULL at open */
    json_t *colls;     /* listing result */
    int status;        /* of the listing, or of the item being run */
    uint64_t repaired; /* by the item being run */
    syncd_node_stats_t delta; /* counted on the worker, added on the loop */
};

static void pump(coll_t *c);
static void sweep(coll_t *c);
static void on_published(int status, int64_t seq, void *payload);
static void run_release(ae_run_t *run, int status, uint64_t repaired);
static void maybe_finish_close(syncd_node_t *node);

void syncd_node_options_init(syncd_node_options_t *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->node_id = "local";
    opts->anti_entropy_interval_ms = 30000;
    opts->max_event_bytes = 1 << 20;
    opts->watch_buffer_events = 10000;
    opts->outbox_interval_ms = 5000;
    opts->outbox_min_age_ms = 2000;
}

/* ---- Helpers --------------------------------------------------------------
 */

static const char *member_str(const json_t *ev, const char *key)
{
    const char *s = json_string_value(json_object_get(ev, key));
    return s != NULL ? s : "";
}

static int64_t member_int(const json_t *ev, const char *key)
{
    return json_integer_value(json_object_get(ev, key));
}

/* Returns the RFC 3339 timestamp ts in ms since the epoch (0 if bad). */
static int64_t parse_ts_ms(const char *ts)
{
    struct tm tm;
    long usec = 0;
    int n = 0;

    memset(&tm, 0, sizeof(tm));
    if (sscanf(ts, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon,
               &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6)
        return 0;
    if (ts[n] == '.')
        usec = strtol(ts + n + 1, NULL, 10);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000 + usec / 1000;
}

/* Writes ms (since the epoch) as RFC 3339 UTC with microseconds into
 * out: an event's ts is its commit time, the same whoever publishes it. */
static void format_ms(char out[32], int64_t ms)
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&sec, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + 19, 13, ".%06dZ", (int)(ms % 1000) * 1000);
}

static int64_t wall_now_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static size_t dumped_size(const json_t *v)
{
    return json_dumpb(v, NULL, 0, JSON_COMPACT);
}

static void add_stats(syncd_node_stats_t *to, const syncd_node_stats_t *d)
{
    to->events_applied += d->events_applied;
    to->events_dropped_duplicate += d->events_dropped_duplicate;
    to->events_dropped_old += d->events_dropped_old;
    to->events_ignored_uncached += d->events_ignored_uncached;
    to->refetches += d->refetches;
    to->hash_mismatches += d->hash_mismatches;
}

static void item_free(item_t *item)
{
    json_decref(item->event);
    free(item);
}

/* Frees an item that will not run because the node is closing. */
static void item_drop(item_t *item)
{
    if (item->kind == ITEM_REPAIR)
        run_release(item->run, SYNCD_ECANCELED, 0);
    item_free(item);
}

/* ---- Bus requests ------------------------------------------------------- */

static breq_t *breq_new(syncd_node_t *node)
{
    breq_t *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    r->node = node;
    r->next = node->reqs;
    if (node->reqs != NULL)
        node->reqs->prev = r;
    node->reqs = r;
    return r;
}

/* Unlinks r from its node's list; returns its node (NULL if orphaned). */
static syncd_node_t *breq_take(breq_t *r)
{
    syncd_node_t *node = r->node;

    if (node == NULL)
        return NULL;
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        node->reqs = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    r->node = NULL;
    return node;
}

/* ---- Anti-entropy runs --------------------------------------------------- */

/* Drops one pending part of run with its outcome; the last one reports. */
static void run_release(ae_run_t *run, int status, uint64_t repaired)
{
    if (status != 0 && run->status == 0)
        run->status = status;
    run->repaired += repaired;
    if (--run->pending > 0)
        return;
    run->node->stats.anti_entropy_repairs += run->repaired;
    if (run->cb != NULL)
        run->cb(run->status, run->repaired, run->payload);
    free(run);
}

/* ---- Watchers ------------------------------------------------------------ */

static void watch_free(syncd_node_watch_t *w)
{
    json_decref(w->queue);
    free(w->prefix);
    free(w);
}

/* Calls w's callback, keeping the watcher list stable meanwhile. */
static void watch_call(syncd_node_watch_t *w, syncd_node_signal_t signal,
                       int64_t seq, const json_t *event)
{
    syncd_node_t *node = w->coll->node;

    node->depth++;
    w->cb(signal, seq, event, w->payload);
    node->depth--;
}

/* Ends w with signal (RESYNC or CLOSED); the node frees it later. */
static void watch_end(syncd_node_watch_t *w, syncd_node_signal_t signal,
                      int64_t seq)
{
    if (w->dead)
        return;
    w->dead = 1;
    if (signal == SYNCD_NODE_RESYNC)
        w->coll->node->stats.watch_resyncs++;
    watch_call(w, signal, seq, NULL);
}

/* Delivers the applied event seq to w if it is the next one: earlier seqs
 * (the replay seam) are skipped, a gap ends w with a resync. */
static void watch_deliver(syncd_node_watch_t *w, int64_t seq,
                          const json_t *event)
{
    const char *id;

    if (w->dead || seq <= w->last)
        return;
    if (seq != w->last + 1) {
        watch_end(w, SYNCD_NODE_RESYNC, w->last);
        return;
    }
    w->last = seq;
    id = member_str(event, "id");
    if (w->prefix == NULL || strncmp(id, w->prefix, w->prefix_len) == 0)
        watch_call(w, SYNCD_NODE_EVENT, seq, event);
}

/* Hands an applied event to w: straight through when live, else into its
 * bounded queue (overflow ends it with a resync). */
static void watch_offer(syncd_node_watch_t *w, int64_t seq, json_t *event)
{
    if (w->dead || !w->started)
        return;
    if (w->live) {
        watch_deliver(w, seq, event);
        return;
    }
    if (json_array_size(w->queue) >= w->coll->node->opts.watch_buffer_events ||
        json_array_append(w->queue, event) != 0)
        watch_end(w, SYNCD_NODE_RESYNC, w->last);
}

static void on_replay(int status, json_t *events, void *payload);

/* Reads the next page of w's replay range from the bus. */
static void watch_replay(syncd_node_watch_t *w)
{
    syncd_node_t *node = w->coll->node;
    breq_t *r = breq_new(node);

    if (r == NULL) {
        watch_end(w, SYNCD_NODE_RESYNC, w->last);
        return;
    }
    r->coll = w->coll;
    r->watch = w;
    w->req = r;
    if (syncd_bus_replay(node->bus, w->coll->name, w->last, w->until,
                         REPLAY_PAGE, on_replay, r) != 0) {
        breq_take(r);
        free(r);
        w->req = NULL;
        watch_end(w, SYNCD_NODE_RESYNC, w->last);
    }
}

/* Switches w to live delivery, first flushing what it queued. */
static void watch_go_live(syncd_node_watch_t *w)
{
    json_t *queue = w->queue;
    size_t i;
    json_t *ev;

    w->live = 1;
    w->queue = NULL;
    json_array_foreach (queue, i, ev) {
        watch_deliver(w, member_int(ev, "seq"), ev);
    }
    json_decref(queue);
}

static void on_replay(int status, json_t *events, void *payload)
{
    breq_t *r = payload;
    syncd_node_t *node = breq_take(r);
    syncd_node_watch_t *w = r->watch;
    size_t i;
    json_t *ev;

    free(r);
    if (node == NULL) {
        json_decref(events);
        return;
    }
    w->req = NULL;
    json_array_foreach (events, i, ev) {
        watch_deliver(w, member_int(ev, "seq"), ev);
    }
    /* A failed read, or one that ends short of the target, means the log
     * no longer holds the range. */
    if (status != 0 || json_array_size(events) == 0)
        watch_end(w, SYNCD_NODE_RESYNC, w->last);
    else if (!w->dead && w->last >= w->until)
        watch_go_live(w);
    else if (!w->dead)
        watch_replay(w);
    json_decref(events);
    sweep(w->coll);
}

/* Positions w once its collection's seq is known. */
static void watch_start(syncd_node_watch_t *w)
{
    coll_t *c = w->coll;

    w->started = 1;
    if (w->since < 0 || w->since >= c->seq) {
        w->last = w->since < 0 ? c->seq : w->since;
        w->live = 1;
        return;
    }
    w->last = w->since;
    w->until = c->seq;
    w->queue = json_array();
    if (w->queue == NULL) {
        watch_end(w, SYNCD_NODE_RESYNC, w->last);
        return;
    }
    watch_replay(w);
}

/* Frees c's ended watchers unless a callback or a request still holds
 * them. */
static void sweep(coll_t *c)
{
    syncd_node_watch_t **p = &c->watchers;

    if (c->node->depth > 0)
        return;
    while (*p != NULL) {
        syncd_node_watch_t *w = *p;
        if (w->dead && w->req == NULL) {
            *p = w->next;
            watch_free(w);
        } else {
            p = &w->next;
        }
    }
}

/* ---- Collections --------------------------------------------------------- */

/* Appends item to c's queue and pumps the queue. */
static void enqueue(coll_t *c, item_t *item)
{
    if (c->tail != NULL)
        c->tail->next = item;
    else
        c->head = item;
    c->tail = item;
    pump(c);
}

static void on_bus_event(syncd_bus_signal_t signal, int64_t seq,
                         const json_t *event, void *payload)
{
    coll_t *c = payload;
    item_t *item;

    if (c->node->closing)
        return;
    item = calloc(1, sizeof(*item));
    if (item == NULL)
        return;
    item->seq = seq;
    if (signal == SYNCD_BUS_EVENT) {
        item->kind = ITEM_EVENT;
        /* Shared, not copied: nobody changes a delivered event, and
         * jansson's reference counts are atomic, so the worker may read it
         * while the bus still holds it. */
        item->event = json_incref((json_t *)event);
    } else {
        item->kind = ITEM_RESYNC;
    }
    enqueue(c, item);
}

static void coll_subscribe(coll_t *c);

/* Subscribes every collection that is not yet. */
static void on_retry(uv_timer_t *timer)
{
    syncd_node_t *node = timer->data;
    coll_t *c;

    for (c = node->colls; c != NULL; c = c->next)
        coll_subscribe(c);
}

/* Schedules on_retry() unless it is already due. */
static void retry_later(syncd_node_t *node)
{
    if (!node->closing && !uv_is_active((uv_handle_t *)&node->retry))
        uv_timer_start(&node->retry, on_retry, SUBSCRIBE_RETRY_MS, 0);
}

static void on_coll_seq(int status, int64_t seq, void *payload)
{
    breq_t *r = payload;
    syncd_node_t *node = breq_take(r);
    coll_t *c = r->coll;
    syncd_node_watch_t *w;

    free(r);
    if (node == NULL)
        return;
    c->seq_pending = 0;
    if (status != 0 || syncd_bus_subscribe(node->bus, &c->sub, c->name, seq,
                                           on_bus_event, c, NULL) != 0) {
        retry_later(node);
        return;
    }
    c->seq = seq;
    c->ready = 1;
    for (w = c->watchers; w != NULL; w = w->next) {
        if (!w->dead && !w->started)
            watch_start(w);
    }
    sweep(c);
}

/* Subscribes c when it is not yet: reads the collection's current seq,
 * then subscribes after it. */
static void coll_subscribe(coll_t *c)
{
    syncd_node_t *node = c->node;
    breq_t *r;

    if (c->ready || c->seq_pending || node->closing)
        return;
    r = breq_new(node);
    if (r == NULL)
        return;
    r->coll = c;
    c->seq_pending = 1;
    if (syncd_bus_seq(node->bus, c->name, on_coll_seq, r) != 0) {
        breq_take(r);
        free(r);
        c->seq_pending = 0;
        retry_later(node);
    }
}

/* Finds or adds the collection name and makes sure it is subscribed;
 * NULL on out of memory. */
static coll_t *coll_get(syncd_node_t *node, const char *name)
{
    coll_t *c;

    for (c = node->colls; c != NULL; c = c->next) {
        if (strcmp(c->name, name) == 0)
            break;
    }
    if (c == NULL) {
        c = calloc(1, sizeof(*c));
        if (c == NULL || (c->name = strdup(name)) == NULL) {
            free(c);
            return NULL;
        }
        c->node = node;
        c->next = node->colls;
        node->colls = c;
    }
    coll_subscribe(c);
    return c;
}

/* Puts the chain first..last back at the head of c's queue. */
static void enqueue_front(coll_t *c, item_t *first, item_t *last)
{
    last->next = c->head;
    c->head = first;
    if (c->tail == NULL)
        c->tail = last;
}

/* ---- Applying events (worker thread) ----------------------------------- */

/* Reads id from the store of record into the cache. */
static void refetch(work_t *w, const char *id)
{
    syncd_doc_t *doc = NULL;

    w->delta.refetches++;
    syncd_store_refetch(w->node->store, &doc, w->coll->name, id, NULL);
    syncd_doc_free(doc);
}

/* Stores the version an event describes in the cache. */
static void cache_version(work_t *w, const json_t *ev, json_t *body,
                          const char *hash)
{
    syncd_doc_t doc;

    memset(&doc, 0, sizeof(doc));
    doc.coll = w->coll->name;
    doc.id = (char *)member_str(ev, "id");
    doc.version = member_int(ev, "v");
    doc.body = body;
    doc.deleted = body == NULL;
    doc.mtime_ms = parse_ts_ms(member_str(ev, "ts"));
    snprintf(doc.hash, sizeof(doc.hash), "%s", hash);
    snprintf(doc.origin, sizeof(doc.origin), "%s", member_str(ev, "origin"));
    syncd_store_cache_put(w->node->store, &doc, NULL);
    w->delta.events_applied++;
}

/* Patches base (NULL: an empty object) with the event's patch and caches
 * the result when its hash is the event's; otherwise refetches. */
static void apply_patch(work_t *w, const json_t *ev, const json_t *base)
{
    const char *id = member_str(ev, "id");
    json_t *empty = NULL, *body = NULL;
    char hash[SYNCD_HASH_HEX_LEN + 1];

    if (base == NULL)
        base = empty = json_object();
    if (base == NULL ||
        syncd_patch_apply(&body, base, json_object_get(ev, "patch"), NULL) !=
            0 ||
        syncd_json_hash(hash, body, NULL) != 0) {
        refetch(w, id);
    } else if (strcmp(hash, member_str(ev, "h")) != 0) {
        w->delta.hash_mismatches++;
        refetch(w, id);
    } else {
        cache_version(w, ev, body, hash);
    }
    json_decref(body);
    json_decref(empty);
}

/* Applies one event to the cache by the rules of DESIGN.md section 4. */
static void apply_event(work_t *w, const json_t *ev)
{
    const char *op = member_str(ev, "op"), *id = member_str(ev, "id");
    int64_t v = member_int(ev, "v"), base = member_int(ev, "base");
    int create = strcmp(op, "create") == 0;
    syncd_doc_t *c = NULL;

    if (syncd_store_cached(w->node->store, &c, w->coll->name, id, NULL) != 0)
        c = NULL;
    if (c == NULL && !create) {
        w->delta.events_ignored_uncached++;
    } else if (c != NULL && c->version >= v) {
        /* This node's own events find their version already cached. */
        if (c->version > v)
            w->delta.events_dropped_old++;
        else if (strcmp(member_str(ev, "origin"), w->node->node_id) != 0)
            w->delta.events_dropped_duplicate++;
    } else if (create) {
        /* A create carries the whole body, whatever was cached before. */
        if (json_is_null(json_object_get(ev, "patch")))
            refetch(w, id);
        else
            apply_patch(w, ev, NULL);
    } else if (c->version != base || c->deleted) {
        refetch(w, id);
    } else if (strcmp(op, "delete") == 0) {
        cache_version(w, ev, NULL, "");
    } else if (json_is_null(json_object_get(ev, "patch"))) {
        refetch(w, id);
    } else {
        apply_patch(w, ev, c->body);
    }
    syncd_doc_free(c);
}

/* Makes the cache of the work's collection agree with the store: ids whose
 * version or hash differ, that are missing, or that the store no longer
 * holds live are dropped and read again. With check_digest, compares the
 * digests first and stops when they agree. */
static void repair(work_t *w, int check_digest)
{
    syncd_store_t *store = w->node->store;
    const char *coll = w->coll->name;
    json_t *cached = NULL, *truth = NULL, *by_id = NULL, *e;
    syncd_digest_t mine, theirs;
    const char *id;
    size_t i;
    void *tmp;

    w->status = syncd_store_cache_list(store, &cached, coll, NULL);
    if (w->status != 0)
        goto cleanup;
    if (check_digest) {
        w->status = syncd_digest_entries(&mine, cached, NULL);
        if (w->status == 0)
            w->status = syncd_store_digest(store, &theirs, coll, NULL);
        if (w->status != 0 ||
            (mine.count == theirs.count && strcmp(mine.hex, theirs.hex) == 0))
            goto cleanup;
    }
    w->status = syncd_store_list(store, &truth, coll, NULL, NULL, 0, NULL);
    by_id = json_object();
    if (w->status != 0 || by_id == NULL)
        goto cleanup;
    json_array_foreach (cached, i, e) {
        json_object_set(by_id, member_str(e, "id"), e);
    }
    json_array_foreach (truth, i, e) {
        json_t *mine_e = json_object_get(by_id, member_str(e, "id"));
        if (mine_e != NULL && member_int(mine_e, "v") == member_int(e, "v") &&
            strcmp(member_str(mine_e, "h"), member_str(e, "h")) == 0) {
            json_object_del(by_id, member_str(e, "id"));
            continue;
        }
        json_object_set_new(by_id, member_str(e, "id"), json_null());
    }
    json_object_foreach_safe (by_id, tmp, id, e) {
        syncd_store_cache_invalidate(store, coll, id, NULL);
        refetch(w, id);
        w->repaired++;
    }

cleanup:
    if (w->status != 0 && w->status != SYNCD_ECANCELED)
        w->status = SYNCD_EBACKEND;
    json_decref(cached);
    json_decref(truth);
    json_decref(by_id);
}

/* Runs one item of a batch, leaving its outcome in the item. */
static void run_item(work_t *w, item_t *item)
{
    w->status = 0;
    w->repaired = 0;
    switch (item->kind) {
    case ITEM_EVENT:
        apply_event(w, item->event);
        break;
    case ITEM_RESYNC:
        repair(w, 0);
        break;
    case ITEM_REPAIR:
        repair(w, 1);
        break;
    }
    item->status = w->status;
    item->repaired = w->repaired;
}

static void work_run(uv_work_t *req)
{
    work_t *w = req->data;
    item_t *item;

    if (w->items == NULL) {
        w->status = syncd_store_collections(w->node->store, &w->colls, NULL);
        return;
    }
    /* The rest of a batch is not worth running once the node closes:
     * work_done() drops it. */
    for (item = w->items; item != NULL && !atomic_load(&w->node->stop);
         item = item->next)
        run_item(w, item);
}

/* ---- Finishing items (loop thread) --------------------------------------- */

/* Records an item as done: its seq as applied, its event to the watchers,
 * its repairs to its anti-entropy run. */
static void finish_item(coll_t *c, item_t *item, int status, uint64_t repaired)
{
    syncd_node_t *node = c->node;
    syncd_node_watch_t *w;

    switch (item->kind) {
    case ITEM_EVENT:
        c->seq = item->seq;
        for (w = c->watchers; w != NULL; w = w->next)
            watch_offer(w, item->seq, item->event);
        break;
    case ITEM_RESYNC:
        /* A watcher lost its place when the seq moved past what it saw,
         * and missed changes when the resync repaired any (changes that
         * reached the store but no event, e.g. after Redis lost its
         * data): either way it is told. One that saw every seq of a
         * collection the resync found unchanged lost nothing and goes
         * on. */
        node->stats.resyncs++;
        c->seq = item->seq;
        for (w = c->watchers; w != NULL; w = w->next) {
            if (w->started && (w->last != item->seq || repaired > 0))
                watch_end(w, SYNCD_NODE_RESYNC, item->seq);
        }
        break;
    case ITEM_REPAIR:
        run_release(item->run, status, repaired);
        break;
    }
    item_free(item);
    sweep(c);
}

static void on_listed(work_t *w, int status);

static void work_done(uv_work_t *req, int status)
{
    work_t *w = req->data;
    syncd_node_t *node = w->node;
    coll_t *c = w->coll;

    node->works--;
    if (status == UV_ECANCELED)
        w->status = SYNCD_ECANCELED;
    add_stats(&node->stats, &w->delta);
    if (c == NULL) {
        on_listed(w, w->status);
    } else {
        c->running = NULL;
        /* A watcher callback may close the node midway: the rest of the
         * batch is then dropped like the queue. */
        while (w->items != NULL) {
            item_t *item = w->items;
            w->items = item->next;
            if (node->closing)
                item_drop(item);
            else
                finish_item(c, item, item->status, item->repaired);
        }
        pump(c);
    }
    json_decref(w->colls);
    free(w);
    maybe_finish_close(node);
}

static int queue_work(syncd_node_t *node, work_t *w)
{
    w->req.data = w;
    w->node = node;
    if (uv_queue_work(node->loop, &w->req, work_run, work_done) != 0)
        return SYNCD_EBACKEND;
    node->works++;
    return 0;
}

/* Detaches up to max items from the head of c's queue into *last and
 * returns the first. */
static item_t *dequeue(coll_t *c, size_t max, item_t **last)
{
    item_t *first = c->head, *end = first;
    size_t n;

    for (n = 1; n < max && end->next != NULL; n++)
        end = end->next;
    c->head = end->next;
    if (c->head == NULL)
        c->tail = NULL;
    end->next = NULL;
    *last = end;
    return first;
}

/* Runs c's queued items, as one batch on the thread pool unless one is
 * running. Without a cache there is nothing to do off the loop, so items
 * finish at once. */
static void pump(coll_t *c)
{
    syncd_node_t *node = c->node;
    item_t *first, *last;
    work_t *w;

    while (!node->cached && c->head != NULL && !node->closing) {
        first = dequeue(c, 1, &last);
        finish_item(c, first, 0, 0);
    }
    if (c->running != NULL || c->head == NULL || node->closing)
        return;
    first = dequeue(c, BATCH_MAX, &last);
    w = calloc(1, sizeof(*w));
    if (w == NULL) {
        enqueue_front(c, first, last);
        return;
    }
    w->coll = c;
    w->items = first;
    if (queue_work(node, w) != 0) {
        free(w);
        enqueue_front(c, first, last);
        return;
    }
    c->running = w;
}

/* Subscribes every listed collection and, for an anti-entropy run, queues
 * a repair item on each collection the node knows. */
static void on_listed(work_t *w, int status)
{
    syncd_node_t *node = w->node;
    ae_run_t *run = w->run;
    size_t i;
    json_t *name;
    coll_t *c;

    if (node->closing)
        status = SYNCD_ECANCELED;
    if (status == 0) {
        json_array_foreach (w->colls, i, name) {
            coll_get(node, json_string_value(name));
        }
    }
    if (run == NULL)
        return;
    for (c = node->colls; status == 0 && c != NULL; c = c->next) {
        item_t *item = calloc(1, sizeof(*item));
        if (item == NULL) {
            status = SYNCD_ENOMEM;
            break;
        }
        coll_subscribe(c);
        item->kind = ITEM_REPAIR;
        item->run = run;
        run->pending++;
        enqueue(c, item);
    }
    run_release(run, status, 0);
}

/* Lists the store's collections on the thread pool, for run or (NULL) for
 * the subscriptions at open. */
static int list_collections(syncd_node_t *node, ae_run_t *run)
{
    work_t *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return SYNCD_ENOMEM;
    w->run = run;
    if (queue_work(node, w) != 0) {
        free(w);
        return SYNCD_EBACKEND;
    }
    return 0;
}

/* ---- Public API ---------------------------------------------------------- */

static void on_timer(uv_timer_t *timer)
{
    syncd_node_anti_entropy(timer->data, NULL, NULL);
}

static void on_outbox_timer(uv_timer_t *timer);

/* Reads the SYNCD_TEST_CRASH_AFTER_COMMITS test hook (node.h); 0: off. */
static long test_crash_after(void)
{
    const char *v = getenv("SYNCD_TEST_CRASH_AFTER_COMMITS");

    return v != NULL ? strtol(v, NULL, 10) : 0;
}

int syncd_node_open(syncd_node_t **out, uv_loop_t *loop, syncd_store_t *store,
                    syncd_bus_t *bus, const syncd_node_options_t *opts,
                    syncd_error_t *err)
{
    syncd_node_options_t defaults;
    syncd_node_t *node;
    int rc;

    *out = NULL;
    if (opts == NULL) {
        syncd_node_options_init(&defaults);
        opts = &defaults;
    }
    if (loop == NULL || store == NULL || bus == NULL)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "node: loop, store and bus are required");
    if (opts->node_id == NULL || *opts->node_id == '\0' ||
        strlen(opts->node_id) > SYNCD_MAX_NODE_ID)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "node: node_id must be 1..%d bytes",
                               SYNCD_MAX_NODE_ID);
    if (opts->max_event_bytes == 0 || opts->watch_buffer_events == 0)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "node: max_event_bytes and "
                               "watch_buffer_events must be positive");
    node = calloc(1, sizeof(*node));
    if (node == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "node: out of memory");
    node->loop = loop;
    node->store = store;
    node->bus = bus;
    node->opts = *opts;
    snprintf(node->node_id, sizeof(node->node_id), "%s", opts->node_id);
    node->opts.node_id = node->node_id;
    node->cached = strcmp(syncd_store_kind(store), "mongodb") == 0;
    rc = list_collections(node, NULL);
    if (rc != 0) {
        free(node);
        return syncd_error_set(err, rc, "node: cannot queue store work");
    }
    uv_timer_init(loop, &node->timer);
    uv_timer_init(loop, &node->retry);
    uv_timer_init(loop, &node->outbox);
    node->timer.data = node->retry.data = node->outbox.data = node;
    node->timers_open = 3;
    node->crash_after = test_crash_after();
    uv_timer_start(&node->outbox, on_outbox_timer, 0, OUTBOX_POLL_MS);
    /* It polls: it never keeps a loop that has nothing else to do alive. */
    uv_unref((uv_handle_t *)&node->outbox);
    if (opts->anti_entropy_interval_ms > 0)
        uv_timer_start(&node->timer, on_timer,
                       (uint64_t)opts->anti_entropy_interval_ms,
                       (uint64_t)opts->anti_entropy_interval_ms);
    *out = node;
    return 0;
}

static void free_node(syncd_node_t *node)
{
    syncd_node_close_cb cb = node->close_cb;
    void *payload = node->close_payload;

    while (node->colls != NULL) {
        coll_t *c = node->colls;
        node->colls = c->next;
        sweep(c);
        free(c->name);
        free(c);
    }
    free(node);
    if (cb != NULL)
        cb(payload);
}

static void maybe_finish_close(syncd_node_t *node)
{
    if (node->closing && node->works == 0 && node->timers_open == 0 &&
        node->depth == 0)
        free_node(node);
}

static void on_timer_closed(uv_handle_t *handle)
{
    syncd_node_t *node = handle->data;

    node->timers_open--;
    maybe_finish_close(node);
}

void syncd_node_close(syncd_node_t *node, syncd_node_close_cb cb, void *payload)
{
    coll_t *c;
    syncd_node_watch_t *w;

    if (node == NULL || node->closing)
        return;
    node->closing = 1;
    atomic_store(&node->stop, 1);
    node->close_cb = cb;
    node->close_payload = payload;
    uv_close((uv_handle_t *)&node->timer, on_timer_closed);
    uv_close((uv_handle_t *)&node->retry, on_timer_closed);
    uv_close((uv_handle_t *)&node->outbox, on_timer_closed);
    for (c = node->colls; c != NULL; c = c->next) {
        syncd_bus_unsubscribe(c->sub);
        c->sub = NULL;
        while (c->head != NULL) {
            item_t *item = c->head;
            c->head = item->next;
            item_drop(item);
        }
        c->tail = NULL;
        if (c->running != NULL)
            uv_cancel((uv_req_t *)&c->running->req);
    }
    while (node->reqs != NULL) {
        breq_t *r = node->reqs;
        breq_take(r);
        if (r->watch != NULL)
            r->watch->req = NULL;
        if (r->cb != NULL)
            r->cb(SYNCD_ECANCELED, 0, r->payload);
    }
    for (c = node->colls; c != NULL; c = c->next) {
        for (w = c->watchers; w != NULL; w = w->next)
            watch_end(w, SYNCD_NODE_CLOSED, w->last);
        sweep(c);
    }
}

/* Builds the event of DESIGN.md section 4 for change into *out (a new
 * object, without seq and sig). */
static int build_event(json_t **out, const syncd_node_t *node,
                       const syncd_change_t *change)
{
    const syncd_doc_t *doc = change->doc;
    json_t *ev, *patch = NULL, *merge = NULL;
    char ts[32];

    *out = NULL;
    if (change->op == SYNCD_CHANGE_CREATE) {
        patch = json_pack("[{s:s,s:s,s:O}]", "op", "add", "path", "", "value",
                          doc->body);
        merge = json_incref(doc->body);
    } else if (change->op == SYNCD_CHANGE_UPDATE) {
        patch = json_incref(change->patch);
        merge = json_incref(change->merge);
        if (patch != NULL && dumped_size(patch) > dumped_size(doc->body)) {
            json_decref(patch);
            json_decref(merge);
            patch = merge = NULL;
        }
    }
    format_ms(ts, doc->mtime_ms);
    ev = json_pack("{s:s,s:s,s:s,s:I,s:I,s:o?,s:o?,s:s,s:s,s:s}", "op",
                   syncd_change_op_name(change->op), "coll", doc->coll, "id",
                   doc->id, "v", (json_int_t)doc->version, "base",
                   (json_int_t)change->base, "patch", patch, "merge", merge,
                   "h", doc->hash, "origin", node->node_id, "ts", ts);
    if (ev == NULL)
        return SYNCD_ENOMEM;
    /* Room for "seq" and "sig" besides what is dumped here. */
    if (dumped_size(ev) + 128 > node->opts.max_event_bytes) {
        json_object_set_new(ev, "patch", json_null());
        json_object_set_new(ev, "merge", json_null());
    }
    *out = ev;
    return 0;
}

/* Returns the invalidate event (patch and merge null) of the outbox marker
 * m of coll/id, a new object, or NULL on out of memory. */
static json_t *marker_event(const char *coll, const char *id, const json_t *m)
{
    char ts[32];

    format_ms(ts, member_int(m, "t"));
    return json_pack(
        "{s:s,s:s,s:s,s:I,s:I,s:n,s:n,s:s,s:s,s:s}", "op", member_str(m, "op"),
        "coll", coll, "id", id, "v", (json_int_t)member_int(m, "v"), "base",
        (json_int_t)member_int(m, "base"), "patch", "merge", "h",
        member_str(m, "h"), "origin", member_str(m, "by"), "ts", ts);
}

/* A record's outbox ack on the thread pool. */
typedef struct ack_work {
    uv_work_t req;
    syncd_node_t *node;
    char *coll, *id;
    int64_t version;
} ack_work_t;

static void ack_run(uv_work_t *req)
{
    ack_work_t *a = req->data;
    syncd_error_t err;

    syncd_error_clear(&err);
    if (syncd_store_outbox_ack(a->node->store, a->coll, a->id, a->version,
                               &err) != 0)
        fprintf(stderr, "syncd: outbox ack of %s/%s v%lld failed: %s\n",
                a->coll, a->id, (long long)a->version, err.message);
}

static void ack_done(uv_work_t *req, int status)
{
    ack_work_t *a = req->data;
    syncd_node_t *node = a->node;

    (void)status;
    node->works--;
    free(a->coll);
    free(a->id);
    free(a);
    maybe_finish_close(node);
}

/* Clears coll/id's outbox at version off the loop (best effort: a record
 * left with markers is republished, and the bus drops the duplicates). */
static void queue_ack(syncd_node_t *node, const char *coll, const char *id,
                      int64_t version)
{
    ack_work_t *a = calloc(1, sizeof(*a));

    if (a == NULL || (a->coll = strdup(coll)) == NULL ||
        (a->id = strdup(id)) == NULL)
        goto fail;
    a->node = node;
    a->version = version;
    a->req.data = a;
    if (uv_queue_work(node->loop, &a->req, ack_run, ack_done) != 0)
        goto fail;
    node->works++;
    return;
fail:
    if (a != NULL) {
        free(a->coll);
        free(a->id);
    }
    free(a);
}

/* Events of one document published one after the other, in version
 * order; once all are published its outbox is acked at ack_version. */
typedef struct chain {
    syncd_node_t *node;
    json_t *events;
    size_t next;
    char *coll, *id;
    int64_t ack_version;
    syncd_node_publish_cb cb;
    void *payload;
} chain_t;

static void chain_free(chain_t *ch)
{
    json_decref(ch->events);
    free(ch->coll);
    free(ch->id);
    free(ch);
}

static void chain_step(int status, int64_t seq, void *payload);

/* Publishes the chain's next event; on a synchronous failure finishes it
 * with that status. */
static void chain_publish(chain_t *ch)
{
    breq_t *r = breq_new(ch->node);
    int rc = SYNCD_ENOMEM;

    if (r != NULL) {
        r->cb = chain_step;
        r->payload = ch;
        rc = syncd_bus_publish(ch->node->bus,
                               json_array_get(ch->events, ch->next),
                               on_published, r);
        if (rc != 0) {
            breq_take(r);
            free(r);
        }
    }
    if (rc != 0)
        chain_step(rc, 0, ch);
}

/* One publish of the chain completed: go on, or finish (ack when all were
 * published, then report). */
static void chain_step(int status, int64_t seq, void *payload)
{
    chain_t *ch = payload;
    syncd_node_publish_cb cb = ch->cb;
    void *cb_payload = ch->payload;

    if (status == 0 && ++ch->next < json_array_size(ch->events) &&
        !ch->node->closing) {
        chain_publish(ch);
        return;
    }
    if (status == 0 && ch->node->closing &&
        ch->next < json_array_size(ch->events))
        status = SYNCD_ECANCELED;
    if (status == 0 && ch->ack_version > 0)
        queue_ack(ch->node, ch->coll, ch->id, ch->ack_version);
    chain_free(ch);
    if (cb != NULL)
        cb(status, seq, cb_payload);
}

/* Starts publishing events (stolen) of coll/id in order; ack_version 0
 * acks nothing. cb is called once, unless this fails at once (then it
 * is not called and an error is returned). */
static int chain_start(syncd_node_t *node, json_t *events, const char *coll,
                       const char *id, int64_t ack_version,
                       syncd_node_publish_cb cb, void *payload)
{
    chain_t *ch = calloc(1, sizeof(*ch));
    breq_t *r;
    int rc;

    if (ch == NULL || (ch->coll = strdup(coll)) == NULL ||
        (ch->id = strdup(id)) == NULL) {
        json_decref(events);
        if (ch != NULL)
            chain_free(ch);
        return SYNCD_ENOMEM;
    }
    ch->node = node;
    ch->events = events;
    ch->ack_version = ack_version;
    ch->cb = cb;
    ch->payload = payload;
    r = breq_new(node);
    if (r == NULL) {
        chain_free(ch);
        return SYNCD_ENOMEM;
    }
    r->cb = chain_step;
    r->payload = ch;
    rc = syncd_bus_publish(node->bus, json_array_get(events, 0), on_published,
                           r);
    if (rc != 0) {
        breq_take(r);
        free(r);
        chain_free(ch);
    }
    return rc;
}

static void on_published(int status, int64_t seq, void *payload)
{
    breq_t *r = payload;
    syncd_node_t *node = breq_take(r);

    if (node != NULL && r->cb != NULL)
        r->cb(status, seq, r->payload);
    free(r);
}

int syncd_node_publish(syncd_node_t *node, const syncd_change_t *change,
                       syncd_node_publish_cb cb, void *payload)
{
    json_t *events = NULL, *ev = NULL, *m;
    size_t i;
    int rc;

    if (node->closing)
        return SYNCD_ECANCELED;
    if (change == NULL ||
        (change->op != SYNCD_CHANGE_NONE && change->doc == NULL))
        return SYNCD_EINVAL;
    if (change->op == SYNCD_CHANGE_NONE) {
        if (cb != NULL)
            cb(0, 0, payload);
        return 0;
    }
    /* The test hook of node.h: die between the commit and its publish. */
    if (node->crash_after > 0 && ++node->commits == node->crash_after)
        raise(SIGKILL);
    if (coll_get(node, change->doc->coll) == NULL)
        return SYNCD_ENOMEM;
    events = json_array();
    if (events == NULL)
        return SYNCD_ENOMEM;
    json_array_foreach (change->pending, i, m) {
        if (json_array_append_new(
                events, marker_event(change->doc->coll, change->doc->id, m)) !=
            0) {
            json_decref(events);
            return SYNCD_ENOMEM;
        }
    }
    rc = build_event(&ev, node, change);
    if (rc == 0 && json_array_append_new(events, ev) != 0)
        rc = SYNCD_ENOMEM;
    if (rc != 0) {
        json_decref(events);
        return rc;
    }
    /* A store without the outbox option left nothing to ack. */
    return chain_start(
        node, events, change->doc->coll, change->doc->id,
        json_array_size(change->doc->outbox) > 0 ? change->doc->version : 0, cb,
        payload);
}

/* ---- The outbox republisher ---------------------------------------------- */

/* One republisher run: pages of records with pending markers, collection
 * by collection, read on the thread pool; each page's records are
 * republished (one chain each) before the next page is read. */
struct ob_run {
    uv_work_t req;
    syncd_node_t *node;
    int64_t min_age_ms;
    json_t *colls; /* listed on the first page */
    size_t ci;     /* collection being paged */
    char *after;   /* last id of the previous page */
    json_t *page;  /* this page: [{"id","v","ob"}] */
    int status;
    size_t chains; /* chains of this page still publishing */
};

static void ob_run_end(ob_run_t *run)
{
    syncd_node_t *node = run->node;

    node->ob_run = NULL;
    json_decref(run->colls);
    json_decref(run->page);
    free(run->after);
    free(run);
    if (node->ob_again && !node->closing) {
        node->ob_again = 0;
        syncd_node_republish(node, node->ob_again_age);
    }
}

static void ob_page_read(uv_work_t *req)
{
    ob_run_t *run = req->data;
    syncd_store_t *store = run->node->store;

    json_decref(run->page);
    run->page = NULL;
    if (run->colls == NULL) {
        run->status = syncd_store_collections(store, &run->colls, NULL);
        if (run->status != 0)
            return;
    }
    while (run->ci < json_array_size(run->colls) &&
           !atomic_load(&run->node->stop)) {
        run->status = syncd_store_outbox_list(
            store, &run->page,
            json_string_value(json_array_get(run->colls, run->ci)), run->after,
            OUTBOX_PAGE, NULL);
        if (run->status != 0 || json_array_size(run->page) > 0)
            return;
        json_decref(run->page);
        run->page = NULL;
        free(run->after);
        run->after = NULL;
        run->ci++;
    }
}

static void ob_page_done(uv_work_t *req, int status);

static void ob_page_queue(ob_run_t *run)
{
    run->req.data = run;
    if (run->node->closing || uv_queue_work(run->node->loop, &run->req,
                                            ob_page_read, ob_page_done) != 0) {
        ob_run_end(run);
        return;
    }
    run->node->works++;
}

/* A republished record's chain ended: the page goes on when it was the
 * last. */
static void ob_chain_done(int status, int64_t seq, void *payload)
{
    ob_run_t *run = payload;

    (void)seq;
    if (status != 0 && run->status == 0)
        run->status = status;
    if (--run->chains == 0) {
        if (run->status != 0)
            ob_run_end(run);
        else
            ob_page_queue(run);
    }
}

/* Starts the chain of one listed record: its markers older than the run's
 * min age, in order, acked when that is all of them. */
static void ob_record(ob_run_t *run, const char *coll, const json_t *rec,
                      int64_t now)
{
    const json_t *ob = json_object_get(rec, "ob");
    const char *id = member_str(rec, "id");
    json_t *events = json_array();
    json_t *m;
    size_t i;

    json_array_foreach (ob, i, m) {
        if (now - member_int(m, "t") < run->min_age_ms)
            break;
        if (events == NULL ||
            json_array_append_new(events, marker_event(coll, id, m)) != 0) {
            json_decref(events);
            return;
        }
    }
    if (json_array_size(events) == 0) {
        json_decref(events);
        return;
    }
    run->chains++;
    if (chain_start(run->node, events, coll, id,
                    i == json_array_size(ob) ? member_int(rec, "v") : 0,
                    ob_chain_done, run) != 0)
        run->chains--;
}

static void ob_page_done(uv_work_t *req, int status)
{
    ob_run_t *run = req->data;
    syncd_node_t *node = run->node;
    const char *coll;
    int64_t now = wall_now_ms();
    size_t n;
    json_t *rec;
    size_t i;

    node->works--;
    n = json_array_size(run->page);
    if (status != 0 || run->status != 0 || node->closing || n == 0) {
        ob_run_end(run);
        maybe_finish_close(node);
        return;
    }
    coll = json_string_value(json_array_get(run->colls, run->ci));
    if (coll_get(node, coll) == NULL) {
        ob_run_end(run);
        return;
    }
    free(run->after);
    run->after = strdup(member_str(json_array_get(run->page, n - 1), "id"));
    if (run->after == NULL) {
        ob_run_end(run);
        return;
    }
    run->chains = 1; /* held while the page's chains start */
    json_array_foreach (run->page, i, rec) {
        ob_record(run, coll, rec, now);
    }
    ob_chain_done(0, 0, run);
}

void syncd_node_republish(syncd_node_t *node, int64_t min_age_ms)
{
    ob_run_t *run;

    if (node->closing)
        return;
    if (node->ob_run != NULL) {
        if (!node->ob_again || min_age_ms < node->ob_again_age)
            node->ob_again_age = min_age_ms;
        node->ob_again = 1;
        return;
    }
    run = calloc(1, sizeof(*run));
    if (run == NULL)
        return;
    run->node = node;
    run->min_age_ms = min_age_ms;
    node->ob_run = run;
    ob_page_queue(run);
}

/* Polls the bus connection: the republisher runs when the bus (re)connects
 * (the first time at open) and every outbox_interval while it is up. Each
 * run leaves markers younger than outbox_min_age to their writer's own
 * publish, which is most likely under way. */
static void on_outbox_timer(uv_timer_t *timer)
{
    syncd_node_t *node = timer->data;
    int up = syncd_bus_connected(node->bus);
    int64_t now = (int64_t)uv_now(node->loop);

    if (up && (!node->bus_up || (node->opts.outbox_interval_ms > 0 &&
                                 now >= node->outbox_due_ms)))
        syncd_node_republish(node, node->opts.outbox_min_age_ms);
    if (now >= node->outbox_due_ms)
        node->outbox_due_ms = now + node->opts.outbox_interval_ms;
    node->bus_up = up;
}

int syncd_node_watch(syncd_node_t *node, syncd_node_watch_t **out,
                     const char *coll, const char *prefix, int64_t since,
                     syncd_node_watch_cb cb, void *payload, syncd_error_t *err)
{
    syncd_node_watch_t *w;
    coll_t *c;
    int rc;

    *out = NULL;
    if (node->closing)
        return syncd_error_set(err, SYNCD_ECANCELED, "node: closing");
    rc = syncd_validate_collection(coll, err);
    if (rc != 0)
        return rc;
    if (cb == NULL)
        return syncd_error_set(err, SYNCD_EINVAL, "node: watch needs a cb");
    w = calloc(1, sizeof(*w));
    c = coll_get(node, coll);
    if (w == NULL || c == NULL ||
        (prefix != NULL && (w->prefix = strdup(prefix)) == NULL)) {
        free(w);
        return syncd_error_set(err, SYNCD_ENOMEM, "node: out of memory");
    }
    w->prefix_len = prefix != NULL ? strlen(prefix) : 0;
    w->coll = c;
    w->since = since;
    w->cb = cb;
    w->payload = payload;
    w->next = c->watchers;
    c->watchers = w;
    node->stats.watchers++;
    if (c->ready)
        watch_start(w);
    *out = w;
    return 0;
}

void syncd_node_unwatch(syncd_node_watch_t *watch)
{
    if (watch == NULL)
        return;
    watch->dead = 1;
    sweep(watch->coll);
}

int64_t syncd_node_seq(const syncd_node_t *node, const char *coll)
{
    const coll_t *c;

    for (c = node->colls; c != NULL; c = c->next) {
        if (strcmp(c->name, coll) == 0)
            return c->seq;
    }
    return 0;
}

void syncd_node_stats(const syncd_node_t *node, syncd_node_stats_t *out)
{
    *out = node->stats;
}

int syncd_node_anti_entropy(syncd_node_t *node,
                            void (*cb)(int status, uint64_t repaired,
                                       void *payload),
                            void *payload)
{
    ae_run_t *run;
    int rc;

    if (node->closing)
        return SYNCD_ECANCELED;
    run = calloc(1, sizeof(*run));
    if (run == NULL)
        return SYNCD_ENOMEM;
    run->node = node;
    run->pending = 1;
    run->cb = cb;
    run->payload = payload;
    rc = list_collections(node, run);
    if (rc != 0) {
        free(run);
        return rc;
    }
    node->stats.anti_entropy_runs++;
    return 0;
}
