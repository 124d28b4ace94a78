/* pct.c - percent-coding (see pct.h).
 *
 * Decoding allocates exactly once, for the worst case (nothing encoded),
 * and fails on the first '%' that is not followed by two hex digits.
 */
#include <stdlib.h>

#include "base/pct.h"
#include "syncd/error.h"

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int syncd_pct_decode(char **out, size_t *len, const char *s, size_t n,
                     size_t *bad_at)
{
    char *d = malloc(n + 1);
    size_t o = 0;

    *out = NULL;
    if (d == NULL)
        return SYNCD_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;

        if (s[i] != '%') {
            d[o++] = s[i];
            continue;
        }
        hi = i + 2 < n ? hex_value(s[i + 1]) : -1;
        lo = hi >= 0 ? hex_value(s[i + 2]) : -1;
        if (lo < 0) {
            free(d);
            if (bad_at != NULL)
                *bad_at = i;
            return SYNCD_EINVAL;
        }
        d[o++] = (char)(hi * 16 + lo);
        i += 2;
    }
    d[o] = '\0';
    *out = d;
    *len = o;
    return 0;
}
