/*
 * test_ops.c - operations against a real PostgreSQL 15 with wal2json: the
 * slot monitor (wal_status, sizes, unreserved and lost slots), heartbeats,
 * SIGHUP reload and the JSON log format, through the real pgfan binary.
 *
 * The lost-slot test lowers max_slot_wal_keep_size for the whole test
 * cluster (ALTER SYSTEM) and restores it afterwards, also when the test
 * fails (unchecked fixture); this suite runs alone (is_parallel: false).
 * Nothing sleeps: every wait polls a condition under a deadline.
 */
#include "../../common/buf.h"
#include "../../common/clock.h"
#include "../../common/mem.h"
#include "../harness/harness.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define WAIT_MS 60000

typedef struct Env {
    char *dir;
    char *db;
    char *config;
    char *out;
    char *log;
    char *sock;
    PGconn *conn;
} Env;

/* A database (also the slot's name) with orders(id) and noise(v); no config yet. */
static Env env_new(const char *name)
{
    Env e;

    e.conn = h_setup(name, "CREATE TABLE orders(id bigint PRIMARY KEY); CREATE TABLE noise(v int)",
                     &e.dir);
    e.db = xstrdup(name);
    e.config = h_path(e.dir, "pgfan.conf");
    e.out = h_path(e.dir, "out.ndjson");
    e.log = h_path(e.dir, "pgfan.log");
    e.sock = h_path(e.dir, "status.sock");
    return e;
}

/*
 * Writes the config: [source] for the env's database and slot plus
 * source_extra, [status] socket plus status_extra, [log] level/format, the
 * file sink at out_name, then tail verbatim (more sections).
 */
static void write_config(const Env *e, const char *source_extra, const char *status_extra,
                         const char *level, const char *format, const char *out_name,
                         const char *tail)
{
    char *dsn = h_dsn(e->db);

    h_write_file(e->config,
                 "[source]\ndsn = %s\nslot = %s\ntables = public.orders\n%s"
                 "[status]\nsocket = %s\n%s"
                 "[log]\nlevel = %s\nformat = %s\n"
                 "[sink.file]\npath = %s/%s\n%s",
                 dsn, e->db, source_extra, e->sock, status_extra, level, format, e->dir, out_name,
                 tail);
    free(dsn);
}

static void env_free(Env *e)
{
    h_teardown(e->conn, e->db, e->dir);
    free(e->db);
    free(e->config);
    free(e->out);
    free(e->log);
    free(e->sock);
}

/* Runs `pgfan status -s SOCK ARGS...`; returns its exit code, *out its output (caller frees). */
static int run_status(const Env *e, const char *arg1, const char *arg2, char **out)
{
    char *path = h_path(e->dir, "status.out");
    int rc;

    h_write_file(path, "%s", "");
    /* arg1 NULL ends the arguments there */
    rc = h_pgfan_cmd(path, WAIT_MS, "status", "-s", e->sock, arg1, arg2, NULL);
    *out = h_read_file(path, NULL);
    free(path);
    return rc;
}

/* The status document, or NULL when the daemon did not answer. */
static char *status_json(const Env *e)
{
    char *doc;

    if (run_status(e, "--json", NULL, &doc) == 0)
        return doc;
    free(doc);
    return NULL;
}

typedef struct DocWait {
    const Env *e;
    const char *needle;
    const char *needle2; /* may be NULL */
    char *last;          /* the last document read (owned) */
} DocWait;

static bool doc_has(void *arg)
{
    DocWait *w = arg;

    free(w->last);
    w->last = status_json(w->e);
    return w->last && strstr(w->last, w->needle) &&
           (w->needle2 == NULL || strstr(w->last, w->needle2));
}

/* Waits until the status document contains needle (and needle2); returns it (caller frees). */
static char *wait_status(const Env *e, const char *needle, const char *needle2)
{
    DocWait w = {e, needle, needle2, NULL};

    ck_assert_msg(h_wait_until(doc_has, &w, WAIT_MS), "status never showed %s%s%s; last:\n%s",
                  needle, needle2 ? " and " : "", needle2 ? needle2 : "",
                  w.last ? w.last : "(no answer)");
    return w.last;
}

/*
 * The text of member key inside the object that starts at "obj" (e.g.
 * "\"heartbeat\":{"), or at the top level when obj is NULL: up to the next ','
 * or '}' (strings keep their quotes). Caller frees.
 */
static char *member(const char *doc, const char *obj, const char *key)
{
    char pat[128];
    const char *p = doc;
    size_t len;

    if (obj) {
        p = strstr(doc, obj);
        ck_assert_msg(p != NULL, "no %s in %s", obj, doc);
    }
    snprintf(pat, sizeof pat, "\"%s\":", key);
    p = strstr(p, pat);
    ck_assert_msg(p != NULL, "no %s in %s", key, doc);
    p += strlen(pat);
    len = strcspn(p, ",}");
    return xstrndup(p, len);
}

static double member_num(const char *doc, const char *obj, const char *key)
{
    char *text = member(doc, obj, key);
    double v;

    ck_assert_msg(strcmp(text, "null") != 0, "%s is null in %s", key, doc);
    v = strtod(text, NULL);
    free(text);
    return v;
}

typedef struct NumWait {
    const Env *e;
    const char *obj;
    const char *key;
    double min;
    char *last;
} NumWait;

static bool num_reached(void *arg)
{
    NumWait *w = arg;
    char *text;

    free(w->last);
    w->last = status_json(w->e);
    if (!w->last || !strstr(w->last, w->obj))
        return false;
    text = member(w->last, w->obj, w->key);
    if (strcmp(text, "null") == 0) {
        free(text);
        return false;
    }
    {
        bool ok = strtod(text, NULL) >= w->min;
        free(text);
        return ok;
    }
}

/* Waits until obj's numeric member key is >= min; returns the document (caller frees). */
static char *wait_status_num(const Env *e, const char *obj, const char *key, double min)
{
    NumWait w = {e, obj, key, min, NULL};

    ck_assert_msg(h_wait_until(num_reached, &w, WAIT_MS), "status never had %s >= %g; last:\n%s",
                  key, min, w.last ? w.last : "(no answer)");
    return w.last;
}

/* ---- HTTP (metrics) ---- */

/* A listening socket that never accepts: requests to it hang (the webhook never answers). */
static int blackhole(int *port)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 64), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* ---- the slot monitor ---- */

START_TEST(test_slot_monitor_reports)
{
    Env e = env_new("ops_monitor");
    int port = h_free_tcp_port();
    char status_extra[64];
    pid_t pid;
    char *doc, *text, *r, *body;

    snprintf(status_extra, sizeof status_extra, "metrics_listen = 127.0.0.1:%d\n", port);
    write_config(&e, "slot_check_interval = 200ms\n", status_extra, "debug", "text", "out.ndjson",
                 "");
    pid = h_pgfan_start(e.config, e.log);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders VALUES (1)");
    doc = wait_status(&e, "\"wal_status\":\"reserved\"", "\"active\":true");
    text = member(doc, "\"slot_health\":{", "monitor");
    ck_assert_str_eq(text, "\"connected\"");
    free(text);
    /* the test server keeps max_slot_wal_keep_size = -1: no safe size */
    text = member(doc, "\"slot_health\":{", "safe_wal_size");
    ck_assert_str_eq(text, "null");
    free(text);
    ck_assert(member_num(doc, "\"slot_health\":{", "retained_bytes") >= 0);
    text = member(doc, "\"slot_health\":{", "restart_lsn");
    ck_assert_msg(text[0] == '"' && strchr(text, '/'), "restart_lsn %s", text);
    free(text);
    text = member(doc, "\"slot_health\":{", "warning");
    ck_assert_str_eq(text, "\"\"");
    free(text);
    free(doc);
    h_wait_file_contains(e.log,
                         "slot-monitor: replication slot \"ops_monitor\": wal_status "
                         "reserved",
                         WAIT_MS);

    /* a normal connection (not a walsender) named pgfan-monitor, next to the walsender */
    text = h_sql_value(e.conn, "SELECT string_agg(backend_type, ',' ORDER BY backend_type) "
                               "FROM pg_stat_activity WHERE datname = 'ops_monitor' AND "
                               "application_name IN ('pgfan', 'pgfan-monitor')");
    ck_assert_str_eq(text, "client backend,walsender");
    free(text);

    /* the table and --check */
    ck_assert_int_eq(run_status(&e, NULL, NULL, &text), 0);
    ck_assert_msg(strstr(text, "\nslot wal_status reserved  safe_wal_size -  retained ") != NULL,
                  "%s", text);
    free(text);
    ck_assert_int_eq(run_status(&e, "--check", NULL, &text), 0);
    ck_assert_msg(strncmp(text, "OK: streaming", 13) == 0, "%s", text);
    free(text);

    r = h_http_get(port, "/metrics");
    ck_assert_ptr_nonnull(r);
    body = strstr(r, "\r\n\r\n");
    ck_assert_ptr_nonnull(body);
    body += 4;
    ck_assert(h_metric_value(body, "pgfan_slot_wal_status{wal_status=\"reserved\"}") == 1);
    ck_assert(h_metric_value(body, "pgfan_slot_wal_status{wal_status=\"lost\"}") == 0);
    ck_assert(h_metric_value(body, "pgfan_slot_wal_status{wal_status=\"unreserved\"}") == 0);
    ck_assert(h_metric_value(body, "pgfan_slot_retained_wal_bytes") >= 0);
    ck_assert(h_metric_value(body, "pgfan_slot_safe_wal_size_bytes") == -1); /* absent: unlimited */
    ck_assert(h_metric_value(body, "pgfan_slot_monitor_up") == 1);
    ck_assert(h_metric_value(body, "pgfan_heartbeats_total") >= 0);
    h_promtool_check(e.dir, body);
    free(r);

    /* the monitor's connection dies: it comes back after a backoff; streaming never stops */
    h_sql(e.conn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                  "application_name = 'pgfan-monitor' AND datname = 'ops_monitor'");
    /* "could not keep the monitor connection" when idle, "could not read the
     * monitor query's answer" when a query was running */
    h_wait_file_contains(e.log, "WARNING slot-monitor: could not ", WAIT_MS);
    h_wait_file_contains(e.log, "INFO slot-monitor: connected again", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders VALUES (2)");
    h_wait_caught_up(e.conn, e.db, WAIT_MS, e.log);
    ck_assert_uint_eq(h_count_lines(e.out), 2);
    ck_assert(!h_file_contains(e.log, "replication: could not"));
    h_pgfan_stop(pid, WAIT_MS);
    env_free(&e);
}
END_TEST

static void restore_keep_size(void)
{
    PGconn *pg = h_pg_connect("postgres");

    /* ALTER SYSTEM refuses to run in a transaction block: two commands */
    h_sql(pg, "ALTER SYSTEM RESET max_slot_wal_keep_size");
    h_sql(pg, "SELECT pg_reload_conf()");
    PQfinish(pg);
}

/* Writes WAL in other segments: after two switches the slot's segment is behind. */
static void switch_wal(PGconn *conn, int times)
{
    for (int i = 0; i < times; i++)
        h_sql(conn, "INSERT INTO noise SELECT generate_series(1, 100); SELECT pg_switch_wal()");
}

START_TEST(test_slot_unreserved_then_lost)
{
    Env e = env_new("ops_lost");
    int port;
    int hole = blackhole(&port);
    char tail[160];
    pid_t pid;
    char *doc, *text;
    PGconn *pg = h_pg_connect("postgres");

    /* The webhook endpoint never answers: the insert below is never durable, so the
     * slot's position stays where it is while WAL moves on. */
    snprintf(tail, sizeof tail, "[sink.webhook]\nurl = http://127.0.0.1:%d/hook\ntimeout = 10min\n",
             port);
    write_config(&e, "slot_check_interval = 100ms\nheartbeat_interval = 0\n", "", "debug", "text",
                 "out.ndjson", tail);
    pid = h_pgfan_start(e.config, e.log);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders VALUES (1)");
    free(wait_status(&e, "\"inflight_transactions\":1", "\"wal_status\":\"reserved\""));

    h_sql(pg, "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'");
    h_sql(pg, "SELECT pg_reload_conf()");
    switch_wal(e.conn, 3);
    doc = wait_status(&e, "\"wal_status\":\"unreserved\"", NULL);
    text = member(doc, "\"slot_health\":{", "warning");
    ck_assert_msg(strstr(text, "replication slot \\\"ops_lost\\\" is unreserved") != NULL, "%s",
                  text);
    free(text);
    ck_assert(member_num(doc, "\"slot_health\":{", "safe_wal_size") <= 0);
    free(doc);
    h_wait_file_contains(e.log, "WARNING slot-monitor: replication slot \"ops_lost\" is unreserved",
                         WAIT_MS);
    ck_assert_int_eq(run_status(&e, "--check", NULL, &text), 1);
    {
        const char *want = "UNHEALTHY: slot wal_status is unreserved: replication slot "
                           "\"ops_lost\" is unreserved";
        ck_assert_msg(strncmp(text, want, strlen(want)) == 0, "%s", text);
    }
    free(text);

    /* The checkpoint removes the WAL: the slot is invalidated and pgfan stops with the recovery. */
    h_sql(pg, "CHECKPOINT");
    ck_assert_int_eq(h_wait_exit(pid, WAIT_MS), 1);
    /* Whoever notices first says it: the slot monitor, or the walsender
     * refusing to go on with an invalidated slot. */
    {
        char *log = h_read_file(e.log, NULL);

        ck_assert_msg(strstr(log, "ERROR pgfan: could not keep streaming from replication slot "
                                  "\"ops_lost\": it is lost (wal_status lost)") ||
                          strstr(log, "replication slot \"ops_lost\" has been invalidated"),
                      "%s", log + (strlen(log) > 1500 ? strlen(log) - 1500 : 0));
        ck_assert_ptr_nonnull(strstr(log, "pg_drop_replication_slot('ops_lost')"));
        free(log);
    }
    text = h_sql_value(e.conn, "SELECT wal_status FROM pg_replication_slots WHERE slot_name = "
                               "'ops_lost'");
    ck_assert_str_eq(text, "lost");
    free(text);
    close(hole);
    restore_keep_size();
    PQfinish(pg);
    env_free(&e);
}
END_TEST

/* ---- heartbeats ---- */

START_TEST(test_heartbeat_advances_idle_slot)
{
    Env e = env_new("ops_heartbeat");
    pid_t pid;
    char *doc, *text;
    Lsn hb = LSN_INVALID;

    write_config(&e, "heartbeat_interval = 200ms\nslot_check_interval = 1s\n", "", "debug", "text",
                 "out.ndjson", "");
    pid = h_pgfan_start(e.config, e.log);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    /* nothing else writes to this database: only heartbeats move its slot */
    doc = wait_status_num(&e, "\"heartbeat\":{", "sent", 3);
    free(doc);
    doc = wait_status(&e, "\"heartbeat\":{", "\"last_error\":\"\"}");
    text = member(doc, "\"heartbeat\":{", "last_lsn");
    ck_assert_msg(text[0] == '"', "last_lsn %s", text);
    ck_assert(lsn_parse(text + 1, strlen(text) - 2, &hb));
    free(text);
    free(doc);
    h_wait_slot_confirmed(e.conn, e.db, hb, WAIT_MS, e.log);
    /* measured: the round trip of a confirmed heartbeat, not null */
    doc = wait_status_num(&e, "\"heartbeat\":{", "sent", 6);
    ck_assert(member_num(doc, "\"heartbeat\":{", "lag_seconds") >= 0);
    ck_assert(member_num(doc, "\"heartbeat\":{", "lag_seconds") < 10);
    ck_assert(member_num(doc, NULL, "lag_seconds") < 10);
    free(doc);
    /* heartbeats are not changes: no output */
    ck_assert_uint_eq(h_count_lines(e.out), 0);
    h_pgfan_stop(pid, WAIT_MS);
    env_free(&e);
}
END_TEST

/*
 * What pgfan relies on, on the SQL interface of a wal2json slot: a
 * non-transactional message passes add-tables filtering, add-msg-prefixes
 * keeps only the named prefix, and the xid the heartbeat takes adds no
 * B/C pair (nothing else in its transaction is decoded).
 */
START_TEST(test_wal2json_heartbeat_messages)
{
    Env e = env_new("ops_w2j");
    char *text;

    /* the test server runs with synchronous_commit off: flush at commit here, as the
     * monitor's session does (synchronous_commit=local) */
    h_sql(e.conn, "SET synchronous_commit = on");
    h_sql(e.conn, "SELECT pg_create_logical_replication_slot('ops_w2j', 'wal2json')");
    h_sql(e.conn, "SELECT pg_logical_emit_message(false, 'other_app', 'x'), pg_current_xact_id()");
    h_sql(e.conn, "SELECT pg_logical_emit_message(false, 'pgfan_heartbeat', '{\"ts\":1}'), "
                  "pg_current_xact_id()");
    h_sql(e.conn, "INSERT INTO orders VALUES (7)");
    text = h_sql_value(e.conn,
                       "SELECT string_agg(data::jsonb->>'action' || ':' || "
                       "coalesce(data::jsonb->>'prefix', data::jsonb->>'table', ''), ' ') FROM "
                       "pg_logical_slot_peek_changes('ops_w2j', NULL, NULL, 'format-version', '2', "
                       "'add-tables', 'public.orders')");
    ck_assert_str_eq(text, "M:other_app M:pgfan_heartbeat B: I:orders C:");
    free(text);
    text = h_sql_value(e.conn,
                       "SELECT string_agg(data::jsonb->>'action' || ':' || "
                       "coalesce(data::jsonb->>'prefix', data::jsonb->>'table', ''), ' ') FROM "
                       "pg_logical_slot_peek_changes('ops_w2j', NULL, NULL, 'format-version', '2', "
                       "'add-tables', 'public.orders', 'add-msg-prefixes', 'pgfan_heartbeat')");
    ck_assert_str_eq(text, "M:pgfan_heartbeat B: I:orders C:");
    free(text);
    env_free(&e);
}
END_TEST

/* ---- SIGHUP ---- */

START_TEST(test_sighup_reload)
{
    Env e = env_new("ops_reload");
    pid_t pid;
    char *doc, *text;

    write_config(&e, "heartbeat_interval = 10s\n", "", "info", "text", "out.ndjson", "");
    pid = h_pgfan_start(e.config, e.log);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    doc = wait_status(&e, "\"log_level\":\"info\",\"log_format\":\"text\"", NULL);
    free(doc);

    /* reloadable: level, format, heartbeat interval; not: the file sink's path */
    write_config(&e, "heartbeat_interval = 300ms\n", "", "debug", "json", "other.ndjson", "");
    h_kill(pid, SIGHUP);
    h_wait_file_contains(e.log, "INFO pgfan: reload: [log] level: info -> debug", WAIT_MS);
    h_wait_file_contains(e.log, "INFO pgfan: reload: [log] format: text -> json", WAIT_MS);
    h_wait_file_contains(e.log, "INFO pgfan: reload: [source] heartbeat_interval: 10s -> 300ms",
                         WAIT_MS);
    h_wait_file_contains(e.log, "WARNING pgfan: reload: [sink.file] path changed", WAIT_MS);
    h_wait_file_contains(e.log, "needs a restart, not applied", WAIT_MS);
    /* the summary is written after the switch: JSON already */
    h_wait_file_contains(e.log,
                         "\"level\":\"info\",\"component\":\"pgfan\",\"msg\":\"configuration "
                         "reloaded: 3 changes applied, 1 needs a restart\"}",
                         WAIT_MS);
    doc =
        wait_status(&e, "\"log_level\":\"debug\",\"log_format\":\"json\"",
                    "\"reload\":{\"ok\":1,\"failed\":0,\"restart_needed\":1,\"last_error\":\"\"}");
    free(doc);
    free(wait_status(&e, "\"heartbeat\":{\"interval_seconds\":0.300", NULL));

    /* an invalid file changes nothing, and says why, one line per problem */
    h_write_file(e.config, "[source]\ndsn = x\ntables = orders\nbogus = 1\n[log]\nlevel = loud\n");
    h_kill(pid, SIGHUP);
    h_wait_file_contains(e.log, "\"msg\":\"reload failed: keeping the current configuration\"",
                         WAIT_MS);
    h_wait_file_contains(e.log, "unknown key \\\"bogus\\\" in [source]", WAIT_MS);
    h_wait_file_contains(e.log, "invalid value \\\"loud\\\" for level in [log]", WAIT_MS);
    doc = wait_status(&e, "\"reload\":{\"ok\":1,\"failed\":1", NULL);
    text = member(doc, NULL, "log_level");
    ck_assert_str_eq(text, "\"debug\"");
    free(text);
    text = member(doc, "\"reload\":{", "last_error");
    ck_assert_msg(strstr(text, "unknown key") != NULL, "%s", text);
    free(text);
    free(doc);

    /* still streaming, to the path it started with */
    h_sql(e.conn, "INSERT INTO orders VALUES (1)");
    h_wait_caught_up(e.conn, e.db, WAIT_MS, e.log);
    ck_assert_uint_eq(h_count_lines(e.out), 1);
    h_pgfan_stop(pid, WAIT_MS);
    /* after the switch every line is one JSON object */
    {
        size_t n;
        char **lines = h_read_lines(e.log, &n);
        bool json = false;
        for (size_t i = 0; i < n; i++) {
            if (strstr(lines[i], "configuration reloaded"))
                json = true;
            if (json)
                ck_assert_msg(lines[i][0] == '{' && strstr(lines[i], "\"component\":"), "%s",
                              lines[i]);
        }
        ck_assert(json);
        h_free_lines(lines);
    }
    env_free(&e);
}
END_TEST

int main(void)
{
    const char *const env[] = {"PGFAN_TEST_PGPORT", "PGFAN_TEST_BIN", NULL};
    const TTest *const tests[] = {
        test_slot_monitor_reports,        test_heartbeat_advances_idle_slot,
        test_wal2json_heartbeat_messages, test_sighup_reload,
        test_slot_unreserved_then_lost,   NULL};

    /* max_slot_wal_keep_size is restored even when the lost-slot test fails */
    return h_run_suite("ops", "ops", 180, env, tests, restore_keep_size);
}
