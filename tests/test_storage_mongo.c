/* test_storage_mongo.c - the MongoDB store of record against a real server.
 *
 * Drives the backend of storage/mongo.c directly through storage/internal.h
 * against FerretDB started on a free port (or $SYNCD_TEST_MONGO_URI): the
 * body encoding (nasty keys, every kind of number) both through the backend
 * and as raw BSON read with mongo-c-driver, the compare-and-swap under
 * contention, listings, purge, and a server that dies and comes back.
 * Through the store API with several stores as nodes: FerretDB's claims
 * (a dead writer's claim taken over well within its lease, a holder kept
 * alive by a liveness record waited for until the record stands still, a
 * writer stalled past its lease by a test hook, a strict write behind a
 * live claim), and a history of concurrent creates, deletes and strict
 * writes checked for linearizability.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <mongoc/mongoc.h>

#include "assert_json.h"
#include "servers.h"
#include "storage/internal.h"

#define DB "syncd_test_mongo"
#define TIMEOUT_MS 5000
#define FAULT_TIMEOUT_MS 1000
#define LEASE_TIMEOUT_MS                                                       \
    2000 /* backend timeout of the claim tests: 4 s lease */
#define WRITERS 8
#define DEAD_HOLDER                                                            \
    "00000000deadbeef.1"                 /* a holder with no liveness record   \
                                          */
#define LIVE_HOLDER "00000000feedface.1" /* one a test keeps alive */
#define HOLDER_DEAD_MS                                                         \
    2000 /* a holder's record standing still this long: dead (DEAD_MS) */
#define WRITES_PER_WRITER 40

typedef struct fixture {
    syncd_test_server_t srv;
    syncd_backend_t *be;
} fixture_t;

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};

    nanosleep(&ts, NULL);
}

/* A document to write; body is borrowed. */
static syncd_doc_t make_doc(const char *coll, const char *id, int64_t version,
                            json_t *body)
{
    syncd_doc_t doc;

    memset(&doc, 0, sizeof(doc));
    doc.coll = (char *)coll;
    doc.id = (char *)id;
    doc.version = version;
    doc.body = body;
    doc.deleted = body == NULL;
    doc.mtime_ms = now_ms();
    snprintf(doc.origin, sizeof(doc.origin), "node-test");
    if (body)
        snprintf(doc.hash, sizeof(doc.hash), "%064lld", (long long)version);
    return doc;
}

/* Writes coll/id at version over expected; returns the backend's code. */
static int write_body(syncd_backend_t *be, const char *coll, const char *id,
                      int64_t version, int64_t expected, json_t *body)
{
    syncd_doc_t doc = make_doc(coll, id, version, body);

    return be->ops->cas(be, &doc, expected, NULL);
}

/* An object with every key MongoDB restricts or our escaping touches. */
static json_t *nasty_keys(void)
{
    json_t *o = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i}",
                          "a.b", 1, "$x", 2, "", 3, "x$y", 4, "%", 5, "%25", 6,
                          "%2E", 7, ".", 8, "$", 9, "~%~", 10);

    json_object_setn_new(o, "a\0b", 3, json_integer(11));
    json_object_setn_new(o, "\0", 1, json_integer(12));
    return o;
}

static json_t *nasty_body(void)
{
    json_t *body = nasty_keys();

    json_object_set_new(body, "nested", nasty_keys());
    json_object_set_new(body, "list",
                        json_pack("[o, [o], {s:[]}, {}]", nasty_keys(),
                                  nasty_keys(), "$in.side"));
    json_object_set_new(
        body, "numbers",
        json_pack("{s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f}",
                  "max", (json_int_t)INT64_MAX, "min", (json_int_t)INT64_MIN,
                  "zero", (json_int_t)0, "2^53+1", (json_int_t)9007199254740993,
                  "negzero", -0.0, "poszero", 0.0, "one", 1.0, "tenth", 0.1,
                  "huge", 1e308, "tiniest", 5e-324, "neg", -1.5));
    json_object_set_new(body, "negzeros",
                        json_pack("[f, {s:f}]", -0.0, "z", -0.0));
    json_object_set_new(
        body, "strings",
        json_pack("[s, s, s]", "", "caf\xc3\xa9 \xf0\x9f\x98\x80", "%2E.$"));
    json_array_append_new(json_object_get(body, "strings"),
                          json_stringn("nul\0inside", 10));
    json_object_set_new(body, "tag lookalike", json_pack("{s:b}", "%-0", 1));
    json_object_set_new(body, "array tag lookalike",
                        json_pack("{s:[i]}", "%a", 1));
    json_object_set_new(
        body, "matrix",
        json_pack("[[i,i], [[i, [f]]], [], {s:[[]]}]", 1, 2, 3, -0.0, "a.b"));
    json_object_set_new(body, "misc", json_pack("[b, b, n]", 1, 0));
    return body;
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    syncd_error_t err;

    syncd_error_clear(&err);
    *state = f;
    if (!f || syncd_test_mongo_start(&f->srv) != 0)
        return -1;
    if (syncd_backend_mongo_open(&f->be, f->srv.uri, DB, TIMEOUT_MS, &err) !=
        0) {
        fprintf(stderr, "open %s: %s\n", f->srv.uri, err.message);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;

    if (!f)
        return 0;
    if (f->be)
        f->be->ops->close(f->be);
    syncd_test_server_destroy(&f->srv);
    free(f);
    return 0;
}

static void
test_mongo_cas__nasty_keys_and_numbers_round_trip_exactly(void **state)
{
    fixture_t *f = *state;
    syncd_backend_t *be = f->be;
    json_t *body = nasty_body();
    syncd_doc_t *got = NULL;
    syncd_error_t err;

    syncd_error_clear(&err);
    assert_int_equal(write_body(be, "nasty", "doc-1", 1, 0, body), 0);
    assert_int_equal(be->ops->get(be, &got, "nasty", "doc-1", &err), 0);
    assert_json_exact(got->body, body);
    assert_true(signbit(json_real_value(
        json_object_get(json_object_get(got->body, "numbers"), "negzero"))));
    assert_true(json_is_integer(
        json_object_get(json_object_get(got->body, "numbers"), "zero")));
    assert_true(json_is_real(
        json_object_get(json_object_get(got->body, "numbers"), "one")));
    assert_int_equal(got->version, 1);
    assert_string_equal(got->origin, "node-test");
    assert_false(got->deleted);
    syncd_doc_free(got);
    json_decref(body);
}

static void test_mongo_record__is_stored_in_the_documented_layout(void **state)
{
    fixture_t *f = *state;
    json_t *body = json_pack("{s:i, s:i, s:i, s:f, s:{s:i}}", "a.b", 1, "$x", 2,
                             "", 3, "r", -0.0, "n", "%", 4);
    mongoc_client_t *client = mongoc_client_new(f->srv.uri);
    mongoc_collection_t *c = mongoc_client_get_collection(client, DB, "raw");
    bson_t *filter = BCON_NEW("_id", BCON_UTF8("raw/1"));
    mongoc_cursor_t *cur;
    const bson_t *rec;
    bson_iter_t it, data;

    assert_int_equal(write_body(f->be, "raw", "raw/1", 7, 0, body), 0);
    cur = mongoc_collection_find_with_opts(c, filter, NULL, NULL);
    assert_true(mongoc_cursor_next(cur, &rec));
    assert_true(bson_iter_init_find(&it, rec, "_id"));
    assert_int_equal(bson_iter_type(&it), BSON_TYPE_UTF8);
    assert_string_equal(bson_iter_utf8(&it, NULL), "raw/1");
    assert_true(bson_iter_init_find(&it, rec, "v"));
    assert_int_equal(bson_iter_type(&it), BSON_TYPE_INT64);
    assert_int_equal(bson_iter_int64(&it), 7);
    assert_true(bson_iter_init_find(&it, rec, "h"));
    assert_int_equal(bson_iter_type(&it), BSON_TYPE_UTF8);
    assert_true(bson_iter_init_find(&it, rec, "mt"));
    assert_int_equal(bson_iter_type(&it), BSON_TYPE_DATE_TIME);
    assert_true(bson_iter_init_find(&it, rec, "by"));
    assert_string_equal(bson_iter_utf8(&it, NULL), "node-test");
    assert_true(bson_iter_init_find(&it, rec, "del"));
    assert_int_equal(bson_iter_type(&it), BSON_TYPE_BOOL);
    assert_false(bson_iter_bool(&it));
    assert_true(bson_iter_init_find(&it, rec, "data"));
    assert_int_equal(bson_iter_type(&it), BSON_TYPE_DOCUMENT);
    assert_true(bson_iter_recurse(&it, &data));
    assert_true(bson_iter_find(&data, "a%2Eb"));
    assert_int_equal(bson_iter_type(&data), BSON_TYPE_INT64);
    assert_true(bson_iter_recurse(&it, &data));
    assert_true(bson_iter_find(&data, "%24x"));
    assert_true(bson_iter_recurse(&it, &data));
    assert_true(bson_iter_find(&data, "%"));
    assert_true(bson_iter_recurse(&it, &data));
    assert_true(bson_iter_find_descendant(&data, "r.%-0", &data));
    assert_true(bson_iter_recurse(&it, &data));
    assert_true(bson_iter_find_descendant(&data, "n.%25", &data));
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    mongoc_collection_destroy(c);
    mongoc_client_destroy(client);
    json_decref(body);
}

static void test_mongo_cas__inserting_twice_fails_with_ECONFLICT(void **state)
{
    fixture_t *f = *state;
    json_t *body = json_pack("{s:i}", "n", 1);
    syncd_doc_t doc = make_doc("cas", "twice", 1, body);
    syncd_error_t err;

    syncd_error_clear(&err);
    assert_int_equal(f->be->ops->cas(f->be, &doc, 0, NULL), 0);
    assert_int_equal(f->be->ops->cas(f->be, &doc, 0, &err), SYNCD_ECONFLICT);
    assert_int_equal(err.code, SYNCD_ECONFLICT);
    json_decref(body);
}

static void
test_mongo_cas__stale_expected_fails_with_ECONFLICT_and_writes_nothing(
    void **state)
{
    fixture_t *f = *state;
    syncd_backend_t *be = f->be;
    json_t *v1 = json_pack("{s:i}", "n", 1);
    json_t *v2 = json_pack("{s:i}", "n", 2);
    json_t *stale = json_pack("{s:s}", "n", "stale");
    syncd_doc_t *got = NULL;

    assert_int_equal(write_body(be, "cas", "stale", 1, 0, v1), 0);
    assert_int_equal(write_body(be, "cas", "stale", 2, 1, v2), 0);
    assert_int_equal(write_body(be, "cas", "stale", 2, 1, stale),
                     SYNCD_ECONFLICT);
    assert_int_equal(write_body(be, "cas", "stale", 9, 8, stale),
                     SYNCD_ECONFLICT);
    assert_int_equal(write_body(be, "cas", "absent", 2, 1, stale),
                     SYNCD_ECONFLICT);
    assert_int_equal(be->ops->get(be, &got, "cas", "stale", NULL), 0);
    assert_int_equal(got->version, 2);
    assert_json_exact(got->body, v2);
    syncd_doc_free(got);
    assert_int_equal(be->ops->get(be, &got, "cas", "absent", NULL),
                     SYNCD_ENOTFOUND);
    json_decref(v1);
    json_decref(v2);
    json_decref(stale);
}

typedef struct writer {
    syncd_backend_t *be;
    int wins;
    int failures;
} writer_t;

/* Increments the counter of cas/counter WRITES_PER_WRITER times by
 * read + compare-and-swap, retrying on conflict. */
static void *increment(void *arg)
{
    writer_t *w = arg;

    for (int i = 0; i < WRITES_PER_WRITER;) {
        syncd_doc_t *cur = NULL;
        int rc = w->be->ops->get(w->be, &cur, "cas", "counter", NULL);

        if (rc < 0) {
            w->failures++;
            return NULL;
        }
        json_int_t n = json_integer_value(json_object_get(cur->body, "n"));
        json_t *body = json_pack("{s:I}", "n", n + 1);
        rc = write_body(w->be, "cas", "counter", cur->version + 1, cur->version,
                        body);
        json_decref(body);
        syncd_doc_free(cur);
        if (rc == 0) {
            w->wins++;
            i++;
        } else if (rc != SYNCD_ECONFLICT) {
            w->failures++;
            return NULL;
        }
    }
    return NULL;
}

static void test_mongo_cas__concurrent_writers_lose_no_update(void **state)
{
    fixture_t *f = *state;
    json_t *zero = json_pack("{s:i}", "n", 0);
    pthread_t threads[WRITERS];
    writer_t writers[WRITERS];
    syncd_doc_t *got = NULL;

    assert_int_equal(write_body(f->be, "cas", "counter", 1, 0, zero), 0);
    for (int i = 0; i < WRITERS; i++) {
        writers[i] = (writer_t){.be = f->be};
        assert_int_equal(
            pthread_create(&threads[i], NULL, increment, &writers[i]), 0);
    }
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(writers[i].failures, 0);
        assert_int_equal(writers[i].wins, WRITES_PER_WRITER);
    }
    assert_int_equal(f->be->ops->get(f->be, &got, "cas", "counter", NULL), 0);
    assert_int_equal(json_integer_value(json_object_get(got->body, "n")),
                     WRITERS * WRITES_PER_WRITER);
    assert_int_equal(got->version, 1 + WRITERS * WRITES_PER_WRITER);
    syncd_doc_free(got);
    json_decref(zero);
}

#define RACE_IDS 40

typedef struct racer {
    syncd_backend_t *be;
    int won[RACE_IDS];
} racer_t;

/* Tries to create race/race-0 .. race-<RACE_IDS - 1>, noting which it
 * created. */
static void *race_inserts(void *arg)
{
    racer_t *r = arg;
    json_t *body = json_pack("{s:i}", "n", 1);

    for (int i = 0; i < RACE_IDS; i++) {
        char id[16];

        snprintf(id, sizeof(id), "race-%d", i);
        r->won[i] = write_body(r->be, "race", id, 1, 0, body) == 0;
    }
    json_decref(body);
    return NULL;
}

static void
test_mongo_cas__concurrent_inserts_of_an_id_have_one_winner(void **state)
{
    fixture_t *f = *state;
    pthread_t threads[WRITERS];
    racer_t racers[WRITERS];

    for (int i = 0; i < WRITERS; i++) {
        racers[i] = (racer_t){.be = f->be};
        assert_int_equal(
            pthread_create(&threads[i], NULL, race_inserts, &racers[i]), 0);
    }
    for (int i = 0; i < WRITERS; i++)
        pthread_join(threads[i], NULL);
    for (int id = 0; id < RACE_IDS; id++) {
        int winners = 0;

        for (int i = 0; i < WRITERS; i++)
            winners += racers[i].won[id];
        assert_int_equal(winners, 1);
    }
}

/* Plants a claim on coll/id at version, owned by owner and timestamped
 * age_ms ago, as a FerretDB-mode writer that died between claim and
 * replace would leave it. */
static void plant_claim(const fixture_t *f, const char *coll, const char *id,
                        int64_t version, const char *owner, int64_t age_ms)
{
    mongoc_client_t *client = mongoc_client_new(f->srv.uri);
    char name[128], key[128];
    mongoc_collection_t *c;
    bson_t *claim;
    bson_error_t e;

    snprintf(name, sizeof(name), "_syncd_claims.%s", coll);
    snprintf(key, sizeof(key), "%s\x1f%020lld", id, (long long)version);
    c = mongoc_client_get_collection(client, DB, name);
    claim = BCON_NEW("_id", BCON_UTF8(key), "o", BCON_UTF8(owner), "t",
                     BCON_DATE_TIME(now_ms() - age_ms));
    assert_true(mongoc_collection_insert_one(c, claim, NULL, NULL, &e));
    bson_destroy(claim);
    mongoc_collection_destroy(c);
    mongoc_client_destroy(client);
}

/* Sets the liveness record of holder proc to counter n and wall time t,
 * as its process does while it lives. */
static void bump_liveness(mongoc_client_t *client, const char *proc, int64_t n,
                          int64_t t)
{
    mongoc_collection_t *c =
        mongoc_client_get_collection(client, DB, "_syncd_procs");
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(proc));
    bson_t *update =
        BCON_NEW("$set", "{", "n", BCON_INT64(n), "t", BCON_DATE_TIME(t), "}");
    bson_t *opts = BCON_NEW("upsert", BCON_BOOL(true));
    bson_error_t e;

    assert_true(
        mongoc_collection_update_one(c, filter, update, opts, NULL, &e));
    bson_destroy(opts);
    bson_destroy(update);
    bson_destroy(filter);
    mongoc_collection_destroy(c);
}

/* Returns the owner of the claim on coll/id at version ("" when none) in
 * owner. */
static void claim_owner_of(const fixture_t *f, const char *coll, const char *id,
                           int64_t version, char *owner, size_t size)
{
    mongoc_client_t *client = mongoc_client_new(f->srv.uri);
    char name[128], key[128];
    mongoc_collection_t *c;
    mongoc_cursor_t *cur;
    const bson_t *found;
    bson_t *filter;
    bson_iter_t it;

    snprintf(name, sizeof(name), "_syncd_claims.%s", coll);
    snprintf(key, sizeof(key), "%s\x1f%020lld", id, (long long)version);
    c = mongoc_client_get_collection(client, DB, name);
    filter = BCON_NEW("_id", BCON_UTF8(key));
    cur = mongoc_collection_find_with_opts(c, filter, NULL, NULL);
    owner[0] = '\0';
    if (mongoc_cursor_next(cur, &found) &&
        bson_iter_init_find(&it, found, "o") && BSON_ITER_HOLDS_UTF8(&it))
        snprintf(owner, size, "%s", bson_iter_utf8(&it, NULL));
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    mongoc_collection_destroy(c);
    mongoc_client_destroy(client);
}

/* Returns the number of claims on coll. */
static int64_t count_claims(const fixture_t *f, const char *coll)
{
    mongoc_client_t *client = mongoc_client_new(f->srv.uri);
    char name[128];
    mongoc_collection_t *c;
    bson_t filter = BSON_INITIALIZER;
    bson_error_t e;
    int64_t n;

    snprintf(name, sizeof(name), "_syncd_claims.%s", coll);
    c = mongoc_client_get_collection(client, DB, name);
    n = mongoc_collection_count_documents(c, &filter, NULL, NULL, NULL, &e);
    assert_true(n >= 0);
    mongoc_collection_destroy(c);
    mongoc_client_destroy(client);
    return n;
}

static int server_is_ferretdb(const fixture_t *f)
{
    mongoc_client_t *client = mongoc_client_new(f->srv.uri);
    bson_t *cmd = BCON_NEW("buildInfo", BCON_INT32(1));
    bson_t reply;
    bson_iter_t it;
    int ferret;

    assert_true(
        mongoc_client_command_simple(client, "admin", cmd, NULL, &reply, NULL));
    ferret = bson_iter_init_find(&it, &reply, "ferretdbVersion");
    bson_destroy(&reply);
    bson_destroy(cmd);
    mongoc_client_destroy(client);
    return ferret;
}

/* A store (with its cache dir) on the fixture's server, as one node. */
typedef struct node {
    syncd_store_t *store;
    char dir[256];
} node_t;

/* Opens n as node node_id with the given backend timeout (the claim
 * lease), with the transactional outbox when outbox is 1. */
static void node_open_with(node_t *n, const fixture_t *f, const char *node_id,
                           int64_t timeout_ms, int outbox)
{
    syncd_store_options_t o;
    syncd_error_t err;

    syncd_error_clear(&err);
    assert_int_equal(syncd_test_tmpdir(n->dir, sizeof(n->dir), "mongo-node"),
                     0);
    syncd_store_options_init(&o);
    o.mongo_uri = f->srv.uri;
    o.database = DB;
    o.data_dir = n->dir;
    o.node_id = node_id;
    o.retry_delay_ms = 1;
    o.backend_timeout_ms = timeout_ms;
    o.outbox = outbox;
    assert_int_equal(syncd_store_open(&n->store, &o, &err), 0);
}

/* Opens n as node node_id with the given backend timeout (the claim
 * lease). */
static void node_open(node_t *n, const fixture_t *f, const char *node_id,
                      int64_t timeout_ms)
{
    node_open_with(n, f, node_id, timeout_ms, 0);
}

static void node_close(node_t *n)
{
    syncd_store_close(n->store);
    syncd_test_rmtree(n->dir);
}

static void
test_mongo_claims__a_dead_writers_claim_does_not_fail_a_strict_write(
    void **state)
{
    fixture_t *f = *state;
    json_t *v1 = json_pack("{s:s}", "who", "creator");
    json_t *mine = json_pack("{s:s}", "who", "me");
    syncd_change_t *change = NULL;
    syncd_doc_t *got = NULL;
    syncd_error_t err;
    node_t n;

    int64_t start;

    syncd_error_clear(&err);
    node_open(&n, f, "node-a", TIMEOUT_MS); /* a lease of 10 s */
    assert_int_equal(
        syncd_store_create(n.store, &change, "claims", "crashed", v1, NULL), 0);
    syncd_change_free(change);
    /* Fresh by the clock, but its writer's process is gone (it has no
     * liveness record): nobody ends it. */
    plant_claim(f, "claims", "crashed", 1, DEAD_HOLDER "-7", 0);
    start = now_ms();
    assert_int_equal(
        syncd_store_put(n.store, &change, "claims", "crashed", mine, 1, &err),
        0);
    /* A bound for liveness, well within the lease, not a speed claim. */
    assert_true(now_ms() - start < 3000);
    assert_int_equal(change->base, 1);
    assert_int_equal(change->doc->version, 2);
    syncd_change_free(change);
    assert_int_equal(
        syncd_store_refetch(n.store, &got, "claims", "crashed", NULL), 0);
    assert_int_equal(got->version, 2);
    assert_json_exact(got->body, mine);
    syncd_doc_free(got);
    node_close(&n);
    json_decref(v1);
    json_decref(mine);
}

/* Pauses the first writer that reaches it, between its claim and its
 * replace, until released. */
typedef struct stall {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int armed, paused, released;
    int64_t released_at; /* wall ms when released */
} stall_t;

static void stall_hook(const char *coll, const char *id, int64_t expected,
                       void *data)
{
    stall_t *s = data;

    (void)coll;
    (void)id;
    (void)expected;
    pthread_mutex_lock(&s->lock);
    if (s->armed) {
        s->armed = 0;
        s->paused = 1;
        pthread_cond_broadcast(&s->cond);
        while (!s->released)
            pthread_cond_wait(&s->cond, &s->lock);
    }
    pthread_mutex_unlock(&s->lock);
}

static void stall_init(stall_t *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->armed = 1;
    syncd_backend_mongo_set_claim_hook(stall_hook, s);
}

static void stall_wait_paused(stall_t *s)
{
    pthread_mutex_lock(&s->lock);
    while (!s->paused)
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
}

static void stall_release(stall_t *s)
{
    pthread_mutex_lock(&s->lock);
    s->released = 1;
    s->released_at = now_ms();
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void stall_destroy(stall_t *s)
{
    syncd_backend_mongo_set_claim_hook(NULL, NULL);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
}

static int add_one(json_t *body, void *arg, syncd_error_t *err)
{
    json_int_t n = json_integer_value(json_object_get(body, "n"));

    (void)arg;
    (void)err;
    return json_object_set_new(body, "n", json_integer(n + 1));
}

/* One store call run on a thread of its own. */
typedef struct call {
    syncd_store_t *store;
    const char *coll, *id;
    json_t *body;     /* put this when set, else run add_one */
    int64_t if_match; /* SYNCD_ANY_VERSION or a strict write */
    int rc;
    syncd_change_t *change;
    int64_t done_at; /* wall ms when it returned */
} call_t;

static void *run_call(void *arg)
{
    call_t *c = arg;

    c->rc = c->body ? syncd_store_put(c->store, &c->change, c->coll, c->id,
                                      c->body, c->if_match, NULL)
                    : syncd_store_edit(c->store, &c->change, c->coll, c->id,
                                       add_one, NULL, c->if_match, NULL);
    c->done_at = now_ms();
    return NULL;
}

static void
test_mongo_claims__a_writer_stalled_past_the_lease_overwrites_nothing(
    void **state)
{
    fixture_t *f = *state;
    json_t *zero = NULL;
    call_t stalled = {
        .coll = "claims", .id = "stalled", .if_match = SYNCD_ANY_VERSION};
    syncd_change_t *change = NULL;
    syncd_doc_t *got = NULL;
    node_t a, b;
    pthread_t t;
    stall_t s;

    if (!server_is_ferretdb(f))
        skip(); /* claims are FerretDB's; MongoDB needs none */
    zero = json_pack("{s:i}", "n", 0);
    node_open(&a, f, "node-a", LEASE_TIMEOUT_MS);
    node_open(&b, f, "node-b", LEASE_TIMEOUT_MS);
    assert_int_equal(
        syncd_store_create(a.store, &change, "claims", "stalled", zero, NULL),
        0);
    syncd_change_free(change);
    stall_init(&s);
    stalled.store = a.store;
    assert_int_equal(pthread_create(&t, NULL, run_call, &stalled), 0);
    stall_wait_paused(&s);

    /* Node b takes the claim over once its lease is out, and commits. */
    assert_int_equal(syncd_store_edit(b.store, &change, "claims", "stalled",
                                      add_one, NULL, SYNCD_ANY_VERSION, NULL),
                     0);
    assert_int_equal(change->doc->version, 2);
    syncd_change_free(change);

    /* The stalled writer's replace, sent now, must not land: it conflicts
     * and its edit loop applies it again on top of version 2. */
    stall_release(&s);
    pthread_join(t, NULL);
    assert_int_equal(stalled.rc, 0);
    assert_int_equal(stalled.change->base, 2);
    assert_int_equal(stalled.change->doc->version, 3);
    assert_true(stalled.change->attempts >= 2);
    syncd_change_free(stalled.change);
    assert_int_equal(
        syncd_store_refetch(b.store, &got, "claims", "stalled", NULL), 0);
    assert_int_equal(got->version, 3);
    assert_int_equal(json_integer_value(json_object_get(got->body, "n")), 2);
    syncd_doc_free(got);
    stall_destroy(&s);
    node_close(&a);
    node_close(&b);
    json_decref(zero);
}

/* Returns the value of coll/id's counter n in the store of record. */
static json_int_t stored_n(node_t *n, const char *coll, const char *id,
                           int64_t *version)
{
    syncd_doc_t *got = NULL;
    json_int_t v;

    assert_int_equal(syncd_store_refetch(n->store, &got, coll, id, NULL), 0);
    v = json_integer_value(json_object_get(got->body, "n"));
    *version = got->version;
    syncd_doc_free(got);
    return v;
}

static void
test_mongo_store__an_edit_from_a_stale_cache_entry_loses_no_update(void **state)
{
    fixture_t *f = *state;
    json_t *zero = json_pack("{s:i}", "n", 0);
    syncd_change_t *change = NULL;
    int64_t version = 0;
    node_t a, b;

    node_open(&a, f, "node-a", TIMEOUT_MS);
    node_open(&b, f, "node-b", TIMEOUT_MS);
    assert_int_equal(
        syncd_store_create(a.store, &change, "known", "stale", zero, NULL), 0);
    syncd_change_free(change);
    /* Node a's cache holds version 1 while node b moves the record on. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(syncd_store_edit(b.store, &change, "known", "stale",
                                          add_one, NULL, SYNCD_ANY_VERSION,
                                          NULL),
                         0);
        syncd_change_free(change);
    }
    assert_int_equal(syncd_store_edit(a.store, &change, "known", "stale",
                                      add_one, NULL, SYNCD_ANY_VERSION, NULL),
                     0);
    assert_int_equal(change->base, 4);
    assert_int_equal(change->doc->version, 5);
    assert_int_equal(
        json_integer_value(json_object_get(change->doc->body, "n")), 4);
    syncd_change_free(change);
    /* Then a's cache is current again, and the next edit builds on it. */
    assert_int_equal(syncd_store_edit(a.store, &change, "known", "stale",
                                      add_one, NULL, SYNCD_ANY_VERSION, NULL),
                     0);
    assert_int_equal(change->doc->version, 6);
    syncd_change_free(change);
    assert_int_equal(stored_n(&b, "known", "stale", &version), 5);
    assert_int_equal(version, 6);
    node_close(&a);
    node_close(&b);
    json_decref(zero);
}

static void
test_mongo_store__a_cache_entry_at_the_version_of_another_body_writes_nothing_over_it(
    void **state)
{
    fixture_t *f = *state;
    json_t *stored = json_pack("{s:i}", "n", 0);
    syncd_doc_t planted = make_doc("known", "other", 1, NULL);
    syncd_change_t *change = NULL;
    int64_t version = 0;
    size_t len = 0;
    char *canon;
    node_t a, b;

    node_open(&a, f, "node-a", TIMEOUT_MS);
    node_open(&b, f, "node-b", TIMEOUT_MS);
    assert_int_equal(
        syncd_store_create(b.store, &change, "known", "other", stored, NULL),
        0);
    syncd_change_free(change);
    /* Node a holds version 1 of an earlier life of the record (purged and
     * created again since): the same version, another body. */
    planted.body = json_pack("{s:i}", "n", 100);
    planted.deleted = 0;
    canon = syncd_json_canonical(planted.body, &len);
    syncd_sha256_hex(planted.hash, canon, len);
    free(canon);
    assert_int_equal(syncd_store_cache_put(a.store, &planted, NULL), 1);
    assert_int_equal(syncd_store_edit(a.store, &change, "known", "other",
                                      add_one, NULL, SYNCD_ANY_VERSION, NULL),
                     0);
    assert_int_equal(change->doc->version, 2);
    assert_int_equal(
        json_integer_value(json_object_get(change->doc->body, "n")), 1);
    syncd_change_free(change);
    assert_int_equal(stored_n(&b, "known", "other", &version), 1);
    assert_int_equal(version, 2);
    json_decref(planted.body);
    node_close(&a);
    node_close(&b);
    json_decref(stored);
}

/* Returns 1 when the markers of ob (borrowed) are of versions from..to. */
static int markers_are(const json_t *ob, int64_t from, int64_t to)
{
    if ((int64_t)json_array_size(ob) != to - from + 1)
        return 0;
    for (int64_t v = from; v <= to; v++) {
        if (json_integer_value(json_object_get(
                json_array_get(ob, (size_t)(v - from)), "v")) != v)
            return 0;
    }
    return 1;
}

static void
test_mongo_store__a_write_from_the_cache_carries_markers_and_keys_forward(
    void **state)
{
    fixture_t *f = *state;
    json_t *v1 = json_pack("{s:i}", "n", 0);
    json_t *v2 = json_pack("{s:i}", "n", 10);
    syncd_write_options_t wo;
    syncd_change_t *change = NULL;
    syncd_doc_t *got = NULL;
    node_t a;

    node_open_with(&a, f, "node-a", TIMEOUT_MS, 1);
    syncd_write_options_init(&wo);
    wo.idempotency_key = "key-1";
    assert_int_equal(
        syncd_store_create_ex(a.store, &change, "known", "meta", v1, &wo, NULL),
        0);
    syncd_change_free(change);
    wo.idempotency_key = "key-2";
    assert_int_equal(
        syncd_store_put_ex(a.store, &change, "known", "meta", v2, &wo, NULL),
        0);
    assert_int_equal(change->doc->version, 2);
    assert_true(markers_are(change->pending, 1, 1));
    syncd_change_free(change);
    assert_int_equal(syncd_store_edit(a.store, &change, "known", "meta",
                                      add_one, NULL, SYNCD_ANY_VERSION, NULL),
                     0);
    assert_int_equal(change->doc->version, 3);
    assert_true(markers_are(change->pending, 1, 2));
    syncd_change_free(change);

    /* Both keys still replay their writes, on the record at version 3. */
    assert_int_equal(
        syncd_store_put_ex(a.store, &change, "known", "meta", v2, &wo, NULL),
        0);
    assert_int_equal(change->op, SYNCD_CHANGE_NONE);
    assert_true(change->replayed);
    assert_int_equal(change->replayed_version, 2);
    syncd_change_free(change);
    wo.idempotency_key = "key-1";
    assert_int_equal(
        syncd_store_create_ex(a.store, &change, "known", "meta", v1, &wo, NULL),
        0);
    assert_true(change->replayed);
    assert_int_equal(change->replayed_version, 1);
    syncd_change_free(change);

    /* Acked markers stay gone; the next write reports only what is left. */
    assert_int_equal(syncd_store_outbox_ack(a.store, "known", "meta", 2, NULL),
                     0);
    assert_int_equal(syncd_store_edit(a.store, &change, "known", "meta",
                                      add_one, NULL, SYNCD_ANY_VERSION, NULL),
                     0);
    assert_true(markers_are(change->pending, 3, 3));
    syncd_change_free(change);
    assert_int_equal(syncd_store_refetch(a.store, &got, "known", "meta", NULL),
                     0);
    assert_int_equal(got->version, 4);
    assert_int_equal(json_integer_value(json_object_get(got->body, "n")), 12);
    assert_true(markers_are(got->outbox, 3, 4));
    assert_int_equal(json_array_size(got->ikeys), 2);
    syncd_doc_free(got);
    node_close(&a);
    json_decref(v1);
    json_decref(v2);
}

static void
test_mongo_store__a_full_outbox_refuses_a_write_from_the_cache_with_EBACKEND(
    void **state)
{
    fixture_t *f = *state;
    json_t *zero = json_pack("{s:i}", "n", 0);
    syncd_change_t *change = NULL;
    syncd_error_t err;
    int64_t version = 0;
    node_t a;

    syncd_error_clear(&err);
    node_open_with(&a, f, "node-a", TIMEOUT_MS, 1);
    assert_int_equal(
        syncd_store_create(a.store, &change, "known", "full", zero, NULL), 0);
    syncd_change_free(change);
    for (int i = 1; i < SYNCD_MAX_OUTBOX_MARKERS; i++) {
        assert_int_equal(syncd_store_edit(a.store, &change, "known", "full",
                                          add_one, NULL, SYNCD_ANY_VERSION,
                                          NULL),
                         0);
        syncd_change_free(change);
    }
    assert_int_equal(syncd_store_edit(a.store, &change, "known", "full",
                                      add_one, NULL, SYNCD_ANY_VERSION, &err),
                     SYNCD_EBACKEND);
    assert_null(change);
    assert_int_equal(stored_n(&a, "known", "full", &version),
                     SYNCD_MAX_OUTBOX_MARKERS - 1);
    assert_int_equal(version, SYNCD_MAX_OUTBOX_MARKERS);
    /* Once the publisher caught up, writes go on. */
    assert_int_equal(syncd_store_outbox_ack(a.store, "known", "full",
                                            SYNCD_MAX_OUTBOX_MARKERS, NULL),
                     0);
    assert_int_equal(syncd_store_edit(a.store, &change, "known", "full",
                                      add_one, NULL, SYNCD_ANY_VERSION, NULL),
                     0);
    assert_int_equal(change->doc->version, SYNCD_MAX_OUTBOX_MARKERS + 1);
    syncd_change_free(change);
    node_close(&a);
    json_decref(zero);
}

static void test_mongo_claims__a_strict_write_fails_only_once_the_version_moved(
    void **state)
{
    fixture_t *f = *state;
    json_t *v1 = NULL;
    json_t *mine = NULL;
    call_t holder = {
        .coll = "claims", .id = "held", .if_match = SYNCD_ANY_VERSION};
    call_t strict = {.coll = "claims", .id = "held", .if_match = 1};
    syncd_change_t *change = NULL;
    syncd_doc_t *got = NULL;
    pthread_t th, ts;
    node_t a, b;
    stall_t s;

    if (!server_is_ferretdb(f))
        skip(); /* claims are FerretDB's; MongoDB needs none */
    v1 = json_pack("{s:i}", "n", 0);
    mine = json_pack("{s:s}", "who", "strict");
    node_open(&a, f, "node-a", LEASE_TIMEOUT_MS);
    node_open(&b, f, "node-b", LEASE_TIMEOUT_MS);
    assert_int_equal(
        syncd_store_create(a.store, &change, "claims", "held", v1, NULL), 0);
    syncd_change_free(change);
    stall_init(&s);
    holder.store = a.store;
    strict.store = b.store;
    strict.body = mine;
    assert_int_equal(pthread_create(&th, NULL, run_call, &holder), 0);
    stall_wait_paused(&s);

    /* A live writer holds the claim on version 1 while the strict write
     * comes: it must wait for it rather than answer at once. */
    assert_int_equal(pthread_create(&ts, NULL, run_call, &strict), 0);
    sleep_ms(200);
    stall_release(&s);
    pthread_join(th, NULL);
    pthread_join(ts, NULL);
    assert_int_equal(holder.rc, 0);
    assert_int_equal(holder.change->doc->version, 2);
    assert_int_equal(strict.rc, SYNCD_EPRECONDITION);
    assert_true(strict.done_at >= s.released_at);
    syncd_change_free(holder.change);
    assert_int_equal(syncd_store_refetch(a.store, &got, "claims", "held", NULL),
                     0);
    assert_int_equal(got->version, 2);
    assert_int_equal(json_integer_value(json_object_get(got->body, "n")), 1);
    syncd_doc_free(got);
    stall_destroy(&s);
    node_close(&a);
    node_close(&b);
    json_decref(v1);
    json_decref(mine);
}

/* A process that holds a claim: its liveness record advances every
 * 100 ms until stop is set. */
typedef struct fake_holder {
    const char *uri;
    pthread_mutex_t lock;
    int stop;
    int64_t stopped_at; /* wall ms of the last bump */
} fake_holder_t;

static void *fake_holder_live(void *arg)
{
    fake_holder_t *h = arg;
    mongoc_client_t *client = mongoc_client_new(h->uri);
    int64_t n = 0;
    int stop = 0;

    while (!stop) {
        bump_liveness(client, LIVE_HOLDER, ++n, now_ms());
        sleep_ms(100);
        pthread_mutex_lock(&h->lock);
        stop = h->stop;
        if (stop)
            h->stopped_at = now_ms();
        pthread_mutex_unlock(&h->lock);
    }
    mongoc_client_destroy(client);
    return NULL;
}

static void
test_mongo_claims__a_live_holder_is_waited_for_and_taken_over_once_dead(
    void **state)
{
    fixture_t *f = *state;
    json_t *v1 = NULL;
    json_t *mine = NULL;
    call_t strict = {.coll = "claims", .id = "alive", .if_match = 1};
    fake_holder_t h = {.uri = f->srv.uri};
    syncd_change_t *change = NULL;
    syncd_doc_t *got = NULL;
    char owner[64];
    pthread_t th, ts;
    node_t n;

    if (!server_is_ferretdb(f))
        skip(); /* claims are FerretDB's; MongoDB needs none */
    v1 = json_pack("{s:i}", "n", 0);
    mine = json_pack("{s:s}", "who", "strict");
    pthread_mutex_init(&h.lock, NULL);
    node_open(&n, f, "node-a", TIMEOUT_MS); /* a lease of 10 s */
    assert_int_equal(
        syncd_store_create(n.store, &change, "claims", "alive", v1, NULL), 0);
    syncd_change_free(change);
    assert_int_equal(pthread_create(&th, NULL, fake_holder_live, &h), 0);
    sleep_ms(200);
    plant_claim(f, "claims", "alive", 1, LIVE_HOLDER "-1", 0);
    strict.store = n.store;
    strict.body = mine;
    assert_int_equal(pthread_create(&ts, NULL, run_call, &strict), 0);

    /* Its holder's record advances: the strict write waits and takes
     * nothing over, for longer than a dead holder is given. */
    sleep_ms(HOLDER_DEAD_MS + 500);
    claim_owner_of(f, "claims", "alive", 1, owner, sizeof(owner));
    assert_string_equal(owner, LIVE_HOLDER "-1");
    assert_int_equal(
        syncd_store_refetch(n.store, &got, "claims", "alive", NULL), 0);
    assert_int_equal(got->version, 1);
    syncd_doc_free(got);

    /* The holder dies with its claim: its record stands still, and the
     * strict write takes the claim over after HOLDER_DEAD_MS of that. */
    pthread_mutex_lock(&h.lock);
    h.stop = 1;
    pthread_mutex_unlock(&h.lock);
    pthread_join(th, NULL);
    pthread_join(ts, NULL);
    assert_int_equal(strict.rc, 0);
    assert_int_equal(strict.change->doc->version, 2);
    assert_true(strict.done_at - h.stopped_at >= HOLDER_DEAD_MS - 200);
    assert_true(strict.done_at - h.stopped_at < HOLDER_DEAD_MS + 3000);
    syncd_change_free(strict.change);
    assert_int_equal(
        syncd_store_refetch(n.store, &got, "claims", "alive", NULL), 0);
    assert_int_equal(got->version, 2);
    assert_json_exact(got->body, mine);
    syncd_doc_free(got);
    node_close(&n);
    pthread_mutex_destroy(&h.lock);
    json_decref(v1);
    json_decref(mine);
}

/* Holds a backend's liveness back on the cue of a writer kept out by a
 * claim: its first read of the holder's record stops the bumps (once none
 * is on its way) until freeze_thaw, and its second comes HOLDER_DEAD_MS
 * later, as if the calls before it were slow. So that writer sees the
 * record stand still for longer than a dead holder is given, after it
 * proved its own liveness, as under heavy load. */
typedef struct freeze {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int reads;  /* reads of a holder's record so far */
    int frozen; /* 1 while the bumps are held back */
    int parked; /* 1 while the liveness thread waits in the hook */
} freeze_t;

static void freeze_hook(int site, void *data)
{
    freeze_t *z = data;

    pthread_mutex_lock(&z->lock);
    if (site == SYNCD_MONGO_HOOK_BUMP) {
        z->parked = 1;
        pthread_cond_broadcast(&z->cond);
        while (z->frozen)
            pthread_cond_wait(&z->cond, &z->lock);
        z->parked = 0;
    } else if (++z->reads == 1) {
        z->frozen = 1;
        while (!z->parked)
            pthread_cond_wait(&z->cond, &z->lock);
    } else if (z->reads == 2) {
        pthread_mutex_unlock(&z->lock);
        sleep_ms(HOLDER_DEAD_MS + 200);
        pthread_mutex_lock(&z->lock);
    }
    pthread_mutex_unlock(&z->lock);
}

static void freeze_thaw(freeze_t *z)
{
    pthread_mutex_lock(&z->lock);
    z->frozen = 0;
    pthread_cond_broadcast(&z->cond);
    pthread_mutex_unlock(&z->lock);
}

static void
test_mongo_claims__a_writer_never_takes_over_a_claim_its_own_process_writes_under(
    void **state)
{
    fixture_t *f = *state;
    json_t *zero = NULL;
    json_t *mine = NULL;
    json_t *theirs = NULL;
    call_t holder = {
        .coll = "claims", .id = "own", .if_match = SYNCD_ANY_VERSION};
    call_t waiter = {
        .coll = "claims", .id = "own", .if_match = SYNCD_ANY_VERSION};
    freeze_t z = {.reads = 0};
    syncd_change_t *change = NULL;
    syncd_doc_t *got = NULL;
    pthread_t th, tw;
    node_t a;
    stall_t s;

    if (!server_is_ferretdb(f))
        skip(); /* claims are FerretDB's; MongoDB needs none */
    zero = json_pack("{s:i}", "n", 0);
    mine = json_pack("{s:s}", "who", "holder");
    theirs = json_pack("{s:s}", "who", "waiter");
    pthread_mutex_init(&z.lock, NULL);
    pthread_cond_init(&z.cond, NULL);
    syncd_backend_mongo_set_liveness_hook(freeze_hook, &z);
    node_open(&a, f, "node-a", LEASE_TIMEOUT_MS);
    assert_int_equal(
        syncd_store_create(a.store, &change, "claims", "own", zero, NULL), 0);
    syncd_change_free(change);
    stall_init(&s);
    holder.store = a.store;
    holder.body = mine;
    waiter.store = a.store;
    waiter.body = theirs;
    assert_int_equal(pthread_create(&th, NULL, run_call, &holder), 0);
    stall_wait_paused(&s);

    /* The holder has passed its fence and its replace is on its way while
     * a writer of the same process comes and sees the process's record
     * stand still past HOLDER_DEAD_MS: it must wait for the holder, never
     * take its claim over and write version 2 under it. */
    assert_int_equal(pthread_create(&tw, NULL, run_call, &waiter), 0);
    sleep_ms(HOLDER_DEAD_MS + 1000);
    freeze_thaw(&z);
    sleep_ms(1500);
    stall_release(&s);
    pthread_join(th, NULL);
    pthread_join(tw, NULL);
    assert_int_equal(holder.rc, 0);
    assert_int_equal(waiter.rc, 0);
    assert_int_equal(holder.change->doc->version, 2);
    assert_json_exact(holder.change->doc->body, mine);
    assert_int_equal(waiter.change->base, 2);
    assert_int_equal(waiter.change->doc->version, 3);
    assert_true(waiter.done_at >= s.released_at);
    syncd_change_free(holder.change);
    syncd_change_free(waiter.change);
    assert_int_equal(syncd_store_refetch(a.store, &got, "claims", "own", NULL),
                     0);
    assert_int_equal(got->version, 3);
    assert_json_exact(got->body, theirs);
    syncd_doc_free(got);
    stall_destroy(&s);
    node_close(&a);
    syncd_backend_mongo_set_liveness_hook(NULL, NULL);
    pthread_cond_destroy(&z.cond);
    pthread_mutex_destroy(&z.lock);
    json_decref(zero);
    json_decref(mine);
    json_decref(theirs);
}

/* Pauses each of the first two writers that reach it, between its claim
 * and its replace, until the test releases that one. */
typedef struct pair_stall {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int arrived;     /* writers paused so far, at most 2 */
    int released[2]; /* by order of arrival */
} pair_stall_t;

static void pair_stall_hook(const char *coll, const char *id, int64_t expected,
                            void *data)
{
    pair_stall_t *s = data;

    (void)coll;
    (void)id;
    (void)expected;
    pthread_mutex_lock(&s->lock);
    if (s->arrived < 2) {
        int me = s->arrived++;

        pthread_cond_broadcast(&s->cond);
        while (!s->released[me])
            pthread_cond_wait(&s->cond, &s->lock);
    }
    pthread_mutex_unlock(&s->lock);
}

static void pair_stall_wait(pair_stall_t *s, int arrived)
{
    pthread_mutex_lock(&s->lock);
    while (s->arrived < arrived)
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
}

static void pair_stall_release(pair_stall_t *s, int which)
{
    pthread_mutex_lock(&s->lock);
    s->released[which] = 1;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void
test_mongo_claims__a_holder_whose_claim_was_taken_over_never_answers_success(
    void **state)
{
    fixture_t *f = *state;
    json_t *zero = NULL;
    json_t *mine = NULL;
    json_t *theirs = NULL;
    call_t holder = {
        .coll = "claims", .id = "taken", .if_match = SYNCD_ANY_VERSION};
    call_t taker = {
        .coll = "claims", .id = "taken", .if_match = SYNCD_ANY_VERSION};
    pair_stall_t s = {.arrived = 0};
    syncd_change_t *change = NULL;
    syncd_doc_t *got = NULL;
    pthread_t th, tt;
    node_t a, b;

    if (!server_is_ferretdb(f))
        skip(); /* claims are FerretDB's; MongoDB needs none */
    zero = json_pack("{s:i}", "n", 0);
    mine = json_pack("{s:s}", "who", "holder");
    theirs = json_pack("{s:s}", "who", "taker");
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.cond, NULL);
    node_open(&a, f, "node-a", LEASE_TIMEOUT_MS);
    node_open(&b, f, "node-b", LEASE_TIMEOUT_MS);
    assert_int_equal(
        syncd_store_create(a.store, &change, "claims", "taken", zero, NULL), 0);
    syncd_change_free(change);
    syncd_backend_mongo_set_claim_hook(pair_stall_hook, &s);
    holder.store = a.store;
    holder.body = mine;
    taker.store = b.store;
    taker.body = theirs;
    assert_int_equal(pthread_create(&th, NULL, run_call, &holder), 0);
    pair_stall_wait(&s, 1);

    /* Node b takes the claim over once its lease is out and is about to
     * replace version 1, while the holder's replace of version 1, sent in
     * time, is still on its way: they may meet inside FerretDB, so the
     * holder, whose claim is gone, must not answer success. */
    assert_int_equal(pthread_create(&tt, NULL, run_call, &taker), 0);
    pair_stall_wait(&s, 2);
    pair_stall_release(&s, 0);
    pthread_join(th, NULL);
    pair_stall_release(&s, 1);
    pthread_join(tt, NULL);
    syncd_backend_mongo_set_claim_hook(NULL, NULL);
    assert_int_equal(holder.rc, SYNCD_EBACKEND);
    assert_null(holder.change);

    /* Here the holder's replace landed first, so the taker's, fenced on
     * version 1, conflicts and its edit loop writes version 3. */
    assert_int_equal(taker.rc, 0);
    assert_int_equal(taker.change->base, 2);
    assert_int_equal(taker.change->doc->version, 3);
    syncd_change_free(taker.change);
    assert_int_equal(
        syncd_store_refetch(b.store, &got, "claims", "taken", NULL), 0);
    assert_int_equal(got->version, 3);
    assert_json_exact(got->body, theirs);
    syncd_doc_free(got);
    node_close(&a);
    node_close(&b);
    pthread_cond_destroy(&s.cond);
    pthread_mutex_destroy(&s.lock);
    json_decref(zero);
    json_decref(mine);
    json_decref(theirs);
}

static void test_mongo_purge__drops_claims_older_than_the_lease(void **state)
{
    fixture_t *f = *state;
    size_t purged = 0;

    if (!server_is_ferretdb(f))
        skip(); /* claims are FerretDB's; MongoDB needs none */
    plant_claim(f, "stale", "old", 4, "gone-process", 60000);
    plant_claim(f, "stale", "older", 9, "gone-process", 3600000);
    plant_claim(f, "stale", "live", 2, "busy-process", 0);
    assert_int_equal(count_claims(f, "stale"), 3);
    assert_int_equal(f->be->ops->purge(f->be, "stale", now_ms() - 86400000, 0,
                                       &purged, NULL, NULL),
                     0);
    assert_int_equal(purged, 0);
    assert_int_equal(count_claims(f, "stale"), 1);
}

/* Returns the number of liveness records, of holder proc only when it is
 * not NULL. */
static int64_t count_procs(const fixture_t *f, const char *proc)
{
    mongoc_client_t *client = mongoc_client_new(f->srv.uri);
    mongoc_collection_t *c =
        mongoc_client_get_collection(client, DB, "_syncd_procs");
    bson_t filter = BSON_INITIALIZER;
    bson_error_t e;
    int64_t n;

    if (proc)
        BSON_APPEND_UTF8(&filter, "_id", proc);
    n = mongoc_collection_count_documents(c, &filter, NULL, NULL, NULL, &e);
    assert_true(n >= 0);
    bson_destroy(&filter);
    mongoc_collection_destroy(c);
    mongoc_client_destroy(client);
    return n;
}

static void count_claimed_replace(const char *coll, const char *id,
                                  int64_t expected, void *data)
{
    (void)coll;
    (void)id;
    (void)expected;
    (*(int *)data)++;
}

/* Which compare-and-swap runs shows on the server: on FerretDB, whose
 * filtered update is a query then an update, every replace is sent under a
 * claim and the backend keeps a liveness record; on a server that applies a
 * filtered update atomically (mongo-java-server, MongoDB) the single
 * filtered replace runs, and no claim or liveness record is ever written. */
static void
test_mongo_cas__runs_under_claims_only_where_a_filtered_update_is_not_atomic(
    void **state)
{
    fixture_t *f = *state;
    json_t *body = json_object();
    int claimed = 0;

    syncd_backend_mongo_set_claim_hook(count_claimed_replace, &claimed);
    for (int64_t v = 1; v <= 20; v++) {
        json_object_set_new(body, "n", json_integer(v));
        assert_int_equal(write_body(f->be, "path", "doc", v, v - 1, body), 0);
    }
    syncd_backend_mongo_set_claim_hook(NULL, NULL);
    if (server_is_ferretdb(f)) {
        assert_int_equal(claimed, 19);
        assert_true(count_procs(f, NULL) >= 1);
    } else {
        assert_int_equal(claimed, 0);
        assert_int_equal(count_claims(f, "path"), 0);
        assert_int_equal(count_procs(f, NULL), 0);
    }
    json_decref(body);
}

static void
test_mongo_purge__drops_liveness_records_of_long_gone_processes(void **state)
{
    fixture_t *f = *state;
    mongoc_client_t *client;
    int64_t before;
    size_t purged = 0;

    if (!server_is_ferretdb(f))
        skip(); /* liveness is for claims, which are FerretDB's */
    before = count_procs(f, NULL); /* the fixture's backend's, at least */
    assert_true(before >= 1);
    client = mongoc_client_new(f->srv.uri);
    /* The fixture's lease is 10 s: 100 s is ten leases. */
    bump_liveness(client, "00000000000000a1.1", 5, now_ms() - 3600000);
    bump_liveness(client, "00000000000000a2.1", 5, now_ms() - 120000);
    bump_liveness(client, "00000000000000a3.1", 5, now_ms() - 30000);
    mongoc_client_destroy(client);
    assert_int_equal(count_procs(f, NULL), before + 3);
    assert_int_equal(f->be->ops->purge(f->be, "stale", now_ms() - 86400000, 0,
                                       &purged, NULL, NULL),
                     0);
    assert_int_equal(count_procs(f, "00000000000000a1.1"), 0);
    assert_int_equal(count_procs(f, "00000000000000a2.1"), 0);
    assert_int_equal(count_procs(f, "00000000000000a3.1"), 1);
    assert_int_equal(count_procs(f, NULL), before + 1); /* live ones stay */
}

static const char *list_ids[] = {
    "b",
    "a",
    "a/b",
    "a.b",
    "ab",
    "a0",
    "A",
    "caf\xc3\xa9",
    "\xf0\x9f\x98\x80",
    "a\xf4\x8f\xbf\xbfz",
    "aa",
    "ac",
    "gone",
};

static void assert_ids(const json_t *list, const char *expect)
{
    char got[256] = "";
    size_t i;
    json_t *e;

    json_array_foreach (list, i, e) {
        strcat(got, json_string_value(json_object_get(e, "id")));
        strcat(got, " ");
    }
    assert_string_equal(got, expect);
}

static json_t *list(fixture_t *f, const char *prefix, const char *after,
                    size_t limit, int with_tombstones)
{
    json_t *out = NULL;
    syncd_error_t err;

    syncd_error_clear(&err);
    assert_int_equal(f->be->ops->list(f->be, &out, "list", prefix, after, limit,
                                      with_tombstones, &err),
                     0);
    return out;
}

static void
test_mongo_list__pages_by_prefix_and_after_in_byte_order(void **state)
{
    fixture_t *f = *state;
    json_t *body = json_pack("{s:i}", "n", 1);
    json_t *out;

    for (size_t i = 0; i < sizeof(list_ids) / sizeof(*list_ids); i++)
        assert_int_equal(write_body(f->be, "list", list_ids[i], 1, 0, body), 0);
    assert_int_equal(write_body(f->be, "list", "gone", 2, 1, NULL), 0);

    out = list(f, NULL, NULL, 0, 0);
    assert_ids(out, "A a a.b a/b a0 aa ab ac a\xf4\x8f\xbf\xbfz b "
                    "caf\xc3\xa9 \xf0\x9f\x98\x80 ");
    assert_int_equal(
        json_integer_value(json_object_get(json_array_get(out, 0), "v")), 1);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(out, 0), "h")),
        "0000000000000000000000000000000000000000000000000000000000000001");
    assert_null(json_object_get(json_array_get(out, 0), "del"));
    json_decref(out);

    out = list(f, "a", NULL, 3, 0);
    assert_ids(out, "a a.b a/b ");
    json_decref(out);
    out = list(f, "a", "a/b", 3, 0);
    assert_ids(out, "a0 aa ab ");
    json_decref(out);
    out = list(f, "a", "ab", 0, 0);
    assert_ids(out, "ac a\xf4\x8f\xbf\xbfz ");
    json_decref(out);
    out = list(f, "a\xf4\x8f\xbf\xbf", NULL, 0, 0);
    assert_ids(out, "a\xf4\x8f\xbf\xbfz ");
    json_decref(out);
    out = list(f, "caf", NULL, 0, 0);
    assert_ids(out, "caf\xc3\xa9 ");
    json_decref(out);

    out = list(f, "g", NULL, 0, 1);
    assert_ids(out, "gone ");
    assert_true(json_is_true(json_object_get(json_array_get(out, 0), "del")));
    assert_true(
        json_integer_value(json_object_get(json_array_get(out, 0), "mt")) > 0);
    json_decref(out);
    out = list(f, "g", NULL, 0, 0);
    assert_ids(out, "");
    json_decref(out);
    json_decref(body);
}

static void test_mongo_purge__removes_only_old_tombstones(void **state)
{
    fixture_t *f = *state;
    syncd_backend_t *be = f->be;
    json_t *body = json_pack("{s:i}", "n", 1);
    syncd_doc_t old = make_doc("purge", "old", 3, NULL);
    syncd_doc_t *got = NULL;
    size_t purged = 0;

    assert_int_equal(write_body(be, "purge", "old", 1, 0, body), 0);
    assert_int_equal(write_body(be, "purge", "old", 2, 1, body), 0);
    old.mtime_ms = now_ms() - 60000;
    assert_int_equal(be->ops->cas(be, &old, 2, NULL), 0);
    assert_int_equal(write_body(be, "purge", "fresh", 1, 0, body), 0);
    assert_int_equal(write_body(be, "purge", "fresh", 2, 1, NULL), 0);
    assert_int_equal(write_body(be, "purge", "live", 1, 0, body), 0);

    assert_int_equal(
        be->ops->purge(be, "purge", now_ms() - 30000, 0, &purged, NULL, NULL),
        0);
    assert_int_equal(purged, 1);
    assert_int_equal(be->ops->get(be, &got, "purge", "old", NULL),
                     SYNCD_ENOTFOUND);
    assert_int_equal(be->ops->get(be, &got, "purge", "fresh", NULL), 0);
    assert_true(got->deleted);
    assert_null(got->body);
    syncd_doc_free(got);
    assert_int_equal(be->ops->get(be, &got, "purge", "live", NULL), 0);
    syncd_doc_free(got);

    /* A purged id starts over, and its old versions are free again. */
    assert_int_equal(write_body(be, "purge", "old", 1, 0, body), 0);
    assert_int_equal(write_body(be, "purge", "old", 2, 1, body), 0);
    assert_int_equal(write_body(be, "purge", "old", 3, 2, body), 0);
    json_decref(body);
}

static void test_mongo_collections__lists_syncd_collections_sorted(void **state)
{
    fixture_t *f = *state;
    json_t *body = json_pack("{s:i}", "n", 1);
    json_t *out = NULL;
    size_t i;
    json_t *name;
    const char *prev = "";

    assert_int_equal(write_body(f->be, "zeta", "1", 1, 0, body), 0);
    assert_int_equal(write_body(f->be, "alpha.beta", "1", 1, 0, body), 0);
    assert_int_equal(write_body(f->be, "zeta", "1", 2, 1, body), 0);
    assert_int_equal(f->be->ops->collections(f->be, &out, NULL), 0);
    json_array_foreach (out, i, name) {
        assert_true(strcmp(prev, json_string_value(name)) < 0);
        assert_int_equal(json_string_value(name)[0] == '_', 0);
        prev = json_string_value(name);
    }
    assert_true(json_array_size(out) >= 2);
    json_decref(out);
    json_decref(body);
}

static void
test_mongo_export_page__lists_live_documents_with_bodies_in_id_order(
    void **state)
{
    fixture_t *f = *state;
    syncd_backend_t *be = f->be;
    json_t *body = nasty_body();
    json_t *page = NULL;

    assert_int_equal(write_body(be, "export", "b", 1, 0, body), 0);
    assert_int_equal(write_body(be, "export", "a", 1, 0, body), 0);
    assert_int_equal(write_body(be, "export", "a", 2, 1, body), 0);
    assert_int_equal(write_body(be, "export", "c", 1, 0, body), 0);
    assert_int_equal(write_body(be, "export", "c", 2, 1, NULL), 0);
    assert_int_equal(write_body(be, "export", "d/e", 1, 0, body), 0);

    assert_int_equal(be->ops->export_page(be, &page, "export", NULL, 2, NULL),
                     0);
    assert_int_equal(json_array_size(page), 2);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(page, 0), "id")), "a");
    assert_int_equal(
        json_integer_value(json_object_get(json_array_get(page, 0), "v")), 2);
    assert_json_exact(json_object_get(json_array_get(page, 0), "data"), body);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(page, 1), "id")), "b");
    json_decref(page);

    /* The tombstone of c is left out. */
    assert_int_equal(be->ops->export_page(be, &page, "export", "b", 10, NULL),
                     0);
    assert_int_equal(json_array_size(page), 1);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(page, 0), "id")),
        "d/e");
    json_decref(page);
    json_decref(body);
}

static void
test_mongo_open__unreachable_server_fails_with_EBACKEND(void **state)
{
    char uri[64];
    syncd_backend_t *be = NULL;
    syncd_error_t err;

    (void)state;
    syncd_error_clear(&err);
    snprintf(uri, sizeof(uri), "mongodb://127.0.0.1:%d/",
             syncd_test_free_port());
    assert_int_equal(
        syncd_backend_mongo_open(&be, uri, DB, FAULT_TIMEOUT_MS, &err),
        SYNCD_EBACKEND);
    assert_null(be);
    assert_string_equal(err.backend, "mongodb");
    assert_true(strlen(err.message) > 0);
}

static void
test_mongo_open__concerns_given_in_the_uri_are_accepted(void **state)
{
    fixture_t *f = *state;
    const char *opts[] = {
        "w=1&journal=false&readConcernLevel=local",
        "w=majority&wtimeoutMS=2000&readConcernLevel=majority", "journal=true"};
    json_t *body = json_pack("{s:i}", "n", 1);

    for (size_t i = 0; i < sizeof(opts) / sizeof(*opts); i++) {
        char uri[512], id[16];
        syncd_backend_t *be = NULL;
        syncd_doc_t *got = NULL;
        syncd_error_t err;

        syncd_error_clear(&err);
        snprintf(uri, sizeof(uri), "%s?%s", f->srv.uri, opts[i]);
        snprintf(id, sizeof(id), "doc-%zu", i);
        assert_int_equal(
            syncd_backend_mongo_open(&be, uri, DB, TIMEOUT_MS, &err), 0);
        assert_int_equal(write_body(be, "concern", id, 1, 0, body), 0);
        assert_int_equal(write_body(be, "concern", id, 2, 1, body), 0);
        assert_int_equal(be->ops->get(be, &got, "concern", id, &err), 0);
        assert_int_equal(got->version, 2);
        syncd_doc_free(got);
        be->ops->close(be);
    }
    json_decref(body);
}

/* One call of each kind; returns the first failure code, or 0. */
static int call_each(syncd_backend_t *be, int64_t version, syncd_error_t *err)
{
    json_t *body = json_pack("{s:I}", "n", (json_int_t)version);
    syncd_doc_t *got = NULL;
    json_t *out = NULL;
    int rc = write_body(be, "fault", "doc", version, version - 1, body);

    if (rc == 0)
        rc = be->ops->get(be, &got, "fault", "doc", err);
    if (rc == 0)
        rc = be->ops->list(be, &out, "fault", NULL, NULL, 0, 0, err);
    syncd_doc_free(got);
    json_decref(out);
    json_decref(body);
    return rc;
}

static void
test_mongo_fault__a_dead_server_fails_calls_with_EBACKEND_then_recovers(
    void **state)
{
    fixture_t *f = *state;
    syncd_backend_t *be = NULL;
    syncd_error_t err;
    int64_t version = 1;

    if (f->srv.external)
        skip(); /* an outside server cannot be stopped by the test */
    syncd_error_clear(&err);
    assert_int_equal(
        syncd_backend_mongo_open(&be, f->srv.uri, DB, FAULT_TIMEOUT_MS, &err),
        0);
    for (; version <= 5; version++)
        assert_int_equal(call_each(be, version, &err), 0);

    assert_int_equal(syncd_test_server_stop(&f->srv), 0);
    for (int i = 0; i < 3; i++) {
        int64_t start = now_ms();
        syncd_doc_t *got = NULL;
        json_t *body = json_pack("{s:i}", "n", -1);

        syncd_error_clear(&err);
        assert_int_equal(be->ops->get(be, &got, "fault", "doc", &err),
                         SYNCD_EBACKEND);
        assert_string_equal(err.backend, "mongodb");
        assert_true(strlen(err.message) > 0);
        syncd_error_clear(&err);
        assert_int_equal(
            write_body(be, "fault", "doc", version, version - 1, body),
            SYNCD_EBACKEND);
        json_decref(body);
        /* Sanity bound only: the calls returned rather than hung. */
        assert_true(now_ms() - start < 60000);
        print_message("dead server: get + cas failed in %lld ms\n",
                      (long long)(now_ms() - start));
    }

    assert_int_equal(syncd_test_server_restart(&f->srv), 0);
    /* mongo-java-server keeps its data in memory: it restarts empty. */
    if (strcmp(f->srv.kind, "mongo-java") == 0)
        version = 1;
    /* A bounded wait until reads are served again: the server accepts
     * connections before it answers its first commands in time (a JVM's
     * first ones are slow). */
    for (int64_t until = now_ms() + 30000;;) {
        syncd_doc_t *got = NULL;
        int rc = be->ops->get(be, &got, "fault", "doc", NULL);

        syncd_doc_free(got);
        if (rc == 0 || rc == SYNCD_ENOTFOUND)
            break;
        assert_true(now_ms() < until);
    }
    for (; version <= 10; version++)
        assert_int_equal(call_each(be, version, &err), 0);
    be->ops->close(be);
}

/* ---- Linearizability of creates, deletes and strict writes ----------------
 */

#define HISTORY_NODES 3
#define HISTORY_CLIENTS 6
#define HISTORY_KEYS 3
#define HISTORY_OPS 60
#define HISTORY_MAX (HISTORY_CLIENTS * HISTORY_OPS)

/* One acknowledged change. */
typedef struct acked {
    int key;
    int64_t version, base, if_match;
    syncd_change_op_t op;
    json_int_t token; /* the body's "w"; -1 for a tombstone */
} acked_t;

typedef struct history {
    node_t nodes[HISTORY_NODES];
    pthread_mutex_t lock;
    acked_t acked[HISTORY_MAX];
    size_t n;
    int failures; /* unexpected outcomes, printed as they happen */
} history_t;

typedef struct client {
    history_t *h;
    int index;
} client_t;

static const char *history_ids[HISTORY_KEYS] = {"k0", "k1", "k2"};

static void record_change(history_t *h, int key, const syncd_change_t *c,
                          int64_t if_match, json_int_t token)
{
    pthread_mutex_lock(&h->lock);
    h->acked[h->n++] = (acked_t){
        key,      c->doc->version, c->base,
        if_match, c->op,           c->op == SYNCD_CHANGE_DELETE ? -1 : token};
    pthread_mutex_unlock(&h->lock);
}

static void unexpected(history_t *h, const char *what, int rc,
                       const syncd_error_t *err)
{
    pthread_mutex_lock(&h->lock);
    h->failures++;
    print_error("%s: %d %s\n", what, rc, err->message);
    pthread_mutex_unlock(&h->lock);
}

/* The version the store of record holds for key (0: none), read the way a
 * client does before a strict write. */
static int64_t current_version(syncd_store_t *s, int key)
{
    syncd_doc_t *doc = NULL;
    int64_t v = 0;

    if (syncd_store_refetch(s, &doc, "hist", history_ids[key], NULL) == 0 &&
        !doc->deleted)
        v = doc->version;
    syncd_doc_free(doc);
    return v;
}

/* Runs HISTORY_OPS random creates, deletes and puts (strict or not) on the
 * history keys through one of the stores, recording each acknowledged
 * change and checking the outcome codes each operation may have. */
static void *history_client(void *arg)
{
    client_t *c = arg;
    history_t *h = c->h;
    syncd_store_t *s = h->nodes[c->index % HISTORY_NODES].store;
    unsigned seed = (unsigned)c->index * 7919u + 17u;

    for (int i = 0; i < HISTORY_OPS; i++) {
        int key = rand_r(&seed) % HISTORY_KEYS;
        int kind = rand_r(&seed) % 5;
        const char *id = history_ids[key];
        json_int_t token = (json_int_t)c->index * 100000 + i;
        json_t *body = json_pack("{s:I}", "w", token);
        int64_t if_match = SYNCD_ANY_VERSION;
        syncd_change_t *change = NULL;
        syncd_error_t err;
        int rc;

        syncd_error_clear(&err);
        if (kind >= 2) {
            if_match = current_version(s, key);
            if (if_match == 0)
                kind = 0;
        }
        switch (kind) {
        case 0:
            if_match = SYNCD_ANY_VERSION;
            rc = syncd_store_create(s, &change, "hist", id, body, &err);
            if (rc != 0 && rc != SYNCD_EEXISTS)
                unexpected(h, "create", rc, &err);
            break;
        case 1:
            rc = syncd_store_delete(s, &change, "hist", id, SYNCD_ANY_VERSION,
                                    &err);
            if (rc != 0 && rc != SYNCD_ENOTFOUND)
                unexpected(h, "delete", rc, &err);
            break;
        case 2:
            rc = syncd_store_delete(s, &change, "hist", id, if_match, &err);
            if (rc != 0 && rc != SYNCD_ENOTFOUND && rc != SYNCD_EPRECONDITION)
                unexpected(h, "strict delete", rc, &err);
            break;
        default:
            rc = syncd_store_put(s, &change, "hist", id, body, if_match, &err);
            if (rc != 0 && rc != SYNCD_ENOTFOUND && rc != SYNCD_EPRECONDITION)
                unexpected(h, "strict put", rc, &err);
            break;
        }
        if (rc == 0 && change->op != SYNCD_CHANGE_NONE)
            record_change(h, key, change, if_match, token);
        /* Versions only grow: still at if_match now means it was then. */
        if (rc == SYNCD_EPRECONDITION && current_version(s, key) == if_match)
            unexpected(h, "precondition failed at the expected version", rc,
                       &err);
        syncd_change_free(change);
        json_decref(body);
    }
    return NULL;
}

static int compare_acked(const void *a, const void *b)
{
    const acked_t *x = a, *y = b;

    if (x->key != y->key)
        return x->key - y->key;
    return (x->version > y->version) - (x->version < y->version);
}

/* Checks the history of one key (entries sorted by version): every
 * acknowledged version is unique and they run 1, 2, 3, ... with no gap;
 * every update and delete is based on the version just before it, a
 * strict one on its If-Match; the store ends at the last acknowledged
 * change. */
static void check_key_history(history_t *h, int key, const acked_t *a, size_t n)
{
    syncd_doc_t *doc = NULL;

    for (size_t i = 0; i < n; i++) {
        assert_int_equal(a[i].key, key);
        assert_int_equal(a[i].version, (int64_t)i + 1);
        if (a[i].op != SYNCD_CHANGE_CREATE)
            assert_int_equal(a[i].base, a[i].version - 1);
        if (a[i].if_match != SYNCD_ANY_VERSION)
            assert_int_equal(a[i].base, a[i].if_match);
    }
    if (n == 0)
        return;
    assert_int_equal(syncd_store_refetch(h->nodes[0].store, &doc, "hist",
                                         history_ids[key], NULL),
                     0);
    assert_int_equal(doc->version, a[n - 1].version);
    if (a[n - 1].token < 0)
        assert_true(doc->deleted);
    else
        assert_int_equal(json_integer_value(json_object_get(doc->body, "w")),
                         a[n - 1].token);
    syncd_doc_free(doc);
}

static void
test_mongo_history__creates_deletes_and_strict_writes_are_linearizable(
    void **state)
{
    fixture_t *f = *state;
    history_t *h = calloc(1, sizeof(*h));
    pthread_t threads[HISTORY_CLIENTS];
    client_t clients[HISTORY_CLIENTS];
    size_t start = 0;

    assert_non_null(h);
    pthread_mutex_init(&h->lock, NULL);
    for (int i = 0; i < HISTORY_NODES; i++) {
        char node[16];

        snprintf(node, sizeof(node), "node-%d", i);
        node_open(&h->nodes[i], f, node, TIMEOUT_MS);
    }
    for (int i = 0; i < HISTORY_CLIENTS; i++) {
        clients[i] = (client_t){h, i};
        assert_int_equal(
            pthread_create(&threads[i], NULL, history_client, &clients[i]), 0);
    }
    for (int i = 0; i < HISTORY_CLIENTS; i++)
        pthread_join(threads[i], NULL);
    assert_int_equal(h->failures, 0);
    qsort(h->acked, h->n, sizeof(*h->acked), compare_acked);
    for (int key = 0; key < HISTORY_KEYS; key++) {
        size_t end = start;

        while (end < h->n && h->acked[end].key == key)
            end++;
        check_key_history(h, key, h->acked + start, end - start);
        start = end;
    }
    /* Every writer is done, so none may have left a claim behind. */
    assert_int_equal(count_claims(f, "hist"), 0);
    print_message("history: %zu acknowledged changes\n", h->n);
    for (int i = 0; i < HISTORY_NODES; i++)
        node_close(&h->nodes[i]);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_mongo_cas__nasty_keys_and_numbers_round_trip_exactly),
        cmocka_unit_test(test_mongo_record__is_stored_in_the_documented_layout),
        cmocka_unit_test(test_mongo_cas__inserting_twice_fails_with_ECONFLICT),
        cmocka_unit_test(
            test_mongo_cas__stale_expected_fails_with_ECONFLICT_and_writes_nothing),
        cmocka_unit_test(test_mongo_cas__concurrent_writers_lose_no_update),
        cmocka_unit_test(
            test_mongo_cas__concurrent_inserts_of_an_id_have_one_winner),
        cmocka_unit_test(
            test_mongo_cas__runs_under_claims_only_where_a_filtered_update_is_not_atomic),
        cmocka_unit_test(
            test_mongo_store__an_edit_from_a_stale_cache_entry_loses_no_update),
        cmocka_unit_test(
            test_mongo_store__a_cache_entry_at_the_version_of_another_body_writes_nothing_over_it),
        cmocka_unit_test(
            test_mongo_store__a_write_from_the_cache_carries_markers_and_keys_forward),
        cmocka_unit_test(
            test_mongo_store__a_full_outbox_refuses_a_write_from_the_cache_with_EBACKEND),
        cmocka_unit_test(
            test_mongo_claims__a_dead_writers_claim_does_not_fail_a_strict_write),
        cmocka_unit_test(
            test_mongo_claims__a_writer_stalled_past_the_lease_overwrites_nothing),
        cmocka_unit_test(
            test_mongo_claims__a_strict_write_fails_only_once_the_version_moved),
        cmocka_unit_test(
            test_mongo_claims__a_live_holder_is_waited_for_and_taken_over_once_dead),
        cmocka_unit_test(
            test_mongo_claims__a_writer_never_takes_over_a_claim_its_own_process_writes_under),
        cmocka_unit_test(
            test_mongo_claims__a_holder_whose_claim_was_taken_over_never_answers_success),
        cmocka_unit_test(test_mongo_purge__drops_claims_older_than_the_lease),
        cmocka_unit_test(
            test_mongo_purge__drops_liveness_records_of_long_gone_processes),
        cmocka_unit_test(
            test_mongo_list__pages_by_prefix_and_after_in_byte_order),
        cmocka_unit_test(test_mongo_purge__removes_only_old_tombstones),
        cmocka_unit_test(
            test_mongo_collections__lists_syncd_collections_sorted),
        cmocka_unit_test(
            test_mongo_export_page__lists_live_documents_with_bodies_in_id_order),
        cmocka_unit_test(
            test_mongo_open__unreachable_server_fails_with_EBACKEND),
        cmocka_unit_test(
            test_mongo_open__concerns_given_in_the_uri_are_accepted),
        cmocka_unit_test(
            test_mongo_fault__a_dead_server_fails_calls_with_EBACKEND_then_recovers),
        cmocka_unit_test(
            test_mongo_history__creates_deletes_and_strict_writes_are_linearizable),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
