/* fuzz_volume.c - fuzz target: volume-index.json parsing.
 *
 * The input is the text of a volume-index.json. It is written into a
 * folder volume (holding a.txt and sub/b.txt) and as the index entry of a
 * .tar volume holding the same files, in a temporary folder made once,
 * and that folder is scanned. Invariants: the scan runs (0) and returns a
 * document and a problem list; each volume is either in the document or
 * named by a problem; the digest of an index's files, when it can be
 * made, is "sha256:" and 64 hex digits.
 */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "syncd/volume.h"

#include "fuzz.h"

static char root[64], folder_index[128], tar_path[128];

static const struct {
    const char *path, *text;
} files[] = {{"a.txt", "hello\n"}, {"sub/b.txt", "world\n"}};

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");

    SYNCD_FUZZ_CHECK(f != NULL);
    SYNCD_FUZZ_CHECK(fwrite(data, 1, len, f) == len);
    SYNCD_FUZZ_CHECK(fclose(f) == 0);
}

static void remove_all(void)
{
    char path[256];

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/v/%s", root, files[i].path);
        unlink(path);
    }
    unlink(folder_index);
    unlink(tar_path);
    snprintf(path, sizeof(path), "%s/v/sub", root);
    rmdir(path);
    snprintf(path, sizeof(path), "%s/v", root);
    rmdir(path);
    rmdir(root);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char path[256];

    (void)argc;
    (void)argv;
    snprintf(root, sizeof(root), "/tmp/syncd-fuzz-volume-XXXXXX");
    SYNCD_FUZZ_CHECK(mkdtemp(root) != NULL);
    snprintf(path, sizeof(path), "%s/v", root);
    SYNCD_FUZZ_CHECK(mkdir(path, 0755) == 0);
    snprintf(path, sizeof(path), "%s/v/sub", root);
    SYNCD_FUZZ_CHECK(mkdir(path, 0755) == 0);
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/v/%s", root, files[i].path);
        write_file(path, files[i].text, strlen(files[i].text));
    }
    snprintf(folder_index, sizeof(folder_index), "%s/v/%s", root,
             SYNCD_VOLUME_INDEX);
    snprintf(tar_path, sizeof(tar_path), "%s/t.tar", root);
    atexit(remove_all);
    return 0;
}

static void tar_add(struct archive *a, const char *name, const void *data,
                    size_t len)
{
    struct archive_entry *e = archive_entry_new();

    archive_entry_set_pathname(e, name);
    archive_entry_set_size(e, (la_int64_t)len);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    SYNCD_FUZZ_CHECK(archive_write_header(a, e) == ARCHIVE_OK);
    SYNCD_FUZZ_CHECK(archive_write_data(a, data, len) == (la_ssize_t)len);
    archive_entry_free(e);
}

/* Writes the .tar volume: the index first, then the files. */
static void write_tar(const uint8_t *data, size_t size)
{
    struct archive *a = archive_write_new();

    SYNCD_FUZZ_CHECK(a != NULL);
    archive_write_set_format_pax_restricted(a);
    SYNCD_FUZZ_CHECK(archive_write_open_filename(a, tar_path) == ARCHIVE_OK);
    tar_add(a, SYNCD_VOLUME_INDEX, data, size);
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        tar_add(a, files[i].path, files[i].text, strlen(files[i].text));
    SYNCD_FUZZ_CHECK(archive_write_close(a) == ARCHIVE_OK);
    archive_write_free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *doc = NULL, *problems = NULL, *index;
    syncd_volume_options_t opts;
    char digest[SYNCD_VOLUME_DIGEST_LEN + 1];
    int rc;

    write_file(folder_index, data, size);
    write_tar(data, size);
    syncd_volume_options_init(&opts);
    opts.threads = 1;
    rc = syncd_volume_scan(&doc, &problems, NULL, root, NULL, &opts, NULL);
    SYNCD_FUZZ_CHECK(rc == 0);
    SYNCD_FUZZ_CHECK(json_is_object(doc) && json_is_array(problems));
    SYNCD_FUZZ_CHECK(json_object_size(json_object_get(doc, "volumes")) +
                         (json_array_size(problems) > 0 ? 1 : 0) >=
                     1);
    index = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (syncd_volume_digest(digest, json_object_get(index, "files"), NULL) == 0)
        SYNCD_FUZZ_CHECK(strncmp(digest, "sha256:", 7) == 0 &&
                         strlen(digest) == SYNCD_VOLUME_DIGEST_LEN);
    json_decref(index);
    json_decref(doc);
    json_decref(problems);
    return 0;
}
