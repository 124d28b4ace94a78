/* bus_redis.c - the Redis change bus: hiredis async on libuv.
 *
 * Keys per collection C of database D: the counter "syncd:D:C:seq", the
 * replay log stream "syncd:D:C:log" (entry ID "<seq>-1", field "e" = the
 * event JSON, MAXLEN ~ event_log_len) and the channel "syncd:D:C".
 * Publishing is one Lua script (loaded once per connection, called by SHA,
 * re-sent with EVAL on NOSCRIPT) that checks the event against the hash
 * "syncd:D:C:pubv" (document id -> "<version> <ts in microseconds>" of the
 * last event published for it) and drops a duplicate or refuses a version
 * that would overtake an unpublished one (bus.h), else INCRs
 * the counter, splices "seq" into the signed event, XADDs it, PUBLISHes it
 * and records its version, so seqs are contiguous, every published event
 * is in the log before anyone can see it, and deduplication is atomic
 * across nodes. A third script drops the record of an id whose tombstone
 * the store purged, while it names that tombstone's version
 * (syncd_bus_forget()), so the hash holds the ids that exist.
 *
 * Two connections per bus: commands, and one subscriber connection for all
 * collections, driven from the loop by redis_uv.c. Each reconnects on its
 * own with exponential backoff (reconnect_min_ms..reconnect_max_ms); a
 * connection that is not ready within CONNECT_TIMEOUT_MIN_MS (or
 * reconnect_max_ms, if longer) is dropped and retried, so a connect into
 * a black hole cannot stall the bus. Every command has a deadline
 * (command_timeout_ms): when a connection has commands waiting and Redis
 * has answered none of them for that long, the connection is dropped (their
 * callbacks get SYNCD_ETIMEDOUT) and reconnected, so that a frozen Redis
 * cannot leave replies to be matched with later commands. Membership (bus.h)
 * is two scripts sent with EVAL: a heartbeat SETs "syncd:D:node:<id>:beat"
 * (five or more segments, so never a collection's key) with a TTL and
 * stamps the id in the sorted set "syncd:D:nodes" with Redis's clock; a
 * members read walks that set (no KEYS), drops the ids whose key expired,
 * and reads the counters of the collections the beats name. Host names are
 * resolved with uv_getaddrinfo() on the thread pool (hiredis would resolve
 * them on the loop) and hiredis connects to the numeric address. With
 * credentials in the URL (redis://[user]:password@host, Redis ACL), each
 * connection sends AUTH first and is ready only once Redis accepted it; the
 * password is never part of a message or a log line.
 *
 * Collections are records in a hash table by name (and a list for the
 * walks a reconnect needs). A record lives while it has subscriptions or
 * calls in flight; when it goes idle the subscriber connection UNSUBSCRIBEs
 * its channel and the record is freed once Redis confirms (a subscription
 * that comes back meanwhile SUBSCRIBEs again after the confirmation, since
 * hiredis 0.14 would drop the channel's callback otherwise). The record's
 * floor goes with it; a subscription brings its own back (its last seq).
 *
 * A subscription is either live
 * (events come from the channel: last+1 is delivered, <= last is a counted
 * duplicate, a jump is a counted gap) or catching up: it reads the log from
 * last+1 with the read script (XRANGE, in batches) while live events only
 * raise the mark it must reach, and goes live once the log has nothing
 * newer. Catch-up runs on subscribe, on every gap, after every reconnect of
 * the subscriber connection, and after the command connection finds that
 * Redis lost its data. What the log no longer holds becomes
 * SYNCD_BUS_RESYNC.
 *
 * A bus knows the events it published itself when they come back on its
 * channel: while a subscription wants no body of them
 * (SYNCD_BUS_BODIES_OTHERS), each channel keeps the text of its recent
 * publishes, and a message that is one of them byte for byte (after the
 * "seq" the script spliced in) is handed without being decoded or
 * verified; it is the bus's own signed text. Anything else, a forgery
 * that borrows the seq included, is decoded and verified as before.
 *
 * Redis restarts without persistence: the key "syncd:D:epoch" holds a
 * random token. Every command connection offers a fresh one (SET NX) and
 * reads the one that holds; a bus that finds a token other than the last
 * it saw knows Redis lost its data, and every subscription is told to
 * resync. The token is new per attempt, so this holds even when the bus
 * that set the lost token is the first to set one again. Both scripts take
 * a floor (the highest seq this bus has seen in the collection) and, when
 * the counter is below it (Redis lost it), raise the counter to floor + 1
 * without handing that seq out: a new epoch. So a seq is never handed out
 * twice, and the seqs of the old epoch are over for good: a reader resuming
 * after a seq of the old epoch (a watch's since) finds floor + 1 in no log
 * and is told so (410, or a resync), instead of reading the new epoch's
 * events (the outbox republishing versions already delivered, say) as if
 * they followed its old ones. DESIGN.md section 4.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/rand.h>

#include "base/pct.h"
#include "pubsub/internal.h"

/* Log entries read per catch-up round trip. */
#define CATCHUP_BATCH 1000
/* Longest key or channel name: "syncd:<db>:<coll>:seq". */
#define KEY_MAX (2 * BUS_NAME_MAX + 16)
/* Shortest time a connection gets to become ready. */
#define CONNECT_TIMEOUT_MIN_MS 2000
/* Random bytes of an epoch token. */
#define EPOCH_BYTES 16
/* Most of its own events a channel keeps to know them when they come back:
 * past it the oldest is forgotten (and its message decoded). */
#define OWN_MAX 1024

/* KEYS: counter, stream, published versions. ARGV: event without seq,
 * maxlen, floor, channel, id, version, 1 for a create, ts in microseconds,
 * settled version. Returns the assigned seq (above floor + 1 when the
 * counter was below the floor: the new epoch of the read script), 0 for a
 * duplicate or -1 for a version whose predecessor is not published yet
 * (bus.h, and syncd_bus_pub_check(), which this mirrors). */
static const char publish_lua[] =
    "local pv, pts = 0, 0\n"
    "local rec = redis.call('HGET', KEYS[3], ARGV[5])\n"
    "if rec then\n"
    "  local sp = string.find(rec, ' ', 1, true)\n"
    "  pv = tonumber(string.sub(rec, 1, sp - 1))\n"
    "  pts = tonumber(string.sub(rec, sp + 1))\n"
    "end\n"
    "local v = tonumber(ARGV[6])\n"
    "if v <= pv then\n"
    "  if not (ARGV[7] == '1' and tonumber(ARGV[8]) > pts) then return 0 end\n"
    "elseif v - 1 > pv and v - 1 > tonumber(ARGV[9]) then\n"
    "  return -1\n"
    "end\n"
    "local seq = redis.call('INCR', KEYS[1])\n"
    "local floor = tonumber(ARGV[3])\n"
    "if seq <= floor then\n"
    "  seq = floor + 2\n"
    "  redis.call('SET', KEYS[1], seq)\n"
    "end\n"
    "local e = '{\"seq\":' .. seq .. ',' .. string.sub(ARGV[1], 2)\n"
    "redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], seq .. '-1', 'e', "
    "e)\n"
    "redis.call('PUBLISH', ARGV[4], e)\n"
    "redis.call('HSET', KEYS[3], ARGV[5], ARGV[6] .. ' ' .. ARGV[8])\n"
    "return seq\n";

/* KEYS: counter, stream. ARGV: first ID ("" reads no entries), last ID,
 * count (0: all), floor. Returns {current seq, 1 if the counter was below
 * the floor and raised past it (to floor + 1, a seq never handed out: the
 * new epoch's first), entries}. */
static const char read_lua[] =
    "local cur = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "local floor = tonumber(ARGV[4])\n"
    "local raised = 0\n"
    "if cur < floor then\n"
    "  cur = floor + 1\n"
    "  redis.call('SET', KEYS[1], cur)\n"
    "  raised = 1\n"
    "end\n"
    "if ARGV[1] == '' then return {cur, raised, {}} end\n"
    "if tonumber(ARGV[3]) > 0 then\n"
    "  return {cur, raised, redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[2], "
    "'COUNT', ARGV[3])}\n"
    "end\n"
    "return {cur, raised, redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[2])}\n";

typedef struct rbus rbus_t;

/* An event this bus published on a channel where a subscription needs no
 * body of the bus's own events, kept until its message comes back on the
 * subscriber connection (or no longer can), so that the message is known
 * by its bytes instead of decoded and verified. */
typedef struct own {
    struct own *next;
    uint64_t token; /* its publish call's */
    int64_t seq;    /* 0 until the script's reply gives it */
    size_t len;
    char text[]; /* the event without seq, as published */
} own_t;

/* One collection: its keys, its subscriptions and the highest seq seen. */
typedef struct rchan {
    bus_map_entry_t entry;     /* entry.name: the collection */
    struct rchan *prev, *next; /* in the bus's list */
    struct rchan *dirty_next;  /* in a sweep's list */
    char channel[KEY_MAX], counter[KEY_MAX], stream[KEY_MAX], pubv[KEY_MAX];
    int64_t known;     /* highest seq seen: the floor of the scripts */
    int calls;         /* script calls in flight */
    int wanted;        /* SUBSCRIBEd, or to be on connect */
    int confirmed;     /* subscribed on the current subscriber connection */
    int unsubscribing; /* UNSUBSCRIBE sent, not yet confirmed */
    int dirty;         /* in a sweep's list */
    syncd_bus_sub_t *subs;
    own_t *own, *own_last; /* events published, oldest first */
    size_t nown;
} rchan_t;

/* One of the two connections. */
typedef struct rconn {
    rbus_t *bus;
    redisAsyncContext *ac; /* NULL while down */
    int ready;             /* usable: set up and not dropped */
    int was_ready;         /* has been ready before: the next is a reconnect */
    int is_sub;
    int resolving; /* gai is in flight */
    int pending;   /* commands waiting for an answer */
    uint64_t
        heard; /* ms (uv_hrtime) of the last answer, or of the first send */
    int64_t backoff_ms;
    uv_timer_t timer;    /* reconnect backoff and connect timeout */
    uv_timer_t deadline; /* command deadline */
    uv_getaddrinfo_t gai;
} rconn_t;

struct rbus {
    syncd_bus_t base;
    char host[256];
    int port, dbnum;
    char *user, *pass; /* AUTH [user] pass; NULL: none */
    char epoch_key[KEY_MAX];
    char epoch_seen[96]; /* the token found on the last connect */
    char publish_sha[41], read_sha[41];
    rconn_t cmd, sub;
    bus_map_t map; /* rchan_t by collection name */
    rchan_t *chans;
    int open_handles;    /* timers and name lookups still to close or end */
    int timing_out;      /* a connection is being dropped for its deadline */
    unsigned sub_gen;    /* subscriber connections lost so far */
    uint64_t own_tokens; /* publish calls that kept their event as own_t */
};

typedef enum { CALL_PUBLISH, CALL_CATCHUP, CALL_REPLAY } call_kind_t;

/* One script call in flight, with its arguments kept for an EVAL
 * re-send after NOSCRIPT. */
typedef struct rcall {
    rbus_t *bus;
    call_kind_t kind;
    rchan_t *chan;
    int evaled;
    char *body; /* CALL_PUBLISH: the event without seq (owned) */
    size_t body_len;
    char *id;           /* CALL_PUBLISH: the document id (owned) */
    uint64_t own_token; /* CALL_PUBLISH: its own_t's, or 0 */
    char args[6][48];
    syncd_bus_sub_t *sub; /* CALL_CATCHUP (holds a reference) */
    syncd_bus_publish_cb publish_cb;
    syncd_bus_replay_cb replay_cb;
    int64_t after, until; /* CALL_REPLAY; CALL_CATCHUP: sub->want at send */
    unsigned gen;         /* CALL_CATCHUP: bus->sub_gen at send */
    void *payload;
} rcall_t;

static void conn_start(rconn_t *conn);
static void catch_up(syncd_bus_sub_t *sub);
static void chan_release(rbus_t *bus, rchan_t *chan);
static void own_clear(rchan_t *c);
static void on_sub_reply(redisAsyncContext *ac, void *r, void *privdata);
static void free_credentials(rbus_t *bus);

/* ---- Connections --------------------------------------------------------- */

static void on_timer(uv_timer_t *timer)
{
    conn_start(timer->data);
}

/* Returns the status for a call whose reply is NULL: its connection went
 * away while the bus closed, timed out, or failed. */
static int dropped_status(const rbus_t *bus)
{
    if (bus->base.closing)
        return SYNCD_ECANCELED;
    return bus->timing_out ? SYNCD_ETIMEDOUT : SYNCD_EBACKEND;
}

static void on_deadline(uv_timer_t *timer);

/* The current time in ms. Not uv_now(): the loop's cached time lags when
 * a caller worked for long without running the loop. */
static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* Counts a command sent on conn and arms its deadline check. */
static void conn_sent(rconn_t *conn)
{
    if (conn->pending++ == 0)
        conn->heard = now_ms();
    if (!uv_is_active((uv_handle_t *)&conn->deadline))
        uv_timer_start(&conn->deadline, on_deadline,
                       (uint64_t)conn->bus->base.command_timeout_ms, 0);
}

/* Notes an answer from Redis on ac: progress on conn when ac is its
 * current connection; answered says it ends a command. */
static void conn_heard(rconn_t *conn, const redisAsyncContext *ac, int answered)
{
    if (conn->ac != ac)
        return;
    conn->heard = now_ms();
    if (answered && conn->pending > 0)
        conn->pending--;
}

/* Marks conn down and schedules its reconnect. */
static void conn_down(rconn_t *conn)
{
    rbus_t *bus = conn->bus;

    conn->ready = 0;
    conn->pending = 0;
    if (bus->base.closing)
        return;
    if (conn->is_sub) {
        rchan_t *next;

        bus->sub_gen++;
        /* What was published meanwhile is read from the log, decoded. */
        for (rchan_t *c = bus->chans; c != NULL; c = next) {
            next = c->next;
            c->confirmed = 0;
            own_clear(c);
            for (syncd_bus_sub_t *s = c->subs; s != NULL; s = s->next)
                s->catching = 1;
            if (c->unsubscribing) {
                c->unsubscribing = 0;
                c->wanted = c->subs != NULL;
                chan_release(bus, c);
            }
        }
    }
    uv_timer_start(&conn->timer, on_timer, (uint64_t)conn->backoff_ms, 0);
    conn->backoff_ms *= 2;
    if (conn->backoff_ms > bus->base.reconnect_max_ms)
        conn->backoff_ms = bus->base.reconnect_max_ms;
}

/* Drops conn's connection (safe inside its callbacks) and reconnects. */
static void conn_fail(rconn_t *conn)
{
    redisAsyncContext *ac = conn->ac;

    conn->ac = NULL;
    if (ac != NULL)
        redisAsyncFree(ac);
    conn_down(conn);
}

/* A connection still not ready when its time is up is dropped. */
static void on_connect_timeout(uv_timer_t *timer)
{
    rconn_t *conn = timer->data;

    if (!conn->ready)
        conn_fail(conn);
}

/* Drops conn when Redis has answered none of its waiting commands for
 * command_timeout_ms; their callbacks get SYNCD_ETIMEDOUT. */
static void on_deadline(uv_timer_t *timer)
{
    rconn_t *conn = timer->data;
    rbus_t *bus = conn->bus;
    uint64_t due = conn->heard + (uint64_t)bus->base.command_timeout_ms;
    uint64_t now = now_ms();

    if (conn->pending == 0 || conn->ac == NULL)
        return;
    if (now >= due) {
        /* Timers run before the loop reads sockets: after a long stall of
         * the loop, answers may be waiting unread. */
        syncd_bus_enter(&bus->base);
        redisAsyncHandleRead(conn->ac);
        syncd_bus_leave(&bus->base);
        if (conn->pending == 0 || conn->ac == NULL || bus->base.closed)
            return;
        due = conn->heard + (uint64_t)bus->base.command_timeout_ms;
    }
    if (now < due) {
        uv_timer_start(&conn->deadline, on_deadline, due - now, 0);
        return;
    }
    bus->base.stats.timeouts++;
    syncd_bus_enter(&bus->base);
    bus->timing_out = 1;
    conn_fail(conn);
    bus->timing_out = 0;
    syncd_bus_leave(&bus->base);
}

static void catch_up_all(rbus_t *bus)
{
    for (rchan_t *c = bus->chans; c != NULL; c = c->next) {
        for (syncd_bus_sub_t *s = c->subs; s != NULL; s = s->next)
            catch_up(s);
    }
}

static void conn_ready(rconn_t *conn)
{
    rbus_t *bus = conn->bus;

    uv_timer_stop(&conn->timer);
    conn->ready = 1;
    conn->backoff_ms = bus->base.reconnect_min_ms;
    if (conn->was_ready)
        bus->base.stats.reconnects++;
    conn->was_ready = 1;
    catch_up_all(bus);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    rconn_t *conn = ac->data;

    if (conn->ac != ac)
        return;
    if (status != REDIS_OK) {
        conn->ac = NULL; /* hiredis frees it after this callback */
        conn_down(conn);
        return;
    }
    if (conn->is_sub && conn->bus->pass == NULL)
        conn_ready(conn);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rconn_t *conn = ac->data;

    (void)status;
    if (conn->ac != ac)
        return;
    conn->ac = NULL; /* hiredis frees it after this callback */
    conn_down(conn);
}

/* Returns 1 when a setup reply belongs to conn's current connection and is
 * not an error; fails the connection on errors. */
static int setup_ok(redisAsyncContext *ac, redisReply *reply, rconn_t *conn)
{
    if (reply == NULL || conn->ac != ac || conn->bus->base.closing)
        return 0;
    conn_heard(conn, ac, 1);
    if (reply->type == REDIS_REPLY_ERROR) {
        conn_fail(conn);
        return 0;
    }
    return 1;
}

static void on_setup_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    setup_ok(ac, r, privdata);
}

/* An AUTH reply: a refusal is counted (auth_failures: the URL's
 * credentials are wrong) and fails the connection like any setup error;
 * the subscriber connection is ready once Redis accepted them. */
static void on_auth(redisAsyncContext *ac, void *r, void *privdata)
{
    rconn_t *conn = privdata;
    redisReply *reply = r;

    if (reply != NULL && conn->ac == ac && reply->type == REDIS_REPLY_ERROR)
        conn->bus->base.stats.auth_failures++;
    if (setup_ok(ac, reply, conn) && conn->is_sub)
        conn_ready(conn);
}

/* Queues AUTH of the URL's credentials on ac, first of conn's commands;
 * 0, or -1 when it cannot be queued. */
static int send_auth(rconn_t *conn, redisAsyncContext *ac)
{
    rbus_t *bus = conn->bus;
    int rc;

    if (bus->user != NULL)
        rc = redisAsyncCommand(ac, on_auth, conn, "AUTH %s %s", bus->user,
                               bus->pass);
    else
        rc = redisAsyncCommand(ac, on_auth, conn, "AUTH %s", bus->pass);
    if (rc != REDIS_OK)
        return -1;
    conn_sent(conn);
    return 0;
}

static void on_script_loaded(redisAsyncContext *ac, void *r, void *privdata)
{
    rbus_t *bus = ((rconn_t *)ac->data)->bus;
    redisReply *reply = r;

    if (!setup_ok(ac, reply, &bus->cmd))
        return;
    if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
        conn_fail(&bus->cmd);
        return;
    }
    memcpy(privdata, reply->str, 40);
    ((char *)privdata)[40] = '\0';
}

/* The last setup reply: the epoch token. A token other than the one seen
 * before means Redis lost its data since: every subscription resyncs. */
static void on_epoch(redisAsyncContext *ac, void *r, void *privdata)
{
    rbus_t *bus = ((rconn_t *)privdata)->bus;
    redisReply *reply = r;

    if (!setup_ok(ac, reply, &bus->cmd))
        return;
    if (reply->type != REDIS_REPLY_STRING) {
        conn_fail(&bus->cmd);
        return;
    }
    if (bus->epoch_seen[0] != '\0' && strcmp(bus->epoch_seen, reply->str)) {
        for (rchan_t *c = bus->chans; c != NULL; c = c->next) {
            for (syncd_bus_sub_t *s = c->subs; s != NULL; s = s->next) {
                s->lost = 1;
                s->catching = 1;
            }
        }
    }
    snprintf(bus->epoch_seen, sizeof(bus->epoch_seen), "%s", reply->str);
    conn_ready(&bus->cmd);
}

/* Sends a (UN)SUBSCRIBE of chan's channel on the subscriber connection;
 * REDIS_OK or REDIS_ERR. */
static int send_sub_command(rbus_t *bus, rchan_t *chan, const char *verb)
{
    int rc = redisAsyncCommand(bus->sub.ac, on_sub_reply, &bus->sub, "%s %s",
                               verb, chan->channel);

    if (rc == REDIS_OK)
        conn_sent(&bus->sub);
    return rc;
}

/* Writes a fresh random epoch token into out; 0 or -1. */
static int new_token(char out[2 * EPOCH_BYTES + 1])
{
    unsigned char raw[EPOCH_BYTES];

    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return -1;
    for (int i = 0; i < EPOCH_BYTES; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return 0;
}

/* Queues the setup of a new command connection: SELECT, the two scripts,
 * a fresh epoch token offered and the token that holds read; it is ready
 * when the token's reply arrives. */
static int setup_cmd(rbus_t *bus, redisAsyncContext *ac)
{
    rconn_t *conn = &bus->cmd;
    char token[2 * EPOCH_BYTES + 1];
    int n = 4;

    if (new_token(token) != 0)
        return -1;
    if (bus->pass != NULL && send_auth(conn, ac) != 0)
        return -1;
    if (bus->dbnum != 0 &&
        redisAsyncCommand(ac, on_setup_reply, conn, "SELECT %d", bus->dbnum))
        return -1;
    if (redisAsyncCommand(ac, on_script_loaded, bus->publish_sha,
                          "SCRIPT LOAD %s", publish_lua) ||
        redisAsyncCommand(ac, on_script_loaded, bus->read_sha, "SCRIPT LOAD %s",
                          read_lua) ||
        redisAsyncCommand(ac, on_setup_reply, conn, "SET %s %s NX",
                          bus->epoch_key, token) ||
        redisAsyncCommand(ac, on_epoch, conn, "GET %s", bus->epoch_key))
        return -1;
    n += bus->dbnum != 0;
    while (n-- > 0)
        conn_sent(conn);
    return 0;
}

/* Connects conn to the numeric address ip and queues its setup. */
static void conn_connect(rconn_t *conn, const char *ip)
{
    rbus_t *bus = conn->bus;
    redisAsyncContext *ac;
    int64_t timeout_ms;
    int rc = 0;

    ac = redisAsyncConnect(ip, bus->port);
    if (ac == NULL) {
        conn_down(conn);
        return;
    }
    if (ac->err != 0 || syncd_bus_redis_attach(ac, bus->base.loop) != 0) {
        redisAsyncFree(ac);
        conn_down(conn);
        return;
    }
    ac->data = conn;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    conn->ac = ac;
    conn->pending = 0;
    timeout_ms = bus->base.reconnect_max_ms > CONNECT_TIMEOUT_MIN_MS
                     ? bus->base.reconnect_max_ms
                     : CONNECT_TIMEOUT_MIN_MS;
    uv_timer_start(&conn->timer, on_connect_timeout, (uint64_t)timeout_ms, 0);
    if (!conn->is_sub) {
        rc = setup_cmd(bus, ac);
    } else {
        if (bus->pass != NULL)
            rc = send_auth(conn, ac);
        for (rchan_t *c = bus->chans; c != NULL && rc == 0; c = c->next) {
            if (c->wanted)
                rc = send_sub_command(bus, c, "SUBSCRIBE");
        }
    }
    if (rc != 0)
        conn_fail(conn);
}

static void on_closed(uv_handle_t *handle);

/* The host name's addresses: connect to the first IPv4 one (Redis listens
 * on IPv4 more often than not), else the first one. */
static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    rconn_t *conn = req->data;
    rbus_t *bus = conn->bus;
    const struct addrinfo *pick = res;
    char ip[64] = "";

    conn->resolving = 0;
    if (bus->base.closing) {
        uv_freeaddrinfo(res);
        on_closed((uv_handle_t *)&conn->timer);
        return;
    }
    bus->open_handles--;
    for (const struct addrinfo *a = res; a != NULL; a = a->ai_next) {
        if (a->ai_family == AF_INET) {
            pick = a;
            break;
        }
    }
    if (status == 0 && pick != NULL)
        uv_ip_name(pick->ai_addr, ip, sizeof(ip));
    uv_freeaddrinfo(res);
    if (ip[0] == '\0')
        conn_down(conn);
    else
        conn_connect(conn, ip);
}

/* Starts a connection: at once to a numeric host, else after resolving the
 * name on the thread pool. */
static void conn_start(rconn_t *conn)
{
    rbus_t *bus = conn->bus;
    struct addrinfo hints;
    unsigned char addr[16];

    if (bus->base.closing)
        return;
    if (uv_inet_pton(AF_INET, bus->host, addr) == 0 ||
        uv_inet_pton(AF_INET6, bus->host, addr) == 0) {
        conn_connect(conn, bus->host);
        return;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    conn->gai.data = conn;
    if (uv_getaddrinfo(bus->base.loop, &conn->gai, on_resolved, bus->host, NULL,
                       &hints) != 0) {
        conn_down(conn);
        return;
    }
    conn->resolving = 1;
    bus->open_handles++;
}

/* ---- Collections ----------------------------------------------------------
 */

/* Returns the record of the channel name (len bytes), or NULL. */
static rchan_t *find_chan(rbus_t *bus, const char *name, size_t len)
{
    size_t pre = strlen("syncd:") + strlen(bus->base.database) + 1;
    char coll[BUS_NAME_MAX];

    if (len <= pre || len - pre >= sizeof(coll))
        return NULL;
    memcpy(coll, name + pre, len - pre);
    coll[len - pre] = '\0';
    return (rchan_t *)syncd_bus_map_find(&bus->map, coll);
}

/* Returns coll's record, created on first use; NULL on ENOMEM. */
static rchan_t *get_chan(rbus_t *bus, const char *coll)
{
    const char *db = bus->base.database;
    rchan_t *c = (rchan_t *)syncd_bus_map_find(&bus->map, coll);

    if (c != NULL)
        return c;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    snprintf(c->entry.name, sizeof(c->entry.name), "%s", coll);
    snprintf(c->channel, sizeof(c->channel), "syncd:%s:%s", db, coll);
    snprintf(c->counter, sizeof(c->counter), "syncd:%s:%s:seq", db, coll);
    snprintf(c->stream, sizeof(c->stream), "syncd:%s:%s:log", db, coll);
    snprintf(c->pubv, sizeof(c->pubv), "syncd:%s:%s:pubv", db, coll);
    if (syncd_bus_map_add(&bus->map, &c->entry) != 0) {
        free(c);
        return NULL;
    }
    c->next = bus->chans;
    if (c->next != NULL)
        c->next->prev = c;
    bus->chans = c;
    bus->base.stats.collections++;
    return c;
}

/* Unlinks e, which follows prev (NULL: the first), from c's own events
 * and frees it. */
static void own_drop(rchan_t *c, own_t *prev, own_t *e)
{
    if (prev != NULL)
        prev->next = e->next;
    else
        c->own = e->next;
    if (c->own_last == e)
        c->own_last = prev;
    c->nown--;
    free(e);
}

/* Forgets all of c's own events. */
static void own_clear(rchan_t *c)
{
    while (c->own != NULL)
        own_drop(c, NULL, c->own);
}

/* Whether a live subscription of c needs no body of this bus's own
 * events, so that they are worth knowing. */
static int own_wanted(const rchan_t *c)
{
    for (const syncd_bus_sub_t *s = c->subs; s != NULL; s = s->next) {
        if (syncd_bus_sub_live(s) && s->bodies == SYNCD_BUS_BODIES_OTHERS)
            return 1;
    }
    return 0;
}

/* Keeps a copy of the event text (len bytes) that the call with token
 * publishes on c; forgets the oldest past OWN_MAX. 0 or SYNCD_ENOMEM. */
static int own_add(rchan_t *c, const char *text, size_t len, uint64_t token)
{
    own_t *e = malloc(sizeof(*e) + len);

    if (e == NULL)
        return SYNCD_ENOMEM;
    if (c->nown == OWN_MAX)
        own_drop(c, NULL, c->own);
    e->next = NULL;
    e->token = token;
    e->seq = 0;
    e->len = len;
    memcpy(e->text, text, len);
    if (c->own_last != NULL)
        c->own_last->next = e;
    else
        c->own = e;
    c->own_last = e;
    c->nown++;
    return 0;
}

/* The publish call with token got its reply: its event has seq, or (seq
 * 0) was not published and will not come back. */
static void own_settle(rchan_t *c, uint64_t token, int64_t seq)
{
    for (own_t *prev = NULL, *e = c->own; e != NULL; prev = e, e = e->next) {
        if (e->token != token)
            continue;
        if (seq > 0)
            e->seq = seq;
        else
            own_drop(c, prev, e);
        return;
    }
}

/* Whether the message data (len bytes) on c is one of this bus's own
 * events, byte for byte as it published it with the script's "seq"
 * spliced in first; then *seq is that seq and the event is forgotten.
 * Events published before that seq that did not come back are forgotten
 * too (they are read from the log, decoded, if at all). */
static int own_take(rchan_t *c, const char *data, size_t len, int64_t *seq)
{
    static const char head[] = "{\"seq\":";
    size_t p = sizeof(head) - 1;
    int64_t s = 0;
    own_t *prev = NULL, *e = c->own;

    if (len <= p || memcmp(data, head, p) != 0)
        return 0;
    while (p < len && data[p] >= '0' && data[p] <= '9' && s < INT64_MAX / 10)
        s = s * 10 + (data[p++] - '0');
    if (p >= len || data[p] != ',' || s <= 0)
        return 0;
    p++;
    while (e != NULL) {
        own_t *next = e->next;

        if (e->seq > 0 && e->seq < s) {
            own_drop(c, prev, e);
        } else if ((e->seq == 0 || e->seq == s) && e->len >= 2 &&
                   e->len - 1 == len - p &&
                   memcmp(e->text + 1, data + p, len - p) == 0) {
            own_drop(c, prev, e);
            *seq = s;
            return 1;
        } else {
            prev = e;
        }
        e = next;
    }
    return 0;
}

static void chan_free(rbus_t *bus, rchan_t *c)
{
    syncd_bus_subs_release(&c->subs);
    own_clear(c);
    free(c);
    bus->base.stats.collections--;
}

/* Frees chan once it is idle (no subscription, no call, no UNSUBSCRIBE
 * waiting), first UNSUBSCRIBing its channel when it is subscribed. */
static void chan_release(rbus_t *bus, rchan_t *c)
{
    if (bus->base.closed || c->subs != NULL || c->calls > 0 || c->unsubscribing)
        return;
    if (c->wanted && bus->sub.ac != NULL) {
        c->wanted = 0;
        c->confirmed = 0;
        if (send_sub_command(bus, c, "UNSUBSCRIBE") == REDIS_OK) {
            c->unsubscribing = 1;
            return;
        }
        conn_fail(&bus->sub);
        if (c->unsubscribing || c->subs != NULL)
            return;
    }
    syncd_bus_map_remove(&bus->map, &c->entry);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        bus->chans = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    chan_free(bus, c);
}

static void raise_known(rchan_t *chan, int64_t seq)
{
    if (seq > chan->known)
        chan->known = seq;
}

/* ---- Script calls ---------------------------------------------------------
 */

static void on_call_reply(redisAsyncContext *ac, void *r, void *privdata);

/* Sends call's script by SHA, or by text after a NOSCRIPT: KEYS counter
 * and stream, then the publish ARGV (body, maxlen, floor, channel) or the
 * read ARGV (args[0..3]); 0 or -1. */
static int send_call(rcall_t *call)
{
    rbus_t *bus = call->bus;
    int is_pub = call->kind == CALL_PUBLISH;
    const char *argv[16];
    size_t lens[16];
    int argc = 0;

    if (!bus->cmd.ready || bus->cmd.ac == NULL)
        return -1;
    argv[argc++] = call->evaled ? "EVAL" : "EVALSHA";
    if (call->evaled)
        argv[argc++] = is_pub ? publish_lua : read_lua;
    else
        argv[argc++] = is_pub ? bus->publish_sha : bus->read_sha;
    argv[argc++] = is_pub ? "3" : "2";
    argv[argc++] = call->chan->counter;
    argv[argc++] = call->chan->stream;
    if (is_pub) {
        argv[argc++] = call->chan->pubv;
        argv[argc++] = call->body;
        argv[argc++] = call->args[0];
        argv[argc++] = call->args[1];
        argv[argc++] = call->chan->channel;
        argv[argc++] = call->id;
        argv[argc++] = call->args[2];
        argv[argc++] = call->args[3];
        argv[argc++] = call->args[4];
        argv[argc++] = call->args[5];
    } else {
        for (int i = 0; i < 4; i++)
            argv[argc++] = call->args[i];
    }
    for (int i = 0; i < argc; i++)
        lens[i] = argv[i] == call->body ? call->body_len : strlen(argv[i]);
    if (redisAsyncCommandArgv(bus->cmd.ac, on_call_reply, call, argc, argv,
                              lens) != REDIS_OK)
        return -1;
    conn_sent(&bus->cmd);
    return 0;
}

static rcall_t *new_call(rbus_t *bus, call_kind_t kind, rchan_t *chan)
{
    rcall_t *call = calloc(1, sizeof(*call));

    if (call != NULL) {
        call->bus = bus;
        call->kind = kind;
        call->chan = chan;
        chan->calls++;
    }
    return call;
}

static void free_call(rcall_t *call)
{
    if (call->sub != NULL)
        syncd_bus_sub_unref(call->sub);
    call->chan->calls--;
    chan_release(call->bus, call->chan);
    free(call->body);
    free(call->id);
    free(call);
}

/* Checks the shape of a read-script reply; 0 or -1. */
static int read_reply(const redisReply *reply, int64_t *cur, int *raised,
                      const redisReply **entries)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER ||
        reply->element[1]->type != REDIS_REPLY_INTEGER ||
        reply->element[2]->type != REDIS_REPLY_ARRAY)
        return -1;
    *cur = reply->element[0]->integer;
    *raised = reply->element[1]->integer != 0;
    *entries = reply->element[2];
    return 0;
}

/* Reads a log entry ([id, [field, value, ...]]) into its seq and its
 * decoded event (*out, a new reference; NULL when it does not decode or its
 * seq disagrees with its ID). Returns the seq, or -1 when the entry itself
 * is malformed. */
static int64_t read_entry(rbus_t *bus, const redisReply *entry, json_t **out)
{
    const redisReply *fields;
    int64_t seq;

    *out = NULL;
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
        entry->element[0]->type != REDIS_REPLY_STRING ||
        entry->element[1]->type != REDIS_REPLY_ARRAY)
        return -1;
    seq = strtoll(entry->element[0]->str, NULL, 10);
    fields = entry->element[1];
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *f = fields->element[i], *v = fields->element[i + 1];
        if (f->type == REDIS_REPLY_STRING && strcmp(f->str, "e") == 0 &&
            v->type == REDIS_REPLY_STRING &&
            syncd_bus_receive(&bus->base, out, v->str, v->len) == 0)
            break;
    }
    if (*out != NULL &&
        json_integer_value(json_object_get(*out, "seq")) != seq) {
        bus->base.stats.dropped_malformed++;
        json_decref(*out);
        *out = NULL;
    }
    return seq > 0 ? seq : -1;
}

static void publish_done(rcall_t *call, const redisReply *reply)
{
    int status = SYNCD_EBACKEND;
    int64_t seq = 0;

    if (reply == NULL) {
        status = dropped_status(call->bus);
    } else if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0) {
        status = 0;
        call->bus->base.stats.dropped_republished++;
    } else if (reply->type == REDIS_REPLY_INTEGER && reply->integer < 0) {
        status = SYNCD_ECONFLICT;
    } else if (reply->type == REDIS_REPLY_INTEGER) {
        status = 0;
        seq = reply->integer;
        raise_known(call->chan, seq);
        call->bus->base.stats.published++;
    }
    if (call->own_token != 0)
        own_settle(call->chan, call->own_token, seq);
    if (call->publish_cb != NULL)
        call->publish_cb(status, seq, call->payload);
}

/* Delivers one catch-up batch to sub; returns 1 when sub must read on. */
static int catch_up_deliver(rbus_t *bus, syncd_bus_sub_t *sub, int64_t cur,
                            int raised, const redisReply *entries)
{
    if (sub->last < 0) {
        sub->last = cur;
    } else if (sub->lost || raised) {
        sub->lost = 0;
        syncd_bus_deliver(sub, SYNCD_BUS_RESYNC, cur, NULL);
        return 0;
    } else if (entries->elements == 0 && cur > sub->last) {
        syncd_bus_deliver(sub, SYNCD_BUS_RESYNC, cur, NULL);
        return 0;
    }
    for (size_t i = 0; i < entries->elements && syncd_bus_sub_live(sub); i++) {
        json_t *event;
        int64_t seq = read_entry(bus, entries->element[i], &event);

        if (seq > sub->last + 1)
            syncd_bus_deliver(sub, SYNCD_BUS_RESYNC, seq - 1, NULL);
        if (seq > sub->last && event == NULL) {
            syncd_bus_deliver(sub, SYNCD_BUS_RESYNC, seq, NULL);
        } else if (seq > sub->last) {
            bus->base.stats.replayed++;
            syncd_bus_deliver(sub, SYNCD_BUS_EVENT, seq, event);
        }
        json_decref(event);
    }
    return entries->elements >= CATCHUP_BATCH;
}

/* Decides whether sub must read the log again for the live events it saw
 * while catching up: a seq the read already covers is done; a seq beyond
 * the read's counter that arrived after the read was sent may have been
 * published after it ran (read again); one that arrived before cannot be
 * a real event (the script counts before it publishes), so it is
 * forgotten. */
static int want_more(syncd_bus_sub_t *sub, int64_t cur, int64_t sent_want)
{
    if (sub->want <= sub->last)
        return 0;
    if (sub->want <= cur || sub->want > sent_want)
        return 1;
    sub->want = 0;
    return 0;
}

static void catch_up_done(rcall_t *call, const redisReply *reply)
{
    syncd_bus_sub_t *sub = call->sub;
    rbus_t *bus = call->bus;
    const redisReply *entries;
    int64_t cur;
    int raised;

    sub->inflight = 0;
    if (reply == NULL || !syncd_bus_sub_live(sub))
        return;
    if (read_reply(reply, &cur, &raised, &entries) != 0) {
        conn_fail(&bus->cmd);
        return;
    }
    raise_known(call->chan, cur);
    if (catch_up_deliver(bus, sub, cur, raised, entries) ||
        want_more(sub, cur, call->after) || sub->lost ||
        call->gen != bus->sub_gen) {
        catch_up(sub);
    } else if (syncd_bus_sub_live(sub)) {
        sub->catching = 0;
        sub->want = 0;
    }
}

static void replay_done(rcall_t *call, const redisReply *reply)
{
    rbus_t *bus = call->bus;
    const redisReply *entries;
    json_t *events = NULL;
    int64_t cur, hi;
    int raised, status = 0;

    if (reply == NULL || read_reply(reply, &cur, &raised, &entries) != 0) {
        status = reply == NULL ? dropped_status(bus) : SYNCD_EBACKEND;
        goto done;
    }
    hi = call->until < 0 || call->until > cur ? cur : call->until;
    events = json_array();
    for (size_t i = 0; events != NULL && i < entries->elements; i++) {
        json_t *event;
        int64_t seq = read_entry(bus, entries->element[i], &event);
        if (seq != call->after + 1 + (int64_t)i || event == NULL) {
            json_decref(event);
            status = i == 0 ? SYNCD_ENOTFOUND : SYNCD_EBACKEND;
            goto done;
        }
        json_array_append_new(events, event);
    }
    if (events == NULL)
        status = SYNCD_ENOMEM;
    else if (entries->elements == 0 && call->after < hi)
        status = SYNCD_ENOTFOUND;
    else
        bus->base.stats.replayed += json_array_size(events);

done:
    if (status != 0) {
        json_decref(events);
        events = NULL;
    }
    call->replay_cb(status, events, call->payload);
}

static void on_call_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    rcall_t *call = privdata;
    rbus_t *bus = call->bus;
    redisReply *reply = r;

    if (reply != NULL)
        conn_heard(&bus->cmd, ac, 1);
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0 && !call->evaled) {
        call->evaled = 1;
        if (send_call(call) == 0)
            return;
        reply = NULL;
    }
    syncd_bus_enter(&bus->base);
    if (call->kind == CALL_PUBLISH)
        publish_done(call, reply);
    else if (call->kind == CALL_CATCHUP)
        catch_up_done(call, reply);
    else
        replay_done(call, reply);
    free_call(call);
    syncd_bus_leave(&bus->base);
}

/* Reads sub's next log batch when it is catching up and both connections
 * are ready (else the next conn_ready() or confirmation does). */
static void catch_up(syncd_bus_sub_t *sub)
{
    rbus_t *bus = (rbus_t *)sub->bus;
    rchan_t *chan = sub->chan;
    rcall_t *call;

    if (!sub->catching || sub->inflight || !syncd_bus_sub_live(sub) ||
        !bus->cmd.ready || !bus->sub.ready || !chan->confirmed)
        return;
    call = new_call(bus, CALL_CATCHUP, chan);
    if (call == NULL)
        return;
    if (sub->last >= 0)
        snprintf(call->args[0], sizeof(call->args[0]), "%" PRId64 "-0",
                 sub->last + 1);
    snprintf(call->args[1], sizeof(call->args[1]), "+");
    snprintf(call->args[2], sizeof(call->args[2]), "%d", CATCHUP_BATCH);
    snprintf(call->args[3], sizeof(call->args[3]), "%" PRId64,
             sub->last > 0 ? sub->last : 0);
    call->sub = sub;
    call->after = sub->want;
    call->gen = bus->sub_gen;
    syncd_bus_sub_ref(sub);
    sub->inflight = 1;
    if (send_call(call) != 0) {
        sub->inflight = 0;
        free_call(call);
    }
}

/* ---- Live events ----------------------------------------------------------
 */

/* Whether a live subscription of chan needs the body of every event. */
static int all_bodies_wanted(const rchan_t *chan)
{
    for (const syncd_bus_sub_t *s = chan->subs; s != NULL; s = s->next) {
        if (syncd_bus_sub_live(s) && s->bodies == SYNCD_BUS_BODIES_ALL)
            return 1;
    }
    return 0;
}

/* Takes a message of chan's channel: one of this bus's own events, which
 * no subscription needs the body of, is handed without decoding it; any
 * other is decoded and verified first. */
static void on_event(rbus_t *bus, rchan_t *chan, const char *data, size_t len)
{
    json_t *event = NULL;
    int64_t seq = 0;

    if (chan->own != NULL && own_take(chan, data, len, &seq) &&
        !all_bodies_wanted(chan)) {
        bus->base.stats.received_own++;
    } else if (syncd_bus_receive(&bus->base, &event, data, len) != 0) {
        return;
    } else if (strcmp(json_string_value(json_object_get(event, "coll")),
                      chan->entry.name) != 0) {
        bus->base.stats.dropped_malformed++;
        json_decref(event);
        return;
    } else {
        seq = json_integer_value(json_object_get(event, "seq"));
    }
    bus->base.stats.received++;
    raise_known(chan, seq);
    for (syncd_bus_sub_t *sub = chan->subs; sub != NULL; sub = sub->next) {
        if (!syncd_bus_sub_live(sub))
            continue;
        if (sub->catching) {
            if (seq > sub->want)
                sub->want = seq;
            catch_up(sub);
        } else if (seq <= sub->last) {
            bus->base.stats.dropped_duplicate++;
        } else if (seq == sub->last + 1) {
            syncd_bus_deliver(sub, SYNCD_BUS_EVENT, seq, event);
        } else {
            bus->base.stats.gaps++;
            sub->catching = 1;
            sub->want = seq;
            catch_up(sub);
        }
    }
    json_decref(event);
}

static void on_sub_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    rconn_t *conn = privdata;
    rbus_t *bus = conn->bus;
    redisReply *reply = r;
    const redisReply *kind, *name;
    rchan_t *chan;

    if (reply == NULL || conn->ac != ac || bus->base.closing ||
        reply->type != REDIS_REPLY_ARRAY || reply->elements != 3)
        return;
    kind = reply->element[0];
    name = reply->element[1];
    if (kind->type != REDIS_REPLY_STRING || name->type != REDIS_REPLY_STRING)
        return;
    conn_heard(conn, ac, strcmp(kind->str, "message") != 0);
    chan = find_chan(bus, name->str, name->len);
    if (chan == NULL)
        return;
    syncd_bus_enter(&bus->base);
    if (strcmp(kind->str, "subscribe") == 0) {
        chan->confirmed = 1;
        for (syncd_bus_sub_t *s = chan->subs; s != NULL; s = s->next)
            catch_up(s);
    } else if (strcmp(kind->str, "unsubscribe") == 0 && chan->unsubscribing) {
        chan->unsubscribing = 0;
        if (chan->subs != NULL) {
            chan->wanted = 1;
            if (send_sub_command(bus, chan, "SUBSCRIBE") != REDIS_OK)
                conn_fail(&bus->sub);
        } else {
            chan_release(bus, chan);
        }
    } else if (strcmp(kind->str, "message") == 0 &&
               reply->element[2]->type == REDIS_REPLY_STRING) {
        on_event(bus, chan, reply->element[2]->str, reply->element[2]->len);
    }
    syncd_bus_leave(&bus->base);
}

/* ---- Operations -----------------------------------------------------------
 */

static int redis_publish(syncd_bus_t *base, const bus_pub_t *pub,
                         char *body_new, size_t len, syncd_bus_publish_cb cb,
                         void *payload)
{
    rbus_t *bus = (rbus_t *)base;
    rchan_t *chan = get_chan(bus, pub->coll);
    rcall_t *call = chan != NULL ? new_call(bus, CALL_PUBLISH, chan) : NULL;

    if (call == NULL) {
        free(body_new);
        if (chan != NULL)
            chan_release(bus, chan);
        return SYNCD_ENOMEM;
    }
    call->body = body_new;
    call->body_len = len;
    call->publish_cb = cb;
    call->payload = payload;
    call->id = strdup(pub->id);
    snprintf(call->args[0], sizeof(call->args[0]), "%" PRIu64,
             base->event_log_len);
    snprintf(call->args[1], sizeof(call->args[1]), "%" PRId64, chan->known);
    snprintf(call->args[2], sizeof(call->args[2]), "%" PRId64, pub->v);
    snprintf(call->args[3], sizeof(call->args[3]), "%d", pub->create);
    snprintf(call->args[4], sizeof(call->args[4]), "%" PRId64, pub->ts_us);
    snprintf(call->args[5], sizeof(call->args[5]), "%" PRId64, pub->settled);
    if (call->id == NULL) {
        free_call(call);
        return SYNCD_ENOMEM;
    }
    if (send_call(call) != 0) {
        free_call(call);
        return SYNCD_EBACKEND;
    }
    /* Without memory for it, the event is only decoded when it comes
     * back. */
    if (own_wanted(chan) &&
        own_add(chan, call->body, len, bus->own_tokens + 1) == 0)
        call->own_token = ++bus->own_tokens;
    return 0;
}

static int redis_subscribe(syncd_bus_t *base, syncd_bus_sub_t *sub,
                           syncd_error_t *err)
{
    rbus_t *bus = (rbus_t *)base;
    rchan_t *chan = get_chan(bus, sub->coll);

    if (chan == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "allocating a channel");
    if (sub->last > chan->known)
        chan->known = sub->last;
    sub->chan = chan;
    sub->next = chan->subs;
    chan->subs = sub;
    if (!chan->wanted && !chan->unsubscribing) {
        chan->wanted = 1;
        if (bus->sub.ac != NULL &&
            send_sub_command(bus, chan, "SUBSCRIBE") != REDIS_OK)
            conn_fail(&bus->sub);
    }
    catch_up(sub);
    return 0;
}

static void redis_sweep(syncd_bus_t *base)
{
    rbus_t *bus = (rbus_t *)base;
    rchan_t *dirty = NULL, *c;
    syncd_bus_sub_t *sub;

    while ((sub = syncd_bus_dead_pop(base)) != NULL) {
        c = sub->chan;
        if (!c->dirty) {
            c->dirty = 1;
            c->dirty_next = dirty;
            dirty = c;
        }
        syncd_bus_sub_unref(sub);
    }
    while (dirty != NULL) {
        c = dirty;
        dirty = c->dirty_next;
        c->dirty = 0;
        syncd_bus_subs_sweep(&c->subs);
        chan_release(bus, c);
    }
}

static int redis_replay(syncd_bus_t *base, const char *coll, int64_t after,
                        int64_t until, size_t max, syncd_bus_replay_cb cb,
                        void *payload)
{
    rbus_t *bus = (rbus_t *)base;
    rchan_t *chan = get_chan(bus, coll);
    rcall_t *call = chan != NULL ? new_call(bus, CALL_REPLAY, chan) : NULL;

    if (call == NULL) {
        if (chan != NULL)
            chan_release(bus, chan);
        return SYNCD_ENOMEM;
    }
    call->replay_cb = cb;
    call->payload = payload;
    call->after = after;
    call->until = until;
    snprintf(call->args[0], sizeof(call->args[0]), "%" PRId64 "-0", after + 1);
    if (until < 0)
        snprintf(call->args[1], sizeof(call->args[1]), "+");
    else
        snprintf(call->args[1], sizeof(call->args[1]), "%" PRId64 "-1", until);
    snprintf(call->args[2], sizeof(call->args[2]), "%zu", max);
    snprintf(call->args[3], sizeof(call->args[3]), "0");
    if (send_call(call) != 0) {
        free_call(call);
        return SYNCD_EBACKEND;
    }
    return 0;
}

/* A GET of a collection's counter in flight. */
typedef struct rseq {
    rbus_t *bus;
    syncd_bus_seq_cb cb;
    void *payload;
} rseq_t;

static void on_seq(redisAsyncContext *ac, void *r, void *privdata)
{
    rseq_t *req = privdata;
    redisReply *reply = r;
    int status = SYNCD_EBACKEND;
    int64_t seq = 0;

    if (reply == NULL) {
        status = dropped_status(req->bus);
    } else if (reply != NULL && (reply->type == REDIS_REPLY_NIL ||
                                 reply->type == REDIS_REPLY_STRING)) {
        status = 0;
        seq = reply->type == REDIS_REPLY_STRING ? strtoll(reply->str, NULL, 10)
                                                : 0;
    }
    if (reply != NULL)
        conn_heard(&req->bus->cmd, ac, 1);
    syncd_bus_enter(&req->bus->base);
    req->cb(status, seq, req->payload);
    syncd_bus_leave(&req->bus->base);
    free(req);
}

static int redis_seq(syncd_bus_t *base, const char *coll, syncd_bus_seq_cb cb,
                     void *payload)
{
    rbus_t *bus = (rbus_t *)base;
    rseq_t *req = calloc(1, sizeof(*req));

    if (req == NULL)
        return SYNCD_ENOMEM;
    req->bus = bus;
    req->cb = cb;
    req->payload = payload;
    if (!bus->cmd.ready ||
        redisAsyncCommand(bus->cmd.ac, on_seq, req, "GET syncd:%s:%s:seq",
                          base->database, coll) != REDIS_OK) {
        free(req);
        return SYNCD_EBACKEND;
    }
    conn_sent(&bus->cmd);
    return 0;
}

/* KEYS: published versions. ARGV: id, version, id, version, ... Drops
 * each id's record while its version is the one given; returns how many
 * went. */
static const char forget_lua[] =
    "local n = 0\n"
    "for i = 1, #ARGV, 2 do\n"
    "  local rec = redis.call('HGET', KEYS[1], ARGV[i])\n"
    "  if rec and string.sub(rec, 1, string.find(rec, ' ', 1, true) - 1) == "
    "ARGV[i + 1] then\n"
    "    redis.call('HDEL', KEYS[1], ARGV[i])\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "return n\n";

typedef struct rforget {
    rbus_t *bus;
    syncd_bus_forget_cb cb;
    void *payload;
} rforget_t;

static void on_forget(redisAsyncContext *ac, void *r, void *privdata)
{
    rforget_t *req = privdata;
    redisReply *reply = r;
    int status = SYNCD_EBACKEND;
    size_t n = 0;

    if (reply == NULL) {
        status = dropped_status(req->bus);
    } else if (reply->type == REDIS_REPLY_INTEGER && reply->integer >= 0) {
        status = 0;
        n = (size_t)reply->integer;
    }
    if (reply != NULL)
        conn_heard(&req->bus->cmd, ac, 1);
    syncd_bus_enter(&req->bus->base);
    req->cb(status, n, req->payload);
    syncd_bus_leave(&req->bus->base);
    free(req);
}

static int redis_forget(syncd_bus_t *base, const char *coll, const json_t *gone,
                        syncd_bus_forget_cb cb, void *payload)
{
    enum { HEAD = 4, MAX_ARGS = HEAD + 2 * SYNCD_BUS_MAX_FORGET };
    rbus_t *bus = (rbus_t *)base;
    rforget_t *req = calloc(1, sizeof(*req));
    char key[KEY_MAX], (*versions)[24] = NULL;
    const char *argv[MAX_ARGS], *id;
    size_t argl[MAX_ARGS];
    int argc = HEAD, rc = SYNCD_ENOMEM;
    json_t *v;

    versions = calloc(SYNCD_BUS_MAX_FORGET, sizeof(*versions));
    if (req == NULL || versions == NULL)
        goto cleanup;
    req->bus = bus;
    req->cb = cb;
    req->payload = payload;
    snprintf(key, sizeof(key), "syncd:%s:%s:pubv", base->database, coll);
    argv[0] = "EVAL";
    argv[1] = forget_lua;
    argv[2] = "1";
    argv[3] = key;
    json_object_foreach ((json_t *)gone, id, v) {
        char *num = versions[(argc - HEAD) / 2];

        snprintf(num, sizeof(versions[0]), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(v));
        argv[argc++] = id;
        argv[argc++] = num;
    }
    for (int i = 0; i < argc; i++)
        argl[i] = strlen(argv[i]);
    rc = SYNCD_EBACKEND;
    if (!bus->cmd.ready || redisAsyncCommandArgv(bus->cmd.ac, on_forget, req,
                                                 argc, argv, argl) != REDIS_OK)
        goto cleanup;
    conn_sent(&bus->cmd);
    req = NULL;
    rc = 0;

cleanup:
    free(versions);
    free(req);
    return rc;
}

/* ---- Membership ---------------------------------------------------------
 */

/* KEYS: the node's key, the sorted set of nodes. ARGV: the beat, ttl ms,
 * node id. Stamps the id with Redis's clock (ms) and forgets ids silent
 * for a day. Returns that time. */
static const char heartbeat_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "redis.call('ZADD', KEYS[2], now, ARGV[3])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 86400000)\n"
    "return now\n";

/* KEYS: the sorted set of nodes. ARGV: node key prefix, most nodes,
 * collection key prefix. Returns {now ms, {id, last ms, beat, ...},
 * {coll, seq, ...}}; ids whose key expired leave the set. */
static const char members_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local ids = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')\n"
    "local out, newest, seen = {}, {}, {}\n"
    "local max = tonumber(ARGV[2])\n"
    "for i = 1, #ids, 2 do\n"
    "  local v = redis.call('GET', ARGV[1] .. ids[i] .. ':beat')\n"
    "  if not v then\n"
    "    redis.call('ZREM', KEYS[1], ids[i])\n"
    "  elseif #out < 3 * max then\n"
    "    out[#out + 1] = ids[i]\n"
    "    out[#out + 1] = ids[i + 1]\n"
    "    out[#out + 1] = v\n"
    "    local ok, b = pcall(cjson.decode, v)\n"
    "    if ok and type(b) == 'table' and type(b.collections) == 'table' then\n"
    "      for c, _ in pairs(b.collections) do\n"
    "        if type(c) == 'string' and not seen[c] then\n"
    "          seen[c] = true\n"
    "          newest[#newest + 1] = c\n"
    "          newest[#newest + 1] = redis.call('GET', ARGV[3] .. c .. ':seq')"
    " or '0'\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return {tostring(now), out, newest}\n";

/* A heartbeat or members script in flight. */
typedef struct rmember {
    rbus_t *bus;
    syncd_bus_heartbeat_cb heartbeat_cb;
    syncd_bus_members_cb members_cb;
    void *payload;
} rmember_t;

static void on_heartbeat(redisAsyncContext *ac, void *r, void *privdata)
{
    rmember_t *req = privdata;
    redisReply *reply = r;
    int status = SYNCD_EBACKEND;

    if (reply == NULL)
        status = dropped_status(req->bus);
    else if (reply->type == REDIS_REPLY_INTEGER)
        status = 0;
    if (reply != NULL)
        conn_heard(&req->bus->cmd, ac, 1);
    syncd_bus_enter(&req->bus->base);
    req->heartbeat_cb(status, req->payload);
    syncd_bus_leave(&req->bus->base);
    free(req);
}

/* Returns the integer in a bulk string reply element, or -1. */
static int64_t reply_int(const redisReply *r)
{
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING)
        return (int64_t)strtod(r->str, NULL);
    return -1;
}

/* Reads a members script reply into a new object (bus.h); NULL when it is
 * malformed or on out of memory. Beats that do not parse are skipped. */
static json_t *read_members(const redisReply *reply)
{
    const redisReply *nodes, *newest;
    json_t *out = NULL, *list, *seqs;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[1]->type != REDIS_REPLY_ARRAY ||
        reply->element[2]->type != REDIS_REPLY_ARRAY)
        return NULL;
    nodes = reply->element[1];
    newest = reply->element[2];
    list = json_array();
    seqs = json_object();
    out = json_pack("{s:I, s:o, s:o}", "now_ms",
                    (json_int_t)reply_int(reply->element[0]), "nodes", list,
                    "newest", seqs);
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i + 2 < nodes->elements; i += 3) {
        const redisReply *id = nodes->element[i], *v = nodes->element[i + 2];
        json_t *beat;

        if (id->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        beat = json_loadb(v->str, v->len, 0, NULL);
        if (!json_is_object(beat)) {
            json_decref(beat);
            continue;
        }
        json_array_append_new(
            list,
            json_pack("{s:s%, s:I, s:o}", "id", id->str, id->len, "last_ms",
                      (json_int_t)reply_int(nodes->element[i + 1]), "beat",
                      beat));
    }
    for (size_t i = 0; i + 1 < newest->elements; i += 2) {
        if (newest->element[i]->type == REDIS_REPLY_STRING)
            json_object_set_new(
                seqs, newest->element[i]->str,
                json_integer((json_int_t)reply_int(newest->element[i + 1])));
    }
    return out;
}

static void on_members(redisAsyncContext *ac, void *r, void *privdata)
{
    rmember_t *req = privdata;
    redisReply *reply = r;
    json_t *members = NULL;
    int status = SYNCD_EBACKEND;

    if (reply == NULL)
        status = dropped_status(req->bus);
    else if ((members = read_members(reply)) != NULL)
        status = 0;
    if (reply != NULL)
        conn_heard(&req->bus->cmd, ac, 1);
    syncd_bus_enter(&req->bus->base);
    req->members_cb(status, members, req->payload);
    syncd_bus_leave(&req->bus->base);
    free(req);
}

static int redis_heartbeat(syncd_bus_t *base, const json_t *beat,
                           char *body_new, size_t len, int64_t ttl_ms,
                           syncd_bus_heartbeat_cb cb, void *payload)
{
    rbus_t *bus = (rbus_t *)base;
    rmember_t *req = calloc(1, sizeof(*req));
    char key[KEY_MAX + 160], set[KEY_MAX], ttl[32];
    const char *argv[8];
    size_t argl[8];
    int rc = SYNCD_ENOMEM;

    (void)beat;
    if (req == NULL)
        goto cleanup;
    req->bus = bus;
    req->heartbeat_cb = cb;
    req->payload = payload;
    snprintf(key, sizeof(key), "syncd:%s:node:%s:beat", base->database,
             base->node_id);
    snprintf(set, sizeof(set), "syncd:%s:nodes", base->database);
    snprintf(ttl, sizeof(ttl), "%lld", (long long)ttl_ms);
    argv[0] = "EVAL";
    argv[1] = heartbeat_lua;
    argv[2] = "2";
    argv[3] = key;
    argv[4] = set;
    argv[5] = body_new;
    argv[6] = ttl;
    argv[7] = base->node_id;
    for (int i = 0; i < 8; i++)
        argl[i] = i == 5 ? len : strlen(argv[i]);
    rc = SYNCD_EBACKEND;
    if (!bus->cmd.ready || redisAsyncCommandArgv(bus->cmd.ac, on_heartbeat, req,
                                                 8, argv, argl) != REDIS_OK)
        goto cleanup;
    conn_sent(&bus->cmd);
    req = NULL;
    rc = 0;

cleanup:
    free(req);
    free(body_new);
    return rc;
}

static int redis_members(syncd_bus_t *base, syncd_bus_members_cb cb,
                         void *payload)
{
    rbus_t *bus = (rbus_t *)base;
    rmember_t *req = calloc(1, sizeof(*req));
    char set[KEY_MAX], node_prefix[KEY_MAX], coll_prefix[KEY_MAX], max[16];
    const char *argv[7];

    if (req == NULL)
        return SYNCD_ENOMEM;
    req->bus = bus;
    req->members_cb = cb;
    req->payload = payload;
    snprintf(set, sizeof(set), "syncd:%s:nodes", base->database);
    snprintf(node_prefix, sizeof(node_prefix),
             "syncd:%s:node:", base->database);
    snprintf(coll_prefix, sizeof(coll_prefix), "syncd:%s:", base->database);
    snprintf(max, sizeof(max), "%d", SYNCD_BUS_MAX_NODES);
    argv[0] = "EVAL";
    argv[1] = members_lua;
    argv[2] = "1";
    argv[3] = set;
    argv[4] = node_prefix;
    argv[5] = max;
    argv[6] = coll_prefix;
    if (!bus->cmd.ready || redisAsyncCommandArgv(bus->cmd.ac, on_members, req,
                                                 7, argv, NULL) != REDIS_OK) {
        free(req);
        return SYNCD_EBACKEND;
    }
    conn_sent(&bus->cmd);
    return 0;
}

static int redis_connected(const syncd_bus_t *base)
{
    const rbus_t *bus = (const rbus_t *)base;
    return bus->cmd.ready && bus->sub.ready;
}

/* Counts down the handles (and name lookups) of a closing bus; the last
 * one frees it. */
static void on_closed(uv_handle_t *handle)
{
    rbus_t *bus = ((rconn_t *)handle->data)->bus;

    if (--bus->open_handles > 0)
        return;
    while (bus->chans != NULL) {
        rchan_t *c = bus->chans;
        bus->chans = c->next;
        chan_free(bus, c);
    }
    syncd_bus_map_free(&bus->map);
    syncd_bus_finish_close(&bus->base);
    free_credentials(bus);
    free(bus);
}

static void redis_close(syncd_bus_t *base)
{
    rbus_t *bus = (rbus_t *)base;
    rconn_t *conns[2] = {&bus->cmd, &bus->sub};

    syncd_bus_enter(base);
    for (int i = 0; i < 2; i++) {
        redisAsyncContext *ac = conns[i]->ac;
        conns[i]->ac = NULL;
        conns[i]->ready = 0;
        if (ac != NULL)
            redisAsyncFree(ac);
        if (conns[i]->resolving)
            uv_cancel((uv_req_t *)&conns[i]->gai);
        uv_close((uv_handle_t *)&conns[i]->timer, on_closed);
        uv_close((uv_handle_t *)&conns[i]->deadline, on_closed);
    }
    syncd_bus_leave(base);
}

static const bus_ops_t redis_ops = {
    .kind = "redis",
    .close = redis_close,
    .connected = redis_connected,
    .publish = redis_publish,
    .subscribe = redis_subscribe,
    .sweep = redis_sweep,
    .replay = redis_replay,
    .seq = redis_seq,
    .forget = redis_forget,
    .heartbeat = redis_heartbeat,
    .members = redis_members,
};

/* Frees the credentials of bus, their bytes wiped first. */
static void free_credentials(rbus_t *bus)
{
    if (bus->user != NULL) {
        memset(bus->user, 0, strlen(bus->user));
        free(bus->user);
        bus->user = NULL;
    }
    if (bus->pass != NULL) {
        memset(bus->pass, 0, strlen(bus->pass));
        free(bus->pass);
        bus->pass = NULL;
    }
}

/* Percent-decodes n bytes at s into *out (NULL when n is 0); -1 when they
 * do not decode or hold a NUL or a control byte. */
static int decode_credential(char **out, const char *s, size_t n)
{
    size_t len;

    *out = NULL;
    if (n == 0)
        return 0;
    if (syncd_pct_decode(out, &len, s, n, NULL) != 0)
        return -1;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)(*out)[i] < 0x20 || (*out)[i] == 0x7f)
            return -1;
    return 0;
}

/* Parses "redis://[[user]:password@]host[:port][/db]" into bus (user and
 * password percent-decoded); SYNCD_EINVAL names the URL with its
 * credentials left out. */
static int parse_url(rbus_t *bus, const char *url, syncd_error_t *err)
{
    const char *p = url, *host, *at, *colon;
    char *num_end;
    long v;

    if (strncmp(p, "redis://", 8) != 0)
        goto bad;
    p += 8;
    at = strrchr(p, '@');
    if (at != NULL) {
        colon = memchr(p, ':', (size_t)(at - p));
        if (colon == NULL || colon + 1 == at ||
            decode_credential(&bus->user, p, (size_t)(colon - p)) != 0 ||
            decode_credential(&bus->pass, colon + 1,
                              (size_t)(at - colon - 1)) != 0)
            goto bad;
        p = at + 1;
    }
    host = p;
    while (*p != '\0' && *p != ':' && *p != '/')
        p++;
    if (p == host || (size_t)(p - host) >= sizeof(bus->host))
        goto bad;
    snprintf(bus->host, sizeof(bus->host), "%.*s", (int)(p - host), host);
    bus->port = 6379;
    if (*p == ':') {
        v = strtol(p + 1, &num_end, 10);
        if (num_end == p + 1 || v < 1 || v > 65535)
            goto bad;
        bus->port = (int)v;
        p = num_end;
    }
    if (*p == '/' && p[1] != '\0') {
        v = strtol(p + 1, &num_end, 10);
        if (num_end == p + 1 || *num_end != '\0' || v < 0 || v > 1000000)
            goto bad;
        bus->dbnum = (int)v;
        p = num_end;
    } else if (*p == '/') {
        p++;
    }
    if (*p != '\0')
        goto bad;
    return 0;

bad:
    free_credentials(bus);
    at = strncmp(url, "redis://", 8) == 0 ? strrchr(url + 8, '@') : NULL;
    return syncd_error_set(err, SYNCD_EINVAL,
                           "bad --redis-url \"%s%s\": expected "
                           "redis://[[user]:password@]host[:port][/db]",
                           at != NULL ? "redis://<credentials>@" : "",
                           at != NULL ? at + 1 : url);
}

static void conn_init(rbus_t *bus, rconn_t *conn, int is_sub)
{
    conn->bus = bus;
    conn->is_sub = is_sub;
    conn->backoff_ms = bus->base.reconnect_min_ms;
    uv_timer_init(bus->base.loop, &conn->timer);
    uv_timer_init(bus->base.loop, &conn->deadline);
    conn->timer.data = conn;
    conn->deadline.data = conn;
    bus->open_handles += 2;
}

int syncd_bus_redis_open(syncd_bus_t **out, uv_loop_t *loop,
                         const syncd_bus_options_t *opts, syncd_error_t *err)
{
    rbus_t *bus = calloc(1, sizeof(*bus));
    int rc;

    if (bus == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "allocating the bus");
    rc = syncd_bus_init(&bus->base, &redis_ops, loop, opts, err);
    if (rc == 0)
        rc = parse_url(bus, opts->redis_url, err);
    if (rc != 0) {
        free(bus->base.secret);
        free_credentials(bus);
        free(bus);
        return rc;
    }
    snprintf(bus->epoch_key, sizeof(bus->epoch_key), "syncd:%s:epoch",
             bus->base.database);
    conn_init(bus, &bus->cmd, 0);
    conn_init(bus, &bus->sub, 1);
    conn_start(&bus->cmd);
    conn_start(&bus->sub);
    *out = &bus->base;
    return 0;
}
