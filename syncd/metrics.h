/* metrics.h - the daemon's counters and their Prometheus text rendering.
 *
 * The daemon's own counters (requests by route and status, the watch
 * propagation latency histogram, open watchers) live here; the store, bus
 * and node counters are read from those modules when /metrics renders.
 * Used from the loop's thread only.
 */
#ifndef SYNCD_METRICS_H
#define SYNCD_METRICS_H

#include <stddef.h>

#include "syncd/bus.h"
#include "syncd/node.h"
#include "syncd/store.h"

typedef struct syncd_metrics syncd_metrics_t;

/* Everything /metrics reports besides the daemon's own counters. */
typedef struct syncd_metrics_view {
    syncd_store_stats_t store;
    syncd_bus_stats_t bus;
    syncd_node_stats_t node;
    int bus_connected;
    int connections;
} syncd_metrics_view_t;

/* Returns new, zeroed metrics (free with syncd_metrics_free()), or NULL on
 * out of memory. */
syncd_metrics_t *syncd_metrics_new(void);

/* Frees m; NULL ignored. */
void syncd_metrics_free(syncd_metrics_t *m);

/* Counts one response of route (a static string) with status. */
void syncd_metrics_request(syncd_metrics_t *m, const char *route, int status);

/* Records one event's propagation latency (commit to watcher delivery). */
void syncd_metrics_latency(syncd_metrics_t *m, double seconds);

/* Adds delta to the number of open watchers. */
void syncd_metrics_watchers(syncd_metrics_t *m, int delta);

/* Renders every metric in Prometheus text format into a malloc'd string
 * (caller frees) with its length in *len; NULL on out of memory. */
char *syncd_metrics_render(const syncd_metrics_t *m,
                           const syncd_metrics_view_t *view, size_t *len);

#endif
