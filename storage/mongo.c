/* mongo.c - MongoDB store of record (work in progress).
 *
 * Placeholder so that the storage library links while the MongoDB backend
 * is being written; syncd_backend_mongo_open() reports SYNCD_EBACKEND.
 */
#include "internal.h"

int syncd_backend_mongo_open(syncd_backend_t **out, const char *uri,
                             const char *db, int64_t timeout_ms,
                             syncd_error_t *err)
{
    (void)uri;
    (void)db;
    (void)timeout_ms;
    *out = NULL;
    return syncd_error_set_backend(err, SYNCD_EBACKEND, "mongodb", 0,
                                   "mongodb backend not built yet");
}
