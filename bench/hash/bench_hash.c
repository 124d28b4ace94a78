/* bench_hash.c - the content hash of the 10,000-volume document: a full
 * hash before (SHA-256 of the canonical JSON) and after (the Merkle hash of
 * doc/HASH.md), and the hash tree's update for a one-volume change.
 *
 * The document is bench/bus's (bench/common/volumes.c: {"kind", "name",
 * "volumes": {"vol-00000": {path, digest, size, files, updated}, ...}}),
 * 1.75 MB compact; the change is bench/bus's event patch, two replace ops
 * (/volumes/vol-04321/digest and /size). Prints a markdown table of
 * medians of 9 runs and the hashes one update computes.
 *
 * Usage: bench_hash [VOLUMES]   (default 10000)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "syncd/patch.h"

#include "../common/volumes.h"

#define RUNS 9

static void legacy_hash(const json_t *doc)
{
    char hex[SYNCD_HASH_HEX_LEN + 1];
    size_t len;
    char *text = syncd_json_canonical(doc, &len);

    syncd_sha256_hex(hex, text, len);
    free(text);
}

static void merkle_hash(const json_t *doc)
{
    char hex[SYNCD_HASH_HEX_LEN + 1];

    syncd_json_hash(hex, doc, NULL);
}

static void tree_build(const json_t *doc)
{
    syncd_htree_t *t = NULL;

    syncd_htree_build(&t, doc, NULL);
    syncd_htree_free(t);
}

/* Returns the median time of RUNS calls of fn(doc), in ms. */
static double median_ms(void (*fn)(const json_t *), const json_t *doc)
{
    int64_t t[RUNS];

    for (int i = 0; i < RUNS; i++) {
        int64_t start = bench_mono_ns();

        fn(doc);
        t[i] = bench_mono_ns() - start;
    }
    qsort(t, RUNS, sizeof(t[0]), bench_cmp_i64);
    return (double)t[RUNS / 2] / 1e6;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 10000;
    json_t *doc = bench_volume_doc("refs", n), *next = json_deep_copy(doc),
           *patch;
    json_t *vol = bench_volume_entry(4321 % n, 1);
    syncd_htree_t *t = NULL;
    int64_t times[RUNS];
    uint64_t hashes = 0, full = 0;
    char path[64], a[SYNCD_HASH_HEX_LEN + 1], b[SYNCD_HASH_HEX_LEN + 1];

    snprintf(path, sizeof(path), "/volumes/vol-%05d", 4321 % n);
    patch = json_pack("[{s:s,s:s+,s:O},{s:s,s:s+,s:O}]", "op", "replace",
                      "path", path, "/digest", "value",
                      json_object_get(vol, "digest"), "op", "replace", "path",
                      path, "/size", "value", json_object_get(vol, "size"));
    json_decref(next);
    if (syncd_patch_apply(&next, doc, patch, NULL) != 0) {
        fprintf(stderr, "bench_hash: the patch does not apply\n");
        return 1;
    }
    printf("| %d volumes, %zu bytes compact | ms (median of %d) |\n", n,
           json_dumpb(doc, NULL, 0, JSON_COMPACT), RUNS);
    printf("|---|---|\n");
    printf("| the old hash: SHA-256 of the canonical JSON | %.2f |\n",
           median_ms(legacy_hash, next));
    printf("| the Merkle hash (syncd_json_hash) | %.2f |\n",
           median_ms(merkle_hash, next));
    printf("| hash tree build (syncd_htree_build) | %.2f |\n",
           median_ms(tree_build, doc));
    /* The update: each run applies the change to a fresh tree of doc. */
    for (int i = 0; i < RUNS; i++) {
        int64_t start;
        uint64_t before;

        syncd_htree_build(&t, doc, NULL);
        before = full = syncd_htree_hash_count(t);
        start = bench_mono_ns();
        if (syncd_htree_apply(t, patch, NULL) != 0) {
            fprintf(stderr, "bench_hash: the tree does not take the patch\n");
            return 1;
        }
        times[i] = bench_mono_ns() - start;
        hashes = syncd_htree_hash_count(t) - before;
        if (i + 1 < RUNS)
            syncd_htree_free(t);
    }
    qsort(times, RUNS, sizeof(times[0]), bench_cmp_i64);
    printf("| hash tree update for the one-volume patch (syncd_htree_apply) "
           "| %.4f |\n",
           (double)times[RUNS / 2] / 1e6);
    syncd_htree_root(t, a);
    syncd_json_hash(b, next, NULL);
    printf("\nSHA-256 computations in that update: %" PRIu64
           " (a full hash: %" PRIu64 "); tree root %s full hash.\n",
           hashes, full, strcmp(a, b) == 0 ? "==" : "!=");
    printf("The tree holds about %" PRIu64 " bytes (syncd_htree_bytes).\n",
           syncd_htree_bytes(t));
    syncd_htree_free(t);
    json_decref(vol);
    json_decref(patch);
    json_decref(doc);
    json_decref(next);
    return strcmp(a, b) == 0 ? 0 : 1;
}
