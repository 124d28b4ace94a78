/* cache.c - the node cache: recent documents of the MongoDB store in a
 * local RocksDB, with a TTL and a size bound.
 *
 * Bodies live in a RocksDB of their own (WAL off: the cache is discarded at
 * every open, so nothing in it needs to survive a crash). An in-memory index
 * of every entry, keyed like the records (see record.c), holds what the
 * policies need without touching RocksDB: version, hash, tombstone flag,
 * when the entry was stored, its size, and its recency. An entry older than
 * the TTL is never served; when the cached bytes pass max_bytes the least
 * recently used entries are evicted until they fit again, so the bound is
 * exact. put-if-newer never replaces a fresh entry by an equal or lower
 * version. One mutex guards the index and orders the RocksDB writes with it.
 */
#include <pthread.h>
#include <rocksdb/c.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* One cached record's index entry; the key bytes follow the struct. */
typedef struct cache_entry {
    syncd_lru_node_t node;
    int64_t version;
    int64_t stored_ms;
    int deleted;
    char hash[SYNCD_HASH_HEX_LEN + 1];
    char key[];
} cache_entry_t;

struct syncd_cache {
    pthread_mutex_t lock;
    syncd_lru_t index;
    rocksdb_t *db;
    rocksdb_options_t *options;
    rocksdb_readoptions_t *read;
    rocksdb_writeoptions_t *write;
    int64_t ttl_ms;
    uint64_t max_bytes;
    int64_t (*now_ms)(void *data);
    void *now_data;
    uint64_t hits, misses, evictions;
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

static int is_fresh(const syncd_cache_t *c, const cache_entry_t *e, int64_t now)
{
    return now - e->stored_ms < c->ttl_ms;
}

static int in_coll(const cache_entry_t *e, const char *coll, size_t clen)
{
    return e->node.keylen > clen && memcmp(e->key, coll, clen + 1) == 0;
}

/* Drops e from the index and its body from RocksDB; with the lock held. */
static void drop(syncd_cache_t *c, cache_entry_t *e)
{
    char *errptr = NULL;

    rocksdb_delete(c->db, c->write, e->key, e->node.keylen, &errptr);
    rocksdb_free(errptr);
    syncd_lru_remove(&c->index, &e->node);
    free(e);
}

static void free_node(syncd_lru_node_t *node)
{
    free(node);
}

int syncd_cache_open(syncd_cache_t **out, const char *dir, int64_t ttl_ms,
                     uint64_t max_bytes, const syncd_store_hooks_t *hooks,
                     syncd_error_t *err)
{
    syncd_cache_t *c = calloc(1, sizeof(*c));
    char *errptr = NULL;

    *out = NULL;
    if (c == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    if (syncd_lru_init(&c->index) != 0) {
        free(c);
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }
    pthread_mutex_init(&c->lock, NULL);
    c->ttl_ms = ttl_ms;
    c->max_bytes = max_bytes;
    c->now_ms =
        hooks != NULL && hooks->now_ms != NULL ? hooks->now_ms : monotonic_ms;
    c->now_data = hooks != NULL ? hooks->data : NULL;
    c->options = rocksdb_options_create();
    c->read = rocksdb_readoptions_create();
    c->write = rocksdb_writeoptions_create();
    rocksdb_options_set_create_if_missing(c->options, 1);
    rocksdb_writeoptions_disable_WAL(c->write, 1);
    rocksdb_destroy_db(c->options, dir, &errptr);
    if (errptr == NULL)
        c->db = rocksdb_open(c->options, dir, &errptr);
    if (errptr != NULL) {
        int rc = cache_error(err, errptr, "open");

        syncd_cache_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

void syncd_cache_close(syncd_cache_t *cache)
{
    if (cache == NULL)
        return;
    syncd_lru_destroy(&cache->index, free_node);
    pthread_mutex_destroy(&cache->lock);
    if (cache->db != NULL)
        rocksdb_close(cache->db);
    rocksdb_writeoptions_destroy(cache->write);
    rocksdb_readoptions_destroy(cache->read);
    rocksdb_options_destroy(cache->options);
    free(cache);
}

/* Finds the entry of coll/id, key written into key; NULL when absent. */
static cache_entry_t *find(syncd_cache_t *c, char key[SYNCD_RECORD_KEY_MAX],
                           size_t klen)
{
    return (cache_entry_t *)syncd_lru_find(&c->index, key, klen,
                                           syncd_lru_hash(key, klen));
}

static int make_key(char key[SYNCD_RECORD_KEY_MAX], size_t *klen,
                    const char *coll, const char *id, syncd_error_t *err)
{
    *klen = syncd_record_key(key, coll, id);
    return *klen != 0 ? 0
                      : syncd_error_set(err, SYNCD_EINVAL,
                                        "collection or id too long for a key");
}

int syncd_cache_get(syncd_cache_t *cache, syncd_doc_t **out, const char *coll,
                    const char *id, syncd_error_t *err)
{
    char key[SYNCD_RECORD_KEY_MAX];
    char *errptr = NULL;
    char *val = NULL;
    cache_entry_t *e;
    size_t klen, vlen = 0;
    int rc;

    *out = NULL;
    rc = make_key(key, &klen, coll, id, err);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&cache->lock);
    e = find(cache, key, klen);
    if (e != NULL && !is_fresh(cache, e, cache->now_ms(cache->now_data))) {
        drop(cache, e);
        e = NULL;
    }
    if (e != NULL) {
        syncd_lru_touch(&cache->index, &e->node);
        val = rocksdb_get(cache->db, cache->read, key, klen, &vlen, &errptr);
    }
    if (errptr != NULL)
        rc = cache_error(err, errptr, "get");
    else if (val == NULL)
        rc =
            syncd_error_set(err, SYNCD_ENOTFOUND, "%s/%s not cached", coll, id);
    else
        rc = syncd_record_decode(out, coll, id, val, vlen, 1, err);
    if (rc == 0)
        cache->hits++;
    else
        cache->misses++;
    pthread_mutex_unlock(&cache->lock);
    rocksdb_free(val);
    return rc;
}

/* Evicts least recently used entries until the cached bytes fit. */
static void evict(syncd_cache_t *c)
{
    while (c->index.bytes > c->max_bytes && c->index.count > 0) {
        drop(c, (cache_entry_t *)syncd_lru_oldest(&c->index));
        c->evictions++;
    }
}

int syncd_cache_put(syncd_cache_t *cache, const syncd_doc_t *doc,
                    syncd_error_t *err)
{
    char key[SYNCD_RECORD_KEY_MAX];
    cache_entry_t *e = NULL, *old;
    char *errptr = NULL;
    char *val = NULL;
    size_t klen, vlen;
    int64_t now;
    int rc;

    rc = make_key(key, &klen, doc->coll, doc->id, err);
    if (rc == 0)
        rc = syncd_record_encode(&val, &vlen, doc, err);
    if (rc != 0)
        return rc;
    e = calloc(1, sizeof(*e) + klen);
    if (e == NULL) {
        free(val);
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }
    memcpy(e->key, key, klen);
    e->node.key = e->key;
    e->node.keylen = klen;
    e->node.hash = syncd_lru_hash(key, klen);
    e->node.size = klen + vlen;
    e->version = doc->version;
    e->deleted = doc->deleted;
    memcpy(e->hash, doc->hash, sizeof(e->hash));

    pthread_mutex_lock(&cache->lock);
    now = cache->now_ms(cache->now_data);
    old = find(cache, key, klen);
    if (old != NULL && is_fresh(cache, old, now) &&
        old->version >= doc->version) {
        rc = 0;
        goto unlock;
    }
    rocksdb_put(cache->db, cache->write, key, klen, val, vlen, &errptr);
    if (errptr != NULL) {
        rc = cache_error(err, errptr, "put");
        goto unlock;
    }
    if (old != NULL)
        syncd_lru_remove(&cache->index, &old->node);
    free(old);
    e->stored_ms = now;
    syncd_lru_insert(&cache->index, &e->node);
    e = NULL;
    evict(cache);
    rc = 1;
unlock:
    pthread_mutex_unlock(&cache->lock);
    free(e);
    free(val);
    return rc;
}

int syncd_cache_invalidate(syncd_cache_t *cache, const char *coll,
                           const char *id, syncd_error_t *err)
{
    char key[SYNCD_RECORD_KEY_MAX];
    size_t klen, clen = strlen(coll);
    syncd_lru_node_t *node, *next;
    cache_entry_t *e;
    int rc = 0;

    pthread_mutex_lock(&cache->lock);
    if (id != NULL) {
        rc = make_key(key, &klen, coll, id, err);
        if (rc == 0 && (e = find(cache, key, klen)) != NULL)
            drop(cache, e);
    } else {
        for (node = syncd_lru_next(&cache->index, NULL); node != NULL;
             node = next) {
            next = syncd_lru_next(&cache->index, node);
            if (in_coll((cache_entry_t *)node, coll, clen))
                drop(cache, (cache_entry_t *)node);
        }
    }
    pthread_mutex_unlock(&cache->lock);
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
    pthread_mutex_lock(&cache->lock);
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
    pthread_mutex_unlock(&cache->lock);
    free(picked);
    if (rc != 0) {
        json_decref(arr);
        return syncd_error_set(err, rc, "out of memory");
    }
    *out = arr;
    return 0;
}

void syncd_cache_stats(syncd_cache_t *cache, syncd_store_stats_t *out)
{
    pthread_mutex_lock(&cache->lock);
    out->cache_hits = cache->hits;
    out->cache_misses = cache->misses;
    out->cache_evictions = cache->evictions;
    out->cache_bytes = cache->index.bytes;
    out->cache_entries = cache->index.count;
    pthread_mutex_unlock(&cache->lock);
}
