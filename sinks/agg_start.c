/*
 * agg_start.c - the aggregates sink's start-up, as a chain of asynchronous
 * commands on its connection (agg_internal.h).
 *
 *   CONNECT  normal connection to [sink.aggregates] dsn
 *   SERVER   PostgreSQL >= 15 (UNIQUE NULLS NOT DISTINCT), the current xid
 *            (to place wal2json's 32-bit xids in their epoch), same
 *            database as the slot's
 *   SOURCES  each source table exists with REPLICA IDENTITY FULL (else
 *            ERR_CONFIG with the ALTER TABLE to run); its columns
 *   CATALOG  schema, pgfan_state, pgfan_aggregates, the slot's state row
 *   LOAD     each aggregate against its catalog row: up to date, new, or
 *            changed (an error unless rebuild = yes)
 *   PROBE    for each one to build: its expressions' types (LIMIT 0)
 *   SLOT     (only when something is built) waits until the replication slot
 *            exists and is consistent: every transaction that is not in the
 *            history's snapshot must come through the slot, so the snapshot
 *            is taken after the slot's starting point
 *   BUILD    one REPEATABLE READ transaction creates and fills them from
 *            the source tables and records its snapshot (the history)
 *   SESSION  the work tables (temporary, per connection)
 *   STATE    the state row: where the stream resumes
 *
 * After a lost connection only SESSION and STATE run again, unless the
 * start-up had not finished (then everything runs again: every step is
 * idempotent, and a BUILD that did commit is found up to date by LOAD).
 */
#include "agg_internal.h"

#include "../common/log.h"
#include "../common/mem.h"
#include "../config/agg_def.h"
#include "agg_sql.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum {
    ST_CONNECT = 0,
    ST_SERVER,
    ST_SOURCES,
    ST_CATALOG,
    ST_LOAD,
    ST_PROBE,
    ST_TYPES,
    ST_SLOT,
    ST_BUILD,
    ST_SESSION,
    ST_STATE,
    ST_DONE,
};

#define FLOAT4OID 700
#define FLOAT8OID 701

static void send_step(AggSink *s, const char *sql, AggConnDone done)
{
    PfError err;

    if (!agg_conn_send(s->conn, sql, NULL, 0, done, s, &err))
        agg_retry(s, &err);
}

/* A failed start-up command: retry transient failures, stop on others. */
static bool step_failed(AggSink *s, const PfError *err, const char *what)
{
    PfError e;

    if (err == NULL)
        return false;
    e = *err;
    err_prefix(&e, "could not %s", what);
    if (e.kind == ERR_RETRY)
        agg_retry(s, &e);
    else
        agg_fail(s, &e);
    return true;
}

static void next(AggSink *s, int step)
{
    s->step = step;
    s->step_i = 0;
    if (s->phase == AGG_STARTING && agg_conn_idle(s->conn))
        agg_start_step(s);
}

bool agg_parse_lsn(const char *text, Lsn *out)
{
    return text && lsn_parse(text, strlen(text), out);
}

uint64_t agg_full_xid(AggSink *s, uint32_t xid)
{
    const uint64_t half = UINT64_C(1) << 31, epoch = UINT64_C(1) << 32;
    uint64_t full = (s->xid_ref & ~(epoch - 1)) | xid;

    if (full > s->xid_ref + half && full >= epoch)
        full -= epoch;
    else if (full + half < s->xid_ref)
        full += epoch;
    if (full > s->xid_ref)
        s->xid_ref = full;
    return full;
}

/* ---- CONNECT, SERVER ---- */

static void on_server(void *arg, const PGresult *rows, const PfError *err, int stmt,
                      const char *sqlstate)
{
    AggSink *s = arg;
    long version;
    const char *db;

    (void)stmt;
    (void)sqlstate;
    if (step_failed(s, err, "read the aggregates database's version"))
        return;
    version = strtol(PQgetvalue(rows, 0, 0), NULL, 10);
    s->xid_ref = strtoull(PQgetvalue(rows, 0, 1), NULL, 10);
    db = PQgetvalue(rows, 0, 2);
    if (version < 150000) {
        PfError e;
        err_set(&e, ERR_CONFIG, "could not start the aggregates sink: PostgreSQL %ld.%ld is too "
                "old (UNIQUE NULLS NOT DISTINCT needs 15)", version / 10000, version % 10000);
        err_hint(&e, "use PostgreSQL 15 or later");
        agg_fail(s, &e);
        return;
    }
    if (s->source && s->source->dbname[0] && strcmp(db, s->source->dbname) != 0) {
        PfError e;
        err_set(&e, ERR_CONFIG, "could not start the aggregates sink: its dsn reaches database "
                "\"%s\", the slot decodes \"%s\"", db, s->source->dbname);
        err_hint(&e, "the history is computed from the source tables: point dsn in "
                     "[sink.aggregates] at the source database (or leave it unset)");
        agg_fail(s, &e);
        return;
    }
    next(s, s->started ? ST_SESSION : ST_SOURCES);
}

static void on_connected(void *arg, const PGresult *rows, const PfError *err, int stmt,
                         const char *sqlstate)
{
    AggSink *s = arg;

    (void)rows;
    (void)stmt;
    (void)sqlstate;
    if (err) {
        PfError e = *err;
        if (e.kind == ERR_RETRY)
            agg_retry(s, &e);
        else
            agg_fail(s, &e);
        return;
    }
    log_info(AGG_LOG, "connected to the aggregates database");
    next(s, ST_SERVER);
}

/* ---- SOURCES ---- */

static void sources_sql(AggSink *s, Buf *b)
{
    buf_append_str(b, "SELECT t.ord, c.relreplident, a.attname, "
                      "format_type(a.atttypid, a.atttypmod) FROM (VALUES ");
    for (size_t w = 0; w < s->n_works; w++) {
        buf_printf(b, "%s(%zu, ", w ? ", " : "", w);
        agg_sql_literal(b, s->works[w].table->schema);
        buf_append_str(b, ", ");
        agg_sql_literal(b, s->works[w].table->table);
        buf_append_char(b, ')');
    }
    buf_append_str(b, ") AS t(ord, s, n) "
                      "LEFT JOIN pg_catalog.pg_namespace ns ON ns.nspname = t.s "
                      "LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid "
                      "AND c.relname = t.n AND c.relkind = 'r' "
                      "LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid "
                      "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY t.ord, a.attnum");
}

/* "gmv_daily, customer_daily": the aggregates fed by work w, for messages. */
static void append_fed(AggSink *s, size_t w, Buf *b)
{
    for (size_t i = 0; i < s->works[w].n_aggs; i++)
        buf_printf(b, "%s%s", i ? ", " : "", s->aggs[s->works[w].aggs[i]].def->name);
}

static void free_columns(AggWork *wk)
{
    for (size_t c = 0; c < wk->n_cols; c++) {
        free(wk->cols[c]);
        free(wk->types[c]);
    }
    free(wk->cols);
    free(wk->types);
    wk->cols = wk->types = NULL;
    wk->n_cols = 0;
}

static void add_column(AggWork *wk, const char *name, const char *type)
{
    wk->cols = xrealloc(wk->cols, (wk->n_cols + 1) * sizeof *wk->cols);
    wk->types = xrealloc(wk->types, (wk->n_cols + 1) * sizeof *wk->types);
    wk->cols[wk->n_cols] = xstrdup(name);
    wk->types[wk->n_cols] = xstrdup(type);
    wk->n_cols++;
}

/* Every table missing, or without REPLICA IDENTITY FULL: one error for all. */
static bool check_sources(AggSink *s, const PGresult *rows)
{
    Buf missing = BUF_INIT, alter = BUF_INIT, names = BUF_INIT;
    size_t n_alter = 0;
    bool fine;
    PfError e;

    for (int r = 0; r < PQntuples(rows); r++) {
        size_t w = (size_t)strtoul(PQgetvalue(rows, r, 0), NULL, 10);
        const TableName *t = s->works[w].table;

        if (r > 0 && strcmp(PQgetvalue(rows, r - 1, 0), PQgetvalue(rows, r, 0)) == 0)
            continue; /* the same table's next column */
        if (PQgetisnull(rows, r, 1)) {
            buf_append_str(&missing, missing.len ? ", " : "");
            config_append_qualified(&missing, t->schema, t->table);
        } else if (PQgetvalue(rows, r, 1)[0] != 'f') {
            buf_append_str(&names, names.len ? ", " : "");
            config_append_qualified(&names, t->schema, t->table);
            buf_append_str(&names, " (feeds ");
            append_fed(s, w, &names);
            buf_append_char(&names, ')');
            buf_append_str(&alter, alter.len ? " " : "");
            buf_append_str(&alter, "ALTER TABLE ");
            config_append_qualified(&alter, t->schema, t->table);
            buf_append_str(&alter, " REPLICA IDENTITY FULL;");
            n_alter++;
        }
    }
    if (missing.len) {
        err_set(&e, ERR_CONFIG, "could not start the aggregates sink: the aggregates database "
                "has no table %s", missing.data);
        err_hint(&e, "create it, or point dsn in [sink.aggregates] at the database [source] "
                     "decodes");
        agg_fail(s, &e);
    } else if (n_alter) {
        err_set(&e, ERR_CONFIG, "could not start the aggregates sink: %s %s not have REPLICA "
                "IDENTITY FULL: updates and deletes would not carry the old row that must be "
                "subtracted", names.data, n_alter == 1 ? "does" : "do");
        err_hint(&e, "run in the source database: %s", alter.data);
        agg_fail(s, &e);
    }
    fine = missing.len == 0 && n_alter == 0;
    buf_free(&missing);
    buf_free(&alter);
    buf_free(&names);
    return fine;
}

static void on_sources(void *arg, const PGresult *rows, const PfError *err, int stmt,
                       const char *sqlstate)
{
    AggSink *s = arg;

    (void)stmt;
    (void)sqlstate;
    if (step_failed(s, err, "read the source tables' definitions"))
        return;
    if (!check_sources(s, rows))
        return;
    for (size_t w = 0; w < s->n_works; w++)
        free_columns(&s->works[w]);
    for (int r = 0; r < PQntuples(rows); r++) {
        if (!PQgetisnull(rows, r, 2))
            add_column(&s->works[strtoul(PQgetvalue(rows, r, 0), NULL, 10)],
                       PQgetvalue(rows, r, 2), PQgetvalue(rows, r, 3));
    }
    next(s, ST_CATALOG);
}

/* ---- CATALOG, LOAD ---- */

static void on_catalog(void *arg, const PGresult *rows, const PfError *err, int stmt,
                       const char *sqlstate)
{
    AggSink *s = arg;

    (void)rows;
    (void)stmt;
    (void)sqlstate;
    if (step_failed(s, err, "create the aggregates catalog"))
        return;
    next(s, ST_LOAD);
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

static void append_name_array(AggSink *s, Buf *b)
{
    buf_append_str(b, "ARRAY[");
    for (size_t i = 0; i < s->n_aggs; i++) {
        if (i)
            buf_append_str(b, ", ");
        agg_sql_literal(b, s->aggs[i].def->name);
    }
    buf_append_str(b, "]::text[]");
}

static void load_sql(AggSink *s, Buf *b)
{
    Buf schema = BUF_INIT;

    agg_sql_ident(&schema, s->schema);
    buf_append_str(b, "SELECT n.name, a.definition, a.slot, a.maintained, a.snapshot_lsn::text, "
                      "to_regclass(");
    agg_sql_literal(b, schema.data);
    buf_append_str(b, " || '.' || quote_ident(n.name)) IS NOT NULL FROM unnest(");
    append_name_array(s, b);
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
    if (step_failed(s, err, "read the aggregates catalog"))
        return;
    err_clear(&e);
    for (size_t i = 0; i < s->n_aggs; i++)
        decide(s, i, rows, &e, &any);
    if (any) {
        agg_fail(s, &e);
        return;
    }
    next(s, ST_PROBE);
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
    if (step_failed(s, err, "read the aggregate's column types"))
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
    send_step(s, b.data, on_types);
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
    if (step_failed(s, err, "look for the replication slot"))
        return;
    if (strcmp(PQgetvalue(rows, 0, 0), "0") != 0) {
        next(s, ST_BUILD);
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
    append_name_array(s, b);
    buf_append_str(b, "); SELECT name, snapshot_lsn::text FROM ");
    agg_sql_table(b, s->schema, AGG_CATALOG_TABLE);
    buf_append_str(b, " WHERE name = ANY (");
    append_name_array(s, b);
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
    if (step_failed(s, err, "build the aggregates' history"))
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
    next(s, ST_SESSION);
}

/* ---- SESSION, STATE ---- */

static void session_sql(AggSink *s, Buf *b)
{
    for (size_t w = 0; w < s->n_works; w++) {
        AggWork *wk = &s->works[w];

        buf_append_str(b, "CREATE TEMP TABLE IF NOT EXISTS ");
        agg_sql_ident(b, wk->temp);
        buf_append_str(b, " (");
        for (size_t c = 0; c < wk->n_cols; c++) {
            agg_sql_ident(b, wk->cols[c]);
            buf_printf(b, " %s, ", wk->types[c]);
        }
        buf_append_str(b, "pgfan_w smallint NOT NULL, pgfan_xid xid8, pgfan_seg integer NOT "
                          "NULL) ON COMMIT DELETE ROWS; ");
    }
    buf_append_str(b, "CREATE TEMP TABLE IF NOT EXISTS pgfan_zero (t tid) ON COMMIT DELETE ROWS");
}

static void on_session(void *arg, const PGresult *rows, const PfError *err, int stmt,
                       const char *sqlstate)
{
    AggSink *s = arg;

    (void)rows;
    (void)stmt;
    (void)sqlstate;
    if (step_failed(s, err, "create the work tables"))
        return;
    next(s, ST_STATE);
}

static void on_state(void *arg, const PGresult *rows, const PfError *err, int stmt,
                     const char *sqlstate)
{
    AggSink *s = arg;
    AggPos pos = {0, 0, 0};
    PfError e;

    (void)stmt;
    (void)sqlstate;
    if (step_failed(s, err, "read the applied position"))
        return;
    if (PQntuples(rows) < 1 || !agg_parse_lsn(PQgetvalue(rows, 0, 0), &pos.commit) ||
        !agg_parse_lsn(PQgetvalue(rows, 0, 1), &pos.change)) {
        err_set(&e, ERR_FATAL, "could not read the applied position: no state row for slot "
                "\"%s\" in %s.%s", s->slot, s->schema, AGG_STATE_TABLE);
        err_hint(&e, "do not delete rows of %s.%s while pgfan runs", s->schema, AGG_STATE_TABLE);
        agg_fail(s, &e);
        return;
    }
    pos.seq = (uint32_t)strtoul(PQgetvalue(rows, 0, 2), NULL, 10);
    /* one row per aggregate: their history snapshots' positions */
    for (int r = 0; r < PQntuples(rows); r++) {
        for (size_t i = 0; i < s->n_aggs; i++) {
            if (!PQgetisnull(rows, r, 3) && !PQgetisnull(rows, r, 4) &&
                strcmp(s->aggs[i].def->name, PQgetvalue(rows, r, 3)) == 0)
                agg_parse_lsn(PQgetvalue(rows, r, 4), &s->aggs[i].snap_lsn);
        }
    }
    s->step = ST_DONE;
    agg_start_resumed(s, &pos);
}

static void state_sql(AggSink *s, Buf *b)
{
    buf_append_str(b, "SELECT st.commit_lsn::text, st.change_lsn::text, st.change_seq, a.name, "
                      "a.snapshot_lsn::text FROM ");
    agg_sql_table(b, s->schema, AGG_STATE_TABLE);
    buf_append_str(b, " st LEFT JOIN ");
    agg_sql_table(b, s->schema, AGG_CATALOG_TABLE);
    buf_append_str(b, " a ON a.name = ANY (");
    append_name_array(s, b);
    buf_append_str(b, ") WHERE st.slot = ");
    agg_sql_literal(b, s->slot);
}

/* ---- driver ---- */

void agg_start_step(AggSink *s)
{
    PfError err;
    Buf *b = &s->sql;

    buf_reset(b);
    switch (s->step) {
    case ST_CONNECT:
        if (!agg_conn_connect(s->conn, on_connected, s, &err))
            agg_retry(s, &err);
        return;
    case ST_SERVER:
        send_step(s, "SELECT current_setting('server_version_num')::int, "
                     "pg_snapshot_xmax(pg_current_snapshot())::text, current_database()",
                  on_server);
        return;
    case ST_SOURCES:
        sources_sql(s, b);
        send_step(s, b->data, on_sources);
        return;
    case ST_CATALOG:
        catalog_sql(s, b);
        send_step(s, b->data, on_catalog);
        return;
    case ST_LOAD:
        load_sql(s, b);
        send_step(s, b->data, on_load);
        return;
    case ST_PROBE:
        s->step_i = next_to_build(s, s->step_i);
        if (s->step_i == s->n_aggs) {
            s->step = ST_SLOT;
            agg_start_step(s);
            return;
        }
        agg_sql_probe(b, s->aggs[s->step_i].def);
        send_step(s, b->data, on_probe);
        return;
    case ST_SLOT:
        if (next_to_build(s, 0) == s->n_aggs) {
            s->step = ST_BUILD;
            agg_start_step(s);
            return;
        }
        buf_append_str(b, "SELECT count(*) FROM pg_catalog.pg_replication_slots WHERE "
                          "slot_name = ");
        agg_sql_literal(b, s->slot);
        buf_append_str(b, " AND database = current_database() AND confirmed_flush_lsn IS NOT "
                          "NULL");
        send_step(s, b->data, on_slot);
        return;
    case ST_BUILD:
        build_sql(s, b);
        log_info(AGG_LOG, "checking and building aggregates (history from the source tables)");
        send_step(s, b->data, on_build);
        return;
    case ST_SESSION:
        session_sql(s, b);
        send_step(s, b->data, on_session);
        return;
    case ST_STATE:
        state_sql(s, b);
        send_step(s, b->data, on_state);
        return;
    default:
        return;
    }
}
