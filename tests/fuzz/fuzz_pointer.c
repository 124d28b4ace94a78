/* fuzz_pointer.c - fuzz target: RFC 6901 JSON Pointer parsing.
 *
 * The input is a pointer in both forms (string and URI fragment), resolved
 * against the RFC 6901 section 5 document; or a JSON array of
 * {"doc","pointer"} cases (json-pointer-tests.json seeds the corpus as
 * it is). Invariants: a parsed pointer without NUL bytes in its tokens
 * formats to a string that parses back to the same tokens, and escaping each
 * token gives back that part of the formatted string.
 */
#include <stdlib.h>
#include <string.h>

#include "syncd/patch.h"

#include "fuzz.h"

static json_t *rfc_doc;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    rfc_doc = json_pack("{s:[s,s], s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, "
                        "s:i}",
                        "foo", "bar", "baz", "", 0, "a/b", 1, "c%d", 2, "e^f",
                        3, "g|h", 4, "i\\j", 5, "k\"l", 6, " ", 7, "m~n", 8);
    return 0;
}

/* Checks the round trip of a parsed pointer and resolves it in doc. */
static void check_parsed(const syncd_ptr_t *ptr, json_t *doc)
{
    char *text = syncd_ptr_format(ptr);
    syncd_ptr_t *again = NULL;
    json_t *found = NULL, *parent = NULL;
    size_t n = syncd_ptr_count(ptr), off = 0;

    SYNCD_FUZZ_CHECK(text != NULL);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *tok = syncd_ptr_token(ptr, i, &len);

        if (memchr(tok, '\0', len) != NULL) {
            free(text); /* its string form ends there (patch.h) */
            text = NULL;
        }
    }
    if (text == NULL)
        return;
    SYNCD_FUZZ_CHECK(syncd_ptr_parse(&again, text, NULL) == 0);
    SYNCD_FUZZ_CHECK(syncd_ptr_count(again) == n);
    for (size_t i = 0; i < n; i++) {
        size_t la, lb;
        const char *a = syncd_ptr_token(ptr, i, &la);
        const char *b = syncd_ptr_token(again, i, &lb);
        char *esc = syncd_ptr_escape(a, la);

        SYNCD_FUZZ_CHECK(la == lb && memcmp(a, b, la) == 0);
        SYNCD_FUZZ_CHECK(esc != NULL && text[off] == '/');
        SYNCD_FUZZ_CHECK(strncmp(text + off + 1, esc, strlen(esc)) == 0);
        off += 1 + strlen(esc);
        free(esc);
    }
    SYNCD_FUZZ_CHECK(text[off] == '\0');
    if (syncd_ptr_get(&found, doc, ptr, NULL) == 0)
        SYNCD_FUZZ_CHECK(found != NULL);
    if (n > 0 && syncd_ptr_parent(&parent, doc, ptr, NULL) == 0)
        SYNCD_FUZZ_CHECK(json_is_object(parent) || json_is_array(parent));
    syncd_ptr_free(again);
    free(text);
}

static void check_text(const char *text, json_t *doc)
{
    syncd_ptr_t *ptr = NULL;

    if (syncd_ptr_parse(&ptr, text, NULL) == 0)
        check_parsed(ptr, doc);
    syncd_ptr_free(ptr);
    ptr = NULL;
    if (syncd_ptr_parse_fragment(&ptr, text, NULL) == 0)
        check_parsed(ptr, doc);
    syncd_ptr_free(ptr);
}

static void check_case(json_t *c)
{
    json_t *doc = json_object_get(c, "doc");
    const char *text = json_string_value(json_object_get(c, "pointer"));

    if (text != NULL)
        check_text(text, doc != NULL ? doc : rfc_doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    json_t *input = syncd_fuzz_json(data, size);

    SYNCD_FUZZ_CHECK(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';
    check_text(text, rfc_doc);
    if (input != NULL)
        syncd_fuzz_each_case(input, check_case);
    json_decref(input);
    free(text);
    return 0;
}
