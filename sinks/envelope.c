/*
 * envelope.c - the Debezium-compatible JSON event (see envelope.h).
 *
 * Everything is appended straight into the caller's buffer: no allocation
 * per event beyond the buffer's amortised growth, and literal pieces are
 * appended with their compile-time length. Values are written from their
 * wire text without ever going through a double, so numerics keep their
 * exact digits.
 */
#include "envelope.h"

#include "../decoder/values.h"

#include <string.h>

#ifndef PGFAN_VERSION
#error "PGFAN_VERSION must be defined (meson does it; by hand: -DPGFAN_VERSION=\"0.1.0\")"
#endif

#define APPEND_LIT(b, lit) buf_append((b), (lit), sizeof(lit) - 1)

/* Drops what was appended after mark (used to undo a conversion that failed). */
static void buf_truncate_to(Buf *b, size_t mark)
{
    b->len = mark;
    if (b->data)
        b->data[mark] = '\0';
}

/* True when s holds a byte that may not appear raw inside a JSON string. */
static bool needs_json_escape(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c < 0x20 || c == '"' || c == '\\')
            return true;
    }
    return false;
}

void envelope_append_value(Buf *out, const Column *col)
{
    const Value *v = &col->value;
    size_t mark;

    switch (v->kind) {
    case VALUE_NULL:
        APPEND_LIT(out, "null");
        return;
    case VALUE_BOOL:
    case VALUE_NUMBER:
        /* Bare JSON token as the server printed it; an empty one would
         * break the line, so it can only mean "no value". */
        if (v->text.len == 0)
            APPEND_LIT(out, "null");
        else
            buf_append(out, v->text.ptr, v->text.len);
        return;
    case VALUE_STRING:
        break;
    }

    switch (col->type_class) {
    case TYPE_TIMESTAMPTZ:
    case TYPE_TIMESTAMP:
        /* The reshaped text is normally plain ASCII; values the converter
         * passes through unchanged are re-checked so the line stays JSON. */
        mark = out->len;
        buf_append_char(out, '"');
        value_append_iso_timestamp(out, v->text);
        if (!needs_json_escape(out->data + mark + 1, out->len - mark - 1)) {
            buf_append_char(out, '"');
            return;
        }
        buf_truncate_to(out, mark);
        break;
    case TYPE_BYTEA:
        /* Invalid hex (bytea_output=escape, a bug upstream) falls back to
         * the text as sent: a consumer can still see what it was. */
        mark = out->len;
        buf_append_char(out, '"');
        if (value_append_base64_from_hex(out, v->text)) {
            buf_append_char(out, '"');
            return;
        }
        buf_truncate_to(out, mark);
        break;
    default:
        break;
    }
    buf_append_json_string(out, v->text.ptr, v->text.len);
}

static void append_member(Buf *out, bool first, Str name, const Column *col)
{
    if (!first)
        buf_append_char(out, ',');
    buf_append_json_string(out, name.ptr, name.len);
    buf_append_char(out, ':');
    envelope_append_value(out, col);
}

/* {"col":value,...} in column order; absent columns stay absent. */
static void append_row(Buf *out, const Column *cols, size_t n)
{
    buf_append_char(out, '{');
    for (size_t i = 0; i < n; i++)
        append_member(out, i == 0, cols[i].name, &cols[i]);
    buf_append_char(out, '}');
}

/* A NUL-terminated field of SourceInfo, bounded by its array size. */
static void append_source_field(Buf *out, const char *field, size_t size)
{
    buf_append_json_string(out, field, strnlen(field, size));
}

bool envelope_append(Buf *out, const Change *change, const SourceInfo *source, TimeUs now_wall)
{
    static const SourceInfo no_source;
    const char *op;
    bool has_before = false;
    bool has_after = false;

    switch (change->kind) {
    case CHANGE_INSERT:
        /* Debezium's "read": a row of the initial snapshot. */
        op = change->snapshot != CHANGE_SNAP_NONE ? "r" : "c";
        has_after = true;
        break;
    case CHANGE_UPDATE:
        op = "u";
        has_before = change->n_old > 0;
        has_after = true;
        break;
    case CHANGE_DELETE:
        op = "d";
        has_before = change->n_old > 0;
        break;
    case CHANGE_TRUNCATE:
        op = "t";
        break;
    default:
        return false;
    }
    if (!source)
        source = &no_source;

    APPEND_LIT(out, "{\"before\":");
    if (has_before)
        append_row(out, change->old_cols, change->n_old);
    else
        APPEND_LIT(out, "null");

    APPEND_LIT(out, ",\"after\":");
    if (has_after)
        append_row(out, change->new_cols, change->n_new);
    else
        APPEND_LIT(out, "null");

    APPEND_LIT(out, ",\"source\":{\"version\":\"" PGFAN_VERSION "\",\"connector\":\"pgfan\",\"name\":");
    append_source_field(out, source->name, sizeof source->name);
    APPEND_LIT(out, ",\"db\":");
    append_source_field(out, source->dbname, sizeof source->dbname);
    APPEND_LIT(out, ",\"schema\":");
    buf_append_json_string(out, change->schema.ptr, change->schema.len);
    APPEND_LIT(out, ",\"table\":");
    buf_append_json_string(out, change->table.ptr, change->table.len);
    APPEND_LIT(out, ",\"lsn\":");
    buf_append_u64(out, change->lsn);
    /* pgfan's addition: the end of the transaction's commit record, the
     * position confirmed to PostgreSQL. Consumers de-duplicate replays with
     * (commit_lsn, lsn); a replay never carries a commit_lsn at or below the
     * confirmed position. */
    APPEND_LIT(out, ",\"commit_lsn\":");
    if (change->end_lsn != LSN_INVALID)
        buf_append_u64(out, change->end_lsn);
    else
        APPEND_LIT(out, "null");
    APPEND_LIT(out, ",\"txId\":");
    if (change->has_xid)
        buf_append_u64(out, change->xid);
    else
        APPEND_LIT(out, "null");
    APPEND_LIT(out, ",\"ts_ms\":");
    if (change->has_commit_time)
        buf_append_i64(out, change->commit_time / USECS_PER_MSEC);
    else
        APPEND_LIT(out, "null");
    /* Debezium's source.snapshot: "last" on the final row of the snapshot. */
    if (change->snapshot == CHANGE_SNAP_LAST)
        APPEND_LIT(out, ",\"snapshot\":\"last\"},\"op\":\"");
    else if (change->snapshot != CHANGE_SNAP_NONE)
        APPEND_LIT(out, ",\"snapshot\":\"true\"},\"op\":\"");
    else
        APPEND_LIT(out, ",\"snapshot\":\"false\"},\"op\":\"");
    buf_append_str(out, op);
    APPEND_LIT(out, "\",\"ts_ms\":");
    buf_append_i64(out, now_wall / USECS_PER_MSEC);
    buf_append_char(out, '}');
    return true;
}

bool envelope_append_key(Buf *out, const Change *change)
{
    const Column *cols;
    size_t n_cols;
    size_t mark = out->len;

    switch (change->kind) {
    case CHANGE_INSERT:
    case CHANGE_UPDATE:
        /* An UPDATE that changes the key is keyed by the new key: the row
         * now lives there (the old key is in "before"). */
        cols = change->new_cols;
        n_cols = change->n_new;
        break;
    case CHANGE_DELETE:
        cols = change->old_cols;
        n_cols = change->n_old;
        break;
    default:
        return false;
    }

    if (change->n_pk == 0) {
        /* No primary key: the replica identity (FULL) is the only identity
         * the server gives us; without one there is no key. */
        if (change->n_old == 0)
            return false;
        append_row(out, change->old_cols, change->n_old);
        return true;
    }

    buf_append_char(out, '{');
    for (size_t i = 0; i < change->n_pk; i++) {
        Str name = change->pk[i];
        const Column *col = change_find_column(cols, n_cols, name.ptr, name.len);

        /* A key column absent from the new row is an unchanged TOAST value:
         * unchanged means the old identity still holds it. */
        if (!col && change->kind == CHANGE_UPDATE)
            col = change_find_column(change->old_cols, change->n_old, name.ptr, name.len);
        if (!col) {
            buf_truncate_to(out, mark);
            return false;
        }
        append_member(out, i == 0, name, col);
    }
    buf_append_char(out, '}');
    return true;
}
