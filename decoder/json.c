/*
 * json.c - JSON layer of the wal2json decoder.
 *
 * Implementation notes:
 * - tokenize() is a strict single-pass tokenizer (RFC 8259, one top-level
 *   object) that writes jsmn's token layout (json.h) into an array owned by
 *   the JsonDoc. The array grows (never shrinks) while the line is read, so a
 *   message is never refused for its size and never read twice.
 * - It replaced jsmn plus a second pass over jsmn's tokens that closed what
 *   jsmn lets through (separators, literals, several top-level values): the
 *   two were two thirds of a decode. The tokens and the accepted inputs are
 *   the same; tests/fuzz/fuzz_json.c checks that against the old code, kept
 *   in tests/fuzz/json_reference.c. Error descriptions follow the old ones;
 *   a position is now that of the offending byte where the old pass named
 *   the start of the gap before it.
 * - No stack for nesting: a closed container's parent link, through the key
 *   when it was a member's value, leads back to the container around it.
 * - Strings without a backslash are returned as spans of the input
 *   (zero-copy). The others are unescaped into `scratch`, which is reserved
 *   to the length of the whole line before the walk starts: unescaping never
 *   makes a string longer, so the buffer cannot move while spans into it are
 *   held.
 * - Raw control bytes inside strings are accepted (wal2json always escapes
 *   them, and the bytes are passed through unchanged), except NUL, which jsmn
 *   took for the end of the input and refused.
 */
#include "json.h"

#include "../common/mem.h"

#include <limits.h>
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
    buf_init(&doc->scratch);
}

void json_doc_free(JsonDoc *doc)
{
    free(doc->toks);
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
 * Tokenizer
 * ------------------------------------------------------------------------ */

/* The one object for this description: json_parse() recognizes it by address. */
static const char truncated_json[] = "truncated JSON";

/*
 * The state of one pass, a local of tokenize(). Only inline helpers take its
 * address (the out-of-line ones, for errors, escapes and growth, take plain
 * values), so the compiler can keep it in registers. toks and cap are copies
 * of the JsonDoc's, updated when the array grows; ntok is written back at the
 * end. Positions fit in int: json_parse() refuses INT_MAX bytes or more, and
 * a token takes at least two bytes, so the count stays below 2^30.
 */
typedef struct Tokenizer {
    const char *js;
    size_t len; /* where the text ends: the input's length or its first NUL */
    size_t pos;
    jsmntok_t *toks;
    int ntok;
    unsigned int cap;
    int cur;          /* innermost open object or array */
    bool in_object;   /* cur is an object */
    int parent;       /* parent of the next value: cur, or the key it is the value of */
    bool has_escapes; /* a string with a backslash was seen */
} Tokenizer;

/* Bytes that end the plain run of a string: the closing quote and an escape. */
static const unsigned char string_stop[256] = {['"'] = 1, ['\\'] = 1};

/* Bytes that may follow a number or literal: whitespace, ',', ']', '}'. */
static const unsigned char after_primitive[256] = {
    [' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1, [','] = 1, [']'] = 1, ['}'] = 1,
};

static inline bool is_ws(char ch)
{
    return (unsigned char)ch <= ' ' && (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r');
}

static inline bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static bool is_hex(char ch)
{
    return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* First byte of a JSON value. */
static bool starts_value(char ch)
{
    return ch == '{' || ch == '[' || ch == '"' || ch == '-' || is_digit(ch) || ch == 't' ||
           ch == 'f' || ch == 'n';
}

/* Index of the first byte at or after i that is not whitespace, or len. */
static size_t skip_ws(const char *js, size_t len, size_t i)
{
    while (i < len && is_ws(js[i]))
        i++;
    return i;
}

/*
 * The next byte that is not whitespace, left at pos. wal2json writes no
 * whitespace, hence the test before the loop.
 */
static inline bool next_byte(Tokenizer *tz, char *ch, JsonError *err)
{
    if (tz->pos < tz->len && !is_ws(tz->js[tz->pos])) {
        *ch = tz->js[tz->pos];
        return true;
    }
    tz->pos = skip_ws(tz->js, tz->len, tz->pos);
    if (tz->pos >= tz->len)
        return fail(err, tz->len, truncated_json);
    *ch = tz->js[tz->pos];
    return true;
}

/* Doubles the token array; returns it (the caller's copy moves with it). */
static jsmntok_t *grow_tokens(JsonDoc *doc)
{
    doc->tok_cap *= 2;
    doc->toks = xrealloc(doc->toks, doc->tok_cap * sizeof *doc->toks);
    return doc->toks;
}

/*
 * Appends a token below parent (never -1: the top-level object is made by
 * open_top()), end still unknown, and counts it in the parent's size as jsmn
 * does: a key in its object's, a value in its key's or array's.
 */
static inline int new_token(Tokenizer *tz, JsonDoc *doc, jsmntype_t type, size_t start,
                            int parent)
{
    jsmntok_t *t;

    if ((unsigned int)tz->ntok == tz->cap) {
        tz->toks = grow_tokens(doc);
        tz->cap = doc->tok_cap;
    }
    t = &tz->toks[tz->ntok];
    t->type = type;
    t->start = (int)start;
    t->end = -1;
    t->size = 0;
    t->parent = parent;
    tz->toks[parent].size++;
    return tz->ntok++;
}

/*
 * Index of the first quote or backslash in js[i..len), or len. Eight bytes
 * at a time where the input has them: a byte b is found in a word v as a
 * zero byte of v ^ b, and the lowest flag of the zero-byte test is exact
 * (flags above it may be false, and are not looked at).
 */
static inline size_t string_stop_at(const char *js, size_t len, size_t i)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101u;
    const uint64_t highs = 0x8080808080808080u;

    while (len - i >= 8) {
        uint64_t v, q, b, m;

        memcpy(&v, js + i, 8);
        q = v ^ (ones * '"');
        b = v ^ (ones * '\\');
        m = (((q - ones) & ~q) | ((b - ones) & ~b)) & highs;
        if (m != 0)
            return i + (size_t)(__builtin_ctzll(m) >> 3);
        i += 8;
    }
#endif
    while (i < len && !string_stop[(unsigned char)js[i]])
        i++;
    return i;
}

/*
 * Checks the escape whose backslash is at *at (the string opened at open)
 * and moves *at past it. The surrogate pairing is json_string()'s business.
 */
static bool scan_escape(const char *js, size_t len, size_t open, size_t *at, JsonError *err)
{
    size_t i = *at;

    if (i + 1 >= len)
        return fail(err, open, truncated_json);
    switch (js[i + 1]) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't':
        *at = i + 2;
        return true;
    case 'u':
        for (size_t k = 2; k < 6; k++) {
            if (i + k >= len)
                return fail(err, open, truncated_json);
            if (!is_hex(js[i + k]))
                return fail(err, i, "invalid escape in string");
        }
        *at = i + 6;
        return true;
    default:
        return fail(err, i, "invalid escape in string");
    }
}

/*
 * The rest of a string whose plain run stopped at i, on a backslash or at
 * the end of the text: the index of its closing quote, or SIZE_MAX. Out of
 * line: wal2json escapes little, and the common path stays small.
 */
static __attribute__((noinline)) size_t string_rest(const char *js, size_t len, size_t open,
                                                    size_t i, JsonError *err)
{
    while (i >= len || js[i] != '"') {
        if (i >= len) {
            fail(err, open, truncated_json);
            return SIZE_MAX;
        }
        if (!scan_escape(js, len, open, &i, err))
            return SIZE_MAX;
        i = string_stop_at(js, len, i);
    }
    return i;
}

/*
 * The string whose opening quote is at pos: a token from after the quote to
 * the closing quote (exclusive), as jsmn makes it. Returns its index, or -1.
 * Raw control bytes are let through (json.c's notes). Always inlined: it is
 * most of the work, and a call costs more than a short string.
 */
static inline __attribute__((always_inline)) int scan_string(Tokenizer *tz, JsonDoc *doc,
                                                             int parent, JsonError *err)
{
    size_t open = tz->pos;
    size_t i = string_stop_at(tz->js, tz->len, open + 1);
    int t;

    if (i >= tz->len || tz->js[i] != '"') {
        tz->has_escapes = true;
        i = string_rest(tz->js, tz->len, open, i, err);
        if (i == SIZE_MAX)
            return -1;
    }
    t = new_token(tz, doc, JSMN_STRING, open + 1, parent);
    tz->toks[t].end = (int)i;
    tz->pos = i + 1;
    return t;
}

/*
 * Why the number or literal starting at start is refused, worded as before
 * this tokenizer: the primitive runs to the next whitespace, ',', ']' or '}';
 * if none comes the text is truncated, a control or non-ASCII byte on the
 * way makes it invalid JSON, anything else an invalid literal.
 */
static bool primitive_error(const char *js, size_t len, size_t start, JsonError *err)
{
    for (size_t i = start; i < len; i++) {
        unsigned char ch = (unsigned char)js[i];

        if (after_primitive[ch])
            return fail(err, start, "invalid JSON literal");
        if (ch < 0x20 || ch >= 0x7f)
            return fail(err, start, "invalid JSON");
    }
    return fail(err, start, truncated_json);
}

/* The number or literal at pos, valid up to end: a token if a delimiter follows. */
static inline bool end_primitive(Tokenizer *tz, JsonDoc *doc, size_t end, JsonError *err)
{
    int t;

    if (end >= tz->len)
        return fail(err, tz->pos, truncated_json);
    if (!after_primitive[(unsigned char)tz->js[end]])
        return primitive_error(tz->js, tz->len, tz->pos, err);
    t = new_token(tz, doc, JSMN_PRIMITIVE, tz->pos, tz->parent);
    tz->toks[t].end = (int)end;
    tz->pos = end;
    return true;
}

/* Moves *i past the digits there; false when there is none. */
static inline bool scan_digits(const Tokenizer *tz, size_t *i)
{
    size_t from = *i;

    while (*i < tz->len && is_digit(tz->js[*i]))
        (*i)++;
    return *i > from;
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static inline bool scan_number(Tokenizer *tz, JsonDoc *doc, JsonError *err)
{
    const char *js = tz->js;
    size_t i = tz->pos;
    bool ok;

    if (js[i] == '-')
        i++;
    if (i < tz->len && js[i] == '0')
        i++;
    else if (!scan_digits(tz, &i))
        return primitive_error(js, tz->len, tz->pos, err);
    ok = true;
    if (i < tz->len && js[i] == '.') {
        i++;
        ok = scan_digits(tz, &i);
    }
    if (ok && i < tz->len && (js[i] == 'e' || js[i] == 'E')) {
        i++;
        if (i < tz->len && (js[i] == '+' || js[i] == '-'))
            i++;
        ok = scan_digits(tz, &i);
    }
    if (!ok)
        return primitive_error(js, tz->len, tz->pos, err);
    return end_primitive(tz, doc, i, err);
}

/* true, false or null, spelled out exactly. */
static inline bool scan_literal(Tokenizer *tz, JsonDoc *doc, JsonError *err)
{
    char first = tz->js[tz->pos];
    const char *word = first == 't' ? "true" : first == 'f' ? "false" : "null";
    size_t n = first == 'f' ? 5 : 4;

    if (tz->len - tz->pos < n || memcmp(tz->js + tz->pos, word, n) != 0)
        return primitive_error(tz->js, tz->len, tz->pos, err);
    return end_primitive(tz, doc, tz->pos + n, err);
}

/* Opens an object or array at pos: it becomes cur and the parent of what follows. */
static inline void open_container(Tokenizer *tz, JsonDoc *doc, jsmntype_t type)
{
    int t = new_token(tz, doc, type, tz->pos, tz->parent);

    tz->pos++;
    tz->cur = t;
    tz->in_object = type == JSMN_OBJECT;
    tz->parent = t;
}

/*
 * Closes cur at pos and returns to the container around it (past the key
 * when cur was a member's value). False when cur was the top-level object.
 */
static inline bool close_container(Tokenizer *tz)
{
    jsmntok_t *toks = tz->toks;
    int up = toks[tz->cur].parent;

    toks[tz->cur].end = (int)tz->pos + 1;
    tz->pos++;
    if (up < 0)
        return false;
    if (toks[up].type == JSMN_STRING)
        up = toks[up].parent;
    tz->cur = up;
    tz->in_object = toks[up].type == JSMN_OBJECT;
    return true;
}

/* A member's key at pos (its first byte is ch) and the ':' after it. */
static inline bool scan_key(Tokenizer *tz, JsonDoc *doc, char ch, JsonError *err)
{
    int key;

    if (ch != '"')
        return fail(err, tz->pos, "invalid JSON");
    key = scan_string(tz, doc, tz->cur, err);
    if (key < 0 || !next_byte(tz, &ch, err))
        return false;
    if (ch != ':')
        return fail(err, tz->pos, "invalid JSON");
    tz->pos++;
    tz->parent = key;
    return true;
}

/* The top-level object's '{' after optional whitespace: token 0, parent -1. */
static inline bool open_top(Tokenizer *tz, JsonError *err)
{
    tz->pos = skip_ws(tz->js, tz->len, 0);
    if (tz->pos >= tz->len)
        return fail(err, 0, "expected a JSON object");
    if (tz->js[tz->pos] != '{')
        return fail(err, tz->pos, "expected a JSON object");
    tz->toks[0] = (jsmntok_t){.type = JSMN_OBJECT, .start = (int)tz->pos, .end = -1, .parent = -1};
    tz->ntok = 1;
    tz->pos++;
    tz->cur = 0;
    tz->in_object = true;
    tz->parent = 0;
    return true;
}

/*
 * Only whitespace may follow the top-level object. What follows is worded as
 * before: another value or a separator is unexpected data, a stray byte
 * (a closing bracket, a letter) invalid JSON.
 */
static inline bool check_tail(Tokenizer *tz, JsonError *err)
{
    char ch;

    tz->pos = skip_ws(tz->js, tz->len, tz->pos);
    if (tz->pos == tz->len)
        return true;
    ch = tz->js[tz->pos];
    if (starts_value(ch) || ch == ',' || ch == ':')
        return fail(err, tz->pos, "unexpected data after the object");
    return fail(err, tz->pos, "invalid JSON");
}

/*
 * js[0..len) in one pass: tokens in jsmn's layout (json.h), or the first
 * error. A state machine whose states are the labels below, one per "what
 * may come next"; each reads the next byte that is not whitespace. Nesting
 * needs no stack: a container's parent link (through the key, for a member's
 * value) leads back to the one around it.
 */
static bool tokenize(JsonDoc *doc, size_t len, JsonError *err)
{
    Tokenizer tz = {
        .js = doc->js,
        .len = len,
        .toks = doc->toks,
        .cap = doc->tok_cap,
    };
    char ch;

    if (!open_top(&tz, err))
        return false;

object_open: /* after '{': a key or '}' */
    if (!next_byte(&tz, &ch, err))
        return false;
    if (ch == '}')
        goto close;
    goto key;

object_next: /* after ',' in an object: a key */
    if (!next_byte(&tz, &ch, err))
        return false;
key:
    if (!scan_key(&tz, doc, ch, err))
        return false;

value: /* after ':', or after ',' in an array */
    if (!next_byte(&tz, &ch, err))
        return false;
value_read:
    if (ch == '"') {
        if (scan_string(&tz, doc, tz.parent, err) < 0)
            return false;
        goto after_value;
    }
    switch (ch) {
    case '{':
        open_container(&tz, doc, JSMN_OBJECT);
        goto object_open;
    case '[':
        open_container(&tz, doc, JSMN_ARRAY);
        goto array_open;
    case 't':
    case 'f':
    case 'n':
        if (!scan_literal(&tz, doc, err))
            return false;
        goto after_value;
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        if (!scan_number(&tz, doc, err))
            return false;
        goto after_value;
    default:
        return fail(err, tz.pos, "invalid JSON");
    }

array_open: /* after '[': a value or ']' */
    if (!next_byte(&tz, &ch, err))
        return false;
    if (ch == ']')
        goto close;
    goto value_read;

after_value: /* ',' or cur's closing bracket */
    if (!next_byte(&tz, &ch, err))
        return false;
    if (ch == ',') {
        tz.pos++;
        if (tz.in_object)
            goto object_next;
        tz.parent = tz.cur;
        goto value;
    }
    if (ch != (tz.in_object ? '}' : ']'))
        return fail(err, tz.pos, "invalid JSON");
close: /* ch closes cur */
    if (close_container(&tz))
        goto after_value;

    if (!check_tail(&tz, err))
        return false;
    doc->ntok = tz.ntok;
    doc->has_escapes = tz.has_escapes;
    return true;
}

/*
 * A NUL byte ends the text, as it ended jsmn's: the tokenizer is given the
 * bytes before the first one (so its string scan looks for two bytes, not
 * three) and a text cut there is "invalid JSON" at the NUL, not truncated.
 */
bool json_parse(JsonDoc *doc, const char *js, size_t len, JsonError *err)
{
    const char *nul;
    size_t text_len;

    doc->js = js;
    doc->len = len;
    doc->ntok = 0;
    doc->has_escapes = false;
    if (len >= INT_MAX)
        return fail(err, 0, "JSON text too long");
    nul = len > 0 ? memchr(js, '\0', len) : NULL;
    text_len = nul ? (size_t)(nul - js) : len;
    if (!tokenize(doc, text_len, err)) {
        if (nul != NULL && err->what == truncated_json)
            return fail(err, text_len, "invalid JSON");
        return false;
    }
    if (nul != NULL) {
        doc->ntok = 0;
        return fail(err, text_len, "invalid JSON");
    }
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

/*
 * Unescapes the string token i into scratch (reserved by json_parse()). Out
 * of line so that json_string()'s common case stays a leaf.
 */
static __attribute__((noinline)) bool unescape(JsonDoc *doc, int i, Str *out, JsonError *err)
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

/* String token i as the span of the input between its quotes. */
static inline bool string_span(const JsonDoc *doc, int i, Str *out)
{
    const jsmntok_t *t = &doc->toks[i];
    size_t n = (size_t)(t->end - t->start);

    out->ptr = n ? doc->js + t->start : "";
    out->len = n;
    return true;
}

/* json_string() when the message has a backslash somewhere, maybe not in token i. */
static __attribute__((noinline)) bool string_maybe_escaped(JsonDoc *doc, int i, Str *out,
                                                           JsonError *err)
{
    const jsmntok_t *t = &doc->toks[i];

    if (memchr(doc->js + t->start, '\\', (size_t)(t->end - t->start)) == NULL)
        return string_span(doc, i, out);
    return unescape(doc, i, out, err);
}

/* The tokenizer noted whether any string has a backslash: most messages need no look. */
bool json_string(JsonDoc *doc, int i, Str *out, JsonError *err)
{
    if (doc->has_escapes)
        return string_maybe_escaped(doc, i, out, err);
    return string_span(doc, i, out);
}
