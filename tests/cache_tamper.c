/* cache_tamper.c - changes one record of a stopped node's cache, or of a
 * stopped embedded store, behind its back, for tests only
 * (tests/test_verify.sh, tests/test_atstart.sh); not installed.
 *
 * A syncd started with --keep-cache keeps its cache in DATA_DIR/store/cache
 * across a clean restart; in the embedded default DATA_DIR/store is the
 * store of record itself (--embedded). This tool opens that RocksDB while
 * the node is stopped and rewrites the record of COLL/ID in place, in the
 * record layout of storage/record.c, keeping everything else:
 *
 *   cache_tamper [--embedded] DATA_DIR COLL ID body
 *       sets the body's member "tampered" to true, keeping the version and
 *       the stored content hash (which no longer matches the body);
 *   cache_tamper [--embedded] DATA_DIR COLL ID version N
 *       sets the version to N, keeping the body and its hash;
 *   cache_tamper [--embedded] DATA_DIR COLL ID set POINTER JSON
 *       replaces the value at POINTER in the body by JSON, keeping the
 *       version and the stored content hash.
 *
 * Exit status: 0 done, 1 the record is missing or cannot be rewritten,
 * 2 usage.
 */
#define _GNU_SOURCE /* asprintf */
#include <errno.h>
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/internal.h"

static int usage(void)
{
    fprintf(stderr,
            "usage: cache_tamper [--embedded] DATA_DIR COLL ID body\n"
            "       cache_tamper [--embedded] DATA_DIR COLL ID version N\n"
            "       cache_tamper [--embedded] DATA_DIR COLL ID set POINTER "
            "JSON\n");
    return 2;
}

/* Applies the change named by argv to doc; -1 when argv names none. */
static int tamper(syncd_doc_t *doc, int argc, char **argv)
{
    json_t *body;
    char *end;
    long long v;

    if (argc == 5 && strcmp(argv[4], "body") == 0) {
        body = json_deep_copy(doc->body);
        if (body == NULL || json_object_set_new(body, "tampered", json_true()))
            return -1;
        json_decref(doc->body);
        doc->body = body;
        return 0;
    }
    if (argc == 7 && strcmp(argv[4], "set") == 0) {
        json_t *value = json_loads(argv[6], JSON_DECODE_ANY, NULL);
        json_t *patch = json_pack("[{s:s, s:s, s:o}]", "op", "replace", "path",
                                  argv[5], "value", value);
        int rc = patch != NULL
                     ? syncd_patch_apply(&body, doc->body, patch, NULL)
                     : -1;

        json_decref(patch);
        if (rc != 0)
            return -1;
        json_decref(doc->body);
        doc->body = body;
        return 0;
    }
    if (argc == 6 && strcmp(argv[4], "version") == 0) {
        errno = 0;
        v = strtoll(argv[5], &end, 10);
        if (*end != '\0' || errno != 0 || v < 1)
            return -1;
        doc->version = v;
        return 0;
    }
    return -1;
}

int main(int argc, char **argv)
{
    rocksdb_options_t *options = rocksdb_options_create();
    rocksdb_readoptions_t *read = rocksdb_readoptions_create();
    rocksdb_writeoptions_t *write = rocksdb_writeoptions_create();
    rocksdb_t *db = NULL;
    syncd_doc_t *doc = NULL;
    char *errptr = NULL, *val = NULL, *rec = NULL, *dir = NULL;
    size_t vlen = 0, rlen = 0;
    syncd_reckey_t k;
    const char *sub = "store/cache";
    int rc = 1;

    if (argc > 1 && strcmp(argv[1], "--embedded") == 0) {
        sub = "store";
        argv++;
        argc--;
    }
    if (argc < 5 || argc > 7) {
        rc = usage();
        goto cleanup;
    }
    if (syncd_reckey_make(&k, argv[2], argv[3], NULL) != 0 ||
        asprintf(&dir, "%s/%s", argv[1], sub) < 0) {
        dir = NULL;
        fprintf(stderr, "cache_tamper: bad collection or id\n");
        goto cleanup;
    }
    db = rocksdb_open(options, dir, &errptr);
    if (errptr == NULL)
        val = rocksdb_get(db, read, k.bytes, k.len, &vlen, &errptr);
    if (errptr != NULL || val == NULL) {
        fprintf(stderr, "cache_tamper: %s: %s/%s: %s\n", dir, argv[2], argv[3],
                errptr != NULL ? errptr : "not cached");
        goto cleanup;
    }
    if (syncd_record_decode(&doc, argv[2], argv[3], val, vlen, 1, NULL) != 0 ||
        doc->deleted) {
        fprintf(stderr, "cache_tamper: %s/%s is no live record\n", argv[2],
                argv[3]);
        goto cleanup;
    }
    if (tamper(doc, argc, argv) != 0) {
        rc = usage();
        goto cleanup;
    }
    if (syncd_record_encode(&rec, &rlen, doc, 0, NULL, 0, NULL) != 0) {
        fprintf(stderr, "cache_tamper: cannot encode %s/%s\n", argv[2],
                argv[3]);
        goto cleanup;
    }
    rocksdb_put(db, write, k.bytes, k.len, rec, rlen, &errptr);
    if (errptr != NULL) {
        fprintf(stderr, "cache_tamper: put: %s\n", errptr);
        goto cleanup;
    }
    rc = 0;
cleanup:
    rocksdb_free(errptr);
    rocksdb_free(val);
    free(rec);
    free(dir);
    syncd_doc_free(doc);
    if (db != NULL)
        rocksdb_close(db);
    rocksdb_writeoptions_destroy(write);
    rocksdb_readoptions_destroy(read);
    rocksdb_options_destroy(options);
    return rc;
}
