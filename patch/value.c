/* value.c - depth guard, copies, equality and hashing of JSON values.
 *
 * Every recursive walk in the patch engine runs on values that passed
 * syncd_json_check_depth() first (or, in the diff, syncd_json_value_hash()'s
 * own depth guard), so recursion is bounded by SYNCD_PATCH_MAX_DEPTH and a
 * hostile document cannot overflow the stack. syncd_json_value_hash() is
 * structural: objects hash the same in any member order, so the array diff can
 * compare elements by hash and confirm with syncd_json_values_equal().
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "patch/internal.h"

static int depth_ok(const json_t *v, int depth)
{
    size_t i;
    const char *key;
    json_t *child;

    if (!json_is_object(v) && !json_is_array(v))
        return 1;
    if (++depth > SYNCD_PATCH_MAX_DEPTH)
        return 0;
    if (json_is_array(v)) {
        json_array_foreach (v, i, child) {
            if (!depth_ok(child, depth))
                return 0;
        }
        return 1;
    }
    json_object_foreach ((json_t *)v, key, child) {
        if (!depth_ok(child, depth))
            return 0;
    }
    return 1;
}

int syncd_json_check_depth(const json_t *v, int code, const char *what,
                           syncd_error_t *err)
{
    if (depth_ok(v, 0))
        return 0;
    return syncd_error_set(err, code, "%s nests deeper than %d arrays/objects",
                           what, SYNCD_PATCH_MAX_DEPTH);
}

int syncd_depth_fits(const json_t *v, size_t depth)
{
    if (depth > SYNCD_PATCH_MAX_DEPTH)
        return !json_is_object(v) && !json_is_array(v);
    return depth_ok(v, (int)depth);
}

json_t *syncd_json_deep_copy(const json_t *v)
{
    const char *key;
    size_t len, i;
    json_t *child, *copy;

    switch (json_typeof(v)) {
    case JSON_OBJECT:
        copy = json_object();
        json_object_keylen_foreach ((json_t *)v, key, len, child) {
            if (copy == NULL)
                break;
            if (json_object_setn_new_nocheck(copy, key, len,
                                             syncd_json_deep_copy(child)) < 0) {
                json_decref(copy);
                copy = NULL;
            }
        }
        return copy;
    case JSON_ARRAY:
        copy = json_array();
        json_array_foreach (v, i, child) {
            if (copy == NULL)
                break;
            if (json_array_append_new(copy, syncd_json_deep_copy(child)) < 0) {
                json_decref(copy);
                copy = NULL;
            }
        }
        return copy;
    case JSON_STRING:
        return json_stringn_nocheck(json_string_value(v),
                                    json_string_length(v));
    case JSON_INTEGER:
        return json_integer(json_integer_value(v));
    case JSON_REAL:
        return json_real(json_real_value(v));
    default:
        return json_incref((json_t *)v);
    }
}

json_t *syncd_json_copy_level(const json_t *v)
{
    json_t *copy, *child;
    const char *key;
    size_t len, i;

    if (json_is_array(v)) {
        copy = json_array();
        json_array_foreach (v, i, child) {
            if (copy != NULL && json_array_append(copy, child) < 0) {
                json_decref(copy);
                copy = NULL;
            }
        }
        return copy;
    }
    copy = json_object();
    json_object_keylen_foreach ((json_t *)v, key, len, child) {
        if (copy != NULL &&
            json_object_setn_nocheck(copy, key, len, child) < 0) {
            json_decref(copy);
            copy = NULL;
        }
    }
    return copy;
}

int syncd_json_copy(json_t **out, const json_t *v, syncd_error_t *err)
{
    *out = syncd_json_deep_copy(v);
    if (*out == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory copying");
    return 0;
}

static int numbers_equal(const json_t *a, const json_t *b)
{
    const json_t *i = json_is_integer(a) ? a : b;
    const json_t *r = i == a ? b : a;
    double d;

    if (json_is_integer(a) && json_is_integer(b))
        return json_integer_value(a) == json_integer_value(b);
    if (json_is_real(a) && json_is_real(b))
        return json_real_value(a) == json_real_value(b);
    d = json_real_value(r);
    if (d != floor(d) || d < -9223372036854775808.0 ||
        d >= 9223372036854775808.0)
        return 0;
    return (json_int_t)d == json_integer_value(i);
}

int syncd_json_values_equal(const json_t *a, const json_t *b, int rfc)
{
    const char *key;
    size_t len, i;
    json_t *child;

    if (a == b)
        return 1;
    if (rfc && json_is_number(a) && json_is_number(b))
        return numbers_equal(a, b);
    if (json_typeof(a) != json_typeof(b))
        return 0;
    switch (json_typeof(a)) {
    case JSON_OBJECT:
        if (json_object_size(a) != json_object_size(b))
            return 0;
        json_object_keylen_foreach ((json_t *)a, key, len, child) {
            json_t *other = json_object_getn(b, key, len);

            if (other == NULL || !syncd_json_values_equal(child, other, rfc))
                return 0;
        }
        return 1;
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b))
            return 0;
        json_array_foreach (a, i, child) {
            if (!syncd_json_values_equal(child, json_array_get(b, i), rfc))
                return 0;
        }
        return 1;
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b),
                      json_string_length(a)) == 0;
    case JSON_INTEGER:
        return json_integer_value(a) == json_integer_value(b);
    case JSON_REAL:
        return json_real_value(a) == json_real_value(b) &&
               (rfc ||
                signbit(json_real_value(a)) == signbit(json_real_value(b)));
    default:
        return 1;
    }
}

static uint64_t mix(uint64_t h)
{
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

/* Hashes n bytes eight at a time; the array diff hashes whole documents,
 * so this is on the hot path. */
static uint64_t bytes_hash(const char *s, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ n, word;
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        memcpy(&word, s + i, 8);
        h = (h ^ word) * 0xff51afd7ed558ccdULL;
        h ^= h >> 29;
    }
    if (i < n) {
        word = 0;
        memcpy(&word, s + i, n - i);
        h = (h ^ word) * 0xc4ceb9fe1a85ec53ULL;
    }
    return h ^ (h >> 32);
}

uint64_t syncd_json_value_hash(const json_t *v, int depth, int *too_deep)
{
    size_t i;
    json_t *child;
    uint64_t h;
    double d;

    if ((json_is_object(v) || json_is_array(v)) &&
        ++depth > SYNCD_PATCH_MAX_DEPTH) {
        *too_deep = 1;
        return 0;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        h = 0;
        for (void *it = json_object_iter((json_t *)v); it != NULL;
             it = json_object_iter_next((json_t *)v, it)) {
            uint64_t member = bytes_hash(json_object_iter_key(it),
                                         json_object_iter_key_len(it)) ^
                              syncd_json_value_hash(json_object_iter_value(it),
                                                    depth, too_deep) *
                                  0x9e3779b97f4a7c15ULL;

            h += member * 0xbf58476d1ce4e5b9ULL ^ (member >> 31);
        }
        return mix(h ^ 0x6f626a ^ ((uint64_t)json_object_size(v) << 32));
    case JSON_ARRAY:
        h = 0x617272 ^ json_array_size(v);
        json_array_foreach (v, i, child) {
            h = mix(h + syncd_json_value_hash(child, depth, too_deep));
        }
        return h;
    case JSON_STRING:
        return bytes_hash(json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return mix((uint64_t)json_integer_value(v) ^ 0x696e74);
    case JSON_REAL:
        d = json_real_value(v);
        memcpy(&h, &d, sizeof(h));
        return mix(h ^ 0x7265616c);
    default:
        return mix((uint64_t)json_typeof(v) + 0x636f6e7374);
    }
}

/* Adds to n the compact size of v, placed inside depth arrays/objects;
 * returns early, with a count over cap, once it passes cap, and SIZE_MAX
 * past SYNCD_PATCH_MAX_DEPTH. */
static size_t compact_size(const json_t *v, size_t n, size_t cap, int depth)
{
    const char *key;
    size_t len, i;
    json_t *child;

    switch (json_typeof(v)) {
    case JSON_OBJECT:
        if (++depth > SYNCD_PATCH_MAX_DEPTH)
            return SIZE_MAX;
        n += json_object_size(v) > 0 ? json_object_size(v) + 1 : 2;
        json_object_keylen_foreach ((json_t *)v, key, len, child) {
            if (n > cap)
                return n;
            n = compact_size(child,
                             n + syncd_canonical_string_size(key, len) + 1, cap,
                             depth);
        }
        return n;
    case JSON_ARRAY:
        if (++depth > SYNCD_PATCH_MAX_DEPTH)
            return SIZE_MAX;
        n += json_array_size(v) > 0 ? json_array_size(v) + 1 : 2;
        json_array_foreach (v, i, child) {
            if (n > cap)
                return n;
            n = compact_size(child, n, cap, depth);
        }
        return n;
    case JSON_STRING:
        return n + syncd_canonical_string_size(json_string_value(v),
                                               json_string_length(v));
    case JSON_INTEGER: {
        char text[24];

        return n + syncd_canonical_int(text, json_integer_value(v));
    }
    case JSON_REAL:
        /* A real dumps into no buffer without allocating. */
        return n + json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
    case JSON_TRUE:
        return n + 4;
    case JSON_FALSE:
        return n + 5;
    default:
        return n + 4;
    }
}

size_t syncd_json_compact_size(const json_t *v, size_t cap)
{
    /* Room below SIZE_MAX for the last scalar or key added past cap. */
    if (cap == 0 || cap > SIZE_MAX / 2)
        cap = SIZE_MAX / 2;
    return compact_size(v, 0, cap, 0);
}

void *syncd_array_reserve(void *items, size_t *cap, size_t n, size_t size)
{
    size_t c = *cap > 0 ? *cap : 4;
    void *p;

    if (n <= *cap && items != NULL)
        return items;
    while (c < n)
        c *= 2;
    p = realloc(items, c * size);
    if (p != NULL)
        *cap = c;
    return p;
}
