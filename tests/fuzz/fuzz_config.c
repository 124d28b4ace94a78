/* fuzz_config.c - fuzz target: the daemon's flag parsing.
 *
 * The input is a command line: arguments separated by NUL bytes, after
 * argv[0]. Invariants: parsing returns 0 or SYNCD_EINVAL with a message;
 * a parsed configuration has a listen port in 0..65535 and a host; every
 * argument also goes through the size parser alone.
 */
#include <stdlib.h>
#include <string.h>

#include "syncd/config.h"

#include "fuzz.h"

#define MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1), *argv[MAX_ARGS + 2];
    syncd_config_t cfg;
    syncd_error_t err;
    int argc = 1, rc;
    uint64_t bytes;

    SYNCD_FUZZ_CHECK(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';
    argv[0] = "syncd";
    for (size_t i = 0; i <= size && argc <= MAX_ARGS; i++) {
        if (i == 0 || text[i - 1] == '\0')
            argv[argc++] = text + i;
        while (i < size && text[i] != '\0')
            i++;
    }
    argv[argc] = NULL;
    for (int i = 1; i < argc; i++)
        syncd_config_parse_size(&bytes, argv[i]);
    syncd_error_clear(&err);
    memset(&cfg, 0, sizeof(cfg));
    rc = syncd_config_parse(&cfg, argc, argv, &err);
    SYNCD_FUZZ_CHECK(rc == 0 || rc == SYNCD_EINVAL);
    if (rc != 0)
        SYNCD_FUZZ_CHECK(err.message[0] != '\0');
    else
        SYNCD_FUZZ_CHECK(cfg.port >= 0 && cfg.port <= 65535);
    syncd_config_free(&cfg);
    free(text);
    return 0;
}
