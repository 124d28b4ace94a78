/* internal.h - what the bus implementations share inside pubsub/.
 *
 * syncd_bus_t is the common head of every bus: options, counters and the
 * table of operations of one implementation (bus_local.c, bus_redis.c),
 * which embeds it as its first member. Subscriptions are common too: each
 * implementation keeps them in per-collection lists and hands events to
 * syncd_bus_deliver(), which calls the user's callback and tracks the last seq.
 *
 * Reentrancy: user callbacks may unsubscribe anything or close the bus.
 * Every entry point that runs callbacks brackets them with syncd_bus_enter()
 * and syncd_bus_leave(); unsubscribing only marks a subscription dead, and the
 * implementation unlinks dead ones (and runs a requested close) when the
 * outermost syncd_bus_leave() returns.
 */
#ifndef SYNCD_PUBSUB_INTERNAL_H
#define SYNCD_PUBSUB_INTERNAL_H

#include "syncd/bus.h"

/* Longest collection name (DESIGN.md section 2) plus its NUL. */
#define BUS_NAME_MAX 65

/* What deduplication and ordering need to know of a published event. */
typedef struct bus_pub {
    const char *coll, *id; /* borrowed, for the publish call only */
    int64_t v;
    int64_t settled; /* the publisher knows versions <= settled published */
    int create;      /* op is "create" */
    int64_t ts_us;   /* "ts" in microseconds since the epoch */
} bus_pub_t;

/* A record in a bus_map_t: implementations embed it in their collection
 * records. */
typedef struct bus_map_entry {
    struct bus_map_entry *next; /* in its bucket */
    char name[BUS_NAME_MAX];
} bus_map_entry_t;

/* A chained hash table of collection records by name, grown and shrunk
 * with its count; it owns only its bucket array. */
typedef struct bus_map {
    bus_map_entry_t **buckets;
    size_t nbuckets, count;
} bus_map_t;

/* Returns the entry named name in map, or NULL. */
bus_map_entry_t *syncd_bus_map_find(const bus_map_t *map, const char *name);

/* Adds entry (its name set, not in map) to map; 0 or SYNCD_ENOMEM. */
int syncd_bus_map_add(bus_map_t *map, bus_map_entry_t *entry);

/* Removes entry (in map) from map. */
void syncd_bus_map_remove(bus_map_t *map, bus_map_entry_t *entry);

/* Frees map's bucket array (the entries are the caller's). */
void syncd_bus_map_free(bus_map_t *map);

/* Operations of one bus implementation. */
typedef struct bus_ops {
    const char *kind;
    /* Tears the bus down: cancels requests, closes handles, and finally
     * calls syncd_bus_finish_close() from a close callback. */
    void (*close)(syncd_bus_t *bus);
    int (*connected)(const syncd_bus_t *bus);
    /* Publishes body_new (the encoded event without "seq", owned by the
     * callee on every path) described by pub, unless deduplication drops
     * it. */
    int (*publish)(syncd_bus_t *bus, const bus_pub_t *pub, char *body_new,
                   size_t len, syncd_bus_publish_cb cb, void *payload);
    /* Starts delivery to sub (already filled in by bus.c). */
    int (*subscribe)(syncd_bus_t *bus, syncd_bus_sub_t *sub,
                     syncd_error_t *err);
    /* Unlinks the dead subscriptions (syncd_bus_dead_pop()) from their
     * collections and frees the collections left idle. */
    void (*sweep)(syncd_bus_t *bus);
    int (*replay)(syncd_bus_t *bus, const char *coll, int64_t after,
                  int64_t until, size_t max, syncd_bus_replay_cb cb,
                  void *payload);
    int (*seq)(syncd_bus_t *bus, const char *coll, syncd_bus_seq_cb cb,
               void *payload);
    /* gone is checked by bus.c: ids with integer versions. */
    int (*forget)(syncd_bus_t *bus, const char *coll, const json_t *gone,
                  syncd_bus_forget_cb cb, void *payload);
    /* Stores body_new (the encoded beat, owned by the callee on every
     * path) as this node's heartbeat for ttl_ms; beat is the decoded one
     * (borrowed). */
    int (*heartbeat)(syncd_bus_t *bus, const json_t *beat, char *body_new,
                     size_t len, int64_t ttl_ms, syncd_bus_heartbeat_cb cb,
                     void *payload);
    int (*members)(syncd_bus_t *bus, syncd_bus_members_cb cb, void *payload);
} bus_ops_t;

struct syncd_bus {
    const bus_ops_t *ops;
    uv_loop_t *loop;
    char database[BUS_NAME_MAX];
    char node_id[128];
    char *secret; /* NULL: unsigned events */
    uint64_t event_log_len;
    size_t max_event_bytes;
    int64_t reconnect_min_ms, reconnect_max_ms, command_timeout_ms;
    syncd_bus_stats_t stats;
    int depth;             /* nesting of syncd_bus_enter() */
    int closing;           /* syncd_bus_close() was called */
    int closed;            /* the implementation's close has started */
    syncd_bus_sub_t *dead; /* unsubscribed, not yet swept (by dead_next) */
    syncd_bus_close_cb close_cb;
    void *close_payload;
};

struct syncd_bus_sub {
    syncd_bus_t *bus;
    void *chan;                 /* the implementation's collection record */
    syncd_bus_sub_t *next;      /* in that record's list */
    syncd_bus_sub_t *dead_next; /* in the bus's dead list */
    char coll[BUS_NAME_MAX];
    int64_t last;              /* last seq delivered; -1 until known */
    int64_t want;              /* highest live seq seen while catching up */
    int refs;                  /* list + in-flight requests + deliveries */
    int dead;                  /* unsubscribed; unlinked by the next sweep */
    int catching;              /* reading the replay log before live events */
    int inflight;              /* a replay read is in flight */
    int lost;                  /* the backend lost data: resync first */
    syncd_bus_bodies_t bodies; /* which events' bodies the callback needs */
    syncd_bus_event_cb cb;
    void *payload;
};

/* Fills bus's common head from opts (strings copied); 0 or SYNCD_ENOMEM. */
int syncd_bus_init(syncd_bus_t *bus, const bus_ops_t *ops, uv_loop_t *loop,
                   const syncd_bus_options_t *opts, syncd_error_t *err);

/* Frees what syncd_bus_init() allocated, then calls the close callback; the
 * implementation frees its own memory right after. */
void syncd_bus_finish_close(syncd_bus_t *bus);

/* Opens a bracket around code that runs user callbacks (see the file
 * comment). */
void syncd_bus_enter(syncd_bus_t *bus);

/* Closes a syncd_bus_enter() bracket; the outermost one unlinks dead
 * subscriptions and runs a requested close. */
void syncd_bus_leave(syncd_bus_t *bus);

/* Takes a reference to sub. */
void syncd_bus_sub_ref(syncd_bus_sub_t *sub);

/* Drops a reference to sub; the last one frees it. */
void syncd_bus_sub_unref(syncd_bus_sub_t *sub);

/* Pops a subscription from bus's dead list (NULL when empty); the caller
 * owns the reference the list held. Sweeps start from this list, so that
 * they visit only the collections whose subscriptions ended. */
syncd_bus_sub_t *syncd_bus_dead_pop(syncd_bus_t *bus);

/* Unlinks the dead subscriptions of the list at *list (linked by next),
 * dropping the list's reference to each. */
void syncd_bus_subs_sweep(syncd_bus_sub_t **list);

/* Empties the list at *list, dropping the list's reference to each. */
void syncd_bus_subs_release(syncd_bus_sub_t **list);

/* Returns 1 when sub may still be called (not dead, bus not closing). */
int syncd_bus_sub_live(const syncd_bus_sub_t *sub);

/* Calls sub's callback with signal and seq, sets sub->last = seq and counts
 * resyncs; returns syncd_bus_sub_live() after the call. */
int syncd_bus_deliver(syncd_bus_sub_t *sub, syncd_bus_signal_t signal,
                      int64_t seq, const json_t *event);

/* Decodes a received event (len bytes at data) into *out, verifying its
 * signature when the bus has a secret; failures are counted in the bus's
 * dropped_* counters and return the negative code. */
int syncd_bus_receive(syncd_bus_t *bus, json_t **out, const char *data,
                      size_t len);

/* Returns a malloc'd copy of body (an encoded event object without "seq")
 * with "seq":seq spliced in first, its length in *len; NULL on ENOMEM. */
char *syncd_bus_splice_seq(const char *body, size_t body_len, int64_t seq,
                           size_t *len);

/* Returns 1 when name is a valid collection name (DESIGN.md section 2). */
int syncd_bus_name_valid(const char *name);

/* Returns 1 when the len bytes at id are a valid document id. */
int syncd_bus_id_valid(const char *id, size_t len);

/* Checks event like syncd_event_validate(), with "seq" required only when
 * with_seq is set (a publish carries none yet). */
int syncd_bus_event_check(const json_t *event, int with_seq, size_t max_bytes,
                          syncd_error_t *err);

/* Reads the RFC 3339 time s into microseconds since the epoch (*out);
 * 0, or -1 when s is not a valid RFC 3339 date-time. */
int syncd_bus_ts_micros(const char *s, int64_t *out);

/* The rule of bus.h for a publish of pub, given the version v and time
 * ts_us (microseconds) recorded for its (coll, id) (0 and 0 when none):
 * BUS_PUB_SEND, BUS_PUB_DUPLICATE (drop it), or BUS_PUB_EARLY (an earlier
 * version is not published yet: refuse it). */
int syncd_bus_pub_check(const bus_pub_t *pub, int64_t v, int64_t ts_us);

#define BUS_PUB_SEND 0
#define BUS_PUB_DUPLICATE 1
#define BUS_PUB_EARLY 2

/* Decodes as syncd_event_decode() does, setting *forged to 1 when the
 * event is well formed but its signature matches no key of secret. */
int syncd_bus_event_decode(json_t **out, const char *data, size_t len,
                           size_t max_bytes, const char *secret, int *forged,
                           syncd_error_t *err);

/* Verifies event's "sig" under any key of secret (a comma-separated list);
 * SYNCD_EINVAL when it is missing or matches none. */
int syncd_bus_event_verify(const json_t *event, const char *secret,
                           syncd_error_t *err);

/* Opens the in-process bus (bus_local.c), its replay log in
 * opts->data_dir (NULL: in memory only), into *out; the caller closes it
 * with syncd_bus_close(). */
int syncd_bus_local_open(syncd_bus_t **out, uv_loop_t *loop,
                         const syncd_bus_options_t *opts, syncd_error_t *err);

/* Opens the Redis bus (bus_redis.c) at opts->redis_url into *out; it
 * connects in the background. The caller closes it with syncd_bus_close(). */
int syncd_bus_redis_open(syncd_bus_t **out, uv_loop_t *loop,
                         const syncd_bus_options_t *opts, syncd_error_t *err);

struct redisAsyncContext;

/* Attaches hiredis's async context ac to loop (redis_uv.c): its I/O then
 * runs from the loop, and a failed connect or a dropped connection runs
 * ac's connect or disconnect callback. The adapter state is freed when
 * hiredis frees ac. 0, SYNCD_EINVAL when ac is attached already,
 * SYNCD_ENOMEM, or SYNCD_EBACKEND when libuv cannot watch its socket. */
int syncd_bus_redis_attach(struct redisAsyncContext *ac, uv_loop_t *loop);

#endif
