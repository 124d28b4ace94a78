/* internal.h - storage module internals: the backend interface that the
 * RocksDB and MongoDB stores implement, the node cache, and the pieces of
 * the edit loop that tests drive directly.
 *
 * A backend stores records (live documents and tombstones) and offers one
 * primitive write, a compare-and-swap on the record version. Everything
 * above it (versions, tombstones, the edit loop, the cache) is written once
 * in store.c on top of this interface.
 */
#ifndef SYNCD_STORAGE_INTERNAL_H
#define SYNCD_STORAGE_INTERNAL_H

#include "base/rocks_options.h"
#include "syncd/store.h"

typedef struct syncd_backend syncd_backend_t;

/* Operations of a store of record. All are blocking and thread-safe. */
typedef struct syncd_backend_ops {
    const char *kind; /* "rocksdb" or "mongodb" */

    /* Reads the record coll/id, tombstones included, into *out (caller frees
     * with syncd_doc_free()); SYNCD_ENOTFOUND when there is none. */
    int (*get)(syncd_backend_t *b, syncd_doc_t **out, const char *coll,
               const char *id, syncd_error_t *err);

    /* Writes doc (its coll, id, version, body, hash, mtime, origin, deleted)
     * if and only if the stored record's version equals expected, where
     * expected 0 means "no record exists" (an insert). SYNCD_ECONFLICT when
     * the condition does not hold; nothing is written then. */
    int (*cas)(syncd_backend_t *b, const syncd_doc_t *doc, int64_t expected,
               syncd_error_t *err);

    /* Lists coll's records sorted by id (byte order) as a new JSON array of
     * {"id","v","h"} (and "del":true, "mt":ms for tombstones when
     * with_tombstones is set), filtered by prefix (NULL: all), strictly
     * after `after` (NULL: from the start), at most limit (0: all). */
    int (*list)(syncd_backend_t *b, json_t **out, const char *coll,
                const char *prefix, const char *after, size_t limit,
                int with_tombstones, syncd_error_t *err);

    /* Lists collection names as a new sorted JSON array of strings. */
    int (*collections)(syncd_backend_t *b, json_t **out, syncd_error_t *err);

    /* Removes coll's tombstones whose mtime is before before_ms and that
     * have no pending-publish marker, at most limit of them (0: no bound),
     * reading the collection a page at a time; count in *purged, and each
     * removed id mapped to its tombstone's version in gone (an object, or
     * NULL). A tombstone rewritten meanwhile (re-created) is kept. */
    int (*purge)(syncd_backend_t *b, const char *coll, int64_t before_ms,
                 size_t limit, size_t *purged, json_t *gone,
                 syncd_error_t *err);

    /* Closes and frees the backend. */
    void (*close)(syncd_backend_t *b);

    /* Reads the version header of each id in ids (a JSON array of at most
     * SYNCD_MAX_VERSIONS_IDS strings, borrowed) into *out, a new JSON object
     * mapping every id that has a record, tombstones included, to
     * {"v": version, "h": hash, "del": tombstone flag}; ids without a
     * record are left out. Bodies are not read. */
    int (*versions)(syncd_backend_t *b, json_t **out, const char *coll,
                    const json_t *ids, syncd_error_t *err);

    /* Optional (NULL: the edit loop calls cas): cas given also the
     * canonical JSON of doc's body (canon, len bytes, borrowed; NULL for a
     * tombstone) that the edit loop has already made to hash it, so that a
     * backend storing canonical JSON does not serialize the body again. */
    int (*cas_canonical)(syncd_backend_t *b, const syncd_doc_t *doc,
                         const char *canon, size_t len, int64_t expected,
                         syncd_error_t *err);

    /* Optional (NULL: writers of a key race, and the edit loop retries
     * their conflicts): runs fn(arg, err) holding coll/id's write lock,
     * which every writer of that key in this process takes, and returns
     * fn's result. The lock is re-entrant, so fn may call get and cas on
     * coll/id (get then sees the key's commits not yet durable, which
     * other readers do not); fn must not touch other keys (their locks
     * taken in another order could deadlock). After releasing the lock it
     * waits until what fn committed is durable, failing with
     * SYNCD_EBACKEND when that sync fails. SYNCD_EINVAL, fn not called,
     * when coll/id cannot be a key. */
    int (*locked)(syncd_backend_t *b, const char *coll, const char *id,
                  int (*fn)(void *arg, syncd_error_t *err), void *arg,
                  syncd_error_t *err);

    /* Drops coll/id's outbox markers (doc->outbox) of versions <= version,
     * whatever version the record is at now, without changing anything
     * else of it (see syncd_store_outbox_ack()); need not be durable. 0
     * when there is nothing to drop, or when the record moved on while
     * this ran (a later ack drops them). */
    int (*outbox_ack)(syncd_backend_t *b, const char *coll, const char *id,
                      int64_t version, syncd_error_t *err);

    /* Lists coll's records holding outbox markers, sorted by id, strictly
     * after `after` (NULL: from the start), at most limit, as a new JSON
     * array of {"id","v","ob"}. */
    int (*outbox_list)(syncd_backend_t *b, json_t **out, const char *coll,
                       const char *after, size_t limit, syncd_error_t *err);

    /* Optional (NULL: writers hash every body whole): takes the hash tree
     * kept with coll/id's record at version, whose hash is hash, for the
     * caller (holding the key's write lock) to update for its change:
     * *tree is then the caller's, with the bytes it is charged in *bytes.
     * Returns 1 when taken, 0 (*tree NULL) when none is kept. */
    int (*take_tree)(syncd_backend_t *b, const char *coll, const char *id,
                     int64_t version, const char *hash, syncd_htree_t **tree,
                     size_t *bytes);

    /* Optional, with take_tree: keeps tree (stolen; freed when it cannot be
     * kept), charged bytes, with coll/id's record at version, committed by
     * the caller (holding the key's write lock), when tree's root is that
     * record's hash. */
    void (*keep_tree)(syncd_backend_t *b, const char *coll, const char *id,
                      int64_t version, syncd_htree_t *tree, size_t bytes);

    /* Optional (NULL: zeros): adds the backend's own in-memory tier to the
     * cache_* counters of out (hits and misses of reads, evictions, bytes
     * charged and entries), and its RocksDB's memory to the rocks_* ones. */
    void (*tier_stats)(syncd_backend_t *b, syncd_store_stats_t *out);

    /* Optional (NULL: none): the backend's in-memory tier (borrowed), which
     * holds only durable versions. */
    struct syncd_tier *(*tier)(syncd_backend_t *b);

    /* Lists at most limit (> 0) live documents of coll sorted by id,
     * strictly after `after` (NULL: from the start), with their bodies, as
     * a new JSON array of {"id","v","h","data"}, read from the records
     * themselves (no in-memory tier is read or filled). */
    int (*export_page)(syncd_backend_t *b, json_t **out, const char *coll,
                       const char *after, size_t limit, syncd_error_t *err);

    /* Optional (NULL: SYNCD_EINVAL): writes a consistent checkpoint of the
     * store into dir, which must not exist (hard links where the file
     * system allows). */
    int (*checkpoint)(syncd_backend_t *b, const char *dir, syncd_error_t *err);

    /* Optional (NULL: every write reads the record first): commits doc in
     * one atomic operation, without reading the record, over the live
     * record at version expected whose hash is expected_hash: sets doc's
     * version, body (or tombstone), hash, mtime and origin, and appends
     * the marker doc->outbox holds (if any) to the record's outbox and the
     * key doc->ikeys holds (if any) to its idempotency keys, keeping the
     * newest SYNCD_MAX_IDEMPOTENCY_KEYS. SYNCD_ECONFLICT, nothing written,
     * when the record is not at that version and hash, when a marker is to
     * go into an outbox that holds SYNCD_MAX_OUTBOX_MARKERS, or when the
     * record already holds the key. On success *outbox and *ikeys are new
     * references to the record's markers and keys as committed (NULL when
     * it has none). */
    int (*cas_update)(syncd_backend_t *b, const syncd_doc_t *doc,
                      int64_t expected, const char *expected_hash,
                      json_t **outbox, json_t **ikeys, syncd_error_t *err);
} syncd_backend_ops_t;

/* Common head of every backend; implementations embed it first. */
struct syncd_backend {
    const syncd_backend_ops_t *ops;
};

/* Opens the RocksDB store of record in dir (created when missing) into *out
 * (freed with its ops->close), with a block cache of block_cache_bytes; with
 * sync_writes every commit is fsynced
 * before it is acknowledged, concurrent commits sharing one sync (group
 * commit; after a failed sync every write fails until reopened). Its in-memory
 * tier of decoded documents holds at most tier_max_bytes and serves an entry
 * for tier_ttl_ms after loading it, by hooks' clock (NULL: the real monotonic
 * clock). */
int syncd_backend_rocks_open(syncd_backend_t **out, const char *dir,
                             int sync_writes, int64_t tier_ttl_ms,
                             uint64_t tier_max_bytes,
                             uint64_t block_cache_bytes,
                             const syncd_store_hooks_t *hooks,
                             syncd_error_t *err);

/* Opens the MongoDB store of record at uri, database db, into *out (freed
 * with its ops->close), with a client pool and the given connect/socket
 * timeout; fails with SYNCD_EBACKEND when the server cannot be reached
 * within it. */
int syncd_backend_mongo_open(syncd_backend_t **out, const char *uri,
                             const char *db, int64_t timeout_ms,
                             syncd_error_t *err);

/* Test hook of FerretDB mode's commit chain: fn(coll, id, expected, data)
 * runs in the writing thread right after its commit record for version
 * expected + 1 was inserted and before the record is copied into the
 * document, as if the writer stalled there. fn NULL removes it. Set it
 * while no backend call is in flight. */
typedef void (*syncd_mongo_commit_hook_fn)(const char *coll, const char *id,
                                           int64_t expected, void *data);
void syncd_backend_mongo_set_commit_hook(syncd_mongo_commit_hook_fn fn,
                                         void *data);

/* ---- Node cache ---------------------------------------------------------- */

typedef struct syncd_cache syncd_cache_t;

/* Opens the cache in dir. Without keep, its contents from a previous run
 * are discarded (a restarted node rebuilds its cache from the store and the
 * bus); with keep, those of a previous run that closed cleanly are kept,
 * each entry fresh from now, and a clean close leaves them for the next.
 * Entries older than ttl_ms are never served; the cached bytes (records in
 * RocksDB plus the in-memory tier of decoded documents, which takes at most
 * a quarter of them) are kept within max_bytes by evicting least recently
 * used entries. RocksDB's block cache, outside that bound, holds at most
 * block_cache_bytes. hooks may be NULL (the real monotonic clock). *out is
 * freed with syncd_cache_close(). */
int syncd_cache_open(syncd_cache_t **out, const char *dir, int64_t ttl_ms,
                     uint64_t max_bytes, uint64_t block_cache_bytes, int keep,
                     const syncd_store_hooks_t *hooks, syncd_error_t *err);

/* Closes and frees the cache; NULL ignored. */
void syncd_cache_close(syncd_cache_t *cache);

/* Reads a fresh entry (tombstones included) into *out (caller frees with
 * syncd_doc_free()), its body shared with the cache's in-memory tier;
 * SYNCD_ENOTFOUND when absent or expired.
 * Counts a hit or a miss. */
int syncd_cache_get(syncd_cache_t *cache, syncd_doc_t **out, const char *coll,
                    const char *id, syncd_error_t *err);

/* Reads a fresh entry as syncd_cache_get() does, only when the entry holds
 * its record's whole history (doc->hist; NULL: none): one stored by
 * syncd_cache_put_with_history(). SYNCD_ENOTFOUND otherwise. */
int syncd_cache_get_with_history(syncd_cache_t *cache, syncd_doc_t **out,
                                 const char *coll, const char *id,
                                 syncd_error_t *err);

/* Stores doc without its history (its entry's history unknown: an entry
 * made from an event) unless an equal or higher version is cached; returns 1
 * when stored, 0 when kept (then nothing is encoded). canon (canon_len bytes,
 * borrowed) is the canonical JSON of doc's body when the caller already has
 * it, as for syncd_record_encode(); NULL serializes it here. A stored
 * entry's TTL starts now; the cache keeps a reference to doc's body (shared
 * and immutable, as always). */
int syncd_cache_put(syncd_cache_t *cache, const syncd_doc_t *doc,
                    const char *canon, size_t canon_len, syncd_error_t *err);

/* Stores doc with doc->hist as its record's whole history (NULL: none), as
 * read from the store of record or committed by this store, as
 * syncd_cache_put() does; it also replaces an entry of the same version
 * whose history is unknown. */
int syncd_cache_put_with_history(syncd_cache_t *cache, const syncd_doc_t *doc,
                                 const char *canon, size_t canon_len,
                                 syncd_error_t *err);

/* Applies the RFC 6902 patch (borrowed) of an event to coll/id's cached
 * body at version base, in place, making the entry meta's version (coll,
 * id, version, hash, mtime and origin read; body ignored) when the result's
 * content hash is meta->hash, within max_bytes. *cached is the version of
 * the fresh entry found (-1: none). Returns 1 when applied; 0 when nothing
 * was done (no fresh live entry at base, a reader holds the body, or, with
 * nonblocking, the work could wait: a lock, I/O, a hash tree to build):
 * apply it some other way; SYNCD_ECONFLICT when the hash was not meta's
 * (the entry is dropped: refetch it); SYNCD_EPATCH, SYNCD_ETOOBIG,
 * SYNCD_ENOMEM when the patch fails (the entry is unchanged). With
 * nonblocking it never waits, except to drop the entry on a mismatch, and
 * returns 2 (nothing done, *cached -1) when it would wait for the lock. */
int syncd_cache_patch(syncd_cache_t *cache, const syncd_doc_t *meta,
                      int64_t base, const json_t *patch, size_t max_bytes,
                      int nonblocking, int64_t *cached, syncd_error_t *err);

/* Writes the dirty records to RocksDB in one batch when at least
 * SYNCD_CACHE_FLUSH_MS passed since the last write; else does nothing. */
void syncd_cache_flush_due(syncd_cache_t *cache);

/* syncd_tier_list_hashes() of doc's entry (coll, id and body read): the
 * hash listing from the tree kept beside that very body. */
int syncd_cache_list_hashes(syncd_cache_t *cache, const syncd_doc_t *doc,
                            const char *path, size_t level, size_t from,
                            size_t count, json_t **out, syncd_error_t *err);

/* Removes coll/id (id NULL: every entry of coll). */
int syncd_cache_invalidate(syncd_cache_t *cache, const char *coll,
                           const char *id, syncd_error_t *err);

/* Lists live fresh entries of coll as a new JSON array of {"id","v","h"}
 * sorted by id. */
int syncd_cache_list(syncd_cache_t *cache, json_t **out, const char *coll,
                     syncd_error_t *err);

/* Lists up to limit (> 0) fresh entries of coll, tombstones included, whose
 * id sorts after `after` (NULL: from the start) as a new JSON array of
 * {"id","v","h"} (with "del":true for a tombstone) sorted by id, into *out.
 * Walks the cache's RocksDB from `after` on, so a page costs what it holds,
 * not the size of the cache. */
int syncd_cache_page(syncd_cache_t *cache, json_t **out, const char *coll,
                     const char *after, size_t limit, syncd_error_t *err);

/* Returns 1 when the cache kept the records of a previous run at open. */
int syncd_cache_kept(const syncd_cache_t *cache);

/* Returns 1 when the cache was opened with keep (a clean close keeps it). */
int syncd_cache_keeps(const syncd_cache_t *cache);

/* Walks every record of the cache's RocksDB (fresh or not) once, in key
 * order, and sets *digests to a new object {C: {"count","digest"}}: each
 * collection's digest over its live records. With bad (NULL: bodies are
 * not read) every live body is also rehashed: *bad gets a new object
 * {C: {"ids":[...],"truncated"}} naming, at most max_bad per collection,
 * the records whose body does not match its hash or does not decode;
 * *bodies counts the bodies rehashed. Call it while the cache is idle. */
int syncd_cache_check(syncd_cache_t *cache, json_t **digests, json_t **bad,
                      size_t max_bad, uint64_t *bodies, syncd_error_t *err);

/* Drops every entry of the cache. */
void syncd_cache_clear(syncd_cache_t *cache);

/* Copies hit/miss/eviction/write counters, current bytes/entries and the
 * memory of its RocksDB into out. */
void syncd_cache_stats(syncd_cache_t *cache, syncd_store_stats_t *out);

/* Adds the memory that RocksDB database db holds (memtables, table
 * readers, block cache) to the rocks_* fields of out. */
void syncd_rocks_memory(struct rocksdb_t *db, syncd_store_stats_t *out);

/* Returns the cache's in-memory tier (borrowed): the fresh entries the node
 * serves, each expiring with its cache entry. */
struct syncd_tier *syncd_cache_tier(syncd_cache_t *cache);

/* The write-behind interval of the cache: a document's record is written
 * to RocksDB at most once per this many milliseconds. */
#define SYNCD_CACHE_FLUSH_MS 1000

/* Returns the store's node cache (borrowed), NULL in embedded mode. */
syncd_cache_t *syncd_store_cache_of(const syncd_store_t *store);

/* Returns the store's data_dir as opened (borrowed). */
const char *syncd_store_data_dir(const syncd_store_t *store);

/* ---- Shared by the RocksDB store and the cache --------------------------- */

/* Longest record key: a collection name, a NUL, a document id. */
#define SYNCD_RECORD_KEY_MAX (64 + 1 + SYNCD_MAX_ID_BYTES)

/* Writes the RocksDB key of coll/id (coll, a NUL byte, id: byte order is id
 * order within a collection) into key and returns its length, or 0 when
 * coll or id is too long. */
size_t syncd_record_key(char key[SYNCD_RECORD_KEY_MAX], const char *coll,
                        const char *id);

/* A record key with its syncd_lru_hash(), computed once per call. */
typedef struct syncd_reckey {
    char bytes[SYNCD_RECORD_KEY_MAX];
    size_t len;
    uint64_t hash;
} syncd_reckey_t;

/* Fills k with coll/id's record key and its hash; SYNCD_EINVAL when coll
 * or id is too long for a key. */
int syncd_reckey_make(syncd_reckey_t *k, const char *coll, const char *id,
                      syncd_error_t *err);

/* Encodes doc's version, mtime, origin, hash, tombstone flag,
 * idempotency keys, history and canonical body (not its outbox, which the
 * caller keeps beside the record) into *out (malloc'd, caller frees) with
 * its length in *len. With hist_apart the history is left out (the caller
 * keeps it beside the record) and the record only says whether it has
 * some (syncd_record_hist_apart()). canon (canon_len bytes, borrowed) is
 * the canonical JSON of doc's body when the caller already has it; NULL
 * serializes the body here. */
int syncd_record_encode(char **out, size_t *len, const syncd_doc_t *doc,
                        int hist_apart, const char *canon, size_t canon_len,
                        syncd_error_t *err);

/* Returns 1 when the record val (len bytes) was encoded with its history
 * apart and the version it holds has history entries, else 0. */
int syncd_record_hist_apart(const char *val, size_t len);

/* When the record of coll/id val (len bytes) holds history entries, makes
 * into *out (malloc'd, *olen bytes) the same record with its history
 * apart and sets *hist to the entries (a new reference) and returns 1;
 * returns 0 when it holds none or does not decode (its reads report
 * that), SYNCD_ENOMEM. */
int syncd_record_take_hist(char **out, size_t *olen, json_t **hist,
                           const char *coll, const char *id, const char *val,
                           size_t len);

/* Decodes a record of coll/id into *out (caller frees with
 * syncd_doc_free()); without with_body the body, outbox (held by a record
 * written before the markers moved beside it), idempotency keys and
 * history are left NULL (the header alone is read). SYNCD_EBACKEND when the
 * bytes are not a valid record. */
int syncd_record_decode(syncd_doc_t **out, const char *coll, const char *id,
                        const char *val, size_t len, int with_body,
                        syncd_error_t *err);

/* Sets *out to the outbox markers of ob (borrowed) whose version is above
 * version (an ack at version: the others are published): a new array, or
 * NULL when none is left. Returns 1 when some marker was dropped, 0 when
 * none was (*out is then a new reference to ob), SYNCD_ENOMEM. */
int syncd_outbox_after(json_t **out, json_t *ob, int64_t version);

/* Drops doc's outbox, idempotency keys, history and their cached texts
 * (a copy that stands for the body and version alone). */
void syncd_doc_drop_meta(syncd_doc_t *doc);

/* Returns the text (borrowed from pair, *len bytes) that pair, a cache
 * [of, text] such as syncd_doc_t's hist_text, holds for
 * this very array of, else NULL (no cache, or one for another array). */
const char *syncd_text_cached(const json_t *pair, const json_t *of,
                              size_t *len);

/* Sets *text to the compact JSON of the array of, *len bytes, as
 * json_dumps(of, JSON_COMPACT) gives it: the text the cache pair holds
 * for it (borrowed, *made NULL), else a serialization that *made owns
 * (the caller frees it). SYNCD_ENOMEM. */
int syncd_text_of(const char **text, size_t *len, char **made,
                  const json_t *pair, const json_t *of);

/* Returns a 64-bit FNV-1a hash of len bytes at data. */
uint64_t syncd_lru_hash(const void *data, size_t len);

/* One entry of an LRU table; embed it first in the entry struct. The key
 * is owned by the embedding entry. */
typedef struct syncd_lru_node {
    struct syncd_lru_node *chain;       /* next in the hash bucket */
    struct syncd_lru_node *prev, *next; /* recency list, newest first */
    const char *key;
    size_t keylen;
    uint64_t hash; /* syncd_lru_hash(key, keylen) */
    size_t size;   /* bytes charged to the table */
} syncd_lru_node_t;

/* A hash table of nodes keyed by bytes with a recency order and a byte
 * total. Not locked: callers serialize access. */
typedef struct syncd_lru {
    syncd_lru_node_t **buckets;
    size_t nbuckets; /* a power of two */
    size_t count;
    uint64_t bytes;        /* sum of the nodes' size */
    syncd_lru_node_t head; /* recency list sentinel */
} syncd_lru_t;

/* Initializes an empty table; SYNCD_ENOMEM on failure. */
int syncd_lru_init(syncd_lru_t *lru);

/* Calls free_node on every node and frees the table's own storage. */
void syncd_lru_destroy(syncd_lru_t *lru,
                       void (*free_node)(syncd_lru_node_t *node));

/* Returns the node with key (hash from syncd_lru_hash()), or NULL; the
 * node stays in the table. */
syncd_lru_node_t *syncd_lru_find(syncd_lru_t *lru, const char *key,
                                 size_t keylen, uint64_t hash);

/* Adds node (key, keylen, hash and size set; no equal key present) as the
 * newest. The bucket array grows when it can; when it cannot, chains just
 * get longer, so an insert never fails. */
void syncd_lru_insert(syncd_lru_t *lru, syncd_lru_node_t *node);

/* Makes node the newest. */
void syncd_lru_touch(syncd_lru_t *lru, syncd_lru_node_t *node);

/* Unlinks node from the table; the caller frees it. */
void syncd_lru_remove(syncd_lru_t *lru, syncd_lru_node_t *node);

/* Returns the least recently used node (still in the table), or NULL when
 * empty. */
syncd_lru_node_t *syncd_lru_oldest(syncd_lru_t *lru);

/* Returns the node after node in recency order, newest first (node NULL:
 * the newest), or NULL at the end. To remove while iterating, fetch the
 * next node before removing the current one. */
syncd_lru_node_t *syncd_lru_next(syncd_lru_t *lru, syncd_lru_node_t *node);

/* Copies k's bytes into key (k->len bytes of the embedding entry) and
 * points node at them with k's hash, charged size bytes; node is then
 * ready for syncd_lru_insert(). */
void syncd_reckey_node(syncd_lru_node_t *node, char *key,
                       const syncd_reckey_t *k, size_t size);

/* Bytes charged for a decoded record in an in-memory tier (the RocksDB
 * store's and the cache's) beyond its encoded size. */
#define SYNCD_TIER_ENTRY_OVERHEAD 256

/* Bodies this large (canonical bytes) get a hash tree beside them in an
 * in-memory tier: the node cache's, built at their first patch (so only
 * documents that change pay for one), and the RocksDB store's, built by
 * the first write that replaces them. A tree takes several times its
 * body's bytes, charged to the tier; in exchange an event to a 50-volume
 * (8.7 KB) document costs its receiver 0.017 ms of CPU instead of 0.16 ms
 * for rehashing the whole body (bench/README.md), and a writer rehashes
 * only what it changed. */
#define SYNCD_TREE_MIN 4096

/* ---- History (history.c) ----------------------------------------------- */

/* Sets next->hist to cur's history (borrowed) with an entry for cur added
 * (the reverse patch from next's body to cur's), trimmed oldest first to
 * len entries and max_bytes; NULL when cur is NULL (a first write), len is
 * 0, or not even the new entry fits. next->hist_text caches its text, made
 * from cur's cached text when cur has one. forward, when not NULL, is an
 * RFC 6902 patch from cur's live body to next's (borrowed): the places it
 * touches are the only ones where the two bodies differ, so the reverse
 * patch compares only those. */
int syncd_history_append(syncd_doc_t *next, const syncd_doc_t *cur,
                         const json_t *forward, int len, uint64_t max_bytes,
                         syncd_error_t *err);

/* Sets *text to the compact JSON of doc->hist (an array), *len bytes, as
 * json_dumps(doc->hist, JSON_COMPACT) gives it: the text doc->hist_text
 * caches for this very array (borrowed from doc, *made NULL), else a new
 * serialization that *made owns (the caller frees it). SYNCD_ENOMEM. */
int syncd_history_text(const char **text, size_t *len, char **made,
                       const syncd_doc_t *doc);

/* Returns the compact JSON of doc's newest history entry (its last, len
 * bytes, borrowed from doc's cached history text) when
 * syncd_history_append() made that text, else NULL. */
const char *syncd_history_newest_text(const syncd_doc_t *doc, size_t *len);

/* Caches text (len bytes, a JSON encoding of doc->hist as read with it) in
 * doc->hist_text; SYNCD_ENOMEM, SYNCD_EINVAL when it is not UTF-8 (nothing
 * cached then). */
int syncd_history_keep_text(syncd_doc_t *doc, const char *text, size_t len);

/* Returns the oldest version doc's history keeps (its own version when it
 * keeps none). */
int64_t syncd_history_oldest(const syncd_doc_t *doc);

/* Reads version `version` of doc (a record with its history, borrowed) into
 * *out, a new doc without outbox, keys or history (deleted, body NULL, for
 * a tombstone version); SYNCD_ENOTFOUND naming the oldest kept version when
 * it is not kept, SYNCD_EBACKEND when the history does not replay. */
int syncd_history_version(syncd_doc_t **out, const syncd_doc_t *doc,
                          int64_t version, syncd_error_t *err);

/* Lists doc's kept versions into *out (the object of
 * syncd_store_history()). */
int syncd_history_list(json_t **out, const syncd_doc_t *doc,
                       syncd_error_t *err);

/* ---- The in-memory tier (tier.c) ----------------------------------------- */

/* Decoded records in memory, keyed like the records, bounded by bytes with
 * least-recently-used eviction, sharded, locked only for in-memory work;
 * used by the RocksDB store and the node cache. Thread-safe. */
typedef struct syncd_tier syncd_tier_t;

/* The counters of syncd_tier_count(). */
typedef enum {
    SYNCD_TIER_HIT,
    SYNCD_TIER_MISS,
    SYNCD_TIER_EVICTION,
} syncd_tier_counter_t;

/* Makes an empty tier into *out (freed with syncd_tier_free()) holding at
 * most max_bytes, serving an entry until ttl_ms after it was born by the
 * clock now_ms(now_data); with count_evictions the entries it evicts count
 * as evictions in its statistics. SYNCD_ENOMEM. */
int syncd_tier_new(syncd_tier_t **out, uint64_t max_bytes, int64_t ttl_ms,
                   int64_t (*now_ms)(void *data), void *now_data,
                   int count_evictions);

/* Frees the tier and every entry; NULL ignored. */
void syncd_tier_free(syncd_tier_t *t);

/* Adds one to the tier's hit, miss or eviction counter. */
void syncd_tier_count(syncd_tier_t *t, syncd_tier_counter_t which);

/* Sets *out to a copy of k's fresh entry (the body shared; caller frees),
 * made the most recently used. SYNCD_ENOTFOUND when there is none,
 * SYNCD_ENOMEM. Counts nothing. */
int syncd_tier_get(syncd_tier_t *t, const syncd_reckey_t *k, syncd_doc_t **out);

/* Sets *text to a copy (malloc'd, NUL-terminated, caller frees) of the
 * compact JSON of k's fresh live entry's body, *len to its length and
 * *version to its version, and returns 0. SYNCD_ENOTFOUND when the entry
 * is a tombstone, SYNCD_ENOMEM. Returns 1 when the tier cannot answer: no
 * fresh entry, or one not serialized yet; then, with body not NULL and an
 * entry there, *body is a new reference to its body and *version its
 * version, to serialize and hand to syncd_tier_set_text(). Never
 * serializes and never waits for I/O. */
int syncd_tier_text(syncd_tier_t *t, const syncd_reckey_t *k, char **text,
                    size_t *len, int64_t *version, json_t **body);

/* Makes doc_new (stolen, on every path) k's entry, born at born_ms and
 * charged size bytes plus the key and SYNCD_TIER_ENTRY_OVERHEAD, with
 * tree (stolen; NULL: none) as its body's hash tree, charged tree_bytes,
 * then evicts down to the bound. With replace 0 an entry already there is
 * kept instead. An entry replaced by the same version (the same version
 * number and hash: its record rewritten) hands its tree on when no tree is
 * given. The replaced entry is freed once the tier's lock is released;
 * with replaced not NULL its document is handed to the caller instead
 * (*replaced, NULL when none; the caller frees it, so that it can do so
 * after releasing locks of its own). Out of memory leaves no entry for k. */
void syncd_tier_put(syncd_tier_t *t, const syncd_reckey_t *k,
                    syncd_doc_t *doc_new, int64_t born_ms, size_t size,
                    int replace, syncd_htree_t *tree, size_t tree_bytes,
                    syncd_doc_t **replaced);

/* Keeps text_new (len bytes, stolen) as the serialized body of k's entry
 * when that entry still holds body (borrowed, compared by address) and has
 * none yet; charges its bytes. */
void syncd_tier_set_text(syncd_tier_t *t, const syncd_reckey_t *k,
                         const json_t *body, char *text_new, size_t len);

/* Builds the hash tree of the body of k's fresh live entry at version and
 * keeps it beside the body, charged to the entry (whose record takes size
 * bytes, as for syncd_tier_put()), unless it has one; the tree is built
 * with no lock held, so readers go on meanwhile. 0 when the entry has its
 * tree (or the entry changed meanwhile), SYNCD_ENOTFOUND when there is no
 * such entry, SYNCD_EINVAL or SYNCD_ENOMEM when the tree cannot be built. */
int syncd_tier_build_tree(syncd_tier_t *t, const syncd_reckey_t *k,
                          int64_t version, size_t size);

/* Sets *out to the hash listing (syncd_htree_list_tree()) of path, level,
 * from and count from the hash tree kept beside k's entry, when that
 * entry's body is body (so the listing is of that very value): a new
 * object. 1 (nothing set) when the entry keeps no tree for body; else
 * what syncd_htree_list_tree() returns. */
int syncd_tier_list_hashes(syncd_tier_t *t, const syncd_reckey_t *k,
                           const json_t *body, const char *path,
                           size_t path_len, size_t level, size_t from,
                           size_t count, json_t **out, syncd_error_t *err);

/* Gives k's entry the outbox markers (and their cached text) of doc, an
 * outbox ack's copy of the entry's version with only its markers changed,
 * and keeps tree (stolen; NULL: none) beside it, charged bytes, as
 * syncd_tier_keep_tree() does; an entry of another version is dropped.
 * The entry's body, serialized text and charge stay as they are. */
void syncd_tier_set_outbox(syncd_tier_t *t, const syncd_reckey_t *k,
                           const syncd_doc_t *doc, syncd_htree_t *tree,
                           size_t bytes);

/* Takes the hash tree kept beside k's fresh live entry at version, when
 * that entry's hash is hash and the tree's root matches it: *tree is then
 * the caller's, with the bytes it was charged in *bytes, and the entry
 * keeps no tree. Returns 1 when taken, 0 (*tree NULL) when not. */
int syncd_tier_take_tree(syncd_tier_t *t, const syncd_reckey_t *k,
                         int64_t version, const char *hash,
                         syncd_htree_t **tree, size_t *bytes);

/* Keeps tree (stolen; freed when it cannot be kept) beside k's fresh live
 * entry at version, charged bytes, when that entry has no tree and tree's
 * root is the entry's hash. */
void syncd_tier_keep_tree(syncd_tier_t *t, const syncd_reckey_t *k,
                          int64_t version, syncd_htree_t *tree, size_t bytes);

/* Takes the body of k's fresh live entry at version out of the tier, for
 * the caller to change in place: *body is the entry's own reference, lent,
 * and *tree its hash tree (NULL when it has none), lent too. Until the
 * caller gives them back with syncd_tier_give_back(), which it must, a
 * reader of the decoded body waits (a reader of the text gets the text of
 * this version, if any). Returns 0 when taken; 1 when a reader holds the
 * body, it is taken already, or need_tree is set and the entry has no hash
 * tree: change a copy instead; SYNCD_ENOTFOUND
 * when there is no such entry. Never waits. */
int syncd_tier_take(syncd_tier_t *t, const syncd_reckey_t *k, int64_t version,
                    int need_tree, json_t **body, syncd_htree_t **tree);

/* How syncd_tier_give_back() gives a taken body back. */
typedef enum {
    SYNCD_TIER_BACK_UNCHANGED, /* as it was taken */
    SYNCD_TIER_BACK_CHANGED,   /* changed into meta's version */
    SYNCD_TIER_BACK_DROP,      /* changed into no version: drop the entry */
} syncd_tier_back_t;

/* Gives back what syncd_tier_take() lent for k, as how says: body (the
 * entry's reference, the same or a new value) and tree (NULL: none; the
 * entry owns either from here on). CHANGED makes the entry meta's version
 * (its version, hash, mtime and origin; no outbox, keys or history), born
 * at born_ms, its text dropped, charged size bytes as for syncd_tier_put(),
 * and pinned: never evicted or expired until syncd_tier_unpin(). DROP (the
 * body matches no version) drops the entry. Wakes the readers that
 * waited. */
void syncd_tier_give_back(syncd_tier_t *t, const syncd_reckey_t *k,
                          syncd_tier_back_t how, const syncd_doc_t *meta,
                          json_t *body, syncd_htree_t *tree, int64_t born_ms,
                          size_t size);

/* Unpins k's entry, now charged size bytes as for syncd_tier_put(). */
void syncd_tier_unpin(syncd_tier_t *t, const syncd_reckey_t *k, size_t size);

/* Drops k's entry, if any. */
void syncd_tier_drop(syncd_tier_t *t, const syncd_reckey_t *k);

/* Returns the bytes the tier's entries are charged, without locking. */
uint64_t syncd_tier_bytes(syncd_tier_t *t);

/* Adds the tier's hits, misses, evictions, bytes and entries to out's
 * cache_* fields, without locking. */
void syncd_tier_stats(syncd_tier_t *t, syncd_store_stats_t *out);

/* ---- Edit loop pieces ---------------------------------------------------- */

/* Returns the backoff before retry `attempt` (0-based): a uniform random
 * value in [0, min(max_delay_ms, delay_ms * 2^attempt)] drawn from rnd. */
int64_t syncd_backoff_ms(int attempt, int64_t delay_ms, int64_t max_delay_ms,
                         uint64_t rnd);

#endif
