/* fuzz_event.c - fuzz target: event decode and signature check.
 *
 * The input is the bytes of an event as the bus delivers them. They are
 * decoded without and with a secret. Invariants: whatever decodes under
 * the secret decodes without it; a decoded event, re-signed without its
 * seq and given a seq the way the Redis bus does (sign, then splice seq
 * in), decodes under the secret to the same members with that seq, and
 * fails under another secret; its "ts" converts to microseconds.
 */
#include <stdlib.h>
#include <string.h>

#include "pubsub/internal.h"
#include "syncd/bus.h"

#include "fuzz.h"

#define SECRET "fuzz-secret"

/* Re-signs event (which decoded) and checks that the bus path accepts it. */
static void resign(const json_t *event)
{
    json_t *body = json_deep_copy(event), *back = NULL;
    char *text = NULL, *spliced = NULL;
    size_t len = 0, spliced_len = 0;
    int64_t us;

    SYNCD_FUZZ_CHECK(body != NULL);
    SYNCD_FUZZ_CHECK(
        syncd_bus_ts_micros(json_string_value(json_object_get(event, "ts")),
                            &us) == 0);
    json_object_del(body, "seq");
    json_object_del(body, "sig");
    text = syncd_event_encode(body, SECRET, &len);
    SYNCD_FUZZ_CHECK(text != NULL);
    spliced = syncd_bus_splice_seq(text, len, 7, &spliced_len);
    SYNCD_FUZZ_CHECK(spliced != NULL && strlen(spliced) == spliced_len);
    SYNCD_FUZZ_CHECK(
        syncd_event_decode(&back, spliced, spliced_len, 0, SECRET, NULL) == 0);
    SYNCD_FUZZ_CHECK(json_integer_value(json_object_get(back, "seq")) == 7);
    SYNCD_FUZZ_CHECK(syncd_bus_event_verify(back, "other", NULL) != 0);
    json_object_del(back, "seq");
    SYNCD_FUZZ_CHECK(json_equal(back, body));
    json_decref(back);
    json_decref(body);
    free(text);
    free(spliced);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *plain = NULL, *signed_ = NULL;
    int rc_plain, rc_signed;
    size_t len = 0;
    char *spliced;

    rc_plain =
        syncd_event_decode(&plain, (const char *)data, size, 0, NULL, NULL);
    rc_signed =
        syncd_event_decode(&signed_, (const char *)data, size, 0, SECRET, NULL);
    SYNCD_FUZZ_CHECK((rc_plain == 0) == (plain != NULL));
    SYNCD_FUZZ_CHECK((rc_signed == 0) == (signed_ != NULL));
    if (rc_signed == 0)
        SYNCD_FUZZ_CHECK(rc_plain == 0);
    if (rc_plain == 0)
        resign(plain);
    spliced = syncd_bus_splice_seq((const char *)data, size, 1, &len);
    if (spliced != NULL)
        SYNCD_FUZZ_CHECK(strlen(spliced) <= len);
    free(spliced);
    json_decref(plain);
    json_decref(signed_);
    return 0;
}
