/*
 * snapshot.c - the initial snapshot on the loop (snapshot.h).
 *
 * Each worker is a small state machine on its own connection:
 *
 *   CONNECTING -> IMPORTING -> (the first one: PLANNING) -> IDLE
 *   IDLE -> STARTING (COPY sent) -> COPYING (rows) -> ENDING -> IDLE ... -> DONE
 *
 * The plan (one query under the imported snapshot) gives each table's
 * size in pages, pg_class.reltuples for the progress estimate, relkind
 * (inheritance children are left out with ONLY, partitions are not), and
 * the slot's restart_lsn, from which the rows' lsn comes. Tables become
 * page ranges in [source] tables order; an idle worker takes the next one.
 * The last range of a table is open-ended, so a table bigger than its
 * planned size loses nothing.
 *
 * Rows are handed to the pipeline as they arrive, except one held back
 * (see snapshot.h, CHANGE_SNAP_LAST). A worker's socket is not watched for
 * reading while the pipeline cannot accept; rows libpq already buffered are
 * read from snapshot_poll() once it can again.
 */
#include "snapshot.h"

#include "../common/log.h"
#include "../common/mem.h"
#include "repl_protocol.h"
#include "snapshot_rows.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMPONENT "snapshot"

/* Rows read from one connection per loop turn before others get a chance. */
#define ROWS_PER_TURN 2000

/* Connecting, importing and planning must not hang; a COPY may wait (locks, backpressure). */
#define STEP_TIMEOUT_US (60 * USECS_PER_SEC)

#define PROGRESS_EVERY_US (5 * USECS_PER_SEC)

/* Page ranges: at most this many pages (16 MB of 8 kB pages), so workers
 * share a big table evenly, and at least this many, so a small table is
 * one COPY. */
#define RANGE_PAGES_MAX 2048
#define RANGE_PAGES_MIN 128

typedef enum WorkerState {
    W_CONNECTING = 0,
    W_IMPORTING, /* BEGIN ...; SET TRANSACTION SNAPSHOT sent */
    W_PLANNING,  /* the plan query sent (one worker) */
    W_IDLE,      /* imported, waiting for a range (or for the plan) */
    W_STARTING,  /* COPY sent, waiting for the COPY to start */
    W_COPYING,
    W_ENDING, /* the COPY's data is over: collecting its final result */
    W_DONE,   /* no ranges left: connection closed */
} WorkerState;

typedef struct Range {
    size_t table;
    uint64_t first_page;
    uint64_t end_page; /* 0: to the end of the table */
} Range;

typedef struct TableRun {
    SnapTable t;
    bool only; /* a plain table: leave out inheritance children */
    uint64_t pages;
    double estimate; /* pg_class.reltuples; < 0: unknown (never analyzed) */
    uint64_t rows;
    size_t ranges, ranges_done;
} TableRun;

typedef struct Worker {
    Snapshot *s;
    int id;
    PGconn *conn;
    int fd;          /* watched socket, -1 when none */
    unsigned events; /* what fd is watched for */
    WorkerState state;
    bool want_write;  /* libpq has unsent data */
    bool buffered;    /* reading paused with complete rows possibly left in libpq */
    TimeUs deadline;  /* TIME_NEVER while a COPY runs or waits */
    size_t range;     /* STARTING .. ENDING: which */
    PGresult *result; /* the running command's first error, or last result */
} Worker;

struct Snapshot {
    const Config *cfg;
    Loop *loop;
    Pipeline *pipeline;
    char *slot;
    char *name;
    char *options;
    Lsn consistent_lsn;
    bool resync;

    SnapshotPhase phase;
    PfError error;

    TableRun *tables;
    size_t n_tables;
    Range *ranges;
    size_t n_ranges, next_range;
    bool planning; /* a worker runs the plan query */
    bool planned;
    bool begun; /* BEGIN (and the resync TRUNCATEs) went to the pipeline */
    Lsn row_lsn;

    Worker *workers;
    size_t n_workers;

    char *held; /* the row held back (PQgetCopyData's buffer), or NULL */
    int held_len;
    size_t held_table;
    SnapRowParser parser;

    uint64_t rows;
    TimeUs started_mono, started_wall, done_mono; /* done_mono: every row read */
    TimeUs next_log;
};

static void on_worker_socket(void *arg, int fd, unsigned events);
static void dispatch(Snapshot *s);

/* ---- failure, closing ------------------------------------------------- */

static void worker_close(Worker *w)
{
    if (w->fd >= 0) {
        loop_unwatch(w->s->loop, w->fd);
        w->fd = -1;
    }
    PQclear(w->result);
    w->result = NULL;
    if (w->conn) {
        PQfinish(w->conn);
        w->conn = NULL;
    }
    w->events = 0;
    w->want_write = false;
    w->buffered = false;
}

static void close_all(Snapshot *s)
{
    for (size_t i = 0; i < s->n_workers; i++)
        worker_close(&s->workers[i]);
    if (s->held) {
        PQfreemem(s->held);
        s->held = NULL;
    }
}

static void snapshot_fail(Snapshot *s, const PfError *err)
{
    if (s->phase != SNAPSHOT_RUNNING)
        return;
    s->error = *err;
    s->phase = SNAPSHOT_FAILED;
    close_all(s);
}

static const char *conn_message(const Worker *w, char *buf, size_t size)
{
    size_t n;

    snprintf(buf, size, "%s", w->conn ? PQerrorMessage(w->conn) : "no connection");
    n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    if (!buf[0])
        snprintf(buf, size, "connection lost");
    return buf;
}

/* A connection-level failure of worker w while doing what. */
static void worker_failed(Worker *w, const char *what)
{
    PfError err;
    char buf[ERR_MSG_SIZE];

    err_set(&err, ERR_RETRY, "could not %s (snapshot connection %d): %s", what, w->id,
            conn_message(w, buf, sizeof buf));
    snapshot_fail(w->s, &err);
}

/* A command of worker w that ended in an error result. */
static void command_failed(Worker *w, const PGresult *res, const char *what)
{
    const char *sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char buf[ERR_MSG_SIZE];
    PfError err;

    if (!primary)
        primary = conn_message(w, buf, sizeof buf);
    if (sqlstate && strcmp(sqlstate, "42501") == 0) {
        err_set(&err, ERR_FATAL, "could not %s: %s", what, primary);
        err_hint(&err, "the role in [source] dsn must be able to SELECT every table in [source] "
                       "tables: GRANT SELECT ON ... TO that role");
    } else {
        err_set(&err, ERR_RETRY, "could not %s: %s", what, primary);
        if (sqlstate && strcmp(sqlstate, "22023") == 0)
            err_hint(&err, "the exported snapshot was gone (the replication connection ended "
                           "before every snapshot connection imported it); pgfan starts over");
    }
    snapshot_fail(w->s, &err);
}

/* ---- the loop's view of a worker --------------------------------------- */

static bool can_read_rows(const Snapshot *s)
{
    return s->phase == SNAPSHOT_RUNNING && s->begun && pipeline_can_accept(s->pipeline);
}

static void worker_watch(Worker *w)
{
    Snapshot *s = w->s;
    int fd = w->conn ? PQsocket(w->conn) : -1;
    unsigned events = 0;

    if (fd != w->fd && w->fd >= 0) {
        loop_unwatch(s->loop, w->fd);
        w->fd = -1;
    }
    if (fd < 0 || w->state == W_CONNECTING)
        return;
    if (w->state != W_COPYING || can_read_rows(s))
        events |= LOOP_READ;
    if (w->want_write)
        events |= LOOP_WRITE;
    if (fd == w->fd && events == w->events)
        return;
    if (!loop_watch(s->loop, fd, events, on_worker_socket, w)) {
        PfError err;
        err_set(&err, ERR_RETRY, "could not watch snapshot connection %d: %s", w->id,
                strerror(errno));
        snapshot_fail(s, &err);
        return;
    }
    w->fd = fd;
    w->events = events;
}

/* Sends one command; next is the state that waits for its result. */
static void worker_send(Worker *w, WorkerState next, const char *sql, const char *what)
{
    int rc;

    log_debug(COMPONENT, "connection %d: %s", w->id, sql);
    if (!PQsendQuery(w->conn, sql)) {
        worker_failed(w, what);
        return;
    }
    rc = PQflush(w->conn);
    if (rc < 0) {
        worker_failed(w, what);
        return;
    }
    w->want_write = rc == 1;
    w->state = next;
    w->deadline = next == W_STARTING ? TIME_NEVER : clock_mono_us() + STEP_TIMEOUT_US;
    worker_watch(w);
}

/* ---- connecting and importing ------------------------------------------ */

static void send_import(Worker *w)
{
    Buf sql = BUF_INIT;
    char *lit = PQescapeLiteral(w->conn, w->s->name, strlen(w->s->name));

    buf_printf(&sql,
               "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; "
               "SET TRANSACTION SNAPSHOT %s",
               lit ? lit : "''");
    PQfreemem(lit);
    worker_send(w, W_IMPORTING, sql.data, "import the slot's snapshot");
    buf_free(&sql);
}

static void worker_connect(Worker *w)
{
    Snapshot *s = w->s;
    ReplConnParams params;

    repl_conn_params(&params, s->cfg->source.dsn, "false", "pgfan-snapshot", s->options);
    w->conn = PQconnectStartParams(params.keys, params.values, 1);
    if (!w->conn || PQstatus(w->conn) == CONNECTION_BAD) {
        worker_failed(w, "connect to PostgreSQL");
        return;
    }
    w->state = W_CONNECTING;
    w->deadline = clock_mono_us() + STEP_TIMEOUT_US;
    w->fd = PQsocket(w->conn);
    w->events = LOOP_WRITE;
    if (w->fd < 0 || !loop_watch(s->loop, w->fd, LOOP_WRITE, on_worker_socket, w))
        worker_failed(w, "connect to PostgreSQL");
}

static void worker_continue_connect(Worker *w)
{
    PostgresPollingStatusType st = PQconnectPoll(w->conn);
    unsigned events;

    switch (st) {
    case PGRES_POLLING_FAILED:
        worker_failed(w, "connect to PostgreSQL");
        return;
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(w->conn, 1) != 0) {
            worker_failed(w, "set a snapshot connection non-blocking");
            return;
        }
        send_import(w);
        return;
    default:
        events = st == PGRES_POLLING_WRITING ? LOOP_WRITE : LOOP_READ;
        if (PQsocket(w->conn) != w->fd) {
            if (w->fd >= 0)
                loop_unwatch(w->s->loop, w->fd);
            w->fd = PQsocket(w->conn);
        }
        w->events = events;
        if (w->fd < 0 || !loop_watch(w->s->loop, w->fd, events, on_worker_socket, w))
            worker_failed(w, "connect to PostgreSQL");
        return;
    }
}

/* ---- the plan ------------------------------------------------------------ */

static void send_plan(Worker *w)
{
    Snapshot *s = w->s;
    Buf sql = BUF_INIT;
    char *slot = PQescapeLiteral(w->conn, s->slot, strlen(s->slot));

    buf_append_str(&sql,
                   "SELECT t.ord, c.relkind, CASE WHEN c.relkind = 'p' THEN (SELECT "
                   "coalesce(sum(pg_catalog.pg_relation_size(p.relid)), 0)::bigint FROM "
                   "pg_catalog.pg_partition_tree(c.oid) p WHERE p.isleaf) ELSE "
                   "pg_catalog.pg_relation_size(c.oid) END / "
                   "pg_catalog.current_setting('block_size')::bigint, CASE WHEN c.relkind = 'p' "
                   "THEN (SELECT CASE WHEN bool_or(pc.reltuples < 0) THEN -1 ELSE "
                   "coalesce(sum(pc.reltuples), 0) END FROM pg_catalog.pg_partition_tree(c.oid) p "
                   "JOIN pg_catalog.pg_class pc ON pc.oid = p.relid WHERE p.isleaf) ELSE "
                   "c.reltuples END, (SELECT r.restart_lsn FROM pg_catalog.pg_replication_slots r "
                   "WHERE r.slot_name = ");
    buf_append_str(&sql, slot ? slot : "''");
    buf_append_str(&sql, ") FROM (VALUES ");
    PQfreemem(slot);
    for (size_t i = 0; i < s->n_tables; i++) {
        char *sc = PQescapeLiteral(w->conn, s->tables[i].t.schema, strlen(s->tables[i].t.schema));
        char *tb = PQescapeLiteral(w->conn, s->tables[i].t.table, strlen(s->tables[i].t.table));

        buf_printf(&sql, "%s(%zu, %s, %s)", i ? ", " : "", i, sc ? sc : "''", tb ? tb : "''");
        PQfreemem(sc);
        PQfreemem(tb);
    }
    buf_append_str(&sql, ") AS t(ord, schema_name, table_name) "
                         "JOIN pg_catalog.pg_namespace ns ON ns.nspname = t.schema_name "
                         "JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid "
                         "AND c.relname = t.table_name ORDER BY t.ord");
    s->planning = true;
    worker_send(w, W_PLANNING, sql.data, "size the tables for the snapshot");
    buf_free(&sql);
}

/* Splits table i of `pages` pages into ranges (appended to s->ranges). */
static void add_ranges(Snapshot *s, size_t i, uint64_t pages)
{
    uint64_t n = (pages + RANGE_PAGES_MAX - 1) / RANGE_PAGES_MAX;
    uint64_t by_workers = pages / RANGE_PAGES_MIN;
    uint64_t size;

    if (by_workers > s->n_workers)
        by_workers = s->n_workers;
    if (n < by_workers)
        n = by_workers;
    if (n < 1)
        n = 1;
    size = (pages + n - 1) / n;
    s->ranges = xrealloc(s->ranges, (s->n_ranges + n) * sizeof *s->ranges);
    for (uint64_t k = 0; k < n; k++) {
        Range *r = &s->ranges[s->n_ranges++];

        r->table = i;
        r->first_page = k * size;
        r->end_page = k + 1 == n ? 0 : (k + 1) * size;
    }
    s->tables[i].ranges = (size_t)n;
}

static bool read_plan(Snapshot *s, const PGresult *res, PfError *err)
{
    const char *restart;

    if (PQntuples(res) != (int)s->n_tables || PQnfields(res) < 5)
        return err_set(err, ERR_RETRY,
                       "could not size the tables for the snapshot: %d of %zu "
                       "tables found (one was dropped?)",
                       PQntuples(res), s->n_tables);
    restart = PQgetvalue(res, 0, 4);
    if (PQgetisnull(res, 0, 4) || !lsn_parse(restart, strlen(restart), &s->row_lsn) ||
        s->row_lsn == LSN_INVALID)
        return err_set(err, ERR_RETRY,
                       "could not read the restart_lsn of replication slot \"%s\" "
                       "(was it dropped?)",
                       s->slot);
    s->row_lsn--; /* below every change the slot streams (change.h) */
    for (size_t i = 0; i < s->n_tables; i++) {
        TableRun *t = &s->tables[i];
        long long pages = atoll(PQgetvalue(res, (int)i, 2));

        t->only = PQgetvalue(res, (int)i, 1)[0] == 'r';
        t->pages = pages > 0 ? (uint64_t)pages : 0;
        t->estimate = atof(PQgetvalue(res, (int)i, 3));
        add_ranges(s, i, t->pages);
    }
    return true;
}

/* ---- what goes to the pipeline ----------------------------------------- */

/*
 * Positions and marks of a snapshot change. Rows carry the snapshot's start
 * as their time (source.ts_ms); BEGIN and COMMIT carry none, so the
 * pipeline's lag and commit-to-durable latency keep describing the stream
 * rather than the snapshot's length.
 */
static void frame(const Snapshot *s, Change *c, uint8_t mark)
{
    c->end_lsn = s->consistent_lsn;
    c->has_commit_time = c->kind != CHANGE_BEGIN && c->kind != CHANGE_COMMIT;
    c->commit_time = c->has_commit_time ? s->started_wall : 0;
    c->snapshot = mark;
}

static bool submit(Snapshot *s, Change *c)
{
    PfError err;

    if (pipeline_submit(s->pipeline, c, &err))
        return true;
    snapshot_fail(s, &err);
    return false;
}

/* BEGIN, then (resync) one TRUNCATE per table, as soon as the pipeline accepts. */
static void try_begin(Snapshot *s)
{
    Change c;

    if (s->begun || !s->planned || s->phase != SNAPSHOT_RUNNING ||
        !pipeline_can_accept(s->pipeline))
        return;
    memset(&c, 0, sizeof c);
    c.kind = CHANGE_BEGIN;
    c.lsn = s->consistent_lsn;
    frame(s, &c, CHANGE_SNAP_ROW);
    if (!submit(s, &c))
        return;
    for (size_t i = 0; s->resync && i < s->n_tables; i++) {
        memset(&c, 0, sizeof c);
        c.kind = CHANGE_TRUNCATE;
        c.lsn = s->row_lsn;
        c.schema = s->tables[i].t.schema_s;
        c.table = s->tables[i].t.table_s;
        frame(s, &c, CHANGE_SNAP_ROW);
        if (!submit(s, &c))
            return;
    }
    s->begun = true;
    dispatch(s);
}

/* Parses and submits the row held back. */
static bool submit_held(Snapshot *s, uint8_t mark)
{
    Change c;
    PfError err;
    bool ok = snap_row_parse(&s->parser, &s->tables[s->held_table].t, s->held, (size_t)s->held_len,
                             &c, &err);

    if (ok) {
        c.lsn = s->row_lsn;
        frame(s, &c, mark);
        ok = submit(s, &c);
    } else {
        snapshot_fail(s, &err);
    }
    if (s->held) {
        PQfreemem(s->held);
        s->held = NULL;
    }
    return ok;
}

/* Takes ownership of a row of w's range: submits the one held before, holds this one. */
static bool take_row(Snapshot *s, Worker *w, char *data, int len)
{
    size_t table = s->ranges[w->range].table;

    if (s->held && !submit_held(s, CHANGE_SNAP_ROW)) {
        PQfreemem(data);
        return false;
    }
    s->held = data;
    s->held_len = len;
    s->held_table = table;
    s->tables[table].rows++;
    s->rows++;
    return true;
}

static void finish(Snapshot *s)
{
    Change c;
    double secs;

    if (s->held && !submit_held(s, CHANGE_SNAP_LAST))
        return;
    memset(&c, 0, sizeof c);
    c.kind = CHANGE_COMMIT;
    c.lsn = s->consistent_lsn;
    frame(s, &c, CHANGE_SNAP_ROW);
    if (!submit(s, &c))
        return;
    s->phase = SNAPSHOT_SUBMITTED;
    s->done_mono = clock_mono_us();
    secs = (double)(s->done_mono - s->started_mono) / USECS_PER_SEC;
    log_info(COMPONENT,
             "read %llu rows of %zu table%s in %.1f s (%.0f rows/s); waiting until "
             "every sink holds them durably",
             (unsigned long long)s->rows, s->n_tables, s->n_tables == 1 ? "" : "s", secs,
             secs > 0 ? (double)s->rows / secs : 0.0);
}

/* ---- ranges ---------------------------------------------------------------- */

static void start_range(Worker *w, size_t range)
{
    Snapshot *s = w->s;
    const Range *r = &s->ranges[range];
    const TableRun *t = &s->tables[r->table];
    Buf sql = BUF_INIT;
    char what[300];

    w->range = range;
    snap_table_append_copy(&sql, &t->t, t->only, r->first_page, r->end_page);
    snprintf(what, sizeof what, "read %s", t->t.label);
    worker_send(w, W_STARTING, sql.data, what);
    buf_free(&sql);
}

/* Gives idle workers ranges; closes those with none left; finishes when all are done. */
static void dispatch(Snapshot *s)
{
    bool all_done = true;

    if (s->phase != SNAPSHOT_RUNNING || !s->planned || !s->begun)
        return;
    for (size_t i = 0; i < s->n_workers && s->phase == SNAPSHOT_RUNNING; i++) {
        Worker *w = &s->workers[i];

        if (w->state == W_IDLE) {
            if (s->next_range < s->n_ranges) {
                start_range(w, s->next_range++);
            } else {
                worker_close(w);
                w->state = W_DONE;
            }
        }
        if (w->state != W_DONE)
            all_done = false;
    }
    if (all_done && s->phase == SNAPSHOT_RUNNING)
        finish(s);
}

/* ---- results and rows ------------------------------------------------------ */

static void command_done(Worker *w, PGresult *res)
{
    Snapshot *s = w->s;
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    PfError err;

    switch (w->state) {
    case W_IMPORTING:
        if (st != PGRES_COMMAND_OK) {
            command_failed(w, res, "import the slot's snapshot");
            return;
        }
        log_debug(COMPONENT, "connection %d imported snapshot %s", w->id, s->name);
        if (!s->planning) {
            send_plan(w);
            return;
        }
        w->state = W_IDLE;
        w->deadline = TIME_NEVER;
        dispatch(s);
        break;
    case W_PLANNING:
        if (st != PGRES_TUPLES_OK) {
            command_failed(w, res, "size the tables for the snapshot");
            return;
        }
        if (!read_plan(s, res, &err)) {
            snapshot_fail(s, &err);
            return;
        }
        s->planned = true;
        w->state = W_IDLE;
        w->deadline = TIME_NEVER;
        try_begin(s);
        break;
    case W_STARTING:
    case W_ENDING:
        if (st != PGRES_COMMAND_OK) {
            char what[300];
            snprintf(what, sizeof what, "read %s", s->tables[s->ranges[w->range].table].t.label);
            command_failed(w, res, what);
            return;
        }
        s->tables[s->ranges[w->range].table].ranges_done++;
        w->state = W_IDLE;
        w->deadline = TIME_NEVER;
        dispatch(s);
        break;
    default:
        break;
    }
    if (s->phase == SNAPSHOT_RUNNING && w->conn)
        worker_watch(w);
}

static void drain_rows(Worker *w);

/*
 * Collects the running command's results (consume: read the socket first).
 * The command is over when PQgetResult returns NULL; a COPY_OUT result
 * starts the rows instead.
 */
static void read_results(Worker *w, bool consume)
{
    if (consume && !PQconsumeInput(w->conn)) {
        worker_failed(w, "read from PostgreSQL");
        return;
    }
    while (!PQisBusy(w->conn)) {
        PGresult *res = PQgetResult(w->conn);

        if (!res) {
            PGresult *done = w->result;

            w->result = NULL;
            command_done(w, done);
            PQclear(done);
            return;
        }
        if (PQresultStatus(res) == PGRES_COPY_OUT) {
            PQclear(res);
            w->state = W_COPYING;
            drain_rows(w);
            return;
        }
        if (w->result && PQresultStatus(w->result) == PGRES_FATAL_ERROR) {
            PQclear(res);
        } else {
            PQclear(w->result);
            w->result = res;
        }
    }
    worker_watch(w);
}

/* Reads rows while the pipeline accepts them, at most ROWS_PER_TURN. */
static void drain_rows(Worker *w)
{
    Snapshot *s = w->s;
    int handled = 0;

    w->buffered = true;
    while (handled < ROWS_PER_TURN) {
        char *data = NULL;
        int len;

        if (!can_read_rows(s))
            break;
        len = PQgetCopyData(w->conn, &data, 1);
        if (len > 0) {
            if (!take_row(s, w, data, len))
                return;
            handled++;
            continue;
        }
        w->buffered = false;
        if (len == 0)
            break;
        if (len == -1) {
            w->state = W_ENDING;
            read_results(w, false);
            return;
        }
        worker_failed(w, "read rows");
        return;
    }
    worker_watch(w);
}

static void on_worker_socket(void *arg, int fd, unsigned events)
{
    Worker *w = arg;
    int rc;

    (void)fd;
    if (!w->conn || w->s->phase != SNAPSHOT_RUNNING)
        return;
    if (w->state == W_CONNECTING) {
        worker_continue_connect(w);
        return;
    }
    if (events & LOOP_WRITE) {
        rc = PQflush(w->conn);
        if (rc < 0) {
            worker_failed(w, "send to PostgreSQL");
            return;
        }
        w->want_write = rc == 1;
    }
    if (events & (LOOP_READ | LOOP_ERROR)) {
        switch (w->state) {
        case W_COPYING:
            if (!PQconsumeInput(w->conn)) {
                worker_failed(w, "read rows");
                return;
            }
            drain_rows(w);
            return;
        case W_IDLE:
            /* Nothing is expected; a broken connection shows here. */
            if (!PQconsumeInput(w->conn) || PQstatus(w->conn) == CONNECTION_BAD) {
                worker_failed(w, "keep the snapshot connection");
                return;
            }
            break;
        default:
            read_results(w, true);
            return;
        }
    }
    worker_watch(w);
}

/* ---- progress ------------------------------------------------------------- */

static double elapsed_s(const Snapshot *s, TimeUs now)
{
    TimeUs end = s->done_mono ? s->done_mono : now;

    return (double)(end - s->started_mono) / USECS_PER_SEC;
}

static bool table_done(const TableRun *t)
{
    return t->ranges > 0 && t->ranges_done == t->ranges;
}

/* The table's expected rows: what it read once done, else max(estimate, read); -1 unknown. */
static double table_expected(const TableRun *t)
{
    if (table_done(t))
        return (double)t->rows;
    if (t->estimate < 0)
        return -1;
    return t->estimate > (double)t->rows ? t->estimate : (double)t->rows;
}

static double total_expected(const Snapshot *s)
{
    double total = 0;

    for (size_t i = 0; i < s->n_tables; i++) {
        double e = table_expected(&s->tables[i]);
        if (e < 0)
            return -1;
        total += e;
    }
    return total;
}

static void log_progress(Snapshot *s, TimeUs now)
{
    Buf line = BUF_INIT;
    double secs = elapsed_s(s, now);
    double rate = secs > 0 ? (double)s->rows / secs : 0;
    double total = s->planned ? total_expected(s) : -1;

    if (!s->planned) {
        log_info(COMPONENT, "connecting and importing snapshot %s (%.0f s)", s->name, secs);
        return;
    }
    buf_printf(&line, "%llu", (unsigned long long)s->rows);
    if (total >= 0)
        buf_printf(&line, " of ~%.0f rows (%.0f%%)", total,
                   total > 0 ? 100.0 * (double)s->rows / total : 100.0);
    else
        buf_append_str(&line, " rows");
    buf_printf(&line, ", %.0f rows/s", rate);
    if (total >= 0 && rate > 0)
        buf_printf(&line, ", ETA %.0f s", ((double)total - (double)s->rows) / rate);
    for (size_t i = 0; i < s->n_tables; i++) {
        const TableRun *t = &s->tables[i];
        double e = table_expected(t);

        buf_printf(&line, "%s %s %llu", i ? "," : ";", t->t.label, (unsigned long long)t->rows);
        if (table_done(t))
            buf_append_str(&line, " done");
        else if (e >= 0)
            buf_printf(&line, "/~%.0f", e);
    }
    log_info(COMPONENT, "%s", line.data);
    buf_free(&line);
}

/* ---- public ------------------------------------------------------------------ */

Snapshot *snapshot_new(const Config *cfg, Loop *loop, Pipeline *pipeline, const Catalog *catalog,
                       const SnapshotParams *params)
{
    Snapshot *s = xcalloc(1, sizeof *s);
    Buf options = BUF_INIT;
    char lsn[LSN_TEXT_SIZE];

    s->cfg = cfg;
    s->loop = loop;
    s->pipeline = pipeline;
    s->slot = xstrdup(params->slot);
    s->name = xstrdup(params->snapshot_name);
    /* A statement_timeout of the DSN must not cut a long COPY short. */
    buf_printf(&options, "%s -c statement_timeout=0 -c idle_in_transaction_session_timeout=0",
               params->session_options);
    s->options = options.data;
    s->consistent_lsn = params->consistent_lsn;
    s->resync = params->resync;
    s->n_tables = catalog->n_tables;
    s->tables = xcalloc(s->n_tables ? s->n_tables : 1, sizeof *s->tables);
    for (size_t i = 0; i < s->n_tables; i++)
        snap_table_init(&s->tables[i].t, &catalog->tables[i]);
    s->n_workers = cfg->source.snapshot_workers ? cfg->source.snapshot_workers : 1;
    s->workers = xcalloc(s->n_workers, sizeof *s->workers);
    s->started_mono = clock_mono_us();
    s->started_wall = clock_wall_us();
    s->next_log = s->started_mono + PROGRESS_EVERY_US;
    log_info(COMPONENT,
             "loading the existing rows of %zu table%s at %s (snapshot %s) on %zu "
             "connection%s%s",
             s->n_tables, s->n_tables == 1 ? "" : "s", lsn_format(s->consistent_lsn, lsn), s->name,
             s->n_workers, s->n_workers == 1 ? "" : "s",
             s->resync ? "; the sinks' earlier rows are truncated first" : "");
    for (size_t i = 0; i < s->n_workers; i++) {
        Worker *w = &s->workers[i];

        w->s = s;
        w->id = (int)i + 1;
        w->fd = -1;
        w->deadline = TIME_NEVER;
    }
    for (size_t i = 0; i < s->n_workers && s->phase == SNAPSHOT_RUNNING; i++)
        worker_connect(&s->workers[i]);
    return s;
}

void snapshot_free(Snapshot *s)
{
    if (!s)
        return;
    close_all(s);
    for (size_t i = 0; i < s->n_tables; i++)
        snap_table_clear(&s->tables[i].t);
    snap_row_parser_free(&s->parser);
    free(s->tables);
    free(s->ranges);
    free(s->workers);
    free(s->slot);
    free(s->name);
    free(s->options);
    free(s);
}

TimeUs snapshot_poll(Snapshot *s, TimeUs now)
{
    TimeUs next = TIME_NEVER;

    if (s->phase != SNAPSHOT_RUNNING)
        return TIME_NEVER;
    try_begin(s);
    for (size_t i = 0; i < s->n_workers && s->phase == SNAPSHOT_RUNNING; i++) {
        Worker *w = &s->workers[i];

        if (w->conn && now >= w->deadline) {
            PfError err;
            err_set(&err, ERR_RETRY,
                    "could not %s: snapshot connection %d got no answer within "
                    "%d s",
                    w->state == W_CONNECTING ? "connect to PostgreSQL" : "prepare the snapshot",
                    w->id, (int)(STEP_TIMEOUT_US / USECS_PER_SEC));
            snapshot_fail(s, &err);
            break;
        }
        if (w->state == W_COPYING && w->buffered && can_read_rows(s))
            drain_rows(w);
        else if (w->conn && w->state != W_CONNECTING)
            worker_watch(w); /* reading resumes once the pipeline accepts again */
        if (w->conn && w->deadline < next)
            next = w->deadline;
    }
    if (s->phase != SNAPSHOT_RUNNING)
        return TIME_NEVER;
    if (now >= s->next_log) {
        log_progress(s, now);
        s->next_log = now + PROGRESS_EVERY_US;
    }
    return next < s->next_log ? next : s->next_log;
}

SnapshotPhase snapshot_phase(const Snapshot *s)
{
    return s->phase;
}

const char *snapshot_phase_name(SnapshotPhase phase)
{
    switch (phase) {
    case SNAPSHOT_RUNNING:
        return "reading";
    case SNAPSHOT_SUBMITTED:
        return "flushing";
    case SNAPSHOT_DONE:
        return "done";
    case SNAPSHOT_FAILED:
        return "failed";
    case SNAPSHOT_ABORTED:
        return "aborted";
    }
    return "unknown";
}

const PfError *snapshot_error(const Snapshot *s)
{
    return s->phase == SNAPSHOT_FAILED ? &s->error : NULL;
}

Lsn snapshot_consistent_lsn(const Snapshot *s)
{
    return s->consistent_lsn;
}

void snapshot_abort(Snapshot *s)
{
    if (s->phase != SNAPSHOT_RUNNING && s->phase != SNAPSHOT_SUBMITTED)
        return;
    if (s->phase == SNAPSHOT_RUNNING)
        log_info(COMPONENT, "stopped after %llu rows; the snapshot starts over at the next start",
                 (unsigned long long)s->rows);
    s->phase = SNAPSHOT_ABORTED;
    close_all(s);
}

void snapshot_mark_done(Snapshot *s)
{
    TimeUs now = clock_mono_us();
    double secs = (double)(now - s->started_mono) / USECS_PER_SEC;

    s->phase = SNAPSHOT_DONE;
    log_info(COMPONENT,
             "done: %llu rows of %zu table%s durable in every sink after %.1f s "
             "(%.0f rows/s)",
             (unsigned long long)s->rows, s->n_tables, s->n_tables == 1 ? "" : "s", secs,
             secs > 0 ? (double)s->rows / secs : 0.0);
}

static void append_number_or_null(Buf *out, double v)
{
    if (v < 0)
        buf_append_str(out, "null");
    else
        buf_printf(out, "%.0f", v);
}

void snapshot_render_json(const Snapshot *s, Buf *out, TimeUs now)
{
    char lsn[LSN_TEXT_SIZE];
    const char *phase = snapshot_phase_name(s->phase);
    double secs = elapsed_s(s, now);
    double rate = secs > 0 ? (double)s->rows / secs : 0;
    double total = s->planned ? total_expected(s) : -1;

    buf_append_str(out, "\"snapshot\":{\"state\":");
    buf_append_json_string(out, phase, strlen(phase));
    buf_printf(out, ",\"consistent_lsn\":\"%s\",\"workers\":%zu,\"rows\":%llu,\"estimated_rows\":",
               lsn_format(s->consistent_lsn, lsn), s->n_workers, (unsigned long long)s->rows);
    append_number_or_null(out, total);
    buf_printf(out, ",\"elapsed_seconds\":%.1f,\"rows_per_second\":%.0f,\"eta_seconds\":", secs,
               rate);
    if (s->phase == SNAPSHOT_RUNNING && total >= 0 && rate > 0)
        buf_printf(out, "%.0f", (total - (double)s->rows) / rate);
    else if (s->phase == SNAPSHOT_RUNNING)
        buf_append_str(out, "null");
    else
        buf_append_str(out, "0");
    buf_append_str(out, ",\"tables\":[");
    for (size_t i = 0; i < s->n_tables; i++) {
        const TableRun *t = &s->tables[i];

        buf_append_str(out, i ? ",{\"table\":" : "{\"table\":");
        buf_append_json_string(out, t->t.label, strlen(t->t.label));
        buf_printf(out, ",\"rows\":%llu,\"estimated_rows\":", (unsigned long long)t->rows);
        append_number_or_null(out, s->planned ? table_expected(t) : -1);
        buf_printf(out, ",\"ranges\":%zu,\"ranges_done\":%zu,\"done\":%s}", t->ranges,
                   t->ranges_done, table_done(t) ? "true" : "false");
    }
    buf_append_str(out, "]}");
}
