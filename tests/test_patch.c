/* test_patch.c - tests of the patch engine (syncd_patch).
 *
 * Data-driven conformance against the shared vectors in $SYNCD_TESTDATA
 * (default ../shared/testdata): json-patch-tests, the RFC 7396 and RFC 6901
 * tables. Property tests over thousands of seeded random document pairs
 * check that diffs reproduce their target and that failed patches leave
 * the input untouched. Error paths cover malformed input, deep nesting and
 * 50,000-element arrays; canonical JSON, SHA-256 and the content hash are
 * checked against fixed vectors, and the hash tree's incremental hash against
 * a fresh one after thousands of random patches. syncd_json_loadb() is
 * checked against json_loadb() on edge cases and random documents.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <cmocka.h>

#include "syncd/patch.h"

/* ---- helpers ------------------------------------------------------------ */

static const char *testdata_dir(void)
{
    const char *dir = getenv("SYNCD_TESTDATA");

    return dir != NULL && dir[0] != '\0' ? dir : "../shared/testdata";
}

/* Loads a file from the test data folder; fails the test, saying where it
 * looked, when the file is missing or not JSON. */
static json_t *load_testdata(const char *name)
{
    char path[1024];
    json_error_t jerr;
    json_t *v;

    snprintf(path, sizeof(path), "%s/%s", testdata_dir(), name);
    v = json_load_file(path, JSON_DECODE_ANY, &jerr);
    if (v == NULL)
        fail_msg("cannot load conformance data %s: %s (set SYNCD_TESTDATA "
                 "to the folder holding json-patch-tests/ and the RFC "
                 "tables)",
                 path, jerr.text);
    return v;
}

/* Returns the canonical text of v; the caller frees it. */
static char *canon(const json_t *v)
{
    char *text = syncd_json_canonical(v, NULL);

    assert_non_null(text);
    return text;
}

/* Asserts that a and b are exactly equal (same canonical bytes). */
static void assert_same_json(const json_t *a, const json_t *b, const char *what)
{
    char *ta = canon(a), *tb = canon(b);

    if (strcmp(ta, tb) != 0)
        fail_msg("%s: got %s, want %s", what, ta, tb);
    free(ta);
    free(tb);
}

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);

    if (v == NULL)
        fail_msg("bad JSON in test: %s: %s", text, jerr.text);
    return v;
}

/* Applies patch text to doc text; returns the code, the result in *out
 * (may be NULL) and the error in *err. */
static int apply_text(json_t **out, const char *doc, const char *patch,
                      syncd_error_t *err)
{
    json_t *d = parse(doc), *p = parse(patch), *res = NULL;
    int rc;

    syncd_error_clear(err);
    rc = syncd_patch_apply(&res, d, p, err);
    json_decref(d);
    json_decref(p);
    if (out != NULL)
        *out = res;
    else
        json_decref(res);
    return rc;
}

/* Builds `levels` nested arrays without recursion. */
static json_t *nested_arrays(size_t levels)
{
    json_t *v = json_array();

    for (size_t i = 1; i < levels; i++) {
        json_t *outer = json_array();

        json_array_append_new(outer, v);
        v = outer;
    }
    return v;
}

/* Frees nested single-element arrays without recursing (jansson's own
 * json_decref recurses once per level). */
static void free_nested(json_t *v)
{
    while (json_is_array(v) && json_array_size(v) > 0) {
        json_t *child = json_incref(json_array_get(v, 0));

        json_array_clear(v);
        json_decref(v);
        v = child;
    }
    json_decref(v);
}

/* ---- conformance: RFC 6902 ---------------------------------------------- */

/* Runs every non-disabled record of a json-patch-tests file; returns the
 * number of records checked. */
static size_t run_patch_records(const char *file)
{
    json_t *records = load_testdata(file), *rec;
    size_t i, checked = 0;

    assert_true(json_is_array(records));
    json_array_foreach (records, i, rec) {
        json_t *doc = json_object_get(rec, "doc");
        json_t *patch = json_object_get(rec, "patch");
        json_t *expected = json_object_get(rec, "expected");
        const char *comment =
            json_string_value(json_object_get(rec, "comment"));
        json_t *saved, *out = NULL;
        syncd_error_t err;
        int rc;

        if (doc == NULL || patch == NULL ||
            json_is_true(json_object_get(rec, "disabled")))
            continue;
        comment = comment != NULL ? comment : "(no comment)";
        saved = json_deep_copy(doc);
        syncd_error_clear(&err);
        rc = syncd_patch_apply(&out, doc, patch, &err);
        if (json_object_get(rec, "error") != NULL) {
            if (rc == 0)
                fail_msg("%s record %zu (%s): applied, want an error", file, i,
                         comment);
            assert_null(out);
            assert_true(strncmp(err.message, "operation ", 10) == 0 ||
                        strncmp(err.message, "patch ", 6) == 0);
        } else {
            if (rc != 0)
                fail_msg("%s record %zu (%s): failed: %s", file, i, comment,
                         err.message);
            if (expected != NULL && !syncd_json_equal(out, expected))
                fail_msg("%s record %zu (%s): wrong result", file, i, comment);
        }
        assert_same_json(doc, saved, "the input document after apply");
        json_decref(saved);
        json_decref(out);
        checked++;
    }
    json_decref(records);
    return checked;
}

static void test_patch_conformance__every_tests_json_record_behaves(void **s)
{
    (void)s;
    assert_int_equal(run_patch_records("json-patch-tests/tests.json"), 92);
}

static void test_patch_conformance__every_spec_tests_record_behaves(void **s)
{
    (void)s;
    assert_int_equal(run_patch_records("json-patch-tests/spec_tests.json"), 16);
}

/* ---- conformance: RFC 7396 ---------------------------------------------- */

static void
test_merge_conformance__every_record_applies_and_roundtrips(void **s)
{
    json_t *records = load_testdata("merge-patch-tests.json"), *rec;
    size_t i, checked = 0, roundtrips = 0;

    (void)s;
    json_array_foreach (records, i, rec) {
        json_t *doc = json_object_get(rec, "doc");
        json_t *patch = json_object_get(rec, "patch");
        json_t *expected = json_object_get(rec, "expected");
        json_t *out = NULL, *gen = NULL, *again = NULL;
        syncd_error_t err;

        if (doc == NULL || patch == NULL || expected == NULL)
            continue;
        syncd_error_clear(&err);
        assert_int_equal(syncd_merge_apply(&out, doc, patch, &err), 0);
        assert_same_json(out, expected, "merge apply");
        if (json_is_true(json_object_get(rec, "roundtrip"))) {
            assert_int_equal(syncd_merge_diff(&gen, doc, expected, &err), 0);
            assert_int_equal(syncd_merge_apply(&again, doc, gen, &err), 0);
            assert_same_json(again, expected, "merge generate-then-apply");
            roundtrips++;
        }
        json_decref(out);
        json_decref(gen);
        json_decref(again);
        checked++;
    }
    json_decref(records);
    assert_int_equal(checked, 17);
    assert_int_equal(roundtrips, 17);
}

/* ---- conformance: RFC 6901 ---------------------------------------------- */

static void test_pointer_conformance__every_record_resolves_or_fails(void **s)
{
    json_t *records = load_testdata("json-pointer-tests.json"), *rec;
    size_t i, checked = 0;

    (void)s;
    json_array_foreach (records, i, rec) {
        const char *form = json_string_value(json_object_get(rec, "form"));
        const char *text = json_string_value(json_object_get(rec, "pointer"));
        json_t *doc = json_object_get(rec, "doc");
        json_t *expected = json_object_get(rec, "expected");
        syncd_ptr_t *ptr = NULL;
        json_t *found = NULL;
        syncd_error_t err;
        int rc;

        if (form == NULL)
            continue;
        syncd_error_clear(&err);
        if (strcmp(form, "uri-fragment") == 0)
            rc = syncd_ptr_parse_fragment(&ptr, text, &err);
        else
            rc = syncd_ptr_parse(&ptr, text, &err);
        if (rc == 0)
            rc = syncd_ptr_get(&found, doc, ptr, &err);
        if (expected != NULL) {
            if (rc != 0)
                fail_msg("pointer %s (%s): %s", text, form, err.message);
            assert_same_json(found, expected, text);
        } else if (rc == 0) {
            fail_msg("pointer %s (%s): resolved, want an error", text, form);
        } else {
            assert_true(err.message[0] != '\0');
        }
        syncd_ptr_free(ptr);
        checked++;
    }
    json_decref(records);
    assert_int_equal(checked, 40);
}

/* ---- property tests on random documents --------------------------------- */

typedef struct rng {
    uint64_t state;
} rng_t;

static uint64_t rng_next(rng_t *r)
{
    r->state ^= r->state >> 12;
    r->state ^= r->state << 25;
    r->state ^= r->state >> 27;
    return r->state * 0x2545f4914f6cdd1dULL;
}

static size_t rng_below(rng_t *r, size_t n)
{
    return (size_t)(rng_next(r) % n);
}

static const char *const words[] = {"",
                                    "a",
                                    "b",
                                    "a/b",
                                    "m~n",
                                    "~1",
                                    "~0/",
                                    "x y",
                                    "caf\xc3\xa9",
                                    "\xe6\x97\xa5\xe6\x9c\xac",
                                    "\xf0\x9f\x98\x80",
                                    "-",
                                    "0",
                                    "01",
                                    "layers",
                                    "labels",
                                    "size",
                                    "quote\"back\\slash",
                                    "tab\tnl\n"};

#define NWORDS (sizeof(words) / sizeof(words[0]))

static json_t *random_scalar(rng_t *r)
{
    static const double reals[] = {0.1, 1e300, -0.0, 5e-324, 2.5, -1e-7, 1.0};

    switch (rng_below(r, 7)) {
    case 0:
        return json_null();
    case 1:
        return json_boolean(rng_below(r, 2));
    case 2:
        return json_integer((json_int_t)rng_below(r, 100));
    case 3:
        return json_integer(rng_below(r, 2) ? INT64_MAX : INT64_MIN);
    case 4:
        return json_real(reals[rng_below(r, sizeof(reals) / sizeof(reals[0]))]);
    default:
        return json_string(words[rng_below(r, NWORDS)]);
    }
}

static void set_random_key(rng_t *r, json_t *obj, json_t *value)
{
    if (rng_below(r, 20) == 0)
        json_object_setn_new(obj, "nul\0key", 7, value);
    else
        json_object_set_new(obj, words[rng_below(r, NWORDS)], value);
}

static json_t *random_value(rng_t *r, int depth)
{
    size_t n;
    json_t *v;

    if (depth <= 0 || rng_below(r, 3) == 0)
        return random_scalar(r);
    n = rng_below(r, 6);
    if (rng_below(r, 2)) {
        v = json_array();
        if (rng_below(r, 4) == 0)
            n += 20;
        for (size_t i = 0; i < n; i++)
            json_array_append_new(v, random_value(r, depth - 1));
    } else {
        v = json_object();
        for (size_t i = 0; i < n; i++)
            set_random_key(r, v, random_value(r, depth - 1));
    }
    return v;
}

/* Changes v in place: nested edits, array inserts/removes/moves in the
 * middle, member additions and deletions. */
static void mutate(rng_t *r, json_t *v, int depth)
{
    size_t n = json_is_array(v) ? json_array_size(v) : json_object_size(v);
    size_t edits = 1 + rng_below(r, 3);

    for (size_t e = 0; e < edits; e++) {
        size_t pick = n > 0 ? rng_below(r, n) : 0;

        if (json_is_array(v)) {
            json_t *child = json_array_get(v, pick);

            switch (rng_below(r, 5)) {
            case 0:
                json_array_insert_new(v, pick, random_value(r, depth));
                break;
            case 1:
                if (n > 0)
                    json_array_remove(v, pick);
                break;
            case 2:
                if (n > 1) {
                    json_incref(child);
                    json_array_remove(v, pick);
                    json_array_insert_new(v, rng_below(r, n - 1), child);
                }
                break;
            case 3:
                if (n > 0)
                    json_array_set_new(v, pick, random_value(r, depth));
                break;
            default:
                if (json_is_array(child) || json_is_object(child))
                    mutate(r, child, depth - 1);
            }
        } else {
            void *it = json_object_iter(v);
            json_t *child;

            for (size_t i = 0; i < pick && it != NULL; i++)
                it = json_object_iter_next(v, it);
            child = it != NULL ? json_object_iter_value(it) : NULL;
            switch (rng_below(r, 4)) {
            case 0:
                set_random_key(r, v, random_value(r, depth));
                break;
            case 1:
                if (it != NULL)
                    json_object_deln(v, json_object_iter_key(it),
                                     json_object_iter_key_len(it));
                break;
            default:
                if (json_is_array(child) || json_is_object(child))
                    mutate(r, child, depth - 1);
                else if (it != NULL)
                    json_object_iter_set_new(v, it, random_value(r, depth));
            }
        }
        n = json_is_array(v) ? json_array_size(v) : json_object_size(v);
    }
}

static void test_patch_diff__random_pairs_apply_back_to_target(void **s)
{
    rng_t r = {0x5eed5eed12345ULL};
    size_t merged = 0, refused = 0;

    (void)s;
    for (int round = 0; round < 3000; round++) {
        json_t *a = random_value(&r, 4), *b = json_deep_copy(a);
        json_t *patch = NULL, *out = NULL, *merge = NULL, *mout = NULL;
        char *before = canon(a), *after;
        syncd_error_t err;
        int rc;

        if (json_is_array(b) || json_is_object(b)) {
            mutate(&r, b, 3);
        } else {
            json_decref(b);
            b = random_value(&r, 2);
        }
        syncd_error_clear(&err);
        assert_int_equal(syncd_patch_diff(&patch, a, b, &err), 0);
        rc = syncd_patch_apply(&out, a, patch, &err);
        if (rc != 0)
            fail_msg("round %d: diff does not apply: %s", round, err.message);
        assert_same_json(out, b, "apply(a, diff(a, b))");
        rc = syncd_merge_diff(&merge, a, b, &err);
        if (rc == 0) {
            assert_int_equal(syncd_merge_apply(&mout, a, merge, &err), 0);
            assert_same_json(mout, b, "merge_apply(a, merge_diff(a, b))");
            merged++;
        } else {
            assert_int_equal(rc, SYNCD_EPATCH);
            assert_null(merge);
            assert_non_null(strstr(err.message, "null"));
            refused++;
        }
        after = canon(a);
        assert_string_equal(before, after);
        free(after);
        free(before);
        json_decref(a);
        json_decref(b);
        json_decref(patch);
        json_decref(out);
        json_decref(merge);
        json_decref(mout);
    }
    assert_true(merged > 1000);
    assert_true(refused > 0);
}

static void
test_patch_apply__failed_random_patch_leaves_input_unchanged(void **s)
{
    rng_t r = {0xabcdef987654321ULL};

    (void)s;
    for (int round = 0; round < 2000; round++) {
        json_t *a = json_pack("{s:o}", "doc", random_value(&r, 4));
        json_t *b = json_deep_copy(a), *patch = NULL, *out = NULL;
        char *before, *after, want[64];
        syncd_error_t err;

        mutate(&r, b, 3);
        assert_int_equal(syncd_patch_diff(&patch, a, b, NULL), 0);
        json_array_append_new(patch, json_pack("{s:s,s:s}", "op", "remove",
                                               "path", "/no/such/member"));
        before = canon(a);
        snprintf(want, sizeof(want), "operation %zu (remove /no/such/member)",
                 json_array_size(patch) - 1);
        syncd_error_clear(&err);
        assert_int_equal(syncd_patch_apply(&out, a, patch, &err), SYNCD_EPATCH);
        assert_null(out);
        assert_true(strncmp(err.message, want, strlen(want)) == 0);
        after = canon(a);
        assert_string_equal(before, after);
        free(after);
        free(before);
        json_decref(a);
        json_decref(b);
        json_decref(patch);
    }
}

/* ---- diffs of a JSON Patch edit from what it touched -------------------- */

/* Checks the touched-subtree diffs of applied, a JSON Patch that turns a
 * into b: the patch applies to a and gives b, and both merge patches (from
 * applied, and from the full diff's operations) are exactly
 * syncd_merge_diff() of a and b (NULL when that refuses). what names the
 * case in failures. */
/* Asserts that the diff from b back to a, comparing only what forward (a
 * patch from a to b) touched, leads from b to a. */
static void check_touched_back(const json_t *a, const json_t *b,
                               const json_t *forward, const char *what)
{
    json_t *back = NULL, *out = NULL;
    syncd_error_t err;

    syncd_error_clear(&err);
    assert_int_equal(syncd_patch_diff_touched(&back, b, a, forward, &err), 0);
    if (syncd_patch_apply(&out, b, back, &err) != 0)
        fail_msg("%s: the touched diff back does not apply: %s", what,
                 err.message);
    assert_same_json(out, a, what);
    json_decref(back);
    json_decref(out);
}

static void check_touched(const json_t *a, const json_t *b,
                          const json_t *applied, const char *what)
{
    json_t *patch = NULL, *out = NULL, *full = NULL, *want = NULL;
    json_t *merge = NULL, *from_diff = NULL;
    syncd_error_t err;
    int want_rc;

    syncd_error_clear(&err);
    assert_int_equal(syncd_patch_diff_touched(&patch, a, b, applied, &err), 0);
    if (syncd_patch_apply(&out, a, patch, &err) != 0)
        fail_msg("%s: the touched diff does not apply: %s", what, err.message);
    assert_same_json(out, b, what);
    want_rc = syncd_merge_diff(&want, a, b, NULL);
    assert_true(want_rc == 0 || want_rc == SYNCD_EPATCH);
    assert_int_equal(syncd_merge_diff_touched(&merge, a, b, applied, &err), 0);
    assert_int_equal(syncd_patch_diff(&full, a, b, NULL), 0);
    assert_int_equal(syncd_merge_diff_touched(&from_diff, a, b, full, &err), 0);
    if (want == NULL) {
        if (merge != NULL || from_diff != NULL)
            fail_msg("%s: a merge patch where none can express the change",
                     what);
    } else {
        if (merge == NULL || from_diff == NULL)
            fail_msg("%s: no merge patch where one can express the change",
                     what);
        assert_same_json(merge, want, what);
        assert_same_json(from_diff, want, what);
    }
    /* The same roots bound the diff back from b to a, whichever of the
     * three patches from a to b names them. */
    check_touched_back(a, b, applied, what);
    check_touched_back(a, b, full, what);
    check_touched_back(a, b, patch, what);
    json_decref(patch);
    json_decref(out);
    json_decref(full);
    json_decref(want);
    json_decref(merge);
    json_decref(from_diff);
}

/* Checks the touched-subtree diffs of every record of a json-patch-tests
 * file whose patch applies; returns how many. */
static size_t check_touched_records(const char *file)
{
    json_t *records = load_testdata(file), *rec;
    size_t i, checked = 0;
    char what[256];

    json_array_foreach (records, i, rec) {
        json_t *doc = json_object_get(rec, "doc");
        json_t *patch = json_object_get(rec, "patch");
        json_t *out = NULL;

        if (doc == NULL || patch == NULL ||
            json_is_true(json_object_get(rec, "disabled")) ||
            json_object_get(rec, "error") != NULL ||
            syncd_patch_apply(&out, doc, patch, NULL) != 0)
            continue;
        snprintf(what, sizeof(what), "%s record %zu", file, i);
        check_touched(doc, out, patch, what);
        json_decref(out);
        checked++;
    }
    json_decref(records);
    return checked;
}

static void
test_patch_diff_touched__conformance_edits_give_the_full_diffs_effect(void **s)
{
    (void)s;
    /* Every record whose patch applies: 62 of tests.json, 12 of
     * spec_tests.json. */
    assert_int_equal(check_touched_records("json-patch-tests/tests.json"), 62);
    assert_int_equal(check_touched_records("json-patch-tests/spec_tests.json"),
                     12);
}

/* Returns the escaped pointer of a random location in doc (malloc'd), and
 * the value there in *at (borrowed). */
static char *touched_location(rng_t *r, json_t *doc, json_t **at)
{
    char *path = strdup("");

    *at = doc;
    while (rng_below(r, 3) != 0) {
        size_t n = json_is_array(*at)    ? json_array_size(*at)
                   : json_is_object(*at) ? json_object_size(*at)
                                         : 0;
        char *token, *longer;
        size_t pick;
        void *it;

        if (n == 0)
            break;
        pick = rng_below(r, n);
        if (json_is_array(*at)) {
            token = malloc(24);
            snprintf(token, 24, "%zu", pick);
            *at = json_array_get(*at, pick);
        } else {
            it = json_object_iter(*at);
            for (size_t i = 0; i < pick; i++)
                it = json_object_iter_next(*at, it);
            token = syncd_ptr_escape(json_object_iter_key(it),
                                     json_object_iter_key_len(it));
            *at = json_object_iter_value(it);
        }
        longer = malloc(strlen(path) + strlen(token) + 2);
        sprintf(longer, "%s/%s", path, token);
        free(path);
        free(token);
        path = longer;
    }
    return path;
}

/* Returns a pointer (malloc'd) to a new place in a random container of
 * doc: a member name, an index up to the end, or "-". */
static char *random_target(rng_t *r, json_t *doc)
{
    json_t *at;
    char *path = touched_location(r, doc, &at), *out;
    char token[64];

    if (json_is_array(at)) {
        if (rng_below(r, 4) == 0)
            snprintf(token, sizeof(token), "-");
        else
            snprintf(token, sizeof(token), "%zu",
                     rng_below(r, json_array_size(at) + 1));
    } else {
        const char *w = words[rng_below(r, NWORDS)];
        char *esc = syncd_ptr_escape(w, strlen(w));

        snprintf(token, sizeof(token), "%s", esc);
        free(esc);
    }
    out = malloc(strlen(path) + strlen(token) + 2);
    sprintf(out, "%s/%s", path, token);
    free(path);
    return out;
}

/* Returns one random operation on doc (it may fail to apply). */
static json_t *touched_op(rng_t *r, json_t *doc)
{
    json_t *at, *op;
    char *path, *from;

    switch (rng_below(r, 6)) {
    case 0:
        path = random_target(r, doc);
        op = json_pack("{s:s, s:s, s:o}", "op", "add", "path", path, "value",
                       random_value(r, 2));
        break;
    case 1:
        path = touched_location(r, doc, &at);
        op = json_pack("{s:s, s:s}", "op", "remove", "path", path);
        break;
    case 2:
        path = touched_location(r, doc, &at);
        op = json_pack("{s:s, s:s, s:o}", "op", "replace", "path", path,
                       "value", random_value(r, 2));
        break;
    case 3:
    case 4:
        from = touched_location(r, doc, &at);
        path = random_target(r, doc);
        op = json_pack("{s:s, s:s, s:s}", "op",
                       rng_below(r, 2) ? "move" : "copy", "from", from, "path",
                       path);
        free(from);
        break;
    default:
        path = touched_location(r, doc, &at);
        op = json_pack("{s:s, s:s, s:O}", "op", "test", "path", path, "value",
                       at);
    }
    free(path);
    return op;
}

static void
test_patch_diff_touched__random_edits_give_the_full_diffs_effect(void **s)
{
    rng_t r = {0x70c4ed5eedULL};
    char what[64];

    (void)s;
    for (int round = 0; round < 3000; round++) {
        json_t *a = random_value(&r, 4), *b = NULL;
        json_t *patch = json_array();
        size_t ops = 1 + rng_below(&r, 6);

        /* A copy that keeps keys with NUL (json_deep_copy() cuts them). */
        assert_int_equal(syncd_patch_apply(&b, a, patch, NULL), 0);
        /* Each operation is kept when it applies to the document so far,
         * so that the patch as a whole applies to a and gives b. */
        for (size_t i = 0; i < ops * 3 && json_array_size(patch) < ops; i++) {
            json_t *op = touched_op(&r, b), *one = json_pack("[O]", op);
            json_t *next = NULL;

            if (syncd_patch_apply(&next, b, one, NULL) == 0) {
                json_array_append(patch, op);
                json_decref(b);
                b = next;
            }
            json_decref(one);
            json_decref(op);
        }
        snprintf(what, sizeof(what), "round %d", round);
        check_touched(a, b, patch, what);
        json_decref(a);
        json_decref(b);
        json_decref(patch);
    }
}

static void test_patch_diff_touched__compares_only_the_touched_member(void **s)
{
    json_t *a = parse("{\"big\":[1,2,3],\"v\":{\"x\":1,\"y\":[5]}}");
    json_t *applied =
        parse("[{\"op\":\"test\",\"path\":\"/big/0\",\"value\":1},"
              "{\"op\":\"replace\",\"path\":\"/v/x\",\"value\":2},"
              "{\"op\":\"add\",\"path\":\"/v/y/0\",\"value\":4}]");
    json_t *b = NULL, *patch = NULL, *merge = NULL;
    json_t *want_patch =
        parse("[{\"op\":\"replace\",\"path\":\"/v/x\",\"value\":2},"
              "{\"op\":\"add\",\"path\":\"/v/y/0\",\"value\":4}]");
    json_t *want_merge = parse("{\"v\":{\"x\":2,\"y\":[4,5]}}");

    (void)s;
    assert_int_equal(syncd_patch_apply(&b, a, applied, NULL), 0);
    assert_int_equal(syncd_patch_diff_touched(&patch, a, b, applied, NULL), 0);
    assert_int_equal(syncd_merge_diff_touched(&merge, a, b, applied, NULL), 0);
    assert_same_json(patch, want_patch, "touched patch");
    assert_same_json(merge, want_merge, "touched merge");
    json_decref(a);
    json_decref(b);
    json_decref(applied);
    json_decref(patch);
    json_decref(merge);
    json_decref(want_patch);
    json_decref(want_merge);
}

/* ---- apply in place ------------------------------------------------------ */

/* Returns v's compact JSON in member order (not canonical): equal texts
 * mean the same values in the same order. The caller frees it. */
static char *ordered(const json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

    assert_non_null(text);
    return text;
}

/* Returns a deep copy of v that keeps keys holding NUL (json_deep_copy()
 * of jansson 2.14 cuts them). */
static json_t *copy_exact(const json_t *v)
{
    const char *key;
    size_t len, i;
    json_t *child, *copy;

    if (json_is_object(v)) {
        copy = json_object();
        json_object_keylen_foreach ((json_t *)v, key, len, child)
            json_object_setn_new(copy, key, len, copy_exact(child));
        return copy;
    }
    if (json_is_array(v)) {
        copy = json_array();
        json_array_foreach (v, i, child)
            json_array_append_new(copy, copy_exact(child));
        return copy;
    }
    return json_deep_copy(v);
}

/* Applies patch to a deep copy of doc in place and checks it against the
 * copying apply: the same code, and on success the same value in the same
 * member order; on failure the copy exactly as it was. Returns the code. */
static int check_in_place(const json_t *doc, const json_t *patch,
                          const char *what)
{
    json_t *mine = copy_exact(doc), *copied = NULL, *held;
    char *before = ordered(mine), *got, *want;
    syncd_error_t err, cerr;
    int rc, crc;

    syncd_error_clear(&err);
    syncd_error_clear(&cerr);
    crc = syncd_patch_apply(&copied, doc, patch, &cerr);
    held = mine;
    rc = syncd_patch_apply_in_place(&mine, patch, NULL, &err);
    if (rc != crc)
        fail_msg("%s: in place gave %d, the copying apply %d", what, rc, crc);
    got = ordered(mine);
    want = rc == 0 ? ordered(copied) : strdup(before);
    if (strcmp(got, want) != 0)
        fail_msg("%s: in place left %s, want %s", what, got, want);
    if (rc != 0) {
        assert_ptr_equal(mine, held);
        assert_string_equal(err.message, cerr.message);
    }
    free(before);
    free(got);
    free(want);
    json_decref(mine);
    json_decref(copied);
    return rc;
}

/* Runs check (check_in_place() or check_shared()) on every enabled record
 * of the JSON Patch conformance file, each of which must fail exactly when
 * it names an error; returns how many ran. */
static size_t run_records(const char *file,
                          int (*check)(const json_t *doc, const json_t *patch,
                                       const char *what))
{
    json_t *records = load_testdata(file), *rec;
    size_t i, checked = 0;
    char what[256];

    json_array_foreach (records, i, rec) {
        json_t *doc = json_object_get(rec, "doc");
        json_t *patch = json_object_get(rec, "patch");
        int rc;

        if (doc == NULL || patch == NULL ||
            json_is_true(json_object_get(rec, "disabled")))
            continue;
        snprintf(what, sizeof(what), "%s record %zu", file, i);
        rc = check(doc, patch, what);
        assert_int_equal(rc != 0, json_object_get(rec, "error") != NULL);
        checked++;
    }
    json_decref(records);
    return checked;
}

static void
test_patch_in_place__conformance_records_match_copying_apply(void **s)
{
    (void)s;
    assert_int_equal(run_records("json-patch-tests/tests.json", check_in_place),
                     92);
    assert_int_equal(
        run_records("json-patch-tests/spec_tests.json", check_in_place), 16);
}

/* A random diff with a failing operation put in the middle is undone to
 * the very document it started from (values and member order), and the
 * diff alone gives what the copying apply gives. */
static void test_patch_in_place__failing_middle_op_undoes_everything(void **s)
{
    rng_t r = {0x1a2b3c4d5e6fULL};
    static const char *const failing[] = {
        "{\"op\":\"remove\",\"path\":\"/no/such/member\"}",
        "{\"op\":\"test\",\"path\":\"\",\"value\":\"not the document\"}",
        "{\"op\":\"add\",\"path\":\"/doc/0/x/y/z\",\"value\":1}",
        "{\"op\":\"move\",\"from\":\"/doc\",\"path\":\"/doc/inner\"}"};
    size_t undone = 0;

    (void)s;
    for (int round = 0; round < 2000; round++) {
        json_t *a =
            json_pack("{s:o,s:i}", "doc", random_value(&r, 4), "tail", round);
        json_t *b = copy_exact(a), *patch = NULL;
        char what[64];
        size_t at;

        mutate(&r, b, 3);
        if (rng_below(&r, 3) == 0)
            json_object_set_new(b, "doc", random_value(&r, 3));
        assert_int_equal(syncd_patch_diff(&patch, a, b, NULL), 0);
        snprintf(what, sizeof(what), "round %d, the diff", round);
        assert_int_equal(check_in_place(a, patch, what), 0);
        at = rng_below(&r, json_array_size(patch) + 1);
        json_array_insert_new(
            patch, at,
            parse(
                failing[rng_below(&r, sizeof(failing) / sizeof(failing[0]))]));
        /* A whole-document replace before it would also be undone. */
        if (rng_below(&r, 4) == 0)
            json_array_insert_new(patch, 0,
                                  json_pack("{s:s,s:s,s:O}", "op", "replace",
                                            "path", "", "value", b));
        snprintf(what, sizeof(what), "round %d, failing at %zu", round, at);
        if (check_in_place(a, patch, what) != 0)
            undone++;
        json_decref(a);
        json_decref(b);
        json_decref(patch);
    }
    assert_true(undone > 1500);
}

/* Checks a shared application (code rc, result shared) to mine, a private
 * copy of the document whose ordered text was before, against the copying
 * one (code crc, result copied): the same code, mine exactly as it was,
 * and on success, once mine is freed (the result must hold its own
 * references to all it shares), the same value in the same member order.
 * Frees all but what. */
static void compare_shared(const char *what, json_t *mine, char *before, int rc,
                           int crc, json_t *shared, json_t *copied)
{
    char *after = ordered(mine), *got = NULL, *want = NULL;

    if (rc != crc)
        fail_msg("%s: shared gave %d, the copying one %d", what, rc, crc);
    if (strcmp(after, before) != 0)
        fail_msg("%s: the document became %s", what, after);
    json_decref(mine);
    if (rc == 0) {
        got = ordered(shared);
        want = ordered(copied);
        if (strcmp(got, want) != 0)
            fail_msg("%s: shared gave %s, want %s", what, got, want);
    }
    free(before);
    free(after);
    free(got);
    free(want);
    json_decref(shared);
    json_decref(copied);
}

/* Applies patch to a private copy of doc with syncd_patch_apply_shared()
 * and checks it against the copying apply (compare_shared(); a failure
 * with the same message too). Returns the code. */
static int check_shared(const json_t *doc, const json_t *patch,
                        const char *what)
{
    json_t *mine = copy_exact(doc), *copied = NULL, *shared = NULL;
    char *before = ordered(mine);
    syncd_error_t err, cerr;
    int rc, crc;

    syncd_error_clear(&err);
    syncd_error_clear(&cerr);
    crc = syncd_patch_apply(&copied, doc, patch, &cerr);
    rc = syncd_patch_apply_shared(&shared, mine, patch, NULL, &err);
    if (rc != 0 && rc == crc) {
        assert_null(shared);
        assert_string_equal(err.message, cerr.message);
    }
    compare_shared(what, mine, before, rc, crc, shared, copied);
    return rc;
}

static void test_patch_shared__conformance_records_match_copying_apply(void **s)
{
    (void)s;
    assert_int_equal(run_records("json-patch-tests/tests.json", check_shared),
                     92);
    assert_int_equal(
        run_records("json-patch-tests/spec_tests.json", check_shared), 16);
}

/* Random patches of random documents (the diffs of random mutations, and
 * runs of random operations, some failing, moves and copies among them)
 * give what the copying apply gives and never touch the document. */
static void
test_patch_shared__random_patches_match_copying_apply_and_spare_the_doc(
    void **s)
{
    rng_t r = {0x5a4ed0c0ffeeULL};
    size_t failed = 0;
    char what[64];

    (void)s;
    for (int round = 0; round < 3000; round++) {
        json_t *a = json_pack("{s:o,s:o}", "doc", random_value(&r, 4), "more",
                              random_value(&r, 3));
        json_t *b = copy_exact(a), *patch = NULL;

        mutate(&r, b, 3);
        assert_int_equal(syncd_patch_diff(&patch, a, b, NULL), 0);
        for (size_t i = 0, n = rng_below(&r, 5); i < n; i++)
            json_array_append_new(patch, touched_op(&r, b));
        snprintf(what, sizeof(what), "round %d", round);
        if (check_shared(a, patch, what) != 0)
            failed++;
        json_decref(a);
        json_decref(b);
        json_decref(patch);
    }
    /* Both outcomes were checked many times. */
    assert_true(failed > 300 && failed < 2700);
}

/* What the patch leaves is the document's very value (shared, not
 * copied); what it writes, and the containers on the way, are new. */
static void test_patch_shared__shares_what_the_patch_leaves(void **s)
{
    json_t *doc = parse("{\"a\":{\"big\":[1,2,3]},\"b\":{\"x\":1,\"y\":[5]},"
                        "\"c\":[{\"d\":1},{\"e\":2}]}");
    json_t *patch = parse("[{\"op\":\"replace\",\"path\":\"/b/x\",\"value\":2},"
                          "{\"op\":\"add\",\"path\":\"/c/1/f\",\"value\":3}]");
    json_t *out = NULL, *want;

    (void)s;
    assert_int_equal(syncd_patch_apply_shared(&out, doc, patch, NULL, NULL), 0);
    assert_ptr_not_equal(out, doc);
    assert_ptr_equal(json_object_get(out, "a"), json_object_get(doc, "a"));
    assert_ptr_not_equal(json_object_get(out, "b"), json_object_get(doc, "b"));
    assert_ptr_equal(json_object_get(json_object_get(out, "b"), "y"),
                     json_object_get(json_object_get(doc, "b"), "y"));
    assert_ptr_equal(json_array_get(json_object_get(out, "c"), 0),
                     json_array_get(json_object_get(doc, "c"), 0));
    assert_ptr_not_equal(json_array_get(json_object_get(out, "c"), 1),
                         json_array_get(json_object_get(doc, "c"), 1));
    want = parse("{\"a\":{\"big\":[1,2,3]},\"b\":{\"x\":1,\"y\":[5]},"
                 "\"c\":[{\"d\":1},{\"e\":2}]}");
    assert_true(json_equal(doc, want));
    json_decref(want);
    want = parse("{\"a\":{\"big\":[1,2,3]},\"b\":{\"x\":2,\"y\":[5]},"
                 "\"c\":[{\"d\":1},{\"e\":2,\"f\":3}]}");
    assert_true(json_equal(out, want));
    json_decref(want);
    json_decref(out);
    json_decref(doc);
    json_decref(patch);
}

/* syncd_merge_apply_shared() of merge on a private copy of doc against the
 * copying merge (compare_shared()). */
static void check_merge_shared(const json_t *doc, const json_t *merge,
                               const char *what)
{
    json_t *mine = copy_exact(doc), *copied = NULL, *shared = NULL;
    char *before = ordered(mine);
    int crc = syncd_merge_apply(&copied, doc, merge, NULL);
    int rc = syncd_merge_apply_shared(&shared, mine, merge, NULL, NULL);

    compare_shared(what, mine, before, rc, crc, shared, copied);
}

/* The RFC 7396 records, and merge patches of random mutations (null
 * members deleting, objects merged into, values replaced), give what the
 * copying merge gives and never touch the document. */
static void
test_merge_shared__matches_copying_merge_and_spares_the_doc(void **s)
{
    json_t *records = load_testdata("merge-patch-tests.json"), *rec;
    rng_t r = {0x3e93e5ba7eULL};
    char what[64];
    size_t i;

    (void)s;
    json_array_foreach (records, i, rec) {
        if (json_object_get(rec, "doc") == NULL ||
            json_object_get(rec, "patch") == NULL)
            continue;
        snprintf(what, sizeof(what), "record %zu", i);
        check_merge_shared(json_object_get(rec, "doc"),
                           json_object_get(rec, "patch"), what);
    }
    json_decref(records);
    for (int round = 0; round < 3000; round++) {
        json_t *a = json_pack("{s:o,s:o}", "doc", random_value(&r, 4), "more",
                              random_value(&r, 3));
        json_t *b = copy_exact(a), *merge = NULL;

        mutate(&r, b, 3);
        if (syncd_merge_diff(&merge, a, b, NULL) != 0)
            merge = json_pack("{s:o,s:n}", "doc", random_value(&r, 3), "more");
        snprintf(what, sizeof(what), "round %d", round);
        check_merge_shared(a, merge, what);
        json_decref(a);
        json_decref(b);
        json_decref(merge);
    }
}

static void test_patch_in_place__limits_fail_and_undo(void **s)
{
    json_t *doc = parse("{\"a\":[1,2,3],\"b\":{\"c\":\"x\",\"d\":true}}");
    json_t *patch = parse("[{\"op\":\"remove\",\"path\":\"/b/c\"},"
                          "{\"op\":\"copy\",\"from\":\"/a\",\"path\":\"/e\"},"
                          "{\"op\":\"copy\",\"from\":\"/a\",\"path\":\"/f\"}]");
    syncd_patch_limits_t limits = {40, 0};
    char *before = ordered(doc), *after;
    syncd_error_t err;

    (void)s;
    syncd_error_clear(&err);
    assert_int_equal(syncd_patch_apply_in_place(&doc, patch, &limits, &err),
                     SYNCD_ETOOBIG);
    assert_non_null(strstr(err.message, "operation 2 (copy /f)"));
    after = ordered(doc);
    assert_string_equal(before, after);
    free(after);
    limits.max_bytes = 0;
    limits.max_ops = 2;
    assert_int_equal(syncd_patch_apply_in_place(&doc, patch, &limits, &err),
                     SYNCD_ETOOBIG);
    after = ordered(doc);
    assert_string_equal(before, after);
    free(after);
    free(before);
    json_decref(doc);
    json_decref(patch);
}

/* ---- compact size -------------------------------------------------------- */

static void test_compact_size__equals_dumped_length_and_stops_at_cap(void **s)
{
    rng_t r = {0x77aa55cc33ULL};

    (void)s;
    for (int round = 0; round < 3000; round++) {
        json_t *v = random_value(&r, 4);
        size_t want = json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
        size_t cap = rng_below(&r, want + 10) + 1;

        assert_int_equal(syncd_json_compact_size(v, 0), want);
        assert_int_equal(syncd_json_compact_size(v, cap) > cap, want > cap);
        if (want <= cap)
            assert_int_equal(syncd_json_compact_size(v, cap), want);
        json_decref(v);
    }
}

/* ---- diff shape --------------------------------------------------------- */

static void assert_diff_ops(const char *a_text, const char *b_text,
                            const char *want_text)
{
    json_t *a = parse(a_text), *b = parse(b_text), *want = parse(want_text);
    json_t *patch = NULL, *out = NULL;

    assert_int_equal(syncd_patch_diff(&patch, a, b, NULL), 0);
    assert_same_json(patch, want, "diff");
    assert_int_equal(syncd_patch_apply(&out, a, patch, NULL), 0);
    assert_same_json(out, b, "apply(a, diff(a, b))");
    json_decref(a);
    json_decref(b);
    json_decref(want);
    json_decref(patch);
    json_decref(out);
}

static void test_patch_diff__reports_nested_change_at_deepest_path(void **s)
{
    (void)s;
    assert_diff_ops("{\"v\":{\"hg38\":{\"size\":1,\"files\":2}}}",
                    "{\"v\":{\"hg38\":{\"size\":42,\"files\":2}}}",
                    "[{\"op\":\"replace\",\"path\":\"/v/hg38/size\","
                    "\"value\":42}]");
    assert_diff_ops("{\"a/b\":{\"m~n\":1}}", "{\"a/b\":{\"m~n\":2}}",
                    "[{\"op\":\"replace\",\"path\":\"/a~1b/m~0n\","
                    "\"value\":2}]");
}

static void test_patch_diff__equal_documents_give_empty_patch(void **s)
{
    (void)s;
    assert_diff_ops("{\"a\":[1,{\"b\":2}],\"c\":null}",
                    "{\"c\":null,\"a\":[1,{\"b\":2}]}", "[]");
}

static void test_patch_diff__integer_and_real_are_different_values(void **s)
{
    (void)s;
    assert_diff_ops("{\"a\":1}", "{\"a\":1.0}",
                    "[{\"op\":\"replace\",\"path\":\"/a\",\"value\":1.0}]");
}

static void test_patch_diff__array_edits_account_for_earlier_ops(void **s)
{
    (void)s;
    assert_diff_ops("[1,2,3,4,5]", "[0,1,3,4,6,5]",
                    "[{\"op\":\"add\",\"path\":\"/0\",\"value\":0},"
                    "{\"op\":\"remove\",\"path\":\"/2\"},"
                    "{\"op\":\"add\",\"path\":\"/4\",\"value\":6}]");
    assert_diff_ops("[{\"id\":1,\"x\":1},{\"id\":2,\"x\":1}]",
                    "[{\"id\":1,\"x\":1},{\"id\":2,\"x\":2}]",
                    "[{\"op\":\"replace\",\"path\":\"/1/x\",\"value\":2}]");
}

/* Builds an array of n volume-like entries. */
static json_t *entries(size_t n)
{
    json_t *v = json_array();

    for (size_t i = 0; i < n; i++)
        json_array_append_new(v, json_pack("{s:I,s:{s:s},s:[i,i]}", "id",
                                           (json_int_t)i, "labels", "tier",
                                           "hot", "layers", (int)i, 7));
    return v;
}

static void assert_single_op(const json_t *a, const json_t *b, const char *op,
                             const char *path)
{
    json_t *patch = NULL, *out = NULL, *first;

    assert_int_equal(syncd_patch_diff(&patch, a, b, NULL), 0);
    assert_int_equal(json_array_size(patch), 1);
    first = json_array_get(patch, 0);
    assert_string_equal(json_string_value(json_object_get(first, "op")), op);
    assert_string_equal(json_string_value(json_object_get(first, "path")),
                        path);
    assert_int_equal(syncd_patch_apply(&out, a, patch, NULL), 0);
    assert_same_json(out, b, "apply(a, diff(a, b))");
    json_decref(patch);
    json_decref(out);
}

static void test_patch_diff__insert_in_50k_array_is_one_add(void **s)
{
    json_t *a = entries(50000), *b = json_deep_copy(a);

    (void)s;
    json_array_insert_new(b, 25000, json_pack("{s:s}", "id", "new"));
    assert_single_op(a, b, "add", "/25000");
    assert_single_op(b, a, "remove", "/25000");
    json_decref(a);
    json_decref(b);
}

static void test_patch_diff__field_change_in_50k_array_is_one_replace(void **s)
{
    json_t *a = entries(50000), *b = json_deep_copy(a);

    (void)s;
    json_object_set_new(json_object_get(json_array_get(b, 31337), "labels"),
                        "tier", json_string("cold"));
    assert_single_op(a, b, "replace", "/31337/labels/tier");
    json_decref(a);
    json_decref(b);
}

static void test_patch_diff__huge_edit_distance_replaces_whole_array(void **s)
{
    json_t *a = json_array(), *b = json_array();

    (void)s;
    for (int i = 0; i < 20000; i++) {
        json_array_append_new(a, json_integer(i));
        json_array_append_new(b, json_integer(-i - 1));
    }
    assert_single_op(a, b, "replace", "");
    json_decref(a);
    json_decref(b);
}

/* ---- apply errors ------------------------------------------------------- */

static void assert_apply_fails(const char *doc, const char *patch, int code,
                               const char *prefix)
{
    syncd_error_t err;
    json_t *out = NULL;

    assert_int_equal(apply_text(&out, doc, patch, &err), code);
    assert_null(out);
    if (strncmp(err.message, prefix, strlen(prefix)) != 0)
        fail_msg("message \"%s\" does not start with \"%s\"", err.message,
                 prefix);
}

static void test_patch_apply__ops_missing_members_fail_with_EPATCH(void **s)
{
    (void)s;
    assert_apply_fails("{}", "[{\"path\":\"/a\"}]", SYNCD_EPATCH,
                       "operation 0 (? /a): missing 'op'");
    assert_apply_fails("{}", "[{\"op\":\"add\",\"value\":1}]", SYNCD_EPATCH,
                       "operation 0 (add ?): missing 'path'");
    assert_apply_fails("{}", "[{\"op\":\"add\",\"path\":\"/a\"}]", SYNCD_EPATCH,
                       "operation 0 (add /a): missing 'value'");
    assert_apply_fails("{\"a\":1}", "[{\"op\":\"move\",\"path\":\"/b\"}]",
                       SYNCD_EPATCH, "operation 0 (move /b): missing 'from'");
    assert_apply_fails("{}", "[{\"op\":\"spam\",\"path\":\"/a\"}]",
                       SYNCD_EPATCH, "operation 0 (spam /a): unknown op");
}

static void test_patch_apply__wrong_types_fail_with_EPATCH(void **s)
{
    (void)s;
    assert_apply_fails("{}", "{\"op\":\"add\"}", SYNCD_EPATCH,
                       "patch is not an array");
    assert_apply_fails("{}", "[42]", SYNCD_EPATCH,
                       "operation 0 (? ?): not an object");
    assert_apply_fails("{}", "[{\"op\":1,\"path\":\"/a\"}]", SYNCD_EPATCH,
                       "operation 0 (? /a): 'op' is not a string");
    assert_apply_fails("{}", "[{\"op\":\"remove\",\"path\":7}]", SYNCD_EPATCH,
                       "operation 0 (remove ?): 'path' is not a string");
    assert_apply_fails("{\"a\":1}",
                       "[{\"op\":\"add\",\"path\":\"/a/b\",\"value\":1}]",
                       SYNCD_EPATCH, "operation 0 (add /a/b): parent is not");
}

static void test_patch_apply__malformed_pointers_fail_with_EPATCH(void **s)
{
    (void)s;
    assert_apply_fails("{}", "[{\"op\":\"add\",\"path\":\"a\",\"value\":1}]",
                       SYNCD_EPATCH, "operation 0 (add a): bad 'path'");
    assert_apply_fails("{}", "[{\"op\":\"add\",\"path\":\"/a~2\",\"value\":1}]",
                       SYNCD_EPATCH, "operation 0 (add /a~2): bad 'path'");
    assert_apply_fails(
        "{\"a\":[1,2]}", "[{\"op\":\"add\",\"path\":\"/a/01\",\"value\":1}]",
        SYNCD_EPATCH, "operation 0 (add /a/01): leading zero in array index");
    assert_apply_fails(
        "{\"a\":[1,2]}", "[{\"op\":\"replace\",\"path\":\"/a/-\",\"value\":1}]",
        SYNCD_EPATCH, "operation 0 (replace /a/-): '-' index is past the end");
}

static void test_patch_apply__names_the_failing_operation(void **s)
{
    (void)s;
    assert_apply_fails("{\"a\":1}",
                       "[{\"op\":\"add\",\"path\":\"/b\",\"value\":2},"
                       "{\"op\":\"replace\",\"path\":\"/a\",\"value\":3},"
                       "{\"op\":\"remove\",\"path\":\"/missing\"}]",
                       SYNCD_EPATCH,
                       "operation 2 (remove /missing): member not found");
}

static void test_patch_apply__failing_test_op_gives_ECONFLICT(void **s)
{
    (void)s;
    assert_apply_fails("{\"a\":1}",
                       "[{\"op\":\"test\",\"path\":\"/a\",\"value\":2}]",
                       SYNCD_ECONFLICT, "operation 0 (test /a): value differs");
    assert_apply_fails("{\"a\":1}",
                       "[{\"op\":\"test\",\"path\":\"/a\",\"value\":\"1\"}]",
                       SYNCD_ECONFLICT, "operation 0 (test /a): value differs");
}

static void test_patch_apply__test_op_compares_by_rfc_equality(void **s)
{
    json_t *out = NULL;
    syncd_error_t err;

    (void)s;
    assert_int_equal(apply_text(&out, "{\"n\":1,\"o\":{\"x\":1,\"y\":[1,2]}}",
                                "[{\"op\":\"test\",\"path\":\"/n\",\"value\":"
                                "1.0},{\"op\":\"test\",\"path\":\"/o\","
                                "\"value\":{\"y\":[1.0,2],\"x\":1}}]",
                                &err),
                     0);
    json_decref(out);
}

static void test_patch_apply__move_into_own_child_fails(void **s)
{
    (void)s;
    assert_apply_fails("{\"a\":{\"b\":1}}",
                       "[{\"op\":\"move\",\"from\":\"/a\",\"path\":\"/a/c\"}]",
                       SYNCD_EPATCH, "operation 0 (move /a/c): cannot move");
}

static void test_patch_validate__checks_without_applying(void **s)
{
    json_t *good = parse("[{\"op\":\"remove\",\"path\":\"/nothing/here\"}]");
    json_t *bad = parse("[{\"op\":\"copy\",\"path\":\"/a\",\"from\":\"x\"}]");
    syncd_error_t err;

    (void)s;
    assert_int_equal(syncd_patch_validate(good, NULL), 0);
    syncd_error_clear(&err);
    assert_int_equal(syncd_patch_validate(bad, &err), SYNCD_EPATCH);
    assert_true(strncmp(err.message, "operation 0 (copy /a): bad 'from'", 33) ==
                0);
    json_decref(good);
    json_decref(bad);
}

/* ---- deep nesting ------------------------------------------------------- */

static void test_patch__100k_nested_arrays_fail_cleanly(void **s)
{
    json_t *deep = nested_arrays(100000), *flat = json_array(), *out = NULL;
    json_t *empty = json_object(), *wrapped = json_object();
    json_t *patch = parse("[{\"op\":\"add\",\"path\":\"/-\",\"value\":1}]");
    syncd_error_t err;
    char hash[SYNCD_HASH_HEX_LEN + 1];

    (void)s;
    syncd_error_clear(&err);
    assert_int_equal(syncd_patch_apply(&out, deep, patch, &err), SYNCD_EINVAL);
    assert_non_null(strstr(err.message, "nests deeper than 512"));
    assert_int_equal(syncd_patch_diff(&out, flat, deep, NULL), SYNCD_EINVAL);
    assert_int_equal(syncd_patch_diff(&out, deep, deep, NULL), SYNCD_EINVAL);
    json_object_set(wrapped, "new", deep);
    assert_int_equal(syncd_patch_diff(&out, empty, wrapped, NULL),
                     SYNCD_EINVAL);
    json_object_clear(wrapped);
    assert_int_equal(syncd_merge_apply(&out, flat, deep, NULL), SYNCD_EINVAL);
    assert_int_equal(syncd_merge_diff(&out, deep, flat, NULL), SYNCD_EINVAL);
    assert_int_equal(syncd_json_hash(hash, deep, NULL), SYNCD_EINVAL);
    assert_null(syncd_json_canonical(deep, NULL));
    assert_int_equal(syncd_json_equal(deep, flat), 0);
    assert_null(out);
    free_nested(deep);
    json_decref(flat);
    json_decref(patch);
    json_decref(empty);
    json_decref(wrapped);
}

/* The serializer and the hash check the nesting on their way down: exactly
 * SYNCD_PATCH_MAX_DEPTH nested containers pass, one more fails, objects and
 * arrays alike. */
static void
test_canonical_and_hash__nesting_bound_is_that_of_the_depth_check(void **s)
{
    char hash[SYNCD_HASH_HEX_LEN + 1];
    syncd_error_t err;

    (void)s;
    for (size_t levels = SYNCD_PATCH_MAX_DEPTH - 1;
         levels <= SYNCD_PATCH_MAX_DEPTH + 1; levels++) {
        json_t *v = nested_arrays(levels), *obj = json_object();
        int fits = levels <= SYNCD_PATCH_MAX_DEPTH;
        char *text;

        text = syncd_json_canonical(v, NULL);
        assert_int_equal(text != NULL, fits);
        free(text);
        syncd_error_clear(&err);
        assert_int_equal(syncd_json_hash(hash, v, &err),
                         fits ? 0 : SYNCD_EINVAL);
        if (!fits)
            assert_non_null(strstr(err.message, "nests deeper than 512"));
        /* An object around levels - 1 arrays: the same depth. */
        json_object_set_new(obj, "k", json_incref(json_array_get(v, 0)));
        text = syncd_json_canonical(obj, NULL);
        assert_int_equal(text != NULL, fits);
        free(text);
        assert_int_equal(syncd_json_hash(hash, obj, NULL),
                         fits ? 0 : SYNCD_EINVAL);
        json_decref(obj);
        free_nested(v);
    }
}

/* Returns a patch adding value_new at the end of the innermost of `levels`
 * nested arrays. */
static json_t *append_innermost(size_t levels, json_t *value_new)
{
    char *path = malloc(2 * levels + 1);
    json_t *patch;

    for (size_t i = 0; i + 1 < levels; i++)
        memcpy(path + 2 * i, "/0", 2);
    memcpy(path + 2 * (levels - 1), "/-", 3);
    patch = json_pack("[{s:s,s:s,s:o}]", "op", "add", "path", path, "value",
                      value_new);
    free(path);
    return patch;
}

static void test_patch_apply__result_nesting_past_the_limit_fails(void **s)
{
    json_t *doc = nested_arrays(SYNCD_PATCH_MAX_DEPTH - 1);
    json_t *too_deep =
        append_innermost(SYNCD_PATCH_MAX_DEPTH - 1, nested_arrays(2));
    json_t *at_limit =
        append_innermost(SYNCD_PATCH_MAX_DEPTH - 1, nested_arrays(1));
    json_t *out = NULL;
    syncd_error_t err;

    (void)s;
    syncd_error_clear(&err);
    assert_int_equal(syncd_patch_apply(&out, doc, too_deep, &err),
                     SYNCD_EPATCH);
    assert_null(out);
    assert_non_null(strstr(err.message, "patched document"));
    assert_int_equal(syncd_patch_apply(&out, doc, at_limit, NULL), 0);
    free_nested(out);
    free_nested(doc);
    json_decref(too_deep);
    json_decref(at_limit);
}

/* ---- bounded application ------------------------------------------------ */

/* Returns the canonical size of v. */
static size_t canon_size(const json_t *v)
{
    size_t len = 0;
    char *text = syncd_json_canonical(v, &len);

    assert_non_null(text);
    free(text);
    return len;
}

/* Returns the peak resident set of this process in KiB. */
static long peak_rss_kib(void)
{
    struct rusage ru;

    assert_int_equal(getrusage(RUSAGE_SELF, &ru), 0);
    return ru.ru_maxrss;
}

static void
test_patch_apply_ex__copy_bomb_fails_at_the_first_op_past_the_limit(void **s)
{
    const size_t limit = (size_t)1 << 20, nops = 40;
    json_t *doc = parse("{\"a\":\"a string of some thirty bytes\"}");
    json_t *patch = json_array(), *out = NULL, *cur;
    syncd_patch_limits_t limits;
    syncd_error_t err;
    size_t i, fail_at = nops;
    long rss_before;
    char want[128];

    (void)s;
    /* Each op copies the whole document into a new member: it doubles. */
    for (i = 0; i < nops; i++) {
        char path[16];

        snprintf(path, sizeof(path), "/k%zu", i);
        json_array_append_new(patch, json_pack("{s:s,s:s,s:s}", "op", "copy",
                                               "from", "", "path", path));
    }
    syncd_patch_limits_init(&limits);
    limits.max_bytes = limit;
    syncd_error_clear(&err);
    rss_before = peak_rss_kib();
    assert_int_equal(syncd_patch_apply_ex(&out, doc, patch, &limits, &err),
                     SYNCD_ETOOBIG);
    /* Unbounded, the document would have reached 2^40 times its size. */
    assert_true(peak_rss_kib() - rss_before < 64 * 1024);
    assert_null(out);
    /* The failing op is the first whose result is over the limit. */
    cur = json_incref(doc);
    for (i = 0; i < nops && fail_at == nops; i++) {
        json_t *one = json_pack("[O]", json_array_get(patch, i)), *next;

        assert_int_equal(syncd_patch_apply(&next, cur, one, NULL), 0);
        if (canon_size(next) > limit)
            fail_at = i;
        json_decref(cur);
        json_decref(one);
        cur = next;
    }
    json_decref(cur);
    assert_true(fail_at > 0 && fail_at < nops);
    snprintf(want, sizeof(want),
             "operation %zu (copy /k%zu): document would exceed %zu bytes",
             fail_at, fail_at, limit);
    assert_string_equal(err.message, want);
    json_decref(doc);
    json_decref(patch);
}

/* Applies ops one by one without limits and returns the largest
 * canonical size the document reaches (its start included), with the
 * index of the op that first reaches it in *at (ops size when the start
 * is the largest). */
static size_t largest_size(const json_t *doc, const json_t *ops, size_t *at)
{
    json_t *cur = json_incref((json_t *)doc), *item;
    size_t best = canon_size(doc), i;

    *at = json_array_size(ops);
    json_array_foreach (ops, i, item) {
        json_t *one = json_pack("[O]", item), *next = NULL;
        size_t n;

        assert_int_equal(syncd_patch_apply(&next, cur, one, NULL), 0);
        n = canon_size(next);
        if (n > best) {
            best = n;
            *at = i;
        }
        json_decref(one);
        json_decref(cur);
        cur = next;
    }
    json_decref(cur);
    return best;
}

static void test_patch_apply_ex__size_bound_is_exact_for_every_op_kind(void **s)
{
    json_t *doc = parse("{\"a\":[1,2.5,\"x\\\"y\"],\"b\":{\"k\\n\":null},"
                        "\"c\":\"\\u0001\",\"d\":true}");
    json_t *patch = parse(
        "[{\"op\":\"add\",\"path\":\"/a/1\",\"value\":{\"q\\\\\":[false]}},"
        "{\"op\":\"copy\",\"from\":\"/b\",\"path\":\"/e~1f\"},"
        "{\"op\":\"remove\",\"path\":\"/a/0\"},"
        "{\"op\":\"move\",\"from\":\"/c\",\"path\":\"/a/-\"},"
        "{\"op\":\"replace\",\"path\":\"/d\",\"value\":1e300},"
        "{\"op\":\"add\",\"path\":\"/b/k\\n\",\"value\":\"longer\"},"
        "{\"op\":\"move\",\"from\":\"/b\",\"path\":\"/e~1f\"},"
        "{\"op\":\"test\",\"path\":\"/d\",\"value\":1e300},"
        "{\"op\":\"copy\",\"from\":\"/a\",\"path\":\"/g\"},"
        "{\"op\":\"replace\",\"path\":\"/g/0\",\"value\":[]},"
        "{\"op\":\"add\",\"path\":\"/a/0\",\"value\":-12345},"
        "{\"op\":\"remove\",\"path\":\"/g\"},"
        "{\"op\":\"add\",\"path\":\"\",\"value\":{\"z\":[[],{},\"\"]}}]");
    json_t *out = NULL, *free_run = NULL;
    syncd_patch_limits_t limits;
    syncd_error_t err;
    size_t at, peak;
    char want[128];

    (void)s;
    peak = largest_size(doc, patch, &at);
    assert_true(at < json_array_size(patch));
    syncd_patch_limits_init(&limits);
    /* Exactly the peak: every op fits, and the result is the unbounded
     * one. */
    limits.max_bytes = peak;
    assert_int_equal(syncd_patch_apply_ex(&out, doc, patch, &limits, NULL), 0);
    assert_int_equal(syncd_patch_apply(&free_run, doc, patch, NULL), 0);
    assert_same_json(out, free_run, "bounded result");
    json_decref(out);
    json_decref(free_run);
    /* One byte less: the op that reaches the peak fails. */
    limits.max_bytes = peak - 1;
    syncd_error_clear(&err);
    assert_int_equal(syncd_patch_apply_ex(&out, doc, patch, &limits, &err),
                     SYNCD_ETOOBIG);
    assert_null(out);
    snprintf(want, sizeof(want), "operation %zu (", at);
    assert_true(strncmp(err.message, want, strlen(want)) == 0);
    snprintf(want, sizeof(want), "document would exceed %zu bytes", peak - 1);
    assert_non_null(strstr(err.message, want));
    json_decref(doc);
    json_decref(patch);
}

static void
test_patch_apply_ex__more_ops_than_the_limit_fail_before_any(void **s)
{
    json_t *doc = parse("{\"n\":0}"), *patch = json_array(), *out = NULL;
    syncd_patch_limits_t limits;
    syncd_error_t err;
    int i;

    (void)s;
    syncd_patch_limits_init(&limits);
    assert_int_equal(limits.max_ops, 10000);
    assert_int_equal(limits.max_bytes, 8 << 20);
    limits.max_ops = 10;
    for (i = 0; i < 10; i++)
        json_array_append_new(patch, parse("{\"op\":\"test\",\"path\":\"/n\","
                                           "\"value\":0}"));
    assert_int_equal(syncd_patch_apply_ex(&out, doc, patch, &limits, NULL), 0);
    json_decref(out);
    /* An eleventh op, even one that would fail, is refused unapplied. */
    json_array_append_new(patch, parse("{\"op\":\"remove\",\"path\":\"/no\"}"));
    syncd_error_clear(&err);
    assert_int_equal(syncd_patch_apply_ex(&out, doc, patch, &limits, &err),
                     SYNCD_ETOOBIG);
    assert_null(out);
    assert_non_null(strstr(err.message, "11 operations"));
    json_decref(doc);
    json_decref(patch);
}

/* Returns a patch of n ops copying /a over /b. */
static json_t *copies_over(int n)
{
    json_t *patch = json_array();

    for (int i = 0; i < n; i++)
        json_array_append_new(patch, parse("{\"op\":\"copy\",\"from\":\"/a\","
                                           "\"path\":\"/b\"}"));
    return patch;
}

static void test_patch_apply_ex__copies_past_4_times_the_limit_fail(void **s)
{
    /* /a is 100,000 bytes serialized; the limit 300,000: the document
     * stays within it, but 13 copies of /a pass 4 times it. */
    char *big = malloc(99999);
    json_t *doc, *twelve = copies_over(12), *thirteen = copies_over(13);
    json_t *out = NULL;
    syncd_patch_limits_t limits;
    syncd_error_t err;

    (void)s;
    assert_non_null(big);
    memset(big, 'x', 99998);
    big[99998] = '\0';
    doc = json_pack("{s:s}", "a", big);
    syncd_patch_limits_init(&limits);
    limits.max_bytes = 300000;
    assert_int_equal(syncd_patch_apply_ex(&out, doc, twelve, &limits, NULL), 0);
    assert_true(canon_size(out) <= limits.max_bytes);
    json_decref(out);
    syncd_error_clear(&err);
    assert_int_equal(syncd_patch_apply_ex(&out, doc, thirteen, &limits, &err),
                     SYNCD_ETOOBIG);
    assert_null(out);
    assert_true(strncmp(err.message, "operation 12 (copy /b): ", 24) == 0);
    assert_non_null(strstr(err.message, "copy more than 4 times 300000 bytes"));
    free(big);
    json_decref(doc);
    json_decref(twelve);
    json_decref(thirteen);
}

/* Applies patch (is_merge: a merge patch) to doc within limits the way way
 * names (0 copying, 1 shared, 2 in place on a copy of doc); the
 * result, or NULL on failure, with the code in *rc. */
static json_t *apply_way(int way, int is_merge, const json_t *doc,
                         const json_t *patch,
                         const syncd_patch_limits_t *limits, int *rc)
{
    json_t *out = NULL;

    if (is_merge && way == 1)
        *rc = syncd_merge_apply_shared(&out, doc, patch, limits, NULL);
    else if (is_merge)
        *rc = syncd_merge_apply_ex(&out, doc, patch, limits, NULL);
    else if (way == 0)
        *rc = syncd_patch_apply_ex(&out, doc, patch, limits, NULL);
    else if (way == 1)
        *rc = syncd_patch_apply_shared(&out, doc, patch, limits, NULL);
    else if ((out = json_deep_copy(doc)) != NULL &&
             (*rc = syncd_patch_apply_in_place(&out, patch, limits, NULL)) !=
                 0) {
        json_decref(out);
        out = NULL;
    }
    return *rc == 0 ? out : NULL;
}

/* A size the caller gives in limits->doc_size is the document's, not
 * counted again: the true size gives the same results as none, and a
 * larger one moves the bound (which shows it was used). */
static void
test_patch_limits__a_given_doc_size_is_taken_as_the_documents(void **s)
{
    json_t *doc = parse("{\"a\":\"0123456789\",\"b\":1}");
    json_t *add = parse("[{\"op\":\"add\",\"path\":\"/c\",\"value\":\"x\"}]");
    json_t *grow = parse("{\"c\":\"0123456789\"}");
    size_t size = canon_size(doc);
    syncd_patch_limits_t limits;
    json_t *want, *got;
    int rc;

    (void)s;
    syncd_patch_limits_init(&limits);
    for (int way = 0; way < 3; way++) {
        /* The add makes it size + 8 bytes. */
        limits.max_bytes = size + 8;
        limits.doc_size = 0;
        want = apply_way(way, 0, doc, add, &limits, &rc);
        assert_int_equal(rc, 0);
        limits.doc_size = size;
        got = apply_way(way, 0, doc, add, &limits, &rc);
        assert_int_equal(rc, 0);
        assert_true(json_equal(got, want));
        json_decref(got);
        limits.doc_size = size + 1;
        assert_null(apply_way(way, 0, doc, add, &limits, &rc));
        assert_int_equal(rc, SYNCD_ETOOBIG);
        json_decref(want);
    }
    for (int way = 0; way < 2; way++) {
        /* The merge makes it size + 17 bytes, past the bound, and a result
         * past it is let through only when it is no larger than the
         * document was. */
        limits.max_bytes = size + 10;
        limits.doc_size = 0;
        assert_null(apply_way(way, 1, doc, grow, &limits, &rc));
        assert_int_equal(rc, SYNCD_ETOOBIG);
        limits.doc_size = size;
        assert_null(apply_way(way, 1, doc, grow, &limits, &rc));
        assert_int_equal(rc, SYNCD_ETOOBIG);
        limits.doc_size = size + 17;
        got = apply_way(way, 1, doc, grow, &limits, &rc);
        assert_int_equal(rc, 0);
        assert_int_equal(canon_size(got), size + 17);
        json_decref(got);
    }
    json_decref(doc);
    json_decref(add);
    json_decref(grow);
}

static void test_merge_apply_ex__result_past_the_limit_is_ETOOBIG(void **s)
{
    json_t *doc = parse("{\"a\":\"0123456789\",\"b\":1}");
    json_t *grow = parse("{\"c\":\"0123456789\"}");
    json_t *shrink = parse("{\"a\":null,\"c\":\"01234567890123\"}");
    json_t *out = NULL;
    syncd_patch_limits_t limits;
    syncd_error_t err;
    size_t doc_size = canon_size(doc);

    (void)s;
    syncd_patch_limits_init(&limits);
    limits.max_bytes = doc_size + 10;
    syncd_error_clear(&err);
    assert_int_equal(syncd_merge_apply_ex(&out, doc, grow, &limits, &err),
                     SYNCD_ETOOBIG);
    assert_null(out);
    assert_non_null(strstr(err.message, "would exceed"));
    /* Within the limit, and at it exactly. */
    assert_int_equal(syncd_merge_apply_ex(&out, doc, shrink, &limits, NULL), 0);
    json_decref(out);
    limits.max_bytes = doc_size + 17;
    assert_int_equal(syncd_merge_apply_ex(&out, doc, grow, &limits, NULL), 0);
    assert_int_equal(canon_size(out), doc_size + 17);
    json_decref(out);
    json_decref(doc);
    json_decref(grow);
    json_decref(shrink);
}

/* ---- merge patch -------------------------------------------------------- */

static void test_merge_diff__null_member_fails_with_EPATCH_naming_path(void **s)
{
    json_t *a = parse("{\"x\":{\"y\":1}}"), *b = parse("{\"x\":{\"y\":null}}");
    json_t *c = parse("{\"x\":{\"z\":{\"a/b\":null}}}"), *out = NULL;
    syncd_error_t err;

    (void)s;
    syncd_error_clear(&err);
    assert_int_equal(syncd_merge_diff(&out, a, b, &err), SYNCD_EPATCH);
    assert_null(out);
    assert_non_null(strstr(err.message, "\"/x/y\""));
    syncd_error_clear(&err);
    assert_int_equal(syncd_merge_diff(&out, a, c, &err), SYNCD_EPATCH);
    assert_non_null(strstr(err.message, "\"/x/z/a~1b\""));
    json_decref(a);
    json_decref(b);
    json_decref(c);
}

static void test_merge_diff__removed_member_becomes_null(void **s)
{
    json_t *a = parse("{\"a\":1,\"b\":{\"c\":2,\"d\":3}}");
    json_t *b = parse("{\"b\":{\"c\":2,\"d\":[null]}}");
    json_t *want = parse("{\"a\":null,\"b\":{\"d\":[null]}}"), *out = NULL;

    (void)s;
    assert_int_equal(syncd_merge_diff(&out, a, b, NULL), 0);
    assert_same_json(out, want, "merge diff");
    json_decref(a);
    json_decref(b);
    json_decref(want);
    json_decref(out);
}

/* ---- pointer API -------------------------------------------------------- */

static void test_ptr__parse_and_format_roundtrip_escapes(void **s)
{
    syncd_ptr_t *ptr = NULL;
    json_t *doc = parse("{\"a/b\":{\"m~n\":[10,20]}}"), *found, *parent;
    size_t len;
    char *text, *esc;

    (void)s;
    assert_int_equal(syncd_ptr_parse(&ptr, "/a~1b/m~0n/1", NULL), 0);
    assert_int_equal(syncd_ptr_count(ptr), 3);
    assert_string_equal(syncd_ptr_token(ptr, 0, &len), "a/b");
    assert_int_equal(len, 3);
    assert_string_equal(syncd_ptr_token(ptr, 1, NULL), "m~n");
    text = syncd_ptr_format(ptr);
    assert_string_equal(text, "/a~1b/m~0n/1");
    assert_int_equal(syncd_ptr_get(&found, doc, ptr, NULL), 0);
    assert_int_equal(json_integer_value(found), 20);
    assert_int_equal(syncd_ptr_parent(&parent, doc, ptr, NULL), 0);
    assert_true(json_is_array(parent));
    esc = syncd_ptr_escape("~/x", 3);
    assert_string_equal(esc, "~0~1x");
    free(esc);
    free(text);
    syncd_ptr_free(ptr);
    json_decref(doc);
}

static void test_ptr__malformed_pointers_fail_with_EINVAL(void **s)
{
    static const char *const bad[] = {"a", "/a~2", "/a~", "#/a"};
    static const char *const bad_fragments[] = {"/a", "#/%zz", "#/%4", "#/~"};
    syncd_ptr_t *ptr = NULL;
    syncd_error_t err;

    (void)s;
    for (size_t i = 0; i < 4; i++) {
        syncd_error_clear(&err);
        assert_int_equal(syncd_ptr_parse(&ptr, bad[i], &err), SYNCD_EINVAL);
        assert_null(ptr);
        assert_non_null(strstr(err.message, bad[i]));
        syncd_error_clear(&err);
        assert_int_equal(syncd_ptr_parse_fragment(&ptr, bad_fragments[i], &err),
                         SYNCD_EINVAL);
        assert_null(ptr);
    }
}

static void test_ptr__fragment_decodes_percent_nul(void **s)
{
    syncd_ptr_t *ptr = NULL;
    json_t *doc = json_object(), *found = NULL;
    size_t len;

    (void)s;
    json_object_setn_new(doc, "a\0b", 3, json_integer(5));
    assert_int_equal(syncd_ptr_parse_fragment(&ptr, "#/a%00b", NULL), 0);
    assert_non_null(syncd_ptr_token(ptr, 0, &len));
    assert_int_equal(len, 3);
    assert_int_equal(syncd_ptr_get(&found, doc, ptr, NULL), 0);
    assert_int_equal(json_integer_value(found), 5);
    syncd_ptr_free(ptr);
    json_decref(doc);
}

/* ---- canonical JSON and hashing ----------------------------------------- */

static void assert_canonical(const json_t *v, const char *want)
{
    char *text = canon(v);

    assert_string_equal(text, want);
    free(text);
}

/* Whatever the size hint (none, short of the text, its size, or far
 * above it), the canonical text is the same, over 2,000 random values. */
static void test_canonical__a_size_hint_changes_nothing_written(void **s)
{
    rng_t r = {0x512e417e57ULL};

    (void)s;
    for (int i = 0; i < 2000; i++) {
        json_t *v = random_value(&r, 4);
        size_t len, hinted_len;
        char *text = syncd_json_canonical(v, &len);

        assert_non_null(text);
        for (int h = 0; h < 4; h++) {
            size_t hint = h == 0   ? 0
                          : h == 1 ? len / 2
                          : h == 2 ? len
                                   : len * 9;
            char *hinted = syncd_json_canonical_sized(v, hint, &hinted_len);

            assert_non_null(hinted);
            assert_int_equal(hinted_len, len);
            assert_memory_equal(hinted, text, len + 1);
            free(hinted);
        }
        free(text);
        json_decref(v);
    }
}

/* Replaces each real inside v by an integer (in place). */
static void reals_to_integers(json_t *v)
{
    const char *key;
    json_t *child;
    size_t i, len;

    if (json_is_object(v)) {
        json_object_keylen_foreach (v, key, len, child) {
            if (json_is_real(child))
                json_object_setn_new(
                    v, key, len,
                    json_integer((json_int_t)json_real_value(child)));
            else
                reals_to_integers(child);
        }
    } else if (json_is_array(v)) {
        json_array_foreach (v, i, child) {
            if (json_is_real(child))
                json_array_set_new(
                    v, i, json_integer((json_int_t)json_real_value(child)));
            else
                reals_to_integers(child);
        }
    }
}

/* The compact writer keeps each object's member order: its text is
 * jansson's json_dumps(JSON_COMPACT) text byte for byte (reals aside,
 * which it spells as the canonical writer does), over 2,000 random values
 * (nested containers, keys and strings with escapes and NULs). */
static void test_compact__writes_what_json_dumps_writes(void **s)
{
    rng_t r = {0xc0ac7ULL};

    (void)s;
    for (int i = 0; i < 2000; i++) {
        json_t *v = random_value(&r, 4);
        char *want, *text;
        size_t len;

        if (json_is_real(v)) {
            json_t *n = json_integer((json_int_t)json_real_value(v));

            json_decref(v);
            v = n;
        }
        reals_to_integers(v);
        want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        text = syncd_json_compact(v, &len);
        assert_non_null(want);
        assert_non_null(text);
        assert_string_equal(text, want);
        assert_int_equal(len, strlen(want));
        free(text);
        free(want);
        json_decref(v);
    }
}

static void test_canonical__sorts_keys_whatever_the_order(void **s)
{
    json_t *a = parse("{\"b\":1,\"a\":{\"z\":[true,null],\"y\":\"\\u0001\"}}");
    json_t *b = parse("{\"a\":{\"y\":\"\\u0001\",\"z\":[true,null]},\"b\":1}");
    char ha[SYNCD_HASH_HEX_LEN + 1], hb[SYNCD_HASH_HEX_LEN + 1];

    (void)s;
    assert_canonical(a,
                     "{\"a\":{\"y\":\"\\u0001\",\"z\":[true,null]},\"b\":1}");
    assert_int_equal(syncd_json_hash(ha, a, NULL), 0);
    assert_int_equal(syncd_json_hash(hb, b, NULL), 0);
    assert_string_equal(ha, hb);
    json_decref(a);
    json_decref(b);
}

/* The canonical literal of the len bytes at str, escaped one byte at a
 * time (the reference the fast writer must match). */
static char *escape_by_byte(const char *str, size_t len)
{
    char *out = malloc(6 * len + 3), *o = out;

    *o++ = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)str[i];
        const char *short_esc = c == '"'    ? "\\\""
                                : c == '\\' ? "\\\\"
                                : c == '\n' ? "\\n"
                                : c == '\t' ? "\\t"
                                : c == '\r' ? "\\r"
                                : c == '\b' ? "\\b"
                                : c == '\f' ? "\\f"
                                            : NULL;

        if (short_esc != NULL)
            o += sprintf(o, "%s", short_esc);
        else if (c < 0x20)
            o += sprintf(o, "\\u%04x", c);
        else
            *o++ = (char)c;
    }
    *o++ = '"';
    *o = '\0';
    return out;
}

static void test_canonical__strings_escape_each_byte_json_requires(void **s)
{
    char str[48];

    (void)s;
    /* Every byte value at every offset of a word, in runs of plain ASCII
     * and of UTF-8 continuation bytes (whose high bit the word test must
     * not take for a control character). */
    for (int fill = 0; fill < 2; fill++)
        for (int c = 1; c < 128; c++)
            for (size_t at = 0; at < 20; at++) {
                size_t len = 20 + at % 7, want_span;
                json_t *v;
                char *got, *want;

                for (size_t i = 0; i < len; i++)
                    str[i] = fill ? (char)(i % 2 ? 0xa9 : 0xc3) : 'x';
                if (fill && at % 2 == 1)
                    str[at - 1] = 'y';
                str[at] = (char)c;
                want_span = c < 0x20 || c == '"' || c == '\\' ? at : len;
                if (want_span == len)
                    for (size_t i = 0; i < len; i++)
                        if ((unsigned char)str[i] < 0x20)
                            want_span = i;
                assert_int_equal(syncd_json_plain_span(str, len), want_span);
                v = json_stringn_nocheck(str, len);
                got = canon(v);
                want = escape_by_byte(str, len);
                assert_string_equal(got, want);
                free(got);
                free(want);
                json_decref(v);
            }
    assert_int_equal(syncd_json_plain_span("", 0), 0);
}

static void test_canonical__keys_with_nul_sort_by_bytes(void **s)
{
    json_t *v = json_object();

    (void)s;
    json_object_setn_new(v, "a\0b", 3, json_integer(2));
    json_object_set_new(v, "a", json_integer(1));
    json_object_set_new(v, "\xc3\xa9", json_integer(3));
    json_object_set_new(v, "B", json_integer(0));
    assert_canonical(v, "{\"B\":0,\"a\":1,\"a\\u0000b\":2,\"\xc3\xa9\":3}");
    json_decref(v);
}

static void test_canonical__integers_are_exact(void **s)
{
    json_t *v =
        json_pack("[I,I,i]", (json_int_t)INT64_MIN, (json_int_t)INT64_MAX, 0);

    (void)s;
    assert_canonical(v, "[-9223372036854775808,9223372036854775807,0]");
    json_decref(v);
}

static void test_canonical__integers_match_printf(void **s)
{
    json_int_t p = 1;

    (void)s;
    /* Each side of every power of ten, both signs. */
    for (int k = 0; k < 19; k++) {
        for (json_int_t d = -1; d <= 1; d++)
            for (int neg = 0; neg < 2; neg++) {
                json_int_t i = neg ? -(p + d) : p + d;
                json_t *v = json_integer(i);
                char want[32], *got;
                size_t len;

                snprintf(want, sizeof(want), "%" JSON_INTEGER_FORMAT, i);
                got = syncd_json_canonical(v, &len);
                assert_string_equal(got, want);
                assert_int_equal(len, strlen(want));
                free(got);
                json_decref(v);
            }
        if (k < 18)
            p *= 10;
    }
}

static void test_canonical__objects_of_every_size_sort_their_keys(void **s)
{
    rng_t r = {0x736f7274ULL};

    (void)s;
    /* Sizes on both sides of where sorting moves off the stack. */
    for (size_t n = 0; n <= 40; n++) {
        json_t *v = json_object();
        char want[512], *got;
        size_t o = 0;

        /* Keys k00..k(n-1), inserted in a random order. */
        for (size_t i = 0; i < n; i++) {
            size_t j = rng_below(&r, i + 1);
            char key[8];

            snprintf(key, sizeof(key), "k%02zu", i);
            json_object_set_new(v, key, json_integer((json_int_t)i));
            if (j != i) {
                /* Re-insert an earlier key so it moves in the table's
                 * order. */
                snprintf(key, sizeof(key), "k%02zu", j);
                json_object_set_new(v, key, json_integer((json_int_t)j));
            }
        }
        want[o++] = '{';
        for (size_t i = 0; i < n; i++)
            o += (size_t)snprintf(want + o, sizeof(want) - o,
                                  "%s\"k%02zu\":%zu", i > 0 ? "," : "", i, i);
        snprintf(want + o, sizeof(want) - o, "}");
        got = canon(v);
        assert_string_equal(got, want);
        free(got);
        json_decref(v);
    }
}

static void test_canonical__reals_roundtrip_and_stay_reals(void **s)
{
    static const struct {
        double value;
        const char *text;
    } cases[] = {{0.1, "0.1"},
                 {1e300, "1e+300"},
                 {-0.0, "-0.0"},
                 {5e-324, "5e-324"},
                 {1.0, "1.0"},
                 {123456789.0, "123456789.0"},
                 {1.0 / 3, "0.3333333333333333"}};

    (void)s;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *v = json_real(cases[i].value), *back;
        char *text = canon(v);
        double got;

        assert_string_equal(text, cases[i].text);
        back = parse(text);
        assert_true(json_is_real(back));
        got = json_real_value(back);
        assert_memory_equal(&got, &cases[i].value, sizeof(got));
        free(text);
        json_decref(v);
        json_decref(back);
    }
}

static void test_sha256__matches_fips_180_2_vectors(void **s)
{
    char hex[SYNCD_HASH_HEX_LEN + 1];
    char *million = malloc(1000000);

    (void)s;
    syncd_sha256_hex(hex, "abc", 3);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb"
                             "410ff61f20015ad");
    syncd_sha256_hex(hex, "", 0);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca"
                             "495991b7852b855");
    syncd_sha256_hex(
        hex, "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f"
                             "6ecedd419db06c1");
    memset(million, 'a', 1000000);
    syncd_sha256_hex(hex, million, 1000000);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e0"
                             "46d39ccc7112cd0");
    free(million);
}

static void test_json_equal__numbers_by_value_objects_ignore_order(void **s)
{
    json_t *a = parse("{\"a\":1,\"b\":[1.5,{\"c\":9007199254740993}]}");
    json_t *b = parse("{\"b\":[1.5,{\"c\":9007199254740993}],\"a\":1.0}");
    json_t *c = parse("{\"b\":[1.5,{\"c\":9007199254740992.0}],\"a\":1}");
    json_t *d = parse("[1,2]"), *e = parse("[2,1]");

    (void)s;
    assert_true(syncd_json_equal(a, b));
    assert_false(syncd_json_equal(a, c));
    assert_false(syncd_json_equal(d, e));
    json_decref(a);
    json_decref(b);
    json_decref(c);
    json_decref(d);
    json_decref(e);
}

/* ---- loading JSON text -------------------------------------------------- */

/* Checks that syncd_json_loadb() gives what json_loadb() gives on len
 * bytes of text: the same value in the same key order, or the same error
 * at the same line and column. */
static void assert_loads_as_jansson(const char *text, size_t len)
{
    json_error_t want_err, got_err;
    json_t *want =
        json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &want_err);
    json_t *got = NULL;
    int rc = syncd_json_loadb(&got, text, len, &got_err);

    if (want == NULL) {
        assert_int_equal(rc, SYNCD_EINVAL);
        assert_null(got);
        assert_string_equal(got_err.text, want_err.text);
        assert_int_equal(got_err.line, want_err.line);
        assert_int_equal(got_err.column, want_err.column);
    } else {
        char *a = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY);
        char *b = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);

        assert_int_equal(rc, 0);
        assert_non_null(a);
        assert_non_null(b);
        assert_string_equal(b, a);
        free(a);
        free(b);
    }
    json_decref(want);
    json_decref(got);
}

static void test_json_loadb__edge_cases_load_as_jansson_loads_them(void **s)
{
    static const char *const texts[] = {
        "{}",
        "[]",
        " [ ] ",
        "\t\r\n1\n",
        "0",
        "-0",
        "-0.0",
        "1.5e3",
        "1E+2",
        "2e-3",
        "1e400",
        "-1e400",
        "1e-400",
        "123456789012345678",
        "1234567890123456789",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "01",
        "-",
        "1.",
        "1.e5",
        "1e",
        "1e+",
        ".5",
        "+1",
        "true",
        "false",
        "null",
        "tru",
        "truex",
        "nul",
        "[true,false,null]",
        "[1,]",
        "[,1]",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{1:2}",
        "{\"a\":1,\"a\":2,\"b\":3,\"a\":4}",
        "\"\"",
        "\"esc \\\" \\\\ \\/ \\b \\f \\n \\r \\t\"",
        "\"\\u00e9\\u20ac\"",
        "\"\\ud83d\\ude00\"",
        "\"\\ud800\"",
        "\"\\ud800x\"",
        "\"\\ud800\\u0041\"",
        "\"\\udc00\"",
        "\"\\u12\"",
        "\"\\uzzzz\"",
        "\"\\x\"",
        "\"\\u0000\"",
        "{\"a\\u0000b\":1}",
        "{\"\\u00e9\":1}",
        "{\"caf\xc3\xa9\":\"\xe2\x82\xac\"}",
        "\"\xc3(\"",
        "\"\xc0\xaf\"",
        "\"\xed\xa0\x80\"",
        "\"\xf4\x90\x80\x80\"",
        "\"\xff\"",
        "{\"\xc3\":1}",
        "\xef\xbb\xbf{}",
        "\"tab\there\"",
        "\"unterminated",
        "{\"a\":\n 1,]",
        "{\"a\":1} x",
        "[1] [2]",
        "",
        "   ",
        "]",
        "}",
        "[\"\\u00e9\", \"k\", {\"\\n\": \"\\\"\"}]",
    };

    (void)s;
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        assert_loads_as_jansson(texts[i], strlen(texts[i]));
    assert_loads_as_jansson("[1]\0", 4);
    assert_loads_as_jansson("\"a\0b\"", 5);
    assert_loads_as_jansson("[\"\0\"]", 5);
}

static void test_json_loadb__deep_nesting_loads_as_jansson_loads_it(void **s)
{
    size_t depths[] = {1023, 1024, 1025, 2047, 2048, 2049, 3000};
    char *text = malloc(2 * 3000 + 1);

    (void)s;
    assert_non_null(text);
    for (size_t i = 0; i < sizeof(depths) / sizeof(depths[0]); i++) {
        size_t n = depths[i];

        memset(text, '[', n);
        memset(text + n, ']', n);
        assert_loads_as_jansson(text, 2 * n);
    }
    free(text);
}

static void
test_json_loadb__random_documents_load_as_jansson_loads_them(void **s)
{
    static const size_t flags[] = {JSON_COMPACT, JSON_INDENT(2),
                                   JSON_ENSURE_ASCII,
                                   JSON_INDENT(1) | JSON_ENSURE_ASCII};
    rng_t r = {0x10adb};

    (void)s;
    for (int i = 0; i < 400; i++) {
        json_t *doc = random_value(&r, 5);
        char *text = json_dumps(doc, JSON_ENCODE_ANY | flags[i % 4]);

        assert_non_null(text);
        assert_loads_as_jansson(text, strlen(text));
        free(text);
        json_decref(doc);
    }
}

/* ---- the Merkle content hash and the hash tree --------------------------- */

static void hash_of(char out[SYNCD_HASH_HEX_LEN + 1], const json_t *v)
{
    assert_int_equal(syncd_json_hash(out, v, NULL), 0);
}

/* Returns a deep copy of v whose objects got their members in the reverse
 * order. */
static json_t *reversed(const json_t *v)
{
    json_t *out;
    size_t i, n;

    if (json_is_array(v)) {
        out = json_array();
        for (i = 0; i < json_array_size(v); i++)
            json_array_append_new(out, reversed(json_array_get(v, i)));
        return out;
    }
    if (!json_is_object(v))
        return json_deep_copy(v);
    out = json_object();
    n = json_object_size(v);
    for (size_t k = n; k-- > 0;) {
        void *it = json_object_iter((json_t *)v);

        for (i = 0; i < k; i++)
            it = json_object_iter_next((json_t *)v, it);
        json_object_setn_new(out, json_object_iter_key(it),
                             json_object_iter_key_len(it),
                             reversed(json_object_iter_value(it)));
    }
    return out;
}

/* Returns an object or array of n members or elements (small objects). */
static json_t *big_container(rng_t *r, size_t n, int object)
{
    json_t *v = object ? json_object() : json_array();

    for (size_t i = 0; i < n; i++) {
        json_t *e = json_pack("{s:I,s:s}", "i", (json_int_t)i, "w",
                              words[rng_below(r, NWORDS)]);
        char key[32];

        if (object) {
            snprintf(key, sizeof(key), "k%05zu", i);
            json_object_set_new(v, key, e);
        } else {
            json_array_append_new(v, e);
        }
    }
    return v;
}

/* Returns a random document, sometimes holding containers big enough to be
 * chunked. */
static json_t *random_doc(rng_t *r)
{
    json_t *doc = json_object();

    json_object_set_new(doc, "a", random_value(r, 4));
    if (rng_below(r, 3) == 0)
        json_object_set_new(
            doc, "big",
            big_container(r, 40 + rng_below(r, 260), (int)rng_below(r, 2)));
    return doc;
}

/* Appends "/" and token (len bytes) escaped to the pointer at p (*plen
 * bytes, room for 4096). */
static void ptr_push(char *p, size_t *plen, const char *token, size_t len)
{
    p[(*plen)++] = '/';
    for (size_t i = 0; i < len && *plen < 4090; i++) {
        if (token[i] == '~' || token[i] == '/') {
            p[(*plen)++] = '~';
            p[(*plen)++] = token[i] == '~' ? '0' : '1';
        } else {
            p[(*plen)++] = token[i];
        }
    }
}

/* Walks from doc to a random value, writing its pointer into p / *plen;
 * *cont and *clen get the deepest container on the way. */
static json_t *random_location(rng_t *r, json_t *doc, char *p, size_t *plen,
                               size_t *clen, json_t **cont)
{
    json_t *v = doc;

    *plen = 0;
    *clen = 0;
    *cont = NULL;
    for (;;) {
        size_t n = json_is_array(v)    ? json_array_size(v)
                   : json_is_object(v) ? json_object_size(v)
                                       : 0;
        size_t pick;
        char idx[24];

        if (json_is_array(v) || json_is_object(v)) {
            *cont = v;
            *clen = *plen;
        }
        if (n == 0 || rng_below(r, 4) == 0)
            return v;
        pick = rng_below(r, n);
        if (json_is_array(v)) {
            snprintf(idx, sizeof(idx), "%zu", pick);
            ptr_push(p, plen, idx, strlen(idx));
            v = json_array_get(v, pick);
        } else {
            void *it = json_object_iter(v);

            for (size_t i = 0; i < pick; i++)
                it = json_object_iter_next(v, it);
            ptr_push(p, plen, json_object_iter_key(it),
                     json_object_iter_key_len(it));
            v = json_object_iter_value(it);
        }
    }
}

/* Returns a random operation on doc, of the kind `kind` (0..5). */
static json_t *random_op(rng_t *r, json_t *doc, int kind)
{
    static const char *const names[] = {"add",  "remove", "replace",
                                        "move", "copy",   "test"};
    char p[4096], q[4096];
    size_t plen, qlen, clen;
    json_t *cont, *v = random_location(r, doc, p, &plen, &clen, &cont);
    json_t *op = json_pack("{s:s}", "op", names[kind]);
    char idx[24];

    if (kind == 0 || kind == 3 || kind == 4) {
        /* A target inside a random container: a new or existing key, an
         * index or "-". */
        if (kind != 0) {
            json_object_set_new(op, "from", json_stringn(p, plen));
            random_location(r, doc, q, &qlen, &clen, &cont);
        } else {
            memcpy(q, p, plen);
        }
        memcpy(p, q, clen);
        plen = clen;
        if (json_is_array(cont)) {
            size_t n = json_array_size(cont);

            if (rng_below(r, 5) == 0)
                snprintf(idx, sizeof(idx), "-");
            else
                snprintf(idx, sizeof(idx), "%zu", rng_below(r, n + 1));
            ptr_push(p, &plen, idx, strlen(idx));
        } else {
            const char *w = words[rng_below(r, NWORDS)];

            ptr_push(p, &plen, w, strlen(w));
        }
    }
    json_object_set_new(op, "path", json_stringn(p, plen));
    if (kind == 0 || kind == 2)
        json_object_set_new(op, "value", random_value(r, 3));
    else if (kind == 5)
        json_object_set(op, "value", v);
    return op;
}

static void assert_tree_matches(const syncd_htree_t *t, const json_t *doc,
                                const char *what)
{
    char want[SYNCD_HASH_HEX_LEN + 1], got[SYNCD_HASH_HEX_LEN + 1];

    hash_of(want, doc);
    syncd_htree_root(t, got);
    if (strcmp(want, got) != 0)
        fail_msg("%s: the tree's hash %s is not the document's %s", what, got,
                 want);
}

static void test_hash__same_value_same_hash_whatever_the_key_order(void **s)
{
    rng_t r = {0x4d65726b6c65ULL};

    (void)s;
    for (int round = 0; round < 500; round++) {
        json_t *a = random_doc(&r), *b = reversed(a), *c = json_deep_copy(a);
        char ha[SYNCD_HASH_HEX_LEN + 1], hb[SYNCD_HASH_HEX_LEN + 1],
            hc[SYNCD_HASH_HEX_LEN + 1];

        hash_of(ha, a);
        hash_of(hb, b);
        assert_string_equal(ha, hb);
        /* Another history to the same value: change it and change it back. */
        json_object_set_new(c, "a", json_string("changed"));
        hash_of(hc, c);
        assert_string_not_equal(ha, hc);
        json_object_set(c, "a", json_object_get(a, "a"));
        hash_of(hc, c);
        assert_string_equal(ha, hc);
        json_decref(a);
        json_decref(b);
        json_decref(c);
    }
}

static void test_hash__types_and_values_are_told_apart(void **s)
{
    static const char *const texts[] = {"1",
                                        "1.0",
                                        "-0.0",
                                        "0.0",
                                        "0",
                                        "\"1\"",
                                        "true",
                                        "false",
                                        "null",
                                        "\"\"",
                                        "[]",
                                        "{}",
                                        "[[]]",
                                        "[{}]",
                                        "{\"\":{}}",
                                        "[1,2]",
                                        "[2,1]",
                                        "[[1],2]",
                                        "[1,[2]]",
                                        "{\"a\":1}",
                                        "{\"a\":[1]}",
                                        "[\"a\",1]",
                                        "{\"b\":1}",
                                        "9007199254740993",
                                        "9007199254740992.0"};
    size_t n = sizeof(texts) / sizeof(texts[0]);
    char(*hashes)[SYNCD_HASH_HEX_LEN + 1] = calloc(n, sizeof(*hashes));

    (void)s;
    for (size_t i = 0; i < n; i++) {
        json_t *v = parse(texts[i]);

        hash_of(hashes[i], v);
        for (size_t j = 0; j < i; j++)
            if (strcmp(hashes[i], hashes[j]) == 0)
                fail_msg("%s and %s hash alike", texts[i], texts[j]);
        json_decref(v);
    }
    free(hashes);
}

static void test_hash__matches_the_published_vectors(void **s)
{
    static const struct {
        const char *text, *hash;
    } cases[] = {
        {"{}",
         "82a81d11fc5474fa59392c61940351c1edb23613ee5bc2715d583b5f66d50f6e"},
        {"[]",
         "44254458438ecf1cf26d097b39fa6628066fc94b7d8cd1e21bf36be1f83a9a70"},
        {"null",
         "1b16b1df538ba12dc3f97edbb85caa7050d46c148134290feba80f8236c83db9"},
        {"true",
         "e3b98a4da31a127d4bde6e43033f66ba274cab0eb7eb1c70ec41402bf6273dd8"},
        {"1",
         "4cd9b7672d7fbee8fb51fb1e049f690342035f543a8efe734b7b5ffb0c154a45"},
        {"1.0",
         "514f50708d911ee3be7a357d60a6acfabc976189733df7b5eb9667bbcf5fa7e5"},
        {"-0.0",
         "1437d9a729ed50a8acd2d3322c3c482d3c40f625d321620b721d7e2b68105b4e"},
        {"\"caf\\u00e9\"",
         "a54a5be2ac9bbd41c79f6b00c7e9edb27651d0c58670c4de721e234eb9f8d54b"},
        {"{\"b\":[1,2.5,null],\"a\":{\"x\":\"y\"}}",
         "c57cf5154dfeed227fffaa8ea4d60b95c4d13744d563cfe783344c71d6b43473"}};
    json_t *big = json_object(), *list = json_array();
    char hex[SYNCD_HASH_HEX_LEN + 1];

    (void)s;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *v = parse(cases[i].text);

        hash_of(hex, v);
        if (strcmp(hex, cases[i].hash) != 0)
            fail_msg("%s hashes to %s", cases[i].text, hex);
        json_decref(v);
    }
    /* Chunked: {"k00000":{"i":0},...} of 1,000 members; [0,...,4999]. */
    for (int i = 0; i < 5000; i++) {
        char key[16];

        snprintf(key, sizeof(key), "k%05d", i);
        if (i < 1000)
            json_object_set_new(big, key, json_pack("{s:i}", "i", i));
        json_array_append_new(list, json_integer(i));
    }
    hash_of(hex, big);
    assert_string_equal(
        hex,
        "484cd9e3f90b4ca2edaffa95210a944dc3f6e6045b747487c1b141e5c8536bcd");
    hash_of(hex, list);
    assert_string_equal(
        hex,
        "1470b3d3eaa9f32dfc2355ab6a666aaac6e2905b41a33bf84e1193376894390e");
    json_decref(big);
    json_decref(list);
}

static void test_hash__legacy_hash_still_matches(void **s)
{
    json_t *v = parse("{\"b\":[1,2.5],\"a\":\"x\"}");
    char *text = canon(v);
    char legacy[SYNCD_HASH_HEX_LEN + 1], merkle[SYNCD_HASH_HEX_LEN + 1];

    (void)s;
    syncd_sha256_hex(legacy, text, strlen(text));
    hash_of(merkle, v);
    assert_string_not_equal(legacy, merkle);
    assert_true(syncd_json_hash_matches(legacy, v, NULL) == 1);
    assert_true(syncd_json_hash_matches(merkle, v, NULL) == 1);
    legacy[0] = legacy[0] == '0' ? '1' : '0';
    assert_int_equal(syncd_json_hash_matches(legacy, v, NULL), 0);
    free(text);
    json_decref(v);
}

static void test_htree__incremental_equals_fresh_for_every_op_kind(void **s)
{
    rng_t r = {0x7472656573ULL};
    size_t applied[6] = {0}, patches = 0;

    (void)s;
    for (int round = 0; round < 1000; round++) {
        json_t *doc = random_doc(&r), *patch = json_array();
        syncd_htree_t *t = NULL, *whole = NULL;

        assert_int_equal(syncd_htree_build(&t, doc, NULL), 0);
        assert_int_equal(syncd_htree_build(&whole, doc, NULL), 0);
        assert_tree_matches(t, doc, "a fresh tree");
        for (int k = 0; k < 4; k++) {
            int kind = (int)rng_below(&r, 6);
            json_t *op = random_op(&r, doc, kind), *one = json_array(), *out;
            syncd_error_t err;

            json_array_append(one, op);
            if (syncd_patch_apply(&out, doc, one, NULL) == 0) {
                syncd_error_clear(&err);
                if (syncd_htree_apply(t, one, &err) != 0)
                    fail_msg("round %d: %s", round, err.message);
                assert_tree_matches(
                    t, out, json_string_value(json_object_get(op, "op")));
                json_decref(doc);
                doc = out;
                json_array_append(patch, op);
                applied[kind]++;
            }
            json_decref(one);
            json_decref(op);
        }
        /* The same operations as one patch. */
        assert_int_equal(syncd_htree_apply(whole, patch, NULL), 0);
        assert_tree_matches(whole, doc, "a whole patch");
        patches += json_array_size(patch) > 1;
        syncd_htree_free(t);
        syncd_htree_free(whole);
        json_decref(patch);
        json_decref(doc);
    }
    for (int k = 0; k < 6; k++)
        if (applied[k] < 200)
            fail_msg("only %zu operations of kind %d applied", applied[k], k);
    print_message("%zu patches of 2-4 operations\n", patches);
    assert_true(patches > 500);
}

static void test_htree__follows_every_conformance_record(void **s)
{
    static const char *const files[] = {"json-patch-tests/tests.json",
                                        "json-patch-tests/spec_tests.json"};
    size_t checked = 0;

    (void)s;
    for (size_t f = 0; f < 2; f++) {
        json_t *records = load_testdata(files[f]), *rec;
        size_t i;

        json_array_foreach (records, i, rec) {
            json_t *doc = json_object_get(rec, "doc");
            json_t *patch = json_object_get(rec, "patch"), *out = NULL;
            syncd_htree_t *t = NULL;

            if (doc == NULL || patch == NULL ||
                json_is_true(json_object_get(rec, "disabled")) ||
                syncd_patch_apply(&out, doc, patch, NULL) != 0)
                continue;
            assert_int_equal(syncd_htree_build(&t, doc, NULL), 0);
            assert_int_equal(syncd_htree_apply(t, patch, NULL), 0);
            assert_tree_matches(t, out, files[f]);
            syncd_htree_free(t);
            json_decref(out);
            checked++;
        }
        json_decref(records);
    }
    assert_int_equal(checked, 74);
}

/* Applies patch to *doc and t; returns how many hashes t computed. */
static uint64_t hashes_for(syncd_htree_t *t, json_t **doc, const char *patch)
{
    json_t *p = parse(patch), *out = NULL;
    uint64_t before = syncd_htree_hash_count(t);

    assert_int_equal(syncd_patch_apply(&out, *doc, p, NULL), 0);
    assert_int_equal(syncd_htree_apply(t, p, NULL), 0);
    assert_tree_matches(t, out, patch);
    json_decref(p);
    json_decref(*doc);
    *doc = out;
    return syncd_htree_hash_count(t) - before;
}

static void test_htree__long_patches_equal_fresh(void **s)
{
    rng_t r = {0x6c6f6e67ULL};
    size_t ops = 0;

    (void)s;
    for (int round = 0; round < 100; round++) {
        json_t *doc = random_doc(&r);
        syncd_htree_t *t = NULL;

        /* Always a chunked container, for structural changes among its
         * stale entries. */
        json_object_set_new(
            doc, "big",
            big_container(&r, 65 + rng_below(&r, 400), (int)rng_below(&r, 2)));
        assert_int_equal(syncd_htree_build(&t, doc, NULL), 0);
        /* Patches one after another on the same tree: a hash or a mark
         * left behind by one shows in the next. */
        for (int p = 0; p < 4; p++) {
            json_t *patch = json_array(), *cur = json_incref(doc);
            size_t want = 8 + rng_below(&r, 40);

            while (json_array_size(patch) < want) {
                json_t *op = random_op(&r, cur, (int)rng_below(&r, 6));
                json_t *one = json_array(), *out;

                json_array_append(one, op);
                if (syncd_patch_apply(&out, cur, one, NULL) == 0) {
                    json_decref(cur);
                    cur = out;
                    json_array_append(patch, op);
                }
                json_decref(one);
                json_decref(op);
            }
            assert_int_equal(syncd_htree_apply(t, patch, NULL), 0);
            assert_tree_matches(t, cur, "a long patch");
            ops += json_array_size(patch);
            json_decref(patch);
            json_decref(doc);
            doc = cur;
        }
        syncd_htree_free(t);
        json_decref(doc);
    }
    print_message("%zu operations in 400 patches\n", ops);
}

/* Returns the operation replacing /o/k<member>/i by value. */
static json_t *replace_member(int member, int value)
{
    char path[64];

    snprintf(path, sizeof(path), "/o/k%05d/i", member);
    return json_pack("{s:s,s:s,s:i}", "op", "replace", "path", path, "value",
                     value);
}

/* Applies patch (stolen) to doc (stolen) and to t, its tree; asserts that
 * t then matches the result, which it returns. */
static json_t *apply_both(syncd_htree_t *t, json_t *doc, json_t *patch,
                          const char *what)
{
    json_t *out = NULL;

    assert_int_equal(syncd_patch_apply(&out, doc, patch, NULL), 0);
    assert_int_equal(syncd_htree_apply(t, patch, NULL), 0);
    assert_tree_matches(t, out, what);
    json_decref(patch);
    json_decref(doc);
    return out;
}

static void test_htree__a_patch_over_many_members_equals_fresh(void **s)
{
    rng_t r = {0x6d616e79ULL};
    json_t *doc = json_object(), *patch = json_array();
    syncd_htree_t *t = NULL;

    (void)s;
    json_object_set_new(doc, "o", big_container(&r, 1000, 1));
    assert_int_equal(syncd_htree_build(&t, doc, NULL), 0);
    /* More changed members than one container lists before it is rehashed
     * mid-patch, with members added and removed among them. */
    for (int i = 0; i < 330; i++) {
        char path[64];

        json_array_append_new(patch, replace_member(3 * i, -i));
        if (i % 7 == 0) {
            snprintf(path, sizeof(path), "/o/k%05d", 3 * i + 1);
            json_array_append_new(
                patch, json_pack("{s:s,s:s}", "op", "remove", "path", path));
        }
        if (i % 11 == 0) {
            snprintf(path, sizeof(path), "/o/k%05dn", 3 * i);
            json_array_append_new(patch,
                                  json_pack("{s:s,s:s,s:[i]}", "op", "add",
                                            "path", path, "value", i));
        }
    }
    doc = apply_both(t, doc, patch, "a patch over many members");
    /* Patches of n changed members for every n up to 300, so that one of
     * them ends right where a long list is rehashed. */
    for (int n = 1; n <= 300; n++) {
        patch = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(patch, replace_member(3 * i, n));
        doc = apply_both(t, doc, patch, "a patch of n members");
    }
    syncd_htree_free(t);
    json_decref(doc);
}

static void test_htree__a_patch_rehashes_a_path_once(void **s)
{
    rng_t r = {7};
    json_t *doc = json_object();
    syncd_htree_t *t = NULL;
    uint64_t one, four;

    (void)s;
    json_object_set_new(doc, "o", big_container(&r, 10000, 1));
    assert_int_equal(syncd_htree_build(&t, doc, NULL), 0);
    one = hashes_for(t, &doc,
                     "[{\"op\":\"replace\",\"path\":\"/o/k04000/i\","
                     "\"value\":-1}]");
    /* Four changes under one member: the member's value is hashed four
     * times, the path above it (member, chunks, root) once. */
    four = hashes_for(t, &doc,
                      "[{\"op\":\"replace\",\"path\":\"/o/k05000/i\","
                      "\"value\":-1},"
                      "{\"op\":\"replace\",\"path\":\"/o/k05000/w\","
                      "\"value\":\"x\"},"
                      "{\"op\":\"add\",\"path\":\"/o/k05000/y\","
                      "\"value\":2},"
                      "{\"op\":\"remove\",\"path\":\"/o/k05000/y\"}]");
    print_message("one change: %llu hashes; four under one member: %llu\n",
                  (unsigned long long)one, (unsigned long long)four);
    assert_true(four <= one + 4);
    syncd_htree_free(t);
    json_decref(doc);
}

static void test_htree__one_change_in_10k_rehashes_a_few_chunks(void **s)
{
    rng_t r = {42};
    json_t *doc = json_object();
    syncd_htree_t *t = NULL;
    uint64_t built, most = 0;
    static const char *const patches[] = {
        "[{\"op\":\"replace\",\"path\":\"/o/k05000/i\",\"value\":-1}]",
        "[{\"op\":\"add\",\"path\":\"/o/k05000x\",\"value\":1}]",
        "[{\"op\":\"remove\",\"path\":\"/o/k00007\"}]",
        "[{\"op\":\"replace\",\"path\":\"/l/5000/w\",\"value\":\"z\"}]",
        "[{\"op\":\"add\",\"path\":\"/l/5000\",\"value\":{}}]",
        "[{\"op\":\"remove\",\"path\":\"/l/9000\"}]",
        "[{\"op\":\"add\",\"path\":\"/l/-\",\"value\":[]}]",
        "[{\"op\":\"move\",\"from\":\"/l/3\",\"path\":\"/l/9998\"}]"};

    (void)s;
    json_object_set_new(doc, "o", big_container(&r, 10000, 1));
    json_object_set_new(doc, "l", big_container(&r, 10000, 0));
    assert_int_equal(syncd_htree_build(&t, doc, NULL), 0);
    built = syncd_htree_hash_count(t);
    assert_true(built > 60000);
    for (size_t i = 0; i < sizeof(patches) / sizeof(patches[0]); i++) {
        uint64_t n = hashes_for(t, &doc, patches[i]);

        print_message("%s: %llu hashes\n", patches[i], (unsigned long long)n);
        most = n > most ? n : most;
    }
    /* A level-0 chunk or two, one at each level above, the path: far from
     * the 10,000 entries a full rehash touches. */
    assert_true(most <= 40);
    syncd_htree_free(t);
    json_decref(doc);
}

/* ---- Narrowing a difference (doc/HASH.md "Narrowing") ------------------ */

/* A party of a narrowing test: a local copy, and what was asked of it. */
typedef struct party {
    const json_t *doc;
    syncd_htree_t *tree; /* NULL: each listing hashes doc again */
    size_t listings, items, bytes;
} party_t;

static int fetch_local(json_t **out, const char *path, size_t path_len,
                       size_t level, size_t from, size_t count, void *arg,
                       syncd_error_t *err)
{
    party_t *p = arg;
    int rc = p->tree != NULL
                 ? syncd_htree_list_tree(out, p->tree, path, path_len, level,
                                         from, count, err)
                 : syncd_htree_list(out, p->doc, path, path_len, level, from,
                                    count, err);

    if (rc == 0) {
        char *text = json_dumps(*out, JSON_COMPACT);

        p->listings++;
        p->items += json_array_size(json_object_get(*out, "items"));
        p->bytes += strlen(text);
        free(text);
    }
    return rc;
}

/* The reference: two values are equal when their content hashes are. */
static int same_value(const json_t *a, const json_t *b)
{
    char x[SYNCD_HASH_HEX_LEN + 1], y[SYNCD_HASH_HEX_LEN + 1];

    assert_int_equal(syncd_json_hash(x, a, NULL), 0);
    assert_int_equal(syncd_json_hash(y, b, NULL), 0);
    return strcmp(x, y) == 0;
}

static char kind_letter(const json_t *v)
{
    return json_is_object(v) ? 'o' : json_is_array(v) ? 'a' : 's';
}

typedef struct key {
    const char *k;
    size_t len;
} keyref_t;

static int key_order(const void *pa, const void *pb)
{
    const keyref_t *a = pa, *b = pb;
    int c = memcmp(a->k, b->k, a->len < b->len ? a->len : b->len);

    return c != 0 ? c : (a->len > b->len) - (a->len < b->len);
}

static void ref_add(json_t *paths, const char *p, size_t plen)
{
    json_array_append_new(paths, json_stringn(p, plen));
}

/* The reference narrowing, a plain recursive diff of the two values
 * written from doc/HASH.md "Narrowing": appends to paths the pointers of
 * the smallest differing subtrees under p (plen bytes, room for 4096). */
static void ref_narrow(json_t *paths, char *p, size_t plen, const json_t *a,
                       const json_t *b)
{
    char idx[24];

    if (same_value(a, b))
        return;
    if (kind_letter(a) != kind_letter(b) || kind_letter(a) == 's') {
        ref_add(paths, p, plen);
        return;
    }
    if (json_is_object(a)) {
        size_t n = json_object_size(a) + json_object_size(b), m = 0, len;
        keyref_t *keys = malloc((n + 1) * sizeof(*keys));
        const char *k;
        json_t *v;

        json_object_keylen_foreach ((json_t *)a, k, len, v)
            keys[m++] = (keyref_t){k, len};
        json_object_keylen_foreach ((json_t *)b, k, len, v)
            if (json_object_getn(a, k, len) == NULL)
                keys[m++] = (keyref_t){k, len};
        qsort(keys, m, sizeof(*keys), key_order);
        for (size_t i = 0; i < m; i++) {
            json_t *va = json_object_getn(a, keys[i].k, keys[i].len);
            json_t *vb = json_object_getn(b, keys[i].k, keys[i].len);
            size_t q = plen;

            ptr_push(p, &q, keys[i].k, keys[i].len);
            if (va != NULL && vb != NULL)
                ref_narrow(paths, p, q, va, vb);
            else
                ref_add(paths, p, q);
        }
        free(keys);
        return;
    }
    size_t la = json_array_size(a), lb = json_array_size(b), pre = 0, suf = 0;
    size_t lmin = la < lb ? la : lb;

    while (pre < lmin &&
           same_value(json_array_get(a, pre), json_array_get(b, pre)))
        pre++;
    while (suf < lmin && same_value(json_array_get(a, la - 1 - suf),
                                    json_array_get(b, lb - 1 - suf)))
        suf++;
    if (suf > lmin - pre)
        suf = lmin - pre;
    if (la - pre - suf != lb - pre - suf) {
        size_t n = la > lb ? la - pre - suf : lb - pre - suf;

        for (size_t i = pre; i < pre + n; i++) {
            size_t q = plen;

            snprintf(idx, sizeof(idx), "%zu", i);
            ptr_push(p, &q, idx, strlen(idx));
            ref_add(paths, p, q);
        }
        return;
    }
    for (size_t i = pre; i < la - suf; i++) {
        size_t q = plen;

        snprintf(idx, sizeof(idx), "%zu", i);
        ptr_push(p, &q, idx, strlen(idx));
        ref_narrow(paths, p, q, json_array_get(a, i), json_array_get(b, i));
    }
}

/* Narrows a against b locally (b's listings from its hash tree when
 * b_tree is set, else hashed again each time); *out gets the paths. */
static int narrow_local(json_t **out, int *truncated, const json_t *a,
                        const json_t *b, int b_tree, size_t max, party_t pa[2])
{
    syncd_error_t err;
    int rc;

    memset(pa, 0, 2 * sizeof(*pa));
    pa[0].doc = a;
    pa[1].doc = b;
    assert_int_equal(syncd_htree_build(&pa[0].tree, a, NULL), 0);
    if (b_tree)
        assert_int_equal(syncd_htree_build(&pa[1].tree, b, NULL), 0);
    syncd_error_clear(&err);
    rc = syncd_htree_narrow(out, truncated, fetch_local, &pa[0], fetch_local,
                            &pa[1], max, &err);
    if (rc != 0)
        fail_msg("narrow failed: %s", err.message);
    syncd_htree_free(pa[0].tree);
    syncd_htree_free(pa[1].tree);
    return rc;
}

static void assert_same_paths(const json_t *got, const json_t *want, int round)
{
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_COMPACT),
             *w = json_dumps(want, JSON_COMPACT);

        fail_msg("round %d: narrowed to %s, the reference %s", round, g, w);
    }
}

static void
test_htree_narrow__random_edits_name_exactly_the_changed_subtrees(void **s)
{
    rng_t r = {0x6e6172726f77ULL};
    size_t cases = 0, chunked = 0, empty = 0;
    party_t pa[2];

    (void)s;
    for (int round = 0; round < 1000; round++) {
        json_t *a = random_doc(&r), *b = json_deep_copy(a), *got, *want;
        char p[4096];
        int truncated, nops = 1 + (int)rng_below(&r, 4);

        /* Edits on b: random operations anywhere, and in one of three
         * rounds an element added or removed in the big list, so that
         * chunks shift. */
        for (int k = 0; k < nops; k++) {
            json_t *op = random_op(&r, b, (int)rng_below(&r, 5)),
                   *one = json_array(), *out;

            json_array_append_new(one, op);
            if (syncd_patch_apply(&out, b, one, NULL) == 0) {
                json_decref(b);
                b = out;
            }
            json_decref(one);
        }
        if (json_array_size(json_object_get(b, "big")) > 0 && round % 3 == 0) {
            json_t *big = json_object_get(b, "big");
            size_t at = rng_below(&r, json_array_size(big));

            if (rng_below(&r, 2))
                json_array_remove(big, at);
            else
                json_array_insert_new(big, at, json_integer(round));
        }
        want = json_array();
        ref_narrow(want, p, 0, a, b);
        narrow_local(&got, &truncated, a, b, round % 4 != 0, 100000, pa);
        assert_same_paths(got, want, round);
        assert_false(truncated);
        chunked += json_object_get(a, "big") != NULL;
        empty += json_array_size(want) == 0;
        json_decref(got);
        /* The same narrowing bounded to 2 paths: the first 2, truncated
         * when there are more. */
        narrow_local(&got, &truncated, a, b, 1, 2, pa);
        assert_int_equal(truncated, json_array_size(want) > 2);
        while (json_array_size(want) > 2)
            json_array_remove(want, 2);
        assert_same_paths(got, want, round);
        json_decref(got);
        json_decref(want);
        json_decref(a);
        json_decref(b);
        cases++;
    }
    print_message("%zu cases, %zu with a big container, %zu equal\n", cases,
                  chunked, empty);
    assert_true(chunked > 150);
    assert_true(empty < cases / 4);
}

static void test_htree_narrow__one_change_in_10k_lists_a_few_chunks(void **s)
{
    rng_t r = {7};
    json_t *a = json_object(), *b, *got;
    static const char *const patches[] = {
        "[{\"op\":\"replace\",\"path\":\"/o/k05000/i\",\"value\":-1}]",
        "[{\"op\":\"add\",\"path\":\"/o/k05000x\",\"value\":1}]",
        "[{\"op\":\"remove\",\"path\":\"/o/k00007\"}]",
        "[{\"op\":\"replace\",\"path\":\"/l/5000/w\",\"value\":\"z\"}]",
        "[{\"op\":\"add\",\"path\":\"/l/5000\",\"value\":{}}]",
        "[{\"op\":\"remove\",\"path\":\"/l/9000\"}]"};
    static const char *const want[] = {"[\"/o/k05000/i\"]", "[\"/o/k05000x\"]",
                                       "[\"/o/k00007\"]",   "[\"/l/5000/w\"]",
                                       "[\"/l/5000\"]",     "[\"/l/9000\"]"};
    party_t pa[2];
    int truncated;

    (void)s;
    json_object_set_new(a, "o", big_container(&r, 10000, 1));
    json_object_set_new(a, "l", big_container(&r, 10000, 0));
    for (size_t i = 0; i < sizeof(patches) / sizeof(patches[0]); i++) {
        json_t *p = parse(patches[i]), *w = parse(want[i]);

        assert_int_equal(syncd_patch_apply(&b, a, p, NULL), 0);
        narrow_local(&got, &truncated, a, b, 1, 100, pa);
        assert_same_paths(got, w, (int)i);
        print_message("%s: %zu listings, %zu items, %zu bytes\n", patches[i],
                      pa[0].listings + pa[1].listings,
                      pa[0].items + pa[1].items, pa[0].bytes + pa[1].bytes);
        /* A few chunks per level on each side, not 20,000 entries. */
        assert_true(pa[0].items + pa[1].items < 2000);
        json_decref(got);
        json_decref(w);
        json_decref(p);
        json_decref(b);
    }
    json_decref(a);
}

static void test_htree_list__bad_requests_fail_cleanly(void **s)
{
    json_t *doc = parse("{\"a\":[1,{\"b\":2}],\"s\":\"x\"}"), *out = NULL;
    syncd_error_t err;

    (void)s;
    syncd_error_clear(&err);
    assert_int_equal(
        syncd_htree_list(&out, doc, "/a/7", 4, SYNCD_HTREE_TOP, 0, 10, &err),
        SYNCD_ENOTFOUND);
    assert_null(out);
    assert_int_equal(
        syncd_htree_list(&out, doc, "a", 1, SYNCD_HTREE_TOP, 0, 10, NULL),
        SYNCD_EINVAL);
    assert_int_equal(syncd_htree_list(&out, doc, "", 0, 3, 0, 10, NULL),
                     SYNCD_EINVAL);
    assert_int_equal(syncd_htree_list(&out, doc, "", 0, 0, 9, 10, NULL),
                     SYNCD_EINVAL);
    assert_int_equal(
        syncd_htree_list(&out, doc, "/s", 2, SYNCD_HTREE_TOP, 0, 10, NULL), 0);
    assert_string_equal(json_string_value(json_object_get(out, "type")), "s");
    assert_null(json_object_get(out, "items"));
    json_decref(out);
    assert_int_equal(
        syncd_htree_list(&out, doc, "/a", 2, SYNCD_HTREE_TOP, 1, 10, NULL), 0);
    assert_int_equal(json_integer_value(json_object_get(out, "size")), 2);
    assert_int_equal(json_array_size(json_object_get(out, "items")), 1);
    assert_string_equal(
        json_string_value(json_array_get(
            json_array_get(json_object_get(out, "items"), 0), 1)),
        "o");
    json_decref(out);
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_patch_conformance__every_tests_json_record_behaves),
        cmocka_unit_test(
            test_patch_conformance__every_spec_tests_record_behaves),
        cmocka_unit_test(
            test_merge_conformance__every_record_applies_and_roundtrips),
        cmocka_unit_test(
            test_pointer_conformance__every_record_resolves_or_fails),
        cmocka_unit_test(test_patch_diff__random_pairs_apply_back_to_target),
        cmocka_unit_test(
            test_patch_apply__failed_random_patch_leaves_input_unchanged),
        cmocka_unit_test(
            test_patch_diff_touched__conformance_edits_give_the_full_diffs_effect),
        cmocka_unit_test(
            test_patch_diff_touched__random_edits_give_the_full_diffs_effect),
        cmocka_unit_test(
            test_patch_diff_touched__compares_only_the_touched_member),
        cmocka_unit_test(
            test_patch_diff__reports_nested_change_at_deepest_path),
        cmocka_unit_test(test_patch_diff__equal_documents_give_empty_patch),
        cmocka_unit_test(
            test_patch_diff__integer_and_real_are_different_values),
        cmocka_unit_test(test_patch_diff__array_edits_account_for_earlier_ops),
        cmocka_unit_test(test_patch_diff__insert_in_50k_array_is_one_add),
        cmocka_unit_test(
            test_patch_diff__field_change_in_50k_array_is_one_replace),
        cmocka_unit_test(
            test_patch_diff__huge_edit_distance_replaces_whole_array),
        cmocka_unit_test(
            test_patch_apply__ops_missing_members_fail_with_EPATCH),
        cmocka_unit_test(test_patch_apply__wrong_types_fail_with_EPATCH),
        cmocka_unit_test(test_patch_apply__malformed_pointers_fail_with_EPATCH),
        cmocka_unit_test(test_patch_apply__names_the_failing_operation),
        cmocka_unit_test(test_patch_apply__failing_test_op_gives_ECONFLICT),
        cmocka_unit_test(test_patch_apply__test_op_compares_by_rfc_equality),
        cmocka_unit_test(test_patch_apply__move_into_own_child_fails),
        cmocka_unit_test(test_patch_validate__checks_without_applying),
        cmocka_unit_test(test_patch__100k_nested_arrays_fail_cleanly),
        cmocka_unit_test(
            test_canonical_and_hash__nesting_bound_is_that_of_the_depth_check),
        cmocka_unit_test(test_patch_apply__result_nesting_past_the_limit_fails),
        cmocka_unit_test(
            test_merge_diff__null_member_fails_with_EPATCH_naming_path),
        cmocka_unit_test(test_merge_diff__removed_member_becomes_null),
        cmocka_unit_test(
            test_patch_apply_ex__copy_bomb_fails_at_the_first_op_past_the_limit),
        cmocka_unit_test(
            test_patch_apply_ex__size_bound_is_exact_for_every_op_kind),
        cmocka_unit_test(
            test_patch_apply_ex__more_ops_than_the_limit_fail_before_any),
        cmocka_unit_test(
            test_patch_apply_ex__copies_past_4_times_the_limit_fail),
        cmocka_unit_test(
            test_patch_limits__a_given_doc_size_is_taken_as_the_documents),
        cmocka_unit_test(test_merge_apply_ex__result_past_the_limit_is_ETOOBIG),
        cmocka_unit_test(test_ptr__parse_and_format_roundtrip_escapes),
        cmocka_unit_test(test_ptr__malformed_pointers_fail_with_EINVAL),
        cmocka_unit_test(test_ptr__fragment_decodes_percent_nul),
        cmocka_unit_test(
            test_json_loadb__edge_cases_load_as_jansson_loads_them),
        cmocka_unit_test(
            test_json_loadb__deep_nesting_loads_as_jansson_loads_it),
        cmocka_unit_test(
            test_json_loadb__random_documents_load_as_jansson_loads_them),
        cmocka_unit_test(test_canonical__sorts_keys_whatever_the_order),
        cmocka_unit_test(test_canonical__a_size_hint_changes_nothing_written),
        cmocka_unit_test(test_compact__writes_what_json_dumps_writes),
        cmocka_unit_test(
            test_patch_in_place__conformance_records_match_copying_apply),
        cmocka_unit_test(
            test_patch_in_place__failing_middle_op_undoes_everything),
        cmocka_unit_test(test_patch_in_place__limits_fail_and_undo),
        cmocka_unit_test(
            test_patch_shared__conformance_records_match_copying_apply),
        cmocka_unit_test(
            test_patch_shared__random_patches_match_copying_apply_and_spare_the_doc),
        cmocka_unit_test(test_patch_shared__shares_what_the_patch_leaves),
        cmocka_unit_test(
            test_merge_shared__matches_copying_merge_and_spares_the_doc),
        cmocka_unit_test(
            test_compact_size__equals_dumped_length_and_stops_at_cap),
        cmocka_unit_test(
            test_canonical__strings_escape_each_byte_json_requires),
        cmocka_unit_test(test_canonical__keys_with_nul_sort_by_bytes),
        cmocka_unit_test(test_canonical__integers_are_exact),
        cmocka_unit_test(test_canonical__integers_match_printf),
        cmocka_unit_test(test_canonical__objects_of_every_size_sort_their_keys),
        cmocka_unit_test(test_canonical__reals_roundtrip_and_stay_reals),
        cmocka_unit_test(test_sha256__matches_fips_180_2_vectors),
        cmocka_unit_test(
            test_json_equal__numbers_by_value_objects_ignore_order),
        cmocka_unit_test(
            test_hash__same_value_same_hash_whatever_the_key_order),
        cmocka_unit_test(test_hash__types_and_values_are_told_apart),
        cmocka_unit_test(test_hash__matches_the_published_vectors),
        cmocka_unit_test(test_hash__legacy_hash_still_matches),
        cmocka_unit_test(
            test_htree__incremental_equals_fresh_for_every_op_kind),
        cmocka_unit_test(test_htree__follows_every_conformance_record),
        cmocka_unit_test(test_htree__long_patches_equal_fresh),
        cmocka_unit_test(test_htree__a_patch_over_many_members_equals_fresh),
        cmocka_unit_test(test_htree__a_patch_rehashes_a_path_once),
        cmocka_unit_test(test_htree__one_change_in_10k_rehashes_a_few_chunks),
        cmocka_unit_test(
            test_htree_narrow__random_edits_name_exactly_the_changed_subtrees),
        cmocka_unit_test(
            test_htree_narrow__one_change_in_10k_lists_a_few_chunks),
        cmocka_unit_test(test_htree_list__bad_requests_fail_cleanly),
    };

    /* SYNCD_TEST_FILTER=<glob> runs only the matching tests. */
    if (getenv("SYNCD_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("SYNCD_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
