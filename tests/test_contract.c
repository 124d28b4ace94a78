/* test_contract.c - the every-version guarantee of DESIGN.md section 5
 * under real faults, and Idempotency-Key over HTTP.
 *
 * Starts FerretDB, redis-server and `syncd` processes itself. Writers
 * patch documents over HTTP while watchers follow the collection on SSE
 * (reconnecting with Last-Event-ID when their node goes away); a fault is
 * injected mid-workload: Redis shut down and restarted, Redis frozen with
 * SIGSTOP and resumed, a node SIGKILLed right after a commit (the
 * SYNCD_TEST_CRASH_AFTER_COMMITS hook) and restarted. Afterwards every
 * watcher must have seen, for every document, exactly the versions 1..N
 * in order, where N is the version the store of record holds (read with
 * the store library, not through a node). An `event: resync` fails.
 * Calls to a node whose MongoDB is frozen (SIGSTOP: connections accepted,
 * never answered) fail within --request-timeout with a clear error. Ids
 * created and deleted without end leave nothing in Redis once their
 * tombstones are purged.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "servers.h"
#include "syncd/store.h"

#if !defined(SYNCD_BINARY) || !defined(SYNCCTL_BINARY)
#error "SYNCD_BINARY and SYNCCTL_BINARY must name the binaries"
#endif

#define NDOCS 4
#define MAXV 256
#define NWATCHERS 2
#define MAXNODES 3

static syncd_test_server_t mongo, redis;
static int db_seq;

/* ---- Processes ----------------------------------------------------------- */

/* One syncd process; args are kept to restart it. */
typedef struct daemon {
    pid_t pid;
    int port;
    char dir[256];
    char log[300];
    char *argv[32];
    char listen[64], data[300];
} daemon_t;

/* Starts (or restarts) d with its argv; crash_after > 0 sets the crash
 * hook. Waits until it accepts connections; 0 or -1. */
static int daemon_run(daemon_t *d, int crash_after)
{
    pid_t parent = getpid();

    d->pid = fork();
    if (d->pid < 0)
        return -1;
    if (d->pid == 0) {
        char n[16];

        syncd_test_child_setup(parent, d->log, 1);
        if (crash_after > 0) {
            snprintf(n, sizeof(n), "%d", crash_after);
            setenv("SYNCD_TEST_CRASH_AFTER_COMMITS", n, 1);
        } else {
            unsetenv("SYNCD_TEST_CRASH_AFTER_COMMITS");
        }
        execv(d->argv[0], d->argv);
        _exit(127);
    }
    for (int i = 0; i < 400; i++) {
        int status, fd;

        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            fprintf(stderr, "syncd exited at start; see %s\n", d->log);
            d->pid = 0;
            return -1;
        }
        fd = syncd_test_connect(d->port);
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        usleep(50 * 1000);
    }
    return -1;
}

/* Sets up d's argv: the embedded default, or cluster mode on the shared
 * FerretDB (database db) and Redis; then starts it on port (0: a free
 * one). */
static int daemon_start_on(daemon_t *d, int port, const char *node_id,
                           const char *db, int crash_after)
{
    int argc = 0;

    memset(d, 0, sizeof(*d));
    if (syncd_test_tmpdir(d->dir, sizeof(d->dir), "contract") != 0)
        return -1;
    d->port = port > 0 ? port : syncd_test_free_port();
    snprintf(d->listen, sizeof(d->listen), "127.0.0.1:%d", d->port);
    snprintf(d->data, sizeof(d->data), "%s/data", d->dir);
    snprintf(d->log, sizeof(d->log), "%s/syncd.log", d->dir);
    d->argv[argc++] = SYNCD_BINARY;
    d->argv[argc++] = "--listen";
    d->argv[argc++] = d->listen;
    d->argv[argc++] = "--data-dir";
    d->argv[argc++] = d->data;
    d->argv[argc++] = "--node-id";
    d->argv[argc++] = (char *)node_id;
    if (db != NULL) {
        d->argv[argc++] = "--mongo-uri";
        d->argv[argc++] = mongo.uri;
        d->argv[argc++] = "--database";
        d->argv[argc++] = (char *)db;
        d->argv[argc++] = "--redis-url";
        d->argv[argc++] = redis.uri;
    }
    d->argv[argc] = NULL;
    return daemon_run(d, crash_after);
}

static int daemon_start(daemon_t *d, const char *node_id, const char *db,
                        int crash_after)
{
    return daemon_start_on(d, 0, node_id, db, crash_after);
}

/* Waits (bounded) for d to exit; returns its wait status, or -1. */
static int daemon_reap(daemon_t *d, int timeout_ms)
{
    int status = -1;

    for (int i = 0; i < timeout_ms / 10; i++) {
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            d->pid = 0;
            return status;
        }
        usleep(10 * 1000);
    }
    return -1;
}

/* Stops d with SIGTERM (SIGKILL after 10 s), keeping its dir. */
static void daemon_halt(daemon_t *d)
{
    if (d->pid > 0) {
        kill(d->pid, SIGTERM);
        if (daemon_reap(d, 10000) < 0) {
            kill(d->pid, SIGKILL);
            daemon_reap(d, 5000);
        }
    }
}

static void daemon_stop(daemon_t *d)
{
    daemon_halt(d);
    syncd_test_rmtree(d->dir);
}

/* ---- HTTP writes --------------------------------------------------------- */

typedef struct response {
    long status; /* 0: no answer (connection error or timeout) */
    char etag[64];
    char body[65536]; /* /metrics fits */
    size_t len;
} response_t;

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    response_t *r = arg;
    size_t len = size * n;

    if (r->len + len < sizeof(r->body)) {
        memcpy(r->body + r->len, data, len);
        r->len += len;
        r->body[r->len] = '\0';
    }
    return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    response_t *r = arg;
    size_t len = size * n;

    if (len > 5 && strncasecmp(data, "ETag:", 5) == 0)
        snprintf(r->etag, sizeof(r->etag), "%.*s",
                 (int)strcspn(data + 6, "\r\n"), data + 6);
    return len;
}

/* Sends one request to port (headers: NULL-terminated, or NULL). */
static response_t request(int port, const char *method, const char *path,
                          const char *body, const char **headers)
{
    response_t r;
    char url[512];
    CURL *curl = curl_easy_init();
    struct curl_slist *hl = NULL;

    memset(&r, 0, sizeof(r));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    for (int i = 0; headers != NULL && headers[i] != NULL; i++)
        hl = curl_slist_append(hl, headers[i]);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 15000L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &r);
    if (body != NULL)
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    if (curl_easy_perform(curl) == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(curl);
    return r;
}

/* PATCHes doc k of coll through port with a merge patch setting n. */
static response_t patch_doc(int port, const char *coll, int k, int n)
{
    static const char *merge[] = {"Content-Type: application/merge-patch+json",
                                  NULL};
    char path[256], body[64];

    snprintf(path, sizeof(path), "/v1/collections/%.64s/docs/d%d", coll, k);
    snprintf(body, sizeof(body), "{\"n\":%d}", n);
    return request(port, "PATCH", path, body, merge);
}

static void create_docs(int port, const char *coll)
{
    char path[256];

    for (int k = 0; k < NDOCS; k++) {
        snprintf(path, sizeof(path), "/v1/collections/%.64s/docs/d%d", coll, k);
        assert_int_equal(request(port, "PUT", path, "{\"n\":0}", NULL).status,
                         201);
    }
}

/* ---- SSE watchers -------------------------------------------------------- */

/* A watcher thread: follows coll on a node from seq 1, reconnecting with
 * Last-Event-ID, recording each document's versions in the order seen. */
typedef struct watcher {
    pthread_t thread;
    const daemon_t *node;
    const char *coll;
    atomic_int stop;
    pthread_mutex_t lock;
    int64_t last_seq;
    int64_t seen[NDOCS][MAXV];
    int nseen[NDOCS];
    /* Counted by the thread, read by the test: atomic. */
    atomic_int resyncs, seq_errors, bad_events, connects;
    char raw[1 << 16]; /* undecoded bytes (chunked framing) */
    size_t rawlen;
    int in_body;
    char sse[1 << 16]; /* decoded stream text not yet parsed */
    size_t sselen;
} watcher_t;

/* Records one SSE event (its lines in ev, NUL-terminated). */
static void watcher_event(watcher_t *w, char *ev)
{
    char *data = strstr(ev, "data: ");
    char *type = strstr(ev, "event: ");
    json_t *v;
    const char *id;
    int64_t seq;
    int k;

    if (type != NULL && strncmp(type + 7, "resync", 6) == 0)
        w->resyncs++;
    if (data == NULL || (type != NULL && strncmp(type + 7, "bookmark", 8) == 0))
        return;
    v = json_loads(data + 6, JSON_DISABLE_EOF_CHECK, NULL);
    id = json_string_value(json_object_get(v, "id"));
    seq = json_integer_value(json_object_get(v, "seq"));
    if (id == NULL || sscanf(id, "d%d", &k) != 1 || k < 0 || k >= NDOCS) {
        if (type == NULL || strncmp(type + 7, "shutdown", 8) != 0)
            w->bad_events++;
        json_decref(v);
        return;
    }
    pthread_mutex_lock(&w->lock);
    if (seq <= w->last_seq)
        w->seq_errors++;
    w->last_seq = seq;
    if (w->nseen[k] < MAXV)
        w->seen[k][w->nseen[k]++] = json_integer_value(json_object_get(v, "v"));
    pthread_mutex_unlock(&w->lock);
    json_decref(v);
}

/* Moves the body bytes of w->raw (after the headers, chunked) into
 * w->sse and parses the complete events there. Returns -1 at the last
 * chunk. */
static int watcher_parse(watcher_t *w)
{
    char *p = w->raw, *end = w->raw + w->rawlen, *ev;
    int rc = 0;

    if (!w->in_body) {
        char *h = memmem(p, w->rawlen, "\r\n\r\n", 4);

        if (h == NULL)
            return 0;
        if (strncmp(p, "HTTP/1.1 200", 12) != 0)
            rc = -1;
        p = h + 4;
        w->in_body = 1;
    }
    while (rc == 0 && p < end) {
        char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        size_t size;

        if (eol == NULL)
            break;
        if (strspn(p, "0123456789abcdefABCDEF") != (size_t)(eol - p)) {
            w->bad_events++; /* lost the chunked framing */
            rc = -1;
            break;
        }
        size = strtoul(p, NULL, 16);
        if (size == 0 || size >= sizeof(w->raw)) {
            w->bad_events += size != 0;
            rc = -1;
            break;
        }
        if ((size_t)(end - eol - 2) < size + 2)
            break;
        if (w->sselen + size >= sizeof(w->sse)) {
            w->bad_events++;
            rc = -1;
            break;
        }
        memcpy(w->sse + w->sselen, eol + 2, size);
        w->sselen += size;
        p = eol + 2 + size + 2;
    }
    w->rawlen = (size_t)(end - p);
    memmove(w->raw, p, w->rawlen);
    w->sse[w->sselen] = '\0';
    while ((ev = strstr(w->sse, "\n\n")) != NULL) {
        size_t n = (size_t)(ev - w->sse) + 2;

        *ev = '\0';
        watcher_event(w, w->sse);
        memmove(w->sse, w->sse + n, w->sselen - n + 1);
        w->sselen -= n;
    }
    return rc;
}

static void *watcher_main(void *arg)
{
    watcher_t *w = arg;

    while (!atomic_load(&w->stop)) {
        char req[512];
        int fd = syncd_test_connect(w->node->port);
        int n;

        if (fd < 0) {
            usleep(50 * 1000);
            continue;
        }
        pthread_mutex_lock(&w->lock);
        n = snprintf(req, sizeof(req),
                     "GET /v1/collections/%s/watch?since=0 HTTP/1.1\r\n"
                     "Host: t\r\nLast-Event-ID: %lld\r\n\r\n",
                     w->coll, (long long)w->last_seq);
        pthread_mutex_unlock(&w->lock);
        w->connects++;
        w->rawlen = w->sselen = 0;
        w->in_body = 0;
        if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
            close(fd);
            continue;
        }
        while (!atomic_load(&w->stop)) {
            struct pollfd pfd = {fd, POLLIN, 0};
            ssize_t got;

            if (poll(&pfd, 1, 100) <= 0)
                continue;
            got =
                recv(fd, w->raw + w->rawlen, sizeof(w->raw) - w->rawlen - 1, 0);
            if (got <= 0)
                break;
            w->rawlen += (size_t)got;
            if (watcher_parse(w) < 0)
                break;
        }
        close(fd);
    }
    return NULL;
}

static void watcher_start(watcher_t *w, const daemon_t *node, const char *coll)
{
    memset(w, 0, sizeof(*w));
    w->node = node;
    w->coll = coll;
    pthread_mutex_init(&w->lock, NULL);
    assert_int_equal(pthread_create(&w->thread, NULL, watcher_main, w), 0);
}

static void watcher_stop(watcher_t *w)
{
    atomic_store(&w->stop, 1);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->lock);
}

/* ---- The check against the store ----------------------------------------- */

/* Reads the version of each document of coll from the store of record
 * (database db; NULL: the embedded store in data_dir). */
static void store_versions(int64_t out[NDOCS], const char *coll, const char *db,
                           const char *data_dir)
{
    syncd_store_options_t so;
    syncd_store_t *store = NULL;
    char dir[256], embedded[320];

    assert_int_equal(syncd_test_tmpdir(dir, sizeof(dir), "contract-store"), 0);
    snprintf(embedded, sizeof(embedded), "%s/store", data_dir ? data_dir : "");
    syncd_store_options_init(&so);
    so.data_dir = db != NULL ? dir : embedded;
    so.mongo_uri = db != NULL ? mongo.uri : NULL;
    so.database = db != NULL ? db : "syncd";
    assert_int_equal(syncd_store_open(&store, &so, NULL), 0);
    for (int k = 0; k < NDOCS; k++) {
        syncd_doc_t *doc = NULL;
        char id[16];

        snprintf(id, sizeof(id), "d%d", k);
        assert_int_equal(syncd_store_refetch(store, &doc, coll, id, NULL), 0);
        out[k] = doc->version;
        syncd_doc_free(doc);
    }
    syncd_store_close(store);
    syncd_test_rmtree(dir);
}

/* Returns 1 when w has seen at least want[k] events of every document. */
static int watcher_caught_up(watcher_t *w, const int64_t want[NDOCS])
{
    int done = 1;

    pthread_mutex_lock(&w->lock);
    for (int k = 0; k < NDOCS; k++)
        done &= w->nseen[k] >= want[k];
    pthread_mutex_unlock(&w->lock);
    return done;
}

/* Waits (bounded: liveness, not speed) for the watchers to reach the
 * store's versions, then checks each saw every version once, in order. */
static void assert_watchers_saw_every_version(watcher_t *ws, int nw,
                                              const int64_t want[NDOCS])
{
    for (int i = 0; i < 600; i++) {
        int all = 1;

        for (int j = 0; j < nw; j++)
            all &= watcher_caught_up(&ws[j], want);
        if (all)
            break;
        usleep(50 * 1000);
    }
    usleep(300 * 1000); /* room for a duplicate to show */
    for (int j = 0; j < nw; j++) {
        watcher_t *w = &ws[j];

        pthread_mutex_lock(&w->lock);
        for (int k = 0; k < NDOCS; k++) {
            char got[2048] = "", exp[2048] = "";

            for (int i = 0; i < w->nseen[k]; i++)
                snprintf(got + strlen(got), sizeof(got) - strlen(got), " %lld",
                         (long long)w->seen[k][i]);
            for (int64_t v = 1; v <= want[k]; v++)
                snprintf(exp + strlen(exp), sizeof(exp) - strlen(exp), " %lld",
                         (long long)v);
            if (strcmp(got, exp) != 0)
                fprintf(stderr, "watcher %d, d%d: saw%s; store has v1..v%lld\n",
                        j, k, got, (long long)want[k]);
            assert_string_equal(got, exp);
        }
        assert_int_equal(w->resyncs, 0);
        assert_int_equal(w->seq_errors, 0);
        assert_int_equal(w->bad_events, 0);
        pthread_mutex_unlock(&w->lock);
    }
}

/* ---- Cluster scenarios --------------------------------------------------- */

/* The processes and watchers of one test, stopped by its teardown
 * whatever happened. */
typedef struct cluster {
    char db[64];
    char coll[32];
    daemon_t nodes[MAXNODES];
    watcher_t watchers[MAXNODES];
    int nwatchers; /* started */
} cluster_t;

static cluster_t the_cluster;

static int teardown_cluster(void **state)
{
    cluster_t *cl = &the_cluster;

    (void)state;
    for (int j = 0; j < cl->nwatchers; j++)
        watcher_stop(&cl->watchers[j]);
    for (int i = 0; i < MAXNODES; i++) {
        if (cl->nodes[i].dir[0] != '\0')
            daemon_stop(&cl->nodes[i]);
    }
    memset(cl, 0, sizeof(*cl));
    unsetenv("SYNCD_STORE_TIMEOUT");
    unsetenv("SYNCD_REQUEST_TIMEOUT");
    unsetenv("SYNCD_THREADS");
    unsetenv("SYNCD_TOMBSTONE_TTL");
    unsetenv("SYNCD_BUS_TIMEOUT");
    unsetenv("SYNCD_SLOW_REQUEST");
    if (mongo.pid > 0)
        kill(mongo.pid, SIGCONT);
    /* A test that failed mid-fault leaves Redis as it should be. */
    if (redis.pid > 0)
        kill(redis.pid, SIGCONT);
    else if (syncd_test_server_restart(&redis) != 0)
        return -1;
    return 0;
}

static void cluster_open(cluster_t *cl, const char *coll, int crash_after)
{
    snprintf(cl->db, sizeof(cl->db), "contract_%d_%d", (int)getpid(), ++db_seq);
    snprintf(cl->coll, sizeof(cl->coll), "%s", coll);
    assert_int_equal(daemon_start(&cl->nodes[0], "node-a", cl->db, 0), 0);
    assert_int_equal(daemon_start(&cl->nodes[1], "node-b", cl->db, crash_after),
                     0);
    create_docs(cl->nodes[0].port, coll);
    for (int j = 0; j < NWATCHERS; j++) {
        watcher_start(&cl->watchers[j], &cl->nodes[j % 2], coll);
        cl->nwatchers++;
    }
}

static void cluster_check(cluster_t *cl)
{
    int64_t want[NDOCS];

    store_versions(want, cl->coll, cl->db, NULL);
    assert_watchers_saw_every_version(cl->watchers, cl->nwatchers, want);
}

/* Runs writes patches, alternating nodes and documents; calls fault(i)
 * before write i. Each is answered 200, its publish failing or not: it is
 * committed, and the outbox completes the publish. */
static void workload(cluster_t *cl, int writes, void (*fault)(cluster_t *, int))
{
    for (int i = 0; i < writes; i++) {
        if (fault != NULL)
            fault(cl, i);
        assert_int_equal(
            patch_doc(cl->nodes[i % 2].port, cl->coll, i % NDOCS, i + 1).status,
            200);
    }
}

static void redis_down_and_back(cluster_t *cl, int i)
{
    (void)cl;
    if (i == 8) {
        /* Saved, so that the replay log survives the restart: the fault
         * under test is the bus being away, not Redis losing its data. */
        assert_int_equal(syncd_test_redis_cli(&redis, "SHUTDOWN", "SAVE", NULL),
                         0);
        assert_int_equal(syncd_test_server_stop(&redis), 0);
    }
    if (i == 20)
        assert_int_equal(syncd_test_server_restart(&redis), 0);
}

static void
test_contract__redis_stopped_during_writes_loses_no_version(void **state)
{
    cluster_t *cl = &the_cluster;

    (void)state;
    cluster_open(cl, "down", 0);
    workload(cl, 32, redis_down_and_back);
    cluster_check(cl);
}

/* Writes to a frozen Redis are sent from a thread, as a client would,
 * since an answer may wait for Redis (for the bus deadline, or for a
 * publish when 16 versions of its document are behind). */
typedef struct frozen_writes {
    cluster_t *cl;
    int from, to;
    int failed; /* writes not answered 200 */
} frozen_writes_t;

static void *frozen_writer(void *arg)
{
    frozen_writes_t *f = arg;

    for (int i = f->from; i < f->to; i++) {
        if (patch_doc(f->cl->nodes[i % 2].port, f->cl->coll, i % NDOCS, i + 1)
                .status != 200)
            f->failed++;
    }
    return NULL;
}

static void
test_contract__redis_frozen_during_writes_loses_no_version(void **state)
{
    cluster_t *cl = &the_cluster;
    frozen_writes_t fw;
    pthread_t th;

    (void)state;
    cluster_open(cl, "frozen", 0);
    workload(cl, 8, NULL);
    assert_int_equal(kill(redis.pid, SIGSTOP), 0);
    fw.cl = cl;
    fw.failed = 0;
    fw.from = 8;
    fw.to = 16;
    assert_int_equal(pthread_create(&th, NULL, frozen_writer, &fw), 0);
    sleep(3);
    assert_int_equal(kill(redis.pid, SIGCONT), 0);
    pthread_join(th, NULL);
    assert_int_equal(fw.failed, 0);
    for (int i = 16; i < 24; i++)
        patch_doc(cl->nodes[i % 2].port, cl->coll, i % NDOCS, i + 1);
    cluster_check(cl);
}

/* Patches d0 on node 0 n times, one after another, counting the answers
 * 200. */
typedef struct paced_writes {
    cluster_t *cl;
    int n;
    atomic_int answered;
} paced_writes_t;

static void *paced_writer(void *arg)
{
    paced_writes_t *p = arg;

    for (int i = 0; i < p->n; i++) {
        if (patch_doc(p->cl->nodes[0].port, p->cl->coll, 0, 100 + i).status ==
            200)
            atomic_fetch_add(&p->answered, 1);
    }
    return NULL;
}

/* Waits (up to 20 s) until p has n answers; returns how many it has. */
static int answers_reach(paced_writes_t *p, int n)
{
    for (int i = 0; i < 200 && atomic_load(&p->answered) < n; i++)
        usleep(100 * 1000);
    return atomic_load(&p->answered);
}

/* A write is answered once it is committed, its publish completing behind
 * it, while fewer than 16 earlier versions of its document await theirs;
 * past that a write waits for its own publish, so that a bus slower than
 * the writes paces them. With Redis frozen and a bus timeout longer than
 * the test: 16 writes of one document are answered at once, the 17th only
 * once Redis thaws, and then every version reaches every watcher. */
static void
test_contract__writes_are_answered_before_their_publish_up_to_sixteen_behind(
    void **state)
{
    /* Static: a failed assertion leaves the test while the writer runs. */
    static paced_writes_t pw;
    cluster_t *cl = &the_cluster;
    pthread_t th;

    (void)state;
    pw.cl = cl;
    pw.n = 20;
    atomic_store(&pw.answered, 0);
    setenv("SYNCD_BUS_TIMEOUT", "60s", 1);
    cluster_open(cl, "paced", 0);
    workload(cl, 4, NULL);
    cluster_check(cl);
    /* The acks of those publishes clear d0's outbox. */
    usleep(2000 * 1000);
    assert_int_equal(kill(redis.pid, SIGSTOP), 0);
    assert_int_equal(pthread_create(&th, NULL, paced_writer, &pw), 0);
    assert_int_equal(answers_reach(&pw, 16), 16);
    usleep(2000 * 1000);
    assert_int_equal(atomic_load(&pw.answered), 16);
    assert_int_equal(kill(redis.pid, SIGCONT), 0);
    pthread_join(th, NULL);
    assert_int_equal(atomic_load(&pw.answered), 20);
    cluster_check(cl);
}

/* Redis is away for more versions of one document than its outbox holds
 * (SYNCD_MAX_OUTBOX_MARKERS): the writes past that are refused with 503
 * (the store never drops a marker to make room: a dropped marker is a
 * version no watcher sees), and once Redis is back every committed
 * version reaches every watcher and writes go on. */
static void
test_contract__redis_away_for_more_versions_than_the_outbox_holds_loses_no_version(
    void **state)
{
    cluster_t *cl = &the_cluster;
    int ok = 0, refused = 0;

    (void)state;
    cluster_open(cl, "full", 0);
    assert_int_equal(syncd_test_redis_cli(&redis, "SHUTDOWN", "SAVE", NULL), 0);
    assert_int_equal(syncd_test_server_stop(&redis), 0);
    for (int i = 0; i < SYNCD_MAX_OUTBOX_MARKERS + 5; i++) {
        long status = patch_doc(cl->nodes[0].port, cl->coll, 0, i + 1).status;

        ok += status == 200;
        refused += status == 503;
    }
    assert_int_equal(ok, SYNCD_MAX_OUTBOX_MARKERS);
    assert_int_equal(refused, 5);
    assert_int_equal(syncd_test_server_restart(&redis), 0);
    cluster_check(cl);
    assert_int_equal(patch_doc(cl->nodes[1].port, cl->coll, 0, 1000).status,
                     200);
    cluster_check(cl);
}

/* One of the concurrent writers of a single document: patches d0 of its
 * node (a member of its own, so the patches differ) until told to stop. */
typedef struct storm_writer {
    pthread_t thread;
    cluster_t *cl;
    int node;
    atomic_int *stop;
    int writes, answered; /* sent; answered 200 */
} storm_writer_t;

static void *storm_main(void *arg)
{
    static const char *merge[] = {"Content-Type: application/merge-patch+json",
                                  NULL};
    storm_writer_t *sw = arg;
    char path[256], body[64];

    snprintf(path, sizeof(path), "/v1/collections/%s/docs/d0", sw->cl->coll);
    while (!atomic_load(sw->stop) && sw->writes < MAXV / MAXNODES - 8) {
        snprintf(body, sizeof(body), "{\"w%d\":%d}", sw->node, ++sw->writes);
        if (request(sw->cl->nodes[sw->node].port, "PATCH", path, body, merge)
                .status == 200)
            sw->answered++;
    }
    return NULL;
}

/* Three nodes, a watcher on each, and three writers of ONE document, each
 * through its own node, while Redis is shut down (its data saved, as a
 * persistent Redis does) and started again on the same port, five times:
 * every node's outbox and republisher race the others' for the same
 * document across each reconnect. */
static void
test_contract__redis_restarted_under_concurrent_writers_of_one_document_loses_no_version(
    void **state)
{
    cluster_t *cl = &the_cluster;
    storm_writer_t sw[MAXNODES];
    atomic_int stop = 0;
    int answered = 0;

    (void)state;
    cluster_open(cl, "storm", 0);
    assert_int_equal(daemon_start(&cl->nodes[2], "node-c", cl->db, 0), 0);
    watcher_start(&cl->watchers[2], &cl->nodes[2], cl->coll);
    cl->nwatchers++;
    for (int t = 0; t < MAXNODES; t++) {
        sw[t] = (storm_writer_t){.cl = cl, .node = t, .stop = &stop};
        assert_int_equal(
            pthread_create(&sw[t].thread, NULL, storm_main, &sw[t]), 0);
    }
    for (int round = 0; round < 5; round++) {
        usleep(1000 * 1000);
        assert_int_equal(syncd_test_redis_cli(&redis, "SHUTDOWN", "SAVE", NULL),
                         0);
        assert_int_equal(syncd_test_server_stop(&redis), 0);
        usleep(500 * 1000);
        assert_int_equal(syncd_test_server_restart(&redis), 0);
    }
    usleep(700 * 1000);
    atomic_store(&stop, 1);
    for (int t = 0; t < MAXNODES; t++) {
        pthread_join(sw[t].thread, NULL);
        answered += sw[t].answered;
    }
    /* The writers really raced: writes of theirs committed. */
    assert_true(answered >= 10);
    cluster_check(cl);
}

static void
test_contract__node_killed_right_after_a_commit_loses_no_version(void **state)
{
    cluster_t *cl = &the_cluster;
    response_t r;
    int status;

    (void)state;
    /* node-b dies after its 5th commit, before publishing it. */
    cluster_open(cl, "crash", 5);
    for (int i = 0; i < 5; i++)
        patch_doc(cl->nodes[1].port, cl->coll, i % NDOCS, i + 1);
    status = daemon_reap(&cl->nodes[1], 10000);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    r = patch_doc(cl->nodes[0].port, cl->coll, 0, 100);
    assert_int_equal(r.status, 200);
    assert_int_equal(daemon_run(&cl->nodes[1], 0), 0);
    for (int i = 6; i < 14; i++)
        patch_doc(cl->nodes[i % 2].port, cl->coll, i % NDOCS, i + 1);
    cluster_check(cl);
}

/* ---- A frozen store ------------------------------------------------------ */

/* One request sent from a thread, timed. */
typedef struct timed_call {
    pthread_t thread;
    int port;
    char path[128];
    response_t r;
    int64_t ms;
} timed_call_t;

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *timed_get(void *arg)
{
    timed_call_t *c = arg;
    int64_t t0 = now_ms();

    c->r = request(c->port, "GET", c->path, NULL, NULL);
    c->ms = now_ms() - t0;
    return NULL;
}

/* More uncached reads than the thread pool has threads (4, set by
 * --threads), each stalled on the store: without the request deadline the
 * later ones wait for the earlier ones' driver timeouts (a read is retried
 * once) and answer late. */
static void
test_contract__calls_to_a_frozen_store_fail_within_the_request_timeout(
    void **state)
{
    cluster_t *cl = &the_cluster;
    timed_call_t calls[8];
    int64_t t0, ms;
    response_t r;

    (void)state;
    if (mongo.external)
        skip();
    setenv("SYNCD_STORE_TIMEOUT", "1s", 1);
    setenv("SYNCD_REQUEST_TIMEOUT", "2s", 1);
    setenv("SYNCD_THREADS", "4", 1);
    snprintf(cl->db, sizeof(cl->db), "contract_%d_%d", (int)getpid(), ++db_seq);
    snprintf(cl->coll, sizeof(cl->coll), "frozen_store");
    assert_int_equal(daemon_start(&cl->nodes[0], "node-a", cl->db, 0), 0);
    create_docs(cl->nodes[0].port, cl->coll);
    assert_int_equal(kill(mongo.pid, SIGSTOP), 0);
    t0 = now_ms();
    r = patch_doc(cl->nodes[0].port, cl->coll, 0, 1);
    ms = now_ms() - t0;
    fprintf(stderr, "frozen store: PATCH answered %ld in %lld ms: %s\n",
            r.status, (long long)ms, r.body);
    assert_int_equal(r.status, 503);
    assert_true(ms < 2000 + 1500);
    assert_non_null(strstr(r.body, "\"message\""));
    for (int i = 0; i < 8; i++) {
        calls[i].port = cl->nodes[0].port;
        snprintf(calls[i].path, sizeof(calls[i].path),
                 "/v1/collections/%.32s/docs/absent-%d", cl->coll, i);
        assert_int_equal(
            pthread_create(&calls[i].thread, NULL, timed_get, &calls[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(calls[i].thread, NULL);
        fprintf(stderr, "frozen store: GET %s answered %ld in %lld ms: %s\n",
                calls[i].path, calls[i].r.status, (long long)calls[i].ms,
                calls[i].r.body);
        assert_int_equal(calls[i].r.status, 503);
        assert_true(calls[i].ms < 2000 + 1500);
        assert_non_null(strstr(calls[i].r.body, "\"error\""));
    }
    assert_int_equal(kill(mongo.pid, SIGCONT), 0);
    /* Thawed, the node serves writes again (bounded: liveness). */
    for (int i = 0; i < 100; i++) {
        r = patch_doc(cl->nodes[0].port, cl->coll, 1, 2);
        if (r.status == 200)
            break;
        usleep(100 * 1000);
    }
    assert_int_equal(r.status, 200);
}

static void *timed_patch(void *arg)
{
    timed_call_t *c = arg;
    int64_t t0 = now_ms();

    c->r = patch_doc(c->port, "slow", 0, 2);
    c->ms = now_ms() - t0;
    return NULL;
}

/* Returns the lines of d's log that name a slow request, joined (caller
 * frees; "" when none). */
static char *slow_lines(const daemon_t *d)
{
    FILE *f = fopen(d->log, "r");
    char line[2048];
    char *out = calloc(1, 1);
    size_t n = 0;

    assert_non_null(f);
    assert_non_null(out);
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strstr(line, "slow request") == NULL)
            continue;
        out = realloc(out, n + strlen(line) + 1);
        assert_non_null(out);
        memcpy(out + n, line, strlen(line) + 1);
        n += strlen(line);
    }
    fclose(f);
    return out;
}

/* A request slower than --slow-request is logged at warn with where its
 * time went: a write held up by a frozen store names the store, and its
 * parts add up to no more than the whole; a quick write is not logged. */
static void
test_contract__a_slow_request_is_logged_with_where_its_time_went(void **state)
{
    cluster_t *cl = &the_cluster;
    timed_call_t call = {0};
    double total = 0, queued = 0, store = 0, back = 0, publish = 0;
    const char *at;
    char *lines;

    (void)state;
    if (mongo.external)
        skip();
    setenv("SYNCD_SLOW_REQUEST", "400ms", 1);
    snprintf(cl->db, sizeof(cl->db), "contract_%d_%d", (int)getpid(), ++db_seq);
    snprintf(cl->coll, sizeof(cl->coll), "slow");
    assert_int_equal(daemon_start(&cl->nodes[0], "node-a", cl->db, 0), 0);
    create_docs(cl->nodes[0].port, cl->coll);
    assert_int_equal(patch_doc(cl->nodes[0].port, cl->coll, 0, 1).status, 200);
    lines = slow_lines(&cl->nodes[0]);
    assert_string_equal(lines, "");
    free(lines);

    call.port = cl->nodes[0].port;
    assert_int_equal(kill(mongo.pid, SIGSTOP), 0);
    assert_int_equal(pthread_create(&call.thread, NULL, timed_patch, &call), 0);
    usleep(1000 * 1000);
    assert_int_equal(kill(mongo.pid, SIGCONT), 0);
    pthread_join(call.thread, NULL);
    assert_int_equal(call.r.status, 200);
    assert_true(call.ms >= 1000);

    lines = slow_lines(&cl->nodes[0]);
    fprintf(stderr, "slow request: PATCH answered in %lld ms; logged: %s",
            (long long)call.ms, lines);
    at = strstr(lines, "slow request: patch of slow/d0 took ");
    assert_non_null(at);
    assert_int_equal(sscanf(at,
                            "slow request: patch of slow/d0 took %lf ms: %lf "
                            "ms queued, %lf ms in the store",
                            &total, &queued, &store),
                     3);
    at = strstr(at, "for the durable sync), ");
    if (at == NULL) /* MongoDB mode: no write lock of the store's own */
        at = strstr(lines, "in the store, ");
    assert_non_null(at);
    at = strchr(at, ',') + 1;
    assert_int_equal(sscanf(at,
                            " %lf ms back to the event loop, %lf ms publishing",
                            &back, &publish),
                     2);
    assert_true(total >= 900 && total <= (double)call.ms);
    assert_true(store >= 900);
    assert_true(queued + store + back + publish <= total + 0.5);
    /* One line: the quick writes before and after are not logged. */
    assert_int_equal(patch_doc(cl->nodes[0].port, cl->coll, 1, 3).status, 200);
    free(lines);
    lines = slow_lines(&cl->nodes[0]);
    assert_null(strstr(strstr(lines, "slow request") + 1, "slow request"));
    free(lines);
}

/* A client that makes new ids and deletes them (a stream of one-off
 * documents, or an attacker) grows the bus's per-id deduplication state
 * only until the tombstones are purged: the node has the bus drop those
 * records, so the hash goes back to the ids that still exist. */
static void
test_contract__ids_created_and_deleted_leave_no_bus_record_once_purged(
    void **state)
{
    cluster_t *cl = &the_cluster;
    char path[256], pubv[256];
    long long left = -1;
    response_t r;

    (void)state;
    setenv("SYNCD_TOMBSTONE_TTL", "1s", 1);
    snprintf(cl->db, sizeof(cl->db), "contract_%d_%d", (int)getpid(), ++db_seq);
    snprintf(cl->coll, sizeof(cl->coll), "oneoff");
    snprintf(pubv, sizeof(pubv), "syncd:%.64s:%.64s:pubv", cl->db, cl->coll);
    assert_int_equal(daemon_start(&cl->nodes[0], "node-a", cl->db, 0), 0);
    r = request(cl->nodes[0].port, "PUT", "/v1/collections/oneoff/docs/kept",
                "{}", NULL);
    assert_int_equal(r.status, 201);
    for (int i = 0; i < 40; i++) {
        snprintf(path, sizeof(path), "/v1/collections/oneoff/docs/n%d", i);
        r = request(cl->nodes[0].port, "PUT", path, "{\"i\":1}", NULL);
        assert_int_equal(r.status, 201);
        r = request(cl->nodes[0].port, "DELETE", path, NULL, NULL);
        assert_int_equal(r.status, 200);
    }
    assert_true(syncd_test_redis_hlen(&redis, pubv) >= 2);
    /* The purge runs every quarter TTL, at least every second (bounded). */
    for (int i = 0; i < 300 && left != 1; i++) {
        usleep(100 * 1000);
        left = syncd_test_redis_hlen(&redis, pubv);
    }
    assert_int_equal(left, 1);
    /* An id purged and made again is published like a new one. */
    r = request(cl->nodes[0].port, "PUT", "/v1/collections/oneoff/docs/n0",
                "{\"i\":2}", NULL);
    assert_int_equal(r.status, 201);
    assert_string_equal(r.etag, "\"1\"");
    for (int i = 0; i < 100 && left != 2; i++) {
        usleep(50 * 1000);
        left = syncd_test_redis_hlen(&redis, pubv);
    }
    assert_int_equal(left, 2);
}

/* Returns the value of the unlabelled metric name on the node at port, or
 * -1. */
static long long metric(int port, const char *name)
{
    response_t r = request(port, "GET", "/metrics", NULL, NULL);
    char pat[128];
    const char *at;

    snprintf(pat, sizeof(pat), "\n%s ", name);
    at = r.status == 200 ? strstr(r.body, pat) : NULL;
    return at != NULL ? strtoll(at + strlen(pat), NULL, 10) : -1;
}

/* Makes and deletes coll's documents <prefix>0..<prefix>9 on node 0. */
static void make_tombstones(cluster_t *cl, const char *prefix)
{
    char path[256];
    response_t r;

    for (int i = 0; i < 10; i++) {
        snprintf(path, sizeof(path), "/v1/collections/%s/docs/%s%d", cl->coll,
                 prefix, i);
        r = request(cl->nodes[0].port, "PUT", path, "{}", NULL);
        assert_int_equal(r.status, 201);
        r = request(cl->nodes[0].port, "DELETE", path, NULL, NULL);
        assert_int_equal(r.status, 200);
    }
}

/* Starts node 0 on a new database with a tombstone TTL of ttl_secs and a
 * bus timeout of bus_timeout, makes coll's tombstones n0..n9 and, 2 s
 * later, m0..m9, then freezes Redis. Nothing may be due before the
 * freeze: when making them took so long (a loaded machine) that the
 * first n tombstone could be due by then, Redis thaws and the setup runs
 * again on a new database. pubv (pubv_size bytes) gets the name of coll's
 * hash of published versions. */
static void tombstones_then_freeze(cluster_t *cl, const char *coll,
                                   int ttl_secs, const char *bus_timeout,
                                   char *pubv, size_t pubv_size)
{
    char ttl[16];
    int64_t t0;

    snprintf(ttl, sizeof(ttl), "%ds", ttl_secs);
    setenv("SYNCD_TOMBSTONE_TTL", ttl, 1);
    setenv("SYNCD_BUS_TIMEOUT", bus_timeout, 1);
    snprintf(cl->coll, sizeof(cl->coll), "%s", coll);
    for (int attempt = 1;; attempt++) {
        long long hlen = -1;

        snprintf(cl->db, sizeof(cl->db), "contract_%d_%d", (int)getpid(),
                 ++db_seq);
        snprintf(pubv, pubv_size, "syncd:%.64s:%.64s:pubv", cl->db, cl->coll);
        assert_int_equal(daemon_start(&cl->nodes[0], "node-a", cl->db, 0), 0);
        t0 = now_ms();
        make_tombstones(cl, "n");
        usleep(2000 * 1000);
        make_tombstones(cl, "m");
        for (int i = 0; i < 50 && hlen != 20; i++) {
            hlen = syncd_test_redis_hlen(&redis, pubv);
            if (hlen != 20)
                usleep(20 * 1000);
        }
        assert_int_equal(kill(redis.pid, SIGSTOP), 0);
        if (now_ms() - t0 < ttl_secs * 1000L - 500) {
            assert_int_equal(hlen, 20);
            return;
        }
        assert_true(attempt < 3);
        assert_int_equal(kill(redis.pid, SIGCONT), 0);
        daemon_stop(&cl->nodes[0]);
    }
}

/* Sleeps until secs seconds after t0 (now_ms()). */
static void sleep_until(int64_t t0, long secs)
{
    while (now_ms() - t0 < secs * 1000L)
        usleep(100 * 1000);
}

/* Thaws Redis after tombstones_then_freeze(), then requires all 20
 * tombstones purged and their ids forgotten: pubv empty. The node counts
 * the records its forgets dropped: those of the m ids (purged after the
 * thaw), and of the n ids unless a forget that timed out while Redis was
 * frozen still ran when it thawed (the one asked again then finds them
 * gone). */
static void thaw_then_all_forgotten(cluster_t *cl, const char *pubv)
{
    long long left = -1, purged = 0, forgotten = 0;

    assert_int_equal(kill(redis.pid, SIGCONT), 0);
    for (int i = 0; i < 300 && (left != 0 || purged < 20 || forgotten < 10);
         i++) {
        usleep(100 * 1000);
        left = syncd_test_redis_hlen(&redis, pubv);
        purged = metric(cl->nodes[0].port, "syncd_tombstones_purged_total");
        forgotten =
            metric(cl->nodes[0].port, "syncd_purged_ids_forgotten_total");
    }
    assert_int_equal(left, 0);
    assert_int_equal(purged, 20);
    assert_true(forgotten >= 10 && forgotten <= 20);
}

/* The bus's records of purged ids are dropped even when the bus was away
 * at the purge: the node asks again at each purge period, and purges
 * nothing more until they are dropped, so that its memory does not hold
 * the ids of every tombstone purged while the bus is away. */
static void
test_contract__forgets_that_failed_while_redis_was_frozen_are_asked_again(
    void **state)
{
    cluster_t *cl = &the_cluster;
    char pubv[256];
    long long failures = 0, purged = 0;
    int64_t t0;

    (void)state;
    /* Purges every second; a tombstone is due 4 s after its delete. */
    tombstones_then_freeze(cl, "frozenforget", 4, "300ms", pubv, sizeof(pubv));
    t0 = now_ms();
    /* The n ids are purged, and their forget times out. (All ten, unless
     * making them took longer than a purge period: the first run then
     * finds only those due.) */
    for (int i = 0; i < 200 && (failures < 1 || purged < 1); i++) {
        usleep(100 * 1000);
        failures = metric(cl->nodes[0].port, "syncd_bus_forget_failures_total");
        purged = metric(cl->nodes[0].port, "syncd_tombstones_purged_total");
    }
    assert_true(failures >= 1);
    assert_true(purged >= 1 && purged <= 10);
    /* The m ids are due at most 4 s after the freeze: 7 s after it, three
     * purge periods later, they are still in the store while the forgets
     * fail. */
    sleep_until(t0, 7);
    assert_int_equal(metric(cl->nodes[0].port, "syncd_tombstones_purged_total"),
                     purged);
    assert_true(metric(cl->nodes[0].port, "syncd_bus_forget_failures_total") >
                failures);
    thaw_then_all_forgotten(cl, pubv);
}

/* A purge run does not start while the forgets of the one before are
 * unanswered: with the bus frozen and its timeout longer than the purge
 * period, the tombstones due meanwhile stay in the store; once the bus
 * answers, they are purged and forgotten. */
static void
test_contract__no_purge_starts_while_forgets_are_unanswered(void **state)
{
    cluster_t *cl = &the_cluster;
    char pubv[256];
    long long purged = 0;
    int64_t t0;

    (void)state;
    /* Purges every second; a tombstone is due 6 s after its delete; the
     * bus drops a connection to a frozen Redis (failing what waits on it)
     * 12 s after its last answer. */
    tombstones_then_freeze(cl, "slowforget", 6, "12s", pubv, sizeof(pubv));
    t0 = now_ms();
    /* The n ids are purged (due before the m ids; all ten unless making
     * them took longer than a purge period); their forget waits on Redis. */
    for (int i = 0; i < 300 && purged < 1; i++) {
        usleep(100 * 1000);
        purged = metric(cl->nodes[0].port, "syncd_tombstones_purged_total");
    }
    assert_true(purged >= 1 && purged <= 10);
    /* The m ids are due at most 6 s after the freeze: 10 s after it, no
     * purge has run since, and no forget has failed yet. */
    sleep_until(t0, 10);
    assert_int_equal(metric(cl->nodes[0].port, "syncd_tombstones_purged_total"),
                     purged);
    assert_int_equal(
        metric(cl->nodes[0].port, "syncd_bus_forget_failures_total"), 0);
    thaw_then_all_forgotten(cl, pubv);
}

/* ---- Embedded default ---------------------------------------------------- */

static void
test_contract__embedded_node_killed_after_a_commit_publishes_it_on_restart(
    void **state)
{
    daemon_t *d = &the_cluster.nodes[0];
    watcher_t *w = &the_cluster.watchers[0];
    int64_t want[NDOCS];
    int status;

    (void)state;
    assert_int_equal(daemon_start(d, "solo", NULL, NDOCS + 2), 0);
    create_docs(d->port, "solo");
    watcher_start(w, d, "solo");
    the_cluster.nwatchers = 1;
    assert_int_equal(patch_doc(d->port, "solo", 0, 1).status, 200);
    /* The commit that kills it: no answer. */
    assert_int_equal(patch_doc(d->port, "solo", 1, 2).status, 0);
    status = daemon_reap(d, 10000);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    assert_int_equal(daemon_run(d, 0), 0);
    /* The watcher resumes with Last-Event-ID and sees the version. */
    for (int i = 0; i < 600 && !watcher_caught_up(w, (int64_t[]){2, 2, 1, 1});
         i++)
        usleep(50 * 1000);
    daemon_halt(d);
    store_versions(want, "solo", NULL, d->data);
    assert_int_equal(want[1], 2);
    assert_watchers_saw_every_version(w, 1, want);
}

/* ---- Idempotency-Key ----------------------------------------------------- */

static void
test_contract__a_patch_retried_with_its_key_applies_once_on_any_node(
    void **state)
{
    static const char *h[] = {"Content-Type: application/json-patch+json",
                              "Idempotency-Key: retry-1", NULL};
    static const char *bad[] = {"Content-Type: application/json-patch+json",
                                "Idempotency-Key: has space", NULL};
    static const char *inc = "[{\"op\":\"add\",\"path\":\"/x\",\"value\":1}]";
    cluster_t *cl = &the_cluster;
    response_t a, b, c, get;

    (void)state;
    cluster_open(cl, "idem", 0);
    a = request(cl->nodes[0].port, "PATCH", "/v1/collections/idem/docs/d0", inc,
                h);
    b = request(cl->nodes[0].port, "PATCH", "/v1/collections/idem/docs/d0", inc,
                h);
    c = request(cl->nodes[1].port, "PATCH", "/v1/collections/idem/docs/d0", inc,
                h);
    assert_int_equal(a.status, 200);
    assert_string_equal(a.etag, "\"2\"");
    assert_int_equal(b.status, a.status);
    assert_string_equal(b.etag, a.etag);
    assert_string_equal(b.body, a.body);
    assert_int_equal(c.status, a.status);
    assert_string_equal(c.etag, a.etag);
    get = request(cl->nodes[1].port, "GET", "/v1/collections/idem/docs/d0",
                  NULL, NULL);
    assert_string_equal(get.etag, "\"2\"");
    assert_int_equal(request(cl->nodes[0].port, "PATCH",
                             "/v1/collections/idem/docs/d0", inc, bad)
                         .status,
                     400);
    cluster_check(cl);
}

/* ---- syncctl ------------------------------------------------------------- */

static void
test_contract__syncctl_retries_a_write_until_the_node_answers(void **state)
{
    daemon_t *d = &the_cluster.nodes[0];
    int port = syncd_test_free_port();
    char server[64], file[300];
    response_t get;
    FILE *f;
    pid_t pid;
    int status = -1;

    (void)state;
    snprintf(server, sizeof(server), "http://127.0.0.1:%d", port);
    assert_int_equal(syncd_test_tmpdir(file, sizeof(file) - 16, "syncctl"), 0);
    strcat(file, "/doc.json");
    f = fopen(file, "w");
    assert_non_null(f);
    fputs("{\"n\":5}", f);
    fclose(f);
    /* The node is not up yet: the first attempts are refused. */
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);

        dup2(devnull, 1);
        execl(SYNCCTL_BINARY, SYNCCTL_BINARY, "--server", server, "put", "cli",
              "d0", file, (char *)NULL);
        _exit(127);
    }
    usleep(300 * 1000);
    assert_int_equal(daemon_start_on(d, port, "solo", NULL, 0), 0);
    for (int i = 0; i < 1500 && waitpid(pid, &status, WNOHANG) != pid; i++)
        usleep(10 * 1000);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    get = request(port, "GET", "/v1/collections/cli/docs/d0", NULL, NULL);
    assert_int_equal(get.status, 200);
    assert_string_equal(get.etag, "\"1\"");
    assert_string_equal(get.body, "{\"n\":5}");
    *strrchr(file, '/') = '\0';
    syncd_test_rmtree(file);
}

/* ---- Main ---------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (syncd_test_mongo_start(&mongo) != 0 ||
        syncd_test_redis_start(&redis) != 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    syncd_test_server_destroy(&redis);
    syncd_test_server_destroy(&mongo);
    curl_global_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            test_contract__syncctl_retries_a_write_until_the_node_answers,
            teardown_cluster),
        cmocka_unit_test_teardown(
            test_contract__embedded_node_killed_after_a_commit_publishes_it_on_restart,
            teardown_cluster),
        cmocka_unit_test_teardown(
            test_contract__a_patch_retried_with_its_key_applies_once_on_any_node,
            teardown_cluster),
        cmocka_unit_test_teardown(
            test_contract__node_killed_right_after_a_commit_loses_no_version,
            teardown_cluster),
        cmocka_unit_test_teardown(
            test_contract__redis_stopped_during_writes_loses_no_version,
            teardown_cluster),
        cmocka_unit_test_teardown(
            test_contract__redis_frozen_during_writes_loses_no_version,
            teardown_cluster),
        cmocka_unit_test_teardown(
            test_contract__redis_restarted_under_concurrent_writers_of_one_document_loses_no_version,
            teardown_cluster),
        cmocka_unit_test_teardown(
            test_contract__writes_are_answered_before_their_publish_up_to_sixteen_behind,
            teardown_cluster),
        cmocka_unit_test_teardown(
            test_contract__redis_away_for_more_versions_than_the_outbox_holds_loses_no_version,
            teardown_cluster),
        cmocka_unit_test_teardown(
            test_contract__calls_to_a_frozen_store_fail_within_the_request_timeout,
            teardown_cluster),
        cmocka_unit_test_teardown(
            test_contract__a_slow_request_is_logged_with_where_its_time_went,
            teardown_cluster),
        cmocka_unit_test_teardown(
            test_contract__ids_created_and_deleted_leave_no_bus_record_once_purged,
            teardown_cluster),
        cmocka_unit_test_teardown(
            test_contract__forgets_that_failed_while_redis_was_frozen_are_asked_again,
            teardown_cluster),
        cmocka_unit_test_teardown(
            test_contract__no_purge_starts_while_forgets_are_unanswered,
            teardown_cluster),
    };

    signal(SIGPIPE, SIG_IGN);
    /* SYNCD_TEST_FILTER=<glob> runs only the matching tests. */
    if (getenv("SYNCD_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("SYNCD_TEST_FILTER"));
    return cmocka_run_group_tests_name("contract", tests, group_setup,
                                       group_teardown);
}
