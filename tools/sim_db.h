/*
 * sim_db.h - the shop simulator's libpq helpers: connecting, checking that
 * the shop schema is there, running statements, and COPY FROM STDIN.
 *
 * Errors are PfError values: ERR_CONFIG for a malformed DSN (bad usage,
 * exit 2), ERR_FATAL for everything the server or the network refuses
 * (exit 1), with a hint when the fix is known.
 */
#ifndef PGFAN_SIM_DB_H
#define PGFAN_SIM_DB_H

#include "../common/buf.h"
#include "../common/error.h"

#include <libpq-fe.h>

#include <stdbool.h>
#include <stddef.h>

/*
 * Connects to dsn (a libpq conninfo string or URI) with application_name
 * pgfan-shop-sim unless dsn sets one, and sets TimeZone to UTC. Returns the
 * connection (close with PQfinish) or NULL with err set.
 */
PGconn *simdb_connect(const char *dsn, PfError *err);

/*
 * Checks that the shop's tables and columns (deploy/shop/schema.sql) exist
 * in the connection's search path. On failure err says what is missing and
 * hints to load schema.sql.
 */
bool simdb_check_schema(PGconn *conn, PfError *err);

/* Runs SQL (one or more commands); what names it in the message
 * ("could not <what>: <server message>"). */
bool simdb_exec(PGconn *conn, const char *what, const char *sql, PfError *err);

/*
 * Runs a query (with text parameters, n_params may be 0) and returns its
 * result (PGRES_TUPLES_OK or PGRES_COMMAND_OK; PQclear it), or NULL with err
 * set. what names the query in the message ("could not <what>: ...").
 */
PGresult *simdb_query(PGconn *conn, const char *what, const char *sql, int n_params,
                      const char *const *params, PfError *err);

/* Same for a statement prepared with PQprepare under name. */
PGresult *simdb_exec_prepared(PGconn *conn, const char *what, const char *name, int n_params,
                              const char *const *params, PfError *err);

/* Prepares sql under name. */
bool simdb_prepare(PGconn *conn, const char *name, const char *sql, PfError *err);

/*
 * COPY ... FROM STDIN in text format. Rows are appended to row (one line
 * per row, columns separated by tabs, ending in '\n'), then handed over with
 * simcopy_row_end(); the data goes to the server in chunks of about 256 kB.
 */
typedef struct SimCopy {
    PGconn *conn;   /* borrowed */
    const char *table;
    Buf row;        /* the rows not sent yet */
    long long rows; /* rows so far */
} SimCopy;

bool simcopy_begin(SimCopy *c, PGconn *conn, const char *table, const char *columns,
                   PfError *err);
bool simcopy_row_end(SimCopy *c, PfError *err);
/* Sends the rest and ends the COPY; frees the buffer either way. */
bool simcopy_end(SimCopy *c, PfError *err);
/* Aborts a COPY after an error of the caller (no-op if already ended). */
void simcopy_abort(SimCopy *c);

#endif
