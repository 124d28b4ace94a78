/* patch.h - the patch engine: RFC 6901 JSON Pointer, RFC 6902 JSON Patch
 * (apply and diff), RFC 7396 Merge Patch (apply and generate), and the
 * canonical serialization and content hash of a JSON value.
 *
 * Pure functions over jansson values; no I/O, no global state, safe to call
 * from any thread on values no other thread mutates.
 *
 * Ownership: a `json_t **out` receives a new reference the caller must
 * json_decref(); `json_t *` arguments are borrowed and never modified.
 * Returned `char *` strings are malloc'd and freed by the caller with free().
 */
#ifndef SYNCD_PATCH_H
#define SYNCD_PATCH_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "syncd/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Deepest nesting of arrays/objects the engine accepts in any input. */
#define SYNCD_PATCH_MAX_DEPTH 512

/* ---- RFC 6901 JSON Pointer ---------------------------------------------- */

/* A parsed JSON Pointer: a sequence of unescaped reference tokens. */
typedef struct syncd_ptr syncd_ptr_t;

/* Parses the string form of a pointer ("" or "/a/b~1c") into *out, which the
 * caller frees with syncd_ptr_free(); SYNCD_EINVAL names the bad escape or
 * missing leading '/'. */
int syncd_ptr_parse(syncd_ptr_t **out, const char *text, syncd_error_t *err);

/* Parses the URI-fragment form ("#/a%20b"): percent-decodes, then parses as
 * syncd_ptr_parse(); *out is freed with syncd_ptr_free(). */
int syncd_ptr_parse_fragment(syncd_ptr_t **out, const char *fragment,
                             syncd_error_t *err);

/* Frees a pointer from syncd_ptr_parse*(); NULL is ignored. */
void syncd_ptr_free(syncd_ptr_t *ptr);

/* Returns the number of reference tokens (0 for the whole document). */
size_t syncd_ptr_count(const syncd_ptr_t *ptr);

/* Returns the unescaped token i (borrowed; lives as long as ptr), with its
 * byte length in *len when len is not NULL (tokens may contain NUL). */
const char *syncd_ptr_token(const syncd_ptr_t *ptr, size_t i, size_t *len);

/* Returns the string form of ptr, escaped; malloc'd, caller frees. A C
 * string cannot hold a NUL byte: the string ends at the first token that
 * holds one (only messages use this form). */
char *syncd_ptr_format(const syncd_ptr_t *ptr);

/* Returns token escaped for use in a pointer ("a/b" -> "a~1b", "m~n" ->
 * "m~0n"); malloc'd, caller frees; NULL on out of memory. */
char *syncd_ptr_escape(const char *token, size_t len);

/* Resolves ptr in doc and stores the value in *out (borrowed from doc);
 * SYNCD_ENOTFOUND names the first token that does not resolve, including an
 * array index with a leading zero, out of range, or "-". */
int syncd_ptr_get(json_t **out, json_t *doc, const syncd_ptr_t *ptr,
                  syncd_error_t *err);

/* Resolves all but the last token of ptr (which must have at least one) and
 * stores that container in *parent (borrowed from doc); SYNCD_ENOTFOUND when
 * it does not exist or is not an object or array. */
int syncd_ptr_parent(json_t **parent, json_t *doc, const syncd_ptr_t *ptr,
                     syncd_error_t *err);

/* ---- RFC 6902 JSON Patch ------------------------------------------------ */

/* Checks that patch is a well-formed RFC 6902 patch (an array of operation
 * objects with valid members and pointers) without applying it; SYNCD_EPATCH
 * names the first bad operation by index. */
int syncd_patch_validate(const json_t *patch, syncd_error_t *err);

/* Applies patch to doc atomically and stores the result in *out (a new
 * value; doc is never modified, even on failure). SYNCD_EPATCH when the
 * patch is malformed or an operation fails; the message starts with
 * "operation N (op path):" naming the failing operation and why. A failing
 * `test` operation gives SYNCD_ECONFLICT with the same kind of message. */
int syncd_patch_apply(json_t **out, const json_t *doc, const json_t *patch,
                      syncd_error_t *err);

/* What applying one patch may cost; syncd_patch_limits_init() sets the
 * defaults. A field of 0 means unbounded. */
typedef struct syncd_patch_limits {
    size_t max_bytes; /* canonical size of the result; default 8 MiB */
    size_t max_ops;   /* operations in one JSON Patch; default 10,000 */
    size_t doc_size;  /* the document's canonical size when the caller knows
                         it (it is then not counted); default 0: unknown */
} syncd_patch_limits_t;

/* Sets every field of limits to its documented default. */
void syncd_patch_limits_init(syncd_patch_limits_t *limits);

/* syncd_patch_apply() within limits (NULL: unbounded). A patch of more
 * than max_ops operations fails with SYNCD_ETOOBIG before any is applied.
 * A running estimate of the document's canonical size is kept per
 * operation, and the first operation that would grow it past max_bytes
 * fails with SYNCD_ETOOBIG ("operation N (op path): document would exceed
 * M bytes") before it copies anything, so memory stays near max_bytes.
 * The values the ops copy into the document may total 4 times max_bytes
 * (SYNCD_ETOOBIG past that), which bounds the work of a patch as well. */
int syncd_patch_apply_ex(json_t **out, const json_t *doc, const json_t *patch,
                         const syncd_patch_limits_t *limits,
                         syncd_error_t *err);

/* syncd_patch_apply_ex() into a result that shares with doc every value
 * the patch leaves as it was: only the containers on the paths the patch
 * writes are new (copied one level deep), so the work is that of the patch
 * and of those containers, not of the whole document. Neither doc nor the
 * result may then be changed in place by anyone (syncd_patch_apply_in_place()
 * included), only replaced whole; a document all of whose holders keep to
 * that, like the versions of the embedded store, can be patched this way.
 * doc must nest within SYNCD_PATCH_MAX_DEPTH (as every document the store
 * accepted does): only the paths the patch touches are walked, and the
 * values it puts are checked where they land. Errors and limits as
 * syncd_patch_apply_ex(); doc is never touched. */
int syncd_patch_apply_shared(json_t **out, const json_t *doc,
                             const json_t *patch,
                             const syncd_patch_limits_t *limits,
                             syncd_error_t *err);

/* Computes an RFC 6902 patch from a to b and stores it in *out (a new
 * array). Changes are reported at the deepest path that changed; arrays are
 * diffed as sequences (Myers on element hashes), falling back to a single
 * replace of the array when the edit distance is too large to pay off. */
int syncd_patch_diff(json_t **out, const json_t *a, const json_t *b,
                     syncd_error_t *err);

/* Computes into *out (a new array) an RFC 6902 patch from a to b, where b
 * is the result of applying the RFC 6902 patch `applied` (well-formed) to
 * a, comparing only the subtrees the operations of `applied` touched: the
 * cost follows the patch, not the documents. The operations may come in
 * another order than syncd_patch_diff()'s, but applying them to a gives
 * b. What a patch touches bounds where its two documents differ either
 * way, so `applied` may also lead from b to a (the diff back). */
int syncd_patch_diff_touched(json_t **out, const json_t *a, const json_t *b,
                             const json_t *applied, syncd_error_t *err);

/* RFC 6902 equality, as used by `test`: numbers compare by value (1 ==
 * 1.0), objects ignore member order. Returns 1 when equal, else 0. */
int syncd_json_equal(const json_t *a, const json_t *b);

/* Applies patch to *doc in place, atomically: on success *doc is the
 * patched value (the same object, or a new reference when the patch
 * replaces the whole document, the old one released), equal to what
 * syncd_patch_apply_ex() makes; on any failure *doc is left exactly as it
 * was (values and member order), its changes undone from a log of what
 * each operation replaced. No copy of the document is taken and, without
 * limits->max_bytes, nothing but the paths the patch touches is walked, so
 * the work is that of the patch; with max_bytes the document's canonical
 * size is counted once first, unless limits->doc_size gives it. The
 * caller must own *doc alone (nothing else may read it meanwhile), and
 * *doc must nest within SYNCD_PATCH_MAX_DEPTH (as every document the store
 * accepted does). Errors and limits as syncd_patch_apply_ex(). */
int syncd_patch_apply_in_place(json_t **doc, const json_t *patch,
                               const syncd_patch_limits_t *limits,
                               syncd_error_t *err);

/* Returns the byte length of json_dumps(v, JSON_COMPACT) (of a scalar with
 * JSON_ENCODE_ANY), counted by a walk that allocates nothing. The walk
 * stops once the count passes cap (0: no cap), returning some length over
 * cap, so it costs O(min(size, cap)). SIZE_MAX when v nests deeper than
 * SYNCD_PATCH_MAX_DEPTH. */
size_t syncd_json_compact_size(const json_t *v, size_t cap);

/* ---- RFC 7396 Merge Patch ----------------------------------------------- */

/* Applies merge patch to doc and stores the result in *out (a new value;
 * doc is never modified). Always succeeds on valid JSON except on out of
 * memory or nesting deeper than SYNCD_PATCH_MAX_DEPTH. */
int syncd_merge_apply(json_t **out, const json_t *doc, const json_t *merge,
                      syncd_error_t *err);

/* syncd_merge_apply() within limits (NULL: unbounded): a result whose
 * canonical size is over max_bytes (and over doc's) fails with
 * SYNCD_ETOOBIG; max_ops does not apply. */
int syncd_merge_apply_ex(json_t **out, const json_t *doc, const json_t *merge,
                         const syncd_patch_limits_t *limits,
                         syncd_error_t *err);

/* syncd_merge_apply_ex() into a result that shares with doc every value
 * the merge patch leaves as it was (each object it merges into is copied
 * one level deep), on the terms of syncd_patch_apply_shared(): neither doc
 * nor the result may then be changed in place, and doc must nest within
 * SYNCD_PATCH_MAX_DEPTH. doc is never touched. */
int syncd_merge_apply_shared(json_t **out, const json_t *doc,
                             const json_t *merge,
                             const syncd_patch_limits_t *limits,
                             syncd_error_t *err);

/* Generates the RFC 7396 merge patch from a to b into *out (a new value).
 * When the change cannot be expressed as a merge patch (b has a member whose
 * value is null where a differs), fails with SYNCD_EPATCH naming that
 * member's path, and *out is left NULL. */
int syncd_merge_diff(json_t **out, const json_t *a, const json_t *b,
                     syncd_error_t *err);

/* syncd_merge_diff() of a and b, where b is the result of applying the
 * RFC 6902 patch `applied` (well-formed) to a, comparing only the subtrees
 * its operations touched: the same merge patch, except that when it is
 * inexpressible *out is left NULL and 0 is returned. `applied` may be
 * syncd_patch_diff() of a and b. */
int syncd_merge_diff_touched(json_t **out, const json_t *a, const json_t *b,
                             const json_t *applied, syncd_error_t *err);

/* ---- Canonical JSON and content hash ------------------------------------ */

/* Parses the len bytes at buf into *out (a new reference) as json_loadb(buf,
 * len, JSON_DECODE_ANY | JSON_ALLOW_NUL, jerr) would, same value and same
 * errors, but several times faster on large documents. Returns 0, or
 * SYNCD_EINVAL with *out NULL and jansson's message, line and column in
 * jerr (which is left alone on success). */
int syncd_json_loadb(json_t **out, const char *buf, size_t len,
                     json_error_t *jerr);

/* Parses as syncd_json_loadb() does, but refuses a string with a NUL as
 * json_loadb(buf, len, JSON_DECODE_ANY, jerr) does (jansson's error in
 * jerr). Returns 0 with *out a new reference, or SYNCD_EINVAL. */
int syncd_json_loadb_nonul(json_t **out, const char *buf, size_t len,
                           json_error_t *jerr);

/* Length of a content hash in hex, without the terminating NUL. */
#define SYNCD_HASH_HEX_LEN 64

/* Returns how many leading bytes of the len bytes at s a JSON string
 * literal carries as they are: up to the first quote, backslash or control
 * character (len when there is none). */
size_t syncd_json_plain_span(const char *s, size_t len);

/* Serializes v canonically (object keys sorted by bytes, compact, integers
 * exact, reals in the shortest form that round-trips, always with a '.' or
 * exponent) into a malloc'd NUL-terminated string the caller frees, with
 * its length in *len when len is not NULL. NULL on out of memory or
 * nesting deeper than SYNCD_PATCH_MAX_DEPTH. */
char *syncd_json_canonical(const json_t *v, size_t *len);

/* syncd_json_canonical(), with room for hint bytes made first (a likely
 * size, such as the previous version's; 0 for none), so that a text of
 * about that size is written without growing its buffer step by step. */
char *syncd_json_canonical_sized(const json_t *v, size_t hint, size_t *len);

/* Serializes v compactly as syncd_json_canonical() does, but each object's
 * members in their own order (as json_dumps(v, JSON_COMPACT) orders them):
 * a malloc'd string (caller frees; length in *len when len is not NULL),
 * or NULL on out of memory or nesting deeper than SYNCD_PATCH_MAX_DEPTH. */
char *syncd_json_compact(const json_t *v, size_t *len);

/* Writes v's content hash (doc/HASH.md: a Merkle hash with content-defined
 * chunks) in lower-case hex into out (SYNCD_HASH_HEX_LEN + 1 bytes,
 * NUL-terminated). SYNCD_EINVAL when v nests deeper than
 * SYNCD_PATCH_MAX_DEPTH, SYNCD_ENOMEM; out is "" on failure. */
int syncd_json_hash(char out[SYNCD_HASH_HEX_LEN + 1], const json_t *v,
                    syncd_error_t *err);

/* syncd_json_hash() as the 32 raw bytes. */
int syncd_json_hash_raw(unsigned char out[32], const json_t *v,
                        syncd_error_t *err);

/* Returns 1 when hash (hex) is v's content hash, or its legacy hash (the
 * SHA-256 of v's canonical JSON, which records stored before the Merkle
 * hash carry), 0 when it is neither; SYNCD_EINVAL (too deep) or
 * SYNCD_ENOMEM when v cannot be hashed. */
int syncd_json_hash_matches(const char *hash, const json_t *v,
                            syncd_error_t *err);

/* ---- Hash tree: the content hash kept beside a document ------------------ */

/* The hashes of every subtree and chunk of one document, so that a patch
 * rehashes only the paths it touches and O(log n) chunks of each large
 * container on them. Not thread-safe; one owner at a time. */
typedef struct syncd_htree syncd_htree_t;

/* Builds the hash tree of doc into *out (freed with syncd_htree_free());
 * SYNCD_EINVAL when doc nests too deep, SYNCD_ENOMEM. */
int syncd_htree_build(syncd_htree_t **out, const json_t *doc,
                      syncd_error_t *err);

/* Frees a tree from syncd_htree_build(); NULL is ignored. */
void syncd_htree_free(syncd_htree_t *t);

/* Updates t, the tree of a document, for patch (a JSON Patch array) having
 * been applied to that document successfully (apply it to the document
 * itself with syncd_patch_apply() or in place): each operation hashes only
 * the values it adds, and each path above them is rehashed once per patch,
 * however many operations went through it. SYNCD_EPATCH when an
 * operation does not fit the tree's document, SYNCD_ENOMEM; after a failure
 * t no longer matches any document: free it and build it again. */
int syncd_htree_apply(syncd_htree_t *t, const json_t *patch,
                      syncd_error_t *err);

/* Writes the content hash of t's document (what syncd_json_hash() gives for
 * it) into out. */
void syncd_htree_root(const syncd_htree_t *t, char out[SYNCD_HASH_HEX_LEN + 1]);

/* Returns how many SHA-256 computations t has made since it was built (its
 * build included): the work its updates cost. */
uint64_t syncd_htree_hash_count(const syncd_htree_t *t);

/* Returns about how many bytes t holds (a walk of the whole tree): what an
 * owner that bounds its memory charges for keeping it. */
uint64_t syncd_htree_bytes(const syncd_htree_t *t);

/* ---- Narrowing a difference inside a document (doc/HASH.md) ------------ */

/* Most items one hash listing holds. */
#define SYNCD_HTREE_LIST_MAX 1024

/* The `level` of syncd_htree_list() that means the top of the chunk tree. */
#define SYNCD_HTREE_TOP ((size_t)-1)

/* Sets *out to a new object listing the hashes under the value at the JSON
 * Pointer path (path_len bytes) of doc, as doc/HASH.md "Narrowing" defines
 * it: the value's type, hash, entry count and chunk levels, and items
 * [from, from + count) of level `level` of its chunk tree (SYNCD_HTREE_TOP:
 * the top level), at most SYNCD_HTREE_LIST_MAX of them. doc is borrowed.
 * SYNCD_EINVAL for a bad pointer, level or from, or a value nested too
 * deep; SYNCD_ENOTFOUND when path names no value; SYNCD_ENOMEM. */
int syncd_htree_list(json_t **out, const json_t *doc, const char *path,
                     size_t path_len, size_t level, size_t from, size_t count,
                     syncd_error_t *err);

/* syncd_htree_list() from t, the hash tree of the document (borrowed),
 * without hashing anything: O(depth + count). */
int syncd_htree_list_tree(json_t **out, const syncd_htree_t *t,
                          const char *path, size_t path_len, size_t level,
                          size_t from, size_t count, syncd_error_t *err);

/* Asks one party for a hash listing of its copy of a document: sets *out
 * to a new reference to what syncd_htree_list() would give for its copy,
 * or returns a negative SYNCD_E* code (set in err). */
typedef int (*syncd_htree_fetch_fn)(json_t **out, const char *path,
                                    size_t path_len, size_t level, size_t from,
                                    size_t count, void *arg,
                                    syncd_error_t *err);

/* Finds where two copies of a document differ by walking their hash trees
 * top down through fa(a) and fb(b), asking only for the listings under
 * subtrees and chunks that differ: sets *out to a new array of the JSON
 * Pointers of the smallest differing subtrees, in document order, as
 * doc/HASH.md "Narrowing" defines them, at most max_paths of them;
 * *truncated is 1 when there are more. SYNCD_EINVAL (in err) when a
 * listing is malformed; any error of a fetch is returned as it is. */
int syncd_htree_narrow(json_t **out, int *truncated, syncd_htree_fetch_fn fa,
                       void *a, syncd_htree_fetch_fn fb, void *b,
                       size_t max_paths, syncd_error_t *err);

/* Writes the lower-case hex SHA-256 of len bytes at data into out
 * (SYNCD_HASH_HEX_LEN + 1 bytes). */
void syncd_sha256_hex(char out[SYNCD_HASH_HEX_LEN + 1], const void *data,
                      size_t len);

/* Writes the raw 32-byte SHA-256 of len bytes at data into out. */
void syncd_sha256(unsigned char out[32], const void *data, size_t len);

#ifdef __cplusplus
}
#endif

#endif
