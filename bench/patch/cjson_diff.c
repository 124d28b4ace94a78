/* cjson_diff.c - the cJSON_Utils peer of the patch benchmark.
 *
 *   cjson_diff bench A.json B.json RUNS   one JSON line of results
 *   cjson_diff once A.json B.json OUT     load, diff, write the patch
 *
 * Diffs with cJSONUtils_GeneratePatchesCaseSensitive() (JSON keys are case
 * sensitive; the plain variant folds case). It sorts the members of both
 * documents in place, so runs after the first diff sorted documents. bench
 * times the diff alone from parsed documents (median over RUNS, freeing the
 * previous patch outside the timing), then checks that
 * cJSONUtils_ApplyPatchesCaseSensitive() on a copy of A gives B. Built by
 * bench/patch/run.sh against Debian's libcjson and the cJSON_Utils.c of the
 * same Debian source package, which libcjson-dev does not ship.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cJSON_Utils.h"

#include "../common/timing.h"

/* Returns the parsed document at path (the caller deletes it), or NULL
 * after a message on stderr. */
static cJSON *load(const char *path)
{
    FILE *f = fopen(path, "rb");
    cJSON *v = NULL;
    char *buf = NULL;
    long len;

    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0 || (buf = malloc((size_t)len + 1)) == NULL ||
        fread(buf, 1, (size_t)len, f) != (size_t)len)
        fprintf(stderr, "cjson_diff: cannot read %s\n", path);
    else if ((v = cJSON_ParseWithLength(buf, (size_t)len)) == NULL)
        fprintf(stderr, "cjson_diff: %s: not JSON\n", path);
    free(buf);
    if (f != NULL)
        fclose(f);
    return v;
}

/* The once mode: writes the patch from a to b to the file out. */
static int once(cJSON *a, cJSON *b, const char *out)
{
    cJSON *patch = cJSONUtils_GeneratePatchesCaseSensitive(a, b);
    char *text = patch != NULL ? cJSON_PrintUnformatted(patch) : NULL;
    FILE *f = text != NULL ? fopen(out, "wb") : NULL;
    int failed = f == NULL || fputs(text, f) == EOF;

    if (f != NULL && fclose(f) != 0)
        failed = 1;
    if (failed)
        fprintf(stderr, "cjson_diff: cannot write the patch to %s\n", out);
    cJSON_free(text);
    cJSON_Delete(patch);
    return failed;
}

/* The bench mode: times RUNS diffs from a to b and prints the results. */
static int bench(cJSON *a, cJSON *b, int runs)
{
    double *times = calloc((size_t)runs, sizeof(double));
    cJSON *patch = NULL, *copy = NULL;
    char *text = NULL;
    int reproduces, rc = 1;

    if (times == NULL)
        goto cleanup;
    for (int i = 0; i < runs; i++) {
        double t0;

        cJSON_Delete(patch);
        t0 = bench_now_ms();
        patch = cJSONUtils_GeneratePatchesCaseSensitive(a, b);
        times[i] = bench_now_ms() - t0;
        if (patch == NULL)
            goto cleanup;
    }
    qsort(times, (size_t)runs, sizeof(double), bench_cmp_double);
    text = cJSON_PrintUnformatted(patch);
    copy = cJSON_Duplicate(a, 1);
    if (text == NULL || copy == NULL)
        goto cleanup;
    reproduces = cJSONUtils_ApplyPatchesCaseSensitive(copy, patch) == 0 &&
                 cJSON_Compare(copy, b, 1);
    printf("{\"tool\":\"cJSON_Utils\",\"runs\":%d,\"diff_ms\":%.3f,"
           "\"ops\":%d,\"patch_bytes\":%zu,\"reproduces\":%s}\n",
           runs, times[runs / 2], cJSON_GetArraySize(patch), strlen(text),
           reproduces ? "true" : "false");
    rc = 0;
cleanup:
    if (rc != 0)
        fprintf(stderr, "cjson_diff: out of memory\n");
    cJSON_Delete(copy);
    cJSON_free(text);
    cJSON_Delete(patch);
    free(times);
    return rc;
}

int main(int argc, char **argv)
{
    cJSON *a = NULL, *b = NULL;
    int rc = 1;

    if (argc != 5 ||
        (strcmp(argv[1], "bench") != 0 && strcmp(argv[1], "once") != 0)) {
        fprintf(stderr,
                "usage: cjson_diff bench|once A.json B.json RUNS|OUT\n");
        return 2;
    }
    a = load(argv[2]);
    b = load(argv[3]);
    if (a != NULL && b != NULL) {
        if (strcmp(argv[1], "once") == 0)
            rc = once(a, b, argv[4]);
        else
            rc = atoi(argv[4]) < 1 ? 2 : bench(a, b, atoi(argv[4]));
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
    return rc;
}
