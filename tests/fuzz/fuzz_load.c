/* fuzz_load.c - fuzz target: syncd_json_loadb() gives what json_loadb()
 * gives.
 *
 * The input is any bytes. Invariants: both parsers accept it or both
 * reject it; when they accept, the values dump to the same bytes (keys in
 * document order, so duplicate keys and order count); when they reject,
 * the message, line and column are the same.
 */
#include <stdlib.h>
#include <string.h>

#include "syncd/patch.h"

#include "fuzz.h"

/* Returns v dumped compactly in its own key order (malloc'd). */
static char *dump(const json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

    SYNCD_FUZZ_CHECK(text != NULL);
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    json_error_t want_err, got_err;
    json_t *want =
        json_loadb(buf, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &want_err);
    json_t *got = NULL;
    int rc = syncd_json_loadb(&got, buf, size, &got_err);

    SYNCD_FUZZ_CHECK((rc == 0) == (want != NULL));
    SYNCD_FUZZ_CHECK((got != NULL) == (want != NULL));
    if (want != NULL) {
        char *a = dump(want), *b = dump(got);

        SYNCD_FUZZ_CHECK(strcmp(a, b) == 0);
        free(a);
        free(b);
    } else {
        SYNCD_FUZZ_CHECK(strcmp(want_err.text, got_err.text) == 0);
        SYNCD_FUZZ_CHECK(want_err.line == got_err.line);
        SYNCD_FUZZ_CHECK(want_err.column == got_err.column);
    }
    json_decref(want);
    json_decref(got);
    return 0;
}
