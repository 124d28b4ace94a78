/* syncctl_http.c - the syncctl commands that talk to a node over its HTTP
 * API (DESIGN.md sections 5 and 10): get, put, patch, rm, ls, watch,
 * digest, nodes and health, with libcurl (verify lives in
 * syncctl_verify.c; backup, restore and checkpoint in syncctl_backup.c).
 *
 * Every command builds one URL from --server (or $SYNCD_SERVER), the
 * percent-encoded collection and id, sends --token as a bearer token, and
 * prints JSON on stdout. A non-2xx answer is reported on stderr as one
 * line with the status and the server's error code and message (exit 1).
 * get prints the document body; put and patch print {"coll","id","v",
 * "data"} with the version from the ETag; watch prints one event JSON per
 * line and, when the stream ends for any reason but a resync or a 410,
 * reconnects with capped backoff (failing over to the next of --server and
 * --nodes when a node does not answer) with Last-Event-ID until
 * interrupted.
 *
 * Every write (put, patch, rm) carries a random Idempotency-Key and is
 * sent again with the same key when the connection fails or the answer
 * is 502, 503 or 504 (a balancer lost its node, or the node is shutting
 * down; bounded attempts, exponential backoff): a node that committed the
 * first attempt answers the retry with its first outcome instead of
 * applying it twice.
 */
#include <curl/curl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "syncctl.h"

typedef struct reply {
    long status;
    char *body;
    size_t len;
    long long version; /* from ETag; 0 when absent */
} reply_t;

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    return syncd_buf_append(arg, data, size * n) < 0 ? 0 : size * n;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    reply_t *r = arg;

    if (size * n > 5 && strncasecmp(data, "ETag:", 5) == 0)
        sscanf(data + 5, " \"%lld\"", &r->version);
    return size * n;
}

/* Returns s percent-encoded (free with curl_free()), or NULL. */
static char *escape(const char *s)
{
    CURL *c = curl_easy_init();
    char *e = c != NULL ? curl_easy_escape(c, s, 0) : NULL;

    curl_easy_cleanup(c);
    return e;
}

/* Appends "/v1/collections/<coll>[/<what>[/<id>]]" to server, with coll
 * and id percent-encoded, into a malloc'd URL; query is appended as is.
 * Returns NULL when out of memory. */
static char *make_url(const syncctl_opts_t *opts, const char *coll,
                      const char *what, const char *id, const char *query)
{
    char *ecoll = escape(coll);
    char *eid = id != NULL ? escape(id) : NULL;
    size_t n = strlen(opts->server) + strlen(ecoll ? ecoll : "") +
               (eid ? strlen(eid) : 0) + strlen(query ? query : "") + 64;
    char *url = malloc(n);
    size_t slen = strlen(opts->server);

    if (url != NULL && (ecoll == NULL || (id != NULL && eid == NULL))) {
        free(url);
        url = NULL;
    }
    if (url != NULL)
        snprintf(
            url, n, "%.*s/v1/collections/%s/%s%s%s%s",
            (int)(slen > 0 && opts->server[slen - 1] == '/' ? slen - 1 : slen),
            opts->server, ecoll, what, eid ? "/" : "", eid ? eid : "",
            query ? query : "");
    curl_free(ecoll);
    curl_free(eid);
    return url;
}

/* Appends the header printf-formatted from fmt to h (cut at 511 bytes);
 * returns the new list head. */
static struct curl_slist *add_header(struct curl_slist *h, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static struct curl_slist *add_header(struct curl_slist *h, const char *fmt, ...)
{
    char line[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    return curl_slist_append(h, line);
}

/* Attempts of a write whose connection fails, and the backoff between
 * them: 100 ms doubling up to 1 s. */
#define WRITE_ATTEMPTS 8
#define RETRY_FIRST_MS 100
#define RETRY_MAX_MS 1000

/* Returns 1 when cc means the request may not have reached the node or
 * its answer was lost: worth sending again with the same key. */
static int retryable(CURLcode cc)
{
    return cc == CURLE_COULDNT_CONNECT || cc == CURLE_SEND_ERROR ||
           cc == CURLE_RECV_ERROR || cc == CURLE_GOT_NOTHING ||
           cc == CURLE_PARTIAL_FILE;
}

/* Returns 1 when an HTTP status says the request was not served but may
 * be on another attempt: a gateway that lost its node (502, 504) or a
 * node that is unavailable, shutting down say (503). */
static int unavailable(long status)
{
    return status == 502 || status == 503 || status == 504;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* Writes a random idempotency key (32 hex digits) into key; without
 * getrandom() (an old kernel), one made from the clock and the pid. */
static void random_key(char key[33])
{
    unsigned char b[16];
    struct timespec now;

    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
        uint64_t z;

        clock_gettime(CLOCK_REALTIME, &now);
        z = (uint64_t)now.tv_sec * 1000000007u ^ (uint64_t)now.tv_nsec ^
            (uint64_t)getpid() << 32;
        for (size_t i = 0; i < sizeof(b); i++) {
            z = (z ^ (z >> 31)) * 0x9e3779b97f4a7c15ULL + i;
            b[i] = (unsigned char)(z >> 56);
        }
    }
    for (size_t i = 0; i < sizeof(b); i++)
        snprintf(key + 2 * i, 3, "%02x", b[i]);
}

/* Sends one request; the reply lands in *r. With ikey (a write) it goes
 * with that Idempotency-Key, and is sent again on connection errors.
 * Returns 0, or reports a transport failure and returns SYNCCTL_FAILED. */
static int call(const syncctl_opts_t *opts, const char *method, const char *url,
                const char *content_type, const char *body,
                const char *if_match, const char *ikey, reply_t *r)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Expect:");
    syncd_buf_t out = {0};
    long delay = RETRY_FIRST_MS;
    CURLcode cc;

    memset(r, 0, sizeof(*r));
    if (c == NULL)
        return syncctl_fail("cannot initialise libcurl");
    if (opts->token != NULL)
        h = add_header(h, "Authorization: Bearer %s", opts->token);
    if (content_type != NULL)
        h = add_header(h, "Content-Type: %s", content_type);
    if (if_match != NULL && strcmp(if_match, SYNCCTL_CREATE_ONLY) == 0)
        h = add_header(h, "If-None-Match: *");
    else if (if_match != NULL)
        h = add_header(h, "If-Match: \"%s\"", if_match);
    if (ikey != NULL)
        h = add_header(h, "Idempotency-Key: %s", ikey);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    if (body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)strlen(body));
    }
    for (int attempt = 1;; attempt++) {
        cc = curl_easy_perform(c);
        if (cc == CURLE_OK)
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        if (ikey == NULL || attempt >= WRITE_ATTEMPTS ||
            (cc == CURLE_OK ? !unavailable(r->status) : !retryable(cc)))
            break;
        syncd_buf_truncate(&out, 0);
        r->version = 0;
        r->status = 0;
        sleep_ms(delay);
        delay = delay * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : delay * 2;
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    r->body = out.data;
    r->len = out.len;
    if (cc != CURLE_OK) {
        free(out.data);
        r->body = NULL;
        return syncctl_fail("%s %s: %s", method, url, curl_easy_strerror(cc));
    }
    return SYNCCTL_OK;
}

/* Reports a non-2xx reply as "<status> <error>: <message>". */
static int report(const reply_t *r)
{
    json_t *v = json_loads(r->body ? r->body : "", 0, NULL);
    const char *error = json_string_value(json_object_get(v, "error"));
    const char *message = json_string_value(json_object_get(v, "message"));
    int rc = syncctl_fail("%ld %s: %s", r->status, error ? error : "error",
                          message ? message : (r->body ? r->body : ""));

    json_decref(v);
    return rc;
}

/* Prints a reply: its body as JSON, or wrapped as {"coll","id","v",
 * "data"} when coll is not NULL. */
static int print_reply(const reply_t *r, const char *coll, const char *id)
{
    json_t *v, *out;
    int rc;

    if (r->status < 200 || r->status > 299)
        return report(r);
    v = json_loads(r->body ? r->body : "", JSON_DECODE_ANY, NULL);
    if (v == NULL)
        return syncctl_fail("the server answered with invalid JSON");
    out = coll == NULL ? json_incref(v)
                       : json_pack("{s:s, s:s, s:I, s:O}", "coll", coll, "id",
                                   id, "v", (json_int_t)r->version, "data", v);
    rc = out != NULL ? syncctl_print_json(out) : SYNCCTL_FAILED;
    json_decref(out);
    json_decref(v);
    return rc;
}

/* Parsed arguments of the document commands. */
typedef struct args {
    const char *pos[3]; /* positional arguments */
    int npos;
    const char *if_match, *prefix, *since, *version, *nodes;
    int merge;
    char tail[64]; /* appended to the document's URL: a sub-route, a query */
} args_t;

/* Splits argv into positional arguments and the flags the command allows
 * (a string of letters: m --merge, i --if-match, p --prefix, s --since,
 * v --version, n --nodes);
 * returns -1 on anything else. */
static int parse_args(args_t *a, int argc, char **argv, const char *allow)
{
    int i;

    memset(a, 0, sizeof(*a));
    for (i = 0; i < argc; i++) {
        const char *s = argv[i];

        if (strcmp(s, "--merge") == 0 && strchr(allow, 'm'))
            a->merge = 1;
        else if (strcmp(s, "--if-match") == 0 && strchr(allow, 'i') &&
                 i + 1 < argc)
            a->if_match = argv[++i];
        else if (strcmp(s, "--prefix") == 0 && strchr(allow, 'p') &&
                 i + 1 < argc)
            a->prefix = argv[++i];
        else if (strcmp(s, "--since") == 0 && strchr(allow, 's') &&
                 i + 1 < argc)
            a->since = argv[++i];
        else if (strcmp(s, "--version") == 0 && strchr(allow, 'v') &&
                 i + 1 < argc)
            a->version = argv[++i];
        else if (strcmp(s, "--nodes") == 0 && strchr(allow, 'n') &&
                 i + 1 < argc)
            a->nodes = argv[++i];
        else if ((s[0] != '-' || strcmp(s, "-") == 0) && a->npos < 3)
            a->pos[a->npos++] = s;
        else
            return -1;
    }
    return 0;
}

/* Runs one request on coll/id and prints the reply; body_file (may be
 * NULL: no body) is read as JSON ("-" is stdin). */
static int doc_request(const syncctl_opts_t *opts, const char *method,
                       const args_t *a, const char *content_type,
                       const char *body_file, int wrap)
{
    json_t *doc = NULL;
    char *body = NULL, *url;
    char key[33];
    reply_t r;
    int rc;

    url = make_url(opts, a->pos[0], "docs", a->pos[1],
                   a->tail[0] != '\0' ? a->tail : NULL);
    if (url == NULL)
        return syncctl_fail("out of memory");
    if (body_file != NULL) {
        rc = syncctl_load_json(&doc, body_file);
        if (rc != SYNCCTL_OK) {
            free(url);
            return rc;
        }
        body = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(doc);
    }
    random_key(key);
    rc = call(opts, method, url, content_type, body, a->if_match,
              strcmp(method, "GET") != 0 ? key : NULL, &r);
    if (rc == SYNCCTL_OK)
        rc = print_reply(&r, wrap ? a->pos[0] : NULL, a->pos[1]);
    free(r.body);
    free(body);
    free(url);
    return rc;
}

/* Returns 1 when s is a version: 1 to 18 decimal digits, not all zero. */
static int is_version(const char *s)
{
    size_t n = strspn(s, "0123456789");

    return n > 0 && n <= 18 && s[n] == '\0' && strspn(s, "0") < n;
}

static int cmd_get(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                   int argc, char **argv)
{
    args_t a;

    if (parse_args(&a, argc, argv, "v") < 0 || a.npos != 2 ||
        (a.version != NULL && !is_version(a.version)))
        return syncctl_usage(self);
    if (a.version != NULL)
        snprintf(a.tail, sizeof(a.tail), "?version=%s", a.version);
    return doc_request(opts, "GET", &a, NULL, NULL, 0);
}

static int cmd_history(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                       int argc, char **argv)
{
    args_t a;

    if (parse_args(&a, argc, argv, "") < 0 || a.npos != 2)
        return syncctl_usage(self);
    snprintf(a.tail, sizeof(a.tail), "/history");
    return doc_request(opts, "GET", &a, NULL, NULL, 0);
}

static int cmd_rollback(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                        int argc, char **argv)
{
    args_t a;

    if (parse_args(&a, argc, argv, "i") < 0 || a.npos != 3 ||
        !is_version(a.pos[2]))
        return syncctl_usage(self);
    snprintf(a.tail, sizeof(a.tail), "/rollback?to=%s", a.pos[2]);
    return doc_request(opts, "POST", &a, NULL, NULL, 1);
}

static int cmd_put(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                   int argc, char **argv)
{
    args_t a;

    if (parse_args(&a, argc, argv, "i") < 0 || a.npos < 2)
        return syncctl_usage(self);
    return doc_request(opts, "PUT", &a, "application/json",
                       a.npos == 3 ? a.pos[2] : "-", 1);
}

static int cmd_patch(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                     int argc, char **argv)
{
    args_t a;

    if (parse_args(&a, argc, argv, "mi") < 0 || a.npos < 2)
        return syncctl_usage(self);
    return doc_request(opts, "PATCH", &a,
                       a.merge ? "application/merge-patch+json"
                               : "application/json-patch+json",
                       a.npos == 3 ? a.pos[2] : "-", 1);
}

static int cmd_rm(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                  int argc, char **argv)
{
    args_t a;

    if (parse_args(&a, argc, argv, "i") < 0 || a.npos != 2)
        return syncctl_usage(self);
    return doc_request(opts, "DELETE", &a, NULL, NULL, 0);
}

/* GETs coll's route `what` with query; the reply lands in *r. */
static int coll_request(const syncctl_opts_t *opts, const char *coll,
                        const char *what, const char *query, reply_t *r)
{
    char *url = make_url(opts, coll, what, NULL, query);
    int rc;

    if (url == NULL)
        return syncctl_fail("out of memory");
    rc = call(opts, "GET", url, NULL, NULL, NULL, NULL, r);
    free(url);
    return rc;
}

static int cmd_digest(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                      int argc, char **argv)
{
    args_t a;
    reply_t r;
    int rc;

    if (parse_args(&a, argc, argv, "") < 0 || a.npos != 1)
        return syncctl_usage(self);
    rc = coll_request(opts, a.pos[0], "digest", NULL, &r);
    if (rc == SYNCCTL_OK)
        rc = print_reply(&r, NULL, NULL);
    free(r.body);
    return rc;
}

/* GETs path (from the server root) and prints the reply; exit 0 only on
 * a 2xx answer. */
static int get_root(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                    int argc, const char *path)
{
    size_t slen = strlen(opts->server), n;
    reply_t r = {0};
    char *url;
    int rc;

    if (argc != 0)
        return syncctl_usage(self);
    if (slen > 0 && opts->server[slen - 1] == '/')
        slen--;
    n = slen + strlen(path) + 1;
    url = malloc(n);
    if (url == NULL)
        return syncctl_fail("out of memory");
    snprintf(url, n, "%.*s%s", (int)slen, opts->server, path);
    rc = call(opts, "GET", url, NULL, NULL, NULL, NULL, &r);
    if (rc == SYNCCTL_OK)
        rc = print_reply(&r, NULL, NULL);
    free(r.body);
    free(url);
    return rc;
}

/* Prints GET /v1/nodes: the live nodes and their lag. */
static int cmd_nodes(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                     int argc, char **argv)
{
    (void)argv;
    return get_root(self, opts, argc, "/v1/nodes");
}

/* Prints GET /v1/health; exits 0 only when the node answers (200; it
 * answers 503 while shutting down), so that it serves as a container
 * healthcheck (the image has no curl). */
static int cmd_health(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                      int argc, char **argv)
{
    (void)argv;
    return get_root(self, opts, argc, "/v1/health");
}

/* Appends "&name=<value percent-encoded>" to q (size bytes). */
static void add_query(char *q, size_t size, const char *name, const char *value)
{
    char *e = escape(value);
    size_t n = strlen(q);

    snprintf(q + n, size - n, "%c%s=%s", n == 0 ? '?' : '&', name, e ? e : "");
    curl_free(e);
}

static int cmd_ls(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                  int argc, char **argv)
{
    args_t a;
    json_t *all = json_array(), *seq = NULL, *out;
    char *after = NULL;
    int rc = SYNCCTL_OK;

    if (parse_args(&a, argc, argv, "p") < 0 || a.npos != 1) {
        json_decref(all);
        return syncctl_usage(self);
    }
    for (;;) {
        char query[4096] = "";
        json_t *page, *next;
        reply_t r;

        if (a.prefix != NULL)
            add_query(query, sizeof(query), "prefix", a.prefix);
        if (after != NULL)
            add_query(query, sizeof(query), "after", after);
        rc = coll_request(opts, a.pos[0], "docs", query, &r);
        if (rc == SYNCCTL_OK && (r.status < 200 || r.status > 299))
            rc = report(&r);
        page = rc == SYNCCTL_OK ? json_loads(r.body, 0, NULL) : NULL;
        free(r.body);
        if (rc == SYNCCTL_OK && page == NULL)
            rc = syncctl_fail("the server answered with invalid JSON");
        if (rc != SYNCCTL_OK)
            break;
        if (seq == NULL)
            seq = json_incref(json_object_get(page, "seq"));
        json_array_extend(all, json_object_get(page, "docs"));
        next = json_object_get(page, "next");
        free(after);
        after = json_is_string(next) ? strdup(json_string_value(next)) : NULL;
        json_decref(page);
        if (after == NULL)
            break;
    }
    if (rc == SYNCCTL_OK) {
        out = json_pack("{s:o, s:O}", "seq", seq ? seq : json_integer(0),
                        "docs", all);
        seq = NULL;
        rc = out != NULL ? syncctl_print_json(out) : SYNCCTL_FAILED;
        json_decref(out);
    }
    json_decref(seq);
    json_decref(all);
    free(after);
    return rc;
}

/* Reconnection of a watch: the wait before the next attempt starts at
 * WATCH_RETRY_FIRST_MS and doubles up to WATCH_RETRY_MAX_MS while attempts
 * fail; a stream that was open starts it over. A connection that brings
 * nothing (not even a bookmark, every 15 s by default) for
 * WATCH_IDLE_S is dropped and made again (a frozen node, a half-open
 * link). */
#define WATCH_RETRY_FIRST_MS 100
#define WATCH_RETRY_MAX_MS 5000
#define WATCH_CONNECT_S 5
#define WATCH_IDLE_S 60

/* State of one watch: a line buffer, the SSE fields of the event so far,
 * and the id of the last event dispatched (the resume point). */
typedef struct stream {
    syncd_buf_t line;
    syncd_buf_t data;
    char event[32];
    char id[32];
    char last_id[32];
    int resync;
    int got; /* events dispatched on this connection */
} stream_t;

/* Dispatches the event the blank line ends: prints a change's data, and
 * takes a change's or a bookmark's id as the point to resume from (only
 * once it is printed, so a stream cut between the id and the data is
 * resumed before that event). */
static void sse_dispatch(stream_t *s)
{
    int change = strcmp(s->event, "create") == 0 ||
                 strcmp(s->event, "update") == 0 ||
                 strcmp(s->event, "delete") == 0;

    if (change && s->data.data != NULL) {
        printf("%s\n", s->data.data);
        fflush(stdout);
    }
    if ((change || strcmp(s->event, "bookmark") == 0) && s->id[0] != '\0')
        memcpy(s->last_id, s->id, sizeof(s->last_id));
    if (strcmp(s->event, "resync") == 0)
        s->resync = 1;
    s->got += s->event[0] != '\0';
    s->event[0] = '\0';
    s->id[0] = '\0';
    syncd_buf_truncate(&s->data, 0);
}

/* Handles one SSE line. */
static void sse_line(stream_t *s, const char *line)
{
    if (strncmp(line, "id: ", 4) == 0)
        snprintf(s->id, sizeof(s->id), "%s", line + 4);
    else if (strncmp(line, "event: ", 7) == 0)
        snprintf(s->event, sizeof(s->event), "%s", line + 7);
    else if (strncmp(line, "data: ", 6) == 0)
        syncd_buf_append(&s->data, line + 6, strlen(line + 6));
    else if (line[0] == '\0')
        sse_dispatch(s);
}

static size_t on_stream(char *data, size_t size, size_t n, void *arg)
{
    stream_t *s = arg;
    size_t i, total = size * n;

    for (i = 0; i < total; i++) {
        if (data[i] == '\n') {
            sse_line(s, s->line.data ? s->line.data : "");
            syncd_buf_truncate(&s->line, 0);
        } else if (syncd_buf_putc(&s->line, data[i]) < 0) {
            return 0;
        }
    }
    return total;
}

/* Splits the comma list of node URLs into urls (at most max, pointing into
 * list, which is changed); returns how many. */
static int split_nodes(char *list, const char **urls, int max)
{
    int n = 0;

    for (char *save = NULL, *u = strtok_r(list, ",", &save);
         u != NULL && n < max; u = strtok_r(NULL, ",", &save))
        urls[n++] = u;
    return n;
}

/* One connection of a watch to server: streams into s until the stream
 * ends. Sets *status to the HTTP status (0: no answer) and returns the
 * transfer's result. */
static CURLcode watch_once(const syncctl_opts_t *opts, const char *server,
                           const char *coll, const char *prefix, stream_t *s,
                           long *status)
{
    syncctl_opts_t o = *opts;
    char query[4096] = "";
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    char *url;
    CURLcode cc;

    *status = 0;
    o.server = server;
    if (prefix != NULL)
        add_query(query, sizeof(query), "prefix", prefix);
    url = make_url(&o, coll, "watch", NULL, query);
    if (c == NULL || url == NULL) {
        curl_easy_cleanup(c);
        free(url);
        return CURLE_OUT_OF_MEMORY;
    }
    if (opts->token != NULL)
        h = add_header(h, "Authorization: Bearer %s", opts->token);
    if (s->last_id[0] != '\0')
        h = add_header(h, "Last-Event-ID: %s", s->last_id);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_stream);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)WATCH_CONNECT_S);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)WATCH_IDLE_S);
    cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(url);
    return cc;
}

/* syncctl watch C [--since SEQ] [--prefix P] [--nodes URL,...]: prints
 * every change event from SEQ on, reconnecting (to the next of --server
 * and the --nodes, with capped backoff) whenever the stream ends or a node
 * does not answer, and resuming with Last-Event-ID from the last event
 * printed, so every seq is printed once. Exits 1 when the node answers 410
 * (the replay log no longer holds the resume point) or sends `event:
 * resync`: the stream cannot go on without a gap, and the caller lists the
 * collection again. */
static int cmd_watch(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                     int argc, char **argv)
{
    const char *urls[64];
    char *nodes = NULL;
    stream_t s;
    args_t a;
    long delay = WATCH_RETRY_FIRST_MS;
    int nurls = 1, cur = 0, rc = SYNCCTL_OK;

    if (parse_args(&a, argc, argv, "psn") < 0 || a.npos != 1)
        return syncctl_usage(self);
    urls[0] = opts->server;
    if (a.nodes != NULL) {
        nodes = strdup(a.nodes);
        if (nodes == NULL)
            return syncctl_fail("out of memory");
        nurls += split_nodes(nodes, urls + 1, 63);
    }
    memset(&s, 0, sizeof(s));
    if (a.since != NULL)
        snprintf(s.last_id, sizeof(s.last_id), "%s", a.since);
    while (!s.resync) {
        long status;
        CURLcode cc;

        s.got = 0;
        cc = watch_once(opts, urls[cur], a.pos[0], a.prefix, &s, &status);
        if (cc == CURLE_OUT_OF_MEMORY) {
            rc = syncctl_fail("out of memory");
            break;
        }
        if (status == 410) {
            rc = syncctl_fail("watch %s: 410 gone: %s no longer holds the "
                              "events after seq %s (list the collection "
                              "again)",
                              a.pos[0], urls[cur], s.last_id);
            break;
        }
        if (status >= 400 && !unavailable(status)) {
            reply_t r = {status, s.line.data, s.line.len, 0};

            rc = report(&r);
            break;
        }
        syncd_buf_truncate(&s.line, 0);
        syncd_buf_truncate(&s.data, 0);
        s.event[0] = '\0';
        s.id[0] = '\0';
        if (s.resync)
            break;
        /* A stream that brought events starts the backoff over. */
        if (s.got > 0)
            delay = WATCH_RETRY_FIRST_MS;
        if (status != 200) {
            fprintf(stderr,
                    "syncctl: watch %s: %s: %s %ld; trying %s in %ld ms\n",
                    a.pos[0], urls[cur], curl_easy_strerror(cc), status,
                    urls[(cur + 1) % nurls], delay);
            cur = (cur + 1) % nurls;
        }
        sleep_ms(delay);
        if (s.got == 0)
            delay =
                delay * 2 > WATCH_RETRY_MAX_MS ? WATCH_RETRY_MAX_MS : delay * 2;
    }
    syncd_buf_free(&s.line);
    syncd_buf_free(&s.data);
    free(nodes);
    if (s.resync && rc == SYNCCTL_OK)
        rc = syncctl_fail("watch %s: resync needed after seq %s (list the "
                          "collection again)",
                          a.pos[0], s.last_id[0] ? s.last_id : "0");
    return rc;
}

char *syncctl_url(const syncctl_opts_t *opts, const char *coll,
                  const char *what, const char *query)
{
    return make_url(opts, coll, what, NULL, query);
}

void syncctl_add_query(char *q, size_t size, const char *name,
                       const char *value)
{
    add_query(q, size, name, value);
}

int syncctl_call_json(const syncctl_opts_t *opts, const char *method,
                      const char *url, long *status, json_t **out)
{
    reply_t r;
    int rc = call(opts, method, url, NULL, NULL, NULL, NULL, &r);

    *out = NULL;
    *status = r.status;
    if (rc == SYNCCTL_OK) {
        *out = json_loadb(r.body ? r.body : "", r.len, 0, NULL);
        if (r.status >= 200 && r.status <= 299 && *out == NULL)
            rc = syncctl_fail("%s %s: the server answered with invalid JSON",
                              method, url);
    }
    free(r.body);
    return rc;
}

int syncctl_call_doc(const syncctl_opts_t *opts, const char *method,
                     const char *coll, const char *id, const char *content_type,
                     const char *body, const char *if_match, long *status,
                     long long *version, json_t **out)
{
    char *url = make_url(opts, coll, "docs", id, NULL);
    char key[33];
    reply_t r;
    int rc;

    *out = NULL;
    *status = 0;
    *version = 0;
    if (url == NULL)
        return syncctl_fail("out of memory");
    random_key(key);
    rc = call(opts, method, url, content_type, body, if_match,
              strcmp(method, "GET") != 0 ? key : NULL, &r);
    if (rc == SYNCCTL_OK) {
        *status = r.status;
        *version = r.version;
        *out = json_loadb(r.body ? r.body : "", r.len, 0, NULL);
        if (r.status >= 200 && r.status <= 299 && *out == NULL)
            rc = syncctl_fail("%s %s: the server answered with invalid JSON",
                              method, url);
    }
    free(r.body);
    free(url);
    return rc;
}

const syncctl_cmd_t syncctl_http_commands[] = {
    {"get", "C ID [--version N]", cmd_get},
    {"history", "C ID", cmd_history},
    {"rollback", "C ID N [--if-match V]", cmd_rollback},
    {"put", "C ID [FILE] [--if-match V]", cmd_put},
    {"patch", "C ID [--merge] [FILE] [--if-match V]", cmd_patch},
    {"rm", "C ID [--if-match V]", cmd_rm},
    {"ls", "C [--prefix P]", cmd_ls},
    {"watch", "C [--since SEQ] [--prefix P] [--nodes URL,...]", cmd_watch},
    {"digest", "C", cmd_digest},
    {"verify", "C [--nodes URL,URL,...]", syncctl_cmd_verify},
    {"nodes", "", cmd_nodes},
    {"health", "", cmd_health},
    {"backup", "[C...] --out FILE [--gzip]", syncctl_cmd_backup},
    {"restore", "FILE [--mode=empty|overwrite] [--jobs N]",
     syncctl_cmd_restore},
    {"checkpoint", "DIR", syncctl_cmd_checkpoint},
};

const size_t syncctl_http_ncommands =
    sizeof(syncctl_http_commands) / sizeof(syncctl_http_commands[0]);
