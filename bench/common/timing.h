/* timing.h - the clock and the sort order of samples that the patch
 * benchmark's programs share (header only: the cJSON peer is built
 * without the rest of bench/common). */
#ifndef SYNCD_BENCH_TIMING_H
#define SYNCD_BENCH_TIMING_H

#include <time.h>

/* Returns the monotonic clock in milliseconds. */
static inline double bench_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* qsort() order of doubles, ascending. */
static inline int bench_cmp_double(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;

    return (a > b) - (a < b);
}

#endif
