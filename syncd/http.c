/* http.c - the daemon's HTTP/1.1 server: libuv sockets, Debian's
 * http-parser, keep-alive, pipelining, limits and bearer-token checks.
 *
 * Each connection owns an input buffer, one parser, a timer and a queue of
 * requests in arrival order. Pipelined requests are read ahead but handed
 * to the handler one at a time: the next is parsed once the one before it
 * is finished, so a pipelined GET sees the PUT before it. Responses are
 * buffered on their request until every earlier response has been
 * written (the server's own error answers join the same queue), so they
 * leave in request order. Read-ahead stops at max_header_bytes +
 * max_body_bytes of unparsed input.
 *
 * One timer per connection guards against slow and idle clients: from the
 * first byte of a request to the end of its headers the header timeout
 * runs (408 on expiry); while a body arrives each read re-arms the idle
 * timeout, but never past the body deadline that the end of the headers
 * set (408 on either); between requests the idle timeout closes the
 * connection silently. The bearer token and the declared body size are
 * checked on the headers, before any body is read and before `100
 * Continue`. Anything the parser rejects gets 400 (or 401, 431 / 413 for
 * the token and the header and body limits) after the responses already
 * queued, and the connection closes. A client's end of input (EOF) is a
 * half-close: what it asked is still answered; but once a streamed response
 * has begun, EOF means the client left, and the connection closes at once
 * so that its request hears it is gone (a watch frees its slot).
 *
 * A connection closed after an answer the client may not expect yet (an
 * early 413 while it still sends its body) closes gracefully (RFC 9112
 * section 9.6): the server shuts down its writing side, then reads and
 * discards for a bounded time and byte count, so that the client reads the
 * answer instead of a connection reset. Connections are counted per client
 * address too; past the limit a new one gets 503.
 */
#include "http.h"

#include <http_parser.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "log.h"

#define READ_CHUNK (64 * 1024)

/* A lingering close reads and discards for at most this long and this
 * many bytes before it closes. */
#define LINGER_MS 5000
#define LINGER_BYTES ((size_t)64 << 20)

typedef struct header {
    syncd_buf_t name, value;
} header_t;

typedef struct conn conn_t;

struct syncd_http_req {
    conn_t *conn; /* NULL once the connection is gone */
    syncd_http_req_t *next;
    const char *method;
    syncd_buf_t url;
    char *path, *query;
    header_t *headers;
    size_t nheaders;
    int in_field; /* the parser's last header callback was a field name */
    syncd_buf_t body;
    syncd_buf_t out; /* response bytes waiting for earlier responses */
    int keep_alive;  /* the client allows another request after this one */
    int started;     /* a response has begun */
    int finished;    /* respond() or stream_end() was called */
    int streaming;   /* stream_start() was called */
    int close_after; /* close the connection once this response is out */
    int status;
    const char *route;
    void *data;
    syncd_http_gone_cb gone;
    syncd_http_drained_cb drained; /* fire once the output is written */
};

typedef enum { PHASE_IDLE, PHASE_HEADERS, PHASE_BODY } phase_t;

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    syncd_http_server_t *srv;
    conn_t *prev, *next;
    http_parser parser;
    syncd_buf_t in;         /* received bytes not yet parsed */
    syncd_http_req_t *cur;  /* the request being parsed */
    syncd_http_req_t *head; /* queued requests, oldest first */
    syncd_http_req_t *tail;
    int busy; /* queued requests not finished yet */
    int eof;  /* the client sent everything it will send */
    phase_t phase;
    size_t header_bytes;
    uint64_t body_deadline;       /* loop time the body must be in by */
    int fail_status;              /* limit hit inside a parser callback */
    const char *fail_message;     /* static; its reason */
    struct sockaddr_storage peer; /* the client's address */
    uv_shutdown_t shutdown;
    int lingering;    /* answered; discarding input until the close */
    size_t discarded; /* bytes discarded while lingering */
    int no_more;      /* parse nothing more on this connection */
    int reading;
    int writes;             /* uv_write requests in flight */
    int close_when_written; /* close once writes drain */
    int closing;
    int parsing; /* inside http_parser_execute() */
    int handles; /* open libuv handles (tcp, timer) */
};

struct syncd_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int listening;
    int port;
    syncd_http_options_t opts;
    char *token;
    char *open_path;
    char *open_prefix;
    conn_t *conns;
    int nconns;
    int draining;
    int closing;
    int handles; /* listener + live connections */
    syncd_http_close_cb close_cb;
    void *close_payload;
};

typedef struct write_req {
    uv_write_t req;
    conn_t *conn;
    char *data;
} write_req_t;

static const http_parser_settings parser_settings;

void syncd_http_options_init(syncd_http_options_t *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->max_header_bytes = 16 * 1024;
    opts->max_body_bytes = 8 * 1024 * 1024 + 64 * 1024;
    opts->max_connections = 1024;
    opts->max_connections_per_client = 64;
    opts->idle_timeout_ms = 60 * 1000;
    opts->header_timeout_ms = 10 * 1000;
    opts->body_timeout_ms = 30 * 1000;
    opts->open_path = "/v1/health";
}

/* ---- Requests -------------------------------------------------------- */

static syncd_http_req_t *req_new(conn_t *c)
{
    syncd_http_req_t *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    r->conn = c;
    r->method = "GET";
    r->route = "-";
    r->keep_alive = 1;
    return r;
}

static void req_free(syncd_http_req_t *r)
{
    size_t i;

    if (r == NULL)
        return;
    for (i = 0; i < r->nheaders; i++) {
        syncd_buf_free(&r->headers[i].name);
        syncd_buf_free(&r->headers[i].value);
    }
    free(r->headers);
    syncd_buf_free(&r->url);
    syncd_buf_free(&r->body);
    syncd_buf_free(&r->out);
    free(r->path);
    free(r->query);
    free(r);
}

const char *syncd_http_method(const syncd_http_req_t *req)
{
    return req->method;
}

const char *syncd_http_path(const syncd_http_req_t *req)
{
    return req->path ? req->path : "/";
}

const char *syncd_http_query(const syncd_http_req_t *req)
{
    return req->query ? req->query : "";
}

const char *syncd_http_header(const syncd_http_req_t *req, const char *name)
{
    size_t i;

    for (i = 0; i < req->nheaders; i++) {
        const header_t *h = &req->headers[i];

        if (h->name.data != NULL && strcasecmp(h->name.data, name) == 0)
            return h->value.data ? h->value.data : "";
    }
    return NULL;
}

const char *syncd_http_body(const syncd_http_req_t *req, size_t *len)
{
    if (len != NULL)
        *len = req->body.len;
    return req->body.data ? req->body.data : "";
}

void syncd_http_set_route(syncd_http_req_t *req, const char *route)
{
    req->route = route;
}

void syncd_http_set_data(syncd_http_req_t *req, void *data)
{
    req->data = data;
}

void *syncd_http_data(const syncd_http_req_t *req)
{
    return req->data;
}

void syncd_http_on_gone(syncd_http_req_t *req, syncd_http_gone_cb cb)
{
    req->gone = cb;
}

int syncd_http_gone(const syncd_http_req_t *req)
{
    return req->conn == NULL;
}

/* ---- Connections ----------------------------------------------------- */

/* Drops one of srv's handle references; the last one after a close frees
 * srv and reports the close. */
static void server_unref(syncd_http_server_t *srv)
{
    syncd_http_close_cb cb;
    void *payload;

    if (--srv->handles > 0 || !srv->closing)
        return;
    cb = srv->close_cb;
    payload = srv->close_payload;
    free(srv->token);
    free(srv->open_path);
    free(srv->open_prefix);
    free(srv);
    if (cb != NULL)
        cb(payload);
}

static void conn_handle_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    syncd_http_server_t *srv = c->srv;

    if (--c->handles > 0)
        return;
    syncd_buf_free(&c->in);
    free(c);
    server_unref(srv);
}

/* Drops the request being parsed and orphans queued requests: finished
 * ones are freed, unfinished ones are told through their gone callback
 * and freed when their handler finishes them. */
static void conn_drop_requests(conn_t *c)
{
    syncd_http_req_t *r, *next;

    req_free(c->cur);
    c->cur = NULL;
    r = c->head;
    c->head = c->tail = NULL;
    c->busy = 0;
    for (; r != NULL; r = next) {
        next = r->next;
        r->next = NULL;
        r->conn = NULL;
        if (r->finished)
            req_free(r);
        else if (r->gone != NULL)
            r->gone(r);
    }
}

/* Closes c: unlinks it and drops its requests. */
static void conn_close(conn_t *c)
{
    syncd_http_server_t *srv = c->srv;

    if (c->closing)
        return;
    c->closing = 1;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    srv->nconns--;
    conn_drop_requests(c);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
}

static void conn_linger(conn_t *c);

static void write_done(uv_write_t *w, int status)
{
    write_req_t *wr = (write_req_t *)w;
    conn_t *c = wr->conn;

    free(wr->data);
    free(wr);
    c->writes--;
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c);
    } else if (c->writes == 0 && c->head != NULL && c->head->drained != NULL &&
               c->head->out.len == 0) {
        syncd_http_drained_cb cb = c->head->drained;

        c->head->drained = NULL;
        cb(c->head);
    } else if (c->close_when_written && c->writes == 0)
        conn_linger(c);
}

/* Hands len bytes at data (malloc'd; ownership taken) to the socket. */
static void conn_write(conn_t *c, char *data, size_t len)
{
    write_req_t *wr;
    uv_buf_t b = uv_buf_init(data, (unsigned)len);

    if (c->closing || (wr = calloc(1, sizeof(*wr))) == NULL) {
        free(data);
        return;
    }
    wr->conn = c;
    wr->data = data;
    c->writes++;
    if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, write_done) < 0) {
        c->writes--;
        free(data);
        free(wr);
        conn_close(c);
    }
}

static void conn_close_when_written(conn_t *c)
{
    c->no_more = 1;
    c->close_when_written = 1;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
    uv_timer_stop(&c->timer);
    if (c->writes == 0)
        conn_linger(c);
}

static void timer_fired(uv_timer_t *t);
static void read_some(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);
static void alloc_read(uv_handle_t *h, size_t hint, uv_buf_t *b);
static void parse_input(conn_t *c);

static void conn_arm(conn_t *c, int64_t ms)
{
    uv_timer_start(&c->timer, timer_fired, (uint64_t)(ms > 0 ? ms : 1), 0);
}

/* Arms the timer while a body arrives: the idle timeout, cut short by the
 * body deadline. */
static void conn_arm_body(conn_t *c)
{
    uint64_t now = uv_now(c->srv->loop);
    uint64_t left = c->body_deadline > now ? c->body_deadline - now : 0;
    uint64_t idle = (uint64_t)c->srv->opts.idle_timeout_ms;

    conn_arm(c, (int64_t)(left < idle ? left : idle));
}

static void shutdown_done(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
}

/* Closes c once its last answer is written: at once when the client has
 * sent everything, else gracefully (see the top of the file). */
static void conn_linger(conn_t *c)
{
    if (c->eof || c->lingering) {
        conn_close(c);
        return;
    }
    c->lingering = 1;
    conn_drop_requests(c);
    c->in.len = 0;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, shutdown_done) != 0 ||
        (!c->reading &&
         uv_read_start((uv_stream_t *)&c->tcp, alloc_read, read_some) != 0)) {
        conn_close(c);
        return;
    }
    c->reading = 1;
    conn_arm(c, LINGER_MS);
}

static void conn_resume_reading(conn_t *c)
{
    if (c->reading || c->no_more || c->closing)
        return;
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_read, read_some) == 0)
        c->reading = 1;
}

/* Writes what can go out in order: the head request's buffered bytes, and
 * on through every finished request. Re-arms the idle timer and resumes
 * reading when the queue has drained. */
static void conn_flush(conn_t *c)
{
    syncd_http_req_t *r;

    while (!c->closing && (r = c->head) != NULL) {
        if (r->out.len > 0) {
            syncd_buf_t out = r->out;

            /* The bytes belong to the write now: a write that fails at
             * once closes c and frees r, which must not free them too. */
            memset(&r->out, 0, sizeof(r->out));
            conn_write(c, out.data, out.len);
            if (c->closing)
                return;
        }
        if (!r->finished)
            return;
        c->head = r->next;
        if (c->head == NULL)
            c->tail = NULL;
        if (r->close_after) {
            req_free(r);
            conn_close_when_written(c);
            return;
        }
        req_free(r);
    }
    if (c->closing || c->no_more || c->busy > 0)
        return;
    if (c->in.len > 0)
        parse_input(c);
    if (c->closing || c->no_more || c->busy > 0)
        return;
    if ((c->srv->draining || c->eof) && c->cur == NULL && c->in.len == 0) {
        conn_close_when_written(c);
        return;
    }
    if (c->cur == NULL)
        conn_arm(c, c->srv->opts.idle_timeout_ms);
    if (!c->eof)
        conn_resume_reading(c);
}

/* Queues r (a new request of c) behind the others. */
static void conn_enqueue(conn_t *c, syncd_http_req_t *r)
{
    r->next = NULL;
    if (c->tail != NULL)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    c->busy++;
}

/* Answers the request being parsed (or a fresh one) with status and closes
 * the connection after the responses queued before it. */
static void conn_fail(conn_t *c, int status, const char *message)
{
    syncd_http_req_t *r = c->cur;

    c->cur = NULL;
    c->no_more = 1;
    c->phase = PHASE_IDLE;
    uv_timer_stop(&c->timer);
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
    if (r == NULL && (r = req_new(c)) == NULL) {
        conn_close(c);
        return;
    }
    r->keep_alive = 0;
    conn_enqueue(c, r);
    syncd_http_respond_error(r, status,
                             status == 408   ? "timeout"
                             : status == 401 ? "unauthorized"
                             : status == 413 ? "too_large"
                             : status == 431 ? "headers_too_large"
                             : status == 503 ? "unavailable"
                                             : "bad_request",
                             message);
}

static void timer_fired(uv_timer_t *t)
{
    conn_t *c = t->data;

    if (c->lingering)
        conn_close(c);
    else if (c->phase == PHASE_HEADERS)
        conn_fail(c, 408, "request headers not received in time");
    else if (c->phase == PHASE_BODY)
        conn_fail(c, 408,
                  uv_now(c->srv->loop) >= c->body_deadline
                      ? "request body not received within the body timeout"
                      : "request body stalled");
    else if (c->head == NULL)
        conn_close(c);
}

static void alloc_read(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    conn_t *c = h->data;
    (void)hint;

    if (c->in.cap - c->in.len < READ_CHUNK + 1) {
        size_t cap = c->in.len + READ_CHUNK + 1;
        char *p = realloc(c->in.data, cap);

        if (p == NULL) {
            *b = uv_buf_init(NULL, 0);
            return;
        }
        c->in.data = p;
        c->in.cap = cap;
    }
    *b = uv_buf_init(c->in.data + c->in.len, READ_CHUNK);
}

static void read_some(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    conn_t *c = s->data;
    (void)b;

    if (c->lingering) {
        c->discarded += nread > 0 ? (size_t)nread : 0;
        c->in.len = 0;
        if (nread < 0 || c->discarded > LINGER_BYTES)
            conn_close(c);
        return;
    }
    if (nread < 0) {
        /* A client that ends its side of a started stream (a watch has no
         * end to wait for) has left: its request is told it is gone. */
        if (nread == UV_EOF && (c->head != NULL || c->in.len > 0) &&
            !(c->head != NULL && c->head->streaming && !c->head->finished)) {
            /* Half-close: answer what was asked, then close. */
            c->eof = 1;
            uv_read_stop(s);
            c->reading = 0;
            return;
        }
        conn_close(c);
        return;
    }
    if (nread == 0)
        return;
    c->in.len += (size_t)nread;
    if (c->phase == PHASE_BODY)
        conn_arm_body(c);
    parse_input(c);
}

/* Feeds buffered input to the parser until it is consumed, a parsed
 * request is still unfinished, or the connection takes no more requests.
 * Reading pauses while unparsed input passes the read-ahead bound. */
static void parse_input(conn_t *c)
{
    size_t off = 0;

    if (c->parsing)
        return;
    c->parsing = 1;
    while (!c->closing && !c->no_more && off < c->in.len && c->busy == 0) {
        size_t n = http_parser_execute(&c->parser, &parser_settings,
                                       c->in.data + off, c->in.len - off);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);

        off += n;
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            continue;
        }
        if (e != HPE_OK) {
            char msg[160];

            if (c->closing)
                break;
            snprintf(msg, sizeof(msg), "malformed HTTP request: %s",
                     http_errno_description(e));
            conn_fail(c, c->fail_status ? c->fail_status : 400,
                      c->fail_message ? c->fail_message : msg);
            off = c->in.len;
            break;
        }
    }
    c->parsing = 0;
    if (c->closing)
        return;
    if (c->no_more)
        off = c->in.len;
    memmove(c->in.data, c->in.data + off, c->in.len - off);
    c->in.len -= off;
    if (c->in.len >
            c->srv->opts.max_header_bytes + c->srv->opts.max_body_bytes &&
        c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

/* ---- Parser callbacks ------------------------------------------------ */

/* Stops the parser from a callback; parse_input() answers status. */
static int parse_fail(conn_t *c, int status, const char *message)
{
    c->fail_status = status;
    c->fail_message = message;
    return -1;
}

static int count_header_bytes(conn_t *c, size_t len)
{
    c->header_bytes += len;
    if (c->header_bytes > c->srv->opts.max_header_bytes)
        return parse_fail(c, 431, "request headers exceed the header limit");
    return 0;
}

static int on_message_begin(http_parser *p)
{
    conn_t *c = p->data;

    c->cur = req_new(c);
    if (c->cur == NULL)
        return -1;
    c->phase = PHASE_HEADERS;
    c->header_bytes = 0;
    conn_arm(c, c->srv->opts.header_timeout_ms);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;

    if (count_header_bytes(c, len) < 0)
        return -1;
    return syncd_buf_append(&c->cur->url, at, len);
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    syncd_http_req_t *r = c->cur;

    if (count_header_bytes(c, len + 4) < 0)
        return -1;
    if (!r->in_field) {
        header_t *h = realloc(r->headers, (r->nheaders + 1) * sizeof(*h));

        if (h == NULL)
            return -1;
        r->headers = h;
        memset(&h[r->nheaders++], 0, sizeof(*h));
        r->in_field = 1;
    }
    return syncd_buf_append(&r->headers[r->nheaders - 1].name, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    syncd_http_req_t *r = c->cur;

    if (count_header_bytes(c, len) < 0)
        return -1;
    r->in_field = 0;
    return syncd_buf_append(&r->headers[r->nheaders - 1].value, at, len);
}

static int split_url(syncd_http_req_t *r);
static int authorized(const syncd_http_server_t *srv, syncd_http_req_t *r);

/* Checks the request on its headers, before any of its body is read: the
 * target, the bearer token, the declared body size; then starts the body
 * deadline and sends `100 Continue` when asked. */
static int on_headers_complete(http_parser *p)
{
    conn_t *c = p->data;
    syncd_http_server_t *srv = c->srv;
    syncd_http_req_t *r = c->cur;
    const char *expect;

    r->method = http_method_str((enum http_method)p->method);
    if (split_url(r) < 0)
        return parse_fail(c, 400, "malformed request target");
    if (!authorized(srv, r))
        return parse_fail(c, 401, "missing or wrong bearer token");
    if (!(p->flags & F_CHUNKED) && p->content_length != ULLONG_MAX &&
        p->content_length > srv->opts.max_body_bytes)
        return parse_fail(c, 413, "request body exceeds the body limit");
    c->phase = PHASE_BODY;
    c->body_deadline =
        srv->opts.body_timeout_ms > 0
            ? uv_now(srv->loop) + (uint64_t)srv->opts.body_timeout_ms
            : UINT64_MAX;
    conn_arm_body(c);
    expect = syncd_http_header(r, "Expect");
    if (expect != NULL && strcasecmp(expect, "100-continue") == 0 &&
        c->head == NULL) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        char *copy = malloc(sizeof(cont) - 1);

        if (copy != NULL) {
            memcpy(copy, cont, sizeof(cont) - 1);
            conn_write(c, copy, sizeof(cont) - 1);
        }
    }
    return c->closing ? -1 : 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;

    if (c->cur->body.len + len > c->srv->opts.max_body_bytes)
        return parse_fail(c, 413, "request body exceeds the body limit");
    return syncd_buf_append(&c->cur->body, at, len);
}

/* Splits the request target into path and query; -1 when it is not a
 * valid origin-form or absolute-form URL. */
static int split_url(syncd_http_req_t *r)
{
    struct http_parser_url u;
    const char *url = r->url.data ? r->url.data : "";

    http_parser_url_init(&u);
    if (http_parser_parse_url(url, r->url.len, 0, &u) != 0 ||
        !(u.field_set & (1 << UF_PATH)))
        return -1;
    r->path =
        strndup(url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
    r->query = (u.field_set & (1 << UF_QUERY))
                   ? strndup(url + u.field_data[UF_QUERY].off,
                             u.field_data[UF_QUERY].len)
                   : strdup("");
    return r->path != NULL && r->query != NULL ? 0 : -1;
}

/* Returns 1 when path is the open prefix or lies under it. */
static int under_open_prefix(const syncd_http_server_t *srv, const char *path)
{
    size_t n = srv->open_prefix ? strlen(srv->open_prefix) : 0;

    return n > 0 && strncmp(path, srv->open_prefix, n) == 0 &&
           (path[n] == '\0' || path[n] == '/');
}

/* Returns 1 when r carries one of the server's bearer tokens (a
 * comma-separated list), or none is set, or r needs none: the open path,
 * the open prefix, a CORS preflight (which browsers send without
 * credentials, and which the handler answers with headers only). Each
 * comparison takes the same time whatever the bytes that differ. */
static int authorized(const syncd_http_server_t *srv, syncd_http_req_t *r)
{
    const char *auth, *given, *token;
    size_t len, want, i;
    int ok = 0;

    if (srv->token == NULL || strcmp(syncd_http_path(r), srv->open_path) == 0 ||
        under_open_prefix(srv, syncd_http_path(r)) ||
        strcmp(r->method, "OPTIONS") == 0)
        return 1;
    auth = syncd_http_header(r, "Authorization");
    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
        return 0;
    given = auth + 7;
    len = strlen(given);
    for (token = srv->token; token != NULL;) {
        unsigned char diff = 0;

        want = strcspn(token, ",");
        if (len == want) {
            for (i = 0; i < want; i++)
                diff |= (unsigned char)(given[i] ^ token[i]);
            ok |= diff == 0;
        }
        token = token[want] == ',' ? token + want + 1 : NULL;
    }
    return ok;
}

static int on_message_complete(http_parser *p)
{
    conn_t *c = p->data;
    syncd_http_server_t *srv = c->srv;
    syncd_http_req_t *r = c->cur;

    c->cur = NULL;
    c->phase = PHASE_IDLE;
    uv_timer_stop(&c->timer);
    r->keep_alive = http_should_keep_alive(p) && !srv->draining;
    conn_enqueue(c, r);
    if (!r->keep_alive) {
        c->no_more = 1;
        r->close_after = 1;
    }
    srv->opts.handler(r, srv->opts.data);
    if (!c->closing)
        http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- Responses ------------------------------------------------------- */

/* Returns the reason phrase of status ("Not Found"); static. */
static const char *reason_phrase(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

/* Writes the status line and common headers of r's response into r->out.
 * body_len < 0 means a chunked body follows. */
static void begin_response(syncd_http_req_t *r, int status,
                           const char *content_type, const char *headers,
                           long long body_len)
{
    conn_t *c = r->conn;
    const char *origin;
    char length[48] = "";

    r->started = 1;
    r->status = status;
    if (c == NULL)
        return;
    if (c->srv->draining || status >= 500 || status == 400 || status == 408 ||
        status == 413 || status == 431)
        r->close_after = 1;
    if (!r->keep_alive)
        r->close_after = 1;
    if (c->srv->opts.observe != NULL)
        c->srv->opts.observe(r->route, status, c->srv->opts.data);
    /* 204 and 304 have no body, and send no length (RFC 9110 8.6). */
    if (body_len >= 0 && status != 204 && status != 304)
        snprintf(length, sizeof(length), "Content-Length: %lld\r\n", body_len);
    else if (body_len < 0)
        snprintf(length, sizeof(length), "Transfer-Encoding: chunked\r\n");
    /* One formatted write for the common head: this runs for every
     * request. */
    syncd_buf_printf(&r->out, "HTTP/1.1 %d %s\r\n%s%s%s%s%s%s", status,
                     reason_phrase(status),
                     content_type != NULL ? "Content-Type: " : "",
                     content_type != NULL ? content_type : "",
                     content_type != NULL ? "\r\n" : "", length,
                     status == 401 ? "WWW-Authenticate: Bearer\r\n" : "",
                     r->close_after ? "Connection: close\r\n" : "");
    origin = syncd_http_header(r, "Origin");
    if (c->srv->opts.cors != NULL && origin != NULL &&
        c->srv->opts.cors(origin, c->srv->opts.data))
        syncd_buf_printf(&r->out,
                         "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n"
                         "Access-Control-Expose-Headers: ETag\r\n",
                         origin);
    syncd_buf_printf(&r->out, "%s\r\n", headers != NULL ? headers : "");
    if (body_len > 0)
        syncd_buf_reserve(&r->out, (size_t)body_len);
}

/* Marks r finished and writes or frees it. */
static void finish(syncd_http_req_t *r)
{
    conn_t *c = r->conn;

    r->finished = 1;
    if (c == NULL) {
        req_free(r);
        return;
    }
    c->busy--;
    if (r->close_after) {
        c->no_more = 1;
        if (c->reading) {
            uv_read_stop((uv_stream_t *)&c->tcp);
            c->reading = 0;
        }
    }
    conn_flush(c);
}

void syncd_http_respond(syncd_http_req_t *req, int status,
                        const char *content_type, const char *headers,
                        const char *body, size_t len)
{
    begin_response(req, status, content_type, headers, (long long)len);
    if (req->conn != NULL && len > 0)
        syncd_buf_append(&req->out, body, len);
    finish(req);
}

void syncd_http_respond_error(syncd_http_req_t *req, int status,
                              const char *code, const char *message)
{
    json_t *obj = json_pack("{s:s, s:s}", "error", code, "message", message);
    char *text;

    if (obj == NULL) {
        /* The message quoted input that is not UTF-8: mask those bytes. */
        char *ascii = strdup(message);
        char *p;

        for (p = ascii; p != NULL && *p != '\0'; p++)
            if ((unsigned char)*p >= 0x80)
                *p = '?';
        obj = json_pack("{s:s, s:s}", "error", code, "message",
                        ascii != NULL ? ascii : "");
        free(ascii);
    }
    text = obj != NULL ? json_dumps(obj, JSON_COMPACT) : NULL;

    if (text == NULL)
        syncd_http_respond(req, status, NULL, "", "", 0);
    else
        syncd_http_respond(req, status, "application/json", "", text,
                           strlen(text));
    free(text);
    json_decref(obj);
}

void syncd_http_stream_start(syncd_http_req_t *req, int status,
                             const char *content_type, const char *headers)
{
    begin_response(req, status, content_type, headers, -1);
    req->streaming = 1;
    if (req->conn != NULL)
        conn_flush(req->conn);
}

void syncd_http_stream_write(syncd_http_req_t *req, const char *data,
                             size_t len)
{
    if (req->conn == NULL || len == 0)
        return;
    syncd_buf_printf(&req->out, "%zx\r\n", len);
    syncd_buf_append(&req->out, data, len);
    syncd_buf_append(&req->out, "\r\n", 2);
    conn_flush(req->conn);
}

size_t syncd_http_stream_backlog(const syncd_http_req_t *req)
{
    if (req->conn == NULL)
        return 0;
    return req->out.len +
           uv_stream_get_write_queue_size((uv_stream_t *)&req->conn->tcp);
}

int syncd_http_on_drained(syncd_http_req_t *req, syncd_http_drained_cb cb)
{
    if (req->conn == NULL || (req->out.len == 0 && req->conn->writes == 0))
        return 0;
    req->drained = cb;
    return 1;
}

void syncd_http_stream_end(syncd_http_req_t *req)
{
    if (req->conn != NULL)
        syncd_buf_append(&req->out, "0\r\n\r\n", 5);
    finish(req);
}

/* ---- The listener ---------------------------------------------------- */

static void listener_closed(uv_handle_t *h)
{
    server_unref(h->data);
}

/* Returns 1 when a and b are the same client address (ports aside). */
static int same_client(const struct sockaddr_storage *a,
                       const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
                      &((const struct sockaddr_in *)b)->sin_addr,
                      sizeof(struct in_addr)) == 0;
    if (a->ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr,
                      sizeof(struct in6_addr)) == 0;
    return 0;
}

/* Records c's client address and returns 1 when c is one connection too
 * many from it (a client whose address cannot be read is not limited). */
static int too_many_from_peer(conn_t *c)
{
    syncd_http_server_t *srv = c->srv;
    int len = sizeof(c->peer), n = 0;
    const conn_t *o;

    if (srv->opts.max_connections_per_client <= 0 ||
        uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &len) != 0)
        return 0;
    for (o = srv->conns; o != NULL; o = o->next)
        if (o->peer.ss_family != AF_UNSPEC && same_client(&o->peer, &c->peer))
            n++;
    return n > srv->opts.max_connections_per_client;
}

static void on_connection(uv_stream_t *server, int status)
{
    syncd_http_server_t *srv = server->data;
    conn_t *c;

    if (status < 0 || srv->draining)
        return;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->srv = srv;
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles = 2;
    srv->handles++;
    c->next = srv->conns;
    if (srv->conns != NULL)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (srv->nconns > srv->opts.max_connections) {
        syncd_log(SYNCD_LOG_WARN, "http: refusing a connection: %d open",
                  srv->nconns - 1);
        conn_fail(c, 503, "too many open connections");
        return;
    }
    if (too_many_from_peer(c)) {
        syncd_log(SYNCD_LOG_WARN,
                  "http: refusing a connection: %d open from one client",
                  srv->opts.max_connections_per_client);
        conn_fail(c, 503, "too many open connections from this client");
        return;
    }
    conn_arm(c, srv->opts.idle_timeout_ms);
    conn_resume_reading(c);
}

int syncd_http_listen(syncd_http_server_t **out, uv_loop_t *loop,
                      const char *host, int port,
                      const syncd_http_options_t *opts, syncd_error_t *err)
{
    syncd_http_server_t *srv = NULL;
    struct sockaddr_storage addr;
    struct sockaddr_storage bound;
    int len = sizeof(bound);
    int rc;

    *out = NULL;
    if (opts->handler == NULL)
        return syncd_error_set(err, SYNCD_EINVAL, "http: no handler");
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) != 0)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "http: bad listen address '%s'", host);
    srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "http: out of memory");
    srv->loop = loop;
    srv->opts = *opts;
    srv->token = opts->token ? strdup(opts->token) : NULL;
    srv->open_path = strdup(opts->open_path ? opts->open_path : "");
    srv->open_prefix = opts->open_prefix ? strdup(opts->open_prefix) : NULL;
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    srv->handles = 1;
    rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->listener, 1024, on_connection);
    if (rc == 0)
        rc =
            uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &len);
    if (rc != 0) {
        syncd_error_set(err, SYNCD_EBACKEND, "http: cannot listen on %s:%d: %s",
                        host, port, uv_strerror(rc));
        /* srv is freed by the listener's close callback. */
        srv->closing = 1;
        uv_close((uv_handle_t *)&srv->listener, listener_closed);
        return SYNCD_EBACKEND;
    }
    srv->listening = 1;
    srv->port = bound.ss_family == AF_INET6
                    ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                    : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    *out = srv;
    return 0;
}

int syncd_http_port(const syncd_http_server_t *srv)
{
    return srv->port;
}

int syncd_http_connections(const syncd_http_server_t *srv)
{
    return srv->nconns;
}

static void stop_listening(syncd_http_server_t *srv)
{
    if (!srv->listening)
        return;
    srv->listening = 0;
    uv_close((uv_handle_t *)&srv->listener, listener_closed);
}

void syncd_http_drain(syncd_http_server_t *srv)
{
    conn_t *c, *next;

    srv->draining = 1;
    stop_listening(srv);
    for (c = srv->conns; c != NULL; c = next) {
        next = c->next;
        if (c->head == NULL && c->cur == NULL)
            conn_close_when_written(c);
    }
}

void syncd_http_close(syncd_http_server_t *srv, syncd_http_close_cb cb,
                      void *payload)
{
    srv->draining = 1;
    srv->closing = 1;
    srv->close_cb = cb;
    srv->close_payload = payload;
    while (srv->conns != NULL)
        conn_close(srv->conns);
    /* A reference of our own, so that a server with no handle left is
     * released here too. */
    srv->handles++;
    stop_listening(srv);
    server_unref(srv);
}
