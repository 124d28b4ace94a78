/* backup_seed.c - fills a stopped node's embedded store with N documents of
 * about SIZE bytes each, for tests and benchmarks of backups
 * (tests/test_backup.sh, bench/backup/run.sh); not installed.
 *
 *   backup_seed DATA_DIR COLL N SIZE
 *
 * Writes COLL/doc-000000 ... through the store library (no fsync per
 * commit), each {"i": i, "pad": "<SIZE - 32 bytes>"}, so that a 100,000
 * document collection is made in seconds instead of through 100,000 HTTP
 * requests. Exit status: 0 done, 1 a write failed, 2 usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "syncd/store.h"

int main(int argc, char **argv)
{
    syncd_store_options_t so;
    syncd_store_t *store = NULL;
    syncd_error_t err;
    char dir[4096], id[32], *pad;
    long n, size;
    int rc;

    if (argc != 5 || (n = atol(argv[3])) < 1 || (size = atol(argv[4])) < 40) {
        fprintf(stderr, "usage: backup_seed DATA_DIR COLL N SIZE\n");
        return 2;
    }
    snprintf(dir, sizeof(dir), "%s/store", argv[1]);
    pad = malloc((size_t)size - 31);
    if (pad == NULL)
        return 1;
    memset(pad, 'x', (size_t)size - 32);
    pad[size - 32] = '\0';
    syncd_error_clear(&err);
    syncd_store_options_init(&so);
    so.data_dir = dir;
    so.sync_writes = 0;
    rc = syncd_store_open(&store, &so, &err);
    for (long i = 0; rc == 0 && i < n; i++) {
        json_t *body = json_pack("{s:I, s:s}", "i", (json_int_t)i, "pad", pad);
        syncd_change_t *change = NULL;

        snprintf(id, sizeof(id), "doc-%06ld", i);
        rc = body != NULL ? syncd_store_put(store, &change, argv[2], id, body,
                                            SYNCD_ANY_VERSION, &err)
                          : SYNCD_ENOMEM;
        syncd_change_free(change);
        json_decref(body);
    }
    if (rc != 0)
        fprintf(stderr, "backup_seed: %s\n", err.message);
    syncd_store_close(store);
    free(pad);
    return rc != 0 ? 1 : 0;
}
