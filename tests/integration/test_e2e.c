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

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
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

static Env env_new(const char *name, const char *schema_sql, const char *tables, const char *extra)
{
    Env e;
    Buf b = BUF_INIT;

    e.dir = h_tmpdir();
    e.db = xstrdup(name);
    e.slot = xstrdup(name);
    h_create_db(e.db);
    e.conn = h_pg_connect(e.db);
    if (schema_sql)
        h_sql(e.conn, "%s", schema_sql);
    e.config = h_write_config(e.dir, e.db, e.slot, tables, extra ? extra : "");
    buf_printf(&b, "%s/out.ndjson", e.dir);
    e.out = b.data;
    buf_init(&b);
    buf_printf(&b, "%s/pgfan.log", e.dir);
    e.log = b.data;
    return e;
}

static void env_free(Env *e)
{
    h_drop_slot(e->conn, e->slot); /* slots hold WAL */
    PQfinish(e->conn);
    h_rm_rf(e->dir);
    free(e->dir);
    free(e->db);
    free(e->slot);
    free(e->config);
    free(e->out);
    free(e->log);
}

static pid_t start_pgfan(const Env *e, const char *log_path)
{
    const char *argv[] = {h_pgfan_bin(), "run", "-c", e->config, NULL};
    return h_spawn(argv, log_path ? log_path : e->log);
}

/* Waits until the slot confirmed everything written so far. */
static void wait_confirmed_current(Env *e)
{
    h_wait_slot_confirmed(e->conn, e->slot, h_wal_insert_lsn(e->conn), WAIT_MS, e->log);
}

static void stop_pgfan(pid_t pid)
{
    h_kill(pid, SIGTERM);
    ck_assert_int_eq(h_wait_exit(pid, WAIT_MS), 0);
}

/* Extracts the integer after "key": in a line (first occurrence after from). */
static uint64_t json_u64(const char *line, const char *key)
{
    char pat[64];
    const char *p;

    snprintf(pat, sizeof pat, "\"%s\":", key);
    p = strstr(line, pat);
    ck_assert_msg(p != NULL, "no %s in %s", key, line);
    return strtoull(p + strlen(pat), NULL, 10);
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
    pid_t pid = start_pgfan(&e, NULL);
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
    wait_confirmed_current(&e);

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
    ck_assert_uint_eq(json_u64(lines[1], "txId"), json_u64(lines[2], "txId"));
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
    stop_pgfan(pid);
    env_free(&e);
}
END_TEST

/* Rows of the harness's crash-test workload (h_workload_start). */
#define WORKLOAD_ROWS 3000

typedef struct LinesWait {
    const char *path;
    size_t n;
} LinesWait;

static bool has_lines(void *arg)
{
    LinesWait *w = arg;
    return h_count_lines(w->path) >= w->n;
}

typedef struct Seen {
    uint64_t commit_lsn;
    uint64_t lsn;
} Seen;

static int seen_cmp(const void *a, const void *b)
{
    const Seen *x = a, *y = b;
    if (x->commit_lsn != y->commit_lsn)
        return x->commit_lsn < y->commit_lsn ? -1 : 1;
    if (x->lsn != y->lsn)
        return x->lsn < y->lsn ? -1 : 1;
    return 0;
}

/*
 * Checks the workload's output: every insert and update at least once,
 * every line whole, and every duplicate after `confirmed_before` (the
 * position confirmed when pgfan was stopped). Returns the duplicate count.
 */
static size_t check_workload_output(const char *path, Lsn confirmed_before, uint64_t rows)
{
    size_t n, dups = 0;
    char **lines = h_read_lines(path, &n);
    bool *inserted = calloc(rows + 1, sizeof(bool));
    bool *updated = calloc(rows + 1, sizeof(bool));
    Seen *seen = calloc(n ? n : 1, sizeof *seen);

    for (size_t i = 0; i < n; i++) {
        const char *l = lines[i];
        size_t len = strlen(l);
        uint64_t id;

        ck_assert_msg(len > 2 && l[0] == '{' && l[len - 1] == '}', "torn line %zu: %s", i, l);
        seen[i].commit_lsn = json_u64(l, "commit_lsn");
        seen[i].lsn = json_u64(l, "lsn");
        id = json_u64(strstr(l, "\"after\":"), "id");
        ck_assert(id >= 1 && id <= rows);
        if (strstr(l, "\"op\":\"c\""))
            inserted[id] = true;
        else if (strstr(l, "\"op\":\"u\""))
            updated[id] = true;
    }
    for (uint64_t id = 1; id <= rows; id++) {
        ck_assert_msg(inserted[id], "insert of id %llu lost", (unsigned long long)id);
        if (id % 3 == 2)
            ck_assert_msg(updated[id], "update of id %llu lost", (unsigned long long)id);
    }
    qsort(seen, n, sizeof *seen, seen_cmp);
    for (size_t i = 1; i < n; i++) {
        if (seen_cmp(&seen[i - 1], &seen[i]) == 0) {
            dups++;
            ck_assert_msg(seen[i].commit_lsn > confirmed_before,
                          "duplicate of a change confirmed before the stop (commit %llx <= %llx)",
                          (unsigned long long)seen[i].commit_lsn,
                          (unsigned long long)confirmed_before);
        }
    }
    free(inserted);
    free(updated);
    free(seen);
    h_free_lines(lines);
    return dups;
}

START_TEST(test_kill9_at_least_once)
{
    Env e = env_new("e2e_kill", "CREATE TABLE orders(id bigint PRIMARY KEY, v int)",
                    "public.orders", NULL);
    pid_t pid = start_pgfan(&e, NULL);
    LinesWait lw = {e.out, 600};
    PGconn *w;
    Lsn confirmed;
    size_t dups;

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    w = h_workload_start(e.db, WORKLOAD_ROWS);
    ck_assert(h_wait_until(has_lines, &lw, WAIT_MS));
    h_kill(pid, SIGKILL);
    h_wait_exit(pid, WAIT_MS);
    h_wait_slot_inactive(e.conn, e.slot, WAIT_MS);
    confirmed = h_slot_confirmed_lsn(e.conn, e.slot);

    pid = start_pgfan(&e, NULL);
    h_workload_finish(w);
    wait_confirmed_current(&e);
    stop_pgfan(pid);
    dups = check_workload_output(e.out, confirmed, WORKLOAD_ROWS);
    fprintf(stderr, "kill -9: %zu lines, %zu duplicates, all after the confirmed position\n",
            h_count_lines(e.out), dups);
    env_free(&e);
}
END_TEST

START_TEST(test_sigterm_no_duplicates)
{
    Env e = env_new("e2e_term", "CREATE TABLE orders(id bigint PRIMARY KEY, v int)",
                    "public.orders", NULL);
    pid_t pid = start_pgfan(&e, NULL);
    LinesWait lw = {e.out, 600};
    PGconn *w;
    size_t dups;

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    w = h_workload_start(e.db, WORKLOAD_ROWS);
    ck_assert(h_wait_until(has_lines, &lw, WAIT_MS));
    stop_pgfan(pid);
    ck_assert(h_file_contains(e.log, "stopped cleanly"));

    pid = start_pgfan(&e, NULL);
    h_workload_finish(w);
    wait_confirmed_current(&e);
    stop_pgfan(pid);
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
    pid_t pid = start_pgfan(&e, NULL);
    PGconn *pg = h_pg_connect("postgres");

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    /* WAL of another database only: reaches pgfan as keepalives. */
    h_sql(pg, "CREATE TABLE IF NOT EXISTS idle_noise(v int); INSERT INTO idle_noise VALUES (1)");
    wait_confirmed_current(&e);
    /* Filtered transactions of this database: empty BEGIN/COMMIT pairs. */
    h_sql(e.conn, "INSERT INTO other(note) SELECT 'x' FROM generate_series(1, 50)");
    wait_confirmed_current(&e);
    ck_assert_uint_eq(h_count_lines(e.out), 0);
    PQfinish(pg);
    stop_pgfan(pid);
    env_free(&e);
}
END_TEST

START_TEST(test_unknown_table_is_config_error)
{
    Env e = env_new("e2e_unknown", "CREATE TABLE orders(id bigint PRIMARY KEY)",
                    "public.orders, public.nope", NULL);
    pid_t pid = start_pgfan(&e, NULL);

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
    pid = start_pgfan(&e, NULL);
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
    pid_t pid = start_pgfan(&e, NULL);
    char **lines;
    size_t n;

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    ck_assert(h_file_contains(e.log, "table public.nopk has no usable replica identity"));
    ck_assert(h_file_contains(e.log, "HINT: ALTER TABLE public.nopk REPLICA IDENTITY FULL"));
    h_sql(e.conn, "INSERT INTO \"we'ird, na.me\" VALUES (1, 'a'); INSERT INTO nopk VALUES (5)");
    wait_confirmed_current(&e);
    lines = h_read_lines(e.out, &n);
    ck_assert_uint_eq(n, 2);
    ck_assert_ptr_nonnull(strstr(lines[0], "\"table\":\"we'ird, na.me\""));
    ck_assert_ptr_nonnull(strstr(lines[1], "\"after\":{\"v\":5}"));
    h_free_lines(lines);
    stop_pgfan(pid);
    env_free(&e);
}
END_TEST

START_TEST(test_standby_takes_over_busy_slot)
{
    Env e = env_new("e2e_ha", "CREATE TABLE orders(id bigint PRIMARY KEY)", "public.orders", NULL);
    char *dir2 = h_tmpdir();
    char *cfg2 = h_write_config(dir2, e.db, e.slot, "public.orders", "");
    Buf log2 = BUF_INIT, out2 = BUF_INIT;
    const char *argv2[] = {h_pgfan_bin(), "run", "-c", cfg2, NULL};
    pid_t active = start_pgfan(&e, NULL);
    pid_t standby;

    buf_printf(&log2, "%s/pgfan.log", dir2);
    buf_printf(&out2, "%s/out.ndjson", dir2);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    standby = h_spawn(argv2, log2.data);
    h_wait_file_contains(log2.data, "is held by another consumer", WAIT_MS);

    stop_pgfan(active);
    h_wait_file_contains(log2.data, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders VALUES (77)");
    wait_confirmed_current(&e);
    ck_assert(h_file_contains(out2.data, "\"after\":{\"id\":77}"));
    stop_pgfan(standby);
    h_rm_rf(dir2);
    free(dir2);
    free(cfg2);
    buf_free(&log2);
    buf_free(&out2);
    env_free(&e);
}
END_TEST

START_TEST(test_status_command)
{
    Env e = env_new("e2e_status", "CREATE TABLE orders(id bigint PRIMARY KEY)", "public.orders",
                    NULL);
    pid_t pid = start_pgfan(&e, NULL);
    Buf sock = BUF_INIT, json = BUF_INIT, table = BUF_INIT;
    pid_t st;

    buf_printf(&sock, "%s/status.sock", e.dir);
    buf_printf(&json, "%s/status.json", e.dir);
    buf_printf(&table, "%s/status.txt", e.dir);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders VALUES (1)");
    wait_confirmed_current(&e);
    {
        const char *argv[] = {h_pgfan_bin(), "status", "-s", sock.data, "--json", NULL};
        st = h_spawn(argv, json.data);
        ck_assert_int_eq(h_wait_exit(st, WAIT_MS), 0);
    }
    {
        const char *argv[] = {h_pgfan_bin(), "status", "-s", sock.data, NULL};
        st = h_spawn(argv, table.data);
        ck_assert_int_eq(h_wait_exit(st, WAIT_MS), 0);
    }
    ck_assert(h_file_contains(json.data, "\"state\":\"streaming\""));
    ck_assert(h_file_contains(json.data, "\"slot\":\"e2e_status\""));
    ck_assert(h_file_contains(json.data, "\"database\":\"e2e_status\""));
    ck_assert(h_file_contains(json.data, "\"name\":\"file\""));
    ck_assert(h_file_contains(json.data, "\"events\":1"));
    ck_assert(h_file_contains(table.data, "streaming"));
    ck_assert(h_file_contains(table.data, "SINK"));
    {
        const char *argv[] = {h_pgfan_bin(), "status",          "-s", sock.data, "--check",
                              "--max-lag-seconds", "300", NULL};
        st = h_spawn(argv, table.data);
        ck_assert_int_eq(h_wait_exit(st, WAIT_MS), 0);
        ck_assert(h_file_contains(table.data, "OK: streaming"));
    }
    stop_pgfan(pid);
    /* The socket is gone with the daemon: exit 2 (also for --check). */
    {
        const char *argv[] = {h_pgfan_bin(), "status", "-s", sock.data, "--check", NULL};
        st = h_spawn(argv, table.data);
        ck_assert_int_eq(h_wait_exit(st, WAIT_MS), 2);
    }
    buf_free(&sock);
    buf_free(&json);
    buf_free(&table);
    env_free(&e);
}
END_TEST

START_TEST(test_reconnects_after_connection_loss)
{
    Env e = env_new("e2e_reconnect", "CREATE TABLE orders(id bigint PRIMARY KEY)",
                    "public.orders", "[source]\nreconnect_min = 100ms\nreconnect_max = 1s\n");
    pid_t pid = start_pgfan(&e, NULL);
    LinesWait lw = {e.out, 2};

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders VALUES (1)");
    wait_confirmed_current(&e);
    /* Kill the walsender: pgfan must notice, reconnect and go on. */
    h_sql(e.conn, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                  "WHERE slot_name = 'e2e_reconnect'");
    h_wait_file_contains(e.log, "reconnecting in", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders VALUES (2)");
    ck_assert(h_wait_until(has_lines, &lw, WAIT_MS));
    wait_confirmed_current(&e);
    ck_assert_uint_eq(h_count_lines(e.out), 2);
    ck_assert(h_file_contains(e.out, "\"after\":{\"id\":2}"));
    stop_pgfan(pid);
    env_free(&e);
}
END_TEST

typedef struct InflightWait {
    const char *sock;
    const char *json;
} InflightWait;

/* True once the status document shows the transaction FIFO at its bound. */
static bool fifo_full(void *arg)
{
    InflightWait *w = arg;
    const char *argv[] = {h_pgfan_bin(), "status", "-s", w->sock, "--json", NULL};
    pid_t st = h_spawn(argv, w->json);

    if (h_wait_exit(st, WAIT_MS) != 0)
        return false;
    return h_file_contains(w->json, "\"inflight_transactions\":100,");
}

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
    pid_t pid = start_pgfan(&e, NULL);
    Buf sock = BUF_INIT, json = BUF_INIT;
    InflightWait iw;
    PGconn *w;

    buf_printf(&sock, "%s/status.sock", e.dir);
    buf_printf(&json, "%s/status.json", e.dir);
    iw.sock = sock.data;
    iw.json = json.data;
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    w = h_workload_start(e.db, 120); /* 160 transactions */
    ck_assert_msg(h_wait_until(fifo_full, &iw, WAIT_MS), "never saw 100 transactions in flight");
    h_workload_finish(w);
    wait_confirmed_current(&e);
    ck_assert_uint_eq(check_workload_output(e.out, UINT64_MAX, 120), 0);
    ck_assert_msg(!h_file_contains(e.log, "reconnecting"), "connection was lost under backpressure");
    stop_pgfan(pid);
    buf_free(&sock);
    buf_free(&json);
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
    pid = start_pgfan(&e, NULL);
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
    char *dir2 = h_tmpdir();
    char *cfg2 = h_write_config(dir2, e.db, e.slot, "public.orders", "");
    Buf log2 = BUF_INIT, out2 = BUF_INIT;
    const char *argv2[] = {h_pgfan_bin(), "run", "-c", cfg2, NULL};
    pid_t active = start_pgfan(&e, NULL);
    pid_t standby;
    BothWait all;
    TimeUs killed_at, took_over;

    buf_printf(&log2, "%s/pgfan.log", dir2);
    buf_printf(&out2, "%s/out.ndjson", dir2);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    standby = h_spawn(argv2, log2.data);
    h_wait_file_contains(log2.data, "is held by another consumer", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders SELECT g FROM generate_series(1, 50) g");

    h_kill(active, SIGKILL);
    h_wait_exit(active, WAIT_MS);
    killed_at = clock_mono_us();
    h_sql(e.conn, "INSERT INTO orders SELECT g FROM generate_series(51, 100) g");
    /* The requirement: a standby takes over within 15 s. */
    h_wait_file_contains(log2.data, "streaming from slot", 15000);
    took_over = clock_mono_us();
    fprintf(stderr, "standby took over %.1f s after kill -9 of the active pgfan\n",
            (double)(took_over - killed_at) / USECS_PER_SEC);
    wait_confirmed_current(&e);
    /* Nothing lost: every row is in one output or the other. */
    all.a = e.out;
    all.b = out2.data;
    all.first = 1;
    all.last = 100;
    ck_assert(both_hold_ids(&all));
    stop_pgfan(standby);
    h_rm_rf(dir2);
    free(dir2);
    free(cfg2);
    buf_free(&log2);
    buf_free(&out2);
    env_free(&e);
}
END_TEST


/* ---- [status] metrics_listen ---- */

/* A TCP port nobody listens on right now: bind port 0, read it, close. */
static int free_tcp_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port;

    ck_assert_int_ge(fd, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* GET path from 127.0.0.1:port; returns the whole response (caller frees) or NULL. */
static char *http_get(int port, const char *path)
{
    struct sockaddr_in a;
    struct timeval tv = {10, 0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    Buf req = BUF_INIT, resp = BUF_INIT;
    char chunk[4096];
    ssize_t n;

    ck_assert_int_ge(fd, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return NULL;
    }
    buf_printf(&req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", path, port);
    ck_assert_int_eq(send(fd, req.data, req.len, MSG_NOSIGNAL), (ssize_t)req.len);
    while ((n = recv(fd, chunk, sizeof chunk, 0)) > 0)
        buf_append(&resp, chunk, (size_t)n);
    close(fd);
    buf_free(&req);
    return resp.data ? resp.data : xstrdup("");
}

/* The value of the sample line that starts with series (name and labels), or -1. */
static double sample_value(const char *body, const char *series)
{
    size_t len = strlen(series);

    for (const char *p = body; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, series, len) == 0 && p[len] == ' ')
            return strtod(p + len + 1, NULL);
    }
    return -1;
}

typedef struct ReadyWait {
    int port;
} ReadyWait;

static bool http_ready(void *arg)
{
    ReadyWait *w = arg;
    char *r = http_get(w->port, "/readyz");
    bool ok = r && strncmp(r, "HTTP/1.1 200 ", 13) == 0;

    free(r);
    return ok;
}

START_TEST(test_metrics_endpoint)
{
    int port = free_tcp_port();
    char extra[128];
    Env e;
    pid_t pid;
    ReadyWait rw;
    char *r;
    const char *body;

    snprintf(extra, sizeof extra, "[status]\nmetrics_listen = 127.0.0.1:%d\n", port);
    e = env_new("e2e_metrics", "CREATE TABLE orders(id bigint PRIMARY KEY)", "public.orders",
                extra);
    pid = start_pgfan(&e, NULL);
    rw.port = port;
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders VALUES (1)");
    wait_confirmed_current(&e);
    ck_assert(h_wait_until(http_ready, &rw, WAIT_MS));

    r = http_get(port, "/healthz");
    ck_assert_ptr_nonnull(r);
    ck_assert_msg(strncmp(r, "HTTP/1.1 200 OK\r\n", 17) == 0, "healthz: %s", r);
    free(r);
    r = http_get(port, "/readyz");
    ck_assert_ptr_nonnull(r);
    ck_assert_msg(strncmp(r, "HTTP/1.1 200 OK\r\n", 17) == 0, "readyz: %s", r);
    ck_assert_ptr_nonnull(strstr(r, "\r\n\r\nstreaming\n"));
    free(r);

    r = http_get(port, "/metrics");
    ck_assert_ptr_nonnull(r);
    ck_assert_msg(strncmp(r, "HTTP/1.1 200 OK\r\n", 17) == 0, "metrics: %s", r);
    ck_assert_ptr_nonnull(strstr(r, "Content-Type: text/plain; version=0.0.4"));
    body = strstr(r, "\r\n\r\n");
    ck_assert_ptr_nonnull(body);
    body += 4;
    ck_assert(sample_value(body, "pgfan_up") == 1);
    ck_assert(sample_value(body, "pgfan_info{version=\"" PGFAN_VERSION "\"}") == 1);
    ck_assert(sample_value(body, "pgfan_replication_state{state=\"streaming\"}") == 1);
    ck_assert(sample_value(body, "pgfan_replication_state{state=\"reconnecting\"}") == 0);
    ck_assert(sample_value(body, "pgfan_confirmed_lsn_bytes") > 0);
    ck_assert(sample_value(body, "pgfan_received_lsn_bytes") > 0);
    ck_assert(sample_value(body, "pgfan_server_wal_end_lsn_bytes") > 0);
    ck_assert(sample_value(body, "pgfan_replication_lag_bytes") >= 0);
    ck_assert(sample_value(body, "pgfan_replication_lag_seconds") >= 0);
    ck_assert(sample_value(body, "pgfan_inflight_transactions") >= 0);
    ck_assert(sample_value(body, "pgfan_uptime_seconds") >= 0);
    ck_assert(sample_value(body, "pgfan_sink_events_total{sink=\"file\"}") == 1);
    ck_assert(sample_value(body, "pgfan_sink_bytes_total{sink=\"file\"}") > 0);
    ck_assert(sample_value(body, "pgfan_sink_up{sink=\"file\"}") == 1);
    ck_assert(sample_value(body, "pgfan_sink_durable_lsn_bytes{sink=\"file\"}") > 0);
    ck_assert(sample_value(body, "pgfan_sink_queue_events{sink=\"file\"}") >= 0);
    ck_assert(sample_value(body, "pgfan_sink_errors_total{sink=\"file\"}") == 0);
    ck_assert(sample_value(body, "process_resident_memory_bytes") > 0);
    ck_assert(sample_value(body, "process_open_fds") > 0);
    ck_assert(sample_value(body, "process_start_time_seconds") > 1.6e9);
    ck_assert(sample_value(body, "process_cpu_seconds_total") >= 0);
    ck_assert_ptr_nonnull(strstr(body, "# TYPE pgfan_sink_events_total counter\n"));

    /* The exposition format as Prometheus itself reads it, when promtool is installed. */
    if (access("/usr/bin/promtool", X_OK) == 0) {
        Buf path = BUF_INIT, cmd = BUF_INIT;
        FILE *f;
        int rc;

        buf_printf(&path, "%s/metrics.txt", e.dir);
        f = fopen(path.data, "w");
        ck_assert_ptr_nonnull(f);
        fputs(body, f);
        fclose(f);
        buf_printf(&cmd, "/usr/bin/promtool check metrics < '%s' > '%s.out' 2>&1", path.data,
                   path.data);
        rc = system(cmd.data);
        if (rc != 0) {
            Buf out = BUF_INIT;
            char *text;
            buf_printf(&out, "%s.out", path.data);
            text = h_read_file(out.data, NULL);
            ck_abort_msg("promtool check metrics failed (%d):\n%s", rc, text ? text : "");
        }
        buf_free(&path);
        buf_free(&cmd);
    } else {
        printf("test_metrics_endpoint: /usr/bin/promtool not installed; skipping promtool check "
               "metrics\n");
    }
    free(r);
    stop_pgfan(pid);
    /* Gone with the daemon. */
    ck_assert_ptr_null(http_get(port, "/healthz"));
    env_free(&e);
}
END_TEST
int main(void)
{
    Suite *s = suite_create("e2e");
    TCase *tc = tcase_create("stream");
    SRunner *sr;
    int failed;

    if (!getenv("PGFAN_TEST_PGPORT") || !getenv("PGFAN_TEST_BIN")) {
        fprintf(stderr, "e2e: PGFAN_TEST_PGPORT and PGFAN_TEST_BIN must be set (run tests/run.sh)\n");
        return 77; /* meson: skipped */
    }
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_envelopes_three_tables);
    tcase_add_test(tc, test_kill9_at_least_once);
    tcase_add_test(tc, test_sigterm_no_duplicates);
    tcase_add_test(tc, test_idle_slot_advances);
    tcase_add_test(tc, test_unknown_table_is_config_error);
    tcase_add_test(tc, test_refused_plugin);
    tcase_add_test(tc, test_replica_identity_warning_and_odd_names);
    tcase_add_test(tc, test_standby_takes_over_busy_slot);
    tcase_add_test(tc, test_standby_takes_over_after_kill9);
    tcase_add_test(tc, test_status_command);
    tcase_add_test(tc, test_reconnects_after_connection_loss);
    tcase_add_test(tc, test_backpressure_keeps_connection_alive);
    tcase_add_test(tc, test_systemd_notify);
    tcase_add_test(tc, test_metrics_endpoint);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
