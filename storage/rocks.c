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
 * Compare-and-swap is made atomic by per-document write locks: a writer
 * holds its key's lock from the version check to the commit. Key locks are
 * re-entrant and live in a small table, created on first use and freed by
 * their last user, so writers of different documents never wait for one
 * another, and the store's edit loop can hold a key's lock across its
 * read, edit and compare-and-swap (the backend's `locked` operation):
 * within one process, the only place this store is ever written from,
 * writers of a key queue instead of conflicting.
 *
 * Readers never take a write lock. In front of RocksDB, an in-memory tier
 * holds decoded, reference-counted documents (the json_t body is shared
 * with the callers), bounded to tier_max_bytes by evicting the least
 * recently used entries, each served for at most tier_ttl_ms after it was
 * loaded. The tier and the key-lock table are split into NSTRIPES stripes,
 * each guarded by a mutex that is only ever held for in-memory work, never
 * across I/O or a caller's callback. A writer updates its key's tier entry
 * after the commit; a reader that misses reads RocksDB without any lock and
 * puts what it read in the tier only when no commit of its stripe began or
 * ended meanwhile (the stripe's commit generation and count of commits in
 * progress tell), so a stale read never enters the tier after a newer
 * write. Statistics are atomics, refreshed whenever a stripe changes, so
 * reading them takes no lock at all.
 */
#include <pthread.h>
#include <rocksdb/c.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define NSTRIPES 64
#define REGISTRY_PREFIX '\x01'
#define OUTBOX_PREFIX '\x02'

/* A decoded record in the in-memory tier; key bytes follow the struct. */
typedef struct tier_entry {
    syncd_lru_node_t node;
    syncd_doc_t *doc;
    int64_t loaded_ms; /* when it entered the tier */
    char key[];
} tier_entry_t;

/* The write lock of one key, shared by its writers; key bytes follow. */
typedef struct key_lock {
    syncd_lru_node_t node;
    pthread_mutex_t lock; /* recursive */
    size_t users;         /* holders and waiters, under the stripe mutex */
    char key[];
} key_lock_t;

typedef struct stripe {
    pthread_mutex_t lock; /* in-memory work only: tier, key locks, gen */
    syncd_lru_t tier;
    syncd_lru_t locks;
    uint64_t gen; /* bumped when a commit of the stripe begins and ends */
    int writing;  /* commits of the stripe in progress */
    /* Statistics, atomic: read without the lock. */
    uint64_t hits, misses, evictions, bytes, entries;
} stripe_t;

typedef struct rocks {
    syncd_backend_t base;
    rocksdb_t *db;
    rocksdb_options_t *options;
    rocksdb_readoptions_t *read;
    rocksdb_writeoptions_t *write;
    int64_t tier_ttl_ms;
    uint64_t tier_max_bytes;
    int64_t (*now_ms)(void *data);
    void *now_data;
    rocksdb_writeoptions_t *write_nosync; /* outbox acks */
    int nstripes_ready;
    stripe_t stripes[NSTRIPES];
} rocks_t;

static int64_t monotonic_ms(void *data)
{
    struct timespec ts;

    (void)data;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int rocks_error(syncd_error_t *err, char *errptr, const char *what)
{
    int rc = syncd_error_set_backend(err, SYNCD_EBACKEND, "rocksdb", 0,
                                     "rocksdb %s: %s", what, errptr);

    rocksdb_free(errptr);
    return rc;
}

static void count(uint64_t *counter)
{
    __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
}

static stripe_t *stripe_of(rocks_t *r, const syncd_reckey_t *k)
{
    return &r->stripes[(k->hash >> 40) % NSTRIPES];
}

/* Publishes the stripe's tier size for the statistics and unlocks it. */
static void stripe_unlock(stripe_t *s)
{
    __atomic_store_n(&s->bytes, s->tier.bytes, __ATOMIC_RELAXED);
    __atomic_store_n(&s->entries, (uint64_t)s->tier.count, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&s->lock);
}

/* ---- Key write locks ----------------------------------------------------- */

/* Takes k's write lock (re-entrant), returned in *out for key_unlock(). */
static int key_lock(stripe_t *s, const syncd_reckey_t *k, key_lock_t **out,
                    syncd_error_t *err)
{
    pthread_mutexattr_t recursive;
    syncd_lru_node_t *node;
    key_lock_t *kl;

    pthread_mutex_lock(&s->lock);
    node = syncd_lru_find(&s->locks, k->bytes, k->len, k->hash);
    kl = (key_lock_t *)node;
    if (kl == NULL) {
        kl = malloc(sizeof(*kl) + k->len);
        if (kl == NULL) {
            pthread_mutex_unlock(&s->lock);
            return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        }
        pthread_mutexattr_init(&recursive);
        pthread_mutexattr_settype(&recursive, PTHREAD_MUTEX_RECURSIVE);
        pthread_mutex_init(&kl->lock, &recursive);
        pthread_mutexattr_destroy(&recursive);
        kl->users = 0;
        syncd_reckey_node(&kl->node, kl->key, k, 0);
        syncd_lru_insert(&s->locks, &kl->node);
    }
    kl->users++;
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_lock(&kl->lock);
    *out = kl;
    return 0;
}

/* Releases a key_lock(); the last user frees the lock. */
static void key_unlock(stripe_t *s, key_lock_t *kl)
{
    pthread_mutex_unlock(&kl->lock);
    pthread_mutex_lock(&s->lock);
    if (--kl->users == 0) {
        syncd_lru_remove(&s->locks, &kl->node);
        pthread_mutex_destroy(&kl->lock);
        free(kl);
    }
    pthread_mutex_unlock(&s->lock);
}

/* ---- The in-memory tier (stripe mutex held) ------------------------------ */

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
 * of tier_max_bytes. Out of memory leaves no entry for the key. */
static void tier_put(rocks_t *r, stripe_t *s, const syncd_reckey_t *k,
                     syncd_doc_t *doc, size_t size)
{
    tier_entry_t *e;

    tier_drop(s, k);
    e = malloc(sizeof(*e) + k->len);
    if (e == NULL) {
        syncd_doc_free(doc);
        return;
    }
    syncd_reckey_node(&e->node, e->key, k,
                      size + k->len + SYNCD_TIER_ENTRY_OVERHEAD);
    e->doc = doc;
    e->loaded_ms = r->now_ms(r->now_data);
    syncd_lru_insert(&s->tier, &e->node);
    while (s->tier.bytes > r->tier_max_bytes / NSTRIPES && s->tier.count > 0) {
        syncd_lru_node_t *old = syncd_lru_oldest(&s->tier);

        syncd_lru_remove(&s->tier, old);
        free_entry(old);
        count(&s->evictions);
    }
}

/* Returns k's tier entry if it is younger than tier_ttl_ms (an older one
 * is dropped), made the newest; NULL otherwise. */
static tier_entry_t *tier_find(rocks_t *r, stripe_t *s, const syncd_reckey_t *k)
{
    syncd_lru_node_t *node =
        syncd_lru_find(&s->tier, k->bytes, k->len, k->hash);
    tier_entry_t *e = (tier_entry_t *)node;

    if (e == NULL)
        return NULL;
    if (r->now_ms(r->now_data) - e->loaded_ms >= r->tier_ttl_ms) {
        syncd_lru_remove(&s->tier, node);
        free_entry(node);
        return NULL;
    }
    syncd_lru_touch(&s->tier, node);
    return e;
}

/* ---- Reads and writes ---------------------------------------------------- */

/* Reads the record of coll/id into *out (a copy, the body shared with the
 * tier; caller frees), from the tier or else from RocksDB, then keeping it
 * in the tier when no commit of the stripe overlapped the read. A read
 * (is_read set, as opposed to a writer's version check) counts a tier hit
 * or miss. SYNCD_ENOTFOUND when there is no record. */
static int read_doc(rocks_t *r, stripe_t *s, const syncd_reckey_t *k,
                    const char *coll, const char *id, syncd_doc_t **out,
                    int is_read, syncd_error_t *err)
{
    syncd_doc_t *loaded = NULL;
    char *errptr = NULL;
    tier_entry_t *e;
    size_t vlen = 0;
    uint64_t gen;
    char *val;
    int rc;

    *out = NULL;
    pthread_mutex_lock(&s->lock);
    e = tier_find(r, s, k);
    if (e != NULL)
        *out = syncd_doc_dup(e->doc);
    gen = s->gen;
    stripe_unlock(s);
    if (e != NULL) {
        if (is_read)
            count(&s->hits);
        return *out != NULL
                   ? 0
                   : syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }
    if (is_read)
        count(&s->misses);
    val = rocksdb_get(r->db, r->read, k->bytes, k->len, &vlen, &errptr);
    if (errptr != NULL)
        return rocks_error(err, errptr, "get");
    if (val == NULL)
        return SYNCD_ENOTFOUND;
    rc = syncd_record_decode(&loaded, coll, id, val, vlen, 1, err);
    rocksdb_free(val);
    if (rc != 0)
        return rc;
    *out = syncd_doc_dup(loaded);
    if (*out == NULL) {
        syncd_doc_free(loaded);
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }
    pthread_mutex_lock(&s->lock);
    if (s->gen == gen && s->writing == 0 &&
        syncd_lru_find(&s->tier, k->bytes, k->len, k->hash) == NULL) {
        tier_put(r, s, k, loaded, vlen);
        loaded = NULL;
    }
    stripe_unlock(s);
    syncd_doc_free(loaded);
    return 0;
}

static int rocks_get(syncd_backend_t *b, syncd_doc_t **out, const char *coll,
                     const char *id, syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    syncd_reckey_t k;
    int rc;

    *out = NULL;
    rc = syncd_reckey_make(&k, coll, id, err);
    if (rc != 0)
        return rc;
    rc = read_doc(r, stripe_of(r, &k), &k, coll, id, out, 1, err);
    if (rc == SYNCD_ENOTFOUND)
        syncd_error_set(err, rc, "%s/%s not found", coll, id);
    return rc;
}

/* Marks a commit of s as begun: readers that overlap it keep what they
 * read out of the tier. */
static void write_begin(stripe_t *s)
{
    pthread_mutex_lock(&s->lock);
    s->writing++;
    s->gen++;
    pthread_mutex_unlock(&s->lock);
}

/* Ends a commit of s: k's tier entry becomes doc (ownership taken;
 * NULL: dropped), charged size bytes. */
static void write_end(rocks_t *r, stripe_t *s, const syncd_reckey_t *k,
                      syncd_doc_t *doc, size_t size)
{
    pthread_mutex_lock(&s->lock);
    if (doc != NULL)
        tier_put(r, s, k, doc, size);
    else
        tier_drop(s, k);
    s->writing--;
    s->gen++;
    stripe_unlock(s);
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

/* A key held for writing: its write lock taken and its current record
 * read. */
typedef struct held {
    syncd_reckey_t k;
    stripe_t *s;
    key_lock_t *kl;
    syncd_doc_t *cur; /* the current record; NULL when there is none */
} held_t;

/* Takes coll/id's write lock and reads its record into h->cur (NULL when
 * there is none); on failure nothing is held. Released by release(). */
static int hold(rocks_t *r, held_t *h, const char *coll, const char *id,
                syncd_error_t *err)
{
    int rc;

    h->cur = NULL;
    rc = syncd_reckey_make(&h->k, coll, id, err);
    if (rc != 0)
        return rc;
    h->s = stripe_of(r, &h->k);
    rc = key_lock(h->s, &h->k, &h->kl, err);
    if (rc != 0)
        return rc;
    rc = read_doc(r, h->s, &h->k, coll, id, &h->cur, 0, err);
    if (rc == SYNCD_ENOTFOUND)
        return 0;
    if (rc != 0)
        key_unlock(h->s, h->kl);
    return rc;
}

/* Releases a hold(): unlocks the key and frees the record read. */
static void release(held_t *h)
{
    key_unlock(h->s, h->kl);
    syncd_doc_free(h->cur);
}

static int rocks_cas_canonical(syncd_backend_t *b, const syncd_doc_t *doc,
                               const char *canon, size_t canon_len,
                               int64_t expected, syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    syncd_doc_t *copy = NULL;
    size_t vlen = 0;
    held_t h;
    int rc;

    rc = hold(r, &h, doc->coll, doc->id, err);
    if (rc != 0)
        return rc;
    if ((h.cur != NULL ? h.cur->version : 0) != expected) {
        rc = syncd_error_set(err, SYNCD_ECONFLICT,
                             "%s/%s is at version %lld, not %lld", doc->coll,
                             doc->id, (long long)(h.cur ? h.cur->version : 0),
                             (long long)expected);
        goto unlock;
    }
    copy = syncd_doc_dup(doc);
    if (copy == NULL) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto unlock;
    }
    write_begin(h.s);
    rc = commit(r, &h.k, doc, canon, canon_len, h.cur == NULL, &vlen, r->write,
                err);
    if (rc != 0) {
        syncd_doc_free(copy);
        copy = NULL;
    }
    write_end(r, h.s, &h.k, copy, vlen);
unlock:
    release(&h);
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
    rocks_t *r = (rocks_t *)b;
    key_lock_t *kl = NULL;
    syncd_reckey_t k;
    stripe_t *s;
    int rc;

    rc = syncd_reckey_make(&k, coll, id, err);
    if (rc != 0)
        return rc;
    s = stripe_of(r, &k);
    rc = key_lock(s, &k, &kl, err);
    if (rc != 0)
        return rc;
    rc = fn(arg, err);
    key_unlock(s, kl);
    return rc;
}

/* Sums the stripes' statistics; takes no lock, so it never waits for a
 * reader or a writer. */
static void rocks_tier_stats(syncd_backend_t *b, syncd_store_stats_t *out)
{
    rocks_t *r = (rocks_t *)b;

    for (int i = 0; i < NSTRIPES; i++) {
        stripe_t *s = &r->stripes[i];

        out->cache_hits += __atomic_load_n(&s->hits, __ATOMIC_RELAXED);
        out->cache_misses += __atomic_load_n(&s->misses, __ATOMIC_RELAXED);
        out->cache_evictions +=
            __atomic_load_n(&s->evictions, __ATOMIC_RELAXED);
        out->cache_bytes += __atomic_load_n(&s->bytes, __ATOMIC_RELAXED);
        out->cache_entries += __atomic_load_n(&s->entries, __ATOMIC_RELAXED);
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

/* Appends one export entry for the live doc (header and body) to arr. */
static int append_body(json_t *arr, const syncd_doc_t *doc)
{
    json_t *e =
        json_pack("{s:s, s:I, s:s, s:O}", "id", doc->id, "v",
                  (json_int_t)doc->version, "h", doc->hash, "data", doc->body);

    if (e == NULL)
        return SYNCD_ENOMEM;
    return json_array_append_new(arr, e) == 0 ? 0 : SYNCD_ENOMEM;
}

/* Scans coll's records in id order into a new array *out, as rocks_list
 * says; with_bodies lists live documents only, with their bodies, read
 * from RocksDB itself (the in-memory tier is neither read nor filled). */
static int scan(rocks_t *r, json_t **out, const char *coll, const char *prefix,
                const char *after, size_t limit, int with_tombstones,
                int with_bodies, syncd_error_t *err)
{
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
        rc = syncd_record_decode(&doc, coll, id, val, vlen, with_bodies, err);
        if (rc != 0)
            goto done;
        if (with_bodies && !doc->deleted)
            rc = append_body(arr, doc);
        else if (!with_bodies && (!doc->deleted || with_tombstones))
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

static int rocks_list(syncd_backend_t *b, json_t **out, const char *coll,
                      const char *prefix, const char *after, size_t limit,
                      int with_tombstones, syncd_error_t *err)
{
    return scan((rocks_t *)b, out, coll, prefix, after, limit, with_tombstones,
                0, err);
}

static int rocks_export_page(syncd_backend_t *b, json_t **out, const char *coll,
                             const char *after, size_t limit,
                             syncd_error_t *err)
{
    return scan((rocks_t *)b, out, coll, NULL, after, limit, 0, 1, err);
}

static int rocks_checkpoint(syncd_backend_t *b, const char *dir,
                            syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    rocksdb_checkpoint_t *cp;
    char *errptr = NULL;

    cp = rocksdb_checkpoint_object_create(r->db, &errptr);
    if (errptr != NULL)
        return rocks_error(err, errptr, "checkpoint");
    rocksdb_checkpoint_create(cp, dir, 0, &errptr);
    rocksdb_checkpoint_object_destroy(cp);
    if (errptr != NULL)
        return rocks_error(err, errptr, "checkpoint");
    return 0;
}

static int rocks_versions(syncd_backend_t *b, json_t **out, const char *coll,
                          const json_t *ids, syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    json_t *map = json_object(), *id;
    size_t i;
    int rc = 0;

    *out = NULL;
    if (map == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    json_array_foreach (ids, i, id) {
        const char *key = json_string_value(id);
        syncd_doc_t *doc = NULL;
        syncd_reckey_t k;

        rc = syncd_reckey_make(&k, coll, key, err);
        if (rc != 0)
            break;
        rc = read_doc(r, stripe_of(r, &k), &k, coll, key, &doc, 0, err);
        if (rc == 0 &&
            json_object_set_new(map, key,
                                json_pack("{s:I, s:s, s:b}", "v",
                                          (json_int_t)doc->version, "h",
                                          doc->hash, "del", doc->deleted)) != 0)
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        syncd_doc_free(doc);
        if (rc == SYNCD_ENOTFOUND)
            rc = 0;
        if (rc != 0)
            break;
    }
    if (rc != 0) {
        json_decref(map);
        return rc;
    }
    *out = map;
    return 0;
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
    char *errptr = NULL;
    held_t h;
    int rc;

    *removed = 0;
    rc = hold(r, &h, coll, id, err);
    if (rc != 0)
        return rc;
    if (h.cur != NULL && h.cur->deleted && h.cur->mtime_ms < before_ms &&
        json_array_size(h.cur->outbox) == 0) {
        write_begin(h.s);
        rocksdb_delete(r->db, r->write, h.k.bytes, h.k.len, &errptr);
        write_end(r, h.s, &h.k, NULL, 0);
        if (errptr != NULL)
            rc = rocks_error(err, errptr, "delete");
        else
            *removed = 1;
    }
    release(&h);
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

/* The key-lock table is empty once no call is in flight. */
static void free_key_lock(syncd_lru_node_t *node)
{
    key_lock_t *kl = (key_lock_t *)node;

    pthread_mutex_destroy(&kl->lock);
    free(kl);
}

static int rocks_outbox_ack(syncd_backend_t *b, const char *coll,
                            const char *id, int64_t version, syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    syncd_doc_t *copy = NULL;
    json_t *left = NULL;
    size_t vlen = 0;
    held_t h;
    int rc;

    rc = hold(r, &h, coll, id, err);
    if (rc != 0)
        return rc;
    if (h.cur == NULL)
        goto unlock;
    rc = syncd_outbox_after(&left, h.cur->outbox, version);
    if (rc < 0)
        rc = syncd_error_set(err, rc, "out of memory");
    if (rc <= 0)
        goto unlock;
    copy = syncd_doc_dup(h.cur);
    if (copy == NULL) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto unlock;
    }
    json_decref(copy->outbox);
    copy->outbox = left;
    left = NULL;
    write_begin(h.s);
    rc = commit(r, &h.k, copy, NULL, 0, 0, &vlen, r->write_nosync, err);
    if (rc != 0) {
        syncd_doc_free(copy);
        copy = NULL;
    }
    write_end(r, h.s, &h.k, copy, vlen);
unlock:
    json_decref(left);
    release(&h);
    return rc;
}

/* Appends {"id","v","ob"} of coll/id to arr when its record still has
 * markers (the index may name a record acked since it was read). */
static int outbox_entry(rocks_t *r, json_t *arr, const char *coll,
                        const char *id, syncd_error_t *err)
{
    syncd_doc_t *doc = NULL;
    syncd_reckey_t k;
    int rc = syncd_reckey_make(&k, coll, id, err);

    if (rc != 0)
        return rc;
    rc = read_doc(r, stripe_of(r, &k), &k, coll, id, &doc, 0, err);
    if (rc == SYNCD_ENOTFOUND)
        rc = 0;
    else if (rc == 0 && json_array_size(doc->outbox) > 0 &&
             json_array_append_new(arr, json_pack("{s:s, s:I, s:O}", "id", id,
                                                  "v", (json_int_t)doc->version,
                                                  "ob", doc->outbox)) != 0)
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    syncd_doc_free(doc);
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
        syncd_lru_destroy(&r->stripes[i].locks, free_key_lock);
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
    .versions = rocks_versions,
    .outbox_ack = rocks_outbox_ack,
    .outbox_list = rocks_outbox_list,
    .cas_canonical = rocks_cas_canonical,
    .locked = rocks_locked,
    .tier_stats = rocks_tier_stats,
    .export_page = rocks_export_page,
    .checkpoint = rocks_checkpoint,
};

int syncd_backend_rocks_open(syncd_backend_t **out, const char *dir,
                             int sync_writes, int64_t tier_ttl_ms,
                             uint64_t tier_max_bytes,
                             const syncd_store_hooks_t *hooks,
                             syncd_error_t *err)
{
    rocks_t *r = calloc(1, sizeof(*r));
    char *errptr = NULL;
    int rc = 0;

    *out = NULL;
    if (r == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    r->base.ops = &rocks_ops;
    r->tier_ttl_ms = tier_ttl_ms;
    r->tier_max_bytes = tier_max_bytes;
    r->now_ms =
        hooks != NULL && hooks->now_ms != NULL ? hooks->now_ms : monotonic_ms;
    r->now_data = hooks != NULL ? hooks->data : NULL;
    for (; r->nstripes_ready < NSTRIPES; r->nstripes_ready++) {
        stripe_t *s = &r->stripes[r->nstripes_ready];

        if (syncd_lru_init(&s->tier) != 0) {
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
            goto done;
        }
        if (syncd_lru_init(&s->locks) != 0) {
            syncd_lru_destroy(&s->tier, free_entry);
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
            goto done;
        }
        pthread_mutex_init(&s->lock, NULL);
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
    if (rc != 0) {
        rocks_close(&r->base);
        return rc;
    }
    *out = &r->base;
    return 0;
}
