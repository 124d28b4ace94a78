/* log.c - the daemon's log: timestamped, levelled lines on stderr.
 *
 * Each line is formatted into one buffer and written with a single
 * fputs() on stderr, so lines from different threads do not interleave.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static syncd_log_level_t min_level = SYNCD_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void syncd_log_set_level(syncd_log_level_t level)
{
    min_level = level;
}

int syncd_log_parse_level(syncd_log_level_t *out, const char *name)
{
    size_t i;

    for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (syncd_log_level_t)i;
            return 0;
        }
    }
    return -1;
}

void syncd_log(syncd_log_level_t level, const char *fmt, ...)
{
    static const char *const tags[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    char line[1024];
    struct timespec ts;
    struct tm tm;
    size_t n;
    va_list ap;

    if (level < min_level)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %s ",
                          ts.tv_nsec / 1000000, tags[level]);
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    n = strlen(line);
    line[n] = '\n';
    line[n + 1] = '\0';
    fputs(line, stderr);
}
