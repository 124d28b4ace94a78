/* internal.h - what the files of volume/ share: the state of one scan.
 *
 * A scan finds its volumes (scan.c), lists each volume's files (a walk of
 * the folder, or one pass over the archive in archive.c), hashes them on a
 * small pool of threads (hash.c), and checks what it found against each
 * index. Problems and limit counters are shared by the hashing threads and
 * guarded by the scan's lock.
 */
#ifndef SYNCD_VOLUME_INTERNAL_H
#define SYNCD_VOLUME_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "syncd/volume.h"

/* One file found in a volume. */
typedef struct vfile {
    char *path;       /* relative to the volume's root, '/'-separated */
    int64_t size;     /* bytes */
    int64_t mtime_ns; /* modification time in ns since the epoch */
    char hex[65];     /* lower-case hex SHA-256; "" until known */
    int hash;         /* 1: the pool hashes it */
} vfile_t;

/* One declared file of an index (strings borrowed from the index). */
typedef struct vdecl {
    const char *path;
    int64_t size;
    const char *hex; /* the 64 hex digits after "sha256:" */
} vdecl_t;

/* One volume of a scan. */
typedef struct volume {
    char *path;       /* the folder's or archive's name */
    const char *name; /* the index's name once checked (borrowed), or NULL */
    char *abs;        /* where it is on disk */
    char *real;       /* realpath() of a folder volume, for symlink checks */
    int archive;      /* 1: a .tar / .tar.gz archive */
    int64_t size;     /* archive: bytes and mtime, the cache's key */
    int64_t mtime_ns;
    json_t *index; /* the parsed index, or NULL */
    vfile_t *files;
    size_t nfiles, capfiles;
    vdecl_t *decls;
    size_t ndecls;
    int failed;  /* a problem keeps it out of the document */
    int indexed; /* its index passed the checks: decls are valid */
    int cached;  /* an archive listed from the cache */
    int readerr; /* an archive with problems while read: not cached */
} volume_t;

/* How problems name a volume: by its index's name, else its path. */
#define VNAME(v) ((v)->name != NULL ? (v)->name : (v)->path)

/* The state of one scan. */
typedef struct vscan {
    const syncd_volume_options_t *opts;
    pthread_mutex_t lock;
    json_t *problems;
    int64_t files, bytes; /* counted against the limits, under lock */
    int rc;               /* first hard error (SYNCD_E*), under lock */
    syncd_error_t *err;
} vscan_t;

/* Records a problem of volume v (file may be NULL) in the scan and marks
 * v failed; thread-safe. Returns 0 or SYNCD_ENOMEM. */
int syncd_volume_problem(vscan_t *s, volume_t *v, const char *file,
                         const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Counts one file of size bytes, depth path components deep, against the
 * scan's limits; thread-safe. Returns 0, or SYNCD_ETOOBIG after recording
 * the error (naming the flag, v and file), or the scan's earlier error. */
int syncd_volume_count(vscan_t *s, volume_t *v, const char *file, int64_t size,
                       int depth);

/* Appends a file to v; its path is copied. Returns the new entry or NULL
 * when out of memory. */
vfile_t *syncd_volume_add_file(volume_t *v, const char *path, int64_t size,
                               int64_t mtime_ns);

/* Returns 0 when path is a relative '/'-separated path with no empty, "."
 * or ".." component, else -1; *depth gets its number of components. */
int syncd_volume_check_path(const char *path, int *depth);

/* Lists the files of archive v into v->files, hashing each, and reads its
 * index into v->index; problems are recorded in s. Returns 0 or the
 * scan's hard error. */
int syncd_volume_read_archive(vscan_t *s, volume_t *v);

/* Hashes the files of vols marked `hash` and reads the archives not
 * listed from the cache, on opts->threads threads. Returns 0 or the first
 * hard error. */
int syncd_volume_hash_all(vscan_t *s, volume_t **vols, size_t nvols);

#endif
