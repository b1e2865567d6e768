/*
 * repl_protocol.h - what pgfan sends on the replication connection and how
 * it reads the answers (internal to daemon/, used by replication.c).
 *
 * Command texts, the interpretation of their results, the session options
 * and the binary CopyBoth messages. No I/O; a connection is only passed for
 * client-side literal escaping.
 */
#ifndef PGFAN_REPL_PROTOCOL_H
#define PGFAN_REPL_PROTOCOL_H

#include "../common/buf.h"
#include "../common/error.h"
#include "../common/lsn.h"
#include "../config/config.h"
#include "../sinks/sink.h"

#include <libpq-fe.h>

/* Catalog query: per configured table (in config order) schema, table,
 * relkind, relreplident and whether it has a primary key; NULL relkind
 * when the table does not exist. */
void repl_cmd_check_tables(Buf *out, PGconn *conn, const Config *cfg);

/* Catalog query: the columns of every configured table (config order, then
 * attnum) with type, numeric scale, key position, identity and storage; read
 * by repl_read_catalog. Run after repl_cmd_check_tables (tables exist). */
void repl_cmd_catalog(Buf *out, PGconn *conn, const Config *cfg);

/* Looks the slot up in pg_replication_slots: slot_type, plugin, database, active_pid. */
void repl_cmd_check_slot(Buf *out, PGconn *conn, const char *slot);

/* CREATE_REPLICATION_SLOT for wal2json; export_snapshot: (SNAPSHOT 'export'),
 * for the initial snapshot, else (SNAPSHOT 'nothing'). */
void repl_cmd_create_slot(Buf *out, const char *slot, bool export_snapshot);

/* Terminates the backend (a walsender left by an earlier pgfan) that holds
 * the slot, if any: run before repl_cmd_drop_slot. */
void repl_cmd_terminate_slot_holder(Buf *out, PGconn *conn, const char *slot);

/* DROP_REPLICATION_SLOT ... WAIT (until no backend holds it). */
void repl_cmd_drop_slot(Buf *out, const char *slot);

/* START_REPLICATION with wal2json format-version 2 and add-tables built from
 * the configured tables (wal2json's backslash escaping inside an SQL string
 * literal). */
void repl_cmd_start(Buf *out, const Config *cfg);

/*
 * Reads the answer of repl_cmd_check_tables: logs a warning with the
 * ALTER TABLE fix for each table without a usable replica identity, and
 * returns false with ERR_CONFIG naming every listed table that does not
 * exist (or is not a table) in dbname.
 */
bool repl_check_tables_result(const PGresult *res, const char *dbname, PfError *err);

/* Reads the answer of repl_cmd_catalog into *out (emptied first). */
void repl_read_catalog(const PGresult *res, Catalog *out);

/*
 * Turns a failed command into an error for pgfan: a slot held by another
 * consumer (55006, *busy_slot set) and unknown failures are ERR_RETRY; a
 * refused or missing output plugin and a missing REPLICATION attribute are
 * ERR_FATAL with the fix as hint. res may be NULL (then conn_message is the
 * cause). what is the action for the message ("create replication slot").
 */
void repl_classify_error(const PGresult *res, const char *conn_message, const char *slot,
                         const char *what, PfError *err, bool *busy_slot);

/* What IDENTIFY_SYSTEM says about the server. */
typedef struct IdentifyResult {
    char system_id[32];
    char dbname[64];
    Lsn xlogpos; /* the server's flush position then */
} IdentifyResult;

/*
 * Reads a successful IDENTIFY_SYSTEM. Fails with ERR_FATAL when the answer
 * is malformed or the system identifier differs from prev_system_id (when
 * that is not empty: a different or restored cluster), ERR_CONFIG when the
 * connection is not bound to a database.
 */
bool repl_read_identify(const PGresult *res, const char *prev_system_id, IdentifyResult *out,
                        PfError *err);

/*
 * Reads the answer of repl_cmd_check_slot: *exists tells whether the slot is
 * there; fails with ERR_CONFIG when it exists but is not a wal2json logical
 * slot of dbname.
 */
bool repl_read_slot(const PGresult *res, const char *slot, const char *dbname, bool *exists,
                    PfError *err);

/* Settings pgfan pins on the replication session: they change wal2json's output. */
#define REPL_SESSION_OPTIONS                                                                       \
    "-c datestyle=ISO -c timezone=UTC -c bytea_output=hex -c intervalstyle=iso_8601 "              \
    "-c extra_float_digits=3"

/*
 * The libpq "options" for the session: the DSN's own options first, then
 * REPL_SESSION_OPTIONS, so a user's -c settings (statement_timeout, ...)
 * survive while the settings that shape wal2json's output stay pinned.
 * Returns a new string (caller frees), or NULL with ERR_CONFIG when the DSN
 * does not parse.
 */
char *repl_session_options(const char *dsn, PfError *err);

/* The same with other pinned settings (the slot monitor's session). */
char *repl_session_options_pinned(const char *dsn, const char *pinned, PfError *err);

/*
 * The PQconnectStartParams arrays of every connection pgfan makes to the
 * source (replication, slot monitor, snapshot workers), NULL-terminated.
 *
 * First pgfan's TCP settings, so a dead network is noticed in about 30 s
 * rather than the kernel's two hours: keepalive probes after 10 s idle,
 * every 5 s, 3 unanswered = dead (25 s); data unacknowledged for 30 s =
 * dead (tcp_user_timeout). Then the dsn, expanded by libpq, whose keys
 * override those defaults (libpq: "array entries appearing before an
 * expanded dbname entry can be overridden by fields of the connection
 * string"), so a user's keepalives_idle=... wins. Last what pgfan decides:
 * replication (NULL: a normal connection), fallback_application_name and
 * options. The arrays point at the arguments: keep them alive until the
 * PQconnectStartParams call.
 */
#define REPL_CONN_MAX_PARAMS 10
typedef struct ReplConnParams {
    const char *keys[REPL_CONN_MAX_PARAMS + 1];
    const char *values[REPL_CONN_MAX_PARAMS + 1];
} ReplConnParams;

void repl_conn_params(ReplConnParams *p, const char *dsn, const char *replication,
                      const char *app_name, const char *options);

/* Standby status update: 'r', write, flush, apply (= flush), client time, and
 * whether the server is to answer at once with a keepalive (a ping: the
 * walsender answers it even when it has nothing to send). */
#define REPL_STATUS_UPDATE_SIZE 34
void repl_encode_status_update(char out[REPL_STATUS_UPDATE_SIZE], Lsn write, Lsn flush,
                               int64_t pg_now, bool reply_requested);

/* Big-endian 64-bit integer at p (XLogData and keepalive headers). */
uint64_t repl_read_u64(const char *p);

/* Copies src into dst without libpq's trailing newline. */
void repl_copy_trimmed(char *dst, size_t size, const char *src);

#endif
