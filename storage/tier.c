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
 * what its owner says its record takes, the serialized body, its hash tree
 * and a fixed overhead) and evicts least recently used entries of the shard
 * it writes until the whole tier fits. One lock design: the tier is split
 * into NSHARDS shards by key hash, each with its own LRU table and a mutex
 * that is only ever held for
 * in-memory work (never across I/O, a serialization or a caller's
 * callback), so a lookup never waits for a disk. Callers may hold a lock
 * of their own around tier calls; the tier takes no other lock. One set of
 * statistics: hits, misses and evictions are atomics, and each shard
 * publishes its bytes and entries as atomics, so reading them takes no
 * lock at all.
 *
 * A body is shared with its readers and never changes while one holds it.
 * An applier patches it in place by taking it out (syncd_tier_take()):
 * only a body that no reader holds (its reference count is the entry's
 * own, checked under the shard's mutex, under which every reader takes its
 * reference) can be taken, and until it is given back
 * (syncd_tier_give_back()) a reader that needs the decoded body waits on
 * the shard's condition variable, while one that wants the serialized text
 * still gets the text of the version before. So no reader ever sees a body
 * half-applied. Beside the body an entry may keep the document's hash tree
 * (syncd_htree_t), built on request and charged to the entry, so that the
 * applier rehashes only what a patch touched; a writer of the RocksDB
 * store takes it out (syncd_tier_take_tree()), updates it for its change
 * and leaves it with the new version (syncd_tier_keep_tree(), or with the
 * entry that version gets), and an outbox ack, which changes the
 * markers of the same version only (syncd_tier_set_outbox()), keeps it. An
 * entry given back changed stays pinned (never evicted or expired) until its
 * owner has made its new record (syncd_tier_unpin()).
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
    char *text; /* doc's body as canonical JSON, or NULL until asked for */
    size_t text_len;
    syncd_htree_t *tree; /* the body's hash tree, or NULL */
    size_t tree_bytes;   /* tree's charge */
    int taken;           /* the body is out with an applier */
    int pinned;          /* changed and not yet recorded by its owner */
    int64_t born_ms;
    char key[];
} tier_entry_t;

typedef struct shard {
    pthread_mutex_t lock;
    pthread_cond_t given; /* a taken body was given back */
    syncd_lru_t lru;
    uint64_t bytes, entries; /* atomic copies of lru's, for the stats */
} shard_t;

struct syncd_tier {
    uint64_t max_bytes; /* the bound */
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
    syncd_htree_free(e->tree);
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
    t->max_bytes = max_bytes;
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
        pthread_cond_init(&s->given, NULL);
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
        pthread_cond_destroy(&t->shards[i].given);
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

/* Whether e must stay: its body is out or its new record not yet made. */
static int held(const tier_entry_t *e)
{
    return e->taken || e->pinned;
}

/* Returns k's entry if it is younger than the TTL (an older one is
 * dropped unless held), made the newest; NULL otherwise. With s locked. */
static tier_entry_t *find(syncd_tier_t *t, shard_t *s, const syncd_reckey_t *k)
{
    syncd_lru_node_t *node = syncd_lru_find(&s->lru, k->bytes, k->len, k->hash);
    tier_entry_t *e = (tier_entry_t *)node;

    if (e == NULL)
        return NULL;
    if (!held(e) && t->now_ms(t->now_data) - e->born_ms >= t->ttl_ms) {
        syncd_lru_remove(&s->lru, node);
        entry_free(node);
        return NULL;
    }
    syncd_lru_touch(&s->lru, node);
    return e;
}

/* Returns k's entry once its body is not taken (waiting for it to be
 * given back), as find() does. With s locked. */
static tier_entry_t *find_given(syncd_tier_t *t, shard_t *s,
                                const syncd_reckey_t *k)
{
    tier_entry_t *e;

    while ((e = find(t, s, k)) != NULL && e->taken)
        pthread_cond_wait(&s->given, &s->lock);
    return e;
}

/* Returns the node of k's entry, whatever its age, once its body is not
 * taken; NULL when there is none. With s locked. */
static syncd_lru_node_t *lookup_given(shard_t *s, const syncd_reckey_t *k)
{
    syncd_lru_node_t *node;

    while ((node = syncd_lru_find(&s->lru, k->bytes, k->len, k->hash)) !=
               NULL &&
           ((tier_entry_t *)node)->taken)
        pthread_cond_wait(&s->given, &s->lock);
    return node;
}

/* Returns the bytes of the whole tier: s's own (locked) and the others'
 * published sizes. */
static uint64_t total_bytes(syncd_tier_t *t, const shard_t *s)
{
    uint64_t bytes = s->lru.bytes;

    for (int i = 0; i < NSHARDS; i++) {
        if (&t->shards[i] != s)
            bytes += __atomic_load_n(&t->shards[i].bytes, __ATOMIC_RELAXED);
    }
    return bytes;
}

/* Evicts the shard's least recently used entries until the whole tier is
 * within the bound (so one document may take more than a shard's share:
 * a large body with its hash tree); held entries are passed over (made the
 * newest), so the tier may stay above the bound while they are. With s
 * locked. */
static void shrink(syncd_tier_t *t, shard_t *s)
{
    syncd_lru_node_t *old;
    size_t passed = 0;

    while (total_bytes(t, s) > t->max_bytes && passed < s->lru.count &&
           (old = syncd_lru_oldest(&s->lru)) != NULL) {
        if (held((tier_entry_t *)old)) {
            syncd_lru_touch(&s->lru, old);
            passed++;
            continue;
        }
        syncd_lru_remove(&s->lru, old);
        entry_free(old);
        if (t->count_evictions)
            syncd_tier_count(t, SYNCD_TIER_EVICTION);
    }
}

/* Whether a and b are the same live version of a record (version and
 * hash). */
static int same_version(const syncd_doc_t *a, const syncd_doc_t *b)
{
    return !a->deleted && !b->deleted && a->version == b->version &&
           strcmp(a->hash, b->hash) == 0;
}

/* Whether tree is the hash tree of a body whose content hash is hash. */
static int tree_of(const syncd_htree_t *tree, const char *hash)
{
    char root[SYNCD_HASH_HEX_LEN + 1];

    syncd_htree_root(tree, root);
    return strcmp(root, hash) == 0;
}

/* Sets e's tree (NULL: none) charged bytes, made the newest, and evicts
 * down to the bound. With s locked. */
static void set_tree(syncd_tier_t *t, shard_t *s, tier_entry_t *e,
                     syncd_htree_t *tree, size_t bytes)
{
    syncd_lru_remove(&s->lru, &e->node);
    e->node.size -= e->tree_bytes;
    e->tree = tree;
    e->tree_bytes = tree != NULL ? bytes : 0;
    e->node.size += e->tree_bytes;
    syncd_lru_insert(&s->lru, &e->node);
    shrink(t, s);
}

int syncd_tier_get(syncd_tier_t *t, const syncd_reckey_t *k, syncd_doc_t **out)
{
    shard_t *s = shard_of(t, k);
    tier_entry_t *e;

    *out = NULL;
    pthread_mutex_lock(&s->lock);
    e = find_given(t, s, k);
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
        /* No text: the body is serialized from, once given back. */
        if (e->taken)
            e = find_given(t, s, k);
        if (e != NULL && e->doc->deleted) {
            rc = SYNCD_ENOTFOUND;
        } else if (e != NULL) {
            *body = json_incref(e->doc->body);
            *version = e->doc->version;
        }
    }
    shard_unlock(s);
    return rc;
}

void syncd_tier_put(syncd_tier_t *t, const syncd_reckey_t *k,
                    syncd_doc_t *doc_new, int64_t born_ms, size_t size,
                    int replace, syncd_htree_t *tree, size_t tree_bytes,
                    syncd_doc_t **replaced)
{
    shard_t *s = shard_of(t, k);
    syncd_lru_node_t *old;
    tier_entry_t *e = malloc(sizeof(*e) + k->len), *o;

    if (replaced != NULL)
        *replaced = NULL;
    if (e == NULL) {
        syncd_doc_free(doc_new);
        syncd_htree_free(tree);
        syncd_tier_drop(t, k);
        return;
    }
    e->tree = tree;
    e->tree_bytes = tree != NULL ? tree_bytes : 0;
    syncd_reckey_node(&e->node, e->key, k,
                      size + k->len + SYNCD_TIER_ENTRY_OVERHEAD +
                          e->tree_bytes);
    e->doc = doc_new;
    e->text = NULL;
    e->text_len = 0;
    e->taken = 0;
    e->pinned = 0;
    e->born_ms = born_ms;
    pthread_mutex_lock(&s->lock);
    old = lookup_given(s, k);
    if (old != NULL && !replace) {
        shard_unlock(s);
        entry_free(&e->node);
        return;
    }
    o = (tier_entry_t *)old;
    if (o != NULL) {
        /* The same version's record again (an outbox ack): same body,
         * so the same tree. */
        if (e->tree == NULL && o->tree != NULL &&
            same_version(o->doc, doc_new)) {
            e->tree = o->tree;
            e->tree_bytes = o->tree_bytes;
            e->node.size += o->tree_bytes;
            o->tree = NULL;
        }
        syncd_lru_remove(&s->lru, old);
    }
    syncd_lru_insert(&s->lru, &e->node);
    shrink(t, s);
    shard_unlock(s);
    /* Freed with no lock held: a large body takes a while. */
    if (o != NULL && replaced != NULL) {
        *replaced = o->doc;
        o->doc = NULL;
    }
    if (o != NULL)
        entry_free(old);
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
    if (e != NULL && !e->taken && e->text == NULL && e->doc->body == body) {
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

/* Charges e size bytes (plus its key, the fixed overhead, its text and its
 * tree), made the newest, and evicts down to the bound. With s locked. */
static void recharge(syncd_tier_t *t, shard_t *s, tier_entry_t *e, size_t size)
{
    syncd_lru_remove(&s->lru, &e->node);
    e->node.size = size + e->node.keylen + SYNCD_TIER_ENTRY_OVERHEAD +
                   e->text_len + e->tree_bytes;
    syncd_lru_insert(&s->lru, &e->node);
    shrink(t, s);
}

int syncd_tier_build_tree(syncd_tier_t *t, const syncd_reckey_t *k,
                          int64_t version, size_t size)
{
    shard_t *s = shard_of(t, k);
    syncd_htree_t *tree = NULL;
    json_t *body = NULL;
    tier_entry_t *e;
    size_t bytes = 0;
    int rc = SYNCD_ENOTFOUND;

    pthread_mutex_lock(&s->lock);
    e = find_given(t, s, k);
    if (e != NULL && !e->doc->deleted && e->doc->version == version) {
        rc = 0;
        if (e->tree == NULL)
            body = json_incref(e->doc->body);
    }
    shard_unlock(s);
    if (body == NULL)
        return rc;
    /* Built from a shared reference, with no lock held: readers go on, and
     * the body cannot be taken (and changed) while this reference is. */
    rc = syncd_htree_build(&tree, body, NULL);
    if (rc == 0)
        bytes = (size_t)syncd_htree_bytes(tree);
    pthread_mutex_lock(&s->lock);
    e = find(t, s, k);
    if (rc == 0 && e != NULL && e->doc->body == body && e->tree == NULL &&
        e->doc->version == version) {
        e->tree = tree;
        e->tree_bytes = bytes;
        tree = NULL;
        recharge(t, s, e, size);
    }
    shard_unlock(s);
    syncd_htree_free(tree);
    json_decref(body);
    return rc;
}

int syncd_tier_list_hashes(syncd_tier_t *t, const syncd_reckey_t *k,
                           const json_t *body, const char *path,
                           size_t path_len, size_t level, size_t from,
                           size_t count, json_t **out, syncd_error_t *err)
{
    shard_t *s = shard_of(t, k);
    tier_entry_t *e;
    int rc = 1;

    *out = NULL;
    pthread_mutex_lock(&s->lock);
    e = find(t, s, k);
    /* A taken body lent its tree out; a given-back one may be another
     * body, which the identity check tells. */
    if (e != NULL && !e->taken && e->tree != NULL && e->doc->body == body)
        rc = syncd_htree_list_tree(out, e->tree, path, path_len, level, from,
                                   count, err);
    shard_unlock(s);
    return rc;
}

int syncd_tier_take_tree(syncd_tier_t *t, const syncd_reckey_t *k,
                         int64_t version, const char *hash,
                         syncd_htree_t **tree, size_t *bytes)
{
    shard_t *s = shard_of(t, k);
    tier_entry_t *e;

    *tree = NULL;
    *bytes = 0;
    pthread_mutex_lock(&s->lock);
    e = find(t, s, k);
    if (e != NULL && !e->taken && e->tree != NULL && !e->doc->deleted &&
        e->doc->version == version && strcmp(e->doc->hash, hash) == 0 &&
        tree_of(e->tree, hash)) {
        *tree = e->tree;
        *bytes = e->tree_bytes;
        set_tree(t, s, e, NULL, 0);
    }
    shard_unlock(s);
    return *tree != NULL;
}

void syncd_tier_keep_tree(syncd_tier_t *t, const syncd_reckey_t *k,
                          int64_t version, syncd_htree_t *tree, size_t bytes)
{
    shard_t *s = shard_of(t, k);
    tier_entry_t *e;

    pthread_mutex_lock(&s->lock);
    e = find(t, s, k);
    if (e != NULL && !e->taken && e->tree == NULL && !e->doc->deleted &&
        e->doc->version == version && tree_of(tree, e->doc->hash)) {
        set_tree(t, s, e, tree, bytes);
        tree = NULL;
    }
    shard_unlock(s);
    syncd_htree_free(tree);
}

void syncd_tier_set_outbox(syncd_tier_t *t, const syncd_reckey_t *k,
                           const syncd_doc_t *doc, syncd_htree_t *tree,
                           size_t bytes)
{
    shard_t *s = shard_of(t, k);
    syncd_lru_node_t *node;
    tier_entry_t *e;
    json_t *ob = NULL;
    int drop = 0;

    pthread_mutex_lock(&s->lock);
    node = syncd_lru_find(&s->lru, k->bytes, k->len, k->hash);
    e = (tier_entry_t *)node;
    if (e != NULL && e->doc->version == doc->version &&
        e->doc->deleted == doc->deleted &&
        strcmp(e->doc->hash, doc->hash) == 0) {
        /* The markers are shared and immutable: copies already handed out
         * keep the old ones, released below with no lock held. */
        ob = e->doc->outbox;
        e->doc->outbox = json_incref(doc->outbox);
        if (tree != NULL && e->tree == NULL && !e->taken && !doc->deleted &&
            tree_of(tree, doc->hash)) {
            set_tree(t, s, e, tree, bytes);
            tree = NULL;
        }
    } else {
        drop = e != NULL;
    }
    shard_unlock(s);
    if (drop)
        syncd_tier_drop(t, k);
    json_decref(ob);
    syncd_htree_free(tree);
}

int syncd_tier_take(syncd_tier_t *t, const syncd_reckey_t *k, int64_t version,
                    int need_tree, json_t **body, syncd_htree_t **tree)
{
    shard_t *s = shard_of(t, k);
    tier_entry_t *e;
    int rc = 1;

    *body = NULL;
    *tree = NULL;
    pthread_mutex_lock(&s->lock);
    e = find(t, s, k);
    if (e == NULL || e->doc->deleted || e->doc->version != version) {
        rc = SYNCD_ENOTFOUND;
    } else if (!e->taken && (e->tree != NULL || !need_tree) &&
               __atomic_load_n(&e->doc->body->refcount, __ATOMIC_ACQUIRE) ==
                   1) {
        /* The entry's reference is the only one: no reader holds the
         * body, and a new one takes its reference under this mutex. */
        e->taken = 1;
        *body = e->doc->body;
        *tree = e->tree;
        e->tree = NULL;
        rc = 0;
    }
    shard_unlock(s);
    return rc;
}

void syncd_tier_give_back(syncd_tier_t *t, const syncd_reckey_t *k,
                          syncd_tier_back_t how, const syncd_doc_t *meta,
                          json_t *body, syncd_htree_t *tree, int64_t born_ms,
                          size_t size)
{
    shard_t *s = shard_of(t, k);
    tier_entry_t *e;

    pthread_mutex_lock(&s->lock);
    e = (tier_entry_t *)syncd_lru_find(&s->lru, k->bytes, k->len, k->hash);
    e->doc->body = body;
    e->taken = 0;
    if (how == SYNCD_TIER_BACK_UNCHANGED) {
        e->tree = tree;
    } else if (how == SYNCD_TIER_BACK_DROP) {
        syncd_lru_remove(&s->lru, &e->node);
        entry_free(&e->node);
        syncd_htree_free(tree);
    } else {
        syncd_doc_t *d = e->doc;

        d->version = meta->version;
        d->mtime_ms = meta->mtime_ms;
        d->body_size = 0;
        memcpy(d->hash, meta->hash, sizeof(d->hash));
        memcpy(d->origin, meta->origin, sizeof(d->origin));
        syncd_doc_drop_meta(d);
        free(e->text);
        e->text = NULL;
        e->text_len = 0;
        e->tree = tree;
        if (tree == NULL)
            e->tree_bytes = 0;
        e->born_ms = born_ms;
        e->pinned = 1;
        recharge(t, s, e, size);
    }
    pthread_cond_broadcast(&s->given);
    shard_unlock(s);
}

void syncd_tier_unpin(syncd_tier_t *t, const syncd_reckey_t *k, size_t size)
{
    shard_t *s = shard_of(t, k);
    syncd_lru_node_t *node;

    pthread_mutex_lock(&s->lock);
    node = lookup_given(s, k);
    if (node != NULL && ((tier_entry_t *)node)->pinned) {
        ((tier_entry_t *)node)->pinned = 0;
        recharge(t, s, (tier_entry_t *)node, size);
    }
    shard_unlock(s);
}

void syncd_tier_drop(syncd_tier_t *t, const syncd_reckey_t *k)
{
    shard_t *s = shard_of(t, k);
    syncd_lru_node_t *node;

    pthread_mutex_lock(&s->lock);
    node = lookup_given(s, k);
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
