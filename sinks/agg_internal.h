/*
 * agg_internal.h - what the aggregates sink's files share:
 *
 *   aggregates.c  SinkOps, change -> weighted rows, batches, durability;
 *   agg_start.c   start-up and reconnection: a chain of asynchronous
 *                 commands (connection, lock, source tables, session, state);
 *   agg_history.c its history steps: catalog, definitions, probes, build;
 *   agg_sql.c     the SQL text; agg_conn.c the asynchronous connection.
 *
 * Positions. Every change the sink takes has a position (commit end LSN of
 * its transaction, its own LSN, its rank among changes with that same LSN:
 * a multi-row insert shares one). Positions grow in stream order, and the
 * state row holds the position of the last change applied, in the same
 * PostgreSQL transaction as the deltas. A change at or before it is
 * skipped, so a replayed transaction changes nothing, and one larger than a
 * batch resumes after its last applied change.
 */
#ifndef PGFAN_AGG_INTERNAL_H
#define PGFAN_AGG_INTERNAL_H

#include "../common/backoff.h"
#include "../common/buf.h"
#include "agg_conn.h"
#include "sink.h"

#include <stdint.h>

#define AGG_LOG "sink.aggregates"

typedef struct AggPos {
    Lsn commit;   /* end LSN of the transaction */
    Lsn change;   /* the change's own LSN */
    uint32_t seq; /* rank among changes with the same LSN in that transaction */
} AggPos;

/* A source table that feeds aggregates, and its work table. */
typedef struct AggWork {
    const TableName *table; /* borrowed from the config */
    char temp[32];          /* pg_temp.<temp>: the weighted rows of a batch */
    char **cols;            /* the source table's columns, in attnum order */
    char **types;           /* format_type() of each */
    size_t n_cols;
    size_t *aggs;           /* indexes into AggSink.aggs */
    size_t n_aggs;
} AggWork;

/* Start-up steps, in order (agg_start.c, agg_history.c). */
typedef enum AggStep {
    ST_CONNECT = 0,
    ST_SERVER,
    ST_LOCK,
    ST_SOURCES,
    ST_COLUMNS,
    ST_CATALOG,
    ST_LOAD,
    ST_PROBE,
    ST_TYPES,
    ST_SLOT,
    ST_BUILD,
    ST_SESSION,
    ST_STATE,
    ST_DONE,
} AggStep;

typedef enum AggAction {
    AGG_KEEP = 0,     /* up to date */
    AGG_CREATE,       /* new: create and fill */
    AGG_REFILL,       /* rebuild, same columns: empty and fill (views on it survive) */
    AGG_REPLACE,      /* rebuild, other columns: drop, create and fill */
} AggAction;

typedef struct AggState {
    const AggregateDef *def; /* borrowed from the config */
    size_t work;             /* its source table */
    Lsn snap_lsn;            /* history snapshot's WAL position (0: none) */
    AggAction action;        /* at start-up */
    char **key_types;        /* from the probe */
    char **measure_types;
} AggState;

typedef struct AggTrunc {
    size_t work;  /* truncated table */
    uint64_t xid; /* its transaction */
} AggTrunc;

/* Weighted rows on their way to PostgreSQL, as COPY text per work table. */
typedef struct AggBatch {
    Buf *copy;            /* one per work table */
    size_t *work_rows;
    size_t rows;
    size_t bytes;
    AggTrunc *truncs;     /* segment k ends with truncs[k] */
    size_t n_truncs;
    bool has_last;
    AggPos last;          /* position of its last change */
    Lsn min_commit;       /* smallest transaction end LSN among its changes */
    Lsn durable_after;    /* last COMMIT seen before it closed: durable once it commits */
    TimeUs opened;        /* monotonic time of its first row */
} AggBatch;

typedef enum AggPhase {
    AGG_STARTING = 0, /* start-up chain running */
    AGG_READY,        /* streaming */
    AGG_WAITING,      /* connection lost or transient error: reconnect at retry_at */
    AGG_FAILED,
} AggPhase;

typedef struct AggSink {
    const Config *cfg;
    Loop *loop;
    const SourceInfo *source;
    const char *schema; /* borrowed from the config */
    const char *slot;

    AggWork *works;
    size_t n_works;
    AggState *aggs;
    size_t n_aggs;

    AggConn *conn;
    AggPhase phase;
    int step;           /* 0: connect (agg_start.c) */           /* start-up step (agg_start.c) */
    size_t step_i;      /* its current item (probes) */
    TimeUs step_due;    /* > 0: run the step again at this time (waiting for the slot) */
    bool started;       /* start-up completed once: reconnects resume */
    Backoff backoff;
    TimeUs retry_at;

    AggBatch fill;      /* taking changes */
    AggBatch flight;    /* being applied */
    bool in_flight;
    TimeUs flight_started;
    int flight_step;    /* 0: BEGIN + state check, 1..: COPY, then apply */
    size_t flight_work; /* next work table to COPY */
    int *stmt_agg;      /* statement index -> aggregate (-1: none) of the apply command */
    size_t n_stmt_agg;
    bool flushing;

    AggPos applied;     /* the state row */
    AggPos accepted;    /* last change taken (>= applied) */

    /* the transaction being received */
    bool in_txn;
    Lsn txn_end;
    uint64_t txn_xid;
    Lsn prev_change;
    uint32_t seq;
    bool resuming;      /* its earlier changes were applied before a restart */

    uint64_t xid_ref;   /* a recent full xid: 32-bit xids are placed near it */
    Lsn durable;

    Buf sql;
    Buf line_old, line_new;

    /* Reloadable (batch bounds and linger, agg_reconfigure). */
    size_t batch_rows, batch_bytes;
    TimeUs batch_linger;

    uint64_t events, rows_applied, batches, bytes, retries, errors;
    bool failed;
    PfError fatal;
    char last_error[256];
} AggSink;

/* ---- aggregates.c ---- */

/* Stops for good with err (the first failure wins). */
void agg_fail(AggSink *s, const PfError *err);

/* A transient failure: close, then reconnect after a backoff. */
void agg_retry(AggSink *s, const PfError *err);

/* Position order. */
int agg_pos_cmp(const AggPos *a, const AggPos *b);

/* ARRAY['name', ...]::text[] of the configured aggregates. */
void agg_append_name_array(const AggSink *s, Buf *b);

/* ---- agg_start.c ---- */

/* Runs the next start-up (or resume) step; called when the connection is idle. */
void agg_start_step(AggSink *s);

/*
 * The start-up (or a resume after a reconnect) read the state row: checks
 * the batch in flight against it (committed, to resend, or moved by
 * someone else) and starts streaming.
 */
void agg_start_resumed(AggSink *s, const AggPos *state_row);

/* Places a 32-bit xid next to s->xid_ref (the epoch), keeping xid_ref recent. */
uint64_t agg_full_xid(AggSink *s, uint32_t xid);

/* Sends a start-up step's command; a failure to send is retried. */
void agg_step_send(AggSink *s, const char *sql, AggConnDone done);

/* A failed step's error (NULL: none): transient ones retry, others stop. True if failed. */
bool agg_step_failed(AggSink *s, const PfError *err, const char *what);

/* Moves to step and runs it when the connection is idle. */
void agg_step_next(AggSink *s, int step);

/* ---- agg_history.c ---- */

/* Runs step CATALOG .. BUILD. */
void agg_history_step(AggSink *s);

/* Parses "X/X" text of a pg_lsn column. */
bool agg_parse_lsn(const char *text, Lsn *out);

#endif
