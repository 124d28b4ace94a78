/* internal.h - helpers shared by the files of the patch engine.
 *
 * Private to patch/: RFC 6901 escaping into a byte buffer (base/buf.h), the
 * depth guard every recursive walk goes through, strict and RFC equality, the
 * structural hash the array diff compares elements with, and the pointer pieces
 * the patch operations need (length-aware parsing, strict array indexes).
 */
#ifndef SYNCD_PATCH_INTERNAL_H
#define SYNCD_PATCH_INTERNAL_H

#include <stdint.h>

#include "base/buf.h"
#include "syncd/patch.h"

/* Appends the RFC 6901 escaped form of a token to b. */
int syncd_ptr_append_escaped(syncd_buf_t *b, const char *token, size_t len);

/* Returns 0 when v nests at most SYNCD_PATCH_MAX_DEPTH arrays/objects,
 * else `code` with a message naming `what`. */
int syncd_json_check_depth(const json_t *v, int code, const char *what,
                           syncd_error_t *err);

/* Returns 1 when v, placed inside `depth` arrays/objects, nests at most
 * SYNCD_PATCH_MAX_DEPTH deep, else 0. */
int syncd_depth_fits(const json_t *v, size_t depth);

/* Returns a deep copy of the depth-checked v (a new reference), keeping
 * object keys that contain NUL (json_deep_copy() of jansson 2.14 cuts
 * them at the NUL); NULL on out of memory. */
json_t *syncd_json_deep_copy(const json_t *v);

/* Deep-copies v (already depth-checked) into *out (a new reference);
 * SYNCD_ENOMEM on failure. */
int syncd_json_copy(json_t **out, const json_t *v, syncd_error_t *err);

/* Returns the byte length of the depth-checked v's canonical serialization
 * (what syncd_json_canonical() makes of it) without building it. */
size_t syncd_canonical_size(const json_t *v);

/* Returns the byte length of the canonical JSON string of the len bytes at
 * s, quotes and escapes included. */
size_t syncd_canonical_string_size(const char *s, size_t len);

/* Equality of two depth-checked values. With `rfc` set numbers compare by
 * value (1 == 1.0); without it the comparison is exact: integer and real
 * differ, as do 0.0 and -0.0, so equal values have equal canonical bytes. */
int syncd_json_values_equal(const json_t *a, const json_t *b, int rfc);

/* Returns a 64-bit hash of v that is equal for values equal under
 * syncd_json_values_equal(a, b, 0), whatever the member order. `depth` is the
 * number of arrays/objects around v; when v nests past SYNCD_PATCH_MAX_DEPTH
 * the walk stops there and *too_deep is set to 1. */
uint64_t syncd_json_value_hash(const json_t *v, int depth, int *too_deep);

/* Parses a pointer of len bytes (may contain NUL) into *out (freed with
 * syncd_ptr_free()). */
int syncd_ptr_parse_n(syncd_ptr_t **out, const char *text, size_t len,
                      syncd_error_t *err);

/* Resolves token (len bytes) as an index into an array of `size` elements.
 * "-" means `size` and is accepted only with allow_end; an index equal to
 * size is accepted only with allow_end. Returns 0 and *index, or
 * SYNCD_ENOTFOUND with *why set to a static reason. */
int syncd_ptr_array_index(size_t *index, const char *token, size_t len,
                          size_t size, int allow_end, const char **why);

/* Resolves the first `count` tokens of ptr in doc into *out (borrowed);
 * on failure returns SYNCD_ENOTFOUND with *why (static) and the failing
 * token's position in *at. */
int syncd_ptr_walk(json_t **out, json_t *doc, const syncd_ptr_t *ptr,
                   size_t count, const char **why, size_t *at);

/* Appends to ops the RFC 6902 operations that turn a into b at the
 * location whose escaped pointer is path (len bytes), `depth`
 * arrays/objects deep: an add of b when a is NULL, a remove when b is
 * NULL, else their diff (syncd_patch_diff() at that path). */
int syncd_patch_diff_at(json_t *ops, const char *path, size_t len,
                        const json_t *a, const json_t *b, int depth,
                        syncd_error_t *err);

#endif
