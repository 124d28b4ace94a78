/* record.c - the byte layout of a document record in RocksDB.
 *
 * The RocksDB store of record and the node cache keep the same records:
 * key = collection, NUL, id (so a prefix scan walks one collection in id
 * order); value = a fixed little-endian header followed by the canonical
 * JSON of the body:
 *
 *   u8 format (1) | u8 flags (bit 0: tombstone) | i64 version | i64 mtime
 *   | u8 origin length | origin | u8 hash length (0 or 64) | hash | body
 *
 * The header can be read without parsing the body, which is what listings
 * and digests need. Canonical JSON parses back to the same value (integers
 * exact, reals round-trip), so bodies come back exactly as written.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define RECORD_FORMAT 1
#define FLAG_DELETED 0x01
#define HEADER_FIXED (1 + 1 + 8 + 8)

size_t syncd_record_key(char key[SYNCD_RECORD_KEY_MAX], const char *coll,
                        const char *id)
{
    size_t clen = strlen(coll);
    size_t ilen = strlen(id);

    if (clen > 64 || ilen > SYNCD_MAX_ID_BYTES)
        return 0;
    memcpy(key, coll, clen);
    key[clen] = '\0';
    memcpy(key + clen + 1, id, ilen);
    return clen + 1 + ilen;
}

int syncd_reckey_make(syncd_reckey_t *k, const char *coll, const char *id,
                      syncd_error_t *err)
{
    k->len = syncd_record_key(k->bytes, coll, id);
    if (k->len == 0)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "collection or id too long for a key");
    k->hash = syncd_lru_hash(k->bytes, k->len);
    return 0;
}

void syncd_reckey_node(syncd_lru_node_t *node, char *key,
                       const syncd_reckey_t *k, size_t size)
{
    memcpy(key, k->bytes, k->len);
    node->key = key;
    node->keylen = k->len;
    node->hash = k->hash;
    node->size = size;
}

static void put_i64(unsigned char *p, int64_t v)
{
    uint64_t u = (uint64_t)v;

    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(u >> (8 * i));
}

static int64_t get_i64(const unsigned char *p)
{
    uint64_t u = 0;

    for (int i = 0; i < 8; i++)
        u |= (uint64_t)p[i] << (8 * i);
    return (int64_t)u;
}

int syncd_record_encode(char **out, size_t *len, const syncd_doc_t *doc,
                        const char *canon, size_t canon_len, syncd_error_t *err)
{
    size_t olen = strlen(doc->origin);
    size_t hlen = doc->deleted ? 0 : strlen(doc->hash);
    size_t blen = canon_len;
    const char *body = canon;
    char *made = NULL;
    unsigned char *buf, *p;

    *out = NULL;
    if (doc->deleted) {
        blen = 0;
    } else if (canon == NULL) {
        body = made = syncd_json_canonical(doc->body, &blen);
        if (made == NULL)
            return syncd_error_set(err, SYNCD_EINVAL,
                                   "body of %s/%s cannot be serialized",
                                   doc->coll, doc->id);
    }
    buf = malloc(HEADER_FIXED + 1 + olen + 1 + hlen + blen);
    if (buf == NULL) {
        free(made);
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }
    p = buf;
    *p++ = RECORD_FORMAT;
    *p++ = doc->deleted ? FLAG_DELETED : 0;
    put_i64(p, doc->version);
    put_i64(p + 8, doc->mtime_ms);
    p += 16;
    *p++ = (unsigned char)olen;
    memcpy(p, doc->origin, olen);
    p += olen;
    *p++ = (unsigned char)hlen;
    memcpy(p, doc->hash, hlen);
    p += hlen;
    if (blen > 0)
        memcpy(p, body, blen);
    p += blen;
    free(made);
    *out = (char *)buf;
    *len = (size_t)(p - buf);
    return 0;
}

static int corrupt(syncd_error_t *err, const char *coll, const char *id)
{
    return syncd_error_set_backend(err, SYNCD_EBACKEND, "rocksdb", 0,
                                   "record of %s/%s is corrupt", coll, id);
}

int syncd_record_decode(syncd_doc_t **out, const char *coll, const char *id,
                        const char *val, size_t len, int with_body,
                        syncd_error_t *err)
{
    const unsigned char *p = (const unsigned char *)val;
    const unsigned char *end = p + len;
    syncd_doc_t *doc = NULL;
    size_t olen, hlen;
    json_error_t jerr;

    *out = NULL;
    if (len < HEADER_FIXED + 1 || p[0] != RECORD_FORMAT)
        return corrupt(err, coll, id);
    doc = calloc(1, sizeof(*doc));
    if (doc == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    doc->coll = strdup(coll);
    doc->id = strdup(id);
    if (doc->coll == NULL || doc->id == NULL) {
        syncd_doc_free(doc);
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }
    doc->deleted = (p[1] & FLAG_DELETED) != 0;
    doc->version = get_i64(p + 2);
    doc->mtime_ms = get_i64(p + 10);
    p += HEADER_FIXED;
    olen = *p++;
    if (olen > SYNCD_MAX_NODE_ID || (size_t)(end - p) < olen + 1)
        goto bad;
    memcpy(doc->origin, p, olen);
    p += olen;
    hlen = *p++;
    if (hlen > SYNCD_HASH_HEX_LEN || (size_t)(end - p) < hlen)
        goto bad;
    memcpy(doc->hash, p, hlen);
    p += hlen;
    if (with_body && !doc->deleted) {
        doc->body = json_loadb((const char *)p, (size_t)(end - p),
                               JSON_ALLOW_NUL, &jerr);
        if (!json_is_object(doc->body))
            goto bad;
    }
    *out = doc;
    return 0;

bad:
    syncd_doc_free(doc);
    return corrupt(err, coll, id);
}
