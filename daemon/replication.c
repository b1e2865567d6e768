/*
 * replication.c - logical replication client as a state machine on the loop.
 *
 * Start-up runs one simple-protocol command at a time (a replication
 * connection accepts nothing else): IDENTIFY_SYSTEM, a catalog query for the
 * configured tables, a slot lookup, CREATE_REPLICATION_SLOT when missing,
 * START_REPLICATION. Each step sends its command and waits for the socket;
 * handle_result() moves to the next step.
 *
 * Streaming follows pg_recvlogical: PQconsumeInput, then PQgetCopyData in
 * async mode until it has no complete message, bounded per turn so other
 * descriptors get served, and paused while the pipeline cannot accept more
 * (the slot is the buffer). Standby status updates carry only the
 * pipeline's confirmed position.
 */
#include "replication.h"

#include "../common/backoff.h"
#include "../common/buf.h"
#include "../common/log.h"
#include "../common/mem.h"
#include "../decoder/wal2json.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#define COMPONENT "replication"

/* Messages decoded per loop turn before other descriptors get a chance. */
#define MAX_MESSAGES_PER_TURN 2000

/* Coalesce status updates after the confirmed position grows. */
#define FEEDBACK_MIN_GAP_US (100 * USECS_PER_MSEC)

/* How long a standby waits between attempts on a slot held by another consumer. */
#define BUSY_SLOT_RETRY_MAX_US (5 * USECS_PER_SEC)

/* Start-up commands and the final COPY drain must not hang forever. */
#define STEP_TIMEOUT_US (60 * USECS_PER_SEC)
#define FINISH_TIMEOUT_US (10 * USECS_PER_SEC)

#define SESSION_OPTIONS                                                                            \
    "-c datestyle=ISO -c timezone=UTC -c bytea_output=hex -c intervalstyle=iso_8601 "              \
    "-c extra_float_digits=3"

typedef enum Step {
    STEP_NONE = 0,
    STEP_CONNECT,
    STEP_IDENTIFY,
    STEP_CHECK_TABLES,
    STEP_CHECK_SLOT,
    STEP_CREATE_SLOT,
    STEP_START,
    STEP_STREAM,
    STEP_FINISH,
} Step;

struct Replication {
    const Config *cfg;
    Loop *loop;
    Pipeline *pipeline;
    SourceInfo *source;
    W2jDecoder *decoder;

    PGconn *conn;
    int fd; /* registered socket, -1 when none */
    ReplState state;
    Step step;
    TimeUs step_deadline;
    bool want_write; /* libpq has unsent data */

    Backoff backoff;
    TimeUs retry_at; /* RECONNECTING/WAITING_FOR_SLOT: when to try again */

    bool stop_reading;    /* shutdown requested */
    bool reading_stopped; /* shutdown: no open transaction left, reading paused */

    Lsn received_lsn;
    Lsn server_wal_end;
    Lsn sent_flush_lsn;
    TimeUs last_feedback; /* monotonic */
    bool reply_requested;
    bool more_buffered; /* reading paused with complete messages possibly left in libpq */

    PfError error;
    bool has_error;
    char system_id[32];
    char *session_options; /* the dsn's own options, then the settings pgfan pins */
    PGresult *pending;     /* start-up: result of the running command so far */
};

static void on_socket(void *arg, int fd, unsigned events);

/* ---- helpers ---------------------------------------------------------- */

static const char *slot_name(const Replication *r)
{
    return r->cfg->source.slot;
}

static void set_state(Replication *r, ReplState state)
{
    if (r->state != state)
        log_debug(COMPONENT, "state %s -> %s", repl_state_name(r->state), repl_state_name(state));
    r->state = state;
}

static void watch_socket(Replication *r)
{
    unsigned events = 0;
    int fd = r->conn ? PQsocket(r->conn) : -1;

    if (fd != r->fd && r->fd >= 0) {
        loop_unwatch(r->loop, r->fd);
        r->fd = -1;
    }
    if (fd < 0)
        return;
    if (r->step == STEP_CONNECT) {
        /* events chosen by PQconnectPoll, set by the caller */
        return;
    }
    if (r->step != STEP_STREAM || (!r->reading_stopped && pipeline_can_accept(r->pipeline)))
        events |= LOOP_READ;
    if (r->step == STEP_FINISH)
        events |= LOOP_READ;
    if (r->want_write)
        events |= LOOP_WRITE;
    if (!loop_watch(r->loop, fd, events, on_socket, r))
        log_warning(COMPONENT, "could not watch the replication socket: %s", strerror(errno));
    r->fd = fd;
}

static void close_connection(Replication *r)
{
    if (r->fd >= 0) {
        loop_unwatch(r->loop, r->fd);
        r->fd = -1;
    }
    PQclear(r->pending);
    r->pending = NULL;
    if (r->conn) {
        PQfinish(r->conn);
        r->conn = NULL;
    }
    r->step = STEP_NONE;
    r->want_write = false;
}

static void remember_error(Replication *r, const PfError *err)
{
    r->error = *err;
    r->has_error = true;
}

/* Fatal: stop for good, confirm nothing more. */
static void fail(Replication *r, const PfError *err)
{
    remember_error(r, err);
    close_connection(r);
    set_state(r, REPL_FAILED);
}

/* Transient: log, drop the connection, retry after a backoff. */
static void retry_later(Replication *r, const PfError *err, bool busy_slot)
{
    TimeUs delay = backoff_next(&r->backoff);

    if (busy_slot && delay > BUSY_SLOT_RETRY_MAX_US)
        delay = BUSY_SLOT_RETRY_MAX_US;
    remember_error(r, err);
    if (busy_slot)
        log_info(COMPONENT, "%s; retrying in %.1f s (standby)", err->msg,
                 (double)delay / USECS_PER_SEC);
    else {
        log_error_value(COMPONENT, err);
        log_info(COMPONENT, "reconnecting in %.1f s", (double)delay / USECS_PER_SEC);
    }
    if (r->step == STEP_STREAM || r->step == STEP_FINISH)
        pipeline_stream_restarted(r->pipeline);
    close_connection(r);
    r->retry_at = clock_mono_us() + delay;
    set_state(r, busy_slot ? REPL_WAITING_FOR_SLOT : REPL_RECONNECTING);
}

/* Trims libpq's trailing newline from an error text. */
static void copy_trimmed(char *dst, size_t size, const char *src)
{
    size_t n;

    snprintf(dst, size, "%s", src ? src : "");
    n = strlen(dst);
    while (n > 0 && (dst[n - 1] == '\n' || dst[n - 1] == ' '))
        dst[--n] = '\0';
}

static const char *conn_error(Replication *r, char *buf, size_t size)
{
    copy_trimmed(buf, size, r->conn ? PQerrorMessage(r->conn) : "no connection");
    if (!buf[0])
        snprintf(buf, size, "connection lost");
    return buf;
}

/* Classifies a failed command's result: sets err with message and hint. */
static void result_error(Replication *r, const PGresult *res, const char *what, PfError *err,
                         bool *busy_slot)
{
    const char *sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    char msg[ERR_MSG_SIZE];

    *busy_slot = false;
    /* The primary message only: one line; the server's own HINT is replaced by ours. */
    if (res && PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY))
        copy_trimmed(msg, sizeof msg, PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
    else
        copy_trimmed(msg, sizeof msg, res ? PQresultErrorMessage(res) : PQerrorMessage(r->conn));
    if (!msg[0])
        snprintf(msg, sizeof msg, "connection lost");

    if (sqlstate && strcmp(sqlstate, "55006") == 0) {
        *busy_slot = true;
        err_set(err, ERR_RETRY, "replication slot \"%s\" is held by another consumer: %s",
                slot_name(r), msg);
        err_hint(err, "another pgfan (or other client) is streaming from this slot; this one "
                      "waits and takes over when it stops");
        return;
    }
    if (strstr(msg, "may not be used as an output plugin")) {
        err_set(err, ERR_FATAL, "could not %s: PostgreSQL refuses wal2json as an output plugin (%s)",
                what, msg);
        err_hint(err, "add wal2json to output_plugin_libraries in postgresql.conf, e.g. "
                      "output_plugin_libraries = 'pgoutput, test_decoding, wal2json', then "
                      "reload the server (SELECT pg_reload_conf())");
        return;
    }
    if (strstr(msg, "could not access file \"wal2json\"")) {
        err_set(err, ERR_FATAL, "could not %s: wal2json is not installed on the server (%s)", what,
                msg);
        err_hint(err, "install the package postgresql-15-wal2json on the database server");
        return;
    }
    if (sqlstate && (strcmp(sqlstate, "42501") == 0 || strcmp(sqlstate, "28000") == 0)) {
        err_set(err, ERR_FATAL, "could not %s: %s", what, msg);
        err_hint(err, "the role in [source] dsn needs the REPLICATION attribute: ALTER ROLE ... "
                      "REPLICATION");
        return;
    }
    err_set(err, ERR_RETRY, "could not %s: %s", what, msg);
}

/* Sends one simple-protocol command and waits for its result on the socket. */
static void send_command(Replication *r, Step step, const char *sql)
{
    PfError err;
    char buf[ERR_MSG_SIZE];

    log_debug(COMPONENT, "sending: %s", sql);
    if (!PQsendQuery(r->conn, sql)) {
        err_set(&err, ERR_RETRY, "could not send command to the server: %s",
                conn_error(r, buf, sizeof buf));
        retry_later(r, &err, false);
        return;
    }
    r->step = step;
    r->step_deadline = clock_mono_us() + STEP_TIMEOUT_US;
    r->want_write = PQflush(r->conn) == 1;
    watch_socket(r);
}

/* ---- start-up steps --------------------------------------------------- */

/*
 * The conninfo's own "options" come first and pgfan's pinned settings last,
 * so a user's -c settings (statement_timeout, ...) survive while DateStyle,
 * TimeZone and bytea_output, which change wal2json's output, stay pinned.
 */
static bool build_session_options(Replication *r, PfError *err)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(r->cfg->source.dsn, &errmsg);
    Buf b = BUF_INIT;

    if (!opts) {
        err_set(err, ERR_CONFIG, "could not parse [source] dsn: %s",
                errmsg ? errmsg : "out of memory");
        err_hint(err, "write a libpq connection string (host=... dbname=... user=...) or a "
                      "postgresql:// URI");
        PQfreemem(errmsg);
        return false;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "options") == 0 && o->val && o->val[0])
            buf_printf(&b, "%s ", o->val);
    }
    PQconninfoFree(opts);
    buf_append_str(&b, SESSION_OPTIONS);
    free(r->session_options);
    r->session_options = b.data;
    return true;
}

static void begin_connect(Replication *r)
{
    const char *keys[] = {"dbname", "replication", "fallback_application_name", "options",
                          "keepalives", "keepalives_idle", "keepalives_interval",
                          "keepalives_count", NULL};
    const char *values[] = {r->cfg->source.dsn, "database", "pgfan", r->session_options, "1",
                            "30", "10", "3", NULL};
    PfError err;
    char buf[ERR_MSG_SIZE];

    set_state(r, REPL_CONNECTING);
    r->conn = PQconnectStartParams(keys, values, 1);
    if (!r->conn || PQstatus(r->conn) == CONNECTION_BAD) {
        err_set(&err, ERR_RETRY, "could not connect to PostgreSQL: %s",
                conn_error(r, buf, sizeof buf));
        retry_later(r, &err, false);
        return;
    }
    r->step = STEP_CONNECT;
    r->step_deadline = clock_mono_us() + STEP_TIMEOUT_US;
    /* PQconnectStart wants us to wait for writability first. */
    r->fd = PQsocket(r->conn);
    if (r->fd < 0 || !loop_watch(r->loop, r->fd, LOOP_WRITE, on_socket, r)) {
        err_set(&err, ERR_RETRY, "could not connect to PostgreSQL: no socket");
        retry_later(r, &err, false);
    }
}

static void continue_connect(Replication *r)
{
    PostgresPollingStatusType st = PQconnectPoll(r->conn);
    PfError err;
    char buf[ERR_MSG_SIZE];
    unsigned events;

    switch (st) {
    case PGRES_POLLING_FAILED:
        err_set(&err, ERR_RETRY, "could not connect to PostgreSQL: %s",
                conn_error(r, buf, sizeof buf));
        retry_later(r, &err, false);
        return;
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(r->conn, 1) != 0) {
            err_set(&err, ERR_RETRY, "could not set the connection non-blocking: %s",
                    conn_error(r, buf, sizeof buf));
            retry_later(r, &err, false);
            return;
        }
        log_debug(COMPONENT, "connected (server %d)", PQserverVersion(r->conn));
        send_command(r, STEP_IDENTIFY, "IDENTIFY_SYSTEM");
        return;
    case PGRES_POLLING_READING:
    case PGRES_POLLING_WRITING:
    default:
        events = st == PGRES_POLLING_WRITING ? LOOP_WRITE : LOOP_READ;
        /* The socket can change between attempts (several hosts, SSL retry). */
        if (PQsocket(r->conn) != r->fd) {
            if (r->fd >= 0)
                loop_unwatch(r->loop, r->fd);
            r->fd = PQsocket(r->conn);
        }
        if (r->fd < 0 || !loop_watch(r->loop, r->fd, events, on_socket, r)) {
            err_set(&err, ERR_RETRY, "could not connect to PostgreSQL: lost the socket");
            retry_later(r, &err, false);
        }
        return;
    }
}

/* wal2json add-tables syntax: backslash before every special character. */
static void append_w2j_name(Buf *b, const char *name)
{
    for (const char *c = name; *c; c++) {
        if (strchr(" ',.*\\", *c))
            buf_append_char(b, '\\');
        if (*c == '\'')
            buf_append_char(b, '\''); /* doubled: the value is an SQL string literal */
        buf_append_char(b, *c);
    }
}

static void send_check_tables(Replication *r)
{
    Buf sql = BUF_INIT;

    buf_append_str(&sql, "SELECT t.schema_name, t.table_name, c.relkind, c.relreplident, "
                         "EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid "
                         "AND i.indisprimary) FROM (VALUES ");
    for (size_t i = 0; i < r->cfg->source.n_tables; i++) {
        const TableName *t = &r->cfg->source.tables[i];
        char *s = PQescapeLiteral(r->conn, t->schema, strlen(t->schema));
        char *n = PQescapeLiteral(r->conn, t->table, strlen(t->table));

        buf_printf(&sql, "%s(%d, %s, %s)", i ? ", " : "", (int)i, s ? s : "''", n ? n : "''");
        PQfreemem(s);
        PQfreemem(n);
    }
    buf_append_str(&sql, ") AS t(ord, schema_name, table_name) "
                         "LEFT JOIN pg_catalog.pg_namespace ns ON ns.nspname = t.schema_name "
                         "LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid "
                         "AND c.relname = t.table_name ORDER BY t.ord");
    send_command(r, STEP_CHECK_TABLES, sql.data);
    buf_free(&sql);
}

/* Appends an SQL identifier, quoted only when it has to be (for hints people copy). */
static void append_sql_ident(Buf *b, const char *name)
{
    bool plain = (*name >= 'a' && *name <= 'z') || *name == '_';

    for (const char *c = name; *c && plain; c++)
        plain = (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_';
    if (plain) {
        buf_append_str(b, name);
        return;
    }
    buf_append_char(b, '"');
    for (const char *c = name; *c; c++) {
        if (*c == '"')
            buf_append_char(b, '"');
        buf_append_char(b, *c);
    }
    buf_append_char(b, '"');
}

static char *quoted_table(const char *schema, const char *table)
{
    Buf b = BUF_INIT;

    append_sql_ident(&b, schema);
    buf_append_char(&b, '.');
    append_sql_ident(&b, table);
    return b.data;
}

static bool check_tables(Replication *r, const PGresult *res, PfError *err)
{
    Buf missing = BUF_INIT;
    int n = PQntuples(res);

    for (int i = 0; i < n; i++) {
        const char *schema = PQgetvalue(res, i, 0);
        const char *table = PQgetvalue(res, i, 1);
        const char *relkind = PQgetvalue(res, i, 2);
        const char *ident = PQgetvalue(res, i, 3);
        bool has_pk = PQgetvalue(res, i, 4)[0] == 't';
        char *qname;

        if (PQgetisnull(res, i, 2) || !strchr("rp", relkind[0])) {
            buf_printf(&missing, "%s%s.%s", missing.len ? ", " : "", schema, table);
            continue;
        }
        if (ident[0] == 'n' || (ident[0] == 'd' && !has_pk)) {
            qname = quoted_table(schema, table);
            log_warning(COMPONENT,
                        "table %s has no usable replica identity (%s): PostgreSQL will not "
                        "stream its UPDATEs and DELETEs",
                        qname, ident[0] == 'n' ? "REPLICA IDENTITY NOTHING" : "no primary key");
            log_warning(COMPONENT,
                        "HINT: ALTER TABLE %s REPLICA IDENTITY FULL; (or add a primary key)",
                        qname);
            free(qname);
        }
    }
    if (missing.len) {
        err_set(err, ERR_CONFIG,
                "could not find table%s %s listed in [source] tables in database \"%s\"",
                strchr(missing.data, ',') ? "s" : "", missing.data, r->source->dbname);
        err_hint(err, "create the table, or fix or remove it in [source] tables (names are "
                      "case-sensitive; write schema.table)");
        buf_free(&missing);
        return false;
    }
    return true;
}

static void send_check_slot(Replication *r)
{
    char *lit = PQescapeLiteral(r->conn, slot_name(r), strlen(slot_name(r)));
    Buf sql = BUF_INIT;

    buf_printf(&sql,
               "SELECT slot_type, plugin, database, active_pid FROM pg_catalog.pg_replication_slots "
               "WHERE slot_name = %s",
               lit ? lit : "''");
    PQfreemem(lit);
    send_command(r, STEP_CHECK_SLOT, sql.data);
    buf_free(&sql);
}

static void send_start(Replication *r)
{
    Buf sql = BUF_INIT;

    buf_printf(&sql,
               "START_REPLICATION SLOT %s LOGICAL 0/0 (\"format-version\" '2', "
               "\"include-xids\" '1', \"include-timestamp\" '1', \"include-lsn\" '1', "
               "\"include-pk\" '1', \"include-types\" '1', \"add-tables\" '",
               slot_name(r));
    for (size_t i = 0; i < r->cfg->source.n_tables; i++) {
        if (i)
            buf_append_char(&sql, ',');
        append_w2j_name(&sql, r->cfg->source.tables[i].schema);
        buf_append_char(&sql, '.');
        append_w2j_name(&sql, r->cfg->source.tables[i].table);
    }
    buf_append_str(&sql, "')");
    send_command(r, STEP_START, sql.data);
    buf_free(&sql);
}

/* Handles the final result of a start-up command. */
static void handle_result(Replication *r, PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    PfError err;
    bool busy = false;

    switch (r->step) {
    case STEP_IDENTIFY:
        if (st != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) < 4) {
            result_error(r, res, "identify the server (IDENTIFY_SYSTEM)", &err, &busy);
            retry_later(r, &err, busy);
            return;
        }
        if (r->system_id[0] && strcmp(r->system_id, PQgetvalue(res, 0, 0)) != 0) {
            err_set(&err, ERR_FATAL,
                    "could not resume streaming: the server's system identifier changed from "
                    "%s to %s (a different or restored cluster)",
                    r->system_id, PQgetvalue(res, 0, 0));
            err_hint(&err, "check [source] dsn; after a restore or failover the slot must be "
                           "recreated and the sinks reloaded");
            fail(r, &err);
            return;
        }
        snprintf(r->system_id, sizeof r->system_id, "%s", PQgetvalue(res, 0, 0));
        snprintf(r->source->system_id, sizeof r->source->system_id, "%s", r->system_id);
        if (PQgetisnull(res, 0, 3)) {
            err_set(&err, ERR_CONFIG,
                    "could not start logical replication: the connection is not bound to a "
                    "database");
            err_hint(&err, "name the database in [source] dsn (dbname=...)");
            fail(r, &err);
            return;
        }
        snprintf(r->source->dbname, sizeof r->source->dbname, "%s", PQgetvalue(res, 0, 3));
        {
            Lsn pos;
            const char *x = PQgetvalue(res, 0, 2);
            if (lsn_parse(x, strlen(x), &pos) && pos > r->server_wal_end)
                r->server_wal_end = pos;
        }
        send_check_tables(r);
        return;

    case STEP_CHECK_TABLES:
        if (st != PGRES_TUPLES_OK) {
            result_error(r, res, "check the tables listed in [source] tables", &err, &busy);
            retry_later(r, &err, busy);
            return;
        }
        if (!check_tables(r, res, &err)) {
            fail(r, &err);
            return;
        }
        send_check_slot(r);
        return;

    case STEP_CHECK_SLOT:
        if (st != PGRES_TUPLES_OK) {
            result_error(r, res, "look up the replication slot", &err, &busy);
            retry_later(r, &err, busy);
            return;
        }
        if (PQntuples(res) == 0) {
            Buf sql = BUF_INIT;
            log_info(COMPONENT, "creating replication slot \"%s\" (wal2json)", slot_name(r));
            buf_printf(&sql, "CREATE_REPLICATION_SLOT %s LOGICAL wal2json (SNAPSHOT 'nothing')",
                       slot_name(r));
            send_command(r, STEP_CREATE_SLOT, sql.data);
            buf_free(&sql);
            return;
        }
        if (strcmp(PQgetvalue(res, 0, 0), "logical") != 0 ||
            strcmp(PQgetvalue(res, 0, 1), "wal2json") != 0) {
            err_set(&err, ERR_CONFIG,
                    "could not use replication slot \"%s\": it exists with type %s and plugin "
                    "\"%s\", pgfan needs a logical slot with wal2json",
                    slot_name(r), PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
            err_hint(&err, "choose another name in [source] slot, or drop that slot if nothing "
                           "uses it: SELECT pg_drop_replication_slot('%s')",
                     slot_name(r));
            fail(r, &err);
            return;
        }
        if (strcmp(PQgetvalue(res, 0, 2), r->source->dbname) != 0) {
            err_set(&err, ERR_CONFIG,
                    "could not use replication slot \"%s\": it belongs to database \"%s\", not "
                    "\"%s\"",
                    slot_name(r), PQgetvalue(res, 0, 2), r->source->dbname);
            err_hint(&err, "choose another name in [source] slot, or connect to database \"%s\"",
                     PQgetvalue(res, 0, 2));
            fail(r, &err);
            return;
        }
        send_start(r);
        return;

    case STEP_CREATE_SLOT:
        if (st != PGRES_TUPLES_OK) {
            const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            if (sqlstate && strcmp(sqlstate, "42710") == 0) {
                /* Another instance created it meanwhile: look again. */
                send_check_slot(r);
                return;
            }
            result_error(r, res, "create replication slot", &err, &busy);
            if (err.kind == ERR_FATAL)
                fail(r, &err);
            else
                retry_later(r, &err, busy);
            return;
        }
        log_info(COMPONENT, "created replication slot \"%s\" at %s", slot_name(r),
                 PQgetvalue(res, 0, 1));
        send_start(r);
        return;

    case STEP_START:
        if (st != PGRES_COPY_BOTH) {
            result_error(r, res, "start streaming", &err, &busy);
            if (err.kind == ERR_FATAL)
                fail(r, &err);
            else
                retry_later(r, &err, busy);
            return;
        }
        r->step = STEP_STREAM;
        r->has_error = false;
        backoff_reset(&r->backoff);
        r->last_feedback = 0; /* send a first status update soon */
        set_state(r, REPL_STREAMING);
        log_info(COMPONENT, "streaming from slot \"%s\" in database \"%s\" (%zu table%s)",
                 slot_name(r), r->source->dbname, r->cfg->source.n_tables,
                 r->cfg->source.n_tables == 1 ? "" : "s");
        watch_socket(r);
        return;

    default:
        return;
    }
}

/*
 * Reads command results; called when the socket is readable during start-up.
 * A command is complete when PQgetResult returns NULL, which may take
 * several wake-ups: the result seen so far is kept in r->pending (the first
 * error wins over anything after it).
 */
static void read_results(Replication *r)
{
    PfError err;
    char buf[ERR_MSG_SIZE];

    if (!PQconsumeInput(r->conn)) {
        err_set(&err, ERR_RETRY, "could not read from the server: %s",
                conn_error(r, buf, sizeof buf));
        retry_later(r, &err, false);
        return;
    }
    while (!PQisBusy(r->conn)) {
        PGresult *res = PQgetResult(r->conn);

        if (!res) {
            PGresult *done = r->pending;
            r->pending = NULL;
            if (done) {
                handle_result(r, done);
                PQclear(done);
            }
            return;
        }
        if (PQresultStatus(res) == PGRES_COPY_BOTH) {
            /* START_REPLICATION succeeded: no NULL follows until the COPY ends. */
            PQclear(r->pending);
            r->pending = NULL;
            handle_result(r, res);
            PQclear(res);
            return;
        }
        if (r->pending && PQresultStatus(r->pending) == PGRES_FATAL_ERROR) {
            PQclear(res);
        } else {
            PQclear(r->pending);
            r->pending = res;
        }
    }
}

/* ---- streaming -------------------------------------------------------- */

static uint64_t read_u64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | (uint8_t)p[i];
    return v;
}

static void write_u64(char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (char)(v & 0xFF);
        v >>= 8;
    }
}

/* Sends a standby status update: write = received, flush = apply = confirmed. */
static bool send_feedback(Replication *r, TimeUs now, PfError *err)
{
    char msg[34];
    char buf[ERR_MSG_SIZE];
    Lsn flush = pipeline_confirmed_lsn(r->pipeline);
    Lsn write = r->received_lsn > flush ? r->received_lsn : flush;
    int rc;

    /* Never report less than before: the server does not clamp. */
    if (flush < r->sent_flush_lsn)
        flush = r->sent_flush_lsn;
    msg[0] = 'r';
    write_u64(msg + 1, write);
    write_u64(msg + 9, flush);
    write_u64(msg + 17, flush);
    write_u64(msg + 25, (uint64_t)clock_unix_to_pg(clock_wall_us()));
    msg[33] = 0;
    rc = PQputCopyData(r->conn, msg, (int)sizeof msg);
    if (rc <= 0) {
        /* 0: libpq's buffer is full; the next turn tries again. */
        if (rc == 0)
            return true;
        return err_set(err, ERR_RETRY, "could not send status update: %s",
                       conn_error(r, buf, sizeof buf));
    }
    rc = PQflush(r->conn);
    if (rc < 0)
        return err_set(err, ERR_RETRY, "could not send status update: %s",
                       conn_error(r, buf, sizeof buf));
    r->want_write = rc == 1;
    if (flush != r->sent_flush_lsn) {
        char a[LSN_TEXT_SIZE];
        log_debug(COMPONENT, "confirmed %s", lsn_format(flush, a));
    }
    r->sent_flush_lsn = flush;
    r->last_feedback = now;
    r->reply_requested = false;
    return true;
}

static bool handle_xlogdata(Replication *r, const char *data, int len, PfError *err)
{
    Change change;
    Lsn wal_lsn;

    if (len < 25)
        return err_set(err, ERR_FATAL, "could not read XLogData: message of %d bytes is too short",
                       len);
    wal_lsn = read_u64(data + 1);
    if (!w2j_decode(r->decoder, data + 25, (size_t)(len - 25), wal_lsn, &change, err))
        return false;
    if (change.kind == CHANGE_COMMIT && change.end_lsn > r->received_lsn)
        r->received_lsn = change.end_lsn;
    if (wal_lsn > r->server_wal_end)
        r->server_wal_end = wal_lsn;
    return pipeline_submit(r->pipeline, &change, err);
}

static void handle_keepalive(Replication *r, const char *data, int len)
{
    Lsn wal_end;

    if (len < 18)
        return;
    wal_end = read_u64(data + 1);
    if (wal_end > r->server_wal_end)
        r->server_wal_end = wal_end;
    /* Everything before wal_end has arrived (TCP order); the pipeline
     * confirms it only when nothing is in flight. */
    if (!pipeline_in_transaction(r->pipeline) && wal_end > r->received_lsn)
        r->received_lsn = wal_end;
    pipeline_note_keepalive(r->pipeline, wal_end);
    if (data[17])
        r->reply_requested = true;
}

/* The server ended the COPY or the connection broke. */
static void stream_ended(Replication *r)
{
    PfError err;
    PGresult *res;
    char buf[ERR_MSG_SIZE];
    bool busy = false;

    res = PQgetResult(r->conn);
    if (r->step == STEP_FINISH) {
        /* Drain the remaining results; the COPY is over. */
        while (res) {
            PQclear(res);
            res = PQgetResult(r->conn);
        }
        close_connection(r);
        set_state(r, REPL_STOPPED);
        return;
    }
    if (res && PQresultStatus(res) == PGRES_FATAL_ERROR) {
        result_error(r, res, "stream changes", &err, &busy);
    } else {
        err_set(&err, ERR_RETRY, "replication stream ended: %s", conn_error(r, buf, sizeof buf));
    }
    while (res) {
        PQclear(res);
        res = PQgetResult(r->conn);
    }
    if (err.kind == ERR_FATAL)
        fail(r, &err);
    else
        retry_later(r, &err, busy);
}

/* Reads and dispatches as many messages as the pipeline accepts. */
static void drain_stream(Replication *r)
{
    PfError err;
    char buf[ERR_MSG_SIZE];
    int handled = 0;

    if (!PQconsumeInput(r->conn)) {
        err_set(&err, ERR_RETRY, "could not read from the server: %s",
                conn_error(r, buf, sizeof buf));
        retry_later(r, &err, false);
        return;
    }
    r->more_buffered = true;
    while (handled < MAX_MESSAGES_PER_TURN) {
        char *data = NULL;
        int len;

        if (r->step == STEP_STREAM) {
            if (r->stop_reading && !pipeline_in_transaction(r->pipeline)) {
                r->reading_stopped = true;
                break;
            }
            if (!pipeline_can_accept(r->pipeline))
                break;
        }
        len = PQgetCopyData(r->conn, &data, 1);
        if (len == 0) {
            r->more_buffered = false;
            break;
        }
        if (len == -1) {
            stream_ended(r);
            return;
        }
        if (len < 0) {
            err_set(&err, ERR_RETRY, "could not read replication data: %s",
                    conn_error(r, buf, sizeof buf));
            retry_later(r, &err, false);
            return;
        }
        handled++;
        if (r->step == STEP_FINISH) {
            /* After CopyDone: nothing more is processed; it will be resent. */
            PQfreemem(data);
            continue;
        }
        if (data[0] == 'w') {
            bool ok = handle_xlogdata(r, data, len, &err);
            PQfreemem(data);
            if (!ok) {
                fail(r, &err);
                return;
            }
        } else if (data[0] == 'k') {
            handle_keepalive(r, data, len);
            PQfreemem(data);
        } else {
            log_warning(COMPONENT, "ignoring unknown replication message type '%c'", data[0]);
            PQfreemem(data);
        }
    }
    if (r->reply_requested && r->step == STEP_STREAM) {
        if (!send_feedback(r, clock_mono_us(), &err)) {
            retry_later(r, &err, false);
            return;
        }
    }
    watch_socket(r);
}

static void on_socket(void *arg, int fd, unsigned events)
{
    Replication *r = arg;
    PfError err;
    char buf[ERR_MSG_SIZE];

    (void)fd;
    if (!r->conn)
        return;
    if (r->step == STEP_CONNECT) {
        continue_connect(r);
        return;
    }
    if (events & LOOP_WRITE) {
        int rc = PQflush(r->conn);
        if (rc < 0) {
            err_set(&err, ERR_RETRY, "could not send to the server: %s",
                    conn_error(r, buf, sizeof buf));
            retry_later(r, &err, false);
            return;
        }
        r->want_write = rc == 1;
    }
    if (events & (LOOP_READ | LOOP_ERROR)) {
        if (r->step == STEP_STREAM || r->step == STEP_FINISH)
            drain_stream(r);
        else
            read_results(r);
        return;
    }
    watch_socket(r);
}

/* ---- public ----------------------------------------------------------- */

Replication *repl_new(const Config *cfg, Loop *loop, Pipeline *pipeline, SourceInfo *source)
{
    Replication *r = xcalloc(1, sizeof *r);

    r->cfg = cfg;
    r->loop = loop;
    r->pipeline = pipeline;
    r->source = source;
    r->decoder = w2j_new();
    r->fd = -1;
    r->state = REPL_CONNECTING;
    backoff_init(&r->backoff, cfg->source.reconnect_min, cfg->source.reconnect_max);
    err_clear(&r->error);
    return r;
}

void repl_free(Replication *r)
{
    if (!r)
        return;
    close_connection(r);
    w2j_free(r->decoder);
    free(r->session_options);
    free(r);
}

void repl_start(Replication *r)
{
    PfError err;

    if (!build_session_options(r, &err)) {
        fail(r, &err);
        return;
    }
    begin_connect(r);
}

TimeUs repl_poll(Replication *r, TimeUs now)
{
    PfError err;
    TimeUs next = TIME_NEVER;

    switch (r->state) {
    case REPL_RECONNECTING:
    case REPL_WAITING_FOR_SLOT:
        if (r->stop_reading) {
            set_state(r, REPL_STOPPED);
            return TIME_NEVER;
        }
        if (now >= r->retry_at) {
            begin_connect(r);
            return now + USECS_PER_SEC;
        }
        return r->retry_at;
    case REPL_STOPPED:
    case REPL_FAILED:
        return TIME_NEVER;
    case REPL_CONNECTING:
        if (r->stop_reading) {
            close_connection(r);
            set_state(r, REPL_STOPPED);
            return TIME_NEVER;
        }
        if (now >= r->step_deadline) {
            err_set(&err, ERR_RETRY, "could not start replication: the server did not answer "
                                     "within %d s",
                    (int)(STEP_TIMEOUT_US / USECS_PER_SEC));
            retry_later(r, &err, false);
            return r->retry_at;
        }
        return r->step_deadline;
    case REPL_STOPPING:
        if (now >= r->step_deadline) {
            log_warning(COMPONENT, "the server did not end the stream in time; closing");
            close_connection(r);
            set_state(r, REPL_STOPPED);
            return TIME_NEVER;
        }
        return r->step_deadline;
    case REPL_STREAMING:
        break;
    }

    /* Streaming. Messages libpq already buffered produce no new EPOLLIN:
     * drain them here once the pipeline accepts again. */
    if (r->more_buffered && !r->reading_stopped && pipeline_can_accept(r->pipeline)) {
        drain_stream(r);
        if (r->state != REPL_STREAMING)
            return TIME_NEVER;
    } else if (r->stop_reading && !pipeline_in_transaction(r->pipeline)) {
        r->reading_stopped = true;
    }
    if (r->reply_requested || now - r->last_feedback >= r->cfg->source.status_interval ||
        (pipeline_confirmed_lsn(r->pipeline) > r->sent_flush_lsn &&
         now - r->last_feedback >= FEEDBACK_MIN_GAP_US)) {
        if (!send_feedback(r, now, &err)) {
            retry_later(r, &err, false);
            return r->retry_at;
        }
    }
    watch_socket(r);
    next = r->last_feedback + r->cfg->source.status_interval;
    if (pipeline_confirmed_lsn(r->pipeline) > r->sent_flush_lsn) {
        TimeUs soon = r->last_feedback + FEEDBACK_MIN_GAP_US;
        if (soon < next)
            next = soon;
    }
    return next;
}

void repl_stop_reading(Replication *r)
{
    r->stop_reading = true;
    if (r->step == STEP_STREAM && !pipeline_in_transaction(r->pipeline))
        r->reading_stopped = true;
    if (r->conn)
        watch_socket(r);
}

bool repl_reading_stopped(const Replication *r)
{
    if (r->state != REPL_STREAMING)
        return true;
    return r->reading_stopped;
}

void repl_finish(Replication *r)
{
    PfError err;
    char buf[ERR_MSG_SIZE];

    if (r->state != REPL_STREAMING) {
        close_connection(r);
        if (r->state != REPL_FAILED)
            set_state(r, REPL_STOPPED);
        return;
    }
    if (!send_feedback(r, clock_mono_us(), &err) || PQputCopyEnd(r->conn, NULL) <= 0) {
        log_warning(COMPONENT, "could not send the final status update: %s",
                    conn_error(r, buf, sizeof buf));
        close_connection(r);
        set_state(r, REPL_STOPPED);
        return;
    }
    r->want_write = PQflush(r->conn) == 1;
    r->step = STEP_FINISH;
    r->step_deadline = clock_mono_us() + FINISH_TIMEOUT_US;
    set_state(r, REPL_STOPPING);
    {
        char a[LSN_TEXT_SIZE];
        log_info(COMPONENT, "final status update sent: confirmed %s",
                 lsn_format(r->sent_flush_lsn, a));
    }
    watch_socket(r);
}

void repl_fail(Replication *r, const PfError *err)
{
    fail(r, err);
}

ReplState repl_state(const Replication *r)
{
    return r->state;
}

const char *repl_state_name(ReplState state)
{
    switch (state) {
    case REPL_CONNECTING:
        return "connecting";
    case REPL_STREAMING:
        return "streaming";
    case REPL_WAITING_FOR_SLOT:
        return "waiting_for_slot";
    case REPL_RECONNECTING:
        return "reconnecting";
    case REPL_STOPPING:
        return "stopping";
    case REPL_STOPPED:
        return "stopped";
    case REPL_FAILED:
        return "failed";
    }
    return "unknown";
}

const PfError *repl_error(const Replication *r)
{
    return r->has_error ? &r->error : NULL;
}

Lsn repl_received_lsn(const Replication *r)
{
    return r->received_lsn;
}

Lsn repl_server_wal_end(const Replication *r)
{
    return r->server_wal_end;
}

Lsn repl_sent_flush_lsn(const Replication *r)
{
    return r->sent_flush_lsn;
}
