/* load.c - JSON text to jansson values, as json_loadb() does but faster.
 *
 * jansson's parser pulls every byte through a stream callback, checks it as
 * UTF-8 and appends it to a growing buffer one byte at a time, then copies
 * each string once more; on a 40 MB document that is most of the time of
 * `syncctl diff`. This parser scans the buffer in place and builds the
 * values with jansson's own constructors, in the same order, so the result
 * is the one json_loadb() gives. It accepts only what it is sure jansson
 * accepts with the same value: on anything else (malformed text, an integer
 * out of range, nesting deeper than MAX_DEPTH, an invalid escape, a
 * locale whose decimal point is not '.') it drops what it built and returns
 * what json_loadb() returns, so rejected input gets jansson's message,
 * line and column.
 */
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "syncd/patch.h"

/* Deepest nesting this parser handles, below jansson's
 * JSON_PARSER_MAX_DEPTH; deeper input goes to json_loadb(). */
#define MAX_DEPTH 1024

/* Longest number text handled here; longer ones go to json_loadb(). */
#define MAX_NUMBER 64

typedef struct {
    const char *p, *end;
    char *scratch; /* decoded text of an escaped string, malloc'd */
    size_t scratch_cap;
    int depth;
} parser_t;

/* The bytes of one scanned string: in the input when it had no escapes,
 * else in the parser's scratch buffer until the next string. */
typedef struct {
    const char *s;
    size_t len;
    int ascii; /* no byte >= 0x80: valid UTF-8 without a check */
} str_t;

static json_t *parse_value(parser_t *ps);

static void skip_space(parser_t *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' ||
                               *ps->p == '\r' || *ps->p == '\t'))
        ps->p++;
}

static int is_digit(const parser_t *ps)
{
    return ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9';
}

/* Skips the digits at ps->p; returns how many there were. */
static size_t skip_digits(parser_t *ps)
{
    const char *from = ps->p;

    while (is_digit(ps))
        ps->p++;
    return (size_t)(ps->p - from);
}

/* Returns the value of the 4 hex digits at p, or -1. */
static long hex4(const char *p)
{
    long v = 0;

    for (int i = 0; i < 4; i++) {
        char c = p[i];

        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    return v;
}

/* Appends len bytes to the scratch buffer at *n; 0 or -1 (no memory). */
static int scratch_add(parser_t *ps, size_t *n, const char *s, size_t len)
{
    if (len == 0)
        return 0;
    if (*n + len > ps->scratch_cap) {
        size_t cap = (*n + len) * 2 + 64;
        char *grown = realloc(ps->scratch, cap);

        if (grown == NULL)
            return -1;
        ps->scratch = grown;
        ps->scratch_cap = cap;
    }
    memcpy(ps->scratch + *n, s, len);
    *n += len;
    return 0;
}

/* Decodes the escape at ps->p (just after the backslash) into the scratch
 * buffer at *n, as jansson does; -1 where jansson would fail. */
static int decode_escape(parser_t *ps, size_t *n)
{
    static const char plain[] = "\"\\/bfnrt", decoded[] = "\"\\/\b\f\n\r\t";
    const char *hit;
    char utf8[4];
    long c, low;
    size_t len;

    if (ps->p >= ps->end)
        return -1;
    if (*ps->p != 'u') {
        hit = *ps->p != '\0' ? strchr(plain, *ps->p) : NULL;
        if (hit == NULL)
            return -1;
        ps->p++;
        return scratch_add(ps, n, &decoded[hit - plain], 1);
    }
    if (ps->end - ps->p < 5 || (c = hex4(ps->p + 1)) < 0)
        return -1;
    ps->p += 5;
    if (c >= 0xDC00 && c <= 0xDFFF)
        return -1;
    if (c >= 0xD800 && c <= 0xDBFF) {
        if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u' ||
            (low = hex4(ps->p + 2)) < 0xDC00 || low > 0xDFFF)
            return -1;
        ps->p += 6;
        c = ((c - 0xD800) << 10) + (low - 0xDC00) + 0x10000;
    }
    if (c < 0x80) {
        utf8[0] = (char)c;
        len = 1;
    } else if (c < 0x800) {
        utf8[0] = (char)(0xC0 | (c >> 6));
        utf8[1] = (char)(0x80 | (c & 0x3F));
        len = 2;
    } else if (c < 0x10000) {
        utf8[0] = (char)(0xE0 | (c >> 12));
        utf8[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        utf8[2] = (char)(0x80 | (c & 0x3F));
        len = 3;
    } else {
        utf8[0] = (char)(0xF0 | (c >> 18));
        utf8[1] = (char)(0x80 | ((c >> 12) & 0x3F));
        utf8[2] = (char)(0x80 | ((c >> 6) & 0x3F));
        utf8[3] = (char)(0x80 | (c & 0x3F));
        len = 4;
    }
    return scratch_add(ps, n, utf8, len);
}

/* Scans the string whose opening quote is at ps->p into *out; -1 where
 * jansson would fail (a control character, a bad escape, no closing quote)
 * or when out of memory. */
static int scan_string(parser_t *ps, str_t *out)
{
    const char *start = ++ps->p;
    unsigned char high = 0;
    size_t n = 0;

    while (ps->p < ps->end) {
        unsigned char c = (unsigned char)*ps->p;

        if (c == '"' || c == '\\' || c < 0x20)
            break;
        high |= c;
        ps->p++;
    }
    if (ps->p >= ps->end || *ps->p != '\\') {
        if (ps->p >= ps->end || *ps->p != '"')
            return -1;
        out->s = start;
        out->len = (size_t)(ps->p++ - start);
        out->ascii = high < 0x80;
        return 0;
    }
    if (scratch_add(ps, &n, start, (size_t)(ps->p - start)) < 0)
        return -1;
    while (ps->p < ps->end && *ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p;

        if (c < 0x20)
            return -1;
        if (c == '\\') {
            ps->p++;
            if (decode_escape(ps, &n) < 0)
                return -1;
            continue;
        }
        high |= c;
        if (scratch_add(ps, &n, ps->p++, 1) < 0)
            return -1;
    }
    if (ps->p >= ps->end)
        return -1;
    ps->p++;
    out->s = ps->scratch;
    out->len = n;
    out->ascii = 0; /* escapes may have produced any bytes; check them */
    return 0;
}

/* Returns the integer written in [start, end): an optional '-' and at most
 * 18 digits, so that it cannot overflow. */
static long long small_integer(const char *start, const char *end)
{
    const char *p = start + (*start == '-');
    long long v = 0;

    while (p < end)
        v = v * 10 + (*p++ - '0');
    return *start == '-' ? -v : v;
}

/* Parses the number at ps->p as jansson's lexer does: an integer without
 * '.' or exponent, else a real. NULL where jansson would fail. */
static json_t *parse_number(parser_t *ps)
{
    const char *start = ps->p, *digits;
    char text[MAX_NUMBER + 1];
    int real = 0;
    size_t len;

    if (*ps->p == '-')
        ps->p++;
    if (!is_digit(ps))
        return NULL;
    digits = ps->p;
    if (*ps->p == '0') {
        ps->p++;
        if (is_digit(ps))
            return NULL;
    } else {
        while (is_digit(ps))
            ps->p++;
    }
    if (ps->p < ps->end && *ps->p == '.') {
        ps->p++;
        if (!skip_digits(ps))
            return NULL;
        real = 1;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
            ps->p++;
        if (!skip_digits(ps))
            return NULL;
        real = 1;
    }
    len = (size_t)(ps->p - start);
    if (!real && ps->p - digits <= 18)
        return json_integer(small_integer(start, ps->p));
    if (len > MAX_NUMBER)
        return NULL;
    memcpy(text, start, len);
    text[len] = '\0';
    errno = 0;
    if (!real) {
        long long v = strtoll(text, NULL, 10);

        return errno == ERANGE ? NULL : json_integer(v);
    } else {
        double v = strtod(text, NULL);

        if (errno == ERANGE && (v == HUGE_VAL || v == -HUGE_VAL))
            return NULL;
        return json_real(v);
    }
}

/* Returns a string value of s: unchecked when ASCII, else checked as UTF-8
 * (NULL when invalid, as jansson's lexer rejects it). */
static json_t *string_value(const str_t *s)
{
    return s->ascii ? json_stringn_nocheck(s->s, s->len)
                    : json_stringn(s->s, s->len);
}

/* Skips the opening character at ps->p and, when the container is empty,
 * its close: returns 1 then, else 0. */
static int opens_empty(parser_t *ps, char close)
{
    ps->p++;
    skip_space(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return 1;
    }
    return 0;
}

/* After a member or an element: skips a ',' and returns 1 (another one
 * follows), or skips close and returns 0 (the last one); -1 for anything
 * else. */
static int after_item(parser_t *ps, char close)
{
    skip_space(ps);
    if (ps->p < ps->end && *ps->p == ',') {
        ps->p++;
        skip_space(ps);
        return 1;
    }
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return 0;
    }
    return -1;
}

/* Parses the object whose '{' is at ps->p. */
static json_t *parse_object(parser_t *ps)
{
    json_t *object = json_object(), *value;
    char *copy = NULL;
    const char *key;
    str_t s;
    int rc;

    if (opens_empty(ps, '}'))
        return object;
    while (object != NULL) {
        if (ps->p >= ps->end || *ps->p != '"' || scan_string(ps, &s) < 0)
            break;
        key = s.s;
        if (!s.ascii) {
            /* The value's strings may reuse the scratch buffer. */
            if (memchr(s.s, '\0', s.len) != NULL ||
                (copy = malloc(s.len + 1)) == NULL)
                break;
            key = memcpy(copy, s.s, s.len);
        }
        skip_space(ps);
        if (ps->p >= ps->end || *ps->p != ':')
            break;
        ps->p++;
        skip_space(ps);
        if ((value = parse_value(ps)) == NULL)
            break;
        rc = s.ascii ? json_object_setn_new_nocheck(object, key, s.len, value)
                     : json_object_setn_new(object, key, s.len, value);
        free(copy);
        copy = NULL;
        if (rc < 0 || (rc = after_item(ps, '}')) < 0)
            break;
        if (rc == 0)
            return object;
    }
    free(copy);
    json_decref(object);
    return NULL;
}

/* Parses the array whose '[' is at ps->p. */
static json_t *parse_array(parser_t *ps)
{
    json_t *array = json_array(), *elem;
    int rc;

    if (opens_empty(ps, ']'))
        return array;
    while (array != NULL) {
        if ((elem = parse_value(ps)) == NULL ||
            json_array_append_new(array, elem) < 0 ||
            (rc = after_item(ps, ']')) < 0)
            break;
        if (rc == 0)
            return array;
    }
    json_decref(array);
    return NULL;
}

/* Returns the value at ps->p when the literal word is there, else NULL. */
static json_t *parse_word(parser_t *ps, const char *word, json_t *value)
{
    size_t len = strlen(word);

    if ((size_t)(ps->end - ps->p) < len || memcmp(ps->p, word, len) != 0)
        return NULL;
    ps->p += len;
    return value;
}

/* Parses the value at ps->p (after white space); NULL on failure. */
static json_t *parse_value(parser_t *ps)
{
    json_t *v = NULL;
    str_t s;

    if (ps->p >= ps->end || ++ps->depth > MAX_DEPTH)
        return NULL;
    switch (*ps->p) {
    case '{':
        v = parse_object(ps);
        break;
    case '[':
        v = parse_array(ps);
        break;
    case '"':
        v = scan_string(ps, &s) == 0 ? string_value(&s) : NULL;
        break;
    case 't':
        v = parse_word(ps, "true", json_true());
        break;
    case 'f':
        v = parse_word(ps, "false", json_false());
        break;
    case 'n':
        v = parse_word(ps, "null", json_null());
        break;
    default:
        v = *ps->p == '-' || is_digit(ps) ? parse_number(ps) : NULL;
        break;
    }
    ps->depth--;
    return v;
}

int syncd_json_loadb(json_t **out, const char *buf, size_t len,
                     json_error_t *jerr)
{
    const char *point = localeconv()->decimal_point;
    parser_t ps = {buf, buf + len, NULL, 0, 0};

    *out = NULL;
    if (strcmp(point, ".") == 0) {
        skip_space(&ps);
        *out = parse_value(&ps);
        skip_space(&ps);
        if (*out != NULL && ps.p != ps.end) {
            json_decref(*out);
            *out = NULL;
        }
    }
    free(ps.scratch);
    if (*out == NULL)
        *out = json_loadb(buf, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, jerr);
    return *out != NULL ? 0 : SYNCD_EINVAL;
}

/* Whether the len bytes at buf hold the escape \u0000 (a backslash that
 * is not itself escaped, then "u0000"): a string with a NUL. */
static int has_nul_escape(const char *buf, size_t len)
{
    const char *p = buf, *end = buf + len;

    while ((p = memchr(p, '\\', (size_t)(end - p))) != NULL) {
        size_t run = 0;

        while (p < end && *p == '\\') {
            run++;
            p++;
        }
        if (run % 2 == 1 && end - p >= 5 && memcmp(p, "u0000", 5) == 0)
            return 1;
    }
    return 0;
}

int syncd_json_loadb_nonul(json_t **out, const char *buf, size_t len,
                           json_error_t *jerr)
{
    if (!has_nul_escape(buf, len))
        return syncd_json_loadb(out, buf, len, jerr);
    *out = json_loadb(buf, len, JSON_DECODE_ANY, jerr);
    return *out != NULL ? 0 : SYNCD_EINVAL;
}
