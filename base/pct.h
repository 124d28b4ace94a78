/* pct.h - percent-coding (RFC 3986 section 2.1), shared by every layer.
 *
 * Part of base/, the lowest layer: the patch engine decodes the URI
 * fragment form of JSON pointers with it, the daemon URL paths and query
 * parameters. Plain C over libc.
 */
#ifndef SYNCD_BASE_PCT_H
#define SYNCD_BASE_PCT_H

#include <stddef.h>

/* Percent-decodes n bytes at s into *out (malloc'd and NUL-terminated, the
 * caller frees it), its length in *len (encoded NUL bytes included).
 * Returns 0, SYNCD_ENOMEM, or SYNCD_EINVAL for a '%' not followed by two
 * hex digits, with that '%''s offset in *bad_at when bad_at is not NULL. */
int syncd_pct_decode(char **out, size_t *len, const char *s, size_t n,
                     size_t *bad_at);

#endif
