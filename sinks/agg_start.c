/*
 * agg_start.c - the aggregates sink's start-up, as a chain of asynchronous
 * commands on its connection (agg_internal.h).
 *
 *   CONNECT  normal connection to [sink.aggregates] dsn
 *   SERVER   PostgreSQL >= 15 (UNIQUE NULLS NOT DISTINCT), the current xid
 *            (to place wal2json's 32-bit xids in their epoch), same
 *            database as the slot's
 *   LOCK     a session advisory lock per (schema, slot): the backend of a
 *            killed pgfan may still be committing its last batch, and two
 *            sessions must never apply for the same slot at once; the state
 *            row is read only under the lock (polled, never waited on)
 *   SOURCES  each source table exists with REPLICA IDENTITY FULL (else
 *            ERR_CONFIG with the ALTER TABLE to run); its columns
 *   COLUMNS  which of them the aggregates' expressions use: PostgreSQL
 *            records a view's column dependencies, so a temporary view per
 *            aggregate (rolled back) tells exactly; only those columns are
 *            sent, and an update that changes none of them is dropped
 *   CATALOG .. BUILD  the history (agg_history.c): catalog tables, each
 *            aggregate against its stored definition, probes, and one
 *            REPEATABLE READ transaction that fills new ones
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
#include "agg_sql.h"

#include <stdlib.h>
#include <string.h>

void agg_step_send(AggSink *s, const char *sql, AggConnDone done)
{
    PfError err;

    if (!agg_conn_send(s->conn, sql, NULL, 0, done, s, &err))
        agg_retry(s, &err);
}

bool agg_step_failed(AggSink *s, const PfError *err, const char *what)
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

void agg_step_next(AggSink *s, int step)
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
    if (agg_step_failed(s, err, "read the aggregates database's version"))
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
    agg_step_next(s, ST_LOCK);
}

/* ---- LOCK ---- */

#define LOCK_POLL (100 * USECS_PER_MSEC)

static void lock_sql(AggSink *s, Buf *b)
{
    Buf key = BUF_INIT;

    buf_printf(&key, "%s.%s", s->schema, s->slot);
    buf_append_str(b, "SELECT pg_try_advisory_lock(hashtext('pgfan.aggregates'), hashtext(");
    agg_sql_literal(b, key.data);
    buf_append_str(b, "))");
    buf_free(&key);
}

static void on_lock(void *arg, const PGresult *rows, const PfError *err, int stmt,
                    const char *sqlstate)
{
    AggSink *s = arg;

    (void)stmt;
    (void)sqlstate;
    if (agg_step_failed(s, err, "lock the aggregates of the slot"))
        return;
    if (PQgetvalue(rows, 0, 0)[0] == 't') {
        agg_step_next(s, s->started ? ST_SESSION : ST_SOURCES);
        return;
    }
    if (s->step_i++ == 20)
        log_warning(AGG_LOG, "waiting for another session applying aggregates of slot \"%s\" "
                    "in schema %s to end (the backend of a stopped pgfan finishing its last "
                    "batch, or a second pgfan)", s->slot, s->schema);
    s->step_due = clock_mono_us() + LOCK_POLL;
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
    agg_step_next(s, ST_SERVER);
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
    if (agg_step_failed(s, err, "read the source tables' definitions"))
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
    agg_step_next(s, ST_COLUMNS);
}

/* ---- COLUMNS ---- */

static void columns_sql(AggSink *s, Buf *b)
{
    buf_append_str(b, "BEGIN");
    for (size_t i = 0; i < s->n_aggs; i++) {
        const AggregateDef *d = s->aggs[i].def;
        size_t n = 0;

        buf_printf(b, "; CREATE TEMP VIEW pgfan_cols_%zu AS SELECT ", i);
        for (size_t k = 0; k < d->n_group_by; k++, n++)
            buf_printf(b, "%s(%s) AS c%zu", n ? ", " : "", d->group_by[k].expr, n);
        for (size_t m = 0; m < d->n_measures; m++) {
            if (d->measures[m].arg) {
                buf_printf(b, ", (%s) AS c%zu", d->measures[m].arg, n);
                n++;
            }
        }
        buf_append_str(b, " FROM ");
        agg_sql_table(b, d->from.schema, d->from.table);
        buf_append_str(b, " AS ");
        agg_sql_ident(b, d->from.table);
        if (d->where)
            buf_printf(b, " WHERE (%s)", d->where);
    }
    /* a whole-row reference depends on the table itself (attnum 0): every column */
    buf_append_str(b, "; SELECT substr(v.relname, 12)::int, d.refobjsubid, a.attname "
                      "FROM pg_catalog.pg_class v "
                      "JOIN pg_catalog.pg_rewrite r ON r.ev_class = v.oid "
                      "JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass "
                      "AND d.objid = r.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass "
                      "LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid "
                      "AND a.attnum = d.refobjsubid "
                      "WHERE v.relnamespace = pg_catalog.pg_my_temp_schema() "
                      "AND v.relname LIKE 'pgfan\\_cols\\_%' AND d.refobjid <> v.oid; ROLLBACK");
}

/* Keeps the columns of each work table that some aggregate uses. */
static void keep_used_columns(AggSink *s, const PGresult *rows)
{
    for (size_t w = 0; w < s->n_works; w++) {
        AggWork *wk = &s->works[w];
        bool *used = xcalloc(wk->n_cols ? wk->n_cols : 1, sizeof *used);
        size_t kept = 0;

        for (int r = 0; r < PQntuples(rows); r++) {
            size_t i = (size_t)strtoul(PQgetvalue(rows, r, 0), NULL, 10);
            bool whole = strcmp(PQgetvalue(rows, r, 1), "0") == 0;

            if (i >= s->n_aggs || s->aggs[i].work != w)
                continue;
            for (size_t c = 0; c < wk->n_cols; c++) {
                if (whole || (!PQgetisnull(rows, r, 2) &&
                              strcmp(wk->cols[c], PQgetvalue(rows, r, 2)) == 0))
                    used[c] = true;
            }
        }
        for (size_t c = 0; c < wk->n_cols; c++) {
            if (used[c]) {
                wk->cols[kept] = wk->cols[c];
                wk->types[kept] = wk->types[c];
                kept++;
            } else {
                free(wk->cols[c]);
                free(wk->types[c]);
            }
        }
        log_debug(AGG_LOG, "%s.%s: %zu of %zu columns are used by its aggregates",
                  wk->table->schema, wk->table->table, kept, wk->n_cols);
        wk->n_cols = kept;
        free(used);
    }
}

static void on_columns(void *arg, const PGresult *rows, const PfError *err, int stmt,
                       const char *sqlstate)
{
    AggSink *s = arg;

    if (err && err->kind != ERR_RETRY && stmt >= 1 && (size_t)stmt <= s->n_aggs) {
        const AggregateDef *d = s->aggs[stmt - 1].def;
        PfError e = *err;

        err_prefix(&e, "could not start the aggregates sink: aggregate %s: its SQL does not "
                   "work on %s.%s", d->name, d->from.schema, d->from.table);
        e.kind = strcmp(sqlstate, "42501") == 0 ? ERR_FATAL : ERR_CONFIG;
        err_hint(&e, "fix group_by, measures or where in [aggregate.%s] (%s:%d)", d->name,
                 s->cfg->path ? s->cfg->path : "config", d->line);
        agg_fail(s, &e);
        return;
    }
    if (agg_step_failed(s, err, "find the columns the aggregates use"))
        return;
    keep_used_columns(s, rows);
    agg_step_next(s, ST_CATALOG);
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
    if (agg_step_failed(s, err, "create the work tables"))
        return;
    agg_step_next(s, ST_STATE);
}

static void on_state(void *arg, const PGresult *rows, const PfError *err, int stmt,
                     const char *sqlstate)
{
    AggSink *s = arg;
    AggPos pos = {0, 0, 0};
    PfError e;

    (void)stmt;
    (void)sqlstate;
    if (agg_step_failed(s, err, "read the applied position"))
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
    agg_append_name_array(s, b);
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
        agg_step_send(s, "SELECT current_setting('server_version_num')::int, "
                     "pg_snapshot_xmax(pg_current_snapshot())::text, current_database()",
                  on_server);
        return;
    case ST_LOCK:
        lock_sql(s, b);
        agg_step_send(s, b->data, on_lock);
        return;
    case ST_SOURCES:
        sources_sql(s, b);
        agg_step_send(s, b->data, on_sources);
        return;
    case ST_COLUMNS:
        columns_sql(s, b);
        agg_step_send(s, b->data, on_columns);
        return;
    case ST_SESSION:
        session_sql(s, b);
        agg_step_send(s, b->data, on_session);
        return;
    case ST_STATE:
        state_sql(s, b);
        agg_step_send(s, b->data, on_state);
        return;
    default:
        agg_history_step(s); /* CATALOG .. BUILD: agg_history.c */
        return;
    }
}
