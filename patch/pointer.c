/* pointer.c - RFC 6901 JSON Pointer: parse, format, escape and resolve.
 *
 * A parsed pointer owns one allocation: the token table followed by the
 * unescaped token bytes, each NUL-terminated but carried with its length
 * because object keys (and so tokens) may contain NUL. Array indexes follow
 * the RFC strictly: decimal without leading zeros, and "-" (one past the
 * end) only where the caller allows it.
 */
#include <stdlib.h>
#include <string.h>

#include "base/pct.h"
#include "patch/internal.h"

typedef struct token {
    const char *text;
    size_t len;
} token_t;

struct syncd_ptr {
    size_t count;
    token_t *tokens;
};

int syncd_ptr_parse_n(syncd_ptr_t **out, const char *text, size_t len,
                      syncd_error_t *err)
{
    size_t count = 0;
    syncd_ptr_t *ptr;
    char *bytes;
    size_t t = 0;

    *out = NULL;
    if (len > 0 && text[0] != '/')
        return syncd_error_set(err, SYNCD_EINVAL,
                               "pointer \"%.*s\": syntax: missing leading '/'",
                               (int)len, text);
    for (size_t i = 0; i < len; i++)
        count += text[i] == '/';
    ptr = malloc(sizeof(*ptr) + count * sizeof(token_t) + len + 1);
    if (ptr == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    ptr->count = count;
    ptr->tokens = (token_t *)(ptr + 1);
    bytes = (char *)(ptr->tokens + count);
    for (size_t i = 0; i < len; i++) {
        char c = text[i];

        if (c == '/') {
            if (t > 0)
                *bytes++ = '\0';
            ptr->tokens[t].text = bytes;
            ptr->tokens[t++].len = 0;
            continue;
        }
        if (c == '~') {
            if (i + 1 >= len || (text[i + 1] != '0' && text[i + 1] != '1')) {
                free(ptr);
                return syncd_error_set(
                    err, SYNCD_EINVAL,
                    "pointer \"%.*s\": syntax: invalid escape at byte %zu",
                    (int)len, text, i);
            }
            c = text[++i] == '0' ? '~' : '/';
        }
        *bytes++ = c;
        ptr->tokens[t - 1].len++;
    }
    *bytes = '\0';
    *out = ptr;
    return 0;
}

int syncd_ptr_parse(syncd_ptr_t **out, const char *text, syncd_error_t *err)
{
    return syncd_ptr_parse_n(out, text, strlen(text), err);
}

int syncd_ptr_parse_fragment(syncd_ptr_t **out, const char *fragment,
                             syncd_error_t *err)
{
    size_t len = strlen(fragment), n = 0, bad_at = 0;
    char *decoded;
    int rc;

    *out = NULL;
    if (len == 0 || fragment[0] != '#')
        return syncd_error_set(err, SYNCD_EINVAL,
                               "pointer fragment \"%s\": missing leading '#'",
                               fragment);
    rc = syncd_pct_decode(&decoded, &n, fragment + 1, len - 1, &bad_at);
    if (rc == SYNCD_EINVAL)
        return syncd_error_set(
            err, SYNCD_EINVAL,
            "pointer fragment \"%s\": bad percent-encoding at byte %zu",
            fragment, bad_at + 1);
    if (rc != 0)
        return syncd_error_set(err, rc, "out of memory");
    rc = syncd_ptr_parse_n(out, decoded, n, err);
    free(decoded);
    return rc;
}

void syncd_ptr_free(syncd_ptr_t *ptr)
{
    free(ptr);
}

size_t syncd_ptr_count(const syncd_ptr_t *ptr)
{
    return ptr->count;
}

const char *syncd_ptr_token(const syncd_ptr_t *ptr, size_t i, size_t *len)
{
    if (len != NULL)
        *len = ptr->tokens[i].len;
    return ptr->tokens[i].text;
}

int syncd_ptr_prefix_equal(const syncd_ptr_t *a, const syncd_ptr_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (a->tokens[i].len != b->tokens[i].len ||
            memcmp(a->tokens[i].text, b->tokens[i].text, a->tokens[i].len) != 0)
            return 0;
    }
    return 1;
}

int syncd_ptr_append_escaped(syncd_buf_t *b, const char *token, size_t len)
{
    size_t start = 0;

    for (size_t i = 0; i < len; i++) {
        const char *esc;

        if (token[i] == '~')
            esc = "~0";
        else if (token[i] == '/')
            esc = "~1";
        else
            continue;
        if (syncd_buf_append(b, token + start, i - start) < 0 ||
            syncd_buf_append(b, esc, 2) < 0)
            return SYNCD_ENOMEM;
        start = i + 1;
    }
    return syncd_buf_append(b, token + start, len - start);
}

char *syncd_ptr_format(const syncd_ptr_t *ptr)
{
    syncd_buf_t b = {0};

    for (size_t i = 0; i < ptr->count; i++) {
        if (syncd_buf_putc(&b, '/') < 0 ||
            syncd_ptr_append_escaped(&b, ptr->tokens[i].text,
                                     ptr->tokens[i].len) < 0) {
            syncd_buf_free(&b);
            return NULL;
        }
    }
    if (b.data == NULL)
        return strdup("");
    return b.data;
}

char *syncd_ptr_escape(const char *token, size_t len)
{
    syncd_buf_t b = {0};

    if (syncd_ptr_append_escaped(&b, token, len) < 0) {
        syncd_buf_free(&b);
        return NULL;
    }
    if (b.data == NULL)
        return strdup("");
    return b.data;
}

int syncd_ptr_array_index(size_t *index, const char *token, size_t len,
                          size_t size, int allow_end, const char **why)
{
    size_t value = 0;

    if (len == 1 && token[0] == '-') {
        if (!allow_end) {
            *why = "'-' index is past the end";
            return SYNCD_ENOTFOUND;
        }
        *index = size;
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        if (token[i] < '0' || token[i] > '9') {
            *why = "non-numeric array index";
            return SYNCD_ENOTFOUND;
        }
    }
    if (len == 0) {
        *why = "non-numeric array index";
        return SYNCD_ENOTFOUND;
    }
    if (len > 1 && token[0] == '0') {
        *why = "leading zero in array index";
        return SYNCD_ENOTFOUND;
    }
    for (size_t i = 0; i < len && value <= size; i++)
        value = value * 10 + (size_t)(token[i] - '0');
    if (value > size || (value == size && !allow_end)) {
        *why = "array index out of range";
        return SYNCD_ENOTFOUND;
    }
    *index = value;
    return 0;
}

int syncd_ptr_walk(json_t **out, json_t *doc, const syncd_ptr_t *ptr,
                   size_t count, const char **why, size_t *at)
{
    json_t *cur = doc;

    for (size_t i = 0; i < count; i++) {
        const token_t *tok = &ptr->tokens[i];
        size_t index;

        *at = i;
        if (json_is_object(cur)) {
            cur = json_object_getn(cur, tok->text, tok->len);
            if (cur == NULL) {
                *why = "member not found";
                return SYNCD_ENOTFOUND;
            }
        } else if (json_is_array(cur)) {
            if (syncd_ptr_array_index(&index, tok->text, tok->len,
                                      json_array_size(cur), 0, why) < 0)
                return SYNCD_ENOTFOUND;
            cur = json_array_get(cur, index);
        } else {
            *why = "cannot index into a scalar";
            return SYNCD_ENOTFOUND;
        }
    }
    *out = cur;
    return 0;
}

static int walk_failed(const syncd_ptr_t *ptr, size_t at, const char *why,
                       syncd_error_t *err)
{
    char *text = syncd_ptr_format(ptr);

    syncd_error_set(err, SYNCD_ENOTFOUND, "pointer \"%s\": token %zu: %s",
                    text != NULL ? text : "?", at, why);
    free(text);
    return SYNCD_ENOTFOUND;
}

int syncd_ptr_get(json_t **out, json_t *doc, const syncd_ptr_t *ptr,
                  syncd_error_t *err)
{
    const char *why = NULL;
    size_t at = 0;

    *out = NULL;
    if (syncd_ptr_walk(out, doc, ptr, ptr->count, &why, &at) < 0)
        return walk_failed(ptr, at, why, err);
    return 0;
}

int syncd_ptr_parent(json_t **parent, json_t *doc, const syncd_ptr_t *ptr,
                     syncd_error_t *err)
{
    const char *why = NULL;
    size_t at = 0;

    *parent = NULL;
    if (ptr->count == 0)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "the whole-document pointer has no parent");
    if (syncd_ptr_walk(parent, doc, ptr, ptr->count - 1, &why, &at) < 0)
        return walk_failed(ptr, at, why, err);
    if (!json_is_object(*parent) && !json_is_array(*parent)) {
        *parent = NULL;
        return walk_failed(ptr, ptr->count - 1,
                           "parent is not an object or array", err);
    }
    return 0;
}
