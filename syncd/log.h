/* log.h - the daemon's log: one line per notable event on stderr.
 *
 * Lines read "2026-11-24T10:00:00.123Z WARN message". Messages below the
 * configured level are dropped. Used from any thread.
 */
#ifndef SYNCD_LOG_H
#define SYNCD_LOG_H

typedef enum {
    SYNCD_LOG_DEBUG = 0,
    SYNCD_LOG_INFO,
    SYNCD_LOG_WARN,
    SYNCD_LOG_ERROR,
} syncd_log_level_t;

/* Sets the lowest level that is written (default SYNCD_LOG_INFO). */
void syncd_log_set_level(syncd_log_level_t level);

/* Parses "debug", "info", "warn" or "error" into *out; -1 if unknown. */
int syncd_log_parse_level(syncd_log_level_t *out, const char *name);

/* Writes one line at level (printf-style), unless it is filtered out. */
void syncd_log(syncd_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
