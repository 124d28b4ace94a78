/* bench_store.c - edit and read throughput of the store library, next to
 * the bare cost of its backends.
 *
 * For each store of record (the embedded RocksDB default, and MongoDB when
 * --mongo-uri is given) it runs the edit loop through the public
 * syncd_store_* API with 1, 8 and 64 concurrent writers on one document and
 * on 1,000 documents (1 KB bodies, each edit increments a counter field)
 * and reports edits/s with p50/p99 latency, then cached gets of a 1 KB
 * document on one thread. In the same run it measures the bare backend
 * round trip the edit path is built on: a findAndModify ($inc) loop with
 * mongo-c-driver against the same server, and a RocksDB get + put loop
 * with the same fsync setting, so syncd's overhead reads as a ratio.
 *
 * Usage: bench_store --data-dir DIR [--mongo-uri URI] [--seconds S]
 * (bench/storage/run.sh starts a FerretDB and runs it).
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

#include "syncd/store.h"

#define BODY_BYTES 1024
#define MAX_WRITERS 64
#define MANY_DOCS 1000

typedef struct samples {
    int64_t *ns;
    size_t n, cap;
} samples_t;

typedef struct result {
    double per_sec;
    double p50_ms, p99_ms;
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

static int64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void samples_add(samples_t *s, int64_t ns)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->ns = realloc(s->ns, s->cap * sizeof(*s->ns));
        if (!s->ns) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
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
    printf("| %-34s | %-8s | %10.0f | %8.3f | %8.3f | %6zu |\n", what, backend,
           r.per_sec, r.p50_ms, r.p99_ms, r.failures);
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

static result_t run_edits(syncd_store_t *store, const char *coll, int writers,
                          int ndocs, double seconds)
{
    pthread_t threads[MAX_WRITERS];
    edit_run_t runs[MAX_WRITERS];
    samples_t all = {0};
    size_t failures = 0;
    int64_t start = mono_ns();
    int64_t deadline = start + (int64_t)(seconds * 1e9);

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
    free(all.ns);
    return r;
}

static result_t run_cached_gets(syncd_store_t *store, const char *coll,
                                double seconds)
{
    samples_t lat = {0};
    size_t failures = 0;
    int64_t start = mono_ns();
    int64_t deadline = start + (int64_t)(seconds * 1e9);

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

/* Runs the edit matrix and the cached-get loop on one store of record;
 * returns the 1-writer, 1-document edit result. */
static result_t bench_store(const char *mongo_uri, const char *dir,
                            double seconds)
{
    static const int writer_counts[] = {1, 8, 64};
    static const int doc_counts[] = {1, MANY_DOCS};
    syncd_store_options_t opts;
    syncd_store_t *store = NULL;
    syncd_error_t err;
    result_t first = {0};
    const char *kind;

    syncd_error_clear(&err);
    syncd_store_options_init(&opts);
    opts.mongo_uri = mongo_uri;
    opts.database = "syncd_bench";
    opts.data_dir = dir;
    opts.node_id = "bench";
    if (syncd_store_open(&store, &opts, &err) != 0) {
        fprintf(stderr, "open store: %s\n", err.message);
        exit(1);
    }
    kind = syncd_store_kind(store);
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
            if (d == 0 && w == 0)
                first = r;
        }
    }
    print_row("cached get, 1 KB doc, 1 thread", kind,
              run_cached_gets(store, "bench1", seconds));
    syncd_store_close(store);
    return first;
}

/* A bare findAndModify {$inc: {n: 1}} loop on one 1 KB document. */
static result_t bare_mongo(const char *uri, double seconds)
{
    mongoc_client_t *client;
    mongoc_collection_t *c;
    bson_t *query = BCON_NEW("_id", BCON_UTF8("bare"));
    bson_t *update = BCON_NEW("$inc", "{", "n", BCON_INT64(1), "}");
    bson_t doc = BSON_INITIALIZER;
    char pad[BODY_BYTES - 64];
    bson_error_t e;
    samples_t lat = {0};
    size_t failures = 0;

    mongoc_init();
    client = mongoc_client_new(uri);
    c = mongoc_client_get_collection(client, "syncd_bench", "bare");
    mongoc_collection_drop(c, NULL);
    memset(pad, 'x', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    BSON_APPEND_UTF8(&doc, "_id", "bare");
    BSON_APPEND_INT64(&doc, "n", 0);
    BSON_APPEND_UTF8(&doc, "pad", pad);
    if (!mongoc_collection_insert_one(c, &doc, NULL, NULL, &e)) {
        fprintf(stderr, "bare insert: %s\n", e.message);
        exit(1);
    }
    int64_t start = mono_ns();
    int64_t deadline = start + (int64_t)(seconds * 1e9);
    while (mono_ns() < deadline) {
        bson_t reply;
        int64_t t0 = mono_ns();

        if (!mongoc_collection_find_and_modify(c, query, NULL, update, NULL,
                                               false, false, true, &reply, &e))
            failures++;
        samples_add(&lat, mono_ns() - t0);
        bson_destroy(&reply);
    }
    result_t r = summarise(&lat, mono_ns() - start, failures);
    free(lat.ns);
    bson_destroy(&doc);
    bson_destroy(update);
    bson_destroy(query);
    mongoc_collection_destroy(c);
    mongoc_client_destroy(client);
    return r;
}

/* A bare RocksDB get + put loop on one 1 KB value, fsync per put as the
 * embedded store's default sync_writes. */
static result_t bare_rocks(const char *dir, double seconds)
{
    rocksdb_options_t *opts = rocksdb_options_create();
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    char value[BODY_BYTES];
    char *errptr = NULL;
    samples_t lat = {0};
    size_t failures = 0;
    rocksdb_t *db;

    rocksdb_options_set_create_if_missing(opts, 1);
    rocksdb_writeoptions_set_sync(wo, 1);
    db = rocksdb_open(opts, dir, &errptr);
    if (!db) {
        fprintf(stderr, "bare rocksdb open %s: %s\n", dir, errptr);
        exit(1);
    }
    memset(value, 'x', sizeof(value));
    rocksdb_put(db, wo, "bare", 4, value, sizeof(value), &errptr);
    int64_t start = mono_ns();
    int64_t deadline = start + (int64_t)(seconds * 1e9);
    while (mono_ns() < deadline) {
        size_t len = 0;
        int64_t t0 = mono_ns();
        char *got = rocksdb_get(db, ro, "bare", 4, &len, &errptr);

        if (got) {
            got[0]++;
            rocksdb_put(db, wo, "bare", 4, got, len, &errptr);
        }
        samples_add(&lat, mono_ns() - t0);
        if (!got || errptr) {
            failures++;
            rocksdb_free(errptr);
            errptr = NULL;
        }
        rocksdb_free(got);
    }
    result_t r = summarise(&lat, mono_ns() - start, failures);
    free(lat.ns);
    rocksdb_close(db);
    rocksdb_readoptions_destroy(ro);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_options_destroy(opts);
    return r;
}

static void print_ratio(const char *backend, result_t syncd, result_t bare)
{
    printf("| %-8s | %8.3f | %8.3f | %+7.1f%% |\n", backend, syncd.p50_ms,
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
    result_t embedded, mongo = {0}, bare_r, bare_m = {0};

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
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "mkdir %s: %s\n", dir, strerror(errno));
        return 1;
    }

    printf("| what | backend | ops/s | p50 ms | p99 ms | failed |\n");
    printf("|---|---|---:|---:|---:|---:|\n");
    snprintf(path, sizeof(path), "%s/bare-rocks", dir);
    bare_r = bare_rocks(path, seconds);
    print_row("bare get + put (fsync)", "rocksdb", bare_r);
    if (uri) {
        bare_m = bare_mongo(uri, seconds);
        print_row("bare findAndModify $inc", "mongodb", bare_m);
    }
    snprintf(path, sizeof(path), "%s/embedded", dir);
    embedded = bench_store(NULL, path, seconds);
    if (uri) {
        snprintf(path, sizeof(path), "%s/mongo", dir);
        mongo = bench_store(uri, path, seconds);
    }

    printf("\n| backend | syncd edit p50 ms (1 writer) | bare round trip p50 "
           "ms | overhead |\n|---|---:|---:|---:|\n");
    print_ratio("rocksdb", embedded, bare_r);
    if (uri)
        print_ratio("mongodb", mongo, bare_m);
    return 0;
}
