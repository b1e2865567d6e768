/*
 * slot_monitor.c - slot checks and heartbeats on a normal libpq connection.
 *
 * A small state machine on the loop: OFF (nothing to do) -> CONNECTING
 * (PQconnectPoll) -> READY (idle, connected) <-> BUSY (one query in
 * flight: PQsendQueryParams, PQconsumeInput, PQgetResult until NULL), and
 * RETRY (waiting for the backoff) after any failure. One query at a time;
 * the slot check goes first when both are due.
 *
 * Logging follows the state, not the polling: a warning when a problem
 * starts (or changes kind), an info line when it ends, repeated identical
 * failures only at debug level.
 */
#include "slot_monitor.h"

#include "../common/backoff.h"
#include "../common/log.h"
#include "../common/mem.h"
#include "metrics.h"
#include "repl_protocol.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define COMPONENT "slot-monitor"

static const char check_sql[] =
    "SELECT s.slot_name, s.wal_status, s.safe_wal_size, "
    "pg_catalog.pg_wal_lsn_diff(c.lsn, s.restart_lsn)::bigint, s.restart_lsn, "
    "s.confirmed_flush_lsn, s.active, c.lsn "
    "FROM (SELECT CASE WHEN pg_catalog.pg_is_in_recovery() "
    "THEN pg_catalog.pg_last_wal_receive_lsn() ELSE pg_catalog.pg_current_wal_lsn() END AS lsn) c "
    "LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = $1";

/* The xid makes the commit flush the WAL that holds the message (see slot_monitor.h). */
static const char heartbeat_sql[] =
    "SELECT pg_catalog.pg_logical_emit_message(false, $1::text, $2::text), "
    "pg_catalog.pg_current_xact_id()";

typedef enum MonState {
    MON_OFF = 0, /* both intervals 0 */
    MON_CONNECTING,
    MON_READY,
    MON_BUSY,
    MON_RETRY,
    MON_STOPPED,
} MonState;

typedef enum Query {
    Q_NONE = 0,
    Q_CHECK,
    Q_HEARTBEAT,
} Query;

typedef enum WarnKind {
    WARN_NONE = 0,
    WARN_LOW_SAFE,
    WARN_UNRESERVED,
} WarnKind;

typedef struct Pending {
    Lsn lsn;     /* end of the message record */
    TimeUs sent; /* wall clock when it was written */
} Pending;

struct SlotMonitor {
    const Config *cfg;
    Loop *loop;
    SlotMonitorSettings set;
    char *session_options;

    PGconn *conn;
    int fd; /* watched socket, -1 when none */
    MonState state;
    Query running;
    PGresult *result; /* first result of the running query */
    bool want_write;
    TimeUs deadline; /* CONNECTING/BUSY: abandon after this */
    TimeUs retry_at; /* RETRY: connect again then */
    Backoff backoff;
    bool ever_connected;
    char conn_error[ERR_MSG_SIZE]; /* last connection failure ("" after a success) */

    /* slot checks */
    TimeUs next_check;
    bool has_reading;
    SlotReading reading;
    TimeUs checked_at; /* wall */
    WarnKind warn_kind;
    char warning[ERR_MSG_SIZE];
    char check_error[ERR_MSG_SIZE];
    PfError fatal;
    bool has_fatal;

    /* heartbeats */
    TimeUs next_heartbeat;
    TimeUs hb_written_at; /* wall clock of the running heartbeat's content */
    uint64_t hb_sent;
    Lsn hb_last_lsn;
    Pending pending[SLOT_MONITOR_MAX_PENDING];
    size_t n_pending;
    TimeUs hb_lag; /* last measured round trip, -1 before the first */
    char hb_error[ERR_MSG_SIZE];
};

static void on_socket(void *arg, int fd, unsigned events);

void slot_monitor_settings_from(const Config *cfg, SlotMonitorSettings *out)
{
    out->check_interval = cfg->source.slot_check_interval;
    out->warn_safe_wal_size = cfg->source.slot_warn_safe_wal_size;
    out->heartbeat_interval = cfg->source.heartbeat_interval;
}

/* ---- connection -------------------------------------------------------- */

static bool has_work(const SlotMonitor *m)
{
    return m->set.check_interval > 0 || m->set.heartbeat_interval > 0;
}

static void unwatch(SlotMonitor *m)
{
    if (m->fd >= 0) {
        loop_unwatch(m->loop, m->fd);
        m->fd = -1;
    }
}

static void watch(SlotMonitor *m, unsigned events)
{
    int fd = m->conn ? PQsocket(m->conn) : -1;

    if (fd != m->fd)
        unwatch(m);
    if (fd < 0)
        return;
    if (!loop_watch(m->loop, fd, events, on_socket, m))
        log_warning(COMPONENT, "could not watch the monitor connection: %s", strerror(errno));
    m->fd = fd;
}

static void close_connection(SlotMonitor *m)
{
    unwatch(m);
    PQclear(m->result);
    m->result = NULL;
    if (m->conn) {
        PQfinish(m->conn);
        m->conn = NULL;
    }
    m->running = Q_NONE;
    m->want_write = false;
}

static void copy_trimmed(char *dst, size_t size, const char *src)
{
    size_t len;

    snprintf(dst, size, "%s", src ? src : "");
    len = strlen(dst);
    while (len > 0 && (dst[len - 1] == '\n' || dst[len - 1] == ' '))
        dst[--len] = '\0';
}

static const char *conn_message(const SlotMonitor *m, char *buf, size_t size)
{
    copy_trimmed(buf, size, m->conn ? PQerrorMessage(m->conn) : "no connection");
    if (!buf[0])
        snprintf(buf, size, "connection lost");
    return buf;
}

/* Any failure of the connection: drop it and retry after the backoff. */
static void conn_failed(SlotMonitor *m, const char *what, const char *cause)
{
    char msg[ERR_MSG_SIZE];
    TimeUs delay = backoff_next(&m->backoff);

    snprintf(msg, sizeof msg, "could not %s: %s", what, cause);
    close_connection(m);
    m->state = MON_RETRY;
    m->retry_at = clock_mono_us() + delay;
    if (strcmp(msg, m->conn_error) != 0)
        log_warning(COMPONENT, "%s; retrying in %.1f s (streaming is not affected)", msg,
                    (double)delay / USECS_PER_SEC);
    else
        log_debug(COMPONENT, "%s; retrying in %.1f s", msg, (double)delay / USECS_PER_SEC);
    snprintf(m->conn_error, sizeof m->conn_error, "%s", msg);
}

static void begin_connect(SlotMonitor *m, TimeUs now)
{
    ReplConnParams params;
    char buf[ERR_MSG_SIZE];

    repl_conn_params(&params, m->cfg->source.dsn, "false", "pgfan-monitor", m->session_options);
    m->conn = PQconnectStartParams(params.keys, params.values, 1);
    if (!m->conn || PQstatus(m->conn) == CONNECTION_BAD) {
        conn_failed(m, "connect to PostgreSQL", conn_message(m, buf, sizeof buf));
        return;
    }
    m->state = MON_CONNECTING;
    m->deadline = now + SLOT_MONITOR_TIMEOUT;
    watch(m, LOOP_WRITE); /* PQconnectStart: wait for writability first */
    if (m->fd < 0)
        conn_failed(m, "connect to PostgreSQL", "no socket");
}

static void connected(SlotMonitor *m)
{
    char buf[ERR_MSG_SIZE];

    if (PQsetnonblocking(m->conn, 1) != 0) {
        conn_failed(m, "set the monitor connection non-blocking", conn_message(m, buf, sizeof buf));
        return;
    }
    if (m->conn_error[0])
        log_info(COMPONENT, "connected again");
    else
        log_debug(COMPONENT, "connected (server %d)", PQserverVersion(m->conn));
    m->conn_error[0] = '\0';
    m->ever_connected = true;
    backoff_reset(&m->backoff);
    m->state = MON_READY;
    watch(m, LOOP_READ);
}

static void continue_connect(SlotMonitor *m)
{
    char buf[ERR_MSG_SIZE];

    switch (PQconnectPoll(m->conn)) {
    case PGRES_POLLING_FAILED:
        conn_failed(m, "connect to PostgreSQL", conn_message(m, buf, sizeof buf));
        return;
    case PGRES_POLLING_OK:
        connected(m);
        return;
    case PGRES_POLLING_WRITING:
        watch(m, LOOP_WRITE);
        break;
    case PGRES_POLLING_READING:
    default:
        watch(m, LOOP_READ);
        break;
    }
    if (m->fd < 0)
        conn_failed(m, "connect to PostgreSQL", "lost the socket");
}

/* ---- queries ----------------------------------------------------------- */

static void send_query(SlotMonitor *m, Query q, const char *sql, int n, const char *const *params,
                       TimeUs now)
{
    char buf[ERR_MSG_SIZE];
    int rc;

    if (!PQsendQueryParams(m->conn, sql, n, NULL, params, NULL, NULL, 0)) {
        conn_failed(m, "send a query", conn_message(m, buf, sizeof buf));
        return;
    }
    rc = PQflush(m->conn);
    if (rc < 0) {
        conn_failed(m, "send a query", conn_message(m, buf, sizeof buf));
        return;
    }
    m->want_write = rc == 1;
    m->running = q;
    m->state = MON_BUSY;
    m->deadline = now + SLOT_MONITOR_TIMEOUT;
    watch(m, LOOP_READ | (m->want_write ? LOOP_WRITE : 0));
}

static void send_check(SlotMonitor *m, TimeUs now)
{
    const char *params[] = {m->cfg->source.slot};

    m->next_check = now + m->set.check_interval;
    send_query(m, Q_CHECK, check_sql, 1, params, now);
}

static void send_heartbeat(SlotMonitor *m, TimeUs now)
{
    TimeUs wall = clock_wall_us();
    char ts[CLOCK_ISO_SIZE];
    Buf content = BUF_INIT;
    const char *params[2];

    m->next_heartbeat = now + m->set.heartbeat_interval;
    m->hb_written_at = wall;
    buf_printf(&content,
               "{\"ts\":\"%s\",\"unix_us\":%" PRId64 ",\"slot\":", clock_format_iso(wall, ts),
               wall);
    buf_append_json_string(&content, m->cfg->source.slot, strlen(m->cfg->source.slot));
    buf_append_char(&content, '}');
    params[0] = m->cfg->source.heartbeat_prefix;
    params[1] = content.data;
    send_query(m, Q_HEARTBEAT, heartbeat_sql, 2, params, now);
    buf_free(&content);
}

/* The query's error, one line: the server's primary message, else libpq's. */
static void result_error(const PGresult *res, char *buf, size_t size)
{
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;

    copy_trimmed(buf, size, primary ? primary : res ? PQresultErrorMessage(res) : "no result");
    if (!buf[0])
        snprintf(buf, size, "%s", res ? PQresStatus(PQresultStatus(res)) : "no result");
}

/* Logs a query failure when it differs from the last one of its kind. */
static void note_query_error(char *last, size_t size, const char *what, const char *cause)
{
    char msg[ERR_MSG_SIZE];

    snprintf(msg, sizeof msg, "could not %s: %s", what, cause);
    if (strcmp(msg, last) != 0)
        log_warning(COMPONENT, "%s", msg);
    snprintf(last, size, "%s", msg);
}

static WarnKind warn_kind_of(const SlotReading *r, SlotVerdict v)
{
    if (v != SLOT_WARN)
        return WARN_NONE;
    return r->wal_status == SLOT_WAL_UNRESERVED ? WARN_UNRESERVED : WARN_LOW_SAFE;
}

static void log_status_change(const SlotMonitor *m, const SlotReading *r)
{
    char kept[32], safe[32];
    const char *slot = m->cfg->source.slot;
    SlotWalStatus was = m->has_reading ? m->reading.wal_status : SLOT_WAL_UNKNOWN;

    if (r->wal_status == was)
        return;
    if (r->wal_status == SLOT_WAL_MISSING) {
        if (was != SLOT_WAL_UNKNOWN)
            log_warning(COMPONENT, "replication slot \"%s\" no longer exists", slot);
        return;
    }
    slot_format_bytes((int64_t)r->retained_bytes, kept);
    if (r->has_safe_wal_size)
        slot_format_bytes(r->safe_wal_size, safe);
    else
        snprintf(safe, sizeof safe, "unlimited");
    log_info(COMPONENT,
             "replication slot \"%s\": wal_status %s, %s of WAL retained, "
             "safe_wal_size %s",
             slot, slot_wal_status_name(r->wal_status), kept, safe);
}

static void handle_check(SlotMonitor *m, const PGresult *res)
{
    SlotReading r;
    PfError err;
    char cause[ERR_MSG_SIZE], warning[ERR_MSG_SIZE];
    SlotVerdict v;
    WarnKind kind;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        result_error(res, cause, sizeof cause);
        note_query_error(m->check_error, sizeof m->check_error, "read pg_replication_slots", cause);
        return;
    }
    if (!slot_reading_parse(res, &r, &err)) {
        note_query_error(m->check_error, sizeof m->check_error, "read pg_replication_slots",
                         err.msg);
        return;
    }
    m->check_error[0] = '\0';
    log_status_change(m, &r);
    v = slot_reading_judge(&r, m->cfg->source.slot, m->set.warn_safe_wal_size, warning,
                           sizeof warning, &m->fatal);
    if (v == SLOT_FATAL)
        m->has_fatal = true;
    kind = warn_kind_of(&r, v);
    if (kind != WARN_NONE && kind != m->warn_kind)
        log_warning(COMPONENT, "%s", warning);
    else if (kind == WARN_NONE && m->warn_kind != WARN_NONE)
        log_info(COMPONENT, "replication slot \"%s\" is safe again (wal_status %s)",
                 m->cfg->source.slot, slot_wal_status_name(r.wal_status));
    m->warn_kind = kind;
    snprintf(m->warning, sizeof m->warning, "%s", warning);
    m->reading = r;
    m->has_reading = true;
    m->checked_at = clock_wall_us();
}

static void handle_heartbeat(SlotMonitor *m, const PGresult *res)
{
    char cause[ERR_MSG_SIZE];
    const char *text;
    Lsn lsn;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) < 1 ||
        PQgetisnull(res, 0, 0)) {
        result_error(res, cause, sizeof cause);
        note_query_error(m->hb_error, sizeof m->hb_error, "write a heartbeat message", cause);
        return;
    }
    text = PQgetvalue(res, 0, 0);
    if (!lsn_parse(text, strlen(text), &lsn)) {
        note_query_error(m->hb_error, sizeof m->hb_error, "write a heartbeat message",
                         "pg_logical_emit_message returned no LSN");
        return;
    }
    m->hb_error[0] = '\0';
    m->hb_sent++;
    m->hb_last_lsn = lsn;
    if (m->n_pending < SLOT_MONITOR_MAX_PENDING)
        m->pending[m->n_pending++] = (Pending){lsn, m->hb_written_at};
}

/* Runs when PQgetResult returned NULL: the query is complete. */
static void finish_query(SlotMonitor *m)
{
    PGresult *res = m->result;
    Query q = m->running;
    char buf[ERR_MSG_SIZE];

    m->result = NULL;
    m->running = Q_NONE;
    m->state = MON_READY;
    if (PQstatus(m->conn) == CONNECTION_BAD) {
        PQclear(res);
        conn_failed(m, "read the monitor query's answer", conn_message(m, buf, sizeof buf));
        return;
    }
    if (q == Q_CHECK)
        handle_check(m, res);
    else if (q == Q_HEARTBEAT)
        handle_heartbeat(m, res);
    PQclear(res);
    watch(m, LOOP_READ);
}

static void collect_results(SlotMonitor *m)
{
    while (m->conn && !PQisBusy(m->conn)) {
        PGresult *res = PQgetResult(m->conn);

        if (!res) {
            finish_query(m);
            return;
        }
        if (!m->result)
            m->result = res;
        else
            PQclear(res);
    }
}

static void on_socket(void *arg, int fd, unsigned events)
{
    SlotMonitor *m = arg;
    char buf[ERR_MSG_SIZE];

    (void)fd;
    if (m->state == MON_CONNECTING) {
        continue_connect(m);
        return;
    }
    if (m->state != MON_READY && m->state != MON_BUSY)
        return;
    if (events & LOOP_WRITE) {
        int rc = PQflush(m->conn);
        if (rc < 0) {
            conn_failed(m, "send a query", conn_message(m, buf, sizeof buf));
            return;
        }
        m->want_write = rc == 1;
    }
    if (events & (LOOP_READ | LOOP_ERROR)) {
        if (!PQconsumeInput(m->conn)) {
            conn_failed(m,
                        m->state == MON_BUSY ? "read the monitor query's answer"
                                             : "keep the monitor connection",
                        conn_message(m, buf, sizeof buf));
            return;
        }
        if (m->state == MON_BUSY)
            collect_results(m);
        else if (PQstatus(m->conn) == CONNECTION_BAD) /* e.g. terminated by an administrator */
            conn_failed(m, "keep the monitor connection", conn_message(m, buf, sizeof buf));
        if (m->state != MON_BUSY)
            return;
    }
    if (m->state == MON_BUSY)
        watch(m, LOOP_READ | (m->want_write ? LOOP_WRITE : 0));
}

/* ---- life cycle -------------------------------------------------------- */

SlotMonitor *slot_monitor_new(const Config *cfg, Loop *loop, const SlotMonitorSettings *settings)
{
    SlotMonitor *m = xcalloc(1, sizeof *m);
    PfError err;

    m->cfg = cfg;
    m->loop = loop;
    m->set = *settings;
    m->fd = -1;
    m->hb_lag = -1;
    m->state = has_work(m) ? MON_RETRY : MON_OFF; /* RETRY with retry_at 0: connect now */
    backoff_init(&m->backoff, cfg->source.reconnect_min, cfg->source.reconnect_max);
    m->session_options = slot_monitor_session_options(cfg->source.dsn, &err);
    if (!m->session_options) {
        /* config_load validated the dsn through libpq already; keep going without */
        log_error_value(COMPONENT, &err);
        m->session_options = xstrdup(SLOT_MONITOR_SESSION_OPTIONS);
    }
    return m;
}

void slot_monitor_free(SlotMonitor *m)
{
    if (!m)
        return;
    close_connection(m);
    free(m->session_options);
    free(m);
}

void slot_monitor_apply(SlotMonitor *m, const SlotMonitorSettings *settings)
{
    TimeUs now = clock_mono_us();

    if (settings->check_interval != m->set.check_interval && m->next_check > now)
        m->next_check = now + settings->check_interval;
    if (settings->heartbeat_interval != m->set.heartbeat_interval && m->next_heartbeat > now)
        m->next_heartbeat = now + settings->heartbeat_interval;
    if (settings->warn_safe_wal_size != m->set.warn_safe_wal_size)
        m->next_check = now; /* judge the slot against the new limit soon */
    m->set = *settings;
    if (m->state == MON_STOPPED)
        return;
    if (!has_work(m)) {
        close_connection(m);
        m->state = MON_OFF;
    } else if (m->state == MON_OFF) {
        m->state = MON_RETRY;
        m->retry_at = now;
    }
}

void slot_monitor_stop(SlotMonitor *m)
{
    close_connection(m);
    m->state = MON_STOPPED;
}

static TimeUs earlier(TimeUs a, TimeUs b)
{
    return a < b ? a : b;
}

TimeUs slot_monitor_poll(SlotMonitor *m, TimeUs now, bool streaming)
{
    bool check_on = m->set.check_interval > 0;
    bool hb_on =
        m->set.heartbeat_interval > 0 && streaming && m->n_pending < SLOT_MONITOR_MAX_PENDING;
    TimeUs next = TIME_NEVER;

    switch (m->state) {
    case MON_OFF:
    case MON_STOPPED:
        return TIME_NEVER;
    case MON_RETRY:
        if (now < m->retry_at)
            return m->retry_at;
        begin_connect(m, now);
        return m->state == MON_CONNECTING ? m->deadline : m->retry_at;
    case MON_CONNECTING:
    case MON_BUSY:
        if (now >= m->deadline) {
            conn_failed(
                m, m->state == MON_CONNECTING ? "connect to PostgreSQL" : "run the monitor query",
                "no answer within 30 s");
            return m->retry_at;
        }
        return m->deadline;
    case MON_READY:
        break;
    }
    if (check_on && now >= m->next_check)
        send_check(m, now);
    else if (hb_on && now >= m->next_heartbeat)
        send_heartbeat(m, now);
    if (m->state != MON_READY)
        return m->state == MON_BUSY ? m->deadline : m->retry_at;
    if (check_on)
        next = m->next_check;
    if (hb_on)
        next = earlier(next, m->next_heartbeat);
    return next;
}

void slot_monitor_note_confirmed(SlotMonitor *m, Lsn confirmed, TimeUs now_wall)
{
    size_t done = 0;

    while (done < m->n_pending && m->pending[done].lsn <= confirmed) {
        TimeUs lag = now_wall - m->pending[done].sent;
        m->hb_lag = lag > 0 ? lag : 0;
        done++;
    }
    if (done > 0) {
        memmove(m->pending, m->pending + done, (m->n_pending - done) * sizeof m->pending[0]);
        m->n_pending -= done;
    }
}

/* ---- reading ----------------------------------------------------------- */

const PfError *slot_monitor_fatal(const SlotMonitor *m)
{
    return m->has_fatal ? &m->fatal : NULL;
}

const SlotReading *slot_monitor_reading(const SlotMonitor *m)
{
    return m->has_reading ? &m->reading : NULL;
}

const char *slot_monitor_warning(const SlotMonitor *m)
{
    return m->warning;
}

TimeUs slot_monitor_heartbeat_lag_us(const SlotMonitor *m, TimeUs now_wall)
{
    TimeUs lag = m->hb_lag;

    if (m->n_pending > 0 && now_wall - m->pending[0].sent > lag)
        lag = now_wall - m->pending[0].sent;
    return lag;
}

static const char *monitor_state_name(const SlotMonitor *m)
{
    switch (m->state) {
    case MON_OFF:
        return "off";
    case MON_CONNECTING:
        return m->ever_connected ? "reconnecting" : "connecting";
    case MON_READY:
    case MON_BUSY:
        return "connected";
    case MON_RETRY:
        return m->conn_error[0] ? "reconnecting" : "connecting";
    case MON_STOPPED:
        return "stopped";
    }
    return "unknown";
}

static void json_string(Buf *out, const char *s)
{
    buf_append_json_string(out, s, strlen(s));
}

static void json_lsn_or_null(Buf *out, const char *name, Lsn lsn, bool known)
{
    char text[LSN_TEXT_SIZE];

    if (known && lsn != LSN_INVALID)
        buf_printf(out, "\"%s\":\"%s\",", name, lsn_format(lsn, text));
    else
        buf_printf(out, "\"%s\":null,", name);
}

void slot_monitor_render_json(const SlotMonitor *m, Buf *out, TimeUs now_wall)
{
    const SlotReading *r = slot_monitor_reading(m);
    TimeUs lag = slot_monitor_heartbeat_lag_us(m, now_wall);
    const char *error = m->check_error[0] ? m->check_error : m->conn_error;

    buf_append_str(out, "\"slot_health\":{\"monitor\":");
    json_string(out, monitor_state_name(m));
    buf_printf(out, ",\"wal_status\":\"%s\",",
               slot_wal_status_name(r ? r->wal_status : SLOT_WAL_UNKNOWN));
    if (r && r->has_safe_wal_size)
        buf_printf(out, "\"safe_wal_size\":%" PRId64 ",", r->safe_wal_size);
    else
        buf_append_str(out, "\"safe_wal_size\":null,");
    if (r && r->has_retained)
        buf_printf(out, "\"retained_bytes\":%" PRIu64 ",", r->retained_bytes);
    else
        buf_append_str(out, "\"retained_bytes\":null,");
    json_lsn_or_null(out, "restart_lsn", r ? r->restart_lsn : 0, r != NULL);
    json_lsn_or_null(out, "slot_confirmed_lsn", r ? r->confirmed_flush_lsn : 0, r != NULL);
    buf_printf(out, "\"active\":%s,", r && r->active ? "true" : "false");
    if (r)
        buf_printf(out, "\"checked_seconds_ago\":%.1f,",
                   (double)(now_wall - m->checked_at) / USECS_PER_SEC);
    else
        buf_append_str(out, "\"checked_seconds_ago\":null,");
    buf_append_str(out, "\"warning\":");
    json_string(out, m->warning);
    buf_append_str(out, ",\"last_error\":");
    json_string(out, error);
    buf_printf(out, "},\"heartbeat\":{\"interval_seconds\":%.3f,\"sent\":%" PRIu64 ",",
               (double)m->set.heartbeat_interval / USECS_PER_SEC, m->hb_sent);
    json_lsn_or_null(out, "last_lsn", m->hb_last_lsn, m->hb_sent > 0);
    if (lag >= 0)
        buf_printf(out, "\"lag_seconds\":%.3f,", (double)lag / USECS_PER_SEC);
    else
        buf_append_str(out, "\"lag_seconds\":null,");
    buf_append_str(out, "\"last_error\":");
    json_string(out, m->hb_error);
    buf_append_char(out, '}');
}

void slot_monitor_render_metrics(const SlotMonitor *m, Buf *out, TimeUs now_wall)
{
    const SlotReading *r = slot_monitor_reading(m);
    SlotWalStatus status = r ? r->wal_status : SLOT_WAL_UNKNOWN;
    TimeUs lag = slot_monitor_heartbeat_lag_us(m, now_wall);

    metrics_append_header(out, "pgfan_slot_wal_status", "gauge",
                          "1 for the slot's wal_status in pg_replication_slots, 0 for the others "
                          "(unknown: not read yet, missing: no such slot).");
    for (int i = 0; i < SLOT_WAL_N_STATUS; i++)
        buf_printf(out, "pgfan_slot_wal_status{wal_status=\"%s\"} %d\n",
                   slot_wal_status_name((SlotWalStatus)i), (int)status == i);
    if (r && r->has_safe_wal_size) {
        metrics_append_header(out, "pgfan_slot_safe_wal_size_bytes", "gauge",
                              "WAL that can still be written before max_slot_wal_keep_size "
                              "invalidates the slot (absent when unlimited).");
        buf_printf(out, "pgfan_slot_safe_wal_size_bytes %" PRId64 "\n", r->safe_wal_size);
    }
    if (r && r->has_retained) {
        metrics_append_header(out, "pgfan_slot_retained_wal_bytes", "gauge",
                              "WAL the slot holds back: current WAL position minus restart_lsn.");
        buf_printf(out, "pgfan_slot_retained_wal_bytes %" PRIu64 "\n", r->retained_bytes);
    }
    metrics_append_header(out, "pgfan_slot_monitor_up", "gauge",
                          "1 while the monitoring connection (slot checks, heartbeats) is up.");
    buf_printf(out, "pgfan_slot_monitor_up %d\n", m->state == MON_READY || m->state == MON_BUSY);
    metrics_append_header(out, "pgfan_heartbeats_total", "counter",
                          "Heartbeat messages written with pg_logical_emit_message.");
    buf_printf(out, "pgfan_heartbeats_total %" PRIu64 "\n", m->hb_sent);
    if (lag >= 0) {
        metrics_append_header(out, "pgfan_heartbeat_lag_seconds", "gauge",
                              "Time from writing a heartbeat until pgfan confirmed it (the age "
                              "of the oldest unconfirmed one when larger).");
        buf_printf(out, "pgfan_heartbeat_lag_seconds %.3f\n", (double)lag / USECS_PER_SEC);
    }
}
