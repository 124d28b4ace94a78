/* httpc.h - a minimal blocking HTTP/1.1 client for the daemon benchmark.
 *
 * One keep-alive connection per httpc_t, used by one thread. Responses are
 * parsed with Debian's http-parser (Content-Length and chunked bodies), so
 * the same client drives syncd and etcd's JSON gateway. A stream (SSE or
 * etcd's watch) is read chunk by chunk through a callback. Loopback only:
 * the address is "host:port" with a numeric IPv4 host.
 */
#ifndef BENCH_HTTPC_H
#define BENCH_HTTPC_H

#include <stddef.h>

#include <http_parser.h>

/* Called with each decoded piece of a streamed body. */
typedef void (*httpc_data_cb)(void *arg, const char *data, size_t len);

typedef struct httpc {
    int fd;
    http_parser parser;
    http_parser_settings settings;
    int complete;    /* the current response is complete */
    int header_etag; /* the header being parsed is ETag */
    int status;      /* status of the current response */
    char etag[64];   /* ETag of the current response, quotes stripped */
    char *body;      /* body of the current response, NUL-terminated */
    size_t body_len, body_cap;
    httpc_data_cb on_data; /* set for streams: body goes here instead */
    void *arg;
    char rbuf[65536];
} httpc_t;

/* Connects c to addr ("127.0.0.1:port") with TCP_NODELAY and a receive
 * timeout of timeout_s seconds. Returns 0, or -1 with a message on stderr.
 * The caller closes it with httpc_close(). */
int httpc_connect(httpc_t *c, const char *addr, int timeout_s);

/* Sends one request (extra_headers is "" or lines ending in "\r\n") and
 * reads the whole response into c->status, c->etag and c->body (owned by c,
 * valid until the next request). Returns the status, or -1 when the
 * connection failed or was closed. */
int httpc_request(httpc_t *c, const char *method, const char *path,
                  const char *extra_headers, const char *body, size_t body_len);

/* Sends a request whose response is a stream and reads until its headers
 * are in; from then on every decoded body byte goes to on_data, including
 * any that arrived with the headers. Returns the status, or -1. */
int httpc_stream_open(httpc_t *c, const char *method, const char *path,
                      const char *body, httpc_data_cb on_data, void *arg);

/* Reads what the stream has and hands it to on_data. Returns 0, or -1 on
 * end of stream, error or timeout. */
int httpc_stream_read(httpc_t *c);

/* Closes the connection and frees the body buffer. */
void httpc_close(httpc_t *c);

#endif
