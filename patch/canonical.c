/* canonical.c - canonical JSON serialization.
 *
 * The canonical form is what records store, events are signed over and
 * legacy content hashes were made of (hash.c), so it must be the same bytes
 * for the same value on every node:
 * object members sorted by the bytes of their keys (keys may contain NUL),
 * no whitespace, strings as UTF-8 with only '"', '\\' and control
 * characters escaped, integers exact, reals in the shortest form that
 * parses back to the same double and always with a '.' or an exponent so
 * they stay reals.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "patch/internal.h"

typedef struct member {
    const char *key;
    size_t len;
    json_t *value;
} member_t;

int syncd_key_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);

    if (c != 0)
        return c;
    return (alen > blen) - (alen < blen);
}

static int member_cmp(const void *pa, const void *pb)
{
    const member_t *a = pa, *b = pb;

    return syncd_key_cmp(a->key, a->len, b->key, b->len);
}

size_t syncd_json_plain_span(const char *s, size_t len)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    size_t i = 0;

    /* Eight bytes at a time while none of them needs escaping: the high
     * bit of a byte of m is set for a byte below 0x20, a quote or a
     * backslash (and, after the first such byte, maybe for a later one,
     * so the word is then scanned byte by byte). */
    for (; i + 8 <= len; i += 8) {
        uint64_t x, q, b, m;

        memcpy(&x, s + i, 8);
        q = x ^ ones * '"';
        b = x ^ ones * '\\';
        m = ((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b);
        if ((m & highs) != 0)
            break;
    }
    for (; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c < 0x20 || c == '"' || c == '\\')
            break;
    }
    return i;
}

static int write_string(syncd_buf_t *b, const char *s, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    size_t i = 0;

    if (syncd_buf_putc(b, '"') < 0)
        return SYNCD_ENOMEM;
    for (;;) {
        size_t n = syncd_json_plain_span(s + i, len - i);
        char esc[6] = {'\\', 0};
        size_t elen = 2;
        unsigned char c;

        if (syncd_buf_append(b, s + i, n) < 0)
            return SYNCD_ENOMEM;
        i += n;
        if (i == len)
            break;
        c = (unsigned char)s[i++];
        if (c == '"' || c == '\\')
            esc[1] = (char)c;
        else if (c == '\n')
            esc[1] = 'n';
        else if (c == '\t')
            esc[1] = 't';
        else if (c == '\r')
            esc[1] = 'r';
        else if (c == '\b')
            esc[1] = 'b';
        else if (c == '\f')
            esc[1] = 'f';
        else {
            memcpy(esc + 1, "u00", 3);
            esc[4] = digits[c >> 4];
            esc[5] = digits[c & 15];
            elen = 6;
        }
        if (syncd_buf_append(b, esc, elen) < 0)
            return SYNCD_ENOMEM;
    }
    return syncd_buf_putc(b, '"');
}

size_t syncd_canonical_real(char text[40], double d)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(text, 40, "%.*g", prec, d);
        if (strtod(text, NULL) == d)
            break;
    }
    if (strpbrk(text, ".e") == NULL)
        strcat(text, ".0");
    return strlen(text);
}

size_t syncd_canonical_int(char text[24], json_int_t i)
{
    /* Digits of the magnitude as unsigned, so that the most negative
     * value has one too. */
    unsigned long long u =
        i < 0 ? 0ULL - (unsigned long long)i : (unsigned long long)i;
    char rev[24];
    size_t n = 0, len = 0;

    do {
        rev[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u > 0);
    if (i < 0)
        text[len++] = '-';
    while (n > 0)
        text[len++] = rev[--n];
    return len;
}

static int write_real(syncd_buf_t *b, double d)
{
    char text[40];
    size_t n = syncd_canonical_real(text, d);

    return syncd_buf_append(b, text, n);
}

static int write_value(syncd_buf_t *b, const json_t *v, int depth, int sorted);

/* Objects of at most this many members are sorted on the stack. */
#define SMALL_OBJECT 16

/* Writes object v, inside depth containers (its own included), its
 * members sorted by key or, with !sorted, in v's own order. */
static int write_object(syncd_buf_t *b, const json_t *v, int depth, int sorted)
{
    size_t n = json_object_size(v), i = 0;
    member_t small[SMALL_OBJECT], *members;
    const char *key;
    size_t len;
    json_t *child;
    int rc = 0;

    if (!sorted) {
        rc = syncd_buf_putc(b, '{');
        json_object_keylen_foreach ((json_t *)v, key, len, child) {
            if (rc == 0 && i++ > 0)
                rc = syncd_buf_putc(b, ',');
            if (rc == 0)
                rc = write_string(b, key, len);
            if (rc == 0)
                rc = syncd_buf_putc(b, ':');
            if (rc == 0)
                rc = write_value(b, child, depth, 0);
        }
        return rc < 0 ? rc : syncd_buf_putc(b, '}');
    }
    if (n > SMALL_OBJECT) {
        members = malloc(n * sizeof(*members));
        if (members == NULL)
            return SYNCD_ENOMEM;
    } else {
        members = small;
    }
    json_object_keylen_foreach ((json_t *)v, key, len, child) {
        members[i].key = key;
        members[i].len = len;
        members[i++].value = child;
    }
    if (n > SMALL_OBJECT) {
        qsort(members, n, sizeof(*members), member_cmp);
    } else {
        /* Insertion sort: no allocation, and fewer calls than qsort's
         * merge for the handful of members most objects have. */
        for (i = 1; i < n; i++) {
            member_t m = members[i];
            size_t j = i;

            for (; j > 0 && member_cmp(&members[j - 1], &m) > 0; j--)
                members[j] = members[j - 1];
            members[j] = m;
        }
    }
    rc = syncd_buf_putc(b, '{');
    for (i = 0; i < n && rc == 0; i++) {
        if (i > 0)
            rc = syncd_buf_putc(b, ',');
        if (rc == 0)
            rc = write_string(b, members[i].key, members[i].len);
        if (rc == 0)
            rc = syncd_buf_putc(b, ':');
        if (rc == 0)
            rc = write_value(b, members[i].value, depth, 1);
    }
    if (members != small)
        free(members);
    return rc < 0 ? rc : syncd_buf_putc(b, '}');
}

/* Writes v, inside depth containers; SYNCD_EINVAL when a container of it
 * would nest deeper than SYNCD_PATCH_MAX_DEPTH (the bound of
 * syncd_json_check_depth(), checked on the way instead of by a walk of its
 * own). */
static int write_value(syncd_buf_t *b, const json_t *v, int depth, int sorted)
{
    char text[32];
    size_t i;
    json_t *child;
    int rc;

    if ((json_is_object(v) || json_is_array(v)) &&
        ++depth > SYNCD_PATCH_MAX_DEPTH)
        return SYNCD_EINVAL;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return write_object(b, v, depth, sorted);
    case JSON_ARRAY:
        rc = syncd_buf_putc(b, '[');
        json_array_foreach (v, i, child) {
            if (rc == 0 && i > 0)
                rc = syncd_buf_putc(b, ',');
            if (rc == 0)
                rc = write_value(b, child, depth, sorted);
        }
        return rc < 0 ? rc : syncd_buf_putc(b, ']');
    case JSON_STRING:
        return write_string(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return syncd_buf_append(
            b, text, syncd_canonical_int(text, json_integer_value(v)));
    case JSON_REAL:
        return write_real(b, json_real_value(v));
    case JSON_TRUE:
        return syncd_buf_append(b, "true", 4);
    case JSON_FALSE:
        return syncd_buf_append(b, "false", 5);
    default:
        return syncd_buf_append(b, "null", 4);
    }
}

size_t syncd_canonical_string_size(const char *s, size_t len)
{
    size_t n = len + 2;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '"' || c == '\\' || c == '\n' || c == '\t' || c == '\r' ||
            c == '\b' || c == '\f')
            n += 1;
        else if (c < 0x20)
            n += 5;
    }
    return n;
}

size_t syncd_canonical_size(const json_t *v)
{
    char text[40];
    const char *key;
    size_t len, i, n;
    json_t *child;

    switch (json_typeof(v)) {
    case JSON_OBJECT:
        n = json_object_size(v) > 0 ? json_object_size(v) + 1 : 2;
        json_object_keylen_foreach ((json_t *)v, key, len, child)
            n += syncd_canonical_string_size(key, len) + 1 +
                 syncd_canonical_size(child);
        return n;
    case JSON_ARRAY:
        n = json_array_size(v) > 0 ? json_array_size(v) + 1 : 2;
        json_array_foreach (v, i, child)
            n += syncd_canonical_size(child);
        return n;
    case JSON_STRING:
        return syncd_canonical_string_size(json_string_value(v),
                                           json_string_length(v));
    case JSON_INTEGER:
        return syncd_canonical_int(text, json_integer_value(v));
    case JSON_REAL:
        return syncd_canonical_real(text, json_real_value(v));
    case JSON_TRUE:
        return 4;
    case JSON_FALSE:
        return 5;
    default:
        return 4;
    }
}

char *syncd_json_canonical(const json_t *v, size_t *len)
{
    return syncd_json_canonical_sized(v, 0, len);
}

char *syncd_json_canonical_sized(const json_t *v, size_t hint, size_t *len)
{
    syncd_buf_t b = {0};

    if ((hint > 0 && syncd_buf_reserve(&b, hint) < 0) ||
        write_value(&b, v, 0, 1) < 0) {
        syncd_buf_free(&b);
        return NULL;
    }
    /* A hint far above the size would hold memory growth would not (and
     * without one, the buffer is as growth left it, as before). */
    if (hint > 0 && b.cap / 2 > b.len + 1) {
        char *data = realloc(b.data, b.len + 1);

        if (data != NULL)
            b.data = data;
    }
    if (len != NULL)
        *len = b.len;
    return b.data;
}

char *syncd_json_compact(const json_t *v, size_t *len)
{
    syncd_buf_t b = {0};

    if (write_value(&b, v, 0, 0) < 0) {
        syncd_buf_free(&b);
        return NULL;
    }
    if (len != NULL)
        *len = b.len;
    return b.data;
}
