/* buf.h - byte buffers and percent-decoding, shared with syncd/.
 *
 * The lowest layer's text helpers: the patch engine builds pointers and
 * canonical JSON in these buffers, and the daemon and syncctl use the same
 * buffer for HTTP messages and the same decoder for URL parts. Plain C
 * over libc; no jansson.
 */
#ifndef SYNCD_PATCH_BUF_H
#define SYNCD_PATCH_BUF_H

#include <stdarg.h>
#include <stddef.h>

/* A growable byte buffer; `data` is NUL-terminated whenever len > 0. A
 * zeroed buf_t is empty and owns nothing. */
typedef struct buf {
    char *data;
    size_t len;
    size_t cap;
} buf_t;

/* Appends n bytes to b; returns 0 or SYNCD_ENOMEM. */
int buf_append(buf_t *b, const void *bytes, size_t n);

/* Appends one byte to b; returns 0 or SYNCD_ENOMEM. */
int buf_putc(buf_t *b, char c);

/* Appends printf-style formatted text to b; returns 0 or SYNCD_ENOMEM
 * (b keeps what it held before). */
int buf_printf(buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* buf_printf() with a va_list, which it consumes. */
int buf_vprintf(buf_t *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Shortens b to its first len bytes. */
void buf_truncate(buf_t *b, size_t len);

/* Frees b's storage and resets it to empty. */
void buf_free(buf_t *b);

/* Percent-decodes n bytes at s into *out (malloc'd and NUL-terminated, the
 * caller frees it), its length in *len (encoded NUL bytes included).
 * Returns 0, SYNCD_ENOMEM, or SYNCD_EINVAL for a '%' not followed by two
 * hex digits, with that '%''s offset in *bad_at when bad_at is not NULL. */
int pct_decode(char **out, size_t *len, const char *s, size_t n,
               size_t *bad_at);

#endif
