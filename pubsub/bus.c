/* bus.c - the change bus interface: options, dispatch, subscriptions.
 *
 * Everything the two implementations have in common lives here: option
 * defaults and checks, the preparation of a published event (strip "seq"
 * and "sig", validate, sign, encode, bound its size), the decoding and
 * counting of received events, and the subscription bookkeeping (reference
 * counts, deferred unlinking, delivery with the last-seq update). The
 * implementation is chosen once in syncd_bus_open() and reached through the
 * bus_ops_t table.
 *
 * Request convention: a call that returns a negative code never calls its
 * callback; a call that returns 0 calls it exactly once, from the loop,
 * never from inside the call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pubsub/internal.h"

/* Room for the "seq":N, the bus splices into a published event. */
#define SEQ_SPLICE_BYTES 32

void syncd_bus_options_init(syncd_bus_options_t *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->database = "syncd";
    opts->node_id = "local";
    opts->event_log_len = 100000;
    opts->max_event_bytes = 1024 * 1024;
    opts->reconnect_min_ms = 100;
    opts->reconnect_max_ms = 5000;
}

static int check_options(const syncd_bus_options_t *opts, syncd_error_t *err)
{
    if (opts->database == NULL || !bus_name_valid(opts->database))
        return syncd_error_set(err, SYNCD_EINVAL,
                               "bus database \"%s\" is not a valid name",
                               opts->database ? opts->database : "(null)");
    if (opts->node_id == NULL || opts->node_id[0] == '\0' ||
        strlen(opts->node_id) >= sizeof(((syncd_bus_t *)0)->node_id))
        return syncd_error_set(err, SYNCD_EINVAL,
                               "bus node id is empty or too long");
    if (opts->secret != NULL && opts->secret[0] == '\0')
        return syncd_error_set(err, SYNCD_EINVAL, "bus secret is empty");
    if (opts->event_log_len < 1)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "bus event_log_len must be at least 1");
    if (opts->max_event_bytes < 256)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "bus max_event_bytes %zu is below 256",
                               opts->max_event_bytes);
    if (opts->reconnect_min_ms < 1 ||
        opts->reconnect_max_ms < opts->reconnect_min_ms)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "bus reconnect backoff %lld..%lld ms is "
                               "not a valid range",
                               (long long)opts->reconnect_min_ms,
                               (long long)opts->reconnect_max_ms);
    return 0;
}

int bus_init(syncd_bus_t *bus, const bus_ops_t *ops, uv_loop_t *loop,
             const syncd_bus_options_t *opts, syncd_error_t *err)
{
    bus->ops = ops;
    bus->loop = loop;
    snprintf(bus->database, sizeof(bus->database), "%s", opts->database);
    snprintf(bus->node_id, sizeof(bus->node_id), "%s", opts->node_id);
    bus->event_log_len = opts->event_log_len;
    bus->max_event_bytes = opts->max_event_bytes;
    bus->reconnect_min_ms = opts->reconnect_min_ms;
    bus->reconnect_max_ms = opts->reconnect_max_ms;
    if (opts->secret != NULL && (bus->secret = strdup(opts->secret)) == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "copying the bus secret");
    return 0;
}

void bus_finish_close(syncd_bus_t *bus)
{
    syncd_bus_close_cb cb = bus->close_cb;
    void *payload = bus->close_payload;

    free(bus->secret);
    bus->secret = NULL;
    if (cb != NULL)
        cb(payload);
}

int syncd_bus_open(syncd_bus_t **out, uv_loop_t *loop,
                   const syncd_bus_options_t *opts, syncd_error_t *err)
{
    int rc;

    *out = NULL;
    if (loop == NULL || opts == NULL)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "bus needs a loop and "
                               "options");
    rc = check_options(opts, err);
    if (rc != 0)
        return rc;
    if (opts->redis_url != NULL)
        return bus_redis_open(out, loop, opts, err);
    return bus_local_open(out, loop, opts, err);
}

void bus_enter(syncd_bus_t *bus)
{
    bus->depth++;
}

void bus_leave(syncd_bus_t *bus)
{
    if (--bus->depth > 0)
        return;
    bus->ops->sweep(bus);
    if (bus->closing && !bus->closed) {
        bus->closed = 1;
        bus->ops->close(bus);
    }
}

void syncd_bus_close(syncd_bus_t *bus, syncd_bus_close_cb cb, void *payload)
{
    if (bus == NULL || bus->closing)
        return;
    bus->closing = 1;
    bus->close_cb = cb;
    bus->close_payload = payload;
    if (bus->depth == 0) {
        bus->closed = 1;
        bus->ops->close(bus);
    }
}

const char *syncd_bus_kind(const syncd_bus_t *bus)
{
    return bus->ops->kind;
}

int syncd_bus_connected(const syncd_bus_t *bus)
{
    return !bus->closing && bus->ops->connected(bus);
}

int syncd_bus_publish(syncd_bus_t *bus, const json_t *event,
                      syncd_bus_publish_cb cb, void *payload)
{
    json_t *copy = NULL;
    char *body = NULL;
    size_t len = 0;
    int rc;

    if (bus->closing)
        return SYNCD_ECANCELED;
    if (!json_is_object(event))
        return SYNCD_EINVAL;
    copy = json_copy((json_t *)event);
    if (copy == NULL)
        return SYNCD_ENOMEM;
    json_object_del(copy, "seq");
    json_object_del(copy, "sig");
    rc = bus_event_check(copy, 0, 0, NULL);
    if (rc != 0)
        goto cleanup;
    body = syncd_event_encode(copy, bus->secret, &len);
    if (body == NULL) {
        rc = SYNCD_ENOMEM;
        goto cleanup;
    }
    if (len + SEQ_SPLICE_BYTES > bus->max_event_bytes) {
        rc = SYNCD_ETOOBIG;
        goto cleanup;
    }
    rc =
        bus->ops->publish(bus, json_string_value(json_object_get(copy, "coll")),
                          body, len, cb, payload);
    body = NULL;

cleanup:
    free(body);
    json_decref(copy);
    return rc;
}

int syncd_bus_subscribe(syncd_bus_t *bus, syncd_bus_sub_t **out,
                        const char *coll, int64_t after, syncd_bus_event_cb cb,
                        void *payload, syncd_error_t *err)
{
    syncd_bus_sub_t *sub;
    int rc;

    *out = NULL;
    if (bus->closing)
        return syncd_error_set(err, SYNCD_ECANCELED, "the bus is closing");
    if (coll == NULL || !bus_name_valid(coll))
        return syncd_error_set(err, SYNCD_EINVAL,
                               "\"%s\" is not a valid collection name",
                               coll ? coll : "(null)");
    if (cb == NULL)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "subscribe needs a "
                               "callback");
    sub = calloc(1, sizeof(*sub));
    if (sub == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM,
                               "allocating a "
                               "subscription");
    sub->bus = bus;
    snprintf(sub->coll, sizeof(sub->coll), "%s", coll);
    sub->last = after < 0 ? -1 : after;
    sub->refs = 1;
    sub->catching = 1;
    sub->cb = cb;
    sub->payload = payload;
    rc = bus->ops->subscribe(bus, sub, err);
    if (rc != 0) {
        free(sub);
        return rc;
    }
    *out = sub;
    return 0;
}

void syncd_bus_unsubscribe(syncd_bus_sub_t *sub)
{
    if (sub == NULL || sub->dead)
        return;
    sub->dead = 1;
    if (sub->bus->depth == 0)
        sub->bus->ops->sweep(sub->bus);
}

void bus_sub_ref(syncd_bus_sub_t *sub)
{
    sub->refs++;
}

void bus_sub_unref(syncd_bus_sub_t *sub)
{
    if (--sub->refs == 0)
        free(sub);
}

void bus_subs_sweep(syncd_bus_sub_t **list)
{
    while (*list != NULL) {
        syncd_bus_sub_t *sub = *list;

        if (sub->dead) {
            *list = sub->next;
            bus_sub_unref(sub);
        } else {
            list = &sub->next;
        }
    }
}

void bus_subs_release(syncd_bus_sub_t **list)
{
    while (*list != NULL) {
        syncd_bus_sub_t *sub = *list;

        *list = sub->next;
        bus_sub_unref(sub);
    }
}

int bus_sub_live(const syncd_bus_sub_t *sub)
{
    return !sub->dead && !sub->bus->closing;
}

int bus_deliver(syncd_bus_sub_t *sub, syncd_bus_signal_t signal, int64_t seq,
                const json_t *event)
{
    if (!bus_sub_live(sub))
        return 0;
    sub->last = seq;
    if (signal == SYNCD_BUS_RESYNC)
        sub->bus->stats.resyncs++;
    sub->cb(signal, seq, event, sub->payload);
    return bus_sub_live(sub);
}

int bus_receive(syncd_bus_t *bus, json_t **out, const char *data, size_t len)
{
    int rc =
        syncd_event_decode(out, data, len, bus->max_event_bytes, NULL, NULL);

    if (rc == SYNCD_ETOOBIG)
        bus->stats.dropped_oversize++;
    else if (rc != 0)
        bus->stats.dropped_malformed++;
    else if (bus->secret != NULL &&
             (rc = bus_event_verify(*out, bus->secret, NULL)) != 0) {
        bus->stats.dropped_signature++;
        json_decref(*out);
        *out = NULL;
    }
    return rc;
}

int syncd_bus_replay(syncd_bus_t *bus, const char *coll, int64_t after,
                     int64_t until, size_t max, syncd_bus_replay_cb cb,
                     void *payload)
{
    if (bus->closing)
        return SYNCD_ECANCELED;
    if (coll == NULL || !bus_name_valid(coll) || after < 0 || cb == NULL)
        return SYNCD_EINVAL;
    return bus->ops->replay(bus, coll, after, until, max, cb, payload);
}

int syncd_bus_seq(syncd_bus_t *bus, const char *coll, syncd_bus_seq_cb cb,
                  void *payload)
{
    if (bus->closing)
        return SYNCD_ECANCELED;
    if (coll == NULL || !bus_name_valid(coll) || cb == NULL)
        return SYNCD_EINVAL;
    return bus->ops->seq(bus, coll, cb, payload);
}

void syncd_bus_stats(const syncd_bus_t *bus, syncd_bus_stats_t *out)
{
    *out = bus->stats;
}
