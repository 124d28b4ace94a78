/* hash.c - the content hash: a Merkle hash with content-defined chunks.
 *
 * The definition, byte for byte, is in doc/HASH.md; this file and the hash
 * tree (htree.c) are its only implementations and share the primitives
 * below. In short: a scalar hashes its type tag and canonical bytes; an
 * object member hashes its key and its value's hash; an object's members,
 * sorted by key bytes, and an array's elements form a list of entry hashes;
 * a list longer than SYNCD_HASH_FLAT_MAX is cut into chunks after entries
 * whose hash's last byte has its low 5 bits zero (between
 * SYNCD_HASH_CHUNK_MIN and SYNCD_HASH_CHUNK_MAX entries), the chunk hashes form
 * the next list, until one list is short enough to hash flat. A change to one
 * entry therefore rehashes the chunks on its path only, O(log n) of them.
 *
 * Hashes stored before this definition (SHA-256 of the canonical JSON) stay
 * valid: syncd_json_hash_matches() accepts either form.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "patch/internal.h"

void syncd_hash_scalar(unsigned char out[32], const json_t *v)
{
    syncd_sha256_ctx_t ctx;
    char text[40];

    syncd_sha256_init(&ctx);
    switch (json_typeof(v)) {
    case JSON_STRING:
        syncd_sha256_update(&ctx, "s", 1);
        syncd_sha256_update(&ctx, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        text[0] = 'i';
        syncd_sha256_update(
            &ctx, text,
            1 + syncd_canonical_int(text + 1, json_integer_value(v)));
        break;
    case JSON_REAL:
        syncd_sha256_update(&ctx, "r", 1);
        syncd_sha256_update(&ctx, text,
                            syncd_canonical_real(text, json_real_value(v)));
        break;
    case JSON_TRUE:
        syncd_sha256_update(&ctx, "t", 1);
        break;
    case JSON_FALSE:
        syncd_sha256_update(&ctx, "f", 1);
        break;
    default:
        syncd_sha256_update(&ctx, "n", 1);
        break;
    }
    syncd_sha256_final(&ctx, out);
}

void syncd_hash_member(unsigned char out[32], const char *key, size_t len,
                       const unsigned char vh[32])
{
    unsigned char head[9] = {'m'};
    syncd_sha256_ctx_t ctx;

    for (int i = 0; i < 8; i++)
        head[1 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    syncd_sha256_init(&ctx);
    syncd_sha256_update(&ctx, head, sizeof(head));
    syncd_sha256_update(&ctx, key, len);
    syncd_sha256_update(&ctx, vh, 32);
    syncd_sha256_final(&ctx, out);
}

size_t syncd_hash_chunk_end(const unsigned char (*items)[32], size_t start,
                            size_t n)
{
    for (size_t i = start; i < n; i++) {
        size_t size = i - start + 1;

        if (size == SYNCD_HASH_CHUNK_MAX ||
            (size >= SYNCD_HASH_CHUNK_MIN &&
             (items[i][31] & SYNCD_HASH_CHUNK_MASK) == 0))
            return i + 1;
    }
    return n;
}

/* Writes SHA-256(tag || the n hashes at items) into out. */
static void hash_list(unsigned char out[32], char tag,
                      const unsigned char (*items)[32], size_t n)
{
    syncd_sha256_ctx_t ctx;

    syncd_sha256_init(&ctx);
    syncd_sha256_update(&ctx, &tag, 1);
    if (n > 0)
        syncd_sha256_update(&ctx, items, n * 32);
    syncd_sha256_final(&ctx, out);
}

void syncd_hash_chunk(unsigned char out[32], const unsigned char (*items)[32],
                      size_t n)
{
    hash_list(out, 'C', items, n);
}

void syncd_hash_container(unsigned char out[32], int is_object,
                          const unsigned char (*top)[32], size_t n)
{
    unsigned char in[33];

    in[0] = is_object ? 'o' : 'a';
    hash_list(in + 1, 'L', top, n);
    syncd_sha256(out, in, sizeof(in));
}

void syncd_hash_hex(char out[SYNCD_HASH_HEX_LEN + 1],
                    const unsigned char raw[32])
{
    static const char digits[] = "0123456789abcdef";

    for (int i = 0; i < 32; i++) {
        out[2 * i] = digits[raw[i] >> 4];
        out[2 * i + 1] = digits[raw[i] & 15];
    }
    out[SYNCD_HASH_HEX_LEN] = '\0';
}

/* Reduces the n entry hashes at items, in place, to the value hash of their
 * container: chunk level after level until a list is short enough. */
static void hash_entries(unsigned char out[32], int is_object,
                         unsigned char (*items)[32], size_t n)
{
    while (n > SYNCD_HASH_FLAT_MAX) {
        size_t m = 0;

        for (size_t s = 0, e; s < n; s = e, m++) {
            unsigned char h[32];

            e = syncd_hash_chunk_end((const unsigned char(*)[32])items, s, n);
            syncd_hash_chunk(h, (const unsigned char(*)[32])items + s, e - s);
            memcpy(items[m], h, 32);
        }
        n = m;
    }
    syncd_hash_container(out, is_object, (const unsigned char(*)[32])items, n);
}

typedef struct member {
    const char *key;
    size_t len;
    json_t *value;
} member_t;

static int member_cmp(const void *pa, const void *pb)
{
    const member_t *a = pa, *b = pb;

    return syncd_key_cmp(a->key, a->len, b->key, b->len);
}

static int value_hash(unsigned char out[32], const json_t *v, int depth);

/* Hashes object v, inside depth containers (its own included). */
static int object_hash(unsigned char out[32], const json_t *v, int depth)
{
    size_t n = json_object_size(v), i = 0;
    unsigned char(*items)[32] = NULL;
    member_t *members = NULL;
    const char *key;
    size_t len;
    json_t *child;
    int rc = SYNCD_ENOMEM;

    members = malloc((n > 0 ? n : 1) * sizeof(*members));
    items = malloc((n > 0 ? n : 1) * sizeof(*items));
    if (members == NULL || items == NULL)
        goto cleanup;
    json_object_keylen_foreach ((json_t *)v, key, len, child) {
        members[i].key = key;
        members[i].len = len;
        members[i++].value = child;
    }
    qsort(members, n, sizeof(*members), member_cmp);
    for (i = 0; i < n; i++) {
        unsigned char vh[32];

        rc = value_hash(vh, members[i].value, depth);
        if (rc < 0)
            goto cleanup;
        syncd_hash_member(items[i], members[i].key, members[i].len, vh);
    }
    hash_entries(out, 1, items, n);
    rc = 0;
cleanup:
    free(members);
    free(items);
    return rc;
}

/* Hashes array v, inside depth containers (its own included). */
static int array_hash(unsigned char out[32], const json_t *v, int depth)
{
    size_t n = json_array_size(v);
    unsigned char(*items)[32] = malloc((n > 0 ? n : 1) * 32);
    int rc = 0;

    if (items == NULL)
        return SYNCD_ENOMEM;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = value_hash(items[i], json_array_get(v, i), depth);
    if (rc == 0)
        hash_entries(out, 0, items, n);
    free(items);
    return rc;
}

/* Hashes v, inside depth containers: SYNCD_EINVAL when a container of it
 * would nest deeper than SYNCD_PATCH_MAX_DEPTH (syncd_json_check_depth()'s
 * bound, checked on the way instead of by a walk of its own), SYNCD_ENOMEM. */
static int value_hash(unsigned char out[32], const json_t *v, int depth)
{
    if ((json_is_object(v) || json_is_array(v)) &&
        ++depth > SYNCD_PATCH_MAX_DEPTH)
        return SYNCD_EINVAL;
    if (json_is_object(v))
        return object_hash(out, v, depth);
    if (json_is_array(v))
        return array_hash(out, v, depth);
    syncd_hash_scalar(out, v);
    return 0;
}

int syncd_json_hash_raw(unsigned char out[32], const json_t *v,
                        syncd_error_t *err)
{
    int rc = value_hash(out, v, 0);

    if (rc == SYNCD_EINVAL)
        return syncd_error_set(err, rc,
                               "value nests deeper than %d arrays/objects",
                               SYNCD_PATCH_MAX_DEPTH);
    if (rc < 0)
        return syncd_error_set(err, SYNCD_ENOMEM,
                               "out of memory hashing the value");
    return 0;
}

int syncd_json_hash(char out[SYNCD_HASH_HEX_LEN + 1], const json_t *v,
                    syncd_error_t *err)
{
    unsigned char raw[32];
    int rc = syncd_json_hash_raw(raw, v, err);

    out[0] = '\0';
    if (rc == 0)
        syncd_hash_hex(out, raw);
    return rc;
}

int syncd_json_hash_matches(const char *hash, const json_t *v,
                            syncd_error_t *err)
{
    char hex[SYNCD_HASH_HEX_LEN + 1];
    size_t len;
    char *text;
    int rc = syncd_json_hash(hex, v, err);

    if (rc < 0)
        return rc;
    if (strcmp(hex, hash) == 0)
        return 1;
    text = syncd_json_canonical(v, &len);
    if (text == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM,
                               "out of memory serializing the value");
    syncd_sha256_hex(hex, text, len);
    free(text);
    return strcmp(hex, hash) == 0;
}
