/* bench_store.c - edit and read throughput of the store library, next to
 * the bare cost of its backends.
 *
 * For each store of record (the embedded RocksDB default, and MongoDB when
 * --mongo-uri is given) it runs the edit loop through the public
 * syncd_store_* API with 1, 8 and 64 concurrent writers on one document and
 * on 1,000 documents (1 KB bodies, each edit increments a counter field)
 * and reports edits/s with p50/p99 latency, failed edits and conflict
 * retries per edit, then cached gets of a 1 KB document on one thread,
 * and (embedded default) gets of 100,000 1 KB documents chosen uniformly at
 * random on one thread, with the share the in-memory tier answered, and
 * nine purges of 100 tombstones each among those documents (the median
 * purge's time, the slowest's, and tombstones per second).
 *
 * The overhead ratio compares the 1-writer edit with the bare backend round
 * trip it is built on: a RocksDB get + put of the very record bytes syncd
 * stores for the document (same key, same length, same fsync setting), and
 * on MongoDB first the very findAndModify the edit sends (same filter, same
 * update bytes, built once; see bare_fair_t), then a findAndModify ($inc)
 * on a 1 KB document of the same server. They are measured in alternating
 * slices of the same seconds, so that load from other processes on the
 * machine weighs on all alike. Next to the edit with 8 writers of one document,
 * 8 bare findAndModify writers of one document (a client each) on the same
 * server.
 *
 * Usage: bench_store --data-dir DIR [--mongo-uri URI] [--seconds S]
 * (bench/storage/run.sh starts FerretDB or mongo-java-server and runs it).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <mongoc/mongoc.h>
#include <rocksdb/c.h>

#include "storage/internal.h"
#include "syncd/store.h"

#define BODY_BYTES 1024
#define MAX_WRITERS 64
#define MANY_DOCS 1000
/* Documents of the uniform random get row (embedded default only). */
#define GET_DOCS 100000
#define SEED_THREADS 8
/* Tombstones among the GET_DOCS documents when a purge is timed, and the
 * purges timed (each of its own tombstones). */
#define PURGE_TOMBS 100
#define PURGE_ROUNDS 9
#define RATIO_SLICES 10

typedef struct samples {
    int64_t *ns;
    size_t n, cap;
} samples_t;

typedef struct result {
    double per_sec;
    double p50_ms, p99_ms;
    double retries_per_op;
    size_t ops, failures;
} result_t;

typedef struct edit_run {
    syncd_store_t *store;
    const char *coll;
    int ndocs;
    int64_t deadline;
    uint64_t seed;
    samples_t lat;
    size_t failures;
} edit_run_t;

/* A bare backend loop: runs round trips until deadline, adding each one's
 * latency to lat and counting failed ones in *failures. */
typedef void (*bare_loop_fn)(void *ctx, samples_t *lat, size_t *failures,
                             int64_t deadline);

static int64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t deadline_after(double seconds)
{
    return mono_ns() + (int64_t)(seconds * 1e9);
}

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "%s: %s\n", what, detail);
    exit(1);
}

static void samples_add(samples_t *s, int64_t ns)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->ns = realloc(s->ns, s->cap * sizeof(*s->ns));
        if (!s->ns)
            die("samples", "out of memory");
    }
    s->ns[s->n++] = ns;
}

static int compare_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* Summarises s (sorted in place) taken over elapsed_ns. */
static result_t summarise(samples_t *s, int64_t elapsed_ns, size_t failures)
{
    result_t r = {.ops = s->n, .failures = failures};

    if (s->n > 0) {
        qsort(s->ns, s->n, sizeof(*s->ns), compare_i64);
        r.p50_ms = s->ns[s->n / 2] / 1e6;
        r.p99_ms = s->ns[(s->n * 99) / 100] / 1e6;
    }
    r.per_sec = elapsed_ns > 0 ? s->n * 1e9 / elapsed_ns : 0;
    return r;
}

static void print_row(const char *what, const char *backend, result_t r)
{
    printf("| %-34s | %-8s | %10.0f | %8.3f | %8.3f | %6zu | %7.3f |\n", what,
           backend, r.per_sec, r.p50_ms, r.p99_ms, r.failures,
           r.retries_per_op);
    fflush(stdout);
}

static json_t *padded_body(void)
{
    char pad[BODY_BYTES];

    memset(pad, 'x', sizeof(pad) - 64);
    pad[sizeof(pad) - 64] = '\0';
    return json_pack("{s:i, s:s}", "n", 0, "pad", pad);
}

static void doc_id(char *buf, size_t size, int i)
{
    snprintf(buf, size, "doc-%04d", i);
}

static int increment(json_t *body, void *arg, syncd_error_t *err)
{
    json_t *n = json_object_get(body, "n");

    (void)arg;
    (void)err;
    return json_object_set_new(body, "n",
                               json_integer(json_integer_value(n) + 1)) == 0
               ? 0
               : SYNCD_ENOMEM;
}

static void *edit_worker(void *arg)
{
    edit_run_t *w = arg;
    char id[32];

    while (mono_ns() < w->deadline) {
        syncd_change_t *change = NULL;

        w->seed = w->seed * 6364136223846793005u + 1442695040888963407u;
        doc_id(id, sizeof(id), (int)((w->seed >> 33) % (uint64_t)w->ndocs));
        int64_t t0 = mono_ns();
        int rc = syncd_store_edit(w->store, &change, w->coll, id, increment,
                                  NULL, SYNCD_ANY_VERSION, NULL);
        samples_add(&w->lat, mono_ns() - t0);
        if (rc != 0)
            w->failures++;
        syncd_change_free(change);
    }
    return NULL;
}

/* Creates ndocs 1 KB documents in coll. */
static int seed_docs(syncd_store_t *store, const char *coll, int ndocs)
{
    json_t *body = padded_body();
    syncd_error_t err;
    char id[32];

    syncd_error_clear(&err);
    for (int i = 0; i < ndocs; i++) {
        syncd_change_t *change = NULL;

        doc_id(id, sizeof(id), i);
        if (syncd_store_put(store, &change, coll, id, body, SYNCD_ANY_VERSION,
                            &err) != 0) {
            fprintf(stderr, "seed %s/%s: %s\n", coll, id, err.message);
            json_decref(body);
            return -1;
        }
        syncd_change_free(change);
    }
    json_decref(body);
    return 0;
}

static uint64_t store_retries(syncd_store_t *store)
{
    syncd_store_stats_t stats;

    syncd_store_stats(store, &stats);
    return stats.retries;
}

static result_t run_edits(syncd_store_t *store, const char *coll, int writers,
                          int ndocs, double seconds)
{
    pthread_t threads[MAX_WRITERS];
    edit_run_t runs[MAX_WRITERS];
    samples_t all = {0};
    size_t failures = 0;
    uint64_t retries = store_retries(store);
    int64_t start = mono_ns();
    int64_t deadline = deadline_after(seconds);

    for (int i = 0; i < writers; i++) {
        runs[i] = (edit_run_t){.store = store,
                               .coll = coll,
                               .ndocs = ndocs,
                               .deadline = deadline,
                               .seed = (uint64_t)i * 7919 + 1};
        pthread_create(&threads[i], NULL, edit_worker, &runs[i]);
    }
    for (int i = 0; i < writers; i++) {
        pthread_join(threads[i], NULL);
        for (size_t j = 0; j < runs[i].lat.n; j++)
            samples_add(&all, runs[i].lat.ns[j]);
        failures += runs[i].failures;
        free(runs[i].lat.ns);
    }
    result_t r = summarise(&all, mono_ns() - start, failures);
    if (r.ops > 0)
        r.retries_per_op = (double)(store_retries(store) - retries) / r.ops;
    free(all.ns);
    return r;
}

static result_t run_cached_gets(syncd_store_t *store, const char *coll,
                                double seconds)
{
    samples_t lat = {0};
    size_t failures = 0;
    int64_t start = mono_ns();
    int64_t deadline = deadline_after(seconds);

    while (mono_ns() < deadline) {
        int64_t t0 = mono_ns();
        for (int i = 0; i < 1000; i++) {
            syncd_doc_t *doc = NULL;

            if (syncd_store_get(store, &doc, coll, "doc-0000", NULL) != 0)
                failures++;
            syncd_doc_free(doc);
        }
        samples_add(&lat, (mono_ns() - t0) / 1000);
    }
    int64_t elapsed = mono_ns() - start;
    result_t r = summarise(&lat, elapsed, failures);
    r.per_sec = lat.n * 1000 * 1e9 / elapsed;
    free(lat.ns);
    return r;
}

/* ids[i] of the uniform random get row: "doc-NNNNNN". */
typedef struct get_ids {
    char (*ids)[16];
    int n;
} get_ids_t;

typedef struct seed_run {
    syncd_store_t *store;
    const char *coll;
    const get_ids_t *ids;
    int from, to;
    int failed;
} seed_run_t;

static void *seed_worker(void *arg)
{
    seed_run_t *r = arg;
    json_t *body = padded_body();

    for (int i = r->from; i < r->to && !r->failed; i++) {
        syncd_change_t *change = NULL;

        if (syncd_store_put(r->store, &change, r->coll, r->ids->ids[i], body,
                            SYNCD_ANY_VERSION, NULL) != 0)
            r->failed = 1;
        syncd_change_free(change);
    }
    json_decref(body);
    return NULL;
}

/* Creates the n documents of ids in coll with SEED_THREADS writers. */
static void seed_many(syncd_store_t *store, const char *coll,
                      const get_ids_t *ids)
{
    pthread_t threads[SEED_THREADS];
    seed_run_t runs[SEED_THREADS];

    for (int t = 0; t < SEED_THREADS; t++) {
        runs[t] = (seed_run_t){.store = store,
                               .coll = coll,
                               .ids = ids,
                               .from = ids->n * t / SEED_THREADS,
                               .to = ids->n * (t + 1) / SEED_THREADS};
        pthread_create(&threads[t], NULL, seed_worker, &runs[t]);
    }
    for (int t = 0; t < SEED_THREADS; t++) {
        pthread_join(threads[t], NULL);
        if (runs[t].failed)
            die("seed", "a put of the 100k-document collection failed");
    }
}

/* Gets of documents of coll chosen uniformly at random among ids, on one
 * thread, after one pass over all of them; *hit_pct receives the share of
 * the measured gets the store's in-memory tier answered. */
static result_t run_random_gets(syncd_store_t *store, const char *coll,
                                const get_ids_t *ids, double seconds,
                                double *hit_pct)
{
    samples_t lat = {0};
    size_t failures = 0;
    uint64_t seed = 42;
    syncd_store_stats_t before, after;

    for (int i = 0; i < ids->n; i++) {
        syncd_doc_t *doc = NULL;

        syncd_store_get(store, &doc, coll, ids->ids[i], NULL);
        syncd_doc_free(doc);
    }
    syncd_store_stats(store, &before);
    int64_t start = mono_ns();
    int64_t deadline = deadline_after(seconds);

    while (mono_ns() < deadline) {
        int64_t t0 = mono_ns();
        for (int i = 0; i < 1000; i++) {
            syncd_doc_t *doc = NULL;

            seed = seed * 6364136223846793005u + 1442695040888963407u;
            if (syncd_store_get(store, &doc, coll,
                                ids->ids[(seed >> 33) % (uint64_t)ids->n],
                                NULL) != 0)
                failures++;
            syncd_doc_free(doc);
        }
        samples_add(&lat, (mono_ns() - t0) / 1000);
    }
    int64_t elapsed = mono_ns() - start;
    syncd_store_stats(store, &after);
    uint64_t hits = after.cache_hits - before.cache_hits;
    uint64_t misses = after.cache_misses - before.cache_misses;
    *hit_pct =
        hits + misses ? 100.0 * (double)hits / (double)(hits + misses) : 0;
    result_t r = summarise(&lat, elapsed, failures);
    r.per_sec = lat.n * 1000 * 1e9 / elapsed;
    free(lat.ns);
    return r;
}

/* PURGE_ROUNDS times, deletes PURGE_TOMBS of the documents of ids (spread
 * over them, others each round) and times one purge of coll once they are
 * past the store's tombstone TTL: per_sec is tombstones purged per second
 * over all rounds, p50 the median purge's ms and p99 the slowest's. */
static result_t run_purge(syncd_store_t *store, const char *coll,
                          const get_ids_t *ids)
{
    struct timespec past_ttl = {0, 2000000};
    size_t purged_all = 0, failures = 0;
    int64_t elapsed_all = 0;
    samples_t lat = {0};
    result_t r;

    for (int round = 0; round < PURGE_ROUNDS; round++) {
        size_t purged = 0;
        json_t *gone = NULL;
        int64_t t0; /* the purge's start, then its time */

        for (int i = 0; i < PURGE_TOMBS; i++) {
            syncd_change_t *c = NULL;
            size_t k = (size_t)i * ids->n / PURGE_TOMBS + (size_t)round;

            if (syncd_store_delete(store, &c, coll, ids->ids[k],
                                   SYNCD_ANY_VERSION, NULL) != 0)
                failures++;
            syncd_change_free(c);
        }
        nanosleep(&past_ttl, NULL);
        t0 = mono_ns();
        if (syncd_store_purge(store, coll, 0, &purged, &gone, NULL) != 0)
            failures++;
        t0 = mono_ns() - t0;
        samples_add(&lat, t0);
        elapsed_all += t0;
        json_decref(gone);
        purged_all += purged;
        failures += PURGE_TOMBS - purged;
    }
    r = summarise(&lat, elapsed_all, failures);
    r.ops = purged_all;
    r.p99_ms = lat.ns[lat.n - 1] / 1e6;
    r.per_sec = (double)purged_all * 1e9 / (double)elapsed_all;
    free(lat.ns);
    return r;
}

/* A bare backend loop and its context, for run_ratio(). */
typedef struct bare_peer {
    bare_loop_fn loop;
    void *ctx;
} bare_peer_t;

/* Measures the 1-writer edit of coll/doc-0000 and each of the npeers bare
 * loops in RATIO_SLICES alternating slices over (1 + npeers) x seconds;
 * results in *syncd and bare[i]. */
static void run_ratio(syncd_store_t *store, const char *coll,
                      const bare_peer_t *peers, size_t npeers, double seconds,
                      result_t *syncd, result_t *bare)
{
    samples_t bare_lat[2] = {{0}};
    samples_t edit_lat = {0};
    size_t bare_failures[2] = {0}, edit_failures = 0;
    int64_t bare_ns[2] = {0}, edit_ns = 0;
    double slice = seconds / RATIO_SLICES;

    for (int i = 0; i < RATIO_SLICES; i++) {
        edit_run_t run = {.store = store,
                          .coll = coll,
                          .ndocs = 1,
                          .deadline = deadline_after(slice),
                          .seed = 1};
        int64_t t0 = mono_ns();

        edit_worker(&run);
        edit_ns += mono_ns() - t0;
        for (size_t j = 0; j < run.lat.n; j++)
            samples_add(&edit_lat, run.lat.ns[j]);
        edit_failures += run.failures;
        free(run.lat.ns);
        for (size_t p = 0; p < npeers; p++) {
            t0 = mono_ns();
            peers[p].loop(peers[p].ctx, &bare_lat[p], &bare_failures[p],
                          deadline_after(slice));
            bare_ns[p] += mono_ns() - t0;
        }
    }
    *syncd = summarise(&edit_lat, edit_ns, edit_failures);
    free(edit_lat.ns);
    for (size_t p = 0; p < npeers; p++) {
        bare[p] = summarise(&bare_lat[p], bare_ns[p], bare_failures[p]);
        free(bare_lat[p].ns);
    }
}

/* ---- The bare RocksDB round trip ---------------------------------------- */

typedef struct bare_rocks {
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_writeoptions_t *wo;
    rocksdb_readoptions_t *ro;
    char key[SYNCD_RECORD_KEY_MAX];
    size_t klen;
} bare_rocks_t;

/* Opens a RocksDB in dir (WAL on, fsync per write as sync_writes) holding
 * the record syncd stores for doc, under the same key. */
static void bare_rocks_open(bare_rocks_t *b, const char *dir,
                            const syncd_doc_t *doc, int sync_writes)
{
    char *errptr = NULL;
    char *value = NULL;
    size_t vlen = 0;

    b->opts = rocksdb_options_create();
    b->wo = rocksdb_writeoptions_create();
    b->ro = rocksdb_readoptions_create();
    rocksdb_options_set_create_if_missing(b->opts, 1);
    rocksdb_writeoptions_set_sync(b->wo, sync_writes);
    b->db = rocksdb_open(b->opts, dir, &errptr);
    if (!b->db)
        die("bare rocksdb open", errptr);
    b->klen = syncd_record_key(b->key, doc->coll, doc->id);
    if (syncd_record_encode(&value, &vlen, doc, 1, NULL, 0, NULL) != 0)
        die("bare rocksdb", "cannot encode the record");
    rocksdb_put(b->db, b->wo, b->key, b->klen, value, vlen, &errptr);
    if (errptr)
        die("bare rocksdb put", errptr);
    free(value);
}

/* A get + put of the record, changed in its last byte (a pad character)
 * so that every put writes new bytes of the same length. */
static void bare_rocks_loop(void *ctx, samples_t *lat, size_t *failures,
                            int64_t deadline)
{
    bare_rocks_t *b = ctx;
    char *errptr = NULL;

    while (mono_ns() < deadline) {
        size_t len = 0;
        int64_t t0 = mono_ns();
        char *got = rocksdb_get(b->db, b->ro, b->key, b->klen, &len, &errptr);

        if (got && len > 0) {
            got[len - 1] ^= 1;
            rocksdb_put(b->db, b->wo, b->key, b->klen, got, len, &errptr);
        }
        samples_add(lat, mono_ns() - t0);
        if (!got || errptr) {
            (*failures)++;
            rocksdb_free(errptr);
            errptr = NULL;
        }
        rocksdb_free(got);
    }
}

static void bare_rocks_close(bare_rocks_t *b)
{
    rocksdb_close(b->db);
    rocksdb_readoptions_destroy(b->ro);
    rocksdb_writeoptions_destroy(b->wo);
    rocksdb_options_destroy(b->opts);
}

/* ---- The bare MongoDB round trip ---------------------------------------- */

typedef struct bare_mongo {
    mongoc_client_t *client;
    mongoc_collection_t *coll;
    bson_t *query;
    bson_t *update;
} bare_mongo_t;

/* Connects to uri and creates a 1 KB document {_id, n, pad}. */
static void bare_mongo_open(bare_mongo_t *b, const char *uri)
{
    bson_t doc = BSON_INITIALIZER;
    char pad[BODY_BYTES - 64];
    bson_error_t e;

    b->client = mongoc_client_new(uri);
    if (!b->client)
        die("bare mongo", "bad URI");
    b->coll = mongoc_client_get_collection(b->client, "syncd_bench", "bare");
    mongoc_collection_drop(b->coll, NULL);
    b->query = BCON_NEW("_id", BCON_UTF8("bare"));
    b->update = BCON_NEW("$inc", "{", "n", BCON_INT64(1), "}");
    memset(pad, 'x', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    BSON_APPEND_UTF8(&doc, "_id", "bare");
    BSON_APPEND_INT64(&doc, "n", 0);
    BSON_APPEND_UTF8(&doc, "pad", pad);
    if (!mongoc_collection_insert_one(b->coll, &doc, NULL, NULL, &e))
        die("bare mongo insert", e.message);
    bson_destroy(&doc);
}

/* A findAndModify {$inc: {n: 1}} returning the new document. */
static void bare_mongo_loop(void *ctx, samples_t *lat, size_t *failures,
                            int64_t deadline)
{
    bare_mongo_t *b = ctx;
    bson_error_t e;

    while (mono_ns() < deadline) {
        bson_t reply;
        int64_t t0 = mono_ns();

        if (!mongoc_collection_find_and_modify(b->coll, b->query, NULL,
                                               b->update, NULL, false, false,
                                               true, &reply, &e))
            (*failures)++;
        samples_add(lat, mono_ns() - t0);
        bson_destroy(&reply);
    }
}

static void bare_mongo_close(bare_mongo_t *b)
{
    bson_destroy(b->update);
    bson_destroy(b->query);
    mongoc_collection_destroy(b->coll);
    mongoc_client_destroy(b->client);
}

/* The like-for-like peer of the edit: the very findAndModify that an edit
 * of bench1/doc-0000 sends (filter {_id, v, h}; update {$set: {v, data, h,
 * mt, by, del, hist}}, hist with history on, the default; projection {ob,
 * ik}; returning the new document), on a
 * copy of that document's record, through the same driver call. Filter and
 * update are built once from the stored record; each round trip only
 * overwrites, in place, the version (filter and $set), the counter inside
 * data and mt, so it measures the server and the driver for that request,
 * not the client work of an edit. (This library benchmark runs without the
 * outbox and idempotency keys, so the edit pushes neither and the peer
 * does not either.) */
typedef struct bare_fair {
    mongoc_client_t *client;
    mongoc_collection_t *coll;
    bson_t *filter, *update, *fields;
    int64_t v;
} bare_fair_t;

/* Appends the field name of the record rec to b as it is. */
static void copy_field(bson_t *b, const bson_t *rec, const char *name)
{
    bson_iter_t it;

    if (!bson_iter_init_find(&it, rec, name))
        die("bare mongo", "the stored record lacks a field");
    bson_append_iter(b, name, -1, &it);
}

/* Copies the stored record of coll/id of the store's database db into the
 * document "fair" of syncd_bench.bare and builds the request. */
static void bare_fair_open(bare_fair_t *b, const char *uri, const char *db,
                           const char *coll, const char *id)
{
    mongoc_collection_t *src;
    mongoc_cursor_t *cur;
    const bson_t *rec;
    bson_t *query = BCON_NEW("_id", BCON_UTF8(id));
    bson_t copy = BSON_INITIALIZER, set;
    bson_iter_t it;
    bson_error_t e;

    b->client = mongoc_client_new(uri);
    if (!b->client)
        die("bare mongo", "bad URI");
    src = mongoc_client_get_collection(b->client, db, coll);
    cur = mongoc_collection_find_with_opts(src, query, NULL, NULL);
    if (!mongoc_cursor_next(cur, &rec))
        die("bare mongo", "the edited document has no record");
    b->coll = mongoc_client_get_collection(b->client, "syncd_bench", "bare");
    BSON_APPEND_UTF8(&copy, "_id", "fair");
    bson_copy_to_excluding_noinit(rec, &copy, "_id", NULL);
    mongoc_collection_delete_one(b->coll, query, NULL, NULL, NULL);
    if (!mongoc_collection_insert_one(b->coll, &copy, NULL, NULL, &e))
        die("bare mongo insert", e.message);
    if (!bson_iter_init_find(&it, rec, "v"))
        die("bare mongo", "the stored record has no version");
    b->v = bson_iter_as_int64(&it);
    b->filter = bson_new();
    BSON_APPEND_UTF8(b->filter, "_id", "fair");
    copy_field(b->filter, rec, "v");
    copy_field(b->filter, rec, "h");
    b->update = bson_new();
    BSON_APPEND_DOCUMENT_BEGIN(b->update, "$set", &set);
    copy_field(&set, rec, "v");
    copy_field(&set, rec, "data");
    copy_field(&set, rec, "h");
    copy_field(&set, rec, "mt");
    copy_field(&set, rec, "by");
    copy_field(&set, rec, "del");
    if (bson_has_field(rec, "hist"))
        copy_field(&set, rec, "hist");
    bson_append_document_end(b->update, &set);
    b->fields = BCON_NEW("ob", BCON_INT32(1), "ik", BCON_INT32(1));
    bson_destroy(&copy);
    bson_destroy(query);
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(src);
}

/* Overwrites the int64 at the dotted path of b in place. */
static void overwrite_int64(bson_t *b, const char *path, int64_t value)
{
    bson_iter_t it, found;

    if (!bson_iter_init(&it, b) ||
        !bson_iter_find_descendant(&it, path, &found) ||
        !BSON_ITER_HOLDS_INT64(&found))
        die("bare mongo", "the request lacks an int64 field");
    bson_iter_overwrite_int64(&found, value);
}

/* The edit's findAndModify, returning the new document's ob and ik. */
static void bare_fair_loop(void *ctx, samples_t *lat, size_t *failures,
                           int64_t deadline)
{
    bare_fair_t *b = ctx;
    bson_iter_t it, mt;
    bson_error_t e;
    struct timespec now;

    while (mono_ns() < deadline) {
        bson_t reply;
        int64_t t0 = mono_ns();

        clock_gettime(CLOCK_REALTIME, &now);
        overwrite_int64(b->filter, "v", b->v);
        overwrite_int64(b->update, "$set.v", b->v + 1);
        overwrite_int64(b->update, "$set.data.n", b->v + 1);
        if (bson_iter_init(&it, b->update) &&
            bson_iter_find_descendant(&it, "$set.mt", &mt))
            bson_iter_overwrite_date_time(&mt, (int64_t)now.tv_sec * 1000 +
                                                   now.tv_nsec / 1000000);
        if (!mongoc_collection_find_and_modify(b->coll, b->filter, NULL,
                                               b->update, b->fields, false,
                                               false, true, &reply, &e) ||
            !bson_iter_init_find(&it, &reply, "value") ||
            !BSON_ITER_HOLDS_DOCUMENT(&it))
            (*failures)++;
        else
            b->v++;
        samples_add(lat, mono_ns() - t0);
        bson_destroy(&reply);
    }
}

static void bare_fair_close(bare_fair_t *b)
{
    bson_destroy(b->fields);
    bson_destroy(b->update);
    bson_destroy(b->filter);
    mongoc_collection_destroy(b->coll);
    mongoc_client_destroy(b->client);
}

/* One of several bare findAndModify writers of the same document, each
 * with a client of its own. */
typedef struct bare_writer {
    const char *uri;
    int64_t deadline;
    samples_t lat;
    size_t failures;
} bare_writer_t;

static void *bare_mongo_worker(void *arg)
{
    bare_writer_t *w = arg;
    bare_mongo_t b = {0};

    b.client = mongoc_client_new(w->uri);
    if (!b.client)
        die("bare mongo", "bad URI");
    b.coll = mongoc_client_get_collection(b.client, "syncd_bench", "bare");
    b.query = BCON_NEW("_id", BCON_UTF8("bare"));
    b.update = BCON_NEW("$inc", "{", "n", BCON_INT64(1), "}");
    bare_mongo_loop(&b, &w->lat, &w->failures, w->deadline);
    bare_mongo_close(&b);
    return NULL;
}

/* Runs `writers` bare findAndModify loops on the document that
 * bare_mongo_open() made, for seconds. */
static result_t run_bare_mongo_writers(const char *uri, int writers,
                                       double seconds)
{
    pthread_t threads[MAX_WRITERS];
    bare_writer_t w[MAX_WRITERS];
    samples_t all = {0};
    size_t failures = 0;
    int64_t t0 = mono_ns(), deadline = deadline_after(seconds);
    result_t r;

    for (int i = 0; i < writers; i++) {
        w[i] = (bare_writer_t){.uri = uri, .deadline = deadline};
        pthread_create(&threads[i], NULL, bare_mongo_worker, &w[i]);
    }
    for (int i = 0; i < writers; i++) {
        pthread_join(threads[i], NULL);
        for (size_t j = 0; j < w[i].lat.n; j++)
            samples_add(&all, w[i].lat.ns[j]);
        failures += w[i].failures;
        free(w[i].lat.ns);
    }
    r = summarise(&all, mono_ns() - t0, failures);
    free(all.ns);
    return r;
}

/* ---- One store of record ------------------------------------------------ */

/* Runs the 1-writer edit and both bare findAndModify loops for 3 x seconds
 * each, unmeasured: a server on the JVM (mongo-java-server) compiles its hot
 * paths in its first seconds of load, which would otherwise weigh on the
 * first rows only. */
static void warm_up(syncd_store_t *store, const char *mongo_uri, double seconds)
{
    bare_mongo_t b = {0};
    bare_fair_t f = {0};
    samples_t lat = {0};
    size_t failures = 0;

    if (seed_docs(store, "warmup", 1) != 0)
        exit(1);
    run_edits(store, "warmup", 1, 1, 3 * seconds);
    bare_fair_open(&f, mongo_uri, "syncd_bench", "warmup", "doc-0000");
    bare_fair_loop(&f, &lat, &failures, deadline_after(3 * seconds));
    bare_fair_close(&f);
    bare_mongo_open(&b, mongo_uri);
    bare_mongo_loop(&b, &lat, &failures, deadline_after(3 * seconds));
    bare_mongo_close(&b);
    free(lat.ns);
}

/* Runs the edit matrix, the cached-get loop and the overhead ratio on one
 * store of record; prints the rows and returns the ratio's results: the
 * edit's, and the bare peers' (RocksDB: one; MongoDB: the same request,
 * then $inc). */
static void bench_store(const char *mongo_uri, const char *dir, double seconds,
                        result_t *syncd, result_t bare[2])
{
    static const int writer_counts[] = {1, 8, 64};
    static const int doc_counts[] = {1, MANY_DOCS};
    syncd_store_options_t opts;
    syncd_store_t *store = NULL;
    syncd_doc_t *doc = NULL;
    syncd_error_t err;
    char path[4096];
    const char *kind;

    syncd_error_clear(&err);
    syncd_store_options_init(&opts);
    opts.mongo_uri = mongo_uri;
    opts.database = "syncd_bench";
    opts.data_dir = dir;
    opts.node_id = "bench";
    opts.tombstone_ttl_ms = 1; /* the purge row's tombstones are due at once */
    if (syncd_store_open(&store, &opts, &err) != 0)
        die("open store", err.message);
    kind = syncd_store_kind(store);
    if (mongo_uri != NULL)
        warm_up(store, mongo_uri, seconds);
    for (size_t d = 0; d < 2; d++) {
        char coll[32];

        snprintf(coll, sizeof(coll), "bench%d", doc_counts[d]);
        if (seed_docs(store, coll, doc_counts[d]) != 0)
            exit(1);
        for (size_t w = 0; w < 3; w++) {
            char what[64];
            result_t r = run_edits(store, coll, writer_counts[w], doc_counts[d],
                                   seconds);

            snprintf(what, sizeof(what), "edit, %d writer%s, %d doc%s",
                     writer_counts[w], writer_counts[w] > 1 ? "s" : "",
                     doc_counts[d], doc_counts[d] > 1 ? "s" : "");
            print_row(what, kind, r);
        }
    }
    print_row("cached get, 1 KB doc, 1 thread", kind,
              run_cached_gets(store, "bench1", seconds));
    if (mongo_uri == NULL) {
        get_ids_t ids = {malloc(GET_DOCS * sizeof(*ids.ids)), GET_DOCS};
        char what[64];
        double hit_pct;
        result_t r;

        if (!ids.ids)
            die("ids", "out of memory");
        for (int i = 0; i < GET_DOCS; i++)
            snprintf(ids.ids[i], sizeof(ids.ids[i]), "doc-%06d", i);
        seed_many(store, "bench100k", &ids);
        r = run_random_gets(store, "bench100k", &ids, seconds, &hit_pct);
        snprintf(what, sizeof(what), "get, 100k docs uniform (%.0f%% hits)",
                 hit_pct);
        print_row(what, kind, r);
        snprintf(what, sizeof(what), "purge, %d tombstones in 100k docs",
                 PURGE_TOMBS);
        print_row(what, kind, run_purge(store, "bench100k", &ids));
        free(ids.ids);
    }

    if (mongo_uri == NULL) {
        bare_rocks_t b = {0};

        if (syncd_store_get(store, &doc, "bench1", "doc-0000", &err) != 0)
            die("get", err.message);
        snprintf(path, sizeof(path), "%s-bare", dir);
        bare_rocks_open(&b, path, doc, opts.sync_writes);
        run_ratio(store, "bench1", &(bare_peer_t){bare_rocks_loop, &b}, 1,
                  seconds, syncd, bare);
        bare_rocks_close(&b);
        syncd_doc_free(doc);
        print_row("ratio: edit, 1 writer, 1 doc", kind, *syncd);
        print_row("ratio: bare get + put (fsync)", kind, bare[0]);
    } else {
        bare_mongo_t b = {0};
        bare_fair_t f = {0};
        syncd_store_stats_t before, after;

        bare_mongo_open(&b, mongo_uri);
        print_row("bare findAndModify $inc, 8 writers", kind,
                  run_bare_mongo_writers(mongo_uri, 8, seconds));
        bare_fair_open(&f, mongo_uri, opts.database, "bench1", "doc-0000");
        syncd_store_stats(store, &before);
        run_ratio(store, "bench1",
                  (bare_peer_t[]){{bare_fair_loop, &f}, {bare_mongo_loop, &b}},
                  2, seconds, syncd, bare);
        syncd_store_stats(store, &after);
        /* On stderr, out of the tables: how many of the ratio's edits
         * committed in one round trip from the node cache. */
        fprintf(stderr,
                "ratio edits committed from the node cache: %llu of %llu\n",
                (unsigned long long)(after.cas_fast - before.cas_fast),
                (unsigned long long)(after.edits - before.edits));
        bare_fair_close(&f);
        bare_mongo_close(&b);
        print_row("ratio: edit, 1 writer, 1 doc", kind, *syncd);
        print_row("ratio: bare findAndModify, same request", kind, bare[0]);
        print_row("ratio: bare findAndModify $inc", kind, bare[1]);
    }
    syncd_store_close(store);
}

static void print_ratio(const char *backend, result_t syncd, result_t bare)
{
    printf("| %-24s | %8.3f | %8.3f | %+7.1f%% |\n", backend, syncd.p50_ms,
           bare.p50_ms,
           bare.p50_ms > 0 ? (syncd.p50_ms / bare.p50_ms - 1) * 100 : 0);
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_store --data-dir DIR [--mongo-uri URI] "
                    "[--seconds S]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    const char *uri = NULL;
    double seconds = 2;
    char path[4096];
    result_t embedded, bare_r[2], mongo = {0}, bare_m[2] = {{0}};

    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--data-dir") == 0)
            dir = argv[i + 1];
        else if (strcmp(argv[i], "--mongo-uri") == 0)
            uri = argv[i + 1];
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = atof(argv[i + 1]);
        else
            usage();
    }
    if (!dir || argc % 2 == 0 || seconds <= 0)
        usage();
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        die(dir, strerror(errno));
    mongoc_init();

    printf("| what | backend | ops/s | p50 ms | p99 ms | failed | retries/op "
           "|\n");
    printf("|---|---|---:|---:|---:|---:|---:|\n");
    snprintf(path, sizeof(path), "%s/embedded", dir);
    bench_store(NULL, path, seconds, &embedded, bare_r);
    if (uri) {
        snprintf(path, sizeof(path), "%s/mongo", dir);
        bench_store(uri, path, seconds, &mongo, bare_m);
    }

    printf("\n| backend | syncd edit p50 ms (1 writer) | bare round trip p50 "
           "ms | overhead |\n|---|---:|---:|---:|\n");
    print_ratio("rocksdb", embedded, bare_r[0]);
    if (uri) {
        print_ratio("mongodb, same request", mongo, bare_m[0]);
        print_ratio("mongodb, $inc", mongo, bare_m[1]);
    }
    mongoc_cleanup();
    return 0;
}
