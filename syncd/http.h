/* http.h - the daemon's HTTP/1.1 server on libuv (internal to syncd/).
 *
 * Requests are parsed by Debian's http-parser; the server enforces the
 * limits below, the optional bearer token, keep-alive and pipelining, and
 * hands each complete request to one handler. Handlers answer
 * asynchronously: every request is finished exactly once, by
 * syncd_http_respond() or, for a streamed response, by
 * syncd_http_stream_end(). Pipelined requests reach the handler one at a
 * time, in order, and their responses go out in that order. A request whose
 * connection went away stays valid until it is finished (its output is then
 * discarded).
 *
 * Everything runs on the loop's thread.
 */
#ifndef SYNCD_HTTP_H
#define SYNCD_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "syncd/error.h"

typedef struct syncd_http_server syncd_http_server_t;
typedef struct syncd_http_req syncd_http_req_t;

/* Handles one request; it must eventually finish req. */
typedef void (*syncd_http_handler_fn)(syncd_http_req_t *req, void *data);

/* Observes every response the server sends: the route label the handler
 * set (or "-" for requests the server answered itself) and the status. */
typedef void (*syncd_http_observe_fn)(const char *route, int status,
                                      void *data);

/* Returns 1 when a page of origin (the Origin header, "http://host:port")
 * may read the server's responses (CORS), else 0. */
typedef int (*syncd_http_cors_fn)(const char *origin, void *data);

/* Server options; syncd_http_options_init() sets the documented defaults.
 * Strings are borrowed for the life of the server. */
typedef struct syncd_http_options {
    size_t max_header_bytes; /* request line + headers; 16 KiB, else 431 */
    size_t max_body_bytes;   /* request body; 8 MiB + 64 KiB, else 413 */
    int max_connections;     /* open connections; 1024, beyond: 503 */
    int max_connections_per_client; /* from one address; 64 (0: none) */
    int64_t idle_timeout_ms;        /* keep-alive idle and body stall; 60 s */
    int64_t header_timeout_ms; /* first byte to end of headers; 10 s, 408 */
    int64_t body_timeout_ms;   /* headers to end of body; 30 s (0: none) */
    const char *token;         /* bearer tokens, comma-separated (any one is
                                  accepted); NULL: no authentication */
    const char *open_path;     /* the one path served without the token */
    const char *open_prefix;   /* a path served without the token, with
                                  every path under it + "/" ("/ui"); NULL:
                                  none. CORS preflights (OPTIONS) never
                                  need the token either. */
    syncd_http_handler_fn handler;
    syncd_http_observe_fn observe; /* may be NULL */
    syncd_http_cors_fn cors;       /* allowed origins get
                                      Access-Control-Allow-Origin on every
                                      response; NULL: no CORS headers */
    void *data;                    /* passed to handler and observe */
} syncd_http_options_t;

/* Sets every field of opts to its documented default (no handler). */
void syncd_http_options_init(syncd_http_options_t *opts);

/* Listens on host:port (port 0 picks a free one) on loop into *out;
 * SYNCD_EINVAL for a bad address or missing handler, SYNCD_EBACKEND when
 * the socket cannot be bound (the message names the address and why). */
int syncd_http_listen(syncd_http_server_t **out, uv_loop_t *loop,
                      const char *host, int port,
                      const syncd_http_options_t *opts, syncd_error_t *err);

/* Returns the port the server listens on. */
int syncd_http_port(const syncd_http_server_t *srv);

/* Returns the number of open connections. */
int syncd_http_connections(const syncd_http_server_t *srv);

/* Stops accepting, closes idle connections, and closes every other
 * connection once its queued requests are answered. New requests on open
 * connections are still answered (with "Connection: close"). */
void syncd_http_drain(syncd_http_server_t *srv);

/* Fires when syncd_http_close() is done; the server memory is gone. */
typedef void (*syncd_http_close_cb)(void *payload);

/* Closes every connection and the listener, then calls cb (may be NULL).
 * Requests still unfinished stay valid until their handler finishes them. */
void syncd_http_close(syncd_http_server_t *srv, syncd_http_close_cb cb,
                      void *payload);

/* ---- Requests -------------------------------------------------------- */

/* Returns the method name ("GET", "PUT", ...); static. */
const char *syncd_http_method(const syncd_http_req_t *req);

/* Returns the raw (still percent-encoded) path, without the query;
 * borrowed from req. */
const char *syncd_http_path(const syncd_http_req_t *req);

/* Returns the raw query string (without '?'), "" when none; borrowed from
 * req. */
const char *syncd_http_query(const syncd_http_req_t *req);

/* Returns the value of header name (case-insensitive), or NULL; borrowed
 * from req. */
const char *syncd_http_header(const syncd_http_req_t *req, const char *name);

/* Returns the body and its length in *len (NUL-terminated; "" if none);
 * borrowed from req. */
const char *syncd_http_body(const syncd_http_req_t *req, size_t *len);

/* Sets the route label reported to the observer (a static string). */
void syncd_http_set_route(syncd_http_req_t *req, const char *route);

/* Attaches handler state to req. */
void syncd_http_set_data(syncd_http_req_t *req, void *data);

/* Returns what syncd_http_set_data() attached, or NULL. */
void *syncd_http_data(const syncd_http_req_t *req);

/* Called once when req's connection closes before req is finished. */
typedef void (*syncd_http_gone_cb)(syncd_http_req_t *req);

/* Sets the callback for a closed connection (streamed responses use it to
 * stop producing and finish the request). */
void syncd_http_on_gone(syncd_http_req_t *req, syncd_http_gone_cb cb);

/* Returns 1 when req's connection is gone, else 0. */
int syncd_http_gone(const syncd_http_req_t *req);

/* ---- Responses ------------------------------------------------------- */

/* Sends a complete response and finishes req. headers is "" or extra
 * header lines, each ending in "\r\n" (copied); body (len bytes, copied)
 * goes out with Content-Type content_type (NULL: none). */
void syncd_http_respond(syncd_http_req_t *req, int status,
                        const char *content_type, const char *headers,
                        const char *body, size_t len);

/* Sends {"error":code,"message":message} with status and finishes req. */
void syncd_http_respond_error(syncd_http_req_t *req, int status,
                              const char *code, const char *message);

/* Starts a chunked response (for server-sent events); finish it with
 * syncd_http_stream_end(). */
void syncd_http_stream_start(syncd_http_req_t *req, int status,
                             const char *content_type, const char *headers);

/* Sends len bytes as one chunk of a started response. */
void syncd_http_stream_write(syncd_http_req_t *req, const char *data,
                             size_t len);

/* Returns the bytes of req's response not yet handed to the kernel. */
size_t syncd_http_stream_backlog(const syncd_http_req_t *req);

/* Called once the bytes of a streamed response are handed to the kernel. */
typedef void (*syncd_http_drained_cb)(syncd_http_req_t *req);

/* Asks for cb once every byte written so far to req's started response has
 * been handed to the kernel (backpressure for a producer that must not
 * buffer ahead of a slow client). Returns 1 when cb will be called, 0 when
 * nothing is waiting (cb is not called; write on). A connection that goes
 * away first calls the gone callback instead. */
int syncd_http_on_drained(syncd_http_req_t *req, syncd_http_drained_cb cb);

/* Ends a started response and finishes req. */
void syncd_http_stream_end(syncd_http_req_t *req);

#endif
