/* stream_check.c - checks watcher streams against the versions the store of
 * record committed (tests/test_cluster.sh).
 *
 * A stream is the output of `syncctl watch C --since 0`: one change event
 * JSON per line, each with its seq, id and v. A stream argument "F1+F2" is
 * F1 followed by F2 (a watcher that was resumed, possibly on another node,
 * with --since the last seq of F1). Only complete lines count, so a file
 * that is still being written can be read at any time.
 *
 *   stream_check last FILE
 *       prints the seq of the last event in FILE (0 when there is none).
 *   stream_check reached SEQ STREAM...
 *       exits 0 when every stream's last event has a seq >= SEQ.
 *   stream_check check MONGO_URI DATABASE COLL STREAM...
 *       reads {_id, v, del} of every document of COLL straight from MongoDB
 *       (the store of record, not syncd), then exits 0 only when every
 *       stream holds, for every document, each version 1..v exactly once
 *       and in increasing order (v45 before v44 is a violation even when
 *       both came), the tombstone's version as a delete, no version the
 *       store does not hold, and seqs 1, 2, 3, ... without a gap or a
 *       repeat (DESIGN.md sections 4 and 5: every committed version reaches
 *       every watcher, exactly once, in seq order). Every stream after the
 *       first must also carry the same (id, v) as the first under each seq
 *       both hold. Violations are printed (the first MAX_REPORTS per
 *       stream; missing versions as ranges, with the seqs at which the
 *       versions around them came), then a summary line per stream.
 *
 * Exit status: 0 holds, 1 does not hold, 2 usage or I/O error.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <mongoc/mongoc.h>

/* Violations printed per stream before the rest are only counted. */
#define MAX_REPORTS 40

/* One change event as a stream shows it. */
typedef struct event {
    int64_t seq;
    int64_t v;
    char *id;
    int is_delete;
} event_t;

typedef struct events {
    event_t *v;
    size_t n, cap;
} events_t;

/* One document of the store: its committed version, and per stream the
 * seq at which each version 1..v came (0: not yet) and the highest version
 * seen so far. */
typedef struct doc {
    char *id;
    int64_t v;
    int deleted;
    int64_t *seq_of;
    int64_t top;
} doc_t;

typedef struct store {
    doc_t *docs;
    size_t n, cap;
} store_t;

/* Violations of one stream. */
typedef struct report {
    const char *name;
    size_t problems;
} report_t;

static void *xrealloc(void *p, size_t size)
{
    p = realloc(p, size);
    if (p == NULL) {
        fprintf(stderr, "stream_check: out of memory\n");
        exit(2);
    }
    return p;
}

static void events_free(events_t *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->v[i].id);
    free(e->v);
}

/* Appends the complete event lines of path to out. Returns 0, or -1 when
 * the file cannot be read or a complete line is not a change event. */
static int read_file(events_t *out, const char *path)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int rc = 0;

    if (f == NULL) {
        fprintf(stderr, "stream_check: cannot open %s\n", path);
        return -1;
    }
    while ((len = getline(&line, &cap, f)) > 0) {
        json_t *ev, *seq, *v, *id, *op;

        if (line[len - 1] != '\n')
            break;
        ev = json_loads(line, 0, NULL);
        seq = json_object_get(ev, "seq");
        v = json_object_get(ev, "v");
        id = json_object_get(ev, "id");
        op = json_object_get(ev, "op");
        if (!json_is_integer(seq) || !json_is_integer(v) ||
            !json_is_string(id) || !json_is_string(op)) {
            fprintf(stderr, "stream_check: %s: not a change event: %s", path,
                    line);
            json_decref(ev);
            rc = -1;
            break;
        }
        if (out->n == out->cap) {
            out->cap = out->cap ? 2 * out->cap : 1024;
            out->v = xrealloc(out->v, out->cap * sizeof(*out->v));
        }
        out->v[out->n++] =
            (event_t){json_integer_value(seq), json_integer_value(v),
                      strdup(json_string_value(id)),
                      strcmp(json_string_value(op), "delete") == 0};
        json_decref(ev);
    }
    free(line);
    fclose(f);
    return rc;
}

/* Reads the stream arg ("F1+F2+..."). Returns 0 or -1. */
static int read_stream(events_t *out, const char *arg)
{
    char *copy = strdup(arg), *save = NULL, *path;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    for (path = strtok_r(copy, "+", &save); path != NULL && rc == 0;
         path = strtok_r(NULL, "+", &save))
        rc = read_file(out, path);
    free(copy);
    return rc;
}

static int compare_docs(const void *a, const void *b)
{
    return strcmp(((const doc_t *)a)->id, ((const doc_t *)b)->id);
}

static doc_t *store_find(store_t *s, const char *id)
{
    doc_t key = {.id = (char *)id};

    return bsearch(&key, s->docs, s->n, sizeof(*s->docs), compare_docs);
}

static void store_free(store_t *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->docs[i].id);
        free(s->docs[i].seq_of);
    }
    free(s->docs);
}

/* Moves doc, read at version doc->v in incarnation inc, along the commit
 * chain of FerretDB mode (storage/mongo.c): while the commit record of the
 * next version exists in commits, the document is at that version (a
 * purge fence reads as deleted). */
static void chain_follow(doc_t *doc, const char *inc,
                         mongoc_collection_t *commits)
{
    for (;;) {
        char key[1024];
        bson_t *filter;
        mongoc_cursor_t *cur;
        const bson_t *r;
        bson_iter_t it, sub;
        int found;

        snprintf(key, sizeof(key), "%s\x1f%s\x1f%020lld", doc->id, inc,
                 (long long)doc->v);
        filter = BCON_NEW("_id", BCON_UTF8(key));
        cur = mongoc_collection_find_with_opts(commits, filter, NULL, NULL);
        found = mongoc_cursor_next(cur, &r);
        if (found) {
            doc->v++;
            if (bson_iter_init_find(&it, r, "p"))
                doc->deleted = 1;
            else if (bson_iter_init_find(&it, r, "r") &&
                     bson_iter_recurse(&it, &sub) &&
                     bson_iter_find(&sub, "del"))
                doc->deleted = bson_iter_as_bool(&sub);
            else if (bson_iter_init_find(&it, r, "r"))
                doc->deleted = 0;
        }
        mongoc_cursor_destroy(cur);
        bson_destroy(filter);
        if (!found)
            return;
    }
}

/* Reads {_id, v, del} of every document of coll in database db, sorted by
 * id, each followed along its commit chain when it has one. Returns 0 or
 * -1 (printed). */
static int store_read(store_t *s, const char *uri, const char *db,
                      const char *coll)
{
    mongoc_client_t *client = mongoc_client_new(uri);
    mongoc_collection_t *c = NULL;
    mongoc_cursor_t *cur = NULL;
    bson_t *filter = bson_new();
    bson_t *opts = BCON_NEW("projection", "{", "v", BCON_INT32(1), "del",
                            BCON_INT32(1), "n", BCON_INT32(1), "}");
    mongoc_collection_t *commits = NULL;
    char name[256];
    const bson_t *d;
    bson_error_t e;
    int rc = -1;

    memset(s, 0, sizeof(*s));
    if (client == NULL) {
        fprintf(stderr, "stream_check: bad MongoDB URI %s\n", uri);
        goto cleanup;
    }
    c = mongoc_client_get_collection(client, db, coll);
    snprintf(name, sizeof(name), "_syncd_commits.%s", coll);
    commits = mongoc_client_get_collection(client, db, name);
    cur = mongoc_collection_find_with_opts(c, filter, opts, NULL);
    while (mongoc_cursor_next(cur, &d)) {
        bson_iter_t it;
        doc_t doc = {0};

        if (!bson_iter_init_find(&it, d, "_id") || !BSON_ITER_HOLDS_UTF8(&it))
            continue;
        doc.id = strdup(bson_iter_utf8(&it, NULL));
        if (bson_iter_init_find(&it, d, "v"))
            doc.v = bson_iter_as_int64(&it);
        if (bson_iter_init_find(&it, d, "del"))
            doc.deleted = bson_iter_as_bool(&it);
        chain_follow(&doc,
                     bson_iter_init_find(&it, d, "n") &&
                             BSON_ITER_HOLDS_UTF8(&it)
                         ? bson_iter_utf8(&it, NULL)
                         : "",
                     commits);
        if (s->n == s->cap) {
            s->cap = s->cap ? 2 * s->cap : 64;
            s->docs = xrealloc(s->docs, s->cap * sizeof(*s->docs));
        }
        s->docs[s->n++] = doc;
    }
    if (mongoc_cursor_error(cur, &e)) {
        fprintf(stderr, "stream_check: reading %s.%s: %s\n", db, coll,
                e.message);
        goto cleanup;
    }
    qsort(s->docs, s->n, sizeof(*s->docs), compare_docs);
    rc = 0;
cleanup:
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(commits);
    mongoc_collection_destroy(c);
    mongoc_client_destroy(client);
    bson_destroy(filter);
    bson_destroy(opts);
    return rc;
}

/* Prints one violation of r's stream, unless past MAX_REPORTS. */
static void problem(report_t *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void problem(report_t *r, const char *fmt, ...)
{
    va_list ap;

    if (r->problems < MAX_REPORTS) {
        printf("%s: ", r->name);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        putchar('\n');
    }
    r->problems++;
}

/* Reports versions from..to of d as missing, with the seqs at which the
 * versions around them came. */
static void missing(report_t *r, const doc_t *d, int64_t from, int64_t to)
{
    const char *id = d->id;
    char where[96];

    if (from == 1 && to == d->v)
        snprintf(where, sizeof(where), "no version came");
    else if (from == 1)
        snprintf(where, sizeof(where), "v%" PRId64 " came at seq %" PRId64,
                 to + 1, d->seq_of[to + 1]);
    else if (to == d->v)
        snprintf(where, sizeof(where),
                 "v%" PRId64 " came at seq %" PRId64 ", nothing after",
                 from - 1, d->seq_of[from - 1]);
    else
        snprintf(where, sizeof(where),
                 "v%" PRId64 " came at seq %" PRId64 ", v%" PRId64
                 " at seq %" PRId64,
                 from - 1, d->seq_of[from - 1], to + 1, d->seq_of[to + 1]);
    if (from == to)
        problem(r, "%s: v%" PRId64 " missing (%s)", id, from, where);
    else
        problem(r,
                "%s: v%" PRId64 "..v%" PRId64 " missing, %" PRId64
                " versions (%s)",
                id, from, to, to - from + 1, where);
}

/* The event of ref (the first stream) with the given seq, or NULL. */
static const event_t *ref_event(const events_t *ref, int64_t seq)
{
    size_t lo = 0, hi = ref->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (ref->v[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < ref->n && ref->v[lo].seq == seq ? &ref->v[lo] : NULL;
}

/* Checks one stream against the store and, when ref is not NULL, each of
 * its seqs against the same seq in ref (seqs are the same on every node).
 * Returns the number of violations. */
static size_t check_stream(store_t *s, const char *name, const events_t *e,
                           const events_t *ref, const char *ref_name)
{
    report_t r = {name, 0};
    int64_t last_seq = 0;

    for (size_t i = 0; i < s->n; i++) {
        doc_t *d = &s->docs[i];

        free(d->seq_of);
        d->seq_of = calloc((size_t)d->v + 1, sizeof(*d->seq_of));
        if (d->seq_of == NULL) {
            fprintf(stderr, "stream_check: out of memory\n");
            exit(2);
        }
        d->top = 0;
    }
    for (size_t i = 0; i < e->n; i++) {
        const event_t *ev = &e->v[i], *other;
        doc_t *d = store_find(s, ev->id);

        if (ev->seq != last_seq + 1)
            problem(&r, "seq %" PRId64 " follows seq %" PRId64, ev->seq,
                    last_seq);
        last_seq = ev->seq;
        if (ref != NULL && (other = ref_event(ref, ev->seq)) != NULL &&
            (other->v != ev->v || strcmp(other->id, ev->id) != 0))
            problem(&r,
                    "seq %" PRId64 " is %s v%" PRId64 " here, %s v%" PRId64
                    " in %s",
                    ev->seq, ev->id, ev->v, other->id, other->v, ref_name);
        if (d == NULL || ev->v < 1 || ev->v > d->v) {
            problem(&r,
                    "%s: v%" PRId64 " at seq %" PRId64
                    " was never committed (the store holds v%" PRId64 ")",
                    ev->id, ev->v, ev->seq, d ? d->v : 0);
            continue;
        }
        if (d->seq_of[ev->v] != 0) {
            problem(&r,
                    "%s: v%" PRId64 " at seq %" PRId64
                    " repeats (it came at seq %" PRId64 ")",
                    ev->id, ev->v, ev->seq, d->seq_of[ev->v]);
            continue;
        }
        if (ev->v < d->top)
            problem(&r,
                    "%s: v%" PRId64 " at seq %" PRId64 " comes after v%" PRId64
                    " (seq %" PRId64 "): out of order",
                    ev->id, ev->v, ev->seq, d->top, d->seq_of[d->top]);
        if (ev->v == d->v && ev->is_delete != d->deleted)
            problem(&r,
                    "%s: v%" PRId64 " at seq %" PRId64
                    " is %sa delete, but the store %s",
                    ev->id, ev->v, ev->seq, ev->is_delete ? "" : "not ",
                    d->deleted ? "holds a tombstone" : "holds a live document");
        d->seq_of[ev->v] = ev->seq;
        if (ev->v > d->top)
            d->top = ev->v;
    }
    for (size_t i = 0; i < s->n; i++) {
        doc_t *d = &s->docs[i];

        for (int64_t v = 1; v <= d->v; v++) {
            int64_t to = v;

            if (d->seq_of[v] != 0)
                continue;
            while (to < d->v && d->seq_of[to + 1] == 0)
                to++;
            missing(&r, d, v, to);
            v = to;
        }
    }
    if (r.problems > MAX_REPORTS)
        printf("%s: ... %zu more\n", name, r.problems - MAX_REPORTS);
    printf("%s: %zu events, seqs up to %" PRId64 ", %zu violations\n", name,
           e->n, last_seq, r.problems);
    return r.problems;
}

static int cmd_check(int argc, char **argv)
{
    store_t s;
    events_t ref = {0};
    size_t bad = 0;
    int64_t versions = 0;

    if (argc < 4)
        return -1;
    mongoc_init();
    if (store_read(&s, argv[0], argv[1], argv[2]) < 0) {
        mongoc_cleanup();
        return 2;
    }
    for (size_t i = 0; i < s.n; i++)
        versions += s.docs[i].v;
    printf("store: %zu documents, %" PRId64 " committed versions\n", s.n,
           versions);
    for (int i = 3; i < argc; i++) {
        events_t e;

        if (read_stream(&e, argv[i]) < 0) {
            events_free(&e);
            events_free(&ref);
            store_free(&s);
            mongoc_cleanup();
            return 2;
        }
        bad += check_stream(&s, argv[i], &e, i > 3 ? &ref : NULL, argv[3]);
        if (i == 3)
            ref = e;
        else
            events_free(&e);
    }
    events_free(&ref);
    store_free(&s);
    mongoc_cleanup();
    return bad ? 1 : 0;
}

/* The seq of the last event of stream arg, or -1 when it cannot be read. */
static int64_t last_seq(const char *arg)
{
    events_t e;
    int64_t seq = -1;

    if (read_stream(&e, arg) == 0)
        seq = e.n ? e.v[e.n - 1].seq : 0;
    events_free(&e);
    return seq;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: stream_check last FILE\n"
            "       stream_check reached SEQ STREAM...\n"
            "       stream_check check MONGO_URI DATABASE COLL "
            "STREAM...\n"
            "A STREAM is a file of `syncctl watch` output, or F1+F2 for a "
            "resumed watcher.\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int rc;

    if (argc == 3 && strcmp(argv[1], "last") == 0) {
        int64_t seq = last_seq(argv[2]);

        if (seq < 0)
            return 2;
        printf("%" PRId64 "\n", seq);
        return 0;
    }
    if (argc >= 4 && strcmp(argv[1], "reached") == 0) {
        int64_t want = strtoll(argv[2], NULL, 10);

        for (int i = 3; i < argc; i++) {
            if (last_seq(argv[i]) < want)
                return 1;
        }
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "check") == 0) {
        rc = cmd_check(argc - 2, argv + 2);
        if (rc >= 0)
            return rc;
    }
    usage();
    return 2;
}
