/*
 * wal2json.c - wal2json format-version 2 message -> Change.
 *
 * Implementation notes:
 * - json.c turns the line into validated tokens and unescapes strings; this
 *   file only walks the tokens and maps wal2json's fields onto a Change.
 * - Spans in the Change point into the line or into the JsonDoc's scratch
 *   buffer, which is why both must outlive the Change (wal2json.h).
 * - The token walk relies on json.h's ordering guarantee: a member's value is
 *   the token after its key, and json_skip() steps over a whole subtree.
 */
#include "wal2json.h"

#include "../common/mem.h"
#include "json.h"
#include "values.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct W2jDecoder {
    JsonDoc json; /* tokens and unescaped strings of the current message */

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
    JsonDoc *doc; /* &dec->json */
    const char *js;
    size_t len;
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

    json_doc_init(&dec->json);
    return dec;
}

void w2j_free(W2jDecoder *dec)
{
    if (dec == NULL)
        return;
    json_doc_free(&dec->json);
    free(dec->new_cols);
    free(dec->old_cols);
    free(dec->pk);
    free(dec);
}

/* ------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------ */

/* Fills the error: "could not decode wal2json message at <lsn>: <what> near '<snippet>'". */
static bool fail(const Ctx *c, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool fail(const Ctx *c, size_t pos, const char *fmt, ...)
{
    char what[256];
    char snippet[JSON_SNIPPET_SIZE];
    char lsn[LSN_TEXT_SIZE];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    json_snippet(c->js, c->len, pos, snippet, sizeof snippet);
    return err_set(c->err, ERR_FATAL, "could not decode wal2json message at %s: %s near '%s'",
                   lsn_format(c->wal_lsn, lsn), what, snippet);
}

static bool fail_json(const Ctx *c, const JsonError *je)
{
    return fail(c, je->pos, "%s", je->what);
}

/* ------------------------------------------------------------------------
 * Tokens
 * ------------------------------------------------------------------------ */

static size_t tok_start(const Ctx *c, int i)
{
    return (size_t)c->doc->toks[i].start;
}

/* The text of string token i (see json_string()), with the error worded for this message. */
static bool get_string(Ctx *c, int i, Str *out)
{
    JsonError je;

    return json_string(c->doc, i, out, &je) || fail_json(c, &je);
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
    const jsmntok_t *t = &c->doc->toks[i];

    return t->type == JSMN_PRIMITIVE && c->js[t->start] == 'n';
}

static bool field_string(Ctx *c, int i, Field f, Str *out)
{
    if (c->doc->toks[i].type != JSMN_STRING)
        return fail(c, tok_start(c, i), "\"%s\" must be a string", field_names[f].name);
    return get_string(c, i, out);
}

static bool field_lsn(Ctx *c, int i, Field f, Lsn *out)
{
    const jsmntok_t *t = &c->doc->toks[i];

    if (t->type != JSMN_STRING)
        return fail(c, tok_start(c, i), "\"%s\" must be a string", field_names[f].name);
    if (!lsn_parse(c->js + t->start, (size_t)(t->end - t->start), out))
        return fail(c, tok_start(c, i), "invalid \"%s\" value", field_names[f].name);
    return true;
}

static bool field_xid(Ctx *c, int i, Change *out)
{
    const jsmntok_t *t = &c->doc->toks[i];
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
    const jsmntok_t *t = &c->doc->toks[i];
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
    const jsmntok_t *t = &c->doc->toks[i];

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
    const jsmntok_t *toks = c->doc->toks;
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
        j = json_skip(c->doc, j + 1);
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
    const jsmntok_t *toks = c->doc->toks;
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
        j = json_skip(c->doc, j);
    }
    *n_out = n;
    return true;
}

static bool parse_pk(Ctx *c, int i, Change *out)
{
    W2jDecoder *dec = c->dec;
    const jsmntok_t *toks = c->doc->toks;
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
            m_tok = json_skip(c->doc, m_tok + 1);
        }
        if (name_tok < 0)
            return fail(c, tok_start(c, j), "\"pk\" element without \"name\"");
        if (toks[name_tok].type != JSMN_STRING)
            return fail(c, tok_start(c, name_tok), "\"pk\" \"name\" must be a string");
        if (!get_string(c, name_tok, &dec->pk[k]))
            return false;
        j = json_skip(c->doc, j);
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
    const jsmntok_t *t = &c->doc->toks[i];
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
    for (int m = 0; m < c->doc->toks[0].size; m++) {
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
        j = json_skip(c->doc, j + 1);
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
        if (c->doc->toks[i].type != JSMN_PRIMITIVE ||
            (c->js[tok_start(c, i)] != 't' && c->js[tok_start(c, i)] != 'f'))
            return fail(c, tok_start(c, i), "\"transactional\" must be true or false");
        out->transactional = c->js[tok_start(c, i)] == 't';
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
    Ctx c = {dec, &dec->json, line, len, wal_lsn, err};
    JsonError je;

    memset(out, 0, sizeof *out);
    out->schema = out->table = out->prefix = out->content = str_empty;
    out->end_lsn = LSN_INVALID;

    /* jsmn counts positions in int (json_parse()). */
    if (len >= INT_MAX)
        return fail(&c, 0, "message too large (%zu bytes)", len);
    if (!json_parse(&dec->json, line, len, &je))
        return fail_json(&c, &je);
    return decode_fields(&c, out);
}
