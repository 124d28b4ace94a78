/* syncctl_verify.c - `syncctl verify C [--nodes URL,URL,...]`: checks that
 * every node serves what the store of record holds (DESIGN.md sections 5,
 * 6 and 10).
 *
 * The nodes are those given with --nodes, else the `url` of each element
 * of `nodes` in GET /v1/nodes of --server; a server without that route
 * (404), or whose list holds no url, is checked alone, which is said on
 * stderr. Each node is asked to
 * verify itself (POST .../verify: its view against the store's digest and
 * each body it serves from itself against its stored hash). When its view
 * and the store's digest differ, the ids are narrowed down through ranged
 * digests of both (GET .../digest?after=&until=&source=node|store): a range
 * whose digests differ is split at the split id of the side holding more
 * entries, until a range holds at most LEAF entries on each side, which
 * are then listed and compared. That costs O(differences x log n) requests
 * and finds every differing id, beyond the verify answer's cap.
 *
 * A document whose content differs between the node and the store
 * (reason "hash" or "body") is then narrowed down inside it (doc/HASH.md
 * "Narrowing"): syncd_htree_narrow() walks the two hash trees through GET
 * .../docs/{id}/hashes?source=node|store, asking only for the listings
 * under what differs, and the difference gets the JSON Pointers of the
 * smallest differing subtrees ("paths", at most MAX_PATHS, with
 * "paths_truncated"). At most MAX_NARROWED documents per node are
 * narrowed; a narrowing that fails is reported on stderr and leaves its
 * difference without paths.
 *
 * Output: {"coll", "agree", "nodes": [{"url", "node", "agree", "count",
 * "digest", "store_count", "store_digest", "differs": [{"id", "node_v",
 * "store_v", "reason", "paths", "paths_truncated"}]}]} (a node that cannot
 * be asked gets {"url", "error"}). Exit 0 when every node agrees, 1 when one
 * does not or cannot be asked, 2 for usage errors.
 */
#define _GNU_SOURCE /* asprintf */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "syncctl.h"
#include "syncd/patch.h"

/* A range listed and compared entry by entry holds at most this many
 * entries on each side. */
#define LEAF 200

/* Ranges a narrowing follows at most, so a wildly disagreeing node costs
 * bounded requests (the verify answer still names its first 1000). */
#define MAX_RANGES 10000

/* Most paths one differing document lists, and most documents narrowed
 * per node. */
#define MAX_PATHS 20
#define MAX_NARROWED 100

/* One node being checked. */
typedef struct node_check {
    syncctl_opts_t opts; /* server: the node's URL */
    const char *coll;
    json_t *differs; /* {id: {"id","node_v","store_v","reason"}} */
    int ranges;      /* ranges compared so far */
} node_check_t;

/* Reports a non-2xx answer of url (status, error code and message) and
 * returns SYNCCTL_FAILED. */
static int answer_failed(const char *url, long status, const json_t *v)
{
    const char *error = json_string_value(json_object_get(v, "error"));
    const char *message = json_string_value(json_object_get(v, "message"));

    return syncctl_fail("%s: %ld %s: %s", url, status, error ? error : "error",
                        message ? message : "");
}

/* Sends method to the node's route `what` with query and sets *out to its
 * 2xx JSON answer; anything else is reported and SYNCCTL_FAILED. */
static int ask(const node_check_t *nc, const char *method, const char *what,
               const char *query, json_t **out)
{
    char *url = syncctl_url(&nc->opts, nc->coll, what, query);
    long status = 0;
    int rc;

    *out = NULL;
    if (url == NULL)
        return syncctl_fail("out of memory");
    rc = syncctl_call_json(&nc->opts, method, url, &status, out);
    if (rc == SYNCCTL_OK && (status < 200 || status > 299)) {
        rc = answer_failed(url, status, *out);
        json_decref(*out);
        *out = NULL;
    }
    free(url);
    return rc;
}

/* Asks for the ranged digest of (after, until] of source ("node" or
 * "store"), with up to `entries` entries listed. */
static int range_digest(const node_check_t *nc, const char *source,
                        const char *after, const char *until, int entries,
                        json_t **out)
{
    char query[3 * 2 * 1024 + 128] = "";

    syncctl_add_query(query, sizeof(query), "source", source);
    if (after != NULL)
        syncctl_add_query(query, sizeof(query), "after", after);
    if (until != NULL)
        syncctl_add_query(query, sizeof(query), "until", until);
    if (entries > 0) {
        char n[16];

        snprintf(n, sizeof(n), "%d", entries);
        syncctl_add_query(query, sizeof(query), "entries", n);
    }
    return ask(nc, "GET", "digest", query, out);
}

static json_int_t count_of(const json_t *d)
{
    return json_integer_value(json_object_get(d, "count"));
}

static int same_digest(const json_t *a, const json_t *b)
{
    const char *x = json_string_value(json_object_get(a, "digest"));
    const char *y = json_string_value(json_object_get(b, "digest"));

    return count_of(a) == count_of(b) && x != NULL && y != NULL &&
           strcmp(x, y) == 0;
}

/* Records that id differs (mine, stored: its entries, either NULL) unless
 * it is already recorded. */
static int add_differ(node_check_t *nc, const char *id, const json_t *mine,
                      const json_t *stored)
{
    const char *reason;
    json_t *d;

    if (json_object_get(nc->differs, id) != NULL)
        return SYNCCTL_OK;
    if (mine == NULL)
        reason = "missing";
    else if (stored == NULL)
        reason = "extra";
    else if (json_integer_value(json_object_get(mine, "v")) !=
             json_integer_value(json_object_get(stored, "v")))
        reason = "version";
    else
        reason = "hash";
    d = json_pack("{s:s, s:O, s:O, s:s}", "id", id, "node_v",
                  mine ? json_object_get(mine, "v") : json_null(), "store_v",
                  stored ? json_object_get(stored, "v") : json_null(), "reason",
                  reason);
    if (d == NULL || json_object_set_new(nc->differs, id, d) != 0)
        return syncctl_fail("out of memory");
    return SYNCCTL_OK;
}

/* Compares two listings of the same range ({"id","v","h"} in id order)
 * entry by entry. */
static int compare_entries(node_check_t *nc, const json_t *mine,
                           const json_t *truth)
{
    size_t i = 0, j = 0;
    int rc = SYNCCTL_OK;

    while (rc == SYNCCTL_OK &&
           (i < json_array_size(mine) || j < json_array_size(truth))) {
        json_t *a = json_array_get(mine, i), *b = json_array_get(truth, j);
        const char *ia = json_string_value(json_object_get(a, "id"));
        const char *ib = json_string_value(json_object_get(b, "id"));
        int c = a == NULL ? 1 : b == NULL ? -1 : strcmp(ia, ib);

        if (c < 0) {
            rc = add_differ(nc, ia, a, NULL);
            i++;
        } else if (c > 0) {
            rc = add_differ(nc, ib, NULL, b);
            j++;
        } else {
            if (!json_equal(json_object_get(a, "v"), json_object_get(b, "v")) ||
                !json_equal(json_object_get(a, "h"), json_object_get(b, "h")))
                rc = add_differ(nc, ia, a, b);
            i++;
            j++;
        }
    }
    return rc;
}

/* Narrows down where the node's view and the store differ within
 * (after, until], given both digests of that range. */
static int narrow(node_check_t *nc, const char *after, const char *until,
                  const json_t *mine, const json_t *truth)
{
    json_t *m = NULL, *t = NULL;
    const char *split;
    char *cut = NULL;
    int rc;

    if (same_digest(mine, truth))
        return SYNCCTL_OK;
    if (++nc->ranges > MAX_RANGES)
        return syncctl_fail("%s: more than %d ranges differ; stopped "
                            "narrowing",
                            nc->opts.server, MAX_RANGES);
    if (count_of(mine) <= LEAF && count_of(truth) <= LEAF) {
        rc = range_digest(nc, "node", after, until, LEAF, &m);
        if (rc == SYNCCTL_OK)
            rc = range_digest(nc, "store", after, until, LEAF, &t);
        if (rc == SYNCCTL_OK)
            rc = compare_entries(nc, json_object_get(m, "entries"),
                                 json_object_get(t, "entries"));
        goto cleanup;
    }
    split = json_string_value(json_object_get(
        count_of(mine) >= count_of(truth) ? mine : truth, "split"));
    if (split == NULL || (cut = strdup(split)) == NULL) {
        rc = syncctl_fail("%s: a range of more than %d entries has no split",
                          nc->opts.server, LEAF);
        goto cleanup;
    }
    rc = range_digest(nc, "node", after, cut, 0, &m);
    if (rc == SYNCCTL_OK)
        rc = range_digest(nc, "store", after, cut, 0, &t);
    if (rc == SYNCCTL_OK)
        rc = narrow(nc, after, cut, m, t);
    json_decref(m);
    json_decref(t);
    m = t = NULL;
    if (rc == SYNCCTL_OK)
        rc = range_digest(nc, "node", cut, until, 0, &m);
    if (rc == SYNCCTL_OK)
        rc = range_digest(nc, "store", cut, until, 0, &t);
    if (rc == SYNCCTL_OK)
        rc = narrow(nc, cut, until, m, t);
cleanup:
    free(cut);
    json_decref(m);
    json_decref(t);
    return rc;
}

/* One side of a narrowing: the node's copy or the store's, through the
 * node. */
typedef struct hash_side {
    const node_check_t *nc;
    const char *what;   /* "docs/<id percent-encoded>/hashes" */
    const char *source; /* "node" or "store" */
} hash_side_t;

/* A syncd_htree_fetch_fn asking the node for a listing of one side. */
static int fetch_hashes(json_t **out, const char *path, size_t path_len,
                        size_t level, size_t from, size_t count, void *arg,
                        syncd_error_t *err)
{
    const hash_side_t *hs = arg;
    size_t size = 3 * path_len + 256;
    char *query = malloc(size), *ptr = strndup(path, path_len), n[24];
    int rc = SYNCCTL_FAILED;

    *out = NULL;
    if (query == NULL || ptr == NULL) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto cleanup;
    }
    if (strlen(ptr) != path_len) {
        rc = syncd_error_set(err, SYNCD_EINVAL,
                             "a key holding a NUL byte cannot be asked for");
        goto cleanup;
    }
    query[0] = '\0';
    syncctl_add_query(query, size, "source", hs->source);
    syncctl_add_query(query, size, "path", ptr);
    if (level != SYNCD_HTREE_TOP) {
        snprintf(n, sizeof(n), "%zu", level);
        syncctl_add_query(query, size, "level", n);
    }
    snprintf(n, sizeof(n), "%zu", from);
    syncctl_add_query(query, size, "from", n);
    snprintf(n, sizeof(n), "%zu", count);
    syncctl_add_query(query, size, "count", n);
    rc = ask(hs->nc, "GET", hs->what, query, out) == SYNCCTL_OK
             ? 0
             : syncd_error_set(err, SYNCD_EBACKEND, "%s: a hash listing failed",
                               hs->nc->opts.server);
cleanup:
    free(query);
    free(ptr);
    return rc;
}

/* Narrows down where the node's copy of the differing document d and the
 * store's differ, setting d's "paths" and "paths_truncated". */
static int narrow_doc(const node_check_t *nc, json_t *d)
{
    const char *id = json_string_value(json_object_get(d, "id"));
    char *eid = curl_easy_escape(NULL, id, 0), *what = NULL;
    hash_side_t node = {nc, NULL, "node"}, store = {nc, NULL, "store"};
    json_t *paths = NULL;
    syncd_error_t err;
    int truncated = 0, rc = SYNCCTL_FAILED;

    syncd_error_clear(&err);
    if (eid == NULL || asprintf(&what, "docs/%s/hashes", eid) < 0) {
        what = NULL;
        goto cleanup;
    }
    node.what = store.what = what;
    if (syncd_htree_narrow(&paths, &truncated, fetch_hashes, &node,
                           fetch_hashes, &store, MAX_PATHS, &err) != 0) {
        syncctl_fail("%s: %s: cannot narrow the difference: %s",
                     nc->opts.server, id, err.message);
        goto cleanup;
    }
    if (json_object_set_new(d, "paths", paths) == 0 &&
        json_object_set_new(d, "paths_truncated", json_boolean(truncated)) == 0)
        rc = SYNCCTL_OK;
cleanup:
    curl_free(eid);
    free(what);
    return rc;
}

/* Narrows the differences of list whose content differs (reason "hash"
 * or "body"), at most MAX_NARROWED of them. */
static void narrow_docs(const node_check_t *nc, json_t *list)
{
    size_t i, narrowed = 0;
    json_t *d;

    json_array_foreach (list, i, d) {
        const char *reason = json_string_value(json_object_get(d, "reason"));

        if (narrowed == MAX_NARROWED)
            break;
        if (reason != NULL &&
            (strcmp(reason, "hash") == 0 || strcmp(reason, "body") == 0)) {
            narrow_doc(nc, d);
            narrowed++;
        }
    }
}

static int by_id(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Returns a new array of the differences recorded in differs ({id: d}),
 * sorted by id; NULL when out of memory. */
static json_t *sorted_differs(const json_t *differs)
{
    size_t n = json_object_size(differs), i = 0;
    const char **ids = malloc((n + 1) * sizeof(*ids));
    json_t *list = json_array(), *d;
    const char *id;

    if (ids == NULL || list == NULL) {
        free(ids);
        json_decref(list);
        return NULL;
    }
    json_object_foreach ((json_t *)differs, id, d) {
        ids[i++] = id;
    }
    qsort(ids, n, sizeof(*ids), by_id);
    for (i = 0; i < n; i++)
        json_array_append(list, json_object_get(differs, ids[i]));
    free(ids);
    return list;
}

/* Checks one node; *out gets its report. Returns SYNCCTL_OK when it
 * agrees with the store, else SYNCCTL_FAILED. */
static int check_node(const syncctl_opts_t *opts, const char *url,
                      const char *coll, json_t **out)
{
    node_check_t nc = {{url, opts->token}, coll, json_object(), 0};
    json_t *v = NULL, *mine = NULL, *truth = NULL, *d, *list = NULL;
    size_t i;
    int rc, agree;

    *out = NULL;
    if (nc.differs == NULL)
        return syncctl_fail("out of memory");
    rc = ask(&nc, "POST", "verify", NULL, &v);
    json_array_foreach (json_object_get(v, "differs"), i, d) {
        if (rc == SYNCCTL_OK &&
            json_object_set(nc.differs,
                            json_string_value(json_object_get(d, "id")),
                            d) != 0)
            rc = syncctl_fail("out of memory");
    }
    if (rc == SYNCCTL_OK)
        rc = range_digest(&nc, "node", NULL, NULL, 0, &mine);
    if (rc == SYNCCTL_OK)
        rc = range_digest(&nc, "store", NULL, NULL, 0, &truth);
    if (rc == SYNCCTL_OK)
        rc = narrow(&nc, NULL, NULL, mine, truth);
    if (rc != SYNCCTL_OK) {
        *out = json_pack("{s:s, s:s}", "url", url, "error",
                         "cannot be verified (see stderr)");
        goto cleanup;
    }
    list = sorted_differs(nc.differs);
    narrow_docs(&nc, list);
    agree = json_array_size(list) == 0 && same_digest(mine, truth) &&
            json_is_true(json_object_get(v, "agree"));
    *out = json_pack("{s:s, s:O?, s:b, s:O?, s:O?, s:O?, s:O?, s:O}", "url",
                     url, "node", json_object_get(v, "node"), "agree", agree,
                     "count", json_object_get(mine, "count"), "digest",
                     json_object_get(mine, "digest"), "store_count",
                     json_object_get(truth, "count"), "store_digest",
                     json_object_get(truth, "digest"), "differs", list);
    rc = agree ? SYNCCTL_OK : SYNCCTL_FAILED;
cleanup:
    json_decref(list);
    json_decref(v);
    json_decref(mine);
    json_decref(truth);
    json_decref(nc.differs);
    return *out != NULL ? rc : syncctl_fail("out of memory");
}

/* Sets *out to a new array of the node URLs: those of --nodes (a comma
 * list), else those of GET /v1/nodes, else --server alone when the server
 * has no such route. */
static int node_urls(const syncctl_opts_t *opts, const char *list, json_t **out)
{
    json_t *urls = json_array(), *v = NULL, *n;
    char *url = NULL, *copy = NULL, *tok, *save;
    long status = 0;
    size_t i, slen = strlen(opts->server);
    int rc = SYNCCTL_OK;

    *out = urls;
    if (urls == NULL)
        return syncctl_fail("out of memory");
    if (list != NULL) {
        copy = strdup(list);
        for (tok = copy ? strtok_r(copy, ",", &save) : NULL; tok != NULL;
             tok = strtok_r(NULL, ",", &save))
            json_array_append_new(urls, json_string(tok));
        free(copy);
        return json_array_size(urls) > 0 ? SYNCCTL_OK
                                         : syncctl_fail("--nodes is empty");
    }
    if (asprintf(
            &url, "%.*s/v1/nodes",
            (int)(slen > 0 && opts->server[slen - 1] == '/' ? slen - 1 : slen),
            opts->server) < 0)
        return syncctl_fail("out of memory");
    rc = syncctl_call_json(opts, "GET", url, &status, &v);
    if (rc == SYNCCTL_OK && status == 404) {
        fprintf(stderr,
                "syncctl: %s has no /v1/nodes: verifying that node alone\n",
                opts->server);
        json_array_append_new(urls, json_string(opts->server));
    } else if (rc == SYNCCTL_OK && (status < 200 || status > 299)) {
        rc = answer_failed(url, status, v);
    } else if (rc == SYNCCTL_OK) {
        json_array_foreach (json_object_get(v, "nodes"), i, n) {
            if (json_is_string(json_object_get(n, "url")))
                json_array_append(urls, json_object_get(n, "url"));
        }
        if (json_array_size(urls) == 0) {
            fprintf(stderr,
                    "syncctl: %s lists no node with a url: verifying %s "
                    "alone\n",
                    url, opts->server);
            json_array_append_new(urls, json_string(opts->server));
        }
    }
    free(url);
    json_decref(v);
    return rc;
}

int syncctl_cmd_verify(const syncctl_cmd_t *self, const syncctl_opts_t *opts,
                       int argc, char **argv)
{
    const char *coll = NULL, *list = NULL;
    json_t *urls = NULL, *reports = NULL, *url, *r, *out;
    int rc = SYNCCTL_OK;
    size_t i;

    for (int k = 0; k < argc; k++) {
        if (strcmp(argv[k], "--nodes") == 0 && k + 1 < argc)
            list = argv[++k];
        else if (argv[k][0] != '-' && coll == NULL)
            coll = argv[k];
        else
            return syncctl_usage(self);
    }
    if (coll == NULL)
        return syncctl_usage(self);
    if (node_urls(opts, list, &urls) != SYNCCTL_OK) {
        json_decref(urls);
        return SYNCCTL_FAILED;
    }
    reports = json_array();
    json_array_foreach (urls, i, url) {
        if (check_node(opts, json_string_value(url), coll, &r) != SYNCCTL_OK)
            rc = SYNCCTL_FAILED;
        if (r != NULL)
            json_array_append_new(reports, r);
    }
    out = json_pack("{s:s, s:b, s:o}", "coll", coll, "agree", rc == SYNCCTL_OK,
                    "nodes", reports);
    if (out == NULL || syncctl_print_json(out) != SYNCCTL_OK)
        rc = SYNCCTL_FAILED;
    json_decref(out);
    json_decref(urls);
    return rc;
}
