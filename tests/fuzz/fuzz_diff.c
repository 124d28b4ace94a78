/* fuzz_diff.c - fuzz target: diff then apply must reproduce B.
 *
 * The input is a pair [A, B], a {"doc","expected"} case, or a JSON array
 * of such cases (the conformance files seed the corpus as they are).
 * Invariants: syncd_patch_diff(A, B) succeeds with a valid patch, and
 * applying it to A gives B (RFC 6902 equality); the same for the merge
 * patch that syncd_merge_diff() generates when it generates one.
 */
#include <stdlib.h>

#include "syncd/patch.h"

#include "fuzz.h"

static void round_trip(const json_t *a, const json_t *b)
{
    json_t *patch = NULL, *out = NULL, *merge = NULL, *merged = NULL;

    SYNCD_FUZZ_CHECK(syncd_patch_diff(&patch, a, b, NULL) == 0);
    SYNCD_FUZZ_CHECK(syncd_patch_validate(patch, NULL) == 0);
    SYNCD_FUZZ_CHECK(syncd_patch_apply(&out, a, patch, NULL) == 0);
    SYNCD_FUZZ_CHECK(syncd_json_equal(out, b));
    if (syncd_merge_diff(&merge, a, b, NULL) == 0) {
        SYNCD_FUZZ_CHECK(syncd_merge_apply(&merged, a, merge, NULL) == 0);
        SYNCD_FUZZ_CHECK(syncd_json_equal(merged, b));
    }
    json_decref(patch);
    json_decref(out);
    json_decref(merge);
    json_decref(merged);
}

static void check_case(json_t *c)
{
    json_t *a = json_object_get(c, "doc"), *b = json_object_get(c, "expected");

    if (a != NULL && b != NULL)
        round_trip(a, b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *input = syncd_fuzz_json(data, size);

    if (json_is_array(input) && json_array_size(input) == 2)
        round_trip(json_array_get(input, 0), json_array_get(input, 1));
    else if (input != NULL)
        syncd_fuzz_each_case(input, check_case);
    json_decref(input);
    return 0;
}
