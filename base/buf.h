/* buf.h - growable byte buffers, shared by every layer.
 *
 * Part of base/, the lowest layer: the patch engine builds pointers and
 * canonical JSON in these buffers, and the daemon and syncctl use the same
 * buffer for HTTP messages. Plain C over libc; no jansson.
 */
#ifndef SYNCD_BASE_BUF_H
#define SYNCD_BASE_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <string.h>

/* A growable byte buffer; `data` is NUL-terminated whenever len > 0. A
 * zeroed syncd_buf_t is empty and owns nothing. */
typedef struct syncd_buf {
    char *data;
    size_t len;
    size_t cap;
} syncd_buf_t;

/* Makes room in b for n more bytes (and the NUL after them) at once, so
 * that appending them does not grow it step by step; returns 0 or
 * SYNCD_ENOMEM. */
int syncd_buf_reserve(syncd_buf_t *b, size_t n);

/* Appends n bytes to b; returns 0 or SYNCD_ENOMEM. Inline: serializers
 * append a few bytes at a time, and the call was a tenth of their time. */
static inline int syncd_buf_append(syncd_buf_t *b, const void *bytes, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        int rc = syncd_buf_reserve(b, n);

        if (rc < 0)
            return rc;
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/* Appends one byte to b; returns 0 or SYNCD_ENOMEM. */
static inline int syncd_buf_putc(syncd_buf_t *b, char c)
{
    if (b->len + 2 > b->cap) {
        int rc = syncd_buf_reserve(b, 1);

        if (rc < 0)
            return rc;
    }
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
    return 0;
}

/* Appends printf-style formatted text to b; returns 0 or SYNCD_ENOMEM
 * (b keeps what it held before). */
int syncd_buf_printf(syncd_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* syncd_buf_printf() with a va_list, which it consumes. */
int syncd_buf_vprintf(syncd_buf_t *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Shortens b to its first len bytes. */
void syncd_buf_truncate(syncd_buf_t *b, size_t len);

/* Frees b's storage and resets it to empty. */
void syncd_buf_free(syncd_buf_t *b);

#endif
