/* record.c - the byte layout of a document record in RocksDB.
 *
 * The RocksDB store of record and the node cache keep the same records:
 * key = collection, NUL, id (so a prefix scan walks one collection in id
 * order); value = a fixed little-endian header followed by the canonical
 * JSON of the body:
 *
 *   u8 format (1) | u8 flags (bit 0: tombstone, bit 1: meta, bit 2:
 *   history apart) | i64 version | i64 mtime | u8 origin length | origin
 *   | u8 hash length (0 or 64) | hash | [u32 meta length | meta] | body
 *
 * where meta, present when flag bit 1 is set, is the compact JSON object
 * {"ik": idempotency keys, "hs": history entries (see history.c)} (either
 * may be absent; a record written before history existed has no "hs" and
 * reads as one without history): it lives in the record so that it
 * commits with the change, in the same write. The embedded store of
 * record keeps the history apart instead (rocks.c: an entry per key, in
 * the record's batch, so that a commit writes its one new entry rather
 * than all of them): its records have no "hs", and flag bit 2 says that
 * the record has history entries to read beside it. The record's outbox
 * markers live beside it (rocks.c keeps each under a key of its own,
 * written in the same batch), so that an ack, which changes only them,
 * does not rewrite the record; a record written before they moved may still
 * hold them as "ob", which decoding reads. The header can be read without
 * parsing the body, which is what listings and digests need. Canonical JSON
 * parses back to the same value (integers exact, reals round-trip), so bodies
 * come back exactly as written.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define RECORD_FORMAT 1
#define FLAG_DELETED 0x01
#define FLAG_META 0x02
#define FLAG_HIST_APART 0x04
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

/* Returns text (len bytes, the compact JSON of an object or NULL for {})
 * with the member "hs": doc's history text appended (malloc'd; text is
 * freed), or NULL on out of memory. The result is what json_dumps() gives
 * for the object with hs set last, without serializing the history again
 * when doc caches its text (syncd_history_text()). */
static char *meta_add_hist(char *text, size_t *len, const syncd_doc_t *doc)
{
    static const char key[] = "\"hs\":";
    const char *hist;
    char *made = NULL, *out = NULL;
    size_t hlen, head = text != NULL ? *len - 1 : 0;

    if (syncd_history_text(&hist, &hlen, &made, doc) == 0)
        out = malloc(head + 1 + sizeof(key) - 1 + hlen + 2);
    if (out != NULL) {
        if (text != NULL)
            memcpy(out, text, head); /* without its closing brace */
        out[head] = text != NULL ? ',' : '{';
        memcpy(out + head + 1, key, sizeof(key) - 1);
        memcpy(out + head + sizeof(key), hist, hlen);
        *len = head + sizeof(key) + hlen;
        out[(*len)++] = '}';
        out[*len] = '\0';
    }
    free(made);
    free(text);
    return out;
}

const char *syncd_text_cached(const json_t *pair, const json_t *of, size_t *len)
{
    const json_t *text = json_array_get(pair, 1);

    if (of == NULL || json_array_get(pair, 0) != of || !json_is_string(text))
        return NULL;
    *len = json_string_length(text);
    return json_string_value(text);
}

int syncd_text_of(const char **text, size_t *len, char **made,
                  const json_t *pair, const json_t *of)
{
    *made = NULL;
    *text = syncd_text_cached(pair, of, len);
    if (*text != NULL)
        return 0;
    *made = json_dumps(of, JSON_COMPACT);
    if (*made == NULL)
        return SYNCD_ENOMEM;
    *text = *made;
    *len = strlen(*made);
    return 0;
}

/* Appends to *text (*len bytes, malloc'd, reallocated) "," or "{" as the
 * text is empty, then "\"key\":" and vlen bytes of value. Returns 0, or
 * -1 on out of memory (*text is then freed and NULL). */
static int meta_member(char **text, size_t *len, const char *key,
                       const char *value, size_t vlen)
{
    size_t klen = strlen(key);
    char *grown = realloc(*text, *len + 1 + klen + 3 + vlen + 1);

    if (grown == NULL) {
        free(*text);
        *text = NULL;
        return -1;
    }
    grown[*len] = *len == 0 ? '{' : ',';
    (*len)++;
    grown[(*len)++] = '"';
    memcpy(grown + *len, key, klen);
    *len += klen;
    grown[(*len)++] = '"';
    grown[(*len)++] = ':';
    memcpy(grown + *len, value, vlen);
    *len += vlen;
    *text = grown;
    return 0;
}

/* Returns the compact JSON of doc's keys and (unless hist_apart) history
 * (malloc'd) with its length in *len, or NULL with *len 0 when it has
 * none; *len is (size_t)-1 on out of memory. It is what json_dumps() gives
 * for the object {"ik","hs"} of those present, the history taken from its
 * cached text when the doc has it. */
static char *meta_dump(const syncd_doc_t *doc, int hist_apart, size_t *len)
{
    char *text = NULL, *made;
    int ok = 1;

    *len = 0;
    if (json_array_size(doc->ikeys) > 0) {
        made = json_dumps(doc->ikeys, JSON_COMPACT);
        ok = made != NULL &&
             meta_member(&text, len, "ik", made, strlen(made)) == 0;
        free(made);
    }
    if (ok && text != NULL) {
        char *closed = realloc(text, *len + 2);

        ok = closed != NULL;
        if (ok) {
            closed[(*len)++] = '}';
            closed[*len] = '\0';
            text = closed;
        }
    }
    if (ok && !hist_apart && json_array_size(doc->hist) > 0) {
        text = meta_add_hist(text, len, doc);
        ok = text != NULL;
    }
    if (!ok) {
        free(text);
        text = NULL;
        *len = (size_t)-1;
    }
    return text;
}

static int64_t get_i64(const unsigned char *p)
{
    uint64_t u = 0;

    for (int i = 0; i < 8; i++)
        u |= (uint64_t)p[i] << (8 * i);
    return (int64_t)u;
}

int syncd_record_encode(char **out, size_t *len, const syncd_doc_t *doc,
                        int hist_apart, const char *canon, size_t canon_len,
                        syncd_error_t *err)
{
    size_t olen = strlen(doc->origin);
    size_t hlen = doc->deleted ? 0 : strlen(doc->hash);
    size_t blen = canon_len;
    const char *body = canon;
    char *made = NULL;
    size_t mlen;
    char *meta = meta_dump(doc, hist_apart, &mlen);
    int apart = hist_apart && json_array_size(doc->hist) > 0;
    unsigned char *buf, *p;

    *out = NULL;
    if (mlen == (size_t)-1)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    if (doc->deleted) {
        blen = 0;
    } else if (canon == NULL) {
        body = made = syncd_json_canonical(doc->body, &blen);
        if (made == NULL) {
            free(meta);
            return syncd_error_set(err, SYNCD_EINVAL,
                                   "body of %s/%s cannot be serialized",
                                   doc->coll, doc->id);
        }
    }
    buf = malloc(HEADER_FIXED + 1 + olen + 1 + hlen + 4 + mlen + blen);
    if (buf == NULL) {
        free(made);
        free(meta);
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }
    p = buf;
    *p++ = RECORD_FORMAT;
    *p++ = (doc->deleted ? FLAG_DELETED : 0) | (meta != NULL ? FLAG_META : 0) |
           (apart ? FLAG_HIST_APART : 0);
    put_i64(p, doc->version);
    put_i64(p + 8, doc->mtime_ms);
    p += 16;
    *p++ = (unsigned char)olen;
    memcpy(p, doc->origin, olen);
    p += olen;
    *p++ = (unsigned char)hlen;
    memcpy(p, doc->hash, hlen);
    p += hlen;
    if (meta != NULL) {
        for (int i = 0; i < 4; i++)
            *p++ = (unsigned char)(mlen >> (8 * i));
        memcpy(p, meta, mlen);
        p += mlen;
    }
    if (blen > 0)
        memcpy(p, body, blen);
    p += blen;
    free(made);
    free(meta);
    *out = (char *)buf;
    *len = (size_t)(p - buf);
    return 0;
}

int syncd_outbox_after(json_t **out, json_t *ob, int64_t version)
{
    json_t *left, *m;
    size_t i;

    *out = NULL;
    json_array_foreach (ob, i, m) {
        if (json_integer_value(json_object_get(m, "v")) <= version)
            break;
    }
    if (i == json_array_size(ob)) {
        *out = json_incref(ob);
        return 0;
    }
    left = json_array();
    if (left == NULL)
        return SYNCD_ENOMEM;
    json_array_foreach (ob, i, m) {
        if (json_integer_value(json_object_get(m, "v")) > version &&
            json_array_append(left, m) != 0) {
            json_decref(left);
            return SYNCD_ENOMEM;
        }
    }
    if (json_array_size(left) > 0)
        *out = left;
    else
        json_decref(left);
    return 1;
}

/* Reads the outbox, keys and history of doc from its meta JSON (len
 * bytes). */
static int decode_meta(syncd_doc_t *doc, const unsigned char *p, size_t len)
{
    json_t *meta = json_loadb((const char *)p, len, 0, NULL);
    json_t *ob = json_object_get(meta, "ob");
    json_t *ik = json_object_get(meta, "ik");
    json_t *hs = json_object_get(meta, "hs");

    if (!json_is_object(meta) || (ob != NULL && !json_is_array(ob)) ||
        (ik != NULL && !json_is_array(ik)) ||
        (hs != NULL && !json_is_array(hs))) {
        json_decref(meta);
        return -1;
    }
    doc->outbox = json_incref(ob);
    doc->ikeys = json_incref(ik);
    doc->hist = json_incref(hs);
    json_decref(meta);
    return 0;
}

static int corrupt(syncd_error_t *err, const char *coll, const char *id)
{
    return syncd_error_set_backend(err, SYNCD_EBACKEND, "rocksdb", 0,
                                   "record of %s/%s is corrupt", coll, id);
}

/* Where each part of an encoded record lies. */
typedef struct spans {
    int deleted;
    int64_t version, mtime_ms;
    const unsigned char *origin, *hash, *meta, *body;
    size_t olen, hlen, mlen, blen; /* meta: NULL when the record has none */
} spans_t;

/* Finds the parts of the record val (len bytes) into *sp; -1 when it is
 * not a well-formed record of this format. */
static int find_spans(spans_t *sp, const char *val, size_t len)
{
    const unsigned char *p = (const unsigned char *)val;
    const unsigned char *end = p + len;

    if (len < HEADER_FIXED + 1 || p[0] != RECORD_FORMAT)
        return -1;
    sp->deleted = (p[1] & FLAG_DELETED) != 0;
    sp->version = get_i64(p + 2);
    sp->mtime_ms = get_i64(p + 10);
    sp->meta = NULL;
    sp->mlen = 0;
    p += HEADER_FIXED;
    sp->olen = *p++;
    if (sp->olen > SYNCD_MAX_NODE_ID || (size_t)(end - p) < sp->olen + 1)
        return -1;
    sp->origin = p;
    p += sp->olen;
    sp->hlen = *p++;
    if (sp->hlen > SYNCD_HASH_HEX_LEN || (size_t)(end - p) < sp->hlen)
        return -1;
    sp->hash = p;
    p += sp->hlen;
    if (((const unsigned char *)val)[1] & FLAG_META) {
        if ((size_t)(end - p) < 4)
            return -1;
        for (int i = 0; i < 4; i++)
            sp->mlen |= (size_t)p[i] << (8 * i);
        p += 4;
        if ((size_t)(end - p) < sp->mlen)
            return -1;
        sp->meta = p;
        p += sp->mlen;
    }
    sp->body = p;
    sp->blen = (size_t)(end - p);
    return 0;
}

int syncd_record_decode(syncd_doc_t **out, const char *coll, const char *id,
                        const char *val, size_t len, int with_body,
                        syncd_error_t *err)
{
    syncd_doc_t *doc = NULL;
    json_error_t jerr;
    spans_t sp;

    *out = NULL;
    if (find_spans(&sp, val, len) != 0)
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
    doc->deleted = sp.deleted;
    doc->version = sp.version;
    doc->mtime_ms = sp.mtime_ms;
    memcpy(doc->origin, sp.origin, sp.olen);
    memcpy(doc->hash, sp.hash, sp.hlen);
    if (with_body && sp.meta != NULL && decode_meta(doc, sp.meta, sp.mlen) != 0)
        goto bad;
    if (with_body && !doc->deleted) {
        doc->body =
            json_loadb((const char *)sp.body, sp.blen, JSON_ALLOW_NUL, &jerr);
        if (!json_is_object(doc->body))
            goto bad;
        doc->body_size = sp.blen;
    }
    *out = doc;
    return 0;

bad:
    syncd_doc_free(doc);
    return corrupt(err, coll, id);
}

int syncd_record_hist_apart(const char *val, size_t len)
{
    return len > HEADER_FIXED && val[0] == RECORD_FORMAT &&
           (val[1] & FLAG_HIST_APART) != 0;
}

int syncd_record_take_hist(char **out, size_t *olen, json_t **hist,
                           const char *coll, const char *id, const char *val,
                           size_t len)
{
    syncd_doc_t *doc = NULL;
    spans_t sp;
    int rc;

    *out = NULL;
    *hist = NULL;
    if (find_spans(&sp, val, len) != 0 || sp.meta == NULL ||
        syncd_record_hist_apart(val, len) ||
        syncd_record_decode(&doc, coll, id, val, len, 0, NULL) != 0)
        return 0;
    if (decode_meta(doc, sp.meta, sp.mlen) != 0 || doc->hist == NULL) {
        syncd_doc_free(doc);
        return 0;
    }
    rc = syncd_record_encode(out, olen, doc, 1, (const char *)sp.body, sp.blen,
                             NULL);
    if (rc == 0)
        *hist = json_incref(doc->hist);
    syncd_doc_free(doc);
    return rc == 0 ? 1 : SYNCD_ENOMEM;
}
