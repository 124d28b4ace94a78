/* metrics.c - counters of the daemon and the Prometheus text format.
 *
 * Request counters are a small table keyed by (route, status): routes are
 * a fixed set of static strings and few statuses occur, so a linear scan
 * is cheap. The latency histogram uses fixed buckets from 0.5 ms to 10 s.
 */
#include "metrics.h"

#include <malloc.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"

#define MAX_REQUEST_SERIES 256

static const double buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                 0.025,  0.05,  0.1,    0.25,  0.5,
                                 1,      2.5,   5,      10};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

typedef struct series {
    const char *route;
    int status;
    uint64_t count;
} series_t;

struct syncd_metrics {
    series_t requests[MAX_REQUEST_SERIES];
    size_t nrequests;
    uint64_t latency_buckets[NBUCKETS];
    uint64_t latency_count;
    double latency_sum;
    int64_t watchers;
};

syncd_metrics_t *syncd_metrics_new(void)
{
    return calloc(1, sizeof(syncd_metrics_t));
}

void syncd_metrics_free(syncd_metrics_t *m)
{
    free(m);
}

void syncd_metrics_request(syncd_metrics_t *m, const char *route, int status)
{
    size_t i;

    for (i = 0; i < m->nrequests; i++) {
        if (m->requests[i].status == status &&
            strcmp(m->requests[i].route, route) == 0) {
            m->requests[i].count++;
            return;
        }
    }
    if (m->nrequests < MAX_REQUEST_SERIES)
        m->requests[m->nrequests++] = (series_t){route, status, 1};
}

void syncd_metrics_latency(syncd_metrics_t *m, double seconds)
{
    size_t i;

    if (seconds < 0)
        seconds = 0;
    for (i = 0; i < NBUCKETS; i++)
        if (seconds <= buckets[i])
            m->latency_buckets[i]++;
    m->latency_count++;
    m->latency_sum += seconds;
}

void syncd_metrics_watchers(syncd_metrics_t *m, int delta)
{
    m->watchers += delta;
}

/* The text being rendered; failed sticks after the first error. */
typedef struct out {
    syncd_buf_t buf;
    int failed;
} out_t;

static void emit(out_t *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void emit(out_t *o, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    if (syncd_buf_vprintf(&o->buf, fmt, ap) < 0)
        o->failed = 1;
    va_end(ap);
}

/* Emits one counter or gauge with its HELP and TYPE lines. */
static void metric(out_t *o, const char *name, const char *type,
                   const char *help, uint64_t value)
{
    emit(o, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type,
         name, (unsigned long long)value);
}

/* Emits one labelled sample of a family declared before. */
static void sample(out_t *o, const char *name, const char *label,
                   const char *value, uint64_t n)
{
    emit(o, "%s{%s=\"%s\"} %llu\n", name, label, value, (unsigned long long)n);
}

static void family(out_t *o, const char *name, const char *type,
                   const char *help)
{
    emit(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Emits the RocksDB and heap memory gauges: what a growing RSS is made of. */
static void memory(out_t *o, const syncd_store_stats_t *s)
{
    struct mallinfo2 mi = mallinfo2();

    family(o, "syncd_rocksdb_memory_bytes", "gauge",
           "Memory of the store's RocksDB databases (the embedded store of "
           "record, the node cache), by kind; allocated from the C heap, so "
           "part of syncd_heap_bytes.");
    sample(o, "syncd_rocksdb_memory_bytes", "kind", "memtables",
           s->rocks_memtable_bytes);
    sample(o, "syncd_rocksdb_memory_bytes", "kind", "table_readers",
           s->rocks_table_reader_bytes);
    sample(o, "syncd_rocksdb_memory_bytes", "kind", "block_cache",
           s->rocks_block_cache_bytes);
    family(o, "syncd_heap_bytes", "gauge",
           "The C heap (glibc malloc, every arena): bytes in use (glibc "
           "counts the freed chunks its per-thread caches keep as in use), "
           "bytes free in the arenas but not returned to the system, and "
           "bytes in blocks of their own (mmap).");
    sample(o, "syncd_heap_bytes", "kind", "in_use", mi.uordblks);
    sample(o, "syncd_heap_bytes", "kind", "free", mi.fordblks);
    sample(o, "syncd_heap_bytes", "kind", "mapped", mi.hblkhd);
}

char *syncd_metrics_render(const syncd_metrics_t *m,
                           const syncd_metrics_view_t *v, size_t *len)
{
    out_t o = {0};
    size_t i;

    family(&o, "syncd_http_requests_total", "counter",
           "HTTP responses by route and status code.");
    for (i = 0; i < m->nrequests; i++)
        emit(&o, "syncd_http_requests_total{route=\"%s\",code=\"%d\"} %llu\n",
             m->requests[i].route, m->requests[i].status,
             (unsigned long long)m->requests[i].count);
    metric(&o, "syncd_http_connections", "gauge", "Open HTTP connections.",
           (uint64_t)v->connections);
    metric(&o, "syncd_edits_total", "counter", "Committed edits.",
           v->store.edits);
    metric(&o, "syncd_edit_conflicts_total", "counter",
           "Compare-and-swap conflicts of edits.", v->store.conflicts);
    metric(&o, "syncd_edit_retries_total", "counter",
           "Edit attempts retried after a conflict.", v->store.retries);
    metric(&o, "syncd_events_published_total", "counter",
           "Events published on the bus.", v->bus.published);
    metric(&o, "syncd_events_received_total", "counter",
           "Events the bus delivered to this node.", v->node.events_received);
    metric(&o, "syncd_events_applied_total", "counter",
           "Events applied to this node's view.", v->node.events_applied);
    metric(&o, "syncd_events_replayed_total", "counter",
           "Events read back from the replay log.", v->bus.replayed);
    family(&o, "syncd_events_dropped_total", "counter",
           "Events dropped, by reason.");
    sample(&o, "syncd_events_dropped_total", "reason", "duplicate",
           v->node.events_dropped_duplicate + v->bus.dropped_duplicate);
    sample(&o, "syncd_events_dropped_total", "reason", "old",
           v->node.events_dropped_old);
    sample(&o, "syncd_events_dropped_total", "reason", "uncached",
           v->node.events_ignored_uncached);
    sample(&o, "syncd_events_dropped_total", "reason", "malformed",
           v->bus.dropped_malformed);
    sample(&o, "syncd_events_dropped_total", "reason", "oversize",
           v->bus.dropped_oversize);
    sample(&o, "syncd_events_dropped_total", "reason", "signature",
           v->bus.dropped_signature);
    metric(&o, "syncd_bus_gaps_total", "counter",
           "Sequence gaps filled from the replay log.", v->bus.gaps);
    metric(&o, "syncd_bus_reconnects_total", "counter",
           "Reconnects of the bus.", v->bus.reconnects);
    metric(&o, "syncd_bus_connected", "gauge", "1 while the bus is connected.",
           (uint64_t)v->bus_connected);
    metric(&o, "syncd_refetches_total", "counter",
           "Documents refetched from the store.", v->node.refetches);
    metric(&o, "syncd_hash_mismatches_total", "counter",
           "Patched documents whose hash did not match the event.",
           v->node.hash_mismatches);
    /* The bus counts the resyncs it signals and the node those it runs:
     * the same ones, so only the node's are reported. */
    metric(&o, "syncd_resyncs_total", "counter",
           "Collection resyncs from the store.", v->node.resyncs);
    metric(&o, "syncd_anti_entropy_runs_total", "counter",
           "Anti-entropy passes.", v->node.anti_entropy_runs);
    metric(&o, "syncd_anti_entropy_repairs_total", "counter",
           "Documents repaired by anti-entropy.", v->node.anti_entropy_repairs);
    metric(&o, "syncd_tombstones_purged_total", "counter",
           "Tombstones purged past --tombstone-ttl.",
           v->node.tombstones_purged);
    metric(&o, "syncd_purged_ids_forgotten_total", "counter",
           "Deduplication records of purged ids dropped from the bus.",
           v->node.purged_ids_forgotten);
    metric(&o, "syncd_bus_forget_failures_total", "counter",
           "Requests to drop the bus records of purged ids that failed (the "
           "records stay).",
           v->node.forget_failures);
    metric(&o, "syncd_cache_hits_total", "counter", "Cache hits.",
           v->store.cache_hits);
    metric(&o, "syncd_cache_misses_total", "counter", "Cache misses.",
           v->store.cache_misses);
    metric(&o, "syncd_cache_evictions_total", "counter", "Cache evictions.",
           v->store.cache_evictions);
    metric(&o, "syncd_cache_bytes", "gauge",
           "Bytes held by the node cache: cached records plus the decoded "
           "in-memory tier (embedded: the tier alone).",
           v->store.cache_bytes);
    metric(&o, "syncd_cache_entries", "gauge", "Cached documents.",
           v->store.cache_entries);
    metric(&o, "syncd_cache_writes_total", "counter",
           "Records the node cache wrote to or deleted from its RocksDB "
           "(written behind: a document at most once a second).",
           v->store.cache_writes);
    memory(&o, &v->store);
    metric(&o, "syncd_collections", "gauge",
           "Collections this node holds state for (subscription, queue).",
           v->node.collections);
    metric(&o, "syncd_apply_queue_events", "gauge",
           "Received events waiting to be applied, over every collection.",
           v->node.apply_queued);
    metric(&o, "syncd_apply_queue_peak_events", "gauge",
           "Most events one collection's apply queue has held.",
           v->node.apply_queue_peak);
    metric(&o, "syncd_apply_queue_overflows_total", "counter",
           "Apply queues that passed --max-apply-queue: each one a resync "
           "of its collection.",
           v->node.apply_queue_overflows);
    metric(&o, "syncd_publish_waits_expired_total", "counter",
           "Events of writes that waited their longest (1 s) for the events "
           "of earlier versions this node committed and went without them.",
           v->node.publish_waits_expired);
    metric(&o, "syncd_watchers", "gauge", "Open watch streams.",
           (uint64_t)(m->watchers > 0 ? m->watchers : 0));
    metric(&o, "syncd_watch_resyncs_total", "counter",
           "Watchers told to resync.", v->node.watch_resyncs);
    family(&o, "syncd_propagation_seconds", "histogram",
           "From an event's commit time (ts) to its delivery to a watcher "
           "of this node.");
    for (i = 0; i < NBUCKETS; i++)
        emit(&o, "syncd_propagation_seconds_bucket{le=\"%g\"} %llu\n",
             buckets[i], (unsigned long long)m->latency_buckets[i]);
    emit(&o,
         "syncd_propagation_seconds_bucket{le=\"+Inf\"} %llu\n"
         "syncd_propagation_seconds_sum %.6f\n"
         "syncd_propagation_seconds_count %llu\n",
         (unsigned long long)m->latency_count, m->latency_sum,
         (unsigned long long)m->latency_count);
    if (o.failed) {
        syncd_buf_free(&o.buf);
        return NULL;
    }
    *len = o.buf.len;
    return o.buf.data;
}
