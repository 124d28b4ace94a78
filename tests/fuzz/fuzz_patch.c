/* fuzz_patch.c - fuzz target: RFC 6902 JSON Patch apply.
 *
 * The input is a {"doc","patch"} case or a JSON array of them (the files
 * of json-patch-tests seed the corpus as they are). Invariants: doc is
 * never modified; a patch that syncd_patch_validate() rejects never
 * applies (it fails with SYNCD_EPATCH, or SYNCD_ECONFLICT when a `test`
 * before its malformed operation fails: the store validates first); apply and
 * apply_ex without limits agree; within limits, a success stays within
 * max_bytes (for a doc that did), and a failure past the limits is
 * SYNCD_ETOOBIG or a failure without them; on a doc within the nesting
 * bound, the shared apply gives what the copying one gives (result and
 * code) and leaves doc as it was too.
 */
#include <stdlib.h>
#include <string.h>

#include "syncd/patch.h"

#include "fuzz.h"

/* Returns 1 when v nests deeper than the engine accepts. */
static int deep(const json_t *v)
{
    char *text = syncd_json_canonical(v, NULL);

    free(text);
    return text == NULL;
}

static void check_case(json_t *c)
{
    json_t *doc = json_object_get(c, "doc"),
           *patch = json_object_get(c, "patch");
    json_t *out = NULL, *out_ex = NULL, *small = NULL, *shared = NULL;
    syncd_patch_limits_t limits = {.max_bytes = 256, .max_ops = 8};
    char *before, *after, *text;
    size_t doc_len, len;
    int rc, rc_ex, rc_small, rc_shared = 0, valid, within;

    if (doc == NULL || patch == NULL)
        return;
    before = syncd_fuzz_canonical(doc);
    doc_len = strlen(before);
    valid = syncd_patch_validate(patch, NULL);
    rc = syncd_patch_apply(&out, doc, patch, NULL);
    rc_ex = syncd_patch_apply_ex(&out_ex, doc, patch, NULL, NULL);
    rc_small = syncd_patch_apply_ex(&small, doc, patch, &limits, NULL);
    within = !deep(doc);
    if (within)
        rc_shared = syncd_patch_apply_shared(&shared, doc, patch, NULL, NULL);
    after = syncd_fuzz_canonical(doc);
    SYNCD_FUZZ_CHECK(strcmp(before, after) == 0);
    SYNCD_FUZZ_CHECK(rc == rc_ex);
    SYNCD_FUZZ_CHECK(rc == 0 || rc == SYNCD_EPATCH || rc == SYNCD_ECONFLICT ||
                     (rc == SYNCD_EINVAL && deep(doc)));
    SYNCD_FUZZ_CHECK((rc == 0) == (out != NULL));
    if (valid != 0)
        SYNCD_FUZZ_CHECK(rc != 0);
    if (rc == 0) {
        SYNCD_FUZZ_CHECK(valid == 0);
        SYNCD_FUZZ_CHECK(syncd_json_equal(out, out_ex));
    }
    if (within) {
        SYNCD_FUZZ_CHECK(rc_shared == rc);
        SYNCD_FUZZ_CHECK(rc != 0 || syncd_fuzz_same(out, shared));
    }
    if (rc_small == 0) {
        SYNCD_FUZZ_CHECK(rc == 0 && syncd_json_equal(out, small));
        text = syncd_fuzz_canonical(small);
        len = strlen(text);
        free(text);
        SYNCD_FUZZ_CHECK(doc_len > limits.max_bytes || len <= limits.max_bytes);
    } else {
        SYNCD_FUZZ_CHECK(rc_small == SYNCD_ETOOBIG || rc_small == rc);
    }
    json_decref(out);
    json_decref(out_ex);
    json_decref(small);
    json_decref(shared);
    free(before);
    free(after);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *input = syncd_fuzz_json(data, size);

    if (input != NULL)
        syncd_fuzz_each_case(input, check_case);
    json_decref(input);
    return 0;
}
