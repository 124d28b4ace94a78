/* api.c - the HTTP API of DESIGN.md section 5: routes, validation, store
 * calls on the thread pool, publishing, and watch streams.
 *
 * A document request becomes one job: the loop validates the route, the
 * collection, the id and the headers; the thread pool parses the body,
 * runs the store call and serializes the answer; back on the loop a
 * committed change is published through the node. The write is answered
 * at once, its publish completing behind it, since it is durable with its
 * outbox marker and the node's republisher completes a publish that fails
 * or times out (logged). Only when PUBLISH_AHEAD_MAX earlier versions of
 * the document are still unpublished does the answer wait for the publish,
 * so that a bus slower than the writes slows them instead of filling the
 * record's outbox. A write to a record without an outbox (a store opened
 * without it) always waits.
 *
 * Writes take an Idempotency-Key header (1..128 printable ASCII bytes):
 * the store keeps it with the document, and a retry that finds it answers
 * the first outcome (status, ETag; the body when the document is still at
 * that version) and writes nothing.
 *
 * History (DESIGN.md section 2): GET .../docs/{id}?version=N reads a kept
 * version, GET .../docs/{id}/history lists the kept versions, and POST
 * .../docs/{id}/rollback?to=N writes version N's body as a new version
 * (a write like the others: If-Match, Idempotency-Key, published). All
 * three read the store of record, which keeps the history with the
 * record. An id whose last segment is "history", "rollback" or "hashes"
 * must percent-encode its '/' to be read as a document.
 *
 * Digests and verification (GET .../digest with an optional id range and
 * source, POST .../verify) are store jobs like the others: the thread pool
 * pages through the node's view and the store (storage/view.c), so the
 * loop never waits and memory does not grow with the collection. GET
 * .../docs/{id}/hashes lists the hashes under one value of a document
 * (doc/HASH.md "Narrowing"), from the node's copy or the store's, so that
 * syncctl verify finds where inside a document two copies differ.
 *
 * An export (GET .../export) streams JSON Lines of the store of record's
 * live documents: the thread pool reads and serializes a page, the loop
 * writes it, and the next page is read only once the connection's output
 * drained (syncd_http_on_drained), so a slow client holds one page; a
 * trailer line with the count, digest and starting seq ends it. GET
 * /v1/collections lists the collections and POST /v1/admin/checkpoint
 * writes a RocksDB checkpoint of the embedded store, both as store jobs.
 *
 * GET /ui and the files under /ui/ are the operator's console (ui.c). A
 * browser page whose origin is the advertised URL of a live node may read
 * this API (CORS: syncd_api_cors() for every response, and the preflight
 * answered here), so that a node's console can reach the other nodes.
 *
 * A watch checks where its stream can start (the collection's current seq
 * and, for a past `since`, that the replay log still holds since+1; else
 * 410), then streams the node's events as server-sent events. A watcher
 * whose unsent output passes watch_buffer_bytes, or that the node tells to
 * resync, gets `event: resync` and is closed; at shutdown every watcher
 * gets `event: shutdown` with the seq to resume from. A watch takes a slot
 * from its request until its stream ends: at most max_watchers on the node
 * and max_watchers_per_collection per collection; past either a new watch
 * is answered 503 too_many_watchers with a Retry-After, and the watchers
 * already streaming are not touched.
 */
#define _GNU_SOURCE
#include "api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "atstart.h"
#include "base/buf.h"
#include "base/pct.h"
#include "log.h"
#include "ui.h"

#define LIST_DEFAULT_LIMIT 1000
#define LIST_MAX_LIMIT 10000
/* Seconds a watch refused for too many watchers is told to wait. */
#define WATCH_RETRY_AFTER_S 5
/* Versions of one document committed and not yet published past which a
 * write is answered only once its own publish completed, so that the bus
 * sets the pace of the writes to a document and its record's outbox stays
 * well below SYNCD_MAX_OUTBOX_MARKERS. */
#define PUBLISH_AHEAD_MAX 16

/* The hash tree last built for a hashes request of one source, so that
 * the listings of one narrowing walk hash the document once. A copy is
 * known by its version and content hash, which name its value; the body
 * itself is not held, since a held body is one the node cache cannot
 * patch in place. */
typedef struct tree_slot {
    char *coll, *id;
    int64_t version;
    char hash[SYNCD_HASH_HEX_LEN + 1];
    syncd_htree_t *tree;
} tree_slot_t;

struct syncd_api {
    syncd_api_options_t opts;
    uv_mutex_t trees_lock;
    tree_slot_t trees[2]; /* by syncd_view_t */
    syncd_http_server_t *server;
    int inflight; /* jobs, publishes and watch set-ups under way */
    int quiescing;
    void (*quiesce_cb)(void *payload);
    void *quiesce_payload;
    int64_t watchers;      /* watch slots taken: set-ups and streams */
    json_t *coll_watchers; /* collection -> its watch slots taken */
    uint64_t slow_logged;  /* uv_hrtime() of the last slow request logged */
    int64_t slow_unlogged; /* slow requests not logged since (rate limit) */
};

typedef enum {
    JOB_GET,
    JOB_CREATE,
    JOB_PUT,
    JOB_PATCH,
    JOB_DELETE,
    JOB_LIST,
    JOB_DIGEST,
    JOB_VERIFY,
    JOB_COLLECTIONS,
    JOB_CHECKPOINT,
    JOB_GET_VERSION,
    JOB_HISTORY,
    JOB_ROLLBACK,
    JOB_HASHES,
} job_kind_t;

/* What each job kind does, for the log. */
static const char *const job_names[] = {
    "read",       "create",         "put",
    "patch",      "delete",         "list",
    "digest",     "verify",         "listing of collections",
    "checkpoint", "versioned read", "history",
    "rollback",   "hash listing",
};
_Static_assert(sizeof(job_names) / sizeof(job_names[0]) == JOB_HASHES + 1,
               "a name for each job kind");

typedef struct job {
    uv_work_t work;
    uv_timer_t deadline; /* --request-timeout, from job_queue() on */
    int deadline_on;     /* deadline initialized: freed in its close cb */
    syncd_api_t *api;
    syncd_http_req_t *req; /* NULL once answered at the deadline */
    char *body;            /* the worker's copy of the request body */
    char *ikey_copy;       /* the worker's copy of the Idempotency-Key */
    job_kind_t kind;
    char *coll, *id;
    const char *raw; /* the request body, borrowed from req */
    size_t raw_len;
    int is_merge;
    int64_t if_match;
    const char *ikey; /* Idempotency-Key, borrowed from req; NULL: none */
    char *prefix, *after, *until;
    size_t limit;
    syncd_view_t view; /* digest: whose entries */
    int64_t seq;       /* list: the collection's seq read before listing */
    int64_t at;        /* ?version=N: N; rollback: the version restored */
    char *ptr;         /* hashes: the JSON Pointer listed */
    size_t level;      /* hashes: the chunk level listed */
    size_t from;       /* hashes: its first item listed */
    int held;          /* a write holding its collection on the node */
    /* results */
    int rc;
    int bad_json; /* rc comes from parsing the body */
    syncd_error_t err;
    syncd_change_t *change; /* freed by the worker once prepared */
    syncd_node_pub_t *pub;  /* change's publish, prepared by the worker */
    int changed;            /* a change was committed (op not NONE) */
    int created;            /* the write (or the one it replayed) created */
    int behind;             /* may be answered before its publish */
    int64_t version;
    char *text; /* the response body */
    /* uv_hrtime() when the job was made, its work began and ended (on the
     * thread pool), and it was back on the loop; 0: not reached */
    uint64_t started, began, ended, back;
    int64_t lock_wait_us, sync_wait_us; /* the change's, see store.h */
} job_t;

typedef struct watcher {
    syncd_api_t *api;
    syncd_http_req_t *req;
    syncd_node_watch_t *watch; /* NULL once the node ended it */
    uv_timer_t bookmark;
    char *coll, *prefix;
    int64_t since; /* -1: from now on */
    int64_t last;  /* seq of the last event sent */
    int held;      /* holding its collection on the node until it watches */
    int slot;      /* holding a watch slot */
    int streaming;
    int ended;
} watcher_t;

int syncd_api_new(syncd_api_t **out, const syncd_api_options_t *opts)
{
    syncd_api_t *api = calloc(1, sizeof(*api));

    *out = NULL;
    if (api == NULL)
        return SYNCD_ENOMEM;
    api->opts = *opts;
    api->coll_watchers = json_object();
    if (api->coll_watchers == NULL) {
        free(api);
        return SYNCD_ENOMEM;
    }
    if (uv_mutex_init(&api->trees_lock) != 0) {
        json_decref(api->coll_watchers);
        free(api);
        return SYNCD_ENOMEM;
    }
    *out = api;
    return 0;
}

void syncd_api_set_server(syncd_api_t *api, syncd_http_server_t *srv)
{
    api->server = srv;
}

void syncd_api_free(syncd_api_t *api)
{
    if (api == NULL)
        return;
    json_decref(api->coll_watchers);
    for (int v = 0; v < 2; v++) {
        free(api->trees[v].coll);
        free(api->trees[v].id);
        syncd_htree_free(api->trees[v].tree);
    }
    uv_mutex_destroy(&api->trees_lock);
    free(api);
}

void syncd_api_observe(const char *route, int status, void *data)
{
    syncd_api_t *api = data;

    syncd_metrics_request(api->opts.metrics, route, status);
}

static void inflight_begin(syncd_api_t *api)
{
    api->inflight++;
}

static void inflight_end(syncd_api_t *api)
{
    if (--api->inflight == 0 && api->quiescing && api->quiesce_cb != NULL) {
        void (*cb)(void *) = api->quiesce_cb;

        api->quiesce_cb = NULL;
        cb(api->quiesce_payload);
    }
}

void syncd_api_quiesce(syncd_api_t *api, void (*cb)(void *payload),
                       void *payload)
{
    api->quiescing = 1;
    api->quiesce_cb = cb;
    api->quiesce_payload = payload;
    if (api->inflight == 0) {
        api->quiesce_cb = NULL;
        cb(payload);
    }
}

/* ---- Input helpers --------------------------------------------------- */

/* Percent-decodes n bytes of a URL part at s into *out (malloc'd). Returns 0,
 * SYNCD_EINVAL for a bad escape or an encoded NUL byte, SYNCD_ENOMEM. */
static int url_decode(char **out, const char *s, size_t n)
{
    size_t len;
    int rc = syncd_pct_decode(out, &len, s, n, NULL);

    if (rc == 0 && memchr(*out, '\0', len) != NULL) {
        free(*out);
        *out = NULL;
        rc = SYNCD_EINVAL;
    }
    return rc;
}

/* Finds query parameter name in req's query and percent-decodes its value
 * into *out (malloc'd). Returns 1 when found, 0 when absent, SYNCD_EINVAL
 * for bad percent-encoding, SYNCD_ENOMEM. */
static int query_param(char **out, const syncd_http_req_t *req,
                       const char *name)
{
    const char *q = syncd_http_query(req);
    size_t nlen = strlen(name);

    *out = NULL;
    while (*q != '\0') {
        const char *end = strchr(q, '&');
        size_t len = end ? (size_t)(end - q) : strlen(q);

        if (len >= nlen && strncmp(q, name, nlen) == 0 &&
            (len == nlen || q[nlen] == '=')) {
            const char *v = len == nlen ? q + len : q + nlen + 1;
            int rc = url_decode(out, v, (size_t)(q + len - v));

            return rc == 0 ? 1 : rc;
        }
        q += len;
        if (*q == '&')
            q++;
    }
    return 0;
}

/* Parses a non-negative decimal integer; -1 when text is not one. */
static int parse_count(int64_t *out, const char *text)
{
    char *end;
    long long v;

    if (*text < '0' || *text > '9')
        return -1;
    errno = 0;
    v = strtoll(text, &end, 10);
    if (*end != '\0' || errno != 0 || v < 0)
        return -1;
    *out = v;
    return 0;
}

/* Parses an If-Match value ("*", "\"7\"", W/"7" or 7) into *out; -1 when
 * it is none of those. */
static int parse_etag(int64_t *out, const char *text)
{
    char buf[32];
    size_t n;

    while (*text == ' ')
        text++;
    if (strcmp(text, "*") == 0) {
        *out = SYNCD_ANY_VERSION;
        return 0;
    }
    if (strncmp(text, "W/", 2) == 0)
        text += 2;
    n = strlen(text);
    while (n > 0 && text[n - 1] == ' ')
        n--;
    if (n >= 2 && text[0] == '"' && text[n - 1] == '"') {
        text++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, text, n);
    buf[n] = '\0';
    return parse_count(out, buf) < 0 || *out < 1 ? -1 : 0;
}

/* ---- Responses ------------------------------------------------------- */

static void respond_json(syncd_http_req_t *req, int status, int64_t version,
                         const char *text)
{
    char etag[48] = "";

    if (version > 0)
        snprintf(etag, sizeof(etag), "ETag: \"%lld\"\r\n", (long long)version);
    syncd_http_respond(req, status, "application/json", etag, text,
                       strlen(text));
}

/* Answers req with the HTTP status and error code of rc for a request of
 * kind; the message comes from err when it holds one. */
static void respond_rc(syncd_http_req_t *req, job_kind_t kind, int rc,
                       const syncd_error_t *err)
{
    const char *msg =
        err != NULL && err->code != 0 ? err->message : syncd_strerror(rc);
    int status;
    const char *code = syncd_strerror(rc);

    switch (rc) {
    case SYNCD_ENOTFOUND:
        status = kind == JOB_PUT ? 412 : 404;
        if (kind == JOB_PUT)
            code = "precondition_failed";
        break;
    case SYNCD_EEXISTS:
    case SYNCD_ECONFLICT:
        status = 409;
        break;
    case SYNCD_EPRECONDITION:
        status = 412;
        break;
    case SYNCD_EPATCH:
        status = 422;
        break;
    case SYNCD_EINVAL:
        status = kind == JOB_PATCH ? 422 : 400;
        if (kind == JOB_PATCH)
            code = "invalid_patch";
        break;
    case SYNCD_ETOOBIG:
        status = 413;
        break;
    case SYNCD_ENOMEM:
        status = 500;
        break;
    default:
        status = 503;
        syncd_log(SYNCD_LOG_WARN, "api: %s %s: %s", syncd_http_method(req),
                  syncd_http_path(req), msg);
        break;
    }
    syncd_http_respond_error(req, status, code, msg);
}

/* Holds coll on the node for a write or a watch; answers 503 naming the
 * limit when the node holds --max-collections others (or the hold fails
 * otherwise) and returns -1. */
static int hold_collection(syncd_api_t *api, syncd_http_req_t *req,
                           const char *coll)
{
    syncd_error_t err;
    char msg[160];
    int rc;

    syncd_error_clear(&err);
    rc = syncd_node_hold(api->opts.node, coll, &err);
    if (rc == 0)
        return 0;
    if (rc == SYNCD_ETOOBIG) {
        snprintf(msg, sizeof(msg),
                 "this node works on its limit of %lld collections "
                 "(--max-collections); retry later",
                 (long long)api->opts.cfg->max_collections);
        syncd_http_respond_error(req, 503, "too_many_collections", msg);
    } else {
        respond_rc(req, JOB_GET, rc, &err);
    }
    return -1;
}

/* ---- Store jobs ------------------------------------------------------ */

static void job_free(job_t *j)
{
    syncd_node_pub_free(j->pub);
    syncd_change_free(j->change);
    free(j->coll);
    free(j->id);
    free(j->prefix);
    free(j->after);
    free(j->until);
    free(j->ptr);
    free(j->text);
    free(j->body);
    free(j->ikey_copy);
    free(j);
}

/* Parses the request body (thread pool): a JSON object, or for a merge
 * patch any JSON value. syncd_json_loadb_nonul() parses it (the same
 * values and errors as jansson, faster). */
static json_t *parse_body(job_t *j)
{
    const char *raw = j->raw != NULL ? j->raw : "";
    json_error_t jerr;
    json_t *v = NULL;

    syncd_json_loadb_nonul(&v, raw, j->raw_len, &jerr);
    if (v == NULL) {
        j->bad_json = 1;
        j->rc = syncd_error_set(&j->err, SYNCD_EINVAL,
                                "malformed JSON at line %d column %d: %s",
                                jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    if (j->kind == JOB_PATCH && !j->is_merge && !json_is_array(v)) {
        j->rc = syncd_error_set(&j->err, SYNCD_EPATCH,
                                "a JSON Patch must be an array of operations");
    } else if (j->kind != JOB_PATCH && !json_is_object(v)) {
        j->bad_json = 1;
        j->rc = syncd_error_set(&j->err, SYNCD_EINVAL,
                                "the document body must be a JSON object");
    } else {
        return v;
    }
    json_decref(v);
    return NULL;
}

/* Serializes a result (thread pool) into j->text. */
static void set_text(job_t *j, const json_t *v)
{
    j->text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (j->text == NULL)
        j->rc = syncd_error_set(&j->err, SYNCD_ENOMEM, "out of memory");
}

/* Serializes a document body (thread pool) into j->text: its canonical
 * JSON, the bytes a GET of it serves. */
static void set_body_text(job_t *j, const json_t *body)
{
    j->text = syncd_json_canonical(body, NULL);
    if (j->text == NULL)
        j->rc = syncd_error_set(&j->err, SYNCD_ENOMEM, "out of memory");
}

/* Answers a committed write with the new body: the canonical text the
 * store kept (taken from the change), else made here. */
static void set_written_text(job_t *j)
{
    syncd_change_t *c = j->change;

    j->version = c->doc->version;
    if (c->text == NULL) {
        set_body_text(j, c->doc->body);
        return;
    }
    j->text = c->text;
    c->text = NULL;
}

/* Refuses a JSON Patch of more operations than --max-patch-ops before
 * anything is read or applied (0: no bound). */
static int check_patch_ops(job_t *j, const json_t *patch)
{
    size_t max = (size_t)j->api->opts.cfg->max_patch_ops;

    if (j->is_merge || max == 0 || json_array_size(patch) <= max)
        return 0;
    return syncd_error_set(&j->err, SYNCD_ETOOBIG,
                           "the patch has %zu operations, over "
                           "--max-patch-ops (%zu)",
                           json_array_size(patch), max);
}

/* Sets the answer of a write the store replayed by its idempotency key:
 * the first write's version, and its body when the document is still at
 * that version (else, or for a delete, a summary of it). */
static void set_replay_text(job_t *j)
{
    const syncd_change_t *c = j->change;
    json_t *out;

    j->version = c->replayed_version;
    if (c->replayed_op != SYNCD_CHANGE_DELETE && !c->doc->deleted &&
        c->doc->version == c->replayed_version) {
        set_body_text(j, c->doc->body);
        return;
    }
    out = c->replayed_op == SYNCD_CHANGE_DELETE
              ? json_pack("{s:s, s:I, s:b}", "id", j->id, "v",
                          (json_int_t)j->version, "deleted", 1)
              : json_pack("{s:s, s:I, s:b}", "id", j->id, "v",
                          (json_int_t)j->version, "replayed", 1);
    if (out == NULL)
        j->rc = syncd_error_set(&j->err, SYNCD_ENOMEM, "out of memory");
    else
        set_text(j, out);
    json_decref(out);
}

/* Whether change may be answered before its publish completes: its
 * record's outbox marker lets the republisher complete the publish should
 * it fail, and fewer than PUBLISH_AHEAD_MAX earlier versions of the
 * document still await theirs. */
static int may_publish_behind(const syncd_change_t *change)
{
    return json_array_size(change->doc->outbox) > 0 &&
           json_array_size(change->pending) < PUBLISH_AHEAD_MAX;
}

/* What the loop needs of j's committed change, taken on the worker: the
 * answer's flags, and the publish of a committed write prepared (event
 * built and encoded, off the loop), after which the change is freed here.
 * Should the prepare fail, the change is kept: the loop's publish
 * prepares it again and reports. */
static void prepare_publish(job_t *j)
{
    syncd_change_t *c = j->change;

    j->changed = c->op != SYNCD_CHANGE_NONE;
    j->created = j->kind != JOB_ROLLBACK &&
                 (c->replayed ? c->replayed_op : c->op) == SYNCD_CHANGE_CREATE;
    j->behind = j->changed && may_publish_behind(c);
    if (j->rc == 0 && j->changed &&
        (j->api->opts.node == NULL ||
         syncd_node_prepare(j->api->opts.node, c, &j->pub) != 0))
        return;
    syncd_change_free(c);
    j->change = NULL;
}

static void run_write(job_t *j)
{
    json_t *body = parse_body(j);
    syncd_write_options_t wo;

    if (body == NULL)
        return;
    syncd_write_options_init(&wo);
    wo.if_match = j->if_match;
    wo.idempotency_key = j->ikey;
    switch (j->kind) {
    case JOB_CREATE:
        j->rc = syncd_store_create_new(j->api->opts.store, &j->change, j->coll,
                                       j->id, body, &wo, &j->err);
        break;
    case JOB_PUT:
        j->rc = syncd_store_put_new(j->api->opts.store, &j->change, j->coll,
                                    j->id, body, &wo, &j->err);
        break;
    default:
        j->rc = check_patch_ops(j, body);
        if (j->rc == 0)
            j->rc =
                syncd_store_patch_ex(j->api->opts.store, &j->change, j->coll,
                                     j->id, body, j->is_merge, &wo, &j->err);
        json_decref(body);
        break;
    }
    if (j->rc == 0 && j->change->replayed) {
        set_replay_text(j);
    } else if (j->rc == 0) {
        set_written_text(j);
    }
}

static void run_delete(job_t *j)
{
    syncd_write_options_t wo;
    json_t *out;

    syncd_write_options_init(&wo);
    wo.if_match = j->if_match;
    wo.idempotency_key = j->ikey;
    j->rc = syncd_store_delete_ex(j->api->opts.store, &j->change, j->coll,
                                  j->id, &wo, &j->err);
    if (j->rc != 0)
        return;
    if (j->change->replayed) {
        set_replay_text(j);
        return;
    }
    j->version = j->change->doc->version;
    out = json_pack("{s:s, s:I, s:b}", "id", j->id, "v", (json_int_t)j->version,
                    "deleted", 1);
    if (out == NULL)
        j->rc = syncd_error_set(&j->err, SYNCD_ENOMEM, "no memory");
    else
        set_text(j, out);
    json_decref(out);
}

/* Reads version j->at of j's document: its body with ETag N, or 404 for
 * a version not kept or a deletion. */
static void run_get_version(job_t *j)
{
    syncd_doc_t *doc = NULL;

    j->rc = syncd_store_get_version(j->api->opts.store, &doc, j->coll, j->id,
                                    j->at, &j->err);
    if (j->rc == 0 && doc->deleted)
        j->rc = syncd_error_set(&j->err, SYNCD_ENOTFOUND,
                                "version %lld of %s/%s is a deletion",
                                (long long)j->at, j->coll, j->id);
    if (j->rc == 0) {
        j->version = doc->version;
        set_body_text(j, doc->body);
    }
    syncd_doc_free(doc);
}

static void run_history(job_t *j)
{
    json_t *out = NULL;

    j->rc =
        syncd_store_history(j->api->opts.store, &out, j->coll, j->id, &j->err);
    if (j->rc == 0) {
        j->version = json_integer_value(json_object_get(out, "v"));
        set_text(j, out);
    }
    json_decref(out);
}

static void run_rollback(job_t *j)
{
    syncd_write_options_t wo;

    syncd_write_options_init(&wo);
    wo.if_match = j->if_match;
    wo.idempotency_key = j->ikey;
    j->rc = syncd_store_rollback(j->api->opts.store, &j->change, j->coll, j->id,
                                 j->at, &wo, &j->err);
    if (j->rc == 0 && j->change->replayed) {
        set_replay_text(j);
    } else if (j->rc == 0) {
        set_written_text(j);
    }
}

static void run_list(job_t *j)
{
    json_t *docs = NULL, *out = NULL;
    const char *next = NULL;

    j->rc = syncd_store_list(j->api->opts.store, &docs, j->coll, j->prefix,
                             j->after, j->limit + 1, &j->err);
    if (j->rc != 0)
        return;
    if (json_array_size(docs) > j->limit) {
        json_array_remove(docs, j->limit);
        next = json_string_value(
            json_object_get(json_array_get(docs, j->limit - 1), "id"));
    }
    out = json_pack("{s:I, s:O, s:o}", "seq", (json_int_t)j->seq, "docs", docs,
                    "next", next ? json_string(next) : json_null());
    if (out == NULL)
        j->rc = syncd_error_set(&j->err, SYNCD_ENOMEM, "out of memory");
    else
        set_text(j, out);
    json_decref(out);
    json_decref(docs);
}

/* Answers a digest request: the digest of the view's entries in the
 * requested range, its split id, and with ?entries=N its first N entries
 * (j->limit; 0: none). */
static void run_digest(job_t *j)
{
    syncd_range_digest_t rd;
    json_t *out;

    j->rc = syncd_store_digest_range(j->api->opts.store, &rd, j->coll, j->view,
                                     j->after, j->until, j->limit, &j->err);
    if (j->rc != 0)
        return;
    out = json_pack("{s:I, s:s, s:s, s:s?}", "count",
                    (json_int_t)rd.digest.count, "digest", rd.digest.hex,
                    "source", j->view == SYNCD_VIEW_STORE ? "store" : "node",
                    "split", rd.split);
    if (out != NULL && rd.entries != NULL &&
        (json_object_set(out, "entries", rd.entries) != 0 ||
         json_object_set_new(out, "truncated", json_boolean(rd.truncated)) !=
             0)) {
        json_decref(out);
        out = NULL;
    }
    if (out == NULL)
        j->rc = syncd_error_set(&j->err, SYNCD_ENOMEM, "out of memory");
    else
        set_text(j, out);
    json_decref(out);
    syncd_range_digest_clear(&rd);
}

/* Most differences one verify answer lists. */
#define VERIFY_MAX_DIFFERS 1000

/* Answers a verify request: this node's view checked against the store
 * and against its own stored hashes. */
static void run_verify(job_t *j)
{
    syncd_verify_t v;
    json_t *out;

    j->rc = syncd_store_verify(j->api->opts.store, &v, j->coll,
                               VERIFY_MAX_DIFFERS, &j->err);
    if (j->rc != 0)
        return;
    out = json_pack(
        "{s:s, s:I, s:s, s:I, s:s, s:b, s:I, s:O, s:b}", "node",
        j->api->opts.node_id, "count", (json_int_t)v.node.count, "digest",
        v.node.hex, "store_count", (json_int_t)v.store.count, "store_digest",
        v.store.hex, "agree",
        json_array_size(v.differs) == 0 && strcmp(v.node.hex, v.store.hex) == 0,
        "bodies", (json_int_t)v.bodies, "differs", v.differs, "truncated",
        v.truncated);
    if (out == NULL)
        j->rc = syncd_error_set(&j->err, SYNCD_ENOMEM, "out of memory");
    else
        set_text(j, out);
    json_decref(out);
    syncd_verify_clear(&v);
}

/* Returns 1 when slot holds the tree of doc. */
static int slot_fits(const tree_slot_t *slot, const syncd_doc_t *doc)
{
    return slot->tree != NULL && strcmp(slot->coll, doc->coll) == 0 &&
           strcmp(slot->id, doc->id) == 0 && slot->version == doc->version &&
           strcmp(slot->hash, doc->hash) == 0;
}

/* Sets *out to the listing asked by j of doc (read from j->view): from the
 * tree the node cache keeps beside a body it patches, else from the tree
 * kept here for that view, building it (and keeping it) when it is not
 * doc's. */
static int list_hashes(job_t *j, const syncd_doc_t *doc, json_t **out)
{
    syncd_api_t *api = j->api;
    tree_slot_t *slot = &api->trees[j->view == SYNCD_VIEW_STORE];
    syncd_htree_t *tree = NULL;
    char *coll = NULL, *id = NULL;
    int rc;

    if (j->view == SYNCD_VIEW_NODE) {
        rc = syncd_store_cache_list_hashes(api->opts.store, doc, j->ptr,
                                           j->level, j->from, j->limit, out,
                                           &j->err);
        if (rc != 1)
            return rc;
    }
    uv_mutex_lock(&api->trees_lock);
    if (slot_fits(slot, doc)) {
        rc = syncd_htree_list_tree(out, slot->tree, j->ptr, strlen(j->ptr),
                                   j->level, j->from, j->limit, &j->err);
        uv_mutex_unlock(&api->trees_lock);
        return rc;
    }
    uv_mutex_unlock(&api->trees_lock);
    rc = syncd_htree_build(&tree, doc->body, &j->err);
    if (rc != 0)
        return rc;
    rc = syncd_htree_list_tree(out, tree, j->ptr, strlen(j->ptr), j->level,
                               j->from, j->limit, &j->err);
    coll = strdup(doc->coll);
    id = strdup(doc->id);
    if (coll == NULL || id == NULL) {
        free(coll);
        free(id);
        syncd_htree_free(tree);
        return rc;
    }
    uv_mutex_lock(&api->trees_lock);
    free(slot->coll);
    free(slot->id);
    syncd_htree_free(slot->tree);
    slot->coll = coll;
    slot->id = id;
    slot->version = doc->version;
    memcpy(slot->hash, doc->hash, sizeof(slot->hash));
    slot->tree = tree;
    uv_mutex_unlock(&api->trees_lock);
    return rc;
}

/* Answers GET .../docs/{id}/hashes: a hash listing (doc/HASH.md
 * "Narrowing") of the view's copy of the document, with its version. */
static void run_hashes(job_t *j)
{
    syncd_doc_t *doc = NULL;
    json_t *out = NULL;

    j->rc = syncd_store_read(j->api->opts.store, &doc, j->coll, j->id, j->view,
                             &j->err);
    if (j->rc == 0)
        j->rc = list_hashes(j, doc, &out);
    if (j->rc == 0 &&
        (json_object_set_new(out, "v", json_integer(doc->version)) != 0 ||
         json_object_set_new(
             out, "source",
             json_string(j->view == SYNCD_VIEW_STORE ? "store" : "node")) != 0))
        j->rc = syncd_error_set(&j->err, SYNCD_ENOMEM, "out of memory");
    if (j->rc == 0) {
        j->version = doc->version;
        set_text(j, out);
    }
    json_decref(out);
    syncd_doc_free(doc);
}

/* Answers GET /v1/collections: the store of record's collection names. */
static void run_collections(job_t *j)
{
    json_t *names = NULL, *out;

    j->rc = syncd_store_collections(j->api->opts.store, &names, &j->err);
    if (j->rc != 0)
        return;
    out = json_pack("{s:o}", "collections", names);
    if (out == NULL)
        j->rc = syncd_error_set(&j->err, SYNCD_ENOMEM, "out of memory");
    else
        set_text(j, out);
    json_decref(out);
}

/* Answers POST /v1/admin/checkpoint?dir=D (j->after holds D): makes D a
 * data dir whose store/ is a RocksDB checkpoint of the embedded store. */
static void run_checkpoint(job_t *j)
{
    char path[4096];
    json_t *out;

    if (strcmp(syncd_store_kind(j->api->opts.store), "rocksdb") != 0) {
        j->rc = syncd_error_set(&j->err, SYNCD_EINVAL,
                                "a checkpoint is made of the embedded "
                                "RocksDB store only");
        return;
    }
    if (snprintf(path, sizeof(path), "%s/store", j->after) >=
        (int)sizeof(path)) {
        j->rc = syncd_error_set(&j->err, SYNCD_EINVAL, "dir is too long");
        return;
    }
    if (mkdir(j->after, 0755) != 0) {
        j->rc = syncd_error_set(
            &j->err, errno == EEXIST ? SYNCD_EEXISTS : SYNCD_EINVAL,
            "cannot create '%s': %s", j->after, strerror(errno));
        return;
    }
    j->rc = syncd_store_checkpoint(j->api->opts.store, path, &j->err);
    if (j->rc != 0)
        return;
    out =
        json_pack("{s:s, s:s}", "node", j->api->opts.node_id, "dir", j->after);
    if (out == NULL)
        j->rc = syncd_error_set(&j->err, SYNCD_ENOMEM, "out of memory");
    else
        set_text(j, out);
    json_decref(out);
}

static void job_work(uv_work_t *w)
{
    job_t *j = w->data;

    j->began = uv_hrtime();
    switch (j->kind) {
    case JOB_GET: {
        size_t len;

        j->rc = syncd_store_get_text(j->api->opts.store, &j->text, &len,
                                     &j->version, j->coll, j->id, 0, &j->err);
        break;
    }
    case JOB_DELETE:
        run_delete(j);
        break;
    case JOB_LIST:
        run_list(j);
        break;
    case JOB_DIGEST:
        run_digest(j);
        break;
    case JOB_VERIFY:
        run_verify(j);
        break;
    case JOB_COLLECTIONS:
        run_collections(j);
        break;
    case JOB_CHECKPOINT:
        run_checkpoint(j);
        break;
    case JOB_GET_VERSION:
        run_get_version(j);
        break;
    case JOB_HISTORY:
        run_history(j);
        break;
    case JOB_ROLLBACK:
        run_rollback(j);
        break;
    case JOB_HASHES:
        run_hashes(j);
        break;
    default:
        run_write(j);
        break;
    }
    if (j->change != NULL) {
        j->lock_wait_us = j->change->lock_wait_us;
        j->sync_wait_us = j->change->sync_wait_us;
        prepare_publish(j);
    }
    j->ended = uv_hrtime();
}

static void job_closed(uv_handle_t *h)
{
    job_free(h->data);
}

/* Milliseconds from a to b (uv_hrtime() values). */
static double ms_between(uint64_t a, uint64_t b)
{
    return (double)(b - a) / 1e6;
}

/* Logs j at warn when it took longer than --slow-request, with where its
 * time went: at most one line a second, which counts those not logged. */
static void log_if_slow(job_t *j)
{
    syncd_api_t *api = j->api;
    uint64_t now = uv_hrtime();
    uint64_t limit = (uint64_t)api->opts.cfg->slow_request_ms * 1000000;
    char phases[320] = "", store[128] = "", more[64] = "";

    if (limit == 0 || now - j->started <= limit)
        return;
    if (api->slow_logged != 0 && now - api->slow_logged < 1000000000) {
        api->slow_unlogged++;
        return;
    }
    if (j->lock_wait_us != 0 || j->sync_wait_us != 0)
        snprintf(store, sizeof(store),
                 " (%.1f ms waiting for the document's lock, %.1f ms for "
                 "the durable sync)",
                 (double)j->lock_wait_us / 1e3, (double)j->sync_wait_us / 1e3);
    if (j->back != 0)
        snprintf(phases, sizeof(phases),
                 ": %.1f ms queued, %.1f ms in the store%s, %.1f ms back to "
                 "the event loop, %.1f ms publishing",
                 ms_between(j->started, j->began),
                 ms_between(j->began, j->ended), store,
                 ms_between(j->ended, j->back), ms_between(j->back, now));
    if (api->slow_unlogged > 0)
        snprintf(more, sizeof(more), "; %lld more since the last such line",
                 (long long)api->slow_unlogged);
    syncd_log(SYNCD_LOG_WARN, "api: slow request: %s of %s/%s took %.1f ms%s%s",
              job_names[j->kind], j->coll, j->id != NULL ? j->id : "",
              ms_between(j->started, now), phases, more);
    api->slow_logged = now;
    api->slow_unlogged = 0;
}

/* Sends the job's answer, unless its deadline already answered, and frees
 * it. */
static void job_finish(job_t *j)
{
    syncd_api_t *api = j->api;

    log_if_slow(j);

    /* A document read from the store may now be cached: the node must
     * hear of its collection's changes. */
    if (j->kind == JOB_GET && j->rc == 0 && api->opts.node != NULL)
        syncd_node_note_read(api->opts.node, j->coll);

    if (j->req == NULL) {
        syncd_log(SYNCD_LOG_INFO,
                  "api: %s/%s finished after its deadline answered: %s",
                  j->coll, j->id != NULL ? j->id : "",
                  j->rc == 0 ? "done" : j->err.message);
    } else if (j->rc != 0) {
        if (j->bad_json)
            syncd_http_respond_error(j->req, 400, "invalid_json",
                                     j->err.message);
        else
            respond_rc(j->req, j->kind, j->rc, &j->err);
    } else {
        respond_json(j->req, j->created ? 201 : 200, j->version, j->text);
    }
    if (j->held)
        syncd_node_release(api->opts.node, j->coll, j->changed);
    if (j->deadline_on) {
        uv_timer_stop(&j->deadline);
        uv_close((uv_handle_t *)&j->deadline, job_closed);
    } else {
        job_free(j);
    }
    inflight_end(api);
}

/* Logs the outcome of the publish of coll/id version. */
static void log_publish(int status, int64_t seq, const char *coll,
                        const char *id, int64_t version)
{
    if (status != 0)
        syncd_log(SYNCD_LOG_WARN,
                  "api: publishing %s/%s v%lld failed (%s); the outbox "
                  "will complete it",
                  coll, id, (long long)version, syncd_strerror(status));
    else
        syncd_log(SYNCD_LOG_DEBUG, "api: %s/%s v%lld published as seq %lld",
                  coll, id, (long long)version, (long long)seq);
}

static void job_published(int status, int64_t seq, void *payload)
{
    job_t *j = payload;

    log_publish(status, seq, j->coll, j->id, j->version);
    job_finish(j);
}

/* A publish completing behind the write it belongs to, which was answered
 * already: counted in flight until it completes. */
typedef struct behind {
    syncd_api_t *api;
    char *coll, *id;
    int64_t version;
} behind_t;

static void behind_free(behind_t *b)
{
    if (b == NULL)
        return;
    free(b->coll);
    free(b->id);
    free(b);
}

static void behind_published(int status, int64_t seq, void *payload)
{
    behind_t *b = payload;
    syncd_api_t *api = b->api;

    log_publish(status, seq, b->coll, b->id, b->version);
    behind_free(b);
    inflight_end(api);
}

/* Publishes j's change as its worker prepared it, or prepares it here. */
static int node_publish(job_t *j, syncd_node_publish_cb cb, void *payload)
{
    syncd_node_pub_t *pub = j->pub;

    if (pub == NULL)
        return syncd_node_publish(j->api->opts.node, j->change, cb, payload);
    j->pub = NULL;
    return syncd_node_publish_prepared(j->api->opts.node, pub, cb, payload);
}

/* Starts the publish of j's change to complete behind its answer: 0, or
 * -1 when out of memory (then nothing was started). */
static int publish_behind(job_t *j)
{
    behind_t *b = calloc(1, sizeof(*b));
    int rc;

    if (b == NULL || (b->coll = strdup(j->coll)) == NULL ||
        (b->id = strdup(j->id)) == NULL) {
        behind_free(b);
        return -1;
    }
    b->api = j->api;
    b->version = j->version;
    inflight_begin(b->api);
    rc = node_publish(j, behind_published, b);
    if (rc != 0)
        behind_published(rc, 0, b);
    return 0;
}

static void job_done(uv_work_t *w, int status)
{
    job_t *j = w->data;
    int rc;

    (void)status;
    j->back = uv_hrtime();
    if (j->rc == 0 && j->changed) {
        if (j->behind && publish_behind(j) == 0) {
            job_finish(j);
            return;
        }
        rc = node_publish(j, job_published, j);
        if (rc == 0)
            return;
        job_published(rc, 0, j);
        return;
    }
    job_finish(j);
}

/* The job's --request-timeout passed before its store work finished (a
 * stalled store, or a thread pool full of stalled calls): answers 503
 * "timeout" now. The work goes on; its outcome, a write's included, is
 * unknown to the client, and job_finish() only logs it. */
static void job_deadline(uv_timer_t *t)
{
    job_t *j = t->data;
    int write = j->kind == JOB_CREATE || j->kind == JOB_PUT ||
                j->kind == JOB_PATCH || j->kind == JOB_DELETE ||
                j->kind == JOB_ROLLBACK;
    syncd_error_t err;

    syncd_error_clear(&err);
    syncd_error_set(&err, SYNCD_ETIMEDOUT,
                    "the store did not answer within --request-timeout "
                    "(%lld ms)%s",
                    (long long)j->api->opts.cfg->request_timeout_ms,
                    write ? "; the write may or may not be committed" : "");
    respond_rc(j->req, j->kind, SYNCD_ETIMEDOUT, &err);
    j->req = NULL;
}

/* Copies what the worker reads of the request, so that the request can be
 * answered at the deadline while the worker still runs; 0 or -1. */
static int job_own_input(job_t *j)
{
    if (j->raw != NULL) {
        j->body = malloc(j->raw_len + 1);
        if (j->body == NULL)
            return -1;
        memcpy(j->body, j->raw, j->raw_len);
        j->body[j->raw_len] = '\0';
        j->raw = j->body;
    }
    if (j->ikey != NULL) {
        j->ikey_copy = strdup(j->ikey);
        if (j->ikey_copy == NULL)
            return -1;
        j->ikey = j->ikey_copy;
    }
    return 0;
}

static void job_queue(job_t *j)
{
    int64_t timeout = j->api->opts.cfg->request_timeout_ms;
    int rc;

    if (job_own_input(j) != 0) {
        j->rc = syncd_error_set(&j->err, SYNCD_ENOMEM, "out of memory");
        job_finish(j);
        return;
    }
    j->work.data = j;
    rc = uv_queue_work(j->api->opts.loop, &j->work, job_work, job_done);
    if (rc != 0) {
        j->rc = syncd_error_set(&j->err, SYNCD_EBACKEND,
                                "cannot queue work: %s", uv_strerror(rc));
        job_finish(j);
        return;
    }
    uv_timer_init(j->api->opts.loop, &j->deadline);
    j->deadline.data = j;
    j->deadline_on = 1;
    uv_timer_start(&j->deadline, job_deadline, (uint64_t)timeout, 0);
}

/* Returns a new job of kind for req over coll (and id, may be NULL), both
 * taken over; NULL on out of memory (coll and id are freed). */
static job_t *job_new(syncd_api_t *api, syncd_http_req_t *req, job_kind_t kind,
                      char *coll, char *id)
{
    job_t *j = calloc(1, sizeof(*j));

    if (j == NULL) {
        free(coll);
        free(id);
        syncd_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return NULL;
    }
    j->api = api;
    j->req = req;
    j->kind = kind;
    j->coll = coll;
    j->id = id;
    j->if_match = SYNCD_ANY_VERSION;
    j->raw = syncd_http_body(req, &j->raw_len);
    j->started = uv_hrtime();
    inflight_begin(api);
    return j;
}

/* ---- Document routes ------------------------------------------------- */

/* Reads If-Match into j->if_match; answers 400 and returns -1 when bad. */
static int read_if_match(job_t *j)
{
    const char *h = syncd_http_header(j->req, "If-Match");

    if (h == NULL)
        return 0;
    if (parse_etag(&j->if_match, h) == 0)
        return 0;
    syncd_http_respond_error(j->req, 400, "bad_request",
                             "If-Match must be \"<version>\" or *");
    return -1;
}

/* Reads Idempotency-Key into j->ikey; answers 400 and returns -1 when it
 * is not 1..128 printable ASCII bytes. */
static int read_idempotency_key(job_t *j)
{
    syncd_error_t err;

    j->ikey = syncd_http_header(j->req, "Idempotency-Key");
    syncd_error_clear(&err);
    if (j->ikey == NULL || syncd_validate_idempotency_key(j->ikey, &err) == 0)
        return 0;
    syncd_http_respond_error(j->req, 400, "bad_request", err.message);
    return -1;
}

/* Sets up a PUT: create, replace or create-or-replace by its headers. */
static int setup_put(job_t *j)
{
    const char *none = syncd_http_header(j->req, "If-None-Match");

    if (read_if_match(j) < 0)
        return -1;
    if (none == NULL) {
        j->kind = JOB_PUT;
        return 0;
    }
    if (strcmp(none, "*") != 0 ||
        syncd_http_header(j->req, "If-Match") != NULL) {
        syncd_http_respond_error(j->req, 400, "bad_request",
                                 "If-None-Match supports only *, without "
                                 "If-Match");
        return -1;
    }
    j->kind = JOB_CREATE;
    return 0;
}

/* Sets up a PATCH: its content type picks JSON Patch or merge patch. */
static int setup_patch(job_t *j)
{
    const char *ct = syncd_http_header(j->req, "Content-Type");
    size_t n;

    if (read_if_match(j) < 0)
        return -1;
    if (ct == NULL)
        ct = "";
    n = strcspn(ct, "; ");
    if (n == strlen("application/json-patch+json") &&
        strncasecmp(ct, "application/json-patch+json", n) == 0) {
        j->is_merge = 0;
    } else if (n == strlen("application/merge-patch+json") &&
               strncasecmp(ct, "application/merge-patch+json", n) == 0) {
        j->is_merge = 1;
    } else {
        syncd_http_respond_error(j->req, 415, "unsupported_media_type",
                                 "PATCH takes application/json-patch+json or "
                                 "application/merge-patch+json");
        return -1;
    }
    return 0;
}

static void method_not_allowed(syncd_http_req_t *req, const char *allow)
{
    static const char body[] = "{\"error\":\"method_not_allowed\","
                               "\"message\":\"method not allowed on this "
                               "route\"}";
    char headers[64];

    snprintf(headers, sizeof(headers), "Allow: %s\r\n", allow);
    syncd_http_respond(req, 405, "application/json", headers, body,
                       sizeof(body) - 1);
}

/* Returns 1 when req's query has parameter name. */
static int has_query(const syncd_http_req_t *req, const char *name)
{
    char *v = NULL;
    int rc = query_param(&v, req, name);

    free(v);
    return rc != 0;
}

/* Reads the version in query parameter name into j->at; answers 400 and
 * returns -1 when it is missing or not a version (1 or more). */
static int read_version_param(job_t *j, const char *name)
{
    char *v = NULL;
    char msg[96];
    int rc = query_param(&v, j->req, name);

    if (rc == 1 && parse_count(&j->at, v) == 0 && j->at >= 1) {
        free(v);
        return 0;
    }
    free(v);
    snprintf(msg, sizeof(msg), "%s must be a version (an integer from 1)",
             name);
    syncd_http_respond_error(j->req, 400, "bad_request", msg);
    return -1;
}

/* Returns 1 when req's method is want; else answers 405 allowing want,
 * frees coll and id (taken over) and returns 0. */
static int doc_method_or_405(syncd_http_req_t *req, const char *want,
                             char *coll, char *id)
{
    if (strcmp(syncd_http_method(req), want) == 0)
        return 1;
    free(coll);
    free(id);
    method_not_allowed(req, want);
    return 0;
}

/* Serves GET .../docs/{id}/history (rollback 0) or POST
 * .../docs/{id}/rollback?to=N (rollback 1); coll and id are taken over. */
static void serve_history(syncd_api_t *api, syncd_http_req_t *req, char *coll,
                          char *id, int rollback)
{
    job_t *j;
    int rc;

    syncd_http_set_route(req, rollback ? "rollback" : "history");
    if (!doc_method_or_405(req, rollback ? "POST" : "GET", coll, id))
        return;
    j = job_new(api, req, rollback ? JOB_ROLLBACK : JOB_HISTORY, coll, id);
    if (j == NULL)
        return;
    if (rollback) {
        rc = read_version_param(j, "to");
        if (rc == 0)
            rc = read_if_match(j);
        if (rc == 0) {
            rc = hold_collection(api, req, j->coll);
            j->held = rc == 0;
        }
        if (rc == 0)
            rc = read_idempotency_key(j);
        if (rc < 0) {
            if (j->held)
                syncd_node_release(api->opts.node, j->coll, 0);
            job_free(j);
            inflight_end(api);
            return;
        }
    }
    job_queue(j);
}

/* Returns 1 (history), 2 (rollback) or 3 (hashes) when the raw id path s
 * (n bytes) ends with "/history", "/rollback" or "/hashes" after a
 * non-empty id, shortening *n to the id; else 0. */
static int history_subroute(const char *s, size_t *n)
{
    static const char *const tails[] = {"/history", "/rollback", "/hashes"};

    for (int i = 0; i < 3; i++) {
        size_t t = strlen(tails[i]);

        if (*n > t && memcmp(s + *n - t, tails[i], t) == 0) {
            *n -= t;
            return i + 1;
        }
    }
    return 0;
}

/* Answers a plain GET of coll/id on the loop when the in-memory tier holds
 * its text (a copy of bytes: no store call, no serialization, no thread
 * hand-off); returns 1 when answered, 0 when the thread pool must. */
static int get_from_memory(syncd_api_t *api, syncd_http_req_t *req,
                           const char *coll, const char *id)
{
    const char *q = syncd_http_query(req);
    int64_t version = 0;
    syncd_error_t err;
    char *text = NULL;
    char etag[48];
    size_t len = 0;
    int rc;

    if (q != NULL && *q != '\0')
        return 0;
    syncd_error_clear(&err);
    rc = syncd_store_get_text(api->opts.store, &text, &len, &version, coll, id,
                              1, &err);
    if (rc != 0 && rc != SYNCD_ENOTFOUND)
        return 0;
    if (rc == SYNCD_ENOTFOUND) {
        respond_rc(req, JOB_GET, rc, &err);
        return 1;
    }
    snprintf(etag, sizeof(etag), "ETag: \"%lld\"\r\n", (long long)version);
    syncd_http_respond(req, 200, "application/json", etag, text, len);
    free(text);
    return 1;
}

static void serve_doc(syncd_api_t *api, syncd_http_req_t *req, char *coll,
                      char *id)
{
    const char *m = syncd_http_method(req);
    job_kind_t kind;
    job_t *j;
    int rc = 0;

    if (strcmp(m, "GET") == 0 && has_query(req, "version")) {
        syncd_http_set_route(req, "get_version");
        kind = JOB_GET_VERSION;
    } else if (strcmp(m, "GET") == 0) {
        syncd_http_set_route(req, "get");
        kind = JOB_GET;
        if (get_from_memory(api, req, coll, id)) {
            free(coll);
            free(id);
            return;
        }
    } else if (strcmp(m, "PUT") == 0) {
        syncd_http_set_route(req, "put");
        kind = JOB_PUT;
    } else if (strcmp(m, "PATCH") == 0) {
        syncd_http_set_route(req, "patch");
        kind = JOB_PATCH;
    } else if (strcmp(m, "DELETE") == 0) {
        syncd_http_set_route(req, "delete");
        kind = JOB_DELETE;
    } else {
        free(coll);
        free(id);
        method_not_allowed(req, "GET, PUT, PATCH, DELETE");
        return;
    }
    j = job_new(api, req, kind, coll, id);
    if (j == NULL)
        return;
    if (kind == JOB_PUT)
        rc = setup_put(j);
    else if (kind == JOB_PATCH)
        rc = setup_patch(j);
    else if (kind == JOB_DELETE)
        rc = read_if_match(j);
    else if (kind == JOB_GET_VERSION)
        rc = read_version_param(j, "version");
    if (rc == 0 && kind == JOB_GET_VERSION) {
        job_queue(j);
        return;
    }
    if (rc == 0 && kind != JOB_GET) {
        rc = hold_collection(api, req, j->coll);
        j->held = rc == 0;
    }
    if (rc == 0 && kind != JOB_GET)
        rc = read_idempotency_key(j);
    if (rc < 0) {
        job_free(j);
        inflight_end(api);
        return;
    }
    job_queue(j);
}

static void list_seq_read(int status, int64_t seq, void *payload)
{
    job_t *j = payload;

    if (status != 0) {
        j->rc = syncd_error_set(&j->err, status,
                                "cannot read the collection's seq: %s",
                                syncd_strerror(status));
        job_finish(j);
        return;
    }
    j->seq = seq;
    job_queue(j);
}

/* Reads a query parameter, answering 400 (and returning -1) when it is
 * not percent-encoded correctly. */
static int query_or_400(char **out, syncd_http_req_t *req, const char *name)
{
    int rc = query_param(out, req, name);

    if (rc >= 0)
        return rc;
    syncd_http_respond_error(req, 400, "bad_request",
                             rc == SYNCD_EINVAL
                                 ? "bad percent-encoding in the query"
                                 : "out of memory");
    return -1;
}

static void serve_list(syncd_api_t *api, syncd_http_req_t *req, char *coll)
{
    job_t *j;
    char *limit = NULL;
    int64_t n = LIST_DEFAULT_LIMIT;
    int rc;

    syncd_http_set_route(req, "list");
    if (strcmp(syncd_http_method(req), "GET") != 0) {
        free(coll);
        method_not_allowed(req, "GET");
        return;
    }
    j = job_new(api, req, JOB_LIST, coll, NULL);
    if (j == NULL)
        return;
    if (query_or_400(&j->prefix, req, "prefix") < 0 ||
        query_or_400(&j->after, req, "after") < 0 ||
        query_or_400(&limit, req, "limit") < 0)
        goto fail;
    if (limit != NULL &&
        (parse_count(&n, limit) < 0 || n < 1 || n > LIST_MAX_LIMIT)) {
        syncd_http_respond_error(req, 400, "bad_request",
                                 "limit must be an integer in 1..10000");
        goto fail;
    }
    free(limit);
    j->limit = (size_t)n;
    rc = syncd_bus_seq(api->opts.bus, j->coll, list_seq_read, j);
    if (rc != 0)
        list_seq_read(rc, 0, j);
    return;
fail:
    free(limit);
    job_free(j);
    inflight_end(api);
}

/* Reads query parameter source (node, the default, or store) into *out;
 * answers 400 and returns -1 when it is anything else. */
static int read_source_param(syncd_view_t *out, syncd_http_req_t *req)
{
    char *source = NULL;
    int rc = query_or_400(&source, req, "source");

    if (rc < 0)
        return rc;
    *out = SYNCD_VIEW_NODE;
    if (source != NULL && strcmp(source, "store") == 0)
        *out = SYNCD_VIEW_STORE;
    else if (source != NULL && strcmp(source, "node") != 0) {
        syncd_http_respond_error(req, 400, "bad_request",
                                 "source must be node or store");
        rc = -1;
    }
    free(source);
    return rc < 0 ? -1 : 0;
}

/* Serves GET .../digest?after=&until=&source=node|store&entries=N: the
 * digest of the ids in (after, until] of this node's view (default) or of
 * the store of record. */
static void serve_digest(syncd_api_t *api, syncd_http_req_t *req, char *coll)
{
    char *entries = NULL;
    int64_t n = 0;
    job_t *j;

    syncd_http_set_route(req, "digest");
    if (strcmp(syncd_http_method(req), "GET") != 0) {
        free(coll);
        method_not_allowed(req, "GET");
        return;
    }
    j = job_new(api, req, JOB_DIGEST, coll, NULL);
    if (j == NULL)
        return;
    if (query_or_400(&j->after, req, "after") < 0 ||
        query_or_400(&j->until, req, "until") < 0 ||
        read_source_param(&j->view, req) < 0 ||
        query_or_400(&entries, req, "entries") < 0)
        goto fail;
    if (entries != NULL &&
        (parse_count(&n, entries) < 0 || n > SYNCD_MAX_RANGE_ENTRIES)) {
        syncd_http_respond_error(req, 400, "bad_request",
                                 "entries must be an integer in 0..1000");
        goto fail;
    }
    j->limit = (size_t)n;
    free(entries);
    job_queue(j);
    return;
fail:
    free(entries);
    job_free(j);
    inflight_end(api);
}

/* Reads the count in query parameter name into *out (unchanged when
 * absent); answers 400 and returns -1 when it is not one of 0..max. */
static int read_count_param(size_t *out, syncd_http_req_t *req,
                            const char *name, int64_t max)
{
    char *v = NULL, msg[96];
    int64_t n = 0;
    int rc = query_or_400(&v, req, name);

    if (rc <= 0)
        return rc;
    if (parse_count(&n, v) == 0 && n <= max) {
        *out = (size_t)n;
        free(v);
        return 0;
    }
    free(v);
    snprintf(msg, sizeof(msg), "%s must be an integer in 0..%lld", name,
             (long long)max);
    syncd_http_respond_error(req, 400, "bad_request", msg);
    return -1;
}

/* Serves GET .../docs/{id}/hashes?path=P&level=L&from=F&count=N&source=S
 * (doc/HASH.md "Narrowing"); coll and id are taken over. */
static void serve_hashes(syncd_api_t *api, syncd_http_req_t *req, char *coll,
                         char *id)
{
    job_t *j;

    syncd_http_set_route(req, "hashes");
    if (!doc_method_or_405(req, "GET", coll, id))
        return;
    j = job_new(api, req, JOB_HASHES, coll, id);
    if (j == NULL)
        return;
    j->level = SYNCD_HTREE_TOP;
    j->limit = SYNCD_HTREE_LIST_MAX;
    if (query_or_400(&j->ptr, req, "path") < 0 ||
        read_source_param(&j->view, req) < 0 ||
        read_count_param(&j->level, req, "level", 64) < 0 ||
        read_count_param(&j->from, req, "from", INT64_MAX) < 0 ||
        read_count_param(&j->limit, req, "count", SYNCD_HTREE_LIST_MAX) < 0)
        goto fail;
    if (j->ptr == NULL && (j->ptr = strdup("")) == NULL) {
        syncd_http_respond_error(req, 500, "out_of_memory", "out of memory");
        goto fail;
    }
    job_queue(j);
    return;
fail:
    job_free(j);
    inflight_end(api);
}

/* Serves POST .../verify: this node's view checked off the loop. */
static void serve_verify(syncd_api_t *api, syncd_http_req_t *req, char *coll)
{
    job_t *j;

    syncd_http_set_route(req, "verify");
    if (strcmp(syncd_http_method(req), "POST") != 0) {
        free(coll);
        method_not_allowed(req, "POST");
        return;
    }
    j = job_new(api, req, JOB_VERIFY, coll, NULL);
    if (j != NULL)
        job_queue(j);
}

/* Serves GET /v1/collections: the collections of the store of record. */
static void serve_collections(syncd_api_t *api, syncd_http_req_t *req)
{
    job_t *j;

    syncd_http_set_route(req, "collections");
    if (strcmp(syncd_http_method(req), "GET") != 0) {
        method_not_allowed(req, "GET");
        return;
    }
    j = job_new(api, req, JOB_COLLECTIONS, NULL, NULL);
    if (j != NULL)
        job_queue(j);
}

/* Serves POST /v1/admin/checkpoint?dir=D: D must be an absolute path that
 * does not exist yet, on the node's machine. */
static void serve_checkpoint(syncd_api_t *api, syncd_http_req_t *req)
{
    job_t *j;

    syncd_http_set_route(req, "checkpoint");
    if (strcmp(syncd_http_method(req), "POST") != 0) {
        method_not_allowed(req, "POST");
        return;
    }
    j = job_new(api, req, JOB_CHECKPOINT, NULL, NULL);
    if (j == NULL)
        return;
    if (query_or_400(&j->after, req, "dir") < 0)
        goto fail;
    if (j->after == NULL || j->after[0] != '/') {
        syncd_http_respond_error(req, 400, "bad_request",
                                 "dir must be an absolute path");
        goto fail;
    }
    job_queue(j);
    return;
fail:
    job_free(j);
    inflight_end(api);
}

/* ---- Export streams -------------------------------------------------- */

/* Documents read per page of an export. */
#define EXPORT_PAGE 500

/* One export: a page is read and serialized on the thread pool, written,
 * and the next page is read only once the client has taken that one (the
 * connection's output drained), so memory stays one page whatever the
 * collection's size. */
typedef struct exporter {
    uv_work_t work;
    syncd_api_t *api;
    syncd_http_req_t *req;
    char *coll;
    char *after;      /* the last id exported; NULL at the start */
    int64_t seq;      /* the collection's seq when the export started */
    syncd_merkle_t m; /* over the exported (id, v, h) */
    syncd_buf_t out;  /* the page's lines (thread pool to loop) */
    int last;         /* the page read holds the trailer */
    int working;      /* a page read is in flight */
    int gone;         /* the client went away */
    int rc;
    syncd_error_t err;
} exporter_t;

static void exporter_free(exporter_t *x)
{
    free(x->coll);
    free(x->after);
    syncd_buf_free(&x->out);
    free(x);
}

/* Appends one JSON line of v (borrowed) to x->out; 0 or SYNCD_ENOMEM. */
static int export_line(exporter_t *x, const json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT);
    int rc = text != NULL &&
                     syncd_buf_append(&x->out, text, strlen(text)) == 0 &&
                     syncd_buf_append(&x->out, "\n", 1) == 0
                 ? 0
                 : SYNCD_ENOMEM;

    free(text);
    return rc;
}

/* Reads the next page (thread pool) into x->out, with the trailer after
 * the last page. */
static void export_work(uv_work_t *w)
{
    exporter_t *x = w->data;
    json_t *page = NULL, *e;
    syncd_digest_t d;
    size_t i;

    syncd_buf_truncate(&x->out, 0);
    x->rc = syncd_store_export_page(x->api->opts.store, &page, x->coll,
                                    x->after, EXPORT_PAGE, &x->err);
    json_array_foreach (page, i, e) {
        const char *id = json_string_value(json_object_get(e, "id"));
        json_int_t v = json_integer_value(json_object_get(e, "v"));
        const char *h = json_string_value(json_object_get(e, "h"));
        json_t *line;

        if (x->rc != 0)
            break;
        line = json_pack("{s:s, s:s, s:I, s:s, s:O}", "coll", x->coll, "id", id,
                         "v", v, "h", h, "data", json_object_get(e, "data"));
        if (line == NULL || export_line(x, line) != 0 ||
            syncd_merkle_add(&x->m, id, v, h) != 0)
            x->rc = syncd_error_set(&x->err, SYNCD_ENOMEM, "out of memory");
        json_decref(line);
    }
    if (x->rc == 0 && json_array_size(page) > 0) {
        free(x->after);
        x->after = strdup(json_string_value(json_object_get(
            json_array_get(page, json_array_size(page) - 1), "id")));
        if (x->after == NULL)
            x->rc = syncd_error_set(&x->err, SYNCD_ENOMEM, "out of memory");
    }
    if (x->rc == 0 && json_array_size(page) < EXPORT_PAGE) {
        json_t *trailer;

        syncd_merkle_final(&x->m, &d);
        trailer = json_pack("{s:s, s:b, s:I, s:s, s:I}", "coll", x->coll,
                            "trailer", 1, "count", (json_int_t)d.count,
                            "digest", d.hex, "seq", (json_int_t)x->seq);
        if (trailer == NULL || export_line(x, trailer) != 0)
            x->rc = syncd_error_set(&x->err, SYNCD_ENOMEM, "out of memory");
        json_decref(trailer);
        x->last = 1;
    }
    json_decref(page);
}

static void export_done(uv_work_t *w, int status);

/* Queues the read of the next page. */
static void export_next(exporter_t *x)
{
    int rc;

    x->working = 1;
    x->work.data = x;
    inflight_begin(x->api);
    rc = uv_queue_work(x->api->opts.loop, &x->work, export_work, export_done);
    if (rc != 0) {
        x->rc = syncd_error_set(&x->err, SYNCD_EBACKEND,
                                "cannot queue work: %s", uv_strerror(rc));
        export_done(&x->work, 0);
    }
}

/* Reads the next page once the client took the last one; a node that is
 * shutting down ends the stream instead (no trailer). */
static void export_drained(syncd_http_req_t *req)
{
    exporter_t *x = syncd_http_data(req);

    if (x->api->quiescing) {
        syncd_http_stream_end(req);
        exporter_free(x);
        return;
    }
    export_next(x);
}

static void export_gone(syncd_http_req_t *req)
{
    exporter_t *x = syncd_http_data(req);

    x->gone = 1;
    if (!x->working) {
        syncd_http_stream_end(req);
        exporter_free(x);
    }
}

/* Writes the page read and goes on: the next page once the client took
 * this one, or the end. A failed read or a shutdown ends the stream
 * without its trailer (after an error line for a failed read), which the
 * client sees as an incomplete export. */
static void export_done(uv_work_t *w, int status)
{
    exporter_t *x = w->data;
    syncd_api_t *api = x->api;

    (void)status;
    x->working = 0;
    if (x->gone) {
        syncd_http_stream_end(x->req);
        exporter_free(x);
    } else if (x->rc != 0) {
        json_t *e = json_pack("{s:s, s:s, s:s}", "coll", x->coll, "error",
                              syncd_strerror(x->rc), "message", x->err.message);

        syncd_log(SYNCD_LOG_WARN, "api: export of %s failed: %s", x->coll,
                  x->err.message);
        syncd_buf_truncate(&x->out, 0);
        if (e != NULL && export_line(x, e) == 0)
            syncd_http_stream_write(x->req, x->out.data, x->out.len);
        json_decref(e);
        syncd_http_stream_end(x->req);
        exporter_free(x);
    } else {
        syncd_http_stream_write(x->req, x->out.data, x->out.len);
        if (x->last || api->quiescing) {
            syncd_http_stream_end(x->req);
            exporter_free(x);
        } else if (!syncd_http_on_drained(x->req, export_drained)) {
            export_next(x);
        }
    }
    inflight_end(api);
}

static void export_seq_read(int status, int64_t seq, void *payload)
{
    exporter_t *x = payload;
    syncd_api_t *api = x->api;

    if (status != 0 || syncd_http_gone(x->req) || api->quiescing) {
        respond_rc(x->req, JOB_LIST, status != 0 ? status : SYNCD_ECANCELED,
                   NULL);
        exporter_free(x);
    } else {
        x->seq = seq;
        syncd_http_set_data(x->req, x);
        syncd_http_on_gone(x->req, export_gone);
        syncd_http_stream_start(x->req, 200, "application/x-ndjson",
                                "Cache-Control: no-cache\r\n");
        export_next(x);
    }
    inflight_end(api);
}

/* Serves GET .../export: JSON Lines of {coll,id,v,h,data} for every live
 * document of the store of record in id order, then the trailer
 * {coll,trailer:true,count,digest,seq}. */
static void serve_export(syncd_api_t *api, syncd_http_req_t *req, char *coll)
{
    exporter_t *x;
    int rc;

    syncd_http_set_route(req, "export");
    if (strcmp(syncd_http_method(req), "GET") != 0) {
        free(coll);
        method_not_allowed(req, "GET");
        return;
    }
    x = calloc(1, sizeof(*x));
    if (x == NULL) {
        free(coll);
        syncd_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    x->api = api;
    x->req = req;
    x->coll = coll;
    syncd_merkle_init(&x->m);
    inflight_begin(api);
    rc = syncd_bus_seq(api->opts.bus, coll, export_seq_read, x);
    if (rc != 0)
        export_seq_read(rc, 0, x);
}

/* ---- Watch streams --------------------------------------------------- */

/* Takes a watch slot of coll; answers 503 too_many_watchers with a
 * Retry-After naming the limit reached (or 500 out of memory) and returns
 * -1 when it cannot. */
static int watch_slot_take(syncd_api_t *api, syncd_http_req_t *req,
                           const char *coll)
{
    const syncd_config_t *cfg = api->opts.cfg;
    json_int_t n =
        json_integer_value(json_object_get(api->coll_watchers, coll));
    json_t *body = NULL;
    char *text = NULL;
    char msg[200], retry[48];

    if (cfg->max_watchers > 0 && api->watchers >= cfg->max_watchers)
        snprintf(msg, sizeof(msg),
                 "this node serves its limit of %lld watch streams "
                 "(--max-watchers); retry later",
                 (long long)cfg->max_watchers);
    else if (cfg->max_watchers_per_collection > 0 &&
             n >= cfg->max_watchers_per_collection)
        snprintf(msg, sizeof(msg),
                 "collection %s has its limit of %lld watch streams on this "
                 "node (--max-watchers-per-collection); retry later",
                 coll, (long long)cfg->max_watchers_per_collection);
    else if (json_object_set_new(api->coll_watchers, coll,
                                 json_integer(n + 1)) == 0) {
        api->watchers++;
        return 0;
    } else {
        syncd_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return -1;
    }
    body =
        json_pack("{s:s, s:s}", "error", "too_many_watchers", "message", msg);
    text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    snprintf(retry, sizeof(retry), "Retry-After: %d\r\n", WATCH_RETRY_AFTER_S);
    syncd_http_respond(req, 503, "application/json", retry,
                       text != NULL ? text : "",
                       text != NULL ? strlen(text) : 0);
    free(text);
    json_decref(body);
    return -1;
}

/* Gives back a watch slot of coll. */
static void watch_slot_give(syncd_api_t *api, const char *coll)
{
    json_int_t n =
        json_integer_value(json_object_get(api->coll_watchers, coll));

    api->watchers--;
    if (n <= 1)
        json_object_del(api->coll_watchers, coll);
    else
        json_object_set_new(api->coll_watchers, coll, json_integer(n - 1));
}

static void watcher_closed(uv_handle_t *h)
{
    watcher_t *w = h->data;

    free(w->coll);
    free(w->prefix);
    free(w);
}

/* Gives back w's watch slot and closes its timer; w is freed then. */
static void watcher_close(watcher_t *w)
{
    if (w->slot)
        watch_slot_give(w->api, w->coll);
    w->slot = 0;
    uv_close((uv_handle_t *)&w->bookmark, watcher_closed);
}

/* Ends w's stream after a last event (event/data may be NULL), stops its
 * node watch when it is still on, and frees w. */
static void watcher_end(watcher_t *w, const char *event, const char *data)
{
    syncd_buf_t line = {0};

    if (w->ended)
        return;
    w->ended = 1;
    if (event != NULL &&
        syncd_buf_printf(&line, "event: %s\ndata: %s\n\n", event, data) == 0)
        syncd_http_stream_write(w->req, line.data, line.len);
    syncd_buf_free(&line);
    syncd_node_unwatch(w->watch);
    w->watch = NULL;
    if (w->streaming) {
        syncd_metrics_watchers(w->api->opts.metrics, -1);
        syncd_http_stream_end(w->req);
    }
    watcher_close(w);
}

/* Returns seconds since the RFC 3339 UTC time ts, or -1 if unparsable. */
static double age_of(const char *ts)
{
    struct tm tm;
    struct timespec now;
    const char *rest;
    double frac = 0, scale = 0.1;

    if (ts == NULL)
        return -1;
    memset(&tm, 0, sizeof(tm));
    rest = strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm);
    if (rest == NULL)
        return -1;
    if (*rest == '.')
        for (rest++; *rest >= '0' && *rest <= '9'; rest++, scale /= 10)
            frac += (*rest - '0') * scale;
    clock_gettime(CLOCK_REALTIME, &now);
    return (double)(now.tv_sec - timegm(&tm)) + now.tv_nsec / 1e9 - frac;
}

static void bookmark_due(uv_timer_t *t)
{
    watcher_t *w = t->data;
    char line[96];
    int64_t seq = syncd_node_seq(w->api->opts.node, w->coll);
    int n;

    if (seq < w->last)
        seq = w->last;
    w->last = seq;
    n = snprintf(line, sizeof(line),
                 "id: %lld\nevent: bookmark\ndata: "
                 "{\"seq\":%lld}\n\n",
                 (long long)seq, (long long)seq);
    syncd_http_stream_write(w->req, line, (size_t)n);
}

static void send_event(watcher_t *w, int64_t seq, const json_t *event)
{
    char *data = json_dumps(event, JSON_COMPACT);
    char head[96];
    int n;

    if (data == NULL) {
        watcher_end(w, "resync", "{\"reason\":\"out of memory\"}");
        return;
    }
    n = snprintf(head, sizeof(head),
                 "id: %lld\nevent: %s\ndata: ", (long long)seq,
                 json_string_value(json_object_get(event, "op")));
    {
        size_t dlen = strlen(data);
        char *msg = malloc((size_t)n + dlen + 2);

        if (msg != NULL) {
            memcpy(msg, head, (size_t)n);
            memcpy(msg + n, data, dlen);
            memcpy(msg + n + dlen, "\n\n", 2);
            syncd_http_stream_write(w->req, msg, (size_t)n + dlen + 2);
            free(msg);
        }
    }
    free(data);
    w->last = seq;
    {
        double age = age_of(json_string_value(json_object_get(event, "ts")));

        if (age >= 0)
            syncd_metrics_latency(w->api->opts.metrics, age);
    }
    uv_timer_again(&w->bookmark);
    if (syncd_http_stream_backlog(w->req) >
        w->api->opts.cfg->watch_buffer_bytes) {
        char data_resync[64];

        syncd_log(SYNCD_LOG_WARN,
                  "api: watcher of %s too slow at seq %lld: "
                  "resync",
                  w->coll, (long long)seq);
        snprintf(data_resync, sizeof(data_resync), "{\"seq\":%lld}",
                 (long long)seq);
        watcher_end(w, "resync", data_resync);
    }
}

static void watch_signal(syncd_node_signal_t signal, int64_t seq,
                         const json_t *event, void *payload)
{
    watcher_t *w = payload;
    char data[64];

    if (w->ended)
        return;
    if (signal == SYNCD_NODE_EVENT) {
        send_event(w, seq, event);
        return;
    }
    /* The node ends and frees its watch after these signals. */
    w->watch = NULL;
    snprintf(data, sizeof(data), "{\"seq\":%lld}",
             (long long)(w->last > seq ? w->last : seq));
    if (signal == SYNCD_NODE_RESYNC)
        syncd_log(SYNCD_LOG_INFO, "api: watcher of %s told to resync at %lld",
                  w->coll, (long long)seq);
    watcher_end(w, signal == SYNCD_NODE_RESYNC ? "resync" : "shutdown", data);
}

static void watcher_gone(syncd_http_req_t *req)
{
    watcher_t *w = syncd_http_data(req);

    watcher_end(w, NULL, NULL);
}

/* Starts w's stream and its node watch. */
static void watcher_go(watcher_t *w)
{
    syncd_api_t *api = w->api;
    syncd_error_t err;
    int rc;

    syncd_error_clear(&err);
    syncd_http_set_data(w->req, w);
    syncd_http_on_gone(w->req, watcher_gone);
    syncd_http_stream_start(w->req, 200, "text/event-stream",
                            "Cache-Control: no-cache\r\n"
                            "X-Accel-Buffering: no\r\n");
    w->streaming = 1;
    syncd_metrics_watchers(api->opts.metrics, 1);
    w->last = w->since;
    rc = syncd_node_watch(api->opts.node, &w->watch, w->coll, w->prefix,
                          w->since, watch_signal, w, &err);
    syncd_node_release(api->opts.node, w->coll, 0);
    w->held = 0;
    if (rc != 0) {
        json_t *o = json_pack("{s:s, s:s}", "error", syncd_strerror(rc),
                              "message", err.message);
        char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;

        json_decref(o);
        w->watch = NULL;
        watcher_end(w, "error", text != NULL ? text : "{}");
        free(text);
        return;
    }
    uv_timer_start(&w->bookmark, bookmark_due,
                   (uint64_t)api->opts.cfg->bookmark_interval_ms,
                   (uint64_t)api->opts.cfg->bookmark_interval_ms);
}

/* Answers a watch that cannot start (and frees w). */
static void watcher_refuse(watcher_t *w, int status, const char *code,
                           const char *message)
{
    syncd_http_respond_error(w->req, status, code, message);
    if (w->held)
        syncd_node_release(w->api->opts.node, w->coll, 0);
    w->ended = 1;
    watcher_close(w);
}

static void watch_probe_read(int status, json_t *events, void *payload)
{
    watcher_t *w = payload;
    syncd_api_t *api = w->api;

    if (syncd_http_gone(w->req) || api->quiescing)
        watcher_refuse(w, 503, "unavailable", "shutting down");
    else if (status == SYNCD_ENOTFOUND ||
             (status == 0 && json_array_size(events) == 0))
        watcher_refuse(w, 410, "gone",
                       "since is older than the replay log holds");
    else if (status != 0)
        watcher_refuse(w, 503, syncd_strerror(status),
                       "cannot read the replay log");
    else
        watcher_go(w);
    json_decref(events);
    inflight_end(api);
}

static void watch_seq_read(int status, int64_t seq, void *payload)
{
    watcher_t *w = payload;
    syncd_api_t *api = w->api;
    int rc;

    if (status != 0) {
        watcher_refuse(w, 503, syncd_strerror(status),
                       "cannot read the collection's seq");
    } else if (w->since < 0 || w->since >= seq) {
        if (syncd_http_gone(w->req))
            watcher_refuse(w, 503, "unavailable", "client gone");
        else
            watcher_go(w);
    } else {
        /* The log must still hold since+1 for the stream to start. */
        rc = syncd_bus_replay(api->opts.bus, w->coll, w->since, w->since + 1, 1,
                              watch_probe_read, w);
        if (rc == 0)
            return;
        watcher_refuse(w, 503, syncd_strerror(rc),
                       "cannot read the replay log");
    }
    inflight_end(api);
}

static void serve_watch(syncd_api_t *api, syncd_http_req_t *req, char *coll)
{
    watcher_t *w;
    char *since = NULL;
    const char *last_id = syncd_http_header(req, "Last-Event-ID");
    int rc;

    syncd_http_set_route(req, "watch");
    if (strcmp(syncd_http_method(req), "GET") != 0) {
        free(coll);
        method_not_allowed(req, "GET");
        return;
    }
    w = calloc(1, sizeof(*w));
    if (w == NULL) {
        free(coll);
        syncd_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    w->api = api;
    w->req = req;
    w->coll = coll;
    w->since = -1;
    uv_timer_init(api->opts.loop, &w->bookmark);
    w->bookmark.data = w;
    if (query_or_400(&w->prefix, req, "prefix") < 0 ||
        query_or_400(&since, req, "since") < 0)
        goto fail;
    if (last_id != NULL && *last_id != '\0') {
        free(since);
        since = strdup(last_id);
    }
    if (since != NULL && parse_count(&w->since, since) < 0) {
        syncd_http_respond_error(req, 400, "bad_request",
                                 "since and Last-Event-ID must be a seq "
                                 "(a non-negative integer)");
        goto fail;
    }
    free(since);
    if (watch_slot_take(api, req, w->coll) < 0)
        goto refused;
    w->slot = 1;
    if (hold_collection(api, req, w->coll) < 0)
        goto refused;
    w->held = 1;
    inflight_begin(api);
    rc = syncd_bus_seq(api->opts.bus, w->coll, watch_seq_read, w);
    if (rc != 0)
        watch_seq_read(rc, 0, w);
    return;
fail:
    free(since);
refused:
    w->ended = 1;
    watcher_close(w);
}

/* ---- Other routes ---------------------------------------------------- */

static void serve_health(syncd_api_t *api, syncd_http_req_t *req)
{
    json_t *o;
    char *text;

    o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:O*}", "status", "ok",
                  "node", api->opts.node_id, "version", SYNCD_VERSION, "store",
                  syncd_store_kind(api->opts.store), "bus",
                  syncd_bus_kind(api->opts.bus), "bus_connected",
                  syncd_bus_connected(api->opts.bus), "token_required",
                  api->opts.cfg != NULL && api->opts.cfg->token != NULL,
                  "start_check", (json_t *)api->opts.start_check);
    text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    if (text == NULL)
        syncd_http_respond_error(req, 500, "out_of_memory", "out of memory");
    else
        respond_json(req, 200, 0, text);
    free(text);
    json_decref(o);
}

static void serve_metrics(syncd_api_t *api, syncd_http_req_t *req)
{
    syncd_metrics_view_t v;
    syncd_buf_t b = {0};
    char *text;
    size_t len;

    memset(&v, 0, sizeof(v));
    syncd_store_stats(api->opts.store, &v.store);
    syncd_bus_stats(api->opts.bus, &v.bus);
    syncd_node_stats(api->opts.node, &v.node);
    v.bus_connected = syncd_bus_connected(api->opts.bus);
    v.connections = api->server ? syncd_http_connections(api->server) : 0;
    text = syncd_metrics_render(api->opts.metrics, &v, &len);
    if (text == NULL || syncd_buf_append(&b, text, len) != 0 ||
        syncd_members_metrics(api->opts.members, &b) != 0) {
        syncd_http_respond_error(req, 500, "out_of_memory", "out of memory");
    } else {
        syncd_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8",
                           "", b.data, b.len);
    }
    free(text);
    syncd_buf_free(&b);
}

int syncd_api_cors(const char *origin, void *data)
{
    syncd_api_t *api = data;

    return syncd_members_knows_url(api->opts.members, origin);
}

/* Answers a CORS preflight: for an origin of the cluster, the methods and
 * request headers the API takes (Access-Control-Allow-Origin itself comes
 * from syncd_api_cors()); 403 for any other origin. */
static void serve_preflight(syncd_api_t *api, syncd_http_req_t *req)
{
    const char *origin = syncd_http_header(req, "Origin");

    syncd_http_set_route(req, "preflight");
    if (origin == NULL || !syncd_api_cors(origin, api)) {
        syncd_http_respond_error(req, 403, "forbidden",
                                 "this origin is no node of the cluster");
        return;
    }
    syncd_http_respond(
        req, 204, NULL,
        "Access-Control-Allow-Methods: GET, PUT, PATCH, DELETE, POST\r\n"
        "Access-Control-Allow-Headers: Authorization, Content-Type, "
        "If-Match, If-None-Match, Idempotency-Key, Last-Event-ID\r\n"
        "Access-Control-Max-Age: 600\r\n",
        "", 0);
}

/* Decodes and validates a collection or id path segment into *out;
 * answers 400 naming the problem and returns -1 when it is bad. */
static int path_segment(char **out, syncd_http_req_t *req, const char *s,
                        size_t n, int is_id)
{
    syncd_error_t err;
    int rc = url_decode(out, s, n);

    if (rc == SYNCD_ENOMEM) {
        syncd_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return -1;
    }
    if (rc != 0) {
        syncd_http_respond_error(req, 400, "bad_request",
                                 is_id ? "bad percent-encoding in the id"
                                       : "bad percent-encoding in the "
                                         "collection");
        return -1;
    }
    syncd_error_clear(&err);
    rc = is_id ? syncd_validate_id(*out, &err)
               : syncd_validate_collection(*out, &err);
    if (rc == 0)
        return 0;
    syncd_http_respond_error(
        req, 400, is_id ? "invalid_id" : "invalid_collection", err.message);
    free(*out);
    *out = NULL;
    return -1;
}

void syncd_api_handle(syncd_http_req_t *req, void *data)
{
    static const char prefix[] = "/v1/collections/";
    syncd_api_t *api = data;
    const char *path = syncd_http_path(req);
    const char *rest, *slash, *msg;
    char *coll = NULL, *id = NULL;

    if (api->quiescing) {
        syncd_http_respond_error(req, 503, "unavailable", "shutting down");
        return;
    }
    if (strcmp(syncd_http_method(req), "OPTIONS") == 0) {
        serve_preflight(api, req);
        return;
    }
    if (syncd_ui_path(path)) {
        syncd_http_set_route(req, "ui");
        syncd_ui_serve(req);
        return;
    }
    if (strcmp(path, "/v1/health") == 0 || strcmp(path, "/metrics") == 0) {
        syncd_http_set_route(req, path[1] == 'v' ? "health" : "metrics");
        if (strcmp(syncd_http_method(req), "GET") != 0)
            method_not_allowed(req, "GET");
        else if (path[1] == 'v')
            serve_health(api, req);
        else
            serve_metrics(api, req);
        return;
    }
    if (strcmp(path, "/v1/nodes") == 0) {
        syncd_http_set_route(req, "nodes");
        if (strcmp(syncd_http_method(req), "GET") != 0)
            method_not_allowed(req, "GET");
        else
            syncd_members_serve(api->opts.members, req);
        return;
    }
    if (strcmp(path, "/v1/collections") == 0) {
        serve_collections(api, req);
        return;
    }
    if (strcmp(path, "/v1/admin/checkpoint") == 0) {
        serve_checkpoint(api, req);
        return;
    }
    if (strncmp(path, prefix, sizeof(prefix) - 1) != 0)
        goto not_found;
    rest = path + sizeof(prefix) - 1;
    slash = strchr(rest, '/');
    if (slash == NULL)
        goto not_found;
    if (path_segment(&coll, req, rest, (size_t)(slash - rest), 0) < 0)
        return;
    rest = slash + 1;
    msg = syncd_atstart_refused(api->opts.start_check, coll);
    if (msg != NULL && strcmp(rest, "verify") != 0) {
        syncd_http_set_route(req, "refused");
        syncd_http_respond_error(req, 503, "collection_corrupt", msg);
        free(coll);
        return;
    }
    if (strcmp(rest, "docs") == 0) {
        serve_list(api, req, coll);
    } else if (strncmp(rest, "docs/", 5) == 0) {
        size_t n = strlen(rest + 5);
        int sub = history_subroute(rest + 5, &n);

        if (path_segment(&id, req, rest + 5, n, 1) < 0) {
            free(coll);
            return;
        }
        if (sub == 3)
            serve_hashes(api, req, coll, id);
        else if (sub != 0)
            serve_history(api, req, coll, id, sub == 2);
        else
            serve_doc(api, req, coll, id);
    } else if (strcmp(rest, "watch") == 0) {
        serve_watch(api, req, coll);
    } else if (strcmp(rest, "digest") == 0) {
        serve_digest(api, req, coll);
    } else if (strcmp(rest, "verify") == 0) {
        serve_verify(api, req, coll);
    } else if (strcmp(rest, "export") == 0) {
        serve_export(api, req, coll);
    } else {
        free(coll);
        goto not_found;
    }
    return;
not_found:
    syncd_http_set_route(req, "unknown");
    syncd_http_respond_error(req, 404, "not_found", "no such route");
}
