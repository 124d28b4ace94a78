/* bus_local.c - the in-process change bus of the embedded default.
 *
 * Same contract as the Redis bus, inside one process: each collection has a
 * counter that gives contiguous seqs, and a replay log bounded by
 * event_log_len. With a data_dir the counter and the log live in RocksDB
 * (keys "c/<coll>" -> decimal seq, "e/<coll>/<16 hex seq>" -> event JSON),
 * so seqs continue after a restart; recent events are also kept decoded in
 * a ring for cheap delivery. Without a data_dir the ring is the log (bounded
 * by min(event_log_len, 2^20) events).
 *
 * Nothing is called back from inside a call: publish, replay and seq queue
 * their completions, and subscribers are fed from a uv_idle handle that runs
 * only while there is work. Each pass fires the queued completions, then
 * hands every subscription up to PUMP_BATCH of its next events in seq
 * order; an event the log no longer holds becomes SYNCD_BUS_RESYNC.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rocksdb/c.h>

#include "pubsub/internal.h"

/* Events handed to one subscription per idle pass. */
#define PUMP_BATCH 1024
/* Decoded recent events kept per collection when RocksDB holds the log. */
#define RING_PERSISTED 4096
/* Bound of an in-memory log. */
#define RING_MEMORY (1u << 20)

typedef struct slot {
    int64_t seq;
    json_t *event;
} slot_t;

typedef struct lcoll {
    struct lcoll *next;
    char name[BUS_NAME_MAX];
    int64_t seq;  /* last assigned */
    slot_t *ring; /* event of seq s at ring[s % cap] */
    size_t cap;
    syncd_bus_sub_t *subs;
} lcoll_t;

typedef enum { REQ_PUBLISH, REQ_REPLAY, REQ_SEQ } req_kind_t;

/* A completed request waiting for the idle pass to call it back. */
typedef struct lreq {
    struct lreq *next;
    req_kind_t kind;
    int status;
    int64_t seq;
    json_t *events;
    syncd_bus_publish_cb publish_cb;
    syncd_bus_replay_cb replay_cb;
    syncd_bus_seq_cb seq_cb;
    void *payload;
} lreq_t;

typedef struct lbus {
    syncd_bus_t base;
    uv_idle_t idle;
    int idle_active;
    rocksdb_t *db;
    rocksdb_options_t *dbopts;
    rocksdb_writeoptions_t *wopts;
    rocksdb_readoptions_t *ropts;
    lcoll_t *colls;
    lreq_t *head, **tail;
} lbus_t;

static void on_idle(uv_idle_t *idle);

static void wake(lbus_t *bus)
{
    if (!bus->idle_active && !bus->base.closed) {
        bus->idle_active = 1;
        uv_idle_start(&bus->idle, on_idle);
    }
}

static uint64_t log_len(const lbus_t *bus, const lcoll_t *c)
{
    return bus->db != NULL ? bus->base.event_log_len : c->cap;
}

/* First seq the log of c still holds. */
static int64_t first_held(const lbus_t *bus, const lcoll_t *c)
{
    int64_t first = c->seq - (int64_t)log_len(bus, c) + 1;
    return first > 1 ? first : 1;
}

static void event_key(char *key, size_t size, const char *coll, int64_t seq)
{
    snprintf(key, size, "e/%s/%016" PRIx64, coll, (uint64_t)seq);
}

/* Loads coll's counter from RocksDB into c->seq; 0 or SYNCD_EBACKEND. */
static int load_seq(lbus_t *bus, lcoll_t *c, syncd_error_t *err)
{
    char key[BUS_NAME_MAX + 8], num[32];
    char *errptr = NULL, *val;
    size_t len = 0;

    snprintf(key, sizeof(key), "c/%s", c->name);
    val = rocksdb_get(bus->db, bus->ropts, key, strlen(key), &len, &errptr);
    if (errptr != NULL) {
        syncd_error_set_backend(err, SYNCD_EBACKEND, "rocksdb", 0,
                                "reading the bus counter of %s: %s", c->name,
                                errptr);
        rocksdb_free(errptr);
        return SYNCD_EBACKEND;
    }
    if (val != NULL) {
        snprintf(num, sizeof(num), "%.*s", (int)len, val);
        c->seq = strtoll(num, NULL, 10);
        rocksdb_free(val);
    }
    return 0;
}

/* Finds coll's record into *out, creating it on first use. */
static int get_coll(lbus_t *bus, const char *coll, lcoll_t **out,
                    syncd_error_t *err)
{
    lcoll_t *c;
    uint64_t bound = bus->db != NULL ? RING_PERSISTED : RING_MEMORY;
    int rc;

    for (c = bus->colls; c != NULL; c = c->next) {
        if (strcmp(c->name, coll) == 0) {
            *out = c;
            return 0;
        }
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "allocating a collection");
    snprintf(c->name, sizeof(c->name), "%s", coll);
    c->cap = (size_t)(bus->base.event_log_len < bound ? bus->base.event_log_len
                                                      : bound);
    c->ring = calloc(c->cap, sizeof(*c->ring));
    rc = c->ring == NULL
             ? syncd_error_set(err, SYNCD_ENOMEM, "allocating a replay ring")
         : bus->db != NULL ? load_seq(bus, c, err)
                           : 0;
    if (rc != 0) {
        free(c->ring);
        free(c);
        return rc;
    }
    c->next = bus->colls;
    bus->colls = c;
    *out = c;
    return 0;
}

static void queue(lbus_t *bus, lreq_t *req)
{
    req->next = NULL;
    *bus->tail = req;
    bus->tail = &req->next;
    wake(bus);
}

static lreq_t *new_req(req_kind_t kind, void *payload)
{
    lreq_t *req = calloc(1, sizeof(*req));

    if (req != NULL) {
        req->kind = kind;
        req->payload = payload;
    }
    return req;
}

/* Persists c's counter (and, when text is set, event seq with the trim of
 * the event that falls out of the log). */
static int persist(lbus_t *bus, lcoll_t *c, int64_t seq, const char *text,
                   size_t len)
{
    char key[BUS_NAME_MAX + 24], num[32];
    rocksdb_writebatch_t *wb;
    char *errptr = NULL;

    if (bus->db == NULL)
        return 0;
    wb = rocksdb_writebatch_create();
    snprintf(key, sizeof(key), "c/%s", c->name);
    snprintf(num, sizeof(num), "%lld", (long long)seq);
    rocksdb_writebatch_put(wb, key, strlen(key), num, strlen(num));
    if (text != NULL) {
        event_key(key, sizeof(key), c->name, seq);
        rocksdb_writebatch_put(wb, key, strlen(key), text, len);
        if ((uint64_t)seq > bus->base.event_log_len) {
            event_key(key, sizeof(key), c->name,
                      seq - (int64_t)bus->base.event_log_len);
            rocksdb_writebatch_delete(wb, key, strlen(key));
        }
    }
    rocksdb_write(bus->db, bus->wopts, wb, &errptr);
    rocksdb_writebatch_destroy(wb);
    if (errptr != NULL) {
        rocksdb_free(errptr);
        return SYNCD_EBACKEND;
    }
    return 0;
}

static int local_publish(syncd_bus_t *base, const char *coll, char *body_new,
                         size_t len, syncd_bus_publish_cb cb, void *payload)
{
    lbus_t *bus = (lbus_t *)base;
    lreq_t *req = NULL;
    json_t *event = NULL;
    char *text = NULL;
    size_t text_len = 0;
    lcoll_t *c;
    slot_t *slot;
    int rc;

    rc = get_coll(bus, coll, &c, NULL);
    if (rc != 0)
        goto cleanup;
    text = bus_splice_seq(body_new, len, c->seq + 1, &text_len);
    req = new_req(REQ_PUBLISH, payload);
    if (text == NULL || req == NULL ||
        (event = json_loadb(text, text_len, 0, NULL)) == NULL) {
        rc = SYNCD_ENOMEM;
        goto cleanup;
    }
    rc = persist(bus, c, c->seq + 1, text, text_len);
    if (rc != 0)
        goto cleanup;
    c->seq++;
    slot = &c->ring[(uint64_t)c->seq % c->cap];
    json_decref(slot->event);
    slot->seq = c->seq;
    slot->event = event;
    event = NULL;
    base->stats.published++;
    req->seq = c->seq;
    req->publish_cb = cb;
    queue(bus, req);
    req = NULL;

cleanup:
    json_decref(event);
    free(req);
    free(text);
    free(body_new);
    return rc;
}

/* Reads event seq of c into *out (a new reference); SYNCD_ENOTFOUND when
 * the log no longer holds it, SYNCD_EBACKEND when it cannot be read. */
static int get_event(lbus_t *bus, lcoll_t *c, int64_t seq, json_t **out)
{
    const slot_t *slot = &c->ring[(uint64_t)seq % c->cap];
    char key[BUS_NAME_MAX + 24];
    char *errptr = NULL, *val;
    size_t len = 0;

    *out = NULL;
    if (seq < first_held(bus, c) || seq > c->seq)
        return SYNCD_ENOTFOUND;
    if (slot->event != NULL && slot->seq == seq) {
        *out = json_incref(slot->event);
        return 0;
    }
    if (bus->db == NULL)
        return SYNCD_ENOTFOUND;
    event_key(key, sizeof(key), c->name, seq);
    val = rocksdb_get(bus->db, bus->ropts, key, strlen(key), &len, &errptr);
    if (errptr != NULL) {
        rocksdb_free(errptr);
        return SYNCD_EBACKEND;
    }
    if (val == NULL)
        return SYNCD_ENOTFOUND;
    *out = json_loadb(val, len, 0, NULL);
    rocksdb_free(val);
    return *out != NULL ? 0 : SYNCD_EBACKEND;
}

/* Starts sub: from the current seq when it gave none, else from its after;
 * an after beyond the counter means the caller saw seqs this log lost, so
 * the counter moves up to it (seqs never repeat) and sub is told to
 * resync. */
static int local_subscribe(syncd_bus_t *base, syncd_bus_sub_t *sub,
                           syncd_error_t *err)
{
    lbus_t *bus = (lbus_t *)base;
    lcoll_t *c;
    int rc = get_coll(bus, sub->coll, &c, err);

    if (rc != 0)
        return rc;
    if (sub->last < 0) {
        sub->last = c->seq;
        sub->catching = 0;
    } else if (sub->last > c->seq) {
        if (persist(bus, c, sub->last, NULL, 0) != 0)
            return syncd_error_set_backend(err, SYNCD_EBACKEND, "rocksdb", 0,
                                           "raising the bus counter of %s",
                                           c->name);
        c->seq = sub->last;
        sub->lost = 1;
    }
    sub->chan = c;
    sub->next = c->subs;
    c->subs = sub;
    wake(bus);
    return 0;
}

/* Hands sub up to PUMP_BATCH events; returns 1 when it has more waiting. */
static int feed(lbus_t *bus, lcoll_t *c, syncd_bus_sub_t *sub)
{
    json_t *event;
    int n = 0;

    if (sub->lost) {
        sub->lost = 0;
        if (!bus_deliver(sub, SYNCD_BUS_RESYNC, sub->last, NULL))
            return 0;
    }
    sub->catching = 0;
    while (n++ < PUMP_BATCH && bus_sub_live(sub) && sub->last < c->seq) {
        int64_t next = sub->last + 1;

        if (next < first_held(bus, c)) {
            bus_deliver(sub, SYNCD_BUS_RESYNC, first_held(bus, c) - 1, NULL);
            continue;
        }
        if (get_event(bus, c, next, &event) != 0) {
            bus_deliver(sub, SYNCD_BUS_RESYNC, next, NULL);
            continue;
        }
        bus_deliver(sub, SYNCD_BUS_EVENT, next, event);
        json_decref(event);
    }
    return bus_sub_live(sub) && sub->last < c->seq;
}

static void fire(lreq_t *req, int status)
{
    if (status == 0)
        status = req->status;
    switch (req->kind) {
    case REQ_PUBLISH:
        if (req->publish_cb != NULL)
            req->publish_cb(status, status == 0 ? req->seq : 0, req->payload);
        break;
    case REQ_REPLAY:
        req->replay_cb(status, status == 0 ? req->events : NULL, req->payload);
        if (status == 0)
            req->events = NULL;
        break;
    case REQ_SEQ:
        req->seq_cb(status, status == 0 ? req->seq : 0, req->payload);
        break;
    }
    json_decref(req->events);
    free(req);
}

/* Fires every queued completion with status (0: each its own). */
static void fire_all(lbus_t *bus, int status)
{
    lreq_t *req = bus->head;

    bus->head = NULL;
    bus->tail = &bus->head;
    while (req != NULL) {
        lreq_t *next = req->next;
        fire(req, status);
        req = next;
    }
}

static void on_idle(uv_idle_t *idle)
{
    lbus_t *bus = idle->data;
    int more = 0;

    bus_enter(&bus->base);
    fire_all(bus, 0);
    for (lcoll_t *c = bus->colls; c != NULL && !bus->base.closing;
         c = c->next) {
        for (syncd_bus_sub_t *sub = c->subs; sub != NULL; sub = sub->next)
            more |= feed(bus, c, sub);
    }
    if (!more && bus->head == NULL && !bus->base.closed) {
        bus->idle_active = 0;
        uv_idle_stop(&bus->idle);
    }
    bus_leave(&bus->base);
}

static int local_replay(syncd_bus_t *base, const char *coll, int64_t after,
                        int64_t until, size_t max, syncd_bus_replay_cb cb,
                        void *payload)
{
    lbus_t *bus = (lbus_t *)base;
    lreq_t *req = new_req(REQ_REPLAY, payload);
    lcoll_t *c;
    int64_t hi;
    int rc;

    if (req == NULL)
        return SYNCD_ENOMEM;
    req->replay_cb = cb;
    rc = get_coll(bus, coll, &c, NULL);
    if (rc != 0 || (req->events = json_array()) == NULL) {
        free(req);
        return rc != 0 ? rc : SYNCD_ENOMEM;
    }
    hi = until < 0 || until > c->seq ? c->seq : until;
    if (after < hi && after + 1 < first_held(bus, c))
        req->status = SYNCD_ENOTFOUND;
    for (int64_t s = after + 1; req->status == 0 && s <= hi; s++) {
        json_t *event;
        if (max != 0 && json_array_size(req->events) >= max)
            break;
        req->status = get_event(bus, c, s, &event);
        if (req->status == 0)
            json_array_append_new(req->events, event);
    }
    if (req->status == 0)
        base->stats.replayed += json_array_size(req->events);
    queue(bus, req);
    return 0;
}

static int local_seq(syncd_bus_t *base, const char *coll, syncd_bus_seq_cb cb,
                     void *payload)
{
    lbus_t *bus = (lbus_t *)base;
    lreq_t *req;
    lcoll_t *c;
    int rc = get_coll(bus, coll, &c, NULL);

    if (rc != 0)
        return rc;
    req = new_req(REQ_SEQ, payload);
    if (req == NULL)
        return SYNCD_ENOMEM;
    req->seq_cb = cb;
    req->seq = c->seq;
    queue(bus, req);
    return 0;
}

static void local_sweep(syncd_bus_t *base)
{
    lbus_t *bus = (lbus_t *)base;

    for (lcoll_t *c = bus->colls; c != NULL; c = c->next)
        bus_subs_sweep(&c->subs);
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
}

static void on_closed(uv_handle_t *handle)
{
    lbus_t *bus = handle->data;

    while (bus->colls != NULL) {
        lcoll_t *c = bus->colls;
        bus->colls = c->next;
        bus_subs_release(&c->subs);
        for (size_t i = 0; i < c->cap; i++)
            json_decref(c->ring[i].event);
        free(c->ring);
        free(c);
    }
    free_db(bus);
    bus_finish_close(&bus->base);
    free(bus);
}

static void local_close(syncd_bus_t *base)
{
    lbus_t *bus = (lbus_t *)base;

    bus_enter(base);
    fire_all(bus, SYNCD_ECANCELED);
    bus_leave(base);
    uv_close((uv_handle_t *)&bus->idle, on_closed);
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
};

static int open_db(lbus_t *bus, const char *dir, syncd_error_t *err)
{
    char *errptr = NULL;

    bus->dbopts = rocksdb_options_create();
    bus->wopts = rocksdb_writeoptions_create();
    bus->ropts = rocksdb_readoptions_create();
    rocksdb_options_set_create_if_missing(bus->dbopts, 1);
    bus->db = rocksdb_open(bus->dbopts, dir, &errptr);
    if (errptr != NULL) {
        syncd_error_set_backend(err, SYNCD_EBACKEND, "rocksdb", 0,
                                "opening the bus log in %s: %s", dir, errptr);
        rocksdb_free(errptr);
        return SYNCD_EBACKEND;
    }
    return 0;
}

int bus_local_open(syncd_bus_t **out, uv_loop_t *loop,
                   const syncd_bus_options_t *opts, syncd_error_t *err)
{
    lbus_t *bus = calloc(1, sizeof(*bus));
    int rc;

    if (bus == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "allocating the bus");
    bus->tail = &bus->head;
    rc = bus_init(&bus->base, &local_ops, loop, opts, err);
    if (rc == 0 && opts->data_dir != NULL)
        rc = open_db(bus, opts->data_dir, err);
    if (rc != 0) {
        free_db(bus);
        free(bus->base.secret);
        free(bus);
        return rc;
    }
    uv_idle_init(loop, &bus->idle);
    bus->idle.data = bus;
    *out = &bus->base;
    return 0;
}
