/* error.c - the caller-passed error struct shared by every syncd module.
 *
 * Lives in base/, the lowest layer, so that every module can record
 * errors the same way. The first error recorded in a struct wins.
 */
#include <stdio.h>
#include <string.h>

#include "syncd/error.h"

void syncd_error_clear(syncd_error_t *err)
{
    if (err == NULL)
        return;
    memset(err, 0, sizeof(*err));
}

static int error_vset(syncd_error_t *err, int code, const char *backend,
                      int backend_code, const char *fmt, va_list ap)
{
    if (err == NULL || err->code != 0)
        return code;
    err->code = code;
    snprintf(err->backend, sizeof(err->backend), "%s",
             backend != NULL ? backend : "");
    err->backend_code = backend_code;
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    return code;
}

int syncd_error_set(syncd_error_t *err, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_vset(err, code, NULL, 0, fmt, ap);
    va_end(ap);
    return code;
}

int syncd_error_set_backend(syncd_error_t *err, int code, const char *backend,
                            int backend_code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_vset(err, code, backend, backend_code, fmt, ap);
    va_end(ap);
    return code;
}

const char *syncd_strerror(int code)
{
    switch (code) {
    case SYNCD_OK:
        return "ok";
    case SYNCD_ENOMEM:
        return "out_of_memory";
    case SYNCD_EINVAL:
        return "invalid";
    case SYNCD_ENOTFOUND:
        return "not_found";
    case SYNCD_EEXISTS:
        return "exists";
    case SYNCD_ECONFLICT:
        return "conflict";
    case SYNCD_EPRECONDITION:
        return "precondition_failed";
    case SYNCD_EPATCH:
        return "invalid_patch";
    case SYNCD_ETIMEDOUT:
        return "timeout";
    case SYNCD_ECANCELED:
        return "canceled";
    case SYNCD_EBACKEND:
        return "backend";
    case SYNCD_ETOOBIG:
        return "too_large";
    default:
        return "unknown";
    }
}
