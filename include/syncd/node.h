/* node.h - a syncd node: one store and one change bus wired together on a
 * libuv loop, keeping the node's view converged with every other node's.
 *
 * The node publishes each change committed through it, applies every
 * received event to its cache by the rules of DESIGN.md section 4 (patch
 * when the cached version is the event's base and the hash matches; drop
 * duplicates; refetch on gaps and hash mismatches; resync when the replay
 * log was trimmed), runs anti-entropy every anti_entropy_interval (its
 * cached entries against the store's versions of the same ids, by chunk
 * digests), purges old tombstones of the store on a timer, and delivers
 * applied events to local watchers in seq order, once each.
 *
 * A node is used from its loop's thread only; blocking store work runs on
 * the libuv thread pool. Every callback fires exactly once, with
 * SYNCD_ECANCELED when the node closes first.
 */
#ifndef SYNCD_NODE_H
#define SYNCD_NODE_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "syncd/bus.h"
#include "syncd/error.h"
#include "syncd/store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct syncd_node syncd_node_t;

/* Options for syncd_node_open(); defaults from syncd_node_options_init(). */
typedef struct syncd_node_options {
    const char *node_id; /* origin of this node's events; "local" */
    int64_t anti_entropy_interval_ms; /* digest comparison period; 30 s */
    size_t max_event_bytes;           /* larger diffs are sent as invalidates;
                                         1 MiB */
    size_t max_doc_bytes;       /* a received patch that would grow a document
                                   past this is not applied: the node refetches
                                   instead; 8 MiB */
    size_t watch_buffer_events; /* per-watcher queue bound before it is
                                   told to resync; 10000 */
    size_t anti_entropy_chunk;  /* cached entries compared per store query
                                   (1..SYNCD_MAX_VERSIONS_IDS); 500 */
    int64_t tombstone_ttl_ms;   /* the store's tombstone TTL: tombstones are
                                   purged every quarter of it (1 s..1 h);
                                   negative: never; 24 h */
    size_t purge_batch;         /* tombstones one purge run removes at most
                                   (its report of the ids is held in
                                   memory): a run that reaches it is followed
                                   at once by the next; 0: no bound;
                                   10000 */
    /* Test hook (NULL in production): called on the worker thread with
     * hook_data before each chunk an anti-entropy pass over coll compares. */
    void (*ae_chunk_hook)(void *data, const char *coll);
    void *hook_data;
    size_t max_collections;     /* collections the node holds state for at
                                   once; 10000 */
    int64_t coll_idle_ms;       /* how long an idle collection that was written
                                   keeps its state; 30 s */
    int64_t outbox_interval_ms; /* republisher period (0: only at start and
                                   on bus reconnect); 5 s */
    int64_t outbox_min_age_ms;  /* markers younger than this are left to
                                   their writer's publish by the periodic
                                   republisher; 2 s (the bus timeout) */
    size_t max_apply_queue;     /* received events one collection may hold
                                   waiting to be applied; past it the node
                                   drops them and resyncs the collection
                                   instead (0: no bound); 10000 */
} syncd_node_options_t;

/* Sets every field of opts to its documented default. */
void syncd_node_options_init(syncd_node_options_t *opts);

/* Opens a node on loop over store and bus (both borrowed: they must outlive
 * the node) into *out, freed by syncd_node_close(). */
int syncd_node_open(syncd_node_t **out, uv_loop_t *loop, syncd_store_t *store,
                    syncd_bus_t *bus, const syncd_node_options_t *opts,
                    syncd_error_t *err);

/* Fires when a close finishes. */
typedef void (*syncd_node_close_cb)(void *payload);

/* Stops timers, ends watchers (their callbacks get SYNCD_NODE_CLOSED),
 * cancels pending work, then calls cb (may be NULL). Does not close the
 * store or the bus. */
void syncd_node_close(syncd_node_t *node, syncd_node_close_cb cb,
                      void *payload);

/* Completion of a publish: status 0 and the event's seq (0 when the bus
 * dropped it as a duplicate), or a negative code (the change is committed
 * in the store either way, with its outbox marker: the republisher
 * completes the publish). */
typedef void (*syncd_node_publish_cb)(int status, int64_t seq, void *payload);

/* Publishes a committed change (borrowed; op NONE publishes nothing and
 * calls cb with seq 0): first the versions still pending before it
 * (change->pending) as invalidate events, then its own event of DESIGN.md
 * section 4, in version order; cb fires after the last. Once all are
 * published the record's outbox is acked off the loop.
 *
 * Test hook: with the environment variable
 * SYNCD_TEST_CRASH_AFTER_COMMITS=N at syncd_node_open(), the process
 * raises SIGKILL on the N-th committed change it is asked to publish,
 * before publishing it. */
int syncd_node_publish(syncd_node_t *node, const syncd_change_t *change,
                       syncd_node_publish_cb cb, void *payload);

/* A committed change's publish, prepared ahead: its event built and
 * encoded, with what the publish needs of the change. */
typedef struct syncd_node_pub syncd_node_pub_t;

/* Prepares the publish of change (borrowed; not op NONE) into *out
 * (caller owns it: publish it with syncd_node_publish_prepared() or free
 * it): the part of syncd_node_publish() that needs no loop, and all that
 * the publish needs of change, which may be freed after it. A writer
 * thread does it right after its commit, so that the loop only hands the
 * event to the bus. Safe on any thread while the node is open. */
int syncd_node_prepare(const syncd_node_t *node, const syncd_change_t *change,
                       syncd_node_pub_t **out);

/* syncd_node_publish() of a change prepared by syncd_node_prepare() (pub
 * is taken, whatever the result). */
int syncd_node_publish_prepared(syncd_node_t *node, syncd_node_pub_t *pub,
                                syncd_node_publish_cb cb, void *payload);

/* Frees a prepared event that is not published (NULL is a no-op). */
void syncd_node_pub_free(syncd_node_pub_t *pub);

/* What a watcher is told. */
typedef enum {
    SYNCD_NODE_EVENT = 0, /* the next event in seq order (event set) */
    SYNCD_NODE_RESYNC,    /* the watcher fell behind or events were lost
                             past the replay log; it is closed after this */
    SYNCD_NODE_CLOSED,    /* the node is closing; the watcher is ended */
} syncd_node_signal_t;

/* Receives a collection's applied events in seq order, each once. */
typedef void (*syncd_node_watch_cb)(syncd_node_signal_t signal, int64_t seq,
                                    const json_t *event, void *payload);

typedef struct syncd_node_watch syncd_node_watch_t;

/* Watches coll (ids starting with prefix; NULL: all) from seq > since
 * (since < 0: from now on) into *out, ended by syncd_node_unwatch().
 * SYNCD_ENOTFOUND when since is older than the replay log holds; as the
 * log is read asynchronously, that is reported as the callback's first
 * signal, SYNCD_NODE_RESYNC with seq == since and no event before it. The
 * callback fires from the loop after the node's cache holds the event's
 * version. After SYNCD_NODE_RESYNC or SYNCD_NODE_CLOSED the node frees the
 * watch once the callback returns: unwatching it is allowed inside that
 * callback, not after. */
int syncd_node_watch(syncd_node_t *node, syncd_node_watch_t **out,
                     const char *coll, const char *prefix, int64_t since,
                     syncd_node_watch_cb cb, void *payload, syncd_error_t *err);

/* Runs the outbox republisher now (it also runs at open, when the bus
 * reconnects and every outbox_interval): publishes the pending markers of
 * every collection's records, oldest first per document, and acks each
 * record once its markers are published. min_age_ms skips markers
 * younger than that. A run already under way is followed by another. */
void syncd_node_republish(syncd_node_t *node, int64_t min_age_ms);

/* Ends a watch; its callback is not called again. NULL ignored. */
void syncd_node_unwatch(syncd_node_watch_t *watch);

/* Holds the node's state for coll (made, and subscribed, when the node has
 * none) until syncd_node_release(), so that a write counts the collection
 * it may create against max_collections before it commits. SYNCD_ETOOBIG
 * when the node already holds max_collections other collections,
 * SYNCD_EINVAL for a bad name, SYNCD_ECANCELED when closing. */
int syncd_node_hold(syncd_node_t *node, const char *coll, syncd_error_t *err);

/* Ends one syncd_node_hold() of coll; committed tells whether a change of
 * it was committed meanwhile (then its state stays for coll_idle_ms, else
 * an idle collection's state is freed at once). */
void syncd_node_release(syncd_node_t *node, const char *coll, int committed);

/* Tells the node that a read found a document of coll in the store, so
 * its cache may now hold one: a node with a cache that did not know coll
 * (created after its start, by another node) subscribes to it, and once
 * subscribed compares what it cached meanwhile with the store, so that
 * the document is not served stale until the next anti-entropy run.
 * Nothing for a node without a cache or one that knows coll. */
void syncd_node_note_read(syncd_node_t *node, const char *coll);

/* Returns the last seq of coll this node has applied (0 if none). */
int64_t syncd_node_seq(const syncd_node_t *node, const char *coll);

/* Returns a new object of collection -> last seq applied (caller decrefs)
 * for the collections the node holds subscribed, at most max of them, the
 * most recently written or received first; NULL on out of memory. */
json_t *syncd_node_seqs(const syncd_node_t *node, size_t max);

/* Counters of a node (monotonic), and the number of collections it holds
 * state for now. In the embedded default (no cache) an event is applied
 * once recorded and handed to the watchers. apply_queue_overflows counts
 * the times a collection's apply queue passed max_apply_queue (each one a
 * resync of that collection); apply_queued is the number of items waiting
 * in every apply queue now, apply_queue_peak the most one collection's
 * queue has held. */
typedef struct syncd_node_stats {
    uint64_t events_received, events_applied, events_dropped_duplicate,
        events_dropped_old, events_ignored_uncached, refetches, hash_mismatches,
        resyncs, anti_entropy_runs, anti_entropy_repairs, watchers,
        watch_resyncs, tombstones_purged, apply_queue_overflows;
    /* Deduplication records of purged ids the bus dropped, and the forget
     * requests that failed (their records stay). */
    uint64_t purged_ids_forgotten, forget_failures;
    uint64_t collections, apply_queued, apply_queue_peak;
    /* Publishes that waited their longest for the own publishes of
     * earlier versions this node committed, and went without them (those
     * versions then travel as invalidate markers). */
    uint64_t publish_waits_expired;
} syncd_node_stats_t;

/* Copies the node counters into *out. */
void syncd_node_stats(const syncd_node_t *node, syncd_node_stats_t *out);

/* Runs one anti-entropy pass now over every collection (the timer does the
 * same every anti_entropy_interval, skipping a tick while a run is still
 * going): the node's fresh cache entries are compared with the store's
 * versions of the same ids, and those that really differ are refetched or
 * dropped. Runs on the thread pool beside event delivery, never in its way.
 * cb (may be NULL) gets the status and the number of documents repaired. In
 * the embedded default there is no cache: nothing is compared. */
int syncd_node_anti_entropy(syncd_node_t *node,
                            void (*cb)(int status, uint64_t repaired,
                                       void *payload),
                            void *payload);

#ifdef __cplusplus
}
#endif

#endif
