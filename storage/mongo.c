/* mongo.c - MongoDB store of record: documents as BSON, CAS on {_id, v}.
 *
 * One Mongo collection per syncd collection, in a configurable database.
 * Each record is one document (DESIGN.md section 2):
 *
 *   {_id: <id string>, v: int64, data: <body as BSON>, h: <hash string>,
 *    mt: <BSON date, ms>, by: <origin node>, del: <bool>,
 *    ob: [pending-publish markers], ik: [recent idempotency keys],
 *    hist: <history entries, oldest first, as compact JSON text (see
 *    history.c)>}
 *
 * where a tombstone has del: true, h: "" and no data, and ob and ik are
 * absent when empty. ob and ik are written by the same compare-and-swap as
 * the change (the transactional outbox, see store.c); an ack drops the
 * markers up to its version from whatever version the record is at,
 * rewriting ob with the filter {_id, v} of the version it read, so it
 * never clears a newer writer's markers. A sparse
 * index on ob, made the first time a collection's outbox is listed, keeps
 * that listing from scanning the collection. hist is written with the
 * change in the same way and is absent when empty; a record written
 * before history existed reads as one without.
 *
 * Bodies round-trip exactly. Inside `data` every object key is escaped with
 * '%' so that keys MongoDB restricts survive: '%' becomes "%25", '.' "%2E",
 * NUL "%00", a leading '$' "%24", and the empty key the lone "%". Any other
 * byte is kept, so the encoding is reversible and injective (an escaped key
 * is "%" or has every '%' followed by two upper-case hex digits). JSON
 * integers are stored as int64 and reals as doubles, so the two stay
 * distinct. Two values FerretDB v1 cannot hold are stored as tag
 * documents, whose single key can never be an escaped key: -0.0 (FerretDB
 * drops the sign of a zero) as {"%-0": true}, and an array that is an
 * element of an array (FerretDB rejects nested arrays) as {"%a": [...]}.
 *
 * The compare-and-swap is an insert when the expected version is 0 (a
 * duplicate key, error 11000, is a conflict) and otherwise a replace with
 * the filter {_id, v: expected} (matched 0 is a conflict): one atomic
 * single-document operation on MongoDB.
 *
 * A write whose caller knows the record already (the node cache's entry)
 * skips the read: one findAndModify filtered on {_id, v: expected, h:
 * expected hash} (and, when it adds a marker, on "ob.99" not existing:
 * an outbox holding SYNCD_MAX_OUTBOX_MARKERS refuses it; when it adds an
 * idempotency key, on no "ik.k" equal to it) $sets the new version's
 * fields and $pushes its marker and key, returning the ob and ik it
 * committed. A miss writes nothing and the caller falls back to the read
 * and the replace. FerretDB mode does not offer it.
 *
 * FerretDB v1 (its SQLite backend was checked by experiment and in its
 * source) runs a filtered update as a query followed by an update by _id,
 * which loses updates under concurrency, and an update that a writer sent
 * long ago can land after newer ones (its query ran, or its bytes were held
 * in the network, a proxy or a stopped process); only an insert (its unique
 * _id) is atomic there. No server says whether its filtered update is
 * atomic (no field of hello, buildInfo or serverStatus tells), and a probe
 * at open could prove only a lost update, by chance, never its absence. So
 * the path follows the product that `buildInfo` names: a server that
 * reports `ferretdbVersion` (FerretDB, any version: v2 was not checked, and
 * the chain below is correct, only slower, on an atomic server) gets the
 * commit chain; every other server gets the single filtered replace:
 * MongoDB, and mongo-java-server (which applies a filtered single-document
 * update under its collection lock; the tests run it there).
 *
 * The commit chain (FerretDB mode). A version is committed by an insert,
 * the one write FerretDB makes atomic: the writer of version e + 1 inserts
 * the commit record {_id: "<id>\x1f<n>\x1f<e, 20 digits>", r: <the whole
 * new record, _id included>} into the side collection
 * "_syncd_commits.<coll>", where n is the document's incarnation token
 * (a field of every record, drawn when the document is created, so that a
 * document purged and created again never meets its old chain). The insert
 * that succeeds owns version e + 1; a duplicate key is a conflict, and so is
 * a document past e, or one behind e whose version e has no commit record
 * (e was never committed). Then the writer copies r into the document (a
 * replace filtered on {_id, v, n} as it read them) and makes the commit
 * record of e a stub {_id}, its body being no longer needed; neither write
 * decides anything, and a failure of either is no failure of the write.
 *
 * So the document is only a copy. It lags behind when its writer died or
 * stalled between the insert and the copy, and it can even be set back to
 * an older committed version, by a copy or an ack whose update by _id
 * landed late. Every read follows the chain: from the document at version
 * v, while the commit record of v + 1 exists, it moves on to that version
 * (a stub always has a successor, since a record becomes one only after the
 * next was inserted). Commit records are never deleted, so from any version
 * a document can be set back to, the chain reaches the newest. A get, the
 * listings, versions, export and the outbox listing all read that way, so
 * no acknowledged write is ever lost or hidden, whenever a late update lands
 * and whoever stalls; a writer never answers success for a version it did
 * not win, nor a conflict for one it won. The outbox listing reads every
 * document (a lagging one may hide its newest record's markers) and an ack
 * copies the newest record into a lagging document before it drops its
 * markers there (an ack set back only publishes a marker twice).
 *
 * A purge of a tombstone that is the newest record inserts the commit record
 * of the next version as a fence {_id, p: true} (no writer can build on the
 * tombstone, and no second purge can run) and then deletes the document; a
 * chain that reaches a fence reads as not found. What is left behind: a
 * stub per version written (about 60 bytes) and the fence of each purge,
 * the price of never having to bound how late an update lands. The one
 * thing the chain does not cover is a single FerretDB command that stalls
 * inside the server, between its query and its update, for longer than the
 * tombstone retention, across a purge and a new creation of the same id.
 *
 * This costs FerretDB mode an exact-_id read per get and per listed record
 * (FerretDB's SQLite backend indexes only _id equality) and, per write, the
 * commit insert and the stub beside the read and the copy.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mongoc/mongoc.h>

#include "internal.h"

#define BACKEND "mongodb"
#define DUPLICATE_KEY 11000
#define COMMITS_PREFIX "_syncd_commits."
#define NEG_ZERO_TAG "%-0"
#define ARRAY_TAG "%a"
#define INC_FIELD "n" /* a document's incarnation token (FerretDB mode) */
#define INC_BYTES 40  /* room for an incarnation token */
#define CHAIN_KEY_BYTES (SYNCD_MAX_ID_BYTES + INC_BYTES + 24)
#define PURGE_PAGE 1000 /* tombstones a purge lists per query */
#define KEY_STACK 256

typedef struct mongo_backend {
    syncd_backend_t base;
    syncd_backend_ops_t ops; /* base.ops: mongo_ops, less what the mode lacks */
    mongoc_client_pool_t *pool;
    pthread_mutex_t conn_lock; /* guards idle (initialized with pool) */
    struct conn *idle;         /* clients between calls (call_begin()) */
    char *db;
    int chain; /* 1 when filtered updates are not atomic (FerretDB) */
    pthread_mutex_t indexed_lock;
    json_t *indexed; /* collections given their outbox index: name -> true */
} mongo_backend_t;

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* Tells this process's incarnation tokens from every other process's;
 * drawn once at the first open. */
static uint64_t process_nonce;

static syncd_mongo_commit_hook_fn commit_hook;
static void *commit_hook_data;

static void init_driver(void)
{
    struct timespec ts;
    FILE *f = fopen("/dev/urandom", "rb");

    mongoc_init();
    if (!f || fread(&process_nonce, sizeof(process_nonce), 1, f) != 1) {
        clock_gettime(CLOCK_REALTIME, &ts);
        process_nonce = (uint64_t)ts.tv_sec * 1000000007u ^
                        (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 32;
    }
    if (f)
        fclose(f);
}

void syncd_backend_mongo_set_commit_hook(syncd_mongo_commit_hook_fn fn,
                                         void *data)
{
    commit_hook = fn;
    commit_hook_data = data;
}

static int driver_error(syncd_error_t *err, const bson_error_t *e,
                        const char *what, const char *coll, const char *id)
{
    return syncd_error_set_backend(err, SYNCD_EBACKEND, BACKEND, (int)e->code,
                                   "mongodb %s %s/%s: %s", what, coll,
                                   id ? id : "", e->message);
}

static int conflict(syncd_error_t *err, const char *coll, const char *id,
                    int64_t expected)
{
    return syncd_error_set(err, SYNCD_ECONFLICT, "%s/%s is not at version %lld",
                           coll, id, (long long)expected);
}

/* ---- Body encoding ------------------------------------------------------- */

static const char hex_digits[] = "0123456789ABCDEF";

static int needs_escape(const char *key, size_t i)
{
    unsigned char c = (unsigned char)key[i];

    return c == '%' || c == '.' || c == '\0' || (c == '$' && i == 0);
}

/* Escapes key (len bytes) into buf when it fits, else into new memory;
 * returns the NUL-terminated result (free it when it is not buf), or NULL
 * on out of memory. */
static char *escape_key(const char *key, size_t len, char *buf, size_t size)
{
    size_t need = len == 0 ? 2 : len * 3 + 1;
    char *out = need <= size ? buf : malloc(need);
    size_t o = 0;

    if (!out)
        return NULL;
    if (len == 0)
        out[o++] = '%';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)key[i];

        if (needs_escape(key, i)) {
            out[o++] = '%';
            out[o++] = hex_digits[c >> 4];
            out[o++] = hex_digits[c & 15];
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
    return out;
}

static int hex_value(char c)
{
    const char *p = c ? strchr(hex_digits, c) : NULL;

    return p ? (int)(p - hex_digits) : -1;
}

/* Reverses escape_key() into out (at least strlen(key) + 1 bytes), length
 * in *len; returns -1 when key is not a valid escaped key. */
static int unescape_key(const char *key, char *out, size_t *len)
{
    size_t o = 0;

    if (strcmp(key, "%") == 0) {
        *len = 0;
        return 0;
    }
    for (size_t i = 0; key[i]; i++) {
        if (key[i] != '%') {
            if (key[i] == '.' || (key[i] == '$' && i == 0))
                return -1;
            out[o++] = key[i];
            continue;
        }
        int hi = hex_value(key[i + 1]);
        int lo = hi < 0 ? -1 : hex_value(key[i + 2]);
        if (lo < 0)
            return -1;
        out[o] = (char)(hi << 4 | lo);
        if (!needs_escape(out, o))
            return -1;
        o++;
        i += 2;
    }
    *len = o;
    return 0;
}

static int encode_value(bson_t *b, const char *key, const json_t *v,
                        syncd_error_t *err);

static int encode_object(bson_t *b, const json_t *obj, syncd_error_t *err)
{
    const char *key;
    size_t klen;
    json_t *v;
    char stack[KEY_STACK];

    json_object_keylen_foreach ((json_t *)obj, key, klen, v) {
        char *ek = escape_key(key, klen, stack, sizeof(stack));
        int rc;

        if (!ek)
            return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        rc = encode_value(b, ek, v, err);
        if (ek != stack)
            free(ek);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int encode_container(bson_t *b, const char *key, const json_t *v,
                            syncd_error_t *err);

/* Appends v under key inside the tag document {"%a": v}. */
static int encode_array_tag(bson_t *b, const char *key, const json_t *v,
                            syncd_error_t *err)
{
    bson_t sub;
    int rc;

    if (!bson_append_document_begin(b, key, -1, &sub))
        return syncd_error_set(err, SYNCD_ETOOBIG, "body too large for BSON");
    rc = encode_container(&sub, ARRAY_TAG, v, err);
    if (!bson_append_document_end(b, &sub) && rc == 0)
        rc = syncd_error_set(err, SYNCD_ETOOBIG, "body too large for BSON");
    return rc;
}

static int encode_array(bson_t *b, const json_t *arr, syncd_error_t *err)
{
    char buf[16];
    const char *key;

    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *v = json_array_get(arr, i);
        int rc;

        bson_uint32_to_string((uint32_t)i, &key, buf, sizeof(buf));
        rc = json_is_array(v) ? encode_array_tag(b, key, v, err)
                              : encode_value(b, key, v, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int encode_container(bson_t *b, const char *key, const json_t *v,
                            syncd_error_t *err)
{
    bson_t sub;
    int rc;
    int is_array = json_is_array(v);

    if (!(is_array ? bson_append_array_begin(b, key, -1, &sub)
                   : bson_append_document_begin(b, key, -1, &sub)))
        return syncd_error_set(err, SYNCD_ETOOBIG, "body too large for BSON");
    rc = is_array ? encode_array(&sub, v, err) : encode_object(&sub, v, err);
    if (!(is_array ? bson_append_array_end(b, &sub)
                   : bson_append_document_end(b, &sub)) &&
        rc == 0)
        rc = syncd_error_set(err, SYNCD_ETOOBIG, "body too large for BSON");
    return rc;
}

static int encode_neg_zero(bson_t *b, const char *key, syncd_error_t *err)
{
    bson_t sub;

    if (!bson_append_document_begin(b, key, -1, &sub) ||
        !bson_append_bool(&sub, NEG_ZERO_TAG, -1, true) ||
        !bson_append_document_end(b, &sub))
        return syncd_error_set(err, SYNCD_ETOOBIG, "body too large for BSON");
    return 0;
}

/* Appends v under key (already escaped) to b. */
static int encode_value(bson_t *b, const char *key, const json_t *v,
                        syncd_error_t *err)
{
    bool ok = true;
    double d;

    switch (json_typeof(v)) {
    case JSON_OBJECT:
    case JSON_ARRAY:
        return encode_container(b, key, v, err);
    case JSON_STRING:
        ok = bson_append_utf8(b, key, -1, json_string_value(v),
                              (int)json_string_length(v));
        break;
    case JSON_INTEGER:
        ok = bson_append_int64(b, key, -1, (int64_t)json_integer_value(v));
        break;
    case JSON_REAL:
        d = json_real_value(v);
        if (d == 0 && signbit(d))
            return encode_neg_zero(b, key, err);
        ok = bson_append_double(b, key, -1, d);
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        ok = bson_append_bool(b, key, -1, json_is_true(v));
        break;
    case JSON_NULL:
        ok = bson_append_null(b, key, -1);
        break;
    }
    return ok ? 0
              : syncd_error_set(err, SYNCD_ETOOBIG, "body too large for BSON");
}

/* ---- Body decoding ------------------------------------------------------- */

static int decode_value(json_t **out, bson_iter_t *it, syncd_error_t *err);

static int corrupt(syncd_error_t *err, const char *what)
{
    return syncd_error_set_backend(err, SYNCD_EBACKEND, BACKEND, 0,
                                   "mongodb: stored record is invalid: %s",
                                   what);
}

/* Returns 1 when the document at it is the tag document {tag: <value>},
 * with child left on the value. */
static int is_tag(const bson_iter_t *it, const char *tag, bson_iter_t *child)
{
    bson_iter_t next;

    if (!bson_iter_recurse(it, child) || !bson_iter_next(child) ||
        strcmp(bson_iter_key(child), tag) != 0)
        return 0;
    next = *child;
    return !bson_iter_next(&next);
}

static int decode_object(json_t **out, bson_iter_t *it, syncd_error_t *err)
{
    bson_iter_t child;
    json_t *obj = json_object();
    char stack[KEY_STACK];
    int rc = 0;

    if (!obj)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    if (!bson_iter_recurse(it, &child))
        rc = corrupt(err, "unreadable document");
    while (rc == 0 && bson_iter_next(&child)) {
        const char *key = bson_iter_key(&child);
        size_t klen = strlen(key);
        char *raw = klen < sizeof(stack) ? stack : malloc(klen + 1);
        json_t *v = NULL;

        if (!raw) {
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
            break;
        }
        if (unescape_key(key, raw, &klen) < 0)
            rc = corrupt(err, "badly escaped key");
        if (rc == 0)
            rc = decode_value(&v, &child, err);
        if (rc == 0 && json_object_setn_new_nocheck(obj, raw, klen, v) < 0)
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        if (raw != stack)
            free(raw);
    }
    if (rc < 0) {
        json_decref(obj);
        return rc;
    }
    *out = obj;
    return 0;
}

static int decode_array(json_t **out, bson_iter_t *it, syncd_error_t *err)
{
    bson_iter_t child;
    json_t *arr = json_array();
    int rc = 0;

    if (!arr)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    if (!bson_iter_recurse(it, &child))
        rc = corrupt(err, "unreadable array");
    while (rc == 0 && bson_iter_next(&child)) {
        json_t *v = NULL;

        rc = decode_value(&v, &child, err);
        if (rc == 0 && json_array_append_new(arr, v) < 0)
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

/* Converts the BSON value at it into a new JSON value in *out. */
static int decode_value(json_t **out, bson_iter_t *it, syncd_error_t *err)
{
    bson_iter_t child;
    uint32_t len;
    const char *s;

    switch (bson_iter_type(it)) {
    case BSON_TYPE_DOCUMENT:
        if (is_tag(it, NEG_ZERO_TAG, &child)) {
            *out = json_real(-0.0);
            break;
        }
        if (is_tag(it, ARRAY_TAG, &child) && BSON_ITER_HOLDS_ARRAY(&child))
            return decode_array(out, &child, err);
        return decode_object(out, it, err);
    case BSON_TYPE_ARRAY:
        return decode_array(out, it, err);
    case BSON_TYPE_UTF8:
        s = bson_iter_utf8(it, &len);
        *out = json_stringn_nocheck(s, len);
        break;
    case BSON_TYPE_INT32:
        *out = json_integer(bson_iter_int32(it));
        break;
    case BSON_TYPE_INT64:
        *out = json_integer(bson_iter_int64(it));
        break;
    case BSON_TYPE_DOUBLE:
        *out = json_real(bson_iter_double(it));
        break;
    case BSON_TYPE_BOOL:
        *out = json_boolean(bson_iter_bool(it));
        break;
    case BSON_TYPE_NULL:
        *out = json_null();
        break;
    default:
        return corrupt(err, "a value of a type JSON does not have");
    }
    return *out ? 0 : syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
}

/* ---- Records ------------------------------------------------------------- */

/* Appends doc's history entries as the string field hist: their compact
 * JSON, one value the server stores without looking inside (cheaper for
 * it, and for us, than a BSON array of documents); the text doc caches
 * when it has it (syncd_history_text()). */
static int append_hist(bson_t *rec, const syncd_doc_t *doc, syncd_error_t *err)
{
    const char *text;
    char *made;
    size_t len;
    int ok;

    if (syncd_history_text(&text, &len, &made, doc) != 0)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    ok = len <= INT_MAX && bson_append_utf8(rec, "hist", 4, text, (int)len);
    free(made);
    return ok ? 0
              : syncd_error_set(err, SYNCD_ETOOBIG,
                                "record too large for BSON");
}

/* Reads the string field hist of b (see append_hist()) into a new array in
 * doc->hist, left NULL when absent, and keeps its text in doc->hist_text
 * so that the next history is built from it. */
static int field_hist(syncd_doc_t *doc, const bson_t *b, syncd_error_t *err)
{
    bson_iter_t it;
    uint32_t len;
    const char *text;

    doc->hist = NULL;
    if (!bson_iter_init_find(&it, b, "hist"))
        return 0;
    if (!BSON_ITER_HOLDS_UTF8(&it))
        return corrupt(err, "a history that is not a string");
    text = bson_iter_utf8(&it, &len);
    doc->hist = json_loadb(text, len, 0, NULL);
    if (!json_is_array(doc->hist)) {
        json_decref(doc->hist);
        doc->hist = NULL;
        return corrupt(err, "a history that is not a JSON array");
    }
    if (syncd_history_keep_text(doc, text, len) == SYNCD_ENOMEM)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    return 0;
}

/* Builds the stored form of doc into rec (initialised here; the caller
 * destroys it), with the _id field when with_id is set. */
static int build_record(bson_t *rec, const syncd_doc_t *doc, int with_id,
                        syncd_error_t *err)
{
    bson_t data;
    int rc = 0;

    bson_init(rec);
    if (with_id)
        BSON_APPEND_UTF8(rec, "_id", doc->id);
    BSON_APPEND_INT64(rec, "v", doc->version);
    if (!doc->deleted && doc->body) {
        BSON_APPEND_DOCUMENT_BEGIN(rec, "data", &data);
        rc = encode_object(&data, doc->body, err);
        if (!bson_append_document_end(rec, &data) && rc == 0)
            rc = syncd_error_set(err, SYNCD_ETOOBIG, "body too large for BSON");
    }
    BSON_APPEND_UTF8(rec, "h", doc->deleted ? "" : doc->hash);
    BSON_APPEND_DATE_TIME(rec, "mt", doc->mtime_ms);
    BSON_APPEND_UTF8(rec, "by", doc->origin);
    BSON_APPEND_BOOL(rec, "del", doc->deleted != 0);
    if (rc == 0 && json_array_size(doc->outbox) > 0)
        rc = encode_value(rec, "ob", doc->outbox, err);
    if (rc == 0 && json_array_size(doc->ikeys) > 0)
        rc = encode_value(rec, "ik", doc->ikeys, err);
    if (rc == 0 && json_array_size(doc->hist) > 0)
        rc = append_hist(rec, doc, err);
    return rc;
}

/* Decodes the optional array field name of b into a new reference in
 * *out (left NULL when absent). */
static int field_array(json_t **out, const bson_t *b, const char *name,
                       syncd_error_t *err)
{
    bson_iter_t it;

    *out = NULL;
    if (!bson_iter_init_find(&it, b, name))
        return 0;
    if (!BSON_ITER_HOLDS_ARRAY(&it))
        return corrupt(err, "an outbox or key list that is not an array");
    return decode_value(out, &it, err);
}

static int64_t field_int64(const bson_t *b, const char *name)
{
    bson_iter_t it;

    if (!bson_iter_init_find(&it, b, name))
        return 0;
    if (BSON_ITER_HOLDS_DATE_TIME(&it))
        return bson_iter_date_time(&it);
    return bson_iter_as_int64(&it);
}

static void field_string(char *dst, size_t size, const bson_t *b,
                         const char *name)
{
    bson_iter_t it;

    dst[0] = '\0';
    if (bson_iter_init_find(&it, b, name) && BSON_ITER_HOLDS_UTF8(&it))
        snprintf(dst, size, "%s", bson_iter_utf8(&it, NULL));
}

static int field_bool(const bson_t *b, const char *name)
{
    bson_iter_t it;

    return bson_iter_init_find(&it, b, name) && bson_iter_as_bool(&it);
}

/* Decodes a stored record of coll into a new syncd_doc_t in *out. */
static int parse_record(syncd_doc_t **out, const bson_t *b, const char *coll,
                        syncd_error_t *err)
{
    bson_iter_t it;
    syncd_doc_t *doc = calloc(1, sizeof(*doc));
    int rc = 0;

    if (!doc)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    if (!bson_iter_init_find(&it, b, "_id") || !BSON_ITER_HOLDS_UTF8(&it)) {
        rc = corrupt(err, "_id is not a string");
        goto cleanup;
    }
    doc->coll = strdup(coll);
    doc->id = strdup(bson_iter_utf8(&it, NULL));
    if (!doc->coll || !doc->id) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto cleanup;
    }
    doc->version = field_int64(b, "v");
    doc->mtime_ms = field_int64(b, "mt");
    doc->deleted = field_bool(b, "del");
    field_string(doc->hash, sizeof(doc->hash), b, "h");
    field_string(doc->origin, sizeof(doc->origin), b, "by");
    rc = field_array(&doc->outbox, b, "ob", err);
    if (rc == 0)
        rc = field_array(&doc->ikeys, b, "ik", err);
    if (rc == 0)
        rc = field_hist(doc, b, err);
    if (rc == 0 && !doc->deleted) {
        if (!bson_iter_init_find(&it, b, "data") ||
            !BSON_ITER_HOLDS_DOCUMENT(&it)) {
            rc = corrupt(err, "a live record without a data document");
            goto cleanup;
        }
        rc = decode_object(&doc->body, &it, err);
    }

cleanup:
    if (rc < 0) {
        syncd_doc_free(doc);
        return rc;
    }
    *out = doc;
    return 0;
}

/* ---- Connection ---------------------------------------------------------- */

/* A client taken from the pool, kept idle with the collection handles
 * opened on it: a call takes both from the backend's idle list under one
 * lock, instead of a pool round and a handle made and destroyed per call
 * (together about 7 us of CPU a call, measured on the edit path). */
#define CONN_COLLS 8
typedef struct conn {
    struct conn *next; /* in m->idle */
    mongoc_client_t *client;
    mongoc_collection_t *coll[CONN_COLLS]; /* reused round robin */
    unsigned hand;                         /* the slot a new handle takes */
} conn_t;

typedef struct call {
    conn_t *conn; /* NULL when out of memory: client and coll are the call's */
    mongoc_client_t *client;
    mongoc_collection_t *coll;
} call_t;

/* Returns conn's handle of collection name, opened now if it has none
 * (taking the place of its oldest handle). */
static mongoc_collection_t *conn_collection(conn_t *conn, const char *db,
                                            const char *name)
{
    unsigned slot;

    for (slot = 0; slot < CONN_COLLS; slot++)
        if (conn->coll[slot] != NULL &&
            strcmp(mongoc_collection_get_name(conn->coll[slot]), name) == 0)
            return conn->coll[slot];
    slot = conn->hand++ % CONN_COLLS;
    if (conn->coll[slot] != NULL)
        mongoc_collection_destroy(conn->coll[slot]);
    conn->coll[slot] = mongoc_client_get_collection(conn->client, db, name);
    return conn->coll[slot];
}

/* Takes an idle client of m (or one from the pool) and its handle of
 * collection coll. */
static void call_begin(call_t *c, mongo_backend_t *m, const char *coll)
{
    pthread_mutex_lock(&m->conn_lock);
    c->conn = m->idle;
    if (c->conn != NULL)
        m->idle = c->conn->next;
    pthread_mutex_unlock(&m->conn_lock);
    if (c->conn == NULL && (c->conn = calloc(1, sizeof(*c->conn))) != NULL)
        c->conn->client = mongoc_client_pool_pop(m->pool);
    if (c->conn == NULL) {
        c->client = mongoc_client_pool_pop(m->pool);
        c->coll = mongoc_client_get_collection(c->client, m->db, coll);
        return;
    }
    c->client = c->conn->client;
    c->coll = conn_collection(c->conn, m->db, coll);
}

/* Gives back what call_begin() took. */
static void call_end(call_t *c, mongo_backend_t *m)
{
    if (c->conn == NULL) {
        mongoc_collection_destroy(c->coll);
        mongoc_client_pool_push(m->pool, c->client);
        return;
    }
    pthread_mutex_lock(&m->conn_lock);
    c->conn->next = m->idle;
    m->idle = c->conn;
    pthread_mutex_unlock(&m->conn_lock);
}

/* Destroys m's idle clients' handles and returns the clients to the pool
 * (at close, when no call is under way). */
static void conns_free(mongo_backend_t *m)
{
    while (m->idle != NULL) {
        conn_t *conn = m->idle;

        m->idle = conn->next;
        for (unsigned i = 0; i < CONN_COLLS; i++)
            if (conn->coll[i] != NULL)
                mongoc_collection_destroy(conn->coll[i]);
        mongoc_client_pool_push(m->pool, conn->client);
        free(conn);
    }
}

/* Finds the first document matching filter into *out (a copy the caller
 * destroys; NULL when none matched). */
static int find_one(bson_t **out, mongoc_collection_t *c, const bson_t *filter,
                    const char *coll, const char *id, syncd_error_t *err)
{
    bson_t *opts = BCON_NEW("limit", BCON_INT64(1));
    mongoc_cursor_t *cur =
        mongoc_collection_find_with_opts(c, filter, opts, NULL);
    const bson_t *found;
    bson_error_t e;
    int rc = 0;

    *out = NULL;
    if (mongoc_cursor_next(cur, &found))
        *out = bson_copy(found);
    else if (mongoc_cursor_error(cur, &e))
        rc = driver_error(err, &e, "find", coll, id);
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    return rc;
}

static int insert_record(mongoc_collection_t *c, const bson_t *rec,
                         const char *coll, const char *id, syncd_error_t *err)
{
    bson_error_t e;

    if (mongoc_collection_insert_one(c, rec, NULL, NULL, &e))
        return 0;
    if (e.code == DUPLICATE_KEY)
        return syncd_error_set(err, SYNCD_ECONFLICT, "%s/%s already exists",
                               coll, id);
    return driver_error(err, &e, "insert", coll, id);
}

/* Replaces coll/id with rec (no _id) when its version is expected, or
 * whatever its version when expected is 0; *matched says whether it was
 * replaced. */
static int replace_record(mongoc_collection_t *c, const char *id,
                          const bson_t *rec, int64_t expected, int *matched,
                          const char *coll, syncd_error_t *err)
{
    bson_t *filter =
        expected > 0 ? BCON_NEW("_id", BCON_UTF8(id), "v", BCON_INT64(expected))
                     : BCON_NEW("_id", BCON_UTF8(id));
    bson_t reply;
    bson_error_t e;
    int rc = 0;

    if (mongoc_collection_replace_one(c, filter, rec, NULL, &reply, &e))
        *matched = field_int64(&reply, "matchedCount") > 0;
    else
        rc = driver_error(err, &e, "replace", coll, id);
    bson_destroy(&reply);
    bson_destroy(filter);
    return rc;
}

/* ---- The commit chain (FerretDB mode) ------------------------------------ */

/* Writes into buf the _id of the commit record of version + 1 of coll/id
 * in incarnation inc: "<id>\x1f<inc>\x1f<version, 20 digits>". */
static void chain_key(char *buf, size_t size, const char *id, const char *inc,
                      int64_t version)
{
    snprintf(buf, size, "%s\x1f%s\x1f%020lld", id, inc, (long long)version);
}

/* Returns a new handle (the caller destroys it) of the commit records of
 * coll, on the client of call c. */
static mongoc_collection_t *chain_records(mongo_backend_t *m, const call_t *c,
                                          const char *coll)
{
    char name[160];

    snprintf(name, sizeof(name), COMMITS_PREFIX "%s", coll);
    return mongoc_client_get_collection(c->client, m->db, name);
}

/* Reads the commit record of version + 1 of coll/id in incarnation inc
 * into *out (a copy the caller destroys; NULL when there is none). */
static int chain_read(bson_t **out, mongoc_collection_t *records,
                      const char *coll, const char *id, const char *inc,
                      int64_t version, syncd_error_t *err)
{
    char key[CHAIN_KEY_BYTES];
    bson_t *filter;
    int rc;

    chain_key(key, sizeof(key), id, inc, version);
    filter = BCON_NEW("_id", BCON_UTF8(key));
    rc = find_one(out, records, filter, coll, id, err);
    bson_destroy(filter);
    return rc;
}

/* Follows the commit chain of coll/id from *rec, the document as read
 * (see the file comment): while the commit record of the next version
 * exists, moves on to it. On return *rec is the newest committed record
 * (replaced by a copy the caller destroys when it is not the document),
 * or NULL when the chain ends in a purge. */
static int chain_follow(mongo_backend_t *m, const call_t *c, const char *coll,
                        const char *id, bson_t **rec, syncd_error_t *err)
{
    mongoc_collection_t *records = chain_records(m, c, coll);
    char inc[INC_BYTES];
    int64_t v = field_int64(*rec, "v");
    int rc = 0;

    field_string(inc, sizeof(inc), *rec, INC_FIELD);
    for (;;) {
        bson_t *next = NULL;
        bson_iter_t it;

        rc = chain_read(&next, records, coll, id, inc, v, err);
        if (rc < 0 || next == NULL)
            break;
        v++;
        if (bson_iter_init_find(&it, next, "p")) {
            bson_destroy(next);
            bson_destroy(*rec);
            *rec = NULL;
            break;
        }
        /* A record without r is a stub: its successor exists. */
        if (bson_iter_init_find(&it, next, "r") &&
            BSON_ITER_HOLDS_DOCUMENT(&it)) {
            const uint8_t *data;
            uint32_t len;

            bson_iter_document(&it, &len, &data);
            bson_destroy(*rec);
            *rec = bson_new_from_data(data, len);
        }
        bson_destroy(next);
        if (*rec == NULL) {
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
            break;
        }
    }
    if (rc == 0 && *rec != NULL && field_int64(*rec, "v") != v)
        rc = corrupt(err, "a commit chain ends in a stub");
    mongoc_collection_destroy(records);
    return rc;
}

/* Appends to filter the incarnation of record rec (when it has one), so
 * that an update sent for one incarnation never matches the next. */
static void chain_fence(bson_t *filter, const bson_t *rec)
{
    char inc[INC_BYTES];

    field_string(inc, sizeof(inc), rec, INC_FIELD);
    if (inc[0] != '\0')
        BSON_APPEND_UTF8(filter, INC_FIELD, inc);
}

/* Copies the newest record rec of coll/id into the document, which is at
 * version at (a replace filtered on that version and incarnation: it may
 * still be set back by a late update, which readers see past). */
static int chain_copy(mongoc_collection_t *docs, const bson_t *rec, int64_t at,
                      const char *coll, const char *id, syncd_error_t *err)
{
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id), "v", BCON_INT64(at));
    bson_error_t e;
    int rc = 0;

    chain_fence(filter, rec);
    if (!mongoc_collection_replace_one(docs, filter, rec, NULL, NULL, &e))
        rc = driver_error(err, &e, "replace", coll, id);
    bson_destroy(filter);
    return rc;
}

/* Reads coll/id as committed into *out (a copy the caller destroys; NULL
 * when it does not exist or was purged); *at is the version the document
 * itself is at (0 when there is none). */
static int chain_get(bson_t **out, mongo_backend_t *m, const call_t *c,
                     const char *coll, const char *id, int64_t *at,
                     syncd_error_t *err)
{
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    int rc = find_one(out, c->coll, filter, coll, id, err);

    bson_destroy(filter);
    *at = *out != NULL ? field_int64(*out, "v") : 0;
    if (rc == 0 && *out != NULL)
        rc = chain_follow(m, c, coll, id, out, err);
    if (rc < 0 && *out != NULL) {
        bson_destroy(*out);
        *out = NULL;
    }
    return rc;
}

/* Inserts the commit record {_id: key of version expected + 1, more} of
 * coll/id in incarnation inc (a duplicate: SYNCD_ECONFLICT). */
static int chain_insert(mongoc_collection_t *records, const char *coll,
                        const char *id, const char *inc, int64_t expected,
                        const char *field, const bson_t *more,
                        syncd_error_t *err)
{
    char key[CHAIN_KEY_BYTES];
    bson_t *record;
    bson_error_t e;
    int rc = 0;

    chain_key(key, sizeof(key), id, inc, expected);
    record = BCON_NEW("_id", BCON_UTF8(key));
    if (more != NULL)
        BSON_APPEND_DOCUMENT(record, field, more);
    else
        BSON_APPEND_BOOL(record, field, true);
    if (!mongoc_collection_insert_one(records, record, NULL, NULL, &e))
        rc = e.code == DUPLICATE_KEY
                 ? conflict(err, coll, id, expected)
                 : driver_error(err, &e, "commit", coll, id);
    bson_destroy(record);
    return rc;
}

/* Makes the commit record of version + 1 of coll/id a stub {_id}: the
 * version after it is committed, so nothing reads its body any more. */
static void chain_stub(mongoc_collection_t *records, const char *id,
                       const char *inc, int64_t version)
{
    char key[CHAIN_KEY_BYTES];
    bson_t *filter, stub = BSON_INITIALIZER;

    chain_key(key, sizeof(key), id, inc, version);
    filter = BCON_NEW("_id", BCON_UTF8(key));
    mongoc_collection_replace_one(records, filter, &stub, NULL, NULL, NULL);
    bson_destroy(filter);
}

/* The compare-and-swap of FerretDB mode (see the file comment): commits
 * rec (with its _id) as version expected + 1 of coll/id by inserting its
 * commit record, then copies it into the document. */
static int chain_commit(mongo_backend_t *m, const call_t *c, bson_t *rec,
                        const char *coll, const char *id, int64_t expected,
                        syncd_error_t *err)
{
    mongoc_collection_t *records = chain_records(m, c, coll);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    bson_t *found = NULL, *base = NULL;
    char inc[INC_BYTES];
    int64_t at;
    int rc = find_one(&found, c->coll, filter, coll, id, err);

    if (rc < 0)
        goto cleanup;
    at = found != NULL ? field_int64(found, "v") : expected + 1;
    if (at > expected)
        rc = conflict(err, coll, id, expected);
    if (rc < 0)
        goto cleanup;
    field_string(inc, sizeof(inc), found, INC_FIELD);
    /* A document behind expected: expected must have been committed. */
    if (at < expected && (rc = chain_read(&base, records, coll, id, inc,
                                          expected - 1, err)) == 0) {
        bson_iter_t it;

        if (base == NULL || bson_iter_init_find(&it, base, "p"))
            rc = conflict(err, coll, id, expected);
    }
    if (rc == 0 && !BSON_APPEND_UTF8(rec, INC_FIELD, inc))
        rc = syncd_error_set(err, SYNCD_ETOOBIG, "record too large for BSON");
    if (rc == 0)
        rc = chain_insert(records, coll, id, inc, expected, "r", rec, err);
    if (rc < 0)
        goto cleanup;
    if (commit_hook)
        commit_hook(coll, id, expected, commit_hook_data);
    /* Committed: the copy and the stub only save later readers work. */
    chain_copy(c->coll, rec, at, coll, id, NULL);
    if (expected > 1)
        chain_stub(records, id, inc, expected - 1);

cleanup:
    if (base != NULL)
        bson_destroy(base);
    if (found != NULL)
        bson_destroy(found);
    bson_destroy(filter);
    mongoc_collection_destroy(records);
    return rc;
}

/* Sets rec's incarnation token to a new one, unique to this creation. */
static int chain_incarnate(bson_t *rec, syncd_error_t *err)
{
    static uint64_t seq;
    char inc[INC_BYTES];

    snprintf(inc, sizeof(inc), "%016llx.%llx",
             (unsigned long long)process_nonce,
             (unsigned long long)__atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
    if (!BSON_APPEND_UTF8(rec, INC_FIELD, inc))
        return syncd_error_set(err, SYNCD_ETOOBIG, "record too large for BSON");
    return 0;
}

/* ---- Operations ---------------------------------------------------------- */

static int mongo_get(syncd_backend_t *b, syncd_doc_t **out, const char *coll,
                     const char *id, syncd_error_t *err)
{
    mongo_backend_t *m = (mongo_backend_t *)b;
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    bson_t *found = NULL;
    int64_t at;
    call_t c;
    int rc;

    call_begin(&c, m, coll);
    rc = m->chain ? chain_get(&found, m, &c, coll, id, &at, err)
                  : find_one(&found, c.coll, filter, coll, id, err);
    call_end(&c, m);
    if (rc == 0 && !found)
        rc = syncd_error_set(err, SYNCD_ENOTFOUND, "%s/%s not found", coll, id);
    if (rc == 0)
        rc = parse_record(out, found, coll, err);
    if (found)
        bson_destroy(found);
    bson_destroy(filter);
    return rc;
}

static int mongo_cas(syncd_backend_t *b, const syncd_doc_t *doc,
                     int64_t expected, syncd_error_t *err)
{
    mongo_backend_t *m = (mongo_backend_t *)b;
    bson_t rec;
    call_t c;
    int matched = 0;
    int rc = build_record(&rec, doc, expected == 0 || m->chain, err);

    if (rc == 0 && expected == 0 && m->chain)
        rc = chain_incarnate(&rec, err);
    if (rc < 0) {
        bson_destroy(&rec);
        return rc;
    }
    call_begin(&c, m, doc->coll);
    if (expected == 0)
        rc = insert_record(c.coll, &rec, doc->coll, doc->id, err);
    else if (m->chain)
        rc = chain_commit(m, &c, &rec, doc->coll, doc->id, expected, err);
    else if ((rc = replace_record(c.coll, doc->id, &rec, expected, &matched,
                                  doc->coll, err)) == 0 &&
             !matched)
        rc = conflict(err, doc->coll, doc->id, expected);
    call_end(&c, m);
    bson_destroy(&rec);
    return rc;
}

/* Appends {name: {$each: [v], $slice: -slice}} to push ($slice left out
 * when slice is 0). */
static int push_each(bson_t *push, const char *name, const json_t *v, int slice,
                     syncd_error_t *err)
{
    bson_t field, each;
    int rc;

    BSON_APPEND_DOCUMENT_BEGIN(push, name, &field);
    BSON_APPEND_ARRAY_BEGIN(&field, "$each", &each);
    rc = encode_value(&each, "0", v, err);
    bson_append_array_end(&field, &each);
    if (slice > 0)
        BSON_APPEND_INT32(&field, "$slice", -slice);
    if (!bson_append_document_end(push, &field) && rc == 0)
        rc = syncd_error_set(err, SYNCD_ETOOBIG, "record too large for BSON");
    return rc;
}

/* Builds the update of mongo_cas_update() into u (initialised here; the
 * caller destroys it): $set of doc's header, body (a tombstone $unsets
 * the body) and history, $push of its marker and idempotency key. Without
 * a history (history off, or none yet) it $unsets any history left, as
 * build_record() leaves it out. */
static int build_update(bson_t *u, const syncd_doc_t *doc, const json_t *marker,
                        const json_t *ikey, syncd_error_t *err)
{
    bson_t set, data, unset, push;
    int rc = 0;

    bson_init(u);
    BSON_APPEND_DOCUMENT_BEGIN(u, "$set", &set);
    BSON_APPEND_INT64(&set, "v", doc->version);
    if (!doc->deleted) {
        BSON_APPEND_DOCUMENT_BEGIN(&set, "data", &data);
        rc = encode_object(&data, doc->body, err);
        if (!bson_append_document_end(&set, &data) && rc == 0)
            rc = syncd_error_set(err, SYNCD_ETOOBIG, "body too large for BSON");
    }
    BSON_APPEND_UTF8(&set, "h", doc->deleted ? "" : doc->hash);
    BSON_APPEND_DATE_TIME(&set, "mt", doc->mtime_ms);
    BSON_APPEND_UTF8(&set, "by", doc->origin);
    BSON_APPEND_BOOL(&set, "del", doc->deleted != 0);
    if (rc == 0 && json_array_size(doc->hist) > 0)
        rc = append_hist(&set, doc, err);
    bson_append_document_end(u, &set);
    if (doc->deleted || json_array_size(doc->hist) == 0) {
        BSON_APPEND_DOCUMENT_BEGIN(u, "$unset", &unset);
        if (doc->deleted)
            BSON_APPEND_UTF8(&unset, "data", "");
        if (json_array_size(doc->hist) == 0)
            BSON_APPEND_UTF8(&unset, "hist", "");
        bson_append_document_end(u, &unset);
    }
    if (rc == 0 && (marker != NULL || ikey != NULL)) {
        BSON_APPEND_DOCUMENT_BEGIN(u, "$push", &push);
        if (marker != NULL)
            rc = push_each(&push, "ob", marker, 0, err);
        if (rc == 0 && ikey != NULL)
            rc = push_each(&push, "ik", ikey, SYNCD_MAX_IDEMPOTENCY_KEYS, err);
        bson_append_document_end(u, &push);
    }
    return rc;
}

/* Builds the filter of mongo_cas_update() into f: the record at version
 * expected with hash expected_hash, with room for marker (when given) and
 * without the key of ikey (when given). */
static void build_update_filter(bson_t *f, const char *id, int64_t expected,
                                const char *expected_hash, const json_t *marker,
                                const json_t *ikey)
{
    char full[32];

    bson_init(f);
    BSON_APPEND_UTF8(f, "_id", id);
    BSON_APPEND_INT64(f, "v", expected);
    BSON_APPEND_UTF8(f, "h", expected_hash);
    if (marker != NULL) {
        snprintf(full, sizeof(full), "ob.%d", SYNCD_MAX_OUTBOX_MARKERS - 1);
        BCON_APPEND(f, full, "{", "$exists", BCON_BOOL(false), "}");
    }
    if (ikey != NULL)
        BCON_APPEND(f, "ik.k", "{", "$ne",
                    BCON_UTF8(json_string_value(json_object_get(ikey, "k"))),
                    "}");
}

/* The write without a read (single-operation mode only, see the file
 * comment): one findAndModify fenced on {_id, v, h} that sets the new
 * version and pushes its marker and key, returning the record's ob and ik
 * as committed. */
static int mongo_cas_update(syncd_backend_t *b, const syncd_doc_t *doc,
                            int64_t expected, const char *expected_hash,
                            json_t **outbox, json_t **ikeys, syncd_error_t *err)
{
    mongo_backend_t *m = (mongo_backend_t *)b;
    const json_t *marker = json_array_get(doc->outbox, 0);
    const json_t *ikey = json_array_get(doc->ikeys, 0);
    mongoc_find_and_modify_opts_t *opts = mongoc_find_and_modify_opts_new();
    /* The projection {"ob": 1, "ik": 1} as BSON. */
    static const uint8_t projection[] = {21,  0, 0, 0, 0x10, 'o',  'b',
                                         0,   1, 0, 0, 0,    0x10, 'i',
                                         'k', 0, 1, 0, 0,    0,    0};
    bson_t fields, filter, update, value;
    bson_t reply = BSON_INITIALIZER;
    const uint8_t *buf;
    uint32_t len;
    bson_iter_t it;
    bson_error_t e;
    call_t c;
    int rc = build_update(&update, doc, marker, ikey, err);

    *outbox = NULL;
    *ikeys = NULL;
    build_update_filter(&filter, doc->id, expected, expected_hash, marker,
                        ikey);
    if (rc < 0)
        goto cleanup;
    mongoc_find_and_modify_opts_set_update(opts, &update);
    bson_init_static(&fields, projection, sizeof(projection));
    mongoc_find_and_modify_opts_set_fields(opts, &fields);
    mongoc_find_and_modify_opts_set_flags(opts,
                                          MONGOC_FIND_AND_MODIFY_RETURN_NEW);
    call_begin(&c, m, doc->coll);
    if (!mongoc_collection_find_and_modify_with_opts(c.coll, &filter, opts,
                                                     &reply, &e))
        rc = driver_error(err, &e, "update", doc->coll, doc->id);
    call_end(&c, m);
    if (rc < 0)
        goto cleanup;
    if (!bson_iter_init_find(&it, &reply, "value") ||
        !BSON_ITER_HOLDS_DOCUMENT(&it)) {
        rc = conflict(err, doc->coll, doc->id, expected);
        goto cleanup;
    }
    bson_iter_document(&it, &len, &buf);
    if (!bson_init_static(&value, buf, len)) {
        rc = corrupt(err, "an unreadable findAndModify reply");
        goto cleanup;
    }
    rc = field_array(outbox, &value, "ob", err);
    if (rc == 0)
        rc = field_array(ikeys, &value, "ik", err);
    if (rc < 0) {
        json_decref(*outbox);
        *outbox = NULL;
    }

cleanup:
    bson_destroy(&reply);
    bson_destroy(&update);
    bson_destroy(&filter);
    mongoc_find_and_modify_opts_destroy(opts);
    return rc;
}

static uint32_t utf8_decode(const unsigned char *p)
{
    if (p[0] < 0x80)
        return p[0];
    if (p[0] < 0xE0)
        return (uint32_t)(p[0] & 0x1F) << 6 | (p[1] & 0x3F);
    if (p[0] < 0xF0)
        return (uint32_t)(p[0] & 0x0F) << 12 | (uint32_t)(p[1] & 0x3F) << 6 |
               (p[2] & 0x3F);
    return (uint32_t)(p[0] & 0x07) << 18 | (uint32_t)(p[1] & 0x3F) << 12 |
           (uint32_t)(p[2] & 0x3F) << 6 | (p[3] & 0x3F);
}

/* Writes cp as UTF-8 at p followed by a NUL (at most 5 bytes). */
static void utf8_encode(char *p, uint32_t cp)
{
    if (cp < 0x80) {
        *p++ = (char)cp;
    } else if (cp < 0x800) {
        *p++ = (char)(0xC0 | cp >> 6);
        *p++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *p++ = (char)(0xE0 | cp >> 12);
        *p++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *p++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *p++ = (char)(0xF0 | cp >> 18);
        *p++ = (char)(0x80 | (cp >> 12 & 0x3F));
        *p++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *p++ = (char)(0x80 | (cp & 0x3F));
    }
    *p = '\0';
}

/* Sets *bound to a new upper bound for ids starting with prefix (every
 * such id sorts below it), or to NULL when there is none: the prefix with
 * its last code point below U+10FFFF incremented, UTF-8 byte order being
 * code point order. */
static int prefix_bound(char **bound, const char *prefix, syncd_error_t *err)
{
    size_t len = strlen(prefix);
    char *b = malloc(len + 5);

    *bound = NULL;
    if (!b)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    memcpy(b, prefix, len + 1);
    while (len > 0) {
        size_t start = len - 1;

        while (start > 0 && ((unsigned char)b[start] & 0xC0) == 0x80)
            start--;
        uint32_t cp = utf8_decode((unsigned char *)b + start);
        if (cp < 0x10FFFF) {
            utf8_encode(b + start, cp + 1 == 0xD800 ? 0xE000 : cp + 1);
            *bound = b;
            return 0;
        }
        len = start;
    }
    free(b);
    return 0;
}

/* Builds the list filter into f: ids in the prefix range and after
 * `after`, live records only unless with_tombstones. */
static int list_filter(bson_t *f, const char *prefix, const char *after,
                       int with_tombstones, syncd_error_t *err)
{
    char *bound = NULL;
    bson_t range;

    if (prefix && prefix_bound(&bound, prefix, err) < 0)
        return SYNCD_ENOMEM;
    BSON_APPEND_DOCUMENT_BEGIN(f, "_id", &range);
    BSON_APPEND_UTF8(&range, "$gte", prefix ? prefix : "");
    if (bound)
        BSON_APPEND_UTF8(&range, "$lt", bound);
    if (after)
        BSON_APPEND_UTF8(&range, "$gt", after);
    bson_append_document_end(f, &range);
    if (!with_tombstones)
        BCON_APPEND(f, "del", "{", "$ne", BCON_BOOL(true), "}");
    free(bound);
    return 0;
}

/* Called by find_each() with each record r found; adds what it needs to
 * acc. Returns 0 or a negative SYNCD_E* code, which stops the walk. */
typedef int (*row_fn)(json_t *acc, const bson_t *r, const char *arg,
                      syncd_error_t *err);

/* Runs find(filter, opts) on coll and passes each record to row with acc
 * and arg; a driver error is named by what and key. In FerretDB mode each
 * record is first followed to the newest committed one (a purged one is
 * left out, and so is a tombstone when live_only), and the walk stops once
 * acc holds limit entries (0: no limit), since the query could not apply
 * either. Returns 0 or a negative SYNCD_E* code. */
static int find_each(mongo_backend_t *m, const char *coll, const bson_t *filter,
                     const bson_t *opts, row_fn row, json_t *acc,
                     const char *arg, const char *what, const char *key,
                     size_t limit, int live_only, syncd_error_t *err)
{
    mongoc_cursor_t *cur;
    const bson_t *r;
    bson_error_t e;
    call_t c;
    int rc = 0;

    call_begin(&c, m, coll);
    cur = mongoc_collection_find_with_opts(c.coll, filter, opts, NULL);
    while (rc == 0 && (limit == 0 || json_array_size(acc) < limit) &&
           mongoc_cursor_next(cur, &r)) {
        bson_t *rec;
        bson_iter_t it;

        if (!m->chain) {
            rc = row(acc, r, arg, err);
            continue;
        }
        if (!bson_iter_init_find(&it, r, "_id") || !BSON_ITER_HOLDS_UTF8(&it)) {
            rc = corrupt(err, "_id is not a string");
            break;
        }
        rec = bson_copy(r);
        rc = chain_follow(m, &c, coll, bson_iter_utf8(&it, NULL), &rec, err);
        if (rc == 0 && rec != NULL && !(live_only && field_bool(rec, "del")))
            rc = row(acc, rec, arg, err);
        if (rec != NULL)
            bson_destroy(rec);
    }
    if (rc == 0 && mongoc_cursor_error(cur, &e))
        rc = driver_error(err, &e, what, coll, key);
    mongoc_cursor_destroy(cur);
    call_end(&c, m);
    return rc;
}

/* Appends the listing entry of record r to arr; ids outside prefix (past
 * an inexact bound) are skipped. */
static int list_entry(json_t *arr, const bson_t *r, const char *prefix,
                      syncd_error_t *err)
{
    bson_iter_t it;
    char hash[SYNCD_HASH_HEX_LEN + 1];
    const char *id;
    json_t *e;

    if (!bson_iter_init_find(&it, r, "_id") || !BSON_ITER_HOLDS_UTF8(&it))
        return corrupt(err, "_id is not a string");
    id = bson_iter_utf8(&it, NULL);
    if (prefix && strncmp(id, prefix, strlen(prefix)) != 0)
        return 0;
    field_string(hash, sizeof(hash), r, "h");
    e = json_pack("{s:s, s:I, s:s}", "id", id, "v",
                  (json_int_t)field_int64(r, "v"), "h", hash);
    if (e && field_bool(r, "del") &&
        (json_object_set_new(e, "del", json_true()) < 0 ||
         json_object_set_new(e, "mt", json_integer(field_int64(r, "mt"))) <
             0)) {
        json_decref(e);
        e = NULL;
    }
    if (!e || json_array_append_new(arr, e) < 0)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    return 0;
}

/* Lists into a new array *out (the caller owns it) what row makes of each
 * record of coll that list_filter(prefix, after, with_tombstones) selects,
 * found with opts (destroyed here); a driver error is named by what. */
static int find_listed(mongo_backend_t *m, json_t **out, const char *coll,
                       const char *prefix, const char *after,
                       int with_tombstones, size_t limit, bson_t *opts,
                       row_fn row, const char *arg, const char *what,
                       syncd_error_t *err)
{
    bson_t filter = BSON_INITIALIZER;
    json_t *arr = json_array();
    int rc;

    if (!arr) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto cleanup;
    }
    if (limit > 0 && !m->chain)
        BSON_APPEND_INT64(opts, "limit", (int64_t)limit);
    rc = list_filter(&filter, prefix, after, with_tombstones || m->chain, err);
    if (rc == 0)
        rc = find_each(m, coll, &filter, opts, row, arr, arg, what,
                       prefix != NULL ? prefix : after, limit, !with_tombstones,
                       err);

cleanup:
    bson_destroy(opts);
    bson_destroy(&filter);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

static int mongo_list(syncd_backend_t *b, json_t **out, const char *coll,
                      const char *prefix, const char *after, size_t limit,
                      int with_tombstones, syncd_error_t *err)
{
    bson_t *opts =
        BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}", "projection", "{",
                 "data", BCON_INT32(0), "hist", BCON_INT32(0), "}");

    return find_listed((mongo_backend_t *)b, out, coll, prefix, after,
                       with_tombstones, limit, opts, list_entry, prefix, "list",
                       err);
}

/* Appends record r of collection coll to arr as an export line
 * {id,v,h,data} unless it is a tombstone. */
static int export_entry(json_t *arr, const bson_t *r, const char *coll,
                        syncd_error_t *err)
{
    syncd_doc_t *doc = NULL;
    int rc = parse_record(&doc, r, coll, err);

    if (rc == 0 && !doc->deleted &&
        json_array_append_new(arr,
                              json_pack("{s:s, s:I, s:s, s:O}", "id", doc->id,
                                        "v", (json_int_t)doc->version, "h",
                                        doc->hash, "data", doc->body)) != 0)
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    syncd_doc_free(doc);
    return rc;
}

/* Lists one export page: live records after `after`, bodies included, in
 * one query. */
static int mongo_export_page(syncd_backend_t *b, json_t **out, const char *coll,
                             const char *after, size_t limit,
                             syncd_error_t *err)
{
    bson_t *opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}");

    return find_listed((mongo_backend_t *)b, out, coll, NULL, after, 0, limit,
                       opts, export_entry, coll, "export", err);
}

/* Builds the filter {_id: {$in: ids}} into f. */
static void versions_filter(bson_t *f, const json_t *ids)
{
    bson_t in, arr;
    char buf[16];
    const char *key;
    json_t *id;
    size_t i;

    BSON_APPEND_DOCUMENT_BEGIN(f, "_id", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    json_array_foreach (ids, i, id) {
        bson_uint32_to_string((uint32_t)i, &key, buf, sizeof(buf));
        bson_append_utf8(&arr, key, -1, json_string_value(id), -1);
    }
    bson_append_array_end(&in, &arr);
    bson_append_document_end(f, &in);
}

/* Sets map[id] = {v,h,del} of record r. */
static int versions_entry(json_t *map, const bson_t *r, const char *unused,
                          syncd_error_t *err)
{
    char hash[SYNCD_HASH_HEX_LEN + 1];
    bson_iter_t it;

    (void)unused;
    if (!bson_iter_init_find(&it, r, "_id") || !BSON_ITER_HOLDS_UTF8(&it))
        return corrupt(err, "_id is not a string");
    field_string(hash, sizeof(hash), r, "h");
    if (json_object_set_new(map, bson_iter_utf8(&it, NULL),
                            json_pack("{s:I, s:s, s:b}", "v",
                                      (json_int_t)field_int64(r, "v"), "h",
                                      hash, "del", field_bool(r, "del"))) < 0)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    return 0;
}

static int mongo_versions(syncd_backend_t *b, json_t **out, const char *coll,
                          const json_t *ids, syncd_error_t *err)
{
    mongo_backend_t *m = (mongo_backend_t *)b;
    bson_t filter = BSON_INITIALIZER;
    bson_t *opts = BCON_NEW("projection", "{", "_id", BCON_INT32(1), "v",
                            BCON_INT32(1), "h", BCON_INT32(1), "del",
                            BCON_INT32(1), INC_FIELD, BCON_INT32(1), "}");
    json_t *map = json_object();
    int rc = 0;

    *out = NULL;
    if (!map) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto cleanup;
    }
    versions_filter(&filter, ids);
    rc = find_each(m, coll, &filter, opts, versions_entry, map, NULL,
                   "versions", NULL, 0, 0, err);

cleanup:
    bson_destroy(opts);
    bson_destroy(&filter);
    if (rc < 0) {
        json_decref(map);
        return rc;
    }
    *out = map;
    return 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int mongo_collections(syncd_backend_t *b, json_t **out,
                             syncd_error_t *err)
{
    mongo_backend_t *m = (mongo_backend_t *)b;
    mongoc_client_t *client = mongoc_client_pool_pop(m->pool);
    mongoc_database_t *db = mongoc_client_get_database(client, m->db);
    bson_error_t e;
    char **names = mongoc_database_get_collection_names_with_opts(db, NULL, &e);
    json_t *arr = NULL;
    size_t n = 0;
    int rc = 0;

    if (!names) {
        rc = driver_error(err, &e, "listCollections", m->db, NULL);
        goto cleanup;
    }
    while (names[n])
        n++;
    qsort(names, n, sizeof(*names), compare_names);
    arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        if (syncd_validate_collection(names[i], NULL) == 0 &&
            json_array_append_new(arr, json_string(names[i])) < 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    if (!arr)
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");

cleanup:
    bson_strfreev(names);
    mongoc_database_destroy(db);
    mongoc_client_pool_push(m->pool, client);
    if (rc == 0)
        *out = arr;
    return rc;
}

static int delete_many(mongoc_collection_t *c, const bson_t *filter,
                       int64_t *deleted, const char *coll, syncd_error_t *err)
{
    bson_t reply;
    bson_error_t e;
    int rc = 0;

    if (mongoc_collection_delete_many(c, filter, NULL, &reply, &e))
        *deleted = field_int64(&reply, "deletedCount");
    else
        rc = driver_error(err, &e, "delete", coll, NULL);
    bson_destroy(&reply);
    return rc;
}

/* Deletes coll/id when it is still the tombstone of version with no
 * pending-publish marker (the delete is fenced on its version, flag and
 * outbox); *deleted is 1 when it was removed. */
static int purge_one(mongoc_collection_t *docs, const char *coll,
                     const char *id, int64_t version, int64_t *deleted,
                     syncd_error_t *err)
{
    bson_t *tomb =
        BCON_NEW("_id", BCON_UTF8(id), "v", BCON_INT64(version), "del",
                 BCON_BOOL(true), "ob", "{", "$exists", BCON_BOOL(false), "}");
    int rc = delete_many(docs, tomb, deleted, coll, err);

    bson_destroy(tomb);
    return rc;
}

/* Lists up to PURGE_PAGE tombstones that filter matches into *out: a new
 * array of [id, version]. */
static int list_tombstones(json_t **out, mongoc_collection_t *docs,
                           const bson_t *filter, const char *coll,
                           syncd_error_t *err)
{
    bson_t *opts = BCON_NEW("projection", "{", "v", BCON_INT32(1), "}", "limit",
                            BCON_INT64(PURGE_PAGE));
    mongoc_cursor_t *cur =
        mongoc_collection_find_with_opts(docs, filter, opts, NULL);
    json_t *tombs = json_array();
    const bson_t *r;
    bson_error_t e;
    int rc = 0;

    while (tombs && mongoc_cursor_next(cur, &r)) {
        bson_iter_t it;

        if (bson_iter_init_find(&it, r, "_id") && BSON_ITER_HOLDS_UTF8(&it) &&
            json_array_append_new(
                tombs, json_pack("[s,I]", bson_iter_utf8(&it, NULL),
                                 (json_int_t)field_int64(r, "v"))) < 0) {
            json_decref(tombs);
            tombs = NULL;
        }
    }
    if (!tombs)
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    else if (mongoc_cursor_error(cur, &e))
        rc = driver_error(err, &e, "purge", coll, NULL);
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    *out = rc == 0 ? tombs : NULL;
    if (rc != 0)
        json_decref(tombs);
    return rc;
}

/* Purges the tombstone of coll/id at version in FerretDB mode: when it is
 * still the newest record, with no pending-publish marker, inserts the
 * commit record of the next version as a purge fence (no writer can build
 * on the tombstone any more, nor can a second purge) and deletes the
 * document. *deleted is 1 when it was removed. */
static int chain_purge_one(mongo_backend_t *m, const call_t *c,
                           const char *coll, const char *id, int64_t version,
                           int64_t *deleted, syncd_error_t *err)
{
    mongoc_collection_t *records = NULL;
    bson_t *rec = NULL, *filter = NULL;
    bson_iter_t it;
    char inc[INC_BYTES];
    int64_t at;
    int rc = chain_get(&rec, m, c, coll, id, &at, err);

    *deleted = 0;
    if (rc < 0 || rec == NULL || at != version ||
        field_int64(rec, "v") != version || !field_bool(rec, "del") ||
        bson_iter_init_find(&it, rec, "ob"))
        goto cleanup;
    field_string(inc, sizeof(inc), rec, INC_FIELD);
    records = chain_records(m, c, coll);
    rc = chain_insert(records, coll, id, inc, version, "p", NULL, err);
    if (rc == SYNCD_ECONFLICT) {
        rc = 0;
        goto cleanup;
    }
    filter = BCON_NEW("_id", BCON_UTF8(id));
    if (rc == 0)
        rc = delete_many(c->coll, filter, deleted, coll, err);

cleanup:
    if (filter != NULL)
        bson_destroy(filter);
    if (records != NULL)
        mongoc_collection_destroy(records);
    if (rec != NULL)
        bson_destroy(rec);
    return rc;
}

static int mongo_purge(syncd_backend_t *b, const char *coll, int64_t before_ms,
                       size_t limit, size_t *purged, json_t *gone,
                       syncd_error_t *err)
{
    mongo_backend_t *m = (mongo_backend_t *)b;
    bson_t *filter = BCON_NEW("del", BCON_BOOL(true), "mt", "{", "$lt",
                              BCON_DATE_TIME(before_ms), "}", "ob", "{",
                              "$exists", BCON_BOOL(false), "}");
    json_t *tombs = NULL;
    call_t c;
    int rc = 0;

    *purged = 0;
    call_begin(&c, m, coll);
    /* Page by page, while a page removes something (in FerretDB mode a
     * tombstone that is not the newest record stays listed). */
    do {
        size_t before = *purged;

        json_decref(tombs);
        tombs = NULL;
        rc = list_tombstones(&tombs, c.coll, filter, coll, err);
        for (size_t i = 0; rc == 0 && i < json_array_size(tombs) &&
                           (limit == 0 || *purged < limit);
             i++) {
            json_t *t = json_array_get(tombs, i);
            const char *id = json_string_value(json_array_get(t, 0));
            int64_t v = json_integer_value(json_array_get(t, 1)), deleted = 0;

            rc = m->chain ? chain_purge_one(m, &c, coll, id, v, &deleted, err)
                          : purge_one(c.coll, coll, id, v, &deleted, err);
            if (rc == 0 && deleted > 0) {
                (*purged)++;
                if (gone != NULL &&
                    json_object_set_new(gone, id, json_integer(v)) != 0)
                    rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
            }
        }
        if (*purged == before)
            break;
    } while (rc == 0 && json_array_size(tombs) == PURGE_PAGE &&
             (limit == 0 || *purged < limit));
    json_decref(tombs);
    call_end(&c, m);
    bson_destroy(filter);
    return rc;
}

/* Drops the markers of coll/id at or below version from its ob (they are
 * published), fenced on the version the record is at: reads the record
 * and, when some marker goes, rewrites ob (or unsets it when none is
 * left) with the filter {_id, v: that version}, so that it never clears
 * the markers of a newer writer; a record that moves on meanwhile keeps
 * them (its writer carried them forward, and a later ack drops them).
 * When expected is not 0, does nothing unless the record is at expected
 * (FerretDB mode: the version the newest record is at). */
static int drop_markers(mongoc_collection_t *c, const char *coll,
                        const char *id, int64_t version, int64_t expected,
                        syncd_error_t *err)
{
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    bson_t *found = NULL, *fence = NULL;
    json_t *ob = NULL, *left = NULL;
    bson_t update, set;
    bson_error_t e;
    int64_t current;
    int rc = find_one(&found, c, filter, coll, id, err);

    bson_init(&update);
    if (rc < 0 || found == NULL)
        goto cleanup;
    current = field_int64(found, "v");
    rc = field_array(&ob, found, "ob", err);
    if (rc < 0 || (expected != 0 && current != expected))
        goto cleanup;
    rc = syncd_outbox_after(&left, ob, version);
    if (rc < 0)
        rc = syncd_error_set(err, rc, "out of memory");
    if (rc <= 0)
        goto cleanup;
    rc = 0;
    if (left != NULL) {
        BSON_APPEND_DOCUMENT_BEGIN(&update, "$set", &set);
        rc = encode_value(&set, "ob", left, err);
        bson_append_document_end(&update, &set);
    } else {
        BSON_APPEND_DOCUMENT_BEGIN(&update, "$unset", &set);
        BSON_APPEND_UTF8(&set, "ob", "");
        bson_append_document_end(&update, &set);
    }
    fence = BCON_NEW("_id", BCON_UTF8(id), "v", BCON_INT64(current));
    chain_fence(fence, found);
    if (rc == 0 &&
        !mongoc_collection_update_one(c, fence, &update, NULL, NULL, &e))
        rc = driver_error(err, &e, "ack", coll, id);

cleanup:
    if (fence != NULL)
        bson_destroy(fence);
    bson_destroy(&update);
    if (found != NULL)
        bson_destroy(found);
    bson_destroy(filter);
    json_decref(left);
    json_decref(ob);
    return rc;
}

/* The ack of FerretDB mode: copies the newest record of coll/id into the
 * document when the document lags behind it, then drops the markers from
 * the document at that version. A late update may set the document back
 * with its markers (a marker published twice, never one lost: the newest
 * record, which readers take, holds every marker not acked). */
static int chain_ack(mongo_backend_t *m, const call_t *c, const char *coll,
                     const char *id, int64_t version, syncd_error_t *err)
{
    bson_t *rec = NULL;
    int64_t at;
    int rc = chain_get(&rec, m, c, coll, id, &at, err);

    if (rc < 0 || rec == NULL)
        return rc;
    if (field_int64(rec, "v") != at)
        rc = chain_copy(c->coll, rec, at, coll, id, err);
    if (rc == 0)
        rc = drop_markers(c->coll, coll, id, version, field_int64(rec, "v"),
                          err);
    bson_destroy(rec);
    return rc;
}

static int mongo_outbox_ack(syncd_backend_t *b, const char *coll,
                            const char *id, int64_t version, syncd_error_t *err)
{
    mongo_backend_t *m = (mongo_backend_t *)b;
    call_t c;
    int rc;

    call_begin(&c, m, coll);
    rc = m->chain ? chain_ack(m, &c, coll, id, version, err)
                  : drop_markers(c.coll, coll, id, version, 0, err);
    call_end(&c, m);
    return rc;
}

/* Creates the sparse index on ob of coll once per process (an existing
 * index is no error); a failure is left to the next listing. */
static void ensure_outbox_index(mongo_backend_t *m, call_t *c, const char *coll)
{
    bson_t *cmd;
    bson_error_t e;
    int done;

    pthread_mutex_lock(&m->indexed_lock);
    done = json_object_get(m->indexed, coll) != NULL;
    pthread_mutex_unlock(&m->indexed_lock);
    if (done)
        return;
    cmd = BCON_NEW("createIndexes", BCON_UTF8(coll), "indexes", "[", "{", "key",
                   "{", "ob", BCON_INT32(1), "}", "name",
                   BCON_UTF8("syncd_outbox"), "sparse", BCON_BOOL(true), "}",
                   "]");
    if (mongoc_collection_write_command_with_opts(c->coll, cmd, NULL, NULL,
                                                  &e)) {
        pthread_mutex_lock(&m->indexed_lock);
        json_object_set_new(m->indexed, coll, json_true());
        pthread_mutex_unlock(&m->indexed_lock);
    }
    bson_destroy(cmd);
}

/* In FerretDB mode every document is listed (a lagging one may hide the
 * markers of its newest record) and each is followed to its newest
 * record; the limit counts the records with markers. */
static int mongo_outbox_list(syncd_backend_t *b, json_t **out, const char *coll,
                             const char *after, size_t limit,
                             syncd_error_t *err)
{
    mongo_backend_t *m = (mongo_backend_t *)b;
    bson_t *filter = BCON_NEW("ob", "{", "$exists", BCON_BOOL(true), "}");
    bson_t *opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}",
                            "projection", "{", "v", BCON_INT32(1), "ob",
                            BCON_INT32(1), INC_FIELD, BCON_INT32(1), "}");
    mongoc_cursor_t *cur;
    json_t *arr = json_array();
    const bson_t *r;
    bson_error_t e;
    call_t c;
    int rc = arr != NULL ? 0 : syncd_error_set(err, SYNCD_ENOMEM, "no memory");

    if (m->chain)
        bson_reinit(filter);
    if (after != NULL)
        BCON_APPEND(filter, "_id", "{", "$gt", BCON_UTF8(after), "}");
    if (!m->chain)
        BCON_APPEND(opts, "limit", BCON_INT64((int64_t)limit));
    call_begin(&c, m, coll);
    ensure_outbox_index(m, &c, coll);
    cur = mongoc_collection_find_with_opts(c.coll, filter, opts, NULL);
    while (rc == 0 && (limit == 0 || json_array_size(arr) < limit) &&
           mongoc_cursor_next(cur, &r)) {
        bson_t *rec = bson_copy(r);
        json_t *ob = NULL;
        bson_iter_t it;

        if (!bson_iter_init_find(&it, r, "_id") || !BSON_ITER_HOLDS_UTF8(&it)) {
            bson_destroy(rec);
            continue;
        }
        if (m->chain)
            rc =
                chain_follow(m, &c, coll, bson_iter_utf8(&it, NULL), &rec, err);
        if (rc == 0 && rec != NULL && bson_iter_init_find(&it, rec, "_id") &&
            BSON_ITER_HOLDS_UTF8(&it))
            rc = field_array(&ob, rec, "ob", err);
        if (rc == 0 && json_array_size(ob) > 0 &&
            json_array_append_new(
                arr, json_pack(
                         "{s:s, s:I, s:O}", "id", bson_iter_utf8(&it, NULL),
                         "v", (json_int_t)field_int64(rec, "v"), "ob", ob)) < 0)
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        json_decref(ob);
        if (rec != NULL)
            bson_destroy(rec);
    }
    if (rc == 0 && mongoc_cursor_error(cur, &e))
        rc = driver_error(err, &e, "outbox list", coll, after);
    mongoc_cursor_destroy(cur);
    call_end(&c, m);
    bson_destroy(opts);
    bson_destroy(filter);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

static void mongo_close(syncd_backend_t *b)
{
    mongo_backend_t *m = (mongo_backend_t *)b;

    if (!m)
        return;
    if (m->pool) {
        conns_free(m);
        pthread_mutex_destroy(&m->conn_lock);
        mongoc_client_pool_destroy(m->pool);
    }
    if (m->indexed) {
        json_decref(m->indexed);
        pthread_mutex_destroy(&m->indexed_lock);
    }
    free(m->db);
    free(m);
}

static const syncd_backend_ops_t mongo_ops = {
    .kind = BACKEND,
    .get = mongo_get,
    .cas = mongo_cas,
    .list = mongo_list,
    .collections = mongo_collections,
    .purge = mongo_purge,
    .close = mongo_close,
    .versions = mongo_versions,
    .outbox_ack = mongo_outbox_ack,
    .outbox_list = mongo_outbox_list,
    .export_page = mongo_export_page,
    .cas_update = mongo_cas_update,
};

/* Asks the server for buildInfo (which also proves it is reachable) and
 * turns on the commit chain when it is FerretDB (see the file comment for why
 * the product decides). */
static int probe_server(mongo_backend_t *m, syncd_error_t *err)
{
    mongoc_client_t *client = mongoc_client_pool_pop(m->pool);
    bson_t *cmd = BCON_NEW("buildInfo", BCON_INT32(1));
    bson_t reply;
    bson_iter_t it;
    bson_error_t e;
    int rc = 0;

    if (mongoc_client_command_simple(client, "admin", cmd, NULL, &reply, &e))
        m->chain = bson_iter_init_find(&it, &reply, "ferretdbVersion");
    else
        rc = driver_error(err, &e, "buildInfo", m->db, NULL);
    bson_destroy(&reply);
    bson_destroy(cmd);
    mongoc_client_pool_push(m->pool, client);
    return rc;
}

/* Gives u the store of record's defaults where it names none: writes
 * acknowledged by a majority of the replica set within timeout_ms and
 * journaled (w: majority, j: true), and reads of majority-committed data
 * (readConcern majority). The URI's own w, wtimeoutMS, journal and
 * readConcernLevel win. */
static void default_concerns(mongoc_uri_t *u, int32_t timeout_ms)
{
    mongoc_write_concern_t *wc =
        mongoc_write_concern_copy(mongoc_uri_get_write_concern(u));
    mongoc_read_concern_t *rc =
        mongoc_read_concern_copy(mongoc_uri_get_read_concern(u));

    if (mongoc_write_concern_get_w(wc) == MONGOC_WRITE_CONCERN_W_DEFAULT &&
        !mongoc_write_concern_get_wtag(wc))
        mongoc_write_concern_set_wmajority(
            wc, mongoc_write_concern_get_wtimeout_int64(wc) > 0
                    ? (int32_t)mongoc_write_concern_get_wtimeout_int64(wc)
                    : timeout_ms);
    if (!mongoc_write_concern_journal_is_set(wc) &&
        mongoc_write_concern_get_w(wc) != MONGOC_WRITE_CONCERN_W_UNACKNOWLEDGED)
        mongoc_write_concern_set_journal(wc, true);
    mongoc_uri_set_write_concern(u, wc);
    if (!mongoc_read_concern_get_level(rc)) {
        mongoc_read_concern_set_level(rc, MONGOC_READ_CONCERN_LEVEL_MAJORITY);
        mongoc_uri_set_read_concern(u, rc);
    }
    mongoc_read_concern_destroy(rc);
    mongoc_write_concern_destroy(wc);
}

int syncd_backend_mongo_open(syncd_backend_t **out, const char *uri,
                             const char *db, int64_t timeout_ms,
                             syncd_error_t *err)
{
    mongo_backend_t *m = NULL;
    mongoc_uri_t *u = NULL;
    bson_error_t e;
    int32_t t = timeout_ms <= 0          ? 1
                : timeout_ms > INT32_MAX ? INT32_MAX
                                         : (int32_t)timeout_ms;
    int rc = 0;

    *out = NULL;
    pthread_once(&init_once, init_driver);
    u = mongoc_uri_new_with_error(uri, &e);
    if (!u) {
        rc = syncd_error_set_backend(err, SYNCD_EINVAL, BACKEND, (int)e.code,
                                     "invalid mongo_uri: %s", e.message);
        goto cleanup;
    }
    mongoc_uri_set_option_as_int32(u, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, t);
    mongoc_uri_set_option_as_int32(u, MONGOC_URI_CONNECTTIMEOUTMS, t);
    mongoc_uri_set_option_as_int32(u, MONGOC_URI_SOCKETTIMEOUTMS, t);
    default_concerns(u, t);
    m = calloc(1, sizeof(*m));
    if (!m || !(m->db = strdup(db)) || !(m->indexed = json_object())) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto cleanup;
    }
    pthread_mutex_init(&m->indexed_lock, NULL);
    m->ops = mongo_ops;
    m->base.ops = &m->ops;
    m->pool = mongoc_client_pool_new(u);
    if (!m->pool) {
        rc = syncd_error_set_backend(err, SYNCD_EINVAL, BACKEND, 0,
                                     "mongo_uri is not usable (TLS options "
                                     "need a driver built with TLS)");
        goto cleanup;
    }
    pthread_mutex_init(&m->conn_lock, NULL);
    mongoc_client_pool_set_error_api(m->pool, MONGOC_ERROR_API_VERSION_2);
    rc = probe_server(m, err);
    if (rc == 0 && m->chain)
        m->ops.cas_update = NULL;

cleanup:
    mongoc_uri_destroy(u);
    if (rc < 0) {
        mongo_close((syncd_backend_t *)m);
        return rc;
    }
    *out = &m->base;
    return 0;
}
