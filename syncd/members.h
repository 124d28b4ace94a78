/* members.h - node membership: this node's heartbeats on the bus, the live
 * nodes of GET /v1/nodes, and their metrics.
 *
 * Every heartbeat interval the node announces itself on the bus (id,
 * advertised URL, version, start time, and the last applied seq of the
 * collections it holds, at most SYNCD_MEMBERS_MAX_COLLECTIONS of them, the
 * most recently active first) with a TTL of three intervals, and every
 * quarter interval it reads the live nodes, logging "node <id> joined" and
 * "node <id> gone (last heartbeat <t>)" as peers appear and lapse. Used
 * from the loop's thread only; nothing blocks: every bus call is
 * asynchronous, and a failed heartbeat is logged (rate-limited) and
 * retried at the next tick.
 */
#ifndef SYNCD_MEMBERS_H
#define SYNCD_MEMBERS_H

#include <stdint.h>
#include <uv.h>

#include "syncd/bus.h"
#include "syncd/error.h"
#include "syncd/node.h"

#include "base/buf.h"
#include "http.h"

/* Collections named in one heartbeat, at most. */
#define SYNCD_MEMBERS_MAX_COLLECTIONS 1000

typedef struct syncd_members syncd_members_t;

/* What membership runs over; everything is borrowed for the life of the
 * members (strings are copied). */
typedef struct syncd_members_options {
    uv_loop_t *loop;
    syncd_bus_t *bus;
    syncd_node_t *node;
    const char *node_id;
    const char *url;     /* the advertised URL */
    const char *version; /* the syncd version */
    int64_t interval_ms; /* heartbeat period, at least 1 ms */
} syncd_members_options_t;

/* Starts heartbeats (the first one at once) into *out. SYNCD_EINVAL for
 * bad options, SYNCD_ENOMEM. Stop with syncd_members_stop(), free with
 * syncd_members_free() once the bus is closed. */
int syncd_members_start(syncd_members_t **out,
                        const syncd_members_options_t *opts,
                        syncd_error_t *err);

/* Stops the timers; requests in flight end when the bus closes. */
void syncd_members_stop(syncd_members_t *m);

/* Frees m after the loop ran dry (its timers closed, the bus closed);
 * NULL ignored. */
void syncd_members_free(syncd_members_t *m);

/* Answers GET /v1/nodes on req from a fresh read of the bus: {"self":id,
 * "nodes":[{id, url, version, started, last_heartbeat, age_ms,
 * collections:{c:{seq, newest, lag}}}]} sorted by id; 503 when the bus
 * cannot answer. */
void syncd_members_serve(syncd_members_t *m, syncd_http_req_t *req);

/* Returns 1 when origin ("http://host:port", no path) is the advertised
 * URL of this node or of a live node of the last read (a trailing slash of
 * the URL ignored), else 0; m may be NULL (no membership: 0). */
int syncd_members_knows_url(const syncd_members_t *m, const char *origin);

/* Appends syncd_nodes_live and syncd_node_lag{node,collection} of the
 * last read to out in Prometheus text format; 0 or SYNCD_ENOMEM. */
int syncd_members_metrics(const syncd_members_t *m, syncd_buf_t *out);

#endif
