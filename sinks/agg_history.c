/*
 * agg_history.c - the history part of the aggregates sink's start-up
 * (agg_start.c runs the chain; agg_internal.h has the steps):
 *
 *   CATALOG  schema, pgfan_state, pgfan_aggregates, the slot's state row
 *   LOAD     each aggregate against its catalog row: up to date, new, or
 *            changed (an error naming it unless rebuild = yes)
 *   PROBE    for each one to build: its expressions' types (LIMIT 0); a
 *            sum over floating point is refused (not exactly retractable)
 *   TYPES    format_type() of those types, and whether the existing table
 *            has the same columns (then it is refilled, views on it survive)
 *   SLOT     (only when something is built) waits until the replication slot
 *            exists and is consistent: every transaction that is not in the
 *            history's snapshot must come through the slot, so the snapshot
 *            is taken after the slot's starting point
 *   BUILD    one REPEATABLE READ transaction creates and fills them from the
 *            source tables and records its snapshot and the WAL insert
 *            position after it (the history)
 */
#include "agg_internal.h"

#include "../common/log.h"
#include "../common/mem.h"
#include "../config/agg_def.h"
#include "agg_sql.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define FLOAT4OID 700
#define FLOAT8OID 701

/* ---- CATALOG, LOAD ---- */

static void on_catalog(void *arg, const PGresult *rows, const PfError *err, int stmt,
                       const char *sqlstate)
{
    AggSink *s = arg;

    (void)rows;
    (void)stmt;
    (void)sqlstate;
    if (agg_step_failed(s, err, "create the aggregates catalog"))
        return;
    agg_step_next(s, ST_LOAD);
}

static void catalog_sql(AggSink *s, Buf *b)
{
    agg_sql_catalog_ddl(b, s->schema);
    buf_append_str(b, "; INSERT INTO ");
    agg_sql_table(b, s->schema, AGG_STATE_TABLE);
    buf_append_str(b, " (slot, commit_lsn, change_lsn, change_seq) VALUES (");
    agg_sql_literal(b, s->slot);
    buf_append_str(b, ", '0/0', '0/0', 0) ON CONFLICT (slot) DO NOTHING");
}

static void load_sql(AggSink *s, Buf *b)
{
    Buf schema = BUF_INIT;

    agg_sql_ident(&schema, s->schema);
    buf_append_str(b, "SELECT n.name, a.definition, a.slot, a.maintained, a.snapshot_lsn::text, "
                      "to_regclass(");
    agg_sql_literal(b, schema.data);
    buf_append_str(b, " || '.' || quote_ident(n.name)) IS NOT NULL FROM unnest(");
    agg_append_name_array(s, b);
    buf_append_str(b, ") WITH ORDINALITY AS n(name, ord) LEFT JOIN ");
    agg_sql_table(b, s->schema, AGG_CATALOG_TABLE);
    buf_append_str(b, " a ON a.name = n.name ORDER BY n.ord");
    buf_free(&schema);
}

/* Appends one problem line to e (ERR_CONFIG), keeping the first hint. */
static void add_problem(PfError *e, bool *any, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void add_problem(PfError *e, bool *any, const char *hint, const char *fmt, ...)
{
    char line[ERR_MSG_SIZE];
    va_list ap;
    size_t used = strlen(e->msg);

    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (!*any) {
        err_set(e, ERR_CONFIG, "could not start the aggregates sink: %s", line);
        if (hint)
            err_hint(e, "%s", hint);
        *any = true;
        return;
    }
    snprintf(e->msg + used, sizeof e->msg - used, "\n%s", line);
    used = strlen(e->hint);
    if (hint && used + 2 < sizeof e->hint)
        snprintf(e->hint + used, sizeof e->hint - used, "\n%s", hint);
}

static void decide(AggSink *s, size_t i, const PGresult *rows, PfError *e, bool *any)
{
    AggState *a = &s->aggs[i];
    const AggregateDef *d = a->def;
    Buf def = BUF_INIT, hint = BUF_INIT;
    bool in_catalog = !PQgetisnull(rows, (int)i, 1);
    bool exists = PQgetvalue(rows, (int)i, 5)[0] == 't';

    agg_sql_definition(&def, d);
    a->action = AGG_KEEP;
    if (!in_catalog) {
        if (exists) {
            buf_printf(&hint, "drop or rename %s.%s, or give the aggregate another name",
                       s->schema, d->name);
            add_problem(e, any, hint.data, "the table %s.%s exists but pgfan did not build it "
                        "(aggregate %s)", s->schema, d->name, d->name);
        }
        a->action = AGG_CREATE;
    } else if (strcmp(PQgetvalue(rows, (int)i, 2), s->slot) != 0) {
        add_problem(e, any, "give each slot its own schema in [sink.aggregates]",
                    "aggregate %s in schema %s is maintained from slot \"%s\", not \"%s\"",
                    d->name, s->schema, PQgetvalue(rows, (int)i, 2), s->slot);
    } else if (strcmp(PQgetvalue(rows, (int)i, 1), def.data) != 0) {
        if (d->rebuild) {
            log_info(AGG_LOG, "aggregate %s: its definition changed and rebuild = yes: "
                     "recomputing it from its source table", d->name);
            a->action = AGG_REFILL;
        } else {
            buf_printf(&hint, "set rebuild = yes in [aggregate.%s] (%s:%d) to recompute it from "
                       "the source table, or restore the definition it was built with: %s",
                       d->name, s->cfg->path ? s->cfg->path : "config", d->line,
                       PQgetvalue(rows, (int)i, 1));
            add_problem(e, any, hint.data, "the definition of aggregate %s changed since %s.%s "
                        "was built from it", d->name, s->schema, d->name);
        }
    } else if (!exists) {
        log_warning(AGG_LOG, "aggregate %s: the table %s.%s was dropped; building it again",
                    d->name, s->schema, d->name);
        a->action = AGG_CREATE;
    } else if (PQgetvalue(rows, (int)i, 3)[0] != 't') {
        log_info(AGG_LOG, "aggregate %s was not maintained for a while (not in the config): "
                 "recomputing it", d->name);
        a->action = AGG_REFILL;
    } else if (!PQgetisnull(rows, (int)i, 4)) {
        agg_parse_lsn(PQgetvalue(rows, (int)i, 4), &a->snap_lsn);
    }
    if (a->action == AGG_REFILL && !exists)
        a->action = AGG_CREATE;
    buf_free(&def);
    buf_free(&hint);
}

static void on_load(void *arg, const PGresult *rows, const PfError *err, int stmt,
                    const char *sqlstate)
{
    AggSink *s = arg;
    PfError e;
    bool any = false;

    (void)stmt;
    (void)sqlstate;
    if (agg_step_failed(s, err, "read the aggregates catalog"))
        return;
    err_clear(&e);
    for (size_t i = 0; i < s->n_aggs; i++)
        decide(s, i, rows, &e, &any);
    if (any) {
        agg_fail(s, &e);
        return;
    }
    agg_step_next(s, ST_PROBE);
}

/* ---- PROBE, TYPES ---- */

/* The next aggregate from index i that must be built, or n_aggs. */
static size_t next_to_build(const AggSink *s, size_t i)
{
    while (i < s->n_aggs && s->aggs[i].action == AGG_KEEP)
        i++;
    return i;
}

static void free_types(AggState *a)
{
    for (size_t k = 0; a->key_types && k < a->def->n_group_by; k++)
        free(a->key_types[k]);
    for (size_t m = 0; a->measure_types && m < a->def->n_measures; m++)
        free(a->measure_types[m]);
    free(a->key_types);
    free(a->measure_types);
    a->key_types = a->measure_types = NULL;
}

/* The columns the aggregate's table has, as the TYPES query spells them. */
static void expected_signature(const AggState *a, Buf *b)
{
    const AggregateDef *d = a->def;

    for (size_t k = 0; k < d->n_group_by; k++)
        buf_printf(b, "%s%s %s", k ? ", " : "", d->group_by[k].name, a->key_types[k]);
    for (size_t m = 0; m < d->n_measures; m++)
        buf_printf(b, ", %s %s", d->measures[m].name,
                   d->measures[m].kind == AGG_MEASURE_SUM ? a->measure_types[m] : "bigint");
    buf_append_str(b, ", pgfan_rows bigint");
    for (size_t m = 0; m < d->n_measures; m++) {
        if (d->measures[m].kind == AGG_MEASURE_SUM)
            buf_printf(b, ", pgfan_sum_%zu %s, pgfan_nn_%zu bigint", m + 1, a->measure_types[m],
                       m + 1);
    }
}

static void on_types(void *arg, const PGresult *rows, const PfError *err, int stmt,
                     const char *sqlstate)
{
    AggSink *s = arg;
    AggState *a = &s->aggs[s->step_i];
    const AggregateDef *d = a->def;
    Buf want = BUF_INIT;

    (void)stmt;
    (void)sqlstate;
    if (agg_step_failed(s, err, "read the aggregate's column types"))
        return;
    free_types(a);
    a->key_types = xcalloc(d->n_group_by, sizeof *a->key_types);
    a->measure_types = xcalloc(d->n_measures, sizeof *a->measure_types);
    for (size_t c = 0; c < d->n_group_by + d->n_measures && (int)c < PQntuples(rows); c++) {
        char *t = xstrdup(PQgetvalue(rows, (int)c, 0));
        if (c < d->n_group_by)
            a->key_types[c] = t;
        else
            a->measure_types[c - d->n_group_by] = t;
    }
    if (a->action == AGG_REFILL) {
        expected_signature(a, &want);
        if (PQntuples(rows) == 0 || strcmp(PQgetvalue(rows, 0, 1), want.data) != 0) {
            log_info(AGG_LOG, "aggregate %s: its columns change; replacing %s.%s", d->name,
                     s->schema, d->name);
            a->action = AGG_REPLACE;
        }
    }
    buf_free(&want);
    s->step = ST_PROBE;
    s->step_i++;
    if (agg_conn_idle(s->conn))
        agg_start_step(s);
}

static void on_probe(void *arg, const PGresult *rows, const PfError *err, int stmt,
                     const char *sqlstate)
{
    AggSink *s = arg;
    AggState *a = &s->aggs[s->step_i];
    const AggregateDef *d = a->def;
    Buf b = BUF_INIT, mods = BUF_INIT;
    PfError e;

    (void)stmt;
    if (err) {
        e = *err;
        if (e.kind == ERR_RETRY) {
            agg_retry(s, &e);
            return;
        }
        err_prefix(&e, "could not start the aggregates sink: aggregate %s: its SQL does not "
                   "work on %s.%s", d->name, d->from.schema, d->from.table);
        e.kind = strcmp(sqlstate, "42501") == 0 ? ERR_FATAL : ERR_CONFIG;
        if (e.kind == ERR_CONFIG)
            err_hint(&e, "fix group_by, measures or where in [aggregate.%s] (%s:%d)", d->name,
                     s->cfg->path ? s->cfg->path : "config", d->line);
        else
            err_hint(&e, "grant SELECT on %s.%s to the aggregates sink's user", d->from.schema,
                     d->from.table);
        agg_fail(s, &e);
        return;
    }
    for (size_t m = 0; m < d->n_measures; m++) {
        Oid t = PQftype(rows, (int)(d->n_group_by + m));

        if (d->measures[m].kind == AGG_MEASURE_SUM && (t == FLOAT4OID || t == FLOAT8OID)) {
            err_set(&e, ERR_CONFIG, "could not start the aggregates sink: aggregate %s: "
                    "sum(%s) is a floating-point sum, which rounding makes impossible to "
                    "subtract exactly", d->name, d->measures[m].arg);
            err_hint(&e, "sum an exact type instead: sum((%s)::numeric) AS %s", d->measures[m].arg,
                     d->measures[m].name);
            agg_fail(s, &e);
            return;
        }
    }
    buf_append_str(&b, "SELECT format_type(t.o, t.m), (SELECT string_agg(attname || ' ' || "
                       "format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM "
                       "pg_catalog.pg_attribute WHERE attrelid = to_regclass(");
    {
        Buf name = BUF_INIT;
        agg_sql_table(&name, s->schema, d->name);
        agg_sql_literal(&b, name.data);
        buf_free(&name);
    }
    buf_append_str(&b, ") AND attnum > 0 AND NOT attisdropped) FROM unnest('{");
    for (int c = 0; c < PQnfields(rows); c++) {
        buf_printf(&b, "%s%u", c ? "," : "", PQftype(rows, c));
        buf_printf(&mods, "%s%d", c ? "," : "", PQfmod(rows, c));
    }
    buf_printf(&b, "}'::oid[], '{%s}'::int[]) WITH ORDINALITY AS t(o, m, i) ORDER BY t.i",
               mods.data ? mods.data : "");
    s->step = ST_TYPES;
    agg_step_send(s, b.data, on_types);
    buf_free(&b);
    buf_free(&mods);
}

/* ---- SLOT, BUILD ---- */

#define SLOT_POLL (100 * USECS_PER_MSEC)

static void on_slot(void *arg, const PGresult *rows, const PfError *err, int stmt,
                    const char *sqlstate)
{
    AggSink *s = arg;

    (void)stmt;
    (void)sqlstate;
    if (agg_step_failed(s, err, "look for the replication slot"))
        return;
    if (strcmp(PQgetvalue(rows, 0, 0), "0") != 0) {
        agg_step_next(s, ST_BUILD);
        return;
    }
    if (s->step_i++ == 10)
        log_info(AGG_LOG, "waiting for replication slot \"%s\" to be created before computing "
                 "the history (transactions after the history must come through the slot)",
                 s->slot);
    s->step_due = clock_mono_us() + SLOT_POLL;
}

static void build_sql(AggSink *s, Buf *b)
{
    buf_append_str(b, "BEGIN ISOLATION LEVEL REPEATABLE READ");
    for (size_t i = 0; i < s->n_aggs; i++) {
        AggState *a = &s->aggs[i];

        if (a->action == AGG_KEEP)
            continue;
        buf_append_str(b, "; ");
        if (a->action == AGG_REFILL) {
            buf_append_str(b, "DELETE FROM ");
            agg_sql_table(b, s->schema, a->def->name);
        } else {
            if (a->action == AGG_REPLACE) {
                buf_append_str(b, "DROP TABLE ");
                agg_sql_table(b, s->schema, a->def->name);
                buf_append_str(b, "; ");
            }
            agg_sql_create(b, s->schema, a->def, (const char *const *)a->key_types,
                           (const char *const *)a->measure_types);
        }
        buf_append_str(b, "; ");
        agg_sql_fill(b, s->schema, a->def);
        buf_append_str(b, "; ");
        agg_sql_register(b, s->schema, a->def, s->slot);
    }
    buf_append_str(b, "; UPDATE ");
    agg_sql_table(b, s->schema, AGG_CATALOG_TABLE);
    buf_append_str(b, " SET maintained = false WHERE slot = ");
    agg_sql_literal(b, s->slot);
    buf_append_str(b, " AND maintained AND name <> ALL (");
    agg_append_name_array(s, b);
    buf_append_str(b, "); SELECT name, snapshot_lsn::text FROM ");
    agg_sql_table(b, s->schema, AGG_CATALOG_TABLE);
    buf_append_str(b, " WHERE name = ANY (");
    agg_append_name_array(s, b);
    buf_append_str(b, "); COMMIT");
}

static void on_build(void *arg, const PGresult *rows, const PfError *err, int stmt,
                     const char *sqlstate)
{
    AggSink *s = arg;

    (void)stmt;
    if (err && strcmp(sqlstate, "2BP01") == 0) {
        PfError e = *err;
        err_prefix(&e, "could not replace an aggregate table whose columns change");
        err_hint(&e, "drop the views that use it, restart pgfan, then create them again for "
                     "the new columns");
        e.kind = ERR_FATAL;
        agg_fail(s, &e);
        return;
    }
    if (agg_step_failed(s, err, "build the aggregates' history"))
        return;
    for (int r = 0; r < PQntuples(rows); r++) {
        for (size_t i = 0; i < s->n_aggs; i++) {
            if (strcmp(s->aggs[i].def->name, PQgetvalue(rows, r, 0)) == 0 &&
                !PQgetisnull(rows, r, 1))
                agg_parse_lsn(PQgetvalue(rows, r, 1), &s->aggs[i].snap_lsn);
        }
    }
    for (size_t i = 0; i < s->n_aggs; i++) {
        if (s->aggs[i].action != AGG_KEEP) {
            char lsn[LSN_TEXT_SIZE];
            log_info(AGG_LOG, "aggregate %s: history computed from %s.%s; streamed transactions "
                     "visible in its snapshot (committed before %s) are skipped for it",
                     s->aggs[i].def->name, s->aggs[i].def->from.schema,
                     s->aggs[i].def->from.table, lsn_format(s->aggs[i].snap_lsn, lsn));
        }
        s->aggs[i].action = AGG_KEEP;
        free_types(&s->aggs[i]);
    }
    agg_step_next(s, ST_SESSION);
}

/* ---- driver ---- */

void agg_history_step(AggSink *s)
{
    Buf *b = &s->sql;

    switch (s->step) {
    case ST_CATALOG:
        catalog_sql(s, b);
        agg_step_send(s, b->data, on_catalog);
        return;
    case ST_LOAD:
        load_sql(s, b);
        agg_step_send(s, b->data, on_load);
        return;
    case ST_PROBE:
        s->step_i = next_to_build(s, s->step_i);
        if (s->step_i == s->n_aggs) {
            s->step = ST_SLOT;
            agg_history_step(s);
            return;
        }
        agg_sql_probe(b, s->aggs[s->step_i].def);
        agg_step_send(s, b->data, on_probe);
        return;
    case ST_SLOT:
        if (next_to_build(s, 0) == s->n_aggs) {
            s->step = ST_BUILD;
            agg_history_step(s);
            return;
        }
        buf_append_str(b, "SELECT count(*) FROM pg_catalog.pg_replication_slots WHERE "
                          "slot_name = ");
        agg_sql_literal(b, s->slot);
        buf_append_str(b, " AND database = current_database() AND confirmed_flush_lsn IS NOT "
                          "NULL");
        agg_step_send(s, b->data, on_slot);
        return;
    case ST_BUILD:
        build_sql(s, b);
        log_info(AGG_LOG, "checking and building aggregates (history from the source tables)");
        agg_step_send(s, b->data, on_build);
        return;
    default:
        return;
    }
}
