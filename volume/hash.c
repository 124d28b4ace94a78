/* hash.c - hashing for volumes: files on a small pool of threads, and the
 * volume digest.
 *
 * File contents are hashed with OpenSSL's SHA-256 (measured on the
 * project's machine: about 1.1 GB/s with the CPU's SHA extensions, where
 * the portable SHA-256 of patch/ gives 170 MB/s, as does sha256sum). The
 * pool runs one thread per online CPU unless told otherwise; each takes
 * the next job (a file, or a whole archive) until none is left.
 *
 * The volume digest is fixed here byte for byte, so that any tool can
 * compute it:
 *
 *   1. Take the index's files and sort them by path, comparing bytes
 *      (paths are unique in an index).
 *   2. Leaf i = SHA-256 of: one 0x00 byte, the path's bytes, one 0x00
 *      byte, the 64 lower-case hex characters of the file's SHA-256.
 *   3. While more than one node is left, replace the list by its parents:
 *      parent = SHA-256 of one 0x01 byte, the 32 raw bytes of the left
 *      node and the 32 raw bytes of the right node, pairing nodes (0,1),
 *      (2,3), ...; an odd last node is carried up unchanged.
 *   4. The digest is "sha256:" and the lower-case hex of the last node. A
 *      volume with no file has the digest of the empty string
 *      (sha256:e3b0c442...b855).
 *
 * The leading 0x00 / 0x01 bytes keep a leaf from ever being read as a
 * parent, whatever the path.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define READ_BUF (1 << 20)

static void to_hex(char *hex, const unsigned char *raw, size_t n)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = digits[raw[i] >> 4];
        hex[2 * i + 1] = digits[raw[i] & 15];
    }
    hex[2 * n] = '\0';
}

/* Writes the lower-case hex SHA-256 of the file at path into hex, reading
 * it through buf; *len gets the bytes read. Returns 0, or -1 with errno
 * set. */
static int hash_file(char hex[65], int64_t *len, const char *path,
                     unsigned char *buf, size_t bufsize)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char raw[32];
    int fd = -1, rc = -1, saved;
    ssize_t n;

    *len = 0;
    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        errno = ENOMEM;
        goto cleanup;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        goto cleanup;
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    while ((n = read(fd, buf, bufsize)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto cleanup;
        EVP_DigestUpdate(ctx, buf, (size_t)n);
        *len += n;
    }
    EVP_DigestFinal_ex(ctx, raw, NULL);
    to_hex(hex, raw, sizeof(raw));
    rc = 0;
cleanup:
    saved = errno;
    if (fd >= 0)
        close(fd);
    EVP_MD_CTX_free(ctx);
    errno = saved;
    return rc;
}

/* One job of the pool: a file of a folder volume, or a whole archive
 * (file NULL). */
typedef struct job {
    volume_t *v;
    vfile_t *file;
} job_t;

typedef struct pool {
    vscan_t *s;
    job_t *jobs;
    size_t njobs;
    size_t next; /* taken with an atomic add */
} pool_t;

/* Hashes one file of a folder volume; a read failure or a size that
 * changed under the scan is a problem of that file. */
static int hash_one(vscan_t *s, volume_t *v, vfile_t *f, unsigned char *buf)
{
    size_t n = strlen(v->abs) + strlen(f->path) + 2;
    char *path = malloc(n);
    int64_t len;
    int rc = 0;

    if (path == NULL)
        return SYNCD_ENOMEM;
    snprintf(path, n, "%s/%s", v->abs, f->path);
    if (hash_file(f->hex, &len, path, buf, READ_BUF) < 0) {
        f->hex[0] = '\0';
        rc = syncd_volume_problem(s, v, f->path, "read",
                                  "volume %s: file %s: cannot read: %s",
                                  VNAME(v), f->path, strerror(errno));
    } else if (len != f->size) {
        f->hex[0] = '\0';
        rc = syncd_volume_problem(
            s, v, f->path, "size",
            "volume %s: file %s: changed while scanned (%lld bytes, then "
            "%lld)",
            VNAME(v), f->path, (long long)f->size, (long long)len);
    }
    free(path);
    return rc;
}

static void *worker(void *arg)
{
    pool_t *p = arg;
    unsigned char *buf = malloc(READ_BUF);

    for (;;) {
        size_t i = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
        int rc, stop;

        if (i >= p->njobs)
            break;
        pthread_mutex_lock(&p->s->lock);
        stop = p->s->rc;
        pthread_mutex_unlock(&p->s->lock);
        if (stop != 0)
            break;
        if (buf == NULL)
            rc = SYNCD_ENOMEM;
        else if (p->jobs[i].file == NULL)
            rc = syncd_volume_read_archive(p->s, p->jobs[i].v);
        else
            rc = hash_one(p->s, p->jobs[i].v, p->jobs[i].file, buf);
        if (rc == SYNCD_ENOMEM) {
            pthread_mutex_lock(&p->s->lock);
            if (p->s->rc == 0)
                p->s->rc = syncd_error_set(p->s->err, SYNCD_ENOMEM,
                                           "out of memory while hashing");
            pthread_mutex_unlock(&p->s->lock);
        }
    }
    free(buf);
    return NULL;
}

int syncd_volume_hash_all(vscan_t *s, volume_t **vols, size_t nvols)
{
    pool_t p = {s, NULL, 0, 0};
    pthread_t threads[64];
    size_t njobs = 0, nthreads, started = 0;
    long cpus;
    int rc;

    for (size_t i = 0; i < nvols; i++) {
        if (vols[i]->archive && !vols[i]->cached)
            njobs++;
        for (size_t j = 0; j < vols[i]->nfiles; j++)
            njobs += vols[i]->files[j].hash;
    }
    if (njobs == 0)
        return 0;
    p.jobs = malloc(njobs * sizeof(*p.jobs));
    if (p.jobs == NULL)
        return syncd_error_set(s->err, SYNCD_ENOMEM, "out of memory");
    /* Archives first: each is one long job. */
    for (size_t i = 0; i < nvols; i++) {
        if (vols[i]->archive && !vols[i]->cached)
            p.jobs[p.njobs++] = (job_t){vols[i], NULL};
    }
    for (size_t i = 0; i < nvols; i++) {
        for (size_t j = 0; j < vols[i]->nfiles; j++) {
            if (vols[i]->files[j].hash)
                p.jobs[p.njobs++] = (job_t){vols[i], &vols[i]->files[j]};
        }
    }
    cpus =
        s->opts->threads > 0 ? s->opts->threads : sysconf(_SC_NPROCESSORS_ONLN);
    nthreads = cpus > 0 ? (size_t)cpus : 1;
    if (nthreads > sizeof(threads) / sizeof(threads[0]))
        nthreads = sizeof(threads) / sizeof(threads[0]);
    if (nthreads > njobs)
        nthreads = njobs;
    for (size_t i = 1; i < nthreads; i++) {
        if (pthread_create(&threads[started], NULL, worker, &p) == 0)
            started++;
    }
    worker(&p);
    for (size_t i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    free(p.jobs);
    pthread_mutex_lock(&s->lock);
    rc = s->rc;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

typedef struct leaf {
    const char *path;
    const char *hex;
} leaf_t;

static int leaf_cmp(const void *a, const void *b)
{
    return strcmp(((const leaf_t *)a)->path, ((const leaf_t *)b)->path);
}

int syncd_volume_digest(char out[SYNCD_VOLUME_DIGEST_LEN + 1],
                        const json_t *files, syncd_error_t *err)
{
    size_t n = json_array_size(files), i;
    leaf_t *leaves = NULL;
    unsigned char(*nodes)[32] = NULL;
    unsigned char pair[65];
    json_t *f;
    int rc = 0;

    leaves = malloc((n ? n : 1) * sizeof(*leaves));
    nodes = malloc((n ? n : 1) * sizeof(*nodes));
    if (leaves == NULL || nodes == NULL) {
        rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
        goto cleanup;
    }
    json_array_foreach (files, i, f) {
        const char *path = json_string_value(json_object_get(f, "path"));
        const char *digest = json_string_value(json_object_get(f, "digest"));

        if (path == NULL || digest == NULL ||
            strncmp(digest, "sha256:", 7) != 0 || strlen(digest) != 71) {
            rc = syncd_error_set(err, SYNCD_EINVAL,
                                 "file %zu of the index: no path or no "
                                 "sha256: digest",
                                 i);
            goto cleanup;
        }
        leaves[i] = (leaf_t){path, digest + 7};
    }
    qsort(leaves, n, sizeof(*leaves), leaf_cmp);
    for (i = 0; i < n; i++) {
        size_t plen = strlen(leaves[i].path);
        unsigned char *buf = malloc(plen + 66);

        if (buf == NULL) {
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory");
            goto cleanup;
        }
        buf[0] = 0;
        memcpy(buf + 1, leaves[i].path, plen);
        buf[plen + 1] = 0;
        memcpy(buf + plen + 2, leaves[i].hex, 64);
        EVP_Digest(buf, plen + 66, nodes[i], NULL, EVP_sha256(), NULL);
        free(buf);
    }
    if (n == 0)
        EVP_Digest("", 0, nodes[0], NULL, EVP_sha256(), NULL);
    while (n > 1) {
        size_t up = 0;

        for (i = 0; i + 1 < n; i += 2) {
            pair[0] = 1;
            memcpy(pair + 1, nodes[i], 32);
            memcpy(pair + 33, nodes[i + 1], 32);
            EVP_Digest(pair, sizeof(pair), nodes[up++], NULL, EVP_sha256(),
                       NULL);
        }
        if (i < n)
            memmove(nodes[up++], nodes[i], 32);
        n = up;
    }
    memcpy(out, "sha256:", 7);
    to_hex(out + 7, nodes[0], 32);
cleanup:
    free(leaves);
    free(nodes);
    return rc;
}
