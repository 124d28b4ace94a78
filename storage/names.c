/* names.c - the rules for collection names and document ids (DESIGN.md
 * section 2), shared by the stores and by tools that check names without
 * a store (syncctl).
 */
#include <stdint.h>
#include <string.h>

#include "syncd/store.h"

int syncd_validate_collection(const char *coll, syncd_error_t *err)
{
    size_t len;

    if (coll == NULL || coll[0] == '\0')
        return syncd_error_set(err, SYNCD_EINVAL, "collection name is empty");
    len = strlen(coll);
    if (len > 64)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "collection name is %zu bytes, over 64", len);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)coll[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 (i > 0 && (c == '_' || c == '.' || c == '-'));

        if (!ok)
            return syncd_error_set(
                err, SYNCD_EINVAL,
                "collection name has a bad character (byte 0x%02x) at "
                "offset %zu: it must match ^[a-z0-9][a-z0-9_.-]{0,63}$",
                c, i);
    }
    return 0;
}

/* Decodes the UTF-8 sequence at p (n bytes left) into *cp; returns its
 * length, or 0 when it is not valid UTF-8 (overlong forms, surrogates and
 * code points past U+10FFFF included). */
static size_t utf8_decode(const unsigned char *p, size_t n, uint32_t *cp)
{
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    size_t len;
    uint32_t c;

    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    }
    if ((p[0] & 0xe0) == 0xc0) {
        len = 2;
        c = p[0] & 0x1f;
    } else if ((p[0] & 0xf0) == 0xe0) {
        len = 3;
        c = p[0] & 0x0f;
    } else if ((p[0] & 0xf8) == 0xf0) {
        len = 4;
        c = p[0] & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (p[i] & 0x3f);
    }
    if (c < min[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

int syncd_validate_id(const char *id, syncd_error_t *err)
{
    const unsigned char *p = (const unsigned char *)id;
    size_t len, i = 0;

    if (id == NULL || id[0] == '\0')
        return syncd_error_set(err, SYNCD_EINVAL, "document id is empty");
    len = strlen(id);
    if (len > SYNCD_MAX_ID_BYTES)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "document id is %zu bytes, over %d", len,
                               SYNCD_MAX_ID_BYTES);
    while (i < len) {
        uint32_t cp;
        size_t n = utf8_decode(p + i, len - i, &cp);

        if (n == 0)
            return syncd_error_set(err, SYNCD_EINVAL,
                                   "document id is not valid UTF-8 at "
                                   "offset %zu",
                                   i);
        if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
            return syncd_error_set(err, SYNCD_EINVAL,
                                   "document id has a control character "
                                   "(U+%04X) at offset %zu",
                                   (unsigned)cp, i);
        if (cp < 0x80 && strchr("<>?{}", (int)cp) != NULL)
            return syncd_error_set(err, SYNCD_EINVAL,
                                   "document id has a forbidden '%c' at "
                                   "offset %zu",
                                   (char)cp, i);
        i += n;
    }
    return 0;
}
