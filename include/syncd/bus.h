/* bus.h - the change bus: every committed change, as an event, to every
 * node, in the order of its collection's event sequence.
 *
 * An event is the JSON object of DESIGN.md section 4. Publishing assigns
 * the collection's next `seq` (contiguous, the same on every node) and
 * appends the event to a bounded replay log; subscribers receive events in
 * seq order. Two implementations share this interface: the Redis bus (one
 * Lua script does INCR + XADD + PUBLISH; pub/sub is the fast path, the
 * stream the replay log) and the in-process bus of the embedded default
 * (memory, with the counter, the replay log and the deduplication state
 * fsynced to RocksDB with each publish, by the libuv thread pool).
 *
 * Publishing deduplicates by version at the source: an event of (coll, id,
 * v) is dropped when the bus already published one of that (coll, id) with
 * a version >= v, unless it is a create whose "ts" is later than the
 * recorded one (a re-create after the tombstone was purged restarts the
 * versions). It also keeps each document's versions in order:
 * syncd_bus_publish_in_order() refuses a version whose predecessor is
 * neither the last version the bus published for that (coll, id) nor
 * known to the publisher as published, so that a later version can never
 * overtake an earlier one (which deduplication would then drop for good).
 * With Redis the checks and the publish are one atomic script, so this
 * holds across nodes. The record of an id goes when the store purges its
 * tombstone (syncd_bus_forget()), so that the bus keeps records for the
 * ids that exist, not for every id ever written.
 *
 * Per-collection state lives while the collection has subscriptions or
 * requests in flight, and is freed after that (but for the in-process bus
 * without a data_dir, whose memory is the log of a collection that has
 * published).
 *
 * The bus is asynchronous on a libuv loop and is used from that loop's
 * thread only. Every callback fires exactly once per request, with
 * SYNCD_ECANCELED when the bus closes first. Events passed to callbacks are
 * borrowed for the duration of the call (json_incref to keep one).
 */
#ifndef SYNCD_BUS_H
#define SYNCD_BUS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "syncd/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct syncd_bus syncd_bus_t;

/* Options for syncd_bus_open(); set defaults with syncd_bus_options_init().
 * Strings are borrowed during syncd_bus_open() only. */
typedef struct syncd_bus_options {
    const char *redis_url; /* "redis://[[user]:pass@]host:port[/db]" (user
                              and pass percent-encoded, AUTHenticated on
                              connect); NULL: in-process */
    const char *database;  /* key namespace "syncd:<db>:..."; "syncd" */
    const char *data_dir;  /* in-process bus: replay log dir (NULL: memory) */
    uint64_t block_cache_bytes; /* in-process bus: the replay log's RocksDB
                                   block cache; 0: none; 8 MiB */
    const char *node_id;        /* this node, for logs; "local" */
    const char *secret;         /* HMAC-SHA256 keys, comma-separated: sign with
                                   the first, accept any; NULL: unsigned */
    uint64_t event_log_len;     /* replay log bound per collection; 100000 */
    size_t max_event_bytes;     /* larger diffs become invalidates; 1 MiB */
    int64_t reconnect_min_ms;   /* Redis reconnect backoff start; 100 ms */
    int64_t reconnect_max_ms;   /* Redis reconnect backoff cap; 5 s */
    int64_t command_timeout_ms; /* deadline of every Redis command; 2 s */
} syncd_bus_options_t;

/* Sets every field of opts to its documented default. */
void syncd_bus_options_init(syncd_bus_options_t *opts);

/* Opens a bus on loop into *out (freed by syncd_bus_close()): the Redis
 * bus when opts->redis_url is set (it resolves the host on the thread
 * pool, connects in the background, reconnects with backoff, and drops and
 * reconnects a connection whose command goes unanswered past
 * command_timeout_ms), else the in-process bus. SYNCD_EINVAL for bad
 * options, SYNCD_EBACKEND when the replay log cannot be opened. */
int syncd_bus_open(syncd_bus_t **out, uv_loop_t *loop,
                   const syncd_bus_options_t *opts, syncd_error_t *err);

/* Fires when a close finishes; the bus memory is gone by then. */
typedef void (*syncd_bus_close_cb)(void *payload);

/* Cancels every pending request (their callbacks fire with
 * SYNCD_ECANCELED), closes connections and handles, then calls cb (may be
 * NULL) from the loop; the loop can then close clean. It waits for no
 * answer from Redis, so it finishes promptly even when Redis is frozen;
 * the in-process bus waits at most for the RocksDB batch it is running. */
void syncd_bus_close(syncd_bus_t *bus, syncd_bus_close_cb cb, void *payload);

/* Returns the static kind of the bus: "redis" or "local". */
const char *syncd_bus_kind(const syncd_bus_t *bus);

/* Returns 1 while the bus can publish and receive (always 1 for the
 * in-process bus), else 0. */
int syncd_bus_connected(const syncd_bus_t *bus);

/* Completion of a publish: status 0 and the assigned seq; status 0 and
 * seq 0 when the event was dropped as a duplicate of a version the bus
 * already published (counted in dropped_republished); or a negative
 * SYNCD_E* code: SYNCD_ECONFLICT when an earlier version of the document
 * must be published first (syncd_bus_publish_in_order(); nothing was
 * published), SYNCD_EBACKEND while Redis is unreachable,
 * SYNCD_ETIMEDOUT when Redis did not answer within command_timeout_ms (the
 * event may still have been published: publish it again, deduplication
 * drops it if so), SYNCD_ECANCELED when the bus closed first. */
typedef void (*syncd_bus_publish_cb)(int status, int64_t seq, void *payload);

/* Publishes event (borrowed; its "coll" names the collection; "seq",
 * "sig" are set by the bus) and calls cb (may be NULL) with the assigned
 * seq. The event is signed when a secret is configured. cb is called from
 * the loop after this returns 0, never before (a chain of publishes may
 * go on using its state); on an error returned here it is not called. */
int syncd_bus_publish(syncd_bus_t *bus, const json_t *event,
                      syncd_bus_publish_cb cb, void *payload);

/* Publishes event as syncd_bus_publish() does, in its document's version
 * order: settled is the highest version of the document the caller knows
 * to be published already (a transactional outbox knows it: every version
 * below its oldest pending marker); the event is refused (SYNCD_ECONFLICT)
 * unless its version follows the last one the bus published for the
 * document, or follows settled. syncd_bus_publish() is this with settled
 * v - 1: deduplication only. */
int syncd_bus_publish_in_order(syncd_bus_t *bus, const json_t *event,
                               int64_t settled, syncd_bus_publish_cb cb,
                               void *payload);

/* An event encoded for publishing: its text, signed when a secret is
 * configured, and what the bus reads of it to publish it. */
typedef struct syncd_bus_msg syncd_bus_msg_t;

/* Encodes event (borrowed; *out keeps no reference to it) for bus into
 * *out (caller owns it: publish it with syncd_bus_publish_msg() or free
 * it): what syncd_bus_publish() does before it hands the event to the bus,
 * so that a writer thread can do it and leave the loop only the
 * hand-over. Safe on any thread (it reads only what the bus was opened
 * with). SYNCD_EINVAL for a malformed event,
 * SYNCD_ETOOBIG past max_event_bytes, SYNCD_ENOMEM. */
int syncd_bus_encode(const syncd_bus_t *bus, const json_t *event,
                     syncd_bus_msg_t **out);

/* Publishes msg (taken, whatever the result) as
 * syncd_bus_publish_in_order() publishes its event (settled < 0: v - 1). */
int syncd_bus_publish_msg(syncd_bus_t *bus, syncd_bus_msg_t *msg,
                          int64_t settled, syncd_bus_publish_cb cb,
                          void *payload);

/* Frees an encoded event that is not published (NULL is a no-op). */
void syncd_bus_msg_free(syncd_bus_msg_t *msg);

/* What a subscription callback is told. */
typedef enum {
    SYNCD_BUS_EVENT = 0, /* the next event in seq order */
    SYNCD_BUS_RESYNC,    /* events were lost past the replay log: resync the
                            collection from the store; event is NULL and
                            seq is the seq delivery continues after */
} syncd_bus_signal_t;

/* Receives a collection's events in seq order, none skipped or repeated:
 * gaps are filled from the replay log, reconnects replay what was missed,
 * and loss beyond the log is reported as SYNCD_BUS_RESYNC. event is
 * borrowed for the call; it may be NULL with SYNCD_BUS_EVENT only where
 * the subscription wants no body (syncd_bus_sub_want_bodies()). */
typedef void (*syncd_bus_event_cb)(syncd_bus_signal_t signal, int64_t seq,
                                   const json_t *event, void *payload);

typedef struct syncd_bus_sub syncd_bus_sub_t;

/* Subscribes to coll's events with seq > after (after < 0: from the
 * current seq on) into *out (ended with syncd_bus_unsubscribe()). Events
 * from this node are delivered too. */
int syncd_bus_subscribe(syncd_bus_t *bus, syncd_bus_sub_t **out,
                        const char *coll, int64_t after, syncd_bus_event_cb cb,
                        void *payload, syncd_error_t *err);

/* Ends a subscription; its callback is not called again. */
void syncd_bus_unsubscribe(syncd_bus_sub_t *sub);

/* Which events' bodies a subscription callback needs. */
typedef enum {
    SYNCD_BUS_BODIES_NONE = 0,  /* none: seqs only */
    SYNCD_BUS_BODIES_ALL = 1,   /* every event's (the default) */
    SYNCD_BUS_BODIES_OTHERS = 2 /* those of events this bus did not publish */
} syncd_bus_bodies_t;

/* Says which events' bodies sub's callback needs (want). For an event
 * whose body it does not need, a bus that can tell without decoding it
 * hands SYNCD_BUS_EVENT with a NULL event: the embedded bus, which holds
 * recent events as text (every event on it is its own), and the Redis bus
 * for the events it published itself, which it knows by their bytes.
 * Otherwise the event is decoded and handed anyway. */
void syncd_bus_sub_want_bodies(syncd_bus_sub_t *sub, syncd_bus_bodies_t want);

/* Completion of a replay read: status 0 with a new JSON array of the
 * events (caller decrefs), or SYNCD_ENOTFOUND when the log no longer holds
 * seq after+1 (events == NULL), or another negative code (SYNCD_ETIMEDOUT
 * past command_timeout_ms). */
typedef void (*syncd_bus_replay_cb)(int status, json_t *events, void *payload);

/* Reads coll's events with after < seq <= until (until < 0: up to the
 * latest) from the replay log, at most max (0: no bound), in seq order. */
int syncd_bus_replay(syncd_bus_t *bus, const char *coll, int64_t after,
                     int64_t until, size_t max, syncd_bus_replay_cb cb,
                     void *payload);

/* Completion of a seq read: status 0 and coll's current (last assigned)
 * seq, 0 when nothing was published yet; or a negative code
 * (SYNCD_ETIMEDOUT past command_timeout_ms). */
typedef void (*syncd_bus_seq_cb)(int status, int64_t seq, void *payload);

/* Reads coll's current event seq. */
int syncd_bus_seq(syncd_bus_t *bus, const char *coll, syncd_bus_seq_cb cb,
                  void *payload);

/* Most ids one syncd_bus_forget() call takes. */
#define SYNCD_BUS_MAX_FORGET 256

/* Completion of syncd_bus_forget(): status 0 and how many records went,
 * or a negative code (SYNCD_ETIMEDOUT past command_timeout_ms). */
typedef void (*syncd_bus_forget_cb)(int status, size_t forgotten,
                                    void *payload);

/* Drops the deduplication records of coll's documents whose tombstones the
 * store purged: gone (borrowed, 1..SYNCD_BUS_MAX_FORGET members) maps each
 * id to the version of its purged tombstone, and an id's record goes only
 * while it names that version (one a re-create published since is kept).
 * Without it the records of ids created and deleted would never go. */
int syncd_bus_forget(syncd_bus_t *bus, const char *coll, const json_t *gone,
                     syncd_bus_forget_cb cb, void *payload);

/* ---- Membership ------------------------------------------------------- */

/* Longest encoded heartbeat the bus accepts (SYNCD_ETOOBIG past it). */
#define SYNCD_BUS_MAX_BEAT_BYTES (256 * 1024)

/* Most nodes a members read returns (the first by id). */
#define SYNCD_BUS_MAX_NODES 1000

/* Completion of a heartbeat: 0, or a negative code (SYNCD_EBACKEND while
 * Redis is unreachable, SYNCD_ETIMEDOUT past command_timeout_ms,
 * SYNCD_ECANCELED when the bus closed first). */
typedef void (*syncd_bus_heartbeat_cb)(int status, void *payload);

/* Announces this node (the bus's node_id) with beat (borrowed: a JSON
 * object, its "collections" member an object of collection -> seq) as
 * live for ttl_ms. The Redis bus SETs "syncd:<db>:node:<id>:beat" to the
 * beat with PX ttl_ms and records the id in the sorted set
 * "syncd:<db>:nodes" scored by Redis's clock (ms), in one script; the
 * in-process bus keeps the beat in memory. SYNCD_ETOOBIG past
 * SYNCD_BUS_MAX_BEAT_BYTES. */
int syncd_bus_heartbeat(syncd_bus_t *bus, const json_t *beat, int64_t ttl_ms,
                        syncd_bus_heartbeat_cb cb, void *payload);

/* Completion of a members read: status 0 with a new object (caller
 * decrefs) {"now_ms":N, "nodes":[{"id":"..","last_ms":N,"beat":{..}},..],
 * "newest":{"<coll>":seq,..}}: the live nodes (heartbeat key not expired)
 * in no set order, the time of their last heartbeat and the current time on
 * the bus's clock (ms since the epoch), and the current seq of every
 * collection their beats name; or a negative code as for a heartbeat. */
typedef void (*syncd_bus_members_cb)(int status, json_t *members,
                                     void *payload);

/* Reads the live nodes (at most SYNCD_BUS_MAX_NODES); the Redis bus drops
 * the ids of expired heartbeats from its sorted set as it reads. */
int syncd_bus_members(syncd_bus_t *bus, syncd_bus_members_cb cb, void *payload);

/* Counters of one bus (monotonic but for collections). dropped_duplicate
 * counts received events a subscription had seen; dropped_republished
 * counts publishes dropped by deduplication; timeouts counts commands that
 * got no answer within command_timeout_ms; collections is the number of
 * collections the bus holds state for right now (a gauge). */
typedef struct syncd_bus_stats {
    uint64_t published, received, replayed, gaps, resyncs, reconnects,
        dropped_malformed, dropped_oversize, dropped_signature,
        dropped_duplicate, dropped_republished, timeouts, collections;
    uint64_t auth_failures; /* AUTH of the URL's credentials refused */
    uint64_t received_own;  /* received events known as this bus's own by
                               their bytes, handed without their body */
} syncd_bus_stats_t;

/* Copies the bus counters into *out. */
void syncd_bus_stats(const syncd_bus_t *bus, syncd_bus_stats_t *out);

/* ---- Events (DESIGN.md section 4) -------------------------------------- */

/* Checks that event is a well-formed event object (every member present
 * with the right type, op-specific rules, size within max_bytes when not
 * 0); SYNCD_EINVAL names the bad member, SYNCD_ETOOBIG the size. */
int syncd_event_validate(const json_t *event, size_t max_bytes,
                         syncd_error_t *err);

/* Decodes len bytes of event JSON into *out (a new object) after
 * validation and, when secret is not NULL, HMAC-SHA256 verification of
 * "sig" under any key of secret, a comma-separated list (SYNCD_EINVAL
 * naming the failure). */
int syncd_event_decode(json_t **out, const char *data, size_t len,
                       size_t max_bytes, const char *secret,
                       syncd_error_t *err);

/* Encodes event compactly into a malloc'd string (caller frees), setting
 * "sig" first, under the first key of secret, when secret is not NULL;
 * NULL on out of memory. */
char *syncd_event_encode(json_t *event, const char *secret, size_t *len);

/* Writes the hex HMAC-SHA256 under secret (its first key when it is a
 * comma-separated list) of event's canonical form
 * without "sig" and "seq" (the bus assigns seq after signing) into out
 * (65 bytes). */
int syncd_event_sign(char out[65], const json_t *event, const char *secret,
                     syncd_error_t *err);

#ifdef __cplusplus
}
#endif

#endif
