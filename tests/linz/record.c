/* record.c - linz_record: records a history of concurrent clients against
 * running syncd nodes, for the Porcupine checker (tests/linz/checker).
 *
 *   linz_record --out FILE [--seconds N] [--clients N] [--keys N]
 *               [--epoch-seconds N] [--slots N] [--coll NAME]
 *               [--timeout-ms MS] [--seed S] URL...
 *
 * Client i is a thread pinned to node URL[i % nodes], with one request in
 * flight at a time. Until the time is up it picks one of the keys
 * e<E>-k0..e<E>-kN-1 of the current epoch E (a new set of keys every
 * --epoch-seconds, 15 by default: a request of unknown outcome stays
 * pending to the end of its key's history, and the checker's search grows
 * with those, so a long run is many short histories) and one request: a read
 * (GET), a blind write (PUT, no precondition), an If-Match write (PUT with the
 * version it last saw), a test-and-set JSON Patch (`test` of the value it last
 * saw, then `replace`) or a DELETE. Every value written is
 * {"val":"c<client>-<n>"}, unique in the history.
 *
 * With --slots N (N >= 4), the documents are a fixed set instead, so that a
 * long run does not add documents: epoch E works on the documents
 * s<E mod N>-k0..kN-1 (the history's "key" stays e<E>-k<i>, so each epoch
 * is still a history of its own, and "doc" names the document). A slot
 * holds what its last epoch left, so before epoch E a preparer (one more
 * thread, during epoch E-1) resets each of its documents: a PUT of
 * {"val":"init-e<E>-k<i>"} (retried until answered, waiting --timeout-ms
 * after an answer of unknown outcome so that it cannot land later), then
 * GETs on every node until all serve the same version and that value. It
 * records that state as an "init" operation (checker/model.go: legal only
 * as the first operation of its key), and the clients start on epoch E
 * only after it returned. A slot is reused N epochs later, long after its
 * last requests ended (they take at most --timeout-ms). An epoch whose
 * reset could not finish within the epoch is skipped.
 *
 * Each request becomes one JSON line in FILE (see checker/history.go):
 * call and return times on one monotonic clock (ns since the start), the
 * input, and the status, ETag version and read value. A request that got
 * no answer (timeout, reset) or a 5xx is recorded as unknown: it may or
 * may not have taken effect. A connection that was refused sent nothing,
 * so it is not recorded. Writes always go out on a fresh connection: libcurl
 * resends a request whose reused connection died without an answer, which
 * would apply a write twice behind the history's back.
 *
 * It only talks HTTP, so faults (a fault hook, Toxiproxy, signals) can be
 * injected from outside while it runs. Exit status 0 when the history was
 * written, 1 on an error, 2 on a usage error.
 */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 64
#define MAX_KEYS 64
#define MAX_NODES 16
#define MAX_SLOTS 64
#define MIN_SLOTS 4

typedef enum op { OP_READ, OP_PUT, OP_PUT_IF, OP_TAS, OP_DELETE } op_t;

static const char *const op_names[] = {"read", "put", "put_if", "tas",
                                       "delete"};

/* Per cent of requests of each op, in op_t order. */
static const int op_weights[] = {40, 12, 18, 20, 10};

typedef struct options {
    const char *out;
    const char *coll;
    const char *urls[MAX_NODES];
    int nodes, clients, keys, slots;
    long seconds, timeout_ms, epoch_seconds;
    unsigned seed;
} options_t;

/* What one client last saw of one key. */
typedef struct seen {
    int64_t ver;
    char val[64];
} seen_t;

typedef struct client {
    pthread_t thread;
    int id, node;
    const options_t *opts;
    unsigned rand;
    int64_t writes; /* values written so far, for unique values */
    long epoch;     /* the epoch of the keys in seen */
    seen_t seen[MAX_KEYS];
    long recorded, unknown, refused;
} client_t;

typedef struct answer {
    long status; /* 0: no answer */
    int unknown; /* no answer or a 5xx */
    int refused; /* nothing was sent */
    int64_t ver;
    char body[8192];
    size_t len;
} answer_t;

static FILE *out_file;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static struct timespec start_time;
static int64_t deadline_ns;

/* With --slots: prepared[s] is the epoch whose reset of slot s is done (-1:
 * none yet). Written by the preparer, read by the clients. */
static long prepared[MAX_SLOTS];

static int64_t now_ns(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)(t.tv_sec - start_time.tv_sec) * 1000000000 +
           (t.tv_nsec - start_time.tv_nsec);
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    answer_t *a = arg;
    size_t len = size * n;

    if (a->len + len < sizeof(a->body)) {
        memcpy(a->body + a->len, data, len);
        a->len += len;
        a->body[a->len] = '\0';
    }
    return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    answer_t *a = arg;
    size_t len = size * n;
    const char *p = data + 5;

    if (len > 5 && strncasecmp(data, "ETag:", 5) == 0) {
        while (*p == ' ' || *p == '"')
            p++;
        a->ver = strtoll(p, NULL, 10);
    }
    return len;
}

/* Sends one request on curl; a write (fresh = 1) on a new connection. */
static void send_request(CURL *curl, answer_t *a, const char *method,
                         const char *url, const char *body,
                         const char *content_type, const char *if_match,
                         int fresh, long timeout_ms)
{
    struct curl_slist *hl = NULL;
    char line[128];
    CURLcode rc;

    memset(a, 0, sizeof(*a));
    if (content_type != NULL) {
        snprintf(line, sizeof(line), "Content-Type: %s", content_type);
        hl = curl_slist_append(hl, line);
    }
    if (if_match != NULL) {
        snprintf(line, sizeof(line), "If-Match: %s", if_match);
        hl = curl_slist_append(hl, line);
    }
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_FRESH_CONNECT, (long)fresh);
    curl_easy_setopt(curl, CURLOPT_FORBID_REUSE, (long)fresh);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, a);
    if (body != NULL)
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    rc = curl_easy_perform(curl);
    if (rc == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &a->status);
    if (rc == CURLE_COULDNT_CONNECT)
        a->refused = 1;
    else if (rc != CURLE_OK || a->status >= 500)
        a->unknown = 1;
    curl_slist_free_all(hl);
}

/* The string member "val" of a JSON text, copied into out; 0 or -1. */
static int body_val(const char *text, char *out, size_t size)
{
    json_t *doc = json_loads(text, 0, NULL);
    const char *v = json_string_value(json_object_get(doc, "val"));
    int rc = -1;

    if (v != NULL && strlen(v) < size) {
        strcpy(out, v);
        rc = 0;
    }
    json_decref(doc);
    return rc;
}

/* Tells whether a 409 says that the edit loop gave up on conflicts (rather
 * than that the `test` operation of a test-and-set failed). */
static int gave_up(const char *text)
{
    json_t *doc = json_loads(text, 0, NULL);
    const char *msg = json_string_value(json_object_get(doc, "message"));
    int rc = msg != NULL && strstr(msg, "value differs") == NULL;

    json_decref(doc);
    return rc;
}

static int pick(client_t *c, int n)
{
    return (int)(rand_r(&c->rand) % (unsigned)n);
}

static op_t pick_op(client_t *c)
{
    int r = pick(c, 100);

    for (int i = 0; i < (int)(sizeof(op_weights) / sizeof(op_weights[0]));
         i++) {
        if (r < op_weights[i])
            return (op_t)i;
        r -= op_weights[i];
    }
    return OP_READ;
}

/* Writes one line to the history file; 0 or -1. */
static int write_line(json_t *line)
{
    int rc;

    pthread_mutex_lock(&out_lock);
    rc = json_dumpf(line, out_file, JSON_COMPACT) == 0 &&
                 fputc('\n', out_file) != EOF
             ? 0
             : -1;
    pthread_mutex_unlock(&out_lock);
    return rc;
}

/* Writes one history line; doc is the document id when it is not the key
 * (--slots), else NULL. 0 or -1. */
static int record(client_t *c, op_t op, const char *key, const char *doc,
                  int64_t call, int64_t ret, const char *val, int64_t expect,
                  const char *test, const answer_t *a, const char *out,
                  int exhausted)
{
    json_t *line;
    int rc = -1;

    line = json_pack("{s:i, s:i, s:s, s:s, s:I, s:I, s:I, s:I}", "client",
                     c->id, "node", c->node, "key", key, "op", op_names[op],
                     "call", (json_int_t)call, "ret", (json_int_t)ret, "status",
                     (json_int_t)a->status, "ver", (json_int_t)a->ver);
    if (line == NULL)
        return -1;
    if (val != NULL && json_object_set_new(line, "val", json_string(val)))
        goto cleanup;
    if (op == OP_PUT_IF &&
        json_object_set_new(line, "expect", json_integer(expect)) != 0)
        goto cleanup;
    if (test != NULL && json_object_set_new(line, "test", json_string(test)))
        goto cleanup;
    if (out != NULL && json_object_set_new(line, "out", json_string(out)))
        goto cleanup;
    if (a->unknown && json_object_set_new(line, "unknown", json_true()))
        goto cleanup;
    if (exhausted && json_object_set_new(line, "exhausted", json_true()))
        goto cleanup;
    if (doc != NULL && json_object_set_new(line, "doc", json_string(doc)))
        goto cleanup;
    rc = write_line(line);
cleanup:
    json_decref(line);
    return rc;
}

/* Runs one request of client c; 0 or -1 (the history could not be
 * written). */
static int client_step(client_t *c, CURL *curl)
{
    const options_t *o = c->opts;
    op_t op = pick_op(c);
    int k = pick(c, o->keys);
    long epoch = (long)(now_ns() / 1000000000 / o->epoch_seconds);
    seen_t *s;
    char key[32], doc[32], url[512], val[64], test[64], body[256], etag[32];
    char out[64];
    const char *method = "GET", *ctype = NULL, *if_match = NULL;
    const char *payload = NULL;
    int64_t call, ret, expect;
    int have_out = 0, exhausted = 0;
    answer_t a;

    if (epoch != c->epoch) {
        memset(c->seen, 0, sizeof(c->seen));
        c->epoch = epoch;
    }
    if (o->slots > 0 && __atomic_load_n(&prepared[epoch % o->slots],
                                        __ATOMIC_ACQUIRE) != epoch) {
        usleep(20 * 1000); /* the epoch's documents are not reset yet */
        return 0;
    }
    s = &c->seen[k];
    expect = s->ver > 0 ? s->ver : 1;
    snprintf(key, sizeof(key), "e%ld-k%d", epoch, k);
    if (o->slots > 0)
        snprintf(doc, sizeof(doc), "s%ld-k%d", epoch % o->slots, k);
    else
        snprintf(doc, sizeof(doc), "%s", key);
    snprintf(url, sizeof(url), "%s/v1/collections/%s/docs/%s", o->urls[c->node],
             o->coll, doc);
    snprintf(val, sizeof(val), "c%d-%lld", c->id, (long long)++c->writes);
    switch (op) {
    case OP_READ:
        break;
    case OP_PUT:
    case OP_PUT_IF:
        method = "PUT";
        snprintf(body, sizeof(body), "{\"val\":\"%s\"}", val);
        payload = body;
        ctype = "application/json";
        if (op == OP_PUT_IF) {
            snprintf(etag, sizeof(etag), "\"%lld\"", (long long)expect);
            if_match = etag;
        }
        break;
    case OP_TAS:
        method = "PATCH";
        snprintf(test, sizeof(test), "%s", s->val[0] != '\0' ? s->val : "none");
        snprintf(body, sizeof(body),
                 "[{\"op\":\"test\",\"path\":\"/val\",\"value\":\"%s\"},"
                 "{\"op\":\"replace\",\"path\":\"/val\",\"value\":\"%s\"}]",
                 test, val);
        payload = body;
        ctype = "application/json-patch+json";
        break;
    case OP_DELETE:
        method = "DELETE";
        break;
    }
    call = now_ns();
    send_request(curl, &a, method, url, payload, ctype, if_match, op != OP_READ,
                 o->timeout_ms);
    ret = now_ns();
    if (a.refused) {
        c->refused++;
        usleep(20 * 1000);
        return 0;
    }
    if (!a.unknown && op == OP_READ && a.status == 200) {
        if (body_val(a.body, out, sizeof(out)) != 0) {
            fprintf(stderr, "linz_record: a read of %s answered %s\n", key,
                    a.body);
            return -1;
        }
        have_out = 1;
    }
    if (!a.unknown && a.status == 409)
        exhausted = gave_up(a.body);
    if (!a.unknown && a.status < 300) {
        s->ver = a.ver;
        snprintf(s->val, sizeof(s->val), "%s",
                 op == OP_READ     ? out
                 : op == OP_DELETE ? ""
                                   : val);
    }
    c->recorded++;
    c->unknown += a.unknown;
    return record(c, op, key, o->slots > 0 ? doc : NULL, call, ret,
                  op == OP_READ || op == OP_DELETE ? NULL : val, expect,
                  op == OP_TAS ? test : NULL, &a, have_out ? out : NULL,
                  exhausted);
}

static void *client_main(void *arg)
{
    client_t *c = arg;
    CURL *curl = curl_easy_init();

    if (curl == NULL)
        return (void *)-1;
    while (now_ns() < deadline_ns) {
        if (client_step(c, curl) != 0) {
            curl_easy_cleanup(curl);
            return (void *)-1;
        }
    }
    curl_easy_cleanup(curl);
    return NULL;
}

/* Sleeps until t (ns since the start) or the deadline, whichever is
 * first. */
static void sleep_until(int64_t t)
{
    int64_t left;

    if (t > deadline_ns)
        t = deadline_ns;
    while ((left = t - now_ns()) > 0)
        usleep(left > 100000000 ? 100000 : (useconds_t)(left / 1000) + 1);
}

/* Resets document k of the slot of epoch e (--slots) before the epoch
 * starts: a PUT of {"val":"init-e<E>-k<k>"} until one is answered, then
 * GETs until every node serves one version with that value, recorded as
 * the key's "init" operation (client id o->clients, the preparer's). A PUT
 * of unknown outcome is followed by a pause of --timeout-ms, so that it
 * cannot land after the agreed state. Returns 0 when recorded, 1 when it
 * could not finish before until (ns since the start), -1 when the history
 * could not be written. */
static int reset_doc(CURL *curl, const options_t *o, long e, int k,
                     int64_t until)
{
    char key[48], doc[48], url[512], val[64], body[128], out[64];
    int64_t call = now_ns(), ver = 0;
    int attempt = 0, node = 0, agreed = 0, rc;
    json_t *line;
    answer_t a;

    snprintf(key, sizeof(key), "e%ld-k%d", e, k);
    snprintf(doc, sizeof(doc), "s%ld-k%d", e % o->slots, k);
    snprintf(val, sizeof(val), "init-e%ld-k%d", e, k);
    snprintf(body, sizeof(body), "{\"val\":\"%s\"}", val);
    while (ver == 0) {
        if (now_ns() >= until)
            return 1;
        node = attempt++ % o->nodes;
        snprintf(url, sizeof(url), "%s/v1/collections/%s/docs/%s",
                 o->urls[node], o->coll, doc);
        send_request(curl, &a, "PUT", url, body, "application/json", NULL, 1,
                     o->timeout_ms);
        if (!a.unknown && !a.refused && a.status < 300 && a.ver > 0)
            ver = a.ver;
        else if (a.unknown)
            sleep_until(now_ns() + o->timeout_ms * 1000000);
        else
            usleep(100 * 1000);
    }
    while (!agreed) {
        if (now_ns() >= until)
            return 1;
        agreed = 1;
        for (int n = 0; n < o->nodes && agreed; n++) {
            snprintf(url, sizeof(url), "%s/v1/collections/%s/docs/%s",
                     o->urls[n], o->coll, doc);
            send_request(curl, &a, "GET", url, NULL, NULL, NULL, 0,
                         o->timeout_ms);
            if (a.unknown || a.refused || a.status != 200 ||
                body_val(a.body, out, sizeof(out)) != 0 ||
                strcmp(out, val) != 0 || a.ver < ver)
                agreed = 0; /* not there yet */
            else if (a.ver > ver) {
                ver = a.ver; /* an earlier PUT of the same value landed */
                agreed = 0;
            }
        }
        if (!agreed)
            usleep(50 * 1000);
    }
    line = json_pack("{s:i, s:i, s:s, s:s, s:s, s:I, s:I, s:s, s:i, s:I}",
                     "client", o->clients, "node", node, "key", key, "doc", doc,
                     "op", "init", "call", (json_int_t)call, "ret",
                     (json_int_t)now_ns(), "val", val, "status", 200, "ver",
                     (json_int_t)ver);
    if (line == NULL)
        return -1;
    rc = write_line(line);
    json_decref(line);
    return rc;
}

/* The preparer of --slots: resets the documents of epoch E during epoch
 * E-1 and then marks the slot prepared for E. It falls back to the current
 * epoch when it is behind, and skips an epoch whose reset did not finish
 * within it. Returns NULL, or (void *)-1 when the history could not be
 * written. */
static void *preparer_main(void *arg)
{
    const options_t *o = arg;
    int64_t epoch_ns = (int64_t)o->epoch_seconds * 1000000000;
    CURL *curl = curl_easy_init();
    void *res = NULL;
    long skipped = 0;

    if (curl == NULL)
        return (void *)-1;
    for (long e = 0;; e++) {
        long now = (long)(now_ns() / epoch_ns);
        int rc = 0;

        if (e < now)
            e = now;
        sleep_until((e - 1) * epoch_ns);
        if (e * epoch_ns >= deadline_ns || now_ns() >= deadline_ns)
            break;
        for (int k = 0; k < o->keys && rc == 0; k++)
            rc = reset_doc(curl, o, e, k, (e + 1) * epoch_ns);
        if (rc < 0) {
            res = (void *)-1;
            break;
        }
        if (rc == 0)
            __atomic_store_n(&prepared[e % o->slots], e, __ATOMIC_RELEASE);
        else
            skipped++;
    }
    curl_easy_cleanup(curl);
    if (skipped > 0)
        fprintf(stderr,
                "linz_record: %ld epochs skipped (their documents could "
                "not be reset in time)\n",
                skipped);
    return res;
}

static int usage(void)
{
    fprintf(stderr, "usage: linz_record --out FILE [--seconds N] [--clients N] "
                    "[--keys N] [--epoch-seconds N] [--slots N] [--coll NAME] "
                    "[--timeout-ms MS] [--seed S] URL...\n");
    return 2;
}

/* Parses argv into o; 0 or -1. */
static int parse_args(options_t *o, int argc, char **argv)
{
    o->coll = "linz";
    o->clients = 6;
    o->keys = 3;
    o->epoch_seconds = 15;
    o->seconds = 10;
    o->timeout_ms = 2500;
    o->seed = (unsigned)time(NULL);
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strncmp(argv[i], "--", 2) != 0) {
            if (o->nodes == MAX_NODES)
                return -1;
            o->urls[o->nodes++] = argv[i];
            continue;
        }
        if (v == NULL)
            return -1;
        i++;
        if (strcmp(argv[i - 1], "--out") == 0)
            o->out = v;
        else if (strcmp(argv[i - 1], "--coll") == 0)
            o->coll = v;
        else if (strcmp(argv[i - 1], "--seconds") == 0)
            o->seconds = atol(v);
        else if (strcmp(argv[i - 1], "--clients") == 0)
            o->clients = atoi(v);
        else if (strcmp(argv[i - 1], "--keys") == 0)
            o->keys = atoi(v);
        else if (strcmp(argv[i - 1], "--slots") == 0)
            o->slots = atoi(v);
        else if (strcmp(argv[i - 1], "--epoch-seconds") == 0)
            o->epoch_seconds = atol(v);
        else if (strcmp(argv[i - 1], "--timeout-ms") == 0)
            o->timeout_ms = atol(v);
        else if (strcmp(argv[i - 1], "--seed") == 0)
            o->seed = (unsigned)strtoul(v, NULL, 10);
        else
            return -1;
    }
    if (o->out == NULL || o->nodes == 0 || o->seconds < 1 || o->clients < 1 ||
        o->clients > MAX_CLIENTS || o->keys < 1 || o->keys > MAX_KEYS ||
        o->epoch_seconds < 1 || o->timeout_ms < 1 ||
        (o->slots != 0 && (o->slots < MIN_SLOTS || o->slots > MAX_SLOTS)))
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    static client_t clients[MAX_CLIENTS];
    options_t o;
    pthread_t preparer;
    long recorded = 0, unknown = 0, refused = 0;
    int rc = 0, have_preparer = 0, started = 0;

    memset(&o, 0, sizeof(o));
    if (parse_args(&o, argc, argv) != 0)
        return usage();
    out_file = fopen(o.out, "w");
    if (out_file == NULL) {
        fprintf(stderr, "linz_record: %s: %s\n", o.out, strerror(errno));
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    clock_gettime(CLOCK_MONOTONIC, &start_time);
    deadline_ns = (int64_t)o.seconds * 1000000000;
    for (int i = 0; i < MAX_SLOTS; i++)
        prepared[i] = -1;
    if (o.slots > 0) {
        if (pthread_create(&preparer, NULL, preparer_main, &o) != 0) {
            fprintf(stderr, "linz_record: cannot start the preparer\n");
            fclose(out_file);
            curl_global_cleanup();
            return 1;
        }
        have_preparer = 1;
    }
    for (int i = 0; i < o.clients; i++) {
        clients[i].id = i;
        clients[i].node = i % o.nodes;
        clients[i].opts = &o;
        clients[i].rand = o.seed * 7919u + (unsigned)i;
        if (pthread_create(&clients[i].thread, NULL, client_main,
                           &clients[i]) != 0) {
            fprintf(stderr, "linz_record: cannot start client %d\n", i);
            rc = 1;
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++) {
        void *res = NULL;

        pthread_join(clients[i].thread, &res);
        if (res != NULL)
            rc = 1;
        recorded += clients[i].recorded;
        unknown += clients[i].unknown;
        refused += clients[i].refused;
    }
    if (have_preparer) {
        void *res = NULL;

        pthread_join(preparer, &res);
        if (res != NULL)
            rc = 1;
    }
    if (fclose(out_file) != 0)
        rc = 1;
    curl_global_cleanup();
    fprintf(stderr,
            "linz_record: %ld requests recorded in %s (%ld of unknown "
            "outcome), %ld refused connections not recorded; seed %u\n",
            recorded, o.out, unknown, refused, o.seed);
    return rc;
}
