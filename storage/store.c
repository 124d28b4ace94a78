/* store.c - the store library: versions, tombstones, validation and the
 * compare-and-swap edit loop, written once over any backend.
 *
 * Every write (create, put, edit, patch, delete) is one loop: read the
 * current record, let a step function decide the next body (or a
 * tombstone), and commit it with the backend's compare-and-swap on the
 * version read (expected 0 means "no record": an insert). A record is live
 * or a tombstone; a tombstone takes the next version like any change, and a
 * re-create over it continues from there, so a version never repeats for an
 * id. On a conflict the loop waits (exponential backoff, full jitter),
 * re-reads from the store of record and tries again, up to max_retries or
 * edit_timeout. A strict write (if_match given) makes one attempt.
 *
 * A backend with a per-key write lock (the embedded RocksDB store, written
 * by this process alone) runs each attempt under it: writers of a document
 * queue there instead of conflicting, so the attempt commits at once and
 * the backoff is never reached. The lock is held while the edit callback
 * runs, which is why the callback must not call the store.
 *
 * In MongoDB mode the node cache sits in front for reads; a write reads
 * from the store of record, because it carries the record's outbox and
 * idempotency keys forward, unless the backend can commit without a read
 * (MongoDB's single-operation compare-and-swap): then a write first
 * decides from the cache's entry and commits fenced on its version and
 * hash, the server carrying the outbox and keys forward, and falls back to
 * the read when it cannot decide there; an update that misses is a
 * conflict that drops the entry (the retry reads the store unless a newer
 * write of this node refreshed the entry meanwhile). Every committed
 * write and every read from the store refreshes the cache with
 * put-if-newer.
 *
 * The outbox: every committed version appends a pending-publish marker to
 * its record, in the same compare-and-swap, and the change reports the
 * markers still pending before it, so that the node publishes those first;
 * once its versions are published the node acks them (the markers up to
 * that version go, whatever version the record is at by then), and a
 * republisher lists the records with markers left (a publish that failed,
 * a node that died after its commit). A marker goes only with its ack: a
 * record that holds SYNCD_MAX_OUTBOX_MARKERS refuses the next write. An
 * idempotency key of a write is kept with the record the same way, so a retry
 * on any node finds it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* attempt() result: the compare-and-swap found another version. */
#define CAS_CONFLICT 1

/* attempt_cached() result: nothing written; attempt() decides. */
#define UNDECIDED 2

/* step result: commit a tombstone instead of a body. */
#define STEP_DELETE 1

struct syncd_store {
    syncd_backend_t *backend;
    syncd_cache_t *cache; /* NULL in embedded mode */
    char *data_dir;       /* the RocksDB store (embedded) or the cache's dir */
    char node_id[SYNCD_MAX_NODE_ID + 1];
    int max_retries;
    int64_t retry_delay_ms, max_retry_delay_ms, edit_timeout_ms;
    int64_t tombstone_ttl_ms;
    int64_t idempotency_ttl_ms;
    int outbox;
    int history_len;
    uint64_t history_max_bytes;
    size_t max_doc_bytes;
    syncd_store_hooks_t hooks; /* NULL members: the real clock/sleep/rng */
    uint64_t rng_state;
    uint64_t edits, conflicts, retries, cas_fast; /* updated atomically */
};

typedef struct write_req write_req_t;

/* Decides the next state of req's record from the current one (NULL when
 * there is none): 0 with a new reference in *body, STEP_DELETE, or an
 * error. */
typedef int (*step_fn)(json_t **body, const write_req_t *req,
                       const syncd_doc_t *cur, syncd_error_t *err);

/* One write: its record, the step deciding the next state (with its
 * argument), the strict precondition (SYNCD_ANY_VERSION: none), the
 * idempotency key (NULL: none) and the RFC 6902 patch the step applies
 * (NULL: another step), which names what the change's diffs compare. */
struct write_req {
    const char *coll;
    const char *id;
    step_fn step;
    void *arg;
    int64_t if_match;
    const char *ikey;
    const json_t *applied;
};

/* ---- Clock, sleep and random source ------------------------------------ */

static int64_t clock_us(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t clock_ms(clockid_t id)
{
    return clock_us(id) / 1000;
}

/* Monotonic time for deadlines. */
static int64_t now_ms(syncd_store_t *s)
{
    return s->hooks.now_ms != NULL ? s->hooks.now_ms(s->hooks.data)
                                   : clock_ms(CLOCK_MONOTONIC);
}

/* Wall-clock time for mtimes and tombstone purging; the hooked clock when
 * one is injected, so that tests drive both. */
static int64_t wall_ms(syncd_store_t *s)
{
    return s->hooks.now_ms != NULL ? s->hooks.now_ms(s->hooks.data)
                                   : clock_ms(CLOCK_REALTIME);
}

static void sleep_ms(syncd_store_t *s, int64_t ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};

    if (s->hooks.sleep_ms != NULL) {
        s->hooks.sleep_ms(s->hooks.data, ms);
        return;
    }
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* A splitmix64 step on a shared atomic state: thread-safe and cheap. */
static uint64_t random_u64(syncd_store_t *s)
{
    uint64_t z;

    if (s->hooks.random != NULL)
        return s->hooks.random(s->hooks.data);
    z = __atomic_add_fetch(&s->rng_state, 0x9e3779b97f4a7c15ULL,
                           __ATOMIC_RELAXED);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void count(uint64_t *counter)
{
    __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
}

int64_t syncd_backoff_ms(int attempt, int64_t delay_ms, int64_t max_delay_ms,
                         uint64_t rnd)
{
    int64_t cap = delay_ms < max_delay_ms ? delay_ms : max_delay_ms;

    for (int i = 0; i < attempt && cap < max_delay_ms; i++)
        cap = cap > max_delay_ms / 2 ? max_delay_ms : cap * 2;
    if (cap <= 0)
        return 0;
    return (int64_t)(rnd % ((uint64_t)cap + 1));
}

/* ---- Validation (the name rules are in names.c) -------------------------- */

static int validate_key(const char *coll, const char *id, syncd_error_t *err)
{
    int rc = syncd_validate_collection(coll, err);

    return rc != 0 ? rc : syncd_validate_id(id, err);
}

/* ---- Documents and changes ---------------------------------------------- */

void syncd_doc_free(syncd_doc_t *doc)
{
    if (doc == NULL)
        return;
    free(doc->coll);
    free(doc->id);
    json_decref(doc->body);
    json_decref(doc->outbox);
    json_decref(doc->ikeys);
    json_decref(doc->hist);
    json_decref(doc->hist_text);
    free(doc);
}

void syncd_doc_drop_meta(syncd_doc_t *doc)
{
    json_decref(doc->outbox);
    json_decref(doc->ikeys);
    json_decref(doc->hist);
    json_decref(doc->hist_text);
    doc->outbox = doc->ikeys = doc->hist = doc->hist_text = NULL;
}

syncd_doc_t *syncd_doc_dup(const syncd_doc_t *doc)
{
    syncd_doc_t *copy = malloc(sizeof(*copy));

    if (copy == NULL)
        return NULL;
    *copy = *doc;
    copy->coll = strdup(doc->coll);
    copy->id = strdup(doc->id);
    copy->body = json_incref(doc->body);
    copy->outbox = json_incref(doc->outbox);
    copy->ikeys = json_incref(doc->ikeys);
    copy->hist = json_incref(doc->hist);
    copy->hist_text = json_incref(doc->hist_text);
    if (copy->coll == NULL || copy->id == NULL) {
        syncd_doc_free(copy);
        return NULL;
    }
    return copy;
}

void syncd_change_free(syncd_change_t *change)
{
    if (change == NULL)
        return;
    syncd_doc_free(change->doc);
    free(change->text);
    json_decref(change->patch);
    json_decref(change->merge);
    json_decref(change->pending);
    free(change);
}

const char *syncd_change_op_name(syncd_change_op_t op)
{
    switch (op) {
    case SYNCD_CHANGE_CREATE:
        return "create";
    case SYNCD_CHANGE_UPDATE:
        return "update";
    case SYNCD_CHANGE_DELETE:
        return "delete";
    default:
        return "none";
    }
}

static int is_live(const syncd_doc_t *doc)
{
    return doc != NULL && !doc->deleted;
}

/* Returns a new record of coll/id taking body (may be NULL for a
 * tombstone; the reference is stolen, even on failure), or NULL. */
static syncd_doc_t *doc_new(syncd_store_t *s, const char *coll, const char *id,
                            int64_t version, json_t *body, const char *hash)
{
    syncd_doc_t *doc = calloc(1, sizeof(*doc));

    if (doc == NULL) {
        json_decref(body);
        return NULL;
    }
    doc->body = body;
    doc->coll = strdup(coll);
    doc->id = strdup(id);
    if (doc->coll == NULL || doc->id == NULL) {
        syncd_doc_free(doc);
        return NULL;
    }
    doc->version = version;
    doc->deleted = body == NULL;
    snprintf(doc->hash, sizeof(doc->hash), "%s", hash);
    doc->mtime_ms = wall_ms(s);
    snprintf(doc->origin, sizeof(doc->origin), "%s", s->node_id);
    return doc;
}

/* Checks that body is a JSON object of at most max_doc_bytes when
 * serialized canonically, and hands the canonical JSON to *canon (caller
 * frees) with its length in *len. cur, the version body replaces (or
 * NULL), sizes the buffer the text is written into. */
static int check_size(syncd_store_t *s, const syncd_doc_t *cur,
                      const json_t *body, char **canon, size_t *len,
                      syncd_error_t *err)
{
    *canon = NULL;
    *len = 0;
    if (!json_is_object(body))
        return syncd_error_set(err, SYNCD_EINVAL,
                               "document body must be a JSON object");
    *canon = syncd_json_canonical_sized(
        body, cur != NULL ? cur->body_size + cur->body_size / 8 : 0, len);
    if (*canon == NULL)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "document body nests deeper than %d levels",
                               SYNCD_PATCH_MAX_DEPTH);
    if (*len > s->max_doc_bytes)
        return syncd_error_set(err, SYNCD_ETOOBIG,
                               "document body is %zu bytes, over "
                               "max_doc_bytes (%zu)",
                               *len, s->max_doc_bytes);
    return 0;
}

/* check_size(), then writes body's content hash into hash. */
static int check_body(syncd_store_t *s, const syncd_doc_t *cur,
                      const json_t *body, char hash[SYNCD_HASH_HEX_LEN + 1],
                      char **canon, size_t *len, syncd_error_t *err)
{
    int rc = check_size(s, cur, body, canon, len, err);

    return rc != 0 ? rc : syncd_json_hash(hash, body, err);
}

/* A writer's hash tree: the tree of the body it writes (owned, or NULL)
 * and the bytes it is charged, and the diff from the record's body that
 * updated it (owned, or NULL), which the change then carries. */
typedef struct write_tree {
    syncd_htree_t *tree;
    size_t bytes;
    json_t *diff;
} write_tree_t;

/* check_body() for a write through a backend that keeps hash trees
 * (take_tree): when it kept the tree of cur's body, the tree is updated by
 * the diff from cur's body to body (kept in wt->diff), so that only what
 * changed is rehashed; a large body that replaces a live one without a
 * tree gets its tree built. Either way wt->tree, when set, is the tree of
 * body, for the backend to keep with the version committed. */
static int hash_body(syncd_store_t *s, const write_req_t *req,
                     const syncd_doc_t *cur, const json_t *body,
                     char hash[SYNCD_HASH_HEX_LEN + 1], char **canon,
                     size_t *len, write_tree_t *wt, syncd_error_t *err)
{
    const syncd_backend_ops_t *ops = s->backend->ops;
    int rc;

    if (ops->take_tree == NULL)
        return check_body(s, cur, body, hash, canon, len, err);
    rc = check_size(s, cur, body, canon, len, err);
    if (rc != 0)
        return rc;
    if (is_live(cur) &&
        ops->take_tree(s->backend, cur->coll, cur->id, cur->version, cur->hash,
                       &wt->tree, &wt->bytes)) {
        rc = req->applied != NULL
                 ? syncd_patch_diff_touched(&wt->diff, cur->body, body,
                                            req->applied, err)
                 : syncd_patch_diff(&wt->diff, cur->body, body, err);
        if (rc != 0)
            return rc;
        if (syncd_htree_apply(wt->tree, wt->diff, NULL) == 0) {
            syncd_htree_root(wt->tree, hash);
            return 0;
        }
        syncd_htree_free(wt->tree);
        wt->tree = NULL;
    }
    /* Only documents that change pay for a tree: not a create. */
    if (*len < SYNCD_TREE_MIN || !is_live(cur))
        return syncd_json_hash(hash, body, err);
    rc = syncd_htree_build(&wt->tree, body, err);
    if (rc != 0)
        return rc;
    wt->bytes = (size_t)syncd_htree_bytes(wt->tree);
    syncd_htree_root(wt->tree, hash);
    return 0;
}

/* Hands wt's tree to the backend to keep with coll/id's version. */
static void keep_tree(syncd_store_t *s, const char *coll, const char *id,
                      int64_t version, write_tree_t *wt)
{
    if (wt->tree != NULL)
        s->backend->ops->keep_tree(s->backend, coll, id, version, wt->tree,
                                   wt->bytes);
    wt->tree = NULL;
}

/* Returns 1 when body (content hash hash, canonical JSON canon, len bytes)
 * is the body of cur, which is live. cur may carry the legacy hash of a
 * record stored before the Merkle hash (doc/HASH.md): the SHA-256 of its
 * canonical JSON. That hash is computed only for a body jansson finds
 * equal (it is blind to 0.0 against -0.0, so it cannot decide alone):
 * comparing stops at the first difference, where hashing reads all of a
 * body an edit changed. */
static int same_body(const syncd_doc_t *cur, const char *hash,
                     const json_t *body, const char *canon, size_t len)
{
    char legacy[SYNCD_HASH_HEX_LEN + 1];

    if (strcmp(hash, cur->hash) == 0)
        return 1;
    if (!json_equal(cur->body, body))
        return 0;
    syncd_sha256_hex(legacy, canon, len);
    return strcmp(legacy, cur->hash) == 0;
}

/* Commits next over version expected with the backend's compare-and-swap,
 * handing it the canonical JSON of next's body (NULL for a tombstone) when
 * it can use it. */
static int commit(syncd_store_t *s, const syncd_doc_t *next, const char *canon,
                  size_t canon_len, int64_t expected, syncd_error_t *err)
{
    const syncd_backend_ops_t *ops = s->backend->ops;

    if (ops->cas_canonical != NULL)
        return ops->cas_canonical(s->backend, next, canon, canon_len, expected,
                                  err);
    return ops->cas(s->backend, next, expected, err);
}

/* Copies a backend's error into err, keeping its backend name and code. */
static int forward(syncd_error_t *err, const syncd_error_t *from, int rc)
{
    if (from->code == 0)
        return syncd_error_set(err, rc, "%s", syncd_strerror(rc));
    return syncd_error_set_backend(err, from->code, from->backend,
                                   from->backend_code, "%s", from->message);
}

/* Returns the op that committing next over cur (NULL: no record) is. */
static syncd_change_op_t op_of(const syncd_doc_t *cur, const syncd_doc_t *next)
{
    if (next->deleted)
        return SYNCD_CHANGE_DELETE;
    return is_live(cur) ? SYNCD_CHANGE_UPDATE : SYNCD_CHANGE_CREATE;
}

/* Returns the op named name ("create", "update", "delete"), else NONE. */
static syncd_change_op_t op_named(const char *name)
{
    for (int op = SYNCD_CHANGE_CREATE; op <= SYNCD_CHANGE_DELETE; op++) {
        if (name != NULL && strcmp(name, syncd_change_op_name(op)) == 0)
            return (syncd_change_op_t)op;
    }
    return SYNCD_CHANGE_NONE;
}

/* Returns cur's entry of idempotency key (borrowed) when it is younger
 * than idempotency_ttl, else NULL. */
static const json_t *ikey_find(syncd_store_t *s, const syncd_doc_t *cur,
                               const char *key)
{
    int64_t oldest = wall_ms(s) - s->idempotency_ttl_ms;
    size_t i;
    json_t *e;

    if (cur == NULL)
        return NULL;
    json_array_foreach (cur->ikeys, i, e) {
        const char *k = json_string_value(json_object_get(e, "k"));

        if (k != NULL && strcmp(k, key) == 0 &&
            json_integer_value(json_object_get(e, "t")) >= oldest)
            return e;
    }
    return NULL;
}

/* Sets next's outbox: cur's pending markers and one for next, op; without
 * the outbox option only cur's markers, kept for their writers. A marker
 * is never dropped before its ack: when cur already holds
 * SYNCD_MAX_OUTBOX_MARKERS, the write fails with SYNCD_EBACKEND (nothing
 * is written) until the publisher catches up. */
static int add_marker(syncd_store_t *s, syncd_doc_t *next,
                      const syncd_doc_t *cur, syncd_change_op_t op,
                      syncd_error_t *err)
{
    json_t *marker;

    if (!s->outbox) {
        next->outbox = json_incref(cur != NULL ? cur->outbox : NULL);
        return 0;
    }
    if (cur != NULL && json_array_size(cur->outbox) >= SYNCD_MAX_OUTBOX_MARKERS)
        return syncd_error_set(err, SYNCD_EBACKEND,
                               "%s/%s: %d versions are still waiting to be "
                               "published; try again once the bus is back",
                               cur->coll, cur->id, SYNCD_MAX_OUTBOX_MARKERS);
    next->outbox = cur != NULL && cur->outbox != NULL ? json_copy(cur->outbox)
                                                      : json_array();
    if (next->outbox == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    marker = json_pack(
        "{s:I, s:I, s:s, s:s, s:I, s:s}", "v", (json_int_t)next->version,
        "base", (json_int_t)(op == SYNCD_CHANGE_CREATE ? 0 : cur->version),
        "op", syncd_change_op_name(op), "h", next->hash, "t",
        (json_int_t)next->mtime_ms, "by", next->origin);
    if (json_array_append_new(next->outbox, marker) != 0)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    return 0;
}

/* Sets next's outbox (see add_marker()) and its idempotency keys (with
 * req's key: cur's keys younger than the TTL, at most
 * SYNCD_MAX_IDEMPOTENCY_KEYS - 1 of the newest, then req's; without: cur's
 * as they are), so that they commit with next. */
static int add_meta(syncd_store_t *s, syncd_doc_t *next, const syncd_doc_t *cur,
                    const write_req_t *req, syncd_error_t *err)
{
    syncd_change_op_t op = op_of(cur, next);
    json_t *old = cur != NULL ? cur->ikeys : NULL;
    int64_t oldest = wall_ms(s) - s->idempotency_ttl_ms;
    size_t n = json_array_size(old), i;
    int rc = add_marker(s, next, cur, op, err);

    if (rc != 0)
        return rc;
    if (req->ikey == NULL) {
        next->ikeys = json_incref(old);
    } else {
        next->ikeys = json_array();
        for (i = n >= SYNCD_MAX_IDEMPOTENCY_KEYS
                     ? n - SYNCD_MAX_IDEMPOTENCY_KEYS + 1
                     : 0;
             next->ikeys != NULL && i < n; i++) {
            json_t *e = json_array_get(old, i);

            if (json_integer_value(json_object_get(e, "t")) >= oldest &&
                json_array_append(next->ikeys, e) != 0)
                rc = SYNCD_ENOMEM;
        }
        if (next->ikeys == NULL ||
            json_array_append_new(
                next->ikeys, json_pack("{s:s, s:s, s:I, s:I}", "k", req->ikey,
                                       "op", syncd_change_op_name(op), "v",
                                       (json_int_t)next->version, "t",
                                       (json_int_t)next->mtime_ms)) != 0)
            rc = SYNCD_ENOMEM;
    }
    return rc == 0 ? 0 : syncd_error_set(err, rc, "out of memory");
}

/* Builds the change record of committing next over cur (NULL when there
 * was no record) into *out; next is stolen, even on failure. An update's
 * JSON Patch is diff when given (the diff from cur's body to next's,
 * stolen even on failure); else its diffs compare only what `applied` (the
 * RFC 6902 patch that made next's body from cur's; NULL: unknown) touched,
 * else the whole bodies for the JSON Patch and, from what it touched, the
 * merge patch. */
static int make_change(syncd_change_t **out, const syncd_doc_t *cur,
                       syncd_doc_t *next, const json_t *applied, json_t *diff,
                       syncd_error_t *err)
{
    syncd_change_t *c = calloc(1, sizeof(*c));
    int rc = 0;

    *out = NULL;
    if (c == NULL) {
        syncd_doc_free(next);
        json_decref(diff);
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }
    c->doc = next;
    if (cur != NULL && json_array_size(cur->outbox) > 0)
        c->pending = json_incref(cur->outbox);
    if (next->deleted) {
        c->op = SYNCD_CHANGE_DELETE;
        c->base = cur->version;
    } else if (!is_live(cur)) {
        c->op = SYNCD_CHANGE_CREATE;
        c->patch = json_pack("[{s:s, s:s, s:O}]", "op", "add", "path", "",
                             "value", next->body);
        c->merge = json_incref(next->body);
        if (c->patch == NULL)
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    } else {
        c->op = SYNCD_CHANGE_UPDATE;
        c->base = cur->version;
        c->patch = diff;
        diff = NULL;
        if (c->patch == NULL)
            rc = applied != NULL
                     ? syncd_patch_diff_touched(&c->patch, cur->body,
                                                next->body, applied, err)
                     : syncd_patch_diff(&c->patch, cur->body, next->body, err);
        if (rc == 0)
            rc = syncd_merge_diff_touched(&c->merge, cur->body, next->body,
                                          applied != NULL ? applied : c->patch,
                                          err);
    }
    json_decref(diff);
    if (rc != 0) {
        syncd_change_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* Builds into *out the change of req over cur (NULL when there was no
 * record): the next version with body (stolen, even on failure; NULL for a
 * delete) and its hash, its outbox and keys (add_meta()), its diffs (an
 * update's JSON Patch is diff when given, stolen even on failure). */
static int build_change(syncd_store_t *s, syncd_change_t **out,
                        const syncd_doc_t *cur, const write_req_t *req,
                        json_t *body, const char *hash, json_t *diff,
                        syncd_error_t *err)
{
    syncd_doc_t *next = doc_new(s, req->coll, req->id,
                                cur != NULL ? cur->version + 1 : 1, body, hash);
    syncd_change_t *c;
    int rc;

    *out = NULL;
    if (next == NULL) {
        json_decref(diff);
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }
    rc = add_meta(s, next, cur, req, err);
    if (rc != 0) {
        syncd_doc_free(next);
        json_decref(diff);
        return rc;
    }
    rc = make_change(&c, cur, next, req->applied, diff, err);
    if (rc != 0)
        return rc;
    /* An update's diff bounds the history entry's reverse diff. */
    rc = syncd_history_append(c->doc, cur,
                              c->op == SYNCD_CHANGE_UPDATE ? c->patch : NULL,
                              s->history_len, s->history_max_bytes, err);
    if (rc != 0) {
        syncd_change_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* A change with op NONE holding cur (stolen). */
static int change_none(syncd_change_t **out, syncd_doc_t *cur,
                       syncd_error_t *err)
{
    *out = calloc(1, sizeof(**out));
    if (*out == NULL) {
        syncd_doc_free(cur);
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }
    (*out)->op = SYNCD_CHANGE_NONE;
    (*out)->doc = cur;
    (*out)->base = cur->version;
    return 0;
}

/* A change with op NONE holding cur (stolen) that replays hit, cur's entry
 * of the write's idempotency key. */
static int change_replay(syncd_change_t **out, syncd_doc_t *cur,
                         const json_t *hit, syncd_error_t *err)
{
    int rc = change_none(out, cur, err);

    if (rc != 0)
        return rc;
    (*out)->replayed = 1;
    (*out)->replayed_op =
        op_named(json_string_value(json_object_get(hit, "op")));
    (*out)->replayed_version = json_integer_value(json_object_get(hit, "v"));
    return 0;
}

/* ---- Cache refresh and reads -------------------------------------------- */

/* Puts doc in the cache (put-if-newer), canon being the canonical JSON of
 * its body when the caller has it (see syncd_cache_put()); a cache that
 * fails to take it drops the key instead, so it can never serve an older
 * version. */
static void cache_refresh(syncd_store_t *s, const syncd_doc_t *doc,
                          const char *canon, size_t canon_len)
{
    if (s->cache == NULL)
        return;
    /* doc is as read from the store of record or as this store committed
     * it: its history is the record's whole history, which
     * attempt_cached() builds on (reads of history still go to the
     * store). */
    if (syncd_cache_put_with_history(s->cache, doc, canon, canon_len, NULL) < 0)
        syncd_cache_invalidate(s->cache, doc->coll, doc->id, NULL);
}

/* Hands the canonical text of change's body (*canon, malloc'd) to change. */
static void keep_text(syncd_change_t *change, char **canon, size_t len)
{
    change->text = *canon;
    change->text_len = len;
    *canon = NULL;
}

/* Reads the record of coll/id (tombstones included) into *cur, NULL when
 * there is none; from the cache when from_cache and it holds a fresh entry
 * (*cached set to 1), else from the store, refreshing the cache. */
static int read_record(syncd_store_t *s, syncd_doc_t **cur, const char *coll,
                       const char *id, int from_cache, int *cached,
                       syncd_error_t *err)
{
    syncd_error_t local;
    int rc;

    *cur = NULL;
    *cached = 0;
    if (from_cache && s->cache != NULL &&
        syncd_cache_get(s->cache, cur, coll, id, NULL) == 0) {
        *cached = 1;
        return 0;
    }
    syncd_error_clear(&local);
    rc = s->backend->ops->get(s->backend, cur, coll, id, &local);
    if (rc == SYNCD_ENOTFOUND) {
        if (s->cache != NULL)
            syncd_cache_invalidate(s->cache, coll, id, NULL);
        return 0;
    }
    if (rc != 0)
        return forward(err, &local, rc);
    cache_refresh(s, *cur, NULL, 0);
    return 0;
}

/* ---- The write loop ----------------------------------------------------- */

/* Sets c's pending markers to those of its record's committed outbox
 * below its version (NULL when there are none). Out of memory leaves them
 * NULL: the republisher publishes them. */
static void set_pending(syncd_change_t *c)
{
    size_t i;
    json_t *marker;

    json_decref(c->pending);
    c->pending = NULL;
    json_array_foreach (c->doc->outbox, i, marker) {
        if (json_integer_value(json_object_get(marker, "v")) >= c->doc->version)
            continue;
        if (c->pending == NULL && (c->pending = json_array()) == NULL)
            return;
        if (json_array_append(c->pending, marker) != 0) {
            json_decref(c->pending);
            c->pending = NULL;
            return;
        }
    }
}

/* An attempt of a write where the backend writes without a read
 * (cas_update: MongoDB with its single-operation compare-and-swap): it
 * decides from the node cache's fresh entry of a live record and commits
 * with one operation fenced on that entry's version and hash, which
 * carries the record's outbox and idempotency keys forward on the server.
 * Returns 0 with *out set, CAS_CONFLICT when the update found the record
 * elsewhere (a strict write: UNDECIDED), an error of the backend, or
 * UNDECIDED when it wrote nothing and attempt(), reading the record, must
 * decide: no such entry, a strict write at another version, a step that
 * fails or changes nothing on it (the store of record has the last word
 * on each). */
static int attempt_cached(syncd_store_t *s, syncd_change_t **out,
                          const write_req_t *req, syncd_error_t *err)
{
    char hash[SYNCD_HASH_HEX_LEN + 1] = "";
    syncd_doc_t *cur = NULL;
    syncd_change_t *change = NULL;
    json_t *body = NULL, *outbox = NULL, *ikeys = NULL;
    char *canon = NULL;
    size_t canon_len = 0;
    syncd_error_t local;
    int rc = UNDECIDED;

    /* Only an entry that holds its record's whole history (one read from
     * the store or committed here, not one made from an event) can give
     * the next version's history, built from it exactly as attempt()
     * builds it from the record read. The update's filter {_id, v, h}
     * fences that history too: a version number of a record is committed
     * once, by one compare-and-swap, with the one history that commit
     * built, so the record at the entry's version is the entry's record,
     * history included. */
    if (s->cache == NULL || s->backend->ops->cas_update == NULL ||
        syncd_cache_get_with_history(s->cache, &cur, req->coll, req->id,
                                     NULL) != 0)
        return UNDECIDED;
    if (!is_live(cur) ||
        (req->if_match != SYNCD_ANY_VERSION && cur->version != req->if_match))
        goto done;
    /* An entry made from an event has no markers or keys, and those of
     * one made here may be old: the update keeps the record's own. */
    json_decref(cur->outbox);
    json_decref(cur->ikeys);
    cur->outbox = cur->ikeys = NULL;
    syncd_error_clear(&local);
    rc = req->step(&body, req, cur, &local);
    if (rc < 0 ||
        (rc != STEP_DELETE &&
         (check_body(s, cur, body, hash, &canon, &canon_len, &local) != 0 ||
          same_body(cur, hash, body, canon, canon_len)))) {
        rc = UNDECIDED;
        goto done;
    }
    rc = build_change(s, &change, cur, req, body, hash, NULL, err);
    body = NULL;
    if (rc != 0)
        goto done;
    syncd_error_clear(&local);
    rc = s->backend->ops->cas_update(s->backend, change->doc, cur->version,
                                     cur->hash, &outbox, &ikeys, &local);
    if (rc == SYNCD_ECONFLICT) {
        /* The record moved on from the entry, or never was at it: a
         * conflict, and the entry goes, so that the retry reads the store
         * unless a newer write refreshed it meanwhile; a strict write,
         * which has one attempt, lets the store decide at once. */
        syncd_cache_invalidate(s->cache, req->coll, req->id, NULL);
        rc = req->if_match != SYNCD_ANY_VERSION ? UNDECIDED : CAS_CONFLICT;
        goto done;
    }
    if (rc != 0) {
        forward(err, &local, rc);
        goto done;
    }
    json_decref(change->doc->outbox);
    json_decref(change->doc->ikeys);
    change->doc->outbox = outbox;
    change->doc->ikeys = ikeys;
    set_pending(change);
    cache_refresh(s, change->doc, canon, canon_len);
    keep_text(change, &canon, canon_len);
    count(&s->cas_fast);
    *out = change;
    change = NULL;
done:
    syncd_change_free(change);
    free(canon);
    json_decref(body);
    syncd_doc_free(cur);
    return rc;
}

/* One read-decide-commit attempt. Returns 0 with *out set, CAS_CONFLICT
 * when the version moved, or an error. The read is always from the store
 * of record: the record's outbox and idempotency keys, which the write
 * carries forward, live only there (the cache may hold a version made
 * from an event, without them). */
static int attempt(syncd_store_t *s, syncd_change_t **out,
                   const write_req_t *req, syncd_error_t *err)
{
    const json_t *hit;
    int cached;
    char hash[SYNCD_HASH_HEX_LEN + 1] = "";
    syncd_doc_t *cur = NULL;
    syncd_change_t *change = NULL;
    json_t *body = NULL;
    char *canon = NULL;
    size_t canon_len = 0;
    write_tree_t wt = {0};
    syncd_error_t local;
    int rc;

    rc = read_record(s, &cur, req->coll, req->id, 0, &cached, err);
    if (rc != 0)
        return rc;
    if (req->ikey != NULL && (hit = ikey_find(s, cur, req->ikey)) != NULL) {
        rc = change_replay(out, cur, hit, err);
        cur = NULL;
        goto done;
    }
    if (req->if_match != SYNCD_ANY_VERSION && !is_live(cur)) {
        rc = syncd_error_set(err, SYNCD_ENOTFOUND, "%s/%s not found", req->coll,
                             req->id);
        goto done;
    }
    if (req->if_match != SYNCD_ANY_VERSION && cur->version != req->if_match) {
        rc = syncd_error_set(err, SYNCD_EPRECONDITION,
                             "%s/%s is at version %lld, not %lld", req->coll,
                             req->id, (long long)cur->version,
                             (long long)req->if_match);
        goto done;
    }
    rc = req->step(&body, req, cur, err);
    if (rc < 0)
        goto done;
    if (rc != STEP_DELETE) {
        rc = hash_body(s, req, cur, body, hash, &canon, &canon_len, &wt, err);
        if (rc != 0)
            goto done;
        if (is_live(cur) && same_body(cur, hash, body, canon, canon_len)) {
            keep_tree(s, cur->coll, cur->id, cur->version, &wt);
            rc = change_none(out, cur, err);
            cur = NULL;
            goto done;
        }
    }
    /* The change (its diffs) is built before the commit, so that a failure
     * to build it fails a write that wrote nothing, never one that
     * committed. */
    rc = build_change(s, &change, cur, req, body, hash, wt.diff, err);
    body = NULL;
    wt.diff = NULL;
    if (rc != 0)
        goto done;
    change->doc->body_size = canon != NULL ? canon_len : 0;
    syncd_error_clear(&local);
    rc = commit(s, change->doc, canon, canon_len,
                cur != NULL ? cur->version : 0, &local);
    if (rc == SYNCD_ECONFLICT) {
        rc = CAS_CONFLICT;
        goto done;
    }
    if (rc != 0) {
        forward(err, &local, rc);
        goto done;
    }
    cache_refresh(s, change->doc, canon, canon_len);
    keep_tree(s, req->coll, req->id, change->doc->version, &wt);
    keep_text(change, &canon, canon_len);
    *out = change;
    change = NULL;
done:
    syncd_htree_free(wt.tree);
    json_decref(wt.diff);
    syncd_change_free(change);
    free(canon);
    json_decref(body);
    syncd_doc_free(cur);
    return rc;
}

/* attempt()'s arguments, passed through the backend's key lock, and when
 * it ran (monotonic microseconds). */
typedef struct locked_attempt {
    syncd_store_t *s;
    syncd_change_t **out;
    const write_req_t *req;
    int64_t began, ended;
} locked_attempt_t;

static int run_locked_attempt(void *arg, syncd_error_t *err)
{
    locked_attempt_t *a = arg;
    int rc;

    a->began = clock_us(CLOCK_MONOTONIC);
    rc = attempt(a->s, a->out, a->req, err);
    a->ended = clock_us(CLOCK_MONOTONIC);
    return rc;
}

/* Runs attempt(), holding the key's write lock when the backend has one:
 * then no writer can come between the read and the compare-and-swap. The
 * lock's release waits for the commit to be durable (see rocks.c, group
 * commit), which can still fail it. A change made records how long it
 * waited for the lock and for the sync. */
static int attempt_locked(syncd_store_t *s, syncd_change_t **out,
                          const write_req_t *req, syncd_error_t *err)
{
    locked_attempt_t a = {s, out, req, 0, 0};
    const syncd_backend_ops_t *ops = s->backend->ops;
    int64_t called = clock_us(CLOCK_MONOTONIC);
    int rc;

    if (ops->locked == NULL)
        return attempt(s, out, req, err);
    rc = ops->locked(s->backend, req->coll, req->id, run_locked_attempt, &a,
                     err);
    if (rc != 0) {
        /* The commit was sequenced but its sync failed: not committed. */
        syncd_change_free(*out);
        *out = NULL;
    } else if (*out != NULL && a.began != 0) {
        (*out)->lock_wait_us = a.began - called;
        (*out)->sync_wait_us = clock_us(CLOCK_MONOTONIC) - a.ended;
    }
    return rc;
}

static int write_loop(syncd_store_t *s, syncd_change_t **out,
                      const write_req_t *req, syncd_error_t *err)
{
    int64_t deadline, delay;
    int rc;

    *out = NULL;
    rc = validate_key(req->coll, req->id, err);
    if (rc != 0)
        return rc;
    deadline = now_ms(s) + s->edit_timeout_ms;
    for (int n = 0;; n++) {
        rc = attempt_cached(s, out, req, err);
        if (rc == UNDECIDED)
            rc = attempt_locked(s, out, req, err);
        if (rc == 0) {
            (*out)->attempts = n + 1;
            if ((*out)->op != SYNCD_CHANGE_NONE)
                count(&s->edits);
            return 0;
        }
        if (rc != CAS_CONFLICT)
            return rc;
        count(&s->conflicts);
        if (req->if_match != SYNCD_ANY_VERSION)
            return syncd_error_set(
                err, SYNCD_EPRECONDITION, "%s/%s changed after version %lld",
                req->coll, req->id, (long long)req->if_match);
        if (n >= s->max_retries)
            return syncd_error_set(err, SYNCD_ECONFLICT,
                                   "%s/%s: gave up after %d conflicting "
                                   "attempts (max_retries %d)",
                                   req->coll, req->id, n + 1, s->max_retries);
        delay = syncd_backoff_ms(n, s->retry_delay_ms, s->max_retry_delay_ms,
                                 random_u64(s));
        if (now_ms(s) + delay > deadline)
            return syncd_error_set(err, SYNCD_ECONFLICT,
                                   "%s/%s: edit_timeout (%lld ms) ran out "
                                   "after %d conflicting attempts",
                                   req->coll, req->id,
                                   (long long)s->edit_timeout_ms, n + 1);
        sleep_ms(s, delay);
        count(&s->retries);
    }
}

/* ---- Steps -------------------------------------------------------------- */

static int not_found(const write_req_t *req, syncd_error_t *err)
{
    return syncd_error_set(err, SYNCD_ENOTFOUND, "%s/%s not found", req->coll,
                           req->id);
}

static int step_create(json_t **body, const write_req_t *req,
                       const syncd_doc_t *cur, syncd_error_t *err)
{
    if (is_live(cur))
        return syncd_error_set(err, SYNCD_EEXISTS, "%s/%s already exists",
                               cur->coll, cur->id);
    *body = json_incref(req->arg);
    return 0;
}

static int step_put(json_t **body, const write_req_t *req,
                    const syncd_doc_t *cur, syncd_error_t *err)
{
    (void)cur;
    (void)err;
    *body = json_incref(req->arg);
    return 0;
}

static int step_delete(json_t **body, const write_req_t *req,
                       const syncd_doc_t *cur, syncd_error_t *err)
{
    *body = NULL;
    return is_live(cur) ? STEP_DELETE : not_found(req, err);
}

typedef struct edit_arg {
    syncd_edit_fn fn;
    void *arg;
} edit_arg_t;

static int step_edit(json_t **body, const write_req_t *req,
                     const syncd_doc_t *cur, syncd_error_t *err)
{
    edit_arg_t *ea = req->arg;
    int rc;

    if (!is_live(cur))
        return not_found(req, err);
    *body = json_deep_copy(cur->body);
    if (*body == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    rc = ea->fn(*body, ea->arg, err);
    if (rc < 0) {
        json_decref(*body);
        *body = NULL;
        return rc;
    }
    return 0;
}

typedef struct patch_arg {
    const json_t *patch;
    int is_merge;
    syncd_patch_limits_t limits;
    int shared; /* the new body may share what it keeps with cur's */
} patch_arg_t;

static int step_patch(json_t **body, const write_req_t *req,
                      const syncd_doc_t *cur, syncd_error_t *err)
{
    patch_arg_t *pa = req->arg;
    syncd_patch_limits_t limits = pa->limits;

    if (!is_live(cur))
        return not_found(req, err);
    /* The size bound then need not count the whole document first. */
    limits.doc_size = cur->body_size;
    if (pa->is_merge && pa->shared)
        return syncd_merge_apply_shared(body, cur->body, pa->patch, &limits,
                                        err);
    if (pa->is_merge)
        return syncd_merge_apply_ex(body, cur->body, pa->patch, &limits, err);
    if (pa->shared)
        return syncd_patch_apply_shared(body, cur->body, pa->patch, &limits,
                                        err);
    return syncd_patch_apply_ex(body, cur->body, pa->patch, &limits, err);
}

/* Rolls back to version *(int64_t *)req->arg of cur's history. */
static int step_rollback(json_t **body, const write_req_t *req,
                         const syncd_doc_t *cur, syncd_error_t *err)
{
    int64_t to = *(const int64_t *)req->arg;
    syncd_doc_t *v = NULL;
    int rc;

    if (cur == NULL)
        return not_found(req, err);
    rc = syncd_history_version(&v, cur, to, err);
    if (rc != 0)
        return rc;
    if (v->deleted)
        rc = syncd_error_set(err, SYNCD_ENOTFOUND,
                             "version %lld of %s/%s is a deletion: there is "
                             "no body to restore",
                             (long long)to, req->coll, req->id);
    else
        *body = json_incref(v->body);
    syncd_doc_free(v);
    return rc;
}

/* ---- Public writes ------------------------------------------------------ */

void syncd_write_options_init(syncd_write_options_t *opts)
{
    opts->if_match = SYNCD_ANY_VERSION;
    opts->idempotency_key = NULL;
}

int syncd_validate_idempotency_key(const char *key, syncd_error_t *err)
{
    size_t len = key != NULL ? strlen(key) : 0;

    if (len == 0 || len > SYNCD_MAX_IDEMPOTENCY_KEY)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "idempotency key must be 1..%d bytes",
                               SYNCD_MAX_IDEMPOTENCY_KEY);
    for (size_t i = 0; i < len; i++) {
        if (key[i] < 0x21 || key[i] > 0x7e)
            return syncd_error_set(err, SYNCD_EINVAL,
                                   "idempotency key has a byte that is not "
                                   "printable ASCII at offset %zu",
                                   i);
    }
    return 0;
}

/* Fills req from coll, id, step and the write options wo (NULL: defaults),
 * checking the idempotency key. */
static int req_init(write_req_t *req, const char *coll, const char *id,
                    step_fn step, void *arg, const syncd_write_options_t *wo,
                    syncd_error_t *err)
{
    req->coll = coll;
    req->id = id;
    req->step = step;
    req->arg = arg;
    req->if_match = wo != NULL ? wo->if_match : SYNCD_ANY_VERSION;
    req->ikey = wo != NULL ? wo->idempotency_key : NULL;
    req->applied = NULL;
    return req->ikey != NULL ? syncd_validate_idempotency_key(req->ikey, err)
                             : 0;
}

/* Runs a create or put of body: of own when the caller gave its reference
 * (own == body, taken even on error), else of a private copy. */
static int write_body(syncd_store_t *store, syncd_change_t **out,
                      const char *coll, const char *id, const json_t *body,
                      json_t *own, step_fn step,
                      const syncd_write_options_t *wo, syncd_error_t *err)
{
    write_req_t req;
    int rc;

    *out = NULL;
    rc = req_init(&req, coll, id, step, NULL, wo, err);
    if (rc == 0 && !json_is_object(body))
        rc = syncd_error_set(err, SYNCD_EINVAL,
                             "document body must be a JSON object");
    if (rc == 0 && own == NULL && (own = json_deep_copy(body)) == NULL)
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    if (rc == 0) {
        req.arg = own;
        rc = write_loop(store, out, &req, err);
    }
    json_decref(own);
    return rc;
}

int syncd_store_create(syncd_store_t *store, syncd_change_t **out,
                       const char *coll, const char *id, const json_t *body,
                       syncd_error_t *err)
{
    return syncd_store_create_ex(store, out, coll, id, body, NULL, err);
}

/* Options of a create: only wo's idempotency key counts. */
static syncd_write_options_t create_options(const syncd_write_options_t *wo)
{
    syncd_write_options_t o;

    syncd_write_options_init(&o);
    o.idempotency_key = wo != NULL ? wo->idempotency_key : NULL;
    return o;
}

int syncd_store_create_ex(syncd_store_t *store, syncd_change_t **out,
                          const char *coll, const char *id, const json_t *body,
                          const syncd_write_options_t *wo, syncd_error_t *err)
{
    syncd_write_options_t o = create_options(wo);

    return write_body(store, out, coll, id, body, NULL, step_create, &o, err);
}

int syncd_store_create_new(syncd_store_t *store, syncd_change_t **out,
                           const char *coll, const char *id, json_t *body,
                           const syncd_write_options_t *wo, syncd_error_t *err)
{
    syncd_write_options_t o = create_options(wo);

    return write_body(store, out, coll, id, body, body, step_create, &o, err);
}

int syncd_store_put(syncd_store_t *store, syncd_change_t **out,
                    const char *coll, const char *id, const json_t *body,
                    int64_t if_match, syncd_error_t *err)
{
    syncd_write_options_t o;

    syncd_write_options_init(&o);
    o.if_match = if_match;
    return write_body(store, out, coll, id, body, NULL, step_put, &o, err);
}

int syncd_store_put_ex(syncd_store_t *store, syncd_change_t **out,
                       const char *coll, const char *id, const json_t *body,
                       const syncd_write_options_t *wo, syncd_error_t *err)
{
    return write_body(store, out, coll, id, body, NULL, step_put, wo, err);
}

int syncd_store_put_new(syncd_store_t *store, syncd_change_t **out,
                        const char *coll, const char *id, json_t *body,
                        const syncd_write_options_t *wo, syncd_error_t *err)
{
    return write_body(store, out, coll, id, body, body, step_put, wo, err);
}

int syncd_store_edit(syncd_store_t *store, syncd_change_t **out,
                     const char *coll, const char *id, syncd_edit_fn fn,
                     void *arg, int64_t if_match, syncd_error_t *err)
{
    edit_arg_t ea = {fn, arg};
    write_req_t req = {coll, id, step_edit, &ea, if_match, NULL, NULL};

    return write_loop(store, out, &req, err);
}

int syncd_store_patch(syncd_store_t *store, syncd_change_t **out,
                      const char *coll, const char *id, const json_t *patch,
                      int is_merge, int64_t if_match, syncd_error_t *err)
{
    syncd_write_options_t o;

    syncd_write_options_init(&o);
    o.if_match = if_match;
    return syncd_store_patch_ex(store, out, coll, id, patch, is_merge, &o, err);
}

int syncd_store_patch_ex(syncd_store_t *store, syncd_change_t **out,
                         const char *coll, const char *id, const json_t *patch,
                         int is_merge, const syncd_write_options_t *wo,
                         syncd_error_t *err)
{
    /* A version's body is immutable (store.h) to everyone but the node
     * cache, which patches the bodies it holds alone in place: without one,
     * a new version may share what it keeps of the one before. */
    patch_arg_t pa = {
        patch, is_merge, {store->max_doc_bytes, 0}, store->cache == NULL};
    write_req_t req;
    int rc;

    *out = NULL;
    rc = req_init(&req, coll, id, step_patch, &pa, wo, err);
    if (rc != 0)
        return rc;
    if (!is_merge) {
        rc = syncd_patch_validate(patch, err);
        if (rc != 0)
            return rc;
        req.applied = patch;
    } else if (patch == NULL) {
        return syncd_error_set(err, SYNCD_EPATCH, "merge patch is missing");
    }
    return write_loop(store, out, &req, err);
}

int syncd_store_delete(syncd_store_t *store, syncd_change_t **out,
                       const char *coll, const char *id, int64_t if_match,
                       syncd_error_t *err)
{
    syncd_write_options_t o;

    syncd_write_options_init(&o);
    o.if_match = if_match;
    return syncd_store_delete_ex(store, out, coll, id, &o, err);
}

int syncd_store_delete_ex(syncd_store_t *store, syncd_change_t **out,
                          const char *coll, const char *id,
                          const syncd_write_options_t *wo, syncd_error_t *err)
{
    write_req_t req;
    int rc;

    *out = NULL;
    rc = req_init(&req, coll, id, step_delete, NULL, wo, err);
    return rc != 0 ? rc : write_loop(store, out, &req, err);
}

int syncd_store_rollback(syncd_store_t *store, syncd_change_t **out,
                         const char *coll, const char *id, int64_t to,
                         const syncd_write_options_t *wo, syncd_error_t *err)
{
    write_req_t req;
    int rc;

    *out = NULL;
    rc = req_init(&req, coll, id, step_rollback, &to, wo, err);
    if (rc != 0)
        return rc;
    return write_loop(store, out, &req, err);
}

/* ---- History reads ------------------------------------------------------ */

/* Reads the record of coll/id with its history from the store of record
 * (never the cache, whose entries may lack it) into *out. */
static int read_history(syncd_store_t *s, syncd_doc_t **out, const char *coll,
                        const char *id, syncd_error_t *err)
{
    syncd_error_t local;
    int rc = validate_key(coll, id, err);

    *out = NULL;
    if (rc != 0)
        return rc;
    syncd_error_clear(&local);
    rc = s->backend->ops->get(s->backend, out, coll, id, &local);
    if (rc == SYNCD_ENOTFOUND)
        return syncd_error_set(err, SYNCD_ENOTFOUND, "%s/%s not found", coll,
                               id);
    return rc != 0 ? forward(err, &local, rc) : 0;
}

int syncd_store_history(syncd_store_t *store, json_t **out, const char *coll,
                        const char *id, syncd_error_t *err)
{
    syncd_doc_t *doc = NULL;
    int rc = read_history(store, &doc, coll, id, err);

    *out = NULL;
    if (rc == 0)
        rc = syncd_history_list(out, doc, err);
    syncd_doc_free(doc);
    return rc;
}

int syncd_store_get_version(syncd_store_t *store, syncd_doc_t **out,
                            const char *coll, const char *id, int64_t version,
                            syncd_error_t *err)
{
    syncd_doc_t *doc = NULL;
    int rc = read_history(store, &doc, coll, id, err);

    *out = NULL;
    if (rc == 0)
        rc = syncd_history_version(out, doc, version, err);
    syncd_doc_free(doc);
    return rc;
}

int syncd_store_read(syncd_store_t *store, syncd_doc_t **out, const char *coll,
                     const char *id, syncd_view_t view, syncd_error_t *err)
{
    int rc;

    if (view == SYNCD_VIEW_NODE)
        return syncd_store_get(store, out, coll, id, err);
    rc = read_history(store, out, coll, id, err);
    if (rc == 0 && (*out)->deleted) {
        syncd_doc_free(*out);
        *out = NULL;
        rc = syncd_error_set(err, SYNCD_ENOTFOUND, "%s/%s not found", coll, id);
    }
    return rc;
}

/* ---- The outbox --------------------------------------------------------- */

int syncd_store_outbox_ack(syncd_store_t *store, const char *coll,
                           const char *id, int64_t version, syncd_error_t *err)
{
    syncd_error_t local;
    int rc = validate_key(coll, id, err);

    if (rc != 0)
        return rc;
    syncd_error_clear(&local);
    rc = store->backend->ops->outbox_ack(store->backend, coll, id, version,
                                         &local);
    return rc != 0 ? forward(err, &local, rc) : 0;
}

int syncd_store_outbox_list(syncd_store_t *store, json_t **out,
                            const char *coll, const char *after_id,
                            size_t limit, syncd_error_t *err)
{
    int rc = syncd_validate_collection(coll, err);

    *out = NULL;
    if (rc != 0)
        return rc;
    if (limit == 0)
        return syncd_error_set(err, SYNCD_EINVAL, "outbox list limit is 0");
    return store->backend->ops->outbox_list(store->backend, out, coll, after_id,
                                            limit, err);
}

/* ---- Reads -------------------------------------------------------------- */

int syncd_store_get(syncd_store_t *store, syncd_doc_t **out, const char *coll,
                    const char *id, syncd_error_t *err)
{
    int cached;
    int rc;

    *out = NULL;
    rc = validate_key(coll, id, err);
    if (rc == 0)
        rc = read_record(store, out, coll, id, 1, &cached, err);
    if (rc != 0)
        return rc;
    if (!is_live(*out)) {
        syncd_doc_free(*out);
        *out = NULL;
        return syncd_error_set(err, SYNCD_ENOTFOUND, "%s/%s not found", coll,
                               id);
    }
    return 0;
}

/* Returns the in-memory tier this node serves reads from: the node
 * cache's in MongoDB mode, the backend's in embedded mode; NULL when the
 * backend has none. */
static syncd_tier_t *serving_tier(syncd_store_t *s)
{
    if (s->cache != NULL)
        return syncd_cache_tier(s->cache);
    return s->backend->ops->tier != NULL ? s->backend->ops->tier(s->backend)
                                         : NULL;
}

int syncd_store_get_text(syncd_store_t *store, char **text, size_t *len,
                         int64_t *version, const char *coll, const char *id,
                         int memory_only, syncd_error_t *err)
{
    syncd_tier_t *tier = serving_tier(store);
    syncd_doc_t *doc = NULL;
    json_t *body = NULL;
    syncd_reckey_t k;
    char *copy;
    int rc;

    *text = NULL;
    rc = validate_key(coll, id, err);
    if (rc == 0)
        rc = syncd_reckey_make(&k, coll, id, err);
    if (rc != 0)
        return rc;
    rc = tier != NULL ? syncd_tier_text(tier, &k, text, len, version,
                                        memory_only ? NULL : &body)
                      : 1;
    if (rc == 0 || body != NULL)
        syncd_tier_count(tier, SYNCD_TIER_HIT);
    if (rc == SYNCD_ENOTFOUND)
        return syncd_error_set(err, rc, "%s/%s not found", coll, id);
    if (rc != 1 || memory_only)
        return rc == SYNCD_ENOMEM ? syncd_error_set(err, rc, "out of memory")
                                  : rc;
    if (body == NULL) {
        rc = syncd_store_get(store, &doc, coll, id, err);
        if (rc != 0)
            return rc;
        body = json_incref(doc->body);
        *version = doc->version;
        syncd_doc_free(doc);
    }
    *text = syncd_json_canonical(body, len);
    if (*text == NULL) {
        json_decref(body);
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }
    copy = tier != NULL ? malloc(*len + 1) : NULL;
    if (copy != NULL) {
        memcpy(copy, *text, *len + 1);
        syncd_tier_set_text(tier, &k, body, copy, *len);
    }
    json_decref(body);
    return 0;
}

int syncd_store_list(syncd_store_t *store, json_t **out, const char *coll,
                     const char *prefix, const char *after, size_t limit,
                     syncd_error_t *err)
{
    int rc = syncd_validate_collection(coll, err);

    *out = NULL;
    if (rc != 0)
        return rc;
    return store->backend->ops->list(store->backend, out, coll, prefix, after,
                                     limit, 0, err);
}

int syncd_store_export_page(syncd_store_t *store, json_t **out,
                            const char *coll, const char *after, size_t limit,
                            syncd_error_t *err)
{
    syncd_backend_t *b = store->backend;
    int rc = syncd_validate_collection(coll, err);

    *out = NULL;
    if (rc == 0 && after != NULL)
        rc = syncd_validate_id(after, err);
    if (rc == 0 && (limit == 0 || limit > SYNCD_MAX_EXPORT_PAGE))
        rc = syncd_error_set(err, SYNCD_EINVAL,
                             "an export page holds 1..%d documents",
                             SYNCD_MAX_EXPORT_PAGE);
    if (rc != 0)
        return rc;
    return b->ops->export_page(b, out, coll, after, limit, err);
}

int syncd_store_checkpoint(syncd_store_t *store, const char *dir,
                           syncd_error_t *err)
{
    syncd_backend_t *b = store->backend;

    if (b->ops->checkpoint == NULL)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "a checkpoint is made of the embedded RocksDB "
                               "store only, not of a %s store",
                               b->ops->kind);
    return b->ops->checkpoint(b, dir, err);
}

int syncd_store_collections(syncd_store_t *store, json_t **out,
                            syncd_error_t *err)
{
    return store->backend->ops->collections(store->backend, out, err);
}

int syncd_store_digest(syncd_store_t *store, syncd_digest_t *out,
                       const char *coll, syncd_error_t *err)
{
    json_t *entries = NULL;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = syncd_store_list(store, &entries, coll, NULL, NULL, 0, err);
    if (rc == 0)
        rc = syncd_digest_entries(out, entries, err);
    json_decref(entries);
    return rc;
}

int syncd_store_versions(syncd_store_t *store, json_t **out, const char *coll,
                         const json_t *ids, syncd_error_t *err)
{
    size_t n = json_array_size(ids), i;
    json_t *id;
    int rc;

    *out = NULL;
    rc = syncd_validate_collection(coll, err);
    if (rc != 0)
        return rc;
    if (!json_is_array(ids) || n == 0 || n > SYNCD_MAX_VERSIONS_IDS)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "versions: ids must be an array of 1..%d ids",
                               SYNCD_MAX_VERSIONS_IDS);
    json_array_foreach (ids, i, id) {
        if (!json_is_string(id))
            return syncd_error_set(err, SYNCD_EINVAL,
                                   "versions: id %zu is not a string", i);
        rc = syncd_validate_id(json_string_value(id), err);
        if (rc != 0)
            return rc;
    }
    return store->backend->ops->versions(store->backend, out, coll, ids, err);
}

int syncd_store_purge(syncd_store_t *store, const char *coll, size_t limit,
                      size_t *purged, json_t **gone, syncd_error_t *err)
{
    json_t *ids = gone != NULL ? json_object() : NULL;
    size_t n = 0;
    int rc = syncd_validate_collection(coll, err);

    if (rc == 0 && gone != NULL && ids == NULL)
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    if (rc == 0)
        rc = store->backend->ops->purge(
            store->backend, coll, wall_ms(store) - store->tombstone_ttl_ms,
            limit, &n, ids, err);
    if (gone != NULL)
        *gone = ids;
    if (n > 0 && store->cache != NULL)
        syncd_cache_invalidate(store->cache, coll, NULL, NULL);
    if (purged != NULL)
        *purged = n;
    return rc;
}

/* ---- Cache access ------------------------------------------------------- */

int syncd_store_cached(syncd_store_t *store, syncd_doc_t **out,
                       const char *coll, const char *id, syncd_error_t *err)
{
    int rc = validate_key(coll, id, err);

    *out = NULL;
    if (rc != 0)
        return rc;
    if (store->cache == NULL)
        return syncd_error_set(err, SYNCD_ENOTFOUND,
                               "the embedded store has no cache");
    return syncd_cache_get(store->cache, out, coll, id, err);
}

int syncd_store_cache_put(syncd_store_t *store, const syncd_doc_t *doc,
                          syncd_error_t *err)
{
    int rc = validate_key(doc->coll, doc->id, err);

    if (rc != 0 || store->cache == NULL)
        return rc;
    /* A doc from an event: its entry's history is unknown, so the next
     * write of it reads the record (attempt_cached()). */
    return syncd_cache_put(store->cache, doc, NULL, 0, err);
}

int syncd_store_cache_patch(syncd_store_t *store, const syncd_doc_t *doc,
                            int64_t base, const json_t *patch, int nonblocking,
                            int64_t *cached, syncd_error_t *err)
{
    int rc = validate_key(doc->coll, doc->id, err);

    *cached = -1;
    if (rc != 0 || store->cache == NULL)
        return rc;
    return syncd_cache_patch(store->cache, doc, base, patch,
                             store->max_doc_bytes, nonblocking, cached, err);
}

int syncd_store_cache_list_hashes(syncd_store_t *store, const syncd_doc_t *doc,
                                  const char *path, size_t level, size_t from,
                                  size_t count, json_t **out,
                                  syncd_error_t *err)
{
    *out = NULL;
    if (store->cache == NULL)
        return 1;
    return syncd_cache_list_hashes(store->cache, doc, path, level, from, count,
                                   out, err);
}

void syncd_store_cache_flush(syncd_store_t *store)
{
    if (store->cache != NULL)
        syncd_cache_flush_due(store->cache);
}

int syncd_store_cache_invalidate(syncd_store_t *store, const char *coll,
                                 const char *id, syncd_error_t *err)
{
    int rc = syncd_validate_collection(coll, err);

    if (rc != 0 || store->cache == NULL)
        return rc;
    return syncd_cache_invalidate(store->cache, coll, id, err);
}

int syncd_store_cache_list(syncd_store_t *store, json_t **out, const char *coll,
                           syncd_error_t *err)
{
    int rc = syncd_validate_collection(coll, err);

    *out = NULL;
    if (rc != 0)
        return rc;
    if (store->cache == NULL) {
        *out = json_array();
        return *out != NULL
                   ? 0
                   : syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }
    return syncd_cache_list(store->cache, out, coll, err);
}

int syncd_store_cache_page(syncd_store_t *store, json_t **out, const char *coll,
                           const char *after, size_t limit, syncd_error_t *err)
{
    int rc = syncd_validate_collection(coll, err);

    *out = NULL;
    if (rc != 0)
        return rc;
    if (limit == 0)
        return syncd_error_set(err, SYNCD_EINVAL, "cache page: limit is 0");
    if (store->cache == NULL) {
        *out = json_array();
        return *out != NULL
                   ? 0
                   : syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }
    return syncd_cache_page(store->cache, out, coll, after, limit, err);
}

int syncd_store_refetch(syncd_store_t *store, syncd_doc_t **out,
                        const char *coll, const char *id, syncd_error_t *err)
{
    int cached;
    int rc;

    *out = NULL;
    rc = validate_key(coll, id, err);
    if (rc == 0)
        rc = read_record(store, out, coll, id, 0, &cached, err);
    if (rc == 0 && *out == NULL)
        rc = syncd_error_set(err, SYNCD_ENOTFOUND, "%s/%s not found", coll, id);
    return rc;
}

void syncd_store_stats(syncd_store_t *store, syncd_store_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (store->cache != NULL)
        syncd_cache_stats(store->cache, out);
    if (store->backend->ops->tier_stats != NULL)
        store->backend->ops->tier_stats(store->backend, out);
    out->edits = __atomic_load_n(&store->edits, __ATOMIC_RELAXED);
    out->conflicts = __atomic_load_n(&store->conflicts, __ATOMIC_RELAXED);
    out->retries = __atomic_load_n(&store->retries, __ATOMIC_RELAXED);
    out->cas_fast = __atomic_load_n(&store->cas_fast, __ATOMIC_RELAXED);
}

/* ---- Open and close ----------------------------------------------------- */

void syncd_store_options_init(syncd_store_options_t *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->database = "syncd";
    opts->data_dir = "data";
    opts->node_id = "local";
    opts->sync_writes = 1;
    opts->cache_ttl_ms = 10 * 60 * 1000;
    opts->cache_max_bytes = (uint64_t)256 << 20;
    opts->block_cache_bytes = SYNCD_BLOCK_CACHE_BYTES;
    opts->max_retries = 10;
    opts->retry_delay_ms = 5;
    opts->max_retry_delay_ms = 1000;
    opts->edit_timeout_ms = 10 * 1000;
    opts->max_doc_bytes = (size_t)8 << 20;
    opts->tombstone_ttl_ms = (int64_t)24 * 3600 * 1000;
    opts->backend_timeout_ms = 5000;
    opts->idempotency_ttl_ms = 10 * 60 * 1000;
    opts->history_len = 20;
    opts->history_max_bytes = (uint64_t)1 << 20;
}

static int check_options(const syncd_store_options_t *o, syncd_error_t *err)
{
    if (o->data_dir == NULL || o->data_dir[0] == '\0')
        return syncd_error_set(err, SYNCD_EINVAL, "data_dir is not set");
    if (o->node_id == NULL || o->node_id[0] == '\0' ||
        strlen(o->node_id) > SYNCD_MAX_NODE_ID)
        return syncd_error_set(err, SYNCD_EINVAL, "node_id must be 1..%d bytes",
                               SYNCD_MAX_NODE_ID);
    if (o->mongo_uri != NULL && (o->database == NULL || !o->database[0]))
        return syncd_error_set(err, SYNCD_EINVAL, "database is not set");
    if (o->max_retries < 0 || o->retry_delay_ms < 0 ||
        o->max_retry_delay_ms < 0 || o->edit_timeout_ms < 0 ||
        o->tombstone_ttl_ms < 0 || o->cache_ttl_ms < 0 ||
        o->idempotency_ttl_ms < 0 || o->backend_timeout_ms <= 0 ||
        o->history_len < 0)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "retry, timeout, TTL and history options must "
                               "not be negative");
    if (o->history_len > SYNCD_MAX_HISTORY_LEN)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "history_len (--history-len) is over %d",
                               SYNCD_MAX_HISTORY_LEN);
    if (o->max_doc_bytes == 0)
        return syncd_error_set(err, SYNCD_EINVAL, "max_doc_bytes is 0");
    return 0;
}

/* Opens the backend (and, in MongoDB mode, the cache in data_dir/cache). */
static int open_backends(syncd_store_t *s, const syncd_store_options_t *o,
                         syncd_error_t *err)
{
    char dir[4096];
    int rc;

    if (mkdir(o->data_dir, 0755) != 0 && errno != EEXIST)
        return syncd_error_set(err, SYNCD_EBACKEND,
                               "cannot create data_dir %s: %s", o->data_dir,
                               strerror(errno));
    if (o->mongo_uri == NULL)
        return syncd_backend_rocks_open(
            &s->backend, o->data_dir, o->sync_writes, o->cache_ttl_ms,
            o->cache_max_bytes, o->block_cache_bytes, o->hooks, err);
    if ((size_t)snprintf(dir, sizeof(dir), "%s/cache", o->data_dir) >=
        sizeof(dir))
        return syncd_error_set(err, SYNCD_EINVAL, "data_dir is too long");
    rc = syncd_backend_mongo_open(&s->backend, o->mongo_uri, o->database,
                                  o->backend_timeout_ms, err);
    if (rc == 0)
        rc = syncd_cache_open(&s->cache, dir, o->cache_ttl_ms,
                              o->cache_max_bytes, o->block_cache_bytes,
                              o->keep_cache, o->hooks, err);
    return rc;
}

int syncd_store_open(syncd_store_t **out, const syncd_store_options_t *opts,
                     syncd_error_t *err)
{
    syncd_store_t *s;
    int rc;

    *out = NULL;
    rc = check_options(opts, err);
    if (rc != 0)
        return rc;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    snprintf(s->node_id, sizeof(s->node_id), "%s", opts->node_id);
    s->max_retries = opts->max_retries;
    s->retry_delay_ms = opts->retry_delay_ms;
    s->max_retry_delay_ms = opts->max_retry_delay_ms;
    s->edit_timeout_ms = opts->edit_timeout_ms;
    s->tombstone_ttl_ms = opts->tombstone_ttl_ms;
    s->idempotency_ttl_ms = opts->idempotency_ttl_ms;
    s->outbox = opts->outbox;
    s->history_len = opts->history_len;
    s->history_max_bytes = opts->history_max_bytes;
    s->max_doc_bytes = opts->max_doc_bytes;
    if (opts->hooks != NULL)
        s->hooks = *opts->hooks;
    s->rng_state = (uint64_t)clock_ms(CLOCK_REALTIME) * 1000003u ^
                   (uint64_t)getpid() ^ (uint64_t)(uintptr_t)s;
    s->data_dir = strdup(opts->data_dir);
    rc = s->data_dir != NULL
             ? open_backends(s, opts, err)
             : syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    if (rc != 0) {
        syncd_store_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void syncd_store_close(syncd_store_t *store)
{
    if (store == NULL)
        return;
    syncd_cache_close(store->cache);
    if (store->backend != NULL)
        store->backend->ops->close(store->backend);
    free(store->data_dir);
    free(store);
}

syncd_cache_t *syncd_store_cache_of(const syncd_store_t *store)
{
    return store->cache;
}

const char *syncd_store_data_dir(const syncd_store_t *store)
{
    return store->data_dir;
}

const char *syncd_store_kind(const syncd_store_t *store)
{
    return store->backend->ops->kind;
}
