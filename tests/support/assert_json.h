/* assert_json.h - exact JSON equality for cmocka tests.
 *
 * Two values are exactly equal when they have the same canonical bytes:
 * integer and real differ, reals compare bit for bit (-0.0 is not 0.0),
 * and object keys compare with their length (NUL included). Include it
 * after <cmocka.h>.
 */
#ifndef SYNCD_TEST_ASSERT_JSON_H
#define SYNCD_TEST_ASSERT_JSON_H

#include <stdlib.h>

#include "syncd/patch.h"

/* Fails the running test unless a and b are exactly equal. */
static inline void assert_json_exact(const json_t *a, const json_t *b)
{
    char *ca = syncd_json_canonical(a, NULL);
    char *cb = syncd_json_canonical(b, NULL);

    assert_non_null(ca);
    assert_non_null(cb);
    assert_string_equal(ca, cb);
    free(ca);
    free(cb);
}

#endif
