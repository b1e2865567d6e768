/*
 * pipeline.h - transaction tracker and router: from decoded changes to
 * sinks, and from sinks' durable positions to the one LSN PostgreSQL may
 * forget.
 *
 * The pipeline forwards every change to every sink in stream order and keeps
 * a FIFO of the transactions it has seen committed but not yet confirmed:
 * {end_lsn, commit_time}. The confirmed position is the end_lsn of the
 * longest prefix of that FIFO whose transactions every sink reports durable;
 * it never moves backwards. When nothing is in flight (no open transaction,
 * FIFO empty), a keepalive's WAL end may be confirmed too, so idle and
 * fully-filtered slots advance.
 *
 * After a lost connection the server resends every transaction after the
 * confirmed position. Transactions the pipeline has already forwarded
 * (end_lsn <= the last commit it saw) are not forwarded again: the sinks
 * hold them and will make them durable. A transaction that was open when
 * the connection broke is abandoned: it arrives again from its BEGIN.
 *
 * Owns the FIFO; borrows the sinks (the caller opens and closes them).
 */
#ifndef PGFAN_PIPELINE_H
#define PGFAN_PIPELINE_H

#include "../common/error.h"
#include "../decoder/change.h"
#include "../sinks/sink.h"

typedef struct Pipeline Pipeline;

/* max_inflight_txns bounds the FIFO: when it is full, can_accept is false. */
Pipeline *pipeline_new(size_t max_inflight_txns);
void pipeline_free(Pipeline *p);

/* Adds a sink (borrowed; must outlive the pipeline). Call before the first submit. */
void pipeline_add_sink(Pipeline *p, const SinkOps *ops, void *self);

/*
 * Hands the source tables' catalog to every sink that checks it (SinkOps
 * prepare) before streaming starts. False with the first sink's error,
 * prefixed with "sink=<name>" (ERR_CONFIG: the operator must fix something).
 */
bool pipeline_prepare(Pipeline *p, const Catalog *catalog, PfError *err);

/* Hands a reloaded configuration to every sink that takes reloadable
 * options (SinkOps reconfigure). */
void pipeline_reconfigure(Pipeline *p, const Config *cfg);

/*
 * Forwards one decoded change. Returns false when a sink failed (err set by
 * the sink, prefixed with "sink=<name>") or the stream is inconsistent
 * (COMMIT without BEGIN, commit LSNs going backwards): ERR_FATAL.
 */
bool pipeline_submit(Pipeline *p, const Change *change, PfError *err);

/* False while a sink is full or the FIFO is: stop reading from PostgreSQL. */
bool pipeline_can_accept(const Pipeline *p);

/* True between a forwarded BEGIN and its COMMIT. */
bool pipeline_in_transaction(const Pipeline *p);

/*
 * Polls every sink, then advances the confirmed position. *next_deadline is
 * the earliest deadline any sink asked for. False on a fatal sink error.
 */
bool pipeline_poll(Pipeline *p, TimeUs now, TimeUs *next_deadline, PfError *err);

/* A keepalive from the server: its WAL end may be confirmed when idle. */
void pipeline_note_keepalive(Pipeline *p, Lsn wal_end);

/* The connection was lost: forget the open transaction (it will be resent). */
void pipeline_stream_restarted(Pipeline *p);

/* Asks every sink to make everything durable now (shutdown). */
void pipeline_flush(Pipeline *p);

/* Position that may be reported to PostgreSQL as flushed. */
Lsn pipeline_confirmed_lsn(const Pipeline *p);

/* End LSN of the last COMMIT received (0 before any). */
Lsn pipeline_last_commit_lsn(const Pipeline *p);

/* True when every committed transaction received is confirmed. */
bool pipeline_drained(const Pipeline *p);

/* Transactions received (committed or open) but not confirmed. */
size_t pipeline_inflight(const Pipeline *p);

/*
 * Replication lag in microseconds: now_wall minus the commit time of the
 * oldest transaction not yet confirmed (0 when none).
 */
TimeUs pipeline_lag_us(const Pipeline *p, TimeUs now_wall);

/*
 * Commit-to-durable latency of the transactions confirmed so far: the wall
 * time at which the last sink made a transaction durable (it joined the
 * confirmed prefix) minus its commit time on the server. A Prometheus-style
 * histogram: counts[i] transactions took at most bounds[i] seconds and
 * more than bounds[i-1]; counts[n_bounds] the rest.
 */
#define PIPELINE_LATENCY_BOUNDS 14

typedef struct PipelineLatency {
    const double *bounds; /* seconds, increasing, PIPELINE_LATENCY_BOUNDS of them */
    uint64_t counts[PIPELINE_LATENCY_BOUNDS + 1];
    uint64_t count;
    double sum_s;
    TimeUs max_us;
} PipelineLatency;

const PipelineLatency *pipeline_latency(const Pipeline *p);

/* The q-quantile (0 < q <= 1) of the histogram in seconds, as Prometheus'
 * histogram_quantile computes it (linear within a bucket), but never above
 * the largest time seen; 0 when empty. */
double pipeline_latency_quantile(const PipelineLatency *lat, double q);

/*
 * Row changes and truncates forwarded, per table ("schema.table") and kind
 * (CHANGE_INSERT, CHANGE_UPDATE, CHANGE_DELETE, CHANGE_TRUNCATE), in the
 * order tables were first seen; replays the pipeline skips are not counted.
 */
size_t pipeline_table_count(const Pipeline *p);
const char *pipeline_table_name(const Pipeline *p, size_t i);
uint64_t pipeline_table_changes(const Pipeline *p, size_t i, ChangeKind kind);

/* Sink access for the status document. */
size_t pipeline_sink_count(const Pipeline *p);
const char *pipeline_sink_name(const Pipeline *p, size_t i);
void pipeline_sink_status(const Pipeline *p, size_t i, SinkStatus *out);

#endif
