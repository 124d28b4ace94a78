/* merge.c - RFC 7396 JSON Merge Patch: apply and generate.
 *
 * A merge patch that is not an object replaces the target; an object patch
 * merges member by member, a null member deleting. Generation is the
 * inverse, and refuses what a merge patch cannot say: a member whose new
 * value is null (including nulls nested in new object values, since
 * applying would delete them), reported by path.
 */
#include <stdlib.h>

#include "patch/internal.h"

static int nomem(syncd_error_t *err)
{
    return syncd_error_set(err, SYNCD_ENOMEM, "out of memory merging");
}

/* Stores in *out (new reference) target merged with patch; target may be
 * NULL (absent). With shared, the result shares with target every member
 * the patch leaves (each object the patch merges into is copied one level
 * deep), and target is never touched either way. */
static int merge_value(json_t **out, const json_t *target, const json_t *patch,
                       int shared, syncd_error_t *err)
{
    const char *key;
    size_t len;
    json_t *value, *result;
    int rc = 0;

    *out = NULL;
    if (!json_is_object(patch))
        return syncd_json_copy(out, patch, err);
    if (json_is_object(target) && shared)
        rc = (result = syncd_json_copy_level(target)) != NULL ? 0 : nomem(err);
    else if (json_is_object(target))
        rc = syncd_json_copy(&result, target, err);
    else if ((result = json_object()) == NULL)
        rc = nomem(err);
    if (rc < 0)
        return rc;
    json_object_keylen_foreach ((json_t *)patch, key, len, value) {
        json_t *merged;

        if (json_is_null(value)) {
            json_object_deln(result, key, len);
            continue;
        }
        rc = merge_value(&merged, json_object_getn(result, key, len), value,
                         shared, err);
        if (rc == 0 && json_object_setn_new(result, key, len, merged) < 0)
            rc = nomem(err);
        if (rc < 0) {
            json_decref(result);
            return rc;
        }
    }
    *out = result;
    return 0;
}

/* syncd_merge_apply_ex(), sharing what the patch leaves with doc (whose
 * depth is then the caller's promise) when shared is set. */
static int merge_new(json_t **out, const json_t *doc, const json_t *merge,
                     const syncd_patch_limits_t *limits, int shared,
                     syncd_error_t *err)
{
    size_t max = limits != NULL ? limits->max_bytes : 0, before, after;
    int rc = 0;

    *out = NULL;
    if (!shared)
        rc = syncd_json_check_depth(doc, SYNCD_EINVAL, "document", err);
    if (rc == 0)
        rc = syncd_json_check_depth(merge, SYNCD_EINVAL, "merge patch", err);
    if (rc == 0)
        rc = merge_value(out, doc, merge, shared, err);
    if (rc < 0 || max == 0)
        return rc;
    /* Every value of the result comes from doc or from the patch, once:
     * the result can outgrow the bound only when the two together do. */
    before =
        limits->doc_size > 0 ? limits->doc_size : syncd_canonical_size(doc);
    if (before + syncd_canonical_size(merge) <= max)
        return 0;
    after = syncd_canonical_size(*out);
    if (after <= max || after <= before)
        return 0;
    json_decref(*out);
    *out = NULL;
    return syncd_error_set(err, SYNCD_ETOOBIG,
                           "merge patch: document would exceed %zu bytes", max);
}

int syncd_merge_apply_ex(json_t **out, const json_t *doc, const json_t *merge,
                         const syncd_patch_limits_t *limits, syncd_error_t *err)
{
    return merge_new(out, doc, merge, limits, 0, err);
}

int syncd_merge_apply_shared(json_t **out, const json_t *doc,
                             const json_t *merge,
                             const syncd_patch_limits_t *limits,
                             syncd_error_t *err)
{
    return merge_new(out, doc, merge, limits, 1, err);
}

int syncd_merge_apply(json_t **out, const json_t *doc, const json_t *merge,
                      syncd_error_t *err)
{
    return syncd_merge_apply_ex(out, doc, merge, NULL, err);
}

/* Appends "/key" to path and fails when the new value is null. */
static int enter_member(syncd_buf_t *path, const char *key, size_t len,
                        const json_t *value, syncd_error_t *err)
{
    if (syncd_buf_putc(path, '/') < 0 ||
        syncd_ptr_append_escaped(path, key, len) < 0)
        return nomem(err);
    if (json_is_null(value))
        return syncd_error_set(err, SYNCD_EPATCH,
                               "member \"%s\" is null in the new document, "
                               "which a merge patch cannot express",
                               path->data);
    return 0;
}

/* Fails when applying v as a patch would not reproduce v: an object member
 * anywhere in it is null. path (escaped pointer) names where v sits. */
static int check_expressible(const json_t *v, syncd_buf_t *path,
                             syncd_error_t *err)
{
    size_t base = path->len, len;
    const char *key;
    json_t *value;
    int rc = 0;

    if (!json_is_object(v))
        return 0;
    json_object_keylen_foreach ((json_t *)v, key, len, value) {
        rc = enter_member(path, key, len, value, err);
        if (rc == 0)
            rc = check_expressible(value, path, err);
        syncd_buf_truncate(path, base);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int set_member(json_t *patch, const char *key, size_t len,
                      json_t *value_new, syncd_error_t *err)
{
    if (value_new == NULL ||
        json_object_setn_new(patch, key, len, value_new) < 0)
        return nomem(err);
    return 0;
}

static int merge_diff_value(json_t **out, const json_t *a, const json_t *b,
                            syncd_buf_t *path, syncd_error_t *err)
{
    size_t base = path->len, len;
    const char *key;
    json_t *value, *patch;
    int rc = 0;

    *out = NULL;
    if (!json_is_object(a) || !json_is_object(b)) {
        rc = check_expressible(b, path, err);
        return rc < 0 ? rc : syncd_json_copy(out, b, err);
    }
    if ((patch = json_object()) == NULL)
        return nomem(err);
    json_object_keylen_foreach ((json_t *)a, key, len, value) {
        if (json_object_getn(b, key, len) == NULL)
            rc = set_member(patch, key, len, json_null(), err);
        if (rc < 0)
            goto cleanup;
    }
    json_object_keylen_foreach ((json_t *)b, key, len, value) {
        json_t *old = json_object_getn(a, key, len), *sub;

        if (old != NULL && syncd_json_values_equal(old, value, 0))
            continue;
        rc = enter_member(path, key, len, value, err);
        if (rc == 0)
            rc = merge_diff_value(&sub, old != NULL ? old : json_null(), value,
                                  path, err);
        if (rc == 0)
            rc = set_member(patch, key, len, sub, err);
        syncd_buf_truncate(path, base);
        if (rc < 0)
            goto cleanup;
    }
    *out = patch;
    patch = NULL;
cleanup:
    json_decref(patch);
    return rc;
}

int syncd_merge_diff(json_t **out, const json_t *a, const json_t *b,
                     syncd_error_t *err)
{
    syncd_buf_t path = {0};
    int rc;

    *out = NULL;
    rc = syncd_json_check_depth(a, SYNCD_EINVAL, "document a", err);
    if (rc == 0)
        rc = syncd_json_check_depth(b, SYNCD_EINVAL, "document b", err);
    if (rc == 0 && syncd_buf_append(&path, "", 0) < 0)
        rc = nomem(err);
    if (rc == 0)
        rc = merge_diff_value(out, a, b, &path, err);
    syncd_buf_free(&path);
    return rc;
}
