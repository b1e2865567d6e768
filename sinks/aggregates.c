/*
 * aggregates.c - the aggregates sink ([sink.aggregates], [aggregate.NAME]).
 *
 * Each [aggregate.NAME] is a table in the configured schema kept equal to
 * SELECT <group_by>, <measures> FROM <from> WHERE <where> GROUP BY ... at
 * every confirmed position, after any crash (agg_sql.h describes the
 * table and the SQL).
 *
 * Changes become weighted rows: an INSERT's new row +1, a DELETE's old row
 * -1, an UPDATE both (the new row takes unchanged TOAST columns from the
 * old one; REPLICA IDENTITY FULL makes the old row complete, start-up
 * checks it). Rows are kept as COPY text per source table; a batch is
 * applied in one REPEATABLE READ transaction on a normal connection:
 *
 *   BEGIN; SELECT <state row> FOR UPDATE   (must equal what we applied)
 *   COPY pg_temp.pgfan_w_<i> FROM STDIN    (per source table with rows)
 *   per aggregate: upsert of the grouped deltas, delete of emptied groups
 *   UPDATE <state row> = position of the batch's last change; COMMIT
 *
 * so the deltas and the position commit together: exactly once. The
 * position is (transaction end LSN, change LSN, rank): a replayed
 * transaction is skipped whole, and a transaction larger than a batch
 * resumes after its last applied change (agg_internal.h).
 *
 * History: a new aggregate is filled from its source table at start-up in
 * one REPEATABLE READ transaction that stores its snapshot; streamed rows
 * of transactions visible in that snapshot are filtered out by the apply
 * statement (pg_visible_in_snapshot on the row's xid8), but only while a
 * batch holds transactions that committed before the snapshot's WAL
 * position (later ones cannot be visible in it). A TRUNCATE of a source
 * table ends a segment of the batch: the aggregates of that table are then
 * recomputed from the table in the same transaction, whose snapshot
 * becomes their new history snapshot.
 *
 * Durability: durable_lsn is the end LSN of the last COMMIT received before
 * a batch that has since committed closed (or of any COMMIT when nothing is
 * pending). Memory: at most two batches (one filling, one in flight), each
 * bounded by batch_rows and batch_bytes; can_accept() is false while the
 * filling one is full.
 *
 * A lost connection or a transient error (serialization failure, a
 * TRUNCATE's transaction not yet visible) closes the connection and
 * reconnects with backoff ([source] reconnect_min/max). The batch in
 * flight stays in memory: after reconnecting, the state row says whether
 * it committed; if not, it is sent again. Other SQL errors stop pgfan
 * (nothing after the last applied batch is confirmed, so a restart after
 * the fix loses nothing).
 */
#include "agg_internal.h"

#include "../common/log.h"
#include "../common/mem.h"
#include "agg_sql.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* ---- positions, failures ---- */

int agg_pos_cmp(const AggPos *a, const AggPos *b)
{
    if (a->commit != b->commit)
        return a->commit < b->commit ? -1 : 1;
    if (a->change != b->change)
        return a->change < b->change ? -1 : 1;
    if (a->seq != b->seq)
        return a->seq < b->seq ? -1 : 1;
    return 0;
}

static void note_error(AggSink *s, const char *msg)
{
    snprintf(s->last_error, sizeof s->last_error, "%.*s", (int)sizeof s->last_error - 1, msg);
}

void agg_fail(AggSink *s, const PfError *err)
{
    if (s->failed)
        return;
    s->failed = true;
    s->phase = AGG_FAILED;
    s->fatal = *err;
    s->errors++;
    note_error(s, err->msg);
    log_error_value(AGG_LOG, err);
}

void agg_retry(AggSink *s, const PfError *err)
{
    TimeUs delay = backoff_next(&s->backoff);

    s->retries++;
    note_error(s, err->msg);
    log_warning(AGG_LOG, "%s; reconnecting in %.1f s (nothing is lost: %s)", err->msg,
                (double)delay / USECS_PER_SEC,
                s->in_flight ? "the batch in flight is checked against the state row"
                             : "unapplied changes stay in memory");
    agg_conn_close(s->conn);
    s->phase = AGG_WAITING;
    s->step = 0;
    s->step_due = 0;
    s->retry_at = clock_mono_us() + delay;
}

/* ---- batches ---- */

static void batch_init(AggBatch *b, size_t n_works)
{
    memset(b, 0, sizeof *b);
    b->copy = xcalloc(n_works, sizeof *b->copy);
    b->work_rows = xcalloc(n_works, sizeof *b->work_rows);
}

static void batch_clear(AggBatch *b, size_t n_works)
{
    for (size_t w = 0; w < n_works; w++) {
        buf_reset(&b->copy[w]);
        b->work_rows[w] = 0;
    }
    free(b->truncs);
    b->truncs = NULL;
    b->n_truncs = 0;
    b->rows = b->bytes = 0;
    b->has_last = false;
    b->min_commit = 0;
    b->opened = 0;
    /* durable_after is kept: a COMMIT seen stays durable-to-be */
}

static void batch_free(AggBatch *b, size_t n_works)
{
    for (size_t w = 0; b->copy && w < n_works; w++)
        buf_free(&b->copy[w]);
    free(b->copy);
    free(b->work_rows);
    free(b->truncs);
}

static bool batch_empty(const AggBatch *b)
{
    return b->rows == 0 && b->n_truncs == 0;
}

static bool batch_full(const AggSink *s, const AggBatch *b)
{
    return b->rows >= s->batch_rows || b->bytes >= s->batch_bytes;
}

/* The batch took the change at pos. */
static void batch_took(AggSink *s, AggBatch *b, const AggPos *pos)
{
    if (batch_empty(b))
        b->opened = clock_mono_us();
    if (b->min_commit == 0 || pos->commit < b->min_commit)
        b->min_commit = pos->commit;
    b->last = *pos;
    b->has_last = true;
    s->accepted = *pos;
}

/* ---- changes -> weighted rows ---- */

static AggWork *find_work(AggSink *s, const Change *c)
{
    for (size_t w = 0; w < s->n_works; w++) {
        const TableName *t = s->works[w].table;

        if (c->schema.len == strlen(t->schema) && c->table.len == strlen(t->table) &&
            memcmp(c->schema.ptr, t->schema, c->schema.len) == 0 &&
            memcmp(c->table.ptr, t->table, c->table.len) == 0)
            return &s->works[w];
    }
    return NULL;
}

/* Column name at position i of cols (wal2json sends them in attnum order). */
static const Column *column_of(const Column *cols, size_t n, size_t i, const char *name)
{
    size_t len = strlen(name);

    if (i < n && cols[i].name.len == len && memcmp(cols[i].name.ptr, name, len) == 0)
        return &cols[i];
    return change_find_column(cols, n, name, len);
}

static void append_value(Buf *out, const Column *col)
{
    if (col->value.kind == VALUE_NULL) {
        buf_append_str(out, "\\N");
        return;
    }
    if (col->type_class == TYPE_BYTEA)
        buf_append_str(out, "\\\\x"); /* COPY text of \x<hex> */
    agg_copy_text(out, col->value.text.ptr, col->value.text.len);
}

/*
 * One row as COPY text without the weight columns: each column of the
 * work table from primary, else from fallback (unchanged TOAST values of an
 * UPDATE's new row). Returns the name of a column found in neither.
 */
static const char *encode_row(const AggWork *wk, const Column *primary, size_t n_primary,
                              const Column *fallback, size_t n_fallback, Buf *out)
{
    const char *missing = NULL;

    buf_reset(out);
    for (size_t i = 0; i < wk->n_cols; i++) {
        const Column *col = column_of(primary, n_primary, i, wk->cols[i]);

        if (col == NULL && fallback)
            col = column_of(fallback, n_fallback, i, wk->cols[i]);
        if (i)
            buf_append_char(out, '\t');
        if (col) {
            append_value(out, col);
        } else {
            buf_append_str(out, "\\N");
            if (!missing)
                missing = wk->cols[i];
        }
    }
    return missing;
}

static void add_row(AggSink *s, AggWork *wk, const Buf *row, int weight)
{
    AggBatch *b = &s->fill;
    size_t w = (size_t)(wk - s->works);
    Buf *out = &b->copy[w];
    size_t before = out->len;

    buf_append(out, row->data, row->len);
    buf_printf(out, "%s%d\t%" PRIu64 "\t%zu\n", wk->n_cols ? "\t" : "", weight, s->txn_xid,
               b->n_truncs);
    b->bytes += out->len - before;
    b->work_rows[w]++;
    b->rows++;
}

static bool old_row_incomplete(AggSink *s, const AggWork *wk, const Change *c,
                               const char *missing, PfError *err)
{
    Buf name = BUF_INIT;

    config_append_qualified(&name, wk->table->schema, wk->table->table);
    err_set(err, ERR_FATAL, "could not turn a change of %s at %s into aggregate rows: the old "
            "row has no column \"%s\" (REPLICA IDENTITY is not FULL any more?)", name.data,
            change_kind_name(c->kind), missing);
    err_hint(err, "run ALTER TABLE %s REPLICA IDENTITY FULL; and restart pgfan (a column "
                  "dropped while pgfan ran also needs a restart)", name.data);
    buf_free(&name);
    agg_fail(s, err);
    return false;
}

static bool take_row_change(AggSink *s, AggWork *wk, const Change *c, PfError *err)
{
    const char *missing;

    if (c->kind == CHANGE_INSERT) {
        encode_row(wk, c->new_cols, c->n_new, NULL, 0, &s->line_new);
        add_row(s, wk, &s->line_new, 1);
        return true;
    }
    missing = encode_row(wk, c->old_cols, c->n_old, NULL, 0, &s->line_old);
    if (missing)
        return old_row_incomplete(s, wk, c, missing, err);
    if (c->kind == CHANGE_DELETE) {
        add_row(s, wk, &s->line_old, -1);
        return true;
    }
    encode_row(wk, c->new_cols, c->n_new, c->old_cols, c->n_old, &s->line_new);
    if (s->line_new.len == s->line_old.len &&
        memcmp(s->line_new.data, s->line_old.data, s->line_new.len) == 0)
        return true; /* nothing changed: -1 and +1 would cancel */
    add_row(s, wk, &s->line_old, -1);
    add_row(s, wk, &s->line_new, 1);
    return true;
}

/* The change's position; advances the rank among changes sharing an LSN. */
static AggPos position_of(AggSink *s, const Change *c)
{
    AggPos pos;

    if (c->lsn == s->prev_change) {
        s->seq++;
    } else {
        s->seq = 0;
        s->prev_change = c->lsn;
    }
    pos.commit = c->end_lsn != LSN_INVALID ? c->end_lsn : s->txn_end;
    pos.change = c->lsn;
    pos.seq = s->seq;
    return pos;
}

static bool submit_change(AggSink *s, const Change *c, PfError *err)
{
    AggPos pos = position_of(s, c);
    AggWork *wk = find_work(s, c);

    if (wk == NULL || agg_pos_cmp(&pos, &s->accepted) <= 0)
        return true; /* not ours, or applied already (a replay) */
    if (s->resuming) {
        char a[LSN_TEXT_SIZE], b[LSN_TEXT_SIZE];
        log_info(AGG_LOG, "transaction ending at %s: resuming after its change at %s (the part "
                 "before it was applied before the restart)", lsn_format(pos.commit, a),
                 lsn_format(s->accepted.change, b));
        s->resuming = false;
    }
    if (!s->in_txn && c->has_xid)
        s->txn_xid = agg_full_xid(s, c->xid);
    if (c->kind == CHANGE_TRUNCATE) {
        AggBatch *b = &s->fill;

        b->truncs = xrealloc(b->truncs, (b->n_truncs + 1) * sizeof *b->truncs);
        b->truncs[b->n_truncs].work = (size_t)(wk - s->works);
        b->truncs[b->n_truncs].xid = s->txn_xid;
        b->n_truncs++;
        log_info(AGG_LOG, "TRUNCATE of %s.%s: its aggregates are recomputed from the table",
                 wk->table->schema, wk->table->table);
    } else {
        s->events++;
        if (!take_row_change(s, wk, c, err))
            return false;
    }
    batch_took(s, &s->fill, &pos);
    return true;
}

/* Nothing pending: every COMMIT seen so far is durable. */
static void advance_idle(AggSink *s)
{
    if (!s->in_flight && batch_empty(&s->fill) && s->fill.durable_after > s->durable)
        s->durable = s->fill.durable_after;
}

static bool agg_submit(void *self, const Change *c, PfError *err)
{
    AggSink *s = self;

    if (s->failed) {
        *err = s->fatal;
        return false;
    }
    if (!s->started)
        return err_set(err, ERR_FATAL, "could not take a change: the aggregates sink has not "
                       "read its applied position yet (can_accept() said no)");
    if (c->snapshot && c->kind != CHANGE_BEGIN && c->kind != CHANGE_COMMIT)
        return true; /* initial snapshot rows: the history comes from our own BUILD */
    switch (c->kind) {
    case CHANGE_BEGIN:
        /* an open transaction was abandoned: it comes again, positions skip what we took */
        s->in_txn = true;
        s->txn_end = c->end_lsn;
        s->txn_xid = c->has_xid ? agg_full_xid(s, c->xid) : 0;
        s->prev_change = LSN_INVALID;
        s->seq = 0;
        s->resuming = c->end_lsn == s->accepted.commit;
        return true;
    case CHANGE_INSERT:
    case CHANGE_UPDATE:
    case CHANGE_DELETE:
    case CHANGE_TRUNCATE:
        if (!submit_change(s, c, err)) {
            *err = s->fatal;
            return false;
        }
        return true;
    case CHANGE_COMMIT:
        s->in_txn = false;
        if (c->end_lsn > s->fill.durable_after)
            s->fill.durable_after = c->end_lsn;
        advance_idle(s);
        return true;
    case CHANGE_MESSAGE:
        return true;
    }
    return true;
}

/* ---- applying a batch ---- */

static void flight_next(AggSink *s);

static void map_statements(AggSink *s, size_t n, int agg)
{
    s->stmt_agg = xrealloc(s->stmt_agg, (s->n_stmt_agg + n) * sizeof *s->stmt_agg);
    for (size_t i = 0; i < n; i++)
        s->stmt_agg[s->n_stmt_agg++] = agg;
}

void agg_append_name_array(const AggSink *s, Buf *b)
{
    buf_append_str(b, "ARRAY[");
    for (size_t i = 0; i < s->n_aggs; i++) {
        if (i)
            buf_append_str(b, ", ");
        agg_sql_literal(b, s->aggs[i].def->name);
    }
    buf_append_str(b, "]::text[]");
}

static void apply_sql(AggSink *s, const AggBatch *b, Buf *out)
{
    bool *recomputed = xcalloc(s->n_aggs, sizeof *recomputed);
    bool any_recompute = false;
    char a_lsn[LSN_TEXT_SIZE], c_lsn[LSN_TEXT_SIZE];

    s->n_stmt_agg = 0;
    for (size_t seg = 0; seg <= b->n_truncs; seg++) {
        for (size_t i = 0; i < s->n_aggs; i++) {
            const AggState *a = &s->aggs[i];
            bool filter = recomputed[i] || (a->snap_lsn != 0 && b->min_commit <= a->snap_lsn);

            if (b->work_rows[a->work] == 0)
                continue;
            agg_sql_apply(out, s->schema, a->def, s->works[a->work].temp,
                          b->n_truncs ? (int)seg : -1, filter);
            buf_append_str(out, "; ");
            map_statements(s, AGG_SQL_APPLY_STATEMENTS, (int)i);
        }
        if (seg == b->n_truncs)
            break;
        for (size_t i = 0; i < s->n_aggs; i++) {
            if (s->aggs[i].work != b->truncs[seg].work)
                continue;
            agg_sql_recompute(out, s->schema, s->aggs[i].def, b->truncs[seg].xid, s->slot);
            buf_append_str(out, "; ");
            map_statements(s, AGG_SQL_RECOMPUTE_STATEMENTS, (int)i);
            recomputed[i] = any_recompute = true;
        }
    }
    buf_append_str(out, "UPDATE ");
    agg_sql_table(out, s->schema, AGG_STATE_TABLE);
    buf_printf(out, " SET commit_lsn = '%s', change_lsn = '%s', change_seq = %" PRIu32
               ", updated_at = now() WHERE slot = ",
               lsn_format(b->last.commit, a_lsn), lsn_format(b->last.change, c_lsn), b->last.seq);
    agg_sql_literal(out, s->slot);
    map_statements(s, 1, -1);
    if (any_recompute) {
        buf_append_str(out, "; SELECT name, snapshot_lsn::text FROM ");
        agg_sql_table(out, s->schema, AGG_CATALOG_TABLE);
        buf_append_str(out, " WHERE name = ANY (");
        agg_append_name_array(s, out);
        buf_append_char(out, ')');
        map_statements(s, 1, -1);
    }
    buf_append_str(out, "; COMMIT");
    map_statements(s, 1, -1);
    free(recomputed);
}

/* The batch in flight is in the database (its COMMIT, or the state row, says so). */
static void flight_committed(AggSink *s, const PGresult *snaps)
{
    AggBatch *b = &s->flight;

    for (int r = 0; snaps && r < PQntuples(snaps); r++) {
        for (size_t i = 0; i < s->n_aggs; i++) {
            if (!PQgetisnull(snaps, r, 1) && strcmp(s->aggs[i].def->name, PQgetvalue(snaps, r, 0)) == 0)
                agg_parse_lsn(PQgetvalue(snaps, r, 1), &s->aggs[i].snap_lsn);
        }
    }
    log_debug(AGG_LOG, "batch of %zu rows applied in %.1f ms", b->rows,
              (double)(clock_mono_us() - s->flight_started) / USECS_PER_MSEC);
    if (b->has_last)
        s->applied = b->last;
    if (b->durable_after > s->durable)
        s->durable = b->durable_after;
    s->rows_applied += b->rows;
    s->batches++;
    batch_clear(b, s->n_works);
    b->durable_after = 0;
    s->in_flight = false;
    backoff_reset(&s->backoff);
    advance_idle(s);
}

/* A failure of a statement of the batch: which aggregate, which changes. */
static void flight_failed(AggSink *s, const PfError *err, int stmt)
{
    PfError e = *err;
    char lsn[LSN_TEXT_SIZE];

    if (e.kind == ERR_RETRY) {
        agg_retry(s, &e);
        return;
    }
    if (stmt >= 0 && (size_t)stmt < s->n_stmt_agg && s->stmt_agg[stmt] >= 0) {
        const AggregateDef *d = s->aggs[s->stmt_agg[stmt]].def;
        err_prefix(&e, "could not apply changes up to %s to aggregate %s",
                   lsn_format(s->flight.last.commit, lsn), d->name);
        if (e.hint[0] == '\0')
            err_hint(&e, "a row of %s.%s makes an expression of [aggregate.%s] fail; fix the "
                         "expression (with rebuild = yes) or the row, then restart pgfan: "
                         "nothing after the last applied batch was confirmed",
                     d->from.schema, d->from.table, d->name);
    } else {
        err_prefix(&e, "could not apply changes up to %s to the aggregates",
                   lsn_format(s->flight.last.commit, lsn));
    }
    agg_fail(s, &e);
}

static void on_flight(void *arg, const PGresult *rows, const PfError *err, int stmt,
                      const char *sqlstate)
{
    AggSink *s = arg;

    (void)sqlstate;
    if (err) {
        flight_failed(s, err, s->flight_step == 2 ? stmt : -1);
        return;
    }
    if (s->flight_step == 0) {
        AggPos row = {0, 0, 0};
        PfError e;

        if (PQntuples(rows) != 1 || !agg_parse_lsn(PQgetvalue(rows, 0, 0), &row.commit) ||
            !agg_parse_lsn(PQgetvalue(rows, 0, 1), &row.change) ||
            (row.seq = (uint32_t)strtoul(PQgetvalue(rows, 0, 2), NULL, 10),
             agg_pos_cmp(&row, &s->applied) != 0)) {
            err_set(&e, ERR_FATAL, "could not apply a batch: the state row of slot \"%s\" in "
                    "%s.%s is not where this pgfan left it", s->slot, s->schema,
                    AGG_STATE_TABLE);
            err_hint(&e, "only one pgfan may maintain a schema's aggregates for a slot; never "
                         "edit %s.%s by hand", s->schema, AGG_STATE_TABLE);
            agg_fail(s, &e);
            return;
        }
        s->flight_step = 1;
        s->flight_work = 0;
        flight_next(s);
        return;
    }
    if (s->flight_step == 1) {
        s->flight_work++;
        flight_next(s);
        return;
    }
    flight_committed(s, rows);
}

/* Sends the next command of the batch in flight. */
static void flight_next(AggSink *s)
{
    AggBatch *b = &s->flight;
    PfError err;
    Buf *q = &s->sql;
    const char *copy = NULL;
    size_t copy_len = 0;

    buf_reset(q);
    if (s->flight_step == 0) {
        buf_append_str(q, "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT commit_lsn::text, "
                          "change_lsn::text, change_seq FROM ");
        agg_sql_table(q, s->schema, AGG_STATE_TABLE);
        buf_append_str(q, " WHERE slot = ");
        agg_sql_literal(q, s->slot);
        buf_append_str(q, " FOR UPDATE");
    } else {
        while (s->flight_step == 1 && s->flight_work < s->n_works &&
               b->work_rows[s->flight_work] == 0)
            s->flight_work++;
        if (s->flight_step == 1 && s->flight_work < s->n_works) {
            const AggWork *wk = &s->works[s->flight_work];

            buf_append_str(q, "COPY pg_temp.");
            agg_sql_ident(q, wk->temp);
            buf_append_str(q, " (");
            for (size_t c = 0; c < wk->n_cols; c++) {
                agg_sql_ident(q, wk->cols[c]);
                buf_append_str(q, ", ");
            }
            buf_append_str(q, "pgfan_w, pgfan_xid, pgfan_seg) FROM STDIN");
            copy = b->copy[s->flight_work].data;
            copy_len = b->copy[s->flight_work].len;
            s->bytes += copy_len;
        } else {
            s->flight_step = 2;
            apply_sql(s, b, q);
        }
    }
    if (!agg_conn_send(s->conn, q->data, copy, copy_len, on_flight, s, &err))
        agg_retry(s, &err);
}

static void start_flight(AggSink *s)
{
    AggBatch tmp = s->flight;

    s->flight = s->fill;
    s->fill = tmp;
    batch_clear(&s->fill, s->n_works);
    s->fill.durable_after = 0;
    s->in_flight = true;
    s->flight_step = 0;
    s->flight_started = clock_mono_us();
    flight_next(s);
}

void agg_start_resumed(AggSink *s, const AggPos *row)
{
    char a[LSN_TEXT_SIZE], b[LSN_TEXT_SIZE];
    PfError e;

    s->phase = AGG_READY;
    backoff_reset(&s->backoff);
    if (!s->started) {
        s->applied = s->accepted = *row;
        s->started = true;
        log_info(AGG_LOG, "ready: %zu aggregate%s in schema %s, applied up to the transaction "
                 "ending at %s", s->n_aggs, s->n_aggs == 1 ? "" : "s", s->schema,
                 lsn_format(row->commit, a));
        return;
    }
    log_info(AGG_LOG, "reconnected; applied up to the transaction ending at %s",
             lsn_format(row->commit, a));
    if (!s->in_flight) {
        if (agg_pos_cmp(row, &s->applied) == 0)
            return;
    } else if (s->flight.has_last && agg_pos_cmp(row, &s->flight.last) == 0) {
        log_info(AGG_LOG, "the batch in flight when the connection was lost had committed");
        flight_committed(s, NULL);
        return;
    } else if (agg_pos_cmp(row, &s->applied) == 0) {
        s->flight_step = 0;
        flight_next(s);
        return;
    }
    err_set(&e, ERR_FATAL, "could not resume the aggregates: the state row of slot \"%s\" is "
            "at %s, this pgfan applied up to %s", s->slot, lsn_format(row->commit, a),
            lsn_format(s->applied.commit, b));
    err_hint(&e, "only one pgfan may maintain a schema's aggregates for a slot");
    agg_fail(s, &e);
}

/* ---- SinkOps ---- */

static void agg_close(void *self);

static size_t add_work(AggSink *s, const TableName *t)
{
    for (size_t w = 0; w < s->n_works; w++) {
        if (strcmp(s->works[w].table->schema, t->schema) == 0 &&
            strcmp(s->works[w].table->table, t->table) == 0)
            return w;
    }
    s->works = xrealloc(s->works, (s->n_works + 1) * sizeof *s->works);
    memset(&s->works[s->n_works], 0, sizeof *s->works);
    s->works[s->n_works].table = t;
    snprintf(s->works[s->n_works].temp, sizeof s->works[s->n_works].temp, "pgfan_w_%zu",
             s->n_works);
    return s->n_works++;
}

/* The reloadable options: batch bounds and linger (the batch being filled
 * closes by the new bounds). */
static void agg_reconfigure(void *self, const Config *cfg)
{
    AggSink *s = self;

    s->batch_rows = cfg->aggregates.batch_rows;
    s->batch_bytes = cfg->aggregates.batch_bytes;
    s->batch_linger = cfg->aggregates.batch_linger;
}

static void *agg_open(const SinkContext *ctx, PfError *err)
{
    const Config *cfg = ctx->config;
    AggSink *s;

    if (cfg->aggregates.n_defs == 0) {
        err_set(err, ERR_CONFIG, "could not start the aggregates sink: no [aggregate.NAME] "
                "section");
        err_hint(err, "declare an aggregate, e.g. [aggregate.gmv_daily]");
        return NULL;
    }
    s = xcalloc(1, sizeof *s);
    s->cfg = cfg;
    agg_reconfigure(s, cfg);
    s->loop = ctx->loop;
    s->source = ctx->source;
    s->schema = cfg->aggregates.schema;
    s->slot = cfg->source.slot;
    s->aggs = xcalloc(cfg->aggregates.n_defs, sizeof *s->aggs);
    s->n_aggs = cfg->aggregates.n_defs;
    for (size_t i = 0; i < s->n_aggs; i++) {
        AggWork *wk;

        s->aggs[i].def = &cfg->aggregates.defs[i];
        s->aggs[i].work = add_work(s, &cfg->aggregates.defs[i].from);
        wk = &s->works[s->aggs[i].work];
        wk->aggs = xrealloc(wk->aggs, (wk->n_aggs + 1) * sizeof *wk->aggs);
        wk->aggs[wk->n_aggs++] = i;
    }
    batch_init(&s->fill, s->n_works);
    batch_init(&s->flight, s->n_works);
    backoff_init(&s->backoff, cfg->source.reconnect_min, cfg->source.reconnect_max);
    s->conn = agg_conn_new(ctx->loop, cfg->aggregates.dsn ? cfg->aggregates.dsn
                                                          : cfg->source.dsn);
    s->phase = AGG_STARTING;
    log_info(AGG_LOG, "maintaining %zu aggregate%s in schema %s (batches of up to %zu rows)",
             s->n_aggs, s->n_aggs == 1 ? "" : "s", s->schema, cfg->aggregates.batch_rows);
    agg_start_step(s);
    if (s->failed) {
        *err = s->fatal;
        agg_close(s);
        return NULL;
    }
    return s;
}

static Lsn agg_durable_lsn(const void *self)
{
    const AggSink *s = self;

    return s->durable;
}

static bool agg_can_accept(const void *self)
{
    const AggSink *s = self;

    return s->started && !s->failed && !batch_full(s, &s->fill);
}

static bool agg_poll(void *self, TimeUs now, TimeUs *next_deadline, PfError *err)
{
    AggSink *s = self;
    AggBatch *f = &s->fill;

    *next_deadline = TIME_NEVER;
    if (s->phase == AGG_WAITING) {
        if (now < s->retry_at) {
            *next_deadline = s->retry_at;
        } else {
            s->phase = AGG_STARTING;
            agg_start_step(s);
        }
    } else if (s->phase != AGG_FAILED && agg_conn_closed(s->conn)) {
        PfError e;
        err_set(&e, ERR_RETRY, "lost the connection to the aggregates database");
        agg_retry(s, &e);
        *next_deadline = s->retry_at;
    }
    if (s->phase == AGG_STARTING && s->step_due > 0) {
        if (now >= s->step_due && agg_conn_idle(s->conn)) {
            s->step_due = 0;
            agg_start_step(s);
        } else if (s->step_due < *next_deadline) {
            *next_deadline = s->step_due;
        }
    }
    if (s->failed) {
        *err = s->fatal;
        return false;
    }
    if (s->phase == AGG_READY && !s->in_flight && !batch_empty(f)) {
        TimeUs due = f->opened + s->batch_linger;

        if (batch_full(s, f) || s->flushing || f->n_truncs > 0 || now >= due)
            start_flight(s);
        else
            *next_deadline = due;
    }
    advance_idle(s);
    if (s->failed) {
        *err = s->fatal;
        return false;
    }
    return true;
}

static void agg_flush(void *self)
{
    AggSink *s = self;

    s->flushing = true;
}

static void agg_status(const void *self, SinkStatus *out)
{
    const AggSink *s = self;

    memset(out, 0, sizeof *out);
    if (s->failed)
        out->state = "failed";
    else if (!s->started)
        out->state = "starting";
    else if (s->phase != AGG_READY)
        out->state = "retrying";
    else if (!agg_can_accept(s))
        out->state = "backpressure";
    else
        out->state = "ok";
    out->durable_lsn = s->durable;
    out->queue_depth = s->fill.rows + (s->in_flight ? s->flight.rows : 0);
    out->queued_bytes = s->fill.bytes + (s->in_flight ? s->flight.bytes : 0);
    out->events = s->events;
    out->bytes = s->bytes;
    out->retries = s->retries;
    out->errors = s->errors;
    snprintf(out->last_error, sizeof out->last_error, "%s", s->last_error);
}

static void agg_close(void *self)
{
    AggSink *s = self;

    if (!s)
        return;
    agg_conn_free(s->conn);
    for (size_t w = 0; w < s->n_works; w++) {
        for (size_t c = 0; c < s->works[w].n_cols; c++) {
            free(s->works[w].cols[c]);
            free(s->works[w].types[c]);
        }
        free(s->works[w].cols);
        free(s->works[w].types);
        free(s->works[w].aggs);
    }
    for (size_t i = 0; i < s->n_aggs; i++) {
        AggState *a = &s->aggs[i];
        for (size_t k = 0; a->key_types && k < a->def->n_group_by; k++)
            free(a->key_types[k]);
        for (size_t m = 0; a->measure_types && m < a->def->n_measures; m++)
            free(a->measure_types[m]);
        free(a->key_types);
        free(a->measure_types);
    }
    free(s->works);
    free(s->aggs);
    batch_free(&s->fill, s->n_works);
    batch_free(&s->flight, s->n_works);
    free(s->stmt_agg);
    buf_free(&s->sql);
    buf_free(&s->line_old);
    buf_free(&s->line_new);
    free(s);
}

const SinkOps sink_aggregates_ops = {
    .name = "aggregates",
    .open = agg_open,
    .submit = agg_submit,
    .durable_lsn = agg_durable_lsn,
    .can_accept = agg_can_accept,
    .poll = agg_poll,
    .flush = agg_flush,
    .status = agg_status,
    .close = agg_close,
    .reconfigure = agg_reconfigure,
};
