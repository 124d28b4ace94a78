/* api.h - the HTTP API of DESIGN.md section 5 over one node.
 *
 * The API is the HTTP server's handler: it routes requests, validates
 * collections, ids, headers and bodies, runs store calls on the libuv
 * thread pool, publishes committed changes through the node, and serves
 * watch streams as server-sent events. Used from the loop's thread only.
 */
#ifndef SYNCD_API_H
#define SYNCD_API_H

#include <uv.h>

#include "syncd/bus.h"
#include "syncd/node.h"
#include "syncd/store.h"

#include "config.h"
#include "http.h"
#include "members.h"
#include "metrics.h"

typedef struct syncd_api syncd_api_t;

/* What the API serves; everything is borrowed and must outlive the API. */
typedef struct syncd_api_options {
    uv_loop_t *loop;
    const syncd_config_t *cfg;
    const char *node_id;
    syncd_store_t *store;
    syncd_bus_t *bus;
    syncd_node_t *node;
    syncd_metrics_t *metrics;
    syncd_members_t *members;  /* GET /v1/nodes and the node metrics */
    const json_t *start_check; /* the report of syncd_atstart_run(): its
                                  refused collections get 503, /v1/health
                                  shows it; NULL: none */
} syncd_api_options_t;

/* Creates the API into *out (freed with syncd_api_free()); SYNCD_ENOMEM. */
int syncd_api_new(syncd_api_t **out, const syncd_api_options_t *opts);

/* Tells the API which server it serves (for the connection gauge). */
void syncd_api_set_server(syncd_api_t *api, syncd_http_server_t *srv);

/* The syncd_http_handler_fn of the API; data is the syncd_api_t. */
void syncd_api_handle(syncd_http_req_t *req, void *data);

/* The syncd_http_observe_fn of the API: counts responses in metrics. */
void syncd_api_observe(const char *route, int status, void *data);

/* The syncd_http_cors_fn of the API: the console of any live node of the
 * cluster (its advertised URL is origin) may read this node's API. */
int syncd_api_cors(const char *origin, void *data);

/* Makes the API answer new requests with 503 and calls cb (once) when no
 * store call or publish is in flight any more. */
void syncd_api_quiesce(syncd_api_t *api, void (*cb)(void *payload),
                       void *payload);

/* Frees the API; no request may be in flight (see syncd_api_quiesce()). */
void syncd_api_free(syncd_api_t *api);

#endif
