/*
 * test_snapshot.c - [source] snapshot = initial end to end: the real pgfan
 * binary against PostgreSQL 15 with wal2json, the file sink (and tests
 * with the Elasticsearch test server and the Kafka mock broker).
 *
 * The strongest check is a replay: every event of the NDJSON file is loaded
 * into the test database and applied in file order to an empty copy of the
 * tables (r and c insert, u updates, d deletes, t empties the table), each
 * step required to hit exactly one row, so a row read twice, an insert both
 * read and streamed, a lost insert under a later update, or a delete of a
 * row never seen all fail the replay; the result must then equal the source
 * tables. Nothing sleeps: every wait polls a condition under a deadline.
 */
#include "../../common/buf.h"
#include "../../common/mem.h"
#include "../harness/es_server.h"
#include "../harness/harness.h"

#include <check.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 180000

typedef struct Env {
    char *dir;
    char *db;
    char *slot;
    char *config;
    char *out;
    char *log;
    char *state;
    PGconn *conn;
} Env;

/* (Re)writes the config: h_write_config's, snapshot = initial, state_dir = dir, extra. */
static void env_config(Env *e, const char *tables, const char *extra)
{
    Buf b = BUF_INIT;

    free(e->config);
    buf_printf(&b, "[source]\nsnapshot = initial\nstate_dir = %s\n%s", e->dir, extra ? extra : "");
    e->config = h_write_config(e->dir, e->db, e->slot, tables, b.data);
    buf_free(&b);
}

/* A database with schema_sql, and a config reading `tables` with snapshot = initial. */
static Env env_new(const char *name, const char *schema_sql, const char *tables, const char *extra)
{
    Env e;
    Buf b = BUF_INIT;

    e.conn = h_setup(name, schema_sql, &e.dir);
    e.db = xstrdup(name);
    e.slot = xstrdup(name);
    e.config = NULL;
    env_config(&e, tables, extra);
    e.out = h_path(e.dir, "out.ndjson");
    e.log = h_path(e.dir, "pgfan.log");
    buf_printf(&b, "%s/pgfan-%s.snapshot", e.dir, e.slot);
    e.state = b.data;
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
    free(e->state);
}

/* The consistent point in the state file ("done <slot> X/X"). */
static Lsn state_lsn(const Env *e, const char *kind)
{
    char *text = h_read_file(e->state, NULL);
    const char *sp = strrchr(text, ' ');
    Lsn lsn = LSN_INVALID;

    ck_assert_msg(strncmp(text, kind, strlen(kind)) == 0, "state file says: %s", text);
    ck_assert(sp && lsn_parse(sp + 1, strcspn(sp + 1, "\n"), &lsn));
    free(text);
    return lsn;
}

/* ---- the replay ----------------------------------------------------------- */

/*
 * COPY table (columns) FROM STDIN as CSV with quote and delimiter characters
 * JSON never holds raw (\x01, \x02): the lines need no escaping.
 */
static void copy_begin(PGconn *conn, const char *table_columns)
{
    Buf sql = BUF_INIT;
    PGresult *res;

    buf_printf(&sql, "COPY %s FROM STDIN (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')",
               table_columns);
    res = PQexec(conn, sql.data);
    ck_assert_msg(PQresultStatus(res) == PGRES_COPY_IN, "%s", PQresultErrorMessage(res));
    PQclear(res);
    buf_free(&sql);
}

static void copy_end(PGconn *conn)
{
    PGresult *res;

    ck_assert(PQputCopyEnd(conn, NULL) == 1);
    res = PQgetResult(conn);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s", PQresultErrorMessage(res));
    PQclear(res);
    while ((res = PQgetResult(conn)) != NULL)
        PQclear(res);
}

/* Loads every line of the output file into events(seq, ev jsonb). */
static size_t load_events(Env *e)
{
    size_t n;
    char **lines = h_read_lines(e->out, &n);

    h_sql(e->conn, "DROP TABLE IF EXISTS events; CREATE TABLE events (seq bigserial, ev jsonb)");
    copy_begin(e->conn, "events (ev)");
    for (size_t i = 0; i < n; i++) {
        ck_assert(PQputCopyData(e->conn, lines[i], (int)strlen(lines[i])) == 1);
        ck_assert(PQputCopyData(e->conn, "\n", 1) == 1);
    }
    copy_end(e->conn);
    h_free_lines(lines);
    return n;
}

/* Applies events in order into rebuilt(tbl, id, doc); every step must hit one row. */
static const char replay_sql[] =
    "DROP TABLE IF EXISTS rebuilt; CREATE TABLE rebuilt (tbl text, id text, doc jsonb, "
    "PRIMARY KEY (tbl, id));"
    "DO $$ DECLARE r record; t text; n bigint; BEGIN "
    "FOR r IN SELECT seq, ev FROM events ORDER BY seq LOOP "
    "  t := r.ev->'source'->>'table'; "
    "  CASE r.ev->>'op' "
    "  WHEN 'r', 'c' THEN "
    "    INSERT INTO rebuilt VALUES (t, r.ev->'after'->>'id', r.ev->'after'); "
    "  WHEN 'u' THEN "
    "    UPDATE rebuilt SET id = r.ev->'after'->>'id', doc = r.ev->'after' "
    "      WHERE tbl = t AND id = r.ev->'before'->>'id'; "
    "    GET DIAGNOSTICS n = ROW_COUNT; "
    "    IF n <> 1 THEN RAISE 'event % updates % row(s): %', r.seq, n, r.ev; END IF; "
    "  WHEN 'd' THEN "
    "    DELETE FROM rebuilt WHERE tbl = t AND id = r.ev->'before'->>'id'; "
    "    GET DIAGNOSTICS n = ROW_COUNT; "
    "    IF n <> 1 THEN RAISE 'event % deletes % row(s): %', r.seq, n, r.ev; END IF; "
    "  WHEN 't' THEN DELETE FROM rebuilt WHERE tbl = t; "
    "  END CASE; "
    "END LOOP; END $$";

/*
 * Replays the loaded events and returns the number of rows of `tables`
 * that differ from the rebuilt ones (missing, extra, or any column);
 * prints some.
 */
static long rebuilt_differences(Env *e, const char *const *tables)
{
    long total = 0;

    h_sql(e->conn, "%s", replay_sql);
    for (size_t i = 0; tables[i]; i++) {
        Buf sql = BUF_INIT;
        PGresult *res;
        long n;

        buf_printf(&sql,
                   "SELECT count(*), string_agg(coalesce(s.id, r.id), ', ') FROM "
                   "(SELECT x.id::text AS id, to_jsonb(x) AS doc FROM %s x) s FULL JOIN "
                   "(SELECT id, doc FROM rebuilt WHERE tbl = '%s') r ON r.id = s.id "
                   "WHERE s.doc IS DISTINCT FROM r.doc",
                   tables[i], tables[i]);
        res = PQexec(e->conn, sql.data);
        ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
        n = atol(PQgetvalue(res, 0, 0));
        if (n > 0)
            fprintf(stderr, "snapshot: %ld rows of %s differ: %.600s\n", n, tables[i],
                    PQgetvalue(res, 0, 1));
        total += n;
        PQclear(res);
        buf_free(&sql);
    }
    return total;
}

/* Replays the output file: rebuilt_differences of its events. */
static long replay_differences(Env *e, const char *const *tables)
{
    load_events(e);
    return rebuilt_differences(e, tables);
}

/* ---- a concurrent workload -------------------------------------------------- */

/*
 * churn(n, first_new): n transactions of one statement each on orders and
 * customers: inserts of new ids from first_new, updates and deletes of
 * existing ones scattered over the table (some hit rows already deleted).
 */
static const char churn_sql[] =
    "CREATE PROCEDURE churn(n int, first_new bigint, span bigint) LANGUAGE plpgsql AS $$ "
    "BEGIN FOR i IN 1..n LOOP "
    "  CASE i % 5 "
    "  WHEN 0 THEN INSERT INTO orders VALUES (first_new + i, i % 50, 'new', i * 0.25, i % 2 = 0); "
    "  WHEN 1 THEN UPDATE orders SET status = 'paid', total = total + 1 "
    "    WHERE id = 1 + (i::bigint * 7919) % span; "
    "  WHEN 2 THEN DELETE FROM orders WHERE id = 1 + (i::bigint * 104729) % span; "
    "  WHEN 3 THEN UPDATE customers SET email = 'c' || i || '@example.com' "
    "    WHERE id = 1 + (i::bigint * 31) % (span / 10); "
    "  ELSE INSERT INTO customers VALUES (first_new + i, 'n' || i || '@example.com'); "
    "  END CASE; COMMIT; "
    "END LOOP; END $$";

#define SHOP_SQL                                                                                   \
    "CREATE TABLE orders (id bigint PRIMARY KEY, store_id int, status text, "                      \
    "total numeric(12,2), paid boolean);"                                                          \
    "CREATE TABLE customers (id bigint PRIMARY KEY, email text);"                                  \
    "CREATE TABLE stores (id int PRIMARY KEY, name text, country text);"

static void fill_shop(PGconn *conn, long orders, long customers, long stores)
{
    h_sql(conn,
          "INSERT INTO orders SELECT i, i %% 50, 'pending', i * 0.01, false "
          "FROM generate_series(1, %ld) i;"
          "INSERT INTO customers SELECT i, 'c' || i || '@example.com' "
          "FROM generate_series(1, %ld) i;"
          "INSERT INTO stores SELECT i, 'Store \"' || i || E'\"\\t\\\\', 'CH' "
          "FROM generate_series(1, %ld) i;"
          "ANALYZE orders, customers, stores",
          orders, customers, stores);
}

static const char *const shop_tables[] = {"orders", "customers", "stores", NULL};

/*
 * Holding the snapshot back: a one-row table listed last, so it is the last
 * range read. Once a COPY of orders runs (the plan, which needs a lock on
 * every table, is done), an ACCESS EXCLUSIVE lock on it makes its COPY
 * wait: the snapshot is then surely unfinished until the gate opens.
 */
#define GATE_SQL "CREATE TABLE gate (id int PRIMARY KEY); INSERT INTO gate VALUES (1);"
#define GATED_TABLES "public.orders, public.customers, public.stores, public.gate"

static PGconn *close_gate(const Env *e, const char *log)
{
    PGconn *g;

    h_wait_file_contains(log, "FROM ONLY \"public\".\"orders\"", WAIT_MS);
    g = h_pg_connect(e->db);
    h_sql(g, "BEGIN; LOCK TABLE gate IN ACCESS EXCLUSIVE MODE");
    return g;
}

static void open_gate(PGconn *g)
{
    h_sql(g, "ROLLBACK");
    PQfinish(g);
}

/* ---- tests ------------------------------------------------------------------- */

/* Pre-existing rows of three tables arrive exactly once, as op "r", before
 * anything streamed; "last" marks the final one; the status shows it. */
START_TEST(snapshot_three_tables_exactly_once)
{
    Env e = env_new("snap_basic", SHOP_SQL, "public.orders, public.customers, public.stores", NULL);
    const long counts[] = {60000, 3000, 40};
    char *seen[3];
    long got[3] = {0, 0, 0};
    pid_t pid;
    char **lines;
    size_t n, lasts = 0, last_at = 0, first_c = 0;
    Lsn cp;
    Buf sock = BUF_INIT, json = BUF_INIT;

    fill_shop(e.conn, counts[0], counts[1], counts[2]);
    for (int t = 0; t < 3; t++)
        seen[t] = xcalloc((size_t)counts[t] + 1, 1);
    pid = h_pgfan_start(e.config, e.log);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO stores VALUES (1000, 'new', 'DE');"
                  "INSERT INTO customers VALUES (100000, 'new@example.com');"
                  "INSERT INTO orders VALUES (1000000, 1, 'new', 1.00, true)");
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);

    buf_printf(&sock, "%s/status.sock", e.dir);
    buf_printf(&json, "%s/status.json", e.dir);
    ck_assert_int_eq(h_pgfan_cmd(json.data, WAIT_MS, "status", "-s", sock.data, "--json", NULL), 0);
    ck_assert(h_file_contains(json.data, "\"state\":\"streaming\""));
    ck_assert(h_file_contains(json.data, "\"snapshot\":{\"state\":\"done\""));
    ck_assert(h_file_contains(json.data, "\"rows\":63040,"));
    ck_assert(h_file_contains(json.data, "{\"table\":\"public.orders\",\"rows\":60000,"
                                         "\"estimated_rows\":60000,"));
    h_pgfan_stop(pid, WAIT_MS);

    cp = state_lsn(&e, "done snap_basic ");
    lines = h_read_lines(e.out, &n);
    ck_assert_uint_eq(n, 63040 + 3);
    for (size_t i = 0; i < n; i++) {
        const char *l = lines[i];
        bool read = strstr(l, "\"op\":\"r\"") != NULL;
        int t = strstr(l, "\"table\":\"orders\"")      ? 0
                : strstr(l, "\"table\":\"customers\"") ? 1
                                                       : 2;
        uint64_t id = h_json_u64(l, "id");

        if (!read) {
            ck_assert_msg(strstr(l, "\"op\":\"c\"") && strstr(l, "\"snapshot\":\"false\""), "%s",
                          l);
            ck_assert_uint_gt(h_json_u64(l, "commit_lsn"), cp);
            if (!first_c)
                first_c = i;
            continue;
        }
        ck_assert_msg(first_c == 0, "a snapshot row after a streamed one: %s", l);
        ck_assert_msg(id >= 1 && (long)id <= counts[t], "%s", l);
        ck_assert_msg(!seen[t][id], "row read twice: %s", l);
        seen[t][id] = 1;
        got[t]++;
        ck_assert_uint_eq(h_json_u64(l, "commit_lsn"), cp);
        ck_assert_uint_lt(h_json_u64(l, "lsn"), cp);
        ck_assert_ptr_nonnull(strstr(l, "\"txId\":null"));
        if (strstr(l, "\"snapshot\":\"last\"")) {
            lasts++;
            last_at = i;
        } else {
            ck_assert_msg(strstr(l, "\"snapshot\":\"true\"") != NULL, "%s", l);
        }
    }
    for (int t = 0; t < 3; t++)
        ck_assert_int_eq(got[t], counts[t]);
    ck_assert_uint_eq(lasts, 1);
    ck_assert_uint_eq(last_at, 63039);
    ck_assert_uint_eq(first_c, 63040);
    /* a value with quotes, a tab and a backslash, as the stream would write it */
    ck_assert(h_file_contains(e.out, "\"after\":{\"id\":7,\"name\":\"Store \\\"7\\\"\\t\\\\\","
                                     "\"country\":\"CH\"}"));
    ck_assert(h_file_contains(e.log, "snapshot: done: 63040 rows of 3 tables durable in every "
                                     "sink"));
    ck_assert_int_eq(replay_differences(&e, shop_tables), 0);
    for (int t = 0; t < 3; t++)
        free(seen[t]);
    h_free_lines(lines);
    buf_free(&sock);
    buf_free(&json);
    env_free(&e);
}
END_TEST

/* The "after" object of a line without its first member (the id). */
static char *after_without_id(const char *line)
{
    const char *a = strstr(line, "\"after\":{");
    const char *comma, *end;

    ck_assert_ptr_nonnull(a);
    comma = strchr(a, ',');
    end = strstr(a, "},\"source\"");
    ck_assert(comma && end && comma < end);
    return xstrndup(comma + 1, (size_t)(end - comma - 1));
}

/* Every type the sinks format: a snapshot row has exactly the values the
 * stream gives the same row (inserted again after streaming started). */
START_TEST(snapshot_values_equal_stream)
{
    Env e = env_new(
        "snap_values",
        "CREATE TYPE mood AS ENUM ('sad', 'ok');"
        "CREATE TABLE t (id int PRIMARY KEY, b bool, n numeric(30,2), nn numeric, f float8, "
        "r real, i2 smallint, ts timestamptz, tsn timestamp(3), d date, tm time, tz timetz, "
        "iv interval, by bytea, j jsonb, js json, arr int[], tarr text[], txt text, vc varchar(9), "
        "ch char(3), m mood, u uuid, mo money, o oid, inet inet, pt point);"
        "INSERT INTO t VALUES (1, true, 12345678901234567890123456.70, 'NaN', 1.1, 'Infinity', "
        "-7, '2026-01-02 03:04:05.5+02', '2026-01-02 03:04:05.123', '2026-01-02', '10:11:12.5', "
        "'10:11:12+05:30', '1 year 2 days 03:04:05.6', '\\x00ff10', '{\"a\": [1, 2.50]}', "
        "'{\"k\" : 1}', '{1,NULL,3}', '{\"a b\",\"c\\\"d\"}', E'tab\\there\\nnew \\\\ \"q\" ü\\r', "
        "'abc', 'x', 'ok', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 12.5, 42, '10.0.0.1/8', "
        "'(1,2)'),"
        "(2, false, NULL, 0.000001, '-Infinity', 'NaN', NULL, '-infinity', NULL, 'infinity', "
        "NULL, NULL, '-1 hour', '\\x', 'null', '[]', '{}', NULL, '', NULL, NULL, NULL, NULL, NULL, "
        "NULL, NULL, NULL),"
        "(3, NULL, -0.01, 1e-30, 1e300, 3.4e38, 32767, '0044-03-15 12:00:00+00 BC', NULL, NULL, "
        "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, repeat('long ', 3000), NULL, NULL, "
        "NULL, NULL, NULL, NULL, NULL, NULL)",
        "public.t", NULL);
    pid_t pid = h_pgfan_start(e.config, e.log);
    char **lines;
    size_t n;

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO t SELECT id + 100, b, n, nn, f, r, i2, ts, tsn, d, tm, tz, iv, by, "
                  "j, js, arr, tarr, txt, vc, ch, m, u, mo, o, inet, pt FROM t ORDER BY id");
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    h_pgfan_stop(pid, WAIT_MS);
    lines = h_read_lines(e.out, &n);
    ck_assert_uint_eq(n, 6);
    for (size_t i = 0; i < 3; i++) {
        char *snap = after_without_id(lines[i]);
        char *stream = after_without_id(lines[i + 3]);

        ck_assert_ptr_nonnull(strstr(lines[i], "\"op\":\"r\""));
        ck_assert_ptr_nonnull(strstr(lines[i + 3], "\"op\":\"c\""));
        ck_assert_uint_eq(h_json_u64(lines[i], "id") + 100, h_json_u64(lines[i + 3], "id"));
        ck_assert_str_eq(snap, stream);
        free(snap);
        free(stream);
    }
    h_free_lines(lines);
    env_free(&e);
}
END_TEST

/* Writes while the snapshot runs are neither lost nor doubled. */
START_TEST(snapshot_concurrent_writes)
{
    Env e = env_new("snap_concurrent", SHOP_SQL, "public.orders, public.customers, public.stores",
                    NULL);
    PGconn *w;
    pid_t pid;

    fill_shop(e.conn, 300000, 20000, 100);
    h_sql(e.conn, "%s", churn_sql);
    w = h_sql_send(e.db, "CALL churn(20000, 10000000, 300000)");
    pid = h_pgfan_start(e.config, e.log);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_workload_finish(w);
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    h_pgfan_stop(pid, WAIT_MS);
    /* the workload really overlapped the snapshot: it was streamed, not read */
    ck_assert(h_file_contains(e.out, "\"op\":\"u\""));
    ck_assert(h_file_contains(e.out, "\"op\":\"d\""));
    ck_assert_int_eq(replay_differences(&e, shop_tables), 0);
    env_free(&e);
}
END_TEST

/* kill -9 in the middle of the snapshot, writes going on across the
 * restart: the restart drops the slot, truncates and reads again; the
 * final state is right. */
START_TEST(snapshot_kill9_starts_over)
{
    Env e = env_new("snap_kill", SHOP_SQL GATE_SQL, GATED_TABLES, "snapshot_workers = 3\n");
    PGconn *w, *gate;
    pid_t pid;
    Buf log2 = BUF_INIT;

    fill_shop(e.conn, 300000, 20000, 100);
    h_sql(e.conn, "%s", churn_sql);
    w = h_sql_send(e.db, "CALL churn(40000, 10000000, 300000)");
    pid = h_pgfan_start(e.config, e.log);
    gate = close_gate(&e, e.log);
    h_wait_lines(e.out, 20000, WAIT_MS);
    h_kill(pid, SIGKILL);
    h_wait_exit(pid, WAIT_MS);
    open_gate(gate);
    ck_assert(!h_file_contains(e.out, "\"snapshot\":\"last\""));
    ck_assert_uint_ne(state_lsn(&e, "in progress snap_kill "), LSN_INVALID);

    buf_printf(&log2, "%s/pgfan2.log", e.dir);
    pid = h_pgfan_start(e.config, log2.data);
    h_wait_file_contains(log2.data, "streaming from slot", WAIT_MS);
    ck_assert(h_file_contains(log2.data, "did not finish"));
    ck_assert(h_file_contains(log2.data, "dropping the slot and starting over"));
    h_workload_finish(w);
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    h_pgfan_stop(pid, WAIT_MS);
    state_lsn(&e, "done snap_kill ");
    /* the second snapshot empties the tables first (op t, snapshot true) */
    ck_assert(h_file_contains(e.out, "\"table\":\"orders\",\"lsn\":"));
    ck_assert(h_file_contains(e.out, "\"snapshot\":\"true\"},\"op\":\"t\""));
    ck_assert_int_eq(replay_differences(&e, shop_tables), 0);
    buf_free(&log2);
    env_free(&e);
}
END_TEST

/* SIGTERM during the snapshot: a clean exit that leaves the snapshot
 * unfinished; the next start reads everything again. */
START_TEST(snapshot_sigterm_starts_over)
{
    Env e = env_new("snap_term", SHOP_SQL GATE_SQL, GATED_TABLES, NULL);
    PGconn *gate;
    pid_t pid;

    fill_shop(e.conn, 200000, 1000, 10);
    pid = h_pgfan_start(e.config, e.log);
    gate = close_gate(&e, e.log);
    h_wait_lines(e.out, 10000, WAIT_MS);
    h_pgfan_stop(pid, WAIT_MS);
    open_gate(gate);
    ck_assert(h_file_contains(e.log, "the snapshot starts over at the next start"));
    ck_assert(!h_file_contains(e.out, "\"snapshot\":\"last\""));
    state_lsn(&e, "in progress snap_term ");
    pid = h_pgfan_start(e.config, e.log);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    ck_assert(h_file_contains(e.log, "did not finish"));
    h_pgfan_stop(pid, WAIT_MS);
    state_lsn(&e, "done snap_term ");
    ck_assert_int_eq(replay_differences(&e, shop_tables), 0);
    env_free(&e);
}
END_TEST

/* VmHWM (peak resident set, kB) of pid, -1 when unreadable. */
static long peak_rss_kb(pid_t pid)
{
    char path[64], line[256];
    FILE *f;
    long kb = -1;

    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmHWM:", 6) == 0)
            kb = atol(line + 6);
    }
    fclose(f);
    return kb;
}

/* Rows of the big-table test: 1M, or 250k under AddressSanitizer (about
 * four times slower; the memory bound is what the test is about, and pgfan
 * streams rows, so it holds the same either way). */
#if defined(__SANITIZE_ADDRESS__)
#define BIG_ROWS 250000
#else
#define BIG_ROWS 1000000
#endif

/* A table of BIG_ROWS rows: every row arrives, pgfan's memory stays bounded. */
START_TEST(snapshot_million_rows_bounded_memory)
{
    Env e = env_new("snap_big", SHOP_SQL, "public.orders", NULL);
    pid_t pid;
    long kb;
    char *log, *rate, want[64];

    fill_shop(e.conn, BIG_ROWS, 0, 0);
    pid = h_pgfan_start(e.config, e.log);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    kb = peak_rss_kb(pid);
    h_pgfan_stop(pid, WAIT_MS);
    ck_assert_uint_eq(h_count_lines(e.out), BIG_ROWS);
    snprintf(want, sizeof want, "\"after\":{\"id\":%d,", BIG_ROWS);
    ck_assert(h_file_contains(e.out, want));
    log = h_read_file(e.log, NULL);
    snprintf(want, sizeof want, "snapshot: read %d rows", BIG_ROWS);
    rate = strstr(log, want);
    fprintf(stderr, "snapshot: %d rows, pgfan peak RSS %ld kB; %.90s\n", BIG_ROWS, kb,
            rate ? rate : "(no rate line)");
    free(log);
    ck_assert_int_gt(kb, 0);
    ck_assert_int_lt(kb, 200 * 1024);
    env_free(&e);
}
END_TEST

/* snapshot = never streams only new changes; an existing slot without a
 * state file is taken as snapshotted (and says so). */
START_TEST(snapshot_never_and_existing_slot)
{
    Env e = env_new("snap_never", SHOP_SQL, "public.stores", NULL);
    pid_t pid;
    char **lines;
    size_t n;

    /* env_new wrote snapshot = initial; the environment overrides the file */
    fill_shop(e.conn, 0, 0, 30);
    setenv("PGFAN_SOURCE_SNAPSHOT", "never", 1);
    pid = h_pgfan_start(e.config, e.log);
    unsetenv("PGFAN_SOURCE_SNAPSHOT");
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO stores VALUES (500, 'new', 'FR')");
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    h_pgfan_stop(pid, WAIT_MS);
    lines = h_read_lines(e.out, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_ptr_nonnull(strstr(lines[0], "\"op\":\"c\""));
    h_free_lines(lines);
    ck_assert(access(e.state, F_OK) != 0);

    /* the same slot, now with snapshot = initial and no state file */
    pid = h_pgfan_start(e.config, e.log);
    h_wait_file_contains(e.log, "assuming its initial snapshot finished", WAIT_MS);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO stores VALUES (501, 'new', 'FR')");
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    h_pgfan_stop(pid, WAIT_MS);
    ck_assert_uint_eq(h_count_lines(e.out), 2);
    env_free(&e);
}
END_TEST

/* ---- Elasticsearch ------------------------------------------------------------ */

#define ES_ORDERS_SQL                                                                              \
    "CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL, "                           \
    "total numeric(30,2) NOT NULL, created_at timestamptz NOT NULL);"                              \
    "ALTER TABLE orders REPLICA IDENTITY FULL;"                                                    \
    "INSERT INTO orders SELECT i, 'pending', i * 1000000000000000000.25, "                         \
    "timestamptz '2026-11-14 00:00:00+00' + (i % 5) * interval '1 day' + i * interval '1 s' "      \
    "FROM generate_series(1, 30000) i;"                                                            \
    "CREATE PROCEDURE es_churn(n int) LANGUAGE plpgsql AS $$ BEGIN FOR i IN 1..n LOOP "            \
    "CASE i % 4 WHEN 0 THEN INSERT INTO orders VALUES (100000 + i, 'new', i, "                     \
    "timestamptz '2026-11-20 00:00:00+00'); "                                                      \
    "WHEN 1 THEN UPDATE orders SET status = 'paid', total = total + 0.01 "                         \
    "WHERE id = 1 + (i::bigint * 7919) % 30000; "                                                  \
    "WHEN 2 THEN DELETE FROM orders WHERE id = 1 + (i::bigint * 104729) % 30000; "                 \
    "ELSE UPDATE orders SET created_at = created_at - interval '2 days' "                          \
    "WHERE id = 1 + (i::bigint * 31) % 30000; END CASE; COMMIT; END LOOP; END $$;"

/* A walsender waits for transaction xid (slot creation waiting for it to end). */
typedef struct XidWait {
    PGconn *conn;
    const char *xid;
} XidWait;

static bool walsender_waits_for(void *arg)
{
    XidWait *w = arg;
    char *n = h_sql_value(w->conn,
                          "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                          "WHERE a.backend_type = 'walsender' AND NOT l.granted AND "
                          "l.locktype = 'transactionid' AND l.transactionid::text = '%s'",
                          w->xid);
    bool yes = strcmp(n, "0") != 0;

    free(n);
    return yes;
}

static char *begin_with_xid(PGconn *c)
{
    h_sql(c, "BEGIN");
    return h_sql_value(c, "SELECT pg_current_xact_id()::text");
}

static long es_differences(Env *e, EsServer *es)
{
    long status = 0;
    char *body = h_es_request(es, "GET", "/_test/docs/orders-*", NULL, &status);
    PGresult *res;
    long n;
    const char *sql =
        "WITH live AS (SELECT * FROM es_docs WHERE NOT (doc->'pgfan'->>'deleted')::boolean), "
        "bad AS (SELECT coalesce(o.id::text, l.id) AS id, "
        "CASE WHEN l.id IS NULL THEN 'missing in Elasticsearch' "
        "WHEN o.id IS NULL THEN 'deleted row still live' "
        "WHEN l.idx <> 'orders-' || to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY.MM.DD') "
        "THEN 'wrong index ' || l.idx "
        "WHEN l.doc->>'total' <> o.total::text THEN 'total ' || (l.doc->>'total') "
        "WHEN l.doc->>'status' <> o.status THEN 'status ' || (l.doc->>'status') "
        "WHEN (l.doc->>'created_at')::timestamptz <> o.created_at THEN 'created_at' "
        "WHEN l.version <> (l.doc->'pgfan'->>'lsn')::numeric THEN 'version is not the lsn' "
        "END AS why FROM orders o FULL JOIN live l ON l.id = o.id::text) "
        "SELECT count(*), string_agg(id || ': ' || why, '; ') FROM bad WHERE why IS NOT NULL";

    ck_assert_msg(status == 200, "%ld %.200s", status, body);
    h_load_es_docs(e->conn, body);
    free(body);
    res = PQexec(e->conn, sql);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
    n = atol(PQgetvalue(res, 0, 0));
    if (n > 0)
        fprintf(stderr, "snapshot_es: %ld differences: %.1500s\n", n, PQgetvalue(res, 0, 1));
    PQclear(res);
    return n;
}

/*
 * Snapshot and stream into Elasticsearch end equal to the source, with a
 * workload during the snapshot and one transaction that was open when the
 * slot became consistent: it streams an update whose change LSN is below
 * the consistent point, which must still win over the snapshot's document
 * (so snapshot documents cannot be versioned with the consistent point).
 */
START_TEST(snapshot_elasticsearch_equal_source)
{
    EsServer *es = h_es_start(NULL);
    Buf extra = BUF_INIT;
    Env e;
    PGconn *a, *b, *c, *w;
    XidWait xw;
    char *xa, *xb;
    pid_t pid;
    char **lines;
    size_t n;
    bool found = false;
    Lsn cp;

    e = env_new("snap_es", ES_ORDERS_SQL, "public.orders", NULL);
    buf_printf(&extra,
               "[sink.elasticsearch]\nurl = %s\nindex.public.orders = "
               "orders-{created_at:%%Y.%%m.%%d}\nbatch_actions = 500\nbatch_linger = 20ms\n"
               "replicas = 0\ndead_letter = %s/dead.ndjson\n",
               h_es_url(es), e.dir);
    env_config(&e, "public.orders", extra.data);
    a = h_pg_connect(e.db);
    b = h_pg_connect(e.db);
    c = h_pg_connect(e.db);
    xw.conn = e.conn;

    /* Slot creation waits for A; B starts meanwhile; then it waits for B;
     * C writes and stays open past the consistent point. */
    xa = begin_with_xid(a);
    pid = h_pgfan_start(e.config, e.log);
    xw.xid = xa;
    ck_assert(h_wait_until(walsender_waits_for, &xw, WAIT_MS));
    xb = begin_with_xid(b);
    h_sql(a, "COMMIT");
    xw.xid = xb;
    ck_assert(h_wait_until(walsender_waits_for, &xw, WAIT_MS));
    h_sql(c, "BEGIN; UPDATE orders SET status = 'open at the consistent point' WHERE id = 5");
    h_sql(b, "COMMIT");
    h_wait_file_contains(e.log, "snapshot: loading the existing rows", WAIT_MS);
    h_sql(c, "COMMIT");
    w = h_sql_send(e.db, "CALL es_churn(6000)");
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_workload_finish(w);
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    h_pgfan_stop(pid, WAIT_MS);

    /* C's update really was older than the consistent point */
    cp = state_lsn(&e, "done snap_es ");
    lines = h_read_lines(e.out, &n);
    for (size_t i = 0; i < n; i++) {
        if (strstr(lines[i], "\"status\":\"open at the consistent point\"") &&
            strstr(lines[i], "\"op\":\"u\"")) {
            found = true;
            ck_assert_uint_lt(h_json_u64(lines[i], "lsn"), cp);
            ck_assert_uint_gt(h_json_u64(lines[i], "commit_lsn"), cp);
        }
    }
    ck_assert(found);
    ck_assert_int_eq(es_differences(&e, es), 0);
    h_free_lines(lines);
    free(xa);
    free(xb);
    PQfinish(a);
    PQfinish(b);
    PQfinish(c);
    buf_free(&extra);
    env_free(&e);
    h_es_stop(es);
}
END_TEST

/* ---- Kafka -------------------------------------------------------------------- */

/*
 * The broker is librdkafka's mock cluster in a process of its own
 * (tests/harness/mock_broker.c, PGFAN_TEST_MOCK_BROKER), so its records
 * outlive pgfan, and a SIGSTOP freezes it. Every record of every partition
 * is read back, headers included, into kevents(topic, part, off, key, op,
 * lsn, commit_lsn, ev; ev NULL for a tombstone), where SQL checks the rules
 * and replays it.
 */

#define KAFKA_PARTITIONS 16
#define SHOP_TABLES "public.orders, public.customers, public.stores"

typedef struct Broker {
    pid_t pid;
    char *bootstrap;
} Broker;

static char *topic_of(const Env *e, const char *table)
{
    Buf b = BUF_INIT;

    buf_printf(&b, "%s.public.%s", e->slot, table);
    return b.data;
}

static bool has_a_line(void *path)
{
    return h_count_lines(path) >= 1;
}

/* A mock broker with a topic of KAFKA_PARTITIONS partitions per table (at most 4). */
static Broker broker_start(const Env *e, const char *const *tables)
{
    const char *bin = getenv("PGFAN_TEST_MOCK_BROKER");
    char *file = h_path(e->dir, "bootstrap");
    char *log = h_path(e->dir, "broker.log");
    char *topics[4];
    const char *argv[8] = {bin, file, "1"};
    size_t t;
    Broker b;

    ck_assert_msg(bin && bin[0],
                  "PGFAN_TEST_MOCK_BROKER is not set: run the suite with meson test");
    for (t = 0; tables[t]; t++) {
        Buf spec = BUF_INIT;
        char *topic;

        ck_assert_uint_lt(t, 4);
        topic = topic_of(e, tables[t]);

        buf_printf(&spec, "%s:%d", topic, KAFKA_PARTITIONS);
        free(topic);
        topics[t] = spec.data;
        argv[3 + t] = topics[t];
    }
    b.pid = h_spawn(argv, log);
    ck_assert_msg(h_wait_until(has_a_line, file, WAIT_MS), "the mock broker did not start: %s",
                  log);
    b.bootstrap = h_read_file(file, NULL);
    b.bootstrap[strcspn(b.bootstrap, "\n")] = '\0';
    while (t > 0)
        free(topics[--t]);
    free(file);
    free(log);
    return b;
}

static void broker_stop(Broker *b)
{
    h_kill(b->pid, SIGTERM);
    h_wait_exit(b->pid, WAIT_MS);
    free(b->bootstrap);
}

/* The config: snapshot = initial, the file sink and [sink.kafka] with a small queue. */
static void kafka_config(Env *e, const Broker *b, const char *tables)
{
    Buf extra = BUF_INIT;

    buf_printf(&extra, "[sink.kafka]\nbrokers = %s\nqueue_max_messages = 1000\n", b->bootstrap);
    env_config(e, tables, extra.data);
    buf_free(&extra);
}

static long long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Appends header name's value (nothing when absent: NULL) and a delimiter. */
static void put_header(Buf *line, rd_kafka_headers_t *h, const char *name)
{
    const void *v;
    size_t len;

    if (h && rd_kafka_header_get_last(h, name, &v, &len) == RD_KAFKA_RESP_ERR_NO_ERROR && v)
        buf_append(line, v, len);
    buf_append_char(line, '\x02');
}

/* Sends record m as a line of the COPY into kevents (copy_begin's CSV). */
static void put_record(PGconn *conn, Buf *line, rd_kafka_message_t *m)
{
    rd_kafka_headers_t *h = NULL;

    buf_reset(line);
    buf_printf(line, "%s", rd_kafka_topic_name(m->rkt));
    buf_append_char(line, '\x02');
    buf_printf(line, "%d", (int)m->partition);
    buf_append_char(line, '\x02');
    buf_printf(line, "%lld", (long long)m->offset);
    buf_append_char(line, '\x02');
    if (m->key)
        buf_append(line, m->key, m->key_len);
    buf_append_char(line, '\x02');
    rd_kafka_message_headers(m, &h);
    put_header(line, h, "pgfan.op");
    put_header(line, h, "pgfan.lsn");
    put_header(line, h, "pgfan.commit_lsn");
    if (m->payload)
        buf_append(line, m->payload, m->len);
    buf_append_char(line, '\n');
    ck_assert(PQputCopyData(conn, line->data, (int)line->len) == 1);
}

static rd_kafka_t *consumer_new(const Broker *b)
{
    char why[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *c;

    rd_kafka_conf_set(conf, "bootstrap.servers", b->bootstrap, why, sizeof why);
    rd_kafka_conf_set(conf, "group.id", "pgfan-snapshot-test", why, sizeof why);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", why, sizeof why);
    rd_kafka_conf_set(conf, "log_level", "0", why, sizeof why);
    c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
    ck_assert_msg(c != NULL, "could not create a Kafka consumer: %s", why);
    return c;
}

/*
 * Assigns every partition of the tables' topics from its beginning and
 * returns how many records they hold; each must start at offset 0 (the
 * mock broker keeps about 5 MiB a partition and drops older records).
 */
static size_t assign_all(rd_kafka_t *c, const Env *e, const char *const *tables)
{
    rd_kafka_topic_partition_list_t *parts =
        rd_kafka_topic_partition_list_new(4 * KAFKA_PARTITIONS);
    size_t want = 0;

    for (size_t t = 0; tables[t]; t++) {
        char *topic = topic_of(e, tables[t]);

        for (int p = 0; p < KAFKA_PARTITIONS; p++) {
            int64_t lo = -1, hi = -1;
            rd_kafka_resp_err_t err =
                rd_kafka_query_watermark_offsets(c, topic, p, &lo, &hi, WAIT_MS);

            ck_assert_msg(err == RD_KAFKA_RESP_ERR_NO_ERROR,
                          "could not read the offsets of %s/%d: %s", topic, p,
                          rd_kafka_err2str(err));
            ck_assert_msg(lo == 0, "%s/%d starts at offset %lld: the mock broker dropped records",
                          topic, p, (long long)lo);
            want += (size_t)hi;
            rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
        }
        free(topic);
    }
    ck_assert_int_eq(rd_kafka_assign(c, parts), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(parts);
    return want;
}

/* Loads every record of the tables' topics into kevents; returns how many. */
static size_t load_topics(Env *e, const Broker *b, const char *const *tables)
{
    rd_kafka_t *c = consumer_new(b);
    size_t want = assign_all(c, e, tables), got = 0;
    long long end = mono_ms() + WAIT_MS;
    Buf line = BUF_INIT;

    h_sql(e->conn, "DROP TABLE IF EXISTS kevents; CREATE TABLE kevents (topic text, part int, "
                   "off bigint, key text, op text, lsn numeric, commit_lsn numeric, ev jsonb, "
                   "PRIMARY KEY (topic, part, off))");
    copy_begin(e->conn, "kevents");
    while (got < want && mono_ms() < end) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);

        if (m == NULL)
            continue;
        if (!m->err) {
            put_record(e->conn, &line, m);
            got++;
        }
        rd_kafka_message_destroy(m);
    }
    copy_end(e->conn);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    buf_free(&line);
    ck_assert_msg(got == want, "read %zu of the %zu records of the topics", got, want);
    h_sql(e->conn, "ANALYZE kevents");
    return got;
}

static long sql_long(PGconn *conn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static long sql_long(PGconn *conn, const char *fmt, ...)
{
    char sql[2048];
    va_list ap;
    int len;
    char *v;
    long n;

    va_start(ap, fmt);
    len = vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    ck_assert(len > 0 && (size_t)len < sizeof sql);
    v = h_sql_value(conn, "%s", sql);
    ck_assert_ptr_nonnull(v);
    n = atol(v);
    free(v);
    return n;
}

/* A rule of the records: a query of one description per record breaking
 * it, with p.cp the snapshot's consistent point. */
typedef struct Rule {
    const char *what;
    const char *query;
} Rule;

#define BREAKING(cond)                                                                             \
    "SELECT k.topic || '/' || k.part || '@' || k.off || ' key ' || coalesce(k.key, 'null') || "    \
    "': ' || coalesce(left(k.ev::text, 300), 'tombstone') FROM kevents k, p WHERE " cond

static const Rule kafka_rules[] = {
    {"headers disagree with the value",
     BREAKING("k.ev IS NOT NULL AND (k.op IS DISTINCT FROM k.ev->>'op' OR k.lsn IS DISTINCT "
              "FROM (k.ev->'source'->>'lsn')::numeric OR k.commit_lsn IS DISTINCT FROM "
              "(k.ev->'source'->>'commit_lsn')::numeric)")},
    {"topic is not <name>.<schema>.<table>",
     BREAKING("k.ev IS NOT NULL AND k.topic IS DISTINCT FROM (k.ev->'source'->>'name') || '.' "
              "|| (k.ev->'source'->>'schema') || '.' || (k.ev->'source'->>'table')")},
    {"key is not the primary key as Debezium's key JSON",
     BREAKING("k.ev->>'op' IN ('r', 'c', 'u', 'd') AND k.key IS DISTINCT FROM '{\"id\":' || "
              "coalesce(k.ev->'after'->>'id', k.ev->'before'->>'id') || '}'")},
    {"unknown op", BREAKING("k.ev IS NOT NULL AND k.ev->>'op' NOT IN ('r', 'c', 'u', 'd', 't')")},
    {"snapshot row without snapshot true/last, commit_lsn = the consistent point, lsn below it, "
     "txId null",
     BREAKING("k.ev->>'op' = 'r' AND (k.ev->'source'->>'snapshot' NOT IN ('true', 'last') OR "
              "k.commit_lsn <> p.cp OR k.lsn >= p.cp OR k.ev->'source'->>'txId' IS NOT NULL)")},
    {"streamed change marked as snapshot or not after the consistent point",
     BREAKING("k.ev->>'op' IN ('c', 'u', 'd') AND (k.ev->'source'->>'snapshot' IS DISTINCT FROM "
              "'false' OR k.commit_lsn <= p.cp)")},
    {"truncate not the snapshot's or with a key",
     BREAKING("k.ev->>'op' = 't' AND (k.ev->'source'->>'snapshot' IS DISTINCT FROM 'true' OR "
              "k.commit_lsn <> p.cp OR k.key IS NOT NULL)")},
    {"tombstone not right after the delete of its key",
     BREAKING("k.ev IS NULL AND NOT EXISTS (SELECT 1 FROM kevents d WHERE d.topic = k.topic AND "
              "d.part = k.part AND d.off = k.off - 1 AND d.ev->>'op' = 'd' AND d.key = k.key)")},
    {"delete without its tombstone",
     BREAKING("k.ev->>'op' = 'd' AND NOT EXISTS (SELECT 1 FROM kevents t WHERE t.topic = k.topic "
              "AND t.part = k.part AND t.off = k.off + 1 AND t.ev IS NULL AND t.key = k.key)")},
    {"row read twice",
     "SELECT topic || ' key ' || key || ' ' || count(*) || ' times' FROM kevents, p WHERE "
     "ev->>'op' = 'r' GROUP BY topic, key HAVING count(*) > 1"},
    {"snapshot row after a streamed change in its partition",
     "SELECT topic || '/' || part || ': r up to offset ' || r || ', streamed from ' || s FROM "
     "(SELECT topic, part, max(off) FILTER (WHERE ev->>'op' = 'r') r, min(off) FILTER (WHERE "
     "ev->>'op' IN ('c', 'u', 'd')) s FROM kevents, p GROUP BY 1, 2) x WHERE r > s"},
};

/* How many records (or keys, or partitions) break a rule; prints some. */
static long kafka_rule_violations(Env *e, Lsn cp)
{
    long total = 0;

    for (size_t i = 0; i < sizeof kafka_rules / sizeof kafka_rules[0]; i++) {
        Buf sql = BUF_INIT;
        PGresult *res;
        long n;

        buf_printf(&sql,
                   "WITH p AS (SELECT %llu::numeric AS cp), q(v) AS (%s) SELECT count(*), "
                   "(SELECT string_agg(v, '; ') FROM (SELECT v FROM q LIMIT 3) s) FROM q",
                   (unsigned long long)cp, kafka_rules[i].query);
        res = PQexec(e->conn, sql.data);
        ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
        n = atol(PQgetvalue(res, 0, 0));
        if (n > 0)
            fprintf(stderr, "snapshot_kafka: %ld: %s: %.900s\n", n, kafka_rules[i].what,
                    PQgetvalue(res, 0, 1));
        total += n;
        PQclear(res);
        buf_free(&sql);
    }
    return total;
}

/* The r records of table: all of ids 1..rows, once each (with the rules). */
static void check_read_rows(Env *e, const char *table, long rows)
{
    char *topic = topic_of(e, table);

    ck_assert_int_eq(sql_long(e->conn,
                              "SELECT count(*) FROM kevents WHERE topic = '%s' AND ev->>'op' = "
                              "'r' AND (ev->'after'->>'id')::bigint BETWEEN 1 AND %ld",
                              topic, rows),
                     rows);
    ck_assert_int_eq(sql_long(e->conn,
                              "SELECT count(*) FROM kevents WHERE topic = '%s' AND ev->>'op' = 'r'",
                              topic),
                     rows);
    free(topic);
}

/* Replays each key's records in partition order (r and c insert, u
 * updates, d deletes; tombstones and truncates skipped): rebuilt_differences. */
static long kafka_replay_differences(Env *e, const char *const *tables)
{
    h_sql(e->conn, "DROP TABLE IF EXISTS events; CREATE TABLE events AS SELECT row_number() "
                   "OVER (ORDER BY topic, part, off) AS seq, ev FROM kevents WHERE ev IS NOT "
                   "NULL AND ev->>'op' <> 't'");
    return rebuilt_differences(e, tables);
}

/* Records per op, for the log ("c=4000 d=1200 r=63040 tombstone=1200 u=7000"). */
static char *kafka_op_counts(Env *e)
{
    return h_sql_value(e->conn, "SELECT string_agg(op || '=' || n, ' ' ORDER BY op) FROM "
                                "(SELECT coalesce(ev->>'op', 'tombstone') AS op, count(*) AS n "
                                "FROM kevents GROUP BY 1) x");
}

static bool churn_inserted_400(void *arg)
{
    Env *e = arg;

    return sql_long(e->conn, "SELECT count(*) FROM customers WHERE id >= 10000000") >= 400;
}

/*
 * Kafka and the file sink together, 20,000 writes during the snapshot:
 * every pre-existing row is one r record keyed by its primary key, one
 * "last" in all, the streamed changes follow in their partitions, and
 * replaying each key's records gives the source tables: neither lost nor
 * doubled. The broker is frozen (SIGSTOP) from the start, so the snapshot
 * stalls on the producer queue in the middle of orders while the workload
 * commits its first 2,000 writes.
 */
START_TEST(snapshot_kafka_exactly_once)
{
    Env e = env_new("snap_kafka", SHOP_SQL, SHOP_TABLES, NULL);
    const long counts[] = {60000, 3000, 40};
    Broker b = broker_start(&e, shop_tables);
    long long t0 = mono_ms();
    PGconn *w;
    pid_t pid;
    Lsn cp;
    size_t n;
    char *ops;

    kafka_config(&e, &b, SHOP_TABLES);
    fill_shop(e.conn, counts[0], counts[1], counts[2]);
    h_sql(e.conn, "%s", churn_sql);
    h_kill(b.pid, SIGSTOP);
    pid = h_pgfan_start(e.config, e.log);
    h_wait_file_contains(e.log, "FROM ONLY \"public\".\"orders\"", WAIT_MS);
    h_wait_file_contains(e.log, "producer queue full", WAIT_MS);
    w = h_sql_send(e.db, "CALL churn(20000, 10000000, %ld)", counts[0]);
    ck_assert(h_wait_until(churn_inserted_400, &e, WAIT_MS));
    /* those writes committed while the snapshot was surely unfinished */
    state_lsn(&e, "in progress snap_kafka ");
    h_kill(b.pid, SIGCONT);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_workload_finish(w);
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    h_pgfan_stop(pid, WAIT_MS);
    cp = state_lsn(&e, "done snap_kafka ");

    ck_assert_int_eq(replay_differences(&e, shop_tables), 0); /* the file sink */
    n = load_topics(&e, &b, shop_tables);
    ck_assert_int_eq(kafka_rule_violations(&e, cp), 0);
    for (int t = 0; t < 3; t++)
        check_read_rows(&e, shop_tables[t], counts[t]);
    ck_assert_int_eq(sql_long(e.conn, "SELECT count(*) FROM kevents WHERE "
                                      "ev->'source'->>'snapshot' = 'last'"),
                     1);
    ck_assert_int_eq(sql_long(e.conn, "SELECT count(*) FROM kevents WHERE ev->>'op' = 't'"), 0);
    ck_assert_int_eq(sql_long(e.conn, "SELECT count(DISTINCT ev->>'op') FROM kevents WHERE "
                                      "ev->>'op' IN ('c', 'u', 'd')"),
                     3);
    ck_assert_int_eq(kafka_replay_differences(&e, shop_tables), 0);
    ops = kafka_op_counts(&e);
    fprintf(stderr, "snapshot_kafka: %zu records (%s), %lld ms\n", n, ops, mono_ms() - t0);
    free(ops);
    broker_stop(&b);
    env_free(&e);
}
END_TEST

static const char *const gated_tables[] = {"orders", "customers", "stores", "gate", NULL};

/*
 * kill -9 in the middle of a snapshot into Kafka, writes going on from the
 * first snapshot on and more during the second: the restart starts over
 * with a new slot and a t record per table. The broker is frozen until the
 * snapshot stalls in orders, so the gate closes before its turn: the
 * snapshot is surely unfinished when pgfan dies. The first attempt's
 * records stay in the topics, all r with its consistent point; the records
 * from the second consistent point on keep every rule and replay to the
 * source.
 */
START_TEST(snapshot_kafka_kill9_starts_over)
{
    Env e = env_new("snap_kafka_kill", SHOP_SQL GATE_SQL, GATED_TABLES, NULL);
    Broker b = broker_start(&e, gated_tables);
    long long t0 = mono_ms();
    Buf log2 = BUF_INIT;
    PGconn *w, *w2, *gate;
    pid_t pid;
    Lsn first, cp;
    long earlier;
    size_t n;
    char *ops;

    kafka_config(&e, &b, GATED_TABLES);
    fill_shop(e.conn, 60000, 3000, 40);
    h_sql(e.conn, "%s", churn_sql);
    h_kill(b.pid, SIGSTOP);
    pid = h_pgfan_start(e.config, e.log);
    h_wait_file_contains(e.log, "producer queue full", WAIT_MS);
    gate = close_gate(&e, e.log);
    w = h_sql_send(e.db, "CALL churn(20000, 10000000, 60000)");
    h_kill(b.pid, SIGCONT);
    h_wait_lines(e.out, 20000, WAIT_MS);
    h_kill(pid, SIGKILL);
    h_wait_exit(pid, WAIT_MS);
    open_gate(gate);
    ck_assert(!h_file_contains(e.out, "\"snapshot\":\"last\""));
    first = state_lsn(&e, "in progress snap_kafka_kill ");

    buf_printf(&log2, "%s/pgfan2.log", e.dir);
    pid = h_pgfan_start(e.config, log2.data);
    h_wait_file_contains(log2.data, "snapshot: loading the existing rows", WAIT_MS);
    /* another span: other rows than the first workload's (its deletes hit) */
    w2 = h_sql_send(e.db, "CALL churn(2000, 20000000, 59999)");
    h_wait_file_contains(log2.data, "streaming from slot", WAIT_MS);
    ck_assert(h_file_contains(log2.data, "dropping the slot and starting over"));
    h_workload_finish(w);
    h_workload_finish(w2);
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, log2.data);
    h_pgfan_stop(pid, WAIT_MS);
    cp = state_lsn(&e, "done snap_kafka_kill ");
    ck_assert_uint_gt(cp, first);

    ck_assert_int_eq(replay_differences(&e, gated_tables), 0); /* the file sink */
    n = load_topics(&e, &b, gated_tables);
    earlier = sql_long(e.conn, "SELECT count(*) FROM kevents WHERE commit_lsn < %llu",
                       (unsigned long long)cp);
    ck_assert_int_gt(earlier, 0);
    ck_assert_int_eq(sql_long(e.conn,
                              "SELECT count(*) FROM kevents WHERE commit_lsn < %llu AND "
                              "(ev->>'op' IS DISTINCT FROM 'r' OR commit_lsn <> %llu)",
                              (unsigned long long)cp, (unsigned long long)first),
                     0);
    h_sql(e.conn, "DELETE FROM kevents WHERE commit_lsn < %llu", (unsigned long long)cp);
    ck_assert_int_eq(kafka_rule_violations(&e, cp), 0);
    ck_assert_int_eq(sql_long(e.conn, "SELECT count(DISTINCT topic) FROM kevents WHERE "
                                      "ev->>'op' = 't'"),
                     4);
    ck_assert_int_eq(sql_long(e.conn, "SELECT count(*) FROM kevents WHERE ev->>'op' = 't'"), 4);
    ck_assert_int_eq(sql_long(e.conn, "SELECT count(*) FROM kevents WHERE "
                                      "ev->'source'->>'snapshot' = 'last'"),
                     1);
    ck_assert_int_eq(sql_long(e.conn, "SELECT count(DISTINCT ev->>'op') FROM kevents WHERE "
                                      "ev->>'op' IN ('c', 'u', 'd')"),
                     3);
    check_read_rows(&e, "stores", 40); /* the workload never touches stores */
    ck_assert_int_eq(kafka_replay_differences(&e, gated_tables), 0);
    ops = kafka_op_counts(&e);
    fprintf(stderr,
            "snapshot_kafka kill -9: %zu records, %ld of the first attempt; then %s; "
            "%lld ms\n",
            n, earlier, ops, mono_ms() - t0);
    free(ops);
    buf_free(&log2);
    broker_stop(&b);
    env_free(&e);
}
END_TEST

int main(void)
{
    const char *const env[] = {"PGFAN_TEST_PGHOST", "PGFAN_TEST_BIN", NULL};
    const TTest *const tests[] = {snapshot_three_tables_exactly_once,
                                  snapshot_values_equal_stream,
                                  snapshot_concurrent_writes,
                                  snapshot_kill9_starts_over,
                                  snapshot_sigterm_starts_over,
                                  snapshot_million_rows_bounded_memory,
                                  snapshot_never_and_existing_slot,
                                  snapshot_elasticsearch_equal_source,
                                  snapshot_kafka_exactly_once,
                                  snapshot_kafka_kill9_starts_over,
                                  NULL};

    return h_run_suite("snapshot", "snapshot", 600, env, tests, NULL);
}
