/*
 * snapshot.h - the initial snapshot ([source] snapshot = initial): every
 * [source] table read under the snapshot the new slot exported and sent to
 * the sinks before streaming starts.
 *
 * The replication client creates the slot with (SNAPSHOT 'export') and keeps
 * its connection idle (the exported snapshot lives until the next command
 * on it); this module then opens [source] snapshot_workers normal
 * connections (the [source] dsn with replication off and the session
 * settings that shape wal2json's values), imports the snapshot on each
 * (BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION
 * SNAPSHOT), splits every table into page ranges (ctid ranges: TID range
 * scans) and lets the connections COPY them, a range at a time, all on the
 * loop. Rows stream: a connection is not read while the pipeline cannot
 * accept (PostgreSQL waits on its socket), so memory stays bounded.
 *
 * What the sinks see: one pseudo-transaction. BEGIN; one TRUNCATE per table
 * when params->resync (the sinks may hold rows of an earlier slot); an
 * INSERT per row, marked CHANGE_SNAP_ROW, the very last one CHANGE_SNAP_LAST
 * (one row is held back until the next arrives, so the last is known); then
 * COMMIT. Every change has end_lsn = the consistent point and the rows
 * lsn = the slot's starting position minus one (change.h says why). As one
 * transaction, the snapshot is durable in a sink exactly when the sink's
 * durable position reaches the consistent point, and the pipeline's
 * confirmed position reaches it when every sink holds it: that is when the
 * owner may mark it done and start streaming.
 *
 * Failures (a lost connection, an error of a COPY) end the snapshot in
 * SNAPSHOT_FAILED: an exported snapshot cannot be imported again, so the
 * owner drops the slot and starts over. Rows already sent stay in the sinks
 * (at-least-once); the next attempt's TRUNCATEs and newer versions supersede
 * them.
 *
 * Owns its connections and tables; borrows config, loop and pipeline.
 */
#ifndef PGFAN_SNAPSHOT_H
#define PGFAN_SNAPSHOT_H

#include "../common/buf.h"
#include "../common/error.h"
#include "../common/loop.h"
#include "../config/config.h"
#include "../sinks/sink.h"
#include "pipeline.h"

typedef enum SnapshotPhase {
    SNAPSHOT_RUNNING = 0, /* connecting, importing, reading */
    SNAPSHOT_SUBMITTED,   /* every row and the COMMIT went to the pipeline */
    SNAPSHOT_DONE,        /* the owner saw it durable in every sink */
    SNAPSHOT_FAILED,      /* see snapshot_error(); connections closed */
    SNAPSHOT_ABORTED,     /* snapshot_abort(): shutdown */
} SnapshotPhase;

typedef struct SnapshotParams {
    const char *slot;          /* for restart_lsn and logs */
    const char *snapshot_name; /* exported by CREATE_REPLICATION_SLOT */
    Lsn consistent_lsn;
    bool resync;                 /* TRUNCATE every table first */
    const char *session_options; /* libpq "options" of the sessions (repl_session_options) */
} SnapshotParams;

typedef struct Snapshot Snapshot;

/* Starts connecting at once. catalog: the [source] tables (copied). */
Snapshot *snapshot_new(const Config *cfg, Loop *loop, Pipeline *pipeline, const Catalog *catalog,
                       const SnapshotParams *params);
void snapshot_free(Snapshot *s);

/*
 * Before-sleep work: resume reading after backpressure, time-outs, the
 * progress log line. Returns the next deadline.
 */
TimeUs snapshot_poll(Snapshot *s, TimeUs now);

SnapshotPhase snapshot_phase(const Snapshot *s);
const char *snapshot_phase_name(SnapshotPhase phase);
const PfError *snapshot_error(const Snapshot *s); /* set in SNAPSHOT_FAILED */
Lsn snapshot_consistent_lsn(const Snapshot *s);

/* Shutdown: stops reading and closes the connections (nothing more is submitted). */
void snapshot_abort(Snapshot *s);

/* The owner saw the snapshot durable in every sink: logs the summary. */
void snapshot_mark_done(Snapshot *s);

/* "snapshot":{...}: phase, rows, estimate, rate, ETA, per table (for the status socket). */
void snapshot_render_json(const Snapshot *s, Buf *out, TimeUs now);

#endif
