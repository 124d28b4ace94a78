/* diff.c - RFC 6902 diff: the patch that turns document a into document b.
 *
 * Objects are compared member by member and changes are reported at the
 * deepest path that changed. Arrays are diffed as sequences: each element
 * is hashed once (syncd_json_value_hash(), independent of member order), the
 * common prefix and suffix are stripped, and Myers' O(ND) greedy algorithm
 * finds a shortest edit script on the middle, comparing hashes and confirming
 * every match with an exact equality check. A removal and an insertion at the
 * same index become one `replace`, or a recursive diff of the element when
 * that is smaller. The search is bounded (edit distance and work): past the
 * bound the array is replaced whole, so diff time stays near-linear.
 * Emitted indexes account for every earlier operation of the patch.
 */
#include <stdlib.h>
#include <string.h>

#include "patch/internal.h"

/* Largest edit distance searched; the trace costs (D + 2)^2 ints, so
 * at most 36 MB. */
#define MAX_EDIT_DISTANCE 3000

/* Work budget of one array search, per element of the searched middle. */
#define WORK_PER_ELEMENT 64

typedef struct differ {
    json_t *ops;
    syncd_buf_t path;
    syncd_error_t *err;
} differ_t;

/* One side of an array diff: the elements and their hashes. */
typedef struct side {
    const json_t *array;
    uint64_t *hash;
    size_t size;
} side_t;

enum { EDIT_DELETE, EDIT_INSERT };

typedef struct edit {
    int kind;
    size_t index; /* into a for a delete, into b for an insert */
} edit_t;

static int diff_value(differ_t *d, const json_t *a, const json_t *b, int depth);

static int nomem(differ_t *d)
{
    return syncd_error_set(d->err, SYNCD_ENOMEM, "out of memory diffing");
}

static int too_deep(differ_t *d)
{
    return syncd_error_set(d->err, SYNCD_EINVAL,
                           "a document nests deeper than %d arrays/objects",
                           SYNCD_PATCH_MAX_DEPTH);
}

/* Appends {op, path, value} to the patch; value (may be NULL) is copied. */
static int emit(differ_t *d, const char *op, const json_t *value)
{
    json_t *item, *copy = NULL;

    if (value != NULL) {
        if (syncd_json_check_depth(value, SYNCD_EINVAL, "a document", d->err) <
            0)
            return SYNCD_EINVAL;
        copy = syncd_json_deep_copy(value);
        if (copy == NULL)
            return nomem(d);
    }
    item = json_object();
    if (item == NULL || json_object_set_new(item, "op", json_string(op)) < 0 ||
        json_object_set_new(
            item, "path",
            json_stringn(d->path.len ? d->path.data : "", d->path.len)) < 0) {
        json_decref(item);
        json_decref(copy);
        return nomem(d);
    }
    if (copy != NULL && json_object_set_new(item, "value", copy) < 0) {
        json_decref(item);
        return nomem(d);
    }
    if (json_array_append_new(d->ops, item) < 0)
        return nomem(d);
    return 0;
}

static int push_key(differ_t *d, const char *key, size_t len)
{
    if (syncd_buf_putc(&d->path, '/') < 0 ||
        syncd_ptr_append_escaped(&d->path, key, len) < 0)
        return nomem(d);
    return 0;
}

static int push_index(differ_t *d, size_t index)
{
    if (syncd_buf_printf(&d->path, "/%zu", index) < 0)
        return nomem(d);
    return 0;
}

static int diff_object(differ_t *d, const json_t *a, const json_t *b, int depth)
{
    size_t base = d->path.len, len;
    const char *key;
    json_t *value;
    int rc = 0;

    json_object_keylen_foreach ((json_t *)a, key, len, value) {
        json_t *other = json_object_getn(b, key, len);

        rc = push_key(d, key, len);
        if (rc == 0)
            rc = other == NULL ? emit(d, "remove", NULL)
                               : diff_value(d, value, other, depth);
        syncd_buf_truncate(&d->path, base);
        if (rc < 0)
            return rc;
    }
    json_object_keylen_foreach ((json_t *)b, key, len, value) {
        if (json_object_getn(a, key, len) != NULL)
            continue;
        rc = push_key(d, key, len);
        if (rc == 0)
            rc = emit(d, "add", value);
        syncd_buf_truncate(&d->path, base);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Counts the values in v, itself included. */
static size_t node_count(const json_t *v)
{
    size_t n = 1, i;
    const char *key;
    json_t *child;

    if (json_is_array(v)) {
        json_array_foreach (v, i, child) {
            n += node_count(child);
        }
    } else if (json_is_object(v)) {
        json_object_foreach ((json_t *)v, key, child) {
            n += node_count(child) + 1;
        }
    }
    return n;
}

/* Emits the change of element a into b at the current path: a recursive
 * diff when a and b are containers of one kind and that costs fewer
 * values than one replace, else a replace. */
static int diff_pair(differ_t *d, const json_t *a, const json_t *b, int depth)
{
    size_t start = json_array_size(d->ops), cost = 0, limit;
    int rc;

    if (json_typeof(a) != json_typeof(b) ||
        (!json_is_object(a) && !json_is_array(a)))
        return emit(d, "replace", b);
    rc = diff_value(d, a, b, depth);
    if (rc < 0)
        return rc;
    limit = 1 + node_count(b);
    for (size_t i = start; i < json_array_size(d->ops) && cost <= limit; i++) {
        json_t *value = json_object_get(json_array_get(d->ops, i), "value");

        cost += 1 + (value != NULL ? node_count(value) : 0);
    }
    if (cost <= limit)
        return 0;
    while (json_array_size(d->ops) > start)
        json_array_remove(d->ops, json_array_size(d->ops) - 1);
    return emit(d, "replace", b);
}

static int same(const side_t *a, size_t i, const side_t *b, size_t j)
{
    return a->hash[i] == b->hash[j] &&
           syncd_json_values_equal(json_array_get(a->array, i),
                                   json_array_get(b->array, j), 0);
}

/* Myers' greedy search on a[off, off + n) and b[off, off + m). On success
 * stores the edit script in forward order in *edits (malloc'd) and its
 * length in *count and returns 1; returns 0 when the bound is exceeded,
 * or SYNCD_ENOMEM. */
static int myers(edit_t **edits, size_t *count, const side_t *a,
                 const side_t *b, size_t off, size_t n, size_t m)
{
    long N = (long)n, M = (long)m;
    long dmax = N + M < MAX_EDIT_DISTANCE ? N + M : MAX_EDIT_DISTANCE;
    size_t budget =
        WORK_PER_ELEMENT * (n + m) + (size_t)(dmax + 2) * (dmax + 2);
    int *v = calloc((size_t)(2 * dmax + 3), sizeof(int));
    int *trace = NULL;
    long D = -1, x, y;
    size_t work = 0, used = 0, cap = 0;
    edit_t *script = NULL;

    if (v == NULL)
        return SYNCD_ENOMEM;
    v += dmax + 1;
    for (long dd = 0; dd <= dmax && D < 0 && work <= budget; dd++) {
        size_t need = used + (size_t)(2 * dd + 3);

        if (need > cap) {
            int *grown = realloc(trace, 2 * need * sizeof(int));

            if (grown == NULL) {
                free(trace);
                free(v - dmax - 1);
                return SYNCD_ENOMEM;
            }
            trace = grown;
            cap = 2 * need;
        }
        memcpy(trace + used, v - dd - 1, (size_t)(2 * dd + 3) * sizeof(int));
        used = need;
        for (long k = -dd; k <= dd && D < 0; k += 2) {
            if (k == -dd || (k != dd && v[k - 1] < v[k + 1]))
                x = v[k + 1];
            else
                x = v[k - 1] + 1;
            y = x - k;
            while (x < N && y < M &&
                   same(a, off + (size_t)x, b, off + (size_t)y)) {
                x++;
                y++;
                work++;
            }
            work++;
            v[k] = (int)x;
            if (x >= N && y >= M)
                D = dd;
        }
    }
    free(v - dmax - 1);
    if (D < 0) {
        free(trace);
        return 0;
    }
    script = malloc((size_t)(D + 1) * sizeof(*script));
    if (script == NULL) {
        free(trace);
        return SYNCD_ENOMEM;
    }
    x = N;
    y = M;
    for (long dd = D; dd > 0; dd--) {
        const int *prev = trace + dd * dd + 2 * dd + dd + 1;
        long k = x - y, pk, px;

        if (k == -dd || (k != dd && prev[k - 1] < prev[k + 1]))
            pk = k + 1;
        else
            pk = k - 1;
        px = prev[pk];
        x = px + (pk == k - 1);
        y = x - k;
        if (pk == k + 1)
            script[dd - 1] = (edit_t){EDIT_INSERT, (size_t)(y - 1)};
        else
            script[dd - 1] = (edit_t){EDIT_DELETE, (size_t)(x - 1)};
        x = px;
        y = px - pk;
    }
    free(trace);
    *edits = script;
    *count = (size_t)D;
    return 1;
}

/* Emits the operations of an edit script on the middle of the arrays,
 * which starts at index off in both; `cur` tracks the index in the array
 * as the earlier operations have left it. */
static int emit_script(differ_t *d, const side_t *a, const side_t *b,
                       size_t off, const edit_t *edits, size_t count, int depth)
{
    size_t base = d->path.len, ai = 0, bi = 0, cur = off, e = 0;
    int rc = 0;

    while (e < count && rc == 0) {
        size_t ndel = 0, nins = 0, keep, pairs;

        keep = edits[e].kind == EDIT_DELETE ? edits[e].index - ai
                                            : edits[e].index - bi;
        ai += keep;
        bi += keep;
        cur += keep;
        while (e < count &&
               (edits[e].kind == EDIT_DELETE ? edits[e].index == ai + ndel
                                             : edits[e].index == bi + nins)) {
            if (edits[e++].kind == EDIT_DELETE)
                ndel++;
            else
                nins++;
        }
        pairs = ndel < nins ? ndel : nins;
        for (size_t k = 0; k < ndel + nins - pairs && rc == 0; k++) {
            int removing = k >= pairs && ndel > nins;

            rc = push_index(d, removing ? cur + pairs : cur + k);
            if (rc == 0 && k < pairs)
                rc = diff_pair(d, json_array_get(a->array, off + ai + k),
                               json_array_get(b->array, off + bi + k), depth);
            else if (rc == 0 && removing)
                rc = emit(d, "remove", NULL);
            else if (rc == 0)
                rc = emit(d, "add", json_array_get(b->array, off + bi + k));
            syncd_buf_truncate(&d->path, base);
        }
        cur += nins;
        ai += ndel;
        bi += nins;
    }
    return rc;
}

/* Hashes the elements of array, which sit `depth` containers deep;
 * SYNCD_EINVAL when one nests too deep. */
static int hash_side(side_t *s, const json_t *array, int depth)
{
    int deep = 0;

    s->array = array;
    s->size = json_array_size(array);
    s->hash = malloc((s->size ? s->size : 1) * sizeof(uint64_t));
    if (s->hash == NULL)
        return SYNCD_ENOMEM;
    for (size_t i = 0; i < s->size; i++)
        s->hash[i] =
            syncd_json_value_hash(json_array_get(array, i), depth, &deep);
    return deep ? SYNCD_EINVAL : 0;
}

static int diff_array(differ_t *d, const json_t *a, const json_t *b, int depth)
{
    side_t sa = {0}, sb = {0};
    edit_t *edits = NULL;
    size_t pre = 0, suf = 0, count = 0;
    int rc;

    rc = hash_side(&sa, a, depth);
    if (rc == 0)
        rc = hash_side(&sb, b, depth);
    if (rc < 0)
        goto cleanup;
    while (pre < sa.size && pre < sb.size && same(&sa, pre, &sb, pre))
        pre++;
    while (suf < sa.size - pre && suf < sb.size - pre &&
           same(&sa, sa.size - 1 - suf, &sb, sb.size - 1 - suf))
        suf++;
    rc = myers(&edits, &count, &sa, &sb, pre, sa.size - pre - suf,
               sb.size - pre - suf);
    if (rc == 1)
        rc = emit_script(d, &sa, &sb, pre, edits, count, depth);
    else if (rc == 0)
        rc = emit(d, "replace", b);
cleanup:
    if (rc == SYNCD_ENOMEM)
        nomem(d);
    else if (rc == SYNCD_EINVAL)
        too_deep(d);
    free(edits);
    free(sa.hash);
    free(sb.hash);
    return rc;
}

/* Diffs a into b, which sit `depth` containers deep. */
static int diff_value(differ_t *d, const json_t *a, const json_t *b, int depth)
{
    if (json_typeof(a) != json_typeof(b))
        return emit(d, "replace", b);
    if ((json_is_object(a) || json_is_array(a)) &&
        depth + 1 > SYNCD_PATCH_MAX_DEPTH)
        return too_deep(d);
    if (json_is_object(a))
        return diff_object(d, a, b, depth + 1);
    if (json_is_array(a))
        return diff_array(d, a, b, depth + 1);
    if (!syncd_json_values_equal(a, b, 0))
        return emit(d, "replace", b);
    return 0;
}

int syncd_patch_diff_at(json_t *ops, const char *path, size_t len,
                        const json_t *a, const json_t *b, int depth,
                        syncd_error_t *err)
{
    differ_t d = {ops, {0}, err};
    int rc = syncd_buf_append(&d.path, path, len) < 0 ? nomem(&d) : 0;

    if (rc == 0)
        rc = a == NULL   ? emit(&d, "add", b)
             : b == NULL ? emit(&d, "remove", NULL)
                         : diff_value(&d, a, b, depth);
    syncd_buf_free(&d.path);
    return rc;
}

int syncd_patch_diff(json_t **out, const json_t *a, const json_t *b,
                     syncd_error_t *err)
{
    json_t *ops = json_array();
    int rc;

    *out = NULL;
    if (ops == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory diffing");
    rc = syncd_patch_diff_at(ops, "", 0, a, b, 0, err);
    if (rc < 0) {
        json_decref(ops);
        return rc;
    }
    *out = ops;
    return 0;
}
