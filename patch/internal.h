/* internal.h - helpers shared by the files of the patch engine.
 *
 * Private to patch/: RFC 6901 escaping into a byte buffer (base/buf.h), the
 * depth guard every recursive walk goes through, strict and RFC equality, the
 * structural hash the array diff compares elements with, the pointer pieces
 * the patch operations need (length-aware parsing, strict array indexes), and
 * incremental SHA-256 with the primitives of the content hash (doc/HASH.md)
 * that hash.c and the hash tree (htree.c) share.
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

/* Returns a new copy of container v one level deep: the same members
 * (keys holding NUL too) or elements, shared by reference; NULL on out of
 * memory. */
json_t *syncd_json_copy_level(const json_t *v);

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

/* Returns 1 when the first n tokens of a and b (both at least n long) are
 * the same bytes, else 0. */
int syncd_ptr_prefix_equal(const syncd_ptr_t *a, const syncd_ptr_t *b,
                           size_t n);

/* Returns items (an array of *cap elements of size bytes) with room for n
 * elements: itself when it has it, else reallocated (doubling from 4, *cap
 * updated); NULL when out of memory, items then untouched. */
void *syncd_array_reserve(void *items, size_t *cap, size_t n, size_t size);

/* ---- SHA-256 and the Merkle content hash (doc/HASH.md) ------------------ */

/* An incremental SHA-256 computation (sha256.c). */
typedef struct syncd_sha256_ctx {
    uint32_t state[8];
    uint64_t total;
    unsigned char block[64];
    size_t used;
} syncd_sha256_ctx_t;

/* Starts a SHA-256 computation in ctx. */
void syncd_sha256_init(syncd_sha256_ctx_t *ctx);

/* Feeds len bytes at data into ctx. */
void syncd_sha256_update(syncd_sha256_ctx_t *ctx, const void *data, size_t len);

/* Writes the 32-byte digest of what ctx was fed into out; ctx is spent. */
void syncd_sha256_final(syncd_sha256_ctx_t *ctx, unsigned char out[32]);

/* Orders two keys by their bytes (memcmp, a prefix first): <0, 0 or >0. */
int syncd_key_cmp(const char *a, size_t alen, const char *b, size_t blen);

/* Writes the canonical text of the real d (shortest round-trip form, always
 * with a '.' or an exponent) into text and returns its length. */
size_t syncd_canonical_real(char text[40], double d);

/* Writes the decimal text of i (what "%" JSON_INTEGER_FORMAT prints) into
 * text, unterminated, and returns its length. */
size_t syncd_canonical_int(char text[24], json_int_t i);

/* Lists of at most this many entries are hashed flat, never chunked. */
#define SYNCD_HASH_FLAT_MAX 64

/* A chunk ends after an entry whose hash's last byte has the bits of
 * SYNCD_HASH_CHUNK_MASK zero, once it has SYNCD_HASH_CHUNK_MIN entries, and
 * always at SYNCD_HASH_CHUNK_MAX entries. */
#define SYNCD_HASH_CHUNK_MIN 16
#define SYNCD_HASH_CHUNK_MAX 256
#define SYNCD_HASH_CHUNK_MASK 0x1f

/* Writes the leaf hash of the scalar v (not an array or object) into out. */
void syncd_hash_scalar(unsigned char out[32], const json_t *v);

/* Writes the entry hash of the object member (key of len bytes, value hash
 * vh) into out. */
void syncd_hash_member(unsigned char out[32], const char *key, size_t len,
                       const unsigned char vh[32]);

/* Returns the end (exclusive) of the chunk that starts at items[start] in a
 * list of n entry hashes, by the content-defined boundary rule. */
size_t syncd_hash_chunk_end(const unsigned char (*items)[32], size_t start,
                            size_t n);

/* Writes the hash of the chunk of n entry hashes at items into out. */
void syncd_hash_chunk(unsigned char out[32], const unsigned char (*items)[32],
                      size_t n);

/* Writes the value hash of an object (is_object) or array whose top level
 * list is the n (at most SYNCD_HASH_FLAT_MAX) hashes at top into out. */
void syncd_hash_container(unsigned char out[32], int is_object,
                          const unsigned char (*top)[32], size_t n);

/* Writes the lower-case hex form of the 32 bytes at raw into out. */
void syncd_hash_hex(char out[SYNCD_HASH_HEX_LEN + 1],
                    const unsigned char raw[32]);

/* Appends to ops the RFC 6902 operations that turn a into b at the
 * location whose escaped pointer is path (len bytes), `depth`
 * arrays/objects deep: an add of b when a is NULL, a remove when b is
 * NULL, else their diff (syncd_patch_diff() at that path). */
int syncd_patch_diff_at(json_t *ops, const char *path, size_t len,
                        const json_t *a, const json_t *b, int depth,
                        syncd_error_t *err);

#endif
