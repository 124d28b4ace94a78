/* node.c - a syncd node: applies the change bus to the node cache, runs
 * anti-entropy, purges tombstones, and feeds local watchers.
 *
 * Each collection the node works on gets a subscription on the bus and a
 * queue of work items: received events and bus resyncs, in seq order. That
 * state exists only for collections that exist in the store
 * (in MongoDB mode, every collection listed there, whose cache entries the
 * subscription keeps converged; in the embedded default, where the store is
 * the truth, those written through the node) or that have watchers or a
 * write in progress (held by the API); a request for an unknown collection
 * creates none. Collections are found in a hash table by name and bounded
 * by max_collections. One that goes idle (no watcher, no hold, no queued or
 * running work, no anti-entropy pass, no seq read in flight) is freed with
 * its subscription at once when it is not known to exist in the store, else
 * after coll_idle_ms without a write or event; in MongoDB mode a collection
 * that exists in the store is kept. A collection
 * hands what it has queued (up to BATCH_MAX items) to the libuv thread pool as
 * one work item (store calls block) and runs one such batch at a time, so
 * its events are applied in seq order and a backlog costs one round trip
 * to the pool, not one per event. Back on the loop, each item of the batch
 * in turn has its seq recorded as applied and its event handed to the
 * collection's watchers. Applied events therefore reach watchers after the
 * cache holds their version. A queue holds at most max_apply_queue items:
 * when an item arrives at a full queue (the thread pool is busy or slow and
 * the bus fast), the node drops what is queued and queues one resync at the
 * new item's seq instead, as if the bus had lost those events: watchers
 * that missed them are told to resync and a pass repairs the cache from
 * the store. So a collection's memory stays bounded, and what the node
 * serves stays the store's.
 *
 * In MongoDB mode the cache follows DESIGN.md section 4: patch on the base
 * version with a hash check, drop duplicates and old versions, refetch on
 * gaps, mismatches and invalidates, keep creates of uncached documents.
 * In the embedded default (store kind "rocksdb") the store is the truth and
 * there is no cache, so items only carry events to watchers.
 *
 * Anti-entropy (MongoDB mode) compares only what the node holds: a pass over
 * a collection pages through its fresh cache entries, anti_entropy_chunk
 * ids at a time, reads the store's versions of those ids in one query, and
 * compares the chunk's digest (DESIGN.md section 6) with the store's for the
 * same ids; only a chunk that differs is compared entry by entry, and only an
 * entry that really differs is repaired (refetched, or dropped when the
 * store no longer has it) and counted. A pass is thread-pool work of its
 * own, never an item of the queue, so event delivery never waits for it;
 * it is safe beside event application because cache puts are put-if-newer
 * and a repair reads the store. A bus resync (the replay log no longer
 * holds what the node missed) runs the same pass over the collection.
 * Expired cache entries are simply not compared, so an idle node with a
 * partial cache refetches nothing.
 *
 * Tombstones older than the store's tombstone TTL are purged on a timer,
 * one thread-pool work per run over every collection of the store; back
 * on the loop, the bus forgets the deduplication records of the ids that
 * went (syncd_bus_forget()), so that ids created and deleted without end
 * do not grow the bus's state.
 *
 * A watcher from a past seq first reads (since, applied] from the bus's
 * replay log while newer applied events wait in its bounded queue; seqs are
 * checked to follow one another, so the seam has no gap or duplicate, and
 * any discontinuity ends the watcher with SYNCD_NODE_RESYNC. While a
 * collection has no watcher, a node with a cache takes the bodies of
 * other nodes' events only: its own come back from the bus as seqs (its
 * cache holds their versions already, or dropped the entry). A watcher
 * that arrives while some of those still wait in the queue reads them
 * from the replay log in the same way.
 *
 * Publishing is the transactional outbox's other half (storage/store.c):
 * a change goes out after the versions still pending on its record (as
 * invalidate events), one publish after the other in version order, and
 * its markers up to its version are acked off the loop once all are out
 * (whatever version the record is at by then). The bus keeps each
 * document's versions in order (syncd_bus_publish_in_order(): the
 * versions before a chain's first one are published, since only an ack
 * drops a marker), so a version can never be overtaken and dropped as a
 * duplicate by a later one that another node published first. The
 * republisher
 * (on each bus (re)connect, and every outbox_interval) pages through the
 * records with markers left on the thread pool and publishes those older
 * than outbox_min_age the same way. An event's ts is its commit time,
 * whoever publishes it, and the bus drops an (id, v) it has already
 * published, so the two paths never show a version twice.
 *
 * Lifetimes: watchers are freed by the node once ended and out of every
 * callback; bus requests still in flight at close are orphaned (they free
 * themselves when the bus answers); a collection outlives the
 * anti-entropy passes over it (coll.passes); the node itself is freed when
 * its last thread-pool work and its timers are done.
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
/* Bounds of the tombstone purge period: a quarter of the tombstone TTL. */
#define PURGE_MIN_MS 1000
#define PURGE_MAX_MS (3600 * 1000)
/* Delay before subscribing again when the bus could not be reached. */
#define SUBSCRIBE_RETRY_MS 200
/* How often the outbox timer looks at the bus connection. */
#define OUTBOX_POLL_MS 250
/* How often the node asks the cache to write its records written behind
 * (it writes them at most once a second). */
#define FLUSH_POLL_MS 250
/* Records with pending markers the republisher reads per page. */
#define OUTBOX_PAGE 64
/* Bytes of an event's "seq" and "sig" besides the rest of it. */
#define EVENT_ROOM 128
/* Largest patch (compact JSON bytes) an event may carry to be applied on
 * the loop rather than on the thread pool. */
#define LOOP_PATCH_MAX 4096

typedef struct coll coll_t;
typedef struct ae_run ae_run_t;
typedef struct ob_run ob_run_t;

/* What a collection's queue holds. */
typedef enum { ITEM_EVENT, ITEM_RESYNC } item_kind_t;

typedef struct item {
    struct item *next;
    item_kind_t kind;
    int64_t seq;   /* its seq */
    json_t *event; /* ITEM_EVENT: a reference, read-only from here on */
    int refetch;   /* ITEM_EVENT: the loop found its patch not to apply: the
                      pool refetches its document instead */
} item_t;

/* One anti-entropy run: a pass over every collection. */
struct ae_run {
    syncd_node_t *node;
    size_t pending; /* collection passes left, plus one while listing */
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
    coll_t *next, *prev; /* the node's list */
    coll_t *hnext;       /* the node's hash chain */
    uint64_t hash;
    syncd_node_t *node;
    char *name;
    size_t holds;        /* syncd_node_hold() calls not yet released */
    int pass_when_ready; /* a read cached a document before it was */
    int in_store;        /* known to exist in the store of record: listed,
                            written, or an event of it received */
    uint64_t touched;    /* loop time (ms) of its last write or event */
    syncd_bus_sub_t *sub;
    int ready;       /* subscribed; seq is known */
    int seq_pending; /* a bus seq read is in flight */
    int64_t seq;     /* last seq applied */
    item_t *head, *tail;
    size_t queued;   /* items from head to tail */
    work_t *running; /* the batch on the thread pool */
    size_t passes;   /* anti-entropy passes in flight: they use c, which
                        must outlive them */
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
    json_t *forget; /* a forget: {coll: {id: version}} it asked for */
} breq_t;

/* Slots of the table of documents this node published lately. */
#define PUB_SLOTS 1024

/* What this node handed to the bus of one document: every version up to
 * handed went over in version order, and those up to confirmed were
 * accepted (published, or dropped as published already). A publish leaves
 * out the pending versions up to handed, which are ahead of it on the bus,
 * and lets the bus take its first event only after confirmed; a failure
 * lowers handed to confirmed. A document that finds its slot taken by
 * another evicts it, which loses nothing but the shortcut. */
typedef struct pub_slot {
    char *coll, *id;
    int64_t handed, confirmed;
    int64_t failed;    /* the last version of the last chain that failed */
    int64_t handed_ms; /* the newest commit time (ms) of what was handed */
} pub_slot_t;

/* A publish waits (publish_or_wait()) at most this long, in ms of loop
 * time, for the earlier versions it waits for, then goes with markers for
 * them; and for at most this many of them. */
#define WAIT_MAX_MS 1000
#define WAIT_MAX_VERSIONS 256
/* Period of the check of waiting publishes. */
#define WAIT_POLL_MS 10

/* A committed change's publish: what it needs of the change, taken by
 * syncd_node_prepare(), and its event built and encoded. It may wait for
 * earlier versions of its document that this node committed and whose own
 * publishes are on their way, so that they go out with their changes
 * rather than as invalidate markers carried by a later version (see
 * publish_or_wait()). */
struct syncd_node_pub {
    struct syncd_node_pub *next; /* in node->waits */
    char *coll, *id;
    int64_t version;
    int64_t mtime_ms; /* its commit time */
    syncd_change_op_t op;
    json_t *pending;      /* the change's pending markers */
    syncd_bus_msg_t *msg; /* the change's own event, encoded */
    int64_t ack_version;
    uint64_t since; /* loop time it began waiting */
    syncd_node_publish_cb cb;
    void *payload;
};

struct syncd_node {
    uv_loop_t *loop;
    syncd_store_t *store;
    syncd_bus_t *bus;
    syncd_node_options_t opts;
    char node_id[SYNCD_MAX_NODE_ID + 1];
    int cached; /* MongoDB mode: there is a cache to keep converged */
    coll_t *colls;
    coll_t **buckets; /* hash table of colls; nbuckets is a power of two */
    size_t nbuckets, ncolls;
    breq_t *reqs;
    uv_timer_t timer;  /* anti-entropy */
    uv_timer_t retry;  /* subscribing collections the bus refused */
    uv_timer_t purge;  /* tombstone purge */
    uv_timer_t reap;   /* freeing idle collections */
    uv_timer_t outbox; /* bus reconnects and the periodic republisher */
    uv_timer_t flush;  /* the cache's records written behind */
    uv_timer_t wait;   /* publishes waiting for earlier versions */
    int timers_open;
    int bus_up;            /* the bus was connected at the last poll */
    int64_t outbox_due_ms; /* next periodic republisher run (loop time) */
    ob_run_t *ob_run;      /* the republisher run under way, or NULL */
    int ob_again;          /* run again when it ends */
    int64_t ob_again_age;  /* with this min age */
    long crash_after;      /* test hook: SIGKILL at this commit (0: off) */
    long commits;
    size_t works;            /* thread-pool items in flight */
    struct ack_work *acks;   /* outbox acks queued, newest first */
    struct pub_slot *pubs;   /* PUB_SLOTS, allocated on first publish */
    syncd_node_pub_t *waits; /* publishes waiting, in no order */
    int resuming;            /* resume_waits() is running */
    size_t ae_runs;          /* anti-entropy runs in progress */
    int purging;             /* a purge work is in flight */
    json_t *unforgotten;     /* coll -> {id: version}: forgets that failed,
                                asked again (instead of a purge) at the next
                                purge period */
    size_t forgets_sent;     /* forgets sent and not yet answered */
    int purge_more;          /* the last purge run stopped at purge_batch */
    int flushing;            /* a flush work is in flight */
    int depth;               /* nesting of watcher callbacks */
    int closing;
    atomic_int stop; /* closing, as seen by workers between items */
    syncd_node_close_cb close_cb;
    void *close_payload;
    syncd_node_stats_t stats;
};

/* What a thread-pool work does. */
typedef enum {
    WORK_LIST,  /* lists the store's collections */
    WORK_BATCH, /* runs a batch of one collection's items */
    WORK_PASS,  /* compares and repairs one collection's cached entries */
    WORK_PURGE, /* purges old tombstones of every collection */
    WORK_FLUSH, /* writes the cache's records written behind, when due */
} work_kind_t;

/* Thread-pool work of the node. */
struct work {
    uv_work_t req;
    work_kind_t kind;
    syncd_node_t *node;
    coll_t *coll;  /* WORK_BATCH, WORK_PASS */
    item_t *items; /* WORK_BATCH: the batch, linked in seq order */
    ae_run_t *run; /* WORK_LIST, WORK_PASS: the anti-entropy run, or
                      NULL (the listing at open, a pass for a resync) */
    json_t *colls; /* WORK_LIST: the listing */
    json_t *gone;  /* WORK_PURGE: coll -> {id: version} of what it removed */
    int more;      /* WORK_PURGE: it stopped at purge_batch, more may wait */
    int status;    /* of the listing, the pass or the purge */
    uint64_t repaired;        /* WORK_PASS: entries that really differed */
    syncd_node_stats_t delta; /* counted on the worker, added on the loop */
};

static void pump(coll_t *c);
static void start_purge(syncd_node_t *node);
static void sweep(coll_t *c);
static void on_published(int status, int64_t seq, void *payload);
static void run_release(ae_run_t *run, int status, uint64_t repaired);
static void maybe_finish_close(syncd_node_t *node);
static void resume_waits(syncd_node_t *node, const char *coll, const char *id);

void syncd_node_options_init(syncd_node_options_t *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->node_id = "local";
    opts->anti_entropy_interval_ms = 30000;
    opts->anti_entropy_chunk = 500;
    opts->tombstone_ttl_ms = (int64_t)24 * 3600 * 1000;
    opts->purge_batch = 10000;
    opts->max_event_bytes = 1 << 20;
    opts->max_doc_bytes = (size_t)8 << 20;
    opts->watch_buffer_events = 10000;
    opts->max_collections = 10000;
    opts->coll_idle_ms = 30000;
    opts->outbox_interval_ms = 5000;
    opts->outbox_min_age_ms = 2000;
    opts->max_apply_queue = 10000;
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

static void add_stats(syncd_node_stats_t *to, const syncd_node_stats_t *d)
{
    to->events_applied += d->events_applied;
    to->events_dropped_duplicate += d->events_dropped_duplicate;
    to->events_dropped_old += d->events_dropped_old;
    to->events_ignored_uncached += d->events_ignored_uncached;
    to->refetches += d->refetches;
    to->hash_mismatches += d->hash_mismatches;
    to->tombstones_purged += d->tombstones_purged;
}

static void item_free(item_t *item)
{
    json_decref(item->event);
    free(item);
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
    run->node->ae_runs--;
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

static void watch_replay(syncd_node_watch_t *w);

/* Takes an applied event that came without its body: one of this node's
 * own, queued before w came, while no watcher wanted bodies. w reads it
 * from the bus's replay log, and queues what follows meanwhile; anything
 * else is no seq it can follow, and ends it with a resync. */
static void watch_offer_bodiless(syncd_node_watch_t *w, int64_t seq)
{
    if (seq <= w->last)
        return;
    if (w->live && seq == w->last + 1 && (w->queue = json_array()) != NULL) {
        w->live = 0;
        w->until = seq;
        watch_replay(w);
    } else if (!w->live && json_array_size(w->queue) == 0 &&
               seq == w->until + 1) {
        w->until = seq;
    } else {
        watch_end(w, SYNCD_NODE_RESYNC, w->last);
    }
}

/* Hands an applied event to w: straight through when live, else into its
 * bounded queue (overflow ends it with a resync). */
static void watch_offer(syncd_node_watch_t *w, int64_t seq, json_t *event)
{
    if (w->dead || !w->started)
        return;
    if (event == NULL) {
        watch_offer_bodiless(w, seq);
        return;
    }
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

/* Frees the items of c's queue. */
static void drop_queue(coll_t *c)
{
    while (c->head != NULL) {
        item_t *item = c->head;
        c->head = item->next;
        item_free(item);
    }
    c->tail = NULL;
    c->node->stats.apply_queued -= c->queued;
    c->queued = 0;
}

/* Appends item to c's queue and pumps the queue. An item that finds the
 * queue full replaces it with one resync at its seq (and is dropped
 * itself): the resync tells the watchers that missed the dropped events
 * and repairs the cache from the store. */
static void enqueue(coll_t *c, item_t *item)
{
    syncd_node_t *node = c->node;

    if (node->opts.max_apply_queue > 0 &&
        c->queued >= node->opts.max_apply_queue) {
        drop_queue(c);
        node->stats.apply_queue_overflows++;
        json_decref(item->event);
        item->event = NULL;
        item->kind = ITEM_RESYNC;
    }
    if (c->tail != NULL)
        c->tail->next = item;
    else
        c->head = item;
    c->tail = item;
    c->queued++;
    node->stats.apply_queued++;
    if (c->queued > node->stats.apply_queue_peak)
        node->stats.apply_queue_peak = c->queued;
    pump(c);
}

static void on_bus_event(syncd_bus_signal_t signal, int64_t seq,
                         const json_t *event, void *payload)
{
    coll_t *c = payload;
    item_t *item;

    if (c->node->closing)
        return;
    if (signal == SYNCD_BUS_EVENT)
        c->node->stats.events_received++;
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

/* Tells the bus which event bodies c's subscription needs: watchers are
 * handed every event; a cache applies the events of other nodes, never
 * this node's own (its writes put their version in the cache, or drop the
 * entry when that fails); else only seqs are used. */
static void want_bodies(coll_t *c)
{
    syncd_bus_bodies_t want =
        c->node->cached ? SYNCD_BUS_BODIES_OTHERS : SYNCD_BUS_BODIES_NONE;

    for (syncd_node_watch_t *w = c->watchers; w != NULL; w = w->next) {
        if (!w->dead)
            want = SYNCD_BUS_BODIES_ALL;
    }
    if (c->sub != NULL)
        syncd_bus_sub_want_bodies(c->sub, want);
}

static void coll_subscribe(coll_t *c);
static int coll_reap(coll_t *c);
static void start_pass(coll_t *c, ae_run_t *run);

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
        if (!coll_reap(c))
            retry_later(node);
        return;
    }
    c->seq = seq;
    c->ready = 1;
    want_bodies(c);
    for (w = c->watchers; w != NULL; w = w->next) {
        if (!w->dead && !w->started)
            watch_start(w);
    }
    /* What a read cached before now may have missed events. */
    if (c->pass_when_ready) {
        c->pass_when_ready = 0;
        start_pass(c, NULL);
    }
    sweep(c);
    /* Whoever wanted it may be gone already (a write that failed). */
    coll_reap(c);
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

/* Returns the FNV-1a hash of name. */
static uint64_t name_hash(const char *name)
{
    uint64_t h = 14695981039346656037ULL;

    for (; *name != '\0'; name++) {
        h ^= (unsigned char)*name;
        h *= 1099511628211ULL;
    }
    return h;
}

static coll_t **bucket_of(const syncd_node_t *node, uint64_t hash)
{
    return &node->buckets[(hash ^ (hash >> 31)) & (node->nbuckets - 1)];
}

/* Returns the collection name, or NULL when the node holds no state for
 * it. */
static coll_t *coll_find(const syncd_node_t *node, const char *name)
{
    uint64_t hash = name_hash(name);
    coll_t *c;

    if (node->buckets == NULL)
        return NULL;
    for (c = *bucket_of(node, hash); c != NULL; c = c->hnext) {
        if (c->hash == hash && strcmp(c->name, name) == 0)
            return c;
    }
    return NULL;
}

/* Doubles the hash table (or makes its first one); on out of memory the
 * chains just get longer. */
static void table_grow(syncd_node_t *node)
{
    size_t n = node->nbuckets ? node->nbuckets * 2 : 64;
    coll_t **old = node->buckets, **fresh = calloc(n, sizeof(*fresh));
    size_t oldn = node->nbuckets;

    if (fresh == NULL)
        return;
    node->buckets = fresh;
    node->nbuckets = n;
    for (size_t i = 0; i < oldn; i++) {
        while (old[i] != NULL) {
            coll_t *c = old[i], **b = bucket_of(node, c->hash);

            old[i] = c->hnext;
            c->hnext = *b;
            *b = c;
        }
    }
    free(old);
}

/* Finds or adds the collection name into *out and makes sure it is
 * subscribed; SYNCD_ETOOBIG when adding it would pass max_collections,
 * SYNCD_ENOMEM. */
static int coll_open(syncd_node_t *node, coll_t **out, const char *name,
                     syncd_error_t *err)
{
    coll_t *c = coll_find(node, name), **b;

    *out = NULL;
    if (c == NULL) {
        if (node->ncolls >= node->opts.max_collections)
            return syncd_error_set(err, SYNCD_ETOOBIG,
                                   "node: collection %s refused: the node "
                                   "holds its limit of %zu collections",
                                   name, node->opts.max_collections);
        if (node->ncolls >= node->nbuckets)
            table_grow(node);
        c = calloc(1, sizeof(*c));
        if (c == NULL || node->buckets == NULL ||
            (c->name = strdup(name)) == NULL) {
            free(c);
            return syncd_error_set(err, SYNCD_ENOMEM, "node: out of memory");
        }
        c->node = node;
        c->hash = name_hash(name);
        c->touched = uv_now(node->loop);
        b = bucket_of(node, c->hash);
        c->hnext = *b;
        *b = c;
        c->next = node->colls;
        if (node->colls != NULL)
            node->colls->prev = c;
        node->colls = c;
        node->ncolls++;
    }
    coll_subscribe(c);
    *out = c;
    return 0;
}

/* coll_open() for a collection that is being written or exists in the
 * store: marked so now, so that it keeps its state for coll_idle_ms (and
 * hears its own event). NULL when it fails. */
static coll_t *coll_get(syncd_node_t *node, const char *name)
{
    coll_t *c = NULL;

    if (coll_open(node, &c, name, NULL) == 0) {
        c->in_store = 1;
        c->touched = uv_now(node->loop);
    }
    return c;
}

/* Unlinks c from its node and frees it with its subscription; c must be
 * idle (see coll_idle()). */
static void coll_free(coll_t *c)
{
    syncd_node_t *node = c->node;
    coll_t **p = bucket_of(node, c->hash);

    while (*p != c)
        p = &(*p)->hnext;
    *p = c->hnext;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        node->colls = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    node->ncolls--;
    syncd_bus_unsubscribe(c->sub);
    free(c->name);
    free(c);
}

/* Tells whether c needs its state for nothing now: no watcher (ended ones
 * included until swept), no hold, no queued or running work, no
 * anti-entropy pass and no bus request in flight. */
static int coll_idle(const coll_t *c)
{
    return c->watchers == NULL && c->holds == 0 && c->head == NULL &&
           c->running == NULL && c->passes == 0 && !c->seq_pending;
}

/* Frees c if it is idle and may go: not known in the store, or in the
 * embedded default not written for coll_idle_ms (in MongoDB mode a
 * collection of the store keeps its subscription, which keeps the cache
 * converged). Returns 1 when freed. */
static int coll_reap(coll_t *c)
{
    syncd_node_t *node = c->node;

    if (node->closing || node->depth > 0)
        return 0;
    sweep(c);
    if (!coll_idle(c) || (node->cached && c->in_store))
        return 0;
    if (c->in_store &&
        uv_now(node->loop) - c->touched < (uint64_t)node->opts.coll_idle_ms)
        return 0;
    coll_free(c);
    return 1;
}

static void on_reap(uv_timer_t *timer)
{
    syncd_node_t *node = timer->data;
    coll_t *c = node->colls, *next;

    for (; c != NULL; c = next) {
        next = c->next;
        coll_reap(c);
    }
}

/* Puts the chain first..last, n items, back at the head of c's queue. */
static void enqueue_front(coll_t *c, item_t *first, item_t *last, size_t n)
{
    last->next = c->head;
    c->head = first;
    if (c->tail == NULL)
        c->tail = last;
    c->queued += n;
    c->node->stats.apply_queued += n;
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

/* Whether patch is one op that puts a whole new document (a create's add
 * or a root replace): it needs nothing of the cached body. */
static int puts_root(const json_t *patch)
{
    const json_t *op = json_array_get(patch, 0);
    const char *name = member_str(op, "op");

    return json_array_size(patch) == 1 &&
           strcmp(member_str(op, "path"), "") == 0 &&
           json_is_string(json_object_get(op, "path")) &&
           (strcmp(name, "add") == 0 || strcmp(name, "replace") == 0);
}

/* Patches the cached body of c (NULL: an empty object) with the event's
 * patch, within max_doc_bytes (a patch that amplifies past it is not the
 * store's: the store refuses such a document), and caches the result when
 * its hash is the event's; otherwise refetches. A body c holds alone is
 * taken and patched in place; one shared with the cache's decoded tier
 * (which readers may hold) is patched on a copy. */
static void apply_patch(work_t *w, const json_t *ev, syncd_doc_t *c)
{
    const char *id = member_str(ev, "id");
    const json_t *patch = json_object_get(ev, "patch");
    syncd_patch_limits_t limits = {w->node->opts.max_doc_bytes, 0};
    json_t *body = NULL;
    char hash[SYNCD_HASH_HEX_LEN + 1];
    int rc = SYNCD_ENOMEM;

    if (c == NULL || puts_root(patch)) {
        body = json_object();
        if (body != NULL)
            rc = syncd_patch_apply_in_place(&body, patch, &limits, NULL);
    } else if (c->body->refcount == 1) {
        body = c->body;
        c->body = NULL;
        rc = syncd_patch_apply_in_place(&body, patch, &limits, NULL);
    } else {
        rc = syncd_patch_apply_ex(&body, c->body, patch, &limits, NULL);
    }
    if (rc != 0 || syncd_json_hash(hash, body, NULL) != 0) {
        refetch(w, id);
    } else if (strcmp(hash, member_str(ev, "h")) != 0) {
        w->delta.hash_mismatches++;
        refetch(w, id);
    } else {
        cache_version(w, ev, body, hash);
    }
    json_decref(body);
}

/* Whether ev is an update whose patch changes part of the cached body:
 * one that may be applied to it in place. */
static int patches_part(const json_t *ev)
{
    const json_t *patch = json_object_get(ev, "patch");

    return strcmp(member_str(ev, "op"), "update") == 0 &&
           json_is_array(patch) && !puts_root(patch);
}

/* Applies the update ev to the cached body in place
 * (syncd_store_cache_patch(), nonblocking or not) and returns its outcome,
 * with *cached the version the cache held: fills doc with what ev says of
 * the new version. */
static int patch_in_place(syncd_store_t *store, const char *coll,
                          const json_t *ev, int nonblocking, int64_t *cached)
{
    syncd_doc_t doc;

    memset(&doc, 0, sizeof(doc));
    doc.coll = (char *)coll;
    doc.id = (char *)member_str(ev, "id");
    doc.version = member_int(ev, "v");
    doc.mtime_ms = parse_ts_ms(member_str(ev, "ts"));
    snprintf(doc.hash, sizeof(doc.hash), "%s", member_str(ev, "h"));
    snprintf(doc.origin, sizeof(doc.origin), "%s", member_str(ev, "origin"));
    return syncd_store_cache_patch(store, &doc, member_int(ev, "base"),
                                   json_object_get(ev, "patch"), nonblocking,
                                   cached, NULL);
}

/* Applies one event to the cache by the rules of DESIGN.md section 4. */
static void apply_event(work_t *w, const json_t *ev)
{
    const char *op = member_str(ev, "op"), *id = member_str(ev, "id");
    int64_t v = member_int(ev, "v"), base = member_int(ev, "base");
    int create = strcmp(op, "create") == 0;
    syncd_doc_t *c = NULL;
    int64_t cached;
    int rc;

    /* First in place on the cached body, which needs no copy of it. */
    if (patches_part(ev)) {
        rc = patch_in_place(w->node->store, w->coll->name, ev, 0, &cached);
        if (rc == 1) {
            w->delta.events_applied++;
            return;
        }
        if (rc == SYNCD_ECONFLICT)
            w->delta.hash_mismatches++;
        if (rc < 0) {
            refetch(w, id);
            return;
        }
    }
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
        apply_patch(w, ev, c);
    }
    syncd_doc_free(c);
}

/* ---- Anti-entropy and purge (worker thread) ------------------------------
 */

/* Whether the entries a and b ({"v","h"} each; b may be NULL) hold the
 * same version. */
static int same_version(const json_t *a, const json_t *b)
{
    return b != NULL && member_int(a, "v") == member_int(b, "v") &&
           strcmp(member_str(a, "h"), member_str(b, "h")) == 0;
}

/* Sets *out to a new array of the ids of page's entries. */
static int page_ids(json_t **out, const json_t *page)
{
    json_t *ids = json_array(), *e;
    size_t i;

    *out = ids;
    if (ids == NULL)
        return SYNCD_ENOMEM;
    json_array_foreach (page, i, e) {
        if (json_array_append(ids, json_object_get(e, "id")) != 0)
            return SYNCD_ENOMEM;
    }
    return 0;
}

/* Whether the digest of the cached entries of page equals the digest of
 * the store's versions truth ({id: {"v","h","del"}}) of the same ids. */
static int chunk_agrees(const json_t *page, const json_t *truth)
{
    syncd_digest_t mine, theirs;
    json_t *entries = json_array(), *t;
    const char *id;
    int agrees = 0;

    if (entries == NULL)
        return 0;
    json_object_foreach ((json_t *)truth, id, t) {
        if (json_array_append_new(entries,
                                  json_pack("{s:s,s:O,s:O}", "id", id, "v",
                                            json_object_get(t, "v"), "h",
                                            json_object_get(t, "h"))) != 0)
            goto cleanup;
    }
    agrees = syncd_digest_entries(&mine, page, NULL) == 0 &&
             syncd_digest_entries(&theirs, entries, NULL) == 0 &&
             mine.count == theirs.count && strcmp(mine.hex, theirs.hex) == 0;
cleanup:
    json_decref(entries);
    return agrees;
}

/* Repairs the cached entry e of the pass's collection when it differs from
 * the store's version t (NULL: the store has no record, e.g. purged). An
 * entry that changed in the cache since the page was read is left alone:
 * an event or a refetch moved it to a version the store committed. */
static void repair_entry(work_t *w, const json_t *e, const json_t *t)
{
    syncd_store_t *store = w->node->store;
    const char *coll = w->coll->name, *id = member_str(e, "id");
    syncd_doc_t *now = NULL;

    if (same_version(e, t))
        return;
    if (syncd_store_cached(store, &now, coll, id, NULL) != 0)
        return;
    if (now->version == member_int(e, "v") &&
        strcmp(now->hash, member_str(e, "h")) == 0) {
        w->repaired++;
        /* put-if-newer keeps a cached version the store does not have at
         * or above its own: drop it first. */
        if (t == NULL || now->version >= member_int(t, "v"))
            syncd_store_cache_invalidate(store, coll, id, NULL);
        if (t != NULL)
            refetch(w, id);
    }
    syncd_doc_free(now);
}

/* Compares one page of cached entries with the store's versions of the
 * same ids, entry by entry only when the chunk digests differ. */
static int compare_chunk(work_t *w, const json_t *page)
{
    json_t *ids = NULL, *truth = NULL, *e;
    size_t i;
    int rc;

    rc = page_ids(&ids, page);
    if (rc == 0)
        rc = syncd_store_versions(w->node->store, &truth, w->coll->name, ids,
                                  NULL);
    if (rc == 0 && !chunk_agrees(page, truth)) {
        json_array_foreach (page, i, e) {
            repair_entry(w, e, json_object_get(truth, member_str(e, "id")));
        }
    }
    json_decref(ids);
    json_decref(truth);
    return rc;
}

/* One anti-entropy pass over the work's collection: pages through the
 * cached entries, anti_entropy_chunk at a time, and repairs those that
 * really differ from the store. Stops early when the node closes. */
static void repair(work_t *w)
{
    const syncd_node_options_t *o = &w->node->opts;
    json_t *page = NULL;
    char *after = NULL;
    size_t n;

    do {
        if (o->ae_chunk_hook != NULL)
            o->ae_chunk_hook(o->hook_data, w->coll->name);
        if (atomic_load(&w->node->stop)) {
            w->status = SYNCD_ECANCELED;
            break;
        }
        w->status = syncd_store_cache_page(w->node->store, &page, w->coll->name,
                                           after, o->anti_entropy_chunk, NULL);
        n = json_array_size(page);
        if (w->status == 0 && n > 0)
            w->status = compare_chunk(w, page);
        free(after);
        after = NULL;
        if (w->status == 0 && n == o->anti_entropy_chunk) {
            after = strdup(member_str(json_array_get(page, n - 1), "id"));
            if (after == NULL)
                w->status = SYNCD_ENOMEM;
        }
        json_decref(page);
        page = NULL;
    } while (w->status == 0 && after != NULL);
    free(after);
    if (w->status != 0 && w->status != SYNCD_ECANCELED)
        w->status = SYNCD_EBACKEND;
}

/* Purges old tombstones of every collection of the store, keeping in
 * w->gone what went (the bus forgets those ids on the loop). */
static void purge(work_t *w)
{
    json_t *colls = NULL, *name, *gone;
    size_t i, purged, batch = w->node->opts.purge_batch, left = batch;

    w->status = syncd_store_collections(w->node->store, &colls, NULL);
    w->gone = json_object();
    json_array_foreach (colls, i, name) {
        if (atomic_load(&w->node->stop) || (batch > 0 && left == 0))
            break;
        purged = 0;
        gone = NULL;
        if (syncd_store_purge(w->node->store, json_string_value(name), left,
                              &purged, &gone, NULL) != 0)
            w->status = SYNCD_EBACKEND;
        w->delta.tombstones_purged += purged;
        if (batch > 0)
            left -= purged < left ? purged : left;
        if (json_object_size(gone) > 0 && w->gone != NULL)
            json_object_set(w->gone, json_string_value(name), gone);
        json_decref(gone);
    }
    json_decref(colls);
    w->more = batch > 0 && left == 0 && w->status == 0;
}

static void work_run(uv_work_t *req)
{
    work_t *w = req->data;
    item_t *item;

    switch (w->kind) {
    case WORK_LIST:
        w->status = syncd_store_collections(w->node->store, &w->colls, NULL);
        break;
    case WORK_BATCH:
        /* The rest of a batch is not worth running once the node closes:
         * work_done() drops it. A resync needs nothing here: its pass
         * starts once the item finishes. */
        for (item = w->items; item != NULL && !atomic_load(&w->node->stop);
             item = item->next) {
            if (item->kind == ITEM_EVENT && item->refetch)
                refetch(w, member_str(item->event, "id"));
            else if (item->kind == ITEM_EVENT && item->event != NULL)
                apply_event(w, item->event);
        }
        break;
    case WORK_PASS:
        repair(w);
        break;
    case WORK_PURGE:
        purge(w);
        break;
    case WORK_FLUSH:
        syncd_store_cache_flush(w->node->store);
        break;
    }
}

/* ---- Finishing items (loop thread) --------------------------------------- */

/* Merges what (coll -> {id: version}) into *into, created on first use;
 * on out of memory what is left is lost (those records stay). */
static void merge_ids(json_t **into, const json_t *what)
{
    const char *coll;
    json_t *ids, *to;

    if (*into == NULL && (*into = json_object()) == NULL)
        return;
    json_object_foreach ((json_t *)what, coll, ids) {
        to = json_object_get(*into, coll);
        if (to == NULL) {
            to = json_object();
            if (json_object_set_new(*into, coll, to) != 0)
                return;
        }
        json_object_update(to, ids);
    }
}

/* Counts how a forget of purged ids went; a failed one is asked again
 * at the next purge period. */
static void on_forgotten(int status, size_t forgotten, void *payload)
{
    breq_t *r = payload;
    syncd_node_t *node = breq_take(r);

    if (node != NULL)
        node->forgets_sent--;
    if (node != NULL && status != 0) {
        node->stats.forget_failures++;
        merge_ids(&node->unforgotten, r->forget);
    } else if (node != NULL) {
        node->stats.purged_ids_forgotten += forgotten;
        /* The next page of a long backlog once its forgets are done. */
        if (node->forgets_sent == 0 && node->purge_more)
            start_purge(node);
    }
    json_decref(r->forget);
    free(r);
}

/* Sends one forget of chunk (taken) for coll. */
static void forget_chunk(syncd_node_t *node, const char *coll, json_t *chunk)
{
    breq_t *r = breq_new(node);
    json_t *forget = json_pack("{s:o}", coll, chunk);

    if (r == NULL || forget == NULL ||
        syncd_bus_forget(node->bus, coll, chunk, on_forgotten, r) != 0) {
        node->stats.forget_failures++;
        if (forget != NULL)
            merge_ids(&node->unforgotten, forget);
        if (r != NULL)
            breq_take(r);
        free(r);
        json_decref(forget);
        return;
    }
    r->forget = forget;
    node->forgets_sent++;
}

/* Has the bus forget the deduplication records of the ids a purge removed
 * (gone: coll -> {id: version}) and of those whose forget failed before,
 * SYNCD_BUS_MAX_FORGET ids per call. */
static void forget_purged(syncd_node_t *node, const json_t *gone)
{
    const char *coll, *id;
    json_t *all = node->unforgotten, *ids, *v, *chunk = NULL;

    node->unforgotten = NULL;
    merge_ids(&all, gone);
    json_object_foreach (all, coll, ids) {
        json_object_foreach (ids, id, v) {
            if (chunk == NULL && (chunk = json_object()) == NULL)
                break;
            json_object_set(chunk, id, v);
            if (json_object_size(chunk) == SYNCD_BUS_MAX_FORGET) {
                forget_chunk(node, coll, chunk);
                chunk = NULL;
            }
        }
        if (chunk != NULL)
            forget_chunk(node, coll, chunk);
        chunk = NULL;
    }
    json_decref(all);
}

/* Records an item as done: its seq as applied, its event to the
 * watchers. */
static void finish_item(coll_t *c, item_t *item)
{
    syncd_node_t *node = c->node;
    syncd_node_watch_t *w;

    switch (item->kind) {
    case ITEM_EVENT:
        c->seq = item->seq;
        c->in_store = 1;
        c->touched = uv_now(node->loop);
        /* Without a cache the store is the truth: an event is applied
         * once recorded and handed to the watchers. */
        if (!node->cached)
            node->stats.events_applied++;
        for (w = c->watchers; w != NULL; w = w->next)
            watch_offer(w, item->seq, item->event);
        break;
    case ITEM_RESYNC:
        /* A watcher lost its place when the seq moved past what it saw:
         * it is told now. The node may also have missed changes that
         * reached the store but no event (e.g. after Redis lost its
         * data): a pass repairs what the node holds, and when it repairs
         * anything the watchers are told then (pass_done()). One that saw
         * every seq of a collection the pass finds unchanged lost nothing
         * and goes on. */
        node->stats.resyncs++;
        c->seq = item->seq;
        for (w = c->watchers; w != NULL; w = w->next) {
            if (w->started && w->last != item->seq)
                watch_end(w, SYNCD_NODE_RESYNC, item->seq);
        }
        start_pass(c, NULL);
        break;
    }
    item_free(item);
    sweep(c);
}

static void on_listed(work_t *w, int status);

/* Ends a pass: counts its repairs, tells c's watchers when a resync's pass
 * repaired anything, and reports to its run. */
static void pass_done(work_t *w)
{
    syncd_node_t *node = w->node;
    coll_t *c = w->coll;
    syncd_node_watch_t *wa;

    c->passes--;
    node->stats.anti_entropy_repairs += w->repaired;
    if (w->run == NULL && w->repaired > 0 && !node->closing) {
        for (wa = c->watchers; wa != NULL; wa = wa->next) {
            if (wa->started)
                watch_end(wa, SYNCD_NODE_RESYNC, wa->last);
        }
        sweep(c);
    }
    if (w->run != NULL)
        run_release(w->run, w->status, w->repaired);
}

static void work_done(uv_work_t *req, int status)
{
    work_t *w = req->data;
    syncd_node_t *node = w->node;
    coll_t *c = w->coll;

    node->works--;
    if (status == UV_ECANCELED)
        w->status = SYNCD_ECANCELED;
    add_stats(&node->stats, &w->delta);
    switch (w->kind) {
    case WORK_LIST:
        on_listed(w, w->status);
        break;
    case WORK_BATCH:
        c->running = NULL;
        /* A watcher callback may close the node midway: the rest of the
         * batch is then dropped like the queue. */
        while (w->items != NULL) {
            item_t *item = w->items;
            w->items = item->next;
            if (node->closing)
                item_free(item);
            else
                finish_item(c, item);
        }
        pump(c);
        break;
    case WORK_PASS:
        pass_done(w);
        break;
    case WORK_PURGE:
        node->purging = 0;
        if (!node->closing)
            forget_purged(node, w->gone);
        /* The next page of a long backlog at once, not a period later
         * (or, while its forgets are unanswered, when they are). */
        node->purge_more = w->more;
        if (w->more)
            start_purge(node);
        break;
    case WORK_FLUSH:
        node->flushing = 0;
        break;
    }
    json_decref(w->colls);
    json_decref(w->gone);
    free(w);
    maybe_finish_close(node);
}

/* Queues a new work of kind for node on the thread pool with coll, run and
 * items set, into *out when out is not NULL; SYNCD_ENOMEM or
 * SYNCD_EBACKEND (nothing queued) when it cannot. */
static int queue_work(syncd_node_t *node, work_kind_t kind, coll_t *coll,
                      ae_run_t *run, item_t *items, work_t **out)
{
    work_t *w = calloc(1, sizeof(*w));

    if (out != NULL)
        *out = NULL;
    if (w == NULL)
        return SYNCD_ENOMEM;
    w->req.data = w;
    w->kind = kind;
    w->node = node;
    w->coll = coll;
    w->run = run;
    w->items = items;
    if (uv_queue_work(node->loop, &w->req, work_run, work_done) != 0) {
        free(w);
        return SYNCD_EBACKEND;
    }
    node->works++;
    if (out != NULL)
        *out = w;
    return 0;
}

/* Detaches up to max items from the head of c's queue into *last (their
 * number into *n) and returns the first. */
static item_t *dequeue(coll_t *c, size_t max, item_t **last, size_t *n)
{
    item_t *first = c->head, *end = first;

    for (*n = 1; *n < max && end->next != NULL; (*n)++)
        end = end->next;
    c->head = end->next;
    if (c->head == NULL)
        c->tail = NULL;
    end->next = NULL;
    c->queued -= *n;
    c->node->stats.apply_queued -= *n;
    *last = end;
    return first;
}

/* Applies the event of item, c's first, on the loop when that is cheap
 * and waits for nothing: a small patch to a cached body
 * (syncd_store_cache_patch() without blocking), or an update the cache
 * has no use for (its document not cached, or cached at its version or a
 * later one, as this node's own events handed without a body are). Returns
 * 1 when the item is done with; 0 when it goes to the thread pool (marked
 * to refetch when its patch did not apply). */
static int apply_on_loop(coll_t *c, item_t *item)
{
    syncd_node_t *node = c->node;
    const json_t *ev = item->event;
    int64_t cached;
    int rc;

    if (item->kind == ITEM_EVENT && ev == NULL)
        return 1;
    if (item->kind != ITEM_EVENT || item->refetch || !patches_part(ev) ||
        syncd_json_compact_size(json_object_get(ev, "patch"), LOOP_PATCH_MAX) >
            LOOP_PATCH_MAX)
        return 0;
    rc = patch_in_place(node->store, c->name, ev, 1, &cached);
    if (rc == 1) {
        node->stats.events_applied++;
        return 1;
    }
    if (rc < 0) {
        if (rc == SYNCD_ECONFLICT)
            node->stats.hash_mismatches++;
        item->refetch = 1;
        return 0;
    }
    if (rc == 2)
        return 0;
    if (cached < 0) {
        node->stats.events_ignored_uncached++;
        return 1;
    }
    if (cached < member_int(ev, "v"))
        return 0;
    /* This node's own events find their version already cached. */
    if (cached > member_int(ev, "v"))
        node->stats.events_dropped_old++;
    else if (strcmp(member_str(ev, "origin"), node->node_id) != 0)
        node->stats.events_dropped_duplicate++;
    return 1;
}

/* Runs c's queued items, as one batch on the thread pool unless one is
 * running. Without a cache there is nothing to do off the loop, so items
 * finish at once; with one, the items at the head that apply_on_loop()
 * can finish do so (a lone small event pays no thread hand-off), in seq
 * order since nothing of c runs meanwhile. */
static void pump(coll_t *c)
{
    syncd_node_t *node = c->node;
    item_t *first, *last;
    size_t n;
    work_t *w;

    while (!node->cached && c->head != NULL && !node->closing) {
        first = dequeue(c, 1, &last, &n);
        finish_item(c, first);
    }
    while (node->cached && c->running == NULL && c->head != NULL &&
           !node->closing && apply_on_loop(c, c->head)) {
        first = dequeue(c, 1, &last, &n);
        finish_item(c, first);
    }
    if (c->running != NULL || c->head == NULL || node->closing)
        return;
    first = dequeue(c, BATCH_MAX, &last, &n);
    if (queue_work(node, WORK_BATCH, c, NULL, first, &w) != 0) {
        enqueue_front(c, first, last, n);
        return;
    }
    c->running = w;
}

/* Starts an anti-entropy pass over c on the thread pool, for run (NULL: a
 * resync's pass). Without a cache there is nothing to compare. */
static void start_pass(coll_t *c, ae_run_t *run)
{
    syncd_node_t *node = c->node;
    int rc;

    if (!node->cached || node->closing)
        return;
    if (run != NULL)
        run->pending++;
    rc = queue_work(node, WORK_PASS, c, run, NULL, NULL);
    if (rc == 0)
        c->passes++;
    else if (run != NULL)
        run_release(run, rc, 0);
}

/* Subscribes every listed collection and, for an anti-entropy run, starts
 * a pass over each collection the node knows. */
static void on_listed(work_t *w, int status)
{
    syncd_node_t *node = w->node;
    ae_run_t *run = w->run;
    size_t i;
    json_t *name;
    coll_t *c;

    if (node->closing)
        status = SYNCD_ECANCELED;
    /* Only a cache needs every collection subscribed: in the embedded
     * default, state is made when a collection is written or watched. */
    if (status == 0 && node->cached) {
        json_array_foreach (w->colls, i, name) {
            coll_get(node, json_string_value(name));
        }
    }
    if (run == NULL)
        return;
    for (c = node->colls; status == 0 && c != NULL; c = c->next) {
        coll_subscribe(c);
        start_pass(c, run);
    }
    run_release(run, status, 0);
}

/* Lists the store's collections on the thread pool, for run or (NULL) for
 * the subscriptions at open. */
static int list_collections(syncd_node_t *node, ae_run_t *run)
{
    return queue_work(node, WORK_LIST, NULL, run, NULL, NULL);
}

/* Starts a purge run, unless one is in flight or the forgets of an
 * earlier one are not answered yet (a frozen bus answers them only when
 * its timeout fails them). While forgets of purged ids keep failing (the
 * bus is away), it purges nothing more and asks those forgets again
 * instead: the tombstones it would remove wait in the store, not as ids
 * in the node's memory. */
static void start_purge(syncd_node_t *node)
{
    if (node->purging || node->closing || node->forgets_sent > 0)
        return;
    if (node->unforgotten != NULL)
        forget_purged(node, NULL);
    else if (queue_work(node, WORK_PURGE, NULL, NULL, NULL, NULL) == 0)
        node->purging = 1;
}

static void on_purge_timer(uv_timer_t *timer)
{
    start_purge(timer->data);
}

/* Queues the write of the cache's records written behind on the thread
 * pool (the cache writes only when they are due), so that no event's
 * apply waits for it. */
static void on_flush_timer(uv_timer_t *timer)
{
    syncd_node_t *node = timer->data;

    if (!node->flushing && !node->closing &&
        queue_work(node, WORK_FLUSH, NULL, NULL, NULL, NULL) == 0)
        node->flushing = 1;
}

/* Returns the tombstone purge period for a tombstone TTL of ttl_ms: a
 * quarter of it, within PURGE_MIN_MS..PURGE_MAX_MS. */
static uint64_t purge_period_ms(int64_t ttl_ms)
{
    int64_t ms = ttl_ms / 4;

    if (ms < PURGE_MIN_MS)
        ms = PURGE_MIN_MS;
    if (ms > PURGE_MAX_MS)
        ms = PURGE_MAX_MS;
    return (uint64_t)ms;
}

/* ---- Public API ---------------------------------------------------------- */

/* Starts an anti-entropy run unless the last one is still going. */
static void on_timer(uv_timer_t *timer)
{
    syncd_node_t *node = timer->data;

    if (node->ae_runs == 0)
        syncd_node_anti_entropy(node, NULL, NULL);
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
    if (opts->anti_entropy_chunk == 0 ||
        opts->anti_entropy_chunk > SYNCD_MAX_VERSIONS_IDS)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "node: anti_entropy_chunk must be 1..%d",
                               SYNCD_MAX_VERSIONS_IDS);
    if (opts->max_collections == 0 || opts->coll_idle_ms <= 0)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "node: max_collections and coll_idle_ms "
                               "must be positive");
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
    uv_timer_init(loop, &node->purge);
    uv_timer_init(loop, &node->reap);
    uv_timer_init(loop, &node->outbox);
    uv_timer_init(loop, &node->flush);
    uv_timer_init(loop, &node->wait);
    node->timer.data = node->retry.data = node->purge.data = node->reap.data =
        node->outbox.data = node->flush.data = node->wait.data = node;
    node->timers_open = 7;
    uv_timer_start(&node->reap, on_reap, (uint64_t)opts->coll_idle_ms,
                   (uint64_t)opts->coll_idle_ms);
    node->crash_after = test_crash_after();
    uv_timer_start(&node->outbox, on_outbox_timer, 0, OUTBOX_POLL_MS);
    /* It polls: it never keeps a loop that has nothing else to do alive. */
    uv_unref((uv_handle_t *)&node->outbox);
    if (node->cached) {
        uv_timer_start(&node->flush, on_flush_timer, FLUSH_POLL_MS,
                       FLUSH_POLL_MS);
        /* Like the outbox poll, it keeps no idle loop alive. */
        uv_unref((uv_handle_t *)&node->flush);
    }
    if (node->cached && opts->anti_entropy_interval_ms > 0)
        uv_timer_start(&node->timer, on_timer,
                       (uint64_t)opts->anti_entropy_interval_ms,
                       (uint64_t)opts->anti_entropy_interval_ms);
    if (opts->tombstone_ttl_ms >= 0) {
        uint64_t period = purge_period_ms(opts->tombstone_ttl_ms);

        uv_timer_start(&node->purge, on_purge_timer, period, period);
    }
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
    for (size_t i = 0; node->pubs != NULL && i < PUB_SLOTS; i++) {
        free(node->pubs[i].coll);
        free(node->pubs[i].id);
    }
    free(node->pubs);
    free(node->buckets);
    json_decref(node->unforgotten);
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
    uv_close((uv_handle_t *)&node->purge, on_timer_closed);
    uv_close((uv_handle_t *)&node->reap, on_timer_closed);
    uv_close((uv_handle_t *)&node->outbox, on_timer_closed);
    uv_close((uv_handle_t *)&node->flush, on_timer_closed);
    uv_close((uv_handle_t *)&node->wait, on_timer_closed);
    while (node->waits != NULL) {
        syncd_node_pub_t *pw = node->waits;

        node->waits = pw->next;
        if (pw->cb != NULL)
            pw->cb(SYNCD_ECANCELED, 0, pw->payload);
        syncd_node_pub_free(pw);
    }
    for (c = node->colls; c != NULL; c = c->next) {
        syncd_bus_unsubscribe(c->sub);
        c->sub = NULL;
        drop_queue(c);
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
 * object, without seq and sig): an update whose diff is larger than the
 * body carries the body as a root replace, and only an event over
 * max_event_bytes is an invalidate (patch and merge null). Sizes are
 * counted by syncd_json_compact_size(), never by serializing, and only as
 * far as the comparison needs, so a small change to a large document costs
 * the size of the change. */
static int build_event(json_t **out, const syncd_node_t *node,
                       const syncd_change_t *change)
{
    const syncd_doc_t *doc = change->doc;
    /* Room for "seq" and "sig" besides what is measured here. */
    size_t limit = node->opts.max_event_bytes > EVENT_ROOM
                       ? node->opts.max_event_bytes - EVENT_ROOM
                       : 1;
    json_t *ev, *patch = NULL, *merge = NULL;
    char ts[32];

    *out = NULL;
    if (change->op == SYNCD_CHANGE_CREATE) {
        patch = json_pack("[{s:s,s:s,s:O}]", "op", "add", "path", "", "value",
                          doc->body);
        merge = json_incref(doc->body);
    } else if (change->op == SYNCD_CHANGE_UPDATE) {
        /* A diff larger than the body goes as the body, a root replace;
         * the body is measured only up to the diff's size. */
        size_t diff = change->patch != NULL
                          ? syncd_json_compact_size(change->patch, limit)
                          : 0;

        merge = json_incref(change->merge);
        if (syncd_json_compact_size(doc->body, diff) < diff)
            patch = json_pack("[{s:s,s:s,s:O}]", "op", "replace", "path", "",
                              "value", doc->body);
        else
            patch = json_incref(change->patch);
    }
    format_ms(ts, doc->mtime_ms);
    ev = json_pack("{s:s,s:s,s:s,s:I,s:I,s:o?,s:o?,s:s,s:s,s:s}", "op",
                   syncd_change_op_name(change->op), "coll", doc->coll, "id",
                   doc->id, "v", (json_int_t)doc->version, "base",
                   (json_int_t)change->base, "patch", patch, "merge", merge,
                   "h", doc->hash, "origin", node->node_id, "ts", ts);
    if (ev == NULL)
        return SYNCD_ENOMEM;
    if (syncd_json_compact_size(ev, limit) > limit) {
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

/* A record's outbox ack on the thread pool. Until a worker takes it
 * (version set to -1 atomically), the loop may raise its version instead
 * of queuing another ack of the same record. */
typedef struct ack_work {
    uv_work_t req;
    syncd_node_t *node;
    struct ack_work *prev, *next; /* in node->acks */
    char *coll, *id;
    int64_t version;
} ack_work_t;

/* Most queued acks queue_ack() looks through for one of the same record. */
#define ACK_MERGE_SCAN 16

static void ack_run(uv_work_t *req)
{
    ack_work_t *a = req->data;
    int64_t version = __atomic_exchange_n(&a->version, -1, __ATOMIC_ACQ_REL);
    syncd_error_t err;

    syncd_error_clear(&err);
    if (syncd_store_outbox_ack(a->node->store, a->coll, a->id, version, &err) !=
        0)
        fprintf(stderr, "syncd: outbox ack of %s/%s v%lld failed: %s\n",
                a->coll, a->id, (long long)version, err.message);
}

static void ack_done(uv_work_t *req, int status)
{
    ack_work_t *a = req->data;
    syncd_node_t *node = a->node;

    (void)status;
    node->works--;
    if (a->prev != NULL)
        a->prev->next = a->next;
    else
        node->acks = a->next;
    if (a->next != NULL)
        a->next->prev = a->prev;
    free(a->coll);
    free(a->id);
    free(a);
    maybe_finish_close(node);
}

/* Raises the version of an ack of coll/id queued and not yet taken by a
 * worker to version; 1 when one covers version now, else 0. */
static int merge_ack(syncd_node_t *node, const char *coll, const char *id,
                     int64_t version)
{
    ack_work_t *a = node->acks;

    for (int n = 0; a != NULL && n < ACK_MERGE_SCAN; a = a->next, n++) {
        int64_t cur = __atomic_load_n(&a->version, __ATOMIC_ACQUIRE);

        if (strcmp(a->id, id) != 0 || strcmp(a->coll, coll) != 0)
            continue;
        while (cur >= 0 && cur < version &&
               !__atomic_compare_exchange_n(&a->version, &cur, version, 0,
                                            __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            ;
        if (cur >= 0)
            return 1;
    }
    return 0;
}

/* Drops coll/id's outbox markers up to version (all published) off the
 * loop (best effort: a record left with markers is republished, and the
 * bus drops the duplicates); merged into an ack of the record still
 * queued when there is one. */
static void queue_ack(syncd_node_t *node, const char *coll, const char *id,
                      int64_t version)
{
    ack_work_t *a;

    if (merge_ack(node, coll, id, version))
        return;
    a = calloc(1, sizeof(*a));
    if (a == NULL || (a->coll = strdup(coll)) == NULL ||
        (a->id = strdup(id)) == NULL)
        goto fail;
    a->node = node;
    a->version = version;
    a->req.data = a;
    if (uv_queue_work(node->loop, &a->req, ack_run, ack_done) != 0)
        goto fail;
    node->works++;
    a->next = node->acks;
    if (node->acks != NULL)
        node->acks->prev = a;
    node->acks = a;
    return;
fail:
    if (a != NULL) {
        free(a->coll);
        free(a->id);
    }
    free(a);
}

/* coll/id's slot, NULL when it has none; with claim, it takes the slot
 * (NULL on out of memory). */
static pub_slot_t *pub_slot(syncd_node_t *node, const char *coll,
                            const char *id, int claim)
{
    uint64_t h = name_hash(coll) * 31 ^ name_hash(id);
    pub_slot_t *slot;
    char *c, *i;

    if (node->pubs == NULL &&
        (!claim || (node->pubs = calloc(PUB_SLOTS, sizeof(*slot))) == NULL))
        return NULL;
    slot = &node->pubs[(h ^ (h >> 29)) & (PUB_SLOTS - 1)];
    if (slot->coll != NULL && strcmp(slot->coll, coll) == 0 &&
        strcmp(slot->id, id) == 0)
        return slot;
    if (!claim)
        return NULL;
    c = strdup(coll);
    i = strdup(id);
    if (c == NULL || i == NULL) {
        free(c);
        free(i);
        return NULL;
    }
    free(slot->coll);
    free(slot->id);
    slot->coll = c;
    slot->id = i;
    slot->handed = slot->confirmed = slot->failed = slot->handed_ms = 0;
    return slot;
}

/* Events of one document, all handed to the bus at once in version order
 * (the bus keeps their order and refuses an event whose predecessor is
 * not published, so a failure cannot let a later version through); once
 * all are published its outbox is acked at ack_version. The versions of
 * the document up to settled are published already (they precede the
 * record's oldest pending marker), so the bus may take the first event
 * even when it has no record of its predecessor. */
typedef struct chain {
    syncd_node_t *node;
    json_t *events;       /* published first */
    syncd_bus_msg_t *msg; /* then this one, encoded already, or NULL */
    int64_t last_v;       /* the version of the last event */
    size_t outstanding;   /* publishes handed to the bus, not yet completed */
    int status;           /* the first failure */
    int64_t seq;          /* seq of the last event completed */
    char *coll, *id;
    int64_t ack_version;
    int64_t settled;
    syncd_node_publish_cb cb;
    void *payload;
} chain_t;

static void chain_free(chain_t *ch)
{
    json_decref(ch->events);
    syncd_bus_msg_free(ch->msg);
    free(ch->coll);
    free(ch->id);
    free(ch);
}

/* One publish of the chain completed; the last one finishes it (ack when
 * all were published, then report). */
static void chain_step(int status, int64_t seq, void *payload)
{
    chain_t *ch = payload;
    syncd_node_publish_cb cb = ch->cb;
    void *cb_payload = ch->payload;
    int64_t last_v = ch->last_v;
    pub_slot_t *slot;

    if (status != 0 && ch->status == 0)
        ch->status = status;
    if (status == 0)
        ch->seq = seq;
    if (--ch->outstanding > 0)
        return;
    status = ch->status;
    seq = ch->seq;
    slot = pub_slot(ch->node, ch->coll, ch->id, 0);
    if (slot != NULL && status == 0 && last_v > slot->confirmed) {
        slot->confirmed = last_v;
    } else if (slot != NULL && status != 0) {
        slot->handed = slot->confirmed;
        slot->failed = last_v;
    }
    if (status == 0 && ch->ack_version > 0)
        queue_ack(ch->node, ch->coll, ch->id, ch->ack_version);
    chain_free(ch);
    if (cb != NULL)
        cb(status, seq, cb_payload);
}

/* Hands event i of the chain to the bus; 0 or the synchronous failure. */
static int chain_publish(chain_t *ch, size_t i)
{
    breq_t *r = breq_new(ch->node);
    int rc;

    if (r == NULL)
        return SYNCD_ENOMEM;
    r->cb = chain_step;
    r->payload = ch;
    if (i == json_array_size(ch->events)) {
        syncd_bus_msg_t *msg = ch->msg;

        ch->msg = NULL;
        rc = syncd_bus_publish_msg(ch->node->bus, msg, ch->settled,
                                   on_published, r);
    } else {
        rc = syncd_bus_publish_in_order(ch->node->bus,
                                        json_array_get(ch->events, i),
                                        ch->settled, on_published, r);
    }
    if (rc != 0) {
        breq_take(r);
        free(r);
        return rc;
    }
    ch->outstanding++;
    return 0;
}

/* Starts publishing events (stolen, in version order) of coll/id in
 * order, then msg (stolen, may be NULL), an event encoded already; the
 * last of them is of version last_v, committed at last_ms. The versions
 * up to settled are published already (settled < 0: those before the
 * first event); ack_version 0 acks nothing. cb is called once, unless
 * this fails at once (then it is not called and an error is returned). */
static int chain_start(syncd_node_t *node, json_t *events, syncd_bus_msg_t *msg,
                       int64_t last_v, int64_t last_ms, const char *coll,
                       const char *id, int64_t settled, int64_t ack_version,
                       syncd_node_publish_cb cb, void *payload)
{
    size_t n = json_array_size(events) + (msg != NULL);
    chain_t *ch;
    pub_slot_t *slot;
    int rc;

    if (n == 0) {
        json_decref(events);
        return SYNCD_EINVAL;
    }
    ch = calloc(1, sizeof(*ch));
    if (ch == NULL || (ch->coll = strdup(coll)) == NULL ||
        (ch->id = strdup(id)) == NULL) {
        json_decref(events);
        syncd_bus_msg_free(msg);
        if (ch != NULL)
            chain_free(ch);
        return SYNCD_ENOMEM;
    }
    ch->node = node;
    ch->events = events;
    ch->msg = msg;
    ch->last_v = last_v;
    ch->ack_version = ack_version;
    ch->settled = settled >= 0 ? settled
                  : json_array_size(events) > 0
                      ? member_int(json_array_get(events, 0), "v") - 1
                      : last_v - 1;
    ch->cb = cb;
    ch->payload = payload;
    rc = chain_publish(ch, 0);
    if (rc != 0) {
        slot = pub_slot(node, coll, id, 0);
        if (slot != NULL)
            slot->failed = last_v;
        chain_free(ch);
        return rc;
    }
    /* A later event that cannot be handed over fails the chain once the
     * ones handed over complete; the bus refuses none after it. */
    for (size_t i = 1; i < n; i++) {
        rc = chain_publish(ch, i);
        if (rc != 0) {
            ch->status = rc;
            break;
        }
    }
    slot = pub_slot(node, coll, id, 0);
    if (slot != NULL && ch->status != 0) {
        slot->handed = slot->confirmed;
        slot->failed = last_v;
    } else if (slot != NULL) {
        if (last_v > slot->handed)
            slot->handed = last_v;
        if (last_ms > slot->handed_ms)
            slot->handed_ms = last_ms;
    }
    resume_waits(node, coll, id);
    return 0;
}

static void on_published(int status, int64_t seq, void *payload)
{
    breq_t *r = payload;
    syncd_node_t *node = breq_take(r);

    if (node != NULL && r->cb != NULL)
        r->cb(status, seq, r->payload);
    free(r);
}

/* The index of the first of pending's markers (oldest first, so in version
 * order) of a version after v: the array's size when there is none. The
 * search runs from the newest, since a publish looks only at the few
 * markers after what it has handed. */
static size_t first_after(const json_t *pending, int64_t v)
{
    size_t i = json_array_size(pending);

    while (i > 0 && member_int(json_array_get(pending, i - 1), "v") > v)
        i--;
    return i;
}

/* Whether a publish of the document of slot whose pending markers
 * (borrowed) are those of the record before it should wait: some of them
 * are after slot->handed, and all of those were committed by this node
 * (each such commit is published by its own syncd_node_publish()) and
 * none is of a chain that failed. A slot that has handed nothing yet
 * (new, or taken back from another document) knows too little to wait. */
static int should_wait(const syncd_node_t *node, const pub_slot_t *slot,
                       const json_t *pending)
{
    size_t i, n = 0;

    if (slot == NULL || slot->handed == 0)
        return 0;
    for (i = first_after(pending, slot->handed); i < json_array_size(pending);
         i++) {
        json_t *m = json_array_get(pending, i);
        int64_t v = member_int(m, "v");

        if (v <= slot->failed ||
            strcmp(member_str(m, "by"), node->node_id) != 0 ||
            ++n > WAIT_MAX_VERSIONS)
            return 0;
    }
    return n > 0;
}

/* Publishes pw (the caller's still; a chain started takes its encoded
 * event): the pending markers not yet handed to the bus as invalidate
 * events, then its own event, in one chain. With may_wait, when
 * should_wait() says its earlier versions are on their way, it does not
 * and returns 1. Returns 0, 1 or the chain's synchronous failure. */
static int publish_or_wait(syncd_node_t *node, syncd_node_pub_t *pw,
                           int may_wait)
{
    json_t *events, *m = json_array_get(pw->pending, 0);
    syncd_bus_msg_t *msg;
    int64_t skip = 0, settled;
    pub_slot_t *slot;
    size_t i;

    /* The versions before the record's oldest pending marker are
     * published (only an ack drops a marker). Versions up to the slot's
     * handed are ahead on the bus already and are left out, but they are
     * not settled until the bus confirmed them: the bus must refuse this
     * version while one of them may still fail. A version not after
     * handed goes the long way: a late publish, or a document created
     * anew after its tombstone was purged, which also starts the slot
     * over. A create is that only when it is newer than all that was
     * handed, as the bus judges it (syncd_bus_pub_check()): the late
     * publish of a create, committed before versions whose publishes
     * went first, must not make the slot forget them (the later versions
     * would then wait for publishes that came already). */
    settled = (m != NULL ? member_int(m, "v") : pw->version) - 1;
    slot = pub_slot(node, pw->coll, pw->id, 1);
    if (slot != NULL && pw->version > slot->handed) {
        if (may_wait && should_wait(node, slot, pw->pending))
            return 1;
        skip = slot->handed;
        if (slot->confirmed > settled)
            settled = slot->confirmed;
    } else if (slot != NULL && pw->op == SYNCD_CHANGE_CREATE &&
               pw->mtime_ms > slot->handed_ms) {
        slot->handed = slot->confirmed = slot->failed = slot->handed_ms = 0;
    }
    events = json_array();
    if (events == NULL)
        return SYNCD_ENOMEM;
    for (i = first_after(pw->pending, skip); i < json_array_size(pw->pending);
         i++) {
        m = json_array_get(pw->pending, i);
        if (json_array_append_new(events, marker_event(pw->coll, pw->id, m)) !=
            0) {
            json_decref(events);
            return SYNCD_ENOMEM;
        }
    }
    msg = pw->msg;
    pw->msg = NULL;
    return chain_start(node, events, msg, pw->version, pw->mtime_ms, pw->coll,
                       pw->id, settled, pw->ack_version, pw->cb, pw->payload);
}

/* The link to the waiting publish of coll/id of the lowest version, or
 * NULL when none waits. */
static syncd_node_pub_t **lowest_wait(syncd_node_t *node, const char *coll,
                                      const char *id)
{
    syncd_node_pub_t **low = NULL;

    for (syncd_node_pub_t **l = &node->waits; *l != NULL; l = &(*l)->next)
        if (strcmp((*l)->coll, coll) == 0 && strcmp((*l)->id, id) == 0 &&
            (low == NULL || (*l)->version < (*low)->version))
            low = l;
    return low;
}

/* Publishes the waiting publishes of coll/id that need wait no longer,
 * lowest version first (a later one waits for the earlier ones), and
 * with force the lowest one whatever it waits for. */
static void resume_one(syncd_node_t *node, const char *coll, const char *id,
                       int force)
{
    syncd_node_pub_t **low, *pw;
    int rc;

    while ((low = lowest_wait(node, coll, id)) != NULL) {
        pw = *low;
        if (force &&
            should_wait(node, pub_slot(node, coll, id, 0), pw->pending))
            node->stats.publish_waits_expired++;
        rc = publish_or_wait(node, pw, !force);
        if (rc == 1)
            return;
        force = 0;
        *low = pw->next;
        if (rc != 0 && pw->cb != NULL)
            pw->cb(rc, 0, pw->payload);
        syncd_node_pub_free(pw);
    }
}

/* Called when a version of coll/id was handed to the bus: publishes the
 * waiting publishes that it let go. Not reentrant: the outer call goes on
 * with what the inner ones let go. */
static void resume_waits(syncd_node_t *node, const char *coll, const char *id)
{
    if (node->resuming || node->waits == NULL)
        return;
    node->resuming = 1;
    resume_one(node, coll, id, 0);
    node->resuming = 0;
    if (node->waits == NULL)
        uv_timer_stop(&node->wait);
}

/* Publishes what waited longer than WAIT_MAX_MS, or waits for a version
 * whose chain failed since (or whose slot went to another document): the
 * lowest waiting version of its document first, with markers for the
 * versions it waited for. */
static void on_wait_timer(uv_timer_t *t)
{
    syncd_node_t *node = t->data;
    uint64_t now = uv_now(node->loop);
    syncd_node_pub_t *pw = node->waits;

    node->resuming = 1;
    while (pw != NULL) {
        char *coll, *id;

        if (now - pw->since < WAIT_MAX_MS &&
            should_wait(node, pub_slot(node, pw->coll, pw->id, 0),
                        pw->pending)) {
            pw = pw->next;
            continue;
        }
        /* Copies: resume_one() frees the waits it publishes. */
        coll = strdup(pw->coll);
        id = strdup(pw->id);
        if (coll != NULL && id != NULL)
            resume_one(node, coll, id, 1);
        free(coll);
        free(id);
        pw = coll != NULL && id != NULL ? node->waits : pw->next;
    }
    node->resuming = 0;
    if (node->waits == NULL)
        uv_timer_stop(t);
}

void syncd_node_pub_free(syncd_node_pub_t *pub)
{
    if (pub == NULL)
        return;
    free(pub->coll);
    free(pub->id);
    json_decref(pub->pending);
    syncd_bus_msg_free(pub->msg);
    free(pub);
}

int syncd_node_prepare(const syncd_node_t *node, const syncd_change_t *change,
                       syncd_node_pub_t **out)
{
    syncd_node_pub_t *pub;
    json_t *ev = NULL;
    int rc;

    *out = NULL;
    if (change == NULL || change->op == SYNCD_CHANGE_NONE ||
        change->doc == NULL)
        return SYNCD_EINVAL;
    pub = calloc(1, sizeof(*pub));
    if (pub == NULL || (pub->coll = strdup(change->doc->coll)) == NULL ||
        (pub->id = strdup(change->doc->id)) == NULL) {
        syncd_node_pub_free(pub);
        return SYNCD_ENOMEM;
    }
    pub->version = change->doc->version;
    pub->mtime_ms = change->doc->mtime_ms;
    pub->op = change->op;
    pub->pending = json_incref(change->pending);
    /* A store without the outbox option left nothing to ack. */
    pub->ack_version =
        json_array_size(change->doc->outbox) > 0 ? change->doc->version : 0;
    rc = build_event(&ev, node, change);
    if (rc == 0)
        rc = syncd_bus_encode(node->bus, ev, &pub->msg);
    json_decref(ev);
    if (rc != 0) {
        syncd_node_pub_free(pub);
        return rc;
    }
    *out = pub;
    return 0;
}

int syncd_node_publish(syncd_node_t *node, const syncd_change_t *change,
                       syncd_node_publish_cb cb, void *payload)
{
    syncd_node_pub_t *pub;
    int rc;

    if (node->closing)
        return SYNCD_ECANCELED;
    if (change != NULL && change->op == SYNCD_CHANGE_NONE) {
        if (cb != NULL)
            cb(0, 0, payload);
        return 0;
    }
    rc = syncd_node_prepare(node, change, &pub);
    if (rc != 0)
        return rc;
    return syncd_node_publish_prepared(node, pub, cb, payload);
}

int syncd_node_publish_prepared(syncd_node_t *node, syncd_node_pub_t *pub,
                                syncd_node_publish_cb cb, void *payload)
{
    int rc = 0;

    if (node->closing)
        rc = SYNCD_ECANCELED;
    else if (pub == NULL)
        rc = SYNCD_EINVAL;
    /* The test hook of node.h: die between the commit and its publish. */
    else if (node->crash_after > 0 && ++node->commits == node->crash_after)
        raise(SIGKILL);
    else if (coll_get(node, pub->coll) == NULL)
        rc = SYNCD_ENOMEM;
    if (rc != 0) {
        syncd_node_pub_free(pub);
        return rc;
    }
    pub->cb = cb;
    pub->payload = payload;
    rc = publish_or_wait(node, pub, 1);
    if (rc != 1) {
        syncd_node_pub_free(pub);
        return rc;
    }
    pub->since = uv_now(node->loop);
    if (node->waits == NULL)
        uv_timer_start(&node->wait, on_wait_timer, WAIT_POLL_MS, WAIT_POLL_MS);
    pub->next = node->waits;
    node->waits = pub;
    return 0;
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
 * min age, in order, acked up to the last of them once published. The
 * versions this node's bus confirmed already (a publish whose ack is still
 * on its way, e.g. behind a slow store) are not sent again, only acked. */
static void ob_record(ob_run_t *run, const char *coll, const json_t *rec,
                      int64_t now)
{
    const json_t *ob = json_object_get(rec, "ob");
    const char *id = member_str(rec, "id");
    const pub_slot_t *slot = pub_slot(run->node, coll, id, 0);
    int64_t confirmed = slot != NULL ? slot->confirmed : 0, done = 0;
    json_t *events = json_array();
    json_t *m;
    size_t i;

    json_array_foreach (ob, i, m) {
        if (now - member_int(m, "t") < run->min_age_ms)
            break;
        if (member_int(m, "v") <= confirmed) {
            done = member_int(m, "v");
            continue;
        }
        if (events == NULL ||
            json_array_append_new(events, marker_event(coll, id, m)) != 0) {
            json_decref(events);
            return;
        }
    }
    if (json_array_size(events) == 0) {
        json_decref(events);
        if (done > 0)
            queue_ack(run->node, coll, id, done);
        return;
    }
    run->chains++;
    m = json_array_get(ob, i - 1);
    if (chain_start(run->node, events, NULL, member_int(m, "v"),
                    member_int(m, "t"), coll, id, -1, member_int(m, "v"),
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
    rc = coll_open(node, &c, coll, err);
    if (rc != 0)
        return rc;
    w = calloc(1, sizeof(*w));
    if (w == NULL || (prefix != NULL && (w->prefix = strdup(prefix)) == NULL)) {
        free(w);
        coll_reap(c);
        return syncd_error_set(err, SYNCD_ENOMEM, "node: out of memory");
    }
    w->prefix_len = prefix != NULL ? strlen(prefix) : 0;
    w->coll = c;
    w->since = since;
    w->cb = cb;
    w->payload = payload;
    w->next = c->watchers;
    c->watchers = w;
    want_bodies(c);
    node->stats.watchers++;
    if (c->ready)
        watch_start(w);
    *out = w;
    return 0;
}

void syncd_node_unwatch(syncd_node_watch_t *watch)
{
    coll_t *c;

    if (watch == NULL)
        return;
    c = watch->coll;
    watch->dead = 1;
    want_bodies(c);
    sweep(c);
    coll_reap(c);
}

int syncd_node_hold(syncd_node_t *node, const char *coll, syncd_error_t *err)
{
    coll_t *c;
    int rc;

    if (node->closing)
        return syncd_error_set(err, SYNCD_ECANCELED, "node: closing");
    rc = syncd_validate_collection(coll, err);
    if (rc == 0)
        rc = coll_open(node, &c, coll, err);
    if (rc == 0)
        c->holds++;
    return rc;
}

void syncd_node_note_read(syncd_node_t *node, const char *coll)
{
    coll_t *c;

    if (!node->cached || node->closing || coll_find(node, coll) != NULL)
        return;
    c = coll_get(node, coll);
    if (c != NULL && !c->ready)
        c->pass_when_ready = 1;
}

void syncd_node_release(syncd_node_t *node, const char *coll, int committed)
{
    coll_t *c = coll_find(node, coll);

    if (c == NULL || c->holds == 0)
        return;
    c->holds--;
    if (committed) {
        c->in_store = 1;
        c->touched = uv_now(node->loop);
    }
    coll_reap(c);
}

int64_t syncd_node_seq(const syncd_node_t *node, const char *coll)
{
    const coll_t *c = coll_find(node, coll);

    return c != NULL ? c->seq : 0;
}

/* Orders collections by their last activity, the most recent first. */
static int by_touched_desc(const void *a, const void *b)
{
    const coll_t *x = *(const coll_t *const *)a, *y = *(const coll_t *const *)b;

    return x->touched < y->touched ? 1 : x->touched > y->touched ? -1 : 0;
}

json_t *syncd_node_seqs(const syncd_node_t *node, size_t max)
{
    coll_t **all = NULL;
    json_t *out = json_object();
    size_t n = 0;

    if (out == NULL || node->ncolls == 0)
        return out;
    all = malloc(node->ncolls * sizeof(*all));
    if (all == NULL) {
        json_decref(out);
        return NULL;
    }
    for (coll_t *c = node->colls; c != NULL && n < node->ncolls; c = c->next)
        if (c->ready)
            all[n++] = c;
    qsort(all, n, sizeof(*all), by_touched_desc);
    for (size_t i = 0; i < n && i < max; i++) {
        if (json_object_set_new(out, all[i]->name, json_integer(all[i]->seq)) !=
            0) {
            json_decref(out);
            out = NULL;
            break;
        }
    }
    free(all);
    return out;
}

void syncd_node_stats(const syncd_node_t *node, syncd_node_stats_t *out)
{
    *out = node->stats;
    out->collections = node->ncolls;
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
    node->ae_runs++;
    node->stats.anti_entropy_runs++;
    return 0;
}
