/* volume.h - volumes: scan, index and compare folders and archives whose
 * root holds volume-index.json (DESIGN.md section 9).
 *
 * A volume is a folder, or a .tar / .tar.gz / .tgz archive read in place,
 * whose root holds volume-index.json:
 *
 *   {"name":"hg38",
 *    "files":[{"path":"chr1.fa","size":1024,"digest":"sha256:<64 hex>"}]}
 *
 * syncd_volume_scan() checks a folder of volumes (or one volume) against
 * their indexes and returns the VolumeCollection document that syncd
 * syncs; what it finds wrong comes back as a list of problems, each naming
 * the volume and the file. The calls are blocking and use a small pool of
 * hashing threads; a C server runs them off its event loop.
 */
#ifndef SYNCD_VOLUME_H
#define SYNCD_VOLUME_H

#include <jansson.h>
#include <stdint.h>

#include "syncd/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The index file at the root of every volume. */
#define SYNCD_VOLUME_INDEX "volume-index.json"

/* Length of "sha256:" and 64 hex digits, without the NUL. */
#define SYNCD_VOLUME_DIGEST_LEN 71

/* Defaults of the scan limits. */
#define SYNCD_VOLUME_MAX_FILES 1000000
#define SYNCD_VOLUME_MAX_DEPTH 32
#define SYNCD_VOLUME_MAX_BYTES ((int64_t)1 << 40)

/* Options of a scan; set the defaults with syncd_volume_options_init(). */
typedef struct syncd_volume_options {
    int64_t max_files; /* files read over the whole scan (1,000,000) */
    int max_depth;     /* path components below a volume's root (32) */
    int64_t max_bytes; /* bytes of files read over the whole scan (1 TiB) */
    int threads;       /* hashing threads; 0 (default): one per online CPU */
    /* Borrowed: the cache an earlier scan of the same folder returned, or
     * NULL (default). A file (or archive) whose size and modification time
     * match its cache entry is not read again. */
    const json_t *cache;
} syncd_volume_options_t;

/* Sets every field of opts to its documented default. */
void syncd_volume_options_init(syncd_volume_options_t *opts);

/* Scans dir: a folder of volumes, one folder volume, or one archive.
 * *doc gets the VolumeCollection document {"kind","name","volumes"} of
 * the volumes that passed every check (name is the document's name), and
 * *problems an array of {"volume","file","problem","message"}, one per
 * failed check ("missing", "extra", "size", "digest", "path", "symlink",
 * "index", "type", "read"); "file" is null for a problem of the volume as a
 * whole. With cache not NULL, *cache gets what the next scan of dir can
 * skip (pass it back as opts->cache). All three are new references.
 * Returns 0 when the scan ran (check *problems), SYNCD_ETOOBIG when a limit
 * was exceeded (the message names the flag, the volume and the file),
 * SYNCD_EINVAL or SYNCD_ENOTFOUND when dir cannot be read, SYNCD_ENOMEM. */
int syncd_volume_scan(json_t **doc, json_t **problems, json_t **cache,
                      const char *dir, const char *name,
                      const syncd_volume_options_t *opts, syncd_error_t *err);

/* Writes dir/volume-index.json for the folder dir, hashing every file;
 * name is the volume's name (NULL: dir's base name). Refuses with
 * SYNCD_EEXISTS when the index exists, SYNCD_EINVAL when a symlink leaves
 * dir or a name is not a valid volume name, SYNCD_ETOOBIG past a limit. */
int syncd_volume_init(const char *dir, const char *name,
                      const syncd_volume_options_t *opts, syncd_error_t *err);

/* Writes the volume digest of an index's files array (objects with "path"
 * and "digest") into out: "sha256:" and the hex Merkle root of volume.c.
 * SYNCD_EINVAL when an entry lacks either. */
int syncd_volume_digest(char out[SYNCD_VOLUME_DIGEST_LEN + 1],
                        const json_t *files, syncd_error_t *err);

/* Compares the VolumeCollection local (from a scan) with synced (the
 * document syncd holds): *diffs gets a new array of {"volume","file",
 * "problem","message"}, one per volume that is missing locally, extra, or
 * differs in digest, size or file count. Returns 0 or SYNCD_ENOMEM. */
int syncd_volume_compare(json_t **diffs, const json_t *local,
                         const json_t *synced);

#ifdef __cplusplus
}
#endif

#endif
