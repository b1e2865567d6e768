/*
 * test_shop_sim.c - pgfan-shop-sim (tools/) against a real PostgreSQL 15:
 * the history is deterministic for a seed and consistent (amounts, item
 * counts, status lifecycle, references, skew, time span), live traffic
 * reaches its rate and every change it reports is one PostgreSQL decoded
 * (an independent wal2json slot counts them), SIGTERM stops it cleanly,
 * and bad input exits 2 (usage) or 1 (runtime) with a message.
 *
 * The simulator is PGFAN_TEST_SHOP_SIM, the schema PGFAN_TEST_SHOP_SCHEMA
 * (deploy/shop/schema.sql; its psql meta-commands are left out). Each test
 * has its own databases; nothing sleeps, every wait polls under a deadline.
 */
#include "../harness/harness.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RUN_MS 120000
#define END "2026-01-01" /* a fixed end of history: the same rows any day */
#define SMALL "--stores", "60", "--customers", "800", "--orders", "5000", "--end", END

static const char *sim_bin(void)
{
    const char *bin = getenv("PGFAN_TEST_SHOP_SIM");

    ck_assert_msg(bin && bin[0], "PGFAN_TEST_SHOP_SIM is not set");
    return bin;
}

/* A database with deploy/shop/schema.sql loaded (an empty shop). */
static void create_shop(const char *db)
{
    const char *path = getenv("PGFAN_TEST_SHOP_SCHEMA");
    char *sql, *line, *next;
    PGconn *conn;

    ck_assert_msg(path && path[0], "PGFAN_TEST_SHOP_SCHEMA is not set");
    h_create_db(db);
    sql = h_read_file(path, NULL);
    /* blank out psql meta-commands (\set ...): libpq does not know them */
    for (line = sql; line && *line; line = next) {
        next = strchr(line, '\n');
        if (*line == '\\')
            memset(line, ' ', next ? (size_t)(next - line) : strlen(line));
        next = next ? next + 1 : NULL;
    }
    conn = h_pg_connect(db);
    h_sql(conn, "%s", sql);
    PQfinish(conn);
    free(sql);
}

/*
 * Runs the simulator with args (NULL-terminated, after the binary) and
 * waits for it; its stdout and stderr go to out. Returns the exit code.
 */
static int run_sim(const char *out, const char *const *args)
{
    const char *argv[32];
    size_t n = 0;
    int rc;

    argv[n++] = sim_bin();
    while (*args && n < 31)
        argv[n++] = *args++;
    argv[n] = NULL;
    rc = h_wait_exit(h_spawn(argv, out), RUN_MS);
    ck_assert_msg(rc >= 0, "pgfan-shop-sim did not finish within %d ms", RUN_MS);
    return rc;
}

/* Loads a small history with seed into db; fails the test if it fails. */
static void load_history(const char *dir, const char *db, const char *seed)
{
    char *dsn = h_dsn(db), out[256];
    const char *args[] = {"history", "--dsn", dsn, "--seed", seed, SMALL, NULL};
    int rc;

    snprintf(out, sizeof out, "%s/history-%s.log", dir, db);
    rc = run_sim(out, args);
    if (rc != 0) {
        char *log = h_read_file(out, NULL);

        ck_abort_msg("history into %s exited %d:\n%.1500s", db, rc, log);
    }
    ck_assert_msg(h_file_contains(out, "rows/s"), "history did not print rows/s");
    free(dsn);
}

static char *checksum(const char *db, const char *table, const char *order_by)
{
    PGconn *conn = h_pg_connect(db);
    char *sum = h_sql_value(conn, "SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY %s))"
                                  " FROM %s t",
                            order_by, table);

    PQfinish(conn);
    return sum;
}

/* Asserts that query (one bigint) gives want, showing the query otherwise. */
static void assert_count(PGconn *conn, long long want, const char *what, const char *query)
{
    char *v = h_sql_value(conn, "%s", query);
    long long got = atoll(v);

    ck_assert_msg(got == want, "%s: got %lld, want %lld (%s)", what, got, want, query);
    free(v);
}

static long long value_ll(PGconn *conn, const char *query)
{
    char *v = h_sql_value(conn, "%s", query);
    long long n = atoll(v);

    free(v);
    return n;
}

START_TEST(history_is_deterministic)
{
    char *dir = h_tmpdir();
    static const char *const tables[][2] = {
        {"countries", "id"}, {"stores", "id"}, {"customers", "id"},
        {"products", "id"}, {"orders", "id"}, {"order_items", "order_id, product_id"},
    };

    create_shop("shopsim_a");
    create_shop("shopsim_b");
    create_shop("shopsim_c");
    load_history(dir, "shopsim_a", "7");
    load_history(dir, "shopsim_b", "7");
    load_history(dir, "shopsim_c", "8");
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        char *a = checksum("shopsim_a", tables[i][0], tables[i][1]);
        char *b = checksum("shopsim_b", tables[i][0], tables[i][1]);

        ck_assert_msg(strcmp(a, b) == 0, "seed 7 twice: %s differs: %s vs %s", tables[i][0], a, b);
        free(a);
        free(b);
    }
    {
        char *a = checksum("shopsim_a", "orders", "id");
        char *c = checksum("shopsim_c", "orders", "id");

        ck_assert_msg(strcmp(a, c) != 0, "seeds 7 and 8 gave the same orders: %s", a);
        ck_assert_msg(strncmp(a, "5000:", 5) == 0, "want 5000 orders, got %s", a);
        free(a);
        free(c);
    }
    h_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(history_is_consistent)
{
    char *dir = h_tmpdir();
    PGconn *conn;

    create_shop("shopsim_h");
    load_history(dir, "shopsim_h", "11");
    conn = h_pg_connect("shopsim_h");
    assert_count(conn, 20, "countries", "SELECT count(*) FROM countries");
    assert_count(conn, 60, "stores", "SELECT count(*) FROM stores");
    assert_count(conn, 800, "customers", "SELECT count(*) FROM customers");
    /* amounts: exact cents, total = items - discount, discount within the items */
    assert_count(conn, 0, "orders whose total is not items - discount",
                 "SELECT count(*) FROM orders o JOIN (SELECT order_id, sum(quantity * unit_price) AS s"
                 " FROM order_items GROUP BY order_id) i ON i.order_id = o.id"
                 " WHERE o.total_amount <> i.s - o.discount OR o.discount > i.s");
    assert_count(conn, 0, "orders without 1-5 items",
                 "SELECT count(*) FROM orders o WHERE (SELECT count(*) FROM order_items i"
                 " WHERE i.order_id = o.id) NOT BETWEEN 1 AND 5");
    assert_count(conn, 0, "items whose price is not their product's",
                 "SELECT count(*) FROM order_items i JOIN products p ON p.id = i.product_id"
                 " WHERE i.unit_price <> p.price");
    ck_assert_msg(value_ll(conn, "SELECT count(*) FROM orders WHERE discount > 0") > 500,
                  "too few discounted orders");
    /* currency: the store's country's, as shop_currency() says */
    assert_count(conn, 0, "orders in another currency than their store's",
                 "SELECT count(*) FROM orders o JOIN stores s ON s.id = o.store_id"
                 " JOIN countries c ON c.id = s.country_id WHERE o.currency <> shop_currency(c.code)");
    /* lifecycle */
    assert_count(conn, 6, "statuses present", "SELECT count(DISTINCT status) FROM orders");
    assert_count(conn, 0, "shipped_at on orders that never shipped",
                 "SELECT count(*) FROM orders WHERE status IN ('pending', 'paid', 'cancelled')"
                 " AND shipped_at IS NOT NULL");
    assert_count(conn, 0, "shipped or delivered orders without shipped_at",
                 "SELECT count(*) FROM orders WHERE status IN ('shipped', 'delivered')"
                 " AND shipped_at IS NULL");
    assert_count(conn, 0, "orders with times out of order",
                 "SELECT count(*) FROM orders WHERE updated_at < created_at"
                 " OR shipped_at < created_at OR shipped_at > updated_at");
    assert_count(conn, 0, "old orders still open",
                 "SELECT count(*) FROM orders WHERE status IN ('pending', 'paid', 'shipped')"
                 " AND created_at < timestamptz '" END "' - interval '15 days'");
    ck_assert_msg(value_ll(conn, "SELECT count(*) FROM orders WHERE status = 'refunded'"
                                 " AND shipped_at IS NOT NULL") > 0,
                  "no order refunded after delivery");
    /* time: 12 months before --end, nothing before a store opened or a customer signed up */
    assert_count(conn, 1, "history spans the 12 months before --end",
                 "SELECT (min(created_at) BETWEEN timestamptz '2025-01-01' AND '2025-01-04'"
                 " AND max(created_at) BETWEEN timestamptz '2025-12-30' AND '" END "')::int"
                 " FROM orders");
    assert_count(conn, 0, "orders before their store or customer existed",
                 "SELECT count(*) FROM orders o JOIN stores s ON s.id = o.store_id"
                 " JOIN customers c ON c.id = o.customer_id"
                 " WHERE o.created_at < s.created_at OR o.created_at < c.created_at");
    /* skew: the top 10 % of stores take well over 10 % of the orders */
    ck_assert_msg(value_ll(conn, "SELECT round(100 * sum(n) FILTER (WHERE r <= 6) / sum(n))"
                                 " FROM (SELECT count(*) AS n, row_number() OVER"
                                 " (ORDER BY count(*) DESC) AS r FROM orders GROUP BY store_id) x") >=
                      30,
                  "the top 10 %% of stores have less than 30 %% of the orders");
    /* the identity sequences continue after the loaded ids */
    h_sql(conn, "INSERT INTO orders (store_id, customer_id, currency) VALUES (1, 1, 'USD')");
    assert_count(conn, 5001, "the next order id", "SELECT max(id) FROM orders");
    PQfinish(conn);
    h_rm_rf(dir);
    free(dir);
}
END_TEST

/* "live: stopped after S s: N row changes" -> N; fails the test if absent. */
static long long live_changes(const char *out)
{
    char *log = h_read_file(out, NULL);
    const char *p = strstr(log, "live: stopped after ");
    long long n = -1;

    ck_assert_msg(p != NULL, "no summary line in the output:\n%.1500s", log);
    p = strstr(p, " s: ");
    ck_assert_msg(p && sscanf(p, " s: %lld row changes", &n) == 1, "unreadable summary:\n%.1500s",
                  log);
    free(log);
    return n;
}

START_TEST(live_reaches_its_rate)
{
    char *dir = h_tmpdir(), *dsn, out[256];
    PGconn *conn;
    long long reported, decoded, max_id;
    int rc;

    create_shop("shopsim_l");
    load_history(dir, "shopsim_l", "3");
    conn = h_pg_connect("shopsim_l");
    max_id = value_ll(conn, "SELECT max(id) FROM orders");
    h_sql(conn, "SELECT pg_create_logical_replication_slot('shopsim_check', 'wal2json')");
    dsn = h_dsn("shopsim_l");
    snprintf(out, sizeof out, "%s/live.log", dir);
    {
        const char *args[] = {"live", "--dsn", dsn, "--rate", "300", "--seconds", "4", NULL};

        rc = run_sim(out, args);
    }
    ck_assert_msg(rc == 0, "live exited %d", rc);
    ck_assert_msg(h_file_contains(out, "live:    1s"), "no per-second line");
    reported = live_changes(out);
    /* what PostgreSQL decoded: exactly the changes live says it committed */
    decoded = value_ll(conn, "SELECT count(*) FROM pg_logical_slot_get_changes('shopsim_check',"
                             " NULL, NULL, 'format-version', '2')"
                             " WHERE data::json->>'action' IN ('I', 'U', 'D')");
    ck_assert_msg(decoded == reported, "live reported %lld changes, PostgreSQL decoded %lld",
                  reported, decoded);
    ck_assert_msg(reported >= 600 && reported <= 1800,
                  "4 s at 300 changes/s gave %lld changes (want 1200 +- 50 %%)", reported);
    /* new orders are consistent and move along their lifecycle */
    {
        char q[512];

        snprintf(q, sizeof q,
                 "SELECT count(*) FROM orders o JOIN (SELECT order_id, sum(quantity * unit_price) AS s"
                 " FROM order_items GROUP BY order_id) i ON i.order_id = o.id"
                 " WHERE o.id > %lld AND o.total_amount <> i.s - o.discount",
                 max_id);
        assert_count(conn, 0, "live orders whose total is not items - discount", q);
        snprintf(q, sizeof q, "SELECT count(*) FROM orders WHERE id > %lld AND status <> 'pending'",
                 max_id);
        ck_assert_msg(value_ll(conn, q) > 0, "no live order moved on from pending");
        snprintf(q, sizeof q, "SELECT count(*) FROM orders WHERE id > %lld", max_id);
        ck_assert_msg(value_ll(conn, q) > 20, "too few live orders");
    }
    assert_count(conn, 0, "shipped orders without shipped_at",
                 "SELECT count(*) FROM orders WHERE status IN ('shipped', 'delivered')"
                 " AND shipped_at IS NULL");
    h_drop_slot(conn, "shopsim_check");
    PQfinish(conn);
    free(dsn);
    h_rm_rf(dir);
    free(dir);
}
END_TEST

static bool has_first_second(void *path)
{
    return h_file_contains(path, "live:    1s");
}

START_TEST(live_stops_on_sigterm)
{
    char *dir = h_tmpdir(), *dsn, out[256];
    pid_t pid;
    int rc;

    create_shop("shopsim_t");
    load_history(dir, "shopsim_t", "5");
    dsn = h_dsn("shopsim_t");
    snprintf(out, sizeof out, "%s/live.log", dir);
    {
        const char *argv[] = {sim_bin(), "live", "--dsn", dsn, "--rate", "100", NULL};

        pid = h_spawn(argv, out);
    }
    ck_assert_msg(h_wait_until(has_first_second, out, 30000), "live printed no second line");
    h_kill(pid, SIGTERM);
    rc = h_wait_exit(pid, 10000);
    ck_assert_msg(rc == 0, "live exited %d after SIGTERM (want 0)", rc);
    ck_assert_msg(live_changes(out) > 0, "live stopped without changes");
    free(dsn);
    h_rm_rf(dir);
    free(dir);
}
END_TEST

/* Runs args, expects exit code want and needle in the output. */
static void expect_failure(const char *dir, int want, const char *needle, const char *const *args)
{
    char out[256], cmd[512] = "pgfan-shop-sim";
    int rc;
    char *log;

    for (const char *const *a = args; *a; a++)
        snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), " %s", *a);
    snprintf(out, sizeof out, "%s/fail.log", dir);
    h_write_file(out, "%s", "");
    rc = run_sim(out, args);
    log = h_read_file(out, NULL);
    ck_assert_msg(rc == want, "%s: exit %d, want %d:\n%.1500s", cmd, rc, want, log);
    ck_assert_msg(strstr(log, needle) != NULL, "%s: output lacks \"%s\":\n%.1500s", cmd, needle,
                  log);
    free(log);
}

START_TEST(bad_input_is_refused)
{
    char *dir = h_tmpdir(), *dsn, *empty_dsn;

    create_shop("shopsim_u");
    load_history(dir, "shopsim_u", "1");
    h_create_db("shopsim_empty");
    dsn = h_dsn("shopsim_u");
    empty_dsn = h_dsn("shopsim_empty");
    {
        const char *a1[] = {NULL};
        const char *a2[] = {"sell", NULL};
        const char *a3[] = {"history", NULL};
        const char *a4[] = {"live", "--dsn", dsn, NULL};
        const char *a5[] = {"live", "--dsn", dsn, "--rate", "0", NULL};
        const char *a6[] = {"live", "--dsn", dsn, "--rate", "10x", NULL};
        const char *a7[] = {"history", "--dsn", dsn, "--months", "0", NULL};
        const char *a8[] = {"history", "--dsn", dsn, "--end", "2026-02-30x", NULL};
        const char *a9[] = {"history", "--dsn", dsn, "--rate", "5", NULL};
        const char *a10[] = {"history", "--dsn", "not a dsn", NULL};
        const char *a11[] = {"history", "--dsn", dsn, "--seed", NULL};
        const char *r1[] = {"history", "--dsn", empty_dsn, NULL};
        const char *r2[] = {"live", "--dsn", empty_dsn, "--rate", "10", NULL};
        const char *r3[] = {"history", "--dsn", dsn, NULL};
        const char *r4[] = {"history", "--dsn", "host=127.0.0.1 port=1 connect_timeout=5", NULL};

        expect_failure(dir, 2, "missing command", a1);
        expect_failure(dir, 2, "unknown command \"sell\"", a2);
        expect_failure(dir, 2, "history needs --dsn", a3);
        expect_failure(dir, 2, "live needs --rate", a4);
        expect_failure(dir, 2, "invalid value for --rate: \"0\"", a5);
        expect_failure(dir, 2, "invalid value for --rate: \"10x\"", a6);
        expect_failure(dir, 2, "invalid value for --months: \"0\"", a7);
        expect_failure(dir, 2, "invalid value for --end", a8);
        expect_failure(dir, 2, "unknown option for history: \"--rate\"", a9);
        expect_failure(dir, 2, "could not parse --dsn", a10);
        expect_failure(dir, 2, "option --seed needs a value", a11);
        expect_failure(dir, 1, "deploy/shop/schema.sql", r1);
        expect_failure(dir, 1, "table countries does not exist", r2);
        expect_failure(dir, 1, "the shop already has rows", r3);
        expect_failure(dir, 1, "could not connect to PostgreSQL", r4);
    }
    free(dsn);
    free(empty_dsn);
    h_rm_rf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    const char *const env[] = {"PGFAN_TEST_PGHOST", "PGFAN_TEST_SHOP_SIM", NULL};
    const TTest *const tests[] = {history_is_deterministic, history_is_consistent,
                                  live_reaches_its_rate,    live_stops_on_sigterm,
                                  bad_input_is_refused,     NULL};

    return h_run_suite("shop_sim", "shop_sim", 300, env, tests, NULL);
}
