/*
 * test_e2e.c - pgfan end to end against a real PostgreSQL 15 with wal2json.
 *
 * Each test gets its own database, slot and directory, runs the real pgfan
 * binary (PGFAN_TEST_BIN) and checks the NDJSON file and the slot's
 * confirmed_flush_lsn. Nothing sleeps: every wait polls a condition under
 * a deadline (h_wait_until).
 */
#include "../../common/buf.h"
#include "../../common/clock.h"
#include "../../common/mem.h"
#include "../harness/harness.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define WAIT_MS 60000

typedef struct Env {
    char *dir;
    char *db;
    char *slot;
    char *config;
    char *out;
    char *log;
    PGconn *conn;
} Env;

/* A database and slot called name with schema_sql, and h_write_config's file for `tables`. */
static Env env_new(const char *name, const char *schema_sql, const char *tables, const char *extra)
{
    Env e;

    e.conn = h_setup(name, schema_sql, &e.dir);
    e.db = xstrdup(name);
    e.slot = xstrdup(name);
    e.config = h_write_config(e.dir, e.db, e.slot, tables, extra ? extra : "");
    e.out = h_path(e.dir, "out.ndjson");
    e.log = h_path(e.dir, "pgfan.log");
    return e;
}

static void env_free(Env *e)
{
    h_teardown(e->conn, e->slot, e->dir);
    free(e->db);
    free(e->slot);
    free(e->config);
    free(e->out);
    free(e->log);
}

/* ---- tests -------------------------------------------------------------- */

START_TEST(test_envelopes_three_tables)
{
    Env e = env_new("e2e_basic",
                    "CREATE TABLE stores(id int PRIMARY KEY, name text, country text);"
                    "CREATE TABLE customers(id bigint PRIMARY KEY, email text);"
                    "CREATE TABLE orders(id bigint PRIMARY KEY, store_id int, status text,"
                    "  total_amount numeric(40,2), created_at timestamptz);"
                    "ALTER TABLE orders REPLICA IDENTITY FULL;"
                    "CREATE TABLE audit(id serial PRIMARY KEY, note text);",
                    "public.orders, public.customers, public.stores", NULL);
    pid_t pid = h_pgfan_start(e.config, e.log);
    char **lines;
    size_t n;

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO stores VALUES (7, 'Zürich \"Books\"', 'CH')");
    h_sql(e.conn, "BEGIN; INSERT INTO customers VALUES (42, 'a@example.com');"
                  "INSERT INTO orders VALUES (1001, 7, 'pending', "
                  "12345678901234567890123456789012345678.90, '2026-11-20 10:00:00+00');"
                  "INSERT INTO audit(note) VALUES ('not listed'); COMMIT");
    h_sql(e.conn, "UPDATE orders SET status = 'paid' WHERE id = 1001");
    h_sql(e.conn, "DELETE FROM customers WHERE id = 42");
    h_sql(e.conn, "TRUNCATE stores");
    /* Only an unlisted table: must not stall confirmation. */
    h_sql(e.conn, "INSERT INTO audit(note) SELECT 'x' FROM generate_series(1, 100)");
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);

    lines = h_read_lines(e.out, &n);
    ck_assert_msg(n == 6, "expected 6 lines, got %zu", n);
    ck_assert_ptr_nonnull(strstr(lines[0], "\"before\":null,\"after\":{\"id\":7,\"name\":"
                                           "\"Zürich \\\"Books\\\"\",\"country\":\"CH\"}"));
    ck_assert_ptr_nonnull(strstr(lines[0], "\"op\":\"c\""));
    ck_assert_ptr_nonnull(strstr(lines[0], "\"connector\":\"pgfan\""));
    ck_assert_ptr_nonnull(strstr(lines[0], "\"db\":\"e2e_basic\",\"schema\":\"public\","
                                           "\"table\":\"stores\""));
    ck_assert_ptr_nonnull(strstr(lines[1], "\"after\":{\"id\":42,\"email\":\"a@example.com\"}"));
    ck_assert_ptr_nonnull(
        strstr(lines[2], "\"after\":{\"id\":1001,\"store_id\":7,\"status\":\"pending\","
                         "\"total_amount\":12345678901234567890123456789012345678.90,"
                         "\"created_at\":\"2026-11-20T10:00:00Z\"}"));
    ck_assert_uint_eq(h_json_u64(lines[1], "txId"), h_json_u64(lines[2], "txId"));
    ck_assert_ptr_nonnull(strstr(lines[3], "\"before\":{\"id\":1001,\"store_id\":7,"
                                           "\"status\":\"pending\""));
    ck_assert_ptr_nonnull(strstr(lines[3], "\"status\":\"paid\""));
    ck_assert_ptr_nonnull(strstr(lines[3], "\"op\":\"u\""));
    ck_assert_ptr_nonnull(strstr(lines[4], "\"before\":{\"id\":42},\"after\":null"));
    ck_assert_ptr_nonnull(strstr(lines[4], "\"op\":\"d\""));
    ck_assert_ptr_nonnull(strstr(lines[5], "\"table\":\"stores\""));
    ck_assert_ptr_nonnull(strstr(lines[5], "\"op\":\"t\""));
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(strstr(lines[i], "audit") == NULL, "unlisted table leaked: %s", lines[i]);
        ck_assert_msg(strstr(lines[i], "\"snapshot\":\"false\"") != NULL, "%s", lines[i]);
    }
    h_free_lines(lines);
    h_pgfan_stop(pid, WAIT_MS);
    env_free(&e);
}
END_TEST

/* Rows of the harness's crash-test workload (h_workload_start). */
#define WORKLOAD_ROWS 3000

/*
 * Checks the workload's output file: every line whole, then
 * h_workload_check (every change at least once, duplicates only after
 * confirmed_before). Returns the duplicate count.
 */
static size_t check_workload_output(const char *path, Lsn confirmed_before, int rows)
{
    size_t n, dups;
    char **lines = h_read_lines(path, &n);
    HChange *changes = xcalloc(n ? n : 1, sizeof *changes);

    for (size_t i = 0; i < n; i++) {
        const char *l = lines[i];
        size_t len = strlen(l);
        const char *after = strstr(l, "\"after\":");

        ck_assert_msg(len > 2 && l[0] == '{' && l[len - 1] == '}', "torn line %zu: %s", i, l);
        ck_assert_msg(after != NULL, "no \"after\" in line %zu: %s", i, l);
        changes[i].commit_lsn = h_json_u64(l, "commit_lsn");
        changes[i].lsn = h_json_u64(l, "lsn");
        changes[i].id = h_json_u64(after, "id");
        changes[i].op = strstr(l, "\"op\":\"c\"") ? 'c' : strstr(l, "\"op\":\"u\"") ? 'u' : '?';
    }
    dups = h_workload_check(changes, n, rows, confirmed_before);
    free(changes);
    h_free_lines(lines);
    return dups;
}

START_TEST(test_kill9_at_least_once)
{
    Env e = env_new("e2e_kill", "CREATE TABLE orders(id bigint PRIMARY KEY, v int)",
                    "public.orders", NULL);
    pid_t pid = h_pgfan_start(e.config, e.log);
    PGconn *w;
    Lsn confirmed;
    size_t dups;

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    w = h_workload_start(e.db, WORKLOAD_ROWS);
    h_wait_lines(e.out, 600, WAIT_MS);
    confirmed = h_pgfan_crash(pid, e.conn, e.slot, WAIT_MS);

    pid = h_pgfan_start(e.config, e.log);
    h_workload_finish(w);
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    h_pgfan_stop(pid, WAIT_MS);
    dups = check_workload_output(e.out, confirmed, WORKLOAD_ROWS);
    /* check_workload_output fails the test on any lost change. */
    fprintf(stderr,
            "e2e_kill: %d changes checked, 0 lost, %zu duplicates (all after the confirmed "
            "position), 1 kill, %zu lines written\n",
            WORKLOAD_ROWS + WORKLOAD_ROWS / 3, dups, h_count_lines(e.out));
    env_free(&e);
}
END_TEST

START_TEST(test_sigterm_no_duplicates)
{
    Env e = env_new("e2e_term", "CREATE TABLE orders(id bigint PRIMARY KEY, v int)",
                    "public.orders", NULL);
    pid_t pid = h_pgfan_start(e.config, e.log);
    PGconn *w;
    size_t dups;

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    w = h_workload_start(e.db, WORKLOAD_ROWS);
    h_wait_lines(e.out, 600, WAIT_MS);
    h_pgfan_stop(pid, WAIT_MS);
    ck_assert(h_file_contains(e.log, "stopped cleanly"));

    pid = h_pgfan_start(e.config, e.log);
    h_workload_finish(w);
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    h_pgfan_stop(pid, WAIT_MS);
    dups = check_workload_output(e.out, UINT64_MAX, WORKLOAD_ROWS);
    ck_assert_uint_eq(dups, 0);
    env_free(&e);
}
END_TEST

START_TEST(test_idle_slot_advances)
{
    Env e = env_new("e2e_idle",
                    "CREATE TABLE orders(id bigint PRIMARY KEY);"
                    "CREATE TABLE other(id serial PRIMARY KEY, note text)",
                    "public.orders", NULL);
    pid_t pid = h_pgfan_start(e.config, e.log);
    PGconn *pg = h_pg_connect("postgres");

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    /* WAL of another database only: reaches pgfan as keepalives. */
    h_sql(pg, "CREATE TABLE IF NOT EXISTS idle_noise(v int); INSERT INTO idle_noise VALUES (1)");
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    /* Filtered transactions of this database: empty BEGIN/COMMIT pairs. */
    h_sql(e.conn, "INSERT INTO other(note) SELECT 'x' FROM generate_series(1, 50)");
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    ck_assert_uint_eq(h_count_lines(e.out), 0);
    PQfinish(pg);
    h_pgfan_stop(pid, WAIT_MS);
    env_free(&e);
}
END_TEST

START_TEST(test_unknown_table_is_config_error)
{
    Env e = env_new("e2e_unknown", "CREATE TABLE orders(id bigint PRIMARY KEY)",
                    "public.orders, public.nope", NULL);
    pid_t pid = h_pgfan_start(e.config, e.log);

    ck_assert_int_eq(h_wait_exit(pid, WAIT_MS), 2);
    ck_assert(h_file_contains(e.log, "could not find table public.nope listed in [source] "
                                     "tables in database \"e2e_unknown\""));
    ck_assert(h_file_contains(e.log, "HINT: create the table"));
    env_free(&e);
}
END_TEST

START_TEST(test_refused_plugin)
{
    Env e = env_new("e2e_refused", "CREATE TABLE orders(id bigint PRIMARY KEY)", "public.orders",
                    NULL);
    Buf cfg = BUF_INIT;
    char *dsn = h_dsn(e.db);
    pid_t pid;

    /* A server that does not allow wal2json, for this session only. */
    buf_printf(&cfg, "[source]\ndsn = %s options='-c output_plugin_libraries=pgoutput'\n"
                     "slot = e2e_refused\ntables = public.orders\n[status]\nsocket = %s/s.sock\n"
                     "[sink.file]\npath = %s/out.ndjson\n",
               dsn, e.dir, e.dir);
    h_write_file(e.config, "%s", cfg.data);
    pid = h_pgfan_start(e.config, e.log);
    ck_assert_int_eq(h_wait_exit(pid, WAIT_MS), 1);
    ck_assert(h_file_contains(e.log, "PostgreSQL refuses wal2json as an output plugin"));
    ck_assert(h_file_contains(e.log, "HINT: add wal2json to output_plugin_libraries"));
    buf_free(&cfg);
    free(dsn);
    env_free(&e);
}
END_TEST

START_TEST(test_replica_identity_warning_and_odd_names)
{
    Env e = env_new("e2e_names",
                    "CREATE TABLE nopk(v int);"
                    "CREATE TABLE \"we'ird, na.me\"(id int PRIMARY KEY, v text)",
                    "public.nopk, \"public\".\"we'ird, na.me\"", NULL);
    pid_t pid = h_pgfan_start(e.config, e.log);
    char **lines;
    size_t n;

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    ck_assert(h_file_contains(e.log, "table public.nopk has no usable replica identity"));
    ck_assert(h_file_contains(e.log, "HINT: ALTER TABLE public.nopk REPLICA IDENTITY FULL"));
    h_sql(e.conn, "INSERT INTO \"we'ird, na.me\" VALUES (1, 'a'); INSERT INTO nopk VALUES (5)");
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    lines = h_read_lines(e.out, &n);
    ck_assert_uint_eq(n, 2);
    ck_assert_ptr_nonnull(strstr(lines[0], "\"table\":\"we'ird, na.me\""));
    ck_assert_ptr_nonnull(strstr(lines[1], "\"after\":{\"v\":5}"));
    h_free_lines(lines);
    h_pgfan_stop(pid, WAIT_MS);
    env_free(&e);
}
END_TEST

/* A second pgfan for the env's slot, in a directory of its own. */
typedef struct Standby {
    char *dir;
    char *config;
    char *log;
    char *out;
} Standby;

/* Starts the standby once the active pgfan (logging to e->log) streams, and
 * waits until it found the slot taken. */
static pid_t standby_start(const Env *e, Standby *s)
{
    s->dir = h_tmpdir();
    s->config = h_write_config(s->dir, e->db, e->slot, "public.orders", "");
    s->log = h_path(s->dir, "pgfan.log");
    s->out = h_path(s->dir, "out.ndjson");
    h_wait_file_contains(e->log, "streaming from slot", WAIT_MS);
    {
        pid_t pid = h_pgfan_start(s->config, s->log);

        h_wait_file_contains(s->log, "is held by another consumer", WAIT_MS);
        return pid;
    }
}

static void standby_free(Standby *s)
{
    h_rm_rf(s->dir);
    free(s->dir);
    free(s->config);
    free(s->log);
    free(s->out);
}

START_TEST(test_standby_takes_over_busy_slot)
{
    Env e = env_new("e2e_ha", "CREATE TABLE orders(id bigint PRIMARY KEY)", "public.orders", NULL);
    Standby s2;
    pid_t active = h_pgfan_start(e.config, e.log);
    pid_t standby = standby_start(&e, &s2);

    h_pgfan_stop(active, WAIT_MS);
    h_wait_file_contains(s2.log, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders VALUES (77)");
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    ck_assert(h_file_contains(s2.out, "\"after\":{\"id\":77}"));
    h_pgfan_stop(standby, WAIT_MS);
    standby_free(&s2);
    env_free(&e);
}
END_TEST

START_TEST(test_status_command)
{
    Env e = env_new("e2e_status", "CREATE TABLE orders(id bigint PRIMARY KEY)", "public.orders",
                    NULL);
    pid_t pid = h_pgfan_start(e.config, e.log);
    char *sock = h_path(e.dir, "status.sock");
    char *json = h_path(e.dir, "status.json");
    char *table = h_path(e.dir, "status.txt");

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders VALUES (1)");
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    ck_assert_int_eq(h_pgfan_cmd(json, WAIT_MS, "status", "-s", sock, "--json", NULL), 0);
    ck_assert_int_eq(h_pgfan_cmd(table, WAIT_MS, "status", "-s", sock, NULL), 0);
    ck_assert(h_file_contains(json, "\"state\":\"streaming\""));
    ck_assert(h_file_contains(json, "\"slot\":\"e2e_status\""));
    ck_assert(h_file_contains(json, "\"database\":\"e2e_status\""));
    ck_assert(h_file_contains(json, "\"name\":\"file\""));
    ck_assert(h_file_contains(json, "\"events\":1"));
    ck_assert(h_file_contains(table, "streaming"));
    ck_assert(h_file_contains(table, "SINK"));
    ck_assert_int_eq(h_pgfan_cmd(table, WAIT_MS, "status", "-s", sock, "--check",
                                 "--max-lag-seconds", "300", NULL),
                     0);
    ck_assert(h_file_contains(table, "OK: streaming"));
    h_pgfan_stop(pid, WAIT_MS);
    /* The socket is gone with the daemon: exit 2 (also for --check). */
    ck_assert_int_eq(h_pgfan_cmd(table, WAIT_MS, "status", "-s", sock, "--check", NULL), 2);
    free(sock);
    free(json);
    free(table);
    env_free(&e);
}
END_TEST

START_TEST(test_reconnects_after_connection_loss)
{
    Env e = env_new("e2e_reconnect", "CREATE TABLE orders(id bigint PRIMARY KEY)",
                    "public.orders", "[source]\nreconnect_min = 100ms\nreconnect_max = 1s\n");
    pid_t pid = h_pgfan_start(e.config, e.log);

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders VALUES (1)");
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    /* Kill the walsender: pgfan must notice, reconnect and go on. */
    h_sql(e.conn, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                  "WHERE slot_name = 'e2e_reconnect'");
    h_wait_file_contains(e.log, "reconnecting in", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders VALUES (2)");
    h_wait_lines(e.out, 2, WAIT_MS);
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    ck_assert_uint_eq(h_count_lines(e.out), 2);
    ck_assert(h_file_contains(e.out, "\"after\":{\"id\":2}"));
    h_pgfan_stop(pid, WAIT_MS);
    env_free(&e);
}
END_TEST

typedef struct InflightWait {
    char *sock;
    char *json;
} InflightWait;

/* True once the status document shows the transaction FIFO at its bound. */
static bool fifo_full(void *arg)
{
    InflightWait *w = arg;

    if (h_pgfan_cmd(w->json, WAIT_MS, "status", "-s", w->sock, "--json", NULL) != 0)
        return false;
    return h_file_contains(w->json, "\"inflight_transactions\":100,");
}

/* Rows of the backpressure test's workload: 120 inserts and 40 updates. */
#define BACKPRESSURE_ROWS 120

START_TEST(test_backpressure_keeps_connection_alive)
{
    /* Durability only every 10 s and room for 100 transactions: reading
     * pauses for about 10 s, as long as the test server's
     * wal_sender_timeout; only the periodic status updates keep the
     * walsender from giving up on us meanwhile. */
    Env e = env_new("e2e_backpressure", "CREATE TABLE orders(id bigint PRIMARY KEY, v int)",
                    "public.orders",
                    "[source]\nmax_inflight_transactions = 100\nstatus_interval = 1s\n"
                    "[sink.file]\nfsync_interval = 10s\n");
    pid_t pid = h_pgfan_start(e.config, e.log);
    InflightWait iw = {h_path(e.dir, "status.sock"), h_path(e.dir, "status.json")};
    PGconn *w;

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    w = h_workload_start(e.db, BACKPRESSURE_ROWS); /* 160 transactions */
    ck_assert_msg(h_wait_until(fifo_full, &iw, WAIT_MS), "never saw 100 transactions in flight");
    h_workload_finish(w);
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    ck_assert_uint_eq(check_workload_output(e.out, UINT64_MAX, BACKPRESSURE_ROWS), 0);
    ck_assert_msg(!h_file_contains(e.log, "reconnecting"), "connection was lost under backpressure");
    fprintf(stderr,
            "e2e_backpressure: %d changes checked, 0 lost, 0 duplicates, 100 transactions in "
            "flight at the bound, 0 reconnects\n",
            BACKPRESSURE_ROWS + BACKPRESSURE_ROWS / 3);
    h_pgfan_stop(pid, WAIT_MS);
    free(iw.sock);
    free(iw.json);
    env_free(&e);
}
END_TEST

typedef struct NotifyWait {
    int fd;
    Buf seen; /* every datagram, one per line */
    const char *want;
} NotifyWait;

static bool notify_seen(void *arg)
{
    NotifyWait *w = arg;
    char msg[1024];
    ssize_t n;

    while ((n = recv(w->fd, msg, sizeof msg - 1, MSG_DONTWAIT)) > 0) {
        msg[n] = '\0';
        buf_printf(&w->seen, "%s\n", msg);
    }
    return w->seen.data && strstr(w->seen.data, w->want) != NULL;
}

static void wait_notify(NotifyWait *w, const char *want)
{
    w->want = want;
    ck_assert_msg(h_wait_until(notify_seen, w, WAIT_MS), "never got %s; got:\n%s", want,
                  w->seen.data ? w->seen.data : "");
}

START_TEST(test_systemd_notify)
{
    Env e = env_new("e2e_notify", "CREATE TABLE orders(id bigint PRIMARY KEY)", "public.orders",
                    NULL);
    struct sockaddr_un addr;
    NotifyWait w = {-1, BUF_INIT, NULL};
    pid_t pid;

    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s/notify.sock", e.dir);
    w.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(w.fd, 0);
    ck_assert_int_eq(bind(w.fd, (struct sockaddr *)&addr, sizeof addr), 0);
    /* This test runs in its own forked process: the environment is ours. */
    setenv("NOTIFY_SOCKET", addr.sun_path, 1);
    setenv("WATCHDOG_USEC", "200000", 1);
    pid = h_pgfan_start(e.config, e.log);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");

    wait_notify(&w, "READY=1");
    wait_notify(&w, "STATUS=streaming: confirmed");
    /* 100 ms watchdog period: several pings within a second. */
    buf_reset(&w.seen);
    wait_notify(&w, "WATCHDOG=1\nWATCHDOG=1\nWATCHDOG=1");
    h_kill(pid, SIGTERM);
    wait_notify(&w, "STOPPING=1");
    ck_assert_int_eq(h_wait_exit(pid, WAIT_MS), 0);
    close(w.fd);
    buf_free(&w.seen);
    env_free(&e);
}
END_TEST

typedef struct BothWait {
    const char *a;
    const char *b;
    int first, last; /* ids that must appear in a or b */
} BothWait;

static bool both_hold_ids(void *arg)
{
    BothWait *w = arg;

    for (int id = w->first; id <= w->last; id++) {
        char needle[64];
        snprintf(needle, sizeof needle, "\"after\":{\"id\":%d}", id);
        if (!h_file_contains(w->a, needle) && !h_file_contains(w->b, needle))
            return false;
    }
    return true;
}

START_TEST(test_standby_takes_over_after_kill9)
{
    Env e = env_new("e2e_ha_kill", "CREATE TABLE orders(id bigint PRIMARY KEY)", "public.orders",
                    NULL);
    Standby s2;
    pid_t active = h_pgfan_start(e.config, e.log);
    pid_t standby = standby_start(&e, &s2);
    BothWait all;
    TimeUs killed_at, took_over;

    h_sql(e.conn, "INSERT INTO orders SELECT g FROM generate_series(1, 50) g");

    h_kill(active, SIGKILL);
    h_wait_exit(active, WAIT_MS);
    killed_at = clock_mono_us();
    h_sql(e.conn, "INSERT INTO orders SELECT g FROM generate_series(51, 100) g");
    /* The requirement: a standby takes over within 15 s. */
    h_wait_file_contains(s2.log, "streaming from slot", 15000);
    took_over = clock_mono_us();
    fprintf(stderr, "standby took over %.1f s after kill -9 of the active pgfan\n",
            (double)(took_over - killed_at) / USECS_PER_SEC);
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    /* Nothing lost: every row is in one output or the other. */
    all.a = e.out;
    all.b = s2.out;
    all.first = 1;
    all.last = 100;
    ck_assert(both_hold_ids(&all));
    h_pgfan_stop(standby, WAIT_MS);
    standby_free(&s2);
    env_free(&e);
}
END_TEST


/* ---- [status] metrics_listen ---- */

typedef struct ReadyWait {
    int port;
} ReadyWait;

static bool http_ready(void *arg)
{
    ReadyWait *w = arg;
    char *r = h_http_get(w->port, "/readyz");
    bool ok = r && strncmp(r, "HTTP/1.1 200 ", 13) == 0;

    free(r);
    return ok;
}

START_TEST(test_metrics_endpoint)
{
    int port = h_free_tcp_port();
    char extra[128];
    Env e;
    pid_t pid;
    ReadyWait rw;
    char *r;
    const char *body;

    snprintf(extra, sizeof extra, "[status]\nmetrics_listen = 127.0.0.1:%d\n", port);
    e = env_new("e2e_metrics", "CREATE TABLE orders(id bigint PRIMARY KEY)", "public.orders",
                extra);
    pid = h_pgfan_start(e.config, e.log);
    rw.port = port;
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders VALUES (1)");
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    ck_assert(h_wait_until(http_ready, &rw, WAIT_MS));

    r = h_http_get(port, "/healthz");
    ck_assert_ptr_nonnull(r);
    ck_assert_msg(strncmp(r, "HTTP/1.1 200 OK\r\n", 17) == 0, "healthz: %s", r);
    free(r);
    r = h_http_get(port, "/readyz");
    ck_assert_ptr_nonnull(r);
    ck_assert_msg(strncmp(r, "HTTP/1.1 200 OK\r\n", 17) == 0, "readyz: %s", r);
    ck_assert_ptr_nonnull(strstr(r, "\r\n\r\nstreaming\n"));
    free(r);

    r = h_http_get(port, "/metrics");
    ck_assert_ptr_nonnull(r);
    ck_assert_msg(strncmp(r, "HTTP/1.1 200 OK\r\n", 17) == 0, "metrics: %s", r);
    ck_assert_ptr_nonnull(strstr(r, "Content-Type: text/plain; version=0.0.4"));
    body = strstr(r, "\r\n\r\n");
    ck_assert_ptr_nonnull(body);
    body += 4;
    ck_assert(h_metric_value(body, "pgfan_up") == 1);
    ck_assert(h_metric_value(body, "pgfan_info{version=\"" PGFAN_VERSION "\"}") == 1);
    ck_assert(h_metric_value(body, "pgfan_replication_state{state=\"streaming\"}") == 1);
    ck_assert(h_metric_value(body, "pgfan_replication_state{state=\"reconnecting\"}") == 0);
    ck_assert(h_metric_value(body, "pgfan_confirmed_lsn_bytes") > 0);
    ck_assert(h_metric_value(body, "pgfan_received_lsn_bytes") > 0);
    ck_assert(h_metric_value(body, "pgfan_server_wal_end_lsn_bytes") > 0);
    ck_assert(h_metric_value(body, "pgfan_replication_lag_bytes") >= 0);
    ck_assert(h_metric_value(body, "pgfan_replication_lag_seconds") >= 0);
    ck_assert(h_metric_value(body, "pgfan_inflight_transactions") >= 0);
    ck_assert(h_metric_value(body, "pgfan_uptime_seconds") >= 0);
    ck_assert(h_metric_value(body, "pgfan_sink_events_total{sink=\"file\"}") == 1);
    ck_assert(h_metric_value(body, "pgfan_sink_bytes_total{sink=\"file\"}") > 0);
    ck_assert(h_metric_value(body, "pgfan_sink_up{sink=\"file\"}") == 1);
    ck_assert(h_metric_value(body, "pgfan_sink_durable_lsn_bytes{sink=\"file\"}") > 0);
    ck_assert(h_metric_value(body, "pgfan_sink_queue_events{sink=\"file\"}") >= 0);
    ck_assert(h_metric_value(body, "pgfan_sink_errors_total{sink=\"file\"}") == 0);
    ck_assert(h_metric_value(body, "process_resident_memory_bytes") > 0);
    ck_assert(h_metric_value(body, "process_open_fds") > 0);
    ck_assert(h_metric_value(body, "process_start_time_seconds") > 1.6e9);
    ck_assert(h_metric_value(body, "process_cpu_seconds_total") >= 0);
    ck_assert_ptr_nonnull(strstr(body, "# TYPE pgfan_sink_events_total counter\n"));

    /* The exposition format as Prometheus itself reads it, when promtool is installed. */
    h_promtool_check(e.dir, body);
    free(r);
    h_pgfan_stop(pid, WAIT_MS);
    /* Gone with the daemon. */
    ck_assert_ptr_null(h_http_get(port, "/healthz"));
    env_free(&e);
}
END_TEST
int main(void)
{
    const char *const env[] = {"PGFAN_TEST_PGPORT", "PGFAN_TEST_BIN", NULL};
    const TTest *const tests[] = {test_envelopes_three_tables,
                                  test_kill9_at_least_once,
                                  test_sigterm_no_duplicates,
                                  test_idle_slot_advances,
                                  test_unknown_table_is_config_error,
                                  test_refused_plugin,
                                  test_replica_identity_warning_and_odd_names,
                                  test_standby_takes_over_busy_slot,
                                  test_standby_takes_over_after_kill9,
                                  test_status_command,
                                  test_reconnects_after_connection_loss,
                                  test_backpressure_keeps_connection_alive,
                                  test_systemd_notify,
                                  test_metrics_endpoint,
                                  NULL};

    return h_run_suite("e2e", "stream", 180, env, tests, NULL);
}
