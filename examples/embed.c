/* embed.c - embedding the syncd store library in a C server.
 *
 * Opens the embedded default (a RocksDB store of record in the directory
 * given as the first argument), creates a volume collection document,
 * edits it through the compare-and-swap edit loop, applies a JSON Patch,
 * and prints each committed change as the change bus would carry it.
 * With a MongoDB URI as the second argument it uses MongoDB as the store
 * of record and the directory as the node cache.
 */
#include <stdio.h>
#include <stdlib.h>

#include <syncd/store.h>

/* The edit callback: bump the size of one volume on a private copy. */
static int grow_volume(json_t *body, void *arg, syncd_error_t *err)
{
    json_t *vol = json_object_get(json_object_get(body, "volumes"), "hg38");
    json_int_t size = json_integer_value(json_object_get(vol, "size"));

    (void)arg;
    if (vol == NULL)
        return syncd_error_set(err, SYNCD_ENOTFOUND, "no volume hg38");
    return json_object_set_new(vol, "size", json_integer(size + 10)) == 0
               ? 0
               : SYNCD_ENOMEM;
}

/* Prints one committed change: op, version, and its RFC 6902 patch. */
static void print_change(const syncd_change_t *change)
{
    char *patch = json_dumps(change->patch, JSON_COMPACT);

    printf("%s v%lld (base %lld): %s\n", syncd_change_op_name(change->op),
           (long long)change->doc->version, (long long)change->base,
           patch != NULL ? patch : "null");
    free(patch);
}

int main(int argc, char **argv)
{
    syncd_store_options_t opts;
    syncd_store_t *store = NULL;
    syncd_change_t *change = NULL;
    syncd_error_t err;
    json_t *body = NULL, *patch = NULL;
    int rc = 1;

    if (argc < 2) {
        fprintf(stderr, "usage: %s DATA_DIR [MONGO_URI]\n", argv[0]);
        return 2;
    }
    syncd_error_clear(&err);
    syncd_store_options_init(&opts);
    opts.data_dir = argv[1];
    opts.mongo_uri = argc > 2 ? argv[2] : NULL;
    if (syncd_store_open(&store, &opts, &err) != 0)
        goto cleanup;

    body = json_pack("{s:s, s:s, s:{s:{s:s, s:i}}}", "kind", "VolumeCollection",
                     "name", "refs", "volumes", "hg38", "path", "hg38", "size",
                     3210);
    if (syncd_store_put(store, &change, "volumes", "refs", body,
                        SYNCD_ANY_VERSION, &err) != 0)
        goto cleanup;
    print_change(change);
    syncd_change_free(change);
    change = NULL;

    if (syncd_store_edit(store, &change, "volumes", "refs", grow_volume, NULL,
                         SYNCD_ANY_VERSION, &err) != 0)
        goto cleanup;
    print_change(change);
    syncd_change_free(change);
    change = NULL;

    patch = json_loads("[{\"op\":\"add\",\"path\":\"/volumes/hg38/files\","
                       "\"value\":25}]",
                       0, NULL);
    if (syncd_store_patch(store, &change, "volumes", "refs", patch, 0,
                          SYNCD_ANY_VERSION, &err) != 0)
        goto cleanup;
    print_change(change);
    rc = 0;

cleanup:
    if (rc != 0)
        fprintf(stderr, "error: %s: %s\n", syncd_strerror(err.code),
                err.message);
    syncd_change_free(change);
    json_decref(patch);
    json_decref(body);
    syncd_store_close(store);
    return rc;
}
