/* narrow.c - where two copies of a document differ, from hash listings.
 *
 * syncd_htree_narrow() compares two parties' copies of one document
 * without either shipping it: it asks each for hash listings
 * (syncd_htree_list(), served remotely by GET .../docs/{id}/hashes) and
 * descends only into what differs, as doc/HASH.md "Narrowing" specifies:
 *
 * - Two values with equal hashes are equal and are not looked into. A
 *   value whose type differs between the copies, or a scalar, is reported.
 * - An object's chunks (and, at level 0, its members as key and value
 *   hash) are matched by hash between the two copies; what matches is
 *   dropped, what does not is expanded a level down (the highest level
 *   first), until only members are left. A key on one side only is
 *   reported; a key on both descends.
 * - An array's common prefix and common suffix of elements are found by
 *   descending from each end: equal chunks are skipped whole, the first
 *   differing pair is expanded. The suffix is clamped so that the two do
 *   not overlap on the shorter array. When what is left between them has
 *   the same length on both sides its elements are compared pairwise;
 *   otherwise (elements were added or removed) each of its indices, up to
 *   the longer side's, is reported.
 *
 * So one change costs O(depth) listings of at most one chunk or so each,
 * not the document. Everything here is pure: the I/O is the callers'
 * fetch functions.
 */
#include <stdlib.h>
#include <string.h>

#include "patch/internal.h"

/* Returned internally once max_paths paths were found and one more. */
#define STOP 1

/* One listed item: a chunk (level > 0) or an entry (level 0). */
typedef struct item {
    size_t level;
    const char *hash; /* hex, borrowed from a listing */
    const char *key;  /* objects, level 0: the member's key (klen bytes) */
    size_t klen;
    char kind;                 /* level 0: 'o', 'a' or 's' (scalar) */
    size_t child_lo, child_hi; /* level > 0: its items in level - 1 */
    size_t entry_lo, entry_hi; /* the entries (level 0) it covers */
} item_t;

typedef struct items {
    item_t *v;
    size_t n, cap;
} items_t;

typedef struct party {
    syncd_htree_fetch_fn fetch;
    void *arg;
} party_t;

typedef struct ctx {
    party_t side[2];
    json_t *paths;
    size_t max_paths;
    int truncated;
    syncd_buf_t path; /* the pointer being walked */
    json_t *held;     /* listings the items borrow from */
    syncd_error_t *err;
} ctx_t;

static int malformed(ctx_t *c, const char *what)
{
    return syncd_error_set(c->err, SYNCD_EINVAL,
                           "a hash listing is malformed: %s", what);
}

static int nomem(ctx_t *c)
{
    return syncd_error_set(c->err, SYNCD_ENOMEM,
                           "out of memory narrowing a difference");
}

/* Records the current path; STOP once there is one more than max_paths. */
static int report(ctx_t *c)
{
    json_t *p;

    if (json_array_size(c->paths) == c->max_paths) {
        c->truncated = 1;
        return STOP;
    }
    p = json_stringn(c->path.data != NULL ? c->path.data : "", c->path.len);
    if (p == NULL || json_array_append_new(c->paths, p) != 0)
        return nomem(c);
    return 0;
}

static int push_key(ctx_t *c, const char *key, size_t klen)
{
    if (syncd_buf_putc(&c->path, '/') < 0 ||
        syncd_ptr_append_escaped(&c->path, key, klen) < 0)
        return nomem(c);
    return 0;
}

static int push_index(ctx_t *c, size_t i)
{
    return syncd_buf_printf(&c->path, "/%zu", i) < 0 ? nomem(c) : 0;
}

static size_t uint_of(const json_t *v, int *bad)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        *bad = 1;
        return 0;
    }
    return (size_t)json_integer_value(v);
}

static int is_hex_hash(const json_t *v)
{
    return json_is_string(v) && json_string_length(v) == SYNCD_HASH_HEX_LEN;
}

/* Asks side s for level `level` items [from, from + count) of the value at
 * the current path; *out is the listing (borrowed: held in c->held). */
static int fetch(ctx_t *c, int s, size_t level, size_t from, size_t count,
                 json_t **out)
{
    json_t *l = NULL;
    int rc = c->side[s].fetch(&l, c->path.data != NULL ? c->path.data : "",
                              c->path.len, level, from, count, c->side[s].arg,
                              c->err);

    *out = NULL;
    if (rc < 0) {
        json_decref(l);
        return rc;
    }
    if (!json_is_object(l) || !is_hex_hash(json_object_get(l, "hash")) ||
        !json_is_string(json_object_get(l, "type"))) {
        json_decref(l);
        return malformed(c, "no type or hash");
    }
    if (json_array_append_new(c->held, l) != 0)
        return nomem(c);
    *out = l;
    return 0;
}

static int items_add(ctx_t *c, items_t *it, const item_t *x)
{
    void *p = syncd_array_reserve(it->v, &it->cap, it->n + 1, sizeof(*it->v));

    if (p == NULL)
        return nomem(c);
    it->v = p;
    it->v[it->n++] = *x;
    return 0;
}

/* Reads the items of listing l (of a container of kind `kind`, level
 * `level`, which must list exactly `want` items from `from`) into *x, one
 * per call through items_add() into it, at position `at` (the rest moved
 * up). */
static int read_items(ctx_t *c, items_t *it, size_t at, const json_t *l,
                      char kind, size_t level, size_t from, size_t want)
{
    const json_t *items = json_object_get(l, "items");
    size_t n = json_array_size(items), child, entry, i, tail = it->n - at;
    int bad = 0;
    json_t *e;

    if (!json_is_array(items) || n != want ||
        uint_of(json_object_get(l, "level"), &bad) != level ||
        uint_of(json_object_get(l, "from"), &bad) != from || bad)
        return malformed(c, "not the items asked for");
    child = level > 0 ? uint_of(json_object_get(l, "child_start"), &bad) : 0;
    entry = level > 0 ? uint_of(json_object_get(l, "entry_start"), &bad) : from;
    if (bad)
        return malformed(c, "a chunk level without its starts");
    json_array_foreach (items, i, e) {
        item_t x = {level, NULL, "", 0, 0, 0, 0, 0, 0};
        size_t h = kind == 'o' && level == 0 ? 1 : 0;

        if (!json_is_array(e) || !is_hex_hash(json_array_get(e, h)))
            return malformed(c, "an item without a hash");
        x.hash = json_string_value(json_array_get(e, h));
        if (level > 0) {
            x.child_lo = child;
            x.child_hi = uint_of(json_array_get(e, 1), &bad);
            x.entry_lo = entry;
            x.entry_hi = uint_of(json_array_get(e, 2), &bad);
            if (bad || x.child_hi <= x.child_lo || x.entry_hi <= x.entry_lo)
                return malformed(c, "a chunk covering nothing");
            child = x.child_hi;
            entry = x.entry_hi;
        } else {
            const char *k = json_string_value(json_array_get(e, h + 1));

            if (k == NULL || (k[0] != 'o' && k[0] != 'a' && k[0] != 's'))
                return malformed(c, "an entry without a kind");
            x.kind = k[0];
            x.entry_lo = entry;
            x.entry_hi = ++entry;
            if (kind == 'o') {
                if (!json_is_string(json_array_get(e, 0)))
                    return malformed(c, "a member without a key");
                x.key = json_string_value(json_array_get(e, 0));
                x.klen = json_string_length(json_array_get(e, 0));
            }
        }
        if (items_add(c, it, &x) < 0)
            return SYNCD_ENOMEM;
    }
    /* Move the tail that was at `at` after the new items. */
    if (tail > 0 && n > 0) {
        item_t *tmp = malloc(tail * sizeof(*tmp));

        if (tmp == NULL)
            return nomem(c);
        memcpy(tmp, it->v + at, tail * sizeof(*tmp));
        memmove(it->v + at, it->v + at + tail, n * sizeof(*tmp));
        memcpy(it->v + at + n, tmp, tail * sizeof(*tmp));
        free(tmp);
    }
    return 0;
}

/* Inserts at `at` of it the items of level `level` in [lo, hi) of side s's
 * value at the current path (a container of kind `kind`). */
static int fetch_range(ctx_t *c, int s, items_t *it, size_t at, char kind,
                       size_t level, size_t lo, size_t hi)
{
    while (lo < hi) {
        size_t n =
            hi - lo < SYNCD_HTREE_LIST_MAX ? hi - lo : SYNCD_HTREE_LIST_MAX;
        json_t *l;
        int rc = fetch(c, s, level, lo, n, &l);

        if (rc == 0)
            rc = read_items(c, it, at, l, kind, level, lo, n);
        if (rc < 0)
            return rc;
        at += n;
        lo += n;
    }
    return 0;
}

/* Replaces item i of it (level > 0) by its children; side s. */
static int expand(ctx_t *c, int s, items_t *it, size_t i, char kind)
{
    item_t x = it->v[i];

    memmove(it->v + i, it->v + i + 1, (it->n - i - 1) * sizeof(*it->v));
    it->n--;
    return fetch_range(c, s, it, i, kind, x.level - 1, x.child_lo, x.child_hi);
}

static int walk_value(ctx_t *c, char kind, const json_t *top[2]);

/* Descends into the value at the current path, whose kinds and hashes
 * (from its parent's listings) differ: reports it unless both are
 * containers of the same kind. */
static int descend(ctx_t *c, const item_t *a, const item_t *b)
{
    const json_t *top[2];
    json_t *l;
    int rc;

    if (strcmp(a->hash, b->hash) == 0)
        return 0;
    if (a->kind != b->kind || a->kind == 's')
        return report(c);
    for (int s = 0; s < 2; s++) {
        rc = fetch(c, s, SYNCD_HTREE_TOP, 0, SYNCD_HASH_FLAT_MAX, &l);
        if (rc < 0)
            return rc;
        top[s] = l;
    }
    return walk_value(c, a->kind, top);
}

/* Orders object items by level, hash, then key: equal means the same. */
static int item_cmp(const void *pa, const void *pb)
{
    const item_t *a = pa, *b = pb;
    int d;

    if (a->level != b->level)
        return a->level < b->level ? -1 : 1;
    d = strcmp(a->hash, b->hash);
    if (d != 0)
        return d;
    return syncd_key_cmp(a->key, a->klen, b->key, b->klen);
}

static int key_cmp(const void *pa, const void *pb)
{
    const item_t *a = pa, *b = pb;

    return syncd_key_cmp(a->key, a->klen, b->key, b->klen);
}

static void sort_items(items_t *it, int (*cmp)(const void *, const void *))
{
    if (it->n > 1)
        qsort(it->v, it->n, sizeof(*it->v), cmp);
}

/* Drops from both lists the items the other list holds too. */
static void drop_matched(items_t it[2])
{
    size_t i = 0, j = 0, ni = 0, nj = 0;

    sort_items(&it[0], item_cmp);
    sort_items(&it[1], item_cmp);
    while (i < it[0].n || j < it[1].n) {
        int d = i == it[0].n   ? 1
                : j == it[1].n ? -1
                               : item_cmp(&it[0].v[i], &it[1].v[j]);

        if (d < 0)
            it[0].v[ni++] = it[0].v[i++];
        else if (d > 0)
            it[1].v[nj++] = it[1].v[j++];
        else
            i++, j++;
    }
    it[0].n = ni;
    it[1].n = nj;
}

/* Reads the items of both sides' top listings (of kind 'o' or 'a') into
 * it[0] and it[1]. */
static int read_tops(ctx_t *c, items_t it[2], const json_t *top[2], char kind)
{
    int rc = 0;

    for (int s = 0; s < 2 && rc == 0; s++) {
        int bad = 0;
        size_t lv = uint_of(json_object_get(top[s], "level"), &bad);

        rc =
            bad ? malformed(c, "no level")
                : read_items(c, &it[s], 0, top[s], kind, lv, 0,
                             json_array_size(json_object_get(top[s], "items")));
    }
    return rc;
}

/* Walks two objects' listings (tops): matches chunks and members by hash,
 * expanding what does not match, then compares the members left by key. */
static int walk_object(ctx_t *c, const json_t *top[2])
{
    items_t it[2] = {{NULL, 0, 0}, {NULL, 0, 0}};
    size_t mark = c->path.len, i, j;
    int rc = 0;

    rc = read_tops(c, it, top, 'o');
    while (rc == 0) {
        size_t level = 0;

        drop_matched(it);
        for (int s = 0; s < 2; s++)
            for (i = 0; i < it[s].n; i++)
                if (it[s].v[i].level > level)
                    level = it[s].v[i].level;
        if (level == 0)
            break;
        for (int s = 0; s < 2 && rc == 0; s++)
            for (i = it[s].n; i-- > 0 && rc == 0;)
                if (it[s].v[i].level == level)
                    rc = expand(c, s, &it[s], i, 'o');
    }
    if (rc == 0) {
        sort_items(&it[0], key_cmp);
        sort_items(&it[1], key_cmp);
    }
    for (i = 0, j = 0; rc == 0 && (i < it[0].n || j < it[1].n);) {
        int d = i == it[0].n   ? 1
                : j == it[1].n ? -1
                               : key_cmp(&it[0].v[i], &it[1].v[j]);
        const item_t *x = d <= 0 ? &it[0].v[i] : &it[1].v[j];

        rc = push_key(c, x->key, x->klen);
        if (rc == 0)
            rc = d == 0 ? descend(c, &it[0].v[i], &it[1].v[j]) : report(c);
        syncd_buf_truncate(&c->path, mark);
        i += d <= 0;
        j += d >= 0;
    }
    free(it[0].v);
    free(it[1].v);
    return rc;
}

/* Sets *common to the number of entries the two arrays' listed items have
 * in common from the front (back 0) or from the back (back 1), descending
 * into the first pair of items that differ. */
static int common_run(ctx_t *c, const json_t *top[2], int back, size_t size[2],
                      size_t *common)
{
    items_t it[2] = {{NULL, 0, 0}, {NULL, 0, 0}};
    int rc = 0;

    *common = 0;
    rc = read_tops(c, it, top, 'a');
    while (rc == 0 && it[0].n > 0 && it[1].n > 0) {
        size_t i = back ? it[0].n - 1 : 0, j = back ? it[1].n - 1 : 0;
        const item_t *a = &it[0].v[i], *b = &it[1].v[j];
        size_t la, lb;

        if (a->level == b->level && strcmp(a->hash, b->hash) == 0) {
            *common = back ? size[0] - a->entry_lo : a->entry_hi;
            if (back) {
                it[0].n--;
                it[1].n--;
            } else {
                memmove(it[0].v, it[0].v + 1, --it[0].n * sizeof(item_t));
                memmove(it[1].v, it[1].v + 1, --it[1].n * sizeof(item_t));
            }
            continue;
        }
        la = a->level;
        lb = b->level;
        if (la == 0 && lb == 0)
            break;
        if (la >= lb)
            rc = expand(c, 0, &it[0], i, 'a');
        if (rc == 0 && lb >= la)
            rc = expand(c, 1, &it[1], j, 'a');
    }
    free(it[0].v);
    free(it[1].v);
    return rc;
}

/* Walks two arrays' listings (tops): the common prefix and suffix, then
 * what is between them. */
static int walk_array(ctx_t *c, const json_t *top[2])
{
    size_t size[2], p, s, m[2], mark = c->path.len;
    items_t it[2] = {{NULL, 0, 0}, {NULL, 0, 0}};
    int bad = 0, rc;

    size[0] = uint_of(json_object_get(top[0], "size"), &bad);
    size[1] = uint_of(json_object_get(top[1], "size"), &bad);
    if (bad)
        return malformed(c, "an array without a size");
    rc = common_run(c, top, 0, size, &p);
    if (rc == 0)
        rc = common_run(c, top, 1, size, &s);
    if (rc < 0)
        return rc;
    if (p > size[0] || p > size[1])
        return malformed(c, "entries past the array's size");
    if (s > size[0] - p)
        s = size[0] - p;
    if (s > size[1] - p)
        s = size[1] - p;
    m[0] = size[0] - p - s;
    m[1] = size[1] - p - s;
    if (m[0] != m[1]) {
        size_t n = m[0] > m[1] ? m[0] : m[1];

        for (size_t i = p; i < p + n && rc == 0; i++) {
            rc = push_index(c, i);
            if (rc == 0)
                rc = report(c);
            syncd_buf_truncate(&c->path, mark);
        }
        return rc;
    }
    for (size_t lo = p; lo < p + m[0] && rc == 0;) {
        size_t hi = p + m[0] - lo > SYNCD_HTREE_LIST_MAX
                        ? lo + SYNCD_HTREE_LIST_MAX
                        : p + m[0];

        it[0].n = it[1].n = 0;
        rc = fetch_range(c, 0, &it[0], 0, 'a', 0, lo, hi);
        if (rc == 0)
            rc = fetch_range(c, 1, &it[1], 0, 'a', 0, lo, hi);
        for (size_t i = 0; rc == 0 && i < hi - lo; i++) {
            if (strcmp(it[0].v[i].hash, it[1].v[i].hash) == 0)
                continue;
            rc = push_index(c, lo + i);
            if (rc == 0)
                rc = descend(c, &it[0].v[i], &it[1].v[i]);
            syncd_buf_truncate(&c->path, mark);
        }
        lo = hi;
    }
    free(it[0].v);
    free(it[1].v);
    return rc;
}

/* Walks two containers of the same kind from their top listings. */
static int walk_value(ctx_t *c, char kind, const json_t *top[2])
{
    if (!json_is_array(json_object_get(top[0], "items")) ||
        !json_is_array(json_object_get(top[1], "items")))
        return malformed(c, "a container without items");
    return kind == 'o' ? walk_object(c, top) : walk_array(c, top);
}

int syncd_htree_narrow(json_t **out, int *truncated, syncd_htree_fetch_fn fa,
                       void *a, syncd_htree_fetch_fn fb, void *b,
                       size_t max_paths, syncd_error_t *err)
{
    ctx_t c = {{{fa, a}, {fb, b}}, json_array(), max_paths, 0, {0},
               json_array(),       err};
    const json_t *top[2];
    item_t x[2];
    int rc = 0;

    *out = NULL;
    *truncated = 0;
    if (c.paths == NULL || c.held == NULL)
        rc = nomem(&c);
    for (int s = 0; s < 2 && rc == 0; s++) {
        json_t *l;

        rc = fetch(&c, s, SYNCD_HTREE_TOP, 0, SYNCD_HASH_FLAT_MAX, &l);
        if (rc == 0) {
            const char *k = json_string_value(json_object_get(l, "type"));

            top[s] = l;
            memset(&x[s], 0, sizeof(x[s]));
            x[s].hash = json_string_value(json_object_get(l, "hash"));
            x[s].kind = k[0];
        }
    }
    if (rc == 0 && strcmp(x[0].hash, x[1].hash) != 0) {
        if (x[0].kind != x[1].kind || (x[0].kind != 'o' && x[0].kind != 'a'))
            rc = report(&c);
        else
            rc = walk_value(&c, x[0].kind, top);
    }
    json_decref(c.held);
    syncd_buf_free(&c.path);
    if (rc < 0) {
        json_decref(c.paths);
        return rc;
    }
    *truncated = c.truncated;
    *out = c.paths;
    return 0;
}
