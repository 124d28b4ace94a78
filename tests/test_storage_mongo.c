/* test_storage_mongo.c - the MongoDB store of record against a real server.
 *
 * Drives the backend of storage/mongo.c directly through storage/internal.h
 * against FerretDB started on a free port (or $SYNCD_TEST_MONGO_URI): the
 * body encoding (nasty keys, every kind of number) both through the backend
 * and as raw BSON read with mongo-c-driver, the compare-and-swap under
 * contention, listings, purge, and a server that dies and comes back.
 * Through the store API with several stores as nodes: FerretDB's commit
 * chain (a document set back by a late update by _id, a writer stalled
 * between its commit record and its copy into the document, a purged
 * tombstone fencing its chain), and a history of concurrent creates,
 * deletes and strict writes checked for linearizability.
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
#define WRITERS 8
#define WRITES_PER_WRITER 40

typedef struct fixture {
    syncd_test_server_t srv;
    syncd_backend_t *be;
} fixture_t;

/* Returns the wall clock in ms. */
static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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

/* A body of nasty keys, every kind of number, nested arrays and tag
 * lookalikes. */
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

/* Group setup: starts the server and opens the fixture's backend. */
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

/* Group teardown: closes the backend and stops the server. */
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

/* Returns 1 when the fixture's server is FerretDB (its buildInfo names a
 * ferretdbVersion). */
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

/* Opens n as node node_id with the given backend timeout, with the
 * transactional outbox when outbox is 1. */
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

/* Opens n as node node_id with the given backend timeout. */
static void node_open(node_t *n, const fixture_t *f, const char *node_id,
                      int64_t timeout_ms)
{
    node_open_with(n, f, node_id, timeout_ms, 0);
}

/* Closes node n and removes its cache dir. */
static void node_close(node_t *n)
{
    syncd_store_close(n->store);
    syncd_test_rmtree(n->dir);
}

/* Pauses the first writer that reaches it, between its commit record and
 * its copy into the document, until released. */
typedef struct stall {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int armed, paused, released;
} stall_t;

/* The commit hook of a stall_t: pauses the first writer while armed. */
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

/* Arms s and sets it as the commit hook. */
static void stall_init(stall_t *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->armed = 1;
    syncd_backend_mongo_set_commit_hook(stall_hook, s);
}

/* Waits until a writer is paused by s. */
static void stall_wait_paused(stall_t *s)
{
    pthread_mutex_lock(&s->lock);
    while (!s->paused)
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
}

/* Lets the writer paused by s go on. */
static void stall_release(stall_t *s)
{
    pthread_mutex_lock(&s->lock);
    s->released = 1;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* Removes the commit hook and frees s. */
static void stall_destroy(stall_t *s)
{
    syncd_backend_mongo_set_commit_hook(NULL, NULL);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
}

/* Edit callback: adds 1 to the body's counter n. */
static int add_one(json_t *body, void *arg, syncd_error_t *err)
{
    json_int_t n = json_integer_value(json_object_get(body, "n"));

    (void)arg;
    (void)err;
    return json_object_set_new(body, "n", json_integer(n + 1));
}

/* One put through the store, run on a thread of its own. */
typedef struct call {
    syncd_store_t *store;
    const char *coll, *id;
    json_t *body;
    int64_t if_match; /* SYNCD_ANY_VERSION or a strict write */
    int rc;
    syncd_change_t *change;
} call_t;

/* Thread body: runs the put of call_t arg. */
static void *run_call(void *arg)
{
    call_t *c = arg;

    c->rc = syncd_store_put(c->store, &c->change, c->coll, c->id, c->body,
                            c->if_match, NULL);
    return NULL;
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

/* A commit hook that counts its calls in the int data points to. */
static void count_commit(const char *coll, const char *id, int64_t expected,
                         void *data)
{
    (void)coll;
    (void)id;
    (void)expected;
    (*(int *)data)++;
}

/* Returns a new handle (the caller destroys it) on the commit records of
 * coll, _syncd_commits.<coll>, through client. */
static mongoc_collection_t *commits_of(mongoc_client_t *client,
                                       const char *coll)
{
    char name[128];

    snprintf(name, sizeof(name), "_syncd_commits.%s", coll);
    return mongoc_client_get_collection(client, DB, name);
}

/* Returns the number of commit records of coll. */
static int64_t count_commits(const fixture_t *f, const char *coll)
{
    mongoc_client_t *client = mongoc_client_new(f->srv.uri);
    mongoc_collection_t *c = commits_of(client, coll);
    bson_t filter = BSON_INITIALIZER;
    bson_error_t e;
    int64_t n =
        mongoc_collection_count_documents(c, &filter, NULL, NULL, NULL, &e);

    mongoc_collection_destroy(c);
    mongoc_client_destroy(client);
    assert_true(n >= 0);
    return n;
}

/* Returns r.v, the version of the record it holds, of the one commit
 * record of coll, failing unless there is exactly one. */
static int64_t sole_commit_version(const fixture_t *f, const char *coll)
{
    mongoc_client_t *client = mongoc_client_new(f->srv.uri);
    mongoc_collection_t *c = commits_of(client, coll);
    bson_t filter = BSON_INITIALIZER;
    mongoc_cursor_t *cur =
        mongoc_collection_find_with_opts(c, &filter, NULL, NULL);
    const bson_t *rec;
    bson_iter_t it, v;
    int64_t version = -1;
    int n = 0;

    while (mongoc_cursor_next(cur, &rec)) {
        n++;
        if (bson_iter_init(&it, rec) &&
            bson_iter_find_descendant(&it, "r.v", &v) &&
            BSON_ITER_HOLDS_INT64(&v))
            version = bson_iter_int64(&v);
    }
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(c);
    mongoc_client_destroy(client);
    assert_int_equal(n, 1);
    return version;
}

/* Writes into buf the key of the commit record of version + 1 of id in
 * incarnation n: "<id>\x1f<n>\x1f<version, 20 digits>". */
static void commit_key(char *buf, size_t size, const char *id, const char *n,
                       int64_t version)
{
    snprintf(buf, size, "%s\x1f%s\x1f%020lld", id, n, (long long)version);
}

/* Inserts the bare commit record {_id: key} among coll's; returns the
 * server's error code (0 when it was inserted). */
static uint32_t insert_commit(const fixture_t *f, const char *coll,
                              const char *key)
{
    mongoc_client_t *client = mongoc_client_new(f->srv.uri);
    mongoc_collection_t *c = commits_of(client, coll);
    bson_t *rec = BCON_NEW("_id", BCON_UTF8(key));
    bson_error_t e;
    uint32_t code = 0;

    if (!mongoc_collection_insert_one(c, rec, NULL, NULL, &e))
        code = e.code;
    bson_destroy(rec);
    mongoc_collection_destroy(c);
    mongoc_client_destroy(client);
    return code;
}

/* Returns a copy (the caller destroys it) of the raw document of coll/id
 * as stored, NULL when there is none. */
static bson_t *raw_doc(const fixture_t *f, const char *coll, const char *id)
{
    mongoc_client_t *client = mongoc_client_new(f->srv.uri);
    mongoc_collection_t *c = mongoc_client_get_collection(client, DB, coll);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    mongoc_cursor_t *cur =
        mongoc_collection_find_with_opts(c, filter, NULL, NULL);
    const bson_t *found;
    bson_t *copy = NULL;
    bson_error_t e;
    int failed;

    if (mongoc_cursor_next(cur, &found))
        copy = bson_copy(found);
    failed = mongoc_cursor_error(cur, &e);
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    mongoc_collection_destroy(c);
    mongoc_client_destroy(client);
    assert_false(failed);
    return copy;
}

/* Returns the version v of the raw document of coll/id (0: none). */
static int64_t raw_version(const fixture_t *f, const char *coll, const char *id)
{
    bson_t *doc = raw_doc(f, coll, id);
    bson_iter_t it;
    int64_t v = 0;

    if (doc != NULL && bson_iter_init_find(&it, doc, "v"))
        v = bson_iter_as_int64(&it);
    if (doc != NULL)
        bson_destroy(doc);
    return v;
}

/* Replaces the raw document of coll/id with doc by a replace filtered on
 * _id alone, as the late update by _id of a FerretDB filtered update. */
static void raw_replace(const fixture_t *f, const char *coll, const char *id,
                        const bson_t *doc)
{
    mongoc_client_t *client = mongoc_client_new(f->srv.uri);
    mongoc_collection_t *c = mongoc_client_get_collection(client, DB, coll);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    bson_t reply;
    bson_iter_t it;
    bson_error_t e;
    int ok = mongoc_collection_replace_one(c, filter, doc, NULL, &reply, &e);
    int64_t matched = ok && bson_iter_init_find(&it, &reply, "matchedCount")
                          ? bson_iter_as_int64(&it)
                          : 0;

    bson_destroy(&reply);
    bson_destroy(filter);
    mongoc_collection_destroy(c);
    mongoc_client_destroy(client);
    assert_true(ok);
    assert_int_equal(matched, 1);
}

/* Returns the entry of id in list, an array of {"id", ...} (borrowed;
 * NULL: none). */
static json_t *entry_of(const json_t *list, const char *id)
{
    size_t i;
    json_t *e;

    json_array_foreach (list, i, e) {
        if (strcmp(json_string_value(json_object_get(e, "id")), id) == 0)
            return e;
    }
    return NULL;
}

/* Returns the version the backend's listing of coll gives id (0: not
 * listed). */
static int64_t listed_version(const fixture_t *f, const char *coll,
                              const char *id)
{
    json_t *out = NULL;
    int64_t v;

    assert_int_equal(f->be->ops->list(f->be, &out, coll, id, NULL, 0, 0, NULL),
                     0);
    v = json_integer_value(json_object_get(entry_of(out, id), "v"));
    json_decref(out);
    return v;
}

/* Returns the version syncd_store_versions() of node n gives coll/id (0:
 * none). */
static int64_t header_version(node_t *n, const char *coll, const char *id)
{
    json_t *ids = json_pack("[s]", id);
    json_t *out = NULL;
    int64_t v;

    assert_int_equal(syncd_store_versions(n->store, &out, coll, ids, NULL), 0);
    v = json_integer_value(json_object_get(json_object_get(out, id), "v"));
    json_decref(out);
    json_decref(ids);
    return v;
}

/* Reads coll/id through node n with its cache entry dropped first, so that
 * the store of record answers; returns the code of syncd_store_get(). */
static int read_fresh(node_t *n, syncd_doc_t **out, const char *coll,
                      const char *id)
{
    assert_int_equal(syncd_store_cache_invalidate(n->store, coll, id, NULL), 0);
    return syncd_store_get(n->store, out, coll, id, NULL);
}

/* Puts body at coll/id through node n (strict unless if_match is
 * SYNCD_ANY_VERSION); returns the code, and in *version the version
 * written (0 when none). */
static int put_at(node_t *n, const char *coll, const char *id,
                  const json_t *body, int64_t if_match, int64_t *version)
{
    syncd_change_t *change = NULL;
    int rc = syncd_store_put(n->store, &change, coll, id, body, if_match, NULL);

    *version = rc == 0 ? change->doc->version : 0;
    syncd_change_free(change);
    return rc;
}

/* Which compare-and-swap runs shows on the server: on FerretDB, whose
 * filtered update is a query then an update, a write is committed by
 * inserting its commit record (the hook runs once, and the record holds
 * the new version); on a server that applies a filtered update atomically
 * (mongo-java-server, MongoDB) the single filtered replace runs, and no
 * commit record is ever written. */
static void
test_mongo_cas__commits_through_the_chain_only_where_a_filtered_update_is_not_atomic(
    void **state)
{
    fixture_t *f = *state;
    json_t *v1 = json_pack("{s:i}", "n", 1);
    json_t *v2 = json_pack("{s:i}", "n", 2);
    int committed = 0;
    int rc;

    assert_int_equal(write_body(f->be, "path", "doc", 1, 0, v1), 0);
    syncd_backend_mongo_set_commit_hook(count_commit, &committed);
    rc = write_body(f->be, "path", "doc", 2, 1, v2);
    syncd_backend_mongo_set_commit_hook(NULL, NULL);
    assert_int_equal(rc, 0);
    if (server_is_ferretdb(f)) {
        assert_int_equal(committed, 1);
        assert_int_equal(sole_commit_version(f, "path"), 2);
    } else {
        assert_int_equal(committed, 0);
        assert_int_equal(count_commits(f, "path"), 0);
    }
    json_decref(v1);
    json_decref(v2);
}

/* On FerretDB a filtered update whose query ran before a newer write lands
 * its update by _id late, setting the document back to an older committed
 * version: the version set back to is neither served nor built on. */
static void
test_mongo_chain__a_late_update_never_sets_back_what_is_read_or_built_on(
    void **state)
{
    fixture_t *f = *state;
    json_t *v1 = NULL, *v2 = NULL, *v3 = NULL, *v4 = NULL;
    syncd_doc_t *got = NULL;
    int64_t version = 0;
    bson_t *saved;
    node_t a, b;

    if (!server_is_ferretdb(f))
        skip(); /* the commit chain is FerretDB's; MongoDB needs none */
    v1 = json_pack("{s:i}", "step", 1);
    v2 = json_pack("{s:i}", "step", 2);
    v3 = json_pack("{s:i}", "step", 3);
    v4 = json_pack("{s:i}", "step", 4);
    node_open(&a, f, "node-a", TIMEOUT_MS);
    node_open(&b, f, "node-b", TIMEOUT_MS);
    assert_int_equal(
        put_at(&a, "chain", "set-back", v1, SYNCD_ANY_VERSION, &version), 0);
    assert_int_equal(put_at(&a, "chain", "set-back", v2, 1, &version), 0);
    assert_int_equal(version, 2);
    /* Node b reads version 2, which its cache keeps. */
    assert_int_equal(syncd_store_get(b.store, &got, "chain", "set-back", NULL),
                     0);
    assert_int_equal(got->version, 2);
    syncd_doc_free(got);
    saved = raw_doc(f, "chain", "set-back");
    assert_non_null(saved);
    assert_int_equal(put_at(&a, "chain", "set-back", v3, 2, &version), 0);
    assert_int_equal(version, 3);

    /* The late update by _id of a writer that read version 2 lands. */
    raw_replace(f, "chain", "set-back", saved);
    bson_destroy(saved);
    assert_int_equal(raw_version(f, "chain", "set-back"), 2);

    /* Every reader still finds version 3. */
    assert_int_equal(f->be->ops->get(f->be, &got, "chain", "set-back", NULL),
                     0);
    assert_int_equal(got->version, 3);
    assert_json_exact(got->body, v3);
    syncd_doc_free(got);
    assert_int_equal(listed_version(f, "chain", "set-back"), 3);
    assert_int_equal(header_version(&b, "chain", "set-back"), 3);

    /* Node b's cache says version 2, yet a strict write there fails, as
     * does the compare-and-swap of version 2 itself. */
    assert_int_equal(put_at(&b, "chain", "set-back", v4, 2, &version),
                     SYNCD_EPRECONDITION);
    assert_int_equal(write_body(f->be, "chain", "set-back", 3, 2, v4),
                     SYNCD_ECONFLICT);
    assert_int_equal(read_fresh(&b, &got, "chain", "set-back"), 0);
    assert_int_equal(got->version, 3);
    assert_json_exact(got->body, v3);
    syncd_doc_free(got);

    /* A strict write on version 3 builds on it. */
    assert_int_equal(put_at(&b, "chain", "set-back", v4, 3, &version), 0);
    assert_int_equal(version, 4);
    assert_int_equal(f->be->ops->get(f->be, &got, "chain", "set-back", NULL),
                     0);
    assert_int_equal(got->version, 4);
    assert_json_exact(got->body, v4);
    syncd_doc_free(got);
    assert_int_equal(listed_version(f, "chain", "set-back"), 4);
    assert_int_equal(header_version(&b, "chain", "set-back"), 4);
    node_close(&a);
    node_close(&b);
    json_decref(v1);
    json_decref(v2);
    json_decref(v3);
    json_decref(v4);
}

/* A writer that inserted its commit record has won its version even while
 * it stalls before copying the record into the document: readers, the
 * outbox listing and other writers take that version at once, the writer
 * answers success once it goes on, and its late copy sets nothing back. */
static void
test_mongo_chain__a_writer_stalled_after_its_commit_is_rolled_forward(
    void **state)
{
    fixture_t *f = *state;
    json_t *v1 = NULL, *mine = NULL, *theirs = NULL, *listed = NULL;
    call_t stalled = {.coll = "chain", .id = "stalled", .if_match = 1};
    syncd_doc_t *got = NULL;
    int64_t at, read_v = 0, stale_v = 0, next_v = 0, version = 0;
    int stale_rc, cas_rc, list_rc, read_rc, next_rc, read_mine = 0;
    json_t *entry;
    node_t a, b;
    pthread_t t;
    stall_t s;

    if (!server_is_ferretdb(f))
        skip(); /* the commit chain is FerretDB's; MongoDB needs none */
    v1 = json_pack("{s:s}", "who", "creator");
    mine = json_pack("{s:s}", "who", "stalled");
    theirs = json_pack("{s:s}", "who", "node-b");
    node_open_with(&a, f, "node-a", TIMEOUT_MS, 1);
    node_open_with(&b, f, "node-b", TIMEOUT_MS, 1);
    assert_int_equal(
        put_at(&a, "chain", "stalled", v1, SYNCD_ANY_VERSION, &version), 0);
    /* Node b reads version 1, which its cache keeps. */
    assert_int_equal(syncd_store_get(b.store, &got, "chain", "stalled", NULL),
                     0);
    assert_int_equal(got->version, 1);
    syncd_doc_free(got);
    stall_init(&s);
    stalled.store = a.store;
    stalled.body = mine;
    assert_int_equal(pthread_create(&t, NULL, run_call, &stalled), 0);
    stall_wait_paused(&s);

    /* Observed while the writer stalls, checked once it is released (an
     * assertion failing here would leave it stalled). */
    at = raw_version(f, "chain", "stalled");
    stale_rc = put_at(&b, "chain", "stalled", theirs, 1, &stale_v);
    cas_rc = write_body(f->be, "chain", "stalled", 2, 1, theirs);
    list_rc =
        syncd_store_outbox_list(b.store, &listed, "chain", NULL, 100, NULL);
    read_rc = read_fresh(&b, &got, "chain", "stalled");
    if (read_rc == 0) {
        read_v = got->version;
        read_mine = json_equal(got->body, mine);
        syncd_doc_free(got);
    }
    next_rc = put_at(&b, "chain", "stalled", theirs, 2, &next_v);
    stall_release(&s);
    pthread_join(t, NULL);
    stall_destroy(&s);

    assert_int_equal(at, 1); /* the document itself still lags behind */
    assert_int_equal(stale_rc, SYNCD_EPRECONDITION);
    assert_int_equal(cas_rc, SYNCD_ECONFLICT);
    assert_int_equal(list_rc, 0);
    entry = entry_of(listed, "stalled");
    assert_non_null(entry);
    assert_int_equal(json_integer_value(json_object_get(entry, "v")), 2);
    assert_true(markers_are(json_object_get(entry, "ob"), 1, 2));
    json_decref(listed);
    assert_int_equal(read_rc, 0);
    assert_int_equal(read_v, 2);
    assert_true(read_mine);
    assert_int_equal(next_rc, 0);
    assert_int_equal(next_v, 3);

    /* The stalled writer won version 2; its late copy sets nothing back. */
    assert_int_equal(stalled.rc, 0);
    assert_int_equal(stalled.change->base, 1);
    assert_int_equal(stalled.change->doc->version, 2);
    syncd_change_free(stalled.change);
    assert_int_equal(f->be->ops->get(f->be, &got, "chain", "stalled", NULL), 0);
    assert_int_equal(got->version, 3);
    assert_json_exact(got->body, theirs);
    syncd_doc_free(got);
    assert_int_equal(read_fresh(&a, &got, "chain", "stalled"), 0);
    assert_int_equal(got->version, 3);
    assert_json_exact(got->body, theirs);
    syncd_doc_free(got);
    assert_int_equal(listed_version(f, "chain", "stalled"), 3);
    /* No marker is lost: version 3's record carries 2's forward. */
    assert_int_equal(
        syncd_store_outbox_list(b.store, &listed, "chain", NULL, 100, NULL), 0);
    entry = entry_of(listed, "stalled");
    assert_non_null(entry);
    assert_int_equal(json_integer_value(json_object_get(entry, "v")), 3);
    assert_true(markers_are(json_object_get(entry, "ob"), 1, 3));
    json_decref(listed);
    node_close(&a);
    node_close(&b);
    json_decref(v1);
    json_decref(mine);
    json_decref(theirs);
}

/* A purge of a tombstone fences its chain with the commit record of the
 * next version: the id reads as not found, nothing builds on the
 * tombstone, and the id starts over in a new incarnation. */
static void test_mongo_chain__a_purged_tombstone_fences_its_chain(void **state)
{
    fixture_t *f = *state;
    syncd_backend_t *be = f->be;
    json_t *old = NULL, *again = NULL;
    syncd_doc_t *got = NULL;
    char inc[64], key[256];
    size_t purged = 0;
    bson_iter_t it;
    bson_t *tomb;

    if (!server_is_ferretdb(f))
        skip(); /* the commit chain is FerretDB's; MongoDB needs none */
    old = json_pack("{s:s}", "life", "first");
    again = json_pack("{s:s}", "life", "second");
    assert_int_equal(write_body(be, "chain", "purged", 1, 0, old), 0);
    assert_int_equal(write_body(be, "chain", "purged", 2, 1, NULL), 0);
    tomb = raw_doc(f, "chain", "purged");
    assert_non_null(tomb);
    assert_true(bson_iter_init_find(&it, tomb, "n"));
    assert_true(BSON_ITER_HOLDS_UTF8(&it));
    snprintf(inc, sizeof(inc), "%s", bson_iter_utf8(&it, NULL));
    bson_destroy(tomb);
    assert_true(inc[0] != '\0');

    assert_int_equal(
        be->ops->purge(be, "chain", now_ms() + 60000, 0, &purged, NULL, NULL),
        0);
    assert_int_equal(purged, 1);
    assert_int_equal(be->ops->get(be, &got, "chain", "purged", NULL),
                     SYNCD_ENOTFOUND);
    assert_int_equal(write_body(be, "chain", "purged", 3, 2, old),
                     SYNCD_ECONFLICT);
    /* The commit record of version 3 of the old incarnation is taken. */
    commit_key(key, sizeof(key), "purged", inc, 2);
    assert_int_equal(insert_commit(f, "chain", key), 11000);

    /* A creation starts over at version 1, and its chain goes on. */
    assert_int_equal(write_body(be, "chain", "purged", 1, 0, again), 0);
    assert_int_equal(be->ops->get(be, &got, "chain", "purged", NULL), 0);
    assert_int_equal(got->version, 1);
    assert_false(got->deleted);
    assert_json_exact(got->body, again);
    syncd_doc_free(got);
    assert_int_equal(write_body(be, "chain", "purged", 2, 1, old), 0);
    assert_int_equal(be->ops->get(be, &got, "chain", "purged", NULL), 0);
    assert_int_equal(got->version, 2);
    assert_json_exact(got->body, old);
    syncd_doc_free(got);
    json_decref(old);
    json_decref(again);
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

/* Asserts that the ids of list, each followed by a space, are expect. */
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

/* Lists collection "list" through the backend; the caller decrefs. */
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

/* Appends acknowledged change c of key to h's history. */
static void record_change(history_t *h, int key, const syncd_change_t *c,
                          int64_t if_match, json_int_t token)
{
    pthread_mutex_lock(&h->lock);
    h->acked[h->n++] = (acked_t){
        key,      c->doc->version, c->base,
        if_match, c->op,           c->op == SYNCD_CHANGE_DELETE ? -1 : token};
    pthread_mutex_unlock(&h->lock);
}

/* Counts and prints an unexpected outcome of an operation. */
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

/* qsort order of acknowledged changes: by key, then version. */
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
            test_mongo_cas__commits_through_the_chain_only_where_a_filtered_update_is_not_atomic),
        cmocka_unit_test(
            test_mongo_store__an_edit_from_a_stale_cache_entry_loses_no_update),
        cmocka_unit_test(
            test_mongo_store__a_cache_entry_at_the_version_of_another_body_writes_nothing_over_it),
        cmocka_unit_test(
            test_mongo_store__a_write_from_the_cache_carries_markers_and_keys_forward),
        cmocka_unit_test(
            test_mongo_store__a_full_outbox_refuses_a_write_from_the_cache_with_EBACKEND),
        cmocka_unit_test(
            test_mongo_chain__a_late_update_never_sets_back_what_is_read_or_built_on),
        cmocka_unit_test(
            test_mongo_chain__a_writer_stalled_after_its_commit_is_rolled_forward),
        cmocka_unit_test(test_mongo_chain__a_purged_tombstone_fences_its_chain),
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

    /* SYNCD_TEST_FILTER=<glob> runs only the matching tests. */
    if (getenv("SYNCD_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("SYNCD_TEST_FILTER"));
    return cmocka_run_group_tests(tests, setup, teardown);
}
