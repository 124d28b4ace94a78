/* volumes.h - what the benchmarks share: a monotonic clock, an int64_t
 * comparison for qsort, and the volume collection document of
 * bench/README.md ({"kind", "name", "volumes": {"vol-00000": {path,
 * digest, size, files, updated}, ...}}, 1.75 MB compact at 10,000
 * volumes). */
#ifndef SYNCD_BENCH_VOLUMES_H
#define SYNCD_BENCH_VOLUMES_H

#include <stdint.h>

#include <jansson.h>

/* Returns CLOCK_MONOTONIC in nanoseconds. */
int64_t bench_mono_ns(void);

/* Orders two int64_t for qsort(). */
int bench_cmp_i64(const void *a, const void *b);

/* Writes volume j's name ("vol-%05d") into out. */
void bench_volume_name(char out[32], int j);

/* Returns a new volume entry of volume j whose digest and size depend on
 * stamp (the caller owns it), or NULL. */
json_t *bench_volume_entry(int j, int64_t stamp);

/* Returns a new volume collection document called name with n volumes at
 * stamp 0 (the caller owns it), or NULL. */
json_t *bench_volume_doc(const char *name, int n);

#endif
