/* volumes.c - what the benchmarks share (see volumes.h). */
#include "volumes.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "syncd/patch.h"

int64_t bench_mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int bench_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

void bench_volume_name(char out[32], int j)
{
    snprintf(out, 32, "vol-%05d", j);
}

json_t *bench_volume_entry(int j, int64_t stamp)
{
    char name[32], seed[64], digest[8 + SYNCD_HASH_HEX_LEN + 1];

    bench_volume_name(name, j);
    snprintf(seed, sizeof(seed), "%d/%" PRId64, j, stamp);
    memcpy(digest, "sha256:", 7);
    syncd_sha256_hex(digest + 7, seed, strlen(seed));
    return json_pack("{s:s,s:s,s:I,s:i,s:s}", "path", name, "digest", digest,
                     "size", (json_int_t)(1000000 + j * 37 + stamp), "files",
                     25 + j % 50, "updated", "2026-11-24T10:00:00Z");
}

json_t *bench_volume_doc(const char *name, int n)
{
    json_t *vols = json_object();
    char vname[32];

    for (int j = 0; j < n && vols != NULL; j++) {
        bench_volume_name(vname, j);
        json_object_set_new(vols, vname, bench_volume_entry(j, 0));
    }
    return json_pack("{s:s,s:s,s:o}", "kind", "VolumeCollection", "name", name,
                     "volumes", vols);
}
