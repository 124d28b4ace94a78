/* backup_seed.c - fills a store of record with N documents of about SIZE
 * bytes each, for tests and benchmarks of backups (tests/test_backup.sh,
 * bench/backup/run.sh); not installed.
 *
 *   backup_seed DATA_DIR COLL N SIZE      a stopped node's embedded store
 *   backup_seed MONGO_URI COLL N SIZE     database syncd of a MongoDB server
 *
 * Writes COLL/doc-000000 ... each {"i": i, "pad": "<SIZE - 32 bytes>"} at
 * version 1, so that a 100,000-document collection is made in seconds
 * instead of through 100,000 HTTP requests: through the store library (no
 * fsync per commit) into DATA_DIR/store, or inserted 1,000 records at a
 * time in the record layout of DESIGN.md section 2 ({_id, v, data, h, mt,
 * by, del}, hashes from syncd_json_hash()) into MongoDB, bypassing the
 * commit chain that makes single writes slow on FerretDB. Exit status:
 * 0 done, 1 a write failed, 2 usage.
 */
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "syncd/store.h"

#define BATCH 1000

/* Returns the body of document i (a new reference). */
static json_t *body_of(long i, const char *pad)
{
    return json_pack("{s:I, s:s}", "i", (json_int_t)i, "pad", pad);
}

static int seed_rocks(const char *data_dir, const char *coll, long n,
                      const char *pad)
{
    syncd_store_options_t so;
    syncd_store_t *store = NULL;
    syncd_error_t err;
    char dir[4096], id[32];
    int rc;

    snprintf(dir, sizeof(dir), "%s/store", data_dir);
    syncd_error_clear(&err);
    syncd_store_options_init(&so);
    so.data_dir = dir;
    so.sync_writes = 0;
    rc = syncd_store_open(&store, &so, &err);
    for (long i = 0; rc == 0 && i < n; i++) {
        json_t *body = body_of(i, pad);
        syncd_change_t *change = NULL;

        snprintf(id, sizeof(id), "doc-%06ld", i);
        rc = body != NULL ? syncd_store_put(store, &change, coll, id, body,
                                            SYNCD_ANY_VERSION, &err)
                          : SYNCD_ENOMEM;
        syncd_change_free(change);
        json_decref(body);
    }
    if (rc != 0)
        fprintf(stderr, "backup_seed: %s\n", err.message);
    syncd_store_close(store);
    return rc != 0;
}

static int seed_mongo(const char *uri, const char *coll, long n,
                      const char *pad)
{
    mongoc_client_t *client;
    mongoc_collection_t *c;
    bson_t *docs[BATCH];
    bson_error_t e;
    char id[32], hash[SYNCD_HASH_HEX_LEN + 1];
    int64_t now = (int64_t)time(NULL) * 1000;
    int failed = 0;

    mongoc_init();
    client = mongoc_client_new(uri);
    if (client == NULL) {
        fprintf(stderr, "backup_seed: bad URI %s\n", uri);
        return 1;
    }
    c = mongoc_client_get_collection(client, "syncd", coll);
    for (long i = 0; !failed && i < n; i += BATCH) {
        size_t k = 0;

        for (; k < BATCH && i + (long)k < n; k++) {
            json_t *body = body_of(i + (long)k, pad);

            syncd_json_hash(hash, body, NULL);
            json_decref(body);
            snprintf(id, sizeof(id), "doc-%06ld", i + (long)k);
            docs[k] =
                BCON_NEW("_id", BCON_UTF8(id), "v", BCON_INT64(1), "data", "{",
                         "i", BCON_INT64(i + (long)k), "pad", BCON_UTF8(pad),
                         "}", "h", BCON_UTF8(hash), "mt", BCON_INT64(now), "by",
                         BCON_UTF8("seed"), "del", BCON_BOOL(false));
        }
        if (!mongoc_collection_insert_many(c, (const bson_t **)docs, k, NULL,
                                           NULL, &e)) {
            fprintf(stderr, "backup_seed: insert: %s\n", e.message);
            failed = 1;
        }
        for (size_t j = 0; j < k; j++)
            bson_destroy(docs[j]);
    }
    mongoc_collection_destroy(c);
    mongoc_client_destroy(client);
    mongoc_cleanup();
    return failed;
}

int main(int argc, char **argv)
{
    char *pad;
    long n, size;
    int rc;

    if (argc != 5 || (n = atol(argv[3])) < 1 || (size = atol(argv[4])) < 40) {
        fprintf(stderr, "usage: backup_seed DATA_DIR|MONGO_URI COLL N SIZE\n");
        return 2;
    }
    pad = malloc((size_t)size - 31);
    if (pad == NULL)
        return 1;
    memset(pad, 'x', (size_t)size - 32);
    pad[size - 32] = '\0';
    rc = strncmp(argv[1], "mongodb://", 10) == 0
             ? seed_mongo(argv[1], argv[2], n, pad)
             : seed_rocks(argv[1], argv[2], n, pad);
    free(pad);
    return rc;
}
