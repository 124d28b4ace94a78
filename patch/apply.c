/* apply.c - RFC 6902 JSON Patch: validation, atomic application, equality.
 *
 * A patch is applied to a private deep copy of the document; the input is
 * never touched, so a failing operation leaves the caller's document as it
 * was and the partly patched copy is simply dropped. Every error names the
 * operation by index, its op and path, and the reason, in that order
 * ("operation 2 (remove /a/b): member not found"). Values the patch
 * carries are deep-copied into the result, never shared with the patch.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "patch/internal.h"

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
    return syncd_error_set(err, code, "operation %zu (%s %s): %s", op->index,
                           op->name, op->path_text, why);
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
    if (ptr_parse_n(out, json_string_value(text), json_string_length(text),
                    &why) < 0)
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
    if (check_depth(op->value, SYNCD_EPATCH, "value", NULL) < 0)
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

    if (ptr_walk(&loc->parent, root, ptr, last, &why, &at) < 0)
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
    if (ptr_array_index(&loc->index, loc->tok, loc->len,
                        json_array_size(loc->parent), allow_end, &why) < 0)
        return op_fail(err, SYNCD_EPATCH, op, "%s", why);
    loc->child = json_array_get(loc->parent, loc->index);
    return 0;
}

enum put_mode { PUT_ADD, PUT_REPLACE };

/* Puts value_new (stolen on every path) at ptr in *root, as "add" does
 * (a new member, or an array element inserted or appended) or as
 * "replace" does (the value must exist). */
static int put_at(json_t **root, const syncd_ptr_t *ptr, json_t *value_new,
                  enum put_mode mode, const op_t *op, syncd_error_t *err)
{
    loc_t loc;
    int rc;

    if (syncd_ptr_count(ptr) == 0) {
        json_decref(*root);
        *root = value_new;
        return 0;
    }
    rc = locate(&loc, *root, ptr, mode == PUT_ADD, op, err);
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

/* Removes the value at ptr in root and stores it in *removed (a new
 * reference) when removed is not NULL. */
static int remove_at(json_t **removed, json_t *root, const syncd_ptr_t *ptr,
                     const op_t *op, syncd_error_t *err)
{
    loc_t loc;
    int rc;

    if (syncd_ptr_count(ptr) == 0)
        return op_fail(err, SYNCD_EPATCH, op,
                       "cannot remove the whole document");
    rc = locate(&loc, root, ptr, 0, op, err);
    if (rc < 0)
        return rc;
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

    if (ptr_walk(out, root, ptr, syncd_ptr_count(ptr), &why, &at) < 0)
        return op_fail(err, SYNCD_EPATCH, op, "%s at token %zu", why, at);
    return 0;
}

/* Returns 1 when the first n tokens of a and b are the same. */
static int tokens_match(const syncd_ptr_t *a, const syncd_ptr_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t la, lb;
        const char *ta = syncd_ptr_token(a, i, &la);
        const char *tb = syncd_ptr_token(b, i, &lb);

        if (la != lb || memcmp(ta, tb, la) != 0)
            return 0;
    }
    return 1;
}

static int move_op(json_t **root, const op_t *op, syncd_error_t *err)
{
    size_t nfrom = syncd_ptr_count(op->from);
    size_t npath = syncd_ptr_count(op->path);
    json_t *value = NULL;
    int rc;

    if (nfrom == npath && tokens_match(op->from, op->path, nfrom))
        return get_at(&value, *root, op->from, op, err);
    if (nfrom < npath && tokens_match(op->from, op->path, nfrom))
        return op_fail(err, SYNCD_EPATCH, op,
                       "cannot move a value into its own child");
    rc = remove_at(&value, *root, op->from, op, err);
    return rc < 0 ? rc : put_at(root, op->path, value, PUT_ADD, op, err);
}

static int apply_op(json_t **root, const op_t *op, syncd_error_t *err)
{
    json_t *value = NULL;
    int rc;

    switch (op->kind) {
    case OP_ADD:
        rc = copy_value(&value, op->value, err);
        return rc < 0 ? rc : put_at(root, op->path, value, PUT_ADD, op, err);
    case OP_REMOVE:
        return remove_at(NULL, *root, op->path, op, err);
    case OP_REPLACE:
        rc = copy_value(&value, op->value, err);
        return rc < 0 ? rc
                      : put_at(root, op->path, value, PUT_REPLACE, op, err);
    case OP_MOVE:
        return move_op(root, op, err);
    case OP_COPY:
        rc = get_at(&value, *root, op->from, op, err);
        if (rc == 0)
            rc = copy_value(&value, value, err);
        return rc < 0 ? rc : put_at(root, op->path, value, PUT_ADD, op, err);
    default:
        rc = get_at(&value, *root, op->path, op, err);
        if (rc == 0 && !values_equal(value, op->value, 1))
            rc = op_fail(err, SYNCD_ECONFLICT, op, "value differs");
        return rc;
    }
}

int syncd_patch_apply(json_t **out, const json_t *doc, const json_t *patch,
                      syncd_error_t *err)
{
    json_t *root = NULL, *item;
    size_t i;
    int rc;

    *out = NULL;
    if (!json_is_array(patch))
        return syncd_error_set(err, SYNCD_EPATCH, "patch is not an array");
    rc = check_depth(doc, SYNCD_EINVAL, "document", err);
    if (rc == 0)
        rc = copy_value(&root, doc, err);
    json_array_foreach (patch, i, item) {
        op_t op;

        if (rc < 0)
            break;
        rc = parse_op(&op, item, i, err);
        if (rc == 0)
            rc = apply_op(&root, &op, err);
        op_free(&op);
    }
    if (rc == 0)
        rc = check_depth(root, SYNCD_EPATCH, "the patched document", err);
    if (rc < 0) {
        json_decref(root);
        return rc;
    }
    *out = root;
    return 0;
}

int syncd_json_equal(const json_t *a, const json_t *b)
{
    if (a == b)
        return 1;
    if (check_depth(a, SYNCD_EINVAL, "a", NULL) < 0 ||
        check_depth(b, SYNCD_EINVAL, "b", NULL) < 0)
        return 0;
    return values_equal(a, b, 1);
}
