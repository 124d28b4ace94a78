/* digest.c - the collection digest: a Merkle root over (id, version, hash).
 *
 * Two nodes, or a node and the store, agree on a collection when their
 * digests are equal. Other nodes and syncctl compute the same value, so the
 * construction is fixed here byte for byte:
 *
 *   1. Take the live entries and sort them by id, comparing bytes
 *      (memcmp order; ids are unique).
 *   2. Leaf i = SHA-256 of: id bytes, one NUL byte, the version in decimal
 *      ASCII (no sign, no leading zeros), one NUL byte, the 64 lower-case
 *      hex characters of the content hash.
 *   3. While more than one node is left, replace the list by its parents:
 *      parent = SHA-256 of the 32 raw bytes of the left node followed by
 *      the 32 raw bytes of the right node, pairing nodes (0,1), (2,3), ...;
 *      an odd last node is carried up unchanged.
 *   4. The digest is the lower-case hex of the last node. A collection with
 *      no live document has the digest SHA-256 of the empty string
 *      (e3b0c442...b855).
 *
 * A leaf's input is always longer than 64 bytes (the hash alone is 64), so
 * no leaf can be mistaken for a parent.
 *
 * The same root is also built streaming (syncd_merkle_*), leaves in id
 * order, in O(log n) memory: step 3 pairs whole perfect subtrees, so the
 * root of n leaves is that of the perfect subtrees of n's binary
 * decomposition, largest first, folded from the right
 * (root = H(P_largest || H(P_next || ... P_smallest))). Ranged digests
 * page through a collection with it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "syncd/store.h"

typedef struct leaf {
    const char *id;
    json_int_t v;
    const char *h;
} leaf_t;

static int leaf_cmp(const void *a, const void *b)
{
    return strcmp(((const leaf_t *)a)->id, ((const leaf_t *)b)->id);
}

/* Hashes one leaf into out (32 raw bytes); SYNCD_ENOMEM on failure. */
static int hash_leaf(unsigned char out[32], const leaf_t *leaf)
{
    size_t ilen = strlen(leaf->id);
    size_t hlen = strlen(leaf->h);
    char num[24];
    int nlen = snprintf(num, sizeof(num), "%lld", (long long)leaf->v);
    size_t len = ilen + 1 + (size_t)nlen + 1 + hlen;
    char *buf = malloc(len);

    if (buf == NULL)
        return SYNCD_ENOMEM;
    memcpy(buf, leaf->id, ilen);
    buf[ilen] = '\0';
    memcpy(buf + ilen + 1, num, (size_t)nlen);
    buf[ilen + 1 + (size_t)nlen] = '\0';
    memcpy(buf + ilen + 2 + (size_t)nlen, leaf->h, hlen);
    syncd_sha256(out, buf, len);
    free(buf);
    return 0;
}

/* Reads entries into a new array of leaves (borrowed strings). */
static int read_leaves(leaf_t **out, const json_t *entries, syncd_error_t *err)
{
    size_t n = json_array_size(entries);
    leaf_t *leaves;
    json_t *e;
    size_t i;

    *out = NULL;
    if (!json_is_array(entries))
        return syncd_error_set(err, SYNCD_EINVAL,
                               "digest entries must be an array");
    leaves = calloc(n > 0 ? n : 1, sizeof(*leaves));
    if (leaves == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    json_array_foreach (entries, i, e) {
        json_t *id = json_object_get(e, "id");
        json_t *v = json_object_get(e, "v");
        json_t *h = json_object_get(e, "h");

        if (!json_is_string(id) || !json_is_integer(v) || !json_is_string(h) ||
            json_integer_value(v) < 0) {
            free(leaves);
            return syncd_error_set(err, SYNCD_EINVAL,
                                   "digest entry %zu needs a string id, a "
                                   "non-negative integer v and a string h",
                                   i);
        }
        leaves[i].id = json_string_value(id);
        leaves[i].v = json_integer_value(v);
        leaves[i].h = json_string_value(h);
    }
    *out = leaves;
    return 0;
}

void syncd_merkle_init(syncd_merkle_t *m)
{
    memset(m, 0, sizeof(*m));
}

int syncd_merkle_add(syncd_merkle_t *m, const char *id, int64_t v,
                     const char *h)
{
    leaf_t leaf = {id, (json_int_t)v, h};
    unsigned char node[32];
    unsigned char height = 0;

    if (hash_leaf(node, &leaf) != 0)
        return SYNCD_ENOMEM;
    /* Like a binary counter: equal heights on top merge into a parent. */
    while (m->depth > 0 && m->height[m->depth - 1] == height) {
        unsigned char pair[64];

        memcpy(pair, m->nodes[m->depth - 1], 32);
        memcpy(pair + 32, node, 32);
        syncd_sha256(node, pair, sizeof(pair));
        m->depth--;
        height++;
    }
    memcpy(m->nodes[m->depth], node, 32);
    m->height[m->depth] = height;
    m->depth++;
    m->count++;
    return 0;
}

void syncd_merkle_final(const syncd_merkle_t *m, syncd_digest_t *out)
{
    unsigned char root[32];

    memset(out, 0, sizeof(*out));
    if (m->depth == 0) {
        syncd_sha256_hex(out->hex, "", 0);
        return;
    }
    memcpy(root, m->nodes[m->depth - 1], 32);
    for (size_t i = m->depth - 1; i > 0; i--) {
        unsigned char pair[64];

        memcpy(pair, m->nodes[i - 1], 32);
        memcpy(pair + 32, root, 32);
        syncd_sha256(root, pair, sizeof(pair));
    }
    for (size_t i = 0; i < 32; i++)
        snprintf(out->hex + 2 * i, 3, "%02x", root[i]);
    out->count = m->count;
}

int syncd_digest_entries(syncd_digest_t *out, const json_t *entries,
                         syncd_error_t *err)
{
    size_t n = json_array_size(entries);
    unsigned char(*nodes)[32] = NULL;
    leaf_t *leaves = NULL;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = read_leaves(&leaves, entries, err);
    if (rc != 0)
        return rc;
    if (n == 0) {
        syncd_sha256_hex(out->hex, "", 0);
        goto done;
    }
    qsort(leaves, n, sizeof(*leaves), leaf_cmp);
    nodes = malloc(n * sizeof(*nodes));
    if (nodes == NULL) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if (hash_leaf(nodes[i], &leaves[i]) != 0) {
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
            goto done;
        }
    }
    for (size_t level = n; level > 1; level = (level + 1) / 2) {
        for (size_t i = 0; i < level / 2; i++) {
            unsigned char parent[32];

            syncd_sha256(parent, nodes[2 * i], 64);
            memcpy(nodes[i], parent, 32);
        }
        if (level % 2 == 1)
            memcpy(nodes[level / 2], nodes[level - 1], 32);
    }
    for (size_t i = 0; i < 32; i++)
        snprintf(out->hex + 2 * i, 3, "%02x", nodes[0][i]);
    out->count = n;
done:
    free(nodes);
    free(leaves);
    return rc;
}
