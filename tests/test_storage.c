/* test_storage.c - the store library against both stores of record.
 *
 * Every store test runs twice: on the embedded RocksDB store in a temp dir,
 * and on the MongoDB store (FerretDB started once for the binary, or
 * $SYNCD_TEST_MONGO_URI) with its RocksDB node cache, each test in a fresh
 * database. Conflicts, clocks and backoff are driven through injected hooks
 * and forced concurrent writes, never by timing. Conflicts exist on MongoDB
 * only: the embedded store queues the writers of a document on a lock, and
 * its tests show that no write there ever conflicts. The node cache, the
 * digest construction and the backoff formula also get tests of their own.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <rocksdb/c.h>

#include "assert_json.h"
#include "servers.h"
#include "storage/internal.h"
#include "syncd/store.h"

/* ---- Fixture ------------------------------------------------------------ */

typedef struct backend_kind {
    const char *name;
    int mongo;
} backend_kind_t;

static const backend_kind_t rocks_kind = {"rocksdb", 0};
static const backend_kind_t mongo_kind = {"mongodb", 1};

static syncd_test_server_t mongo_server;
static int database_seq;

/* Injected clock, sleep and random source. Sleeping advances the clock;
 * random returns queued values in turn, then `rnd`. */
typedef struct fake {
    int64_t now;
    int64_t slept[64];
    int nslept;
    uint64_t queue[64];
    int nqueue, next;
    uint64_t rnd;
} fake_t;

static int64_t fake_now(void *data)
{
    return ((fake_t *)data)->now;
}

static void fake_sleep(void *data, int64_t ms)
{
    fake_t *f = data;

    if (f->nslept < 64)
        f->slept[f->nslept++] = ms;
    f->now += ms;
}

static uint64_t fake_random(void *data)
{
    fake_t *f = data;

    return f->next < f->nqueue ? f->queue[f->next++] : f->rnd;
}

typedef struct fixture {
    const backend_kind_t *kind;
    char dir[256];
    char db[64];
    syncd_store_options_t opts;
    syncd_store_hooks_t hooks;
    fake_t fake;
    syncd_store_t *store;
} fixture_t;

static int group_setup(void **state)
{
    (void)state;
    return syncd_test_mongo_start(&mongo_server);
}

static int group_teardown(void **state)
{
    (void)state;
    syncd_test_server_destroy(&mongo_server);
    return 0;
}

static void open_store(fixture_t *f)
{
    syncd_error_t err;

    syncd_error_clear(&err);
    assert_int_equal(syncd_store_open(&f->store, &f->opts, &err), 0);
}

/* Closes and reopens the store with f->opts (after changing options). */
static void reopen(fixture_t *f)
{
    syncd_store_close(f->store);
    f->store = NULL;
    open_store(f);
}

/* Switches the store to the injected clock, sleep and random source. */
static void use_fake_hooks(fixture_t *f, int64_t now)
{
    f->fake.now = now;
    f->hooks.now_ms = fake_now;
    f->hooks.sleep_ms = fake_sleep;
    f->hooks.random = fake_random;
    f->hooks.data = &f->fake;
    f->opts.hooks = &f->hooks;
    reopen(f);
}

static int setup_store(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    f->kind = *state;
    if (syncd_test_tmpdir(f->dir, sizeof(f->dir), "store") != 0) {
        free(f);
        return -1;
    }
    syncd_store_options_init(&f->opts);
    f->opts.data_dir = f->dir;
    f->opts.node_id = "node-t";
    if (f->kind->mongo) {
        snprintf(f->db, sizeof(f->db), "syncd_t%d_%d", (int)getpid(),
                 ++database_seq);
        f->opts.mongo_uri = mongo_server.uri;
        f->opts.database = f->db;
    }
    *state = f;
    open_store(f);
    return 0;
}

static int teardown_store(void **state)
{
    fixture_t *f = *state;

    syncd_store_close(f->store);
    syncd_test_rmtree(f->dir);
    free(f);
    return 0;
}

/* ---- Helpers ------------------------------------------------------------ */

static json_t *parse(const char *text)
{
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);

    assert_non_null(v);
    return v;
}

static void assert_json_text(const json_t *v, const char *text)
{
    json_t *want = parse(text);

    assert_json_exact(v, want);
    json_decref(want);
}

static void create_doc(fixture_t *f, const char *coll, const char *id,
                       const char *body)
{
    json_t *b = parse(body);
    syncd_change_t *c = NULL;

    assert_int_equal(syncd_store_create(f->store, &c, coll, id, b, NULL), 0);
    syncd_change_free(c);
    json_decref(b);
}

static int put_doc(fixture_t *f, const char *coll, const char *id,
                   const char *body, int64_t if_match, int64_t *version)
{
    json_t *b = parse(body);
    syncd_change_t *c = NULL;
    int rc = syncd_store_put(f->store, &c, coll, id, b, if_match, NULL);

    if (rc == 0 && version != NULL)
        *version = c->doc->version;
    syncd_change_free(c);
    json_decref(b);
    return rc;
}

/* Asserts coll/id is live at version with body text. */
static void assert_doc(fixture_t *f, const char *coll, const char *id,
                       int64_t version, const char *body)
{
    syncd_doc_t *doc = NULL;
    syncd_error_t err;

    syncd_error_clear(&err);
    assert_int_equal(syncd_store_get(f->store, &doc, coll, id, &err), 0);
    assert_int_equal(doc->version, version);
    assert_json_text(doc->body, body);
    syncd_doc_free(doc);
}

static int64_t live_version(fixture_t *f, const char *coll, const char *id)
{
    syncd_doc_t *doc = NULL;
    int64_t v;

    assert_int_equal(syncd_store_get(f->store, &doc, coll, id, NULL), 0);
    v = doc->version;
    syncd_doc_free(doc);
    return v;
}

/* Asserts that list's ids, joined by spaces, are want. */
static void assert_ids(const json_t *list, const char *want)
{
    char got[1024] = "";
    size_t i;
    json_t *e;

    json_array_foreach (list, i, e) {
        if (i > 0)
            strcat(got, " ");
        strcat(got, json_string_value(json_object_get(e, "id")));
    }
    assert_string_equal(got, want);
}

static int inc_counter(json_t *body, void *arg, syncd_error_t *err)
{
    json_int_t n = json_integer_value(json_object_get(body, "n"));

    (void)arg;
    (void)err;
    return json_object_set_new(body, "n", json_integer(n + 1)) == 0
               ? 0
               : SYNCD_ENOMEM;
}

static int leave_unchanged(json_t *body, void *arg, syncd_error_t *err)
{
    (void)body;
    (void)arg;
    (void)err;
    return 0;
}

static int fail_with_einval(json_t *body, void *arg, syncd_error_t *err)
{
    (void)arg;
    json_object_set_new(body, "half", json_true());
    return syncd_error_set(err, SYNCD_EINVAL, "the callback refused");
}

/* An edit callback that makes every compare-and-swap conflict: it commits
 * a write of its own to the same document before returning. Calling the
 * store from a callback is outside the contract of syncd_store_edit() (the
 * embedded store holds the document's lock meanwhile), so the tests using
 * it run on MongoDB, where writers race and only the CAS decides. */
typedef struct forcer {
    syncd_store_t *store;
    const char *coll, *id;
    int calls;
} forcer_t;

static int force_conflict(json_t *body, void *arg, syncd_error_t *err)
{
    forcer_t *fc = arg;
    json_t *bump = json_pack("{s:i}", "bump", ++fc->calls);
    syncd_change_t *c = NULL;
    int rc;

    rc = syncd_store_put(fc->store, &c, fc->coll, fc->id, bump,
                         SYNCD_ANY_VERSION, err);
    syncd_change_free(c);
    json_decref(bump);
    if (rc != 0)
        return rc;
    return json_object_set_new(body, "mine", json_integer(fc->calls));
}

/* ---- CRUD and versions -------------------------------------------------- */

static void test_store__create_put_delete_recreate_track_versions(void **state)
{
    fixture_t *f = *state;
    json_t *body = parse("{\"a\":1,\"b\":{\"c\":[1,2]}}");
    json_t *next = parse("{\"a\":2,\"b\":{\"c\":[1,2]}}");
    syncd_change_t *c = NULL;
    syncd_error_t err;

    syncd_error_clear(&err);
    assert_int_equal(
        syncd_store_create(f->store, &c, "docs", "x/1", body, &err), 0);
    assert_int_equal(c->op, SYNCD_CHANGE_CREATE);
    assert_int_equal(c->base, 0);
    assert_int_equal(c->doc->version, 1);
    assert_string_equal(c->doc->origin, "node-t");
    assert_json_text(c->patch, "[{\"op\":\"add\",\"path\":\"\",\"value\":"
                               "{\"a\":1,\"b\":{\"c\":[1,2]}}}]");
    assert_json_exact(c->merge, body);
    syncd_change_free(c);
    assert_doc(f, "docs", "x/1", 1, "{\"a\":1,\"b\":{\"c\":[1,2]}}");

    assert_int_equal(
        syncd_store_create(f->store, &c, "docs", "x/1", body, &err),
        SYNCD_EEXISTS);
    assert_null(c);

    assert_int_equal(syncd_store_put(f->store, &c, "docs", "x/1", next,
                                     SYNCD_ANY_VERSION, NULL),
                     0);
    assert_int_equal(c->op, SYNCD_CHANGE_UPDATE);
    assert_int_equal(c->base, 1);
    assert_int_equal(c->doc->version, 2);
    assert_json_text(c->patch, "[{\"op\":\"replace\",\"path\":\"/a\","
                               "\"value\":2}]");
    assert_json_text(c->merge, "{\"a\":2}");
    syncd_change_free(c);

    assert_int_equal(syncd_store_delete(f->store, &c, "docs", "x/1",
                                        SYNCD_ANY_VERSION, NULL),
                     0);
    assert_int_equal(c->op, SYNCD_CHANGE_DELETE);
    assert_int_equal(c->base, 2);
    assert_int_equal(c->doc->version, 3);
    assert_true(c->doc->deleted);
    assert_null(c->patch);
    assert_null(c->merge);
    syncd_change_free(c);

    syncd_error_clear(&err);
    assert_int_equal(
        syncd_store_get(f->store, &(syncd_doc_t *){NULL}, "docs", "x/1", &err),
        SYNCD_ENOTFOUND);
    assert_int_equal(syncd_store_delete(f->store, &c, "docs", "x/1",
                                        SYNCD_ANY_VERSION, NULL),
                     SYNCD_ENOTFOUND);

    assert_int_equal(
        syncd_store_create(f->store, &c, "docs", "x/1", body, NULL), 0);
    assert_int_equal(c->op, SYNCD_CHANGE_CREATE);
    assert_int_equal(c->base, 0);
    assert_int_equal(c->doc->version, 4);
    syncd_change_free(c);
    assert_doc(f, "docs", "x/1", 4, "{\"a\":1,\"b\":{\"c\":[1,2]}}");
    json_decref(body);
    json_decref(next);
}

static void test_store_put__without_if_match_creates_or_replaces(void **state)
{
    fixture_t *f = *state;
    int64_t v = 0;

    assert_int_equal(
        put_doc(f, "docs", "p", "{\"k\":1}", SYNCD_ANY_VERSION, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(
        put_doc(f, "docs", "p", "{\"k\":2}", SYNCD_ANY_VERSION, &v), 0);
    assert_int_equal(v, 2);
    assert_doc(f, "docs", "p", 2, "{\"k\":2}");
}

/* A body given up with _new is stored as it is, without a copy, and the
 * caller's reference is taken whether the write succeeds or fails. */
static void
test_store_put_new__keeps_the_given_tree_and_takes_its_reference(void **state)
{
    fixture_t *f = *state;
    json_t *body = parse("{\"k\":1,\"l\":[1,2]}");
    json_t *bad = json_array();
    syncd_write_options_t wo;
    syncd_change_t *c = NULL;

    syncd_write_options_init(&wo);
    json_incref(body);
    assert_int_equal(
        syncd_store_create_new(f->store, &c, "docs", "given", body, &wo, NULL),
        0);
    assert_ptr_equal(c->doc->body, body);
    syncd_change_free(c);
    json_decref(body);
    assert_doc(f, "docs", "given", 1, "{\"k\":1,\"l\":[1,2]}");

    body = parse("{\"k\":2}");
    assert_int_equal(
        syncd_store_put_new(f->store, &c, "docs", "given", body, &wo, NULL), 0);
    assert_int_equal(c->doc->version, 2);
    syncd_change_free(c);
    assert_doc(f, "docs", "given", 2, "{\"k\":2}");

    json_incref(bad);
    assert_int_equal(
        syncd_store_put_new(f->store, &c, "docs", "given", bad, &wo, NULL),
        SYNCD_EINVAL);
    assert_null(c);
    assert_int_equal(bad->refcount, 1);
    json_decref(bad);
    assert_doc(f, "docs", "given", 2, "{\"k\":2}");
}

/* ---- Writers' hash trees ------------------------------------------------- */

/* A large body, for the hash-tree and node-cache tests: members
 * m000..m(n-1), each {"n": i, "s": a 40-byte string}; about 70 bytes a
 * member, so 80 members pass SYNCD_TREE_MIN. */
static json_t *big_body(int n)
{
    json_t *body = json_object();
    char key[16];

    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "m%03d", i);
        json_object_set_new(
            body, key,
            json_pack("{s:i, s:s}", "n", i, "s",
                      "0123456789012345678901234567890123456789"));
    }
    return body;
}

/* Asserts that doc's hash is the content hash of its body, computed
 * afresh. */
static void assert_own_hash(const syncd_doc_t *doc)
{
    char want[SYNCD_HASH_HEX_LEN + 1];

    assert_int_equal(syncd_json_hash(want, doc->body, NULL), 0);
    assert_string_equal(doc->hash, want);
}

/* Asserts that "big"/id's stored version is version, its hash that of its
 * body, and (when want is not NULL) its body want. */
static void assert_stored_hash(fixture_t *f, const char *id, int64_t version,
                               const json_t *want)
{
    syncd_doc_t *doc = NULL;

    assert_int_equal(syncd_store_get(f->store, &doc, "big", id, NULL), 0);
    assert_int_equal(doc->version, version);
    assert_own_hash(doc);
    if (want != NULL)
        assert_json_exact(doc->body, want);
    syncd_doc_free(doc);
}

static uint64_t next_random(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* One random write of the hash-tree test to "big"/id at version *v (a live
 * record), of kind `kind`; *v follows the record. Every write must leave
 * the body it makes (the JSON Patch or merge patch applied by the patch
 * engine, the body put, or the body as it was), every version the hash of
 * its body, and the version read before it as it was. */
static void big_write(fixture_t *f, const char *id, int kind, uint64_t *x,
                      int64_t *v)
{
    char text[160];
    int m = (int)(next_random(x) % 120); /* 80 exist at first: adds too */
    syncd_change_t *c = NULL;
    syncd_doc_t *cur = NULL;
    json_t *arg = NULL, *want = NULL;
    char *before, *after;
    int rc;

    assert_int_equal(syncd_store_get(f->store, &cur, "big", id, NULL), 0);
    before = syncd_json_canonical(cur->body, NULL);
    switch (kind) {
    case 0: /* a whole-document PUT with one member changed, added or gone */
        arg = json_deep_copy(cur->body);
        snprintf(text, sizeof(text), "m%03d", m);
        if (m % 5 == 0)
            json_object_del(arg, text);
        else
            json_object_set_new(arg, text, json_integer((json_int_t)*x % 1000));
        want = json_incref(arg);
        rc = syncd_store_put(f->store, &c, "big", id, arg, SYNCD_ANY_VERSION,
                             NULL);
        break;
    case 1: /* a JSON Patch */
        snprintf(text, sizeof(text),
                 "[{\"op\":\"add\",\"path\":\"/m%03d\",\"value\":{\"n\":%d,"
                 "\"l\":[1,2.5,-0.0]}}]",
                 m, (int)(*x % 1000));
        arg = parse(text);
        assert_int_equal(syncd_patch_apply(&want, cur->body, arg, NULL), 0);
        rc = syncd_store_patch(f->store, &c, "big", id, arg, 0, *v, NULL);
        break;
    case 2: /* a merge patch */
        snprintf(text, sizeof(text), "{\"m%03d\":%s}", m,
                 m % 3 == 0 ? "null" : "{\"s\":\"merged\",\"x\":{\"y\":0.0}}");
        arg = parse(text);
        assert_int_equal(syncd_merge_apply(&want, cur->body, arg, NULL), 0);
        rc = syncd_store_patch(f->store, &c, "big", id, arg, 1,
                               SYNCD_ANY_VERSION, NULL);
        break;
    case 3: /* the same body again: nothing written */
        rc = syncd_store_put(f->store, &c, "big", id, cur->body,
                             SYNCD_ANY_VERSION, NULL);
        assert_int_equal(rc, 0);
        assert_int_equal(c->op, SYNCD_CHANGE_NONE);
        break;
    case 4: /* a stale strict write: refused, nothing written */
        arg = big_body(81);
        rc = syncd_store_put(f->store, &c, "big", id, arg, *v + 1, NULL);
        assert_int_equal(rc, SYNCD_EPRECONDITION);
        break;
    case 5: /* a JSON Patch whose test fails: refused, nothing written */
        arg = parse("[{\"op\":\"replace\",\"path\":\"/m001/n\",\"value\":7},"
                    "{\"op\":\"test\",\"path\":\"/m001/n\",\"value\":8}]");
        rc = syncd_store_patch(f->store, &c, "big", id, arg, 0,
                               SYNCD_ANY_VERSION, NULL);
        assert_true(rc < 0);
        break;
    default: /* the outbox ack that follows a publish */
        rc = syncd_store_outbox_ack(f->store, "big", id, *v, NULL);
        assert_int_equal(rc, 0);
        break;
    }
    if (want == NULL)
        want = json_incref(cur->body);
    if (rc == 0 && c != NULL) {
        assert_own_hash(c->doc);
        assert_int_equal(c->op, json_equal(want, cur->body)
                                    ? SYNCD_CHANGE_NONE
                                    : SYNCD_CHANGE_UPDATE);
        *v = c->doc->version;
    }
    syncd_change_free(c);
    /* The version read before is as it was: versions are immutable. */
    after = syncd_json_canonical(cur->body, NULL);
    assert_string_equal(after, before);
    free(before);
    free(after);
    syncd_doc_free(cur);
    json_decref(arg);
    assert_stored_hash(f, id, *v, want);
    json_decref(want);
}

static void
test_store_big_writes__every_version_carries_the_hash_of_its_body(void **state)
{
    fixture_t *f = *state;
    json_t *body = big_body(80);
    syncd_change_t *c = NULL;
    uint64_t x = 0x9e3779b97f4a7c15u;
    int64_t v;

    assert_true(json_dumpb(body, NULL, 0, JSON_COMPACT) > SYNCD_TREE_MIN);
    assert_int_equal(syncd_store_create(f->store, &c, "big", "d", body, NULL),
                     0);
    v = c->doc->version;
    syncd_change_free(c);
    for (int round = 0; round < 600; round++) {
        big_write(f, "d", (int)(next_random(&x) % 7), &x, &v);
        if (round % 150 == 149) {
            /* Deleted and made again, then the store reopened: the next
             * writes start without any tree. */
            assert_int_equal(
                syncd_store_delete(f->store, &c, "big", "d", v, NULL), 0);
            syncd_change_free(c);
            assert_int_equal(
                syncd_store_create(f->store, &c, "big", "d", body, NULL), 0);
            assert_own_hash(c->doc);
            v = c->doc->version;
            syncd_change_free(c);
            reopen(f);
        }
    }
    json_decref(body);
}

typedef struct big_writer {
    syncd_store_t *store;
    int thread;
    int bad_hashes, failures;
} big_writer_t;

/* Patches members of its own of "big"/"c" 60 times (each a new value),
 * acking each version, and counts the changes whose hash is not that of
 * their body. */
static void *big_writer_thread(void *arg)
{
    big_writer_t *w = arg;
    char text[128], want[SYNCD_HASH_HEX_LEN + 1];

    for (int i = 0; i < 60; i++) {
        syncd_change_t *c = NULL;
        json_t *patch;

        if (i % 2 == 0)
            snprintf(text, sizeof(text),
                     "[{\"op\":\"replace\",\"path\":\"/m%03d/n\","
                     "\"value\":%d}]",
                     w->thread * 10 + i % 10, 1000 + i);
        else
            snprintf(text, sizeof(text), "{\"m%03d\":{\"n\":%d}}",
                     w->thread * 10 + i % 10, 1000 + i);
        patch = json_loads(text, 0, NULL);
        if (syncd_store_patch(w->store, &c, "big", "c", patch, i % 2,
                              SYNCD_ANY_VERSION, NULL) != 0 ||
            syncd_store_outbox_ack(w->store, "big", "c", c->doc->version,
                                   NULL) != 0) {
            w->failures++;
        } else if (syncd_json_hash(want, c->doc->body, NULL) != 0 ||
                   strcmp(want, c->doc->hash) != 0) {
            w->bad_hashes++;
        }
        syncd_change_free(c);
        json_decref(patch);
    }
    return NULL;
}

static void
test_store_big_writes__concurrent_writers_and_acks_keep_every_hash_true(
    void **state)
{
    fixture_t *f = *state;
    json_t *body = big_body(80);
    big_writer_t w[4];
    pthread_t threads[4];
    syncd_change_t *c = NULL;

    f->opts.max_retries = 100000;
    f->opts.retry_delay_ms = 1;
    f->opts.max_retry_delay_ms = 20;
    f->opts.edit_timeout_ms = 600000;
    reopen(f);
    assert_int_equal(syncd_store_create(f->store, &c, "big", "c", body, NULL),
                     0);
    syncd_change_free(c);
    json_decref(body);
    for (int i = 0; i < 4; i++) {
        w[i] = (big_writer_t){f->store, i, 0, 0};
        assert_int_equal(
            pthread_create(&threads[i], NULL, big_writer_thread, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(w[i].failures, 0);
        assert_int_equal(w[i].bad_hashes, 0);
    }
    assert_stored_hash(f, "c", 1 + 4 * 60, NULL);
    reopen(f);
    assert_stored_hash(f, "c", 1 + 4 * 60, NULL);
}

static void test_store_put__same_body_writes_nothing(void **state)
{
    fixture_t *f = *state;
    json_t *b = parse("{\"k\":1}");
    syncd_change_t *c = NULL;

    create_doc(f, "docs", "same", "{\"k\":1}");
    assert_int_equal(syncd_store_put(f->store, &c, "docs", "same", b,
                                     SYNCD_ANY_VERSION, NULL),
                     0);
    assert_int_equal(c->op, SYNCD_CHANGE_NONE);
    assert_int_equal(c->doc->version, 1);
    assert_null(c->patch);
    syncd_change_free(c);
    assert_int_equal(live_version(f, "docs", "same"), 1);
    json_decref(b);
}

/* ---- Strict writes ------------------------------------------------------ */

static void
test_store_put__stale_if_match_fails_with_EPRECONDITION_and_changes_nothing(
    void **state)
{
    fixture_t *f = *state;
    syncd_change_t *c = NULL;
    syncd_error_t err;
    int64_t v = 0;

    create_doc(f, "docs", "s", "{\"v\":\"one\"}");
    assert_int_equal(put_doc(f, "docs", "s", "{\"v\":\"two\"}", 1, &v), 0);
    assert_int_equal(v, 2);
    assert_int_equal(put_doc(f, "docs", "s", "{\"v\":\"three\"}", 1, NULL),
                     SYNCD_EPRECONDITION);
    assert_doc(f, "docs", "s", 2, "{\"v\":\"two\"}");

    syncd_error_clear(&err);
    assert_int_equal(syncd_store_delete(f->store, &c, "docs", "s", 1, &err),
                     SYNCD_EPRECONDITION);
    assert_non_null(strstr(err.message, "version 2"));
    assert_doc(f, "docs", "s", 2, "{\"v\":\"two\"}");

    assert_int_equal(
        syncd_store_edit(f->store, &c, "docs", "s", inc_counter, NULL, 5, NULL),
        SYNCD_EPRECONDITION);
    assert_doc(f, "docs", "s", 2, "{\"v\":\"two\"}");
    assert_int_equal(put_doc(f, "docs", "absent", "{}", 1, NULL),
                     SYNCD_ENOTFOUND);
}

static void
test_store_edit__strict_write_that_loses_a_race_is_one_attempt(void **state)
{
    fixture_t *f = *state;
    forcer_t fc = {f->store, "docs", "race", 0};
    syncd_change_t *c = NULL;

    create_doc(f, "docs", "race", "{}");
    assert_int_equal(syncd_store_edit(f->store, &c, "docs", "race",
                                      force_conflict, &fc, 1, NULL),
                     SYNCD_EPRECONDITION);
    assert_int_equal(fc.calls, 1);
    assert_doc(f, "docs", "race", 2, "{\"bump\":1}");
}

/* ---- The edit loop ------------------------------------------------------ */

static void
test_store_edit__commits_the_callback_result_with_diffs(void **state)
{
    fixture_t *f = *state;
    syncd_change_t *c = NULL;

    create_doc(f, "docs", "e", "{\"n\":41,\"keep\":null}");
    assert_int_equal(syncd_store_edit(f->store, &c, "docs", "e", inc_counter,
                                      NULL, SYNCD_ANY_VERSION, NULL),
                     0);
    assert_int_equal(c->op, SYNCD_CHANGE_UPDATE);
    assert_int_equal(c->attempts, 1);
    assert_int_equal(c->base, 1);
    assert_int_equal(c->doc->version, 2);
    assert_json_text(c->patch,
                     "[{\"op\":\"replace\",\"path\":\"/n\",\"value\":42}]");
    assert_json_text(c->merge, "{\"n\":42}");
    syncd_change_free(c);
    assert_doc(f, "docs", "e", 2, "{\"n\":42,\"keep\":null}");
}

static void test_store_edit__no_change_writes_nothing(void **state)
{
    fixture_t *f = *state;
    syncd_store_stats_t before, after;
    syncd_change_t *c = NULL;

    create_doc(f, "docs", "same", "{\"n\":1}");
    syncd_store_stats(f->store, &before);
    assert_int_equal(syncd_store_edit(f->store, &c, "docs", "same",
                                      leave_unchanged, NULL, SYNCD_ANY_VERSION,
                                      NULL),
                     0);
    assert_int_equal(c->op, SYNCD_CHANGE_NONE);
    assert_int_equal(c->doc->version, 1);
    assert_null(c->patch);
    assert_null(c->merge);
    syncd_change_free(c);
    syncd_store_stats(f->store, &after);
    assert_int_equal(after.edits, before.edits);
    assert_int_equal(live_version(f, "docs", "same"), 1);
}

static void
test_store_edit__callback_error_aborts_and_writes_nothing(void **state)
{
    fixture_t *f = *state;
    syncd_change_t *c = NULL;
    syncd_error_t err;

    create_doc(f, "docs", "abort", "{\"n\":1}");
    syncd_error_clear(&err);
    assert_int_equal(syncd_store_edit(f->store, &c, "docs", "abort",
                                      fail_with_einval, NULL, SYNCD_ANY_VERSION,
                                      &err),
                     SYNCD_EINVAL);
    assert_string_equal(err.message, "the callback refused");
    assert_null(c);
    assert_doc(f, "docs", "abort", 1, "{\"n\":1}");
}

static void
test_store_edit__missing_or_deleted_document_is_ENOTFOUND(void **state)
{
    fixture_t *f = *state;
    syncd_change_t *c = NULL;

    assert_int_equal(syncd_store_edit(f->store, &c, "docs", "none", inc_counter,
                                      NULL, SYNCD_ANY_VERSION, NULL),
                     SYNCD_ENOTFOUND);
    create_doc(f, "docs", "gone", "{}");
    assert_int_equal(syncd_store_delete(f->store, &c, "docs", "gone",
                                        SYNCD_ANY_VERSION, NULL),
                     0);
    syncd_change_free(c);
    assert_int_equal(syncd_store_edit(f->store, &c, "docs", "gone", inc_counter,
                                      NULL, SYNCD_ANY_VERSION, NULL),
                     SYNCD_ENOTFOUND);
}

static void test_store_edit__retries_a_conflict_after_rereading(void **state)
{
    fixture_t *f = *state;
    forcer_t fc = {f->store, "docs", "retry", 0};
    syncd_store_stats_t stats;
    syncd_change_t *c = NULL;

    use_fake_hooks(f, 1000);
    fc.store = f->store;
    create_doc(f, "docs", "retry", "{}");
    assert_int_equal(syncd_store_edit(f->store, &c, "docs", "retry",
                                      force_conflict, &fc, SYNCD_ANY_VERSION,
                                      NULL),
                     SYNCD_ECONFLICT);
    /* Each attempt re-read the version the previous callback wrote. */
    assert_doc(f, "docs", "retry", 12, "{\"bump\":11}");
    syncd_store_stats(f->store, &stats);
    assert_int_equal(stats.conflicts, 11);
    assert_int_equal(stats.retries, 10);
}

static void
test_store_edit__gives_up_at_max_retries_with_ECONFLICT(void **state)
{
    fixture_t *f = *state;
    forcer_t fc = {NULL, "docs", "busy", 0};
    syncd_change_t *c = NULL;
    syncd_error_t err;

    f->opts.max_retries = 3;
    use_fake_hooks(f, 1000);
    fc.store = f->store;
    create_doc(f, "docs", "busy", "{}");
    syncd_error_clear(&err);
    assert_int_equal(syncd_store_edit(f->store, &c, "docs", "busy",
                                      force_conflict, &fc, SYNCD_ANY_VERSION,
                                      &err),
                     SYNCD_ECONFLICT);
    assert_null(c);
    assert_int_equal(fc.calls, 4);
    assert_int_equal(f->fake.nslept, 3);
    assert_non_null(strstr(err.message, "max_retries 3"));
    assert_doc(f, "docs", "busy", 5, "{\"bump\":4}");
}

static void
test_store_edit__gives_up_at_edit_timeout_with_ECONFLICT(void **state)
{
    fixture_t *f = *state;
    forcer_t fc = {NULL, "docs", "slow", 0};
    syncd_change_t *c = NULL;
    syncd_error_t err;
    int64_t slept = 0;

    f->opts.max_retries = 1000;
    f->opts.retry_delay_ms = 40;
    f->opts.max_retry_delay_ms = 40;
    f->opts.edit_timeout_ms = 100;
    use_fake_hooks(f, 5000);
    f->fake.rnd = 40; /* every backoff is the full 40 ms */
    fc.store = f->store;
    create_doc(f, "docs", "slow", "{}");
    syncd_error_clear(&err);
    assert_int_equal(syncd_store_edit(f->store, &c, "docs", "slow",
                                      force_conflict, &fc, SYNCD_ANY_VERSION,
                                      &err),
                     SYNCD_ECONFLICT);
    assert_non_null(strstr(err.message, "edit_timeout"));
    /* Sleeps of 40 + 40 fit in 100 ms; a third would not. */
    assert_int_equal(f->fake.nslept, 2);
    for (int i = 0; i < f->fake.nslept; i++)
        slept += f->fake.slept[i];
    assert_int_equal(slept, 80);
    assert_int_equal(fc.calls, 3);
}

static void
test_store_edit__backoff_doubles_up_to_the_cap_with_full_jitter(void **state)
{
    fixture_t *f = *state;
    static const int64_t caps[] = {5, 10, 20, 40, 40};
    forcer_t fc = {NULL, "docs", "jitter", 0};
    syncd_change_t *c = NULL;

    f->opts.max_retries = 5;
    f->opts.retry_delay_ms = 5;
    f->opts.max_retry_delay_ms = 40;
    use_fake_hooks(f, 0);
    fc.store = f->store;
    create_doc(f, "docs", "jitter", "{}");

    /* A random value equal to the cap sleeps the cap: the bound is
     * inclusive, and it doubles per attempt up to max_retry_delay. */
    for (int i = 0; i < 5; i++)
        f->fake.queue[i] = (uint64_t)caps[i];
    f->fake.nqueue = 5;
    assert_int_equal(syncd_store_edit(f->store, &c, "docs", "jitter",
                                      force_conflict, &fc, SYNCD_ANY_VERSION,
                                      NULL),
                     SYNCD_ECONFLICT);
    assert_int_equal(f->fake.nslept, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(f->fake.slept[i], caps[i]);

    /* One past the cap wraps to 0: nothing above the cap is ever drawn. */
    f->fake.nslept = f->fake.next = 0;
    for (int i = 0; i < 5; i++)
        f->fake.queue[i] = (uint64_t)caps[i] + 1;
    assert_int_equal(syncd_store_edit(f->store, &c, "docs", "jitter",
                                      force_conflict, &fc, SYNCD_ANY_VERSION,
                                      NULL),
                     SYNCD_ECONFLICT);
    for (int i = 0; i < 5; i++)
        assert_int_equal(f->fake.slept[i], 0);
}

static void
test_backoff__stays_within_zero_and_the_capped_exponential(void **state)
{
    uint64_t rnd = 0x12345678abcdefULL;

    (void)state;
    assert_int_equal(syncd_backoff_ms(0, 5, 1000, 5), 5);
    assert_int_equal(syncd_backoff_ms(3, 5, 1000, 40), 40);
    assert_int_equal(syncd_backoff_ms(3, 5, 1000, 41), 0);
    assert_int_equal(syncd_backoff_ms(60, 5, 1000, 1000), 1000);
    assert_int_equal(syncd_backoff_ms(2, 0, 1000, rnd), 0);
    for (int attempt = 0; attempt < 70; attempt++) {
        int64_t cap = attempt < 8 ? 5LL << attempt : 1000;

        if (cap > 1000)
            cap = 1000;
        for (int i = 0; i < 50; i++) {
            int64_t d;

            rnd = rnd * 6364136223846793005ULL + 1442695040888963407ULL;
            d = syncd_backoff_ms(attempt, 5, 1000, rnd);
            assert_true(d >= 0 && d <= cap);
        }
    }
}

/* ---- Patch-based edits -------------------------------------------------- */

static void test_store_patch__applies_json_patch_and_merge_patch(void **state)
{
    fixture_t *f = *state;
    json_t *patch = parse("[{\"op\":\"add\",\"path\":\"/list/-\",\"value\":3},"
                          "{\"op\":\"remove\",\"path\":\"/gone\"}]");
    json_t *merge = parse("{\"m\":{\"x\":null,\"y\":2}}");
    syncd_change_t *c = NULL;

    create_doc(f, "docs", "pt",
               "{\"list\":[1,2],\"gone\":true,\"m\":{\"x\":1}}");
    assert_int_equal(syncd_store_patch(f->store, &c, "docs", "pt", patch, 0,
                                       SYNCD_ANY_VERSION, NULL),
                     0);
    assert_int_equal(c->doc->version, 2);
    syncd_change_free(c);
    assert_int_equal(
        syncd_store_patch(f->store, &c, "docs", "pt", merge, 1, 2, NULL), 0);
    assert_json_text(c->merge, "{\"m\":{\"x\":null,\"y\":2}}");
    syncd_change_free(c);
    assert_doc(f, "docs", "pt", 3, "{\"list\":[1,2,3],\"m\":{\"y\":2}}");
    json_decref(patch);
    json_decref(merge);
}

/* Applies c's patch to before (JSON text) and checks that it gives c's
 * body. */
static void assert_change_patch_applies(const syncd_change_t *c,
                                        const char *before)
{
    json_t *old = parse(before), *out = NULL;

    assert_int_equal(syncd_patch_apply(&out, old, c->patch, NULL), 0);
    assert_json_exact(out, c->doc->body);
    json_decref(old);
    json_decref(out);
}

static void
test_store_patch__change_of_a_json_patch_holds_its_diffs_and_merge(void **state)
{
    fixture_t *f = *state;
    const char *v1 = "{\"keep\":[1,2,3],\"n\":null,\"v\":{\"x\":1,\"y\":[5]}}";
    const char *v2 =
        "{\"keep\":[1,2,3],\"n\":null,\"v\":{\"x\":2,\"y\":[4,5]}}";
    json_t *patch = parse("[{\"op\":\"test\",\"path\":\"/keep/0\",\"value\":1},"
                          "{\"op\":\"replace\",\"path\":\"/v/x\",\"value\":2},"
                          "{\"op\":\"add\",\"path\":\"/v/y/0\",\"value\":4}]");
    json_t *to_null = parse("[{\"op\":\"move\",\"from\":\"/keep\","
                            "\"path\":\"/v/k\"},{\"op\":\"add\",\"path\":"
                            "\"/v/x\",\"value\":null}]");
    syncd_change_t *c = NULL;

    create_doc(f, "docs", "pd", v1);
    assert_int_equal(syncd_store_patch(f->store, &c, "docs", "pd", patch, 0,
                                       SYNCD_ANY_VERSION, NULL),
                     0);
    assert_json_text(c->patch,
                     "[{\"op\":\"replace\",\"path\":\"/v/x\",\"value\":2},"
                     "{\"op\":\"add\",\"path\":\"/v/y/0\",\"value\":4}]");
    assert_json_text(c->merge, "{\"v\":{\"x\":2,\"y\":[4,5]}}");
    assert_change_patch_applies(c, v1);
    syncd_change_free(c);
    /* A member set to null: no merge patch can say it. */
    assert_int_equal(syncd_store_patch(f->store, &c, "docs", "pd", to_null, 0,
                                       SYNCD_ANY_VERSION, NULL),
                     0);
    assert_null(c->merge);
    assert_change_patch_applies(c, v2);
    syncd_change_free(c);
    assert_doc(f, "docs", "pd", 3,
               "{\"n\":null,\"v\":{\"k\":[1,2,3],\"x\":null,\"y\":[4,5]}}");
    json_decref(patch);
    json_decref(to_null);
}

static void
test_store_patch__failing_test_op_is_ECONFLICT_and_not_retried(void **state)
{
    fixture_t *f = *state;
    json_t *patch = parse("[{\"op\":\"test\",\"path\":\"/n\",\"value\":2},"
                          "{\"op\":\"replace\",\"path\":\"/n\",\"value\":3}]");
    syncd_store_stats_t stats;
    syncd_change_t *c = NULL;

    use_fake_hooks(f, 0);
    create_doc(f, "docs", "t", "{\"n\":1}");
    assert_int_equal(syncd_store_patch(f->store, &c, "docs", "t", patch, 0,
                                       SYNCD_ANY_VERSION, NULL),
                     SYNCD_ECONFLICT);
    syncd_store_stats(f->store, &stats);
    assert_int_equal(stats.conflicts, 0);
    assert_int_equal(stats.retries, 0);
    assert_int_equal(f->fake.nslept, 0);
    assert_doc(f, "docs", "t", 1, "{\"n\":1}");
    json_decref(patch);
}

static void test_store_patch__invalid_patch_is_EPATCH(void **state)
{
    fixture_t *f = *state;
    json_t *bad = parse("[{\"op\":\"jump\",\"path\":\"/n\"}]");
    json_t *missing = parse("[{\"op\":\"remove\",\"path\":\"/nope\"}]");
    syncd_change_t *c = NULL;

    create_doc(f, "docs", "ip", "{\"n\":1}");
    assert_int_equal(syncd_store_patch(f->store, &c, "docs", "ip", bad, 0,
                                       SYNCD_ANY_VERSION, NULL),
                     SYNCD_EPATCH);
    assert_int_equal(syncd_store_patch(f->store, &c, "docs", "ip", missing, 0,
                                       SYNCD_ANY_VERSION, NULL),
                     SYNCD_EPATCH);
    assert_doc(f, "docs", "ip", 1, "{\"n\":1}");
    json_decref(bad);
    json_decref(missing);
}

/* ---- No lost update ----------------------------------------------------- */

typedef struct hammer {
    syncd_store_t *store;
    int edits;
    int failures;
} hammer_t;

static void *hammer_thread(void *arg)
{
    hammer_t *h = arg;

    for (int i = 0; i < h->edits; i++) {
        syncd_change_t *c = NULL;

        if (syncd_store_edit(h->store, &c, "counters", "c", inc_counter, NULL,
                             SYNCD_ANY_VERSION, NULL) != 0)
            __atomic_add_fetch(&h->failures, 1, __ATOMIC_RELAXED);
        syncd_change_free(c);
    }
    return NULL;
}

/* Runs nthreads writers of `edits` increments each and checks the total. */
static void run_hammer(fixture_t *f, int nthreads, int edits)
{
    hammer_t h = {NULL, edits, 0};
    pthread_t *threads = calloc((size_t)nthreads, sizeof(*threads));
    char want[64];

    f->opts.max_retries = 100000;
    f->opts.retry_delay_ms = 1;
    f->opts.max_retry_delay_ms = 20;
    f->opts.edit_timeout_ms = 600000;
    f->opts.sync_writes = 0;
    reopen(f);
    h.store = f->store;
    create_doc(f, "counters", "c", "{\"n\":0}");
    for (int i = 0; i < nthreads; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, hammer_thread, &h),
                         0);
    for (int i = 0; i < nthreads; i++)
        pthread_join(threads[i], NULL);
    free(threads);
    assert_int_equal(h.failures, 0);
    snprintf(want, sizeof(want), "{\"n\":%d}", nthreads * edits);
    assert_doc(f, "counters", "c", 1 + (int64_t)nthreads * edits, want);
}

static void
test_store_edit__8_threads_x_500_increments_lose_nothing(void **state)
{
    run_hammer(*state, 8, 500);
}

/* Fewer increments per thread on MongoDB keep the FerretDB run short. */
static void test_store_edit__64_threads_lose_nothing(void **state)
{
    fixture_t *f = *state;

    run_hammer(f, 64, f->kind->mongo ? 5 : 50);
}

/* Every write of one writer thread of the embedded store: an edit and a
 * merge patch of the shared counter document, a blind put of another. */
typedef struct queued_writer {
    syncd_store_t *store;
    int thread, rounds;
    int failures, retried; /* changes that took more than one attempt */
} queued_writer_t;

/* Counts the outcome of one write and frees its change. */
static void count_write(queued_writer_t *w, int rc, syncd_change_t **c)
{
    if (rc != 0)
        w->failures++;
    else if ((*c)->attempts != 1)
        w->retried++;
    syncd_change_free(*c);
    *c = NULL;
}

static void *queued_writer_thread(void *arg)
{
    queued_writer_t *w = arg;
    syncd_change_t *c = NULL;
    char field[16];
    int rc;

    snprintf(field, sizeof(field), "t%d", w->thread);
    for (int i = 0; i < w->rounds; i++) {
        json_t *merge = json_pack("{s:i}", field, i);
        json_t *body = json_pack("{s:i, s:i}", "by", w->thread, "i", i);

        rc = syncd_store_edit(w->store, &c, "q", "counter", inc_counter, NULL,
                              SYNCD_ANY_VERSION, NULL);
        count_write(w, rc, &c);
        rc = syncd_store_patch(w->store, &c, "q", "counter", merge, 1,
                               SYNCD_ANY_VERSION, NULL);
        count_write(w, rc, &c);
        rc = syncd_store_put(w->store, &c, "q", "blind", body,
                             SYNCD_ANY_VERSION, NULL);
        count_write(w, rc, &c);
        json_decref(merge);
        json_decref(body);
    }
    return NULL;
}

/* With no retry allowed, a single conflict would fail a write: the
 * embedded store queues the writers of a document instead. */
static void
test_store_rocks__8_writers_of_one_document_never_conflict(void **state)
{
    enum { THREADS = 8, ROUNDS = 200 };
    fixture_t *f = *state;
    queued_writer_t w[THREADS];
    pthread_t threads[THREADS];
    syncd_store_stats_t stats;
    syncd_doc_t *doc = NULL;

    f->opts.max_retries = 0;
    f->opts.sync_writes = 0;
    reopen(f);
    create_doc(f, "q", "counter", "{\"n\":0}");
    for (int i = 0; i < THREADS; i++) {
        w[i] = (queued_writer_t){f->store, i, ROUNDS, 0, 0};
        assert_int_equal(
            pthread_create(&threads[i], NULL, queued_writer_thread, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(w[i].failures, 0);
        assert_int_equal(w[i].retried, 0);
    }
    syncd_store_stats(f->store, &stats);
    assert_int_equal(stats.conflicts, 0);
    assert_int_equal(stats.retries, 0);
    assert_int_equal(stats.edits, 1 + 3 * THREADS * ROUNDS);
    assert_int_equal(syncd_store_get(f->store, &doc, "q", "counter", NULL), 0);
    assert_int_equal(doc->version, 1 + 2 * THREADS * ROUNDS);
    assert_int_equal(json_integer_value(json_object_get(doc->body, "n")),
                     THREADS * ROUNDS);
    syncd_doc_free(doc);
    assert_int_equal(live_version(f, "q", "blind"), THREADS * ROUNDS);
}

/* GET's text: the canonical JSON of the live version (keys sorted, whatever
 * their order in the write), made once and then served from memory (memory_only
 * answers without the store); a write replaces it, so memory never answers with
 * an older version, and a deleted document is never served. */
static void test_store_get_text__serves_each_version_once_made(void **state)
{
    fixture_t *f = *state;
    syncd_store_stats_t before, after;
    int64_t version = 0;
    char *text = NULL;
    size_t len = 0;
    int rc;

    create_doc(f, "gt", "a", "{\"b\":1,\"a\":[true,null]}");
    assert_int_equal(syncd_store_get_text(f->store, &text, &len, &version, "gt",
                                          "a", 0, NULL),
                     0);
    assert_string_equal(text, "{\"a\":[true,null],\"b\":1}");
    assert_int_equal(len, strlen(text));
    assert_int_equal(version, 1);
    free(text);

    syncd_store_stats(f->store, &before);
    assert_int_equal(syncd_store_get_text(f->store, &text, &len, &version, "gt",
                                          "a", 1, NULL),
                     0);
    assert_string_equal(text, "{\"a\":[true,null],\"b\":1}");
    assert_int_equal(version, 1);
    free(text);
    syncd_store_stats(f->store, &after);
    assert_int_equal(after.cache_hits, before.cache_hits + 1);

    assert_int_equal(
        put_doc(f, "gt", "a", "{\"c\":2}", SYNCD_ANY_VERSION, NULL), 0);
    rc = syncd_store_get_text(f->store, &text, &len, &version, "gt", "a", 1,
                              NULL);
    assert_true(rc == 1 || rc == 0);
    if (rc == 0) {
        assert_int_equal(version, 2);
        assert_string_equal(text, "{\"c\":2}");
        free(text);
    }
    assert_int_equal(syncd_store_get_text(f->store, &text, &len, &version, "gt",
                                          "a", 0, NULL),
                     0);
    assert_int_equal(version, 2);
    assert_string_equal(text, "{\"c\":2}");
    free(text);

    {
        syncd_change_t *c = NULL;

        assert_int_equal(syncd_store_delete(f->store, &c, "gt", "a",
                                            SYNCD_ANY_VERSION, NULL),
                         0);
        syncd_change_free(c);
    }
    rc = syncd_store_get_text(f->store, &text, &len, &version, "gt", "a", 1,
                              NULL);
    assert_true(rc == 1 || rc == SYNCD_ENOTFOUND);
    assert_null(text);
    assert_int_equal(syncd_store_get_text(f->store, &text, &len, &version, "gt",
                                          "a", 0, NULL),
                     SYNCD_ENOTFOUND);
    assert_null(text);
}

/* In embedded mode the cache counters are those of the RocksDB store's
 * in-memory tier: a reopened store starts with it empty, a read misses and
 * loads the document into it, the next read hits. */
static void test_store_rocks__stats_count_the_in_memory_tier(void **state)
{
    fixture_t *f = *state;
    syncd_store_stats_t stats;
    syncd_doc_t *doc = NULL;

    create_doc(f, "tier", "a", "{\"x\":1}");
    reopen(f);
    syncd_store_stats(f->store, &stats);
    assert_int_equal(stats.cache_entries, 0);
    assert_int_equal(stats.cache_bytes, 0);

    for (int i = 0; i < 2; i++) {
        assert_int_equal(syncd_store_get(f->store, &doc, "tier", "a", NULL), 0);
        syncd_doc_free(doc);
    }
    assert_int_equal(syncd_store_get(f->store, &doc, "tier", "none", NULL),
                     SYNCD_ENOTFOUND);
    syncd_store_stats(f->store, &stats);
    assert_int_equal(stats.cache_hits, 1);
    assert_int_equal(stats.cache_misses, 2);
    assert_int_equal(stats.cache_entries, 1);
    assert_true(stats.cache_bytes > 0);
    assert_int_equal(stats.cache_evictions, 0);
}

/* 40 documents of 520 KB (20 MB) through a tier of 16 MiB: some are
 * evicted, each counted once, and the tier stays within its bound. */
static void test_store_rocks__stats_count_tier_evictions(void **state)
{
    enum { DOCS = 40, PAD = 520 * 1024 };
    fixture_t *f = *state;
    char *pad = malloc(PAD + 1);
    syncd_store_stats_t stats;

    assert_non_null(pad);
    memset(pad, 'x', PAD);
    pad[PAD] = '\0';
    f->opts.sync_writes = 0;
    f->opts.cache_max_bytes = (uint64_t)16 << 20;
    reopen(f);
    for (int i = 0; i < DOCS; i++) {
        char id[16];
        json_t *body = json_pack("{s:s}", "pad", pad);
        syncd_change_t *c = NULL;

        snprintf(id, sizeof(id), "d%d", i);
        assert_int_equal(
            syncd_store_create(f->store, &c, "big", id, body, NULL), 0);
        syncd_change_free(c);
        json_decref(body);
    }
    free(pad);
    syncd_store_stats(f->store, &stats);
    assert_true(stats.cache_evictions >= 1);
    assert_int_equal(stats.cache_entries + stats.cache_evictions, DOCS);
    assert_true(stats.cache_bytes <= (uint64_t)16 << 20);
}

/* In embedded mode cache_max_bytes bounds the store's in-memory tier:
 * 2 MB of documents through a 256 KiB tier leave it within the bound,
 * having evicted. */
static void test_store_rocks__tier_stays_within_cache_max_bytes(void **state)
{
    enum { DOCS = 100, PAD = 20 * 1024 };
    fixture_t *f = *state;
    char *pad = malloc(PAD + 1);
    syncd_store_stats_t stats;

    assert_non_null(pad);
    memset(pad, 'y', PAD);
    pad[PAD] = '\0';
    f->opts.sync_writes = 0;
    f->opts.cache_max_bytes = (uint64_t)256 << 10;
    reopen(f);
    for (int i = 0; i < DOCS; i++) {
        char id[16];
        json_t *body = json_pack("{s:s}", "pad", pad);
        syncd_change_t *c = NULL;

        snprintf(id, sizeof(id), "d%d", i);
        assert_int_equal(
            syncd_store_create(f->store, &c, "bound", id, body, NULL), 0);
        syncd_change_free(c);
        json_decref(body);
    }
    free(pad);
    syncd_store_stats(f->store, &stats);
    assert_true(stats.cache_bytes <= (uint64_t)256 << 10);
    assert_true(stats.cache_evictions > 0);
    assert_int_equal(stats.cache_entries + stats.cache_evictions, DOCS);
}

/* In embedded mode cache_ttl is the lifetime of a tier entry: a read
 * within it hits, a read after it misses and loads the record again. */
static void test_store_rocks__tier_entries_live_for_cache_ttl(void **state)
{
    fixture_t *f = *state;
    syncd_store_stats_t stats;
    syncd_doc_t *doc = NULL;

    f->opts.cache_ttl_ms = 1000;
    use_fake_hooks(f, 5000);
    create_doc(f, "ttl", "a", "{\"x\":1}");
    reopen(f);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(syncd_store_get(f->store, &doc, "ttl", "a", NULL), 0);
        syncd_doc_free(doc);
    }
    syncd_store_stats(f->store, &stats);
    assert_int_equal(stats.cache_misses, 1);
    assert_int_equal(stats.cache_hits, 1);

    f->fake.now += 999;
    assert_int_equal(syncd_store_get(f->store, &doc, "ttl", "a", NULL), 0);
    syncd_doc_free(doc);
    f->fake.now += 1;
    assert_int_equal(syncd_store_get(f->store, &doc, "ttl", "a", NULL), 0);
    assert_int_equal(json_integer_value(json_object_get(doc->body, "x")), 1);
    syncd_doc_free(doc);
    syncd_store_stats(f->store, &stats);
    assert_int_equal(stats.cache_hits, 2);
    assert_int_equal(stats.cache_misses, 2);
    assert_int_equal(stats.cache_entries, 1);
}

/* Readers and writers of 128 documents racing through a tier that holds
 * about one per stripe, so that they keep evicting one another. */
typedef struct tier_race {
    syncd_store_t *store;
    int stop, backwards, mismatched, failures;
} tier_race_t;

#define TIER_RACE_KEYS 128

static int bump_v(json_t *body, void *arg, syncd_error_t *err)
{
    (void)arg;
    (void)err;
    return json_object_set_new(
               body, "v",
               json_integer(json_integer_value(json_object_get(body, "v")) +
                            1)) == 0
               ? 0
               : SYNCD_ENOMEM;
}

static void *tier_race_writer(void *arg)
{
    tier_race_t *r = arg;
    char id[32];

    for (int i = 0; i < 4 * TIER_RACE_KEYS; i++) {
        syncd_change_t *c = NULL;

        snprintf(id, sizeof(id), "hot-%d", i % TIER_RACE_KEYS);
        if (syncd_store_edit(r->store, &c, "rr", id, bump_v, NULL,
                             SYNCD_ANY_VERSION, NULL) != 0)
            __atomic_add_fetch(&r->failures, 1, __ATOMIC_RELAXED);
        syncd_change_free(c);
    }
    return NULL;
}

static void *tier_race_reader(void *arg)
{
    tier_race_t *r = arg;
    int64_t seen[TIER_RACE_KEYS] = {0};
    char id[32];

    for (unsigned i = 0; !__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE); i++) {
        syncd_doc_t *doc = NULL;
        int k = (int)(i % TIER_RACE_KEYS);

        snprintf(id, sizeof(id), "hot-%d", k);
        if (syncd_store_get(r->store, &doc, "rr", id, NULL) != 0) {
            __atomic_add_fetch(&r->failures, 1, __ATOMIC_RELAXED);
            continue;
        }
        if (doc->version < seen[k])
            __atomic_store_n(&r->backwards, 1, __ATOMIC_RELAXED);
        if (json_integer_value(json_object_get(doc->body, "v")) != doc->version)
            __atomic_store_n(&r->mismatched, 1, __ATOMIC_RELAXED);
        seen[k] = doc->version;
        syncd_doc_free(doc);
    }
    return NULL;
}

/* Readers take no write lock and fill the tier from RocksDB while writers
 * commit: no reader ever sees a version older than one it saw before, or
 * a body of another version, and every write commits. */
static void
test_store_rocks__lock_free_readers_never_see_a_version_go_backwards(
    void **state)
{
    fixture_t *f = *state;
    tier_race_t r = {0};
    syncd_store_stats_t st;
    pthread_t writers[2], readers[3];
    char id[32];

    f->opts.sync_writes = 0;
    f->opts.cache_max_bytes = 64 * 400;
    reopen(f);
    for (int k = 0; k < TIER_RACE_KEYS; k++) {
        snprintf(id, sizeof(id), "hot-%d", k);
        create_doc(f, "rr", id, "{\"v\":1}");
    }
    r.store = f->store;
    for (int i = 0; i < 3; i++)
        assert_int_equal(
            pthread_create(&readers[i], NULL, tier_race_reader, &r), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(
            pthread_create(&writers[i], NULL, tier_race_writer, &r), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(writers[i], NULL);
    __atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 3; i++)
        pthread_join(readers[i], NULL);
    assert_int_equal(r.failures, 0);
    assert_int_equal(r.backwards, 0);
    assert_int_equal(r.mismatched, 0);
    for (int k = 0; k < TIER_RACE_KEYS; k++) {
        snprintf(id, sizeof(id), "hot-%d", k);
        assert_int_equal(live_version(f, "rr", id), 1 + 2 * 4);
    }
    /* The race went through RocksDB and the tier, not the tier alone. */
    syncd_store_stats(f->store, &st);
    assert_true(st.cache_misses > 0);
    assert_true(st.cache_hits > 0);
    assert_true(st.cache_evictions > 0);
}

/* An edit whose callback blocks, and the threads that must not wait for
 * it. */
typedef struct blocker {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int entered, released, readers_done;
    fixture_t *f;
    int edit_rc, read_rc;
    int64_t seen_version;
} blocker_t;

static int blocking_edit(json_t *body, void *arg, syncd_error_t *err)
{
    blocker_t *b = arg;

    (void)err;
    pthread_mutex_lock(&b->lock);
    b->entered = 1;
    pthread_cond_broadcast(&b->cond);
    while (!b->released)
        pthread_cond_wait(&b->cond, &b->lock);
    pthread_mutex_unlock(&b->lock);
    return json_object_set_new(body, "edited", json_true()) == 0 ? 0
                                                                 : SYNCD_ENOMEM;
}

static void *run_blocked_edit(void *arg)
{
    blocker_t *b = arg;
    syncd_change_t *c = NULL;

    b->edit_rc = syncd_store_edit(b->f->store, &c, "blk", "held", blocking_edit,
                                  b, SYNCD_ANY_VERSION, NULL);
    syncd_change_free(c);
    return NULL;
}

/* Reads the statistics, reads and writes every other document, and reads
 * the held one, while the edit blocks. */
static void *run_readers(void *arg)
{
    blocker_t *b = arg;
    syncd_store_stats_t stats;
    syncd_doc_t *doc = NULL;
    int rc = 0;

    syncd_store_stats(b->f->store, &stats);
    for (int i = 0; i < 256 && rc == 0; i++) {
        char id[16];
        json_t *body = json_pack("{s:i}", "n", i);
        syncd_change_t *c = NULL;

        snprintf(id, sizeof(id), "other-%d", i);
        rc = syncd_store_get(b->f->store, &doc, "blk", id, NULL);
        syncd_doc_free(doc);
        doc = NULL;
        if (rc == 0)
            rc = syncd_store_put(b->f->store, &c, "blk", id, body,
                                 SYNCD_ANY_VERSION, NULL);
        syncd_change_free(c);
        json_decref(body);
    }
    if (rc == 0)
        rc = syncd_store_get(b->f->store, &doc, "blk", "held", NULL);
    if (rc == 0)
        b->seen_version = doc->version;
    syncd_doc_free(doc);
    syncd_store_stats(b->f->store, &stats);
    pthread_mutex_lock(&b->lock);
    b->read_rc = rc;
    b->readers_done = 1;
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

/* Waits (at most 20 s: a bound for liveness, not a speed check) until
 * *flag is set; returns it. */
static int wait_flag(blocker_t *b, int *flag)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 20;
    pthread_mutex_lock(&b->lock);
    while (!*flag && pthread_cond_timedwait(&b->cond, &b->lock, &until) == 0) {
    }
    pthread_mutex_unlock(&b->lock);
    return *flag;
}

/* Readies b for a blocked edit of f's store. */
static void blocker_init(blocker_t *b, fixture_t *f)
{
    memset(b, 0, sizeof(*b));
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->cond, NULL);
    b->f = f;
}

/* Lets the blocked edit go on. */
static void blocker_release(blocker_t *b)
{
    pthread_mutex_lock(&b->lock);
    b->released = 1;
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

static void blocker_destroy(blocker_t *b)
{
    pthread_cond_destroy(&b->cond);
    pthread_mutex_destroy(&b->lock);
}

/* A writer holds one document's lock across the user's edit; the
 * statistics, reads of every other document (whatever stripe they share)
 * and of the held one (its committed version), and writes of the others
 * all complete while the edit is blocked. */
static void test_store_rocks__a_blocked_edit_holds_up_no_other_reader_or_writer(
    void **state)
{
    fixture_t *f = *state;
    blocker_t b;
    pthread_t editor, readers;
    int done;

    blocker_init(&b, f);
    f->opts.sync_writes = 0;
    reopen(f);
    create_doc(f, "blk", "held", "{}");
    for (int i = 0; i < 256; i++) {
        char id[16];

        snprintf(id, sizeof(id), "other-%d", i);
        create_doc(f, "blk", id, "{}");
    }
    reopen(f); /* an empty tier: the readers go to RocksDB */
    assert_int_equal(pthread_create(&editor, NULL, run_blocked_edit, &b), 0);
    assert_true(wait_flag(&b, &b.entered));
    assert_int_equal(pthread_create(&readers, NULL, run_readers, &b), 0);
    done = wait_flag(&b, &b.readers_done);

    blocker_release(&b);
    pthread_join(editor, NULL);
    pthread_join(readers, NULL);
    blocker_destroy(&b);

    assert_true(done);
    assert_int_equal(b.read_rc, 0);
    assert_int_equal(b.seen_version, 1);
    assert_int_equal(b.edit_rc, 0);
    assert_int_equal(live_version(f, "blk", "held"), 2);
}

/* A put of the document the blocked edit holds, with what it reports. */
typedef struct waiter {
    fixture_t *f;
    int rc;
    int64_t version, lock_wait_us, sync_wait_us;
} waiter_t;

static void *run_waiting_put(void *arg)
{
    waiter_t *w = arg;
    json_t *body = json_pack("{s:i}", "n", 1);
    syncd_change_t *c = NULL;

    w->rc = syncd_store_put(w->f->store, &c, "blk", "held", body,
                            SYNCD_ANY_VERSION, NULL);
    if (w->rc == 0) {
        w->version = c->doc->version;
        w->lock_wait_us = c->lock_wait_us;
        w->sync_wait_us = c->sync_wait_us;
    }
    syncd_change_free(c);
    json_decref(body);
    return NULL;
}

/* A write that waits behind another writer of its document reports that
 * wait as its lock wait: a put sent while an edit holds the document for
 * 300 ms says it waited most of them, and commits after the edit. */
static void
test_store_rocks__a_write_reports_its_wait_for_the_lock(void **state)
{
    fixture_t *f = *state;
    blocker_t b;
    waiter_t w = {f, -1, 0, 0, 0};
    pthread_t editor, writer;

    blocker_init(&b, f);
    create_doc(f, "blk", "held", "{}");
    assert_int_equal(pthread_create(&editor, NULL, run_blocked_edit, &b), 0);
    assert_true(wait_flag(&b, &b.entered));
    assert_int_equal(pthread_create(&writer, NULL, run_waiting_put, &w), 0);
    usleep(300 * 1000);
    blocker_release(&b);
    pthread_join(editor, NULL);
    pthread_join(writer, NULL);
    blocker_destroy(&b);

    assert_int_equal(b.edit_rc, 0);
    assert_int_equal(w.rc, 0);
    assert_int_equal(w.version, 3);
    assert_true(w.lock_wait_us >= 200 * 1000);
    assert_true(w.sync_wait_us >= 0 && w.sync_wait_us < w.lock_wait_us);
}

/* ---- Tombstones, list, digest, purge ------------------------------------ */

static void
test_store_list__pages_by_prefix_and_after_and_skips_tombstones(void **state)
{
    fixture_t *f = *state;
    static const char *ids[] = {"a/1", "a/2", "a/3", "b/1", "c"};
    syncd_change_t *c = NULL;
    json_t *list = NULL;

    for (size_t i = 0; i < 5; i++)
        create_doc(f, "lst", ids[i], "{}");
    assert_int_equal(
        syncd_store_delete(f->store, &c, "lst", "a/2", SYNCD_ANY_VERSION, NULL),
        0);
    syncd_change_free(c);

    assert_int_equal(
        syncd_store_list(f->store, &list, "lst", NULL, NULL, 0, NULL), 0);
    assert_int_equal(json_array_size(list), 4);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(list, 0), "id")),
        "a/1");
    assert_int_equal(
        json_integer_value(json_object_get(json_array_get(list, 0), "v")), 1);
    assert_int_equal(strlen(json_string_value(
                         json_object_get(json_array_get(list, 0), "h"))),
                     SYNCD_HASH_HEX_LEN);
    json_decref(list);

    assert_int_equal(
        syncd_store_list(f->store, &list, "lst", "a/", NULL, 0, NULL), 0);
    assert_ids(list, "a/1 a/3");
    json_decref(list);

    assert_int_equal(
        syncd_store_list(f->store, &list, "lst", NULL, "a/3", 2, NULL), 0);
    assert_ids(list, "b/1 c");
    json_decref(list);

    assert_int_equal(
        syncd_store_list(f->store, &list, "lst", "a/", "a/1", 0, NULL), 0);
    assert_ids(list, "a/3");
    json_decref(list);
}

static void test_store_digest__covers_live_documents_only(void **state)
{
    fixture_t *f = *state;
    syncd_digest_t all, after, again;
    syncd_change_t *c = NULL;
    json_t *list = NULL;

    create_doc(f, "dg", "a", "{\"x\":1}");
    create_doc(f, "dg", "b", "{\"x\":2}");
    create_doc(f, "dg", "c", "{\"x\":3}");
    assert_int_equal(syncd_store_digest(f->store, &all, "dg", NULL), 0);
    assert_int_equal(all.count, 3);

    assert_int_equal(
        syncd_store_delete(f->store, &c, "dg", "b", SYNCD_ANY_VERSION, NULL),
        0);
    syncd_change_free(c);
    assert_int_equal(syncd_store_digest(f->store, &after, "dg", NULL), 0);
    assert_int_equal(after.count, 2);
    assert_string_not_equal(after.hex, all.hex);
    assert_int_equal(
        syncd_store_list(f->store, &list, "dg", NULL, NULL, 0, NULL), 0);
    assert_int_equal(syncd_digest_entries(&again, list, NULL), 0);
    assert_string_equal(again.hex, after.hex);
    json_decref(list);

    create_doc(f, "dg", "b", "{\"x\":2}");
    assert_int_equal(syncd_store_digest(f->store, &again, "dg", NULL), 0);
    assert_int_equal(again.count, 3);
    /* b came back at version 3, so the digest differs from the first. */
    assert_string_not_equal(again.hex, all.hex);
}

/* Returns the entries of the range (after, until] of view, listed by
 * syncd_store_digest_range() (at most SYNCD_MAX_RANGE_ENTRIES), checking
 * that its digest is that of its entries. */
static json_t *range_entries(fixture_t *f, const char *coll, syncd_view_t view,
                             const char *after, const char *until)
{
    syncd_range_digest_t rd;
    syncd_digest_t d;
    json_t *entries;

    assert_int_equal(syncd_store_digest_range(f->store, &rd, coll, view, after,
                                              until, SYNCD_MAX_RANGE_ENTRIES,
                                              NULL),
                     0);
    assert_false(rd.truncated);
    assert_int_equal(syncd_digest_entries(&d, rd.entries, NULL), 0);
    assert_string_equal(d.hex, rd.digest.hex);
    assert_int_equal(d.count, rd.digest.count);
    entries = json_incref(rd.entries);
    syncd_range_digest_clear(&rd);
    return entries;
}

static void
test_store_digest_range__of_a_range_equals_the_digest_of_its_adjacent_parts(
    void **state)
{
    fixture_t *f = *state;
    syncd_range_digest_t whole, rd;
    syncd_digest_t all, d;
    syncd_change_t *c = NULL;
    json_t *left, *right;
    char id[16];

    for (int i = 0; i < 40; i++) {
        snprintf(id, sizeof(id), "k%02d", i);
        create_doc(f, "rg", id, "{\"x\":1}");
    }
    assert_int_equal(
        syncd_store_delete(f->store, &c, "rg", "k12", SYNCD_ANY_VERSION, NULL),
        0);
    syncd_change_free(c);

    /* (k05, k20] is (k05, k11] and (k11, k20]: 6 + 8 live documents. */
    left = range_entries(f, "rg", SYNCD_VIEW_STORE, "k05", "k11");
    right = range_entries(f, "rg", SYNCD_VIEW_STORE, "k11", "k20");
    assert_int_equal(json_array_size(left), 6);
    assert_int_equal(json_array_size(right), 8);
    assert_int_equal(json_array_extend(left, right), 0);
    assert_int_equal(syncd_digest_entries(&d, left, NULL), 0);
    for (int view = SYNCD_VIEW_NODE; view <= SYNCD_VIEW_STORE; view++) {
        assert_int_equal(syncd_store_digest_range(f->store, &rd, "rg",
                                                  (syncd_view_t)view, "k05",
                                                  "k20", 0, NULL),
                         0);
        assert_int_equal(rd.digest.count, 14);
        assert_string_equal(rd.digest.hex, d.hex);
        assert_null(rd.entries);
        syncd_range_digest_clear(&rd);
    }
    json_decref(left);
    json_decref(right);

    /* The open range is the collection digest; its split leaves the largest
     * power of two p with 2p <= 39 (16) entries on the left: k00..k16 less
     * the deleted k12. */
    assert_int_equal(syncd_store_digest(f->store, &all, "rg", NULL), 0);
    assert_int_equal(syncd_store_digest_range(f->store, &whole, "rg",
                                              SYNCD_VIEW_NODE, NULL, NULL, 5,
                                              NULL),
                     0);
    assert_int_equal(whole.digest.count, 39);
    assert_string_equal(whole.digest.hex, all.hex);
    assert_int_equal(json_array_size(whole.entries), 5);
    assert_true(whole.truncated);
    assert_string_equal(whole.split, "k16");
    left = range_entries(f, "rg", SYNCD_VIEW_NODE, NULL, whole.split);
    assert_int_equal(json_array_size(left), 16);
    json_decref(left);
    syncd_range_digest_clear(&whole);

    /* Fewer than two entries: no split. */
    assert_int_equal(syncd_store_digest_range(f->store, &rd, "rg",
                                              SYNCD_VIEW_STORE, "k11", "k13", 0,
                                              NULL),
                     0);
    assert_int_equal(rd.digest.count, 1);
    assert_null(rd.split);
    syncd_range_digest_clear(&rd);
}

static void test_store_digest_range__bad_range_is_EINVAL(void **state)
{
    fixture_t *f = *state;
    syncd_range_digest_t rd;

    assert_int_equal(syncd_store_digest_range(f->store, &rd, "rg",
                                              SYNCD_VIEW_NODE, "b", "a", 0,
                                              NULL),
                     SYNCD_EINVAL);
    assert_int_equal(syncd_store_digest_range(f->store, &rd, "rg",
                                              SYNCD_VIEW_NODE, "a", "a", 0,
                                              NULL),
                     SYNCD_EINVAL);
    assert_int_equal(syncd_store_digest_range(f->store, &rd, "rg",
                                              SYNCD_VIEW_NODE, "a{", NULL, 0,
                                              NULL),
                     SYNCD_EINVAL);
    assert_int_equal(syncd_store_digest_range(f->store, &rd, "Bad",
                                              SYNCD_VIEW_NODE, NULL, NULL, 0,
                                              NULL),
                     SYNCD_EINVAL);
    assert_int_equal(
        syncd_store_digest_range(f->store, &rd, "rg", SYNCD_VIEW_NODE, NULL,
                                 NULL, SYNCD_MAX_RANGE_ENTRIES + 1, NULL),
        SYNCD_EINVAL);
}

static void test_store_verify__a_consistent_store_agrees(void **state)
{
    fixture_t *f = *state;
    syncd_verify_t v;
    syncd_digest_t all;

    create_doc(f, "vf", "a", "{\"x\":1}");
    create_doc(f, "vf", "b", "{\"x\":2}");
    create_doc(f, "vf", "c", "{\"x\":3}");
    assert_int_equal(syncd_store_digest(f->store, &all, "vf", NULL), 0);
    assert_int_equal(syncd_store_verify(f->store, &v, "vf", 10, NULL), 0);
    assert_int_equal(json_array_size(v.differs), 0);
    assert_false(v.truncated);
    assert_string_equal(v.node.hex, all.hex);
    assert_string_equal(v.store.hex, all.hex);
    assert_int_equal(v.store.count, 3);
    /* Every body the node serves from itself is rehashed: the embedded
     * store's records, or the cache's entries (creates are cached). */
    assert_int_equal(v.bodies, 3);
    syncd_verify_clear(&v);
}

/* Caches doc coll/id at version with body (text) and the given hash (NULL:
 * the body's own), or a tombstone when body is NULL, replacing whatever
 * the cache held. */
static void cache_fake(fixture_t *f, const char *id, int64_t version,
                       const char *body, const char *hash)
{
    syncd_doc_t doc = {"vf", (char *)id, version, NULL, "", 0, "x", 0};

    if (body != NULL) {
        doc.body = parse(body);
        assert_int_equal(syncd_json_hash(doc.hash, doc.body, NULL), 0);
    } else {
        doc.deleted = 1;
    }
    if (hash != NULL)
        strcpy(doc.hash, hash);
    assert_int_equal(syncd_store_cache_invalidate(f->store, "vf", id, NULL), 0);
    assert_int_equal(syncd_store_cache_put(f->store, &doc, NULL), 1);
    json_decref(doc.body);
}

static void
test_store_verify__names_each_cached_entry_that_differs_from_the_store(
    void **state)
{
    fixture_t *f = *state;
    syncd_doc_t *c = NULL;
    syncd_range_digest_t node, truth;
    syncd_verify_t v;

    create_doc(f, "vf", "a", "{\"x\":1}");
    create_doc(f, "vf", "b", "{\"x\":2}");
    create_doc(f, "vf", "c", "{\"x\":3}");
    create_doc(f, "vf", "d", "{\"x\":4}");
    create_doc(f, "vf", "e", "{\"x\":5}");
    assert_int_equal(syncd_store_cached(f->store, &c, "vf", "c", NULL), 0);
    /* a: a tombstone; b: another version; c: a body that is not the one its
     * hash was made from; x: a document the store has not; d, e: right. */
    cache_fake(f, "a", 2, NULL, NULL);
    cache_fake(f, "b", 5, "{\"x\":2}", NULL);
    cache_fake(f, "c", 1, "{\"x\":33}", c->hash);
    cache_fake(f, "x", 1, "{\"x\":0}", NULL);
    syncd_doc_free(c);

    assert_int_equal(syncd_store_verify(f->store, &v, "vf", 10, NULL), 0);
    assert_json_text(v.differs, "[{\"id\":\"a\",\"node_v\":2,\"store_v\":1,"
                                "\"reason\":\"missing\"},"
                                "{\"id\":\"b\",\"node_v\":5,\"store_v\":1,"
                                "\"reason\":\"version\"},"
                                "{\"id\":\"c\",\"node_v\":1,\"store_v\":1,"
                                "\"reason\":\"body\"},"
                                "{\"id\":\"x\",\"node_v\":1,\"store_v\":null,"
                                "\"reason\":\"extra\"}]");
    assert_false(v.truncated);
    assert_int_equal(v.node.count, 5); /* b c d e x: a is hidden */
    assert_int_equal(v.store.count, 5);
    assert_string_not_equal(v.node.hex, v.store.hex);
    syncd_verify_clear(&v);

    /* The node view's ranged digest tells the same: it differs from the
     * store's over (a, c] and agrees over (c, e]. */
    for (int i = 0; i < 2; i++) {
        const char *after = i == 0 ? NULL : "c", *until = i == 0 ? "c" : "e";

        assert_int_equal(syncd_store_digest_range(f->store, &node, "vf",
                                                  SYNCD_VIEW_NODE, after, until,
                                                  0, NULL),
                         0);
        assert_int_equal(syncd_store_digest_range(f->store, &truth, "vf",
                                                  SYNCD_VIEW_STORE, after,
                                                  until, 0, NULL),
                         0);
        if (i == 0)
            assert_string_not_equal(node.digest.hex, truth.digest.hex);
        else
            assert_string_equal(node.digest.hex, truth.digest.hex);
        syncd_range_digest_clear(&node);
        syncd_range_digest_clear(&truth);
    }

    /* At most max_differs are listed. */
    assert_int_equal(syncd_store_verify(f->store, &v, "vf", 2, NULL), 0);
    assert_int_equal(json_array_size(v.differs), 2);
    assert_true(v.truncated);
    syncd_verify_clear(&v);
}

/* Runs syncd_store_check_start() in mode and returns its report. */
static json_t *check_start(fixture_t *f, syncd_start_check_t mode)
{
    json_t *report = NULL;
    syncd_error_t err;

    syncd_error_clear(&err);
    assert_int_equal(syncd_store_check_start(f->store, mode, &report, &err), 0);
    assert_non_null(report);
    return report;
}

static json_int_t report_int(const json_t *report, const char *key)
{
    return json_integer_value(json_object_get(report, key));
}

/* Writes coll/id at version 1 with body (text) straight into the store of
 * record, with the hash a store made before the Merkle hash gave it: the
 * SHA-256 of the canonical JSON (doc/HASH.md), copied into legacy. The
 * store is closed meanwhile. */
static void write_legacy_record(fixture_t *f, const char *coll, const char *id,
                                const char *body, char *legacy)
{
    syncd_doc_t doc = {(char *)coll, (char *)id, 1, NULL, "", 0, "old", 0};
    syncd_backend_t *b = NULL;
    size_t len;
    char *canon;

    syncd_store_close(f->store);
    f->store = NULL;
    if (f->opts.mongo_uri != NULL)
        assert_int_equal(syncd_backend_mongo_open(&b, f->opts.mongo_uri,
                                                  f->opts.database, 5000, NULL),
                         0);
    else
        assert_int_equal(
            syncd_backend_rocks_open(&b, f->opts.data_dir, 1, 0, 1 << 20,
                                     SYNCD_BLOCK_CACHE_BYTES, NULL, NULL),
            0);
    doc.body = parse(body);
    canon = syncd_json_canonical(doc.body, &len);
    syncd_sha256_hex(doc.hash, canon, len);
    strcpy(legacy, doc.hash);
    assert_int_equal(b->ops->cas(b, &doc, 0, NULL), 0);
    b->ops->close(b);
    free(canon);
    json_decref(doc.body);
    open_store(f);
}

static void
test_store_legacy_hash__a_store_written_before_the_merkle_hash_verifies(
    void **state)
{
    fixture_t *f = *state;
    char legacy[SYNCD_HASH_HEX_LEN + 1], merkle[SYNCD_HASH_HEX_LEN + 1];
    syncd_doc_t *doc = NULL;
    syncd_verify_t v;
    json_t *report, *body = parse("{\"x\":[1,2.5],\"a\":\"b\"}");
    int64_t version = 0;

    write_legacy_record(f, "vf", "old", "{\"a\":\"b\",\"x\":[1,2.5]}", legacy);
    assert_int_equal(syncd_json_hash(merkle, body, NULL), 0);
    assert_string_not_equal(legacy, merkle);
    /* It reads with its stored hash, which verifies, at start as later. */
    assert_int_equal(syncd_store_get(f->store, &doc, "vf", "old", NULL), 0);
    assert_string_equal(doc->hash, legacy);
    syncd_doc_free(doc);
    report = check_start(f, SYNCD_CHECK_FULL);
    assert_int_equal(json_object_size(json_object_get(report, "corrupt")), 0);
    json_decref(report);
    assert_int_equal(syncd_store_verify(f->store, &v, "vf", 10, NULL), 0);
    assert_int_equal(json_array_size(v.differs), 0);
    assert_int_equal(v.bodies, 1);
    syncd_verify_clear(&v);
    /* Writing the same body is still no change; another body gets a Merkle
     * hash. */
    assert_int_equal(put_doc(f, "vf", "old", "{\"x\":[1,2.5],\"a\":\"b\"}",
                             SYNCD_ANY_VERSION, &version),
                     0);
    assert_int_equal(version, 1);
    assert_int_equal(
        put_doc(f, "vf", "old", "{\"a\":\"c\"}", SYNCD_ANY_VERSION, &version),
        0);
    assert_int_equal(version, 2);
    assert_int_equal(syncd_store_get(f->store, &doc, "vf", "old", NULL), 0);
    json_decref(body);
    body = parse("{\"a\":\"c\"}");
    assert_int_equal(syncd_json_hash(merkle, body, NULL), 0);
    assert_string_equal(doc->hash, merkle);
    syncd_doc_free(doc);
    json_decref(body);
}

static void
test_store_check_start__a_clean_close_leaves_digests_the_next_open_matches(
    void **state)
{
    fixture_t *f = *state;
    char path[512];
    json_t *report, *file;
    syncd_digest_t d;

    f->opts.keep_cache = 1; /* MongoDB mode: a cache kept across reopens */
    reopen(f);
    create_doc(f, "vf", "a", "{\"x\":1}");
    create_doc(f, "vf", "b", "{\"x\":2}");
    create_doc(f, "vf", "c", "{\"x\":3}");
    assert_int_equal(syncd_store_digest(f->store, &d, "vf", NULL), 0);
    assert_int_equal(syncd_store_save_digests(f->store, NULL), 0);
    snprintf(path, sizeof(path), "%s/%s", f->dir, SYNCD_DIGESTS_FILE);
    file = json_load_file(path, 0, NULL);
    assert_non_null(file);
    assert_int_equal(report_int(file, "format"), SYNCD_DIGESTS_FORMAT);
    assert_string_equal(json_string_value(json_object_get(file, "kind")),
                        f->kind->mongo ? "cache" : "rocksdb");
    /* The creates are cached, so the cache's digest is the store's. */
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(json_object_get(file, "collections"), "vf"),
            "digest")),
        d.hex);
    json_decref(file);

    reopen(f);
    report = check_start(f, SYNCD_CHECK_FULL);
    assert_true(json_is_true(json_object_get(report, "clean")));
    assert_int_equal(json_array_size(json_object_get(report, "changed")), 0);
    assert_int_equal(json_object_size(json_object_get(report, "corrupt")), 0);
    assert_int_equal(report_int(report, "collections"), 1);
    assert_int_equal(report_int(report, "documents"), 3);
    assert_int_equal(report_int(report, "bodies"), 3);
    assert_false(json_is_true(json_object_get(report, "dropped")));
    json_decref(report);

    /* The file was consumed: without a clean close, nothing to compare. */
    reopen(f);
    report = check_start(f, SYNCD_CHECK_DIGESTS);
    assert_false(json_is_true(json_object_get(report, "clean")));
    assert_int_equal(report_int(report, "bodies"), 0);
    json_decref(report);
}

static void
test_store_check_start__a_kept_cache_with_a_bad_body_is_dropped(void **state)
{
    fixture_t *f = *state;
    syncd_doc_t *c = NULL;
    json_t *report;

    f->opts.keep_cache = 1;
    reopen(f);
    create_doc(f, "vf", "a", "{\"x\":1}");
    create_doc(f, "vf", "c", "{\"x\":3}");
    assert_int_equal(syncd_store_cached(f->store, &c, "vf", "c", NULL), 0);
    cache_fake(f, "c", 1, "{\"x\":33}", c->hash);
    syncd_doc_free(c);
    c = NULL;
    assert_int_equal(syncd_store_save_digests(f->store, NULL), 0);

    /* The digests agree (same versions and hashes): only the rehash finds
     * it, and the cache is dropped. */
    reopen(f);
    report = check_start(f, SYNCD_CHECK_FULL);
    assert_json_text(json_object_get(report, "corrupt"),
                     "{\"vf\":{\"ids\":[\"c\"],\"truncated\":false}}");
    assert_int_equal(json_array_size(json_object_get(report, "changed")), 0);
    assert_true(json_is_true(json_object_get(report, "dropped")));
    json_decref(report);
    assert_int_equal(syncd_store_cached(f->store, &c, "vf", "c", NULL),
                     SYNCD_ENOTFOUND);
    assert_int_equal(syncd_store_cached(f->store, &c, "vf", "a", NULL),
                     SYNCD_ENOTFOUND);
    /* Refilled from the store: the store's body. */
    assert_doc(f, "vf", "c", 1, "{\"x\":3}");
}

static void
test_store_check_start__a_kept_cache_changed_while_closed_is_dropped(
    void **state)
{
    fixture_t *f = *state;
    json_t *report;

    f->opts.keep_cache = 1;
    reopen(f);
    create_doc(f, "vf", "a", "{\"x\":1}");
    create_doc(f, "vf", "b", "{\"x\":2}");
    assert_int_equal(syncd_store_save_digests(f->store, NULL), 0);
    /* A version changed after the digests were written: the digest check
     * alone (no body read) finds it. */
    cache_fake(f, "b", 7, "{\"x\":2}", NULL);
    reopen(f);
    report = check_start(f, SYNCD_CHECK_DIGESTS);
    assert_int_equal(json_array_size(json_object_get(report, "changed")), 1);
    assert_string_equal(
        json_string_value(json_object_get(
            json_array_get(json_object_get(report, "changed"), 0), "coll")),
        "vf");
    assert_true(json_is_true(json_object_get(report, "dropped")));
    assert_int_equal(report_int(report, "bodies"), 0);
    json_decref(report);
    assert_doc(f, "vf", "b", 1, "{\"x\":2}");
}

static void
test_store_check_start__off_checks_nothing_but_consumes_the_file(void **state)
{
    fixture_t *f = *state;
    char path[512];
    json_t *report;

    create_doc(f, "vf", "a", "{\"x\":1}");
    assert_int_equal(syncd_store_save_digests(f->store, NULL), 0);
    reopen(f);
    report = check_start(f, SYNCD_CHECK_OFF);
    assert_string_equal(json_string_value(json_object_get(report, "mode")),
                        "off");
    assert_int_equal(report_int(report, "documents"), 0);
    json_decref(report);
    snprintf(path, sizeof(path), "%s/%s", f->dir, SYNCD_DIGESTS_FILE);
    assert_int_equal(access(path, F_OK), -1);
    /* auto is full for a small store. */
    report = check_start(f, SYNCD_CHECK_AUTO);
    assert_string_equal(json_string_value(json_object_get(report, "mode")),
                        "full");
    assert_true(json_is_true(json_object_get(report, "auto")));
    json_decref(report);
}

/* Deletes coll/<prefix><i> for i in 0..n-1 that are multiples of step,
 * having created all n; returns the number deleted. */
static size_t make_tombstones(fixture_t *f, const char *coll,
                              const char *prefix, size_t n, size_t step)
{
    syncd_change_t *c = NULL;
    char id[64];
    size_t deleted = 0;

    for (size_t i = 0; i < n; i++) {
        snprintf(id, sizeof(id), "%s%05zu", prefix, i);
        create_doc(f, coll, id, "{}");
    }
    for (size_t i = 0; i < n; i += step) {
        snprintf(id, sizeof(id), "%s%05zu", prefix, i);
        assert_int_equal(
            syncd_store_delete(f->store, &c, coll, id, SYNCD_ANY_VERSION, NULL),
            0);
        syncd_change_free(c);
        deleted++;
    }
    return deleted;
}

/* Deletes, as the store before the tombstone index left its database,
 * every key of the index (under 0x03) and the key saying it is complete,
 * and writes bytes that are no record at
 * coll/bad; returns how many index keys there were. */
static size_t strip_tombstone_index(const char *dir, const char *coll,
                                    const char *bad)
{
    static const char complete[] = "\x04tombstone-index";
    char badkey[64];
    size_t blen =
        (size_t)snprintf(badkey, sizeof(badkey), "%s%c%s", coll, '\0', bad);
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    char *errptr = NULL;
    rocksdb_t *db = rocksdb_open(o, dir, &errptr);
    rocksdb_iterator_t *it;
    size_t n = 0;

    assert_null(errptr);
    it = rocksdb_create_iterator(db, ro);
    for (rocksdb_iter_seek(it, "\x03", 1); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen;
        const char *key = rocksdb_iter_key(it, &klen);

        if (key[0] != '\x03' && key[0] != '\x04')
            break;
        if (key[0] == '\x04' &&
            (klen != sizeof(complete) - 1 || memcmp(key, complete, klen) != 0))
            continue;
        rocksdb_delete(db, wo, key, klen, &errptr);
        assert_null(errptr);
        n++;
    }
    rocksdb_iter_destroy(it);
    rocksdb_put(db, wo, badkey, blen, "not a record", 12, &errptr);
    assert_null(errptr);
    rocksdb_close(db);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_readoptions_destroy(ro);
    rocksdb_options_destroy(o);
    return n;
}

/* A store made before purges read a tombstone index has none: it is built
 * at the store's first open, so old tombstones are purged like new ones,
 * and one written again as a live document is kept. A record that does
 * not decode does not stop the open; reading it fails. */
static void
test_store_purge__a_store_made_before_the_tombstone_index_gets_one(void **state)
{
    fixture_t *f = *state;
    syncd_doc_t *doc = NULL;
    json_t *gone = NULL;
    size_t purged = 0;

    f->opts.tombstone_ttl_ms = 1000;
    use_fake_hooks(f, 1000000);
    assert_int_equal(make_tombstones(f, "old", "d", 30, 3), 10);
    assert_int_equal(
        put_doc(f, "old", "d00000", "{\"back\":1}", SYNCD_ANY_VERSION, NULL),
        0);
    syncd_store_close(f->store);
    f->store = NULL;
    /* Nine tombstones indexed, and the completeness key. */
    assert_int_equal(strip_tombstone_index(f->dir, "old", "d00001x"), 10);
    f->fake.now += 2000;
    open_store(f);
    assert_int_equal(syncd_store_get(f->store, &doc, "old", "d00001x", NULL),
                     SYNCD_EBACKEND);
    assert_int_equal(
        syncd_store_purge(f->store, "old", 0, &purged, &gone, NULL), 0);
    assert_int_equal(purged, 9);
    assert_null(json_object_get(gone, "d00000"));
    assert_non_null(json_object_get(gone, "d00003"));
    json_decref(gone);
    assert_doc(f, "old", "d00000", 3, "{\"back\":1}");
}

/* A limit bounds what one purge removes (and reports); the next calls take
 * the rest, and no id is reported twice. */
static void test_store_purge__a_limit_bounds_each_call(void **state)
{
    fixture_t *f = *state;
    json_t *all = json_object(), *gone = NULL;
    size_t purged = 0, want[] = {2, 2, 1, 0};

    f->opts.tombstone_ttl_ms = 1000;
    use_fake_hooks(f, 1000000);
    assert_int_equal(make_tombstones(f, "lim", "t", 10, 2), 5);
    f->fake.now += 2000;
    for (size_t call = 0; call < 4; call++) {
        assert_int_equal(
            syncd_store_purge(f->store, "lim", 2, &purged, &gone, NULL), 0);
        assert_int_equal(purged, want[call]);
        assert_int_equal(json_object_size(gone), want[call]);
        assert_int_equal(json_object_update_missing(all, gone), 0);
        json_decref(gone);
        gone = NULL;
    }
    assert_int_equal(json_object_size(all), 5);
    for (size_t i = 0; i < 10; i++) {
        char id[16];

        snprintf(id, sizeof(id), "t%05zu", i);
        if (i % 2 == 0)
            assert_int_equal(json_integer_value(json_object_get(all, id)), 2);
        else
            assert_int_equal(live_version(f, "lim", id), 1);
    }
    json_decref(all);
}

/* The embedded store reads a collection a page (1000 records) at a time:
 * a purge over several pages, tombstones and live documents mixed,
 * removes every tombstone and nothing else. */
static void
test_store_purge__reads_a_large_collection_page_by_page(void **state)
{
    fixture_t *f = *state;
    json_t *gone = NULL, *list = NULL;
    size_t purged = 0;

    f->opts.tombstone_ttl_ms = 1000;
    use_fake_hooks(f, 1000000);
    assert_int_equal(make_tombstones(f, "big", "d", 2500, 3), 834);
    f->fake.now += 2000;
    assert_int_equal(
        syncd_store_purge(f->store, "big", 0, &purged, &gone, NULL), 0);
    assert_int_equal(purged, 834);
    assert_int_equal(json_object_size(gone), 834);
    assert_int_equal(
        syncd_store_list(f->store, &list, "big", NULL, NULL, 0, NULL), 0);
    assert_int_equal(json_array_size(list), 2500 - 834);
    json_decref(list);
    json_decref(gone);
}

/* Opens the store with a block cache of cap bytes and an in-memory tier
 * too small for any record, reads back every record of "blk" (so that each
 * read goes to RocksDB's tables) and returns the block cache's bytes. */
static uint64_t block_cache_after_reads(fixture_t *f, uint64_t cap, int n)
{
    syncd_store_stats_t stats;
    char id[16];

    f->opts.block_cache_bytes = cap;
    reopen(f);
    for (int i = 0; i < n; i++) {
        syncd_doc_t *doc = NULL;

        snprintf(id, sizeof(id), "d%d", i);
        assert_int_equal(syncd_store_get(f->store, &doc, "blk", id, NULL), 0);
        syncd_doc_free(doc);
    }
    syncd_store_stats(f->store, &stats);
    return stats.rocks_block_cache_bytes;
}

static void
test_store_stats__the_block_cache_holds_at_most_its_configured_bytes(
    void **state)
{
    fixture_t *f = *state;
    char *body = malloc(8193);
    char id[16];
    int n = 1000;

    /* 8 MB of records: past the memtables, so the reopened store reads
     * them from its table files. */
    memset(body, 'x', 8192);
    body[8192] = '\0';
    f->opts.sync_writes = 0;
    f->opts.cache_max_bytes = 1024;
    reopen(f);
    for (int i = 0; i < n; i++) {
        json_t *b = json_pack("{ss}", "pad", body);
        syncd_change_t *c = NULL;

        snprintf(id, sizeof(id), "d%d", i);
        assert_int_equal(syncd_store_create(f->store, &c, "blk", id, b, NULL),
                         0);
        syncd_change_free(c);
        json_decref(b);
    }
    free(body);
    /* The default holds much of what was read; a small bound holds it to
     * that bound (plus the one block a read may pin); none holds nothing. */
    assert_true(block_cache_after_reads(f, SYNCD_BLOCK_CACHE_BYTES, n) >
                (uint64_t)2 << 20);
    assert_true(block_cache_after_reads(f, 256 << 10, n) <=
                (256 << 10) + 16384);
    assert_int_equal(block_cache_after_reads(f, 0, n), 0);
}

static void
test_store_purge__removes_tombstones_after_tombstone_ttl(void **state)
{
    fixture_t *f = *state;
    syncd_change_t *c = NULL;
    syncd_doc_t *doc = NULL;
    json_t *gone = NULL;
    size_t purged = 99;

    f->opts.tombstone_ttl_ms = 1000;
    use_fake_hooks(f, 1000000);
    create_doc(f, "tomb", "dead", "{}");
    create_doc(f, "tomb", "alive", "{}");
    assert_int_equal(syncd_store_delete(f->store, &c, "tomb", "dead",
                                        SYNCD_ANY_VERSION, NULL),
                     0);
    syncd_change_free(c);

    f->fake.now += 999;
    assert_int_equal(
        syncd_store_purge(f->store, "tomb", 0, &purged, &gone, NULL), 0);
    assert_int_equal(purged, 0);
    assert_int_equal(json_object_size(gone), 0);
    json_decref(gone);
    assert_int_equal(syncd_store_refetch(f->store, &doc, "tomb", "dead", NULL),
                     0);
    assert_true(doc->deleted);
    assert_int_equal(doc->version, 2);
    syncd_doc_free(doc);

    f->fake.now += 2;
    assert_int_equal(
        syncd_store_purge(f->store, "tomb", 0, &purged, &gone, NULL), 0);
    assert_int_equal(purged, 1);
    /* What went, with its tombstone's version (the bus forgets it). */
    assert_int_equal(json_object_size(gone), 1);
    assert_int_equal(json_integer_value(json_object_get(gone, "dead")), 2);
    json_decref(gone);
    assert_int_equal(syncd_store_refetch(f->store, &doc, "tomb", "dead", NULL),
                     SYNCD_ENOTFOUND);
    assert_int_equal(live_version(f, "tomb", "alive"), 1);
}

/* Asserts that entry (an object of syncd_store_versions()) is version v
 * with hash h and tombstone flag del. */
static void assert_version(const json_t *entry, int64_t v, const char *h,
                           int del)
{
    assert_non_null(entry);
    assert_int_equal(json_integer_value(json_object_get(entry, "v")), v);
    assert_string_equal(json_string_value(json_object_get(entry, "h")), h);
    assert_int_equal(json_is_true(json_object_get(entry, "del")), del);
    assert_true(json_is_boolean(json_object_get(entry, "del")));
}

static void
test_store_versions__reads_the_version_headers_of_the_given_ids(void **state)
{
    fixture_t *f = *state;
    json_t *ids = parse("[\"a\",\"b\",\"c\",\"nope\"]");
    json_t *out = NULL, *many = json_array();
    syncd_change_t *c = NULL;
    syncd_doc_t *a = NULL, *b = NULL;

    create_doc(f, "vv", "a", "{\"x\":1}");
    create_doc(f, "vv", "b", "{\"x\":1}");
    assert_int_equal(put_doc(f, "vv", "b", "{\"x\":2}", 1, NULL), 0);
    create_doc(f, "vv", "c", "{}");
    assert_int_equal(
        syncd_store_delete(f->store, &c, "vv", "c", SYNCD_ANY_VERSION, NULL),
        0);
    syncd_change_free(c);
    create_doc(f, "other", "nope", "{}");
    assert_int_equal(syncd_store_get(f->store, &a, "vv", "a", NULL), 0);
    assert_int_equal(syncd_store_get(f->store, &b, "vv", "b", NULL), 0);

    assert_int_equal(syncd_store_versions(f->store, &out, "vv", ids, NULL), 0);
    assert_int_equal(json_object_size(out), 3);
    assert_version(json_object_get(out, "a"), 1, a->hash, 0);
    assert_version(json_object_get(out, "b"), 2, b->hash, 0);
    assert_version(json_object_get(out, "c"), 2, "", 1);
    assert_null(json_object_get(out, "nope"));
    json_decref(out);

    /* Bad input never reaches the backend. */
    assert_int_equal(syncd_store_versions(f->store, &out, "vv", many, NULL),
                     SYNCD_EINVAL);
    assert_null(out);
    for (int i = 0; i <= SYNCD_MAX_VERSIONS_IDS; i++)
        json_array_append_new(many, json_sprintf("id-%d", i));
    assert_int_equal(syncd_store_versions(f->store, &out, "vv", many, NULL),
                     SYNCD_EINVAL);
    json_array_set_new(ids, 3, json_integer(1));
    assert_int_equal(syncd_store_versions(f->store, &out, "vv", ids, NULL),
                     SYNCD_EINVAL);
    json_array_set_new(ids, 3, json_string("a{b}"));
    assert_int_equal(syncd_store_versions(f->store, &out, "vv", ids, NULL),
                     SYNCD_EINVAL);
    assert_int_equal(syncd_store_versions(f->store, &out, "Bad!", ids, NULL),
                     SYNCD_EINVAL);
    syncd_doc_free(a);
    syncd_doc_free(b);
    json_decref(ids);
    json_decref(many);
}

static void
test_store_cache_page__pages_cached_entries_in_mongodb_mode_only(void **state)
{
    fixture_t *f = *state;
    json_t *page = NULL;
    syncd_change_t *c = NULL;

    create_doc(f, "pg", "a", "{}");
    create_doc(f, "pg", "b", "{}");
    create_doc(f, "pg", "c", "{}");
    assert_int_equal(
        syncd_store_delete(f->store, &c, "pg", "b", SYNCD_ANY_VERSION, NULL),
        0);
    syncd_change_free(c);
    assert_int_equal(
        syncd_store_cache_page(f->store, &page, "pg", NULL, 2, NULL), 0);
    if (!f->kind->mongo) {
        assert_int_equal(json_array_size(page), 0);
        json_decref(page);
        return;
    }
    assert_ids(page, "a b");
    assert_true(json_is_true(json_object_get(json_array_get(page, 1), "del")));
    json_decref(page);
    assert_int_equal(
        syncd_store_cache_page(f->store, &page, "pg", "b", 2, NULL), 0);
    assert_ids(page, "c");
    json_decref(page);
    assert_int_equal(
        syncd_store_cache_page(f->store, &page, "pg", NULL, 0, NULL),
        SYNCD_EINVAL);
}

/* ---- Transactional outbox and idempotency keys ------------------------- */

/* Turns the store's outbox on, as the daemon does. */
static void use_outbox(fixture_t *f)
{
    f->opts.outbox = 1;
    reopen(f);
}

/* Asserts that markers (a JSON array of outbox markers) are for the
 * versions want, space-separated, in order. */
static void assert_marker_versions(const json_t *markers, const char *want)
{
    char got[1024] = "";
    size_t i;
    json_t *m;

    json_array_foreach (markers, i, m) {
        snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%lld",
                 i > 0 ? " " : "",
                 (long long)json_integer_value(json_object_get(m, "v")));
    }
    assert_string_equal(got, want);
}

/* Asserts the store of record holds coll/id with outbox markers of the
 * versions want ("" for none). */
static void assert_outbox(fixture_t *f, const char *coll, const char *id,
                          const char *want)
{
    syncd_doc_t *doc = NULL;

    assert_int_equal(syncd_store_refetch(f->store, &doc, coll, id, NULL), 0);
    assert_marker_versions(doc->outbox, want);
    syncd_doc_free(doc);
}

static void
test_store_outbox__each_write_commits_a_marker_and_keeps_pending_ones(
    void **state)
{
    fixture_t *f = *state;
    json_t *body = parse("{\"n\":2}");
    json_t *list = NULL;
    syncd_change_t *c = NULL;
    json_t *m;

    use_outbox(f);

    assert_int_equal(syncd_store_create(f->store, &c, "ob", "d", body, NULL),
                     0);
    assert_null(c->pending);
    syncd_change_free(c);
    assert_outbox(f, "ob", "d", "1");

    assert_int_equal(
        put_doc(f, "ob", "d", "{\"n\":3}", SYNCD_ANY_VERSION, NULL), 0);
    assert_int_equal(
        syncd_store_delete(f->store, &c, "ob", "d", SYNCD_ANY_VERSION, NULL),
        0);
    /* The change reports what was pending before it, in version order. */
    assert_marker_versions(c->pending, "1 2");
    syncd_change_free(c);
    reopen(f);
    assert_outbox(f, "ob", "d", "1 2 3");

    /* A marker holds what an invalidate event needs. */
    assert_int_equal(
        syncd_store_outbox_list(f->store, &list, "ob", NULL, 10, NULL), 0);
    assert_ids(list, "d");
    m = json_array_get(json_object_get(json_array_get(list, 0), "ob"), 2);
    assert_string_equal(json_string_value(json_object_get(m, "op")), "delete");
    assert_int_equal(json_integer_value(json_object_get(m, "base")), 2);
    assert_string_equal(json_string_value(json_object_get(m, "by")), "node-t");
    assert_true(json_integer_value(json_object_get(m, "t")) > 0);
    m = json_array_get(json_object_get(json_array_get(list, 0), "ob"), 0);
    assert_string_equal(json_string_value(json_object_get(m, "op")), "create");
    assert_int_equal(json_integer_value(json_object_get(m, "base")), 0);
    assert_int_equal(strlen(json_string_value(json_object_get(m, "h"))),
                     SYNCD_HASH_HEX_LEN);
    json_decref(list);
    json_decref(body);
}

static void
test_store_outbox__ack_drops_the_markers_up_to_its_version_whatever_the_record_is_at(
    void **state)
{
    fixture_t *f = *state;
    syncd_change_t *c = NULL;
    json_t *list = NULL;

    use_outbox(f);

    create_doc(f, "ack", "d", "{\"n\":1}");
    assert_int_equal(
        put_doc(f, "ack", "d", "{\"n\":2}", SYNCD_ANY_VERSION, NULL), 0);
    assert_int_equal(
        put_doc(f, "ack", "d", "{\"n\":3}", SYNCD_ANY_VERSION, NULL), 0);
    /* The record moved past the acked version: the markers up to it go
     * (they are published), the later ones stay, the record is as it
     * was. Under a write storm the record always moves on before an ack,
     * and markers left by such acks would pile up. */
    assert_int_equal(syncd_store_outbox_ack(f->store, "ack", "d", 1, NULL), 0);
    assert_outbox(f, "ack", "d", "2 3");
    assert_doc(f, "ack", "d", 3, "{\"n\":3}");
    assert_int_equal(syncd_store_outbox_ack(f->store, "ack", "d", 2, NULL), 0);
    assert_outbox(f, "ack", "d", "3");
    /* An ack never drops a marker of a later version. */
    assert_int_equal(syncd_store_outbox_ack(f->store, "ack", "d", 1, NULL), 0);
    assert_outbox(f, "ack", "d", "3");
    assert_int_equal(
        put_doc(f, "ack", "d", "{\"n\":2}", SYNCD_ANY_VERSION, NULL), 0);
    assert_outbox(f, "ack", "d", "3 4");
    assert_int_equal(syncd_store_outbox_ack(f->store, "ack", "d", 3, NULL), 0);
    assert_outbox(f, "ack", "d", "4");

    assert_int_equal(syncd_store_outbox_ack(f->store, "ack", "d", 4, NULL), 0);
    assert_outbox(f, "ack", "d", "");
    assert_int_equal(
        syncd_store_outbox_list(f->store, &list, "ack", NULL, 10, NULL), 0);
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);
    assert_doc(f, "ack", "d", 4, "{\"n\":2}");

    /* The next write has nothing pending before it. */
    assert_int_equal(syncd_store_edit(f->store, &c, "ack", "d", inc_counter,
                                      NULL, SYNCD_ANY_VERSION, NULL),
                     0);
    assert_null(c->pending);
    assert_int_equal(c->doc->version, 5);
    syncd_change_free(c);
    assert_outbox(f, "ack", "d", "5");
    /* Acking a record that is gone is no error. */
    assert_int_equal(syncd_store_outbox_ack(f->store, "ack", "nope", 1, NULL),
                     0);
}

/* The bus is down for SYNCD_MAX_OUTBOX_MARKERS versions of a document:
 * the next write is refused and writes nothing, and no marker is dropped
 * to make room (a dropped marker is a version no watcher ever sees). */
static void
test_store_outbox__a_full_outbox_refuses_the_write_and_drops_no_marker(
    void **state)
{
    fixture_t *f = *state;
    char want[1024] = "", body[32];
    json_t *zero = parse("{\"n\":0}");
    syncd_change_t *c = NULL;
    syncd_error_t err;

    use_outbox(f);

    create_doc(f, "full", "d", "{\"n\":1}");
    for (int v = 2; v <= SYNCD_MAX_OUTBOX_MARKERS; v++) {
        snprintf(body, sizeof(body), "{\"n\":%d}", v);
        assert_int_equal(put_doc(f, "full", "d", body, SYNCD_ANY_VERSION, NULL),
                         0);
    }
    syncd_error_clear(&err);
    assert_int_equal(syncd_store_put(f->store, &c, "full", "d", zero,
                                     SYNCD_ANY_VERSION, &err),
                     SYNCD_EBACKEND);
    assert_null(c);
    assert_non_null(strstr(err.message, "waiting to be published"));
    assert_int_equal(
        syncd_store_delete(f->store, &c, "full", "d", SYNCD_ANY_VERSION, NULL),
        SYNCD_EBACKEND);
    assert_null(c);
    for (int v = 1; v <= SYNCD_MAX_OUTBOX_MARKERS; v++)
        snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%d",
                 v > 1 ? " " : "", v);
    assert_outbox(f, "full", "d", want);
    snprintf(body, sizeof(body), "{\"n\":%d}", SYNCD_MAX_OUTBOX_MARKERS);
    assert_doc(f, "full", "d", SYNCD_MAX_OUTBOX_MARKERS, body);

    /* Once the publisher caught up, writes go on. */
    assert_int_equal(syncd_store_outbox_ack(f->store, "full", "d",
                                            SYNCD_MAX_OUTBOX_MARKERS - 1, NULL),
                     0);
    assert_int_equal(
        put_doc(f, "full", "d", "{\"n\":0}", SYNCD_ANY_VERSION, NULL), 0);
    snprintf(want, sizeof(want), "%d %d", SYNCD_MAX_OUTBOX_MARKERS,
             SYNCD_MAX_OUTBOX_MARKERS + 1);
    assert_outbox(f, "full", "d", want);
    json_decref(zero);
}

/* Returns a copy (malloc'd, *len bytes) of the value of key (klen bytes) in
 * the closed store of record at dir, or NULL when the key is absent. */
static char *raw_get(const char *dir, const char *key, size_t klen, size_t *len)
{
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    char *errptr = NULL, *val, *copy = NULL;
    rocksdb_t *db = rocksdb_open(o, dir, &errptr);

    assert_null(errptr);
    val = rocksdb_get(db, ro, key, klen, len, &errptr);
    assert_null(errptr);
    if (val != NULL) {
        copy = malloc(*len + 1);
        memcpy(copy, val, *len);
        copy[*len] = '\0';
    }
    rocksdb_free(val);
    rocksdb_close(db);
    rocksdb_readoptions_destroy(ro);
    rocksdb_options_destroy(o);
    return copy;
}

/* Puts key (klen bytes) = val (len bytes) into the closed store of record
 * at dir, or deletes key when val is NULL. */
static void raw_put(const char *dir, const char *key, size_t klen,
                    const char *val, size_t len)
{
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    char *errptr = NULL;
    rocksdb_t *db = rocksdb_open(o, dir, &errptr);

    assert_null(errptr);
    if (val != NULL)
        rocksdb_put(db, wo, key, klen, val, len, &errptr);
    else
        rocksdb_delete(db, wo, key, klen, &errptr);
    assert_null(errptr);
    rocksdb_close(db);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_options_destroy(o);
}

/* The first byte of the keys of a record's markers and history entries. */
#define MARKERS '\x05'
#define HISTORY '\x07'
/* The key that says no record holds its history any more. */
#define HISTORY_COMPLETE "\x04history-apart"

/* Writes into key the prefix of the marker (kind MARKERS) or history entry
 * (HISTORY) keys of coll/id (the record's key between kind and NUL);
 * returns its length. */
static size_t version_prefix(char *key, char kind, const char *coll,
                             const char *id)
{
    size_t klen = syncd_record_key(key + 1, coll, id);

    key[0] = kind;
    key[1 + klen] = '\0';
    return klen + 2;
}

/* Returns the markers or history entries (kind) of coll/id in the closed
 * store at dir as a compact JSON array of the values of their keys, in key
 * order (malloc'd, *len bytes), or NULL when there are none; with drop
 * set, deletes those keys. */
static char *raw_versions(const char *dir, char kind, const char *coll,
                          const char *id, int drop, size_t *len)
{
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    char prefix[SYNCD_RECORD_KEY_MAX + 2], *errptr = NULL, *out = NULL;
    size_t plen = version_prefix(prefix, kind, coll, id);
    rocksdb_t *db = rocksdb_open(o, dir, &errptr);
    rocksdb_iterator_t *it;

    assert_null(errptr);
    *len = 0;
    it = rocksdb_create_iterator(db, ro);
    for (rocksdb_iter_seek(it, prefix, plen); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *key = rocksdb_iter_key(it, &klen);
        const char *val = rocksdb_iter_value(it, &vlen);

        if (klen < plen || memcmp(key, prefix, plen) != 0)
            break;
        assert_int_equal(klen, plen + 8);
        out = realloc(out, *len + vlen + 3);
        out[*len] = *len == 0 ? '[' : ',';
        (*len)++;
        memcpy(out + *len, val, vlen);
        *len += vlen;
        if (drop) {
            rocksdb_delete(db, wo, key, klen, &errptr);
            assert_null(errptr);
        }
    }
    rocksdb_iter_destroy(it);
    if (out != NULL) {
        out[(*len)++] = ']';
        out[*len] = '\0';
    }
    rocksdb_close(db);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_readoptions_destroy(ro);
    rocksdb_options_destroy(o);
    return out;
}

/* The record of coll/id and its markers, as the closed store holds them:
 * the record's bytes and the markers' keys' values as one array (NULL when
 * there are none). */
typedef struct raw_record {
    char *rec, *ob;
    size_t rlen, oblen;
    int marked; /* the key that says the record has markers is there */
} raw_record_t;

/* Reads coll/id's raw record with the store closed (it is reopened). */
static raw_record_t read_raw(fixture_t *f, const char *coll, const char *id)
{
    char key[1 + SYNCD_RECORD_KEY_MAX], *marked;
    size_t klen = syncd_record_key(key + 1, coll, id), mlen;
    raw_record_t raw;

    syncd_store_close(f->store);
    f->store = NULL;
    raw.rec = raw_get(f->opts.data_dir, key + 1, klen, &raw.rlen);
    raw.ob = raw_versions(f->opts.data_dir, MARKERS, coll, id, 0, &raw.oblen);
    key[0] = '\x06';
    marked = raw_get(f->opts.data_dir, key, 1 + klen, &mlen);
    raw.marked = marked != NULL;
    free(marked);
    assert_non_null(raw.rec);
    open_store(f);
    return raw;
}

static void raw_record_free(raw_record_t *raw)
{
    free(raw->rec);
    free(raw->ob);
}

/* A purge removes a tombstone's history with it, and leaves the history
 * of a live document of the same collection. */
static void test_store_purge__takes_the_history_of_what_it_removes(void **state)
{
    fixture_t *f = *state;
    size_t purged = 0, len = 0;
    char *left;

    f->opts.tombstone_ttl_ms = 1000;
    use_fake_hooks(f, 1000000);
    assert_int_equal(make_tombstones(f, "old", "d", 2, 2), 1);
    assert_int_equal(
        put_doc(f, "old", "d00001", "{\"x\":1}", SYNCD_ANY_VERSION, NULL), 0);
    f->fake.now += 2000;
    assert_int_equal(syncd_store_purge(f->store, "old", 0, &purged, NULL, NULL),
                     0);
    assert_int_equal(purged, 1);
    syncd_store_close(f->store);
    f->store = NULL;
    assert_null(
        raw_versions(f->opts.data_dir, HISTORY, "old", "d00000", 0, &len));
    left = raw_versions(f->opts.data_dir, HISTORY, "old", "d00001", 0, &len);
    assert_non_null(left);
    free(left);
    open_store(f);
}

/* A commit writes its record without its markers, each of which has a key
 * of its own beside it, written in the same write; an ack deletes the keys
 * of the markers it drops (the record's bytes stay as they were); markers
 * read back from disk are the ones kept. */
static void
test_store_outbox__markers_live_beside_the_record_and_an_ack_leaves_it(
    void **state)
{
    fixture_t *f = *state;
    syncd_doc_t *doc = NULL;
    json_t *list = NULL, *ob;
    raw_record_t before, raw;

    use_outbox(f);
    create_doc(f, "bes", "d", "{\"n\":1}");
    assert_int_equal(
        put_doc(f, "bes", "d", "{\"n\":2}", SYNCD_ANY_VERSION, NULL), 0);
    before = read_raw(f, "bes", "d");
    assert_int_equal(
        syncd_record_decode(&doc, "bes", "d", before.rec, before.rlen, 1, NULL),
        0);
    assert_int_equal(doc->version, 2);
    assert_null(doc->outbox);
    syncd_doc_free(doc);
    assert_non_null(before.ob);
    assert_true(before.marked);
    ob = parse(before.ob);
    assert_marker_versions(ob, "1 2");
    json_decref(ob);
    /* Read back from disk by a store just opened. */
    assert_outbox(f, "bes", "d", "1 2");

    assert_int_equal(syncd_store_outbox_ack(f->store, "bes", "d", 1, NULL), 0);
    assert_outbox(f, "bes", "d", "2");
    raw = read_raw(f, "bes", "d");
    assert_int_equal(raw.rlen, before.rlen);
    assert_memory_equal(raw.rec, before.rec, raw.rlen);
    ob = parse(raw.ob);
    assert_marker_versions(ob, "2");
    json_decref(ob);
    assert_true(raw.marked);
    raw_record_free(&raw);
    assert_outbox(f, "bes", "d", "2");

    assert_int_equal(syncd_store_outbox_ack(f->store, "bes", "d", 2, NULL), 0);
    raw = read_raw(f, "bes", "d");
    assert_memory_equal(raw.rec, before.rec, raw.rlen);
    assert_null(raw.ob);
    assert_false(raw.marked);
    raw_record_free(&raw);
    assert_outbox(f, "bes", "d", "");
    assert_int_equal(
        syncd_store_outbox_list(f->store, &list, "bes", NULL, 10, NULL), 0);
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);
    assert_doc(f, "bes", "d", 2, "{\"n\":2}");
    raw_record_free(&before);
}

/* Returns rec (len bytes, a record without meta or with meta that has no
 * "ob") as a store written before the markers moved beside the record
 * wrote it: with the markers ob (compact JSON) as "ob" in its meta
 * (malloc'd, *out_len bytes). */
static char *with_markers_inside(const char *rec, size_t len, const char *ob,
                                 size_t *out_len)
{
    const unsigned char *r = (const unsigned char *)rec;
    size_t off = 18, mlen = 0, nlen, body;
    char *meta, *out;

    off += 1 + r[off];
    off += 1 + r[off];
    if (r[1] & 0x02) {
        mlen = (size_t)r[off] | (size_t)r[off + 1] << 8 |
               (size_t)r[off + 2] << 16 | (size_t)r[off + 3] << 24;
        meta = malloc(strlen(ob) + mlen + 16);
        sprintf(meta, "{\"ob\":%s,%.*s", ob, (int)mlen - 1, rec + off + 5);
        body = off + 4 + mlen;
    } else {
        meta = malloc(strlen(ob) + 16);
        sprintf(meta, "{\"ob\":%s}", ob);
        body = off;
    }
    nlen = strlen(meta);
    out = malloc(off + 4 + nlen + (len - body));
    memcpy(out, rec, off);
    out[1] = (char)(out[1] | 0x02);
    for (int i = 0; i < 4; i++)
        out[off + (size_t)i] = (char)(nlen >> (8 * i));
    memcpy(out + off + 4, meta, nlen);
    memcpy(out + off + 4 + nlen, rec + body, len - body);
    *out_len = off + 4 + nlen + (len - body);
    free(meta);
    return out;
}

/* A store written before the markers moved beside the record kept them in
 * it, with an empty value under the outbox key: they are still listed,
 * acked and carried on by the next commit, and once acked they stay gone
 * although the record still holds them. */
static void
test_store_outbox__a_record_holding_its_markers_still_publishes_them(
    void **state)
{
    fixture_t *f = *state;
    char key[1 + SYNCD_RECORD_KEY_MAX], *old;
    size_t klen = syncd_record_key(key + 1, "leg", "d"), olen, mlen;
    json_t *list = NULL;
    raw_record_t raw;

    use_outbox(f);
    create_doc(f, "leg", "d", "{\"n\":1}");
    assert_int_equal(
        put_doc(f, "leg", "d", "{\"n\":2}", SYNCD_ANY_VERSION, NULL), 0);
    raw = read_raw(f, "leg", "d");
    old = with_markers_inside(raw.rec, raw.rlen, raw.ob, &olen);
    syncd_store_close(f->store);
    f->store = NULL;
    free(raw_versions(f->opts.data_dir, MARKERS, "leg", "d", 1, &mlen));
    key[0] = '\x02';
    raw_put(f->opts.data_dir, key + 1, klen, old, olen);
    raw_put(f->opts.data_dir, key, 1 + klen, "", 0);
    open_store(f);

    assert_outbox(f, "leg", "d", "1 2");
    assert_int_equal(
        syncd_store_outbox_list(f->store, &list, "leg", NULL, 10, NULL), 0);
    assert_int_equal(json_array_size(list), 1);
    assert_marker_versions(json_object_get(json_array_get(list, 0), "ob"),
                           "1 2");
    json_decref(list);
    assert_int_equal(syncd_store_outbox_ack(f->store, "leg", "d", 1, NULL), 0);
    reopen(f);
    assert_outbox(f, "leg", "d", "2");
    assert_int_equal(
        put_doc(f, "leg", "d", "{\"n\":3}", SYNCD_ANY_VERSION, NULL), 0);
    reopen(f);
    assert_outbox(f, "leg", "d", "2 3");
    assert_int_equal(syncd_store_outbox_ack(f->store, "leg", "d", 3, NULL), 0);
    reopen(f);
    assert_outbox(f, "leg", "d", "");

    /* A record left holding markers that were all acked. */
    syncd_store_close(f->store);
    f->store = NULL;
    raw_put(f->opts.data_dir, key + 1, klen, old, olen);
    open_store(f);
    assert_outbox(f, "leg", "d", "");
    assert_doc(f, "leg", "d", 2, "{\"n\":2}");
    free(old);
    raw_record_free(&raw);
}

/* A store that kept a record's markers as one array under the key 0x02 +
 * the record's key gives each marker a key of its own at open, drops the
 * array, and goes on from there. */
static void
test_store_outbox__markers_kept_as_one_array_get_a_key_each(void **state)
{
    fixture_t *f = *state;
    char key[1 + SYNCD_RECORD_KEY_MAX], *left;
    size_t klen = syncd_record_key(key + 1, "arr", "d"), len;
    raw_record_t raw;
    json_t *ob;

    use_outbox(f);
    create_doc(f, "arr", "d", "{\"n\":1}");
    for (int n = 2; n <= 3; n++) {
        char body[16];

        snprintf(body, sizeof(body), "{\"n\":%d}", n);
        assert_int_equal(put_doc(f, "arr", "d", body, SYNCD_ANY_VERSION, NULL),
                         0);
    }
    assert_int_equal(syncd_store_outbox_ack(f->store, "arr", "d", 1, NULL), 0);
    raw = read_raw(f, "arr", "d");
    syncd_store_close(f->store);
    f->store = NULL;
    free(raw_versions(f->opts.data_dir, MARKERS, "arr", "d", 1, &len));
    key[0] = '\x02';
    raw_put(f->opts.data_dir, key, 1 + klen, raw.ob, raw.oblen);
    open_store(f);

    assert_outbox(f, "arr", "d", "2 3");
    raw_record_free(&raw);
    raw = read_raw(f, "arr", "d");
    assert_non_null(raw.ob);
    assert_true(raw.marked);
    raw_record_free(&raw);
    syncd_store_close(f->store);
    f->store = NULL;
    assert_null(raw_get(f->opts.data_dir, key, 1 + klen, &len));
    open_store(f);
    assert_int_equal(syncd_store_outbox_ack(f->store, "arr", "d", 2, NULL), 0);
    assert_int_equal(
        put_doc(f, "arr", "d", "{\"n\":4}", SYNCD_ANY_VERSION, NULL), 0);
    reopen(f);
    assert_outbox(f, "arr", "d", "3 4");
    syncd_store_close(f->store);
    f->store = NULL;
    left = raw_versions(f->opts.data_dir, MARKERS, "arr", "d", 0, &len);
    assert_non_null(left);
    ob = parse(left);
    assert_marker_versions(ob, "3 4");
    json_decref(ob);
    free(left);
    open_store(f);
    assert_doc(f, "arr", "d", 4, "{\"n\":4}");
}

/* An outbox key of the old layout that holds no array does not stop the
 * open: reading its record fails, as it did, and the others read fine. */
static void
test_store_outbox__a_corrupt_old_outbox_fails_its_record_alone(void **state)
{
    fixture_t *f = *state;
    char key[1 + SYNCD_RECORD_KEY_MAX];
    size_t klen = syncd_record_key(key + 1, "bad", "d");
    syncd_doc_t *doc = NULL;
    syncd_error_t err;

    use_outbox(f);
    create_doc(f, "bad", "d", "{\"n\":1}");
    create_doc(f, "bad", "e", "{\"n\":1}");
    syncd_store_close(f->store);
    f->store = NULL;
    free(raw_versions(f->opts.data_dir, MARKERS, "bad", "d", 1, &klen));
    klen = syncd_record_key(key + 1, "bad", "d");
    key[0] = '\x02';
    raw_put(f->opts.data_dir, key, 1 + klen, "[{\"v\":1,", 8);
    open_store(f);

    syncd_error_clear(&err);
    assert_int_equal(syncd_store_get(f->store, &doc, "bad", "d", &err),
                     SYNCD_EBACKEND);
    assert_non_null(strstr(err.message, "outbox of bad/d is corrupt"));
    assert_null(doc);
    assert_outbox(f, "bad", "e", "1");
}

static void test_store_outbox__list_pages_records_with_markers(void **state)
{
    fixture_t *f = *state;
    json_t *list = NULL;

    use_outbox(f);

    create_doc(f, "pg", "a", "{}");
    create_doc(f, "pg", "b", "{}");
    create_doc(f, "pg", "c", "{}");
    create_doc(f, "other", "z", "{}");
    assert_int_equal(syncd_store_outbox_ack(f->store, "pg", "b", 1, NULL), 0);

    assert_int_equal(
        syncd_store_outbox_list(f->store, &list, "pg", NULL, 1, NULL), 0);
    assert_ids(list, "a");
    json_decref(list);
    assert_int_equal(
        syncd_store_outbox_list(f->store, &list, "pg", "a", 1, NULL), 0);
    assert_ids(list, "c");
    json_decref(list);
    assert_int_equal(
        syncd_store_outbox_list(f->store, &list, "pg", "c", 1, NULL), 0);
    assert_ids(list, "");
    json_decref(list);
}

static void
test_store_purge__keeps_tombstones_with_pending_markers(void **state)
{
    fixture_t *f = *state;
    syncd_change_t *c = NULL;
    syncd_doc_t *doc = NULL;
    size_t purged = 99;

    use_outbox(f);

    f->opts.tombstone_ttl_ms = 1000;
    use_fake_hooks(f, 1000000);
    create_doc(f, "tp", "pending", "{}");
    create_doc(f, "tp", "done", "{}");
    assert_int_equal(syncd_store_delete(f->store, &c, "tp", "pending",
                                        SYNCD_ANY_VERSION, NULL),
                     0);
    syncd_change_free(c);
    assert_int_equal(
        syncd_store_delete(f->store, &c, "tp", "done", SYNCD_ANY_VERSION, NULL),
        0);
    syncd_change_free(c);
    assert_int_equal(syncd_store_outbox_ack(f->store, "tp", "done", 2, NULL),
                     0);

    f->fake.now += 5000;
    assert_int_equal(syncd_store_purge(f->store, "tp", 0, &purged, NULL, NULL),
                     0);
    assert_int_equal(purged, 1);
    assert_int_equal(syncd_store_refetch(f->store, &doc, "tp", "done", NULL),
                     SYNCD_ENOTFOUND);
    assert_int_equal(syncd_store_refetch(f->store, &doc, "tp", "pending", NULL),
                     0);
    assert_true(doc->deleted);
    assert_marker_versions(doc->outbox, "1 2");
    syncd_doc_free(doc);
}

/* Runs a merge patch of coll/id with the idempotency key into *out. */
static int keyed_merge(fixture_t *f, syncd_change_t **out, const char *id,
                       const char *patch, const char *key, int64_t if_match)
{
    syncd_write_options_t wo;
    json_t *p = parse(patch);
    int rc;

    syncd_write_options_init(&wo);
    wo.idempotency_key = key;
    wo.if_match = if_match;
    rc = syncd_store_patch_ex(f->store, out, "ik", id, p, 1, &wo, NULL);
    json_decref(p);
    return rc;
}

static void
test_store_idempotency__a_retry_replays_the_first_outcome_and_writes_nothing(
    void **state)
{
    fixture_t *f = *state;
    syncd_write_options_t wo;
    syncd_change_t *c = NULL;

    use_outbox(f);

    create_doc(f, "ik", "d", "{\"n\":0}");
    assert_int_equal(keyed_merge(f, &c, "d", "{\"n\":1}", "key-1", 1), 0);
    assert_int_equal(c->op, SYNCD_CHANGE_UPDATE);
    assert_false(c->replayed);
    syncd_change_free(c);
    /* Another writer moves the document on... */
    assert_int_equal(
        put_doc(f, "ik", "d", "{\"n\":7}", SYNCD_ANY_VERSION, NULL), 0);
    /* ...and the retry, even a strict one, replays the first outcome. */
    reopen(f);
    assert_int_equal(keyed_merge(f, &c, "d", "{\"n\":1}", "key-1", 1), 0);
    assert_int_equal(c->op, SYNCD_CHANGE_NONE);
    assert_true(c->replayed);
    assert_int_equal(c->replayed_op, SYNCD_CHANGE_UPDATE);
    assert_int_equal(c->replayed_version, 2);
    syncd_change_free(c);
    assert_doc(f, "ik", "d", 3, "{\"n\":7}");
    assert_outbox(f, "ik", "d", "1 2 3");

    /* Another key writes. */
    assert_int_equal(
        keyed_merge(f, &c, "d", "{\"n\":1}", "key-2", SYNCD_ANY_VERSION), 0);
    assert_int_equal(c->doc->version, 4);
    syncd_change_free(c);

    /* A delete replays as a delete, also over its own tombstone. */
    syncd_write_options_init(&wo);
    wo.idempotency_key = "del-1";
    assert_int_equal(syncd_store_delete_ex(f->store, &c, "ik", "d", &wo, NULL),
                     0);
    syncd_change_free(c);
    assert_int_equal(syncd_store_delete_ex(f->store, &c, "ik", "d", &wo, NULL),
                     0);
    assert_true(c->replayed);
    assert_int_equal(c->replayed_op, SYNCD_CHANGE_DELETE);
    assert_int_equal(c->replayed_version, 5);
    syncd_change_free(c);

    /* Keys must be 1..128 printable ASCII bytes. */
    wo.idempotency_key = "bad key";
    assert_int_equal(syncd_store_delete_ex(f->store, &c, "ik", "d", &wo, NULL),
                     SYNCD_EINVAL);
    assert_null(c);
}

static void test_store_idempotency__an_expired_key_writes_again(void **state)
{
    fixture_t *f = *state;
    syncd_change_t *c = NULL;

    f->opts.idempotency_ttl_ms = 1000;
    use_fake_hooks(f, 1000000);
    create_doc(f, "ik", "e", "{\"n\":0}");
    assert_int_equal(keyed_merge(f, &c, "e", "{\"n\":1}", "k", 1), 0);
    syncd_change_free(c);
    assert_int_equal(
        put_doc(f, "ik", "e", "{\"n\":0}", SYNCD_ANY_VERSION, NULL), 0);
    f->fake.now += 1000;
    assert_int_equal(
        keyed_merge(f, &c, "e", "{\"n\":1}", "k", SYNCD_ANY_VERSION), 0);
    assert_true(c->replayed);
    syncd_change_free(c);
    f->fake.now += 1;
    assert_int_equal(
        keyed_merge(f, &c, "e", "{\"n\":1}", "k", SYNCD_ANY_VERSION), 0);
    assert_false(c->replayed);
    assert_int_equal(c->op, SYNCD_CHANGE_UPDATE);
    assert_int_equal(c->doc->version, 4);
    syncd_change_free(c);
}

static void
test_store_export_page__lists_live_documents_with_bodies_after_an_id(
    void **state)
{
    fixture_t *f = *state;
    syncd_change_t *c = NULL;
    syncd_doc_t *doc = NULL;
    json_t *page = NULL;
    syncd_error_t err;

    create_doc(f, "exp", "b", "{\"n\":2}");
    create_doc(f, "exp", "a", "{\"n\":1}");
    create_doc(f, "exp", "c", "{\"n\":3}");
    create_doc(f, "exp", "d/e", "{\"n\":4}");
    assert_int_equal(put_doc(f, "exp", "a", "{\"n\":10}", 1, NULL), 0);
    assert_int_equal(
        syncd_store_delete(f->store, &c, "exp", "c", SYNCD_ANY_VERSION, NULL),
        0);
    syncd_change_free(c);

    assert_int_equal(
        syncd_store_export_page(f->store, &page, "exp", NULL, 2, NULL), 0);
    assert_ids(page, "a b");
    assert_int_equal(
        json_integer_value(json_object_get(json_array_get(page, 0), "v")), 2);
    assert_json_text(json_object_get(json_array_get(page, 0), "data"),
                     "{\"n\":10}");
    assert_int_equal(syncd_store_get(f->store, &doc, "exp", "a", NULL), 0);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(page, 0), "h")),
        doc->hash);
    syncd_doc_free(doc);
    json_decref(page);

    /* The tombstone of c is not exported. */
    assert_int_equal(
        syncd_store_export_page(f->store, &page, "exp", "b", 10, NULL), 0);
    assert_ids(page, "d/e");
    json_decref(page);

    syncd_error_clear(&err);
    assert_int_equal(
        syncd_store_export_page(f->store, &page, "exp", NULL, 0, &err),
        SYNCD_EINVAL);
    assert_null(page);
    assert_int_equal(
        syncd_store_export_page(f->store, &page, "Bad!", NULL, 10, NULL),
        SYNCD_EINVAL);
}

static void
test_store_checkpoint__of_rocksdb_opens_with_the_same_documents(void **state)
{
    fixture_t *f = *state;
    syncd_store_options_t opts = f->opts;
    syncd_store_t *copy = NULL;
    syncd_digest_t want, got;
    syncd_error_t err;
    char dir[512];

    create_doc(f, "cp", "x", "{\"n\":1}");
    create_doc(f, "cp", "y", "{\"n\":2}");
    assert_int_equal(put_doc(f, "cp", "y", "{\"n\":3}", 1, NULL), 0);
    snprintf(dir, sizeof(dir), "%s/checkpoint", f->dir);
    syncd_error_clear(&err);
    if (f->kind->mongo) {
        assert_int_equal(syncd_store_checkpoint(f->store, dir, &err),
                         SYNCD_EINVAL);
        assert_non_null(strstr(err.message, "embedded"));
        return;
    }
    assert_int_equal(syncd_store_checkpoint(f->store, dir, &err), 0);
    assert_int_equal(syncd_store_checkpoint(f->store, dir, NULL),
                     SYNCD_EBACKEND);
    /* A write after the checkpoint is not in it. */
    assert_int_equal(syncd_store_digest(f->store, &want, "cp", NULL), 0);
    create_doc(f, "cp", "z", "{}");
    opts.data_dir = dir;
    assert_int_equal(syncd_store_open(&copy, &opts, NULL), 0);
    assert_int_equal(syncd_store_digest(copy, &got, "cp", NULL), 0);
    assert_int_equal(got.count, 2);
    assert_string_equal(got.hex, want.hex);
    syncd_store_close(copy);
}

static void test_store_collections__lists_names_sorted(void **state)
{
    fixture_t *f = *state;
    json_t *names = NULL;

    create_doc(f, "beta", "x", "{}");
    create_doc(f, "alpha", "x", "{}");
    create_doc(f, "alpha", "y", "{}");
    assert_int_equal(syncd_store_collections(f->store, &names, NULL), 0);
    assert_json_text(names, "[\"alpha\",\"beta\"]");
    json_decref(names);
}

/* ---- Cache through the store -------------------------------------------- */

static void
test_store_cache__holds_committed_writes_in_mongodb_mode(void **state)
{
    fixture_t *f = *state;
    syncd_change_t *c = NULL;
    syncd_doc_t *doc = NULL;
    json_t *list = NULL;

    create_doc(f, "cc", "d", "{\"n\":1}");
    assert_int_equal(syncd_store_edit(f->store, &c, "cc", "d", inc_counter,
                                      NULL, SYNCD_ANY_VERSION, NULL),
                     0);
    syncd_change_free(c);
    assert_int_equal(syncd_store_cache_list(f->store, &list, "cc", NULL), 0);
    if (!f->kind->mongo) {
        assert_int_equal(syncd_store_cached(f->store, &doc, "cc", "d", NULL),
                         SYNCD_ENOTFOUND);
        assert_int_equal(json_array_size(list), 0);
        json_decref(list);
        return;
    }
    assert_ids(list, "d");
    json_decref(list);
    assert_int_equal(syncd_store_cached(f->store, &doc, "cc", "d", NULL), 0);
    assert_int_equal(doc->version, 2);
    assert_json_text(doc->body, "{\"n\":2}");

    /* An older version offered to the cache is refused. */
    doc->version = 1;
    assert_int_equal(syncd_store_cache_put(f->store, doc, NULL), 0);
    syncd_doc_free(doc);
    assert_int_equal(syncd_store_cached(f->store, &doc, "cc", "d", NULL), 0);
    assert_int_equal(doc->version, 2);
    syncd_doc_free(doc);

    assert_int_equal(syncd_store_cache_invalidate(f->store, "cc", "d", NULL),
                     0);
    assert_int_equal(syncd_store_cached(f->store, &doc, "cc", "d", NULL),
                     SYNCD_ENOTFOUND);
    assert_int_equal(syncd_store_refetch(f->store, &doc, "cc", "d", NULL), 0);
    syncd_doc_free(doc);
    assert_int_equal(syncd_store_cached(f->store, &doc, "cc", "d", NULL), 0);
    assert_int_equal(doc->version, 2);
    syncd_doc_free(doc);
}

/* ---- Bad input ---------------------------------------------------------- */

static void assert_id_rejected(fixture_t *f, const char *id, const char *why)
{
    json_t *body = parse("{}");
    syncd_change_t *c = NULL;
    syncd_doc_t *doc = NULL;
    syncd_error_t err;

    syncd_error_clear(&err);
    assert_int_equal(syncd_validate_id(id, &err), SYNCD_EINVAL);
    assert_non_null(strstr(err.message, why));
    assert_int_equal(syncd_store_create(f->store, &c, "ok", id, body, NULL),
                     SYNCD_EINVAL);
    assert_int_equal(
        syncd_store_put(f->store, &c, "ok", id, body, SYNCD_ANY_VERSION, NULL),
        SYNCD_EINVAL);
    assert_int_equal(syncd_store_get(f->store, &doc, "ok", id, NULL),
                     SYNCD_EINVAL);
    assert_int_equal(syncd_store_edit(f->store, &c, "ok", id, inc_counter, NULL,
                                      SYNCD_ANY_VERSION, NULL),
                     SYNCD_EINVAL);
    assert_int_equal(
        syncd_store_delete(f->store, &c, "ok", id, SYNCD_ANY_VERSION, NULL),
        SYNCD_EINVAL);
    json_decref(body);
}

static void assert_coll_rejected(fixture_t *f, const char *coll)
{
    json_t *body = parse("{}");
    syncd_change_t *c = NULL;
    json_t *list = NULL;

    assert_int_equal(syncd_validate_collection(coll, NULL), SYNCD_EINVAL);
    assert_int_equal(syncd_store_create(f->store, &c, coll, "id", body, NULL),
                     SYNCD_EINVAL);
    assert_int_equal(
        syncd_store_list(f->store, &list, coll, NULL, NULL, 0, NULL),
        SYNCD_EINVAL);
    json_decref(body);
}

static void
test_store__bad_ids_and_collections_never_reach_the_backend(void **state)
{
    fixture_t *f = *state;
    char longest[SYNCD_MAX_ID_BYTES + 2];
    json_t *names = NULL;
    char coll[66];

    memset(longest, 'a', sizeof(longest) - 1);
    longest[sizeof(longest) - 1] = '\0';
    assert_id_rejected(f, "", "empty");
    assert_id_rejected(f, longest, "over 1024");
    assert_id_rejected(f, "a\x01z", "control");
    assert_id_rejected(f, "tab\tbed", "control");
    assert_id_rejected(f, "del\x7f", "control");
    assert_id_rejected(f, "c1\xc2\x85", "control");
    assert_id_rejected(f, "a<b", "'<'");
    assert_id_rejected(f, "a>b", "'>'");
    assert_id_rejected(f, "a?b", "'?'");
    assert_id_rejected(f, "a{b", "'{'");
    assert_id_rejected(f, "a}b", "'}'");
    assert_id_rejected(f, "\xff", "UTF-8");
    assert_id_rejected(f, "bad\xc3\x28", "UTF-8");
    assert_id_rejected(f, "overlong\xc0\xaf", "UTF-8");
    assert_id_rejected(f, "surrogate\xed\xa0\x80", "UTF-8");
    assert_id_rejected(f, "cut\xe6\x97", "UTF-8");

    assert_coll_rejected(f, "");
    assert_coll_rejected(f, "Upper");
    assert_coll_rejected(f, "_lead");
    assert_coll_rejected(f, ".lead");
    assert_coll_rejected(f, "has space");
    assert_coll_rejected(f, "a/b");
    assert_coll_rejected(f, "caf\xc3\xa9");
    memset(coll, 'c', 65);
    coll[65] = '\0';
    assert_coll_rejected(f, coll);

    assert_int_equal(syncd_store_collections(f->store, &names, NULL), 0);
    assert_int_equal(json_array_size(names), 0);
    json_decref(names);

    longest[SYNCD_MAX_ID_BYTES] = '\0';
    assert_int_equal(syncd_validate_id(longest, NULL), 0);
    assert_int_equal(syncd_validate_id("Scenario/helloworld", NULL), 0);
    assert_int_equal(syncd_validate_id("\xc3\xbc/\xe6\x97\xa5", NULL), 0);
    assert_int_equal(syncd_validate_collection("0-9._x", NULL), 0);
    coll[64] = '\0';
    assert_int_equal(syncd_validate_collection(coll, NULL), 0);
    create_doc(f, "ok", longest, "{}");
    assert_int_equal(live_version(f, "ok", longest), 1);
}

static void
test_store__non_object_and_oversized_bodies_are_rejected(void **state)
{
    fixture_t *f = *state;
    static const char *not_objects[] = {"[1]", "\"s\"", "3", "null"};
    json_t *big = json_pack("{s:s}", "pad", "");
    syncd_change_t *c = NULL;
    char pad[201];
    json_t *names = NULL;

    f->opts.max_doc_bytes = 100;
    reopen(f);
    for (size_t i = 0; i < 4; i++) {
        json_t *b = parse(not_objects[i]);

        assert_int_equal(
            syncd_store_create(f->store, &c, "bodies", "x", b, NULL),
            SYNCD_EINVAL);
        json_decref(b);
    }
    memset(pad, 'p', 200);
    pad[200] = '\0';
    json_object_set_new(big, "pad", json_string(pad));
    assert_int_equal(syncd_store_create(f->store, &c, "bodies", "x", big, NULL),
                     SYNCD_ETOOBIG);
    assert_int_equal(syncd_store_collections(f->store, &names, NULL), 0);
    assert_int_equal(json_array_size(names), 0);
    json_decref(names);

    create_doc(f, "bodies", "x", "{\"pad\":\"small\"}");
    assert_int_equal(syncd_store_put(f->store, &c, "bodies", "x", big,
                                     SYNCD_ANY_VERSION, NULL),
                     SYNCD_ETOOBIG);
    assert_doc(f, "bodies", "x", 1, "{\"pad\":\"small\"}");
    json_decref(big);
}

/* Asserts that coll/id, read from the store, knows the size of its body's
 * canonical JSON (0 for a tombstone). */
static void assert_body_size(fixture_t *f, const char *coll, const char *id)
{
    syncd_doc_t *doc = NULL;
    size_t len = 0;
    char *canon;

    assert_int_equal(syncd_store_refetch(f->store, &doc, coll, id, NULL), 0);
    if (doc->deleted) {
        assert_int_equal(doc->body_size, 0);
    } else {
        canon = syncd_json_canonical(doc->body, &len);
        assert_int_equal(doc->body_size, len);
        free(canon);
    }
    syncd_doc_free(doc);
}

/* Each version the store of record holds knows its body's canonical size,
 * as committed and as read back, and a patch bounded by it is still held
 * to max_doc_bytes. */
static void test_store__each_version_knows_its_body_size(void **state)
{
    fixture_t *f = *state;
    json_t *grow = parse("[{\"op\":\"add\",\"path\":\"/pad\",\"value\":"
                         "\"0123456789012345678901234567890123456789\"}]");
    json_t *merge =
        parse("{\"pad\":\"0123456789012345678901234567890123456789\"}");
    json_t *edit = parse("[{\"op\":\"replace\",\"path\":\"/b/1\",\"value\":"
                         "{\"x\":\"\\u00e9\\n\"}}]");
    syncd_change_t *c = NULL;

    f->opts.max_doc_bytes = 80;
    reopen(f);
    create_doc(f, "sz", "d", "{\"b\":[1,2.5,\"q\\\"\"],\"a\":\"\\u00e9\"}");
    assert_body_size(f, "sz", "d");
    assert_int_equal(syncd_store_patch(f->store, &c, "sz", "d", edit, 0,
                                       SYNCD_ANY_VERSION, NULL),
                     0);
    syncd_change_free(c);
    assert_body_size(f, "sz", "d");
    reopen(f);
    assert_body_size(f, "sz", "d");
    assert_int_equal(syncd_store_patch(f->store, &c, "sz", "d", grow, 0,
                                       SYNCD_ANY_VERSION, NULL),
                     SYNCD_ETOOBIG);
    assert_int_equal(syncd_store_patch(f->store, &c, "sz", "d", merge, 1,
                                       SYNCD_ANY_VERSION, NULL),
                     SYNCD_ETOOBIG);
    assert_int_equal(
        syncd_store_delete(f->store, &c, "sz", "d", SYNCD_ANY_VERSION, NULL),
        0);
    syncd_change_free(c);
    assert_body_size(f, "sz", "d");
    json_decref(grow);
    json_decref(merge);
    json_decref(edit);
}

/* ---- Exact round trips -------------------------------------------------- */

static void
test_store__awkward_keys_and_numbers_round_trip_exactly(void **state)
{
    fixture_t *f = *state;
    json_t *body = json_loads(
        "{\"a.b\":1,\"$x\":{\"$y\":\"z\",\"p.q.r\":[{\"$in\":[]}]},"
        "\"\":\"empty key\",\"_id\":\"not mine\","
        "\"n\":{\"min\":-9223372036854775808,\"max\":9223372036854775807,"
        "\"tenth\":0.1,\"big\":1e300,\"tiny\":5e-324,\"negzero\":-0.0,"
        "\"zero\":0,\"realone\":1.0,\"neg\":-17},"
        "\"s\":\"\\u00fc \\u65e5 nul\\u0000end\",\"o\":{},\"t\":true,"
        "\"nil\":null}",
        JSON_ALLOW_NUL, NULL);
    syncd_change_t *c = NULL;
    syncd_doc_t *doc = NULL;
    char hash[SYNCD_HASH_HEX_LEN + 1];

    assert_non_null(body);
    assert_int_equal(syncd_store_create(f->store, &c, "rt", "odd", body, NULL),
                     0);
    assert_int_equal(syncd_json_hash(hash, body, NULL), 0);
    assert_string_equal(c->doc->hash, hash);
    syncd_change_free(c);

    reopen(f);
    assert_int_equal(syncd_store_get(f->store, &doc, "rt", "odd", NULL), 0);
    assert_json_exact(doc->body, body);
    assert_string_equal(doc->hash, hash);
    syncd_doc_free(doc);
    assert_int_equal(syncd_store_refetch(f->store, &doc, "rt", "odd", NULL), 0);
    assert_json_exact(doc->body, body);
    syncd_doc_free(doc);
    json_decref(body);
}

/* ---- Crash safety of the embedded store --------------------------------- */

/* Starts this test binary again as a child process in mode (one of the
 * --*-child flags of main()) on the store in dir, writing to the pipe end
 * fds[1]; returns its pid, with fds[1] closed in the parent. A child of its
 * own binary rather than a fork of this process: a child forked from the
 * threaded test process cannot start threads under ThreadSanitizer. */
static pid_t spawn_child(const char *mode, const char *dir, int fds[2])
{
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0) {
        char fd[16];

        close(fds[0]);
        snprintf(fd, sizeof(fd), "%d", fds[1]);
        execl("/proc/self/exe", "test_storage", mode, dir, fd, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    return pid;
}

/* Child of the crash test (this binary run with --crash-child DIR FD,
 * spawn_child()): increments the counter
 * forever, writing each committed version to fd after the edit returned
 * (the acknowledgement). */
static void crash_child(const char *dir, int fd)
{
    syncd_store_options_t opts;
    syncd_store_t *store = NULL;

    syncd_store_options_init(&opts);
    opts.data_dir = dir;
    if (syncd_store_open(&store, &opts, NULL) != 0)
        _exit(2);
    for (;;) {
        syncd_change_t *c = NULL;
        int64_t v;

        if (syncd_store_edit(store, &c, "crash", "c", inc_counter, NULL,
                             SYNCD_ANY_VERSION, NULL) != 0)
            _exit(3);
        v = c->doc->version;
        syncd_change_free(c);
        if (write(fd, &v, sizeof(v)) != sizeof(v))
            _exit(4);
    }
}

static void test_store_rocks__acknowledged_writes_survive_sigkill(void **state)
{
    fixture_t *f = *state;
    int64_t acked = 0, v;
    int fds[2], status, n = 0;
    char want[64];
    pid_t pid;

    create_doc(f, "crash", "c", "{\"n\":0}");
    syncd_store_close(f->store);
    f->store = NULL;
    assert_int_equal(pipe(fds), 0);
    pid = spawn_child("--crash-child", f->dir, fds);
    while (n < 150 && read(fds[0], &v, sizeof(v)) == sizeof(v)) {
        acked = v;
        n++;
    }
    assert_int_equal(n, 150);
    kill(pid, SIGKILL);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    while (read(fds[0], &v, sizeof(v)) == sizeof(v))
        acked = v;
    close(fds[0]);

    open_store(f);
    v = live_version(f, "crash", "c");
    assert_true(v >= acked);
    snprintf(want, sizeof(want), "{\"n\":%lld}", (long long)(v - 1));
    assert_doc(f, "crash", "c", v, want);
}

/* What a group-commit crash child reports to its parent: a write it had
 * acknowledged (writer set) or a version one of its readers saw. */
typedef struct gc_report {
    int32_t doc;    /* which of GC_DOCS */
    int32_t writer; /* the writer thread, -1 for a read */
    int64_t version;
    int64_t i; /* the writer's count, in its body */
} gc_report_t;

#define GC_DOCS 3
#define GC_WRITERS 12
#define GC_READERS 4

typedef struct gc_thread {
    syncd_store_t *store;
    int fd;
    int writer;
} gc_thread_t;

static void gc_report(int fd, int doc, int writer, int64_t version, int64_t i)
{
    gc_report_t r = {doc, writer, version, i};

    if (write(fd, &r, sizeof(r)) != sizeof(r))
        _exit(4);
}

/* Blind-puts {"w":writer,"i":i} to doc i % GC_DOCS, for i = 0, 1, ..., and
 * reports each acknowledged put. */
static void *gc_writer(void *arg)
{
    gc_thread_t *t = arg;
    char id[16];

    for (int64_t i = 0;; i++) {
        json_t *body = json_pack("{s:i, s:I}", "w", t->writer, "i", i);
        syncd_change_t *c = NULL;
        int doc = (int)(i % GC_DOCS);

        snprintf(id, sizeof(id), "d%d", doc);
        if (body == NULL || syncd_store_put(t->store, &c, "gc", id, body,
                                            SYNCD_ANY_VERSION, NULL) != 0)
            _exit(3);
        gc_report(t->fd, doc, t->writer, c->doc->version, i);
        syncd_change_free(c);
        json_decref(body);
    }
    return NULL;
}

/* Reads the documents in turn and reports each version seen. */
static void *gc_reader(void *arg)
{
    gc_thread_t *t = arg;
    char id[16];

    for (int64_t i = 0;; i++) {
        syncd_doc_t *doc = NULL;

        snprintf(id, sizeof(id), "d%d", (int)(i % GC_DOCS));
        if (syncd_store_get(t->store, &doc, "gc", id, NULL) == 0) {
            gc_report(t->fd, (int)(i % GC_DOCS), -1, doc->version, 0);
            syncd_doc_free(doc);
        }
    }
    return NULL;
}

/* The crash child (this binary run with --gc-child DIR FD, spawn_child()):
 * writers and readers on the store in dir until killed. */
static void gc_child(const char *dir, int fd)
{
    gc_thread_t t[GC_WRITERS + GC_READERS];
    pthread_t threads[GC_WRITERS + GC_READERS];
    syncd_store_options_t opts;
    syncd_store_t *store = NULL;

    syncd_store_options_init(&opts);
    opts.data_dir = dir;
    if (syncd_store_open(&store, &opts, NULL) != 0)
        _exit(2);
    for (int i = 0; i < GC_WRITERS + GC_READERS; i++) {
        t[i].store = store;
        t[i].fd = fd;
        t[i].writer = i;
        if (pthread_create(&threads[i], NULL,
                           i < GC_WRITERS ? gc_writer : gc_reader, &t[i]) != 0)
            _exit(5);
    }
    pause();
    _exit(6);
}

/* Acknowledged writes, as the parent collected them: for each document,
 * the highest version acked or read, and the body of each acked version. */
typedef struct gc_seen {
    int64_t max_version[GC_DOCS];
    json_t *bodies[GC_DOCS]; /* version (as a key) -> acked body */
} gc_seen_t;

static void gc_collect(gc_seen_t *seen, const gc_report_t *r)
{
    char key[32];
    json_t *body, *was;

    assert_true(r->doc >= 0 && r->doc < GC_DOCS);
    if (r->version > seen->max_version[r->doc])
        seen->max_version[r->doc] = r->version;
    if (r->writer < 0)
        return;
    snprintf(key, sizeof(key), "%lld", (long long)r->version);
    body = json_pack("{s:i, s:I}", "w", r->writer, "i", r->i);
    was = json_object_get(seen->bodies[r->doc], key);
    /* Two acknowledged writes never get the same version. */
    assert_null(was);
    assert_int_equal(json_object_set_new(seen->bodies[r->doc], key, body), 0);
}

static void
test_store_rocks__kill_during_group_commits_loses_no_acked_or_read_version(
    void **state)
{
    fixture_t *f = *state;
    gc_seen_t seen = {{0}, {NULL}};
    int fds[2], status, n = 0;
    gc_report_t r;
    pid_t pid;

    syncd_store_close(f->store);
    f->store = NULL;
    for (int d = 0; d < GC_DOCS; d++)
        seen.bodies[d] = json_object();
    assert_int_equal(pipe(fds), 0);
    pid = spawn_child("--gc-child", f->dir, fds);
    while (n < 1500 && read(fds[0], &r, sizeof(r)) == sizeof(r)) {
        gc_collect(&seen, &r);
        n += r.writer >= 0;
    }
    assert_int_equal(n, 1500);
    kill(pid, SIGKILL);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    while (read(fds[0], &r, sizeof(r)) == sizeof(r))
        gc_collect(&seen, &r);
    close(fds[0]);

    open_store(f);
    for (int d = 0; d < GC_DOCS; d++) {
        char id[16], key[32];
        syncd_doc_t *doc = NULL;
        syncd_change_t *c = NULL;
        json_t *acked, *body = json_pack("{s:s}", "after", "crash");

        snprintf(id, sizeof(id), "d%d", d);
        assert_int_equal(syncd_store_get(f->store, &doc, "gc", id, NULL), 0);
        /* Every acked write and every version a reader saw survived. */
        assert_true(doc->version >= seen.max_version[d]);
        snprintf(key, sizeof(key), "%lld", (long long)doc->version);
        acked = json_object_get(seen.bodies[d], key);
        if (acked != NULL)
            assert_true(json_equal(acked, doc->body));
        /* The next write takes a version no acked write had. */
        assert_int_equal(syncd_store_put(f->store, &c, "gc", id, body,
                                         SYNCD_ANY_VERSION, NULL),
                         0);
        assert_int_equal(c->doc->version, doc->version + 1);
        snprintf(key, sizeof(key), "%lld", (long long)c->doc->version);
        assert_null(json_object_get(seen.bodies[d], key));
        syncd_change_free(c);
        syncd_doc_free(doc);
        json_decref(body);
        json_decref(seen.bodies[d]);
    }
}

/* Shared by the writers of a store whose files cannot grow past a limit. */
typedef struct full_disk {
    syncd_store_t *store;
    pthread_mutex_t lock;
    int64_t acked;  /* the highest version acknowledged */
    int failures;   /* failed writes, all SYNCD_EBACKEND */
    int wrong_code; /* failed writes with another code */
} full_disk_t;

/* Blind-puts 64 KiB bodies to full/d until a put fails. */
static void *full_disk_writer(void *arg)
{
    full_disk_t *fd = arg;
    char *pad = malloc(65536);

    if (pad == NULL)
        _exit(5);
    memset(pad, 'x', 65535);
    pad[65535] = '\0';
    for (int i = 0; i < 4000; i++) {
        json_t *body = json_pack("{s:s, s:i}", "pad", pad, "i", i);
        syncd_change_t *c = NULL;
        int rc = syncd_store_put(fd->store, &c, "full", "d", body,
                                 SYNCD_ANY_VERSION, NULL);

        json_decref(body);
        pthread_mutex_lock(&fd->lock);
        if (rc == 0 && c->doc->version > fd->acked)
            fd->acked = c->doc->version;
        if (rc == SYNCD_EBACKEND)
            fd->failures++;
        else if (rc != 0)
            fd->wrong_code++;
        pthread_mutex_unlock(&fd->lock);
        syncd_change_free(c);
        if (rc != 0)
            break;
    }
    free(pad);
    return NULL;
}

/* The child (this binary run with --full-disk-child DIR FD,
 * spawn_child()): writers on the store in dir, whose files may not grow past
 * half a memtable (so the WAL is what fills, before any flush), until their
 * writes fail; then checks the store and reports the
 * highest acknowledged version on fd. Exits 0 when all held. */
static void full_disk_child(const char *dir, int out)
{
    struct rlimit limit = {SYNCD_ROCKS_WRITE_BUFFER / 2,
                           SYNCD_ROCKS_WRITE_BUFFER / 2};
    full_disk_t fd = {NULL, PTHREAD_MUTEX_INITIALIZER, 0, 0, 0};
    pthread_t threads[4];
    syncd_store_options_t opts;
    syncd_change_t *c = NULL;
    syncd_doc_t *doc = NULL;
    json_t *body;

    syncd_store_options_init(&opts);
    opts.data_dir = dir;
    signal(SIGXFSZ, SIG_IGN);
    if (syncd_store_open(&fd.store, &opts, NULL) != 0 ||
        setrlimit(RLIMIT_FSIZE, &limit) != 0)
        _exit(2);
    for (int i = 0; i < 4; i++)
        if (pthread_create(&threads[i], NULL, full_disk_writer, &fd) != 0)
            _exit(3);
    for (int i = 0; i < 4; i++)
        pthread_join(threads[i], NULL);
    if (write(out, &fd.acked, sizeof(fd.acked)) != sizeof(fd.acked))
        _exit(4);
    /* Every writer failed, with SYNCD_EBACKEND. */
    if (fd.failures != 4 || fd.wrong_code != 0)
        _exit(10);
    /* Readers see the last acknowledged version, none of the failed. */
    if (syncd_store_get(fd.store, &doc, "full", "d", NULL) != 0 ||
        doc->version != fd.acked)
        _exit(11);
    syncd_doc_free(doc);
    /* The store takes no write after a failed sync. */
    body = json_pack("{s:i}", "small", 1);
    if (syncd_store_put(fd.store, &c, "full", "d2", body, SYNCD_ANY_VERSION,
                        NULL) != SYNCD_EBACKEND)
        _exit(12);
    json_decref(body);
    syncd_store_close(fd.store);
    _exit(0);
}

static void
test_store_rocks__a_failed_sync_fails_its_writers_and_shows_no_version_of_theirs(
    void **state)
{
    fixture_t *f = *state;
    int fds[2], status;
    int64_t acked = -1;
    pid_t pid;

    syncd_store_close(f->store);
    f->store = NULL;
    assert_int_equal(pipe(fds), 0);
    pid = spawn_child("--full-disk-child", f->dir, fds);
    assert_int_equal(read(fds[0], &acked, sizeof(acked)), sizeof(acked));
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(acked > 0);

    /* Reopened, the store has every acknowledged write. */
    open_store(f);
    assert_true(live_version(f, "full", "d") >= acked);
}

/* ---- The node cache on its own ------------------------------------------ */

typedef struct cache_fixture {
    char dir[256];
    fake_t fake;
    syncd_store_hooks_t hooks;
    syncd_cache_t *cache;
} cache_fixture_t;

static int setup_cache(void **state)
{
    cache_fixture_t *cf = calloc(1, sizeof(*cf));

    if (cf == NULL || syncd_test_tmpdir(cf->dir, sizeof(cf->dir), "cache"))
        return -1;
    cf->hooks.now_ms = fake_now;
    cf->hooks.data = &cf->fake;
    cf->fake.now = 100000;
    *state = cf;
    return syncd_cache_open(&cf->cache, cf->dir, 1000, 100000,
                            SYNCD_BLOCK_CACHE_BYTES, 0, &cf->hooks, NULL);
}

static int teardown_cache(void **state)
{
    cache_fixture_t *cf = *state;

    syncd_cache_close(cf->cache);
    syncd_test_rmtree(cf->dir);
    free(cf);
    return 0;
}

/* Puts coll/id at version with a body padded to about pad bytes; returns
 * what syncd_cache_put() returned. */
static int cache_put(cache_fixture_t *cf, const char *id, int64_t version,
                     size_t pad)
{
    char *fill = malloc(pad + 1);
    syncd_doc_t doc = {"cc", (char *)id, version, NULL, "", 0, "", 0};
    int rc;

    memset(fill, 'x', pad);
    fill[pad] = '\0';
    doc.body = json_pack("{s:I, s:s}", "v", (json_int_t)version, "fill", fill);
    assert_int_equal(syncd_json_hash(doc.hash, doc.body, NULL), 0);
    rc = syncd_cache_put(cf->cache, &doc, NULL, 0, NULL);
    json_decref(doc.body);
    free(fill);
    return rc;
}

static int64_t cached_version(cache_fixture_t *cf, const char *id)
{
    syncd_doc_t *doc = NULL;
    int64_t v;

    if (syncd_cache_get(cf->cache, &doc, "cc", id, NULL) != 0)
        return -1;
    v = doc->version;
    assert_int_equal(json_integer_value(json_object_get(doc->body, "v")), v);
    syncd_doc_free(doc);
    return v;
}

static void test_cache__expired_entries_are_never_served(void **state)
{
    cache_fixture_t *cf = *state;
    json_t *list = NULL;

    assert_int_equal(cache_put(cf, "a", 1, 10), 1);
    cf->fake.now += 999;
    assert_int_equal(cached_version(cf, "a"), 1);
    assert_int_equal(syncd_cache_list(cf->cache, &list, "cc", NULL), 0);
    assert_ids(list, "a");
    json_decref(list);

    cf->fake.now += 1;
    assert_int_equal(cached_version(cf, "a"), -1);
    assert_int_equal(syncd_cache_list(cf->cache, &list, "cc", NULL), 0);
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);

    /* A new put after expiry is served again for a full TTL. */
    assert_int_equal(cache_put(cf, "a", 1, 10), 1);
    assert_int_equal(cached_version(cf, "a"), 1);
}

static void test_cache__put_if_newer_never_goes_backwards(void **state)
{
    cache_fixture_t *cf = *state;

    assert_int_equal(cache_put(cf, "a", 3, 10), 1);
    assert_int_equal(cache_put(cf, "a", 2, 10), 0);
    assert_int_equal(cache_put(cf, "a", 3, 10), 0);
    assert_int_equal(cached_version(cf, "a"), 3);
    assert_int_equal(cache_put(cf, "a", 4, 10), 1);
    assert_int_equal(cached_version(cf, "a"), 4);
}

static void
test_cache__stays_within_max_bytes_evicting_least_recent(void **state)
{
    cache_fixture_t *cf = *state;
    syncd_store_stats_t stats;
    char id[32];

    for (int i = 0; i < 300; i++) {
        snprintf(id, sizeof(id), "doc-%03d", i);
        assert_int_equal(cache_put(cf, id, 1, 1000), 1);
        /* doc-000 is read after every put: it stays the most recent. */
        assert_int_equal(cached_version(cf, "doc-000"), 1);
        syncd_cache_stats(cf->cache, &stats);
        assert_true(stats.cache_bytes <= 110000);
    }
    syncd_cache_stats(cf->cache, &stats);
    assert_true(stats.cache_bytes >= 90000);
    assert_true(stats.cache_evictions > 0);
    assert_int_equal(stats.cache_entries + stats.cache_evictions, 300);
    assert_int_equal(cached_version(cf, "doc-001"), -1);
    assert_int_equal(cached_version(cf, "doc-299"), 1);
    assert_int_equal(cached_version(cf, "doc-000"), 1);
}

static void test_cache__invalidate_drops_one_entry_or_a_collection(void **state)
{
    cache_fixture_t *cf = *state;
    syncd_doc_t other = {"zz", "a", 1, NULL, "", 0, "", 1};
    syncd_doc_t *doc = NULL;

    assert_int_equal(cache_put(cf, "a", 1, 10), 1);
    assert_int_equal(cache_put(cf, "b", 1, 10), 1);
    assert_int_equal(syncd_cache_put(cf->cache, &other, NULL, 0, NULL), 1);
    assert_int_equal(syncd_cache_invalidate(cf->cache, "cc", "a", NULL), 0);
    assert_int_equal(cached_version(cf, "a"), -1);
    assert_int_equal(cached_version(cf, "b"), 1);
    assert_int_equal(syncd_cache_invalidate(cf->cache, "cc", NULL, NULL), 0);
    assert_int_equal(cached_version(cf, "b"), -1);
    assert_int_equal(syncd_cache_get(cf->cache, &doc, "zz", "a", NULL), 0);
    assert_true(doc->deleted);
    syncd_doc_free(doc);
}

static void
test_cache__page_lists_fresh_entries_and_tombstones_after_a_key(void **state)
{
    cache_fixture_t *cf = *state;
    syncd_doc_t tomb = {"cc", "t", 2, NULL, "", 0, "", 1};
    syncd_doc_t before = {"c", "x", 1, NULL, "", 0, "", 1};
    syncd_doc_t after = {"ccz", "a", 1, NULL, "", 0, "", 1};
    json_t *page = NULL, *e;

    assert_int_equal(cache_put(cf, "b", 1, 10), 1);
    cf->fake.now += 600;
    assert_int_equal(cache_put(cf, "a", 1, 10), 1);
    assert_int_equal(cache_put(cf, "c", 3, 10), 1);
    assert_int_equal(cache_put(cf, "d", 1, 10), 1);
    assert_int_equal(cache_put(cf, "e", 1, 10), 1);
    assert_int_equal(syncd_cache_put(cf->cache, &tomb, NULL, 0, NULL), 1);
    assert_int_equal(syncd_cache_put(cf->cache, &before, NULL, 0, NULL), 1);
    assert_int_equal(syncd_cache_put(cf->cache, &after, NULL, 0, NULL), 1);
    cf->fake.now += 500; /* b has expired */

    assert_int_equal(syncd_cache_page(cf->cache, &page, "cc", NULL, 2, NULL),
                     0);
    assert_ids(page, "a c");
    e = json_array_get(page, 1);
    assert_int_equal(json_integer_value(json_object_get(e, "v")), 3);
    assert_int_equal(strlen(json_string_value(json_object_get(e, "h"))), 64);
    assert_null(json_object_get(e, "del"));
    json_decref(page);
    assert_int_equal(syncd_cache_page(cf->cache, &page, "cc", "c", 2, NULL), 0);
    assert_ids(page, "d e");
    json_decref(page);
    assert_int_equal(syncd_cache_page(cf->cache, &page, "cc", "e", 2, NULL), 0);
    assert_ids(page, "t");
    e = json_array_get(page, 0);
    assert_true(json_is_true(json_object_get(e, "del")));
    assert_int_equal(json_integer_value(json_object_get(e, "v")), 2);
    assert_string_equal(json_string_value(json_object_get(e, "h")), "");
    json_decref(page);
    /* A key between entries starts the page after it. */
    assert_int_equal(syncd_cache_page(cf->cache, &page, "cc", "bb", 10, NULL),
                     0);
    assert_ids(page, "c d e t");
    json_decref(page);
}

/* Returns a new body {"v": version, "fill": "xx..."} of about pad bytes. */
static json_t *padded(int64_t version, size_t pad)
{
    char *fill = malloc(pad + 1);
    json_t *body;

    memset(fill, 'x', pad);
    fill[pad] = '\0';
    body = json_pack("{s:I, s:s}", "v", (json_int_t)version, "fill", fill);
    free(fill);
    return body;
}

/* Puts coll/id at version with body (borrowed) into the cache. */
static int cache_put_body(cache_fixture_t *cf, const char *id, int64_t version,
                          json_t *body)
{
    syncd_doc_t doc = {"cc", (char *)id, version, body, "", 0, "", 0};

    assert_int_equal(syncd_json_hash(doc.hash, doc.body, NULL), 0);
    return syncd_cache_put(cf->cache, &doc, NULL, 0, NULL);
}

/* Returns the body of a cached get of id (a borrowed pointer, only good
 * for comparing identity and, while body_keep holds it, content). */
static json_t *cached_body(cache_fixture_t *cf, const char *id,
                           json_t **body_keep)
{
    syncd_doc_t *doc = NULL;

    assert_int_equal(syncd_cache_get(cf->cache, &doc, "cc", id, NULL), 0);
    *body_keep = json_incref(doc->body);
    syncd_doc_free(doc);
    return *body_keep;
}

static void
test_cache__hits_share_the_decoded_body_without_copying(void **state)
{
    cache_fixture_t *cf = *state;
    json_t *body = padded(1, 100);
    json_t *first = NULL, *second = NULL;

    assert_int_equal(cache_put_body(cf, "a", 1, body), 1);
    assert_ptr_equal(cached_body(cf, "a", &first), body);
    assert_ptr_equal(cached_body(cf, "a", &second), body);
    json_decref(first);
    json_decref(second);
    json_decref(body);
}

static void
test_cache__entries_out_of_the_tier_are_read_back_from_rocksdb(void **state)
{
    cache_fixture_t *cf = *state;
    json_t *bodies[60];
    json_t *first = NULL, *second = NULL;
    syncd_store_stats_t stats;
    char id[32];

    /* 60 entries of about 1 KB fit the 100 KB bound, but the tier holds
     * only a quarter of it: the oldest are left in RocksDB alone. */
    for (int i = 0; i < 60; i++) {
        snprintf(id, sizeof(id), "doc-%03d", i);
        bodies[i] = padded(1, 1000);
        assert_int_equal(cache_put_body(cf, id, 1, bodies[i]), 1);
    }
    syncd_cache_stats(cf->cache, &stats);
    assert_int_equal(stats.cache_entries, 60);
    assert_int_equal(stats.cache_evictions, 0);
    assert_true(stats.cache_bytes <= 100000);

    /* The newest is served from the tier, the oldest decoded again. */
    assert_ptr_equal(cached_body(cf, "doc-059", &first), bodies[59]);
    json_decref(first);
    first = cached_body(cf, "doc-000", &first);
    assert_ptr_not_equal(first, bodies[0]);
    assert_true(json_equal(first, bodies[0]));
    /* ...and is then in the tier itself, still within the bound. */
    assert_ptr_equal(cached_body(cf, "doc-000", &second), first);
    syncd_cache_stats(cf->cache, &stats);
    assert_true(stats.cache_bytes <= 100000);
    assert_int_equal(stats.cache_entries, 60);
    json_decref(first);
    json_decref(second);
    for (int i = 0; i < 60; i++)
        json_decref(bodies[i]);
}

static void
test_cache__expired_tier_entries_are_never_served_and_free_their_bytes(
    void **state)
{
    cache_fixture_t *cf = *state;
    syncd_store_stats_t stats;
    json_t *body = padded(1, 100);
    json_t *got = NULL;
    syncd_doc_t *doc = NULL;

    assert_int_equal(cache_put_body(cf, "a", 1, body), 1);
    assert_ptr_equal(cached_body(cf, "a", &got), body);
    json_decref(got);
    cf->fake.now += 1000;
    assert_int_equal(syncd_cache_get(cf->cache, &doc, "cc", "a", NULL),
                     SYNCD_ENOTFOUND);
    assert_null(doc);
    syncd_cache_stats(cf->cache, &stats);
    assert_int_equal(stats.cache_entries, 0);
    assert_int_equal(stats.cache_bytes, 0);
    /* An expired entry does not hold back a lower version either. */
    assert_int_equal(cache_put(cf, "a", 0, 10), 1);
    assert_int_equal(cached_version(cf, "a"), 0);
    json_decref(body);
}

/* More hot keys than the tier holds: readers keep decoding some. */
#define RACE_KEYS 200

typedef struct cache_race {
    syncd_cache_t *cache;
    int stop;
    int backwards;  /* a reader saw a lower version after a higher one */
    int mismatched; /* a body that is not its version's */
} cache_race_t;

static void *race_reader(void *arg)
{
    cache_race_t *r = arg;
    int64_t seen[RACE_KEYS] = {0};
    char id[32];

    for (unsigned i = 0; !__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE); i++) {
        syncd_doc_t *doc = NULL;
        int k = (int)(i % RACE_KEYS);

        snprintf(id, sizeof(id), "hot-%d", k);
        if (syncd_cache_get(r->cache, &doc, "cc", id, NULL) != 0)
            continue;
        if (doc->version < seen[k])
            __atomic_store_n(&r->backwards, 1, __ATOMIC_RELAXED);
        if (json_integer_value(json_object_get(doc->body, "v")) != doc->version)
            __atomic_store_n(&r->mismatched, 1, __ATOMIC_RELAXED);
        seen[k] = doc->version;
        syncd_doc_free(doc);
    }
    return NULL;
}

static void
test_cache__concurrent_readers_never_see_a_version_go_backwards(void **state)
{
    cache_fixture_t *cf = *state;
    cache_race_t race = {.cache = cf->cache};
    pthread_t readers[3];
    char id[32];

    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&readers[i], NULL, race_reader, &race),
                         0);
    /* New versions race with readers decoding the same keys back from
     * RocksDB: 200 entries of ~250 bytes outgrow the tier's 25 KB. */
    for (int v = 1; v <= 30; v++) {
        for (int k = 0; k < RACE_KEYS; k++) {
            snprintf(id, sizeof(id), "hot-%d", k);
            assert_int_equal(cache_put(cf, id, v, 200), 1);
            assert_int_equal(cache_put(cf, id, v - 1, 200), 0);
        }
    }
    __atomic_store_n(&race.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 3; i++)
        pthread_join(readers[i], NULL);
    assert_false(race.backwards);
    assert_false(race.mismatched);
    assert_int_equal(cached_version(cf, "hot-0"), 30);
}

/* ---- Patching cached bodies in place ------------------------------------ */

#define PATCH_VOLS 300

/* Reopens cf's cache empty with a bound of max_bytes, kept across a clean
 * close when keep is set. */
static void reopen_cache(cache_fixture_t *cf, uint64_t max_bytes, int keep)
{
    syncd_cache_close(cf->cache);
    assert_int_equal(syncd_cache_open(&cf->cache, cf->dir, 1000, max_bytes,
                                      SYNCD_BLOCK_CACHE_BYTES, keep, &cf->hooks,
                                      NULL),
                     0);
}

/* A body of about 20 KB (over the size that gets a hash tree) whose "a" and
 * "b" are both n, with big_body(PATCH_VOLS) in "vols". */
static json_t *vols_body(int n)
{
    return json_pack("{s:i, s:i, s:o}", "a", n, "b", n, "vols",
                     big_body(PATCH_VOLS));
}

/* The patch from version n's body to version n + 1's: "a" first, one
 * member of "vols" (changed, added or removed as i says) and "b" last, so
 * that a body half-applied has a != b. */
static json_t *vols_patch(int n, int i)
{
    char path[32];

    snprintf(path, sizeof(path), "/vols/m%03d", i % PATCH_VOLS);
    if (i % 7 == 3)
        return json_pack("[{s:s,s:s,s:i},{s:s,s:s},{s:s,s:s,s:i}]", "op",
                         "replace", "path", "/a", "value", n + 1, "op",
                         "remove", "path", path, "op", "replace", "path", "/b",
                         "value", n + 1);
    if (i % 7 == 5)
        return json_pack("[{s:s,s:s,s:i},{s:s,s:s,s:{s:i}},{s:s,s:s,s:i}]",
                         "op", "replace", "path", "/a", "value", n + 1, "op",
                         "add", "path", path, "value", "n", n, "op", "replace",
                         "path", "/b", "value", n + 1);
    return json_pack("[{s:s,s:s,s:i},{s:s,s:s,s:i},{s:s,s:s,s:i}]", "op",
                     "replace", "path", "/a", "value", n + 1, "op", "add",
                     "path", "/vols/zz", "value", n, "op", "replace", "path",
                     "/b", "value", n + 1);
}

/* The patch of a small body from version n's to version n + 1's. */
static json_t *ab_patch(int n)
{
    return json_pack("[{s:s,s:s,s:i},{s:s,s:s,s:i}]", "op", "replace", "path",
                     "/a", "value", n + 1, "op", "replace", "path", "/b",
                     "value", n + 1);
}

/* Puts a copy of body (borrowed) as cc/id at version: the cache holds its
 * body alone, as a node's cache does once it has applied an event. */
static void put_body(cache_fixture_t *cf, const char *id, int64_t version,
                     json_t *body)
{
    syncd_doc_t doc = {"cc", (char *)id, version, json_deep_copy(body),
                       "",   0,          "",      0};

    assert_int_equal(syncd_json_hash(doc.hash, body, NULL), 0);
    assert_int_equal(syncd_cache_put(cf->cache, &doc, NULL, 0, NULL), 1);
    json_decref(doc.body);
}

/* Patches cc/id from version base with patch in the cache, the model
 * (what the body must become) patched alongside; returns what
 * syncd_cache_patch() returned. */
static int patch_body(cache_fixture_t *cf, const char *id, int64_t base,
                      json_t *patch, json_t **model, int nonblocking)
{
    syncd_doc_t meta = {"cc", (char *)id, base + 1, NULL, "", 7, "n1", 0};
    int64_t cached;

    assert_int_equal(syncd_patch_apply_in_place(model, patch, NULL, NULL), 0);
    assert_int_equal(syncd_json_hash(meta.hash, *model, NULL), 0);
    return syncd_cache_patch(cf->cache, &meta, base, patch, (size_t)8 << 20,
                             nonblocking, &cached, NULL);
}

typedef struct half_race {
    syncd_cache_t *cache;
    int stop;
    int torn;       /* a body with a != b, or not its version's */
    uint64_t reads; /* bodies and texts checked */
} half_race_t;

/* Whether body is whole and of version: "a" and "b" both version - 1. */
static int whole(const json_t *body, int64_t version)
{
    return json_integer_value(json_object_get(body, "a")) == version - 1 &&
           json_integer_value(json_object_get(body, "b")) == version - 1;
}

/* Reads cc/doc over and over, decoded and as text (serializing the body
 * for the tier when it has no text, as GET does), until told to stop. */
static void *half_reader(void *arg)
{
    half_race_t *race = arg;
    syncd_tier_t *tier = syncd_cache_tier(race->cache);
    syncd_reckey_t k;
    uint64_t n = 0;

    assert_int_equal(syncd_reckey_make(&k, "cc", "doc", NULL), 0);
    while (!__atomic_load_n(&race->stop, __ATOMIC_ACQUIRE)) {
        syncd_doc_t *doc = NULL;
        json_t *body = NULL, *parsed;
        char *text = NULL;
        int64_t version = 0;
        size_t len = 0;
        int torn = 0;

        if (n++ % 2 == 0) {
            if (syncd_cache_get(race->cache, &doc, "cc", "doc", NULL) == 0)
                torn = !whole(doc->body, doc->version);
            syncd_doc_free(doc);
        } else if (syncd_tier_text(tier, &k, &text, &len, &version, &body) ==
                   0) {
            parsed = json_loadb(text, len, 0, NULL);
            torn = parsed == NULL || !whole(parsed, version);
            json_decref(parsed);
        } else if (body != NULL) {
            torn = !whole(body, version);
            text = json_dumps(body, JSON_COMPACT);
            syncd_tier_set_text(tier, &k, body, text, strlen(text));
            text = NULL;
            json_decref(body);
        }
        free(text);
        if (torn)
            __atomic_store_n(&race->torn, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&race->reads, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void
test_cache_patch__concurrent_readers_never_see_a_half_applied_body(void **state)
{
    cache_fixture_t *cf = *state;
    half_race_t race = {0};
    json_t *model = vols_body(0);
    syncd_doc_t *doc = NULL;
    char hash[SYNCD_HASH_HEX_LEN + 1];
    pthread_t readers[3];
    int in_place = 0, copied = 0;

    reopen_cache(cf, (uint64_t)64 << 20, 0);
    race.cache = cf->cache;
    put_body(cf, "doc", 1, model);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&readers[i], NULL, half_reader, &race),
                         0);
    for (int n = 1; n <= 1000; n++) {
        json_t *patch = vols_patch(n - 1, n);
        int rc = patch_body(cf, "doc", n, patch, &model, 0);

        /* A body a reader holds is not taken: the node puts a patched
         * copy instead. */
        if (rc == 0) {
            put_body(cf, "doc", n + 1, model);
            copied++;
        } else {
            assert_int_equal(rc, 1);
            in_place++;
        }
        json_decref(patch);
    }
    __atomic_store_n(&race.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 3; i++)
        pthread_join(readers[i], NULL);
    assert_false(race.torn);
    assert_true(race.reads > 0);
    assert_true(in_place > 0);
    assert_int_equal(in_place + copied, 1000);
    assert_int_equal(syncd_cache_get(cf->cache, &doc, "cc", "doc", NULL), 0);
    assert_int_equal(doc->version, 1001);
    assert_true(json_equal(doc->body, model));
    assert_int_equal(syncd_json_hash(hash, doc->body, NULL), 0);
    assert_string_equal(doc->hash, hash);
    syncd_doc_free(doc);
    json_decref(model);
}

static void
test_cache_patch__the_tree_checked_hash_is_the_fresh_hash_after_each_patch(
    void **state)
{
    cache_fixture_t *cf = *state;
    json_t *model = vols_body(0),
           *small = json_pack("{s:i, s:i}", "a", 0, "b", 0);
    syncd_store_stats_t before, after;
    char hash[SYNCD_HASH_HEX_LEN + 1];
    syncd_doc_t *doc = NULL;
    int64_t cached;

    reopen_cache(cf, (uint64_t)64 << 20, 0);
    put_body(cf, "doc", 1, model);
    put_body(cf, "small", 1, small);
    syncd_cache_stats(cf->cache, &before);
    /* Without blocking, a large body gets no tree built: left to a
     * blocking call, which builds it. */
    {
        json_t *patch = vols_patch(0, 0);
        syncd_doc_t meta = {"cc", "doc", 2, NULL, "", 7, "n1", 0};

        assert_int_equal(syncd_cache_patch(cf->cache, &meta, 1, patch,
                                           (size_t)8 << 20, 1, &cached, NULL),
                         0);
        assert_int_equal(cached, 1);
        json_decref(patch);
    }
    for (int n = 1; n <= 300; n++) {
        json_t *patch = vols_patch(n - 1, n * 13), *ab = ab_patch(n - 1);

        assert_int_equal(patch_body(cf, "doc", n, patch, &model, n > 1), 1);
        assert_int_equal(patch_body(cf, "small", n, ab, &small, 1), 1);
        json_decref(patch);
        json_decref(ab);
        assert_int_equal(syncd_cache_get(cf->cache, &doc, "cc", "doc", NULL),
                         0);
        assert_int_equal(doc->version, n + 1);
        assert_true(json_equal(doc->body, model));
        assert_int_equal(syncd_json_hash(hash, doc->body, NULL), 0);
        assert_string_equal(doc->hash, hash);
        syncd_doc_free(doc);
    }
    /* The tree counts against the bound, and goes with its entry. */
    syncd_cache_stats(cf->cache, &after);
    assert_true(after.cache_bytes > before.cache_bytes + 20000);
    assert_int_equal(syncd_cache_invalidate(cf->cache, "cc", NULL, NULL), 0);
    syncd_cache_stats(cf->cache, &after);
    assert_int_equal(after.cache_bytes, 0);
    json_decref(model);
    json_decref(small);
}

static void
test_cache_patch__a_patch_whose_hash_is_not_the_events_drops_the_entry(
    void **state)
{
    cache_fixture_t *cf = *state;
    const char *ids[] = {"doc", "small"};
    syncd_doc_t *doc = NULL;
    int64_t cached;

    reopen_cache(cf, (uint64_t)64 << 20, 0);
    for (int i = 0; i < 2; i++) {
        json_t *body =
            i == 0 ? vols_body(0) : json_pack("{s:i, s:i}", "a", 0, "b", 0);
        json_t *patch = i == 0 ? vols_patch(0, 1) : ab_patch(0);
        syncd_doc_t meta = {"cc", (char *)ids[i], 2, NULL, "", 7, "n1", 0};

        put_body(cf, ids[i], 1, body);
        memset(meta.hash, 'a', SYNCD_HASH_HEX_LEN);
        assert_int_equal(syncd_cache_patch(cf->cache, &meta, 1, patch,
                                           (size_t)8 << 20, 0, &cached, NULL),
                         SYNCD_ECONFLICT);
        assert_int_equal(syncd_cache_get(cf->cache, &doc, "cc", ids[i], NULL),
                         SYNCD_ENOTFOUND);
        json_decref(patch);
        json_decref(body);
    }
}

static void
test_cache_patch__a_clean_close_writes_the_patched_records(void **state)
{
    cache_fixture_t *cf = *state;
    json_t *model = vols_body(0);
    char hash[SYNCD_HASH_HEX_LEN + 1];
    syncd_doc_t *doc = NULL;

    reopen_cache(cf, (uint64_t)64 << 20, 1);
    put_body(cf, "doc", 1, model);
    for (int n = 1; n <= 5; n++) {
        json_t *patch = vols_patch(n - 1, n);

        assert_int_equal(patch_body(cf, "doc", n, patch, &model, 0), 1);
        json_decref(patch);
    }
    reopen_cache(cf, (uint64_t)64 << 20, 1);
    assert_true(syncd_cache_kept(cf->cache));
    assert_int_equal(syncd_cache_get(cf->cache, &doc, "cc", "doc", NULL), 0);
    assert_int_equal(doc->version, 6);
    assert_true(json_equal(doc->body, model));
    assert_int_equal(syncd_json_hash(hash, doc->body, NULL), 0);
    assert_string_equal(doc->hash, hash);
    syncd_doc_free(doc);
    json_decref(model);
}

/* ---- The digest construction -------------------------------------------- */

static void leaf(unsigned char out[32], const char *id, const char *v,
                 const char *h)
{
    char buf[256];
    size_t n = 0;

    n += (size_t)sprintf(buf + n, "%s", id) + 1;
    n += (size_t)sprintf(buf + n, "%s", v) + 1;
    n += (size_t)sprintf(buf + n, "%s", h);
    syncd_sha256(out, buf, n);
}

static void test_digest__is_the_documented_merkle_root(void **state)
{
    const char *h1 =
        "1111111111111111111111111111111111111111111111111111111111111111";
    const char *h2 =
        "2222222222222222222222222222222222222222222222222222222222222222";
    unsigned char la[32], lb[32], lc[32], pair[64], ab[32];
    char want[SYNCD_HASH_HEX_LEN + 1];
    syncd_digest_t d;
    json_t *entries;

    (void)state;
    entries = json_array();
    assert_int_equal(syncd_digest_entries(&d, entries, NULL), 0);
    assert_int_equal(d.count, 0);
    assert_string_equal(
        d.hex,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    json_decref(entries);

    leaf(la, "a", "1", h1);
    leaf(lb, "b", "12", h2);
    leaf(lc, "c", "3", h1);
    entries = json_pack("[{s:s,s:i,s:s},{s:s,s:i,s:s}]", "id", "b", "v", 12,
                        "h", h2, "id", "a", "v", 1, "h", h1);
    assert_int_equal(syncd_digest_entries(&d, entries, NULL), 0);
    memcpy(pair, la, 32);
    memcpy(pair + 32, lb, 32);
    syncd_sha256_hex(want, pair, 64);
    assert_int_equal(d.count, 2);
    assert_string_equal(d.hex, want);

    json_array_append_new(
        entries, json_pack("{s:s,s:i,s:s}", "id", "c", "v", 3, "h", h1));
    assert_int_equal(syncd_digest_entries(&d, entries, NULL), 0);
    syncd_sha256(ab, pair, 64);
    memcpy(pair, ab, 32);
    memcpy(pair + 32, lc, 32);
    syncd_sha256_hex(want, pair, 64);
    assert_string_equal(d.hex, want);
    json_decref(entries);

    entries = json_pack("[{s:s}]", "id", "a");
    assert_int_equal(syncd_digest_entries(&d, entries, NULL), SYNCD_EINVAL);
    json_decref(entries);
}

static void test_digest__streaming_root_equals_the_documented_one(void **state)
{
    const char *h =
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    json_t *entries = json_array();
    syncd_digest_t want, got;
    syncd_merkle_t m;
    char id[16];

    (void)state;
    for (int n = 0; n <= 70; n++) {
        syncd_merkle_init(&m);
        for (int i = 0; i < n; i++) {
            snprintf(id, sizeof(id), "id%03d", i);
            assert_int_equal(syncd_merkle_add(&m, id, i + 1, h), 0);
        }
        syncd_merkle_final(&m, &got);
        assert_int_equal(syncd_digest_entries(&want, entries, NULL), 0);
        assert_int_equal(got.count, (uint64_t)n);
        assert_string_equal(got.hex, want.hex);
        snprintf(id, sizeof(id), "id%03d", n);
        json_array_append_new(entries, json_pack("{s:s, s:i, s:s}", "id", id,
                                                 "v", n + 1, "h", h));
    }
    json_decref(entries);
}

/* ---- Write-behind ---------------------------------------------------------
 */

static uint64_t cache_writes(cache_fixture_t *cf)
{
    syncd_store_stats_t stats = {0};

    syncd_cache_stats(cf->cache, &stats);
    return stats.cache_writes;
}

/* A document updated 100 times within one interval is written to RocksDB
 * once, when the interval is over; the node serves every version at once
 * from memory, and a page (which walks RocksDB) sees the newest. */
static void
test_cache__many_updates_within_an_interval_write_the_record_once(void **state)
{
    cache_fixture_t *cf = *state;
    json_t *page = NULL;

    for (int v = 1; v <= 100; v++) {
        assert_int_equal(cache_put(cf, "w", v, 100), 1);
        assert_int_equal(cached_version(cf, "w"), v);
    }
    assert_int_equal(cache_writes(cf), 0);
    cf->fake.now += SYNCD_CACHE_FLUSH_MS;
    for (int v = 101; v <= 200; v++)
        assert_int_equal(cache_put(cf, "w", v, 100), 1);
    assert_int_equal(cache_writes(cf), 1);
    assert_int_equal(cached_version(cf, "w"), 200);
    assert_int_equal(syncd_cache_page(cf->cache, &page, "cc", NULL, 10, NULL),
                     0);
    assert_int_equal(json_array_size(page), 1);
    assert_int_equal(
        json_integer_value(json_object_get(json_array_get(page, 0), "v")), 200);
    assert_int_equal(cache_writes(cf), 2);
    json_decref(page);
}

/* An event's patch never writes records, whatever the time, blocking or
 * not: the records patched over two intervals are written by
 * syncd_cache_flush_due() once the interval is over, once, and a page
 * (which walks RocksDB) sees the newest version. */
static void
test_cache__patches_leave_the_record_writes_to_flush_due(void **state)
{
    cache_fixture_t *cf = *state;
    json_t *body = json_pack("{s:i}", "v", 1), *patch, *page = NULL;

    put_body(cf, "p", 1, body);
    syncd_cache_flush_due(cf->cache);
    assert_int_equal(cache_writes(cf), 0);
    for (int v = 1; v <= 40; v++) {
        patch = json_pack("[{s:s,s:s,s:i}]", "op", "replace", "path", "/v",
                          "value", v + 1);
        assert_int_equal(patch_body(cf, "p", v, patch, &body, v % 2), 1);
        json_decref(patch);
        /* Half an interval at a time: the entry's TTL is an interval. */
        if (v % 20 == 10)
            cf->fake.now += SYNCD_CACHE_FLUSH_MS / 2;
    }
    assert_int_equal(cache_writes(cf), 0);
    assert_int_equal(cached_version(cf, "p"), 41);
    syncd_cache_flush_due(cf->cache);
    assert_int_equal(cache_writes(cf), 1);
    syncd_cache_flush_due(cf->cache);
    assert_int_equal(cache_writes(cf), 1);
    assert_int_equal(syncd_cache_page(cf->cache, &page, "cc", NULL, 10, NULL),
                     0);
    assert_int_equal(
        json_integer_value(json_object_get(json_array_get(page, 0), "v")), 41);
    assert_int_equal(cache_writes(cf), 1);
    json_decref(page);
    json_decref(body);
}

/* Entries out of the tier that were never written are read back from
 * their records in memory. */
static void
test_cache__unwritten_entries_out_of_the_tier_are_served(void **state)
{
    cache_fixture_t *cf = *state;
    char id[32];

    for (int i = 0; i < 60; i++) {
        snprintf(id, sizeof(id), "doc-%03d", i);
        assert_int_equal(cache_put(cf, id, i + 1, 1000), 1);
    }
    assert_int_equal(cache_writes(cf), 0);
    for (int i = 0; i < 60; i++) {
        snprintf(id, sizeof(id), "doc-%03d", i);
        assert_int_equal(cached_version(cf, id), i + 1);
    }
}

/* A clean close writes what is dirty: a keeping cache reopened after
 * updates that were never written on their own serves the newest. */
static void test_cache__a_clean_close_writes_every_dirty_record(void **state)
{
    cache_fixture_t *cf = *state;

    syncd_cache_close(cf->cache);
    assert_int_equal(syncd_cache_open(&cf->cache, cf->dir, 1000, 100000,
                                      SYNCD_BLOCK_CACHE_BYTES, 1, &cf->hooks,
                                      NULL),
                     0);
    for (int v = 1; v <= 50; v++) {
        assert_int_equal(cache_put(cf, "a", v, 10), 1);
        assert_int_equal(cache_put(cf, "b", v * 2, 10), 1);
    }
    assert_int_equal(cache_writes(cf), 0);
    syncd_cache_close(cf->cache);
    assert_int_equal(syncd_cache_open(&cf->cache, cf->dir, 1000, 100000,
                                      SYNCD_BLOCK_CACHE_BYTES, 1, &cf->hooks,
                                      NULL),
                     0);
    assert_true(syncd_cache_kept(cf->cache));
    assert_int_equal(cached_version(cf, "a"), 50);
    assert_int_equal(cached_version(cf, "b"), 100);
}

/* Child of the cache kill test (this binary run with --cache-kill-child
 * DIR FD, spawn_child()): opens the node cache in DIR on the fixture's
 * clock, writes a record, leaves a newer version dirty and kills itself. */
static void cache_kill_child(const char *dir, int fd)
{
    cache_fixture_t cf = {{0}};

    close(fd);
    snprintf(cf.dir, sizeof(cf.dir), "%s", dir);
    cf.hooks.now_ms = fake_now;
    cf.hooks.data = &cf.fake;
    cf.fake.now = 100000;
    if (syncd_cache_open(&cf.cache, cf.dir, 1000, 100000,
                         SYNCD_BLOCK_CACHE_BYTES, 1, &cf.hooks, NULL) != 0)
        _exit(2);
    cache_put(&cf, "a", 1, 10);
    cf.fake.now += SYNCD_CACHE_FLUSH_MS;
    cache_put(&cf, "a", 2, 10); /* written */
    cache_put(&cf, "a", 3, 10); /* dirty */
    raise(SIGKILL);
    _exit(3);
}

/* A process killed with records written and records still dirty leaves a
 * cache the next open discards: nothing it held is served, so the node
 * reads the store again instead of a version that may be stale. */
static void test_cache__a_killed_process_leaves_nothing_served(void **state)
{
    cache_fixture_t *cf = *state;
    syncd_doc_t *doc = NULL;
    int status = 0, fds[2];
    pid_t pid;

    syncd_cache_close(cf->cache);
    cf->cache = NULL;
    assert_int_equal(pipe(fds), 0);
    pid = spawn_child("--cache-kill-child", cf->dir, fds);
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    assert_int_equal(syncd_cache_open(&cf->cache, cf->dir, 1000, 100000,
                                      SYNCD_BLOCK_CACHE_BYTES, 1, &cf->hooks,
                                      NULL),
                     0);
    assert_false(syncd_cache_kept(cf->cache));
    assert_int_equal(syncd_cache_get(cf->cache, &doc, "cc", "a", NULL),
                     SYNCD_ENOTFOUND);
}

/* ---- A cache kept across a restart -------------------------------------- */

static void test_cache__kept_only_across_a_clean_close_when_asked(void **state)
{
    cache_fixture_t *cf = *state;
    syncd_doc_t *doc = NULL;
    char clean[300];

    assert_int_equal(cache_put(cf, "a", 3, 10), 1);
    assert_int_equal(cache_put(cf, "b", 1, 10), 1);
    /* The fixture's cache does not keep: a reopen with keep finds nothing,
     * as no clean close of a keeping cache left its records. */
    syncd_cache_close(cf->cache);
    assert_int_equal(syncd_cache_open(&cf->cache, cf->dir, 1000, 100000,
                                      SYNCD_BLOCK_CACHE_BYTES, 1, &cf->hooks,
                                      NULL),
                     0);
    assert_int_equal(syncd_cache_get(cf->cache, &doc, "cc", "a", NULL),
                     SYNCD_ENOTFOUND);
    assert_int_equal(cache_put(cf, "a", 3, 10), 1);
    assert_int_equal(cache_put(cf, "b", 1, 10), 1);

    /* Closed cleanly, reopened with keep: the entries are back, read from
     * RocksDB, fresh for a whole TTL from the open. */
    syncd_cache_close(cf->cache);
    cf->fake.now += 5000;
    assert_int_equal(syncd_cache_open(&cf->cache, cf->dir, 1000, 100000,
                                      SYNCD_BLOCK_CACHE_BYTES, 1, &cf->hooks,
                                      NULL),
                     0);
    cf->fake.now += 999;
    assert_int_equal(syncd_cache_get(cf->cache, &doc, "cc", "a", NULL), 0);
    assert_int_equal(doc->version, 3);
    assert_int_equal(json_integer_value(json_object_get(doc->body, "v")), 3);
    syncd_doc_free(doc);
    /* put-if-newer holds for kept entries too. */
    assert_int_equal(cache_put(cf, "a", 2, 10), 0);

    /* A close that did not finish (no CLEAN file, as after a crash): the
     * next open discards the records. */
    syncd_cache_close(cf->cache);
    snprintf(clean, sizeof(clean), "%s/CLEAN", cf->dir);
    assert_int_equal(unlink(clean), 0);
    assert_int_equal(syncd_cache_open(&cf->cache, cf->dir, 1000, 100000,
                                      SYNCD_BLOCK_CACHE_BYTES, 1, &cf->hooks,
                                      NULL),
                     0);
    assert_int_equal(syncd_cache_get(cf->cache, &doc, "cc", "b", NULL),
                     SYNCD_ENOTFOUND);
}

/* ---- History and rollback ----------------------------------------------- */

/* One acknowledged write: its version, hash and body (NULL: a deletion). */
typedef struct acked {
    int64_t v;
    char h[SYNCD_HASH_HEX_LEN + 1];
    json_t *body;
} acked_t;

/* Writers of one document: edits and, with rollbacks set, rollbacks to
 * versions they were acknowledged earlier; every acknowledged change is
 * recorded in acked[v]. */
typedef struct hist_writers {
    syncd_store_t *store;
    int per_thread, rollbacks;
    pthread_mutex_t lock;
    acked_t acked[256];
    int failures;
} hist_writers_t;

typedef struct hist_writer {
    hist_writers_t *w;
    int n;
} hist_writer_t;

static void record_ack(hist_writers_t *w, const syncd_change_t *c)
{
    acked_t *a;

    assert_true(c->doc->version > 0 && c->doc->version < 256);
    pthread_mutex_lock(&w->lock);
    a = &w->acked[c->doc->version];
    a->v = c->doc->version;
    snprintf(a->h, sizeof(a->h), "%s", c->doc->hash);
    a->body = json_incref(c->doc->body);
    pthread_mutex_unlock(&w->lock);
}

static void *hist_writer_thread(void *arg)
{
    hist_writer_t *hw = arg;
    hist_writers_t *w = hw->w;
    uint64_t seed = (uint64_t)hw->n * 7919 + 17;

    for (int i = 0; i < w->per_thread; i++) {
        syncd_change_t *c = NULL;
        int rc;

        seed = seed * 6364136223846793005u + 1442695040888963407u;
        if (w->rollbacks && i % 2 == 1) {
            /* Versions 1 and 2 exist once this thread's first edit is in. */
            int64_t to = 1 + (int64_t)((seed >> 33) % 2);

            rc = syncd_store_rollback(w->store, &c, "h", "doc", to, NULL, NULL);
        } else {
            rc = syncd_store_edit(w->store, &c, "h", "doc", inc_counter, NULL,
                                  SYNCD_ANY_VERSION, NULL);
        }
        if (rc != 0)
            __atomic_add_fetch(&w->failures, 1, __ATOMIC_RELAXED);
        else if (c->op != SYNCD_CHANGE_NONE)
            record_ack(w, c);
        syncd_change_free(c);
    }
    return NULL;
}

/* Asserts that coll/id's history is exactly the acknowledged sequence:
 * versions oldest..current with no gap, each one's body and hash (read
 * with syncd_store_get_version(), replayed from the reverse patches) the
 * acknowledged ones, and each forward patch leading to the next body. */
static void assert_history_is(fixture_t *f, const char *coll, const char *id,
                              acked_t *acked, int64_t oldest, int64_t current)
{
    json_t *hist = NULL, *e;
    syncd_error_t err;
    size_t i;

    syncd_error_clear(&err);
    assert_int_equal(syncd_store_history(f->store, &hist, coll, id, &err), 0);
    assert_int_equal(json_integer_value(json_object_get(hist, "v")), current);
    assert_int_equal(json_integer_value(json_object_get(hist, "oldest")),
                     oldest);
    assert_int_equal(json_array_size(json_object_get(hist, "versions")),
                     (size_t)(current - oldest + 1));
    json_array_foreach (json_object_get(hist, "versions"), i, e) {
        int64_t v = current - (int64_t)i;
        syncd_doc_t *doc = NULL;
        json_t *patch = json_object_get(e, "patch"), *next = NULL;

        assert_int_equal(json_integer_value(json_object_get(e, "v")), v);
        assert_string_equal(json_string_value(json_object_get(e, "h")),
                            acked[v].h);
        assert_int_equal(
            syncd_store_get_version(f->store, &doc, coll, id, v, &err), 0);
        assert_int_equal(doc->version, v);
        assert_string_equal(doc->hash, acked[v].h);
        if (acked[v].body == NULL) {
            assert_true(doc->deleted);
        } else {
            assert_true(syncd_json_equal(doc->body, acked[v].body));
        }
        if (v == current) {
            assert_true(json_is_null(patch));
        } else {
            json_t *from =
                acked[v].body ? json_incref(acked[v].body) : json_object();

            assert_int_equal(syncd_patch_apply(&next, from, patch, &err), 0);
            if (acked[v + 1].body != NULL)
                assert_true(syncd_json_equal(next, acked[v + 1].body));
            json_decref(next);
            json_decref(from);
        }
        syncd_doc_free(doc);
    }
    json_decref(hist);
}

static void run_history_writers(fixture_t *f, int threads, int per_thread,
                                int rollbacks)
{
    hist_writers_t *w = calloc(1, sizeof(*w));
    hist_writer_t hw[8];
    pthread_t t[8];
    syncd_change_t *c = NULL;
    json_t *body = parse("{\"n\":0}");
    int64_t current;

    f->opts.history_len = 200;
    f->opts.max_retries = 100000;
    f->opts.retry_delay_ms = 1;
    f->opts.max_retry_delay_ms = 20;
    f->opts.edit_timeout_ms = 600000;
    f->opts.sync_writes = 0;
    reopen(f);
    pthread_mutex_init(&w->lock, NULL);
    w->store = f->store;
    w->per_thread = per_thread;
    w->rollbacks = rollbacks;
    assert_int_equal(syncd_store_create(f->store, &c, "h", "doc", body, NULL),
                     0);
    record_ack(w, c);
    syncd_change_free(c);
    json_decref(body);
    for (int i = 0; i < threads; i++) {
        hw[i].w = w;
        hw[i].n = i;
        assert_int_equal(
            pthread_create(&t[i], NULL, hist_writer_thread, &hw[i]), 0);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(w->failures, 0);
    current = live_version(f, "h", "doc");
    /* Every version up to the current one was acknowledged to a writer. */
    for (int64_t v = 1; v <= current; v++)
        assert_int_equal(w->acked[v].v, v);
    if (!rollbacks)
        assert_int_equal(current, 1 + (int64_t)threads * per_thread);
    assert_history_is(f, "h", "doc", w->acked, 1, current);
    for (int v = 0; v < 256; v++)
        json_decref(w->acked[v].body);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

static void
test_history__after_concurrent_edits_is_exactly_the_committed_sequence(
    void **state)
{
    run_history_writers(*state, 4, 10, 0);
}

static void
test_history__rollbacks_under_contention_lose_no_acknowledged_version(
    void **state)
{
    run_history_writers(*state, 4, 10, 1);
}

/* Whether the store's backend writes from the node cache without a read:
 * MongoDB on mongo-java-server (the single-operation compare-and-swap). */
static int writes_from_cache(const fixture_t *f)
{
    return f->kind->mongo && strcmp(mongo_server.kind, "mongo-java") == 0;
}

/* Writes were committed without a read of the record by f's store. */
static uint64_t cas_fast(fixture_t *f)
{
    syncd_store_stats_t st;

    syncd_store_stats(f->store, &st);
    return st.cas_fast;
}

/* Asserts that version v of coll/id is gone, naming oldest as the oldest
 * kept version. */
static void assert_version_gone(fixture_t *f, const char *id, int64_t v,
                                int64_t oldest)
{
    syncd_doc_t *doc = NULL;
    syncd_error_t err;
    char want[64];

    syncd_error_clear(&err);
    assert_int_equal(syncd_store_get_version(f->store, &doc, "h", id, v, &err),
                     SYNCD_ENOTFOUND);
    assert_null(doc);
    snprintf(want, sizeof(want), "the oldest kept version is %lld",
             (long long)oldest);
    assert_non_null(strstr(err.message, want));
}

/* Puts versions from..to of h/d, {"n": version}, noting each in acked. */
static void put_versions(fixture_t *f, acked_t *acked, int from, int to)
{
    for (int i = from; i <= to; i++) {
        json_t *b = json_pack("{s:i}", "n", i);
        syncd_change_t *c = NULL;

        assert_int_equal(
            syncd_store_put(f->store, &c, "h", "d", b, SYNCD_ANY_VERSION, NULL),
            0);
        assert_int_equal(c->doc->version, i);
        acked[i].v = i;
        snprintf(acked[i].h, sizeof(acked[i].h), "%s", c->doc->hash);
        acked[i].body = b;
        syncd_change_free(c);
    }
}

static void test_history__is_trimmed_oldest_first_by_count(void **state)
{
    fixture_t *f = *state;
    acked_t acked[16] = {{0}};

    f->opts.history_len = 3;
    reopen(f);
    put_versions(f, acked, 1, 8);
    assert_history_is(f, "h", "d", acked, 5, 8);
    assert_version_gone(f, "d", 4, 5);
    for (int i = 1; i <= 8; i++)
        json_decref(acked[i].body);
}

/* Asserts that the closed store at f's data_dir keeps h/d's history
 * entries of versions from..to, each under a key of its own. */
static void assert_history_keys(fixture_t *f, int64_t from, int64_t to)
{
    size_t len = 0, i;
    char *text = raw_versions(f->opts.data_dir, HISTORY, "h", "d", 0, &len);
    json_t *entries = text != NULL ? parse(text) : json_array(), *e;

    assert_int_equal(json_array_size(entries), (size_t)(to - from + 1));
    json_array_foreach (entries, i, e)
        assert_int_equal(json_integer_value(json_object_get(e, "v")),
                         from + (int64_t)i);
    json_decref(entries);
    free(text);
}

/* Asserts that h/d's record, as the closed store holds it, says it has
 * history entries apart and holds none itself. */
static void assert_record_without_history(fixture_t *f)
{
    raw_record_t raw = read_raw(f, "h", "d");

    assert_true(raw.rec[1] & 0x04);
    assert_null(memmem(raw.rec, raw.rlen, "\"hs\"", 4));
    raw_record_free(&raw);
}

/* The embedded store keeps each history entry under a key of its own
 * beside the record, which holds none: a commit puts its entry and
 * deletes the one that falls out of the bounds; the history reads the
 * same from disk after a reopen; an entry that does not decode fails its
 * record's reads. */
static void test_history__entries_live_beside_the_record(void **state)
{
    fixture_t *f = *state;
    acked_t acked[16] = {{0}};
    char key[1 + SYNCD_RECORD_KEY_MAX + 9];
    size_t klen = version_prefix(key, HISTORY, "h", "d");
    syncd_doc_t *doc = NULL;
    syncd_error_t err;

    f->opts.history_len = 3;
    reopen(f);
    put_versions(f, acked, 1, 8);
    assert_record_without_history(f);
    assert_history_is(f, "h", "d", acked, 5, 8);
    put_versions(f, acked, 9, 9);
    syncd_store_close(f->store);
    f->store = NULL;
    assert_history_keys(f, 6, 8);
    memcpy(key + klen, "\0\0\0\0\0\0\0\x07", 8);
    raw_put(f->opts.data_dir, key, klen + 8, "not json", 8);
    open_store(f);
    syncd_error_clear(&err);
    assert_int_equal(syncd_store_get(f->store, &doc, "h", "d", &err),
                     SYNCD_EBACKEND);
    assert_null(doc);
    assert_non_null(strstr(err.message, "history of h/d is corrupt"));
    for (int i = 1; i <= 9; i++)
        json_decref(acked[i].body);
}

/* A store written when each record held its history (the meta's "hs")
 * gets a key per entry at its first open and records without it, and
 * goes on: the history reads the same, and the next commits trim it. */
static void
test_history__a_store_holding_it_in_its_records_moves_it(void **state)
{
    fixture_t *f = *state;
    acked_t acked[16] = {{0}};
    char key[SYNCD_RECORD_KEY_MAX], *text, *rec, *old = NULL;
    size_t klen = syncd_record_key(key, "h", "d"), len, rlen, olen = 0;
    syncd_doc_t *doc = NULL;

    f->opts.history_len = 3;
    reopen(f);
    put_versions(f, acked, 1, 8);
    syncd_store_close(f->store);
    f->store = NULL;
    /* Back to the old layout: the entries into the record, their keys and
     * the key saying the move is done deleted. */
    text = raw_versions(f->opts.data_dir, HISTORY, "h", "d", 1, &len);
    rec = raw_get(f->opts.data_dir, key, klen, &rlen);
    assert_int_equal(syncd_record_decode(&doc, "h", "d", rec, rlen, 1, NULL),
                     0);
    assert_null(doc->hist);
    doc->hist = parse(text);
    assert_int_equal(syncd_record_encode(&old, &olen, doc, 0, NULL, 0, NULL),
                     0);
    assert_non_null(memmem(old, olen, "\"hs\"", 4));
    raw_put(f->opts.data_dir, key, klen, old, olen);
    raw_put(f->opts.data_dir, HISTORY_COMPLETE, sizeof(HISTORY_COMPLETE) - 1,
            NULL, 0);
    assert_history_keys(f, 1, 0);
    open_store(f);
    assert_history_is(f, "h", "d", acked, 5, 8);
    put_versions(f, acked, 9, 10);
    assert_record_without_history(f);
    assert_history_is(f, "h", "d", acked, 7, 10);
    syncd_store_close(f->store);
    f->store = NULL;
    assert_history_keys(f, 7, 9);
    open_store(f);
    syncd_doc_free(doc);
    free(text);
    free(rec);
    free(old);
    for (int i = 1; i <= 10; i++)
        json_decref(acked[i].body);
}

static void test_history__is_trimmed_oldest_first_by_bytes(void **state)
{
    fixture_t *f = *state;
    acked_t acked[16] = {{0}};
    char pad[1001];

    /* Each reverse patch replaces a 1000-byte string: about 1180 bytes
     * charged per entry, so 2500 bytes keep the newest two. */
    f->opts.history_max_bytes = 2500;
    reopen(f);
    for (int i = 1; i <= 6; i++) {
        json_t *b;
        syncd_change_t *c = NULL;

        memset(pad, 'a' + i, 1000);
        pad[1000] = '\0';
        b = json_pack("{s:s}", "pad", pad);
        assert_int_equal(
            syncd_store_put(f->store, &c, "h", "d", b, SYNCD_ANY_VERSION, NULL),
            0);
        acked[i].v = i;
        snprintf(acked[i].h, sizeof(acked[i].h), "%s", c->doc->hash);
        acked[i].body = b;
        syncd_change_free(c);
    }
    assert_int_equal(cas_fast(f), writes_from_cache(f) ? 5 : 0);
    assert_history_is(f, "h", "d", acked, 4, 6);
    assert_version_gone(f, "d", 3, 4);
    /* A history that cannot hold even one entry keeps none. */
    f->opts.history_max_bytes = 100;
    reopen(f);
    assert_int_equal(put_doc(f, "h", "d", "{\"x\":1}", SYNCD_ANY_VERSION, NULL),
                     0);
    assert_version_gone(f, "d", 6, 7);
    for (int i = 1; i <= 6; i++)
        json_decref(acked[i].body);
}

static void
test_history__a_deleted_document_is_restored_from_its_tombstone(void **state)
{
    fixture_t *f = *state;
    syncd_change_t *c = NULL;
    syncd_doc_t *doc = NULL;
    syncd_write_options_t wo;
    syncd_error_t err;

    create_doc(f, "h", "vol", "{\"size\":1}");
    assert_int_equal(
        put_doc(f, "h", "vol", "{\"size\":2}", SYNCD_ANY_VERSION, NULL), 0);
    assert_int_equal(
        syncd_store_delete(f->store, &c, "h", "vol", SYNCD_ANY_VERSION, NULL),
        0);
    syncd_change_free(c);
    /* The tombstone keeps the history; its own version reads as deleted. */
    syncd_error_clear(&err);
    assert_int_equal(
        syncd_store_get_version(f->store, &doc, "h", "vol", 3, &err), 0);
    assert_true(doc->deleted);
    assert_null(doc->body);
    syncd_doc_free(doc);
    /* Rolling back to the deletion has nothing to restore. */
    assert_int_equal(
        syncd_store_rollback(f->store, &c, "h", "vol", 3, NULL, &err),
        SYNCD_ENOTFOUND);
    syncd_write_options_init(&wo);
    wo.idempotency_key = "restore-1";
    assert_int_equal(
        syncd_store_rollback(f->store, &c, "h", "vol", 2, &wo, &err), 0);
    assert_int_equal(c->op, SYNCD_CHANGE_CREATE);
    assert_int_equal(c->doc->version, 4);
    assert_json_text(c->doc->body, "{\"size\":2}");
    syncd_change_free(c);
    /* A retry with the same key writes nothing. */
    assert_int_equal(
        syncd_store_rollback(f->store, &c, "h", "vol", 2, &wo, &err), 0);
    assert_true(c->replayed);
    assert_int_equal(c->replayed_version, 4);
    syncd_change_free(c);
    assert_doc(f, "h", "vol", 4, "{\"size\":2}");
    /* Rolling back to the body it has writes nothing. */
    assert_int_equal(
        syncd_store_rollback(f->store, &c, "h", "vol", 2, NULL, &err), 0);
    assert_int_equal(c->op, SYNCD_CHANGE_NONE);
    syncd_change_free(c);
    /* An update rollback is an ordinary update with its patch. */
    assert_int_equal(
        syncd_store_rollback(f->store, &c, "h", "vol", 1, NULL, &err), 0);
    assert_int_equal(c->op, SYNCD_CHANGE_UPDATE);
    assert_int_equal(c->base, 4);
    assert_json_text(c->patch,
                     "[{\"op\":\"replace\",\"path\":\"/size\",\"value\":1}]");
    syncd_change_free(c);
    /* A strict rollback at another version fails and writes nothing. */
    assert_int_equal(syncd_store_rollback(f->store, &c, "h", "vol", 2,
                                          &(syncd_write_options_t){4, NULL},
                                          &err),
                     SYNCD_EPRECONDITION);
    assert_doc(f, "h", "vol", 5, "{\"size\":1}");
}

/* Puts body (stolen) as coll/id's next version through f's store and
 * records it in acked. */
static void put_acked(fixture_t *f, acked_t *acked, const char *id,
                      json_t *body)
{
    syncd_change_t *c = NULL;

    assert_int_equal(
        syncd_store_put(f->store, &c, "h", id, body, SYNCD_ANY_VERSION, NULL),
        0);
    assert_int_not_equal(c->op, SYNCD_CHANGE_NONE);
    acked[c->doc->version].v = c->doc->version;
    snprintf(acked[c->doc->version].h, sizeof(acked[c->doc->version].h), "%s",
             c->doc->hash);
    acked[c->doc->version].body = body;
    syncd_change_free(c);
}

static void
test_history__edits_from_the_node_cache_keep_the_exact_history(void **state)
{
    fixture_t *f = *state;
    acked_t acked[16] = {{0}};
    syncd_change_t *c = NULL;

    for (int i = 1; i <= 6; i++)
        put_acked(f, acked, "d", json_pack("{s:i, s:[i]}", "n", i, "l", i));
    assert_int_equal(
        syncd_store_delete(f->store, &c, "h", "d", SYNCD_ANY_VERSION, NULL), 0);
    acked[7].v = 7;
    snprintf(acked[7].h, sizeof(acked[7].h), "%s", c->doc->hash);
    syncd_change_free(c);
    /* With history on (the default), every write after the create commits
     * from the cache's entry in one operation where the backend can. */
    assert_int_equal(cas_fast(f), writes_from_cache(f) ? 6 : 0);
    assert_history_is(f, "h", "d", acked, 1, 7);
    for (int i = 1; i <= 6; i++)
        json_decref(acked[i].body);
}

static void
test_history__an_entry_from_an_event_is_edited_by_reading_the_record(
    void **state)
{
    fixture_t *f = *state;
    acked_t acked[16] = {{0}};
    syncd_doc_t *doc = NULL;
    uint64_t fast;

    for (int i = 1; i <= 3; i++)
        put_acked(f, acked, "d", json_pack("{s:i}", "n", i));
    /* The entry becomes one made from an event: the doc without its
     * history. */
    assert_int_equal(syncd_store_cached(f->store, &doc, "h", "d", NULL),
                     f->kind->mongo ? 0 : SYNCD_ENOTFOUND);
    if (doc != NULL) {
        json_decref(doc->hist);
        doc->hist = NULL;
        assert_int_equal(syncd_store_cache_invalidate(f->store, "h", "d", NULL),
                         0);
        assert_int_equal(syncd_store_cache_put(f->store, doc, NULL), 1);
        syncd_doc_free(doc);
    }
    fast = cas_fast(f);
    put_acked(f, acked, "d", json_pack("{s:i}", "n", 4));
    assert_int_equal(cas_fast(f), fast);
    /* That write read the record: the next one commits from the cache. */
    put_acked(f, acked, "d", json_pack("{s:i}", "n", 5));
    assert_int_equal(cas_fast(f), fast + (writes_from_cache(f) ? 1 : 0));
    assert_history_is(f, "h", "d", acked, 1, 5);
    for (int i = 1; i <= 5; i++)
        json_decref(acked[i].body);
}

static void test_history__records_without_history_read_fine(void **state)
{
    fixture_t *f = *state;
    syncd_doc_t *doc = NULL;
    syncd_change_t *c = NULL;
    json_t *hist = NULL;
    syncd_error_t err;

    /* Records written with history off hold no history, as those written
     * before history existed. */
    f->opts.history_len = 0;
    reopen(f);
    create_doc(f, "h", "old", "{\"a\":1}");
    assert_int_equal(put_doc(f, "h", "old", "{\"a\":2}", 1, NULL), 0);
    assert_version_gone(f, "old", 1, 2);
    f->opts.history_len = 20;
    reopen(f);
    assert_doc(f, "h", "old", 2, "{\"a\":2}");
    syncd_error_clear(&err);
    assert_int_equal(syncd_store_history(f->store, &hist, "h", "old", &err), 0);
    assert_int_equal(json_integer_value(json_object_get(hist, "oldest")), 2);
    assert_int_equal(json_array_size(json_object_get(hist, "versions")), 1);
    json_decref(hist);
    assert_int_equal(
        syncd_store_get_version(f->store, &doc, "h", "old", 2, &err), 0);
    assert_json_text(doc->body, "{\"a\":2}");
    syncd_doc_free(doc);
    /* The next write starts the history. */
    assert_int_equal(put_doc(f, "h", "old", "{\"a\":3}", 2, NULL), 0);
    assert_int_equal(
        syncd_store_rollback(f->store, &c, "h", "old", 2, NULL, &err), 0);
    assert_int_equal(c->doc->version, 4);
    assert_json_text(c->doc->body, "{\"a\":2}");
    syncd_change_free(c);
    assert_int_equal(syncd_store_history(f->store, &hist, "h", "old", &err), 0);
    assert_int_equal(json_integer_value(json_object_get(hist, "oldest")), 2);
    json_decref(hist);
    assert_int_equal(syncd_store_history(f->store, &hist, "h", "none", &err),
                     SYNCD_ENOTFOUND);
    /* A write with history off drops the history the record had (on
     * mongo-java-server, by the single-operation update from the cache),
     * so none is left that does not lead to the current version. */
    f->opts.history_len = 0;
    reopen(f);
    assert_doc(f, "h", "old", 4, "{\"a\":2}");
    assert_int_equal(put_doc(f, "h", "old", "{\"a\":5}", 4, NULL), 0);
    f->opts.history_len = 20;
    reopen(f);
    assert_int_equal(syncd_store_history(f->store, &hist, "h", "old", &err), 0);
    assert_int_equal(json_integer_value(json_object_get(hist, "oldest")), 5);
    assert_int_equal(json_array_size(json_object_get(hist, "versions")), 1);
    json_decref(hist);
}

/* A doc of version v with the body of text (NULL: a tombstone), for the
 * history's own functions. */
static syncd_doc_t *hist_doc(int64_t v, const char *text)
{
    syncd_doc_t *d = calloc(1, sizeof(*d));

    assert_non_null(d);
    d->coll = strdup("h");
    d->id = strdup("d");
    d->version = v;
    d->mtime_ms = 1700000000000 + v;
    d->deleted = text == NULL;
    d->body = text != NULL ? parse(text) : NULL;
    snprintf(d->hash, sizeof(d->hash), "%064lld", (long long)v);
    snprintf(d->origin, sizeof(d->origin), "n\"%lld\\},{]\x1f\n\t",
             (long long)v);
    return d;
}

/* Asserts that doc's history text is the cached one and is, byte for byte,
 * what serializing its entries gives. */
static void assert_hist_text_cached(const syncd_doc_t *doc)
{
    const char *text;
    char *made = NULL, *want = json_dumps(doc->hist, JSON_COMPACT);
    char *newest =
        json_dumps(json_array_get(doc->hist, json_array_size(doc->hist) - 1),
                   JSON_COMPACT);
    size_t len;

    assert_int_equal(syncd_history_text(&text, &len, &made, doc), 0);
    assert_null(made);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(text, want, len);
    /* The newest entry's text, which the embedded store writes alone. */
    text = syncd_history_newest_text(doc, &len);
    assert_non_null(text);
    assert_int_equal(len, strlen(newest));
    assert_memory_equal(text, newest, len);
    free(newest);
    free(want);
}

/* Bodies whose reverse patches hold brackets, braces, commas, quotes,
 * backslashes, control and non-ASCII characters inside their strings. */
static const char *const hist_bodies[] = {
    "{\"a\":\"],[\"}",
    "{\"a\":\"},{\\\"x\\\":[1,2]}\",\"b\\\"]\":[\"\\\\\"]}",
    "{\"a\":\"caf\u00e9 \\n\\t\\u0001 /\"}",
    NULL,
    "{\"a\":[{\"b\":\"}\"}],\"c\":{\"d\":\"[\"}}",
    "{\"big\":"
    "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}",
    "{\"a\":1}",
};

/* Runs edits over hist_bodies (cycling) from cur (stolen) with history len
 * and max_bytes, asserting each next history's text; returns the last. */
static syncd_doc_t *run_hist_texts(syncd_doc_t *cur, int edits, int len,
                                   uint64_t max_bytes)
{
    size_t nb = sizeof(hist_bodies) / sizeof(hist_bodies[0]);

    for (int i = 0; i < edits; i++) {
        syncd_doc_t *next =
            hist_doc(cur->version + 1, hist_bodies[(size_t)cur->version % nb]);
        syncd_error_t err;

        syncd_error_clear(&err);
        assert_int_equal(
            syncd_history_append(next, cur, NULL, len, max_bytes, &err), 0);
        assert_true(json_array_size(next->hist) > 0);
        assert_true(json_array_size(next->hist) <= (size_t)len);
        assert_hist_text_cached(next);
        syncd_doc_free(cur);
        cur = next;
    }
    return cur;
}

static void
test_history__each_text_is_the_compact_json_of_its_entries(void **state)
{
    syncd_doc_t *cur = hist_doc(1, "{}"), *next;
    json_t *hist;
    const char *text;
    char *made = NULL;
    size_t len;

    (void)state;
    /* Trimmed by count, one entry at a time, and by bytes, where the big
     * entry pushes out several small ones at once. */
    cur = run_hist_texts(cur, 20, 4, 1 << 20);
    cur = run_hist_texts(cur, 20, 20, 900);
    /* A history without a cached text (an entry from an event, a record
     * read from RocksDB) is serialized once, then built on. */
    json_decref(cur->hist_text);
    cur->hist_text = NULL;
    cur = run_hist_texts(cur, 3, 5, 1 << 20);
    /* A text that is another encoding of the entries (with blanks) is
     * built on, and what it gives parses back to the entries. */
    made = json_dumps(cur->hist, JSON_INDENT(2));
    assert_int_equal(syncd_history_keep_text(cur, made, strlen(made)), 0);
    free(made);
    next = hist_doc(cur->version + 1, "{\"a\":\"[,]\"}");
    assert_int_equal(syncd_history_append(next, cur, NULL, 5, 1 << 20, NULL),
                     0);
    assert_int_equal(json_array_size(next->hist), 5);
    assert_int_equal(syncd_history_text(&text, &len, &made, next), 0);
    assert_null(made);
    assert_json_text(next->hist,
                     json_string_value(json_array_get(next->hist_text, 1)));
    syncd_doc_free(cur);
    cur = next;
    /* A text cached for another array than doc->hist is not used. */
    hist = json_deep_copy(cur->hist);
    assert_int_equal(json_array_remove(hist, 0), 0);
    json_decref(cur->hist);
    cur->hist = hist;
    assert_int_equal(syncd_history_text(&text, &len, &made, cur), 0);
    assert_non_null(made);
    assert_ptr_equal(text, made);
    assert_json_text(cur->hist, made);
    free(made);
    syncd_doc_free(cur);
}

static void
test_history__a_record_with_a_cached_text_encodes_the_same_bytes(void **state)
{
    syncd_doc_t *cur = run_hist_texts(hist_doc(1, "{}"), 8, 5, 1 << 20);
    char *with = NULL, *without = NULL;
    size_t with_len = 0, without_len = 0;
    json_t *cached = cur->hist_text;

    (void)state;
    for (int outbox = 0; outbox < 2; outbox++) {
        if (outbox)
            cur->outbox = parse("[{\"v\":9,\"base\":8,\"op\":\"update\"}]");
        cur->hist_text = cached;
        assert_int_equal(
            syncd_record_encode(&with, &with_len, cur, 0, NULL, 0, NULL), 0);
        cur->hist_text = NULL;
        assert_int_equal(
            syncd_record_encode(&without, &without_len, cur, 0, NULL, 0, NULL),
            0);
        assert_int_equal(with_len, without_len);
        assert_memory_equal(with, without, with_len);
        free(with);
        free(without);
    }
    cur->hist_text = cached;
    syncd_doc_free(cur);
}

/* Returns a copy of the meta of the record doc encodes (NUL-terminated),
 * or NULL when the record has none. */
static char *record_meta(const syncd_doc_t *doc)
{
    unsigned char *rec;
    size_t len, off, mlen;
    char *meta = NULL;

    assert_int_equal(
        syncd_record_encode((char **)&rec, &len, doc, 0, NULL, 0, NULL), 0);
    off = 18;
    off += 1 + rec[off];
    off += 1 + rec[off];
    if (rec[1] & 0x02) {
        mlen = (size_t)rec[off] | (size_t)rec[off + 1] << 8 |
               (size_t)rec[off + 2] << 16 | (size_t)rec[off + 3] << 24;
        assert_true(off + 4 + mlen <= len);
        meta = strndup((char *)rec + off + 4, mlen);
    }
    free(rec);
    return meta;
}

/* Asserts that the meta of doc's record is, byte for byte, json_dumps()
 * of the object of its keys and history. */
static void assert_meta_is_its_serialization(const syncd_doc_t *doc)
{
    json_t *meta = json_object();
    char *want, *got = record_meta(doc);

    if (json_array_size(doc->ikeys) > 0)
        json_object_set(meta, "ik", doc->ikeys);
    if (json_array_size(doc->hist) > 0)
        json_object_set(meta, "hs", doc->hist);
    want = json_object_size(meta) > 0 ? json_dumps(meta, JSON_COMPACT) : NULL;
    if (want == NULL)
        assert_null(got);
    else
        assert_string_equal(got, want);
    free(want);
    free(got);
    json_decref(meta);
}

/* A record's meta holds its keys and history and never its markers,
 * however many are pending or acked. */
static void test_record__meta_holds_keys_and_history_not_markers(void **state)
{
    static const int64_t acks[] = {2, 7, 11, 12};
    syncd_doc_t *cur = hist_doc(1, "{}"), *next;
    json_t *left;

    (void)state;
    assert_meta_is_its_serialization(cur);
    for (int v = 2; v <= 12; v++) {
        next = hist_doc(v, "{\"a\":1}");
        /* As add_marker() does: a shallow copy of cur's markers plus one,
         * whose origin holds quotes, backslashes and control characters. */
        next->outbox =
            cur->outbox != NULL ? json_copy(cur->outbox) : json_array();
        json_array_append_new(
            next->outbox,
            json_pack("{s:I, s:I, s:s, s:s, s:I, s:s}", "v", (json_int_t)v,
                      "base", (json_int_t)(v - 1), "op", "update", "h",
                      next->hash, "t", (json_int_t)next->mtime_ms, "by",
                      next->origin));
        if (v == 5)
            next->ikeys =
                parse("[{\"k\":\"x\\\"]\",\"op\":\"update\",\"v\":5}]");
        else if (cur->ikeys != NULL)
            next->ikeys = json_incref(cur->ikeys);
        if (v >= 8)
            assert_int_equal(
                syncd_history_append(next, cur, NULL, 3, 1 << 20, NULL), 0);
        assert_meta_is_its_serialization(next);
        syncd_doc_free(cur);
        cur = next;
    }
    for (size_t i = 0; i < sizeof(acks) / sizeof(acks[0]); i++) {
        next = syncd_doc_dup(cur);
        assert_non_null(next);
        assert_int_equal(syncd_outbox_after(&left, cur->outbox, acks[i]), 1);
        json_decref(next->outbox);
        next->outbox = left;
        assert_meta_is_its_serialization(next);
        syncd_doc_free(cur);
        cur = next;
    }
    assert_null(cur->outbox);
    syncd_doc_free(cur);
}

/* ---- Runner ------------------------------------------------------------- */

#define BOTH(fn)                                                               \
    {"rocksdb/" #fn, fn, setup_store, teardown_store, (void *)&rocks_kind},    \
    {                                                                          \
        "mongodb/" #fn, fn, setup_store, teardown_store, (void *)&mongo_kind   \
    }
#define ROCKS(fn)                                                              \
    {                                                                          \
        "rocksdb/" #fn, fn, setup_store, teardown_store, (void *)&rocks_kind   \
    }
#define MONGO(fn)                                                              \
    {                                                                          \
        "mongodb/" #fn, fn, setup_store, teardown_store, (void *)&mongo_kind   \
    }
#define CACHE(fn)                                                              \
    cmocka_unit_test_setup_teardown(fn, setup_cache, teardown_cache)

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_backoff__stays_within_zero_and_the_capped_exponential),
        cmocka_unit_test(test_digest__is_the_documented_merkle_root),
        cmocka_unit_test(test_digest__streaming_root_equals_the_documented_one),
        CACHE(test_cache__kept_only_across_a_clean_close_when_asked),
        CACHE(test_cache__expired_entries_are_never_served),
        CACHE(test_cache__put_if_newer_never_goes_backwards),
        CACHE(test_cache__stays_within_max_bytes_evicting_least_recent),
        CACHE(test_cache__invalidate_drops_one_entry_or_a_collection),
        CACHE(test_cache__page_lists_fresh_entries_and_tombstones_after_a_key),
        CACHE(test_cache__hits_share_the_decoded_body_without_copying),
        CACHE(test_cache__entries_out_of_the_tier_are_read_back_from_rocksdb),
        CACHE(
            test_cache__expired_tier_entries_are_never_served_and_free_their_bytes),
        CACHE(test_cache__concurrent_readers_never_see_a_version_go_backwards),
        CACHE(
            test_cache__many_updates_within_an_interval_write_the_record_once),
        CACHE(test_cache__patches_leave_the_record_writes_to_flush_due),
        CACHE(test_cache__unwritten_entries_out_of_the_tier_are_served),
        CACHE(test_cache__a_clean_close_writes_every_dirty_record),
        CACHE(test_cache__a_killed_process_leaves_nothing_served),
        CACHE(
            test_cache_patch__concurrent_readers_never_see_a_half_applied_body),
        CACHE(
            test_cache_patch__the_tree_checked_hash_is_the_fresh_hash_after_each_patch),
        CACHE(
            test_cache_patch__a_patch_whose_hash_is_not_the_events_drops_the_entry),
        CACHE(test_cache_patch__a_clean_close_writes_the_patched_records),
        BOTH(test_store_get_text__serves_each_version_once_made),
        BOTH(test_store__create_put_delete_recreate_track_versions),
        BOTH(test_store_put__without_if_match_creates_or_replaces),
        BOTH(test_store_put_new__keeps_the_given_tree_and_takes_its_reference),
        BOTH(test_store_put__same_body_writes_nothing),
        ROCKS(
            test_store_big_writes__every_version_carries_the_hash_of_its_body),
        ROCKS(
            test_store_big_writes__concurrent_writers_and_acks_keep_every_hash_true),
        BOTH(
            test_store_put__stale_if_match_fails_with_EPRECONDITION_and_changes_nothing),
        MONGO(test_store_edit__strict_write_that_loses_a_race_is_one_attempt),
        BOTH(test_store_edit__commits_the_callback_result_with_diffs),
        BOTH(test_store_edit__no_change_writes_nothing),
        BOTH(test_store_edit__callback_error_aborts_and_writes_nothing),
        BOTH(test_store_edit__missing_or_deleted_document_is_ENOTFOUND),
        MONGO(test_store_edit__retries_a_conflict_after_rereading),
        MONGO(test_store_edit__gives_up_at_max_retries_with_ECONFLICT),
        MONGO(test_store_edit__gives_up_at_edit_timeout_with_ECONFLICT),
        MONGO(test_store_edit__backoff_doubles_up_to_the_cap_with_full_jitter),
        BOTH(test_store_patch__applies_json_patch_and_merge_patch),
        BOTH(
            test_store_patch__change_of_a_json_patch_holds_its_diffs_and_merge),
        BOTH(test_store_patch__failing_test_op_is_ECONFLICT_and_not_retried),
        BOTH(test_store_patch__invalid_patch_is_EPATCH),
        BOTH(test_store_list__pages_by_prefix_and_after_and_skips_tombstones),
        BOTH(
            test_store_export_page__lists_live_documents_with_bodies_after_an_id),
        BOTH(test_store_checkpoint__of_rocksdb_opens_with_the_same_documents),
        BOTH(test_store_digest__covers_live_documents_only),
        BOTH(
            test_store_digest_range__of_a_range_equals_the_digest_of_its_adjacent_parts),
        BOTH(test_store_digest_range__bad_range_is_EINVAL),
        BOTH(test_store_verify__a_consistent_store_agrees),
        BOTH(
            test_store_legacy_hash__a_store_written_before_the_merkle_hash_verifies),
        MONGO(
            test_store_verify__names_each_cached_entry_that_differs_from_the_store),
        BOTH(
            test_store_check_start__a_clean_close_leaves_digests_the_next_open_matches),
        MONGO(test_store_check_start__a_kept_cache_with_a_bad_body_is_dropped),
        MONGO(
            test_store_check_start__a_kept_cache_changed_while_closed_is_dropped),
        ROCKS(test_store_check_start__off_checks_nothing_but_consumes_the_file),
        BOTH(test_store_purge__removes_tombstones_after_tombstone_ttl),
        BOTH(test_store_purge__a_limit_bounds_each_call),
        ROCKS(test_store_purge__reads_a_large_collection_page_by_page),
        ROCKS(
            test_store_purge__a_store_made_before_the_tombstone_index_gets_one),
        ROCKS(test_store_purge__takes_the_history_of_what_it_removes),
        ROCKS(
            test_store_stats__the_block_cache_holds_at_most_its_configured_bytes),
        BOTH(test_store_collections__lists_names_sorted),
        BOTH(test_store_versions__reads_the_version_headers_of_the_given_ids),
        BOTH(test_store_cache_page__pages_cached_entries_in_mongodb_mode_only),
        BOTH(
            test_store_outbox__each_write_commits_a_marker_and_keeps_pending_ones),
        BOTH(
            test_store_outbox__ack_drops_the_markers_up_to_its_version_whatever_the_record_is_at),
        BOTH(
            test_store_outbox__a_full_outbox_refuses_the_write_and_drops_no_marker),
        ROCKS(
            test_store_outbox__markers_live_beside_the_record_and_an_ack_leaves_it),
        ROCKS(
            test_store_outbox__a_record_holding_its_markers_still_publishes_them),
        ROCKS(test_store_outbox__markers_kept_as_one_array_get_a_key_each),
        ROCKS(test_store_outbox__a_corrupt_old_outbox_fails_its_record_alone),
        BOTH(test_store_outbox__list_pages_records_with_markers),
        BOTH(test_store_purge__keeps_tombstones_with_pending_markers),
        BOTH(
            test_store_idempotency__a_retry_replays_the_first_outcome_and_writes_nothing),
        BOTH(test_store_idempotency__an_expired_key_writes_again),
        BOTH(test_store_cache__holds_committed_writes_in_mongodb_mode),
        BOTH(test_store__bad_ids_and_collections_never_reach_the_backend),
        BOTH(test_store__non_object_and_oversized_bodies_are_rejected),
        ROCKS(test_store__each_version_knows_its_body_size),
        BOTH(test_store__awkward_keys_and_numbers_round_trip_exactly),
        ROCKS(test_store_rocks__acknowledged_writes_survive_sigkill),
        ROCKS(
            test_store_rocks__kill_during_group_commits_loses_no_acked_or_read_version),
        ROCKS(
            test_store_rocks__a_failed_sync_fails_its_writers_and_shows_no_version_of_theirs),
        BOTH(test_store_edit__8_threads_x_500_increments_lose_nothing),
        BOTH(test_store_edit__64_threads_lose_nothing),
        ROCKS(test_store_rocks__8_writers_of_one_document_never_conflict),
        ROCKS(test_store_rocks__stats_count_the_in_memory_tier),
        ROCKS(test_store_rocks__stats_count_tier_evictions),
        ROCKS(test_store_rocks__tier_stays_within_cache_max_bytes),
        ROCKS(test_store_rocks__tier_entries_live_for_cache_ttl),
        ROCKS(
            test_store_rocks__a_blocked_edit_holds_up_no_other_reader_or_writer),
        ROCKS(test_store_rocks__a_write_reports_its_wait_for_the_lock),
        ROCKS(
            test_store_rocks__lock_free_readers_never_see_a_version_go_backwards),
        BOTH(
            test_history__after_concurrent_edits_is_exactly_the_committed_sequence),
        BOTH(
            test_history__rollbacks_under_contention_lose_no_acknowledged_version),
        BOTH(test_history__is_trimmed_oldest_first_by_count),
        BOTH(test_history__is_trimmed_oldest_first_by_bytes),
        ROCKS(test_history__entries_live_beside_the_record),
        ROCKS(test_history__a_store_holding_it_in_its_records_moves_it),
        BOTH(test_history__a_deleted_document_is_restored_from_its_tombstone),
        BOTH(test_history__edits_from_the_node_cache_keep_the_exact_history),
        BOTH(
            test_history__an_entry_from_an_event_is_edited_by_reading_the_record),
        BOTH(test_history__records_without_history_read_fine),
        cmocka_unit_test(
            test_history__each_text_is_the_compact_json_of_its_entries),
        cmocka_unit_test(
            test_history__a_record_with_a_cached_text_encodes_the_same_bytes),
        cmocka_unit_test(test_record__meta_holds_keys_and_history_not_markers),
    };

    if (argc == 4 && strcmp(argv[1], "--crash-child") == 0)
        crash_child(argv[2], atoi(argv[3]));
    if (argc == 4 && strcmp(argv[1], "--gc-child") == 0)
        gc_child(argv[2], atoi(argv[3]));
    if (argc == 4 && strcmp(argv[1], "--full-disk-child") == 0)
        full_disk_child(argv[2], atoi(argv[3]));
    if (argc == 4 && strcmp(argv[1], "--cache-kill-child") == 0)
        cache_kill_child(argv[2], atoi(argv[3]));
    /* SYNCD_TEST_FILTER=<glob> runs only the matching tests. */
    if (getenv("SYNCD_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("SYNCD_TEST_FILTER"));
    return cmocka_run_group_tests_name("storage", tests, group_setup,
                                       group_teardown);
}
