/* atstart.c - the daemon's check of its store at start.
 *
 * Before the node serves, syncd_store_check_start() compares the store
 * with the digests written at its last clean shutdown and, in full mode,
 * rehashes every body (storage/startcheck.c). This file says what it found
 * in the log and decides what to serve:
 *   - a collection of the embedded store of record whose stored bodies do
 *     not match their hashes is refused (503 collection_corrupt on its
 *     routes, naming the ids), because the store is the truth and nothing
 *     can restore it; with --repair, each such document is quarantined
 *     instead: its record, as stored, is appended to
 *     <data-dir>/quarantine/<coll>-<time>.jsonl and the document is deleted
 *     (a tombstone at its next version, so watchers see a delete and the
 *     version line goes on), and the rest of the collection is served;
 *   - a collection whose digest differs from the clean shutdown's changed
 *     while syncd was stopped: that is logged (and shown in /v1/health),
 *     and served, its records being consistent with their hashes;
 *   - a node cache (MongoDB mode) that failed was dropped by the check and
 *     refills from the store.
 */
#define _GNU_SOURCE /* asprintf */
#include "atstart.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/buf.h"
#include "log.h"

/* Ids named in one refusal message; the log and /v1/health list all. */
#define MESSAGE_IDS 10

static int64_t monotonic_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Appends the ids of list (a JSON array of strings), comma-separated, to
 * b; at most max of them (0: all), then ", ...". */
static int append_ids(syncd_buf_t *b, const json_t *list, size_t max)
{
    json_t *id;
    size_t i;

    json_array_foreach (list, i, id) {
        const char *s = json_string_value(id);

        if (max > 0 && i == max)
            return syncd_buf_append(b, ", ...", 5);
        if ((i > 0 && syncd_buf_append(b, ", ", 2) != 0) ||
            syncd_buf_append(b, s, strlen(s)) != 0)
            return -1;
    }
    return 0;
}

/* Sets *out to a new string: the ids of c ({"ids","truncated"}) joined
 * (at most max: 0 means all), with "(more not listed)" when truncated. */
static char *ids_text(const json_t *c, size_t max)
{
    syncd_buf_t b = {0};
    char *text = NULL;

    if (append_ids(&b, json_object_get(c, "ids"), max) == 0 &&
        (!json_is_true(json_object_get(c, "truncated")) ||
         syncd_buf_append(&b, " (and more)", 11) == 0) &&
        syncd_buf_append(&b, "", 1) == 0)
        text = strndup(b.data, b.len);
    syncd_buf_free(&b);
    return text;
}

/* Says how many bodies of c ({"ids","truncated"}) are bad. */
static const char *bad_bodies(const json_t *c)
{
    if (json_is_true(json_object_get(c, "truncated")))
        return "stored bodies do not match their hashes, more than listed";
    if (json_array_size(json_object_get(c, "ids")) == 1)
        return "a stored body does not match its hash";
    return "stored bodies do not match their hashes";
}

/* Logs what the check found, one line per finding and a summary. */
static void log_report(const json_t *rep, const char *dir, int64_t ms)
{
    const char *target = json_string_value(json_object_get(rep, "target"));
    const char *mode = json_string_value(json_object_get(rep, "mode"));
    json_t *changed = json_object_get(rep, "changed"), *c;
    json_t *corrupt = json_object_get(rep, "corrupt");
    const char *coll;
    size_t i;

    if (strcmp(mode, "off") == 0) {
        syncd_log(SYNCD_LOG_INFO,
                  "syncd: start check of the %s: off "
                  "(--verify-at-start off)",
                  target);
        return;
    }
    if (json_is_false(json_object_get(rep, "kept"))) {
        syncd_log(SYNCD_LOG_INFO,
                  "syncd: start check of the cache: nothing to check (no "
                  "cache kept from a clean shutdown with --keep-cache true)");
        return;
    }
    /* A new store has nothing to lose: only an unclean stop of a store
     * that holds collections is a warning. */
    if (!json_is_true(json_object_get(rep, "clean")))
        syncd_log(json_integer_value(json_object_get(rep, "collections")) > 0
                      ? SYNCD_LOG_WARN
                      : SYNCD_LOG_INFO,
                  "syncd: start check of the %s: no digests of a clean "
                  "shutdown in %s (the last run did not stop cleanly, or "
                  "this is the first start): recomputing them",
                  target, dir);
    json_array_foreach (changed, i, c)
        syncd_log(
            SYNCD_LOG_WARN,
            "syncd: start check of the %s: collection %s changed "
            "since the clean shutdown of %s: %lld documents, digest "
            "%s; then %lld, %s",
            target, json_string_value(json_object_get(c, "coll")),
            json_string_value(json_object_get(rep, "written")),
            (long long)json_integer_value(json_object_get(c, "count")),
            json_string_value(json_object_get(c, "digest")),
            (long long)json_integer_value(json_object_get(c, "shutdown_count")),
            json_string_value(json_object_get(c, "shutdown_digest")));
    json_object_foreach (corrupt, coll, c) {
        char *ids = ids_text(c, 0);

        syncd_log(SYNCD_LOG_ERROR,
                  "syncd: start check of the %s: collection %s: %s: %s", target,
                  coll, bad_bodies(c), ids != NULL ? ids : "(out of memory)");
        free(ids);
    }
    if (json_is_true(json_object_get(rep, "dropped")))
        syncd_log(SYNCD_LOG_WARN,
                  "syncd: start check: the kept cache failed the check; "
                  "dropped it, it refills from the store");
    syncd_log(
        SYNCD_LOG_INFO,
        "syncd: start check of the %s (%s%s, %llu bytes): %lld "
        "collections, %lld documents, %lld bodies rehashed in %lld ms",
        target, mode,
        json_is_true(json_object_get(rep, "auto")) ? ", auto" : "",
        (unsigned long long)json_integer_value(json_object_get(rep, "bytes")),
        (long long)json_integer_value(json_object_get(rep, "collections")),
        (long long)json_integer_value(json_object_get(rep, "documents")),
        (long long)json_integer_value(json_object_get(rep, "bodies")),
        (long long)ms);
}

/* Appends the record of coll/id, as stored, to the quarantine file f. */
static int quarantine_line(FILE *f, const syncd_doc_t *doc)
{
    json_t *line = json_pack(
        "{s:s, s:s, s:I, s:s, s:I, s:s, s:O}", "coll", doc->coll, "id", doc->id,
        "v", (json_int_t)doc->version, "h", doc->hash, "mt",
        (json_int_t)doc->mtime_ms, "by", doc->origin, "data", doc->body);
    char *text = line != NULL ? json_dumps(line, JSON_COMPACT) : NULL;
    int rc = text != NULL && fprintf(f, "%s\n", text) > 0 ? 0 : -1;

    free(text);
    json_decref(line);
    return rc;
}

/* Quarantines one corrupt document: writes its record to f, then deletes
 * it at the version read (a document written meanwhile is left). */
static int quarantine_one(syncd_store_t *store, FILE *f, const char *coll,
                          const char *id, syncd_error_t *err)
{
    syncd_write_options_t wo;
    syncd_change_t *change = NULL;
    syncd_doc_t *doc = NULL;
    int rc = syncd_store_get(store, &doc, coll, id, err);

    if (rc != 0)
        return rc;
    if (quarantine_line(f, doc) != 0 || fflush(f) != 0) {
        rc = syncd_error_set(err, SYNCD_EBACKEND,
                             "cannot write the quarantine file: %s",
                             strerror(errno));
        goto cleanup;
    }
    syncd_write_options_init(&wo);
    wo.if_match = doc->version;
    rc = syncd_store_delete_ex(store, &change, coll, id, &wo, err);
    if (rc == 0)
        syncd_log(SYNCD_LOG_WARN,
                  "syncd: --repair: quarantined %s/%s (version %lld) and "
                  "deleted it (version %lld)",
                  coll, id, (long long)doc->version,
                  (long long)change->doc->version);
cleanup:
    syncd_change_free(change);
    syncd_doc_free(doc);
    return rc;
}

/* Quarantines the corrupt documents c ({"ids","truncated"}) of coll into
 * a new file under qdir; returns 0 when every one was, and records what
 * was done in repaired. */
static int repair(syncd_store_t *store, const char *qdir, const char *coll,
                  const json_t *c, json_t *repaired)
{
    json_t *ids = json_object_get(c, "ids"), *id, *done = json_array();
    char path[4096], stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    size_t i;
    FILE *f;
    int rc = 0;

    gmtime_r(&now, &tm);
    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
    errno = ENAMETOOLONG;
    if (done == NULL ||
        (size_t)snprintf(path, sizeof(path), "%s/%s-%s.jsonl", qdir, coll,
                         stamp) >= sizeof(path) ||
        (mkdir(qdir, 0755) != 0 && errno != EEXIST) ||
        (f = fopen(path, "a")) == NULL) {
        syncd_log(SYNCD_LOG_ERROR, "syncd: --repair: cannot write %s: %s", path,
                  strerror(errno));
        json_decref(done);
        return -1;
    }
    json_array_foreach (ids, i, id) {
        syncd_error_t err;

        syncd_error_clear(&err);
        if (quarantine_one(store, f, coll, json_string_value(id), &err) != 0) {
            syncd_log(SYNCD_LOG_ERROR,
                      "syncd: --repair: cannot quarantine %s/%s: %s", coll,
                      json_string_value(id), err.message);
            rc = -1;
        } else {
            json_array_append(done, id);
        }
    }
    fclose(f);
    json_object_set_new(repaired, coll,
                        json_pack("{s:o, s:s}", "ids", done, "file", path));
    if (json_is_true(json_object_get(c, "truncated"))) {
        syncd_log(SYNCD_LOG_ERROR,
                  "syncd: --repair: collection %s has more corrupt "
                  "documents than one check lists; restart with --repair "
                  "again",
                  coll);
        rc = -1;
    }
    return rc;
}

/* Fills rep's "refused" (and with --repair "repaired") from its corrupt
 * collections of the embedded store. */
static int decide(json_t *rep, syncd_store_t *store, const syncd_config_t *cfg)
{
    json_t *refused = json_object(), *repaired = json_object(), *c;
    const char *coll;
    char qdir[4096];

    if (refused == NULL || repaired == NULL)
        goto nomem;
    snprintf(qdir, sizeof(qdir), "%s/quarantine", cfg->data_dir);
    json_object_foreach (json_object_get(rep, "corrupt"), coll, c) {
        char *ids, *msg = NULL;

        if (cfg->repair && repair(store, qdir, coll, c, repaired) == 0)
            continue;
        ids = ids_text(c, MESSAGE_IDS);
        if (ids == NULL ||
            asprintf(&msg,
                     "collection %s is not served: %zu stored bodies do not "
                     "match their hashes (%s); see the log, restart with "
                     "--repair to quarantine them",
                     coll, json_array_size(json_object_get(c, "ids")), ids) < 0)
            msg = NULL;
        free(ids);
        if (msg == NULL ||
            json_object_set_new(refused, coll, json_string(msg)) != 0) {
            free(msg);
            goto nomem;
        }
        syncd_log(SYNCD_LOG_ERROR, "syncd: %s", msg);
        free(msg);
    }
    json_object_set_new(rep, "refused", refused);
    if (cfg->repair)
        json_object_set_new(rep, "repaired", repaired);
    else
        json_decref(repaired);
    return 0;
nomem:
    json_decref(refused);
    json_decref(repaired);
    return SYNCD_ENOMEM;
}

int syncd_atstart_run(json_t **report, syncd_store_t *store,
                      const syncd_config_t *cfg, syncd_error_t *err)
{
    int64_t start = monotonic_ms();
    json_t *rep = NULL;
    char dir[4096];
    int rc;

    *report = NULL;
    snprintf(dir, sizeof(dir), "%s/store", cfg->data_dir);
    rc = syncd_store_check_start(store, cfg->verify_at_start, &rep, err);
    if (rc != 0)
        return rc;
    log_report(rep, dir, monotonic_ms() - start);
    if (strcmp(json_string_value(json_object_get(rep, "target")), "store") != 0)
        rc = json_object_set_new(rep, "refused", json_object()) != 0
                 ? SYNCD_ENOMEM
                 : 0;
    else
        rc = decide(rep, store, cfg);
    if (rc != 0) {
        json_decref(rep);
        return syncd_error_set(err, rc, "out of memory");
    }
    *report = rep;
    return 0;
}

const char *syncd_atstart_refused(const json_t *report, const char *coll)
{
    return json_string_value(
        json_object_get(json_object_get(report, "refused"), coll));
}
