/* bench_daemon.c - compare-and-swap and watch-latency load client for the
 * syncd daemon and etcd's HTTP JSON gateway.
 *
 * wrk covers the plain reads and puts (the Lua scripts next to it); this client
 * covers what needs per-connection state and correlation:
 *
 *   seed   writes the 1 KB benchmark document under a key.
 *   seed-many
 *          writes COUNT 1 KB documents under the keys KEY000000, KEY000001,
 *          ... over N connections (for wrk's random-key reads).
 *   cas    N threads, each with one keep-alive connection, increment a
 *          counter in one shared document for S seconds. syncd "put": the
 *          read-modify-write loop a user writes, like etcd's: GET the whole
 *          document, PUT it back with n+1 and If-Match, re-GET and retry on
 *          412. syncd "strict": the same with a JSON-Patch `replace /n`
 *          instead of the whole document. syncd "edit": a JSON-Patch without
 *          If-Match that sets the thread's own field /wK (the server's edit
 *          loop; the fields are distinct, so the patches never conflict by
 *          construction and this is not a compare-and-swap workload). etcd:
 *          the read-modify-CAS loop, a txn comparing mod_revision with a put
 *          of the whole document on success and a range on failure (so a
 *          retry costs no extra read, where syncd's costs a GET). Prints
 *          increments/s, p50/p99 latency per increment (retries included),
 *          conflicts and errors, then re-reads the document and checks that
 *          no increment was lost.
 *   big-put
 *          syncd only: PUTs of the 10,000-volume collection document of
 *          bench/README.md (1.75 MB) under KEY, one at a time over one
 *          connection, each with one volume changed, COUNT of them after a
 *          first PUT that creates it; prints the PUTs' latency p50/p99
 *          (the serialization of each body is not timed).
 *   big-patch
 *          the same document and changes as big-put, each sent as a JSON
 *          Patch PATCH that replaces the one volume (about 200 bytes)
 *          instead of the whole document; prints the same line.
 *   watch  one watcher stream (syncd SSE, etcd /v3/watch) and one writer
 *          doing COUNT updates at RATE per second; prints the latency from
 *          the write's acknowledgement (and from its send) to the event
 *          arriving on the stream, p50/p99/p999.
 *
 * Each command prints one line of key=value pairs for bench/daemon/run.sh.
 *
 * Usage: bench_daemon seed|seed-many|cas|watch|big-put|big-patch
 *        --target syncd|etcd
 *        --addr HOST:PORT --key K [--mode put|strict|edit] [--connections N]
 *        [--seconds S] [--count N] [--rate R]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "../common/volumes.h"
#include "httpc.h"

#define DOC_BYTES 1024
#define MAX_CONNECTIONS 256
#define STREAM_GRACE_NS 5000000000LL

typedef enum target { TARGET_SYNCD, TARGET_ETCD } target_t;

/* How a syncd cas client increments (see the file comment). */
typedef enum cas_mode { MODE_PUT, MODE_STRICT, MODE_EDIT } cas_mode_t;

typedef struct opts {
    const char *command;
    target_t target;
    const char *addr;
    const char *key;
    cas_mode_t mode;
    int connections;
    double seconds;
    long count;
    double rate;
} opts_t;

typedef struct samples {
    int64_t *v;
    size_t n, cap;
} samples_t;

typedef struct worker {
    const opts_t *o;
    int index;
    int64_t deadline;
    samples_t lat;
    size_t ok, conflicts, errors;
} worker_t;

/* What the watcher saw: the version (syncd) or revision (etcd) of each
 * event and when it arrived. */
typedef struct watch_state {
    const opts_t *o;
    httpc_t conn;
    char line[1 << 16];
    size_t line_len;
    samples_t keys, times;
    _Atomic int64_t deadline;
} watch_state_t;

static void die(const char *what)
{
    fprintf(stderr, "bench_daemon: %s\n", what);
    exit(1);
}

static int64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void samples_add(samples_t *s, int64_t v)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
        if (!s->v)
            die("out of memory");
    }
    s->v[s->n++] = v;
}

static int compare_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* Nearest-rank percentile q (0..1) of sorted samples, in milliseconds. */
static double percentile_ms(const samples_t *s, double q)
{
    size_t i;

    if (!s->n)
        return NAN;
    i = (size_t)ceil(q * (double)s->n);
    i = i ? i - 1 : 0;
    return (double)s->v[i < s->n ? i : s->n - 1] / 1e6;
}

/* The benchmark document with counter n: compact JSON of DOC_BYTES bytes
 * (a few fields and a pad). A new reference. */
static json_t *doc_new(long n)
{
    char pad[DOC_BYTES];
    json_t *doc = json_pack("{s:I, s:s, s:s, s:{s:s, s:s}}", "n", (json_int_t)n,
                            "kind", "volume", "name", "bench-doc", "labels",
                            "tier", "gold", "owner", "team-storage");
    char *s = json_dumps(doc, JSON_COMPACT);
    size_t fill = DOC_BYTES - strlen(s) - strlen(",\"pad\":\"\"");

    free(s);
    memset(pad, 'x', fill);
    pad[fill] = '\0';
    json_object_set_new(doc, "pad", json_string(pad));
    return doc;
}

/* Base64 of len bytes of data; the caller frees it. */
static char *b64_encode(const char *data, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);

    if (!out)
        die("out of memory");
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)data,
                    (int)len);
    return out;
}

/* Decodes base64 text into a new NUL-terminated string the caller frees. */
static char *b64_decode(const char *text)
{
    size_t len = strlen(text);
    char *out = malloc(3 * (len / 4) + 1);
    int n;

    if (!out)
        die("out of memory");
    n = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)text,
                        (int)len);
    if (n < 0)
        die("bad base64 from etcd");
    while (len && text[len - 1] == '=') {
        len--;
        n--;
    }
    out[n] = '\0';
    return out;
}

static void doc_path(char *out, size_t size, const opts_t *o)
{
    snprintf(out, size, "/v1/collections/c/docs/%s", o->key);
}

/* etcd: writes value under the benchmark key. Returns the new revision, or
 * -1. */
static long long etcd_put(httpc_t *c, const char *key_b64, const char *value)
{
    char *v = b64_encode(value, strlen(value));
    char *body;
    json_t *res;
    long long rev = -1;

    if (asprintf(&body, "{\"key\":\"%s\",\"value\":\"%s\"}", key_b64, v) < 0)
        die("out of memory");
    free(v);
    if (httpc_request(c, "POST", "/v3/kv/put", "", body, strlen(body)) == 200) {
        res = json_loads(c->body, 0, NULL);
        rev = strtoll(json_string_value(json_object_get(
                          json_object_get(res, "header"), "revision"))
                          ?: "-1",
                      NULL, 10);
        json_decref(res);
    }
    free(body);
    return rev;
}

/* etcd: reads the key's kv object from a range response body into *n and
 * *mod_rev. Returns 0 or -1. */
static int etcd_kv_parse(json_t *kv, long *n, long long *mod_rev)
{
    const char *value = json_string_value(json_object_get(kv, "value"));
    const char *rev = json_string_value(json_object_get(kv, "mod_revision"));
    char *text;
    json_t *doc;

    if (!value || !rev)
        return -1;
    text = b64_decode(value);
    doc = json_loads(text, 0, NULL);
    free(text);
    if (!doc)
        return -1;
    *n = (long)json_integer_value(json_object_get(doc, "n"));
    *mod_rev = strtoll(rev, NULL, 10);
    json_decref(doc);
    return 0;
}

/* etcd: range of the key into *n and *mod_rev. Returns 0 or -1. */
static int etcd_get(httpc_t *c, const char *key_b64, long *n,
                    long long *mod_rev)
{
    char body[256];
    json_t *res;
    int rc = -1;

    snprintf(body, sizeof(body), "{\"key\":\"%s\"}", key_b64);
    if (httpc_request(c, "POST", "/v3/kv/range", "", body, strlen(body)) != 200)
        return -1;
    res = json_loads(c->body, 0, NULL);
    rc = etcd_kv_parse(json_array_get(json_object_get(res, "kvs"), 0), n,
                       mod_rev);
    json_decref(res);
    return rc;
}

/* syncd: GET of the document into *n, *version and (when fields is not
 * NULL) a new reference to the whole body. Returns 0 or -1. */
static int syncd_get(httpc_t *c, const opts_t *o, long *n, long *version,
                     json_t **fields)
{
    char path[256];
    json_t *doc;

    doc_path(path, sizeof(path), o);
    if (httpc_request(c, "GET", path, "", NULL, 0) != 200)
        return -1;
    doc = json_loads(c->body, 0, NULL);
    if (!doc)
        return -1;
    *n = (long)json_integer_value(json_object_get(doc, "n"));
    *version = strtol(c->etag, NULL, 10);
    if (fields)
        *fields = doc;
    else
        json_decref(doc);
    return 0;
}

/* Writes text (the benchmark document) under key over c. Returns 0 or -1. */
static int put_doc(httpc_t *c, target_t target, const char *key,
                   const char *text)
{
    char path[256];
    int status;

    if (target == TARGET_ETCD) {
        char *key_b64 = b64_encode(key, strlen(key));
        int rc = etcd_put(c, key_b64, text) > 0 ? 0 : -1;

        free(key_b64);
        return rc;
    }
    snprintf(path, sizeof(path), "/v1/collections/c/docs/%s", key);
    status = httpc_request(c, "PUT", path, "Content-Type: application/json\r\n",
                           text, strlen(text));
    return status == 200 || status == 201 ? 0 : -1;
}

/* Writes the benchmark document with n = 0 under o->key. Returns 0 or -1. */
static int seed(const opts_t *o)
{
    httpc_t c;
    json_t *doc = doc_new(0);
    char *text = json_dumps(doc, JSON_COMPACT);
    int rc = -1;

    if (httpc_connect(&c, o->addr, 10) == 0)
        rc = put_doc(&c, o->target, o->key, text);
    httpc_close(&c);
    json_decref(doc);
    free(text);
    if (rc < 0)
        fprintf(stderr, "bench_daemon: seeding %s failed\n", o->key);
    return rc;
}

#define BIG_VOLUMES 10000

/* Sends one volume's change of the big document (volume `name`, its new
 * entry) as a JSON Patch. Returns 0 or -1. */
static int patch_volume(httpc_t *c, const char *key, const char *name,
                        json_t *entry)
{
    json_t *patch = json_pack("[{s:s, s:s+, s:O}]", "op", "replace", "path",
                              "/volumes/", name, "value", entry);
    char *text = patch != NULL ? json_dumps(patch, JSON_COMPACT) : NULL;
    char path[256];
    int status = -1;

    snprintf(path, sizeof(path), "/v1/collections/c/docs/%s", key);
    if (text != NULL)
        status = httpc_request(c, "PATCH", path,
                               "Content-Type: application/json-patch+json\r\n",
                               text, strlen(text));
    json_decref(patch);
    free(text);
    return status == 200 ? 0 : -1;
}

/* The big-put command, or big-patch with as_patch (see the file comment).
 * Returns 0, or 1 on a failed write. */
static int big_put(const opts_t *o, int as_patch)
{
    json_t *doc = bench_volume_doc("bench", BIG_VOLUMES);
    json_t *volumes = json_object_get(doc, "volumes");
    samples_t lat = {0};
    char *text = json_dumps(doc, JSON_COMPACT);
    char name[32];
    size_t bytes = strlen(text);
    httpc_t c;
    int rc = 1;

    if (httpc_connect(&c, o->addr, 30) < 0 ||
        put_doc(&c, TARGET_SYNCD, o->key, text) < 0)
        goto cleanup;
    for (long i = 0; i < o->count; i++) {
        int64_t t0;

        bench_volume_name(name, (int)(i % BIG_VOLUMES));
        json_object_set_new(volumes, name,
                            bench_volume_entry((int)(i % BIG_VOLUMES), i + 1));
        if (!as_patch) {
            free(text);
            text = json_dumps(doc, JSON_COMPACT);
        }
        t0 = mono_ns();
        if (as_patch ? patch_volume(&c, o->key, name,
                                    json_object_get(volumes, name)) < 0
                     : put_doc(&c, TARGET_SYNCD, o->key, text) < 0)
            goto cleanup;
        samples_add(&lat, mono_ns() - t0);
    }
    qsort(lat.v, lat.n, sizeof(*lat.v), compare_i64);
    printf("puts=%zu bytes=%zu p50_ms=%.1f p99_ms=%.1f\n", lat.n, bytes,
           percentile_ms(&lat, 0.5), percentile_ms(&lat, 0.99));
    rc = 0;
cleanup:
    if (rc != 0)
        fprintf(stderr, "bench_daemon: a big %s of %s failed\n",
                as_patch ? "PATCH" : "PUT", o->key);
    httpc_close(&c);
    json_decref(doc);
    free(text);
    free(lat.v);
    return rc;
}

/* One seed-many connection: keys [from, to). */
typedef struct seed_part {
    const opts_t *o;
    long from, to;
    int failed;
} seed_part_t;

static void *seed_thread(void *arg)
{
    seed_part_t *p = arg;
    json_t *doc = doc_new(0);
    char *text = json_dumps(doc, JSON_COMPACT);
    char key[128];
    httpc_t c;

    if (httpc_connect(&c, p->o->addr, 10) < 0) {
        p->failed = 1;
    } else {
        for (long i = p->from; i < p->to && !p->failed; i++) {
            snprintf(key, sizeof(key), "%s%06ld", p->o->key, i);
            p->failed = put_doc(&c, p->o->target, key, text) < 0;
        }
    }
    httpc_close(&c);
    json_decref(doc);
    free(text);
    return NULL;
}

/* Writes o->count documents KEY000000.. over o->connections connections.
 * Returns 0 or 1. */
static int seed_many(const opts_t *o)
{
    seed_part_t parts[MAX_CONNECTIONS];
    pthread_t threads[MAX_CONNECTIONS];
    int failed = 0;

    for (int i = 0; i < o->connections; i++) {
        parts[i] = (seed_part_t){o, o->count * i / o->connections,
                                 o->count * (i + 1) / o->connections, 0};
        if (pthread_create(&threads[i], NULL, seed_thread, &parts[i]) != 0)
            die("pthread_create failed");
    }
    for (int i = 0; i < o->connections; i++) {
        pthread_join(threads[i], NULL);
        failed |= parts[i].failed;
    }
    if (failed)
        fprintf(stderr, "bench_daemon: seeding %ld keys failed\n", o->count);
    return failed;
}

/* syncd edit loop: each request sets this thread's own field to its count
 * of successes so far plus one, without If-Match. */
static void cas_syncd_edit(worker_t *w, httpc_t *c)
{
    char path[256], body[128];

    doc_path(path, sizeof(path), w->o);
    while (mono_ns() < w->deadline) {
        int64_t t0 = mono_ns();
        int status;

        snprintf(body, sizeof(body),
                 "[{\"op\":\"add\",\"path\":\"/w%d\",\"value\":%zu}]", w->index,
                 w->ok + 1);
        status = httpc_request(c, "PATCH", path,
                               "Content-Type: application/json-patch+json\r\n",
                               body, strlen(body));
        if (status == 200) {
            w->ok++;
            samples_add(&w->lat, mono_ns() - t0);
        } else if (status == 409) {
            w->conflicts++;
        } else {
            w->errors++;
            if (status < 0)
                return;
        }
    }
}

/* syncd put: GET the document, PUT it with n+1 and If-Match; on 412 re-GET
 * and retry. */
static void cas_syncd_put(worker_t *w, httpc_t *c)
{
    char path[256], headers[128];
    json_t *doc = NULL;
    long n, version;

    doc_path(path, sizeof(path), w->o);
    if (syncd_get(c, w->o, &n, &version, &doc) < 0) {
        w->errors++;
        return;
    }
    while (mono_ns() < w->deadline) {
        int64_t t0 = mono_ns();
        int status;

        for (;;) {
            char *text;

            json_object_set_new(doc, "n", json_integer(n + 1));
            text = json_dumps(doc, JSON_COMPACT);
            if (!text)
                die("out of memory");
            snprintf(headers, sizeof(headers),
                     "Content-Type: application/json\r\n"
                     "If-Match: \"%ld\"\r\n",
                     version);
            status = httpc_request(c, "PUT", path, headers, text, strlen(text));
            free(text);
            if (status == 200)
                break;
            if (status == 412)
                w->conflicts++;
            else
                w->errors++;
            json_decref(doc);
            doc = NULL;
            if (status < 0 || syncd_get(c, w->o, &n, &version, &doc) < 0 ||
                mono_ns() >= w->deadline)
                goto cleanup;
        }
        n++;
        version = strtol(c->etag, NULL, 10);
        w->ok++;
        samples_add(&w->lat, mono_ns() - t0);
    }
cleanup:
    json_decref(doc);
}

/* syncd strict: PATCH /n to n+1 with If-Match; on 412 re-GET and retry. */
static void cas_syncd_strict(worker_t *w, httpc_t *c)
{
    char path[256], body[128], headers[128];
    long n, version;

    doc_path(path, sizeof(path), w->o);
    if (syncd_get(c, w->o, &n, &version, NULL) < 0) {
        w->errors++;
        return;
    }
    while (mono_ns() < w->deadline) {
        int64_t t0 = mono_ns();
        int status;

        for (;;) {
            snprintf(body, sizeof(body),
                     "[{\"op\":\"replace\",\"path\":\"/n\",\"value\":%ld}]",
                     n + 1);
            snprintf(headers, sizeof(headers),
                     "Content-Type: application/json-patch+json\r\n"
                     "If-Match: \"%ld\"\r\n",
                     version);
            status =
                httpc_request(c, "PATCH", path, headers, body, strlen(body));
            if (status == 200)
                break;
            if (status == 412)
                w->conflicts++;
            else
                w->errors++;
            if (status < 0 || syncd_get(c, w->o, &n, &version, NULL) < 0 ||
                mono_ns() >= w->deadline)
                return;
        }
        n++;
        version = strtol(c->etag, NULL, 10);
        w->ok++;
        samples_add(&w->lat, mono_ns() - t0);
    }
}

/* etcd: txn compare mod_revision == known, put n+1 on success, range on
 * failure (whose kv is the new known state). */
static void cas_etcd(worker_t *w, httpc_t *c)
{
    char *key_b64 = b64_encode(w->o->key, strlen(w->o->key));
    json_t *doc = doc_new(0);
    long n;
    long long rev;

    if (etcd_get(c, key_b64, &n, &rev) < 0) {
        w->errors++;
        goto cleanup;
    }
    while (mono_ns() < w->deadline) {
        int64_t t0 = mono_ns();

        for (;;) {
            char *text, *value, *body;
            json_t *res, *kv;
            int status, won;

            json_object_set_new(doc, "n", json_integer(n + 1));
            text = json_dumps(doc, JSON_COMPACT);
            value = b64_encode(text, strlen(text));
            if (asprintf(&body,
                         "{\"compare\":[{\"key\":\"%s\",\"target\":\"MOD\","
                         "\"mod_revision\":\"%lld\",\"result\":\"EQUAL\"}],"
                         "\"success\":[{\"request_put\":{\"key\":\"%s\","
                         "\"value\":\"%s\"}}],\"failure\":[{\"request_range\":"
                         "{\"key\":\"%s\"}}]}",
                         key_b64, rev, key_b64, value, key_b64) < 0)
                die("out of memory");
            status =
                httpc_request(c, "POST", "/v3/kv/txn", "", body, strlen(body));
            free(text);
            free(value);
            free(body);
            if (status != 200) {
                w->errors++;
                goto cleanup;
            }
            res = json_loads(c->body, 0, NULL);
            won = json_is_true(json_object_get(res, "succeeded"));
            if (won) {
                rev = strtoll(json_string_value(json_object_get(
                                  json_object_get(res, "header"), "revision")),
                              NULL, 10);
            } else {
                w->conflicts++;
                kv = json_array_get(
                    json_object_get(
                        json_object_get(
                            json_array_get(json_object_get(res, "responses"),
                                           0),
                            "response_range"),
                        "kvs"),
                    0);
                if (etcd_kv_parse(kv, &n, &rev) < 0) {
                    w->errors++;
                    json_decref(res);
                    goto cleanup;
                }
            }
            json_decref(res);
            if (won)
                break;
            if (mono_ns() >= w->deadline)
                goto cleanup;
        }
        n++;
        w->ok++;
        samples_add(&w->lat, mono_ns() - t0);
    }
cleanup:
    json_decref(doc);
    free(key_b64);
}

static void *cas_thread(void *arg)
{
    worker_t *w = arg;
    httpc_t c;

    if (httpc_connect(&c, w->o->addr, 30) < 0) {
        w->errors++;
        return NULL;
    }
    if (w->o->target == TARGET_ETCD)
        cas_etcd(w, &c);
    else if (w->o->mode == MODE_PUT)
        cas_syncd_put(w, &c);
    else if (w->o->mode == MODE_STRICT)
        cas_syncd_strict(w, &c);
    else
        cas_syncd_edit(w, &c);
    httpc_close(&c);
    return NULL;
}

/* Re-reads the document after a cas run and checks that it holds every
 * acknowledged increment. Returns 1 when it does, 0 when not. */
static int cas_verify(const opts_t *o, const worker_t *workers, size_t total)
{
    httpc_t c;
    long n = -1, version = 0;
    long long rev;
    json_t *doc = NULL;
    int good = 0;

    if (httpc_connect(&c, o->addr, 10) < 0)
        return 0;
    if (o->target == TARGET_ETCD) {
        char *key_b64 = b64_encode(o->key, strlen(o->key));

        good = etcd_get(&c, key_b64, &n, &rev) == 0 && n == (long)total;
        free(key_b64);
    } else if (syncd_get(&c, o, &n, &version, &doc) == 0) {
        good = 1;
        for (int i = 0; i < o->connections && o->mode == MODE_EDIT; i++) {
            char field[16];

            snprintf(field, sizeof(field), "w%d", i);
            if ((size_t)json_integer_value(json_object_get(doc, field)) !=
                workers[i].ok)
                good = 0;
        }
        if (o->mode != MODE_EDIT && n != (long)total)
            good = 0;
        if (version != (long)total + 1)
            good = 0;
    }
    json_decref(doc);
    httpc_close(&c);
    return good;
}

static int cas(const opts_t *o)
{
    worker_t workers[MAX_CONNECTIONS];
    pthread_t threads[MAX_CONNECTIONS];
    samples_t all = {0};
    size_t ok = 0, conflicts = 0, errors = 0;
    int64_t start, end;

    if (seed(o) < 0)
        return 1;
    start = mono_ns();
    for (int i = 0; i < o->connections; i++) {
        workers[i] =
            (worker_t){.o = o,
                       .index = i,
                       .deadline = start + (int64_t)(o->seconds * 1e9)};
        if (pthread_create(&threads[i], NULL, cas_thread, &workers[i]) != 0)
            die("pthread_create failed");
    }
    for (int i = 0; i < o->connections; i++)
        pthread_join(threads[i], NULL);
    end = mono_ns();
    for (int i = 0; i < o->connections; i++) {
        for (size_t j = 0; j < workers[i].lat.n; j++)
            samples_add(&all, workers[i].lat.v[j]);
        ok += workers[i].ok;
        conflicts += workers[i].conflicts;
        errors += workers[i].errors;
        free(workers[i].lat.v);
    }
    qsort(all.v, all.n, sizeof(*all.v), compare_i64);
    printf("ops=%zu secs=%.2f per_sec=%.0f p50_ms=%.2f p99_ms=%.2f "
           "conflicts=%zu errors=%zu verified=%s\n",
           ok, (double)(end - start) / 1e9,
           (double)ok * 1e9 / (double)(end - start), percentile_ms(&all, 0.5),
           percentile_ms(&all, 0.99), conflicts, errors,
           cas_verify(o, workers, ok) ? "yes" : "NO");
    free(all.v);
    return 0;
}

/* Records one event (its version or revision) with the arrival time. */
static void watch_line(watch_state_t *ws, char *line, int64_t now)
{
    json_t *msg, *events;
    size_t i;

    if (ws->o->target == TARGET_SYNCD) {
        if (strncmp(line, "data:", 5) != 0)
            return;
        msg = json_loads(line + 5, 0, NULL);
        if (json_integer_value(json_object_get(msg, "v")) > 0 &&
            strcmp(json_string_value(json_object_get(msg, "id")) ?: "",
                   ws->o->key) == 0) {
            samples_add(&ws->keys,
                        (int64_t)json_integer_value(json_object_get(msg, "v")));
            samples_add(&ws->times, now);
        }
        json_decref(msg);
        return;
    }
    msg = json_loads(line, 0, NULL);
    events = json_object_get(json_object_get(msg, "result"), "events");
    for (i = 0; i < json_array_size(events); i++) {
        const char *rev = json_string_value(json_object_get(
            json_object_get(json_array_get(events, i), "kv"), "mod_revision"));

        if (rev) {
            samples_add(&ws->keys, strtoll(rev, NULL, 10));
            samples_add(&ws->times, now);
        }
    }
    json_decref(msg);
}

/* Stream callback: splits the decoded body into lines. */
static void watch_data(void *arg, const char *data, size_t len)
{
    watch_state_t *ws = arg;
    int64_t now = mono_ns();

    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\n') {
            ws->line[ws->line_len] = '\0';
            watch_line(ws, ws->line, now);
            ws->line_len = 0;
        } else if (ws->line_len + 1 < sizeof(ws->line)) {
            ws->line[ws->line_len++] = data[i];
        }
    }
}

static void *watch_thread(void *arg)
{
    watch_state_t *ws = arg;

    while (ws->keys.n < (size_t)ws->o->count &&
           mono_ns() < atomic_load(&ws->deadline)) {
        errno = 0;
        if (httpc_stream_read(&ws->conn) < 0 && errno != EAGAIN &&
            errno != EWOULDBLOCK)
            break;
    }
    return NULL;
}

/* Opens the watch stream of the target. Returns 0 or -1. */
static int watch_open(watch_state_t *ws)
{
    char body[256];
    char *key_b64;
    int status;

    if (httpc_connect(&ws->conn, ws->o->addr, 1) < 0)
        return -1;
    if (ws->o->target == TARGET_SYNCD)
        return httpc_stream_open(&ws->conn, "GET", "/v1/collections/c/watch",
                                 NULL, watch_data, ws) == 200
                   ? 0
                   : -1;
    key_b64 = b64_encode(ws->o->key, strlen(ws->o->key));
    snprintf(body, sizeof(body), "{\"create_request\":{\"key\":\"%s\"}}",
             key_b64);
    free(key_b64);
    status =
        httpc_stream_open(&ws->conn, "POST", "/v3/watch", body, watch_data, ws);
    return status == 200 ? 0 : -1;
}

/* One update of the watched document; returns the new version (syncd) or
 * revision (etcd), or -1. */
static long long watch_write(httpc_t *c, const opts_t *o, long i)
{
    char path[256], body[128];

    if (o->target == TARGET_ETCD) {
        char *key_b64 = b64_encode(o->key, strlen(o->key));
        json_t *doc = doc_new(i);
        char *text = json_dumps(doc, JSON_COMPACT);
        long long rev = etcd_put(c, key_b64, text);

        free(text);
        json_decref(doc);
        free(key_b64);
        return rev;
    }
    doc_path(path, sizeof(path), o);
    snprintf(body, sizeof(body),
             "[{\"op\":\"replace\",\"path\":\"/n\",\"value\":%ld}]", i);
    if (httpc_request(c, "PATCH", path,
                      "Content-Type: application/json-patch+json\r\n", body,
                      strlen(body)) != 200)
        return -1;
    return strtoll(c->etag, NULL, 10);
}

static int watch(const opts_t *o)
{
    watch_state_t *ws = calloc(1, sizeof(*ws));
    samples_t from_ack = {0}, from_send = {0}, acks = {0}, sends = {0},
              keys = {0};
    httpc_t writer;
    pthread_t thread;
    size_t early = 0, matched = 0, j = 0;
    int64_t start, interval = (int64_t)(1e9 / o->rate);
    struct timespec pause = {.tv_nsec = 200000000};

    if (!ws)
        die("out of memory");
    ws->o = o;
    atomic_init(&ws->deadline, INT64_MAX);
    if (seed(o) < 0 || watch_open(ws) < 0 ||
        httpc_connect(&writer, o->addr, 10) < 0)
        die("cannot open the watch or the writer");
    if (pthread_create(&thread, NULL, watch_thread, ws) != 0)
        die("pthread_create failed");
    nanosleep(&pause, NULL);
    start = mono_ns();
    for (long i = 0; i < o->count; i++) {
        int64_t due = start + i * interval, t_send, now;
        long long key;

        while ((now = mono_ns()) < due) {
            struct timespec ts = {.tv_nsec = due - now};

            nanosleep(&ts, NULL);
        }
        t_send = mono_ns();
        key = watch_write(&writer, o, i + 1);
        if (key < 0)
            die("a watched write failed");
        samples_add(&sends, t_send);
        samples_add(&acks, mono_ns());
        samples_add(&keys, key);
    }
    atomic_store(&ws->deadline, mono_ns() + STREAM_GRACE_NS);
    pthread_join(thread, NULL);
    /* Both key lists ascend: join them. */
    for (size_t i = 0; i < keys.n; i++) {
        while (j < ws->keys.n && ws->keys.v[j] < keys.v[i])
            j++;
        if (j == ws->keys.n || ws->keys.v[j] != keys.v[i])
            continue;
        matched++;
        samples_add(&from_ack, ws->times.v[j] - acks.v[i]);
        samples_add(&from_send, ws->times.v[j] - sends.v[i]);
        if (ws->times.v[j] < acks.v[i])
            early++;
    }
    qsort(from_ack.v, from_ack.n, sizeof(int64_t), compare_i64);
    qsort(from_send.v, from_send.n, sizeof(int64_t), compare_i64);
    printf("events=%zu writes=%zu ack_p50_ms=%.3f ack_p99_ms=%.3f "
           "ack_p999_ms=%.3f send_p50_ms=%.3f send_p99_ms=%.3f "
           "send_p999_ms=%.3f early=%zu\n",
           matched, keys.n, percentile_ms(&from_ack, 0.5),
           percentile_ms(&from_ack, 0.99), percentile_ms(&from_ack, 0.999),
           percentile_ms(&from_send, 0.5), percentile_ms(&from_send, 0.99),
           percentile_ms(&from_send, 0.999), early);
    httpc_close(&writer);
    httpc_close(&ws->conn);
    free(ws->keys.v);
    free(ws->times.v);
    free(ws);
    free(from_ack.v);
    free(from_send.v);
    free(acks.v);
    free(sends.v);
    free(keys.v);
    return matched == keys.n ? 0 : 1;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_daemon seed|seed-many|cas|watch|big-put|big-patch "
            "--target syncd|etcd --addr HOST:PORT --key K\n"
            "       [--mode put|strict|edit] [--connections N] [--seconds S]\n"
            "       [--count N] [--rate R]\n");
    exit(2);
}

static void parse_args(opts_t *o, int argc, char **argv)
{
    if (argc < 2)
        usage();
    *o = (opts_t){.command = argv[1],
                  .mode = MODE_EDIT,
                  .connections = 1,
                  .seconds = 10,
                  .count = 2000,
                  .rate = 200};
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *flag = argv[i], *value = argv[i + 1];

        if (strcmp(flag, "--target") == 0)
            o->target = strcmp(value, "etcd") == 0 ? TARGET_ETCD : TARGET_SYNCD;
        else if (strcmp(flag, "--addr") == 0)
            o->addr = value;
        else if (strcmp(flag, "--key") == 0)
            o->key = value;
        else if (strcmp(flag, "--mode") == 0)
            o->mode = strcmp(value, "put") == 0      ? MODE_PUT
                      : strcmp(value, "strict") == 0 ? MODE_STRICT
                                                     : MODE_EDIT;
        else if (strcmp(flag, "--connections") == 0)
            o->connections = atoi(value);
        else if (strcmp(flag, "--seconds") == 0)
            o->seconds = atof(value);
        else if (strcmp(flag, "--count") == 0)
            o->count = atol(value);
        else if (strcmp(flag, "--rate") == 0)
            o->rate = atof(value);
        else
            usage();
    }
    if (!o->addr || !o->key || o->connections < 1 ||
        o->connections > MAX_CONNECTIONS || o->seconds <= 0 || o->count < 1 ||
        o->rate <= 0)
        usage();
}

int main(int argc, char **argv)
{
    opts_t o;

    parse_args(&o, argc, argv);
    if (strcmp(o.command, "seed") == 0)
        return seed(&o) < 0;
    if (strcmp(o.command, "seed-many") == 0)
        return seed_many(&o);
    if (strcmp(o.command, "cas") == 0)
        return cas(&o);
    if (strcmp(o.command, "watch") == 0)
        return watch(&o);
    if (strcmp(o.command, "big-put") == 0)
        return big_put(&o, 0);
    if (strcmp(o.command, "big-patch") == 0)
        return big_put(&o, 1);
    usage();
    return 2;
}
