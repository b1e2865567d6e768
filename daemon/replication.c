/*
 * replication.c - logical replication client as a state machine on the loop.
 *
 * Start-up runs one simple-protocol command at a time (a replication
 * connection accepts nothing else): IDENTIFY_SYSTEM, a catalog query for the
 * configured tables, a slot lookup, CREATE_REPLICATION_SLOT when missing,
 * START_REPLICATION. Each step sends its command and waits for the socket;
 * handle_result() moves to the next step. The command texts, the reading of
 * their answers and the binary messages live in repl_protocol.c.
 *
 * With snapshot = initial, the slot is created with an exported snapshot
 * and the connection then stays idle (the exported snapshot lives until its
 * next command) while daemon/snapshot.c reads the tables on connections of
 * its own; once the pipeline confirms the consistent point (every sink
 * holds the snapshot durably) the state file says "done" and
 * START_REPLICATION follows on the same connection. A failed snapshot
 * cannot be resumed (the exported snapshot is gone): the slot is dropped
 * and everything starts over.
 *
 * Streaming follows pg_recvlogical: PQconsumeInput, then PQgetCopyData in
 * async mode until it has no complete message, bounded per turn so other
 * descriptors get served, and paused while the pipeline cannot accept more
 * (the slot is the buffer). Standby status updates carry only the
 * pipeline's confirmed position.
 *
 * A dead network is noticed twice over. The kernel: every connection to the
 * source sets TCP keepalives and tcp_user_timeout (repl_conn_params), ~30 s.
 * The protocol, for what TCP cannot see (a middlebox or proxy that keeps the
 * TCP session up but forwards nothing, a stopped server host): while pgfan
 * reads, a stream on which nothing arrives for SILENCE_INTERVALS x
 * status_interval is dropped and reconnected with the usual backoff; the
 * slot sends again whatever was not confirmed, so nothing is lost.
 */
#include "replication.h"

#include "../common/backoff.h"
#include "../common/buf.h"
#include "../common/log.h"
#include "../common/mem.h"
#include "../decoder/wal2json.h"
#include "repl_protocol.h"
#include "snapshot_state.h"

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

/*
 * Silence limit while streaming: 6 x status_interval (60 s by default, as
 * long as PostgreSQL's own default wal_sender_timeout gives pgfan). The
 * walsender sends nothing on an idle, fully confirmed slot, so every status
 * update sent after half an interval without a message asks for a reply
 * (a ping the walsender answers at once): a live server is never silent for
 * much more than one interval. It cannot answer while it decodes a long
 * transaction on tables pgfan does not stream (wal2json 2.5 reports no
 * progress then; protocol notes 1.7): so that such a transaction cannot make
 * every attempt fail the same way, the limit doubles after each drop for
 * silence, up to SILENCE_MAX_FACTOR times, until a transaction that ends
 * past the place of the drop arrives.
 */
#define SILENCE_INTERVALS 6
#define SILENCE_MAX_FACTOR 8

/* Start-up commands and the final COPY drain must not hang forever. */
#define STEP_TIMEOUT_US (60 * USECS_PER_SEC)
#define FINISH_TIMEOUT_US (10 * USECS_PER_SEC)

typedef enum Step {
    STEP_NONE = 0,
    STEP_CONNECT,
    STEP_IDENTIFY,
    STEP_CHECK_TABLES,
    STEP_CATALOG,
    STEP_CHECK_SLOT,
    STEP_TERMINATE, /* an interrupted snapshot's slot: end the walsender holding it */
    STEP_DROP_SLOT, /* ... and drop it */
    STEP_CREATE_SLOT,
    STEP_SNAPSHOT,  /* the initial snapshot runs; the connection waits, unwatched */
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
    int fd;           /* registered socket, -1 when none */
    unsigned watched; /* events watch_socket() registered for fd; WATCHED_UNKNOWN: none */
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
    TimeUs last_message;  /* monotonic: last message from the server, or reading resumed */
    int silence_factor;   /* the silence limit's multiple (1 until a drop for silence) */
    Lsn silence_lsn;      /* received_lsn when the connection was last dropped for silence */
    bool reply_requested;
    bool more_buffered; /* reading paused with complete messages possibly left in libpq */

    PfError error;
    bool has_error;
    char system_id[32];
    char *session_options; /* the dsn's own options, then the settings pgfan pins */
    PGresult *pending;     /* start-up: result of the running command so far */

    Catalog catalog;     /* the [source] tables, from the last STEP_CATALOG */
    Snapshot *snapshot;  /* this run's initial snapshot (kept after it ends, for status) */
    bool snapshot_open;  /* it started and is not done: its transaction is open */
    bool resync;         /* the next snapshot truncates first: sinks may hold older rows */
};

static void on_socket(void *arg, int fd, unsigned events);

/* Replication.watched when fd was registered elsewhere (or not at all). */
#define WATCHED_UNKNOWN (~0u)

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
    if (r->step == STEP_SNAPSHOT) {
        /* Idle until the snapshot is durable: nothing may be sent, nothing is expected. */
        if (r->fd >= 0)
            loop_unwatch(r->loop, r->fd);
        r->fd = -1;
        return;
    }
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
    /* Called after every read: an unchanged registration costs no epoll_ctl. */
    if (fd == r->fd && events == r->watched)
        return;
    r->watched = WATCHED_UNKNOWN;
    if (!loop_watch(r->loop, fd, events, on_socket, r))
        log_warning(COMPONENT, "could not watch the replication socket: %s", strerror(errno));
    else
        r->watched = events;
    r->fd = fd;
}

/*
 * Ends a snapshot that is not done (failed, or stopped with the connection):
 * its pseudo-transaction stays open in the pipeline and the sinks, and is
 * abandoned; the sinks keep the rows they took, the next snapshot comes in a
 * transaction of its own.
 */
static void abandon_snapshot(Replication *r)
{
    if (!r->snapshot_open)
        return;
    snapshot_abort(r->snapshot);
    pipeline_stream_restarted(r->pipeline);
    r->snapshot_open = false;
}

static void close_connection(Replication *r)
{
    abandon_snapshot(r);
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

static const char *conn_error(Replication *r, char *buf, size_t size)
{
    repl_copy_trimmed(buf, size, r->conn ? PQerrorMessage(r->conn) : "no connection");
    if (!buf[0])
        snprintf(buf, size, "connection lost");
    return buf;
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

static void begin_connect(Replication *r)
{
    ReplConnParams params;
    PfError err;
    char buf[ERR_MSG_SIZE];

    set_state(r, REPL_CONNECTING);
    repl_conn_params(&params, r->cfg->source.dsn, "database", "pgfan", r->session_options);
    r->conn = PQconnectStartParams(params.keys, params.values, 1);
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
    r->watched = WATCHED_UNKNOWN;
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
        r->watched = WATCHED_UNKNOWN;
        if (r->fd < 0 || !loop_watch(r->loop, r->fd, events, on_socket, r)) {
            err_set(&err, ERR_RETRY, "could not connect to PostgreSQL: lost the socket");
            retry_later(r, &err, false);
        }
        return;
    }
}

static void send_check_tables(Replication *r)
{
    Buf sql = BUF_INIT;

    repl_cmd_check_tables(&sql, r->conn, r->cfg);
    send_command(r, STEP_CHECK_TABLES, sql.data);
    buf_free(&sql);
}

static void send_catalog(Replication *r)
{
    Buf sql = BUF_INIT;

    repl_cmd_catalog(&sql, r->conn, r->cfg);
    send_command(r, STEP_CATALOG, sql.data);
    buf_free(&sql);
}

static void send_check_slot(Replication *r)
{
    Buf sql = BUF_INIT;

    repl_cmd_check_slot(&sql, r->conn, slot_name(r));
    send_command(r, STEP_CHECK_SLOT, sql.data);
    buf_free(&sql);
}

static void send_start(Replication *r)
{
    Buf sql = BUF_INIT;

    repl_cmd_start(&sql, r->cfg);
    send_command(r, STEP_START, sql.data);
    buf_free(&sql);
}

/* ---- slot creation and the initial snapshot ------------------------------ */

static bool snapshot_wanted(const Replication *r)
{
    return r->cfg->source.snapshot == SNAPSHOT_INITIAL;
}

static void create_slot(Replication *r)
{
    Buf sql = BUF_INIT;
    PfError err;

    if (snapshot_wanted(r)) {
        /* Before the slot exists: a crash right after creating it must not
         * leave a slot that looks like one whose snapshot finished. */
        SnapState st = {SNAP_STATE_IN_PROGRESS, LSN_INVALID};

        if (!snap_state_write(r->cfg->source.state_dir, slot_name(r), &st, &err)) {
            fail(r, &err);
            return;
        }
    }
    log_info(COMPONENT, "creating replication slot \"%s\" (wal2json%s)", slot_name(r),
             snapshot_wanted(r) ? ", exporting a snapshot for the initial load" : "");
    repl_cmd_create_slot(&sql, slot_name(r), snapshot_wanted(r));
    send_command(r, STEP_CREATE_SLOT, sql.data);
    buf_free(&sql);
}

/* An existing slot whose snapshot never finished: end its walsender, drop it, start over. */
static void drop_unfinished_slot(Replication *r, const char *state_path)
{
    Buf sql = BUF_INIT;

    log_warning(COMPONENT,
                "the initial snapshot into replication slot \"%s\" did not finish (%s says "
                "\"in progress\"): dropping the slot and starting over; the sinks receive "
                "every row again",
                slot_name(r), state_path);
    r->resync = true;
    repl_cmd_terminate_slot_holder(&sql, r->conn, slot_name(r));
    send_command(r, STEP_TERMINATE, sql.data);
    buf_free(&sql);
}

/* The slot lookup's outcome: create it, or start over, or stream from it. */
static void slot_checked(Replication *r, bool exists)
{
    SnapState st;
    PfError err;
    Buf path = BUF_INIT;

    if (!snapshot_wanted(r)) {
        if (exists)
            send_start(r);
        else
            create_slot(r);
        return;
    }
    if (!snap_state_read(r->cfg->source.state_dir, slot_name(r), &st, &err)) {
        fail(r, &err);
        return;
    }
    if (!exists) {
        /* A state file means the sinks hold rows of an earlier slot of this name. */
        r->resync = st.kind != SNAP_STATE_NONE;
        create_slot(r);
        return;
    }
    snap_state_path(&path, r->cfg->source.state_dir, slot_name(r));
    if (st.kind == SNAP_STATE_IN_PROGRESS) {
        drop_unfinished_slot(r, path.data);
    } else {
        if (st.kind == SNAP_STATE_NONE)
            log_info(COMPONENT,
                     "replication slot \"%s\" exists and %s does not: assuming its initial "
                     "snapshot finished (drop the slot to load the tables again)",
                     slot_name(r), path.data);
        send_start(r);
    }
    buf_free(&path);
}

/* CREATE_REPLICATION_SLOT answered: record the consistent point, start the snapshot. */
static void start_snapshot(Replication *r, const PGresult *res)
{
    const char *pos = PQgetvalue(res, 0, 1);
    SnapState st = {SNAP_STATE_IN_PROGRESS, LSN_INVALID};
    SnapshotParams params;
    PfError err;

    if (PQnfields(res) < 3 || PQgetisnull(res, 0, 2) ||
        !lsn_parse(pos, strlen(pos), &st.consistent_lsn)) {
        err_set(&err, ERR_FATAL, "could not start the initial snapshot: CREATE_REPLICATION_SLOT "
                                 "returned no consistent point or snapshot name");
        fail(r, &err);
        return;
    }
    if (!snap_state_write(r->cfg->source.state_dir, slot_name(r), &st, &err)) {
        fail(r, &err);
        return;
    }
    params.slot = slot_name(r);
    params.snapshot_name = PQgetvalue(res, 0, 2);
    params.consistent_lsn = st.consistent_lsn;
    params.resync = r->resync;
    params.session_options = r->session_options;
    snapshot_free(r->snapshot);
    r->step = STEP_SNAPSHOT;
    r->step_deadline = TIME_NEVER;
    set_state(r, REPL_SNAPSHOT);
    watch_socket(r);
    r->snapshot = snapshot_new(r->cfg, r->loop, r->pipeline, &r->catalog, &params);
    r->snapshot_open = true;
}

/*
 * The snapshot is durable when the pipeline confirms its consistent point
 * (one transaction ending there). Then the state file says so and the
 * snapshot is over. False while it is not (or on a failure: r failed).
 */
static bool settle_snapshot(Replication *r)
{
    Lsn cp;
    SnapState st;
    PfError err;

    if (!r->snapshot_open || snapshot_phase(r->snapshot) != SNAPSHOT_SUBMITTED)
        return false;
    cp = snapshot_consistent_lsn(r->snapshot);
    if (pipeline_confirmed_lsn(r->pipeline) < cp)
        return false;
    st.kind = SNAP_STATE_DONE;
    st.consistent_lsn = cp;
    r->snapshot_open = false;
    snapshot_mark_done(r->snapshot);
    r->resync = false;
    if (!snap_state_write(r->cfg->source.state_dir, slot_name(r), &st, &err)) {
        fail(r, &err);
        return false;
    }
    return true;
}

/* Before-sleep work while the snapshot runs; returns the next deadline. */
static TimeUs poll_snapshot(Replication *r, TimeUs now)
{
    TimeUs next;
    PfError err;

    if (r->stop_reading) {
        /* Rows not yet read are dropped; rows submitted are drained by the daemon. */
        if (snapshot_phase(r->snapshot) == SNAPSHOT_RUNNING)
            abandon_snapshot(r);
        settle_snapshot(r);
        return TIME_NEVER;
    }
    next = snapshot_poll(r->snapshot, now);
    if (snapshot_phase(r->snapshot) == SNAPSHOT_FAILED) {
        err = *snapshot_error(r->snapshot);
        abandon_snapshot(r);
        if (err.kind == ERR_FATAL)
            fail(r, &err);
        else
            retry_later(r, &err, false);
        return r->state == REPL_FAILED ? TIME_NEVER : r->retry_at;
    }
    if (settle_snapshot(r)) {
        set_state(r, REPL_CONNECTING);
        send_start(r);
        return r->step_deadline;
    }
    return next;
}

/* Classifies a failed command's result (see repl_classify_error). */
static void result_error(Replication *r, const PGresult *res, const char *what, PfError *err,
                         bool *busy_slot)
{
    char buf[ERR_MSG_SIZE];

    repl_classify_error(res, conn_error(r, buf, sizeof buf), slot_name(r), what, err, busy_slot);
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
        {
            IdentifyResult id;
            if (!repl_read_identify(res, r->system_id, &id, &err)) {
                fail(r, &err);
                return;
            }
            snprintf(r->system_id, sizeof r->system_id, "%s", id.system_id);
            snprintf(r->source->system_id, sizeof r->source->system_id, "%s", id.system_id);
            snprintf(r->source->dbname, sizeof r->source->dbname, "%s", id.dbname);
            if (id.xlogpos > r->server_wal_end)
                r->server_wal_end = id.xlogpos;
        }
        send_check_tables(r);
        return;

    case STEP_CHECK_TABLES:
        if (st != PGRES_TUPLES_OK) {
            result_error(r, res, "check the tables listed in [source] tables", &err, &busy);
            retry_later(r, &err, busy);
            return;
        }
        if (!repl_check_tables_result(res, r->source->dbname, &err)) {
            fail(r, &err);
            return;
        }
        send_catalog(r);
        return;

    case STEP_CATALOG:
        if (st != PGRES_TUPLES_OK) {
            result_error(r, res, "read the catalog of the tables in [source] tables", &err, &busy);
            retry_later(r, &err, busy);
            return;
        }
        /* Kept for the initial snapshot (replaced at every reconnect). */
        repl_read_catalog(res, &r->catalog);
        if (!pipeline_prepare(r->pipeline, &r->catalog, &err)) {
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
        {
            bool exists;
            if (!repl_read_slot(res, slot_name(r), r->source->dbname, &exists, &err)) {
                fail(r, &err);
                return;
            }
            slot_checked(r, exists);
        }
        return;

    case STEP_TERMINATE:
        if (st != PGRES_TUPLES_OK) {
            result_error(r, res, "end the walsender holding the replication slot", &err, &busy);
            retry_later(r, &err, busy);
            return;
        }
        {
            Buf sql = BUF_INIT;
            repl_cmd_drop_slot(&sql, slot_name(r));
            send_command(r, STEP_DROP_SLOT, sql.data);
            buf_free(&sql);
        }
        return;

    case STEP_DROP_SLOT: {
        const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);

        /* 42704: gone meanwhile, which is what we wanted. */
        if (st != PGRES_COMMAND_OK && !(sqlstate && strcmp(sqlstate, "42704") == 0)) {
            result_error(r, res, "drop the replication slot of the unfinished snapshot", &err,
                         &busy);
            retry_later(r, &err, busy);
            return;
        }
        log_info(COMPONENT, "dropped replication slot \"%s\"", slot_name(r));
        create_slot(r);
        return;
    }

    case STEP_CREATE_SLOT:
        if (st != PGRES_TUPLES_OK) {
            const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            if (sqlstate && strcmp(sqlstate, "42710") == 0) {
                /* Another instance created it meanwhile: look again. Its snapshot is
                 * not ours to track (ours never started). */
                if (snapshot_wanted(r) &&
                    !snap_state_remove(r->cfg->source.state_dir, slot_name(r), &err)) {
                    fail(r, &err);
                    return;
                }
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
        if (snapshot_wanted(r))
            start_snapshot(r, res);
        else
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
        r->last_message = clock_mono_us();
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

/* Sends a standby status update: write = received, flush = apply = confirmed. */
static bool send_feedback(Replication *r, TimeUs now, PfError *err)
{
    char msg[REPL_STATUS_UPDATE_SIZE];
    char buf[ERR_MSG_SIZE];
    Lsn flush = pipeline_confirmed_lsn(r->pipeline);
    Lsn write = r->received_lsn > flush ? r->received_lsn : flush;
    int rc;
    bool ping = r->step == STEP_STREAM &&
                now - r->last_message >= r->cfg->source.status_interval / 2;

    /* Never report less than before: the server does not clamp. */
    if (flush < r->sent_flush_lsn)
        flush = r->sent_flush_lsn;
    repl_encode_status_update(msg, write, flush, clock_unix_to_pg(clock_wall_us()), ping);
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
    wal_lsn = repl_read_u64(data + 1);
    if (!w2j_decode(r->decoder, data + 25, (size_t)(len - 25), wal_lsn, &change, err))
        return false;
    if (change.kind == CHANGE_COMMIT && change.end_lsn > r->received_lsn)
        r->received_lsn = change.end_lsn;
    if (change.kind == CHANGE_COMMIT && change.end_lsn > r->silence_lsn)
        r->silence_factor = 1; /* past whatever kept the server silent */
    if (wal_lsn > r->server_wal_end)
        r->server_wal_end = wal_lsn;
    return pipeline_submit(r->pipeline, &change, err);
}

static void handle_keepalive(Replication *r, const char *data, int len)
{
    Lsn wal_end;

    if (len < 18)
        return;
    wal_end = repl_read_u64(data + 1);
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

/* Whether pgfan reads the stream now. The silence clock runs only then:
 * paused reading is backpressure, the server's messages wait in TCP. */
static bool reading_stream(const Replication *r)
{
    return r->step == STEP_STREAM && !r->reading_stopped && pipeline_can_accept(r->pipeline);
}

static TimeUs silence_limit(const Replication *r)
{
    return r->cfg->source.status_interval * SILENCE_INTERVALS * r->silence_factor;
}

/* Drops a stream that stayed silent past the limit; true when it did. */
static bool drop_if_silent(Replication *r, TimeUs now)
{
    PfError err;
    TimeUs limit = silence_limit(r);

    if (!reading_stream(r)) {
        r->last_message = now;
        return false;
    }
    if (now - r->last_message < limit)
        return false;
    err_set(&err, ERR_RETRY,
            "no message from PostgreSQL for %.0f s while streaming, although status updates "
            "asked for one every %.0f s: the network or the server is gone",
            (double)(now - r->last_message) / USECS_PER_SEC,
            (double)r->cfg->source.status_interval / USECS_PER_SEC);
    err_hint(&err, "pgfan reconnects and the slot sends again what was not confirmed; if the "
                   "network is fine, look for a long transaction the walsender is decoding "
                   "(the limit doubles on each attempt, up to %d s)",
             (int)(limit / r->silence_factor * SILENCE_MAX_FACTOR / USECS_PER_SEC));
    r->silence_lsn = r->received_lsn;
    if (r->silence_factor < SILENCE_MAX_FACTOR)
        r->silence_factor *= 2;
    retry_later(r, &err, false);
    return true;
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
        r->last_message = clock_mono_us();
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
    if (r->step == STEP_SNAPSHOT) {
        watch_socket(r); /* not watched while the snapshot runs */
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
    r->watched = WATCHED_UNKNOWN;
    r->state = REPL_CONNECTING;
    r->silence_factor = 1;
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
    snapshot_free(r->snapshot);
    catalog_clear(&r->catalog);
    free(r->session_options);
    free(r);
}

void repl_start(Replication *r)
{
    PfError err;

    free(r->session_options);
    r->session_options = repl_session_options(r->cfg->source.dsn, &err);
    if (!r->session_options) {
        fail(r, &err);
        return;
    }
    if (snapshot_wanted(r) && !snap_state_check_dir(r->cfg->source.state_dir, &err)) {
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
    case REPL_SNAPSHOT:
        return poll_snapshot(r, now);
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
    if (drop_if_silent(r, now))
        return r->retry_at;
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
    if (reading_stream(r) && r->last_message + silence_limit(r) < next)
        next = r->last_message + silence_limit(r);
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
    if (r->state == REPL_SNAPSHOT && snapshot_phase(r->snapshot) == SNAPSHOT_RUNNING)
        abandon_snapshot(r);
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
        /* A snapshot the sinks made durable while draining is done. */
        if (r->state == REPL_SNAPSHOT)
            settle_snapshot(r);
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
    case REPL_SNAPSHOT:
        return "snapshot";
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

const Snapshot *repl_snapshot(const Replication *r)
{
    return r->snapshot;
}
