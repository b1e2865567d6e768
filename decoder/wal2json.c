/*
 * wal2json.c - wal2json format-version 2 message -> Change.
 *
 * Implementation notes:
 * - jsmn tokenizes the line into an array owned by the decoder. The array
 *   grows (never shrinks) when jsmn reports JSMN_ERROR_NOMEM; the line is
 *   then re-parsed, so a message is never refused for its size.
 * - jsmn is lenient about separators (it accepts "[1,,2]" or a key without
 *   ':'), does not check literals ("tru", "1.2.3") and accepts several values
 *   in a row. check_structure() closes those gaps in one pass over the tokens
 *   so that only well-formed JSON reaches the field walk.
 * - Strings without a backslash are returned as spans of the input
 *   (zero-copy). The others are unescaped into `scratch`, which is reserved
 *   to the length of the whole line before the walk starts: unescaping never
 *   makes a string longer, so the buffer cannot move while spans into it are
 *   held.
 * - Raw control bytes inside strings are accepted (wal2json always escapes
 *   them, and the bytes are passed through unchanged).
 */
#include "wal2json.h"

#include "../common/buf.h"
#include "../common/mem.h"
#include "values.h"

#define JSMN_STATIC
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Enough for a typical row of a few dozen columns without growing. */
#define W2J_INITIAL_TOKENS 256

/* Bytes shown on each side of an error position. */
#define SNIPPET_HALF 20

struct W2jDecoder {
    jsmntok_t *toks;
    int *cursor; /* check_structure(): per token, end of what was last seen inside it */
    unsigned int tok_cap;

    Buf scratch; /* unescaped strings of the current message */

    Column *new_cols;
    size_t new_cap;
    Column *old_cols;
    size_t old_cap;
    Str *pk;
    size_t pk_cap;
};

/* One decode call: the input and where errors go. */
typedef struct Ctx {
    W2jDecoder *dec;
    const char *js;
    size_t len;
    int ntok;
    Lsn wal_lsn;
    PfError *err;
} Ctx;

/* Top-level keys the decoder reads; anything else is ignored. */
typedef enum Field {
    F_ACTION = 0,
    F_XID,
    F_TIMESTAMP,
    F_LSN,
    F_NEXTLSN,
    F_SCHEMA,
    F_TABLE,
    F_COLUMNS,
    F_IDENTITY,
    F_PK,
    F_TRANSACTIONAL,
    F_PREFIX,
    F_CONTENT,
    F_COUNT
} Field;

typedef struct FieldName {
    const char *name;
    size_t len;
} FieldName;

/* clang-format off */
#define FN(s) {s, sizeof s - 1}
/* clang-format on */

/* Indexed by Field. */
static const FieldName field_names[F_COUNT] = {
    FN("action"),        FN("xid"),    FN("timestamp"), FN("lsn"),      FN("nextlsn"),
    FN("schema"),        FN("table"),  FN("columns"),   FN("identity"), FN("pk"),
    FN("transactional"), FN("prefix"), FN("content"),
};

static const Str str_empty = {"", 0};

W2jDecoder *w2j_new(void)
{
    W2jDecoder *dec = xcalloc(1, sizeof *dec);

    dec->tok_cap = W2J_INITIAL_TOKENS;
    dec->toks = xmalloc(dec->tok_cap * sizeof *dec->toks);
    dec->cursor = xmalloc(dec->tok_cap * sizeof *dec->cursor);
    buf_init(&dec->scratch);
    return dec;
}

void w2j_free(W2jDecoder *dec)
{
    if (dec == NULL)
        return;
    free(dec->toks);
    free(dec->cursor);
    buf_free(&dec->scratch);
    free(dec->new_cols);
    free(dec->old_cols);
    free(dec->pk);
    free(dec);
}

/* ------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------ */

static bool is_utf8_continuation(char c)
{
    return ((unsigned char)c & 0xC0) == 0x80;
}

/*
 * Quotes at most 2 * SNIPPET_HALF input bytes around pos, never cutting a
 * UTF-8 sequence and writing control bytes as \xNN so the log line stays
 * one printable line.
 */
static void format_snippet(const Ctx *c, size_t pos, char *out, size_t out_size)
{
    static const char hex[] = "0123456789abcdef";
    size_t start, end, o = 0;

    if (pos > c->len)
        pos = c->len;
    start = pos > SNIPPET_HALF ? pos - SNIPPET_HALF : 0;
    end = c->len - pos > SNIPPET_HALF ? pos + SNIPPET_HALF : c->len;
    while (start < pos && is_utf8_continuation(c->js[start]))
        start++;
    while (end > start && end < c->len && is_utf8_continuation(c->js[end]))
        end--;
    for (size_t i = start; i < end && o + 5 < out_size; i++) {
        unsigned char ch = (unsigned char)c->js[i];

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

/* Fills the error: "could not decode wal2json message at <lsn>: <what> near '<snippet>'". */
static bool fail(const Ctx *c, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool fail(const Ctx *c, size_t pos, const char *fmt, ...)
{
    char what[256];
    char snippet[4 * 2 * SNIPPET_HALF + 8];
    char lsn[LSN_TEXT_SIZE];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    format_snippet(c, pos, snippet, sizeof snippet);
    return err_set(c->err, ERR_FATAL, "could not decode wal2json message at %s: %s near '%s'",
                   lsn_format(c->wal_lsn, lsn), what, snippet);
}

/* ------------------------------------------------------------------------
 * Tokens
 * ------------------------------------------------------------------------ */

static void grow_tokens(W2jDecoder *dec, unsigned int need)
{
    unsigned int cap = dec->tok_cap;

    while (cap < need)
        cap *= 2;
    dec->toks = xrealloc(dec->toks, cap * sizeof *dec->toks);
    dec->cursor = xrealloc(dec->cursor, cap * sizeof *dec->cursor);
    dec->tok_cap = cap;
}

static size_t tok_start(const Ctx *c, int i)
{
    return (size_t)c->dec->toks[i].start;
}

/* Start including the opening quote of a string. */
static size_t outer_start(const Ctx *c, int i)
{
    const jsmntok_t *t = &c->dec->toks[i];

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
static bool string_has_bad_escape(const Ctx *c, size_t pos, size_t *at)
{
    for (size_t i = pos + 1; i < c->len && c->js[i] != '"'; i++) {
        if (c->js[i] != '\\')
            continue;
        *at = i;
        if (++i >= c->len)
            return false;
        if (c->js[i] == 'u') {
            for (size_t k = 1; k <= 4; k++) {
                if (i + k >= c->len)
                    return false;
                if (!is_hex(c->js[i + k]))
                    return true;
            }
            i += 4;
        } else if (c->js[i] == '\0' || !strchr("\"\\/bfnrt", c->js[i])) {
            return true;
        }
    }
    return false;
}

static bool tokenize(Ctx *c)
{
    W2jDecoder *dec = c->dec;

    for (;;) {
        jsmn_parser parser;
        size_t bad;
        int r;

        jsmn_init(&parser);
        r = jsmn_parse(&parser, c->js, c->len, dec->toks, dec->tok_cap);
        if (r >= 0) {
            c->ntok = r;
            return true;
        }
        if (r == JSMN_ERROR_NOMEM) {
            /* A token takes at least one byte: more than len + 1 cannot be missing. */
            if (dec->tok_cap > c->len + 1)
                return fail(c, 0, "invalid JSON");
            /* Count first so a huge message re-parses once, not once per doubling. */
            jsmn_init(&parser);
            r = jsmn_parse(&parser, c->js, c->len, NULL, 0);
            grow_tokens(dec, r > 0 && (unsigned int)r > dec->tok_cap ? (unsigned int)r
                                                                     : dec->tok_cap * 2);
            continue;
        }
        if (r == JSMN_ERROR_PART)
            return fail(c, parser.pos, "truncated JSON");
        if (parser.pos < c->len && c->js[parser.pos] == '"' &&
            string_has_bad_escape(c, parser.pos, &bad))
            return fail(c, bad, "invalid escape in string");
        return fail(c, parser.pos, "invalid JSON");
    }
}

static bool is_ws(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/* True when js[from..to) is whitespace around at most the one separator sep ('\0': none). */
static bool gap_ok(const Ctx *c, size_t from, size_t to, char sep)
{
    bool seen = sep == '\0';

    for (size_t i = from; i < to; i++) {
        char ch = c->js[i];

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
static bool check_structure(Ctx *c)
{
    const jsmntok_t *toks = c->dec->toks;
    int *cursor = c->dec->cursor;

    if (c->ntok == 0 || toks[0].type != JSMN_OBJECT)
        return fail(c, c->ntok == 0 ? 0 : outer_start(c, 0), "expected a JSON object");
    if (!gap_ok(c, 0, tok_start(c, 0), '\0'))
        return fail(c, 0, "expected a JSON object");
    cursor[0] = toks[0].start + 1;

    for (int i = 1; i < c->ntok; i++) {
        const jsmntok_t *t = &toks[i];
        int p = t->parent;
        char sep;

        if (p < 0)
            return fail(c, outer_start(c, i), "unexpected data after the object");
        switch (toks[p].type) {
        case JSMN_OBJECT:
            if (t->type != JSMN_STRING || t->size != 1)
                return fail(c, outer_start(c, i), "invalid JSON");
            sep = i == p + 1 ? '\0' : ',';
            break;
        case JSMN_ARRAY:
            sep = i == p + 1 ? '\0' : ',';
            break;
        case JSMN_STRING:
            if (i != p + 1 || toks[p].parent < 0 || toks[toks[p].parent].type != JSMN_OBJECT)
                return fail(c, outer_start(c, i), "invalid JSON");
            sep = ':';
            break;
        default:
            return fail(c, outer_start(c, i), "invalid JSON");
        }
        if (!gap_ok(c, (size_t)cursor[p], outer_start(c, i), sep))
            return fail(c, (size_t)cursor[p], "invalid JSON");
        if (t->type == JSMN_PRIMITIVE && !literal_ok(c->js + t->start, (size_t)(t->end - t->start)))
            return fail(c, tok_start(c, i), "invalid JSON literal");
        if (t->type == JSMN_STRING && t->size > 0 && p >= 0 && toks[p].type != JSMN_OBJECT)
            return fail(c, outer_start(c, i), "invalid JSON");

        cursor[p] = outer_end(t);
        if (toks[p].type == JSMN_STRING)
            cursor[toks[p].parent] = outer_end(t);
        cursor[i] = t->type == JSMN_OBJECT || t->type == JSMN_ARRAY ? t->start + 1 : outer_end(t);
    }

    /* Nothing but whitespace before each closing bracket. */
    for (int i = 0; i < c->ntok; i++) {
        if ((toks[i].type == JSMN_OBJECT || toks[i].type == JSMN_ARRAY) &&
            !gap_ok(c, (size_t)cursor[i], (size_t)toks[i].end - 1, '\0'))
            return fail(c, (size_t)cursor[i], "invalid JSON");
    }
    if (!gap_ok(c, (size_t)toks[0].end, c->len, '\0'))
        return fail(c, (size_t)toks[0].end, "unexpected data after the object");
    return true;
}

/* Index of the token after i's subtree. */
static int skip(const Ctx *c, int i)
{
    const jsmntok_t *toks = c->dec->toks;
    int end = toks[i].end;
    int j = i + 1;

    while (j < c->ntok && toks[j].start < end)
        j++;
    return j;
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

/* Unescapes the string token i into scratch (reserved by w2j_decode). */
static bool unescape(Ctx *c, int i, Str *out)
{
    Buf *b = &c->dec->scratch;
    const char *s = c->js + c->dec->toks[i].start;
    size_t n = (size_t)(c->dec->toks[i].end - c->dec->toks[i].start);
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
            return fail(c, (size_t)(s + k - c->js), "invalid escape in string");
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
                return fail(c, (size_t)(s + k - c->js), "invalid escape in string");
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return fail(c, (size_t)(s + k - c->js), "unpaired UTF-16 surrogate in string");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (k + 12 > n || s[k + 6] != '\\' || s[k + 7] != 'u' ||
                    !hex4(s + k + 8, n - k - 8, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    return fail(c, (size_t)(s + k - c->js), "unpaired UTF-16 surrogate in string");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                k += 6;
            }
            o += utf8_encode(cp, o);
            k += 6;
            continue;
        default:
            return fail(c, (size_t)(s + k - c->js), "invalid escape in string");
        }
        k += 2;
    }
    out->ptr = dst;
    out->len = (size_t)(o - dst);
    b->len += out->len;
    return true;
}

/* The text of string token i: a span of the input, or unescaped into scratch. */
static bool get_string(Ctx *c, int i, Str *out)
{
    const jsmntok_t *t = &c->dec->toks[i];
    const char *s = c->js + t->start;
    size_t n = (size_t)(t->end - t->start);

    if (memchr(s, '\\', n) == NULL) {
        out->ptr = n ? s : "";
        out->len = n;
        return true;
    }
    return unescape(c, i, out);
}

static bool key_is(const Str *key, const char *name, size_t name_len)
{
    return key->len == name_len && memcmp(key->ptr, name, name_len) == 0;
}

/* ------------------------------------------------------------------------
 * Fields
 * ------------------------------------------------------------------------ */

static bool tok_is_null(const Ctx *c, int i)
{
    const jsmntok_t *t = &c->dec->toks[i];

    return t->type == JSMN_PRIMITIVE && c->js[t->start] == 'n';
}

static bool field_string(Ctx *c, int i, Field f, Str *out)
{
    if (c->dec->toks[i].type != JSMN_STRING)
        return fail(c, tok_start(c, i), "\"%s\" must be a string", field_names[f].name);
    return get_string(c, i, out);
}

static bool field_lsn(Ctx *c, int i, Field f, Lsn *out)
{
    const jsmntok_t *t = &c->dec->toks[i];

    if (t->type != JSMN_STRING)
        return fail(c, tok_start(c, i), "\"%s\" must be a string", field_names[f].name);
    if (!lsn_parse(c->js + t->start, (size_t)(t->end - t->start), out))
        return fail(c, tok_start(c, i), "invalid \"%s\" value", field_names[f].name);
    return true;
}

static bool field_xid(Ctx *c, int i, Change *out)
{
    const jsmntok_t *t = &c->dec->toks[i];
    uint64_t v = 0;

    if (tok_is_null(c, i))
        return true;
    if (t->type != JSMN_PRIMITIVE || !(c->js[t->start] >= '0' && c->js[t->start] <= '9'))
        return fail(c, tok_start(c, i), "\"xid\" must be an integer or null");
    for (int k = t->start; k < t->end; k++) {
        char ch = c->js[k];

        if (ch < '0' || ch > '9')
            return fail(c, tok_start(c, i), "\"xid\" must be an integer or null");
        v = v * 10 + (uint64_t)(ch - '0');
        if (v > UINT32_MAX)
            return fail(c, tok_start(c, i), "invalid \"xid\" value");
    }
    out->has_xid = true;
    out->xid = (uint32_t)v;
    return true;
}

static bool field_timestamp(Ctx *c, int i, Change *out)
{
    const jsmntok_t *t = &c->dec->toks[i];
    Str text;

    if (tok_is_null(c, i))
        return true;
    if (t->type != JSMN_STRING)
        return fail(c, tok_start(c, i), "\"timestamp\" must be a string or null");
    text.ptr = c->js + t->start;
    text.len = (size_t)(t->end - t->start);
    if (!value_parse_timestamptz(text, &out->commit_time))
        return fail(c, tok_start(c, i), "invalid \"timestamp\" value");
    out->has_commit_time = true;
    return true;
}

/* Makes room for n elements of size `size` in *arr; grows, never shrinks. */
static void *reserve_array(void *arr, size_t *cap, size_t n, size_t size)
{
    size_t new_cap;

    if (n <= *cap)
        return arr;
    new_cap = *cap ? *cap : 16;
    while (new_cap < n)
        new_cap *= 2;
    *cap = new_cap;
    return xrealloc(arr, new_cap * size);
}

static bool parse_value(Ctx *c, int i, Value *v)
{
    const jsmntok_t *t = &c->dec->toks[i];

    switch (t->type) {
    case JSMN_STRING:
        v->kind = VALUE_STRING;
        return get_string(c, i, &v->text);
    case JSMN_PRIMITIVE:
        switch (c->js[t->start]) {
        case 'n':
            v->kind = VALUE_NULL;
            v->text = str_empty;
            return true;
        case 't':
        case 'f':
            v->kind = VALUE_BOOL;
            break;
        default:
            v->kind = VALUE_NUMBER;
            break;
        }
        v->text.ptr = c->js + t->start;
        v->text.len = (size_t)(t->end - t->start);
        return true;
    default:
        return fail(c, tok_start(c, i), "column \"value\" must be a scalar");
    }
}

/* Reads one {"name":..., "type":..., "value":...} element at token i. */
static bool parse_column(Ctx *c, int i, Column *col)
{
    const jsmntok_t *toks = c->dec->toks;
    int name_tok = -1, type_tok = -1, value_tok = -1;
    int j = i + 1;

    for (int m = 0; m < toks[i].size; m++) {
        Str key;

        if (!get_string(c, j, &key))
            return false;
        if (key_is(&key, "name", 4))
            name_tok = j + 1;
        else if (key_is(&key, "type", 4))
            type_tok = j + 1;
        else if (key_is(&key, "value", 5))
            value_tok = j + 1;
        j = skip(c, j + 1);
    }
    if (name_tok < 0)
        return fail(c, tok_start(c, i), "column without \"name\"");
    if (toks[name_tok].type != JSMN_STRING)
        return fail(c, tok_start(c, name_tok), "column \"name\" must be a string");
    if (!get_string(c, name_tok, &col->name))
        return false;
    col->type = str_empty;
    col->type_class = TYPE_UNKNOWN;
    if (type_tok >= 0) {
        if (toks[type_tok].type != JSMN_STRING)
            return fail(c, tok_start(c, type_tok), "column \"type\" must be a string");
        if (!get_string(c, type_tok, &col->type))
            return false;
        col->type_class = value_type_class(col->type);
    }
    if (value_tok < 0)
        return fail(c, tok_start(c, i), "column without \"value\"");
    return parse_value(c, value_tok, &col->value);
}

static bool parse_columns(Ctx *c, int i, Field f, Column **cols, size_t *cap, size_t *n_out)
{
    const jsmntok_t *toks = c->dec->toks;
    size_t n = (size_t)toks[i].size;
    int j = i + 1;

    if (toks[i].type != JSMN_ARRAY)
        return fail(c, tok_start(c, i), "\"%s\" must be an array", field_names[f].name);
    *cols = reserve_array(*cols, cap, n, sizeof **cols);
    for (size_t k = 0; k < n; k++) {
        if (toks[j].type != JSMN_OBJECT)
            return fail(c, tok_start(c, j), "\"%s\" element must be an object",
                        field_names[f].name);
        if (!parse_column(c, j, &(*cols)[k]))
            return false;
        j = skip(c, j);
    }
    *n_out = n;
    return true;
}

static bool parse_pk(Ctx *c, int i, Change *out)
{
    W2jDecoder *dec = c->dec;
    const jsmntok_t *toks = dec->toks;
    size_t n = (size_t)toks[i].size;
    int j = i + 1;

    if (toks[i].type != JSMN_ARRAY)
        return fail(c, tok_start(c, i), "\"pk\" must be an array");
    dec->pk = reserve_array(dec->pk, &dec->pk_cap, n, sizeof *dec->pk);
    for (size_t k = 0; k < n; k++) {
        int name_tok = -1;
        int m_tok = j + 1;

        if (toks[j].type != JSMN_OBJECT)
            return fail(c, tok_start(c, j), "\"pk\" element must be an object");
        for (int m = 0; m < toks[j].size; m++) {
            Str key;

            if (!get_string(c, m_tok, &key))
                return false;
            if (key_is(&key, "name", 4))
                name_tok = m_tok + 1;
            m_tok = skip(c, m_tok + 1);
        }
        if (name_tok < 0)
            return fail(c, tok_start(c, j), "\"pk\" element without \"name\"");
        if (toks[name_tok].type != JSMN_STRING)
            return fail(c, tok_start(c, name_tok), "\"pk\" \"name\" must be a string");
        if (!get_string(c, name_tok, &dec->pk[k]))
            return false;
        j = skip(c, j);
    }
    out->pk = dec->pk;
    out->n_pk = n;
    return true;
}

static bool parse_action(Ctx *c, int i, ChangeKind *kind)
{
    /* Indexed by ChangeKind. */
    static const char actions[] = "BCIUDTM";
    _Static_assert(CHANGE_BEGIN == 0 && CHANGE_COMMIT == 1 && CHANGE_INSERT == 2 &&
                       CHANGE_UPDATE == 3 && CHANGE_DELETE == 4 && CHANGE_TRUNCATE == 5 &&
                       CHANGE_MESSAGE == 6,
                   "actions[] follows ChangeKind");
    const jsmntok_t *t = &c->dec->toks[i];
    const char *hit;

    if (t->type != JSMN_STRING)
        return fail(c, tok_start(c, i), "\"action\" must be a string");
    if (t->end - t->start != 1 || c->js[t->start] == '\0' ||
        (hit = strchr(actions, c->js[t->start])) == NULL)
        return fail(c, tok_start(c, i), "unknown \"action\" value");
    *kind = (ChangeKind)(hit - actions);
    return true;
}

/* Records where each known top-level key's value is; later duplicates win. */
static bool index_fields(Ctx *c, int fields[F_COUNT])
{
    int j = 1;

    for (int f = 0; f < F_COUNT; f++)
        fields[f] = -1;
    for (int m = 0; m < c->dec->toks[0].size; m++) {
        Str key;

        if (!get_string(c, j, &key))
            return false;
        for (int f = 0; f < F_COUNT; f++) {
            if (key.len == field_names[f].len && key.ptr[0] == field_names[f].name[0] &&
                memcmp(key.ptr, field_names[f].name, key.len) == 0) {
                fields[f] = j + 1;
                break;
            }
        }
        j = skip(c, j + 1);
    }
    return true;
}

static bool require(Ctx *c, const int fields[F_COUNT], Field f)
{
    if (fields[f] < 0)
        return fail(c, 0, "missing \"%s\"", field_names[f].name);
    return true;
}

static bool decode_fields(Ctx *c, Change *out)
{
    W2jDecoder *dec = c->dec;
    int fields[F_COUNT];
    int i;

    if (!index_fields(c, fields))
        return false;
    if (!require(c, fields, F_ACTION) || !parse_action(c, fields[F_ACTION], &out->kind))
        return false;

    if (!require(c, fields, F_LSN) || !field_lsn(c, fields[F_LSN], F_LSN, &out->lsn))
        return false;
    if (out->kind == CHANGE_BEGIN || out->kind == CHANGE_COMMIT) {
        if (!require(c, fields, F_NEXTLSN) ||
            !field_lsn(c, fields[F_NEXTLSN], F_NEXTLSN, &out->end_lsn))
            return false;
    }
    if ((i = fields[F_XID]) >= 0 && !field_xid(c, i, out))
        return false;
    if ((i = fields[F_TIMESTAMP]) >= 0 && !field_timestamp(c, i, out))
        return false;

    switch (out->kind) {
    case CHANGE_INSERT:
    case CHANGE_UPDATE:
    case CHANGE_DELETE:
    case CHANGE_TRUNCATE:
        if ((i = fields[F_SCHEMA]) >= 0 && !field_string(c, i, F_SCHEMA, &out->schema))
            return false;
        if (!require(c, fields, F_TABLE) || !field_string(c, fields[F_TABLE], F_TABLE, &out->table))
            return false;
        if ((i = fields[F_COLUMNS]) >= 0 &&
            !parse_columns(c, i, F_COLUMNS, &dec->new_cols, &dec->new_cap, &out->n_new))
            return false;
        if ((i = fields[F_IDENTITY]) >= 0 &&
            !parse_columns(c, i, F_IDENTITY, &dec->old_cols, &dec->old_cap, &out->n_old))
            return false;
        if ((i = fields[F_PK]) >= 0 && !parse_pk(c, i, out))
            return false;
        out->new_cols = out->n_new ? dec->new_cols : NULL;
        out->old_cols = out->n_old ? dec->old_cols : NULL;
        break;
    case CHANGE_MESSAGE:
        if (!require(c, fields, F_TRANSACTIONAL))
            return false;
        i = fields[F_TRANSACTIONAL];
        if (dec->toks[i].type != JSMN_PRIMITIVE ||
            (c->js[dec->toks[i].start] != 't' && c->js[dec->toks[i].start] != 'f'))
            return fail(c, tok_start(c, i), "\"transactional\" must be true or false");
        out->transactional = c->js[dec->toks[i].start] == 't';
        if (!require(c, fields, F_PREFIX) ||
            !field_string(c, fields[F_PREFIX], F_PREFIX, &out->prefix))
            return false;
        if (!require(c, fields, F_CONTENT) ||
            !field_string(c, fields[F_CONTENT], F_CONTENT, &out->content))
            return false;
        break;
    case CHANGE_BEGIN:
    case CHANGE_COMMIT:
        break;
    }
    return true;
}

bool w2j_decode(W2jDecoder *dec, const char *line, size_t len, Lsn wal_lsn, Change *out,
                PfError *err)
{
    Ctx c = {dec, line, len, 0, wal_lsn, err};

    memset(out, 0, sizeof *out);
    out->schema = out->table = out->prefix = out->content = str_empty;
    out->end_lsn = LSN_INVALID;

    /* jsmn counts positions in int. */
    if (len >= INT_MAX)
        return fail(&c, 0, "message too large (%zu bytes)", len);
    if (!tokenize(&c) || !check_structure(&c))
        return false;
    /* Unescaped text is never longer than the line: no reallocation during the walk. */
    buf_reset(&dec->scratch);
    buf_reserve(&dec->scratch, len);
    return decode_fields(&c, out);
}
