/* touched.c - the diffs of a JSON Patch edit, from the subtrees it touched.
 *
 * When b is the result of applying a JSON Patch to a, the patch names every
 * place where b can differ from a, so the RFC 6902 and RFC 7396 diffs of
 * the edit need compare only those places, not the whole documents. The
 * patch a diff makes names them too: the merge patch of any change can be
 * derived from its RFC 6902 diff this way, without a second walk.
 *
 * Each operation touches a root: its path (and a move's from); when that
 * location is an array element that may shift the elements after it (an
 * add, a remove, either side of a move, a copy's target) the root is the
 * array. An element index is recognised by its token alone (digits or
 * "-"), so an object member whose name is all digits counts as an element
 * too: its object is compared instead, which is only more work. `test`
 * touches nothing. The roots are sorted and every one inside another is
 * dropped, which leaves disjoint roots. A root names the same location in
 * a and b: an object member's path never moves, and an element path below
 * an array is dropped whenever an operation shifted that array (the array
 * is then a root itself). Outside the roots a and b are equal, so:
 * - the JSON Patch is, root by root, the diff of a's value there into b's
 *   (an add when a has none, a remove when b has none), each at its root;
 *   roots are disjoint and shift nothing, so their order does not matter;
 * - the merge patch (syncd_merge_diff_touched()) nests objects along each
 * root's path for as long as both documents hold objects there, and sets at the
 * first place where one does not (an array, a scalar, a missing member), or at
 * the root, the merge diff of the two values: exactly what syncd_merge_diff()
 * of the whole documents makes, in the same shape.
 */
#include <stdlib.h>
#include <string.h>

#include "patch/internal.h"

/* One root: an escaped JSON Pointer (len bytes, inside a patch's path
 * string, so it may hold NUL bytes). */
typedef struct root {
    const char *path;
    size_t len;
} root_t;

/* Returns 1 when token (escaped, len bytes) can be an array index. */
static int index_like(const char *token, size_t len)
{
    if (len == 1 && token[0] == '-')
        return 1;
    for (size_t i = 0; i < len; i++) {
        if (token[i] < '0' || token[i] > '9')
            return 0;
    }
    return len > 0;
}

/* Adds the root of the pointer p (len bytes) to roots: p, or its parent
 * when p may be a shifting array element (shifts set). */
static void add_root(root_t *roots, size_t *n, const char *p, size_t len,
                     int shifts)
{
    size_t slash = len;

    while (slash > 0 && p[slash - 1] != '/')
        slash--;
    if (shifts && slash > 0 && index_like(p + slash, len - slash))
        len = slash - 1;
    roots[*n].path = p;
    roots[(*n)++].len = len;
}

/* Byte order with '/' below every byte, so that a pointer's descendants
 * sort right after it. */
static int compare_roots(const void *x, const void *y)
{
    const root_t *a = x, *b = y;
    size_t n = a->len < b->len ? a->len : b->len;

    for (size_t i = 0; i < n; i++) {
        int ca = a->path[i] == '/' ? -1 : (unsigned char)a->path[i];
        int cb = b->path[i] == '/' ? -1 : (unsigned char)b->path[i];

        if (ca != cb)
            return ca - cb;
    }
    return (a->len > b->len) - (a->len < b->len);
}

/* Returns 1 when r is inside (or is) the location of anc. */
static int inside(const root_t *anc, const root_t *r)
{
    return r->len >= anc->len && memcmp(r->path, anc->path, anc->len) == 0 &&
           (r->len == anc->len || r->path[anc->len] == '/');
}

/* Collects the disjoint roots of patch (validated, already applied) into
 * a new array *out of *n roots, sorted. */
static int collect_roots(root_t **out, size_t *n, const json_t *patch,
                         syncd_error_t *err)
{
    size_t i, kept = 0;
    json_t *op;
    root_t *roots = malloc((2 * json_array_size(patch) + 1) * sizeof(*roots));

    *out = NULL;
    *n = 0;
    if (roots == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    json_array_foreach (patch, i, op) {
        const char *name = json_string_value(json_object_get(op, "op"));
        json_t *path = json_object_get(op, "path");
        json_t *from = json_object_get(op, "from");

        if (strcmp(name, "test") == 0)
            continue;
        add_root(roots, n, json_string_value(path), json_string_length(path),
                 strcmp(name, "replace") != 0);
        if (strcmp(name, "move") == 0)
            add_root(roots, n, json_string_value(from),
                     json_string_length(from), 1);
    }
    qsort(roots, *n, sizeof(*roots), compare_roots);
    for (i = 0; i < *n; i++) {
        if (kept == 0 || !inside(&roots[kept - 1], &roots[i]))
            roots[kept++] = roots[i];
    }
    *n = kept;
    *out = roots;
    return 0;
}

/* Resolves root r in doc into *out (borrowed; NULL when absent) and its
 * token count into *depth. */
static int resolve(json_t **out, size_t *depth, const json_t *doc,
                   const root_t *r, syncd_ptr_t **ptr, syncd_error_t *err)
{
    const char *why;
    size_t at;
    int rc = *ptr != NULL ? 0 : syncd_ptr_parse_n(ptr, r->path, r->len, err);

    *out = NULL;
    if (rc != 0)
        return rc;
    *depth = syncd_ptr_count(*ptr);
    if (syncd_ptr_walk(out, (json_t *)doc, *ptr, *depth, &why, &at) < 0)
        *out = NULL;
    return 0;
}

/* Appends the RFC 6902 diff of root r to ops. */
static int patch_root(json_t *ops, const json_t *a, const json_t *b,
                      const root_t *r, syncd_error_t *err)
{
    syncd_ptr_t *ptr = NULL;
    json_t *va, *vb;
    size_t depth = 0;
    int rc = resolve(&va, &depth, a, r, &ptr, err);

    if (rc == 0)
        rc = resolve(&vb, &depth, b, r, &ptr, err);
    if (rc == 0 && (va != NULL || vb != NULL))
        rc = syncd_patch_diff_at(ops, r->path, r->len, va, vb, (int)depth, err);
    syncd_ptr_free(ptr);
    return rc;
}

/* The merge patch being built: its root, and the objects it nested along
 * the roots' paths (to drop those left empty). */
typedef struct merger {
    json_t *merge;
    json_t *nested; /* [[parent, key]] of each nested object, in order;
                       NULL until the first */
    int inexpressible;
    syncd_error_t *err;
} merger_t;

/* Sets member key (len bytes) of node to the merge diff of va into vb
 * (either may be NULL: absent), unless node has it already. */
static int merge_set(merger_t *m, json_t *node, const char *key, size_t len,
                     const json_t *va, const json_t *vb)
{
    json_t *sub = NULL;
    syncd_error_t merr;
    int rc;

    if (json_object_getn(node, key, len) != NULL || (va == NULL && vb == NULL))
        return 0;
    if (vb == NULL) {
        sub = json_null();
    } else if (va != NULL && syncd_json_values_equal(va, vb, 0)) {
        return 0;
    } else if (json_is_null(vb)) {
        m->inexpressible = 1;
        return 0;
    } else {
        syncd_error_clear(&merr);
        rc = syncd_merge_diff(&sub, va != NULL ? va : json_null(), vb, &merr);
        if (rc == SYNCD_EPATCH) {
            m->inexpressible = 1;
            return 0;
        }
        if (rc != 0)
            return syncd_error_set(m->err, rc, "%s", merr.message);
    }
    if (json_object_setn_new_nocheck(node, key, len, sub) < 0)
        return syncd_error_set(m->err, SYNCD_ENOMEM, "out of memory");
    return 0;
}

/* Adds root r's part to the merge patch. */
static int merge_root(merger_t *m, const json_t *a, const json_t *b,
                      const root_t *r)
{
    syncd_ptr_t *ptr = NULL;
    json_t *node = m->merge;
    const json_t *ca = a, *cb = b;
    int rc = syncd_ptr_parse_n(&ptr, r->path, r->len, m->err);
    size_t count = rc == 0 ? syncd_ptr_count(ptr) : 0;

    for (size_t i = 0; rc == 0 && i < count && !m->inexpressible; i++) {
        size_t len;
        const char *key = syncd_ptr_token(ptr, i, &len);
        json_t *na = json_object_getn(ca, key, len);
        json_t *nb = json_object_getn(cb, key, len);
        json_t *child;

        if (i + 1 == count || !json_is_object(na) || !json_is_object(nb)) {
            rc = merge_set(m, node, key, len, na, nb);
            break;
        }
        child = json_object_getn(node, key, len);
        if (child == NULL) {
            if (m->nested == NULL)
                m->nested = json_array();
            child = m->nested != NULL ? json_object() : NULL;
            if (child == NULL ||
                json_object_setn_new_nocheck(node, key, len, child) < 0 ||
                json_array_append_new(m->nested,
                                      json_pack("[O, s%]", node, key, len)) < 0)
                rc = syncd_error_set(m->err, SYNCD_ENOMEM, "out of memory");
        }
        node = child;
        ca = na;
        cb = nb;
    }
    syncd_ptr_free(ptr);
    return rc;
}

/* Drops the nested objects left empty, innermost first. */
static void prune(merger_t *m)
{
    for (size_t i = json_array_size(m->nested); i-- > 0;) {
        json_t *entry = json_array_get(m->nested, i);
        json_t *parent = json_array_get(entry, 0);
        json_t *key = json_array_get(entry, 1);
        const char *k = json_string_value(key);
        size_t len = json_string_length(key);

        if (json_object_size(json_object_getn(parent, k, len)) == 0)
            json_object_deln(parent, k, len);
    }
}

/* Sets m's merge patch to syncd_merge_diff() of a and b (or flags it
 * inexpressible). */
static int merge_whole(merger_t *m, const json_t *a, const json_t *b)
{
    syncd_error_t merr;
    int rc;

    syncd_error_clear(&merr);
    rc = syncd_merge_diff(&m->merge, a, b, &merr);
    if (rc == SYNCD_EPATCH)
        m->inexpressible = 1;
    else if (rc != 0)
        return syncd_error_set(m->err, rc, "%s", merr.message);
    return 0;
}

/* The merge patch of the roots into *merge (NULL when inexpressible). */
static int merge_roots(json_t **merge, const json_t *a, const json_t *b,
                       const root_t *roots, size_t n, syncd_error_t *err)
{
    merger_t m = {json_object(), NULL, 0, err};
    int rc = m.merge != NULL
                 ? 0
                 : syncd_error_set(err, SYNCD_ENOMEM, "out of memory");

    if (rc == 0 && ((n == 1 && roots[0].len == 0) || !json_is_object(a) ||
                    !json_is_object(b))) {
        /* The whole document, or one that is not an object (replaced
         * whole by a merge patch): nothing to narrow. */
        json_decref(m.merge);
        m.merge = NULL;
        rc = merge_whole(&m, a, b);
    }
    for (size_t i = 0; rc == 0 && m.merge != NULL && i < n && !m.inexpressible;
         i++)
        rc = merge_root(&m, a, b, &roots[i]);
    if (rc == 0 && !m.inexpressible && m.merge != NULL) {
        prune(&m);
        *merge = m.merge;
        m.merge = NULL;
    }
    json_decref(m.nested);
    json_decref(m.merge);
    return rc;
}

int syncd_patch_diff_touched(json_t **patch, const json_t *a, const json_t *b,
                             const json_t *applied, syncd_error_t *err)
{
    root_t *roots = NULL;
    size_t n = 0;
    int rc;

    *patch = NULL;
    rc = collect_roots(&roots, &n, applied, err);
    if (rc == 0 && (*patch = json_array()) == NULL)
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = patch_root(*patch, a, b, &roots[i], err);
    free(roots);
    if (rc != 0) {
        json_decref(*patch);
        *patch = NULL;
    }
    return rc;
}

int syncd_merge_diff_touched(json_t **merge, const json_t *a, const json_t *b,
                             const json_t *applied, syncd_error_t *err)
{
    root_t *roots = NULL;
    size_t n = 0;
    int rc;

    *merge = NULL;
    rc = collect_roots(&roots, &n, applied, err);
    if (rc == 0)
        rc = merge_roots(merge, a, b, roots, n, err);
    free(roots);
    return rc;
}
