/*
 * test_snapshot.c - [source] snapshot = initial end to end: the real pgfan
 * binary against PostgreSQL 15 with wal2json, the file sink (and one test
 * with the Elasticsearch test server).
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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* Loads every line of the output file into events(seq, ev jsonb). */
static size_t load_events(Env *e)
{
    size_t n;
    char **lines = h_read_lines(e->out, &n);
    PGresult *res;

    h_sql(e->conn, "DROP TABLE IF EXISTS events; CREATE TABLE events (seq bigserial, ev jsonb)");
    /* CSV with quote and delimiter characters JSON never holds raw: no escaping. */
    res = PQexec(e->conn, "COPY events (ev) FROM STDIN (FORMAT csv, QUOTE E'\\x01', "
                          "DELIMITER E'\\x02')");
    ck_assert_msg(PQresultStatus(res) == PGRES_COPY_IN, "%s", PQresultErrorMessage(res));
    PQclear(res);
    for (size_t i = 0; i < n; i++) {
        ck_assert(PQputCopyData(e->conn, lines[i], (int)strlen(lines[i])) == 1);
        ck_assert(PQputCopyData(e->conn, "\n", 1) == 1);
    }
    ck_assert(PQputCopyEnd(e->conn, NULL) == 1);
    res = PQgetResult(e->conn);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s", PQresultErrorMessage(res));
    PQclear(res);
    while ((res = PQgetResult(e->conn)) != NULL)
        PQclear(res);
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
 * Replays the file and returns the number of rows of `table` that differ
 * from the rebuilt ones (missing, extra, or any column); prints some.
 */
static long replay_differences(Env *e, const char *const *tables)
{
    long total = 0;

    load_events(e);
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
                                  NULL};

    return h_run_suite("snapshot", "snapshot", 600, env, tests, NULL);
}
