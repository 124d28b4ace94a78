/* backup.c - `syncd backup --data-dir D --out DIR`: a consistent RocksDB
 * checkpoint of a stopped node's embedded store.
 *
 * The checkpoint (rocksdb_checkpoint_create) hard-links the store's table
 * files into DIR/store when DIR is on the same file system, and copies
 * them otherwise, so it is quick and small whatever the store's size; a
 * node started with --data-dir DIR (or a copy of DIR) serves exactly what
 * the store held. The event log (D/events) is not part of it: a node
 * started from the checkpoint begins a new event history.
 *
 * RocksDB lets one process open a store at a time. When the node runs,
 * the open fails on the store's lock, and the command names the node's pid
 * and the way to take the checkpoint through it instead
 * (`syncctl checkpoint DIR`, POST /v1/admin/checkpoint?dir=DIR).
 */
#include "backup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "syncd/store.h"

/* Reads the pid written in D/syncd.lock into pid (size bytes); "unknown"
 * when there is none. */
static void lock_holder(char *pid, size_t size, const char *data_dir)
{
    char path[4096];
    FILE *f;

    snprintf(pid, size, "unknown");
    snprintf(path, sizeof(path), "%s/syncd.lock", data_dir);
    f = fopen(path, "r");
    if (f == NULL)
        return;
    if (fgets(pid, (int)size, f) == NULL)
        snprintf(pid, size, "unknown");
    pid[strcspn(pid, "\n")] = '\0';
    fclose(f);
}

/* Reads `--name V` or `--name=V` at argv[*i] into *out; 1 when it matched,
 * -1 when the value is missing, 0 when argv[*i] is another flag. */
static int flag_value(const char **out, int argc, char **argv, int *i,
                      const char *name)
{
    size_t n = strlen(name);

    if (strncmp(argv[*i], name, n) != 0)
        return 0;
    if (argv[*i][n] == '=') {
        *out = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n] != '\0')
        return 0;
    if (*i + 1 >= argc)
        return -1;
    *out = argv[++*i];
    return 1;
}

int syncd_backup_main(int argc, char **argv)
{
    const char *data_dir = NULL, *out = NULL;
    char src[4096], dst[4096], pid[32];
    syncd_store_options_t so;
    syncd_store_t *store = NULL;
    syncd_error_t err;
    struct stat st;
    json_t *o;
    char *text;
    int rc;

    for (int i = 1; i < argc; i++) {
        int m = flag_value(&data_dir, argc, argv, &i, "--data-dir");

        if (m == 0)
            m = flag_value(&out, argc, argv, &i, "--out");
        if (m != 1) {
            fprintf(stderr, "usage: syncd backup --data-dir D --out DIR\n"
                            "  writes DIR/store, a RocksDB checkpoint of the "
                            "embedded store in D/store\n");
            return 2;
        }
    }
    if (data_dir == NULL || out == NULL) {
        fprintf(stderr, "usage: syncd backup --data-dir D --out DIR\n");
        return 2;
    }
    snprintf(src, sizeof(src), "%s/store", data_dir);
    snprintf(dst, sizeof(dst), "%s/store", out);
    if (stat(src, &st) != 0) {
        fprintf(stderr,
                "syncd backup: --data-dir %s holds no embedded store "
                "(%s: %s)\n",
                data_dir, src, strerror(errno));
        return 1;
    }
    if (stat(out, &st) == 0 || errno != ENOENT) {
        fprintf(stderr, "syncd backup: --out %s already exists\n", out);
        return 1;
    }
    syncd_error_clear(&err);
    syncd_store_options_init(&so);
    so.data_dir = src;
    rc = syncd_store_open(&store, &so, &err);
    if (rc != 0 && strstr(err.message, "lock") != NULL) {
        lock_holder(pid, sizeof(pid), data_dir);
        fprintf(stderr,
                "syncd backup: --data-dir %s is in use by a running syncd "
                "(pid %s); take the checkpoint through it: syncctl --server "
                "URL checkpoint %s (POST /v1/admin/checkpoint?dir=...)\n",
                data_dir, pid, out);
        return 1;
    }
    if (rc == 0 && mkdir(out, 0755) != 0)
        rc = syncd_error_set(&err, SYNCD_EINVAL, "cannot create '%s': %s", out,
                             strerror(errno));
    if (rc == 0)
        rc = syncd_store_checkpoint(store, dst, &err);
    syncd_store_close(store);
    if (rc != 0) {
        fprintf(stderr, "syncd backup: %s\n", err.message);
        return 1;
    }
    o = json_pack("{s:s, s:s}", "data_dir", data_dir, "out", out);
    text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    if (text != NULL)
        printf("%s\n", text);
    free(text);
    json_decref(o);
    return 0;
}
