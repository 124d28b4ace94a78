/* rocks.c - the RocksDB store of record of the embedded default.
 *
 * Records live under key = collection, NUL, id (see record.c); a second
 * key space, one key per collection under the prefix byte 0x01 (which no
 * collection name starts with), registers collection names; a third, under
 * 0x05, holds the pending-publish markers (the outbox): one key per marker,
 * the record's key, NUL (which no collection name or id holds, so one
 * record's markers never mix with another's) and the marker's version as
 * 8 big-endian bytes (so a record's markers sort oldest first) -> the
 * marker's compact JSON. A commit puts the one marker it adds, in the same
 * batch as its record, and an ack deletes the markers it drops, so neither
 * rewrites the markers still pending (nor the record: a whole large
 * document), however many are. The key 0x06 + the record's key (empty
 * value) is there while the record has markers: put by the write that
 * adds its first, deleted by the ack that drops its last, so that a read
 * looks for markers only when there are some (a point lookup, which the
 * bloom filters answer, beside the record's), and the republisher lists
 * the records with markers without scanning the store. A store written
 * before kept a record's markers as one array under 0x02 + the record's
 * key (or, with an empty value there, still in the record's meta); open
 * moves them to their keys (markers_upgrade()). A record's history
 * entries (history.c) live beside it the same way, under 0x07: the
 * record's key, NUL, the entry's version as 8 big-endian bytes -> the
 * entry's compact JSON; a commit puts its one new entry and deletes those
 * that fall out of the history's bounds, in its record's batch, rather than
 * rewriting all of them in the record, and a read gathers them (the record
 * says whether it has any: syncd_record_hist_apart()). A store written
 * before kept them in each record; its first open moves them (the key
 * 0x04 "history-apart" says it did). Another key space, under 0x03, holds
 * the key and mtime of every tombstone, written in the same batch too, so
 * that a purge reads the tombstones alone (a store made before it gets it
 * built at its first open; the key 0x04 "tombstone-index" says it is
 * complete). The WAL is on and, with sync_writes, every commit is fsynced
 * before it is acknowledged, so an acknowledged write survives kill -9.
 *
 * Group commit: concurrent commits share one WAL sync. A writer sequences
 * its commit in memory under its key's write lock: the encoded record joins
 * the group queue and becomes the key's pending version, which the key's
 * next writer reads instead of the store, so that it builds on it. The
 * writer then releases the lock and waits for a sync covering its commit:
 * the first waiter finding no sync under way leads, writing the whole
 * queue as one batch with one rocksdb_write (sync on), and wakes the
 * others. A writer that answers from a pending version without a commit
 * of its own (an idempotent replay, an unchanged body) waits for that
 * version's sync as well. Outbox acks need no sync of their own (a lost
 * ack only means a republish): they ride with the next group, and the
 * last thread about writes what is still queued (without a sync when that
 * is acks only). (Writing each commit unsynced
 * and then one rocksdb_flush_wal would make undurable versions readable from
 * RocksDB itself.) Readers never see a pending version: they read the tier and
 * RocksDB, which only ever hold durable versions, so a reader sees the previous
 * version until the sync is done; the leader puts the group's versions into the
 * tier, in order, before acknowledging the writers. A failed sync fails
 * every writer of its group and of the queue behind it, drops their
 * pending versions (readers keep seeing the last durable ones) and fails
 * every later write with SYNCD_EBACKEND: the store must be reopened, which
 * recovers from the WAL exactly what was durable.
 *
 * Compare-and-swap is made atomic by per-document write locks: a writer
 * holds its key's lock from the version check to the commit. Key locks are
 * re-entrant and live in a small table, created on first use and freed by
 * their last user, so writers of different documents never wait for one
 * another, and the store's edit loop can hold a key's lock across its
 * read, edit and compare-and-swap (the backend's `locked` operation):
 * within one process, the only place this store is ever written from,
 * writers of a key queue instead of conflicting.
 *
 * Readers never take a write lock. In front of RocksDB, the in-memory tier
 * of tier.c holds decoded, reference-counted documents (the json_t body is
 * shared with the callers), bounded to tier_max_bytes by evicting the least
 * recently used entries, each served for at most tier_ttl_ms after it was
 * loaded; its statistics are the store's. The key-lock table is split into
 * NSTRIPES stripes, each guarded by a mutex that is only ever held for
 * in-memory work, never across I/O or a caller's callback. A writer updates
 * its key's tier entry after the commit; a reader that misses reads RocksDB
 * without any lock and puts what it read in the tier, under its stripe's
 * mutex, only when no commit of its stripe began or ended meanwhile (the
 * stripe's commit generation and count of commits in progress tell), so a
 * stale read never enters the tier after a newer write.
 *
 * Hash trees: beside a body of at least SYNCD_TREE_MIN bytes that a write
 * replaced, the tier keeps its hash tree (tier.c), and a commit not yet
 * durable keeps it in its pending version, so that the key's next writer
 * (holding the key's lock, the only one to touch it) takes the tree of the
 * version it builds on (take_tree), updates it with its change instead of
 * hashing the whole body, and leaves it with its own version (keep_tree).
 * An outbox ack, which rewrites the same version, hands the tree on.
 */
#include <pthread.h>
#include <rocksdb/c.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "internal.h"

#define NSTRIPES 64
#define REGISTRY_PREFIX '\x01'
/* The outbox of a store written before each marker had its own key. */
#define LEGACY_OUTBOX_PREFIX '\x02'
/* A marker's key: MARKER_PREFIX, the record's key, NUL, its version. */
#define MARKER_PREFIX '\x05'
/* A history entry's key: HISTORY_PREFIX, the record's key, NUL, its
 * version. HISTORY_COMPLETE says no record holds its history any more (a
 * store written before kept it in each record: the first open moves it). */
#define HISTORY_PREFIX '\x07'
#define HISTORY_COMPLETE "\x04history-apart"
/* The longest key of a marker or a history entry. */
#define VERSION_KEY_MAX (1 + SYNCD_RECORD_KEY_MAX + 1 + 8)
/* MARKED_PREFIX, then a record's key: the record has markers. */
#define MARKED_PREFIX '\x06'
/* The tombstone index: TOMB_PREFIX, then a tombstone's record key ->
 * its mtime (8 bytes, little-endian), so that a purge reads the
 * tombstones only. TOMB_COMPLETE says the index covers every record
 * (a store made before it had none: the first open builds it). */
#define TOMB_PREFIX '\x03'
#define TOMB_COMPLETE "\x04tombstone-index"
/* Records a purge reads per page. */
#define PURGE_PAGE 1000

/* sequence() flags: the commit creates the record (registers its
 * collection); the commit is an outbox ack. */
#define SEQ_INSERT 1
#define SEQ_ACK 2
/* sequence() flag: the record it replaces is a tombstone. */
#define SEQ_WAS_TOMB 4

/* The write lock of one key, shared by its writers; key bytes follow. */
typedef struct key_lock {
    syncd_lru_node_t node;
    pthread_mutex_t lock; /* recursive */
    size_t users;         /* holders and waiters, under the stripe mutex */
    int depth;            /* the holder's nesting, under lock */
    uintptr_t holder;     /* the holder's this_thread(), atomic; 0: none */
    uint64_t ticket;      /* last commit sequenced by the holder, under lock */
    char key[];
} key_lock_t;

struct stripe;

/* A write of one marker's or history entry's key: a put of the one of
 * version v (its compact JSON, owned), or its delete when text is NULL. */
typedef struct version_op {
    int64_t v;
    char *text;
    size_t len;
} version_op_t;

/* The writes of a record's marker or history keys. */
typedef struct version_ops {
    version_op_t *ops;
    size_t n;
} version_ops_t;

/* A commit sequenced in memory and not yet durable. While it is its key's
 * newest such commit it is also the key's entry in its stripe's pending
 * table (node.key points at k.bytes). */
typedef struct pending {
    syncd_lru_node_t node;
    struct pending *next; /* in the group queue */
    struct stripe *s;
    syncd_reckey_t k;
    syncd_doc_t *doc; /* the version, the key's tier entry once durable */
    char *val;        /* the encoded record; NULL for an ack */
    size_t vlen;
    version_ops_t marks; /* the marker keys it puts and deletes */
    version_ops_t hist;  /* the history entry keys it puts and deletes */
    int marked; /* 1: puts k's MARKED_PREFIX key, -1: deletes it, 0: neither */
    syncd_htree_t *tree; /* doc's hash tree (owned), or NULL */
    size_t tree_bytes;   /* what tree is charged in the tier */
    int insert;          /* registers the collection */
    int ack;             /* an outbox ack: needs no sync of its own */
    int was_tomb;        /* replaces a tombstone: deletes its index key */
    int in_table;        /* the key's entry in s->pending */
    uint64_t seq;
} pending_t;

typedef struct stripe {
    pthread_mutex_t lock; /* in-memory work only: key locks, pending, gen */
    syncd_lru_t locks;
    syncd_lru_t pending; /* pending_t by key: versions awaiting a sync */
    uint64_t gen; /* bumped when a commit of the stripe begins and ends */
    int writing;  /* commits of the stripe in progress */
} stripe_t;

typedef struct rocks {
    syncd_backend_t base;
    rocksdb_t *db;
    rocksdb_options_t *options;
    rocksdb_readoptions_t *read;
    rocksdb_writeoptions_t *write;
    rocksdb_writeoptions_t *write_unsynced; /* acks, purges, index builds */
    int sync_writes;                        /* whether r->write syncs */
    syncd_tier_t *tier;
    int64_t (*now_ms)(void *data);
    void *now_data;
    /* The group commit, under gc_lock: queued commits in sequence order,
     * the last sequenced and the last durable sequence numbers, whether a
     * leader is writing, and the error of a failed sync. Taken before a
     * stripe's mutex when both are held. */
    pthread_mutex_t gc_lock;
    struct gc_waiter *sleepers; /* threads waiting for a leader to finish */
    pending_t *queue, **queue_tail;
    uint64_t seq_last, seq_durable;
    int leading;
    int waiting; /* threads in group_wait() */
    int failed;
    char failure[256];
    int nstripes_ready;
    stripe_t stripes[NSTRIPES];
} rocks_t;

/* Identifies the calling thread (the address of its own tag). */
static _Thread_local char thread_tag;

static uintptr_t this_thread(void)
{
    return (uintptr_t)&thread_tag;
}

static int64_t monotonic_ms(void *data)
{
    struct timespec ts;

    (void)data;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int rocks_error(syncd_error_t *err, char *errptr, const char *what)
{
    int rc = syncd_error_set_backend(err, SYNCD_EBACKEND, "rocksdb", 0,
                                     "rocksdb %s: %s", what, errptr);

    rocksdb_free(errptr);
    return rc;
}

static stripe_t *stripe_of(rocks_t *r, const syncd_reckey_t *k)
{
    return &r->stripes[(k->hash >> 40) % NSTRIPES];
}

/* ---- Key write locks ----------------------------------------------------- */

/* Takes k's write lock (re-entrant), returned in *out for key_unlock(). */
static int key_lock(stripe_t *s, const syncd_reckey_t *k, key_lock_t **out,
                    syncd_error_t *err)
{
    pthread_mutexattr_t recursive;
    syncd_lru_node_t *node;
    key_lock_t *kl;

    pthread_mutex_lock(&s->lock);
    node = syncd_lru_find(&s->locks, k->bytes, k->len, k->hash);
    kl = (key_lock_t *)node;
    if (kl == NULL) {
        kl = malloc(sizeof(*kl) + k->len);
        if (kl == NULL) {
            pthread_mutex_unlock(&s->lock);
            return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        }
        pthread_mutexattr_init(&recursive);
        pthread_mutexattr_settype(&recursive, PTHREAD_MUTEX_RECURSIVE);
        pthread_mutex_init(&kl->lock, &recursive);
        pthread_mutexattr_destroy(&recursive);
        kl->users = 0;
        kl->depth = 0;
        kl->holder = 0;
        kl->ticket = 0;
        syncd_reckey_node(&kl->node, kl->key, k, 0);
        syncd_lru_insert(&s->locks, &kl->node);
    }
    kl->users++;
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_lock(&kl->lock);
    if (kl->depth++ == 0)
        __atomic_store_n(&kl->holder, this_thread(), __ATOMIC_RELAXED);
    *out = kl;
    return 0;
}

/* Releases a key_lock(); the last user frees the lock. Returns the last
 * commit sequenced under the outermost hold when this releases it (its
 * holder waits for it with group_wait()), else 0. */
static uint64_t key_unlock(stripe_t *s, key_lock_t *kl)
{
    uint64_t ticket = 0;

    if (--kl->depth == 0) {
        ticket = kl->ticket;
        kl->ticket = 0;
        __atomic_store_n(&kl->holder, 0, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&kl->lock);
    pthread_mutex_lock(&s->lock);
    if (--kl->users == 0) {
        syncd_lru_remove(&s->locks, &kl->node);
        pthread_mutex_destroy(&kl->lock);
        free(kl);
    }
    pthread_mutex_unlock(&s->lock);
    return ticket;
}

/* ---- Reads and writes ---------------------------------------------------- */

/* Writes the index key of record key k (prefix, then k) into buf,
 * 1 + k->len bytes. */
static void index_key(char *buf, char prefix, const syncd_reckey_t *k)
{
    buf[0] = prefix;
    memcpy(buf + 1, k->bytes, k->len);
}

/* Writes into buf (VERSION_KEY_MAX bytes) the key of k's marker
 * (MARKER_PREFIX) or history entry (HISTORY_PREFIX) of version v, or with
 * v < 0 the prefix that all of k's keys of that kind share; returns its
 * length. */
static size_t version_key(char *buf, char prefix, const syncd_reckey_t *k,
                          int64_t v)
{
    buf[0] = prefix;
    memcpy(buf + 1, k->bytes, k->len);
    buf[1 + k->len] = '\0';
    if (v < 0)
        return 2 + k->len;
    for (int i = 0; i < 8; i++)
        buf[2 + k->len + i] = (char)((uint64_t)v >> (56 - 8 * i));
    return 2 + k->len + 8;
}

/* Positions a new iterator at the first key >= start (start_len bytes). */
static rocksdb_iterator_t *iter_at(rocks_t *r, const char *start,
                                   size_t start_len)
{
    rocksdb_iterator_t *it = rocksdb_create_iterator(r->db, r->read);

    rocksdb_iter_seek(it, start, start_len);
    return it;
}

static int iter_status(rocksdb_iterator_t *it, syncd_error_t *err)
{
    char *errptr = NULL;

    rocksdb_iter_get_error(it, &errptr);
    return errptr != NULL ? rocks_error(err, errptr, "iterate") : 0;
}

/* Reads k's keys under prefix (its markers or history entries) with ro
 * into *arr, oldest first (NULL: none) and, when text is not NULL, their
 * values joined as the text of that JSON array into *text (a buffer the
 * caller frees). A value that is no JSON object fails the read: what (with
 * the record's coll and id) names what it belongs to. */
static int read_versions(rocks_t *r, const rocksdb_readoptions_t *ro,
                         char prefix, const syncd_reckey_t *k, json_t **arr,
                         syncd_buf_t *text, const char *what,
                         const syncd_doc_t *doc, syncd_error_t *err)
{
    char start[VERSION_KEY_MAX];
    size_t plen = version_key(start, prefix, k, -1);
    rocksdb_iterator_t *it = rocksdb_create_iterator(r->db, ro);
    json_t *got = NULL;
    int rc = 0;

    for (rocksdb_iter_seek(it, start, plen); rc == 0 && rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *key = rocksdb_iter_key(it, &klen);
        const char *val = rocksdb_iter_value(it, &vlen);
        json_t *m;

        if (klen != plen + 8 || memcmp(key, start, plen) != 0)
            break;
        m = json_loadb(val, vlen, 0, NULL);
        if (!json_is_object(m))
            rc = syncd_error_set_backend(err, SYNCD_EBACKEND, "rocksdb", 0,
                                         "%s of %s/%s is corrupt", what,
                                         doc->coll, doc->id);
        else if ((got == NULL && (got = json_array()) == NULL) ||
                 json_array_append(got, m) != 0 ||
                 (text != NULL &&
                  (syncd_buf_putc(text, text->len == 0 ? '[' : ',') != 0 ||
                   syncd_buf_append(text, val, vlen) != 0)))
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        json_decref(m);
    }
    if (rc == 0)
        rc = iter_status(it, err);
    if (rc == 0 && text != NULL && text->len > 0 &&
        syncd_buf_putc(text, ']') != 0)
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    rocksdb_iter_destroy(it);
    if (rc == 0)
        *arr = got;
    else
        json_decref(got);
    return rc;
}

/* Sets doc's history to the entries of k's history keys, read with ro,
 * with their text cached (history.c), as the record held it before it was
 * kept apart. */
static int read_history(rocks_t *r, const rocksdb_readoptions_t *ro,
                        const syncd_reckey_t *k, syncd_doc_t *doc,
                        syncd_error_t *err)
{
    syncd_buf_t text = {0};
    json_t *hist = NULL;
    int rc = read_versions(r, ro, HISTORY_PREFIX, k, &hist, &text, "history",
                           doc, err);

    if (rc == 0 && hist != NULL) {
        json_decref(doc->hist);
        doc->hist = hist;
        rc = syncd_history_keep_text(doc, text.data, text.len);
        if (rc == SYNCD_ENOMEM)
            rc = syncd_error_set(err, rc, "out of memory");
        else if (rc != 0)
            rc = syncd_error_set_backend(err, SYNCD_EBACKEND, "rocksdb", 0,
                                         "history of %s/%s is corrupt",
                                         doc->coll, doc->id);
    }
    syncd_buf_free(&text);
    return rc;
}

/* Returns the bytes of doc's history text, which a record kept apart
 * from it: what the tier charges for it beside the record's. */
static size_t hist_bytes(const syncd_doc_t *doc)
{
    size_t len = 0;

    return syncd_text_cached(doc->hist_text, doc->hist, &len) != NULL ? len : 0;
}

/* Reads the record of k (coll/id), its markers and its history from
 * RocksDB, as of one moment, into *out (caller frees), with the bytes of
 * the record and its history in *vlen. The markers are those of their
 * keys, whatever a record written before they had keys still holds.
 * SYNCD_ENOTFOUND when there is no record. */
static int load_record(rocks_t *r, const syncd_reckey_t *k, const char *coll,
                       const char *id, syncd_doc_t **out, size_t *vlen,
                       syncd_error_t *err)
{
    const rocksdb_snapshot_t *snap = rocksdb_create_snapshot(r->db);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    char marked[1 + SYNCD_RECORD_KEY_MAX];
    const char *keys[2] = {k->bytes, marked};
    size_t klens[2] = {k->len, 1 + k->len}, vlens[2] = {0, 0};
    char *vals[2] = {NULL, NULL}, *errs[2] = {NULL, NULL};
    int rc;

    *out = NULL;
    index_key(marked, MARKED_PREFIX, k);
    rocksdb_readoptions_set_snapshot(ro, snap);
    rocksdb_multi_get(r->db, ro, 2, keys, klens, vals, vlens, errs);
    if (errs[0] != NULL || errs[1] != NULL)
        rc = rocks_error(err, errs[0] != NULL ? errs[0] : errs[1], "get");
    else if (vals[0] == NULL)
        rc = SYNCD_ENOTFOUND;
    else
        rc = syncd_record_decode(out, coll, id, vals[0], vlens[0], 1, err);
    if (rc == 0) {
        json_decref((*out)->outbox);
        (*out)->outbox = NULL;
        if (vals[1] != NULL)
            rc = read_versions(r, ro, MARKER_PREFIX, k, &(*out)->outbox, NULL,
                               "outbox", *out, err);
    }
    if (rc == 0 && syncd_record_hist_apart(vals[0], vlens[0]))
        rc = read_history(r, ro, k, *out, err);
    if (rc != 0) {
        syncd_doc_free(*out);
        *out = NULL;
    }
    /* rocks_error() freed the one it reported. */
    if (errs[0] != NULL && errs[1] != NULL)
        rocksdb_free(errs[1]);
    *vlen = vlens[0] + (*out != NULL ? hist_bytes(*out) : 0);
    rocksdb_free(vals[0]);
    rocksdb_free(vals[1]);
    rocksdb_readoptions_destroy(ro);
    rocksdb_release_snapshot(r->db, snap);
    return rc;
}

/* Reads the record of coll/id into *out (a copy, the body shared with the
 * tier; caller frees), from the tier or else from RocksDB, then keeping it
 * in the tier when no commit of the stripe overlapped the read. A read
 * (is_read set, as opposed to a writer's version check) counts a tier hit
 * or miss. SYNCD_ENOTFOUND when there is no record. */
static int read_doc(rocks_t *r, stripe_t *s, const syncd_reckey_t *k,
                    const char *coll, const char *id, syncd_doc_t **out,
                    int is_read, syncd_error_t *err)
{
    syncd_doc_t *loaded = NULL;
    size_t vlen = 0;
    uint64_t gen;
    int rc;

    *out = NULL;
    pthread_mutex_lock(&s->lock);
    gen = s->gen;
    pthread_mutex_unlock(&s->lock);
    rc = syncd_tier_get(r->tier, k, out);
    if (rc == SYNCD_ENOMEM)
        return syncd_error_set(err, rc, "out of memory");
    if (is_read)
        syncd_tier_count(r->tier, rc == 0 ? SYNCD_TIER_HIT : SYNCD_TIER_MISS);
    if (rc == 0)
        return 0;
    rc = load_record(r, k, coll, id, &loaded, &vlen, err);
    if (rc != 0)
        return rc;
    *out = syncd_doc_dup(loaded);
    if (*out == NULL) {
        syncd_doc_free(loaded);
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }
    pthread_mutex_lock(&s->lock);
    if (s->gen == gen && s->writing == 0) {
        syncd_tier_put(r->tier, k, loaded, r->now_ms(r->now_data), vlen, 0,
                       NULL, 0, NULL);
        loaded = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    syncd_doc_free(loaded);
    return 0;
}

/* Sets *out to a copy of k's pending version (caller frees) when it has
 * one and the calling thread holds k's write lock: only a writer of k
 * builds on a version not yet durable, and whatever it answers from it
 * (a replay, an unchanged body) waits for that version's sync too, which
 * the lock's ticket then covers. Returns 1 when it did, 0 when not,
 * SYNCD_ENOMEM. */
static int pending_read(stripe_t *s, const syncd_reckey_t *k, syncd_doc_t **out,
                        syncd_error_t *err)
{
    syncd_lru_node_t *node, *lock = NULL;
    key_lock_t *kl = NULL;
    pending_t *p = NULL;

    pthread_mutex_lock(&s->lock);
    node = syncd_lru_find(&s->pending, k->bytes, k->len, k->hash);
    if (node != NULL)
        lock = syncd_lru_find(&s->locks, k->bytes, k->len, k->hash);
    kl = (key_lock_t *)lock;
    if (kl != NULL &&
        __atomic_load_n(&kl->holder, __ATOMIC_RELAXED) == this_thread()) {
        p = (pending_t *)node;
        *out = syncd_doc_dup(p->doc);
        if (kl->ticket < p->seq)
            kl->ticket = p->seq;
    }
    pthread_mutex_unlock(&s->lock);
    if (p != NULL && *out == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    return p != NULL;
}

/* Reads coll/id: the durable version, or the pending one for a caller
 * holding the key's write lock (the store's edit loop, inside `locked`). */
static int rocks_get(syncd_backend_t *b, syncd_doc_t **out, const char *coll,
                     const char *id, syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    syncd_reckey_t k;
    int rc;

    *out = NULL;
    rc = syncd_reckey_make(&k, coll, id, err);
    if (rc != 0)
        return rc;
    rc = pending_read(stripe_of(r, &k), &k, out, err);
    if (rc != 0)
        return rc > 0 ? 0 : rc;
    rc = read_doc(r, stripe_of(r, &k), &k, coll, id, out, 1, err);
    if (rc == SYNCD_ENOTFOUND)
        syncd_error_set(err, rc, "%s/%s not found", coll, id);
    return rc;
}

/* Marks a commit of s as begun: readers that overlap it keep what they
 * read out of the tier. */
static void write_begin(stripe_t *s)
{
    pthread_mutex_lock(&s->lock);
    s->writing++;
    s->gen++;
    pthread_mutex_unlock(&s->lock);
}

/* Ends a delete of k begun with write_begin(): drops k's tier entry. */
static void write_end(rocks_t *r, stripe_t *s, const syncd_reckey_t *k)
{
    pthread_mutex_lock(&s->lock);
    syncd_tier_drop(r->tier, k);
    s->writing--;
    s->gen++;
    pthread_mutex_unlock(&s->lock);
}

/* Encodes v into 8 little-endian bytes at p. */
static void put_le64(char *p, int64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (char)((uint64_t)v >> (8 * i));
}

/* Puts k's tombstone index key (mtime mt) into batch. */
static void tomb_put(rocksdb_writebatch_t *batch, const syncd_reckey_t *k,
                     int64_t mt)
{
    char key[1 + SYNCD_RECORD_KEY_MAX], val[8];

    index_key(key, TOMB_PREFIX, k);
    put_le64(val, mt);
    rocksdb_writebatch_put(batch, key, 1 + k->len, val, sizeof(val));
}

/* Frees ops's writes. */
static void version_ops_free(version_ops_t *ops)
{
    for (size_t i = 0; i < ops->n; i++)
        free(ops->ops[i].text);
    free(ops->ops);
}

/* Frees a pending commit whose version was not put in the tier. */
static void pending_free(pending_t *p)
{
    syncd_doc_free(p->doc);
    syncd_htree_free(p->tree);
    free(p->val);
    version_ops_free(&p->marks);
    version_ops_free(&p->hist);
    free(p);
}

static int64_t entry_version(const json_t *entry)
{
    return json_integer_value(json_object_get(entry, "v"));
}

/* Sets ops to the key writes that take a record from the markers or
 * history entries cur to next (arrays oldest first, by version; NULL:
 * none): a put of each of next's that cur lacks, a delete of each of
 * cur's that next lacks. A commit adds a marker and a history entry and
 * drops the oldest entries past the history's bounds; an ack drops
 * markers; what both hold is not written again. newest (newest_len
 * bytes), when not NULL, is the text of next's last entry. */
static int version_diff(version_ops_t *ops, const json_t *cur,
                        const json_t *next, const char *newest,
                        size_t newest_len, syncd_error_t *err)
{
    size_t last = json_array_size(next) - 1;
    size_t nc = json_array_size(cur), nn = json_array_size(next);
    size_t i = 0, j;

    /* The very entries both hold may lead (a commit's markers are its
     * predecessor's, shared, and one more) or trail (an ack's are the last
     * of its predecessor's): only the rest is compared, by version. */
    while (i < nc && i < nn &&
           json_array_get(cur, i) == json_array_get(next, i))
        i++;
    while (nc > i && nn > i &&
           json_array_get(cur, nc - 1) == json_array_get(next, nn - 1)) {
        nc--;
        nn--;
    }
    j = i;
    if (nc - i + nn - j == 0)
        return 0;
    ops->ops = calloc(nc - i + nn - j, sizeof(*ops->ops));
    if (ops->ops == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    while (i < nc || j < nn) {
        json_t *m = json_array_get(next, j), *c = json_array_get(cur, i);
        int64_t vc, vn;
        version_op_t *op = &ops->ops[ops->n];

        /* The history shifts by the entries it drops: the same objects. */
        if (i < nc && c == m) {
            i++;
            j++;
            continue;
        }
        vc = i < nc ? entry_version(c) : INT64_MAX;
        vn = j < nn ? entry_version(m) : INT64_MAX;
        if (vc == vn) {
            i++;
            j++;
            continue;
        }
        if (vc < vn) {
            op->v = vc;
            i++;
        } else {
            op->v = vn;
            op->text = j == last && newest != NULL
                           ? strndup(newest, newest_len)
                           : json_dumps(m, JSON_COMPACT);
            if (op->text == NULL)
                return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
            op->len = strlen(op->text);
            j++;
        }
        ops->n++;
    }
    return 0;
}

/* Sequences doc's record (its body's canonical JSON given or NULL, see
 * syncd_record_encode()) and the marker and history keys that differ from
 * those of cur (the version doc replaces; NULL: none), and with SEQ_INSERT
 * its collection's registry key, as the newest commit of key k (SEQ_ACK:
 * an outbox ack, which writes marker keys alone), whose write lock
 * the caller holds through kl: it becomes k's pending version and joins the
 * group queue, and kl's ticket names it for group_wait(). doc is borrowed
 * (copied). Fails with SYNCD_EBACKEND once a sync has failed. */
static int sequence(rocks_t *r, stripe_t *s, key_lock_t *kl,
                    const syncd_reckey_t *k, const syncd_doc_t *cur,
                    const syncd_doc_t *doc, const char *canon, size_t canon_len,
                    int flags, syncd_error_t *err)
{
    syncd_lru_node_t *old;
    size_t nc, nn;
    pending_t *p;
    int rc;

    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    p->doc = syncd_doc_dup(doc);
    if (p->doc == NULL) {
        pending_free(p);
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    }
    rc = 0;
    if (!(flags & SEQ_ACK)) {
        size_t nlen = 0;
        const char *newest = syncd_history_newest_text(doc, &nlen);

        rc = syncd_record_encode(&p->val, &p->vlen, doc, 1, canon, canon_len,
                                 err);
        if (rc == 0)
            rc = version_diff(&p->hist, cur != NULL ? cur->hist : NULL,
                              doc->hist, newest, nlen, err);
    }
    nc = json_array_size(cur != NULL ? cur->outbox : NULL);
    nn = json_array_size(doc->outbox);
    p->marked = nc == 0 && nn > 0 ? 1 : nc > 0 && nn == 0 ? -1 : 0;
    if (rc == 0)
        rc = version_diff(&p->marks, cur != NULL ? cur->outbox : NULL,
                          doc->outbox, NULL, 0, err);
    if (rc != 0) {
        pending_free(p);
        return rc;
    }
    p->s = s;
    p->k = *k;
    p->node.key = p->k.bytes;
    p->node.keylen = p->k.len;
    p->node.hash = p->k.hash;
    p->insert = (flags & SEQ_INSERT) != 0;
    p->ack = (flags & SEQ_ACK) != 0;
    p->was_tomb = (flags & SEQ_WAS_TOMB) != 0;
    pthread_mutex_lock(&r->gc_lock);
    if (r->failed) {
        rc = syncd_error_set_backend(err, SYNCD_EBACKEND, "rocksdb", 0,
                                     "store closed for writes: %s", r->failure);
        pthread_mutex_unlock(&r->gc_lock);
        pending_free(p);
        return rc;
    }
    /* In the pending table before the queue: a leader may take it at once. */
    p->seq = ++r->seq_last;
    kl->ticket = p->seq;
    pthread_mutex_lock(&s->lock);
    old = syncd_lru_find(&s->pending, k->bytes, k->len, k->hash);
    if (old != NULL) {
        pending_t *o = (pending_t *)old;

        syncd_lru_remove(&s->pending, old);
        o->in_table = 0;
        /* An ack keeps the same version: its body's tree goes on. */
        if (p->ack && o->tree != NULL && o->doc->version == doc->version) {
            p->tree = o->tree;
            p->tree_bytes = o->tree_bytes;
            o->tree = NULL;
            o->tree_bytes = 0;
        }
    }
    syncd_lru_insert(&s->pending, &p->node);
    p->in_table = 1;
    s->writing++;
    s->gen++;
    pthread_mutex_unlock(&s->lock);
    *r->queue_tail = p;
    r->queue_tail = &p->next;
    pthread_mutex_unlock(&r->gc_lock);
    return 0;
}

/* Puts ops's writes of k's keys under prefix into batch. */
static void version_ops_write(rocksdb_writebatch_t *batch, char prefix,
                              const syncd_reckey_t *k, const version_ops_t *ops)
{
    char key[VERSION_KEY_MAX];

    for (size_t i = 0; i < ops->n; i++) {
        size_t len = version_key(key, prefix, k, ops->ops[i].v);

        if (ops->ops[i].text != NULL)
            rocksdb_writebatch_put(batch, key, len, ops->ops[i].text,
                                   ops->ops[i].len);
        else
            rocksdb_writebatch_delete(batch, key, len);
    }
}

/* Writes the group (a queue, in sequence order) as one batch with r->write
 * (synced with sync_writes), or unsynced when it holds only outbox acks,
 * which no writer waits for (a later sync covers them, since the WAL is
 * written in order); ok 0 skips the write and discards the group.
 * Then puts each durable version in its key's tier, in order, and each
 * ack's markers in the entry of the version it acks (a failed write drops
 * the key's tier entry instead), ends the pending state of each commit and
 * frees the group. Returns 0, or SYNCD_EBACKEND with the
 * message in failure (size bytes). */
static int group_write(rocks_t *r, pending_t *group, int ok, char *failure,
                       size_t size)
{
    rocksdb_writebatch_t *batch;
    char ob[1 + SYNCD_RECORD_KEY_MAX];
    char *errptr = NULL;
    int rc = 0, acks_only = 1;

    if (ok) {
        batch = rocksdb_writebatch_create();
        for (pending_t *p = group; p != NULL; p = p->next) {
            acks_only &= p->ack;
            index_key(ob, MARKED_PREFIX, &p->k);
            if (p->marked > 0)
                rocksdb_writebatch_put(batch, ob, 1 + p->k.len, "", 0);
            else if (p->marked < 0)
                rocksdb_writebatch_delete(batch, ob, 1 + p->k.len);
            version_ops_write(batch, MARKER_PREFIX, &p->k, &p->marks);
            if (p->ack)
                continue;
            version_ops_write(batch, HISTORY_PREFIX, &p->k, &p->hist);
            rocksdb_writebatch_put(batch, p->k.bytes, p->k.len, p->val,
                                   p->vlen);
            if (p->doc->deleted) {
                tomb_put(batch, &p->k, p->doc->mtime_ms);
            } else if (p->was_tomb) {
                index_key(ob, TOMB_PREFIX, &p->k);
                rocksdb_writebatch_delete(batch, ob, 1 + p->k.len);
            }
            if (p->insert) {
                char reg[1 + 64];
                size_t clen = strlen(p->doc->coll);

                reg[0] = REGISTRY_PREFIX;
                memcpy(reg + 1, p->doc->coll, clen);
                rocksdb_writebatch_put(batch, reg, 1 + clen, "", 0);
            }
        }
        rocksdb_write(r->db, acks_only ? r->write_unsynced : r->write, batch,
                      &errptr);
        rocksdb_writebatch_destroy(batch);
        if (errptr != NULL) {
            snprintf(failure, size, "rocksdb group write: %s", errptr);
            rocksdb_free(errptr);
            rc = SYNCD_EBACKEND;
        }
    }
    while (group != NULL) {
        pending_t *p = group;
        stripe_t *s = p->s;
        syncd_doc_t *replaced = NULL;

        group = p->next;
        pthread_mutex_lock(&s->lock);
        if (p->in_table)
            syncd_lru_remove(&s->pending, &p->node);
        if (ok && rc == 0 && p->ack) {
            syncd_tier_set_outbox(r->tier, &p->k, p->doc, p->tree,
                                  p->tree_bytes);
            p->tree = NULL;
        } else if (ok && rc == 0) {
            syncd_tier_put(r->tier, &p->k, p->doc, r->now_ms(r->now_data),
                           p->vlen + hist_bytes(p->doc), 1, p->tree,
                           p->tree_bytes, &replaced);
            p->doc = NULL;
            p->tree = NULL;
        } else {
            syncd_tier_drop(r->tier, &p->k);
        }
        s->writing--;
        s->gen++;
        pthread_mutex_unlock(&s->lock);
        /* The version replaced is freed with no lock held: readers and
         * writers of the stripe's other keys need not wait for it. */
        syncd_doc_free(replaced);
        pending_free(p);
    }
    return rc;
}

/* Takes the whole group queue (gc_lock held); *last is the sequence
 * number of its last commit. */
static pending_t *queue_take(rocks_t *r, uint64_t *last)
{
    pending_t *group = r->queue;

    *last = r->seq_last;
    r->queue = NULL;
    r->queue_tail = &r->queue;
    return group;
}

/* A thread asleep in group_wait() while a leader writes. */
typedef struct gc_waiter {
    struct gc_waiter *next;
    sem_t wake;
    uint64_t seq;
    int done;    /* woken with its wait over: the leader counted it out */
    int durable; /* and then whether its commit was durable */
} gc_waiter_t;

/* Sleeps until the leader that is writing wakes this thread (called with
 * gc_lock held). Returns 1 when the wait is over, with gc_lock released,
 * the thread counted out of r->waiting and *durable set; 0 when it was
 * woken to lead the next group, with gc_lock held again. */
static int sleep_on_leader(rocks_t *r, uint64_t seq, int *durable)
{
    gc_waiter_t w = {.next = r->sleepers, .seq = seq};

    sem_init(&w.wake, 0, 0);
    r->sleepers = &w;
    pthread_mutex_unlock(&r->gc_lock);
    while (sem_wait(&w.wake) != 0)
        ;
    sem_destroy(&w.wake);
    *durable = w.durable;
    if (w.done)
        return 1;
    pthread_mutex_lock(&r->gc_lock);
    return 0;
}

/* Takes out of r->sleepers those that have something to do now that a
 * leader is done (gc_lock held), into a list for wake_all(): every one
 * when the store failed, else those whose commit is durable (counted out
 * of r->waiting here, their wait over) and, when commits are queued, the
 * one of the lowest sequence number left, to lead the next group. The
 * others sleep on: waking them would only put them to sleep again. */
static gc_waiter_t *leader_done(rocks_t *r)
{
    gc_waiter_t **pp = &r->sleepers, *next = NULL, **next_pp = NULL;
    gc_waiter_t *woken = NULL;

    while (*pp != NULL) {
        gc_waiter_t *w = *pp;

        if (r->failed || w->seq <= r->seq_durable) {
            *pp = w->next;
            w->done = 1;
            w->durable = w->seq <= r->seq_durable;
            r->waiting--;
            w->next = woken;
            woken = w;
            continue;
        }
        if (next == NULL || w->seq < next->seq) {
            next = w;
            next_pp = pp;
        }
        pp = &w->next;
    }
    if (next != NULL && r->queue != NULL) {
        *next_pp = next->next;
        next->next = woken;
        woken = next;
    }
    return woken;
}

/* Wakes each waiter of a leader_done() list (gc_lock not held, so that no
 * woken thread sleeps again on it at once). A waiter may leave as soon as
 * it is woken: its record is not touched after. */
static void wake_all(gc_waiter_t *woken)
{
    while (woken != NULL) {
        gc_waiter_t *w = woken;

        woken = w->next;
        sem_post(&w->wake);
    }
}

/* The outcome of a wait that is over: 0 when its commit is durable, else
 * the store's failure (set before any waiter learns of it, and never
 * changed after). */
static int wait_outcome(rocks_t *r, int durable, syncd_error_t *err)
{
    if (!durable)
        return syncd_error_set_backend(err, SYNCD_EBACKEND, "rocksdb", 0,
                                       "commit not durable: %s", r->failure);
    return 0;
}

/* Waits until commit seq (0: none) is durable, leading a group write
 * when no other thread is; a thread that finds commits queued and no
 * other thread in here (to write them) leads too, so that commits nobody
 * waits for (outbox acks) never stay queued. Fails with SYNCD_EBACKEND
 * when a sync failed before seq was durable; the failing leader discards
 * what is queued behind its group, since later commits may build on it. */
static int group_wait(rocks_t *r, uint64_t seq, syncd_error_t *err)
{
    char failure[sizeof(r->failure)];
    pending_t *group;
    uint64_t last;
    int rc, durable;

    pthread_mutex_lock(&r->gc_lock);
    r->waiting++;
    while (!r->failed &&
           (r->seq_durable < seq || (r->queue != NULL && r->waiting == 1))) {
        gc_waiter_t *woken;

        if (r->leading) {
            if (sleep_on_leader(r, seq, &durable))
                return wait_outcome(r, durable, err);
            continue;
        }
        r->leading = 1;
        group = queue_take(r, &last);
        pthread_mutex_unlock(&r->gc_lock);
        rc = group_write(r, group, 1, failure, sizeof(failure));
        pthread_mutex_lock(&r->gc_lock);
        if (rc == 0) {
            r->seq_durable = last;
        } else {
            r->failed = 1;
            memcpy(r->failure, failure, sizeof(failure));
            group = queue_take(r, &last);
            group_write(r, group, 0, NULL, 0);
        }
        r->leading = 0;
        woken = leader_done(r);
        pthread_mutex_unlock(&r->gc_lock);
        wake_all(woken);
        pthread_mutex_lock(&r->gc_lock);
    }
    r->waiting--;
    durable = r->seq_durable >= seq;
    pthread_mutex_unlock(&r->gc_lock);
    return wait_outcome(r, durable, err);
}

/* A key held for writing: its write lock taken and its current record
 * read. */
typedef struct held {
    syncd_reckey_t k;
    stripe_t *s;
    key_lock_t *kl;
    syncd_doc_t *cur; /* the current record; NULL when there is none */
} held_t;

/* Takes coll/id's write lock and reads its record into h->cur (NULL when
 * there is none): its pending version when it has one, else the durable
 * one; on failure nothing is held. Released by release(). */
static int hold(rocks_t *r, held_t *h, const char *coll, const char *id,
                syncd_error_t *err)
{
    int rc;

    h->cur = NULL;
    rc = syncd_reckey_make(&h->k, coll, id, err);
    if (rc != 0)
        return rc;
    h->s = stripe_of(r, &h->k);
    rc = key_lock(h->s, &h->k, &h->kl, err);
    if (rc != 0)
        return rc;
    rc = pending_read(h->s, &h->k, &h->cur, err);
    if (rc > 0)
        return 0;
    if (rc == 0)
        rc = read_doc(r, h->s, &h->k, coll, id, &h->cur, 0, err);
    if (rc == SYNCD_ENOTFOUND)
        return 0;
    if (rc != 0)
        key_unlock(h->s, h->kl);
    return rc;
}

/* Releases a key_lock() of s; when this ends the outermost hold, waits
 * until what was sequenced under it is durable. Returns rc, or when rc is
 * 0 the wait's error. */
static int unlock_durable(rocks_t *r, stripe_t *s, key_lock_t *kl, int rc,
                          syncd_error_t *err)
{
    uint64_t ticket = key_unlock(s, kl);
    int synced;

    if (ticket == 0)
        return rc;
    synced = group_wait(r, ticket, rc == 0 ? err : NULL);
    return rc == 0 ? synced : rc;
}

/* Releases a hold() as unlock_durable() says and frees the record read. */
static int release(rocks_t *r, held_t *h, int rc, syncd_error_t *err)
{
    syncd_doc_free(h->cur);
    h->cur = NULL;
    return unlock_durable(r, h->s, h->kl, rc, err);
}

static int rocks_cas_canonical(syncd_backend_t *b, const syncd_doc_t *doc,
                               const char *canon, size_t canon_len,
                               int64_t expected, syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    held_t h;
    int rc;

    rc = hold(r, &h, doc->coll, doc->id, err);
    if (rc != 0)
        return rc;
    if ((h.cur != NULL ? h.cur->version : 0) != expected) {
        rc = syncd_error_set(err, SYNCD_ECONFLICT,
                             "%s/%s is at version %lld, not %lld", doc->coll,
                             doc->id, (long long)(h.cur ? h.cur->version : 0),
                             (long long)expected);
        goto unlock;
    }
    rc = sequence(r, h.s, h.kl, &h.k, h.cur, doc, canon, canon_len,
                  h.cur == NULL    ? SEQ_INSERT
                  : h.cur->deleted ? SEQ_WAS_TOMB
                                   : 0,
                  err);
unlock:
    return release(r, &h, rc, err);
}

static int rocks_cas(syncd_backend_t *b, const syncd_doc_t *doc,
                     int64_t expected, syncd_error_t *err)
{
    return rocks_cas_canonical(b, doc, NULL, 0, expected, err);
}

static int rocks_locked(syncd_backend_t *b, const char *coll, const char *id,
                        int (*fn)(void *arg, syncd_error_t *err), void *arg,
                        syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    key_lock_t *kl = NULL;
    syncd_reckey_t k;
    stripe_t *s;
    int rc;

    rc = syncd_reckey_make(&k, coll, id, err);
    if (rc != 0)
        return rc;
    s = stripe_of(r, &k);
    rc = key_lock(s, &k, &kl, err);
    if (rc != 0)
        return rc;
    rc = fn(arg, err);
    return unlock_durable(r, s, kl, rc, err);
}

/* Returns k's newest pending commit, or NULL when it has none (s
 * locked). */
static pending_t *pending_of(stripe_t *s, const syncd_reckey_t *k)
{
    return (pending_t *)syncd_lru_find(&s->pending, k->bytes, k->len, k->hash);
}

/* Takes the hash tree of coll/id at version (hash): the newest pending
 * commit's when the key has one, else the tier entry's. */
static int rocks_take_tree(syncd_backend_t *b, const char *coll, const char *id,
                           int64_t version, const char *hash,
                           syncd_htree_t **tree, size_t *bytes)
{
    rocks_t *r = (rocks_t *)b;
    syncd_reckey_t k;
    stripe_t *s;
    pending_t *p;
    char root[SYNCD_HASH_HEX_LEN + 1];

    *tree = NULL;
    *bytes = 0;
    if (syncd_reckey_make(&k, coll, id, NULL) != 0)
        return 0;
    s = stripe_of(r, &k);
    pthread_mutex_lock(&s->lock);
    p = pending_of(s, &k);
    if (p == NULL) {
        syncd_tier_take_tree(r->tier, &k, version, hash, tree, bytes);
    } else if (p->tree != NULL && !p->doc->deleted &&
               p->doc->version == version && strcmp(p->doc->hash, hash) == 0) {
        syncd_htree_root(p->tree, root);
        if (strcmp(root, hash) == 0) {
            *tree = p->tree;
            *bytes = p->tree_bytes;
            p->tree = NULL;
            p->tree_bytes = 0;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return *tree != NULL;
}

/* Keeps tree with coll/id's commit at version: the newest pending one when
 * the key has one, else the tier entry. */
static void rocks_keep_tree(syncd_backend_t *b, const char *coll,
                            const char *id, int64_t version,
                            syncd_htree_t *tree, size_t bytes)
{
    rocks_t *r = (rocks_t *)b;
    char root[SYNCD_HASH_HEX_LEN + 1];
    syncd_reckey_t k;
    stripe_t *s;
    pending_t *p;

    if (syncd_reckey_make(&k, coll, id, NULL) != 0) {
        syncd_htree_free(tree);
        return;
    }
    s = stripe_of(r, &k);
    pthread_mutex_lock(&s->lock);
    p = pending_of(s, &k);
    if (p == NULL) {
        syncd_tier_keep_tree(r->tier, &k, version, tree, bytes);
        tree = NULL;
    } else if (p->tree == NULL && !p->doc->deleted &&
               p->doc->version == version) {
        syncd_htree_root(tree, root);
        if (strcmp(root, p->doc->hash) == 0) {
            p->tree = tree;
            p->tree_bytes = bytes;
            tree = NULL;
        }
    }
    pthread_mutex_unlock(&s->lock);
    syncd_htree_free(tree);
}

void syncd_rocks_memory(rocksdb_t *db, syncd_store_stats_t *out)
{
    uint64_t v;

    if (rocksdb_property_int(db, "rocksdb.cur-size-all-mem-tables", &v) == 0)
        out->rocks_memtable_bytes += v;
    if (rocksdb_property_int(db, "rocksdb.estimate-table-readers-mem", &v) == 0)
        out->rocks_table_reader_bytes += v;
    if (rocksdb_property_int(db, "rocksdb.block-cache-usage", &v) == 0)
        out->rocks_block_cache_bytes += v;
}

/* The tier's statistics and RocksDB's memory; takes no lock, so it never
 * waits for a reader or a writer. */
static void rocks_tier_stats(syncd_backend_t *b, syncd_store_stats_t *out)
{
    syncd_tier_stats(((rocks_t *)b)->tier, out);
    syncd_rocks_memory(((rocks_t *)b)->db, out);
}

static syncd_tier_t *rocks_tier(syncd_backend_t *b)
{
    return ((rocks_t *)b)->tier;
}

/* Appends one listing entry for doc (header only) to arr. */
static int append_entry(json_t *arr, const syncd_doc_t *doc)
{
    json_t *e = json_pack("{s:s, s:I, s:s}", "id", doc->id, "v",
                          (json_int_t)doc->version, "h", doc->hash);

    if (e == NULL)
        return SYNCD_ENOMEM;
    if (doc->deleted &&
        (json_object_set_new(e, "del", json_true()) != 0 ||
         json_object_set_new(e, "mt", json_integer(doc->mtime_ms)) != 0)) {
        json_decref(e);
        return SYNCD_ENOMEM;
    }
    return json_array_append_new(arr, e) == 0 ? 0 : SYNCD_ENOMEM;
}

/* Appends one export entry for the live doc (header and body) to arr. */
static int append_body(json_t *arr, const syncd_doc_t *doc)
{
    json_t *e =
        json_pack("{s:s, s:I, s:s, s:O}", "id", doc->id, "v",
                  (json_int_t)doc->version, "h", doc->hash, "data", doc->body);

    if (e == NULL)
        return SYNCD_ENOMEM;
    return json_array_append_new(arr, e) == 0 ? 0 : SYNCD_ENOMEM;
}

/* Scans coll's records in id order into a new array *out, as rocks_list
 * says; with_bodies lists live documents only, with their bodies, read
 * from RocksDB itself (the in-memory tier is neither read nor filled). */
static int scan(rocks_t *r, json_t **out, const char *coll, const char *prefix,
                const char *after, size_t limit, int with_tombstones,
                int with_bodies, syncd_error_t *err)
{
    const char *start = "";
    size_t plen = prefix != NULL ? strlen(prefix) : 0;
    rocksdb_iterator_t *it = NULL;
    json_t *arr = json_array();
    syncd_reckey_t k;
    int rc;

    *out = NULL;
    if (arr == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    if (after != NULL && (prefix == NULL || strcmp(after, prefix) > 0))
        start = after;
    else if (prefix != NULL)
        start = prefix;
    rc = syncd_reckey_make(&k, coll, start, err);
    if (rc != 0)
        goto done;
    it = iter_at(r, k.bytes, k.len);
    for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen, vlen, clen = strlen(coll);
        const char *key = rocksdb_iter_key(it, &klen);
        const char *val = rocksdb_iter_value(it, &vlen);
        char id[SYNCD_MAX_ID_BYTES + 1];
        syncd_doc_t *doc = NULL;
        size_t ilen;

        if (klen <= clen || memcmp(key, coll, clen + 1) != 0)
            break;
        ilen = klen - clen - 1;
        if (ilen > SYNCD_MAX_ID_BYTES)
            continue;
        memcpy(id, key + clen + 1, ilen);
        id[ilen] = '\0';
        if (prefix != NULL && strncmp(id, prefix, plen) != 0)
            break;
        if (after != NULL && strcmp(id, after) <= 0)
            continue;
        rc = syncd_record_decode(&doc, coll, id, val, vlen, with_bodies, err);
        if (rc != 0)
            goto done;
        if (with_bodies && !doc->deleted)
            rc = append_body(arr, doc);
        else if (!with_bodies && (!doc->deleted || with_tombstones))
            rc = append_entry(arr, doc);
        syncd_doc_free(doc);
        if (rc != 0) {
            syncd_error_set(err, rc, "out of memory");
            goto done;
        }
        if (limit > 0 && json_array_size(arr) >= limit)
            break;
    }
    rc = iter_status(it, err);
done:
    if (it != NULL)
        rocksdb_iter_destroy(it);
    if (rc == 0)
        *out = arr;
    else
        json_decref(arr);
    return rc;
}

static int rocks_list(syncd_backend_t *b, json_t **out, const char *coll,
                      const char *prefix, const char *after, size_t limit,
                      int with_tombstones, syncd_error_t *err)
{
    return scan((rocks_t *)b, out, coll, prefix, after, limit, with_tombstones,
                0, err);
}

static int rocks_export_page(syncd_backend_t *b, json_t **out, const char *coll,
                             const char *after, size_t limit,
                             syncd_error_t *err)
{
    return scan((rocks_t *)b, out, coll, NULL, after, limit, 0, 1, err);
}

static int rocks_checkpoint(syncd_backend_t *b, const char *dir,
                            syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    rocksdb_checkpoint_t *cp;
    char *errptr = NULL;

    cp = rocksdb_checkpoint_object_create(r->db, &errptr);
    if (errptr != NULL)
        return rocks_error(err, errptr, "checkpoint");
    rocksdb_checkpoint_create(cp, dir, 0, &errptr);
    rocksdb_checkpoint_object_destroy(cp);
    if (errptr != NULL)
        return rocks_error(err, errptr, "checkpoint");
    return 0;
}

static int rocks_versions(syncd_backend_t *b, json_t **out, const char *coll,
                          const json_t *ids, syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    json_t *map = json_object(), *id;
    size_t i;
    int rc = 0;

    *out = NULL;
    if (map == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    json_array_foreach (ids, i, id) {
        const char *key = json_string_value(id);
        syncd_doc_t *doc = NULL;
        syncd_reckey_t k;

        rc = syncd_reckey_make(&k, coll, key, err);
        if (rc != 0)
            break;
        rc = read_doc(r, stripe_of(r, &k), &k, coll, key, &doc, 0, err);
        if (rc == 0 &&
            json_object_set_new(map, key,
                                json_pack("{s:I, s:s, s:b}", "v",
                                          (json_int_t)doc->version, "h",
                                          doc->hash, "del", doc->deleted)) != 0)
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        syncd_doc_free(doc);
        if (rc == SYNCD_ENOTFOUND)
            rc = 0;
        if (rc != 0)
            break;
    }
    if (rc != 0) {
        json_decref(map);
        return rc;
    }
    *out = map;
    return 0;
}

static int rocks_collections(syncd_backend_t *b, json_t **out,
                             syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    char start = REGISTRY_PREFIX;
    rocksdb_iterator_t *it = iter_at(r, &start, 1);
    json_t *arr = json_array();
    int rc = 0;

    *out = NULL;
    for (; arr != NULL && rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen;
        const char *key = rocksdb_iter_key(it, &klen);

        if (klen < 2 || key[0] != REGISTRY_PREFIX)
            break;
        if (json_array_append_new(arr, json_stringn(key + 1, klen - 1))) {
            json_decref(arr);
            arr = NULL;
        }
    }
    if (arr == NULL)
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    else
        rc = iter_status(it, err);
    rocksdb_iter_destroy(it);
    if (rc == 0)
        *out = arr;
    else
        json_decref(arr);
    return rc;
}

/* Deletes coll/id, its history and its tombstone index key, unsynced, when
 * it is still a tombstone older than before_ms with no pending-publish
 * marker; *removed
 * is its version when it was, else 0. An index key whose record is no
 * tombstone (none should be) is deleted too. The caller syncs the WAL
 * before it reports the purge: until then a crash may bring the tombstone
 * back, which a later purge removes again, and any synced commit after it
 * (a new document of the same id) makes the delete durable first, as the
 * WAL is written in order. */
static int purge_one(rocks_t *r, const char *coll, const char *id,
                     int64_t before_ms, int64_t *removed, syncd_error_t *err)
{
    rocksdb_writebatch_t *batch = rocksdb_writebatch_create();
    char key[1 + SYNCD_RECORD_KEY_MAX];
    char *errptr = NULL;
    version_ops_t hist = {0};
    held_t h;
    int rc;

    *removed = 0;
    rc = hold(r, &h, coll, id, err);
    if (rc != 0) {
        rocksdb_writebatch_destroy(batch);
        return rc;
    }
    index_key(key, TOMB_PREFIX, &h.k);
    if (h.cur == NULL || !h.cur->deleted) {
        rocksdb_delete(r->db, r->write_unsynced, key, 1 + h.k.len, &errptr);
    } else if (h.cur->mtime_ms < before_ms &&
               json_array_size(h.cur->outbox) == 0) {
        rc = version_diff(&hist, h.cur->hist, NULL, NULL, 0, err);
        if (rc != 0)
            goto done;
        version_ops_write(batch, HISTORY_PREFIX, &h.k, &hist);
        rocksdb_writebatch_delete(batch, h.k.bytes, h.k.len);
        rocksdb_writebatch_delete(batch, key, 1 + h.k.len);
        write_begin(h.s);
        rocksdb_write(r->db, r->write_unsynced, batch, &errptr);
        write_end(r, h.s, &h.k);
        if (errptr == NULL)
            *removed = h.cur->version;
    }
    if (errptr != NULL)
        rc = rocks_error(err, errptr, "delete");
done:
    version_ops_free(&hist);
    rocksdb_writebatch_destroy(batch);
    return release(r, &h, rc, err);
}

/* Reads the ids of coll's tombstones older than before_ms from the
 * tombstone index, from the first id after *after (NULL: from the first),
 * into ids until it holds PURGE_PAGE of them; *after becomes the last id
 * read (caller frees), or NULL when the index has no more of coll. */
static int tomb_page(rocks_t *r, const char *coll, int64_t before_ms,
                     char **after, json_t *ids, syncd_error_t *err)
{
    size_t clen = strlen(coll);
    char start[1 + SYNCD_RECORD_KEY_MAX], id[SYNCD_MAX_ID_BYTES + 1];
    rocksdb_iterator_t *it;
    syncd_reckey_t k;
    int rc, more = 0;

    rc = syncd_reckey_make(&k, coll, *after != NULL ? *after : "", err);
    if (rc != 0)
        return rc;
    index_key(start, TOMB_PREFIX, &k);
    it = iter_at(r, start, 1 + k.len);
    for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen, vlen, ilen;
        const char *key = rocksdb_iter_key(it, &klen);
        const unsigned char *v =
            (const unsigned char *)rocksdb_iter_value(it, &vlen);
        int64_t mt = 0;

        if (klen <= 1 + clen || key[0] != TOMB_PREFIX ||
            memcmp(key + 1, coll, clen + 1) != 0)
            break;
        ilen = klen - 1 - clen - 1;
        if (ilen > SYNCD_MAX_ID_BYTES ||
            (klen == 1 + k.len && memcmp(key, start, klen) == 0))
            continue;
        if (json_array_size(ids) == PURGE_PAGE) {
            more = 1;
            break;
        }
        memcpy(id, key + 1 + clen + 1, ilen);
        id[ilen] = '\0';
        free(*after);
        *after = strdup(id);
        for (size_t i = 0; i < 8 && vlen == 8; i++)
            mt |= (int64_t)((uint64_t)v[i] << (8 * i));
        if (*after == NULL ||
            (mt < before_ms &&
             json_array_append_new(ids, json_string(id)) != 0)) {
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
            break;
        }
    }
    if (rc == 0)
        rc = iter_status(it, err);
    rocksdb_iter_destroy(it);
    if (!more || rc != 0) {
        free(*after);
        *after = NULL;
    }
    return rc;
}

/* Syncs the WAL (with sync_writes) so that the purges of page, the ids
 * removed and their versions, are durable, then adds them to gone (when
 * not NULL) and counts them in *n. */
static int purge_report(rocks_t *r, json_t *page, json_t *gone, size_t *n,
                        syncd_error_t *err)
{
    char *errptr = NULL;

    if (json_object_size(page) == 0)
        return 0;
    if (r->sync_writes)
        rocksdb_flush_wal(r->db, 1, &errptr);
    if (errptr != NULL)
        return rocks_error(err, errptr, "sync");
    *n += json_object_size(page);
    if (gone != NULL && json_object_update(gone, page) != 0)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    return 0;
}

/* Purges coll's tombstones older than before_ms, as the tombstone index
 * lists them, a page at a time, with one WAL sync per page: its time is
 * proportional to the tombstones, not to the collection. */
static int rocks_purge(syncd_backend_t *b, const char *coll, int64_t before_ms,
                       size_t limit, size_t *purged, json_t *gone,
                       syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    char *after = NULL;
    size_t i, n = 0;
    json_t *ids, *page, *e;
    int rc = 0, reported;

    do {
        ids = json_array();
        page = json_object();
        rc = ids != NULL && page != NULL
                 ? tomb_page(r, coll, before_ms, &after, ids, err)
                 : syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        json_array_foreach (ids, i, e) {
            const char *id = json_string_value(e);
            int64_t removed = 0;

            if (rc != 0 || (limit > 0 && n + json_object_size(page) == limit))
                break;
            rc = purge_one(r, coll, id, before_ms, &removed, err);
            if (rc == 0 && removed != 0 &&
                json_object_set_new(page, id, json_integer(removed)) != 0)
                rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        }
        /* What was removed before a failure is reported too. */
        reported = purge_report(r, page, gone, &n, rc == 0 ? err : NULL);
        if (rc == 0)
            rc = reported;
        json_decref(page);
        json_decref(ids);
    } while (rc == 0 && after != NULL && (limit == 0 || n < limit));
    free(after);
    if (purged != NULL)
        *purged = n;
    return rc;
}

/* The pending table is empty once no call is in flight. */
static void free_pending(syncd_lru_node_t *node)
{
    pending_free((pending_t *)node);
}

/* The key-lock table is empty once no call is in flight. */
static void free_key_lock(syncd_lru_node_t *node)
{
    key_lock_t *kl = (key_lock_t *)node;

    pthread_mutex_destroy(&kl->lock);
    free(kl);
}

static int rocks_outbox_ack(syncd_backend_t *b, const char *coll,
                            const char *id, int64_t version, syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    syncd_doc_t *copy = NULL;
    json_t *left = NULL;
    held_t h;
    int rc;

    rc = hold(r, &h, coll, id, err);
    if (rc != 0)
        return rc;
    if (h.cur == NULL)
        goto unlock;
    rc = syncd_outbox_after(&left, h.cur->outbox, version);
    if (rc < 0)
        rc = syncd_error_set(err, rc, "out of memory");
    if (rc <= 0)
        goto unlock;
    copy = syncd_doc_dup(h.cur);
    if (copy == NULL) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto unlock;
    }
    json_decref(copy->outbox);
    copy->outbox = left;
    left = NULL;
    /* Only the markers change: the keys of those dropped are deleted. */
    rc = sequence(r, h.s, h.kl, &h.k, h.cur, copy, NULL, 0, SEQ_ACK, err);
unlock:
    /* An ack waits for no sync: not its own, since one lost to a crash only
     * means a republish, which the bus drops as a duplicate; nor that of a
     * pending version it was built on (hold() sets the ticket to it), since
     * a failed sync discards every commit queued behind it, the ack too.
     * It rides with the next group, or leads one, unsynced, when no other
     * writer is about. */
    if (h.kl->depth == 1)
        h.kl->ticket = 0;
    syncd_doc_free(copy);
    json_decref(left);
    rc = release(r, &h, rc, err);
    group_wait(r, 0, NULL);
    return rc;
}

/* Appends {"id","v","ob"} of coll/id to arr when its record still has
 * markers (the index may name a record acked since it was read). */
static int outbox_entry(rocks_t *r, json_t *arr, const char *coll,
                        const char *id, syncd_error_t *err)
{
    syncd_doc_t *doc = NULL;
    syncd_reckey_t k;
    int rc = syncd_reckey_make(&k, coll, id, err);

    if (rc != 0)
        return rc;
    rc = read_doc(r, stripe_of(r, &k), &k, coll, id, &doc, 0, err);
    if (rc == SYNCD_ENOTFOUND)
        rc = 0;
    else if (rc == 0 && json_array_size(doc->outbox) > 0 &&
             json_array_append_new(arr, json_pack("{s:s, s:I, s:O}", "id", id,
                                                  "v", (json_int_t)doc->version,
                                                  "ob", doc->outbox)) != 0)
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    syncd_doc_free(doc);
    return rc;
}

static int rocks_outbox_list(syncd_backend_t *b, json_t **out, const char *coll,
                             const char *after, size_t limit,
                             syncd_error_t *err)
{
    rocks_t *r = (rocks_t *)b;
    size_t clen = strlen(coll);
    char start[1 + SYNCD_RECORD_KEY_MAX];
    rocksdb_iterator_t *it = NULL;
    json_t *arr = json_array();
    syncd_reckey_t k;
    int rc;

    *out = NULL;
    if (arr == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    rc = syncd_reckey_make(&k, coll, after != NULL ? after : "", err);
    if (rc != 0)
        goto done;
    index_key(start, MARKED_PREFIX, &k);
    it = iter_at(r, start, 1 + k.len);
    for (; rocksdb_iter_valid(it) && json_array_size(arr) < limit;
         rocksdb_iter_next(it)) {
        size_t klen, ilen;
        const char *key = rocksdb_iter_key(it, &klen);
        char id[SYNCD_MAX_ID_BYTES + 1];

        if (klen <= 1 + clen || key[0] != MARKED_PREFIX ||
            memcmp(key + 1, coll, clen + 1) != 0)
            break;
        ilen = klen - 1 - clen - 1;
        if (ilen > SYNCD_MAX_ID_BYTES)
            continue;
        memcpy(id, key + 1 + clen + 1, ilen);
        id[ilen] = '\0';
        if (after != NULL && strcmp(id, after) <= 0)
            continue;
        rc = outbox_entry(r, arr, coll, id, err);
        if (rc != 0)
            goto done;
    }
    rc = iter_status(it, err);
done:
    if (it != NULL)
        rocksdb_iter_destroy(it);
    if (rc == 0)
        *out = arr;
    else
        json_decref(arr);
    return rc;
}

static void rocks_close(syncd_backend_t *b)
{
    rocks_t *r = (rocks_t *)b;

    if (r == NULL)
        return;
    if (r->db != NULL)
        group_wait(r, r->seq_last, NULL);
    for (int i = 0; i < r->nstripes_ready; i++) {
        syncd_lru_destroy(&r->stripes[i].locks, free_key_lock);
        syncd_lru_destroy(&r->stripes[i].pending, free_pending);
        pthread_mutex_destroy(&r->stripes[i].lock);
    }
    syncd_tier_free(r->tier);
    pthread_mutex_destroy(&r->gc_lock);
    if (r->db != NULL)
        rocksdb_close(r->db);
    if (r->write != NULL)
        rocksdb_writeoptions_destroy(r->write);
    if (r->write_unsynced != NULL)
        rocksdb_writeoptions_destroy(r->write_unsynced);
    if (r->read != NULL)
        rocksdb_readoptions_destroy(r->read);
    if (r->options != NULL)
        rocksdb_options_destroy(r->options);
    free(r);
}

static const syncd_backend_ops_t rocks_ops = {
    .kind = "rocksdb",
    .get = rocks_get,
    .cas = rocks_cas,
    .list = rocks_list,
    .collections = rocks_collections,
    .purge = rocks_purge,
    .close = rocks_close,
    .versions = rocks_versions,
    .outbox_ack = rocks_outbox_ack,
    .outbox_list = rocks_outbox_list,
    .cas_canonical = rocks_cas_canonical,
    .locked = rocks_locked,
    .take_tree = rocks_take_tree,
    .keep_tree = rocks_keep_tree,
    .tier_stats = rocks_tier_stats,
    .tier = rocks_tier,
    .export_page = rocks_export_page,
    .checkpoint = rocks_checkpoint,
};

/* Splits a record key (klen bytes) into coll and id (buffers of 65 and
 * SYNCD_MAX_ID_BYTES + 1 bytes); 0 when it is no record key. */
static int record_key_split(const char *key, size_t klen, char *coll, char *id)
{
    size_t clen = strnlen(key, klen);

    if (clen == klen || clen >= 65 || klen - clen - 1 > SYNCD_MAX_ID_BYTES)
        return 0;
    memcpy(coll, key, clen);
    coll[clen] = '\0';
    memcpy(id, key + clen + 1, klen - clen - 1);
    id[klen - clen - 1] = '\0';
    return 1;
}

/* What a pass over every record does with one: puts what it writes into
 * batch. */
typedef int (*record_fn)(rocksdb_writebatch_t *batch, const syncd_reckey_t *k,
                         const char *coll, const char *id, const char *val,
                         size_t vlen, syncd_error_t *err);

/* Runs fn on every record of a store in which the key complete is not yet
 * there, writing what it puts a batch at a time (a record's writes in one
 * batch), then complete, synced. A pass cut short by a crash runs again
 * at the next open, which fn's writes must allow. */
static int records_pass(rocks_t *r, const char *complete, record_fn fn,
                        syncd_error_t *err)
{
    rocksdb_writebatch_t *batch;
    rocksdb_iterator_t *it;
    char *errptr = NULL, *val;
    size_t vlen;
    int rc = 0;

    val =
        rocksdb_get(r->db, r->read, complete, strlen(complete), &vlen, &errptr);
    if (errptr != NULL)
        return rocks_error(err, errptr, "read");
    if (val != NULL) {
        rocksdb_free(val);
        return 0;
    }
    batch = rocksdb_writebatch_create();
    /* Record keys start with a collection name's first byte, [a-z0-9]. */
    it = iter_at(r, "0", 1);
    for (; rc == 0 && rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen;
        const char *key = rocksdb_iter_key(it, &klen);
        const char *v = rocksdb_iter_value(it, &vlen);
        char coll[65], id[SYNCD_MAX_ID_BYTES + 1];
        syncd_reckey_t k;

        if (!record_key_split(key, klen, coll, id))
            continue;
        memcpy(k.bytes, key, klen);
        k.len = klen;
        rc = fn(batch, &k, coll, id, v, vlen, err);
        if (rc == 0 && rocksdb_writebatch_count(batch) >= PURGE_PAGE) {
            rocksdb_write(r->db, r->write_unsynced, batch, &errptr);
            rocksdb_writebatch_clear(batch);
            if (errptr != NULL)
                rc = rocks_error(err, errptr, "write");
        }
    }
    if (rc == 0)
        rc = iter_status(it, err);
    rocksdb_iter_destroy(it);
    if (rc == 0) {
        rocksdb_writebatch_put(batch, complete, strlen(complete), "", 0);
        rocksdb_write(r->db, r->write, batch, &errptr);
        if (errptr != NULL)
            rc = rocks_error(err, errptr, "write");
    }
    rocksdb_writebatch_destroy(batch);
    return rc;
}

/* records_pass() of the tombstone index build: indexes k when it is a
 * tombstone. A record that does not decode is the start check's to
 * report. */
static int tomb_index_record(rocksdb_writebatch_t *batch,
                             const syncd_reckey_t *k, const char *coll,
                             const char *id, const char *val, size_t vlen,
                             syncd_error_t *err)
{
    syncd_doc_t *doc = NULL;

    (void)err;
    if (syncd_record_decode(&doc, coll, id, val, vlen, 0, NULL) == 0 &&
        doc->deleted)
        tomb_put(batch, k, doc->mtime_ms);
    syncd_doc_free(doc);
    return 0;
}

/* records_pass() of the history's move out of the records of a store
 * written before: when k holds history entries, puts a key for each and
 * the record without them. A record that does not decode is left as it
 * is, for its reads and the start check to report. */
static int history_record(rocksdb_writebatch_t *batch, const syncd_reckey_t *k,
                          const char *coll, const char *id, const char *val,
                          size_t vlen, syncd_error_t *err)
{
    version_ops_t ops = {0};
    json_t *hist = NULL;
    char *rec = NULL;
    size_t rlen = 0;
    int rc = syncd_record_take_hist(&rec, &rlen, &hist, coll, id, val, vlen);

    if (rc == 0)
        return 0;
    if (rc > 0)
        rc = version_diff(&ops, NULL, hist, NULL, 0, err);
    else
        rc = syncd_error_set(err, rc, "out of memory");
    if (rc == 0) {
        version_ops_write(batch, HISTORY_PREFIX, k, &ops);
        rocksdb_writebatch_put(batch, k->bytes, k->len, rec, rlen);
    }
    version_ops_free(&ops);
    json_decref(hist);
    free(rec);
    return rc;
}

/* Gives each marker of a store written before markers had keys of their
 * own its key: LEGACY_OUTBOX_PREFIX + a record's key held the record's
 * markers as one array, or, with an empty value, left them in the
 * record's meta (its "ob"; a record's "ob" without that key was acked).
 * The keys are put and the old ones deleted in one synced batch. A value
 * that is no array becomes the marker of version 0 as it is, so that
 * reading its record fails as it did. */
static int markers_upgrade(rocks_t *r, syncd_error_t *err)
{
    rocksdb_writebatch_t *batch = rocksdb_writebatch_create();
    char start = LEGACY_OUTBOX_PREFIX, *errptr = NULL;
    rocksdb_iterator_t *it = iter_at(r, &start, 1);
    int rc = 0;

    for (; rc == 0 && rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen, vlen, rlen;
        const char *key = rocksdb_iter_key(it, &klen);
        const char *val = rocksdb_iter_value(it, &vlen);
        char coll[65], id[SYNCD_MAX_ID_BYTES + 1], *rec = NULL;
        char mk[VERSION_KEY_MAX];
        syncd_doc_t *doc = NULL;
        json_t *ob = NULL, *m;
        syncd_reckey_t k;
        size_t i;
        int corrupt;

        if (key[0] != LEGACY_OUTBOX_PREFIX)
            break;
        if (!record_key_split(key + 1, klen - 1, coll, id))
            continue;
        memcpy(k.bytes, key + 1, klen - 1);
        k.len = klen - 1;
        if (vlen > 0) {
            ob = json_loadb(val, vlen, 0, NULL);
        } else {
            rec = rocksdb_get(r->db, r->read, k.bytes, k.len, &rlen, &errptr);
            if (errptr != NULL)
                rc = rocks_error(err, errptr, "get");
            else if (rec != NULL && syncd_record_decode(&doc, coll, id, rec,
                                                        rlen, 1, NULL) == 0)
                ob = json_incref(doc->outbox);
            rocksdb_free(rec);
            syncd_doc_free(doc);
        }
        json_array_foreach (ob, i, m) {
            char *text = json_dumps(m, JSON_COMPACT);

            if (text == NULL) {
                rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
                break;
            }
            rocksdb_writebatch_put(
                batch, mk, version_key(mk, MARKER_PREFIX, &k, entry_version(m)),
                text, strlen(text));
            free(text);
        }
        /* Bytes that are no array are kept as the record's one marker,
         * which fails its reads as they failed before (the open goes on,
         * as it does past a record that does not decode). */
        corrupt = vlen > 0 && !json_is_array(ob);
        if (corrupt)
            rocksdb_writebatch_put(
                batch, mk, version_key(mk, MARKER_PREFIX, &k, 0), val, vlen);
        if (json_array_size(ob) > 0 || corrupt) {
            index_key(mk, MARKED_PREFIX, &k);
            rocksdb_writebatch_put(batch, mk, 1 + k.len, "", 0);
        }
        json_decref(ob);
        rocksdb_writebatch_delete(batch, key, klen);
    }
    if (rc == 0)
        rc = iter_status(it, err);
    rocksdb_iter_destroy(it);
    if (rc == 0 && rocksdb_writebatch_count(batch) > 0) {
        rocksdb_write(r->db, r->write, batch, &errptr);
        if (errptr != NULL)
            rc = rocks_error(err, errptr, "write");
    }
    rocksdb_writebatch_destroy(batch);
    return rc;
}

int syncd_backend_rocks_open(syncd_backend_t **out, const char *dir,
                             int sync_writes, int64_t tier_ttl_ms,
                             uint64_t tier_max_bytes,
                             uint64_t block_cache_bytes,
                             const syncd_store_hooks_t *hooks,
                             syncd_error_t *err)
{
    rocks_t *r = calloc(1, sizeof(*r));
    char *errptr = NULL;
    int rc = 0;

    *out = NULL;
    if (r == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    r->base.ops = &rocks_ops;
    r->now_ms =
        hooks != NULL && hooks->now_ms != NULL ? hooks->now_ms : monotonic_ms;
    r->now_data = hooks != NULL ? hooks->data : NULL;
    pthread_mutex_init(&r->gc_lock, NULL);
    r->queue_tail = &r->queue;
    for (; r->nstripes_ready < NSTRIPES; r->nstripes_ready++) {
        stripe_t *s = &r->stripes[r->nstripes_ready];

        if (syncd_lru_init(&s->locks) != 0) {
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
            goto done;
        }
        if (syncd_lru_init(&s->pending) != 0) {
            syncd_lru_destroy(&s->locks, free_key_lock);
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
            goto done;
        }
        pthread_mutex_init(&s->lock, NULL);
    }
    if (syncd_tier_new(&r->tier, tier_max_bytes, tier_ttl_ms, r->now_ms,
                       r->now_data, 1) != 0) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto done;
    }
    r->options = syncd_rocks_options(block_cache_bytes);
    r->read = rocksdb_readoptions_create();
    r->write = rocksdb_writeoptions_create();
    r->write_unsynced = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(r->write, sync_writes ? 1 : 0);
    r->sync_writes = sync_writes;
    r->db = rocksdb_open(r->options, dir, &errptr);
    if (errptr != NULL)
        rc = rocks_error(err, errptr, "open");
    else
        rc = records_pass(r, TOMB_COMPLETE, tomb_index_record, err);
    if (rc == 0)
        rc = markers_upgrade(r, err);
    /* After the markers' move, which reads a record's meta. */
    if (rc == 0)
        rc = records_pass(r, HISTORY_COMPLETE, history_record, err);
done:
    if (rc != 0) {
        rocks_close(&r->base);
        return rc;
    }
    *out = &r->base;
    return 0;
}
