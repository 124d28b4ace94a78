/* test_pubsub.c - the change bus: events, the in-process bus, the Redis bus.
 *
 * Event tests check validation, encoding and HMAC signatures. Bus tests
 * run real buses on a real libuv loop (the Redis ones against a real
 * redis-server started on a free port), inject real faults (CLIENT KILL of
 * the subscriber connections during a publish storm, SHUTDOWN NOSAVE and a
 * restart, a trimmed log, raw duplicate, reordered and forged messages),
 * and check that every subscriber saw each seq once, in order, or an
 * explicit resync, with the counters to match. Every test ends by closing
 * its buses and checking that the loop closes clean.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>

#include "pubsub/internal.h"
#include "servers.h"
#include "syncd/bus.h"
#include "syncd/patch.h"

#define COLL "volumes"
#define MAX_SEQ 4096

/* ---- Helpers ------------------------------------------------------------ */

/* Returns a new valid event (without seq) that moves doc id of COLL to
 * version v with body {"n": v}. */
static json_t *make_event(const char *id, int64_t v)
{
    json_t *body = json_pack("{s:I}", "n", (json_int_t)v);
    char hash[SYNCD_HASH_HEX_LEN + 1];
    json_t *event, *patch;

    assert_int_equal(syncd_json_hash(hash, body, NULL), 0);
    if (v == 1)
        patch = json_pack("[{s:s,s:s,s:O}]", "op", "add", "path", "", "value",
                          body);
    else
        patch = json_pack("[{s:s,s:s,s:I}]", "op", "replace", "path", "/n",
                          "value", (json_int_t)v);
    event = json_pack("{s:s,s:s,s:s,s:I,s:I,s:o,s:o,s:s,s:s,s:s}", "op",
                      v == 1 ? "create" : "update", "coll", COLL, "id", id, "v",
                      (json_int_t)v, "base", (json_int_t)(v - 1), "patch",
                      patch, "merge", body, "h", hash, "origin", "node-test",
                      "ts", "2026-11-24T10:00:00.123456Z");
    assert_non_null(event);
    return event;
}

/* What one subscription saw. */
typedef struct rec {
    int events, resyncs, out_of_order;
    int64_t last, resync_seq[8];
    int64_t versions[16]; /* "v" of the first 16 events */
} rec_t;

static void on_event(syncd_bus_signal_t signal, int64_t seq,
                     const json_t *event, void *payload)
{
    rec_t *rec = payload;

    if (signal == SYNCD_BUS_RESYNC) {
        assert_null(event);
        if (rec->resyncs < 8)
            rec->resync_seq[rec->resyncs] = seq;
        rec->resyncs++;
        rec->last = seq;
        return;
    }
    assert_int_equal(json_integer_value(json_object_get(event, "seq")), seq);
    if (seq != rec->last + 1)
        rec->out_of_order++;
    rec->last = seq;
    if (rec->events < 16)
        rec->versions[rec->events] =
            json_integer_value(json_object_get(event, "v"));
    rec->events++;
}

/* Publishes and checks the seqs handed out. */
typedef struct pubs {
    syncd_bus_t *bus;
    int issued, done, failed, target, window;
    int in_call; /* set while syncd_bus_publish() runs */
    int kill_at; /* CLIENT KILL TYPE pubsub after this many (0: never) */
    const syncd_test_server_t *srv;
    const char *id; /* the document the events change; "doc" */
    unsigned char seen[MAX_SEQ + 1];
    int dup_seq;
    int64_t last_seq; /* the highest seq a callback got */
    int out_of_order; /* callbacks with a seq below an earlier one */
} pubs_t;

/* The version of the next published event: every publish of the tests is
 * a new version of "doc", so that deduplication keeps it. */
static int64_t next_version = 1;

static void publish_next(pubs_t *p);

static void on_published(int status, int64_t seq, void *payload)
{
    pubs_t *p = payload;

    assert_false(p->in_call);
    p->done++;
    if (status != 0) {
        p->failed++;
        return;
    }
    assert_true(seq >= 1 && seq <= MAX_SEQ);
    if (p->seen[seq])
        p->dup_seq++;
    if (seq < p->last_seq)
        p->out_of_order++;
    else
        p->last_seq = seq;
    p->seen[seq] = 1;
    if (p->kill_at != 0 && p->done == p->kill_at)
        assert_int_equal(syncd_test_redis_cli(p->srv, "CLIENT", "KILL", "TYPE",
                                              "pubsub", NULL),
                         0);
    publish_next(p);
}

static void publish_next(pubs_t *p)
{
    while (p->issued < p->target && p->issued - p->done < p->window) {
        json_t *event = make_event(p->id, next_version++);
        p->in_call = 1;
        assert_int_equal(syncd_bus_publish(p->bus, event, on_published, p), 0);
        p->in_call = 0;
        p->issued++;
        json_decref(event);
    }
}

static void on_tick(uv_timer_t *timer)
{
    (void)timer;
}

static void on_tick_closed(uv_handle_t *handle)
{
    *(int *)handle->data = 1;
}

/* Runs loop until pred(arg) holds; fails the test after ms milliseconds. */
static void wait_within(uv_loop_t *loop, uint64_t ms, int (*pred)(void *),
                        void *arg)
{
    uv_timer_t tick;
    uint64_t deadline = uv_hrtime() + ms * 1000 * 1000;
    int closed = 0, ok;

    uv_timer_init(loop, &tick);
    tick.data = &closed;
    uv_timer_start(&tick, on_tick, 10, 10);
    while (!pred(arg) && uv_hrtime() < deadline)
        uv_run(loop, UV_RUN_ONCE);
    ok = pred(arg);
    uv_close((uv_handle_t *)&tick, on_tick_closed);
    while (!closed)
        uv_run(loop, UV_RUN_ONCE);
    assert_true(ok);
}

/* Runs loop until pred(arg) holds; fails the test after 60 s so that a
 * bug is a failure, not a hang. */
static void wait_for(uv_loop_t *loop, int (*pred)(void *), void *arg)
{
    wait_within(loop, 60000, pred, arg);
}

static int pubs_done(void *arg)
{
    pubs_t *p = arg;
    return p->done == p->target;
}

/* Waits until every rec in the NULL-terminated list saw seq target. */
static int recs_at(void *arg)
{
    void **v = arg;
    int64_t target = *(int64_t *)v[0];

    for (int i = 1; v[i] != NULL; i++) {
        if (((rec_t *)v[i])->last < target)
            return 0;
    }
    return 1;
}

static void wait_recs(uv_loop_t *loop, int64_t target, rec_t *a, rec_t *b)
{
    void *v[4] = {&target, a, b, NULL};
    wait_for(loop, recs_at, v);
}

static int bus_up(void *arg)
{
    return syncd_bus_connected(arg);
}

static int bus_down(void *arg)
{
    return !syncd_bus_connected(arg);
}

static int flag_set(void *arg)
{
    return *(int *)arg != 0;
}

static void on_pause_over(uv_timer_t *timer)
{
    *(int *)timer->data = 1;
}

/* Runs loop for ms milliseconds, so that what the buses do meanwhile (such
 * as reconnect attempts) happens; not a timing check. */
static void run_for(uv_loop_t *loop, uint64_t ms)
{
    uv_timer_t pause;
    int over = 0;

    uv_timer_init(loop, &pause);
    pause.data = &over;
    uv_timer_start(&pause, on_pause_over, ms, 0);
    wait_for(loop, flag_set, &over);
    over = 0;
    uv_close((uv_handle_t *)&pause, on_tick_closed);
    while (!over)
        uv_run(loop, UV_RUN_ONCE);
}

static void on_bus_closed(void *payload)
{
    (*(int *)payload)++;
}

static void close_bus(uv_loop_t *loop, syncd_bus_t *bus)
{
    int closed = 0;

    syncd_bus_close(bus, on_bus_closed, &closed);
    wait_for(loop, flag_set, &closed);
    assert_int_equal(closed, 1);
}

static void end_loop(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

/* Replay result holder. */
typedef struct replay {
    int done, status;
    json_t *events;
    int64_t seq;
} replay_t;

static void on_replay(int status, json_t *events, void *payload)
{
    replay_t *r = payload;

    r->done++;
    r->status = status;
    r->events = events;
}

static void on_seq(int status, int64_t seq, void *payload)
{
    replay_t *r = payload;

    r->done++;
    r->status = status;
    r->seq = seq;
}

/* Replays coll (after, until] and checks status and count. */
static void check_replay(uv_loop_t *loop, syncd_bus_t *bus, int64_t after,
                         int64_t until, int status, size_t count)
{
    replay_t r = {0};

    assert_int_equal(
        syncd_bus_replay(bus, COLL, after, until, 0, on_replay, &r), 0);
    assert_int_equal(r.done, 0);
    wait_for(loop, flag_set, &r.done);
    assert_int_equal(r.status, status);
    if (status != 0) {
        assert_null(r.events);
        return;
    }
    assert_int_equal(json_array_size(r.events), count);
    for (size_t i = 0; i < count; i++) {
        json_t *e = json_array_get(r.events, i);
        assert_int_equal(json_integer_value(json_object_get(e, "seq")),
                         after + 1 + (int64_t)i);
    }
    json_decref(r.events);
}

static int64_t current_seq(uv_loop_t *loop, syncd_bus_t *bus)
{
    replay_t r = {0};

    assert_int_equal(syncd_bus_seq(bus, COLL, on_seq, &r), 0);
    wait_for(loop, flag_set, &r.done);
    assert_int_equal(r.status, 0);
    return r.seq;
}

/* Resets p to publish n events on bus, window at a time; publish_next()
 * starts them. */
static void pubs_init(pubs_t *p, syncd_bus_t *bus, int n, int window)
{
    memset(p, 0, sizeof(*p));
    p->bus = bus;
    p->target = n;
    p->window = window;
    p->id = "doc";
}

static void publish_all(uv_loop_t *loop, pubs_t *p, syncd_bus_t *bus, int n)
{
    pubs_init(p, bus, n, 64);
    publish_next(p);
    wait_for(loop, pubs_done, p);
    assert_int_equal(p->failed, 0);
    assert_int_equal(p->dup_seq, 0);
}

/* Sets opts to what the tests' buses use. */
static void test_options(syncd_bus_options_t *opts, const char *url,
                         const char *dir)
{
    syncd_bus_options_init(opts);
    opts->redis_url = url;
    opts->data_dir = dir;
    opts->database = "test";
    opts->reconnect_min_ms = 10;
    opts->reconnect_max_ms = 200;
    opts->max_event_bytes = 4096;
}

/* Opens a bus with opts and, for Redis, waits until it is connected. */
static syncd_bus_t *open_bus_with(uv_loop_t *loop,
                                  const syncd_bus_options_t *opts)
{
    syncd_bus_t *bus = NULL;
    syncd_error_t err = {0};

    assert_int_equal(syncd_bus_open(&bus, loop, opts, &err), 0);
    if (opts->redis_url != NULL)
        wait_for(loop, bus_up, bus);
    return bus;
}

static syncd_bus_t *open_bus(uv_loop_t *loop, const char *url, const char *dir,
                             const char *secret, uint64_t log_len)
{
    syncd_bus_options_t opts;

    test_options(&opts, url, dir);
    opts.secret = secret;
    if (log_len != 0)
        opts.event_log_len = log_len;
    return open_bus_with(loop, &opts);
}

/* ---- Events ------------------------------------------------------------- */

static void test_event_validate__well_formed_event_passes(void **state)
{
    json_t *event = make_event("a/b", 3);

    (void)state;
    assert_int_equal(syncd_event_validate(event, 0, NULL), SYNCD_EINVAL);
    json_object_set_new(event, "seq", json_integer(7));
    assert_int_equal(syncd_event_validate(event, 0, NULL), 0);
    json_decref(event);
}

/* Sets member of a valid event to value (NULL: removes it) and expects
 * validation to fail with code and a message naming word. */
static void expect_invalid(const char *member, json_t *value, int code,
                           const char *word)
{
    json_t *event = make_event("doc", 2);
    syncd_error_t err = {0};

    json_object_set_new(event, "seq", json_integer(1));
    if (value != NULL)
        json_object_set_new(event, member, value);
    else
        json_object_del(event, member);
    assert_int_equal(syncd_event_validate(event, 0, &err), code);
    assert_int_equal(err.code, code);
    assert_non_null(strstr(err.message, word));
    json_decref(event);
}

static void
test_event_validate__bad_members_fail_with_EINVAL_naming_them(void **state)
{
    (void)state;
    expect_invalid("h", NULL, SYNCD_EINVAL, "\"h\"");
    expect_invalid("seq", json_integer(0), SYNCD_EINVAL, "\"seq\"");
    expect_invalid("op", json_string("upsert"), SYNCD_EINVAL, "\"op\"");
    expect_invalid("coll", json_string("Bad Name"), SYNCD_EINVAL, "\"coll\"");
    expect_invalid("id", json_string("a{b"), SYNCD_EINVAL, "\"id\"");
    expect_invalid("v", json_string("2"), SYNCD_EINVAL, "\"v\"");
    expect_invalid("base", json_integer(5), SYNCD_EINVAL, "\"base\"");
    expect_invalid("patch", json_object(), SYNCD_EINVAL, "\"patch\"");
    expect_invalid("patch", json_pack("[{s:s}]", "op", "nope"), SYNCD_EINVAL,
                   "\"patch\"");
    expect_invalid("ts", json_string("2026-13-01T00:00:00Z"), SYNCD_EINVAL,
                   "\"ts\"");
    expect_invalid("ts", json_string("yesterday"), SYNCD_EINVAL, "\"ts\"");
    expect_invalid("origin", json_integer(1), SYNCD_EINVAL, "\"origin\"");
    expect_invalid("sig", json_string("abc"), SYNCD_EINVAL, "\"sig\"");
    expect_invalid("extra", json_true(), SYNCD_EINVAL, "\"extra\"");
}

static void test_event_validate__op_rules_hold(void **state)
{
    json_t *event = make_event("doc", 1);
    syncd_error_t err = {0};

    (void)state;
    json_object_set_new(event, "seq", json_integer(1));
    assert_int_equal(syncd_event_validate(event, 0, NULL), 0);
    json_object_set_new(event, "base", json_integer(0));
    json_object_set_new(event, "v", json_integer(4));
    assert_int_equal(syncd_event_validate(event, 0, NULL), 0);
    json_object_set_new(event, "base", json_integer(3));
    assert_int_equal(syncd_event_validate(event, 0, &err), SYNCD_EINVAL);
    assert_non_null(strstr(err.message, "create"));

    json_object_set_new(event, "op", json_string("delete"));
    assert_int_equal(syncd_event_validate(event, 0, NULL), SYNCD_EINVAL);
    json_object_set_new(event, "patch", json_null());
    json_object_set_new(event, "merge", json_null());
    json_object_set_new(event, "h", json_string(""));
    assert_int_equal(syncd_event_validate(event, 0, NULL), 0);
    json_decref(event);
}

static void test_event_validate__oversize_event_fails_with_ETOOBIG(void **state)
{
    json_t *event = make_event("doc", 2);
    char big[2048];
    size_t len;

    (void)state;
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    json_object_set_new(event, "seq", json_integer(1));
    json_object_set_new(event, "merge", json_pack("{s:s}", "n", big));
    assert_int_equal(syncd_event_validate(event, 1024, NULL), SYNCD_ETOOBIG);
    assert_int_equal(syncd_event_validate(event, 0, NULL), 0);
    /* The bound is the encoded length, to the byte. */
    len = json_dumpb(event, NULL, 0, JSON_COMPACT);
    assert_int_equal(syncd_event_validate(event, len, NULL), 0);
    assert_int_equal(syncd_event_validate(event, len - 1, NULL), SYNCD_ETOOBIG);
    json_decref(event);
}

static void
test_event_sign__signed_event_verifies_and_tampering_fails(void **state)
{
    json_t *event = make_event("doc", 2), *out = NULL;
    syncd_error_t err = {0};
    char *text, *p;
    size_t len;

    (void)state;
    json_object_set_new(event, "seq", json_integer(41));
    text = syncd_event_encode(event, "k1", &len);
    assert_non_null(text);
    assert_true(json_is_string(json_object_get(event, "sig")));
    assert_int_equal(syncd_event_decode(&out, text, len, 0, "k1", NULL), 0);
    assert_true(syncd_json_equal(out, event));
    json_decref(out);

    /* The seq is not signed (Redis assigns it after signing). */
    p = strstr(text, "\"seq\":41");
    assert_non_null(p);
    p[7] = '2';
    assert_int_equal(syncd_event_decode(&out, text, len, 0, "k1", NULL), 0);
    json_decref(out);

    assert_int_equal(syncd_event_decode(&out, text, len, 0, "k2", &err),
                     SYNCD_EINVAL);
    assert_non_null(strstr(err.message, "signature"));
    assert_null(out);
    p = strstr(text, "\"v\":2");
    assert_non_null(p);
    p[4] = '3';
    assert_int_equal(syncd_event_decode(&out, text, len, 0, "k1", NULL),
                     SYNCD_EINVAL);
    free(text);

    json_object_del(event, "sig");
    text = syncd_event_encode(event, NULL, &len);
    syncd_error_clear(&err);
    assert_int_equal(syncd_event_decode(&out, text, len, 0, "k1", &err),
                     SYNCD_EINVAL);
    assert_non_null(strstr(err.message, "not signed"));
    assert_int_equal(syncd_event_decode(&out, text, len, 0, NULL, NULL), 0);
    json_decref(out);
    assert_int_equal(syncd_event_decode(&out, text, len, 16, NULL, NULL),
                     SYNCD_ETOOBIG);
    assert_int_equal(syncd_event_decode(&out, "{\"seq\":", 7, 0, NULL, NULL),
                     SYNCD_EINVAL);
    free(text);
    json_decref(event);
}

/* Threads that sign events under twelve keys at once, more than the
 * signer keeps a context for. */
#define SIGN_THREADS 4
#define SIGN_KEYS 12
#define SIGN_ROUNDS 200

/* Checks that syncd_event_sign() writes the lower-case hex HMAC-SHA256,
 * computed here by OpenSSL's one-shot HMAC(), of the event's canonical
 * text without seq and sig, for events of growing versions under every
 * key in turn (keys of different lengths, one longer than SHA-256's
 * block). Returns the number of mismatches. */
static void *sign_known_answers(void *arg)
{
    static const char hexdig[] = "0123456789abcdef";
    intptr_t mismatches = 0, t = (intptr_t)arg;

    for (int r = 0; r < SIGN_ROUNDS; r++) {
        json_t *event = make_event("doc", 2 + r + (int)t), *body;
        char key[160], sig[65], want[65], *text;
        unsigned char mac[32];
        unsigned int mac_len = 0;
        size_t len;
        int k = (r + (int)t) % SIGN_KEYS;

        memset(key, 'a' + k, sizeof(key));
        key[k == SIGN_KEYS - 1 ? 100 : 1 + k] = '\0';
        json_object_set_new(event, "seq", json_integer(r));
        body = json_copy(event);
        json_object_del(body, "seq");
        text = syncd_json_canonical(body, &len);
        if (text == NULL ||
            HMAC(EVP_sha256(), key, (int)strlen(key),
                 (const unsigned char *)text, len, mac, &mac_len) == NULL ||
            mac_len != 32)
            memset(mac, 0, sizeof(mac));
        for (int i = 0; i < 32; i++) {
            want[2 * i] = hexdig[mac[i] >> 4];
            want[2 * i + 1] = hexdig[mac[i] & 15];
        }
        want[64] = '\0';
        mismatches += syncd_event_sign(sig, event, key, NULL) != 0 ||
                      text == NULL || strcmp(sig, want) != 0;
        free(text);
        json_decref(body);
        json_decref(event);
    }
    return (void *)mismatches;
}

/* A signature is the standard HMAC-SHA256 of the canonical event, as any
 * other tool computes it: whatever the key, however many keys a process
 * has used, and from threads signing at once. */
static void test_event_sign__is_hmac_sha256_of_canonical_text(void **state)
{
    pthread_t threads[SIGN_THREADS];
    void *mismatches;

    (void)state;
    for (intptr_t t = 0; t < SIGN_THREADS; t++)
        assert_int_equal(
            pthread_create(&threads[t], NULL, sign_known_answers, (void *)t),
            0);
    for (int t = 0; t < SIGN_THREADS; t++) {
        assert_int_equal(pthread_join(threads[t], &mismatches), 0);
        assert_int_equal((intptr_t)mismatches, 0);
    }
}

/* Decodes len bytes at text under secret: 0, or SYNCD_EINVAL with
 * *forged 1 when only the signature is wrong. */
static int decode_forged(const char *text, size_t len, const char *secret,
                         int *forged)
{
    json_t *out = NULL;
    int rc = syncd_bus_event_decode(&out, text, len, 0, secret, forged, NULL);

    assert_true((rc == 0) == (out != NULL));
    json_decref(out);
    return rc;
}

/* The bytes a bus delivers ("seq" spliced in after signing) verify as
 * they came, and also once their members are reordered on the way; a
 * change to any signed byte is a forgery either way, a change of seq is
 * not (it is not signed); a signed string with a NUL is refused as
 * jansson refuses it. */
static void
test_event_sign__bus_bytes_verify_as_sent_reordered_or_tampered(void **state)
{
    json_t *event = make_event("doc", 2), *out = NULL, *parsed;
    char *text, *wire, *sorted, *p;
    size_t len, wire_len;
    syncd_error_t err = {0};
    int forged;

    (void)state;
    text = syncd_event_encode(event, "k1,k0", &len);
    assert_non_null(text);
    wire = syncd_bus_splice_seq(text, len, 41, &wire_len);
    assert_non_null(wire);
    assert_int_equal(strncmp(wire, "{\"seq\":41,", 10), 0);
    assert_int_equal(decode_forged(wire, wire_len, "k1", &forged), 0);
    assert_int_equal(decode_forged(wire, wire_len, "k2,k1", &forged), 0);
    assert_int_equal(syncd_event_decode(&out, wire, wire_len, 0, "k1", NULL),
                     0);
    assert_int_equal(json_integer_value(json_object_get(out, "seq")), 41);
    json_object_del(out, "seq");
    assert_true(syncd_json_equal(out, event));
    json_decref(out);
    assert_int_equal(decode_forged(wire, wire_len, "k2", &forged),
                     SYNCD_EINVAL);
    assert_int_equal(forged, 1);

    /* Reordered: verified from the parsed event. */
    parsed = json_loadb(wire, wire_len, 0, NULL);
    sorted = json_dumps(parsed, JSON_COMPACT | JSON_SORT_KEYS);
    assert_int_not_equal(strncmp(sorted, "{\"seq\":", 7), 0);
    assert_int_equal(decode_forged(sorted, strlen(sorted), "k1", &forged), 0);
    assert_int_equal(decode_forged(sorted, strlen(sorted), "k2", &forged),
                     SYNCD_EINVAL);
    assert_int_equal(forged, 1);

    /* seq is not signed; v is. */
    wire[8] = '2';
    assert_int_equal(decode_forged(wire, wire_len, "k1", &forged), 0);
    p = strstr(wire, "\"v\":2");
    assert_non_null(p);
    p[4] = '3';
    assert_int_equal(decode_forged(wire, wire_len, "k1", &forged),
                     SYNCD_EINVAL);
    assert_int_equal(forged, 1);
    free(wire);
    free(text);
    free(sorted);
    json_decref(parsed);

    /* A NUL in a signed string: not JSON, as jansson has it. */
    json_object_del(event, "sig");
    json_object_set_new(event, "origin", json_stringn("node\0x", 6));
    text = syncd_event_encode(event, "k1", &len);
    assert_non_null(text);
    assert_non_null(strstr(text, "\\u0000"));
    wire = syncd_bus_splice_seq(text, len, 7, &wire_len);
    assert_int_equal(syncd_event_decode(&out, wire, wire_len, 0, "k1", &err),
                     SYNCD_EINVAL);
    assert_non_null(strstr(err.message, "not JSON"));
    assert_int_equal(decode_forged(wire, wire_len, "k1", &forged),
                     SYNCD_EINVAL);
    assert_int_equal(forged, 0);
    free(wire);
    free(text);
    json_decref(event);
}

static void
test_event_sign__key_list_signs_with_the_first_and_accepts_any(void **state)
{
    json_t *event = make_event("doc", 2), *out = NULL;
    syncd_error_t err = {0};
    char *text;
    size_t len;

    (void)state;
    json_object_set_new(event, "seq", json_integer(1));
    text = syncd_event_encode(event, "new,old", &len);
    assert_non_null(text);
    assert_int_equal(syncd_event_decode(&out, text, len, 0, "new", NULL), 0);
    json_decref(out);
    assert_int_equal(syncd_event_decode(&out, text, len, 0, "old,new", NULL),
                     0);
    json_decref(out);
    assert_int_equal(syncd_event_decode(&out, text, len, 0, "x,y,new", NULL),
                     0);
    json_decref(out);
    assert_int_equal(syncd_event_decode(&out, text, len, 0, "old", &err),
                     SYNCD_EINVAL);
    assert_non_null(strstr(err.message, "signature"));
    assert_int_equal(syncd_event_decode(&out, text, len, 0, "ne,ew", NULL),
                     SYNCD_EINVAL);
    assert_int_equal(
        syncd_event_decode(&out, text, len, 0, "new,old,newer", NULL), 0);
    json_decref(out);
    free(text);
    json_decref(event);
}

static void
test_bus_open__empty_key_in_the_secret_fails_with_EINVAL(void **state)
{
    const char *bad[] = {"", ",", "a,,b", ",a", "a,"};
    syncd_bus_options_t opts;
    syncd_error_t err;
    syncd_bus_t *bus;
    uv_loop_t loop;

    (void)state;
    uv_loop_init(&loop);
    test_options(&opts, NULL, NULL);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        syncd_error_clear(&err);
        opts.secret = bad[i];
        assert_int_equal(syncd_bus_open(&bus, &loop, &opts, &err),
                         SYNCD_EINVAL);
        assert_null(bus);
        assert_non_null(strstr(err.message, "secret"));
    }
    end_loop(&loop);
}

/* ---- In-process bus ----------------------------------------------------- */

static void
test_local_bus__seqs_are_contiguous_and_delivered_in_order(void **state)
{
    uv_loop_t loop;
    syncd_bus_t *bus;
    syncd_bus_sub_t *s1, *s2;
    rec_t r1 = {0}, r2 = {0};
    pubs_t p;
    syncd_bus_stats_t st;

    (void)state;
    uv_loop_init(&loop);
    bus = open_bus(&loop, NULL, NULL, NULL, 0);
    assert_string_equal(syncd_bus_kind(bus), "local");
    assert_int_equal(syncd_bus_connected(bus), 1);
    assert_int_equal(
        syncd_bus_subscribe(bus, &s1, COLL, -1, on_event, &r1, NULL), 0);
    assert_int_equal(
        syncd_bus_subscribe(bus, &s2, COLL, 0, on_event, &r2, NULL), 0);
    publish_all(&loop, &p, bus, 300);
    for (int s = 1; s <= 300; s++)
        assert_true(p.seen[s]);
    wait_recs(&loop, 300, &r1, &r2);
    assert_int_equal(r1.events, 300);
    assert_int_equal(r2.events, 300);
    assert_int_equal(r1.out_of_order + r2.out_of_order, 0);
    assert_int_equal(r1.resyncs + r2.resyncs, 0);
    syncd_bus_stats(bus, &st);
    assert_int_equal(st.published, 300);
    assert_int_equal(current_seq(&loop, bus), 300);

    syncd_bus_unsubscribe(s1);
    publish_all(&loop, &p, bus, 1);
    wait_recs(&loop, 301, &r2, NULL);
    assert_int_equal(r1.events, 300);
    assert_int_equal(r2.events, 301);
    syncd_bus_unsubscribe(s2);
    close_bus(&loop, bus);
    end_loop(&loop);
}

static void test_local_bus__replay_reads_ranges_from_the_log(void **state)
{
    uv_loop_t loop;
    syncd_bus_t *bus;
    pubs_t p;

    (void)state;
    uv_loop_init(&loop);
    bus = open_bus(&loop, NULL, NULL, NULL, 0);
    assert_int_equal(current_seq(&loop, bus), 0);
    check_replay(&loop, bus, 0, -1, 0, 0);
    publish_all(&loop, &p, bus, 10);
    check_replay(&loop, bus, 0, -1, 0, 10);
    check_replay(&loop, bus, 3, 7, 0, 4);
    check_replay(&loop, bus, 10, -1, 0, 0);
    close_bus(&loop, bus);
    end_loop(&loop);
}

static void
test_local_bus__seq_continues_after_reopen_from_data_dir(void **state)
{
    char dir[256];
    uv_loop_t loop;
    syncd_bus_t *bus;
    syncd_bus_sub_t *sub;
    rec_t r = {0};
    pubs_t p;

    (void)state;
    assert_int_equal(syncd_test_tmpdir(dir, sizeof(dir), "bus"), 0);
    uv_loop_init(&loop);
    bus = open_bus(&loop, NULL, dir, NULL, 0);
    publish_all(&loop, &p, bus, 5);
    close_bus(&loop, bus);

    bus = open_bus(&loop, NULL, dir, NULL, 0);
    assert_int_equal(current_seq(&loop, bus), 5);
    publish_all(&loop, &p, bus, 1);
    assert_true(p.seen[6]);
    check_replay(&loop, bus, 0, -1, 0, 6);
    r.last = 2;
    assert_int_equal(
        syncd_bus_subscribe(bus, &sub, COLL, 2, on_event, &r, NULL), 0);
    wait_recs(&loop, 6, &r, NULL);
    assert_int_equal(r.events, 4);
    assert_int_equal(r.out_of_order, 0);
    syncd_bus_unsubscribe(sub);
    close_bus(&loop, bus);
    end_loop(&loop);
    syncd_test_rmtree(dir);
}

/* A subscriber that keeps a copy of each event it is handed, until it has
 * target of them. */
typedef struct kept {
    json_t *events;
    int64_t last, target;
} kept_t;

static void on_event_kept(syncd_bus_signal_t signal, int64_t seq,
                          const json_t *event, void *payload)
{
    kept_t *k = payload;

    assert_int_equal(signal, SYNCD_BUS_EVENT);
    assert_int_equal(seq, k->last + 1);
    assert_int_equal(
        json_array_append_new(k->events, event != NULL ? json_deep_copy(event)
                                                       : json_null()),
        0);
    k->last = seq;
}

static int kept_all(void *arg)
{
    const kept_t *k = arg;

    return k->last >= k->target;
}

/* Asserts that event is sent with "seq": seq added. */
static void assert_sent_with_seq(const json_t *event, const json_t *sent,
                                 int64_t seq)
{
    json_t *bare = json_deep_copy(event);

    assert_int_equal(json_integer_value(json_object_get(event, "seq")), seq);
    assert_int_equal(json_object_del(bare, "seq"), 0);
    assert_true(json_equal(bare, sent));
    json_decref(bare);
}

/* Publishes events first..last of "ring" on bus, one at a time, appending
 * each to sent, and checks the seqs they get (from seq1 on). */
static void publish_ring(uv_loop_t *loop, syncd_bus_t *bus, json_t *sent,
                         int first, int last, int64_t seq1)
{
    for (int v = first; v <= last; v++) {
        json_t *event = make_event("ring", v);
        replay_t done = {0};

        assert_int_equal(json_array_append_new(sent, event), 0);
        assert_int_equal(syncd_bus_publish(bus, event, on_seq, &done), 0);
        wait_for(loop, flag_set, &done.done);
        assert_int_equal(done.status, 0);
        assert_int_equal(done.seq, seq1 + (v - first));
    }
}

/* Runs check on a bus in memory, then on one with a data dir, each new,
 * with sent cleared for it. */
static void on_each_local_bus(void (*check)(uv_loop_t *loop, const char *dir,
                                            json_t *sent))
{
    char dir[256];
    uv_loop_t loop;
    json_t *sent = json_array();

    assert_int_equal(syncd_test_tmpdir(dir, sizeof(dir), "bus"), 0);
    uv_loop_init(&loop);
    for (int persisted = 0; persisted < 2; persisted++) {
        json_array_clear(sent);
        check(&loop, persisted ? dir : NULL, sent);
    }
    json_decref(sent);
    end_loop(&loop);
    syncd_test_rmtree(dir);
}

/* The recent events a subscriber is handed from memory (kept as the text
 * published until first asked for) and those read back from the log after
 * a reopen are the events published, each with its seq; in memory alone,
 * the replay and the subscriber read the same. */
static void check_events_handed_out(uv_loop_t *loop, const char *dir,
                                    json_t *sent)
{
    syncd_bus_t *bus = open_bus(loop, NULL, dir, NULL, 0);
    syncd_bus_sub_t *sub;
    kept_t k = {json_array(), 0, 8};
    replay_t r = {0};

    publish_ring(loop, bus, sent, 1, 8, 1);
    assert_int_equal(
        syncd_bus_subscribe(bus, &sub, COLL, 0, on_event_kept, &k, NULL), 0);
    wait_for(loop, kept_all, &k);
    syncd_bus_unsubscribe(sub);
    if (dir != NULL) {
        close_bus(loop, bus);
        bus = open_bus(loop, NULL, dir, NULL, 0);
    }
    assert_int_equal(syncd_bus_replay(bus, COLL, 0, -1, 0, on_replay, &r), 0);
    wait_for(loop, flag_set, &r.done);
    assert_int_equal(r.status, 0);
    assert_int_equal(json_array_size(r.events), 8);
    for (size_t i = 0; i < 8; i++) {
        assert_sent_with_seq(json_array_get(k.events, i),
                             json_array_get(sent, i), (int64_t)i + 1);
        assert_sent_with_seq(json_array_get(r.events, i),
                             json_array_get(sent, i), (int64_t)i + 1);
    }
    json_decref(r.events);
    json_decref(k.events);
    close_bus(loop, bus);
}

static void test_local_bus__events_handed_out_are_those_published(void **state)
{
    (void)state;
    on_each_local_bus(check_events_handed_out);
}

/* A subscriber that wants only seqs is handed every seq in order, with no
 * event; once it wants bodies again, the events come whole; one that
 * wants the bodies of other buses' events only gets none here, where
 * every event is the bus's own. */
static void check_seqs_only(uv_loop_t *loop, const char *dir, json_t *sent)
{
    syncd_bus_t *bus = open_bus(loop, NULL, dir, NULL, 0);
    syncd_bus_sub_t *sub;
    kept_t k = {json_array(), 0, 4};

    assert_int_equal(
        syncd_bus_subscribe(bus, &sub, COLL, 0, on_event_kept, &k, NULL), 0);
    syncd_bus_sub_want_bodies(sub, SYNCD_BUS_BODIES_NONE);
    publish_ring(loop, bus, sent, 1, 4, 1);
    wait_for(loop, kept_all, &k);
    syncd_bus_sub_want_bodies(sub, SYNCD_BUS_BODIES_ALL);
    k.target = 8;
    publish_ring(loop, bus, sent, 5, 8, 5);
    wait_for(loop, kept_all, &k);
    syncd_bus_sub_want_bodies(sub, SYNCD_BUS_BODIES_OTHERS);
    k.target = 10;
    publish_ring(loop, bus, sent, 9, 10, 9);
    wait_for(loop, kept_all, &k);
    syncd_bus_unsubscribe(sub);
    assert_int_equal(json_array_size(k.events), 10);
    for (size_t i = 0; i < 10; i++) {
        if (i < 4 || i >= 8)
            assert_true(json_is_null(json_array_get(k.events, i)));
        else
            assert_sent_with_seq(json_array_get(k.events, i),
                                 json_array_get(sent, i), (int64_t)i + 1);
    }
    json_decref(k.events);
    close_bus(loop, bus);
}

static void
test_local_bus__a_subscription_wanting_seqs_only_gets_every_seq(void **state)
{
    (void)state;
    on_each_local_bus(check_seqs_only);
}

static void test_local_bus__trimmed_log_gives_ENOTFOUND_and_RESYNC(void **state)
{
    uv_loop_t loop;
    syncd_bus_t *bus;
    syncd_bus_sub_t *sub;
    rec_t r = {0};
    pubs_t p;

    (void)state;
    uv_loop_init(&loop);
    bus = open_bus(&loop, NULL, NULL, NULL, 5);
    publish_all(&loop, &p, bus, 20);
    check_replay(&loop, bus, 0, -1, SYNCD_ENOTFOUND, 0);
    check_replay(&loop, bus, 15, -1, 0, 5);
    assert_int_equal(
        syncd_bus_subscribe(bus, &sub, COLL, 0, on_event, &r, NULL), 0);
    wait_recs(&loop, 20, &r, NULL);
    assert_int_equal(r.resyncs, 1);
    assert_int_equal(r.resync_seq[0], 15);
    assert_int_equal(r.events, 5);
    assert_int_equal(r.out_of_order, 0);
    syncd_bus_unsubscribe(sub);
    close_bus(&loop, bus);
    end_loop(&loop);
}

/* One publish and its outcome. */
typedef struct pub1 {
    int done, status;
    int64_t seq;
} pub1_t;

static void on_pub1(int status, int64_t seq, void *payload)
{
    pub1_t *p = payload;

    p->done++;
    p->status = status;
    p->seq = seq;
}

/* Publishes event_new (stolen) on bus and waits for its outcome. */
static pub1_t publish_one(uv_loop_t *loop, syncd_bus_t *bus, json_t *event_new)
{
    pub1_t p = {0};

    assert_int_equal(syncd_bus_publish(bus, event_new, on_pub1, &p), 0);
    json_decref(event_new);
    wait_for(loop, flag_set, &p.done);
    assert_int_equal(p.done, 1);
    return p;
}

/* Publishes event_new (stolen) on bus in its document's version order,
 * versions up to settled known published, and waits for its outcome. */
static pub1_t publish_after(uv_loop_t *loop, syncd_bus_t *bus,
                            json_t *event_new, int64_t settled)
{
    pub1_t p = {0};

    assert_int_equal(
        syncd_bus_publish_in_order(bus, event_new, settled, on_pub1, &p), 0);
    json_decref(event_new);
    wait_for(loop, flag_set, &p.done);
    assert_int_equal(p.done, 1);
    return p;
}

/* Returns a create of id (version 1, base 0) made at ts. */
static json_t *make_create_at(const char *id, const char *ts)
{
    json_t *event = make_event(id, 1);

    json_object_set_new(event, "ts", json_string(ts));
    return event;
}

/* Publishes on bus the sequence that exercises the deduplication rule of
 * bus.h for a fresh id of COLL, whose first seq is to be first: new
 * versions get the next seqs, a repeated or older version is dropped with
 * status 0 and seq 0 (and counted), and a create made later than the
 * recorded one (a re-create after a purged tombstone) goes through. */
static void expect_dedupe(uv_loop_t *loop, syncd_bus_t *bus, int64_t first)
{
    const char *later = "2026-11-25T08:00:00Z";
    syncd_bus_stats_t before, after;
    pub1_t p;

    syncd_bus_stats(bus, &before);
    p = publish_one(loop, bus, make_event("dd", 1));
    assert_int_equal(p.status, 0);
    assert_int_equal(p.seq, first);
    p = publish_one(loop, bus, make_event("dd", 2));
    assert_int_equal(p.seq, first + 1);
    p = publish_one(loop, bus, make_event("dd", 2));
    assert_int_equal(p.status, 0);
    assert_int_equal(p.seq, 0);
    p = publish_one(loop, bus, make_event("dd", 1));
    assert_int_equal(p.status, 0);
    assert_int_equal(p.seq, 0);
    /* 2026-11-24T10:00:00.123456Z in another zone: the same instant. */
    p = publish_one(loop, bus,
                    make_create_at("dd", "2026-11-24T11:00:00.123456+01:00"));
    assert_int_equal(p.seq, 0);
    p = publish_one(loop, bus, make_create_at("dd", later));
    assert_int_equal(p.status, 0);
    assert_int_equal(p.seq, first + 2);
    p = publish_one(loop, bus, make_create_at("dd", later));
    assert_int_equal(p.seq, 0);
    p = publish_one(loop, bus, make_event("dd", 2));
    assert_int_equal(p.seq, first + 3);
    syncd_bus_stats(bus, &after);
    assert_int_equal(after.published - before.published, 4);
    assert_int_equal(after.dropped_republished - before.dropped_republished, 4);
}

/* Publishes on a and b (two nodes, or one bus twice) what two publishers
 * of one document do when one of them is behind: a has published v1 of a
 * fresh id of COLL as seq first; b, whose outbox says v1 is published,
 * tries v3 before anyone published v2. The bus refuses v3 (nothing is
 * published, no seq is used), where deduplication alone would have taken
 * v3 and then dropped v2 for good; v2 then v3 go out in order. A
 * publisher whose outbox says v1..v6 are published (a bus that lost its
 * record of the document) starts at v7, but not at v9. A re-create (made
 * later, over a tombstone) does not overtake the tombstone either. */
static void expect_in_order(uv_loop_t *loop, syncd_bus_t *a, syncd_bus_t *b,
                            int64_t first)
{
    json_t *recreate;
    pub1_t p;

    p = publish_after(loop, a, make_event("oo", 1), 0);
    assert_int_equal(p.status, 0);
    assert_int_equal(p.seq, first);
    p = publish_after(loop, b, make_event("oo", 3), 1);
    assert_int_equal(p.status, SYNCD_ECONFLICT);
    assert_int_equal(p.seq, 0);
    p = publish_after(loop, a, make_event("oo", 2), 1);
    assert_int_equal(p.status, 0);
    assert_int_equal(p.seq, first + 1);
    p = publish_after(loop, b, make_event("oo", 2), 1);
    assert_int_equal(p.status, 0);
    assert_int_equal(p.seq, 0);
    p = publish_after(loop, b, make_event("oo", 3), 1);
    assert_int_equal(p.status, 0);
    assert_int_equal(p.seq, first + 2);

    p = publish_after(loop, b, make_event("jump", 9), 6);
    assert_int_equal(p.status, SYNCD_ECONFLICT);
    p = publish_after(loop, b, make_event("jump", 7), 6);
    assert_int_equal(p.seq, first + 3);
    p = publish_after(loop, a, make_event("jump", 9), 6);
    assert_int_equal(p.status, SYNCD_ECONFLICT);
    p = publish_after(loop, a, make_event("jump", 8), 6);
    assert_int_equal(p.seq, first + 4);
    p = publish_after(loop, a, make_event("jump", 9), 6);
    assert_int_equal(p.seq, first + 5);

    p = publish_after(loop, a, make_event("re", 1), 0);
    assert_int_equal(p.seq, first + 6);
    recreate = make_create_at("re", "2026-11-25T08:00:00Z");
    json_object_set_new(recreate, "v", json_integer(3));
    p = publish_after(loop, b, json_incref(recreate), 1);
    assert_int_equal(p.status, SYNCD_ECONFLICT);
    p = publish_after(loop, a, make_event("re", 2), 1);
    assert_int_equal(p.seq, first + 7);
    p = publish_after(loop, b, recreate, 1);
    assert_int_equal(p.seq, first + 8);
}

typedef struct forget1 {
    int done, status;
    size_t forgotten;
} forget1_t;

static void on_forget1(int status, size_t forgotten, void *payload)
{
    forget1_t *f = payload;

    f->done++;
    f->status = status;
    f->forgotten = forgotten;
}

/* Has bus forget gone_new (stolen: id -> version) in COLL and waits;
 * returns how many records went. */
static size_t forget_now(uv_loop_t *loop, syncd_bus_t *bus, json_t *gone_new)
{
    forget1_t f = {0};

    assert_int_equal(syncd_bus_forget(bus, COLL, gone_new, on_forget1, &f), 0);
    json_decref(gone_new);
    wait_for(loop, flag_set, &f.done);
    assert_int_equal(f.done, 1);
    assert_int_equal(f.status, 0);
    return f.forgotten;
}

/* Publishes on bus what a purge makes the bus forget, for fresh ids of
 * COLL whose first seq is to be first: a forget drops an id's record only
 * while it names the purged tombstone's version (an id published past it
 * keeps its record, and its old versions stay duplicates), after which
 * the id's versions are new to the bus; bad arguments are refused. */
static void expect_forget(uv_loop_t *loop, syncd_bus_t *bus, int64_t first)
{
    pub1_t p;

    p = publish_one(loop, bus, make_event("fg", 1));
    assert_int_equal(p.seq, first);
    p = publish_one(loop, bus, make_event("fg", 2));
    assert_int_equal(p.seq, first + 1);
    p = publish_one(loop, bus, make_event("fk", 1));
    assert_int_equal(p.seq, first + 2);
    assert_int_equal(
        forget_now(loop, bus,
                   json_pack("{s:i,s:i,s:i}", "fg", 1, "fk", 1, "never", 4)),
        1);
    p = publish_one(loop, bus, make_event("fg", 2));
    assert_int_equal(p.status, 0);
    assert_int_equal(p.seq, 0);
    p = publish_one(loop, bus, make_event("fk", 1));
    assert_int_equal(p.status, 0);
    assert_int_equal(p.seq, first + 3);
    assert_int_equal(forget_now(loop, bus, json_pack("{s:i}", "fg", 2)), 1);
    assert_int_equal(forget_now(loop, bus, json_pack("{s:i}", "fg", 2)), 0);

    assert_int_equal(syncd_bus_forget(bus, COLL, NULL, on_forget1, NULL),
                     SYNCD_EINVAL);
    {
        json_t *bad[] = {json_object(), json_pack("{s:s}", "x", "1"),
                         json_pack("{s:i}", "x", 0),
                         json_pack("{s:i}", "a<b", 1)};

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            assert_int_equal(
                syncd_bus_forget(bus, COLL, bad[i], on_forget1, NULL),
                SYNCD_EINVAL);
            json_decref(bad[i]);
        }
    }
}

/* Subscribes to COLL after seq after, waits for seq until, and checks that
 * the events carried the versions want (n of them), in order. */
static void expect_versions(uv_loop_t *loop, syncd_bus_t *bus, int64_t after,
                            int64_t until, const int64_t *want, int n)
{
    syncd_bus_sub_t *sub;
    rec_t r = {0};

    r.last = after;
    assert_int_equal(
        syncd_bus_subscribe(bus, &sub, COLL, after, on_event, &r, NULL), 0);
    wait_recs(loop, until, &r, NULL);
    assert_int_equal(r.events, n);
    assert_int_equal(r.out_of_order + r.resyncs, 0);
    for (int i = 0; i < n; i++)
        assert_int_equal(r.versions[i], want[i]);
    syncd_bus_unsubscribe(sub);
}

static void
test_local_bus__repeated_and_older_versions_are_dropped_at_the_source(
    void **state)
{
    static const int64_t want[] = {1, 2, 1, 2};
    char dir[256];
    uv_loop_t loop;
    syncd_bus_t *bus;

    (void)state;
    uv_loop_init(&loop);
    bus = open_bus(&loop, NULL, NULL, NULL, 0);
    expect_dedupe(&loop, bus, 1);
    expect_versions(&loop, bus, 0, 4, want, 4);
    close_bus(&loop, bus);

    assert_int_equal(syncd_test_tmpdir(dir, sizeof(dir), "bus"), 0);
    bus = open_bus(&loop, NULL, dir, NULL, 0);
    expect_dedupe(&loop, bus, 1);
    expect_versions(&loop, bus, 0, 4, want, 4);
    close_bus(&loop, bus);
    end_loop(&loop);
    syncd_test_rmtree(dir);
}

static void
test_local_bus__a_purged_id_is_forgotten_only_at_its_tombstones_version(
    void **state)
{
    char dir[256];
    uv_loop_t loop;
    syncd_bus_t *bus;
    pub1_t p;

    (void)state;
    uv_loop_init(&loop);
    bus = open_bus(&loop, NULL, NULL, NULL, 0);
    expect_forget(&loop, bus, 1);
    close_bus(&loop, bus);

    assert_int_equal(syncd_test_tmpdir(dir, sizeof(dir), "bus"), 0);
    bus = open_bus(&loop, NULL, dir, NULL, 0);
    expect_forget(&loop, bus, 1);
    close_bus(&loop, bus);
    /* What went is gone from RocksDB: after a reopen, fg's v2 is new. */
    bus = open_bus(&loop, NULL, dir, NULL, 0);
    p = publish_one(&loop, bus, make_event("fg", 2));
    assert_int_equal(p.seq, 5);
    p = publish_one(&loop, bus, make_event("fk", 1));
    assert_int_equal(p.seq, 0);
    close_bus(&loop, bus);
    end_loop(&loop);
    syncd_test_rmtree(dir);
}

static void
test_local_bus__a_version_is_refused_until_the_one_before_it_is_published(
    void **state)
{
    static const int64_t want[] = {1, 2, 3, 7, 8, 9, 1, 2, 3};
    char dir[256];
    uv_loop_t loop;
    syncd_bus_t *bus;

    (void)state;
    uv_loop_init(&loop);
    bus = open_bus(&loop, NULL, NULL, NULL, 0);
    expect_in_order(&loop, bus, bus, 1);
    expect_versions(&loop, bus, 0, 9, want, 9);
    close_bus(&loop, bus);

    assert_int_equal(syncd_test_tmpdir(dir, sizeof(dir), "bus"), 0);
    bus = open_bus(&loop, NULL, dir, NULL, 0);
    expect_in_order(&loop, bus, bus, 1);
    expect_versions(&loop, bus, 0, 9, want, 9);
    close_bus(&loop, bus);
    end_loop(&loop);
    syncd_test_rmtree(dir);
}

/* Child of a crash test (this binary run with --publish-then-die DIR: a
 * process of its own, since a child forked from the threaded test process
 * cannot start threads under ThreadSanitizer): publishes versions 1..5 of
 * "crash" on the bus in dir, each acknowledged, then exits without closing
 * anything, as a process that dies does. Exits 0, or 1 when a publish
 * failed. */
static void publish_then_die(const char *dir)
{
    syncd_bus_options_t opts;
    syncd_bus_t *bus = NULL;
    uv_loop_t loop;
    pub1_t p;

    uv_loop_init(&loop);
    test_options(&opts, NULL, dir);
    if (syncd_bus_open(&bus, &loop, &opts, NULL) != 0)
        _exit(1);
    for (int64_t v = 1; v <= 5; v++) {
        json_t *event = make_event("crash", v);

        memset(&p, 0, sizeof(p));
        if (syncd_bus_publish(bus, event, on_pub1, &p) != 0)
            _exit(1);
        json_decref(event);
        while (!p.done)
            uv_run(&loop, UV_RUN_ONCE);
        if (p.status != 0 || p.seq != v)
            _exit(1);
    }
    _exit(0);
}

static void
test_local_bus__acknowledged_publishes_survive_a_crash_and_dedupe_survives_a_reopen(
    void **state)
{
    static const int64_t want[] = {1, 2, 3, 4, 5, 6};
    char dir[256];
    uv_loop_t loop;
    syncd_bus_t *bus;
    pid_t pid;
    int status = -1;
    pub1_t p;

    (void)state;
    assert_int_equal(syncd_test_tmpdir(dir, sizeof(dir), "bus"), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl("/proc/self/exe", "test_pubsub", "--publish-then-die", dir,
              (char *)NULL);
        _exit(127);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    uv_loop_init(&loop);
    bus = open_bus(&loop, NULL, dir, NULL, 0);
    assert_int_equal(current_seq(&loop, bus), 5);
    p = publish_one(&loop, bus, make_event("crash", 5));
    assert_int_equal(p.status, 0);
    assert_int_equal(p.seq, 0);
    p = publish_one(&loop, bus, make_event("crash", 3));
    assert_int_equal(p.seq, 0);
    p = publish_one(&loop, bus, make_event("crash", 6));
    assert_int_equal(p.seq, 6);
    expect_versions(&loop, bus, 0, 6, want, 6);
    close_bus(&loop, bus);

    bus = open_bus(&loop, NULL, dir, NULL, 0);
    p = publish_one(&loop, bus, make_event("crash", 6));
    assert_int_equal(p.status, 0);
    assert_int_equal(p.seq, 0);
    assert_int_equal(current_seq(&loop, bus), 6);
    close_bus(&loop, bus);
    end_loop(&loop);
    syncd_test_rmtree(dir);
}

static void
test_local_bus__persisted_publishes_complete_in_seq_order(void **state)
{
    char dir[256];
    uv_loop_t loop;
    syncd_bus_t *bus;
    syncd_bus_sub_t *sub;
    rec_t r = {0};
    pubs_t p;

    (void)state;
    assert_int_equal(syncd_test_tmpdir(dir, sizeof(dir), "bus"), 0);
    uv_loop_init(&loop);
    bus = open_bus(&loop, NULL, dir, NULL, 0);
    assert_int_equal(
        syncd_bus_subscribe(bus, &sub, COLL, 0, on_event, &r, NULL), 0);
    publish_all(&loop, &p, bus, 300);
    assert_int_equal(p.out_of_order, 0);
    for (int s = 1; s <= 300; s++)
        assert_true(p.seen[s]);
    wait_recs(&loop, 300, &r, NULL);
    assert_int_equal(r.events, 300);
    assert_int_equal(r.out_of_order + r.resyncs, 0);
    syncd_bus_unsubscribe(sub);
    close_bus(&loop, bus);
    end_loop(&loop);
    syncd_test_rmtree(dir);
}

static int no_collections(void *arg)
{
    syncd_bus_stats_t st;

    syncd_bus_stats(arg, &st);
    return st.collections == 0;
}

/* Subscribes to and unsubscribes from 20,000 distinct collections on bus,
 * and checks that the bus holds state for none of them afterwards. */
static void expect_collections_freed(uv_loop_t *loop, syncd_bus_t *bus)
{
    syncd_bus_stats_t st;

    for (int i = 0; i < 20000; i++) {
        syncd_bus_sub_t *sub;
        rec_t r = {0};
        char name[32];

        snprintf(name, sizeof(name), "c-%d", i);
        assert_int_equal(syncd_bus_subscribe(bus, &sub, name, i % 2 ? -1 : 0,
                                             on_event, &r, NULL),
                         0);
        syncd_bus_stats(bus, &st);
        assert_true(st.collections >= 1);
        syncd_bus_unsubscribe(sub);
        if (i % 500 == 0)
            uv_run(loop, UV_RUN_NOWAIT);
    }
    wait_for(loop, no_collections, bus);
}

static void test_local_bus__state_of_idle_collections_is_freed(void **state)
{
    char dir[256];
    uv_loop_t loop;
    syncd_bus_t *bus;
    syncd_bus_stats_t st;

    (void)state;
    uv_loop_init(&loop);
    bus = open_bus(&loop, NULL, NULL, NULL, 0);
    expect_collections_freed(&loop, bus);
    close_bus(&loop, bus);

    assert_int_equal(syncd_test_tmpdir(dir, sizeof(dir), "bus"), 0);
    bus = open_bus(&loop, NULL, dir, NULL, 0);
    expect_collections_freed(&loop, bus);
    /* A persisted collection is freed once idle, and its seq and events
     * come back from RocksDB. */
    assert_int_equal(publish_one(&loop, bus, make_event("x", 1)).seq, 1);
    wait_for(&loop, no_collections, bus);
    assert_int_equal(current_seq(&loop, bus), 1);
    check_replay(&loop, bus, 0, -1, 0, 1);
    syncd_bus_stats(bus, &st);
    assert_int_equal(st.collections, 0);
    close_bus(&loop, bus);
    end_loop(&loop);
    syncd_test_rmtree(dir);
}

/* ---- Redis bus ----------------------------------------------------------- */

static int setup_redis(void **state)
{
    syncd_test_server_t *srv = calloc(1, sizeof(*srv));

    assert_non_null(srv);
    assert_int_equal(syncd_test_redis_start(srv), 0);
    *state = srv;
    return 0;
}

static int teardown_redis(void **state)
{
    syncd_test_server_destroy(*state);
    free(*state);
    return 0;
}

/* Empties srv, thawing it first should a failed test have left it
 * stopped. */
static void flush(const syncd_test_server_t *srv)
{
    kill(srv->pid, SIGCONT);
    assert_int_equal(syncd_test_redis_cli(srv, "FLUSHALL", NULL), 0);
}

/* Sends text as a raw message on COLL's channel, bypassing the bus. */
static void raw_publish(const syncd_test_server_t *srv, const char *text)
{
    redisContext *c = redisConnect("127.0.0.1", srv->port);
    redisReply *reply;

    assert_non_null(c);
    assert_int_equal(c->err, 0);
    reply = redisCommand(c, "PUBLISH syncd:test:" COLL " %s", text);
    assert_non_null(reply);
    freeReplyObject(reply);
    redisFree(c);
}

/* Returns the encoded event for doc version v with the given seq (signed
 * with secret when not NULL); caller frees. */
static char *raw_event(int64_t seq, int64_t v, const char *secret)
{
    json_t *event = make_event("doc", v);
    char *text;

    json_object_set_new(event, "seq", json_integer(seq));
    text = syncd_event_encode(event, secret, NULL);
    json_decref(event);
    assert_non_null(text);
    return text;
}

/* A bus on the test Redis with one subscription to COLL from seq 0. */
typedef struct peer {
    syncd_bus_t *bus;
    syncd_bus_sub_t *sub;
    rec_t rec;
} peer_t;

/* Opens p's bus on srv, signing with secret (NULL: unsigned), and
 * subscribes it. */
static void peer_open(uv_loop_t *loop, peer_t *p,
                      const syncd_test_server_t *srv, const char *secret)
{
    memset(p, 0, sizeof(*p));
    p->bus = open_bus(loop, srv->uri, NULL, secret, 0);
    assert_int_equal(
        syncd_bus_subscribe(p->bus, &p->sub, COLL, 0, on_event, &p->rec, NULL),
        0);
}

/* Opens a's bus as peer_open() does, publishes n events on it with p and
 * waits until a's subscription saw them. */
static void peer_open_published(uv_loop_t *loop, peer_t *a,
                                const syncd_test_server_t *srv,
                                const char *secret, pubs_t *p, int n)
{
    peer_open(loop, a, srv, secret);
    publish_all(loop, p, a->bus, n);
    wait_recs(loop, n, &a->rec, NULL);
}

/* Waits until a's bus is back and has resynced, publishes one event on it
 * with p, and checks that a, which had seen n events, was told to resync
 * once, at seq at, and then saw the new event at + 1. */
static void expect_resynced_once(uv_loop_t *loop, peer_t *a, pubs_t *p, int n,
                                 int64_t at)
{
    wait_for(loop, bus_up, a->bus);
    wait_for(loop, flag_set, &a->rec.resyncs);
    publish_all(loop, p, a->bus, 1);
    assert_true(p->seen[at + 1]);
    wait_recs(loop, at + 1, &a->rec, NULL);
    assert_int_equal(a->rec.resyncs, 1);
    assert_int_equal(a->rec.resync_seq[0], at);
    assert_int_equal(a->rec.events, n + 1);
    assert_int_equal(a->rec.out_of_order, 0);
}

/* Unsubscribes and closes p's bus. */
static void peer_close(uv_loop_t *loop, peer_t *p)
{
    syncd_bus_unsubscribe(p->sub);
    close_bus(loop, p->bus);
}

static void test_redis_bus__bad_url_fails_with_EINVAL_naming_it(void **state)
{
    const char *bad[] = {"http://x:1",      "redis://",      "redis://h:0",
                         "redis://h:99999", "redis://h:1/x", "redis://h:1/2/3"};
    syncd_bus_options_t opts;
    syncd_error_t err;
    syncd_bus_t *bus;
    uv_loop_t loop;

    (void)state;
    uv_loop_init(&loop);
    syncd_bus_options_init(&opts);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        syncd_error_clear(&err);
        opts.redis_url = bad[i];
        assert_int_equal(syncd_bus_open(&bus, &loop, &opts, &err),
                         SYNCD_EINVAL);
        assert_null(bus);
        assert_non_null(strstr(err.message, bad[i]));
    }
    end_loop(&loop);
}

static void
test_redis_bus__bad_credentials_in_the_url_fail_without_echoing_them(
    void **state)
{
    const char *bad[] = {
        "redis://user:pw-secret@",    "redis://user:pw-secret@h:0",
        "redis://user:@h:1",          "redis://pw-secret@h:1",
        "redis://u:pw-secret%zz@h:1", "redis://u:pw-secret%0a@h:1"};
    syncd_bus_options_t opts;
    syncd_error_t err;
    syncd_bus_t *bus;
    uv_loop_t loop;

    (void)state;
    uv_loop_init(&loop);
    syncd_bus_options_init(&opts);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        syncd_error_clear(&err);
        opts.redis_url = bad[i];
        assert_int_equal(syncd_bus_open(&bus, &loop, &opts, &err),
                         SYNCD_EINVAL);
        assert_null(bus);
        assert_non_null(strstr(err.message, "redis://<credentials>@"));
        assert_null(strstr(err.message, "pw-secret"));
    }
    end_loop(&loop);
}

/* Runs cmd (a format of hiredis) on srv authenticated as user with pass;
 * asserts a reply that is not an error. */
static void command_as(const syncd_test_server_t *srv, const char *user,
                       const char *pass, const char *cmd)
{
    redisContext *c = redisConnect("127.0.0.1", srv->port);
    redisReply *reply;

    assert_non_null(c);
    assert_int_equal(c->err, 0);
    reply = redisCommand(c, "AUTH %s %s", user, pass);
    assert_non_null(reply);
    assert_int_not_equal(reply->type, REDIS_REPLY_ERROR);
    freeReplyObject(reply);
    reply = redisCommand(c, cmd);
    assert_non_null(reply);
    assert_int_not_equal(reply->type, REDIS_REPLY_ERROR);
    freeReplyObject(reply);
    redisFree(c);
}

static void
test_redis_bus__acl_user_of_the_url_authenticates_a_wrong_password_never_connects(
    void **state)
{
    syncd_test_server_t *srv = *state;
    syncd_bus_options_t opts;
    syncd_bus_t *bus;
    syncd_bus_sub_t *sub;
    syncd_bus_stats_t st;
    rec_t r = {0};
    uv_loop_t loop;
    char url[128];

    flush(srv);
    assert_int_equal(syncd_test_redis_cli(srv, "ACL", "SETUSER", "bus-user",
                                          "on", ">p@ss/w", "~syncd:*",
                                          "&syncd:*", "+@all", NULL),
                     0);
    assert_int_equal(
        syncd_test_redis_cli(srv, "ACL", "SETUSER", "default", "off", NULL), 0);
    uv_loop_init(&loop);
    /* The password percent-encoded ('@' and '/'), as RFC 3986 wants. */
    snprintf(url, sizeof(url), "redis://bus-user:p%%40ss%%2Fw@127.0.0.1:%d/",
             srv->port);
    bus = open_bus(&loop, url, NULL, "k", 0);
    assert_int_equal(
        syncd_bus_subscribe(bus, &sub, COLL, 0, on_event, &r, NULL), 0);
    assert_int_equal(publish_one(&loop, bus, make_event("acl", 1)).seq, 1);
    wait_recs(&loop, 1, &r, NULL);
    assert_int_equal(r.events, 1);
    syncd_bus_stats(bus, &st);
    assert_int_equal(st.auth_failures, 0);
    syncd_bus_unsubscribe(sub);
    close_bus(&loop, bus);

    snprintf(url, sizeof(url), "redis://bus-user:wrong@127.0.0.1:%d/",
             srv->port);
    test_options(&opts, url, NULL);
    assert_int_equal(syncd_bus_open(&bus, &loop, &opts, NULL), 0);
    run_for(&loop, 500);
    assert_false(syncd_bus_connected(bus));
    syncd_bus_stats(bus, &st);
    assert_true(st.auth_failures >= 1);
    close_bus(&loop, bus);
    end_loop(&loop);
    command_as(srv, "bus-user", "p@ss/w", "ACL SETUSER default on");
    assert_int_equal(
        syncd_test_redis_cli(srv, "ACL", "DELUSER", "bus-user", NULL), 0);
}

static void
test_redis_bus__two_nodes_see_identical_contiguous_seqs(void **state)
{
    syncd_test_server_t *srv = *state;
    uv_loop_t loop;
    peer_t a, b;
    pubs_t pa, pb;
    syncd_bus_stats_t st;

    flush(srv);
    uv_loop_init(&loop);
    peer_open(&loop, &a, srv, "secret");
    peer_open(&loop, &b, srv, "secret");
    assert_string_equal(syncd_bus_kind(a.bus), "redis");
    pubs_init(&pa, a.bus, 250, 16);
    pubs_init(&pb, b.bus, 250, 16);
    pa.id = "doc-a";
    pb.id = "doc-b";
    publish_next(&pa);
    publish_next(&pb);
    wait_for(&loop, pubs_done, &pa);
    wait_for(&loop, pubs_done, &pb);
    assert_int_equal(pa.failed + pb.failed, 0);
    for (int s = 1; s <= 500; s++)
        assert_int_equal(pa.seen[s] + pb.seen[s], 1);
    wait_recs(&loop, 500, &a.rec, &b.rec);
    assert_int_equal(a.rec.events, 500);
    assert_int_equal(b.rec.events, 500);
    assert_int_equal(a.rec.out_of_order + b.rec.out_of_order, 0);
    assert_int_equal(a.rec.resyncs + b.rec.resyncs, 0);
    assert_int_equal(current_seq(&loop, b.bus), 500);
    check_replay(&loop, a.bus, 100, 200, 0, 100);
    syncd_bus_stats(a.bus, &st);
    assert_int_equal(st.published, 250);
    assert_int_equal(st.dropped_signature + st.dropped_malformed, 0);
    peer_close(&loop, &a);
    peer_close(&loop, &b);
    end_loop(&loop);
}

static void test_redis_bus__client_kill_during_storm_loses_nothing(void **state)
{
    syncd_test_server_t *srv = *state;
    uv_loop_t loop;
    peer_t a, b;
    pubs_t p;
    syncd_bus_stats_t sta, stb;

    flush(srv);
    uv_loop_init(&loop);
    peer_open(&loop, &a, srv, NULL);
    peer_open(&loop, &b, srv, NULL);
    pubs_init(&p, a.bus, 3000, 100);
    p.kill_at = 1000;
    p.srv = srv;
    publish_next(&p);
    wait_for(&loop, pubs_done, &p);
    assert_int_equal(p.failed, 0);
    wait_recs(&loop, 3000, &a.rec, &b.rec);
    assert_int_equal(a.rec.events, 3000);
    assert_int_equal(b.rec.events, 3000);
    assert_int_equal(a.rec.out_of_order + b.rec.out_of_order, 0);
    assert_int_equal(a.rec.resyncs + b.rec.resyncs, 0);
    syncd_bus_stats(a.bus, &sta);
    syncd_bus_stats(b.bus, &stb);
    assert_true(sta.reconnects >= 1);
    assert_true(stb.reconnects >= 1);
    peer_close(&loop, &a);
    peer_close(&loop, &b);
    end_loop(&loop);
}

static void
test_redis_bus__restart_fails_publishes_then_resyncs_once(void **state)
{
    syncd_test_server_t *srv = *state;
    uv_loop_t loop;
    peer_t a, b;
    pubs_t p;
    json_t *event;

    flush(srv);
    uv_loop_init(&loop);
    peer_open(&loop, &a, srv, NULL);
    peer_open(&loop, &b, srv, NULL);
    publish_all(&loop, &p, a.bus, 10);
    wait_recs(&loop, 10, &a.rec, &b.rec);

    syncd_test_redis_cli(srv, "SHUTDOWN", "NOSAVE", NULL);
    wait_for(&loop, bus_down, a.bus);
    wait_for(&loop, bus_down, b.bus);
    event = make_event("doc", 11);
    assert_int_equal(syncd_bus_publish(a.bus, event, NULL, NULL),
                     SYNCD_EBACKEND);
    json_decref(event);
    assert_int_equal(syncd_test_server_restart(srv), 0);
    wait_for(&loop, bus_up, a.bus);
    wait_for(&loop, bus_up, b.bus);

    /* Redis lost the counter and the log: a new epoch. Each subscriber is
     * told to resync once, at 11, a seq never handed out: seqs go on
     * above everything seen and 11 is in no log, so a reader resuming
     * from a seq of the old epoch (10 or less) finds that the log no
     * longer holds what follows it (a watch answers 410), never events
     * renumbered into its old sequence. */
    wait_for(&loop, flag_set, &a.rec.resyncs);
    wait_for(&loop, flag_set, &b.rec.resyncs);
    pubs_init(&p, b.bus, 5, 1);
    publish_next(&p);
    wait_for(&loop, pubs_done, &p);
    assert_int_equal(p.failed, 0);
    for (int s = 12; s <= 16; s++)
        assert_true(p.seen[s]);
    wait_recs(&loop, 16, &a.rec, &b.rec);
    assert_int_equal(a.rec.resyncs, 1);
    assert_int_equal(b.rec.resyncs, 1);
    assert_int_equal(a.rec.resync_seq[0], 11);
    assert_int_equal(b.rec.resync_seq[0], 11);
    assert_int_equal(a.rec.events, 15);
    assert_int_equal(b.rec.events, 15);
    assert_int_equal(a.rec.out_of_order + b.rec.out_of_order, 0);
    assert_int_equal(current_seq(&loop, a.bus), 16);
    for (int64_t after = 0; after <= 10; after++)
        check_replay(&loop, a.bus, after, -1, SYNCD_ENOTFOUND, 0);
    check_replay(&loop, a.bus, 11, -1, 0, 5);
    peer_close(&loop, &a);
    peer_close(&loop, &b);
    end_loop(&loop);
}

/* Shuts srv down without saving and reaps it: its port is closed, so
 * connects to it are refused until it restarts. */
static void redis_down(uv_loop_t *loop, syncd_test_server_t *srv,
                       syncd_bus_t *bus)
{
    assert_int_equal(syncd_test_redis_cli(srv, "SHUTDOWN", "NOSAVE", NULL), 0);
    assert_int_equal(syncd_test_server_stop(srv), 0);
    wait_for(loop, bus_down, bus);
}

static void
test_redis_bus__bus_reconnects_by_itself_after_redis_was_down(void **state)
{
    syncd_test_server_t *srv = *state;
    uv_loop_t loop;
    peer_t a;
    pubs_t p;
    syncd_bus_stats_t st;

    flush(srv);
    uv_loop_init(&loop);
    peer_open_published(&loop, &a, srv, NULL, &p, 5);
    redis_down(&loop, srv, a.bus);
    /* Several reconnect attempts find the port closed. */
    run_for(&loop, 500);
    assert_false(syncd_bus_connected(a.bus));
    assert_int_equal(syncd_test_server_restart(srv), 0);
    /* Redis lost its data: seq 6 is never handed out (a new epoch). */
    expect_resynced_once(&loop, &a, &p, 5, 6);
    syncd_bus_stats(a.bus, &st);
    assert_true(st.reconnects >= 1);
    peer_close(&loop, &a);
    end_loop(&loop);
}

static void
test_redis_bus__data_loss_is_detected_when_the_same_bus_sets_the_epoch_again(
    void **state)
{
    syncd_test_server_t *srv = *state;
    uv_loop_t loop;
    peer_t a;
    pubs_t p;

    flush(srv);
    uv_loop_init(&loop);
    peer_open_published(&loop, &a, srv, NULL, &p, 10);
    redis_down(&loop, srv, a.bus);
    assert_int_equal(syncd_test_server_restart(srv), 0);
    /* Before the bus is back, the counter is where the bus left it (as if
     * another node had published since): neither the counter nor the log
     * shows the loss, and this bus is the one that sets the epoch again. */
    assert_int_equal(
        syncd_test_redis_cli(srv, "SET", "syncd:test:" COLL ":seq", "10", NULL),
        0);
    expect_resynced_once(&loop, &a, &p, 10, 10);
    peer_close(&loop, &a);
    end_loop(&loop);
}

/* A TCP server on the loop that accepts connections and never answers,
 * like a Redis that is stopped. */
typedef struct mute {
    uv_tcp_t server;
    uv_tcp_t clients[8];
    int accepted;
} mute_t;

static void on_mute_connection(uv_stream_t *server, int status)
{
    mute_t *m = server->data;
    uv_tcp_t *client = &m->clients[m->accepted];

    assert_int_equal(status, 0);
    assert_true(m->accepted < 8);
    assert_int_equal(uv_tcp_init(server->loop, client), 0);
    assert_int_equal(uv_accept(server, (uv_stream_t *)client), 0);
    m->accepted++;
}

static int three_accepted(void *arg)
{
    return ((mute_t *)arg)->accepted >= 3;
}

static void
test_redis_bus__server_that_never_answers_is_dropped_and_retried(void **state)
{
    uv_loop_t loop;
    mute_t m = {0};
    struct sockaddr_in addr;
    syncd_bus_options_t opts;
    syncd_bus_t *bus;
    char url[64];
    int port = syncd_test_free_port();

    (void)state;
    assert_true(port > 0);
    uv_loop_init(&loop);
    assert_int_equal(uv_tcp_init(&loop, &m.server), 0);
    m.server.data = &m;
    assert_int_equal(uv_ip4_addr("127.0.0.1", port, &addr), 0);
    assert_int_equal(uv_tcp_bind(&m.server, (const struct sockaddr *)&addr, 0),
                     0);
    assert_int_equal(uv_listen((uv_stream_t *)&m.server, 8, on_mute_connection),
                     0);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    syncd_bus_options_init(&opts);
    opts.redis_url = url;
    opts.reconnect_min_ms = 10;
    opts.reconnect_max_ms = 200;
    assert_int_equal(syncd_bus_open(&bus, &loop, &opts, NULL), 0);
    /* Both connections are accepted; the command connection never gets
     * its setup answered, so the bus gives up on it and connects again. */
    wait_for(&loop, three_accepted, &m);
    assert_false(syncd_bus_connected(bus));
    close_bus(&loop, bus);
    for (int i = 0; i < m.accepted; i++)
        uv_close((uv_handle_t *)&m.clients[i], NULL);
    uv_close((uv_handle_t *)&m.server, NULL);
    end_loop(&loop);
}

static void test_redis_bus__trimmed_log_resyncs_a_late_subscriber(void **state)
{
    syncd_test_server_t *srv = *state;
    uv_loop_t loop;
    syncd_bus_t *a;
    syncd_bus_sub_t *sub;
    rec_t r = {0};
    pubs_t p;

    flush(srv);
    uv_loop_init(&loop);
    a = open_bus(&loop, srv->uri, NULL, NULL, 10);
    publish_all(&loop, &p, a, 500);
    check_replay(&loop, a, 0, -1, SYNCD_ENOTFOUND, 0);
    check_replay(&loop, a, 495, -1, 0, 5);
    assert_int_equal(syncd_bus_subscribe(a, &sub, COLL, 0, on_event, &r, NULL),
                     0);
    wait_recs(&loop, 500, &r, NULL);
    assert_int_equal(r.resyncs, 1);
    assert_true(r.resync_seq[0] >= 10 && r.resync_seq[0] <= 490);
    assert_int_equal(r.events, 500 - r.resync_seq[0]);
    assert_int_equal(r.out_of_order, 0);
    syncd_bus_unsubscribe(sub);
    close_bus(&loop, a);
    end_loop(&loop);
}

/* A bus and its counters before an injection. */
typedef struct snap {
    syncd_bus_t *bus;
    syncd_bus_stats_t before;
} snap_t;

static int dup_seen(void *arg)
{
    snap_t *snap = arg;
    syncd_bus_stats_t st;

    syncd_bus_stats(snap->bus, &st);
    return st.dropped_duplicate > snap->before.dropped_duplicate;
}

static int malformed_seen(void *arg)
{
    snap_t *snap = arg;
    syncd_bus_stats_t st;

    syncd_bus_stats(snap->bus, &st);
    return st.dropped_malformed > snap->before.dropped_malformed;
}

/* Returns once bus has handled every message sent on COLL's channel so
 * far: the channel is one connection, in order, so a malformed message
 * sent last is counted after all of them. */
static void drain_channel(uv_loop_t *loop, const syncd_test_server_t *srv,
                          syncd_bus_t *bus)
{
    snap_t snap = {.bus = bus};

    syncd_bus_stats(bus, &snap.before);
    raw_publish(srv, "not json");
    wait_for(loop, malformed_seen, &snap);
}

static void
test_redis_bus__duplicates_and_reordering_are_fixed_from_the_log(void **state)
{
    syncd_test_server_t *srv = *state;
    uv_loop_t loop;
    peer_t a;
    pubs_t p;
    snap_t snap;
    syncd_bus_stats_t st, *before = &snap.before;
    char *e2, *e4, *e5;

    flush(srv);
    uv_loop_init(&loop);
    peer_open_published(&loop, &a, srv, NULL, &p, 3);
    /* Seqs 1-3 may have come from the log first: their live copies, late
     * duplicates, are counted before the snapshot. */
    drain_channel(&loop, srv, a.bus);
    snap.bus = a.bus;
    syncd_bus_stats(a.bus, &snap.before);

    e2 = raw_event(2, 2, NULL);
    raw_publish(srv, e2);
    wait_for(&loop, dup_seen, &snap);

    /* Seqs 4 and 5 land in the log, but their messages arrive 5 first. */
    e4 = raw_event(4, 4, NULL);
    e5 = raw_event(5, 5, NULL);
    assert_int_equal(
        syncd_test_redis_cli(srv, "SET", "syncd:test:" COLL ":seq", "5", NULL),
        0);
    assert_int_equal(syncd_test_redis_cli(srv, "XADD",
                                          "syncd:test:" COLL ":log", "4-1", "e",
                                          e4, NULL),
                     0);
    assert_int_equal(syncd_test_redis_cli(srv, "XADD",
                                          "syncd:test:" COLL ":log", "5-1", "e",
                                          e5, NULL),
                     0);
    raw_publish(srv, e5);
    wait_recs(&loop, 5, &a.rec, NULL);
    raw_publish(srv, e4);
    publish_all(&loop, &p, a.bus, 1);
    assert_true(p.seen[6]);
    wait_recs(&loop, 6, &a.rec, NULL);
    assert_int_equal(a.rec.events, 6);
    assert_int_equal(a.rec.out_of_order, 0);
    syncd_bus_stats(a.bus, &st);
    assert_int_equal(st.gaps - before->gaps, 1);
    assert_int_equal(st.dropped_duplicate - before->dropped_duplicate, 2);
    assert_int_equal(st.replayed - before->replayed, 2);
    free(e2);
    free(e4);
    free(e5);
    peer_close(&loop, &a);
    end_loop(&loop);
}

static int drops_seen(void *arg)
{
    syncd_bus_stats_t st;

    syncd_bus_stats(arg, &st);
    return st.dropped_signature >= 2 && st.dropped_malformed >= 1 &&
           st.dropped_oversize >= 1;
}

static void test_redis_bus__forged_and_malformed_events_are_dropped_and_counted(
    void **state)
{
    syncd_test_server_t *srv = *state;
    uv_loop_t loop;
    peer_t a;
    pubs_t p;
    syncd_bus_stats_t st;
    char *forged, *unsigned_event, big[5000];

    flush(srv);
    uv_loop_init(&loop);
    peer_open_published(&loop, &a, srv, "cluster-key", &p, 1);

    forged = raw_event(2, 2, "wrong-key");
    unsigned_event = raw_event(2, 2, NULL);
    memset(big, ' ', sizeof(big) - 1);
    big[0] = '{';
    big[sizeof(big) - 2] = '}';
    big[sizeof(big) - 1] = '\0';
    raw_publish(srv, forged);
    raw_publish(srv, unsigned_event);
    raw_publish(srv, "not json");
    raw_publish(srv, big);
    wait_for(&loop, drops_seen, a.bus);
    assert_int_equal(a.rec.events, 1);

    publish_all(&loop, &p, a.bus, 1);
    assert_true(p.seen[2]);
    wait_recs(&loop, 2, &a.rec, NULL);
    assert_int_equal(a.rec.events, 2);
    assert_int_equal(a.rec.out_of_order, 0);
    syncd_bus_stats(a.bus, &st);
    assert_int_equal(st.dropped_signature, 2);
    assert_int_equal(st.dropped_malformed, 1);
    assert_int_equal(st.dropped_oversize, 1);
    free(forged);
    free(unsigned_event);
    peer_close(&loop, &a);
    end_loop(&loop);
}

/* Publishes event_new (stolen) on bus and runs the loop until sub's
 * callback (k) saw seq target; returns the publish's outcome. */
static pub1_t publish_seen(uv_loop_t *loop, syncd_bus_t *bus, json_t *event_new,
                           kept_t *k, int64_t target)
{
    pub1_t p = publish_one(loop, bus, event_new);

    k->target = target;
    wait_for(loop, kept_all, k);
    return p;
}

/* The text a bus with secret publishes for event as seq: its encoding
 * (syncd_event_encode(), as syncd_bus_encode() does) with "seq" spliced
 * in first, as the publish script does; caller frees. */
static char *spliced_text(const json_t *event, const char *secret, int64_t seq)
{
    json_t *copy = json_copy((json_t *)event);
    size_t len;
    char *text = syncd_event_encode(copy, secret, &len), *out;

    assert_non_null(text);
    out = malloc(len + 32);
    assert_non_null(out);
    snprintf(out, len + 32, "{\"seq\":%lld,%s", (long long)seq, text + 1);
    free(text);
    json_decref(copy);
    return out;
}

/* A subscription that needs no body of its bus's own events gets them as
 * seqs alone, known by their bytes (counted), and every other event
 * whole; a forgery that borrows the seq of an own event on its way, with
 * one byte changed, is still decoded and its signature checked. Wanting
 * every body again brings the bus's own events whole. */
static void
test_redis_bus__its_own_events_come_back_known_by_their_bytes(void **state)
{
    syncd_test_server_t *srv = *state;
    const char *secret = "cluster-key";
    uv_loop_t loop;
    syncd_bus_t *a, *b;
    syncd_bus_sub_t *sub;
    syncd_bus_stats_t st;
    kept_t k = {json_array(), 0, 1};
    json_t *mine = make_event("doc", 1);
    char *forged, *at;

    flush(srv);
    uv_loop_init(&loop);
    a = open_bus(&loop, srv->uri, NULL, secret, 0);
    b = open_bus(&loop, srv->uri, NULL, secret, 0);
    assert_int_equal(
        syncd_bus_subscribe(a, &sub, COLL, 0, on_event_kept, &k, NULL), 0);
    syncd_bus_sub_want_bodies(sub, SYNCD_BUS_BODIES_OTHERS);
    /* Live once another node's first event came. */
    assert_int_equal(publish_seen(&loop, b, make_event("x", 1), &k, 1).seq, 1);

    /* The forgery reaches Redis first: a's publish is sent when the loop
     * runs, and it takes the next seq, 2, which the forgery borrows. */
    forged = spliced_text(mine, secret, 2);
    at = strstr(forged, "node-test");
    assert_non_null(at);
    at[8] = 'x';
    assert_int_equal(syncd_bus_publish(a, mine, NULL, NULL), 0);
    raw_publish(srv, forged);
    k.target = 2;
    wait_for(&loop, kept_all, &k);
    assert_int_equal(publish_seen(&loop, b, make_event("y", 1), &k, 3).seq, 3);
    assert_int_equal(publish_seen(&loop, a, make_event("doc", 2), &k, 4).seq,
                     4);
    syncd_bus_stats(a, &st);
    assert_int_equal(st.received_own, 2);
    assert_int_equal(st.dropped_signature, 1);

    syncd_bus_sub_want_bodies(sub, SYNCD_BUS_BODIES_ALL);
    assert_int_equal(publish_seen(&loop, a, make_event("doc", 3), &k, 5).seq,
                     5);
    syncd_bus_stats(a, &st);
    assert_int_equal(st.received_own, 2);
    assert_int_equal(json_array_size(k.events), 5);
    for (size_t i = 0; i < 5; i++) {
        const json_t *ev = json_array_get(k.events, i);

        if (i == 1 || i == 3) {
            assert_true(json_is_null(ev));
        } else {
            assert_true(json_is_object(ev));
            assert_int_equal(json_integer_value(json_object_get(ev, "seq")),
                             (json_int_t)i + 1);
        }
    }
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(k.events, 4), "origin")),
                        "node-test");
    syncd_bus_unsubscribe(sub);
    json_decref(mine);
    json_decref(k.events);
    free(forged);
    close_bus(&loop, a);
    close_bus(&loop, b);
    end_loop(&loop);
}

static void
test_redis_bus__a_purged_id_is_forgotten_only_at_its_tombstones_version(
    void **state)
{
    syncd_test_server_t *srv = *state;
    const char *pubv = "syncd:test:" COLL ":pubv";
    uv_loop_t loop;
    syncd_bus_t *a, *b;
    pub1_t p;

    flush(srv);
    uv_loop_init(&loop);
    a = open_bus(&loop, srv->uri, NULL, NULL, 0);
    b = open_bus(&loop, srv->uri, NULL, NULL, 0);
    expect_forget(&loop, a, 1);
    /* Redis holds fk's record only (fg's went last). */
    assert_int_equal(syncd_test_redis_hlen(srv, pubv), 1);
    /* Another node's forget reaches the records every node shares. */
    assert_int_equal(forget_now(&loop, b, json_pack("{s:i}", "fk", 1)), 1);
    assert_int_equal(syncd_test_redis_hlen(srv, pubv), 0);
    p = publish_one(&loop, a, make_event("fk", 1));
    assert_int_equal(p.seq, 5);
    close_bus(&loop, a);
    close_bus(&loop, b);
    end_loop(&loop);
}

static void
test_redis_bus__repeated_and_older_versions_are_dropped_across_nodes(
    void **state)
{
    static const int64_t want[] = {1, 2, 1, 2, 3};
    syncd_test_server_t *srv = *state;
    uv_loop_t loop;
    syncd_bus_t *a, *b;
    syncd_bus_stats_t st;
    pub1_t p;

    flush(srv);
    uv_loop_init(&loop);
    a = open_bus(&loop, srv->uri, NULL, NULL, 0);
    b = open_bus(&loop, srv->uri, NULL, NULL, 0);
    expect_dedupe(&loop, a, 1);
    /* The other node publishes the same change: the first one wins. */
    p = publish_one(&loop, a, make_event("dd", 3));
    assert_int_equal(p.seq, 5);
    p = publish_one(&loop, b, make_event("dd", 3));
    assert_int_equal(p.status, 0);
    assert_int_equal(p.seq, 0);
    syncd_bus_stats(b, &st);
    assert_int_equal(st.dropped_republished, 1);
    assert_int_equal(st.published, 0);
    expect_versions(&loop, b, 0, 5, want, 5);
    close_bus(&loop, a);
    close_bus(&loop, b);
    end_loop(&loop);
}

static void
test_redis_bus__a_version_is_refused_until_the_one_before_it_is_published_across_nodes(
    void **state)
{
    static const int64_t want[] = {1, 2, 3, 7, 8, 9, 1, 2, 3};
    syncd_test_server_t *srv = *state;
    uv_loop_t loop;
    syncd_bus_t *a, *b;
    syncd_bus_stats_t st;

    flush(srv);
    uv_loop_init(&loop);
    a = open_bus(&loop, srv->uri, NULL, NULL, 0);
    b = open_bus(&loop, srv->uri, NULL, NULL, 0);
    expect_in_order(&loop, a, b, 1);
    syncd_bus_stats(b, &st);
    assert_int_equal(st.published, 3);
    expect_versions(&loop, b, 0, 9, want, 9);
    close_bus(&loop, a);
    close_bus(&loop, b);
    end_loop(&loop);
}

static int pub1_done(void *arg)
{
    return ((pub1_t *)arg)->done != 0;
}

static void
test_redis_bus__frozen_redis_times_out_commands_then_the_bus_reconnects(
    void **state)
{
    static const int64_t want[] = {1, 2, 3, 4};
    syncd_test_server_t *srv = *state;
    syncd_bus_options_t opts;
    syncd_bus_stats_t st;
    uv_loop_t loop;
    syncd_bus_t *bus;
    syncd_bus_sub_t *sub;
    rec_t r = {0};
    replay_t seq = {0}, rp = {0};
    pub1_t p = {0}, again;
    json_t *event;

    flush(srv);
    uv_loop_init(&loop);
    test_options(&opts, srv->uri, NULL);
    opts.command_timeout_ms = 300;
    bus = open_bus_with(&loop, &opts);
    assert_int_equal(
        syncd_bus_subscribe(bus, &sub, COLL, 0, on_event, &r, NULL), 0);
    assert_int_equal(publish_one(&loop, bus, make_event("f", 1)).seq, 1);
    assert_int_equal(publish_one(&loop, bus, make_event("f", 2)).seq, 2);
    wait_recs(&loop, 2, &r, NULL);

    assert_int_equal(kill(srv->pid, SIGSTOP), 0);
    event = make_event("f", 3);
    assert_int_equal(syncd_bus_publish(bus, event, on_pub1, &p), 0);
    assert_int_equal(syncd_bus_seq(bus, COLL, on_seq, &seq), 0);
    assert_int_equal(syncd_bus_replay(bus, COLL, 0, -1, 0, on_replay, &rp), 0);
    /* A bound for liveness, well above the deadline: not a speed check. */
    wait_within(&loop, 10000, pub1_done, &p);
    assert_int_equal(p.status, SYNCD_ETIMEDOUT);
    wait_within(&loop, 10000, flag_set, &seq.done);
    assert_int_equal(seq.status, SYNCD_ETIMEDOUT);
    wait_within(&loop, 10000, flag_set, &rp.done);
    assert_int_equal(rp.status, SYNCD_ETIMEDOUT);
    assert_null(rp.events);
    syncd_bus_stats(bus, &st);
    assert_true(st.timeouts >= 1);
    assert_false(syncd_bus_connected(bus));

    assert_int_equal(kill(srv->pid, SIGCONT), 0);
    wait_for(&loop, bus_up, bus);
    /* The timed-out publish may have run once Redis woke up: publishing it
     * again gives it a seq only if it did not. */
    again = publish_one(&loop, bus, event);
    assert_int_equal(again.status, 0);
    assert_int_equal(publish_one(&loop, bus, make_event("f", 4)).seq, 4);
    wait_recs(&loop, 4, &r, NULL);
    assert_int_equal(r.events, 4);
    assert_int_equal(r.out_of_order + r.resyncs, 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(r.versions[i], want[i]);
    syncd_bus_unsubscribe(sub);
    close_bus(&loop, bus);
    end_loop(&loop);
}

/* Publishes awaited together: n outcomes at p. */
typedef struct pub1s {
    pub1_t *p;
    int n;
} pub1s_t;

static int pub1s_done(void *arg)
{
    const pub1s_t *all = arg;

    for (int i = 0; i < all->n; i++) {
        if (!all->p[i].done)
            return 0;
    }
    return 1;
}

/* A publish larger than the kernel's socket buffers (48 MB, queued while
 * Redis is frozen, before small ones): the bus writes what the socket
 * takes and, with no reply to wake it (Redis waits for the rest of the
 * command), waits for the socket to take more. Once Redis wakes, every
 * publish gets its seq in order and a subscriber hears each. */
static void
test_redis_bus__a_publish_beyond_the_socket_buffers_goes_out_whole(void **state)
{
    enum { N = 4, PAD = 48 * 1024 * 1024 };
    /* The first, an update of "big"; then versions 1-3 of "wide". */
    static const int64_t versions[N] = {2, 1, 2, 3};
    syncd_test_server_t *srv = *state;
    syncd_bus_options_t opts;
    uv_loop_t loop;
    syncd_bus_t *bus, *heard;
    syncd_bus_sub_t *sub;
    rec_t r = {0};
    pub1_t p[N] = {{0}};
    pub1s_t all = {p, N};
    char *pad = malloc(PAD + 1);

    assert_non_null(pad);
    memset(pad, 'x', PAD);
    pad[PAD] = '\0';
    flush(srv);
    uv_loop_init(&loop);
    test_options(&opts, srv->uri, NULL);
    opts.max_event_bytes = 2 * PAD;
    opts.command_timeout_ms = 600000;
    /* The subscriber on a bus of its own: the publisher's connection
     * carries the publishes alone, so nothing else writes what they left. */
    bus = open_bus_with(&loop, &opts);
    heard = open_bus_with(&loop, &opts);
    assert_int_equal(
        syncd_bus_subscribe(heard, &sub, COLL, 0, on_event, &r, NULL), 0);

    assert_int_equal(kill(srv->pid, SIGSTOP), 0);
    for (int i = 0; i < N; i++) {
        json_t *event = make_event(i == 0 ? "big" : "wide", versions[i]);

        if (i == 0)
            json_object_set_new(json_object_get(event, "merge"), "pad",
                                json_string(pad));
        assert_int_equal(syncd_bus_publish(bus, event, on_pub1, &p[i]), 0);
        json_decref(event);
    }
    free(pad);
    run_for(&loop, 300);
    for (int i = 0; i < N; i++)
        assert_int_equal(p[i].done, 0);
    assert_int_equal(kill(srv->pid, SIGCONT), 0);
    /* A bound for liveness: a write left waiting would never end. */
    wait_within(&loop, 60000, pub1s_done, &all);
    for (int i = 0; i < N; i++) {
        assert_int_equal(p[i].status, 0);
        assert_int_equal(p[i].seq, i + 1);
    }
    wait_recs(&loop, N, &r, NULL);
    assert_int_equal(r.events, N);
    assert_int_equal(r.out_of_order + r.resyncs, 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(r.versions[i], versions[i]);
    syncd_bus_unsubscribe(sub);
    close_bus(&loop, heard);
    close_bus(&loop, bus);
    end_loop(&loop);
}

/* A publish in flight when Redis dies is reported failed, never
 * published, before any command deadline ever fired on the bus: a caller
 * that took it for published would drop the only record that it is not
 * (an outbox marker), and the version would never reach a watcher. */
static void
test_redis_bus__a_publish_cut_off_by_redis_dying_fails_with_EBACKEND(
    void **state)
{
    syncd_test_server_t *srv = *state;
    syncd_bus_stats_t st;
    uv_loop_t loop;
    syncd_bus_t *bus;
    pub1_t p = {0};
    json_t *event;

    flush(srv);
    uv_loop_init(&loop);
    bus = open_bus(&loop, srv->uri, NULL, NULL, 0);
    assert_int_equal(publish_one(&loop, bus, make_event("cut", 1)).seq, 1);

    assert_int_equal(kill(srv->pid, SIGSTOP), 0);
    event = make_event("cut", 2);
    assert_int_equal(syncd_bus_publish(bus, event, on_pub1, &p), 0);
    json_decref(event);
    assert_int_equal(kill(srv->pid, SIGKILL), 0);
    wait_for(&loop, flag_set, &p.done);
    assert_int_equal(p.status, SYNCD_EBACKEND);
    syncd_bus_stats(bus, &st);
    assert_int_equal(st.timeouts, 0);
    assert_int_equal(st.published, 1);

    assert_int_equal(syncd_test_server_restart(srv), 0);
    wait_for(&loop, bus_up, bus);
    close_bus(&loop, bus);
    end_loop(&loop);
}

static void
test_redis_bus__close_finishes_while_redis_is_frozen_with_a_publish_in_flight(
    void **state)
{
    syncd_test_server_t *srv = *state;
    syncd_bus_options_t opts;
    uv_loop_t loop;
    syncd_bus_t *bus;
    syncd_bus_sub_t *sub;
    rec_t r = {0};
    replay_t rp = {0};
    pub1_t p = {0};
    json_t *event;
    int closed = 0;

    flush(srv);
    uv_loop_init(&loop);
    test_options(&opts, srv->uri, NULL);
    /* No deadline will fire first: the close itself must end it all. */
    opts.command_timeout_ms = 600000;
    bus = open_bus_with(&loop, &opts);
    assert_int_equal(
        syncd_bus_subscribe(bus, &sub, COLL, 0, on_event, &r, NULL), 0);
    assert_int_equal(kill(srv->pid, SIGSTOP), 0);
    event = make_event("frozen", 1);
    assert_int_equal(syncd_bus_publish(bus, event, on_pub1, &p), 0);
    json_decref(event);
    assert_int_equal(syncd_bus_replay(bus, COLL, 0, -1, 0, on_replay, &rp), 0);
    run_for(&loop, 100);
    assert_int_equal(p.done, 0);

    syncd_bus_close(bus, on_bus_closed, &closed);
    wait_within(&loop, 5000, flag_set, &closed);
    assert_int_equal(closed, 1);
    assert_int_equal(p.done, 1);
    assert_int_equal(p.status, SYNCD_ECANCELED);
    assert_int_equal(rp.done, 1);
    assert_int_equal(rp.status, SYNCD_ECANCELED);
    assert_int_equal(kill(srv->pid, SIGCONT), 0);
    end_loop(&loop);
}

static void test_redis_bus__host_name_is_resolved_and_connected(void **state)
{
    syncd_test_server_t *srv = *state;
    uv_loop_t loop;
    syncd_bus_t *bus;
    char url[64];

    flush(srv);
    snprintf(url, sizeof(url), "redis://localhost:%d", srv->port);
    uv_loop_init(&loop);
    bus = open_bus(&loop, url, NULL, NULL, 0);
    assert_int_equal(publish_one(&loop, bus, make_event("dns", 1)).seq, 1);
    close_bus(&loop, bus);
    end_loop(&loop);
}

static void
test_redis_bus__state_of_idle_collections_is_freed_and_resubscribing_works(
    void **state)
{
    syncd_test_server_t *srv = *state;
    uv_loop_t loop;
    syncd_bus_t *bus;
    syncd_bus_sub_t *sub;
    rec_t r = {0};

    flush(srv);
    uv_loop_init(&loop);
    bus = open_bus(&loop, srv->uri, NULL, NULL, 0);
    expect_collections_freed(&loop, bus);
    /* Subscribing again while the channel's UNSUBSCRIBE is on its way
     * still receives the channel's events. */
    assert_int_equal(
        syncd_bus_subscribe(bus, &sub, COLL, 0, on_event, &r, NULL), 0);
    syncd_bus_unsubscribe(sub);
    assert_int_equal(
        syncd_bus_subscribe(bus, &sub, COLL, 0, on_event, &r, NULL), 0);
    run_for(&loop, 100);
    assert_int_equal(publish_one(&loop, bus, make_event("re", 1)).seq, 1);
    wait_recs(&loop, 1, &r, NULL);
    assert_int_equal(r.events, 1);
    syncd_bus_unsubscribe(sub);
    wait_for(&loop, no_collections, bus);
    close_bus(&loop, bus);
    end_loop(&loop);
}

/* Membership result holder. */
typedef struct members {
    int done, status;
    json_t *members;
} members_t;

static void on_beat(int status, void *payload)
{
    members_t *m = payload;

    m->done++;
    m->status = status;
}

static void on_members(int status, json_t *members, void *payload)
{
    members_t *m = payload;

    m->done++;
    m->status = status;
    m->members = members;
}

/* Sends bus's heartbeat naming COLL at seq, live for ttl_ms; returns the
 * completion status. */
static int beat(uv_loop_t *loop, syncd_bus_t *bus, int64_t seq, int64_t ttl_ms)
{
    members_t m = {0};
    json_t *b = json_pack("{s:s, s:{s:I}}", "url", "http://x", "collections",
                          COLL, (json_int_t)seq);

    assert_int_equal(syncd_bus_heartbeat(bus, b, ttl_ms, on_beat, &m), 0);
    json_decref(b);
    assert_int_equal(m.done, 0);
    /* A bound for liveness, well above the deadline: not a speed check. */
    wait_within(loop, 10000, flag_set, &m.done);
    return m.status;
}

/* Reads the live nodes of bus into a new members object (bus.h). */
static json_t *members_of(uv_loop_t *loop, syncd_bus_t *bus)
{
    members_t m = {0};

    assert_int_equal(syncd_bus_members(bus, on_members, &m), 0);
    wait_within(loop, 10000, flag_set, &m.done);
    assert_int_equal(m.status, 0);
    return m.members;
}

/* Returns the id of the i-th node of members ("" past the end). */
static const char *member_id(const json_t *members, size_t i)
{
    const char *id = json_string_value(json_object_get(
        json_array_get(json_object_get(members, "nodes"), i), "id"));
    return id != NULL ? id : "";
}

/* Two nodes' heartbeats: each lists both with the newest seq of the
 * collection their beats name; one whose TTL lapses is no longer listed;
 * a heartbeat to a frozen Redis fails with ETIMEDOUT instead of waiting. */
static void
test_redis_bus__heartbeats_list_live_nodes_until_their_ttl_lapses(void **state)
{
    syncd_test_server_t *srv = *state;
    syncd_bus_options_t opts;
    uv_loop_t loop;
    syncd_bus_t *a, *b;
    json_t *m;

    flush(srv);
    uv_loop_init(&loop);
    test_options(&opts, srv->uri, NULL);
    opts.command_timeout_ms = 300;
    opts.node_id = "na";
    a = open_bus_with(&loop, &opts);
    opts.node_id = "nb";
    b = open_bus_with(&loop, &opts);
    assert_int_equal(publish_one(&loop, a, make_event("m", 1)).seq, 1);
    assert_int_equal(publish_one(&loop, a, make_event("m", 2)).seq, 2);
    assert_int_equal(beat(&loop, a, 2, 60000), 0);
    assert_int_equal(beat(&loop, b, 1, 300), 0);
    m = members_of(&loop, a);
    assert_int_equal(json_array_size(json_object_get(m, "nodes")), 2);
    assert_true((strcmp(member_id(m, 0), "na") == 0 &&
                 strcmp(member_id(m, 1), "nb") == 0) ||
                (strcmp(member_id(m, 0), "nb") == 0 &&
                 strcmp(member_id(m, 1), "na") == 0));
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(m, "newest"), COLL)),
        2);
    assert_true(json_integer_value(json_object_get(m, "now_ms")) > 0);
    json_decref(m);

    run_for(&loop, 500);
    m = members_of(&loop, b);
    assert_int_equal(json_array_size(json_object_get(m, "nodes")), 1);
    assert_string_equal(member_id(m, 0), "na");
    json_decref(m);

    assert_int_equal(kill(srv->pid, SIGSTOP), 0);
    assert_int_equal(beat(&loop, a, 2, 60000), SYNCD_ETIMEDOUT);
    assert_int_equal(kill(srv->pid, SIGCONT), 0);
    close_bus(&loop, a);
    close_bus(&loop, b);
    end_loop(&loop);
}

/* The in-process bus lists only its own node, while its heartbeat lives. */
static void
test_local_bus__members_are_this_node_while_its_heartbeat_lives(void **state)
{
    uv_loop_t loop;
    syncd_bus_t *bus;
    json_t *m;

    (void)state;
    uv_loop_init(&loop);
    bus = open_bus(&loop, NULL, NULL, NULL, 0);
    m = members_of(&loop, bus);
    assert_int_equal(json_array_size(json_object_get(m, "nodes")), 0);
    json_decref(m);
    assert_int_equal(publish_one(&loop, bus, make_event("m", 1)).seq, 1);
    assert_int_equal(beat(&loop, bus, 1, 200), 0);
    m = members_of(&loop, bus);
    assert_int_equal(json_array_size(json_object_get(m, "nodes")), 1);
    assert_string_equal(member_id(m, 0), "local");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(m, "newest"), COLL)),
        1);
    json_decref(m);
    run_for(&loop, 300);
    m = members_of(&loop, bus);
    assert_int_equal(json_array_size(json_object_get(m, "nodes")), 0);
    json_decref(m);
    close_bus(&loop, bus);
    end_loop(&loop);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest local[] = {
        cmocka_unit_test(test_event_validate__well_formed_event_passes),
        cmocka_unit_test(
            test_event_validate__bad_members_fail_with_EINVAL_naming_them),
        cmocka_unit_test(test_event_validate__op_rules_hold),
        cmocka_unit_test(
            test_event_validate__oversize_event_fails_with_ETOOBIG),
        cmocka_unit_test(
            test_event_sign__signed_event_verifies_and_tampering_fails),
        cmocka_unit_test(test_event_sign__is_hmac_sha256_of_canonical_text),
        cmocka_unit_test(
            test_event_sign__bus_bytes_verify_as_sent_reordered_or_tampered),
        cmocka_unit_test(
            test_event_sign__key_list_signs_with_the_first_and_accepts_any),
        cmocka_unit_test(
            test_bus_open__empty_key_in_the_secret_fails_with_EINVAL),
        cmocka_unit_test(
            test_local_bus__seqs_are_contiguous_and_delivered_in_order),
        cmocka_unit_test(test_local_bus__replay_reads_ranges_from_the_log),
        cmocka_unit_test(
            test_local_bus__seq_continues_after_reopen_from_data_dir),
        cmocka_unit_test(
            test_local_bus__trimmed_log_gives_ENOTFOUND_and_RESYNC),
        cmocka_unit_test(test_local_bus__events_handed_out_are_those_published),
        cmocka_unit_test(
            test_local_bus__a_subscription_wanting_seqs_only_gets_every_seq),
        cmocka_unit_test(
            test_local_bus__repeated_and_older_versions_are_dropped_at_the_source),
        cmocka_unit_test(
            test_local_bus__a_version_is_refused_until_the_one_before_it_is_published),
        cmocka_unit_test(
            test_local_bus__a_purged_id_is_forgotten_only_at_its_tombstones_version),
        cmocka_unit_test(
            test_local_bus__acknowledged_publishes_survive_a_crash_and_dedupe_survives_a_reopen),
        cmocka_unit_test(
            test_local_bus__persisted_publishes_complete_in_seq_order),
        cmocka_unit_test(test_local_bus__state_of_idle_collections_is_freed),
        cmocka_unit_test(
            test_local_bus__members_are_this_node_while_its_heartbeat_lives),
        cmocka_unit_test(test_redis_bus__bad_url_fails_with_EINVAL_naming_it),
        cmocka_unit_test(
            test_redis_bus__bad_credentials_in_the_url_fail_without_echoing_them),
    };
    const struct CMUnitTest redis[] = {
        cmocka_unit_test(
            test_redis_bus__acl_user_of_the_url_authenticates_a_wrong_password_never_connects),
        cmocka_unit_test(
            test_redis_bus__heartbeats_list_live_nodes_until_their_ttl_lapses),
        cmocka_unit_test(
            test_redis_bus__two_nodes_see_identical_contiguous_seqs),
        cmocka_unit_test(
            test_redis_bus__client_kill_during_storm_loses_nothing),
        cmocka_unit_test(
            test_redis_bus__restart_fails_publishes_then_resyncs_once),
        cmocka_unit_test(
            test_redis_bus__bus_reconnects_by_itself_after_redis_was_down),
        cmocka_unit_test(
            test_redis_bus__data_loss_is_detected_when_the_same_bus_sets_the_epoch_again),
        cmocka_unit_test(
            test_redis_bus__server_that_never_answers_is_dropped_and_retried),
        cmocka_unit_test(test_redis_bus__trimmed_log_resyncs_a_late_subscriber),
        cmocka_unit_test(
            test_redis_bus__duplicates_and_reordering_are_fixed_from_the_log),
        cmocka_unit_test(
            test_redis_bus__forged_and_malformed_events_are_dropped_and_counted),
        cmocka_unit_test(
            test_redis_bus__its_own_events_come_back_known_by_their_bytes),
        cmocka_unit_test(
            test_redis_bus__repeated_and_older_versions_are_dropped_across_nodes),
        cmocka_unit_test(
            test_redis_bus__a_purged_id_is_forgotten_only_at_its_tombstones_version),
        cmocka_unit_test(
            test_redis_bus__a_version_is_refused_until_the_one_before_it_is_published_across_nodes),
        cmocka_unit_test(
            test_redis_bus__frozen_redis_times_out_commands_then_the_bus_reconnects),
        cmocka_unit_test(
            test_redis_bus__a_publish_beyond_the_socket_buffers_goes_out_whole),
        cmocka_unit_test(
            test_redis_bus__a_publish_cut_off_by_redis_dying_fails_with_EBACKEND),
        cmocka_unit_test(
            test_redis_bus__close_finishes_while_redis_is_frozen_with_a_publish_in_flight),
        cmocka_unit_test(test_redis_bus__host_name_is_resolved_and_connected),
        cmocka_unit_test(
            test_redis_bus__state_of_idle_collections_is_freed_and_resubscribing_works),
    };
    int failed;

    if (argc == 3 && strcmp(argv[1], "--publish-then-die") == 0)
        publish_then_die(argv[2]);
    /* SYNCD_TEST_FILTER=<glob> runs only the matching tests. */
    if (getenv("SYNCD_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("SYNCD_TEST_FILTER"));
    failed = cmocka_run_group_tests_name("pubsub", local, NULL, NULL);

    failed += cmocka_run_group_tests_name("pubsub_redis", redis, setup_redis,
                                          teardown_redis);
    return failed;
}
