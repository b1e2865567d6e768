/*
 * test_security.c - secrets stay secret; TLS to PostgreSQL is verified.
 *
 * The TLS test turns ssl on in the shared test server (a reload, which
 * leaves non-TLS clients working) with a certificate made here by a test CA,
 * so this suite runs alone (is_parallel: false).
 */
#include "../harness/harness.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAIT_MS 60000
#define SECRET "S3cr3t-Pa55word-xyzzy"

/* A password in the DSN (the test server trusts every connection, so the
 * password is accepted and ignored), an Elasticsearch API key and a Kafka
 * SASL password must appear nowhere pgfan writes: log, check-config,
 * status document, /metrics. */
START_TEST(test_password_never_shown)
{
    char *dir;
    PGconn *conn = h_setup("sec_secret", "CREATE TABLE orders(id bigint PRIMARY KEY)", &dir);
    char *dsn = h_dsn("sec_secret");
    char *path = h_path(dir, "pgfan.conf");
    char *log = h_path(dir, "pgfan.log");
    char *sock = h_path(dir, "status.sock");
    char *out = h_path(dir, "out.txt");
    int port = h_free_tcp_port();
    char *metrics;
    pid_t pid;

    /* The Elasticsearch URL leads nowhere: that sink keeps retrying (and
     * logging why), which is what must not echo its key. */
    h_write_file(path,
                 "[source]\ndsn = %s password='" SECRET "'\nslot = sec_secret\n"
                 "tables = public.orders\n[status]\nsocket = %s\nmetrics_listen = 127.0.0.1:%d\n"
                 "[log]\nlevel = debug\n"
                 "[sink.file]\npath = %s/out.ndjson\n"
                 "[sink.elasticsearch]\nurl = http://127.0.0.1:9\napi_key = " SECRET "-es\n"
                 "[sink.kafka]\nbrokers = mock:1\nlibrdkafka.sasl.username = pgfan\n"
                 "librdkafka.sasl.password = " SECRET "-kafka\n",
                 dsn, sock, port, dir);

    ck_assert_int_eq(h_pgfan_cmd(out, WAIT_MS, "check-config", "-c", path, NULL), 0);
    ck_assert(h_file_contains(out, "password='*****'") || h_file_contains(out, "password=*****"));
    ck_assert(h_file_contains(out, "api_key = *****"));
    ck_assert(h_file_contains(out, "librdkafka.sasl.password = *****"));
    ck_assert(!h_file_contains(out, SECRET));
    pid = h_pgfan_start(path, log);
    h_wait_file_contains(log, "streaming from slot", WAIT_MS);
    h_sql(conn, "INSERT INTO orders VALUES (1)");
    ck_assert_int_eq(h_pgfan_cmd(out, WAIT_MS, "status", "-s", sock, "--json", NULL), 0);
    ck_assert(!h_file_contains(out, SECRET));
    h_wait_file_contains(log, "could not set up index templates", WAIT_MS);
    metrics = h_http_get(port, "/metrics");
    ck_assert_ptr_nonnull(metrics);
    ck_assert_ptr_nonnull(strstr(metrics, "pgfan_sink_"));
    ck_assert_ptr_null(strstr(metrics, SECRET));
    free(metrics);
    /* A connection failure message must not echo the DSN either. */
    h_sql(conn, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE slot_name = 'sec_secret'");
    h_wait_file_contains(log, "reconnecting", WAIT_MS);
    h_pgfan_stop(pid, WAIT_MS);
    ck_assert_msg(!h_file_contains(log, SECRET), "the password leaked into the log");

    /* The same with an environment override. */
    setenv("PGFAN_SOURCE_DSN", "host=127.0.0.1 dbname=x password=" SECRET, 1);
    ck_assert_int_eq(h_pgfan_cmd(out, WAIT_MS, "check-config", "-c", path, NULL), 0);
    ck_assert(!h_file_contains(out, SECRET));
    unsetenv("PGFAN_SOURCE_DSN");

    h_teardown(conn, "sec_secret", dir);
    free(dsn);
    free(path);
    free(log);
    free(sock);
    free(out);
}
END_TEST

/* A CA, a server certificate for 127.0.0.1 signed by it, and a second CA
 * that signed nothing; the server files are handed to the postgres user. */
static void make_certificates(const char *dir, const char *pgdata)
{
    h_make_certificates(dir);
    h_shell("cp %s/server.crt %s/server.key %s/ && chmod 600 %s/server.key && "
            "{ [ $(id -u) != 0 ] || chown postgres %s/server.crt %s/server.key; }",
            dir, dir, pgdata, pgdata, pgdata, pgdata);
}

/* A config for slot sec_tls with sslmode=verify-full against the CA in dir/ca_file. */
static void write_tls_config(const char *path, const char *dsn, const char *dir,
                             const char *ca_file)
{
    h_write_file(path,
                 "[source]\ndsn = %s sslmode=verify-full sslrootcert=%s/%s\nslot = sec_tls\n"
                 "tables = public.orders\n[status]\nsocket = %s/s.sock\n"
                 "[sink.file]\npath = %s/out.ndjson\n",
                 dsn, dir, ca_file, dir, dir);
}

START_TEST(test_tls_verify_full)
{
    const char *pgdata = getenv("PGFAN_TEST_PGDATA");
    char *dir = h_tmpdir();
    char *dsn = h_dsn("sec_tls");
    char *path = h_path(dir, "pgfan.conf");
    char *log = h_path(dir, "pgfan.log");
    char *log2 = h_path(dir, "pgfan-wrong-ca.log");
    PGconn *conn, *admin;
    pid_t pid;

    ck_assert_ptr_nonnull(pgdata);
    make_certificates(dir, pgdata);
    admin = h_pg_connect("postgres");
    h_sql(admin, "ALTER SYSTEM SET ssl = on");
    h_sql(admin, "SELECT pg_reload_conf()");
    h_create_db("sec_tls");
    conn = h_pg_connect("sec_tls");
    h_sql(conn, "CREATE TABLE orders(id bigint PRIMARY KEY)");

    /* The right CA: verify-full succeeds and the stream works. */
    write_tls_config(path, dsn, dir, "ca.crt");
    pid = h_pgfan_start(path, log);
    h_wait_file_contains(log, "streaming from slot", WAIT_MS);
    {
        char *ssl = h_sql_value(conn, "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_replication r "
                                      "USING (pid) WHERE s.ssl");
        ck_assert_str_eq(ssl, "1");
        free(ssl);
    }
    h_pgfan_stop(pid, WAIT_MS);

    /* Another CA: refused, with the reason in the log. */
    write_tls_config(path, dsn, dir, "other.crt");
    pid = h_pgfan_start(path, log2);
    h_wait_file_contains(log2, "certificate verify failed", WAIT_MS);
    ck_assert(h_file_contains(log2, "could not connect to PostgreSQL"));
    h_pgfan_stop(pid, WAIT_MS);

    h_sql(admin, "ALTER SYSTEM RESET ssl");
    h_sql(admin, "SELECT pg_reload_conf()");
    PQfinish(admin);
    h_teardown(conn, "sec_tls", dir);
    free(dsn);
    free(path);
    free(log);
    free(log2);
}
END_TEST

int main(void)
{
    const char *const env[] = {"PGFAN_TEST_PGPORT", "PGFAN_TEST_BIN", NULL};
    const TTest *const tests[] = {test_password_never_shown, test_tls_verify_full, NULL};

    return h_run_suite("security", "secrets", 180, env, tests, NULL);
}
