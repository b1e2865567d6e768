/*
 * test_security.c - secrets stay secret; TLS to PostgreSQL is verified.
 *
 * The TLS test turns ssl on in the shared test server (a reload, which
 * leaves non-TLS clients working) with a certificate made here by a test CA,
 * so this suite runs alone (is_parallel: false).
 */
#include "../../common/buf.h"
#include "../../common/mem.h"
#include "../harness/harness.h"

#include <check.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WAIT_MS 60000
#define SECRET "S3cr3t-Pa55word-xyzzy"

static void run_to_file(const char *const argv[], const char *out, int want_exit)
{
    pid_t pid = h_spawn(argv, out);
    ck_assert_int_eq(h_wait_exit(pid, WAIT_MS), want_exit);
}

/* A password in the DSN (the test server trusts every connection, so the
 * password is accepted and ignored) must appear nowhere pgfan writes. */
START_TEST(test_password_never_shown)
{
    char *dir = h_tmpdir();
    char *dsn;
    Buf cfg = BUF_INIT, path = BUF_INIT, log = BUF_INIT, sock = BUF_INIT, out = BUF_INIT;
    PGconn *conn;
    pid_t pid;

    h_create_db("sec_secret");
    conn = h_pg_connect("sec_secret");
    h_sql(conn, "CREATE TABLE orders(id bigint PRIMARY KEY)");
    dsn = h_dsn("sec_secret");
    buf_printf(&path, "%s/pgfan.conf", dir);
    buf_printf(&log, "%s/pgfan.log", dir);
    buf_printf(&sock, "%s/status.sock", dir);
    buf_printf(&out, "%s/out.txt", dir);
    buf_printf(&cfg,
               "[source]\ndsn = %s password='" SECRET "'\nslot = sec_secret\n"
               "tables = public.orders\n[status]\nsocket = %s\n[log]\nlevel = debug\n"
               "[sink.file]\npath = %s/out.ndjson\n",
               dsn, sock.data, dir);
    h_write_file(path.data, "%s", cfg.data);

    {
        const char *argv[] = {h_pgfan_bin(), "check-config", "-c", path.data, NULL};
        run_to_file(argv, out.data, 0);
        ck_assert(h_file_contains(out.data, "password='*****'") ||
                  h_file_contains(out.data, "password=*****"));
        ck_assert(!h_file_contains(out.data, SECRET));
    }
    {
        const char *argv[] = {h_pgfan_bin(), "run", "-c", path.data, NULL};
        pid = h_spawn(argv, log.data);
    }
    h_wait_file_contains(log.data, "streaming from slot", WAIT_MS);
    h_sql(conn, "INSERT INTO orders VALUES (1)");
    {
        const char *argv[] = {h_pgfan_bin(), "status", "-s", sock.data, "--json", NULL};
        run_to_file(argv, out.data, 0);
        ck_assert(!h_file_contains(out.data, SECRET));
    }
    /* A connection failure message must not echo the DSN either. */
    h_sql(conn, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE slot_name = 'sec_secret'");
    h_wait_file_contains(log.data, "reconnecting", WAIT_MS);
    h_kill(pid, SIGTERM);
    ck_assert_int_eq(h_wait_exit(pid, WAIT_MS), 0);
    ck_assert_msg(!h_file_contains(log.data, SECRET), "the password leaked into the log");

    /* The same with an environment override. */
    setenv("PGFAN_SOURCE_DSN", "host=127.0.0.1 dbname=x password=" SECRET, 1);
    {
        const char *argv[] = {h_pgfan_bin(), "check-config", "-c", path.data, NULL};
        run_to_file(argv, out.data, 0);
        ck_assert(!h_file_contains(out.data, SECRET));
    }
    unsetenv("PGFAN_SOURCE_DSN");

    h_drop_slot(conn, "sec_secret");
    PQfinish(conn);
    h_rm_rf(dir);
    free(dir);
    free(dsn);
    buf_free(&cfg);
    buf_free(&path);
    buf_free(&log);
    buf_free(&sock);
    buf_free(&out);
}
END_TEST

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    ck_assert_msg(system(cmd) == 0, "command failed: %s", cmd);
}

/* A CA, a server certificate for 127.0.0.1 signed by it, and a second CA
 * that signed nothing; the server files are handed to the postgres user. */
static void make_certificates(const char *dir, const char *pgdata)
{
    h_make_certificates(dir);
    sh("cp %s/server.crt %s/server.key %s/ && chmod 600 %s/server.key && "
       "{ [ $(id -u) != 0 ] || chown postgres %s/server.crt %s/server.key; }",
       dir, dir, pgdata, pgdata, pgdata, pgdata);
}

START_TEST(test_tls_verify_full)
{
    const char *pgdata = getenv("PGFAN_TEST_PGDATA");
    char *dir = h_tmpdir();
    char *dsn;
    Buf cfg = BUF_INIT, path = BUF_INIT, log = BUF_INIT, log2 = BUF_INIT;
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
    dsn = h_dsn("sec_tls");
    buf_printf(&path, "%s/pgfan.conf", dir);
    buf_printf(&log, "%s/pgfan.log", dir);
    buf_printf(&log2, "%s/pgfan-wrong-ca.log", dir);

    /* The right CA: verify-full succeeds and the stream works. */
    buf_printf(&cfg,
               "[source]\ndsn = %s sslmode=verify-full sslrootcert=%s/ca.crt\nslot = sec_tls\n"
               "tables = public.orders\n[status]\nsocket = %s/s.sock\n"
               "[sink.file]\npath = %s/out.ndjson\n",
               dsn, dir, dir, dir);
    h_write_file(path.data, "%s", cfg.data);
    {
        const char *argv[] = {h_pgfan_bin(), "run", "-c", path.data, NULL};
        pid = h_spawn(argv, log.data);
    }
    h_wait_file_contains(log.data, "streaming from slot", WAIT_MS);
    {
        char *ssl = h_sql_value(conn, "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_replication r "
                                      "USING (pid) WHERE s.ssl");
        ck_assert_str_eq(ssl, "1");
        free(ssl);
    }
    h_kill(pid, SIGTERM);
    ck_assert_int_eq(h_wait_exit(pid, WAIT_MS), 0);

    /* Another CA: refused, with the reason in the log. */
    buf_reset(&cfg);
    buf_printf(&cfg,
               "[source]\ndsn = %s sslmode=verify-full sslrootcert=%s/other.crt\nslot = sec_tls\n"
               "tables = public.orders\n[status]\nsocket = %s/s.sock\n"
               "[sink.file]\npath = %s/out.ndjson\n",
               dsn, dir, dir, dir);
    h_write_file(path.data, "%s", cfg.data);
    {
        const char *argv[] = {h_pgfan_bin(), "run", "-c", path.data, NULL};
        pid = h_spawn(argv, log2.data);
    }
    h_wait_file_contains(log2.data, "certificate verify failed", WAIT_MS);
    ck_assert(h_file_contains(log2.data, "could not connect to PostgreSQL"));
    h_kill(pid, SIGTERM);
    ck_assert_int_eq(h_wait_exit(pid, WAIT_MS), 0);

    h_sql(admin, "ALTER SYSTEM RESET ssl");
    h_sql(admin, "SELECT pg_reload_conf()");
    h_drop_slot(conn, "sec_tls");
    PQfinish(conn);
    PQfinish(admin);
    h_rm_rf(dir);
    free(dir);
    free(dsn);
    buf_free(&cfg);
    buf_free(&path);
    buf_free(&log);
    buf_free(&log2);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("security");
    TCase *tc = tcase_create("secrets");
    SRunner *sr;
    int failed;

    if (!getenv("PGFAN_TEST_PGPORT") || !getenv("PGFAN_TEST_BIN")) {
        fprintf(stderr, "security: PGFAN_TEST_PGPORT and PGFAN_TEST_BIN must be set\n");
        return 77;
    }
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_password_never_shown);
    tcase_add_test(tc, test_tls_verify_full);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
