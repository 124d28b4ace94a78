/* archive.c - volumes packed as .tar / .tar.gz archives, read in one pass
 * with libarchive and never unpacked to disk.
 *
 * Entry names lose a leading "./"; the index is the entry
 * "volume-index.json" at the root. Every regular entry is hashed while it
 * streams by (an index may come last). An absolute name or one with a ".."
 * component is a "path" problem, a symlink whose target leaves the volume
 * (absolute, or climbing above the root) a "symlink" problem, a hard link
 * to such a name a "path" problem; their data is never read.
 */
#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Most bytes of an index read from an archive. */
#define MAX_INDEX_BYTES (64 << 20)

/* Returns 1 when target, a symlink's target seen from the entry at name,
 * stays inside the volume's root; a lexical check, as nothing is on
 * disk. */
static int link_stays_inside(const char *name, const char *target)
{
    int depth = 0;
    const char *p;

    if (target[0] == '/' || target[0] == '\0')
        return 0;
    for (p = name; *p != '\0'; p++)
        depth += *p == '/';
    for (p = target; *p != '\0';) {
        size_t n = strcspn(p, "/");

        if (n == 2 && p[0] == '.' && p[1] == '.') {
            if (--depth < 0)
                return 0;
        } else if (!(n == 0 || (n == 1 && p[0] == '.'))) {
            depth++;
        }
        p += n;
        if (*p == '/')
            p++;
    }
    return 1;
}

/* Reads the data of the current entry: the index into v->index, any other
 * file into a new entry of v->files with its hash. */
static int read_data(vscan_t *s, volume_t *v, struct archive *a,
                     const char *name, int64_t size, int64_t mtime_ns)
{
    EVP_MD_CTX *ctx = NULL;
    char *index = NULL;
    unsigned char raw[32];
    const void *block;
    size_t len, used = 0;
    la_int64_t off;
    vfile_t *f = NULL;
    int rc = 0, r, is_index = strcmp(name, SYNCD_VOLUME_INDEX) == 0;

    if (is_index) {
        if (size > MAX_INDEX_BYTES)
            return syncd_volume_problem(s, v, name, "index",
                                        "volume %s: file %s: larger than "
                                        "%d bytes",
                                        VNAME(v), name, MAX_INDEX_BYTES);
        index = malloc((size_t)size + 1);
        if (index == NULL)
            return SYNCD_ENOMEM;
    } else {
        rc = syncd_volume_count(s, v, name, size, 0);
        if (rc < 0)
            return rc;
        f = syncd_volume_add_file(v, name, size, mtime_ns);
        ctx = EVP_MD_CTX_new();
        if (f == NULL || ctx == NULL ||
            EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
            rc = SYNCD_ENOMEM;
            goto cleanup;
        }
    }
    while ((r = archive_read_data_block(a, &block, &len, &off)) == ARCHIVE_OK) {
        if (index != NULL) {
            if ((size_t)off + len > (size_t)size)
                break;
            memcpy(index + off, block, len);
            used = (size_t)off + len;
        } else {
            EVP_DigestUpdate(ctx, block, len);
        }
    }
    if (r != ARCHIVE_EOF && r != ARCHIVE_OK) {
        v->readerr = 1;
        rc = syncd_volume_problem(s, v, name, "read",
                                  "volume %s: file %s: cannot read: %s",
                                  VNAME(v), name, archive_error_string(a));
        goto cleanup;
    }
    if (index != NULL) {
        json_error_t jerr;

        index[used] = '\0';
        v->index = json_loadb(index, used, JSON_REJECT_DUPLICATES, &jerr);
        v->readerr = v->index == NULL;
        if (v->index == NULL)
            rc = syncd_volume_problem(s, v, name, "index",
                                      "volume %s: file %s: line %d: %s",
                                      VNAME(v), name, jerr.line, jerr.text);
    } else {
        EVP_DigestFinal_ex(ctx, raw, NULL);
        for (int i = 0; i < 32; i++)
            snprintf(f->hex + 2 * i, 3, "%02x", raw[i]);
    }
cleanup:
    EVP_MD_CTX_free(ctx);
    free(index);
    return rc;
}

/* Checks and reads one entry. */
static int read_entry(vscan_t *s, volume_t *v, struct archive *a,
                      struct archive_entry *e)
{
    const char *name = archive_entry_pathname(e);
    const char *link;
    mode_t type = archive_entry_filetype(e);
    int depth;

    if (name == NULL)
        name = "";
    while (name[0] == '.' && name[1] == '/')
        name += 2;
    if (type == AE_IFDIR || name[0] == '\0' || strcmp(name, ".") == 0)
        return 0;
    if (syncd_volume_check_path(name, &depth) < 0) {
        v->readerr = 1;
        return syncd_volume_problem(
            s, v, name, "path",
            "volume %s: file %s: absolute path or '..' in the archive",
            VNAME(v), name);
    }
    if (depth > s->opts->max_depth)
        return syncd_volume_count(s, v, name, 0, depth);
    if ((link = archive_entry_hardlink(e)) != NULL) {
        int ldepth;

        v->readerr = 1;
        return syncd_volume_problem(
            s, v, name, "path",
            syncd_volume_check_path(link, &ldepth) < 0
                ? "volume %s: file %s: hard link to a path outside the "
                  "volume"
                : "volume %s: file %s: hard links are not supported in "
                  "archives",
            VNAME(v), name);
    }
    if (type == AE_IFLNK) {
        link = archive_entry_symlink(e);
        v->readerr = 1;
        if (!link_stays_inside(name, link ? link : ""))
            return syncd_volume_problem(
                s, v, name, "symlink",
                "volume %s: file %s: symlink leaves the volume (-> %s)",
                VNAME(v), name, link ? link : "");
        return syncd_volume_problem(
            s, v, name, "type",
            "volume %s: file %s: symlinks are not supported in archives",
            VNAME(v), name);
    }
    if (type != AE_IFREG) {
        v->readerr = 1;
        return syncd_volume_problem(s, v, name, "type",
                                    "volume %s: file %s: not a regular file",
                                    VNAME(v), name);
    }
    return read_data(s, v, a, name, archive_entry_size(e),
                     (int64_t)archive_entry_mtime(e) * 1000000000 +
                         archive_entry_mtime_nsec(e));
}

int syncd_volume_read_archive(vscan_t *s, volume_t *v)
{
    struct archive *a = archive_read_new();
    struct archive_entry *e;
    int rc = 0, r;

    if (a == NULL)
        return SYNCD_ENOMEM;
    archive_read_support_filter_gzip(a);
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    if (archive_read_open_filename(a, v->abs, 1 << 20) != ARCHIVE_OK) {
        v->readerr = 1;
        rc = syncd_volume_problem(s, v, NULL, "read",
                                  "volume %s: cannot read the archive: %s",
                                  VNAME(v), archive_error_string(a));
        goto cleanup;
    }
    while (rc == 0 && (r = archive_read_next_header(a, &e)) != ARCHIVE_EOF) {
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            v->readerr = 1;
            rc = syncd_volume_problem(s, v, NULL, "read",
                                      "volume %s: cannot read the archive: "
                                      "%s",
                                      VNAME(v), archive_error_string(a));
            break;
        }
        rc = read_entry(s, v, a, e);
    }
cleanup:
    archive_read_free(a);
    return rc;
}
