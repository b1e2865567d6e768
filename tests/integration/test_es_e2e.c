/*
 * test_es_e2e.c - pgfan with [sink.elasticsearch] against a real
 * PostgreSQL 15 and the Elasticsearch 8 test server (tests/es_server).
 *
 * The server is a separate process (tests/harness/es_server.h), so what it
 * holds survives pgfan's kill -9. Its documents are compared with the
 * source rows inside PostgreSQL: every document's _source is loaded into a
 * jsonb column (jsonb keeps numerics exact) and one SQL statement lists the
 * rows that differ in any field, in the index they live in, or exist on
 * one side only. Nothing sleeps: every wait polls a condition under a
 * deadline.
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

#define WAIT_MS 90000

/* The shop's orders, with every kind of value the sink converts. */
#define ORDERS_SQL                                                                         \
    "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, "            \
    "status text NOT NULL, total numeric(30,2) NOT NULL, created_at timestamptz NOT NULL, " \
    "shipped_at timestamptz, meta jsonb, tags text[], note text);"                         \
    "ALTER TABLE orders REPLICA IDENTITY FULL;"

typedef struct Env {
    char *dir, *db, *slot, *config, *log, *dead;
    PGconn *conn;
    EsServer *es;
} Env;

/* (Re)writes the pgfan config: the file sink of h_write_config plus the
 * Elasticsearch sink with extra lines. */
static void write_config(Env *e, const char *slot, const char *extra)
{
    Buf b = BUF_INIT;

    free(e->config);
    buf_printf(&b,
               "[sink.elasticsearch]\nurl = %s\nindex.public.orders = "
               "orders-{created_at:%%Y.%%m.%%d}\nbatch_actions = 200\nbatch_linger = 20ms\n"
               "replicas = 0\ndead_letter = %s\n%s",
               h_es_url(e->es), e->dead, extra ? extra : "");
    e->config = h_write_config(e->dir, e->db, slot, "public.orders", b.data);
    buf_free(&b);
}

static Env env_new(const char *name, const char *schema_sql, const char *es_extra,
                   const char *const *server_args)
{
    Env e = {0};

    e.conn = h_setup(name, schema_sql, &e.dir);
    e.db = xstrdup(name);
    e.slot = xstrdup(name);
    e.es = h_es_start(server_args);
    e.dead = h_path(e.dir, "dead.ndjson");
    write_config(&e, e.slot, es_extra);
    e.log = h_path(e.dir, "pgfan.log");
    return e;
}

static void env_free(Env *e)
{
    h_es_stop(e->es);
    h_teardown(e->conn, e->slot, e->dir);
    free(e->db);
    free(e->slot);
    free(e->config);
    free(e->log);
    free(e->dead);
}

/* A mixed workload on orders: inserts over ten days with 30-digit totals,
 * json and arrays, a TOASTed note left alone by later updates, status and
 * amount updates, a row moved to another day, deletes. */
static void mixed_workload(PGconn *conn, int first, int n)
{
    h_sql(conn,
          "INSERT INTO orders SELECT i, i %% 97, 'pending', "
          "(i::numeric * 1000000000000000000000000 + 0.25), "
          "timestamptz '2026-11-14 22:30:00+00' + (i %% 10) * interval '1 day' + "
          "i * interval '1 second', NULL, jsonb_build_object('src', 'web', 'n', i), "
          "ARRAY['a', 'b' || i], CASE WHEN i %% 50 = 0 THEN repeat('toast ', 5000) END "
          "FROM generate_series(%d, %d) i",
          first, first + n - 1);
    h_sql(conn, "UPDATE orders SET status = 'paid', shipped_at = created_at + interval '1 hour' "
                "WHERE id BETWEEN %d AND %d AND id %% 3 = 0",
          first, first + n - 1);
    h_sql(conn, "UPDATE orders SET total = total + 0.01 WHERE id BETWEEN %d AND %d AND id %% 5 = 0",
          first, first + n - 1);
    h_sql(conn, "UPDATE orders SET created_at = created_at - interval '3 days' "
                "WHERE id BETWEEN %d AND %d AND id %% 11 = 0",
          first, first + n - 1);
    h_sql(conn, "DELETE FROM orders WHERE id BETWEEN %d AND %d AND id %% 7 = 0", first,
          first + n - 1);
    for (int i = first; i < first + 20; i++)
        h_sql(conn, "UPDATE orders SET status = 'shipped' WHERE id = %d", i);
}

/*
 * Loads every document of indices matching pattern into es_docs(idx, id,
 * version, doc jsonb) in the test database.
 */
static size_t load_docs(Env *e, const char *pattern)
{
    Buf path = BUF_INIT;
    long status = 0;
    char *body;
    size_t n;

    buf_printf(&path, "/_test/docs/%s", pattern);
    body = h_es_request(e->es, "GET", path.data, NULL, &status);
    ck_assert_msg(status == 200, "GET %s: %ld %.200s", path.data, status, body);
    n = h_load_es_docs(e->conn, body);
    free(body);
    buf_free(&path);
    return n;
}

/*
 * Rows of orders and live (not soft-deleted) documents that disagree: in any
 * column (numerics and text compared as exact text), in the index (the UTC
 * day of created_at) or by existing on one side only. Deleted rows must be
 * documents marked deleted. Returns the number of disagreements; prints the
 * first few.
 */
static long differences(Env *e)
{
    const char *sql =
        "WITH live AS (SELECT * FROM es_docs WHERE NOT (doc->'pgfan'->>'deleted')::boolean), "
        "bad AS (SELECT coalesce(o.id::text, l.id) AS id, "
        "CASE WHEN l.id IS NULL THEN 'missing in Elasticsearch' "
        "WHEN o.id IS NULL THEN 'deleted row still live' "
        "WHEN l.idx <> 'orders-' || to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY.MM.DD') "
        "THEN 'wrong index ' || l.idx "
        "WHEN l.doc->>'total' <> o.total::text THEN 'total ' || (l.doc->>'total') "
        "WHEN l.doc->>'status' <> o.status THEN 'status' "
        "WHEN (l.doc->>'customer_id')::bigint <> o.customer_id THEN 'customer_id' "
        "WHEN (l.doc->>'created_at')::timestamptz <> o.created_at THEN 'created_at' "
        "WHEN (l.doc->>'shipped_at')::timestamptz IS DISTINCT FROM o.shipped_at THEN 'shipped_at' "
        "WHEN nullif(l.doc->'meta', 'null') IS DISTINCT FROM o.meta THEN 'meta' "
        "WHEN nullif(l.doc->'tags', 'null') IS DISTINCT FROM to_jsonb(o.tags) THEN 'tags' "
        "WHEN l.doc->>'note' IS DISTINCT FROM o.note THEN 'note' "
        "WHEN l.version <> (l.doc->'pgfan'->>'lsn')::numeric THEN 'version is not the lsn' "
        "END AS why FROM orders o FULL JOIN live l ON l.id = o.id::text) "
        "SELECT count(*), string_agg(id || ': ' || why, '; ') FILTER (WHERE why IS NOT NULL) "
        "FROM bad WHERE why IS NOT NULL";
    PGresult *res = PQexec(e->conn, sql);
    long n;

    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
    n = atol(PQgetvalue(res, 0, 0));
    if (n > 0)
        fprintf(stderr, "es_e2e: %ld differences: %.1500s\n", n, PQgetvalue(res, 0, 1));
    PQclear(res);
    return n;
}

/* A JSON integer after "key": in text (first occurrence), -1 when absent. */
static long long json_int(const char *text, const char *key)
{
    char pat[96];
    const char *p;

    snprintf(pat, sizeof pat, "\"%s\":", key);
    p = strstr(text, pat);
    return p ? strtoll(p + strlen(pat), NULL, 10) : -1;
}

/* The sum of every JSON integer after "key": in text (0 when absent). */
static long long json_sum(const char *text, const char *key)
{
    char pat[96];
    long long sum = 0;

    snprintf(pat, sizeof pat, "\"%s\":", key);
    for (const char *p = text; (p = strstr(p, pat)) != NULL; p += strlen(pat))
        sum += strtoll(p + strlen(pat), NULL, 10);
    return sum;
}

/* ---- tests -------------------------------------------------------------- */

/* Documents equal the source rows, field by field, each in its day's index;
 * the template and alias are in place; a replay of the same changes (a
 * second slot created before the workload) changes nothing: every write is
 * a 409. */
START_TEST(es_documents_equal_source)
{
    Env e = env_new("es_equal", ORDERS_SQL, "text.public.orders = note\n", NULL);
    pid_t pid;
    long status;
    char *body;
    size_t docs, docs_again;
    long long conflicts_before, conflicts_after;
    char *got, *want;

    h_sql(e.conn, "SELECT pg_create_logical_replication_slot('es_equal_replay', 'wal2json')");
    pid = h_pgfan_start(e.config, e.log);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    mixed_workload(e.conn, 1, 1500);
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    h_pgfan_stop(pid, WAIT_MS);

    docs = load_docs(&e, "orders-*");
    ck_assert_uint_gt(docs, 1400);
    ck_assert_int_eq(differences(&e), 0);
    /* soft-deleted: every deleted row, and the old document of every moved one */
    got = h_sql_value(e.conn, "SELECT count(*) FROM es_docs WHERE "
                              "(doc->'pgfan'->>'deleted')::boolean");
    want = h_sql_value(e.conn, "SELECT count(*) FILTER (WHERE i %% 7 = 0) + "
                               "count(*) FILTER (WHERE i %% 11 = 0) "
                               "FROM generate_series(1, 1500) i");
    ck_assert_str_eq(got, want);
    free(got);
    free(want);
    body = h_es_request(e.es, "GET", "/_index_template/pgfan-public-orders", NULL, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_ptr_nonnull(strstr(body, "\"orders-*\""));
    ck_assert_ptr_nonnull(strstr(body, "\"total\":{\"type\":\"double\"}")); /* numeric(30,2) */
    ck_assert_ptr_nonnull(strstr(body, "\"note\":{\"type\":\"text\""));
    free(body);
    /* the alias hides soft-deleted documents */
    want = h_sql_value(e.conn, "SELECT count(*) FROM orders");
    ck_assert_int_eq(h_es_count(e.es, "orders"), atol(want));
    free(want);

    /* Replay everything through the second slot: nothing changes. */
    body = h_es_request(e.es, "GET", "/_test/stats", NULL, &status);
    conflicts_before = json_int(body, "409");
    free(body);
    write_config(&e, "es_equal_replay", "text.public.orders = note\n");
    pid = h_pgfan_start(e.config, e.log);
    h_wait_caught_up(e.conn, "es_equal_replay", WAIT_MS, e.log);
    h_pgfan_stop(pid, WAIT_MS);
    body = h_es_request(e.es, "GET", "/_test/stats", NULL, &status);
    conflicts_after = json_int(body, "409");
    free(body);
    ck_assert_msg(conflicts_after - (conflicts_before > 0 ? conflicts_before : 0) >=
                      (long long)docs,
                  "replay: %lld conflicts before, %lld after, %zu documents", conflicts_before,
                  conflicts_after, docs);
    docs_again = load_docs(&e, "orders-*");
    ck_assert_uint_eq(docs_again, docs);
    ck_assert_int_eq(differences(&e), 0);
    ck_assert_uint_eq(h_count_lines(e.dead), 0);
    fprintf(stderr,
            "es_replay: %zu documents compared with %ld source rows, 0 differences, "
            "%lld replayed writes answered 409, 0 dead-lettered\n",
            docs_again, h_count_rows(e.conn, "orders"),
            conflicts_after - (conflicts_before > 0 ? conflicts_before : 0));
    h_drop_slot(e.conn, "es_equal_replay");
    env_free(&e);
}
END_TEST

/* 429 storms on items, whole-request 503s, dropped connections and a
 * kill -9 in the middle: the final state still equals the source. */
START_TEST(es_faults_and_kill9_lose_nothing)
{
    Env e = env_new("es_faults", ORDERS_SQL, "max_in_flight = 3\n", NULL);
    pid_t pid = h_pgfan_start(e.config, e.log);
    PGconn *w;
    long status;
    char *body;
    size_t docs;

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    body = h_es_request(e.es, "POST", "/_test/faults",
                        "{\"faults\":[{\"type\":\"item_status\",\"status\":429,"
                        "\"every\":3,\"count\":120},{\"type\":\"status\",\"status\":503,"
                        "\"count\":3},{\"type\":\"drop_connection\",\"count\":2},"
                        "{\"type\":\"drop_connection\",\"count\":2,\"apply\":true},"
                        "{\"type\":\"delay\",\"ms\":300,\"count\":3}]}",
                        &status);
    ck_assert_msg(status == 200, "faults: %ld %s", status, body);
    free(body);
    w = h_pg_connect(e.db);
    mixed_workload(w, 1, 800);
    h_wait_file_contains(e.log, "sending again", WAIT_MS);
    h_kill(pid, SIGKILL);
    h_wait_exit(pid, WAIT_MS);
    mixed_workload(w, 801, 800);
    PQfinish(w);
    pid = h_pgfan_start(e.config, e.log);
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    h_pgfan_stop(pid, WAIT_MS);
    docs = load_docs(&e, "orders-*");
    ck_assert_int_eq(differences(&e), 0);
    ck_assert_uint_eq(h_count_lines(e.dead), 0);
    body = h_es_request(e.es, "GET", "/_test/stats", NULL, &status);
    ck_assert_msg(status == 200, "stats: %ld %s", status, body);
    fprintf(stderr,
            "es_faults: %zu documents compared with %ld source rows, 0 differences, 1 kill, "
            "0 dead-lettered; injected: %lld items answered 429, %lld requests answered 503, "
            "%lld connections dropped\n",
            docs, h_count_rows(e.conn, "orders"), json_sum(body, "429"), json_sum(body, "503"),
            json_sum(body, "dropped"));
    free(body);
    env_free(&e);
}
END_TEST

/* A document the mapping refuses goes to the dead-letter file with its
 * error and LSN; the stream goes on. */
START_TEST(es_mapping_error_dead_letters)
{
    Env e = env_new("es_dead", ORDERS_SQL, NULL, NULL);
    pid_t pid = h_pgfan_start(e.config, e.log);
    char *dead, *ids;

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders VALUES (1, 1, 'new', 1.00, '2026-11-20 10:00+00', "
                  "'infinity', NULL, NULL, NULL)");
    h_sql(e.conn, "INSERT INTO orders VALUES (2, 1, 'new', 2.00, '2026-11-20 11:00+00')");
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    h_pgfan_stop(pid, WAIT_MS);
    ck_assert_uint_eq(h_count_lines(e.dead), 1);
    dead = h_read_file(e.dead, NULL);
    ck_assert_ptr_nonnull(strstr(dead, "\"table\":\"public.orders\""));
    ck_assert_ptr_nonnull(strstr(dead, "\"status\":400"));
    ck_assert_ptr_nonnull(strstr(dead, "document_parsing_exception"));
    ck_assert_ptr_nonnull(strstr(dead, "\"shipped_at\":\"infinity\""));
    free(dead);
    h_sql(e.conn, "DELETE FROM orders WHERE id = 1");
    load_docs(&e, "orders-*");
    ids = h_sql_value(e.conn, "SELECT string_agg(id, ',') FROM es_docs");
    ck_assert_str_eq(ids, "2");
    free(ids);
    fprintf(stderr, "es_dead_letter: 2 changes checked, 0 lost, 1 dead-lettered (HTTP 400 "
                    "document_parsing_exception), 1 indexed after it\n");
    env_free(&e);
}
END_TEST

/* TRUNCATE removes every document written before it, soft-deleted ones
 * included, and nothing written after it. */
START_TEST(es_truncate)
{
    Env e = env_new("es_truncate", ORDERS_SQL, NULL, NULL);
    pid_t pid = h_pgfan_start(e.config, e.log);

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    mixed_workload(e.conn, 1, 300);
    h_sql(e.conn, "BEGIN; TRUNCATE orders; INSERT INTO orders SELECT i, 1, 'after', i, "
                  "'2026-11-20 10:00+00' FROM generate_series(1, 40) i; COMMIT");
    h_sql(e.conn, "INSERT INTO orders SELECT i, 2, 'later', i, '2026-11-21 10:00+00' "
                  "FROM generate_series(41, 50) i");
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    h_pgfan_stop(pid, WAIT_MS);
    ck_assert_uint_eq(load_docs(&e, "orders-*"), 50);
    ck_assert_int_eq(differences(&e), 0);
    ck_assert(h_file_contains(e.log, "TRUNCATE of public.orders applied"));
    env_free(&e);
}
END_TEST

/* What pgfan refuses at start, each with its fix and exit status 2. */
START_TEST(es_refuses_unsafe_tables)
{
    Env e = env_new("es_refuse",
                    "CREATE TABLE orders (id bigint PRIMARY KEY, status text, "
                    "created_at timestamptz NOT NULL)",
                    NULL, NULL);
    pid_t pid = h_pgfan_start(e.config, e.log);
    char *log;

    ck_assert_int_eq(h_wait_exit(pid, WAIT_MS), 2);
    log = h_read_file(e.log, NULL);
    ck_assert_msg(strstr(log, "routes documents by \"created_at\", but its replica identity "
                              "does not carry that column"),
                  "%s", log);
    ck_assert_ptr_nonnull(strstr(log, "ALTER TABLE public.orders REPLICA IDENTITY FULL;"));
    free(log);

    /* With the date in the key, the TOASTable status column is the problem. */
    h_sql(e.conn, "ALTER TABLE orders DROP CONSTRAINT orders_pkey, "
                  "ADD PRIMARY KEY (id, created_at)");
    pid = h_pgfan_start(e.config, e.log);
    ck_assert_int_eq(h_wait_exit(pid, WAIT_MS), 2);
    log = h_read_file(e.log, NULL);
    ck_assert_msg(strstr(log, "leaves out of an UPDATE when they did not change (TOAST: status)"),
                  "%s", log);
    free(log);

    h_sql(e.conn, "ALTER TABLE orders REPLICA IDENTITY FULL");
    pid = h_pgfan_start(e.config, e.log);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_pgfan_stop(pid, WAIT_MS);
    env_free(&e);
}
END_TEST

/* An existing, different template of pgfan's name stops pgfan (exit 2)
 * unless template_overwrite says to replace it. */
START_TEST(es_template_mismatch)
{
    Env e = env_new("es_tpl", ORDERS_SQL, NULL, NULL);
    long status;
    char *body = h_es_request(e.es, "PUT", "/_index_template/pgfan-public-orders",
                              "{\"index_patterns\":[\"orders-*\"],\"priority\":200,"
                              "\"template\":{\"mappings\":{\"properties\":{\"id\":"
                              "{\"type\":\"keyword\"}}}}}",
                              &status);
    pid_t pid;
    char *log;

    ck_assert_int_eq(status, 200);
    free(body);
    pid = h_pgfan_start(e.config, e.log);
    ck_assert_int_eq(h_wait_exit(pid, WAIT_MS), 2);
    log = h_read_file(e.log, NULL);
    ck_assert_msg(strstr(log, "index template pgfan-public-orders already exists in "
                              "Elasticsearch and differs"),
                  "%s", log);
    ck_assert_ptr_nonnull(strstr(log, "template_overwrite = yes"));
    free(log);

    write_config(&e, e.slot, "template_overwrite = yes\n");
    pid = h_pgfan_start(e.config, e.log);
    h_wait_file_contains(e.log, "installed index template pgfan-public-orders", WAIT_MS);
    h_pgfan_stop(pid, WAIT_MS);
    body = h_es_request(e.es, "GET", "/_index_template/pgfan-public-orders", NULL, &status);
    ck_assert_ptr_nonnull(strstr(body, "\"pgfan_hash\""));
    free(body);
    env_free(&e);
}
END_TEST

/* A wrong API key stops pgfan with a clear message; the right one, read
 * from a file, works; the key never appears in the log. */
START_TEST(es_api_key)
{
    const char *args[] = {"--api-key", "s3cr3t-key-value", NULL};
    Env e = env_new("es_auth", ORDERS_SQL, "api_key = wrong-key-value\n", args);
    pid_t pid = h_pgfan_start(e.config, e.log);
    char *log, *keyfile;
    Buf b = BUF_INIT;

    ck_assert_int_eq(h_wait_exit(pid, WAIT_MS), 1);
    log = h_read_file(e.log, NULL);
    ck_assert_msg(strstr(log, "refused pgfan's credentials (HTTP 401"), "%s", log);
    ck_assert_ptr_null(strstr(log, "wrong-key-value"));
    free(log);

    buf_printf(&b, "%s/es.key", e.dir);
    keyfile = b.data;
    h_write_file(keyfile, "s3cr3t-key-value\n");
    buf_init(&b);
    buf_printf(&b, "api_key_file = %s\n", keyfile);
    write_config(&e, e.slot, b.data);
    buf_free(&b);
    pid = h_pgfan_start(e.config, e.log);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders VALUES (1, 1, 'new', 1.00, '2026-11-20 10:00+00')");
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    h_pgfan_stop(pid, WAIT_MS);
    ck_assert_int_eq(h_es_count(e.es, "orders-2026.11.20"), 1);
    log = h_read_file(e.log, NULL);
    ck_assert_ptr_null(strstr(log, "s3cr3t-key-value"));
    free(log);
    free(keyfile);
    env_free(&e);
}
END_TEST

/* https with a test CA, basic auth with the password in a file, gzip
 * bodies and an ILM policy; then a CA that did not sign the server's
 * certificate: refused with the TLS error, nothing confirmed. */
START_TEST(es_tls_basic_auth_gzip_ilm)
{
    char *certs = h_tmpdir();
    Buf crt = BUF_INIT, key = BUF_INIT, extra = BUF_INIT, pwfile = BUF_INIT;
    const char *args[7];
    Env e;
    pid_t pid;
    long status;
    char *body, *log;
    Lsn confirmed;

    h_make_certificates(certs);
    buf_printf(&crt, "%s/server.crt", certs);
    buf_printf(&key, "%s/server.key", certs);
    args[0] = "--tls-cert";
    args[1] = crt.data;
    args[2] = "--tls-key";
    args[3] = key.data;
    args[4] = "--basic";
    args[5] = "pgfan:pw-in-a-file";
    args[6] = NULL;
    buf_printf(&pwfile, "%s/es.password", certs);
    h_write_file(pwfile.data, "pw-in-a-file\n");
    buf_printf(&extra, "username = pgfan\npassword_file = %s\nca_file = %s/ca.crt\ngzip = on\n"
                       "retention_days = 30\n",
               pwfile.data, certs);
    e = env_new("es_tls", ORDERS_SQL, extra.data, args);
    ck_assert_int_eq(strncmp(h_es_url(e.es), "https://", 8), 0);
    pid = h_pgfan_start(e.config, e.log);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    mixed_workload(e.conn, 1, 300);
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    h_pgfan_stop(pid, WAIT_MS);
    load_docs(&e, "orders-*");
    ck_assert_int_eq(differences(&e), 0);
    body = h_es_request(e.es, "GET", "/_test/stats", NULL, &status);
    ck_assert_msg(strstr(body, "\"gzip_requests\":0") == NULL, "%s", body);
    free(body);
    body = h_es_request(e.es, "GET", "/_ilm/policy/pgfan-retention-30d", NULL, &status);
    ck_assert_msg(status == 200 && strstr(body, "\"min_age\":\"30d\""), "%ld %s", status, body);
    free(body);
    body = h_es_request(e.es, "GET", "/orders-2026.11.20/_settings", NULL, &status);
    ck_assert_msg(strstr(body, "pgfan-retention-30d"), "%s", body);
    free(body);
    log = h_read_file(e.log, NULL);
    ck_assert_ptr_null(strstr(log, "pw-in-a-file"));
    free(log);

    /* The wrong CA: pgfan keeps trying and says why; nothing is confirmed. */
    buf_reset(&extra);
    buf_printf(&extra, "username = pgfan\npassword_file = %s\nca_file = %s/other.crt\n",
               pwfile.data, certs);
    write_config(&e, e.slot, extra.data);
    h_rm_rf(e.log);
    confirmed = h_slot_confirmed_lsn(e.conn, e.slot);
    h_sql(e.conn, "INSERT INTO orders VALUES (9999, 1, 'new', 1.00, '2026-11-20 10:00+00')");
    pid = h_pgfan_start(e.config, e.log);
    h_wait_file_contains(e.log, "SSL certificate problem", WAIT_MS);
    ck_assert_uint_eq(h_slot_confirmed_lsn(e.conn, e.slot), confirmed);
    h_pgfan_stop(pid, WAIT_MS);
    ck_assert_uint_eq(h_slot_confirmed_lsn(e.conn, e.slot), confirmed);

    env_free(&e);
    h_rm_rf(certs);
    free(certs);
    buf_free(&crt);
    buf_free(&key);
    buf_free(&extra);
    buf_free(&pwfile);
}
END_TEST

int main(void)
{
    const char *const env[] = {"PGFAN_TEST_PGPORT", "PGFAN_TEST_BIN", "PGFAN_TEST_ES_SERVER", NULL};
    const TTest *const tests[] = {es_documents_equal_source,
                                  es_faults_and_kill9_lose_nothing,
                                  es_mapping_error_dead_letters,
                                  es_truncate,
                                  es_refuses_unsafe_tables,
                                  es_template_mismatch,
                                  es_api_key,
                                  es_tls_basic_auth_gzip_ilm,
                                  NULL};

    return h_run_suite("es_e2e", "stream", 300, env, tests, NULL);
}
