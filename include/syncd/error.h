/* error.h - syncd error codes and the caller-passed error struct.
 *
 * Every syncd function that can fail returns an int: 0 on success or one of
 * the negative SYNCD_E* codes below. Detail goes into an optional
 * syncd_error_t the caller passes in (NULL is always allowed). The first
 * error recorded wins: later calls to syncd_error_set() on a struct that
 * already holds an error leave it unchanged, so the root cause survives the
 * unwinding of a call chain. There is no thread-local "last error".
 */
#ifndef SYNCD_ERROR_H
#define SYNCD_ERROR_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes; every failing call returns one of these (all negative). */
enum {
    SYNCD_OK = 0,
    SYNCD_ENOMEM = -1,        /* out of memory */
    SYNCD_EINVAL = -2,        /* invalid argument, id, collection or JSON */
    SYNCD_ENOTFOUND = -3,     /* no such document (or path) */
    SYNCD_EEXISTS = -4,       /* document already exists */
    SYNCD_ECONFLICT = -5,     /* retries exhausted, or a test op failed */
    SYNCD_EPRECONDITION = -6, /* expected version did not match */
    SYNCD_EPATCH = -7,        /* invalid patch, or a patch op failed */
    SYNCD_ETIMEDOUT = -8,     /* a deadline passed */
    SYNCD_ECANCELED = -9,     /* operation canceled (shutdown) */
    SYNCD_EBACKEND = -10,     /* the backend (MongoDB, RocksDB, Redis) failed */
    SYNCD_ETOOBIG = -11,      /* a body or event exceeds its size limit */
};

/* Detail of the first error of a call chain. */
typedef struct syncd_error {
    int code;          /* SYNCD_E* code, 0 when no error was recorded */
    char backend[16];  /* "mongodb", "rocksdb", "redis", or "" */
    int backend_code;  /* the backend's own error code, 0 if none */
    char message[512]; /* names the offending input; always NUL-terminated */
} syncd_error_t;

/* Resets err (may be NULL) to "no error". */
void syncd_error_clear(syncd_error_t *err);

/* Records code and a printf-style message in err unless err is NULL or
 * already holds an error; returns code so callers can `return
 * syncd_error_set(...)`. */
int syncd_error_set(syncd_error_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like syncd_error_set(), also naming the backend and its own error code. */
int syncd_error_set_backend(syncd_error_t *err, int code, const char *backend,
                            int backend_code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Returns the static lower-case name of code ("conflict", "not_found", ...),
 * as used in HTTP error bodies; "unknown" for codes not listed above. */
const char *syncd_strerror(int code);

#ifdef __cplusplus
}
#endif

#endif
