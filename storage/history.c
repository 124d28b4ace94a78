/* history.c - a record's history: its earlier versions as reverse patches.
 *
 * A record keeps its last history_len earlier versions in doc->hist, oldest
 * first, each entry {"v","t","by","h","p"} ("del":true for a tombstone)
 * where p is the canonical JSON of the RFC 6902 patch that turns the body of
 * version v+1 into the body of version v, a tombstone's body taken as {}.
 * The history is written by the same compare-and-swap as the version it
 * comes with (it is part of the record, or in the embedded store written
 * in the record's batch), so it is exactly the committed sequence;
 * replaying the patches from the current body, newest first, gives back
 * each kept version, which the entry's hash h checks. Entries go oldest
 * first, to keep at most history_len of them and their bytes (patch text
 * plus SYNCD_HISTORY_ENTRY_OVERHEAD each) within history_max_bytes.
 *
 * MongoDB keeps the history as the compact JSON text of doc->hist (the
 * field hist), as does a node cache's record (its meta hs). doc->hist_text
 * caches that text with the array it encodes, so that an edit builds its
 * next history's text from the previous one: the kept entries are a
 * substring of it (found by skipping the dropped entries, usually one),
 * the new entry's text is appended, and the whole history is neither
 * serialized nor parsed again. The text is byte for byte what
 * json_dumps(hist, JSON_COMPACT) gives. The cache also says where the
 * newest entry's text starts in it: the embedded store, which keeps each
 * entry under a key of its own, writes that text alone
 * (syncd_history_newest_text()).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* Bytes a history entry is charged: its patch text plus the overhead. */
static uint64_t entry_bytes(const json_t *e)
{
    return (uint64_t)json_string_length(json_object_get(e, "p")) +
           SYNCD_HISTORY_ENTRY_OVERHEAD;
}

/* Returns a new reference to the body doc stands for in a replay: its
 * body, or {} for a tombstone; NULL on out of memory. */
static json_t *replay_body(const syncd_doc_t *doc)
{
    return doc->deleted ? json_object() : json_incref(doc->body);
}

/* Makes into *out a new history entry for cur whose patch leads from
 * next's body to cur's; forward as for syncd_history_append(). */
static int entry_new(json_t **out, const syncd_doc_t *next,
                     const syncd_doc_t *cur, const json_t *forward,
                     syncd_error_t *err)
{
    json_t *from = replay_body(next), *to = replay_body(cur);
    json_t *patch = NULL, *entry = NULL;
    char *text = NULL;
    size_t len = 0;
    int rc = 0;

    if (from == NULL || to == NULL) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto cleanup;
    }
    /* The roots a patch touches are where its two documents differ, which
     * holds whichever way it leads: the forward patch's roots bound the
     * reverse diff as well as the forward one. */
    rc = forward != NULL
             ? syncd_patch_diff_touched(&patch, from, to, forward, err)
             : syncd_patch_diff(&patch, from, to, err);
    if (rc != 0)
        goto cleanup;
    text = syncd_json_canonical(patch, &len);
    entry = text != NULL ? json_object() : NULL;
    /* The members in this order: the entry's text (entry_text()) and
     * json_dumps() of the history write them so. */
    if (entry != NULL &&
        (json_object_set_new_nocheck(entry, "v", json_integer(cur->version)) !=
             0 ||
         json_object_set_new_nocheck(entry, "t", json_integer(cur->mtime_ms)) !=
             0 ||
         json_object_set_new_nocheck(entry, "by", json_string(cur->origin)) !=
             0 ||
         json_object_set_new_nocheck(entry, "h",
                                     json_string_nocheck(cur->hash)) != 0 ||
         json_object_set_new_nocheck(entry, "p",
                                     json_stringn_nocheck(text, len)) != 0 ||
         (cur->deleted &&
          json_object_set_new_nocheck(entry, "del", json_true()) != 0))) {
        json_decref(entry);
        entry = NULL;
    }
    if (entry == NULL)
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
cleanup:
    *out = entry;
    free(text);
    json_decref(patch);
    json_decref(to);
    json_decref(from);
    return rc;
}

int syncd_history_text(const char **text, size_t *len, char **made,
                       const syncd_doc_t *doc)
{
    return syncd_text_of(text, len, made, doc->hist_text, doc->hist);
}

/* Sets doc->hist_text to [doc->hist, the len bytes of text, newest] (text
 * must be an encoding of doc->hist, valid UTF-8 unless check; newest the
 * offset in it of the newest entry's text, or 0 when not known);
 * SYNCD_ENOMEM (or SYNCD_EINVAL for text that is not UTF-8) leaves it
 * NULL. */
static int set_text(syncd_doc_t *doc, const char *text, size_t len,
                    size_t newest, int check)
{
    json_t *s =
        check ? json_stringn(text, len) : json_stringn_nocheck(text, len);

    json_decref(doc->hist_text);
    doc->hist_text =
        s != NULL ? json_pack("[O, o, I]", doc->hist, s, (json_int_t)newest)
                  : NULL;
    if (doc->hist_text != NULL)
        return 0;
    return s != NULL || !check ? SYNCD_ENOMEM : SYNCD_EINVAL;
}

int syncd_history_keep_text(syncd_doc_t *doc, const char *text, size_t len)
{
    return set_text(doc, text, len, 0, 1);
}

const char *syncd_history_newest_text(const syncd_doc_t *doc, size_t *len)
{
    size_t tlen = 0,
           off = (size_t)json_integer_value(json_array_get(doc->hist_text, 2));
    const char *text = syncd_text_cached(doc->hist_text, doc->hist, &tlen);

    if (text == NULL || off == 0 || off + 1 >= tlen)
        return NULL;
    *len = tlen - 1 - off;
    return text + off;
}

/* Returns the offset in the JSON array text t (len bytes) of its value
 * number k (0: the first), or len when it has no such value. Strings are
 * skipped whole, so brackets and commas inside them do not count. */
static size_t value_offset(const char *t, size_t len, size_t k)
{
    size_t i = 0;
    int depth = 0, in_string = 0;

    while (i < len && t[i] != '[')
        i++;
    for (i++; k > 0 && i < len; i++) {
        if (in_string) {
            if (t[i] == '\\')
                i++;
            else if (t[i] == '"')
                in_string = 0;
        } else if (t[i] == '"') {
            in_string = 1;
        } else if (t[i] == '{' || t[i] == '[') {
            depth++;
        } else if (t[i] == '}' || t[i] == ']') {
            if (--depth < 0)
                return len;
        } else if (t[i] == ',' && depth == 0) {
            k--;
        }
    }
    while (i < len && isspace((unsigned char)t[i]))
        i++;
    return i;
}

/* Returns the offset in the JSON array text t (len bytes) just past its
 * last value (before the closing bracket and any blanks), or 0 when t does
 * not end with a closing bracket. */
static size_t values_end(const char *t, size_t len)
{
    while (len > 0 && isspace((unsigned char)t[len - 1]))
        len--;
    if (len == 0 || t[len - 1] != ']')
        return 0;
    len--;
    while (len > 0 && isspace((unsigned char)t[len - 1]))
        len--;
    return len;
}

/* Appends to *p the JSON string literal of the len bytes of s (valid
 * UTF-8), escaped as json_dumps() escapes it without flags: quote,
 * backslash and the control characters, nothing else. *p has room for
 * 6 * len + 2 bytes. */
static void put_string(char **p, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    char *o = *p;

    *o++ = '"';
    for (size_t i = 0;;) {
        size_t n = syncd_json_plain_span(s + i, len - i);
        unsigned char c;

        memcpy(o, s + i, n);
        o += n;
        i += n;
        if (i == len)
            break;
        c = (unsigned char)s[i++];
        *o++ = '\\';
        switch (c) {
        case '"':
        case '\\':
            *o++ = (char)c;
            break;
        case '\b':
            *o++ = 'b';
            break;
        case '\f':
            *o++ = 'f';
            break;
        case '\n':
            *o++ = 'n';
            break;
        case '\r':
            *o++ = 'r';
            break;
        case '\t':
            *o++ = 't';
            break;
        default:
            memcpy(o, "u00", 3);
            o[3] = hex[c >> 4];
            o[4] = hex[c & 0xf];
            o += 5;
        }
    }
    *o++ = '"';
    *p = o;
}

/* Returns the compact JSON of entry, cur's new history entry (see
 * entry_new()), as json_dumps(entry, JSON_COMPACT) gives it, written
 * directly from cur and the entry's patch text (malloc'd, its length in
 * *len); NULL on out of memory. */
static char *entry_text(const json_t *entry, const syncd_doc_t *cur,
                        size_t *len)
{
    const json_t *p = json_object_get(entry, "p");
    size_t plen = json_string_length(p), olen = strlen(cur->origin);
    size_t hlen = strlen(cur->hash);
    char *buf = malloc(96 + 6 * (plen + olen + hlen));
    char *o = buf;

    if (buf == NULL)
        return NULL;
    o += sprintf(o, "{\"v\":%lld,\"t\":%lld,\"by\":", (long long)cur->version,
                 (long long)cur->mtime_ms);
    put_string(&o, cur->origin, olen);
    memcpy(o, ",\"h\":", 5);
    o += 5;
    put_string(&o, cur->hash, hlen);
    memcpy(o, ",\"p\":", 5);
    o += 5;
    put_string(&o, json_string_value(p), plen);
    if (cur->deleted) {
        memcpy(o, ",\"del\":true", 11);
        o += 11;
    }
    *o++ = '}';
    *o = '\0';
    *len = (size_t)(o - buf);
    return buf;
}

/* Makes next->hist_text for next->hist, which keeps cur's entries from
 * number first on and then entry: from cur's cached text when it has one
 * (the kept entries are its substring), else by serializing next->hist;
 * either way entry's text is its tail. */
static int next_text(syncd_doc_t *next, const syncd_doc_t *cur, size_t first,
                     const json_t *entry)
{
    size_t clen = 0, start = 0, end = 0, elen, len;
    const char *ctext = NULL;
    char *etext = entry_text(entry, cur, &elen), *buf = NULL, *p;
    int rc = SYNCD_ENOMEM;

    if (etext == NULL)
        return rc;
    if (first < json_array_size(cur->hist)) {
        ctext = syncd_text_cached(cur->hist_text, cur->hist, &clen);
        if (ctext != NULL) {
            start = value_offset(ctext, clen, first);
            end = values_end(ctext, clen);
        }
        if (ctext == NULL || start >= end) {
            buf = json_dumps(next->hist, JSON_COMPACT);
            len = buf != NULL ? strlen(buf) : 0;
            rc = buf != NULL ? set_text(next, buf, len, len - 1 - elen, 0) : rc;
            goto cleanup;
        }
    }
    buf = malloc(end - start + elen + 3);
    if (buf == NULL)
        goto cleanup;
    p = buf;
    *p++ = '[';
    if (end > start) {
        memcpy(p, ctext + start, end - start);
        p += end - start;
        *p++ = ',';
    }
    memcpy(p, etext, elen);
    p += elen;
    *p++ = ']';
    len = (size_t)(p - buf);
    rc = set_text(next, buf, len, len - 1 - elen, 0);
cleanup:
    free(etext);
    free(buf);
    return rc;
}

int syncd_history_append(syncd_doc_t *next, const syncd_doc_t *cur,
                         const json_t *forward, int len, uint64_t max_bytes,
                         syncd_error_t *err)
{
    json_t *entry = NULL, *hist = NULL;
    uint64_t bytes;
    size_t n, first, i;
    int rc;

    next->hist = next->hist_text = NULL;
    if (cur == NULL || len <= 0)
        return 0;
    rc = entry_new(&entry, next, cur, forward, err);
    if (rc != 0)
        return rc;
    /* Keep the newest entries that fit both bounds, the new one included. */
    n = json_array_size(cur->hist);
    bytes = entry_bytes(entry);
    first = n;
    while (first > 0 && n - first + 1 < (size_t)len) {
        uint64_t b = entry_bytes(json_array_get(cur->hist, first - 1));

        if (bytes + b > max_bytes)
            break;
        bytes += b;
        first--;
    }
    if (bytes > max_bytes)
        goto cleanup; /* not even the new entry fits: no history */
    hist = json_array();
    for (i = first; hist != NULL && i < n; i++) {
        if (json_array_append(hist, json_array_get(cur->hist, i)) != 0)
            break;
    }
    if (hist == NULL || i < n || json_array_append(hist, entry) != 0) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto cleanup;
    }
    next->hist = hist;
    hist = NULL;
    if (next_text(next, cur, first, entry) != 0)
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
cleanup:
    json_decref(hist);
    json_decref(entry);
    return rc;
}

int64_t syncd_history_oldest(const syncd_doc_t *doc)
{
    const json_t *first = json_array_get(doc->hist, 0);

    return first != NULL
               ? (int64_t)json_integer_value(json_object_get(first, "v"))
               : doc->version;
}

/* Applies entry's reverse patch to *body (replaced by the result) and
 * checks the result's hash against the entry's; SYNCD_EBACKEND when the
 * history does not replay (a corrupt record). */
static int step_back(json_t **body, const syncd_doc_t *doc, const json_t *e,
                     syncd_error_t *err)
{
    const char *text = json_string_value(json_object_get(e, "p"));
    const char *h = json_string_value(json_object_get(e, "h"));
    int deleted = json_is_true(json_object_get(e, "del"));
    json_t *patch = text != NULL ? json_loads(text, 0, NULL) : NULL;
    json_t *prev = NULL;
    char hash[SYNCD_HASH_HEX_LEN + 1] = "";
    int rc = patch != NULL ? syncd_patch_apply(&prev, *body, patch, NULL) : -1;

    json_decref(patch);
    if (rc == 0 && !deleted &&
        (syncd_json_hash(hash, prev, NULL) != 0 || h == NULL ||
         strcmp(hash, h) != 0))
        rc = -1;
    if (rc != 0) {
        json_decref(prev);
        return syncd_error_set(
            err, SYNCD_EBACKEND,
            "history of %s/%s does not replay at version "
            "%lld",
            doc->coll, doc->id,
            (long long)json_integer_value(json_object_get(e, "v")));
    }
    json_decref(*body);
    *body = prev;
    return 0;
}

int syncd_history_version(syncd_doc_t **out, const syncd_doc_t *doc,
                          int64_t version, syncd_error_t *err)
{
    json_t *body = NULL;
    syncd_doc_t *v = NULL;
    size_t i = json_array_size(doc->hist);
    const json_t *e = NULL;
    int rc = 0;

    *out = NULL;
    if (version > doc->version || version < syncd_history_oldest(doc))
        return syncd_error_set(err, SYNCD_ENOTFOUND,
                               "version %lld of %s/%s is not kept: the oldest "
                               "kept version is %lld, the current %lld",
                               (long long)version, doc->coll, doc->id,
                               (long long)syncd_history_oldest(doc),
                               (long long)doc->version);
    v = syncd_doc_dup(doc);
    body = replay_body(doc);
    if (v == NULL || body == NULL) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto cleanup;
    }
    while (v->version > version && i > 0) {
        e = json_array_get(doc->hist, --i);
        rc = step_back(&body, doc, e, err);
        if (rc != 0)
            goto cleanup;
        v->version = json_integer_value(json_object_get(e, "v"));
    }
    if (v->version != version) {
        rc = syncd_error_set(err, SYNCD_ENOTFOUND,
                             "version %lld of %s/%s is not kept",
                             (long long)version, doc->coll, doc->id);
        goto cleanup;
    }
    if (e != NULL) {
        v->deleted = json_is_true(json_object_get(e, "del"));
        v->mtime_ms = json_integer_value(json_object_get(e, "t"));
        snprintf(v->origin, sizeof(v->origin), "%s",
                 json_string_value(json_object_get(e, "by")));
        snprintf(v->hash, sizeof(v->hash), "%s",
                 json_string_value(json_object_get(e, "h")));
    }
    json_decref(v->body);
    v->body = v->deleted ? NULL : json_incref(body);
    v->body_size = 0;
    syncd_doc_drop_meta(v);
    *out = v;
    v = NULL;
cleanup:
    json_decref(body);
    syncd_doc_free(v);
    return rc;
}

/* Formats ms since the epoch as ISO 8601 UTC with milliseconds into buf. */
static void iso_time(char *buf, size_t size, int64_t ms)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    char day[32];

    gmtime_r(&secs, &tm);
    strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, size, "%s.%03dZ", day, (int)(ms % 1000));
}

/* Appends to versions the listing entry of one version: body its replay
 * body, next_body the next version's (NULL: it is the current one). */
static int list_version(json_t *versions, int64_t v, int64_t t,
                        const char *origin, const char *h, int deleted,
                        const json_t *body, const json_t *next_body,
                        syncd_error_t *err)
{
    json_t *patch = NULL;
    char time[40];
    int rc = 0;

    if (next_body != NULL)
        rc = syncd_patch_diff(&patch, body, next_body, err);
    if (rc != 0)
        return rc;
    iso_time(time, sizeof(time), t);
    if (json_array_append_new(
            versions,
            json_pack("{s:I, s:I, s:s, s:s, s:s, s:b, s:o}", "v", (json_int_t)v,
                      "t", (json_int_t)t, "time", time, "origin", origin, "h",
                      h, "deleted", deleted, "patch",
                      patch != NULL ? patch : json_null())) != 0)
        return syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    return 0;
}

int syncd_history_list(json_t **out, const syncd_doc_t *doc, syncd_error_t *err)
{
    json_t *res = NULL, *versions = json_array();
    json_t *body = replay_body(doc), *next = NULL;
    size_t i = json_array_size(doc->hist);
    int rc;

    *out = NULL;
    if (versions == NULL || body == NULL) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto cleanup;
    }
    rc = list_version(versions, doc->version, doc->mtime_ms, doc->origin,
                      doc->deleted ? "" : doc->hash, doc->deleted, body, NULL,
                      err);
    while (rc == 0 && i > 0) {
        const json_t *e = json_array_get(doc->hist, --i);
        const char *by = json_string_value(json_object_get(e, "by"));
        const char *h = json_string_value(json_object_get(e, "h"));

        json_decref(next);
        next = json_incref(body);
        rc = step_back(&body, doc, e, err);
        if (rc == 0)
            rc = list_version(
                versions, json_integer_value(json_object_get(e, "v")),
                json_integer_value(json_object_get(e, "t")),
                by != NULL ? by : "", h != NULL ? h : "",
                json_is_true(json_object_get(e, "del")), body, next, err);
    }
    if (rc != 0)
        goto cleanup;
    res =
        json_pack("{s:s, s:s, s:I, s:I, s:O}", "coll", doc->coll, "id", doc->id,
                  "v", (json_int_t)doc->version, "oldest",
                  (json_int_t)syncd_history_oldest(doc), "versions", versions);
    if (res == NULL)
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
    *out = res;
cleanup:
    json_decref(next);
    json_decref(body);
    json_decref(versions);
    return rc;
}
