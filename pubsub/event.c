/* event.c - change events: strict validation, encoding, HMAC signatures.
 *
 * An event is the JSON object of DESIGN.md section 4 with exactly the
 * members seq, op, coll, id, v, base, patch, merge, h, origin, ts and an
 * optional sig. Validation is strict because a node applies what it
 * receives: every member must be present with its type and range, op rules
 * hold (a create has base 0 and an object merge, a delete has null patch
 * and merge), and no other member is allowed.
 *
 * Signatures: "sig" is the lower-case hex HMAC-SHA256, under the cluster
 * secret, of the canonical serialization (syncd_json_canonical) of the
 * event WITHOUT "seq" and "sig". The seq is left out on purpose: Redis
 * assigns it inside the publish script, after the publisher has signed, and
 * Lua in Redis has no HMAC. What the signature binds is the change itself
 * (collection, document, versions, patch, hash, origin, time); a seq that
 * is tampered with can only reorder or repeat a genuine change, which the
 * node's per-document version rules (base/v) already reject or repair.
 * Verification compares in constant time (CRYPTO_memcmp). Setting an
 * HMAC up (OpenSSL 3 fetches HMAC and SHA-256 and hashes the key's pads
 * on each one-shot HMAC()) costs about three times the MAC of an event,
 * so each key's context is set up once, kept for the process, and only
 * re-initialized per text.
 *
 * A secret may be a comma-separated list of keys, for rotation without
 * downtime: events are signed with the first key and accepted under any.
 *
 * An encoded event is the signed text itself with "sig" appended as its
 * last member, and the bus splices "seq" in as the first: the bytes a
 * receiver gets are {"seq":N,MIDDLE,"sig":"HEX"}, where {MIDDLE} is what
 * HEX signs. A receiver checks the signature on those bytes, without
 * serializing the event again, and parses them (syncd_json_loadb_nonul:
 * what a key holder signed has no duplicate member). Bytes laid out
 * otherwise (JSON reordered on the way, say) are parsed and checked as
 * before: the signed text is made again from the parsed event.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "pubsub/internal.h"
#include "syncd/patch.h"

/* Longest document id in bytes (DESIGN.md section 2). */
#define ID_MAX_BYTES 1024

static const char *const members[] = {
    "seq",   "op",    "coll", "id",     "v",  "base",
    "patch", "merge", "h",    "origin", "ts", "sig",
};

int syncd_bus_name_valid(const char *name)
{
    size_t n = strlen(name);

    if (n < 1 || n > BUS_NAME_MAX - 1)
        return 0;
    if (!islower((unsigned char)name[0]) && !isdigit((unsigned char)name[0]))
        return 0;
    for (size_t i = 1; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!(c >= 'a' && c <= 'z') && !isdigit(c) && c != '_' && c != '.' &&
            c != '-')
            return 0;
    }
    return 1;
}

int syncd_bus_id_valid(const char *id, size_t len)
{
    if (len < 1 || len > ID_MAX_BYTES)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c < 0x20 || c == 0x7f || strchr("<>?{}", c) != NULL)
            return 0;
    }
    return 1;
}

static int hex64_valid(const char *s)
{
    if (strlen(s) != SYNCD_HASH_HEX_LEN)
        return 0;
    for (const char *p = s; *p != '\0'; p++) {
        if (!isdigit((unsigned char)*p) && !(*p >= 'a' && *p <= 'f'))
            return 0;
    }
    return 1;
}

/* Reads exactly n digits at *p into *out and advances *p; 0 or -1. */
static int digits(const char **p, int n, int *out)
{
    *out = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        *out = *out * 10 + ((*p)[i] - '0');
    }
    *p += n;
    return 0;
}

/* Days from 1970-01-01 to the civil date y-m-d (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int syncd_bus_ts_micros(const char *s, int64_t *out)
{
    int year, mon, day, hour, min, sec, oh = 0, om = 0, sign = 0;
    int64_t frac = 0, scale = 100000;
    const char *p = s;

    if (digits(&p, 4, &year) || *p++ != '-' || digits(&p, 2, &mon) ||
        *p++ != '-' || digits(&p, 2, &day) || (*p != 'T' && *p != 't'))
        return -1;
    p++;
    if (digits(&p, 2, &hour) || *p++ != ':' || digits(&p, 2, &min) ||
        *p++ != ':' || digits(&p, 2, &sec))
        return -1;
    if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 ||
        sec > 60)
        return -1;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        for (; isdigit((unsigned char)*p); p++, scale /= 10)
            frac += (*p - '0') * scale;
    }
    if (*p == 'Z' || *p == 'z') {
        if (p[1] != '\0')
            return -1;
    } else {
        if (*p != '+' && *p != '-')
            return -1;
        sign = *p++ == '+' ? 1 : -1;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) ||
            *p != '\0' || oh > 23 || om > 59)
            return -1;
    }
    *out = ((days_from_civil(year, mon, day) * 24 + hour) * 60 + min) * 60 +
           sec - (int64_t)sign * (oh * 3600 + om * 60);
    *out = *out * 1000000 + frac;
    return 0;
}

/* Returns 1 when s is an RFC 3339 date-time
 * (YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)). */
static int rfc3339_valid(const char *s)
{
    int64_t us;

    return syncd_bus_ts_micros(s, &us) == 0;
}

static int bad(syncd_error_t *err, const char *member, const char *why)
{
    return syncd_error_set(err, SYNCD_EINVAL, "event member \"%s\" %s", member,
                           why);
}

/* Checks that member name of event is an integer >= min into *out. */
static int int_member(const json_t *event, const char *name, int64_t min,
                      int64_t *out, syncd_error_t *err)
{
    const json_t *v = json_object_get(event, name);

    if (v == NULL)
        return bad(err, name, "is missing");
    if (!json_is_integer(v))
        return bad(err, name, "is not an integer");
    *out = json_integer_value(v);
    if (*out < min)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "event member \"%s\" is %lld, below %lld", name,
                               (long long)*out, (long long)min);
    return 0;
}

/* Returns the string member name of event (borrowed), or NULL after
 * recording why in err. */
static const char *str_member(const json_t *event, const char *name,
                              syncd_error_t *err)
{
    const json_t *v = json_object_get(event, name);

    if (v == NULL) {
        bad(err, name, "is missing");
        return NULL;
    }
    if (!json_is_string(v)) {
        bad(err, name, "is not a string");
        return NULL;
    }
    return json_string_value(v);
}

static int check_members(const json_t *event, syncd_error_t *err)
{
    const char *key;
    json_t *value;

    json_object_foreach ((json_t *)event, key, value) {
        size_t i;
        for (i = 0; i < sizeof(members) / sizeof(members[0]); i++) {
            if (strcmp(key, members[i]) == 0)
                break;
        }
        if (i == sizeof(members) / sizeof(members[0]))
            return bad(err, key, "is not an event member");
    }
    return 0;
}

/* Checks op, patch, merge and h against each other. */
static int check_op(const json_t *event, const char *op, int64_t base,
                    syncd_error_t *err)
{
    const json_t *patch = json_object_get(event, "patch");
    const json_t *merge = json_object_get(event, "merge");
    const char *h;

    if (patch == NULL)
        return bad(err, "patch", "is missing");
    if (merge == NULL)
        return bad(err, "merge", "is missing");
    if (!json_is_null(patch) && !json_is_array(patch))
        return bad(err, "patch", "is neither an array nor null");
    if (json_is_array(patch)) {
        syncd_error_t perr = {0};
        if (syncd_patch_validate(patch, &perr) != 0)
            return syncd_error_set(err, SYNCD_EINVAL,
                                   "event member \"patch\" is not a valid "
                                   "JSON Patch: %s",
                                   perr.message);
    }
    if ((h = str_member(event, "h", err)) == NULL)
        return SYNCD_EINVAL;
    if (strcmp(op, "delete") == 0) {
        if (!json_is_null(patch) || !json_is_null(merge))
            return bad(err, "patch", "and \"merge\" must be null on delete");
        if (h[0] != '\0' && !hex64_valid(h))
            return bad(err, "h", "is not a content hash");
        return 0;
    }
    if (!hex64_valid(h))
        return bad(err, "h", "is not a content hash");
    if (strcmp(op, "create") == 0) {
        if (base != 0)
            return bad(err, "base", "must be 0 on create");
        if (!json_is_null(merge) && !json_is_object(merge))
            return bad(err, "merge", "must be an object or null on create");
        return 0;
    }
    if (strcmp(op, "update") == 0)
        return base >= 1 ? 0 : bad(err, "base", "must be >= 1 on update");
    return bad(err, "op", "is not create, update or delete");
}

int syncd_bus_event_check(const json_t *event, int with_seq, size_t max_bytes,
                          syncd_error_t *err)
{
    const char *op, *coll, *id, *origin, *ts;
    const json_t *sig;
    int64_t seq, v, base;

    if (!json_is_object(event))
        return syncd_error_set(err, SYNCD_EINVAL, "event is not an object");
    if (check_members(event, err) != 0)
        return SYNCD_EINVAL;
    if (with_seq && int_member(event, "seq", 1, &seq, err) != 0)
        return SYNCD_EINVAL;
    if ((op = str_member(event, "op", err)) == NULL ||
        (coll = str_member(event, "coll", err)) == NULL ||
        (id = str_member(event, "id", err)) == NULL ||
        (origin = str_member(event, "origin", err)) == NULL ||
        (ts = str_member(event, "ts", err)) == NULL)
        return SYNCD_EINVAL;
    if (!syncd_bus_name_valid(coll))
        return bad(err, "coll", "is not a valid collection name");
    if (!syncd_bus_id_valid(id,
                            json_string_length(json_object_get(event, "id"))))
        return bad(err, "id", "is not a valid document id");
    if (origin[0] == '\0')
        return bad(err, "origin", "is empty");
    if (!rfc3339_valid(ts))
        return bad(err, "ts", "is not an RFC 3339 time");
    if (int_member(event, "v", 1, &v, err) != 0 ||
        int_member(event, "base", 0, &base, err) != 0)
        return SYNCD_EINVAL;
    if (base >= v)
        return bad(err, "base", "is not below \"v\"");
    if (check_op(event, op, base, err) != 0)
        return SYNCD_EINVAL;
    sig = json_object_get(event, "sig");
    if (sig != NULL &&
        (!json_is_string(sig) || !hex64_valid(json_string_value(sig))))
        return bad(err, "sig", "is not a hex HMAC-SHA256");
    /* Measured as encoded, without encoding, and only up to the bound. */
    if (max_bytes != 0 && syncd_json_compact_size(event, max_bytes) > max_bytes)
        return syncd_error_set(err, SYNCD_ETOOBIG,
                               "event encodes to more than %zu bytes",
                               max_bytes);
    return 0;
}

int syncd_event_validate(const json_t *event, size_t max_bytes,
                         syncd_error_t *err)
{
    return syncd_bus_event_check(event, 1, max_bytes, err);
}

/* Serializes event without "seq" and "sig" canonically into *text (the
 * caller frees it): what a signature covers. */
static int signed_text(char **text, size_t *len, const json_t *event,
                       syncd_error_t *err)
{
    json_t *body;

    *text = NULL;
    body = json_copy((json_t *)event);
    if (body == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "copying an event to sign");
    json_object_del(body, "seq");
    json_object_del(body, "sig");
    *text = syncd_json_canonical(body, len);
    json_decref(body);
    if (*text == NULL)
        return syncd_error_set(err, SYNCD_ENOMEM, "serializing an event");
    return 0;
}

/* Keys whose HMAC context is kept; a process uses one secret of at most a
 * few keys (rotation), and further keys take the one-shot HMAC(). */
#define MAC_KEYS 8

/* An HMAC-SHA256 context set up with one key, kept for the process. */
typedef struct mac_key {
    unsigned char *key; /* a copy of the key */
    size_t len;
    EVP_MAC_CTX *ctx;
} mac_key_t;

/* The kept contexts, shared by every thread: a context is used under
 * mac_mu, which is held only for one MAC. */
static pthread_mutex_t mac_mu = PTHREAD_MUTEX_INITIALIZER;
static mac_key_t mac_keys[MAC_KEYS];
static size_t mac_nkeys;

/* Returns the kept context of the len bytes at key (len > 0), setting one
 * up when there is room; NULL when there is none. Caller holds mac_mu. */
static EVP_MAC_CTX *keyed_ctx(const char *key, size_t len)
{
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end()};
    mac_key_t *k;
    EVP_MAC *mac;

    for (size_t i = 0; i < mac_nkeys; i++) {
        k = &mac_keys[i];
        if (k->len == len && CRYPTO_memcmp(k->key, key, len) == 0)
            return k->ctx;
    }
    if (mac_nkeys == MAC_KEYS)
        return NULL;
    k = &mac_keys[mac_nkeys];
    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    k->ctx = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
    EVP_MAC_free(mac); /* the context holds a reference of its own */
    k->key = malloc(len);
    if (k->ctx == NULL || k->key == NULL ||
        EVP_MAC_init(k->ctx, (const unsigned char *)key, len, params) != 1) {
        EVP_MAC_CTX_free(k->ctx);
        free(k->key);
        *k = (mac_key_t){0};
        return NULL;
    }
    memcpy(k->key, key, len);
    k->len = len;
    mac_nkeys++;
    return k->ctx;
}

/* Writes the HMAC-SHA256 of text under the key_len bytes at key into mac
 * (32 bytes); 0 when it failed. */
static int hmac_sha256(unsigned char mac[32], const char *key, size_t key_len,
                       const char *text, size_t len)
{
    unsigned int mac_len = 0;
    size_t out_len = 0;
    EVP_MAC_CTX *ctx;
    int ok = 0;

    pthread_mutex_lock(&mac_mu);
    ctx = key_len > 0 ? keyed_ctx(key, key_len) : NULL;
    if (ctx != NULL)
        ok = EVP_MAC_init(ctx, NULL, 0, NULL) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)text, len) == 1 &&
             EVP_MAC_final(ctx, mac, &out_len, 32) == 1 && out_len == 32;
    pthread_mutex_unlock(&mac_mu);
    if (ctx != NULL)
        return ok;
    return HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)text,
                len, mac, &mac_len) != NULL &&
           mac_len == 32;
}

/* Writes the hex HMAC-SHA256 of text under the key_len bytes at key into
 * out (65 bytes). */
static int hmac_hex(char out[65], const char *key, size_t key_len,
                    const char *text, size_t len, syncd_error_t *err)
{
    static const char hexdig[] = "0123456789abcdef";
    unsigned char mac[32];

    out[0] = '\0';
    if (!hmac_sha256(mac, key, key_len, text, len))
        return syncd_error_set(err, SYNCD_EINVAL, "HMAC-SHA256 failed");
    for (size_t i = 0; i < sizeof(mac); i++) {
        out[2 * i] = hexdig[mac[i] >> 4];
        out[2 * i + 1] = hexdig[mac[i] & 15];
    }
    out[64] = '\0';
    return 0;
}

/* Whether sig (64 hex digits) is the HMAC of the len bytes at text under
 * any key of secret (a comma-separated list); compared in constant time. */
static int signed_by_any(const char *text, size_t len, const char *sig,
                         const char *secret)
{
    const char *key = secret;
    char want[65];
    int ok = 0;

    while (!ok && key != NULL) {
        size_t n = strcspn(key, ",");

        ok = hmac_hex(want, key, n, text, len, NULL) == 0 &&
             CRYPTO_memcmp(want, sig, 64) == 0;
        key = key[n] == ',' ? key + n + 1 : NULL;
    }
    return ok;
}

int syncd_event_sign(char out[65], const json_t *event, const char *secret,
                     syncd_error_t *err)
{
    char *text = NULL;
    size_t len;
    int rc;

    out[0] = '\0';
    if (!json_is_object(event) || secret == NULL)
        return syncd_error_set(err, SYNCD_EINVAL,
                               "signing needs an event object and a secret");
    rc = signed_text(&text, &len, event, err);
    if (rc == 0)
        rc = hmac_hex(out, secret, strcspn(secret, ","), text, len, err);
    free(text);
    return rc;
}

int syncd_bus_event_verify(const json_t *event, const char *secret,
                           syncd_error_t *err)
{
    const json_t *sig = json_object_get(event, "sig");
    char *text = NULL;
    size_t len;
    int rc;

    if (!json_is_string(sig) || json_string_length(sig) != 64)
        return syncd_error_set(err, SYNCD_EINVAL, "event is not signed");
    rc = signed_text(&text, &len, event, err);
    if (rc != 0)
        return rc;
    rc = signed_by_any(text, len, json_string_value(sig), secret)
             ? 0
             : SYNCD_EINVAL;
    free(text);
    if (rc != 0)
        return syncd_error_set(err, rc, "event signature does not match");
    return 0;
}

/* Whether the len bytes at data are {"seq":DIGITS,MIDDLE,"sig":"HEX"}
 * with HEX the HMAC of {MIDDLE} under a key of secret. */
static int signed_as_sent(const char *data, size_t len, const char *secret)
{
    static const char head[] = "{\"seq\":", tail[] = ",\"sig\":\"";
    const size_t hl = sizeof(head) - 1, tl = sizeof(tail) - 1;
    const char *mid, *sig;
    size_t i = hl, mid_len;
    char *text;
    int ok;

    if (len < hl + 2 + tl + 66 || memcmp(data, head, hl) != 0)
        return 0;
    while (i < len && data[i] >= '0' && data[i] <= '9')
        i++;
    if (i == hl || i == len || data[i] != ',')
        return 0;
    mid = data + i + 1;
    sig = data + len - 66;
    if (sig - tl <= mid || memcmp(sig - tl, tail, tl) != 0 ||
        memcmp(sig + 64, "\"}", 2) != 0)
        return 0;
    mid_len = (size_t)(sig - tl - mid);
    text = malloc(mid_len + 2);
    if (text == NULL)
        return 0;
    text[0] = '{';
    memcpy(text + 1, mid, mid_len);
    text[mid_len + 1] = '}';
    ok = signed_by_any(text, mid_len + 2, sig, secret);
    free(text);
    return ok;
}

int syncd_bus_event_decode(json_t **out, const char *data, size_t len,
                           size_t max_bytes, const char *secret, int *forged,
                           syncd_error_t *err)
{
    json_error_t jerr;
    json_t *event = NULL;
    int rc, checked;

    *out = NULL;
    *forged = 0;
    if (max_bytes != 0 && len > max_bytes)
        return syncd_error_set(err, SYNCD_ETOOBIG,
                               "event of %zu bytes exceeds %zu bytes", len,
                               max_bytes);
    checked = secret != NULL && signed_as_sent(data, len, secret);
    if (checked)
        syncd_json_loadb_nonul(&event, data, len, &jerr);
    else
        event = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (event == NULL)
        return syncd_error_set(err, SYNCD_EINVAL, "event is not JSON: %s",
                               jerr.text);
    rc = syncd_bus_event_check(event, 1, 0, err);
    if (rc == 0 && secret != NULL && !checked) {
        rc = syncd_bus_event_verify(event, secret, err);
        *forged = rc != 0;
    }
    if (rc != 0) {
        json_decref(event);
        return rc;
    }
    *out = event;
    return 0;
}

int syncd_event_decode(json_t **out, const char *data, size_t len,
                       size_t max_bytes, const char *secret, syncd_error_t *err)
{
    int forged;

    return syncd_bus_event_decode(out, data, len, max_bytes, secret, &forged,
                                  err);
}

char *syncd_event_encode(json_t *event, const char *secret, size_t *len)
{
    char sig[65], *text = NULL, *out;
    size_t n = 0;

    if (secret == NULL || json_object_get(event, "seq") != NULL) {
        if (secret != NULL &&
            (syncd_event_sign(sig, event, secret, NULL) != 0 ||
             json_object_set_new(event, "sig", json_string(sig)) != 0))
            return NULL;
        /* The members in the event's order (DESIGN.md section 4's). */
        text = syncd_json_compact(event, &n);
        if (text != NULL && len != NULL)
            *len = n;
        return text;
    }
    /* The signed text, then "sig" as its last member. */
    if (signed_text(&text, &n, event, NULL) != 0 || n < 3 ||
        hmac_hex(sig, secret, strcspn(secret, ","), text, n, NULL) != 0 ||
        json_object_set_new(event, "sig", json_string(sig)) != 0 ||
        (out = realloc(text, n + 74)) == NULL) {
        free(text);
        return NULL;
    }
    snprintf(out + n - 1, 75, ",\"sig\":\"%s\"}", sig);
    if (len != NULL)
        *len = n + 73;
    return out;
}

char *syncd_bus_splice_seq(const char *body, size_t body_len, int64_t seq,
                           size_t *len)
{
    char head[32];
    int n = snprintf(head, sizeof(head), "{\"seq\":%lld,", (long long)seq);
    char *text;

    if (body_len < 3 || body[0] != '{')
        return NULL;
    text = malloc((size_t)n + body_len);
    if (text == NULL)
        return NULL;
    memcpy(text, head, (size_t)n);
    memcpy(text + n, body + 1, body_len - 1);
    text[(size_t)n + body_len - 1] = '\0';
    *len = (size_t)n + body_len - 1;
    return text;
}
