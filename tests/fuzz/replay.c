/* replay.c - the main() of a fuzz target in the default (gcc) build: feeds
 * every file named on the command line, or found in a folder named there,
 * to LLVMFuzzerTestOneInput() once, so that ctest replays the corpus of
 * tests/fuzz/corpus/<target>/ under the sanitizers. Exits 0 when every
 * input ran (a crash aborts), 1 when a file cannot be read or none was
 * found.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Targets without state across inputs define no LLVMFuzzerInitialize. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

/* Reads path whole and runs it; -1 when it cannot be read. */
static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *data = NULL;
    long len;
    int rc = -1;

    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0)
        goto cleanup;
    data = malloc((size_t)len + 1);
    if (data == NULL || fread(data, 1, (size_t)len, f) != (size_t)len)
        goto cleanup;
    LLVMFuzzerTestOneInput((const uint8_t *)data, (size_t)len);
    rc = 0;

cleanup:
    if (rc != 0)
        fprintf(stderr, "replay: cannot read %s\n", path);
    free(data);
    if (f != NULL)
        fclose(f);
    return rc;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char **argv)
{
    size_t runs = 0;
    int failed = 0;

    if (LLVMFuzzerInitialize != NULL)
        LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        struct dirent **names = NULL;
        struct stat st;
        int n;

        if (stat(argv[i], &st) != 0 || !S_ISDIR(st.st_mode)) {
            failed |= run_file(argv[i]) != 0;
            runs++;
            continue;
        }
        n = scandir(argv[i], &names, NULL, by_name);
        for (int j = 0; j < n; j++) {
            char path[4096];

            if (names[j]->d_name[0] != '.') {
                snprintf(path, sizeof(path), "%s/%s", argv[i],
                         names[j]->d_name);
                failed |= run_file(path) != 0;
                runs++;
            }
            free(names[j]);
        }
        free(names);
        failed |= n < 0;
    }
    printf("replay: %zu input(s)\n", runs);
    return failed || runs == 0;
}
