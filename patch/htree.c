/* htree.c - the hash tree: a document's content hash kept up to date.
 *
 * A tree node mirrors one JSON value and holds its hash (hash.c). A
 * container node also holds its entries (members sorted by key bytes, or
 * elements) and the levels of its chunk tree: level 0 is the list of entry
 * hashes, level k + 1 the hashes of the chunks of level k, up to a level
 * short enough to hash flat. The tree never looks at the document: it
 * replays each patch operation on its own nodes (an added value is hashed
 * from the operation's "value", a moved one keeps its hashes), so the
 * document can be patched in place or copied, as its owner likes.
 *
 * Changing entries [lo, lo + old) of a container into new entries re-cuts
 * its level 0 from the start of the chunk that held lo until a new chunk
 * ends where an old chunk ended (shifted by the change in count): chunking
 * depends only on where a chunk starts and on the entries, so every later
 * chunk is unchanged. The chunks replaced are in turn a change of a run of
 * entries in level 1, and so on up. That is O(log n) chunk hashes for one
 * change, where n is the container's size.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "patch/internal.h"

typedef struct hnode hnode_t;

/* The entries of a stale container whose values changed, to rehash. */
typedef struct pend {
    size_t n, cap;
    size_t idx[];
} pend_t;

typedef struct level {
    unsigned char (*item)[32]; /* the hashes of this level */
    size_t n, cap;
    size_t *end;  /* end (exclusive) of each chunk of item, when chunked */
    pend_t *pend; /* level 0 of a stale container: NULL or the entries whose
                     hashes are to be redone */
} level_t;

typedef struct hent {
    char *key; /* objects: the member's key (klen bytes, may hold NUL) */
    size_t klen;
    hnode_t *child;
} hent_t;

struct hnode {
    json_type type;
    unsigned char stale;  /* hash (and chunks over lv[0].pend) not updated */
    unsigned char listed; /* in its parent's lv[0].pend */
    unsigned char hash[32];
    hent_t *ent; /* containers: lv[0].n entries */
    size_t entcap;
    level_t *lv; /* containers: nlv >= 1 levels */
    size_t nlv;
};

/* Most entries one container lists before it is rehashed mid-patch: what
 * bounds the cost of shifting the list when entries are added or removed. */
#define PEND_MAX 256

struct syncd_htree {
    hnode_t *root;
    uint64_t hashes;
};

/* One step of a path: the container and the index of the entry taken. */
typedef struct step {
    hnode_t *node;
    size_t index;
} step_t;

static void node_free(hnode_t *node)
{
    if (node == NULL)
        return;
    for (size_t i = 0; node->lv != NULL && i < node->lv[0].n; i++) {
        free(node->ent[i].key);
        node_free(node->ent[i].child);
    }
    for (size_t k = 0; k < node->nlv; k++) {
        free(node->lv[k].item);
        free(node->lv[k].end);
    }
    if (node->lv != NULL)
        free(node->lv[0].pend);
    free(node->lv);
    free(node->ent);
    free(node);
}

static int is_container(const hnode_t *node)
{
    return node->type == JSON_OBJECT || node->type == JSON_ARRAY;
}

static size_t node_size(const hnode_t *node)
{
    return node->lv[0].n;
}

/* Makes room for n items in level L. */
static int level_reserve(level_t *L, size_t n)
{
    void *p = syncd_array_reserve(L->item, &L->cap, n, sizeof(*L->item));

    if (p == NULL)
        return SYNCD_ENOMEM;
    L->item = p;
    return 0;
}

/* Replaces items [lo, lo + old) of L by `add` slots the caller fills. */
static int level_splice(level_t *L, size_t lo, size_t old, size_t add)
{
    if (level_reserve(L, L->n - old + add) < 0)
        return SYNCD_ENOMEM;
    memmove(L->item + lo + add, L->item + lo + old,
            (L->n - lo - old) * sizeof(*L->item));
    L->n = L->n - old + add;
    return 0;
}

/* Frees the levels of node above level k. */
static void levels_truncate(hnode_t *node, size_t k)
{
    for (size_t j = k + 1; j < node->nlv; j++) {
        free(node->lv[j].item);
        free(node->lv[j].end);
    }
    free(node->lv[k].end);
    node->lv[k].end = NULL;
    node->nlv = k + 1;
}

/* Makes sure node has a level k + 1 (empty when new). */
static int levels_grow(hnode_t *node, size_t k)
{
    level_t *lv;

    if (node->nlv > k + 1)
        return 0;
    lv = realloc(node->lv, (k + 2) * sizeof(*lv));
    if (lv == NULL)
        return SYNCD_ENOMEM;
    memset(&lv[k + 1], 0, sizeof(*lv));
    node->lv = lv;
    node->nlv = k + 2;
    return 0;
}

/* Cuts levels k and up of node into chunks from scratch. */
static int levels_build(syncd_htree_t *t, hnode_t *node, size_t k)
{
    for (; node->lv[k].n > SYNCD_HASH_FLAT_MAX; k++) {
        level_t *L, *U;
        size_t m = 0;

        if (levels_grow(node, k) < 0)
            return SYNCD_ENOMEM;
        L = &node->lv[k];
        U = &node->lv[k + 1];
        free(L->end);
        L->end = malloc((L->n / SYNCD_HASH_CHUNK_MIN + 1) * sizeof(*L->end));
        if (L->end == NULL ||
            level_reserve(U, L->n / SYNCD_HASH_CHUNK_MIN + 1) < 0)
            return SYNCD_ENOMEM;
        for (size_t s = 0, e; s < L->n; s = e, m++) {
            e = syncd_hash_chunk_end((const unsigned char(*)[32])L->item, s,
                                     L->n);
            syncd_hash_chunk(U->item[m],
                             (const unsigned char(*)[32])L->item + s, e - s);
            t->hashes++;
            L->end[m] = e;
        }
        U->n = m;
    }
    levels_truncate(node, k);
    return 0;
}

/* Returns the first chunk of ends (m of them) that ends after index lo. */
static size_t chunk_of(const size_t *end, size_t m, size_t lo)
{
    size_t a = 0, b = m;

    while (a < b) {
        size_t mid = a + (b - a) / 2;

        if (end[mid] > lo)
            b = mid;
        else
            a = mid + 1;
    }
    return a < m ? a : m - 1;
}

/* Level k of node had items [lo, lo + old) replaced by `add` new ones
 * (already in place): re-cuts the chunks that covered them and carries the
 * change up the levels. */
static int levels_update(syncd_htree_t *t, hnode_t *node, size_t k, size_t lo,
                         size_t old, size_t add)
{
    size_t *newend = NULL, nnew = 0, cap = 0, m, c, cp, s, pos;
    unsigned char(*newh)[32] = NULL;
    ssize_t d = (ssize_t)add - (ssize_t)old;
    level_t *L = &node->lv[k], *U;
    size_t *end;
    int rc = SYNCD_ENOMEM;

    if (L->n <= SYNCD_HASH_FLAT_MAX) {
        levels_truncate(node, k);
        return 0;
    }
    if (k + 1 == node->nlv)
        return levels_build(t, node, k);
    U = &node->lv[k + 1];
    m = U->n;
    c = chunk_of(L->end, m, lo);
    s = c == 0 ? 0 : L->end[c - 1];
    cp = c;
    for (pos = s;;) {
        size_t e = syncd_hash_chunk_end((const unsigned char(*)[32])L->item,
                                        pos, L->n);

        if (nnew == cap) {
            void *pe, *ph;

            cap = cap > 0 ? 2 * cap : 4;
            pe = realloc(newend, cap * sizeof(*newend));
            if (pe != NULL)
                newend = pe;
            ph = realloc(newh, cap * sizeof(*newh));
            if (ph != NULL)
                newh = ph;
            if (pe == NULL || ph == NULL)
                goto cleanup;
        }
        syncd_hash_chunk(newh[nnew], (const unsigned char(*)[32])L->item + pos,
                         e - pos);
        t->hashes++;
        newend[nnew++] = e;
        pos = e;
        if (e == L->n) {
            cp = m;
            break;
        }
        if (e >= lo + add) {
            while (cp < m && (ssize_t)L->end[cp] + d < (ssize_t)e)
                cp++;
            if (cp < m && (ssize_t)L->end[cp] + d == (ssize_t)e) {
                cp++;
                break;
            }
        }
    }
    /* Chunks [c, cp) become the nnew new ones, in the ends and in U. */
    end = malloc((m - (cp - c) + nnew) * sizeof(*end));
    if (end == NULL || level_splice(U, c, cp - c, nnew) < 0)
        goto cleanup;
    memcpy(end, L->end, c * sizeof(*end));
    memcpy(end + c, newend, nnew * sizeof(*end));
    for (size_t j = cp; j < m; j++)
        end[c + nnew + j - cp] = (size_t)((ssize_t)L->end[j] + d);
    free(L->end);
    L->end = end;
    memcpy(U->item + c, newh, nnew * sizeof(*newh));
    rc = levels_update(t, node, k + 1, c, cp - c, nnew);
cleanup:
    free(newend);
    free(newh);
    return rc;
}

/* Rehashes node from the top level of its chunk tree. */
static void node_finish(syncd_htree_t *t, hnode_t *node)
{
    const level_t *top = &node->lv[node->nlv - 1];

    syncd_hash_container(node->hash, node->type == JSON_OBJECT,
                         (const unsigned char(*)[32])top->item, top->n);
    t->hashes += 2;
}

/* Writes the level-0 hash of node's entry i. */
static void entry_hash(syncd_htree_t *t, hnode_t *node, size_t i)
{
    const hent_t *e = &node->ent[i];

    if (node->type == JSON_OBJECT) {
        syncd_hash_member(node->lv[0].item[i], e->key, e->klen, e->child->hash);
        t->hashes++;
    } else {
        memcpy(node->lv[0].item[i], e->child->hash, 32);
    }
}

/* Makes room for n entries in node. */
static int ent_reserve(hnode_t *node, size_t n)
{
    void *p =
        syncd_array_reserve(node->ent, &node->entcap, n, sizeof(*node->ent));

    if (p == NULL)
        return SYNCD_ENOMEM;
    node->ent = p;
    return 0;
}

/* Entries [lo, lo + old) of node were replaced or removed and `add` others
 * took their place: drops the ones gone from node's list of entries to
 * rehash and shifts the ones after them. */
static void pend_shift(hnode_t *node, size_t lo, size_t old, size_t add)
{
    pend_t *p = node->lv[0].pend;
    size_t kept = 0;

    for (size_t i = 0; p != NULL && i < p->n; i++) {
        size_t x = p->idx[i];

        if (x >= lo && x < lo + old)
            continue;
        p->idx[kept++] = x >= lo + old ? x - old + add : x;
    }
    if (p != NULL)
        p->n = kept;
}

/* Brings a stale node and the stale nodes under it up to date: rehashes
 * its listed entries (their values first), then the chunks over each of
 * them, then the node. */
static int node_flush(syncd_htree_t *t, hnode_t *node)
{
    pend_t *p;

    if (!node->stale)
        return 0;
    p = node->lv[0].pend;
    if (p != NULL) {
        for (size_t i = 0; i < p->n; i++) {
            hnode_t *child = node->ent[p->idx[i]].child;

            if (node_flush(t, child) < 0)
                return SYNCD_ENOMEM;
            child->listed = 0;
            entry_hash(t, node, p->idx[i]);
        }
        for (size_t i = 0; node->nlv > 1 && i < p->n; i++)
            if (levels_update(t, node, 0, p->idx[i], 1, 1) < 0)
                return SYNCD_ENOMEM;
        free(p);
        node->lv[0].pend = NULL;
    }
    node_finish(t, node);
    node->stale = 0;
    return 0;
}

/* Lists entry idx of node as one to rehash, node being stale. */
static int pend_add(syncd_htree_t *t, hnode_t *node, size_t idx)
{
    pend_t *p = node->lv[0].pend;

    if (p != NULL && p->n == PEND_MAX) {
        if (node_flush(t, node) < 0)
            return SYNCD_ENOMEM;
        node->stale = 1;
        p = NULL;
    }
    if (p == NULL || p->n == p->cap) {
        size_t cap = p != NULL ? 2 * p->cap : 4;
        pend_t *q = realloc(p, sizeof(*p) + cap * sizeof(p->idx[0]));

        if (q == NULL)
            return SYNCD_ENOMEM;
        if (p == NULL)
            q->n = 0;
        q->cap = cap;
        node->lv[0].pend = p = q;
    }
    p->idx[p->n++] = idx;
    node->ent[idx].child->listed = 1;
    return 0;
}

/* Entries [lo, lo + old) of node were replaced by `add` entries (already in
 * node->ent, their values up to date; lv[0] still has the old count):
 * hashes them and re-cuts the chunks above them; node is left stale. */
static int entries_changed(syncd_htree_t *t, hnode_t *node, size_t lo,
                           size_t old, size_t add)
{
    if (level_splice(&node->lv[0], lo, old, add) < 0)
        return SYNCD_ENOMEM;
    pend_shift(node, lo, old, add);
    for (size_t i = lo; i < lo + add; i++)
        entry_hash(t, node, i);
    node->stale = 1;
    return levels_update(t, node, 0, lo, old, add);
}

static hnode_t *node_new(json_type type)
{
    hnode_t *node = calloc(1, sizeof(*node));

    if (node == NULL)
        return NULL;
    node->type = type;
    if (type == JSON_OBJECT || type == JSON_ARRAY) {
        node->lv = calloc(1, sizeof(*node->lv));
        if (node->lv == NULL) {
            free(node);
            return NULL;
        }
        node->nlv = 1;
    }
    return node;
}

static int member_cmp(const void *pa, const void *pb)
{
    const hent_t *a = pa, *b = pb;

    return syncd_key_cmp(a->key, a->klen, b->key, b->klen);
}

/* Builds the node of the depth-checked v into *out. */
static int node_build(syncd_htree_t *t, hnode_t **out, const json_t *v)
{
    size_t n = json_is_object(v)  ? json_object_size(v)
               : json_is_array(v) ? json_array_size(v)
                                  : 0,
           i = 0;
    hnode_t *node = node_new(json_typeof(v));
    const char *key;
    size_t len;
    json_t *child;

    *out = node;
    if (node == NULL)
        return SYNCD_ENOMEM;
    if (!is_container(node)) {
        syncd_hash_scalar(node->hash, v);
        t->hashes++;
        return 0;
    }
    if (ent_reserve(node, n) < 0 || level_reserve(&node->lv[0], n) < 0)
        return SYNCD_ENOMEM;
    if (json_is_object(v)) {
        json_object_keylen_foreach ((json_t *)v, key, len, child) {
            node->ent[i].key = malloc(len > 0 ? len : 1);
            node->ent[i].klen = len;
            node->ent[i].child = NULL;
            node->lv[0].n = ++i;
            if (node->ent[i - 1].key == NULL)
                return SYNCD_ENOMEM;
            memcpy(node->ent[i - 1].key, key, len);
        }
        if (n > 0)
            qsort(node->ent, n, sizeof(*node->ent), member_cmp);
        for (i = 0; i < n; i++)
            if (node_build(t, &node->ent[i].child,
                           json_object_getn(v, node->ent[i].key,
                                            node->ent[i].klen)) < 0)
                return SYNCD_ENOMEM;
    } else {
        for (i = 0; i < n; i++) {
            node->ent[i].key = NULL;
            node->ent[i].child = NULL;
            node->lv[0].n = i + 1;
            if (node_build(t, &node->ent[i].child, json_array_get(v, i)) < 0)
                return SYNCD_ENOMEM;
        }
    }
    for (i = 0; i < n; i++)
        entry_hash(t, node, i);
    if (levels_build(t, node, 0) < 0)
        return SYNCD_ENOMEM;
    node_finish(t, node);
    return 0;
}

/* Returns a deep copy of node, hashes included (none recomputed). */
static hnode_t *node_clone(const hnode_t *node)
{
    hnode_t *copy = node_new(node->type);

    if (copy == NULL)
        return NULL;
    memcpy(copy->hash, node->hash, 32);
    if (!is_container(node))
        return copy;
    if (ent_reserve(copy, node_size(node)) < 0)
        goto fail;
    for (size_t i = 0; i < node_size(node); i++) {
        hent_t *e = &copy->ent[i];

        e->klen = node->ent[i].klen;
        e->key = NULL;
        e->child = node_clone(node->ent[i].child);
        copy->lv[0].n = i + 1;
        if (e->child == NULL)
            goto fail;
        if (node->ent[i].key != NULL) {
            e->key = malloc(e->klen > 0 ? e->klen : 1);
            if (e->key == NULL)
                goto fail;
            memcpy(e->key, node->ent[i].key, e->klen);
        }
    }
    for (size_t k = 0; k < node->nlv; k++) {
        const level_t *L = &node->lv[k];
        size_t nend = k + 1 < node->nlv ? node->lv[k + 1].n : 0;

        if (k > 0 && levels_grow(copy, k - 1) < 0)
            goto fail;
        if (level_reserve(&copy->lv[k], L->n) < 0)
            goto fail;
        memcpy(copy->lv[k].item, L->item, L->n * sizeof(*L->item));
        copy->lv[k].n = L->n; /* level 0: already the entry count */
        if (nend > 0) {
            copy->lv[k].end = malloc(nend * sizeof(*L->end));
            if (copy->lv[k].end == NULL)
                goto fail;
            memcpy(copy->lv[k].end, L->end, nend * sizeof(*L->end));
        }
    }
    return copy;
fail:
    node_free(copy);
    return NULL;
}

/* Finds key in the object node: returns 1 and its index in *at, or 0 and
 * the index it would be inserted at. */
static int member_find(const hnode_t *node, const char *key, size_t len,
                       size_t *at)
{
    size_t a = 0, b = node_size(node);

    while (a < b) {
        size_t mid = a + (b - a) / 2;
        int c =
            syncd_key_cmp(node->ent[mid].key, node->ent[mid].klen, key, len);

        if (c == 0) {
            *at = mid;
            return 1;
        }
        if (c < 0)
            a = mid + 1;
        else
            b = mid;
    }
    *at = a;
    return 0;
}

static int op_error(syncd_error_t *err, const char *what)
{
    return syncd_error_set(err, SYNCD_EPATCH,
                           "the patch does not fit the hash tree: %s", what);
}

/* Walks the first `count` tokens of ptr from t's root, recording each step
 * in steps (count entries), and sets *node to where it ends. */
static int walk(hnode_t **node, step_t *steps, syncd_htree_t *t,
                const syncd_ptr_t *ptr, size_t count, syncd_error_t *err)
{
    hnode_t *at = t->root;

    for (size_t i = 0; i < count; i++) {
        size_t len, idx;
        const char *tok = syncd_ptr_token(ptr, i, &len);
        const char *why;

        if (at->type == JSON_OBJECT) {
            if (!member_find(at, tok, len, &idx))
                return op_error(err, "a member on the path is missing");
        } else if (at->type != JSON_ARRAY ||
                   syncd_ptr_array_index(&idx, tok, len, node_size(at), 0,
                                         &why) != 0) {
            return op_error(err, "an element on the path is missing");
        }
        steps[i].node = at;
        steps[i].index = idx;
        at = at->ent[idx].child;
    }
    *node = at;
    return 0;
}

/* Marks the containers the steps went through stale, each listing the
 * entry taken, deepest first, up to one that already lists it. */
static int mark_path(syncd_htree_t *t, const step_t *steps, size_t count)
{
    for (size_t i = count; i-- > 0;) {
        hnode_t *node = steps[i].node;

        node->stale = 1;
        if (node->ent[steps[i].index].child->listed)
            break;
        if (pend_add(t, node, steps[i].index) < 0)
            return SYNCD_ENOMEM;
    }
    return 0;
}

enum { PUT_ADD, PUT_REPLACE };

/* Puts child (stolen on every path) at ptr: adds it (inserting into an
 * array, adding or replacing a member) or replaces what is there. */
static int put(syncd_htree_t *t, const syncd_ptr_t *ptr, hnode_t *child,
               int mode, syncd_error_t *err)
{
    size_t n = syncd_ptr_count(ptr), len, idx;
    step_t *steps = NULL;
    hnode_t *parent;
    const char *tok, *why;
    int rc = SYNCD_ENOMEM;

    if (node_flush(t, child) < 0)
        goto cleanup;
    if (n == 0) {
        node_free(t->root);
        t->root = child;
        return 0;
    }
    steps = malloc(n * sizeof(*steps));
    if (steps == NULL)
        goto cleanup;
    rc = walk(&parent, steps, t, ptr, n - 1, err);
    if (rc < 0)
        goto cleanup;
    tok = syncd_ptr_token(ptr, n - 1, &len);
    rc = SYNCD_ENOMEM;
    if (parent->type == JSON_OBJECT) {
        int found = member_find(parent, tok, len, &idx);

        if (!found && mode == PUT_REPLACE) {
            rc = op_error(err, "the member to replace is missing");
            goto cleanup;
        }
        if (found) {
            node_free(parent->ent[idx].child);
            parent->ent[idx].child = child;
            child = NULL;
            if (entries_changed(t, parent, idx, 1, 1) < 0)
                goto cleanup;
        } else {
            char *key = malloc(len > 0 ? len : 1);

            if (key == NULL || ent_reserve(parent, node_size(parent) + 1) < 0) {
                free(key);
                goto cleanup;
            }
            memcpy(key, tok, len);
            memmove(parent->ent + idx + 1, parent->ent + idx,
                    (node_size(parent) - idx) * sizeof(*parent->ent));
            parent->ent[idx] = (hent_t){key, len, child};
            child = NULL;
            if (entries_changed(t, parent, idx, 0, 1) < 0)
                goto cleanup;
        }
    } else if (parent->type == JSON_ARRAY &&
               syncd_ptr_array_index(&idx, tok, len, node_size(parent),
                                     mode == PUT_ADD, &why) == 0) {
        if (mode == PUT_REPLACE) {
            node_free(parent->ent[idx].child);
            parent->ent[idx].child = child;
            child = NULL;
            if (entries_changed(t, parent, idx, 1, 1) < 0)
                goto cleanup;
        } else {
            if (ent_reserve(parent, node_size(parent) + 1) < 0)
                goto cleanup;
            memmove(parent->ent + idx + 1, parent->ent + idx,
                    (node_size(parent) - idx) * sizeof(*parent->ent));
            parent->ent[idx] = (hent_t){NULL, 0, child};
            child = NULL;
            if (entries_changed(t, parent, idx, 0, 1) < 0)
                goto cleanup;
        }
    } else {
        rc = op_error(err, "the target's container is missing");
        goto cleanup;
    }
    rc = mark_path(t, steps, n - 1);
cleanup:
    node_free(child);
    free(steps);
    return rc;
}

/* Removes the value at ptr (not the root), handing it to *out when out is
 * not NULL, else freeing it. */
static int take(syncd_htree_t *t, const syncd_ptr_t *ptr, hnode_t **out,
                syncd_error_t *err)
{
    size_t n = syncd_ptr_count(ptr), idx;
    step_t *steps;
    hnode_t *parent, *child;
    int rc;

    if (n == 0)
        return op_error(err, "the whole document cannot be removed");
    steps = malloc(n * sizeof(*steps));
    if (steps == NULL)
        return SYNCD_ENOMEM;
    rc = walk(&child, steps, t, ptr, n, err);
    if (rc == 0) {
        parent = steps[n - 1].node;
        idx = steps[n - 1].index;
        free(parent->ent[idx].key);
        memmove(parent->ent + idx, parent->ent + idx + 1,
                (node_size(parent) - idx - 1) * sizeof(*parent->ent));
        if (out != NULL) {
            child->listed = 0;
            *out = child;
        } else {
            node_free(child);
        }
        rc = entries_changed(t, parent, idx, 1, 0);
        if (rc == 0)
            rc = mark_path(t, steps, n - 1);
    }
    free(steps);
    return rc;
}

/* Returns 1 when op's member `name` is a string pointer, parsed into *out. */
static int op_pointer(syncd_ptr_t **out, const json_t *op, const char *name)
{
    const json_t *s = json_object_get(op, name);

    *out = NULL;
    return json_is_string(s) &&
           syncd_ptr_parse_n(out, json_string_value(s), json_string_length(s),
                             NULL) == 0;
}

/* Replays one operation of a patch that applied on t. */
static int apply_op(syncd_htree_t *t, const json_t *op, syncd_error_t *err)
{
    const char *name = json_string_value(json_object_get(op, "op"));
    const json_t *value = json_object_get(op, "value");
    syncd_ptr_t *path = NULL, *from = NULL;
    hnode_t *node = NULL;
    int rc;

    if (name == NULL || !op_pointer(&path, op, "path"))
        return op_error(err, "an operation has no op or path");
    if (strcmp(name, "test") == 0) {
        rc = 0;
    } else if (strcmp(name, "remove") == 0) {
        rc = take(t, path, NULL, err);
    } else if (strcmp(name, "add") == 0 || strcmp(name, "replace") == 0) {
        rc = value == NULL ? op_error(err, "an operation has no value")
                           : node_build(t, &node, value);
        if (rc == 0)
            rc = put(t, path, node,
                     strcmp(name, "add") == 0 ? PUT_ADD : PUT_REPLACE, err);
        else
            node_free(node);
    } else if ((strcmp(name, "move") == 0 || strcmp(name, "copy") == 0) &&
               op_pointer(&from, op, "from")) {
        if (name[0] == 'm' && syncd_ptr_count(from) == syncd_ptr_count(path) &&
            syncd_ptr_prefix_equal(from, path, syncd_ptr_count(path))) {
            rc = 0;
        } else if (name[0] == 'm') {
            rc = take(t, from, &node, err);
            if (rc == 0)
                rc = put(t, path, node, PUT_ADD, err);
        } else {
            step_t *steps =
                malloc((syncd_ptr_count(from) + 1) * sizeof(*steps));
            hnode_t *src;

            rc = steps == NULL
                     ? SYNCD_ENOMEM
                     : walk(&src, steps, t, from, syncd_ptr_count(from), err);
            if (rc == 0)
                rc = node_flush(t, src);
            if (rc == 0) {
                node = node_clone(src);
                rc = node == NULL ? SYNCD_ENOMEM
                                  : put(t, path, node, PUT_ADD, err);
            }
            free(steps);
        }
    } else {
        rc = op_error(err, "an operation is not one of RFC 6902's");
    }
    syncd_ptr_free(path);
    syncd_ptr_free(from);
    if (rc == SYNCD_ENOMEM)
        syncd_error_set(err, SYNCD_ENOMEM, "out of memory hashing a patch");
    return rc;
}

int syncd_htree_build(syncd_htree_t **out, const json_t *doc,
                      syncd_error_t *err)
{
    syncd_htree_t *t;

    *out = NULL;
    if (syncd_json_check_depth(doc, SYNCD_EINVAL, "document", err) < 0)
        return SYNCD_EINVAL;
    t = calloc(1, sizeof(*t));
    if (t == NULL || node_build(t, &t->root, doc) < 0) {
        syncd_htree_free(t);
        return syncd_error_set(err, SYNCD_ENOMEM,
                               "out of memory building a hash tree");
    }
    *out = t;
    return 0;
}

void syncd_htree_free(syncd_htree_t *t)
{
    if (t == NULL)
        return;
    node_free(t->root);
    free(t);
}

int syncd_htree_apply(syncd_htree_t *t, const json_t *patch, syncd_error_t *err)
{
    size_t i;
    json_t *op;

    if (!json_is_array(patch))
        return op_error(err, "the patch is not an array");
    json_array_foreach (patch, i, op) {
        int rc = apply_op(t, op, err);

        if (rc < 0)
            return rc;
    }
    if (node_flush(t, t->root) < 0)
        return syncd_error_set(err, SYNCD_ENOMEM,
                               "out of memory hashing a patch");
    return 0;
}

void syncd_htree_root(const syncd_htree_t *t, char out[SYNCD_HASH_HEX_LEN + 1])
{
    syncd_hash_hex(out, t->root->hash);
}

uint64_t syncd_htree_hash_count(const syncd_htree_t *t)
{
    return t->hashes;
}

/* Returns the bytes node and its subtree hold, about (allocator overhead
 * aside). */
static uint64_t node_bytes(const hnode_t *node)
{
    uint64_t n = sizeof(*node);

    if (!is_container(node))
        return n;
    n += node->entcap * sizeof(*node->ent) + node->nlv * sizeof(*node->lv);
    if (node->lv[0].pend != NULL)
        n += sizeof(*node->lv[0].pend) +
             node->lv[0].pend->cap * sizeof(node->lv[0].pend->idx[0]);
    for (size_t k = 0; k < node->nlv; k++) {
        n += node->lv[k].cap * sizeof(*node->lv[k].item);
        if (node->lv[k].end != NULL)
            n += (node->lv[k].n / SYNCD_HASH_CHUNK_MIN + 1) *
                 sizeof(*node->lv[k].end);
    }
    for (size_t i = 0; i < node->lv[0].n; i++)
        n += node->ent[i].klen + node_bytes(node->ent[i].child);
    return n;
}

uint64_t syncd_htree_bytes(const syncd_htree_t *t)
{
    return sizeof(*t) + node_bytes(t->root);
}

/* ---- Hash listings (doc/HASH.md "Narrowing") ----------------------------- */

/* Returns the end (exclusive) in level 0 of item i of level k of node. */
static size_t entry_end(const hnode_t *node, size_t k, size_t i)
{
    size_t e = i + 1;

    while (k-- > 0)
        e = node->lv[k].end[e - 1];
    return e;
}

/* Returns the one-letter kind of a listed value: object, array, scalar. */
static const char *kind_of(const hnode_t *node)
{
    return node->type == JSON_OBJECT  ? "o"
           : node->type == JSON_ARRAY ? "a"
                                      : "s";
}

/* Returns a new array of the listing's item at index i of level k. */
static json_t *list_item(const hnode_t *node, size_t k, size_t i)
{
    char hex[SYNCD_HASH_HEX_LEN + 1];

    if (k > 0) {
        syncd_hash_hex(hex, node->lv[k].item[i]);
        return json_pack("[s, I, I]", hex, (json_int_t)node->lv[k - 1].end[i],
                         (json_int_t)entry_end(node, k, i));
    }
    syncd_hash_hex(hex, node->ent[i].child->hash);
    if (node->type == JSON_ARRAY)
        return json_pack("[s, s]", hex, kind_of(node->ent[i].child));
    return json_pack("[s#, s, s]", node->ent[i].key, node->ent[i].klen, hex,
                     kind_of(node->ent[i].child));
}

/* Sets *out to the listing of node (see syncd_htree_list()). */
static int list_node(json_t **out, const hnode_t *node, size_t level,
                     size_t from, size_t count, syncd_error_t *err)
{
    char hex[SYNCD_HASH_HEX_LEN + 1];
    json_t *o, *items;
    size_t n;

    syncd_hash_hex(hex, node->hash);
    o = json_pack("{s:s, s:s}", "type", kind_of(node), "hash", hex);
    if (o == NULL)
        goto nomem;
    if (!is_container(node)) {
        *out = o;
        return 0;
    }
    if (level == SYNCD_HTREE_TOP)
        level = node->nlv - 1;
    if (level >= node->nlv || from > node->lv[level].n) {
        json_decref(o);
        return syncd_error_set(err, SYNCD_EINVAL,
                               "level %zu item %zu is past the value's chunk "
                               "tree (%zu levels)",
                               level, from, node->nlv);
    }
    n = node->lv[level].n - from;
    if (count < n)
        n = count;
    if (n > SYNCD_HTREE_LIST_MAX)
        n = SYNCD_HTREE_LIST_MAX;
    items = json_array();
    if (items == NULL || json_object_set_new(o, "items", items) != 0 ||
        json_object_set_new(o, "size",
                            json_integer((json_int_t)node_size(node))) ||
        json_object_set_new(o, "levels", json_integer((json_int_t)node->nlv)) ||
        json_object_set_new(o, "level", json_integer((json_int_t)level)) ||
        json_object_set_new(o, "from", json_integer((json_int_t)from)))
        goto nomem_o;
    if (level > 0 &&
        (json_object_set_new(
             o, "child_start",
             json_integer(
                 from == 0 ? 0
                           : (json_int_t)node->lv[level - 1].end[from - 1])) ||
         json_object_set_new(
             o, "entry_start",
             json_integer(from == 0
                              ? 0
                              : (json_int_t)entry_end(node, level, from - 1)))))
        goto nomem_o;
    for (size_t i = from; i < from + n; i++)
        if (json_array_append_new(items, list_item(node, level, i)) != 0)
            goto nomem_o;
    *out = o;
    return 0;
nomem_o:
    json_decref(o);
nomem:
    return syncd_error_set(err, SYNCD_ENOMEM, "out of memory listing hashes");
}

int syncd_htree_list_tree(json_t **out, const syncd_htree_t *t,
                          const char *path, size_t path_len, size_t level,
                          size_t from, size_t count, syncd_error_t *err)
{
    syncd_ptr_t *ptr = NULL;
    const hnode_t *at = t->root;
    json_t *pj;
    int rc;

    *out = NULL;
    rc = syncd_ptr_parse_n(&ptr, path, path_len, err);
    for (size_t i = 0; rc == 0 && i < syncd_ptr_count(ptr); i++) {
        size_t len, idx;
        const char *tok = syncd_ptr_token(ptr, i, &len), *why;

        if (at->type == JSON_OBJECT
                ? !member_find(at, tok, len, &idx)
                : at->type != JSON_ARRAY ||
                      syncd_ptr_array_index(&idx, tok, len, node_size(at), 0,
                                            &why) != 0)
            rc = syncd_error_set(err, SYNCD_ENOTFOUND,
                                 "the path names no value at token %zu", i);
        else
            at = at->ent[idx].child;
    }
    if (rc == 0)
        rc = list_node(out, at, level, from, count, err);
    if (rc == 0 && ((pj = json_stringn(path, path_len)) == NULL ||
                    json_object_set_new(*out, "path", pj) != 0)) {
        json_decref(*out);
        *out = NULL;
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory listing hashes");
    }
    syncd_ptr_free(ptr);
    return rc;
}

int syncd_htree_list(json_t **out, const json_t *doc, const char *path,
                     size_t path_len, size_t level, size_t from, size_t count,
                     syncd_error_t *err)
{
    syncd_htree_t t = {NULL, 0};
    syncd_ptr_t *ptr = NULL;
    json_t *v = NULL;
    int rc;

    *out = NULL;
    rc = syncd_ptr_parse_n(&ptr, path, path_len, err);
    if (rc == 0)
        rc = syncd_ptr_get(&v, (json_t *)doc, ptr, err);
    if (rc == 0)
        rc = syncd_json_check_depth(v, SYNCD_EINVAL, "value", err);
    if (rc == 0 && node_build(&t, &t.root, v) < 0)
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory listing hashes");
    if (rc == 0)
        rc = syncd_htree_list_tree(out, &t, "", 0, level, from, count, err);
    if (rc == 0 &&
        json_object_set_new(*out, "path", json_stringn(path, path_len)) != 0) {
        json_decref(*out);
        *out = NULL;
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory listing hashes");
    }
    node_free(t.root);
    syncd_ptr_free(ptr);
    return rc;
}
