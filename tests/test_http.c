/* test_http.c - HTTP conformance of the syncd daemon, over real sockets.
 *
 * Starts the real `syncd` binary in the embedded default (RocksDB store of
 * record in a temp dir, in-process bus) on a free loopback port, and
 * drives every route of DESIGN.md section 5 with libcurl and raw sockets:
 * status codes, ETags and error bodies, malformed HTTP, limits, slow and
 * idle clients, pipelining, bearer tokens, SSE watch streams, a graceful
 * shutdown on SIGTERM, GET /v1/nodes of the embedded default (only the node
 * itself), and one syncd per data dir.
 */
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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "servers.h"

#ifndef SYNCD_BINARY
#error "SYNCD_BINARY must name the syncd binary"
#endif

/* One running syncd process. */
typedef struct daemon {
    pid_t pid;
    int port;
    char dir[256];
    char log[300];
} daemon_t;

/* The shared daemon most tests use. */
static daemon_t main_daemon;

/* ---- Processes ------------------------------------------------------- */

/* Starts syncd on a free port with its own data dir and the extra flags
 * (NULL-terminated); waits until it accepts connections. 0 or -1. */
static int daemon_start(daemon_t *d, ...)
{
    char *argv[64];
    char listen[64], data[300];
    int argc = 0, i, fd;
    pid_t parent;
    va_list ap;

    memset(d, 0, sizeof(*d));
    if (syncd_test_tmpdir(d->dir, sizeof(d->dir), "http") != 0)
        return -1;
    d->port = syncd_test_free_port();
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", d->port);
    snprintf(data, sizeof(data), "%s/data", d->dir);
    snprintf(d->log, sizeof(d->log), "%s/syncd.log", d->dir);
    argv[argc++] = SYNCD_BINARY;
    argv[argc++] = "--listen";
    argv[argc++] = listen;
    argv[argc++] = "--data-dir";
    argv[argc++] = data;
    va_start(ap, d);
    while (argc < 62 && (argv[argc] = va_arg(ap, char *)) != NULL)
        argc++;
    va_end(ap);
    argv[argc] = NULL;
    parent = getpid();
    d->pid = fork();
    if (d->pid < 0)
        return -1;
    if (d->pid == 0) {
        syncd_test_child_setup(parent, d->log, 0);
        execv(argv[0], argv);
        _exit(127);
    }
    for (i = 0; i < 200; i++) {
        int status;

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

/* Waits for syncd to exit and returns its exit status (-1 if it did not
 * exit normally); removes its dir when it exited 0. */
static int daemon_wait(daemon_t *d)
{
    int status = 0;

    if (d->pid <= 0)
        return -1;
    waitpid(d->pid, &status, 0);
    d->pid = 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        syncd_test_rmtree(d->dir);
    else
        fprintf(stderr, "syncd status %d; log kept in %s\n", status, d->log);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Sends SIGTERM and returns syncd's exit status (see daemon_wait()). */
static int daemon_stop(daemon_t *d)
{
    if (d->pid > 0)
        kill(d->pid, SIGTERM);
    return daemon_wait(d);
}

/* ---- libcurl client -------------------------------------------------- */

typedef struct response {
    long status;
    char *body;
    size_t len;
    char etag[64];
    char content_type[128];
} response_t;

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    response_t *r = arg;
    char *p = realloc(r->body, r->len + size * n + 1);

    if (p == NULL)
        return 0;
    r->body = p;
    memcpy(r->body + r->len, data, size * n);
    r->len += size * n;
    r->body[r->len] = '\0';
    return size * n;
}

static void copy_header_value(char *dst, size_t size, const char *line,
                              size_t len, const char *name)
{
    size_t n = strlen(name);

    if (len > n && strncasecmp(line, name, n) == 0) {
        line += n;
        len -= n;
        while (len > 0 && *line == ' ')
            line++, len--;
        while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n'))
            len--;
        snprintf(dst, size, "%.*s", (int)len, line);
    }
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    response_t *r = arg;

    copy_header_value(r->etag, sizeof(r->etag), data, size * n, "ETag:");
    copy_header_value(r->content_type, sizeof(r->content_type), data, size * n,
                      "Content-Type:");
    return size * n;
}

/* Sends one request to d; headers is a NULL-terminated list or NULL. */
static response_t request(const daemon_t *d, const char *method,
                          const char *path, const char *body,
                          const char **headers)
{
    response_t r;
    CURL *c = curl_easy_init();
    struct curl_slist *list = curl_slist_append(NULL, "Expect:");
    char url[2048];

    memset(&r, 0, sizeof(r));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", d->port, path);
    for (; headers != NULL && *headers != NULL; headers++)
        list = curl_slist_append(list, *headers);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    if (body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(list);
    curl_easy_cleanup(c);
    return r;
}

static void response_free(response_t *r)
{
    free(r->body);
    r->body = NULL;
}

/* Asserts r's status and, when code is not NULL, its error code. */
static void expect(response_t *r, long status, const char *code)
{
    if (r->status != status)
        fprintf(stderr, "got %ld: %s\n", r->status, r->body ? r->body : "");
    assert_int_equal(r->status, status);
    if (code != NULL) {
        json_t *v = json_loads(r->body ? r->body : "", 0, NULL);

        assert_non_null(v);
        assert_string_equal(json_string_value(json_object_get(v, "error")),
                            code);
        assert_non_null(json_string_value(json_object_get(v, "message")));
        json_decref(v);
    }
    response_free(r);
}

/* Sends a request to the main daemon and checks its status (and error
 * code when not NULL). */
static void check(const char *method, const char *path, const char *body,
                  const char **headers, long status, const char *code)
{
    response_t r = request(&main_daemon, method, path, body, headers);

    expect(&r, status, code);
}

/* ---- Raw sockets ----------------------------------------------------- */

/* Sends len bytes to port and reads until the server closes (or 10 s
 * pass) into a malloc'd, NUL-terminated string. */
static char *raw_exchange(int port, const char *data, size_t len)
{
    struct timeval tv = {10, 0};
    size_t cap = 65536, n = 0;
    char *out = malloc(cap);
    int fd = syncd_test_connect(port);
    ssize_t got;

    assert_non_null(out);
    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(send(fd, data, len, MSG_NOSIGNAL), (ssize_t)len);
    while ((got = recv(fd, out + n, cap - n - 1, 0)) > 0) {
        n += (size_t)got;
        if (n + 1 == cap) {
            cap *= 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
    }
    out[n] = '\0';
    close(fd);
    return out;
}

/* Connects to port with 10 s send and receive timeouts. */
static int connect_timed(int port)
{
    struct timeval tv = {10, 0};
    int fd = syncd_test_connect(port);

    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

/* Reads from fd into out (size bytes, NUL-terminated) until it holds
 * needle, the server closes, or the receive timeout passes; returns 1 when
 * needle was seen. */
static int recv_until(int fd, char *out, size_t size, const char *needle)
{
    size_t n = strlen(out);
    ssize_t got;

    while (strstr(out, needle) == NULL && n + 1 < size &&
           (got = recv(fd, out + n, size - n - 1, 0)) > 0) {
        n += (size_t)got;
        out[n] = '\0';
    }
    return strstr(out, needle) != NULL;
}

/* Counts occurrences of needle in hay. */
static int count_of(const char *hay, const char *needle)
{
    int n = 0;

    while ((hay = strstr(hay, needle)) != NULL) {
        n++;
        hay += strlen(needle);
    }
    return n;
}

/* ---- SSE ------------------------------------------------------------- */

typedef struct sse {
    int fd;
    char buf[1 << 16];
    size_t len;
} sse_t;

/* Opens a watch stream with a raw GET of path and extra header lines. */
static void sse_open(sse_t *s, const daemon_t *d, const char *path,
                     const char *extra)
{
    char req[1024];
    struct timeval tv = {10, 0};
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n",
                     path, extra ? extra : "");

    memset(s, 0, sizeof(*s));
    s->fd = syncd_test_connect(d->port);
    assert_true(s->fd >= 0);
    setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(send(s->fd, req, (size_t)n, MSG_NOSIGNAL), n);
}

/* Reads until the stream holds `count` occurrences of marker (or the
 * server closes, or 10 s pass); returns the count seen. */
static int sse_wait(sse_t *s, const char *marker, int count)
{
    int seen;

    while ((seen = count_of(s->buf, marker)) < count &&
           s->len + 1 < sizeof(s->buf)) {
        ssize_t got =
            recv(s->fd, s->buf + s->len, sizeof(s->buf) - s->len - 1, 0);

        if (got <= 0)
            break;
        s->len += (size_t)got;
        s->buf[s->len] = '\0';
    }
    return seen;
}

static void sse_close(sse_t *s)
{
    close(s->fd);
}

/* ---- Fixtures -------------------------------------------------------- */

static int setup_main(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_ALL);
    /* Hundreds of connections from this one client in some tests. */
    return daemon_start(&main_daemon, "--header-timeout", "2s",
                        "--max-header-bytes", "4KiB", "--max-doc-bytes",
                        "64KiB", "--bookmark-interval", "1s", "--log-level",
                        "debug", "--max-connections-per-client", "1000", NULL);
}

static int teardown_main(void **state)
{
    int rc;

    (void)state;
    rc = daemon_stop(&main_daemon);
    curl_global_cleanup();
    return rc == 0 ? 0 : -1;
}

static const char *json_patch_ct[] = {
    "Content-Type: application/json-patch+json", NULL};
static const char *merge_patch_ct[] = {
    "Content-Type: application/merge-patch+json", NULL};

/* ---- Routes ---------------------------------------------------------- */

static void test_health__answers_200_with_node_store_and_bus(void **state)
{
    response_t r = request(&main_daemon, "GET", "/v1/health", NULL, NULL);
    json_t *v;

    (void)state;
    assert_int_equal(r.status, 200);
    v = json_loads(r.body, 0, NULL);
    assert_non_null(v);
    assert_string_equal(json_string_value(json_object_get(v, "node")), "local");
    assert_string_equal(json_string_value(json_object_get(v, "store")),
                        "rocksdb");
    assert_string_equal(json_string_value(json_object_get(v, "bus")), "local");
    assert_true(json_is_true(json_object_get(v, "bus_connected")));
    assert_true(json_string_length(json_object_get(v, "version")) > 0);
    json_decref(v);
    response_free(&r);
}

static void test_put__creates_with_201_and_etag_1(void **state)
{
    response_t r = request(&main_daemon, "PUT", "/v1/collections/t/docs/a",
                           "{\"n\":1}", NULL);

    (void)state;
    assert_int_equal(r.status, 201);
    assert_string_equal(r.etag, "\"1\"");
    assert_string_equal(r.body, "{\"n\":1}");
    response_free(&r);
    r = request(&main_daemon, "GET", "/v1/collections/t/docs/a", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.etag, "\"1\"");
    assert_string_equal(r.content_type, "application/json");
    response_free(&r);
}

static void test_put__if_none_match_star_on_a_live_doc_is_409(void **state)
{
    const char *h[] = {"If-None-Match: *", NULL};

    (void)state;
    check("PUT", "/v1/collections/t/docs/inm", "{}", h, 201, NULL);
    check("PUT", "/v1/collections/t/docs/inm", "{}", h, 409, "exists");
}

static void test_put__if_match_replaces_or_fails_with_412(void **state)
{
    const char *stale[] = {"If-Match: \"7\"", NULL};
    const char *good[] = {"If-Match: \"1\"", NULL};
    response_t r;

    (void)state;
    check("PUT", "/v1/collections/t/docs/im", "{\"a\":1}", NULL, 201, NULL);
    check("PUT", "/v1/collections/t/docs/im", "{\"a\":2}", stale, 412,
          "precondition_failed");
    r = request(&main_daemon, "PUT", "/v1/collections/t/docs/im", "{\"a\":3}",
                good);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.etag, "\"2\"");
    response_free(&r);
    check("PUT", "/v1/collections/t/docs/im-missing", "{}", good, 412,
          "precondition_failed");
}

static void test_put__without_preconditions_replaces_with_200(void **state)
{
    response_t r;

    (void)state;
    check("PUT", "/v1/collections/t/docs/rep", "{\"a\":1}", NULL, 201, NULL);
    r = request(&main_daemon, "PUT", "/v1/collections/t/docs/rep", "{\"a\":2}",
                NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.etag, "\"2\"");
    response_free(&r);
}

/* Asserts that GET coll/id answers 200 with body, byte for byte. */
static void assert_get_body(const char *path, const char *body)
{
    response_t r = request(&main_daemon, "GET", path, NULL, NULL);

    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, body);
    response_free(&r);
}

static void test_put__every_write_answers_the_bytes_a_get_serves(void **s)
{
    static const char path[] = "/v1/collections/t/docs/canon";
    response_t r;

    (void)s;
    /* Members out of order, nested, with spaces and escapes: every write
     * answers the canonical JSON that GET serves, not the request's. */
    r = request(
        &main_daemon, "PUT", path,
        "{ \"z\": [1, {\"y\": 2, \"x\": \"\\u0041\\n\"}], \"a\": 1.50 }", NULL);
    assert_int_equal(r.status, 201);
    assert_string_equal(r.body,
                        "{\"a\":1.5,\"z\":[1,{\"x\":\"A\\n\",\"y\":2}]}");
    assert_get_body(path, r.body);
    response_free(&r);
    r = request(
        &main_daemon, "PATCH", path,
        "[{\"op\":\"add\",\"path\":\"/m\",\"value\":{\"q\":1,\"p\":0}}]",
        json_patch_ct);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"a\":1.5,\"m\":{\"p\":0,\"q\":1},\"z\":[1,{"
                                "\"x\":\"A\\n\",\"y\":2}]}");
    assert_get_body(path, r.body);
    response_free(&r);
    r = request(&main_daemon, "PATCH", path, "{\"b\":{\"d\":1,\"c\":2}}",
                merge_patch_ct);
    assert_int_equal(r.status, 200);
    assert_get_body(path, r.body);
    response_free(&r);
    r = request(&main_daemon, "POST",
                "/v1/collections/t/docs/canon/rollback?to=1", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body,
                        "{\"a\":1.5,\"z\":[1,{\"x\":\"A\\n\",\"y\":2}]}");
    assert_get_body(path, r.body);
    response_free(&r);
    r = request(&main_daemon, "GET", "/v1/collections/t/docs/canon?version=2",
                NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"a\":1.5,\"m\":{\"p\":0,\"q\":1},\"z\":[1,{"
                                "\"x\":\"A\\n\",\"y\":2}]}");
    response_free(&r);
}

static void test_get__missing_doc_is_404(void **state)
{
    (void)state;
    check("GET", "/v1/collections/t/docs/nope", NULL, NULL, 404, "not_found");
}

static void test_patch__json_patch_increments_with_200_and_etag(void **state)
{
    response_t r;

    (void)state;
    check("PUT", "/v1/collections/t/docs/p", "{\"n\":1}", NULL, 201, NULL);
    r = request(&main_daemon, "PATCH", "/v1/collections/t/docs/p",
                "[{\"op\":\"replace\",\"path\":\"/n\",\"value\":2}]",
                json_patch_ct);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.etag, "\"2\"");
    assert_string_equal(r.body, "{\"n\":2}");
    response_free(&r);
}

static void test_patch__merge_patch_applies_with_200(void **state)
{
    response_t r;

    (void)state;
    check("PUT", "/v1/collections/t/docs/m", "{\"a\":1,\"b\":2}", NULL, 201,
          NULL);
    r = request(&main_daemon, "PATCH", "/v1/collections/t/docs/m",
                "{\"a\":null,\"c\":3}", merge_patch_ct);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.etag, "\"2\"");
    assert_string_equal(r.body, "{\"b\":2,\"c\":3}");
    response_free(&r);
}

static void test_patch__other_content_types_are_415(void **state)
{
    const char *h[] = {"Content-Type: application/json", NULL};

    (void)state;
    check("PUT", "/v1/collections/t/docs/ct", "{}", NULL, 201, NULL);
    check("PATCH", "/v1/collections/t/docs/ct", "[]", h, 415,
          "unsupported_media_type");
}

static void test_patch__invalid_patches_are_422(void **state)
{
    (void)state;
    check("PUT", "/v1/collections/t/docs/ip", "{\"a\":1}", NULL, 201, NULL);
    check("PATCH", "/v1/collections/t/docs/ip",
          "[{\"op\":\"frobnicate\",\"path\":\"/a\"}]", json_patch_ct, 422,
          "invalid_patch");
    check("PATCH", "/v1/collections/t/docs/ip", "{\"op\":\"add\"}",
          json_patch_ct, 422, "invalid_patch");
    check("PATCH", "/v1/collections/t/docs/ip",
          "[{\"op\":\"remove\",\"path\":\"/missing\"}]", json_patch_ct, 422,
          "invalid_patch");
    check("PATCH", "/v1/collections/t/docs/ip", "[{\"op\":", json_patch_ct, 400,
          "invalid_json");
}

static void test_patch__failing_test_op_is_409(void **state)
{
    (void)state;
    check("PUT", "/v1/collections/t/docs/tst", "{\"a\":1}", NULL, 201, NULL);
    check("PATCH", "/v1/collections/t/docs/tst",
          "[{\"op\":\"test\",\"path\":\"/a\",\"value\":2}]", json_patch_ct, 409,
          "conflict");
}

static void test_patch__stale_if_match_is_412_and_missing_doc_404(void **state)
{
    const char *h[] = {"Content-Type: application/merge-patch+json",
                       "If-Match: \"9\"", NULL};

    (void)state;
    check("PUT", "/v1/collections/t/docs/pim", "{}", NULL, 201, NULL);
    check("PATCH", "/v1/collections/t/docs/pim", "{\"x\":1}", h, 412,
          "precondition_failed");
    check("PATCH", "/v1/collections/t/docs/none", "{\"x\":1}", merge_patch_ct,
          404, "not_found");
}

static void test_delete__tombstones_and_recreate_continues_version(void **s)
{
    const char *stale[] = {"If-Match: \"5\"", NULL};
    long long tomb = 0, again = 0;
    response_t r;

    (void)s;
    check("PUT", "/v1/collections/t/docs/d", "{}", NULL, 201, NULL);
    check("DELETE", "/v1/collections/t/docs/d", NULL, stale, 412,
          "precondition_failed");
    r = request(&main_daemon, "DELETE", "/v1/collections/t/docs/d", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_true(sscanf(r.etag, "\"%lld\"", &tomb) == 1 && tomb >= 1);
    response_free(&r);
    check("GET", "/v1/collections/t/docs/d", NULL, NULL, 404, "not_found");
    check("DELETE", "/v1/collections/t/docs/d", NULL, NULL, 404, "not_found");
    r = request(&main_daemon, "PUT", "/v1/collections/t/docs/d", "{}", NULL);
    assert_int_equal(r.status, 201);
    assert_true(sscanf(r.etag, "\"%lld\"", &again) == 1);
    assert_int_equal(again, tomb + 1);
    response_free(&r);
}

static void test_bad_input__malformed_or_non_object_json_is_400(void **s)
{
    (void)s;
    check("PUT", "/v1/collections/t/docs/bj", "{\"a\":", NULL, 400,
          "invalid_json");
    check("PUT", "/v1/collections/t/docs/bj", "[1,2]", NULL, 400,
          "invalid_json");
    check("GET", "/v1/collections/t/docs/bj", NULL, NULL, 404, NULL);
    /* A string with a NUL is refused, in a key too; an escaped backslash
     * followed by u0000 is plain text. */
    check("PUT", "/v1/collections/t/docs/bj", "{\"a\":\"x\\u0000y\"}", NULL,
          400, "invalid_json");
    check("PUT", "/v1/collections/t/docs/bj", "{\"k\\u0000\":1}", NULL, 400,
          "invalid_json");
    check("PUT", "/v1/collections/t/docs/bj", "{\"a\":\"\\\\\\u0000\"}", NULL,
          400, "invalid_json");
    check("GET", "/v1/collections/t/docs/bj", NULL, NULL, 404, NULL);
    check("PUT", "/v1/collections/t/docs/bj", "{\"a\":\"\\\\u0000\"}", NULL,
          201, NULL);
    check("GET", "/v1/collections/t/docs/bj", NULL, NULL, 200, NULL);
}

static void test_bad_input__bad_ids_collections_and_encoding_are_400(void **s)
{
    response_t r;

    (void)s;
    check("GET", "/v1/collections/Bad!/docs/x", NULL, NULL, 400,
          "invalid_collection");
    check("GET", "/v1/collections/t/docs/a%7Bb", NULL, NULL, 400, "invalid_id");
    check("GET", "/v1/collections/t/docs/a%0Ab", NULL, NULL, 400, "invalid_id");
    check("GET", "/v1/collections/t/docs/a%zzb", NULL, NULL, 400,
          "bad_request");
    check("GET", "/v1/collections/t/docs/a%00b", NULL, NULL, 400,
          "bad_request");
    check("GET", "/v1/collections/t/docs/a%4", NULL, NULL, 400, "bad_request");
    check("GET", "/v1/collections/t/docs?prefix=%G1", NULL, NULL, 400,
          "bad_request");
    /* A percent-encoded slash is part of the id. */
    check("PUT", "/v1/collections/t/docs/Scenario%2Fhelloworld", "{}", NULL,
          201, NULL);
    r = request(&main_daemon, "GET", "/v1/collections/t/docs?prefix=Scenario",
                NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"Scenario/helloworld\""));
    response_free(&r);
}

static void test_bad_input__oversize_bodies_are_413(void **state)
{
    size_t n = 100 * 1024, big = 300 * 1024;
    char *body = malloc(big + 16);

    (void)state;
    assert_non_null(body);
    /* Over --max-doc-bytes: refused by the store. */
    snprintf(body, 16, "{\"s\":\"");
    memset(body + 6, 'x', n);
    strcpy(body + 6 + n, "\"}");
    check("PUT", "/v1/collections/t/docs/big", body, NULL, 413, "too_large");
    /* Over the HTTP body limit: refused before it is read. */
    memset(body + 6, 'x', big);
    strcpy(body + 6 + big, "\"}");
    check("PUT", "/v1/collections/t/docs/big", body, NULL, 413, "too_large");
    free(body);
    check("GET", "/v1/collections/t/docs/big", NULL, NULL, 404, NULL);
}

static void test_list__returns_seq_docs_and_next_page(void **state)
{
    response_t r;
    json_t *v;
    char path[128];

    (void)state;
    check("PUT", "/v1/collections/l/docs/a", "{}", NULL, 201, NULL);
    check("PUT", "/v1/collections/l/docs/b", "{}", NULL, 201, NULL);
    check("PUT", "/v1/collections/l/docs/c", "{}", NULL, 201, NULL);
    r = request(&main_daemon, "GET", "/v1/collections/l/docs?limit=2", NULL,
                NULL);
    assert_int_equal(r.status, 200);
    v = json_loads(r.body, 0, NULL);
    assert_non_null(v);
    assert_int_equal(json_integer_value(json_object_get(v, "seq")), 3);
    assert_int_equal(json_array_size(json_object_get(v, "docs")), 2);
    assert_string_equal(json_string_value(json_object_get(v, "next")), "b");
    assert_int_equal(json_integer_value(json_object_get(
                         json_array_get(json_object_get(v, "docs"), 0), "v")),
                     1);
    snprintf(path, sizeof(path), "/v1/collections/l/docs?limit=2&after=%s",
             json_string_value(json_object_get(v, "next")));
    json_decref(v);
    response_free(&r);
    r = request(&main_daemon, "GET", path, NULL, NULL);
    v = json_loads(r.body, 0, NULL);
    assert_int_equal(json_array_size(json_object_get(v, "docs")), 1);
    assert_true(json_is_null(json_object_get(v, "next")));
    json_decref(v);
    response_free(&r);
    check("GET", "/v1/collections/l/docs?limit=0", NULL, NULL, 400,
          "bad_request");
}

static void test_digest__counts_live_documents(void **state)
{
    response_t r;
    json_t *v;

    (void)state;
    check("PUT", "/v1/collections/dg/docs/a", "{}", NULL, 201, NULL);
    check("PUT", "/v1/collections/dg/docs/b", "{}", NULL, 201, NULL);
    check("DELETE", "/v1/collections/dg/docs/b", NULL, NULL, 200, NULL);
    r = request(&main_daemon, "GET", "/v1/collections/dg/digest", NULL, NULL);
    assert_int_equal(r.status, 200);
    v = json_loads(r.body, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(v, "count")), 1);
    assert_int_equal(strlen(json_string_value(json_object_get(v, "digest"))),
                     64);
    json_decref(v);
    response_free(&r);
}

/* GETs path, which must answer 200 with JSON; returns it. */
static json_t *get_json(const char *path)
{
    response_t r = request(&main_daemon, "GET", path, NULL, NULL);
    json_t *v;

    assert_int_equal(r.status, 200);
    v = json_loads(r.body, 0, NULL);
    assert_non_null(v);
    response_free(&r);
    return v;
}

static void
test_export__lists_live_documents_then_a_trailer_with_count_digest_and_seq(
    void **state)
{
    response_t r;
    json_t *line, *digest;
    char *text, *save = NULL, *tok;
    int n = 0;

    (void)state;
    check("PUT", "/v1/collections/ex/docs/b", "{\"n\":2}", NULL, 201, NULL);
    check("PUT", "/v1/collections/ex/docs/a%2F1", "{\"n\":1}", NULL, 201, NULL);
    check("PUT", "/v1/collections/ex/docs/c", "{}", NULL, 201, NULL);
    check("DELETE", "/v1/collections/ex/docs/c", NULL, NULL, 200, NULL);
    r = request(&main_daemon, "GET", "/v1/collections/ex/export", NULL, NULL);
    assert_int_equal(r.status, 200);
    digest = get_json("/v1/collections/ex/digest?source=store");
    text = strdup(r.body);
    for (tok = strtok_r(text, "\n", &save); tok != NULL;
         tok = strtok_r(NULL, "\n", &save), n++) {
        line = json_loads(tok, 0, NULL);
        assert_non_null(line);
        assert_string_equal(json_string_value(json_object_get(line, "coll")),
                            "ex");
        if (n == 0) {
            assert_string_equal(json_string_value(json_object_get(line, "id")),
                                "a/1");
            assert_int_equal(json_integer_value(json_object_get(line, "v")), 1);
            assert_int_equal(json_integer_value(json_object_get(
                                 json_object_get(line, "data"), "n")),
                             1);
        } else if (n == 1) {
            assert_string_equal(json_string_value(json_object_get(line, "id")),
                                "b");
        } else {
            assert_int_equal(n, 2);
            assert_true(json_is_true(json_object_get(line, "trailer")));
            assert_int_equal(json_integer_value(json_object_get(line, "count")),
                             2);
            assert_string_equal(
                json_string_value(json_object_get(line, "digest")),
                json_string_value(json_object_get(digest, "digest")));
            assert_true(json_integer_value(json_object_get(line, "seq")) >= 4);
        }
        json_decref(line);
    }
    assert_int_equal(n, 3);
    free(text);
    json_decref(digest);
    response_free(&r);
}

static void test_collections__lists_the_store_collections_sorted(void **state)
{
    json_t *v;
    size_t i;
    const char *prev = "";
    json_t *name;

    (void)state;
    check("PUT", "/v1/collections/zz-last/docs/x", "{}", NULL, 201, NULL);
    v = get_json("/v1/collections");
    json_array_foreach (json_object_get(v, "collections"), i, name) {
        assert_true(strcmp(prev, json_string_value(name)) < 0);
        prev = json_string_value(name);
    }
    assert_string_equal(prev, "zz-last");
    json_decref(v);
}

static void
test_digest__ranges_split_a_collection_into_adjacent_parts(void **state)
{
    json_t *whole, *left, *right, *all, *store;
    char path[256];

    (void)state;
    for (int i = 0; i < 12; i++) {
        snprintf(path, sizeof(path), "/v1/collections/rd/docs/r%02d", i);
        check("PUT", path, "{\"n\":1}", NULL, 201, NULL);
    }
    whole = get_json("/v1/collections/rd/digest");
    all = get_json("/v1/collections/rd/digest?entries=1000");
    store = get_json("/v1/collections/rd/digest?source=store");
    assert_int_equal(json_integer_value(json_object_get(whole, "count")), 12);
    assert_string_equal(json_string_value(json_object_get(whole, "source")),
                        "node");
    /* 12 entries: the split leaves 4 (2 * 4 <= 12 < 2 * 8) on the left. */
    assert_string_equal(json_string_value(json_object_get(whole, "split")),
                        "r03");
    assert_true(json_equal(json_object_get(all, "digest"),
                           json_object_get(whole, "digest")));
    assert_true(json_equal(json_object_get(store, "digest"),
                           json_object_get(whole, "digest")));
    assert_false(json_is_true(json_object_get(all, "truncated")));

    /* (r01, r05] and (r05, r09] list, in order, the entries of (r01, r09]. */
    left = get_json("/v1/collections/rd/digest?after=r01&until=r05&entries=10");
    right = get_json("/v1/collections/rd/"
                     "digest?after=r05&until=r09&entries=10&source=store");
    json_decref(whole);
    whole =
        get_json("/v1/collections/rd/digest?after=r01&until=r09&entries=10");
    assert_int_equal(json_integer_value(json_object_get(left, "count")), 4);
    assert_int_equal(json_integer_value(json_object_get(right, "count")), 4);
    assert_int_equal(json_array_extend(json_object_get(left, "entries"),
                                       json_object_get(right, "entries")),
                     0);
    assert_true(json_equal(json_object_get(left, "entries"),
                           json_object_get(whole, "entries")));
    assert_string_not_equal(
        json_string_value(json_object_get(left, "digest")),
        json_string_value(json_object_get(whole, "digest")));
    json_decref(left);
    json_decref(right);
    json_decref(whole);
    json_decref(all);
    json_decref(store);

    check("GET", "/v1/collections/rd/digest?source=cache", NULL, NULL, 400,
          "bad_request");
    check("GET", "/v1/collections/rd/digest?entries=1001", NULL, NULL, 400,
          "bad_request");
    check("GET", "/v1/collections/rd/digest?entries=x", NULL, NULL, 400,
          "bad_request");
    check("GET", "/v1/collections/rd/digest?after=r05&until=r01", NULL, NULL,
          400, NULL);
    check("GET", "/v1/collections/rd/digest?after=r05&until=r05", NULL, NULL,
          400, NULL);
    check("GET", "/v1/collections/rd/digest?until=a%7B", NULL, NULL, 400, NULL);
    check("GET", "/v1/collections/rd/digest?after=%zz", NULL, NULL, 400,
          "bad_request");
}

static void test_verify__a_node_that_serves_its_store_agrees(void **state)
{
    response_t r;
    json_t *v, *d;

    (void)state;
    check("PUT", "/v1/collections/vf/docs/a", "{\"x\":1}", NULL, 201, NULL);
    check("PUT", "/v1/collections/vf/docs/b", "{\"x\":2}", NULL, 201, NULL);
    r = request(&main_daemon, "POST", "/v1/collections/vf/verify", NULL, NULL);
    assert_int_equal(r.status, 200);
    v = json_loads(r.body, 0, NULL);
    assert_non_null(v);
    response_free(&r);
    d = get_json("/v1/collections/vf/digest");
    assert_true(json_is_true(json_object_get(v, "agree")));
    assert_int_equal(json_integer_value(json_object_get(v, "count")), 2);
    assert_int_equal(json_integer_value(json_object_get(v, "store_count")), 2);
    assert_int_equal(json_integer_value(json_object_get(v, "bodies")), 2);
    assert_true(
        json_equal(json_object_get(v, "digest"), json_object_get(d, "digest")));
    assert_true(json_equal(json_object_get(v, "store_digest"),
                           json_object_get(d, "digest")));
    assert_int_equal(json_array_size(json_object_get(v, "differs")), 0);
    assert_false(json_is_true(json_object_get(v, "truncated")));
    assert_non_null(json_string_value(json_object_get(v, "node")));
    json_decref(v);
    json_decref(d);
    check("GET", "/v1/collections/vf/verify", NULL, NULL, 405, NULL);
    check("POST", "/v1/collections/Bad/verify", NULL, NULL, 400, NULL);
}

static void test_metrics__reports_requests_by_route_and_status(void **state)
{
    response_t r;

    (void)state;
    check("GET", "/v1/collections/t/docs/never", NULL, NULL, 404, NULL);
    r = request(&main_daemon, "GET", "/metrics", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.content_type, "text/plain"));
    assert_non_null(strstr(
        r.body, "syncd_http_requests_total{route=\"get\",code=\"404\"}"));
    assert_non_null(strstr(r.body, "syncd_edit_conflicts_total"));
    assert_non_null(strstr(r.body, "syncd_events_dropped_total{reason="));
    assert_non_null(strstr(r.body, "syncd_propagation_seconds_bucket"));
    assert_non_null(strstr(r.body, "syncd_cache_hits_total"));
    response_free(&r);
}

/* Returns the value of the unlabelled counter name on d's /metrics, or -1
 * when absent. */
static long long metric_value(const daemon_t *d, const char *name)
{
    response_t r = request(d, "GET", "/metrics", NULL, NULL);
    char line[128];
    long long v = -1;
    const char *at;

    snprintf(line, sizeof(line), "\n%s ", name);
    at = r.body != NULL ? strstr(r.body, line) : NULL;
    if (r.status == 200 && at != NULL)
        sscanf(at + strlen(line), "%lld", &v);
    response_free(&r);
    return v;
}

static void
test_tombstones__are_purged_by_the_daemon_after_tombstone_ttl(void **state)
{
    daemon_t d;
    response_t r;
    long long purged = 0, forgotten = 0;

    (void)state;
    assert_int_equal(daemon_start(&d, "--tombstone-ttl", "1s", NULL), 0);
    assert_int_equal(metric_value(&d, "syncd_tombstones_purged_total"), 0);
    r = request(&d, "PUT", "/v1/collections/tt/docs/gone", "{}", NULL);
    expect(&r, 201, NULL);
    r = request(&d, "DELETE", "/v1/collections/tt/docs/gone", NULL, NULL);
    assert_string_equal(r.etag, "\"2\"");
    expect(&r, 200, NULL);
    /* Nothing but the daemon's own timer purges it (a stuck purge fails
     * after 15 s). */
    for (int i = 0; i < 150 && purged < 1; i++) {
        usleep(100 * 1000);
        purged = metric_value(&d, "syncd_tombstones_purged_total");
    }
    assert_int_equal(purged, 1);
    /* The bus drops the id's deduplication record with it (bounded). */
    for (int i = 0; i < 100 && forgotten < 1; i++) {
        forgotten = metric_value(&d, "syncd_purged_ids_forgotten_total");
        if (forgotten < 1)
            usleep(20 * 1000);
    }
    assert_int_equal(forgotten, 1);
    assert_int_equal(metric_value(&d, "syncd_bus_forget_failures_total"), 0);
    /* The tombstone is gone from the store: the version line starts over. */
    r = request(&d, "PUT", "/v1/collections/tt/docs/gone", "{}", NULL);
    assert_string_equal(r.etag, "\"1\"");
    expect(&r, 201, NULL);
    assert_int_equal(daemon_stop(&d), 0);
}

static void test_routes__unknown_is_404_and_wrong_method_405(void **state)
{
    (void)state;
    check("GET", "/v2/nothing", NULL, NULL, 404, "not_found");
    check("GET", "/v1/collections/t/frob", NULL, NULL, 404, "not_found");
    check("POST", "/v1/collections/t/docs/x", "{}", NULL, 405,
          "method_not_allowed");
    check("DELETE", "/v1/health", NULL, NULL, 405, "method_not_allowed");
}

/* ---- HTTP robustness ------------------------------------------------- */

static void test_http__malformed_request_is_400_and_closed(void **state)
{
    static const char bad[] = "GET /v1/health HTTP/1.1\r\nHost t\r\n\r\n";
    char *out = raw_exchange(main_daemon.port, bad, sizeof(bad) - 1);

    (void)state;
    assert_non_null(strstr(out, "HTTP/1.1 400 "));
    assert_non_null(strstr(out, "Connection: close"));
    free(out);
    check("GET", "/v1/health", NULL, NULL, 200, NULL);
}

static void test_http__oversize_headers_are_431(void **state)
{
    char req[8192];
    int n = snprintf(req, sizeof(req), "GET /v1/health HTTP/1.1\r\nX-Big: ");
    char *out;

    (void)state;
    memset(req + n, 'a', 6000);
    n += 6000;
    n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n\r\n");
    out = raw_exchange(main_daemon.port, req, (size_t)n);
    assert_non_null(strstr(out, "HTTP/1.1 431 "));
    free(out);
}

static void test_http__pipelined_requests_are_answered_in_order(void **s)
{
    static const char reqs[] =
        "PUT /v1/collections/pipe/docs/x HTTP/1.1\r\nHost: t\r\n"
        "Content-Length: 7\r\n\r\n{\"n\":1}"
        "GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n"
        "GET /v1/collections/pipe/docs/x HTTP/1.1\r\nHost: t\r\n\r\n"
        "GET /v1/collections/pipe/docs/nope HTTP/1.1\r\nHost: t\r\n"
        "Connection: close\r\n\r\n";
    char *out = raw_exchange(main_daemon.port, reqs, sizeof(reqs) - 1);
    char *a, *b, *c, *d;

    (void)s;
    a = strstr(out, "HTTP/1.1 201 ");
    b = strstr(out, "HTTP/1.1 200 ");
    assert_non_null(a);
    assert_non_null(b);
    c = strstr(b + 1, "HTTP/1.1 200 ");
    d = strstr(out, "HTTP/1.1 404 ");
    assert_non_null(c);
    assert_non_null(d);
    assert_true(a < b && b < c && c < d);
    assert_non_null(strstr(b, "\"status\":\"ok\""));
    assert_non_null(strstr(c, "{\"n\":1}"));
    free(out);
}

static void test_http__slow_client_gets_408_while_others_are_served(void **s)
{
    static const char req[] = "GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n";
    char out[4096];
    int fd = syncd_test_connect(main_daemon.port);
    size_t i, n = 0;
    ssize_t got;

    (void)s;
    assert_true(fd >= 0);
    for (i = 0; i < sizeof(req) - 1; i++) {
        struct pollfd p = {fd, POLLIN, 0};

        if (poll(&p, 1, 0) > 0)
            break;
        if (send(fd, req + i, 1, MSG_NOSIGNAL) != 1)
            break;
        check("GET", "/v1/health", NULL, NULL, 200, NULL);
        sleep(1);
    }
    assert_true(i < sizeof(req) - 1);
    while (n + 1 < sizeof(out) &&
           (got = recv(fd, out + n, sizeof(out) - n - 1, 0)) > 0)
        n += (size_t)got;
    out[n] = '\0';
    close(fd);
    assert_non_null(strstr(out, "HTTP/1.1 408 "));
}

static void test_http__hundreds_of_idle_connections_do_not_block(void **s)
{
    int fds[300];
    size_t i;

    (void)s;
    for (i = 0; i < 300; i++) {
        fds[i] = syncd_test_connect(main_daemon.port);
        assert_true(fds[i] >= 0);
        if (i % 2 == 0)
            send(fds[i], "GET", 3, MSG_NOSIGNAL);
    }
    for (i = 0; i < 20; i++)
        check("GET", "/v1/health", NULL, NULL, 200, NULL);
    check("PUT", "/v1/collections/idle/docs/x", "{}", NULL, 201, NULL);
    for (i = 0; i < 300; i++)
        close(fds[i]);
}

/* ---- Watch ----------------------------------------------------------- */

static void test_watch__streams_events_with_id_event_and_data(void **state)
{
    sse_t w;
    response_t r;

    (void)state;
    r = request(&main_daemon, "GET", "/v1/collections/w/docs", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"seq\":0"));
    response_free(&r);
    sse_open(&w, &main_daemon, "/v1/collections/w/watch", NULL);
    assert_int_equal(sse_wait(&w, "text/event-stream", 1), 1);
    check("PUT", "/v1/collections/w/docs/a",
          "{\"n\":1,\"about\":\"a body larger than its diffs\"}", NULL, 201,
          NULL);
    check("PATCH", "/v1/collections/w/docs/a", "{\"n\":2}", merge_patch_ct, 200,
          NULL);
    check("DELETE", "/v1/collections/w/docs/a", NULL, NULL, 200, NULL);
    assert_int_equal(sse_wait(&w, "event: delete", 1), 1);
    assert_non_null(strstr(w.buf, "id: 1\nevent: create\ndata: {"));
    assert_non_null(strstr(w.buf, "id: 2\nevent: update\ndata: {"));
    assert_non_null(strstr(w.buf, "id: 3\nevent: delete\ndata: {"));
    assert_non_null(strstr(w.buf, "\"merge\":{\"n\":2}"));
    /* Idle: a bookmark with the current seq arrives. */
    assert_int_equal(sse_wait(&w, "event: bookmark", 1), 1);
    assert_non_null(strstr(w.buf, "event: bookmark\ndata: {\"seq\":3}"));
    sse_close(&w);
}

static void test_watch__since_and_last_event_id_resume_after_seq(void **s)
{
    sse_t w;

    (void)s;
    check("PUT", "/v1/collections/ws/docs/a", "{}", NULL, 201, NULL);
    check("PATCH", "/v1/collections/ws/docs/a", "{\"k\":1}", merge_patch_ct,
          200, NULL);
    check("PATCH", "/v1/collections/ws/docs/a", "{\"k\":2}", merge_patch_ct,
          200, NULL);
    check("PATCH", "/v1/collections/ws/docs/a", "{\"k\":3}", merge_patch_ct,
          200, NULL);
    sse_open(&w, &main_daemon, "/v1/collections/ws/watch?since=0", NULL);
    assert_int_equal(sse_wait(&w, "event: update", 3), 3);
    assert_non_null(strstr(w.buf, "id: 1\nevent: create\n"));
    assert_non_null(strstr(w.buf, "id: 4\nevent: update\n"));
    sse_close(&w);
    sse_open(&w, &main_daemon, "/v1/collections/ws/watch?since=1",
             "Last-Event-ID: 2\r\n");
    assert_int_equal(sse_wait(&w, "event: update", 2), 2);
    assert_null(strstr(w.buf, "id: 1\n"));
    assert_null(strstr(w.buf, "id: 2\n"));
    assert_true(strstr(w.buf, "id: 3\nevent: update") <
                strstr(w.buf, "id: 4\nevent: update"));
    sse_close(&w);
    sse_open(&w, &main_daemon, "/v1/collections/ws/watch?since=4", NULL);
    check("PATCH", "/v1/collections/ws/docs/a", "{\"k\":4}", merge_patch_ct,
          200, NULL);
    assert_int_equal(sse_wait(&w, "event: update", 1), 1);
    assert_non_null(strstr(w.buf, "id: 5\nevent: update"));
    sse_close(&w);
    check("GET", "/v1/collections/ws/watch?since=abc", NULL, NULL, 400,
          "bad_request");
}

static void test_watch__prefix_filters_ids(void **state)
{
    sse_t w;

    (void)state;
    sse_open(&w, &main_daemon, "/v1/collections/wp/watch?prefix=keep%2F", NULL);
    assert_int_equal(sse_wait(&w, "text/event-stream", 1), 1);
    check("PUT", "/v1/collections/wp/docs/drop%2Fa", "{}", NULL, 201, NULL);
    check("PUT", "/v1/collections/wp/docs/keep%2Fb", "{}", NULL, 201, NULL);
    assert_int_equal(sse_wait(&w, "event: create", 1), 1);
    assert_non_null(strstr(w.buf, "\"id\":\"keep/b\""));
    assert_null(strstr(w.buf, "drop/a"));
    sse_close(&w);
}

static void test_watch__since_older_than_the_log_is_410(void **state)
{
    daemon_t d;
    int i;
    response_t r;

    (void)state;
    assert_int_equal(daemon_start(&d, "--event-log-len", "4", NULL), 0);
    for (i = 0; i < 20; i++) {
        char body[32];

        snprintf(body, sizeof(body), "{\"i\":%d}", i);
        r = request(&d, "PUT", "/v1/collections/g/docs/a", body, NULL);
        assert_int_equal(r.status, i == 0 ? 201 : 200);
        response_free(&r);
    }
    r = request(&d, "GET", "/v1/collections/g/watch?since=0", NULL, NULL);
    expect(&r, 410, "gone");
    assert_int_equal(daemon_stop(&d), 0);
}

/* ---- Patch limits ------------------------------------------------------ */

/* Returns a JSON Patch of nops ops each copying the whole document into a
 * new member, so that each doubles it; malloc'd. */
static char *copy_bomb(int nops)
{
    static const char keys[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    char *patch = malloc((size_t)nops * 40 + 3);
    size_t n = 0;
    int i;

    assert_non_null(patch);
    patch[n++] = '[';
    for (i = 0; i < nops; i++)
        n += (size_t)sprintf(
            patch + n, "%s{\"op\":\"copy\",\"from\":\"\",\"path\":\"/%c\"}",
            i > 0 ? "," : "", keys[i % 36]);
    patch[n++] = ']';
    patch[n] = '\0';
    return patch;
}

static void
test_patch__copy_bomb_is_413_naming_the_op_and_changes_nothing(void **state)
{
    daemon_t d;
    char *bomb = copy_bomb(25);
    response_t r;
    json_t *v;

    (void)state;
    assert_true(strlen(bomb) < 1000);
    assert_int_equal(daemon_start(&d, NULL), 0);
    r = request(&d, "PUT", "/v1/collections/bomb/docs/x",
                "{\"s\":\"a string of some thirty bytes\"}", NULL);
    expect(&r, 201, NULL);
    r = request(&d, "PATCH", "/v1/collections/bomb/docs/x", bomb,
                json_patch_ct);
    assert_int_equal(r.status, 413);
    v = json_loads(r.body, 0, NULL);
    assert_non_null(v);
    assert_string_equal(json_string_value(json_object_get(v, "error")),
                        "too_large");
    /* The document is 38 bytes and op i makes it 43 * 2^(i+1) - 5: op 17
     * is the first past 8 MiB, and it fails before it copies. */
    assert_string_equal(json_string_value(json_object_get(v, "message")),
                        "operation 17 (copy /h): document would exceed "
                        "8388608 bytes");
    json_decref(v);
    response_free(&r);
    r = request(&d, "GET", "/v1/collections/bomb/docs/x", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.etag, "\"1\"");
    assert_string_equal(r.body, "{\"s\":\"a string of some thirty bytes\"}");
    response_free(&r);
    free(bomb);
    assert_int_equal(daemon_stop(&d), 0);
}

/* Returns a JSON Patch that sets /n to 1, then tests it nops - 1 times;
 * malloc'd. */
static char *many_ops(int nops)
{
    static const char set[] =
        "{\"op\":\"replace\",\"path\":\"/n\",\"value\":1}";
    static const char test[] = ",{\"op\":\"test\",\"path\":\"/n\",\"value\":1}";
    char *patch = malloc(sizeof(set) + (size_t)nops * sizeof(test) + 2);
    size_t n = 0;
    int i;

    assert_non_null(patch);
    patch[n++] = '[';
    memcpy(patch + n, set, sizeof(set) - 1);
    n += sizeof(set) - 1;
    for (i = 1; i < nops; i++) {
        memcpy(patch + n, test, sizeof(test) - 1);
        n += sizeof(test) - 1;
    }
    patch[n++] = ']';
    patch[n] = '\0';
    return patch;
}

static void
test_patch__more_than_10000_ops_are_413_and_change_nothing(void **state)
{
    daemon_t d;
    char *over = many_ops(10001), *at = many_ops(10000);
    response_t r;

    (void)state;
    assert_int_equal(daemon_start(&d, NULL), 0);
    r = request(&d, "PUT", "/v1/collections/ops/docs/x", "{\"n\":0}", NULL);
    expect(&r, 201, NULL);
    r = request(&d, "PATCH", "/v1/collections/ops/docs/x", over, json_patch_ct);
    assert_non_null(strstr(r.body, "10001 operations"));
    expect(&r, 413, "too_large");
    r = request(&d, "GET", "/v1/collections/ops/docs/x", NULL, NULL);
    assert_string_equal(r.body, "{\"n\":0}");
    expect(&r, 200, NULL);
    /* At the limit, the patch applies. */
    r = request(&d, "PATCH", "/v1/collections/ops/docs/x", at, json_patch_ct);
    assert_string_equal(r.etag, "\"2\"");
    expect(&r, 200, NULL);
    free(over);
    free(at);
    assert_int_equal(daemon_stop(&d), 0);
}

/* ---- Slow bodies, early answers, per-client limits -------------------- */

static void test_http__body_trickled_past_the_body_timeout_is_408(void **s)
{
    static const char head[] =
        "PUT /v1/collections/slow/docs/x HTTP/1.1\r\n"
        "Host: t\r\nContent-Length: 200\r\n\r\n{\"s\":\"";
    daemon_t d;
    char out[4096] = "";
    response_t r;
    int fd, i;

    (void)s;
    assert_int_equal(daemon_start(&d, "--body-timeout", "2s", NULL), 0);
    fd = connect_timed(d.port);
    assert_int_equal(send(fd, head, sizeof(head) - 1, MSG_NOSIGNAL),
                     (ssize_t)sizeof(head) - 1);
    /* A byte every 100 ms never stalls past the idle timeout; the body
     * deadline ends it. Bounded at 10 s. */
    for (i = 0; i < 100; i++) {
        struct pollfd p = {fd, POLLIN, 0};

        if (poll(&p, 1, 100) > 0)
            break;
        if (send(fd, "x", 1, MSG_NOSIGNAL) != 1)
            break;
    }
    assert_true(i < 100);
    assert_true(recv_until(fd, out, sizeof(out), "\r\n\r\n"));
    assert_non_null(strstr(out, "HTTP/1.1 408 "));
    close(fd);
    r = request(&d, "GET", "/v1/health", NULL, NULL);
    expect(&r, 200, NULL);
    assert_int_equal(daemon_stop(&d), 0);
}

static void test_auth__bad_token_gets_401_before_100_continue_or_body(void **s)
{
    static const char bad[] = "PUT /v1/collections/t/docs/x HTTP/1.1\r\n"
                              "Host: t\r\nAuthorization: Bearer nope\r\n"
                              "Content-Length: 7\r\nExpect: 100-continue\r\n"
                              "\r\n";
    static const char good[] = "PUT /v1/collections/t/docs/x HTTP/1.1\r\n"
                               "Host: t\r\nAuthorization: Bearer s3cret\r\n"
                               "Content-Length: 7\r\nExpect: 100-continue\r\n"
                               "\r\n";
    daemon_t d;
    char out[4096] = "";
    int fd;

    (void)s;
    assert_int_equal(daemon_start(&d, "--token", "s3cret", NULL), 0);
    /* The body is never sent: the answer comes on the headers alone. */
    fd = connect_timed(d.port);
    assert_int_equal(send(fd, bad, sizeof(bad) - 1, MSG_NOSIGNAL),
                     (ssize_t)sizeof(bad) - 1);
    assert_true(recv_until(fd, out, sizeof(out), "}"));
    assert_null(strstr(out, "100 Continue"));
    assert_true(strncmp(out, "HTTP/1.1 401 ", 13) == 0);
    assert_non_null(strstr(out, "\"unauthorized\""));
    close(fd);
    /* The right token gets 100 Continue, then the write goes through. */
    out[0] = '\0';
    fd = connect_timed(d.port);
    assert_int_equal(send(fd, good, sizeof(good) - 1, MSG_NOSIGNAL),
                     (ssize_t)sizeof(good) - 1);
    assert_true(recv_until(fd, out, sizeof(out), "\r\n\r\n"));
    assert_true(strncmp(out, "HTTP/1.1 100 Continue\r\n", 23) == 0);
    assert_int_equal(send(fd, "{\"a\":1}", 7, MSG_NOSIGNAL), 7);
    assert_true(recv_until(fd, out, sizeof(out), "201 Created"));
    close(fd);
    assert_int_equal(daemon_stop(&d), 0);
}

static void
test_http__early_413_reaches_a_client_sending_a_20_mib_body(void **s)
{
    const size_t body = (size_t)20 << 20;
    char head[160], out[4096] = "";
    int n = snprintf(head, sizeof(head),
                     "PUT /v1/collections/t/docs/huge HTTP/1.1\r\nHost: t\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     body);
    char *msg = malloc((size_t)n + body);
    int fd;

    (void)s;
    assert_non_null(msg);
    memcpy(msg, head, (size_t)n);
    memset(msg + n, 'x', body);
    fd = connect_timed(main_daemon.port);
    /* One blocking write of everything, then read the answer. */
    assert_int_equal(send(fd, msg, (size_t)n + body, MSG_NOSIGNAL),
                     (ssize_t)((size_t)n + body));
    errno = 0;
    assert_true(recv_until(fd, out, sizeof(out), "}"));
    assert_int_not_equal(errno, ECONNRESET);
    assert_true(strncmp(out, "HTTP/1.1 413 ", 13) == 0);
    assert_non_null(strstr(out, "\"too_large\""));
    close(fd);
    free(msg);
    check("GET", "/v1/collections/t/docs/huge", NULL, NULL, 404, NULL);
}

/* Sends a health request on fd and asserts a 200 answer. */
static void health_on(int fd)
{
    static const char health[] = "GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n";
    char out[4096] = "";

    assert_int_equal(send(fd, health, sizeof(health) - 1, MSG_NOSIGNAL),
                     (ssize_t)sizeof(health) - 1);
    assert_true(recv_until(fd, out, sizeof(out), "}"));
    assert_true(strncmp(out, "HTTP/1.1 200 ", 13) == 0);
}

static void test_limits__connections_past_the_per_client_limit_get_503(void **s)
{
    daemon_t d;
    int fds[3], i, fd;
    char out[4096] = "";

    (void)s;
    assert_int_equal(
        daemon_start(&d, "--max-connections-per-client", "3", NULL), 0);
    /* Each answered before the next opens, so the server has seen every
     * earlier connection (daemon_start()'s probe included) come and go. */
    for (i = 0; i < 3; i++) {
        fds[i] = connect_timed(d.port);
        health_on(fds[i]);
    }
    fd = connect_timed(d.port);
    assert_true(recv_until(fd, out, sizeof(out), "\r\n\r\n"));
    assert_true(strncmp(out, "HTTP/1.1 503 ", 13) == 0);
    close(fd);
    /* The three still work. */
    for (i = 0; i < 3; i++)
        health_on(fds[i]);
    for (i = 0; i < 3; i++)
        close(fds[i]);
    assert_int_equal(daemon_stop(&d), 0);
}

/* ---- Metric values and collection state -------------------------------- */

/* Polls d's metric name until it is at least want (at most 15 s: a bound
 * for liveness) and returns its value then. */
static long long wait_metric(const daemon_t *d, const char *name,
                             long long want)
{
    long long v = metric_value(d, name);

    for (int i = 0; i < 300 && v < want; i++) {
        usleep(50 * 1000);
        v = metric_value(d, name);
    }
    return v;
}

/* Sends n GETs of distinct, unknown collection names over one keep-alive
 * connection (document reads, listings and digests in turn) and checks
 * that each answers as for an empty collection. */
static void get_unknown_collections(const daemon_t *d, int n)
{
    CURL *c = curl_easy_init();
    response_t r;
    char url[256];
    long status;

    memset(&r, 0, sizeof(r));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    for (int i = 0; i < n; i++) {
        static const char *const kinds[] = {"docs/x", "docs", "digest"};
        int kind = i % 10 == 8 ? 1 : i % 10 == 9 ? 2 : 0;

        snprintf(url, sizeof(url),
                 "http://127.0.0.1:%d/v1/collections/"
                 "nobody-%d/%s",
                 d->port, i, kinds[kind]);
        curl_easy_setopt(c, CURLOPT_URL, url);
        assert_int_equal(curl_easy_perform(c), CURLE_OK);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        assert_int_equal(status, kind == 0 ? 404 : 200);
        response_free(&r);
        r.len = 0;
    }
    curl_easy_cleanup(c);
}

/* 20,000 GETs of distinct unknown collection names, and writes that fail
 * and watches that end on some more, leave no per-collection state on the
 * node. */
static void
test_collections__unknown_names_leave_no_state_on_the_node(void **state)
{
    long long before;

    (void)state;
    before = metric_value(&main_daemon, "syncd_collections");
    assert_true(before >= 0);
    get_unknown_collections(&main_daemon, 20000);
    for (int i = 0; i < 100; i++) {
        char path[64];
        sse_t sse;

        snprintf(path, sizeof(path), "/v1/collections/ghost-%d/docs/x", i);
        check("DELETE", path, NULL, NULL, 404, "not_found");
        snprintf(path, sizeof(path), "/v1/collections/ghost-%d/watch", i);
        sse_open(&sse, &main_daemon, path, NULL);
        assert_int_equal(sse_wait(&sse, "200 OK", 1), 1);
        sse_close(&sse);
    }
    /* Collections written by earlier tests may go idle meanwhile (a slow
     * build takes longer than coll_idle_ms here): never more than before. */
    for (int i = 0;
         i < 300 && metric_value(&main_daemon, "syncd_collections") > before;
         i++)
        usleep(50 * 1000);
    assert_true(metric_value(&main_daemon, "syncd_collections") <= before);
}

/* In the embedded default every write is an event the node receives and
 * applies: after N writes both counters are N. */
static void
test_metrics__events_received_and_applied_count_each_write(void **state)
{
    enum { N = 7 };
    daemon_t d;

    (void)state;
    assert_int_equal(daemon_start(&d, NULL), 0);
    for (int i = 0; i < N; i++) {
        char path[64];
        response_t r;

        snprintf(path, sizeof(path), "/v1/collections/counted/docs/d%d", i);
        r = request(&d, "PUT", path, "{\"x\":1}", NULL);
        expect(&r, 201, NULL);
    }
    assert_int_equal(wait_metric(&d, "syncd_events_applied_total", N), N);
    assert_int_equal(metric_value(&d, "syncd_events_received_total"), N);
    assert_int_equal(metric_value(&d, "syncd_events_published_total"), N);
    /* Every event applied: none waits, none was dropped for a resync. */
    assert_int_equal(metric_value(&d, "syncd_apply_queue_events"), 0);
    assert_int_equal(metric_value(&d, "syncd_apply_queue_overflows_total"), 0);
    assert_int_equal(daemon_stop(&d), 0);
}

/* In the embedded default --cache-max-bytes bounds the store's in-memory
 * tier: reads of 100 documents of 2 KB through a 64 KiB tier leave it
 * within the bound, having evicted. */
static void test_metrics__embedded_tier_honours_cache_max_bytes(void **state)
{
    daemon_t d;
    char body[2100], path[64];
    response_t r;

    (void)state;
    memset(body, 0, sizeof(body));
    snprintf(body, sizeof(body), "{\"pad\":\"%0*d\"}", 2000, 0);
    assert_int_equal(daemon_start(&d, "--cache-max-bytes", "64KiB", NULL), 0);
    for (int i = 0; i < 100; i++) {
        snprintf(path, sizeof(path), "/v1/collections/tiered/docs/d%d", i);
        r = request(&d, "PUT", path, body, NULL);
        expect(&r, 201, NULL);
        r = request(&d, "GET", path, NULL, NULL);
        expect(&r, 200, NULL);
    }
    assert_true(metric_value(&d, "syncd_cache_bytes") <= 64 * 1024);
    assert_true(metric_value(&d, "syncd_cache_evictions_total") > 0);
    assert_int_equal(daemon_stop(&d), 0);
}

/* The memory gauges: 30 documents of 50 KB written to the embedded store
 * sit in its RocksDB memtable (4 MiB, not flushed yet, grown in blocks of
 * 512 KiB), so the memtables gauge holds at least their bodies; the heap
 * gauges are there (glibc's figures, which a sanitizer's allocator leaves
 * near zero, so they are checked for more only without one). */
static void test_metrics__memory_gauges_count_what_the_store_holds(void **state)
{
    const char *memtables = "syncd_rocksdb_memory_bytes{kind=\"memtables\"}";
    daemon_t d;
    char *body = calloc(1, 50100), path[64];
    response_t r;

    (void)state;
    assert_non_null(body);
    snprintf(body, 50100, "{\"blob\":\"%0*d\"}", 50000, 7);
    assert_int_equal(daemon_start(&d, NULL), 0);
    assert_true(metric_value(&d, memtables) < 512 * 1024);
    for (int i = 0; i < 30; i++) {
        snprintf(path, sizeof(path), "/v1/collections/mem/docs/m%02d", i);
        r = request(&d, "PUT", path, body, NULL);
        expect(&r, 201, NULL);
    }
    assert_true(metric_value(&d, memtables) >= 30 * 50000);
    assert_true(metric_value(
                    &d, "syncd_rocksdb_memory_bytes{kind=\"table_readers\"}") >=
                0);
    assert_true(
        metric_value(&d, "syncd_rocksdb_memory_bytes{kind=\"block_cache\"}") >=
        0);
    assert_true(metric_value(&d, "syncd_heap_bytes{kind=\"free\"}") >= 0);
    assert_true(metric_value(&d, "syncd_heap_bytes{kind=\"mapped\"}") >= 0);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    assert_true(metric_value(&d, "syncd_heap_bytes{kind=\"in_use\"}") >= 0);
#else
    assert_true(metric_value(&d, "syncd_heap_bytes{kind=\"in_use\"}") >=
                30 * 50000);
#endif
    assert_int_equal(daemon_stop(&d), 0);
    free(body);
}

/* Redis restarted empty forces one resync of the one collection the node
 * works on (a watcher keeps it), and it counts once. */
static void test_metrics__one_forced_resync_counts_one(void **state)
{
    syncd_test_server_t redis;
    daemon_t d;
    response_t r;
    sse_t s;

    (void)state;
    assert_int_equal(syncd_test_redis_start(&redis), 0);
    assert_int_equal(daemon_start(&d, "--redis-url", redis.uri, NULL), 0);
    sse_open(&s, &d, "/v1/collections/resynced/watch", NULL);
    assert_int_equal(sse_wait(&s, "200 OK", 1), 1);
    r = request(&d, "PUT", "/v1/collections/resynced/docs/a", "{}", NULL);
    expect(&r, 201, NULL);
    assert_int_equal(sse_wait(&s, "event: create", 1), 1);
    assert_int_equal(metric_value(&d, "syncd_resyncs_total"), 0);

    assert_int_equal(syncd_test_server_stop(&redis), 0);
    assert_int_equal(syncd_test_server_restart(&redis), 0);
    assert_int_equal(wait_metric(&d, "syncd_resyncs_total", 1), 1);
    sse_close(&s);
    assert_int_equal(daemon_stop(&d), 0);
    syncd_test_server_destroy(&redis);
}

/* With --max-collections 3, a write or a watch of a fourth collection is
 * refused with 503 naming the limit and writes nothing; the three keep
 * working. */
static void test_limits__max_collections_refuses_the_next_with_503(void **s)
{
    daemon_t d;
    response_t r;

    (void)s;
    assert_int_equal(daemon_start(&d, "--max-collections", "3", NULL), 0);
    for (int i = 1; i <= 3; i++) {
        char path[64];

        snprintf(path, sizeof(path), "/v1/collections/c%d/docs/a", i);
        r = request(&d, "PUT", path, "{}", NULL);
        expect(&r, 201, NULL);
    }
    r = request(&d, "PUT", "/v1/collections/c4/docs/a", "{}", NULL);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "\"too_many_collections\""));
    assert_non_null(strstr(r.body, "--max-collections"));
    response_free(&r);
    r = request(&d, "GET", "/v1/collections/c4/watch", NULL, NULL);
    expect(&r, 503, "too_many_collections");
    r = request(&d, "GET", "/v1/collections/c4/docs/a", NULL, NULL);
    expect(&r, 404, "not_found");
    r = request(&d, "PUT", "/v1/collections/c2/docs/a", "{\"v\":2}", NULL);
    expect(&r, 200, NULL);
    assert_int_equal(metric_value(&d, "syncd_collections"), 3);
    assert_int_equal(daemon_stop(&d), 0);
}

/* Opens a watch of path on d and reads its response head (and, for an
 * error, its body); returns the status. */
static int sse_open_status(sse_t *s, const daemon_t *d, const char *path)
{
    int status = 0;

    sse_open(s, d, path, NULL);
    assert_int_equal(sse_wait(s, "\r\n\r\n", 1), 1);
    sscanf(s->buf, "HTTP/1.1 %d", &status);
    if (status != 200)
        sse_wait(s, "}", 1);
    return status;
}

/* Checks that s was refused with 503 too_many_watchers naming flag, with
 * a Retry-After. */
static void expect_too_many_watchers(sse_t *s, const char *flag)
{
    char named[80];

    assert_non_null(strstr(s->buf, "HTTP/1.1 503"));
    assert_non_null(strstr(s->buf, "\r\nRetry-After: 5\r\n"));
    assert_non_null(strstr(s->buf, "{\"error\":\"too_many_watchers\""));
    snprintf(named, sizeof(named), "(%s)", flag);
    assert_non_null(strstr(s->buf, named));
}

/* With --max-watchers 3 and --max-watchers-per-collection 2, a third watch
 * of one collection and then a fourth watch of the node are refused with
 * 503 too_many_watchers naming the limit, with a Retry-After; the watchers
 * already streaming still get every event, and one that leaves frees its
 * slot. */
static void
test_limits__watchers_past_either_limit_get_503_and_one_leaving_frees_a_slot(
    void **state)
{
    daemon_t d;
    response_t r;
    sse_t a1, a2, b1, no, again;
    int status = 0;

    (void)state;
    assert_int_equal(daemon_start(&d, "--max-watchers", "3",
                                  "--max-watchers-per-collection", "2", NULL),
                     0);
    assert_int_equal(sse_open_status(&a1, &d, "/v1/collections/wa/watch"), 200);
    assert_int_equal(sse_open_status(&a2, &d, "/v1/collections/wa/watch"), 200);
    assert_int_equal(sse_open_status(&no, &d, "/v1/collections/wa/watch"), 503);
    expect_too_many_watchers(&no, "--max-watchers-per-collection");
    sse_close(&no);
    assert_int_equal(sse_open_status(&b1, &d, "/v1/collections/wb/watch"), 200);
    assert_int_equal(sse_open_status(&no, &d, "/v1/collections/wc/watch"), 503);
    expect_too_many_watchers(&no, "--max-watchers");
    sse_close(&no);

    r = request(&d, "PUT", "/v1/collections/wa/docs/x", "{}", NULL);
    expect(&r, 201, NULL);
    r = request(&d, "PUT", "/v1/collections/wb/docs/y", "{}", NULL);
    expect(&r, 201, NULL);
    assert_int_equal(sse_wait(&a1, "event: create", 1), 1);
    assert_int_equal(sse_wait(&a2, "event: create", 1), 1);
    assert_int_equal(sse_wait(&b1, "event: create", 1), 1);
    assert_int_equal(metric_value(&d, "syncd_watchers"), 3);

    /* The node hears of a1 leaving when its connection closes: a new watch
     * of wa streams once it did (a bounded wait); until then the node is at
     * its total limit. */
    sse_close(&a1);
    for (int i = 0; i < 100 && status != 200; i++) {
        status = sse_open_status(&again, &d, "/v1/collections/wa/watch");
        if (status != 200) {
            expect_too_many_watchers(&again, "--max-watchers");
            sse_close(&again);
            usleep(50 * 1000);
        }
    }
    assert_int_equal(status, 200);
    r = request(&d, "PUT", "/v1/collections/wa/docs/x", "{\"n\":2}", NULL);
    expect(&r, 200, NULL);
    assert_int_equal(sse_wait(&again, "event: update", 1), 1);
    assert_int_equal(sse_wait(&a2, "event: update", 1), 1);
    sse_close(&again);
    sse_close(&a2);
    sse_close(&b1);
    assert_int_equal(daemon_stop(&d), 0);
}

/* ---- Auth, limits, shutdown, config ----------------------------------- */

static void test_auth__token_is_required_on_every_route_but_health(void **s)
{
    daemon_t d;
    const char *good[] = {"Authorization: Bearer s3cret", NULL};
    const char *bad[] = {"Authorization: Bearer nope", NULL};
    response_t r;

    (void)s;
    assert_int_equal(daemon_start(&d, "--token", "s3cret", NULL), 0);
    r = request(&d, "GET", "/v1/health", NULL, NULL);
    expect(&r, 200, NULL);
    r = request(&d, "GET", "/v1/collections/t/docs/x", NULL, NULL);
    expect(&r, 401, "unauthorized");
    r = request(&d, "GET", "/metrics", NULL, bad);
    expect(&r, 401, "unauthorized");
    r = request(&d, "GET", "/v1/collections/t/export", NULL, bad);
    expect(&r, 401, "unauthorized");
    r = request(&d, "POST", "/v1/admin/checkpoint?dir=/tmp/x", NULL, NULL);
    expect(&r, 401, "unauthorized");
    r = request(&d, "GET", "/v1/collections/t/docs/x", NULL, good);
    expect(&r, 404, "not_found");
    r = request(&d, "GET", "/metrics", NULL, good);
    expect(&r, 200, NULL);
    assert_int_equal(daemon_stop(&d), 0);
}

static void test_limits__connections_beyond_the_maximum_get_503(void **s)
{
    daemon_t d;
    int fds[4], i, fd;
    char out[512];
    ssize_t n;

    (void)s;
    assert_int_equal(daemon_start(&d, "--max-connections", "4", NULL), 0);
    for (i = 0; i < 4; i++) {
        fds[i] = syncd_test_connect(d.port);
        assert_true(fds[i] >= 0);
    }
    fd = syncd_test_connect(d.port);
    assert_true(fd >= 0);
    n = recv(fd, out, sizeof(out) - 1, 0);
    assert_true(n > 0);
    out[n] = '\0';
    assert_non_null(strstr(out, "HTTP/1.1 503 "));
    close(fd);
    for (i = 0; i < 4; i++)
        close(fds[i]);
    assert_int_equal(daemon_stop(&d), 0);
}

static void test_shutdown__sigterm_ends_watchers_and_exits_0(void **state)
{
    daemon_t d;
    sse_t w;
    response_t r;

    (void)state;
    assert_int_equal(daemon_start(&d, NULL), 0);
    r = request(&d, "PUT", "/v1/collections/sd/docs/a", "{}", NULL);
    expect(&r, 201, NULL);
    sse_open(&w, &d, "/v1/collections/sd/watch?since=0", NULL);
    assert_int_equal(sse_wait(&w, "event: create", 1), 1);
    kill(d.pid, SIGTERM);
    /* The final event, then the end of the chunked stream. */
    assert_int_equal(sse_wait(&w, "\r\n0\r\n\r\n", 1), 1);
    assert_non_null(strstr(w.buf, "event: shutdown"));
    sse_close(&w);
    assert_int_equal(daemon_wait(&d), 0);
}

/* Returns 1 when s is an RFC 3339 UTC time as /v1/nodes writes them. */
static int is_utc_time(const json_t *s)
{
    const char *t = json_string_value(s);

    return t != NULL && strlen(t) == 24 && t[10] == 'T' && t[23] == 'Z';
}

static void test_nodes__embedded_default_lists_only_itself(void **state)
{
    daemon_t d;
    response_t r;
    json_t *v = NULL, *node = NULL, *c = NULL;
    char url[64];
    int i;

    (void)state;
    assert_int_equal(daemon_start(&d, "--heartbeat-interval", "100ms", NULL),
                     0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", d.port);
    r = request(&d, "PUT", "/v1/collections/mn/docs/a", "{}", NULL);
    expect(&r, 201, NULL);
    r = request(&d, "PUT", "/v1/collections/mn/docs/b", "{}", NULL);
    expect(&r, 201, NULL);
    /* A heartbeat names the collection, and a later one its second write
     * (a slow build may beat between the two). */
    for (i = 0; i < 100 && json_integer_value(json_object_get(c, "seq")) < 2;
         i++) {
        json_decref(v);
        r = request(&d, "GET", "/v1/nodes", NULL, NULL);
        assert_int_equal(r.status, 200);
        v = json_loads(r.body, 0, NULL);
        response_free(&r);
        assert_non_null(v);
        node = json_array_get(json_object_get(v, "nodes"), 0);
        c = json_object_get(json_object_get(node, "collections"), "mn");
        if (json_integer_value(json_object_get(c, "seq")) < 2)
            usleep(50 * 1000);
    }
    assert_non_null(c);
    assert_string_equal(json_string_value(json_object_get(v, "self")), "local");
    assert_int_equal(json_array_size(json_object_get(v, "nodes")), 1);
    assert_string_equal(json_string_value(json_object_get(node, "id")),
                        "local");
    assert_string_equal(json_string_value(json_object_get(node, "url")), url);
    assert_true(json_string_length(json_object_get(node, "version")) > 0);
    assert_true(is_utc_time(json_object_get(node, "started")));
    assert_true(is_utc_time(json_object_get(node, "last_heartbeat")));
    assert_true(json_integer_value(json_object_get(node, "age_ms")) >= 0);
    assert_true(json_integer_value(json_object_get(node, "age_ms")) < 300);
    assert_int_equal(json_integer_value(json_object_get(c, "seq")), 2);
    assert_int_equal(json_integer_value(json_object_get(c, "newest")), 2);
    assert_int_equal(json_integer_value(json_object_get(c, "lag")), 0);
    json_decref(v);
    assert_int_equal(metric_value(&d, "syncd_nodes_live"), 1);
    r = request(&d, "POST", "/v1/nodes", "{}", NULL);
    expect(&r, 405, NULL);
    assert_int_equal(daemon_stop(&d), 0);
}

static void test_nodes__advertise_url_is_the_url_of_the_node(void **state)
{
    daemon_t d;
    response_t r;
    json_t *v;

    (void)state;
    assert_int_equal(daemon_start(&d, "--advertise-url",
                                  "http://node-a.example:7070", "--token",
                                  "s3cret", NULL),
                     0);
    r = request(&d, "GET", "/v1/nodes", NULL, NULL);
    expect(&r, 401, "unauthorized");
    r = request(&d, "GET", "/v1/nodes", NULL,
                (const char *[]){"Authorization: Bearer s3cret", NULL});
    assert_int_equal(r.status, 200);
    v = json_loads(r.body, 0, NULL);
    response_free(&r);
    assert_string_equal(
        json_string_value(json_object_get(
            json_array_get(json_object_get(v, "nodes"), 0), "url")),
        "http://node-a.example:7070");
    json_decref(v);
    assert_int_equal(daemon_stop(&d), 0);
}

/* Runs cmd through the shell, keeping the first size-1 bytes of its
 * output in out; returns its exit status. */
static int run_capture(const char *cmd, char *out, size_t size)
{
    char chunk[4096];
    FILE *p = popen(cmd, "r");
    size_t n = 0, got;

    assert_non_null(p);
    while ((got = fread(chunk, 1, sizeof(chunk), p)) > 0) {
        size_t keep = got < size - 1 - n ? got : size - 1 - n;

        memcpy(out + n, chunk, keep);
        n += keep;
    }
    out[n] = '\0';
    return WEXITSTATUS(pclose(p));
}

static void test_config__bad_values_fail_naming_the_flag(void **state)
{
    char out[8192];

    (void)state;
    assert_int_equal(
        run_capture(SYNCD_BINARY " --cache-ttl 5 2>&1", out, sizeof(out)), 2);
    assert_non_null(strstr(out, "--cache-ttl"));
    assert_int_equal(run_capture("SYNCD_CACHE_MAX_BYTES=lots " SYNCD_BINARY
                                 " 2>&1",
                                 out, sizeof(out)),
                     2);
    assert_non_null(strstr(out, "SYNCD_CACHE_MAX_BYTES"));
    assert_int_equal(
        run_capture(SYNCD_BINARY " --listen nowhere 2>&1", out, sizeof(out)),
        2);
    assert_non_null(strstr(out, "--listen"));
    assert_int_equal(run_capture("SYNCD_MAX_COLLECTIONS=0 " SYNCD_BINARY
                                 " 2>&1",
                                 out, sizeof(out)),
                     2);
    assert_non_null(strstr(out, "--max-collections"));
    assert_int_equal(run_capture(SYNCD_BINARY " --help", out, sizeof(out)), 0);
    assert_non_null(strstr(out, "--mongo-uri"));
    assert_non_null(strstr(out, "SYNCD_ANTI_ENTROPY_INTERVAL, default 30s"));
    assert_non_null(strstr(out, "SYNCD_HEARTBEAT_INTERVAL, default 5s"));
    assert_non_null(strstr(out, "SYNCD_THREADS, default 16"));
    assert_non_null(strstr(out, "SYNCD_ROCKSDB_BLOCK_CACHE, default 8MiB"));
    assert_int_equal(run_capture(SYNCD_BINARY " --rocksdb-block-cache 8MB 2>&1",
                                 out, sizeof(out)),
                     2);
    assert_non_null(strstr(out, "--rocksdb-block-cache"));
    assert_int_equal(run_capture(SYNCD_BINARY " --heartbeat-interval 5 2>&1",
                                 out, sizeof(out)),
                     2);
    assert_non_null(strstr(out, "--heartbeat-interval"));
    assert_int_equal(run_capture("SYNCD_HEARTBEAT_INTERVAL=0 " SYNCD_BINARY
                                 " 2>&1",
                                 out, sizeof(out)),
                     2);
    assert_non_null(strstr(out, "--heartbeat-interval"));
    assert_int_equal(
        run_capture(SYNCD_BINARY " --store-timeout 0s 2>&1", out, sizeof(out)),
        2);
    assert_non_null(strstr(out, "--store-timeout"));
    assert_int_equal(run_capture("SYNCD_REQUEST_TIMEOUT=0s " SYNCD_BINARY
                                 " 2>&1",
                                 out, sizeof(out)),
                     2);
    assert_non_null(strstr(out, "--request-timeout"));
    assert_int_equal(
        run_capture(SYNCD_BINARY " --threads 0 2>&1", out, sizeof(out)), 2);
    assert_non_null(strstr(out, "--threads: must be 1 to 1024"));
    assert_int_equal(run_capture("SYNCD_THREADS=1025 " SYNCD_BINARY " 2>&1",
                                 out, sizeof(out)),
                     2);
    assert_non_null(strstr(out, "--threads: must be 1 to 1024"));
    assert_int_equal(run_capture(SYNCD_BINARY " --version", out, sizeof(out)),
                     0);
    assert_int_equal(strncmp(out, "syncd ", 6), 0);
}

static void
test_auth__any_token_of_the_comma_separated_list_is_accepted(void **s)
{
    daemon_t d;
    const char *new_token[] = {"Authorization: Bearer tok-new", NULL};
    const char *old_token[] = {"Authorization: Bearer tok-old", NULL};
    const char *bad[][2] = {{"Authorization: Bearer tok-new,tok-old", NULL},
                            {"Authorization: Bearer tok-ne", NULL},
                            {"Authorization: Bearer tok-newx", NULL},
                            {"Authorization: Bearer ", NULL}};
    response_t r;

    (void)s;
    assert_int_equal(daemon_start(&d, "--token", "tok-new,tok-old", NULL), 0);
    r = request(&d, "GET", "/v1/collections/t/docs/x", NULL, new_token);
    expect(&r, 404, "not_found");
    r = request(&d, "GET", "/v1/collections/t/docs/x", NULL, old_token);
    expect(&r, 404, "not_found");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = request(&d, "GET", "/v1/collections/t/docs/x", NULL, bad[i]);
        expect(&r, 401, "unauthorized");
    }
    assert_int_equal(daemon_stop(&d), 0);
}

static void test_auth__token_file_is_read_and_neither_secret_is_echoed(void **s)
{
    const char *good[] = {"Authorization: Bearer file-token", NULL};
    char dir[256], tok[300], sec[300], both[300], cmd[1024], out[8192];
    daemon_t d;
    response_t r;
    FILE *f;

    (void)s;
    assert_int_equal(syncd_test_tmpdir(dir, sizeof(dir), "secrets"), 0);
    snprintf(tok, sizeof(tok), "%s/token", dir);
    snprintf(sec, sizeof(sec), "%s/secret", dir);
    snprintf(both, sizeof(both), "%s/both", dir);
    f = fopen(tok, "w");
    assert_non_null(f);
    fputs("file-token\n", f);
    fclose(f);
    f = fopen(sec, "w");
    assert_non_null(f);
    fputs("sec-one,,sec-two\n", f);
    fclose(f);
    assert_int_equal(daemon_start(&d, "--token-file", tok, NULL), 0);
    r = request(&d, "GET", "/v1/collections/t/docs/x", NULL, NULL);
    expect(&r, 401, "unauthorized");
    r = request(&d, "GET", "/v1/collections/t/docs/x", NULL, good);
    expect(&r, 404, "not_found");
    assert_int_equal(daemon_stop(&d), 0);

    /* Bad settings name the flags and the file, never the value. */
    snprintf(cmd, sizeof(cmd),
             "SYNCD_TOKEN_FILE=%s " SYNCD_BINARY " --token other-token 2>&1",
             tok);
    assert_int_equal(run_capture(cmd, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "--token and --token-file"));
    assert_null(strstr(out, "file-token"));
    assert_null(strstr(out, "other-token"));
    snprintf(cmd, sizeof(cmd), SYNCD_BINARY " --secret-file %s 2>&1", sec);
    assert_int_equal(run_capture(cmd, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "--secret-file: empty key"));
    assert_null(strstr(out, "sec-one"));
    snprintf(cmd, sizeof(cmd), SYNCD_BINARY " --secret-file %s 2>&1", both);
    assert_int_equal(run_capture(cmd, out, sizeof(out)), 2);
    assert_non_null(strstr(out, both));
    assert_int_equal(syncd_test_rmtree(dir), 0);
}

static void test_data_dir__a_second_syncd_exits_1_naming_dir_and_pid(void **s)
{
    daemon_t d;
    char cmd[1024], out[8192], pid[32], dir[300];
    response_t r;

    (void)s;
    assert_int_equal(daemon_start(&d, NULL), 0);
    snprintf(dir, sizeof(dir), "%s/data", d.dir);
    snprintf(cmd, sizeof(cmd),
             SYNCD_BINARY " --listen 127.0.0.1:%d --data-dir %s 2>&1",
             syncd_test_free_port(), dir);
    assert_int_equal(run_capture(cmd, out, sizeof(out)), 1);
    snprintf(pid, sizeof(pid), "pid %d", (int)d.pid);
    assert_non_null(strstr(out, dir));
    assert_non_null(strstr(out, pid));
    /* The first one is unharmed. */
    r = request(&d, "PUT", "/v1/collections/dd/docs/a", "{}", NULL);
    expect(&r, 201, NULL);
    assert_int_equal(daemon_stop(&d), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health__answers_200_with_node_store_and_bus),
        cmocka_unit_test(test_put__creates_with_201_and_etag_1),
        cmocka_unit_test(test_put__if_none_match_star_on_a_live_doc_is_409),
        cmocka_unit_test(test_put__if_match_replaces_or_fails_with_412),
        cmocka_unit_test(test_put__without_preconditions_replaces_with_200),
        cmocka_unit_test(test_put__every_write_answers_the_bytes_a_get_serves),
        cmocka_unit_test(test_get__missing_doc_is_404),
        cmocka_unit_test(test_patch__json_patch_increments_with_200_and_etag),
        cmocka_unit_test(test_patch__merge_patch_applies_with_200),
        cmocka_unit_test(test_patch__other_content_types_are_415),
        cmocka_unit_test(test_patch__invalid_patches_are_422),
        cmocka_unit_test(test_patch__failing_test_op_is_409),
        cmocka_unit_test(test_patch__stale_if_match_is_412_and_missing_doc_404),
        cmocka_unit_test(
            test_delete__tombstones_and_recreate_continues_version),
        cmocka_unit_test(test_bad_input__malformed_or_non_object_json_is_400),
        cmocka_unit_test(
            test_bad_input__bad_ids_collections_and_encoding_are_400),
        cmocka_unit_test(test_bad_input__oversize_bodies_are_413),
        cmocka_unit_test(test_list__returns_seq_docs_and_next_page),
        cmocka_unit_test(test_digest__counts_live_documents),
        cmocka_unit_test(
            test_export__lists_live_documents_then_a_trailer_with_count_digest_and_seq),
        cmocka_unit_test(test_collections__lists_the_store_collections_sorted),
        cmocka_unit_test(
            test_digest__ranges_split_a_collection_into_adjacent_parts),
        cmocka_unit_test(test_verify__a_node_that_serves_its_store_agrees),
        cmocka_unit_test(test_metrics__reports_requests_by_route_and_status),
        cmocka_unit_test(test_routes__unknown_is_404_and_wrong_method_405),
        cmocka_unit_test(test_http__malformed_request_is_400_and_closed),
        cmocka_unit_test(test_http__oversize_headers_are_431),
        cmocka_unit_test(test_http__pipelined_requests_are_answered_in_order),
        cmocka_unit_test(
            test_http__slow_client_gets_408_while_others_are_served),
        cmocka_unit_test(test_http__hundreds_of_idle_connections_do_not_block),
        cmocka_unit_test(test_watch__streams_events_with_id_event_and_data),
        cmocka_unit_test(test_watch__since_and_last_event_id_resume_after_seq),
        cmocka_unit_test(test_watch__prefix_filters_ids),
        cmocka_unit_test(test_watch__since_older_than_the_log_is_410),
        cmocka_unit_test(
            test_auth__token_is_required_on_every_route_but_health),
        cmocka_unit_test(
            test_auth__any_token_of_the_comma_separated_list_is_accepted),
        cmocka_unit_test(
            test_auth__token_file_is_read_and_neither_secret_is_echoed),
        cmocka_unit_test(test_limits__connections_beyond_the_maximum_get_503),
        cmocka_unit_test(
            test_patch__copy_bomb_is_413_naming_the_op_and_changes_nothing),
        cmocka_unit_test(
            test_patch__more_than_10000_ops_are_413_and_change_nothing),
        cmocka_unit_test(test_http__body_trickled_past_the_body_timeout_is_408),
        cmocka_unit_test(
            test_auth__bad_token_gets_401_before_100_continue_or_body),
        cmocka_unit_test(
            test_http__early_413_reaches_a_client_sending_a_20_mib_body),
        cmocka_unit_test(
            test_limits__connections_past_the_per_client_limit_get_503),
        cmocka_unit_test(
            test_limits__max_collections_refuses_the_next_with_503),
        cmocka_unit_test(
            test_limits__watchers_past_either_limit_get_503_and_one_leaving_frees_a_slot),
        cmocka_unit_test(
            test_collections__unknown_names_leave_no_state_on_the_node),
        cmocka_unit_test(
            test_metrics__events_received_and_applied_count_each_write),
        cmocka_unit_test(test_metrics__one_forced_resync_counts_one),
        cmocka_unit_test(test_metrics__embedded_tier_honours_cache_max_bytes),
        cmocka_unit_test(
            test_metrics__memory_gauges_count_what_the_store_holds),
        cmocka_unit_test(test_shutdown__sigterm_ends_watchers_and_exits_0),
        cmocka_unit_test(
            test_tombstones__are_purged_by_the_daemon_after_tombstone_ttl),
        cmocka_unit_test(test_config__bad_values_fail_naming_the_flag),
        cmocka_unit_test(test_nodes__embedded_default_lists_only_itself),
        cmocka_unit_test(test_nodes__advertise_url_is_the_url_of_the_node),
        cmocka_unit_test(
            test_data_dir__a_second_syncd_exits_1_naming_dir_and_pid),
    };

    /* SYNCD_TEST_FILTER=<glob> runs only the matching tests. */
    if (getenv("SYNCD_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("SYNCD_TEST_FILTER"));
    return cmocka_run_group_tests(tests, setup_main, teardown_main);
}
