/*
 * snapshot_rows.c - COPY text rows -> Changes (snapshot_rows.h).
 *
 * COPY TO's text format: fields separated by a tab, rows ended by a
 * newline, NULL as \N, and a backslash before \b \f \n \r \t \v, the
 * backslash itself and the delimiter (CopyAttributeOutText in
 * src/backend/commands/copyto.c). Unescaping never makes a field longer,
 * so it happens in place.
 */
#include "snapshot_rows.h"

#include "../common/mem.h"
#include "../decoder/values.h"

#include <stdlib.h>
#include <string.h>

static const char text_true[] = "true";
static const char text_false[] = "false";

void snap_table_init(SnapTable *t, const CatalogTable *ct)
{
    Buf label = BUF_INIT;
    size_t n_pk = 0;

    memset(t, 0, sizeof *t);
    t->schema = xstrdup(ct->schema);
    t->table = xstrdup(ct->table);
    config_append_qualified(&label, ct->schema, ct->table);
    t->label = label.data;
    t->schema_s = (Str){t->schema, strlen(t->schema)};
    t->table_s = (Str){t->table, strlen(t->table)};
    t->n_cols = ct->n_cols;
    t->cols = xcalloc(ct->n_cols ? ct->n_cols : 1, sizeof *t->cols);
    t->proto = xcalloc(ct->n_cols ? ct->n_cols : 1, sizeof *t->proto);
    for (size_t i = 0; i < ct->n_cols; i++) {
        t->cols[i].name = xstrdup(ct->cols[i].name);
        t->cols[i].type = xstrdup(ct->cols[i].type);
        t->cols[i].type_class = ct->cols[i].type_class;
        t->proto[i].name = (Str){t->cols[i].name, strlen(t->cols[i].name)};
        t->proto[i].type = (Str){t->cols[i].type, strlen(t->cols[i].type)};
        t->proto[i].type_class = t->cols[i].type_class;
        if (ct->cols[i].pk_position > 0)
            n_pk++;
    }
    t->pk = xcalloc(n_pk ? n_pk : 1, sizeof *t->pk);
    for (size_t i = 0; i < ct->n_cols; i++) {
        int pos = ct->cols[i].pk_position;

        if (pos > 0 && (size_t)pos <= n_pk)
            t->pk[pos - 1] = (Str){t->cols[i].name, strlen(t->cols[i].name)};
    }
    t->n_pk = n_pk;
}

void snap_table_clear(SnapTable *t)
{
    for (size_t i = 0; i < t->n_cols; i++) {
        free(t->cols[i].name);
        free(t->cols[i].type);
    }
    free(t->cols);
    free(t->proto);
    free(t->pk);
    free(t->schema);
    free(t->table);
    free(t->label);
    memset(t, 0, sizeof *t);
}

/* A double-quoted SQL identifier (quotes inside doubled). */
static void append_ident(Buf *out, const char *name)
{
    buf_append_char(out, '"');
    for (const char *c = name; *c; c++) {
        if (*c == '"')
            buf_append_char(out, '"');
        buf_append_char(out, *c);
    }
    buf_append_char(out, '"');
}

void snap_table_append_copy(Buf *out, const SnapTable *t, bool only, uint64_t first_page,
                            uint64_t end_page)
{
    buf_append_str(out, "COPY (SELECT ");
    for (size_t i = 0; i < t->n_cols; i++) {
        if (i)
            buf_append_str(out, ", ");
        append_ident(out, t->cols[i].name);
    }
    buf_append_str(out, only ? " FROM ONLY " : " FROM ");
    append_ident(out, t->schema);
    buf_append_char(out, '.');
    append_ident(out, t->table);
    if (first_page > 0 || end_page > 0) {
        buf_printf(out, " WHERE ctid >= '(%llu,0)'", (unsigned long long)first_page);
        if (end_page > 0)
            buf_printf(out, " AND ctid < '(%llu,0)'", (unsigned long long)end_page);
    }
    buf_append_str(out, ") TO STDOUT");
}

void snap_row_parser_free(SnapRowParser *p)
{
    free(p->cols);
    p->cols = NULL;
    p->cap = 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Unescapes field[0..len) in place (COPY FROM's reading, a superset of what
 * COPY TO writes); returns the new length.
 */
static size_t unescape(char *field, size_t len)
{
    char *end = field + len;
    char *src = memchr(field, '\\', len);
    char *dst;

    if (!src)
        return len;
    dst = src;
    while (src < end) {
        char c = *src++;

        if (c != '\\' || src == end) {
            *dst++ = c;
            continue;
        }
        c = *src++;
        switch (c) {
        case 'b':
            *dst++ = '\b';
            break;
        case 'f':
            *dst++ = '\f';
            break;
        case 'n':
            *dst++ = '\n';
            break;
        case 'r':
            *dst++ = '\r';
            break;
        case 't':
            *dst++ = '\t';
            break;
        case 'v':
            *dst++ = '\v';
            break;
        case 'x':
            if (src < end && hex_value(*src) >= 0) {
                int v = hex_value(*src++);
                if (src < end && hex_value(*src) >= 0)
                    v = v * 16 + hex_value(*src++);
                *dst++ = (char)v;
            } else {
                *dst++ = 'x';
            }
            break;
        default:
            if (c >= '0' && c <= '7') {
                int v = c - '0';
                for (int k = 0; k < 2 && src < end && *src >= '0' && *src <= '7'; k++)
                    v = v * 8 + (*src++ - '0');
                *dst++ = (char)v;
            } else {
                *dst++ = c;
            }
            break;
        }
    }
    return (size_t)(dst - field);
}

static bool is_nonfinite(const char *s, size_t n)
{
    return (n == 3 && memcmp(s, "NaN", 3) == 0) || (n == 8 && memcmp(s, "Infinity", 8) == 0) ||
           (n == 9 && memcmp(s, "-Infinity", 9) == 0);
}

/* The value as wal2json writes it (pg_decode_write_value), from the text of a non-NULL field. */
static void set_value(Value *v, TypeClass cls, const char *s, size_t n)
{
    v->kind = VALUE_STRING;
    v->text = (Str){s, n};
    switch (cls) {
    case TYPE_BOOL:
        v->kind = VALUE_BOOL;
        v->text = n == 1 && s[0] == 't' ? (Str){text_true, sizeof text_true - 1}
                                        : (Str){text_false, sizeof text_false - 1};
        return;
    case TYPE_INT:
    case TYPE_FLOAT:
    case TYPE_NUMERIC:
        if (is_nonfinite(s, n)) {
            v->kind = VALUE_NULL;
            v->text = (Str){"", 0};
        } else {
            v->kind = VALUE_NUMBER;
        }
        return;
    case TYPE_BYTEA:
        if (n >= 2 && s[0] == '\\' && s[1] == 'x')
            v->text = (Str){s + 2, n - 2};
        return;
    default:
        return;
    }
}

bool snap_row_parse(SnapRowParser *p, const SnapTable *t, char *line, size_t len, Change *out,
                    PfError *err)
{
    char *pos = line;
    char *end = line + len;
    size_t n = 0;

    if (len > 0 && line[len - 1] == '\n')
        end--;
    if (p->cap < t->n_cols) {
        p->cap = t->n_cols;
        p->cols = xrealloc(p->cols, p->cap * sizeof *p->cols);
    }
    for (;;) {
        char *tab = memchr(pos, '\t', (size_t)(end - pos));
        char *stop = tab ? tab : end;
        size_t flen = (size_t)(stop - pos);

        if (n == t->n_cols)
            return err_set(err, ERR_FATAL,
                           "could not read a row of %s: more than the %zu columns of the table",
                           t->label, t->n_cols);
        p->cols[n] = t->proto[n];
        if (flen == 2 && pos[0] == '\\' && pos[1] == 'N') {
            p->cols[n].value.kind = VALUE_NULL;
            p->cols[n].value.text = (Str){"", 0};
        } else {
            set_value(&p->cols[n].value, t->cols[n].type_class, pos, unescape(pos, flen));
        }
        n++;
        if (!tab)
            break;
        pos = tab + 1;
    }
    if (n != t->n_cols)
        return err_set(err, ERR_FATAL, "could not read a row of %s: %zu fields for %zu columns",
                       t->label, n, t->n_cols);
    memset(out, 0, sizeof *out);
    out->kind = CHANGE_INSERT;
    out->schema = t->schema_s;
    out->table = t->table_s;
    out->new_cols = p->cols;
    out->n_new = n;
    out->pk = t->pk;
    out->n_pk = t->n_pk;
    return true;
}
