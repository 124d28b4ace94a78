/* tier.c - the in-memory tier of decoded documents, shared by the RocksDB
 * store of record and the node cache.
 *
 * Both keep the most recently used documents decoded in front of RocksDB,
 * so that a read hands out the shared, reference-counted json_t body
 * without a read, a parse or a serialization. This is that tier, written
 * once: entries keyed like the records (see record.c), each holding the
 * decoded record, the time it was born (an entry older than ttl_ms is never
 * served), and, once a reader asked for it, its body serialized as compact
 * JSON, which GET then writes as it is instead of serializing per request.
 *
 * One eviction policy: the tier is bounded by bytes (each entry is charged
 * what its owner says its record takes, the serialized body and a fixed
 * overhead) and evicts least recently used entries. One lock design: the
 * tier is split into NSHARDS shards by key hash, each with its own LRU
 * table, its share of the bound and a mutex that is only ever held for
 * in-memory work (never across I/O, a serialization or a caller's
 * callback), so a lookup never waits for a disk. Callers may hold a lock
 * of their own around tier calls; the tier takes no other lock. One set of
 * statistics: hits, misses and evictions are atomics, and each shard
 * publishes its bytes and entries as atomics, so reading them takes no
 * lock at all.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define NSHARDS 16

/* One decoded record; the key bytes follow the struct. */
typedef struct tier_entry {
    syncd_lru_node_t node;
    syncd_doc_t *doc;
    char *text; /* doc's body as compact JSON, or NULL until asked for */
    size_t text_len;
    int64_t born_ms;
    char key[];
} tier_entry_t;

typedef struct shard {
    pthread_mutex_t lock;
    syncd_lru_t lru;
    uint64_t bytes, entries; /* atomic copies of lru's, for the stats */
} shard_t;

struct syncd_tier {
    uint64_t shard_max; /* each shard's share of the bound */
    int64_t ttl_ms;
    int64_t (*now_ms)(void *data);
    void *now_data;
    int count_evictions;
    uint64_t hits, misses, evictions; /* atomic */
    int nshards_ready;
    shard_t shards[NSHARDS];
};

static shard_t *shard_of(syncd_tier_t *t, const syncd_reckey_t *k)
{
    return &t->shards[(k->hash >> 44) % NSHARDS];
}

static void entry_free(syncd_lru_node_t *node)
{
    tier_entry_t *e = (tier_entry_t *)node;

    syncd_doc_free(e->doc);
    free(e->text);
    free(e);
}

/* Publishes the shard's size for the statistics and unlocks it. */
static void shard_unlock(shard_t *s)
{
    __atomic_store_n(&s->bytes, s->lru.bytes, __ATOMIC_RELAXED);
    __atomic_store_n(&s->entries, (uint64_t)s->lru.count, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&s->lock);
}

int syncd_tier_new(syncd_tier_t **out, uint64_t max_bytes, int64_t ttl_ms,
                   int64_t (*now_ms)(void *data), void *now_data,
                   int count_evictions)
{
    syncd_tier_t *t = calloc(1, sizeof(*t));

    *out = NULL;
    if (t == NULL)
        return SYNCD_ENOMEM;
    t->shard_max = max_bytes / NSHARDS;
    t->ttl_ms = ttl_ms;
    t->now_ms = now_ms;
    t->now_data = now_data;
    t->count_evictions = count_evictions;
    for (; t->nshards_ready < NSHARDS; t->nshards_ready++) {
        shard_t *s = &t->shards[t->nshards_ready];

        if (syncd_lru_init(&s->lru) != 0) {
            syncd_tier_free(t);
            return SYNCD_ENOMEM;
        }
        pthread_mutex_init(&s->lock, NULL);
    }
    *out = t;
    return 0;
}

void syncd_tier_free(syncd_tier_t *t)
{
    if (t == NULL)
        return;
    for (int i = 0; i < t->nshards_ready; i++) {
        syncd_lru_destroy(&t->shards[i].lru, entry_free);
        pthread_mutex_destroy(&t->shards[i].lock);
    }
    free(t);
}

void syncd_tier_count(syncd_tier_t *t, syncd_tier_counter_t which)
{
    uint64_t *c = which == SYNCD_TIER_HIT    ? &t->hits
                  : which == SYNCD_TIER_MISS ? &t->misses
                                             : &t->evictions;

    __atomic_add_fetch(c, 1, __ATOMIC_RELAXED);
}

/* Returns k's entry if it is younger than the TTL (an older one is
 * dropped), made the newest; NULL otherwise. With s locked. */
static tier_entry_t *find(syncd_tier_t *t, shard_t *s, const syncd_reckey_t *k)
{
    syncd_lru_node_t *node = syncd_lru_find(&s->lru, k->bytes, k->len, k->hash);
    tier_entry_t *e = (tier_entry_t *)node;

    if (e == NULL)
        return NULL;
    if (t->now_ms(t->now_data) - e->born_ms >= t->ttl_ms) {
        syncd_lru_remove(&s->lru, node);
        entry_free(node);
        return NULL;
    }
    syncd_lru_touch(&s->lru, node);
    return e;
}

/* Evicts the shard's least recently used entries down to its share of
 * the bound. With s locked. */
static void shrink(syncd_tier_t *t, shard_t *s)
{
    syncd_lru_node_t *old;

    while (s->lru.bytes > t->shard_max &&
           (old = syncd_lru_oldest(&s->lru)) != NULL) {
        syncd_lru_remove(&s->lru, old);
        entry_free(old);
        if (t->count_evictions)
            syncd_tier_count(t, SYNCD_TIER_EVICTION);
    }
}

int syncd_tier_get(syncd_tier_t *t, const syncd_reckey_t *k, syncd_doc_t **out)
{
    shard_t *s = shard_of(t, k);
    tier_entry_t *e;

    *out = NULL;
    pthread_mutex_lock(&s->lock);
    e = find(t, s, k);
    if (e != NULL)
        *out = syncd_doc_dup(e->doc);
    shard_unlock(s);
    if (e == NULL)
        return SYNCD_ENOTFOUND;
    return *out != NULL ? 0 : SYNCD_ENOMEM;
}

int syncd_tier_text(syncd_tier_t *t, const syncd_reckey_t *k, char **text,
                    size_t *len, int64_t *version, json_t **body)
{
    shard_t *s = shard_of(t, k);
    tier_entry_t *e;
    int rc = 1;

    *text = NULL;
    if (body != NULL)
        *body = NULL;
    pthread_mutex_lock(&s->lock);
    e = find(t, s, k);
    if (e != NULL && e->doc->deleted) {
        rc = SYNCD_ENOTFOUND;
    } else if (e != NULL && e->text != NULL) {
        *text = malloc(e->text_len + 1);
        if (*text != NULL) {
            memcpy(*text, e->text, e->text_len + 1);
            *len = e->text_len;
            *version = e->doc->version;
        }
        rc = *text != NULL ? 0 : SYNCD_ENOMEM;
    } else if (e != NULL && body != NULL) {
        *body = json_incref(e->doc->body);
        *version = e->doc->version;
    }
    shard_unlock(s);
    return rc;
}

void syncd_tier_put(syncd_tier_t *t, const syncd_reckey_t *k,
                    syncd_doc_t *doc_new, int64_t born_ms, size_t size,
                    int replace)
{
    shard_t *s = shard_of(t, k);
    syncd_lru_node_t *old;
    tier_entry_t *e = malloc(sizeof(*e) + k->len);

    if (e == NULL) {
        syncd_doc_free(doc_new);
        syncd_tier_drop(t, k);
        return;
    }
    syncd_reckey_node(&e->node, e->key, k,
                      size + k->len + SYNCD_TIER_ENTRY_OVERHEAD);
    e->doc = doc_new;
    e->text = NULL;
    e->text_len = 0;
    e->born_ms = born_ms;
    pthread_mutex_lock(&s->lock);
    old = syncd_lru_find(&s->lru, k->bytes, k->len, k->hash);
    if (old != NULL && !replace) {
        shard_unlock(s);
        entry_free(&e->node);
        return;
    }
    if (old != NULL) {
        syncd_lru_remove(&s->lru, old);
        entry_free(old);
    }
    syncd_lru_insert(&s->lru, &e->node);
    shrink(t, s);
    shard_unlock(s);
}

void syncd_tier_set_text(syncd_tier_t *t, const syncd_reckey_t *k,
                         const json_t *body, char *text_new, size_t len)
{
    shard_t *s = shard_of(t, k);
    syncd_lru_node_t *node;
    tier_entry_t *e;

    pthread_mutex_lock(&s->lock);
    node = syncd_lru_find(&s->lru, k->bytes, k->len, k->hash);
    e = (tier_entry_t *)node;
    if (e != NULL && e->text == NULL && e->doc->body == body) {
        /* The charge changes: unlink and relink it as the newest. */
        syncd_lru_remove(&s->lru, node);
        e->text = text_new;
        e->text_len = len;
        node->size += len;
        text_new = NULL;
        syncd_lru_insert(&s->lru, node);
        shrink(t, s);
    }
    shard_unlock(s);
    free(text_new);
}

void syncd_tier_drop(syncd_tier_t *t, const syncd_reckey_t *k)
{
    shard_t *s = shard_of(t, k);
    syncd_lru_node_t *node;

    pthread_mutex_lock(&s->lock);
    node = syncd_lru_find(&s->lru, k->bytes, k->len, k->hash);
    if (node != NULL) {
        syncd_lru_remove(&s->lru, node);
        entry_free(node);
    }
    shard_unlock(s);
}

uint64_t syncd_tier_bytes(syncd_tier_t *t)
{
    uint64_t bytes = 0;

    for (int i = 0; i < NSHARDS; i++)
        bytes += __atomic_load_n(&t->shards[i].bytes, __ATOMIC_RELAXED);
    return bytes;
}

void syncd_tier_stats(syncd_tier_t *t, syncd_store_stats_t *out)
{
    out->cache_hits += __atomic_load_n(&t->hits, __ATOMIC_RELAXED);
    out->cache_misses += __atomic_load_n(&t->misses, __ATOMIC_RELAXED);
    out->cache_evictions += __atomic_load_n(&t->evictions, __ATOMIC_RELAXED);
    for (int i = 0; i < NSHARDS; i++) {
        out->cache_bytes +=
            __atomic_load_n(&t->shards[i].bytes, __ATOMIC_RELAXED);
        out->cache_entries +=
            __atomic_load_n(&t->shards[i].entries, __ATOMIC_RELAXED);
    }
}
