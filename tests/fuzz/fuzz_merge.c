/* fuzz_merge.c - fuzz target: RFC 7396 Merge Patch apply (and generate).
 *
 * The input is a {"doc","patch"} case or a JSON array of them
 * (merge-patch-tests.json seeds the corpus as it is). Invariants: apply
 * succeeds on any JSON and leaves doc unmodified; applying the same merge
 * patch again changes nothing (RFC 7396 merge patches are idempotent);
 * the merge patch generated from doc to the result, when there is one,
 * reproduces the result; on a doc within the nesting bound the shared
 * apply gives what the copying one gives and leaves doc as it was too.
 */
#include <stdlib.h>
#include <string.h>

#include "syncd/patch.h"

#include "fuzz.h"

static void check_case(json_t *c)
{
    json_t *doc = json_object_get(c, "doc"),
           *patch = json_object_get(c, "patch");
    json_t *out = NULL, *twice = NULL, *gen = NULL, *again = NULL;
    json_t *shared = NULL;
    char *before, *after;

    if (doc == NULL || patch == NULL)
        return;
    before = syncd_fuzz_canonical(doc);
    SYNCD_FUZZ_CHECK(syncd_merge_apply(&out, doc, patch, NULL) == 0);
    /* A doc the copying merge took is within the nesting bound. */
    SYNCD_FUZZ_CHECK(
        syncd_merge_apply_shared(&shared, doc, patch, NULL, NULL) == 0);
    SYNCD_FUZZ_CHECK(syncd_fuzz_same(out, shared));
    after = syncd_fuzz_canonical(doc);
    SYNCD_FUZZ_CHECK(strcmp(before, after) == 0);
    SYNCD_FUZZ_CHECK(syncd_merge_apply(&twice, out, patch, NULL) == 0);
    SYNCD_FUZZ_CHECK(syncd_json_equal(out, twice));
    if (syncd_merge_diff(&gen, doc, out, NULL) == 0) {
        SYNCD_FUZZ_CHECK(syncd_merge_apply(&again, doc, gen, NULL) == 0);
        SYNCD_FUZZ_CHECK(syncd_json_equal(again, out));
    } else {
        SYNCD_FUZZ_CHECK(gen == NULL);
    }
    json_decref(out);
    json_decref(twice);
    json_decref(gen);
    json_decref(again);
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
