/* store.h - versioned JSON documents: the store library a C server embeds.
 *
 * A syncd_store_t is one node's view of the documents: either the embedded
 * default (a RocksDB store of record in data_dir) or a MongoDB store of
 * record with a RocksDB cache in data_dir in front of it. Every write is a
 * compare-and-swap on the document version (DESIGN.md sections 2 and 3) and
 * returns a syncd_change_t describing what was committed, ready to be
 * published on the change bus.
 *
 * All calls are blocking and thread-safe: many threads may share one store.
 * Ownership: `**out` parameters receive objects the caller frees with the
 * matching _free(); json_t arguments are borrowed and never modified; a
 * syncd_doc_t body is shared and immutable (never modify it; json_incref it
 * to keep it past syncd_doc_free()).
 */
#ifndef SYNCD_STORE_H
#define SYNCD_STORE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "syncd/error.h"
#include "syncd/patch.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An open store (opaque). */
typedef struct syncd_store syncd_store_t;

/* Pass as if_match to mean "any version" (no precondition). */
#define SYNCD_ANY_VERSION ((int64_t)-1)

/* Longest document id in bytes, and longest node id. */
#define SYNCD_MAX_ID_BYTES 1024
#define SYNCD_MAX_NODE_ID 64

/* One document version: live, or a tombstone (deleted != 0, body NULL). */
typedef struct syncd_doc {
    char *coll;      /* collection name */
    char *id;        /* document id */
    int64_t version; /* 1 on create, +1 per change */
    json_t *body;    /* shared, immutable; NULL if deleted */
    char
        hash[SYNCD_HASH_HEX_LEN + 1]; /* content hash of body ("" if deleted) */
    int64_t mtime_ms;                 /* commit time, ms since the epoch */
    char origin[SYNCD_MAX_NODE_ID + 1]; /* node id that wrote it */
    int deleted;                        /* tombstone flag */
    json_t *outbox; /* the record's pending-publish markers, oldest first:
                       [{"v","base","op","h","t","by"}] (t: commit time in
                       ms, by: origin); shared, immutable; NULL: none */
    json_t *ikeys;  /* the record's recent idempotency keys:
                       [{"k","op","v","t"}]; shared, immutable; NULL: none */
    json_t *hist;   /* the record's history, oldest first: one entry per
                       kept earlier version, {"v","t","by","h","p"} (and
                       "del":true for a tombstone), p the compact JSON of
                       the RFC 6902 patch from version v+1's body to
                       version v's (a tombstone's body taken as {});
                       shared, immutable; NULL: none */

    /* The compact JSON text of hist, cached with it as [hist, text,
     * offset of the newest entry's text or 0] (see storage/history.c)
     * and used only while hist is that very array; shared, immutable;
     * NULL: not cached. */
    json_t *hist_text;
    /* The byte length of body's canonical JSON when known (the store sets
     * it where it wrote or read that text), else 0; whoever changes body
     * in place resets it. */
    size_t body_size;
} syncd_doc_t;

/* Frees doc and its strings and drops its body reference; NULL ignored. */
void syncd_doc_free(syncd_doc_t *doc);

/* Returns a deep copy of doc (the body is shared by reference); caller frees
 * with syncd_doc_free(); NULL on out of memory. */
syncd_doc_t *syncd_doc_dup(const syncd_doc_t *doc);

/* What a write did. */
typedef enum {
    SYNCD_CHANGE_NONE = 0, /* nothing changed; nothing written */
    SYNCD_CHANGE_CREATE,
    SYNCD_CHANGE_UPDATE,
    SYNCD_CHANGE_DELETE,
} syncd_change_op_t;

/* A committed change (or, with op NONE, the unchanged current document). */
typedef struct syncd_change {
    syncd_change_op_t op;
    syncd_doc_t *doc; /* the document after the change (tombstone on delete) */
    int64_t base;     /* version before the change; 0 for a create */
    json_t *patch;    /* RFC 6902 from base to doc; NULL on delete/none */
    json_t *merge;    /* RFC 7396 from base to doc; NULL when inexpressible */
    int attempts;     /* compare-and-swap attempts made */
    json_t *pending;  /* outbox markers of earlier versions still pending
                         when this one committed (publish them first, in
                         order); NULL when none */
    int replayed;     /* op NONE: an idempotency key matched an earlier write */
    syncd_change_op_t replayed_op; /* that write's op */
    int64_t replayed_version;      /* that write's version */
    char *text;      /* the canonical JSON of doc->body as the store keeps it
                        (owned, NUL-terminated); NULL when the write did not
                        make it (a delete, a replay, a write of no change) */
    size_t text_len; /* its length */
    /* Microseconds the write waited for its document's write lock, and
     * after its commit for the sync that made it durable (the embedded
     * store's group commit); 0 on a backend without a write lock. */
    int64_t lock_wait_us, sync_wait_us;
} syncd_change_t;

/* Frees a change and everything it holds; NULL ignored. */
void syncd_change_free(syncd_change_t *change);

/* Returns the static event name of op: "create", "update", "delete" or
 * "none". */
const char *syncd_change_op_name(syncd_change_op_t op);

/* Test hooks: a clock, a sleep and a random source for the edit loop. */
typedef struct syncd_store_hooks {
    int64_t (*now_ms)(void *data);            /* monotonic milliseconds */
    void (*sleep_ms)(void *data, int64_t ms); /* block for ms */
    uint64_t (*random)(void *data);           /* uniform 64-bit value */
    void *data;
} syncd_store_hooks_t;

/* Options for syncd_store_open(); set defaults with
 * syncd_store_options_init(), then override. Strings are borrowed during
 * syncd_store_open() only. */
/* Default RocksDB block cache of each database syncd opens (8 MiB). */
#define SYNCD_BLOCK_CACHE_BYTES ((uint64_t)8 << 20)

typedef struct syncd_store_options {
    const char *mongo_uri;      /* NULL: embedded RocksDB store of record */
    const char *database;       /* MongoDB database; default "syncd" */
    const char *data_dir;       /* RocksDB store (embedded) or cache dir */
    const char *node_id;        /* origin written with each change; "local" */
    int sync_writes;            /* embedded: fsync every commit; default 1 */
    int64_t cache_ttl_ms;       /* cache entry lifetime (embedded: of an
                                   in-memory tier entry); default 10 min */
    uint64_t cache_max_bytes;   /* cache size bound (embedded: of the
                                   in-memory tier); default 256 MiB */
    uint64_t block_cache_bytes; /* RocksDB block cache of the embedded store
                                   or the node cache; 0: none; default
                                   SYNCD_BLOCK_CACHE_BYTES */
    int max_retries;            /* conflict retries; default 10 */
    int64_t retry_delay_ms;     /* first backoff; default 5 ms */
    int64_t max_retry_delay_ms; /* backoff cap; default 1 s */
    int64_t edit_timeout_ms;    /* edit loop deadline; default 10 s */
    size_t max_doc_bytes;       /* serialized body limit; default 8 MiB */
    int64_t tombstone_ttl_ms;   /* tombstone lifetime; default 24 h */
    int64_t backend_timeout_ms; /* MongoDB connect/socket timeout; 5 s */
    int64_t idempotency_ttl_ms; /* how long a key replays; default 10 min */
    int outbox;      /* 1: each write appends a pending-publish marker to its
                        record (the transactional outbox of a node that
                        publishes and acks; the daemon sets it); default 0 */
    int keep_cache;  /* MongoDB mode: keep the cache of a previous run that
                        closed cleanly (a warm restart; what changed while
                        the node was down is repaired by anti-entropy);
                        default 0: start empty */
    int history_len; /* earlier versions each record keeps as reverse
                        patches; 0 keeps none; default 20 */
    uint64_t history_max_bytes;       /* bound of one record's history: its
                                         entries' patch text plus
                                         SYNCD_HISTORY_ENTRY_OVERHEAD each;
                                         default 1 MiB */
    const syncd_store_hooks_t *hooks; /* NULL: real clock, sleep, random */
} syncd_store_options_t;

/* Sets every field of opts to its documented default. */
void syncd_store_options_init(syncd_store_options_t *opts);

/* Opens a store as opts says into *out (freed with syncd_store_close());
 * SYNCD_EINVAL for bad options, SYNCD_EBACKEND when the backend cannot be
 * opened or reached. */
int syncd_store_open(syncd_store_t **out, const syncd_store_options_t *opts,
                     syncd_error_t *err);

/* Closes the store and frees it; NULL ignored. No call may be in flight. */
void syncd_store_close(syncd_store_t *store);

/* Returns the static kind of the store of record: "rocksdb" or "mongodb". */
const char *syncd_store_kind(const syncd_store_t *store);

/* Checks a collection name against ^[a-z0-9][a-z0-9_.-]{0,63}$;
 * SYNCD_EINVAL names the problem. */
int syncd_validate_collection(const char *coll, syncd_error_t *err);

/* Checks a document id (UTF-8, 1..1024 bytes, no control characters, none
 * of < > ? { }); SYNCD_EINVAL names the problem. */
int syncd_validate_id(const char *id, syncd_error_t *err);

/* Reads the live document coll/id into *out (cache when fresh, else the
 * store of record); SYNCD_ENOTFOUND when absent or deleted. */
int syncd_store_get(syncd_store_t *store, syncd_doc_t **out, const char *coll,
                    const char *id, syncd_error_t *err);

/* Reads the live document coll/id as syncd_store_get() does, but as its
 * body's canonical JSON (sorted keys, compact): *text (malloc'd,
 * NUL-terminated, caller frees), its length in *len and the version in
 * *version. The in-memory tier keeps each version's text once made, so a
 * read it answers copies bytes and serializes nothing. With memory_only the
 * call never does I/O or waits for it (a loop thread may make it): it returns
 * 1, *text NULL, when the in-memory tier cannot answer (then ask again without
 * memory_only). SYNCD_ENOTFOUND when absent or deleted. */
int syncd_store_get_text(syncd_store_t *store, char **text, size_t *len,
                         int64_t *version, const char *coll, const char *id,
                         int memory_only, syncd_error_t *err);

/* Creates coll/id with body (a JSON object); SYNCD_EEXISTS when it is live.
 * Over a tombstone the version continues at tombstone+1. */
int syncd_store_create(syncd_store_t *store, syncd_change_t **out,
                       const char *coll, const char *id, const json_t *body,
                       syncd_error_t *err);

/* Replaces coll/id with body, creating it when absent. With if_match set
 * (not SYNCD_ANY_VERSION) one strict attempt: SYNCD_EPRECONDITION unless
 * the live version equals if_match (SYNCD_ENOTFOUND if there is none). */
int syncd_store_put(syncd_store_t *store, syncd_change_t **out,
                    const char *coll, const char *id, const json_t *body,
                    int64_t if_match, syncd_error_t *err);

/* Edit callback: modify body (a private copy) in place; return 0 to commit
 * (a body left unchanged writes nothing), or a negative SYNCD_E* code to
 * abort the edit with that code. fn must not call the store: the embedded
 * store runs it holding the document's write lock. */
typedef int (*syncd_edit_fn)(json_t *body, void *arg, syncd_error_t *err);

/* Runs the edit loop of DESIGN.md section 3 on the live coll/id: fn on a
 * private copy, compare-and-swap, exponential backoff with full jitter on
 * conflict. With if_match set: one strict attempt (SYNCD_EPRECONDITION on
 * mismatch). SYNCD_ECONFLICT when retries or edit_timeout run out. The
 * embedded store queues the writers of a document on a lock instead, so
 * there each write (put and patch too) commits in one attempt. */
int syncd_store_edit(syncd_store_t *store, syncd_change_t **out,
                     const char *coll, const char *id, syncd_edit_fn fn,
                     void *arg, int64_t if_match, syncd_error_t *err);

/* Applies an RFC 6902 patch (is_merge 0) or RFC 7396 merge patch (is_merge
 * 1) to coll/id inside the edit loop. An invalid patch is SYNCD_EPATCH; a
 * failing `test` op is SYNCD_ECONFLICT and is not retried. */
int syncd_store_patch(syncd_store_t *store, syncd_change_t **out,
                      const char *coll, const char *id, const json_t *patch,
                      int is_merge, int64_t if_match, syncd_error_t *err);

/* Deletes coll/id, leaving a tombstone that keeps the version line going:
 * the delete is a committed change at version+1 (change->base is the
 * deleted version), and a re-create continues after it. SYNCD_ENOTFOUND
 * when not live, SYNCD_EPRECONDITION on an if_match mismatch. */
int syncd_store_delete(syncd_store_t *store, syncd_change_t **out,
                       const char *coll, const char *id, int64_t if_match,
                       syncd_error_t *err);

/* Most pending-publish markers a record holds. A marker is dropped only by
 * the ack of its version (once published), never to make room: a write
 * to a record that holds this many (the bus has been failing for that
 * many versions of one document) fails with SYNCD_EBACKEND and writes
 * nothing, so a record stays bounded and no version is lost to watchers. */
#define SYNCD_MAX_OUTBOX_MARKERS 100

/* Longest idempotency key, and most keys a record remembers. */
#define SYNCD_MAX_IDEMPOTENCY_KEY 128
#define SYNCD_MAX_IDEMPOTENCY_KEYS 64

/* Per-write options; set defaults with syncd_write_options_init(). */
typedef struct syncd_write_options {
    int64_t if_match; /* SYNCD_ANY_VERSION (default): no precondition */
    /* NULL (default) or 1..128 printable ASCII bytes: a write that finds
     * the key among its record's keys younger than idempotency_ttl writes
     * nothing and returns op NONE with replayed set and the first write's
     * op and version; a write that commits records the key with the
     * record, atomically. Borrowed during the call. */
    const char *idempotency_key;
} syncd_write_options_t;

/* Sets every field of opts to its documented default. */
void syncd_write_options_init(syncd_write_options_t *opts);

/* Checks an idempotency key (1..128 printable ASCII bytes); SYNCD_EINVAL
 * names the problem. */
int syncd_validate_idempotency_key(const char *key, syncd_error_t *err);

/* syncd_store_create() with write options (if_match is ignored). */
int syncd_store_create_ex(syncd_store_t *store, syncd_change_t **out,
                          const char *coll, const char *id, const json_t *body,
                          const syncd_write_options_t *wo, syncd_error_t *err);

/* syncd_store_put() with write options (NULL: defaults). */
int syncd_store_put_ex(syncd_store_t *store, syncd_change_t **out,
                       const char *coll, const char *id, const json_t *body,
                       const syncd_write_options_t *wo, syncd_error_t *err);

/* syncd_store_create_ex() of a body the caller gives up: the store keeps
 * body's tree, not a copy. The caller's reference is taken, on error too,
 * and nobody may change body after the call. */
int syncd_store_create_new(syncd_store_t *store, syncd_change_t **out,
                           const char *coll, const char *id, json_t *body,
                           const syncd_write_options_t *wo, syncd_error_t *err);

/* syncd_store_put_ex() of a body the caller gives up, as
 * syncd_store_create_new(). */
int syncd_store_put_new(syncd_store_t *store, syncd_change_t **out,
                        const char *coll, const char *id, json_t *body,
                        const syncd_write_options_t *wo, syncd_error_t *err);

/* syncd_store_patch() with write options (NULL: defaults). */
int syncd_store_patch_ex(syncd_store_t *store, syncd_change_t **out,
                         const char *coll, const char *id, const json_t *patch,
                         int is_merge, const syncd_write_options_t *wo,
                         syncd_error_t *err);

/* syncd_store_delete() with write options (NULL: defaults). */
int syncd_store_delete_ex(syncd_store_t *store, syncd_change_t **out,
                          const char *coll, const char *id,
                          const syncd_write_options_t *wo, syncd_error_t *err);

/* ---- History and rollback (DESIGN.md section 2) ------------------------ */

/* Largest history_len. */
#define SYNCD_MAX_HISTORY_LEN 100000

/* Bytes a history entry is charged beyond its patch text. */
#define SYNCD_HISTORY_ENTRY_OVERHEAD 128

/* Reads coll/id's kept versions from the store of record (never the cache)
 * into *out, a new object {"coll","id","v","oldest","versions":[...]}: v
 * the current version, oldest the oldest kept one, and versions newest
 * first, each {"v","t" (commit time, ms),"time" (ISO 8601 UTC),"origin",
 * "h","deleted","patch"}, patch the RFC 6902 patch from that version's body
 * to the next one's (null for the current version; a tombstone's body is
 * taken as {}). SYNCD_ENOTFOUND when there is no record. */
int syncd_store_history(syncd_store_t *store, json_t **out, const char *coll,
                        const char *id, syncd_error_t *err);

/* Reads version `version` of coll/id from the store of record into *out
 * (the current version too; a tombstone version comes back deleted with
 * a NULL body), made by replaying the record's reverse patches; its hash
 * is checked against the kept one. SYNCD_ENOTFOUND, the message naming
 * the oldest kept version, when it is not kept (or there is no record). */
int syncd_store_get_version(syncd_store_t *store, syncd_doc_t **out,
                            const char *coll, const char *id, int64_t version,
                            syncd_error_t *err);

/* Writes the body of version `to` of coll/id as a new version through the
 * edit loop (an update; over a tombstone a re-create), with write options
 * wo (NULL: defaults; if_match makes it strict). Rolling back to the body
 * the document has already writes nothing (op NONE). SYNCD_ENOTFOUND when
 * version `to` is not kept or is a deletion. */
int syncd_store_rollback(syncd_store_t *store, syncd_change_t **out,
                         const char *coll, const char *id, int64_t to,
                         const syncd_write_options_t *wo, syncd_error_t *err);

/* ---- The transactional outbox ----------------------------------------- */

/* Drops the pending-publish markers of coll/id of versions <= version
 * (the caller published them all), whatever version the record is at now;
 * it changes nothing else of the record and never touches a marker of a
 * later version. Not fsynced (a lost ack only causes a republish). 0 also
 * when there was nothing to drop, or when the record moved on meanwhile
 * (its writer carried the markers forward; the next ack drops them). */
int syncd_store_outbox_ack(syncd_store_t *store, const char *coll,
                           const char *id, int64_t version, syncd_error_t *err);

/* Lists the records of coll with pending-publish markers, sorted by id,
 * strictly after after_id (NULL: from the start), at most limit (> 0),
 * into *out: a new JSON array of {"id","v","ob"} where ob is the record's
 * markers oldest first. */
int syncd_store_outbox_list(syncd_store_t *store, json_t **out,
                            const char *coll, const char *after_id,
                            size_t limit, syncd_error_t *err);

/* Lists live documents of coll from the store of record, sorted by id,
 * whose id starts with prefix (NULL: all) and sorts after `after` (NULL:
 * from the start), at most limit (0: no limit), into *out: a new JSON array
 * of {"id","v","h"} objects. */
int syncd_store_list(syncd_store_t *store, json_t **out, const char *coll,
                     const char *prefix, const char *after, size_t limit,
                     syncd_error_t *err);

/* Lists the collection names of the store of record into *out, a new
 * sorted JSON array of strings. */
int syncd_store_collections(syncd_store_t *store, json_t **out,
                            syncd_error_t *err);

/* A collection digest (DESIGN.md section 6). */
typedef struct syncd_digest {
    uint64_t count;                   /* live documents */
    char hex[SYNCD_HASH_HEX_LEN + 1]; /* Merkle root, lower-case hex */
} syncd_digest_t;

/* Computes the digest of coll's live documents in the store of record. */
int syncd_store_digest(syncd_store_t *store, syncd_digest_t *out,
                       const char *coll, syncd_error_t *err);

/* Computes the digest of a JSON array of {"id","v","h"} entries (any
 * order; the function sorts a copy) into *out. */
int syncd_digest_entries(syncd_digest_t *out, const json_t *entries,
                         syncd_error_t *err);

/* The collection digest built one entry at a time, in O(log n) memory (a
 * stack of the roots of perfect subtrees, heights decreasing): a plain
 * value the caller keeps, e.g. on the stack. */
typedef struct syncd_merkle {
    unsigned char nodes[64][32];
    unsigned char height[64];
    size_t depth;
    uint64_t count;
} syncd_merkle_t;

/* Starts an empty digest. */
void syncd_merkle_init(syncd_merkle_t *m);

/* Adds the entry (id, v, h); entries must come in strictly increasing id
 * order (byte order). SYNCD_ENOMEM on failure. The content digest of a
 * collection (what a restore compares, versions aside) is this digest with
 * every v given as 0. */
int syncd_merkle_add(syncd_merkle_t *m, const char *id, int64_t v,
                     const char *h);

/* Writes the digest of the entries added so far into *out: the same value
 * as syncd_digest_entries() of those entries. */
void syncd_merkle_final(const syncd_merkle_t *m, syncd_digest_t *out);

/* ---- Backups ------------------------------------------------------------ */

/* Most documents one syncd_store_export_page() call lists. */
#define SYNCD_MAX_EXPORT_PAGE 10000

/* Reads from the store of record (never the cache) at most limit
 * (1..SYNCD_MAX_EXPORT_PAGE) live documents of coll sorted by id, strictly
 * after `after` (NULL: from the start), into *out: a new JSON array of
 * {"id","v","h","data"} (each data a shared, immutable body).
 * A page shorter than limit is the last. Each document is at a version it
 * had at some moment of the call. SYNCD_EINVAL for a bad collection, id or
 * limit. */
int syncd_store_export_page(syncd_store_t *store, json_t **out,
                            const char *coll, const char *after, size_t limit,
                            syncd_error_t *err);

/* Writes a consistent RocksDB checkpoint of the embedded store of record
 * into dir (which must not exist; files are hard-linked when dir is on the
 * same file system): a store that syncd_store_open() opens as its data_dir.
 * SYNCD_EINVAL for a MongoDB store, SYNCD_EBACKEND when RocksDB fails (the
 * message says why). */
int syncd_store_checkpoint(syncd_store_t *store, const char *dir,
                           syncd_error_t *err);

/* ---- Ranged digests and verification (DESIGN.md sections 5 and 6) ------ */

/* Whose entries a ranged digest covers. */
typedef enum syncd_view {
    SYNCD_VIEW_NODE = 0, /* what this node serves: each fresh cache entry
                            (a cached tombstone hides its id) over the
                            store's live documents; the embedded default
                            has no cache, so there it is the store's */
    SYNCD_VIEW_STORE,    /* the store of record's live documents */
} syncd_view_t;

/* Most entries a ranged digest lists (syncd_store_digest_range()). */
#define SYNCD_MAX_RANGE_ENTRIES 1000

/* A ranged digest; release what it holds with syncd_range_digest_clear(). */
typedef struct syncd_range_digest {
    syncd_digest_t digest; /* of the range's entries: a sub-range digest */
    char *split;     /* malloc'd id cutting the range after its p-th entry,
                        p the largest power of two with 2p <= count, so each
                        part holds at least a quarter of the entries; NULL
                        when the range holds fewer than 2 */
    json_t *entries; /* new array of the range's first max_entries entries
                        {"id","v","h"} in id order; NULL when max_entries
                        is 0 */
    int truncated;   /* the range holds more than max_entries entries */
} syncd_range_digest_t;

/* Frees what rd holds and zeroes it. */
void syncd_range_digest_clear(syncd_range_digest_t *rd);

/* Computes into *out the digest of view's entries of coll whose id sorts
 * strictly after `after` and at or before `until` (either NULL: open on
 * that side), with a split id and, up to max_entries (at most
 * SYNCD_MAX_RANGE_ENTRIES), the entries themselves. Pages through the
 * store (and cache) a bounded page at a time, so memory does not grow with
 * the collection. SYNCD_EINVAL for a bad collection or id, or after not
 * sorting before until. */
int syncd_store_digest_range(syncd_store_t *store, syncd_range_digest_t *out,
                             const char *coll, syncd_view_t view,
                             const char *after, const char *until,
                             size_t max_entries, syncd_error_t *err);

/* Reads the live document coll/id of view into *out (caller frees):
 * SYNCD_VIEW_NODE as syncd_store_get() does, SYNCD_VIEW_STORE from the
 * store of record alone, leaving the cache as it is. SYNCD_ENOTFOUND when
 * absent or deleted. */
int syncd_store_read(syncd_store_t *store, syncd_doc_t **out, const char *coll,
                     const char *id, syncd_view_t view, syncd_error_t *err);

/* The outcome of syncd_store_verify(); release with syncd_verify_clear(). */
typedef struct syncd_verify {
    syncd_digest_t node;  /* of this node's view (SYNCD_VIEW_NODE) */
    syncd_digest_t store; /* of the store of record's live documents */
    uint64_t bodies;      /* bodies rehashed */
    json_t *differs;      /* new array, in id order, of {"id", "node_v",
                             "store_v" (null: none), "reason"}: "version" or
                             "hash" (the node's entry differs from the
                             store's), "body" (the body no longer hashes to
                             its stored hash), "missing" (the node holds a
                             tombstone of a live document), "extra" (the
                             node serves a document the store has not) */
    int truncated;        /* more differences than max_differs were found */
} syncd_verify_t;

/* Frees what v holds and zeroes it. */
void syncd_verify_clear(syncd_verify_t *v);

/* Checks this node's view of coll against the store, in one paged pass:
 * both digests, each cached entry's version and hash against the store's,
 * and each body the node would serve from itself (its cache; in the
 * embedded default, the store's own records) rehashed against its stored
 * hash. At most max_differs differences are listed. A document written
 * during the pass may show as differing. */
int syncd_store_verify(syncd_store_t *store, syncd_verify_t *out,
                       const char *coll, size_t max_differs,
                       syncd_error_t *err);

/* syncd_store_verify() with the body rehash chosen: without rehash only
 * the digests, versions and hashes are compared (no body is read). */
int syncd_store_verify_ex(syncd_store_t *store, syncd_verify_t *out,
                          const char *coll, size_t max_differs, int rehash,
                          syncd_error_t *err);

/* ---- Digests written at a clean close, checked at the next open -------- */

/* How much syncd_store_check_start() checks. */
typedef enum syncd_start_check {
    SYNCD_CHECK_AUTO = 0, /* FULL when the files under data_dir total less
                             than SYNCD_CHECK_FULL_BELOW, else DIGESTS */
    SYNCD_CHECK_OFF,      /* nothing (the digests file is still consumed) */
    SYNCD_CHECK_DIGESTS,  /* recompute each collection's digest from the
                             records' ids, versions and hashes */
    SYNCD_CHECK_FULL,     /* DIGESTS, and rehash every body against its
                             stored hash */
} syncd_start_check_t;

/* The store size under which SYNCD_CHECK_AUTO rehashes every body. */
#define SYNCD_CHECK_FULL_BELOW ((uint64_t)1 << 30)

/* The digests file, in the store's data_dir, and its format version. */
#define SYNCD_DIGESTS_FILE "digests.json"
#define SYNCD_DIGESTS_FORMAT 1

/* Writes the digests file of the store into its data_dir (atomically:
 * a temporary file, fsynced, renamed): {"format","kind","written",
 * "collections":{C:{"count","digest"}}}, kind "rocksdb" for the embedded
 * store of record (every collection's digest, DESIGN.md section 6) or
 * "cache" for a node cache kept across restarts (the digest of its own
 * live records); nothing for a cache that is not kept. Call it at a clean
 * close, once nothing writes any more, before syncd_store_close(). */
int syncd_store_save_digests(syncd_store_t *store, syncd_error_t *err);

/* Checks the store right after syncd_store_open(), before it serves: reads
 * and removes the digests file of the last clean close (none: the last
 * run did not close cleanly, or this is the first), then, per mode,
 * recomputes the digests and compares them with it and rehashes the
 * bodies. The embedded store of record is left as it is: the report names
 * each collection whose bodies do not match their hashes, for the caller
 * to refuse or repair. A kept node cache (MongoDB mode) that fails (a body
 * that does not match, or a digest other than at its clean close) is
 * dropped here, every entry, to be refilled from the store. *report gets a
 * new object: {"target":"store"|"cache","mode","auto","bytes","clean",
 * "written" (the file's time, or null),"collections","documents","bodies",
 * "changed":[{"coll","count","digest","shutdown_count",
 * "shutdown_digest"}],"corrupt":{C:{"ids":[...],"truncated"}},"kept",
 * "dropped"} ("kept": the cache held a previous run's records, and
 * "dropped", only for a cache; a cache not kept is not checked). */
int syncd_store_check_start(syncd_store_t *store, syncd_start_check_t mode,
                            json_t **report, syncd_error_t *err);

/* Most ids one syncd_store_versions() call takes. */
#define SYNCD_MAX_VERSIONS_IDS 1000

/* Reads from the store of record the version header of each id in ids (a
 * JSON array of 1..SYNCD_MAX_VERSIONS_IDS id strings, borrowed; one query
 * on MongoDB, projecting no body) into *out: a new JSON object mapping every id
 * that has a record, tombstones included, to {"v": version, "h": content hash
 * ("" for a tombstone), "del": true|false}. Ids without a record (never
 * written, or purged) are absent. No body is read; the cache is neither read
 * nor changed. SYNCD_EINVAL for a bad collection, id or ids array. */
int syncd_store_versions(syncd_store_t *store, json_t **out, const char *coll,
                         const json_t *ids, syncd_error_t *err);

/* Removes tombstones of coll older than tombstone_ttl, except those with
 * pending-publish markers, at most limit of them (0: all; a caller that
 * gets limit back calls again for the rest); the number removed goes to
 * *purged when not NULL, and when gone is not NULL *gone gets a new JSON
 * object (caller decrefs) mapping each removed id to its tombstone's
 * version, also when the call fails part way. */
int syncd_store_purge(syncd_store_t *store, const char *coll, size_t limit,
                      size_t *purged, json_t **gone, syncd_error_t *err);

/* ---- The node cache (MongoDB mode; in embedded mode these read and write
 * nothing and report SYNCD_ENOTFOUND / 0 entries) ------------------------ */

/* Reads coll/id from the cache only (fresh entries, tombstones included)
 * into *out; SYNCD_ENOTFOUND when not cached or expired. */
int syncd_store_cached(syncd_store_t *store, syncd_doc_t **out,
                       const char *coll, const char *id, syncd_error_t *err);

/* Stores doc in the cache unless a higher version is cached (put-if-newer);
 * returns 1 when stored, 0 when an equal or newer version was kept. */
int syncd_store_cache_put(syncd_store_t *store, const syncd_doc_t *doc,
                          syncd_error_t *err);

/* Applies an event's RFC 6902 patch (borrowed) to the cached body of
 * doc->coll/doc->id at version base in place, without copying or
 * serializing the document, and caches it as doc's version (version, hash,
 * mtime, origin; doc->body is not read) when the patched body's content
 * hash is doc->hash; readers meanwhile get the version before or wait for
 * the new one, never a body half-applied. *cached is the version of the
 * fresh cache entry found (-1: none, or the embedded store). Returns 1 when
 * applied; 0 when nothing was done (no fresh live entry at base, a reader
 * holds the body, or, with nonblocking, the work might wait for a lock,
 * I/O or a hash tree build): apply it otherwise; 2, with nonblocking, when
 * it would wait for a lock (nothing done, nothing known, *cached -1);
 * SYNCD_ECONFLICT when the
 * hash did not match (the entry is dropped: refetch it); SYNCD_EPATCH,
 * SYNCD_ETOOBIG (over max_doc_bytes), SYNCD_ENOMEM when the patch fails on
 * the cached body (left unchanged). */
int syncd_store_cache_patch(syncd_store_t *store, const syncd_doc_t *doc,
                            int64_t base, const json_t *patch, int nonblocking,
                            int64_t *cached, syncd_error_t *err);

/* Writes the cache records that changed since the last write, in one
 * batch, when the write-behind interval (a second) has passed since then;
 * else, or without a cache, does nothing. It serializes and does I/O: its
 * owner (the node) calls it a few times a second off the loop, since
 * syncd_store_cache_patch() never writes records itself. */
void syncd_store_cache_flush(syncd_store_t *store);

/* Sets *out to the hash listing (doc/HASH.md "Narrowing") of path, level,
 * from and count of doc (as syncd_store_read() gave it from the node's
 * view), a new object, from the hash tree the node cache keeps beside that
 * very body, with nothing hashed. 1 (nothing set) when there is no such
 * tree (no cache, a body without one, or another body by now): list from
 * a tree of the caller's own; else what syncd_htree_list_tree() returns. */
int syncd_store_cache_list_hashes(syncd_store_t *store, const syncd_doc_t *doc,
                                  const char *path, size_t level, size_t from,
                                  size_t count, json_t **out,
                                  syncd_error_t *err);

/* Drops coll/id from the cache (id NULL: the whole collection). */
int syncd_store_cache_invalidate(syncd_store_t *store, const char *coll,
                                 const char *id, syncd_error_t *err);

/* Lists cached live entries of coll as a new JSON array of {"id","v","h"}
 * sorted by id, into *out. */
int syncd_store_cache_list(syncd_store_t *store, json_t **out, const char *coll,
                           syncd_error_t *err);

/* Lists one page of coll's fresh cache entries, tombstones included: up to
 * limit (> 0) entries whose id sorts after `after` (NULL: from the start),
 * as a new JSON array of {"id","v","h"} (plus "del":true for a tombstone)
 * sorted by id, into *out. A page shorter than limit is the last. The
 * embedded store has no cache and lists nothing. */
int syncd_store_cache_page(syncd_store_t *store, json_t **out, const char *coll,
                           const char *after, size_t limit, syncd_error_t *err);

/* Reads coll/id from the store of record (bypassing the cache) into *out,
 * tombstones included, and refreshes the cache with it (put-if-newer);
 * SYNCD_ENOTFOUND when the store has no record. */
int syncd_store_refetch(syncd_store_t *store, syncd_doc_t **out,
                        const char *coll, const char *id, syncd_error_t *err);

/* Counters of one store; all monotonic except cache_bytes/cache_entries.
 * The cache_* counters are the node cache's in MongoDB mode and the
 * in-memory tier's of the RocksDB store in embedded mode; cache_writes
 * counts the records the node cache wrote to (or deleted from) its
 * RocksDB, 0 in embedded mode. */
typedef struct syncd_store_stats {
    uint64_t edits, conflicts, retries, cache_hits, cache_misses,
        cache_evictions, cache_bytes, cache_entries, cache_writes;
    uint64_t cas_fast; /* writes committed without a read of the record (one
                          compare-and-swap from the node cache's entry) */
    /* Memory of the store's RocksDB databases (the embedded store of
     * record, the node cache): memtables, table readers (indexes and
     * filters held outside the block cache) and the block cache. */
    uint64_t rocks_memtable_bytes, rocks_table_reader_bytes,
        rocks_block_cache_bytes;
} syncd_store_stats_t;

/* Copies the store's counters into *out. */
void syncd_store_stats(syncd_store_t *store, syncd_store_stats_t *out);

#ifdef __cplusplus
}
#endif

#endif
