/*
 * es_doc.c - a row as an Elasticsearch bulk document (see es_internal.h).
 */
#include "es_internal.h"

#include "../common/mem.h"
#include "../decoder/values.h"
#include "envelope.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define APPEND_LIT(b, lit) buf_append((b), (lit), sizeof(lit) - 1)

void es_table_set_index(EsTable *t, const char *setting)
{
    const char *open = strchr(setting, '{');
    const char *colon, *close;

    if (!open) {
        t->index_prefix = xstrdup(setting);
        return;
    }
    colon = strchr(open, ':');
    close = strchr(open, '}');
    t->index_prefix = xstrndup(setting, (size_t)(open - setting));
    t->route_column = xstrndup(open + 1, (size_t)(colon - open - 1));
    t->route_format = xstrndup(colon + 1, (size_t)(close - colon - 1));
    t->index_suffix = xstrdup(close + 1);
}

static const Column *find_col(const Column *cols, size_t n, const char *name)
{
    return change_find_column(cols, n, name, strlen(name));
}

/* Year, month, day of a date/timestamp text; timestamps with a zone are
 * taken in UTC (the replication session runs with TimeZone UTC). */
static bool route_date(const Column *col, struct tm *out)
{
    const Str text = col->value.text;
    TimeUs us;

    if (col->value.kind == VALUE_NULL)
        return false;
    if (col->type_class == TYPE_TIMESTAMPTZ || col->type_class == TYPE_TIMESTAMP ||
        col->type_class == TYPE_DATE) {
        /* "2026-11-23", "2026-11-23 10:00:00", "2026-11-23 10:00:00.5+00" */
        char tmp[64];

        if (text.len >= 10 && text.len < sizeof tmp && col->type_class != TYPE_TIMESTAMPTZ) {
            int y, m, d;

            memcpy(tmp, text.ptr, text.len);
            tmp[text.len] = '\0';
            if (sscanf(tmp, "%4d-%2d-%2d", &y, &m, &d) != 3 || y < 1 || m < 1 || m > 12 ||
                d < 1 || d > 31 || (text.len > 10 && text.ptr[10] != ' '))
                return false;
            memset(out, 0, sizeof *out);
            out->tm_year = y - 1900;
            out->tm_mon = m - 1;
            out->tm_mday = d;
            return true;
        }
        if (col->type_class == TYPE_TIMESTAMPTZ && value_parse_timestamptz(text, &us)) {
            time_t secs = (time_t)(us >= 0 ? us / USECS_PER_SEC
                                           : -((-us + USECS_PER_SEC - 1) / USECS_PER_SEC));
            return gmtime_r(&secs, out) != NULL;
        }
    }
    return false;
}

bool es_append_index(Buf *out, const EsTable *t, const Column *cols, size_t n, const char **why)
{
    const Column *col;
    struct tm tm;
    char date[64];

    buf_append_str(out, t->index_prefix);
    if (!t->route_column)
        return true;
    col = find_col(cols, n, t->route_column);
    if (!col) {
        *why = "the change does not carry the routing column";
        return false;
    }
    if (!route_date(col, &tm)) {
        *why = col->value.kind == VALUE_NULL
                   ? "the routing column is NULL"
                   : "the routing column's value is not a date (infinity, or out of range)";
        return false;
    }
    /* The config allows %Y, %m and %d only. */
    for (const char *f = t->route_format; *f; f++) {
        if (*f != '%' || !f[1]) {
            buf_append_char(out, *f);
            continue;
        }
        f++;
        if (*f == 'Y')
            snprintf(date, sizeof date, "%04d", tm.tm_year + 1900);
        else if (*f == 'm')
            snprintf(date, sizeof date, "%02d", tm.tm_mon + 1);
        else
            snprintf(date, sizeof date, "%02d", tm.tm_mday);
        buf_append_str(out, date);
    }
    buf_append_str(out, t->index_suffix);
    return true;
}

bool es_append_id(Buf *out, const EsTable *t, const Column *cols, size_t n)
{
    Buf id = BUF_INIT;
    bool ok = true;

    for (size_t i = 0; i < t->n_pk && ok; i++) {
        const Column *col = find_col(cols, n, t->pk[i]);

        if (!col || col->value.kind == VALUE_NULL) {
            ok = false;
            break;
        }
        if (i)
            buf_append_char(&id, '|');
        if (t->n_pk == 1) {
            buf_append(&id, col->value.text.ptr, col->value.text.len);
            continue;
        }
        for (size_t j = 0; j < col->value.text.len; j++) {
            char c = col->value.text.ptr[j];

            if (c == '|' || c == '\\')
                buf_append_char(&id, '\\');
            buf_append_char(&id, c);
        }
    }
    if (ok)
        buf_append_json_string(out, id.data ? id.data : "", id.len);
    buf_free(&id);
    return ok;
}

/* --- PostgreSQL array text to a JSON array --------------------------------- */

/* One array element (unquoted text, or the unescaped content of a quoted
 * one) written as a value of the element type. */
static void append_element(Buf *out, const char *text, size_t len, bool quoted, TypeClass cls)
{
    Column col = {.type_class = cls};

    if (!quoted && len == 4 && strncasecmp(text, "NULL", 4) == 0) {
        APPEND_LIT(out, "null");
        return;
    }
    col.value.text = (Str){text, len};
    switch (cls) {
    case TYPE_BOOL:
        col.value.kind = VALUE_BOOL;
        if (len == 1)
            col.value.text = text[0] == 't' ? (Str){"true", 4} : (Str){"false", 5};
        break;
    case TYPE_INT:
    case TYPE_FLOAT:
    case TYPE_NUMERIC: {
        /* NaN and infinities are no JSON numbers: sent as strings. */
        bool number = len > 0;

        for (size_t i = 0; i < len && number; i++)
            number = strchr("0123456789+-.eE", text[i]) != NULL;
        col.value.kind = number ? VALUE_NUMBER : VALUE_STRING;
        break;
    }
    case TYPE_BYTEA:
        /* elements come as \x + hex */
        if (len >= 2 && text[0] == '\\' && text[1] == 'x')
            col.value.text = (Str){text + 2, len - 2};
        col.value.kind = VALUE_STRING;
        break;
    default:
        col.value.kind = VALUE_STRING;
        break;
    }
    if (cls == TYPE_JSON && len > 0) {
        buf_append(out, text, len);
        return;
    }
    envelope_append_value(out, &col);
}

/*
 * Writes the array text at *p (a '{' ... '}' level) as a JSON array. Returns
 * false on malformed input (the caller falls back to a string).
 */
static bool append_array_level(Buf *out, const char **p, const char *end, TypeClass cls,
                               Buf *scratch, int depth)
{
    const char *s = *p;
    bool first = true;

    if (depth > 6 || s >= end || *s != '{')
        return false;
    s++;
    buf_append_char(out, '[');
    if (s < end && *s == '}') {
        *p = s + 1;
        buf_append_char(out, ']');
        return true;
    }
    while (s < end) {
        if (!first)
            buf_append_char(out, ',');
        first = false;
        if (*s == '{') {
            if (!append_array_level(out, &s, end, cls, scratch, depth + 1))
                return false;
        } else if (*s == '"') {
            buf_reset(scratch);
            s++;
            while (s < end && *s != '"') {
                if (*s == '\\' && s + 1 < end)
                    s++;
                buf_append_char(scratch, *s++);
            }
            if (s >= end)
                return false;
            s++;
            append_element(out, scratch->data ? scratch->data : "", scratch->len, true, cls);
        } else {
            const char *start = s;

            while (s < end && *s != ',' && *s != '}')
                s++;
            append_element(out, start, (size_t)(s - start), false, cls);
        }
        if (s < end && *s == ',') {
            s++;
            continue;
        }
        if (s < end && *s == '}') {
            *p = s + 1;
            buf_append_char(out, ']');
            return true;
        }
        return false;
    }
    return false;
}

/* The element class of an array type name ("integer[]" -> TYPE_INT). */
static TypeClass element_class(Str type)
{
    size_t n = type.len;

    while (n >= 2 && type.ptr[n - 2] == '[' && type.ptr[n - 1] == ']')
        n -= 2;
    return value_type_class((Str){type.ptr, n});
}

void es_append_value(Buf *out, const Column *col)
{
    const Value *v = &col->value;

    if (v->kind == VALUE_STRING && col->type_class == TYPE_JSON && v->text.len > 0) {
        /* The server's json/jsonb text is JSON already: an object for ES. */
        buf_append(out, v->text.ptr, v->text.len);
        return;
    }
    if (v->kind == VALUE_STRING && col->type_class == TYPE_ARRAY) {
        const char *p = v->text.ptr, *end = v->text.ptr + v->text.len;
        const char *eq = memchr(p, '=', v->text.len);
        size_t mark = out->len;
        Buf scratch = BUF_INIT;
        bool ok;

        /* "[1:2]={...}": explicit bounds are dropped. */
        if (p < end && *p == '[' && eq)
            p = eq + 1;
        ok = append_array_level(out, &p, end, element_class(col->type), &scratch, 0) && p == end;
        buf_free(&scratch);
        if (ok)
            return;
        out->len = mark;
    }
    envelope_append_value(out, col);
}

void es_append_doc(Buf *out, const Column *cols, size_t n, const Column *fill, size_t n_fill,
                   Lsn lsn, bool deleted, TimeUs commit_time)
{
    buf_append_char(out, '{');
    for (size_t i = 0; i < n; i++) {
        buf_append_json_string(out, cols[i].name.ptr, cols[i].name.len);
        buf_append_char(out, ':');
        es_append_value(out, &cols[i]);
        buf_append_char(out, ',');
    }
    for (size_t i = 0; i < n_fill; i++) {
        if (change_find_column(cols, n, fill[i].name.ptr, fill[i].name.len))
            continue;
        buf_append_json_string(out, fill[i].name.ptr, fill[i].name.len);
        buf_append_char(out, ':');
        es_append_value(out, &fill[i]);
        buf_append_char(out, ',');
    }
    buf_printf(out, "\"" ES_META_FIELD "\":{\"lsn\":%llu,\"deleted\":%s", (unsigned long long)lsn,
               deleted ? "true" : "false");
    if (commit_time > 0) {
        time_t secs = (time_t)(commit_time / USECS_PER_SEC);
        struct tm tm;
        char when[32];

        gmtime_r(&secs, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
        buf_printf(out, ",\"committed_at\":\"%s.%06lldZ\"", when,
                   (long long)(commit_time % USECS_PER_SEC));
    }
    APPEND_LIT(out, "}}");
}
