/*
 * replication.h - the logical replication client (libpq, non-blocking).
 *
 * Drives one connection through the loop: connect, IDENTIFY_SYSTEM, check
 * the configured tables, check or create the slot (with snapshot = initial:
 * export a snapshot and run the initial snapshot, daemon/snapshot.h, until
 * every sink holds it durably; an existing slot whose snapshot never
 * finished is dropped and created again, daemon/snapshot_state.h), START_REPLICATION with
 * wal2json format-version 2, then stream: decode each XLogData message and
 * hand it to the pipeline, answer keepalives, and send standby status
 * updates carrying the pipeline's confirmed position (never anything
 * else). Lost connections are retried with backoff; a slot held by another
 * consumer (SQLSTATE 55006) is waited for (the standby side of
 * active/passive HA).
 *
 * Owns the connection and the decoder; borrows config, loop, pipeline and
 * source info (which it fills from IDENTIFY_SYSTEM).
 */
#ifndef PGFAN_REPLICATION_H
#define PGFAN_REPLICATION_H

#include "../common/error.h"
#include "../config/config.h"
#include "../sinks/sink.h"
#include "../common/loop.h"
#include "pipeline.h"
#include "snapshot.h"

typedef enum ReplState {
    REPL_CONNECTING = 0, /* connecting and running the start-up commands */
    REPL_SNAPSHOT,       /* the initial snapshot runs; streaming starts when it is durable */
    REPL_STREAMING,
    REPL_WAITING_FOR_SLOT, /* slot held by another consumer: standby */
    REPL_RECONNECTING,     /* connection lost or refused: waiting to retry */
    REPL_STOPPING,         /* final status update sent, ending the COPY */
    REPL_STOPPED,
    REPL_FAILED,           /* fatal error: see repl_error() */
} ReplState;

typedef struct Replication Replication;

Replication *repl_new(const Config *cfg, Loop *loop, Pipeline *pipeline, SourceInfo *source);
void repl_free(Replication *r);

/* Starts connecting (asynchronously). */
void repl_start(Replication *r);

/*
 * Before-sleep work: resume reading after backpressure, send due status
 * updates, reconnect when the backoff expired. Returns the next deadline.
 */
TimeUs repl_poll(Replication *r, TimeUs now);

/*
 * Shutdown, step 1: stop reading new transactions. An open transaction is
 * read to its COMMIT first (so a clean stop leaves no partial transaction
 * to replay). repl_reading_stopped() tells when it is done.
 */
void repl_stop_reading(Replication *r);
bool repl_reading_stopped(const Replication *r);

/*
 * Shutdown, step 2: send a final status update with the confirmed position
 * and end the COPY properly so the update reaches the server. Completion:
 * state REPL_STOPPED.
 */
void repl_finish(Replication *r);

/* A fatal error stops the client (state REPL_FAILED, error here). */
void repl_fail(Replication *r, const PfError *err);

ReplState repl_state(const Replication *r);
const char *repl_state_name(ReplState state);
const PfError *repl_error(const Replication *r); /* last error, fatal or not */

Lsn repl_received_lsn(const Replication *r);  /* highest commit/keepalive position seen */
Lsn repl_server_wal_end(const Replication *r); /* server's WAL end from the last message */
Lsn repl_sent_flush_lsn(const Replication *r); /* last flush position sent to the server */

/* The initial snapshot of this run (running or finished), or NULL; borrowed. */
const Snapshot *repl_snapshot(const Replication *r);

#endif
