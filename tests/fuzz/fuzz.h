/* fuzz.h - what the fuzz targets of tests/fuzz share.
 *
 * Each target defines LLVMFuzzerTestOneInput() (and, when it needs state
 * that lives across inputs, LLVMFuzzerInitialize()). With -DSYNCD_FUZZ=ON
 * (clang, scripts/fuzz.sh) libFuzzer drives them; in the default build
 * replay.c does, over the files of tests/fuzz/corpus/<target>/, so every
 * input kept there (the seeds and each crash found) is replayed by ctest
 * under the sanitizer build.
 */
#ifndef SYNCD_FUZZ_H
#define SYNCD_FUZZ_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Runs one input; returns 0 (libFuzzer's contract). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Sets up what lives across inputs; returns 0. Optional per target. */
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Aborts with file, line and the failed condition when cond is false: a
 * broken invariant is a crash, so libFuzzer keeps the input. */
#define SYNCD_FUZZ_CHECK(cond)                                                 \
    do {                                                                       \
        if (!(cond))                                                           \
            syncd_fuzz_fail(__FILE__, __LINE__, #cond);                        \
    } while (0)

/* Prints where an invariant broke and aborts. */
void syncd_fuzz_fail(const char *file, int line, const char *what)
    __attribute__((noreturn));

/* Parses size bytes at data as JSON (any value, duplicates rejected, as
 * the API does); returns a new reference or NULL. */
json_t *syncd_fuzz_json(const uint8_t *data, size_t size);

/* Calls fn once per case of input: input itself when it is an object,
 * else each object element of the array input (the shape of the
 * conformance files in ../shared/testdata, so they seed the corpus as
 * they are). Returns the number of cases. */
size_t syncd_fuzz_each_case(json_t *input, void (*fn)(json_t *c));

/* Returns the canonical form of v (malloc'd; the caller frees); aborts
 * when it cannot be made (out of memory or nesting too deep are not
 * expected of values the parser accepted). */
char *syncd_fuzz_canonical(const json_t *v);

/* Returns 1 when a and b have the same canonical form (0.0 and -0.0, 1
 * and 1.0 differ), else 0. */
int syncd_fuzz_same(const json_t *a, const json_t *b);

#endif
