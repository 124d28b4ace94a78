/* httpc.c - a minimal blocking HTTP/1.1 client for the daemon benchmark.
 *
 * Requests are written with one send(); responses are fed to http-parser
 * as they arrive. Only the status, the ETag header and the body are kept,
 * which is all the benchmark looks at. Not pipelined: one request at a time
 * per connection, as a keep-alive client does.
 */
#include "httpc.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    httpc_t *c = p->data;

    c->header_etag = len == 4 && strncasecmp(at, "etag", 4) == 0;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    httpc_t *c = p->data;
    size_t have = strlen(c->etag);

    if (!c->header_etag)
        return 0;
    for (size_t i = 0; i < len && have + 1 < sizeof(c->etag); i++)
        if (at[i] != '"')
            c->etag[have++] = at[i];
    c->etag[have] = '\0';
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    httpc_t *c = p->data;

    c->status = (int)p->status_code;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    httpc_t *c = p->data;

    if (c->on_data) {
        c->on_data(c->arg, at, len);
        return 0;
    }
    if (c->body_len + len + 1 > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap : 4096;

        while (cap < c->body_len + len + 1)
            cap *= 2;
        c->body = realloc(c->body, cap);
        if (!c->body) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        c->body_cap = cap;
    }
    memcpy(c->body + c->body_len, at, len);
    c->body_len += len;
    c->body[c->body_len] = '\0';
    return 0;
}

static int on_message_complete(http_parser *p)
{
    httpc_t *c = p->data;

    c->complete = 1;
    return 0;
}

int httpc_connect(httpc_t *c, const char *addr, int timeout_s)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    struct timeval tv = {.tv_sec = timeout_s};
    char host[64];
    const char *colon = strrchr(addr, ':');
    int one = 1;

    memset(c, 0, sizeof(*c));
    c->fd = -1;
    if (!colon || (size_t)(colon - addr) >= sizeof(host)) {
        fprintf(stderr, "bad address %s\n", addr);
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", addr);
        return -1;
    }
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        perror(addr);
        return -1;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    http_parser_settings_init(&c->settings);
    c->settings.on_header_field = on_header_field;
    c->settings.on_header_value = on_header_value;
    c->settings.on_headers_complete = on_headers_complete;
    c->settings.on_body = on_body;
    c->settings.on_message_complete = on_message_complete;
    return 0;
}

/* Writes the request and resets the response state. Returns 0 or -1. */
static int send_request(httpc_t *c, const char *method, const char *path,
                        const char *extra_headers, const char *body,
                        size_t body_len)
{
    char head[2048];
    int n;
    size_t off = 0;
    char *msg;

    n = snprintf(head, sizeof(head),
                 "%s %s HTTP/1.1\r\nHost: bench\r\nContent-Length: %zu\r\n"
                 "%s\r\n",
                 method, path, body_len, extra_headers);
    if (n < 0 || (size_t)n >= sizeof(head))
        return -1;
    msg = malloc((size_t)n + body_len);
    if (!msg)
        return -1;
    memcpy(msg, head, (size_t)n);
    if (body_len)
        memcpy(msg + n, body, body_len);
    while (off < (size_t)n + body_len) {
        ssize_t w =
            send(c->fd, msg + off, (size_t)n + body_len - off, MSG_NOSIGNAL);

        if (w <= 0) {
            free(msg);
            return -1;
        }
        off += (size_t)w;
    }
    free(msg);
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    c->complete = 0;
    c->status = 0;
    c->etag[0] = '\0';
    c->body_len = 0;
    if (c->body)
        c->body[0] = '\0';
    return 0;
}

/* Reads once and feeds the parser. Returns 0, or -1 on EOF or error. */
static int read_some(httpc_t *c)
{
    ssize_t r = recv(c->fd, c->rbuf, sizeof(c->rbuf), 0);
    size_t used;

    if (r <= 0)
        return -1;
    used = http_parser_execute(&c->parser, &c->settings, c->rbuf, (size_t)r);
    if (c->parser.http_errno != HPE_OK || used != (size_t)r) {
        fprintf(stderr, "bad response: %s\n",
                http_errno_name(HTTP_PARSER_ERRNO(&c->parser)));
        return -1;
    }
    return 0;
}

int httpc_request(httpc_t *c, const char *method, const char *path,
                  const char *extra_headers, const char *body, size_t body_len)
{
    c->on_data = NULL;
    if (send_request(c, method, path, extra_headers, body, body_len) < 0)
        return -1;
    while (!c->complete)
        if (read_some(c) < 0)
            return -1;
    return c->status;
}

int httpc_stream_open(httpc_t *c, const char *method, const char *path,
                      const char *body, httpc_data_cb on_data, void *arg)
{
    if (send_request(c, method, path, "", body, body ? strlen(body) : 0) < 0)
        return -1;
    c->on_data = on_data;
    c->arg = arg;
    while (!c->status)
        if (read_some(c) < 0)
            return -1;
    return c->status;
}

int httpc_stream_read(httpc_t *c)
{
    if (c->complete)
        return -1;
    return read_some(c);
}

void httpc_close(httpc_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->body);
    c->body = NULL;
    c->body_cap = c->body_len = 0;
}
