/* bench_narrow.c - finding where two copies of the 10,000-volume document
 * differ: by hash listings (doc/HASH.md "Narrowing") against shipping the
 * whole document.
 *
 * The document is bench_hash.c's (bench/bus's volume_doc(), 1.75 MB
 * compact); the second copy has bench/bus's one-volume change applied
 * (/volumes/vol-04321/digest and /size). Three ways to find the change:
 *
 * - listings made from the document: every listing is serialized to JSON
 *   text, counted and parsed back, as over HTTP; each side builds the hash
 *   tree of the value listed per listing (syncd_htree_list());
 * - the same with one tree built per side for the walk (timed with the
 *   walk): what GET .../hashes does, keeping the last tree built per
 *   source;
 * - the same from kept hash trees (syncd_htree_list_tree()), not timing
 *   their build: what a node that keeps each document's hash tree would
 *   pay;
 * - shipping: one side's document serialized, parsed by the other and
 *   diffed against its own (syncd_patch_diff()).
 *
 * Prints a markdown table: bytes exchanged, listings, and the median time
 * of RUNS runs of each, with the paths found.
 *
 * Usage: bench_narrow [VOLUMES]   (default 10000)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "syncd/patch.h"

#include "../common/volumes.h"

#define RUNS 9

/* One side: its document, its kept tree (NULL: build per listing), and
 * what it sent. */
typedef struct side {
    const json_t *doc;
    syncd_htree_t *tree;
    size_t bytes, listings;
} side_t;

/* A fetch over a simulated wire: the listing is serialized, counted and
 * parsed back. */
static int fetch(json_t **out, const char *path, size_t path_len, size_t level,
                 size_t from, size_t count, void *arg, syncd_error_t *err)
{
    side_t *s = arg;
    json_t *l = NULL;
    char *text;
    int rc = s->tree != NULL
                 ? syncd_htree_list_tree(&l, s->tree, path, path_len, level,
                                         from, count, err)
                 : syncd_htree_list(&l, s->doc, path, path_len, level, from,
                                    count, err);

    if (rc != 0)
        return rc;
    text = json_dumps(l, JSON_COMPACT);
    json_decref(l);
    s->bytes += strlen(text) + path_len + 64; /* the request, roughly */
    s->listings++;
    *out = json_loads(text, 0, NULL);
    free(text);
    return *out != NULL ? 0 : SYNCD_ENOMEM;
}

/* Narrows a against b once; returns the paths found (a new array). */
static json_t *narrow_once(side_t s[2])
{
    json_t *paths = NULL;
    int truncated;

    s[0].bytes = s[1].bytes = s[0].listings = s[1].listings = 0;
    if (syncd_htree_narrow(&paths, &truncated, fetch, &s[0], fetch, &s[1], 20,
                           NULL) != 0) {
        fprintf(stderr, "bench_narrow: the narrowing failed\n");
        exit(1);
    }
    return paths;
}

/* Ships b to a's side and diffs it there; returns the patch, *bytes the
 * document's size. */
static json_t *ship_once(const json_t *a, const json_t *b, size_t *bytes)
{
    char *text = json_dumps(b, JSON_COMPACT);
    json_t *copy = json_loads(text, 0, NULL), *patch = NULL;

    *bytes = strlen(text);
    free(text);
    if (copy == NULL || syncd_patch_diff(&patch, a, copy, NULL) != 0) {
        fprintf(stderr, "bench_narrow: shipping failed\n");
        exit(1);
    }
    json_decref(copy);
    return patch;
}

static double median(int64_t *ns)
{
    qsort(ns, RUNS, sizeof(*ns), bench_cmp_i64);
    return (double)ns[RUNS / 2] / 1e6;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 10000;
    json_t *a = bench_volume_doc("refs", n > 0 ? n : 10000), *patch, *b = NULL,
           *paths;
    char path[64], ops[512];
    int64_t ns[RUNS];
    size_t bytes = 0;
    char *found;

    snprintf(path, sizeof(path), "/volumes/vol-%05d", 4321 % n);
    snprintf(ops, sizeof(ops),
             "[{\"op\":\"replace\",\"path\":\"%s/digest\",\"value\":"
             "\"sha256:0\"},{\"op\":\"replace\",\"path\":\"%s/size\","
             "\"value\":7}]",
             path, path);
    patch = json_loads(ops, 0, NULL);
    if (patch == NULL || syncd_patch_apply(&b, a, patch, NULL) != 0) {
        fprintf(stderr, "bench_narrow: the patch does not apply\n");
        return 1;
    }
    printf("| %d volumes, one volume changed | bytes exchanged | listings | "
           "ms (median of %d) | found |\n",
           n, RUNS);
    printf("|---|---|---|---|---|\n");
    for (int way = 0; way < 3; way++) {
        static const char *const ways[] = {"hash trees built per listing",
                                           "one hash tree built per side",
                                           "from kept hash trees"};
        side_t s[2] = {{a, NULL, 0, 0}, {b, NULL, 0, 0}};

        for (int r = 0; r < RUNS; r++) {
            int64_t t0 = bench_mono_ns();

            if (way > 0 && (syncd_htree_build(&s[0].tree, a, NULL) != 0 ||
                            syncd_htree_build(&s[1].tree, b, NULL) != 0))
                return 1;
            if (way == 2)
                t0 = bench_mono_ns();
            json_decref(narrow_once(s));
            ns[r] = bench_mono_ns() - t0;
            if (r < RUNS - 1) {
                syncd_htree_free(s[0].tree);
                syncd_htree_free(s[1].tree);
                s[0].tree = s[1].tree = NULL;
            }
        }
        paths = narrow_once(s);
        found = json_dumps(paths, JSON_COMPACT);
        printf("| listings, %s | %zu | %zu | %.2f | `%s` |\n", ways[way],
               s[0].bytes + s[1].bytes, s[0].listings + s[1].listings,
               median(ns), found);
        free(found);
        json_decref(paths);
        syncd_htree_free(s[0].tree);
        syncd_htree_free(s[1].tree);
    }
    for (int r = 0; r < RUNS; r++) {
        int64_t t0 = bench_mono_ns();

        json_decref(ship_once(a, b, &bytes));
        ns[r] = bench_mono_ns() - t0;
    }
    paths = ship_once(a, b, &bytes);
    printf("| shipping the document and diffing it | %zu | - | %.2f | %zu "
           "patch ops |\n",
           bytes, median(ns), json_array_size(paths));
    json_decref(paths);
    json_decref(patch);
    json_decref(a);
    json_decref(b);
    return 0;
}
