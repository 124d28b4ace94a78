/* scan.c - scanning a folder of volumes into a VolumeCollection, writing
 * an index, and comparing a scan with the synced document.
 *
 * A scan of DIR: when DIR holds volume-index.json, or is a .tar / .tar.gz
 * / .tgz file, it is the one volume (its path in the document is its base
 * name); else every entry of DIR not starting with '.' must
 * be a volume: a folder holding volume-index.json, or an archive. For each
 * folder volume the walk lists every file (a symlink is followed only when
 * its target stays inside the volume, and never into a folder), compares
 * the listing with the index (missing, extra, size), then hashes on the
 * pool only the files whose size matches and whose size and mtime do not
 * match the cache; archives are listed and hashed in one pass
 * (archive.c). Then every digest is compared with the index. A volume
 * with any problem stays out of the document; each problem names the
 * volume and the file.
 *
 * The cache (opaque to callers, kept as JSON) is
 *   {"files":{"<volume path>/<file path>":[size,mtime_ns,"<hex>"]},
 *    "archives":{"<volume path>":{"size":N,"mtime":NS,"index":{...},
 *                                 "files":[["<path>",size,"<hex>"]]}}}
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

void syncd_volume_options_init(syncd_volume_options_t *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->max_files = SYNCD_VOLUME_MAX_FILES;
    opts->max_depth = SYNCD_VOLUME_MAX_DEPTH;
    opts->max_bytes = SYNCD_VOLUME_MAX_BYTES;
}

int syncd_volume_problem(vscan_t *s, volume_t *v, const char *file,
                         const char *kind, const char *fmt, ...)
{
    char message[1024];
    json_t *p;
    va_list ap;
    int rc = 0;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    p = json_pack("{s:s, s:s?, s:s, s:s}", "volume", VNAME(v), "file", file,
                  "problem", kind, "message", message);
    pthread_mutex_lock(&s->lock);
    v->failed = 1;
    if (p == NULL || json_array_append_new(s->problems, p) < 0)
        rc = SYNCD_ENOMEM;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int syncd_volume_count(vscan_t *s, volume_t *v, const char *file, int64_t size,
                       int depth)
{
    int rc;

    pthread_mutex_lock(&s->lock);
    if (s->rc == 0 && depth > s->opts->max_depth)
        s->rc = syncd_error_set(s->err, SYNCD_ETOOBIG,
                                "volume %s: file %s: deeper than --max-depth "
                                "%d",
                                VNAME(v), file, s->opts->max_depth);
    if (s->rc == 0 && ++s->files > s->opts->max_files)
        s->rc = syncd_error_set(s->err, SYNCD_ETOOBIG,
                                "volume %s: file %s: more than --max-files "
                                "%lld files",
                                VNAME(v), file, (long long)s->opts->max_files);
    s->bytes += size;
    if (s->rc == 0 && s->bytes > s->opts->max_bytes)
        s->rc = syncd_error_set(s->err, SYNCD_ETOOBIG,
                                "volume %s: file %s: more than --max-bytes "
                                "%lld bytes",
                                VNAME(v), file, (long long)s->opts->max_bytes);
    rc = s->rc;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

vfile_t *syncd_volume_add_file(volume_t *v, const char *path, int64_t size,
                               int64_t mtime_ns)
{
    vfile_t *f;

    if (v->nfiles == v->capfiles) {
        size_t cap = v->capfiles ? 2 * v->capfiles : 16;
        vfile_t *grown = realloc(v->files, cap * sizeof(*grown));

        if (grown == NULL)
            return NULL;
        v->files = grown;
        v->capfiles = cap;
    }
    f = &v->files[v->nfiles];
    memset(f, 0, sizeof(*f));
    f->path = strdup(path);
    if (f->path == NULL)
        return NULL;
    f->size = size;
    f->mtime_ns = mtime_ns;
    v->nfiles++;
    return f;
}

int syncd_volume_check_path(const char *path, int *depth)
{
    const char *p = path;

    *depth = 0;
    if (*p == '\0' || *p == '/')
        return -1;
    while (*p != '\0') {
        size_t n = strcspn(p, "/");

        if (n == 0 || (n == 1 && p[0] == '.') ||
            (n == 2 && p[0] == '.' && p[1] == '.'))
            return -1;
        (*depth)++;
        p += n;
        if (*p == '/' && *++p == '\0')
            return -1;
    }
    return 0;
}

/* Returns 1 when name can be a volume's name (a key of "volumes"). */
static int valid_name(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > 128 || name[0] == '.' || name[0] == '-')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

static int is_archive_name(const char *name)
{
    size_t n = strlen(name);

    return (n > 4 && strcmp(name + n - 4, ".tar") == 0) ||
           (n > 7 && strcmp(name + n - 7, ".tar.gz") == 0) ||
           (n > 4 && strcmp(name + n - 4, ".tgz") == 0);
}

static char *join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);

    if (s != NULL)
        snprintf(s, n, "%s/%s", a, b);
    return s;
}

static int64_t mtime_ns(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

static void volume_free(volume_t *v)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < v->nfiles; i++)
        free(v->files[i].path);
    free(v->files);
    free(v->decls);
    json_decref(v->index);
    free(v->path);
    free(v->abs);
    free(v->real);
    free(v);
}

static volume_t *volume_new(const char *path, const char *abs, int archive)
{
    volume_t *v = calloc(1, sizeof(*v));

    if (v == NULL)
        return NULL;
    v->path = strdup(path);
    v->abs = strdup(abs);
    v->archive = archive;
    if (v->path == NULL || v->abs == NULL) {
        volume_free(v);
        return NULL;
    }
    return v;
}

/* A growable list of volumes. */
typedef struct vlist {
    volume_t **v;
    size_t n, cap;
} vlist_t;

static int vlist_add(vlist_t *l, volume_t *v)
{
    if (v == NULL)
        return SYNCD_ENOMEM;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        volume_t **grown = realloc(l->v, cap * sizeof(*grown));

        if (grown == NULL) {
            volume_free(v);
            return SYNCD_ENOMEM;
        }
        l->v = grown;
        l->cap = cap;
    }
    l->v[l->n++] = v;
    return 0;
}

static void vlist_free(vlist_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        volume_free(l->v[i]);
    free(l->v);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists the entries of the folder path, sorted, without "." and "..";
 * *names is a malloc'd array of malloc'd names. Returns 0 or -1 (errno). */
static int list_dir(char ***names, size_t *n, const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    size_t cap = 0;
    char **grown;

    *names = NULL;
    *n = 0;
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            grown = realloc(*names, cap * sizeof(*grown));
            if (grown == NULL)
                goto fail;
            *names = grown;
        }
        if (((*names)[*n] = strdup(e->d_name)) == NULL)
            goto fail;
        (*n)++;
    }
    closedir(d);
    if (*n > 1)
        qsort(*names, *n, sizeof(**names), name_cmp);
    return 0;
fail:
    closedir(d);
    for (size_t i = 0; i < *n; i++)
        free((*names)[i]);
    free(*names);
    *names = NULL;
    errno = ENOMEM;
    return -1;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Returns 1 when real (a resolved path) is root or inside it. */
static int inside(const char *root, const char *real)
{
    size_t n = strlen(root);

    return strncmp(root, real, n) == 0 &&
           (real[n] == '\0' || real[n] == '/' || strcmp(root, "/") == 0);
}

/* Walks the folder rel (relative to v's root, "" for the root) of folder
 * volume v, adding every file to v->files. */
static int walk(vscan_t *s, volume_t *v, const char *rel, int depth)
{
    char *dir = rel[0] ? join(v->abs, rel) : strdup(v->abs);
    char **names = NULL;
    size_t n = 0;
    int rc = 0;

    if (dir == NULL)
        return SYNCD_ENOMEM;
    if (list_dir(&names, &n, dir) < 0) {
        rc = errno == ENOMEM
                 ? SYNCD_ENOMEM
                 : syncd_volume_problem(s, v, rel[0] ? rel : NULL, "read",
                                        "volume %s: folder %s: cannot read: %s",
                                        VNAME(v), rel[0] ? rel : ".",
                                        strerror(errno));
        free(dir);
        return rc;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char *file = rel[0] ? join(rel, names[i]) : strdup(names[i]);
        char *abs = join(dir, names[i]);
        char real[PATH_MAX];
        struct stat st;

        if (file == NULL || abs == NULL) {
            rc = SYNCD_ENOMEM;
        } else if (depth == 0 && strcmp(names[i], SYNCD_VOLUME_INDEX) == 0) {
            /* The index itself is not one of the volume's files. */
        } else if (lstat(abs, &st) < 0) {
            rc = syncd_volume_problem(s, v, file, "read",
                                      "volume %s: file %s: %s", VNAME(v), file,
                                      strerror(errno));
        } else if (S_ISLNK(st.st_mode) &&
                   (realpath(abs, real) == NULL || !inside(v->real, real))) {
            rc = syncd_volume_problem(s, v, file, "symlink",
                                      "volume %s: file %s: symlink leaves "
                                      "the volume",
                                      VNAME(v), file);
        } else if (S_ISLNK(st.st_mode) &&
                   (stat(abs, &st) < 0 || !S_ISREG(st.st_mode))) {
            rc = syncd_volume_problem(s, v, file, "symlink",
                                      "volume %s: file %s: symlink to a "
                                      "folder (not followed)",
                                      VNAME(v), file);
        } else if (S_ISDIR(st.st_mode)) {
            if (depth + 1 >= s->opts->max_depth)
                rc = syncd_volume_count(s, v, file, 0, depth + 2);
            else
                rc = walk(s, v, file, depth + 1);
        } else if (!S_ISREG(st.st_mode)) {
            rc = syncd_volume_problem(s, v, file, "type",
                                      "volume %s: file %s: not a regular "
                                      "file",
                                      VNAME(v), file);
        } else {
            rc = syncd_volume_count(s, v, file, st.st_size, depth + 1);
            if (rc == 0 && syncd_volume_add_file(v, file, st.st_size,
                                                 mtime_ns(&st)) == NULL)
                rc = SYNCD_ENOMEM;
        }
        free(file);
        free(abs);
    }
    free_names(names, n);
    free(dir);
    return rc;
}

static int file_cmp(const void *a, const void *b)
{
    return strcmp(((const vfile_t *)a)->path, ((const vfile_t *)b)->path);
}

static int decl_cmp(const void *a, const void *b)
{
    return strcmp(((const vdecl_t *)a)->path, ((const vdecl_t *)b)->path);
}

/* Returns 1 when d is "sha256:" and 64 lower-case hex digits. */
static int valid_digest(const char *d)
{
    if (d == NULL || strncmp(d, "sha256:", 7) != 0 || strlen(d) != 71)
        return 0;
    for (int i = 7; i < 71; i++) {
        if (!((d[i] >= '0' && d[i] <= '9') || (d[i] >= 'a' && d[i] <= 'f')))
            return 0;
    }
    return 1;
}

/* Checks v->index and fills v->decls, sorted by path. An index that is
 * missing or wrong is a problem of the volume. */
static int load_decls(vscan_t *s, volume_t *v)
{
    json_t *files = json_object_get(v->index, "files"), *f;
    const char *name = json_string_value(json_object_get(v->index, "name"));
    size_t i;
    int rc = 0;

    if (v->index == NULL)
        return syncd_volume_problem(s, v, SYNCD_VOLUME_INDEX, "index",
                                    "volume %s: file %s: missing", v->path,
                                    SYNCD_VOLUME_INDEX);
    if (name == NULL || !valid_name(name) || !json_is_array(files))
        return syncd_volume_problem(
            s, v, SYNCD_VOLUME_INDEX, "index",
            "volume %s: file %s: needs \"name\" (letters, digits, '_', '.', "
            "'-') and a \"files\" array",
            VNAME(v), SYNCD_VOLUME_INDEX);
    v->name = name;
    v->decls = malloc((json_array_size(files) + 1) * sizeof(*v->decls));
    if (v->decls == NULL)
        return SYNCD_ENOMEM;
    json_array_foreach (files, i, f) {
        const char *path = json_string_value(json_object_get(f, "path"));
        const char *digest = json_string_value(json_object_get(f, "digest"));
        json_t *size = json_object_get(f, "size");
        int depth;

        if (path != NULL && syncd_volume_check_path(path, &depth) < 0) {
            rc = syncd_volume_problem(s, v, path, "path",
                                      "volume %s: file %s: the index "
                                      "declares an absolute path or '..'",
                                      VNAME(v), path);
        } else if (path == NULL || !json_is_integer(size) ||
                   json_integer_value(size) < 0 || !valid_digest(digest)) {
            rc = syncd_volume_problem(
                s, v, path, "index",
                "volume %s: file %s: entry %zu of the index needs \"path\", "
                "\"size\" and a \"sha256:<64 hex>\" \"digest\"",
                VNAME(v), path ? path : SYNCD_VOLUME_INDEX, i);
        } else if (depth > s->opts->max_depth) {
            return syncd_volume_count(s, v, path, 0, depth);
        } else {
            v->decls[v->ndecls++] =
                (vdecl_t){path, json_integer_value(size), digest + 7};
        }
        if (rc < 0)
            return rc;
    }
    qsort(v->decls, v->ndecls, sizeof(*v->decls), decl_cmp);
    for (i = 1; rc == 0 && i < v->ndecls; i++) {
        if (strcmp(v->decls[i - 1].path, v->decls[i].path) == 0)
            rc = syncd_volume_problem(s, v, v->decls[i].path, "index",
                                      "volume %s: file %s: declared twice",
                                      VNAME(v), v->decls[i].path);
    }
    v->indexed = rc == 0 && !v->failed;
    return rc;
}

/* Compares v's listing with its index: missing, extra and size problems.
 * With hashed 0 (before hashing), marks the files to hash, or takes their
 * hash from the cache; with hashed 1, compares the digests. */
static int check_files(vscan_t *s, volume_t *v, int hashed)
{
    const json_t *cache = json_object_get(s->opts->cache, "files");
    size_t i = 0, j = 0;
    int rc = 0;

    if (v->nfiles > 1)
        qsort(v->files, v->nfiles, sizeof(*v->files), file_cmp);
    while (rc == 0 && (i < v->ndecls || j < v->nfiles)) {
        int c = i == v->ndecls   ? 1
                : j == v->nfiles ? -1
                                 : strcmp(v->decls[i].path, v->files[j].path);
        vdecl_t *d = &v->decls[i];
        vfile_t *f = &v->files[j];

        if (c < 0) {
            if (!hashed)
                rc = syncd_volume_problem(s, v, d->path, "missing",
                                          "volume %s: file %s: declared in "
                                          "the index, missing",
                                          VNAME(v), d->path);
            i++;
            continue;
        }
        if (c > 0) {
            if (!hashed)
                rc = syncd_volume_problem(s, v, f->path, "extra",
                                          "volume %s: file %s: not declared "
                                          "in the index",
                                          VNAME(v), f->path);
            j++;
            continue;
        }
        if (d->size != f->size) {
            if (!hashed)
                rc = syncd_volume_problem(
                    s, v, f->path, "size",
                    "volume %s: file %s: %lld bytes, the index says %lld",
                    VNAME(v), f->path, (long long)f->size, (long long)d->size);
        } else if (!hashed && !v->archive) {
            char *key = join(v->path, f->path);
            json_t *hit = key ? json_object_get(cache, key) : NULL;
            const char *hex = json_string_value(json_array_get(hit, 2));

            if (key == NULL)
                rc = SYNCD_ENOMEM;
            else if (hex != NULL && strlen(hex) == 64 &&
                     json_integer_value(json_array_get(hit, 0)) == f->size &&
                     json_integer_value(json_array_get(hit, 1)) == f->mtime_ns)
                memcpy(f->hex, hex, 65);
            else
                f->hash = 1;
            free(key);
        } else if (hashed && f->hex[0] != '\0' && strcmp(f->hex, d->hex) != 0) {
            rc = syncd_volume_problem(s, v, f->path, "digest",
                                      "volume %s: file %s: digest sha256:%s, "
                                      "the index says sha256:%s",
                                      VNAME(v), f->path, f->hex, d->hex);
        }
        i++;
        j++;
    }
    return rc;
}

/* Takes archive v's listing and index from the cache when its size and
 * mtime match. */
static int from_cache(vscan_t *s, volume_t *v)
{
    json_t *hit =
        json_object_get(json_object_get(s->opts->cache, "archives"), v->path);
    json_t *files = json_object_get(hit, "files"), *f;
    size_t i;

    if (hit == NULL ||
        json_integer_value(json_object_get(hit, "size")) != v->size ||
        json_integer_value(json_object_get(hit, "mtime")) != v->mtime_ns ||
        !json_is_object(json_object_get(hit, "index")))
        return 0;
    json_array_foreach (files, i, f) {
        const char *path = json_string_value(json_array_get(f, 0));
        const char *hex = json_string_value(json_array_get(f, 2));
        vfile_t *nf;
        int rc;

        if (path == NULL || hex == NULL || strlen(hex) != 64)
            return 0;
        rc = syncd_volume_count(s, v, path,
                                json_integer_value(json_array_get(f, 1)), 0);
        if (rc < 0)
            return rc;
        nf = syncd_volume_add_file(
            v, path, json_integer_value(json_array_get(f, 1)), v->mtime_ns);
        if (nf == NULL)
            return SYNCD_ENOMEM;
        memcpy(nf->hex, hex, 65);
    }
    v->index = json_deep_copy(json_object_get(hit, "index"));
    v->cached = 1;
    return v->index == NULL ? SYNCD_ENOMEM : 0;
}

/* Adds the volume at abs (path rel in the document) to l, reading a
 * folder's index; a folder without one is a problem. */
static int add_volume(vscan_t *s, vlist_t *l, const char *rel, const char *abs)
{
    struct stat st;
    volume_t *v;
    int rc, archive;

    if (stat(abs, &st) < 0)
        return SYNCD_ENOTFOUND;
    archive = S_ISREG(st.st_mode) && is_archive_name(abs);
    rc = vlist_add(l, v = volume_new(rel, abs, archive));
    if (rc < 0)
        return rc;
    v->size = st.st_size;
    v->mtime_ns = mtime_ns(&st);
    if (archive)
        return from_cache(s, v);
    if (!S_ISDIR(st.st_mode))
        return syncd_volume_problem(s, v, NULL, "type",
                                    "volume %s: neither a folder nor a "
                                    ".tar, .tar.gz or .tgz archive",
                                    rel);
    v->real = realpath(abs, NULL);
    if (v->real == NULL)
        return syncd_volume_problem(s, v, NULL, "read", "volume %s: %s", rel,
                                    strerror(errno));
    {
        char *index = join(abs, SYNCD_VOLUME_INDEX);
        json_error_t jerr;

        if (index == NULL)
            return SYNCD_ENOMEM;
        if (access(index, F_OK) == 0) {
            v->index = json_load_file(index, JSON_REJECT_DUPLICATES, &jerr);
            if (v->index == NULL)
                rc = syncd_volume_problem(s, v, SYNCD_VOLUME_INDEX, "index",
                                          "volume %s: file %s: line %d: %s",
                                          rel, SYNCD_VOLUME_INDEX, jerr.line,
                                          jerr.text);
        }
        free(index);
    }
    return rc;
}

/* Returns dir's base name as a malloc'd string (of its real path). */
static char *base_name(const char *dir)
{
    char *real = realpath(dir, NULL), *base;

    if (real == NULL)
        return NULL;
    base = strrchr(real, '/');
    base = strdup(base != NULL && base[1] != '\0' ? base + 1 : real);
    free(real);
    return base;
}

/* Finds the volumes of dir: dir itself, or its entries. */
static int find_volumes(vscan_t *s, vlist_t *l, const char *dir,
                        syncd_error_t *err)
{
    char **names = NULL, *index = join(dir, SYNCD_VOLUME_INDEX);
    struct stat st;
    size_t n = 0;
    int rc = 0;

    if (index == NULL)
        return SYNCD_ENOMEM;
    if (stat(dir, &st) < 0) {
        rc = syncd_error_set(err, SYNCD_ENOTFOUND, "%s: %s", dir,
                             strerror(errno));
    } else if (S_ISREG(st.st_mode) && is_archive_name(dir)) {
        const char *base = strrchr(dir, '/');

        rc = add_volume(s, l, base ? base + 1 : dir, dir);
    } else if (!S_ISDIR(st.st_mode)) {
        rc = syncd_error_set(err, SYNCD_EINVAL,
                             "%s: neither a folder nor an archive", dir);
    } else if (access(index, F_OK) == 0) {
        char *base = base_name(dir);

        rc = base != NULL ? add_volume(s, l, base, dir) : SYNCD_ENOMEM;
        free(base);
    } else if (list_dir(&names, &n, dir) < 0) {
        rc = syncd_error_set(err, SYNCD_EINVAL, "%s: %s", dir, strerror(errno));
    } else {
        for (size_t i = 0; rc == 0 && i < n; i++) {
            char *abs = join(dir, names[i]);

            if (abs == NULL)
                rc = SYNCD_ENOMEM;
            else if (names[i][0] != '.')
                rc = add_volume(s, l, names[i], abs);
            free(abs);
        }
    }
    free_names(names, n);
    free(index);
    return rc;
}

/* Adds v's entry to the document's volumes, and what the cache keeps of
 * it to cache. */
static int document(json_t *volumes, volume_t *v, const char *now)
{
    json_t *files = json_object_get(v->index, "files");
    const char *name = json_string_value(json_object_get(v->index, "name"));
    char digest[SYNCD_VOLUME_DIGEST_LEN + 1];
    int64_t size = 0;
    json_t *entry;

    if (v->failed)
        return 0;
    for (size_t i = 0; i < v->ndecls; i++)
        size += v->decls[i].size;
    if (syncd_volume_digest(digest, files, NULL) < 0)
        return SYNCD_ENOMEM;
    entry = json_pack("{s:s, s:s, s:I, s:I, s:s}", "path", v->path, "digest",
                      digest, "size", (json_int_t)size, "files",
                      (json_int_t)v->ndecls, "updated", now);
    if (entry == NULL || json_object_set_new(volumes, name, entry) < 0)
        return SYNCD_ENOMEM;
    return 0;
}

/* Adds what the next scan can skip of v to cache. */
static int remember(json_t *cache, volume_t *v)
{
    json_t *files = json_object_get(cache, "files");

    if (v->archive) {
        json_t *list, *entry;

        if (v->readerr || v->index == NULL)
            return 0;
        list = json_array();
        for (size_t i = 0; list != NULL && i < v->nfiles; i++) {
            if (json_array_append_new(list,
                                      json_pack("[s, I, s]", v->files[i].path,
                                                (json_int_t)v->files[i].size,
                                                v->files[i].hex)) < 0) {
                json_decref(list);
                list = NULL;
            }
        }
        entry = json_pack("{s:I, s:I, s:O, s:o*}", "size", (json_int_t)v->size,
                          "mtime", (json_int_t)v->mtime_ns, "index", v->index,
                          "files", list);
        return entry != NULL &&
                       json_object_set_new(json_object_get(cache, "archives"),
                                           v->path, entry) == 0
                   ? 0
                   : SYNCD_ENOMEM;
    }
    for (size_t i = 0; i < v->nfiles; i++) {
        vfile_t *f = &v->files[i];
        char *key;
        int rc;

        if (f->hex[0] == '\0')
            continue;
        key = join(v->path, f->path);
        rc = key != NULL && json_object_set_new(
                                files, key,
                                json_pack("[I, I, s]", (json_int_t)f->size,
                                          (json_int_t)f->mtime_ns, f->hex)) == 0
                 ? 0
                 : SYNCD_ENOMEM;
        free(key);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Checks that no two volumes share a name. */
static int unique_names(vscan_t *s, vlist_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        const char *a =
            json_string_value(json_object_get(l->v[i]->index, "name"));

        for (size_t j = 0; a != NULL && j < i; j++) {
            const char *b =
                json_string_value(json_object_get(l->v[j]->index, "name"));
            int rc;

            if (b == NULL || strcmp(a, b) != 0)
                continue;
            rc = syncd_volume_problem(s, l->v[i], NULL, "index",
                                      "volume %s: named %s, as volume %s is",
                                      l->v[i]->path, a, l->v[j]->path);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

static void utc_now(char out[32])
{
    time_t t = time(NULL);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Starts scan state s with opts (NULL: the defaults, kept in *defaults)
 * and err; s->problems is NULL when out of memory. scan_end() frees it. */
static void scan_begin(vscan_t *s, const syncd_volume_options_t *opts,
                       syncd_volume_options_t *defaults, syncd_error_t *err)
{
    if (opts == NULL) {
        syncd_volume_options_init(defaults);
        opts = defaults;
    }
    s->opts = opts;
    s->err = err;
    s->problems = json_array();
    pthread_mutex_init(&s->lock, NULL);
}

/* Frees what scan_begin() made. */
static void scan_end(vscan_t *s)
{
    pthread_mutex_destroy(&s->lock);
    json_decref(s->problems);
}

int syncd_volume_scan(json_t **doc, json_t **problems, json_t **cache,
                      const char *dir, const char *name,
                      const syncd_volume_options_t *opts, syncd_error_t *err)
{
    syncd_volume_options_t defaults;
    vscan_t s = {0};
    vlist_t l = {0};
    json_t *volumes = json_object(), *keep = NULL;
    char *base = name != NULL ? strdup(name) : base_name(dir);
    char now[32];
    int rc = 0;

    *doc = NULL;
    *problems = NULL;
    if (cache != NULL)
        *cache = NULL;
    scan_begin(&s, opts, &defaults, err);
    keep = json_pack("{s:{}, s:{}}", "files", "archives");
    if (volumes == NULL || s.problems == NULL || keep == NULL) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto cleanup;
    }
    if (base == NULL) {
        rc = syncd_error_set(err, SYNCD_ENOTFOUND, "%s: %s", dir,
                             strerror(errno));
        goto cleanup;
    }
    rc = find_volumes(&s, &l, dir, err);
    for (size_t i = 0; rc == 0 && i < l.n; i++) {
        volume_t *v = l.v[i];

        if (!v->archive && !v->failed) {
            rc = load_decls(&s, v);
            if (rc == 0 && v->indexed)
                rc = walk(&s, v, "", 0);
            if (rc == 0 && v->indexed)
                rc = check_files(&s, v, 0);
        }
    }
    if (rc == 0)
        rc = syncd_volume_hash_all(&s, l.v, l.n);
    for (size_t i = 0; rc == 0 && i < l.n; i++) {
        volume_t *v = l.v[i];

        if (v->archive && v->index != NULL) {
            rc = load_decls(&s, v);
            if (rc == 0 && v->indexed)
                rc = check_files(&s, v, 0);
        } else if (v->archive && !v->readerr) {
            rc = load_decls(&s, v);
        }
        if (rc == 0 && v->indexed)
            rc = check_files(&s, v, 1);
        if (rc == 0)
            rc = remember(keep, v);
    }
    if (rc == 0)
        rc = unique_names(&s, &l);
    utc_now(now);
    for (size_t i = 0; rc == 0 && i < l.n; i++)
        rc = document(volumes, l.v[i], now);
    if (rc == 0) {
        *doc = json_pack("{s:s, s:s, s:O}", "kind", "VolumeCollection", "name",
                         base, "volumes", volumes);
        *problems = json_incref(s.problems);
        if (cache != NULL)
            *cache = json_incref(keep);
        if (*doc == NULL)
            rc = SYNCD_ENOMEM;
    }
    if (rc == SYNCD_ENOMEM)
        syncd_error_set(err, rc, "out of memory while scanning %s", dir);
cleanup:
    if (rc < 0) {
        json_decref(*doc);
        json_decref(*problems);
        *doc = *problems = NULL;
        if (cache != NULL) {
            json_decref(*cache);
            *cache = NULL;
        }
    }
    scan_end(&s);
    vlist_free(&l);
    json_decref(volumes);
    json_decref(keep);
    free(base);
    return rc;
}

int syncd_volume_init(const char *dir, const char *name,
                      const syncd_volume_options_t *opts, syncd_error_t *err)
{
    syncd_volume_options_t defaults;
    vscan_t s = {0};
    volume_t *v = volume_new(".", dir, 0);
    char *index = join(dir, SYNCD_VOLUME_INDEX);
    char *tmp = join(dir, "." SYNCD_VOLUME_INDEX ".tmp");
    char *base = name != NULL ? strdup(name) : base_name(dir);
    json_t *files = json_array(), *out = NULL;
    int rc = 0;

    scan_begin(&s, opts, &defaults, err);
    if (v == NULL || index == NULL || tmp == NULL || files == NULL ||
        s.problems == NULL) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto cleanup;
    }
    if (base == NULL || !valid_name(base)) {
        rc = syncd_error_set(err, SYNCD_EINVAL,
                             "%s: the volume name must be letters, digits, "
                             "'_', '.' and '-' (give one with --name)",
                             dir);
        goto cleanup;
    }
    if (access(index, F_OK) == 0) {
        rc = syncd_error_set(err, SYNCD_EEXISTS, "%s: already exists", index);
        goto cleanup;
    }
    v->name = base;
    v->real = realpath(dir, NULL);
    if (v->real == NULL) {
        rc = syncd_error_set(err, SYNCD_ENOTFOUND, "%s: %s", dir,
                             strerror(errno));
        goto cleanup;
    }
    rc = walk(&s, v, "", 0);
    for (size_t i = 0; i < v->nfiles; i++)
        v->files[i].hash = 1;
    if (rc == 0 && json_array_size(s.problems) == 0)
        rc = syncd_volume_hash_all(&s, &v, 1);
    if (rc == 0 && json_array_size(s.problems) > 0)
        rc = syncd_error_set(err, SYNCD_EINVAL, "%s",
                             json_string_value(json_object_get(
                                 json_array_get(s.problems, 0), "message")));
    if (rc < 0)
        goto cleanup;
    if (v->nfiles > 1)
        qsort(v->files, v->nfiles, sizeof(*v->files), file_cmp);
    for (size_t i = 0; i < v->nfiles; i++) {
        char digest[SYNCD_VOLUME_DIGEST_LEN + 1];

        snprintf(digest, sizeof(digest), "sha256:%s", v->files[i].hex);
        if (json_array_append_new(files, json_pack("{s:s, s:I, s:s}", "path",
                                                   v->files[i].path, "size",
                                                   (json_int_t)v->files[i].size,
                                                   "digest", digest)) < 0) {
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
            goto cleanup;
        }
    }
    out = json_pack("{s:s, s:O}", "name", base, "files", files);
    if (out == NULL || json_dump_file(out, tmp, JSON_INDENT(1)) < 0) {
        rc = syncd_error_set(err, SYNCD_EINVAL, "%s: cannot write: %s", tmp,
                             strerror(errno));
        goto cleanup;
    }
    /* link() refuses to replace an index made meanwhile. */
    if (link(tmp, index) < 0)
        rc =
            syncd_error_set(err, errno == EEXIST ? SYNCD_EEXISTS : SYNCD_EINVAL,
                            "%s: %s", index, strerror(errno));
    unlink(tmp);
cleanup:
    scan_end(&s);
    json_decref(files);
    json_decref(out);
    volume_free(v);
    free(index);
    free(tmp);
    free(base);
    return rc;
}

/* Appends {"volume","file":null,"problem","message"} to diffs. */
static int add_diff(json_t *diffs, const char *volume, const char *problem,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int add_diff(json_t *diffs, const char *volume, const char *problem,
                    const char *fmt, ...)
{
    char message[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    return json_array_append_new(diffs,
                                 json_pack("{s:s, s:n, s:s, s:s}", "volume",
                                           volume, "file", "problem", problem,
                                           "message", message)) < 0
               ? SYNCD_ENOMEM
               : 0;
}

int syncd_volume_compare(json_t **diffs, const json_t *local,
                         const json_t *synced)
{
    json_t *lv = json_object_get(local, "volumes");
    json_t *sv = json_object_get(synced, "volumes");
    const char *name;
    json_t *want;
    int rc = 0;

    *diffs = json_array();
    if (*diffs == NULL)
        return SYNCD_ENOMEM;
    json_object_foreach (sv, name, want) {
        json_t *have = json_object_get(lv, name);
        const char *wd = json_string_value(json_object_get(want, "digest"));
        const char *hd = json_string_value(json_object_get(have, "digest"));
        json_int_t ws = json_integer_value(json_object_get(want, "size"));
        json_int_t hs = json_integer_value(json_object_get(have, "size"));
        json_int_t wf = json_integer_value(json_object_get(want, "files"));
        json_int_t hf = json_integer_value(json_object_get(have, "files"));

        if (have == NULL)
            rc = add_diff(*diffs, name, "missing",
                          "volume %s: in the synced document, missing here",
                          name);
        else if (wf != hf)
            rc = add_diff(*diffs, name, "files",
                          "volume %s: %lld files here, %lld synced", name,
                          (long long)hf, (long long)wf);
        else if (ws != hs)
            rc = add_diff(*diffs, name, "size",
                          "volume %s: %lld bytes here, %lld synced", name,
                          (long long)hs, (long long)ws);
        else if (wd == NULL || hd == NULL || strcmp(wd, hd) != 0)
            rc = add_diff(*diffs, name, "digest",
                          "volume %s: digest %s here, %s synced", name,
                          hd ? hd : "none", wd ? wd : "none");
        if (rc < 0)
            break;
    }
    json_object_foreach (lv, name, want) {
        if (rc == 0 && json_object_get(sv, name) == NULL)
            rc = add_diff(*diffs, name, "extra",
                          "volume %s: here, not in the synced document", name);
    }
    if (rc < 0) {
        json_decref(*diffs);
        *diffs = NULL;
    }
    return rc;
}
