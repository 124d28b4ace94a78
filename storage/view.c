/* view.c - ranged digests and verification of a node's view.
 *
 * A node's view of a collection is what it serves: a fresh cache entry
 * where it has one (a cached tombstone hides the id), else the store of
 * record's live document. Both are walked in id order, a bounded page at a
 * time, by merging two sorted streams (the store's listing and the cache's
 * pages), so a digest or a check of any range costs memory independent of
 * the collection's size. The digest itself is built streaming
 * (syncd_merkle_*, digest.c), byte for byte the construction of
 * syncd_digest_entries().
 *
 * Ranged digests let a client narrow a mismatch between two views down to
 * ids with O(differences x log n) requests: split a differing range at its
 * split id and compare the halves, until a range is small enough to list.
 * Verification walks the whole collection once, comparing each cached
 * entry with the store's and rehashing each body the node serves from
 * itself, which finds a record changed behind the node's back while its
 * stored version and hash stayed the same.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Entries per page read from the store or the cache. */
#define VIEW_PAGE 1000

/* Most split marks: one per power of two up to 2^63. */
#define MARKS 64

/* One sorted stream of entries: the store's live documents or the cache's
 * fresh entries (tombstones included), read a page at a time. */
typedef struct stream {
    int cache;
    const char *until; /* NULL: to the end */
    json_t *page;
    size_t pos;
    char *after; /* the last id read, NULL at the start */
    int last;    /* no page follows the one held */
} stream_t;

/* Visits one id of the merged walk: its store entry and its cache entry
 * (either NULL, not both). */
typedef int (*visit_fn)(void *arg, const char *id, const json_t *stored,
                        const json_t *cached, syncd_error_t *err);

static const char *entry_id(const json_t *e)
{
    return json_string_value(json_object_get(e, "id"));
}

static int64_t entry_v(const json_t *e)
{
    return json_integer_value(json_object_get(e, "v"));
}

static const char *entry_h(const json_t *e)
{
    const char *h = json_string_value(json_object_get(e, "h"));

    return h != NULL ? h : "";
}

/* Sets *out to the stream's next entry in range (borrowed, NULL at its
 * end), reading the next page when the held one is used up. */
static int stream_next(syncd_store_t *s, stream_t *st, const char *coll,
                       const json_t **out, syncd_error_t *err)
{
    const json_t *e;

    *out = NULL;
    while (st->pos >= json_array_size(st->page) && !st->last) {
        json_t *page = NULL;
        size_t n;
        int rc = st->cache ? syncd_store_cache_page(s, &page, coll, st->after,
                                                    VIEW_PAGE, err)
                           : syncd_store_list(s, &page, coll, NULL, st->after,
                                              VIEW_PAGE, err);

        if (rc != 0)
            return rc;
        json_decref(st->page);
        st->page = page;
        st->pos = 0;
        n = json_array_size(page);
        st->last = n < VIEW_PAGE;
        if (n > 0) {
            free(st->after);
            st->after = strdup(entry_id(json_array_get(page, n - 1)));
            if (st->after == NULL)
                return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        }
    }
    e = json_array_get(st->page, st->pos);
    if (e != NULL && st->until != NULL && strcmp(entry_id(e), st->until) > 0) {
        st->last = 1;
        st->pos = json_array_size(st->page);
        e = NULL;
    }
    *out = e;
    return 0;
}

/* Checks the collection and the range's ends. */
static int check_range(const char *coll, const char *after, const char *until,
                       syncd_error_t *err)
{
    int rc = syncd_validate_collection(coll, err);

    if (rc == 0 && after != NULL)
        rc = syncd_validate_id(after, err);
    if (rc == 0 && until != NULL)
        rc = syncd_validate_id(until, err);
    if (rc == 0 && after != NULL && until != NULL && strcmp(after, until) >= 0)
        rc = syncd_error_set(err, SYNCD_EINVAL,
                             "the range's after must sort before its until");
    return rc;
}

/* Walks coll's ids in (after, until] in order, merging the store's live
 * documents with the cache's fresh entries when with_cache is set, and
 * calls fn on each id; stops at the first error. */
static int walk(syncd_store_t *s, const char *coll, int with_cache,
                const char *after, const char *until, visit_fn fn, void *arg,
                syncd_error_t *err)
{
    stream_t st = {0, until, NULL, 0, NULL, 0};
    stream_t ca = {1, until, NULL, 0, NULL, !with_cache};
    const json_t *a, *b;
    int rc = 0;

    if (after != NULL && ((st.after = strdup(after)) == NULL ||
                          (ca.after = strdup(after)) == NULL)) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto cleanup;
    }
    for (;;) {
        int c;

        rc = stream_next(s, &st, coll, &a, err);
        if (rc == 0)
            rc = stream_next(s, &ca, coll, &b, err);
        if (rc != 0 || (a == NULL && b == NULL))
            break;
        c = a == NULL ? 1 : b == NULL ? -1 : strcmp(entry_id(a), entry_id(b));
        rc = fn(arg, entry_id(c <= 0 ? a : b), c <= 0 ? a : NULL,
                c >= 0 ? b : NULL, err);
        if (rc != 0)
            break;
        if (c <= 0)
            st.pos++;
        if (c >= 0)
            ca.pos++;
    }
cleanup:
    json_decref(st.page);
    json_decref(ca.page);
    free(st.after);
    free(ca.after);
    return rc;
}

/* The entry the node serves for an id: its cache entry when cached (none
 * for a cached tombstone), else the store's; NULL when it serves none. */
static const json_t *node_entry(const json_t *stored, const json_t *cached)
{
    if (cached == NULL)
        return stored;
    return json_is_true(json_object_get(cached, "del")) ? NULL : cached;
}

/* ---- Ranged digests ----------------------------------------------------- */

typedef struct range_ctx {
    syncd_view_t view;
    syncd_merkle_t m;
    char *marks[MARKS]; /* marks[j]: the id of entry 2^j (1-based) */
    syncd_range_digest_t *out;
    size_t max_entries;
} range_ctx_t;

static int visit_range(void *arg, const char *id, const json_t *stored,
                       const json_t *cached, syncd_error_t *err)
{
    range_ctx_t *r = arg;
    const json_t *e =
        r->view == SYNCD_VIEW_STORE ? stored : node_entry(stored, cached);
    uint64_t n;

    if (e == NULL)
        return 0;
    if (syncd_merkle_add(&r->m, id, entry_v(e), entry_h(e)) != 0)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    n = r->m.count;
    if ((n & (n - 1)) == 0) {
        int j = __builtin_ctzll(n);

        r->marks[j] = strdup(id);
        if (r->marks[j] == NULL)
            return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }
    if (r->out->entries == NULL)
        return 0;
    if (json_array_size(r->out->entries) >= r->max_entries) {
        r->out->truncated = 1;
        return 0;
    }
    if (json_array_append_new(r->out->entries,
                              json_pack("{s:s, s:I, s:s}", "id", id, "v",
                                        (json_int_t)entry_v(e), "h",
                                        entry_h(e))) != 0)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    return 0;
}

void syncd_range_digest_clear(syncd_range_digest_t *rd)
{
    free(rd->split);
    json_decref(rd->entries);
    memset(rd, 0, sizeof(*rd));
}

int syncd_store_digest_range(syncd_store_t *store, syncd_range_digest_t *out,
                             const char *coll, syncd_view_t view,
                             const char *after, const char *until,
                             size_t max_entries, syncd_error_t *err)
{
    range_ctx_t r;
    int rc;

    memset(out, 0, sizeof(*out));
    memset(&r, 0, sizeof(r));
    rc = check_range(coll, after, until, err);
    if (rc == 0 && max_entries > SYNCD_MAX_RANGE_ENTRIES)
        rc = syncd_error_set(err, SYNCD_EINVAL,
                             "a ranged digest lists at most %d entries",
                             SYNCD_MAX_RANGE_ENTRIES);
    if (rc != 0)
        return rc;
    if (max_entries > 0 && (out->entries = json_array()) == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    r.view = view;
    r.out = out;
    r.max_entries = max_entries;
    syncd_merkle_init(&r.m);
    rc = walk(store, coll, view == SYNCD_VIEW_NODE, after, until, visit_range,
              &r, err);
    if (rc == 0) {
        syncd_merkle_final(&r.m, &out->digest);
        if (r.m.count >= 2) {
            /* The largest power of two p with 2p <= count. */
            int j = 62 - __builtin_clzll(r.m.count);

            out->split = r.marks[j];
            r.marks[j] = NULL;
        }
    }
    for (int j = 0; j < MARKS; j++)
        free(r.marks[j]);
    if (rc != 0)
        syncd_range_digest_clear(out);
    return rc;
}

/* ---- Verification ------------------------------------------------------- */

typedef struct verify_ctx {
    syncd_store_t *store;
    const char *coll;
    int cached; /* the store has a node cache (MongoDB mode) */
    int rehash; /* rehash the bodies the node serves from itself */
    syncd_merkle_t node, truth;
    syncd_verify_t *out;
    size_t max_differs;
} verify_ctx_t;

/* Appends a difference of id to the result, or marks it truncated. */
static int add_differ(verify_ctx_t *x, const char *id, const json_t *mine,
                      const json_t *stored, const char *reason,
                      syncd_error_t *err)
{
    json_t *d;

    if (json_array_size(x->out->differs) >= x->max_differs) {
        x->out->truncated = 1;
        return 0;
    }
    d = json_pack("{s:s, s:o, s:o, s:s}", "id", id, "node_v",
                  mine != NULL ? json_integer(entry_v(mine)) : json_null(),
                  "store_v",
                  stored != NULL ? json_integer(entry_v(stored)) : json_null(),
                  "reason", reason);
    if (json_array_append_new(x->out->differs, d) != 0)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    return 0;
}

/* Rehashes the body the node serves for e (its cache's record in MongoDB
 * mode, the store's own record in the embedded default) and sets *bad
 * when it no longer hashes to its stored hash, or when the record can no
 * longer be decoded at all. A record that moved on since e was listed, or
 * went away, is not judged. */
static int check_body(verify_ctx_t *x, const char *id, const json_t *e,
                      int *bad, syncd_error_t *err)
{
    syncd_doc_t *doc = NULL;
    int rc;

    *bad = 0;
    rc = x->cached ? syncd_store_cached(x->store, &doc, x->coll, id, NULL)
                   : syncd_store_get(x->store, &doc, x->coll, id, NULL);
    if (rc == SYNCD_EBACKEND) {
        x->out->bodies++;
        *bad = 1;
        return 0;
    }
    if (rc != 0 || doc->deleted || doc->version != entry_v(e) ||
        strcmp(doc->hash, entry_h(e)) != 0) {
        syncd_doc_free(doc);
        return 0;
    }
    rc = syncd_json_hash_matches(doc->hash, doc->body, err);
    if (rc >= 0) {
        x->out->bodies++;
        *bad = rc == 0;
        rc = 0;
    }
    syncd_doc_free(doc);
    return rc;
}

static int visit_verify(void *arg, const char *id, const json_t *stored,
                        const json_t *cached, syncd_error_t *err)
{
    verify_ctx_t *x = arg;
    const json_t *mine = node_entry(stored, cached);
    const char *reason = NULL;
    int bad = 0;
    int rc;

    if (stored != NULL &&
        syncd_merkle_add(&x->truth, id, entry_v(stored), entry_h(stored)) != 0)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    if (mine != NULL &&
        syncd_merkle_add(&x->node, id, entry_v(mine), entry_h(mine)) != 0)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    if (mine == NULL) {
        if (stored != NULL)
            reason = "missing";
        mine = cached;
    } else if (stored == NULL) {
        reason = "extra";
    } else if (entry_v(mine) != entry_v(stored)) {
        reason = "version";
    } else if (strcmp(entry_h(mine), entry_h(stored)) != 0) {
        reason = "hash";
    } else if (x->rehash && (cached != NULL || !x->cached)) {
        rc = check_body(x, id, mine, &bad, err);
        if (rc != 0)
            return rc;
        if (bad)
            reason = "body";
    }
    return reason != NULL ? add_differ(x, id, mine, stored, reason, err) : 0;
}

void syncd_verify_clear(syncd_verify_t *v)
{
    json_decref(v->differs);
    memset(v, 0, sizeof(*v));
}

int syncd_store_verify(syncd_store_t *store, syncd_verify_t *out,
                       const char *coll, size_t max_differs, syncd_error_t *err)
{
    return syncd_store_verify_ex(store, out, coll, max_differs, 1, err);
}

int syncd_store_verify_ex(syncd_store_t *store, syncd_verify_t *out,
                          const char *coll, size_t max_differs, int rehash,
                          syncd_error_t *err)
{
    verify_ctx_t x;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = check_range(coll, NULL, NULL, err);
    if (rc != 0)
        return rc;
    out->differs = json_array();
    if (out->differs == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    memset(&x, 0, sizeof(x));
    x.store = store;
    x.coll = coll;
    x.cached = strcmp(syncd_store_kind(store), "rocksdb") != 0;
    x.rehash = rehash;
    x.out = out;
    x.max_differs = max_differs;
    syncd_merkle_init(&x.node);
    syncd_merkle_init(&x.truth);
    rc = walk(store, coll, x.cached, NULL, NULL, visit_verify, &x, err);
    if (rc != 0) {
        syncd_verify_clear(out);
        return rc;
    }
    syncd_merkle_final(&x.node, &out->node);
    syncd_merkle_final(&x.truth, &out->store);
    return 0;
}
