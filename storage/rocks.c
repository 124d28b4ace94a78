/* rocks.c - the RocksDB store of record of the embedded default.
 *
 * Records live under key = collection, NUL, id (see record.c); a second
 * key space, one key per collection under the prefix byte 0x01 (which no
 * collection name starts with), registers collection names; a third, under
 * 0x02, holds the key of every record with pending-publish markers (the
 * outbox), written in the same batch as the record, so that the
 * republisher lists those without scanning the store. The WAL is on
 * and, with sync_writes, every commit is fsynced before it is acknowledged,
 * so an acknowledged write survives kill -9.
 *
 * Compare-and-swap is made atomic by striping: every key hashes to one of
 * NSTRIPES mutexes, and a writer holds its key's mutex from the version
 * check to the commit. Each stripe also owns a slice of the in-memory tier:
 * decoded, reference-counted documents (the json_t body is shared with the
 * callers) in front of RocksDB, kept exact by updating it under the same
 * mutex on every write, and bounded by evicting the least recently used
 * entries. Reads of a key that is not in the tier go to RocksDB under the
 * stripe mutex, so a stale read can never be put in the tier after a newer
 * write. The tier counts its hits, misses and evictions per stripe, under
 * the same mutex.
 *
 * The stripe mutexes are re-entrant, and the store's edit loop holds a
 * key's mutex across its read, edit and compare-and-swap (the backend's
 * `locked` operation): within one process, the only place this store is
 * ever written from, writers of a key queue instead of conflicting.
 */
#include <pthread.h>
#include <rocksdb/c.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define NSTRIPES 64
#define TIER_MAX_BYTES ((uint64_t)64 << 20)
#define REGISTRY_PREFIX '\x01'
#define OUTBOX_PREFIX '\x02'

/* A decoded record in the in-memory tier; key bytes follow the struct. */
typedef struct tier_entry {
    syncd_lru_node_t node;
    syncd_doc_t *doc;
    char key[];
} tier_entry_t;

typedef struct stripe {
    pthread_mutex_t lock; /* recursive */
    syncd_lru_t tier;
    uint64_t hits, misses, evictions; /* reads and evictions of the tier */
} stripe_t;

typedef struct rocks {
    syncd_backend_t base;
    rocksdb_t *db;
    rocksdb_options_t *options;
    rocksdb_readoptions_t *read;
    rocksdb_writeoptions_t *write;
    rocksdb_writeoptions_t *write_nosync; /* outbox acks */
    int nstripes_ready;
    stripe_t stripes[NSTRIPES];
} rocks_t;

static int rocks_error(syncd_error_t *err, char *errptr, const char *what)
{
    int rc = syncd_error_set_backend(err, SYNCD_EBACKEND, "rocksdb", 0,
                                     "rocksdb %s: %s", what, errptr);

    rocksdb_free(errptr);
    return rc;
}

/* Makes coll/id's key in *k and locks its stripe, returned in *s for the
 * caller to unlock; fails, locking nothing, when the key cannot be made. */
static int lock_key(rocks_t *r, syncd_reckey_t *k, stripe_t **s,
                    const char *coll, const char *id, syncd_error_t *err)
{
    int rc = syncd_reckey_make(k, coll, id, err);

    if (rc != 0)
        return rc;
    *s = &r->stripes[(k->hash >> 40) % NSTRIPES];
    pthread_mutex_lock(&(*s)->lock);
    return 0;
}

static void free_entry(syncd_lru_node_t *node)
{
    tier_entry_t *e = (tier_entry_t *)node;

    syncd_doc_free(e->doc);
    free(e);
}

static void tier_drop(stripe_t *s, const syncd_reckey_t *k)
{
    syncd_lru_node_t *node =
        syncd_lru_find(&s->tier, k->bytes, k->len, k->hash);

    if (node != NULL) {
        syncd_lru_remove(&s->tier, node);
        free_entry(node);
    }
}

/* Puts doc (ownership taken) into the stripe's tier as the newest entry,
 * replacing any entry of the key, then evicts down to the stripe's share
 * of TIER_MAX_BYTES. Returns the tier's doc (borrowed), or NULL when out
 * of memory (doc freed, no entry left for the key). */
static syncd_doc_t *tier_put(stripe_t *s, const syncd_reckey_t *k,
                             syncd_doc_t *doc, size_t size)
{
    tier_entry_t *e;

    tier_drop(s, k);
    e = malloc(sizeof(*e) + k->len);
    if (e == NULL) {
        syncd_doc_free(doc);
        return NULL;
    }
    syncd_reckey_node(&e->node, e->key, k,
                      size + k->len + SYNCD_TIER_ENTRY_OVERHEAD);
    e->doc = doc;
    syncd_lru_insert(&s->tier, &e->node);
    while (s->tier.bytes > TIER_MAX_BYTES / NSTRIPES && s->tier.count > 1) {
        syncd_lru_node_t *old = syncd_lru_oldest(&s->tier);

        syncd_lru_remove(&s->tier, old);
        free_entry(old);
        s->evictions++;
    }
    return doc;
}

/* Finds coll/id in the tier or loads it from RocksDB into the tier; with
 * the stripe locked. *doc is borrowed from the tier, or NULL with
 * SYNCD_ENOTFOUND when there is no record. A read (is_read set, as opposed
 * to a writer's version check) counts a tier hit or miss. */
static int load(rocks_t *r, stripe_t *s, const syncd_reckey_t *k,
                const char *coll, const char *id, syncd_doc_t **doc,
                int is_read, syncd_error_t *err)
{
    syncd_lru_node_t *node =
        syncd_lru_find(&s->tier, k->bytes, k->len, k->hash);
    syncd_doc_t *loaded = NULL;
    char *errptr = NULL;
    size_t vlen = 0;
    char *val;
    int rc;

    *doc = NULL;
    if (node != NULL) {
        s->hits += is_read ? 1 : 0;
        syncd_lru_touch(&s->tier, node);
        *doc = ((tier_entry_t *)node)->doc;
        return 0;
    }
    s->misses += is_read ? 1 : 0;
    val = rocksdb_get(r->db, r->read, k->bytes, k->len, &vlen, &errptr);
    if (errptr != NULL)
        return rocks_error(err, errptr, "get");
    if (val == NULL)
        return SYNCD_ENOTFOUND;
    rc = syncd_record_decode(&loaded, coll, id, val, vlen, 1, err);
    rocksdb_free(val);
    if (rc != 0)
        return rc;
    *doc = tier_put(s, k, loaded, vlen);
    return *doc != NULL ? 0
                        : syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
}

static int rocks_get(syncd_backend_t *b, syncd_doc_t **out, const char *coll,
                     const char *id, syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    syncd_doc_t *doc;
    stripe_t *s;
    syncd_reckey_t k;
    int rc;

    *out = NULL;
    rc = lock_key(r, &k, &s, coll, id, err);
    if (rc != 0)
        return rc;
    rc = load(r, s, &k, coll, id, &doc, 1, err);
    if (rc == 0) {
        *out = syncd_doc_dup(doc);
        if (*out == NULL)
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }
    pthread_mutex_unlock(&s->lock);
    if (rc == SYNCD_ENOTFOUND)
        syncd_error_set(err, rc, "%s/%s not found", coll, id);
    return rc;
}

/* Writes the outbox index key of record key k (OUTBOX_PREFIX, then k)
 * into buf, 1 + k->len bytes. */
static void outbox_key(char *buf, const syncd_reckey_t *k)
{
    buf[0] = OUTBOX_PREFIX;
    memcpy(buf + 1, k->bytes, k->len);
}

/* Commits doc's record, its body's canonical JSON given or NULL (see
 * syncd_record_encode()), and on an insert its collection's registry key,
 * in one write batch. */
static int commit(rocks_t *r, const syncd_reckey_t *k, const syncd_doc_t *doc,
                  const char *canon, size_t canon_len, int insert, size_t *vlen,
                  const rocksdb_writeoptions_t *wopts, syncd_error_t *err)
{
    rocksdb_writebatch_t *batch = NULL;
    char ob[1 + SYNCD_RECORD_KEY_MAX];
    char *errptr = NULL;
    char *val = NULL;
    int rc;

    rc = syncd_record_encode(&val, vlen, doc, canon, canon_len, err);
    if (rc != 0)
        return rc;
    batch = rocksdb_writebatch_create();
    rocksdb_writebatch_put(batch, k->bytes, k->len, val, *vlen);
    outbox_key(ob, k);
    if (json_array_size(doc->outbox) > 0)
        rocksdb_writebatch_put(batch, ob, 1 + k->len, "", 0);
    else
        rocksdb_writebatch_delete(batch, ob, 1 + k->len);
    if (insert) {
        char reg[1 + 64];
        size_t clen = strlen(doc->coll);

        reg[0] = REGISTRY_PREFIX;
        memcpy(reg + 1, doc->coll, clen);
        rocksdb_writebatch_put(batch, reg, 1 + clen, "", 0);
    }
    rocksdb_write(r->db, wopts, batch, &errptr);
    if (errptr != NULL)
        rc = rocks_error(err, errptr, "write");
    rocksdb_writebatch_destroy(batch);
    free(val);
    return rc;
}

static int rocks_cas_canonical(syncd_backend_t *b, const syncd_doc_t *doc,
                               const char *canon, size_t canon_len,
                               int64_t expected, syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    syncd_doc_t *cur = NULL;
    syncd_doc_t *copy = NULL;
    size_t vlen = 0;
    stripe_t *s;
    syncd_reckey_t k;
    int rc;

    rc = lock_key(r, &k, &s, doc->coll, doc->id, err);
    if (rc != 0)
        return rc;
    rc = load(r, s, &k, doc->coll, doc->id, &cur, 0, err);
    if (rc != 0 && rc != SYNCD_ENOTFOUND)
        goto unlock;
    if ((cur != NULL ? cur->version : 0) != expected) {
        rc = syncd_error_set(err, SYNCD_ECONFLICT,
                             "%s/%s is at version %lld, not %lld", doc->coll,
                             doc->id, (long long)(cur ? cur->version : 0),
                             (long long)expected);
        goto unlock;
    }
    copy = syncd_doc_dup(doc);
    if (copy == NULL) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto unlock;
    }
    rc =
        commit(r, &k, doc, canon, canon_len, cur == NULL, &vlen, r->write, err);
    if (rc != 0) {
        tier_drop(s, &k);
        syncd_doc_free(copy);
        goto unlock;
    }
    tier_put(s, &k, copy, vlen);
unlock:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int rocks_cas(syncd_backend_t *b, const syncd_doc_t *doc,
                     int64_t expected, syncd_error_t *err)
{
    return rocks_cas_canonical(b, doc, NULL, 0, expected, err);
}

static int rocks_locked(syncd_backend_t *b, const char *coll, const char *id,
                        int (*fn)(void *arg, syncd_error_t *err), void *arg,
                        syncd_error_t *err)
{
    stripe_t *s;
    syncd_reckey_t k;
    int rc;

    rc = lock_key((rocks_t *)b, &k, &s, coll, id, err);
    if (rc != 0)
        return rc;
    rc = fn(arg, err);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static void rocks_tier_stats(syncd_backend_t *b, syncd_store_stats_t *out)
{
    rocks_t *r = (rocks_t *)b;

    for (int i = 0; i < NSTRIPES; i++) {
        stripe_t *s = &r->stripes[i];

        pthread_mutex_lock(&s->lock);
        out->cache_hits += s->hits;
        out->cache_misses += s->misses;
        out->cache_evictions += s->evictions;
        out->cache_bytes += s->tier.bytes;
        out->cache_entries += s->tier.count;
        pthread_mutex_unlock(&s->lock);
    }
}

/* Positions a new iterator at the first key >= start (start_len bytes). */
static rocksdb_iterator_t *iter_at(rocks_t *r, const char *start,
                                   size_t start_len)
{
    rocksdb_iterator_t *it = rocksdb_create_iterator(r->db, r->read);

    rocksdb_iter_seek(it, start, start_len);
    return it;
}

static int iter_status(rocksdb_iterator_t *it, syncd_error_t *err)
{
    char *errptr = NULL;

    rocksdb_iter_get_error(it, &errptr);
    return errptr != NULL ? rocks_error(err, errptr, "iterate") : 0;
}

/* Appends one listing entry for doc (header only) to arr. */
static int append_entry(json_t *arr, const syncd_doc_t *doc)
{
    json_t *e = json_pack("{s:s, s:I, s:s}", "id", doc->id, "v",
                          (json_int_t)doc->version, "h", doc->hash);

    if (e == NULL)
        return SYNCD_ENOMEM;
    if (doc->deleted &&
        (json_object_set_new(e, "del", json_true()) != 0 ||
         json_object_set_new(e, "mt", json_integer(doc->mtime_ms)) != 0)) {
        json_decref(e);
        return SYNCD_ENOMEM;
    }
    return json_array_append_new(arr, e) == 0 ? 0 : SYNCD_ENOMEM;
}

static int rocks_list(syncd_backend_t *b, json_t **out, const char *coll,
                      const char *prefix, const char *after, size_t limit,
                      int with_tombstones, syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    const char *start = "";
    size_t plen = prefix != NULL ? strlen(prefix) : 0;
    rocksdb_iterator_t *it = NULL;
    json_t *arr = json_array();
    syncd_reckey_t k;
    int rc;

    *out = NULL;
    if (arr == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    if (after != NULL && (prefix == NULL || strcmp(after, prefix) > 0))
        start = after;
    else if (prefix != NULL)
        start = prefix;
    rc = syncd_reckey_make(&k, coll, start, err);
    if (rc != 0)
        goto done;
    it = iter_at(r, k.bytes, k.len);
    for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen, vlen, clen = strlen(coll);
        const char *key = rocksdb_iter_key(it, &klen);
        const char *val = rocksdb_iter_value(it, &vlen);
        char id[SYNCD_MAX_ID_BYTES + 1];
        syncd_doc_t *doc = NULL;
        size_t ilen;

        if (klen <= clen || memcmp(key, coll, clen + 1) != 0)
            break;
        ilen = klen - clen - 1;
        if (ilen > SYNCD_MAX_ID_BYTES)
            continue;
        memcpy(id, key + clen + 1, ilen);
        id[ilen] = '\0';
        if (prefix != NULL && strncmp(id, prefix, plen) != 0)
            break;
        if (after != NULL && strcmp(id, after) <= 0)
            continue;
        rc = syncd_record_decode(&doc, coll, id, val, vlen, 0, err);
        if (rc != 0)
            goto done;
        if (!doc->deleted || with_tombstones)
            rc = append_entry(arr, doc);
        syncd_doc_free(doc);
        if (rc != 0) {
            syncd_error_set(err, rc, "out of memory");
            goto done;
        }
        if (limit > 0 && json_array_size(arr) >= limit)
            break;
    }
    rc = iter_status(it, err);
done:
    if (it != NULL)
        rocksdb_iter_destroy(it);
    if (rc == 0)
        *out = arr;
    else
        json_decref(arr);
    return rc;
}

static int rocks_collections(syncd_backend_t *b, json_t **out,
                             syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    char start = REGISTRY_PREFIX;
    rocksdb_iterator_t *it = iter_at(r, &start, 1);
    json_t *arr = json_array();
    int rc = 0;

    *out = NULL;
    for (; arr != NULL && rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen;
        const char *key = rocksdb_iter_key(it, &klen);

        if (klen < 2 || key[0] != REGISTRY_PREFIX)
            break;
        if (json_array_append_new(arr, json_stringn(key + 1, klen - 1))) {
            json_decref(arr);
            arr = NULL;
        }
    }
    if (arr == NULL)
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    else
        rc = iter_status(it, err);
    rocksdb_iter_destroy(it);
    if (rc == 0)
        *out = arr;
    else
        json_decref(arr);
    return rc;
}

/* Deletes coll/id when it is still a tombstone older than before_ms;
 * *removed says whether it was. */
static int purge_one(rocks_t *r, const char *coll, const char *id,
                     int64_t before_ms, int *removed, syncd_error_t *err)
{
    syncd_doc_t *cur = NULL;
    char *errptr = NULL;
    stripe_t *s;
    syncd_reckey_t k;
    int rc;

    *removed = 0;
    rc = lock_key(r, &k, &s, coll, id, err);
    if (rc != 0)
        return rc;
    rc = load(r, s, &k, coll, id, &cur, 0, err);
    if (rc == SYNCD_ENOTFOUND)
        rc = 0;
    else if (rc == 0 && cur->deleted && cur->mtime_ms < before_ms &&
             json_array_size(cur->outbox) == 0) {
        rocksdb_delete(r->db, r->write, k.bytes, k.len, &errptr);
        tier_drop(s, &k);
        if (errptr != NULL)
            rc = rocks_error(err, errptr, "delete");
        else
            *removed = 1;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int rocks_purge(syncd_backend_t *b, const char *coll, int64_t before_ms,
                       size_t *purged, syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    json_t *all = NULL;
    size_t i, n = 0;
    json_t *e;
    int rc;

    rc = rocks_list(b, &all, coll, NULL, NULL, 0, 1, err);
    json_array_foreach (all, i, e) {
        json_int_t mt = json_integer_value(json_object_get(e, "mt"));
        int removed = 0;

        if (rc != 0)
            break;
        if (!json_is_true(json_object_get(e, "del")) || mt >= before_ms)
            continue;
        rc = purge_one(r, coll, json_string_value(json_object_get(e, "id")),
                       before_ms, &removed, err);
        n += (size_t)removed;
    }
    json_decref(all);
    if (purged != NULL)
        *purged = n;
    return rc;
}

static int rocks_outbox_ack(syncd_backend_t *b, const char *coll,
                            const char *id, int64_t version, syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    syncd_doc_t *cur = NULL, *copy = NULL;
    size_t vlen = 0;
    stripe_t *s;
    syncd_reckey_t k;
    int rc;

    rc = lock_key(r, &k, &s, coll, id, err);
    if (rc != 0)
        return rc;
    rc = load(r, s, &k, coll, id, &cur, 0, err);
    if (rc == SYNCD_ENOTFOUND) {
        rc = 0;
        goto unlock;
    }
    if (rc != 0 || cur->version != version || cur->outbox == NULL)
        goto unlock;
    copy = syncd_doc_dup(cur);
    if (copy == NULL) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto unlock;
    }
    json_decref(copy->outbox);
    copy->outbox = NULL;
    rc = commit(r, &k, copy, NULL, 0, 0, &vlen, r->write_nosync, err);
    if (rc != 0) {
        tier_drop(s, &k);
        syncd_doc_free(copy);
        goto unlock;
    }
    tier_put(s, &k, copy, vlen);
unlock:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* Appends {"id","v","ob"} of coll/id to arr when its record still has
 * markers (the index may name a record acked since it was read). */
static int outbox_entry(rocks_t *r, json_t *arr, const char *coll,
                        const char *id, syncd_error_t *err)
{
    syncd_doc_t *doc;
    stripe_t *s;
    syncd_reckey_t k;
    int rc = lock_key(r, &k, &s, coll, id, err);

    if (rc != 0)
        return rc;
    rc = load(r, s, &k, coll, id, &doc, 0, err);
    if (rc == SYNCD_ENOTFOUND)
        rc = 0;
    else if (rc == 0 && json_array_size(doc->outbox) > 0 &&
             json_array_append_new(arr, json_pack("{s:s, s:I, s:O}", "id", id,
                                                  "v", (json_int_t)doc->version,
                                                  "ob", doc->outbox)) != 0)
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int rocks_outbox_list(syncd_backend_t *b, json_t **out, const char *coll,
                             const char *after, size_t limit,
                             syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    size_t clen = strlen(coll);
    char start[1 + SYNCD_RECORD_KEY_MAX];
    rocksdb_iterator_t *it = NULL;
    json_t *arr = json_array();
    syncd_reckey_t k;
    int rc;

    *out = NULL;
    if (arr == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    rc = syncd_reckey_make(&k, coll, after != NULL ? after : "", err);
    if (rc != 0)
        goto done;
    outbox_key(start, &k);
    it = iter_at(r, start, 1 + k.len);
    for (; rocksdb_iter_valid(it) && json_array_size(arr) < limit;
         rocksdb_iter_next(it)) {
        size_t klen, ilen;
        const char *key = rocksdb_iter_key(it, &klen);
        char id[SYNCD_MAX_ID_BYTES + 1];

        if (klen <= 1 + clen || key[0] != OUTBOX_PREFIX ||
            memcmp(key + 1, coll, clen + 1) != 0)
            break;
        ilen = klen - 1 - clen - 1;
        if (ilen > SYNCD_MAX_ID_BYTES)
            continue;
        memcpy(id, key + 1 + clen + 1, ilen);
        id[ilen] = '\0';
        if (after != NULL && strcmp(id, after) <= 0)
            continue;
        rc = outbox_entry(r, arr, coll, id, err);
        if (rc != 0)
            goto done;
    }
    rc = iter_status(it, err);
done:
    if (it != NULL)
        rocksdb_iter_destroy(it);
    if (rc == 0)
        *out = arr;
    else
        json_decref(arr);
    return rc;
}

static void rocks_close(syncd_backend_t *b)
{
    rocks_t *r = (rocks_t *)b;

    if (r == NULL)
        return;
    for (int i = 0; i < r->nstripes_ready; i++) {
        syncd_lru_destroy(&r->stripes[i].tier, free_entry);
        pthread_mutex_destroy(&r->stripes[i].lock);
    }
    if (r->db != NULL)
        rocksdb_close(r->db);
    if (r->write != NULL)
        rocksdb_writeoptions_destroy(r->write);
    if (r->write_nosync != NULL)
        rocksdb_writeoptions_destroy(r->write_nosync);
    if (r->read != NULL)
        rocksdb_readoptions_destroy(r->read);
    if (r->options != NULL)
        rocksdb_options_destroy(r->options);
    free(r);
}

static const syncd_backend_ops_t rocks_ops = {
    .kind = "rocksdb",
    .get = rocks_get,
    .cas = rocks_cas,
    .list = rocks_list,
    .collections = rocks_collections,
    .purge = rocks_purge,
    .close = rocks_close,
    .outbox_ack = rocks_outbox_ack,
    .outbox_list = rocks_outbox_list,
    .cas_canonical = rocks_cas_canonical,
    .locked = rocks_locked,
    .tier_stats = rocks_tier_stats,
};

int syncd_backend_rocks_open(syncd_backend_t **out, const char *dir,
                             int sync_writes, syncd_error_t *err)
{
    rocks_t *r = calloc(1, sizeof(*r));
    pthread_mutexattr_t recursive;
    char *errptr = NULL;
    int rc = 0;

    *out = NULL;
    if (r == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    r->base.ops = &rocks_ops;
    pthread_mutexattr_init(&recursive);
    pthread_mutexattr_settype(&recursive, PTHREAD_MUTEX_RECURSIVE);
    for (; r->nstripes_ready < NSTRIPES; r->nstripes_ready++) {
        stripe_t *s = &r->stripes[r->nstripes_ready];

        if (syncd_lru_init(&s->tier) != 0) {
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
            goto done;
        }
        pthread_mutex_init(&s->lock, &recursive);
    }
    r->options = rocksdb_options_create();
    r->read = rocksdb_readoptions_create();
    r->write = rocksdb_writeoptions_create();
    rocksdb_options_set_create_if_missing(r->options, 1);
    rocksdb_writeoptions_set_sync(r->write, sync_writes ? 1 : 0);
    r->write_nosync = rocksdb_writeoptions_create();
    r->db = rocksdb_open(r->options, dir, &errptr);
    if (errptr != NULL)
        rc = rocks_error(err, errptr, "open");
done:
    pthread_mutexattr_destroy(&recursive);
    if (rc != 0) {
        rocks_close(&r->base);
        return rc;
    }
    *out = &r->base;
    return 0;
}
