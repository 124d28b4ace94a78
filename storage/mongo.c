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
 * never clears a newer writer's markers (on FerretDB under a claim on
 * that version, like a write). A sparse
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
 * and the replace. Claims mode does not offer it.
 *
 * FerretDB v1 (its SQLite backend was checked by experiment and in its
 * source) runs a filtered update as a query followed by an update by _id,
 * which loses updates under concurrency; only an insert (its unique _id) is
 * atomic there. No server says whether its filtered update is atomic (no
 * field of hello, buildInfo or serverStatus tells), and a probe at open
 * could prove only a lost update, by chance, never its absence. So the path
 * follows the product that `buildInfo` names: a server that reports
 * `ferretdbVersion` (FerretDB, any version: v2 was not checked, and claims
 * are correct, only slower, on an atomic server) gets the claims below;
 * every other server gets the single filtered replace: MongoDB, and
 * mongo-java-server (which applies a filtered single-document update under
 * its collection lock; the tests run it there).
 *
 * So on FerretDB the replace is preceded by a claim: an insert of
 * {_id: "<id>\x1f<expected, 20 digits>", o: <owner>, t} into the side
 * collection "_syncd_claims.<coll>", whose unique _id lets one writer at a time
 * move a document on from a given version. The owner token "<holder>-<number>"
 * is unique to one claim: the holder name is the backend's (a per-process
 * random nonce and the backend's number in the process), the number counts
 * claims. The holder reads the version, replaces with the filter {_id, v:
 * expected} and drops its claim (filtered on its owner).
 *
 * A claim is trusted for a lease (twice the backend timeout, at least
 * 1 s), timed by each process on its own monotonic clock, so no two nodes'
 * clocks are ever compared: the holder sends its replace only within the
 * first half of the lease from the moment it sent the claim (else it drops
 * the claim and claims again), and a writer kept out takes the claim over
 * only after it saw the same owner hold it for a whole lease. The other
 * half is for the replace to reach the server: one that takes longer
 * fails at the socket timeout anyway. A writer
 * that stalls past that (a stopped process) can then still send a replace
 * it had decided on, but the {_id, v: expected} filter rejects it once the
 * new holder has moved the version: the only window left is inside the
 * server, between FerretDB's query and its update by _id. A writer kept
 * out of a claim waits (jittered, growing pauses) until the version moves
 * (a conflict), the claim goes (it claims again) or it takes the claim
 * over, for at most two leases (then SYNCD_ETIMEDOUT): so a conflict, and
 * a strict write's precondition failure, always mean that the version
 * moved, never only that another writer was on its way. Claims are left
 * behind only by writers that died or lost the server; purge drops those
 * older than the lease by the writer's wall clock `t` (its holder stopped
 * writing half a lease before, which absorbs that much clock skew).
 *
 * So that a holder that died does not hold a document's writers up for a
 * lease, each backend in FerretDB mode keeps a liveness record
 * {_id: <holder name>, n: counter, t: wall time} in "_syncd_procs": it is
 * written at open (before any claim of the backend), bumped every 250 ms
 * by a thread of the backend and deleted at close. A writer kept out by
 * another process's claim reads the record of the claim's holder at each
 * pause: when it is absent, or when its counter has stood still for
 * DEAD_MS (2 s) of the writer's own monotonic clock (from a read that
 * returned it to a later read, sent DEAD_MS after, that returned it again:
 * no bump landed in between), the holder is dead and the writer takes the
 * claim over at once. Only a counter is compared, never one node's clock
 * with another's. A live holder's counter moves, and a holder that is
 * alive but stuck is left to the lease as before. The holder fences itself
 * to match: it sends its replace only while its liveness is proved, that
 * is within FENCE_MS (0.5 s) of sending a bump that was acknowledged
 * within DEAD_MS of sending the bump acknowledged before it (so no writer
 * saw its counter stand still for DEAD_MS up to that bump's landing): a
 * writer that decides it dead does so at least DEAD_MS - FENCE_MS (1.5 s)
 * after any replace it sent. A holder whose bumps fail or lag (the server
 * is slow, the process was stopped) thus neither claims nor writes until a
 * bump lands on time again.
 *
 * A claim of the backend itself (the same holder name) is never judged by
 * that record: a backend keeps the owner tokens of the claims it holds
 * (registered before the claim is sent, released when its holder is done
 * with it), so its writers wait while the holder is at work, however its
 * own liveness thread lags under load, and take over after the lease only
 * a claim left behind (a replace that failed and may still land). (Before,
 * a writer of a loaded process could find its own record standing still
 * while its liveness thread lagged, take over the claim of a holder of its
 * own process whose replace was on its way, and both were acknowledged at
 * the same version: the linz checker's found-ferretdb-two-v38 history.)
 *
 * A holder reports success only when it still finds its claim to drop
 * after its replace (the delete filtered on its owner deletes one): else a
 * writer took it over, its replace of the same version may have met this
 * one inside the server, and the holder answers SYNCD_EBACKEND (outcome
 * unknown). Since the taker drops the claim before it reads the version,
 * and reads it before its replace, a holder that finds its claim had its
 * replace done before the taker read the version: the taker then sees it
 * moved and writes nothing.
 *
 * What is left, and not closed: the taker's own acknowledged replace can
 * be overwritten by a replace of the old holder that was sent in time but
 * reaches FerretDB more than DEAD_MS - FENCE_MS = 1.5 s later (held in the
 * network or a proxy, or queued in a loaded FerretDB), when FerretDB runs
 * that replace's query before the taker's update and its update by _id
 * after it (the {_id, v: expected} filter rejects it otherwise). The old
 * holder then answers unknown, but the taker has answered success. With
 * the holder alive but stalled, the taker waits a lease instead, and the
 * old replace must arrive more than half a lease late. Neither the
 * driver's socket timeout (it closes the connection of a replace not
 * answered in time, but a command FerretDB has read runs to its end, and
 * bytes a proxy or the kernel holds may still be delivered after the
 * close) nor any wait of the taker bounds that delay; only a commit point
 * FerretDB makes atomic would close it: e.g. each version's record
 * inserted under the unique _id "<id>@<version>" as its intent (one writer
 * wins a version), the document rolled forward from the newest intent by
 * whoever reads or writes it next. A record can also be missing while its
 * holder lives, with the same window: when a writer of an older syncd
 * without records holds the claim, or for the 250 ms until the next bump
 * writes it again after purge dropped it. Purge drops the records whose
 * `t` is ten leases old by the purging node's clock: housekeeping, where
 * only a clock that many leases behind gets a live record dropped.
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
#define CLAIMS_PREFIX "_syncd_claims."
#define NEG_ZERO_TAG "%-0"
#define ARRAY_TAG "%a"
#define MIN_LEASE_MS 1000     /* a claim's lease: twice the timeout, or this */
#define CLAIM_POLL_MS 4       /* first pause while another writer's claim */
#define CLAIM_POLL_MAX_MS 128 /* is in the way, doubling up to this */
#define NO_OWNER "-"          /* the owner of a claim that names none */
#define PROCS "_syncd_procs"  /* liveness records of the claim holders */
#define PURGE_PAGE 1000       /* tombstones a purge lists per query */
#define BEAT_MS 250           /* how often a backend bumps its record */
#define DEAD_MS 2000 /* a record that stood still this long: holder dead */
#define FENCE_MS 500 /* a holder writes only this soon after a proved bump */
#define PROC_PURGE_LEASES 10 /* purge drops records this many leases old */
#define KEY_STACK 256

typedef struct mongo_backend {
    syncd_backend_t base;
    syncd_backend_ops_t ops; /* base.ops: mongo_ops, less what the mode lacks */
    mongoc_client_pool_t *pool;
    pthread_mutex_t conn_lock; /* guards idle (initialized with pool) */
    struct conn *idle;         /* clients between calls (call_begin()) */
    char *db;
    int64_t lease_ms;
    int claims; /* 1 when filtered updates are not atomic (FerretDB) */
    pthread_mutex_t indexed_lock;
    json_t *indexed; /* collections given their outbox index: name -> true */
    char proc[40];   /* this backend's holder name: process nonce.number */
    pthread_t beat;  /* bumps the liveness record while claims are used */
    int beating;     /* 1 while beat runs */
    int stopping;    /* set under beat_lock to stop beat */
    pthread_mutex_t beat_lock;
    pthread_cond_t beat_cond;
    int64_t beat_ok; /* monotonic ms when the last acknowledged bump was sent */
    pthread_mutex_t held_lock;
    json_t *held; /* owner tokens of the claims m holds now: token -> true */
} mongo_backend_t;

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* Tells this process's claims from those of every other process (and of
 * this one's earlier runs); drawn once at the first open. */
static uint64_t process_nonce;

/* Numbers the backends of this process, each a claim holder of its own. */
static unsigned backend_seq;

static syncd_mongo_claim_hook_fn claim_hook;
static void *claim_hook_data;
static syncd_mongo_liveness_hook_fn liveness_hook;
static void *liveness_hook_data;

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

static int64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) != 0)
        ;
}

void syncd_backend_mongo_set_claim_hook(syncd_mongo_claim_hook_fn fn,
                                        void *data)
{
    claim_hook = fn;
    claim_hook_data = data;
}

void syncd_backend_mongo_set_liveness_hook(syncd_mongo_liveness_hook_fn fn,
                                           void *data)
{
    liveness_hook = fn;
    liveness_hook_data = data;
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

/* ---- Operations ---------------------------------------------------------- */

static int mongo_get(syncd_backend_t *b, syncd_doc_t **out, const char *coll,
                     const char *id, syncd_error_t *err)
{
    mongo_backend_t *m = (mongo_backend_t *)b;
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    bson_t *found = NULL;
    call_t c;
    int rc;

    call_begin(&c, m, coll);
    rc = find_one(&found, c.coll, filter, coll, id, err);
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

/* Reads the version of coll/id into *version (0 when there is none). */
static int read_version(mongoc_collection_t *c, const char *id,
                        int64_t *version, const char *coll, syncd_error_t *err)
{
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    bson_t *found = NULL;
    int rc = find_one(&found, c, filter, coll, id, err);

    *version = found ? field_int64(found, "v") : 0;
    if (found)
        bson_destroy(found);
    bson_destroy(filter);
    return rc;
}

static void claim_key(char *buf, size_t size, const char *id, int64_t version)
{
    snprintf(buf, size, "%s\x1f%020lld", id, (long long)version);
}

/* Makes a claim owner token unique to this claim: the holder name of the
 * backend (proc, the _id of its liveness record) and a per-process
 * sequence number, as "<proc>-<number>". */
static void claim_owner(char *buf, size_t size, const char *proc)
{
    static uint64_t seq;
    uint64_t n = __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED);

    snprintf(buf, size, "%s-%llu", proc, (unsigned long long)n);
}

/* Deletes the claim key of coll/id when its owner is owner (any owner when
 * owner is NULL); *dropped (when not NULL) is whether it deleted one. */
static int drop_claim(mongoc_collection_t *claims, const char *key,
                      const char *owner, int *dropped, const char *coll,
                      const char *id, syncd_error_t *err)
{
    bson_t *filter =
        owner ? BCON_NEW("_id", BCON_UTF8(key), "o", BCON_UTF8(owner))
              : BCON_NEW("_id", BCON_UTF8(key));
    bson_t reply;
    bson_error_t e;
    int rc = 0;

    if (mongoc_collection_delete_one(claims, filter, NULL, &reply, &e)) {
        if (dropped)
            *dropped = field_int64(&reply, "deletedCount") > 0;
    } else {
        rc = driver_error(err, &e, "delete claim", coll, id);
    }
    bson_destroy(&reply);
    bson_destroy(filter);
    return rc;
}

/* Whether owner is the token of a claim m holds now (see take_claim). */
static int holds(mongo_backend_t *m, const char *owner)
{
    int in;

    pthread_mutex_lock(&m->held_lock);
    in = json_object_get(m->held, owner) != NULL;
    pthread_mutex_unlock(&m->held_lock);
    return in;
}

/* Forgets owner as a claim m holds: its holder has finished with it (or
 * has given it up to the lease, when its replace may still land). */
static void release(mongo_backend_t *m, const char *owner)
{
    pthread_mutex_lock(&m->held_lock);
    json_object_del(m->held, owner);
    pthread_mutex_unlock(&m->held_lock);
}

/* Inserts the claim key for owner; *taken is 0 when another owner holds
 * it. A claim taken is registered in m as held (before the insert, so that
 * no writer of m ever sees it unregistered while its holder is at work)
 * until its holder calls release. */
static int take_claim(mongo_backend_t *m, mongoc_collection_t *claims,
                      const char *key, const char *owner, int *taken,
                      const char *coll, const char *id, syncd_error_t *err)
{
    bson_t *claim = NULL;
    bson_error_t e;
    int rc;

    *taken = 0;
    pthread_mutex_lock(&m->held_lock);
    rc = json_object_set_new(m->held, owner, json_true());
    pthread_mutex_unlock(&m->held_lock);
    if (rc != 0)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    claim = BCON_NEW("_id", BCON_UTF8(key), "o", BCON_UTF8(owner), "t",
                     BCON_DATE_TIME(wall_ms()));
    *taken = mongoc_collection_insert_one(claims, claim, NULL, NULL, &e);
    if (!*taken && e.code != DUPLICATE_KEY)
        rc = driver_error(err, &e, "claim", coll, id);
    if (!*taken)
        release(m, owner);
    bson_destroy(claim);
    return rc;
}

/* Reads the owner of the claim key into owner ("" when there is none). */
static int claim_holder(mongoc_collection_t *claims, const char *key,
                        char *owner, size_t size, const char *coll,
                        const char *id, syncd_error_t *err)
{
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(key));
    bson_t *found = NULL;
    int rc = find_one(&found, claims, filter, coll, id, err);

    owner[0] = '\0';
    if (found) {
        field_string(owner, size, found, "o");
        if (owner[0] == '\0')
            snprintf(owner, size, NO_OWNER);
        bson_destroy(found);
    }
    bson_destroy(filter);
    return rc;
}

/* ---- Holder liveness (FerretDB mode) ------------------------------------ */

/* Bumps the liveness record of m ({_id: proc, n: +1, t: wall time},
 * upserted) with procs. An acknowledged bump that landed within DEAD_MS
 * of the previous acknowledged one (by the send of that one and the ack of
 * this one) proves that no waiter saw the counter stand still for DEAD_MS
 * up to its landing: then m->beat_ok becomes the time it was sent, else
 * 0 (the holder writes nothing until a bump proves it again). *prev is
 * the send time of the previous acknowledged bump (0 before the first). */
static int beat_once(mongo_backend_t *m, mongoc_collection_t *procs,
                     int64_t *prev, syncd_error_t *err)
{
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(m->proc));
    bson_t *update = BCON_NEW("$inc", "{", "n", BCON_INT64(1), "}", "$set", "{",
                              "t", BCON_DATE_TIME(wall_ms()), "}");
    bson_t *opts = BCON_NEW("upsert", BCON_BOOL(true));
    int64_t sent = mono_ms();
    bson_error_t e;
    int rc = 0;

    if (liveness_hook)
        liveness_hook(SYNCD_MONGO_HOOK_BUMP, liveness_hook_data);
    if (mongoc_collection_update_one(procs, filter, update, opts, NULL, &e)) {
        int fresh = *prev == 0 || mono_ms() - *prev < DEAD_MS;

        __atomic_store_n(&m->beat_ok, fresh ? sent : 0, __ATOMIC_RELEASE);
        *prev = sent;
    } else {
        rc = driver_error(err, &e, "liveness", PROCS, m->proc);
    }
    bson_destroy(opts);
    bson_destroy(update);
    bson_destroy(filter);
    return rc;
}

/* The liveness thread of m: bumps its record every BEAT_MS until
 * m->stopping, with a client of its own from the pool. */
static void *beat_main(void *arg)
{
    mongo_backend_t *m = arg;
    mongoc_client_t *client = mongoc_client_pool_pop(m->pool);
    mongoc_collection_t *procs =
        mongoc_client_get_collection(client, m->db, PROCS);
    int64_t prev = __atomic_load_n(&m->beat_ok, __ATOMIC_ACQUIRE);
    struct timespec until;

    pthread_mutex_lock(&m->beat_lock);
    while (!m->stopping) {
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += BEAT_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        while (!m->stopping &&
               pthread_cond_timedwait(&m->beat_cond, &m->beat_lock, &until) !=
                   ETIMEDOUT)
            ;
        if (m->stopping)
            break;
        pthread_mutex_unlock(&m->beat_lock);
        beat_once(m, procs, &prev, NULL);
        pthread_mutex_lock(&m->beat_lock);
    }
    pthread_mutex_unlock(&m->beat_lock);
    mongoc_collection_destroy(procs);
    mongoc_client_pool_push(m->pool, client);
    return NULL;
}

/* Writes m's first liveness record (so that it exists before any claim
 * of m) and starts the thread that keeps bumping it. */
static int beat_start(mongo_backend_t *m, syncd_error_t *err)
{
    mongoc_client_t *client = mongoc_client_pool_pop(m->pool);
    mongoc_collection_t *procs =
        mongoc_client_get_collection(client, m->db, PROCS);
    pthread_condattr_t attr;
    int64_t prev = 0;
    int rc = beat_once(m, procs, &prev, err);

    mongoc_collection_destroy(procs);
    mongoc_client_pool_push(m->pool, client);
    if (rc < 0)
        return rc;
    pthread_mutex_init(&m->beat_lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&m->beat_cond, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&m->beat, NULL, beat_main, m) != 0) {
        pthread_cond_destroy(&m->beat_cond);
        pthread_mutex_destroy(&m->beat_lock);
        return syncd_error_set(err, SYNCD_ENOMEM,
                               "cannot start the liveness thread");
    }
    m->beating = 1;
    return 0;
}

/* Stops and joins m's liveness thread and deletes its record: m holds no
 * claim any more (a claim it left behind is taken over at once). */
static void beat_stop(mongo_backend_t *m)
{
    mongoc_client_t *client;
    mongoc_collection_t *procs;
    bson_t *filter;

    if (!m->beating)
        return;
    pthread_mutex_lock(&m->beat_lock);
    m->stopping = 1;
    pthread_cond_signal(&m->beat_cond);
    pthread_mutex_unlock(&m->beat_lock);
    pthread_join(m->beat, NULL);
    pthread_cond_destroy(&m->beat_cond);
    pthread_mutex_destroy(&m->beat_lock);
    m->beating = 0;
    client = mongoc_client_pool_pop(m->pool);
    procs = mongoc_client_get_collection(client, m->db, PROCS);
    filter = BCON_NEW("_id", BCON_UTF8(m->proc));
    mongoc_collection_delete_one(procs, filter, NULL, NULL, NULL);
    bson_destroy(filter);
    mongoc_collection_destroy(procs);
    mongoc_client_pool_push(m->pool, client);
}

/* Whether m may still send a replace under a claim: its last bump that
 * proved it alive (see beat_once) was sent within FENCE_MS, so a waiter
 * of another process that takes its claims over as dead does so at least
 * DEAD_MS - FENCE_MS after this moment. */
static int beat_fresh(mongo_backend_t *m)
{
    int64_t ok = __atomic_load_n(&m->beat_ok, __ATOMIC_ACQUIRE);

    return ok > 0 && mono_ms() - ok <= FENCE_MS;
}

/* Copies the holder name in a claim owner token (what precedes its last
 * '-') into proc; "" when it names none. */
static void owner_proc(char *proc, size_t size, const char *owner)
{
    const char *dash = strrchr(owner, '-');
    size_t len = dash ? (size_t)(dash - owner) : 0;

    if (len >= size)
        len = 0;
    memcpy(proc, owner, len);
    proc[len] = '\0';
}

/* Reads the counter of proc's liveness record into *beats (-1 when it has
 * none). */
static int read_beats(mongo_backend_t *m, call_t *c, const char *proc,
                      int64_t *beats, const char *coll, const char *id,
                      syncd_error_t *err)
{
    mongoc_collection_t *procs =
        mongoc_client_get_collection(c->client, m->db, PROCS);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(proc));
    bson_t *found = NULL;
    int rc = find_one(&found, procs, filter, coll, id, err);

    *beats = found ? field_int64(found, "n") : -1;
    if (found)
        bson_destroy(found);
    bson_destroy(filter);
    mongoc_collection_destroy(procs);
    return rc;
}

/* Holding the claim taken at claimed (monotonic ms), moves coll/id from
 * expected to rec: the replace is fenced on {_id, v: expected}, and is not
 * sent at all once half the lease has passed, or while m's liveness is
 * not proved fresh, so that it never races a writer that took the claim
 * over. *lapsed is set when it was not sent for that reason, *unknown when
 * it was sent and failed (it may still land). */
static int replace_claimed(mongo_backend_t *m, call_t *c, const bson_t *rec,
                           const char *coll, const char *id, int64_t expected,
                           int64_t claimed, int *lapsed, int *unknown,
                           syncd_error_t *err)
{
    int64_t version = 0;
    int matched = 0;
    int rc = read_version(c->coll, id, &version, coll, err);

    *lapsed = 0;
    *unknown = 0;
    if (rc < 0)
        return rc;
    if (version != expected)
        return conflict(err, coll, id, expected);
    if (mono_ms() - claimed > m->lease_ms / 2 || !beat_fresh(m)) {
        *lapsed = 1;
        return 0;
    }
    if (claim_hook)
        claim_hook(coll, id, expected, claim_hook_data);
    rc = replace_record(c->coll, id, rec, expected, &matched, coll, err);
    *unknown = rc < 0;
    if (rc == 0 && !matched)
        rc = conflict(err, coll, id, expected);
    return rc;
}

/* What a writer kept out by another's claim has seen of it. */
typedef struct claim_watch {
    char holder[64]; /* the owner seen; "" before the first look */
    int64_t since;   /* when it was first seen (monotonic ms) */
    int64_t beats;   /* its holder's liveness counter last seen; -1: none */
    int64_t moved;   /* when that counter was seen to move (monotonic ms) */
    int64_t pause;   /* the next pause's upper bound, ms */
} claim_watch_t;

/* Tells by its liveness record whether the holder of w->holder lives.
 * *alive is 0 when the record is absent or when its counter has stood
 * still for DEAD_MS of this process's monotonic clock, from the moment a
 * read of it returned to the moment a later read of the same value was
 * sent; it stays 1 when the owner names no holder (the lease alone ends
 * such a claim). */
static int holder_alive(mongo_backend_t *m, call_t *c, claim_watch_t *w,
                        int *alive, const char *coll, const char *id,
                        syncd_error_t *err)
{
    char proc[sizeof(w->holder)];
    int64_t beats = -1;
    int64_t sent;
    int rc;

    *alive = 1;
    owner_proc(proc, sizeof(proc), w->holder);
    if (!proc[0])
        return 0;
    if (liveness_hook)
        liveness_hook(SYNCD_MONGO_HOOK_READ, liveness_hook_data);
    sent = mono_ms();
    rc = read_beats(m, c, proc, &beats, coll, id, err);
    if (rc < 0)
        return rc;
    if (beats < 0) {
        *alive = 0;
    } else if (beats != w->beats) {
        w->beats = beats;
        w->moved = mono_ms();
    } else if (sent - w->moved >= DEAD_MS) {
        *alive = 0;
    }
    return 0;
}

/* The claim key on coll/id at expected is held by another writer. Returns
 * SYNCD_ECONFLICT when the version has moved; else drops the claim when
 * its holder is dead by its liveness record or its owner has held it a
 * whole lease (stalled past its lease: it writes nothing after half of
 * it) and returns 0 at once, or returns 0 after a pause (exponential,
 * jittered) for the caller to try again. A claim of m itself is never
 * judged by m's liveness record: while its holder is at work (m holds
 * it) it is waited for, and one left behind is taken over after the
 * lease. */
static int await_claim(mongo_backend_t *m, call_t *c,
                       mongoc_collection_t *claims, const char *key,
                       claim_watch_t *w, const char *coll, const char *id,
                       int64_t expected, syncd_error_t *err)
{
    char holder[sizeof(w->holder)];
    char proc[sizeof(w->holder)];
    int64_t version = 0;
    int64_t now;
    int alive = 1;
    int own;
    int rc = read_version(c->coll, id, &version, coll, err);

    if (rc < 0)
        return rc;
    if (version != expected)
        return conflict(err, coll, id, expected);
    rc = claim_holder(claims, key, holder, sizeof(holder), coll, id, err);
    if (rc < 0 || !holder[0])
        return rc;
    now = mono_ms();
    if (strcmp(holder, w->holder) != 0) {
        snprintf(w->holder, sizeof(w->holder), "%s", holder);
        w->since = now;
        w->beats = -1;
        w->moved = now;
    } else if (now - w->since > m->lease_ms && !holds(m, holder)) {
        alive = 0;
    }
    owner_proc(proc, sizeof(proc), holder);
    own = strcmp(proc, m->proc) == 0;
    if (alive && !own &&
        (rc = holder_alive(m, c, w, &alive, coll, id, err)) < 0)
        return rc;
    if (!alive)
        return drop_claim(claims, key, strcmp(holder, NO_OWNER) ? holder : NULL,
                          NULL, coll, id, err);
    sleep_ms(w->pause / 2 + random() % (w->pause / 2 + 1));
    if (w->pause < CLAIM_POLL_MAX_MS)
        w->pause *= 2;
    return 0;
}

/* Drops the claim key that owner took, after its holder's replace_claimed
 * returned rc (lapsed: it sent nothing). A replace that committed counts
 * only when its claim was still there to drop: else another writer took
 * the claim over, its replace of the same version may have met this one
 * inside the server, and the outcome is reported unknown
 * (SYNCD_EBACKEND), never success; so is it when the drop fails. Returns
 * rc otherwise. */
static int drop_own(mongoc_collection_t *claims, const char *key,
                    const char *owner, int rc, int lapsed, const char *coll,
                    const char *id, int64_t expected, syncd_error_t *err)
{
    int dropped = 0;
    int dr = drop_claim(claims, key, owner, &dropped, coll, id,
                        rc == 0 && !lapsed ? err : NULL);

    if (rc < 0 || lapsed)
        return rc;
    if (dr < 0)
        return dr;
    if (!dropped)
        return syncd_error_set(err, SYNCD_EBACKEND,
                               "%s/%s: the claim on version %lld was taken "
                               "over while its replace was in flight: "
                               "outcome unknown",
                               coll, id, (long long)expected);
    return 0;
}

/* The claimed replace of FerretDB mode (see the file comment): takes the
 * claim on coll/id at expected and writes under it; while another writer
 * holds the claim, waits for the version to move (a conflict) or the claim
 * to go, taking over a claim whose holder died or that was held a whole
 * lease. Fails with
 * SYNCD_ETIMEDOUT when none of this happened within two leases. */
static int claimed_replace(mongo_backend_t *m, call_t *c, const bson_t *rec,
                           const char *coll, const char *id, int64_t expected,
                           syncd_error_t *err)
{
    char key[SYNCD_MAX_ID_BYTES + 32];
    char name[128];
    char owner[64];
    claim_watch_t watch = {"", 0, -1, 0, CLAIM_POLL_MS};
    mongoc_collection_t *claims;
    int64_t deadline = mono_ms() + 2 * m->lease_ms;
    int rc = 0;

    snprintf(name, sizeof(name), CLAIMS_PREFIX "%s", coll);
    claims = mongoc_client_get_collection(c->client, m->db, name);
    claim_key(key, sizeof(key), id, expected);
    for (;;) {
        int64_t claimed = mono_ms();
        int tried = 0, taken = 0, lapsed = 0, unknown = 0;

        /* A writer whose liveness is not proved could not write under a
         * claim: it waits for a bump that proves it instead, as long as
         * the server answers and the version stays. */
        if (!beat_fresh(m)) {
            int64_t version = 0;

            rc = read_version(c->coll, id, &version, coll, err);
            if (rc == 0 && version != expected)
                rc = conflict(err, coll, id, expected);
            if (rc == 0)
                sleep_ms(BEAT_MS / 5);
        } else {
            claim_owner(owner, sizeof(owner), m->proc);
            rc = take_claim(m, claims, key, owner, &taken, coll, id, err);
            tried = 1;
        }
        if (rc == 0 && taken) {
            rc = replace_claimed(m, c, rec, coll, id, expected, claimed,
                                 &lapsed, &unknown, err);
            /* A replace that may still land keeps the others out for the
             * lease. A claim left behind is on a version that moved on, or
             * is taken over after its lease or its holder's death. */
            if (!unknown)
                rc = drop_own(claims, key, owner, rc, lapsed, coll, id,
                              expected, err);
            release(m, owner);
            if (!lapsed)
                break;
        } else if (rc == 0 && tried) {
            rc =
                await_claim(m, c, claims, key, &watch, coll, id, expected, err);
        }
        if (rc < 0)
            break;
        if (mono_ms() >= deadline) {
            rc = syncd_error_set(err, SYNCD_ETIMEDOUT,
                                 "%s/%s: the claim on version %lld was not "
                                 "settled within %lld ms",
                                 coll, id, (long long)expected,
                                 (long long)(2 * m->lease_ms));
            break;
        }
    }
    mongoc_collection_destroy(claims);
    return rc;
}

static int mongo_cas(syncd_backend_t *b, const syncd_doc_t *doc,
                     int64_t expected, syncd_error_t *err)
{
    mongo_backend_t *m = (mongo_backend_t *)b;
    bson_t rec;
    call_t c;
    int matched = 0;
    int rc = build_record(&rec, doc, expected == 0, err);

    if (rc < 0) {
        bson_destroy(&rec);
        return rc;
    }
    call_begin(&c, m, doc->coll);
    if (expected == 0)
        rc = insert_record(c.coll, &rec, doc->coll, doc->id, err);
    else if (m->claims)
        rc = claimed_replace(m, &c, &rec, doc->coll, doc->id, expected, err);
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
 * and arg; a driver error is named by what and key. Returns 0 or a
 * negative SYNCD_E* code. */
static int find_each(mongo_backend_t *m, const char *coll, const bson_t *filter,
                     const bson_t *opts, row_fn row, json_t *acc,
                     const char *arg, const char *what, const char *key,
                     syncd_error_t *err)
{
    mongoc_cursor_t *cur;
    const bson_t *r;
    bson_error_t e;
    call_t c;
    int rc = 0;

    call_begin(&c, m, coll);
    cur = mongoc_collection_find_with_opts(c.coll, filter, opts, NULL);
    while (rc == 0 && mongoc_cursor_next(cur, &r))
        rc = row(acc, r, arg, err);
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
                       int with_tombstones, bson_t *opts, row_fn row,
                       const char *arg, const char *what, syncd_error_t *err)
{
    bson_t filter = BSON_INITIALIZER;
    json_t *arr = json_array();
    int rc;

    if (!arr) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto cleanup;
    }
    rc = list_filter(&filter, prefix, after, with_tombstones, err);
    if (rc == 0)
        rc = find_each(m, coll, &filter, opts, row, arr, arg, what,
                       prefix != NULL ? prefix : after, err);

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

    if (limit > 0)
        BSON_APPEND_INT64(opts, "limit", (int64_t)limit);
    return find_listed((mongo_backend_t *)b, out, coll, prefix, after,
                       with_tombstones, opts, list_entry, prefix, "list", err);
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
    bson_t *opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}", "limit",
                            BCON_INT64((int64_t)limit));

    return find_listed((mongo_backend_t *)b, out, coll, NULL, after, 0, opts,
                       export_entry, coll, "export", err);
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
    bson_t *opts =
        BCON_NEW("projection", "{", "_id", BCON_INT32(1), "v", BCON_INT32(1),
                 "h", BCON_INT32(1), "del", BCON_INT32(1), "}");
    json_t *map = json_object();
    int rc = 0;

    *out = NULL;
    if (!map) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto cleanup;
    }
    versions_filter(&filter, ids);
    rc = find_each(m, coll, &filter, opts, versions_entry, map, NULL,
                   "versions", NULL, err);

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

/* Purges one tombstone in FerretDB mode: claims it at its version (so no
 * writer can re-create it meanwhile), drops the older claims of its id,
 * deletes it when it is still that tombstone with no pending-publish
 * marker (the delete is fenced on its version, flag and outbox) and m's
 * liveness is proved (else a later purge does it), and drops its claim.
 * *deleted is 1 when it was removed. */
static int purge_claimed(mongo_backend_t *m, mongoc_collection_t *docs,
                         mongoc_collection_t *claims, const char *coll,
                         const char *id, int64_t version, int64_t *deleted,
                         syncd_error_t *err)
{
    char key[SYNCD_MAX_ID_BYTES + 32];
    char first[SYNCD_MAX_ID_BYTES + 32];
    char owner[64];
    bson_t *older;
    int64_t dropped = 0;
    int taken = 0;
    int rc;

    *deleted = 0;
    claim_key(key, sizeof(key), id, version);
    claim_key(first, sizeof(first), id, 0);
    claim_owner(owner, sizeof(owner), m->proc);
    older = BCON_NEW("_id", "{", "$gte", BCON_UTF8(first), "$lt",
                     BCON_UTF8(key), "}");
    rc = take_claim(m, claims, key, owner, &taken, coll, id, err);
    if (rc < 0 || !taken)
        goto cleanup;
    rc = delete_many(claims, older, &dropped, coll, err);
    if (rc == 0 && beat_fresh(m))
        rc = purge_one(docs, coll, id, version, deleted, err);
    if (drop_claim(claims, key, owner, NULL, coll, id, err) < 0 && rc == 0)
        rc = SYNCD_EBACKEND;
    release(m, owner);

cleanup:
    bson_destroy(older);
    return rc;
}

/* Drops the liveness records last bumped PROC_PURGE_LEASES leases ago or
 * more by their owners' wall clocks: their processes are gone (a live one
 * with a clock that far behind writes its record again within BEAT_MS). */
static int purge_procs(mongo_backend_t *m, call_t *c, const char *coll,
                       syncd_error_t *err)
{
    mongoc_collection_t *procs =
        mongoc_client_get_collection(c->client, m->db, PROCS);
    bson_t *old = BCON_NEW(
        "t", "{", "$lt",
        BCON_DATE_TIME(wall_ms() - PROC_PURGE_LEASES * m->lease_ms), "}");
    int64_t dropped = 0;
    int rc = delete_many(procs, old, &dropped, coll, err);

    bson_destroy(old);
    mongoc_collection_destroy(procs);
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

/* Drops the claims older than the lease (FerretDB mode) and the liveness
 * records of processes gone. */
static int purge_claims(mongo_backend_t *m, call_t *c, const char *coll,
                        mongoc_collection_t *claims, syncd_error_t *err)
{
    bson_t *old =
        BCON_NEW("t", "{", "$lt", BCON_DATE_TIME(wall_ms() - m->lease_ms), "}");
    int64_t dropped = 0;
    int rc = purge_procs(m, c, coll, err);

    if (rc == 0)
        rc = delete_many(claims, old, &dropped, coll, err);
    bson_destroy(old);
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
    mongoc_collection_t *claims = NULL;
    json_t *tombs = NULL;
    char name[128];
    call_t c;
    int rc = 0;

    *purged = 0;
    call_begin(&c, m, coll);
    if (m->claims) {
        snprintf(name, sizeof(name), CLAIMS_PREFIX "%s", coll);
        claims = mongoc_client_get_collection(c.client, m->db, name);
        rc = purge_claims(m, &c, coll, claims, err);
    }
    /* Page by page, while a page removes something (a tombstone left
     * because this process's liveness was not proved stays listed). */
    do {
        size_t before = *purged;

        json_decref(tombs);
        tombs = NULL;
        if (rc == 0)
            rc = list_tombstones(&tombs, c.coll, filter, coll, err);
        for (size_t i = 0; rc == 0 && i < json_array_size(tombs) &&
                           (limit == 0 || *purged < limit);
             i++) {
            json_t *t = json_array_get(tombs, i);
            const char *id = json_string_value(json_array_get(t, 0));
            int64_t v = json_integer_value(json_array_get(t, 1)), deleted = 0;

            if (claims != NULL)
                rc = purge_claimed(m, c.coll, claims, coll, id, v, &deleted,
                                   err);
            else
                rc = purge_one(c.coll, coll, id, v, &deleted, err);
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
    if (claims != NULL)
        mongoc_collection_destroy(claims);
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
 * (FerretDB mode: the version the caller's claim is on). */
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

/* The ack of FerretDB mode, where a filtered update is a query and then an
 * update by _id that could overwrite a newer writer's replace: under a
 * claim on the version the record is at, as a writer's. It first waits
 * (up to DEAD_MS: it runs on a thread of the node's pool) for this
 * process's liveness to be proved, since a waiter may take over the claim
 * of a holder that is not: the proof lapses between bumps whenever a bump
 * takes FerretDB more than about an eighth of a second, which a write
 * storm on SQLite brings about, and an ack that gave up at once then left
 * the markers to pile up. A claim held by another writer means the
 * record is moving on, carrying the markers, and a later ack drops them.
 * Fails with SYNCD_ETIMEDOUT, writing nothing, when m's liveness is still
 * not proved once it holds the claim. */
static int claimed_ack(mongo_backend_t *m, call_t *c, const char *coll,
                       const char *id, int64_t version, syncd_error_t *err)
{
    char key[SYNCD_MAX_ID_BYTES + 32];
    char owner[64];
    char name[128];
    mongoc_collection_t *claims;
    int64_t deadline = mono_ms() + DEAD_MS;
    int64_t current = 0;
    int taken = 0;
    int rc;

    while (!beat_fresh(m) && mono_ms() < deadline)
        sleep_ms(BEAT_MS / 5);
    rc = read_version(c->coll, id, &current, coll, err);
    if (rc < 0 || current == 0)
        return rc;
    snprintf(name, sizeof(name), CLAIMS_PREFIX "%s", coll);
    claims = mongoc_client_get_collection(c->client, m->db, name);
    claim_key(key, sizeof(key), id, current);
    claim_owner(owner, sizeof(owner), m->proc);
    rc = take_claim(m, claims, key, owner, &taken, coll, id, err);
    if (rc < 0 || !taken)
        goto cleanup;
    if (!beat_fresh(m))
        rc = syncd_error_set(err, SYNCD_ETIMEDOUT,
                             "%s/%s: not acked, this writer's liveness is "
                             "not proved",
                             coll, id);
    else
        rc = drop_markers(c->coll, coll, id, version, current, err);
    if (drop_claim(claims, key, owner, NULL, coll, id, err) < 0 && rc == 0)
        rc = SYNCD_EBACKEND;
    release(m, owner);

cleanup:
    mongoc_collection_destroy(claims);
    return rc < 0 ? rc : 0;
}

static int mongo_outbox_ack(syncd_backend_t *b, const char *coll,
                            const char *id, int64_t version, syncd_error_t *err)
{
    mongo_backend_t *m = (mongo_backend_t *)b;
    call_t c;
    int rc;

    call_begin(&c, m, coll);
    rc = m->claims ? claimed_ack(m, &c, coll, id, version, err)
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

static int mongo_outbox_list(syncd_backend_t *b, json_t **out, const char *coll,
                             const char *after, size_t limit,
                             syncd_error_t *err)
{
    mongo_backend_t *m = (mongo_backend_t *)b;
    bson_t *filter = after != NULL
                         ? BCON_NEW("ob", "{", "$exists", BCON_BOOL(true), "}",
                                    "_id", "{", "$gt", BCON_UTF8(after), "}")
                         : BCON_NEW("ob", "{", "$exists", BCON_BOOL(true), "}");
    bson_t *opts =
        BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}", "projection", "{", "v",
                 BCON_INT32(1), "ob", BCON_INT32(1), "}", "limit",
                 BCON_INT64((int64_t)limit));
    mongoc_cursor_t *cur;
    json_t *arr = json_array();
    const bson_t *r;
    bson_error_t e;
    call_t c;
    int rc = arr != NULL ? 0 : syncd_error_set(err, SYNCD_ENOMEM, "no memory");

    call_begin(&c, m, coll);
    ensure_outbox_index(m, &c, coll);
    cur = mongoc_collection_find_with_opts(c.coll, filter, opts, NULL);
    while (rc == 0 && mongoc_cursor_next(cur, &r)) {
        json_t *ob = NULL;
        bson_iter_t it;

        if (!bson_iter_init_find(&it, r, "_id") || !BSON_ITER_HOLDS_UTF8(&it))
            continue;
        rc = field_array(&ob, r, "ob", err);
        if (rc == 0 && json_array_size(ob) > 0 &&
            json_array_append_new(
                arr,
                json_pack("{s:s, s:I, s:O}", "id", bson_iter_utf8(&it, NULL),
                          "v", (json_int_t)field_int64(r, "v"), "ob", ob)) < 0)
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        json_decref(ob);
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
    beat_stop(m);
    if (m->pool) {
        conns_free(m);
        pthread_mutex_destroy(&m->conn_lock);
        mongoc_client_pool_destroy(m->pool);
    }
    if (m->indexed) {
        json_decref(m->indexed);
        pthread_mutex_destroy(&m->indexed_lock);
    }
    if (m->held) {
        json_decref(m->held);
        pthread_mutex_destroy(&m->held_lock);
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
 * turns on claims when it is FerretDB (see the file comment for why the
 * product decides). */
static int probe_server(mongo_backend_t *m, syncd_error_t *err)
{
    mongoc_client_t *client = mongoc_client_pool_pop(m->pool);
    bson_t *cmd = BCON_NEW("buildInfo", BCON_INT32(1));
    bson_t reply;
    bson_iter_t it;
    bson_error_t e;
    int rc = 0;

    if (mongoc_client_command_simple(client, "admin", cmd, NULL, &reply, &e))
        m->claims = bson_iter_init_find(&it, &reply, "ferretdbVersion");
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
    if (!(m->held = json_object())) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto cleanup;
    }
    pthread_mutex_init(&m->held_lock, NULL);
    m->ops = mongo_ops;
    m->base.ops = &m->ops;
    m->lease_ms = 2 * (int64_t)t < MIN_LEASE_MS ? MIN_LEASE_MS : 2 * (int64_t)t;
    m->pool = mongoc_client_pool_new(u);
    if (!m->pool) {
        rc = syncd_error_set_backend(err, SYNCD_EINVAL, BACKEND, 0,
                                     "mongo_uri is not usable (TLS options "
                                     "need a driver built with TLS)");
        goto cleanup;
    }
    pthread_mutex_init(&m->conn_lock, NULL);
    mongoc_client_pool_set_error_api(m->pool, MONGOC_ERROR_API_VERSION_2);
    snprintf(m->proc, sizeof(m->proc), "%016llx.%u",
             (unsigned long long)process_nonce,
             __atomic_add_fetch(&backend_seq, 1, __ATOMIC_RELAXED));
    rc = probe_server(m, err);
    if (rc == 0 && m->claims) {
        m->ops.cas_update = NULL;
        rc = beat_start(m, err);
    }

cleanup:
    mongoc_uri_destroy(u);
    if (rc < 0) {
        mongo_close((syncd_backend_t *)m);
        return rc;
    }
    *out = &m->base;
    return 0;
}
