/*
 * json.c - JSON layer of the wal2json decoder.
 *
 * Implementation notes:
 * - jsmn tokenizes the line into an array owned by the JsonDoc. The array
 *   grows (never shrinks) when jsmn reports JSMN_ERROR_NOMEM; the line is
 *   then re-parsed, so a message is never refused for its size.
 * - jsmn is lenient about separators (it accepts "[1,,2]" or a key without
 *   ':'), does not check literals ("tru", "1.2.3") and accepts several values
 *   in a row. check_structure() closes those gaps in one pass over the tokens
 *   so that only well-formed JSON reaches the caller's walk.
 * - Strings without a backslash are returned as spans of the input
 *   (zero-copy). The others are unescaped into `scratch`, which is reserved
 *   to the length of the whole line before the walk starts: unescaping never
 *   makes a string longer, so the buffer cannot move while spans into it are
 *   held.
 * - Raw control bytes inside strings are accepted (wal2json always escapes
 *   them, and the bytes are passed through unchanged).
 */

/* jsmn's code, static to this file; json.h then finds jsmn.h already included. */
#define JSMN_STATIC
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

#include "json.h"

#include "../common/mem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Enough for a typical row of a few dozen columns without growing. */
#define JSON_INITIAL_TOKENS 256

void json_doc_init(JsonDoc *doc)
{
    memset(doc, 0, sizeof *doc);
    doc->tok_cap = JSON_INITIAL_TOKENS;
    doc->toks = xmalloc(doc->tok_cap * sizeof *doc->toks);
    doc->cursor = xmalloc(doc->tok_cap * sizeof *doc->cursor);
    buf_init(&doc->scratch);
}

void json_doc_free(JsonDoc *doc)
{
    free(doc->toks);
    free(doc->cursor);
    buf_free(&doc->scratch);
    memset(doc, 0, sizeof *doc);
}

static bool fail(JsonError *err, size_t pos, const char *what)
{
    err->pos = pos;
    err->what = what;
    return false;
}

/* ------------------------------------------------------------------------
 * Error snippets
 * ------------------------------------------------------------------------ */

static bool is_utf8_continuation(char c)
{
    return ((unsigned char)c & 0xC0) == 0x80;
}

void json_snippet(const char *js, size_t len, size_t pos, char *out, size_t out_size)
{
    static const char hex[] = "0123456789abcdef";
    size_t start, end, o = 0;

    if (pos > len)
        pos = len;
    start = pos > JSON_SNIPPET_HALF ? pos - JSON_SNIPPET_HALF : 0;
    end = len - pos > JSON_SNIPPET_HALF ? pos + JSON_SNIPPET_HALF : len;
    while (start < pos && is_utf8_continuation(js[start]))
        start++;
    while (end > start && end < len && is_utf8_continuation(js[end]))
        end--;
    for (size_t i = start; i < end && o + 5 < out_size; i++) {
        unsigned char ch = (unsigned char)js[i];

        if (ch < 0x20 || ch == 0x7f) {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o] = '\0';
}

/* ------------------------------------------------------------------------
 * Tokens
 * ------------------------------------------------------------------------ */

static void grow_tokens(JsonDoc *doc, unsigned int need)
{
    unsigned int cap = doc->tok_cap;

    while (cap < need)
        cap *= 2;
    doc->toks = xrealloc(doc->toks, cap * sizeof *doc->toks);
    doc->cursor = xrealloc(doc->cursor, cap * sizeof *doc->cursor);
    doc->tok_cap = cap;
}

static size_t tok_start(const JsonDoc *doc, int i)
{
    return (size_t)doc->toks[i].start;
}

/* Start including the opening quote of a string. */
static size_t outer_start(const JsonDoc *doc, int i)
{
    const jsmntok_t *t = &doc->toks[i];

    return (size_t)(t->type == JSMN_STRING ? t->start - 1 : t->start);
}

/* End including the closing quote of a string. */
static int outer_end(const jsmntok_t *t)
{
    return t->type == JSMN_STRING ? t->end + 1 : t->end;
}

static bool is_hex(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/*
 * Why jsmn refused the string starting at pos: a bad escape is worth naming.
 * Sets *at to its backslash.
 */
static bool string_has_bad_escape(const JsonDoc *doc, size_t pos, size_t *at)
{
    const char *js = doc->js;

    for (size_t i = pos + 1; i < doc->len && js[i] != '"'; i++) {
        if (js[i] != '\\')
            continue;
        *at = i;
        if (++i >= doc->len)
            return false;
        if (js[i] == 'u') {
            for (size_t k = 1; k <= 4; k++) {
                if (i + k >= doc->len)
                    return false;
                if (!is_hex(js[i + k]))
                    return true;
            }
            i += 4;
        } else if (js[i] == '\0' || !strchr("\"\\/bfnrt", js[i])) {
            return true;
        }
    }
    return false;
}

static bool tokenize(JsonDoc *doc, JsonError *err)
{
    for (;;) {
        jsmn_parser parser;
        size_t bad;
        int r;

        jsmn_init(&parser);
        r = jsmn_parse(&parser, doc->js, doc->len, doc->toks, doc->tok_cap);
        if (r >= 0) {
            doc->ntok = r;
            return true;
        }
        if (r == JSMN_ERROR_NOMEM) {
            /* A token takes at least one byte: more than len + 1 cannot be missing. */
            if (doc->tok_cap > doc->len + 1)
                return fail(err, 0, "invalid JSON");
            /* Count first so a huge message re-parses once, not once per doubling. */
            jsmn_init(&parser);
            r = jsmn_parse(&parser, doc->js, doc->len, NULL, 0);
            grow_tokens(doc, r > 0 && (unsigned int)r > doc->tok_cap ? (unsigned int)r
                                                                     : doc->tok_cap * 2);
            continue;
        }
        if (r == JSMN_ERROR_PART)
            return fail(err, parser.pos, "truncated JSON");
        if (parser.pos < doc->len && doc->js[parser.pos] == '"' &&
            string_has_bad_escape(doc, parser.pos, &bad))
            return fail(err, bad, "invalid escape in string");
        return fail(err, parser.pos, "invalid JSON");
    }
}

/* ------------------------------------------------------------------------
 * Validation
 * ------------------------------------------------------------------------ */

static bool is_ws(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/* True when js[from..to) is whitespace around at most the one separator sep ('\0': none). */
static bool gap_ok(const JsonDoc *doc, size_t from, size_t to, char sep)
{
    bool seen = sep == '\0';

    for (size_t i = from; i < to; i++) {
        char ch = doc->js[i];

        if (is_ws(ch))
            continue;
        if (ch != sep || seen)
            return false;
        seen = true;
    }
    return seen;
}

static bool literal_ok(const char *s, size_t n)
{
    size_t i = 0;

    switch (s[0]) {
    case 't':
        return n == 4 && memcmp(s, "true", 4) == 0;
    case 'f':
        return n == 5 && memcmp(s, "false", 5) == 0;
    case 'n':
        return n == 4 && memcmp(s, "null", 4) == 0;
    default:
        break;
    }
    /* JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
    if (i < n && s[i] == '-')
        i++;
    if (i >= n || !(s[i] >= '0' && s[i] <= '9'))
        return false;
    if (s[i] == '0') {
        i++;
    } else {
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    if (i < n && s[i] == '.') {
        size_t d = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t d;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return false;
    }
    return i == n;
}

/*
 * Completes jsmn's checks: one top-level object and nothing but whitespace
 * around it, keys are strings with exactly one value, members and elements
 * separated by exactly one ',' (':' after a key), valid literals.
 * Tokens are in document order, so the first child of token p is p + 1 and
 * a sibling's whole subtree precedes the next sibling.
 */
static bool check_structure(JsonDoc *doc, JsonError *err)
{
    const jsmntok_t *toks = doc->toks;
    int *cursor = doc->cursor;

    if (doc->ntok == 0 || toks[0].type != JSMN_OBJECT)
        return fail(err, doc->ntok == 0 ? 0 : outer_start(doc, 0), "expected a JSON object");
    if (!gap_ok(doc, 0, tok_start(doc, 0), '\0'))
        return fail(err, 0, "expected a JSON object");
    cursor[0] = toks[0].start + 1;

    for (int i = 1; i < doc->ntok; i++) {
        const jsmntok_t *t = &toks[i];
        int p = t->parent;
        char sep;

        if (p < 0)
            return fail(err, outer_start(doc, i), "unexpected data after the object");
        switch (toks[p].type) {
        case JSMN_OBJECT:
            if (t->type != JSMN_STRING || t->size != 1)
                return fail(err, outer_start(doc, i), "invalid JSON");
            sep = i == p + 1 ? '\0' : ',';
            break;
        case JSMN_ARRAY:
            sep = i == p + 1 ? '\0' : ',';
            break;
        case JSMN_STRING:
            if (i != p + 1 || toks[p].parent < 0 || toks[toks[p].parent].type != JSMN_OBJECT)
                return fail(err, outer_start(doc, i), "invalid JSON");
            sep = ':';
            break;
        default:
            return fail(err, outer_start(doc, i), "invalid JSON");
        }
        if (!gap_ok(doc, (size_t)cursor[p], outer_start(doc, i), sep))
            return fail(err, (size_t)cursor[p], "invalid JSON");
        if (t->type == JSMN_PRIMITIVE &&
            !literal_ok(doc->js + t->start, (size_t)(t->end - t->start)))
            return fail(err, tok_start(doc, i), "invalid JSON literal");
        if (t->type == JSMN_STRING && t->size > 0 && p >= 0 && toks[p].type != JSMN_OBJECT)
            return fail(err, outer_start(doc, i), "invalid JSON");

        cursor[p] = outer_end(t);
        if (toks[p].type == JSMN_STRING)
            cursor[toks[p].parent] = outer_end(t);
        cursor[i] = t->type == JSMN_OBJECT || t->type == JSMN_ARRAY ? t->start + 1 : outer_end(t);
    }

    /* Nothing but whitespace before each closing bracket. */
    for (int i = 0; i < doc->ntok; i++) {
        if ((toks[i].type == JSMN_OBJECT || toks[i].type == JSMN_ARRAY) &&
            !gap_ok(doc, (size_t)cursor[i], (size_t)toks[i].end - 1, '\0'))
            return fail(err, (size_t)cursor[i], "invalid JSON");
    }
    if (!gap_ok(doc, (size_t)toks[0].end, doc->len, '\0'))
        return fail(err, (size_t)toks[0].end, "unexpected data after the object");
    return true;
}

bool json_parse(JsonDoc *doc, const char *js, size_t len, JsonError *err)
{
    doc->js = js;
    doc->len = len;
    doc->ntok = 0;
    if (!tokenize(doc, err) || !check_structure(doc, err))
        return false;
    /* Unescaped text is never longer than the line: no reallocation during the walk. */
    buf_reset(&doc->scratch);
    buf_reserve(&doc->scratch, len);
    return true;
}

/* ------------------------------------------------------------------------
 * Strings
 * ------------------------------------------------------------------------ */

static bool hex4(const char *s, size_t n, uint32_t *out)
{
    uint32_t v = 0;

    if (n < 4)
        return false;
    for (int i = 0; i < 4; i++) {
        char ch = s[i];
        uint32_t d;

        if (ch >= '0' && ch <= '9')
            d = (uint32_t)(ch - '0');
        else if (ch >= 'a' && ch <= 'f')
            d = (uint32_t)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F')
            d = (uint32_t)(ch - 'A' + 10);
        else
            return false;
        v = v << 4 | d;
    }
    *out = v;
    return true;
}

static size_t utf8_encode(uint32_t cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Unescapes the string token i into scratch (reserved by json_parse()). */
static bool unescape(JsonDoc *doc, int i, Str *out, JsonError *err)
{
    Buf *b = &doc->scratch;
    const char *s = doc->js + doc->toks[i].start;
    size_t n = (size_t)(doc->toks[i].end - doc->toks[i].start);
    char *dst = b->data + b->len;
    char *o = dst;
    size_t k = 0;

    while (k < n) {
        const char *bs = memchr(s + k, '\\', n - k);
        size_t run = bs ? (size_t)(bs - (s + k)) : n - k;
        uint32_t cp, lo;

        memcpy(o, s + k, run);
        o += run;
        k += run;
        if (bs == NULL)
            break;
        if (k + 1 >= n)
            return fail(err, (size_t)(s + k - doc->js), "invalid escape in string");
        switch (s[k + 1]) {
        case '"':
        case '\\':
        case '/':
            *o++ = s[k + 1];
            break;
        case 'b':
            *o++ = '\b';
            break;
        case 'f':
            *o++ = '\f';
            break;
        case 'n':
            *o++ = '\n';
            break;
        case 'r':
            *o++ = '\r';
            break;
        case 't':
            *o++ = '\t';
            break;
        case 'u':
            if (!hex4(s + k + 2, n - k - 2, &cp))
                return fail(err, (size_t)(s + k - doc->js), "invalid escape in string");
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return fail(err, (size_t)(s + k - doc->js), "unpaired UTF-16 surrogate in string");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (k + 12 > n || s[k + 6] != '\\' || s[k + 7] != 'u' ||
                    !hex4(s + k + 8, n - k - 8, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    return fail(err, (size_t)(s + k - doc->js),
                                "unpaired UTF-16 surrogate in string");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                k += 6;
            }
            o += utf8_encode(cp, o);
            k += 6;
            continue;
        default:
            return fail(err, (size_t)(s + k - doc->js), "invalid escape in string");
        }
        k += 2;
    }
    out->ptr = dst;
    out->len = (size_t)(o - dst);
    b->len += out->len;
    return true;
}

bool json_string(JsonDoc *doc, int i, Str *out, JsonError *err)
{
    const jsmntok_t *t = &doc->toks[i];
    const char *s = doc->js + t->start;
    size_t n = (size_t)(t->end - t->start);

    if (memchr(s, '\\', n) == NULL) {
        out->ptr = n ? s : "";
        out->len = n;
        return true;
    }
    return unescape(doc, i, out, err);
}
