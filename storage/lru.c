/* lru.c - an intrusive hash table with a recency list and a byte total.
 *
 * The in-memory tier of the RocksDB store and the index of the node cache
 * both need the same thing: find an entry by its key bytes, know which
 * entry was used least recently, and keep a running total of the bytes the
 * entries stand for. Entries embed a syncd_lru_node_t and own their key;
 * the table only links them. Callers hold their own lock around every call.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define INITIAL_BUCKETS 64

uint64_t syncd_lru_hash(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 14695981039346656037ULL;

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

int syncd_lru_init(syncd_lru_t *lru)
{
    memset(lru, 0, sizeof(*lru));
    lru->buckets = calloc(INITIAL_BUCKETS, sizeof(*lru->buckets));
    if (lru->buckets == NULL)
        return SYNCD_ENOMEM;
    lru->nbuckets = INITIAL_BUCKETS;
    lru->head.prev = lru->head.next = &lru->head;
    return 0;
}

void syncd_lru_destroy(syncd_lru_t *lru,
                       void (*free_node)(syncd_lru_node_t *node))
{
    syncd_lru_node_t *node = lru->head.next;

    while (node != NULL && node != &lru->head) {
        syncd_lru_node_t *next = node->next;

        free_node(node);
        node = next;
    }
    free(lru->buckets);
    memset(lru, 0, sizeof(*lru));
}

static syncd_lru_node_t **bucket_of(syncd_lru_t *lru, uint64_t hash)
{
    return &lru->buckets[(hash ^ (hash >> 29)) & (lru->nbuckets - 1)];
}

syncd_lru_node_t *syncd_lru_find(syncd_lru_t *lru, const char *key,
                                 size_t keylen, uint64_t hash)
{
    for (syncd_lru_node_t *n = *bucket_of(lru, hash); n != NULL; n = n->chain) {
        if (n->hash == hash && n->keylen == keylen &&
            memcmp(n->key, key, keylen) == 0)
            return n;
    }
    return NULL;
}

/* Doubles the bucket array and rehashes every node into it; on out of
 * memory the table keeps its current buckets. */
static void grow(syncd_lru_t *lru)
{
    size_t nbuckets = lru->nbuckets * 2;
    syncd_lru_node_t **old = lru->buckets;
    size_t oldn = lru->nbuckets;

    lru->buckets = calloc(nbuckets, sizeof(*lru->buckets));
    if (lru->buckets == NULL) {
        lru->buckets = old;
        return;
    }
    lru->nbuckets = nbuckets;
    for (size_t i = 0; i < oldn; i++) {
        syncd_lru_node_t *n = old[i];

        while (n != NULL) {
            syncd_lru_node_t *chain = n->chain;
            syncd_lru_node_t **b = bucket_of(lru, n->hash);

            n->chain = *b;
            *b = n;
            n = chain;
        }
    }
    free(old);
}

static void link_newest(syncd_lru_t *lru, syncd_lru_node_t *node)
{
    node->prev = &lru->head;
    node->next = lru->head.next;
    lru->head.next->prev = node;
    lru->head.next = node;
}

static void unlink_recency(syncd_lru_node_t *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
}

void syncd_lru_insert(syncd_lru_t *lru, syncd_lru_node_t *node)
{
    syncd_lru_node_t **b;

    if (lru->count >= lru->nbuckets)
        grow(lru);
    b = bucket_of(lru, node->hash);
    node->chain = *b;
    *b = node;
    link_newest(lru, node);
    lru->count++;
    lru->bytes += node->size;
}

void syncd_lru_touch(syncd_lru_t *lru, syncd_lru_node_t *node)
{
    if (lru->head.next == node)
        return;
    unlink_recency(node);
    link_newest(lru, node);
}

void syncd_lru_remove(syncd_lru_t *lru, syncd_lru_node_t *node)
{
    syncd_lru_node_t **b = bucket_of(lru, node->hash);

    while (*b != node)
        b = &(*b)->chain;
    *b = node->chain;
    unlink_recency(node);
    lru->count--;
    lru->bytes -= node->size;
}

syncd_lru_node_t *syncd_lru_oldest(syncd_lru_t *lru)
{
    return lru->head.prev != &lru->head ? lru->head.prev : NULL;
}

syncd_lru_node_t *syncd_lru_next(syncd_lru_t *lru, syncd_lru_node_t *node)
{
    syncd_lru_node_t *next = node != NULL ? node->next : lru->head.next;

    return next != &lru->head ? next : NULL;
}
