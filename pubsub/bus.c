/* bus.c - the change bus interface: options, dispatch, subscriptions.
 *
 * Everything the two implementations have in common lives here: option
 * defaults and checks, the preparation of a published event (strip "seq"
 * and "sig", validate, sign, encode, bound its size), the decoding and
 * counting of received events, and the subscription bookkeeping (reference
 * counts, deferred unlinking, delivery with the last-seq update). The
 * implementation is chosen once in syncd_bus_open() and reached through the
 * bus_ops_t table. Also here: the deduplication rule both implementations
 * apply, and the hash table of collection records they both use.
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
    opts->block_cache_bytes = (uint64_t)8 << 20;
    opts->max_event_bytes = 1024 * 1024;
    opts->reconnect_min_ms = 100;
    opts->reconnect_max_ms = 5000;
    opts->command_timeout_ms = 2000;
}

static int check_options(const syncd_bus_options_t *opts, syncd_error_t *err)
{
    if (opts->database == NULL || !syncd_bus_name_valid(opts->database))
        return syncd_error_set(err, SYNCD_EINVAL,
                               "bus database \"%s\" is not a valid name",
                               opts->database ? opts->database : "(null)");
    if (opts->node_id == NULL || opts->node_id[0] == '\0' ||
        strlen(opts->node_id) >= sizeof(((syncd_bus_t *)0)->node_id))
        return syncd_error_set(err, SYNCD_EINVAL,
                               "bus node id is empty or too long");
    if (opts->secret != NULL &&
        (opts->secret[0] == '\0' || opts->secret[0] == ',' ||
         strstr(opts->secret, ",,") != NULL ||
         opts->secret[strlen(opts->secret) - 1] == ','))
        return syncd_error_set(err, SYNCD_EINVAL,
                               "bus secret is empty or has an empty key");
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
    if (opts->command_timeout_ms < 1)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "bus command timeout (--bus-timeout) %lld ms "
                               "is below 1 ms",
                               (long long)opts->command_timeout_ms);
    return 0;
}

int syncd_bus_init(syncd_bus_t *bus, const bus_ops_t *ops, uv_loop_t *loop,
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
    bus->command_timeout_ms = opts->command_timeout_ms;
    if (opts->secret != NULL && (bus->secret = strdup(opts->secret)) == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "copying the bus secret");
    return 0;
}

void syncd_bus_finish_close(syncd_bus_t *bus)
{
    syncd_bus_close_cb cb = bus->close_cb;
    void *payload = bus->close_payload;

    free(bus->secret);
    bus->secret = NULL;
    while (bus->dead != NULL)
        syncd_bus_sub_unref(syncd_bus_dead_pop(bus));
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
        return syncd_bus_redis_open(out, loop, opts, err);
    return syncd_bus_local_open(out, loop, opts, err);
}

void syncd_bus_enter(syncd_bus_t *bus)
{
    bus->depth++;
}

void syncd_bus_leave(syncd_bus_t *bus)
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
    return syncd_bus_publish_in_order(bus, event, -1, cb, payload);
}

/* An event encoded for publishing (syncd_bus_encode()). */
struct syncd_bus_msg {
    char *names; /* pub's coll and id, each NUL-terminated */
    char *body;  /* its text as published */
    size_t len;
    bus_pub_t pub;
};

void syncd_bus_msg_free(syncd_bus_msg_t *msg)
{
    if (msg == NULL)
        return;
    free(msg->names);
    free(msg->body);
    free(msg);
}

/* Sets msg's pub from event (checked): its names copied, so that the
 * event may be freed. 0 or a negative code. */
static int msg_set_pub(syncd_bus_msg_t *msg, const json_t *event)
{
    const char *coll = json_string_value(json_object_get(event, "coll"));
    const char *id = json_string_value(json_object_get(event, "id"));
    size_t coll_len = strlen(coll) + 1, id_len = strlen(id) + 1;

    if (syncd_bus_ts_micros(json_string_value(json_object_get(event, "ts")),
                            &msg->pub.ts_us) != 0)
        return SYNCD_EINVAL;
    msg->names = malloc(coll_len + id_len);
    if (msg->names == NULL)
        return SYNCD_ENOMEM;
    memcpy(msg->names, coll, coll_len);
    memcpy(msg->names + coll_len, id, id_len);
    msg->pub.coll = msg->names;
    msg->pub.id = msg->names + coll_len;
    msg->pub.v = json_integer_value(json_object_get(event, "v"));
    msg->pub.create =
        strcmp(json_string_value(json_object_get(event, "op")), "create") == 0;
    return 0;
}

int syncd_bus_encode(const syncd_bus_t *bus, const json_t *event,
                     syncd_bus_msg_t **out)
{
    syncd_bus_msg_t *msg;
    json_t *copy;
    int rc;

    *out = NULL;
    if (!json_is_object(event))
        return SYNCD_EINVAL;
    msg = calloc(1, sizeof(*msg));
    if (msg == NULL || (copy = json_copy((json_t *)event)) == NULL) {
        free(msg);
        return SYNCD_ENOMEM;
    }
    json_object_del(copy, "seq");
    json_object_del(copy, "sig");
    rc = syncd_bus_event_check(copy, 0, 0, NULL);
    if (rc == 0 &&
        (msg->body = syncd_event_encode(copy, bus->secret, &msg->len)) == NULL)
        rc = SYNCD_ENOMEM;
    if (rc == 0 && msg->len + SEQ_SPLICE_BYTES > bus->max_event_bytes)
        rc = SYNCD_ETOOBIG;
    if (rc == 0)
        rc = msg_set_pub(msg, copy);
    json_decref(copy);
    if (rc != 0) {
        syncd_bus_msg_free(msg);
        return rc;
    }
    *out = msg;
    return 0;
}

int syncd_bus_publish_msg(syncd_bus_t *bus, syncd_bus_msg_t *msg,
                          int64_t settled, syncd_bus_publish_cb cb,
                          void *payload)
{
    char *body = msg->body;
    int rc;

    if (bus->closing) {
        syncd_bus_msg_free(msg);
        return SYNCD_ECANCELED;
    }
    msg->pub.settled = settled < 0 ? msg->pub.v - 1 : settled;
    msg->body = NULL;
    rc = bus->ops->publish(bus, &msg->pub, body, msg->len, cb, payload);
    syncd_bus_msg_free(msg);
    return rc;
}

int syncd_bus_publish_in_order(syncd_bus_t *bus, const json_t *event,
                               int64_t settled, syncd_bus_publish_cb cb,
                               void *payload)
{
    syncd_bus_msg_t *msg;
    int rc;

    if (bus->closing)
        return SYNCD_ECANCELED;
    rc = syncd_bus_encode(bus, event, &msg);
    if (rc != 0)
        return rc;
    return syncd_bus_publish_msg(bus, msg, settled, cb, payload);
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
    if (coll == NULL || !syncd_bus_name_valid(coll))
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
    sub->bodies = SYNCD_BUS_BODIES_ALL;
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
    syncd_bus_sub_ref(sub);
    sub->dead_next = sub->bus->dead;
    sub->bus->dead = sub;
    if (sub->bus->depth == 0)
        sub->bus->ops->sweep(sub->bus);
}

syncd_bus_sub_t *syncd_bus_dead_pop(syncd_bus_t *bus)
{
    syncd_bus_sub_t *sub = bus->dead;

    if (sub != NULL)
        bus->dead = sub->dead_next;
    return sub;
}

void syncd_bus_sub_ref(syncd_bus_sub_t *sub)
{
    sub->refs++;
}

void syncd_bus_sub_unref(syncd_bus_sub_t *sub)
{
    if (--sub->refs == 0)
        free(sub);
}

void syncd_bus_subs_sweep(syncd_bus_sub_t **list)
{
    while (*list != NULL) {
        syncd_bus_sub_t *sub = *list;

        if (sub->dead) {
            *list = sub->next;
            syncd_bus_sub_unref(sub);
        } else {
            list = &sub->next;
        }
    }
}

void syncd_bus_subs_release(syncd_bus_sub_t **list)
{
    while (*list != NULL) {
        syncd_bus_sub_t *sub = *list;

        *list = sub->next;
        syncd_bus_sub_unref(sub);
    }
}

int syncd_bus_sub_live(const syncd_bus_sub_t *sub)
{
    return !sub->dead && !sub->bus->closing;
}

void syncd_bus_sub_want_bodies(syncd_bus_sub_t *sub, syncd_bus_bodies_t want)
{
    sub->bodies = want;
}

int syncd_bus_deliver(syncd_bus_sub_t *sub, syncd_bus_signal_t signal,
                      int64_t seq, const json_t *event)
{
    if (!syncd_bus_sub_live(sub))
        return 0;
    sub->last = seq;
    if (signal == SYNCD_BUS_RESYNC)
        sub->bus->stats.resyncs++;
    sub->cb(signal, seq, event, sub->payload);
    return syncd_bus_sub_live(sub);
}

int syncd_bus_receive(syncd_bus_t *bus, json_t **out, const char *data,
                      size_t len)
{
    int forged;
    int rc = syncd_bus_event_decode(out, data, len, bus->max_event_bytes,
                                    bus->secret, &forged, NULL);

    if (rc == SYNCD_ETOOBIG)
        bus->stats.dropped_oversize++;
    else if (forged)
        bus->stats.dropped_signature++;
    else if (rc != 0)
        bus->stats.dropped_malformed++;
    return rc;
}

int syncd_bus_replay(syncd_bus_t *bus, const char *coll, int64_t after,
                     int64_t until, size_t max, syncd_bus_replay_cb cb,
                     void *payload)
{
    if (bus->closing)
        return SYNCD_ECANCELED;
    if (coll == NULL || !syncd_bus_name_valid(coll) || after < 0 || cb == NULL)
        return SYNCD_EINVAL;
    return bus->ops->replay(bus, coll, after, until, max, cb, payload);
}

int syncd_bus_seq(syncd_bus_t *bus, const char *coll, syncd_bus_seq_cb cb,
                  void *payload)
{
    if (bus->closing)
        return SYNCD_ECANCELED;
    if (coll == NULL || !syncd_bus_name_valid(coll) || cb == NULL)
        return SYNCD_EINVAL;
    return bus->ops->seq(bus, coll, cb, payload);
}

int syncd_bus_forget(syncd_bus_t *bus, const char *coll, const json_t *gone,
                     syncd_bus_forget_cb cb, void *payload)
{
    const char *id;
    json_t *v;

    if (bus->closing)
        return SYNCD_ECANCELED;
    if (coll == NULL || !syncd_bus_name_valid(coll) || !json_is_object(gone) ||
        json_object_size(gone) == 0 ||
        json_object_size(gone) > SYNCD_BUS_MAX_FORGET || cb == NULL)
        return SYNCD_EINVAL;
    json_object_foreach ((json_t *)gone, id, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            !syncd_bus_id_valid(id, strlen(id)))
            return SYNCD_EINVAL;
    }
    return bus->ops->forget(bus, coll, gone, cb, payload);
}

int syncd_bus_heartbeat(syncd_bus_t *bus, const json_t *beat, int64_t ttl_ms,
                        syncd_bus_heartbeat_cb cb, void *payload)
{
    char *body;

    if (bus->closing)
        return SYNCD_ECANCELED;
    if (!json_is_object(beat) ||
        !json_is_object(json_object_get(beat, "collections")) || ttl_ms < 1 ||
        cb == NULL)
        return SYNCD_EINVAL;
    body = json_dumps(beat, JSON_COMPACT);
    if (body == NULL)
        return SYNCD_ENOMEM;
    if (strlen(body) > SYNCD_BUS_MAX_BEAT_BYTES) {
        free(body);
        return SYNCD_ETOOBIG;
    }
    return bus->ops->heartbeat(bus, beat, body, strlen(body), ttl_ms, cb,
                               payload);
}

int syncd_bus_members(syncd_bus_t *bus, syncd_bus_members_cb cb, void *payload)
{
    if (bus->closing)
        return SYNCD_ECANCELED;
    if (cb == NULL)
        return SYNCD_EINVAL;
    return bus->ops->members(bus, cb, payload);
}

void syncd_bus_stats(const syncd_bus_t *bus, syncd_bus_stats_t *out)
{
    *out = bus->stats;
}

int syncd_bus_pub_check(const bus_pub_t *pub, int64_t v, int64_t ts_us)
{
    if (pub->v <= v)
        return pub->create && pub->ts_us > ts_us ? BUS_PUB_SEND
                                                 : BUS_PUB_DUPLICATE;
    if (pub->v - 1 > v && pub->v - 1 > pub->settled)
        return BUS_PUB_EARLY;
    return BUS_PUB_SEND;
}

/* ---- Collection table ---------------------------------------------------- */

/* Fewest buckets; the table shrinks back to this. */
#define MAP_MIN_BUCKETS 16

/* FNV-1a of name. */
static size_t map_hash(const char *name)
{
    uint64_t h = 14695981039346656037ull;

    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return (size_t)h;
}

/* Rehashes map into n buckets; on ENOMEM map stays as it was. */
static void map_resize(bus_map_t *map, size_t n)
{
    bus_map_entry_t **buckets = calloc(n, sizeof(*buckets));

    if (buckets == NULL)
        return;
    for (size_t i = 0; i < map->nbuckets; i++) {
        while (map->buckets[i] != NULL) {
            bus_map_entry_t *e = map->buckets[i];
            size_t b = map_hash(e->name) % n;

            map->buckets[i] = e->next;
            e->next = buckets[b];
            buckets[b] = e;
        }
    }
    free(map->buckets);
    map->buckets = buckets;
    map->nbuckets = n;
}

bus_map_entry_t *syncd_bus_map_find(const bus_map_t *map, const char *name)
{
    if (map->nbuckets == 0)
        return NULL;
    for (bus_map_entry_t *e = map->buckets[map_hash(name) % map->nbuckets];
         e != NULL; e = e->next) {
        if (strcmp(e->name, name) == 0)
            return e;
    }
    return NULL;
}

int syncd_bus_map_add(bus_map_t *map, bus_map_entry_t *entry)
{
    size_t b;

    if (map->nbuckets == 0) {
        map_resize(map, MAP_MIN_BUCKETS);
        if (map->nbuckets == 0)
            return SYNCD_ENOMEM;
    } else if (map->count >= map->nbuckets) {
        map_resize(map, map->nbuckets * 2);
    }
    b = map_hash(entry->name) % map->nbuckets;
    entry->next = map->buckets[b];
    map->buckets[b] = entry;
    map->count++;
    return 0;
}

void syncd_bus_map_remove(bus_map_t *map, bus_map_entry_t *entry)
{
    bus_map_entry_t **p = &map->buckets[map_hash(entry->name) % map->nbuckets];

    while (*p != entry)
        p = &(*p)->next;
    *p = entry->next;
    map->count--;
    if (map->nbuckets > MAP_MIN_BUCKETS && map->count < map->nbuckets / 4)
        map_resize(map, map->nbuckets / 2);
}

void syncd_bus_map_free(bus_map_t *map)
{
    free(map->buckets);
    map->buckets = NULL;
    map->nbuckets = 0;
    map->count = 0;
}
