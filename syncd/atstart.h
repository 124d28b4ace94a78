/* atstart.h - the daemon's check of its store at start (--verify-at-start,
 * --repair) and the collections it then refuses to serve.
 *
 * Runs before the node and the HTTP server start, so it may block.
 */
#ifndef SYNCD_ATSTART_H
#define SYNCD_ATSTART_H

#include <jansson.h>

#include "syncd/store.h"

#include "config.h"

/* Runs syncd_store_check_start() on store as cfg says, logs what it found
 * and, in the embedded default with --repair, quarantines each corrupt
 * document: its stored record goes to a line of
 * <data-dir>/quarantine/<coll>-<time>.jsonl and it is deleted (a tombstone
 * at its next version, published like any delete). *report gets the
 * check's report (a new reference) plus "refused": {C: message} naming
 * each collection still not to be served and why, and with --repair
 * "repaired": {C: {"ids","file"}}. */
int syncd_atstart_run(json_t **report, syncd_store_t *store,
                      const syncd_config_t *cfg, syncd_error_t *err);

/* Returns the message refusing coll (borrowed from report, which may be
 * NULL), or NULL when coll is served. */
const char *syncd_atstart_refused(const json_t *report, const char *coll);

#endif
