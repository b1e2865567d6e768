/*
 * agg_sql.c - SQL text for the aggregates sink (agg_sql.h).
 *
 * The column order of an aggregate table is fixed here and used by every
 * statement that lists its columns: keys, then per measure its visible
 * column (count) or its two hidden ones (sum: pgfan_sum_<i>, pgfan_nn_<i>,
 * i counting measures from 1), then pgfan_rows. Generated columns (a sum's
 * visible column) are never listed for INSERT.
 */
#include "agg_sql.h"

#include "../config/agg_def.h"

#include <inttypes.h>
#include <string.h>

void agg_sql_ident(Buf *out, const char *ident)
{
    buf_append_char(out, '"');
    for (const char *p = ident; *p; p++) {
        if (*p == '"')
            buf_append_char(out, '"');
        buf_append_char(out, *p);
    }
    buf_append_char(out, '"');
}

void agg_sql_literal(Buf *out, const char *text)
{
    buf_append_char(out, '\'');
    for (const char *p = text; *p; p++) {
        if (*p == '\'')
            buf_append_char(out, '\'');
        buf_append_char(out, *p);
    }
    buf_append_char(out, '\'');
}

void agg_sql_table(Buf *out, const char *schema, const char *name)
{
    agg_sql_ident(out, schema);
    buf_append_char(out, '.');
    agg_sql_ident(out, name);
}

/* "pgfan_sum_2" for measure index 1. */
static void hidden(Buf *out, const char *what, size_t m)
{
    buf_printf(out, "\"pgfan_%s_%zu\"", what, m + 1);
}

void agg_sql_definition(Buf *out, const AggregateDef *d)
{
    buf_append_str(out, "from ");
    config_append_qualified(out, d->from.schema, d->from.table);
    buf_append_str(out, "; group_by ");
    for (size_t k = 0; k < d->n_group_by; k++)
        buf_printf(out, "%s%s AS %s", k ? ", " : "", d->group_by[k].expr, d->group_by[k].name);
    buf_append_str(out, "; measures ");
    for (size_t m = 0; m < d->n_measures; m++) {
        if (m)
            buf_append_str(out, ", ");
        agg_append_measure_call(out, &d->measures[m]);
        buf_printf(out, " AS %s", d->measures[m].name);
    }
    if (d->where)
        buf_printf(out, "; where %s", d->where);
}

/* FROM "schema"."table" AS "table" (or the work table under that alias). */
static void append_from(Buf *out, const AggregateDef *d, const char *work_table)
{
    buf_append_str(out, " FROM ");
    if (work_table) {
        buf_append_str(out, "pg_temp.");
        agg_sql_ident(out, work_table);
    } else {
        agg_sql_table(out, d->from.schema, d->from.table);
    }
    buf_append_str(out, " AS ");
    agg_sql_ident(out, d->from.table);
}

static void append_group_by(Buf *out, const AggregateDef *d)
{
    buf_append_str(out, " GROUP BY ");
    for (size_t k = 0; k < d->n_group_by; k++)
        buf_printf(out, "%s%zu", k ? ", " : "", k + 1);
}

static void append_keys_select(Buf *out, const AggregateDef *d)
{
    for (size_t k = 0; k < d->n_group_by; k++) {
        buf_printf(out, "%s(%s) AS ", k ? ", " : "", d->group_by[k].expr);
        agg_sql_ident(out, d->group_by[k].name);
    }
}

void agg_sql_probe(Buf *out, const AggregateDef *d)
{
    buf_append_str(out, "SELECT ");
    append_keys_select(out, d);
    for (size_t m = 0; m < d->n_measures; m++) {
        buf_append_str(out, ", ");
        agg_append_measure_call(out, &d->measures[m]);
        buf_append_str(out, " AS ");
        agg_sql_ident(out, d->measures[m].name);
    }
    append_from(out, d, NULL);
    if (d->where)
        buf_printf(out, " WHERE (%s)", d->where);
    append_group_by(out, d);
    buf_append_str(out, " LIMIT 0");
}

void agg_sql_catalog_ddl(Buf *out, const char *schema)
{
    buf_append_str(out, "CREATE SCHEMA IF NOT EXISTS ");
    agg_sql_ident(out, schema);
    buf_append_str(out, "; CREATE TABLE IF NOT EXISTS ");
    agg_sql_table(out, schema, AGG_STATE_TABLE);
    /* the position of the last change applied: commit_lsn is the end LSN of
     * its transaction, change_lsn its own LSN, change_seq its rank among
     * changes with the same LSN (a multi-row insert) */
    buf_append_str(out, " (slot text PRIMARY KEY, commit_lsn pg_lsn NOT NULL, "
                        "change_lsn pg_lsn NOT NULL, change_seq integer NOT NULL, "
                        "updated_at timestamptz NOT NULL DEFAULT now()); "
                        "CREATE TABLE IF NOT EXISTS ");
    agg_sql_table(out, schema, AGG_CATALOG_TABLE);
    /* snapshot: the history's snapshot; streamed transactions visible in it
     * are skipped. snapshot_lsn: WAL insert position after it was taken:
     * transactions committing later are never visible in it. */
    buf_append_str(out, " (name text PRIMARY KEY, slot text NOT NULL, source text NOT NULL, "
                        "definition text NOT NULL, snapshot pg_snapshot, snapshot_lsn pg_lsn, "
                        "built_at timestamptz NOT NULL DEFAULT now(), "
                        "maintained boolean NOT NULL DEFAULT true)");
}

void agg_sql_create(Buf *out, const char *schema, const AggregateDef *d,
                    const char *const *key_types, const char *const *measure_types)
{
    Buf def = BUF_INIT;

    buf_append_str(out, "CREATE TABLE ");
    agg_sql_table(out, schema, d->name);
    buf_append_str(out, " (");
    for (size_t k = 0; k < d->n_group_by; k++) {
        agg_sql_ident(out, d->group_by[k].name);
        buf_printf(out, " %s, ", key_types[k]);
    }
    for (size_t m = 0; m < d->n_measures; m++) {
        const AggMeasure *me = &d->measures[m];

        agg_sql_ident(out, me->name);
        if (me->kind != AGG_MEASURE_SUM) {
            buf_append_str(out, " bigint NOT NULL, ");
            continue;
        }
        buf_printf(out, " %s GENERATED ALWAYS AS (CASE WHEN ", measure_types[m]);
        hidden(out, "nn", m);
        buf_append_str(out, " = 0 THEN NULL ELSE ");
        hidden(out, "sum", m);
        buf_append_str(out, " END) STORED, ");
    }
    buf_append_str(out, "\"pgfan_rows\" bigint NOT NULL");
    for (size_t m = 0; m < d->n_measures; m++) {
        if (d->measures[m].kind != AGG_MEASURE_SUM)
            continue;
        buf_append_str(out, ", ");
        hidden(out, "sum", m);
        buf_printf(out, " %s, ", measure_types[m]);
        hidden(out, "nn", m);
        buf_append_str(out, " bigint NOT NULL");
    }
    buf_append_str(out, ", UNIQUE NULLS NOT DISTINCT (");
    for (size_t k = 0; k < d->n_group_by; k++) {
        if (k)
            buf_append_str(out, ", ");
        agg_sql_ident(out, d->group_by[k].name);
    }
    /* room on each page: an upsert's new row version stays there (HOT, no index entry) */
    buf_append_str(out, ")) WITH (fillfactor = 70); COMMENT ON TABLE ");
    agg_sql_table(out, schema, d->name);
    buf_append_str(out, " IS ");
    buf_append_str(&def, "maintained by pgfan: ");
    agg_sql_definition(&def, d);
    agg_sql_literal(out, def.data);
    buf_free(&def);
}

/* The columns an INSERT lists: keys, measures' stored columns, pgfan_rows. */
static void append_insert_columns(Buf *out, const AggregateDef *d)
{
    for (size_t k = 0; k < d->n_group_by; k++) {
        agg_sql_ident(out, d->group_by[k].name);
        buf_append_str(out, ", ");
    }
    for (size_t m = 0; m < d->n_measures; m++) {
        if (d->measures[m].kind != AGG_MEASURE_SUM) {
            agg_sql_ident(out, d->measures[m].name);
        } else {
            hidden(out, "sum", m);
            buf_append_str(out, ", ");
            hidden(out, "nn", m);
        }
        buf_append_str(out, ", ");
    }
    buf_append_str(out, "\"pgfan_rows\"");
}

void agg_sql_fill(Buf *out, const char *schema, const AggregateDef *d)
{
    buf_append_str(out, "INSERT INTO ");
    agg_sql_table(out, schema, d->name);
    buf_append_str(out, " (");
    append_insert_columns(out, d);
    buf_append_str(out, ") SELECT ");
    append_keys_select(out, d);
    for (size_t m = 0; m < d->n_measures; m++) {
        const AggMeasure *me = &d->measures[m];

        if (me->kind == AGG_MEASURE_COUNT_STAR)
            buf_append_str(out, ", count(*)");
        else if (me->kind == AGG_MEASURE_COUNT)
            buf_printf(out, ", count(%s)", me->arg);
        else
            buf_printf(out, ", sum(%s), count(%s)", me->arg, me->arg);
    }
    buf_append_str(out, ", count(*)");
    append_from(out, d, NULL);
    if (d->where)
        buf_printf(out, " WHERE (%s)", d->where);
    append_group_by(out, d);
}

/* sum of +-1 over the rows where arg is not NULL */
static void append_nn_delta(Buf *out, const char *arg)
{
    buf_printf(out, "sum(CASE WHEN (%s) IS NOT NULL THEN pgfan_w ELSE 0 END)", arg);
}

/* WITH d AS (SELECT keys, deltas ... GROUP BY ... HAVING <some delta is not 0>) */
static void append_delta(Buf *out, const char *schema, const AggregateDef *d,
                         const char *work_table, int segment, bool snapshot_filter)
{
    Buf nonzero = BUF_INIT;

    buf_append_str(out, "WITH d AS (SELECT ");
    append_keys_select(out, d);
    for (size_t m = 0; m < d->n_measures; m++) {
        const AggMeasure *me = &d->measures[m];

        buf_append_str(out, ", ");
        if (me->kind == AGG_MEASURE_COUNT_STAR) {
            buf_append_str(out, "sum(pgfan_w)");
        } else if (me->kind == AGG_MEASURE_COUNT) {
            append_nn_delta(out, me->arg);
            buf_append_str(&nonzero, " OR ");
            append_nn_delta(&nonzero, me->arg);
            buf_append_str(&nonzero, " <> 0");
        } else {
            /* the weight's sign, not a multiplication: exact for every type with unary minus */
            buf_printf(out, "sum(CASE WHEN pgfan_w > 0 THEN (%s) ELSE -(%s) END), ", me->arg,
                       me->arg);
            append_nn_delta(out, me->arg);
            /* x <> -x: "not zero" for numbers, money and intervals alike */
            buf_printf(&nonzero, " OR sum(CASE WHEN pgfan_w > 0 THEN (%s) ELSE -(%s) END) <> "
                       "-sum(CASE WHEN pgfan_w > 0 THEN (%s) ELSE -(%s) END) OR ",
                       me->arg, me->arg, me->arg, me->arg);
            append_nn_delta(&nonzero, me->arg);
            buf_append_str(&nonzero, " <> 0");
        }
    }
    buf_append_str(out, ", sum(pgfan_w)");
    append_from(out, d, work_table);
    buf_append_str(out, " WHERE ");
    if (d->where)
        buf_printf(out, "(%s) AND ", d->where);
    if (segment >= 0)
        buf_printf(out, "pgfan_seg = %d AND ", segment);
    if (snapshot_filter) {
        buf_append_str(out, "NOT coalesce(pg_visible_in_snapshot(pgfan_xid, (SELECT snapshot FROM ");
        agg_sql_table(out, schema, AGG_CATALOG_TABLE);
        buf_append_str(out, " WHERE name = ");
        agg_sql_literal(out, d->name);
        buf_append_str(out, ")), false) AND ");
    }
    buf_append_str(out, "true");
    append_group_by(out, d);
    buf_printf(out, " HAVING sum(pgfan_w) <> 0%s)", nonzero.data ? nonzero.data : "");
    buf_free(&nonzero);
}

static void append_conflict_set(Buf *out, const AggregateDef *d)
{
    buf_append_str(out, " DO UPDATE SET ");
    for (size_t m = 0; m < d->n_measures; m++) {
        const AggMeasure *me = &d->measures[m];

        if (me->kind != AGG_MEASURE_SUM) {
            agg_sql_ident(out, me->name);
            buf_append_str(out, " = a.");
            agg_sql_ident(out, me->name);
            buf_append_str(out, " + excluded.");
            agg_sql_ident(out, me->name);
            buf_append_str(out, ", ");
            continue;
        }
        /* NULL + x would lose x: a side without non-NULL inputs is NULL */
        hidden(out, "sum", m);
        buf_append_str(out, " = coalesce(a.");
        hidden(out, "sum", m);
        buf_append_str(out, " + excluded.");
        hidden(out, "sum", m);
        buf_append_str(out, ", a.");
        hidden(out, "sum", m);
        buf_append_str(out, ", excluded.");
        hidden(out, "sum", m);
        buf_append_str(out, "), ");
        hidden(out, "nn", m);
        buf_append_str(out, " = a.");
        hidden(out, "nn", m);
        buf_append_str(out, " + excluded.");
        hidden(out, "nn", m);
        buf_append_str(out, ", ");
    }
    buf_append_str(out, "\"pgfan_rows\" = a.\"pgfan_rows\" + excluded.\"pgfan_rows\"");
}

void agg_sql_apply(Buf *out, const char *schema, const AggregateDef *d, const char *work_table,
                   int segment, bool snapshot_filter)
{
    append_delta(out, schema, d, work_table, segment, snapshot_filter);
    buf_append_str(out, ", up AS (INSERT INTO ");
    agg_sql_table(out, schema, d->name);
    buf_append_str(out, " AS a (");
    append_insert_columns(out, d);
    buf_append_str(out, ") SELECT * FROM d ON CONFLICT (");
    for (size_t k = 0; k < d->n_group_by; k++) {
        if (k)
            buf_append_str(out, ", ");
        agg_sql_ident(out, d->group_by[k].name);
    }
    buf_append_char(out, ')');
    append_conflict_set(out, d);
    buf_append_str(out, " RETURNING a.ctid AS t, a.\"pgfan_rows\" AS r) "
                        "INSERT INTO pg_temp.pgfan_zero SELECT t FROM up WHERE r = 0; "
                        "DELETE FROM ");
    agg_sql_table(out, schema, d->name);
    buf_append_str(out, " WHERE ctid = ANY (ARRAY(SELECT t FROM pg_temp.pgfan_zero)); "
                        "DELETE FROM pg_temp.pgfan_zero");
}

void agg_sql_recompute(Buf *out, const char *schema, const AggregateDef *d, uint64_t xid,
                       const char *slot)
{
    buf_printf(out,
               "DO $pgfan$BEGIN IF NOT pg_visible_in_snapshot('%" PRIu64 "'::xid8, "
               "pg_current_snapshot()) THEN RAISE EXCEPTION 'pgfan: transaction %" PRIu64
               " is not visible yet' USING ERRCODE = '" AGG_SQLSTATE_NOT_YET "'; END IF; "
               "END$pgfan$; DELETE FROM ",
               xid, xid);
    agg_sql_table(out, schema, d->name);
    buf_append_str(out, "; ");
    agg_sql_fill(out, schema, d);
    buf_append_str(out, "; ");
    agg_sql_register(out, schema, d, slot);
}

void agg_sql_register(Buf *out, const char *schema, const AggregateDef *d, const char *slot)
{
    Buf text = BUF_INIT;

    buf_append_str(out, "INSERT INTO ");
    agg_sql_table(out, schema, AGG_CATALOG_TABLE);
    buf_append_str(out, " (name, slot, source, definition, snapshot, snapshot_lsn, built_at, "
                        "maintained) VALUES (");
    agg_sql_literal(out, d->name);
    buf_append_str(out, ", ");
    agg_sql_literal(out, slot);
    buf_append_str(out, ", ");
    config_append_qualified(&text, d->from.schema, d->from.table);
    agg_sql_literal(out, text.data);
    buf_append_str(out, ", ");
    buf_reset(&text);
    agg_sql_definition(&text, d);
    agg_sql_literal(out, text.data);
    buf_free(&text);
    buf_append_str(out, ", pg_current_snapshot(), pg_current_wal_insert_lsn(), now(), true) "
                        "ON CONFLICT (name) DO UPDATE SET slot = excluded.slot, "
                        "source = excluded.source, definition = excluded.definition, "
                        "snapshot = excluded.snapshot, snapshot_lsn = excluded.snapshot_lsn, "
                        "built_at = excluded.built_at, maintained = true");
}

void agg_copy_text(Buf *out, const char *s, size_t len)
{
    const char *run = s;

    buf_reserve(out, len);
    for (size_t i = 0; i < len; i++) {
        const char *esc;

        switch (s[i]) {
        case '\\':
            esc = "\\\\";
            break;
        case '\t':
            esc = "\\t";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        default:
            continue;
        }
        buf_append(out, run, (size_t)(s + i - run));
        buf_append_str(out, esc);
        run = s + i + 1;
    }
    buf_append(out, run, (size_t)(s + len - run));
}
