/* fuzz.c - the helpers of fuzz.h, shared by every fuzz target. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "syncd/patch.h"

#include "fuzz.h"

void syncd_fuzz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: invariant broken: %s\n", file, line, what);
    abort();
}

json_t *syncd_fuzz_json(const uint8_t *data, size_t size)
{
    return json_loadb((const char *)data, size,
                      JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
}

size_t syncd_fuzz_each_case(json_t *input, void (*fn)(json_t *c))
{
    size_t i, n = 0;
    json_t *c;

    if (json_is_object(input)) {
        fn(input);
        return 1;
    }
    json_array_foreach (input, i, c) {
        if (json_is_object(c)) {
            fn(c);
            n++;
        }
    }
    return n;
}

char *syncd_fuzz_canonical(const json_t *v)
{
    char *text = syncd_json_canonical(v, NULL);

    SYNCD_FUZZ_CHECK(text != NULL);
    return text;
}

int syncd_fuzz_same(const json_t *a, const json_t *b)
{
    char *ta = syncd_fuzz_canonical(a), *tb = syncd_fuzz_canonical(b);
    int same = strcmp(ta, tb) == 0;

    free(ta);
    free(tb);
    return same;
}
