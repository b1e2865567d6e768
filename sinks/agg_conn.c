/*
 * agg_conn.c - asynchronous libpq for the aggregates sink (agg_conn.h).
 *
 * States: CLOSED -> CONNECTING (PQconnectPoll until OK) -> IDLE <-> BUSY.
 * In BUSY, results are read with PQconsumeInput + PQgetResult while
 * PQisBusy is false; a PGRES_COPY_IN result switches to pushing the
 * command's COPY data (at most COPY_CHUNK bytes queued in libpq at a
 * time), then PQputCopyEnd, then results again. The socket is watched for
 * writing only while libpq has unsent bytes.
 */
#include "agg_conn.h"

#include "../common/buf.h"
#include "../common/log.h"
#include "../common/loop.h"
#include "../common/mem.h"

#include <stdlib.h>
#include <string.h>

#define LOG_COMPONENT "sink.aggregates"
#define COPY_CHUNK (64 * 1024)

/* Pinned after the DSN's own options, so they win (agg_conn.h). */
#define SESSION_OPTIONS                                                                           \
    "-c datestyle=ISO -c timezone=UTC -c intervalstyle=iso_8601 -c extra_float_digits=3 "        \
    "-c standard_conforming_strings=on -c client_min_messages=warning"

typedef enum ConnState { C_CLOSED = 0, C_CONNECTING, C_IDLE, C_BUSY } ConnState;

struct AggConn {
    Loop *loop;
    char *dsn;
    PGconn *pg;
    int fd;            /* watched descriptor, -1 when none */
    unsigned events;   /* what it is watched for */
    ConnState state;

    AggConnDone done;  /* the command's (or the connection's) callback */
    void *arg;

    const char *copy;  /* borrowed COPY data */
    size_t copy_len, copy_off;
    bool copy_mode;    /* the server waits for COPY data */
    bool copy_ended;
    PGresult *rows;    /* last PGRES_TUPLES_OK */
    int stmt;          /* results seen so far = index of the next statement */
    bool failed;
    int failed_stmt;
    PfError err;
    char sqlstate[6];
};

static void on_socket(void *arg, int fd, unsigned events);

static void watch(AggConn *c, unsigned events)
{
    int fd = c->pg ? PQsocket(c->pg) : -1;

    if (!c->loop)
        return;
    if (fd != c->fd && c->fd >= 0) {
        loop_unwatch(c->loop, c->fd);
        c->fd = -1;
    }
    if (fd < 0)
        return;
    if (fd != c->fd || events != c->events) {
        if (!loop_watch(c->loop, fd, events, on_socket, c))
            log_warning(LOG_COMPONENT, "could not watch the connection's socket");
        c->fd = fd;
        c->events = events;
    }
}

static void on_notice(void *arg, const char *message)
{
    size_t len = strlen(message);

    (void)arg;
    while (len > 0 && message[len - 1] == '\n')
        len--;
    log_debug(LOG_COMPONENT, "server: %.*s", (int)len, message);
}

AggConn *agg_conn_new(Loop *loop, const char *dsn)
{
    AggConn *c = xcalloc(1, sizeof *c);

    c->loop = loop;
    c->dsn = xstrdup(dsn);
    c->fd = -1;
    return c;
}

void agg_conn_close(AggConn *c)
{
    if (c->fd >= 0 && c->loop)
        loop_unwatch(c->loop, c->fd);
    c->fd = -1;
    c->events = 0;
    if (c->pg)
        PQfinish(c->pg);
    c->pg = NULL;
    if (c->rows)
        PQclear(c->rows);
    c->rows = NULL;
    c->state = C_CLOSED;
    c->done = NULL;
    c->copy = NULL;
    c->copy_mode = false;
}

void agg_conn_free(AggConn *c)
{
    if (!c)
        return;
    agg_conn_close(c);
    free(c->dsn);
    free(c);
}

bool agg_conn_idle(const AggConn *c)
{
    return c->state == C_IDLE;
}

bool agg_conn_closed(const AggConn *c)
{
    return c->state == C_CLOSED;
}

bool agg_conn_connected(const AggConn *c)
{
    return c->state == C_IDLE || c->state == C_BUSY;
}

PGconn *agg_conn_pg(const AggConn *c)
{
    return c->state == C_IDLE || c->state == C_BUSY ? c->pg : NULL;
}

/* The DSN's options= value followed by ours. */
static char *session_options(const char *dsn)
{
    PQconninfoOption *opts = PQconninfoParse(dsn, NULL);
    Buf b = BUF_INIT;

    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (strcmp(o->keyword, "options") == 0 && o->val && o->val[0])
            buf_printf(&b, "%s ", o->val);
    }
    if (opts)
        PQconninfoFree(opts);
    buf_append_str(&b, SESSION_OPTIONS);
    return b.data;
}

static void finish_connect(AggConn *c, const PfError *err)
{
    AggConnDone done = c->done;
    void *arg = c->arg;

    c->done = NULL;
    if (err)
        agg_conn_close(c);
    if (done)
        done(arg, NULL, err, -1, "");
}

static void connect_failed(AggConn *c)
{
    PfError err;
    const char *why = c->pg ? PQerrorMessage(c->pg) : "out of memory";
    size_t len = strlen(why);

    while (len > 0 && (why[len - 1] == '\n' || why[len - 1] == ' '))
        len--;
    if (strstr(why, "authentication failed") || strstr(why, "does not exist") ||
        strstr(why, "no password supplied")) {
        err_set(&err, ERR_CONFIG, "could not connect to the aggregates database: %.*s", (int)len,
                why);
        err_hint(&err, "check dsn in [sink.aggregates] (by default the [source] dsn)");
    } else {
        err_set(&err, ERR_RETRY, "could not connect to the aggregates database: %.*s", (int)len,
                why);
    }
    finish_connect(c, &err);
}

static void connect_step(AggConn *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        watch(c, LOOP_READ);
        return;
    case PGRES_POLLING_WRITING:
        watch(c, LOOP_WRITE);
        return;
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(c->pg, 1) != 0) {
            connect_failed(c);
            return;
        }
        PQsetNoticeProcessor(c->pg, on_notice, NULL);
        c->state = C_IDLE;
        watch(c, LOOP_READ);
        finish_connect(c, NULL);
        return;
    case PGRES_POLLING_FAILED:
    default:
        connect_failed(c);
        return;
    }
}

bool agg_conn_connect(AggConn *c, AggConnDone done, void *arg, PfError *err)
{
    char *options = session_options(c->dsn);
    const char *keys[] = {"dbname", "options", "fallback_application_name", NULL};
    const char *values[] = {c->dsn, options, "pgfan-aggregates", NULL};

    agg_conn_close(c);
    c->pg = PQconnectStartParams(keys, values, 1);
    free(options);
    c->done = done;
    c->arg = arg;
    if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD) {
        err_set(err, ERR_RETRY, "could not connect to the aggregates database: %s",
                c->pg ? PQerrorMessage(c->pg) : "out of memory");
        agg_conn_close(c);
        return false;
    }
    c->state = C_CONNECTING;
    watch(c, LOOP_WRITE); /* libpq: behave as if PGRES_POLLING_WRITING at first */
    return true;
}

/* ---- commands ---- */

/* SQLSTATEs after which the same work may simply be tried again. */
static bool transient_sqlstate(const char *s)
{
    static const char *const codes[] = {"40001", "40P01", "55P03", "57P01", "57P02",
                                        "57P03", "53300", "PGF01", NULL};

    if (strncmp(s, "08", 2) == 0)
        return true;
    for (size_t i = 0; codes[i]; i++) {
        if (strcmp(s, codes[i]) == 0)
            return true;
    }
    return false;
}

static void record_failure(AggConn *c, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
    const char *hint = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) : NULL;
    bool lost = PQstatus(c->pg) == CONNECTION_BAD;

    if (c->failed)
        return;
    c->failed = true;
    c->failed_stmt = c->stmt;
    snprintf(c->sqlstate, sizeof c->sqlstate, "%s", state ? state : "");
    if (primary == NULL) {
        const char *m = PQerrorMessage(c->pg);
        size_t len = strlen(m);

        while (len > 0 && m[len - 1] == '\n')
            len--;
        err_set(&c->err, ERR_RETRY, "%.*s", (int)len, len ? m : "connection lost");
        return;
    }
    err_set(&c->err, lost || transient_sqlstate(c->sqlstate) ? ERR_RETRY : ERR_FATAL, "%s%s%s",
            primary, detail ? " (" : "", detail ? detail : "");
    if (detail)
        snprintf(c->err.msg + strlen(c->err.msg), sizeof c->err.msg - strlen(c->err.msg), ")");
    if (hint)
        err_hint(&c->err, "%s", hint);
}

static void lost(AggConn *c)
{
    if (!c->failed) {
        c->failed = true;
        c->failed_stmt = -1;
        c->sqlstate[0] = '\0';
        err_set(&c->err, ERR_RETRY, "lost the connection: %s", PQerrorMessage(c->pg));
        {
            size_t len = strlen(c->err.msg);
            while (len > 0 && c->err.msg[len - 1] == '\n')
                c->err.msg[--len] = '\0';
        }
    }
}

/* The command is over: report it. The callback may start the next one. */
static void finish_command(AggConn *c)
{
    AggConnDone done = c->done;
    void *arg = c->arg;
    PGresult *rows = c->rows;
    PfError err = c->err;
    bool failed = c->failed;
    int failed_stmt = c->failed ? c->failed_stmt : -1;
    char sqlstate[6];

    memcpy(sqlstate, c->sqlstate, sizeof sqlstate);
    c->rows = NULL;
    c->done = NULL;
    c->copy = NULL;
    c->copy_mode = false;
    if (failed && err.kind == ERR_RETRY && PQstatus(c->pg) == CONNECTION_BAD) {
        agg_conn_close(c);
    } else {
        c->state = C_IDLE;
        watch(c, LOOP_READ);
    }
    if (done)
        done(arg, failed ? NULL : rows, failed ? &err : NULL, failed_stmt, sqlstate);
    if (rows)
        PQclear(rows);
}

/* Pushes COPY data while the socket takes it; true when all was sent. */
static bool push_copy(AggConn *c)
{
    while (c->copy_off < c->copy_len) {
        size_t n = c->copy_len - c->copy_off;
        int r;

        if (PQflush(c->pg) != 0)
            return false; /* 1: wait until writable; -1: noticed by the caller */
        if (n > COPY_CHUNK)
            n = COPY_CHUNK;
        r = PQputCopyData(c->pg, c->copy + c->copy_off, (int)n);
        if (r == 0)
            return false;
        if (r < 0) {
            lost(c);
            return false;
        }
        c->copy_off += n;
    }
    if (!c->copy_ended) {
        int r = PQputCopyEnd(c->pg, NULL);

        if (r == 0)
            return false;
        if (r < 0) {
            lost(c);
            return false;
        }
        c->copy_ended = true;
    }
    return true;
}

/* One result of the command; false when the result loop must pause. */
static bool take_result(AggConn *c, PGresult *res)
{
    switch (PQresultStatus(res)) {
    case PGRES_COPY_IN:
        PQclear(res);
        if (c->copy == NULL || c->copy_off > 0 || c->copy_ended) {
            /* no data for this COPY: end it with an error so the server moves on */
            PQputCopyEnd(c->pg, "pgfan: no COPY data for this statement");
            c->copy_ended = true;
            return true;
        }
        c->copy_mode = true;
        return false;
    case PGRES_TUPLES_OK:
        if (c->rows)
            PQclear(c->rows);
        c->rows = res;
        c->stmt++;
        return true;
    case PGRES_COMMAND_OK:
    case PGRES_EMPTY_QUERY:
        PQclear(res);
        c->stmt++;
        return true;
    default:
        record_failure(c, res);
        PQclear(res);
        c->stmt++;
        return true;
    }
}

void agg_conn_pump(AggConn *c)
{
    if (c->state != C_BUSY)
        return;
    if (c->copy_mode && !c->failed) {
        if (!push_copy(c)) {
            if (c->failed) {
                finish_command(c);
                return;
            }
            watch(c, LOOP_READ | LOOP_WRITE);
            return;
        }
        c->copy_mode = false;
    }
    switch (PQflush(c->pg)) {
    case -1:
        lost(c);
        finish_command(c);
        return;
    case 1:
        watch(c, LOOP_READ | LOOP_WRITE);
        break;
    default:
        watch(c, LOOP_READ);
        break;
    }
    if (!PQconsumeInput(c->pg)) {
        lost(c);
        finish_command(c);
        return;
    }
    while (!PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);

        if (res == NULL) {
            finish_command(c);
            return;
        }
        if (!take_result(c, res)) {
            agg_conn_pump(c); /* copy mode: start pushing at once */
            return;
        }
    }
}

static void on_socket(void *arg, int fd, unsigned events)
{
    AggConn *c = arg;

    (void)fd;
    (void)events;
    if (c->state == C_CONNECTING)
        connect_step(c);
    else if (c->state == C_BUSY)
        agg_conn_pump(c);
    else if (c->state == C_IDLE && c->pg) {
        /* an idle connection that becomes readable: a notice, or the server went away */
        if (!PQconsumeInput(c->pg) || PQstatus(c->pg) == CONNECTION_BAD) {
            log_warning(LOG_COMPONENT, "lost the idle connection to the aggregates database");
            agg_conn_close(c);
        }
    }
}

bool agg_conn_send(AggConn *c, const char *sql, const char *copy, size_t copy_len,
                   AggConnDone done, void *arg, PfError *err)
{
    if (c->state != C_IDLE)
        return err_set(err, ERR_RETRY, "could not send to the aggregates database: %s",
                       c->state == C_BUSY ? "a command is in progress" : "not connected");
    if (!PQsendQuery(c->pg, sql)) {
        err_set(err, ERR_RETRY, "could not send to the aggregates database: %s",
                PQerrorMessage(c->pg));
        agg_conn_close(c);
        return false;
    }
    c->state = C_BUSY;
    c->done = done;
    c->arg = arg;
    c->copy = copy;
    c->copy_len = copy_len;
    c->copy_off = 0;
    c->copy_mode = false;
    c->copy_ended = false;
    c->stmt = 0;
    c->failed = false;
    c->failed_stmt = -1;
    c->sqlstate[0] = '\0';
    err_clear(&c->err);
    watch(c, LOOP_READ | LOOP_WRITE);
    return true;
}
