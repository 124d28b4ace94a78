/* cache.c - the node cache: recent documents of the MongoDB store in a
 * local RocksDB, with a TTL, a size bound and an in-memory tier of decoded
 * documents in front.
 *
 * Records live in a RocksDB of their own (WAL off: by default the cache is
 * discarded at every open, so nothing in it needs to survive a crash). They
 * are written behind: a put updates the index and the tier, which is what
 * the node serves, and keeps the encoded record as the entry's dirty
 * record; the dirty records are written to RocksDB together, in one batch,
 * by the first put or syncd_cache_flush_due() at least SYNCD_CACHE_FLUSH_MS
 * after the last such write (so a document is written at most once per
 * interval however often it changes), before a page or a check walks
 * RocksDB, and at a clean close. An event's patch never writes them: the
 * node calls syncd_cache_flush_due() on its thread pool, so that
 * serializing a large record never delays the event that made it dirty.
 * A read of an entry out of the tier decodes its dirty record when it has
 * one. A crash loses only cache records, which the store refills. Opened
 * with keep, the records of a previous run are kept when that run closed the
 * cache cleanly (it flushes and then leaves a CLEAN file, which the next open
 * removes; after a crash the WAL-less records may have lost their newest
 * writes, so they are discarded); the index is rebuilt from the records'
 * headers and each kept entry's TTL starts at the open. An in-memory index
 * of every entry, keyed like the records (see record.c), holds what the
 * policies need without touching RocksDB: version, hash, tombstone flag,
 * when the entry was stored, its size, and its recency. In front of RocksDB,
 * the tier of tier.c (the one the embedded store uses too) keeps the
 * decoded, reference-counted documents of the most recently used entries
 * (a hit hands out the shared json_t body: no read, no parse, no
 * serialization), bounded to a quarter of max_bytes; its entries are born
 * with their index entry, so they expire with it, and leave the tier when
 * their index entry goes.
 *
 * The bound covers both: the cached bytes are the records' key and value
 * bytes plus, for entries in the tier, their charge there (record bytes and
 * a fixed overhead); when they pass max_bytes the least recently used
 * entries are evicted until they fit again, so the bound is exact. An entry
 * older than the TTL is never served; put-if-newer never replaces a fresh
 * entry by an equal or lower version.
 *
 * An event's patch is applied to the cached body in place
 * (syncd_cache_patch()): the body is taken out of the tier while it
 * changes (readers wait or get the version before, see tier.c), its hash
 * is checked on the document's hash tree, which the tier keeps beside a
 * body of at least SYNCD_TREE_MIN bytes (built at the first patch,
 * charged to the entry, dropped with it), and nothing is serialized: the
 * entry's record is made from the tier's body when the dirty records are
 * written (the entry is "lazy" until then, its tier entry pinned so that
 * the body stays), and until then it is charged its old size plus the
 * patches' sizes, an upper bound of sorts that the write makes exact; once
 * the patches add up to more than the size they were added to, the body's
 * size is counted again (a walk, so amortized over that many patch bytes).
 *
 * A reader-writer lock guards the index and orders the RocksDB writes and
 * the tier's changes with it (the tier has its own locks inside). A hit
 * holds it shared and only marks its entry as used; the index's recency
 * list is reordered lazily, under the exclusive lock, when eviction meets a
 * marked entry (a marked entry gets a second chance at the newest end, as
 * in the CLOCK algorithm). The statistics are the tier's atomics plus the
 * index's size, refreshed before the exclusive lock is released, so reading
 * them never waits for the lock.
 */
#define _GNU_SOURCE /* pthread_rwlockattr_setkind_np */
#include <pthread.h>
#include <rocksdb/c.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* The tier holds at most max_bytes / TIER_SHARE bytes. */
#define TIER_SHARE 4
/* A record's bytes besides its body (version, times, origin, hash), about:
 * what a patched entry is charged beside its body until it is written. */
#define RECORD_HEADER 128

/* One cached record's index entry. The key bytes follow the struct. */
typedef struct cache_entry {
    syncd_lru_node_t node; /* in the index: every entry */
    /* The record not yet written to RocksDB (malloc'd), or NULL; while set
     * the entry is in the cache's dirty list. */
    char *dirty;
    size_t dirty_len;
    /* In the dirty list with no dirty record yet: the record is made from
     * the tier's body (pinned there) when written. */
    int lazy;
    /* Patch bytes charged since the entry's size was last measured. */
    size_t patched;
    struct cache_entry *dirty_prev, *dirty_next;
    unsigned char index_used; /* read since last placed in the index */
    uint64_t gen;             /* distinguishes successive entries of a key */
    int64_t version;
    int64_t stored_ms;
    int deleted;
    /* The record's history is known: the entry's doc holds the whole
     * history of its version (none when its hist is NULL). Unset for an
     * entry made from an event or kept from a previous run. */
    int hist_known;
    char hash[SYNCD_HASH_HEX_LEN + 1];
    char key[];
} cache_entry_t;

struct syncd_cache {
    pthread_rwlock_t lock;
    syncd_lru_t index;
    syncd_tier_t *tier;
    cache_entry_t *dirty; /* entries with a record to write, newest first */
    int64_t flushed_ms;   /* when the dirty records were last written */
    rocksdb_t *db;
    rocksdb_options_t *options;
    rocksdb_readoptions_t *read;
    rocksdb_writeoptions_t *write;
    int64_t ttl_ms;
    uint64_t max_bytes;
    int64_t (*now_ms)(void *data);
    void *now_data;
    uint64_t gens;   /* under the exclusive lock */
    uint64_t writes; /* records written or deleted in RocksDB, atomic */
    uint64_t index_bytes, entries; /* atomic copies, refreshed by changes */
    char *clean_path;              /* keep: the CLEAN file written at close */
    int kept;                      /* the records of a previous run were kept */
};

static int64_t monotonic_ms(void *data)
{
    struct timespec ts;

    (void)data;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int cache_error(syncd_error_t *err, char *errptr, const char *what)
{
    int rc = syncd_error_set_backend(err, SYNCD_EBACKEND, "rocksdb", 0,
                                     "cache %s: %s", what, errptr);

    rocksdb_free(errptr);
    return rc;
}

static void count_writes(syncd_cache_t *c, uint64_t n)
{
    __atomic_add_fetch(&c->writes, n, __ATOMIC_RELAXED);
}

/* Marks e as read; under the shared lock, so the flag is atomic and only
 * written when not already set (a hot entry's line stays clean). */
static void mark_used(cache_entry_t *e)
{
    if (!__atomic_load_n(&e->index_used, __ATOMIC_RELAXED))
        __atomic_store_n(&e->index_used, 1, __ATOMIC_RELAXED);
}

static int is_fresh(const syncd_cache_t *c, const cache_entry_t *e, int64_t now)
{
    return now - e->stored_ms < c->ttl_ms;
}

static int in_coll(const cache_entry_t *e, const char *coll, size_t clen)
{
    return e->node.keylen > clen && memcmp(e->key, coll, clen + 1) == 0;
}

static uint64_t cached_bytes(syncd_cache_t *c)
{
    return c->index.bytes + syncd_tier_bytes(c->tier);
}

static const syncd_reckey_t *key_of(const cache_entry_t *e, syncd_reckey_t *k)
{
    memcpy(k->bytes, e->key, e->node.keylen);
    k->len = e->node.keylen;
    k->hash = e->node.hash;
    return k;
}

/* Makes val (vlen bytes, stolen) e's dirty record, in the dirty list. */
static void mark_dirty(syncd_cache_t *c, cache_entry_t *e, char *val,
                       size_t vlen)
{
    e->dirty = val;
    e->dirty_len = vlen;
    e->dirty_prev = NULL;
    e->dirty_next = c->dirty;
    if (c->dirty != NULL)
        c->dirty->dirty_prev = e;
    c->dirty = e;
}

/* Takes e out of the dirty list and frees its dirty record. */
static void clean(syncd_cache_t *c, cache_entry_t *e)
{
    if (e->dirty == NULL && !e->lazy)
        return;
    if (e->dirty_prev != NULL)
        e->dirty_prev->dirty_next = e->dirty_next;
    else
        c->dirty = e->dirty_next;
    if (e->dirty_next != NULL)
        e->dirty_next->dirty_prev = e->dirty_prev;
    free(e->dirty);
    e->dirty = NULL;
    e->lazy = 0;
}

/* Makes e lazy: its record will be made from the tier's body. */
static void mark_lazy(syncd_cache_t *c, cache_entry_t *e)
{
    if (e->dirty == NULL && !e->lazy) {
        mark_dirty(c, e, NULL, 0);
    } else {
        free(e->dirty);
        e->dirty = NULL;
    }
    e->lazy = 1;
}

/* Charges e, in the index, size bytes. */
static void recharge(syncd_cache_t *c, cache_entry_t *e, size_t size)
{
    syncd_lru_remove(&c->index, &e->node);
    e->node.size = size;
    syncd_lru_insert(&c->index, &e->node);
}

/* Makes the record of the lazy entry e from the tier's body into e->dirty;
 * nonzero when it cannot (then e stays lazy). */
static int encode_lazy(syncd_cache_t *c, cache_entry_t *e)
{
    syncd_doc_t *doc = NULL;
    syncd_reckey_t k;
    int rc = syncd_tier_get(c->tier, key_of(e, &k), &doc);

    if (rc == 0)
        rc = syncd_record_encode(&e->dirty, &e->dirty_len, doc, 0, NULL, 0,
                                 NULL);
    syncd_doc_free(doc);
    return rc;
}

/* Writes every dirty record to RocksDB in one batch, at now; with the
 * exclusive lock held. A failed write leaves them dirty. */
static void flush(syncd_cache_t *c, int64_t now)
{
    rocksdb_writebatch_t *batch;
    char *errptr = NULL;
    uint64_t n = 0;

    c->flushed_ms = now;
    if (c->dirty == NULL)
        return;
    batch = rocksdb_writebatch_create();
    for (cache_entry_t *e = c->dirty; e != NULL; e = e->dirty_next) {
        if (e->lazy && e->dirty == NULL && encode_lazy(c, e) != 0)
            continue;
        rocksdb_writebatch_put(batch, e->key, e->node.keylen, e->dirty,
                               e->dirty_len);
        n++;
    }
    rocksdb_write(c->db, c->write, batch, &errptr);
    rocksdb_writebatch_destroy(batch);
    if (errptr != NULL) {
        rocksdb_free(errptr);
        return;
    }
    count_writes(c, n);
    for (cache_entry_t *e = c->dirty, *next; e != NULL; e = next) {
        next = e->dirty_next;
        if (e->dirty == NULL)
            continue;
        if (e->lazy) {
            syncd_reckey_t k;
            size_t size = e->node.keylen + e->dirty_len;

            e->patched = 0;
            recharge(c, e, size);
            syncd_tier_unpin(c->tier, key_of(e, &k), size);
        }
        clean(c, e);
    }
}

/* Unlinks e from the index, the dirty list and the tier and frees it; its
 * RocksDB record is left for the caller. */
static void entry_free(syncd_cache_t *c, cache_entry_t *e)
{
    syncd_reckey_t k;

    syncd_tier_drop(c->tier, key_of(e, &k));
    clean(c, e);
    syncd_lru_remove(&c->index, &e->node);
    free(e);
}

/* Drops e and its RocksDB record; with the exclusive lock held. */
static void drop(syncd_cache_t *c, cache_entry_t *e)
{
    char *errptr = NULL;

    rocksdb_delete(c->db, c->write, e->key, e->node.keylen, &errptr);
    if (errptr == NULL)
        count_writes(c, 1);
    rocksdb_free(errptr);
    entry_free(c, e);
}

/* Returns the least recently used entry of the index, giving every entry
 * read since it was placed a second chance at the newest end; NULL when
 * empty. */
static cache_entry_t *victim(syncd_cache_t *c)
{
    syncd_lru_node_t *node;

    while ((node = syncd_lru_oldest(&c->index)) != NULL) {
        cache_entry_t *e = (cache_entry_t *)node;

        if (!__atomic_load_n(&e->index_used, __ATOMIC_RELAXED))
            return e;
        __atomic_store_n(&e->index_used, 0, __ATOMIC_RELAXED);
        syncd_lru_touch(&c->index, node);
    }
    return NULL;
}

/* Evicts least recently used entries until the cached bytes fit (the tier
 * keeps itself within its share); with the exclusive lock held. */
static void evict(syncd_cache_t *c)
{
    cache_entry_t *e;

    while (cached_bytes(c) > c->max_bytes && (e = victim(c)) != NULL) {
        drop(c, e);
        syncd_tier_count(c->tier, SYNCD_TIER_EVICTION);
    }
}

/* Publishes the index's bytes and entries for syncd_cache_stats() and
 * releases the exclusive lock. */
static void unlock_exclusive(syncd_cache_t *c)
{
    __atomic_store_n(&c->index_bytes, c->index.bytes, __ATOMIC_RELAXED);
    __atomic_store_n(&c->entries, (uint64_t)c->index.count, __ATOMIC_RELAXED);
    pthread_rwlock_unlock(&c->lock);
}

/* Writes the dirty records out before RocksDB is walked: every entry has
 * its record there afterwards (unless the write failed). */
static void flush_now(syncd_cache_t *cache)
{
    pthread_rwlock_wrlock(&cache->lock);
    flush(cache, cache->now_ms(cache->now_data));
    unlock_exclusive(cache);
}

void syncd_cache_flush_due(syncd_cache_t *cache)
{
    int64_t now;
    int due;

    /* The node asks a few times a second: a cache with nothing due is
     * told so under the shared lock, which no reader waits for. */
    pthread_rwlock_rdlock(&cache->lock);
    due = cache->dirty != NULL &&
          cache->now_ms(cache->now_data) - cache->flushed_ms >=
              SYNCD_CACHE_FLUSH_MS;
    pthread_rwlock_unlock(&cache->lock);
    if (!due)
        return;
    pthread_rwlock_wrlock(&cache->lock);
    now = cache->now_ms(cache->now_data);
    if (now - cache->flushed_ms >= SYNCD_CACHE_FLUSH_MS)
        flush(cache, now);
    unlock_exclusive(cache);
}

static void free_node(syncd_lru_node_t *node)
{
    cache_entry_t *e = (cache_entry_t *)node;

    free(e->dirty);
    free(e);
}

/* Rebuilds the index from the records of a kept cache, every entry stored
 * now; records that do not decode are deleted. Then evicts down to
 * max_bytes. Called before the cache is shared. */
static int load_kept(syncd_cache_t *c, syncd_error_t *err)
{
    rocksdb_iterator_t *it = rocksdb_create_iterator(c->db, c->read);
    int64_t now = c->now_ms(c->now_data);
    char *errptr = NULL;
    int rc = 0;

    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *key = rocksdb_iter_key(it, &klen);
        const char *val = rocksdb_iter_value(it, &vlen);
        const char *nul = memchr(key, '\0', klen);
        syncd_doc_t *doc = NULL;
        syncd_reckey_t k;
        cache_entry_t *e;

        if (nul == NULL || klen > SYNCD_RECORD_KEY_MAX ||
            syncd_record_decode(&doc, key, "", val, vlen, 0, NULL) != 0) {
            rocksdb_delete(c->db, c->write, key, klen, &errptr);
            rocksdb_free(errptr);
            errptr = NULL;
            continue;
        }
        memcpy(k.bytes, key, klen);
        k.len = klen;
        k.hash = syncd_lru_hash(key, klen);
        e = calloc(1, sizeof(*e) + klen);
        if (e == NULL) {
            syncd_doc_free(doc);
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
            break;
        }
        syncd_reckey_node(&e->node, e->key, &k, klen + vlen);
        e->version = doc->version;
        e->deleted = doc->deleted;
        memcpy(e->hash, doc->hash, sizeof(e->hash));
        e->stored_ms = now;
        e->gen = ++c->gens;
        syncd_lru_insert(&c->index, &e->node);
        syncd_doc_free(doc);
    }
    rocksdb_iter_get_error(it, &errptr);
    rocksdb_iter_destroy(it);
    if (errptr != NULL && rc == 0)
        return cache_error(err, errptr, "load");
    rocksdb_free(errptr);
    evict(c);
    c->index_bytes = c->index.bytes;
    c->entries = (uint64_t)c->index.count;
    return rc;
}

int syncd_cache_open(syncd_cache_t **out, const char *dir, int64_t ttl_ms,
                     uint64_t max_bytes, uint64_t block_cache_bytes, int keep,
                     const syncd_store_hooks_t *hooks, syncd_error_t *err)
{
    syncd_cache_t *c = calloc(1, sizeof(*c));
    pthread_rwlockattr_t attr;
    char *errptr = NULL;
    int kept = 0;

    *out = NULL;
    if (c == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    c->now_ms =
        hooks != NULL && hooks->now_ms != NULL ? hooks->now_ms : monotonic_ms;
    c->now_data = hooks != NULL ? hooks->data : NULL;
    if (syncd_lru_init(&c->index) != 0 ||
        syncd_tier_new(&c->tier, max_bytes / TIER_SHARE, ttl_ms, c->now_ms,
                       c->now_data, 0) != 0) {
        syncd_lru_destroy(&c->index, free_node);
        free(c);
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }
    /* Writers first: a steady stream of hits must not starve puts. */
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&c->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    c->ttl_ms = ttl_ms;
    c->max_bytes = max_bytes;
    c->flushed_ms = c->now_ms(c->now_data);
    c->options = syncd_rocks_options(block_cache_bytes);
    c->read = rocksdb_readoptions_create();
    c->write = rocksdb_writeoptions_create();
    rocksdb_writeoptions_disable_WAL(c->write, 1);
    if (keep) {
        if (asprintf(&c->clean_path, "%s/CLEAN", dir) < 0) {
            c->clean_path = NULL;
            syncd_cache_close(c);
            return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        }
        kept = unlink(c->clean_path) == 0;
    }
    if (!kept)
        rocksdb_destroy_db(c->options, dir, &errptr);
    if (errptr == NULL)
        c->db = rocksdb_open(c->options, dir, &errptr);
    if (errptr != NULL) {
        int rc = cache_error(err, errptr, "open");

        syncd_cache_close(c);
        return rc;
    }
    c->kept = kept;
    if (kept) {
        int rc = load_kept(c, err);

        if (rc != 0) {
            syncd_cache_close(c);
            return rc;
        }
    }
    *out = c;
    return 0;
}

/* Flushes a kept cache's records and marks them complete with the CLEAN
 * file; on any failure the next open discards them. */
static void keep_on_close(syncd_cache_t *c)
{
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    char *errptr = NULL;
    FILE *f;

    rocksdb_flushoptions_set_wait(fo, 1);
    rocksdb_flush(c->db, fo, &errptr);
    rocksdb_flushoptions_destroy(fo);
    if (errptr != NULL) {
        rocksdb_free(errptr);
        return;
    }
    f = fopen(c->clean_path, "w");
    if (f != NULL)
        fclose(f);
}

void syncd_cache_close(syncd_cache_t *cache)
{
    if (cache == NULL)
        return;
    if (cache->db != NULL && cache->clean_path != NULL) {
        flush(cache, cache->now_ms(cache->now_data));
        if (cache->dirty == NULL)
            keep_on_close(cache);
    }
    syncd_tier_free(cache->tier);
    syncd_lru_destroy(&cache->index, free_node);
    pthread_rwlock_destroy(&cache->lock);
    if (cache->db != NULL)
        rocksdb_close(cache->db);
    rocksdb_writeoptions_destroy(cache->write);
    rocksdb_readoptions_destroy(cache->read);
    rocksdb_options_destroy(cache->options);
    free(cache->clean_path);
    free(cache);
}

int syncd_cache_kept(const syncd_cache_t *cache)
{
    return cache->kept;
}

int syncd_cache_keeps(const syncd_cache_t *cache)
{
    return cache->clean_path != NULL;
}

/* The digest of one collection's records, built in key (id) order. */
typedef struct coll_sum {
    char coll[65];
    syncd_merkle_t m;
} coll_sum_t;

/* Adds the finished digest of sum's collection to digests. */
static int sum_close(json_t *digests, const coll_sum_t *sum)
{
    syncd_digest_t d;

    if (sum->coll[0] == '\0')
        return 0;
    syncd_merkle_final(&sum->m, &d);
    return json_object_set_new(
        digests, sum->coll,
        json_pack("{s:I, s:s}", "count", (json_int_t)d.count, "digest", d.hex));
}

/* Adds id to bad[coll] (at most max_bad ids per collection; past it the
 * entry is marked truncated). */
static int add_bad(json_t *bad, const char *coll, const char *id,
                   size_t max_bad)
{
    json_t *c = json_object_get(bad, coll);

    if (c == NULL) {
        c = json_pack("{s:[], s:b}", "ids", "truncated", 0);
        if (c == NULL || json_object_set_new(bad, coll, c) != 0)
            return -1;
    }
    if (json_array_size(json_object_get(c, "ids")) >= max_bad)
        return json_object_set_new(c, "truncated", json_true());
    return json_array_append_new(json_object_get(c, "ids"), json_string(id));
}

/* Checks one record: adds its live entry to sum and, with bad, rehashes
 * its body, naming it in bad when it does not match or does not decode. */
static int check_record(coll_sum_t *sum, json_t *bad, size_t max_bad,
                        const char *id, const char *val, size_t vlen,
                        uint64_t *bodies)
{
    syncd_doc_t *doc = NULL;
    int rc =
        syncd_record_decode(&doc, sum->coll, id, val, vlen, bad != NULL, NULL);

    if (rc == SYNCD_ENOMEM)
        return rc;
    if (rc != 0)
        return bad != NULL ? add_bad(bad, sum->coll, id, max_bad) : 0;
    if (!doc->deleted)
        rc = syncd_merkle_add(&sum->m, id, doc->version, doc->hash);
    if (rc == 0 && bad != NULL && !doc->deleted) {
        (*bodies)++;
        if (syncd_json_hash_matches(doc->hash, doc->body, NULL) != 1)
            rc = add_bad(bad, sum->coll, id, max_bad);
    }
    syncd_doc_free(doc);
    return rc;
}

int syncd_cache_check(syncd_cache_t *cache, json_t **digests, json_t **bad,
                      size_t max_bad, uint64_t *bodies, syncd_error_t *err)
{
    rocksdb_iterator_t *it;
    char *errptr = NULL;
    coll_sum_t sum;
    int rc = 0;

    *digests = json_object();
    if (bad != NULL)
        *bad = json_object();
    *bodies = 0;
    if (*digests == NULL || (bad != NULL && *bad == NULL)) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto cleanup;
    }
    memset(&sum, 0, sizeof(sum));
    flush_now(cache);
    pthread_rwlock_rdlock(&cache->lock);
    it = rocksdb_create_iterator(cache->db, cache->read);
    for (rocksdb_iter_seek_to_first(it); rc == 0 && rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen, vlen, clen;
        const char *key = rocksdb_iter_key(it, &klen);
        const char *val = rocksdb_iter_value(it, &vlen);
        const char *nul = memchr(key, '\0', klen);
        char id[SYNCD_MAX_ID_BYTES + 1];

        if (nul == NULL || (clen = (size_t)(nul - key)) >= sizeof(sum.coll) ||
            klen - clen - 1 > SYNCD_MAX_ID_BYTES)
            continue;
        if (strlen(sum.coll) != clen || memcmp(sum.coll, key, clen) != 0) {
            rc = sum_close(*digests, &sum);
            memcpy(sum.coll, key, clen);
            sum.coll[clen] = '\0';
            syncd_merkle_init(&sum.m);
        }
        memcpy(id, nul + 1, klen - clen - 1);
        id[klen - clen - 1] = '\0';
        if (rc == 0)
            rc = check_record(&sum, bad != NULL ? *bad : NULL, max_bad, id, val,
                              vlen, bodies);
    }
    if (rc == 0)
        rc = sum_close(*digests, &sum);
    rocksdb_iter_get_error(it, &errptr);
    rocksdb_iter_destroy(it);
    pthread_rwlock_unlock(&cache->lock);
    if (rc != 0)
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    else if (errptr != NULL)
        rc = cache_error(err, errptr, "check");
    rocksdb_free(errptr);
cleanup:
    if (rc != 0) {
        json_decref(*digests);
        *digests = NULL;
        if (bad != NULL) {
            json_decref(*bad);
            *bad = NULL;
        }
    }
    return rc;
}

void syncd_cache_clear(syncd_cache_t *cache)
{
    syncd_lru_node_t *node, *next;

    pthread_rwlock_wrlock(&cache->lock);
    for (node = syncd_lru_next(&cache->index, NULL); node != NULL;
         node = next) {
        next = syncd_lru_next(&cache->index, node);
        drop(cache, (cache_entry_t *)node);
    }
    unlock_exclusive(cache);
}

static cache_entry_t *find(syncd_cache_t *c, const syncd_reckey_t *k)
{
    return (cache_entry_t *)syncd_lru_find(&c->index, k->bytes, k->len,
                                           k->hash);
}

/* Copies doc into *out (the body shared). */
static int dup_out(syncd_doc_t **out, const syncd_doc_t *doc,
                   syncd_error_t *err)
{
    *out = syncd_doc_dup(doc);
    return *out != NULL ? 0
                        : syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
}

/* Decodes the record val (vlen bytes) of the entry of k with generation
 * gen into *out, and takes a copy of it into the tier unless the entry
 * changed meanwhile. Called with no lock held. */
static int load(syncd_cache_t *c, syncd_doc_t **out, const syncd_reckey_t *k,
                uint64_t gen, const char *coll, const char *id, const char *val,
                size_t vlen, syncd_error_t *err)
{
    syncd_doc_t *doc = NULL;
    cache_entry_t *e;
    int rc;

    rc = syncd_record_decode(&doc, coll, id, val, vlen, 1, err);
    if (rc == 0)
        rc = dup_out(out, doc, err);
    if (rc != 0) {
        syncd_doc_free(doc);
        return rc;
    }
    /* Shared is enough: the tier locks itself, and the entry of gen (whose
     * tier entry, if any, holds this same record) cannot go meanwhile. */
    pthread_rwlock_rdlock(&c->lock);
    e = find(c, k);
    if (e != NULL && e->gen == gen) {
        syncd_tier_put(c->tier, k, doc, e->stored_ms, k->len + vlen, 0, NULL, 0,
                       NULL);
        doc = NULL;
    }
    pthread_rwlock_unlock(&c->lock);
    syncd_doc_free(doc);
    return 0;
}

/* Drops the entry of k if it is still expired. */
static void drop_expired(syncd_cache_t *c, const syncd_reckey_t *k)
{
    cache_entry_t *e;

    pthread_rwlock_wrlock(&c->lock);
    e = find(c, k);
    if (e != NULL && !is_fresh(c, e, c->now_ms(c->now_data)))
        drop(c, e);
    unlock_exclusive(c);
}

/* Reads k's fresh entry into *out as syncd_cache_get() does; with
 * need_hist, an entry whose history is unknown counts as absent. */
static int cache_get(syncd_cache_t *cache, syncd_doc_t **out, const char *coll,
                     const char *id, int need_hist, syncd_error_t *err)
{
    char *errptr = NULL;
    char *val = NULL;
    int expired = 0;
    cache_entry_t *e;
    size_t vlen = 0;
    uint64_t gen = 0;
    syncd_reckey_t k;
    int rc;

    *out = NULL;
    rc = syncd_reckey_make(&k, coll, id, err);
    if (rc != 0)
        return rc;
    pthread_rwlock_rdlock(&cache->lock);
    e = find(cache, &k);
    if (e != NULL && !is_fresh(cache, e, cache->now_ms(cache->now_data))) {
        expired = 1;
        e = NULL;
    }
    if (e != NULL && need_hist && !e->hist_known)
        e = NULL;
    if (e != NULL) {
        mark_used(e);
        rc = syncd_tier_get(cache->tier, &k, out);
        if (rc == SYNCD_ENOMEM) {
            syncd_error_set(err, rc, "out of memory");
        } else if (rc == SYNCD_ENOTFOUND && e->lazy && e->dirty == NULL) {
            /* Its body left the tier before its record was made (the tier
             * keeps it pinned, so this is only defensive): not served. */
            rc = syncd_error_set(err, SYNCD_ENOTFOUND, "%s/%s not cached", coll,
                                 id);
        } else if (rc == SYNCD_ENOTFOUND && e->dirty != NULL) {
            gen = e->gen;
            rc = 0;
            vlen = e->dirty_len;
            val = malloc(vlen);
            if (val != NULL)
                memcpy(val, e->dirty, vlen);
            else
                rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        } else if (rc == SYNCD_ENOTFOUND) {
            gen = e->gen;
            rc = 0;
            val = rocksdb_get(cache->db, cache->read, k.bytes, k.len, &vlen,
                              &errptr);
        }
    }
    pthread_rwlock_unlock(&cache->lock);

    if (expired)
        drop_expired(cache, &k);
    if (errptr != NULL)
        rc = cache_error(err, errptr, "get");
    else if (val != NULL)
        rc = load(cache, out, &k, gen, coll, id, val, vlen, err);
    else if (*out == NULL && rc == 0)
        rc =
            syncd_error_set(err, SYNCD_ENOTFOUND, "%s/%s not cached", coll, id);
    rocksdb_free(val);
    syncd_tier_count(cache->tier, rc == 0 ? SYNCD_TIER_HIT : SYNCD_TIER_MISS);
    return rc;
}

int syncd_cache_get(syncd_cache_t *cache, syncd_doc_t **out, const char *coll,
                    const char *id, syncd_error_t *err)
{
    return cache_get(cache, out, coll, id, 0, err);
}

int syncd_cache_get_with_history(syncd_cache_t *cache, syncd_doc_t **out,
                                 const char *coll, const char *id,
                                 syncd_error_t *err)
{
    return cache_get(cache, out, coll, id, 1, err);
}

/* Returns a new entry for doc under k, not yet linked, or NULL when out
 * of memory. */
static cache_entry_t *entry_new(const syncd_reckey_t *k, const syncd_doc_t *doc,
                                size_t vlen, int hist_known)
{
    cache_entry_t *e = calloc(1, sizeof(*e) + k->len);

    if (e == NULL)
        return NULL;
    syncd_reckey_node(&e->node, e->key, k, k->len + vlen);
    e->version = doc->version;
    e->deleted = doc->deleted;
    e->hist_known = hist_known;
    memcpy(e->hash, doc->hash, sizeof(e->hash));
    return e;
}

/* Whether old, k's entry or NULL, is fresh at now with a version of at
 * least version: then a put of version keeps it, unless the put brings the
 * history (hist_known) of the same version to an entry without it. With
 * the lock held. */
static int keeps(const syncd_cache_t *c, const cache_entry_t *old,
                 int64_t version, int hist_known, int64_t now)
{
    return old != NULL && is_fresh(c, old, now) &&
           (old->version > version ||
            (old->version == version && (old->hist_known || !hist_known)));
}

/* Stores doc as syncd_cache_put() does, its entry's history known when
 * hist_known. */
static int cache_put(syncd_cache_t *cache, const syncd_doc_t *doc,
                     const char *canon, size_t canon_len, int hist_known,
                     syncd_error_t *err)
{
    cache_entry_t *e = NULL, *old;
    syncd_doc_t *decoded = NULL;
    char *val = NULL;
    size_t vlen = 0;
    int kept;
    int64_t now;
    syncd_reckey_t k;
    int rc;

    rc = syncd_reckey_make(&k, doc->coll, doc->id, err);
    if (rc != 0)
        return rc;
    /* A store read of a document already cached is the common case: skip
     * the encoding, which the check under the exclusive lock repeats. */
    pthread_rwlock_rdlock(&cache->lock);
    kept = keeps(cache, find(cache, &k), doc->version, hist_known,
                 cache->now_ms(cache->now_data));
    pthread_rwlock_unlock(&cache->lock);
    if (kept)
        return 0;
    rc = syncd_record_encode(&val, &vlen, doc, 0, canon, canon_len, err);
    if (rc != 0)
        return rc;
    e = entry_new(&k, doc, vlen, hist_known);
    decoded = syncd_doc_dup(doc);
    if (e == NULL || decoded == NULL) {
        free(e);
        syncd_doc_free(decoded);
        free(val);
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }

    pthread_rwlock_wrlock(&cache->lock);
    now = cache->now_ms(cache->now_data);
    old = find(cache, &k);
    if (keeps(cache, old, doc->version, hist_known, now)) {
        rc = 0;
        goto unlock;
    }
    if (old != NULL)
        entry_free(cache, old);
    e->stored_ms = now;
    e->gen = ++cache->gens;
    syncd_lru_insert(&cache->index, &e->node);
    mark_dirty(cache, e, val, vlen);
    val = NULL;
    syncd_tier_put(cache->tier, &k, decoded, now, k.len + vlen, 1, NULL, 0,
                   NULL);
    decoded = NULL;
    e = NULL;
    evict(cache);
    if (now - cache->flushed_ms >= SYNCD_CACHE_FLUSH_MS)
        flush(cache, now);
    rc = 1;
unlock:
    unlock_exclusive(cache);
    free(e);
    syncd_doc_free(decoded);
    free(val);
    return rc;
}

int syncd_cache_put(syncd_cache_t *cache, const syncd_doc_t *doc,
                    const char *canon, size_t canon_len, syncd_error_t *err)
{
    syncd_doc_t bare = *doc;

    bare.hist = NULL;
    return cache_put(cache, &bare, canon, canon_len, 0, err);
}

int syncd_cache_put_with_history(syncd_cache_t *cache, const syncd_doc_t *doc,
                                 const char *canon, size_t canon_len,
                                 syncd_error_t *err)
{
    return cache_put(cache, doc, canon, canon_len, 1, err);
}

/* Whether patch has a "copy" operation. */
static int copies(const json_t *patch)
{
    size_t i;
    json_t *op;

    json_array_foreach (patch, i, op) {
        if (json_is_string(json_object_get(op, "op")) &&
            strcmp(json_string_value(json_object_get(op, "op")), "copy") == 0)
            return 1;
    }
    return 0;
}

/* Applies patch to the taken body (and its tree, when it has one) and
 * checks the result's hash against want; 0 when it matches, SYNCD_ECONFLICT
 * when it does not, another code when the patch fails (then body and tree
 * are as they were). *tree is freed and set NULL when it could not follow. */
static int patch_taken(json_t **body, syncd_htree_t **tree, const json_t *patch,
                       size_t size, size_t patch_size, size_t max_bytes,
                       const char *want, syncd_error_t *err)
{
    syncd_patch_limits_t limits = {max_bytes, 0};
    char hash[SYNCD_HASH_HEX_LEN + 1];
    int rc;

    /* The body's canonical JSON is within its record's size, and without a
     * copy (which may double it) no operation adds more than its own
     * bytes: when even that plus the whole patch fits, the result does,
     * and the limit (which counts the whole document first) is not
     * needed. */
    rc = syncd_patch_apply_in_place(
        body, patch,
        copies(patch) || size + patch_size > max_bytes ? &limits : NULL, err);
    if (rc != 0)
        return rc;
    if (*tree != NULL && syncd_htree_apply(*tree, patch, NULL) == 0) {
        syncd_htree_root(*tree, hash);
    } else {
        syncd_htree_free(*tree);
        *tree = NULL;
        if (syncd_json_hash(hash, *body, NULL) != 0)
            hash[0] = '\0';
    }
    return strcmp(hash, want) == 0 ? 0 : SYNCD_ECONFLICT;
}

int syncd_cache_patch(syncd_cache_t *cache, const syncd_doc_t *meta,
                      int64_t base, const json_t *patch, size_t max_bytes,
                      int nonblocking, int64_t *cached, syncd_error_t *err)
{
    size_t size = 0, patch_size;
    syncd_htree_t *tree = NULL;
    json_t *body = NULL;
    cache_entry_t *e;
    syncd_reckey_t k;
    int64_t now;
    int rc;

    *cached = -1;
    rc = syncd_reckey_make(&k, meta->coll, meta->id, err);
    if (rc != 0)
        return rc;
    if (!nonblocking) {
        pthread_rwlock_rdlock(&cache->lock);
        e = find(cache, &k);
        if (e != NULL && is_fresh(cache, e, cache->now_ms(cache->now_data)))
            size = e->node.size;
        pthread_rwlock_unlock(&cache->lock);
        /* The first patch of a large body builds its tree, no lock held. */
        if (size >= SYNCD_TREE_MIN)
            syncd_tier_build_tree(cache->tier, &k, base, size);
        pthread_rwlock_wrlock(&cache->lock);
    } else if (pthread_rwlock_trywrlock(&cache->lock) != 0) {
        return 2;
    }
    now = cache->now_ms(cache->now_data);
    e = find(cache, &k);
    if (e != NULL && is_fresh(cache, e, now))
        *cached = e->version;
    rc = 0;
    /* Without blocking, leave what may do I/O (evicting) to a blocking
     * call. Neither writes the dirty records: that is
     * syncd_cache_flush_due()'s, off the event's path. */
    if (e == NULL || !is_fresh(cache, e, now) || e->version != base ||
        e->deleted || (nonblocking && cached_bytes(cache) > cache->max_bytes) ||
        syncd_tier_take(cache->tier, &k, base,
                        nonblocking && e->node.size >= SYNCD_TREE_MIN, &body,
                        &tree) != 0)
        goto unlock;
    size = e->node.size;
    patch_size = syncd_json_compact_size(patch, 0);
    rc = patch_taken(&body, &tree, patch, size, patch_size, max_bytes,
                     meta->hash, err);
    if (rc == SYNCD_ECONFLICT) {
        syncd_tier_give_back(cache->tier, &k, SYNCD_TIER_BACK_DROP, NULL, body,
                             tree, now, 0);
        drop(cache, e);
        syncd_error_set(err, rc,
                        "%s/%s v%lld: the patched body's hash is "
                        "not the event's",
                        meta->coll, meta->id, (long long)meta->version);
        goto unlock;
    }
    if (rc != 0) {
        syncd_tier_give_back(cache->tier, &k, SYNCD_TIER_BACK_UNCHANGED, NULL,
                             body, tree, now, 0);
        goto unlock;
    }
    e->patched += patch_size;
    size += patch_size;
    if (e->patched > size - e->patched) {
        size =
            e->node.keylen + syncd_json_compact_size(body, 0) + RECORD_HEADER;
        e->patched = 0;
    }
    syncd_tier_give_back(cache->tier, &k, SYNCD_TIER_BACK_CHANGED, meta, body,
                         tree, now, size);
    e->version = meta->version;
    memcpy(e->hash, meta->hash, sizeof(e->hash));
    e->hist_known = 0;
    e->stored_ms = now;
    e->gen = ++cache->gens;
    recharge(cache, e, size);
    mark_lazy(cache, e);
    *cached = meta->version;
    rc = 1;
    if (!nonblocking)
        evict(cache);
unlock:
    unlock_exclusive(cache);
    return rc;
}

int syncd_cache_list_hashes(syncd_cache_t *cache, const syncd_doc_t *doc,
                            const char *path, size_t level, size_t from,
                            size_t count, json_t **out, syncd_error_t *err)
{
    syncd_reckey_t k;
    int rc = syncd_reckey_make(&k, doc->coll, doc->id, err);

    *out = NULL;
    if (rc != 0)
        return rc;
    return syncd_tier_list_hashes(cache->tier, &k, doc->body, path,
                                  strlen(path), level, from, count, out, err);
}

int syncd_cache_invalidate(syncd_cache_t *cache, const char *coll,
                           const char *id, syncd_error_t *err)
{
    size_t clen = strlen(coll);
    syncd_lru_node_t *node, *next;
    cache_entry_t *e;
    syncd_reckey_t k;
    int rc = 0;

    if (id != NULL) {
        rc = syncd_reckey_make(&k, coll, id, err);
        if (rc != 0)
            return rc;
    }
    pthread_rwlock_wrlock(&cache->lock);
    if (id != NULL) {
        if ((e = find(cache, &k)) != NULL)
            drop(cache, e);
    } else {
        for (node = syncd_lru_next(&cache->index, NULL); node != NULL;
             node = next) {
            next = syncd_lru_next(&cache->index, node);
            if (in_coll((cache_entry_t *)node, coll, clen))
                drop(cache, (cache_entry_t *)node);
        }
    }
    unlock_exclusive(cache);
    return rc;
}

static int entry_cmp(const void *a, const void *b)
{
    const cache_entry_t *x = *(cache_entry_t *const *)a;
    const cache_entry_t *y = *(cache_entry_t *const *)b;
    size_t n =
        x->node.keylen < y->node.keylen ? x->node.keylen : y->node.keylen;
    int c = memcmp(x->key, y->key, n);

    if (c != 0)
        return c;
    return x->node.keylen < y->node.keylen ? -1
                                           : x->node.keylen > y->node.keylen;
}

/* Appends {"id","v","h"} of every entry in picked (n of them, sorted) to
 * arr; the id is the key after the collection name and its NUL. */
static int append_entries(json_t *arr, cache_entry_t **picked, size_t n,
                          size_t clen)
{
    for (size_t i = 0; i < n; i++) {
        cache_entry_t *e = picked[i];
        json_t *o = json_pack("{s:s%, s:I, s:s}", "id", e->key + clen + 1,
                              e->node.keylen - clen - 1, "v",
                              (json_int_t)e->version, "h", e->hash);

        if (o == NULL || json_array_append_new(arr, o) != 0)
            return SYNCD_ENOMEM;
    }
    return 0;
}

int syncd_cache_list(syncd_cache_t *cache, json_t **out, const char *coll,
                     syncd_error_t *err)
{
    size_t clen = strlen(coll), n = 0;
    cache_entry_t **picked = NULL;
    syncd_lru_node_t *node;
    json_t *arr = json_array();
    int64_t now;
    int rc = SYNCD_ENOMEM;

    *out = NULL;
    pthread_rwlock_rdlock(&cache->lock);
    now = cache->now_ms(cache->now_data);
    picked = malloc((cache->index.count + 1) * sizeof(*picked));
    if (picked == NULL || arr == NULL)
        goto unlock;
    for (node = syncd_lru_next(&cache->index, NULL); node != NULL;
         node = syncd_lru_next(&cache->index, node)) {
        cache_entry_t *e = (cache_entry_t *)node;

        if (in_coll(e, coll, clen) && !e->deleted && is_fresh(cache, e, now))
            picked[n++] = e;
    }
    qsort(picked, n, sizeof(*picked), entry_cmp);
    rc = append_entries(arr, picked, n, clen);
unlock:
    pthread_rwlock_unlock(&cache->lock);
    free(picked);
    if (rc != 0) {
        json_decref(arr);
        return syncd_error_set(err, rc, "out of memory");
    }
    *out = arr;
    return 0;
}

/* Appends the page entry of the cache entry under key (klen bytes, in
 * coll, whose name is clen bytes) to arr when it is fresh; entries gone
 * since the iterator was made are skipped. */
static int page_entry(syncd_cache_t *cache, json_t *arr, const char *key,
                      size_t klen, size_t clen)
{
    cache_entry_t *e;
    json_t *o = NULL;
    int rc = 0;

    pthread_rwlock_rdlock(&cache->lock);
    e = (cache_entry_t *)syncd_lru_find(&cache->index, key, klen,
                                        syncd_lru_hash(key, klen));
    if (e != NULL && is_fresh(cache, e, cache->now_ms(cache->now_data))) {
        o = json_pack("{s:s%, s:I, s:s}", "id", key + clen + 1, klen - clen - 1,
                      "v", (json_int_t)e->version, "h", e->hash);
        if (o != NULL && e->deleted &&
            json_object_set_new(o, "del", json_true()) != 0) {
            json_decref(o);
            o = NULL;
        }
        if (o == NULL || json_array_append_new(arr, o) != 0)
            rc = SYNCD_ENOMEM;
    }
    pthread_rwlock_unlock(&cache->lock);
    return rc;
}

int syncd_cache_page(syncd_cache_t *cache, json_t **out, const char *coll,
                     const char *after, size_t limit, syncd_error_t *err)
{
    size_t clen = strlen(coll);
    rocksdb_iterator_t *it = NULL;
    json_t *arr = json_array();
    char *errptr = NULL;
    syncd_reckey_t start;
    int rc;

    *out = NULL;
    if (arr == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    rc = syncd_reckey_make(&start, coll, after != NULL ? after : "", err);
    if (rc != 0)
        goto done;
    flush_now(cache);
    /* Every entry has its record in RocksDB, in id order within coll: the
     * iterator finds the page's keys and the index their freshness. */
    it = rocksdb_create_iterator(cache->db, cache->read);
    for (rocksdb_iter_seek(it, start.bytes, start.len);
         rocksdb_iter_valid(it) && json_array_size(arr) < limit;
         rocksdb_iter_next(it)) {
        size_t klen;
        const char *key = rocksdb_iter_key(it, &klen);

        if (klen <= clen || memcmp(key, coll, clen + 1) != 0)
            break;
        if (after != NULL && klen == start.len &&
            memcmp(key, start.bytes, klen) == 0)
            continue;
        rc = page_entry(cache, arr, key, klen, clen);
        if (rc != 0) {
            rc = syncd_error_set(err, rc, "out of memory");
            goto done;
        }
    }
    rocksdb_iter_get_error(it, &errptr);
    if (errptr != NULL)
        rc = cache_error(err, errptr, "iterate");
done:
    if (it != NULL)
        rocksdb_iter_destroy(it);
    if (rc != 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

void syncd_cache_stats(syncd_cache_t *cache, syncd_store_stats_t *out)
{
    syncd_store_stats_t tier = {0};

    syncd_tier_stats(cache->tier, &tier);
    out->cache_hits = tier.cache_hits;
    out->cache_misses = tier.cache_misses;
    out->cache_evictions = tier.cache_evictions;
    out->cache_bytes = __atomic_load_n(&cache->index_bytes, __ATOMIC_RELAXED) +
                       tier.cache_bytes;
    out->cache_entries = __atomic_load_n(&cache->entries, __ATOMIC_RELAXED);
    out->cache_writes = __atomic_load_n(&cache->writes, __ATOMIC_RELAXED);
    syncd_rocks_memory(cache->db, out);
}

syncd_tier_t *syncd_cache_tier(syncd_cache_t *cache)
{
    return cache->tier;
}
