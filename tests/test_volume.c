/* test_volume.c - the volume library (include/syncd/volume.h) on real
 * folders and real .tar / .tar.gz archives written with libarchive.
 *
 * Each case makes its volumes in a fresh temp dir, scans them and checks
 * the contract: the VolumeCollection document, the volume digest (pinned
 * byte for byte by an independently computed vector), and one problem per
 * failed check naming the volume and the file; limits fail with
 * SYNCD_ETOOBIG naming the flag.
 */
#include <archive.h>
#include <archive_entry.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "servers.h"
#include "syncd/volume.h"

typedef struct fixture {
    char dir[256];
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    assert_int_equal(syncd_test_tmpdir(f->dir, sizeof(f->dir), "volume"), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;

    syncd_test_rmtree(f->dir);
    free(f);
    return 0;
}

/* Returns "<dir>/<rel>" in a static buffer of the caller's. */
static const char *at(char *buf, size_t n, const char *dir, const char *rel)
{
    assert_true(snprintf(buf, n, "%s/%s", dir, rel) < (int)n);
    return buf;
}

/* Writes text to dir/rel, making the folders on the way. */
static void write_file(const char *dir, const char *rel, const char *text)
{
    char path[1024];
    FILE *fp;

    at(path, sizeof(path), dir, rel);
    for (char *p = path + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0755);
            *p = '/';
        }
    }
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* Makes the volume dir/name with a.txt, sub/b.txt and an empty z, and its
 * index with syncd_volume_init(). */
static void make_volume(const char *dir, const char *name)
{
    char vol[512];
    syncd_error_t err;

    at(vol, sizeof(vol), dir, name);
    write_file(vol, "a.txt", "hello\n");
    write_file(vol, "sub/b.txt", "world\n");
    write_file(vol, "z", "");
    syncd_error_clear(&err);
    assert_int_equal(syncd_volume_init(vol, name, NULL, &err), 0);
}

/* Scans dir with opts (NULL: defaults); returns the problems (the caller
 * frees them) and *doc. */
static json_t *scan(json_t **doc, const char *dir,
                    const syncd_volume_options_t *opts)
{
    json_t *problems = NULL;
    syncd_error_t err;

    syncd_error_clear(&err);
    assert_int_equal(
        syncd_volume_scan(doc, &problems, NULL, dir, "refs", opts, &err), 0);
    assert_non_null(*doc);
    return problems;
}

/* Asserts that problems holds exactly one problem, of that kind, volume
 * and file. */
static void assert_one_problem(json_t *problems, const char *kind,
                               const char *volume, const char *file)
{
    json_t *p = json_array_get(problems, 0);
    const char *msg = json_string_value(json_object_get(p, "message"));
    char want[256];

    if (json_array_size(problems) != 1) {
        char *text = json_dumps(problems, 0);

        print_error("problems: %s\n", text);
        free(text);
    }
    assert_int_equal(json_array_size(problems), 1);
    assert_string_equal(json_string_value(json_object_get(p, "problem")), kind);
    assert_string_equal(json_string_value(json_object_get(p, "volume")),
                        volume);
    assert_string_equal(json_string_value(json_object_get(p, "file")), file);
    snprintf(want, sizeof(want), "volume %s: file %s: ", volume, file);
    assert_non_null(msg);
    assert_true(strncmp(msg, want, strlen(want)) == 0);
}

/* The digest of make_volume()'s volume, computed by a separate program
 * from the construction of volume/hash.c. */
#define HG38_DIGEST                                                            \
    "sha256:0fe33971782adc35bdc696528f8ca1438c2a3c16b4dd52a06bb1f5f354ef3b22"

static void test_volume_scan__good_folder_gives_the_document(void **state)
{
    fixture_t *f = *state;
    json_t *doc, *problems, *vol;

    make_volume(f->dir, "hg38");
    make_volume(f->dir, "mm10");
    problems = scan(&doc, f->dir, NULL);
    assert_int_equal(json_array_size(problems), 0);
    assert_string_equal(json_string_value(json_object_get(doc, "kind")),
                        "VolumeCollection");
    assert_string_equal(json_string_value(json_object_get(doc, "name")),
                        "refs");
    vol = json_object_get(json_object_get(doc, "volumes"), "hg38");
    assert_string_equal(json_string_value(json_object_get(vol, "digest")),
                        HG38_DIGEST);
    assert_string_equal(json_string_value(json_object_get(vol, "path")),
                        "hg38");
    assert_int_equal(json_integer_value(json_object_get(vol, "size")), 12);
    assert_int_equal(json_integer_value(json_object_get(vol, "files")), 3);
    assert_non_null(json_string_value(json_object_get(vol, "updated")));
    assert_int_equal(json_object_size(json_object_get(doc, "volumes")), 2);
    json_decref(doc);
    json_decref(problems);
}

static void test_volume_scan__one_volume_folder_is_the_volume(void **state)
{
    fixture_t *f = *state;
    char vol[512];
    json_t *doc, *problems, *v;

    make_volume(f->dir, "hg38");
    problems = scan(&doc, at(vol, sizeof(vol), f->dir, "hg38"), NULL);
    assert_int_equal(json_array_size(problems), 0);
    v = json_object_get(json_object_get(doc, "volumes"), "hg38");
    assert_string_equal(json_string_value(json_object_get(v, "digest")),
                        HG38_DIGEST);
    json_decref(doc);
    json_decref(problems);
}

static void test_volume_scan__missing_file_is_named(void **state)
{
    fixture_t *f = *state;
    char path[512];
    json_t *doc, *problems;

    make_volume(f->dir, "hg38");
    unlink(at(path, sizeof(path), f->dir, "hg38/sub/b.txt"));
    problems = scan(&doc, f->dir, NULL);
    assert_one_problem(problems, "missing", "hg38", "sub/b.txt");
    assert_int_equal(json_object_size(json_object_get(doc, "volumes")), 0);
    json_decref(doc);
    json_decref(problems);
}

static void test_volume_scan__wrong_size_is_named(void **state)
{
    fixture_t *f = *state;
    char vol[512];
    json_t *doc, *problems;

    make_volume(f->dir, "hg38");
    write_file(at(vol, sizeof(vol), f->dir, "hg38"), "a.txt", "hello!!\n");
    problems = scan(&doc, f->dir, NULL);
    assert_one_problem(problems, "size", "hg38", "a.txt");
    json_decref(doc);
    json_decref(problems);
}

static void test_volume_scan__wrong_digest_is_named(void **state)
{
    fixture_t *f = *state;
    char vol[512];
    json_t *doc, *problems;

    make_volume(f->dir, "hg38");
    write_file(at(vol, sizeof(vol), f->dir, "hg38"), "sub/b.txt", "WORLD\n");
    problems = scan(&doc, f->dir, NULL);
    assert_one_problem(problems, "digest", "hg38", "sub/b.txt");
    json_decref(doc);
    json_decref(problems);
}

static void test_volume_scan__undeclared_file_is_named(void **state)
{
    fixture_t *f = *state;
    char vol[512];
    json_t *doc, *problems;

    make_volume(f->dir, "hg38");
    write_file(at(vol, sizeof(vol), f->dir, "hg38"), "sub/new.txt", "x");
    problems = scan(&doc, f->dir, NULL);
    assert_one_problem(problems, "extra", "hg38", "sub/new.txt");
    json_decref(doc);
    json_decref(problems);
}

static void
test_volume_scan__symlink_leaving_the_volume_is_refused(void **state)
{
    fixture_t *f = *state;
    char link[512], inside[512];
    json_t *doc, *problems;

    make_volume(f->dir, "hg38");
    write_file(f->dir, ".secret", "outside\n");
    assert_int_equal(
        symlink("../.secret", at(link, sizeof(link), f->dir, "hg38/leak")), 0);
    problems = scan(&doc, f->dir, NULL);
    assert_one_problem(problems, "symlink", "hg38", "leak");
    json_decref(doc);
    json_decref(problems);
    /* A symlink that stays inside is hashed like its target. */
    unlink(link);
    unlink(at(inside, sizeof(inside), f->dir, "hg38/z"));
    assert_int_equal(symlink("sub/b.txt", link), 0);
    assert_int_equal(symlink("leak", inside), 0);
    problems = scan(&doc, f->dir, NULL);
    assert_int_equal(json_array_size(problems), 2); /* z's size, leak extra */
    json_decref(doc);
    json_decref(problems);
}

/* Rewrites dir/hg38's index with its first file's path set to path. */
static void set_first_path(const char *dir, const char *path)
{
    char index[512];
    json_t *idx;

    at(index, sizeof(index), dir, "hg38/" SYNCD_VOLUME_INDEX);
    idx = json_load_file(index, 0, NULL);
    assert_non_null(idx);
    json_object_set_new(json_array_get(json_object_get(idx, "files"), 0),
                        "path", json_string(path));
    assert_int_equal(json_dump_file(idx, index, 0), 0);
    json_decref(idx);
}

static void test_volume_scan__dotdot_in_the_index_is_refused(void **state)
{
    fixture_t *f = *state;
    json_t *doc, *problems;

    make_volume(f->dir, "hg38");
    set_first_path(f->dir, "sub/../../etc/passwd");
    problems = scan(&doc, f->dir, NULL);
    assert_one_problem(problems, "path", "hg38", "sub/../../etc/passwd");
    json_decref(doc);
    json_decref(problems);
}

/* One entry of a test archive: a file with data, or a symlink; an
 * archive_only file is left out of the index. */
typedef struct entry {
    const char *name;
    const char *data;
    const char *symlink;
    int archive_only;
} entry_t;

/* Writes the archive path (gzip-compressed when gz) holding the entries,
 * then the index that syncd_volume_init() makes for the regular ones. */
static void write_archive(const char *path, int gz, const char *work,
                          const entry_t *entries, size_t n)
{
    struct archive *a = archive_write_new();
    char index[512], *text;
    syncd_error_t err;
    json_t *idx;

    for (size_t i = 0; i < n; i++) {
        if (entries[i].data != NULL && !entries[i].archive_only)
            write_file(work, entries[i].name, entries[i].data);
    }
    syncd_error_clear(&err);
    assert_int_equal(syncd_volume_init(work, "ce11", NULL, &err), 0);
    idx = json_load_file(at(index, sizeof(index), work, SYNCD_VOLUME_INDEX), 0,
                         NULL);
    text = json_dumps(idx, 0);
    json_decref(idx);
    archive_write_set_format_pax_restricted(a);
    if (gz)
        archive_write_add_filter_gzip(a);
    assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
    for (size_t i = 0; i <= n; i++) {
        struct archive_entry *e = archive_entry_new();
        const char *name = i < n ? entries[i].name : "./" SYNCD_VOLUME_INDEX;
        const char *data = i < n ? entries[i].data : text;

        archive_entry_set_pathname(e, name);
        archive_entry_set_perm(e, 0644);
        if (i < n && entries[i].symlink != NULL) {
            archive_entry_set_filetype(e, AE_IFLNK);
            archive_entry_set_symlink(e, entries[i].symlink);
            archive_entry_set_size(e, 0);
        } else {
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_size(e, (la_int64_t)strlen(data));
        }
        assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
        if (i == n || entries[i].symlink == NULL)
            archive_write_data(a, data, strlen(data));
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
    free(text);
}

static void test_volume_scan__archives_match_their_folder(void **state)
{
    fixture_t *f = *state;
    static const entry_t entries[] = {
        {"a.txt", "hello\n", NULL},
        {"sub/b.txt", "world\n", NULL},
        {"z", "", NULL},
    };
    char vols[512], work[512], path[512];
    json_t *doc, *problems, *v;

    mkdir(at(vols, sizeof(vols), f->dir, "vols"), 0755);
    write_archive(at(path, sizeof(path), vols, "ce11.tar.gz"), 1,
                  at(work, sizeof(work), f->dir, "work1"), entries, 3);
    problems = scan(&doc, vols, NULL);
    assert_int_equal(json_array_size(problems), 0);
    v = json_object_get(json_object_get(doc, "volumes"), "ce11");
    assert_string_equal(json_string_value(json_object_get(v, "digest")),
                        HG38_DIGEST);
    assert_string_equal(json_string_value(json_object_get(v, "path")),
                        "ce11.tar.gz");
    json_decref(doc);
    json_decref(problems);
    /* A plain .tar, scanned as the one volume. */
    write_archive(at(path, sizeof(path), f->dir, "ce11.tar"), 0,
                  at(work, sizeof(work), f->dir, "work2"), entries, 3);
    problems = scan(&doc, path, NULL);
    assert_int_equal(json_array_size(problems), 0);
    v = json_object_get(json_object_get(doc, "volumes"), "ce11");
    assert_string_equal(json_string_value(json_object_get(v, "digest")),
                        HG38_DIGEST);
    json_decref(doc);
    json_decref(problems);
}

static void test_volume_scan__dotdot_in_an_archive_is_refused(void **state)
{
    fixture_t *f = *state;
    static const entry_t entries[] = {
        {"a.txt", "hello\n", NULL, 0},
        {"../evil.txt", "evil", NULL, 1},
    };
    char path[512], work[512];
    json_t *doc, *problems;

    write_archive(at(path, sizeof(path), f->dir, "ce11.tar.gz"), 1,
                  at(work, sizeof(work), f->dir, "work"), entries, 2);
    problems = scan(&doc, path, NULL);
    assert_one_problem(problems, "path", "ce11.tar.gz", "../evil.txt");
    assert_int_equal(json_object_size(json_object_get(doc, "volumes")), 0);
    json_decref(doc);
    json_decref(problems);
}

static void
test_volume_scan__symlink_leaving_an_archive_is_refused(void **state)
{
    fixture_t *f = *state;
    static const entry_t entries[] = {
        {"a.txt", "hello\n", NULL},
        {"sub/leak", NULL, "../../etc/passwd"},
    };
    char path[512], work[512];
    json_t *doc, *problems;

    write_archive(at(path, sizeof(path), f->dir, "ce11.tar"), 0,
                  at(work, sizeof(work), f->dir, "work"), entries, 2);
    problems = scan(&doc, path, NULL);
    assert_one_problem(problems, "symlink", "ce11.tar", "sub/leak");
    json_decref(doc);
    json_decref(problems);
}

/* Scans dir with one limit set and checks that it fails naming flag. */
static void assert_limit(const char *dir, syncd_volume_options_t *opts,
                         const char *flag)
{
    json_t *doc = NULL, *problems = NULL;
    syncd_error_t err;

    syncd_error_clear(&err);
    assert_int_equal(
        syncd_volume_scan(&doc, &problems, NULL, dir, "refs", opts, &err),
        SYNCD_ETOOBIG);
    assert_null(doc);
    assert_non_null(strstr(err.message, flag));
    assert_non_null(strstr(err.message, "volume hg38: file "));
}

static void test_volume_scan__limits_fail_naming_the_flag(void **state)
{
    fixture_t *f = *state;
    syncd_volume_options_t opts;

    make_volume(f->dir, "hg38");
    syncd_volume_options_init(&opts);
    opts.max_files = 2;
    assert_limit(f->dir, &opts, "--max-files 2");
    syncd_volume_options_init(&opts);
    opts.max_depth = 1;
    assert_limit(f->dir, &opts, "--max-depth 1");
    syncd_volume_options_init(&opts);
    opts.max_bytes = 11;
    assert_limit(f->dir, &opts, "--max-bytes 11");
    syncd_volume_options_init(&opts);
    opts.max_files = 3;
    opts.max_depth = 2;
    opts.max_bytes = 12;
    json_t *doc, *problems = scan(&doc, f->dir, &opts);
    assert_int_equal(json_array_size(problems), 0);
    json_decref(doc);
    json_decref(problems);
}

static void test_volume_init__round_trip_and_no_overwrite(void **state)
{
    fixture_t *f = *state;
    char vol[512], index[512];
    syncd_error_t err;
    json_t *idx, *doc, *problems;
    struct stat before, after;

    make_volume(f->dir, "hg38");
    at(vol, sizeof(vol), f->dir, "hg38");
    idx = json_load_file(at(index, sizeof(index), vol, SYNCD_VOLUME_INDEX), 0,
                         NULL);
    assert_non_null(idx);
    assert_string_equal(json_string_value(json_object_get(idx, "name")),
                        "hg38");
    assert_int_equal(json_array_size(json_object_get(idx, "files")), 3);
    assert_string_equal(
        json_string_value(json_object_get(
            json_array_get(json_object_get(idx, "files"), 0), "digest")),
        "sha256:"
        "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03");
    json_decref(idx);
    problems = scan(&doc, vol, NULL);
    assert_int_equal(json_array_size(problems), 0);
    json_decref(doc);
    json_decref(problems);
    stat(index, &before);
    syncd_error_clear(&err);
    assert_int_equal(syncd_volume_init(vol, NULL, NULL, &err), SYNCD_EEXISTS);
    assert_non_null(strstr(err.message, "already exists"));
    stat(index, &after);
    assert_int_equal(before.st_size, after.st_size);
    assert_int_equal(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
}

static void test_volume_scan__cache_skips_unchanged_files(void **state)
{
    fixture_t *f = *state;
    syncd_volume_options_t opts;
    json_t *doc, *problems, *cache;
    char vol[512], path[512];
    struct stat st;
    struct timespec times[2];

    make_volume(f->dir, "hg38");
    syncd_error_t err;
    syncd_error_clear(&err);
    assert_int_equal(
        syncd_volume_scan(&doc, &problems, &cache, f->dir, "refs", NULL, &err),
        0);
    json_decref(doc);
    json_decref(problems);
    /* Same size, same mtime: the cache's hash stands. */
    at(path, sizeof(path), at(vol, sizeof(vol), f->dir, "hg38"), "a.txt");
    stat(path, &st);
    write_file(vol, "a.txt", "HELLO\n");
    times[0] = st.st_atim;
    times[1] = st.st_mtim;
    utimensat(AT_FDCWD, path, times, 0);
    syncd_volume_options_init(&opts);
    opts.cache = cache;
    problems = scan(&doc, f->dir, &opts);
    assert_int_equal(json_array_size(problems), 0);
    json_decref(doc);
    json_decref(problems);
    /* Without it the file is read again. */
    problems = scan(&doc, f->dir, NULL);
    assert_one_problem(problems, "digest", "hg38", "a.txt");
    json_decref(doc);
    json_decref(problems);
    json_decref(cache);
}

static void test_volume_compare__names_each_volume_that_differs(void **state)
{
    json_t *local = json_pack(
        "{s:{s:{s:s, s:i, s:i}, s:{s:s, s:i, s:i}, s:{s:s, s:i, s:i}}}",
        "volumes", "same", "digest", "sha256:1", "size", 1, "files", 1, "dig",
        "digest", "sha256:2", "size", 1, "files", 1, "extra", "digest",
        "sha256:3", "size", 1, "files", 1);
    json_t *synced = json_pack(
        "{s:{s:{s:s, s:i, s:i}, s:{s:s, s:i, s:i}, s:{s:s, s:i, s:i}}}",
        "volumes", "same", "digest", "sha256:1", "size", 1, "files", 1, "dig",
        "digest", "sha256:9", "size", 1, "files", 1, "gone", "digest",
        "sha256:4", "size", 1, "files", 1);
    json_t *diffs = NULL, *want;

    (void)state;
    assert_int_equal(syncd_volume_compare(&diffs, local, synced), 0);
    want = json_pack("[{s:s, s:s}, {s:s, s:s}, {s:s, s:s}]", "volume", "dig",
                     "problem", "digest", "volume", "gone", "problem",
                     "missing", "volume", "extra", "problem", "extra");
    assert_int_equal(json_array_size(diffs), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *d = json_array_get(diffs, i), *w = json_array_get(want, i);

        assert_string_equal(json_string_value(json_object_get(d, "volume")),
                            json_string_value(json_object_get(w, "volume")));
        assert_string_equal(json_string_value(json_object_get(d, "problem")),
                            json_string_value(json_object_get(w, "problem")));
    }
    json_decref(want);
    json_decref(diffs);
    json_decref(local);
    json_decref(synced);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(test_volume_scan__good_folder_gives_the_document),
        T(test_volume_scan__one_volume_folder_is_the_volume),
        T(test_volume_scan__missing_file_is_named),
        T(test_volume_scan__wrong_size_is_named),
        T(test_volume_scan__wrong_digest_is_named),
        T(test_volume_scan__undeclared_file_is_named),
        T(test_volume_scan__symlink_leaving_the_volume_is_refused),
        T(test_volume_scan__dotdot_in_the_index_is_refused),
        T(test_volume_scan__archives_match_their_folder),
        T(test_volume_scan__dotdot_in_an_archive_is_refused),
        T(test_volume_scan__symlink_leaving_an_archive_is_refused),
        T(test_volume_scan__limits_fail_naming_the_flag),
        T(test_volume_init__round_trip_and_no_overwrite),
        T(test_volume_scan__cache_skips_unchanged_files),
        T(test_volume_compare__names_each_volume_that_differs),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
