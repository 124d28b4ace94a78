/* bench_patch.c - the syncd side of the patch benchmark.
 *
 * Usage: bench_patch A.json B.json RUNS
 *
 * Loads both documents once, then times syncd_patch_diff() from the parsed
 * documents RUNS times and prints one JSON line: the median diff time, the
 * number of operations, the patch size in bytes (compact JSON) and whether
 * applying the patch to A reproduces B exactly (same canonical bytes).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "syncd/patch.h"

#include "../common/timing.h"

static json_t *load(const char *path)
{
    json_error_t jerr;
    json_t *v = json_load_file(path, 0, &jerr);

    if (v == NULL)
        fprintf(stderr, "bench_patch: %s:%d: %s\n", path, jerr.line, jerr.text);
    return v;
}

/* Returns 1 when a and b have the same canonical bytes. */
static int same_canonical(const json_t *a, const json_t *b)
{
    size_t la, lb;
    char *ca = syncd_json_canonical(a, &la), *cb = syncd_json_canonical(b, &lb);
    int same = ca != NULL && cb != NULL && la == lb && memcmp(ca, cb, la) == 0;

    free(ca);
    free(cb);
    return same;
}

int main(int argc, char **argv)
{
    json_t *a = NULL, *b = NULL, *patch = NULL, *out = NULL;
    double *times = NULL;
    syncd_error_t err;
    char *text = NULL;
    int runs, rc = 1;

    if (argc != 4 || (runs = atoi(argv[3])) < 1) {
        fprintf(stderr, "usage: bench_patch A.json B.json RUNS\n");
        return 2;
    }
    a = load(argv[1]);
    b = load(argv[2]);
    times = calloc((size_t)runs, sizeof(double));
    if (a == NULL || b == NULL || times == NULL)
        goto cleanup;
    syncd_error_clear(&err);
    for (int i = 0; i < runs; i++) {
        double t0 = bench_now_ms();

        json_decref(patch);
        patch = NULL;
        if (syncd_patch_diff(&patch, a, b, &err) < 0) {
            fprintf(stderr, "bench_patch: diff: %s\n", err.message);
            goto cleanup;
        }
        times[i] = bench_now_ms() - t0;
    }
    qsort(times, (size_t)runs, sizeof(double), bench_cmp_double);
    text = json_dumps(patch, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL)
        goto cleanup;
    printf("{\"tool\":\"syncd\",\"runs\":%d,\"diff_ms\":%.3f,\"ops\":%zu,"
           "\"patch_bytes\":%zu,\"reproduces\":%s}\n",
           runs, times[runs / 2], json_array_size(patch), strlen(text),
           syncd_patch_apply(&out, a, patch, NULL) == 0 &&
                   same_canonical(out, b)
               ? "true"
               : "false");
    rc = 0;
cleanup:
    free(text);
    free(times);
    json_decref(a);
    json_decref(b);
    json_decref(patch);
    json_decref(out);
    return rc;
}
