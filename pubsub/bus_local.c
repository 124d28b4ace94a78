/* bus_local.c - the in-process change bus of the embedded default.
 *
 * Same contract as the Redis bus, inside one process: each collection has a
 * counter that gives contiguous seqs, a replay log bounded by
 * event_log_len, and the deduplication state of bus.h (the version and
 * time of the last event published per document id).
 *
 * With a data_dir all three live in RocksDB (keys "c/<coll>" -> decimal
 * seq, "e/<coll>/<16 hex seq>" -> event JSON, "p/<coll>/<id>" -> "<version>
 * <ts in microseconds>"), and each publish writes its counter, event, log
 * trim and deduplication record in the same write batch, fsynced before
 * its callback runs, so that after a power loss seqs never repeat and a
 * resume from a seq never skips. A forget (syncd_bus_forget()) is a job
 * like the others that deletes the deduplication records of purged ids. The
 * loop thread never touches RocksDB: every read and write is a job, and the
 * jobs run in order, one batch at a time, on the bus's own thread (not the
 * libuv thread pool, where a batch would queue behind the store's writes
 * and their syncs, and every write's answer waits for its publish); a batch
 * reads through its own writes and commits them with one fsync (a group commit
 * of the publishes that queued meanwhile); completions run on the loop in job
 * order, so publish callbacks come in seq order. Recent events are also kept
 * in a ring for cheap delivery, as the text published until a subscriber or
 * a replay first asks for one, then decoded (a subscription that wants only
 * seqs is handed none, so a node that no one watches never decodes its
 * events); older ones are read by a job. A
 * collection's record is loaded (a job reads its counter) on first use and
 * freed when it has no subscription and no job in flight.
 *
 * Without a data_dir everything is in memory: the ring is the log (bounded
 * by min(event_log_len, 2^20) events), and a collection's record is freed
 * when idle only while it has never published (it is the log).
 *
 * Nothing is called back from inside a call: completions are queued, and
 * subscribers are fed from a uv_idle handle that runs only while there is
 * work. Each pass fires the queued completions, then hands every
 * subscription with events waiting up to PUMP_BATCH of them in seq order;
 * an event the log no longer holds becomes SYNCD_BUS_RESYNC.
 *
 * Membership: the embedded default is one node, so the bus only keeps this
 * node's last heartbeat in memory (with its wall-clock time and TTL); a
 * members read, completed by the idle pass, lists it while it is live.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rocksdb/c.h>

#include "base/rocks_options.h"
#include "pubsub/internal.h"
#include "syncd/patch.h"

/* Events handed to one subscription per idle pass, and read per job. */
#define PUMP_BATCH 1024
/* Decoded recent events kept per collection when RocksDB holds the log. */
#define RING_PERSISTED 4096
/* Bound of an in-memory log. */
#define RING_MEMORY (1u << 20)
/* Longest RocksDB key: "p/<coll>/<id>" with an id of up to 1024 bytes. */
#define KEY_MAX (BUS_NAME_MAX + 1100)

typedef struct slot {
    int64_t seq;
    json_t *event; /* decoded, once asked for; text is then NULL */
    char *text;    /* the event as published, until decoded */
    size_t len;
} slot_t;

typedef struct lcoll {
    bus_map_entry_t entry;     /* entry.name: the collection */
    struct lcoll *prev, *next; /* in the bus's list */
    struct lcoll *dirty_next;  /* in a sweep's list */
    int64_t seq;               /* last assigned */
    slot_t *ring;              /* event of seq s at ring[s % size] */
    size_t size; /* grows by doubling, up to cap, as events come */
    size_t cap;
    json_t *pubv; /* memory: id -> [version, ts] of the last published */
    int loaded;   /* the counter is known (always, in memory) */
    int jobs;     /* jobs in flight */
    int dirty;    /* in a sweep's list */
    int feeding;  /* on the bus's feed list */
    struct lcoll *feed_next;
    syncd_bus_sub_t *subs;
} lcoll_t;

typedef enum {
    JOB_LOAD,
    JOB_PUBLISH,
    JOB_RAISE,
    JOB_READ,
    JOB_SEQ,
    JOB_FORGET
} job_kind_t;

/* A request: for RocksDB, its work runs on the thread pool and its
 * completion on the loop; in memory, only its completion (queued). */
typedef struct ljob {
    struct ljob *next;
    job_kind_t kind;
    lcoll_t *c;
    char key[KEY_MAX]; /* JOB_PUBLISH: the deduplication key */
    bus_pub_t pub;     /* JOB_PUBLISH: v, create, ts_us */
    char *body;        /* JOB_PUBLISH: the event without seq (owned) */
    size_t body_len;
    int64_t floor;        /* the loop's seq when queued */
    int64_t after, until; /* JOB_READ */
    size_t max;           /* JOB_READ: 0 is no bound */
    syncd_bus_sub_t *sub; /* JOB_READ for a subscription (a reference) */
    /* Results. */
    int status, dropped;
    int64_t seq; /* JOB_LOAD, JOB_PUBLISH: the counter after the job */
    char *text;  /* JOB_PUBLISH: the event with its seq */
    size_t text_len;
    json_t *events; /* JOB_READ */
    json_t *gone;   /* JOB_FORGET: id -> version (a copy) */
    size_t forgotten;
    syncd_bus_publish_cb publish_cb;
    syncd_bus_replay_cb replay_cb;
    syncd_bus_seq_cb seq_cb;
    syncd_bus_forget_cb forget_cb;
    void *payload;
} ljob_t;

/* A heartbeat or members request waiting for the idle pass. */
typedef struct lmember {
    struct lmember *next;
    syncd_bus_heartbeat_cb heartbeat_cb; /* NULL: a members read */
    syncd_bus_members_cb members_cb;
    void *payload;
} lmember_t;

typedef struct lbus {
    syncd_bus_t base;
    uv_idle_t idle;
    int idle_active;
    rocksdb_t *db;
    rocksdb_options_t *dbopts;
    rocksdb_writeoptions_t *wopts;
    rocksdb_writebatch_wi_t *wb; /* the batch's writes (thread pool only) */
    rocksdb_readoptions_t *ropts;
    bus_map_t map; /* lcoll_t by name */
    lcoll_t *colls;
    lcoll_t *feed;        /* collections whose subscriptions may have events */
    ljob_t *head, **tail; /* RocksDB jobs waiting for the thread pool */
    ljob_t *done, **done_tail; /* completions waiting for the idle pass */
    ljob_t *batch;             /* the jobs on the batch thread */
    int working;               /* a batch is on the batch thread */
    int close_waits; /* the close waits for the batch on the batch thread */
    /* The batch thread (RocksDB only): takes a batch when go is set, and
     * sets finished and wakes the loop (async) when it has run it; ends on
     * quit. go, finished and quit are under mu. */
    pthread_t thread;
    int thread_up;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int go, finished, quit;
    uv_async_t async;
    int handles;                    /* handles still open at close */
    json_t *beat;                   /* this node's last heartbeat, or NULL */
    int64_t beat_ms, beat_ttl_ms;   /* its wall-clock time and TTL */
    lmember_t *mreqs, **mreqs_tail; /* membership requests, in order */
} lbus_t;

static void on_idle(uv_idle_t *idle);
static void run_jobs(lbus_t *bus);
static void coll_release(lbus_t *bus, lcoll_t *c);

static void wake(lbus_t *bus)
{
    if (!bus->idle_active && !bus->base.closed) {
        bus->idle_active = 1;
        uv_idle_start(&bus->idle, on_idle);
    }
}

/* Puts c on the feed list, so that the next idle pass feeds its
 * subscriptions. */
static void feed_later(lbus_t *bus, lcoll_t *c)
{
    if (!c->feeding && c->subs != NULL) {
        c->feeding = 1;
        c->feed_next = bus->feed;
        bus->feed = c;
    }
    wake(bus);
}

static uint64_t log_len(const lbus_t *bus, const lcoll_t *c)
{
    return bus->db != NULL ? bus->base.event_log_len : c->cap;
}

/* First seq the log of c still holds when its last seq is seq. */
static int64_t first_held(const lbus_t *bus, const lcoll_t *c, int64_t seq)
{
    int64_t first = seq - (int64_t)log_len(bus, c) + 1;
    return first > 1 ? first : 1;
}

static void event_key(char *key, size_t size, const char *coll, int64_t seq)
{
    snprintf(key, size, "e/%s/%016" PRIx64, coll, (uint64_t)seq);
}

/* ---- Jobs ----------------------------------------------------------------
 */

static ljob_t *new_job(job_kind_t kind, lcoll_t *c, void *payload)
{
    ljob_t *job = calloc(1, sizeof(*job));

    if (job != NULL) {
        job->kind = kind;
        job->c = c;
        job->payload = payload;
        job->floor = c->seq;
        c->jobs++;
    }
    return job;
}

/* Queues job for the thread pool (RocksDB) or for its completion. */
static void submit(lbus_t *bus, ljob_t *job)
{
    job->next = NULL;
    if (bus->db != NULL) {
        *bus->tail = job;
        bus->tail = &job->next;
        run_jobs(bus);
    } else {
        *bus->done_tail = job;
        bus->done_tail = &job->next;
        wake(bus);
    }
}

/* Reads key as the batch sees it: its own writes, then RocksDB; a value
 * for rocksdb_free(), or NULL. */
static char *db_get(lbus_t *bus, const char *key, size_t *len, char **errptr)
{
    return rocksdb_writebatch_wi_get_from_batch_and_db(
        bus->wb, bus->db, bus->ropts, key, strlen(key), len, errptr);
}

/* Reads key into the decimal *out (0 when absent); 0 or SYNCD_EBACKEND. */
static int db_get_int(lbus_t *bus, const char *key, int64_t *out,
                      int64_t *second)
{
    char *errptr = NULL, *val, num[64];
    size_t len = 0;

    *out = 0;
    val = db_get(bus, key, &len, &errptr);
    if (errptr != NULL) {
        rocksdb_free(errptr);
        return SYNCD_EBACKEND;
    }
    if (val != NULL) {
        snprintf(num, sizeof(num), "%.*s", (int)len, val);
        if (second != NULL)
            sscanf(num, "%" SCNd64 " %" SCNd64, out, second);
        else
            *out = strtoll(num, NULL, 10);
        rocksdb_free(val);
    }
    return val != NULL || second == NULL ? 0 : SYNCD_ENOTFOUND;
}

/* Writes key = val into the batch's writes. */
static void db_put(lbus_t *bus, const char *key, const char *val, size_t len)
{
    rocksdb_writebatch_wi_put(bus->wb, key, strlen(key), val, len);
}

/* Thread pool: the counter of job's collection, raised to the loop's. */
static int work_counter(lbus_t *bus, ljob_t *job, int64_t *seq)
{
    char key[KEY_MAX];
    int rc;

    snprintf(key, sizeof(key), "c/%s", job->c->entry.name);
    rc = db_get_int(bus, key, seq, NULL);
    if (rc == 0 && *seq < job->floor)
        *seq = job->floor;
    return rc;
}

/* Thread pool: a publish, deduplicated, in one fsynced write batch. */
static int work_publish(lbus_t *bus, ljob_t *job)
{
    const char *coll = job->c->entry.name;
    char key[KEY_MAX], num[64];
    int64_t seq, v = 0, ts = 0;
    int rc = work_counter(bus, job, &seq);

    if (rc != 0)
        return rc;
    rc = db_get_int(bus, job->key, &v, &ts);
    if (rc != 0 && rc != SYNCD_ENOTFOUND)
        return rc;
    switch (syncd_bus_pub_check(&job->pub, v, ts)) {
    case BUS_PUB_DUPLICATE:
        job->dropped = 1;
        return 0;
    case BUS_PUB_EARLY:
        return SYNCD_ECONFLICT;
    }
    job->seq = seq + 1;
    job->text = syncd_bus_splice_seq(job->body, job->body_len, job->seq,
                                     &job->text_len);
    if (job->text == NULL)
        return SYNCD_ENOMEM;
    snprintf(key, sizeof(key), "c/%s", coll);
    snprintf(num, sizeof(num), "%" PRId64, job->seq);
    db_put(bus, key, num, strlen(num));
    event_key(key, sizeof(key), coll, job->seq);
    db_put(bus, key, job->text, job->text_len);
    if ((uint64_t)job->seq > bus->base.event_log_len) {
        event_key(key, sizeof(key), coll,
                  job->seq - (int64_t)bus->base.event_log_len);
        rocksdb_writebatch_wi_delete(bus->wb, key, strlen(key));
    }
    snprintf(num, sizeof(num), "%" PRId64 " %" PRId64, job->pub.v,
             job->pub.ts_us);
    db_put(bus, job->key, num, strlen(num));
    return 0;
}

/* Thread pool: the counter raised to the loop's, persisted when it moved. */
static int work_raise(lbus_t *bus, ljob_t *job)
{
    char key[KEY_MAX], num[64];
    int64_t seq;
    int rc;

    snprintf(key, sizeof(key), "c/%s", job->c->entry.name);
    rc = db_get_int(bus, key, &seq, NULL);
    if (rc != 0 || seq >= job->floor)
        return rc;
    snprintf(num, sizeof(num), "%" PRId64, job->floor);
    db_put(bus, key, num, strlen(num));
    return 0;
}

/* Thread pool: events after < seq <= until (at most max) into job->events;
 * SYNCD_ENOTFOUND when the log no longer holds seq after+1. */
static int work_read(lbus_t *bus, ljob_t *job)
{
    char key[KEY_MAX], *errptr = NULL, *val;
    int64_t seq, hi;
    size_t len;
    int rc = work_counter(bus, job, &seq);

    if (rc != 0)
        return rc;
    job->seq = seq;
    hi = job->until < 0 || job->until > seq ? seq : job->until;
    if (job->after < hi && job->after + 1 < first_held(bus, job->c, seq))
        return SYNCD_ENOTFOUND;
    job->events = json_array();
    if (job->events == NULL)
        return SYNCD_ENOMEM;
    for (int64_t s = job->after + 1; s <= hi; s++) {
        json_t *event;

        if (job->max != 0 && json_array_size(job->events) >= job->max)
            break;
        event_key(key, sizeof(key), job->c->entry.name, s);
        val = db_get(bus, key, &len, &errptr);
        if (errptr != NULL) {
            rocksdb_free(errptr);
            return SYNCD_EBACKEND;
        }
        if (val == NULL)
            return s == job->after + 1 ? SYNCD_ENOTFOUND : SYNCD_EBACKEND;
        event = json_loadb(val, len, 0, NULL);
        rocksdb_free(val);
        if (event == NULL || json_array_append_new(job->events, event) != 0)
            return SYNCD_EBACKEND;
    }
    return 0;
}

/* Thread pool: deletes the deduplication record of each id of job->gone
 * that names the version given. */
static int work_forget(lbus_t *bus, ljob_t *job)
{
    char key[KEY_MAX];
    const char *id;
    json_t *gone_v;

    json_object_foreach (job->gone, id, gone_v) {
        int64_t v = 0, ts = 0;
        int rc;

        snprintf(key, sizeof(key), "p/%s/%s", job->c->entry.name, id);
        rc = db_get_int(bus, key, &v, &ts);
        if (rc == SYNCD_ENOTFOUND ||
            (rc == 0 && v != json_integer_value(gone_v)))
            continue;
        if (rc != 0)
            return rc;
        rocksdb_writebatch_wi_delete(bus->wb, key, strlen(key));
        job->forgotten++;
    }
    return 0;
}

/* Thread pool: runs the batch's jobs in order against RocksDB as seen
 * through the batch's own writes, then commits those writes in one fsynced
 * write (a group commit); if that fails, every job of the batch fails. */
static void work(lbus_t *bus)
{
    char *errptr = NULL;

    rocksdb_writebatch_wi_clear(bus->wb);
    for (ljob_t *job = bus->batch; job != NULL; job = job->next) {
        switch (job->kind) {
        case JOB_LOAD:
            job->status = work_counter(bus, job, &job->seq);
            break;
        case JOB_PUBLISH:
            job->status = work_publish(bus, job);
            break;
        case JOB_RAISE:
            job->status = work_raise(bus, job);
            break;
        case JOB_READ:
            job->status = work_read(bus, job);
            break;
        case JOB_SEQ:
            break;
        case JOB_FORGET:
            job->status = work_forget(bus, job);
            break;
        }
    }
    if (rocksdb_writebatch_wi_count(bus->wb) == 0)
        return;
    rocksdb_write_writebatch_wi(bus->db, bus->wopts, bus->wb, &errptr);
    if (errptr == NULL)
        return;
    rocksdb_free(errptr);
    for (ljob_t *job = bus->batch; job != NULL; job = job->next)
        job->status = SYNCD_EBACKEND;
}

static void free_job(ljob_t *job)
{
    if (job->sub != NULL)
        syncd_bus_sub_unref(job->sub);
    json_decref(job->events);
    json_decref(job->gone);
    free(job->body);
    free(job->text);
    free(job);
}

static void fire_all(lbus_t *bus, int status);
static void close_handles(lbus_t *bus);

/* The batch thread: runs each batch handed over, until told to quit. */
static void *batch_thread(void *arg)
{
    lbus_t *bus = arg;

    pthread_mutex_lock(&bus->mu);
    while (!bus->quit) {
        if (!bus->go) {
            pthread_cond_wait(&bus->cv, &bus->mu);
            continue;
        }
        bus->go = 0;
        pthread_mutex_unlock(&bus->mu);
        work(bus);
        pthread_mutex_lock(&bus->mu);
        bus->finished = 1;
        uv_async_send(&bus->async);
    }
    pthread_mutex_unlock(&bus->mu);
    return NULL;
}

/* The loop: the batch thread finished its batch, whose jobs now wait for
 * their completions; the next batch starts. */
static void on_batch_done(uv_async_t *async)
{
    lbus_t *bus = async->data;
    ljob_t *job;
    int finished;

    pthread_mutex_lock(&bus->mu);
    finished = bus->finished;
    bus->finished = 0;
    pthread_mutex_unlock(&bus->mu);
    if (!finished)
        return;
    job = bus->batch;
    bus->working = 0;
    bus->batch = NULL;
    *bus->done_tail = job;
    while (job != NULL) {
        bus->done_tail = &job->next;
        job = job->next;
    }
    if (bus->close_waits) {
        fire_all(bus, SYNCD_ECANCELED);
        close_handles(bus);
        return;
    }
    wake(bus);
    run_jobs(bus);
}

/* Hands the waiting jobs to the batch thread as one batch, unless a batch
 * is there already. */
static void run_jobs(lbus_t *bus)
{
    if (bus->working || bus->head == NULL || bus->base.closed)
        return;
    bus->batch = bus->head;
    bus->head = NULL;
    bus->tail = &bus->head;
    bus->working = 1;
    pthread_mutex_lock(&bus->mu);
    bus->go = 1;
    pthread_cond_signal(&bus->cv);
    pthread_mutex_unlock(&bus->mu);
}

/* ---- Collections ---------------------------------------------------------
 */

/* Finds coll's record into *out, creating it on first use (with a job that
 * loads its counter from RocksDB). */
static int get_coll(lbus_t *bus, const char *coll, lcoll_t **out,
                    syncd_error_t *err)
{
    lcoll_t *c = (lcoll_t *)syncd_bus_map_find(&bus->map, coll);
    uint64_t bound = bus->db != NULL ? RING_PERSISTED : RING_MEMORY;
    ljob_t *load = NULL;

    *out = c;
    if (c != NULL)
        return 0;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "allocating a collection");
    snprintf(c->entry.name, sizeof(c->entry.name), "%s", coll);
    c->cap = (size_t)(bus->base.event_log_len < bound ? bus->base.event_log_len
                                                      : bound);
    c->loaded = bus->db == NULL;
    if ((bus->db == NULL && (c->pubv = json_object()) == NULL) ||
        (bus->db != NULL && (load = new_job(JOB_LOAD, c, NULL)) == NULL) ||
        syncd_bus_map_add(&bus->map, &c->entry) != 0) {
        free(load);
        json_decref(c->pubv);
        free(c);
        return syncd_error_set(err, SYNCD_ENOMEM, "allocating a collection");
    }
    c->next = bus->colls;
    if (c->next != NULL)
        c->next->prev = c;
    bus->colls = c;
    bus->base.stats.collections++;
    if (load != NULL)
        submit(bus, load);
    *out = c;
    return 0;
}

static void coll_free(lbus_t *bus, lcoll_t *c)
{
    syncd_bus_subs_release(&c->subs);
    for (size_t i = 0; i < c->size; i++) {
        json_decref(c->ring[i].event);
        free(c->ring[i].text);
    }
    json_decref(c->pubv);
    free(c->ring);
    free(c);
    bus->base.stats.collections--;
}

/* Frees c when it is idle: no subscription, no job, and (in memory) no
 * published event. */
static void coll_release(lbus_t *bus, lcoll_t *c)
{
    if (bus->base.closed || c->subs != NULL || c->jobs > 0 || c->feeding ||
        (bus->db == NULL && c->seq > 0))
        return;
    syncd_bus_map_remove(&bus->map, &c->entry);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        bus->colls = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    coll_free(bus, c);
}

/* Returns 1 when slot holds an event. */
static int slot_used(const slot_t *slot)
{
    return slot->event != NULL || slot->text != NULL;
}

/* Returns 1 when c's ring holds event seq. */
static int ring_holds(const lcoll_t *c, int64_t seq)
{
    const slot_t *slot;

    if (c->size == 0)
        return 0;
    slot = &c->ring[(uint64_t)seq % c->size];
    return slot->seq == seq && slot_used(slot);
}

/* Returns event seq of c's ring (borrowed; decoded on its first read), or
 * NULL when it has left (or its text does not parse, which then leaves). */
static json_t *ring_get(lcoll_t *c, int64_t seq)
{
    slot_t *slot;

    if (c->size == 0)
        return NULL;
    slot = &c->ring[(uint64_t)seq % c->size];
    if (slot->seq != seq)
        return NULL;
    if (slot->event == NULL && slot->text != NULL) {
        if (syncd_json_loadb_nonul(&slot->event, slot->text, slot->len, NULL) !=
            0)
            slot->event = NULL;
        free(slot->text);
        slot->text = NULL;
    }
    return slot->event;
}

/* Moves c's ring into n slots; on ENOMEM the ring stays as it was. */
static void ring_grow(lcoll_t *c, size_t n)
{
    slot_t *ring = calloc(n, sizeof(*ring));

    if (ring == NULL)
        return;
    for (size_t i = 0; i < c->size; i++) {
        if (slot_used(&c->ring[i]))
            ring[(uint64_t)c->ring[i].seq % n] = c->ring[i];
    }
    free(c->ring);
    c->ring = ring;
    c->size = n;
}

/* Puts the len bytes of event text (malloc'd, stolen) with seq into c's
 * ring, growing it rather than dropping an event of the last cap seqs. */
static void ring_put(lcoll_t *c, int64_t seq, char *text, size_t len)
{
    slot_t *slot;

    if (c->size == 0) {
        ring_grow(c, c->cap < 16 ? c->cap : 16);
    } else if (c->size < c->cap) {
        slot = &c->ring[(uint64_t)seq % c->size];
        if (slot_used(slot) && slot->seq > seq - (int64_t)c->cap)
            ring_grow(c, c->size * 2 < c->cap ? c->size * 2 : c->cap);
    }
    if (c->size == 0) {
        free(text);
        return;
    }
    slot = &c->ring[(uint64_t)seq % c->size];
    json_decref(slot->event);
    free(slot->text);
    slot->seq = seq;
    slot->event = NULL;
    slot->text = text;
    slot->len = len;
}

/* Starts the subscriptions of c that wait for its counter: from the
 * current seq when they gave none; one beyond the counter means the caller
 * saw seqs this log lost, so the counter moves up to it (seqs never
 * repeat) and the subscription is told to resync. */
static void start_subs(lbus_t *bus, lcoll_t *c)
{
    int64_t raised = c->seq;
    ljob_t *job;

    for (syncd_bus_sub_t *sub = c->subs; sub != NULL; sub = sub->next) {
        if (sub->last < 0) {
            sub->last = c->seq;
        } else if (sub->last > c->seq && sub->catching) {
            sub->lost = 1;
            if (sub->last > raised)
                raised = sub->last;
        }
        sub->catching = 0;
    }
    if (raised > c->seq) {
        c->seq = raised;
        if (bus->db != NULL && (job = new_job(JOB_RAISE, c, NULL)) != NULL)
            submit(bus, job);
    }
    feed_later(bus, c);
}

/* ---- Operations ----------------------------------------------------------
 */

/* Makes a job of kind for coll into *out, finding or creating coll's
 * record (the job holds it until completed or dropped). */
static int coll_job(lbus_t *bus, const char *coll, job_kind_t kind,
                    void *payload, ljob_t **out)
{
    lcoll_t *c;
    int rc = get_coll(bus, coll, &c, NULL);

    *out = NULL;
    if (rc != 0)
        return rc;
    *out = new_job(kind, c, payload);
    if (*out == NULL) {
        coll_release(bus, c);
        return SYNCD_ENOMEM;
    }
    return 0;
}

/* Frees job, never submitted, and lets its collection go. */
static void drop_job(lbus_t *bus, ljob_t *job)
{
    lcoll_t *c = job->c;

    c->jobs--;
    free_job(job);
    coll_release(bus, c);
}

/* Publishes in memory: deduplicated against c->pubv, appended to the ring. */
static int publish_memory(lbus_t *bus, lcoll_t *c, ljob_t *job)
{
    json_t *rec = json_object_get(c->pubv, job->key);
    char *text;
    size_t len;

    switch (syncd_bus_pub_check(&job->pub,
                                json_integer_value(json_array_get(rec, 0)),
                                json_integer_value(json_array_get(rec, 1)))) {
    case BUS_PUB_DUPLICATE:
        job->dropped = 1;
        return 0;
    case BUS_PUB_EARLY:
        job->status = SYNCD_ECONFLICT;
        return 0;
    }
    text = syncd_bus_splice_seq(job->body, job->body_len, c->seq + 1, &len);
    rec =
        json_pack("[I,I]", (json_int_t)job->pub.v, (json_int_t)job->pub.ts_us);
    if (text == NULL || rec == NULL ||
        json_object_set_new(c->pubv, job->key, rec) != 0) {
        free(text);
        return SYNCD_ENOMEM;
    }
    job->seq = ++c->seq;
    ring_put(c, job->seq, text, len);
    bus->base.stats.published++;
    feed_later(bus, c);
    return 0;
}

static int local_publish(syncd_bus_t *base, const bus_pub_t *pub,
                         char *body_new, size_t len, syncd_bus_publish_cb cb,
                         void *payload)
{
    lbus_t *bus = (lbus_t *)base;
    ljob_t *job = NULL;
    int rc = coll_job(bus, pub->coll, JOB_PUBLISH, payload, &job);

    if (rc != 0)
        goto cleanup;
    job->pub = *pub;
    /* Borrowed for this call only: the job keeps its names in its key. */
    job->pub.coll = job->pub.id = NULL;
    job->publish_cb = cb;
    job->body = body_new;
    job->body_len = len;
    body_new = NULL;
    if (bus->db != NULL)
        snprintf(job->key, sizeof(job->key), "p/%s/%s", pub->coll, pub->id);
    else
        snprintf(job->key, sizeof(job->key), "%s", pub->id);
    if (bus->db == NULL) {
        rc = publish_memory(bus, job->c, job);
        if (rc != 0)
            goto cleanup;
    }
    submit(bus, job);
    job = NULL;

cleanup:
    if (job != NULL)
        drop_job(bus, job);
    free(body_new);
    return rc;
}

static int local_subscribe(syncd_bus_t *base, syncd_bus_sub_t *sub,
                           syncd_error_t *err)
{
    lbus_t *bus = (lbus_t *)base;
    lcoll_t *c;
    int rc = get_coll(bus, sub->coll, &c, err);

    if (rc != 0)
        return rc;
    sub->chan = c;
    sub->next = c->subs;
    c->subs = sub;
    if (c->loaded)
        start_subs(bus, c);
    return 0;
}

/* Reads sub's next events from RocksDB (the ring no longer has them). */
static void read_for(lbus_t *bus, lcoll_t *c, syncd_bus_sub_t *sub)
{
    ljob_t *job = new_job(JOB_READ, c, NULL);

    if (job == NULL)
        return;
    job->after = sub->last;
    job->until = c->seq;
    job->max = PUMP_BATCH;
    job->sub = sub;
    syncd_bus_sub_ref(sub);
    sub->inflight = 1;
    submit(bus, job);
}

/* Hands sub up to PUMP_BATCH events; returns 1 when it has more waiting. */
static int feed(lbus_t *bus, lcoll_t *c, syncd_bus_sub_t *sub)
{
    int n = 0;

    if (sub->inflight || sub->last < 0)
        return 0;
    if (sub->lost) {
        sub->lost = 0;
        if (!syncd_bus_deliver(sub, SYNCD_BUS_RESYNC, sub->last, NULL))
            return 0;
    }
    while (n++ < PUMP_BATCH && syncd_bus_sub_live(sub) && sub->last < c->seq) {
        int64_t next = sub->last + 1;
        json_t *event = NULL;

        if (next < first_held(bus, c, c->seq)) {
            syncd_bus_deliver(sub, SYNCD_BUS_RESYNC,
                              first_held(bus, c, c->seq) - 1, NULL);
        } else if (sub->bodies != SYNCD_BUS_BODIES_ALL && ring_holds(c, next)) {
            syncd_bus_deliver(sub, SYNCD_BUS_EVENT, next, NULL);
        } else if ((event = ring_get(c, next)) != NULL) {
            syncd_bus_deliver(sub, SYNCD_BUS_EVENT, next, event);
        } else if (bus->db != NULL) {
            read_for(bus, c, sub);
            return 0;
        } else {
            syncd_bus_deliver(sub, SYNCD_BUS_RESYNC, next, NULL);
        }
    }
    return syncd_bus_sub_live(sub) && sub->last < c->seq;
}

/* Delivers what a JOB_READ found for its subscription. */
static void read_done(lbus_t *bus, ljob_t *job)
{
    syncd_bus_sub_t *sub = job->sub;

    sub->inflight = 0;
    if (!syncd_bus_sub_live(sub))
        return;
    if (job->status == SYNCD_ENOTFOUND &&
        first_held(bus, job->c, job->seq) - 1 > job->after) {
        syncd_bus_deliver(sub, SYNCD_BUS_RESYNC,
                          first_held(bus, job->c, job->seq) - 1, NULL);
    } else if (job->status != 0) {
        syncd_bus_deliver(sub, SYNCD_BUS_RESYNC, job->after + 1, NULL);
    } else {
        for (size_t i = 0; i < json_array_size(job->events); i++) {
            if (!syncd_bus_sub_live(sub) ||
                sub->last != job->after + (int64_t)i)
                break;
            syncd_bus_deliver(sub, SYNCD_BUS_EVENT, sub->last + 1,
                              json_array_get(job->events, i));
        }
    }
    feed_later(bus, job->c);
}

/* Deletes from c->pubv each id of job->gone whose record names the
 * version given. */
static void forget_memory(lcoll_t *c, ljob_t *job)
{
    const char *id;
    json_t *v;

    json_object_foreach (job->gone, id, v) {
        json_t *rec = json_object_get(c->pubv, id);

        if (rec != NULL && json_integer_value(json_array_get(rec, 0)) ==
                               json_integer_value(v)) {
            json_object_del(c->pubv, id);
            job->forgotten++;
        }
    }
}

/* Completes job on the loop (status: 0, or SYNCD_ECANCELED at close). */
static void complete(lbus_t *bus, ljob_t *job, int status)
{
    lcoll_t *c = job->c;

    if (status == 0)
        status = job->status;
    switch (job->kind) {
    case JOB_LOAD:
        if (status == 0 && job->seq > c->seq)
            c->seq = job->seq;
        c->loaded = 1;
        start_subs(bus, c);
        break;
    case JOB_PUBLISH:
        if (status == 0 && job->dropped) {
            bus->base.stats.dropped_republished++;
        } else if (status == 0 && bus->db != NULL) {
            if (job->seq > c->seq)
                c->seq = job->seq;
            ring_put(c, job->seq, job->text, job->text_len);
            job->text = NULL;
            bus->base.stats.published++;
            feed_later(bus, c);
        }
        if (job->publish_cb != NULL)
            job->publish_cb(status, status == 0 ? job->seq : 0, job->payload);
        break;
    case JOB_RAISE:
        break;
    case JOB_READ:
        if (job->sub != NULL && status != SYNCD_ECANCELED) {
            read_done(bus, job);
        } else if (job->replay_cb != NULL) {
            if (status == 0)
                bus->base.stats.replayed += json_array_size(job->events);
            job->replay_cb(status, status == 0 ? job->events : NULL,
                           job->payload);
            if (status == 0)
                job->events = NULL;
        }
        break;
    case JOB_SEQ:
        job->seq_cb(status, status == 0 ? c->seq : 0, job->payload);
        break;
    case JOB_FORGET:
        if (status == 0 && bus->db == NULL)
            forget_memory(c, job);
        job->forget_cb(status, status == 0 ? job->forgotten : 0, job->payload);
        break;
    }
    c->jobs--;
    free_job(job);
    coll_release(bus, c);
}

/* Completes every finished job with status (0: each its own). */
static void fire_all(lbus_t *bus, int status)
{
    ljob_t *job = bus->done;

    bus->done = NULL;
    bus->done_tail = &bus->done;
    while (job != NULL) {
        ljob_t *next = job->next;
        complete(bus, job, status);
        job = next;
    }
}

/* The wall-clock time in ms since the epoch. */
static int64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Returns a new members object (bus.h) of this node's live heartbeat, the
 * newest seq of its collections from their records; NULL on ENOMEM. */
static json_t *members_now(lbus_t *bus)
{
    int64_t now = wall_ms();
    json_t *nodes = json_array(), *newest = json_object();
    json_t *out = json_pack("{s:I, s:o, s:o}", "now_ms", (json_int_t)now,
                            "nodes", nodes, "newest", newest);
    const char *name;
    json_t *seq;

    if (out == NULL || bus->beat == NULL ||
        now - bus->beat_ms >= bus->beat_ttl_ms)
        return out;
    json_array_append_new(
        nodes, json_pack("{s:s, s:I, s:O}", "id", bus->base.node_id, "last_ms",
                         (json_int_t)bus->beat_ms, "beat", bus->beat));
    json_object_foreach (json_object_get(bus->beat, "collections"), name, seq) {
        lcoll_t *c = (lcoll_t *)syncd_bus_map_find(&bus->map, name);

        json_object_set_new(newest, name,
                            c != NULL && c->loaded ? json_integer(c->seq)
                                                   : json_copy(seq));
    }
    return out;
}

/* Completes the waiting membership requests (status: 0, or
 * SYNCD_ECANCELED at close). */
static void fire_members(lbus_t *bus, int status)
{
    lmember_t *req = bus->mreqs;

    bus->mreqs = NULL;
    bus->mreqs_tail = &bus->mreqs;
    while (req != NULL) {
        lmember_t *next = req->next;

        if (req->heartbeat_cb != NULL) {
            req->heartbeat_cb(status, req->payload);
        } else {
            json_t *members = status == 0 ? members_now(bus) : NULL;

            req->members_cb(status != 0       ? status
                            : members == NULL ? SYNCD_ENOMEM
                                              : 0,
                            members, req->payload);
        }
        free(req);
        req = next;
    }
}

static void on_idle(uv_idle_t *idle)
{
    lbus_t *bus = idle->data;
    lcoll_t *list, *c;

    syncd_bus_enter(&bus->base);
    fire_all(bus, 0);
    fire_members(bus, 0);
    list = bus->feed;
    bus->feed = NULL;
    while (list != NULL && !bus->base.closing) {
        c = list;
        list = c->feed_next;
        c->feeding = 0;
        for (syncd_bus_sub_t *sub = c->subs; sub != NULL; sub = sub->next) {
            if (feed(bus, c, sub))
                feed_later(bus, c);
        }
        coll_release(bus, c);
    }
    if (bus->feed == NULL && bus->done == NULL && bus->mreqs == NULL &&
        !bus->base.closed) {
        bus->idle_active = 0;
        uv_idle_stop(&bus->idle);
    }
    syncd_bus_leave(&bus->base);
}

/* In memory: reads coll's events after < seq <= until from the ring. */
static void replay_memory(lbus_t *bus, lcoll_t *c, ljob_t *job)
{
    int64_t hi = job->until < 0 || job->until > c->seq ? c->seq : job->until;

    if (job->after < hi && job->after + 1 < first_held(bus, c, c->seq)) {
        job->status = SYNCD_ENOTFOUND;
        return;
    }
    job->events = json_array();
    if (job->events == NULL) {
        job->status = SYNCD_ENOMEM;
        return;
    }
    for (int64_t s = job->after + 1; s <= hi; s++) {
        json_t *event = ring_get(c, s);

        if (job->max != 0 && json_array_size(job->events) >= job->max)
            break;
        if (event == NULL) {
            job->status = SYNCD_ENOTFOUND;
            return;
        }
        json_array_append(job->events, event);
    }
}

static int local_replay(syncd_bus_t *base, const char *coll, int64_t after,
                        int64_t until, size_t max, syncd_bus_replay_cb cb,
                        void *payload)
{
    lbus_t *bus = (lbus_t *)base;
    ljob_t *job;
    int rc = coll_job(bus, coll, JOB_READ, payload, &job);

    if (rc != 0)
        return rc;
    job->replay_cb = cb;
    job->after = after;
    job->until = until;
    job->max = max;
    if (bus->db == NULL)
        replay_memory(bus, job->c, job);
    submit(bus, job);
    return 0;
}

static int local_seq(syncd_bus_t *base, const char *coll, syncd_bus_seq_cb cb,
                     void *payload)
{
    lbus_t *bus = (lbus_t *)base;
    ljob_t *job;
    int rc = coll_job(bus, coll, JOB_SEQ, payload, &job);

    if (rc != 0)
        return rc;
    job->seq_cb = cb;
    submit(bus, job);
    return 0;
}

static int local_forget(syncd_bus_t *base, const char *coll, const json_t *gone,
                        syncd_bus_forget_cb cb, void *payload)
{
    lbus_t *bus = (lbus_t *)base;
    ljob_t *job;
    int rc = coll_job(bus, coll, JOB_FORGET, payload, &job);

    if (rc != 0)
        return rc;
    job->gone = json_deep_copy(gone);
    if (job->gone == NULL) {
        drop_job(bus, job);
        return SYNCD_ENOMEM;
    }
    job->forget_cb = cb;
    submit(bus, job);
    return 0;
}

static void local_sweep(syncd_bus_t *base)
{
    lbus_t *bus = (lbus_t *)base;
    lcoll_t *dirty = NULL, *c;
    syncd_bus_sub_t *sub;

    while ((sub = syncd_bus_dead_pop(base)) != NULL) {
        c = sub->chan;
        if (!c->dirty) {
            c->dirty = 1;
            c->dirty_next = dirty;
            dirty = c;
        }
        syncd_bus_sub_unref(sub);
    }
    while (dirty != NULL) {
        c = dirty;
        dirty = c->dirty_next;
        c->dirty = 0;
        syncd_bus_subs_sweep(&c->subs);
        coll_release(bus, c);
    }
}

static int local_connected(const syncd_bus_t *base)
{
    (void)base;
    return 1;
}

static void free_db(lbus_t *bus)
{
    if (bus->db != NULL)
        rocksdb_close(bus->db);
    if (bus->dbopts != NULL)
        rocksdb_options_destroy(bus->dbopts);
    if (bus->wopts != NULL)
        rocksdb_writeoptions_destroy(bus->wopts);
    if (bus->ropts != NULL)
        rocksdb_readoptions_destroy(bus->ropts);
    if (bus->wb != NULL)
        rocksdb_writebatch_wi_destroy(bus->wb);
}

static void on_closed(uv_handle_t *handle)
{
    lbus_t *bus = handle->data;

    if (--bus->handles > 0)
        return;
    while (bus->colls != NULL) {
        lcoll_t *c = bus->colls;
        bus->colls = c->next;
        coll_free(bus, c);
    }
    syncd_bus_map_free(&bus->map);
    json_decref(bus->beat);
    free_db(bus);
    pthread_mutex_destroy(&bus->mu);
    pthread_cond_destroy(&bus->cv);
    syncd_bus_finish_close(&bus->base);
    free(bus);
}

/* Ends the batch thread, which has no batch. */
static void stop_thread(lbus_t *bus)
{
    pthread_mutex_lock(&bus->mu);
    bus->quit = 1;
    pthread_cond_signal(&bus->cv);
    pthread_mutex_unlock(&bus->mu);
    pthread_join(bus->thread, NULL);
    bus->thread_up = 0;
}

/* Ends the batch thread (idle: no batch is on it) and closes the handles;
 * the last one's close frees the bus. */
static void close_handles(lbus_t *bus)
{
    if (bus->thread_up) {
        stop_thread(bus);
        bus->handles++;
        uv_close((uv_handle_t *)&bus->async, on_closed);
    }
    bus->handles++;
    uv_close((uv_handle_t *)&bus->idle, on_closed);
}

/* Cancels what has not run (the jobs still queued and the finished ones);
 * a batch on the batch thread cannot be stopped, so the close waits for it
 * (one batch of RocksDB work). */
static void local_close(syncd_bus_t *base)
{
    lbus_t *bus = (lbus_t *)base;

    syncd_bus_enter(base);
    *bus->done_tail = bus->head;
    bus->head = NULL;
    bus->tail = &bus->head;
    fire_all(bus, SYNCD_ECANCELED);
    fire_members(bus, SYNCD_ECANCELED);
    syncd_bus_leave(base);
    if (bus->working)
        bus->close_waits = 1;
    else
        close_handles(bus);
}

/* Queues a membership request for the idle pass. */
static int member_request(lbus_t *bus, syncd_bus_heartbeat_cb heartbeat_cb,
                          syncd_bus_members_cb members_cb, void *payload)
{
    lmember_t *req = calloc(1, sizeof(*req));

    if (req == NULL)
        return SYNCD_ENOMEM;
    req->heartbeat_cb = heartbeat_cb;
    req->members_cb = members_cb;
    req->payload = payload;
    *bus->mreqs_tail = req;
    bus->mreqs_tail = &req->next;
    wake(bus);
    return 0;
}

static int local_heartbeat(syncd_bus_t *base, const json_t *beat,
                           char *body_new, size_t len, int64_t ttl_ms,
                           syncd_bus_heartbeat_cb cb, void *payload)
{
    lbus_t *bus = (lbus_t *)base;
    json_t *copy = json_deep_copy(beat);
    int rc;

    (void)len;
    free(body_new);
    if (copy == NULL)
        return SYNCD_ENOMEM;
    rc = member_request(bus, cb, NULL, payload);
    if (rc != 0) {
        json_decref(copy);
        return rc;
    }
    json_decref(bus->beat);
    bus->beat = copy;
    bus->beat_ms = wall_ms();
    bus->beat_ttl_ms = ttl_ms;
    return 0;
}

static int local_members(syncd_bus_t *base, syncd_bus_members_cb cb,
                         void *payload)
{
    return member_request((lbus_t *)base, NULL, cb, payload);
}

static const bus_ops_t local_ops = {
    .kind = "local",
    .close = local_close,
    .connected = local_connected,
    .publish = local_publish,
    .subscribe = local_subscribe,
    .sweep = local_sweep,
    .replay = local_replay,
    .seq = local_seq,
    .forget = local_forget,
    .heartbeat = local_heartbeat,
    .members = local_members,
};

static int open_db(lbus_t *bus, const char *dir, uint64_t block_cache_bytes,
                   syncd_error_t *err)
{
    char *errptr = NULL;

    bus->dbopts = syncd_rocks_options(block_cache_bytes);
    bus->wopts = rocksdb_writeoptions_create();
    bus->ropts = rocksdb_readoptions_create();
    rocksdb_writeoptions_set_sync(bus->wopts, 1);
    bus->wb = rocksdb_writebatch_wi_create(0, 1);
    bus->db = rocksdb_open(bus->dbopts, dir, &errptr);
    if (errptr != NULL) {
        syncd_error_set_backend(err, SYNCD_EBACKEND, "rocksdb", 0,
                                "opening the bus log in %s: %s", dir, errptr);
        rocksdb_free(errptr);
        return SYNCD_EBACKEND;
    }
    return 0;
}

int syncd_bus_local_open(syncd_bus_t **out, uv_loop_t *loop,
                         const syncd_bus_options_t *opts, syncd_error_t *err)
{
    lbus_t *bus = calloc(1, sizeof(*bus));
    int rc;

    if (bus == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "allocating the bus");
    bus->tail = &bus->head;
    bus->done_tail = &bus->done;
    bus->mreqs_tail = &bus->mreqs;
    pthread_mutex_init(&bus->mu, NULL);
    pthread_cond_init(&bus->cv, NULL);
    rc = syncd_bus_init(&bus->base, &local_ops, loop, opts, err);
    if (rc == 0 && opts->data_dir != NULL)
        rc = open_db(bus, opts->data_dir, opts->block_cache_bytes, err);
    if (rc == 0 && bus->db != NULL) {
        bus->thread_up =
            pthread_create(&bus->thread, NULL, batch_thread, bus) == 0;
        if (bus->thread_up &&
            uv_async_init(loop, &bus->async, on_batch_done) != 0)
            stop_thread(bus);
        else
            bus->async.data = bus;
        if (!bus->thread_up)
            rc = syncd_error_set(err, SYNCD_ENOMEM,
                                 "starting the bus log's thread");
    }
    if (rc != 0) {
        free_db(bus);
        free(bus->base.secret);
        pthread_mutex_destroy(&bus->mu);
        pthread_cond_destroy(&bus->cv);
        free(bus);
        return rc;
    }
    uv_idle_init(loop, &bus->idle);
    bus->idle.data = bus;
    *out = &bus->base;
    return 0;
}
