/* buf.c - byte buffers (see buf.h).
 *
 * A buffer doubles its capacity as it grows and keeps a NUL after its
 * bytes, so its data can be handed to C string functions at any time.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "syncd/error.h"

int syncd_buf_reserve(syncd_buf_t *b, size_t n)
{
    size_t cap = b->cap ? b->cap : 64;
    char *data;

    if (b->len + n + 1 <= b->cap)
        return 0;
    while (cap < b->len + n + 1)
        cap *= 2;
    data = realloc(b->data, cap);
    if (data == NULL)
        return SYNCD_ENOMEM;
    b->data = data;
    b->cap = cap;
    return 0;
}

int syncd_buf_vprintf(syncd_buf_t *b, const char *fmt, va_list ap)
{
    size_t room = b->cap - b->len;
    va_list again;
    int n;

    va_copy(again, ap);
    n = vsnprintf(room > 0 ? b->data + b->len : NULL, room, fmt, ap);
    if (n >= 0 && (size_t)n >= room)
        n = syncd_buf_reserve(b, (size_t)n) < 0
                ? -1
                : vsnprintf(b->data + b->len, b->cap - b->len, fmt, again);
    va_end(again);
    if (n < 0) {
        if (b->data != NULL)
            b->data[b->len] = '\0';
        return SYNCD_ENOMEM;
    }
    b->len += (size_t)n;
    return 0;
}

int syncd_buf_printf(syncd_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = syncd_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void syncd_buf_truncate(syncd_buf_t *b, size_t len)
{
    b->len = len;
    if (b->data != NULL)
        b->data[len] = '\0';
}

void syncd_buf_free(syncd_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
