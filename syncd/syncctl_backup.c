/* syncctl_backup.c - `syncctl backup`, `syncctl restore` and `syncctl
 * checkpoint`: logical backups of collections as JSON Lines, and RocksDB
 * checkpoints of a running embedded node (DESIGN.md sections 5 and 10).
 *
 * A backup file holds, per collection, one line {"coll","id","v","h",
 * "data"} per live document in id order, as GET .../export streams them
 * from the store of record, then the collection's trailer {"coll",
 * "trailer":true,"count","digest","seq"}: the number of documents, their
 * collection digest over (id, v, h) and the collection's event seq when
 * the export started. The file ends with {"end":true,"collections":N,
 * "documents":M}, so a file cut between two collections is refused too.
 * `backup` writes the lines as they arrive (gzip with --gzip) into
 * FILE.partial, checking each collection's lines against its trailer, and
 * renames it to FILE once complete: a backup that ends without a trailer
 * fails and leaves FILE as it was.
 *
 * `restore` reads the whole file before it writes anything: every line
 * must parse, every data must hash to its h, ids must come in order, and
 * every collection's lines must match its trailer; the first failure is
 * reported naming the collection (and the line or id) and nothing is
 * written. With --mode=empty (the default) every target collection must
 * be empty; with --mode=overwrite documents are written over what is
 * there. Each document is PUT through the edit loop, so it gets a new
 * version with the backup's body; --jobs N (default 8) writers run at
 * once, so the store can commit their writes in groups. Versions differ after a
 * restore, so the check afterwards compares content digests: the collection
 * digest with every version taken as 0, i.e. over (id, content hash). `restore`
 * prints both sides' and exits 1 when a collection differs (for example a
 * document the target holds and the backup does not).
 */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "base/buf.h"
#include "syncd/patch.h"
#include "syncd/store.h"
#include "syncctl.h"

/* Longest line a backup may hold: a document of the largest
 * --max-doc-bytes, escaped, with room to spare. */
#define MAX_LINE ((size_t)64 << 20)

/* Entries per listing request when reading a target's content digest. */
#define LIST_PAGE "10000"

/* Documents between two progress reports on a terminal. */
#define PROGRESS_EVERY 1000

/* ---- Checking backup lines --------------------------------------------- */

/* What the lines of one collection add up to. */
typedef struct section {
    char *coll;
    char *last_id;          /* the last document id read; NULL: none */
    syncd_merkle_t m;       /* over (id, v, h) */
    syncd_merkle_t content; /* over (id, 0, h) */
    int closed;             /* its trailer was read */
    int64_t seq;            /* from the trailer */
} section_t;

typedef struct checker checker_t;

/* Called for each line that checked out (v is the parsed line, sec its
 * collection); returns SYNCCTL_OK or reports and SYNCCTL_FAILED. */
typedef int (*sink_fn)(checker_t *ck, const json_t *v, const section_t *sec,
                       const char *line, size_t len);

struct checker {
    const char *source; /* the file or URL, for messages */
    int rehash;         /* check each data against its h */
    section_t *secs;
    size_t nsecs;
    section_t *open; /* the collection whose lines are being read */
    syncd_buf_t line;
    uint64_t lineno, docs, bytes;
    int ended;    /* the end line was read */
    int progress; /* report progress on stderr (a terminal) */
    const char *verb;
    sink_fn sink;
    void *arg;
};

static void checker_free(checker_t *ck)
{
    for (size_t i = 0; i < ck->nsecs; i++) {
        free(ck->secs[i].coll);
        free(ck->secs[i].last_id);
    }
    free(ck->secs);
    syncd_buf_free(&ck->line);
}

static section_t *find_section(checker_t *ck, const char *coll)
{
    for (size_t i = 0; i < ck->nsecs; i++)
        if (strcmp(ck->secs[i].coll, coll) == 0)
            return &ck->secs[i];
    return NULL;
}

/* Opens the section of coll, which must not have been seen before. */
static int open_section(checker_t *ck, const char *coll)
{
    section_t *secs, *s;

    if (find_section(ck, coll) != NULL)
        return syncctl_fail("%s: line %llu: collection %s appears twice "
                            "(the file is edited)",
                            ck->source, (unsigned long long)ck->lineno, coll);
    secs = realloc(ck->secs, (ck->nsecs + 1) * sizeof(*secs));
    if (secs == NULL)
        return syncctl_fail("out of memory");
    ck->secs = secs;
    s = &secs[ck->nsecs];
    memset(s, 0, sizeof(*s));
    s->coll = strdup(coll);
    if (s->coll == NULL)
        return syncctl_fail("out of memory");
    syncd_merkle_init(&s->m);
    syncd_merkle_init(&s->content);
    ck->nsecs++;
    ck->open = s;
    return SYNCCTL_OK;
}

/* Checks a trailer line against the lines of its collection. */
static int check_trailer(checker_t *ck, const json_t *v, const char *coll)
{
    json_t *count = json_object_get(v, "count");
    const char *digest = json_string_value(json_object_get(v, "digest"));
    json_t *seq = json_object_get(v, "seq");
    syncd_digest_t d;
    int rc;

    if (ck->open == NULL) {
        rc = open_section(ck, coll);
        if (rc != SYNCCTL_OK)
            return rc;
    }
    if (!json_is_integer(count) || digest == NULL || !json_is_integer(seq))
        return syncctl_fail("%s: line %llu: collection %s: the trailer needs "
                            "an integer count and seq and a string digest",
                            ck->source, (unsigned long long)ck->lineno, coll);
    syncd_merkle_final(&ck->open->m, &d);
    if ((json_int_t)d.count != json_integer_value(count) ||
        strcmp(d.hex, digest) != 0)
        return syncctl_fail(
            "%s: collection %s: its lines hold %llu documents with digest "
            "%s, its trailer says %lld with digest %s: the file is "
            "truncated or edited",
            ck->source, coll, (unsigned long long)d.count, d.hex,
            (long long)json_integer_value(count), digest);
    ck->open->closed = 1;
    ck->open->seq = json_integer_value(seq);
    return SYNCCTL_OK;
}

/* Checks a document line of the open collection. */
static int check_doc(checker_t *ck, const json_t *v, const char *coll)
{
    const char *id = json_string_value(json_object_get(v, "id"));
    json_t *ver = json_object_get(v, "v");
    const char *h = json_string_value(json_object_get(v, "h"));
    const json_t *data = json_object_get(v, "data");
    section_t *s = ck->open;
    char merkle[SYNCD_HASH_HEX_LEN + 1];
    syncd_error_t err;

    syncd_error_clear(&err);
    if (id == NULL || syncd_validate_id(id, &err) != 0 ||
        !json_is_integer(ver) || json_integer_value(ver) < 1 || h == NULL ||
        !json_is_object(data))
        return syncctl_fail("%s: line %llu: collection %s: a document line "
                            "needs a valid id, a version >= 1, h and an "
                            "object data (the file is edited)",
                            ck->source, (unsigned long long)ck->lineno, coll);
    if (s->last_id != NULL && strcmp(s->last_id, id) >= 0)
        return syncctl_fail("%s: line %llu: collection %s: id %s is out of "
                            "order or repeated (the file is edited)",
                            ck->source, (unsigned long long)ck->lineno, coll,
                            id);
    /* What the node will hold: the content hash of data, also when h is
     * the legacy hash of a backup made before the Merkle hash (doc/HASH.md).
     * Without rehash, h as it is. */
    if (ck->rehash && (syncd_json_hash(merkle, data, &err) != 0 ||
                       (strcmp(merkle, h) != 0 &&
                        syncd_json_hash_matches(h, data, &err) != 1)))
        return syncctl_fail("%s: line %llu: collection %s: document %s: its "
                            "data does not hash to its h (the file is "
                            "edited)",
                            ck->source, (unsigned long long)ck->lineno, coll,
                            id);
    free(s->last_id);
    s->last_id = strdup(id);
    if (s->last_id == NULL ||
        syncd_merkle_add(&s->m, id, json_integer_value(ver), h) != 0 ||
        syncd_merkle_add(&s->content, id, 0, ck->rehash ? merkle : h) != 0)
        return syncctl_fail("out of memory");
    ck->docs++;
    return SYNCCTL_OK;
}

/* Checks the end line against the collections and documents read. */
static int check_end(checker_t *ck, const json_t *v)
{
    json_t *colls = json_object_get(v, "collections");
    json_t *docs = json_object_get(v, "documents");

    if (ck->open != NULL)
        return syncctl_fail("%s: line %llu: collection %s has no trailer "
                            "before the end line: the file is edited",
                            ck->source, (unsigned long long)ck->lineno,
                            ck->open->coll);
    if (!json_is_integer(colls) || !json_is_integer(docs) ||
        json_integer_value(colls) != (json_int_t)ck->nsecs ||
        json_integer_value(docs) != (json_int_t)ck->docs)
        return syncctl_fail("%s: the end line says %lld collections and "
                            "%lld documents, the file holds %zu and %llu: "
                            "the file is edited",
                            ck->source, (long long)json_integer_value(colls),
                            (long long)json_integer_value(docs), ck->nsecs,
                            (unsigned long long)ck->docs);
    ck->ended = 1;
    return SYNCCTL_OK;
}

static void report_progress(const checker_t *ck, int done)
{
    if (!ck->progress || (!done && ck->docs % PROGRESS_EVERY != 0))
        return;
    fprintf(stderr, "\rsyncctl: %s %llu documents, %llu bytes%s", ck->verb,
            (unsigned long long)ck->docs, (unsigned long long)ck->bytes,
            done ? "\n" : "");
}

/* Checks the complete line held in ck->line and hands it to the sink. */
static int end_line(checker_t *ck)
{
    const char *where = ck->open != NULL ? ck->open->coll : "(none)";
    json_error_t jerr;
    json_t *v;
    const char *coll;
    syncd_error_t err;
    int rc;

    ck->lineno++;
    ck->bytes += ck->line.len + 1;
    v = json_loadb(ck->line.data != NULL ? ck->line.data : "", ck->line.len, 0,
                   &jerr);
    if (v == NULL)
        return syncctl_fail("%s: line %llu: collection %s: malformed JSON "
                            "(%s): the file is truncated or edited",
                            ck->source, (unsigned long long)ck->lineno, where,
                            jerr.text);
    coll = json_string_value(json_object_get(v, "coll"));
    syncd_error_clear(&err);
    if (ck->ended) {
        rc = syncctl_fail("%s: line %llu: a line after the end line (the "
                          "file is edited)",
                          ck->source, (unsigned long long)ck->lineno);
    } else if (json_is_true(json_object_get(v, "end"))) {
        rc = check_end(ck, v);
    } else if (coll == NULL || syncd_validate_collection(coll, &err) != 0) {
        rc = syncctl_fail("%s: line %llu: after collection %s: the line "
                          "names no valid collection (the file is edited)",
                          ck->source, (unsigned long long)ck->lineno, where);
    } else if (ck->open != NULL && strcmp(ck->open->coll, coll) != 0) {
        rc = syncctl_fail("%s: line %llu: collection %s has no trailer "
                          "before collection %s starts: the file is "
                          "truncated or edited",
                          ck->source, (unsigned long long)ck->lineno, where,
                          coll);
    } else if (json_object_get(v, "error") != NULL) {
        rc = syncctl_fail(
            "%s: collection %s: the export failed on the node: %s", ck->source,
            coll,
            json_string_value(json_object_get(v, "message")) != NULL
                ? json_string_value(json_object_get(v, "message"))
                : "(no message)");
    } else if (json_is_true(json_object_get(v, "trailer"))) {
        rc = check_trailer(ck, v, coll);
    } else {
        rc = ck->open == NULL ? open_section(ck, coll) : SYNCCTL_OK;
        if (rc == SYNCCTL_OK)
            rc = check_doc(ck, v, coll);
    }
    if (rc == SYNCCTL_OK && ck->sink != NULL && !ck->ended)
        rc = ck->sink(ck, v, ck->open, ck->line.data, ck->line.len);
    if (rc == SYNCCTL_OK && ck->open != NULL && ck->open->closed)
        ck->open = NULL;
    json_decref(v);
    syncd_buf_truncate(&ck->line, 0);
    report_progress(ck, 0);
    return rc;
}

/* Feeds n bytes of lines to the checker. */
static int feed(checker_t *ck, const char *data, size_t n)
{
    while (n > 0) {
        const char *nl = memchr(data, '\n', n);
        size_t take = nl != NULL ? (size_t)(nl - data) : n;
        int rc;

        if (ck->line.len + take > MAX_LINE)
            return syncctl_fail("%s: line %llu: longer than %zu bytes",
                                ck->source, (unsigned long long)ck->lineno + 1,
                                MAX_LINE);
        if (syncd_buf_append(&ck->line, data, take) != 0)
            return syncctl_fail("out of memory");
        if (nl == NULL)
            break;
        rc = end_line(ck);
        if (rc != SYNCCTL_OK)
            return rc;
        data += take + 1;
        n -= take + 1;
    }
    return SYNCCTL_OK;
}

/* Ends the input: a last line without its newline is checked too, and
 * every collection must have had its trailer. */
static int finish(checker_t *ck)
{
    int rc = ck->line.len > 0 ? end_line(ck) : SYNCCTL_OK;

    if (rc == SYNCCTL_OK && ck->open != NULL)
        rc = syncctl_fail("%s: collection %s has no trailer line: the file "
                          "is truncated",
                          ck->source, ck->open->coll);
    else if (rc == SYNCCTL_OK && !ck->ended)
        rc = syncctl_fail("%s: no end line after collection %s: the file is "
                          "truncated",
                          ck->source,
                          ck->nsecs > 0 ? ck->secs[ck->nsecs - 1].coll
                                        : "(none)");
    report_progress(ck, 1);
    return rc;
}

/* ---- Helpers --------------------------------------------------------- */

/* Returns the malloc'd URL of path (from "/v1/...") on opts->server with
 * query appended as is; NULL when out of memory. */
static char *server_url(const syncctl_opts_t *opts, const char *path,
                        const char *query)
{
    size_t slen = strlen(opts->server);
    char *url = NULL;

    if (slen > 0 && opts->server[slen - 1] == '/')
        slen--;
    if (asprintf(&url, "%.*s%s%s", (int)slen, opts->server, path, query) < 0)
        return NULL;
    return url;
}

/* GETs url and sets *out to its 2xx JSON answer; else reports. */
static int get_json(const syncctl_opts_t *opts, const char *url, json_t **out)
{
    long status = 0;
    int rc = syncctl_call_json(opts, "GET", url, &status, out);

    if (rc == SYNCCTL_OK && (status < 200 || status > 299)) {
        const char *msg = json_string_value(json_object_get(*out, "message"));

        rc = syncctl_fail("GET %s: %ld: %s", url, status,
                          msg != NULL ? msg : "error");
        json_decref(*out);
        *out = NULL;
    }
    return rc;
}

/* Reads the content digest of coll on the node (its store of record's
 * listing, a page at a time) into *out. */
static int target_content(const syncctl_opts_t *opts, const char *coll,
                          syncd_digest_t *out)
{
    syncd_merkle_t m;
    char *after = NULL;
    int rc = SYNCCTL_OK;

    syncd_merkle_init(&m);
    for (;;) {
        char q[2048] = "";
        json_t *page = NULL, *e;
        const char *next;
        char *url;
        size_t i;

        syncctl_add_query(q, sizeof(q), "limit", LIST_PAGE);
        if (after != NULL)
            syncctl_add_query(q, sizeof(q), "after", after);
        url = syncctl_url(opts, coll, "docs", q);
        rc = url != NULL ? get_json(opts, url, &page)
                         : syncctl_fail("out of memory");
        free(url);
        if (rc != SYNCCTL_OK)
            break;
        json_array_foreach (json_object_get(page, "docs"), i, e) {
            const char *id = json_string_value(json_object_get(e, "id"));
            const char *h = json_string_value(json_object_get(e, "h"));

            if (id == NULL || h == NULL || syncd_merkle_add(&m, id, 0, h) != 0)
                rc = syncctl_fail("%s: a listing entry without id or h", coll);
        }
        next = json_string_value(json_object_get(page, "next"));
        free(after);
        after = next != NULL ? strdup(next) : NULL;
        json_decref(page);
        if (rc != SYNCCTL_OK || after == NULL)
            break;
    }
    free(after);
    syncd_merkle_final(&m, out);
    return rc;
}

/* ---- backup ---------------------------------------------------------- */

/* One backup run: the checker and the output file. */
typedef struct backup {
    checker_t ck;
    gzFile out;
    CURL *curl;
    syncd_buf_t error; /* the body of a non-200 answer */
    int failed;        /* the checker or the output failed */
} backup_t;

/* Writes a checked line to the output. */
static int write_line(checker_t *ck, const json_t *v, const section_t *sec,
                      const char *line, size_t len)
{
    backup_t *b = ck->arg;

    (void)v;
    (void)sec;
    if (gzwrite(b->out, line, (unsigned)len) != (int)len ||
        gzputc(b->out, '\n') != '\n')
        return syncctl_fail("cannot write the backup file %s", ck->source);
    return SYNCCTL_OK;
}

/* Writes the file's end line: {"end":true,"collections":N,"documents":M}. */
static int write_end(backup_t *b)
{
    json_t *end =
        json_pack("{s:b, s:I, s:I}", "end", 1, "collections",
                  (json_int_t)b->ck.nsecs, "documents", (json_int_t)b->ck.docs);
    char *text = end != NULL ? json_dumps(end, JSON_COMPACT) : NULL;
    int rc = text != NULL ? write_line(&b->ck, end, NULL, text, strlen(text))
                          : syncctl_fail("out of memory");

    free(text);
    json_decref(end);
    return rc;
}

static size_t on_export(char *data, size_t size, size_t n, void *arg)
{
    backup_t *b = arg;
    long status = 0;

    curl_easy_getinfo(b->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200)
        return syncd_buf_append(&b->error, data, size * n) == 0 ? size * n : 0;
    if (feed(&b->ck, data, size * n) != SYNCCTL_OK) {
        b->failed = 1;
        return 0;
    }
    return size * n;
}

/* Streams the export of coll into the backup. */
static int backup_one(backup_t *b, const syncctl_opts_t *opts, const char *coll)
{
    struct curl_slist *h = NULL;
    char *url = syncctl_url(opts, coll, "export", "");
    char auth[512];
    long status = 0;
    CURLcode cc;
    size_t before = b->ck.nsecs;

    if (url == NULL)
        return syncctl_fail("out of memory");
    if (opts->token != NULL) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", opts->token);
        h = curl_slist_append(h, auth);
    }
    syncd_buf_truncate(&b->error, 0);
    curl_easy_reset(b->curl);
    curl_easy_setopt(b->curl, CURLOPT_URL, url);
    curl_easy_setopt(b->curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(b->curl, CURLOPT_WRITEFUNCTION, on_export);
    curl_easy_setopt(b->curl, CURLOPT_WRITEDATA, b);
    cc = curl_easy_perform(b->curl);
    curl_easy_getinfo(b->curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    if (b->failed) {
        free(url);
        return SYNCCTL_FAILED;
    }
    if (cc != CURLE_OK) {
        syncctl_fail("GET %s: %s", url, curl_easy_strerror(cc));
    } else if (status != 200) {
        syncd_buf_putc(&b->error, '\0');
        syncctl_fail("GET %s: %ld: %s", url, status, b->error.data);
    } else if (b->ck.line.len > 0 || b->ck.open != NULL ||
               b->ck.nsecs != before + 1 ||
               strcmp(b->ck.secs[before].coll, coll) != 0) {
        syncctl_fail("collection %s: the export ended without its trailer "
                     "(the node stopped or failed); no backup was written",
                     coll);
    } else {
        free(url);
        return SYNCCTL_OK;
    }
    free(url);
    return SYNCCTL_FAILED;
}

/* Lists the node's collections into *out (a new array of strings). */
static int all_collections(const syncctl_opts_t *opts, json_t **out)
{
    char *url = server_url(opts, "/v1/collections", "");
    json_t *v = NULL;
    int rc =
        url != NULL ? get_json(opts, url, &v) : syncctl_fail("out of memory");

    *out = NULL;
    free(url);
    if (rc == SYNCCTL_OK) {
        *out = json_incref(json_object_get(v, "collections"));
        if (!json_is_array(*out))
            rc = syncctl_fail("GET /v1/collections: no collections array");
    }
    json_decref(v);
    return rc;
}

/* Prints the summary of a finished backup. */
static int print_backup(const backup_t *b, const char *path, int gzip)
{
    json_t *colls = json_array(), *out;
    int rc;

    for (size_t i = 0; colls != NULL && i < b->ck.nsecs; i++) {
        const section_t *s = &b->ck.secs[i];
        syncd_digest_t d;

        syncd_merkle_final(&s->m, &d);
        json_array_append_new(colls,
                              json_pack("{s:s, s:I, s:s, s:I}", "coll", s->coll,
                                        "count", (json_int_t)d.count, "digest",
                                        d.hex, "seq", (json_int_t)s->seq));
    }
    out = json_pack("{s:s, s:b, s:I, s:I, s:o}", "out", path, "gzip", gzip,
                    "documents", (json_int_t)b->ck.docs, "bytes",
                    (json_int_t)b->ck.bytes, "collections", colls);
    rc = out != NULL ? syncctl_print_json(out) : syncctl_fail("out of memory");
    json_decref(out);
    return rc;
}

int syncctl_cmd_backup(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                       int argc, char **argv)
{
    const char *path = NULL;
    char *partial = NULL;
    json_t *colls = json_array(), *c;
    backup_t b;
    int gzip = 0, bad = 0, rc;
    size_t i;

    memset(&b, 0, sizeof(b));
    for (int k = 0; k < argc; k++) {
        if (strcmp(argv[k], "--out") == 0 && k + 1 < argc)
            path = argv[++k];
        else if (strcmp(argv[k], "--gzip") == 0)
            gzip = 1;
        else if (argv[k][0] == '-')
            bad = 1;
        else
            json_array_append_new(colls, json_string(argv[k]));
    }
    if (bad || path == NULL || colls == NULL) {
        json_decref(colls);
        return syncctl_usage(self);
    }
    rc = json_array_size(colls) == 0
             ? (json_decref(colls), all_collections(opts, &colls))
             : SYNCCTL_OK;
    if (rc != SYNCCTL_OK)
        return rc;
    b.ck.source = path;
    b.ck.sink = write_line;
    b.ck.arg = &b;
    b.ck.verb = "backup:";
    b.ck.progress = isatty(STDERR_FILENO);
    b.curl = curl_easy_init();
    if (asprintf(&partial, "%s.partial", path) < 0)
        partial = NULL;
    b.out = partial != NULL ? gzopen(partial, gzip ? "wb6" : "wbT") : NULL;
    if (b.curl == NULL || b.out == NULL)
        rc = syncctl_fail("cannot open %s.partial for writing", path);
    json_array_foreach (colls, i, c) {
        if (rc != SYNCCTL_OK)
            break;
        rc = backup_one(&b, opts, json_string_value(c));
    }
    if (rc == SYNCCTL_OK)
        rc = write_end(&b);
    if (rc == SYNCCTL_OK)
        report_progress(&b.ck, 1);
    if (b.out != NULL && gzclose(b.out) != Z_OK && rc == SYNCCTL_OK)
        rc = syncctl_fail("cannot write the backup file %s", partial);
    if (rc == SYNCCTL_OK && rename(partial, path) != 0)
        rc = syncctl_fail("cannot rename %s to %s", partial, path);
    if (rc == SYNCCTL_OK)
        rc = print_backup(&b, path, gzip);
    else if (b.out != NULL)
        unlink(partial);
    free(partial);
    curl_easy_cleanup(b.curl);
    syncd_buf_free(&b.error);
    checker_free(&b.ck);
    json_decref(colls);
    return rc;
}

/* ---- restore --------------------------------------------------------- */

/* Reads the backup file at path through ck (gzip or plain). */
static int read_file(checker_t *ck, const char *path)
{
    gzFile in = gzopen(path, "rb");
    char buf[1 << 16];
    int n, rc = SYNCCTL_OK;

    if (in == NULL)
        return syncctl_fail("cannot open %s", path);
    while (rc == SYNCCTL_OK && (n = gzread(in, buf, sizeof(buf))) > 0)
        rc = feed(ck, buf, (size_t)n);
    if (rc == SYNCCTL_OK && n < 0)
        rc = syncctl_fail("%s: line %llu: collection %s: the gzip stream is "
                          "cut or damaged",
                          path, (unsigned long long)ck->lineno + 1,
                          ck->open != NULL ? ck->open->coll : "(none)");
    if (rc == SYNCCTL_OK)
        rc = finish(ck);
    gzclose(in);
    return rc;
}

/* Most concurrent writers of a restore (--jobs), and documents queued
 * for them. */
#define MAX_JOBS 64
#define QUEUE_LEN 256

/* One document to write. */
typedef struct put_job {
    char *coll, *id, *body;
} put_job_t;

/* The writers of a restore: a bounded queue that the reader fills and
 * `jobs` threads drain, each PUTting one document at a time; concurrent
 * writes let the store commit them in groups. */
typedef struct pool {
    const syncctl_opts_t *opts;
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    put_job_t q[QUEUE_LEN];
    size_t head, n;
    int closed; /* no more documents come */
    int failed; /* a write failed: stop */
    pthread_t threads[MAX_JOBS];
    int nthreads;
} pool_t;

static void *writer_main(void *arg)
{
    pool_t *p = arg;

    for (;;) {
        put_job_t job;
        long status;
        long long version;
        json_t *answer = NULL;
        const char *error, *message;
        int rc;

        pthread_mutex_lock(&p->mu);
        while (p->n == 0 && !p->closed && !p->failed)
            pthread_cond_wait(&p->not_empty, &p->mu);
        if (p->n == 0 || p->failed) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        job = p->q[p->head];
        p->head = (p->head + 1) % QUEUE_LEN;
        p->n--;
        pthread_cond_signal(&p->not_full);
        pthread_mutex_unlock(&p->mu);
        rc = syncctl_call_doc(p->opts, "PUT", job.coll, job.id,
                              "application/json", job.body, NULL, &status,
                              &version, &answer);
        if (rc == SYNCCTL_OK && (status < 200 || status > 299)) {
            error = json_string_value(json_object_get(answer, "error"));
            message = json_string_value(json_object_get(answer, "message"));
            rc = syncctl_fail("PUT %s/%s: %ld %s: %s", job.coll, job.id, status,
                              error != NULL ? error : "error",
                              message != NULL ? message : "");
        }
        json_decref(answer);
        free(job.coll);
        free(job.id);
        free(job.body);
        if (rc != SYNCCTL_OK) {
            pthread_mutex_lock(&p->mu);
            p->failed = 1;
            pthread_cond_broadcast(&p->not_empty);
            pthread_cond_broadcast(&p->not_full);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

/* Queues a document line for the writers (waits while the queue is
 * full); SYNCCTL_FAILED once a write failed. */
static int put_line(checker_t *ck, const json_t *v, const section_t *sec,
                    const char *line, size_t len)
{
    pool_t *p = ck->arg;
    put_job_t job;
    int failed;

    (void)line;
    (void)len;
    if (json_is_true(json_object_get(v, "trailer")))
        return SYNCCTL_OK;
    job.coll = strdup(sec->coll);
    job.id = strdup(json_string_value(json_object_get(v, "id")));
    job.body = json_dumps(json_object_get(v, "data"), JSON_COMPACT);
    if (job.coll == NULL || job.id == NULL || job.body == NULL) {
        free(job.coll);
        free(job.id);
        free(job.body);
        return syncctl_fail("out of memory");
    }
    pthread_mutex_lock(&p->mu);
    while (p->n == QUEUE_LEN && !p->failed)
        pthread_cond_wait(&p->not_full, &p->mu);
    failed = p->failed;
    if (!failed) {
        p->q[(p->head + p->n) % QUEUE_LEN] = job;
        p->n++;
        pthread_cond_signal(&p->not_empty);
    }
    pthread_mutex_unlock(&p->mu);
    if (failed) {
        free(job.coll);
        free(job.id);
        free(job.body);
        return SYNCCTL_FAILED;
    }
    return SYNCCTL_OK;
}

/* Starts jobs writers; SYNCCTL_FAILED when a thread cannot start. */
static int pool_start(pool_t *p, const syncctl_opts_t *opts, int jobs)
{
    memset(p, 0, sizeof(*p));
    p->opts = opts;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->not_empty, NULL);
    pthread_cond_init(&p->not_full, NULL);
    for (; p->nthreads < jobs; p->nthreads++)
        if (pthread_create(&p->threads[p->nthreads], NULL, writer_main, p) != 0)
            return syncctl_fail("cannot start a writer thread");
    return SYNCCTL_OK;
}

/* Lets the writers finish what is queued (or stop, with abort), joins them
 * and frees the pool; SYNCCTL_FAILED when a write failed. */
static int pool_finish(pool_t *p, int abort)
{
    int failed;

    pthread_mutex_lock(&p->mu);
    p->closed = 1;
    if (abort)
        p->failed = 1;
    pthread_cond_broadcast(&p->not_empty);
    pthread_cond_broadcast(&p->not_full);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    for (; p->n > 0; p->n--) {
        put_job_t *job = &p->q[p->head];

        free(job->coll);
        free(job->id);
        free(job->body);
        p->head = (p->head + 1) % QUEUE_LEN;
    }
    failed = p->failed;
    pthread_cond_destroy(&p->not_full);
    pthread_cond_destroy(&p->not_empty);
    pthread_mutex_destroy(&p->mu);
    return failed ? SYNCCTL_FAILED : SYNCCTL_OK;
}

/* Refuses when any collection of the backup holds a document on the
 * node (--mode=empty). */
static int check_empty(const syncctl_opts_t *opts, const checker_t *ck)
{
    for (size_t i = 0; i < ck->nsecs; i++) {
        char *url = syncctl_url(opts, ck->secs[i].coll, "docs", "?limit=1");
        json_t *v = NULL;
        int rc = url != NULL ? get_json(opts, url, &v)
                             : syncctl_fail("out of memory");

        free(url);
        if (rc == SYNCCTL_OK && json_array_size(json_object_get(v, "docs")))
            rc = syncctl_fail("collection %s on %s is not empty "
                              "(--mode=empty); nothing was written (restore "
                              "with --mode=overwrite to write over it)",
                              ck->secs[i].coll, opts->server);
        json_decref(v);
        if (rc != SYNCCTL_OK)
            return rc;
    }
    return SYNCCTL_OK;
}

/* Compares each collection's content digest on the node with the
 * backup's and prints the outcome; SYNCCTL_FAILED when one differs. */
static int compare_content(const syncctl_opts_t *opts, const checker_t *ck,
                           const char *mode, uint64_t written)
{
    json_t *colls = json_array(), *out;
    int agree = 1, rc = SYNCCTL_OK;

    for (size_t i = 0; rc == SYNCCTL_OK && i < ck->nsecs; i++) {
        const section_t *s = &ck->secs[i];
        syncd_digest_t mine, theirs;

        syncd_merkle_final(&s->content, &mine);
        rc = target_content(opts, s->coll, &theirs);
        if (rc != SYNCCTL_OK)
            break;
        if (mine.count != theirs.count || strcmp(mine.hex, theirs.hex) != 0) {
            agree = 0;
            syncctl_fail("collection %s: the node holds %llu documents with "
                         "content digest %s, the backup %llu with %s",
                         s->coll, (unsigned long long)theirs.count, theirs.hex,
                         (unsigned long long)mine.count, mine.hex);
        }
        json_array_append_new(
            colls, json_pack("{s:s, s:I, s:s, s:I, s:s, s:b}", "coll", s->coll,
                             "count", (json_int_t)mine.count, "content_digest",
                             mine.hex, "target_count", (json_int_t)theirs.count,
                             "target_content_digest", theirs.hex, "agree",
                             mine.count == theirs.count &&
                                 strcmp(mine.hex, theirs.hex) == 0));
    }
    if (rc != SYNCCTL_OK) {
        json_decref(colls);
        return rc;
    }
    out = json_pack("{s:s, s:I, s:b, s:o}", "mode", mode, "written",
                    (json_int_t)written, "agree", agree, "collections", colls);
    rc = out != NULL ? syncctl_print_json(out) : syncctl_fail("out of memory");
    json_decref(out);
    return rc == SYNCCTL_OK && !agree ? SYNCCTL_FAILED : rc;
}

int syncctl_cmd_restore(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                        int argc, char **argv)
{
    const char *path = NULL, *mode = "empty";
    checker_t check, write;
    long jobs = 8;
    pool_t pool;
    int rc, prc;

    for (int k = 0; k < argc; k++) {
        if (strncmp(argv[k], "--mode=", 7) == 0)
            mode = argv[k] + 7;
        else if (strcmp(argv[k], "--mode") == 0 && k + 1 < argc)
            mode = argv[++k];
        else if (strcmp(argv[k], "--jobs") == 0 && k + 1 < argc)
            jobs = strtol(argv[++k], NULL, 10);
        else if (argv[k][0] != '-' && path == NULL)
            path = argv[k];
        else
            return syncctl_usage(self);
    }
    if (path == NULL || jobs < 1 || jobs > MAX_JOBS ||
        (strcmp(mode, "empty") != 0 && strcmp(mode, "overwrite") != 0))
        return syncctl_usage(self);
    memset(&check, 0, sizeof(check));
    memset(&write, 0, sizeof(write));
    check.source = write.source = path;
    check.rehash = 1;
    check.verb = "restore: checked";
    write.verb = "restore: wrote";
    check.progress = write.progress = isatty(STDERR_FILENO);
    write.sink = put_line;
    write.arg = &pool;
    rc = read_file(&check, path);
    if (rc == SYNCCTL_OK && check.nsecs == 0)
        rc = syncctl_fail("%s: holds no collection", path);
    if (rc == SYNCCTL_OK && strcmp(mode, "empty") == 0)
        rc = check_empty(opts, &check);
    if (rc == SYNCCTL_OK) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        rc = pool_start(&pool, opts, (int)jobs);
        if (rc == SYNCCTL_OK)
            rc = read_file(&write, path);
        prc = pool_finish(&pool, rc != SYNCCTL_OK);
        if (rc == SYNCCTL_OK)
            rc = prc;
        curl_global_cleanup();
    }
    if (rc == SYNCCTL_OK)
        rc = compare_content(opts, &check, mode, write.docs);
    checker_free(&check);
    checker_free(&write);
    return rc;
}

/* ---- checkpoint ------------------------------------------------------ */

int syncctl_cmd_checkpoint(const syncctl_cmd_t *self,
                           const syncctl_opts_t *opts, int argc, char **argv)
{
    char q[4200] = "";
    char *url;
    json_t *v = NULL;
    long status = 0;
    int rc;

    if (argc != 1 || argv[0][0] != '/' || strlen(argv[0]) > 1024)
        return syncctl_usage(self);
    syncctl_add_query(q, sizeof(q), "dir", argv[0]);
    url = server_url(opts, "/v1/admin/checkpoint", q);
    if (url == NULL)
        return syncctl_fail("out of memory");
    rc = syncctl_call_json(opts, "POST", url, &status, &v);
    if (rc == SYNCCTL_OK && (status < 200 || status > 299))
        rc = syncctl_fail("POST %s: %ld: %s", url, status,
                          json_string_value(json_object_get(v, "message")) !=
                                  NULL
                              ? json_string_value(json_object_get(v, "message"))
                              : "error");
    else if (rc == SYNCCTL_OK)
        rc = syncctl_print_json(v);
    json_decref(v);
    free(url);
    return rc;
}
