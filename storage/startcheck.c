/* startcheck.c - digests written at a clean close, checked at the next open.
 *
 * At a clean close the store writes, next to its data (data_dir/
 * digests.json), the digest (DESIGN.md section 6) of each collection: the
 * embedded store of record over its live documents, a kept node cache over
 * its own live records. At the next open the file is read and removed at
 * once, so that a run that does not close cleanly leaves none behind and
 * the open after it knows (no file: nothing to compare with, the digests
 * are only recomputed). The check then recomputes every digest from the
 * records' ids, versions and hashes and, in full mode, rehashes every body
 * against its stored hash: the embedded store with syncd_store_verify_ex()
 * (the code behind POST .../verify), the cache by walking its records.
 *
 * A difference from the file means the data changed while the store was
 * closed (a copied-in checkpoint, a hand edit, a disk fault); a body that
 * does not match its hash is corruption. The embedded store of record is
 * the truth, so nothing is changed here: the report names the collections
 * and ids for the daemon to refuse or repair. A node cache is only a
 * cache: one that fails is dropped whole and refilled from the store.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* Most ids named per collection. */
#define MAX_BAD 1000

static const char *const mode_names[] = {"auto", "off", "digests", "full"};

/* Sums the sizes of the regular files under dir (symlinks not followed). */
static uint64_t dir_bytes(const char *dir, int depth)
{
    struct dirent *de;
    uint64_t total = 0;
    DIR *d = opendir(dir);

    if (d == NULL)
        return 0;
    while ((de = readdir(d)) != NULL) {
        char path[4096];
        struct stat st;

        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
            (size_t)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >=
                sizeof(path) ||
            lstat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode) && depth < 4)
            total += dir_bytes(path, depth + 1);
        else if (S_ISREG(st.st_mode))
            total += (uint64_t)st.st_size;
    }
    closedir(d);
    return total;
}

/* Flushes dir's entries (a rename or unlink in it) to disk. */
static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static int file_path(char *buf, size_t size, const syncd_store_t *store,
                     const char *suffix, syncd_error_t *err)
{
    if ((size_t)snprintf(buf, size, "%s/%s%s", syncd_store_data_dir(store),
                         SYNCD_DIGESTS_FILE, suffix) >= size)
        return syncd_error_set(err, SYNCD_EINVAL, "data_dir is too long");
    return 0;
}

/* Sets *out to a new object {C: {"count","digest"}} of every collection of
 * the embedded store of record, each paged through the store. */
static int store_digests(syncd_store_t *store, json_t **out, syncd_error_t *err)
{
    json_t *names = NULL, *name;
    size_t i;
    int rc;

    *out = json_object();
    if (*out == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    rc = syncd_store_collections(store, &names, err);
    json_array_foreach (names, i, name) {
        syncd_range_digest_t rd;

        if (rc != 0)
            break;
        rc = syncd_store_digest_range(store, &rd, json_string_value(name),
                                      SYNCD_VIEW_STORE, NULL, NULL, 0, err);
        if (rc == 0 &&
            json_object_set_new(*out, json_string_value(name),
                                json_pack("{s:I, s:s}", "count",
                                          (json_int_t)rd.digest.count, "digest",
                                          rd.digest.hex)) != 0)
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        syncd_range_digest_clear(&rd);
    }
    json_decref(names);
    if (rc != 0) {
        json_decref(*out);
        *out = NULL;
    }
    return rc;
}

/* Writes text to path through path.tmp, fsynced, then renamed. */
static int write_atomic(const syncd_store_t *store, const char *text,
                        syncd_error_t *err)
{
    char path[4096], tmp[4096];
    size_t len = strlen(text), done = 0;
    int rc = file_path(path, sizeof(path), store, "", err);
    int fd;

    if (rc == 0)
        rc = file_path(tmp, sizeof(tmp), store, ".tmp", err);
    if (rc != 0)
        return rc;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return syncd_error_set(err, SYNCD_EBACKEND, "cannot write %s: %s", tmp,
                               strerror(errno));
    while (done < len) {
        ssize_t n = write(fd, text + done, len - done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += (size_t)n;
    }
    if (done < len || fsync(fd) != 0)
        rc = syncd_error_set(err, SYNCD_EBACKEND, "cannot write %s: %s", tmp,
                             strerror(errno));
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = syncd_error_set(err, SYNCD_EBACKEND, "cannot rename %s: %s", tmp,
                             strerror(errno));
    if (rc != 0)
        unlink(tmp);
    else
        sync_dir(syncd_store_data_dir(store));
    return rc;
}

/* Writes the current UTC time as 2026-11-30T12:00:00.123Z into buf. */
static void utc_now(char buf[32])
{
    struct timespec ts;
    char secs[24];
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(secs, sizeof(secs), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, 32, "%.20s.%03dZ", secs, (int)(ts.tv_nsec / 1000000));
}

int syncd_store_save_digests(syncd_store_t *store, syncd_error_t *err)
{
    syncd_cache_t *cache = syncd_store_cache_of(store);
    json_t *colls = NULL, *doc;
    uint64_t bodies = 0;
    char now[32], *text;
    int rc;

    if (cache != NULL && !syncd_cache_keeps(cache))
        return 0;
    rc = cache != NULL ? syncd_cache_check(cache, &colls, NULL, 0, &bodies, err)
                       : store_digests(store, &colls, err);
    if (rc != 0)
        return rc;
    utc_now(now);
    doc = json_pack("{s:i, s:s, s:s, s:o}", "format", SYNCD_DIGESTS_FORMAT,
                    "kind", cache != NULL ? "cache" : "rocksdb", "written", now,
                    "collections", colls);
    text = doc != NULL ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    rc = text != NULL ? write_atomic(store, text, err)
                      : syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    free(text);
    json_decref(doc);
    return rc;
}

/* Reads and removes the digests file of the last clean close: a new
 * reference to its "collections" object, its time in *written (a new
 * reference), or NULL for both when there is none, or it is of another
 * format or kind (then it cannot vouch for this data). */
static json_t *take_digests(syncd_store_t *store, const char *kind,
                            json_t **written)
{
    char path[4096];
    json_t *f, *colls = NULL;
    const char *k;

    *written = NULL;
    if (file_path(path, sizeof(path), store, "", NULL) != 0)
        return NULL;
    f = json_load_file(path, 0, NULL);
    if (unlink(path) == 0)
        sync_dir(syncd_store_data_dir(store));
    if (json_integer_value(json_object_get(f, "format")) ==
            SYNCD_DIGESTS_FORMAT &&
        json_is_string(json_object_get(f, "written")) &&
        (k = json_string_value(json_object_get(f, "kind"))) != NULL &&
        strcmp(k, kind) == 0 &&
        json_is_object(json_object_get(f, "collections"))) {
        colls = json_incref(json_object_get(f, "collections"));
        *written = json_incref(json_object_get(f, "written"));
    }
    json_decref(f);
    return colls;
}

/* Appends {"coll","count","digest","shutdown_count","shutdown_digest"}
 * to changed; now and then are {"count","digest"} entries (NULL: the
 * collection is missing on that side, so empty). */
static int add_changed(json_t *changed, const char *coll, const json_t *now,
                       const json_t *then, const char *empty)
{
    const char *d = json_string_value(json_object_get(now, "digest"));
    const char *sd = json_string_value(json_object_get(then, "digest"));

    return json_array_append_new(
        changed,
        json_pack("{s:s, s:I, s:s, s:I, s:s}", "coll", coll, "count",
                  json_integer_value(json_object_get(now, "count")), "digest",
                  now != NULL && d != NULL ? d : empty, "shutdown_count",
                  json_integer_value(json_object_get(then, "count")),
                  "shutdown_digest", then != NULL && sd != NULL ? sd : empty));
}

/* Appends to changed each collection whose {count, digest} in now differs
 * from then's (a collection missing from one side counts as empty). */
static int compare(json_t *changed, const json_t *now, const json_t *then)
{
    syncd_merkle_t m;
    syncd_digest_t empty;
    const char *coll;
    json_t *a, *b;

    syncd_merkle_init(&m);
    syncd_merkle_final(&m, &empty);
    json_object_foreach ((json_t *)now, coll, a) {
        b = json_object_get(then, coll);
        if ((b != NULL && json_equal(a, b)) ||
            (b == NULL && json_integer_value(json_object_get(a, "count")) == 0))
            continue;
        if (add_changed(changed, coll, a, b, empty.hex) != 0)
            return SYNCD_ENOMEM;
    }
    json_object_foreach ((json_t *)then, coll, b) {
        if (json_object_get(now, coll) != NULL ||
            json_integer_value(json_object_get(b, "count")) == 0)
            continue;
        if (add_changed(changed, coll, NULL, b, empty.hex) != 0)
            return SYNCD_ENOMEM;
    }
    return 0;
}

/* Checks every collection of the embedded store with the verification of
 * POST .../verify: fills *now with the digests and rep's corrupt, bodies
 * and documents. */
static int check_store(syncd_store_t *store, int rehash, json_t *rep,
                       json_t **now, syncd_error_t *err)
{
    json_t *names = NULL, *name, *corrupt = json_object_get(rep, "corrupt");
    uint64_t documents = 0, bodies = 0;
    size_t i;
    int rc;

    *now = json_object();
    if (*now == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    rc = syncd_store_collections(store, &names, err);
    json_array_foreach (names, i, name) {
        const char *coll = json_string_value(name);
        json_t *ids = json_array(), *d;
        syncd_verify_t v;
        size_t j;

        if (rc != 0 || ids == NULL) {
            json_decref(ids);
            break;
        }
        rc = syncd_store_verify_ex(store, &v, coll, MAX_BAD, rehash, err);
        if (rc == 0) {
            documents += v.store.count;
            bodies += v.bodies;
            json_array_foreach (v.differs, j, d)
                json_array_append(ids, json_object_get(d, "id"));
            if (json_object_set_new(*now, coll,
                                    json_pack("{s:I, s:s}", "count",
                                              (json_int_t)v.store.count,
                                              "digest", v.store.hex)) != 0 ||
                (json_array_size(ids) > 0 &&
                 json_object_set_new(corrupt, coll,
                                     json_pack("{s:O, s:b}", "ids", ids,
                                               "truncated", v.truncated)) != 0))
                rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        }
        json_decref(ids);
        syncd_verify_clear(&v);
    }
    json_decref(names);
    if (rc == 0 &&
        (json_object_set_new(rep, "documents", json_integer(documents)) != 0 ||
         json_object_set_new(rep, "bodies", json_integer(bodies)) != 0))
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    return rc;
}

/* Checks a kept cache's records: fills *now with their digests and rep's
 * corrupt, bodies and documents. */
static int check_cache(syncd_cache_t *cache, int rehash, json_t *rep,
                       json_t **now, syncd_error_t *err)
{
    json_t *bad = NULL, *d;
    uint64_t bodies = 0, documents = 0;
    const char *coll;
    int rc;

    rc = syncd_cache_check(cache, now, rehash ? &bad : NULL, MAX_BAD, &bodies,
                           err);
    if (rc != 0)
        return rc;
    json_object_foreach (*now, coll, d)
        documents += (uint64_t)json_integer_value(json_object_get(d, "count"));
    if ((bad != NULL &&
         json_object_update(json_object_get(rep, "corrupt"), bad) != 0) ||
        json_object_set_new(rep, "documents", json_integer(documents)) != 0 ||
        json_object_set_new(rep, "bodies", json_integer(bodies)) != 0)
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    json_decref(bad);
    return rc;
}

int syncd_store_check_start(syncd_store_t *store, syncd_start_check_t mode,
                            json_t **report, syncd_error_t *err)
{
    syncd_cache_t *cache = syncd_store_cache_of(store);
    json_t *then, *written = NULL, *now = NULL, *rep;
    uint64_t bytes = dir_bytes(syncd_store_data_dir(store), 0);
    int is_auto = mode == SYNCD_CHECK_AUTO;
    int rc = 0;

    *report = NULL;
    then = take_digests(store, cache != NULL ? "cache" : "rocksdb", &written);
    if (is_auto)
        mode = bytes < SYNCD_CHECK_FULL_BELOW ? SYNCD_CHECK_FULL
                                              : SYNCD_CHECK_DIGESTS;
    rep = json_pack(
        "{s:s, s:s, s:b, s:I, s:b, s:o, s:i, s:i, s:i, s:[], "
        "s:{}}",
        "target", cache != NULL ? "cache" : "store", "mode", mode_names[mode],
        "auto", is_auto, "bytes", (json_int_t)bytes, "clean", then != NULL,
        "written", written != NULL ? json_incref(written) : json_null(),
        "collections", 0, "documents", 0, "bodies", 0, "changed", "corrupt");
    if (rep == NULL) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto cleanup;
    }
    if (cache != NULL &&
        (json_object_set_new(rep, "dropped", json_false()) != 0 ||
         json_object_set_new(rep, "kept",
                             json_boolean(syncd_cache_kept(cache))) != 0))
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    if (rc != 0 || mode == SYNCD_CHECK_OFF ||
        (cache != NULL && !syncd_cache_kept(cache)))
        goto cleanup;
    rc = cache != NULL
             ? check_cache(cache, mode == SYNCD_CHECK_FULL, rep, &now, err)
             : check_store(store, mode == SYNCD_CHECK_FULL, rep, &now, err);
    if (rc == 0 &&
        (json_object_set_new(rep, "collections",
                             json_integer((json_int_t)json_object_size(now))) ||
         (then != NULL &&
          compare(json_object_get(rep, "changed"), now, then) != 0)))
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    if (rc == 0 && cache != NULL &&
        (json_array_size(json_object_get(rep, "changed")) > 0 ||
         json_object_size(json_object_get(rep, "corrupt")) > 0)) {
        syncd_cache_clear(cache);
        json_object_set_new(rep, "dropped", json_true());
    }
cleanup:
    json_decref(then);
    json_decref(written);
    json_decref(now);
    if (rc != 0)
        json_decref(rep);
    else
        *report = rep;
    return rc;
}
