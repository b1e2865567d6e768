/*
 * test_harness.c - self-test of the integration-test helpers (tests/harness).
 *
 * The process, file, wait and config helpers need nothing but /bin/sh. The
 * PostgreSQL helpers run only when PGFAN_TEST_PGPORT points at a test
 * server (tests/run.sh starts one); otherwise that TCase is left out and
 * the output says so.
 *
 * A helper's failure path ends the test through ck_abort_msg, so it is
 * checked by running the failing call as a test of a nested suite (Check
 * supports one level of nesting) and comparing the nested result's message.
 */
#include "../harness/harness.h"

#include <check.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* --- nested runs -------------------------------------------------------- */

/* Runs t alone in a nested suite; returns its result type and copies its
 * message. */
static int nested_run(const TTest *t, char *msg, size_t size)
{
    /* These would make the nested runner filter out t or write its own
     * logs into ours (meson's TAP protocol reads stdout). This process is
     * the forked test child, so the runner's environment is untouched. */
    static const char *const vars[] = {"CK_RUN_SUITE",    "CK_RUN_CASE",          "CK_INCLUDE_TAGS",
                                       "CK_EXCLUDE_TAGS", "CK_LOG_FILE_NAME",     "CK_TAP_LOG_FILE_NAME",
                                       "CK_XML_LOG_FILE_NAME", "CK_VERBOSITY", "CK_FORK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);

    Suite *s = suite_create("nested");
    TCase *tc = tcase_create("nested");
    tcase_add_test(tc, t);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_SILENT);
    TestResult **results = srunner_results(sr);
    int type = tr_rtype(results[0]);
    snprintf(msg, size, "%s", tr_msg(results[0]) != NULL ? tr_msg(results[0]) : "");
    free(results);
    srunner_free(sr);
    return type;
}

static void expect_failure(const TTest *t, const char *expected)
{
    char msg[4096];
    int type = nested_run(t, msg, sizeof msg);

    ck_assert_msg(type == CK_FAILURE, "%s: expected a failure, got result type %d: %s", t->name,
                  type, msg);
    ck_assert_str_eq(msg, expected);
}

/* For messages that embed text we do not control (server messages). */
static void expect_failure_parts(const TTest *t, const char *prefix, const char *part)
{
    char msg[4096];
    int type = nested_run(t, msg, sizeof msg);

    ck_assert_msg(type == CK_FAILURE, "%s: expected a failure, got result type %d: %s", t->name,
                  type, msg);
    ck_assert_msg(strncmp(msg, prefix, strlen(prefix)) == 0, "%s: message \"%s\" lacks prefix \"%s\"",
                  t->name, msg, prefix);
    ck_assert_msg(part == NULL || strstr(msg, part) != NULL, "%s: message \"%s\" lacks \"%s\"",
                  t->name, msg, part);
}

/* --- wait --------------------------------------------------------------- */

typedef struct Counter {
    int calls;
    int true_at; /* 0: never */
} Counter;

static bool count_pred(void *arg)
{
    Counter *c = arg;

    c->calls++;
    return c->true_at > 0 && c->calls >= c->true_at;
}

static long elapsed_ms(const struct timespec *since)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000;
}

START_TEST(wait_true_at_once)
{
    Counter c = {.true_at = 1};

    ck_assert(h_wait_until(count_pred, &c, 1000));
    ck_assert_int_eq(c.calls, 1);
}
END_TEST

START_TEST(wait_true_after_polls)
{
    Counter c = {.true_at = 3};

    ck_assert(h_wait_until(count_pred, &c, 5000));
    ck_assert_int_eq(c.calls, 3);
}
END_TEST

START_TEST(wait_deadline)
{
    Counter c = {0};
    struct timespec start;

    clock_gettime(CLOCK_MONOTONIC, &start);
    ck_assert(!h_wait_until(count_pred, &c, 100));
    long ms = elapsed_ms(&start);
    ck_assert_int_ge(ms, 100);
    ck_assert_int_lt(ms, 1000);
    /* Polled every 20 ms, plus the last call at the deadline. */
    ck_assert_int_ge(c.calls, 3);
    ck_assert_int_le(c.calls, 7);
}
END_TEST

START_TEST(wait_zero_timeout)
{
    Counter c = {0};

    ck_assert(!h_wait_until(count_pred, &c, 0));
    ck_assert_int_eq(c.calls, 1);
}
END_TEST

/* --- processes ---------------------------------------------------------- */

START_TEST(spawn_exit_code_and_output)
{
    char *dir = h_tmpdir();
    char log[256];
    const char *const argv[] = {"/bin/sh", "-c", "echo out; echo err >&2; exit 3", NULL};

    snprintf(log, sizeof log, "%s/log", dir);
    pid_t pid = h_spawn(argv, log);
    ck_assert_int_eq(h_wait_exit(pid, 5000), 3);
    char *text = h_read_file(log, NULL);
    ck_assert_str_eq(text, "out\nerr\n");
    free(text);
    h_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(spawn_exec_failure)
{
    char *dir = h_tmpdir();
    char log[256];
    const char *const argv[] = {"/nonexistent/pgfan-nope", "x", NULL};

    snprintf(log, sizeof log, "%s/log", dir);
    ck_assert_int_eq(h_wait_exit(h_spawn(argv, log), 5000), 127);
    char *text = h_read_file(log, NULL);
    ck_assert_str_eq(text, "h_spawn: could not execute /nonexistent/pgfan-nope: ENOENT\n");
    free(text);
    h_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(spawn_path_search_and_stdin)
{
    /* "sh" without a slash is looked up in PATH; cat ends at once because
     * stdin is /dev/null. NULL log path: output discarded. */
    const char *const argv[] = {"sh", "-c", "cat; exit 0", NULL};

    ck_assert_int_eq(h_wait_exit(h_spawn(argv, NULL), 5000), 0);
}
END_TEST

START_TEST(spawn_new_group)
{
    const char *const argv[] = {"/bin/sh", "-c", "exec sleep 30", NULL};
    pid_t pid = h_spawn(argv, NULL);

    ck_assert_int_eq(getpgid(pid), pid);
    h_kill(pid, SIGKILL);
    ck_assert_int_eq(h_wait_exit(pid, 5000), 128 + SIGKILL);
}
END_TEST

START_TEST(wait_exit_timeout_then_kill)
{
    const char *const argv[] = {"/bin/sh", "-c", "exec sleep 30", NULL};
    pid_t pid = h_spawn(argv, NULL);

    ck_assert_int_eq(h_wait_exit(pid, 50), -1);
    h_kill(pid, SIGTERM);
    ck_assert_int_eq(h_wait_exit(pid, 5000), 128 + SIGTERM);
}
END_TEST

typedef struct Grandchild {
    const char *pidfile;
    pid_t pid;
} Grandchild;

static bool pidfile_written(void *arg)
{
    Grandchild *g = arg;

    return h_count_lines(g->pidfile) == 1;
}

/* Gone, or a zombie nobody has reaped yet (PID 1 may be slow to). */
static bool process_gone(void *arg)
{
    Grandchild *g = arg;
    char path[64];
    char *stat;
    bool gone;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)g->pid);
    if (access(path, F_OK) != 0)
        return true;
    stat = h_read_file(path, NULL);
    gone = strstr(stat, ") Z ") != NULL;
    free(stat);
    return gone;
}

START_TEST(kill_reaches_group)
{
    char *dir = h_tmpdir();
    char pidfile[256];
    char script[1024];
    Grandchild g = {.pidfile = pidfile};

    snprintf(pidfile, sizeof pidfile, "%s/pid", dir);
    snprintf(script, sizeof script, "sleep 30 & echo $! > %s.tmp; mv %s.tmp %s; wait", pidfile,
             pidfile, pidfile);
    const char *const argv[] = {"/bin/sh", "-c", script, NULL};
    pid_t pid = h_spawn(argv, NULL);

    ck_assert(h_wait_until(pidfile_written, &g, 5000));
    char *text = h_read_file(pidfile, NULL);
    g.pid = (pid_t)atoi(text);
    free(text);
    ck_assert_int_gt(g.pid, 1);
    h_kill(pid, SIGKILL);
    ck_assert_int_eq(h_wait_exit(pid, 5000), 128 + SIGKILL);
    ck_assert(h_wait_until(process_gone, &g, 5000));
    h_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(nest_spawn_and_leave)
{
    const char *const argv[] = {"/bin/sh", "-c", "exec sleep 30", NULL};
    pid_t pid = h_spawn(argv, NULL);

    h_write_file(getenv("PGFAN_HARNESS_PIDFILE"), "%d\n", (int)pid);
}
END_TEST

START_TEST(spawned_dies_with_test)
{
    char *dir = h_tmpdir();
    char pidfile[256];
    char msg[4096];
    Grandchild g = {.pidfile = pidfile};

    snprintf(pidfile, sizeof pidfile, "%s/pid", dir);
    setenv("PGFAN_HARNESS_PIDFILE", pidfile, 1);
    ck_assert_int_eq(nested_run(nest_spawn_and_leave, msg, sizeof msg), CK_PASS);
    char *text = h_read_file(pidfile, NULL);
    g.pid = (pid_t)atoi(text);
    free(text);
    ck_assert_int_gt(g.pid, 1);
    ck_assert(h_wait_until(process_gone, &g, 5000));
    h_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(kill_after_exit_is_quiet)
{
    const char *const argv[] = {"/bin/true", NULL};
    pid_t pid = h_spawn(argv, NULL);

    ck_assert_int_eq(h_wait_exit(pid, 5000), 0);
    h_kill(pid, SIGTERM);
}
END_TEST

START_TEST(pgfan_bin_from_env)
{
    setenv("PGFAN_TEST_BIN", "/bin/sh", 1);
    ck_assert_str_eq(h_pgfan_bin(), "/bin/sh");
}
END_TEST

START_TEST(nest_pgfan_bin_unset)
{
    unsetenv("PGFAN_TEST_BIN");
    h_pgfan_bin();
}
END_TEST

START_TEST(nest_pgfan_bin_not_executable)
{
    setenv("PGFAN_TEST_BIN", "/etc/passwd", 1);
    h_pgfan_bin();
}
END_TEST

START_TEST(nest_spawn_bad_log)
{
    const char *const argv[] = {"/bin/true", NULL};

    h_spawn(argv, "/nonexistent/dir/log");
}
END_TEST

START_TEST(nest_spawn_empty_argv)
{
    const char *const argv[] = {NULL};

    h_spawn(argv, NULL);
}
END_TEST

START_TEST(nest_kill_bad_pid)
{
    h_kill(0, SIGTERM);
}
END_TEST

START_TEST(nest_wait_exit_not_child)
{
    /* PID 1 exists but is not our child: waitpid says ECHILD. */
    h_wait_exit(1, 1000);
}
END_TEST

START_TEST(process_errors)
{
    expect_failure(nest_pgfan_bin_unset,
                   "h_pgfan_bin: could not find the pgfan binary: PGFAN_TEST_BIN is not set\n"
                   "HINT: run the tests through ./tests/run.sh, or set "
                   "PGFAN_TEST_BIN=build/daemon/pgfan");
    expect_failure(nest_pgfan_bin_not_executable,
                   "h_pgfan_bin: could not use the pgfan binary /etc/passwd: Permission denied");
    expect_failure(nest_spawn_bad_log,
                   "h_spawn: could not open /nonexistent/dir/log: No such file or directory");
    expect_failure(nest_spawn_empty_argv, "h_spawn: could not start a process: argv is empty");
    expect_failure(nest_kill_bad_pid, "h_kill: could not signal process 0: not a spawned pid");
    expect_failure(nest_wait_exit_not_child,
                   "h_wait_exit: could not wait for process 1: No child processes");
}
END_TEST

/* --- files -------------------------------------------------------------- */

START_TEST(tmpdir_and_rm_rf)
{
    char *dir = h_tmpdir();
    char sub[256];
    char file[300];
    struct stat st;

    ck_assert_msg(strncmp(dir, "/tmp/pgfan-test.", 16) == 0, "tmpdir %s", dir);
    ck_assert_int_eq(stat(dir, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    snprintf(sub, sizeof sub, "%s/a/b", dir);
    snprintf(file, sizeof file, "%s/a", dir);
    ck_assert_int_eq(mkdir(file, 0755), 0);
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    snprintf(file, sizeof file, "%s/f", sub);
    h_write_file(file, "x");
    snprintf(file, sizeof file, "%s/link", dir);
    ck_assert_int_eq(symlink("/etc", file), 0);

    h_rm_rf(dir);
    ck_assert_int_ne(lstat(dir, &st), 0);
    ck_assert_int_eq(errno, ENOENT);
    /* The symlink went, not what it pointed at. */
    ck_assert_int_eq(stat("/etc/passwd", &st), 0);
    h_rm_rf(dir); /* missing: fine */
    free(dir);
}
END_TEST

START_TEST(write_and_read)
{
    char *dir = h_tmpdir();
    char path[256];
    size_t len = 0;

    snprintf(path, sizeof path, "%s/f", dir);
    h_write_file(path, "a%d\nb\n", 1);
    char *text = h_read_file(path, &len);
    ck_assert_str_eq(text, "a1\nb\n");
    ck_assert_uint_eq(len, 5);
    free(text);

    /* Overwrites, and NULL len is allowed. */
    h_write_file(path, "%s", "");
    text = h_read_file(path, NULL);
    ck_assert_str_eq(text, "");
    free(text);
    h_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(read_large_and_binary)
{
    char *dir = h_tmpdir();
    char path[256];
    size_t len = 0;
    enum { SIZE = 100000 };
    static char data[SIZE];

    for (size_t i = 0; i < SIZE; i++)
        data[i] = (char)(i % 251);
    snprintf(path, sizeof path, "%s/bin", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, SIZE, f), SIZE);
    ck_assert_int_eq(fclose(f), 0);

    char *text = h_read_file(path, &len);
    ck_assert_uint_eq(len, SIZE);
    ck_assert_int_eq(memcmp(text, data, SIZE), 0);
    ck_assert_int_eq(text[SIZE], '\0');
    free(text);
    h_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(lines_complete_only)
{
    char *dir = h_tmpdir();
    char path[256];
    size_t n = 99;

    snprintf(path, sizeof path, "%s/lines", dir);
    ck_assert_uint_eq(h_count_lines(path), 0); /* missing */
    ck_assert(!h_file_contains(path, "a"));

    h_write_file(path, "first\n\nthird\npartial");
    ck_assert_uint_eq(h_count_lines(path), 3);
    char **lines = h_read_lines(path, &n);
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(lines[0], "first");
    ck_assert_str_eq(lines[1], "");
    ck_assert_str_eq(lines[2], "third");
    ck_assert_ptr_null(lines[3]);
    h_free_lines(lines);
    h_free_lines(NULL);

    h_write_file(path, "%s", "");
    lines = h_read_lines(path, NULL);
    ck_assert_ptr_null(lines[0]);
    h_free_lines(lines);
    h_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(file_contains)
{
    char *dir = h_tmpdir();
    char path[256];

    snprintf(path, sizeof path, "%s/f", dir);
    h_write_file(path, "{\"op\":\"I\",\"lsn\":\"0/16B3748\"}\n");
    ck_assert(h_file_contains(path, "\"lsn\":\"0/16B3748\""));
    ck_assert(h_file_contains(path, ""));
    ck_assert(!h_file_contains(path, "\"op\":\"D\""));
    h_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(nest_read_missing)
{
    h_read_file("/tmp/pgfan-harness-no-such-file", NULL);
}
END_TEST

START_TEST(nest_read_lines_missing)
{
    h_read_lines("/tmp/pgfan-harness-no-such-file", NULL);
}
END_TEST

START_TEST(nest_read_directory)
{
    h_read_file("/tmp", NULL);
}
END_TEST

START_TEST(nest_write_missing_dir)
{
    h_write_file("/tmp/pgfan-harness-no-such-dir/f", "x");
}
END_TEST

START_TEST(nest_rm_rf_outside_tmp)
{
    h_rm_rf("/etc");
}
END_TEST

START_TEST(nest_rm_rf_dotdot)
{
    h_rm_rf("/tmp/../etc");
}
END_TEST

START_TEST(nest_rm_rf_tmp_itself)
{
    h_rm_rf("/tmp/");
}
END_TEST

START_TEST(file_errors)
{
    expect_failure(nest_read_missing, "h_read_file: could not open /tmp/pgfan-harness-no-such-file: "
                                      "No such file or directory");
    expect_failure(nest_read_lines_missing, "h_read_lines: could not open "
                                            "/tmp/pgfan-harness-no-such-file: No such file or "
                                            "directory");
    expect_failure(nest_read_directory, "h_read_file: could not read /tmp: Is a directory");
    expect_failure(nest_write_missing_dir, "h_write_file: could not open "
                                           "/tmp/pgfan-harness-no-such-dir/f: No such file or "
                                           "directory");
    expect_failure(nest_rm_rf_outside_tmp,
                   "h_rm_rf: could not remove /etc: only paths under /tmp/ are allowed");
    expect_failure(nest_rm_rf_dotdot,
                   "h_rm_rf: could not remove /tmp/../etc: only paths under /tmp/ are allowed");
    expect_failure(nest_rm_rf_tmp_itself,
                   "h_rm_rf: could not remove /tmp/: only paths under /tmp/ are allowed");
}
END_TEST

/* --- dsn and config (no server needed) ---------------------------------- */

static void fake_server_env(void)
{
    setenv("PGFAN_TEST_PGHOST", "127.0.0.1", 1);
    setenv("PGFAN_TEST_PGPORT", "54321", 1);
    setenv("PGFAN_TEST_PGUSER", "postgres", 1);
}

START_TEST(dsn_plain)
{
    fake_server_env();
    char *dsn = h_dsn("orders_db");
    ck_assert_str_eq(dsn, "host=127.0.0.1 port=54321 user=postgres dbname=orders_db");
    free(dsn);
    dsn = h_dsn(NULL);
    ck_assert_str_eq(dsn, "host=127.0.0.1 port=54321 user=postgres dbname=postgres");
    free(dsn);
}
END_TEST

START_TEST(dsn_quoting_round_trips)
{
    fake_server_env();
    setenv("PGFAN_TEST_PGUSER", "o'k \\user", 1);
    char *dsn = h_dsn("my db");
    ck_assert_str_eq(dsn, "host=127.0.0.1 port=54321 user='o\\'k \\\\user' dbname='my db'");

    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &errmsg);
    ck_assert_msg(opts != NULL, "PQconninfoParse: %s", errmsg != NULL ? errmsg : "?");
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (strcmp(o->keyword, "user") == 0)
            ck_assert_str_eq(o->val, "o'k \\user");
        if (strcmp(o->keyword, "dbname") == 0)
            ck_assert_str_eq(o->val, "my db");
    }
    PQconninfoFree(opts);
    free(dsn);
}
END_TEST

START_TEST(write_config_full)
{
    fake_server_env();
    char *dir = h_tmpdir();
    char *path = h_write_config(dir, "db1", "slot1", "public.orders, public.items",
                                "[sink.kafka]\nbrokers = mock:1");
    char expected_path[256];
    char expected[2048];

    snprintf(expected_path, sizeof expected_path, "%s/pgfan.conf", dir);
    ck_assert_str_eq(path, expected_path);
    snprintf(expected, sizeof expected,
             "[source]\n"
             "dsn = host=127.0.0.1 port=54321 user=postgres dbname=db1\n"
             "slot = slot1\n"
             "tables = public.orders, public.items\n"
             "\n[status]\nsocket = %s/status.sock\n"
             "\n[log]\nlevel = debug\n"
             "\n[sink.file]\npath = %s/out.ndjson\n"
             "\n[sink.kafka]\nbrokers = mock:1\n",
             dir, dir);
    char *text = h_read_file(path, NULL);
    ck_assert_str_eq(text, expected);
    free(text);
    free(path);
    h_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(write_config_defaults)
{
    fake_server_env();
    char *dir = h_tmpdir();
    char *path = h_write_config(dir, "db1", NULL, NULL, NULL);
    char *text = h_read_file(path, NULL);

    ck_assert_ptr_null(strstr(text, "slot ="));
    ck_assert_ptr_null(strstr(text, "tables ="));
    ck_assert_ptr_nonnull(strstr(text, "[sink.file]\npath = "));
    ck_assert_int_eq(text[strlen(text) - 1], '\n');
    free(text);
    free(path);
    h_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(nest_dsn_no_port)
{
    unsetenv("PGFAN_TEST_PGPORT");
    h_dsn("x");
}
END_TEST

START_TEST(nest_connect_no_port)
{
    unsetenv("PGFAN_TEST_PGPORT");
    h_pg_connect("x");
}
END_TEST

START_TEST(nest_write_config_missing_dir)
{
    fake_server_env();
    h_write_config("/tmp/pgfan-harness-no-such-dir", "db", NULL, NULL, NULL);
}
END_TEST

START_TEST(config_errors)
{
    expect_failure(nest_dsn_no_port,
                   "h_dsn: could not find the test server: PGFAN_TEST_PGPORT is not set\n"
                   "HINT: run the tests through ./tests/run.sh, or start a server with "
                   "tests/harness/pg.sh start DIR and load DIR/env");
    expect_failure(nest_connect_no_port,
                   "h_pg_connect: could not find the test server: PGFAN_TEST_PGPORT is not set\n"
                   "HINT: run the tests through ./tests/run.sh, or start a server with "
                   "tests/harness/pg.sh start DIR and load DIR/env");
    expect_failure(nest_write_config_missing_dir,
                   "h_write_config: could not open /tmp/pgfan-harness-no-such-dir/pgfan.conf: No "
                   "such file or directory");
}
END_TEST

/* --- PostgreSQL (only with a test server) ------------------------------- */

#define TEST_DB "pgfan_harness_db"
#define TEST_SLOT "pgfan_harness_slot"

START_TEST(sql_values)
{
    PGconn *conn = h_pg_connect(NULL);

    h_sql(conn, "CREATE TEMP TABLE t (id int, v text); INSERT INTO t VALUES (%d, %s)", 7, "'seven'");
    char *v = h_sql_value(conn, "SELECT v FROM t WHERE id = %d", 7);
    ck_assert_str_eq(v, "seven");
    free(v);
    ck_assert_ptr_null(h_sql_value(conn, "SELECT NULL::text"));
    h_sql(conn, "%s", ""); /* empty query is fine */
    PQfinish(conn);
}
END_TEST

START_TEST(dsn_connects)
{
    char *dsn = h_dsn(NULL);
    PGconn *conn = PQconnectdb(dsn);

    ck_assert_msg(PQstatus(conn) == CONNECTION_OK, "%s: %s", dsn, PQerrorMessage(conn));
    PQfinish(conn);
    free(dsn);
}
END_TEST

/* A walsender streaming from slot in dbname, as pgfan would hold it. */
static PGconn *start_streaming(const char *dbname, const char *slot)
{
    char *dsn = h_dsn(dbname);
    char conninfo[512];

    snprintf(conninfo, sizeof conninfo, "%s replication=database", dsn);
    free(dsn);
    PGconn *repl = PQconnectdb(conninfo);
    ck_assert_msg(PQstatus(repl) == CONNECTION_OK, "replication connect: %s", PQerrorMessage(repl));
    char cmd[256];
    snprintf(cmd, sizeof cmd, "START_REPLICATION SLOT %s LOGICAL 0/0", slot);
    PGresult *res = PQexec(repl, cmd);
    ck_assert_msg(PQresultStatus(res) == PGRES_COPY_BOTH, "%s: %s", cmd, PQerrorMessage(repl));
    PQclear(res);
    return repl;
}

typedef struct SlotArg {
    PGconn *conn;
    const char *slot;
} SlotArg;

static bool slot_is_active(void *arg)
{
    SlotArg *a = arg;

    return h_slot_active(a->conn, a->slot);
}

START_TEST(create_db_replaces)
{
    h_create_db(TEST_DB);
    PGconn *conn = h_pg_connect(TEST_DB);
    h_sql(conn, "CREATE TABLE leftover (id int)");
    PQfinish(conn);

    h_create_db(TEST_DB);
    conn = h_pg_connect(TEST_DB);
    ck_assert_ptr_null(h_sql_value(conn, "SELECT to_regclass('leftover')::text"));
    PQfinish(conn);
}
END_TEST

START_TEST(create_db_drops_active_slot)
{
    h_create_db(TEST_DB);
    PGconn *conn = h_pg_connect(TEST_DB);
    free(h_sql_value(conn, "SELECT lsn FROM pg_create_logical_replication_slot('%s', 'wal2json')",
                     TEST_SLOT "_db"));
    PGconn *repl = start_streaming(TEST_DB, TEST_SLOT "_db");
    SlotArg a = {.conn = conn, .slot = TEST_SLOT "_db"};
    ck_assert(h_wait_until(slot_is_active, &a, 5000));
    PQfinish(conn);

    /* Would fail with "database is used by an active logical replication slot". */
    h_create_db(TEST_DB);
    conn = h_pg_connect(NULL);
    ck_assert_uint_eq(h_slot_confirmed_lsn(conn, TEST_SLOT "_db"), LSN_INVALID);
    PQfinish(conn);
    PQfinish(repl);
}
END_TEST

START_TEST(slot_positions)
{
    h_create_db(TEST_DB);
    PGconn *conn = h_pg_connect(TEST_DB);

    ck_assert_uint_eq(h_slot_confirmed_lsn(conn, TEST_SLOT), LSN_INVALID);
    ck_assert(!h_slot_active(conn, TEST_SLOT));

    char *text = h_sql_value(
        conn, "SELECT lsn FROM pg_create_logical_replication_slot('%s', 'wal2json')", TEST_SLOT);
    Lsn created = LSN_INVALID;
    ck_assert(lsn_parse(text, strlen(text), &created));
    free(text);
    ck_assert_uint_ne(created, LSN_INVALID);
    ck_assert_uint_eq(h_slot_confirmed_lsn(conn, TEST_SLOT), created);
    ck_assert(!h_slot_active(conn, TEST_SLOT));

    /* Synchronous, so the commit is flushed and decodable right away (the
     * test server runs with synchronous_commit = off). */
    h_sql(conn, "SET synchronous_commit = on; CREATE TABLE t (id int primary key); "
                "INSERT INTO t VALUES (1)");
    Lsn now = h_current_wal_lsn(conn);
    ck_assert_uint_gt(now, created);

    /* Consuming the changes moves confirmed_flush_lsn forward. */
    h_sql(conn, "SELECT count(*) FROM pg_logical_slot_get_changes('%s', NULL, NULL, "
                "'format-version', '2')",
          TEST_SLOT);
    ck_assert_uint_gt(h_slot_confirmed_lsn(conn, TEST_SLOT), created);

    PGconn *repl = start_streaming(TEST_DB, TEST_SLOT);
    SlotArg a = {.conn = conn, .slot = TEST_SLOT};
    ck_assert(h_wait_until(slot_is_active, &a, 5000));

    h_drop_slot(conn, TEST_SLOT);
    ck_assert_uint_eq(h_slot_confirmed_lsn(conn, TEST_SLOT), LSN_INVALID);
    h_drop_slot(conn, TEST_SLOT); /* missing: fine */
    PQfinish(repl);
    PQfinish(conn);
}
END_TEST

START_TEST(nest_sql_syntax_error)
{
    PGconn *conn = h_pg_connect(NULL);

    h_sql(conn, "SELEC %d", 1);
}
END_TEST

START_TEST(nest_sql_value_no_rows)
{
    PGconn *conn = h_pg_connect(NULL);

    h_sql_value(conn, "SELECT 1 WHERE false");
}
END_TEST

START_TEST(nest_sql_value_error)
{
    PGconn *conn = h_pg_connect(NULL);

    h_sql_value(conn, "SELECT 1/0");
}
END_TEST

START_TEST(nest_connect_missing_db)
{
    h_pg_connect("pgfan_harness_no_such_db");
}
END_TEST

START_TEST(pg_errors)
{
    char prefix[256];

    expect_failure(nest_sql_syntax_error, "h_sql: could not run SQL: ERROR:  syntax error at or "
                                          "near \"SELEC\"\nLINE 1: SELEC 1\n        ^\nSQL: SELEC 1");
    expect_failure(nest_sql_value_no_rows,
                   "h_sql_value: could not read a value: the query returned no rows or no "
                   "columns\nSQL: SELECT 1 WHERE false");
    expect_failure(nest_sql_value_error,
                   "h_sql_value: could not run SQL: ERROR:  division by zero\nSQL: SELECT 1/0");
    snprintf(prefix, sizeof prefix,
             "h_pg_connect: could not connect to database pgfan_harness_no_such_db at %s:%s: ",
             getenv("PGFAN_TEST_PGHOST") != NULL ? getenv("PGFAN_TEST_PGHOST") : "127.0.0.1",
             getenv("PGFAN_TEST_PGPORT"));
    expect_failure_parts(nest_connect_missing_db, prefix,
                         "FATAL:  database \"pgfan_harness_no_such_db\" does not exist");
}
END_TEST

static Suite *harness_suite(bool with_pg)
{
    Suite *s = suite_create("harness");
    TCase *tc;

    tc = tcase_create("wait");
    tcase_add_test(tc, wait_true_at_once);
    tcase_add_test(tc, wait_true_after_polls);
    tcase_add_test(tc, wait_deadline);
    tcase_add_test(tc, wait_zero_timeout);
    suite_add_tcase(s, tc);

    tc = tcase_create("process");
    tcase_add_test(tc, spawn_exit_code_and_output);
    tcase_add_test(tc, spawn_exec_failure);
    tcase_add_test(tc, spawn_path_search_and_stdin);
    tcase_add_test(tc, spawn_new_group);
    tcase_add_test(tc, wait_exit_timeout_then_kill);
    tcase_add_test(tc, kill_reaches_group);
    tcase_add_test(tc, kill_after_exit_is_quiet);
    tcase_add_test(tc, spawned_dies_with_test);
    tcase_add_test(tc, pgfan_bin_from_env);
    tcase_add_test(tc, process_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("files");
    tcase_add_test(tc, tmpdir_and_rm_rf);
    tcase_add_test(tc, write_and_read);
    tcase_add_test(tc, read_large_and_binary);
    tcase_add_test(tc, lines_complete_only);
    tcase_add_test(tc, file_contains);
    tcase_add_test(tc, file_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("config");
    tcase_add_test(tc, dsn_plain);
    tcase_add_test(tc, dsn_quoting_round_trips);
    tcase_add_test(tc, write_config_full);
    tcase_add_test(tc, write_config_defaults);
    tcase_add_test(tc, config_errors);
    suite_add_tcase(s, tc);

    if (with_pg) {
        tc = tcase_create("pg");
        /* h_create_db and slot waits can take a few seconds on a busy machine. */
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, sql_values);
        tcase_add_test(tc, dsn_connects);
        tcase_add_test(tc, create_db_replaces);
        tcase_add_test(tc, create_db_drops_active_slot);
        tcase_add_test(tc, slot_positions);
        tcase_add_test(tc, pg_errors);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    const char *port = getenv("PGFAN_TEST_PGPORT");
    bool with_pg = port != NULL && port[0] != '\0';

    if (!with_pg)
        printf("test_harness: SKIPPED the PostgreSQL tests (TCase pg): PGFAN_TEST_PGPORT is not "
               "set; run ./tests/run.sh for them\n");
    SRunner *sr = srunner_create(harness_suite(with_pg));
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
