/* apply.c - RFC 6902 JSON Patch: validation, atomic application, equality.
 *
 * syncd_patch_apply*() apply a patch to a private deep copy of the
 * document; the input is never touched, so a failing operation leaves the
 * caller's document as it was and the partly patched copy is simply
 * dropped. syncd_patch_apply_in_place() patches the caller's own document
 * and logs what each change replaced (the old value, an inserted index, a
 * removed member and the member that followed it), so that a failing
 * operation undoes the changes before it, newest first, back to the same
 * values in the same member order; the work is that of the patch, not of
 * the document. syncd_patch_apply_shared() makes a result that shares
 * with the document every value the patch leaves as it was: it starts from
 * a copy of the root alone, and before an operation changes a container it
 * copies (one level) each container on the way to it that is still shared
 * with the document, which its reference count tells (a shared one is held
 * by the document's container too); the document is never touched, so a
 * failure drops the result. The work is that of the patch and of the
 * containers it passes through. Every error names the
 * operation by index, its op and path, and the reason, in that order
 * ("operation 2 (remove /a/b): member not found"). Values the patch
 * carries are deep-copied into the result, never shared with the patch.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "patch/internal.h"

/* The most bytes of an operation's path an error message quotes. */
#define PATH_SHOWN 128

enum op_kind { OP_ADD, OP_REMOVE, OP_REPLACE, OP_MOVE, OP_COPY, OP_TEST };

static const char *const op_names[] = {"add",  "remove", "replace",
                                       "move", "copy",   "test"};

/* One parsed operation; `value` is borrowed from the patch. */
typedef struct op {
    size_t index;
    int kind;
    const char *name;
    const char *path_text;
    syncd_ptr_t *path;
    syncd_ptr_t *from;
    json_t *value;
} op_t;

static int op_fail(syncd_error_t *err, int code, const op_t *op,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int op_fail(syncd_error_t *err, int code, const op_t *op,
                   const char *fmt, ...)
{
    char why[384];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    /* A long path is cut so that the reason still fits the message. */
    return syncd_error_set(err, code, "operation %zu (%s %.*s%s): %s",
                           op->index, op->name, PATH_SHOWN, op->path_text,
                           strlen(op->path_text) > PATH_SHOWN ? "..." : "",
                           why);
}

static void op_free(op_t *op)
{
    syncd_ptr_free(op->path);
    syncd_ptr_free(op->from);
}

static int parse_pointer_member(syncd_ptr_t **out, const json_t *item,
                                const char *member, op_t *op,
                                syncd_error_t *err)
{
    json_t *text = json_object_get(item, member);
    syncd_error_t why;

    if (text == NULL)
        return op_fail(err, SYNCD_EPATCH, op, "missing '%s'", member);
    if (!json_is_string(text))
        return op_fail(err, SYNCD_EPATCH, op, "'%s' is not a string", member);
    syncd_error_clear(&why);
    if (syncd_ptr_parse_n(out, json_string_value(text),
                          json_string_length(text), &why) < 0)
        return op_fail(err, why.code == SYNCD_ENOMEM ? why.code : SYNCD_EPATCH,
                       op, "bad '%s': %s", member, why.message);
    return 0;
}

/* Checks one operation object and fills op; on failure op holds nothing
 * that needs freeing beyond op_free(). */
static int parse_op(op_t *op, const json_t *item, size_t index,
                    syncd_error_t *err)
{
    json_t *name, *path;
    int rc;

    memset(op, 0, sizeof(*op));
    op->index = index;
    op->name = "?";
    op->path_text = "?";
    if (!json_is_object(item))
        return op_fail(err, SYNCD_EPATCH, op, "not an object");
    path = json_object_get(item, "path");
    if (json_is_string(path))
        op->path_text = json_string_value(path);
    name = json_object_get(item, "op");
    if (!json_is_string(name))
        return op_fail(err, SYNCD_EPATCH, op,
                       name == NULL ? "missing 'op'" : "'op' is not a string");
    op->name = json_string_value(name);
    op->kind = -1;
    for (size_t i = 0; i < sizeof(op_names) / sizeof(op_names[0]); i++) {
        if (strcmp(op->name, op_names[i]) == 0)
            op->kind = (int)i;
    }
    if (op->kind < 0)
        return op_fail(err, SYNCD_EPATCH, op, "unknown op");
    rc = parse_pointer_member(&op->path, item, "path", op, err);
    if (rc < 0)
        return rc;
    if (op->kind == OP_MOVE || op->kind == OP_COPY)
        return parse_pointer_member(&op->from, item, "from", op, err);
    if (op->kind == OP_REMOVE)
        return 0;
    op->value = json_object_get(item, "value");
    if (op->value == NULL)
        return op_fail(err, SYNCD_EPATCH, op, "missing 'value'");
    if (syncd_json_check_depth(op->value, SYNCD_EPATCH, "value", NULL) < 0)
        return op_fail(err, SYNCD_EPATCH, op,
                       "'value' nests deeper than %d arrays/objects",
                       SYNCD_PATCH_MAX_DEPTH);
    return 0;
}

int syncd_patch_validate(const json_t *patch, syncd_error_t *err)
{
    size_t i;
    json_t *item;

    if (!json_is_array(patch))
        return syncd_error_set(err, SYNCD_EPATCH, "patch is not an array");
    json_array_foreach (patch, i, item) {
        op_t op;
        int rc = parse_op(&op, item, i, err);

        op_free(&op);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Where ptr's last token lands: its container, the token, and the child
 * it names (NULL for a missing member when allowed) or its array index. */
typedef struct loc {
    json_t *parent;
    json_t *child;
    size_t index;
    const char *tok;
    size_t len;
} loc_t;

/* Resolves ptr (not the whole document) in root into *loc; with allow_end
 * the child may be a missing member or the array's end. */
static int locate(loc_t *loc, json_t *root, const syncd_ptr_t *ptr,
                  int allow_end, const op_t *op, syncd_error_t *err)
{
    size_t last = syncd_ptr_count(ptr) - 1;
    const char *why = NULL;
    size_t at = 0;

    if (syncd_ptr_walk(&loc->parent, root, ptr, last, &why, &at) < 0)
        return op_fail(err, SYNCD_EPATCH, op, "%s at token %zu", why, at);
    if (!json_is_object(loc->parent) && !json_is_array(loc->parent))
        return op_fail(err, SYNCD_EPATCH, op,
                       "parent is not an object or array");
    loc->tok = syncd_ptr_token(ptr, last, &loc->len);
    if (json_is_object(loc->parent)) {
        loc->child = json_object_getn(loc->parent, loc->tok, loc->len);
        if (loc->child == NULL && !allow_end)
            return op_fail(err, SYNCD_EPATCH, op, "member not found");
        return 0;
    }
    if (syncd_ptr_array_index(&loc->index, loc->tok, loc->len,
                              json_array_size(loc->parent), allow_end,
                              &why) < 0)
        return op_fail(err, SYNCD_EPATCH, op, "%s", why);
    loc->child = json_array_get(loc->parent, loc->index);
    return 0;
}

/* A bounded application copies at most this many times max_bytes in all
 * (copies that stay in the document count once, and the document holds at
 * most max_bytes), so that ops that copy a large value over and over
 * again cannot turn a small patch into minutes of work. */
#define COPY_BUDGET 4

/* What one logged change did, and so how to undo it. */
enum undo_kind {
    UNDO_ROOT,       /* the root was replaced: old is the previous root */
    UNDO_MEMBER_SET, /* member key was set over old */
    UNDO_MEMBER_NEW, /* member key was added */
    UNDO_MEMBER_DEL, /* member key (old) was removed; next followed it */
    UNDO_INSERTED,   /* an element was inserted at index */
    UNDO_ELEM_SET,   /* element index was set over old */
    UNDO_ELEM_DEL    /* element index (old) was removed */
};

/* One entry of the undo log; it holds references to container and old and
 * owns its key copies. */
typedef struct undo {
    enum undo_kind kind;
    json_t *container;
    json_t *old;
    char *key;
    size_t key_len;
    char *next; /* UNDO_MEMBER_DEL: the key after it, NULL if last */
    size_t next_len;
    size_t index;
} undo_t;

/* An undo log: entries in the order the changes were made. */
typedef struct undo_log {
    undo_t *items;
    size_t n, cap;
} undo_log_t;

/* One application: the document being patched, the undo log of an
 * application in place (NULL for one on a private copy) and, when bounded,
 * a running count of its canonical size and of the bytes copied so far. */
typedef struct apply {
    json_t *root;
    size_t size;   /* canonical size of root; kept only when max > 0 */
    size_t max;    /* 0: unbounded */
    size_t copied; /* canonical bytes deep-copied into root */
    undo_log_t *log;
    int shared; /* root shares the containers it has not changed */
} apply_t;

/* Returns a NUL-terminated copy of the len bytes at s, or NULL. */
static char *bytes_dup(const char *s, size_t len)
{
    char *copy = malloc(len + 1);

    if (copy != NULL) {
        memcpy(copy, s, len);
        copy[len] = '\0';
    }
    return copy;
}

/* Makes room for one more entry and returns it zeroed, or NULL when out of
 * memory (then nothing may change). */
static undo_t *undo_reserve(undo_log_t *log)
{
    if (log->n == log->cap) {
        size_t cap = log->cap > 0 ? log->cap * 2 : 8;
        undo_t *items = realloc(log->items, cap * sizeof(*items));

        if (items == NULL)
            return NULL;
        log->items = items;
        log->cap = cap;
    }
    memset(&log->items[log->n], 0, sizeof(log->items[0]));
    return &log->items[log->n];
}

static void undo_entry_free(undo_t *u)
{
    json_decref(u->container);
    json_decref(u->old);
    free(u->key);
    free(u->next);
}

/* Frees the log and the references it holds (the changes stay). */
static void undo_log_free(undo_log_t *log)
{
    for (size_t i = 0; i < log->n; i++)
        undo_entry_free(&log->items[i]);
    free(log->items);
}

/* Logs a change of kind to container at key (len bytes) or index, old being
 * what it replaced or removed (borrowed, referenced by the log); fails,
 * logging nothing, when out of memory. Does nothing without a log. */
static int undo_push(apply_t *a, enum undo_kind kind, json_t *container,
                     const char *key, size_t len, size_t index, json_t *old)
{
    undo_t *u;

    if (a->log == NULL)
        return 0;
    u = undo_reserve(a->log);
    if (u == NULL)
        return SYNCD_ENOMEM;
    if (key != NULL) {
        u->key = bytes_dup(key, len);
        if (u->key == NULL)
            return SYNCD_ENOMEM;
        u->key_len = len;
    }
    u->kind = kind;
    u->container = json_incref(container);
    u->old = json_incref(old);
    u->index = index;
    a->log->n++;
    return 0;
}

/* Notes in the newest entry (a member removal about to be made) the key
 * that follows the member, so that undoing it restores the order. */
static int undo_note_next(apply_t *a, json_t *obj, const char *key, size_t len)
{
    undo_t *u = &a->log->items[a->log->n - 1];
    void *it = NULL;
    const char *k;
    size_t klen;
    json_t *v;
    int found = 0;

    if (strlen(key) == len) {
        it = json_object_iter_at(obj, key);
        it = it != NULL ? json_object_iter_next(obj, it) : NULL;
    } else {
        /* A key holding NUL cannot be looked up by iterator: walk. */
        json_object_keylen_foreach (obj, k, klen, v) {
            if (found) {
                it = json_object_key_to_iter(k);
                break;
            }
            found = klen == len && memcmp(k, key, len) == 0;
        }
    }
    if (it == NULL)
        return 0;
    u->next_len = json_object_iter_key_len(it);
    u->next = bytes_dup(json_object_iter_key(it), u->next_len);
    return u->next != NULL ? 0 : SYNCD_ENOMEM;
}

/* Puts member key back into obj, where the removal took it from: added
 * again at the end, then the members that followed it moved behind it. */
static void undo_member_del(const undo_t *u)
{
    json_t *obj = u->container, *v;
    size_t n, i = 0, klen, from;
    const char *k;
    char **keys;
    size_t *lens;

    json_object_setn(obj, u->key, u->key_len, u->old);
    if (u->next == NULL)
        return;
    n = from = json_object_size(obj);
    keys = calloc(n, sizeof(*keys));
    lens = calloc(n, sizeof(*lens));
    if (keys != NULL && lens != NULL) {
        json_object_keylen_foreach (obj, k, klen, v) {
            if (i >= n)
                break;
            if (from == n && klen == u->next_len &&
                memcmp(k, u->next, klen) == 0)
                from = i;
            keys[i] = from < n ? bytes_dup(k, klen) : NULL;
            lens[i++] = klen;
        }
        /* The restored member itself is last and stays there. */
        for (i = from; i + 1 < n; i++) {
            v = keys[i] != NULL ? json_object_getn(obj, keys[i], lens[i])
                                : NULL;
            if (v != NULL) {
                json_incref(v);
                json_object_deln(obj, keys[i], lens[i]);
                json_object_setn_new(obj, keys[i], lens[i], v);
            }
        }
    }
    for (i = 0; keys != NULL && i < n; i++)
        free(keys[i]);
    free(keys);
    free(lens);
}

/* Undoes the logged changes, newest first, and frees the log; returns the
 * root as it was before the first change. */
static json_t *undo_all(apply_t *a)
{
    undo_log_t *log = a->log;

    while (log->n > 0) {
        undo_t *u = &log->items[--log->n];

        switch (u->kind) {
        case UNDO_ROOT:
            json_decref(a->root);
            a->root = json_incref(u->old);
            break;
        case UNDO_MEMBER_SET:
            json_object_setn(u->container, u->key, u->key_len, u->old);
            break;
        case UNDO_MEMBER_NEW:
            json_object_deln(u->container, u->key, u->key_len);
            break;
        case UNDO_MEMBER_DEL:
            undo_member_del(u);
            break;
        case UNDO_INSERTED:
            json_array_remove(u->container, u->index);
            break;
        case UNDO_ELEM_SET:
            json_array_set(u->container, u->index, u->old);
            break;
        case UNDO_ELEM_DEL:
            json_array_insert(u->container, u->index, u->old);
            break;
        }
        undo_entry_free(u);
    }
    return a->root;
}

/* Counts a copy of vsize bytes; fails once the copies pass the budget. */
static int count_copy(apply_t *a, size_t vsize, const op_t *op,
                      syncd_error_t *err)
{
    a->copied += vsize;
    if (a->max > 0 && a->copied / COPY_BUDGET > a->max)
        return op_fail(err, SYNCD_ETOOBIG, op,
                       "the patch would copy more than %d times %zu bytes "
                       "in all",
                       COPY_BUDGET, a->max);
    return 0;
}

/* Moves the size count by removed and added bytes; fails, counting
 * nothing, when the document would grow past the bound. */
static int resize(apply_t *a, size_t removed, size_t added, const op_t *op,
                  syncd_error_t *err)
{
    size_t next;

    if (a->max == 0)
        return 0;
    next = (removed < a->size ? a->size - removed : 0) + added;
    if (next > a->max && next > a->size)
        return op_fail(err, SYNCD_ETOOBIG, op,
                       "document would exceed %zu bytes", a->max);
    a->size = next;
    return 0;
}

/* Bytes loc's entry takes besides its value and comma: "key": in an
 * object, nothing in an array. */
static size_t entry_size(const loc_t *loc)
{
    if (!json_is_object(loc->parent))
        return 0;
    return syncd_canonical_string_size(loc->tok, loc->len) + 1;
}

static size_t container_size(const json_t *v)
{
    return json_is_object(v) ? json_object_size(v) : json_array_size(v);
}

/* Fails op for a result nesting past SYNCD_PATCH_MAX_DEPTH: checked per
 * operation, so every walk over the document stays within that depth. */
static int too_deep(const op_t *op, syncd_error_t *err)
{
    return op_fail(err, SYNCD_EPATCH, op,
                   "the patched document would nest deeper than %d "
                   "arrays/objects",
                   SYNCD_PATCH_MAX_DEPTH);
}

enum put_mode { PUT_ADD, PUT_REPLACE };

/* Logs the put about to be made at loc (see put_at()). */
static int log_put(apply_t *a, const loc_t *loc, enum put_mode mode)
{
    if (json_is_object(loc->parent))
        return undo_push(a,
                         loc->child != NULL ? UNDO_MEMBER_SET : UNDO_MEMBER_NEW,
                         loc->parent, loc->tok, loc->len, 0, loc->child);
    return undo_push(a, mode == PUT_ADD ? UNDO_INSERTED : UNDO_ELEM_SET,
                     loc->parent, NULL, 0, loc->index,
                     mode == PUT_ADD ? NULL : loc->child);
}

/* Whether container v is held by more than its one parent in a->root: a
 * value a->root still shares with the document. */
static int is_shared(const json_t *v)
{
    return (json_is_object(v) || json_is_array(v)) &&
           __atomic_load_n(&v->refcount, __ATOMIC_ACQUIRE) > 1;
}

/* In a shared application (a->shared), makes every container on the way
 * to ptr's parent a->root's own: each one still shared with the document
 * is replaced, in its parent (already a->root's own), by
 * syncd_json_copy_level() of it. Stops where the path does not lead on
 * (locate() then says why). */
static int own_path(apply_t *a, const syncd_ptr_t *ptr, const op_t *op,
                    syncd_error_t *err)
{
    size_t n = syncd_ptr_count(ptr), len, index;
    json_t *cur = a->root, *child, *copy;
    const char *tok, *why;
    int rc;

    for (size_t i = 0; a->shared && i + 1 < n; i++) {
        tok = syncd_ptr_token(ptr, i, &len);
        if (json_is_object(cur))
            child = json_object_getn(cur, tok, len);
        else if (json_is_array(cur) &&
                 syncd_ptr_array_index(&index, tok, len, json_array_size(cur),
                                       0, &why) == 0)
            child = json_array_get(cur, index);
        else
            return 0;
        if (child == NULL || !(json_is_object(child) || json_is_array(child)))
            return 0;
        if (is_shared(child)) {
            copy = syncd_json_copy_level(child);
            if (copy == NULL)
                return op_fail(err, SYNCD_ENOMEM, op, "out of memory");
            rc = json_is_object(cur)
                     ? json_object_setn_new_nocheck(cur, tok, len, copy)
                     : json_array_set_new(cur, index, copy);
            if (rc < 0)
                return op_fail(err, SYNCD_ENOMEM, op, "out of memory");
            child = copy;
        }
        cur = child;
    }
    return 0;
}

/* Puts value at ptr in a->root, as "add" does (a new member, or an array
 * element inserted or appended) or as "replace" does (the value must
 * exist). A borrowed value (moved 0) is deep-copied once the size bound
 * allows it; a moved value, already counted in the size, is stolen on
 * every path. */
static int put_at(apply_t *a, const syncd_ptr_t *ptr, json_t *value, int moved,
                  enum put_mode mode, const op_t *op, syncd_error_t *err)
{
    json_t *value_new = moved ? value : NULL;
    size_t removed = 0, added = 0, vsize = 0;
    loc_t loc;
    int rc;

    if (a->max > 0 && (!moved || syncd_ptr_count(ptr) == 0))
        vsize = syncd_canonical_size(value);
    if (syncd_ptr_count(ptr) == 0) {
        rc = resize(a, a->size, vsize, op, err);
        if (rc == 0 && !moved)
            rc = count_copy(a, vsize, op, err);
        if (rc == 0 && !moved)
            rc = syncd_json_copy(&value_new, value, err);
        if (rc == 0 && undo_push(a, UNDO_ROOT, NULL, NULL, 0, 0, a->root) < 0)
            rc = op_fail(err, SYNCD_ENOMEM, op, "out of memory");
        if (rc < 0) {
            json_decref(value_new);
            return rc;
        }
        json_decref(a->root);
        a->root = value_new;
        return 0;
    }
    rc = own_path(a, ptr, op, err);
    if (rc == 0)
        rc = locate(&loc, a->root, ptr, mode == PUT_ADD, op, err);
    if (rc == 0 && !moved && !syncd_depth_fits(value, syncd_ptr_count(ptr)))
        rc = too_deep(op, err);
    if (rc == 0 && a->max > 0) {
        int replacing = json_is_object(loc.parent) ? loc.child != NULL
                                                   : mode == PUT_REPLACE;

        if (replacing)
            removed = syncd_canonical_size(loc.child);
        else
            added = entry_size(&loc) + (container_size(loc.parent) > 0);
        if (!moved)
            added += vsize;
        rc = resize(a, removed, added, op, err);
        if (rc == 0 && !moved)
            rc = count_copy(a, vsize, op, err);
    }
    if (rc == 0 && !moved)
        rc = syncd_json_copy(&value_new, value, err);
    if (rc == 0 && log_put(a, &loc, mode) < 0)
        rc = op_fail(err, SYNCD_ENOMEM, op, "out of memory");
    if (rc < 0) {
        json_decref(value_new);
        return rc;
    }
    if (json_is_object(loc.parent))
        rc = json_object_setn_new(loc.parent, loc.tok, loc.len, value_new);
    else if (mode == PUT_ADD)
        rc = json_array_insert_new(loc.parent, loc.index, value_new);
    else
        rc = json_array_set_new(loc.parent, loc.index, value_new);
    if (rc < 0)
        return op_fail(err, SYNCD_ENOMEM, op, "out of memory");
    return 0;
}

/* Removes the value at ptr in a->root and stores it in *removed (a new
 * reference) when removed is not NULL. The size count drops by the entry,
 * and by the value itself unless it is being moved (then put_at() keeps
 * counting it). */
static int remove_at(json_t **removed, apply_t *a, const syncd_ptr_t *ptr,
                     int moving, const op_t *op, syncd_error_t *err)
{
    loc_t loc;
    int rc;

    if (syncd_ptr_count(ptr) == 0)
        return op_fail(err, SYNCD_EPATCH, op,
                       "cannot remove the whole document");
    rc = own_path(a, ptr, op, err);
    if (rc == 0)
        rc = locate(&loc, a->root, ptr, 0, op, err);
    if (rc == 0 && json_is_object(loc.parent))
        rc = undo_push(a, UNDO_MEMBER_DEL, loc.parent, loc.tok, loc.len, 0,
                       loc.child);
    else if (rc == 0)
        rc = undo_push(a, UNDO_ELEM_DEL, loc.parent, NULL, 0, loc.index,
                       loc.child);
    if (rc == 0 && a->log != NULL && json_is_object(loc.parent))
        rc = undo_note_next(a, loc.parent, loc.tok, loc.len);
    if (rc == SYNCD_ENOMEM)
        return op_fail(err, SYNCD_ENOMEM, op, "out of memory");
    if (rc < 0)
        return rc;
    if (a->max > 0) {
        size_t gone = entry_size(&loc) + (container_size(loc.parent) > 1);

        if (!moving)
            gone += syncd_canonical_size(loc.child);
        a->size = gone < a->size ? a->size - gone : 0;
    }
    if (removed != NULL)
        *removed = json_incref(loc.child);
    if (json_is_object(loc.parent))
        json_object_deln(loc.parent, loc.tok, loc.len);
    else
        json_array_remove(loc.parent, loc.index);
    return 0;
}

static int get_at(json_t **out, json_t *root, const syncd_ptr_t *ptr,
                  const op_t *op, syncd_error_t *err)
{
    const char *why = NULL;
    size_t at = 0;

    if (syncd_ptr_walk(out, root, ptr, syncd_ptr_count(ptr), &why, &at) < 0)
        return op_fail(err, SYNCD_EPATCH, op, "%s at token %zu", why, at);
    return 0;
}

static int move_op(apply_t *a, const op_t *op, syncd_error_t *err)
{
    size_t nfrom = syncd_ptr_count(op->from);
    size_t npath = syncd_ptr_count(op->path);
    json_t *value = NULL;
    int rc;

    if (nfrom == npath && syncd_ptr_prefix_equal(op->from, op->path, nfrom))
        return get_at(&value, a->root, op->from, op, err);
    if (nfrom < npath && syncd_ptr_prefix_equal(op->from, op->path, nfrom))
        return op_fail(err, SYNCD_EPATCH, op,
                       "cannot move a value into its own child");
    rc = remove_at(&value, a, op->from, 1, op, err);
    if (rc == 0 && npath > nfrom && !syncd_depth_fits(value, npath)) {
        json_decref(value);
        rc = too_deep(op, err);
    }
    return rc < 0 ? rc : put_at(a, op->path, value, 1, PUT_ADD, op, err);
}

static int apply_op(apply_t *a, const op_t *op, syncd_error_t *err)
{
    json_t *value = NULL;
    int rc;

    switch (op->kind) {
    case OP_ADD:
        return put_at(a, op->path, op->value, 0, PUT_ADD, op, err);
    case OP_REMOVE:
        return remove_at(NULL, a, op->path, 0, op, err);
    case OP_REPLACE:
        return put_at(a, op->path, op->value, 0, PUT_REPLACE, op, err);
    case OP_MOVE:
        return move_op(a, op, err);
    case OP_COPY:
        rc = get_at(&value, a->root, op->from, op, err);
        return rc < 0 ? rc : put_at(a, op->path, value, 0, PUT_ADD, op, err);
    default:
        rc = get_at(&value, a->root, op->path, op, err);
        if (rc == 0 && !syncd_json_values_equal(value, op->value, 1))
            rc = op_fail(err, SYNCD_ECONFLICT, op, "value differs");
        return rc;
    }
}

void syncd_patch_limits_init(syncd_patch_limits_t *limits)
{
    limits->max_bytes = (size_t)8 << 20;
    limits->max_ops = 10000;
    limits->doc_size = 0;
}

/* Checks that patch is an array within limits' max_ops (NULL: unbounded)
 * and, unless doc is NULL, that doc nests within SYNCD_PATCH_MAX_DEPTH. */
static int check_inputs(const json_t *doc, const json_t *patch,
                        const syncd_patch_limits_t *limits, syncd_error_t *err)
{
    size_t max_ops = limits != NULL ? limits->max_ops : 0;

    if (!json_is_array(patch))
        return syncd_error_set(err, SYNCD_EPATCH, "patch is not an array");
    if (max_ops > 0 && json_array_size(patch) > max_ops)
        return syncd_error_set(err, SYNCD_ETOOBIG,
                               "patch has %zu operations, over the limit of "
                               "%zu",
                               json_array_size(patch), max_ops);
    if (doc == NULL)
        return 0;
    return syncd_json_check_depth(doc, SYNCD_EINVAL, "document", err);
}

/* Applies the checked patch to a->root, whose canonical size is known_size
 * (0: unknown), operation by operation; stops at the first failing one. */
static int run_patch(apply_t *a, const json_t *patch, size_t known_size,
                     syncd_error_t *err)
{
    json_t *item;
    size_t i;
    int rc;

    if (a->max > 0)
        a->size = known_size > 0 ? known_size : syncd_canonical_size(a->root);
    json_array_foreach (patch, i, item) {
        op_t op;

        rc = parse_op(&op, item, i, err);
        if (rc == 0)
            rc = apply_op(a, &op, err);
        op_free(&op);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* syncd_patch_apply_ex(), sharing what the patch leaves with doc when
 * shared is set. */
static int apply_new(json_t **out, const json_t *doc, const json_t *patch,
                     const syncd_patch_limits_t *limits, int shared,
                     syncd_error_t *err)
{
    apply_t a = {
        NULL, 0,    limits != NULL ? limits->max_bytes : 0,
        0,    NULL, shared && (json_is_object(doc) || json_is_array(doc))};
    int rc;

    *out = NULL;
    /* A shared application walks only the patch's paths, like one in
     * place, and takes doc's depth on the same promise. */
    rc = check_inputs(a.shared ? NULL : doc, patch, limits, err);
    if (rc == 0 && a.shared) {
        a.root = syncd_json_copy_level(doc);
        if (a.root == NULL)
            rc = syncd_error_set(err, SYNCD_ENOMEM, "out of memory copying");
    } else if (rc == 0) {
        rc = syncd_json_copy(&a.root, doc, err);
    }
    if (rc == 0)
        rc = run_patch(&a, patch, limits != NULL ? limits->doc_size : 0, err);
    if (rc < 0) {
        json_decref(a.root);
        return rc;
    }
    *out = a.root;
    return 0;
}

int syncd_patch_apply_ex(json_t **out, const json_t *doc, const json_t *patch,
                         const syncd_patch_limits_t *limits, syncd_error_t *err)
{
    return apply_new(out, doc, patch, limits, 0, err);
}

int syncd_patch_apply_shared(json_t **out, const json_t *doc,
                             const json_t *patch,
                             const syncd_patch_limits_t *limits,
                             syncd_error_t *err)
{
    return apply_new(out, doc, patch, limits, 1, err);
}

int syncd_patch_apply_in_place(json_t **doc, const json_t *patch,
                               const syncd_patch_limits_t *limits,
                               syncd_error_t *err)
{
    undo_log_t log = {NULL, 0, 0};
    apply_t a = {*doc, 0, limits != NULL ? limits->max_bytes : 0, 0, &log, 0};
    /* *doc is within depth (the caller's promise), and the values the
     * operations put are checked where they land: no walk of the whole. */
    int rc = check_inputs(NULL, patch, limits, err);

    if (rc == 0)
        rc = run_patch(&a, patch, limits != NULL ? limits->doc_size : 0, err);
    if (rc < 0)
        *doc = undo_all(&a);
    else
        *doc = a.root;
    undo_log_free(&log);
    return rc;
}

int syncd_patch_apply(json_t **out, const json_t *doc, const json_t *patch,
                      syncd_error_t *err)
{
    return syncd_patch_apply_ex(out, doc, patch, NULL, err);
}

int syncd_json_equal(const json_t *a, const json_t *b)
{
    if (a == b)
        return 1;
    if (syncd_json_check_depth(a, SYNCD_EINVAL, "a", NULL) < 0 ||
        syncd_json_check_depth(b, SYNCD_EINVAL, "b", NULL) < 0)
        return 0;
    return syncd_json_values_equal(a, b, 1);
}
