/*
 * json_reference.c - the former parser of decoder/json.c (see
 * json_reference.h): jsmn tokenizes, check_structure() closes what jsmn lets
 * through. Copied from decoder/json.c as it was before its own tokenizer;
 * only names changed (JsonDoc -> JsonRef, json_parse -> json_ref_parse).
 */

/* jsmn's code, static to this file, configured as json.c configured it. */
#define JSMN_STATIC
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

#include "json_reference.h"

#include "../../common/mem.h"

#include <stdlib.h>
#include <string.h>

#define JSON_REF_INITIAL_TOKENS 256

void json_ref_init(JsonRef *ref)
{
    memset(ref, 0, sizeof *ref);
    ref->tok_cap = JSON_REF_INITIAL_TOKENS;
    ref->toks = xmalloc(ref->tok_cap * sizeof *ref->toks);
    ref->cursor = xmalloc(ref->tok_cap * sizeof *ref->cursor);
}

void json_ref_free(JsonRef *ref)
{
    free(ref->toks);
    free(ref->cursor);
    memset(ref, 0, sizeof *ref);
}

static bool fail(JsonError *err, size_t pos, const char *what)
{
    err->pos = pos;
    err->what = what;
    return false;
}

static void grow_tokens(JsonRef *doc, unsigned int need)
{
    unsigned int cap = doc->tok_cap;

    while (cap < need)
        cap *= 2;
    doc->toks = xrealloc(doc->toks, cap * sizeof *doc->toks);
    doc->cursor = xrealloc(doc->cursor, cap * sizeof *doc->cursor);
    doc->tok_cap = cap;
}

static size_t tok_start(const JsonRef *doc, int i)
{
    return (size_t)doc->toks[i].start;
}

/* Start including the opening quote of a string. */
static size_t outer_start(const JsonRef *doc, int i)
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
static bool string_has_bad_escape(const JsonRef *doc, size_t pos, size_t *at)
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

static bool tokenize(JsonRef *doc, JsonError *err)
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

/* gap_ok()'s general case: whitespace anywhere. */
static bool gap_ok_slow(const JsonRef *doc, size_t from, size_t to, char sep)
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

/*
 * True when js[from..to) is whitespace around at most the one separator sep
 * ('\0': none). wal2json writes no whitespace: no gap, or the bare separator.
 */
static inline bool gap_ok(const JsonRef *doc, size_t from, size_t to, char sep)
{
    if (to == from)
        return sep == '\0';
    if (to == from + 1 && sep != '\0' && doc->js[from] == sep)
        return true;
    return gap_ok_slow(doc, from, to, sep);
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
static bool check_structure(JsonRef *doc, JsonError *err)
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

bool json_ref_parse(JsonRef *doc, const char *js, size_t len, JsonError *err)
{
    doc->js = js;
    doc->len = len;
    doc->ntok = 0;
    return tokenize(doc, err) && check_structure(doc, err);
}
