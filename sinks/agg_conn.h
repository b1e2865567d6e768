/*
 * agg_conn.h - one asynchronous libpq connection on the event loop, for
 * the aggregates sink.
 *
 * A normal (non-replication) connection, opened with PQconnectStartParams
 * and driven by PQconnectPoll, then one command at a time: a query string
 * (several statements allowed) optionally followed by COPY data when the
 * statement is a COPY ... FROM STDIN. Everything is non-blocking: the
 * socket is watched for reading, and for writing while libpq holds unsent
 * bytes; COPY data is pushed in chunks only as fast as the socket drains,
 * so libpq never buffers a whole batch.
 *
 * The session pins the settings that make value text and expressions mean
 * the same thing every time: DateStyle ISO, TimeZone UTC, IntervalStyle
 * iso_8601, standard_conforming_strings on (the DSN's own options come
 * first, so these win). Server notices are logged at debug level.
 *
 * Completion is reported through one callback per command, with the last
 * result that carried rows (borrowed for the callback) and, on failure, an
 * error whose kind says what to do: ERR_RETRY for a lost connection and
 * for transient SQLSTATEs (serialization failure, deadlock, shutdown,
 * PGF01), ERR_FATAL otherwise. *failed_stmt is the 0-based index of the
 * statement that failed in a multi-statement string (-1: none or unknown).
 */
#ifndef PGFAN_AGG_CONN_H
#define PGFAN_AGG_CONN_H

#include "../common/error.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct Loop Loop;
typedef struct AggConn AggConn;

/*
 * rows: the last PGRES_TUPLES_OK result of the command (NULL if none),
 * valid during the call only. err: NULL on success. sqlstate: the
 * server's code on failure ("" when none).
 */
typedef void (*AggConnDone)(void *arg, const PGresult *rows, const PfError *err,
                            int failed_stmt, const char *sqlstate);

/* loop may be NULL (tests drive agg_conn_pump themselves). */
AggConn *agg_conn_new(Loop *loop, const char *dsn);
void agg_conn_free(AggConn *c);

/*
 * Starts connecting; done(arg, NULL, err, -1, "") reports the outcome
 * (ERR_RETRY when the server is unreachable, ERR_CONFIG when the DSN does
 * not parse or authentication fails).
 */
bool agg_conn_connect(AggConn *c, AggConnDone done, void *arg, PfError *err);

/* Closes the connection (no callback for a command in progress). */
void agg_conn_close(AggConn *c);

/* Connected and no command in progress. */
bool agg_conn_idle(const AggConn *c);
bool agg_conn_connected(const AggConn *c);
/* Neither connected nor connecting (never opened, closed, or lost). */
bool agg_conn_closed(const AggConn *c);

/*
 * Sends sql. copy (may be NULL) is the data for a COPY FROM STDIN
 * statement in it; it is borrowed until done is called. Returns false
 * (ERR_RETRY) when the command cannot be sent (connection lost).
 */
bool agg_conn_send(AggConn *c, const char *sql, const char *copy, size_t copy_len,
                   AggConnDone done, void *arg, PfError *err);

/* Drives the connection (also called from the socket callback). */
void agg_conn_pump(AggConn *c);

/* The libpq connection, for PQescape* (NULL when not connected). */
PGconn *agg_conn_pg(const AggConn *c);

#endif
